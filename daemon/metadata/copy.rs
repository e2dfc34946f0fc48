//! Copying a registry's metadata from its SQLite database into an empty PostgreSQL one (the
//! metadata half of `ecrl storage migrate`): every row of every table, as it is, inside the
//! writer's transaction, so no write lands in between.

use super::db::{pg_values_of, Db};
use super::MetaError;
use rusqlite::types::Value;

/// The tables, parents before children (foreign keys hold at every insert).
const TABLES: &[&str] = &[
    "settings",
    "repositories",
    "blob_links",
    "manifests",
    "tags",
    "repository_policies",
    "lifecycle_policies",
    "damaged_images",
    "layer_cache",
    "released_blobs",
    "task_families",
    "task_definitions",
    "tasks",
    "users",
    "access_keys",
    "user_policies",
    "owner_keys",
    "mirror_jobs",
    "replication",
    "cache_rules",
    "cache_tags",
    "clusters",
    "ecs_tags",
    "events",
    "webhook_queue",
    "webhook_state",
    "services",
    "secrets",
];

/// What was copied: rows per table.
pub type Copied = Vec<(&'static str, u64)>;

/// Copies every row of `from` (SQLite) into `to` (a PostgreSQL database already migrated to
/// the same schema version), which must hold no registry yet.
pub fn sqlite_to_postgres(from: &Db, to: &mut postgres::Client) -> Result<Copied, MetaError> {
    let Db::Sqlite(sqlite) = from else {
        return Err(MetaError::Db(
            "the metadata is on PostgreSQL already: nothing to move".into(),
        ));
    };
    let pg = |e: postgres::Error| MetaError::Db(super::db::pg_error(e).to_string());
    let taken: i64 = to
        .query_one(
            "SELECT (SELECT count(*) FROM repositories) + (SELECT count(*) FROM users)
                  + (SELECT count(*) FROM task_definitions)",
            &[],
        )
        .map_err(pg)?
        .get(0);
    if taken > 0 {
        return Err(MetaError::Db(
            "the PostgreSQL database already holds a registry (repositories, users or task \
             definitions): give an empty database"
                .into(),
        ));
    }
    let mut tx = to.transaction().map_err(pg)?;
    // Settings made by the target's own first start (an account id, a token secret) give
    // way to the registry's own, so its ARNs and tokens stay valid.
    tx.batch_execute("DELETE FROM settings").map_err(pg)?;
    let mut copied = Vec::new();
    for table in TABLES {
        let columns: Vec<String> = {
            let mut stmt =
                sqlite.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
            let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
            names.collect::<Result<_, _>>()?
        };
        let quoted: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
        let list = quoted.join(", ");
        let mut select = sqlite.prepare(&format!("SELECT {list} FROM {table}"))?;
        let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
        let insert = tx
            .prepare(&format!(
                "INSERT INTO {table} ({list}) VALUES ({})",
                placeholders.join(", ")
            ))
            .map_err(pg)?;
        let mut rows = select.query([])?;
        let mut n = 0u64;
        while let Some(row) = rows.next()? {
            let values: Vec<Value> = (0..columns.len())
                .map(|i| row.get::<_, Value>(i))
                .collect::<Result<_, _>>()?;
            let params = pg_values_of(values);
            let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = params
                .iter()
                .map(|v| v as &(dyn postgres::types::ToSql + Sync))
                .collect();
            tx.execute(&insert, &refs).map_err(pg)?;
            n += 1;
        }
        copied.push((*table, n));
    }
    // The replication queue's ids and the event log's sequence go on from the highest
    // copied.
    tx.batch_execute(
        "SELECT setval(pg_get_serial_sequence('replication', 'id'),
                       COALESCE((SELECT MAX(id) FROM replication), 0) + 1, false);
         SELECT setval(pg_get_serial_sequence('events', 'seq'),
                       COALESCE((SELECT MAX(seq) FROM events), 0) + 1, false)",
    )
    .map_err(pg)?;
    tx.commit().map_err(pg)?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_of_the_schema_is_copied() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::schema::open_sqlite(&dir.path().join("m.db")).unwrap();
        let Db::Sqlite(conn) = &db else {
            unreachable!()
        };
        let mut stmt = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
                 ORDER BY name",
            )
            .unwrap();
        let mut tables: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        tables.sort();
        let mut copied: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
        copied.sort();
        assert_eq!(
            tables, copied,
            "a table the move to PostgreSQL would leave behind"
        );
    }
}
