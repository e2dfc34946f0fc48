//! `ecrl storage migrate`: a registry on one machine (data dir, SQLite) moved onto the shared
//! backends (SeaweedFS, PostgreSQL) loses no image, user or task definition; the old daemon
//! refuses writes after; a second move into a database that holds a registry is refused.

mod common;

use common::registry::{push_blob, registry_address, sha256_digest};
use common::s3::SeaweedFs;
use common::{pg, Env};
use reqwest::blocking::Client;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// An environment on the embedded backends, whatever the suite's knobs say.
fn local() -> Env {
    let mut env = Env::new();
    env.postgres = None;
    env.s3.clear();
    env
}

fn http() -> Client {
    Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap()
}

/// An image of a config and one layer; its manifest.
fn push_image(http: &Client, addr: &str, repo: &str, tag: &str, layer: &[u8]) -> Vec<u8> {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","tag":"{tag}"}}"#);
    assert_eq!(push_blob(http, addr, repo, config.as_bytes()).status(), 201);
    assert_eq!(push_blob(http, addr, repo, layer).status(), 201);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256_digest(config.as_bytes()), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256_digest(layer), "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    let r = http
        .put(format!("http://{addr}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text());
    manifest
}

fn get(http: &Client, url: String) -> Vec<u8> {
    let r = http.get(url).header("accept", OCI_MANIFEST).send().unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text());
    r.bytes().unwrap().to_vec()
}

#[test]
fn a_registry_moves_onto_object_storage_and_postgres_without_losing_anything() {
    let store = SeaweedFs::shared();
    let (bucket, prefix) = store.place("migrate");
    let database = pg::database();
    let s3_vars = store.daemon_vars(&bucket, &prefix);

    // A registry on one machine: two images (one layer shared), a user, a task definition.
    let old = local();
    let daemon = old.spawn_daemon(&[]);
    let addr = registry_address(&old);
    let http = http();
    let layer: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let m1 = push_image(&http, &addr, "team/app", "1", &layer);
    let m2 = push_image(&http, &addr, "team/other", "latest", &layer);
    old.ecrl_ok(&["auth", "user", "create", "ci"]);
    let def = old.path().join("web.json");
    std::fs::write(
        &def,
        r#"{"family":"web","containerDefinitions":[{"name":"c","image":"busybox","memory":16}]}"#,
    )
    .unwrap();
    old.ecrl_ok(&["task", "register", "-f", def.to_str().unwrap()]);

    // Nothing to move to is a usage error, and changes nothing.
    let out = old.ecrl(&["storage", "migrate"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("say where to move the registry"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The move, with the object store's settings from the environment as for ecrld.
    let mut migrate = old.ecrl_command(&[
        "storage",
        "migrate",
        "--postgres-url",
        &database,
        "--output",
        "json",
    ]);
    migrate.envs(s3_vars.iter().map(|(k, v)| (*k, v)));
    let out = migrate.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Two configs, one shared layer and the two manifests.
    assert_eq!(report["blobsCopied"], 5, "{report}");
    assert_eq!(report["blobsPresent"], 0, "{report}");
    assert_eq!(report["rows"]["repositories"], 2, "{report}");
    assert_eq!(report["rows"]["task_definitions"], 1, "{report}");
    assert_eq!(report["rows"]["users"], 1, "{report}");

    // The old daemon refuses writes now, saying where the registry went; pulls still work.
    let status = push_blob(&http, &addr, "team/app", b"written after the move").status();
    assert_eq!(status, 503);
    let r = http
        .post(format!(
            "http://{addr}/v2/team/app/blobs/uploads/?digest={}",
            sha256_digest(b"x")
        ))
        .body("x")
        .send()
        .unwrap();
    let body = r.text().unwrap();
    assert!(body.contains("moved to PostgreSQL"), "{body}");
    assert_eq!(
        get(&http, format!("http://{addr}/v2/team/app/manifests/1")),
        m1
    );
    drop(daemon);

    // A new instance on the shared backends serves all of it.
    let mut new = Env::new();
    new.postgres = Some(database.clone());
    new.s3 = s3_vars.clone();
    new.copy_keys_from(&old);
    let _new = new.spawn_daemon(&[]);
    let addr = registry_address(&new);
    assert_eq!(
        get(&http, format!("http://{addr}/v2/team/app/manifests/1")),
        m1
    );
    assert_eq!(
        get(
            &http,
            format!("http://{addr}/v2/team/other/manifests/latest")
        ),
        m2
    );
    let pulled = get(
        &http,
        format!("http://{addr}/v2/team/app/blobs/{}", sha256_digest(&layer)),
    );
    assert!(pulled == layer, "the layer came back different");
    assert!(new.ecrl(&["task", "describe", "web:1"]).status.success());
    assert!(new
        .ecrl_ok(&["auth", "user", "list", "--output", "json"])
        .contains("\"ci\""));
    // And takes pushes.
    push_image(
        &http,
        &addr,
        "team/app",
        "2",
        b"a layer pushed after the move",
    );

    // A second move into the same database is refused: it holds a registry now.
    let again = local();
    let _d = again.spawn_daemon(&[]);
    let out = again.ecrl(&["storage", "migrate", "--postgres-url", &database]);
    assert!(!out.status.success(), "moved over a registry");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already holds a registry"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Which still answers for its own repositories.
    again.ecrl_ok(&["repo", "create", "still/writable"]);
}

/// One move at a time: a second `ecrl storage migrate` while one runs is refused (and says
/// why) and the first completes as if alone.
#[test]
fn a_second_move_while_one_runs_is_refused() {
    let store = SeaweedFs::shared();
    let (bucket, prefix) = store.place("migrate-busy");
    let s3_vars = store.daemon_vars(&bucket, &prefix);
    let old = local();
    let _daemon = old.spawn_daemon(&[]);
    let addr = registry_address(&old);
    let http = http();
    // Enough bytes that the copy takes a while: 48 layers of 2 MiB, each different.
    let mut layers = Vec::new();
    for n in 0..48u32 {
        let layer: Vec<u8> = (0..(2u32 << 20))
            .map(|i| (i.wrapping_mul(2_654_435_761) ^ n.wrapping_mul(97)) as u8)
            .collect();
        assert_eq!(push_blob(&http, &addr, "team/big", &layer).status(), 201);
        layers.push(sha256_digest(&layer));
    }

    let migrate = || {
        let mut command = old.ecrl_command(&["storage", "migrate", "--output", "json"]);
        command.envs(s3_vars.iter().map(|(k, v)| (*k, v)));
        command
    };
    let first = migrate()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // More moves while it runs (the first to reach the daemon runs; which one that is, the
    // scheduler decides), until one is refused.
    let refused = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stderr).contains("already running")
    };
    let mut first = Some(first);
    let mut outputs = Vec::new();
    while let Some(child) = first.as_mut() {
        if child.try_wait().unwrap().is_some() {
            outputs.push(first.take().unwrap().wait_with_output().unwrap());
            break;
        }
        let out = migrate().output().unwrap();
        let done = refused(&out);
        outputs.push(out);
        if done {
            outputs.push(first.take().unwrap().wait_with_output().unwrap());
        }
    }
    assert!(
        outputs.iter().any(refused),
        "no move was refused while another ran: {outputs:?}"
    );
    for out in outputs.iter().filter(|o| refused(o)) {
        assert_eq!(out.status.code(), Some(1), "{out:?}");
    }
    // The one that ran moved every blob (one that came after it found them there).
    let reports: Vec<serde_json::Value> = outputs
        .iter()
        .filter(|o| o.status.success())
        .map(|o| serde_json::from_slice(&o.stdout).unwrap())
        .collect();
    assert!(
        reports.iter().any(|r| r["blobsCopied"] == layers.len()),
        "no move copied the {} layers: {reports:?}",
        layers.len()
    );
    // Every layer is in the bucket, once.
    let listed = store.objects(&bucket, &prefix);
    for digest in &layers {
        let hex = digest.strip_prefix("sha256:").unwrap();
        assert_eq!(
            listed.iter().filter(|(k, _)| k.ends_with(hex)).count(),
            1,
            "{digest} not linked once in {listed:?}"
        );
    }
}
