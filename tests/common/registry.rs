//! Helpers for the tests that drive the registry with real clients: the daemon's registry
//! address, unique names, external commands (docker, skopeo), a busybox image built FROM
//! scratch, and SHA-256 digests.

use super::{Daemon, Env};
use sha2::{Digest as _, Sha256};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

/// Starts `ecrld` as a child of the test and returns it with its registry's `host:port`.
pub fn spawn_registry(env: &Env) -> (Daemon, String) {
    let daemon = env.spawn_daemon(&[]);
    let address = registry_address(env);
    (daemon, address)
}

/// The running daemon's registry `host:port`, from `ecrl daemon status`.
pub fn registry_address(env: &Env) -> String {
    let info = env.info();
    let address = info["registryAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("daemon status has no registryAddress: {info}"))
        .to_string();
    assert!(!address.ends_with(":0"), "unresolved port: {address}");
    address
}

/// `localhost:PORT` for a `127.0.0.1:PORT` address: docker treats it as an insecure
/// (plain HTTP) registry.
pub fn localhost(address: &str) -> String {
    let port = address
        .rsplit_once(':')
        .map(|(_, p)| p)
        .unwrap_or_else(|| panic!("no port in {address}"));
    format!("localhost:{port}")
}

/// A name no other test run (in this process or another) uses: lowercase, digits and `-`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `sha256:<hex>` of bytes.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs a command to completion (stdin closed) and returns its output.
pub fn run(program: &str, args: &[&str]) -> Output {
    let mut command = Command::new(program);
    command.args(args).stdin(std::process::Stdio::null());
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs a command and insists on success; returns its stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Fails the test with a clear message unless the Docker CLI reaches a daemon. CI always has
/// one (tests/run starts it): a test that needs it must not pass silently without it.
pub fn require_docker() {
    match Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "this test needs a running Docker daemon, and `docker version` failed ({}): {}\n\
             start dockerd (tests/run does) and run the test again",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("this test needs the docker CLI and a running dockerd: {e}"),
    }
}

/// Fails the test with a clear message unless `skopeo` is installed.
pub fn require_skopeo() {
    if let Err(e) = Command::new("skopeo").arg("--version").output() {
        panic!("this test needs skopeo (apt-get install skopeo; tests/run installs it): {e}");
    }
}

/// Local Docker image references that are removed (`docker rmi -f`) when dropped, pass or
/// fail.
#[derive(Default)]
pub struct DockerImages {
    refs: std::cell::RefCell<Vec<String>>,
}

impl DockerImages {
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers a reference to remove at the end.
    pub fn track(&self, reference: &str) {
        let mut refs = self.refs.borrow_mut();
        if !refs.iter().any(|r| r == reference) {
            refs.push(reference.to_string());
        }
    }
}

impl Drop for DockerImages {
    fn drop(&mut self) {
        for reference in self.refs.borrow().iter().rev() {
            // Absent by now (the test removed it) is fine.
            let _ = run("docker", &["rmi", "-f", reference]);
        }
    }
}

/// Builds a busybox-static image FROM scratch with the legacy builder, tagged `tag`. A file
/// holding `id` goes in first, so every layer of the image is new to the Docker daemon (a
/// pull must download them all) and a container can prove which image it runs. Returns the
/// image id.
pub fn build_busybox_image(images: &DockerImages, tag: &str, id: &str) -> String {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "this test needs /bin/busybox (apt-get install busybox-static; tests/run installs it)"
    );
    let context = tempfile::Builder::new()
        .prefix("ecrl-docker-ctx-")
        .tempdir()
        .unwrap();
    std::fs::copy(busybox, context.path().join("busybox")).unwrap();
    std::fs::write(context.path().join("test-id"), format!("{id}\n")).unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\n\
         COPY test-id /etc/ecrl-test-id\n\
         COPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\",\"--install\",\"-s\",\"/bin\"]\n",
    )
    .unwrap();
    images.track(tag);
    let out = Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(context.path())
        .env("DOCKER_BUILDKIT", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run docker build");
    assert!(
        out.status.success(),
        "docker build failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    run_ok("docker", &["image", "inspect", "--format", "{{.Id}}", tag])
        .trim()
        .to_string()
}

/// The digest `docker push` reports (`1: digest: sha256:... size: N`).
pub fn pushed_digest(output: &str) -> String {
    output
        .lines()
        .find_map(|line| {
            let (_, rest) = line.split_once("digest: ")?;
            Some(rest.split_whitespace().next()?.to_string())
        })
        .unwrap_or_else(|| panic!("docker push printed no digest:\n{output}"))
}

/// The busybox-static image task tests run, built FROM scratch with the legacy builder
/// (the build is cached by the engine, so each machine builds it once; tests/run removes it).
pub const TASK_BUSYBOX: &str = "ecrl-test/busybox:tasks";

pub fn build_task_busybox() {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", ctx.path().join("busybox"))
        .expect("this test needs /bin/busybox (busybox-static; tests/run installs it)");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\",\"--install\",\"-s\",\"/bin\"]\n",
    )
    .unwrap();
    let out = Command::new("docker")
        .args(["build", "-q", "-t", TASK_BUSYBOX])
        .arg(ctx.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pushes [`TASK_BUSYBOX`] into the registry at `addr` as `busybox:1` and registers the task
/// definition `family`: one essential container `name` running it, with `fields` (more of the
/// container's JSON, such as `"command":["true"]`). Answers the image as tasks name it.
pub fn register_busybox_task(
    env: &Env,
    addr: &str,
    family: &str,
    name: &str,
    fields: &str,
) -> String {
    env.ecrl_ok(&[
        "repo",
        "push",
        &format!("docker://{TASK_BUSYBOX}"),
        "busybox:1",
        "-q",
    ]);
    let image = format!("{}/busybox:1", localhost(addr));
    let def = env.path().join(format!("{family}.json"));
    std::fs::write(
        &def,
        format!(
            r#"{{"family":"{family}","containerDefinitions":[{{"name":"{name}","image":"{image}","essential":true,"memory":32,{fields}}}]}}"#
        ),
    )
    .unwrap();
    env.ecrl_ok(&["task", "register", "-f", def.to_str().unwrap(), "-q"]);
    image
}

/// A monolithic blob push (POST with the digest) over plain HTTP: the answer.
#[allow(dead_code)]
pub fn push_blob(
    http: &reqwest::blocking::Client,
    addr: &str,
    repo: &str,
    content: &[u8],
) -> reqwest::blocking::Response {
    let digest = sha256_digest(content);
    http.post(format!(
        "http://{addr}/v2/{repo}/blobs/uploads/?digest={digest}"
    ))
    .header("content-type", "application/octet-stream")
    .body(content.to_vec())
    .send()
    .unwrap()
}
