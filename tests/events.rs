//! The event log and webhooks: every change the real ecrld makes (through the registry API,
//! the CLI and a real task on the Docker engine) is an EventBridge-shaped event that
//! `ecrl events` lists, filters and follows; webhooks get each event signed, in order per
//! repository, again after the receiver was down or the daemon restarted, and failures show
//! in `ecrl events --webhooks`. Bad input is refused with a clear message.

mod common;

use common::registry::{
    build_task_busybox, push_blob, register_busybox_task, registry_address, require_docker,
    sha256_digest,
};
use common::webhook::{free_addr, signature, Answer, Receiver};
use common::{stderr, Env};
use serde_json::{json, Value};
use std::io::BufRead;
use std::time::Duration;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Pushes a one-layer image made from `seed` under `tag`; answers its digest.
fn push_image(addr: &str, repo: &str, tag: &str, seed: &str) -> String {
    let http = http();
    let config = json!({"architecture": "amd64", "os": "linux", "seed": seed}).to_string();
    let layer = format!("layer of {seed}").repeat(100);
    for blob in [config.as_bytes(), layer.as_bytes()] {
        assert_eq!(push_blob(&http, addr, repo, blob).status(), 201);
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256_digest(config.as_bytes()), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256_digest(layer.as_bytes()), "size": layer.len()}],
    })
    .to_string();
    let r = http
        .put(format!("http://{addr}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    sha256_digest(manifest.as_bytes())
}

/// `ecrl events --output json ARGS`.
fn events(env: &Env, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["events", "--output", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&env.ecrl_ok(&all)).unwrap()
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["ecrl-type"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_change_is_an_event_in_ecr_and_ecs_shapes() {
    require_docker();
    build_task_busybox();
    let env = Env::new();
    let _daemon = env.spawn_daemon(&[]);
    let addr = registry_address(&env);

    env.ecrl_ok(&["repo", "create", "team/app", "-q"]);
    let first = push_image(&addr, "team/app", "1", "one");
    // The same image and tag again change nothing: no event.
    push_image(&addr, "team/app", "1", "one");
    env.ecrl_ok(&["image", "tag", "team/app:1", "2", "-q"]);
    let policy = env.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"ecr:BatchGetImage"}]}"#,
    )
    .unwrap();
    env.ecrl_ok(&[
        "repo",
        "policy",
        "set",
        "team/app",
        "-f",
        policy.to_str().unwrap(),
        "-q",
    ]);
    // An untag (the image stays under 1), then the image itself by its digest.
    let http = http();
    let r = http
        .delete(format!("http://{addr}/v2/team/app/manifests/2"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = http
        .delete(format!("http://{addr}/v2/team/app/manifests/{first}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    // A task definition, and a task run to its end on the engine.
    register_busybox_task(&env, &addr, "events-done", "c", r#""command":["true"]"#);
    env.ecrl_ok(&["task", "run", "events-done", "--wait", "-q"]);
    env.ecrl_ok(&["repo", "delete", "team/app", "--force", "-q"]);

    let all = events(&env, &["--limit", "1000"]);
    let ours: Vec<&Value> = all
        .iter()
        .filter(|e| {
            let repo = e["detail"]["repository-name"].as_str();
            repo == Some("team/app") || e["source"] == "aws.ecs"
        })
        .collect();
    let sequence: Vec<String> = ours
        .iter()
        .map(|e| {
            let d = &e["detail"];
            match e["ecrl-type"].as_str().unwrap() {
                "task" => format!("task {}", d["lastStatus"].as_str().unwrap()),
                "task-definition" => format!("task-definition {}", d["status"].as_str().unwrap()),
                kind => format!("{kind} {}", d["action-type"].as_str().unwrap_or_default()),
            }
        })
        .collect();
    // The task's states come in order; the ones in between are there if the daemon saw them.
    let tasks: Vec<&String> = sequence.iter().filter(|s| s.starts_with("task ")).collect();
    assert_eq!(
        tasks.first().map(|s| s.as_str()),
        Some("task PROVISIONING"),
        "{sequence:?}"
    );
    assert_eq!(
        tasks.last().map(|s| s.as_str()),
        Some("task STOPPED"),
        "{sequence:?}"
    );
    assert!(tasks.iter().any(|s| *s == "task RUNNING"), "{sequence:?}");
    let not_tasks: Vec<&str> = sequence
        .iter()
        .filter(|s| !s.starts_with("task "))
        .map(String::as_str)
        .collect();
    assert_eq!(
        not_tasks,
        [
            "repository CREATE",
            "image-push PUSH",
            "image-push PUSH",
            "policy PUT",
            "image-delete DELETE",
            "image-delete DELETE",
            "task-definition ACTIVE",
            "repository DELETE",
        ],
        "{all:#?}"
    );

    // ECR's envelope and detail.
    let push = ours[1];
    assert_eq!(push["version"], "0");
    assert_eq!(push["source"], "aws.ecr");
    assert_eq!(push["detail-type"], "ECR Image Action");
    assert_eq!(push["region"], "local");
    let account = push["account"].as_str().unwrap();
    assert!(account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(
        push["resources"],
        json!([format!("arn:aws:ecr:local:{account}:repository/team/app")])
    );
    let time = push["time"].as_str().unwrap();
    assert!(time.len() == 20 && time.ends_with('Z'), "{time}");
    assert_eq!(
        push["detail"],
        json!({
            "result": "SUCCESS",
            "repository-name": "team/app",
            "image-digest": first,
            "action-type": "PUSH",
            "image-tag": "1",
            "manifest-media-type": OCI_MANIFEST,
            "artifact-media-type": "application/vnd.oci.image.config.v1+json",
        })
    );
    assert_eq!(ours[2]["detail"]["image-tag"], "2");
    let untag = &ours[4]["detail"];
    assert_eq!(untag["image-tag"], "2");
    assert_eq!(untag["ecrl-image-kept"], true);
    let delete = &ours[5]["detail"];
    assert_eq!(delete["action-type"], "DELETE");
    assert_eq!(delete["image-tag"], "1");
    assert_eq!(delete["image-tags"], json!(["1"]));
    assert_eq!(delete["ecrl-cause"], "user");
    // ECS's "Task State Change": the task as DescribeTasks shows it.
    let stopped = ours
        .iter()
        .rev()
        .find(|e| e["ecrl-type"] == "task")
        .unwrap();
    assert_eq!(stopped["detail-type"], "ECS Task State Change");
    assert_eq!(stopped["source"], "aws.ecs");
    let task = &stopped["detail"];
    assert_eq!(task["lastStatus"], "STOPPED");
    assert!(task["taskArn"]
        .as_str()
        .unwrap()
        .starts_with(&format!("arn:aws:ecs:local:{account}:task/")));
    assert_eq!(stopped["resources"], json!([task["taskArn"]]));
    assert_eq!(task["containers"][0]["exitCode"], 0, "{task:#}");
    assert!(task["updatedAt"].is_string());
    // Ids are unique; sequence numbers grow.
    let ids: std::collections::HashSet<&str> =
        all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), all.len());
    let seqs: Vec<i64> = all
        .iter()
        .map(|e| e["ecrl-sequence"].as_i64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // Filters: a type, a detail-type (both image kinds), a repository, the newest N.
    assert_eq!(
        kinds(&events(&env, &["--type", "image-push"])),
        ["image-push"; 3]
    );
    let image_actions = events(
        &env,
        &["--type", "ECR Image Action", "--repository", "team/app"],
    );
    assert_eq!(
        kinds(&image_actions),
        ["image-push", "image-push", "image-delete", "image-delete"]
    );
    let two = events(&env, &["-n", "2"]);
    assert_eq!(two, all[all.len() - 2..].to_vec());
    assert_eq!(events(&env, &["--since", "1h", "--limit", "1000"]), all);
    assert_eq!(
        kinds(&events(&env, &["--type", "task-definition,repository"])),
        // team/app's creation, busybox's (by `repo push`), the definition, team/app's end.
        ["repository", "repository", "task-definition", "repository"]
    );
    // The table: a line each.
    let table = env.ecrl_ok(&["events", "--repository", "team/app"]);
    assert!(
        table.contains("pushed team/app:1") && table.contains("deleted repository team/app"),
        "{table}"
    );

    // Bad input: a usage error (2) that says what is allowed; nothing changes.
    for (args, says) in [
        (vec!["events", "--type", "nope"], "image-push, image-delete"),
        (vec!["events", "--since", "forever"], "--since"),
        (vec!["events", "--limit", "0"], "--limit must be 1-1000"),
        (vec!["events", "--limit", "5000"], "--limit must be 1-1000"),
        (vec!["events", "--webhooks", "-f"], "cannot be used with"),
    ] {
        let out = env.ecrl(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    let out = env.ecrl(&["events", "--repository", "Not A Name"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(events(&env, &["--limit", "1000"]), all);
}

#[test]
fn events_follow_prints_each_change_as_it_happens() {
    let env = Env::new();
    let _daemon = env.spawn_daemon(&[]);
    let addr = registry_address(&env);
    push_image(&addr, "follow/app", "old", "old");
    let mut follower = env
        .ecrl_command(&["events", "-f", "--output", "json", "--type", "image-push"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = || -> Value {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("ecrl events -f printed nothing new");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    // What was there first, then each new push (a repository's creation is filtered out).
    assert_eq!(next()["detail"]["image-tag"], "old");
    for tag in ["a", "b", "c"] {
        push_image(&addr, "follow/app", tag, tag);
        let event = next();
        assert_eq!(event["detail"]["image-tag"], tag);
        assert_eq!(event["detail"]["repository-name"], "follow/app");
    }
    // Ctrl-C ends it as it ends `tail -f`.
    unsafe { libc::kill(follower.id() as i32, libc::SIGINT) };
    let status = follower.wait().unwrap();
    assert_eq!(status.code(), Some(130));
}

fn webhook_config(hooks: &str) -> String {
    format!("events:\n  webhooks:\n{hooks}")
}

fn webhooks(env: &Env) -> Value {
    serde_json::from_str(&env.ecrl_ok(&["events", "--webhooks", "--output", "json"])).unwrap()
}

/// Sequence numbers of the first delivery of each event, in the order they arrived.
fn first_deliveries(got: &[common::webhook::Received]) -> Vec<(String, i64)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for r in got {
        let event = r.json();
        if seen.insert(event["id"].as_str().unwrap().to_string()) {
            out.push((
                event["detail"]["repository-name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                event["ecrl-sequence"].as_i64().unwrap(),
            ));
        }
    }
    out
}

#[test]
fn webhooks_get_each_event_signed_in_order_after_the_receiver_was_down_and_a_kill() {
    let env = Env::new();
    let down = free_addr();
    let config = env.write_config(&webhook_config(&format!(
        "    - name: ci\n      url: http://{down}/hook\n      secret: topsecret\n      types: [image-push, repository]\n      retry_delay: 200ms\n      max_attempts: 1000\n"
    )));
    let config = config.to_str().unwrap().to_string();
    let mut daemon = env.spawn_daemon(&["--config", &config]);
    let addr = registry_address(&env);
    // The receiver is down: the events wait.
    for (repo, tag) in [("hooks/a", "1"), ("hooks/b", "1"), ("hooks/a", "2")] {
        push_image(&addr, repo, tag, &format!("{repo}{tag}"));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = webhooks(&env)["webhooks"][0].clone();
        if status["lastError"].is_string() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "{status:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["name"], "ci");
    assert_eq!(status["delivered"], 0);
    assert_eq!(status["pending"], 5, "{status:#}");
    assert!(
        status["lastError"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{status:#}"
    );
    assert_eq!(status["failures"][0]["status"], "RETRYING", "{status:#}");
    let table = env.ecrl_ok(&["events", "--webhooks"]);
    assert!(
        table.contains("ci") && table.contains("RETRYING"),
        "{table}"
    );
    assert!(!table.contains("topsecret"), "{table}");

    // Killed and started again, it loses nothing: the queue is on disk.
    daemon.signal(libc::SIGKILL);
    daemon.wait(Duration::from_secs(10));
    let _daemon = env.spawn_daemon(&["--config", &config]);
    let addr = registry_address(&env);
    push_image(&addr, "hooks/b", "2", "b2");
    // An event the receiver refuses once is tried again.
    let receiver = Receiver::start(&down, |r, _| {
        let event = r.json();
        let first_try = r.header("x-ecrl-delivery-attempt") == Some("1");
        if event["detail"]["image-tag"] == "2"
            && event["detail"]["repository-name"] == "hooks/b"
            && first_try
        {
            Answer::Status(500)
        } else {
            Answer::Status(204)
        }
    });
    let got = receiver.wait_for(Duration::from_secs(60), |got| {
        first_deliveries(got).len() >= 6
            && got.iter().any(|r| {
                r.json()["detail"]["repository-name"] == "hooks/b"
                    && r.json()["detail"]["image-tag"] == "2"
                    && r.header("x-ecrl-delivery-attempt") != Some("1")
            })
    });
    // Every delivery is signed over its exact body, and says what it carries.
    for r in &got {
        assert_eq!(
            r.header("x-ecrl-signature-256").unwrap(),
            signature("topsecret", &r.body)
        );
        let event = r.json();
        assert_eq!(r.header("x-ecrl-event-id"), event["id"].as_str());
        assert_eq!(r.header("x-ecrl-event-type"), event["ecrl-type"].as_str());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-ecrl-webhook"), Some("ci"));
        assert!(["image-push", "repository"].contains(&event["ecrl-type"].as_str().unwrap()));
    }
    // In order per repository: each repository's sequence numbers only grow.
    let firsts = first_deliveries(&got);
    for repo in ["hooks/a", "hooks/b"] {
        let seqs: Vec<i64> = firsts
            .iter()
            .filter(|(r, _)| r == repo)
            .map(|(_, s)| *s)
            .collect();
        // The repository's creation and its two images.
        assert_eq!(seqs.len(), 3, "{firsts:?}");
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{repo}: {seqs:?}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = webhooks(&env)["webhooks"][0].clone();
        if status["pending"] == 0 && status["delivered"] == 6 {
            assert!(status["lastDeliveredAt"].is_string());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_webhook_that_never_answers_times_out_and_is_given_up_on_while_pushes_go_on() {
    let env = Env::new();
    let hanging = Receiver::start("127.0.0.1:0", |_, _| Answer::Hang);
    let fine = Receiver::start("127.0.0.1:0", |_, _| Answer::Status(200));
    let config = env.write_config(&webhook_config(&format!(
        "    - name: stuck\n      url: {}\n      timeout: 1s\n      retry_delay: 100ms\n      max_attempts: 2\n    - url: http://user:hunter2@{}/hook\n      types: [ECR Image Action]\n",
        hanging.url(),
        fine.addr
    )));
    let _daemon = env.spawn_daemon(&["--config", config.to_str().unwrap()]);
    let addr = registry_address(&env);
    push_image(&addr, "slow/app", "1", "one");
    // The other webhook is not held up by this one.
    let got = fine.wait_for(Duration::from_secs(20), |got| !got.is_empty());
    assert_eq!(got[0].json()["detail"]["image-tag"], "1");
    assert!(got[0].header("x-ecrl-signature-256").is_none());
    // The URL's credentials go as Basic authentication.
    assert_eq!(
        got[0].header("authorization"),
        Some("Basic dXNlcjpodW50ZXIy")
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let stuck = loop {
        let all = webhooks(&env);
        let stuck = all["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "stuck")
            .unwrap()
            .clone();
        if stuck["failures"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["status"] == "FAILED")
            .count()
            == 2
        {
            break stuck;
        }
        assert!(std::time::Instant::now() < deadline, "{all:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // Both events (the repository's creation, the push) failed for good after two tries.
    for failure in stuck["failures"].as_array().unwrap() {
        assert_eq!(failure["attempts"], 2, "{stuck:#}");
        assert!(
            failure["error"]
                .as_str()
                .unwrap()
                .contains("no answer within the webhook's timeout"),
            "{stuck:#}"
        );
    }
    assert_eq!(stuck["pending"], 0);
    // The webhook without a name is named by its URL, its password never shown.
    let named = webhooks(&env)["webhooks"][1]["name"].clone();
    assert_eq!(named, format!("http://user:REDACTED@{}/hook", fine.addr));
    let listing = env.ecrl_ok(&["events", "--webhooks", "--output", "json"]);
    assert!(!listing.contains("hunter2"), "{listing}");
    // Pushes were never held up: another one goes through at once.
    push_image(&addr, "slow/app", "2", "two");
    assert_eq!(
        kinds(&events(&env, &["--repository", "slow/app"])),
        ["repository", "image-push", "image-push"]
    );
}

#[test]
fn bad_webhook_settings_are_refused_at_start() {
    let env = Env::new();
    for (hooks, says) in [
        (
            "    - url: ftp://example/x\n",
            "is not an http:// or https:// URL",
        ),
        (
            "    - url: http://example/x\n      types: [pushes]\n",
            "unknown event type \"pushes\"",
        ),
        (
            "    - url: http://example/x\n    - url: http://example/x\n",
            "another webhook is named",
        ),
        (
            "    - url: http://example/x\n      secret_env: ECRL_TEST_NO_SUCH_VARIABLE\n",
            "ECRL_TEST_NO_SUCH_VARIABLE is not set",
        ),
        (
            "    - url: http://example/x\n      timeout: 0s\n",
            "timeout must be more than 0",
        ),
        ("    - url: http://example/x\n      colour: red\n", "colour"),
    ] {
        let config = env.write_config(&webhook_config(hooks));
        let out = env
            .ecrld_command(&["--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{hooks}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{hooks}: {}", stderr(&out));
    }
    let config = env.write_config("events:\n  retention: soon\n");
    let out = env
        .ecrld_command(&["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("events.retention"),
        "{}",
        stderr(&out)
    );
}
