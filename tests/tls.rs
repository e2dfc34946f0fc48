//! HTTPS: the real `ecrld` with `--tls` on port 0, its own CA in the test's private home,
//! real clients (docker, skopeo, curl, a rustls client) that trust that CA or do not, the
//! user's own certificates, and start-up errors for bad TLS settings.

mod common;

use common::registry::{
    build_busybox_image, pushed_digest, require_docker, require_skopeo, run, run_ok, sha256_digest,
    unique, DockerImages,
};
use common::{stderr, Daemon, Env};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// ecrld with HTTPS on a free port (plain HTTP too, unless `extra` turns it off).
fn spawn_tls(env: &Env, extra: &[&str]) -> Daemon {
    let mut args = vec!["--tls", "--tls-addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    env.spawn_daemon(&args)
}

/// The HTTPS registry's `127.0.0.1:PORT`, from `ecrl daemon status`.
fn tls_address(env: &Env) -> String {
    let info = env.info();
    let address = info["registryTlsAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("daemon status has no registryTlsAddress: {info}"))
        .to_string();
    assert!(!address.ends_with(":0"), "unresolved port: {address}");
    address
}

fn port(address: &str) -> u16 {
    address.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// Where ecrld keeps its CA for this test's home.
fn ca_dir(env: &Env) -> PathBuf {
    env.path().join("home/.config/ecrl/tls")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A directory holding `ca.crt`, as skopeo's `--cert-dir` options want it.
fn cert_dir(ca: &Path) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("ecrl-tls-certs-")
        .tempdir()
        .unwrap();
    std::fs::copy(ca, dir.path().join("ca.crt")).unwrap();
    dir
}

/// `/etc/docker/certs.d/HOST/ca.crt`, as `ecrl tls ca` tells users to install it; removed
/// (the whole directory) when dropped, pass or fail.
struct DockerCertsDir(PathBuf);

impl DockerCertsDir {
    fn install(host: &str, ca: &Path) -> Self {
        let dir = Path::new("/etc/docker/certs.d").join(host);
        std::fs::create_dir_all(&dir).unwrap();
        let guard = DockerCertsDir(dir);
        std::fs::copy(ca, guard.0.join("ca.crt")).unwrap();
        guard
    }
}

impl Drop for DockerCertsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A rustls client that trusts exactly the certificates in `roots` (PEM).
fn client_trusting(roots: &[u8]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(roots) {
        store.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// What one HTTPS exchange gave.
struct Exchange {
    /// The response as bytes (the connection is closed after it).
    response: String,
    /// The certificate chain the server presented.
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    alpn: Option<Vec<u8>>,
}

/// Sends `request` over TLS to `address`, verifying the server as `server_name`, and reads
/// until the server closes.
fn https_exchange(
    config: Arc<rustls::ClientConfig>,
    address: &str,
    server_name: &str,
    request: &[u8],
) -> Result<Exchange, String> {
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let mut connection = rustls::ClientConnection::new(config, name).unwrap();
    let mut tcp = TcpStream::connect(address).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut tls = rustls::Stream::new(&mut connection, &mut tcp);
    tls.write_all(request).map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    let read = tls.read_to_end(&mut response);
    if response.is_empty() {
        read.map_err(|e| e.to_string())?;
    }
    Ok(Exchange {
        response: String::from_utf8_lossy(&response).into_owned(),
        chain: connection
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default(),
        alpn: connection.alpn_protocol().map(<[u8]>::to_vec),
    })
}

fn get_request(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
}

/// `curl` against the registry; returns its output (status and stderr checked by callers).
fn curl(args: &[&str]) -> std::process::Output {
    run("curl", &[&["-sS", "--max-time", "20"][..], args].concat())
}

#[test]
fn docker_pushes_and_pulls_over_https_alone() {
    require_docker();
    let env = Env::new();
    // Plain HTTP off: whatever docker does, it can only reach the registry over HTTPS.
    let _daemon = spawn_tls(&env, &["--registry-addr", "none"]);
    let info = env.info();
    assert!(
        info.get("registryAddress").is_none(),
        "plain HTTP still listens: {info}"
    );
    let address = tls_address(&env);
    let host = format!("localhost:{}", port(&address));
    let ca = ca_dir(&env).join("ca.crt");
    // As `ecrl tls ca` says. (docker skips certificate checks on 127.0.0.0/8 registries, so
    // the skopeo and curl tests below are the ones that prove the chain verifies.)
    let _certs = DockerCertsDir::install(&host, &ca);

    // Repository URIs name the HTTPS registry when it is the only one.
    env.ecrl_ok(&["repo", "create", "team/busybox"]);
    let described: serde_json::Value = serde_json::from_str(&env.ecrl_ok(&[
        "repo",
        "describe",
        "team/busybox",
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        described["repository"]["repositoryUri"],
        format!("{host}/team/busybox"),
        "{described}"
    );

    let images = DockerImages::new();
    let id = unique("ecrl-tls-docker");
    let local = format!("ecrl-test/busybox:{id}");
    let remote = format!("{host}/team/busybox:1");
    images.track(&remote);
    let image_id = build_busybox_image(&images, &local, &id);
    run_ok("docker", &["tag", &local, &remote]);
    let digest = pushed_digest(&run_ok("docker", &["push", &remote]));

    // The registry holds it: ask over HTTPS with the CA.
    let head = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "-I",
        "-H",
        "Accept: application/vnd.docker.distribution.manifest.v2+json",
        &format!("https://{host}/v2/team/busybox/manifests/1"),
    ]);
    let head_text = String::from_utf8_lossy(&head.stdout).to_lowercase();
    assert!(head.status.success(), "curl: {}", stderr(&head));
    assert!(head_text.starts_with("http/1.1 200"), "{head_text}");
    assert!(
        head_text.contains(&format!("docker-content-digest: {digest}")),
        "{head_text}"
    );

    // Gone locally, pulled back whole over HTTPS.
    run_ok("docker", &["rmi", &remote, &local]);
    assert!(!run("docker", &["image", "inspect", &image_id])
        .status
        .success());
    let pull = run_ok("docker", &["pull", &remote]);
    assert!(pull.contains(&format!("Digest: {digest}")), "{pull}");
    let pulled = run_ok(
        "docker",
        &["image", "inspect", "--format", "{{.Id}}", &remote],
    );
    assert_eq!(
        pulled.trim(),
        image_id,
        "the pulled image is not the pushed one"
    );
}

#[test]
fn skopeo_copies_to_and_from_https_with_the_ca_and_fails_without_it() {
    require_docker();
    require_skopeo();
    let env = Env::new();
    let _daemon = spawn_tls(&env, &[]);
    let host = format!("localhost:{}", port(&tls_address(&env)));
    let certs = cert_dir(&ca_dir(&env).join("ca.crt"));
    let certs = certs.path().to_str().unwrap();
    let images = DockerImages::new();
    let id = unique("ecrl-tls-skopeo");
    let local = format!("ecrl-test/busybox:{id}");
    build_busybox_image(&images, &local, &id);
    let work = tempfile::Builder::new()
        .prefix("ecrl-tls-skopeo-")
        .tempdir()
        .unwrap();

    // Into the registry, verifying the server against the CA (no --tls-verify=false anywhere).
    let remote = format!("docker://{host}/team/busybox:1");
    let digest_file = work.path().join("digest");
    run_ok(
        "skopeo",
        &[
            "copy",
            "--dest-cert-dir",
            certs,
            "--digestfile",
            digest_file.to_str().unwrap(),
            &format!("docker-daemon:{local}"),
            &remote,
        ],
    );
    let pushed = std::fs::read_to_string(&digest_file).unwrap();
    let info: serde_json::Value = serde_json::from_str(&run_ok(
        "skopeo",
        &["inspect", "--cert-dir", certs, &remote],
    ))
    .unwrap();
    assert_eq!(info["Digest"], pushed.trim(), "{info}");
    let layers: Vec<String> = info["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    assert_eq!(layers.len(), 3, "{info}");

    // Out of it, into an OCI layout: every layer arrives intact.
    let layout = work.path().join("layout");
    run_ok(
        "skopeo",
        &[
            "copy",
            "--src-cert-dir",
            certs,
            &remote,
            &format!("oci:{}:v1", layout.display()),
        ],
    );
    for layer in &layers {
        let hex = layer.strip_prefix("sha256:").unwrap();
        let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(&sha256_digest(&bytes), layer);
    }

    // Without the CA, skopeo refuses the server's certificate and copies nothing.
    let refused = run(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{host}/team/other:1"),
        ],
    );
    assert!(!refused.status.success(), "skopeo trusted an unknown CA");
    let message = stderr(&refused);
    assert!(
        message.contains("certificate signed by unknown authority"),
        "{message}"
    );
    let catalog = curl(&[
        "--cacert",
        &format!("{certs}/ca.crt"),
        &format!("https://{host}/v2/_catalog"),
    ]);
    let catalog: serde_json::Value = serde_json::from_slice(&catalog.stdout).unwrap();
    assert_eq!(catalog["repositories"], serde_json::json!(["team/busybox"]));
}

#[test]
fn clients_without_the_ca_fail_the_handshake_while_plain_http_answers() {
    let env = Env::new();
    let _daemon = spawn_tls(&env, &[]);
    let info = env.info();
    let http = info["registryAddress"].as_str().unwrap().to_string();
    let https = tls_address(&env);
    let ca = ca_dir(&env).join("ca.crt");
    let ca_pem = std::fs::read(&ca).unwrap();

    // curl with the system's roots only: refused; with the CA, by name and by IP: served.
    let url = format!("https://localhost:{}/v2/", port(&https));
    let untrusted = curl(&[&url]);
    assert_eq!(untrusted.status.code(), Some(60), "{}", stderr(&untrusted));
    for url in [url.clone(), format!("https://{https}/v2/")] {
        let trusted = curl(&["--cacert", ca.to_str().unwrap(), "-i", &url]);
        assert!(trusted.status.success(), "{url}: {}", stderr(&trusted));
        let text = String::from_utf8_lossy(&trusted.stdout).to_lowercase();
        assert!(text.starts_with("http/1.1 200"), "{text}");
        assert!(
            text.contains("docker-distribution-api-version: registry/2.0"),
            "{text}"
        );
    }

    // A rustls client that trusts some other CA fails the handshake too.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let err = https_exchange(
        client_trusting(other.cert.pem().as_bytes()),
        &https,
        "localhost",
        &get_request("localhost", "/v2/"),
    )
    .err()
    .expect("the handshake succeeded without trusting ecrld's CA");
    assert!(err.to_lowercase().contains("unknown"), "{err}");

    // Trusting the CA it succeeds, negotiates HTTP/1.1 even when h2 is offered, and the
    // chain ends with the CA.
    let exchange = https_exchange(
        client_trusting(&ca_pem),
        &https,
        "localhost",
        &get_request("localhost", "/v2/"),
    )
    .unwrap();
    assert!(
        exchange.response.starts_with("HTTP/1.1 200"),
        "{}",
        exchange.response
    );
    assert_eq!(exchange.alpn.as_deref(), Some(&b"http/1.1"[..]));
    use rustls::pki_types::pem::PemObject;
    let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(&ca_pem).unwrap();
    assert_eq!(exchange.chain.last(), Some(&ca_der));
    // A name the certificate does not hold is refused.
    assert!(https_exchange(
        client_trusting(&ca_pem),
        &https,
        "registry.example",
        &get_request("registry.example", "/v2/"),
    )
    .is_err());

    // Plain HTTP on its own port answers all the while.
    let plain = reqwest::blocking::get(format!("http://{http}/v2/")).unwrap();
    assert_eq!(plain.status(), 200);
    assert_ne!(port(&http), port(&https));
}

#[test]
fn stalled_handshakes_are_cut_off_and_oversized_headers_refused() {
    let env = Env::new();
    let _daemon = spawn_tls(&env, &[]);
    let https = tls_address(&env);
    let ca_pem = std::fs::read(ca_dir(&env).join("ca.crt")).unwrap();

    // A client that connects and never says hello holds nothing up ...
    let started = Instant::now();
    let mut stalled = TcpStream::connect(&https).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let served = https_exchange(
        client_trusting(&ca_pem),
        &https,
        "localhost",
        &get_request("localhost", "/v2/"),
    )
    .unwrap();
    assert!(served.response.starts_with("HTTP/1.1 200"));
    // ... and is disconnected once the handshake time limit (10 s) is over.
    let mut buf = [0u8; 16];
    let read = stalled.read(&mut buf);
    let waited = started.elapsed();
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "the stalled connection got data: {read:?}"
    );
    assert!(
        waited >= Duration::from_secs(8) && waited < Duration::from_secs(25),
        "the stalled connection was closed after {waited:?}"
    );

    // Headers beyond the HTTP server's limit are refused over HTTPS as over plain HTTP.
    let huge = format!(
        "GET /v2/ HTTP/1.1\r\nHost: localhost\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let refused = https_exchange(
        client_trusting(&ca_pem),
        &https,
        "localhost",
        huge.as_bytes(),
    );
    match refused {
        Ok(exchange) => assert!(
            exchange.response.starts_with("HTTP/1.1 431"),
            "an oversized header was served: {}",
            exchange.response.lines().next().unwrap_or("")
        ),
        // The server may close before the client has finished sending.
        Err(e) => assert!(
            e.contains("reset") || e.contains("pipe") || e.contains("close"),
            "{e}"
        ),
    }
    // And the server still serves.
    let again = https_exchange(
        client_trusting(&ca_pem),
        &https,
        "localhost",
        &get_request("localhost", "/v2/"),
    )
    .unwrap();
    assert!(again.response.starts_with("HTTP/1.1 200"));
}

/// A CA of the test's own and a server certificate (with its key) for localhost signed by it.
fn user_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf, Vec<u8>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test user CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "user registry");
    let cert = params.signed_by(&key, &issuer).unwrap();

    let ca_path = dir.join("user-ca.pem");
    let cert_path = dir.join("server.pem");
    let key_path = dir.join("server.key");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    std::fs::write(&cert_path, cert.pem() + &ca_cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (ca_path, cert_path, key_path, cert.der().to_vec())
}

#[test]
fn the_users_own_certificate_is_served_and_ecrlds_ca_stays_unused() {
    let env = Env::new();
    let (user_ca, cert, key, leaf) = user_certificates(env.path());
    let _daemon = spawn_tls(
        &env,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let https = tls_address(&env);
    let exchange = https_exchange(
        client_trusting(&std::fs::read(&user_ca).unwrap()),
        &https,
        "localhost",
        &get_request("localhost", "/v2/"),
    )
    .unwrap();
    assert!(exchange.response.starts_with("HTTP/1.1 200"));
    assert_eq!(
        exchange.chain[0].as_ref(),
        &leaf[..],
        "not the user's certificate"
    );
    let trusted = curl(&[
        "--cacert",
        user_ca.to_str().unwrap(),
        &format!("https://{https}/v2/"),
    ]);
    assert!(trusted.status.success(), "{}", stderr(&trusted));

    let info = env.info();
    assert_eq!(info["tlsCertPath"], cert.to_str().unwrap(), "{info}");
    assert!(info.get("tlsCaPath").is_none(), "{info}");
    assert!(!ca_dir(&env).exists(), "ecrld made a CA it does not use");
    let out = env.ecrl(&["tls", "ca"]);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(message.contains("ecrld's CA is not in use"), "{message}");
    assert!(message.contains(cert.to_str().unwrap()), "{message}");
}

#[test]
fn the_ca_is_private_and_reused_across_restarts_while_names_follow_the_config() {
    let env = Env::new();
    let mut daemon = spawn_tls(&env, &[]);
    let dir = ca_dir(&env);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    assert_eq!(mode(&dir.join("ca.crt")), 0o644);
    let info = env.info();
    assert_eq!(info["tlsCaPath"], dir.join("ca.crt").to_str().unwrap());
    let ca_pem = std::fs::read(dir.join("ca.crt")).unwrap();
    let ca_key = std::fs::read(dir.join("ca.key")).unwrap();
    let https = tls_address(&env);
    let first = https_exchange(
        client_trusting(&ca_pem),
        &https,
        "localhost",
        &get_request("localhost", "/v2/"),
    )
    .unwrap();
    // Not a name of this certificate yet.
    assert!(https_exchange(
        client_trusting(&ca_pem),
        &https,
        "registry.test",
        &get_request("registry.test", "/v2/"),
    )
    .is_err());
    env.ecrl_ok(&["daemon", "stop"]);
    assert!(daemon.wait(Duration::from_secs(15)).success());

    // A restart with an extra name: same CA files, a new server certificate that the same
    // CA verifies for that name.
    let _daemon = spawn_tls(&env, &["--tls-names", "registry.test,10.9.8.7"]);
    assert_eq!(std::fs::read(dir.join("ca.crt")).unwrap(), ca_pem);
    assert_eq!(std::fs::read(dir.join("ca.key")).unwrap(), ca_key);
    let https = tls_address(&env);
    for name in ["registry.test", "localhost", "10.9.8.7"] {
        let exchange = https_exchange(
            client_trusting(&ca_pem),
            &https,
            name,
            &get_request(name, "/v2/"),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(exchange.response.starts_with("HTTP/1.1 200"));
        assert_ne!(
            exchange.chain[0], first.chain[0],
            "the server certificate was reused"
        );
    }
    let names = env.info()["tlsNames"].clone();
    assert_eq!(
        names,
        serde_json::json!(["localhost", "127.0.0.1", "::1", "registry.test", "10.9.8.7"])
    );
}

#[test]
fn tls_ca_prints_the_path_and_how_to_trust_it() {
    let env = Env::new();
    // Through `ecrl daemon start`, which must hand the TLS settings to the daemon.
    let started = env.ecrl_ok(&[
        "daemon",
        "start",
        "--tls",
        "--tls-addr",
        "127.0.0.1:0",
        "--output",
        "json",
    ]);
    let started: serde_json::Value = serde_json::from_str(&started).unwrap();
    let https = started["registryTlsAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("no HTTPS address: {started}"))
        .to_string();
    let host = format!("localhost:{}", port(&https));
    let ca = ca_dir(&env).join("ca.crt");
    let ca = ca.to_str().unwrap();

    let text = env.ecrl_ok(&["tls", "ca"]);
    assert!(
        text.contains(&format!("ecrld's CA certificate: {ca}")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "mkdir -p /etc/docker/certs.d/{host} && cp {ca} /etc/docker/certs.d/{host}/ca.crt"
        )),
        "{text}"
    );
    assert!(text.contains("--dest-cert-dir"), "{text}");
    assert!(
        text.contains(&format!("/etc/containers/certs.d/{host}/ca.crt")),
        "{text}"
    );
    // The curl line it prints works as printed.
    let curl_line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("curl --cacert"))
        .unwrap_or_else(|| panic!("no curl line:\n{text}"));
    assert_eq!(curl_line, format!("curl --cacert {ca} https://{host}/v2/"));
    let args: Vec<&str> = curl_line.split_whitespace().skip(1).collect();
    let out = curl(&args);
    assert!(out.status.success(), "{curl_line}: {}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{}");

    let json: serde_json::Value =
        serde_json::from_str(&env.ecrl_ok(&["tls", "ca", "--output", "json"])).unwrap();
    assert_eq!(json["caPath"], ca);
    assert_eq!(json["registry"], host);
    // Every name the certificate is valid for, also ::1, which this listener (on 127.0.0.1)
    // does not accept: the table says so.
    let p = port(&https);
    assert_eq!(
        json["hosts"],
        serde_json::json!([host, format!("127.0.0.1:{p}"), format!("[::1]:{p}")])
    );
    let names = env.info()["tlsNames"].clone();
    assert_eq!(names, serde_json::json!(["localhost", "127.0.0.1", "::1"]));
    assert!(
        text.contains(&format!(
            "also valid for: 127.0.0.1:{p}, [::1]:{p} (ecrld does not listen there)"
        )),
        "{text}"
    );

    let status = env.ecrl_ok(&["daemon", "status"]);
    assert!(
        status.contains(&format!("registry (https)  {https}")),
        "{status}"
    );
    assert!(
        status.contains(&format!("tls ca            {ca}")),
        "{status}"
    );
}

#[test]
fn tls_ca_without_https_says_how_to_turn_it_on() {
    let env = Env::new();
    let _daemon = env.spawn_daemon(&[]);
    let out = env.ecrl(&["tls", "ca"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--tls"), "{}", stderr(&out));
}

/// Runs `ecrld` expecting it to refuse to start; returns what it said.
fn refused_start(env: &Env, args: &[&str]) -> String {
    let mut child = env
        .ecrld_command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ecrld {args:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "ecrld {args:?}");
    assert!(!env.socket().exists(), "ecrld {args:?} left a socket");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_tls_settings_stop_start_up_with_a_clear_error() {
    let env = Env::new();
    let (_, cert, key, _) = user_certificates(env.path());
    let cert = cert.to_str().unwrap();
    let key = key.to_str().unwrap();

    let message = refused_start(&env, &["--tls", "--tls-cert", cert]);
    assert!(message.contains("needs its private key"), "{message}");
    assert!(message.contains("--tls-key"), "{message}");

    let missing = env.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let message = refused_start(&env, &["--tls", "--tls-cert", missing, "--tls-key", key]);
    assert!(
        message.contains(&format!("cannot read the TLS certificate file {missing}")),
        "{message}"
    );

    // The key of another certificate.
    let other_key = env.path().join("other.key");
    std::fs::write(
        &other_key,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let other_key = other_key.to_str().unwrap();
    let message = refused_start(&env, &["--tls", "--tls-cert", cert, "--tls-key", other_key]);
    assert!(
        message.contains(&format!(
            "the private key {other_key} does not belong to the certificate {cert}"
        )),
        "{message}"
    );

    // Certificate and key swapped.
    let message = refused_start(&env, &["--tls", "--tls-cert", key, "--tls-key", cert]);
    assert!(message.contains("no PEM certificate"), "{message}");

    let message = refused_start(&env, &["--registry-addr", "none"]);
    assert!(message.contains("nothing would serve"), "{message}");

    let config = env.write_config("registry:\n  tls:\n    enable: true\n");
    let message = refused_start(&env, &["--config", config.to_str().unwrap()]);
    assert!(message.contains("enable"), "{message}");

    // Through `ecrl daemon start`, the daemon's complaint reaches the user.
    let out = env.ecrl(&[
        "daemon",
        "start",
        "--tls",
        "--tls-cert",
        missing,
        "--tls-key",
        key,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot read the TLS certificate file"),
        "{}",
        stderr(&out)
    );
}

/// The AWS API on the HTTPS listener: the AWS CLI verifies the server against ecrld's CA
/// (`--ca-bundle`), signs with the owner's access key, and the layer URL ECR's
/// GetDownloadUrlForLayer gives names the HTTPS registry; without the CA the CLI refuses
/// the server.
#[test]
fn the_aws_cli_reaches_the_aws_api_over_https() {
    let env = Env::with_anonymous("none");
    let _daemon = spawn_tls(&env, &["--registry-addr", "none"]);
    let host = format!("localhost:{}", port(&tls_address(&env)));
    let ca = ca_dir(&env).join("ca.crt");
    let made: serde_json::Value =
        serde_json::from_str(&env.ecrl_ok(&["auth", "key", "create", "--output", "json"])).unwrap();
    let key = made["AccessKey"]["AccessKeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let secret = made["AccessKey"]["SecretAccessKey"]
        .as_str()
        .unwrap()
        .to_string();
    let aws = |ca_bundle: Option<&Path>, args: &[&str]| {
        let mut command = std::process::Command::new(common::aws::venv().join("bin/aws"));
        env.apply(&mut command);
        command
            .args([
                "--endpoint-url",
                &format!("https://{host}"),
                "--output",
                "json",
            ])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &key)
            .env("AWS_SECRET_ACCESS_KEY", &secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", env.path().join("aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                env.path().join("aws-credentials"),
            )
            .stdin(std::process::Stdio::null());
        if let Some(ca) = ca_bundle {
            command.arg("--ca-bundle").arg(ca);
        }
        command.output().unwrap()
    };
    let created = aws(
        Some(&ca),
        &[
            "ecr",
            "create-repository",
            "--repository-name",
            "team/secure",
        ],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(
        created["repository"]["repositoryUri"],
        format!("{host}/team/secure"),
        "{created}"
    );
    // A blob pushed over HTTPS, its download URL an https one that serves it.
    let layer = b"a layer over https".to_vec();
    let digest = sha256_digest(&layer);
    let auth = format!("{key}:{secret}");
    let pushed = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "-sf",
        "-u",
        &auth,
        "--data-binary",
        "a layer over https",
        &format!("https://{host}/v2/team/secure/blobs/uploads/?digest={digest}"),
    ]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    let url = aws(
        Some(&ca),
        &[
            "ecr",
            "get-download-url-for-layer",
            "--repository-name",
            "team/secure",
            "--layer-digest",
            &digest,
        ],
    );
    assert!(url.status.success(), "{}", stderr(&url));
    let url: serde_json::Value = serde_json::from_slice(&url.stdout).unwrap();
    let url = url["downloadUrl"].as_str().unwrap();
    assert_eq!(url, format!("https://{host}/v2/team/secure/blobs/{digest}"));
    let fetched = curl(&["--cacert", ca.to_str().unwrap(), "-sf", "-u", &auth, url]);
    assert_eq!(fetched.stdout, layer);
    // Without the CA, the CLI does not trust the server.
    let untrusted = aws(None, &["ecr", "describe-repositories"]);
    assert!(!untrusted.status.success());
    assert!(
        stderr(&untrusted).contains("CERTIFICATE_VERIFY_FAILED")
            || stderr(&untrusted).contains("SSL"),
        "{}",
        stderr(&untrusted)
    );
}
