//! Start-up of the real binary: missing or invalid settings, an unreachable database, `--help`, dev mode
//! and production refusing each other's keys.

use std::{collections::HashMap, time::Duration};

use serde_json::Value;

use crate::helpers::{MockWechat, Server, base_vars, production, run};

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
