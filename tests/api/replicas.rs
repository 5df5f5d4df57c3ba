//! Two replicas of the real binary on one PostgreSQL database, sharing one keys directory,
//! as docs/storage.md's two-replica deployment runs them.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use jsonwebtoken::jwk::JwkSet;
use serde_json::Value;

use crate::helpers::{MockWechat, PHONE, Receiver, Server, production, refused_start};

/// The settings of replicas on a fresh database; `None` (after saying why) when there is
/// no server.
async fn on_fresh_database(dir: &Path) -> Option<(MockWechat, HashMap<String, String>)> {
    let database = crate::postgres::fresh_database()?;
    let (wechat, mut vars) = production(dir).await;
    vars.insert("WXAUTH_STORE".into(), "postgres".into());
    vars.insert("WXAUTH_DATABASE_URL".into(), database);
    vars.remove("WXAUTH_DATA_DIR");
    Some((wechat, vars))
}

/// The settings of replica `name`: one machine here, so each needs an admin socket of its own.
fn replica(dir: &Path, vars: &HashMap<String, String>, name: &str) -> HashMap<String, String> {
    let mut vars = vars.clone();
    vars.insert("WXAUTH_ADMIN_SOCKET".into(), dir.join(format!("{name}.sock")).display().to_string());
    vars
}

/// Starts replicas `a` and `b` at once: on an empty database they race to migrate it (the
/// migrator's lock orders them).
fn start_both(dir: &Path, vars: &HashMap<String, String>) -> [Server; 2] {
    let start = |name: &str| {
        let vars = replica(dir, vars, name);
        std::thread::spawn(move || Server::start(&vars, &["serve"]))
    };
    let (a, b) = (start("a"), start("b"));
    [a.join().unwrap(), b.join().unwrap()]
}

/// Two replicas on a fresh database; `None` (after saying why) when there is no server.
async fn two_replicas(dir: &Path) -> Option<(MockWechat, [Server; 2])> {
    let (wechat, vars) = on_fresh_database(dir).await?;
    Some((wechat, start_both(dir, &vars)))
}

/// The phone number replica `server` shows the holder of `token`, if any.
async fn phone_at(server: &Server, token: &str) -> Option<String> {
    let (status, me) = server.get("/v1/me", Some(token)).await;
    assert_eq!(status, 200, "{me}");
    serde_json::from_str::<Value>(&me).unwrap()["phone"]["pure_phone_number"].as_str().map(str::to_owned)
}

/// Logs `code` in at `server` and verifies a phone number there; the access token.
async fn with_phone(server: &Server, code: &str) -> String {
    let (status, login) = server.login(code).await;
    assert_eq!(status, 200, "{login}");
    let token = login["access_token"].as_str().unwrap().to_owned();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/me/phone", server.address))
        .bearer_auth(&token)
        .json(&serde_json::json!({"code": "phone-code"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    token
}

/// A login at `server`: status and body, or `None` when the connection failed.
async fn login(client: &reqwest::Client, server: &str, code: &str) -> Option<(u16, Value)> {
    let resp =
        client.post(format!("{server}/v1/login")).json(&serde_json::json!({ "code": code })).send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_first_logins_of_one_openid_across_two_replicas_make_one_user() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_wechat, replicas)) = two_replicas(dir.path()).await else { return };
    let client = reqwest::Client::new();
    let addresses: Vec<String> = replicas.iter().map(|r| r.address.clone()).collect();

    let answers = futures_util::future::join_all((0..50).map(|i| {
        let (client, server) = (client.clone(), addresses[i % 2].clone());
        async move { login(&client, &server, &format!("c{i}@same")).await.expect("a replica did not answer") }
    }))
    .await;

    let mut ids = HashSet::new();
    let mut created = 0;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        ids.insert(body["user"]["id"].as_str().unwrap().to_owned());
        created += usize::from(body["user"]["created"] == true);
    }
    assert_eq!(ids.len(), 1, "one openid became several users: {ids:?}");
    assert_eq!(created, 1, "{created} logins say they created the user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_replicas_publish_the_same_jwks_and_accept_each_others_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_wechat, [a, b])) = two_replicas(dir.path()).await else { return };
    let jwks = |server: &Server| {
        let url = format!("{}/.well-known/jwks.json", server.address);
        async move { reqwest::get(url).await.unwrap().json::<JwkSet>().await.unwrap() }
    };
    let (from_a, from_b) = (jwks(&a).await, jwks(&b).await);
    assert!(!from_a.keys.is_empty());
    assert_eq!(serde_json::to_value(&from_a).unwrap(), serde_json::to_value(&from_b).unwrap());

    let (status, body) = a.login("c@ann").await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let (status, me) = b.get("/v1/me", Some(token)).await;
    assert_eq!(status, 200, "replica b refused replica a's token: {me}");
    // And a refresh token of one replica rotates at the other.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/token/refresh", b.address))
        .json(&serde_json::json!({"refresh_token": body["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_load_loses_no_acknowledged_binding_and_the_other_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_wechat, [a, b])) = two_replicas(dir.path()).await else { return };
    let client = reqwest::Client::new();
    // Code → user id, for every first login a replica acknowledged.
    let acknowledged: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    // Answers that were not a success, and failures at the surviving replica.
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    let workers: Vec<_> = (0..16)
        .map(|w| {
            let (client, acknowledged, failures, stop) =
                (client.clone(), acknowledged.clone(), failures.clone(), stop_rx.clone());
            let servers = [a.address.clone(), b.address.clone()];
            tokio::spawn(async move {
                let mut n = 0;
                while !*stop.borrow() {
                    n += 1;
                    let (server, code) = (&servers[(w + n) % 2], format!("first@w{w}n{n}"));
                    match login(&client, server, &code).await {
                        Some((200, body)) => {
                            let id = body["user"]["id"].as_str().unwrap().to_owned();
                            acknowledged.lock().unwrap().insert(code, id);
                        }
                        // The killed replica: connection refused or reset, never an answer
                        // that is not a success.
                        None if *server == servers[0] => {}
                        other => failures.lock().unwrap().push(format!("{server} {code}: {other:?}")),
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = acknowledged.lock().unwrap().len();
    a.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop_tx.send(true).unwrap();
    for worker in workers {
        worker.await.unwrap();
    }

    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "the surviving replica failed: {failures:?}");
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(before > 10 && acknowledged.len() > before + 10, "too little load: {before} then {}", acknowledged.len());
    // Every acknowledged first login is bound: logging in again finds the same user.
    for (code, id) in &acknowledged {
        let again = code.replace("first@", "again@");
        let (status, body) = login(&client, &b.address, &again).await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!((body["user"]["id"].as_str(), &body["user"]["created"]), (Some(id.as_str()), &Value::Bool(false)));
    }
    b.stop();
}

/// Runs `sql` on the test server's maintenance database.
async fn on_server(sql: String) {
    use sqlx::Connection;
    let url = crate::postgres::server_url().unwrap();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_away_requests_get_503_in_time_and_the_replica_recovers_without_a_restart() {
    let Some(database) = crate::postgres::fresh_database() else { return };
    let name = url::Url::parse(&database).unwrap().path().trim_start_matches('/').to_owned();
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, mut vars) = production(dir.path()).await;
    vars.insert("WXAUTH_STORE".into(), "postgres".into());
    vars.insert("WXAUTH_DATABASE_URL".into(), database);
    vars.insert("WXAUTH_DATABASE_STATEMENT_TIMEOUT_MS".into(), "1000".into());
    let server = Server::start(&vars, &["serve"]);
    let (status, before) = server.login("c@ann").await;
    assert_eq!(status, 200, "{before}");

    // The database goes away: no new connections, and the replica's are cut.
    on_server(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).await;
    on_server(format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")).await;
    for code in ["c@ben", "again@ann"] {
        let started = std::time::Instant::now();
        let (status, body) = server.login(code).await;
        assert_eq!((status, body["error"].as_str()), (503, Some("temporarily_unavailable")), "{code}: {body}");
        assert!(started.elapsed() < Duration::from_secs(5), "{code}: answered after {:?}", started.elapsed());
    }
    assert_eq!(server.get("/readyz", None).await.0, 503);
    // Liveness: restarting the replica would not bring the database back.
    assert_eq!(server.get("/healthz", None).await.0, 200);

    on_server(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await;
    let started = std::time::Instant::now();
    let after = loop {
        let (status, body) = server.login("back@ann").await;
        if status == 200 {
            break body;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never recovered: {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(after["user"]["id"], before["user"]["id"]);
    // Within a second of its failed probe, /readyz still gives that probe's answer.
    server.wait_ready(wxauth::api::health::PROBE_INTERVAL + Duration::from_secs(5)).await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_together_without_a_session_key_file_share_one_and_read_each_others_phone_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_wechat, vars)) = on_fresh_database(dir.path()).await else { return };
    // `keys rotate` made the session-key file with the signing key. Without it, as in a
    // keys directory copied without it, both replicas find none and make one.
    let keys = dir.path().join("keys");
    std::fs::remove_file(keys.join(wxauth::store::sealed::KEY_FILE)).expect("keys rotate made no session-key file");
    let [a, b] = start_both(dir.path(), &vars);

    let token = with_phone(&a, "c@ann").await;

    for (name, server) in [("a", &a), ("b", &b)] {
        assert_eq!(phone_at(server, &token).await.as_deref(), Some(PHONE), "replica {name} does not read it");
    }
    a.stop();
    b.stop();
    let names: Vec<String> =
        std::fs::read_dir(&keys).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| n.ends_with(".pem") || n == wxauth::store::sealed::KEY_FILE), "{names:?}");
    let [a, b] = start_both(dir.path(), &vars);
    for (name, server) in [("a", &a), ("b", &b)] {
        let phone = phone_at(server, &token).await;
        assert_eq!(phone.as_deref(), Some(PHONE), "replica {name} lost it in a restart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_another_session_key_file_refuses_to_start_naming_the_file_to_copy() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_wechat, vars)) = on_fresh_database(dir.path()).await else { return };
    let first = Server::start(&replica(dir.path(), &vars, "a"), &["serve"]);
    // The second replica was given the signing keys only: it makes a session key of its own.
    let keys = dir.path().join("keys");
    let copy = dir.path().join("copied-keys");
    std::fs::create_dir(&copy).unwrap();
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    for entry in std::fs::read_dir(&keys).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pem") {
            std::fs::copy(&path, copy.join(path.file_name().unwrap())).unwrap();
        }
    }
    let mut second = replica(dir.path(), &vars, "b");
    second.insert("WXAUTH_KEYS_DIR".into(), copy.display().to_string());

    let stderr = refused_start(&second, &["serve"]);

    for needle in ["session-keys.secret", "WXAUTH_KEYS_DIR", "copy"] {
        assert!(stderr.to_lowercase().contains(&needle.to_lowercase()), "{needle}: {stderr}");
    }
    // With the first replica's file it starts, and reads what the first one sealed.
    let key_file = wxauth::store::sealed::KEY_FILE;
    std::fs::remove_file(copy.join(key_file)).unwrap();
    std::fs::copy(keys.join(key_file), copy.join(key_file)).unwrap();
    let second = Server::start(&second, &["serve"]);
    let token = with_phone(&first, "c@ann").await;
    assert_eq!(phone_at(&second, &token).await.as_deref(), Some(PHONE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_replica_killed_the_other_delivers_every_event_and_no_two_send_one_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_wechat, vars)) = on_fresh_database(dir.path()).await else { return };
    let receiver = Receiver::start().await;
    receiver.refuse(true);
    let config = dir.path().join("wxauth.toml");
    std::fs::write(&config, receiver.toml(&["login"])).unwrap();
    let config = config.display().to_string();
    let start = |name: &str| {
        let vars = replica(dir.path(), &vars, name);
        let config = config.clone();
        std::thread::spawn(move || Server::start(&vars, &["--config", &config, "serve"]))
    };
    let (a, b) = (start("a"), start("b"));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());

    let mut expected = HashSet::new();
    for i in 0..30 {
        let server = if i % 2 == 0 { &a } else { &b };
        let (status, body) = server.login(&format!("first@hook{i}")).await;
        assert_eq!(status, 200, "{body}");
        expected.insert(body["user"]["id"].as_str().unwrap().to_owned());
    }
    let started = std::time::Instant::now();
    while receiver.attempts() < 30 {
        assert!(started.elapsed() < Duration::from_secs(10), "deliveries did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.kill();
    receiver.refuse(false);

    let started = std::time::Instant::now();
    loop {
        let users: HashSet<String> =
            receiver.received().iter().filter_map(|e| e["user_id"].as_str().map(str::to_owned)).collect();
        if expected.is_subset(&users) {
            break;
        }
        // Claims of the killed replica come due again when their lease (30 s) ends.
        assert!(started.elapsed() < Duration::from_secs(90), "undelivered after a replica died");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(receiver.overlaps(), 0, "two replicas sent one event at once");
    assert_eq!(receiver.bad_signatures(), 0);
    drop(b);
}
