//! podman against the real `ecrld`, with credentials required. As a registry client: refused
//! before logging in, `ecrl get-login-password | podman login`, push, remove, pull by tag and
//! by digest, and the pulled image runs. As the task engine (its Docker-compatible API
//! socket, `podman system service`): a task whose image is in ecrl's plain-HTTP registry is
//! pulled with the runner's own token and runs. podman keeps its images in a private store
//! (vfs) under a temp dir, so the tests touch nothing of the machine's own podman.

mod common;

use common::registry::{build_busybox_image, localhost, registry_address, run, unique};
use common::registry::{require_docker, DockerImages};
use common::{stderr, stdout, Env};
use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const NO_TLS: &str = "--tls-verify=false";
/// podman's default open-files and process limits are above this machine's hard limits
/// (20,000 files): containers ask for less.
const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=4096:4096",
];

/// podman on a private store, with a private credentials file.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Self {
        if let Err(e) = Command::new("podman").arg("--version").output() {
            panic!("this test needs podman (apt-get install podman; tests/run installs it): {e}");
        }
        let dir = tempfile::Builder::new()
            .prefix("ecrl-podman-")
            .tempdir()
            .unwrap();
        // podman wants its credentials file to exist.
        std::fs::write(dir.path().join("auth.json"), "{\"auths\":{}}").unwrap();
        Podman { dir }
    }

    fn command(&self, args: &[&str]) -> Command {
        let root = self.dir.path().join("root");
        let runroot = self.dir.path().join("runroot");
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            .args(["--storage-driver", "vfs", "--runtime", "runc"])
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(args)
            .env("REGISTRY_AUTH_FILE", self.dir.path().join("auth.json"))
            .env("TMPDIR", self.dir.path())
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("podman runs")
    }

    fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {}: {}\n{}",
            args.join(" "),
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// A busybox image in podman's store, built by docker (see `build_busybox_image`) and
    /// handed over as an archive; returns its local name.
    fn busybox(&self, images: &DockerImages, id: &str) -> String {
        let local = format!("ecrl-test/busybox:{id}");
        build_busybox_image(images, &local, id);
        let archive = self.dir.path().join(format!("{id}.tar"));
        let saved = run("docker", &["save", "-o", archive.to_str().unwrap(), &local]);
        assert!(saved.status.success(), "{}", stderr(&saved));
        self.run_ok(&["pull", &format!("docker-archive:{}", archive.display())]);
        local
    }

    fn run_with_stdin(&self, args: &[&str], input: &str) -> Output {
        common::output_with_stdin(self.command(args), input)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers and images of the private store go through podman; the temp dir then
        // takes the rest.
        let _ = self.run(&["rm", "--all", "--force"]);
        let _ = self.run(&["rmi", "--all", "--force"]);
    }
}

#[test]
fn podman_logs_in_pushes_pulls_and_runs() {
    require_docker();
    let podman = Podman::new();
    let env = Env::with_anonymous("none");
    let _daemon = env.spawn_daemon(&[]);
    let host = localhost(&registry_address(&env));

    let images = DockerImages::new();
    let id = unique("ecrl-podman");
    let local = podman.busybox(&images, &id);
    let image = format!("{host}/team/podman:1");
    podman.run_ok(&["tag", &local, &image]);

    // Without credentials the push is refused.
    let refused = podman.run(&["push", NO_TLS, &image]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    let text = stderr(&refused).to_lowercase();
    assert!(
        text.contains("unauthorized") || text.contains("authentication required"),
        "{text}"
    );

    // ecrl get-login-password | podman login -u AWS --password-stdin HOST
    let token = env.ecrl_ok(&["get-login-password"]).trim().to_string();
    let login = podman.run_with_stdin(
        &["login", NO_TLS, "-u", "AWS", "--password-stdin", &host],
        &token,
    );
    assert!(login.status.success(), "{}", stderr(&login));

    let digest_file = podman.dir.path().join("digest");
    podman.run_ok(&[
        "push",
        NO_TLS,
        "--digestfile",
        digest_file.to_str().unwrap(),
        &image,
    ]);
    let digest = std::fs::read_to_string(&digest_file).unwrap();
    let digest = digest.trim();
    assert!(digest.starts_with("sha256:"), "{digest}");
    // ecrl holds what podman pushed, under that digest.
    let described: serde_json::Value = serde_json::from_str(&env.ecrl_ok(&[
        "image",
        "describe",
        "team/podman:1",
        "--output",
        "json",
    ]))
    .unwrap();
    let detail = &described["imageDetails"][0];
    assert_eq!(detail["imageDigest"], digest, "{described}");
    assert!(detail["imageSizeInBytes"].as_u64().unwrap() > 500_000);

    // Gone locally, pulled back by tag and by digest; the image runs.
    podman.run_ok(&["rmi", "-f", &image, &local]);
    podman.run_ok(&["pull", NO_TLS, &image]);
    let by_digest = format!("{host}/team/podman@{digest}");
    podman.run_ok(&["pull", NO_TLS, &by_digest]);
    let mut args = vec!["run", "--rm", "--network", "none"];
    args.extend(ULIMITS);
    args.extend([image.as_str(), "cat", "/etc/ecrl-test-id"]);
    let ran = podman.run_ok(&args);
    assert_eq!(ran.trim(), id);

    // Logged out, the pull is refused again.
    podman.run_ok(&["logout", &host]);
    podman.run_ok(&["rmi", "-f", &image, &by_digest]);
    let refused = podman.run(&["pull", NO_TLS, &image]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
}

/// `podman system service` on a socket of the test's own, stopped when dropped.
struct PodmanService {
    child: Child,
    socket: std::path::PathBuf,
}

impl PodmanService {
    fn start(podman: &Podman) -> Self {
        let socket = podman.dir.path().join("podman.sock");
        let child = podman
            .command(&[
                "system",
                "service",
                "--time=0",
                &format!("unix://{}", socket.display()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("podman system service starts");
        let service = PodmanService { child, socket };
        let deadline = Instant::now() + Duration::from_secs(20);
        while service.ping().as_deref() != Some("OK") {
            assert!(
                Instant::now() < deadline,
                "podman's API did not answer at {}",
                service.socket.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        service
    }

    /// The body of `GET /_ping`, when the API answers.
    fn ping(&self) -> Option<String> {
        let mut conn = std::os::unix::net::UnixStream::connect(&self.socket).ok()?;
        conn.write_all(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")
            .ok()?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).ok()?;
        answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.trim().to_string())
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// podman as the engine tasks run on (`DOCKER_HOST` at its Docker-compatible socket): the
/// task's image is in ecrl's registry on plain HTTP, which podman, unlike dockerd, does not
/// trust on loopback by itself; ecrld pulls it through podman's own API without TLS, with the
/// runner's short-lived token, and the task runs to its exit code and logs.
#[test]
fn a_task_runs_on_podman_with_its_image_from_ecrls_plain_http_registry() {
    require_docker();
    let podman = Podman::new();
    let service = PodmanService::start(&podman);
    let env = Env::with_anonymous("none");
    let _daemon = env.spawn_daemon_with(&[], &[("DOCKER_HOST", &service.host())]);
    let host = localhost(&registry_address(&env));
    let status: serde_json::Value =
        serde_json::from_str(&env.ecrl_ok(&["daemon", "status", "--output", "json"])).unwrap();
    let engine = status["engine"].as_str().unwrap_or_default();
    assert!(engine.starts_with("Podman Engine "), "{status}");
    let limits = status["taskLimits"].as_str().unwrap_or_default();
    assert!(limits.starts_with("one cgroup per task"), "{status}");

    // The image goes into ecrl with podman as the client.
    let images = DockerImages::new();
    let id = unique("ecrl-podman-task");
    let local = podman.busybox(&images, &id);
    let image = format!("{host}/team/podtask:1");
    podman.run_ok(&["tag", &local, &image]);
    let token = env.ecrl_ok(&["get-login-password"]).trim().to_string();
    let login = podman.run_with_stdin(
        &["login", NO_TLS, "-u", "AWS", "--password-stdin", &host],
        &token,
    );
    assert!(login.status.success(), "{}", stderr(&login));
    podman.run_ok(&["push", NO_TLS, &image]);
    // The engine must pull it: nothing of it stays in podman's store, nor its login.
    podman.run_ok(&["logout", &host]);
    podman.run_ok(&["rmi", "-f", &image, &local]);

    let family = unique("podtask");
    // Task-level limits: podman makes the container in the task's cgroup too.
    let def = serde_json::json!({"family": family, "cpu": "256", "memory": "96",
        "containerDefinitions": [{
        "name": "main", "image": "team/podtask:1", "memory": 64, "essential": true,
        "command": ["sh", "-c", "cat /etc/ecrl-test-id; cat /proc/self/cgroup; exit 3"],
        "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 1024},
                    {"name": "nproc", "softLimit": 4096, "hardLimit": 4096}]}]});
    let file = env.path().join("def.json");
    std::fs::write(&file, def.to_string()).unwrap();
    env.ecrl_ok(&["task", "register", "-f", file.to_str().unwrap()]);
    let out = env.ecrl(&["task", "run", &family, "--wait", "--output", "json"]);
    // `--wait` exits with the essential container's code.
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let task: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let task = &task["tasks"][0];
    assert_eq!(task["lastStatus"], "STOPPED", "{task}");
    assert_eq!(task["containers"][0]["exitCode"], 3, "{task}");
    let arn = task["taskArn"].as_str().unwrap();
    let task_id = arn.rsplit('/').next().unwrap();
    let logs = env.ecrl_ok(&["task", "logs", task_id]);
    assert!(logs.contains(&id), "{logs}");
    assert!(
        logs.contains(&format!(":memory:/ecrl/{task_id}/")),
        "not in the task's cgroup: {logs}"
    );
    let left: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .map(|h| h.unwrap().path().join("ecrl").join(task_id))
        .filter(|d| d.exists())
        .collect();
    assert!(left.is_empty(), "the task's cgroup is left: {left:?}");
    // podman pulled it (by digest, from ecrl), not another engine.
    let pulled = podman.run_ok(&[
        "images",
        "--digests",
        "--format",
        "{{.Repository}}@{{.Digest}}",
    ]);
    let digest = task["containers"][0]["imageDigest"].as_str().unwrap();
    assert!(
        pulled.contains(&format!("{host}/team/podtask@{digest}")),
        "{pulled}"
    );
}
