//! `ecrl task register|describe|list|families|deregister|delete` against the real daemon.

mod common;

use common::{stderr, stdout, Env};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

const WEB_JSON: &str = r#"{
  "family": "web",
  "networkMode": "bridge",
  "containerDefinitions": [
    {
      "name": "app",
      "image": "team/web:1",
      "memory": 128,
      "portMappings": [{ "containerPort": 80, "hostPort": 8080 }],
      "environmentFiles": [{ "value": "env/app.env", "type": "s3" }],
      "dependsOn": [{ "containerName": "db", "condition": "START" }]
    },
    { "name": "db", "image": "postgres:16", "essential": false, "memoryReservation": 64 }
  ]
}"#;

const API_YAML: &str = "\
family: api
containerDefinitions:
  - name: api
    image: team/api:2
    memory: 64
    command: [serve, --port, '9000']
    portMappings:
      - containerPort: 9000
";

fn write(env: &Env, name: &str, text: &str) -> PathBuf {
    let path = env.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn json_of(env: &Env, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    serde_json::from_str(&env.ecrl_ok(&all)).unwrap()
}

/// Registers the definition in `file`; returns what table mode prints (`family:revision`).
fn register(env: &Env, file: &Path) -> String {
    env.ecrl_ok(&["task", "register", "-f", file.to_str().unwrap()])
        .trim()
        .to_string()
}

/// A definition of `family` with one container, for tests that only count revisions.
fn simple(env: &Env, family: &str) -> PathBuf {
    write(
        env,
        &format!("{family}.json"),
        &format!(
            r#"{{"family":"{family}","containerDefinitions":[{{"name":"c","image":"busybox","memory":16}}]}}"#
        ),
    )
}

fn register_stdin(env: &Env, text: &str) -> Output {
    common::output_with_stdin(env.ecrl_command(&["task", "register", "-f", "-"]), text)
}

/// `family:revision` of every ARN `ecrl task list` prints with these arguments.
fn listed(env: &Env, args: &[&str]) -> Vec<String> {
    let mut all = vec!["task", "list"];
    all.extend(args);
    json_of(env, &all)["taskDefinitionArns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arn| {
            let arn = arn.as_str().unwrap();
            assert!(
                arn.starts_with("arn:aws:ecs:local:") && arn.contains(":task-definition/"),
                "{arn}"
            );
            arn.rsplit('/').next().unwrap().to_string()
        })
        .collect()
}

fn families(env: &Env, args: &[&str]) -> Vec<String> {
    let mut all = vec!["task", "families"];
    all.extend(args);
    serde_json::from_value(json_of(env, &all)["families"].clone()).unwrap()
}

#[test]
fn json_and_yaml_register_growing_revisions_that_describe_finds() {
    let env = Env::new();
    env.start();
    let web = write(&env, "web.json", WEB_JSON);
    assert_eq!(register(&env, &web), "web:1");
    assert_eq!(register(&env, &web), "web:2");
    let api = write(&env, "api.yaml", API_YAML);
    assert_eq!(register(&env, &api), "api:1");
    let out = register_stdin(&env, API_YAML);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "api:2\n");

    // The bare family is its latest ACTIVE revision; ECS's field names throughout.
    let latest = json_of(&env, &["task", "describe", "web"]);
    let td = &latest["taskDefinition"];
    assert_eq!(td["revision"], 2);
    assert_eq!(td["status"], "ACTIVE");
    assert_eq!(td["family"], "web");
    let arn = td["taskDefinitionArn"].as_str().unwrap().to_string();
    assert!(
        arn.starts_with("arn:aws:ecs:local:") && arn.ends_with(":task-definition/web:2"),
        "{arn}"
    );
    assert_eq!(arn.split(':').nth(4).unwrap().len(), 12, "{arn}");
    assert!(td["registeredAt"].as_str().unwrap().contains('T'));
    assert!(td.get("deregisteredAt").is_none());
    let containers = td["containerDefinitions"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0]["image"], "team/web:1");
    assert_eq!(containers[0]["portMappings"][0]["hostPort"], 8080);
    assert_eq!(containers[1]["essential"], false);
    assert!(latest.get("ignoredFields").is_none(), "nothing ignored");

    // The relative environment file now names the file next to web.json.
    let env_file = env.path().join("env/app.env");
    assert_eq!(
        containers[0]["environmentFiles"][0]["value"],
        env_file.to_str().unwrap()
    );

    let first = json_of(&env, &["task", "describe", "web:1"]);
    assert_eq!(first["taskDefinition"]["revision"], 1);
    let by_arn = json_of(&env, &["task", "describe", &arn]);
    assert_eq!(by_arn, latest);
    let yaml = json_of(&env, &["task", "describe", "api"]);
    assert_eq!(yaml["taskDefinition"]["revision"], 2);
    assert_eq!(
        yaml["taskDefinition"]["containerDefinitions"][0]["command"],
        serde_json::json!(["serve", "--port", "9000"])
    );

    // YAML output carries the same shape.
    let text = env.ecrl_ok(&["task", "describe", "api:1", "--output", "yaml"]);
    let from_yaml: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(from_yaml["taskDefinition"]["revision"], 1);
    assert_eq!(from_yaml["taskDefinition"]["family"], "api");

    // The table is a summary for people.
    let table = env.ecrl_ok(&["task", "describe", "web"]);
    assert!(table.contains("task definition  web:2"), "{table}");
    assert!(table.contains(&arn), "{table}");
    assert!(table.contains("network mode     bridge"), "{table}");
    assert!(
        table.contains("app        team/web:1   yes        8080->80/tcp  db:START"),
        "{table}"
    );

    // Names that are not there, or not names.
    let out = env.ecrl(&["task", "describe", "web:9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("web:9 does not exist"),
        "{}",
        stderr(&out)
    );
    let out = env.ecrl(&["task", "describe", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("family nope does not exist"));
    // A malformed reference is a usage error, found before the daemon is asked.
    for bad in ["web:two", "web:0", "fam:bad", "arn:aws:s3:::bucket", "we b"] {
        for command in [
            vec!["task", "describe", bad],
            vec!["task", "deregister", bad],
            vec!["task", "run", bad],
        ] {
            let out = env.ecrl(&command);
            assert_eq!(out.status.code(), Some(2), "{command:?}: {}", stderr(&out));
            assert!(stderr(&out).contains("FAMILY:REVISION"), "{}", stderr(&out));
        }
    }
}

#[test]
fn a_definition_that_does_not_parse_names_the_field_and_stores_nothing() {
    let env = Env::new();
    env.start();
    let bad = write(
        &env,
        "bad.json",
        r#"{"family":"web","containerDefinitions":[{"name":"a","image":"b","memory":8,"portMapings":[]}]}"#,
    );
    let out = env.ecrl(&["task", "register", "-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("containerDefinitions[0].portMapings: unknown field `portMapings`"),
        "{err}"
    );
    assert!(err.contains("bad.json"), "{err}");
    assert!(stdout(&out).is_empty());

    let out = register_stdin(
        &env,
        "family: web\ncontainerDefinitions:\n  - name: a\n    imag: b\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("containerDefinitions[0].imag"),
        "{}",
        stderr(&out)
    );

    let out = env.ecrl(&["task", "register", "-f", "/nonexistent/web.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent/web.json"));

    // No Rust type names, and the same words for stdin and for a file.
    for (text, message) in [
        (
            "not json",
            "the task definition must be a JSON or YAML object",
        ),
        (
            r#"{"family":"w","containerDefinitions":[{"name":"a","image":"b","memory":"64"}]}"#,
            "containerDefinitions[0].memory: invalid type: string \"64\", expected a number (an integer)",
        ),
    ] {
        let file = write(&env, "junk.json", text);
        let from_file = env.ecrl(&["task", "register", "-f", file.to_str().unwrap()]);
        let from_stdin = register_stdin(&env, text);
        for (out, source) in [(from_file, file.display().to_string()), (from_stdin, "stdin".into())] {
            assert_eq!(out.status.code(), Some(1));
            let err = stderr(&out);
            assert!(
                err.starts_with(&format!(
                    "error: cannot read the task definition from {source}: {message}"
                )),
                "{err}"
            );
            assert!(!err.contains("TaskDefinitionInput") && !err.contains("i64"), "{err}");
        }
    }

    assert!(listed(&env, &[]).is_empty());
    assert!(listed(&env, &["--status", "INACTIVE"]).is_empty());
    assert!(families(&env, &[]).is_empty());
}

/// Registers `file`, which must be refused (exit 1) with every one of `lines` starting a line
/// of the message; answers the message.
fn assert_refused(env: &Env, file: &Path, lines: &[&str]) -> String {
    let out = env.ecrl(&["task", "register", "-f", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for line in lines {
        assert!(
            err.lines().any(|l| l.starts_with(line)),
            "missing {line:?} in:\n{err}"
        );
    }
    err
}

#[test]
fn validation_errors_are_all_reported_with_their_paths_and_nothing_is_stored() {
    let env = Env::new();
    env.start();
    let one = write(
        &env,
        "one.json",
        r#"{"family":"web","containerDefinitions":[
            {"name":"a","image":"busybox","memory":16},
            {"name":"b","image":"busybox","memory":16,"portMappings":[{"containerPort":70000}]}]}"#,
    );
    let out = env.ecrl(&["task", "register", "-f", one.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "containerDefinitions[1].portMappings[0].containerPort: 70000 is out of range 1-65535"
        ),
        "{err}"
    );
    assert!(err.contains("(1 error)"), "{err}");

    let several = write(
        &env,
        "several.json",
        r#"{"family":"web","networkMode":"overlay","containerDefinitions":[
            {"name":"a","image":"busybox",
             "dependsOn":[{"containerName":"ghost","condition":"START"}]},
            {"name":"a","image":"busybox","memory":16}]}"#,
    );
    let err = assert_refused(
        &env,
        &several,
        &[
            "networkMode: \"overlay\" is not one of bridge, host, awsvpc, none",
            "containerDefinitions[1].name: duplicate container name \"a\"",
            "containerDefinitions[0].dependsOn[0].containerName: \"ghost\" is not another container of this task",
            "containerDefinitions[0].memory: memory or memoryReservation is required",
        ],
    );
    assert!(err.contains("(4 errors)"), "{err}");

    // Less memory than the container engine allows is refused here, not when the task runs.
    let tiny = write(
        &env,
        "tiny.json",
        r#"{"family":"web","memory":"4","containerDefinitions":[
            {"name":"a","image":"busybox","memory":2},
            {"name":"b","image":"busybox","memoryReservation":5}]}"#,
    );
    assert_refused(
        &env,
        &tiny,
        &[
            "memory: 4 MiB is below the minimum: a task needs at least 6 MiB of memory",
            "containerDefinitions[0].memory: 2 MiB is below the minimum: a container needs at least 6 MiB of memory",
            "containerDefinitions[1].memoryReservation: 5 MiB is below the minimum",
        ],
    );

    assert!(listed(&env, &[]).is_empty());
    assert!(families(&env, &[]).is_empty());
    // A valid definition afterwards is the family's first revision: nothing was used up.
    assert_eq!(register(&env, &simple(&env, "web")), "web:1");
}

#[test]
fn fields_without_local_meaning_are_stored_and_listed_as_ignored() {
    let env = Env::new();
    env.start();
    let file = write(
        &env,
        "roles.json",
        r#"{"family":"roles","taskRoleArn":"arn:aws:iam::123456789012:role/app",
            "requiresCompatibilities":["FARGATE"],
            "containerDefinitions":[{"name":"a","image":"busybox","memory":16,
              "logConfiguration":{"logDriver":"awslogs","options":{"awslogs-group":"g"}}}]}"#,
    );
    let out = env.ecrl(&["task", "register", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "roles:1\n");
    let warning = stderr(&out);
    assert!(
        warning.contains("requiresCompatibilities")
            && !warning.contains("taskRoleArn")
            && !warning.contains("logConfiguration"),
        "{warning}"
    );

    let described = json_of(&env, &["task", "describe", "roles"]);
    assert_eq!(
        described["ignoredFields"],
        serde_json::json!(["requiresCompatibilities"])
    );
    assert_eq!(
        described["taskDefinition"]["taskRoleArn"], "arn:aws:iam::123456789012:role/app",
        "stored as given"
    );
    let table = env.ecrl_ok(&["task", "describe", "roles:1"]);
    assert!(
        table.contains("ignored fields   requiresCompatibilities\n"),
        "{table}"
    );
    // --quiet keeps stderr for errors only.
    let out = env.ecrl(&["task", "register", "-q", "-f", file.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn deregistered_revisions_go_inactive_only_they_delete_and_revisions_keep_growing() {
    let env = Env::new();
    env.start();
    let web = simple(&env, "web");
    for n in 1..=3 {
        assert_eq!(register(&env, &web), format!("web:{n}"));
    }

    let gone = json_of(&env, &["task", "deregister", "web:3"]);
    assert_eq!(gone["taskDefinition"]["status"], "INACTIVE");
    assert_eq!(gone["taskDefinition"]["revision"], 3);
    let at = gone["taskDefinition"]["deregisteredAt"].as_str().unwrap();
    assert!(at.contains('T'));
    let table = env.ecrl_ok(&["task", "deregister", "web:3"]);
    assert!(table.contains("web:3            INACTIVE"), "{table}");
    assert!(
        table.contains(at),
        "deregistering again changes nothing: {table}"
    );

    // The family now means its newest ACTIVE revision; 3 is still there by number.
    let latest = json_of(&env, &["task", "describe", "web"]);
    assert_eq!(latest["taskDefinition"]["revision"], 2);
    let three = json_of(&env, &["task", "describe", "web:3"]);
    assert_eq!(three["taskDefinition"]["status"], "INACTIVE");

    // Deregister needs a revision.
    let out = env.ecrl(&["task", "deregister", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("web:REVISION"), "{}", stderr(&out));

    // Only INACTIVE revisions delete; the others are reported and stay.
    let out = env.ecrl(&["task", "delete", "web:2", "--output", "json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains("only INACTIVE task definitions can be deleted; deregister web:2 first"),
        "{}",
        stderr(&out)
    );
    let refused: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(refused["taskDefinitions"].as_array().unwrap().is_empty());
    let refused_arn = refused["failures"][0]["arn"].as_str().unwrap();
    let prefix = refused_arn.strip_suffix("web:2").unwrap();
    assert!(
        prefix.starts_with("arn:aws:ecs:local:") && prefix.ends_with(":task-definition/"),
        "{refused_arn}"
    );
    assert_eq!(listed(&env, &[]), ["web:1", "web:2"]);

    // A batch: what can go goes, the rest is reported.
    let out = env.ecrl(&["task", "delete", "web:3", "web:7", "--output", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let batch: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(batch["taskDefinitions"][0]["revision"], 3);
    assert_eq!(batch["taskDefinitions"][0]["status"], "DELETE_IN_PROGRESS");
    assert_eq!(batch["failures"].as_array().unwrap().len(), 1);
    // Named by its full ARN, as ECS's DeleteTaskDefinitions names it, though it does not
    // exist and was given as family:revision.
    assert_eq!(batch["failures"][0]["arn"], format!("{prefix}web:7"));
    assert!(
        batch["failures"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("web:7 does not exist"),
        "{batch}"
    );
    assert!(
        stderr(&out).contains("web:7 does not exist"),
        "{}",
        stderr(&out)
    );
    let out = env.ecrl(&["task", "describe", "web:3"]);
    assert_eq!(out.status.code(), Some(1), "web:3 is gone");

    // The newest revision was deleted, yet the next one is 4, not 3.
    assert_eq!(register(&env, &web), "web:4");

    // Deleting every revision of a family keeps the family's count.
    env.ecrl_ok(&["task", "deregister", "web:1"]);
    env.ecrl_ok(&["task", "deregister", "web:2"]);
    env.ecrl_ok(&["task", "deregister", "web:4"]);
    let out = env.ecrl_ok(&["task", "delete", "web:1", "web:2", "web:4"]);
    assert!(out.contains("web:4            DELETE_IN_PROGRESS"), "{out}");
    assert!(listed(&env, &[]).is_empty());
    assert!(listed(&env, &["--status", "INACTIVE"]).is_empty());
    let out = env.ecrl(&["task", "describe", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no revisions left"),
        "{}",
        stderr(&out)
    );
    assert_eq!(register(&env, &web), "web:5");
}

#[test]
fn list_and_families_filter_as_ecs_does() {
    let env = Env::new();
    env.start();
    let (web, worker, api, old) = (
        simple(&env, "web"),
        simple(&env, "web-worker"),
        simple(&env, "api"),
        simple(&env, "old"),
    );
    register(&env, &web); // web:1
    register(&env, &web); // web:2
    register(&env, &worker); // web-worker:1
    register(&env, &api); // api:1
    register(&env, &old); // old:1
    env.ecrl_ok(&["task", "deregister", "web:1"]);
    env.ecrl_ok(&["task", "deregister", "old:1"]);

    // Family order, revisions ascending; ACTIVE unless asked otherwise.
    assert_eq!(
        listed(&env, &[]),
        ["api:1", "web:2", "web-worker:1"],
        "ACTIVE by default"
    );
    assert_eq!(listed(&env, &["--status", "ACTIVE"]), listed(&env, &[]));
    assert_eq!(listed(&env, &["--status", "inactive"]), ["old:1", "web:1"]);
    // The family filter is the full family name, as ECS takes it: web is not web-worker.
    assert_eq!(listed(&env, &["--family-prefix", "web"]), ["web:2"]);
    assert_eq!(
        listed(&env, &["--family-prefix", "web", "--status", "INACTIVE"]),
        ["web:1"]
    );
    assert!(listed(&env, &["--family-prefix", "we"]).is_empty());

    assert_eq!(families(&env, &[]), ["api", "old", "web", "web-worker"]);
    assert_eq!(
        families(&env, &["--status", "ACTIVE"]),
        ["api", "web", "web-worker"]
    );
    // INACTIVE: families with no ACTIVE revision (web still has web:2).
    assert_eq!(families(&env, &["--status", "INACTIVE"]), ["old"]);
    assert_eq!(
        families(&env, &["--family-prefix", "web"]),
        ["web", "web-worker"]
    );
    assert_eq!(
        families(&env, &["--family-prefix", "web-", "--status", "ACTIVE"]),
        ["web-worker"]
    );
    // A family whose revisions are all deleted is still a family, with none ACTIVE.
    env.ecrl_ok(&["task", "delete", "old:1"]);
    assert_eq!(families(&env, &["--status", "INACTIVE"]), ["old"]);

    let table = env.ecrl_ok(&["task", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("TASK DEFINITION"), "{table}");
    assert!(lines[1].starts_with("api:1 ") && lines[1].contains("task-definition/api:1"));
    assert_eq!(
        env.ecrl_ok(&["task", "families", "--status", "ACTIVE"]),
        "FAMILY\napi\nweb\nweb-worker\n"
    );

    let out = env.ecrl(&["task", "list", "--status", "GONE"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
}

#[test]
fn task_definitions_survive_a_daemon_restart() {
    let env = Env::new();
    env.start();
    let web = write(&env, "web.json", WEB_JSON);
    for _ in 0..3 {
        register(&env, &web);
    }
    register(&env, &simple(&env, "api"));
    env.ecrl_ok(&["task", "deregister", "web:2"]);
    env.ecrl_ok(&["task", "deregister", "web:3"]);
    env.ecrl_ok(&["task", "delete", "web:3"]);
    let before = json_of(&env, &["task", "describe", "web:1"]);
    let deregistered = json_of(&env, &["task", "describe", "web:2"]);

    env.ecrl_ok(&["daemon", "stop", "--wait", "15"]);
    env.start();

    assert_eq!(json_of(&env, &["task", "describe", "web:1"]), before);
    assert_eq!(json_of(&env, &["task", "describe", "web:2"]), deregistered);
    assert_eq!(
        json_of(&env, &["task", "describe", "web"])["taskDefinition"]["revision"],
        1
    );
    assert_eq!(listed(&env, &[]), ["api:1", "web:1"]);
    assert_eq!(listed(&env, &["--status", "INACTIVE"]), ["web:2"]);
    assert_eq!(families(&env, &[]), ["api", "web"]);
    assert_eq!(
        register(&env, &web),
        "web:4",
        "3 was issued before the restart"
    );
}

/// `ecrl task run small --overrides FILE`, the overrides written to FILE first.
fn run_small_with(env: &Env, overrides: &str) -> Output {
    let file = write(env, "over.json", overrides);
    env.ecrl(&[
        "task",
        "run",
        "small",
        "--overrides",
        file.to_str().unwrap(),
    ])
}

/// RunTask's overrides are held to the definition's rules: a task memory that is no size, or
/// one below what the containers reserve, is refused before anything runs (no engine is
/// asked), not ignored.
#[test]
fn overrides_that_break_the_rules_are_refused_at_run() {
    let env = Env::new();
    env.start();
    register(&env, &simple(&env, "small"));
    for (overrides, needle) in [
        (r#"{"memory": "lots"}"#, "memory: must be a positive number"),
        (r#"{"memory": "8"}"#, "reserve 16 MiB together"),
        (
            r#"{"containerOverrides": [{"name": "c", "memory": 4}]}"#,
            "below the minimum",
        ),
        (
            r#"{"cpu": "256", "containerOverrides": [{"name": "c", "cpu": 512}]}"#,
            "adds up to 512 units",
        ),
    ] {
        let out = run_small_with(&env, overrides);
        assert_eq!(out.status.code(), Some(1), "{overrides}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("is not a valid task") && err.contains(needle),
            "{overrides}: {err}"
        );
    }
    let listed = json_of(&env, &["task", "ps"]);
    assert_eq!(listed["tasks"], serde_json::json!([]), "{listed}");
    // Overrides within the rules pass (what happens next depends on the engine here).
    let out = run_small_with(&env, r#"{"memory": "64", "cpu": "0.5 vCPU"}"#);
    assert!(
        !stderr(&out).contains("not a valid task"),
        "{}",
        stderr(&out)
    );
}

/// `taskDefinition` of a describe answer without what ECS sets per revision.
fn content(described: &Value) -> Value {
    let mut td = described["taskDefinition"].clone();
    for field in ["taskDefinitionArn", "revision", "registeredAt", "status"] {
        td.as_object_mut().unwrap().remove(field);
    }
    td
}

#[test]
fn what_describe_prints_registers_again_as_it_is() {
    let env = Env::new();
    env.start();
    let first = write(
        &env,
        "web.json",
        r#"{"family":"web","executionRoleArn":"arn:aws:iam::123456789012:role/exec",
            "tags":[{"key":"team","value":"web"}],
            "containerDefinitions":[{"name":"app","image":"team/web:1","memory":64,
              "environmentFiles":[{"value":"app.env","type":"s3"}],
              "portMappings":[{"containerPort":80}]}]}"#,
    );
    assert_eq!(register(&env, &first), "web:1");
    let original = json_of(&env, &["task", "describe", "web:1"]);

    for (output, name, revision) in [("json", "described.json", 2), ("yaml", "described.yaml", 3)] {
        let text = env.ecrl_ok(&["task", "describe", "web:1", "--output", output]);
        let file = write(&env, name, &text);
        let out = env.ecrl(&["task", "register", "-f", file.to_str().unwrap()]);
        assert!(out.status.success(), "{output}: {}", stderr(&out));
        assert_eq!(stdout(&out), format!("web:{revision}\n"));
        let warning = stderr(&out);
        assert!(
            warning.contains("left out the read-only fields ECS sets on a registered revision (as describe-task-definition prints them): taskDefinitionArn, revision, status, registeredAt"),
            "{warning}"
        );
        let again = json_of(&env, &["task", "describe", &format!("web:{revision}")]);
        assert_eq!(content(&again), content(&original), "{output}");
        assert_eq!(again["tags"], original["tags"]);
        assert_eq!(again["ignoredFields"], original["ignoredFields"]);
    }
}

#[test]
fn aws_describe_task_definition_output_registers_with_one_warning() {
    let env = Env::new();
    env.start();
    // As `aws ecs describe-task-definition --include TAGS` prints it (CI repositories keep it
    // as .aws/task-definition.json), empty lists and all.
    let aws = write(
        &env,
        "task-definition.json",
        r#"{
  "taskDefinition": {
    "taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/site:12",
    "containerDefinitions": [{
      "name": "site", "image": "nginx:1.27", "cpu": 0, "memory": 128,
      "portMappings": [{"containerPort": 80, "hostPort": 80, "protocol": "tcp"}],
      "essential": true, "environment": [], "mountPoints": [], "volumesFrom": [],
      "systemControls": []
    }],
    "family": "site",
    "networkMode": "awsvpc",
    "revision": 12,
    "volumes": [],
    "status": "ACTIVE",
    "requiresAttributes": [{"name": "com.amazonaws.ecs.capability.task-eni"}],
    "placementConstraints": [],
    "compatibilities": ["EC2", "FARGATE"],
    "cpu": "256",
    "memory": "512",
    "registeredAt": "2024-06-01T12:00:00.000000+00:00",
    "registeredBy": "arn:aws:iam::123456789012:user/ci",
    "enableFaultInjection": false
  },
  "tags": [{"key": "env", "value": "prod"}]
}"#,
    );
    let out = env.ecrl(&["task", "register", "-f", aws.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "site:1\n");
    // One warning, naming the dropped fields; nothing about empty lists or false.
    let warning = stderr(&out);
    assert_eq!(warning.lines().count(), 1, "{warning}");
    assert!(
        warning.contains(
            "taskDefinitionArn, revision, status, requiresAttributes, compatibilities, \
             registeredAt, registeredBy"
        ),
        "{warning}"
    );
    let described = json_of(&env, &["task", "describe", "site"]);
    assert_eq!(
        described["tags"],
        serde_json::json!([{"key": "env", "value": "prod"}])
    );
    assert!(described.get("ignoredFields").is_none(), "{described}");
    assert_eq!(
        described["taskDefinition"]["placementConstraints"],
        serde_json::json!([])
    );
}

#[test]
fn every_unknown_field_is_reported_in_one_error() {
    let env = Env::new();
    env.start();
    let file = write(
        &env,
        "typos.json",
        r#"{"family":"web","familyName":"x","containerDefinitions":[
            {"name":"a","image":"b","memory":8,"portMapings":[],"enviroment":[]},
            {"name":"c","image":"d","memory":8,"healthCheck":{"command":["CMD","true"],"intervalSeconds":5}}]}"#,
    );
    let err = assert_refused(
        &env,
        &file,
        &[
            "familyName: unknown field `familyName`",
            "containerDefinitions[0].portMapings: unknown field `portMapings` (did you mean `portMappings`?)",
            "containerDefinitions[0].enviroment: unknown field `enviroment` (did you mean `environment`?)",
            "containerDefinitions[1].healthCheck.intervalSeconds: unknown field `intervalSeconds`",
        ],
    );
    assert!(err.contains("typos.json (4 errors):"), "{err}");
    let out = register_stdin(
        &env,
        "family: web\ncontainerDefinitions:\n  - name: a\n    imag: b\n    memroy: 8\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("stdin (3 errors):"), "{err}");
    assert!(err.contains("containerDefinitions[0].imag"), "{err}");
    assert!(err.contains("containerDefinitions[0].memroy"), "{err}");
    assert!(err.contains("missing field `image`"), "{err}");
    assert!(families(&env, &[]).is_empty());
}

#[test]
fn a_deeply_nested_file_is_refused_at_once_in_json_and_yaml() {
    let env = Env::new();
    env.start();
    let depth = 100_000;
    let labels = format!("{}\"x\"{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    let json = write(
        &env,
        "deep.json",
        &format!(
            r#"{{"family":"f","containerDefinitions":[{{"name":"a","image":"b","memory":8,"dockerLabels":{labels}}}]}}"#
        ),
    );
    let yaml = write(
        &env,
        "deep.yaml",
        &format!("family: f\ncontainerDefinitions:\n  - name: a\n    image: b\n    dockerLabels: {labels}\n"),
    );
    for file in [json, yaml] {
        let started = std::time::Instant::now();
        let out = env.ecrl(&["task", "register", "-f", file.to_str().unwrap()]);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(
            err.contains("lists and objects are nested more than 127 deep (at line"),
            "{err}"
        );
    }
    assert!(families(&env, &[]).is_empty());
}
