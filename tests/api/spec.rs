//! The committed OpenAPI document equals what the code serves.

use crate::helpers::{spawn_app, spawn_app_with};

use serde_json::Value;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
const COMMITTED_ADMIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/admin.json");

/// Checks that the file `committed` holds `served` (pretty-printed); rewrites it with
/// `UPDATE_OPENAPI` set.
fn check_committed(committed: &str, served: &str) {
    let served_json: Value = serde_json::from_str(served).unwrap();
    let pretty = serde_json::to_string_pretty(&served_json).unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(committed, &pretty).unwrap();
        return;
    }
    let text = std::fs::read_to_string(committed).unwrap_or_default();
    assert!(text == pretty, "{committed} is stale: run `UPDATE_OPENAPI=1 cargo test spec` and commit the result");
}

#[tokio::test]
async fn openapi_committed_spec_is_current() {
    let app = spawn_app().await;
    check_committed(COMMITTED, &app.get("/openapi.json").await.text().await.unwrap());
}

#[tokio::test]
async fn the_committed_admin_spec_is_current_and_served_with_its_swagger_ui() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_ADMIN_LISTEN", "127.0.0.1:0");
    })
    .await;
    let base = app.admin_address.clone().unwrap();
    let served = app.client.get(format!("{base}/admin/openapi.json")).send().await.unwrap().text().await.unwrap();
    check_committed(COMMITTED_ADMIN, &served);
    let html = app.client.get(format!("{base}/admin/docs")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("swagger") && html.contains("insufficient_scope"), "no admin Swagger UI with the document");
    let spec: Value = serde_json::from_str(&served).unwrap();
    let tags: Vec<_> = spec["tags"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(tags, ["Users", "Events", "Keys", "Stats"]);
    let scheme = &spec["components"]["securitySchemes"]["AdminToken"];
    assert_eq!((scheme["type"].as_str(), scheme["scheme"].as_str()), (Some("http"), Some("bearer")));
    let seen = error_examples(&spec);
    for expected in [
        "get /admin/v1/users 401 invalid_token",
        "get /admin/v1/users 400 invalid_request",
        "get /admin/v1/users/{id} 404 user_not_found",
        "put /admin/v1/users/{id}/ban 403 insufficient_scope",
        "put /admin/v1/users/{id}/claims 400 invalid_request",
        "delete /admin/v1/users/{id}/sessions/{session} 404 session_not_found",
        "get /admin/v1/stats 503 temporarily_unavailable",
    ] {
        assert!(seen.iter().any(|s| s == expected), "no example for {expected}: {seen:?}");
    }
    let session = &spec["paths"]["/admin/v1/users/{id}/sessions/{session}"]["delete"]["parameters"];
    assert!(session.as_array().unwrap().iter().all(|p| p["schema"]["format"] == "uuid"), "{session}");
}

#[tokio::test]
async fn swagger_ui_is_served_and_documents_the_bearer_scheme() {
    let app = spawn_app_with(|c| {
        c.set("WXAUTH_DOCS", "on");
    })
    .await;
    let html = app.get("/docs").await.text().await.unwrap();
    assert!(html.contains("swagger"), "no Swagger UI at /docs");
    assert_eq!(app.get("/docs/").await.status(), 200);
    let spec = app.get_json("/openapi.json").await;
    let scheme = &spec["components"]["securitySchemes"]["BearerToken"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    for path in [
        "/v1/login",
        "/v1/bind",
        "/v1/me",
        "/v1/me/binding",
        "/v1/me/phone",
        "/v1/me/profile",
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
        "/healthz",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} missing from the spec");
    }
    assert!(scheme["description"].as_str().unwrap().contains("without `Bearer `"), "{scheme}");
    // Two `#[OpenApi]` blocks declaring one path each keep only one of its methods.
    let me: Vec<&String> = spec["paths"]["/v1/me"].as_object().unwrap().keys().collect();
    assert_eq!(me, ["delete", "get"], "GET and DELETE /v1/me");
    let html_has_document = html.contains("\"not_bound\"");
    assert!(html_has_document, "Swagger UI does not show the published document");
}

#[tokio::test]
async fn swagger_ui_groups_operations_in_the_order_a_newcomer_needs() {
    let app = spawn_app().await;
    let spec = app.get_json("/openapi.json").await;
    let tags: Vec<_> = spec["tags"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(tags, ["Login", "User", "OpenData", "Binding", "Keys", "Health"]);
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            assert_eq!(operation["tags"].as_array().unwrap().len(), 1, "{method} {path} is listed under several tags");
        }
    }
}

#[tokio::test]
async fn every_error_answer_shows_real_example_bodies() {
    let app = spawn_app().await;
    let spec = app.get_json("/openapi.json").await;
    let seen = error_examples(&spec);
    for expected in [
        "post /v1/login 400 invalid_code",
        "post /v1/login 400 unknown_app",
        "post /v1/login 403 not_bound",
        "post /v1/bind 400 invalid_ticket",
        "post /v1/bind 401 invalid_credentials",
        "post /v1/bind 409 already_bound",
        "post /v1/bind 409 account_already_bound",
        "post /v1/bind 429 rate_limited",
        "delete /v1/me/binding 401 invalid_token",
        "post /v1/me/phone 400 invalid_code",
        "post /v1/me/phone 400 watermark_mismatch",
        "post /v1/me/phone 409 session_key_stale",
        "post /v1/me/phone 429 rate_limited",
        "post /v1/me/profile 400 invalid_signature",
        "post /v1/me/profile 409 session_key_stale",
    ] {
        assert!(seen.iter().any(|s| s == expected), "no example for {expected}: {seen:?}");
    }
    let not_bound = &spec["paths"]["/v1/login"]["post"]["responses"]["403"]["content"];
    assert!(not_bound.to_string().contains("bind_ticket"), "{not_bound}");
}

/// Every example error body of `spec` as `method path status error`, after checking that
/// every error answer has examples and that each is real.
fn error_examples(spec: &Value) -> Vec<String> {
    let mut seen = Vec::new();
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                if !status.starts_with('4') && !status.starts_with('5') || path == "/healthz" {
                    continue;
                }
                for media in response["content"].as_object().unwrap().values() {
                    let examples = media["examples"].as_object();
                    let examples = examples.unwrap_or_else(|| panic!("{method} {path} {status} has no examples"));
                    for example in examples.values() {
                        let error = example["value"]["error"].as_str().unwrap();
                        let description = example["value"]["error_description"].as_str().unwrap();
                        assert!(error != "string" && description.len() > 10, "{method} {path} {status}: {example}");
                        seen.push(format!("{method} {path} {status} {error}"));
                    }
                }
            }
        }
    }
    seen
}

/// The error table of the HTTP API documentation (`docs/http-api.md`).
fn documented_error_table() -> (String, Vec<(String, u16, String)>) {
    let path = format!("{}/docs/http-api.md", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines =
        text.lines().skip_while(|l| !(l.starts_with('#') && l.trim_start_matches('#').trim() == "Error codes"));
    assert!(lines.next().is_some(), "{path} has no `Error codes` heading");
    let mut table = lines.skip_while(|l| l.trim().is_empty()).take_while(|l| l.starts_with('|'));
    assert_eq!(table.next(), Some("| `error` | HTTP | When |"), "{path}: the table's header changed");
    assert_eq!(table.next(), Some("|---|---|---|"), "{path}: the table's separator changed");
    let rows = table
        .map(|line| {
            let cells = line.strip_prefix("| `").and_then(|l| l.strip_suffix(" |")).and_then(|l| {
                let (code, rest) = l.split_once("` | ")?;
                let (status, when) = rest.split_once(" | ")?;
                Some((code.to_owned(), status.parse().ok()?, when.to_owned()))
            });
            cells.unwrap_or_else(|| panic!("{path}: not a row of the form | `code` | status | when |: {line}"))
        })
        .collect();
    (path, rows)
}

#[test]
fn the_documented_error_table_lists_every_error_code_with_its_statuses_and_causes() {
    let (path, mut documented) = documented_error_table();
    let mut declared: Vec<(String, u16, String)> = wxauth::api::error::ErrorCode::ALL
        .iter()
        .flat_map(|code| {
            code.cases().iter().map(|(status, when)| (code.as_str().to_owned(), *status, (*when).to_owned()))
        })
        .collect();
    // The documentation may order its rows as it likes; each is there once.
    documented.sort();
    declared.sort();
    let missing: Vec<_> = declared.iter().filter(|row| !documented.contains(row)).collect();
    let unknown: Vec<_> = documented.iter().filter(|row| !declared.contains(row)).collect();
    assert!(
        missing.is_empty() && unknown.is_empty() && documented.len() == declared.len(),
        "{path}'s error table differs from ErrorCode (src/api/error/codes.rs)\n\
         in ErrorCode, not in the table: {missing:#?}\nin the table, not in ErrorCode: {unknown:#?}\n\
         the table ErrorCode renders:\n{}",
        wxauth::api::error::ErrorCode::markdown_table()
    );
}
