//! The one way blob bytes leave the disk: a range of a blob as a stream of chunks.

use bytes::Bytes;
use futures_util::Stream;
use std::io::{self, SeekFrom};
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// A blob's bytes, in order.
pub type BlobStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

const CHUNK: usize = 256 * 1024;

pub async fn open(path: PathBuf, range: Range<u64>) -> io::Result<BlobStream> {
    let mut file = tokio::fs::File::open(&path).await?;
    file.seek(SeekFrom::Start(range.start)).await?;
    let reader = file.take(range.end.saturating_sub(range.start));
    Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
        reader, CHUNK,
    )))
}
