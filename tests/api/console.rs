//! The operator console at `/admin/` on the admin listener: its files and their headers
//! over HTTP, and its flows in headless Chromium (`tests/browser/console.test.mjs`, run
//! here against a dev-mode server). `.ci/run` installs Chromium and the test's npm
//! packages; elsewhere a missing one skips the browser test with a message, unless `CI` is
//! set.

use std::{path::Path, process::Command};

use reqwest::{Method, redirect::Policy};
use serde_json::json;
use wxauth::store::AdminRole;

use crate::helpers::{Reply, TestApp, assert_error, spawn_app_with, spawn_dev_app_with};

/// The console's files, as the HTML page links them.
const FILES: [(&str, &str); 3] = [
    ("/admin/", "text/html; charset=utf-8"),
    ("/admin/console.js", "text/javascript; charset=utf-8"),
    ("/admin/console.css", "text/css; charset=utf-8"),
];

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

async fn app() -> TestApp {
    spawn_app_with(|c| {
        c.set("WXAUTH_ADMIN_LISTEN", "127.0.0.1:0");
    })
    .await
}

fn admin_url(app: &TestApp, path: &str) -> String {
    format!("{}{path}", app.admin_address.as_deref().unwrap())
}

#[tokio::test]
async fn the_console_is_three_small_files_served_with_a_strict_csp_and_no_other_origin() {
    let app = app().await;
    let mut total = 0;
    for (path, content_type) in FILES {
        let resp = app.client.get(admin_url(&app, path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let headers = resp.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["content-security-policy"], CSP, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        let body = resp.text().await.unwrap();
        total += body.len();
        // The SVG namespace is a name, not an address the browser fetches.
        let body = body.replace("'http://www.w3.org/2000/svg'", "");
        for other_origin in ["http://", "https://", "src=\"//", "href=\"//", "url(", "@import"] {
            assert!(!body.contains(other_origin), "{path} refers to another origin: {other_origin}");
        }
    }
    assert!(total < 300 * 1024, "the console's files are {total} bytes, over the 300 KB budget");
    let page = app.client.get(admin_url(&app, "/admin/")).send().await.unwrap().text().await.unwrap();
    let linked: Vec<&str> = page.split(['"', '\'']).filter(|s| s.starts_with("/admin/")).collect();
    assert_eq!(linked, ["/admin/console.css", "/admin/console.js", "/admin/docs"], "the page links other files");
}

#[tokio::test]
async fn admin_without_the_slash_redirects_to_the_console() {
    let app = app().await;
    let client = reqwest::Client::builder().redirect(Policy::none()).build().unwrap();
    let resp = client.get(admin_url(&app, "/admin")).send().await.unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(resp.headers()["location"], "/admin/");
    let resp = app.client.get(admin_url(&app, "/admin/nothing.js")).send().await.unwrap();
    assert_error(resp, 404, "not_found").await;
}

#[tokio::test]
async fn the_token_endpoint_names_the_token_in_use_and_its_role() {
    let app = app().await;
    for (name, role, expected) in [("support", AdminRole::Read, "read"), ("ops", AdminRole::Write, "write")] {
        let token = app.admin_token(name, role).await;
        let resp = app.admin(Method::GET, "/admin/v1/token", &token).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["cache-control"], "no-store");
        assert_eq!(resp.json::<serde_json::Value>().await.unwrap(), json!({"name": name, "role": expected}));
    }
    let resp = app.client.get(admin_url(&app, "/admin/v1/token")).send().await.unwrap();
    assert_error(resp, 401, "invalid_token").await;
}

#[tokio::test]
async fn the_stats_say_whether_wechat_is_reachable() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_ADMIN_LISTEN", "127.0.0.1:0");
        c.set("WXAUTH_WECHAT_BREAKER_FAILURES", "2");
    })
    .await;
    let token = app.admin_token("support", AdminRole::Read).await;
    let stats = async || -> serde_json::Value {
        app.admin(Method::GET, "/admin/v1/stats", &token).send().await.unwrap().json().await.unwrap()
    };
    assert_eq!(stats().await["wechat_reachable"], true);
    for code in ["down-1", "down-2"] {
        app.wechat.script(code, [Reply::Status(502, "<html>bad gateway</html>".into())]);
        assert_error(app.login(code).await, 502, "wechat_error").await;
    }
    assert_eq!(stats().await["wechat_reachable"], false, "the breaker is open");
}

pub(crate) fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Whether Chromium and the browser test's npm packages are here. Missing in CI is a failure.
pub(crate) fn browser_available(chromium: &str) -> bool {
    let node_modules = repo("tests/browser/node_modules/puppeteer-core").exists();
    let browser = Command::new(chromium).arg("--version").output().is_ok_and(|o| o.status.success());
    let node = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !(node_modules && browser && node) {
        assert!(
            std::env::var_os("CI").is_none(),
            "Chromium, Node or tests/browser's packages missing: .ci/run installs them"
        );
        eprintln!("skipping: needs Node, {chromium} and `npm ci` in tests/browser (`bash .ci/run` does both)");
    }
    node_modules && browser && node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_passes_its_browser_tests_in_headless_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !browser_available(&chromium) {
        return;
    }
    let app = spawn_dev_app_with(&[("WXAUTH_ADMIN_LISTEN", "127.0.0.1:0")]).await;
    let write = app.admin_token("ops", AdminRole::Write).await;
    let read = app.admin_token("support", AdminRole::Read).await;
    let (public, admin) = (app.address.clone(), app.admin_address.clone().unwrap());
    let out = tokio::task::spawn_blocking(move || {
        let mut command = Command::new("node");
        command
            .args(["--test", "--test-reporter=spec", "console.test.mjs"])
            .current_dir(repo("tests/browser"))
            .env("WXAUTH_URL", public)
            .env("WXAUTH_ADMIN_URL", admin)
            .env("WXAUTH_WRITE_TOKEN", write)
            .env("WXAUTH_READ_TOKEN", read)
            .env("CHROMIUM", chromium);
        // `WXAUTH_SCREENSHOTS=docs/console cargo test --test api console` refreshes the
        // screenshots in docs/console.md.
        if let Some(dir) = std::env::var_os("WXAUTH_SCREENSHOTS") {
            command.env("WXAUTH_SCREENSHOTS", repo("").join(dir));
        }
        command.output().unwrap()
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the console's browser tests failed:\n{report}");
    for flow in [
        "an operator finds a person by phone number",
        "a read token sees everything and no write action",
        "the console speaks Chinese",
        "on a phone the pages fit the screen",
        "users and events page forward and back",
        "nothing left the admin origin",
    ] {
        assert!(report.contains(flow), "the flow {flow:?} did not run:\n{report}");
    }
}
