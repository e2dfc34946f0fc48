//! The web console (`/ui/` on the registry's listener). Over plain HTTP: sign-in with a
//! login token or an access key, what a user's policies let them see and do (checked on the
//! server, whatever the page shows), forms from another site refused, bad sign-ins throttled.
//! In a real browser (Debian's Chromium, headless, through chromedriver): sign in, browse,
//! delete an image, watch a task go RUNNING → STOPPED without a reload, a 375 px wide page;
//! screenshots go to target/console-screenshots/.

mod common;

use common::registry::{
    build_task_busybox, register_busybox_task, registry_address, require_docker, sha256_digest,
};
use common::Env;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A client that keeps cookies and does not follow redirects (the tests look at them).
fn browser_like() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Pushes a one-layer image under `tag` with `auth`; answers its digest.
fn push_image(addr: &str, auth: &str, repo: &str, tag: &str) -> String {
    let http = reqwest::blocking::Client::new();
    let config = json!({"architecture": "arm64", "os": "linux", "tag": tag}).to_string();
    let layer = format!("layer {repo} {tag}").repeat(50);
    for blob in [config.as_bytes(), layer.as_bytes()] {
        let r = http
            .post(format!(
                "http://{addr}/v2/{repo}/blobs/uploads/?digest={}",
                sha256_digest(blob)
            ))
            .header("authorization", auth)
            .body(blob.to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256_digest(config.as_bytes()), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256_digest(layer.as_bytes()), "size": layer.len()}],
    })
    .to_string();
    let r = http
        .put(format!("http://{addr}/v2/{repo}/manifests/{tag}"))
        .header("authorization", auth)
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    sha256_digest(manifest.as_bytes())
}

/// The console's delete-image form, posted with `csrf` (`None`: without one).
fn post_delete(
    http: &reqwest::blocking::Client,
    addr: &str,
    csrf: Option<&str>,
    digest: &str,
) -> reqwest::blocking::Response {
    let mut form = vec![("repository", "team/web"), ("digest", digest)];
    if let Some(csrf) = csrf {
        form.push(("csrf", csrf));
    }
    http.post(format!("http://{addr}/ui/actions/delete-image"))
        .form(&form)
        .send()
        .unwrap()
}

/// The hidden form token of a page.
fn csrf(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a csrf field")
        + 19;
    page[at..at + 32].to_string()
}

fn sign_in(
    http: &reqwest::blocking::Client,
    addr: &str,
    form: &[(&str, &str)],
) -> reqwest::blocking::Response {
    http.post(format!("http://{addr}/ui/login"))
        .form(form)
        .send()
        .unwrap()
}

#[test]
fn sign_in_and_what_a_user_sees_and_may_do_follow_the_policies() {
    let env = Env::with_anonymous("none");
    let _daemon = env.spawn_daemon(&[]);
    let addr = registry_address(&env);
    let status = env.ecrl_ok(&["daemon", "status"]);
    assert!(status.contains(&format!("http://{addr}/ui/")), "{status}");
    let owner = basic("AWS", env.ecrl_ok(&["get-login-password"]).trim());
    let kept = push_image(&addr, &owner, "team/web", "1");
    push_image(&addr, &owner, "team/web", "2");
    push_image(&addr, &owner, "secret/app", "1");

    // Not signed in: every page sends the browser to sign in, and back afterwards.
    let http = browser_like();
    let r = http
        .get(format!("http://{addr}/ui/repositories/team/web"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/ui/login?next=%2Fui%2Frepositories%2Fteam%2Fweb"
    );
    let r = post_delete(&http, &addr, None, &kept);
    assert_eq!(
        r.status(),
        303,
        "an action without a session goes to sign-in"
    );

    // A user with an access key, allowed to list and read team/* only.
    let created: Value =
        serde_json::from_str(&env.ecrl_ok(&["auth", "user", "create", "dev", "--output", "json"]))
            .unwrap();
    let key_id = created["AccessKey"]["AccessKeyId"].as_str().unwrap();
    let secret = created["AccessKey"]["SecretAccessKey"].as_str().unwrap();
    let account = created["User"]["Arn"]
        .as_str()
        .unwrap()
        .split(':')
        .nth(4)
        .unwrap()
        .to_string();
    let policy = env.path().join("read-team.json");
    std::fs::write(
        &policy,
        json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow",
            "Action": ["ecr:DescribeRepositories", "ecr:DescribeImages", "ecr:BatchGetImage"],
            "Resource": format!("arn:aws:ecr:*:{account}:repository/team/*")}]})
        .to_string(),
    )
    .unwrap();
    env.ecrl_ok(&["auth", "policy", "attach", "dev", policy.to_str().unwrap()]);

    // A wrong secret: refused, no cookie.
    let r = sign_in(&http, &addr, &[("key_id", key_id), ("secret", "nope")]);
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r
        .text()
        .unwrap()
        .contains("invalid access key id or secret"));
    // The right one: an HttpOnly, SameSite=Strict session cookie, and back to the page asked.
    let r = sign_in(
        &http,
        &addr,
        &[
            ("key_id", key_id),
            ("secret", secret),
            ("next", "/ui/repositories/team/web"),
        ],
    );
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/repositories/team/web");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("ecrl_console=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/ui"),
        "{cookie}"
    );
    assert!(!cookie.contains(secret));

    // What dev may see: team/web, not secret/app; images, without delete or tag forms.
    let list = http
        .get(format!("http://{addr}/ui/repositories"))
        .send()
        .unwrap();
    assert_eq!(list.status(), 200);
    assert!(list.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    let list = list.text().unwrap();
    assert!(
        list.contains("team/web") && !list.contains("secret/app"),
        "{list}"
    );
    assert!(list.contains(">dev<"), "the signed-in user is shown");
    let page = http
        .get(format!("http://{addr}/ui/repositories/team/web"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        page.contains(&kept) && page.contains("linux/arm64"),
        "{page}"
    );
    assert!(!page.contains("/ui/actions/delete-image"), "{page}");
    let r = http
        .get(format!("http://{addr}/ui/repositories/secret/app"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let denied = r.text().unwrap();
    assert!(denied.contains("may not perform ecr:DescribeImages"));
    // A repository that does not exist is answered alike: no telling what exists.
    let r = http
        .get(format!("http://{addr}/ui/repositories/secret/nothing"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.text().unwrap(),
        denied.replace("secret/app", "secret/nothing")
    );
    // Whatever the page shows, the server decides: a delete made by hand, with dev's own
    // form token, is refused, and the image stays.
    let dev_csrf = csrf(&list);
    let r = post_delete(&http, &addr, Some(&dev_csrf), &kept);
    assert_eq!(r.status(), 403);
    assert!(r
        .text()
        .unwrap()
        .contains("may not perform ecr:BatchDeleteImage"));
    let registry_page = http
        .get(format!("http://{addr}/ui/registry"))
        .send()
        .unwrap();
    assert_eq!(registry_page.status(), 403);

    // The owner, signed in with a login token, sees everything and may delete.
    let owner_http = browser_like();
    let token = env.ecrl_ok(&["get-login-password"]).trim().to_string();
    let r = sign_in(&owner_http, &addr, &[("token", &token)]);
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/repositories");
    let page = owner_http
        .get(format!("http://{addr}/ui/repositories/team/web"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("/ui/actions/delete-image"));
    let owner_csrf = csrf(&page);
    // dev posting with a form token of its own session: refused by policy.
    let dev_page = http.get(format!("http://{addr}/ui/tasks")).send().unwrap();
    assert_eq!(dev_page.status(), 403);
    let r = post_delete(&http, &addr, Some(&owner_csrf), &kept);
    assert_eq!(r.status(), 403, "another session's form token");
    // The owner's own form without its token (as another site would post it): refused.
    let r = post_delete(&owner_http, &addr, None, &kept);
    assert_eq!(r.status(), 403);
    assert!(r.text().unwrap().contains("came from another site"));
    let r = reqwest::blocking::Client::new()
        .head(format!("http://{addr}/v2/team/web/manifests/{kept}"))
        .header("authorization", &owner)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "nothing was deleted");
    // With it: deleted, and the page says so.
    let r = post_delete(&owner_http, &addr, Some(&owner_csrf), &kept);
    assert_eq!(r.status(), 303);
    let back = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        back.starts_with("/ui/repositories/team/web?done="),
        "{back}"
    );
    let page = owner_http
        .get(format!("http://{addr}{back}"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        page.contains("Deleted image") && !page.contains(&kept),
        "{page}"
    );
    // Moving a tag: 2's tag onto... the only image left is 2; tag it "stable".
    let r = owner_http
        .post(format!("http://{addr}/ui/actions/tag-image"))
        .form(&[
            ("csrf", owner_csrf.as_str()),
            ("repository", "team/web"),
            (
                "digest",
                &page[page.find("data-digest=\"").unwrap() + 13..][..71],
            ),
            ("tag", "stable"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let tags: Value = reqwest::blocking::Client::new()
        .get(format!("http://{addr}/v2/team/web/tags/list"))
        .header("authorization", &owner)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(tags["tags"], json!(["2", "stable"]));
    // Signed out: the session is gone.
    let r = owner_http
        .post(format!("http://{addr}/ui/logout"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = owner_http
        .get(format!("http://{addr}/ui/repositories"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
}

#[test]
fn bad_sign_ins_are_throttled_and_odd_input_is_refused_plainly() {
    let env = Env::with_anonymous("none");
    let _daemon = env.spawn_daemon(&[]);
    let addr = registry_address(&env);
    let http = browser_like();
    // Ten wrong tries for one key id from one address, then 429 even for the right secret.
    let created: Value =
        serde_json::from_str(&env.ecrl_ok(&["auth", "user", "create", "dev", "--output", "json"]))
            .unwrap();
    let key_id = created["AccessKey"]["AccessKeyId"].as_str().unwrap();
    let secret = created["AccessKey"]["SecretAccessKey"].as_str().unwrap();
    for _ in 0..10 {
        let r = sign_in(&http, &addr, &[("key_id", key_id), ("secret", "wrong")]);
        assert_eq!(r.status(), 401);
    }
    let r = sign_in(&http, &addr, &[("key_id", key_id), ("secret", secret)]);
    assert_eq!(r.status(), 429);
    assert!(r
        .text()
        .unwrap()
        .contains("too many failed authentication attempts"));
    // A login token still signs in (it cannot have been guessed).
    let token = env.ecrl_ok(&["get-login-password", "--user", "dev"]);
    let r = sign_in(&http, &addr, &[("token", token.trim())]);
    assert_eq!(r.status(), 303);
    // A forged token, an empty form, a huge form, a foreign `next`.
    let r = sign_in(&browser_like(), &addr, &[("token", "ecrl1.forged.token")]);
    assert_eq!(r.status(), 401);
    let r = sign_in(&browser_like(), &addr, &[]);
    assert_eq!(r.status(), 400);
    let big = "x".repeat(100_000);
    let r = sign_in(&browser_like(), &addr, &[("token", big.as_str())]);
    assert_eq!(r.status(), 413);
    let r = sign_in(
        &browser_like(),
        &addr,
        &[
            ("token", token.trim()),
            ("next", "https://elsewhere.example/"),
        ],
    );
    assert_eq!(r.headers()["location"], "/ui/repositories");
    // Pages that are not there, names that are not names.
    for path in [
        "/ui/nothing",
        "/ui/repositories/NOT..A..NAME",
        "/ui/repositories/team/web@sha256:zz",
        "/ui/tasks/../../etc/passwd",
        "/ui/task-definitions/x",
    ] {
        let r = http.get(format!("http://{addr}{path}")).send().unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    // The registry's own paths are untouched by the console.
    let r = http.get(format!("http://{addr}/v2/")).send().unwrap();
    assert_eq!(r.status(), 401);
}

// ---- in a real browser ------------------------------------------------------------------

/// chromedriver on a free port, stopped when dropped.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Driver {
    let binary = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect(
            "this test needs Chromium's chromedriver (Debian: apt-get install chromium \
             chromium-driver; tests/run installs them)",
        );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::blocking::get(format!("{url}/status")).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Driver { child, url }
}

fn screenshots() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(client: &fantoccini::Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// The text of the first element `css` finds (found again when the live view replaced it
/// between the find and the read).
async fn text_of(client: &fantoccini::Client, css: &str) -> String {
    let mut tries = 0;
    loop {
        let found = client.find(fantoccini::Locator::Css(css)).await;
        let read = match found {
            Ok(element) => element.text().await,
            Err(e) => Err(e),
        };
        match read {
            Ok(text) => return text,
            Err(e) if tries < 20 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{css}: {e}"),
        }
    }
}

#[test]
fn in_a_browser_sign_in_browse_delete_an_image_and_watch_a_task_stop() {
    require_docker();
    build_task_busybox();
    let driver = chromedriver();
    let env = Env::with_anonymous("none");
    let _daemon = env.spawn_daemon(&[]);
    let addr = registry_address(&env);
    let owner = basic("AWS", env.ecrl_ok(&["get-login-password"]).trim());
    let gone = push_image(&addr, &owner, "team/web", "1.0");
    push_image(&addr, &owner, "team/web", "1.1");
    push_image(&addr, &owner, "team/api", "3");
    // A task that runs until it is stopped.
    register_busybox_task(
        &env,
        &addr,
        "console-sleep",
        "app",
        r#""stopTimeout":2,"command":["sh","-c","echo hello from the task; sleep 600"]"#,
    );
    let run: Value =
        serde_json::from_str(&env.ecrl_ok(&["task", "run", "console-sleep", "--output", "json"]))
            .unwrap();
    let task_arn = run["tasks"][0]["taskArn"]
        .as_str()
        .or_else(|| run["taskArn"].as_str())
        .unwrap_or_else(|| panic!("{run}"))
        .to_string();
    let task_id = task_arn.rsplit('/').next().unwrap().to_string();
    let token = env.ecrl_ok(&["get-login-password"]).trim().to_string();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use fantoccini::{ClientBuilder, Locator};
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": "/usr/bin/chromium",
                   "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                            "--disable-dev-shm-usage", "--window-size=1280,900"]}),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("chromedriver starts a Chromium session");
        let base = format!("http://{addr}");

        // Sign in: the console sends an unknown browser to the sign-in page.
        client.goto(&format!("{base}/ui/")).await.unwrap();
        assert!(client.current_url().await.unwrap().path() == "/ui/login");
        shot(&client, "01-sign-in").await;
        client
            .find(Locator::Css("#token"))
            .await
            .unwrap()
            .send_keys(&token)
            .await
            .unwrap();
        client
            .find(Locator::Css("button.primary"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert_eq!(text_of(&client, "h1").await, "Repositories");
        let rows = text_of(&client, "#repositories tbody").await;
        assert!(
            rows.contains("team/web") && rows.contains("team/api"),
            "{rows}"
        );
        shot(&client, "02-repositories").await;

        // Browse to a repository: its images, newest first, with their platforms.
        client
            .find(Locator::LinkText("team/web"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        assert_eq!(text_of(&client, "h1").await, "team/web");
        let images = text_of(&client, "#images tbody").await;
        assert!(images.contains("1.0") && images.contains("1.1"), "{images}");
        assert!(images.contains("linux/arm64"), "{images}");
        shot(&client, "03-repository").await;

        // Delete image 1.0: confirm, and it is gone, here and from the registry.
        let row = client
            .find(Locator::Css(&format!("tr[data-digest='{gone}']")))
            .await
            .unwrap();
        row.find(Locator::Css("button.danger"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        client.accept_alert().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let flash = client.find(Locator::Css(".flash.ok")).await;
            if let Ok(flash) = flash {
                assert!(flash.text().await.unwrap().contains("Deleted image"));
                break;
            }
            assert!(Instant::now() < deadline, "no confirmation of the delete");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let images = text_of(&client, "#images tbody").await;
        assert!(
            !images.contains("1.0") && images.contains("1.1"),
            "{images}"
        );
        shot(&client, "04-image-deleted").await;

        // 375 px wide: the page fits; wide tables scroll inside their box.
        client.set_window_size(375, 800).await.unwrap();
        client.refresh().await.unwrap();
        let fits = client
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            fits,
            json!(true),
            "the page is wider than the window at 375 px"
        );
        shot(&client, "05-repository-375px").await;
        client.set_window_size(1280, 900).await.unwrap();

        // The task: RUNNING, its output; stopped from the page, the page follows it to
        // STOPPED by itself (server-sent events, no reload).
        client
            .goto(&format!("{base}/ui/tasks/{task_id}"))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while text_of(&client, "#task-status").await != "RUNNING" {
            assert!(Instant::now() < deadline, "the task did not show RUNNING");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !text_of(&client, "#live")
            .await
            .contains("hello from the task")
        {
            assert!(Instant::now() < deadline, "the task's output did not show");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        shot(&client, "06-task-running").await;
        client
            .find(Locator::Css("form[action='/ui/actions/stop-task'] button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        client.accept_alert().await.unwrap();
        // Marked after the stop's page loaded: a reload would lose it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.find(Locator::Css(".flash.ok")).await.is_err() {
            assert!(Instant::now() < deadline, "the stop was not confirmed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        client
            .execute("window.ecrlMarker = 'same page';", vec![])
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if text_of(&client, "#task-status").await == "STOPPED" {
                break;
            }
            assert!(Instant::now() < deadline, "the page did not show STOPPED");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let marker = client
            .execute("return window.ecrlMarker || null;", vec![])
            .await
            .unwrap();
        assert_eq!(marker, json!("same page"), "the page was reloaded");
        let live = text_of(&client, "#live").await;
        assert!(live.contains("stopped by owner in the console"), "{live}");
        // Nothing left to stop: the button went with the live update.
        assert!(client
            .find(Locator::Css("form[action='/ui/actions/stop-task']"))
            .await
            .is_err());
        shot(&client, "07-task-stopped").await;

        // The registry page: storage and recent events (the delete among them).
        client.goto(&format!("{base}/ui/registry")).await.unwrap();
        let events = text_of(&client, "#events").await;
        assert!(events.contains("deleted team/web:1.0"), "{events}");
        shot(&client, "08-registry").await;
        client.close().await.unwrap();
    });
    let state: Value =
        serde_json::from_str(&env.ecrl_ok(&["task", "inspect", &task_id, "--output", "json"]))
            .unwrap();
    let last = state["tasks"][0]["lastStatus"]
        .as_str()
        .or_else(|| state["lastStatus"].as_str())
        .unwrap_or_default()
        .to_string();
    assert_eq!(last, "STOPPED", "{state}");
}

/// Over HTTPS the console is the same, and its session cookie is marked Secure.
#[test]
fn the_console_is_served_over_https_with_a_secure_session_cookie() {
    let env = Env::with_anonymous("none");
    let _daemon = env.spawn_daemon(&["--tls", "--tls-addr", "127.0.0.1:0"]);
    let info = env.info();
    let tls = info["registryTlsAddress"].as_str().unwrap().to_string();
    let port = tls.rsplit_once(':').unwrap().1;
    let ca = env.path().join("home/.config/ecrl/tls/ca.crt");
    let token = env.ecrl_ok(&["get-login-password"]).trim().to_string();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&ca)
        .args(["-D", "-", "-o", "/dev/null", "--data-urlencode"])
        .arg(format!("token={token}"))
        .arg(format!("https://localhost:{port}/ui/login"))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(headers.starts_with("http/1.1 303"), "{headers}");
    let cookie = headers
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("{headers}"));
    assert!(
        cookie.contains("; secure") && cookie.contains("httponly"),
        "{cookie}"
    );
}
