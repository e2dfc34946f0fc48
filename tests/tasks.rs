//! Tasks on the real Docker engine: the real ecrld (its own data dir, registry on port 0),
//! the real ecrl binary, a busybox-static image pushed into ecrld and pulled from it by the
//! engine.

mod common;

use common::registry::{
    build_task_busybox, localhost, registry_address, require_docker, run, run_ok, unique,
    TASK_BUSYBOX,
};
use common::{stderr, stdout, Daemon, Env};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// The busybox-static image the tasks run, built once per machine (the build is cached) and
/// pushed into each test's ecrld.
const BUSYBOX: &str = TASK_BUSYBOX;

struct Tasks {
    env: Env,
    daemon: Option<Daemon>,
    registry: String,
    /// Families this test registers: what is left of them is removed at the end.
    families: std::cell::RefCell<Vec<String>>,
}

impl Tasks {
    /// A daemon with `busybox:1` in its registry.
    fn new() -> Self {
        require_docker();
        build_task_busybox();
        let env = Env::new();
        let daemon = env.spawn_daemon(&[]);
        let registry = registry_address(&env);
        env.ecrl_ok(&[
            "repo",
            "push",
            &format!("docker://{BUSYBOX}"),
            "busybox:1",
            "-q",
        ]);
        Tasks {
            env,
            daemon: Some(daemon),
            registry,
            families: Default::default(),
        }
    }

    fn host(&self) -> String {
        localhost(&self.registry)
    }

    /// Registers a definition (the family made unique) and answers `family:revision`.
    fn register(&self, mut definition: Value) -> String {
        let family = unique(definition["family"].as_str().unwrap());
        definition["family"] = json!(family);
        self.families.borrow_mut().push(family);
        let file = self.env.path().join(format!("{}.json", unique("def")));
        std::fs::write(&file, definition.to_string()).unwrap();
        let out = self
            .env
            .ecrl_ok(&["task", "register", "-f", file.to_str().unwrap(), "-q"]);
        out.trim().to_string()
    }

    fn ecrl(&self, args: &[&str]) -> Output {
        self.env.ecrl(args)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.env.ecrl_ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// Starts a task; answers its id.
    fn run(&self, family_revision: &str) -> String {
        task_id(&self.json(&["task", "run", family_revision])["tasks"][0])
    }

    /// `ecrl task run DEF --wait`: insists on the exit code; answers the stopped task and
    /// what was told on stderr.
    fn run_wait(&self, def: &str, code: i32) -> (Value, String) {
        let out = self.ecrl(&["task", "run", def, "--wait", "--output", "json"]);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{}\n{}",
            stdout(&out),
            stderr(&out)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (v["tasks"][0].clone(), stderr(&out))
    }

    fn inspect(&self, id: &str) -> Value {
        self.json(&["task", "inspect", id])["tasks"][0].clone()
    }

    /// Polls the task until `done` holds (or fails after `timeout`).
    fn until(&self, id: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let task = self.inspect(id);
            if done(&task) {
                return task;
            }
            assert!(Instant::now() < deadline, "task never got there: {task:#}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn logs(&self, id: &str, container: &str) -> String {
        stdout(
            &self
                .env
                .ecrl_command(&["task", "logs", id, "--container", container])
                .output()
                .unwrap(),
        )
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        // Whatever a failed test left in the engine goes.
        for family in self.families.borrow().iter() {
            let filter = format!("label=ecrl.task-family={family}");
            let ids = run("docker", &["ps", "-aq", "--filter", &filter]);
            for id in stdout(&ids).split_whitespace() {
                let _ = run("docker", &["rm", "-f", "-v", id]);
            }
            let nets = run("docker", &["network", "ls", "-q", "--filter", &filter]);
            for id in stdout(&nets).split_whitespace() {
                let _ = run("docker", &["network", "rm", id]);
            }
        }
        // The references the engine pulled from this test's registry (by digest: the CLI's
        // image listing does not show them, the image's RepoDigests do).
        let ids = stdout(&run("docker", &["images", "-q"]));
        let mut ids: Vec<&str> = ids.split_whitespace().collect();
        ids.sort_unstable();
        ids.dedup();
        if !ids.is_empty() {
            let mut args = vec![
                "image",
                "inspect",
                "--format",
                "{{range .RepoDigests}}{{println .}}{{end}}",
            ];
            args.extend(ids);
            let prefix = format!("{}/", self.host());
            let digests = stdout(&run("docker", &args));
            for reference in digests.lines().filter(|l| l.starts_with(&prefix)) {
                let _ = run("docker", &["rmi", reference]);
            }
        }
        drop(self.daemon.take());
    }
}

/// No container or network of the task is left in the engine.
fn assert_nothing_left(id: &str) {
    let filter = format!("label=ecrl.task-id={id}");
    let containers = run_ok("docker", &["ps", "-aq", "--filter", &filter]);
    assert!(
        containers.trim().is_empty(),
        "containers left: {containers}"
    );
    let networks = run_ok("docker", &["network", "ls", "-q", "--filter", &filter]);
    assert!(networks.trim().is_empty(), "networks left: {networks}");
}

/// A task's id: the last part of its ARN.
fn task_id(task: &Value) -> String {
    let arn = task["taskArn"].as_str().unwrap();
    arn.rsplit('/').next().unwrap().to_string()
}

fn container<'a>(task: &'a Value, name: &str) -> &'a Value {
    task["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {task:#}"))
}

fn http_get(port: u64) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port as u16)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

const WEB: &str =
    "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 80 -h /www";

#[test]
fn web_and_client_in_bridge_mode() {
    let t = Tasks::new();
    let def = t.register(json!({
        "family": "sample",
        "containerDefinitions": [
            {"name": "web", "image": "busybox:1", "memory": 64, "stopTimeout": 2,
             "command": ["sh", "-c", WEB],
             "portMappings": [{"containerPort": 80, "hostPort": 0}],
             "healthCheck": {"command": ["CMD-SHELL", "wget -q -O /dev/null http://localhost/ || exit 1"],
                             "interval": 5, "timeout": 2, "retries": 3}},
            {"name": "client", "image": "busybox:1", "memory": 32, "essential": false,
             "command": ["sh", "-c", "wget -q -O - http://web/ && echo client-done"],
             "dependsOn": [{"containerName": "web", "condition": "HEALTHY"}]}
        ]
    }));
    let id = t.run(&def);
    let task = t.until(&id, Duration::from_secs(60), |task| {
        container(task, "client")["lastStatus"] == "STOPPED"
    });
    assert_eq!(task["lastStatus"], "RUNNING", "{task:#}");
    assert_eq!(container(&task, "client")["exitCode"], 0, "{task:#}");
    assert_eq!(container(&task, "web")["healthStatus"], "HEALTHY");
    assert_eq!(task["healthStatus"], "HEALTHY");
    // The image was resolved to its digest in ecrl when the task started.
    let digest = container(&task, "web")["imageDigest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(digest.starts_with("sha256:"), "{task:#}");
    let client_log = t.logs(&id, "client");
    assert!(
        client_log.contains("hello-from-web") && client_log.contains("client-done"),
        "{client_log}"
    );
    // The web container answers on the host port the task reports.
    let binding = container(&task, "web")["networkBindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["bindIP"] == "0.0.0.0")
        .unwrap_or_else(|| panic!("no binding: {task:#}"))
        .clone();
    assert_eq!(binding["containerPort"], 80);
    let port = binding["hostPort"].as_u64().unwrap();
    assert_ne!(port, 0);
    let page = http_get(port).expect("web answers on the host");
    assert!(page.contains("hello-from-web"), "{page}");
    // ps shows it running.
    let ps = t.json(&["task", "ps", "--status", "RUNNING"]);
    assert!(ps["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["taskArn"] == task["taskArn"]));

    let stopped = t.json(&["task", "stop", &id, "--reason", "test over"]);
    assert_eq!(stopped["task"]["lastStatus"], "STOPPED");
    assert_eq!(stopped["task"]["stopCode"], "UserInitiated");
    assert_eq!(stopped["task"]["stoppedReason"], "test over");
    assert_nothing_left(&id);
    // Logs outlive the containers; without --container every line names its container.
    let all = stdout(&t.ecrl(&["task", "logs", &id]));
    assert!(
        all.lines()
            .any(|l| l.starts_with("client") && l.contains("hello-from-web")),
        "{all}"
    );
}

#[test]
fn awsvpc_containers_share_localhost() {
    let t = Tasks::new();
    let def = t.register(json!({
        "family": "vpc",
        "networkMode": "awsvpc",
        "containerDefinitions": [
            {"name": "web", "image": "busybox:1", "memory": 64, "essential": false, "stopTimeout": 2,
             "command": ["sh", "-c", WEB.replace("-p 80", "-p 8080")],
             "portMappings": [{"containerPort": 8080}]},
            {"name": "client", "image": format!("{}/busybox:1", t.host()), "memory": 32,
             "command": ["sh", "-c", "for i in $(seq 1 50); do wget -q -O - http://127.0.0.1:8080/ && exit 0; sleep 0.2; done; exit 1"],
             "dependsOn": [{"containerName": "web", "condition": "START"}]}
        ]
    }));
    let (task, _) = t.run_wait(&def, 0);
    let task = &task;
    assert_eq!(task["lastStatus"], "STOPPED");
    assert_eq!(task["stopCode"], "EssentialContainerExited");
    assert_eq!(task["networkMode"], "awsvpc");
    let id = &task_id(task);
    assert!(t.logs(id, "client").contains("hello-from-web"));
    assert_nothing_left(id);
}

#[test]
fn an_essential_exit_stops_the_task_and_wait_returns_its_code() {
    let t = Tasks::new();
    let def = t.register(json!({
        "family": "essential",
        "containerDefinitions": [
            {"name": "long", "image": "busybox:1", "memory": 32, "command": ["sleep", "300"], "stopTimeout": 2},
            {"name": "side", "image": "busybox:1", "memory": 32, "essential": false, "command": ["sh", "-c", "exit 5"]},
            {"name": "short", "image": "busybox:1", "memory": 32, "command": ["sh", "-c", "sleep 2; exit 3"]}
        ]
    }));
    let (task, err) = t.run_wait(&def, 3);
    let task = &task;
    assert_eq!(task["stopCode"], "EssentialContainerExited");
    assert!(task["stoppedReason"].as_str().unwrap().contains("short"));
    assert_eq!(container(task, "short")["exitCode"], 3);
    // The non-essential failure did not stop the task: "short" did, two seconds later.
    assert_eq!(container(task, "side")["exitCode"], 5);
    // The other essential container was stopped (SIGTERM, then SIGKILL after 1 s).
    let long = container(task, "long")["exitCode"].as_i64().unwrap();
    assert!(long == 137 || long == 143, "{task:#}");
    // State changes were told on stderr.
    assert!(err.contains("RUNNING") && err.contains("STOPPED"), "{err}");
    let id = &task_id(task);
    assert_nothing_left(id);
    // `task wait` on a stopped task answers at once with the same code.
    let again = t.ecrl(&["task", "wait", id, "-q"]);
    assert_eq!(again.status.code(), Some(3));
    // Waiting for RUNNING on a stopped task fails and says why.
    let running = t.ecrl(&["task", "wait", id, "--until", "RUNNING"]);
    assert_eq!(running.status.code(), Some(1));
    let err = stderr(&running);
    assert!(
        err.contains(&format!("error: task {id} stopped before reaching RUNNING"))
            && err.contains("short"),
        "{err}"
    );
}

#[test]
fn success_and_complete_dependencies_order_the_start() {
    let t = Tasks::new();
    let def = t.register(json!({
        "family": "order",
        "volumes": [{"name": "shared"}],
        "containerDefinitions": [
            {"name": "app", "image": "busybox:1", "memory": 32,
             "command": ["sh", "-c", "cat /data/marker /data/other"],
             "mountPoints": [{"sourceVolume": "shared", "containerPath": "/data"}],
             "dependsOn": [{"containerName": "init", "condition": "SUCCESS"},
                           {"containerName": "other", "condition": "COMPLETE"}]},
            {"name": "init", "image": "busybox:1", "memory": 32, "essential": false,
             "command": ["sh", "-c", "sleep 1; echo init-wrote-this > /data/marker"],
             "mountPoints": [{"sourceVolume": "shared", "containerPath": "/data"}]},
            {"name": "other", "image": "busybox:1", "memory": 32, "essential": false,
             "command": ["sh", "-c", "echo other-ran > /data/other; exit 4"],
             "mountPoints": [{"sourceVolume": "shared", "containerPath": "/data"}]}
        ]
    }));
    let (task, _) = t.run_wait(&def, 0);
    let id = task_id(&task);
    let log = t.logs(&id, "app");
    assert!(
        log.contains("init-wrote-this") && log.contains("other-ran"),
        "{log}"
    );
    assert_eq!(container(&task, "other")["exitCode"], 4);

    // SUCCESS on a container that fails: the dependent never starts, the task fails.
    let def = t.register(json!({
        "family": "order-fail",
        "containerDefinitions": [
            {"name": "app", "image": "busybox:1", "memory": 32, "command": ["true"],
             "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}]},
            {"name": "init", "image": "busybox:1", "memory": 32, "essential": false, "command": ["sh", "-c", "exit 2"]}
        ]
    }));
    let (task, _) = t.run_wait(&def, 1);
    let task = &task;
    assert_eq!(task["stopCode"], "TaskFailedToStart");
    let reason = container(task, "app")["reason"].as_str().unwrap();
    assert!(reason.contains("init exited with code 2"), "{reason}");
}

#[test]
fn bad_definitions_and_runs_fail_clearly() {
    let t = Tasks::new();
    let register = |def: Value| {
        let file = t.env.path().join(format!("{}.json", unique("bad")));
        std::fs::write(&file, def.to_string()).unwrap();
        t.ecrl(&["task", "register", "-f", file.to_str().unwrap()])
    };
    let c = |name: &str, extra: Value| {
        let mut v = json!({"name": name, "image": "busybox:1", "memory": 32});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    };
    let cases = [
        (
            json!({"family": "bad", "containerDefinitions": [
                c("a", json!({"dependsOn": [{"containerName": "b", "condition": "START"}]})),
                c("b", json!({"dependsOn": [{"containerName": "a", "condition": "START"}]}))]}),
            "cycle",
        ),
        (
            json!({"family": "bad", "containerDefinitions": [
                c("a", json!({"dependsOn": [{"containerName": "b", "condition": "COMPLETE"}]})),
                c("b", json!({}))]}),
            "containerDefinitions[0].dependsOn[0]",
        ),
        (
            json!({"family": "bad", "containerDefinitions": [c("a", json!({})), c("a", json!({}))]}),
            "containerDefinitions[1].name",
        ),
    ];
    for (def, expected) in cases {
        let out = register(def.clone());
        assert_eq!(out.status.code(), Some(1), "{def}");
        assert!(
            stderr(&out).contains(expected),
            "{expected}: {}",
            stderr(&out)
        );
    }
    let families = t.json(&["task", "families"]);
    assert_eq!(families["families"], json!([]), "nothing was stored");

    // An image ecrl should have and does not: refused before anything starts.
    let def = t.register(json!({"family": "noimg", "containerDefinitions": [
        {"name": "a", "image": format!("{}/nope:1", t.host()), "memory": 32}]}));
    let out = t.ecrl(&["task", "run", &def]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not found in ecrl"),
        "{}",
        stderr(&out)
    );
    assert_eq!(t.json(&["task", "ps"])["tasks"], json!([]));

    // An image the engine cannot find: the task fails to start and says why.
    let def = t.register(json!({"family": "noimg2", "containerDefinitions": [
        {"name": "a", "image": "ecrl-test/does-not-exist:1", "memory": 32}]}));
    let (task, _) = t.run_wait(&def, 1);
    assert_eq!(task["stopCode"], "TaskFailedToStart");
    let reason = task["stoppedReason"].as_str().unwrap();
    assert!(
        reason.starts_with("CannotPullContainerError") && reason.contains("does-not-exist"),
        "{reason}"
    );
    assert_eq!(
        reason.matches("ecrl-test/does-not-exist:1").count(),
        1,
        "the image is named once: {reason}"
    );

    // A ulimit above what the host allows.
    let def = t.register(json!({"family": "ulimit", "containerDefinitions": [
        {"name": "a", "image": "busybox:1", "memory": 32, "command": ["true"],
         "ulimits": [{"name": "nofile", "softLimit": 40000, "hardLimit": 40000}]}]}));
    let (task, _) = t.run_wait(&def, 1);
    let task = &task;
    assert_eq!(task["stopCode"], "TaskFailedToStart");
    let reason = container(task, "a")["reason"].as_str().unwrap();
    assert!(reason.contains("nofile"), "{reason}");
    let id = &task_id(task);
    assert_nothing_left(id);
}

/// Runs `def` to its end and checks that its `hog` container was killed for memory.
fn assert_oom_killed(t: &Tasks, def: &str) {
    let (task, _) = t.run_wait(def, 137);
    let hog = container(&task, "hog");
    assert_eq!(hog["exitCode"], 137);
    assert!(
        hog["reason"].as_str().unwrap().contains("OutOfMemory"),
        "{hog:#}"
    );
}

#[test]
fn memory_limit_is_enforced() {
    let t = Tasks::new();
    let def = t.register(json!({"family": "oom", "containerDefinitions": [
        {"name": "hog", "image": "busybox:1", "memory": 16, "command": ["tail", "/dev/zero"]}]}));
    assert_oom_killed(&t, &def);
}

/// A definition written for Fargate sets memory on the task only: its container is held to
/// it, not left unbounded.
#[test]
fn task_level_memory_holds_a_container_without_its_own() {
    let t = Tasks::new();
    let def = t.register(
        json!({"family": "oomtask", "memory": "16", "containerDefinitions": [
        {"name": "hog", "image": "busybox:1", "command": ["tail", "/dev/zero"]}]}),
    );
    assert_oom_killed(&t, &def);
}

/// The cgroup directories of a task, when the engine makes its containers' cgroups where
/// ecrld can make the task's (cgroupfs driver): the memory one and the cpu one, and every
/// hierarchy's, for the check that nothing is left. `None` (and why) on other engines.
fn task_cgroup_dirs(id: &str) -> Result<(PathBuf, PathBuf, Vec<PathBuf>), String> {
    let driver = run_ok(
        "docker",
        &["info", "--format", "{{.CgroupDriver}} {{.CgroupVersion}}"],
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let mut memory = None;
    let mut cpu = None;
    let mut all = Vec::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let dir = PathBuf::from(f[1]).join("ecrl").join(id);
        match (driver.trim(), f[2]) {
            ("cgroupfs 1", "cgroup") => {
                let options: Vec<&str> = f[3].split(',').collect();
                if options.contains(&"memory") {
                    memory = Some(dir.clone());
                }
                if options.contains(&"cpu") {
                    cpu = Some(dir.clone());
                }
                all.push(dir);
            }
            ("cgroupfs 1", "cgroup2") => all.push(dir),
            ("cgroupfs 2", "cgroup2") => return Ok((dir.clone(), dir.clone(), vec![dir])),
            _ => {}
        }
    }
    match (memory, cpu) {
        (Some(m), Some(c)) => Ok((m, c, all)),
        _ => Err(format!("the engine's cgroups are `{}`", driver.trim())),
    }
}

fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Task-level cpu and memory make a cgroup the containers run in, with the task's limits
/// (ECS's task cgroup); it goes with the task.
#[test]
fn task_level_limits_make_a_cgroup_that_goes_with_the_task() {
    let t = Tasks::new();
    let def = t.register(json!({"family": "tcg", "cpu": "512", "memory": "96",
        "containerDefinitions": [
        {"name": "a", "image": "busybox:1", "command": ["sleep", "600"], "stopTimeout": 2}]}));
    let id = t.run(&def);
    let (memory, cpu, all) = match task_cgroup_dirs(&id) {
        Ok(dirs) => dirs,
        Err(why) => {
            eprintln!("skipped: ecrl makes no task cgroup here: {why}");
            t.ecrl(&["task", "stop", &id]);
            return;
        }
    };
    let task = t.until(&id, Duration::from_secs(60), |v| {
        v["lastStatus"] == "RUNNING"
    });
    let runtime_id = container(&task, "a")["runtimeId"]
        .as_str()
        .unwrap()
        .to_string();
    let status = t.json(&["daemon", "status"]);
    assert!(
        status["taskLimits"]
            .as_str()
            .is_some_and(|s| s.starts_with("one cgroup per task")),
        "{status}"
    );
    if memory == cpu {
        assert_eq!(
            read_trimmed(&memory.join("memory.max")),
            (96u64 << 20).to_string()
        );
        assert_eq!(read_trimmed(&cpu.join("cpu.max")), "50000 100000");
    } else {
        assert_eq!(
            read_trimmed(&memory.join("memory.limit_in_bytes")),
            (96u64 << 20).to_string()
        );
        assert_eq!(read_trimmed(&cpu.join("cpu.cfs_quota_us")), "50000");
    }
    assert!(
        memory.join(&runtime_id).is_dir(),
        "the container's cgroup is not under the task's: {}",
        memory.display()
    );
    t.ecrl(&["task", "stop", &id]);
    t.until(&id, Duration::from_secs(60), |v| {
        v["lastStatus"] == "STOPPED"
    });
    for dir in &all {
        assert!(!dir.exists(), "left behind: {}", dir.display());
    }
}

/// The task's memory bounds its containers together: two that hold 40 MiB each fit alone in
/// a 64 MiB task, not both at once.
#[test]
fn task_level_memory_holds_the_containers_together() {
    let t = Tasks::new();
    // dd holds its 40 MiB buffer while it waits to write into a pipe nobody reads.
    let hold = "mkfifo /f; sleep 600 < /f & exec dd if=/dev/zero bs=40M count=1 > /f";
    let def = t.register(
        json!({"family": "tcgsum", "memory": "64", "containerDefinitions": [
        {"name": "a", "image": "busybox:1", "command": ["sh", "-c", hold], "stopTimeout": 2},
        {"name": "b", "image": "busybox:1", "command": ["sh", "-c", hold], "stopTimeout": 2,
         "dependsOn": [{"containerName": "a", "condition": "START"}]}]}),
    );
    let id = t.run(&def);
    if let Err(why) = task_cgroup_dirs(&id) {
        eprintln!("skipped: ecrl makes no task cgroup here: {why}");
        t.ecrl(&["task", "stop", &id]);
        return;
    }
    let task = t.until(&id, Duration::from_secs(90), |v| {
        v["lastStatus"] == "STOPPED"
    });
    assert_eq!(task["stopCode"], "EssentialContainerExited", "{task:#}");
    let killed: Vec<&Value> = task["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["reason"]
                .as_str()
                .is_some_and(|r| r.contains("OutOfMemory"))
        })
        .collect();
    assert!(!killed.is_empty(), "{task:#}");
    assert_eq!(killed[0]["exitCode"], 137, "{task:#}");
}

/// `ecrl task run --wait` ended by Ctrl-C, by SIGTERM (`timeout`, a cancelled CI job) or by
/// SIGHUP stops its task before it exits with the shell's code for the signal: no task is
/// left running behind a CI job that was cancelled.
#[test]
fn a_signal_to_task_run_wait_stops_the_task() {
    let t = Tasks::new();
    let def = t.register(json!({"family": "sig", "containerDefinitions": [
        {"name": "a", "image": "busybox:1", "memory": 32, "command": ["sleep", "600"],
         "stopTimeout": 2}]}));
    let family = def.split(':').next().unwrap().to_string();
    for (signal, code, name) in [
        (libc::SIGINT, 130, "Ctrl-C"),
        (libc::SIGTERM, 143, "SIGTERM"),
        (libc::SIGHUP, 129, "SIGHUP"),
    ] {
        let child = t
            .env
            .ecrl_command(&["task", "run", &def, "--wait", "--started-by", name])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let id = loop {
            let v = t.json(&["task", "ps", "--family", &family, "--started-by", name]);
            let running = v["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["lastStatus"] == "RUNNING")
                .map(task_id);
            if let Some(id) = running {
                break id;
            }
            assert!(Instant::now() < deadline, "the task never ran: {v:#}");
            std::thread::sleep(Duration::from_millis(200));
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{name}: {}", stderr(&out));
        let task = t.until(&id, Duration::from_secs(60), |v| {
            v["lastStatus"] == "STOPPED"
        });
        assert_eq!(task["stopCode"], "UserInitiated", "{task:#}");
        assert!(
            task["stoppedReason"].as_str().unwrap().contains(name),
            "{task:#}"
        );
    }
}

#[test]
fn stop_honours_stop_timeout_and_count_starts_independent_tasks() {
    let t = Tasks::new();
    let def = t.register(json!({"family": "stopper", "containerDefinitions": [
        // PID 1 ignores SIGTERM: only the kill after stopTimeout ends it.
        {"name": "a", "image": "busybox:1", "memory": 32, "command": ["sleep", "600"], "stopTimeout": 3}]}));
    let v = t.json(&[
        "task",
        "run",
        &def,
        "--count",
        "3",
        "--started-by",
        "tester",
    ]);
    let ids: Vec<String> = v["tasks"].as_array().unwrap().iter().map(task_id).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        3
    );
    for id in &ids {
        let out = t.ecrl(&["task", "wait", id, "--until", "RUNNING", "-q"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let ps = t.json(&[
        "task",
        "ps",
        "--started-by",
        "tester",
        "--status",
        "RUNNING",
    ]);
    assert_eq!(ps["tasks"].as_array().unwrap().len(), 3);

    let began = Instant::now();
    let stopped = t.json(&["task", "stop", &ids[0]]);
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert_eq!(container(&stopped["task"], "a")["exitCode"], 137);
    // The other two still run.
    for id in &ids[1..] {
        assert_eq!(t.inspect(id)["lastStatus"], "RUNNING");
        t.json(&["task", "stop", id]);
        assert_nothing_left(id);
    }
    assert_nothing_left(&ids[0]);
}

#[test]
fn a_restarted_daemon_supervises_its_running_tasks_again() {
    let mut t = Tasks::new();
    let def = t.register(json!({"family": "survivor", "containerDefinitions": [
        {"name": "a", "image": "busybox:1", "memory": 32, "stopTimeout": 2,
         "command": ["sh", "-c", "echo started; exec sleep 600"]}]}));
    let id = t.run(&def);
    t.until(&id, Duration::from_secs(30), |task| {
        task["lastStatus"] == "RUNNING"
    });
    // ecrld dies hard; the container does not.
    let mut daemon = t.daemon.take().unwrap();
    daemon.signal(libc::SIGKILL);
    daemon.wait(Duration::from_secs(10));
    t.daemon = Some(t.env.spawn_daemon(&[]));
    let task = t.until(&id, Duration::from_secs(20), |task| {
        task["version"].as_u64().is_some()
    });
    assert_eq!(task["lastStatus"], "RUNNING", "{task:#}");
    let stopped = t.json(&["task", "stop", &id]);
    assert_eq!(stopped["task"]["lastStatus"], "STOPPED");
    assert_eq!(stopped["task"]["stopCode"], "UserInitiated");
    assert_nothing_left(&id);
    assert!(t.logs(&id, "a").contains("started"));
}

/// `ecrl cluster` and `--cluster`: tasks run in the cluster named, which counts them, keeps
/// them across a restart of ecrld, and cannot go while one of them runs.
#[test]
fn tasks_run_in_clusters_that_survive_a_restart() {
    let mut t = Tasks::new();
    let def = t.register(json!({"family": "clustered", "containerDefinitions": [
        {"name": "a", "image": "busybox:1", "memory": 32, "stopTimeout": 2,
         "command": ["sleep", "600"]}]}));
    let created = t.json(&["cluster", "create", "batch", "--tag", "team=data"]);
    assert_eq!(created["clusters"][0]["clusterName"], "batch", "{created}");
    let out = t.ecrl(&["task", "run", &def, "--cluster", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cluster nope not found"),
        "{}",
        stderr(&out)
    );
    let ran = t.json(&["task", "run", &def, "--cluster", "batch"]);
    let task = &ran["tasks"][0];
    assert!(
        task["clusterArn"]
            .as_str()
            .unwrap()
            .ends_with(":cluster/batch"),
        "{task}"
    );
    assert!(
        task["taskArn"].as_str().unwrap().contains(":task/batch/"),
        "{task}"
    );
    let id = task_id(task);
    t.until(&id, Duration::from_secs(30), |task| {
        task["lastStatus"] == "RUNNING"
    });
    let elsewhere = t.json(&["task", "run", &def]);
    let other = task_id(&elsewhere["tasks"][0]);

    let mut daemon = t.daemon.take().unwrap();
    daemon.signal(libc::SIGTERM);
    daemon.wait(Duration::from_secs(30));
    t.daemon = Some(t.env.spawn_daemon(&[]));

    let ps = t.json(&["task", "ps", "--cluster", "batch"]);
    let ids: Vec<String> = ps["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(task_id)
        .collect();
    assert_eq!(ids, vec![id.clone()], "{ps}");
    let all = t.json(&["task", "ps"]);
    assert_eq!(all["tasks"].as_array().unwrap().len(), 2, "{all}");
    let described = t.json(&["cluster", "describe", "batch"]);
    let cluster = &described["clusters"][0];
    assert_eq!(cluster["tags"][0]["key"], "team", "{described}");
    let listed = stdout(&t.ecrl(&["cluster", "list"]));
    assert!(
        listed.contains("batch") && listed.contains("default"),
        "{listed}"
    );
    let out = t.ecrl(&["cluster", "describe", "batch", "ghost"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("cluster/ghost"), "{}", stderr(&out));

    let out = t.ecrl(&["cluster", "delete", "batch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot be deleted"),
        "{}",
        stderr(&out)
    );
    let out = t.ecrl(&["cluster", "delete", "default"]);
    assert_eq!(out.status.code(), Some(1));
    t.json(&["task", "stop", &id]);
    t.json(&["task", "stop", &other]);
    assert_nothing_left(&id);
    let gone = t.json(&["cluster", "delete", "batch"]);
    assert_eq!(gone["cluster"]["status"], "INACTIVE", "{gone}");
    let out = t.ecrl(&["task", "ps", "--cluster", "batch"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
}

#[test]
fn no_engine_is_a_clear_error() {
    let mut t = Tasks::new();
    let def = t.register(json!({"family": "noengine", "containerDefinitions": [
        {"name": "a", "image": "busybox:1", "memory": 32}]}));
    // A second daemon on the same data is refused; use another env whose engine is nowhere.
    drop(t.daemon.take());
    let mut command = t.env.ecrld_command(&[]);
    command.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    let log = std::fs::File::create(t.env.path().join("ecrld-noengine.log")).unwrap();
    let child = command
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _daemon = Daemon {
        child: Some(child),
        socket: t.env.socket(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(t.env.socket()).is_err() {
        assert!(Instant::now() < deadline, "ecrld did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The status says so, and why, without waiting for an engine that is not there.
    let began = Instant::now();
    let status = t.json(&["daemon", "status"]);
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    assert!(status.get("engine").is_none(), "{status}");
    assert!(status.get("taskLimits").is_none(), "{status}");
    let why = status["engineError"].as_str().unwrap_or_default();
    assert!(why.contains("/nonexistent/docker.sock"), "{status}");
    let table = t.env.ecrl_ok(&["daemon", "status"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("engine") && l.contains("unavailable: cannot reach")),
        "{table}"
    );
    let out = t.ecrl(&["task", "run", &def]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("Docker engine"), "{}", stderr(&out));
    assert_eq!(
        t.json(&["task", "ps"])["tasks"],
        json!([]),
        "nothing recorded"
    );
}

/// `2026-11-27T14:03:12.345Z`: RFC 3339, UTC, exactly three fractional digits.
fn is_printed_time(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// The times in a JSON value: the strings under keys that end in `At` or `Time`.
fn json_times(value: &Value, times: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match v.as_str() {
                    Some(s) if key.ends_with("At") || key.ends_with("Time") => {
                        times.push((key.clone(), s.to_string()))
                    }
                    _ => json_times(v, times),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| json_times(v, times)),
        _ => {}
    }
}

/// The times in a table: the words that start like a date and hold a `T`.
fn table_times(table: &str) -> Vec<String> {
    table
        .split_whitespace()
        .filter(|w| w.len() > 10 && w.as_bytes()[4] == b'-' && w.contains('T'))
        .filter(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_time_is_printed_to_the_millisecond_in_utc() {
    let t = Tasks::new();
    let def = t.register(json!({"family": "times", "containerDefinitions": [
        {"name": "a", "image": "busybox:1", "memory": 32, "command": ["true"]}]}));
    let (task, _) = t.run_wait(&def, 0);
    let id = task_id(&task);
    t.env.ecrl_ok(&["task", "deregister", &def, "-q"]);
    // A pull through the registry, for lastRecordedPullTime (the engine may have had the
    // image already).
    let pulled = reqwest::blocking::Client::new()
        .get(format!("http://{}/v2/busybox/manifests/1", t.registry))
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json, \
             application/vnd.oci.image.manifest.v1+json",
        )
        .send()
        .unwrap();
    assert!(pulled.status().is_success(), "{pulled:?}");

    let mut times = Vec::new();
    json_times(&task, &mut times);
    for args in [
        vec!["task", "inspect", id.as_str()],
        vec!["task", "ps"],
        vec!["task", "describe", def.as_str()],
        vec!["repo", "list"],
        vec!["repo", "describe", "busybox"],
        vec!["image", "describe", "busybox:1"],
        vec!["daemon", "status"],
    ] {
        json_times(&t.json(&args), &mut times);
        let mut yaml = args.clone();
        yaml.extend(["--output", "yaml"]);
        let yaml: Value = serde_yaml::from_str(&t.env.ecrl_ok(&yaml)).unwrap();
        json_times(&yaml, &mut times);
        for word in table_times(&t.env.ecrl_ok(&args)) {
            times.push((format!("{args:?} table"), word));
        }
    }
    for key in [
        "createdAt",
        "pullStartedAt",
        "pullStoppedAt",
        "startedAt",
        "stoppingAt",
        "stoppedAt",
        "registeredAt",
        "deregisteredAt",
        "imagePushedAt",
        "lastRecordedPullTime",
    ] {
        assert!(times.iter().any(|(k, _)| k == key), "no {key}: {times:?}");
    }
    let tables = times.iter().filter(|(k, _)| k.ends_with("table")).count();
    assert!(tables >= 8, "{times:?}");
    let odd: Vec<_> = times.iter().filter(|(_, v)| !is_printed_time(v)).collect();
    assert!(odd.is_empty(), "{odd:?}");
}

/// The keys of a key/value table: what each line holds before its two-space gap, up to the
/// first blank line (below it `task inspect` has its containers' table).
fn table_keys(table: &str) -> Vec<String> {
    table
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split("  ").next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn describe_inspect_and_status_tables_have_lowercase_keys() {
    let t = Tasks::new();
    let def = t.register(json!({"family": "keys", "containerDefinitions": [
        {"name": "a", "image": "busybox:1", "memory": 32, "command": ["true"]}]}));
    let (task, _) = t.run_wait(&def, 0);
    let id = task_id(&task);
    for args in [
        vec!["task", "inspect", id.as_str()],
        vec!["task", "describe", def.as_str()],
        vec!["repo", "describe", "busybox"],
        vec!["image", "describe", "busybox:1"],
        vec!["daemon", "status"],
    ] {
        let table = t.env.ecrl_ok(&args);
        let keys = table_keys(&table);
        assert!(keys.len() >= 4, "{args:?}: {table}");
        for key in keys {
            assert_eq!(key, key.to_lowercase(), "{args:?}: {table}");
        }
    }
}

/// Every file under `dir`, read whole (what ecrld keeps on disk).
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => {
                    if let Ok(bytes) = std::fs::read(&path) {
                        out.push((path, bytes));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn secrets_fill_the_environment_and_show_nowhere() {
    let t = Tasks::new();
    let put = |name: &str, value: &str| {
        let command = t
            .env
            .ecrl_command(&["secret", "put", name, "--value-stdin", "-q"]);
        let out = common::output_with_stdin(command, value);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    // The values the tests look for everywhere; none may show outside the container.
    let (password, key, param) = ("pw-7f3a9c1e", "key-52b8d40a", "param-e91c07f6");
    put(
        "prod/db",
        &format!(r#"{{"user":"app","password":"{password}"}}"#),
    );
    put("prod/db", r#"{"user":"app","password":"the-old-one"}"#);
    put(
        "prod/db",
        &format!(r#"{{"user":"app","password":"{password}"}}"#),
    );
    let file = t.env.path().join("key.txt");
    std::fs::write(&file, key).unwrap();
    t.env.ecrl_ok(&[
        "secret",
        "put",
        "api-key",
        "--file",
        file.to_str().unwrap(),
        "-q",
    ]);
    put("/prod/param", &format!("{param}\n"));

    let sm = "arn:aws:secretsmanager:us-east-1:111122223333:secret";
    let expected = {
        use sha2::Digest as _;
        let all = format!("{password}|the-old-one|app|{key}|{param}|{param}|visible");
        sha2::Sha256::digest(all.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let def = t.register(json!({
        "family": "secrets",
        "containerDefinitions": [{
            "name": "app", "image": "busybox:1", "memory": 32,
            // The values are compared by their hash: the definition must not hold them.
            "command": ["sh", "-c", format!(
                "printf '%s|%s|%s|%s|%s|%s|%s' \"$DB_PASSWORD\" \"$OLD\" \"$DB_USER\" \"$API_KEY\" \
                 \"$PARAM\" \"$PARAM_BY_NAME\" \"$PLAIN\" | sha256sum | grep -q {expected} \
                 && echo secrets-ok")],
            "environment": [{"name": "PLAIN", "value": "visible"}],
            "secrets": [
                // As copied from AWS: the random suffix, a JSON key.
                {"name": "DB_PASSWORD", "valueFrom": format!("{sm}:prod/db-AbC123:password::")},
                {"name": "OLD", "valueFrom": format!("{sm}:prod/db:password:AWSPREVIOUS:")},
                {"name": "DB_USER", "valueFrom": format!("{sm}:prod/db:user::")},
                {"name": "API_KEY", "valueFrom": format!("{sm}:api-key")},
                {"name": "PARAM", "valueFrom": "arn:aws:ssm:us-east-1:111122223333:parameter/prod/param"},
                {"name": "PARAM_BY_NAME", "valueFrom": "/prod/param"}
            ]
        }]
    }));
    let (task, _) = t.run_wait(&def, 0);
    let id = task_id(&task);
    assert!(
        t.logs(&id, "app").contains("secrets-ok"),
        "{}",
        t.logs(&id, "app")
    );

    // `secret get` shows a value; nothing else does.
    let got = t.json(&["secret", "get", "api-key"]);
    assert_eq!(got["SecretString"], key);
    assert_eq!(
        t.env.ecrl_ok(&["secret", "get", "api-key"]),
        format!("{key}\n")
    );
    let listed = t.json(&["secret", "list"]);
    let names: Vec<&str> = listed["SecretList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["/prod/param", "api-key", "prod/db"]);
    let outputs = [
        t.env.ecrl_ok(&["secret", "list"]),
        t.env.ecrl_ok(&["secret", "list", "--output", "json"]),
        t.env.ecrl_ok(&["task", "inspect", &id, "--output", "json"]),
        t.env.ecrl_ok(&["task", "inspect", &id]),
        t.env.ecrl_ok(&["task", "logs", &id]),
        t.env
            .ecrl_ok(&["task", "describe", &def, "--output", "json"]),
        t.env.ecrl_ok(&["events", "-n", "1000", "--output", "json"]),
    ];
    for value in [password, key, param] {
        for out in &outputs {
            assert!(!out.contains(value), "{value} shows in {out}");
        }
        // Nor in ecrld's log, nor anywhere in its data dir (metadata, plans, logs): sealed.
        for (path, bytes) in files_under(t.env.path()) {
            if path.extension().is_some_and(|e| e == "txt") {
                continue;
            }
            assert!(!contains(&bytes, value), "{value} is in {}", path.display());
        }
    }

    // A missing secret stops the task before any container is made, in ECS's words.
    let def = t.register(json!({
        "family": "missing",
        "containerDefinitions": [{
            "name": "app", "image": "busybox:1", "memory": 32, "command": ["true"],
            "secrets": [{"name": "X", "valueFrom": format!("{sm}:not/there")}]
        }]
    }));
    let out = t.ecrl(&["task", "run", &def, "--wait", "--output", "json"]);
    assert!(!out.status.success());
    let task: Value = serde_json::from_slice(&out.stdout).unwrap();
    let task = &task["tasks"][0];
    assert_eq!(task["stopCode"], "TaskFailedToStart", "{task:#}");
    let reason = task["stoppedReason"].as_str().unwrap();
    assert!(
        reason.starts_with("ResourceInitializationError: "),
        "{reason}"
    );
    assert!(
        reason.contains("not/there") && reason.contains("ResourceNotFoundException"),
        "{reason}"
    );
    assert!(container(task, "app")["runtimeId"].is_null(), "{task:#}");
    let def = t.register(json!({
        "family": "badkey",
        "containerDefinitions": [{
            "name": "app", "image": "busybox:1", "memory": 32, "command": ["true"],
            "secrets": [{"name": "X", "valueFrom": format!("{sm}:prod/db:nokey::")}]
        }]
    }));
    let (task, _) = t.run_wait(&def, 1);
    assert!(
        task["stoppedReason"]
            .as_str()
            .unwrap()
            .contains("did not contain json key nokey"),
        "{task:#}"
    );

    // Bad input: a clear error, nothing stored.
    let out = t.ecrl(&["secret", "put", "bad name", "--value-stdin"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("secret name"), "{}", stderr(&out));
    let out = t.ecrl(&["secret", "put", "x"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "no terminal, no value: {}",
        stderr(&out)
    );
    let out = t.ecrl(&["secret", "get", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no secret named \"nope\""),
        "{}",
        stderr(&out)
    );
    let names_after = t.json(&["secret", "list"])["SecretList"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(names_after, 3);
    t.env.ecrl_ok(&["secret", "delete", "api-key"]);
    assert_eq!(t.ecrl(&["secret", "get", "api-key"]).status.code(), Some(1));
    assert_nothing_left(&id);
}

/// `curl` of a URL: the body, and whether it answered 2xx.
fn curl(url: &str) -> (bool, String) {
    let out = run("curl", &["-s", "-f", "-m", "10", url]);
    (out.status.success(), stdout(&out))
}

/// A container's environment variable, as the engine holds it.
fn container_env(runtime_id: &str, name: &str) -> Option<String> {
    let out = run(
        "docker",
        &[
            "inspect",
            "--format",
            "{{range .Config.Env}}{{println .}}{{end}}",
            runtime_id,
        ],
    );
    let prefix = format!("{name}=");
    stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
}

#[test]
fn containers_read_their_own_task_metadata() {
    let t = Tasks::new();
    let def = t.register(json!({
        "family": "meta",
        "cpu": "256",
        "memory": "256",
        "containerDefinitions": [
            {"name": "app", "image": "busybox:1", "memory": 64, "cpu": 128, "stopTimeout": 2,
             "portMappings": [{"containerPort": 8080, "hostPort": 0}],
             "command": ["sh", "-c",
                "for i in $(seq 1 100); do \
                   wget -q -O - \"$ECS_CONTAINER_METADATA_URI_V4/task\" | grep -q '\"KnownStatus\":\"RUNNING\"' && break; \
                   sleep 0.1; done; \
                 wget -q -O - \"$ECS_CONTAINER_METADATA_URI_V4/task\" && echo && \
                 wget -q -O - \"$ECS_CONTAINER_METADATA_URI_V4\" && echo && \
                 wget -q -O - \"$ECS_CONTAINER_METADATA_URI/task\" >/dev/null && echo v3-ok && \
                 wget -q -O - \"$ECS_CONTAINER_METADATA_URI_V4/stats\" | grep -q memory_stats && echo stats-ok; \
                 sleep 300"]},
            {"name": "side", "image": "busybox:1", "memory": 32, "essential": false, "stopTimeout": 2,
             "command": ["sleep", "300"]}
        ]
    }));
    let id = t.run(&def);
    let task = t.until(&id, Duration::from_secs(60), |task| {
        task["lastStatus"] == "RUNNING"
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = loop {
        let log = t.logs(&id, "app");
        if log.contains("stats-ok") || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(log.contains("v3-ok") && log.contains("stats-ok"), "{log}");
    let mut docs = log.lines().filter(|l| l.starts_with('{'));
    let task_doc: Value = serde_json::from_str(docs.next().unwrap()).unwrap();
    let own: Value = serde_json::from_str(docs.next().unwrap()).unwrap();
    assert_eq!(task_doc["TaskARN"], task["taskArn"], "{task_doc:#}");
    assert_eq!(task_doc["Cluster"], task["clusterArn"]);
    assert_eq!(task_doc["Family"], def.split(':').next().unwrap());
    assert_eq!(task_doc["Revision"], def.split(':').nth(1).unwrap());
    assert_eq!(task_doc["KnownStatus"], "RUNNING");
    assert_eq!(task_doc["Limits"]["CPU"], 0.25);
    assert_eq!(task_doc["Limits"]["Memory"], 256);
    let names: Vec<&str> = task_doc["Containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app", "side"]);
    let app = container(&task, "app");
    assert_eq!(own["Name"], "app");
    assert_eq!(own["DockerId"], app["runtimeId"]);
    assert_eq!(own["ContainerARN"], app["containerArn"]);
    assert_eq!(own["KnownStatus"], "RUNNING");
    assert_eq!(own["Limits"]["CPU"], 128.0);
    assert_eq!(own["Limits"]["Memory"], 64);
    assert_eq!(own["Labels"]["com.amazonaws.ecs.task-arn"], task["taskArn"]);
    assert!(
        own["ImageID"].as_str().unwrap().starts_with("sha256:"),
        "{own:#}"
    );
    assert!(own["StartedAt"].is_string(), "{own:#}");
    let network = &own["Networks"][0];
    assert_eq!(network["NetworkMode"], "bridge", "{own:#}");
    assert!(
        network["IPv4Addresses"][0]
            .as_str()
            .is_some_and(|a| !a.is_empty()),
        "{own:#}"
    );
    let port = &own["Ports"][0];
    assert_eq!(port["ContainerPort"], 8080, "{own:#}");
    assert_eq!(
        port["HostPort"], app["networkBindings"][0]["hostPort"],
        "{own:#}\n{task:#}"
    );

    // The URL names its container and only ecrld makes one: a changed one is refused.
    let runtime_id = app["runtimeId"].as_str().unwrap();
    let url = container_env(runtime_id, "ECS_CONTAINER_METADATA_URI_V4").unwrap();
    assert!(url.starts_with("http://169.254.170.2:"), "{url}");
    let (ok, body) = curl(&url);
    assert!(ok, "{body}");
    let side = container(&task, "side")["runtimeId"]
        .as_str()
        .unwrap()
        .to_string();
    let side_url = container_env(&side, "ECS_CONTAINER_METADATA_URI_V4").unwrap();
    let (base, mac) = url.rsplit_once('.').unwrap();
    for forged in [
        format!("{base}.{}", "0".repeat(mac.len())),
        url.replace(".app.", ".side."),
        format!("{}/task", url.replace(&id, &"0".repeat(id.len()))),
        side_url.replace(".side.", ".app."),
    ] {
        let (ok, body) = curl(&forged);
        assert!(!ok, "{forged} answered {body}");
    }
    // No task role: no credentials, and none for an id ecrld did not make.
    assert_eq!(
        container_env(runtime_id, "AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        None
    );
    let base = &url[..url.find("/v4/").unwrap()];
    let (ok, _) = curl(&format!("{base}/v2/credentials/{id}.{}", "0".repeat(32)));
    assert!(!ok);
    // Other doors of the endpoint: only GET, and the AWS API signed as anywhere.
    let status = |args: &[&str]| {
        let mut all = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "10"];
        all.extend(args);
        stdout(&run("curl", &all))
    };
    assert_eq!(status(&["-X", "PUT", &url]), "405");
    let target = "X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.DescribeRepositories";
    assert_eq!(
        status(&["-X", "POST", "-H", target, &format!("{base}/")]),
        "403"
    );
    t.env.ecrl_ok(&["task", "stop", &id]);
    assert_nothing_left(&id);
}

#[test]
fn log_configuration_goes_to_the_engine_or_to_ecrl() {
    let t = Tasks::new();
    let def = t.register(json!({
        "family": "logs",
        "containerDefinitions": [
            {"name": "app", "image": "busybox:1", "memory": 32,
             "command": ["sh", "-c", "echo line-one; echo line-two; sleep 3"],
             "logConfiguration": {"logDriver": "awslogs", "options": {
                 "awslogs-group": "/ecs/web", "awslogs-region": "us-east-1",
                 "awslogs-stream-prefix": "web"}}},
            {"name": "engine", "image": "busybox:1", "memory": 32, "essential": false,
             "stopTimeout": 2, "command": ["sh", "-c", "echo via-json-file; sleep 30"],
             "logConfiguration": {"logDriver": "json-file", "options": {
                 "max-size": "1m", "max-file": 2}}}
        ]
    }));
    let id = t.run(&def);
    let task = t.until(&id, Duration::from_secs(60), |task| {
        task["lastStatus"] == "RUNNING"
    });
    // Any driver but awslogs is the engine's, with its options.
    let engine = container(&task, "engine")["runtimeId"]
        .as_str()
        .unwrap()
        .to_string();
    let config = stdout(&run(
        "docker",
        &[
            "inspect",
            "--format",
            "{{json .HostConfig.LogConfig}}",
            &engine,
        ],
    ));
    let config: Value = serde_json::from_str(config.trim()).unwrap();
    assert_eq!(config["Type"], "json-file", "{config}");
    assert_eq!(config["Config"]["max-size"], "1m", "{config}");
    assert_eq!(config["Config"]["max-file"], "2", "{config}");
    let task = t.until(&id, Duration::from_secs(60), |task| {
        task["lastStatus"] == "STOPPED"
    });
    assert_eq!(task["stopCode"], "EssentialContainerExited", "{task:#}");

    // awslogs: kept by ecrl, by group and stream (PREFIX/CONTAINER/TASK-ID).
    let stream = format!("web/app/{id}");
    let streams = t.json(&["logs", "/ecs/web", "--streams"]);
    assert_eq!(
        streams["logStreams"].as_array().unwrap().len(),
        1,
        "{streams:#}"
    );
    assert_eq!(streams["logStreams"][0]["logStreamName"], stream);
    assert_eq!(streams["logStreams"][0]["containerName"], "app");
    assert_eq!(
        t.env.ecrl_ok(&["logs", "/ecs/web", &stream]),
        "line-one\nline-two\n"
    );
    let all = t.env.ecrl_ok(&["logs", "/ecs/web"]);
    assert_eq!(all, "line-one\nline-two\n");
    let json = t.env.ecrl_ok(&["logs", "/ecs/web", "--output", "json"]);
    let first: Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(
        first,
        json!({"logStreamName": stream, "message": "line-one"})
    );
    assert!(t.logs(&id, "engine").contains("via-json-file"));
    // Unknown streams and groups: a clear error.
    let out = t.ecrl(&["logs", "/ecs/web", "web/app/nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no stream web/app/nope"),
        "{}",
        stderr(&out)
    );
    let out = t.ecrl(&["logs", "/ecs/none"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("has no streams"), "{}", stderr(&out));
    assert_nothing_left(&id);
}
