//! Task-definition families and their revisions, and tasks: the writes (through
//! [`Metadata::write`], so they share the writer's transactions and group commit) and the
//! part of [`load`](super::load) that rebuilds them into the index.

use super::db::Db;
use super::{now_millis, Index, MetaError, Metadata};
use ecrl::api::tasks::{Task, TaskDefinition, STATUS_ACTIVE, STATUS_INACTIVE};
use ecrl::taskdef::TaskDefinitionInput;
use rusqlite::params;
use std::collections::BTreeMap;

/// A task-definition family as the index holds it.
#[derive(Debug, Clone, Default)]
pub struct TaskFamily {
    /// The highest revision ever issued; the next one is this plus one, whatever has been
    /// deregistered or deleted since.
    pub last_revision: u32,
    /// The revisions not deleted, by number.
    pub revisions: BTreeMap<u32, TaskDefinition>,
}

impl TaskFamily {
    /// The newest ACTIVE revision: what the bare family name means.
    pub fn latest_active(&self) -> Option<&TaskDefinition> {
        self.revisions
            .values()
            .rev()
            .find(|td| td.status == STATUS_ACTIVE)
    }

    pub fn has_active(&self) -> bool {
        self.latest_active().is_some()
    }
}

/// Now, as the API writes times (see [`ecrl::timestamp`]).
fn now_rfc3339() -> String {
    ecrl::timestamp::from_millis(now_millis())
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, MetaError> {
    serde_json::to_string(value).map_err(|e| MetaError::Db(format!("encoding JSON: {e}")))
}

/// ECS-shaped "Task Definition State Change" (ecrl's: ECS has none): the revision and its
/// status (`ACTIVE`, `INACTIVE`, `DELETE_IN_PROGRESS`).
fn definition_event(td: &TaskDefinition, status: &str) -> super::events::NewEvent {
    super::events::NewEvent {
        kind: ecrl::api::events::EventKind::TaskDefinition,
        subject: format!("task:{}", td.definition.family),
        resources: vec![td.task_definition_arn.clone()],
        detail: serde_json::json!({
            "taskDefinitionArn": td.task_definition_arn,
            "family": td.definition.family,
            "revision": td.revision,
            "status": status,
            "registeredAt": td.registered_at,
            "deregisteredAt": td.deregistered_at,
        }),
    }
}

fn family_revision(family: &str, revision: u32) -> String {
    format!("{family}:{revision}")
}

impl Metadata {
    /// Stores `input` as the family's next revision, ACTIVE. `arn_prefix` is
    /// `arn:aws:ecs:REGION:ACCOUNT:task-definition/`; the caller has validated `input`.
    pub async fn register_task_definition(
        &self,
        input: TaskDefinitionInput,
        arn_prefix: String,
    ) -> Result<TaskDefinition, MetaError> {
        self.write(move |conn, index| {
            let family = input.family.clone();
            let last = index
                .task_families
                .get(&family)
                .map_or(0, |f| f.last_revision);
            let revision = last.checked_add(1).ok_or_else(|| {
                MetaError::Db(format!("family {family} has run out of revisions"))
            })?;
            let td = TaskDefinition {
                task_definition_arn: format!("{arn_prefix}{}", family_revision(&family, revision)),
                revision,
                status: STATUS_ACTIVE.to_string(),
                registered_at: now_rfc3339(),
                deregistered_at: None,
                definition: input,
            };
            conn.execute(
                "INSERT INTO task_families (family, last_revision) VALUES (?1, ?2)
                 ON CONFLICT (family) DO UPDATE SET last_revision = excluded.last_revision",
                params![family, revision],
            )?;
            conn.execute(
                "INSERT INTO task_definitions
                    (family, revision, arn, status, registered_at, deregistered_at, definition)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6)",
                params![
                    family,
                    revision,
                    td.task_definition_arn,
                    td.status,
                    td.registered_at,
                    json(&td.definition)?,
                ],
            )?;
            let entry = index.task_families.entry(family).or_default();
            entry.last_revision = revision;
            entry.revisions.insert(revision, td.clone());
            super::events::record(conn, index, definition_event(&td, &td.status))?;
            Ok(td)
        })
        .await
    }

    /// Marks a revision INACTIVE (it can no longer be run). Deregistering an INACTIVE
    /// revision again answers it unchanged.
    pub async fn deregister_task_definition(
        &self,
        family: String,
        revision: u32,
    ) -> Result<TaskDefinition, MetaError> {
        self.write(move |conn, index| {
            let td = index
                .task_families
                .get_mut(&family)
                .and_then(|f| f.revisions.get_mut(&revision))
                .ok_or_else(|| {
                    MetaError::TaskDefinitionNotFound(family_revision(&family, revision))
                })?;
            if td.status == STATUS_INACTIVE {
                return Ok(td.clone());
            }
            let at = now_rfc3339();
            conn.execute(
                "UPDATE task_definitions SET status = ?3, deregistered_at = ?4
                 WHERE family = ?1 AND revision = ?2",
                params![family, revision, STATUS_INACTIVE, at],
            )?;
            td.status = STATUS_INACTIVE.to_string();
            td.deregistered_at = Some(at);
            let td = td.clone();
            super::events::record(conn, index, definition_event(&td, &td.status))?;
            Ok(td)
        })
        .await
    }

    /// Deletes an INACTIVE revision; an ACTIVE one is refused. The family keeps its last
    /// revision number, so the next registration still gets a new one.
    pub async fn delete_task_definition(
        &self,
        family: String,
        revision: u32,
    ) -> Result<TaskDefinition, MetaError> {
        self.write(move |conn, index| {
            let name = family_revision(&family, revision);
            let entry = index
                .task_families
                .get_mut(&family)
                .filter(|f| f.revisions.contains_key(&revision))
                .ok_or_else(|| MetaError::TaskDefinitionNotFound(name.clone()))?;
            if entry.revisions.get(&revision).map(|td| td.status.as_str()) != Some(STATUS_INACTIVE)
            {
                return Err(MetaError::TaskDefinitionActive(name));
            }
            conn.execute(
                "DELETE FROM task_definitions WHERE family = ?1 AND revision = ?2",
                params![family, revision],
            )?;
            let td = entry
                .revisions
                .remove(&revision)
                .ok_or(MetaError::TaskDefinitionNotFound(name))?;
            super::clusters::forget_tags(conn, index, &td.task_definition_arn)?;
            super::events::record(conn, index, definition_event(&td, "DELETE_IN_PROGRESS"))?;
            Ok(td)
        })
        .await
    }

    /// Stores a task, replacing the one with the same id.
    pub async fn save_task(&self, task: Task) -> Result<(), MetaError> {
        self.write(move |conn, index| {
            conn.execute(
                "INSERT INTO tasks (id, family, created_at, last_status, task, cluster)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET family = excluded.family,
                    created_at = excluded.created_at, last_status = excluded.last_status,
                    task = excluded.task, cluster = excluded.cluster",
                params![
                    task.id(),
                    task.family(),
                    task.created_at,
                    task.last_status,
                    json(&task)?,
                    task.cluster_name(),
                ],
            )?;
            let changed = index
                .tasks
                .get(task.id())
                .is_none_or(|old| old.last_status != task.last_status);
            if changed {
                let mut detail = serde_json::to_value(&task).unwrap_or_default();
                detail["updatedAt"] = now_rfc3339().into();
                let event = super::events::NewEvent {
                    kind: ecrl::api::events::EventKind::Task,
                    subject: format!("task:{}", task.family()),
                    resources: vec![task.task_arn.clone()],
                    detail,
                };
                super::events::record(conn, index, event)?;
            }
            index.tasks.insert(task.id().to_string(), task);
            Ok(())
        })
        .await
    }

    /// Forgets a task.
    pub async fn delete_task(&self, id: String) -> Result<(), MetaError> {
        self.write(move |conn, index| {
            if !index.tasks.contains_key(&id) {
                return Err(MetaError::TaskNotFound(id));
            }
            conn.execute("DELETE FROM tasks WHERE id = ?1", [&id])?;
            if let Some(task) = index.tasks.remove(&id) {
                super::clusters::forget_tags(conn, index, &task.task_arn)?;
            }
            Ok(())
        })
        .await
    }
}

/// Loads families, their revisions and the tasks into `index`. A row whose JSON no longer
/// reads is skipped with a warning rather than keeping the daemon from starting.
pub(super) fn load(conn: &Db, index: &mut Index) -> Result<(), MetaError> {
    let mut stmt = conn.prepare("SELECT family, last_revision FROM task_families")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))?;
    for row in rows {
        let (family, last_revision) = row?;
        index.task_families.insert(
            family,
            TaskFamily {
                last_revision,
                revisions: BTreeMap::new(),
            },
        );
    }
    let mut stmt = conn.prepare(
        "SELECT family, revision, arn, status, registered_at, deregistered_at, definition
         FROM task_definitions",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, u32>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, String>(6)?,
        ))
    })?;
    for row in rows {
        let (family, revision, arn, status, registered_at, deregistered_at, definition) = row?;
        let definition: TaskDefinitionInput = match serde_json::from_str(&definition) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(task_definition = %family_revision(&family, revision),
                    "stored task definition does not read: {e}");
                continue;
            }
        };
        let entry = index.task_families.entry(family).or_default();
        entry.last_revision = entry.last_revision.max(revision);
        entry.revisions.insert(
            revision,
            TaskDefinition {
                task_definition_arn: arn,
                revision,
                status,
                registered_at,
                deregistered_at,
                definition,
            },
        );
    }
    let mut stmt = conn.prepare("SELECT id, task FROM tasks")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (id, task) = row?;
        match serde_json::from_str::<Task>(&task) {
            Ok(task) => {
                index.tasks.insert(id, task);
            }
            Err(e) => tracing::warn!(task = %id, "stored task does not read: {e}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::open;
    use super::*;
    use ecrl::api::tasks::{task_status, Container, TaskOverride};
    use std::path::Path;

    const PREFIX: &str = "arn:aws:ecs:local:123456789012:task-definition/";

    fn definition(family: &str) -> TaskDefinitionInput {
        ecrl::taskdef::parse(&format!(
            r#"{{"family":"{family}","containerDefinitions":[{{"name":"app","image":"busybox","memory":64}}]}}"#
        ))
        .unwrap()
    }

    async fn register(meta: &Metadata, family: &str) -> TaskDefinition {
        meta.register_task_definition(definition(family), PREFIX.into())
            .await
            .unwrap()
    }

    fn revisions(meta: &Metadata, family: &str) -> Vec<(u32, String)> {
        meta.read().task_families[family]
            .revisions
            .values()
            .map(|td| (td.revision, td.status.clone()))
            .collect()
    }

    fn db_version(dir: &Path) -> usize {
        let conn = rusqlite::Connection::open(dir.join("metadata.db")).unwrap();
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn revisions_grow_after_deregister_and_delete_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let meta = open(dir.path());
            let first = register(&meta, "web").await;
            assert_eq!(first.revision, 1);
            assert_eq!(first.status, STATUS_ACTIVE);
            assert_eq!(first.task_definition_arn, format!("{PREFIX}web:1"));
            assert!(first.registered_at.contains('T'), "{}", first.registered_at);
            assert_eq!(register(&meta, "web").await.revision, 2);
            assert_eq!(
                register(&meta, "api").await.revision,
                1,
                "families count apart"
            );

            let err = meta
                .delete_task_definition("web".into(), 2)
                .await
                .unwrap_err();
            assert!(matches!(err, MetaError::TaskDefinitionActive(ref n) if n == "web:2"));
            assert!(err.to_string().contains("deregister web:2"), "{err}");

            let gone = meta
                .deregister_task_definition("web".into(), 2)
                .await
                .unwrap();
            assert_eq!(gone.status, STATUS_INACTIVE);
            let at = gone.deregistered_at.clone().unwrap();
            let again = meta
                .deregister_task_definition("web".into(), 2)
                .await
                .unwrap();
            assert_eq!(
                again.deregistered_at.as_deref(),
                Some(at.as_str()),
                "unchanged"
            );

            let deleted = meta.delete_task_definition("web".into(), 2).await.unwrap();
            assert_eq!(deleted.revision, 2);
            assert!(matches!(
                meta.delete_task_definition("web".into(), 2).await,
                Err(MetaError::TaskDefinitionNotFound(ref n)) if n == "web:2"
            ));
            assert!(matches!(
                meta.deregister_task_definition("nope".into(), 1).await,
                Err(MetaError::TaskDefinitionNotFound(_))
            ));
            assert_eq!(
                register(&meta, "web").await.revision,
                3,
                "2 is never reused"
            );
        }
        let meta = open(dir.path());
        assert_eq!(db_version(dir.path()), super::super::schema::latest());
        assert_eq!(
            revisions(&meta, "web"),
            vec![(1, "ACTIVE".into()), (3, "ACTIVE".into())]
        );
        assert_eq!(meta.read().task_families["web"].last_revision, 3);
        assert_eq!(
            meta.read().task_families["web"]
                .latest_active()
                .map(|td| td.revision),
            Some(3)
        );
        // Delete the newest revision: the family still remembers it issued 4.
        assert_eq!(register(&meta, "web").await.revision, 4);
        meta.deregister_task_definition("web".into(), 4)
            .await
            .unwrap();
        meta.delete_task_definition("web".into(), 4).await.unwrap();
        drop(meta);
        let meta = open(dir.path());
        assert_eq!(register(&meta, "web").await.revision, 5);
        let stored = meta.read().task_families["web"].revisions[&1].clone();
        assert_eq!(stored.definition, definition("web"));
    }

    fn task(id: &str, status: &str) -> Task {
        Task {
            task_arn: format!("arn:aws:ecs:local:123456789012:task/default/{id}"),
            cluster_arn: "arn:aws:ecs:local:123456789012:cluster/default".into(),
            task_definition_arn: format!("{PREFIX}web:1"),
            group: "family:web".into(),
            last_status: status.into(),
            desired_status: "RUNNING".into(),
            health_status: "UNKNOWN".into(),
            cpu: None,
            memory: None,
            network_mode: "bridge".into(),
            containers: vec![Container {
                container_arn: String::new(),
                task_arn: String::new(),
                name: "app".into(),
                image: "busybox".into(),
                image_digest: None,
                runtime_id: None,
                last_status: status.into(),
                exit_code: None,
                reason: None,
                network_bindings: vec![],
                health_status: "UNKNOWN".into(),
                essential: true,
                cpu: None,
                memory: None,
                memory_reservation: None,
            }],
            overrides: TaskOverride::default(),
            started_by: None,
            tags: vec![],
            created_at: "2026-01-01T00:00:00Z".into(),
            pull_started_at: None,
            pull_stopped_at: None,
            started_at: None,
            stopping_at: None,
            stopped_at: None,
            stop_code: None,
            stopped_reason: None,
            essential_container_exited: None,
            version: 1,
        }
    }

    #[tokio::test]
    async fn tasks_are_upserted_and_deleted_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let meta = open(dir.path());
            meta.save_task(task("aaa", task_status::PENDING))
                .await
                .unwrap();
            meta.save_task(task("bbb", task_status::PENDING))
                .await
                .unwrap();
            let mut running = task("aaa", task_status::RUNNING);
            running.version = 2;
            meta.save_task(running).await.unwrap();
            meta.delete_task("bbb".into()).await.unwrap();
            assert!(matches!(
                meta.delete_task("bbb".into()).await,
                Err(MetaError::TaskNotFound(ref id)) if id == "bbb"
            ));
            meta.save_task(task("ccc", task_status::STOPPED))
                .await
                .unwrap();
        }
        let meta = open(dir.path());
        let index = meta.read();
        assert_eq!(
            index.tasks.keys().collect::<Vec<_>>(),
            vec!["aaa", "ccc"],
            "bbb stays deleted"
        );
        assert_eq!(index.tasks["aaa"].last_status, task_status::RUNNING);
        assert_eq!(
            index.tasks["aaa"].version, 2,
            "the upsert replaced the first"
        );
        assert_eq!(index.tasks["ccc"], task("ccc", task_status::STOPPED));
        let conn = rusqlite::Connection::open(dir.path().join("metadata.db")).unwrap();
        let (family, status): (String, String) = conn
            .query_row(
                "SELECT family, last_status FROM tasks WHERE id = 'aaa'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((family.as_str(), status.as_str()), ("web", "RUNNING"));
    }
}
