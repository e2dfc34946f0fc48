//! The secret store's rows: each secret sealed (by [`crate::secrets`], never here), with its
//! version and the one before (Secrets Manager's AWSCURRENT and AWSPREVIOUS).

use super::db::Db;
use super::{now_millis, Index, MetaError, Metadata};
use rusqlite::params;

/// One version of a secret, sealed.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedVersion {
    pub sealed: Vec<u8>,
    /// A UUID, as Secrets Manager's version ids.
    pub version_id: String,
}

impl std::fmt::Debug for SealedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedVersion")
            .field("version_id", &self.version_id)
            .finish_non_exhaustive()
    }
}

/// A secret as the index holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub current: SealedVersion,
    pub previous: Option<SealedVersion>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRecord")
            .field("version_id", &self.current.version_id)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}

impl Metadata {
    /// Stores a new current version of `name` (the old current one becomes the previous);
    /// answers the record as stored and whether the secret is new. `max` bounds how many
    /// secrets there may be: a new one past it is refused (`Ok(Err(()))`).
    pub async fn put_secret(
        &self,
        name: String,
        version: SealedVersion,
        max: usize,
    ) -> Result<Result<(SecretRecord, bool), ()>, MetaError> {
        self.write(move |conn, index| {
            let now = now_millis();
            let (record, created) = match index.secrets.get(&name) {
                Some(old) => (
                    SecretRecord {
                        current: version,
                        previous: Some(old.current.clone()),
                        created_at: old.created_at,
                        updated_at: now,
                    },
                    false,
                ),
                None if index.secrets.len() >= max => return Ok(Err(())),
                None => (
                    SecretRecord {
                        current: version,
                        previous: None,
                        created_at: now,
                        updated_at: now,
                    },
                    true,
                ),
            };
            let previous = record.previous.as_ref();
            conn.execute(
                "INSERT INTO secrets (name, sealed, version_id, previous, previous_version_id,
                    created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed,
                    version_id = excluded.version_id, previous = excluded.previous,
                    previous_version_id = excluded.previous_version_id,
                    updated_at = excluded.updated_at",
                params![
                    name,
                    record.current.sealed,
                    record.current.version_id,
                    previous.map(|p| p.sealed.clone()),
                    previous.map(|p| p.version_id.clone()),
                    record.created_at,
                    record.updated_at
                ],
            )?;
            index.secrets.insert(name, record.clone());
            Ok(Ok((record, created)))
        })
        .await
    }

    /// Deletes a secret; answers whether there was one.
    pub async fn delete_secret(&self, name: String) -> Result<bool, MetaError> {
        self.write(move |conn, index| {
            if index.secrets.remove(&name).is_none() {
                return Ok(false);
            }
            conn.execute("DELETE FROM secrets WHERE name = ?1", [&name])?;
            Ok(true)
        })
        .await
    }
}

pub(super) fn load(conn: &Db, index: &mut Index) -> Result<(), MetaError> {
    let mut stmt = conn.prepare(
        "SELECT name, sealed, version_id, previous, previous_version_id, created_at, updated_at
         FROM secrets",
    )?;
    let rows = stmt.query_map([], |r| {
        let previous = match (
            r.get::<_, Option<Vec<u8>>>(3)?,
            r.get::<_, Option<String>>(4)?,
        ) {
            (Some(sealed), Some(version_id)) => Some(SealedVersion { sealed, version_id }),
            _ => None,
        };
        Ok((
            r.get::<_, String>(0)?,
            SecretRecord {
                current: SealedVersion {
                    sealed: r.get(1)?,
                    version_id: r.get(2)?,
                },
                previous,
                created_at: r.get(5)?,
                updated_at: r.get(6)?,
            },
        ))
    })?;
    for row in rows {
        let (name, record) = row?;
        index.secrets.insert(name, record);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::open;
    use super::*;

    fn version(n: u8) -> SealedVersion {
        SealedVersion {
            sealed: vec![n; 4],
            version_id: format!("v{n}"),
        }
    }

    #[tokio::test]
    async fn a_put_keeps_the_previous_version_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let meta = open(dir.path());
            let (first, created) = meta
                .put_secret("db".into(), version(1), 10)
                .await
                .unwrap()
                .unwrap();
            assert!(created);
            assert_eq!(first.previous, None);
            let (second, created) = meta
                .put_secret("db".into(), version(2), 10)
                .await
                .unwrap()
                .unwrap();
            assert!(!created);
            assert_eq!(second.current, version(2));
            assert_eq!(second.previous, Some(version(1)));
            assert_eq!(second.created_at, first.created_at);
            meta.put_secret("other".into(), version(3), 10)
                .await
                .unwrap()
                .unwrap();
            assert!(meta.delete_secret("other".into()).await.unwrap());
            assert!(!meta.delete_secret("other".into()).await.unwrap());
        }
        let meta = open(dir.path());
        let index = meta.read();
        assert_eq!(index.secrets.len(), 1);
        assert_eq!(index.secrets["db"].current, version(2));
        assert_eq!(index.secrets["db"].previous, Some(version(1)));
    }

    #[tokio::test]
    async fn past_the_limit_a_new_secret_is_refused_but_an_update_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path());
        meta.put_secret("a".into(), version(1), 1)
            .await
            .unwrap()
            .unwrap();
        assert!(meta
            .put_secret("b".into(), version(1), 1)
            .await
            .unwrap()
            .is_err());
        assert!(meta
            .put_secret("a".into(), version(2), 1)
            .await
            .unwrap()
            .is_ok());
    }
}
