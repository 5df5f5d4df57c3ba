//! Refresh tokens: rotation, reuse detection, logout, logout-all, expiry.

use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, spawn_app, spawn_app_with};

fn text(body: &Value, field: &str) -> String {
    body[field].as_str().unwrap_or_else(|| panic!("no {field} in {body}")).to_owned()
}

async fn refreshed(app: &TestApp, refresh_token: &str) -> Value {
    let resp = app.refresh(refresh_token).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn a_login_answers_a_refresh_token_with_its_lifetime() {
    let app = spawn_app().await;
    let login = app.login_ok("alice").await;
    assert!(text(&login, "refresh_token").starts_with("rt_"), "{login}");
    assert_eq!(login["refresh_expires_in"], 2_592_000);

    let app = spawn_app_with(|c| {
        c.set("WXAUTH_REFRESH_TOKEN_TTL", "600");
    })
    .await;
    assert_eq!(app.login_ok("alice").await["refresh_expires_in"], 600);
}

#[tokio::test]
async fn a_chain_of_five_refreshes_keeps_the_user_and_spends_each_token() {
    let app = spawn_app().await;
    let login = app.login_ok("bob").await;
    let mut seen = vec![text(&login, "refresh_token")];
    for _ in 0..5 {
        let body = refreshed(&app, seen.last().unwrap()).await;
        assert_eq!(body["user"]["id"], login["user"]["id"]);
        assert_eq!(body["user"]["openid"], "o_bob");
        assert_eq!(body["user"]["created"], false);
        let me = app.me_ok(&text(&body, "access_token")).await;
        assert_eq!(me["id"], login["user"]["id"]);
        let next = text(&body, "refresh_token");
        assert!(!seen.contains(&next), "a refresh token came back twice");
        seen.push(next);
    }
    // Only the newest works: the fifth refresh is the live one.
    refreshed(&app, seen.last().unwrap()).await;
}

#[tokio::test]
async fn presenting_a_spent_token_again_revokes_its_whole_family() {
    let app = spawn_app().await;
    let first = text(&app.login_ok("carol").await, "refresh_token");
    let other_login = text(&app.login_ok("x@carol").await, "refresh_token");
    let second = text(&refreshed(&app, &first).await, "refresh_token");

    let body = assert_error(app.refresh(&first).await, 401, "invalid_grant").await;
    assert!(body["error_description"].as_str().unwrap().contains("already used"), "{body}");
    // The newest token of the family dies with it: the thief's or the owner's, whoever
    // refreshed first, cannot go on.
    assert_error(app.refresh(&second).await, 401, "invalid_grant").await;
    // Another login of the same person is another family.
    refreshed(&app, &other_login).await;
}

#[tokio::test]
async fn concurrent_presentations_of_one_token_rotate_it_at_most_once() {
    let app = spawn_app().await;
    let token = text(&app.login_ok("dave").await, "refresh_token");
    let requests = (0..10).map(|_| app.refresh(&token));
    let statuses: Vec<u16> =
        futures_util::future::join_all(requests).await.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().filter(|s| **s == 200).count() <= 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 401), "{statuses:?}");
}

#[tokio::test]
async fn logout_revokes_the_family_and_answers_204_every_time() {
    let app = spawn_app().await;
    let login = app.login_ok("erin").await;
    let next = text(&refreshed(&app, &text(&login, "refresh_token")).await, "refresh_token");
    for _ in 0..2 {
        let resp = app.post("/v1/logout", &json!({"refresh_token": next})).await;
        assert_eq!(resp.status(), 204);
    }
    assert_error(app.refresh(&next).await, 401, "invalid_grant").await;
    assert_eq!(app.post("/v1/logout", &json!({"refresh_token": "rt_never-issued"})).await.status(), 204);
    for body in [json!({}), json!({"refresh_token": ""}), json!({"refresh_token": 42}), json!([])] {
        assert_error(app.post("/v1/logout", &body).await, 400, "invalid_request").await;
        assert_error(app.post("/v1/token/refresh", &body).await, 400, "invalid_request").await;
    }
    // The access token stays valid until it expires: it is stateless.
    assert_eq!(app.me(&text(&login, "access_token")).await.status(), 200);
}

#[tokio::test]
async fn logout_all_revokes_every_family_of_the_user_and_no_other() {
    let app = spawn_app().await;
    let phone = app.login_ok("1@frank").await;
    let tablet = text(&app.login_ok("2@frank").await, "refresh_token");
    let stranger = text(&app.login_ok("gina").await, "refresh_token");

    assert_error(app.post("/v1/me/logout-all", &json!({})).await, 401, "invalid_token").await;
    let resp = app.post_with("/v1/me/logout-all", &text(&phone, "access_token"), &json!({})).await;
    assert_eq!(resp.status(), 204);
    assert_error(app.refresh(&text(&phone, "refresh_token")).await, 401, "invalid_grant").await;
    assert_error(app.refresh(&tablet).await, 401, "invalid_grant").await;
    refreshed(&app, &stranger).await;
    // A login afterwards starts a family of its own.
    refreshed(&app, &text(&app.login_ok("3@frank").await, "refresh_token")).await;
}

#[tokio::test]
async fn a_refresh_token_expires_after_its_lifetime_and_each_refresh_renews_it() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_REFRESH_TOKEN_TTL", "600");
    })
    .await;
    let token = text(&app.login_ok("hank").await, "refresh_token");
    app.advance(599);
    let renewed = text(&refreshed(&app, &token).await, "refresh_token");
    app.advance(599);
    let renewed = text(&refreshed(&app, &renewed).await, "refresh_token");
    app.advance(601);
    let body = assert_error(app.refresh(&renewed).await, 401, "invalid_grant").await;
    assert!(body["error_description"].as_str().unwrap().contains("expired"), "{body}");
}

#[tokio::test]
async fn a_refresh_after_the_binding_was_removed_fails() {
    let app = spawn_app().await;
    let login = app.login_ok("ivy").await;
    assert_eq!(app.unbind(&text(&login, "access_token")).await.status(), 200);
    let body = assert_error(app.refresh(&text(&login, "refresh_token")).await, 401, "invalid_grant").await;
    assert!(body["error_description"].as_str().unwrap().contains("revoked"), "{body}");
}

/// Binds `code`'s person to alice (bind mode) and returns the answer.
async fn bind_alice(app: &TestApp, code: &str) -> Value {
    let resp = app.bind(&json!({"code": code, "username": "alice", "password": "alices password"})).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn bind_mode() -> TestApp {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_REGISTRATION", "bind");
    })
    .await;
    app.add_account("alice", "alices password").await;
    app
}

#[tokio::test]
async fn binding_the_same_identity_again_after_an_unbind_does_not_revive_an_old_refresh_token() {
    let app = bind_mode().await;
    let first = bind_alice(&app, "c1@kim").await;
    let spent = text(&first, "refresh_token");
    let live = text(&refreshed(&app, &spent).await, "refresh_token");
    assert_eq!(app.unbind(&text(&first, "access_token")).await.status(), 200);

    let again = bind_alice(&app, "c2@kim").await;

    assert_eq!(again["user"]["id"], first["user"]["id"]);
    for token in [live, spent] {
        let body = assert_error(app.refresh(&token).await, 401, "invalid_grant").await;
        assert!(body["error_description"].as_str().unwrap().contains("revoked"), "{body}");
    }
    refreshed(&app, &text(&again, "refresh_token")).await;
}

#[tokio::test]
async fn changing_or_removing_an_account_ends_every_session_of_its_user() {
    let app = bind_mode().await;
    let bound = bind_alice(&app, "c1@lin").await;
    let hash = wxauth::password::hash(&wxauth::domain::Password::new_for_account("a new password").unwrap()).unwrap();
    let command = wxauth::admin::Command::SetPassword { username: "alice".into(), password_hash: hash };
    wxauth::admin::send(&app.admin_socket(), &command).await.unwrap().unwrap();

    let body = assert_error(app.refresh(&text(&bound, "refresh_token")).await, 401, "invalid_grant").await;
    assert!(body["error_description"].as_str().unwrap().contains("revoked"), "{body}");

    let resp = app.bind(&json!({"code": "c2@lin", "username": "alice", "password": "a new password"})).await;
    let rebound: Value = resp.json().await.unwrap();
    let command = wxauth::admin::Command::RemoveAccount { username: "alice".into() };
    wxauth::admin::send(&app.admin_socket(), &command).await.unwrap().unwrap();
    assert_error(app.refresh(&text(&rebound, "refresh_token")).await, 401, "invalid_grant").await;
}

#[tokio::test]
async fn a_user_keeps_only_its_newest_logins_so_repeated_logins_cannot_grow_the_store() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_REFRESH_FAMILIES_PER_USER", "2");
    })
    .await;
    let logins = [app.login_ok("c1@max").await, app.login_ok("c2@max").await, app.login_ok("c3@max").await];
    let other = app.login_ok("c1@ned").await;

    assert_error(app.refresh(&text(&logins[0], "refresh_token")).await, 401, "invalid_grant").await;
    for login in &logins[1..] {
        refreshed(&app, &text(login, "refresh_token")).await;
    }
    refreshed(&app, &text(&other, "refresh_token")).await;
}

#[tokio::test]
async fn refreshes_of_one_login_are_limited_per_minute_by_default() {
    let app = spawn_app().await;
    let login = app.login_ok("olga").await;
    let other = app.login_ok("pia").await;
    let mut token = text(&login, "refresh_token");
    for _ in 0..10 {
        token = text(&refreshed(&app, &token).await, "refresh_token");
    }

    let resp = app.refresh(&token).await;

    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body = assert_error(resp, 429, "rate_limited").await;
    assert!(body["error_description"].as_str().unwrap().contains("refreshes"), "{body}");
    // Another login is not slowed down.
    refreshed(&app, &text(&other, "refresh_token")).await;
}

#[tokio::test]
async fn refreshes_from_one_address_are_limited_before_the_body_is_read() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_REFRESH_ATTEMPTS_PER_IP", "2");
    })
    .await;
    for _ in 0..2 {
        assert_error(app.refresh("rt_forged").await, 401, "invalid_grant").await;
    }

    let resp = app.client.post(format!("{}/v1/token/refresh", app.address)).body("not even json").send().await.unwrap();

    assert!(resp.headers().contains_key("retry-after"));
    let body = assert_error(resp, 429, "rate_limited").await;
    assert!(body["error_description"].as_str().unwrap().contains("refreshes"), "{body}");
}

#[tokio::test]
async fn a_bind_answers_a_refresh_token_too() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_REGISTRATION", "bind");
    })
    .await;
    app.add_account("jack", "jacks password").await;
    let ticket = app.ticket("jack").await;
    let resp = app.bind(&json!({"bind_ticket": ticket, "username": "jack", "password": "jacks password"})).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    refreshed(&app, &text(&body, "refresh_token")).await;
}
