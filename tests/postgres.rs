//! Metadata on PostgreSQL (`--metadata-backend postgres`): several ecrld on one database share
//! repositories, users, policies and task definitions, each seeing the others' changes at
//! once; the database unreachable at start, or gone for a while, is a clear error and loses
//! nothing. The server is tests/run's (or one this binary starts), each test on a database
//! of its own.

mod common;

use common::{pg, Env};
use std::time::{Duration, Instant};

/// An environment whose daemon keeps its metadata in `database`.
fn on(database: &str) -> Env {
    let mut env = Env::new();
    env.postgres = Some(database.to_string());
    env
}

fn json(env: &Env, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    serde_json::from_str(&env.ecrl_ok(&all)).expect("JSON output")
}

/// Waits (briefly: another instance's change arrives within milliseconds) for `check`.
fn soon(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "not seen in time: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn repo_names(env: &Env) -> Vec<String> {
    let list = json(env, &["repo", "list"]);
    list.as_array()
        .or_else(|| list["repositories"].as_array())
        .expect("a list of repositories")
        .iter()
        .map(|r| r["repositoryName"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn two_instances_share_repositories_users_and_task_definitions() {
    let database = pg::database();
    let a = on(&database);
    let b = on(&database);
    let _da = a.spawn_daemon(&[]);
    let _db = b.spawn_daemon(&[]);

    // A repository made through A is there on B, with its settings.
    a.ecrl_ok(&[
        "repo",
        "create",
        "team/app",
        "--tag-mutability",
        "IMMUTABLE",
        "--tag",
        "team=web",
    ]);
    soon("team/app on B", || {
        repo_names(&b).contains(&"team/app".into())
    });
    let described = json(&b, &["repo", "describe", "team/app"]);
    assert_eq!(
        described["repository"]["imageTagMutability"], "IMMUTABLE",
        "{described}"
    );
    // The name is taken for both: B's index checks against what A wrote.
    let again = b.ecrl(&["repo", "create", "team/app"]);
    assert!(
        !again.status.success(),
        "a second team/app was created through B"
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // A task definition registered through B is described through A, and revisions count
    // on from either instance.
    let def = a.path().join("web.json");
    std::fs::write(
        &def,
        r#"{"family":"web","containerDefinitions":[{"name":"c","image":"busybox","memory":16}]}"#,
    )
    .unwrap();
    b.ecrl_ok(&["task", "register", "-f", def.to_str().unwrap()]);
    soon("web:1 on A", || {
        a.ecrl(&["task", "describe", "web:1"]).status.success()
    });
    let second = json(&a, &["task", "register", "-f", def.to_str().unwrap()]);
    let revision = second["revision"]
        .as_i64()
        .or_else(|| second["taskDefinition"]["revision"].as_i64());
    assert_eq!(revision, Some(2), "{second}");

    // Users and their keys made on A authenticate on B.
    a.ecrl_ok(&["auth", "user", "create", "ci"]);
    soon("user ci on B", || {
        json(&b, &["auth", "user", "list"])
            .to_string()
            .contains("\"ci\"")
    });

    // A repository deleted through B is gone on A.
    b.ecrl_ok(&["repo", "delete", "team/app"]);
    soon("team/app gone from A", || {
        !repo_names(&a).contains(&"team/app".into())
    });

    // Both say where their metadata is, and that it answers.
    for env in [&a, &b] {
        let info = env.info();
        assert_eq!(info["metadataBackend"], "postgres", "{info}");
        assert!(info.get("metadataError").is_none(), "{info}");
        let location = info["metadataLocation"].as_str().unwrap();
        assert!(location.starts_with("127.0.0.1:"), "{location}");
    }
}

/// Events recorded through either instance are one log, listed alike by both; each webhook
/// gets each event once, from the one instance that delivers.
#[test]
fn events_of_every_instance_are_one_log_and_each_webhook_gets_them_once() {
    use common::webhook::{Answer, Receiver};
    let database = pg::database();
    let receiver = Receiver::start("127.0.0.1:0", |_, _| Answer::Status(204));
    let hooks = format!(
        "events:\n  webhooks:\n    - name: one\n      url: {}\n",
        receiver.url()
    );
    let (a, b) = (on(&database), on(&database));
    let (config_a, config_b) = (a.write_config(&hooks), b.write_config(&hooks));
    let _da = a.spawn_daemon(&["--config", config_a.to_str().unwrap()]);
    let _db = b.spawn_daemon(&["--config", config_b.to_str().unwrap()]);
    a.ecrl_ok(&["repo", "create", "shared/a", "-q"]);
    b.ecrl_ok(&["repo", "create", "shared/b", "-q"]);
    // A hears of B's repository within moments; then deletes it.
    soon("shared/b on A", || {
        repo_names(&a).contains(&"shared/b".into())
    });
    a.ecrl_ok(&["repo", "delete", "shared/b", "-q"]);
    let events = |env: &Env| -> Vec<(i64, String)> {
        json(env, &["events"])
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["ecrl-sequence"].as_i64().unwrap(),
                    format!(
                        "{} {}",
                        e["detail"]["action-type"].as_str().unwrap(),
                        e["detail"]["repository-name"].as_str().unwrap()
                    ),
                )
            })
            .collect()
    };
    let on_a = events(&a);
    assert_eq!(
        on_a.iter().map(|(_, e)| e.as_str()).collect::<Vec<_>>(),
        ["CREATE shared/a", "CREATE shared/b", "DELETE shared/b"]
    );
    assert_eq!(events(&b), on_a);
    let got = receiver.wait_for(Duration::from_secs(30), |got| got.len() >= 3);
    // A second instance delivering too would send them again within its poll.
    std::thread::sleep(Duration::from_secs(3));
    let got_now = receiver.received();
    assert_eq!(got_now.len(), 3, "{got_now:?}");
    // In order per repository: shared/b's creation before its deletion.
    let of_b: Vec<String> = got
        .iter()
        .map(|r| r.json())
        .filter(|e| e["detail"]["repository-name"] == "shared/b")
        .map(|e| e["detail"]["action-type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(of_b, ["CREATE", "DELETE"]);
    let delivered = json(&b, &["events", "--webhooks"]);
    assert_eq!(delivered["webhooks"][0]["delivered"], 3, "{delivered}");
    assert_eq!(delivered["webhooks"][0]["pending"], 0, "{delivered}");
}

#[test]
fn an_unreachable_database_at_start_is_a_clear_error_and_no_password_is_shown() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = on(&format!(
        "postgres://ecrl:hunter2secret@127.0.0.1:{port}/registry?connect_timeout=3"
    ));
    let started = Instant::now();
    let out = env.ecrld_command(&[]).output().expect("run ecrld");
    assert!(!out.status.success(), "ecrld started without its database");
    assert!(started.elapsed() < Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port}/registry"
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hunter2secret"),
        "the password leaked: {stderr}"
    );
    // Nothing of the daemon is left behind that a later start would trip on.
    assert!(!env.socket().exists());
}

#[test]
fn the_password_never_reaches_status_or_the_log() {
    let database = pg::database();
    // Trust authentication ignores the password: it is only there to be looked for.
    let with_password = database.replacen("postgres@", "postgres:hunter2secret@", 1);
    let env = on(&with_password);
    let _d = env.spawn_daemon(&[]);
    env.ecrl_ok(&["repo", "create", "a/b"]);
    let status = env.ecrl_ok(&["daemon", "status"]);
    assert!(status.contains("postgres ("), "{status}");
    assert!(!status.contains("hunter2secret"), "{status}");
    let info = env.info().to_string();
    assert!(!info.contains("hunter2secret"), "{info}");
    for entry in std::fs::read_dir(env.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            let log = std::fs::read_to_string(&path).unwrap();
            assert!(!log.contains("hunter2secret"), "{}: {log}", path.display());
        }
    }
}

#[test]
fn postgres_restarted_under_load_loses_nothing_and_clients_get_503_meanwhile() {
    let server = pg::Server::new();
    let env = on(&server.database());
    let _d = env.spawn_daemon(&[]);
    let addr = env.info()["registryAddress"].as_str().unwrap().to_string();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let push_blob =
        |repo: &str, content: &[u8]| common::registry::push_blob(&http, &addr, repo, content);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (created, failures) = std::thread::scope(|scope| {
        // The load: repositories created one after another, each told success or failure.
        let worker = scope.spawn(|| {
            let (mut created, mut failures) = (Vec::new(), Vec::new());
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("load/r{i}");
                let out = env.ecrl(&["repo", "create", &name]);
                if out.status.success() {
                    created.push(name);
                } else {
                    failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
                }
                i += 1;
            }
            (created, failures)
        });
        std::thread::sleep(Duration::from_millis(500));
        server.stop();
        // While it is down: a push is told to come back later, never a 500.
        std::thread::sleep(Duration::from_millis(300));
        let resp = push_blob("outage/app", b"pushed while PostgreSQL was down");
        assert_eq!(resp.status().as_u16(), 503, "{:?}", resp.text());
        let body = resp.text().unwrap();
        assert!(body.contains("unavailable"), "{body}");
        std::thread::sleep(Duration::from_millis(500));
        server.start();
        // Back: writes work again (the writer connects again on its next batch).
        soon("a repository created after the restart", || {
            env.ecrl(&["repo", "create", "after/restart"])
                .status
                .success()
        });
        let resp = push_blob("outage/app", b"pushed once PostgreSQL was back");
        assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text());
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        worker.join().unwrap()
    });
    assert!(
        !failures.is_empty(),
        "no creation failed while PostgreSQL was down"
    );
    for failure in &failures {
        assert!(
            failure.contains("unavailable") || failure.contains("PostgreSQL"),
            "an outage error that does not say what is wrong: {failure}"
        );
    }
    // Every creation the daemon confirmed is there.
    let names = repo_names(&env);
    for name in &created {
        assert!(names.contains(name), "{name} was confirmed, then lost");
    }
    assert!(names.contains(&"after/restart".to_string()));
    assert!(names.contains(&"outage/app".to_string()));
}

#[test]
fn garbage_collection_runs_on_one_instance_at_a_time() {
    let database = pg::database();
    let a = on(&database);
    let _da = a.spawn_daemon(&[]);
    // Another holder of the collection's advisory lock (as an instance collecting now is).
    let held = Held::lock(&database, 0x6563_726c_0010);
    let out = a.ecrl(&["gc", "-q"]);
    assert!(!out.status.success(), "a second collection ran at once");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another ecrld sharing this registry is collecting garbage now"),
        "{stderr}"
    );
    // Once the other is done, this one collects.
    drop(held);
    let report: serde_json::Value =
        serde_json::from_str(&a.ecrl_ok(&["gc", "--output", "json"])).unwrap();
    assert_eq!(report["dryRun"], false, "{report}");
}

/// Collections right after one another on one instance all run: each lets go of the
/// registry-wide claim before the next asks for it. (The claim used to go only when the
/// server noticed its session had ended; on a loaded machine the next collection then heard
/// that another instance was collecting.)
#[test]
fn collections_back_to_back_on_one_instance_all_run() {
    let database = pg::database();
    let a = on(&database);
    let _da = a.spawn_daemon(&[]);
    // Two callers at once: the second waits for the first inside the instance, and asks for
    // the claim the moment the first is done.
    std::thread::scope(|scope| {
        for caller in 0..2 {
            let a = &a;
            scope.spawn(move || {
                for n in 0..15 {
                    let out = a.ecrl(&["gc", "-q"]);
                    assert!(
                        out.status.success(),
                        "caller {caller}, collection {n}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            });
        }
    });
}

/// A miss (a tag, manifest or blob that is not there) on a shared instance first asks the
/// database whether another instance just committed it. A flood of misses must not cost the
/// other instances anything: with the lock every instance's writes take held elsewhere (a
/// long write of another instance), misses still answer at once, and once it is released a
/// push through the other instance is seen as before.
#[test]
fn a_flood_of_misses_answers_without_the_registry_wide_write_lock() {
    // Blobs in one bucket too: A reads the manifests B pushes from it.
    let store = common::s3::SeaweedFs::shared();
    let (bucket, prefix) = store.place("flood");
    let database = pg::database();
    let (mut a, mut b) = (on(&database), on(&database));
    a.s3 = store.daemon_vars(&bucket, &prefix);
    b.s3 = a.s3.clone();
    let _da = a.spawn_daemon(&[]);
    b.copy_keys_from(&a);
    let _db = b.spawn_daemon(&[]);
    b.ecrl_ok(&["repo", "create", "team/app"]);
    soon("B's repository on A", || {
        repo_names(&a).contains(&"team/app".to_string())
    });
    let addr = common::registry::registry_address(&a);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let missing = |n: u32| -> String {
        let digest = common::registry::sha256_digest(format!("missing {n}").as_bytes());
        match n % 3 {
            0 => format!("http://{addr}/v2/team/app/manifests/tag-{n}"),
            1 => format!("http://{addr}/v2/team/app/manifests/{digest}"),
            _ => format!("http://{addr}/v2/team/app/blobs/{digest}"),
        }
    };
    // Caught up with every change so far (A's own included).
    assert_eq!(http.get(missing(0)).send().unwrap().status(), 404);

    // Another holder of the write lock.
    let held = Held::lock(&database, 0x6563_726c_0002);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..8u32 {
            let (http, missing) = (&http, &missing);
            scope.spawn(move || {
                for i in 0..60u32 {
                    let url = missing(t * 1000 + i);
                    let r = http
                        .get(&url)
                        .send()
                        .unwrap_or_else(|e| panic!("a miss waited on the write lock: {url}: {e}"));
                    assert_eq!(r.status(), 404, "{url}");
                }
            });
        }
    });
    let flood = started.elapsed();
    assert!(
        flood < Duration::from_secs(20),
        "480 misses took {flood:?} with the write lock held elsewhere"
    );
    drop(held);

    // Writes go on as before, and a miss still finds what another instance just pushed.
    let token = a.ecrl_ok(&["get-login-password"]).trim().to_string();
    let (on_a, on_b) = (Instance::of(&a, &token), Instance::of(&b, &token));
    let m = on_b.image("team/app", b"pushed after the flood");
    assert_eq!(on_b.put_manifest("team/app", "after", &m).status(), 201);
    assert_eq!(on_a.get("/v2/team/app/manifests/after"), (200, m));
}

/// A PostgreSQL advisory lock held from outside ecrld (as another instance holds it while it
/// collects garbage or writes), on a session of its own, until dropped.
struct Held {
    release: Option<std::sync::mpsc::Sender<()>>,
    holder: Option<std::thread::JoinHandle<()>>,
}

impl Held {
    fn lock(database: &str, key: i64) -> Held {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
        let url = database.to_string();
        let holder = std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            client
                .query_one("SELECT pg_advisory_lock($1)", &[&key])
                .unwrap();
            held_tx.send(()).unwrap();
            let _ = released.recv();
        });
        held_rx.recv().expect("the advisory lock was taken");
        Held {
            release: Some(release),
            holder: Some(holder),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(holder) = self.holder.take() {
            let _ = holder.join();
        }
    }
}

/// A registry client of one instance, authenticated with a login token (which every
/// instance must accept, whichever issued it).
struct Instance {
    addr: String,
    token: String,
    http: reqwest::blocking::Client,
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

impl Instance {
    fn of(env: &Env, token: &str) -> Instance {
        Instance {
            addr: common::registry::registry_address(env),
            token: token.to_string(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("http://{}{path}", self.addr)
        };
        self.http
            .request(method, url)
            .basic_auth("AWS", Some(&self.token))
    }

    fn blob(&self, repo: &str, content: &[u8]) {
        let digest = common::registry::sha256_digest(content);
        let r = self
            .request(
                reqwest::Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            )
            .body(content.to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text());
    }

    /// A one-layer image's manifest (its blobs pushed first).
    fn image(&self, repo: &str, layer: &[u8]) -> Vec<u8> {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        self.blob(repo, config);
        self.blob(repo, layer);
        manifest(config, layer)
    }

    fn put_manifest(&self, repo: &str, tag: &str, manifest: &[u8]) -> reqwest::blocking::Response {
        self.request(reqwest::Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
            .header("content-type", OCI_MANIFEST)
            .body(manifest.to_vec())
            .send()
            .unwrap()
    }

    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let r = self
            .request(reqwest::Method::GET, path)
            .header("accept", OCI_MANIFEST)
            .send()
            .unwrap();
        (r.status().as_u16(), r.bytes().unwrap().to_vec())
    }
}

fn manifest(config: &[u8], layer: &[u8]) -> Vec<u8> {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": common::registry::sha256_digest(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": common::registry::sha256_digest(layer), "size": layer.len()}],
    })
    .to_string()
    .into_bytes()
}

#[test]
fn two_instances_on_object_storage_and_postgres_serve_one_registry() {
    let store = common::s3::SeaweedFs::shared();
    let (bucket, prefix) = store.place("two");
    let database = pg::database();
    let shared = |env: &mut Env| {
        env.postgres = Some(database.clone());
        env.s3 = store.daemon_vars(&bucket, &prefix);
    };
    let mut env_a = Env::with_anonymous("none");
    shared(&mut env_a);
    let _da = env_a.spawn_daemon(&[]);
    let mut env_b = Env::with_anonymous("none");
    shared(&mut env_b);
    // The second machine is given the storage key, as the docs say.
    env_b.copy_keys_from(&env_a);
    let _db = env_b.spawn_daemon(&[]);
    // A token from A is good on B.
    let token = env_a.ecrl_ok(&["get-login-password"]).trim().to_string();
    let (a, b) = (Instance::of(&env_a, &token), Instance::of(&env_b, &token));

    // Pushed through A, pullable through B at once.
    let layer: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    let m1 = a.image("team/app", &layer);
    assert_eq!(a.put_manifest("team/app", "1", &m1).status(), 201);
    assert_eq!(b.get("/v2/team/app/manifests/1"), (200, m1.clone()));
    let blob = format!(
        "/v2/team/app/blobs/{}",
        common::registry::sha256_digest(&layer)
    );
    assert_eq!(b.get(&blob), (200, layer.clone()));

    // A tag moved through B is what A answers next.
    let m2 = b.image("team/app", b"the second image's layer");
    assert_eq!(b.put_manifest("team/app", "1", &m2).status(), 201);
    soon("the moved tag on A", || {
        a.get("/v2/team/app/manifests/1") == (200, m2.clone())
    });

    // An immutable tag pushed through A cannot be moved through B.
    env_a.ecrl_ok(&[
        "repo",
        "create",
        "team/imm",
        "--tag-mutability",
        "IMMUTABLE",
    ]);
    let imm = a.image("team/imm", b"immutable layer");
    assert_eq!(a.put_manifest("team/imm", "v1", &imm).status(), 201);
    let other = b.image("team/imm", b"another layer");
    let refused = b.put_manifest("team/imm", "v1", &other);
    assert_eq!(refused.status(), 403, "{:?}", refused.text());
    assert_eq!(a.get("/v2/team/imm/manifests/v1"), (200, imm));
    assert_eq!(b.put_manifest("team/imm", "v2", &other).status(), 201);

    // A chunked upload started on A goes on and finishes on B; the manifest goes to A.
    let start = a
        .request(reqwest::Method::POST, "/v2/team/chunked/blobs/uploads/")
        .send()
        .unwrap();
    assert_eq!(start.status(), 202);
    let location = start.headers()["location"].to_str().unwrap().to_string();
    let content: Vec<u8> = (0..6_000_000u32).map(|i| (i * 13 % 241) as u8).collect();
    let (first, second) = content.split_at(3_500_000);
    let r = a
        .request(reqwest::Method::PATCH, &location)
        .header("content-range", format!("0-{}", first.len() - 1))
        .body(first.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text());
    let location = r.headers()["location"].to_str().unwrap().to_string();
    // The same path, on the other instance (a load balancer that does not stick).
    let on_b = |location: &str| {
        let path = location
            .strip_prefix("http://")
            .and_then(|l| l.split_once('/'))
            .map(|(_, p)| format!("/{p}"))
            .unwrap_or_else(|| location.to_string());
        path
    };
    let r = b
        .request(reqwest::Method::PATCH, &on_b(&location))
        .header(
            "content-range",
            format!("{}-{}", first.len(), content.len() - 1),
        )
        .body(second.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text());
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let digest = common::registry::sha256_digest(&content);
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = b
        .request(
            reqwest::Method::PUT,
            &format!("{}{sep}digest={digest}", on_b(&location)),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text());
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    a.blob("team/chunked", config);
    let m = manifest(config, &content);
    assert_eq!(a.put_manifest("team/chunked", "1", &m).status(), 201);
    assert_eq!(
        b.get(&format!("/v2/team/chunked/blobs/{digest}")),
        (200, content.clone())
    );

    // An image deleted through A is gone on B.
    let digest1 = common::registry::sha256_digest(&m1);
    let r = a
        .request(
            reqwest::Method::DELETE,
            &format!("/v2/team/app/manifests/{digest1}"),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text());
    soon("the deleted image gone from B", || {
        b.get(&format!("/v2/team/app/manifests/{digest1}")).0 == 404
    });
}
