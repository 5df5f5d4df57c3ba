use serde_json::json;

use crate::helpers::{APPID, SECRET, default_openid, spawn_app};

#[tokio::test]
async fn first_login_creates_a_user_and_returns_a_bearer_token() {
    let app = spawn_app().await;

    let body = app.login_ok("code1@alice").await;

    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["user"]["created"], true);
    assert_eq!(body["user"]["openid"], default_openid("code1@alice"));
    assert!(body["user"].get("unionid").is_none(), "no unionid was sent: {body}");
    assert!(uuid_like(body["user"]["id"].as_str().unwrap()), "{body}");
    assert!(body["access_token"].as_str().unwrap().split('.').count() == 3);
}

#[tokio::test]
async fn login_sends_appid_secret_code_and_grant_type_to_wechat() {
    let app = spawn_app().await;

    app.login_ok("code1@alice").await;

    let calls = app.wechat.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["appid"], APPID);
    assert_eq!(calls[0]["secret"], SECRET);
    assert_eq!(calls[0]["js_code"], "code1@alice");
    assert_eq!(calls[0]["grant_type"], "authorization_code");
}

#[tokio::test]
async fn login_answer_is_not_cacheable() {
    let app = spawn_app().await;
    let resp = app.login("code1@alice").await;
    assert_eq!(resp.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn second_login_of_the_same_openid_returns_the_same_user() {
    let app = spawn_app().await;

    let first = app.login_ok("code1@alice").await;
    let second = app.login_ok("code2@alice").await;

    assert_eq!(first["user"]["id"], second["user"]["id"]);
    assert_eq!(second["user"]["created"], false);
    assert_ne!(first["access_token"], second["access_token"]);
}

#[tokio::test]
async fn another_openid_gets_another_user() {
    let app = spawn_app().await;

    let alice = app.login_ok("code1@alice").await;
    let bob = app.login_ok("code2@bob").await;

    assert_ne!(alice["user"]["id"], bob["user"]["id"]);
    assert_eq!(bob["user"]["created"], true);
}

#[tokio::test]
async fn unionid_is_returned_and_kept_when_wechat_sends_it() {
    let app = spawn_app().await;

    let body = app.login_ok("union1@carol").await;
    assert_eq!(body["user"]["unionid"], "u_carol");

    // A later answer without unionid does not erase the one we know.
    let again = app.login_ok("code2@carol").await;
    assert_eq!(again["user"]["unionid"], "u_carol");
    let me: serde_json::Value = app.me(again["access_token"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(me["unionid"], "u_carol");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_first_logins_of_one_openid_create_exactly_one_user() {
    let app = std::sync::Arc::new(spawn_app().await);

    let logins: Vec<_> = (0..50)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move { app.login_ok(&format!("tap{i}@dave")).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for login in logins {
        bodies.push(login.await.unwrap());
    }

    let id = &bodies[0]["user"]["id"];
    assert!(bodies.iter().all(|b| &b["user"]["id"] == id), "ids differ");
    assert_eq!(bodies.iter().filter(|b| b["user"]["created"] == json!(true)).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_code_share_one_wechat_call() {
    let app = std::sync::Arc::new(spawn_app().await);
    app.wechat.script(
        "double-tap@erin",
        [crate::helpers::Reply::Delay(
            std::time::Duration::from_millis(300),
            Box::new(crate::helpers::Reply::success("o_erin", "c2Vzc2lvbmtleQ==")),
        )],
    );
    // Without single-flight the second call would reach WeChat and get 40163.
    app.wechat.script("double-tap@erin", [crate::helpers::Reply::errcode(40163)]);

    let taps: Vec<_> = (0..5)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { app.login_ok("double-tap@erin").await })
        })
        .collect();
    let mut ids = Vec::new();
    for tap in taps {
        ids.push(tap.await.unwrap()["user"]["id"].clone());
    }

    assert_eq!(app.wechat.calls_for("double-tap@erin"), 1);
    assert!(ids.iter().all(|id| id == &ids[0]));
}

#[tokio::test]
async fn a_code_sent_again_right_after_its_login_succeeded_gets_the_same_user() {
    let app = spawn_app().await;
    // Real WeChat answers 40163 to a used code; the mock does too after the first call.
    app.wechat.script("late-tap@gina", [crate::helpers::Reply::success("o_gina", "Z2luYQ==")]);
    app.wechat.script("late-tap@gina", [crate::helpers::Reply::errcode(40163)]);

    let first = app.login_ok("late-tap@gina").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let second = app.login_ok("late-tap@gina").await;

    assert_eq!(first["user"]["id"], second["user"]["id"]);
    assert_eq!(app.wechat.calls_for("late-tap@gina"), 1);
}

#[tokio::test]
async fn a_code_wechat_rejected_is_not_remembered() {
    let app = spawn_app().await;
    app.wechat.script("c@retry", [crate::helpers::Reply::errcode(-1), crate::helpers::Reply::errcode(-1)]);

    assert_eq!(app.login("c@retry").await.status(), 503);
    // The same code again goes to WeChat again (which now accepts it).
    app.login_ok("c@retry").await;
    assert_eq!(app.wechat.calls_for("c@retry"), 3);
}

#[tokio::test]
async fn me_returns_the_user_record() {
    let app = spawn_app().await;
    let login = app.login_ok("code1@frank").await;

    let resp = app.me(login["access_token"].as_str().unwrap()).await;

    assert_eq!(resp.status(), 200);
    let me: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(me["id"], login["user"]["id"]);
    assert_eq!(me["openid"], "o_frank");
    for field in ["created_at", "last_login_at"] {
        let text = me[field].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok(),
            "{field}: {text}"
        );
    }
}

#[tokio::test]
async fn healthz_answers_while_the_store_is_open() {
    let app = spawn_app().await;
    let body = app.get_json("/healthz").await;
    assert_eq!(body["status"], "ok");
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn stored_session_keys_are_not_in_the_data_directory_in_plaintext() {
    use base64::{Engine, engine::general_purpose::STANDARD};
    let app = crate::helpers::spawn_app_with(|c| {
        c.set("WXAUTH_REGISTRATION", "bind");
    })
    .await;
    let key = "tiihtNczf5v6AKRyjwEUhQ==";
    app.wechat.script("code1@kay", [crate::helpers::Reply::success("o_kay", key)]);
    app.wechat.script("code2@kay", [crate::helpers::Reply::success("o_kay", key)]);
    app.add_account("kay", "kays password").await;
    // One key in a bind ticket, the same key in the user's record after the bind.
    let ticket = crate::helpers::assert_error(app.login("code1@kay").await, 403, "not_bound").await;
    let bind = json!({"bind_ticket": ticket["bind_ticket"], "username": "kay", "password": "kays password"});
    assert_eq!(app.bind(&bind).await.status(), 200);
    app.login_ok("code2@kay").await;

    for needle in [key.as_bytes().to_vec(), STANDARD.decode(key).unwrap()] {
        assert_eq!(app.stored_places_holding(&needle).await, Vec::<String>::new(), "the store holds a session key");
    }
    let key_file = app.dir.path().join("keys").join(wxauth::store::sealed::KEY_FILE);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(key_file).unwrap().permissions().mode() & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_mid_login_does_not_cancel_the_wechat_call_others_wait_for() {
    use crate::helpers::Reply;
    use std::time::Duration;
    let app = std::sync::Arc::new(spawn_app().await);
    let code = "hang-up@hana";
    app.wechat.script(
        code,
        [Reply::Delay(Duration::from_millis(800), Box::new(Reply::success("o_hana", "aGFuYWhhbmFoYW5haGFuYQ==")))],
    );
    // A second call would get 40163, as the code was used by the first.
    app.wechat.script(code, [Reply::errcode(40163)]);

    // A raw connection, so that hanging up closes the socket for sure. (Today the server
    // lets the handler of a closed connection run on; the singleflight unit tests cover a
    // caller that does go away.)
    let address = app.address.trim_start_matches("http://");
    let mut leaver = tokio::net::TcpStream::connect(address).await.unwrap();
    let body = json!({ "code": code }).to_string();
    let request = format!(
        "POST /v1/login HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut leaver, request.as_bytes()).await.unwrap();
    for _ in 0..500 {
        if app.wechat.calls_for(code) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(app.wechat.calls_for(code), 1, "the first client's call never reached WeChat");
    drop(leaver);
    // Time for the server to see the connection close while WeChat is still answering.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stayer = app.login_ok(code).await;

    assert_eq!(stayer["user"]["openid"], "o_hana");
    assert_eq!(app.wechat.calls_for(code), 1, "the hang-up cancelled the shared WeChat call");
}
