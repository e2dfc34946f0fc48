//! Credentials for remote registries: ecrl's own logins, and the ones the user already has
//! for docker.
//!
//! `ecrl login` keeps the registry and user name in `<config dir>/logins.json` (0600, in a
//! 0700 directory) and the password in the OS keyring (entry `ecrl/registry-HOST`); where
//! there is no keyring the password goes in that file too. Then docker's config
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`): its `auths` entries, its
//! `credHelpers` and `credsStore`, whose `docker-credential-NAME get` is run. ecrl's own login
//! wins. Secrets never reach a log line, an error or `Debug` output.

use crate::storage::keys::SecretStore;
use crate::transfer::remote::Credentials;
use ecrl::api::mirror::LoginInfo;
use ecrl::docker_config::{parse_helper_answer, DockerConfig, Found};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

const STORE_KEYRING: &str = "keyring";
const STORE_FILE: &str = "file";

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot keep the login in {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is damaged ({reason}); remove it and log in again", path.display())]
    Damaged { path: PathBuf, reason: String },
    #[error("{0}")]
    Docker(String),
    #[error("ecrl holds no login for {0}")]
    NotLoggedIn(String),
}

#[derive(Default, Serialize, Deserialize)]
struct LoginsFile {
    #[serde(default)]
    logins: BTreeMap<String, Entry>,
}

#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    username: String,
    store: String,
    /// Only where there is no keyring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

/// ecrl's logins and the user's docker credentials.
pub struct Logins {
    file: PathBuf,
    keyring: Arc<dyn SecretStore>,
    docker_config: Option<PathBuf>,
    /// Serialises changes to the file.
    lock: std::sync::Mutex<()>,
}

fn entry_name(registry: &str) -> String {
    format!("registry-{registry}")
}

impl Logins {
    /// `config_dir` is ecrl's (`~/.config/ecrl`); `docker_config` docker's config file.
    pub fn new(
        config_dir: &Path,
        keyring: Arc<dyn SecretStore>,
        docker_config: Option<PathBuf>,
    ) -> Logins {
        Logins {
            file: config_dir.join("logins.json"),
            keyring,
            docker_config,
            lock: std::sync::Mutex::new(()),
        }
    }

    /// Docker's config file as docker finds it.
    pub fn default_docker_config() -> Option<PathBuf> {
        match std::env::var_os("DOCKER_CONFIG") {
            Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir).join("config.json")),
            _ => std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".docker").join("config.json")),
        }
    }

    fn read(&self) -> Result<LoginsFile, CredentialError> {
        match std::fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| CredentialError::Damaged {
                path: self.file.clone(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LoginsFile::default()),
            Err(e) => Err(CredentialError::Damaged {
                path: self.file.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// Writes the file whole (a temp file renamed over it), 0600 in a 0700 directory.
    fn write(&self, logins: &LoginsFile) -> Result<(), CredentialError> {
        let fail = |source| CredentialError::Write {
            path: self.file.clone(),
            source,
        };
        let dir = self.file.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(fail)?;
        let text = Zeroizing::new(serde_json::to_vec_pretty(logins).map_err(|e| fail(e.into()))?);
        let tmp = self.file.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(fail)?;
        f.write_all(&text).map_err(fail)?;
        f.sync_all().map_err(fail)?;
        std::fs::rename(&tmp, &self.file).map_err(fail)?;
        Ok(())
    }

    /// Keeps a login (the caller checked it against the registry).
    pub fn put(
        &self,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Result<LoginInfo, CredentialError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut logins = self.read()?;
        let entry = match self.keyring.set(&entry_name(registry), password) {
            Ok(()) => Entry {
                username: username.to_string(),
                store: STORE_KEYRING.into(),
                password: None,
            },
            Err(why) => {
                tracing::info!(
                    registry,
                    "no OS keyring ({}): the password goes in {}",
                    why.0,
                    self.file.display()
                );
                Entry {
                    username: username.to_string(),
                    store: STORE_FILE.into(),
                    password: Some(password.to_string()),
                }
            }
        };
        logins.logins.insert(registry.to_string(), entry.clone());
        self.write(&logins)?;
        Ok(info(registry, &entry))
    }

    /// Forgets a login.
    pub fn remove(&self, registry: &str) -> Result<LoginInfo, CredentialError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut logins = self.read()?;
        let entry = logins
            .logins
            .remove(registry)
            .ok_or_else(|| CredentialError::NotLoggedIn(registry.to_string()))?;
        if entry.store == STORE_KEYRING {
            if let Err(why) = self.keyring.delete(&entry_name(registry)) {
                tracing::warn!(registry, "cannot remove the keyring entry: {}", why.0);
            }
        }
        self.write(&logins)?;
        Ok(info(registry, &entry))
    }

    pub fn list(&self) -> Result<Vec<LoginInfo>, CredentialError> {
        Ok(self
            .read()?
            .logins
            .iter()
            .map(|(registry, e)| info(registry, e))
            .collect())
    }

    /// ecrl's own login for `registry`.
    fn own(&self, registry: &str) -> Result<Option<Credentials>, CredentialError> {
        let logins = self.read()?;
        let Some(entry) = logins.logins.get(registry) else {
            return Ok(None);
        };
        let password = match (&entry.password, entry.store.as_str()) {
            (Some(p), _) => Zeroizing::new(p.clone()),
            (None, _) => match self.keyring.get(&entry_name(registry)) {
                Ok(Some(p)) => p,
                Ok(None) => {
                    tracing::warn!(
                        registry,
                        "the keyring lost the password of this login; log in again"
                    );
                    return Ok(None);
                }
                Err(why) => {
                    tracing::warn!(registry, "cannot read the keyring: {}", why.0);
                    return Ok(None);
                }
            },
        };
        Ok(Some(Credentials::Basic {
            username: entry.username.clone(),
            password,
        }))
    }

    /// The credentials for `registry`: ecrl's login, else docker's, else none (anonymous).
    pub async fn lookup(
        self: &Arc<Self>,
        registry: &str,
    ) -> Result<Option<Credentials>, CredentialError> {
        let this = self.clone();
        let name = registry.to_string();
        let (own, found) = tokio::task::spawn_blocking(move || {
            let own = this.own(&name)?;
            if own.is_some() {
                return Ok((own, None));
            }
            Ok::<_, CredentialError>((None, this.docker(&name)?))
        })
        .await
        .map_err(|e| CredentialError::Docker(e.to_string()))??;
        if own.is_some() {
            return Ok(own);
        }
        match found {
            None => Ok(None),
            Some(Found::Basic { username, password }) => Ok(Some(Credentials::Basic {
                username,
                password: Zeroizing::new(password),
            })),
            Some(Found::IdentityToken(t)) => {
                Ok(Some(Credentials::IdentityToken(Zeroizing::new(t))))
            }
            Some(Found::Helper { name, server }) => run_helper(&name, &server).await,
        }
    }

    fn docker(&self, registry: &str) -> Result<Option<Found>, CredentialError> {
        let Some(path) = &self.docker_config else {
            return Ok(None);
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read docker's config: {e}");
                return Ok(None);
            }
        };
        let config = DockerConfig::parse(&text)
            .map_err(|e| CredentialError::Docker(format!("{}: {e}", path.display())))?;
        config
            .lookup(registry)
            .map_err(|e| CredentialError::Docker(format!("{}: {e}", path.display())))
    }
}

fn info(registry: &str, e: &Entry) -> LoginInfo {
    LoginInfo {
        registry: registry.to_string(),
        username: e.username.clone(),
        store: e.store.clone(),
    }
}

/// Asks `docker-credential-NAME get` for `server`'s credentials; a helper that knows none
/// answers an error, which is no credentials.
async fn run_helper(name: &str, server: &str) -> Result<Option<Credentials>, CredentialError> {
    use tokio::io::AsyncWriteExt;
    let program = format!("docker-credential-{name}");
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            CredentialError::Docker(format!(
                "docker's config names the credential helper {program}, which cannot run: {e}"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes()).await;
    }
    let output = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            CredentialError::Docker(format!(
                "{program} get did not answer within {}s",
                HELPER_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| CredentialError::Docker(format!("{program} get: {e}")))?;
    if !output.status.success() {
        // "credentials not found in native keychain": no credentials, anonymous then.
        tracing::debug!(
            helper = %program,
            server,
            "the credential helper has no credentials: {}",
            String::from_utf8_lossy(&output.stdout).trim()
        );
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    match parse_helper_answer(&text) {
        Ok(Found::Basic { username, password }) => Ok(Some(Credentials::Basic {
            username,
            password: Zeroizing::new(password),
        })),
        Ok(Found::IdentityToken(t)) => Ok(Some(Credentials::IdentityToken(Zeroizing::new(t)))),
        Ok(Found::Helper { .. }) => Ok(None),
        Err(_) => Err(CredentialError::Docker(format!(
            "{program} get answered something other than credentials"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::keys::fake::FakeKeyring;
    use std::os::unix::fs::PermissionsExt;

    fn basic(c: Option<Credentials>) -> (String, String) {
        match c {
            Some(Credentials::Basic { username, password }) => (username, password.to_string()),
            other => panic!("not basic credentials: {other:?}"),
        }
    }

    #[tokio::test]
    async fn logins_go_to_the_keyring_and_never_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Arc::new(FakeKeyring::default());
        let logins = Arc::new(Logins::new(dir.path(), keyring.clone(), None));
        let info = logins.put("reg.example:5000", "ann", "s3cret").unwrap();
        assert_eq!(info.store, "keyring");
        let text = std::fs::read_to_string(dir.path().join("logins.json")).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        let mode = std::fs::metadata(dir.path().join("logins.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            basic(logins.lookup("reg.example:5000").await.unwrap()),
            ("ann".into(), "s3cret".into())
        );
        assert_eq!(logins.list().unwrap(), vec![info.clone()]);
        assert_eq!(logins.remove("reg.example:5000").unwrap(), info);
        assert!(keyring.entries.lock().unwrap().is_empty());
        assert!(logins.lookup("reg.example:5000").await.unwrap().is_none());
        assert!(matches!(
            logins.remove("reg.example:5000"),
            Err(CredentialError::NotLoggedIn(_))
        ));
    }

    #[tokio::test]
    async fn without_a_keyring_the_password_is_kept_in_the_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let logins = Arc::new(Logins::new(
            &dir.path().join("cfg"),
            Arc::new(FakeKeyring::none()),
            None,
        ));
        assert_eq!(logins.put("a.example", "bob", "pw").unwrap().store, "file");
        let dir_mode = std::fs::metadata(dir.path().join("cfg"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert_eq!(
            basic(logins.lookup("a.example").await.unwrap()),
            ("bob".into(), "pw".into())
        );
    }

    #[tokio::test]
    async fn docker_s_credentials_are_used_and_ecrl_s_own_login_wins() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        // "dXNlcjpwYXNz" is base64 of user:pass.
        std::fs::write(
            &config,
            r#"{"auths": {"reg.example": {"auth": "dXNlcjpwYXNz"}},
                "credHelpers": {"helped.example": "ecrl-test-absent-helper"}}"#,
        )
        .unwrap();
        let logins = Arc::new(Logins::new(
            dir.path(),
            Arc::new(FakeKeyring::default()),
            Some(config),
        ));
        assert_eq!(
            basic(logins.lookup("reg.example").await.unwrap()),
            ("user".into(), "pass".into())
        );
        logins.put("reg.example", "own", "ownpw").unwrap();
        assert_eq!(
            basic(logins.lookup("reg.example").await.unwrap()),
            ("own".into(), "ownpw".into())
        );
        assert!(logins.lookup("other.example").await.unwrap().is_none());
        let e = logins.lookup("helped.example").await.unwrap_err();
        assert!(
            e.to_string()
                .contains("docker-credential-ecrl-test-absent-helper"),
            "{e}"
        );
    }
}
