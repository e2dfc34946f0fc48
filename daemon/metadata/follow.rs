//! Keeping the index of one instance true to a PostgreSQL database other instances write
//! too.
//!
//! Every write of every instance runs under one registry-wide advisory lock, so change-log
//! entries (see `schema::migrate_pg`) commit in the order of their sequence numbers. Before
//! each batch the writer takes that lock and applies what others committed since it last
//! looked: each repository named is reloaded from its rows, each other kind of state (users
//! and keys, tasks, clusters, mirroring, compressed layers) whole. The index's checks
//! (immutable tags, a manifest's blobs being there, names taken) thus run against the
//! database as it is. A listener (see `pg::listen`) wakes the writer when another instance
//! commits, so reads see the change within milliseconds.

use super::db::{Db, Pg};
use super::{
    auth, clusters, load, load_layers, load_repos, mirror, tasks, Index, ManifestBytes, MetaError,
};
use ecrl::names::{Digest, RepoName};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The advisory lock every write batch holds (a constant PostgreSQL key).
const WRITE_LOCK: i64 = 0x6563_726c_0002;
/// How often an instance prunes the change log.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What the writer needs to follow other instances.
pub struct Follow {
    /// This instance's name in the change log.
    pub instance: String,
    /// The last change-log entry applied (or written by this instance).
    pub seen: i64,
    pub url: String,
    pub ca: Option<std::path::PathBuf>,
    /// The index may have run ahead of the database (a commit failed) or fallen behind (the
    /// connection was lost): reload it whole before the next batch.
    pub full_reload: bool,
    pub pruned_at: Instant,
}

/// The newest change-log entry.
pub fn last_seq(conn: &Db) -> Result<i64, MetaError> {
    Ok(
        conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM changes", [], |r| {
            r.get(0)
        })?,
    )
}

impl Follow {
    /// Connects again when the connection was lost (the index is reloaded whole then).
    pub fn ensure_connected(&mut self, conn: &mut Db) -> Result<(), MetaError> {
        let Db::Pg(pg) = conn else { return Ok(()) };
        if !pg.client().is_closed() {
            return Ok(());
        }
        let client = super::pg::connect(&self.url, self.ca.as_deref(), &self.instance)
            .map_err(|e| MetaError::Unavailable(e.to_string()))?;
        *conn = Db::Pg(Box::new(Pg::new(client)));
        self.full_reload = true;
        tracing::info!("connected to PostgreSQL again");
        Ok(())
    }

    /// At the start of a batch's transaction: takes the write lock and applies what other
    /// instances committed.
    pub fn begin(
        &mut self,
        conn: &Db,
        index: &mut Index,
        manifest_bytes: &ManifestBytes,
    ) -> Result<(), MetaError> {
        conn.query_row("SELECT pg_advisory_xact_lock(?1)", [WRITE_LOCK], |_| Ok(()))?;
        let pruned: i64 = conn.query_row(
            "SELECT COALESCE(MAX(upto), 0) FROM changes_pruned",
            [],
            |r| r.get(0),
        )?;
        if self.full_reload || pruned > self.seen {
            return self.reload_all(conn, index, manifest_bytes);
        }
        let mut stmt =
            conn.prepare("SELECT seq, instance, entity FROM changes WHERE seq > ?1 ORDER BY seq")?;
        let rows = stmt.query_map([self.seen], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut kinds = BTreeSet::new();
        let mut last = self.seen;
        for row in rows {
            let (seq, instance, entity) = row?;
            last = last.max(seq);
            if instance != self.instance {
                kinds.insert(entity);
            }
        }
        for kind in &kinds {
            apply(conn, index, kind, manifest_bytes)?;
        }
        if !kinds.is_empty() {
            tracing::debug!(changes = kinds.len(), "applied other instances' changes");
        }
        self.seen = last;
        if self.pruned_at.elapsed() > PRUNE_EVERY {
            self.pruned_at = Instant::now();
            prune(conn)?;
        }
        Ok(())
    }

    fn reload_all(
        &mut self,
        conn: &Db,
        index: &mut Index,
        manifest_bytes: &ManifestBytes,
    ) -> Result<(), MetaError> {
        let seen = last_seq(conn)?;
        let known: HashMap<Digest, bytes::Bytes> = index
            .repos
            .values()
            .flat_map(|r| r.manifests.values())
            .map(|m| (m.digest, m.bytes.clone()))
            .collect();
        let fresh = load(conn, &|d: &Digest| match known.get(d) {
            Some(b) => Ok(b.clone()),
            None => manifest_bytes(d),
        })?;
        let epoch = index.auth.epoch;
        *index = fresh;
        index.auth.epoch = index.auth.epoch.max(epoch + 1);
        self.seen = seen;
        self.full_reload = false;
        tracing::info!("reloaded the metadata index from PostgreSQL");
        Ok(())
    }
}

/// Reloads what one change-log entry names.
fn apply(
    conn: &Db,
    index: &mut Index,
    kind: &str,
    manifest_bytes: &ManifestBytes,
) -> Result<(), MetaError> {
    let epoch = index.auth.epoch;
    match kind {
        "auth" | "settings" => {
            index.auth = Default::default();
            auth::load(conn, index)?;
            if kind == "settings" {
                index.mirror = Default::default();
                mirror::load(conn, index)?;
            }
        }
        "tasks" => {
            index.task_families.clear();
            index.tasks.clear();
            tasks::load(conn, index)?;
        }
        "clusters" => {
            index.clusters.clear();
            index.ecs_tags.clear();
            clusters::load(conn, index)?;
        }
        "mirror" => {
            index.mirror = Default::default();
            mirror::load(conn, index)?;
        }
        "layers" => {
            index.layers.clear();
            load_layers(conn, index)?;
        }
        other => {
            let Some(name) = other
                .strip_prefix("repo:")
                .and_then(|n| n.parse::<RepoName>().ok())
            else {
                tracing::warn!(entry = other, "a change-log entry of an unknown kind");
                return Ok(());
            };
            let known = index
                .repos
                .remove(&name)
                .map(|r| r.manifests)
                .unwrap_or_default();
            let known: HashMap<Digest, Arc<super::Manifest>> = known;
            load_repos(conn, index, Some(name.as_str()), manifest_bytes, &known)?;
        }
    }
    // Access decisions cached on what changed are stale.
    index.auth.epoch = index.auth.epoch.max(epoch + 1);
    Ok(())
}

/// Removes change-log entries every instance has had time to apply (ten minutes old),
/// noting how far: an instance that had not applied them (its connection was down that
/// long) reloads everything instead.
fn prune(conn: &Db) -> Result<(), MetaError> {
    let upto: i64 = conn.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM changes WHERE at < now() - interval '10 minutes'",
        [],
        |r| r.get(0),
    )?;
    if upto > 0 {
        conn.execute("DELETE FROM changes WHERE seq <= ?1", [upto])?;
        conn.execute("UPDATE changes_pruned SET upto = ?1", [upto])?;
    }
    Ok(())
}
