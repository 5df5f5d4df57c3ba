//! The event log, seen through `GET /v1/me/export`: one event per thing that happened to the
//! person, from them or from an operator, with its app, address and user agent, and never
//! a secret; kept for `WXAUTH_EVENT_RETENTION_DAYS`.

use serde_json::{Value, json};
use wxauth::admin::Command;

use crate::helpers::{APPID, PHONE, TestApp, default_session_key, spawn_app_with};

const AGENT: &str = "Mozilla/5.0 (iPhone) MicroMessenger/8.0.50 miniProgram";

fn text(body: &Value, field: &str) -> String {
    body[field].as_str().unwrap_or_else(|| panic!("no {field} in {body}")).to_owned()
}

/// A client that says it is WeChat on a phone.
fn phone_client() -> reqwest::Client {
    reqwest::Client::builder().user_agent(AGENT).build().unwrap()
}

async fn post(app: &TestApp, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = phone_client().post(format!("{}{path}", app.address)).json(&body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn events_of(app: &TestApp, token: &str) -> Vec<Value> {
    let resp = app.client.get(format!("{}/v1/me/export", app.address)).bearer_auth(token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let export: Value = resp.json().await.unwrap();
    export["events"].as_array().unwrap_or_else(|| panic!("no events in {export}")).clone()
}

fn kinds(events: &[Value]) -> Vec<String> {
    events.iter().rev().map(|e| text(e, "kind")).collect()
}

#[tokio::test]
async fn everything_that_happens_to_a_person_is_one_event_with_its_origin_and_no_secret() {
    let app = spawn_app_with(|_| {}).await;
    let (status, first) = post(&app, "/v1/login", None, json!({"code": "c1@amy"})).await;
    assert_eq!(status, 200, "{first}");
    let (_, again) = post(&app, "/v1/login", None, json!({"code": "c2@amy"})).await;
    let token = text(&again, "access_token");
    let id = text(&again["user"], "id");
    let (status, rotated) =
        post(&app, "/v1/token/refresh", None, json!({"refresh_token": first["refresh_token"]})).await;
    assert_eq!(status, 200, "{rotated}");
    let (status, _) = post(&app, "/v1/token/refresh", None, json!({"refresh_token": first["refresh_token"]})).await;
    assert_eq!(status, 401, "a reuse");
    assert_eq!(post(&app, "/v1/me/phone", Some(&token), json!({"code": "p"})).await.0, 200);
    let sid = text(&app.auth.tokens().verify(&token).map(|c| json!({"sid": c.sid})).unwrap(), "sid");
    let end = phone_client().delete(format!("{}/v1/me/sessions/{sid}", app.address)).bearer_auth(&token);
    assert_eq!(end.send().await.unwrap().status(), 204);
    let (_, third) = post(&app, "/v1/login", None, json!({"code": "c3@amy"})).await;
    assert_eq!(post(&app, "/v1/logout", None, json!({"refresh_token": third["refresh_token"]})).await.0, 204);
    assert_eq!(post(&app, "/v1/logout", None, json!({"refresh_token": third["refresh_token"]})).await.0, 204);
    assert_eq!(post(&app, "/v1/me/logout-all", Some(&token), json!({})).await.0, 204);
    let socket = app.admin_socket();
    for command in [
        Command::BanUser { query: id.clone(), reason: "chargebacks".into(), until: None },
        Command::UnbanUser { query: id.clone() },
        Command::SetRoles { query: id.clone(), roles: vec!["staff".into()] },
        Command::SetClaims { query: id.clone(), claims: r#"{"tier":"gold"}"#.into() },
    ] {
        wxauth::admin::send(&socket, &command).await.unwrap().unwrap();
    }

    let events = events_of(&app, &token).await;

    let expected = [
        "login",
        "login",
        "refresh",
        "refresh_reuse",
        "phone_verified",
        "session_revoked",
        "login",
        "logout",
        "logout_all",
        "ban",
        "unban",
        "roles_set",
        "claims_set",
    ];
    assert_eq!(kinds(&events), expected, "oldest first here; a second logout of one token is no event");
    let oldest = events.last().unwrap();
    assert_eq!(oldest["details"], json!({"created": true}));
    assert_eq!(events[events.len() - 2]["details"], json!({"created": false}));
    for event in &events {
        assert_eq!(event["user_id"], json!(id), "{event}");
        let by_operator = event.get("actor").is_some();
        if by_operator {
            assert_eq!(event["actor"], "cli", "{event}");
            assert!(event.get("ip").is_none() && event.get("user_agent").is_none(), "{event}");
        } else {
            assert_eq!(
                (event["ip"].as_str(), event["user_agent"].as_str()),
                (Some("127.0.0.1"), Some(AGENT)),
                "{event}"
            );
        }
        if !["logout", "refresh_reuse"].contains(&event["kind"].as_str().unwrap()) && !by_operator {
            assert_eq!(event["appid"], APPID, "{event}");
        }
    }
    assert_eq!(events[0]["details"], json!({"names": ["tier"]}), "claims by name, never by value");
    assert_eq!(events[3]["details"], json!({"reason": "chargebacks"}));
    assert_eq!(events[7]["details"]["session"], json!(sid), "the session ended");
    let raw = Value::Array(events).to_string();
    for secret in [
        "c1@amy".to_owned(),
        text(&first, "refresh_token"),
        text(&rotated, "refresh_token"),
        token.clone(),
        default_session_key("c1@amy"),
        PHONE.to_owned(),
        "gold".to_owned(),
    ] {
        assert!(!raw.contains(&secret), "an event holds {secret:?}: {raw}");
    }
}

#[tokio::test]
async fn a_refused_login_is_an_event_with_its_error_code_and_no_user() {
    let app = spawn_app_with(|_| {}).await;
    app.wechat.script("bad", [crate::helpers::Reply::errcode(40029)]);
    assert_eq!(post(&app, "/v1/login", None, json!({"code": "bad"})).await.0, 400);
    assert_eq!(post(&app, "/v1/login", None, json!({"code": "c@x", "appid": "wxnotours"})).await.0, 400);
    let filter = wxauth::store::events::EventFilter { limit: 10, ..Default::default() };
    let stored = app.auth.store().events(&filter).await.unwrap();
    let failures: Vec<(String, Option<String>)> =
        stored.iter().map(|e| (e.details["error"].as_str().unwrap_or_default().to_owned(), e.appid.clone())).collect();
    assert_eq!(
        failures,
        vec![("unknown_app".to_owned(), None), ("invalid_code".to_owned(), Some(APPID.to_owned()))],
        "newest first; an AppID this server does not serve is not kept"
    );
    assert!(stored.iter().all(|e| e.user.is_none() && e.kind.as_str() == "login_failed"));
}

#[tokio::test]
async fn events_past_the_retention_are_purged_and_younger_ones_stay() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_EVENT_RETENTION_DAYS", "7");
    })
    .await;
    app.login_ok("c1@old").await;
    app.advance(3 * 86_400);
    app.login_ok("c2@old").await;
    app.advance(5 * 86_400);
    let token = text(&app.login_ok("c3@old").await, "access_token");
    assert_eq!(events_of(&app, &token).await.len(), 3);

    assert_eq!(app.auth.purge_events().await.unwrap(), 1, "the login of 8 days ago");

    let left = events_of(&app, &token).await;
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|e| e["details"]["created"] == false), "{left:?}");
}

#[test]
fn the_docs_table_lists_every_event_kind_and_no_other() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/events.md")).unwrap();
    let table = &doc[doc.find("## Kinds").unwrap()..doc.find("## Where").unwrap()];
    let documented: Vec<&str> = table.lines().filter_map(|line| line.strip_prefix("| `")?.split('`').next()).collect();
    let kinds: Vec<&str> = wxauth::store::events::EventKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(documented, kinds, "docs/events.md's table, in the order of EventKind::ALL");
}
