//! Hostile inputs through real HTTP: each gets a clear 4xx JSON error, never a 500, a hang
//! or a crash; the server keeps serving; WeChat is never called.

use serde_json::Value;

use crate::helpers::{TestApp, spawn_app};

/// One hostile request.
struct Case {
    name: &'static str,
    method: reqwest::Method,
    path: &'static str,
    authorization: Option<String>,
    body: Vec<u8>,
    /// The status and `error` code expected.
    expected: (u16, &'static str),
}

fn post(name: &'static str, path: &'static str, body: impl Into<Vec<u8>>, expected: (u16, &'static str)) -> Case {
    Case { name, method: reqwest::Method::POST, path, authorization: None, body: body.into(), expected }
}

fn me_with(name: &'static str, authorization: String) -> Case {
    let expected = (401, "invalid_token");
    Case {
        name,
        method: reqwest::Method::GET,
        path: "/v1/me",
        authorization: Some(authorization),
        body: Vec::new(),
        expected,
    }
}

fn cases() -> Vec<Case> {
    const BAD: (u16, &str) = (400, "invalid_request");
    const TOO_LARGE: (u16, &str) = (413, "invalid_request");
    let nested = |depth: usize| format!(r#"{{"code":{}"#, "[".repeat(depth));
    let nested_objects = |depth: usize| format!(r#"{{"code":{}"#, r#"{"a":"#.repeat(depth));
    vec![
        post("1 MB login body", "/v1/login", format!(r#"{{"code":"{}"}}"#, "a".repeat(1 << 20)), TOO_LARGE),
        post(
            "1 MB refresh body",
            "/v1/token/refresh",
            format!(r#"{{"refresh_token":"{}"}}"#, "a".repeat(1 << 20)),
            TOO_LARGE,
        ),
        post("1 MB bind body", "/v1/bind", format!(r#"{{"username":"{}"}}"#, "a".repeat(1 << 20)), TOO_LARGE),
        post("100k nested arrays", "/v1/login", "[".repeat(100_000), TOO_LARGE),
        // Under the body limit, so that the JSON parser itself meets the depth.
        post("15k nested arrays in a code", "/v1/login", nested(15_000), BAD),
        post("3k nested objects in a code", "/v1/login", nested_objects(3_000), BAD),
        post("15k nested arrays as a refresh token", "/v1/token/refresh", nested(15_000), BAD),
        post("invalid UTF-8 in a code", "/v1/login", &b"{\"code\":\"ab\xff\xfecd\"}"[..], BAD),
        post("invalid UTF-8 body", "/v1/login", &b"\xff\xfe\xfd\x00"[..], BAD),
        post("escaped NUL in a code", "/v1/login", r#"{"code":"ab\u0000cd"}"#, BAD),
        post("raw NUL in a code", "/v1/login", &b"{\"code\":\"ab\x00cd\"}"[..], BAD),
        post("NUL-only code", "/v1/login", r#"{"code":"\u0000"}"#, BAD),
        post("CR LF header injection in a code", "/v1/login", r#"{"code":"ab\r\nX-Evil: 1"}"#, BAD),
        post("LF header injection in a code", "/v1/login", r#"{"code":"ab\nSet-Cookie: a=b"}"#, BAD),
        post(
            "header injection in a username",
            "/v1/bind",
            r#"{"code":"c@x","username":"a\r\nX-Evil: 1","password":"p"}"#,
            BAD,
        ),
        me_with("64 KiB bearer token", format!("Bearer {}", "a".repeat(64 * 1024))),
        me_with("token of 10,000 segments", format!("Bearer {}", "a.".repeat(10_000))),
        me_with("token of 10,000 empty segments", format!("Bearer {}", ".".repeat(10_000))),
    ]
}

async fn send(app: &TestApp, case: &Case) -> reqwest::Response {
    let mut request = app.client.request(case.method.clone(), format!("{}{}", app.address, case.path));
    if !case.body.is_empty() {
        request = request.header("content-type", "application/json").body(case.body.clone());
    }
    if let Some(authorization) = &case.authorization {
        request = request.header("authorization", authorization);
    }
    request.send().await.unwrap_or_else(|e| panic!("{}: no answer: {e}", case.name))
}

#[tokio::test]
async fn hostile_inputs_get_a_4xx_json_error_and_the_server_keeps_serving() {
    let app = spawn_app().await;

    for case in cases() {
        let resp = send(&app, &case).await;

        let status = resp.status().as_u16();
        let injected = resp.headers().contains_key("x-evil") || resp.headers().contains_key("set-cookie");
        let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        let text = resp.text().await.unwrap();
        assert!((400..500).contains(&status), "{}: {status} {text}", case.name);
        assert!(
            content_type.as_deref().is_some_and(|t| t.starts_with("application/json")),
            "{}: {content_type:?}",
            case.name
        );
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {text}", case.name));
        assert_eq!((status, body["error"].as_str().unwrap_or_default()), case.expected, "{}: {body}", case.name);
        assert!(body["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{}: {body}", case.name);
        assert!(!injected, "{}: a header was injected", case.name);
        assert!(text.len() < 4096, "{}: the answer echoes the input ({} bytes)", case.name, text.len());
        assert_eq!(app.get("/healthz").await.status(), 200, "{}: the server stopped serving", case.name);
    }
    assert!(app.wechat.calls().is_empty(), "WeChat was called: {:?}", app.wechat.calls().len());
}

#[tokio::test]
async fn an_authorization_header_past_what_hyper_reads_is_refused_without_a_500() {
    // Past hyper's header buffer (about 400 KiB) hyper answers by itself, before any
    // handler: no JSON then, but a 4xx, and the server keeps serving.
    let app = spawn_app().await;
    let huge = format!("Bearer {}", "a".repeat(1 << 20));

    let status = match app.client.get(format!("{}/v1/me", app.address)).header("authorization", huge).send().await {
        Ok(resp) => Some(resp.status().as_u16()),
        // hyper may close the connection without reading the whole header.
        Err(e) => {
            eprintln!("the 1 MiB header got no answer: {e}");
            None
        }
    };

    assert!(status.is_none_or(|s| (400..500).contains(&s)), "{status:?}");
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert!(app.wechat.calls().is_empty());
}
