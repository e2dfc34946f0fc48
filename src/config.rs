//! The daemon's configuration: command-line options, environment variables, a YAML file and
//! defaults, in that order of precedence.
//!
//! The options live here rather than in `daemon/` because `ecrl daemon start` takes the same
//! ones and passes them on, and because the CLI resolves the same socket and data dir.

use crate::paths;
use clap::{Args, Parser, ValueEnum};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const ENV_DATA_DIR: &str = "ECRL_DATA_DIR";
pub const ENV_SOCKET: &str = "ECRL_SOCKET";
pub const ENV_REGISTRY_ADDR: &str = "ECRL_REGISTRY_ADDR";
pub const ENV_CONFIG: &str = "ECRL_CONFIG";
pub const ENV_LOG_FORMAT: &str = "ECRL_LOG_FORMAT";
pub const ENV_ENCRYPTION: &str = "ECRL_ENCRYPTION";
/// The tracing filter both binaries read (`info`, `ecrld=debug`, ...).
pub const ENV_LOG: &str = "ECRL_LOG";

/// The region ARNs name when the config file names none.
pub const DEFAULT_REGION: &str = "local";

/// The registry's address when nothing else says.
pub const DEFAULT_REGISTRY_ADDR: &str = "127.0.0.1:5000";

/// Options that `ecrld` and `ecrl daemon start` share.
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct DaemonOptions {
    /// Where blobs and metadata live [default: ~/.local/share/ecrl]
    #[arg(long, env = ENV_DATA_DIR, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address the registry listens on (port 0 picks a free port) [default: 127.0.0.1:5000]
    #[arg(long, env = ENV_REGISTRY_ADDR, value_name = "HOST:PORT")]
    pub registry_addr: Option<String>,

    /// YAML config file [default: ~/.config/ecrl/config.yaml when it exists]
    #[arg(long, env = ENV_CONFIG, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format on stderr [default: text]
    #[arg(long, env = ENV_LOG_FORMAT, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Encryption of blobs at rest, chosen when the data dir is created; a data dir keeps
    /// its mode, and asking for another one is an error [default: aes256-gcm for a new data
    /// dir, else the data dir's own]
    #[arg(long, env = ENV_ENCRYPTION, value_enum, value_name = "MODE")]
    pub encryption: Option<Encryption>,
}

impl DaemonOptions {
    /// The options as the environment alone gives them (for commands that do not take them
    /// as flags but must find the same daemon).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        DaemonOptions {
            data_dir: var(ENV_DATA_DIR).map(PathBuf::from),
            registry_addr: var(ENV_REGISTRY_ADDR).and_then(|v| v.into_string().ok()),
            config: var(ENV_CONFIG).map(PathBuf::from),
            log_format: var(ENV_LOG_FORMAT)
                .and_then(|v| v.into_string().ok())
                .and_then(|v| LogFormat::from_str(&v, true).ok()),
            encryption: var(ENV_ENCRYPTION)
                .and_then(|v| v.into_string().ok())
                .and_then(|v| Encryption::from_str(&v, true).ok()),
        }
    }
}

/// `ecrld`: the daemon's own command line.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "ecrld",
    version,
    about = "The ecrl daemon: a local OCI registry and ECS task runner",
    long_about = "The ecrl daemon: a local OCI registry (Docker Registry HTTP API V2 / OCI \
        Distribution v1.1) and ECS task runner. It runs in the foreground; `ecrl daemon start` \
        runs it detached. It stops cleanly on SIGTERM or SIGINT.\n\n\
        Precedence of settings: flags, then environment variables, then the config file, then \
        defaults. Set ECRL_LOG (e.g. `debug`, `ecrld=trace`) to filter the log."
)]
pub struct EcrldArgs {
    #[command(flatten)]
    pub options: DaemonOptions,

    /// Control socket path [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]
    #[arg(long, env = ENV_SOCKET, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// How blob content is stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
pub enum Encryption {
    /// AES-256-GCM in fixed-size authenticated segments, under a master key kept in the OS
    /// keyring (or a 0600 key file in the config dir when there is no keyring).
    #[value(name = "aes256-gcm")]
    #[serde(rename = "aes256-gcm")]
    Aes256Gcm,
    /// Plain bytes (data dirs made before encryption existed are this).
    #[value(name = "none")]
    #[serde(rename = "none")]
    None,
}

impl Encryption {
    pub fn as_str(self) -> &'static str {
        match self {
            Encryption::Aes256Gcm => "aes256-gcm",
            Encryption::None => "none",
        }
    }
}

impl std::fmt::Display for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The config file as written. Unknown keys are errors, so a typo never passes silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    /// The region in ARNs (`arn:aws:ecr:REGION:ACCOUNT:repository/NAME`).
    pub region: Option<String>,
    #[serde(default)]
    pub registry: RegistryFileConfig,
    #[serde(default)]
    pub storage: StorageFileConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageFileConfig {
    /// `aes256-gcm` or `none`: see [`Encryption`].
    pub encryption: Option<Encryption>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFileConfig {
    pub addr: Option<String>,
    /// Create a repository on the first push to it (default true).
    pub create_on_push: Option<bool>,
    /// How long an upload may sit idle before it is removed, e.g. `24h`, `30m`, `90s`.
    pub upload_expiry: Option<String>,
}

/// Parses `90s`, `30m`, `24h`, `7d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3_600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(seconds))
}

/// Everything resolved: what the daemon runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub registry_addr: String,
    pub log_format: LogFormat,
    pub create_on_push: bool,
    pub upload_expiry: std::time::Duration,
    pub region: String,
    /// The encryption asked for (flag, environment or file); `None` takes the data dir's
    /// own mode, or encryption for a new data dir.
    pub encryption: Option<Encryption>,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error(
        "socket path {} is {len} bytes long; Unix sockets allow at most {max}: choose a shorter --socket",
        path.display(), max = paths::MAX_SOCKET_PATH
    )]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error("invalid config file {}: registry.upload_expiry: {value:?} is not a duration such as 24h, 30m or 90s", path.display())]
    Duration { path: PathBuf, value: String },
}

impl FileConfig {
    /// Reads and parses a config file. An empty file is an empty config.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_yaml::from_str(&text).or_else(|e| {
            // A file of nothing but comments is an empty config, not an error.
            match serde_yaml::from_str::<serde_yaml::Value>(&text) {
                Ok(serde_yaml::Value::Null) => Ok(FileConfig::default()),
                _ => Err(ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                }),
            }
        })
    }

    /// Relative paths in a config file are relative to the file's directory.
    fn resolve_relative(&mut self, file: &Path) {
        let base = file.parent().unwrap_or(Path::new("."));
        for p in [&mut self.data_dir, &mut self.socket].into_iter().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
}

/// Resolves options (already merged with the environment by clap, or by
/// [`DaemonOptions::from_env`]) against the config file and the defaults.
pub fn resolve(
    options: &DaemonOptions,
    socket: Option<&Path>,
) -> Result<DaemonConfig, ConfigError> {
    let (file, config_file) = match &options.config {
        Some(path) => (FileConfig::load(path)?, Some(path.clone())),
        None => match paths::default_config_file().filter(|p| p.is_file()) {
            Some(path) => (FileConfig::load(&path)?, Some(path)),
            None => (FileConfig::default(), None),
        },
    };
    let mut file = file;
    if let Some(path) = &config_file {
        file.resolve_relative(path);
    }

    let data_dir = options
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(paths::default_data_dir);
    let data_dir = paths::absolute(&data_dir);
    let socket = socket
        .map(Path::to_path_buf)
        .or(file.socket)
        .unwrap_or_else(|| paths::default_socket(&data_dir));
    let socket = paths::absolute(&socket);
    let len = socket.as_os_str().len();
    if len > paths::MAX_SOCKET_PATH {
        return Err(ConfigError::SocketPathTooLong { path: socket, len });
    }
    let upload_expiry = match &file.registry.upload_expiry {
        None => std::time::Duration::from_secs(24 * 3_600),
        Some(value) => parse_duration(value).ok_or_else(|| ConfigError::Duration {
            path: config_file.clone().unwrap_or_default(),
            value: value.clone(),
        })?,
    };
    Ok(DaemonConfig {
        create_on_push: file.registry.create_on_push.unwrap_or(true),
        region: file.region.unwrap_or_else(|| DEFAULT_REGION.to_string()),
        upload_expiry,
        data_dir,
        socket,
        registry_addr: options
            .registry_addr
            .clone()
            .or(file.registry.addr)
            .unwrap_or_else(|| DEFAULT_REGISTRY_ADDR.to_string()),
        log_format: options.log_format.or(file.log_format).unwrap_or_default(),
        encryption: options.encryption.or(file.storage.encryption),
        config_file: config_file.map(|p| paths::absolute(&p)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("config.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "data_dir: data\nregistry:\n  addr: 127.0.0.1:6000\nlog_format: json\n",
        );
        let opts = DaemonOptions {
            config: Some(path.clone()),
            ..Default::default()
        };
        let cfg = resolve(&opts, Some(Path::new("/tmp/s.sock"))).unwrap();
        assert_eq!(cfg.data_dir, dir.path().join("data"));
        assert_eq!(cfg.registry_addr, "127.0.0.1:6000");
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(cfg.socket, PathBuf::from("/tmp/s.sock"));

        let opts = DaemonOptions {
            config: Some(path),
            registry_addr: Some("127.0.0.1:7000".into()),
            data_dir: Some("/tmp/elsewhere".into()),
            log_format: Some(LogFormat::Text),
            encryption: None,
        };
        let cfg = resolve(&opts, None).unwrap();
        assert_eq!(cfg.registry_addr, "127.0.0.1:7000");
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/elsewhere"));
        assert_eq!(cfg.log_format, LogFormat::Text);
    }

    #[test]
    fn unknown_key_names_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "registry:\n  adress: 127.0.0.1:1\n");
        let opts = DaemonOptions {
            config: Some(path.clone()),
            ..Default::default()
        };
        let err = resolve(&opts, None).unwrap_err().to_string();
        assert!(err.contains("adress"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn encryption_from_flag_beats_file_and_defaults_to_the_data_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let opts = DaemonOptions {
            config: Some(write(dir.path(), "")),
            data_dir: Some("/d".into()),
            ..Default::default()
        };
        let cfg = resolve(&opts, Some(Path::new("/s"))).unwrap();
        assert_eq!(cfg.encryption, None);

        let path = write(dir.path(), "storage:\n  encryption: none\n");
        let mut opts = DaemonOptions {
            config: Some(path),
            data_dir: Some("/d".into()),
            ..Default::default()
        };
        let cfg = resolve(&opts, Some(Path::new("/s"))).unwrap();
        assert_eq!(cfg.encryption, Some(Encryption::None));
        opts.encryption = Some(Encryption::Aes256Gcm);
        let cfg = resolve(&opts, Some(Path::new("/s"))).unwrap();
        assert_eq!(cfg.encryption, Some(Encryption::Aes256Gcm));

        let path = write(dir.path(), "storage:\n  encryption: aes128\n");
        let opts = DaemonOptions {
            config: Some(path),
            ..Default::default()
        };
        let err = resolve(&opts, None).unwrap_err().to_string();
        assert!(err.contains("aes128"), "{err}");
        let path = write(dir.path(), "storage:\n  encrypt: none\n");
        let opts = DaemonOptions {
            config: Some(path),
            ..Default::default()
        };
        let err = resolve(&opts, None).unwrap_err().to_string();
        assert!(err.contains("encrypt"), "{err}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            parse_duration("90"),
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("30m"),
            Some(std::time::Duration::from_secs(1_800))
        );
        assert_eq!(
            parse_duration("24h"),
            Some(std::time::Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_duration("2d"),
            Some(std::time::Duration::from_secs(172_800))
        );
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("5w"), None);
    }

    #[test]
    fn empty_file_is_empty_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "\n# nothing\n");
        let opts = DaemonOptions {
            config: Some(path),
            data_dir: Some("/d".into()),
            ..Default::default()
        };
        let cfg = resolve(&opts, Some(Path::new("/s"))).unwrap();
        assert_eq!(cfg.registry_addr, DEFAULT_REGISTRY_ADDR);
    }

    #[test]
    fn overlong_socket_is_refused() {
        let long = format!("/tmp/{}/s.sock", "x".repeat(120));
        let dir = tempfile::tempdir().unwrap();
        let opts = DaemonOptions {
            data_dir: Some("/d".into()),
            config: Some(write(dir.path(), "")),
            ..Default::default()
        };
        let err = resolve(&opts, Some(Path::new(&long))).unwrap_err();
        assert!(matches!(err, ConfigError::SocketPathTooLong { .. }));
    }
}
