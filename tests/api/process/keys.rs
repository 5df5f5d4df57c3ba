//! Key files of the real binary: staged rotation, a lost or exposed sealing key, a stray file, and
//! keys only their owner can read.

use std::{path::Path, time::Duration};

use jsonwebtoken::jwk::JwkSet;
use serde_json::{Value, json};

use crate::{
    helpers::{Reply, Server, default_session_key, on_postgres, production, run},
    keys::verify_with_jwks,
};

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
    // Its key_staged event went through the running server.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("not in the event log") && !stderr.contains("not recorded"), "{stderr}");
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
    let log = server.stop();
    for activated in [&new_kid, &now_kid] {
        let line = log.lines().find(|l| l.contains("a staged signing key signs now") && l.contains(activated.as_str()));
        assert!(line.is_some(), "no key_activated for {activated}:\n{log}");
    }

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
        // for good is given up by removing the record, as docs/storage.md says.
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

/// What docs/storage.md says to run when `session-keys.secret` is lost for good.
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
