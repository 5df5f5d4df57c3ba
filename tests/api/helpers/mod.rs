//! Test harness: a scripted mock WeChat on loopback and the app on a random port, each
//! with its own temporary directories, so tests run in parallel. By job: `wechat_mock`
//! (the scripted WeChat), `app` (the app in-process), `binary` (the real binary as a child
//! process); this module has the store selection and the assertions every test uses.

mod app;
mod binary;
mod receiver;
mod wechat_mock;

pub use self::{app::*, binary::*, receiver::*, wechat_mock::*};

use poem::http::header;
use serde_json::Value;

/// Whether the suite runs on PostgreSQL (`WXAUTH_TEST_STORE=postgres`, with
/// `WXAUTH_TEST_DATABASE_URL`) rather than sled (the default). `.ci/run` runs it on both.
pub fn on_postgres() -> bool {
    match std::env::var("WXAUTH_TEST_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("sled") | Err(_) => false,
        Ok(other) => panic!("WXAUTH_TEST_STORE={other:?}: expected sled or postgres"),
    }
}

/// Says that a test checks something only the sled backend has, and whether to skip it.
pub fn skip_on_postgres(what: &str) -> bool {
    if on_postgres() {
        eprintln!("skipped on postgres: {what} is sled's");
    }
    on_postgres()
}

/// The store settings of a new app: a fresh database on PostgreSQL; nothing for sled,
/// whose data directory every app gets anyway.
pub fn store_vars() -> Vec<(String, String)> {
    if !on_postgres() {
        return Vec::new();
    }
    let url = crate::postgres::fresh_database().unwrap_or_else(|| {
        panic!("WXAUTH_TEST_STORE=postgres needs {}", crate::postgres::VARIABLE);
    });
    vec![("WXAUTH_STORE".into(), "postgres".into()), ("WXAUTH_DATABASE_URL".into(), url)]
}

/// The claims of a JWT, unverified.
pub fn decode_claims(token: &str) -> Value {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

/// Asserts the JSON error envelope and returns the `error` code.
pub async fn assert_error(resp: reqwest::Response, status: u16, error: &str) -> Value {
    assert_eq!(resp.status(), status, "status");
    assert!(
        resp.headers()[header::CONTENT_TYPE.as_str()].to_str().unwrap().starts_with("application/json"),
        "error content type"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
    body
}

/// Installs jsonwebtoken's crypto provider for tokens the tests sign themselves.
pub fn crypto() {
    let _ = jsonwebtoken::crypto::CryptoProvider::install_default(&jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER);
}
