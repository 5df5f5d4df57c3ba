//! Account deletion by the person: `DELETE /v1/me` with a fresh code, the grace period
//! (`WXAUTH_DELETION_GRACE_SECS`), `POST /v1/deletion/cancel`, and the erasure.

use reqwest::Method;
use serde_json::{Value, json};
use wxauth::store::AdminRole;

use crate::helpers::{PHONE, Reply, TestApp, assert_error, default_session_key, spawn_app, spawn_app_with};

fn text(body: &Value, field: &str) -> String {
    body[field].as_str().unwrap_or_else(|| panic!("no {field} in {body}")).to_owned()
}

async fn delete_me(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    let url = format!("{}/v1/me", app.address);
    app.client.delete(url).bearer_auth(token).json(body).send().await.unwrap()
}

async fn cancel(app: &TestApp, code: &str) -> reqwest::Response {
    app.post("/v1/deletion/cancel", &json!({ "code": code })).await
}

fn rfc3339(body: &Value, field: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(&text(body, field), &time::format_description::well_known::Rfc3339).unwrap()
}

/// What introspection says of `token`, asked with a fresh admin token.
async fn active(app: &TestApp, token: &str) -> Value {
    let admin = app.admin_token(&format!("t{}", uuid::Uuid::new_v4().simple()), AdminRole::Read).await;
    let req = app.client.post(format!("{}/v1/token/introspect", app.address)).bearer_auth(admin);
    let req = req.header("content-type", "application/x-www-form-urlencoded").body(format!("token={token}"));
    req.send().await.unwrap().json::<Value>().await.unwrap()["active"].clone()
}

#[tokio::test]
async fn deleting_my_account_with_a_fresh_code_erases_it_at_once_and_leaves_nothing_of_the_person() {
    let app = spawn_app().await;
    let login = app.login_ok("union1@amy").await;
    let (id, token) = (text(&login["user"], "id"), text(&login, "access_token"));
    assert_eq!(app.post_with("/v1/me/phone", &token, &json!({"code": "p1"})).await.status(), 200);
    let before = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);

    let resp = delete_me(&app, &token, &json!({"code": "union2@amy"})).await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    let erase_at = rfc3339(&body, "erase_at");
    assert!(erase_at >= before && erase_at <= time::OffsetDateTime::now_utc(), "{body}");

    assert_error(app.me(&token).await, 401, "invalid_token").await;
    assert_error(app.refresh(&text(&login, "refresh_token")).await, 401, "invalid_grant").await;
    assert_eq!(active(&app, &token).await, false, "introspection still calls the token active");
    let needles = [
        "o_amy".to_owned(),
        "u_amy".to_owned(),
        PHONE.to_owned(),
        default_session_key("union1@amy"),
        default_session_key("union2@amy"),
    ];
    // On sled, whose log keeps removed values until it reuses their segments, what was
    // sealed under the person's key is there but can no longer be opened.
    for needle in &needles {
        assert_eq!(app.stored_places_holding(needle.as_bytes()).await, Vec::<String>::new(), "{needle}");
    }

    let again = app.login_ok("union3@amy").await;
    assert_eq!(again["user"]["created"], true, "the erased user came back");
    assert_ne!(text(&again["user"], "id"), id);
    let filter = wxauth::store::events::EventFilter {
        user: wxauth::domain::UserId::parse(&id),
        limit: 100,
        ..Default::default()
    };
    let events = app.auth.store().events(&filter).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["deletion_done", "deletion_requested", "phone_verified", "login"], "{events:?}");
    assert!(events.iter().all(|e| e.ip.is_none() && e.user_agent.is_none() && e.details.is_empty()), "{events:?}");
}

#[tokio::test]
async fn a_deletion_is_refused_without_a_fresh_code_of_the_same_person_and_changes_nothing() {
    let app = spawn_app().await;
    let login = app.login_ok("c1@amy").await;
    let token = text(&login, "access_token");
    app.wechat.script("rejected", [Reply::errcode(40029)]);

    for (body, status, error) in [
        (json!({}), 400, "invalid_request"),
        (json!({"code": ""}), 400, "invalid_request"),
        (json!({"code": 7}), 400, "invalid_request"),
        (json!({"code": "has space"}), 400, "invalid_request"),
        (json!({"code": "rejected"}), 400, "invalid_code"),
        (json!({"code": "c1@bob"}), 403, "code_mismatch"),
    ] {
        let resp = delete_me(&app, &token, &body).await;
        assert_error(resp, status, error).await;
    }
    let anonymous = app.client.delete(format!("{}/v1/me", app.address)).json(&json!({"code": "c2@amy"})).send();
    assert_error(anonymous.await.unwrap(), 401, "invalid_token").await;
    assert_eq!(app.me(&token).await.status(), 200, "a refused deletion deleted");
    assert_eq!(app.refresh(&text(&login, "refresh_token")).await.status(), 200, "a refused deletion ended sessions");
}

#[tokio::test]
async fn during_the_grace_period_logins_are_refused_until_a_cancel_and_after_it_the_account_is_erased() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_DELETION_GRACE_SECS", "604800");
    })
    .await;
    let login = app.login_ok("c1@amy").await;
    let (id, token) = (text(&login["user"], "id"), text(&login, "access_token"));

    let resp = delete_me(&app, &token, &json!({"code": "c2@amy"})).await;
    let body: Value = resp.json().await.unwrap();
    let erase_at = rfc3339(&body, "erase_at");
    let week = time::OffsetDateTime::now_utc() + time::Duration::days(7);
    assert!((erase_at - week).abs() < time::Duration::minutes(1), "{body}");
    let refused = assert_error(app.login("c3@amy").await, 403, "account_pending_deletion").await;
    assert_eq!(rfc3339(&refused, "erase_at"), erase_at);
    assert_error(app.refresh(&text(&login, "refresh_token")).await, 401, "invalid_grant").await;

    assert_eq!(cancel(&app, "c4@amy").await.status(), 204);
    let back = app.login_ok("c5@amy").await;
    assert_eq!((text(&back["user"], "id"), back["user"]["created"].clone()), (id.clone(), json!(false)));
    assert_error(cancel(&app, "c6@amy").await, 404, "deletion_not_found").await;
    assert_error(cancel(&app, "c1@nobody").await, 404, "deletion_not_found").await;
    assert_error(cancel(&app, "").await, 400, "invalid_request").await;

    let token = text(&back, "access_token");
    assert_eq!(delete_me(&app, &token, &json!({"code": "c7@amy"})).await.status(), 202);
    app.advance(7 * 86_400 - 60);
    app.auth.erase_due().await.unwrap();
    assert_error(app.login("c8@amy").await, 403, "account_pending_deletion").await;
    app.advance(120);
    app.auth.erase_due().await.unwrap();
    let fresh = app.login_ok("c9@amy").await;
    assert_eq!(fresh["user"]["created"], true, "not erased once due");
    assert_error(cancel(&app, "c10@amy").await, 404, "deletion_not_found").await;
}

#[tokio::test]
async fn deleting_an_account_s_user_keeps_the_account_unbound_and_it_can_be_bound_again() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_REGISTRATION", "bind");
    })
    .await;
    let account = app.add_account("alice", "correct horse battery").await;
    let id = text(&account["user"], "id");
    let bind = |code: &str| json!({"code": code, "username": "alice", "password": "correct horse battery"});
    let bound: Value = app.bind(&bind("c1@amy")).await.json().await.unwrap();
    let token = text(&bound, "access_token");

    assert_eq!(delete_me(&app, &token, &json!({"code": "c2@amy"})).await.status(), 202);
    assert_error(app.login("c3@amy").await, 403, "not_bound").await;
    let again = app.bind(&bind("c4@amy")).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(text(&again["user"], "id"), id, "the account's user changed");
}

#[tokio::test]
async fn an_operator_deletes_a_user_at_once_through_the_admin_api() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_ADMIN_LISTEN", "127.0.0.1:0");
    })
    .await;
    let write = app.admin_token("ops", AdminRole::Write).await;
    let login = app.login_ok("c1@amy").await;
    let id = text(&login["user"], "id");
    let path = format!("/admin/v1/users/{id}");

    assert_eq!(app.admin(Method::DELETE, &path, &write).send().await.unwrap().status(), 204);
    assert_error(app.admin(Method::GET, &path, &write).send().await.unwrap(), 404, "user_not_found").await;
    assert_error(app.admin(Method::DELETE, &path, &write).send().await.unwrap(), 404, "user_not_found").await;
    assert_error(app.me(&text(&login, "access_token")).await, 401, "invalid_token").await;
    let events = app.admin(Method::GET, &format!("/admin/v1/events?user={id}&kind=deletion_requested"), &write);
    let events: Value = events.send().await.unwrap().json().await.unwrap();
    assert_eq!(events["events"][0]["actor"], "admin-token:ops", "{events}");
    assert_eq!(app.login_ok("c2@amy").await["user"]["created"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_that_comes_due_while_the_server_is_down_is_erased_when_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (_wechat, mut vars) = crate::helpers::production(dir.path()).await;
    for (name, value) in crate::helpers::store_vars() {
        vars.insert(name, value);
    }
    vars.insert("WXAUTH_DELETION_GRACE_SECS".into(), "2".into());
    let server = crate::helpers::Server::start(&vars, &["serve"]);
    let (status, login) = server.login("c1@amy").await;
    assert_eq!(status, 200, "{login}");
    let url = format!("{}/v1/me", server.address);
    let resp = reqwest::Client::new()
        .delete(url)
        .bearer_auth(text(&login, "access_token"))
        .json(&json!({"code": "c2@amy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let (status, refused) = server.login("c3@amy").await;
    assert_eq!((status, refused["error"].as_str()), (403, Some("account_pending_deletion")));
    server.kill();

    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let server = crate::helpers::Server::start(&vars, &["serve"]);
    let mut fresh = json!(null);
    for _ in 0..100 {
        let (status, body) = server.login("c4@amy").await;
        if status == 200 {
            fresh = body;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(fresh["user"]["created"], true, "not erased at start: {fresh}");
    assert_ne!(fresh["user"]["id"], login["user"]["id"]);
}

#[tokio::test]
async fn a_token_of_an_identity_unbound_since_cannot_delete_the_account() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_REGISTRATION", "bind");
    })
    .await;
    app.add_account("alice", "correct horse battery").await;
    let bind = |code: &str| json!({"code": code, "username": "alice", "password": "correct horse battery"});
    let first: Value = app.bind(&bind("c1@amy")).await.json().await.unwrap();
    let old_token = text(&first, "access_token");
    assert_eq!(app.unbind(&old_token).await.status(), 200);
    // Someone else binds the account; the first person's access token has not expired.
    let second: Value = app.bind(&bind("c1@bea")).await.json().await.unwrap();

    let resp = delete_me(&app, &old_token, &json!({"code": "c2@amy"})).await;
    assert_error(resp, 401, "invalid_token").await;
    assert_eq!(app.me(&text(&second, "access_token")).await.status(), 200, "the account was deleted");
    assert_eq!(app.refresh(&text(&second, "refresh_token")).await.status(), 200, "its sessions ended");
}
