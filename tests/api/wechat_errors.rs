//! How each WeChat answer maps to ours. Nothing is stored for a failed login: a later
//! successful login of the same openid still creates the user.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, assert_error, spawn_app, spawn_app_with};

async fn assert_nothing_stored(app: &TestApp, openid_name: &str) {
    let body = app.login_ok(&format!("later@{openid_name}")).await;
    assert_eq!(body["user"]["created"], true, "a failed login stored something");
}

#[tokio::test]
async fn errcode_mapping_table() {
    let app = spawn_app().await;
    let cases = [
        (40029, 400, "invalid_code"),
        (40163, 400, "code_used"),
        (45011, 429, "rate_limited"),
        (40226, 403, "user_blocked"),
        (40125, 502, "wechat_error"),
        (40013, 502, "wechat_error"),
        (99999, 502, "wechat_error"),
    ];
    for (errcode, status, error) in cases {
        let code = format!("e{errcode}@user{errcode}");
        app.wechat.script(&code, [Reply::errcode(errcode)]);

        let body = assert_error(app.login(&code).await, status, error).await;

        let description = body["error_description"].as_str().unwrap();
        assert!(description.contains(&errcode.to_string()), "errcode {errcode} missing: {description}");
        assert!(description.contains(&format!("rid-{errcode}")), "rid missing: {description}");
        assert_nothing_stored(&app, &format!("user{errcode}")).await;
    }
}

#[tokio::test]
async fn errcode_sent_as_a_numeric_string_is_understood() {
    let app = spawn_app().await;
    app.wechat.script("c@s", [Reply::Body(r#"{"errcode":"40029","errmsg":"invalid code, rid: abc"}"#.into())]);
    assert_error(app.login("c@s").await, 400, "invalid_code").await;
}

#[tokio::test]
async fn rate_limit_tells_the_client_when_to_retry() {
    let app = spawn_app().await;
    app.wechat.script("c@r", [Reply::errcode(45011)]);
    let resp = app.login("c@r").await;
    let retry_after: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_error(resp, 429, "rate_limited").await;
}

#[tokio::test]
async fn busy_once_then_success_is_retried_and_succeeds() {
    let app = spawn_app().await;
    app.wechat.script("c@busy", [Reply::errcode(-1)]);

    let body = app.login_ok("c@busy").await;

    assert_eq!(body["user"]["openid"], "o_busy");
    assert_eq!(app.wechat.calls_for("c@busy"), 2);
}

#[tokio::test]
async fn busy_twice_gives_503_with_retry_after_after_exactly_one_retry() {
    let app = spawn_app().await;
    app.wechat.script("c@busy2", [Reply::errcode(-1), Reply::errcode(-1), Reply::errcode(-1)]);

    let resp = app.login("c@busy2").await;

    assert!(resp.headers().contains_key("retry-after"));
    assert_error(resp, 503, "wechat_unavailable").await;
    assert_eq!(app.wechat.calls_for("c@busy2"), 2);
    assert_nothing_stored(&app, "busy2").await;
}

#[tokio::test]
async fn slow_wechat_gives_504_within_the_timeout() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_WECHAT_TIMEOUT_MS", "300");
    })
    .await;
    app.wechat.script("c@slow", [Reply::Delay(Duration::from_secs(3), Box::new(Reply::success("o_slow", "a2V5")))]);

    let started = std::time::Instant::now();
    let resp = app.login("c@slow").await;

    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_error(resp, 504, "wechat_timeout").await;
}

#[tokio::test]
async fn malformed_json_gives_502() {
    let app = spawn_app().await;
    app.wechat.script("c@m", [Reply::Body("{\"openid\": \"o_m\", ".into())]);
    assert_error(app.login("c@m").await, 502, "wechat_error").await;
    assert_nothing_stored(&app, "m").await;
}

#[tokio::test]
async fn html_error_page_with_status_500_gives_502() {
    let app = spawn_app().await;
    app.wechat.script("c@h", [Reply::Status(500, "<html>oops</html>".into())]);
    assert_error(app.login("c@h").await, 502, "wechat_error").await;
}

#[tokio::test]
async fn json_sent_as_text_plain_is_parsed() {
    // The mock answers every request with Content-Type: text/plain, as WeChat does.
    let app = spawn_app().await;
    app.wechat.script("c@t", [Reply::success("o_t", "dGV4dA==")]);
    assert_eq!(app.login_ok("c@t").await["user"]["openid"], "o_t");
}

#[tokio::test]
async fn success_without_session_key_or_openid_gives_502_and_stores_nothing() {
    let app = spawn_app().await;
    app.wechat.script("c@nokey", [Reply::Body(r#"{"openid":"o_nokey"}"#.into())]);
    app.wechat.script("c@noid", [Reply::Body(r#"{"session_key":"a2V5","errcode":0,"errmsg":"ok"}"#.into())]);

    assert_error(app.login("c@nokey").await, 502, "wechat_error").await;
    assert_error(app.login("c@noid").await, 502, "wechat_error").await;
    assert_nothing_stored(&app, "nokey").await;
}

#[tokio::test]
async fn redirects_are_not_followed_with_the_secret() {
    let app = spawn_app().await;
    app.wechat.script("c@redir", [Reply::Redirect("/elsewhere")]);

    assert_error(app.login("c@redir").await, 502, "wechat_error").await;

    assert_eq!(app.wechat.calls_for("c@redir"), 1, "the redirect was followed");
}

#[tokio::test]
async fn unreachable_wechat_gives_502() {
    // Port 9 (discard) on loopback: nothing listens there.
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_WECHAT_BASE_URL", "http://127.0.0.1:9");
    })
    .await;
    assert_error(app.login("c@x").await, 502, "wechat_error").await;
}

#[tokio::test]
async fn an_empty_openid_or_session_key_from_wechat_is_not_a_login() {
    // Accepted, every such login would land on one user keyed `"{appid}:"`.
    let app = spawn_app().await;
    let cases = [
        ("c@empty-openid-1", Reply::success("", "a2V5")),
        ("c@empty-openid-2", Reply::success("", "b3RoZXI=")),
        ("c@empty-key", Reply::success("o_empty-key", "")),
    ];
    for (code, reply) in cases {
        app.wechat.script(code, [reply]);

        assert_error(app.login(code).await, 502, "wechat_error").await;
    }
    assert_nothing_stored(&app, "empty-key").await;
}

#[tokio::test]
async fn an_empty_unionid_from_wechat_links_nobody() {
    // Kept as Some(""), the second person would join the first: both "share" unionid "".
    let app = spawn_app_with(|c| c.toml = Some(crate::helpers::TWO_APPS.into())).await;
    let with_empty_unionid =
        |openid: &str| Reply::Body(json!({"openid": openid, "session_key": "a2V5", "unionid": ""}).to_string());
    app.wechat.script("c@first", [with_empty_unionid("o_first")]);
    app.wechat.script("c@second", [with_empty_unionid("o_second")]);
    let login = |code: &'static str, appid: &'static str| {
        let app = &app;
        async move {
            let resp = app.post_login(&json!({"code": code, "appid": appid})).await;
            assert_eq!(resp.status(), 200, "{code}");
            resp.json::<Value>().await.unwrap()
        }
    };

    let first = login("c@first", crate::helpers::APPID).await;
    let second = login("c@second", crate::helpers::APPID2).await;

    assert_ne!(first["user"]["id"], second["user"]["id"], "two people merged over an empty unionid");
    assert_eq!(second["user"]["created"], true);
    for body in [&first, &second] {
        assert!(body["user"].get("unionid").is_none_or(Value::is_null), "an empty unionid was kept: {body}");
    }
}

#[tokio::test]
async fn the_retry_after_busy_waits_before_calling_wechat_again() {
    let app = spawn_app().await;
    app.wechat.script("c@patient", [Reply::errcode(-1)]);

    let started = std::time::Instant::now();
    app.login_ok("c@patient").await;
    let elapsed = started.elapsed();

    assert_eq!(app.wechat.calls_for("c@patient"), 2);
    // The mock answers at once, so the login's time is the delay between the two calls.
    assert!(elapsed >= Duration::from_millis(150), "retried after only {elapsed:?}");
}
