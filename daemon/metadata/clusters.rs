//! ECS clusters and the resource tags of ECS resources (task definitions, tasks, clusters):
//! the writes (through [`Metadata::write`]) and their part of [`load`](super::load).
//!
//! The cluster `default` has no row: it always exists. A resource's tags live in `ecs_tags`
//! by ARN once they were given or changed there; a resource without a row there has the
//! tags it was registered or run with (kept in its own JSON).

use super::db::Db;
use super::{now_millis, Index, MetaError, Metadata};
use ecrl::taskdef::Tag;
use rusqlite::params;

/// A cluster as the index holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRecord {
    pub arn: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// Why a cluster write was refused (the caller words it for its door).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterRefusal {
    NotFound,
    /// Tasks of the cluster that are not STOPPED.
    HasTasks(usize),
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, MetaError> {
    serde_json::to_string(value).map_err(|e| MetaError::Db(format!("encoding JSON: {e}")))
}

impl Metadata {
    /// Creates the cluster `name` (its ARN `arn`) unless it exists; answers its record and
    /// whether it was created. `tags`, when given, become its tags.
    pub async fn create_cluster(
        &self,
        name: String,
        arn: String,
        tags: Vec<Tag>,
    ) -> Result<(ClusterRecord, bool), MetaError> {
        self.write(move |conn, index| {
            if let Some(existing) = index.clusters.get(&name) {
                return Ok((existing.clone(), false));
            }
            let record = ClusterRecord {
                arn,
                created_at: now_millis(),
            };
            conn.execute(
                "INSERT INTO clusters (name, arn, created_at) VALUES (?1, ?2, ?3)",
                params![name, record.arn, record.created_at],
            )?;
            if !tags.is_empty() {
                put_tags(conn, index, &record.arn, tags)?;
            }
            index.clusters.insert(name, record.clone());
            Ok((record, true))
        })
        .await
    }

    /// Deletes a cluster that has no task left that is not STOPPED; its tags go with it.
    pub async fn delete_cluster(
        &self,
        name: String,
    ) -> Result<Result<ClusterRecord, ClusterRefusal>, MetaError> {
        self.write(move |conn, index| {
            let Some(record) = index.clusters.get(&name).cloned() else {
                return Ok(Err(ClusterRefusal::NotFound));
            };
            let live = index
                .tasks
                .values()
                .filter(|t| t.cluster_arn == record.arn && !t.is_stopped())
                .count();
            if live > 0 {
                return Ok(Err(ClusterRefusal::HasTasks(live)));
            }
            conn.execute("DELETE FROM clusters WHERE name = ?1", [&name])?;
            forget_tags(conn, index, &record.arn)?;
            index.clusters.remove(&name);
            Ok(Ok(record))
        })
        .await
    }

    /// Sets the tags of the ECS resource `arn` (the caller has checked it exists).
    pub async fn put_ecs_tags(&self, arn: String, tags: Vec<Tag>) -> Result<(), MetaError> {
        self.write(move |conn, index| put_tags(conn, index, &arn, tags))
            .await
    }
}

fn put_tags(conn: &Db, index: &mut Index, arn: &str, tags: Vec<Tag>) -> Result<(), MetaError> {
    conn.execute(
        "INSERT INTO ecs_tags (arn, tags) VALUES (?1, ?2)
         ON CONFLICT (arn) DO UPDATE SET tags = excluded.tags",
        params![arn, json(&tags)?],
    )?;
    index.ecs_tags.insert(arn.to_string(), tags);
    Ok(())
}

/// Forgets the tags of a resource that is gone.
pub(super) fn forget_tags(conn: &Db, index: &mut Index, arn: &str) -> Result<(), MetaError> {
    if index.ecs_tags.remove(arn).is_some() {
        conn.execute("DELETE FROM ecs_tags WHERE arn = ?1", [arn])?;
    }
    Ok(())
}

pub(super) fn load(conn: &Db, index: &mut Index) -> Result<(), MetaError> {
    let mut stmt = conn.prepare("SELECT name, arn, created_at FROM clusters")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            ClusterRecord {
                arn: r.get(1)?,
                created_at: r.get(2)?,
            },
        ))
    })?;
    for row in rows {
        let (name, record) = row?;
        index.clusters.insert(name, record);
    }
    let mut stmt = conn.prepare("SELECT arn, tags FROM ecs_tags")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (arn, tags) = row?;
        match serde_json::from_str::<Vec<Tag>>(&tags) {
            Ok(tags) => {
                index.ecs_tags.insert(arn, tags);
            }
            Err(e) => tracing::warn!(resource = %arn, "stored tags do not read: {e}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::open;
    use super::*;

    fn tag(k: &str, v: &str) -> Tag {
        Tag {
            key: Some(k.into()),
            value: Some(v.into()),
        }
    }

    #[tokio::test]
    async fn clusters_and_tags_survive_reopening_and_leave_together() {
        let dir = tempfile::tempdir().unwrap();
        let arn = "arn:aws:ecs:local:123456789012:cluster/batch".to_string();
        {
            let meta = open(dir.path());
            let (made, created) = meta
                .create_cluster("batch".into(), arn.clone(), vec![tag("team", "a")])
                .await
                .unwrap();
            assert!(created);
            let (again, created) = meta
                .create_cluster("batch".into(), arn.clone(), vec![])
                .await
                .unwrap();
            assert!(!created, "creating it again answers the one there");
            assert_eq!(again, made);
            meta.put_ecs_tags("arn:x".into(), vec![tag("k", "v")])
                .await
                .unwrap();
        }
        let meta = open(dir.path());
        assert_eq!(meta.read().clusters["batch"].arn, arn);
        assert_eq!(meta.read().ecs_tags[&arn], vec![tag("team", "a")]);
        assert_eq!(meta.read().ecs_tags["arn:x"], vec![tag("k", "v")]);
        assert_eq!(
            meta.delete_cluster("nope".into()).await.unwrap(),
            Err(ClusterRefusal::NotFound)
        );
        assert!(meta.delete_cluster("batch".into()).await.unwrap().is_ok());
        assert!(
            !meta.read().ecs_tags.contains_key(&arn),
            "its tags went too"
        );
        drop(meta);
        let meta = open(dir.path());
        assert!(meta.read().clusters.is_empty());
    }
}
