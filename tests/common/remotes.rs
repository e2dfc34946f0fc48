//! Real remote registries for the system tests that talk to one (never mocks): CNCF
//! distribution (Debian's `docker-registry`) run as a child of the test, over HTTPS with a CA
//! of the test's own or over plain HTTP, with or without htpasswd Basic auth; a second `ecrld`
//! that requires credentials; and OCI image layouts that skopeo can copy into either.

use super::registry::{hex, registry_address, run_ok, sha256_digest};
use super::{Daemon, Env};
use sha2::{Digest as _, Sha256};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Debian's build of CNCF distribution 2.8.
pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

/// How long a (re)started distribution may take to answer `/v2/`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How a [`Distribution`] is reached.
#[derive(Clone, Copy, Debug, Default)]
pub struct DistOpts {
    /// HTTPS with a server certificate signed by a CA the test generates; plain HTTP if false.
    pub tls: bool,
    /// htpasswd Basic auth for one user; anonymous access if false.
    pub auth: bool,
}

impl DistOpts {
    /// HTTPS and Basic auth: what a real private registry looks like.
    pub fn https_with_auth() -> Self {
        DistOpts {
            tls: true,
            auth: true,
        }
    }

    /// Plain HTTP, no auth.
    pub fn plain() -> Self {
        DistOpts {
            tls: false,
            auth: false,
        }
    }
}

/// A CNCF distribution registry run as a child of the test; killed when dropped.
///
/// Everything it needs lives in the directory given to [`Distribution::start`] (config,
/// certificates, htpasswd, log, storage), so use one directory per registry.
pub struct Distribution {
    child: Option<Child>,
    port: u16,
    opts: DistOpts,
    config: PathBuf,
    log: PathBuf,
    storage: PathBuf,
    /// `ca.crt` of the test's CA, alone in its directory (what skopeo's cert dirs want).
    ca: Option<PathBuf>,
    ca_der: Option<Vec<u8>>,
    user: String,
    password: String,
}

impl Distribution {
    /// Writes certificates, htpasswd and config into `dir`, starts the registry on a free
    /// port and waits until `/v2/` answers (401 with auth, 200 without).
    pub fn start(dir: &Path, opts: DistOpts) -> Distribution {
        assert!(
            Path::new(DOCKER_REGISTRY).exists(),
            "this test needs CNCF distribution at {DOCKER_REGISTRY} \
             (apt-get install docker-registry)"
        );
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", storage.display()));

        let user = "tester".to_string();
        let password = uuid::Uuid::new_v4().simple().to_string();
        let (ca, ca_der, tls_files) = if opts.tls {
            let files = write_certificates(dir);
            (Some(files.ca_crt), Some(files.ca_der), Some(files.server))
        } else {
            (None, None, None)
        };
        let htpasswd = opts.auth.then(|| {
            let path = dir.join("htpasswd");
            write_htpasswd(&path, &user, &password);
            path
        });

        let mut registry = Distribution {
            child: None,
            port: 0,
            opts,
            config: dir.join("config.yml"),
            log: dir.join("docker-registry.log"),
            storage,
            ca,
            ca_der,
            user,
            password,
        };
        // Nothing holds the port between our probe and the registry's bind: another process
        // may take it in between, so a first start tries a few ports.
        let mut failures = Vec::new();
        for _ in 0..3 {
            registry.port = free_port();
            let yaml = config_yaml(
                registry.port,
                &registry.storage,
                tls_files.as_ref(),
                htpasswd.as_deref(),
            );
            std::fs::write(&registry.config, yaml)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", registry.config.display()));
            match registry.launch() {
                Ok(()) => return registry,
                Err(failure) if failure.port_taken => failures.push(failure.message),
                Err(failure) => registry.startup_failed(&failure.message),
            }
        }
        registry.startup_failed(&format!(
            "every port tried was taken: {}",
            failures.join("; ")
        ))
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `localhost:PORT` (the certificate names localhost, 127.0.0.1 and ::1).
    pub fn localhost_host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://127.0.0.1:PORT` or `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        let scheme = if self.opts.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// The CA certificate (PEM) that signed the server's certificate, when over HTTPS. Its
    /// directory holds nothing else, so it also serves as skopeo's and Docker's cert dir.
    pub fn ca_path(&self) -> Option<PathBuf> {
        self.ca.clone()
    }

    /// The directory holding only `ca.crt`, for skopeo's `--cert-dir` flags.
    pub fn cert_dir(&self) -> Option<PathBuf> {
        self.ca
            .as_ref()
            .map(|ca| ca.parent().expect("ca.crt has a directory").to_path_buf())
    }

    /// The htpasswd user (meaningful only with auth).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The htpasswd user's password (meaningful only with auth).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `(user, password)` when auth is on.
    pub fn credentials(&self) -> Option<(String, String)> {
        self.opts
            .auth
            .then(|| (self.user.clone(), self.password.clone()))
    }

    pub fn opts(&self) -> DistOpts {
        self.opts
    }

    /// The storage root, which survives [`Distribution::kill`] and
    /// [`Distribution::restart`].
    pub fn storage(&self) -> &Path {
        &self.storage
    }

    /// The registry's log (stdout and stderr of every run, appended).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many times the registry served blob `digest` whole or in part (`GET`s answered
    /// 200 or 206, from its access log).
    pub fn blob_gets(&self, digest: &str) -> usize {
        let path = format!("/blobs/{digest} ");
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&path))
            .filter(|l| {
                // `"GET /v2/... HTTP/1.1" 200 SIZE ...`
                let status = l
                    .split_once("HTTP/")
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1));
                matches!(status, Some("200") | Some("206"))
            })
            .count()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the registry process runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL, then reap: the registry is gone when this returns.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error means it already exited, which is what we want.
            let _ = child.kill();
            child.wait().expect("reap docker-registry");
        }
    }

    /// Starts the registry again (killing it first if it runs) on the same port, storage,
    /// certificates and users, and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(failure) = self.launch() {
            self.startup_failed(&format!(
                "restart on port {}: {}",
                self.port, failure.message
            ));
        }
    }

    /// A client that trusts the test's CA (over HTTPS) and uses no proxy. Add the
    /// credentials per request (`.basic_auth(d.user(), Some(d.password()))`).
    pub fn client(&self) -> reqwest::blocking::Client {
        http_client(self.ca_der.as_deref())
    }

    /// skopeo flags for the registry as the source of `copy`/`sync`.
    pub fn skopeo_src_flags(&self) -> Vec<String> {
        self.skopeo_flags_with("--src-")
    }

    /// skopeo flags for the registry as the destination of `copy`/`sync`.
    pub fn skopeo_dest_flags(&self) -> Vec<String> {
        self.skopeo_flags_with("--dest-")
    }

    /// skopeo flags for commands on one image: `inspect`, `list-tags`, `delete`.
    /// Pushes an OCI layout here as `image` (`repo:tag`) with skopeo: an index whole
    /// (`--all`), every blob as it is (`--preserve-digests`).
    pub fn push_layout(&self, layout: &Path, image: &str) {
        let src = format!("oci:{}", layout.display());
        let dst = format!("docker://{}/{image}", self.host());
        let mut args = vec!["copy", "--all", "--preserve-digests"];
        let flags = self.skopeo_dest_flags();
        args.extend(flags.iter().map(String::as_str));
        args.extend([src.as_str(), dst.as_str()]);
        run_ok("skopeo", &args);
    }

    pub fn skopeo_flags(&self) -> Vec<String> {
        self.skopeo_flags_with("--")
    }

    fn skopeo_flags_with(&self, prefix: &str) -> Vec<String> {
        let mut flags = Vec::new();
        if self.opts.auth {
            flags.push(format!("{prefix}creds={}:{}", self.user, self.password));
        }
        match self.cert_dir() {
            Some(dir) => flags.push(format!("{prefix}cert-dir={}", dir.display())),
            // skopeo insists on TLS even for loopback unless told otherwise.
            None => flags.push(format!("{prefix}tls-verify=false")),
        }
        flags
    }

    /// Spawns the registry with the current config and waits for `/v2/`.
    fn launch(&mut self) -> Result<(), LaunchFailure> {
        let log_start = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log.display()));
        let child = Command::new(DOCKER_REGISTRY)
            .arg("serve")
            .arg(&self.config)
            // Its REGISTRY_* variables override the config file: none may leak in.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {DOCKER_REGISTRY}: {e}"));
        self.child = Some(child);
        let result = self.wait_ready();
        if result.is_err() {
            self.kill();
        }
        result.map_err(|message| {
            let log = std::fs::read(&self.log).unwrap_or_default();
            let this_run = log.get(log_start as usize..).unwrap_or_default();
            LaunchFailure {
                port_taken: String::from_utf8_lossy(this_run).contains("address already in use"),
                message,
            }
        })
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let expected = if self.opts.auth {
            reqwest::StatusCode::UNAUTHORIZED
        } else {
            reqwest::StatusCode::OK
        };
        let client = self.client();
        let url = format!("{}/v2/", self.base_url());
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("docker-registry exited ({status})"));
                }
            }
            match client.get(&url).timeout(Duration::from_secs(2)).send() {
                Ok(response) if response.status() == expected => return Ok(()),
                Ok(response) => last = format!("GET {url} answered {}", response.status()),
                Err(e) => last = format!("GET {url}: {e:#}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "docker-registry did not answer {expected} within {READY_TIMEOUT:?} ({last})"
        ))
    }

    fn startup_failed(&self, why: &str) -> ! {
        panic!(
            "CNCF distribution on port {} failed to start: {why}\n\
             config {}:\n{}\nlog {}:\n{}",
            self.port,
            self.config.display(),
            std::fs::read_to_string(&self.config).unwrap_or_default(),
            self.log.display(),
            self.log()
        )
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct LaunchFailure {
    port_taken: bool,
    message: String,
}

/// A port nobody listens on right now (the probe listener is closed on return).
fn free_port() -> u16 {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of the probe listener")
        .port()
}

struct ServerFiles {
    cert: PathBuf,
    key: PathBuf,
}

struct Certificates {
    ca_crt: PathBuf,
    ca_der: Vec<u8>,
    server: ServerFiles,
}

/// A CA of the test's own and a server certificate for localhost, 127.0.0.1 and ::1 signed by
/// it, as PEM files in `dir`. The CA goes alone into `dir/ca/ca.crt` because skopeo and
/// Docker read every `*.crt` of a cert dir as a CA and pair `*.cert` with `*.key`.
fn write_certificates(dir: &Path) -> Certificates {
    let ca_key = rcgen::KeyPair::generate().expect("generate the CA key");
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ecrl test remote registry CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .expect("self-sign the CA certificate");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let key = rcgen::KeyPair::generate().expect("generate the server key");
    let mut params = rcgen::CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .expect("server certificate names");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params
        .signed_by(&key, &issuer)
        .expect("sign the server certificate");

    let ca_dir = dir.join("ca");
    std::fs::create_dir_all(&ca_dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", ca_dir.display()));
    let ca_crt = ca_dir.join("ca.crt");
    let server = ServerFiles {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    for (path, pem) in [
        (&ca_crt, ca_cert.pem()),
        (&server.cert, cert.pem()),
        (&server.key, key.serialize_pem()),
    ] {
        std::fs::write(path, pem)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
    Certificates {
        ca_crt,
        ca_der: ca_cert.der().to_vec(),
        server,
    }
}

/// One `user:bcrypt-hash` line, as `htpasswd -B` writes it.
fn write_htpasswd(path: &Path, user: &str, password: &str) {
    // distribution checks the hash on every request (it keeps no session): the lowest cost
    // keeps a push of many requests from spending seconds in bcrypt.
    let hash = bcrypt::hash_with_result(password, 4)
        .expect("bcrypt the registry password")
        .format_for_version(bcrypt::Version::TwoY);
    std::fs::write(path, format!("{user}:{hash}\n"))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn config_yaml(
    port: u16,
    storage: &Path,
    tls: Option<&ServerFiles>,
    htpasswd: Option<&Path>,
) -> String {
    // A fixed secret keeps upload state signed before a restart valid after it.
    let mut yaml = format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
         redirect:\n    disable: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: ecrl-test-remote-registry\n",
        yaml_string(storage)
    );
    if let Some(files) = tls {
        yaml.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            yaml_string(&files.cert),
            yaml_string(&files.key)
        ));
    }
    if let Some(path) = htpasswd {
        yaml.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: ecrl-test\n    path: {}\n",
            yaml_string(path)
        ));
    }
    yaml
}

/// A path as a YAML string (JSON strings are YAML).
fn yaml_string(path: &Path) -> String {
    serde_json::to_string(&path.to_string_lossy()).expect("a path as a JSON string")
}

/// A blocking client without proxies that trusts the system roots and, when given, one more
/// CA (DER). The crypto provider is explicit: reqwest is built without one.
fn http_client(extra_ca: Option<&[u8]>) -> reqwest::blocking::Client {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(der) = extra_ca {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.to_vec()))
            .expect("add the test CA to the client's roots");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::blocking::Client::builder()
        .no_proxy()
        .use_preconfigured_tls(tls)
        .build()
        .expect("build the HTTP client")
}

/// Working registry credentials for the running daemon of `env` (started with
/// [`Env::with_anonymous`]): `AWS` and the token `ecrl get-login-password` prints, as
/// `docker login -u AWS --password-stdin` uses them. Checks that they work, with Basic auth
/// and through the token flow, and that anonymous requests are refused when the daemon
/// admits none.
pub fn credentials_for(env: &Env) -> (String, String) {
    let user = "AWS".to_string();
    let password = env.ecrl_ok(&["get-login-password"]).trim().to_string();
    assert!(
        !password.is_empty(),
        "ecrl get-login-password printed nothing"
    );
    let base = format!("http://{}", registry_address(env));
    let client = http_client(None);
    let get = |path: &str, auth: Option<Auth>| {
        let mut request = client.get(format!("{base}{path}"));
        match auth {
            Some(Auth::Basic) => request = request.basic_auth(&user, Some(&password)),
            Some(Auth::Bearer(token)) => request = request.bearer_auth(token),
            None => {}
        }
        request
            .send()
            .unwrap_or_else(|e| panic!("GET {base}{path}: {e:#}"))
    };

    if env.anonymous == "none" {
        let status = get("/v2/", None).status();
        assert_eq!(
            status,
            reqwest::StatusCode::UNAUTHORIZED,
            "anonymous GET /v2/ on an ecrld that admits no anonymous access"
        );
    }
    let status = get("/v2/", Some(Auth::Basic)).status();
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "GET /v2/ with Basic {user}:<login token>"
    );
    let response = get("/v2/token?service=ecrl", Some(Auth::Basic));
    assert_eq!(
        response.status(),
        reqwest::StatusCode::OK,
        "token endpoint with Basic {user}:<login token>"
    );
    let body: serde_json::Value = response.json().expect("the token endpoint answers JSON");
    let token = body["token"]
        .as_str()
        .unwrap_or_else(|| panic!("the token endpoint's answer has no token: {body}"))
        .to_string();
    let status = get("/v2/", Some(Auth::Bearer(&token))).status();
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "GET /v2/ with the bearer token"
    );
    (user, password)
}

enum Auth<'a> {
    Basic,
    Bearer(&'a str),
}

/// A second `ecrld` that admits no anonymous access, with working credentials for it.
pub struct PrivateEcrld {
    /// Dropped first: its `Drop` stops the daemon gracefully (`ecrl daemon stop`).
    pub env: Env,
    pub daemon: Daemon,
    /// `127.0.0.1:PORT`, plain HTTP.
    pub host: String,
    pub user: String,
    pub password: String,
}

impl PrivateEcrld {
    pub fn start() -> PrivateEcrld {
        let env = Env::with_anonymous("none");
        let daemon = env.spawn_daemon(&[]);
        let host = registry_address(&env);
        let (user, password) = credentials_for(&env);
        PrivateEcrld {
            env,
            daemon,
            host,
            user,
            password,
        }
    }

    /// skopeo flags for this ecrld as the source of `copy`/`sync`.
    pub fn skopeo_src_flags(&self) -> Vec<String> {
        self.skopeo_flags_with("--src-")
    }

    /// skopeo flags for this ecrld as the destination of `copy`/`sync`.
    pub fn skopeo_dest_flags(&self) -> Vec<String> {
        self.skopeo_flags_with("--dest-")
    }

    /// skopeo flags for commands on one image: `inspect`, `list-tags`, `delete`.
    pub fn skopeo_flags(&self) -> Vec<String> {
        self.skopeo_flags_with("--")
    }

    fn skopeo_flags_with(&self, prefix: &str) -> Vec<String> {
        vec![
            format!("{prefix}creds={}:{}", self.user, self.password),
            format!("{prefix}tls-verify=false"),
        ]
    }
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Writes an OCI image layout (a new directory in `dir`) holding one linux/amd64 image whose
/// layers are gzip-compressed tars, each with one file holding the given bytes. Returns the
/// layout's path and the manifest's digest. The same layers give the same digest.
///
/// `skopeo copy oci:PATH docker://HOST/REPO:TAG` pushes it (the layout's one manifest is
/// also tagged `latest`, so `oci:PATH:latest` names it too).
pub fn oci_layout_image(dir: &Path, layers: &[Vec<u8>]) -> (PathBuf, String) {
    let layout = new_layout(dir);
    let manifest = write_image(&layout, "amd64", layers);
    let digest = manifest.digest.clone();
    write_index_json(&layout, &manifest);
    (layout, digest)
}

/// Writes an OCI image layout (a new directory in `dir`) whose one entry is an image index of
/// two tiny images, linux/amd64 and linux/arm64, each with a layer of its own. Returns the
/// layout's path, the index's digest and the two images' digests (amd64, then arm64).
///
/// `skopeo copy --all oci:PATH docker://HOST/REPO:TAG` pushes the index with both images.
pub fn two_platform_index(dir: &Path) -> (PathBuf, String, Vec<String>) {
    let layout = new_layout(dir);
    let children: Vec<(&str, Descriptor)> = ["amd64", "arm64"]
        .into_iter()
        .map(|arch| {
            let layer = format!("the {arch} image's only layer\n").into_bytes();
            (arch, write_image(&layout, arch, &[layer]))
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|(arch, child)| serde_json::json!({
            "mediaType": child.media_type,
            "digest": child.digest,
            "size": child.size,
            "platform": {"architecture": arch, "os": "linux"},
        })).collect::<Vec<_>>(),
    });
    let index = write_blob(&layout, OCI_INDEX, &json_bytes(&index));
    write_index_json(&layout, &index);
    let child_digests = children.into_iter().map(|(_, c)| c.digest).collect();
    (layout, index.digest, child_digests)
}

struct Descriptor {
    media_type: &'static str,
    digest: String,
    size: usize,
}

/// A new, empty OCI layout directory in `dir`.
fn new_layout(dir: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let layout = loop {
        let candidate = dir.join(format!(
            "oci-layout-{}",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        if !candidate.exists() {
            break candidate;
        }
    };
    let blobs = layout.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", blobs.display()));
    let marker = layout.join("oci-layout");
    std::fs::write(&marker, r#"{"imageLayoutVersion":"1.0.0"}"#)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", marker.display()));
    layout
}

/// Writes the layers, config and manifest of a linux/`architecture` image; returns the
/// manifest's descriptor.
fn write_image(layout: &Path, architecture: &str, layers: &[Vec<u8>]) -> Descriptor {
    let mut diff_ids = Vec::new();
    let mut layer_descriptors = Vec::new();
    for (i, content) in layers.iter().enumerate() {
        let tar = one_file_tar(&format!("layer-{i}"), content);
        diff_ids.push(sha256_digest(&tar));
        let blob = write_blob(layout, OCI_LAYER_GZIP, &gzip(&tar));
        layer_descriptors.push(serde_json::json!({
            "mediaType": blob.media_type, "digest": blob.digest, "size": blob.size,
        }));
    }
    // No `created` time: the same layers must give the same digests.
    let config = serde_json::json!({
        "architecture": architecture,
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = write_blob(layout, OCI_CONFIG, &json_bytes(&config));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.size},
        "layers": layer_descriptors,
    });
    write_blob(layout, OCI_MANIFEST, &json_bytes(&manifest))
}

/// `index.json` naming one manifest or index, tagged `latest`.
fn write_index_json(layout: &Path, entry: &Descriptor) {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": entry.media_type,
            "digest": entry.digest,
            "size": entry.size,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    let path = layout.join("index.json");
    std::fs::write(&path, json_bytes(&index))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn write_blob(layout: &Path, media_type: &'static str, bytes: &[u8]) -> Descriptor {
    let hex_digest = hex(&Sha256::digest(bytes));
    let path = layout.join("blobs").join("sha256").join(&hex_digest);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    Descriptor {
        media_type,
        digest: format!("sha256:{hex_digest}"),
        size: bytes.len(),
    }
}

fn json_bytes(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialize JSON")
}

/// A tar holding one regular file `name` with `content`, with fixed metadata.
fn one_file_tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, name, content)
        .expect("append the layer's file to its tar");
    builder.into_inner().expect("finish the layer's tar")
}

/// gzip with a fixed header (no name, mtime 0), so the same tar gives the same blob.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("gzip a layer");
    encoder.finish().expect("finish a layer's gzip")
}
