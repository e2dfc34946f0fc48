//! Where ecrl keeps things by default. Both binaries resolve paths here so they agree.

use directories::ProjectDirs;
use std::path::{Path, PathBuf};

/// The socket's file name inside its directory.
pub const SOCKET_FILE: &str = "ecrl.sock";
/// The daemon's log file inside the data dir when it runs detached.
pub const LOG_FILE: &str = "ecrld.log";
/// The lock file that makes a data dir belong to one daemon.
pub const LOCK_FILE: &str = "ecrld.lock";
/// The config file's name inside the config dir.
pub const CONFIG_FILE: &str = "config.yaml";

/// ecrld's own CA (`ca.crt`, `ca.key`) inside the config dir.
pub const TLS_DIR: &str = "tls";
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";

/// Linux limits a Unix socket path to 108 bytes including the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

fn project_dirs() -> Option<ProjectDirs> {
    ProjectDirs::from("", "", "ecrl")
}

/// `~/.local/share/ecrl` (XDG data dir), or `/var/lib/ecrl` when there is no home.
pub fn default_data_dir() -> PathBuf {
    project_dirs()
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("/var/lib/ecrl"))
}

/// `~/.config/ecrl/config.yaml`, when there is a home.
pub fn default_config_file() -> Option<PathBuf> {
    project_dirs().map(|d| d.config_dir().join(CONFIG_FILE))
}

/// `~/.config/ecrl`: where keys and certificates live.
pub fn default_config_dir() -> PathBuf {
    project_dirs()
        .map(|d| d.config_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("/etc/ecrl"))
}

/// `~/.config/ecrl/tls`: ecrld's own CA, created at the first start with TLS on.
pub fn default_tls_dir() -> PathBuf {
    default_config_dir().join(TLS_DIR)
}

/// The socket when none is configured: `$XDG_RUNTIME_DIR/ecrl/ecrl.sock`, else
/// `/run/user/$UID/ecrl/ecrl.sock` when that runtime dir exists, else inside the data dir.
pub fn default_socket(data_dir: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("ecrl").join(SOCKET_FILE);
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let run_user = PathBuf::from(format!("/run/user/{uid}"));
    if run_user.is_dir() {
        return run_user.join("ecrl").join(SOCKET_FILE);
    }
    data_dir.join(SOCKET_FILE)
}

/// Makes a path absolute against the current directory, without touching the disk.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
