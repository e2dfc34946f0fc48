//! The SQLite schema and its versioned migrations. The only place that knows table layouts.

use rusqlite::Connection;

/// Each entry migrates from version `i` to `i + 1` (`PRAGMA user_version`).
const MIGRATIONS: &[&str] = &[
    // 1: repositories, their blobs, manifests and tags.
    "CREATE TABLE repositories (
        name TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL,
        tag_mutability TEXT NOT NULL,
        resource_tags TEXT NOT NULL DEFAULT '{}'
    ) STRICT;
    CREATE TABLE blob_links (
        repo TEXT NOT NULL REFERENCES repositories(name) ON DELETE CASCADE,
        digest TEXT NOT NULL,
        size INTEGER NOT NULL,
        PRIMARY KEY (repo, digest)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX blob_links_digest ON blob_links(digest);
    CREATE TABLE manifests (
        repo TEXT NOT NULL REFERENCES repositories(name) ON DELETE CASCADE,
        digest TEXT NOT NULL,
        media_type TEXT NOT NULL,
        artifact_type TEXT,
        subject TEXT,
        size INTEGER NOT NULL,
        image_size INTEGER NOT NULL,
        refs TEXT NOT NULL,
        annotations TEXT,
        pushed_at INTEGER NOT NULL,
        last_pulled_at INTEGER,
        PRIMARY KEY (repo, digest)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE tags (
        repo TEXT NOT NULL REFERENCES repositories(name) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        digest TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (repo, tag),
        FOREIGN KEY (repo, digest) REFERENCES manifests(repo, digest) ON DELETE CASCADE
    ) STRICT, WITHOUT ROWID;",
    // 2: registry-wide settings (the generated account id).
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;",
    // 3: layers compressed on push, by their uncompressed digest, so the same layer pushed
    // again need not be read or compressed again.
    "CREATE TABLE layer_cache (
        diff_id TEXT NOT NULL,
        compression TEXT NOT NULL,
        digest TEXT NOT NULL,
        size INTEGER NOT NULL,
        PRIMARY KEY (diff_id, compression)
    ) STRICT, WITHOUT ROWID;",
    // 4: ECS task definitions and tasks. A family keeps the last revision it ever issued, so
    // revisions only grow, also after revisions are deleted. Definitions and tasks are kept
    // as their API JSON; the columns beside it are what lookups and listings filter on.
    "CREATE TABLE task_families (
        family TEXT PRIMARY KEY,
        last_revision INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE task_definitions (
        family TEXT NOT NULL REFERENCES task_families(family),
        revision INTEGER NOT NULL,
        arn TEXT NOT NULL,
        status TEXT NOT NULL,
        registered_at TEXT NOT NULL,
        deregistered_at TEXT,
        definition TEXT NOT NULL,
        PRIMARY KEY (family, revision)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        family TEXT NOT NULL,
        created_at TEXT NOT NULL,
        last_status TEXT NOT NULL,
        task TEXT NOT NULL
    ) STRICT;
    CREATE INDEX tasks_family ON tasks(family);",
    // 5: principals, their access keys (secrets only as hashes), identity policies and
    // repository policies (the registry policy and the token-signing secret are settings).
    "CREATE TABLE users (
        name TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE access_keys (
        id TEXT PRIMARY KEY,
        user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        secret_hash BLOB NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX access_keys_user ON access_keys(user);
    CREATE TABLE user_policies (
        user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        document TEXT NOT NULL,
        PRIMARY KEY (user, name)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE repository_policies (
        repo TEXT PRIMARY KEY REFERENCES repositories(name) ON DELETE CASCADE,
        document TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;",
    // 6: blob links are only ever looked up by repository (the in-memory index answers the
    // rest): the index by digest only doubled the pages each link writes.
    "DROP INDEX blob_links_digest;",
    // 7: blobs a deleted image (or a failed push) freed, until their content is removed: a
    // restart removes them even when the start-up sweep leaves unexplained blobs alone.
    "CREATE TABLE released_blobs (
        digest TEXT PRIMARY KEY,
        released_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;",
    // 8: mirroring: sync jobs, and the replication queue, which is also each image's
    // replication status (one row per image, tag and destination).
    "CREATE TABLE mirror_jobs (
        id TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        every_seconds INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        last_run_at INTEGER,
        last_result TEXT,
        last_summary TEXT,
        next_run_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE replication (
        id INTEGER PRIMARY KEY,
        repo TEXT NOT NULL,
        digest TEXT NOT NULL,
        tag TEXT NOT NULL,
        registry TEXT NOT NULL,
        dest_repo TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at INTEGER NOT NULL,
        failure_code TEXT,
        failure_reason TEXT,
        updated_at INTEGER NOT NULL,
        UNIQUE (repo, digest, tag, registry, dest_repo)
    ) STRICT;",
    // 9: pull-through cache rules (their API JSON by prefix), and for each cached tag where
    // it came from and when the upstream was last asked about it.
    "CREATE TABLE cache_rules (
        prefix TEXT PRIMARY KEY,
        rule TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE cache_tags (
        repo TEXT NOT NULL,
        tag TEXT NOT NULL,
        upstream TEXT NOT NULL,
        checked_at INTEGER NOT NULL,
        PRIMARY KEY (repo, tag)
    ) STRICT, WITHOUT ROWID;",
    // 10: each repository's lifecycle policy (its text as given) and its last run.
    "CREATE TABLE lifecycle_policies (
        repo TEXT PRIMARY KEY REFERENCES repositories(name) ON DELETE CASCADE,
        text TEXT NOT NULL,
        evaluated_at INTEGER
    ) STRICT, WITHOUT ROWID;",
    // 11: the filters of ECR's IMMUTABLE_WITH_EXCLUSION and MUTABLE_WITH_EXCLUSION (a JSON
    // list of tag wildcards).
    "ALTER TABLE repositories ADD COLUMN mutability_exclusions TEXT NOT NULL DEFAULT '[]';",
    // 12: when each blob was linked (unix ms), so garbage collection knows which links no
    // manifest references are old enough to go. Links from before count from now.
    "ALTER TABLE blob_links ADD COLUMN linked_at INTEGER NOT NULL DEFAULT 0;
    UPDATE blob_links SET linked_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000;",
    // 13: images `ecrl fsck --repair` found to have lost content (until pushed again).
    "CREATE TABLE damaged_images (
        repo TEXT NOT NULL REFERENCES repositories(name) ON DELETE CASCADE,
        digest TEXT NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (repo, digest)
    ) STRICT, WITHOUT ROWID;",
    // 14: access keys' secrets, sealed (AES-256-GCM under a key derived from the token
    // secret), for the AWS API's SigV4 signatures, which only the secret itself can check;
    // keys made before have none and must be rotated to sign. Access keys of the owner.
    "ALTER TABLE access_keys ADD COLUMN secret_sealed BLOB;
    CREATE TABLE owner_keys (
        id TEXT PRIMARY KEY,
        secret_hash BLOB NOT NULL,
        secret_sealed BLOB NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;",
    // 15: ECS clusters (`default` always exists and has no row), the cluster each task runs
    // in, and the resource tags of ECS's task definitions, tasks and clusters by ARN (a
    // resource with a row has exactly those tags; tags given at registration or RunTask
    // before this version stay in the resource's own JSON).
    "CREATE TABLE clusters (
        name TEXT PRIMARY KEY,
        arn TEXT NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    ALTER TABLE tasks ADD COLUMN cluster TEXT NOT NULL DEFAULT 'default';
    CREATE INDEX tasks_cluster ON tasks(cluster);
    CREATE TABLE ecs_tags (
        arn TEXT PRIMARY KEY,
        tags TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;",
];

pub fn open(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    // WAL: readers never block the writer. FULL: a commit is on disk before it returns.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Room for every statement the writer repeats (see `exec` in the parent module).
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&conn)?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "metadata schema migrated");
    }
    Ok(())
}

/// The schema version this build writes.
#[cfg(test)]
pub fn latest() -> usize {
    MIGRATIONS.len()
}
