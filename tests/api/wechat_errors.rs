//! How each WeChat answer maps to ours. Nothing is stored for a failed login: a later
//! successful login of the same openid still creates the user.

use std::time::Duration;

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
