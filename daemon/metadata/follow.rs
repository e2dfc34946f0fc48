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
    auth, clusters, load, load_layers, load_repos, mirror, secrets, tasks, Index, Manifest,
    ManifestBytes, MetaError,
};
use ecrl::names::{Digest, RepoName};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
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

    /// Whether other instances committed nothing since the last batch, by one read of the
    /// change log's head, outside any transaction or lock: every write commits under the
    /// write lock, so entries commit in sequence order and a head no further on than
    /// [`Follow::seen`] means nothing was missed. `false` when unsure (the connection is
    /// lost, a reload is due, the read failed): the caller then gathers as for a write.
    pub fn nothing_new(&self, conn: &Db) -> bool {
        if self.full_reload {
            return false;
        }
        if let Db::Pg(pg) = conn {
            if pg.client().is_closed() {
                return false;
            }
        }
        last_seq(conn).is_ok_and(|head| head <= self.seen)
    }

    /// At the start of a batch's transaction, before the index is locked: takes the write
    /// lock and reads what other instances committed since, with the content of manifests
    /// this instance has not seen (from the blob store). Nothing here holds the index: a
    /// blob-store read may need the async threads, which readers of the index occupy while
    /// it is locked.
    pub fn gather(
        &mut self,
        conn: &Db,
        index: &RwLock<Index>,
        manifest_bytes: &ManifestBytes,
    ) -> Result<Pending, MetaError> {
        conn.query_row("SELECT pg_advisory_xact_lock(?1)", [WRITE_LOCK], |_| Ok(()))?;
        let pruned: i64 = conn.query_row(
            "SELECT COALESCE(MAX(upto), 0) FROM changes_pruned",
            [],
            |r| r.get(0),
        )?;
        let known = |only: Option<&RepoName>| -> HashMap<Digest, Arc<Manifest>> {
            let index = index.read().unwrap_or_else(|e| e.into_inner());
            index
                .repos
                .iter()
                .filter(|(name, _)| only.is_none_or(|o| o == *name))
                .flat_map(|(_, r)| r.manifests.iter().map(|(d, m)| (*d, m.clone())))
                .collect()
        };
        if self.full_reload || pruned > self.seen {
            let seen = last_seq(conn)?;
            let known = known(None);
            let fresh = load(conn, &|d: &Digest| match known.get(d) {
                Some(m) => Ok(m.bytes.clone()),
                None => manifest_bytes(d),
            })?;
            return Ok(Pending {
                seen,
                whole: Some(fresh),
                kinds: Vec::new(),
                scratch: Index::default(),
            });
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
        let mut seen = self.seen;
        for row in rows {
            let (seq, instance, entity) = row?;
            seen = seen.max(seq);
            if instance != self.instance {
                kinds.insert(entity);
            }
        }
        // What each names, read into an index of its own.
        let mut scratch = Index::default();
        for kind in &kinds {
            match kind.as_str() {
                "auth" => auth::load(conn, &mut scratch)?,
                "settings" => {
                    auth::load(conn, &mut scratch)?;
                    mirror::load(conn, &mut scratch)?;
                }
                "tasks" => tasks::load(conn, &mut scratch)?,
                "clusters" => clusters::load(conn, &mut scratch)?,
                "secrets" => secrets::load(conn, &mut scratch)?,
                "mirror" => mirror::load(conn, &mut scratch)?,
                "layers" => load_layers(conn, &mut scratch)?,
                other => {
                    if let Some(name) = repo_of(other) {
                        let known = known(Some(&name));
                        load_repos(
                            conn,
                            &mut scratch,
                            Some(name.as_str()),
                            manifest_bytes,
                            &known,
                        )?;
                    }
                }
            }
        }
        if !kinds.is_empty() {
            tracing::debug!(changes = kinds.len(), "read other instances' changes");
        }
        if self.pruned_at.elapsed() > PRUNE_EVERY {
            self.pruned_at = Instant::now();
            prune(conn)?;
        }
        Ok(Pending {
            seen,
            whole: None,
            kinds: kinds.into_iter().collect(),
            scratch,
        })
    }

    /// With the index locked: puts what [`Follow::gather`] read in place.
    pub fn apply(&mut self, pending: Pending, index: &mut Index) {
        let epoch = index.auth.epoch;
        let Pending {
            seen,
            whole,
            kinds,
            mut scratch,
        } = pending;
        let reloaded = whole.is_some();
        if let Some(fresh) = whole {
            let events = std::mem::take(&mut index.events);
            *index = fresh;
            index.events = events;
            self.full_reload = false;
            tracing::info!("reloaded the metadata index from PostgreSQL");
        }
        for kind in &kinds {
            match kind.as_str() {
                "auth" => index.auth = std::mem::take(&mut scratch.auth),
                "settings" => {
                    if !kinds.iter().any(|k| k == "auth") {
                        index.auth = std::mem::take(&mut scratch.auth);
                    }
                    index.mirror = std::mem::take(&mut scratch.mirror);
                }
                "tasks" => {
                    index.task_families = std::mem::take(&mut scratch.task_families);
                    index.tasks = std::mem::take(&mut scratch.tasks);
                }
                "clusters" => {
                    index.clusters = std::mem::take(&mut scratch.clusters);
                    index.ecs_tags = std::mem::take(&mut scratch.ecs_tags);
                    index.services = std::mem::take(&mut scratch.services);
                }
                "mirror" => index.mirror = std::mem::take(&mut scratch.mirror),
                "secrets" => index.secrets = std::mem::take(&mut scratch.secrets),
                "layers" => index.layers = std::mem::take(&mut scratch.layers),
                other => {
                    let Some(name) = repo_of(other) else {
                        tracing::warn!(entry = other, "a change-log entry of an unknown kind");
                        continue;
                    };
                    match scratch.repos.remove(&name) {
                        Some(repo) => index.repos.insert(name, repo),
                        None => index.repos.remove(&name),
                    };
                }
            }
        }
        // Access decisions cached on what changed are stale.
        if !kinds.is_empty() || reloaded {
            index.auth.epoch = index.auth.epoch.max(epoch + 1);
        }
        self.seen = seen;
    }
}

/// What other instances committed, read and not yet in the index.
pub struct Pending {
    seen: i64,
    /// The whole index, read again.
    whole: Option<Index>,
    /// The change-log entries, each applied from `scratch`.
    kinds: Vec<String>,
    scratch: Index,
}

fn repo_of(kind: &str) -> Option<RepoName> {
    kind.strip_prefix("repo:")?.parse().ok()
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
