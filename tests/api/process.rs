//! Tests of the real binary: start-up rules, crash durability, key rotation, log hygiene.

use std::{collections::HashMap, path::Path, process::Command, time::Duration};

use jsonwebtoken::jwk::JwkSet;
use serde_json::{Value, json};

use crate::{
    helpers::{
        BIN, MockWechat, Reply, SECRET, Server, base_vars, default_session_key, on_postgres, production, run,
        run_with_stdin, skip_on_postgres, store_vars, with_settings,
    },
    keys::verify_with_jwks,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_refuses_to_start_without_wechat_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let vars: HashMap<String, String> =
        [("WXAUTH_DATA_DIR", dir.path().join("d")), ("WXAUTH_KEYS_DIR", dir.path().join("k"))]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.display().to_string()))
            .collect();

    let out = run(&vars, &["serve"]);

    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WXAUTH_WECHAT_APPID") && stderr.contains("WXAUTH_WECHAT_SECRET"), "{stderr}");
    assert!(!dir.path().join("d").exists(), "a refused start created the data dir");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_settings_and_a_missing_key_stop_start_up_with_a_named_cause() {
    let dir = tempfile::tempdir().unwrap();
    let wechat = MockWechat::start().await;
    let mut vars = base_vars(dir.path(), &wechat);

    let out = run(&vars, &["serve"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wxauth keys rotate"));

    vars.insert("WXAUTH_LISTEN".into(), "0.0.0.0:0".into());
    wxauth::token::rotate(
        &dir.path().join("keys"),
        wxauth::domain::SigningAlg::ES256,
        wxauth::domain::KeyMode::Production,
        wxauth::token::Activation::Now,
    )
    .unwrap();
    let out = run(&vars, &["serve"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("WXAUTH_ISSUER"), "issuer not required on 0.0.0.0");
    vars.insert("WXAUTH_LISTEN".into(), "127.0.0.1:0".into());

    vars.insert("WXAUTH_ACCESS_TOKEN_TTL".into(), "forever".into());
    let out = run(&vars, &["serve"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("WXAUTH_ACCESS_TOKEN_TTL"));

    let file = dir.path().join("wxauth.toml");
    std::fs::write(&file, "signing_alg = \"HS256\"\n").unwrap();
    vars.remove("WXAUTH_ACCESS_TOKEN_TTL");
    let out = run(&vars, &["serve", "--config", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("WXAUTH_SIGNING_ALG"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_cannot_be_reached_or_read_stops_start_up_naming_the_setting_and_never_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, mut vars) = production(dir.path()).await;
    vars.insert("WXAUTH_STORE".into(), "postgres".into());
    vars.insert("WXAUTH_DATABASE_POOL_SIZE".into(), "2".into());
    vars.insert("WXAUTH_DATABASE_STATEMENT_TIMEOUT_MS".into(), "1000".into());
    let password = "hunter2-db-secret";
    // Nothing listens on port 1; the second is no URL at all, the third a MySQL one.
    for url in [
        format!("postgres://wxauth:{password}@127.0.0.1:1/wxauth"),
        format!("postgres//wxauth:{password}@127.0.0.1/wxauth"),
        format!("mysql://wxauth:{password}@127.0.0.1/wxauth"),
    ] {
        vars.insert("WXAUTH_DATABASE_URL".into(), url.clone());
        let started = std::time::Instant::now();
        let out = run(&vars, &["serve"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: started");
        assert!(stderr.contains("WXAUTH_DATABASE_URL"), "{url}: {stderr}");
        assert!(!stderr.contains(password), "{url}: the password is in: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(30), "{url}: took {:?}", started.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["keys", "--help"],
        &["keys", "rotate", "--help"],
        &["keys", "list", "--help"],
    ] {
        let out = run(&HashMap::new(), args);
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"), "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_runs_on_defaults_with_its_mock_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let vars: HashMap<String, String> = [
        ("WXAUTH_LISTEN", "127.0.0.1:0".to_string()),
        ("WXAUTH_DATA_DIR", dir.path().join("data").display().to_string()),
        ("WXAUTH_KEYS_DIR", dir.path().join("keys").display().to_string()),
        // Even with logging turned down, dev mode announces itself (the startup target stays
        // at info only so the harness can read the listening address).
        ("RUST_LOG", "error,wxauth::startup=info".to_string()),
        // Port 0 changes on restart; the default issuer would change with it.
        ("WXAUTH_ISSUER", "http://127.0.0.1:8080".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let server = Server::start(&vars, &["serve", "--dev"]);

    let (status, first) = server.login("alice").await;
    assert_eq!(status, 200, "{first}");
    let (_, second) = server.login("alice").await;
    assert_eq!(first["user"]["id"], second["user"]["id"]);
    assert_eq!(second["user"]["created"], false);
    assert!(server.login("union-bob").await.1["user"]["unionid"].is_string());
    for (code, status, error) in [
        ("invalid", 400, "invalid_code"),
        ("used", 400, "code_used"),
        ("busy", 503, "wechat_unavailable"),
        ("limited", 429, "rate_limited"),
        ("blocked", 403, "user_blocked"),
        ("garbled", 502, "wechat_error"),
    ] {
        let (got, body) = server.login(code).await;
        assert_eq!((got, body["error"].as_str().unwrap()), (status, error), "{code}");
    }
    assert_eq!(server.login("busy-once").await.0, 200);
    // Swagger UI users see the reserved codes in the API description.
    let (_, spec) = server.get("/openapi.json", None).await;
    let spec: Value = serde_json::from_str(&spec).unwrap();
    let description = spec["info"]["description"].as_str().unwrap();
    for code in ["`invalid`", "`busy-once`", "`slow`", "`garbled`"] {
        assert!(description.contains(code), "{code} missing from: {description}");
    }

    let token = first["access_token"].as_str().unwrap().to_owned();
    let log = server.stop();
    assert!(log.contains("DEV MODE: WeChat is a local mock and any code logs in"), "{log}");

    // Trying rotation in dev mode: `keys rotate` on the dev ring adds a dev key.
    let out = run(&vars, &["keys", "rotate", "--now"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("dev-mode"));
    let server = Server::start(&vars, &["serve", "--dev"]);
    assert_eq!(server.get("/v1/me", Some(&token)).await.0, 200, "token from before the rotation");
    let (_, after) = server.login("alice").await;
    let new_kid = jsonwebtoken::decode_header(after["access_token"].as_str().unwrap()).unwrap().kid;
    assert_ne!(new_kid, jsonwebtoken::decode_header(&token).unwrap().kid);
    server.stop();
    let key = std::fs::read_dir(dir.path().join("keys")).unwrap().next().unwrap().unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key.metadata().unwrap().permissions().mode() & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_and_production_refuse_each_others_keys() {
    // Dev mode signs tokens for any code: with production keys, production verifiers
    // would accept them.
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, mut vars) = production(dir.path()).await;
    vars.remove("WXAUTH_WECHAT_SECRET");
    let out = run(&vars, &["serve", "--dev"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("production key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dev_dir = tempfile::tempdir().unwrap();
    let (_wechat, mut vars) = production(dev_dir.path()).await;
    std::fs::remove_dir_all(dev_dir.path().join("keys")).unwrap();
    assert!(run(&vars, &["keys", "rotate", "--dev"]).status.success());
    let listing = String::from_utf8_lossy(&run(&vars, &["keys", "list"]).stdout).into_owned();
    assert!(listing.contains("dev"), "{listing}");
    let out = run(&vars, &["serve"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dev-mode key"), "{}", String::from_utf8_lossy(&out.stderr));
    vars.remove("WXAUTH_WECHAT_SECRET");
    vars.insert("WXAUTH_LISTEN".into(), "127.0.0.1:0".into());
    let server = Server::start(&vars, &["serve", "--dev"]);
    assert_eq!(server.login("alice").await.0, 200);
    server.stop();
}

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

async fn jwks(server: &Server) -> JwkSet {
    serde_json::from_str(&server.get("/.well-known/jwks.json", None).await.1).unwrap()
}

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_published_first_and_signs_once_its_activation_time_comes() {
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, mut vars) = production(dir.path()).await;
    vars.insert("WXAUTH_KEY_ACTIVATION_SECS".into(), "2".into());
    let server = Server::start(&vars, &["serve"]);
    let (_, before) = server.login("c@rotor").await;
    let old_token = before["access_token"].as_str().unwrap().to_owned();
    let old_kid = kid(&old_token);

    let out = run(&vars, &["keys", "rotate"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("signs from"), "{}", String::from_utf8_lossy(&out.stdout));
    let listing = String::from_utf8_lossy(&run(&vars, &["keys", "list"]).stdout).into_owned();
    assert!(listing.contains(&old_kid) && listing.contains("active") && listing.contains("next"), "{listing}");

    // SIGHUP picks the file up at once (the server also rereads the directory every minute).
    server.signal("HUP");
    let mut snapshot = jwks(&server).await;
    for _ in 0..50 {
        if snapshot.keys.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        snapshot = jwks(&server).await;
    }
    assert_eq!(snapshot.keys.len(), 2, "the staged key is not published");
    let (_, staged) = server.login("c1@rotor").await;
    let staged_token = staged["access_token"].as_str().unwrap().to_owned();
    assert_eq!(kid(&staged_token), old_kid, "the staged key signed before its activation");

    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (_, after) = server.login("c2@rotor").await;
    let new_token = after["access_token"].as_str().unwrap().to_owned();
    let new_kid = kid(&new_token);
    assert_ne!(old_kid, new_kid, "the new key does not sign after its activation, without SIGHUP");
    assert!(listing.contains(&new_kid));
    // A verifier that fetched the JWKS at rotation time accepts tokens of both keys.
    for token in [&old_token, &staged_token, &new_token] {
        verify_with_jwks(&snapshot, token, "https://auth.example.com");
    }
    assert_eq!(server.get("/v1/me", Some(&old_token)).await.0, 200);

    // --now: a compromised key is replaced at once.
    let out = run(&vars, &["keys", "rotate", "--now"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("signs now"), "{}", String::from_utf8_lossy(&out.stdout));
    server.signal("HUP");
    let mut now_kid = new_kid.clone();
    for _ in 0..50 {
        let (_, body) = server.login("c3@rotor").await;
        now_kid = kid(body["access_token"].as_str().unwrap());
        if now_kid != new_kid {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(now_kid, new_kid, "--now did not sign at once");
    assert_eq!(jwks(&server).await.keys.len(), 3);
    server.stop();

    // And after a restart.
    let server = Server::start(&vars, &["serve"]);
    assert_eq!(server.get("/v1/me", Some(&old_token)).await.0, 200);
    assert_eq!(server.get("/v1/me", Some(&new_token)).await.0, 200);
    let set: JwkSet = serde_json::from_str(&server.get("/.well-known/jwks.json", None).await.1).unwrap();
    for token in [&old_token, &new_token] {
        verify_with_jwks(&set, token, "https://auth.example.com");
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_or_responses() {
    let dir = tempfile::tempdir().unwrap();
    let (wechat, mut vars) = production(dir.path()).await;
    // The most specific targets too: they must not get past the cap on HTTP crates.
    vars.insert("RUST_LOG".into(), "trace,reqwest::connect=trace,hyper_util::client=trace,hyper=trace".into());
    vars.insert("WXAUTH_WECHAT_TIMEOUT_MS".into(), "300".into());
    let codes = ["CODE-7f3a9c@kim", "CODE-b81e44@lee", "CODE-0c9d2e@moe", "CODE-5a6b7c@nan", "CODE-d4e5f6@ola"];
    wechat.script(codes[1], [Reply::errcode(40029)]);
    wechat.script(
        codes[2],
        [Reply::Body(format!("{{\"openid\":\"o_x\",\"session_key\":\"{}\"", default_session_key(codes[2])))],
    );
    wechat.script(
        codes[3],
        [Reply::Delay(Duration::from_secs(2), Box::new(Reply::success("o_y", &default_session_key(codes[3]))))],
    );
    wechat.script(codes[4], [Reply::errcode(40125)]);
    let server = Server::start(&vars, &["serve"]);

    let mut responses = String::new();
    let mut tokens = Vec::new();
    for code in codes {
        let (_, body) = server.login(code).await;
        responses.push_str(&body.to_string());
        if let Some(token) = body["access_token"].as_str() {
            tokens.push(token.to_owned());
        }
    }
    assert_eq!(tokens.len(), 1);
    let (status, me) = server.get("/v1/me", Some(&tokens[0])).await;
    assert_eq!(status, 200);
    responses.push_str(&me);
    let (_, me) = server.get("/v1/me", Some("forged.token.value")).await;
    responses.push_str(&me);
    // Credentials where they do not belong: in query strings, which request logs love.
    let query_code = "QUERYCODE-31337";
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/login?code={query_code}", server.address))
        .json(&json!({"code": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let (status, _) = server.get(&format!("/v1/me?access_token={}", tokens[0]), None).await;
    assert_eq!(status, 401);
    // A path holding a token: the access log keeps only its first 200 bytes.
    let long_path = format!("/{}/{}", "p".repeat(300), tokens[0]);
    assert_eq!(server.get(&long_path, None).await.0, 404);
    let log = server.stop();
    let logged = log.lines().find(|l| l.contains("\"/pppp")).unwrap_or_else(|| panic!("not logged:\n{log}"));
    assert!(!logged.contains(&"p".repeat(300)), "the path was not cut: {logged}");

    assert!(log.contains("code2Session"), "the test captured no WeChat log lines:\n{log}");
    assert!(log.contains("did not answer in time"), "the WeChat timeout was not logged:\n{log}");
    assert!(log.contains("/v1/login") && log.contains("wxauth::access"), "no access log:\n{log}");
    let mut secrets = vec![SECRET.to_owned(), "secret=".to_owned(), tokens[0].clone(), query_code.to_owned()];
    secrets.extend(codes.iter().map(|c| c.to_string()));
    // As they would appear in a logged query string.
    secrets.extend(codes.iter().map(|c| c.replace('@', "%40")));
    secrets.extend(codes.iter().map(|c| default_session_key(c)));
    // On PostgreSQL, the database password (trace logging includes sqlx's own lines).
    if let Some(url) = vars.get("WXAUTH_DATABASE_URL") {
        let password = url::Url::parse(url).unwrap().password().expect("the test URL has a password").to_owned();
        assert!(log.contains("WXAUTH_DATABASE_URL=postgres://"), "the store was not logged:\n{log}");
        secrets.push(password);
    }
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "log contains {secret:?}:\n{log}");
    }
    // Responses carry the token by design; nothing else on the list.
    for secret in secrets.iter().filter(|s| **s != tokens[0] && *s != query_code) {
        assert!(!responses.contains(secret.as_str()), "a response contains {secret:?}: {responses}");
    }
    // The session key of the successful login must not leak through the token either.
    let payload = tokens[0].split('.').nth(1).unwrap();
    use base64::Engine;
    let claims = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert!(!claims.contains(&default_session_key(codes[0])), "{claims}");
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
async fn accounts_are_managed_through_the_running_server_and_directly_when_it_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, mut vars) = production(dir.path()).await;
    vars.insert("WXAUTH_REGISTRATION".into(), "bind".into());
    let mut with_typo = vars.clone();
    with_typo.insert("WXAUTH_REGISTRATON".into(), "auto".into());
    let server = Server::start(&with_typo, &["serve"]);

    // Through the admin socket: the server holds the store.
    let (ok, stdout, stderr) = run_with_stdin(&vars, &["accounts", "add", "alice"], "correct horse battery\n");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("added account alice"), "{stdout}");
    assert!(stderr.contains("done by the running server"), "{stderr}");
    let (ok, _, stderr) = run_with_stdin(&vars, &["accounts", "add", "shorty"], "short\n");
    assert!(!ok && stderr.contains("at least 8 characters"), "{stderr}");
    let (ok, _, stderr) = run_with_stdin(&vars, &["accounts", "add", "alice"], "another password\n");
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
    // The account works at once, without a restart.
    let client = reqwest::Client::new();
    let (_, unbound) = server.login("code1@dora").await;
    let bind = json!({"bind_ticket": unbound["bind_ticket"], "username": "alice", "password": "correct horse battery"});
    let bound = client.post(format!("{}/v1/bind", server.address)).json(&bind).send().await.unwrap();
    assert_eq!(bound.status(), 200);
    let token = bound.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    let phone = client.post(format!("{}/v1/me/phone", server.address)).bearer_auth(&token);
    assert_eq!(phone.json(&json!({"code": "c"})).send().await.unwrap().status(), 200);
    let (ok, stdout, _) = run_with_stdin(&vars, &["users", "show", "o_dora"], "");
    assert!(ok && stdout.contains("account     alice") && stdout.contains("o_dora"), "{stdout}");
    assert!(stdout.contains(&format!("phone       +86{}", crate::helpers::PHONE)), "{stdout}");
    let (ok, by_name, _) = run_with_stdin(&vars, &["users", "show", "alice"], "");
    assert!(ok && by_name == stdout, "{by_name}");
    let (ok, _, stderr) = run_with_stdin(&vars, &["users", "show", "o_nobody"], "");
    assert!(!ok && stderr.contains("no user has"), "{stderr}");
    let (ok, _, stderr) = run_with_stdin(&vars, &["accounts", "passwd", "alice"], "a new password\n");
    assert!(ok, "{stderr}");
    let log = server.stop();
    assert!(log.contains("WXAUTH_REGISTRATON") && log.contains("typo"), "an unknown variable went unnoticed");
    assert!(!log.contains("correct horse"), "a password reached the log");
    assert!(!log.contains(unbound["bind_ticket"].as_str().unwrap()), "a bind ticket reached the log");
    assert!(!dir.path().join("data/admin.sock").exists(), "the socket outlived the server");

    // No server and no store where the settings point: nothing is created by accident.
    if !on_postgres() {
        let mut elsewhere = vars.clone();
        elsewhere.insert("WXAUTH_DATA_DIR".into(), dir.path().join("typo").display().to_string());
        let (ok, _, stderr) = run_with_stdin(&elsewhere, &["accounts", "add", "carol"], "carols password\n");
        assert!(!ok && stderr.contains("there is no store"), "{stderr}");
        assert!(!dir.path().join("typo").exists());
    }

    // No server: the CLI opens the store itself.
    let (ok, stdout, stderr) = run_with_stdin(&vars, &["accounts", "list"], "");
    assert!(ok, "{stderr}");
    assert!(stderr.contains("changed the store directly"), "{stderr}");
    assert!(stdout.contains("alice") && stdout.contains("o_dora"), "{stdout}");
    let (ok, _, stderr) = run_with_stdin(&vars, &["accounts", "add", "bob"], "bobs password\n");
    assert!(ok, "{stderr}");
    let (ok, stdout, _) = run_with_stdin(&vars, &["accounts", "remove", "alice"], "");
    assert!(ok && stdout.contains("removed account alice"), "{stdout}");

    // The server sees what the CLI wrote while it was down, and the new password.
    let server = Server::start(&vars, &["serve"]);
    let (status, body) = server.login("code2@dora").await;
    assert_eq!((status, body["error"].as_str()), (403, Some("not_bound")), "{body}");
    let bind = json!({"bind_ticket": body["bind_ticket"], "username": "bob", "password": "bobs password"});
    let bound = client.post(format!("{}/v1/bind", server.address)).json(&bind).send().await.unwrap();
    assert_eq!(bound.status(), 200);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_encryption_key_makes_stored_session_keys_stale_not_a_server_error() {
    use crate::open_data::{IV, encrypt, phone_plaintext};
    let dir = tempfile::tempdir().unwrap();
    let (wechat, vars) = production(dir.path()).await;
    let key = default_session_key("lost");
    let data = encrypt(&key, &phone_plaintext(crate::helpers::APPID));
    let body = json!({"encrypted_data": data, "iv": IV});
    let post_phone = |server: &Server, token: &str| {
        let request = reqwest::Client::new().post(format!("{}/v1/me/phone", server.address)).bearer_auth(token);
        request.json(&body).send()
    };

    let server = Server::start(&vars, &["serve"]);
    let (_, login) = server.login("lost").await;
    let token = login["access_token"].as_str().unwrap().to_owned();
    assert_eq!(post_phone(&server, &token).await.unwrap().status(), 200);
    server.stop();

    std::fs::remove_file(dir.path().join("keys").join(wxauth::store::sealed::KEY_FILE)).unwrap();
    if on_postgres() {
        // A database records its key, so that no replica seals with another; a key lost
        // for good is given up by removing the record, as the README says.
        let stderr = crate::helpers::refused_start(&vars, &["serve"]);
        assert!(stderr.contains("session-keys.secret"), "{stderr}");
        forget_sealing_key(&vars["WXAUTH_DATABASE_URL"]).await;
    }
    let server = Server::start(&vars, &["serve"]);
    // The person's stored key and phone number no longer open: stale, and absent.
    let resp = post_phone(&server, &token).await.unwrap();
    assert_eq!(resp.status(), 409);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "session_key_stale");
    let (status, me) = server.get("/v1/me", Some(&token)).await;
    assert_eq!(status, 200, "{me}");
    assert!(!me.contains("phone"), "{me}");
    // Logging in again stores the key under the new encryption key: the client recovers.
    wechat.script("again@lost", [Reply::success("o_lost", &key)]);
    let (status, _) = server.login("again@lost").await;
    assert_eq!(status, 200);
    assert_eq!(post_phone(&server, &token).await.unwrap().status(), 200);
    let log = server.stop();
    assert!(!log.contains("panicked") && !log.contains("server_error"), "{log}");
}

/// What the README says to run when `session-keys.secret` is lost for good.
async fn forget_sealing_key(database: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(database).await.unwrap();
    sqlx::query("DELETE FROM meta WHERE key = 'sealing_key'").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_file_in_the_keys_directory_is_reported_and_blocks_only_serve() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, vars) = production(dir.path()).await;
    let stray = dir.path().join("keys").join("stray.pem");
    std::fs::write(&stray, "half a key, left by a crash").unwrap();
    std::fs::set_permissions(&stray, std::fs::Permissions::from_mode(0o600)).unwrap();

    let out = run(&vars, &["keys", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stray.pem"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("active"));
    let out = run(&vars, &["keys", "rotate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stray.pem"));

    let out = run(&vars, &["serve"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stray.pem") && stderr.contains("not a PEM file"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_key_file_others_could_read_or_swap_stops_start_up_naming_the_file() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let key_file = wxauth::store::sealed::KEY_FILE;
    type Spoil = fn(&Path, &Path);
    let mut cases: Vec<(&str, Spoil, &str)> = vec![
        (
            "readable by others",
            |f, _| std::fs::set_permissions(f, PermissionsExt::from_mode(0o644)).unwrap(),
            "mode 0644",
        ),
        (
            "readable by the group",
            |f, _| std::fs::set_permissions(f, PermissionsExt::from_mode(0o640)).unwrap(),
            "mode 0640",
        ),
        (
            "a symbolic link",
            |f, outside| {
                std::fs::rename(f, outside).unwrap();
                symlink(outside, f).unwrap();
            },
            "symbolic link",
        ),
        (
            "a directory",
            |f, _| {
                std::fs::remove_file(f).unwrap();
                std::fs::create_dir(f).unwrap();
            },
            "not a regular file",
        ),
    ];
    if rustix::process::geteuid().is_root() {
        cases.push((
            "another user's",
            |f, _| std::os::unix::fs::chown(f, Some(65534), None).unwrap(),
            "owned by uid 65534",
        ));
    } else {
        eprintln!("skipped the file of another owner: only root can give a file away");
    }
    for (case, spoil, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (_wechat, vars) = production(dir.path()).await;
        spoil(&dir.path().join("keys").join(key_file), &dir.path().join("elsewhere"));

        let stderr = crate::helpers::refused_start(&vars, &["serve"]);

        assert!(stderr.contains(key_file) && stderr.contains(reason), "{case}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_an_admin_socket_directory_another_user_could_write() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, mut vars) = production(dir.path()).await;
    let mut cases: Vec<(u32, Option<u32>, &str)> =
        vec![(0o777, None, "mode 0777"), (0o770, None, "mode 0770"), (0o1777, None, "mode 1777")];
    if rustix::process::geteuid().is_root() {
        cases.push((0o755, Some(65534), "belongs to uid 65534"));
    } else {
        eprintln!("skipped the directory of another owner: only root can give a directory away");
    }
    for (i, (mode, owner, reason)) in cases.into_iter().enumerate() {
        let sockets = dir.path().join(format!("sockets-{i}"));
        std::fs::create_dir(&sockets).unwrap();
        std::fs::set_permissions(&sockets, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(&sockets, owner, None).unwrap();
        vars.insert("WXAUTH_ADMIN_SOCKET".into(), sockets.join("admin.sock").display().to_string());

        let stderr = crate::helpers::refused_start(&vars, &["serve"]);

        let named = stderr.contains("WXAUTH_ADMIN_SOCKET") && stderr.contains(&sockets.display().to_string());
        assert!(named && stderr.contains(reason), "{reason}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_nothing_to_an_admin_socket_another_user_serves() {
    use std::os::unix::{fs::PermissionsExt, process::CommandExt};
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: only root can start a server as another user");
        return;
    }
    // A server of user 65534 (nobody) listening where this user's CLI looks.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let home = dir.path().join("nobody");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let vars: HashMap<String, String> = [
        ("WXAUTH_LISTEN", "127.0.0.1:0".to_owned()),
        ("WXAUTH_DATA_DIR", home.join("data").display().to_string()),
        ("WXAUTH_KEYS_DIR", home.join("keys").display().to_string()),
        ("WXAUTH_ADMIN_SOCKET", home.join("admin.sock").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut foreign = crate::helpers::command(&vars, &["serve", "--dev"]);
    foreign.uid(65534).gid(65534).current_dir(&home);
    let server = Server::spawn(foreign);

    let (ok, _, stderr) = run_with_stdin(&vars, &["accounts", "add", "alice"], "correct horse battery\n");

    assert!(!ok, "the command was sent to another user's server");
    assert!(stderr.contains("uid 65534") && stderr.contains("WXAUTH_ADMIN_SOCKET"), "{stderr}");
    let log = server.stop();
    assert!(!log.contains("account added"), "{log}");
}

/// Permission bits of `path`.
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_the_server_writes_is_private_to_its_user() {
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, vars) = production(dir.path()).await;
    let server = Server::start(&vars, &["serve"]);
    assert_eq!(server.login("c@private").await.0, 200);
    server.stop();

    // PostgreSQL keeps the data elsewhere, its files the database server's business.
    let private_dirs: &[&str] = if on_postgres() { &["keys"] } else { &["data", "keys"] };
    for private_dir in private_dirs {
        assert_eq!(mode_of(&dir.path().join(private_dir)), 0o700, "{private_dir}");
    }
    let mut files = Vec::new();
    for top in private_dirs {
        let mut stack = vec![dir.path().join(top)];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else {
                files.push(path);
            }
        }
    }
    assert!(on_postgres() || files.iter().any(|f| f.ends_with("db")), "{files:?}");
    assert!(files.iter().any(|f| f.ends_with(wxauth::store::sealed::KEY_FILE)), "{files:?}");
    for file in files {
        assert_eq!(mode_of(&file) & 0o077, 0, "{} is open to others", file.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_refuses_data_and_keys_directories_open_to_others_and_dev_mode_warns() {
    use std::os::unix::fs::PermissionsExt;
    let settings: &[(&str, &str)] = if on_postgres() {
        &[("WXAUTH_KEYS_DIR", "keys")]
    } else {
        &[("WXAUTH_DATA_DIR", "data"), ("WXAUTH_KEYS_DIR", "keys")]
    };
    for &(setting, open) in settings {
        let dir = tempfile::tempdir().unwrap();
        let (_wechat, vars) = production(dir.path()).await;
        std::fs::create_dir_all(dir.path().join(open)).unwrap();
        std::fs::set_permissions(dir.path().join(open), std::fs::Permissions::from_mode(0o755)).unwrap();

        let out = run(&vars, &["serve"]);

        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{setting} open to others was accepted");
        assert!(stderr.contains(setting) && stderr.contains("chmod 700") && stderr.contains("0755"), "{stderr}");
    }
    if skip_on_postgres("the data directory") {
        return;
    }

    // Dev mode makes a directory of only its own files private itself (tests/api/setup.rs);
    // one that holds something else it only warns about.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/notes.txt"), "mine").unwrap();
    std::fs::set_permissions(dir.path().join("data"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let vars: HashMap<String, String> = [
        ("WXAUTH_LISTEN", "127.0.0.1:0".to_string()),
        ("WXAUTH_DATA_DIR", dir.path().join("data").display().to_string()),
        ("WXAUTH_KEYS_DIR", dir.path().join("keys").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let server = Server::start(&vars, &["serve", "--dev"]);
    let log = server.stop();
    assert!(log.contains("WXAUTH_DATA_DIR") && log.contains("chmod 700"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_keeps_the_mode_it_was_created_in() {
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, prod) = production(dir.path()).await;
    let server = Server::start(&prod, &["serve"]);
    assert_eq!(server.login("c@mode").await.0, 200);
    server.stop();

    // Dev mode on production's users (with keys of its own).
    let mut dev: HashMap<String, String> = prod.clone();
    dev.remove("WXAUTH_WECHAT_SECRET");
    dev.remove("WXAUTH_ISSUER");
    dev.insert("WXAUTH_KEYS_DIR".into(), dir.path().join("dev-keys").display().to_string());
    let out = run(&dev, &["serve", "--dev"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("created in production mode"), "{stderr}");

    // And production on a store dev mode created.
    let dev_store: Vec<(String, String)> = match on_postgres() {
        true => store_vars(),
        false => vec![("WXAUTH_DATA_DIR".into(), dir.path().join("dev-data").display().to_string())],
    };
    dev.extend(dev_store.clone());
    let server = Server::start(&dev, &["serve", "--dev"]);
    server.stop();
    let mut prod_on_dev = prod.clone();
    prod_on_dev.extend(dev_store);
    let out = run(&prod_on_dev, &["serve"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("created in dev mode"), "{stderr}");
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

/// Sets the soft limit on the child's open files; returns the one it replaced.
fn cap_open_files(server: &Server, files: Option<u64>) -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, prlimit};
    let pid = rustix::process::Pid::from_child(&server.child);
    // The child inherited this process's hard limit; only root could raise it.
    let maximum = getrlimit(Resource::Nofile).maximum;
    prlimit(Some(pid), Resource::Nofile, Rlimit { current: files, maximum }).unwrap().current
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_accept_loop_pauses_logs_once_per_10_s_and_serves_again_once_some_free_up() {
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, vars) = production(dir.path()).await;
    let server = Server::start(&vars, &["serve"]);
    let address = server.address.trim_start_matches("http://").to_owned();
    let open = std::fs::read_dir(format!("/proc/{}/fd", server.child.id())).unwrap().count() as u64;
    // Room for two more connections: the third and fourth wait in the backlog, unaccepted.
    let limit = cap_open_files(&server, Some(open + 2));
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }

    // With a retry every 100 ms, a loop that logged each failure would have logged ~20 times.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failures = server.log.lock().unwrap().matches("accepting a connection failed").count();
    assert_eq!(failures, 1, "one line per 10 s of failing accepts:\n{}", server.log.lock().unwrap());
    // Still failing 10 s later: one more line, so that the log shows it lasts.
    tokio::time::sleep(Duration::from_millis(9_500)).await;
    let failures = server.log.lock().unwrap().matches("accepting a connection failed").count();
    assert_eq!(failures, 2, "no second line after 10 s of failing accepts:\n{}", server.log.lock().unwrap());

    cap_open_files(&server, limit);
    drop(held);
    let started = std::time::Instant::now();
    while server.get("/healthz", None).await.0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "never served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop();
}

/// The soft and hard limits on open files of a running process, from `/proc`.
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let numbers: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (numbers[0], numbers[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_raises_its_open_file_limit_and_warns_only_of_a_connection_cap_above_it() {
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum.expect("a finite hard limit");
    assert!(hard > 1024, "this test needs a hard limit on open files above 1024, not {hard}");
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, mut vars) = production(dir.path()).await;
    // Started with a low soft limit, as many init systems do.
    let start = |vars: &HashMap<String, String>| {
        let mut sh = Command::new("sh");
        sh.args(["-c", r#"ulimit -Sn 512 && exec "$0" "$@""#, BIN, "serve"]);
        Server::spawn(with_settings(sh, vars))
    };
    let warning = "above what the open-file limit";

    // 256 descriptors are kept spare: a cap of exactly what remains fits.
    vars.insert("WXAUTH_MAX_CONNECTIONS".into(), (hard - 256).to_string());
    let server = start(&vars);
    assert_eq!(open_file_limits(server.child.id()), (hard, hard), "the soft limit was not raised");
    let log = server.stop();
    assert!(!log.contains(warning), "{log}");

    vars.insert("WXAUTH_MAX_CONNECTIONS".into(), (hard - 255).to_string());
    let log = start(&vars).stop();
    assert!(log.contains(warning), "{log}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_writes_keys_only_their_owner_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, vars) = production(dir.path()).await;
    let out = run(&vars, &["keys", "rotate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let keys = dir.path().join("keys");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&keys), 0o700, "keys directory");
    let pems: Vec<_> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pem"))
        .collect();
    assert_eq!(pems.len(), 2);
    for pem in pems {
        assert_eq!(mode(&pem), 0o600, "{}", pem.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logging_leaves_out_the_http_crates_and_every_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, mut vars) = production(dir.path()).await;
    vars.insert("RUST_LOG".into(), "debug".into());
    let server = Server::start(&vars, &["serve"]);
    let code = "CODE-debug-31337@pia";
    let (status, login) = server.login(code).await;
    assert_eq!(status, 200);
    let token = login["access_token"].as_str().unwrap().to_owned();
    assert_eq!(server.get("/v1/me", Some(&token)).await.0, 200);

    let log = server.stop();

    assert!(log.contains("code2Session succeeded"), "debug lines of wxauth itself are missing:\n{log}");
    let chatty = ["hyper", "hyper_util", "reqwest", "h2", "rustls", "poem"];
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let event: Value = serde_json::from_str(line).unwrap();
        let level = event["level"].as_str().unwrap_or_default();
        if matches!(level, "DEBUG" | "TRACE") {
            for target in [&event["target"], &event["log.target"]].into_iter().filter_map(Value::as_str) {
                let krate = target.split("::").next().unwrap();
                assert!(!chatty.contains(&krate), "a {level} line of {target} got through the cap: {line}");
            }
        }
    }
    for secret in [SECRET, "secret=", code, &code.replace('@', "%40"), &default_session_key(code), &token] {
        assert!(!log.contains(secret), "the debug log holds {secret:?}:\n{log}");
    }
}
