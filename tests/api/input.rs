//! Bad input is refused with 400 `invalid_request` before WeChat is called.

use crate::helpers::{assert_error, spawn_app};
use serde_json::json;

#[tokio::test]
async fn bad_login_requests_are_rejected_before_wechat_is_called() {
    let app = spawn_app().await;
    let long = "a".repeat(129);
    let cases: Vec<(&str, Option<&str>, String)> = vec![
        ("no body, no content type", None, String::new()),
        ("no body, JSON content type", Some("application/json"), String::new()),
        ("JSON sent as text/plain", Some("text/plain"), r#"{"code":"abc"}"#.into()),
        ("form-encoded body", Some("application/x-www-form-urlencoded"), "code=abc".into()),
        ("truncated JSON", Some("application/json"), r#"{"code":"#.into()),
        ("not JSON at all", Some("application/json"), "code=abc".into()),
        ("JSON array", Some("application/json"), "[]".into()),
        ("missing code", Some("application/json"), "{}".into()),
        ("null code", Some("application/json"), r#"{"code":null}"#.into()),
        ("numeric code", Some("application/json"), r#"{"code":123}"#.into()),
        ("empty code", Some("application/json"), r#"{"code":""}"#.into()),
        ("blank code", Some("application/json"), r#"{"code":"   "}"#.into()),
        ("code with newline", Some("application/json"), r#"{"code":"ab\ncd"}"#.into()),
        ("code with control character", Some("application/json"), r#"{"code":"ab\u0001cd"}"#.into()),
        ("non-ASCII code", Some("application/json"), r#"{"code":"登录码"}"#.into()),
        ("code of 129 bytes", Some("application/json"), format!(r#"{{"code":"{long}"}}"#)),
    ];
    for (case, content_type, body) in cases {
        let mut request = app.client.post(format!("{}/v1/login", app.address)).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status(), 400, "case: {case}");
        assert_error(resp, 400, "invalid_request").await;
    }
    assert!(app.wechat.calls().is_empty(), "WeChat was called for bad input");
}

#[tokio::test]
async fn code_of_exactly_128_bytes_is_accepted() {
    let app = spawn_app().await;
    app.login_ok(&"b".repeat(128)).await;
}

#[tokio::test]
async fn oversized_body_is_refused_with_413() {
    let app = spawn_app().await;
    let body = format!(r#"{{"code":"{}"}}"#, "a".repeat(64 * 1024));
    let resp = app
        .client
        .post(format!("{}/v1/login", app.address))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_error(resp, 413, "invalid_request").await;
    assert!(app.wechat.calls().is_empty());
}

#[tokio::test]
async fn unknown_paths_and_methods_get_the_json_envelope() {
    let app = spawn_app().await;
    assert_error(app.get("/v1/nope").await, 404, "not_found").await;
    assert_error(app.get("/v1/login").await, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn the_body_limit_is_16_kib() {
    let app = spawn_app().await;
    let login = r#"{"code":"c@padded"}"#;
    // Valid JSON of the given size: the login followed by whitespace.
    let padded = |size: usize| format!("{login}{}", " ".repeat(size - login.len()));
    let post = |body: String| {
        app.client
            .post(format!("{}/v1/login", app.address))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let under = post(padded(16 * 1024 - 16)).await.unwrap();
    assert_eq!(under.status(), 200, "a body just under 16 KiB: {}", under.text().await.unwrap());

    let over = assert_error(post(padded(16 * 1024 + 16)).await.unwrap(), 413, "invalid_request").await;
    assert!(over["error_description"].as_str().unwrap().contains("too large"), "{over}");
    assert_eq!(app.wechat.calls().len(), 1, "WeChat was called for the oversized body");
}

#[tokio::test]
async fn an_unsupported_method_gets_405_with_the_methods_the_path_allows() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        ("DELETE", "/v1/login", "POST"),
        ("GET", "/v1/login", "POST"),
        ("POST", "/healthz", "GET, HEAD"),
        ("PUT", "/.well-known/jwks.json", "GET, HEAD"),
        ("PATCH", "/v1/me", "DELETE, GET, HEAD"),
        ("GET", "/v1/me/binding", "DELETE"),
        // A path with a parameter is matched by its template.
        ("TRACE", "/v1/me/sessions/01a24843-4061-73e1-86bb-1cf99f53bf79", "DELETE"),
        ("DELETE", "/readyz", "GET, HEAD"),
    ] {
        let resp = app.client.request(method.parse().unwrap(), format!("{}{path}", app.address)).send().await.unwrap();
        assert_eq!(resp.headers().get("allow").map(|v| v.to_str().unwrap()), Some(allow), "{method} {path}");
        assert_error(resp, 405, "method_not_allowed").await;
    }
    // HEAD, which Allow promises, is answered.
    let head = app.client.head(format!("{}/healthz", app.address)).send().await.unwrap();
    assert_eq!(head.status(), 200);
}

/// Whether `body` matches exactly one branch of `schema`'s `oneOf`, read the way the
/// published branches are written: `required` fields present as strings, fields whose
/// schema is `enum: [null]` missing or null.
fn one_of_allows(schema: &serde_json::Value, body: &serde_json::Value) -> bool {
    let matches = |branch: &serde_json::Value| {
        let required = branch["required"].as_array().unwrap();
        let properties = branch["properties"].as_object().unwrap();
        required.iter().all(|field| body[field.as_str().unwrap()].is_string())
            && properties
                .iter()
                .filter(|(_, p)| p.get("enum").is_some())
                .all(|(field, _)| body.get(field).is_none_or(serde_json::Value::is_null))
    };
    schema["oneOf"].as_array().unwrap().iter().filter(|branch| matches(branch)).count() == 1
}

#[tokio::test]
async fn bodies_the_published_one_of_allows_are_exactly_those_not_refused_as_invalid_requests() {
    let app = spawn_app().await;
    let token = app.login_ok("alice").await["access_token"].as_str().unwrap().to_owned();
    let spec = app.get_json("/openapi.json").await;
    let schemas = &spec["components"]["schemas"];
    // 16 bytes of base64 each: the right shape, and not the session key's data.
    let (data, iv) = ("AAAAAAAAAAAAAAAAAAAAAA==", "AAAAAAAAAAAAAAAAAAAAAA==");
    let phone = [
        json!({}),
        json!({ "code": "phone-code" }),
        json!({ "code": "phone-code", "encrypted_data": null, "iv": null }),
        json!({ "encrypted_data": data, "iv": iv }),
        json!({ "encrypted_data": data, "iv": iv, "code": null }),
        json!({ "code": "phone-code", "encrypted_data": data }),
        json!({ "code": "phone-code", "iv": iv }),
        json!({ "code": "phone-code", "encrypted_data": data, "iv": iv }),
        json!({ "encrypted_data": data }),
        json!({ "code": null, "encrypted_data": null, "iv": null }),
    ];
    let profile = [
        json!({ "encrypted_data": data, "iv": iv }),
        json!({ "encrypted_data": data, "iv": iv, "raw_data": "{}", "signature": "ab" }),
        json!({ "encrypted_data": data, "iv": iv, "raw_data": "{}" }),
        json!({ "encrypted_data": data, "iv": iv, "signature": "ab", "raw_data": null }),
    ];
    let bind = [
        json!({ "username": "alice", "password": "pw" }),
        json!({ "username": "alice", "password": "pw", "bind_ticket": "bt_unknown" }),
        json!({ "username": "alice", "password": "pw", "bind_ticket": "bt_unknown", "code": null }),
        json!({ "username": "alice", "password": "pw", "code": "bind-code" }),
        json!({ "username": "alice", "password": "pw", "code": "bind-code", "bind_ticket": "bt_unknown" }),
        json!({ "username": "alice", "password": "pw", "code": null, "bind_ticket": null }),
    ];
    let cases = phone
        .iter()
        .map(|b| ("/v1/me/phone", "PhoneRequest", b))
        .chain(profile.iter().map(|b| ("/v1/me/profile", "ProfileRequestBody", b)))
        .chain(bind.iter().map(|b| ("/v1/bind", "BindBody", b)));
    for (path, schema, body) in cases {
        let allowed = one_of_allows(&schemas[schema], body);

        let resp = app.post_with(path, &token, body).await;

        let status = resp.status();
        let answer: serde_json::Value = resp.json().await.unwrap_or_default();
        let refused = status == 400 && answer["error"] == "invalid_request";
        assert_eq!(
            !refused, allowed,
            "{path} {body}: the schema says {allowed}, the server answered {status} {answer}"
        );
    }
}
