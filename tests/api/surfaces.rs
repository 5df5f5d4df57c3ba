//! Every WeChat login surface under one user (issue 22): the mobile app's SDK code posted
//! to `/v1/login`, the browser flows of official accounts and websites, and PC login by
//! scanning a mini-program code.

use serde_json::{Value, json};

use crate::helpers::{
    APPID, MOBILE_APPID, OA_APPID, Reply, TestApp, WEB_APPID, assert_error, default_openid, every_surface,
    spawn_app_with, surface_openid,
};

async fn surfaces_app() -> TestApp {
    spawn_app_with(|c| c.toml = Some(every_surface())).await
}

async fn login_in(app: &TestApp, code: &str, appid: &str) -> reqwest::Response {
    app.post_login(&json!({ "code": code, "appid": appid })).await
}

async fn login_ok_in(app: &TestApp, code: &str, appid: &str) -> Value {
    let resp = login_in(app, code, appid).await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "login with {code:?} in {appid} failed: {body}");
    body
}

#[tokio::test]
async fn a_mobile_app_logs_in_with_its_sdk_code_at_the_oauth_endpoint_and_joins_the_person_by_unionid() {
    let app = surfaces_app().await;
    let mini = login_ok_in(&app, "union-amy", APPID).await;

    let mobile = login_ok_in(&app, "7@union-amy", MOBILE_APPID).await;

    assert_eq!(mobile["user_id"], mini["user_id"], "one person, two users");
    let exchange = app.wechat.calls().into_iter().find(|q| q.get("appid").map(String::as_str) == Some(MOBILE_APPID));
    let exchange = exchange.expect("the mobile app's code never reached WeChat");
    assert_eq!(exchange.get("code").map(String::as_str), Some("7@union-amy"), "not the oauth2/access_token exchange");
    assert!(!exchange.contains_key("js_code"), "a mobile app's code went to code2Session");
    let me = app.me_ok(mobile["access_token"].as_str().unwrap()).await;
    let identities = me["identities"].as_array().unwrap();
    let kinds: Vec<(&str, &str, &str)> = identities
        .iter()
        .map(|i| (i["appid"].as_str().unwrap(), i["openid"].as_str().unwrap(), i["kind"].as_str().unwrap()))
        .collect();
    let mobile_openid = surface_openid(MOBILE_APPID, "union-amy");
    let mini_openid = default_openid("union-amy");
    assert!(kinds.contains(&(APPID, mini_openid.as_str(), "miniprogram")), "{me}");
    assert!(kinds.contains(&(MOBILE_APPID, mobile_openid.as_str(), "mobile_app")), "{me}");
}

#[tokio::test]
async fn a_mobile_app_identity_has_no_session_key_so_open_data_says_so() {
    let app = surfaces_app().await;
    let body = login_ok_in(&app, "bob", MOBILE_APPID).await;
    let token = body["access_token"].as_str().unwrap();
    let resp = app
        .post_with(
            "/v1/me/phone",
            token,
            &json!({ "encrypted_data": "AAAAAAAAAAAAAAAAAAAAAA==", "iv": "AAAAAAAAAAAAAAAAAAAAAA==" }),
        )
        .await;
    assert!(resp.status().is_client_error(), "{}", resp.status());
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].is_string() && body["error_description"].is_string(), "{body}");
}

#[tokio::test]
async fn a_mobile_app_code_wechat_refuses_is_answered_as_a_mini_program_code_would_be() {
    let app = surfaces_app().await;
    let cases = [
        (40029, 400, "invalid_code"),
        (40163, 400, "code_used"),
        (45011, 429, "rate_limited"),
        (40125, 502, "wechat_error"),
        (40013, 502, "wechat_error"),
        (41008, 502, "wechat_error"),
    ];
    for (errcode, status, error) in cases {
        let code = format!("refused-{errcode}");
        app.wechat.script(&code, [Reply::errcode(errcode)]);
        let body = assert_error(login_in(&app, &code, MOBILE_APPID).await, status, error).await;
        assert!(
            body["error_description"].as_str().unwrap().contains(&errcode.to_string())
                || errcode == 40029
                || errcode == 40163
                || errcode == 45011,
            "{errcode}: {body}"
        );
    }
    // A success without openid or access_token is no login either.
    app.wechat.script("hollow", [Reply::Body(json!({"access_token": "t", "expires_in": 7200}).to_string())]);
    assert_error(login_in(&app, "hollow", MOBILE_APPID).await, 502, "wechat_error").await;
}

#[tokio::test]
async fn a_browser_app_s_code_is_refused_at_login_before_wechat_is_asked() {
    let app = surfaces_app().await;
    for appid in [OA_APPID, WEB_APPID] {
        let body = assert_error(login_in(&app, "carol", appid).await, 400, "unknown_app").await;
        assert!(body["error_description"].as_str().unwrap().contains("/v1/oauth/wechat/authorize"), "{body}");
    }
    assert!(app.wechat.calls().is_empty(), "WeChat was asked");
    // Two apps take posted codes (the mini-program and the mobile app): the request must say which.
    assert_error(app.login("carol").await, 400, "invalid_request").await;
}
