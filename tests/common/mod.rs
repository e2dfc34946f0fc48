//! Shared harness for the system tests: a private home, data dir and socket per test, the
//! real `ecrl` and `ecrld` binaries, and a daemon that is stopped when the test ends.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod aws;
pub mod pg;
pub mod registry;
pub mod remotes;
pub mod s3;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const ECRL: &str = env!("CARGO_BIN_EXE_ecrl");
pub const ECRLD: &str = env!("CARGO_BIN_EXE_ecrld");

/// A private environment: nothing of the user's home, config or runtime dir leaks in.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// `ECRL_ANONYMOUS` for the daemon: `all` unless a test asks for access control.
    pub anonymous: &'static str,
    /// The PostgreSQL database the daemon keeps its metadata in, when the suite runs on
    /// PostgreSQL (see [`pg::ENV_BACKEND`]).
    pub postgres: Option<String>,
    /// The daemon's blob store settings (environment variables), when the suite runs on the
    /// object store (see [`ENV_STORAGE_BACKEND`]): a place of its own in the test binary's
    /// SeaweedFS.
    pub s3: Vec<(&'static str, String)>,
}

/// Set (to `s3`) to run every daemon the harness starts on SeaweedFS: how tests/run runs the
/// registry and client suites a second time against the shared backends.
pub const ENV_STORAGE_BACKEND: &str = "ECRL_TEST_STORAGE_BACKEND";

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ecrl-test-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let postgres =
            (std::env::var(pg::ENV_BACKEND).as_deref() == Ok("postgres")).then(pg::database);
        let s3 = if std::env::var(ENV_STORAGE_BACKEND).as_deref() == Ok("s3") {
            // On a thread of its own: the store's set-up uses a blocking HTTP client, whose
            // runtime cannot live on a thread of an async test's runtime.
            std::thread::spawn(|| {
                let store = s3::SeaweedFs::shared();
                let (bucket, prefix) = store.place("suite");
                store.daemon_vars(&bucket, &prefix)
            })
            .join()
            .expect("a place in the test SeaweedFS")
        } else {
            Vec::new()
        };
        Env {
            dir,
            anonymous: "all",
            postgres,
            s3,
        }
    }

    /// An environment whose daemon requires credentials (`anonymous` is `none` or `pull`).
    pub fn with_anonymous(anonymous: &'static str) -> Self {
        let mut env = Env::new();
        env.anonymous = anonymous;
        env
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `yaml` as a config file in the environment's directory; returns its path.
    pub fn write_config(&self, yaml: &str) -> PathBuf {
        let path = self.path().join("config.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("ecrl.sock")
    }

    /// Where the daemon keeps its storage keys (no keyring in tests: key files).
    pub fn key_dir(&self) -> PathBuf {
        self.path().join("home/.config/ecrl/keys")
    }

    /// Gives this environment's daemon the storage keys of `from`'s, as a second machine of
    /// a shared registry is given them.
    pub fn copy_keys_from(&self, from: &Env) {
        let dest = self.key_dir();
        std::fs::create_dir_all(&dest).unwrap();
        for entry in std::fs::read_dir(from.key_dir()).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dest.join(entry.file_name())).unwrap();
        }
    }

    /// The environment every binary runs with in this test.
    pub fn apply(&self, command: &mut Command) {
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path().join("home"))
            .env("ECRL_DATA_DIR", self.data_dir())
            .env("ECRL_SOCKET", self.socket())
            .env("ECRL_REGISTRY_ADDR", "127.0.0.1:0")
            // The registry tests exercise the protocol; tests/auth.rs sets its own access.
            .env("ECRL_ANONYMOUS", self.anonymous)
            .env("ECRL_LOG", "info")
            // Room for the tests' blobs, prepared in an instant (the default prepares an eighth
            // of the machine's memory after start).
            .env("ECRL_READ_CACHE", "64MiB")
            // ECS's address, on a port of this daemon's own (many run at once).
            .env("ECRL_TASK_ENDPOINT", "169.254.170.2:0")
            .stdin(Stdio::null());
        if let Some(url) = &self.postgres {
            command
                .env("ECRL_METADATA_BACKEND", "postgres")
                .env("ECRL_POSTGRES_URL", url);
        }
        command.envs(self.s3.iter().map(|(k, v)| (*k, v)));
    }

    pub fn ecrl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(ECRL);
        self.apply(&mut command);
        command.args(args);
        command
    }

    /// Runs `ecrl` to completion.
    pub fn ecrl(&self, args: &[&str]) -> Output {
        self.ecrl_command(args).output().expect("run ecrl")
    }

    /// Runs `ecrl` and insists on success; returns stdout.
    pub fn ecrl_ok(&self, args: &[&str]) -> String {
        let out = self.ecrl(args);
        assert!(
            out.status.success(),
            "ecrl {args:?} failed: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn ecrld_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(ECRLD);
        self.apply(&mut command);
        command.args(args);
        command
    }

    /// Starts `ecrld` in the foreground (as a child) and waits for its socket to answer.
    pub fn spawn_daemon(&self, args: &[&str]) -> Daemon {
        self.spawn_daemon_with(args, &[])
    }

    /// [`Env::spawn_daemon`] with more environment variables (`DOCKER_HOST`, ...).
    pub fn spawn_daemon_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Daemon {
        let mut command = self.ecrld_command(args);
        command.envs(vars.iter().copied());
        self.spawn_daemon_from(command)
    }

    /// Starts an `ecrld` command made by [`Env::ecrld_command`] (and changed as a test
    /// needs: limits, environment) and waits for its socket to answer.
    pub fn spawn_daemon_from(&self, mut command: Command) -> Daemon {
        let log = std::fs::File::create(self.path().join(format!(
            "ecrld-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        )))
        .unwrap();
        let child = command
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn ecrld");
        let daemon = Daemon {
            child: Some(child),
            socket: self.socket(),
        };
        // Generous: on a busy 2-core machine a daemon on the object store may need a while.
        daemon.wait_ready(Duration::from_secs(30));
        daemon
    }

    /// Starts the daemon with `ecrl daemon start` and returns its info.
    pub fn start(&self) -> serde_json::Value {
        let out = self.ecrl_ok(&["daemon", "start", "--output", "json"]);
        serde_json::from_str(&out).expect("start prints JSON")
    }

    pub fn info(&self) -> serde_json::Value {
        serde_json::from_str(&self.ecrl_ok(&["daemon", "status", "--output", "json"])).unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // A daemon started with `ecrl daemon start` outlives the test unless stopped.
        if self.socket().exists() {
            let _ = self.ecrl(&["daemon", "stop", "--wait", "15"]);
        }
    }
}

/// An `ecrld` run as a child of the test; killed if the test did not stop it.
pub struct Daemon {
    pub child: Option<Child>,
    pub socket: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("ecrld did not listen on {} in time", self.socket.display());
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.pid() as i32, signal) };
    }

    /// Waits for the daemon to exit and returns its exit status.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon already reaped");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ecrld did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `command` (an ecrld, usually) under an open-file limit of `n`, soft and hard, so a
/// test exhausts its descriptors in seconds.
pub fn limit_open_files(command: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `command` to completion with `input` on its standard input.
pub fn output_with_stdin(mut command: Command, input: &str) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?} does not start: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True while the process exists and is not a zombie (orphans are reaped slowly here).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
        })
        .is_some_and(|state| state != "Z" && state != "X")
}
