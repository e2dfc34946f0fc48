//! Prometheus metrics (`--metrics-addr`): off by default; when on, the real ecrld counts what
//! real clients (docker, plain HTTP) and real tasks did, and tells what it stores; a flood of
//! requests for names that do not exist neither grows the metrics nor shows up in them.

mod common;

use common::registry::{
    build_task_busybox, push_blob, register_busybox_task, registry_address, require_docker, run,
    run_ok, sha256_digest,
};
use common::{stderr, Env};
use std::collections::BTreeSet;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap()
}

fn scrape(http: &reqwest::blocking::Client, addr: &str) -> String {
    let r = http.get(format!("http://{addr}/metrics")).send().unwrap();
    assert_eq!(r.status(), 200);
    let kind = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    r.text().unwrap()
}

/// The value of the sample whose name and labels are `series` (exactly as printed).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, v) = line.rsplit_once(' ')?;
        (name == series).then(|| v.parse().ok())?
    })
}

fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// The series (name and labels) a scrape holds.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_string()))
        .collect()
}

#[test]
fn metrics_are_off_by_default_and_a_bad_address_is_refused() {
    let env = Env::new();
    let info = env.start();
    assert!(info.get("metricsAddress").is_none(), "{info}");
    let status = env.ecrl_ok(&["daemon", "status"]);
    assert!(!status.contains("metrics"), "{status}");
    env.ecrl_ok(&["daemon", "stop", "--wait", "15"]);

    let out = env
        .ecrld_command(&["--metrics-addr", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("--metrics-addr") && err.contains("nowhere"),
        "{err}"
    );
}

#[test]
fn a_scrape_counts_requests_bytes_content_jobs_and_tasks() {
    require_docker();
    build_task_busybox();
    let env = Env::new();
    let _daemon = env.spawn_daemon(&["--metrics-addr", "127.0.0.1:0"]);
    let info = env.info();
    let metrics = info["metricsAddress"].as_str().unwrap().to_string();
    let status = env.ecrl_ok(&["daemon", "status"]);
    assert!(
        status.contains(&format!("http://{metrics}/metrics")),
        "{status}"
    );
    let addr = registry_address(&env);
    let http = http();
    let before = scrape(&http, &metrics);
    assert!(before.contains("ecrl_build_info{version=\""), "{before}");
    assert_eq!(must(&before, "ecrl_repositories"), 0.0);

    // An image pushed over HTTP: a config, a 1 MiB layer, a manifest.
    let layer: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    assert_eq!(push_blob(&http, &addr, "team/app", config).status(), 201);
    assert_eq!(push_blob(&http, &addr, "team/app", &layer).status(), 201);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256_digest(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256_digest(&layer), "size": layer.len()}],
    })
    .to_string();
    let r = http
        .put(format!("http://{addr}/v2/team/app/manifests/1"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .get(format!(
            "http://{addr}/v2/team/app/blobs/{}",
            sha256_digest(&layer)
        ))
        .send()
        .unwrap();
    assert_eq!(r.bytes().unwrap().len(), layer.len());
    let r = http
        .get(format!("http://{addr}/v2/team/app/manifests/nope"))
        .header("accept", OCI_MANIFEST)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);

    // docker pulls an image through the registry; a task runs it to its end.
    let image = register_busybox_task(&env, &addr, "metrics-done", "c", r#""command":["true"]"#);
    run_ok("docker", &["pull", "-q", &image]);
    let _ = run("docker", &["rmi", "-f", &image]);
    env.ecrl_ok(&["task", "run", "metrics-done", "--wait", "-q"]);
    env.ecrl_ok(&["gc", "-q"]);

    // What is stored is counted again at most every 2 s.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let text = scrape(&http, &metrics);
    let count = |route: &str, method: &str, status: u16| {
        value(
            &text,
            &format!(
                "ecrl_registry_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(count("manifest", "PUT", 201), 1.0, "{text}");
    assert_eq!(count("manifest", "GET", 404), 1.0, "{text}");
    assert!(count("upload", "POST", 201) >= 2.0, "{text}");
    assert!(count("blob", "GET", 200) >= 1.0, "{text}");
    // docker's pull: its manifest (a HEAD when the engine holds the layers already).
    assert!(
        count("manifest", "GET", 200) + count("manifest", "HEAD", 200) >= 1.0,
        "{text}"
    );
    assert!(
        must(&text, "ecrl_registry_received_bytes_total") >= layer.len() as f64,
        "{text}"
    );
    assert!(
        must(&text, "ecrl_registry_sent_bytes_total") >= layer.len() as f64,
        "{text}"
    );
    assert!(
        must(
            &text,
            "ecrl_registry_request_duration_seconds_count{route=\"manifest\",method=\"PUT\"}"
        ) >= 1.0,
        "{text}"
    );
    // What is stored: two repositories, each with one image.
    assert_eq!(must(&text, "ecrl_repositories"), 2.0, "{text}");
    assert_eq!(must(&text, "ecrl_images"), 2.0, "{text}");
    assert!(must(&text, "ecrl_blobs") >= 5.0, "{text}");
    assert!(
        must(&text, "ecrl_stored_bytes") >= layer.len() as f64,
        "{text}"
    );
    assert_eq!(must(&text, "ecrl_registry_uploads_in_progress"), 0.0);
    // The task and its container.
    assert_eq!(must(&text, "ecrl_tasks{state=\"STOPPED\"}"), 1.0, "{text}");
    assert_eq!(
        must(&text, "ecrl_container_exits_total{reason=\"exited_0\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        must(&text, "ecrl_job_runs_total{job=\"gc\"}"),
        1.0,
        "{text}"
    );
    // Repository names are never labels.
    assert!(
        !text.contains("team/app") && !text.contains("busybox"),
        "{text}"
    );

    // Anything but /metrics is not there.
    let r = http.get(format!("http://{metrics}/")).send().unwrap();
    assert_eq!(r.status(), 404);
}

/// Failed logins count, and a flood of requests for names that do not exist, each new,
/// makes no new series: what clients send never becomes a label.
#[test]
fn failures_count_and_a_flood_of_unknown_names_grows_nothing() {
    let env = Env::with_anonymous("none");
    let _daemon = env.spawn_daemon(&["--metrics-addr", "127.0.0.1:0"]);
    let metrics = env.info()["metricsAddress"].as_str().unwrap().to_string();
    let addr = registry_address(&env);
    let http = http();
    for _ in 0..3 {
        let r = http
            .get(format!("http://{addr}/v2/"))
            .basic_auth("AWS", Some("not-a-token"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let token = env.ecrl_ok(&["get-login-password"]).trim().to_string();
    let get = |path: String| {
        http.get(format!("http://{addr}{path}"))
            .basic_auth("AWS", Some(&token))
            .send()
            .unwrap()
            .status()
    };
    // Warm: every kind of miss once.
    for n in 0..3 {
        get(format!("/v2/warm{n}/manifests/x"));
        get(format!("/v2/warm{n}/blobs/sha256:{}", "0".repeat(64)));
        get(format!("/v2/warm{n}/tags/list"));
        get(format!("/no/such/path/{n}"));
    }
    let first = scrape(&http, &metrics);
    assert!(must(&first, "ecrl_auth_failures_total") >= 3.0, "{first}");
    for n in 0..300 {
        get(format!("/v2/flood-{n}/manifests/tag-{n}"));
        get(format!("/v2/flood-{n}/blobs/sha256:{:064x}", n));
        get(format!("/v2/flood-{n}/tags/list"));
        get(format!("/anything/{n}"));
    }
    let second = scrape(&http, &metrics);
    let new: Vec<_> = series(&second)
        .difference(&series(&first))
        .cloned()
        .collect();
    // Only the status codes and routes seen for the first time may add series (tags lists
    // were not asked for before): a handful, never one per name.
    assert!(new.len() <= 8, "new series: {new:#?}");
    assert!(!second.contains("flood-"), "a name became a label");

    // Connections held open and idle: the listener keeps a few per address, closing the
    // oldest idle ones, and a scrape still gets through.
    use std::io::Read;
    let idle: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(&metrics).unwrap())
        .collect();
    // (A new client: the pooled connection of the last scrape was idle too.)
    assert!(scrape(&self::http(), &metrics).contains("ecrl_build_info"));
    let closed = idle
        .iter()
        .filter(|stream| {
            stream
                .set_read_timeout(Some(std::time::Duration::from_millis(300)))
                .unwrap();
            match (&**stream).read(&mut [0u8; 1]) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
            }
        })
        .count();
    assert!(
        closed >= 32,
        "only {closed} of 40 idle connections were closed"
    );
}
