//! The daemon's life and the CLI's conventions, with the real binaries.

mod common;

use common::{stderr, stdout, Env};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;

#[test]
fn start_status_stop() {
    let env = Env::new();
    let info = env.start();
    let pid = info["pid"].as_u64().unwrap();
    assert_eq!(info["socket"], env.socket().to_str().unwrap());
    assert_eq!(info["dataDir"], env.data_dir().to_str().unwrap());
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    let registry = info["registryAddress"].as_str().unwrap().to_string();
    assert!(
        !registry.ends_with(":0"),
        "port 0 must be resolved: {registry}"
    );

    // The registry port is bound and answers the API version check.
    let mut conn = std::net::TcpStream::connect(&registry).unwrap();
    conn.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("docker-distribution-api-version: registry/2.0"),
        "{response}"
    );

    let status = env.info();
    assert_eq!(status["pid"].as_u64().unwrap(), pid);
    let table = env.ecrl_ok(&["daemon", "status"]);
    assert!(
        table.contains("running") && table.contains(&registry),
        "{table}"
    );

    // A second start finds it running and changes nothing.
    let again = env.start();
    assert_eq!(again["pid"].as_u64().unwrap(), pid);

    let logs = env.ecrl_ok(&["daemon", "logs"]);
    assert!(logs.contains("ecrld is ready"), "{logs}");
    let tail = env.ecrl_ok(&["daemon", "logs", "--tail", "1"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");

    let stopped = env.ecrl_ok(&["daemon", "stop"]);
    assert!(stopped.contains(&pid.to_string()), "{stopped}");
    assert!(
        !common::alive(pid as u32),
        "stop returns once the daemon is gone"
    );
    assert!(!env.socket().exists(), "the socket is removed");

    let out = env.ecrl(&["daemon", "status"]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn unreachable_daemon_exits_3_with_a_hint() {
    let env = Env::new();
    let out = env.ecrl(&["daemon", "status"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "error: ecrld is not running (socket: {}); start it with 'ecrl daemon start'",
            env.socket().display()
        )
    );
    assert!(stdout(&out).is_empty());
    // Stopping a daemon that does not run is not an error.
    let out = env.ecrl(&["daemon", "stop"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn second_daemon_on_the_same_data_dir_is_refused() {
    let env = Env::new();
    let first = env.spawn_daemon(&[]);
    let other_socket = env.path().join("other.sock");
    let out = env
        .ecrld_command(&["--socket", other_socket.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("pid {}", first.pid())), "{err}");
    assert!(err.contains(env.socket().to_str().unwrap()), "{err}");
    assert!(!other_socket.exists());
    // The first one is untouched.
    assert_eq!(env.info()["pid"].as_u64().unwrap(), first.pid() as u64);

    // A second daemon on another data dir but the same socket is refused too.
    let out = env
        .ecrld_command(&["--data-dir", env.path().join("d2").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("another ecrld is listening on socket"));
    assert_eq!(env.info()["pid"].as_u64().unwrap(), first.pid() as u64);
}

#[test]
fn sigterm_and_sigint_stop_cleanly_and_remove_the_socket() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let env = Env::new();
        let mut daemon = env.spawn_daemon(&[]);
        assert!(env.socket().exists());
        daemon.signal(signal);
        let status = daemon.wait(Duration::from_secs(15));
        assert_eq!(status.code(), Some(0), "signal {signal}");
        assert!(!env.socket().exists(), "signal {signal} left the socket");
    }
}

#[test]
fn a_killed_daemon_leaves_a_stale_socket_that_the_next_one_replaces() {
    let env = Env::new();
    let mut daemon = env.spawn_daemon(&[]);
    daemon.signal(libc::SIGKILL);
    daemon.wait(Duration::from_secs(10));
    assert!(env.socket().exists(), "kill -9 cannot clean up");
    assert_eq!(env.ecrl(&["daemon", "status"]).status.code(), Some(3));
    let info = env.start();
    assert!(info["pid"].as_u64().is_some());
}

#[test]
fn socket_is_private() {
    let env = Env::new();
    let socket = env.path().join("run").join("ecrl.sock");
    let mut command = env.ecrld_command(&["--socket", socket.to_str().unwrap()]);
    let _child = ChildGuard(command.spawn().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !socket.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(socket.parent().unwrap()), 0o700);
}

struct ChildGuard(std::process::Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn another_user_is_refused_even_when_the_socket_is_opened_up() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    let env = Env::new();
    let _daemon = env.spawn_daemon(&[]);
    // Defeat the file permissions on purpose: the peer-credential check must still refuse.
    for p in [env.path(), &env.path().join("home")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(env.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = env
        .ecrl_command(&["daemon", "status"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stdout(&out).is_empty(),
        "another user got: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("cannot talk to ecrld"),
        "{}",
        stderr(&out)
    );
    // Root is still welcome.
    env.ecrl_ok(&["daemon", "status"]);
}

#[test]
fn unknown_config_key_is_a_clear_error() {
    let env = Env::new();
    let config = env.write_config("registry:\n  addr: 127.0.0.1:0\n  max_conns: 5\n");
    let out = env
        .ecrld_command(&["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("max_conns"), "{err}");
    assert!(err.contains(config.to_str().unwrap()), "{err}");
    assert!(!env.socket().exists());

    let out = env.ecrl(&["daemon", "start", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("max_conns"), "{}", stderr(&out));

    // The environment variable names the file too.
    let out = env
        .ecrld_command(&[])
        .env("ECRL_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("max_conns"));

    // A config file that is not there is said once.
    let out = env
        .ecrl_command(&["daemon", "status"])
        .env("ECRL_CONFIG", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim_end(),
        "error: cannot read config file /nonexistent: No such file or directory (os error 2)"
    );
}

#[test]
fn config_file_is_read_and_flags_win() {
    let env = Env::new();
    let config = env.write_config("registry:\n  addr: 127.0.0.1:1\nlog_format: json\n");
    // The file's address would fail (port 1 needs privileges only for non-root, so use a
    // flag to be sure the flag is what counts) — the flag beats the file.
    let out = env.ecrl_ok(&[
        "daemon",
        "start",
        "--config",
        config.to_str().unwrap(),
        "--registry-addr",
        "127.0.0.1:0",
        "--output",
        "json",
    ]);
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(!info["registryAddress"].as_str().unwrap().ends_with(":1"));
    // The file's log format applies: the log is JSON lines.
    let logs = env.ecrl_ok(&["daemon", "logs"]);
    let first = logs.lines().next().unwrap();
    let line: serde_json::Value = serde_json::from_str(first).expect("JSON log line");
    assert_eq!(line["level"], "INFO");
}

#[test]
fn start_while_running_refuses_other_settings_and_accepts_the_same() {
    let env = Env::new();
    let first = env.start();
    let address = first["registryAddress"].as_str().unwrap().to_string();

    // Nothing asked, or what it already has: it runs, exit 0.
    let out = env.ecrl(&["daemon", "start"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("already running"), "{}", stderr(&out));
    let out = env.ecrl(&["daemon", "start", "--registry-addr", &address]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = env.ecrl(&[
        "daemon",
        "start",
        "--tls",
        "--registry-addr",
        "127.0.0.1:5612",
        "--anonymous",
        "pull",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("already running")
            && err.contains("--tls=true (running: HTTPS off)")
            && err.contains(&format!(
                "--registry-addr 127.0.0.1:5612 (running: {address})"
            ))
            && err.contains("--anonymous pull (running: all)")
            && err.contains("'ecrl daemon stop'"),
        "{err}"
    );
    // It still runs as it was.
    assert_eq!(env.info()["pid"], first["pid"]);
}

#[test]
fn a_bad_address_creates_nothing() {
    let env = Env::new();
    for args in [
        vec!["--registry-addr", "bogus"],
        vec!["--tls", "--tls-addr", "127.0.0.1"],
    ] {
        let out = env.ecrld_command(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains("expected HOST:PORT"), "{err}");
        assert!(!env.data_dir().exists(), "{args:?} created the data dir");
        assert!(
            !env.path().join("home/.config/ecrl").exists(),
            "{args:?} created a key or a CA"
        );
    }
}

#[test]
fn bad_flags_exit_2() {
    let env = Env::new();
    assert_eq!(env.ecrl(&["--no-such-flag"]).status.code(), Some(2));
    assert_eq!(env.ecrl(&["daemon", "frobnicate"]).status.code(), Some(2));
    assert_eq!(
        env.ecrl(&["--output", "xml", "daemon", "status"])
            .status
            .code(),
        Some(2)
    );
    let out = env.ecrld_command(&["--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn output_formats_are_machine_readable() {
    let env = Env::new();
    env.start();
    let json: serde_json::Value =
        serde_json::from_str(&env.ecrl_ok(&["daemon", "status", "--output", "json"])).unwrap();
    assert!(json["uptimeSeconds"].is_u64());
    assert!(json["bytesStored"].is_u64());
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&env.ecrl_ok(&["daemon", "status", "--output", "yaml"])).unwrap();
    assert_eq!(yaml["pid"].as_u64(), json["pid"].as_u64());
    let stopped: serde_json::Value =
        serde_json::from_str(&env.ecrl_ok(&["daemon", "stop", "--output", "json"])).unwrap();
    assert_eq!(stopped["stopped"], true);
}

#[test]
fn start_reports_a_daemon_that_cannot_bind() {
    let env = Env::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = env.ecrl(&["daemon", "start", "--registry-addr", &addr]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&addr) && err.contains("exited during start-up"),
        "{err}"
    );
    assert!(!env.socket().exists());
}

/// A new data dir is encrypted; with no secret service in the test's environment (as on
/// any headless machine) the key goes to a 0600 file in the config dir, and the status says
/// so. The key never reaches the log, and the data dir refuses another mode later.
#[test]
fn status_says_how_blobs_are_encrypted_and_where_the_key_is() {
    let env = Env::new();
    let info = env.start();
    assert_eq!(info["encryption"], "aes256-gcm", "{info}");
    assert_eq!(info["keyStore"], "file", "{info}");
    let key_file = std::path::PathBuf::from(info["keyFile"].as_str().unwrap());
    let keys = env.path().join("home/.config/ecrl/keys");
    assert_eq!(key_file.parent(), Some(keys.as_path()));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(mode(&keys), 0o700);
    let key = std::fs::read_to_string(&key_file).unwrap();
    let key = key.trim();
    assert_eq!(key.len(), 64, "a 256-bit key in hex");

    let table = env.ecrl_ok(&["daemon", "status"]);
    assert!(table.contains("aes256-gcm"), "{table}");
    assert!(
        table.contains(&format!("file ({})", key_file.display())),
        "{table}"
    );

    // Restarted, it finds the same key.
    env.ecrl_ok(&["daemon", "stop"]);
    let info = env.start();
    assert_eq!(info["keyFile"], key_file.to_str().unwrap());
    assert_eq!(std::fs::read_dir(&keys).unwrap().count(), 1);
    env.ecrl_ok(&["daemon", "stop"]);
    let log = std::fs::read_to_string(env.data_dir().join("ecrld.log")).unwrap();
    assert!(log.contains("storage key"), "{log}");
    assert!(!log.contains(key), "the key is in the log");

    // The flag reaches ecrld through `ecrl daemon start`, and a mode the data dir was not
    // made with is refused.
    let out = env.ecrl(&["daemon", "start", "--encryption", "none"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("was created with encryption aes256-gcm"),
        "{err}"
    );
    assert!(!err.contains(key), "the key is in an error");
}

/// The read cache's budget comes from `ECRL_READ_CACHE` or `storage.read_cache`, shows in the
/// status, and a bad value keeps the daemon from starting with an error that names it.
#[test]
fn the_read_cache_is_configured_shown_and_bad_sizes_are_refused() {
    let env = Env::new();
    // Every test's environment sets 64 MiB.
    let info = env.start();
    assert_eq!(info["readCache"]["budgetBytes"], 64 << 20, "{info}");
    assert_eq!(info["readCache"]["heldBytes"], 0, "{info}");
    let text = env.ecrl_ok(&["daemon", "status"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("read cache") && l.contains("64.0 MiB budget")),
        "{text}"
    );
    env.ecrl_ok(&["daemon", "stop", "--wait", "15"]);

    // Off: no budget, nothing prepared, no reserve file.
    let out = env
        .ecrl_command(&["daemon", "start", "--output", "json"])
        .env("ECRL_READ_CACHE", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["readCache"]["budgetBytes"], 0, "{info}");
    assert!(!env.data_dir().join("cache/reserve").exists());
    let text = env.ecrl_ok(&["daemon", "status"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("read cache") && l.ends_with("off")),
        "{text}"
    );
    env.ecrl_ok(&["daemon", "stop", "--wait", "15"]);

    let out = env
        .ecrld_command(&[])
        .env("ECRL_READ_CACHE", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("ECRL_READ_CACHE") && err.contains("lots"),
        "{err}"
    );

    let config = env.write_config("storage:\n  read_cache: 12 parsecs\n");
    let out = env
        .ecrld_command(&["--config", config.to_str().unwrap()])
        .env_remove("ECRL_READ_CACHE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("storage.read_cache") && err.contains(config.to_str().unwrap()),
        "{err}"
    );
    assert!(!env.socket().exists());
}
