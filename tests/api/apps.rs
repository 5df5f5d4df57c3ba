//! Several mini-programs in one deployment: choosing the app, unionid linking, identities.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::helpers::{
    APPID, APPID2, SECRET2, TWO_APPS, TestApp, assert_error, decode_claims, default_openid, second_app_openid,
    spawn_app, spawn_app_with,
};

async fn two_apps() -> TestApp {
    spawn_app_with(|c| c.toml = Some(TWO_APPS.into())).await
}

async fn login_via(app: &TestApp, code: &str, appid: &str) -> Value {
    let resp = app.post_login(&json!({"code": code, "appid": appid})).await;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "login with {code} via {appid}: {body}");
    body
}

#[tokio::test]
async fn with_several_apps_a_login_must_name_a_served_app() {
    let app = two_apps().await;

    let missing = assert_error(app.login("code1@amy").await, 400, "invalid_request").await;
    let unknown = app.post_login(&json!({"code": "code1@amy", "appid": "wx0000000000000000"})).await;
    let unknown = assert_error(unknown, 400, "unknown_app").await;

    let description = missing["error_description"].as_str().unwrap();
    assert!(description.contains("appid") && description.contains(APPID2), "{missing}");
    assert!(unknown["error_description"].as_str().unwrap().contains(APPID), "{unknown}");
    assert!(app.wechat.calls().is_empty(), "WeChat was called for a request naming no served app");
}

#[tokio::test]
async fn a_login_through_the_second_app_uses_its_secret_and_names_it_in_the_token() {
    let app = two_apps().await;

    let body = login_via(&app, "code1@amy", APPID2).await;

    let call = &app.wechat.calls()[0];
    assert_eq!((call["appid"].as_str(), call["secret"].as_str()), (APPID2, SECRET2));
    assert_eq!(body["user"]["appid"], APPID2);
    assert_eq!(body["user"]["openid"], second_app_openid("code1@amy"));
    let claims = decode_claims(body["access_token"].as_str().unwrap());
    assert_eq!((claims["appid"].as_str(), claims["openid"].as_str()), (Some(APPID2), body["user"]["openid"].as_str()));
}

#[tokio::test]
async fn one_person_logging_in_through_two_apps_is_one_user_with_both_identities() {
    let app = two_apps().await;

    let first = login_via(&app, "union1@amy", APPID).await;
    let second = login_via(&app, "union2@amy", APPID2).await;

    assert_eq!(second["user"]["id"], first["user"]["id"]);
    assert_eq!((first["user"]["created"].as_bool(), second["user"]["created"].as_bool()), (Some(true), Some(false)));
    let me = app.me_ok(second["access_token"].as_str().unwrap()).await;
    assert_eq!(me["appid"], APPID2);
    assert_eq!(me["openid"], second_app_openid("union2@amy"));
    assert_eq!(me["unionid"], "u_amy");
    let expected = json!([
        {"appid": APPID, "openid": default_openid("union1@amy"), "kind": "miniprogram"},
        {"appid": APPID2, "openid": second_app_openid("union2@amy"), "kind": "miniprogram"},
    ]);
    assert_eq!(me["identities"], expected);
    assert_eq!(decode_claims(second["access_token"].as_str().unwrap())["unionid"], "u_amy");
}

#[tokio::test]
async fn without_a_unionid_the_same_person_in_two_apps_is_two_users() {
    let app = two_apps().await;
    let a = login_via(&app, "code1@ben", APPID).await;
    let b = login_via(&app, "code2@ben", APPID2).await;
    assert_ne!(a["user"]["id"], b["user"]["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_apps_logging_in_with_the_same_unionid_at_once_make_one_user() {
    let app = Arc::new(two_apps().await);

    let logins: Vec<_> = (0..20)
        .map(|i| {
            let app = app.clone();
            let appid = if i % 2 == 0 { APPID } else { APPID2 };
            tokio::spawn(async move { login_via(&app, &format!("union{i}@cara"), appid).await })
        })
        .collect();
    let mut ids = Vec::new();
    for login in logins {
        ids.push(login.await.unwrap()["user"]["id"].clone());
    }

    assert!(ids.iter().all(|id| *id == ids[0]), "one person got several users: {ids:?}");
}

#[tokio::test]
async fn with_one_app_the_appid_is_optional_but_checked_when_given() {
    let app = spawn_app().await;

    login_via(&app, "code1@dan", APPID).await;
    let resp = app.post_login(&json!({"code": "code1@dan", "appid": APPID2})).await;

    assert_error(resp, 400, "unknown_app").await;
}

#[tokio::test]
async fn in_bind_mode_a_person_bound_in_one_app_logs_in_silently_through_another() {
    let app = spawn_app_with(|c| {
        c.toml = Some(TWO_APPS.into());
        c.set("WXAUTH_REGISTRATION", "bind");
    })
    .await;
    app.add_account("alice", "correct horse battery").await;
    let unbound = app.post_login(&json!({"code": "union1@eve", "appid": APPID})).await;
    let ticket = assert_error(unbound, 403, "not_bound").await["bind_ticket"].as_str().unwrap().to_owned();
    let bound =
        app.bind(&json!({"bind_ticket": ticket, "username": "alice", "password": "correct horse battery"})).await;
    assert_eq!(bound.status(), 200);

    let other_app = login_via(&app, "union2@eve", APPID2).await;

    let me = app.me_ok(other_app["access_token"].as_str().unwrap()).await;
    assert_eq!(me["username"], "alice");
    assert_eq!(me["identities"].as_array().unwrap().len(), 2);
    // Unbinding removes the person from both apps.
    assert_eq!(app.unbind(other_app["access_token"].as_str().unwrap()).await.status(), 200);
    let again = app.post_login(&json!({"code": "union3@eve", "appid": APPID2})).await;
    assert_error(again, 403, "not_bound").await;
}

#[tokio::test]
async fn two_existing_users_that_turn_out_to_share_a_unionid_are_reported_not_merged() {
    let app = two_apps().await;
    // Before the apps were tied to one Open Platform account: no unionid, two users.
    let a = login_via(&app, "code1@fay", APPID).await;
    let b = login_via(&app, "code2@fay", APPID2).await;

    let a_later = login_via(&app, "union3@fay", APPID).await;
    let b_later = login_via(&app, "union4@fay", APPID2).await;

    assert_eq!(a_later["user"]["id"], a["user"]["id"]);
    assert_eq!(b_later["user"]["id"], b["user"]["id"], "merged silently");
    let command = wxauth::admin::Command::ShowUser { query: b["user"]["id"].as_str().unwrap().into() };
    let shown = wxauth::admin::send(&app.admin_socket(), &command).await.unwrap().unwrap();
    let shown = serde_json::to_value(shown).unwrap();
    assert_eq!(shown["users"][0]["unionid_shared_with"], json!([a["user"]["id"]]), "{shown}");
}
