//! PostgreSQL for the tests: the server tests/run started (`ECRL_TEST_POSTGRES`, a base URL
//! such as `postgres://postgres@127.0.0.1:PORT`), or one this test binary starts itself on a
//! temp dir (initdb and pg_ctl of Debian's PostgreSQL 15, as the `postgres` user when run as
//! root), stopped when the binary exits. Each caller gets a database of its own.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Set by tests/run: the PostgreSQL server every test binary shares.
pub const ENV_SERVER: &str = "ECRL_TEST_POSTGRES";
/// Set (to `postgres`) to run every daemon the harness starts on PostgreSQL: how tests/run
/// runs the registry and client suites a second time against the shared backends.
pub const ENV_BACKEND: &str = "ECRL_TEST_METADATA_BACKEND";

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The base URL of the server (no database).
pub fn server() -> &'static str {
    static SERVER: OnceLock<String> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var(ENV_SERVER) {
        Ok(url) if !url.is_empty() => url,
        _ => start(),
    })
}

/// A fresh, empty database on the shared server; its URL.
pub fn database() -> String {
    create_database(server())
}

fn create_database(base: &str) -> String {
    let name = format!("ecrl_{}", uuid_like());
    let create = format!("CREATE DATABASE {name}");
    let admin = format!("{base}/postgres");
    // On a thread of its own: the synchronous client runs a runtime of its own, which cannot
    // start on a thread of an async test's runtime.
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&admin, postgres::NoTls)
            .expect("connect to the test PostgreSQL");
        client
            .batch_execute(&create)
            .expect("create a test database");
    })
    .join()
    .expect("create a test database");
    format!("{base}/{name}")
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}_{nanos}", std::process::id())
}

/// A command run as the `postgres` user when this process is root (initdb refuses root).
fn as_postgres(program: &str, args: &[&str]) -> Command {
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        let mut line = shell_quote(program);
        for a in args {
            line.push(' ');
            line.push_str(&shell_quote(a));
        }
        let mut c = Command::new("su");
        c.args(["postgres", "-s", "/bin/sh", "-c", &line]);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A PostgreSQL server of the test's own (for what would disturb a shared one: stopping it).
pub struct Server {
    dir: PathBuf,
    port: u16,
}

impl Server {
    /// Makes a cluster on a temp dir and starts it on a free port.
    pub fn new() -> Server {
        let dir = PathBuf::from(format!("/tmp/ecrl-test-pg-{}", uuid_like()));
        std::fs::create_dir_all(&dir).unwrap();
        if unsafe { libc::geteuid() } == 0 {
            let status = Command::new("chown")
                .args(["postgres", dir.to_str().unwrap()])
                .status()
                .unwrap();
            assert!(status.success(), "chown the PostgreSQL dir to postgres");
        }
        let out = as_postgres(
            &format!("{PG_BIN}/initdb"),
            &[
                "-D",
                dir.join("data").to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
        )
        .output()
        .expect("run initdb (Debian's postgresql package)");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Server { dir, port };
        server.start();
        server
    }

    /// The base URL (no database).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    pub fn start(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c max_connections=400 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let out = as_postgres(
            &format!("{PG_BIN}/pg_ctl"),
            &[
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-l",
                self.dir.join("log").to_str().unwrap(),
                "-w",
                "-o",
                &options,
                "start",
            ],
        )
        .output()
        .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server at once (connections are cut, as when it crashes).
    pub fn stop(&self) {
        let _ = as_postgres(
            &format!("{PG_BIN}/pg_ctl"),
            &[
                "-D",
                self.dir.join("data").to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "stop",
            ],
        )
        .output();
    }

    /// A fresh database on this server; its URL.
    pub fn database(&self) -> String {
        create_database(&self.url())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the binary's shared server; stopped when the process exits.
fn start() -> String {
    let server = SHARED.get_or_init(Server::new);
    unsafe { libc::atexit(stop) };
    server.url()
}

static SHARED: OnceLock<Server> = OnceLock::new();

extern "C" fn stop() {
    if let Some(server) = SHARED.get() {
        server.stop();
        let _ = std::fs::remove_dir_all(&server.dir);
    }
}
