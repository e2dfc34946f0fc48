//! Master keys of encrypted data dirs: where they are kept and how they are found again.
//!
//! A new key goes to the OS keyring (Secret Service on Linux, through the `keyring` crate,
//! behind [`SecretStore`] so that tests use a fake). Where there is no keyring (headless
//! machines, CI) it goes to `<config dir>/keys/<id>.key` instead: 64 hex digits, the file
//! 0600 in a 0700 directory. A key is looked up by its id in the keyring first, then in that
//! file. The key's bytes never reach a log line, an error or `Debug` output.

use super::crypt::{KeyId, MasterKey};
use ecrl::api::system::KeyStore;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

/// The keyring service name ecrl's entries are filed under.
const SERVICE: &str = "ecrl";
/// How long a keyring call may take before the keyring counts as unavailable (a locked
/// keyring on a desktop may wait for a password prompt nobody answers).
const KEYRING_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the keyring could not be used: a description without any secret in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

/// A place for named secrets: the OS keyring, or a fake in tests.
pub trait SecretStore: Send + Sync {
    /// The secret stored under `name`; `None` when there is none.
    fn get(&self, name: &str) -> Result<Option<Zeroizing<String>>, Unavailable>;
    fn set(&self, name: &str, secret: &str) -> Result<(), Unavailable>;
    /// Removes the secret under `name` (none there is no error).
    fn delete(&self, name: &str) -> Result<(), Unavailable>;
}

/// The OS keyring (Secret Service over D-Bus on Linux).
pub struct OsKeyring;

impl OsKeyring {
    /// Runs a keyring call on its own thread, so that a keyring that never answers cannot
    /// hold the daemon's start-up.
    fn call<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, keyring::Error> + Send + 'static,
    ) -> Result<Option<T>, Unavailable> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("keyring".into())
            .spawn(move || {
                let _ = tx.send(f());
            })
            .map_err(|e| Unavailable(format!("cannot start the keyring thread: {e}")))?;
        match rx.recv_timeout(KEYRING_TIMEOUT) {
            Ok(Ok(value)) => Ok(Some(value)),
            Ok(Err(keyring::Error::NoEntry)) => Ok(None),
            Ok(Err(e)) => Err(Unavailable(describe(&e))),
            Err(_) => Err(Unavailable(format!(
                "the OS keyring did not answer within {}s",
                KEYRING_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// A keyring error in words, never with the secret some variants carry.
fn describe(e: &keyring::Error) -> String {
    match e {
        keyring::Error::PlatformFailure(inner) | keyring::Error::NoStorageAccess(inner) => {
            inner.to_string()
        }
        keyring::Error::NoEntry => "no such entry".into(),
        keyring::Error::BadEncoding(_) => "the keyring entry is not text".into(),
        keyring::Error::TooLong(what, max) => format!("{what} is longer than {max}"),
        keyring::Error::Invalid(what, why) => format!("{what} is invalid: {why}"),
        keyring::Error::Ambiguous(_) => "several keyring entries match".into(),
        _ => "the OS keyring failed".into(),
    }
}

impl SecretStore for OsKeyring {
    fn get(&self, name: &str) -> Result<Option<Zeroizing<String>>, Unavailable> {
        let name = name.to_string();
        Self::call(move || {
            keyring::Entry::new(SERVICE, &name)?
                .get_password()
                .map(Zeroizing::new)
        })
    }

    fn set(&self, name: &str, secret: &str) -> Result<(), Unavailable> {
        let name = name.to_string();
        let secret = Zeroizing::new(secret.to_string());
        Self::call(move || keyring::Entry::new(SERVICE, &name)?.set_password(&secret))?
            .ok_or_else(|| Unavailable("the keyring lost the entry it was given".into()))
    }

    fn delete(&self, name: &str) -> Result<(), Unavailable> {
        let name = name.to_string();
        Self::call(move || keyring::Entry::new(SERVICE, &name)?.delete_credential()).map(|_| ())
    }
}

/// Where a key was found or put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPlace {
    pub store: KeyStore,
    /// The key file, when the key is in one.
    pub file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the storage key {id} is neither in the OS keyring ({keyring}) nor in {}; without it \
         the blobs of this data dir cannot be read: restore the key file (or the keyring \
         entry '{SERVICE}/{}') and start again",
        file.display(), entry_name(id)
    )]
    Missing {
        id: KeyId,
        keyring: String,
        file: PathBuf,
    },
    #[error("the storage key file {} is damaged (it must hold 64 hex digits)", .0.display())]
    Damaged(PathBuf),
    #[error("the OS keyring's entry for storage key {0} is damaged (it must hold 64 hex digits)")]
    DamagedEntry(KeyId),
    #[error("cannot keep the storage key in {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read the storage key file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot make a storage key: {0}")]
    Generate(io::Error),
}

fn entry_name(id: &KeyId) -> String {
    format!("storage-key-{id}")
}

/// The key file of `id` under `key_dir`.
pub fn key_file(key_dir: &Path, id: KeyId) -> PathBuf {
    key_dir.join(format!("{id}.key"))
}

/// Makes a new master key and keeps it: in the keyring when there is one, else in a file
/// under `key_dir`.
pub fn create(
    keyring: &dyn SecretStore,
    key_dir: &Path,
) -> Result<(MasterKey, KeyPlace), KeyError> {
    let key = MasterKey::generate().map_err(KeyError::Generate)?;
    match keyring.set(&entry_name(&key.id()), &key.to_hex()) {
        Ok(()) => {
            tracing::info!(key = %key.id(), "new storage key kept in the OS keyring");
            return Ok((
                key,
                KeyPlace {
                    store: KeyStore::Keyring,
                    file: None,
                },
            ));
        }
        Err(Unavailable(why)) => {
            tracing::info!(key = %key.id(), "no usable OS keyring ({why}); keeping the new storage key in a file");
        }
    }
    let path = key_file(key_dir, key.id());
    write_key_file(key_dir, &path, &key).map_err(|source| KeyError::Write {
        path: path.clone(),
        source,
    })?;
    tracing::info!(key = %key.id(), file = %path.display(), "new storage key kept in a 0600 file");
    Ok((
        key,
        KeyPlace {
            store: KeyStore::File,
            file: Some(path),
        },
    ))
}

/// Finds the master key `id`: in the keyring, else in its file under `key_dir`.
pub fn load(
    id: KeyId,
    keyring: &dyn SecretStore,
    key_dir: &Path,
) -> Result<(MasterKey, KeyPlace), KeyError> {
    let why = match keyring.get(&entry_name(&id)) {
        Ok(Some(hex)) => {
            let key = MasterKey::from_hex(id, &hex).ok_or(KeyError::DamagedEntry(id))?;
            return Ok((
                key,
                KeyPlace {
                    store: KeyStore::Keyring,
                    file: None,
                },
            ));
        }
        Ok(None) => "no entry there".to_string(),
        Err(Unavailable(why)) => why,
    };
    let path = key_file(key_dir, id);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(KeyError::Missing {
                id,
                keyring: why,
                file: path,
            })
        }
        Err(source) => return Err(KeyError::Read { path, source }),
    };
    let mode = file
        .metadata()
        .map_err(|source| KeyError::Read {
            path: path.clone(),
            source,
        })?
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            file = %path.display(),
            "the storage key file can be read by other users (mode {:o}); chmod 600 it",
            mode & 0o777
        );
    }
    let mut hex = Zeroizing::new(String::new());
    file.read_to_string(&mut hex)
        .map_err(|source| KeyError::Read {
            path: path.clone(),
            source,
        })?;
    let key = MasterKey::from_hex(id, &hex).ok_or_else(|| KeyError::Damaged(path.clone()))?;
    Ok((
        key,
        KeyPlace {
            store: KeyStore::File,
            file: Some(path),
        },
    ))
}

/// Writes the key durably: a new 0600 file (never over another) in a 0700 directory.
fn write_key_file(key_dir: &Path, path: &Path, key: &MasterKey) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(key_dir)?;
    let result = (|| {
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        let mut text = key.to_hex();
        text.push('\n');
        file.write_all(text.as_bytes())?;
        file.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result?;
    File::open(key_dir)?.sync_all()
}

#[cfg(test)]
pub mod fake {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// A keyring in memory; `unavailable` makes it behave like a machine without one.
    #[derive(Default)]
    pub struct FakeKeyring {
        pub entries: Mutex<HashMap<String, String>>,
        pub unavailable: bool,
    }

    impl FakeKeyring {
        pub fn none() -> FakeKeyring {
            FakeKeyring {
                unavailable: true,
                ..Default::default()
            }
        }
    }

    impl SecretStore for FakeKeyring {
        fn get(&self, name: &str) -> Result<Option<Zeroizing<String>>, Unavailable> {
            if self.unavailable {
                return Err(Unavailable("no secret service (fake)".into()));
            }
            Ok(self
                .entries
                .lock()
                .unwrap()
                .get(name)
                .cloned()
                .map(Zeroizing::new))
        }

        fn set(&self, name: &str, secret: &str) -> Result<(), Unavailable> {
            if self.unavailable {
                return Err(Unavailable("no secret service (fake)".into()));
            }
            self.entries
                .lock()
                .unwrap()
                .insert(name.to_string(), secret.to_string());
            Ok(())
        }

        fn delete(&self, name: &str) -> Result<(), Unavailable> {
            if self.unavailable {
                return Err(Unavailable("no secret service (fake)".into()));
            }
            self.entries.lock().unwrap().remove(name);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeKeyring;
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_go_to_the_keyring_when_there_is_one() {
        let dir = tempfile::tempdir().unwrap();
        let keyring = FakeKeyring::default();
        let (key, place) = create(&keyring, &dir.path().join("keys")).unwrap();
        assert_eq!(place.store, KeyStore::Keyring);
        assert!(!dir.path().join("keys").exists());
        let (again, place) = load(key.id(), &keyring, &dir.path().join("keys")).unwrap();
        assert_eq!(place.store, KeyStore::Keyring);
        assert_eq!(again.to_hex(), key.to_hex());
    }

    #[test]
    fn without_a_keyring_keys_go_to_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("config/keys");
        let keyring = FakeKeyring::none();
        let (key, place) = create(&keyring, &keys).unwrap();
        let file = key_file(&keys, key.id());
        assert_eq!(
            place,
            KeyPlace {
                store: KeyStore::File,
                file: Some(file.clone())
            }
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&keys), 0o700);
        let (again, place) = load(key.id(), &keyring, &keys).unwrap();
        assert_eq!(place.store, KeyStore::File);
        assert_eq!(again.to_hex(), key.to_hex());
        // A keyring that appears later still finds the key in its file.
        let (again, _) = load(key.id(), &FakeKeyring::default(), &keys).unwrap();
        assert_eq!(again.to_hex(), key.to_hex());

        // Damaged and missing files are errors that name the file and never the key.
        std::fs::write(&file, "not hex\n").unwrap();
        let err = load(key.id(), &keyring, &keys).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()), "{err}");
        std::fs::remove_file(&file).unwrap();
        let err = load(key.id(), &keyring, &keys).unwrap_err().to_string();
        assert!(err.contains(&key.id().to_string()), "{err}");
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(err.contains("no secret service"), "{err}");
        assert!(!err.contains(key.to_hex().as_str()), "{err}");
    }

    #[test]
    fn keyring_errors_never_carry_the_secret() {
        let secret = b"0123456789abcdef".to_vec();
        let text = describe(&keyring::Error::BadEncoding(secret));
        assert!(!text.contains("0123456789abcdef"), "{text}");
    }
}
