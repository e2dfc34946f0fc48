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

    /// Stores a service (its ARN is its key), replacing the record of the same ARN.
    pub async fn put_service(
        &self,
        service: ecrl::api::services::Service,
    ) -> Result<(), MetaError> {
        self.write(move |conn, index| {
            let cluster = service
                .cluster_arn
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            conn.execute(
                "INSERT INTO services (arn, cluster, service) VALUES (?1, ?2, ?3)
                 ON CONFLICT (arn) DO UPDATE SET cluster = excluded.cluster,
                    service = excluded.service",
                params![service.service_arn, cluster, json(&service)?],
            )?;
            index.services.insert(service.service_arn.clone(), service);
            Ok(())
        })
        .await
    }

    /// Forgets a service.
    pub async fn delete_service(&self, arn: String) -> Result<(), MetaError> {
        self.write(move |conn, index| {
            if index.services.remove(&arn).is_some() {
                conn.execute("DELETE FROM services WHERE arn = ?1", [&arn])?;
                forget_tags(conn, index, &arn)?;
            }
            Ok(())
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
    let mut stmt = conn.prepare("SELECT arn, service FROM services")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (arn, service) = row?;
        match serde_json::from_str(&service) {
            Ok(service) => {
                index.services.insert(arn, service);
            }
            Err(e) => tracing::warn!(service = %arn, "a stored service does not read: {e}"),
        }
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
    async fn services_survive_reopening_and_go_when_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let arn = "arn:aws:ecs:local:123456789012:service/default/web".to_string();
        let service = ecrl::api::services::Service {
            service_arn: arn.clone(),
            service_name: "web".into(),
            cluster_arn: "arn:aws:ecs:local:123456789012:cluster/default".into(),
            status: "ACTIVE".into(),
            task_definition: "arn:aws:ecs:local:123456789012:task-definition/web:1".into(),
            desired_count: 3,
            running_count: 0,
            pending_count: 0,
            launch_type: "EC2".into(),
            scheduling_strategy: "REPLICA".into(),
            deployment_configuration: Default::default(),
            health_check_grace_period_seconds: Some(5),
            deployments: Vec::new(),
            events: Vec::new(),
            created_at: "2026-12-07T00:00:00.000Z".into(),
            created_by: None,
        };
        open(dir.path()).put_service(service.clone()).await.unwrap();
        let meta = open(dir.path());
        assert_eq!(meta.read().services[&arn], service);
        meta.delete_service(arn.clone()).await.unwrap();
        drop(meta);
        assert!(open(dir.path()).read().services.is_empty());
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
