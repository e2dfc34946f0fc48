//! Repository names and image references as users type them: validated here (a malformed
//! one is a usage error, exit 2, before the daemon is asked anything), with this registry's
//! own `host:port/` accepted in front, as ecrl prints it in `repositoryUri`.

use crate::app::UsageError;
use ecrl::api::system::{Info, SystemInfo};
use ecrl::api::Empty;
use ecrl::client::Client;
use ecrl::names::{HostPrefix, ImageRef, OwnHosts, RepoName};
use std::net::SocketAddr;

/// The names under which the daemon's registry is reached, from its status.
pub fn own_hosts(info: &SystemInfo) -> OwnHosts {
    let addr = |a: &Option<String>| a.as_deref().and_then(|a| a.parse::<SocketAddr>().ok());
    OwnHosts::new(
        addr(&info.registry_address),
        addr(&info.registry_tls_address),
        &info.tls_names,
    )
}

/// `text` without this registry's host in front. Only text that starts with a host costs a
/// question to the daemon (which addresses it serves).
pub async fn strip_host<'a>(client: &Client, text: &'a str) -> anyhow::Result<&'a str> {
    if OwnHosts::host_of(text).is_none() {
        return Ok(text);
    }
    let hosts = own_hosts(&client.call::<Info>(&Empty {}).await?);
    match hosts.split(text) {
        HostPrefix::Own(rest) => Ok(rest),
        HostPrefix::None => Ok(text),
        HostPrefix::Other { host, rest } => {
            let ours = hosts
                .example()
                .map(|h| format!(" (this registry is {h})"))
                .unwrap_or_default();
            Err(UsageError(format!(
                "{text:?}: {host} is another registry; ecrl holds only its own \
                 repositories{ours}: drop \"{host}/\" and name it as {rest}"
            ))
            .into())
        }
    }
}

/// `REPO`, `REPO:TAG` or `REPO@DIGEST`, optionally behind this registry's host.
pub async fn image_ref(client: &Client, text: &str) -> anyhow::Result<ImageRef> {
    let rest = strip_host(client, text).await?;
    rest.parse::<ImageRef>()
        .map_err(|e| UsageError(format!("{text:?}: {e}")).into())
}

/// A repository name, optionally behind this registry's host.
pub async fn repo_name(client: &Client, text: &str) -> anyhow::Result<RepoName> {
    let rest = strip_host(client, text).await?;
    rest.parse::<RepoName>()
        .map_err(|e| UsageError(format!("{e}")).into())
}

/// A task-definition reference (`FAMILY`, `FAMILY:REVISION` or its ARN), checked before the
/// daemon is asked: a malformed one is a usage error.
pub fn task_definition(text: &str) -> anyhow::Result<String> {
    ecrl::taskdef::TaskDefRef::parse(text)
        .map(|_| text.to_string())
        .map_err(|e| UsageError(e.message).into())
}
