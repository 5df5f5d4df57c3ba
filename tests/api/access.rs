//! `GET /v1/me/export`: everything wxauth holds about the person, without secrets.

use serde_json::{Value, json};
use wxauth::admin::Command;

use crate::helpers::{APPID, PHONE, assert_error, default_session_key, spawn_app_with};

fn text(body: &Value, field: &str) -> String {
    body[field].as_str().unwrap_or_else(|| panic!("no {field} in {body}")).to_owned()
}

#[tokio::test]
async fn the_export_holds_the_user_what_they_shared_their_controls_and_sessions_and_no_secret() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_REGISTRATION", "bind");
    })
    .await;
    app.add_account("amy", "correct horse battery").await;
    let body = json!({"code": "c1@amy", "username": "amy", "password": "correct horse battery"});
    let bound: Value = app.bind(&body).await.json().await.unwrap();
    let token = text(&bound, "access_token");
    assert_eq!(app.post_with("/v1/me/phone", &token, &json!({"code": "c"})).await.status(), 200);
    let socket = app.admin_socket();
    let id = text(&bound["user"], "id");
    for command in [
        Command::SetRoles { query: id.clone(), roles: vec!["staff".into()] },
        Command::SetClaims { query: id.clone(), claims: r#"{"tier":"gold"}"#.into() },
    ] {
        wxauth::admin::send(&socket, &command).await.unwrap().unwrap();
    }

    let resp = app.client.get(format!("{}/v1/me/export", app.address)).bearer_auth(&token).send().await.unwrap();

    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["content-disposition"], "attachment; filename=\"wxauth-export.json\"");
    let export: Value = resp.json().await.unwrap();
    assert_eq!(export["user"]["id"], json!(id));
    assert_eq!(export["user"]["username"], "amy");
    assert_eq!(export["user"]["identities"], json!([{"appid": APPID, "openid": "o_amy", "kind": "miniprogram"}]));
    assert_eq!(export["user"]["phone"]["pure_phone_number"], PHONE);
    assert_eq!((export["roles"].clone(), export["claims"].clone()), (json!(["staff"]), json!({"tier": "gold"})));
    assert_eq!(export["sessions"].as_array().map(Vec::len), Some(1), "{export}");
    assert_eq!(export["session_keys"][0]["appid"], APPID);
    assert!(export["exported_at"].is_string() && export.get("ban").is_none(), "{export}");
    let raw = export.to_string();
    for secret in [default_session_key("c1@amy"), text(&bound, "refresh_token"), "$argon2".into(), token.clone()] {
        assert!(!raw.contains(&secret), "the export holds a secret: {secret}");
    }
}

#[tokio::test]
async fn a_banned_person_can_still_read_what_is_held_about_them_including_the_ban() {
    let app = spawn_app_with(|_| {}).await;
    let login = app.login_ok("c1@ben").await;
    let command = Command::BanUser { query: text(&login["user"], "id"), reason: "spam".into(), until: None };
    wxauth::admin::send(&app.admin_socket(), &command).await.unwrap().unwrap();

    let resp = app
        .client
        .get(format!("{}/v1/me/export", app.address))
        .bearer_auth(text(&login, "access_token"))
        .send()
        .await
        .unwrap();

    let export: Value = resp.json().await.unwrap();
    assert_eq!(export["ban"]["reason"], "spam", "{export}");
    assert_eq!(export["sessions"], json!([]), "the ban ended the sessions");
    let resp = app.client.get(format!("{}/v1/me/export", app.address)).send().await.unwrap();
    assert_error(resp, 401, "invalid_token").await;
}
