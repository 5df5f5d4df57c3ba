//! `GET /v1/me/sessions` and `DELETE /v1/me/sessions/{id}`: each login is a session the
//! person can see (app, times, address, user agent) and end.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::helpers::{APPID, TestApp, assert_error, decode_claims, spawn_app, spawn_app_with};

fn text(body: &Value, field: &str) -> String {
    body[field].as_str().unwrap_or_else(|| panic!("no {field} in {body}")).to_owned()
}

/// `POST /v1/login` with a `User-Agent` and `X-Forwarded-For` lines.
async fn login_from(app: &TestApp, code: &str, user_agent: &[u8], forwarded_for: &[&str]) -> Value {
    let user_agent = reqwest::header::HeaderValue::from_bytes(user_agent).unwrap();
    let mut req = app.client.post(format!("{}/v1/login", app.address)).header("user-agent", user_agent);
    for line in forwarded_for {
        req = req.header("x-forwarded-for", *line);
    }
    let resp = req.json(&json!({ "code": code })).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn sessions(app: &TestApp, token: &str) -> Vec<Value> {
    let resp = app.client.get(format!("{}/v1/me/sessions", app.address)).bearer_auth(token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    body["sessions"].as_array().unwrap_or_else(|| panic!("no sessions in {body}")).clone()
}

async fn end(app: &TestApp, token: &str, id: &str) -> reqwest::Response {
    let url = format!("{}/v1/me/sessions/{id}", app.address);
    app.client.delete(url).bearer_auth(token).send().await.unwrap()
}

#[tokio::test]
async fn each_login_is_a_session_with_its_app_times_address_and_user_agent_newest_first() {
    let app = spawn_app().await;
    let phone = login_from(&app, "c1@amy", b"Mozilla/5.0\tMicroMessenger/8.0.50 \xff", &[]).await;
    app.advance(60);
    let tablet = login_from(&app, "c2@amy", b"", &[]).await;
    let token = text(&tablet, "access_token");

    let listed = sessions(&app, &token).await;

    assert_eq!(listed.len(), 2, "{listed:?}");
    let (newest, oldest) = (&listed[0], &listed[1]);
    assert_eq!(newest["id"], decode_claims(&token)["sid"], "the token names its session");
    assert_eq!(oldest["id"], decode_claims(&text(&phone, "access_token"))["sid"]);
    assert_eq!(oldest["user_agent"], "Mozilla/5.0MicroMessenger/8.0.50 \u{fffd}", "control characters dropped");
    assert!(newest.get("user_agent").is_none(), "an empty user agent is none: {newest}");
    for session in &listed {
        assert_eq!(session["app"], APPID);
        assert_eq!(session["ip"], "127.0.0.1");
        assert_eq!(session["created_at"], session["last_refresh_at"]);
        let keys: Vec<_> = session.as_object().unwrap().keys().map(String::as_str).collect();
        assert!(keys.iter().all(|k| ["id", "app", "created_at", "last_refresh_at", "ip", "user_agent"].contains(k)));
    }
    assert_ne!(newest["created_at"], oldest["created_at"]);
}

#[tokio::test]
async fn a_refresh_moves_the_last_refresh_and_keeps_the_session_and_its_sid() {
    let app = spawn_app().await;
    let login = app.login_ok("c1@bob").await;
    let sid = decode_claims(&text(&login, "access_token"))["sid"].clone();
    app.advance(120);

    let resp = app.refresh(&text(&login, "refresh_token")).await;
    assert_eq!(resp.status(), 200);
    let refreshed: Value = resp.json().await.unwrap();

    let token = text(&refreshed, "access_token");
    assert_eq!(decode_claims(&token)["sid"], sid);
    let listed = sessions(&app, &token).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], sid);
    assert_ne!(listed[0]["last_refresh_at"], listed[0]["created_at"]);
}

#[tokio::test]
async fn ending_a_session_refuses_its_refresh_token_and_leaves_the_others() {
    let app = spawn_app().await;
    let phone = app.login_ok("c1@cat").await;
    let laptop = app.login_ok("c2@cat").await;
    let token = text(&laptop, "access_token");
    let phone_sid = text(&decode_claims(&text(&phone, "access_token")), "sid");

    let resp = end(&app, &token, &phone_sid).await;

    assert_eq!(resp.status(), 204);
    assert_error(app.refresh(&text(&phone, "refresh_token")).await, 401, "invalid_grant").await;
    let left: Vec<_> = sessions(&app, &token).await.iter().map(|s| s["id"].clone()).collect();
    assert_eq!(left, [decode_claims(&token)["sid"].clone()]);
    assert_eq!(app.refresh(&text(&laptop, "refresh_token")).await.status(), 200);
    let again = assert_error(end(&app, &token, &phone_sid).await, 404, "session_not_found").await;
    assert!(text(&again, "error_description").contains("GET /v1/me/sessions"), "{again}");
}

#[tokio::test]
async fn a_session_id_that_is_not_the_user_s_live_one_is_refused_and_nothing_ends() {
    let app = spawn_app().await;
    let dan = app.login_ok("c1@dan").await;
    let eve = app.login_ok("c1@eve").await;
    let (dan_token, eve_token) = (text(&dan, "access_token"), text(&eve, "access_token"));
    let dan_sid = text(&decode_claims(&dan_token), "sid");
    let cases = [
        ("another user's session", eve_token.as_str(), dan_sid.as_str(), 404, "session_not_found"),
        (
            "a session that never was",
            dan_token.as_str(),
            "0193a1b2-0000-7000-8000-000000000000",
            404,
            "session_not_found",
        ),
        ("not a UUID", dan_token.as_str(), "phone", 400, "invalid_request"),
        ("no token", "", dan_sid.as_str(), 401, "invalid_token"),
    ];
    for (what, token, id, status, error) in cases {
        let url = format!("{}/v1/me/sessions/{id}", app.address);
        let mut req = app.client.delete(url);
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        let body = assert_error(req.send().await.unwrap(), status, error).await;
        assert!(body["error_description"].is_string(), "{what}: {body}");
    }
    assert_eq!(sessions(&app, &dan_token).await.len(), 1, "dan's session was ended");
    assert_eq!(app.refresh(&text(&dan, "refresh_token")).await.status(), 200);
}

#[tokio::test]
async fn the_session_id_cannot_be_turned_into_a_token_that_ends_the_session() {
    // A refresh token is user ‖ family ‖ generation ‖ verifier, and presenting an older
    // generation of a family revokes it: were the session id the family id, anyone who
    // saw it could end the session with a made-up generation-0 token.
    let app = spawn_app().await;
    let login = app.login_ok("c1@fay").await;
    app.refresh(&text(&login, "refresh_token")).await;
    let token = text(&login, "access_token");
    let sid = uuid::Uuid::parse_str(&text(&decode_claims(&token), "sid")).unwrap();
    let user = uuid::Uuid::parse_str(&text(&login["user"], "id")).unwrap();
    let forged = [&user.as_bytes()[..], sid.as_bytes(), &0u32.to_be_bytes(), &[0u8; 32]].concat();

    let resp = app.refresh(&format!("rt_{}", URL_SAFE_NO_PAD.encode(forged))).await;

    assert_error(resp, 401, "invalid_grant").await;
    assert_eq!(sessions(&app, &token).await.len(), 1, "the forged token ended the session");
    let family = &URL_SAFE_NO_PAD.decode(&text(&login, "refresh_token")[3..]).unwrap()[16..32];
    assert_ne!(family, sid.as_bytes());
}

#[tokio::test]
async fn the_address_comes_from_x_forwarded_for_only_through_a_trusted_proxy() {
    let trusting = spawn_app_with(|c| {
        c.set("WXAUTH_TRUSTED_PROXIES", "127.0.0.1");
    })
    .await;
    let login = login_from(&trusting, "c1@gus", b"ua", &["198.51.100.1, 203.0.113.9"]).await;
    let listed = sessions(&trusting, &text(&login, "access_token")).await;
    assert_eq!(listed[0]["ip"], "203.0.113.9");

    let untrusting = spawn_app().await;
    let login = login_from(&untrusting, "c1@gus", b"ua", &["203.0.113.9"]).await;
    let listed = sessions(&untrusting, &text(&login, "access_token")).await;
    assert_eq!(listed[0]["ip"], "127.0.0.1", "a header any client can send was believed");
}

#[tokio::test]
async fn a_bind_starts_a_session_with_its_address_and_user_agent() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_REGISTRATION", "bind");
    })
    .await;
    app.add_account("hal", "correct horse battery").await;
    let ticket = app.ticket("c1@hal").await;
    let body = json!({"bind_ticket": ticket, "username": "hal", "password": "correct horse battery"});

    let resp = app.client.post(format!("{}/v1/bind", app.address)).header("user-agent", "devtools").json(&body);
    let resp = resp.send().await.unwrap();

    assert_eq!(resp.status(), 200);
    let bound: Value = resp.json().await.unwrap();
    let listed = sessions(&app, &text(&bound, "access_token")).await;
    assert_eq!(
        (listed.len(), &listed[0]["user_agent"], &listed[0]["ip"]),
        (1, &json!("devtools"), &json!("127.0.0.1"))
    );
}

#[tokio::test]
async fn logout_and_logout_all_end_the_listed_sessions() {
    let app = spawn_app().await;
    let first = app.login_ok("c1@ivy").await;
    let second = app.login_ok("c2@ivy").await;
    let token = text(&second, "access_token");
    let resp = app.post("/v1/logout", &json!({"refresh_token": text(&first, "refresh_token")})).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(sessions(&app, &token).await.len(), 1);

    let resp = app.post_with("/v1/me/logout-all", &token, &json!({})).await;

    assert_eq!(resp.status(), 204);
    assert!(sessions(&app, &token).await.is_empty());
}
