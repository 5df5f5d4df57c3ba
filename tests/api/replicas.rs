//! Two replicas of the real binary on one PostgreSQL database, sharing one keys directory,
//! as the README's two-replica deployment runs them.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use jsonwebtoken::jwk::JwkSet;
use serde_json::Value;

use crate::helpers::{MockWechat, Server, production};

/// Two replicas on a fresh database; `None` (after saying why) when there is no server.
async fn two_replicas(dir: &std::path::Path) -> Option<(MockWechat, [Server; 2])> {
    let database = crate::postgres::fresh_database()?;
    let (wechat, mut vars) = production(dir).await;
    vars.insert("WXAUTH_STORE".into(), "postgres".into());
    vars.insert("WXAUTH_DATABASE_URL".into(), database);
    vars.remove("WXAUTH_DATA_DIR");
    // One machine here: each replica needs an admin socket of its own. Started together on
    // the empty database, they race to migrate it (the migrator's lock orders them).
    let replica = |name: &str| {
        let mut vars = vars.clone();
        vars.insert("WXAUTH_ADMIN_SOCKET".into(), dir.join(format!("{name}.sock")).display().to_string());
        std::thread::spawn(move || Server::start(&vars, &["serve"]))
    };
    let (a, b) = (replica("a"), replica("b"));
    Some((wechat, [a.join().unwrap(), b.join().unwrap()]))
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
    assert_eq!(server.get("/readyz", None).await.0, 200);
    server.stop();
}
