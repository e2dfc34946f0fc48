//! Pull-through cache rules against a real upstream (CNCF distribution with htpasswd over
//! HTTPS, or plain): first pulls fetch and keep, later ones never need the upstream, tags are
//! checked after their TTL, concurrent pulls share one fetch, a lying upstream leaves
//! nothing, and pushes under a cache prefix are refused.

mod common;

use common::registry::{
    build_busybox_image, localhost, registry_address, require_docker, require_skopeo, run, run_ok,
    sha256_digest, unique, DockerImages,
};
use common::remotes::{oci_layout_image, DistOpts, Distribution, PrivateEcrld};
use common::{stderr, stdout, Daemon, Env};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Local {
    env: Env,
    _daemon: Daemon,
    /// `localhost:PORT`, plain HTTP, anonymous access.
    host: String,
}

impl Local {
    fn start(upstream: &Distribution) -> Local {
        Local::start_with(upstream, "")
    }

    /// [`Local::start`] with more of ecrld's config (YAML, top-level keys other than
    /// `mirror`).
    fn start_with(upstream: &Distribution, more: &str) -> Local {
        let env = Env::new();
        let mut yaml = String::from("mirror:\n  registries:\n");
        if let Some(ca) = upstream.ca_path() {
            yaml.push_str(&format!(
                "    \"{}\":\n      ca_file: {}\n",
                upstream.host(),
                ca.display()
            ));
        } else {
            yaml = String::new();
        }
        yaml.push_str(more);
        let config = env.write_config(&yaml);
        let daemon = env.spawn_daemon(&["--config", config.to_str().unwrap()]);
        let host = localhost(&registry_address(&env));
        let local = Local {
            env,
            _daemon: daemon,
            host,
        };
        if let Some((user, password)) = upstream.credentials() {
            let out = local.login(&upstream.host(), &user, &password);
            assert!(out.status.success(), "login: {}", stderr(&out));
        }
        local
    }

    /// `ecrl login HOST -u USER --password-stdin`.
    fn login(&self, registry: &str, user: &str, password: &str) -> std::process::Output {
        let login = self
            .env
            .ecrl_command(&["login", registry, "-u", user, "--password-stdin"]);
        common::output_with_stdin(login, password)
    }

    /// The digest of an image as skopeo reads it through this registry.
    fn digest(&self, image: &str) -> Result<String, String> {
        let out = run(
            "skopeo",
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{}/{image}", self.host),
            ],
        );
        if out.status.success() {
            Ok(sha256_digest(&out.stdout))
        } else {
            Err(stderr(&out))
        }
    }

    fn log(&self) -> String {
        std::fs::read_dir(self.env.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("ecrld-"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect()
    }
}

fn layout(dir: &Path, seed: &str, size: usize) -> (PathBuf, String) {
    let mut bytes = seed.as_bytes().to_vec();
    bytes.resize(size, 3);
    oci_layout_image(dir, &[bytes])
}

#[test]
fn docker_pulls_through_the_cache_and_runs_it_with_the_upstream_gone() {
    require_docker();
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Distribution::start(dir.path(), DistOpts::https_with_auth());
    let local = Local::start(&a);
    local
        .env
        .ecrl_ok(&["mirror", "cache", "create", "up", &a.host()]);
    let rules = local
        .env
        .ecrl_ok(&["mirror", "cache", "list", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&rules).unwrap();
    assert_eq!(v["pullThroughCacheRules"][0]["ecrRepositoryPrefix"], "up");
    assert_eq!(
        v["pullThroughCacheRules"][0]["upstreamRegistryUrl"],
        a.host().as_str()
    );
    assert_eq!(v["pullThroughCacheRules"][0]["tagTtlSeconds"], 86400);
    local.env.ecrl_ok(&["mirror", "cache", "validate", "up"]);

    // A runnable image on the upstream, pushed there from the Docker engine.
    let images = DockerImages::new();
    let id = unique("cache");
    let tag = format!("ecrl-test/cache:{id}");
    build_busybox_image(&images, &tag, &id);
    let mut args = vec!["copy".to_string()];
    args.extend(a.skopeo_dest_flags());
    args.push(format!("docker-daemon:{tag}"));
    args.push(format!("docker://{}/team/busybox:1", a.host()));
    run_ok(
        "skopeo",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    let through = format!("{}/up/team/busybox:1", local.host);
    images.track(&through);
    let printed = run_ok(
        "docker",
        &[
            "run",
            "--rm",
            "--pull",
            "always",
            &through,
            "cat",
            "/etc/ecrl-test-id",
        ],
    );
    assert_eq!(printed.trim(), id);
    let described = local
        .env
        .ecrl_ok(&["image", "describe", "up/team/busybox:1"]);
    let from = described
        .lines()
        .find(|l| l.starts_with("cached from"))
        .unwrap_or_default();
    assert!(
        from.ends_with(&format!(" {}/team/busybox:1", a.host())),
        "{described}"
    );
    assert!(described.contains("tag checked"), "{described}");
    let digest = local.digest("up/team/busybox:1").unwrap();

    // The upstream goes away: what is cached still pulls and runs, at once.
    a.kill();
    run_ok("docker", &["rmi", "-f", &through]);
    let started = Instant::now();
    let by_digest = format!("{}/up/team/busybox@{digest}", local.host);
    images.track(&by_digest);
    run_ok("docker", &["pull", "-q", &by_digest]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a cached digest waited"
    );
    let printed = run_ok(
        "docker",
        &["run", "--rm", &by_digest, "cat", "/etc/ecrl-test-id"],
    );
    assert_eq!(printed.trim(), id);
    // A task runs the cached image too (the engine pulls it through ecrl).
    let family = unique("cached");
    let definition = serde_json::json!({
        "family": family,
        "containerDefinitions": [{"name": "app", "image": "up/team/busybox:1", "memory": 32,
            "command": ["cat", "/etc/ecrl-test-id"]}]
    });
    let file = dir.path().join("task.json");
    std::fs::write(&file, definition.to_string()).unwrap();
    let def = local
        .env
        .ecrl_ok(&["task", "register", "-f", file.to_str().unwrap(), "-q"]);
    let ran = local
        .env
        .ecrl(&["task", "run", def.trim(), "--wait", "--output", "json"]);
    assert_eq!(ran.status.code(), Some(0), "{}", stderr(&ran));
    let task: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    let task_id = task["tasks"][0]["taskArn"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let logs = local.env.ecrl_ok(&["task", "logs", &task_id]);
    assert!(logs.contains(&id), "{logs}");
    let _ = local.env.ecrl(&["task", "deregister", def.trim()]);

    // Never cached: a clear error naming the upstream.
    let out = run(
        "docker",
        &["pull", &format!("{}/up/team/other:1", local.host)],
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains(&a.host()) && e.contains("cannot reach"), "{e}");
}

#[test]
fn a_tag_is_checked_upstream_after_its_ttl_and_a_stale_one_is_served_when_it_is_down() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Distribution::start(dir.path(), DistOpts::plain());
    let local = Local::start(&a);
    local.env.ecrl_ok(&[
        "mirror",
        "cache",
        "create",
        "up",
        &a.host(),
        "--tag-ttl",
        "2s",
    ]);
    let (one, d1) = layout(dir.path(), "first", 3000);
    let (two, d2) = layout(dir.path(), "second", 3000);
    a.push_layout(&one, "app:latest");
    assert_eq!(local.digest("up/app:latest").unwrap(), d1);
    a.push_layout(&two, "app:latest");
    // Within the TTL: the cached one, without asking.
    assert_eq!(local.digest("up/app:latest").unwrap(), d1);
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(local.digest("up/app:latest").unwrap(), d2);
    // Past the TTL with the upstream down: the cached one, and the log says so.
    std::thread::sleep(Duration::from_millis(2200));
    a.kill();
    assert_eq!(local.digest("up/app:latest").unwrap(), d2);
    assert!(local.log().contains("served the cached image as it is"));
}

#[test]
fn concurrent_pulls_of_a_new_image_fetch_each_blob_once() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let a = Distribution::start(dir.path(), DistOpts::plain());
    let local = Local::start(&a);
    local
        .env
        .ecrl_ok(&["mirror", "cache", "create", "up", &a.host()]);
    let mut big = Vec::with_capacity(256 << 20);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    while big.len() < 256 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.extend_from_slice(&x.to_le_bytes());
    }
    let (image, digest) = oci_layout_image(dir.path(), &[big]);
    a.push_layout(&image, "big:1");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(image.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap(),
    )
    .unwrap();
    let blobs: Vec<String> = std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().unwrap())
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    for blob in &blobs {
        assert_eq!(a.blob_gets(blob), 0, "{blob} served before any pull");
    }
    let pulls: Vec<_> = (0..8)
        .map(|i| {
            let out = dir.path().join(format!("pulled-{i}"));
            let src = format!("docker://{}/up/big:1", local.host);
            std::thread::spawn(move || {
                run(
                    "skopeo",
                    &[
                        "copy",
                        "--src-tls-verify=false",
                        &src,
                        &format!("oci:{}", out.display()),
                    ],
                )
            })
        })
        .collect();
    for p in pulls {
        let out = p.join().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(local.digest("up/big:1").unwrap(), digest);
    // The upstream's own access log: each blob (the config, the 256 MiB layer) served once.
    for blob in &blobs {
        assert_eq!(a.blob_gets(blob), 1, "{blob}:\n{}", a.log());
    }
    let log = local.log();
    let fetches = log.matches("pull-through cache: fetched a blob").count();
    assert_eq!(fetches, 2, "each blob (config, layer) fetched once:\n{log}");
    assert_eq!(
        log.matches("pull-through cache: fetched a manifest")
            .count(),
        1
    );
}

#[test]
fn an_upstream_blob_that_is_not_its_digest_fails_the_pull_and_is_not_kept() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let a = Distribution::start(dir.path(), DistOpts::plain());
    let local = Local::start(&a);
    local
        .env
        .ecrl_ok(&["mirror", "cache", "create", "up", &a.host()]);
    let (image, _) = layout(dir.path(), "lying", 200_000);
    a.push_layout(&image, "lie:1");
    let blobs = a.storage().join("docker/registry/v2/blobs");
    let mut flipped = 0;
    let mut stack = vec![blobs];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "data")
                && std::fs::metadata(&p).unwrap().len() > 1000
            {
                let mut bytes = std::fs::read(&p).unwrap();
                let at = bytes.len() / 2;
                bytes[at] ^= 0xff;
                std::fs::write(&p, bytes).unwrap();
                flipped += 1;
            }
        }
    }
    assert_eq!(flipped, 1);
    let out = run(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/up/lie:1", local.host),
            &format!("oci:{}", dir.path().join("out").display()),
        ],
    );
    assert!(!out.status.success(), "a pull of other bytes succeeded");
    assert!(local.log().contains("a blob was not kept"));
    let listed = local
        .env
        .ecrl_ok(&["image", "describe", "up/lie:1", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert!(v["imageDetails"][0]["imageDigest"].is_string());
    let uploads = local.env.data_dir().join("uploads");
    let left = std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "upload files left");
}

#[test]
fn pushes_under_a_cache_prefix_are_refused_and_rules_are_checked() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let a = Distribution::start(dir.path(), DistOpts::plain());
    let local = Local::start(&a);
    let (image, _) = layout(dir.path(), "push", 1000);
    run_ok(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}", image.display()),
            &format!("docker://{}/taken/app:1", local.host),
        ],
    );
    for (args, why) in [
        (vec!["x", "h.example"], "2 to 30 characters"),
        (vec!["Up", "h.example"], "2 to 30 characters"),
        (vec!["up", "not a host"], "upstream"),
        (vec!["up", &*local.host], "is this registry"),
        (
            vec!["taken", "h.example"],
            "repository taken/app exists under taken",
        ),
        (vec!["up", "h.example", "--tag-ttl", "0s"], "--tag-ttl"),
    ] {
        let mut all = vec!["mirror", "cache", "create"];
        all.extend(args.iter().copied());
        let out = local.env.ecrl(&all);
        assert_eq!(out.status.code(), Some(1), "{all:?}");
        assert!(stderr(&out).contains(why), "{all:?}: {}", stderr(&out));
    }
    local
        .env
        .ecrl_ok(&["mirror", "cache", "create", "up", &a.host()]);
    let out = local
        .env
        .ecrl(&["mirror", "cache", "create", "up", &a.host()]);
    assert!(stderr(&out).contains("exists already"), "{}", stderr(&out));
    let out = run(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}", image.display()),
            &format!("docker://{}/up/app:1", local.host),
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("pull-through cache rule up"),
        "{}",
        stderr(&out)
    );
    // A rule whose upstream is down is not valid, and says why.
    local
        .env
        .ecrl_ok(&["mirror", "cache", "create", "down", "127.0.0.1:9"]);
    let out = local.env.ecrl(&["mirror", "cache", "validate", "down"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("NOT valid: cannot reach 127.0.0.1:9"),
        "{}",
        stdout(&out)
    );
    local.env.ecrl_ok(&["mirror", "cache", "delete", "down"]);
    let out = local.env.ecrl(&["mirror", "cache", "delete", "down"]);
    assert!(
        stderr(&out).contains("no cache rule for down"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_docker_hub_mirror_rule_answers_names_without_its_prefix() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let a = Distribution::start(dir.path(), DistOpts::plain());
    let local = Local::start(&a);
    local.env.ecrl_ok(&[
        "mirror",
        "cache",
        "create",
        "hub",
        &a.host(),
        "--docker-hub-mirror",
    ]);
    let (image, digest) = layout(dir.path(), "hub", 2000);
    a.push_layout(&image, "library/alpine:3");
    // What docker's registry-mirrors sends: the Docker Hub name, no prefix.
    assert_eq!(local.digest("library/alpine:3").unwrap(), digest);
    assert_eq!(local.digest("hub/library/alpine:3").unwrap(), digest);
    let listed = local.env.ecrl_ok(&["repo", "list"]);
    assert!(listed.contains("hub/library/alpine"), "{listed}");

    // Not an open proxy: a blob no cached manifest names is not fetched, and a name the
    // upstream does not have creates no repository.
    let fetched = local.log().matches("fetched a blob").count();
    let stranger = sha256_digest(b"a blob nobody cached");
    let out = run(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!(
                "http://{}/v2/hub/library/alpine/blobs/{stranger}",
                local.host
            ),
        ],
    );
    assert_eq!(stdout(&out), "404");
    assert_eq!(local.log().matches("fetched a blob").count(), fetched);
    assert!(local.digest("hub/library/nothing:1").is_err());
    let listed = local.env.ecrl_ok(&["repo", "list"]);
    assert!(!listed.contains("nothing"), "{listed}");
}

#[test]
fn importing_needs_its_own_permission_and_repo_pull_fetches_the_whole_image() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let a = Distribution::start(dir.path(), DistOpts::plain());
    let env = Env::with_anonymous("none");
    let _daemon = env.spawn_daemon(&[]);
    let host = localhost(&registry_address(&env));
    env.ecrl_ok(&["mirror", "cache", "create", "up", &a.host()]);
    let (image, digest) = layout(dir.path(), "policy", 5000);
    a.push_layout(&image, "app:1");
    a.push_layout(&image, "app:2");

    let user = |name: &str, actions: &[&str]| {
        let v: serde_json::Value = serde_json::from_str(
            &env.ecrl_ok(&["auth", "user", "create", name, "--output", "json"]),
        )
        .unwrap();
        let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": actions, "Resource": "*"}]});
        let file = env.path().join(format!("{name}.json"));
        std::fs::write(&file, policy.to_string()).unwrap();
        env.ecrl_ok(&["auth", "policy", "attach", name, file.to_str().unwrap()]);
        format!(
            "{}:{}",
            v["AccessKey"]["AccessKeyId"].as_str().unwrap(),
            v["AccessKey"]["SecretAccessKey"].as_str().unwrap()
        )
    };
    let pull = [
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchCheckLayerAvailability",
    ];
    let reader = user("reader", &pull);
    let mut import = pull.to_vec();
    import.extend(["ecr:BatchImportUpstreamImage", "ecr:CreateRepository"]);
    let importer = user("importer", &import);
    let inspect = |creds: &str, image: &str| {
        run(
            "skopeo",
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("--creds={creds}"),
                &format!("docker://{host}/{image}"),
            ],
        )
    };
    let denied = inspect(&reader, "up/app:1");
    assert!(
        !denied.status.success(),
        "a reader imported from the upstream"
    );
    assert!(
        stderr(&denied).contains("BatchImportUpstreamImage"),
        "{}",
        stderr(&denied)
    );
    let ok = inspect(&importer, "up/app:1");
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(sha256_digest(&ok.stdout), digest);
    // Cached now: reading it needs no import.
    assert!(inspect(&reader, "up/app:1").status.success());

    // A sync from the cache of an image whose blobs nobody pulled yet fetches them first.
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = Distribution::start(&other_dir, DistOpts::plain());
    let synced = env.ecrl_ok(&[
        "mirror",
        "sync",
        "up/app:1",
        &format!("{}/copied/app", other.host()),
        "--output",
        "json",
    ]);
    let synced: serde_json::Value = serde_json::from_str(&synced).unwrap();
    assert_eq!(
        synced["images"][0]["imageDigest"],
        digest.as_str(),
        "{synced}"
    );

    // `ecrl repo pull` of a tag never pulled: the whole image is fetched, then written out.
    let tar = dir.path().join("app.tar");
    env.ecrl_ok(&["repo", "pull", "up/app:2", "-o", tar.to_str().unwrap()]);
    let listed = run_ok("tar", &["tf", tar.to_str().unwrap()]);
    assert!(listed.contains("manifest.json"), "{listed}");
    assert!(
        listed.lines().count() >= 3,
        "config and layer missing: {listed}"
    );
    let out = env.ecrl(&["repo", "pull", "up/none:1", "-o", "/dev/null"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("has no manifest"), "{}", stderr(&out));
}

/// docker's own `registry-mirrors` setting (daemon.json) on the running dockerd, for the
/// length of a test: dockerd reloads it on SIGHUP; the file as it was is put back (and
/// reloaded) at the end.
struct DockerMirrorSetting {
    path: PathBuf,
    before: Option<Vec<u8>>,
    dockerd: String,
    mirror: String,
}

impl DockerMirrorSetting {
    fn set(mirror: &str) -> DockerMirrorSetting {
        let dockerd = std::fs::read_to_string("/var/run/docker.pid")
            .ok()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .or_else(|| {
                let out = run("pgrep", &["-o", "-x", "dockerd"]);
                out.status
                    .success()
                    .then(|| stdout(&out).trim().to_string())
            })
            .expect("this test reloads dockerd's daemon.json: no dockerd pid found");
        let path = PathBuf::from("/etc/docker/daemon.json");
        let before = std::fs::read(&path).ok();
        let mut config: serde_json::Value = match &before {
            Some(bytes) => serde_json::from_slice(bytes)
                .unwrap_or_else(|e| panic!("{} is no JSON: {e}", path.display())),
            None => serde_json::json!({}),
        };
        config["registry-mirrors"] = serde_json::json!([mirror]);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap_or_else(|e| {
            panic!(
                "this test sets registry-mirrors in {}: {e} (run it as root)",
                path.display()
            )
        });
        let setting = DockerMirrorSetting {
            path,
            before,
            dockerd,
            mirror: mirror.to_string(),
        };
        setting.reload();
        for _ in 0..100 {
            let out = run(
                "docker",
                &["info", "--format", "{{json .RegistryConfig.Mirrors}}"],
            );
            if stdout(&out).contains(mirror) {
                return setting;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("dockerd did not take registry-mirrors {mirror} on reload (see its log)");
    }

    fn reload(&self) {
        run_ok("kill", &["-HUP", &self.dockerd]);
    }
}

impl Drop for DockerMirrorSetting {
    fn drop(&mut self) {
        // dockerd's reload changes only what the file names: the setting as it was (none)
        // is loaded first, then the file is put back as it was.
        let mut config: serde_json::Value = self
            .before
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_else(|| serde_json::json!({}));
        if config.get("registry-mirrors").is_none() {
            config["registry-mirrors"] = serde_json::json!([]);
        }
        let _ = std::fs::write(&self.path, config.to_string());
        self.reload();
        for _ in 0..100 {
            let out = run(
                "docker",
                &["info", "--format", "{{json .RegistryConfig.Mirrors}}"],
            );
            if !stdout(&out).contains(&self.mirror) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        match &self.before {
            Some(bytes) => {
                let _ = std::fs::write(&self.path, bytes);
            }
            None => {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

#[test]
fn dockers_registry_mirrors_setting_sends_docker_hub_pulls_through_the_cache() {
    require_docker();
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let a = Distribution::start(dir.path(), DistOpts::plain());
    let local = Local::start(&a);
    local.env.ecrl_ok(&[
        "mirror",
        "cache",
        "create",
        "hub",
        &a.host(),
        "--docker-hub-mirror",
    ]);
    // A runnable image on the upstream under a Docker Hub official-image name.
    let images = DockerImages::new();
    let id = unique("hub-mirror");
    let built = format!("ecrl-test/hub-mirror:{id}");
    build_busybox_image(&images, &built, &id);
    let mut args = vec!["copy".to_string()];
    args.extend(a.skopeo_dest_flags());
    args.push(format!("docker-daemon:{built}"));
    args.push(format!("docker://{}/library/{id}:1", a.host()));
    run_ok(
        "skopeo",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    // The engine forgets it, so that its pull must fetch every layer.
    run_ok("docker", &["rmi", "-f", &built]);

    // docker itself is pointed at ecrl, as a user's daemon.json would; the Docker Hub name
    // is pulled (there is no internet here: only the mirror can answer) and runs.
    let port = local.host.rsplit_once(':').unwrap().1;
    let _setting = DockerMirrorSetting::set(&format!("http://127.0.0.1:{port}"));
    let hub_name = format!("{id}:1");
    images.track(&hub_name);
    run_ok("docker", &["pull", "-q", &hub_name]);
    let printed = run_ok(
        "docker",
        &["run", "--rm", &hub_name, "cat", "/etc/ecrl-test-id"],
    );
    assert_eq!(printed.trim(), id);
    // It went through the rule: cached under its prefix, fetched from the upstream.
    let listed = local.env.ecrl_ok(&["repo", "list"]);
    assert!(listed.contains(&format!("hub/library/{id}")), "{listed}");
    let log = local.log();
    assert!(log.contains("fetched a blob"), "{log}");
}

#[test]
fn an_upstream_with_token_auth_is_cached_with_the_login_made_for_it() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    // Distribution only stands in for the local daemon's settings; the upstream is a second
    // ecrld, which wants a bearer token (Docker's token flow) for every request.
    let plain = Distribution::start(dir.path(), DistOpts::plain());
    let local = Local::start(&plain);
    let b = PrivateEcrld::start();
    let (image, digest) = layout(dir.path(), "token", 3000);
    let mut args = vec!["copy".to_string()];
    args.extend(b.skopeo_dest_flags());
    args.push(format!("oci:{}", image.display()));
    args.push(format!("docker://{}/team/app:1", b.host));
    run_ok(
        "skopeo",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    local
        .env
        .ecrl_ok(&["mirror", "cache", "create", "priv", &b.host]);

    // Without credentials (the upstream hands out anonymous tokens that may read nothing):
    // the pull fails naming the upstream and the login it needs, and nothing is created.
    let e = local.digest("priv/team/app:1").unwrap_err();
    assert!(
        e.contains(&b.host) && e.contains(&format!("ecrl login {}", b.host)),
        "{e}"
    );
    let listed = local.env.ecrl_ok(&["repo", "list"]);
    assert!(!listed.contains("priv/team/app"), "{listed}");

    // With a login the pull goes through the token flow, and the image is kept.
    let out = local.login(&b.host, &b.user, &b.password);
    assert!(out.status.success(), "{}", stderr(&out));
    local.env.ecrl_ok(&["mirror", "cache", "validate", "priv"]);
    assert_eq!(local.digest("priv/team/app:1").unwrap(), digest);
    let described = local.env.ecrl_ok(&["image", "describe", "priv/team/app:1"]);
    assert!(
        described.contains(&format!("{}/team/app:1", b.host)),
        "{described}"
    );
}

/// `n` bytes no compressor shrinks, from `seed`.
fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

#[test]
fn the_cache_stays_within_its_bound_by_evicting_the_image_pulled_least_recently() {
    require_skopeo();
    let dir = tempfile::tempdir().unwrap();
    let a = Distribution::start(dir.path(), DistOpts::plain());
    let local = Local::start_with(&a, "registry:\n  cache_max_bytes: 2600KiB\n");
    local
        .env
        .ecrl_ok(&["mirror", "cache", "create", "up", &a.host()]);
    // Three images of about 1 MiB each: two fit, three do not.
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        let (image, _) = oci_layout_image(dir.path(), &[random_bytes(i as u64 + 1, 1 << 20)]);
        a.push_layout(&image, &format!("img/{name}:1"));
    }
    let pull = |name: &str| {
        let out = dir.path().join(unique("pulled"));
        let src = format!("docker://{}/up/img/{name}:1", local.host);
        run_ok(
            "skopeo",
            &[
                "copy",
                "--src-tls-verify=false",
                &src,
                &format!("oci:{}", out.display()),
            ],
        );
        // Pull times are kept in milliseconds: the next pull is later.
        std::thread::sleep(Duration::from_millis(20));
    };
    let images = |name: &str| -> usize {
        let out = local.env.ecrl(&[
            "image",
            "list",
            &format!("up/img/{name}"),
            "--output",
            "json",
        ]);
        if !out.status.success() {
            return 0;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["imageIds"].as_array().map_or(0, Vec::len)
    };
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !done() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{what}:\n{}",
                local.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    pull("a");
    pull("b");
    pull("a");
    assert_eq!((images("a"), images("b")), (1, 1));
    // The third goes past the bound: b, pulled least recently, goes.
    pull("c");
    wait_for("b evicted", &|| images("b") == 0);
    assert_eq!((images("a"), images("c")), (1, 1));
    assert!(local
        .log()
        .contains("evicted the image pulled least recently"));
    // Pulled again, b comes back from the upstream, and now a is the one pulled least
    // recently.
    pull("b");
    wait_for("a evicted", &|| images("a") == 0);
    assert_eq!((images("b"), images("c")), (1, 1));
}
