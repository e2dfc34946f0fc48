//! Lifecycle policies against the real daemon: set, preview, run (by hand and on the
//! daemon's schedule), images a task definition names by digest kept, bad policies refused
//! with nothing changed.

mod common;

use common::remotes::oci_layout_image;
use common::{stderr, Env};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// Pushes a small image of its own content as `repo:tag`; answers its digest there.
fn push(env: &Env, dir: &Path, content: &str, reference: &str) -> String {
    let (layout, _) = oci_layout_image(dir, &[content.as_bytes().to_vec()]);
    env.ecrl_ok(&[
        "repo",
        "push",
        &format!("oci:{}", layout.display()),
        reference,
        "-q",
    ]);
    let out = env.ecrl_ok(&["image", "describe", reference, "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Push times are kept in milliseconds: the next image is younger.
    std::thread::sleep(Duration::from_millis(5));
    v["imageDetails"][0]["imageDigest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The digests the repository holds.
fn digests(env: &Env, repo: &str) -> BTreeSet<String> {
    let out = env.ecrl_ok(&["image", "list", repo, "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["imageIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["imageDigest"].as_str().unwrap().to_string())
        .collect()
}

const POLICY: &str = r#"{"rules": [
  {"rulePriority": 1, "description": "two newest releases",
   "selection": {"tagStatus": "tagged", "tagPrefixList": ["v"],
                 "countType": "imageCountMoreThan", "countNumber": 2},
   "action": {"type": "expire"}},
  {"rulePriority": 2, "description": "one untagged",
   "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 1},
   "action": {"type": "expire"}}
]}"#;

#[test]
fn a_policy_expires_what_ecr_would_and_keeps_what_a_task_definition_names() {
    let env = Env::new();
    let _daemon = env.spawn_daemon(&[]);
    let dir = tempfile::tempdir().unwrap();
    env.ecrl_ok(&["repo", "create", "team/app"]);
    let v1 = push(&env, dir.path(), "one", "team/app:v1");
    let v2 = push(&env, dir.path(), "two", "team/app:v2");
    let v3 = push(&env, dir.path(), "three", "team/app:v3");
    let v4 = push(&env, dir.path(), "four", "team/app:v4");
    // Two images left untagged by moving `dev`, then the one holding it now.
    let u1 = push(&env, dir.path(), "dev one", "team/app:dev");
    let u2 = push(&env, dir.path(), "dev two", "team/app:dev");
    let dev = push(&env, dir.path(), "dev three", "team/app:dev");
    // An ACTIVE task definition names v1 by digest: it must stay.
    let family = common::registry::unique("lifecycle");
    let def = serde_json::json!({
        "family": family,
        "containerDefinitions": [{"name": "app", "image": format!("team/app@{v1}"), "memory": 32}]
    });
    let file = dir.path().join("task.json");
    std::fs::write(&file, def.to_string()).unwrap();
    env.ecrl_ok(&["task", "register", "-f", file.to_str().unwrap(), "-q"]);

    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, POLICY).unwrap();
    // A preview of the policy before it is set: the same answer, nothing deleted.
    let preview = |args: &[&str]| -> serde_json::Value {
        let mut all = vec![
            "repo",
            "lifecycle",
            "preview",
            "team/app",
            "--output",
            "json",
        ];
        all.extend_from_slice(args);
        serde_json::from_str(&env.ecrl_ok(&all)).unwrap()
    };
    let expiring = |p: &serde_json::Value| -> BTreeSet<(String, i64)> {
        p["previewResults"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                assert_eq!(r["action"]["type"], "EXPIRE");
                (
                    r["imageDigest"].as_str().unwrap().to_string(),
                    r["appliedRulePriority"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    // v1 and v2 are past the two newest releases (v1 is kept: its definition names it); of the
    // untagged ones the older goes.
    let want: BTreeSet<(String, i64)> = [(v2.clone(), 1), (u1.clone(), 2)].into();
    let p = preview(&["-f", policy.to_str().unwrap()]);
    assert_eq!(expiring(&p), want, "{p:#}");
    assert_eq!(p["summary"]["expiringImageTotalCount"], 2);
    let kept = &p["keptImages"][0];
    assert_eq!(kept["imageDigest"], v1.as_str(), "{p:#}");
    assert_eq!(kept["appliedRulePriority"], 1);
    assert!(kept["reason"].as_str().unwrap().contains(&family), "{kept}");
    assert_eq!(digests(&env, "team/app").len(), 7);

    // Set: the text comes back as given; preview without a file uses it.
    let set = env.ecrl_ok(&[
        "repo",
        "lifecycle",
        "set",
        "team/app",
        "-f",
        policy.to_str().unwrap(),
        "--output",
        "json",
    ]);
    let set: serde_json::Value = serde_json::from_str(&set).unwrap();
    assert_eq!(set["lifecyclePolicyText"], POLICY);
    assert_eq!(set["repositoryName"], "team/app");
    assert!(set.get("lastEvaluatedAt").is_none());
    assert_eq!(expiring(&preview(&[])), want);
    let table = env.ecrl_ok(&["repo", "lifecycle", "preview", "team/app"]);
    assert!(
        table.contains("kept: the ACTIVE task definition"),
        "{table}"
    );
    assert!(
        table.contains("2 images would expire in team/app"),
        "{table}"
    );
    // `image list --expiring`: those two, in ListImages' shape (what `image delete` takes).
    let listed = env.ecrl_ok(&[
        "image",
        "list",
        "team/app",
        "--expiring",
        "--output",
        "json",
    ]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let listed: BTreeSet<String> = listed["imageIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["imageDigest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, want.iter().map(|(d, _)| d.clone()).collect());
    let table = env.ecrl_ok(&["image", "list", "team/app", "--expiring"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("v2") && l.contains(" 1 ")),
        "{table}"
    );

    // Run: exactly those go, the rest stay, and the run is recorded.
    let ran = env.ecrl_ok(&["repo", "lifecycle", "run", "team/app", "--output", "json"]);
    let ran: serde_json::Value = serde_json::from_str(&ran).unwrap();
    assert_eq!(expiring(&ran), want);
    let left = digests(&env, "team/app");
    let expected: BTreeSet<String> = [v1, v3, v4, u2, dev].into_iter().collect();
    assert_eq!(left, expected);
    let out = env.ecrl(&["image", "describe", "team/app:v2"]);
    assert!(!out.status.success());
    let got = env.ecrl_ok(&["repo", "lifecycle", "get", "team/app", "--output", "json"]);
    let got: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert!(got["lastEvaluatedAt"].is_string(), "{got}");
    // A second run finds nothing more.
    let again = env.ecrl_ok(&["repo", "lifecycle", "run", "team/app"]);
    assert!(again.contains("0 images expired in team/app"), "{again}");

    // A bad policy is refused with the path of each problem; the one set stays.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"rules": [{"rulePriority": 1, "selection": {"tagStatus": "tagged",
            "countType": "imageCountMoreThan", "countNumber": 0}, "action": {"type": "expire"}}]}"#,
    )
    .unwrap();
    let out = env.ecrl(&[
        "repo",
        "lifecycle",
        "set",
        "team/app",
        "-f",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.contains("rules[0].selection: a tagged rule needs a tagPrefixList or a tagPatternList")
            && e.contains("rules[0].selection.countNumber: must be 1 or more"),
        "{e}"
    );
    let got = env.ecrl_ok(&["repo", "lifecycle", "get", "team/app"]);
    assert_eq!(got.trim_end(), POLICY.trim_end());

    // Delete: gone, and saying so.
    env.ecrl_ok(&["repo", "lifecycle", "delete", "team/app"]);
    let out = env.ecrl(&["repo", "lifecycle", "get", "team/app"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("team/app has no lifecycle policy"),
        "{}",
        stderr(&out)
    );
    let out = env.ecrl(&["repo", "lifecycle", "run", "team/app"]);
    assert_eq!(out.status.code(), Some(1));
    // A repository that does not exist.
    let out = env.ecrl(&["repo", "lifecycle", "get", "team/nothing"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn the_daemon_applies_policies_on_its_schedule_and_after_a_restart() {
    let env = Env::new();
    let config = env.write_config("lifecycle:\n  interval: 1s\n");
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = env.spawn_daemon(&["--config", config.to_str().unwrap()]);
    env.ecrl_ok(&["repo", "create", "ci/builds"]);
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "rules:\n  - rulePriority: 1\n    selection:\n      tagStatus: any\n      \
         countType: imageCountMoreThan\n      countNumber: 1\n    action:\n      type: expire\n",
    )
    .unwrap();
    env.ecrl_ok(&[
        "repo",
        "lifecycle",
        "set",
        "ci/builds",
        "-f",
        policy.to_str().unwrap(),
    ]);
    // The policy survives a restart.
    daemon.signal(libc::SIGTERM);
    daemon.wait(Duration::from_secs(20));
    let _daemon = env.spawn_daemon(&["--config", config.to_str().unwrap()]);
    let _old = push(&env, dir.path(), "build 1", "ci/builds:1");
    let _older = push(&env, dir.path(), "build 2", "ci/builds:2");
    let newest = push(&env, dir.path(), "build 3", "ci/builds:3");
    let started = Instant::now();
    loop {
        if digests(&env, "ci/builds") == [newest.clone()].into() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the schedule did not expire the older builds: {:?}",
            digests(&env, "ci/builds")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_index_is_kept_while_a_task_definition_names_one_of_its_platforms() {
    let env = Env::new();
    let _daemon = env.spawn_daemon(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (layout, index, children) = common::remotes::two_platform_index(dir.path());
    env.ecrl_ok(&[
        "repo",
        "push",
        &format!("oci:{}", layout.display()),
        "team/multi:1",
        "-q",
    ]);
    std::thread::sleep(Duration::from_millis(5));
    push(&env, dir.path(), "newer", "team/multi:2");
    let family = common::registry::unique("platform");
    let def = serde_json::json!({
        "family": family,
        "containerDefinitions": [{"name": "app", "image": format!("team/multi@{}", children[0]),
            "memory": 32}]
    });
    let file = dir.path().join("task.json");
    std::fs::write(&file, def.to_string()).unwrap();
    env.ecrl_ok(&["task", "register", "-f", file.to_str().unwrap(), "-q"]);
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any",
            "countType": "imageCountMoreThan", "countNumber": 1}, "action": {"type": "expire"}}]}"#,
    )
    .unwrap();
    let p = env.ecrl_ok(&[
        "repo",
        "lifecycle",
        "preview",
        "team/multi",
        "-f",
        policy.to_str().unwrap(),
        "--output",
        "json",
    ]);
    let p: serde_json::Value = serde_json::from_str(&p).unwrap();
    // The index is the older image: the rule would expire it, but one of its platforms is
    // named by an ACTIVE definition. Its children are not images of their own here.
    assert_eq!(p["previewResults"], serde_json::json!([]), "{p:#}");
    assert_eq!(p["keptImages"][0]["imageDigest"], index.as_str(), "{p:#}");
    assert!(p["keptImages"][0]["reason"]
        .as_str()
        .unwrap()
        .contains(&family));
}
