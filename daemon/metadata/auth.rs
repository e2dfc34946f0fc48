//! Principals (users and their access keys), identity policies, repository policies and the
//! registry policy: the writes and the part of [`load`](super::load) that rebuilds them.
//!
//! Secrets are never stored: an access key's secret is kept as its SHA-256 (the secrets are
//! 40 random characters, so a fast hash is enough). Policy documents are kept as the text
//! the user gave, so `get` answers what was set.

use super::{now_millis, Index, MetaError, Metadata};
use ecrl::names::RepoName;
use rusqlite::{params, Connection};
use std::collections::BTreeMap;

/// A user as the index holds it.
#[derive(Clone, Default)]
pub struct UserRecord {
    pub created_at: i64,
    /// Access key id → SHA-256 of its secret.
    pub keys: BTreeMap<String, [u8; 32]>,
    /// Identity policies by name: their documents as given.
    pub policies: BTreeMap<String, String>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("created_at", &self.created_at)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("policies", &self.policies.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What the index knows about access.
#[derive(Debug, Clone, Default)]
pub struct AuthIndex {
    pub users: BTreeMap<String, UserRecord>,
    /// Access key id → user name.
    pub key_owners: BTreeMap<String, String>,
    /// The registry policy's document, when one is set.
    pub registry_policy: Option<String>,
    /// Changes whenever users, keys or policies do (also when a repository, and so its
    /// policy, goes): what callers cached about access is stale once it differs.
    pub epoch: u64,
}

impl AuthIndex {
    /// The user an access key belongs to, and the hash of its secret.
    pub fn key(&self, id: &str) -> Option<(&str, &[u8; 32])> {
        let user = self.key_owners.get(id)?;
        let hash = self.users.get(user)?.keys.get(id)?;
        Some((user, hash))
    }
}

impl Metadata {
    pub async fn create_user(
        &self,
        name: String,
        key_id: String,
        secret_hash: [u8; 32],
    ) -> Result<i64, MetaError> {
        self.write(move |conn, index| {
            if index.auth.users.contains_key(&name) {
                return Err(MetaError::UserExists(name));
            }
            let now = now_millis();
            conn.execute(
                "INSERT INTO users (name, created_at) VALUES (?1, ?2)",
                params![name, now],
            )?;
            conn.execute(
                "INSERT INTO access_keys (id, user, secret_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![key_id, name, secret_hash.as_slice(), now],
            )?;
            let mut user = UserRecord {
                created_at: now,
                ..Default::default()
            };
            user.keys.insert(key_id.clone(), secret_hash);
            index.auth.users.insert(name.clone(), user);
            index.auth.key_owners.insert(key_id, name);
            index.auth.epoch += 1;
            Ok(now)
        })
        .await
    }

    pub async fn delete_user(&self, name: String) -> Result<(), MetaError> {
        self.write(move |conn, index| {
            let Some(user) = index.auth.users.remove(&name) else {
                return Err(MetaError::UserNotFound(name));
            };
            for id in user.keys.keys() {
                index.auth.key_owners.remove(id);
            }
            conn.execute("DELETE FROM users WHERE name = ?1", params![name])?;
            index.auth.epoch += 1;
            Ok(())
        })
        .await
    }

    /// Replaces every access key of the user with a new one.
    pub async fn rotate_key(
        &self,
        name: String,
        key_id: String,
        secret_hash: [u8; 32],
    ) -> Result<i64, MetaError> {
        self.write(move |conn, index| {
            let Some(user) = index.auth.users.get_mut(&name) else {
                return Err(MetaError::UserNotFound(name));
            };
            let now = now_millis();
            conn.execute("DELETE FROM access_keys WHERE user = ?1", params![name])?;
            conn.execute(
                "INSERT INTO access_keys (id, user, secret_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![key_id, name, secret_hash.as_slice(), now],
            )?;
            for old in std::mem::take(&mut user.keys).keys() {
                index.auth.key_owners.remove(old);
            }
            user.keys.insert(key_id.clone(), secret_hash);
            index.auth.key_owners.insert(key_id, name);
            index.auth.epoch += 1;
            Ok(now)
        })
        .await
    }

    /// Attaches (or replaces) an identity policy; the caller has validated the document.
    pub async fn put_user_policy(
        &self,
        user: String,
        policy: String,
        document: String,
    ) -> Result<(), MetaError> {
        self.write(move |conn, index| {
            let Some(record) = index.auth.users.get_mut(&user) else {
                return Err(MetaError::UserNotFound(user));
            };
            conn.execute(
                "INSERT INTO user_policies (user, name, document) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user, name) DO UPDATE SET document = excluded.document",
                params![user, policy, document],
            )?;
            record.policies.insert(policy, document);
            index.auth.epoch += 1;
            Ok(())
        })
        .await
    }

    pub async fn delete_user_policy(&self, user: String, policy: String) -> Result<(), MetaError> {
        self.write(move |conn, index| {
            let Some(record) = index.auth.users.get_mut(&user) else {
                return Err(MetaError::UserNotFound(user));
            };
            if record.policies.remove(&policy).is_none() {
                return Err(MetaError::PolicyNotFound(format!(
                    "user {user} has no policy named {policy}"
                )));
            }
            conn.execute(
                "DELETE FROM user_policies WHERE user = ?1 AND name = ?2",
                params![user, policy],
            )?;
            index.auth.epoch += 1;
            Ok(())
        })
        .await
    }

    /// Sets (`Some`) or removes (`None`) a repository's policy; answers the previous one.
    pub async fn set_repository_policy(
        &self,
        repo: RepoName,
        document: Option<String>,
    ) -> Result<Option<String>, MetaError> {
        self.write(move |conn, index| {
            let Some(record) = index.repos.get_mut(&repo) else {
                return Err(MetaError::RepoNotFound(repo));
            };
            match &document {
                Some(doc) => conn.execute(
                    "INSERT INTO repository_policies (repo, document) VALUES (?1, ?2)
                     ON CONFLICT (repo) DO UPDATE SET document = excluded.document",
                    params![repo.as_str(), doc],
                )?,
                None => conn.execute(
                    "DELETE FROM repository_policies WHERE repo = ?1",
                    params![repo.as_str()],
                )?,
            };
            let old = std::mem::replace(&mut record.policy, document);
            index.auth.epoch += 1;
            Ok(old)
        })
        .await
    }

    /// Sets (`Some`) or removes (`None`) the registry policy; answers the previous one.
    pub async fn set_registry_policy(
        &self,
        document: Option<String>,
    ) -> Result<Option<String>, MetaError> {
        self.write(move |conn, index| {
            match &document {
                Some(doc) => conn.execute(
                    "INSERT INTO settings (key, value) VALUES ('registry_policy', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![doc],
                )?,
                None => conn.execute("DELETE FROM settings WHERE key = 'registry_policy'", [])?,
            };
            index.auth.epoch += 1;
            Ok(std::mem::replace(&mut index.auth.registry_policy, document))
        })
        .await
    }
}

/// The secret that signs login tokens, made at first start.
pub(super) fn token_secret(conn: &Connection) -> Result<[u8; 32], MetaError> {
    let existing: Option<String> = conn
        .query_row(
            "SELECT value FROM settings WHERE key = 'token_secret'",
            [],
            |r| r.get(0),
        )
        .ok();
    let hex = match existing {
        Some(hex) => hex,
        None => {
            let mut bytes = [0u8; 32];
            getrandom(&mut bytes)?;
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            conn.execute(
                "INSERT INTO settings (key, value) VALUES ('token_secret', ?1)",
                [&hex],
            )?;
            hex
        }
    };
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return Err(MetaError::Db("the stored token secret is malformed".into()));
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| MetaError::Db("the stored token secret is malformed".into()))?;
    }
    Ok(out)
}

/// Random bytes from the kernel.
pub fn getrandom(buf: &mut [u8]) -> Result<(), MetaError> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| MetaError::Db(format!("reading /dev/urandom: {e}")))
}

pub(super) fn load(conn: &Connection, index: &mut Index) -> Result<(), MetaError> {
    // A fresh start for the epoch that no earlier value repeats (a reload after a failed
    // commit must not match what callers cached before it).
    index.auth.epoch = now_millis() as u64 * 1_000;
    let mut stmt = conn.prepare("SELECT name, created_at FROM users")?;
    let users = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in users {
        let (name, created_at) = row?;
        index.auth.users.insert(
            name,
            UserRecord {
                created_at,
                ..Default::default()
            },
        );
    }
    let mut stmt = conn.prepare("SELECT id, user, secret_hash FROM access_keys")?;
    let keys = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Vec<u8>>(2)?,
        ))
    })?;
    for row in keys {
        let (id, user, hash) = row?;
        let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) else {
            tracing::warn!(key = %id, "ignoring an access key with a malformed hash");
            continue;
        };
        if let Some(record) = index.auth.users.get_mut(&user) {
            record.keys.insert(id.clone(), hash);
            index.auth.key_owners.insert(id, user);
        }
    }
    let mut stmt = conn.prepare("SELECT user, name, document FROM user_policies")?;
    let policies = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in policies {
        let (user, name, document) = row?;
        if let Some(record) = index.auth.users.get_mut(&user) {
            record.policies.insert(name, document);
        }
    }
    let mut stmt = conn.prepare("SELECT repo, document FROM repository_policies")?;
    let repo_policies =
        stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in repo_policies {
        let (repo, document) = row?;
        if let Some(record) = repo
            .parse::<RepoName>()
            .ok()
            .and_then(|name| index.repos.get_mut(&name))
        {
            record.policy = Some(document);
        }
    }
    index.auth.registry_policy = conn
        .query_row(
            "SELECT value FROM settings WHERE key = 'registry_policy'",
            [],
            |r| r.get(0),
        )
        .ok();
    Ok(())
}
