//! Webhooks (`[[webhooks]]`): events posted signed to a receiver on loopback, retried until
//! it accepts, kept across a killed server (and a killed replica on PostgreSQL).

use std::{collections::HashSet, time::Duration};

use serde_json::Value;

use crate::helpers::{APPID, Receiver, Server, TestApp, on_postgres, production, spawn_app_with};

async fn app_with(receiver: &Receiver, events: &[&str]) -> TestApp {
    let toml =
        format!("wechat_appid = {APPID:?}\nwechat_secret = {:?}\n{}", crate::helpers::SECRET, receiver.toml(events));
    spawn_app_with(|c| c.toml = Some(toml)).await
}

/// Waits until `done` holds of the receiver, failing after `within`.
async fn until(receiver: &Receiver, within: Duration, what: &str, done: impl Fn(&Receiver) -> bool) {
    let started = std::time::Instant::now();
    while !done(receiver) {
        assert!(started.elapsed() < within, "{what} not within {within:?}: {:?}", receiver.received());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids(events: &[Value], kind: &str) -> HashSet<String> {
    events.iter().filter(|e| e["kind"] == kind).map(|e| e["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn events_of_the_kinds_a_webhook_wants_are_posted_signed_and_no_others() {
    let receiver = Receiver::start().await;
    let app = app_with(&receiver, &["login", "ban"]).await;
    let login = app.login_ok("c1@amy").await;
    app.login_ok("c2@amy").await;
    assert_eq!(app.refresh(login["refresh_token"].as_str().unwrap()).await.status(), 200);
    let command = wxauth::admin::Command::BanUser {
        query: login["user"]["id"].as_str().unwrap().into(),
        reason: "spam".into(),
        until: None,
    };
    wxauth::admin::send(&app.admin_socket(), &command).await.unwrap().unwrap();

    until(&receiver, Duration::from_secs(10), "two logins and a ban", |r| r.received().len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let received = receiver.received();
    let kinds: Vec<&str> = received.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(received.len(), 3, "{kinds:?}");
    assert_eq!((ids(&received, "login").len(), ids(&received, "ban").len()), (2, 1), "{kinds:?}");
    let ban = received.iter().find(|e| e["kind"] == "ban").unwrap();
    assert_eq!((ban["user_id"].clone(), ban["actor"].clone()), (login["user"]["id"].clone(), "cli".into()));
    assert_eq!(ban["details"]["reason"], "spam");
    assert_eq!(receiver.bad_signatures(), 0);
}

#[tokio::test]
async fn a_refusing_receiver_gets_the_event_again_until_it_accepts() {
    let receiver = Receiver::start().await;
    receiver.refuse(true);
    let app = app_with(&receiver, &[]).await;
    app.login_ok("c1@amy").await;
    until(&receiver, Duration::from_secs(10), "a second attempt", |r| r.attempts() >= 2).await;
    assert!(receiver.received().is_empty());

    receiver.refuse(false);
    // The next retry is due within the doubling backoff's first seconds.
    until(&receiver, Duration::from_secs(20), "the accepted retry", |r| !r.received().is_empty()).await;
    let attempts = receiver.attempts();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(receiver.attempts(), attempts, "an accepted delivery was sent again");
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(receiver.bad_signatures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_delivered_after_the_server_is_killed_while_deliveries_are_due() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    receiver.refuse(true);
    let (_wechat, mut vars) = production(dir.path()).await;
    for (name, value) in crate::helpers::store_vars() {
        vars.insert(name, value);
    }
    let config = dir.path().join("wxauth.toml");
    std::fs::write(&config, receiver.toml(&["login"])).unwrap();
    let config = config.display().to_string();
    let server = Server::start(&vars, &["--config", &config, "serve"]);

    let mut expected = HashSet::new();
    for i in 0..20 {
        let (status, body) = server.login(&format!("first@kill{i}")).await;
        assert_eq!(status, 200, "{body}");
        expected.insert(body["user"]["id"].as_str().unwrap().to_owned());
    }
    until(&receiver, Duration::from_secs(10), "attempts", |r| r.attempts() >= 20).await;
    // Past sled's periodic flush: the answered logins' events are on disk.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill();

    receiver.refuse(false);
    let server = Server::start(&vars, &["--config", &config, "serve"]);
    let delivered = |r: &Receiver| {
        let users: HashSet<String> =
            r.received().iter().filter_map(|e| e["user_id"].as_str().map(str::to_owned)).collect();
        expected.is_subset(&users)
    };
    // Claims of the killed process hold for their lease (30 s), then come due again.
    until(&receiver, Duration::from_secs(90), "every login's event", delivered).await;
    assert_eq!(receiver.bad_signatures(), 0);
    drop(server);
    if on_postgres() {
        eprintln!("(the two-replica case is in replicas.rs)");
    }
}

#[tokio::test]
async fn the_python_receiver_of_the_docs_accepts_real_deliveries_and_refuses_forged_ones() {
    use std::io::BufRead;
    let python = std::process::Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success());
    if !python {
        assert!(std::env::var_os("CI").is_none(), "python3 is missing: .ci/run must install it");
        eprintln!("skipping: python3 is not installed");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/webhooks/receiver.py");
    let mut child = std::process::Command::new("python3")
        .args([script, "0"])
        .env("WXAUTH_WEBHOOK_SECRET", crate::helpers::WEBHOOK_SECRET)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let port = lines.next().unwrap().unwrap().strip_prefix("listening ").unwrap().to_owned();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let url = format!("http://127.0.0.1:{port}/");
    let toml = format!(
        "wechat_appid = {APPID:?}\nwechat_secret = {:?}\n[[webhooks]]\nurl = {url:?}\nsecret = {:?}\nevents = [\"login\"]\n",
        crate::helpers::SECRET,
        crate::helpers::WEBHOOK_SECRET
    );
    let app = spawn_app_with(|c| c.toml = Some(toml)).await;
    let login = app.login_ok("c1@amy").await;
    let line = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("no delivery").unwrap();
    assert!(line.starts_with("event ") && line.ends_with(" login"), "{line}");

    let body = br#"{"id":"forged","kind":"ban"}"#.to_vec();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let forged = wxauth::webhooks::sign(b"not the secret at all, not at all", now, &body);
    let stale = wxauth::webhooks::sign(crate::helpers::WEBHOOK_SECRET.as_bytes(), now - 600, &body);
    for header in [forged, stale, String::new()] {
        let resp = app.client.post(&url).header("Wxauth-Signature", header).body(body.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 400);
    }
    let fresh = wxauth::webhooks::sign(crate::helpers::WEBHOOK_SECRET.as_bytes(), now, &body);
    let resp = app.client.post(&url).header("Wxauth-Signature", fresh).body(body).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    let line = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert_eq!(line, "event forged ban");
    drop(login);
    let _ = child.kill();
    let _ = child.wait();
}
