//! ECS on the AWS API door, driven by the real AWS CLI v1 and boto3 (tests/run installs them
//! into a venv named by `ECRL_TEST_AWS_VENV`): task definitions, tasks that really run on
//! dockerd from an image pushed into ecrl, clusters, tags, ECS's error types, IAM decisions
//! (also that RunTask cannot run an image its caller may not pull), and every response
//! checked against botocore's model of ECS.

mod common;

use common::aws::{Aws, BOTO3_PRELUDE};
use common::registry::{build_task_busybox, require_docker, TASK_BUSYBOX};
use serde_json::{json, Value};
use std::process::Command;

/// The busybox-static image the tasks run, built once per machine (the build is cached).
const BUSYBOX: &str = TASK_BUSYBOX;

const ECS_AND_ECR: &str = r#"{"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["ecs:*", "ecr:*"], "Resource": "*"}]}"#;

/// A daemon that requires credentials, with `busybox:1` in its registry.
fn start() -> Aws {
    require_docker();
    build_task_busybox();
    let t = Aws::start();
    t.env.ecrl_ok(&[
        "repo",
        "push",
        &format!("docker://{BUSYBOX}"),
        "busybox:1",
        "-q",
    ]);
    t
}

/// Writes `value` into the test's directory: its `file://` URL for `--cli-input-json`.
fn input_file(t: &Aws, name: &str, value: &Value) -> String {
    let file = t.env.path().join(name);
    std::fs::write(&file, value.to_string()).unwrap();
    format!("file://{}", file.display())
}

fn web_definition(family: &str) -> Value {
    json!({
        "family": family,
        "containerDefinitions": [{
            "name": "app", "image": "busybox:1", "memory": 32, "stopTimeout": 2,
            "command": ["sleep", "300"],
            "portMappings": [{"containerPort": 8080, "hostPort": 0}]
        }],
        "tags": [{"key": "team", "value": "web"}]
    })
}

fn arns(list: &Value) -> Vec<String> {
    let mut out: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

/// Removes what the tasks left in dockerd (a failed test must not leave containers running).
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in &self.0 {
            let filter = format!("label=ecrl.task-id={id}");
            if let Ok(out) = Command::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output()
            {
                for c in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("docker").args(["rm", "-f", c]).output();
                }
            }
        }
    }
}

#[test]
fn the_aws_cli_registers_runs_and_stops_tasks_in_clusters() {
    let t = start();
    let ops = t.user("ops", ECS_AND_ECR);
    let ecs = |args: &[&str]| -> Value {
        let mut all = vec!["ecs"];
        all.extend_from_slice(args);
        t.aws_ok(&ops, &all)
    };
    let ecs_fails = |args: &[&str], kind: &str| -> String {
        let mut all = vec!["ecs"];
        all.extend_from_slice(args);
        t.aws_fails(&ops, &all, kind)
    };

    // Task definitions.
    let file = input_file(&t, "web.json", &web_definition("web"));
    let registered = ecs(&["register-task-definition", "--cli-input-json", &file]);
    let td = &registered["taskDefinition"];
    assert_eq!(td["family"], "web", "{registered}");
    assert_eq!(td["revision"], 1, "{registered}");
    assert_eq!(td["status"], "ACTIVE", "{registered}");
    assert!(
        td["registeredAt"].is_number(),
        "epoch seconds: {registered}"
    );
    assert!(td.get("tags").is_none(), "tags go beside it: {registered}");
    assert_eq!(registered["tags"][0]["key"], "team", "{registered}");
    let td_arn = td["taskDefinitionArn"].as_str().unwrap().to_string();
    assert!(td_arn.ends_with(":task-definition/web:1"), "{td_arn}");
    let described = ecs(&[
        "describe-task-definition",
        "--task-definition",
        "web",
        "--include",
        "TAGS",
    ]);
    assert_eq!(described["taskDefinition"]["taskDefinitionArn"], td_arn);
    assert_eq!(described["tags"][0]["value"], "web", "{described}");
    let plain = ecs(&["describe-task-definition", "--task-definition", "web:1"]);
    assert!(plain.get("tags").is_none(), "tags only when asked: {plain}");
    ecs_fails(
        &["describe-task-definition", "--task-definition", "nope"],
        "ClientException",
    );
    let bad = input_file(
        &t,
        "bad.json",
        &json!({"family": "bad", "containerDefinitions": []}),
    );
    ecs_fails(
        &["register-task-definition", "--cli-input-json", &bad],
        "ClientException",
    );
    ecs(&["register-task-definition", "--cli-input-json", &file]);
    let listed = ecs(&["list-task-definitions", "--family-prefix", "web"]);
    assert_eq!(listed["taskDefinitionArns"].as_array().unwrap().len(), 2);
    let desc = ecs(&["list-task-definitions", "--sort", "DESC"]);
    assert!(
        desc["taskDefinitionArns"][0]
            .as_str()
            .unwrap()
            .ends_with("web:2"),
        "{desc}"
    );
    let families = ecs(&["list-task-definition-families", "--family-prefix", "we"]);
    assert_eq!(families["families"], json!(["web"]), "{families}");

    // Clusters.
    let created = ecs(&[
        "create-cluster",
        "--cluster-name",
        "batch",
        "--tags",
        "key=team,value=data",
    ]);
    assert_eq!(created["cluster"]["clusterName"], "batch", "{created}");
    assert_eq!(created["cluster"]["status"], "ACTIVE", "{created}");
    let cluster_arn = created["cluster"]["clusterArn"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(cluster_arn.ends_with(":cluster/batch"), "{cluster_arn}");
    let clusters = ecs(&["list-clusters"]);
    assert_eq!(arns(&clusters["clusterArns"]).len(), 2, "{clusters}");
    assert!(
        clusters["clusterArns"]
            .to_string()
            .contains("cluster/default"),
        "default always exists: {clusters}"
    );
    let described = ecs(&[
        "describe-clusters",
        "--clusters",
        "batch",
        "nope",
        "--include",
        "TAGS",
    ]);
    assert_eq!(described["clusters"][0]["tags"][0]["value"], "data");
    assert_eq!(described["failures"][0]["reason"], "MISSING", "{described}");
    assert!(
        described["failures"][0]["arn"]
            .as_str()
            .unwrap()
            .ends_with("cluster/nope"),
        "{described}"
    );
    let default = ecs(&["describe-clusters"]);
    assert_eq!(
        default["clusters"][0]["clusterName"], "default",
        "{default}"
    );
    ecs_fails(
        &["run-task", "--cluster", "nope", "--task-definition", "web"],
        "ClusterNotFoundException",
    );

    // Two tasks in the cluster, really running.
    let ran = ecs(&[
        "run-task",
        "--cluster",
        "batch",
        "--task-definition",
        "web:1",
        "--count",
        "2",
        "--started-by",
        "ci-job-7",
        "--group",
        "nightly",
        "--tags",
        "key=job,value=7",
    ]);
    let tasks = ran["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "{ran}");
    assert_eq!(ran["failures"], json!([]), "{ran}");
    let task_arns: Vec<String> = tasks
        .iter()
        .map(|t| t["taskArn"].as_str().unwrap().to_string())
        .collect();
    let _cleanup = Cleanup(
        task_arns
            .iter()
            .map(|a| a.rsplit('/').next().unwrap().to_string())
            .collect(),
    );
    for task in tasks {
        assert_eq!(task["clusterArn"], cluster_arn, "{task}");
        assert_eq!(task["taskDefinitionArn"], td_arn, "{task}");
        assert_eq!(task["group"], "nightly", "{task}");
        assert_eq!(task["startedBy"], "ci-job-7", "{task}");
        assert!(
            task["taskArn"].as_str().unwrap().contains(":task/batch/"),
            "{task}"
        );
    }
    let mut wait = vec!["wait", "tasks-running", "--cluster", "batch", "--tasks"];
    wait.extend(task_arns.iter().map(String::as_str));
    ecs(&wait);
    let ids: Vec<&str> = task_arns
        .iter()
        .map(|a| a.rsplit('/').next().unwrap())
        .collect();
    // By ARN and by id; one that is not there comes back in failures.
    let described = ecs(&[
        "describe-tasks",
        "--cluster",
        "batch",
        "--tasks",
        &task_arns[0],
        ids[1],
        "0123456789abcdef0123456789abcdef",
        "--include",
        "TAGS",
    ]);
    let found = described["tasks"].as_array().unwrap();
    assert_eq!(found.len(), 2, "{described}");
    for task in found {
        assert_eq!(task["lastStatus"], "RUNNING", "{task}");
        assert_eq!(task["desiredStatus"], "RUNNING", "{task}");
        assert_eq!(task["tags"][0]["key"], "job", "{task}");
        assert!(task["createdAt"].is_number(), "{task}");
        let container = &task["containers"][0];
        assert_eq!(container["lastStatus"], "RUNNING", "{task}");
        assert_eq!(container["networkBindings"][0]["containerPort"], 8080);
        assert!(
            container["networkBindings"][0]["hostPort"]
                .as_u64()
                .unwrap()
                > 0
        );
        assert!(task.get("networkMode").is_none(), "{task}");
    }
    assert_eq!(described["failures"][0]["reason"], "MISSING", "{described}");
    // A task is found only through its own cluster.
    let elsewhere = ecs(&["describe-tasks", "--tasks", &task_arns[0]]);
    assert_eq!(elsewhere["tasks"], json!([]), "{elsewhere}");
    assert_eq!(elsewhere["failures"][0]["reason"], "MISSING");

    // Listings and counts.
    let listed = ecs(&["list-tasks", "--cluster", "batch"]);
    assert_eq!(arns(&listed["taskArns"]), {
        let mut a = task_arns.clone();
        a.sort();
        a
    });
    let by_family = ecs(&["list-tasks", "--cluster", "batch", "--family", "web"]);
    assert_eq!(by_family["taskArns"].as_array().unwrap().len(), 2);
    let by_other = ecs(&["list-tasks", "--cluster", "batch", "--started-by", "other"]);
    assert_eq!(by_other["taskArns"], json!([]));
    let in_default = ecs(&["list-tasks"]);
    assert_eq!(in_default["taskArns"], json!([]), "{in_default}");
    let paged = ecs(&[
        "list-tasks",
        "--cluster",
        "batch",
        "--max-items",
        "1",
        "--page-size",
        "1",
    ]);
    assert_eq!(paged["taskArns"].as_array().unwrap().len(), 1, "{paged}");
    assert!(paged["NextToken"].is_string(), "{paged}");
    let counted = ecs(&["describe-clusters", "--clusters", &cluster_arn]);
    assert_eq!(counted["clusters"][0]["runningTasksCount"], 2, "{counted}");
    assert_eq!(counted["clusters"][0]["pendingTasksCount"], 0, "{counted}");
    assert_eq!(
        counted["clusters"][0]["activeServicesCount"], 0,
        "{counted}"
    );
    ecs_fails(
        &["delete-cluster", "--cluster", "batch"],
        "ClusterContainsTasksException",
    );
    // The same tasks and cluster through ecrl's own CLI.
    let ps: Value = serde_json::from_str(&t.env.ecrl_ok(&[
        "task",
        "ps",
        "--cluster",
        "batch",
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(ps["tasks"].as_array().map_or(0, Vec::len), 2, "{ps}");
    let shown: Value = serde_json::from_str(
        &t.env
            .ecrl_ok(&["cluster", "describe", "batch", "--output", "json"]),
    )
    .unwrap();
    assert_eq!(shown["clusters"][0]["runningTasksCount"], 2, "{shown}");

    // Tags on a task and a cluster, by ARN.
    ecs(&[
        "tag-resource",
        "--resource-arn",
        &task_arns[0],
        "--tags",
        "key=owner,value=me",
    ]);
    let tags = ecs(&["list-tags-for-resource", "--resource-arn", &task_arns[0]]);
    assert_eq!(
        tags["tags"],
        json!([{"key": "job", "value": "7"}, {"key": "owner", "value": "me"}])
    );
    ecs(&[
        "untag-resource",
        "--resource-arn",
        &task_arns[0],
        "--tag-keys",
        "job",
    ]);
    let tags = ecs(&["list-tags-for-resource", "--resource-arn", &task_arns[0]]);
    assert_eq!(tags["tags"], json!([{"key": "owner", "value": "me"}]));
    let tags = ecs(&["list-tags-for-resource", "--resource-arn", &td_arn]);
    assert_eq!(tags["tags"], json!([{"key": "team", "value": "web"}]));
    ecs(&[
        "untag-resource",
        "--resource-arn",
        &cluster_arn,
        "--tag-keys",
        "team",
    ]);
    let tags = ecs(&["list-tags-for-resource", "--resource-arn", &cluster_arn]);
    assert_eq!(tags["tags"], json!([]));
    let service = cluster_arn.replace(":cluster/batch", ":service/x");
    ecs_fails(
        &["list-tags-for-resource", "--resource-arn", &service],
        "InvalidParameterException",
    );

    // Stopped, by the user, and waited for.
    let stopped = ecs(&[
        "stop-task",
        "--cluster",
        "batch",
        "--task",
        &task_arns[0],
        "--reason",
        "done for today",
    ]);
    assert_eq!(
        stopped["task"]["stoppedReason"], "done for today",
        "{stopped}"
    );
    ecs(&["stop-task", "--cluster", "batch", "--task", ids[1]]);
    let mut wait = vec!["wait", "tasks-stopped", "--cluster", "batch", "--tasks"];
    wait.extend(task_arns.iter().map(String::as_str));
    ecs(&wait);
    let described = ecs(&["describe-tasks", "--cluster", "batch", "--tasks", ids[0]]);
    let task = &described["tasks"][0];
    assert_eq!(task["lastStatus"], "STOPPED", "{task}");
    assert_eq!(task["stopCode"], "UserInitiated", "{task}");
    assert!(task["stoppedAt"].is_number(), "{task}");
    assert!(task["containers"][0].get("exitCode").is_some(), "{task}");
    let stopped = ecs(&[
        "list-tasks",
        "--cluster",
        "batch",
        "--desired-status",
        "STOPPED",
    ]);
    assert_eq!(stopped["taskArns"].as_array().unwrap().len(), 2);
    assert_eq!(
        ecs(&["list-tasks", "--cluster", "batch"])["taskArns"],
        json!([])
    );
    ecs_fails(
        &[
            "stop-task",
            "--cluster",
            "batch",
            "--task",
            "0123456789abcdef",
        ],
        "InvalidParameterException",
    );

    // The cluster goes once its tasks have stopped; default never goes.
    let deleted = ecs(&["delete-cluster", "--cluster", "batch"]);
    assert_eq!(deleted["cluster"]["status"], "INACTIVE", "{deleted}");
    ecs_fails(
        &["run-task", "--cluster", "batch", "--task-definition", "web"],
        "ClusterNotFoundException",
    );
    ecs_fails(
        &["delete-cluster", "--cluster", "default"],
        "InvalidParameterException",
    );

    // Deregistered: cannot run; then deleted.
    let gone = ecs(&["deregister-task-definition", "--task-definition", "web:1"]);
    assert_eq!(gone["taskDefinition"]["status"], "INACTIVE", "{gone}");
    ecs_fails(
        &["run-task", "--task-definition", "web:1"],
        "ClientException",
    );
    let deleted = ecs(&[
        "delete-task-definitions",
        "--task-definitions",
        "web:1",
        "web:2",
    ]);
    assert_eq!(
        deleted["taskDefinitions"][0]["status"], "DELETE_IN_PROGRESS",
        "{deleted}"
    );
    assert!(
        deleted["failures"][0]["arn"]
            .as_str()
            .unwrap()
            .ends_with("web:2"),
        "web:2 is ACTIVE: {deleted}"
    );
    let inactive = ecs(&["list-task-definitions", "--status", "INACTIVE"]);
    assert_eq!(inactive["taskDefinitionArns"], json!([]), "{inactive}");
}

/// IAM decides every operation on the resource's ARN; RunTask also needs the image pulls.
#[test]
fn ecs_operations_are_decided_by_policies_and_tasks_cannot_pull_for_their_starter() {
    let t = start();
    let ops = t.user("ops", ECS_AND_ECR);
    // May do everything in ECS, nothing in ECR: it cannot pull busybox, so it must not run
    // it either.
    let runner = t.user(
        "runner",
        r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ecs:*", "Resource": "*"}]}"#,
    );
    let viewer = t.user(
        "viewer",
        r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["ecs:Describe*", "ecs:List*", "ecr:BatchGetImage"],
             "Resource": "*"}]}"#,
    );
    let scoped = t.user(
        "scoped",
        r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ecs:DescribeTaskDefinition",
             "Resource": "arn:aws:ecs:*:*:task-definition/web:*"}]}"#,
    );
    for family in ["web", "api"] {
        let file = input_file(&t, &format!("{family}.json"), &web_definition(family));
        t.aws_ok(
            &ops,
            &["ecs", "register-task-definition", "--cli-input-json", &file],
        );
    }
    let denied = t.aws_fails(
        &viewer,
        &["ecs", "run-task", "--task-definition", "web"],
        "AccessDeniedException",
    );
    assert!(denied.contains("ecs:RunTask"), "{denied}");
    t.aws_fails(
        &viewer,
        &["ecs", "create-cluster", "--cluster-name", "x"],
        "AccessDeniedException",
    );
    let refused = t.aws_fails(
        &runner,
        &[
            "ecs",
            "run-task",
            "--task-definition",
            "web",
            "--count",
            "3",
        ],
        "AccessDeniedException",
    );
    assert!(refused.contains("ecr:BatchGetImage"), "{refused}");
    assert!(refused.contains("busybox"), "{refused}");
    t.aws_fails(
        &runner,
        &[
            "ecs",
            "start-task",
            "--task-definition",
            "web",
            "--container-instances",
            "local",
        ],
        "AccessDeniedException",
    );
    // A task that reaches into the host (a host path mounted, a file the daemon would read
    // into its environment) is the owner's to run: a user is refused, whatever its policy.
    let mut escape = web_definition("escape");
    escape["volumes"] = json!([{"name": "root", "host": {"sourcePath": "/"}}]);
    escape["containerDefinitions"][0]["mountPoints"] =
        json!([{"sourceVolume": "root", "containerPath": "/host"}]);
    escape["containerDefinitions"][0]["environmentFiles"] =
        json!([{"value": "/etc/hostname", "type": "s3"}]);
    let file = input_file(&t, "escape.json", &escape);
    t.aws_ok(
        &ops,
        &["ecs", "register-task-definition", "--cli-input-json", &file],
    );
    let refused = t.aws_fails(
        &ops,
        &["ecs", "run-task", "--task-definition", "escape"],
        "AccessDeniedException",
    );
    assert!(
        refused.contains("volumes[0].host.sourcePath")
            && refused.contains("containerDefinitions[0].environmentFiles"),
        "{refused}"
    );
    let overrides = r#"{"containerOverrides": [{"name": "app", "environmentFiles": [{"value": "/etc/hostname", "type": "s3"}]}]}"#;
    let refused = t.aws_fails(
        &ops,
        &[
            "ecs",
            "run-task",
            "--task-definition",
            "web",
            "--overrides",
            overrides,
        ],
        "AccessDeniedException",
    );
    assert!(
        refused.contains("overrides.containerOverrides[0].environmentFiles"),
        "{refused}"
    );
    // Nothing ran.
    let all = t.aws_ok(&ops, &["ecs", "list-tasks", "--desired-status", "STOPPED"]);
    assert_eq!(all["taskArns"], json!([]), "{all}");
    assert_eq!(
        t.aws_ok(&ops, &["ecs", "list-tasks"])["taskArns"],
        json!([])
    );
    // A policy scoped to one family's ARNs.
    let web = t.aws_ok(
        &scoped,
        &[
            "ecs",
            "describe-task-definition",
            "--task-definition",
            "web",
        ],
    );
    assert_eq!(web["taskDefinition"]["family"], "web");
    t.aws_fails(
        &scoped,
        &[
            "ecs",
            "describe-task-definition",
            "--task-definition",
            "api",
        ],
        "AccessDeniedException",
    );
    // Not existing is no way around a denial.
    t.aws_fails(
        &scoped,
        &[
            "ecs",
            "describe-task-definition",
            "--task-definition",
            "ghost",
        ],
        "AccessDeniedException",
    );
    t.aws_fails(
        &scoped,
        &["ecs", "list-task-definitions"],
        "AccessDeniedException",
    );
    // The viewer may describe and list but not stop, tag or delete.
    t.aws_ok(&viewer, &["ecs", "list-clusters"]);
    t.aws_fails(
        &viewer,
        &[
            "ecs",
            "delete-task-definitions",
            "--task-definitions",
            "web:1",
        ],
        "AccessDeniedException",
    );
    // StartTask with the pull allowed: one task per container instance named.
    let started = t.aws_ok(
        &ops,
        &[
            "ecs",
            "start-task",
            "--task-definition",
            "web",
            "--container-instances",
            "local",
        ],
    );
    let arn = started["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    let _cleanup = Cleanup(vec![arn.rsplit('/').next().unwrap().to_string()]);
    assert_eq!(started["tasks"].as_array().unwrap().len(), 1, "{started}");
    t.aws_fails(
        &viewer,
        &["ecs", "stop-task", "--task", &arn],
        "AccessDeniedException",
    );
    t.aws_ok(&ops, &["ecs", "stop-task", "--task", &arn]);
}

/// boto3: every ECS answer's members are ones botocore's model of the operation knows, and
/// timestamps are epoch numbers; paginators work.
#[test]
fn boto3_reads_every_ecs_answer_by_its_model() {
    let t = start();
    let ops = t.user("ops", ECS_AND_ECR);
    let out = t.python(
        "check_ecs.py",
        &format!("{BOTO3_PRELUDE}{BOTO3_ECS_CHECK}"),
        &ops,
        &[],
    );
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("task "))
        .map(|a| a.rsplit('/').next().unwrap().to_string())
        .collect();
    let _cleanup = Cleanup(ids);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ecs shapes checked"), "{stdout}");
}

const BOTO3_ECS_CHECK: &str = r#"
ecs = client(os.environ["KEY_ID"], os.environ["SECRET"], "ecs")

for i in range(3):
    r = ecs.register_task_definition(
        family=f"fam{i}",
        containerDefinitions=[{"name": "app", "image": "busybox:1", "memory": 32,
                               "stopTimeout": 2, "command": ["sleep", "300"],
                               "essential": True,
                               "portMappings": [{"containerPort": 80}],
                               "environment": [{"name": "A", "value": "1"}]}],
        tags=[{"key": "n", "value": str(i)}])
    assert r["taskDefinition"]["revision"] == 1
ecs.register_task_definition(family="fam0", networkMode="bridge", cpu="256", memory="128",
                             containerDefinitions=[{"name": "app", "image": "busybox:1",
                                                    "command": ["true"]}])
d = ecs.describe_task_definition(taskDefinition="fam0", include=["TAGS"])
assert d["taskDefinition"]["revision"] == 2 and d["tags"] == [], d
assert ecs.describe_task_definition(taskDefinition="fam1:1", include=["TAGS"])["tags"] == [{"key": "n", "value": "1"}]
pages = list(ecs.get_paginator("list_task_definitions").paginate(PaginationConfig={"PageSize": 2}))
got = [a for p in pages for a in p["taskDefinitionArns"]]
assert len(pages) == 2 and len(got) == 4 and len(set(got)) == 4, pages
fams = [f for p in ecs.get_paginator("list_task_definition_families").paginate(PaginationConfig={"PageSize": 1}) for f in p["families"]]
assert fams == ["fam0", "fam1", "fam2"], fams

c = ecs.create_cluster(clusterName="shapes", tags=[{"key": "a", "value": "b"}])["cluster"]
assert c["clusterName"] == "shapes"
assert "shapes" in json.dumps(ecs.list_clusters()["clusterArns"])
dc = ecs.describe_clusters(clusters=["shapes", "missing"], include=["TAGS"])
assert dc["clusters"][0]["tags"] == [{"key": "a", "value": "b"}] and dc["failures"][0]["reason"] == "MISSING", dc

run = ecs.run_task(cluster="shapes", taskDefinition="fam1", count=1, startedBy="boto3",
                   overrides={"containerOverrides": [{"name": "app", "environment": [{"name": "B", "value": "2"}]}]},
                   tags=[{"key": "t", "value": "1"}])
task = run["tasks"][0]
print("task", task["taskArn"], flush=True)
assert isinstance(task["createdAt"].timestamp(), float)
ecs.get_waiter("tasks_running").wait(cluster="shapes", tasks=[task["taskArn"]],
                                     WaiterConfig={"Delay": 1, "MaxAttempts": 120})
dt = ecs.describe_tasks(cluster="shapes", tasks=[task["taskArn"], "f" * 32], include=["TAGS"])
assert dt["tasks"][0]["lastStatus"] == "RUNNING" and dt["tasks"][0]["tags"] == [{"key": "t", "value": "1"}], dt
assert dt["failures"][0]["reason"] == "MISSING", dt
assert ecs.list_tasks(cluster="shapes", family="fam1")["taskArns"] == [task["taskArn"]]
ecs.tag_resource(resourceArn=task["taskArn"], tags=[{"key": "u", "value": "2"}])
assert len(ecs.list_tags_for_resource(resourceArn=task["taskArn"])["tags"]) == 2
ecs.untag_resource(resourceArn=task["taskArn"], tagKeys=["t", "u"])
stopped = ecs.stop_task(cluster="shapes", task=task["taskArn"], reason="shape check")["task"]
assert stopped["lastStatus"] == "STOPPED" and stopped["stopCode"] == "UserInitiated", stopped
try:
    ecs.delete_cluster(cluster="missing")
    raise AssertionError("deleted a missing cluster")
except ecs.exceptions.ClusterNotFoundException:
    pass
try:
    ecs.describe_task_definition(taskDefinition="nope")
    raise AssertionError("described a missing definition")
except ecs.exceptions.ClientException:
    pass
try:
    ecs.run_task(taskDefinition="fam1", count=11)
    raise AssertionError("ran 11 tasks")
except ecs.exceptions.InvalidParameterException:
    pass
assert ecs.delete_cluster(cluster="shapes")["cluster"]["status"] == "INACTIVE"
ecs.deregister_task_definition(taskDefinition="fam2:1")
dd = ecs.delete_task_definitions(taskDefinitions=["fam2:1"])
assert dd["taskDefinitions"][0]["status"] == "DELETE_IN_PROGRESS" and dd["failures"] == [], dd

want = {"RegisterTaskDefinition", "DescribeTaskDefinition", "ListTaskDefinitions",
        "ListTaskDefinitionFamilies", "CreateCluster", "ListClusters", "DescribeClusters",
        "RunTask", "DescribeTasks", "ListTasks", "TagResource", "UntagResource",
        "ListTagsForResource", "StopTask", "DeleteCluster", "DeregisterTaskDefinition",
        "DeleteTaskDefinitions"}
assert want <= set(checked), want - set(checked)
print("ecs shapes checked:", sorted(set(checked)))
"#;

/// ECS services through the AWS CLI: create-service, describe-services (ECS's shapes, epoch
/// times), list-services, update-service, delete-service; a user without ecs:CreateService
/// is refused.
#[test]
fn the_aws_cli_creates_scales_and_deletes_a_service() {
    let t = start();
    let ops = t.user("ops", ECS_AND_ECR);
    let ecs = |args: &[&str]| -> Value {
        let mut all = vec!["ecs"];
        all.extend_from_slice(args);
        t.aws_ok(&ops, &all)
    };
    let file = input_file(&t, "web.json", &web_definition("svc"));
    ecs(&["register-task-definition", "--cli-input-json", &file]);
    let created = ecs(&[
        "create-service",
        "--service-name",
        "web",
        "--task-definition",
        "svc",
        "--desired-count",
        "2",
        "--deployment-configuration",
        "minimumHealthyPercent=50,maximumPercent=200,deploymentCircuitBreaker={enable=true,rollback=true}",
    ]);
    let service = &created["service"];
    assert_eq!(service["serviceName"], "web", "{created}");
    assert_eq!(service["desiredCount"], 2);
    assert!(service["createdAt"].is_number(), "epoch seconds: {created}");
    assert_eq!(
        service["deploymentConfiguration"]["deploymentCircuitBreaker"]["rollback"],
        true
    );
    let arn = service["serviceArn"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let d = ecs(&["describe-services", "--services", "web"]);
        let s = &d["services"][0];
        if s["runningCount"] == 2 && s["deployments"][0]["rolloutState"] == "COMPLETED" {
            assert!(s["deployments"][0]["createdAt"].is_number(), "{d}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not steady: {d}");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let listed = ecs(&["list-services"]);
    assert_eq!(arns(&listed["serviceArns"]), vec![arn.clone()]);
    let tasks = ecs(&["list-tasks", "--service-name", "web"]);
    assert_eq!(tasks["taskArns"].as_array().unwrap().len(), 2, "{tasks}");
    let updated = ecs(&["update-service", "--service", "web", "--desired-count", "0"]);
    assert_eq!(updated["service"]["desiredCount"], 0);
    let deleted = ecs(&["delete-service", "--service", "web"]);
    assert_eq!(deleted["service"]["status"], "DRAINING", "{deleted}");
    let missing = ecs(&["describe-services", "--services", "nope"]);
    assert_eq!(missing["failures"][0]["reason"], "MISSING", "{missing}");

    // ECR only: no services.
    t.aws_fails(
        &t.ci,
        &[
            "ecs",
            "create-service",
            "--service-name",
            "x",
            "--task-definition",
            "svc",
        ],
        "AccessDeniedException",
    );
}

/// The real AWS CLI inside a task's container (the host's Python and the test venv mounted
/// read-only into busybox), with nothing but the task role: the SDK finds the credentials
/// provider and ecrl's AWS API through the variables ecrld gave the container, and acts as
/// the role's user, under that user's policy.
#[test]
fn a_task_role_gives_its_containers_the_users_credentials() {
    let t = start();
    t.env.ecrl_ok(&["repo", "create", "role/visible"]);
    t.env.ecrl_ok(&["repo", "create", "role/hidden"]);
    let arn = |repo: &str| {
        let info: Value = serde_json::from_str(
            &t.env
                .ecrl_ok(&["repo", "describe", repo, "--output", "json"]),
        )
        .unwrap();
        info["repository"]["repositoryArn"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecr:DescribeRepositories", "Resource": arn("role/visible")}]});
    t.user("app", &policy.to_string());
    let venv = common::aws::venv();
    let venv = venv.to_str().unwrap();
    let aws = format!("{venv}/bin/aws");
    // The venv's Python may live outside /usr (pyenv): its prefix is mounted too.
    let python = std::fs::canonicalize(format!("{venv}/bin/python3")).unwrap();
    let prefix = python
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mount = |name: &str, path: &str| json!({"sourceVolume": name, "containerPath": path, "readOnly": true});
    let volume = |name: &str, path: &str| json!({"name": name, "host": {"sourcePath": path}});
    let mut mounts = vec![
        mount("usr", "/usr"),
        mount("lib", "/lib"),
        mount("lib64", "/lib64"),
        mount("venv", venv),
    ];
    let mut volumes = vec![
        volume("usr", "/usr"),
        volume("lib", "/lib"),
        volume("lib64", "/lib64"),
        volume("venv", venv),
    ];
    if !prefix.starts_with("/usr") {
        mounts.push(mount("python", &prefix));
        volumes.push(volume("python", &prefix));
    }
    let definition = json!({
        "family": "role",
        "taskRoleArn": "arn:aws:iam::111122223333:role/app",
        "containerDefinitions": [{
            "name": "cli", "image": "busybox:1", "memory": 512,
            "environment": [{"name": "HOME", "value": "/tmp"}],
            "linuxParameters": {"tmpfs": [{"containerPath": "/tmp", "size": 64}]},
            "command": ["sh", "-c", format!(
                "{aws} ecr describe-repositories --output json; echo describe-exit=$?; \
                 {aws} ecr create-repository --repository-name role/new 2>&1; echo create-exit=$?")],
            "mountPoints": mounts
        }],
        "volumes": volumes
    });
    let file = t.env.path().join("role.json");
    std::fs::write(&file, definition.to_string()).unwrap();
    t.env
        .ecrl_ok(&["task", "register", "-f", file.to_str().unwrap()]);
    let out = t
        .env
        .ecrl(&["task", "run", "role", "--wait", "--output", "json"]);
    let task: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = task["tasks"][0]["taskArn"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let _cleanup = Cleanup(vec![id.clone()]);
    let log = t.env.ecrl_ok(&["task", "logs", &id, "--container", "cli"]);
    assert!(log.contains("describe-exit=0"), "{log}\n{task:#}");
    // Only what the user may see: the one repository its policy names.
    let json_start = log.find('{').unwrap();
    let json_end = log.rfind("describe-exit").unwrap();
    let listed: Value =
        serde_json::from_str(&log[json_start..json_end]).unwrap_or_else(|e| panic!("{e}: {log}"));
    let names: Vec<&str> = listed["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["repositoryName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["role/visible"], "{log}");
    assert!(
        log.contains("AccessDeniedException") && !log.contains("create-exit=0"),
        "{log}"
    );
    assert_eq!(
        t.env.ecrl(&["repo", "describe", "role/new"]).status.code(),
        Some(1)
    );
    let inspected = t.env.ecrl_ok(&["task", "inspect", &id, "--output", "json"]);
    assert!(
        !inspected.contains("ASIA"),
        "credentials in the task: {inspected}"
    );
}
