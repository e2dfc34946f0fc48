//! One daemon per data dir: an exclusive `flock` on `ecrld.lock`, held for the daemon's life.
//! The file names the holder's pid and socket so a second daemon can say who is there.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    pid: u32,
    socket: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another ecrld (pid {pid}, socket {}) is already running on data dir {}; \
         stop it with 'ecrl daemon stop' or choose another --data-dir",
        socket.display(), data_dir.display()
    )]
    Held {
        pid: u32,
        socket: PathBuf,
        data_dir: PathBuf,
    },
    #[error("cannot lock data dir {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Holds the lock until dropped (the kernel releases it when the file closes).
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub fn acquire(data_dir: &Path, socket: &Path) -> Result<Self, LockError> {
        let path = data_dir.join(ecrl::paths::LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder: Holder = serde_json::from_str(&text).unwrap_or(Holder {
                    pid: 0,
                    socket: PathBuf::from("unknown"),
                });
                return Err(LockError::Held {
                    pid: holder.pid,
                    socket: holder.socket,
                    data_dir: data_dir.to_path_buf(),
                });
            }
            return Err(io(err));
        }
        let holder = Holder {
            pid: std::process::id(),
            socket: socket.to_path_buf(),
        };
        let text = serde_json::to_vec(&holder).map_err(|e| io(e.into()))?;
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(&text).map_err(io)?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DataDirLock::acquire(dir.path(), Path::new("/tmp/a.sock")).unwrap();
        let err = DataDirLock::acquire(dir.path(), Path::new("/tmp/b.sock"))
            .err()
            .expect("second lock must fail");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("/tmp/a.sock"), "{msg}");
    }

    #[test]
    fn lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        drop(DataDirLock::acquire(dir.path(), Path::new("/s")).unwrap());
        DataDirLock::acquire(dir.path(), Path::new("/s")).unwrap();
    }
}
