//! Each repository's lifecycle policy (its text as given) and when it was last applied.

use super::db::Db;
use super::{Index, MetaError, Metadata};
use ecrl::names::RepoName;
use rusqlite::params;

/// A repository's lifecycle policy as the index holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    pub text: String,
    /// Unix milliseconds of the last run that applied it.
    pub evaluated_at: Option<i64>,
}

impl Metadata {
    /// Sets (`Some`) or removes (`None`) a repository's lifecycle policy (checked by the
    /// caller); answers the previous one.
    pub async fn set_lifecycle_policy(
        &self,
        repo: RepoName,
        text: Option<String>,
    ) -> Result<Option<Lifecycle>, MetaError> {
        self.write(move |conn, index| {
            let Some(record) = index.repos.get_mut(&repo) else {
                return Err(MetaError::RepoNotFound(repo));
            };
            match &text {
                Some(text) => conn.execute(
                    "INSERT INTO lifecycle_policies (repo, text, evaluated_at) VALUES (?1, ?2, NULL)
                     ON CONFLICT (repo) DO UPDATE SET text = excluded.text",
                    params![repo.as_str(), text],
                )?,
                None => conn.execute(
                    "DELETE FROM lifecycle_policies WHERE repo = ?1",
                    params![repo.as_str()],
                )?,
            };
            let action = if text.is_some() { "PUT" } else { "DELETE" };
            let old = record.lifecycle.take();
            record.lifecycle = text.map(|text| Lifecycle {
                text,
                evaluated_at: old.as_ref().and_then(|o| o.evaluated_at),
            });
            let event =
                super::events::policy_change(&index.events, "LIFECYCLE", action, Some(&repo), None);
            super::events::record(conn, index, event)?;
            Ok(old)
        })
        .await
    }

    /// Records that a repository's policy was applied at `at` (unix milliseconds).
    pub async fn lifecycle_evaluated(&self, repo: RepoName, at: i64) -> Result<(), MetaError> {
        self.write(move |conn, index| {
            conn.execute(
                "UPDATE lifecycle_policies SET evaluated_at = ?2 WHERE repo = ?1",
                params![repo.as_str(), at],
            )?;
            if let Some(l) = index
                .repos
                .get_mut(&repo)
                .and_then(|r| r.lifecycle.as_mut())
            {
                l.evaluated_at = Some(at);
            }
            Ok(())
        })
        .await
    }
}

/// The lifecycle policies: of every repository, or `only` one's.
pub(super) fn load(conn: &Db, index: &mut Index, only: Option<&str>) -> Result<(), MetaError> {
    let mut stmt = conn.prepare(
        "SELECT repo, text, evaluated_at FROM lifecycle_policies
         WHERE CAST(?1 AS TEXT) IS NULL OR repo = ?1",
    )?;
    let rows = stmt.query_map([only], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<i64>>(2)?,
        ))
    })?;
    for row in rows {
        let (repo, text, evaluated_at) = row?;
        if let Some(record) = repo
            .parse::<RepoName>()
            .ok()
            .and_then(|name| index.repos.get_mut(&name))
        {
            record.lifecycle = Some(Lifecycle { text, evaluated_at });
        }
    }
    Ok(())
}
