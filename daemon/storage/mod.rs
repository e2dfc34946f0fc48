//! Content-addressed blob storage under the data dir: `blobs/sha256/<2 hex>/<hex>`.
//!
//! Owns every byte of blob content on disk. It must not call the registry, metadata or any
//! network code.

use std::io;
use std::path::{Path, PathBuf};

pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let root = data_dir.join("blobs");
        std::fs::create_dir_all(root.join("sha256"))?;
        Ok(BlobStore { root })
    }

    /// Bytes of blob content stored, each blob once.
    pub async fn bytes_stored(&self) -> io::Result<u64> {
        let root = self.root.join("sha256");
        tokio::task::spawn_blocking(move || dir_size(&root))
            .await
            .map_err(io::Error::other)?
    }
}

fn dir_size(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
