//! The SQLite schema and its versioned migrations. The only place that knows table layouts.

use super::db::Db;
use super::MetaError;
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
        \"user\" TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        secret_hash BLOB NOT NULL,
        created_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX access_keys_user ON access_keys(\"user\");
    CREATE TABLE user_policies (
        \"user\" TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        document TEXT NOT NULL,
        PRIMARY KEY (\"user\", name)
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
    // 16: the event log (each change, recorded in the transaction that made it; `subject` is
    // what webhook deliveries keep in order: the repository, the task's family, ...), and
    // each webhook's deliveries still to make or given up on (an outbox, written in the
    // same transaction as the event).
    "CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        uid TEXT NOT NULL,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        resources TEXT NOT NULL,
        detail TEXT NOT NULL
    ) STRICT;
    CREATE INDEX events_at ON events(at);
    CREATE TABLE webhook_queue (
        hook TEXT NOT NULL,
        seq INTEGER NOT NULL,
        subject TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        PRIMARY KEY (hook, seq)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE webhook_state (
        hook TEXT PRIMARY KEY,
        delivered INTEGER NOT NULL,
        last_delivered_at INTEGER,
        last_error TEXT,
        last_error_at INTEGER
    ) STRICT, WITHOUT ROWID;",
    // 17: ECS services, each as its API JSON (deployments and events included) by ARN.
    "CREATE TABLE services (
        arn TEXT PRIMARY KEY,
        cluster TEXT NOT NULL,
        service TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;",
    // 18: the secret store: each secret sealed, its current version and the one before.
    "CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        sealed BLOB NOT NULL,
        version_id TEXT NOT NULL,
        previous BLOB,
        previous_version_id TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;",
];

/// Opens (creating) a SQLite database and brings its schema up to date.
pub fn open_sqlite(path: &std::path::Path) -> rusqlite::Result<Db> {
    let conn = Connection::open(path)?;
    // WAL: readers never block the writer. FULL: a commit is on disk before it returns.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Room for every statement the writer repeats (see `Db::execute`).
    conn.set_prepared_statement_cache_capacity(128);
    migrate_sqlite(&conn)?;
    Ok(Db::Sqlite(conn))
}

fn migrate_sqlite(conn: &Connection) -> rusqlite::Result<()> {
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

/// A migration in PostgreSQL's words: the same tables, columns and keys; BIGINT for
/// SQLite's 64-bit INTEGER, BYTEA for BLOB, an identity column for an INTEGER PRIMARY KEY
/// (with or without AUTOINCREMENT: identities are never reused either).
pub fn pg_ddl(sql: &str) -> String {
    sql.replace(
        "CAST(strftime('%s', 'now') AS INTEGER) * 1000",
        "CAST(extract(epoch FROM now()) * 1000 AS BIGINT)",
    )
    .replace(") STRICT, WITHOUT ROWID;", ");")
    .replace(") STRICT;", ");")
    .replace(
        " INTEGER PRIMARY KEY AUTOINCREMENT,",
        " BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,",
    )
    .replace(
        " INTEGER PRIMARY KEY,",
        " BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,",
    )
    .replace(" INTEGER", " BIGINT")
    .replace(" BLOB", " BYTEA")
}

/// The advisory lock (a constant PostgreSQL key) migrations run under, so that instances
/// starting together migrate once.
const MIGRATE_LOCK: i64 = 0x6563_726c_0001;

/// Which tables' rows belong to one repository (their repository column), and the kind of
/// state every other table is: what another instance reloads when a row changes.
pub const CHANGE_KINDS: &[(&str, &str)] = &[
    ("repositories", "repo:name"),
    ("blob_links", "repo:repo"),
    ("manifests", "repo:repo"),
    ("tags", "repo:repo"),
    ("repository_policies", "repo:repo"),
    ("lifecycle_policies", "repo:repo"),
    ("damaged_images", "repo:repo"),
    ("settings", "settings"),
    ("layer_cache", "layers"),
    ("task_families", "tasks"),
    ("task_definitions", "tasks"),
    ("tasks", "tasks"),
    ("users", "auth"),
    ("access_keys", "auth"),
    ("user_policies", "auth"),
    ("owner_keys", "auth"),
    ("mirror_jobs", "mirror"),
    ("replication", "mirror"),
    ("cache_rules", "mirror"),
    ("cache_tags", "mirror"),
    ("clusters", "clusters"),
    ("ecs_tags", "clusters"),
    ("services", "clusters"),
    ("secrets", "secrets"),
];

/// The PostgreSQL channel instances are told of each other's commits on.
pub const CHANGES_CHANNEL: &str = "ecrl_changes";

/// Brings a PostgreSQL database's schema up to date (the same migrations as SQLite's), and
/// the change log other instances follow: every row written to an indexed table records
/// what it belongs to (`repo:NAME`, `auth`, ...) in `changes`, by trigger, in the writing
/// transaction, and notifies [`CHANGES_CHANNEL`].
pub fn migrate_pg(client: &mut postgres::Client) -> Result<(), MetaError> {
    migrate_pg_tx(client).map_err(|e| match e {
        PgMigrateError::Pg(e) => MetaError::Db(super::db::pg_error(e).to_string()),
        PgMigrateError::Newer(version) => MetaError::Db(format!(
            "the PostgreSQL database is at schema version {version}, newer than this ecrld \
             knows ({}): an ecrld of a later version wrote it; run that version",
            MIGRATIONS.len()
        )),
    })
}

enum PgMigrateError {
    Pg(postgres::Error),
    Newer(usize),
}

impl From<postgres::Error> for PgMigrateError {
    fn from(e: postgres::Error) -> Self {
        PgMigrateError::Pg(e)
    }
}

fn migrate_pg_tx(client: &mut postgres::Client) -> Result<(), PgMigrateError> {
    let mut tx = client.transaction()?;
    tx.query("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
    let version = match tx.query_opt("SELECT version FROM schema_version", &[])? {
        Some(row) => row.get::<_, i64>(0),
        None => {
            tx.execute("INSERT INTO schema_version (version) VALUES (0)", &[])?;
            0
        }
    };
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        tx.rollback()?;
        return Err(PgMigrateError::Newer(version));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.batch_execute(&pg_ddl(sql))?;
        tx.execute(
            "UPDATE schema_version SET version = $1",
            &[&((i + 1) as i64)],
        )?;
        tracing::info!(version = i + 1, "metadata schema migrated (PostgreSQL)");
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS changes (
            seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            instance TEXT NOT NULL,
            entity TEXT NOT NULL,
            at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE IF NOT EXISTS changes_pruned (upto BIGINT NOT NULL);
        INSERT INTO changes_pruned (upto) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM changes_pruned);
        CREATE OR REPLACE FUNCTION ecrl_changed() RETURNS trigger AS $$
        DECLARE
            kind TEXT := TG_ARGV[0];
            subject JSONB;
        BEGIN
            IF TG_OP = 'DELETE' THEN subject := to_jsonb(OLD); ELSE subject := to_jsonb(NEW); END IF;
            IF kind LIKE 'repo:%' THEN
                kind := 'repo:' || (subject ->> substr(kind, 6));
            END IF;
            INSERT INTO changes (instance, entity)
                VALUES (coalesce(current_setting('ecrl.instance', true), ''), kind);
            PERFORM pg_notify('ecrl_changes', '');
            RETURN NULL;
        END $$ LANGUAGE plpgsql;",
    )?;
    for (table, kind) in CHANGE_KINDS {
        tx.batch_execute(&format!(
            "CREATE OR REPLACE TRIGGER ecrl_changed AFTER INSERT OR UPDATE OR DELETE ON {table}
                FOR EACH ROW EXECUTE FUNCTION ecrl_changed('{kind}');"
        ))?;
    }
    tx.commit()?;
    Ok(())
}

/// The schema version this build writes.
#[cfg(test)]
pub fn latest() -> usize {
    MIGRATIONS.len()
}
