//! The admin API on its own listener (`WXAUTH_ADMIN_LISTEN`): admin tokens, finding users,
//! a user's file, bans, roles, claims, sessions, events, keys and statistics.

use reqwest::Method;
use serde_json::{Value, json};
use wxauth::store::AdminRole;

use crate::helpers::{TestApp, assert_error, spawn_app, spawn_app_with};

async fn app() -> TestApp {
    spawn_app_with(|c| {
        c.set("WXAUTH_ADMIN_LISTEN", "127.0.0.1:0");
    })
    .await
}

fn text(body: &Value, field: &str) -> String {
    body[field].as_str().unwrap_or_else(|| panic!("no {field} in {body}")).to_owned()
}

async fn get(app: &TestApp, token: &str, path: &str) -> Value {
    let resp = app.admin(Method::GET, path, token).send().await.unwrap();
    assert_eq!(resp.status(), 200, "GET {path}");
    assert_eq!(resp.headers()["cache-control"], "no-store", "GET {path}");
    resp.json().await.unwrap()
}

/// What introspection says of `token`, asked with admin token `admin`.
async fn introspect(app: &TestApp, admin: &str, token: &str) -> Value {
    let req = app.client.post(format!("{}/v1/token/introspect", app.address)).bearer_auth(admin);
    let req = req.header("content-type", "application/x-www-form-urlencoded").body(format!("token={token}"));
    req.send().await.unwrap().json().await.unwrap()
}

/// Every operation, with a body that would be accepted, as (method, path, body).
fn operations(user: &str) -> Vec<(Method, String, Option<Value>)> {
    let session = "0190d3a0-0000-7000-8000-000000000000";
    vec![
        (Method::GET, "/admin/v1/users".into(), None),
        (Method::GET, format!("/admin/v1/users/{user}"), None),
        (Method::DELETE, format!("/admin/v1/users/{user}"), None),
        (Method::PUT, format!("/admin/v1/users/{user}/ban"), Some(json!({"reason": "spam"}))),
        (Method::DELETE, format!("/admin/v1/users/{user}/ban"), None),
        (Method::PUT, format!("/admin/v1/users/{user}/roles"), Some(json!({"roles": ["vip"]}))),
        (Method::PUT, format!("/admin/v1/users/{user}/claims"), Some(json!({"claims": {"tier": 1}}))),
        (Method::PUT, format!("/admin/v1/users/{user}/account-phone"), Some(json!({"phone": "13700000099"}))),
        (Method::DELETE, format!("/admin/v1/users/{user}/sessions"), None),
        (Method::DELETE, format!("/admin/v1/users/{user}/sessions/{session}"), None),
        (Method::GET, "/admin/v1/events".into(), None),
        (Method::GET, "/admin/v1/keys".into(), None),
        (Method::GET, "/admin/v1/stats".into(), None),
        (Method::GET, "/admin/v1/token".into(), None),
    ]
}

#[tokio::test]
async fn the_admin_api_is_off_by_default_and_never_on_the_public_listener() {
    let off = spawn_app().await;
    assert!(off.admin_address.is_none(), "an admin listener without WXAUTH_ADMIN_LISTEN");
    let on = app().await;
    let token = on.admin_token("ops", AdminRole::Write).await;
    for app in [&off, &on] {
        for path in ["/admin/v1/users", "/admin/docs/", "/admin/openapi.json", "/admin/", "/admin/console.js"] {
            let resp = app.client.get(format!("{}{path}", app.address)).bearer_auth(&token).send().await.unwrap();
            assert_error(resp, 404, "not_found").await;
        }
    }
}

#[tokio::test]
async fn without_a_live_admin_token_every_operation_answers_401_invalid_token_and_changes_nothing() {
    let app = app().await;
    let login = app.login_ok("c1@amy").await;
    let user = text(&login["user"], "id");
    let revoked = app.admin_token("gone", AdminRole::Write).await;
    let command = wxauth::admin::Command::RevokeAdminToken { name: "gone".into() };
    wxauth::admin::send(&app.admin_socket(), &command).await.unwrap().unwrap();
    let access_token = text(&login, "access_token");
    let mut forged = app.admin_token("ops", AdminRole::Write).await;
    forged.replace_range(forged.len() - 2.., "AA");

    for (method, path, body) in operations(&user) {
        for (what, token) in [
            ("no token", None),
            ("revoked", Some(&revoked)),
            ("forged", Some(&forged)),
            ("a user's", Some(&access_token)),
        ] {
            let base = app.admin_address.as_deref().unwrap();
            let mut req = app.client.request(method.clone(), format!("{base}{path}"));
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            if let Some(body) = &body {
                req = req.json(body);
            }
            let resp = req.send().await.unwrap();
            assert!(resp.headers().contains_key("www-authenticate"), "{what}: {method} {path}");
            assert_error(resp, 401, "invalid_token").await;
        }
    }
    let me = app.me_ok(&access_token).await;
    assert!(me.get("roles").is_none_or(|r| r == &json!([])), "{me}");
    assert_eq!(app.refresh(&text(&login, "refresh_token")).await.status(), 200, "a refused ban revoked sessions");
}

#[tokio::test]
async fn a_read_token_reads_everything_and_every_change_answers_403_insufficient_scope() {
    let app = app().await;
    let login = app.login_ok("c1@amy").await;
    let user = text(&login["user"], "id");
    let read = app.admin_token("support", AdminRole::Read).await;

    for (method, path, body) in operations(&user) {
        let mut req = app.admin(method.clone(), &path, &read);
        if let Some(body) = &body {
            req = req.json(body);
        }
        let resp = req.send().await.unwrap();
        if method == Method::GET {
            assert_eq!(resp.status(), 200, "{method} {path}");
        } else {
            assert_error(resp, 403, "insufficient_scope").await;
        }
    }
    assert_eq!(app.login("c2@amy").await.status(), 200, "a refused ban was kept");
    let file = get(&app, &read, &format!("/admin/v1/users/{user}")).await;
    assert_eq!(file["user"]["roles"], json!([]));
    assert!(file["user"].get("ban").is_none(), "{file}");
}

#[tokio::test]
async fn users_are_found_by_id_openid_unionid_username_and_phone_number_and_listed_page_by_page() {
    let app = app().await;
    let token = app.admin_token("support", AdminRole::Read).await;
    let union = app.login_ok("union@bea").await;
    let mut ids = vec![text(&union["user"], "id")];
    for name in ["amy", "cal", "dan", "eve"] {
        ids.push(text(&app.login_ok(&format!("c1@{name}")).await["user"], "id"));
    }
    let account = app.add_account("frank", "correct horse battery").await;
    ids.push(text(&account["user"], "id"));
    ids.sort();

    for query in [ids[0].clone(), "o_bea".into(), "u_bea".into(), "frank".into(), "o_amy".into()] {
        let found = get(&app, &token, &format!("/admin/v1/users?q={query}")).await;
        let users = found["users"].as_array().unwrap();
        assert_eq!(users.len(), 1, "{query}: {found}");
        assert!(found.get("next_cursor").is_none(), "{found}");
    }
    let bea = get(&app, &token, "/admin/v1/users?q=u_bea").await;
    assert_eq!(
        bea["users"][0]["identities"],
        json!([{"appid": crate::helpers::APPID, "openid": "o_bea", "kind": "miniprogram"}])
    );
    assert_eq!(bea["users"][0]["unionid"], "u_bea");
    let nobody = get(&app, &token, "/admin/v1/users?q=o_nobody").await;
    assert_eq!(nobody["users"], json!([]));

    // A phone number as support staff are told it, in any usual spelling.
    let amy = app.login_ok("c2@amy").await;
    let verified = app.post_with("/v1/me/phone", &text(&amy, "access_token"), &json!({"code": "p1"})).await;
    assert_eq!(verified.status(), 200);
    let pure = crate::helpers::PHONE;
    let spaced = format!("+86 {} {} {}", &pure[..3], &pure[3..7], &pure[7..]);
    for query in [pure.to_owned(), format!("%2B86{pure}"), spaced.replace('+', "%2B").replace(' ', "%20")] {
        let found = get(&app, &token, &format!("/admin/v1/users?q={query}")).await;
        let users: Vec<String> = found["users"].as_array().unwrap().iter().map(|u| text(u, "id")).collect();
        assert_eq!(users, [text(&amy["user"], "id")], "{query}: {found}");
    }
    let other = get(&app, &token, "/admin/v1/users?q=13900000000").await;
    assert_eq!(other["users"], json!([]), "a number nobody verified");

    let mut listed = Vec::new();
    let mut path = "/admin/v1/users?limit=4".to_owned();
    loop {
        let page = get(&app, &token, &path).await;
        listed.extend(page["users"].as_array().unwrap().iter().map(|u| text(u, "id")));
        match page.get("next_cursor") {
            Some(cursor) => path = format!("/admin/v1/users?limit=4&cursor={}", cursor.as_str().unwrap()),
            None => break,
        }
    }
    assert_eq!(listed, ids, "pages are not every user once, in id order");

    for bad in ["cursor=not-a-cursor", "cursor=AAAA", "limit=0", "limit=501", "limit=x"] {
        let resp = app.admin(Method::GET, &format!("/admin/v1/users?{bad}"), &token).send().await.unwrap();
        assert_error(resp, 400, "invalid_request").await;
    }
}

#[tokio::test]
async fn a_user_s_file_has_identities_phone_sessions_and_recent_events_but_no_secret() {
    let app = app().await;
    let token = app.admin_token("support", AdminRole::Read).await;
    let login = app.login_ok("c1@amy").await;
    app.login_ok("c2@amy").await;
    let access = text(&login, "access_token");
    let phone = app.post_with("/v1/me/phone", &access, &json!({"code": "p1"})).await;
    assert_eq!(phone.status(), 200);
    let user = text(&login["user"], "id");

    let resp = app.admin(Method::GET, &format!("/admin/v1/users/{user}"), &token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let raw = resp.text().await.unwrap();
    let file: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(file["user"]["id"], user.as_str());
    assert_eq!(file["user"]["identities"][0]["openid"], "o_amy");
    assert!(text(&file["phone"], "phone_number").starts_with("+86"), "{file}");
    assert_eq!(file["sessions"].as_array().unwrap().len(), 2, "{file}");
    let kinds: Vec<&str> = file["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["phone_verified", "login", "login"], "{file}");
    for secret in [crate::helpers::default_session_key("c1@amy"), access, text(&login, "refresh_token")] {
        assert!(!raw.contains(&secret), "the file holds a secret");
    }

    for (id, status, error) in
        [("not-a-uuid", 400, "invalid_request"), ("0190d3a0-0000-7000-8000-000000000000", 404, "user_not_found")]
    {
        let resp = app.admin(Method::GET, &format!("/admin/v1/users/{id}"), &token).send().await.unwrap();
        assert_error(resp, status, error).await;
    }
}

#[tokio::test]
async fn a_ban_refuses_login_refresh_and_introspection_until_unbanned_and_names_the_token_in_its_event() {
    let app = app().await;
    let write = app.admin_token("ops", AdminRole::Write).await;
    let login = app.login_ok("c1@amy").await;
    let user = text(&login["user"], "id");
    let path = format!("/admin/v1/users/{user}/ban");
    let until = (time::OffsetDateTime::now_utc() + time::Duration::days(1)).replace_nanosecond(0).unwrap();
    let until = until.format(&time::format_description::well_known::Rfc3339).unwrap();

    for bad in [json!({}), json!({"reason": ""}), json!({"reason": "x", "until": "2001-01-01T00:00:00Z"})] {
        let resp = app.admin(Method::PUT, &path, &write).json(&bad).send().await.unwrap();
        assert_error(resp, 400, "invalid_request").await;
    }
    assert_eq!(app.login("c2@amy").await.status(), 200, "a refused ban was kept");

    let resp = app.admin(Method::PUT, &path, &write).json(&json!({"reason": "spam", "until": until})).send().await;
    let banned: Value = resp.unwrap().json().await.unwrap();
    assert_eq!(banned["ban"]["reason"], "spam", "{banned}");
    assert_error(app.login("c3@amy").await, 403, "user_banned").await;
    assert_error(app.refresh(&text(&login, "refresh_token")).await, 403, "user_banned").await;
    let introspected = introspect(&app, &write, &text(&login, "access_token")).await;
    assert_eq!(introspected["active"], false);

    let resp = app.admin(Method::DELETE, &path, &write).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(app.login("c4@amy").await.status(), 200);
    // Sessions revoked by the ban stay revoked.
    assert_error(app.refresh(&text(&login, "refresh_token")).await, 401, "invalid_grant").await;

    let events = get(&app, &write, &format!("/admin/v1/events?user={user}&kind=ban,unban")).await;
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e["actor"] == "admin-token:ops"), "{events:?}");
    assert_eq!((events[0]["kind"].clone(), events[1]["details"]["reason"].clone()), (json!("unban"), json!("spam")));
}

#[tokio::test]
async fn roles_and_claims_set_through_the_admin_api_ride_in_the_next_tokens_and_bad_ones_are_refused() {
    let app = app().await;
    let write = app.admin_token("ops", AdminRole::Write).await;
    let user = text(&app.login_ok("c1@amy").await["user"], "id");

    for (what, bad) in [
        ("roles", json!({"roles": ["has space"]})),
        ("roles", json!({"roles": "vip"})),
        ("claims", json!({"claims": {"sub": "someone else"}})),
        ("claims", json!({"claims": [1, 2]})),
        ("claims", json!({"claims": {"big": "x".repeat(2000)}})),
    ] {
        let resp = app.admin(Method::PUT, &format!("/admin/v1/users/{user}/{what}"), &write).json(&bad).send().await;
        assert_error(resp.unwrap(), 400, "invalid_request").await;
    }
    let put = |what: &str, body: Value| {
        app.admin(Method::PUT, &format!("/admin/v1/users/{user}/{what}"), &write).json(&body).send()
    };
    assert_eq!(put("roles", json!({"roles": ["vip", "staff"]})).await.unwrap().status(), 200);
    let set = put("claims", json!({"claims": {"tier": 2}})).await.unwrap();
    let after: Value = set.json().await.unwrap();
    assert_eq!((after["roles"].clone(), after["claims"].clone()), (json!(["staff", "vip"]), json!({"tier": 2})));

    let token = text(&app.login_ok("c2@amy").await, "access_token");
    let claims = crate::helpers::decode_claims(&token);
    assert_eq!((claims["roles"].clone(), claims["tier"].clone()), (json!(["staff", "vip"]), json!(2)));
}

#[tokio::test]
async fn revoking_one_session_refuses_its_refresh_token_only_and_revoking_all_refuses_every_one() {
    let app = app().await;
    let write = app.admin_token("ops", AdminRole::Write).await;
    let phone = app.login_ok("c1@amy").await;
    let laptop = app.login_ok("c2@amy").await;
    let tablet = app.login_ok("c3@amy").await;
    let user = text(&phone["user"], "id");
    let file = get(&app, &write, &format!("/admin/v1/users/{user}")).await;
    let sid = crate::helpers::decode_claims(&text(&phone, "access_token"))["sid"].as_str().unwrap().to_owned();
    assert!(file["sessions"].as_array().unwrap().iter().any(|s| s["id"] == sid.as_str()), "{file}");

    let one = format!("/admin/v1/users/{user}/sessions/{sid}");
    assert_eq!(app.admin(Method::DELETE, &one, &write).send().await.unwrap().status(), 204);
    assert_error(app.refresh(&text(&phone, "refresh_token")).await, 401, "invalid_grant").await;
    assert_eq!(app.refresh(&text(&laptop, "refresh_token")).await.status(), 200);
    let again = app.admin(Method::DELETE, &one, &write).send().await.unwrap();
    assert_error(again, 404, "session_not_found").await;
    let malformed = app.admin(Method::DELETE, &format!("/admin/v1/users/{user}/sessions/x"), &write).send().await;
    assert_error(malformed.unwrap(), 400, "invalid_request").await;

    let all = format!("/admin/v1/users/{user}/sessions");
    assert_eq!(app.admin(Method::DELETE, &all, &write).send().await.unwrap().status(), 204);
    assert_error(app.refresh(&text(&tablet, "refresh_token")).await, 401, "invalid_grant").await;
    let events = get(&app, &write, &format!("/admin/v1/events?user={user}&kind=session_revoked,logout_all")).await;
    let kinds: Vec<&str> = events["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["logout_all", "session_revoked"]);
}

#[tokio::test]
async fn events_are_filtered_by_user_kind_and_time_and_paged_with_cursors() {
    let app = app().await;
    let token = app.admin_token("support", AdminRole::Read).await;
    let amy = text(&app.login_ok("c1@amy").await["user"], "id");
    for i in 2..=6 {
        app.login_ok(&format!("c{i}@amy")).await;
    }
    app.login_ok("c1@bob").await;

    let mut seen = Vec::new();
    let mut path = format!("/admin/v1/events?user={amy}&kind=login&limit=2");
    loop {
        let page = get(&app, &token, &path).await;
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 2);
        assert!(events.iter().all(|e| e["user_id"] == amy.as_str() && e["kind"] == "login"), "{page}");
        seen.extend(events.iter().map(|e| text(e, "id")));
        match page.get("next_cursor") {
            Some(c) => path = format!("/admin/v1/events?user={amy}&kind=login&limit=2&cursor={}", c.as_str().unwrap()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6, "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "not newest first");

    let later = get(&app, &token, "/admin/v1/events?since=2999-01-01T00:00:00Z").await;
    assert_eq!(later["events"], json!([]));
    let earlier = get(&app, &token, "/admin/v1/events?until=2000-01-01T00:00:00Z").await;
    assert_eq!(earlier["events"], json!([]));
    let everyone = get(&app, &token, "/admin/v1/events?kind=login").await;
    assert_eq!(everyone["events"].as_array().unwrap().len(), 7);

    for bad in ["kind=logins", "user=amy", "since=yesterday", "cursor=!!", "limit=0", "limit=501"] {
        let resp = app.admin(Method::GET, &format!("/admin/v1/events?{bad}"), &token).send().await.unwrap();
        assert_error(resp, 400, "invalid_request").await;
    }
}

#[tokio::test]
async fn the_key_ring_shows_the_signing_key_as_active() {
    let app = app().await;
    let token = app.admin_token("support", AdminRole::Read).await;
    let keys = get(&app, &token, "/admin/v1/keys").await;
    let keys = keys["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let jwks = app.get_json("/.well-known/jwks.json").await;
    assert_eq!((keys[0]["kid"].clone(), keys[0]["state"].clone()), (jwks["keys"][0]["kid"].clone(), json!("active")));
    assert_eq!(keys[0]["alg"], "ES256");
}

#[tokio::test]
async fn stats_count_logins_new_users_and_failures_by_code_per_hour_and_app() {
    let app = app().await;
    let token = app.admin_token("support", AdminRole::Read).await;
    app.login_ok("c1@amy").await;
    app.login_ok("c2@amy").await;
    app.login_ok("c1@bob").await;
    app.wechat.script("bad", [crate::helpers::Reply::errcode(40029)]);
    assert_error(app.login("bad").await, 400, "invalid_code").await;

    let stats = get(&app, &token, "/admin/v1/stats").await;
    assert_eq!(stats["complete"], true);
    let hours = stats["hours"].as_array().unwrap();
    let logins: u64 = hours.iter().map(|h| h["logins"].as_u64().unwrap()).sum();
    let new_users: u64 = hours.iter().map(|h| h["new_users"].as_u64().unwrap()).sum();
    let failed: u64 = hours.iter().filter_map(|h| h["failures"]["invalid_code"].as_u64()).sum();
    assert_eq!((logins, new_users, failed), (3, 2, 1), "{stats}");
    assert!(hours.iter().all(|h| h["appid"] == crate::helpers::APPID), "{stats}");
}
