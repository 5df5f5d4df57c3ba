//! What the real binary acknowledged survives SIGKILL and SIGTERM, returning logins never wait
//! for a flush, and a failing disk gets 503s until writes work again.

use std::{path::Path, time::Duration};

use serde_json::{Value, json};

use crate::helpers::{Reply, Server, on_postgres, production, skip_on_postgres};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_logins_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, vars) = production(dir.path()).await;
    let server = Server::start(&vars, &["serve"]);
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, body) = server.login(&format!("c@survivor{i}")).await;
        assert_eq!(status, 200);
        ids.push(body["user"]["id"].clone());
    }
    server.kill();

    let server = Server::start(&vars, &["serve"]);
    for (i, id) in ids.iter().enumerate() {
        let (_, body) = server.login(&format!("again@survivor{i}")).await;
        assert_eq!(&body["user"]["id"], id, "binding {i} was lost");
        assert_eq!(body["user"]["created"], false);
    }
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returning_logins_answer_without_waiting_for_a_flush() {
    if skip_on_postgres("sled's group commit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (wechat, vars) = production(dir.path()).await;
    // Twenty returning logins, each with a session key WeChat has not sent before: each one
    // writes, and none of them may wait for the disk.
    for i in 0..20 {
        wechat.script(&format!("again{i}@ret"), [Reply::success("o_ret", &format!("new-key-{i}=="))]);
    }
    let server = Server::start(&vars, &["serve"]);
    let (status, first) = server.login("first@ret").await;
    assert_eq!((status, first["user"]["created"].as_bool()), (200, Some(true)));
    for i in 0..20 {
        let (status, body) = server.login(&format!("again{i}@ret")).await;
        assert_eq!((status, &body["user"]["id"]), (200, &first["user"]["id"]));
    }

    let log = server.stop();

    // The shutdown line counts durable flushes: the first login's and the final one.
    let closed = log.lines().find(|l| l.contains("store closed")).unwrap_or_else(|| panic!("no store line:\n{log}"));
    let event: Value = serde_json::from_str(closed).unwrap();
    assert_eq!(event["group_commits"], 2, "returning logins waited for flushes: {closed}");
    assert_eq!(event["fsyncs"], 2, "{closed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_acknowledged_just_before_sigterm_survives_the_restart() {
    use crate::open_data::{IV, encrypt, phone_plaintext};
    let dir = tempfile::tempdir().unwrap();
    let (wechat, vars) = production(dir.path()).await;
    // A returning login with a new session key is acknowledged before any flush: only the
    // flush at shutdown (or sled's, every 500 ms) makes it durable.
    let newest = "RERERERERERERERERERERA==";
    wechat.script("again@term", [Reply::success("o_term", newest)]);
    let server = Server::start(&vars, &["serve"]);
    let (_, first) = server.login("first@term").await;
    let token = first["access_token"].as_str().unwrap().to_owned();
    assert_eq!(server.login("again@term").await.0, 200);

    let log = server.stop();

    // sled also flushes when the process drops it, so the survival below cannot tell the
    // final flush from that one: the shutdown line counts it (the first login's, the final).
    let closed = log.lines().find(|l| l.contains("store closed")).unwrap_or_else(|| panic!("no store line:\n{log}"));
    let event: Value = serde_json::from_str(closed).unwrap();
    // On PostgreSQL every acknowledged write was committed: there is nothing to flush.
    if !on_postgres() {
        assert_eq!(event["group_commits"], 2, "no final flush at shutdown: {closed}");
    }
    let server = Server::start(&vars, &["serve"]);
    let data = encrypt(newest, &phone_plaintext(crate::helpers::APPID));
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/me/phone", server.address))
        .bearer_auth(&token)
        .json(&json!({"encrypted_data": data, "iv": IV}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the newest session key was lost: {}", resp.text().await.unwrap());
    server.kill();
}

/// Caps the size of files `server` may write to `bytes` (`None`: no cap), as a full disk
/// would: writes past it fail with EFBIG.
fn cap_file_size(server: &Server, bytes: Option<u64>) {
    use rustix::process::{Resource, Rlimit, prlimit};
    let pid = rustix::process::Pid::from_child(&server.child);
    prlimit(Some(pid), Resource::Fsize, Rlimit { current: bytes, maximum: None }).unwrap();
}

fn size_of(file: &Path) -> u64 {
    std::fs::metadata(file).unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_disk_gets_503_and_the_server_recovers_once_writes_work_again() {
    if skip_on_postgres("the data directory's disk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, vars) = production(dir.path()).await;
    let server = Server::start(&vars, &["serve"]);
    let (_, before) = server.login("c@before").await;

    cap_file_size(&server, Some(size_of(&dir.path().join("data/db"))));
    let client = reqwest::Client::new();
    for i in 0..5 {
        let resp = client
            .post(format!("{}/v1/login", server.address))
            .json(&json!({ "code": format!("c@during{i}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503, "login {i} while the disk fails");
        assert_eq!(resp.headers()["retry-after"], "1");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    }
    let (status, readiness) = server.get("/readyz", None).await;
    assert!(status == 503 && readiness.contains("store"), "{status} {readiness}");
    assert_eq!(server.get("/healthz", None).await.0, 503);

    cap_file_size(&server, None);
    let started = std::time::Instant::now();
    let after = loop {
        let (status, body) = server.login("c@during0").await;
        if status == 200 {
            break body;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never recovered: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(after["user"]["created"], true, "{after}");
    // Within a second of its failed probe, /readyz still gives that probe's answer.
    server.wait_ready(wxauth::api::health::PROBE_INTERVAL + Duration::from_secs(5)).await;
    assert_eq!(server.login("again@before").await.1["user"]["id"], before["user"]["id"]);
    let log = server.stop();
    assert!(log.contains("database opened again"), "{log}");
}
