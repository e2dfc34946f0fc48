//! `ecrl tls ca`: where ecrld's CA certificate is, and how docker, skopeo/podman and curl come
//! to trust the HTTPS registry.

use crate::app::{block_on, Context};
use crate::output::{self, Table};
use anyhow::bail;
use clap::Subcommand;
use ecrl::api::system::Info;
use ecrl::api::Empty;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum TlsCommand {
    /// Print the path of ecrld's CA certificate and how to make docker, skopeo, podman and
    /// curl trust the HTTPS registry
    Ca,
}

pub fn run(ctx: &Context, command: TlsCommand) -> anyhow::Result<ExitCode> {
    match command {
        TlsCommand::Ca => ca(ctx),
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CaInfo {
    /// ecrld's CA certificate (PEM).
    ca_path: PathBuf,
    /// The HTTPS registry as clients name it (`localhost:PORT` on loopback).
    registry: String,
    /// Every `host:port` the served certificate is valid for.
    hosts: Vec<String>,
    /// Those of `hosts` the listener does not accept connections on (the certificate names
    /// `::1` even when only 127.0.0.1 listens): said in the table, so no one tries them.
    #[serde(skip)]
    not_listening: Vec<String>,
}

fn ca(ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let info = block_on(client.call::<Info>(&Empty {}))??;
    let Some(address) = info.registry_tls_address else {
        bail!(
            "ecrld does not serve HTTPS, so its CA is not in use; start it with --tls \
             (or ECRL_TLS=true, or registry.tls.enabled: true in the config file)"
        );
    };
    let Some(ca_path) = info.tls_ca_path else {
        let cert = info
            .tls_cert_path
            .map(|p| format!(" ({})", p.display()))
            .unwrap_or_default();
        bail!(
            "ecrld serves HTTPS on {address} with your own certificate{cert}: ecrld's CA is not \
             in use; clients must trust the CA that issued your certificate"
        );
    };
    let (registry, hosts, not_listening) = hosts(&address, &info.tls_names);
    output::print(
        ctx.output,
        &CaInfo {
            ca_path,
            registry,
            hosts,
            not_listening,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The registry's `host:port` as clients name it; every `host:port` the certificate covers
/// (IPv6 addresses in brackets, as image references and certs.d directories write them); and
/// those of them the listener does not accept on.
fn hosts(address: &str, names: &[String]) -> (String, Vec<String>, Vec<String>) {
    let Ok(addr) = address.parse::<SocketAddr>() else {
        return (address.to_string(), vec![address.to_string()], Vec::new());
    };
    let port = addr.port();
    let ip = addr.ip();
    let registry = if ip.is_loopback() || ip.is_unspecified() {
        format!("localhost:{port}")
    } else {
        addr.to_string()
    };
    let mut hosts = vec![registry.clone()];
    let mut not_listening = Vec::new();
    for name in names {
        let name_ip = name.parse::<std::net::IpAddr>().ok();
        let host = match name_ip {
            Some(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
            _ => format!("{name}:{port}"),
        };
        if hosts.contains(&host) {
            continue;
        }
        if name_ip.is_some_and(|n| !accepts(ip, n)) {
            not_listening.push(host.clone());
        }
        hosts.push(host);
    }
    (registry, hosts, not_listening)
}

/// Whether a listener bound to `bound` accepts connections to `ip` (an unspecified IPv6
/// address listens dual-stack on Linux by default).
fn accepts(bound: std::net::IpAddr, ip: std::net::IpAddr) -> bool {
    bound == ip || (bound.is_unspecified() && (bound.is_ipv6() || ip.is_ipv4()))
}

impl Table for CaInfo {
    fn table(&self) -> String {
        let ca = self.ca_path.display();
        let host = &self.registry;
        let others: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| *h != host)
            .map(|h| {
                if self.not_listening.contains(h) {
                    format!("{h} (ecrld does not listen there)")
                } else {
                    h.clone()
                }
            })
            .collect();
        let mut out = format!("ecrld's CA certificate: {ca}\nHTTPS registry: {host}\n");
        if !others.is_empty() {
            out += &format!(
                "The certificate is also valid for: {} (use one of them in place of {host} \
                 below to reach the registry by that name)\n",
                others.join(", ")
            );
        }
        out += &format!(
            "\n\
             docker (as root; docker reads the directory on every push and pull, no restart):\n\
             \x20 mkdir -p /etc/docker/certs.d/{host} && cp {ca} /etc/docker/certs.d/{host}/ca.crt\n\
             \x20 docker push {host}/team/app:1\n\
             \x20 (docker skips certificate checks for registries on 127.0.0.0/8, which it treats\n\
             \x20 as insecure; the CA matters when docker reaches the registry by another name.)\n\
             \n\
             skopeo, podman, buildah: a directory holding the CA as ca.crt, per command\n\
             \x20 mkdir -p ~/ecrl-certs && cp {ca} ~/ecrl-certs/ca.crt\n\
             \x20 skopeo copy --dest-cert-dir ~/ecrl-certs docker-daemon:app:1 docker://{host}/team/app:1\n\
             \x20 skopeo inspect --cert-dir ~/ecrl-certs docker://{host}/team/app:1\n\
             or for every command (as root):\n\
             \x20 mkdir -p /etc/containers/certs.d/{host} && cp {ca} /etc/containers/certs.d/{host}/ca.crt\n\
             \n\
             curl:\n\
             \x20 curl --cacert {ca} https://{host}/v2/\n\
             \n\
             the AWS CLI and SDKs (ecrld's AWS API; boto3: verify=\"{ca}\"):\n\
             \x20 aws --endpoint-url https://{host} --ca-bundle {ca} ecr describe-repositories\n"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_loopback_as_localhost_and_bracket_ipv6() {
        let names = [
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "registry.lan".to_string(),
        ];
        let (registry, all, not_listening) = hosts("127.0.0.1:5443", &names);
        assert_eq!(registry, "localhost:5443");
        assert_eq!(
            all,
            [
                "localhost:5443",
                "127.0.0.1:5443",
                "[::1]:5443",
                "registry.lan:5443"
            ]
        );
        assert_eq!(not_listening, ["[::1]:5443"]);
        let (registry, all, not_listening) = hosts("[::]:5443", &names);
        assert_eq!(registry, "localhost:5443");
        assert_eq!(
            all,
            [
                "localhost:5443",
                "127.0.0.1:5443",
                "[::1]:5443",
                "registry.lan:5443"
            ]
        );
        assert!(not_listening.is_empty());
        let (registry, _, _) = hosts("10.0.0.5:443", &[]);
        assert_eq!(registry, "10.0.0.5:443");
    }
}
