//! What a task's containers write, kept by ecrld: one file per container under
//! `DATA_DIR/tasks/TASK_ID/`, copied from the engine while the container runs, so `ecrl task
//! logs` works after the containers are gone.

use crate::runtime::Runtime;
use futures_util::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

pub fn log_file(task_dir: &Path, container: &str) -> PathBuf {
    task_dir.join(format!("{container}.log"))
}

/// Copies the container's whole output (from its start) into its log file, replacing what
/// the file held: after a daemon restart the copy starts over from the engine's record.
/// Ends when the container stops (or the engine goes away).
pub async fn copy(runtime: Arc<dyn Runtime>, runtime_id: String, file: PathBuf) {
    let mut out = match tokio::fs::File::create(&file).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("cannot write log file {}: {e}", file.display());
            return;
        }
    };
    let mut stream = runtime.logs(&runtime_id, true);
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                if let Err(e) = out.write_all(&bytes).await {
                    tracing::warn!("cannot write log file {}: {e}", file.display());
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(container = %runtime_id, "log stream ended: {e}");
                break;
            }
        }
    }
    let _ = out.flush().await;
}
