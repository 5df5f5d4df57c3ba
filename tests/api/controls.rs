//! What an operator decides about a user, through the admin channel (`wxauth users ban |
//! unban | set-roles | set-claims`): bans refuse login, bind and refresh with 403
//! `user_banned`; roles and custom claims ride in access tokens.

use serde_json::{Value, json};
use time::OffsetDateTime;
use wxauth::admin::{AdminError, Command, Reply, send};

use crate::helpers::{TestApp, assert_error, decode_claims, spawn_app, spawn_app_with};

fn text(body: &Value, field: &str) -> String {
    body[field].as_str().unwrap_or_else(|| panic!("no {field} in {body}")).to_owned()
}

async fn admin(app: &TestApp, command: Command) -> Result<Reply, AdminError> {
    send(&app.admin_socket(), &command).await.map(|reply| reply.expect("no admin socket"))
}

async fn ban(app: &TestApp, query: &str, reason: &str, until: Option<OffsetDateTime>) {
    admin(app, Command::BanUser { query: query.into(), reason: reason.into(), until }).await.unwrap();
}

#[tokio::test]
async fn a_banned_user_s_login_and_refresh_answer_403_user_banned_with_the_reason_and_its_end() {
    let app = spawn_app().await;
    let login = app.login_ok("c1@amy").await;
    let (id, token) = (text(&login["user"], "id"), text(&login, "access_token"));
    let until = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() + time::Duration::days(7);

    ban(&app, &id, "spam orders", Some(until)).await;

    let refused = app.login("c2@amy").await;
    assert_eq!(refused.headers()["cache-control"], "no-store");
    let body = assert_error(refused, 403, "user_banned").await;
    assert!(text(&body, "error_description").contains("spam orders"), "{body}");
    let until_text = until.format(&time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!(
        OffsetDateTime::parse(&text(&body, "until"), &time::format_description::well_known::Rfc3339).unwrap(),
        until,
        "{until_text}"
    );
    let body = assert_error(app.refresh(&text(&login, "refresh_token")).await, 403, "user_banned").await;
    assert!(text(&body, "error_description").contains("spam orders"), "{body}");
    let sessions = app.client.get(format!("{}/v1/me/sessions", app.address)).bearer_auth(&token).send().await.unwrap();
    let sessions: Value = sessions.json().await.unwrap();
    assert_eq!(sessions["sessions"], json!([]), "the ban revoked every session");
    assert_eq!(app.login_ok("c1@bob").await["user"]["created"], true, "another user is not touched");
}

#[tokio::test]
async fn an_unban_lets_the_user_in_again_but_not_with_the_revoked_refresh_tokens() {
    let app = spawn_app().await;
    let login = app.login_ok("c1@cat").await;
    let id = text(&login["user"], "id");
    ban(&app, "o_cat", "chargebacks", None).await;
    let body = assert_error(app.login("c2@cat").await, 403, "user_banned").await;
    assert!(body.get("until").is_none(), "a ban until lifted has no end: {body}");

    admin(&app, Command::UnbanUser { query: id.clone() }).await.unwrap();

    assert_eq!(text(&app.login_ok("c3@cat").await["user"], "id"), id);
    assert_error(app.refresh(&text(&login, "refresh_token")).await, 401, "invalid_grant").await;
}

#[tokio::test]
async fn a_ban_ends_by_itself_at_its_end() {
    let app = spawn_app().await;
    let id = text(&app.login_ok("c1@dan").await["user"], "id");
    ban(&app, &id, "cooling off", Some(OffsetDateTime::now_utc() + time::Duration::seconds(60))).await;
    assert_error(app.login("c2@dan").await, 403, "user_banned").await;

    app.advance(61);

    assert_eq!(text(&app.login_ok("c3@dan").await["user"], "id"), id);
}

#[tokio::test]
async fn binding_to_a_banned_account_is_refused_after_the_password_and_binds_nothing() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_REGISTRATION", "bind");
    })
    .await;
    app.add_account("eve", "correct horse battery").await;
    ban(&app, "eve", "fraud", None).await;
    let app = &app;
    let bind = |code: &str, password: &str| {
        let body = json!({"code": code, "username": "eve", "password": password});
        async move { app.bind(&body).await }
    };

    assert_error(bind("c1@eve", "wrong password!").await, 401, "invalid_credentials").await;
    let body = assert_error(bind("c1@eve", "correct horse battery").await, 403, "user_banned").await;

    assert!(text(&body, "error_description").contains("fraud"), "{body}");
    admin(app, Command::UnbanUser { query: "eve".into() }).await.unwrap();
    let resp = app.login("c2@eve").await;
    assert_error(resp, 403, "not_bound").await;
}

#[tokio::test]
async fn roles_and_custom_claims_ride_in_every_access_token_and_can_be_cleared() {
    let app = spawn_app().await;
    let login = app.login_ok("c1@fay").await;
    let id = text(&login["user"], "id");
    assert!(decode_claims(&text(&login, "access_token")).get("roles").is_none());
    let roles = vec!["staff".into(), "shop:42".into(), "staff".into()];
    admin(&app, Command::SetRoles { query: id.clone(), roles }).await.unwrap();
    admin(&app, Command::SetClaims { query: id.clone(), claims: r#"{"tier":"gold","shop":42}"#.into() }).await.unwrap();

    let token = text(&app.login_ok("c2@fay").await, "access_token");
    let refreshed = app.refresh(&text(&login, "refresh_token")).await.json::<Value>().await.unwrap();

    for token in [token, text(&refreshed, "access_token")] {
        let claims = decode_claims(&token);
        assert_eq!(claims["roles"], json!(["shop:42", "staff"]), "sorted, once each");
        assert_eq!((claims["tier"].clone(), claims["shop"].clone()), (json!("gold"), json!(42)));
        assert_eq!(claims["sub"], json!(id), "the standard claims are untouched");
        assert_eq!(app.me(&token).await.status(), 200, "wxauth accepts its own token");
    }
    admin(&app, Command::SetRoles { query: id.clone(), roles: vec![] }).await.unwrap();
    admin(&app, Command::SetClaims { query: id.clone(), claims: "{}".into() }).await.unwrap();
    let cleared = decode_claims(&text(&app.login_ok("c3@fay").await, "access_token"));
    assert!(cleared.get("roles").is_none() && cleared.get("tier").is_none(), "{cleared}");
}

#[tokio::test]
async fn an_operator_s_bad_roles_claims_reasons_or_users_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let id = text(&app.login_ok("c1@gus").await["user"], "id");
    app.add_account("o_hal", "correct horse battery").await;
    app.login_ok("c1@hal").await;
    let cases = [
        ("a reserved claim", Command::SetClaims { query: id.clone(), claims: r#"{"sub":"root"}"#.into() }, "reserved"),
        ("claims that are not an object", Command::SetClaims { query: id.clone(), claims: "[1]".into() }, "object"),
        (
            "claims over 1024 bytes",
            Command::SetClaims { query: id.clone(), claims: format!(r#"{{"x":"{}"}}"#, "a".repeat(1100)) },
            "1024",
        ),
        ("a bad role", Command::SetRoles { query: id.clone(), roles: vec!["has space".into()] }, "role"),
        ("an empty reason", Command::BanUser { query: id.clone(), reason: " ".into(), until: None }, "reason"),
        (
            "an end in the past",
            Command::BanUser { query: id.clone(), reason: "x".into(), until: Some(OffsetDateTime::UNIX_EPOCH) },
            "end after it starts",
        ),
        ("nobody", Command::UnbanUser { query: "o_nobody".into() }, "no user"),
        // o_hal is an openid of one user and the username of another.
        ("two users", Command::BanUser { query: "o_hal".into(), reason: "x".into(), until: None }, "2 users"),
    ];
    for (what, command, why) in cases {
        match admin(&app, command).await {
            Err(AdminError::Refused(message)) => assert!(message.contains(why), "{what}: {message}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    let token = decode_claims(&text(&app.login_ok("c2@gus").await, "access_token"));
    assert!(token.get("roles").is_none() && token.get("x").is_none(), "{token}");
    app.login_ok("c2@hal").await;
}

#[tokio::test]
async fn a_user_first_seen_through_an_app_gets_its_default_role_and_existing_users_keep_theirs() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_WECHAT_DEFAULT_ROLE", "member");
    })
    .await;
    app.add_account("ivy", "correct horse battery").await;

    let token = text(&app.login_ok("c1@jon").await, "access_token");

    assert_eq!(decode_claims(&token)["roles"], json!(["member"]));
    let shown = admin(&app, Command::ShowUser { query: "ivy".into() }).await.unwrap();
    let Reply::Users { users } = shown else { panic!("{shown:?}") };
    assert!(users[0].roles.is_empty(), "an account's user is not made through an app");
}
