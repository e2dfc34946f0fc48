//! The one way blob bytes reach the disk: an upload file written while hashing, committed by
//! fsync, digest check, rename and directory fsync.

use super::StoreError;
use bytes::Bytes;
use ecrl::names::Digest;
use futures_util::{Stream, StreamExt};
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub struct Upload {
    path: PathBuf,
    file: Option<File>,
    hasher: Sha256,
    size: u64,
}

impl Upload {
    pub fn create(path: PathBuf) -> io::Result<Self> {
        let file = File::options().write(true).create_new(true).open(&path)?;
        Ok(Upload {
            path,
            file: Some(file),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn digest_so_far(&self) -> Digest {
        Digest::from_bytes(self.hasher.clone().finalize().into())
    }

    pub async fn append<S, E>(&mut self, body: S) -> Result<u64, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StoreError::Body(e.to_string()))?;
            self.hasher.update(&chunk);
            let len = chunk.len() as u64;
            let mut file = self.file.take().ok_or(StoreError::UploadNotFound)?;
            let (file, result) = tokio::task::spawn_blocking(move || {
                let r = file.write_all(&chunk);
                (file, r)
            })
            .await
            .map_err(io::Error::other)?;
            self.file = Some(file);
            result?;
            self.size += len;
        }
        Ok(self.size)
    }

    pub async fn commit(
        mut self,
        expected: Option<&Digest>,
        target: &Path,
    ) -> Result<(), StoreError> {
        let actual = self.digest_so_far();
        if let Some(expected) = expected {
            if *expected != actual {
                self.discard().await;
                return Err(StoreError::DigestMismatch {
                    expected: *expected,
                    actual,
                });
            }
        }
        let file = self.file.take().ok_or(StoreError::UploadNotFound)?;
        let path = self.path.clone();
        let target = target.to_path_buf();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            file.sync_all()?;
            drop(file);
            let dir = target
                .parent()
                .ok_or_else(|| io::Error::other("blob path has no parent"))?;
            std::fs::create_dir_all(dir)?;
            std::fs::rename(&path, &target)?;
            File::open(dir)?.sync_all()
        })
        .await
        .map_err(io::Error::other)??;
        Ok(())
    }

    pub async fn discard(mut self) {
        self.file.take();
        let _ = tokio::fs::remove_file(&self.path).await;
    }
}
