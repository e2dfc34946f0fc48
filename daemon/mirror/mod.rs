//! Mirroring: other registries, logged in to ([`credentials`]), copied to and from
//! ([`sync`], once or as scheduled [`jobs`]), and replicated to as images are pushed
//! ([`replication`]). Built on the remote client of `transfer::remote` and the image copy
//! of [`copy`].
//!
//! Calls transfer, images, storage and metadata; must not call the registry or the control
//! API (the doors call it).

pub mod cache;
pub mod copy;
pub mod credentials;
pub mod jobs;
pub mod keyed;
pub mod replication;
pub mod sync;

use crate::app::AppState;
use crate::transfer::remote::{Remote, RemoteError, Settings};
use credentials::{CredentialError, Logins};
use ecrl::api::mirror::LoginInfo;
use ecrl::api::{ApiError, ErrorCode};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a connected remote (its protocol, scheme and tokens) is reused.
const REMOTE_REUSE: Duration = Duration::from_secs(300);

/// A connection's key: the registry, and whose credentials it uses.
type RemoteKey = (String, String);

/// What mirroring keeps while the daemon runs.
pub struct Mirror {
    pub logins: Arc<Logins>,
    config: ecrl::config::MirrorConfig,
    /// Per-registry CA files in `<config dir>/certs.d/HOST/*.crt`, docker's layout.
    certs_dir: PathBuf,
    /// Connected remotes by (registry, whose credentials), and since when.
    remotes: Mutex<HashMap<RemoteKey, (Arc<Remote>, Instant)>>,
    pub partials: Arc<copy::Partials>,
    /// Wakes the replication workers (something was queued).
    pub replication_wake: tokio::sync::Notify,
    /// Wakes the job scheduler (a job was added or removed).
    pub jobs_wake: tokio::sync::Notify,
    /// The jobs running now.
    pub running_jobs: Mutex<std::collections::HashSet<String>>,
    /// The pull-through cache's fetches in progress.
    pub in_flight: cache::InFlight,
}

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error("{0}")]
    Invalid(String),
}

impl From<MirrorError> for ApiError {
    fn from(e: MirrorError) -> Self {
        let code = match &e {
            MirrorError::Invalid(_) => ErrorCode::InvalidParameter,
            MirrorError::Credentials(CredentialError::NotLoggedIn(_)) => {
                ErrorCode::InvalidParameter
            }
            MirrorError::Remote(RemoteError::NotFound(_)) => ErrorCode::ImageNotFound,
            MirrorError::Remote(_) => ErrorCode::RemoteFailed,
            MirrorError::Credentials(_) => ErrorCode::Internal,
        };
        ApiError::new(code, e.to_string())
    }
}

impl Mirror {
    pub fn new(
        config: ecrl::config::MirrorConfig,
        config_dir: &std::path::Path,
        keyring: Arc<dyn crate::storage::keys::SecretStore>,
    ) -> Mirror {
        Mirror {
            logins: Arc::new(Logins::new(
                config_dir,
                keyring,
                Logins::default_docker_config(),
            )),
            config,
            certs_dir: config_dir.join("certs.d"),
            remotes: Mutex::new(HashMap::new()),
            partials: Arc::new(copy::Partials::default()),
            replication_wake: tokio::sync::Notify::new(),
            jobs_wake: tokio::sync::Notify::new(),
            running_jobs: Mutex::new(Default::default()),
            in_flight: Default::default(),
        }
    }

    pub fn config(&self) -> &ecrl::config::MirrorConfig {
        &self.config
    }

    /// How to reach `registry`: the config file's CA and insecure flag, and the CA files in
    /// `certs.d/HOST/`.
    fn settings(&self, registry: &str) -> Settings {
        let configured = self.config.registries.get(registry);
        let mut ca_files: Vec<PathBuf> = configured
            .and_then(|r| r.ca_file.clone())
            .into_iter()
            .collect();
        let dir = self.certs_dir.join(registry);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                .collect();
            found.sort();
            ca_files.extend(found);
        }
        Settings {
            ca_files,
            insecure: configured.is_some_and(|r| r.insecure),
            ca_hint: format!(
                "mirror.registries.\"{registry}\".ca_file in ecrld's config file, or a \
                 ca.crt in {}",
                dir.display()
            ),
        }
    }

    /// A connected remote for `registry` (as [`ecrl::remote::parse_registry`] gives it),
    /// with the credentials ecrl finds for it.
    pub async fn remote(&self, registry: &str) -> Result<Arc<Remote>, MirrorError> {
        self.remote_as(registry, None).await
    }

    /// [`Self::remote`] with the credentials kept for another registry name (`--login` of a
    /// cache rule), when given.
    pub async fn remote_as(
        &self,
        registry: &str,
        credentials_of: Option<&str>,
    ) -> Result<Arc<Remote>, MirrorError> {
        let login = credentials_of.unwrap_or(registry).to_string();
        let key = (registry.to_string(), login.clone());
        if let Ok(remotes) = self.remotes.lock() {
            if let Some((remote, at)) = remotes.get(&key) {
                if at.elapsed() < REMOTE_REUSE {
                    return Ok(remote.clone());
                }
            }
        }
        let credentials = self.logins.lookup(&login).await?;
        let remote =
            Arc::new(Remote::connect(registry, &self.settings(registry), credentials).await?);
        if let Ok(mut remotes) = self.remotes.lock() {
            remotes.retain(|_, (_, at)| at.elapsed() < REMOTE_REUSE);
            remotes.insert(key, (remote.clone(), Instant::now()));
        }
        Ok(remote)
    }

    /// Drops the connections that use `login`'s credentials (they changed).
    fn forget(&self, login: &str) {
        if let Ok(mut remotes) = self.remotes.lock() {
            remotes.retain(|(_, used), _| used != login);
        }
    }

    /// Checks credentials against the registry and keeps them.
    pub async fn login(
        &self,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Result<LoginInfo, MirrorError> {
        if username.is_empty() || password.is_empty() {
            return Err(MirrorError::Invalid(
                "a login needs a user name and a password".into(),
            ));
        }
        let credentials = crate::transfer::remote::Credentials::Basic {
            username: username.to_string(),
            password: zeroize::Zeroizing::new(password.to_string()),
        };
        let remote = Remote::connect(registry, &self.settings(registry), Some(credentials)).await?;
        remote.check_login().await?;
        let logins = self.logins.clone();
        let (registry_owned, user, pass) = (
            registry.to_string(),
            username.to_string(),
            zeroize::Zeroizing::new(password.to_string()),
        );
        let info = tokio::task::spawn_blocking(move || logins.put(&registry_owned, &user, &pass))
            .await
            .map_err(|e| MirrorError::Invalid(e.to_string()))??;
        self.forget(registry);
        Ok(info)
    }

    pub async fn logout(&self, registry: &str) -> Result<LoginInfo, MirrorError> {
        let logins = self.logins.clone();
        let name = registry.to_string();
        let info = tokio::task::spawn_blocking(move || logins.remove(&name))
            .await
            .map_err(|e| MirrorError::Invalid(e.to_string()))??;
        self.forget(registry);
        Ok(info)
    }
}

/// Starts the background work: the replication workers and the job scheduler.
pub fn start(state: &Arc<AppState>) {
    replication::start(state);
    jobs::start(state);
}
