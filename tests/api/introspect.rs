//! `POST /v1/token/introspect` (RFC 7662): services authenticated as one of
//! `[[introspection_clients]]` learn whether an access token still works, and stop
//! trusting it within one request after a ban, an ended session, logout-all, logout, an
//! unbind or the removal of the user.

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Value, json};
use wxauth::admin::Command;

use crate::helpers::{APPID, SECRET, TestApp, assert_error, spawn_app_with};

const CLIENT_SECRET: &str = "orders-secret-0123456789+abcdefghij/XYZ";

fn text(body: &Value, field: &str) -> String {
    body[field].as_str().unwrap_or_else(|| panic!("no {field} in {body}")).to_owned()
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

async fn app() -> TestApp {
    spawn_app_with(|c| {
        c.toml = Some(format!(
            "wechat_appid = \"{APPID}\"\nwechat_secret = \"{SECRET}\"\n\n\
             [[introspection_clients]]\nclient_id = \"orders\"\nsecret = \"{CLIENT_SECRET}\"\n"
        ));
    })
    .await
}

async fn introspect_as(app: &TestApp, credentials: Option<&str>, token: &str) -> reqwest::Response {
    let mut req = app.client.post(format!("{}/v1/token/introspect", app.address));
    req = req.header("content-type", "application/x-www-form-urlencoded").body(form(&[("token", token)]));
    if let Some(credentials) = credentials {
        req = req.header("authorization", format!("Basic {}", STANDARD.encode(credentials)));
    }
    req.send().await.unwrap()
}

async fn introspect(app: &TestApp, token: &str) -> Value {
    let resp = introspect_as(app, Some(&format!("orders:{CLIENT_SECRET}")), token).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn an_active_token_is_described_and_anything_else_is_only_inactive() {
    let app = app().await;
    let login = app.login_ok("c1@amy").await;
    let token = text(&login, "access_token");

    let active = introspect(&app, &token).await;

    assert_eq!((active["active"].clone(), active["token_type"].clone()), (json!(true), json!("Bearer")));
    assert_eq!(active["sub"], login["user"]["id"]);
    assert_eq!((active["appid"].as_str(), active["openid"].as_str()), (Some(APPID), Some("o_amy")));
    assert!(active["sid"].is_string() && active["exp"].is_i64() && active["jti"].is_string(), "{active}");
    let mut tampered = token.clone();
    tampered.replace_range(token.len() - 4.., "AAAA");
    for (what, other) in [
        ("a refresh token", text(&login, "refresh_token")),
        ("a tampered token", tampered),
        ("not a token", "hello".into()),
        ("nothing", String::new()),
    ] {
        assert_eq!(introspect(&app, &other).await, json!({"active": false}), "{what}");
    }
    app.advance(900 + 31); // past exp and its 30 s of leeway
    assert_eq!(introspect(&app, &token).await, json!({"active": false}), "an expired token");
}

#[tokio::test]
async fn a_token_turns_inactive_within_one_request_after_each_way_its_session_or_user_ends() {
    let app = app().await;
    app.add_account("carl", "correct horse battery").await;
    let admin = |command| {
        let socket = app.admin_socket();
        async move { wxauth::admin::send(&socket, &command).await.unwrap().unwrap() }
    };
    let cases =
        ["a ban", "the session ended by its user", "logout-all", "logout", "an unbind", "the removal of the user"];
    for (i, what) in cases.into_iter().enumerate() {
        let code = format!("c@person{i}");
        let login = if what == "the removal of the user" {
            let body = json!({"code": code, "username": "carl", "password": "correct horse battery"});
            let resp = app.bind(&body).await;
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()
        } else {
            app.login_ok(&code).await
        };
        let (token, refresh) = (text(&login, "access_token"), text(&login, "refresh_token"));
        let id = text(&login["user"], "id");
        assert_eq!(introspect(&app, &token).await["active"], true, "{what}: before");

        match what {
            "a ban" => drop(admin(Command::BanUser { query: id, reason: "spam".into(), until: None }).await),
            "the session ended by its user" => {
                let sid = text(&introspect(&app, &token).await, "sid");
                let url = format!("{}/v1/me/sessions/{sid}", app.address);
                assert_eq!(app.client.delete(url).bearer_auth(&token).send().await.unwrap().status(), 204);
            }
            "logout-all" => assert_eq!(app.post_with("/v1/me/logout-all", &token, &json!({})).await.status(), 204),
            "logout" => assert_eq!(app.post("/v1/logout", &json!({"refresh_token": refresh})).await.status(), 204),
            "an unbind" => assert_eq!(app.unbind(&token).await.status(), 200),
            _ => drop(admin(Command::RemoveAccount { username: "carl".into() }).await),
        }

        assert_eq!(introspect(&app, &token).await, json!({"active": false}), "{what}: after");
    }
    let other = text(&app.login_ok("c@bystander").await, "access_token");
    assert_eq!(introspect(&app, &other).await["active"], true, "nobody else was touched");
}

#[tokio::test]
async fn a_caller_that_is_not_a_configured_client_gets_401_invalid_client_and_learns_nothing() {
    let app = app().await;
    let token = text(&app.login_ok("c1@dan").await, "access_token");
    let encoded = url::form_urlencoded::byte_serialize(CLIENT_SECRET.as_bytes()).collect::<String>();
    assert_ne!(encoded, CLIENT_SECRET, "the secret has characters form encoding changes");
    let form_encoded = format!("orders:{encoded}");
    let cases = [
        ("no credentials", None),
        ("a wrong secret", Some("orders:orders-secret-0123456789+abcdefghij/XYz")),
        ("an unknown client", Some("billing:orders-secret-0123456789+abcdefghij/XYZ")),
        ("no colon", Some("orders")),
    ];
    for (what, credentials) in cases {
        let resp = introspect_as(&app, credentials, &token).await;
        assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"wxauth\", Bearer realm=\"wxauth\"", "{what}");
        let body = assert_error(resp, 401, "invalid_client").await;
        assert!(body.get("active").is_none(), "{what}: {body}");
    }
    let resp = introspect_as(&app, Some(&form_encoded), &token).await;
    assert_eq!(resp.status(), 200, "a secret form-encoded as RFC 6749 says");
    let resp = app
        .client
        .post(format!("{}/v1/token/introspect", app.address))
        .header("authorization", format!("Basic {}", STANDARD.encode(format!("orders:{CLIENT_SECRET}"))))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("nothing", "here")]))
        .send()
        .await
        .unwrap();
    let body = assert_error(resp, 400, "invalid_request").await;
    assert!(text(&body, "error_description").contains("token"), "{body}");
}

async fn introspect_with_bearer(app: &TestApp, bearer: &str, token: &str) -> reqwest::Response {
    let req = app.client.post(format!("{}/v1/token/introspect", app.address)).bearer_auth(bearer);
    let req = req.header("content-type", "application/x-www-form-urlencoded").body(form(&[("token", token)]));
    req.send().await.unwrap()
}

#[tokio::test]
async fn an_admin_token_of_either_role_introspects_until_it_is_revoked_and_a_forged_one_never() {
    use wxauth::store::AdminRole;
    let app = app().await;
    let login = app.login_ok("c1@erin").await;
    let token = text(&login, "access_token");
    let read = app.admin_token("support", AdminRole::Read).await;
    let write = app.admin_token("ops", AdminRole::Write).await;

    for (what, bearer) in [("read", &read), ("write", &write)] {
        let resp = introspect_with_bearer(&app, bearer, &token).await;
        assert_eq!(resp.status(), 200, "{what}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!((body["active"].clone(), body["sub"].clone()), (json!(true), login["user"]["id"].clone()), "{what}");
    }

    let mut forged = write.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let revoke = Command::RevokeAdminToken { name: "support".into() };
    wxauth::admin::send(&app.admin_socket(), &revoke).await.unwrap().unwrap();
    for (what, bearer) in [
        ("a revoked token", read.as_str()),
        ("the right id with a wrong secret", forged.as_str()),
        ("an access token", token.as_str()),
        ("not a token", "wxa_"),
    ] {
        let resp = introspect_with_bearer(&app, bearer, &token).await;
        let body = assert_error(resp, 401, "invalid_client").await;
        assert!(body.get("active").is_none(), "{what}: {body}");
    }
    assert_eq!(introspect_with_bearer(&app, &write, &token).await.status(), 200, "the other token still works");
}
