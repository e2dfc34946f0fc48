//! Principals (users and their access keys), identity policies, repository policies and the
//! registry policy: the writes and the part of [`load`](super::load) that rebuilds them.
//!
//! An access key's secret is checked against its SHA-256 (the secrets are 40 random
//! characters, so a fast hash is enough) and kept besides sealed (AES-256-GCM, under a key
//! derived from the token secret, the key id as associated data): SigV4 signatures on the AWS
//! API can only be checked with the secret itself, as on AWS. Whoever holds `metadata.db`
//! holds the token secret too, which already mints any token, so the sealing keeps secrets
//! out of dumps and backups read by mistake rather than from the database's holder. Policy
//! documents are kept as the text the user gave, so `get` answers what was set.

use super::db::Db;
use super::{now_millis, Index, MetaError, Metadata};
use ecrl::names::RepoName;
use rusqlite::params;
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
    /// The owner's access keys: id → SHA-256 of the secret, and when it was made (unix ms).
    pub owner_keys: BTreeMap<String, ([u8; 32], i64)>,
    /// Access key id → its secret, for the keys that have it kept (all but those made before
    /// secrets were kept): what SigV4 signatures are checked with.
    pub secrets: BTreeMap<String, KeptSecret>,
    /// The registry policy's document, when one is set.
    pub registry_policy: Option<String>,
    /// Changes whenever users, keys or policies do (also when a repository, and so its
    /// policy, goes): what callers cached about access is stale once it differs.
    pub epoch: u64,
}

/// An access key's secret, held for checking signatures; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct KeptSecret(pub String);

impl std::fmt::Debug for KeptSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeptSecret(<redacted>)")
    }
}

impl AuthIndex {
    /// The user an access key belongs to, and the hash of its secret.
    pub fn key(&self, id: &str) -> Option<(&str, &[u8; 32])> {
        let user = self.key_owners.get(id)?;
        let hash = self.users.get(user)?.keys.get(id)?;
        Some((user, hash))
    }

    /// Whose an access key is (`None`: the owner's) and its secret, for a SigV4 signature:
    /// `Err(true)` when the key exists but its secret was not kept (made before secrets
    /// were), `Err(false)` when there is no such key.
    pub fn signing_key(&self, id: &str) -> Result<(Option<&str>, &str), bool> {
        let owner = if self.owner_keys.contains_key(id) {
            None
        } else {
            Some(self.key(id).ok_or(false)?.0)
        };
        let secret = self.secrets.get(id).ok_or(true)?;
        Ok((owner, &secret.0))
    }
}

/// A key derived from the token secret for one `purpose` (access keys' secrets, the secret
/// store when blobs are not encrypted).
fn sealing_key(token_secret: &[u8; 32], purpose: &[u8]) -> aws_lc_rs::aead::LessSafeKey {
    use aws_lc_rs::{aead, hmac};
    let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, token_secret), purpose);
    let key = aead::UnboundKey::new(&aead::AES_256_GCM, derived.as_ref())
        .expect("a 32-byte key is an AES-256 key");
    aead::LessSafeKey::new(key)
}

const ACCESS_KEYS: &[u8] = b"ecrl access key secrets v1";

/// `nonce || ciphertext || tag` of `plain` under the token secret's key for `purpose`, bound
/// to `aad`.
pub fn seal_with_token_secret(
    token_secret: &[u8; 32],
    purpose: &[u8],
    aad: &[u8],
    plain: &[u8],
) -> Result<Vec<u8>, MetaError> {
    use aws_lc_rs::aead::{Aad, Nonce, NONCE_LEN};
    let mut nonce = [0u8; NONCE_LEN];
    getrandom(&mut nonce)?;
    let mut sealed = plain.to_vec();
    sealing_key(token_secret, purpose)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut sealed,
        )
        .map_err(|_| MetaError::Db("AES-256-GCM sealing failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// What [`seal_with_token_secret`] sealed with the same purpose and `aad`, or `None` when it
/// does not open.
pub fn open_with_token_secret(
    token_secret: &[u8; 32],
    purpose: &[u8],
    aad: &[u8],
    sealed: &[u8],
) -> Option<Vec<u8>> {
    use aws_lc_rs::aead::{Aad, Nonce, NONCE_LEN};
    let nonce = Nonce::try_assume_unique_for_key(sealed.get(..NONCE_LEN)?).ok()?;
    let mut body = sealed.get(NONCE_LEN..)?.to_vec();
    let n = sealing_key(token_secret, purpose)
        .open_in_place(nonce, Aad::from(aad), &mut body)
        .ok()?
        .len();
    body.truncate(n);
    Some(body)
}

/// An access key's secret sealed, bound to its id.
pub(super) fn seal_secret(
    token_secret: &[u8; 32],
    key_id: &str,
    secret: &str,
) -> Result<Vec<u8>, MetaError> {
    seal_with_token_secret(
        token_secret,
        ACCESS_KEYS,
        key_id.as_bytes(),
        secret.as_bytes(),
    )
}

/// The secret [`seal_secret`] sealed for `key_id`, or `None` when it does not open.
pub(super) fn open_secret(token_secret: &[u8; 32], key_id: &str, sealed: &[u8]) -> Option<String> {
    let plain = open_with_token_secret(token_secret, ACCESS_KEYS, key_id.as_bytes(), sealed)?;
    String::from_utf8(plain).ok()
}

impl Metadata {
    pub async fn create_user(
        &self,
        name: String,
        key_id: String,
        secret: String,
    ) -> Result<i64, MetaError> {
        let secret_hash = crate::auth::secret::hash_secret(&secret);
        let sealed = seal_secret(&self.token_secret, &key_id, &secret)?;
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
                "INSERT INTO access_keys (id, \"user\", secret_hash, secret_sealed, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key_id, name, secret_hash.as_slice(), sealed, now],
            )?;
            index
                .auth
                .secrets
                .insert(key_id.clone(), KeptSecret(secret));
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
                index.auth.secrets.remove(id);
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
        secret: String,
    ) -> Result<i64, MetaError> {
        let secret_hash = crate::auth::secret::hash_secret(&secret);
        let sealed = seal_secret(&self.token_secret, &key_id, &secret)?;
        self.write(move |conn, index| {
            let Some(user) = index.auth.users.get_mut(&name) else {
                return Err(MetaError::UserNotFound(name));
            };
            let now = now_millis();
            conn.execute("DELETE FROM access_keys WHERE \"user\" = ?1", params![name])?;
            conn.execute(
                "INSERT INTO access_keys (id, \"user\", secret_hash, secret_sealed, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key_id, name, secret_hash.as_slice(), sealed, now],
            )?;
            for old in std::mem::take(&mut user.keys).keys() {
                index.auth.key_owners.remove(old);
                index.auth.secrets.remove(old);
            }
            index
                .auth
                .secrets
                .insert(key_id.clone(), KeptSecret(secret));
            user.keys.insert(key_id.clone(), secret_hash);
            index.auth.key_owners.insert(key_id, name);
            index.auth.epoch += 1;
            Ok(now)
        })
        .await
    }

    /// A new access key of the owner; answers when it was made.
    pub async fn create_owner_key(&self, key_id: String, secret: String) -> Result<i64, MetaError> {
        let secret_hash = crate::auth::secret::hash_secret(&secret);
        let sealed = seal_secret(&self.token_secret, &key_id, &secret)?;
        self.write(move |conn, index| {
            let now = now_millis();
            conn.execute(
                "INSERT INTO owner_keys (id, secret_hash, secret_sealed, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![key_id, secret_hash.as_slice(), sealed, now],
            )?;
            index
                .auth
                .owner_keys
                .insert(key_id.clone(), (secret_hash, now));
            index.auth.secrets.insert(key_id, KeptSecret(secret));
            index.auth.epoch += 1;
            Ok(now)
        })
        .await
    }

    /// Removes an owner key: it, and what it signs, stop working at once.
    pub async fn delete_owner_key(&self, key_id: String) -> Result<(), MetaError> {
        self.write(move |conn, index| {
            if index.auth.owner_keys.remove(&key_id).is_none() {
                return Err(MetaError::KeyNotFound(key_id));
            }
            conn.execute("DELETE FROM owner_keys WHERE id = ?1", params![key_id])?;
            index.auth.secrets.remove(&key_id);
            index.auth.epoch += 1;
            Ok(())
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
                "INSERT INTO user_policies (\"user\", name, document) VALUES (?1, ?2, ?3)
                 ON CONFLICT (\"user\", name) DO UPDATE SET document = excluded.document",
                params![user, policy, document],
            )?;
            let event = super::events::policy_change(
                &index.events,
                "USER",
                "PUT",
                None,
                Some((&user, &policy)),
            );
            record.policies.insert(policy, document);
            index.auth.epoch += 1;
            super::events::record(conn, index, event)?;
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
                "DELETE FROM user_policies WHERE \"user\" = ?1 AND name = ?2",
                params![user, policy],
            )?;
            index.auth.epoch += 1;
            let event = super::events::policy_change(
                &index.events,
                "USER",
                "DELETE",
                None,
                Some((&user, &policy)),
            );
            super::events::record(conn, index, event)?;
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
            let action = if document.is_some() { "PUT" } else { "DELETE" };
            let old = std::mem::replace(&mut record.policy, document);
            index.auth.epoch += 1;
            let event = super::events::policy_change(
                &index.events,
                "REPOSITORY",
                action,
                Some(&repo),
                None,
            );
            super::events::record(conn, index, event)?;
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
            let action = if document.is_some() { "PUT" } else { "DELETE" };
            let event = super::events::policy_change(&index.events, "REGISTRY", action, None, None);
            super::events::record(conn, index, event)?;
            Ok(std::mem::replace(&mut index.auth.registry_policy, document))
        })
        .await
    }
}

/// The secret that signs login tokens, made at first start.
pub(super) fn token_secret(conn: &Db) -> Result<[u8; 32], MetaError> {
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

pub(super) fn load(conn: &Db, index: &mut Index) -> Result<(), MetaError> {
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
    let sealer = token_secret(conn)?;
    let keep = |index: &mut Index, id: &str, sealed: Option<Vec<u8>>| {
        let Some(sealed) = sealed else { return };
        match open_secret(&sealer, id, &sealed) {
            Some(secret) => {
                index
                    .auth
                    .secrets
                    .insert(id.to_string(), KeptSecret(secret));
            }
            None => tracing::warn!(
                key = %id,
                "the kept secret of an access key does not open: it cannot sign AWS API \
                 requests until rotated"
            ),
        }
    };
    let mut stmt =
        conn.prepare("SELECT id, \"user\", secret_hash, secret_sealed FROM access_keys")?;
    let keys = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, Option<Vec<u8>>>(3)?,
        ))
    })?;
    for row in keys {
        let (id, user, hash, sealed) = row?;
        let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) else {
            tracing::warn!(key = %id, "ignoring an access key with a malformed hash");
            continue;
        };
        if let Some(record) = index.auth.users.get_mut(&user) {
            record.keys.insert(id.clone(), hash);
            index.auth.key_owners.insert(id.clone(), user);
            keep(index, &id, sealed);
        }
    }
    let mut stmt =
        conn.prepare("SELECT id, secret_hash, secret_sealed, created_at FROM owner_keys")?;
    let keys = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, Vec<u8>>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    for row in keys {
        let (id, hash, sealed, created_at) = row?;
        let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) else {
            tracing::warn!(key = %id, "ignoring an owner access key with a malformed hash");
            continue;
        };
        index.auth.owner_keys.insert(id.clone(), (hash, created_at));
        keep(index, &id, Some(sealed));
    }
    let mut stmt = conn.prepare("SELECT \"user\", name, document FROM user_policies")?;
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
    index.auth.registry_policy = conn
        .query_row(
            "SELECT value FROM settings WHERE key = 'registry_policy'",
            [],
            |r| r.get(0),
        )
        .ok();
    Ok(())
}

/// The repository policies: of every repository, or `only` one's.
pub(super) fn load_repo_policies(
    conn: &Db,
    index: &mut Index,
    only: Option<&str>,
) -> Result<(), MetaError> {
    let mut stmt = conn.prepare(
        "SELECT repo, document FROM repository_policies
         WHERE CAST(?1 AS TEXT) IS NULL OR repo = ?1",
    )?;
    let repo_policies = stmt.query_map([only], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
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
    Ok(())
}

#[cfg(test)]
mod sealing_tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_under_its_key_id_and_token_secret() {
        let token = [7u8; 32];
        let sealed = seal_secret(&token, "AKIAONE", "the secret").unwrap();
        assert!(!sealed.windows(10).any(|w| w == b"the secret"));
        assert_eq!(
            open_secret(&token, "AKIAONE", &sealed).as_deref(),
            Some("the secret")
        );
        assert_eq!(open_secret(&token, "AKIATWO", &sealed), None);
        assert_eq!(open_secret(&[8u8; 32], "AKIAONE", &sealed), None);
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(open_secret(&token, "AKIAONE", &flipped), None);
        assert_eq!(open_secret(&token, "AKIAONE", &sealed[..5]), None);
        // Two seals of one secret differ (a fresh nonce each).
        assert_ne!(
            seal_secret(&token, "AKIAONE", "the secret").unwrap(),
            sealed
        );
    }

    #[test]
    fn keys_without_a_kept_secret_are_told_apart_from_unknown_ones() {
        let mut index = AuthIndex::default();
        let mut user = UserRecord::default();
        user.keys.insert("AKIAOLD".into(), [0; 32]);
        user.keys.insert("AKIANEW".into(), [1; 32]);
        index.users.insert("ci".into(), user);
        index.key_owners.insert("AKIAOLD".into(), "ci".into());
        index.key_owners.insert("AKIANEW".into(), "ci".into());
        index
            .secrets
            .insert("AKIANEW".into(), KeptSecret("s".into()));
        index.owner_keys.insert("AKIAOWNER".into(), ([2; 32], 0));
        index
            .secrets
            .insert("AKIAOWNER".into(), KeptSecret("o".into()));
        assert_eq!(index.signing_key("AKIANEW"), Ok((Some("ci"), "s")));
        assert_eq!(index.signing_key("AKIAOWNER"), Ok((None, "o")));
        assert_eq!(index.signing_key("AKIAOLD"), Err(true));
        assert_eq!(index.signing_key("AKIANONE"), Err(false));
    }
}
