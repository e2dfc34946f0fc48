//! What `ecrl fsck --repair` records: links to lost blobs dropped, images that lost content
//! marked (until they are pushed again).

use super::db::Db;
use super::{exec, Index, MetaError, Metadata};
use ecrl::names::{Digest, RepoName};
use rusqlite::params;

impl Metadata {
    /// Drops every repository's link to a blob whose content is lost; answers the
    /// repositories that linked it.
    pub async fn unlink_lost(&self, digest: Digest) -> Result<Vec<RepoName>, MetaError> {
        self.write(move |conn, index| {
            let mut from = Vec::new();
            for (name, repo) in index.repos.iter_mut() {
                if repo.blobs.remove(&digest).is_some() {
                    exec(
                        conn,
                        "DELETE FROM blob_links WHERE repo = ?1 AND digest = ?2",
                        params![name.as_str(), digest.to_string()],
                    )?;
                    from.push(name.clone());
                }
            }
            Ok(from)
        })
        .await
    }

    /// Marks images as having lost content, each with why.
    pub async fn mark_damaged(
        &self,
        marks: Vec<(RepoName, Digest, String)>,
    ) -> Result<(), MetaError> {
        self.write(move |conn, index| {
            for (repo, digest, reason) in marks {
                let Some(entry) = index.repos.get_mut(&repo) else {
                    continue;
                };
                exec(
                    conn,
                    "INSERT INTO damaged_images (repo, digest, reason) VALUES (?1, ?2, ?3) ON CONFLICT (repo, digest) DO UPDATE SET reason = excluded.reason",
                    params![repo.as_str(), digest.to_string(), reason],
                )?;
                entry.damaged.insert(digest, reason);
            }
            Ok(())
        })
        .await
    }
}

/// Forgets a damaged mark (the image was pushed again), inside a write.
pub(super) fn clear_damaged(
    conn: &Db,
    repo: &RepoName,
    entry: &mut super::Repo,
    digest: &Digest,
) -> Result<(), MetaError> {
    if entry.damaged.remove(digest).is_some() {
        exec(
            conn,
            "DELETE FROM damaged_images WHERE repo = ?1 AND digest = ?2",
            params![repo.as_str(), digest.to_string()],
        )?;
    }
    Ok(())
}

/// The damaged images: of every repository, or `only` one's.
pub(super) fn load(conn: &Db, index: &mut Index, only: Option<&str>) -> Result<(), MetaError> {
    super::per_repo_digest(
        conn,
        index,
        "SELECT repo, digest, reason FROM damaged_images
         WHERE CAST(?1 AS TEXT) IS NULL OR repo = ?1",
        only,
        |repo, digest, reason: String| {
            repo.damaged.insert(digest, reason);
        },
    )
}
