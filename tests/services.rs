//! ECS services on the real Docker engine: a service keeps its count (a killed container's
//! task is replaced), replicas get ephemeral host ports, the service survives a daemon
//! restart, a failing revision is rolled back by the circuit breaker, deletion stops the
//! tasks; bad requests are refused with ECS's reasons.

mod common;

use common::registry::{
    build_task_busybox, register_busybox_task, registry_address, require_docker,
};
use common::{stderr, Env};
use serde_json::Value;
use std::time::{Duration, Instant};

const SERVES: &str = r#""stopTimeout":2,"portMappings":[{"containerPort":8080,"hostPort":0}],"command":["httpd","-f","-p","8080"]"#;

fn service(env: &Env, name: &str) -> Value {
    let out: Value =
        serde_json::from_str(&env.ecrl_ok(&["service", "describe", name, "--output", "json"]))
            .unwrap();
    out["services"][0].clone()
}

/// Waits (up to a minute) until `done` holds for the service; answers it.
fn wait_for(env: &Env, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = service(env, name);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: {s:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn steady(s: &Value, count: u64) -> bool {
    s["runningCount"] == count
        && s["pendingCount"] == 0
        && s["deployments"].as_array().unwrap().len() == 1
        && s["deployments"][0]["rolloutState"] == "COMPLETED"
}

/// Deletes the service and waits until it is gone with its tasks (a test leaves no
/// container running behind it).
fn delete_and_wait(env: &Env, name: &str) {
    env.ecrl_ok(&["service", "delete", name, "--force", "-q"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list: Value =
            serde_json::from_str(&env.ecrl_ok(&["service", "list", "--output", "json"])).unwrap();
        let gone = !list["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["serviceName"] == name);
        if gone && running_tasks(env, name).is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "not deleted: {list:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn running_tasks(env: &Env, name: &str) -> Vec<Value> {
    let out: Value = serde_json::from_str(&env.ecrl_ok(&[
        "task",
        "ps",
        "--service",
        name,
        "--status",
        "RUNNING",
        "--output",
        "json",
    ]))
    .unwrap();
    out["tasks"].as_array().unwrap().clone()
}

#[test]
fn a_service_keeps_its_count_replaces_a_killed_task_and_survives_a_restart() {
    require_docker();
    build_task_busybox();
    let env = Env::new();
    // The same registry address after the restart: the tasks pull from it.
    let fixed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let args = ["--registry-addr", fixed.as_str()];
    let mut daemon = env.spawn_daemon(&args);
    let addr = registry_address(&env);
    register_busybox_task(&env, &addr, "web", "app", SERVES);
    env.ecrl_ok(&[
        "service",
        "create",
        "web",
        "--task-definition",
        "web",
        "--desired-count",
        "3",
    ]);
    let s = wait_for(&env, "web", "3 tasks RUNNING", |s| steady(s, 3));
    assert_eq!(s["status"], "ACTIVE");
    assert_eq!(s["desiredCount"], 3);
    let cluster: Value =
        serde_json::from_str(&env.ecrl_ok(&["cluster", "describe", "--output", "json"])).unwrap();
    assert_eq!(
        cluster["clusters"][0]["activeServicesCount"], 1,
        "{cluster}"
    );
    // The console shows it (authentication is off in this test).
    let page = reqwest::blocking::get(format!("http://{addr}/ui/services/default/web"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        page.contains("Service web") && page.contains("has reached a steady state"),
        "{page}"
    );
    assert!(s["serviceArn"]
        .as_str()
        .unwrap()
        .ends_with(":service/default/web"));
    let messages: Vec<&str> = s["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.contains(&"(service web) has reached a steady state."),
        "{messages:?}"
    );
    // Each replica on a host port of its own.
    let tasks = running_tasks(&env, "web");
    assert_eq!(tasks.len(), 3);
    let mut ports: Vec<u64> = tasks
        .iter()
        .map(|t| {
            t["containers"][0]["networkBindings"][0]["hostPort"]
                .as_u64()
                .unwrap()
        })
        .collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3, "{tasks:#?}");
    assert!(tasks
        .iter()
        .all(|t| t["group"] == "service:web" && t["startedBy"] == s["deployments"][0]["id"]));

    // A container killed behind ecrl's back: its task stops, another takes its place.
    let victim = tasks[0]["taskArn"].as_str().unwrap().to_string();
    let container = tasks[0]["containers"][0]["runtimeId"]
        .as_str()
        .unwrap()
        .to_string();
    let out = std::process::Command::new("docker")
        .args(["kill", &container])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = running_tasks(&env, "web");
        if now.len() == 3 && now.iter().all(|t| t["taskArn"] != victim.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "not replaced: {now:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    wait_for(&env, "web", "3 tasks RUNNING again", |s| steady(s, 3));

    // A restart: the service is there, still with its three tasks.
    let before: Vec<String> = running_tasks(&env, "web")
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect();
    daemon.signal(libc::SIGTERM);
    daemon.wait(Duration::from_secs(30));
    let _daemon = env.spawn_daemon(&args);
    wait_for(&env, "web", "3 tasks after the restart", |s| steady(s, 3));
    let after: Vec<String> = running_tasks(&env, "web")
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(after.len(), 3);
    let lost: Vec<String> = before
        .iter()
        .filter(|b| !after.contains(b))
        .map(|b| env.ecrl_ok(&["task", "inspect", b]))
        .collect();
    assert!(lost.is_empty(), "tasks lost in the restart: {lost:#?}");

    // Scaled down to one, then deleted: refused while scaled above 0 without --force.
    env.ecrl_ok(&["service", "update", "web", "--desired-count", "1", "-q"]);
    wait_for(&env, "web", "1 task", |s| {
        s["runningCount"] == 1 && s["pendingCount"] == 0
    });
    let out = env.ecrl(&["service", "delete", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("scaled above 0"), "{}", stderr(&out));
    env.ecrl_ok(&["service", "delete", "web", "--force"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list: Value =
            serde_json::from_str(&env.ecrl_ok(&["service", "list", "--output", "json"])).unwrap();
        if list["services"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not deleted: {list:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(running_tasks(&env, "web").is_empty());
}

#[test]
fn a_failing_revision_is_rolled_back_by_the_circuit_breaker() {
    require_docker();
    build_task_busybox();
    let env = Env::new();
    let _daemon = env.spawn_daemon(&[]);
    let addr = registry_address(&env);
    register_busybox_task(&env, &addr, "api", "app", SERVES);
    env.ecrl_ok(&[
        "service",
        "create",
        "api",
        "--task-definition",
        "api:1",
        "--desired-count",
        "2",
    ]);
    let first = wait_for(&env, "api", "2 tasks RUNNING", |s| steady(s, 2));
    let good = first["deployments"][0]["id"].as_str().unwrap().to_string();
    // Revision 2 runs, but its health check always fails.
    register_busybox_task(
        &env,
        &addr,
        "api",
        "app",
        r#""stopTimeout":2,"portMappings":[{"containerPort":8080,"hostPort":0}],"command":["httpd","-f","-p","8080"],"healthCheck":{"command":["CMD-SHELL","exit 1"],"interval":5,"timeout":2,"retries":1,"startPeriod":0}"#,
    );
    env.ecrl_ok(&[
        "service",
        "update",
        "api",
        "--task-definition",
        "api:2",
        "--circuit-breaker",
        "rollback",
        "-q",
    ]);
    // Throughout, the two tasks of revision 1 keep serving: a new task whose health is not
    // known yet, or UNHEALTHY, never stands in for one of them.
    let deadline = Instant::now() + Duration::from_secs(120);
    let s = loop {
        let s = service(&env, "api");
        let serving = running_tasks(&env, "api")
            .iter()
            .filter(|t| {
                t["taskDefinitionArn"].as_str().unwrap().ends_with("api:1")
                    && t["lastStatus"] == "RUNNING"
            })
            .count();
        assert!(serving >= 2, "revision 1 went below its count: {s:#}");
        if steady(&s, 2)
            && s["taskDefinition"]
                .as_str()
                .unwrap()
                .ends_with("task-definition/api:1")
        {
            break s;
        }
        assert!(Instant::now() < deadline, "not rolled back: {s:#}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let messages: Vec<String> = s["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("failed container health checks")),
        "{messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("deployment failed: tasks failed to start")),
        "{messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains(&format!("rolling back to deployment {good}"))),
        "{messages:#?}"
    );
    // The revision that failed never ran; the service runs revision 1 again.
    for t in running_tasks(&env, "api") {
        assert!(
            t["taskDefinitionArn"].as_str().unwrap().ends_with("api:1"),
            "{t:#}"
        );
    }
    delete_and_wait(&env, "api");
}

#[test]
fn bad_service_requests_are_refused_with_the_reason() {
    let env = Env::new();
    let _daemon = env.spawn_daemon(&[]);
    let def = env.path().join("fixed.json");
    std::fs::write(
        &def,
        r#"{"family":"fixed","containerDefinitions":[{"name":"app","image":"busybox","memory":32,"portMappings":[{"containerPort":80,"hostPort":8080}]}]}"#,
    )
    .unwrap();
    env.ecrl_ok(&["task", "register", "-f", def.to_str().unwrap(), "-q"]);
    for (args, says) in [
        (
            vec![
                "service",
                "create",
                "s",
                "--task-definition",
                "fixed",
                "--desired-count",
                "2",
            ],
            "maps host port 8080",
        ),
        (
            vec![
                "service",
                "create",
                "bad name",
                "--task-definition",
                "fixed",
            ],
            "up to 255 letters",
        ),
        (
            vec![
                "service",
                "create",
                "s",
                "--task-definition",
                "fixed",
                "--desired-count",
                "1000",
            ],
            "at most 100 tasks",
        ),
        (
            vec!["service", "create", "s", "--task-definition", "nope"],
            "nope",
        ),
        (
            vec![
                "service",
                "create",
                "s",
                "--task-definition",
                "fixed",
                "--max-percent",
                "300",
            ],
            "maximumPercent 300",
        ),
        (
            vec![
                "service",
                "create",
                "s",
                "--task-definition",
                "fixed",
                "--cluster",
                "missing",
            ],
            "missing",
        ),
        (
            vec!["service", "update", "ghost", "--desired-count", "2"],
            "Service not found",
        ),
        (vec!["service", "delete", "ghost"], "Service not found"),
    ] {
        let out = env.ecrl(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    let out = env.ecrl(&["service", "describe", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no such service"), "{}", stderr(&out));
    // One replica may hold the fixed port; nothing was created by the refusals.
    env.ecrl_ok(&["service", "create", "s", "--task-definition", "fixed", "-q"]);
    let out = env.ecrl(&["service", "create", "s", "--task-definition", "fixed"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("exists already"), "{}", stderr(&out));
    let out = env.ecrl(&["service", "update", "s", "--desired-count", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("hostPort 0"), "{}", stderr(&out));
    let list: Value =
        serde_json::from_str(&env.ecrl_ok(&["service", "list", "--output", "json"])).unwrap();
    assert_eq!(list["services"].as_array().unwrap().len(), 1);
    delete_and_wait(&env, "s");
}

/// A dockerd of the test's own (its data, run dir and socket in a temp dir, a bridge of its
/// own, no iptables rules), so that it can be stopped and started again without disturbing
/// the engine the other tests share. (Not `--bridge none`: dockerd then deletes `docker0`,
/// the shared engine's bridge.) Stopped, and its bridge removed, when dropped.
struct OwnEngine {
    dir: tempfile::TempDir,
    bridge: String,
    child: Option<std::process::Child>,
}

fn ip(args: &[&str]) -> std::process::Output {
    std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap()
}

impl OwnEngine {
    fn start() -> OwnEngine {
        let dir = tempfile::tempdir().unwrap();
        let n = std::process::id() % 200 + 20;
        let bridge = format!("ecrlt{n}");
        let _ = ip(&["link", "del", &bridge]);
        for args in [
            vec!["link", "add", &bridge, "type", "bridge"],
            vec!["addr", "add", &format!("10.213.{n}.1/24"), "dev", &bridge],
            vec!["link", "set", &bridge, "up"],
        ] {
            let out = ip(&args);
            assert!(out.status.success(), "ip {args:?}: {}", stderr(&out));
        }
        let mut engine = OwnEngine {
            dir,
            bridge,
            child: None,
        };
        engine.run();
        engine
    }

    fn host(&self) -> String {
        format!("unix://{}/docker.sock", self.dir.path().display())
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", self.host())
            .output()
            .unwrap()
    }

    fn run(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("dockerd.log"))
            .unwrap();
        let child = std::process::Command::new("dockerd")
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .args([
                "--bridge",
                &self.bridge,
                "--iptables=false",
                "--ip-masq=false",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.docker(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start: {}",
                std::fs::read_to_string(d.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM, and waits for it to be gone (its containers go with it: no live restore).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

impl Drop for OwnEngine {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
        }
        self.stop();
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

#[test]
fn a_service_survives_a_docker_engine_restart() {
    require_docker();
    build_task_busybox();
    let mut engine = OwnEngine::start();
    // The image, in the test's engine (ecrl pushes it into its registry from there).
    let saved = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker save {} | DOCKER_HOST={} docker load -q",
            common::registry::TASK_BUSYBOX,
            engine.host()
        ))
        .output()
        .unwrap();
    assert!(saved.status.success(), "{}", stderr(&saved));
    let env = Env::new();
    let _daemon = env.spawn_daemon_with(&[], &[("DOCKER_HOST", &engine.host())]);
    let addr = registry_address(&env);
    // No network: the tasks need none.
    register_busybox_task(
        &env,
        &addr,
        "engine",
        "s",
        r#""stopTimeout":2,"command":["sleep","600"]"#,
    );
    let file = env.path().join("engine-none.json");
    let mut def: Value =
        serde_json::from_str(&env.ecrl_ok(&["task", "describe", "engine", "--output", "json"]))
            .unwrap();
    let mut def = def["taskDefinition"].take();
    def["networkMode"] = serde_json::json!("none");
    for key in [
        "taskDefinitionArn",
        "revision",
        "status",
        "registeredAt",
        "registeredBy",
        "requiresAttributes",
        "compatibilities",
        "deregisteredAt",
    ] {
        def.as_object_mut().unwrap().remove(key);
    }
    std::fs::write(&file, def.to_string()).unwrap();
    env.ecrl_ok(&["task", "register", "-f", file.to_str().unwrap(), "-q"]);
    env.ecrl_ok(&[
        "service",
        "create",
        "survivor",
        "--task-definition",
        "engine:2",
        "--desired-count",
        "2",
        "-q",
    ]);
    wait_for(&env, "survivor", "2 running", |s| steady(s, 2));
    let before: Vec<String> = running_tasks(&env, "survivor")
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect();

    // The engine goes down with the containers, and comes back.
    engine.stop();
    wait_for(&env, "survivor", "the tasks seen gone", |s| {
        s["runningCount"] == 0
    });
    engine.run();
    let s = wait_for(&env, "survivor", "2 running again", |s| steady(s, 2));
    let after: Vec<String> = running_tasks(&env, "survivor")
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(after.len(), 2, "{s:#}");
    assert!(
        after.iter().all(|t| !before.contains(t)),
        "new tasks: {after:?} {before:?}"
    );
    let running = engine.docker(&["ps", "-q"]);
    assert_eq!(
        String::from_utf8_lossy(&running.stdout)
            .split_whitespace()
            .count(),
        2
    );
    delete_and_wait(&env, "survivor");
}
