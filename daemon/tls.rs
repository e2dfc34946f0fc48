//! HTTPS for the registry: ecrld's own CA (created once in the config dir, reused after), the
//! server certificate that CA issues at every start, the user's own certificate files, and a
//! listener that completes each TLS handshake (within a time limit) before the HTTP server
//! sees the connection.
//!
//! It owns the files of the CA dir (`ca.crt` 0644, `ca.key` 0600, the dir 0700). It knows
//! nothing of the registry: `registry::serve` takes a [`TlsListener`] as it takes a TCP one,
//! so both listeners serve the same router with the same HTTP limits.

use ecrl::config::{TlsCertificate, TlsConfig};
use ecrl::paths;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How long a client may take to complete its TLS handshake: a client that stalls is
/// disconnected instead of holding a connection (and a handshake slot) forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; further connections wait in the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 256;

/// How long ecrld's CA is valid.
const CA_VALIDITY: time::Duration = time::Duration::days(10 * 365);

/// How long a server certificate is valid. It is issued anew at every start; 825 days is the
/// longest validity every platform's verifier accepts for a TLS server certificate.
const SERVER_VALIDITY: time::Duration = time::Duration::days(825);

/// The names every generated server certificate is valid for.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no PEM certificate (BEGIN CERTIFICATE) in the TLS certificate file {}", path.display())]
    NoCertificate { path: PathBuf },
    #[error(
        "no PEM private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) in the TLS \
         key file {}", path.display()
    )]
    NoKey { path: PathBuf },
    #[error("the TLS {what} {} is not valid PEM: {message}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error(
        "the private key {} does not belong to the certificate {}: give the key the certificate \
         was issued for", key.display(), cert.display()
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot serve the TLS certificate {}: {message}", cert.display())]
    Unusable { cert: PathBuf, message: String },
    #[error("cannot set up ecrld's CA in {}: {source}", dir.display())]
    CaIo {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "ecrld's CA key {} can be read by other users (mode {mode:04o}): run 'chmod 600 {}'",
        path.display(), path.display()
    )]
    CaKeyExposed { path: PathBuf, mode: u32 },
    #[error(
        "ecrld's CA in {} is unusable: {message}; to start over with a new CA, remove that \
         directory (clients that trusted the old CA must then trust the new one)", dir.display()
    )]
    CaUnusable { dir: PathBuf, message: String },
    #[error("cannot issue the registry's TLS certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("cannot set up TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What the registry serves HTTPS with, before the listening address is known.
pub enum Identity {
    /// The user's certificate chain and key, checked to belong together.
    Files {
        cert: PathBuf,
        chain: Vec<CertificateDer<'static>>,
        private_key: PrivateKeyDer<'static>,
    },
    /// ecrld's own CA and the extra names for the server certificates it issues.
    Generated {
        ca: Box<LocalCa>,
        names: Vec<String>,
    },
}

/// A ready TLS set-up for one listener.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// The CA certificate clients must trust, when the certificate is ecrld's own.
    pub ca_cert: Option<PathBuf>,
    /// The user's certificate file, when it is theirs.
    pub cert_file: Option<PathBuf>,
    /// The names (DNS names and IPs) the generated certificate is valid for.
    pub names: Vec<String>,
}

/// Loads the user's files, or ecrld's CA (creating it at the first start). Blocking: it reads
/// and writes small files and may wait for another ecrld creating the same CA.
pub fn identity(config: &TlsConfig) -> Result<Identity, TlsError> {
    match &config.certificate {
        TlsCertificate::Files { cert, key } => {
            let chain = read_chain(cert)?;
            let private_key = read_key(key)?;
            // Checked now rather than on the first handshake, so a wrong pair stops start-up.
            let certified = rustls::sign::CertifiedKey::from_der(
                chain.clone(),
                private_key.clone_key(),
                &provider(),
            );
            match certified {
                Ok(_) => {}
                Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                    return Err(TlsError::Mismatch {
                        cert: cert.clone(),
                        key: key.clone(),
                    })
                }
                Err(e) => {
                    return Err(TlsError::Unusable {
                        cert: cert.clone(),
                        message: e.to_string(),
                    })
                }
            }
            Ok(Identity::Files {
                cert: cert.clone(),
                chain,
                private_key,
            })
        }
        TlsCertificate::Generated { ca_dir, names } => Ok(Identity::Generated {
            ca: Box::new(LocalCa::load_or_create(ca_dir)?),
            names: names.clone(),
        }),
    }
}

impl Identity {
    /// The server configuration for a listener bound to `listen` (whose IP, when it is a
    /// specific non-loopback one, the generated certificate also names).
    pub fn server_tls(&self, listen: SocketAddr) -> Result<ServerTls, TlsError> {
        match self {
            Identity::Files {
                cert,
                chain,
                private_key,
            } => Ok(ServerTls {
                config: server_config(chain.clone(), private_key.clone_key())?,
                ca_cert: None,
                cert_file: Some(cert.clone()),
                names: Vec::new(),
            }),
            Identity::Generated { ca, names } => {
                let mut all: Vec<String> = LOOPBACK_NAMES.iter().map(|n| n.to_string()).collect();
                let ip = listen.ip();
                if !ip.is_loopback() && !ip.is_unspecified() {
                    all.push(ip.to_string());
                }
                for name in names {
                    if !all.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                        all.push(name.clone());
                    }
                }
                let (chain, key) = ca.issue_server_certificate(&all)?;
                Ok(ServerTls {
                    config: server_config(chain, key)?,
                    ca_cert: Some(ca.cert_path.clone()),
                    cert_file: None,
                    names: all,
                })
            }
        }
    }
}

/// The crypto provider, named rather than taken from the process default (which is ambiguous
/// when more than one provider is compiled in).
/// The roots a TLS client of ecrld trusts: the system's, and the PEM certificates of
/// `ca_files` (a private CA of a remote registry or of PostgreSQL).
pub fn client_roots(ca_files: &[std::path::PathBuf]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let (_, _) = roots.add_parsable_certificates(system_roots().iter().cloned());
    for file in ca_files {
        let certs: Vec<_> = CertificateDer::pem_file_iter(file)
            .map_err(|e| format!("reading CA file {}: {e}", file.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("reading CA file {}: {e}", file.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "CA file {} holds no PEM certificate",
                file.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("CA file {}: {e}", file.display()))?;
        }
    }
    Ok(roots)
}

/// The system's trusted roots, read once.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!("reading the system's CA certificates: {e}");
        }
        found.certs
    })
}

pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // The router speaks HTTP/1.1 only (as on plain HTTP); clients that offer h2 as well fall
    // back to it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path, "certificate file")?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: "certificate file",
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path, "key file")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        e => TlsError::Pem {
            what: "key file",
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    })
}

/// ecrld's own certificate authority: an ECDSA P-256 key and a self-signed CA certificate in
/// the config dir, made once and then reused, so clients trust it once.
pub struct LocalCa {
    pub cert_path: PathBuf,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl LocalCa {
    /// Loads the CA in `dir`, creating it first when there is none. An flock on a file in the
    /// dir makes two daemons starting at once agree on one CA.
    pub fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        let io = |source| TlsError::CaIo {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        let mode = std::fs::metadata(dir).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        let _lock = lock(&dir.join(".lock")).map_err(io)?;

        let cert_path = dir.join(paths::CA_CERT_FILE);
        let key_path = dir.join(paths::CA_KEY_FILE);
        let key = if key_path.exists() {
            let mode = std::fs::metadata(&key_path)
                .map_err(io)?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(TlsError::CaKeyExposed {
                    path: key_path,
                    mode: mode & 0o7777,
                });
            }
            let pem = std::fs::read_to_string(&key_path).map_err(io)?;
            KeyPair::from_pem(&pem).map_err(|e| TlsError::CaUnusable {
                dir: dir.to_path_buf(),
                message: format!("{}: {e}", key_path.display()),
            })?
        } else if cert_path.exists() {
            return Err(TlsError::CaUnusable {
                dir: dir.to_path_buf(),
                message: format!("{} has no key beside it", cert_path.display()),
            });
        } else {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            write_atomically(dir, &key_path, key.serialize_pem().as_bytes(), 0o600).map_err(io)?;
            tracing::info!(path = %key_path.display(), "created a key for ecrld's CA");
            key
        };
        // A key without a certificate (a first start that stopped between the two) gets one;
        // no client can trust a certificate that was never written.
        if !cert_path.exists() {
            let cert = ca_params().self_signed(&key)?;
            write_atomically(dir, &cert_path, cert.pem().as_bytes(), 0o644).map_err(io)?;
            tracing::info!(path = %cert_path.display(), "created ecrld's CA certificate");
        }

        let unusable = |message: String| TlsError::CaUnusable {
            dir: dir.to_path_buf(),
            message,
        };
        let pem = std::fs::read(&cert_path).map_err(io)?;
        let cert_der = CertificateDer::from_pem_slice(&pem)
            .map_err(|e| unusable(format!("{}: {e}", cert_path.display())))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        match rustls::sign::CertifiedKey::from_der(vec![cert_der.clone()], key_der, &provider()) {
            Ok(_) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(unusable(format!(
                    "{} was not made with {}",
                    cert_path.display(),
                    key_path.display()
                )))
            }
            Err(e) => return Err(unusable(format!("{}: {e}", cert_path.display()))),
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| unusable(format!("{}: {e}", cert_path.display())))?;
        Ok(LocalCa {
            cert_path,
            cert_der,
            issuer,
        })
    }

    /// A new key and a certificate for `names`, signed by this CA; the chain ends with the CA.
    fn issue_server_certificate(
        &self,
        names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "ecrl registry");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        // An hour of slack for clients whose clock is a little behind.
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + SERVER_VALIDITY;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let chain = vec![cert.der().clone(), self.cert_der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((chain, key))
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let name = if host.is_empty() {
        "ecrl local CA".to_string()
    } else {
        format!("ecrl local CA on {host}")
    };
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "ecrl");
    // It signs server certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + CA_VALIDITY;
    params
}

/// An exclusive flock, released when the file closes.
fn lock(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)?;
    // SAFETY: flock on a descriptor this function owns; it blocks until the lock is free.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Writes a whole file under a temporary name, syncs it, renames it into place and syncs the
/// directory, so a crash leaves the old state or the new file, never a torn one.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode; the CA certificate is meant to be readable.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A TLS listener for `registry::serve`: accepted TCP connections complete their handshake in
/// their own tasks (each within [`HANDSHAKE_TIMEOUT`]), and only finished ones are handed to
/// the HTTP server, so one slow client never holds up the others.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp`. Accepting stops when `shutdown` is cancelled or the
    /// listener is dropped (as `registry::serve` does when it stops).
    pub fn new(
        tcp: TcpListener,
        config: Arc<ServerConfig>,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        let (sender, ready) = mpsc::channel(MAX_HANDSHAKES);
        tokio::spawn(accept_loop(
            tcp,
            TlsAcceptor::from(config),
            sender,
            shutdown,
            HANDSHAKE_TIMEOUT,
        ));
        Ok(TlsListener { ready, local_addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop stopped (shutdown): nothing more comes; registry::serve ends on
            // the same shutdown signal.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    shutdown: CancellationToken,
    handshake_timeout: Duration,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
            _ = shutdown.cancelled() => return,
            _ = ready.closed() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
            _ = ready.closed() => return,
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await;
            drop(slot);
            match handshake {
                Ok(Ok(tls)) => {
                    // Fails only when the server stopped: the connection is then dropped.
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(
                    %peer,
                    "TLS handshake not completed within {}s; connection closed",
                    handshake_timeout.as_secs()
                ),
            }
        });
    }
}

/// As axum's own listener does: a connection that failed before it was accepted is the
/// client's business; anything else (out of descriptors) is logged and retried after a pause.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!("cannot accept an HTTPS connection: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn the_ca_is_created_once_with_private_key_permissions_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("config/tls");
        let first = LocalCa::load_or_create(&ca_dir).unwrap();
        assert_eq!(mode(&ca_dir), 0o700);
        assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);
        assert_eq!(mode(&ca_dir.join("ca.crt")), 0o644);
        let cert = std::fs::read(ca_dir.join("ca.crt")).unwrap();
        let key = std::fs::read(ca_dir.join("ca.key")).unwrap();

        let second = LocalCa::load_or_create(&ca_dir).unwrap();
        assert_eq!(std::fs::read(ca_dir.join("ca.crt")).unwrap(), cert);
        assert_eq!(std::fs::read(ca_dir.join("ca.key")).unwrap(), key);
        assert_eq!(first.cert_der, second.cert_der);
    }

    #[test]
    fn issued_certificates_chain_to_the_ca_for_every_name() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let names = vec![
            "localhost".to_string(),
            "::1".to_string(),
            "registry.lan".to_string(),
        ];
        let (chain, _key) = ca.issue_server_certificate(&names).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], ca.cert_der);

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der.clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(provider()),
        )
        .build()
        .unwrap();
        let now = rustls::pki_types::UnixTime::now();
        for name in ["localhost", "::1", "registry.lan"] {
            let server = rustls::pki_types::ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&chain[0], &chain[1..], &server, &[], now)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = rustls::pki_types::ServerName::try_from("other.lan").unwrap();
        assert!(verifier
            .verify_server_cert(&chain[0], &chain[1..], &other, &[], now)
            .is_err());
    }

    #[test]
    fn a_key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        LocalCa::load_or_create(dir.path()).unwrap();
        let key = dir.path().join("ca.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = LocalCa::load_or_create(dir.path()).err().unwrap();
        assert!(matches!(err, TlsError::CaKeyExposed { .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_ca_certificate_without_its_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        LocalCa::load_or_create(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join("ca.key")).unwrap();
        let err = LocalCa::load_or_create(dir.path()).err().unwrap();
        assert!(err.to_string().contains("has no key"), "{err}");
    }
}
