//! The task state machine on the scripted fake runtime (the real engine is exercised by the
//! system tests in tests/tasks.rs).

use super::*;
use crate::runtime::fake::FakeRuntime;
use ecrl::api::tasks::stop_code;

#[derive(Default)]
struct MemStore {
    tasks: Mutex<BTreeMap<String, Task>>,
}

#[async_trait]
impl TaskStore for MemStore {
    async fn save(&self, task: Task) -> Result<(), String> {
        self.tasks
            .lock()
            .unwrap()
            .insert(task.id().to_string(), task);
        Ok(())
    }
    fn get(&self, id: &str) -> Option<Task> {
        self.tasks.lock().unwrap().get(id).cloned()
    }
    fn all(&self) -> Vec<Task> {
        self.tasks.lock().unwrap().values().cloned().collect()
    }
    async fn delete(&self, id: &str) -> Result<(), String> {
        self.tasks.lock().unwrap().remove(id);
        Ok(())
    }
}

struct Fixture {
    runtime: Arc<FakeRuntime>,
    store: Arc<MemStore>,
    dir: tempfile::TempDir,
    manager: TaskManager,
}

async fn fixture() -> Fixture {
    let runtime = Arc::new(FakeRuntime::default());
    let store = Arc::new(MemStore::default());
    let dir = tempfile::tempdir().unwrap();
    let manager = manager(&runtime, &store, &dir);
    // A fresh daemon: nothing to take back.
    manager.recover().await;
    Fixture {
        runtime,
        store,
        dir,
        manager,
    }
}

fn manager(
    runtime: &Arc<FakeRuntime>,
    store: &Arc<MemStore>,
    dir: &tempfile::TempDir,
) -> TaskManager {
    TaskManager::new(Ctx {
        runtime: runtime.clone(),
        store: store.clone(),
        tasks_dir: dir.path().join("tasks"),
        arn_prefix: "arn:aws:ecs:us-east-1:123456789012:".into(),
        registry_auth: Arc::new(|| None),
        shared: false,
        secrets: Arc::new(crate::secrets::Secrets::new(
            Arc::new(
                crate::metadata::Metadata::open(dir.path(), |_| {
                    Ok(bytes::Bytes::from_static(b"{}"))
                })
                .unwrap(),
            ),
            None,
            "us-east-1",
        )),
        endpoint: None,
    })
}

fn plan(json: &str) -> TaskPlan {
    let definition = ecrl::taskdef::parse(json).unwrap();
    ecrl::taskdef::validate(&definition).unwrap();
    let images = definition
        .container_definitions
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                ResolvedImage {
                    reference: c.image.clone(),
                    digest: None,
                },
            )
        })
        .collect();
    TaskPlan {
        definition: TaskDefinition {
            task_definition_arn: format!(
                "arn:aws:ecs:us-east-1:123456789012:task-definition/{}:1",
                definition.family
            ),
            revision: 1,
            status: "ACTIVE".into(),
            registered_at: now_rfc3339(),
            deregistered_at: None,
            definition,
        },
        overrides: TaskOverride::default(),
        images,
        env: BTreeMap::new(),
        started_by: None,
        tags: Vec::new(),
        cluster: "default".into(),
        group: None,
    }
}

impl Fixture {
    async fn run(&self, json: &str) -> Task {
        let mut tasks = self.manager.run(plan(json), 1).await.unwrap();
        tasks.remove(0)
    }

    async fn wait_for(&self, id: &str, status: &str) -> Task {
        let status = status.to_string();
        let changes = self.manager.watch(id).await;
        let task = match changes {
            Some(rx) => tokio::time::timeout(
                Duration::from_secs(10),
                wait_until(rx, |t| t.last_status == status || t.is_stopped()),
            )
            .await
            .expect("the task reached the state in time"),
            None => self.manager.get(id).unwrap(),
        };
        assert_eq!(task.last_status, status, "{task:#?}");
        task
    }

    fn position(&self, call: &str) -> usize {
        let calls = self.runtime.calls();
        calls
            .iter()
            .position(|c| c == call)
            .unwrap_or_else(|| panic!("no call {call:?} in {calls:#?}"))
    }
}

fn container<'a>(task: &'a Task, name: &str) -> &'a Container {
    task.containers.iter().find(|c| c.name == name).unwrap()
}

const TWO_SLEEPERS: &str = r#"{"family":"f","containerDefinitions":[
    {"name":"a","image":"img","memory":8,"command":["sleep"]},
    {"name":"b","image":"img","memory":8,"command":["exit-after","100","3"]}]}"#;

#[tokio::test]
async fn an_essential_exit_stops_the_task_and_cleans_up() {
    let f = fixture().await;
    let task = f.run(TWO_SLEEPERS).await;
    assert_eq!(task.last_status, "PROVISIONING");
    let running = f.wait_for(task.id(), "RUNNING").await;
    assert!(running.started_at.is_some());
    let labels = f
        .runtime
        .network_labels(&format!("ecrl-task-{}", task.id()))
        .expect("the task has its own network");
    assert_eq!(labels[spec::LABEL_TASK_ID], task.id());
    let stopped = f.wait_for(task.id(), "STOPPED").await;
    assert_eq!(
        stopped.stop_code.as_deref(),
        Some(stop_code::ESSENTIAL_CONTAINER_EXITED)
    );
    assert!(stopped.stopped_reason.as_deref().unwrap().contains("(b)"));
    assert_eq!(container(&stopped, "b").exit_code, Some(3));
    assert_eq!(
        container(&stopped, "a").exit_code,
        Some(143),
        "a got SIGTERM"
    );
    assert_eq!(stopped.exit_code(), 3);
    assert!(stopped
        .containers
        .iter()
        .all(|c| c.last_status == "STOPPED"));
    assert!(
        f.runtime.container_names().is_empty(),
        "{:?}",
        f.runtime.calls()
    );
    let calls = f.runtime.calls();
    assert!(
        calls.iter().any(|c| c.starts_with("network create")),
        "{calls:?}"
    );
    assert!(
        calls.iter().any(|c| c.starts_with("network remove")),
        "{calls:?}"
    );
    // Saved as it is.
    assert_eq!(f.store.get(task.id()).unwrap(), stopped);
    // The plan is kept beside the logs.
    assert!(f
        .dir
        .path()
        .join("tasks")
        .join(task.id())
        .join(PLAN_FILE)
        .exists());
}

#[tokio::test]
async fn a_single_container_task_needs_no_network() {
    let f = fixture().await;
    let task = f
        .run(r#"{"family":"f","containerDefinitions":[{"name":"a","image":"img","memory":8,"command":["exit","0"]}]}"#)
        .await;
    let stopped = f.wait_for(task.id(), "STOPPED").await;
    assert_eq!(stopped.exit_code(), 0);
    assert!(!f.runtime.calls().iter().any(|c| c.starts_with("network")));
}

#[tokio::test]
async fn a_non_essential_failure_does_not_stop_the_task() {
    let f = fixture().await;
    let task = f
        .run(
            r#"{"family":"f","containerDefinitions":[
            {"name":"a","image":"img","memory":8,"command":["sleep"]},
            {"name":"b","image":"img","memory":8,"essential":false,"command":["exit","1"]}]}"#,
        )
        .await;
    f.wait_for(task.id(), "RUNNING").await;
    // b exits at once; the task keeps running.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now = f.manager.get(task.id()).unwrap();
    assert_eq!(now.last_status, "RUNNING");
    assert_eq!(container(&now, "b").exit_code, Some(1));
    assert_eq!(container(&now, "b").last_status, "STOPPED");
    let stopped = f.manager.stop(task.id(), "enough".into()).await.unwrap();
    assert_eq!(
        stopped.stop_code.as_deref(),
        Some(stop_code::USER_INITIATED)
    );
    assert_eq!(stopped.stopped_reason.as_deref(), Some("enough"));
    assert_eq!(stopped.exit_code(), 143, "a ended by SIGTERM");
}

#[tokio::test]
async fn healthy_dependency_waits_for_health_and_stop_runs_in_reverse() {
    let f = fixture().await;
    let task = f
        .run(
            r#"{"family":"f","containerDefinitions":[
            {"name":"client","image":"img","memory":8,"command":["sleep"],
             "dependsOn":[{"containerName":"web","condition":"HEALTHY"}]},
            {"name":"web","image":"img","memory":8,"command":["sleep"],
             "healthCheck":{"command":["CMD","true"],"interval":5}}]}"#,
        )
        .await;
    let running = f.wait_for(task.id(), "RUNNING").await;
    assert_eq!(container(&running, "web").health_status, "HEALTHY");
    assert_eq!(running.health_status, "HEALTHY");
    let web = running.containers.iter().find(|c| c.name == "web").unwrap();
    let web_name = format!("ecrl-f-1-web-{}", &task.id()[..12]);
    let client_name = format!("ecrl-f-1-client-{}", &task.id()[..12]);
    assert!(web.runtime_id.is_some());
    let web_spec = f.runtime.spec(&web_name).unwrap();
    assert!(web_spec.health.is_some());
    assert_eq!(web_spec.labels[spec::LABEL_CONTAINER], "web");
    assert!(
        f.position(&format!("start {web_name}")) < f.position(&format!("create {client_name}"))
    );
    f.manager.stop(task.id(), "done".into()).await.unwrap();
    let stop_client = f.position(&format!("stop {client_name} 30s"));
    let stop_web = f.position(&format!("stop {web_name} 30s"));
    assert!(stop_client < stop_web, "dependents stop first");
}

#[tokio::test]
async fn an_unhealthy_dependency_holds_the_dependent_until_its_start_timeout() {
    let f = fixture().await;
    let task = f
        .run(
            r#"{"family":"f","containerDefinitions":[
            {"name":"client","image":"img","memory":8,"command":["sleep"],"startTimeout":2,
             "dependsOn":[{"containerName":"web","condition":"HEALTHY"}]},
            {"name":"web","image":"img","memory":8,"command":["sleep"],
             "healthCheck":{"command":["CMD","false"]}}]}"#,
        )
        .await;
    let stopped = f.wait_for(task.id(), "STOPPED").await;
    assert_eq!(
        stopped.stop_code.as_deref(),
        Some(stop_code::TASK_FAILED_TO_START)
    );
    let reason = container(&stopped, "client").reason.clone().unwrap();
    assert!(
        reason.contains("web did not become healthy within its startTimeout of 2s"),
        "{reason}"
    );
    assert_eq!(container(&stopped, "web").health_status, "UNHEALTHY");
    assert!(f.runtime.container_names().is_empty());
}

#[tokio::test]
async fn success_and_complete_order_and_a_failed_success_stops_the_start() {
    let f = fixture().await;
    let task = f
        .run(r#"{"family":"f","containerDefinitions":[
            {"name":"app","image":"img","memory":8,"command":["exit-after","50","0"],
             "dependsOn":[{"containerName":"init","condition":"SUCCESS"},{"containerName":"other","condition":"COMPLETE"}]},
            {"name":"init","image":"img","memory":8,"essential":false,"command":["exit-after","100","0"]},
            {"name":"other","image":"img","memory":8,"essential":false,"command":["exit","7"]}]}"#)
        .await;
    let stopped = f.wait_for(task.id(), "STOPPED").await;
    assert_eq!(
        stopped.stop_code.as_deref(),
        Some(stop_code::ESSENTIAL_CONTAINER_EXITED)
    );
    assert_eq!(container(&stopped, "app").exit_code, Some(0));
    assert_eq!(container(&stopped, "other").exit_code, Some(7));
    assert_eq!(stopped.exit_code(), 0);
    let id12 = &task.id()[..12];
    assert!(
        f.position(&format!("create ecrl-f-1-app-{id12}"))
            > f.position(&format!("start ecrl-f-1-init-{id12}"))
    );

    let task = f
        .run(
            r#"{"family":"f","containerDefinitions":[
            {"name":"app","image":"img","memory":8,"command":["sleep"],
             "dependsOn":[{"containerName":"init","condition":"SUCCESS"}]},
            {"name":"init","image":"img","memory":8,"essential":false,"command":["exit","2"]}]}"#,
        )
        .await;
    let stopped = f.wait_for(task.id(), "STOPPED").await;
    assert_eq!(
        stopped.stop_code.as_deref(),
        Some(stop_code::TASK_FAILED_TO_START)
    );
    let reason = container(&stopped, "app").reason.clone().unwrap();
    assert!(reason.contains("init exited with code 2"), "{reason}");
    assert!(
        container(&stopped, "app").runtime_id.is_none(),
        "app never created"
    );
    assert_eq!(stopped.exit_code(), 1);
}

#[tokio::test]
async fn a_missing_image_fails_the_start_with_ecs_reason() {
    let f = fixture().await;
    let task = f
        .run(r#"{"family":"f","containerDefinitions":[{"name":"a","image":"missing:latest","memory":8,"command":["sleep"]}]}"#)
        .await;
    let stopped = f.wait_for(task.id(), "STOPPED").await;
    assert_eq!(
        stopped.stop_code.as_deref(),
        Some(stop_code::TASK_FAILED_TO_START)
    );
    let reason = stopped.stopped_reason.clone().unwrap();
    assert!(reason.starts_with("CannotPullContainerError:"), "{reason}");
    assert_eq!(reason.matches("missing:latest").count(), 1, "{reason}");
    assert!(container(&stopped, "a").reason.is_some());
    assert!(stopped.pull_started_at.is_some() && stopped.pull_stopped_at.is_some());
}

#[tokio::test]
async fn a_start_failure_names_the_engine_error() {
    let f = fixture().await;
    let task = f
        .run(r#"{"family":"f","containerDefinitions":[{"name":"a","image":"img","memory":8,"command":["sleep"],
            "ulimits":[{"name":"nofile","softLimit":30000,"hardLimit":30000}]}]}"#)
        .await;
    let stopped = f.wait_for(task.id(), "STOPPED").await;
    assert_eq!(
        stopped.stop_code.as_deref(),
        Some(stop_code::TASK_FAILED_TO_START)
    );
    let reason = container(&stopped, "a").reason.clone().unwrap();
    assert!(
        reason.starts_with("CannotStartContainerError:") && reason.contains("nofile"),
        "{reason}"
    );
    assert!(
        f.runtime.container_names().is_empty(),
        "the created container is removed"
    );
}

#[tokio::test]
async fn oom_is_reported_as_ecs_does() {
    let f = fixture().await;
    let task = f
        .run(r#"{"family":"f","containerDefinitions":[{"name":"a","image":"img","memory":8,"command":["oom"]}]}"#)
        .await;
    let stopped = f.wait_for(task.id(), "STOPPED").await;
    assert_eq!(container(&stopped, "a").exit_code, Some(137));
    assert_eq!(
        container(&stopped, "a").reason.as_deref(),
        Some(supervisor::OOM_REASON)
    );
    assert_eq!(stopped.exit_code(), 137);
}

#[tokio::test]
async fn stop_timeout_is_passed_to_the_engine() {
    let f = fixture().await;
    let task = f
        .run(r#"{"family":"f","containerDefinitions":[{"name":"a","image":"img","memory":8,"command":["sleep-ignore-term"],"stopTimeout":2}]}"#)
        .await;
    f.wait_for(task.id(), "RUNNING").await;
    let stopped = f.manager.stop(task.id(), "bye".into()).await.unwrap();
    assert_eq!(container(&stopped, "a").exit_code, Some(137));
    f.position(&format!("stop ecrl-f-1-a-{} 2s", &task.id()[..12]));
}

#[tokio::test]
async fn a_restarted_manager_supervises_running_tasks_again() {
    let f = fixture().await;
    let task = f
        .run(
            TWO_SLEEPERS
                .replace(r#"["exit-after","100","3"]"#, r#"["sleep"]"#)
                .as_str(),
        )
        .await;
    f.wait_for(task.id(), "RUNNING").await;
    // A new manager on the same store, runtime and directory: the daemon restarted.
    let again = manager(&f.runtime, &f.store, &f.dir);
    again.recover().await;
    let rx = again.watch(task.id()).await.expect("supervised again");
    assert_eq!(rx.borrow().last_status, "RUNNING");
    f.runtime
        .kill_externally(&format!("ecrl-f-1-b-{}", &task.id()[..12]), 9);
    let stopped = tokio::time::timeout(Duration::from_secs(10), wait_until(rx, |t| t.is_stopped()))
        .await
        .unwrap();
    assert_eq!(
        stopped.stop_code.as_deref(),
        Some(stop_code::ESSENTIAL_CONTAINER_EXITED)
    );
    assert_eq!(container(&stopped, "b").exit_code, Some(9));
    assert!(f.runtime.container_names().is_empty());
}

#[tokio::test]
async fn a_task_whose_containers_vanished_is_stopped_with_a_reason() {
    let f = fixture().await;
    let task = f
        .run(
            TWO_SLEEPERS
                .replace(r#"["exit-after","100","3"]"#, r#"["sleep"]"#)
                .as_str(),
        )
        .await;
    f.wait_for(task.id(), "RUNNING").await;
    for name in f.runtime.container_names() {
        f.runtime.vanish(&name);
    }
    let again = manager(&f.runtime, &f.store, &f.dir);
    again.recover().await;
    let stopped = again.get(task.id()).unwrap();
    assert_eq!(stopped.last_status, "STOPPED");
    assert!(
        stopped
            .stopped_reason
            .as_deref()
            .unwrap()
            .contains("vanished"),
        "{stopped:#?}"
    );
}

#[tokio::test]
async fn find_accepts_ids_prefixes_and_arns() {
    let f = fixture().await;
    let task = f
        .run(r#"{"family":"f","containerDefinitions":[{"name":"a","image":"img","memory":8,"command":["exit","0"]}]}"#)
        .await;
    let id = task.id().to_string();
    assert_eq!(f.manager.find(&id).unwrap().id(), id);
    assert_eq!(f.manager.find(&id[..8]).unwrap().id(), id);
    assert_eq!(f.manager.find(&task.task_arn).unwrap().id(), id);
    assert!(matches!(f.manager.find("zz"), Err(FindError::Invalid(_))));
    assert!(matches!(
        f.manager.find("abcdef0123"),
        Err(FindError::NotFound(_))
    ));
    f.wait_for(&id, "STOPPED").await;
    // Pruning keeps recent tasks and removes old ones with their files.
    assert_eq!(f.manager.prune(Duration::from_secs(3600)).await, 0);
    assert_eq!(f.manager.prune(Duration::ZERO).await, 1);
    assert!(f.manager.get(&id).is_none());
    assert!(!f.dir.path().join("tasks").join(&id).exists());
}

/// Task-level cpu and memory hold the containers together in a cgroup of the task's, made
/// before the first container and removed after the last; a task without them gets none.
#[tokio::test]
async fn task_level_limits_put_the_containers_in_one_cgroup() {
    let f = fixture().await;
    let task = f
        .run(r#"{"family":"f","cpu":"0.5 vCPU","memory":"64","containerDefinitions":[{"name":"a","image":"img","command":["sleep"]},{"name":"b","image":"img","memory":16,"command":["sleep"]}]}"#)
        .await;
    f.wait_for(task.id(), "RUNNING").await;
    let id = task.id();
    for (name, memory) in [("a", 64), ("b", 16)] {
        let spec = f
            .runtime
            .spec(&format!("ecrl-f-1-{name}-{}", &id[..12]))
            .unwrap();
        assert_eq!(spec.cgroup_parent, Some(format!("/ecrl/{id}")), "{name}");
        assert_eq!(spec.memory, Some(memory << 20), "{name}");
    }
    f.manager.stop(id, "bye".into()).await.unwrap();
    let made = f.position(&format!(
        "cgroup create {id} memory=Some({}) cpu=Some(512)",
        64 << 20
    ));
    assert!(made < f.position(&format!("create ecrl-f-1-a-{}", &id[..12])));
    let removed = f.position(&format!("cgroup remove {id}"));
    assert!(removed > f.position(&format!("remove ecrl-f-1-a-{}", &id[..12])));
    assert!(removed > f.position(&format!("remove ecrl-f-1-b-{}", &id[..12])));

    let plain = f
        .run(r#"{"family":"g","containerDefinitions":[{"name":"a","image":"img","memory":8,"command":["sleep"]}]}"#)
        .await;
    f.wait_for(plain.id(), "RUNNING").await;
    let spec = f
        .runtime
        .spec(&format!("ecrl-g-1-a-{}", &plain.id()[..12]))
        .unwrap();
    assert_eq!(spec.cgroup_parent, None);
    f.manager.stop(plain.id(), "bye".into()).await.unwrap();
    let calls = f.runtime.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.contains(plain.id()) && c.starts_with("cgroup")),
        "{calls:#?}"
    );
}
