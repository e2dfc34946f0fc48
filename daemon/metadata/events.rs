//! The event log and the webhooks' outbox.
//!
//! A change records its event in the transaction that makes it ([`record`]), and, for each
//! webhook that wants that kind, a delivery to make: an event is there exactly when its
//! change is, and a delivery is never lost to a crash. Reading the log and working the outbox
//! go through a connection of their own ([`EventStore`]), never the writer's: following the
//! log or delivering costs writes nothing (on PostgreSQL, no registry-wide lock).

use super::db::Db;
use super::{now_millis, Index, MetaError};
use ecrl::api::events::EventKind;
use ecrl::names::{Digest, RepoName, Tag};
use rusqlite::params;
use std::sync::Mutex;

/// What records need to know: the webhooks and the kinds each wants, and the region and
/// account of the ARNs events name.
#[derive(Debug, Default, Clone)]
pub struct EventSetup {
    pub hooks: Vec<(String, Vec<EventKind>)>,
    pub region: String,
    pub account: String,
}

impl EventSetup {
    /// A repository's ARN (none before the daemon set the region).
    pub fn repository_arn(&self, repo: &str) -> Vec<String> {
        if self.region.is_empty() {
            return Vec::new();
        }
        vec![format!(
            "arn:aws:ecr:{}:{}:repository/{repo}",
            self.region, self.account
        )]
    }
}

/// ECR's "ECR Image Action" event: a push (`PUSH`) or a delete (`DELETE`) of an image, with
/// the tag it was pushed under or deleted by, if any.
pub fn image_action(
    setup: &EventSetup,
    action: &str,
    repo: &RepoName,
    digest: &Digest,
    tag: Option<&Tag>,
    media_type: &str,
    artifact_type: Option<&str>,
) -> NewEvent {
    let mut detail = serde_json::json!({
        "result": "SUCCESS",
        "repository-name": repo.as_str(),
        "image-digest": digest.to_string(),
        "action-type": action,
        "manifest-media-type": media_type,
    });
    if let Some(tag) = tag {
        detail["image-tag"] = tag.as_str().into();
    }
    if let Some(artifact) = artifact_type {
        detail["artifact-media-type"] = artifact.into();
    }
    NewEvent {
        kind: if action == "DELETE" {
            EventKind::ImageDelete
        } else {
            EventKind::ImagePush
        },
        subject: format!("repo:{repo}"),
        resources: setup.repository_arn(repo.as_str()),
        detail,
    }
}

/// ecrl's "Repository State Change": `CREATE` or `DELETE`.
pub fn repository_action(setup: &EventSetup, action: &str, repo: &RepoName) -> NewEvent {
    let arn = setup.repository_arn(repo.as_str());
    NewEvent {
        kind: EventKind::Repository,
        subject: format!("repo:{repo}"),
        detail: serde_json::json!({
            "action-type": action,
            "repository-name": repo.as_str(),
            "repository-arn": arn.first(),
        }),
        resources: arn,
    }
}

/// ecrl's "Policy Change": `policy-type` REPOSITORY, LIFECYCLE, REGISTRY or USER;
/// `action-type` PUT or DELETE.
pub fn policy_change(
    setup: &EventSetup,
    policy_type: &str,
    action: &str,
    repo: Option<&RepoName>,
    user: Option<(&str, &str)>,
) -> NewEvent {
    let mut detail = serde_json::json!({
        "policy-type": policy_type,
        "action-type": action,
    });
    let mut resources = Vec::new();
    let subject = match (repo, user) {
        (Some(repo), _) => {
            detail["repository-name"] = repo.as_str().into();
            resources = setup.repository_arn(repo.as_str());
            format!("repo:{repo}")
        }
        (None, Some((user, policy))) => {
            detail["user-name"] = user.into();
            detail["policy-name"] = policy.into();
            "registry".to_string()
        }
        (None, None) => "registry".to_string(),
    };
    NewEvent {
        kind: EventKind::Policy,
        subject,
        resources,
        detail,
    }
}

/// An event to record.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: EventKind,
    /// What deliveries keep in order: `repo:NAME`, `task:FAMILY`, `registry`.
    pub subject: String,
    pub resources: Vec<String>,
    pub detail: serde_json::Value,
}

impl NewEvent {
    /// An event about a repository (ordered with the repository's other events).
    pub fn repo(kind: EventKind, repo: &str, detail: serde_json::Value) -> NewEvent {
        NewEvent {
            kind,
            subject: format!("repo:{repo}"),
            resources: Vec::new(),
            detail,
        }
    }
}

/// Records `event` (and its webhook deliveries) in the writer's current transaction.
pub(super) fn record(conn: &Db, index: &Index, event: NewEvent) -> Result<(), MetaError> {
    let seq: i64 = conn.query_row(
        "INSERT INTO events (uid, at, kind, subject, resources, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING seq",
        params![
            uuid::Uuid::new_v4().to_string(),
            now_millis(),
            event.kind.name(),
            event.subject,
            serde_json::to_string(&event.resources).unwrap_or_else(|_| "[]".into()),
            event.detail.to_string(),
        ],
        |r| r.get(0),
    )?;
    for (hook, kinds) in &index.events.hooks {
        if kinds.is_empty() || kinds.contains(&event.kind) {
            conn.execute(
                "INSERT INTO webhook_queue (hook, seq, subject, attempts, next_attempt_at, failed)
                 VALUES (?1, ?2, ?3, 0, 0, 0)",
                params![hook, seq, event.subject],
            )?;
        }
    }
    Ok(())
}

/// One stored event, as read back.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: i64,
    pub uid: String,
    pub at: i64,
    pub kind: Option<EventKind>,
    pub resources: Vec<String>,
    pub detail: serde_json::Value,
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only those after this sequence number (oldest first); `None`: the newest `limit`.
    pub after: Option<i64>,
    pub since_ms: i64,
    pub kinds: Vec<EventKind>,
    pub repository: Option<String>,
    pub limit: usize,
}

/// A delivery due (or retrying) for a webhook.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub seq: i64,
    pub attempts: u32,
}

/// A row of the outbox that has failed at least once.
#[derive(Debug, Clone)]
pub struct FailedDelivery {
    pub seq: i64,
    pub uid: Option<String>,
    pub kind: Option<EventKind>,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub failed: bool,
    pub error: String,
}

/// A webhook's counters.
#[derive(Debug, Clone, Default)]
pub struct HookState {
    pub pending: u64,
    pub delivered: u64,
    pub last_delivered_at: Option<i64>,
    pub last_error: Option<(String, i64)>,
}

/// The event log's own connection (opened on first use, opened again after an error).
pub struct EventStore {
    open: Box<dyn Fn() -> Result<Db, MetaError> + Send + Sync>,
    conn: Mutex<Option<Db>>,
}

impl EventStore {
    pub(super) fn new(open: impl Fn() -> Result<Db, MetaError> + Send + Sync + 'static) -> Self {
        EventStore {
            open: Box::new(open),
            conn: Mutex::new(None),
        }
    }

    /// Runs `f` on the connection, on a blocking thread. A failed `f` drops the connection
    /// (the next call opens another).
    pub async fn with<T: Send + 'static>(
        self: &std::sync::Arc<Self>,
        f: impl FnOnce(&Db) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut slot = me.conn.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some((me.open)()?);
            }
            let result = f(slot.as_ref().expect("opened above"));
            if result.is_err() {
                *slot = None;
            }
            result
        })
        .await
        .map_err(|e| MetaError::Db(e.to_string()))?
    }
}

fn kinds_list(kinds: &[EventKind]) -> String {
    kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(",")
}

fn stored(r: &super::db::Row<'_>) -> rusqlite::Result<StoredEvent> {
    let kind: String = r.get(3)?;
    let resources: String = r.get(4)?;
    let detail: String = r.get(5)?;
    Ok(StoredEvent {
        seq: r.get(0)?,
        uid: r.get(1)?,
        at: r.get(2)?,
        kind: EventKind::parse(&kind),
        resources: serde_json::from_str(&resources).unwrap_or_default(),
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
    })
}

/// The events `filter` selects, oldest first.
pub fn list(conn: &Db, filter: &EventFilter) -> Result<Vec<StoredEvent>, MetaError> {
    let kinds = kinds_list(&filter.kinds);
    let subject = filter
        .repository
        .as_ref()
        .map(|r| format!("repo:{r}"))
        .unwrap_or_default();
    let limit = filter.limit as i64;
    let mut out = Vec::new();
    match filter.after {
        Some(after) => {
            let mut stmt = conn.prepare(
                "SELECT seq, uid, at, kind, resources, detail FROM events
                 WHERE seq > ?1 AND at >= ?2
                   AND (CAST(?3 AS TEXT) = '' OR (',' || CAST(?3 AS TEXT) || ',') LIKE ('%,' || kind || ',%'))
                   AND (CAST(?4 AS TEXT) = '' OR subject = CAST(?4 AS TEXT))
                 ORDER BY seq LIMIT ?5",
            )?;
            for row in stmt.query_map(
                params![after, filter.since_ms, kinds, subject, limit],
                stored,
            )? {
                out.push(row?);
            }
        }
        None => {
            let mut stmt = conn.prepare(
                "SELECT seq, uid, at, kind, resources, detail FROM events
                 WHERE at >= ?1
                   AND (CAST(?2 AS TEXT) = '' OR (',' || CAST(?2 AS TEXT) || ',') LIKE ('%,' || kind || ',%'))
                   AND (CAST(?3 AS TEXT) = '' OR subject = CAST(?3 AS TEXT))
                 ORDER BY seq DESC LIMIT ?4",
            )?;
            for row in stmt.query_map(params![filter.since_ms, kinds, subject, limit], stored)? {
                out.push(row?);
            }
            out.reverse();
        }
    }
    Ok(out)
}

/// The newest sequence number recorded (0 when none ever was).
pub fn head(conn: &Db) -> Result<i64, MetaError> {
    Ok(conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?)
}

/// One event by sequence number.
pub fn get(conn: &Db, seq: i64) -> Result<Option<StoredEvent>, MetaError> {
    match conn.query_row(
        "SELECT seq, uid, at, kind, resources, detail FROM events WHERE seq = ?1",
        [seq],
        stored,
    ) {
        Ok(event) => Ok(Some(event)),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes events older than `before` (unix ms), and the deliveries of events gone (given up
/// on: their event is past keeping). Returns how many deliveries went undelivered that way.
pub fn prune(conn: &Db, before: i64) -> Result<(u64, u64), MetaError> {
    // In batches: each statement holds the database's write lock only briefly (SQLite's
    // writer waits for it).
    let mut events = 0;
    loop {
        let n = conn.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE at < ?1 LIMIT 5000)",
            [before],
        )? as u64;
        events += n;
        if n < 5000 {
            break;
        }
    }
    let dropped = conn.execute(
        "DELETE FROM webhook_queue WHERE seq < COALESCE((SELECT MIN(seq) FROM events), ?1)",
        [i64::MAX],
    )? as u64;
    Ok((events, dropped))
}

/// Forgets deliveries (and counters) of webhooks no longer configured.
pub fn forget_hooks(conn: &Db, keep: &[String]) -> Result<u64, MetaError> {
    let mut stmt = conn.prepare("SELECT DISTINCT hook FROM webhook_queue")?;
    let hooks: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut forgotten = 0;
    for hook in hooks.iter().filter(|h| !keep.contains(h)) {
        forgotten += conn.execute("DELETE FROM webhook_queue WHERE hook = ?1", [hook])? as u64;
        conn.execute("DELETE FROM webhook_state WHERE hook = ?1", [hook])?;
    }
    Ok(forgotten)
}

/// The deliveries a webhook may make now: per subject, its oldest one that is not given up
/// on, when that one is due (a later event of the same subject waits for it). At most `max`.
pub fn due(conn: &Db, hook: &str, now: i64, max: usize) -> Result<Vec<Delivery>, MetaError> {
    let mut stmt = conn.prepare(
        "SELECT q.seq, q.attempts FROM webhook_queue q
         WHERE q.hook = ?1 AND q.failed = 0 AND q.next_attempt_at <= ?2
           AND q.seq = (SELECT MIN(o.seq) FROM webhook_queue o
                        WHERE o.hook = q.hook AND o.subject = q.subject AND o.failed = 0)
         ORDER BY q.seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![hook, now, max as i64], |r| {
        Ok(Delivery {
            seq: r.get(0)?,
            attempts: r.get::<_, i64>(1)?.clamp(0, u32::MAX as i64) as u32,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// When the webhook's next pending delivery is due (unix ms), if it has any.
pub fn next_due(conn: &Db, hook: &str) -> Result<Option<i64>, MetaError> {
    Ok(conn.query_row(
        "SELECT MIN(next_attempt_at) FROM webhook_queue WHERE hook = ?1 AND failed = 0",
        [hook],
        |r| r.get::<_, Option<i64>>(0),
    )?)
}

/// A delivery made: off the queue, counted.
pub fn delivered(conn: &Db, hook: &str, seq: i64) -> Result<(), MetaError> {
    conn.execute(
        "DELETE FROM webhook_queue WHERE hook = ?1 AND seq = ?2",
        params![hook, seq],
    )?;
    conn.execute(
        "INSERT INTO webhook_state (hook, delivered, last_delivered_at) VALUES (?1, 1, ?2)
         ON CONFLICT (hook) DO UPDATE SET delivered = webhook_state.delivered + 1,
            last_delivered_at = excluded.last_delivered_at",
        params![hook, now_millis()],
    )?;
    Ok(())
}

/// A try that failed: retried at `next_at`, or given up on (`None`).
pub fn attempt_failed(
    conn: &Db,
    hook: &str,
    seq: i64,
    error: &str,
    next_at: Option<i64>,
) -> Result<(), MetaError> {
    let now = now_millis();
    conn.execute(
        "UPDATE webhook_queue SET attempts = attempts + 1, next_attempt_at = ?3, failed = ?4,
            last_error = ?5 WHERE hook = ?1 AND seq = ?2",
        params![
            hook,
            seq,
            next_at.unwrap_or(now),
            next_at.is_none() as i64,
            error
        ],
    )?;
    conn.execute(
        "INSERT INTO webhook_state (hook, delivered, last_error, last_error_at) VALUES (?1, 0, ?2, ?3)
         ON CONFLICT (hook) DO UPDATE SET last_error = excluded.last_error,
            last_error_at = excluded.last_error_at",
        params![hook, error, now],
    )?;
    Ok(())
}

/// A webhook's counters and its deliveries that failed at least once (newest first, at most
/// `max`).
pub fn hook_state(
    conn: &Db,
    hook: &str,
    max: usize,
) -> Result<(HookState, Vec<FailedDelivery>), MetaError> {
    let mut state = HookState {
        pending: conn.query_row(
            "SELECT COUNT(*) FROM webhook_queue WHERE hook = ?1 AND failed = 0",
            [hook],
            |r| r.get::<_, i64>(0),
        )? as u64,
        ..Default::default()
    };
    match conn.query_row(
        "SELECT delivered, last_delivered_at, last_error, last_error_at FROM webhook_state
         WHERE hook = ?1",
        [hook],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        },
    ) {
        Ok((delivered, last_at, error, error_at)) => {
            state.delivered = delivered as u64;
            state.last_delivered_at = last_at;
            state.last_error = error.zip(error_at);
        }
        Err(rusqlite::Error::QueryReturnedNoRows) => {}
        Err(e) => return Err(e.into()),
    }
    let mut stmt = conn.prepare(
        "SELECT q.seq, e.uid, e.kind, q.attempts, q.next_attempt_at, q.failed, q.last_error
         FROM webhook_queue q LEFT JOIN events e ON e.seq = q.seq
         WHERE q.hook = ?1 AND q.attempts > 0 ORDER BY q.seq DESC LIMIT ?2",
    )?;
    let failures = stmt
        .query_map(params![hook, max as i64], |r| {
            Ok(FailedDelivery {
                seq: r.get(0)?,
                uid: r.get(1)?,
                kind: r
                    .get::<_, Option<String>>(2)?
                    .and_then(|k| EventKind::parse(&k)),
                attempts: r.get::<_, i64>(3)?.clamp(0, u32::MAX as i64) as u32,
                next_attempt_at: r.get(4)?,
                failed: r.get::<_, i64>(5)? != 0,
                error: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok((state, failures))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::schema::open_sqlite(&dir.path().join("m.db")).unwrap();
        (dir, db)
    }

    fn index_with_hook(kinds: Vec<EventKind>) -> Index {
        let mut index = Index::default();
        index.events.hooks = vec![("h".into(), kinds)];
        index
    }

    fn event(kind: EventKind, subject: &str) -> NewEvent {
        NewEvent {
            kind,
            subject: subject.into(),
            resources: Vec::new(),
            detail: serde_json::json!({}),
        }
    }

    #[test]
    fn a_subjects_later_events_wait_for_its_earlier_one_and_others_do_not() {
        let (_dir, conn) = db();
        let index = index_with_hook(vec![]);
        for subject in ["repo:a", "repo:b", "repo:a", "repo:c"] {
            record(&conn, &index, event(EventKind::ImagePush, subject)).unwrap();
        }
        let now = now_millis();
        let seqs = |due: Vec<Delivery>| due.iter().map(|d| d.seq).collect::<Vec<_>>();
        // The first of each subject.
        assert_eq!(seqs(due(&conn, "h", now, 10).unwrap()), [1, 2, 4]);
        // a's first failed and waits for its retry: a's second waits with it.
        attempt_failed(&conn, "h", 1, "refused", Some(now + 60_000)).unwrap();
        assert_eq!(seqs(due(&conn, "h", now, 10).unwrap()), [2, 4]);
        assert_eq!(next_due(&conn, "h").unwrap(), Some(0));
        // Given up on: a's second goes on.
        attempt_failed(&conn, "h", 1, "refused", None).unwrap();
        assert_eq!(seqs(due(&conn, "h", now, 10).unwrap()), [2, 3, 4]);
        for seq in [2, 3, 4] {
            delivered(&conn, "h", seq).unwrap();
        }
        assert!(due(&conn, "h", now, 10).unwrap().is_empty());
        let (state, failures) = hook_state(&conn, "h", 50).unwrap();
        assert_eq!((state.pending, state.delivered), (0, 3));
        assert_eq!(failures.len(), 1);
        assert!(failures[0].failed && failures[0].attempts == 2);
        assert_eq!(failures[0].error, "refused");
    }

    #[test]
    fn a_webhook_gets_only_the_kinds_it_wants() {
        let (_dir, conn) = db();
        let index = index_with_hook(vec![EventKind::Task]);
        record(&conn, &index, event(EventKind::ImagePush, "repo:a")).unwrap();
        record(&conn, &index, event(EventKind::Task, "task:f")).unwrap();
        let due = due(&conn, "h", now_millis(), 10).unwrap();
        assert_eq!(due.iter().map(|d| d.seq).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn pruning_drops_old_events_and_their_deliveries_and_sequence_numbers_go_on() {
        let (_dir, conn) = db();
        let index = index_with_hook(vec![]);
        for _ in 0..3 {
            record(&conn, &index, event(EventKind::Gc, "registry")).unwrap();
        }
        conn.execute("UPDATE events SET at = 1000 WHERE seq <= 2", [])
            .unwrap();
        assert_eq!(prune(&conn, 2000).unwrap(), (2, 2));
        let left = list(
            &conn,
            &EventFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
        // All gone: the next event is not numbered anew (followers go on from the head).
        conn.execute("UPDATE events SET at = 1000", []).unwrap();
        prune(&conn, 2000).unwrap();
        record(&conn, &index, event(EventKind::Gc, "registry")).unwrap();
        assert_eq!(head(&conn).unwrap(), 4);
    }

    #[test]
    fn listings_filter_by_kind_repository_and_time() {
        let (_dir, conn) = db();
        let index = Index::default();
        record(&conn, &index, event(EventKind::ImagePush, "repo:a")).unwrap();
        record(&conn, &index, event(EventKind::ImageDelete, "repo:b")).unwrap();
        record(&conn, &index, event(EventKind::Task, "task:a")).unwrap();
        let seqs = |filter: EventFilter| {
            list(&conn, &filter)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>()
        };
        let all = || EventFilter {
            limit: 10,
            ..Default::default()
        };
        assert_eq!(seqs(all()), [1, 2, 3]);
        assert_eq!(
            seqs(EventFilter {
                kinds: vec![EventKind::ImagePush, EventKind::Task],
                ..all()
            }),
            [1, 3]
        );
        assert_eq!(
            seqs(EventFilter {
                repository: Some("a".into()),
                ..all()
            }),
            [1]
        );
        assert_eq!(
            seqs(EventFilter {
                after: Some(1),
                ..all()
            }),
            [2, 3]
        );
        assert_eq!(seqs(EventFilter { limit: 2, ..all() }), [2, 3]);
        assert_eq!(
            seqs(EventFilter {
                since_ms: now_millis() + 60_000,
                ..all()
            }),
            Vec::<i64>::new()
        );
    }
}
