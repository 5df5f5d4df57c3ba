//! Dev mode's stand-in for WeChat: a real HTTP server on loopback, called through the
//! same client as production, answering `GET /sns/jscode2session` like WeChat does
//! (HTTP 200 and `text/plain` JSON for successes and errors alike).
//!
//! Deterministic: the same code text always gives the same openid. Reserved codes return
//! WeChat's errors so mini-program developers can exercise their error handling.

use std::{collections::HashMap, sync::Arc, time::Duration};

use aws_lc_rs::digest;
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use poem::{
    EndpointExt, Response, Route, Server, get, handler,
    http::header,
    listener::{Acceptor, Listener, TcpListener},
    web::{Data, Query},
};
use url::Url;

use crate::config::WechatApp;

/// Reserved codes and what they produce, for the README and the log.
pub const RESERVED_CODES: &[(&str, &str)] = &[
    ("invalid", "errcode 40029 (invalid code) -> 400 invalid_code"),
    ("used", "errcode 40163 (code already used) -> 400 code_used"),
    ("busy", "errcode -1 twice (WeChat busy) -> 503 wechat_unavailable"),
    ("busy-once", "errcode -1, then success on the retry -> 200"),
    ("limited", "errcode 45011 (minute quota) -> 429 rate_limited"),
    ("blocked", "errcode 40226 (risk control) -> 403 user_blocked"),
    ("slow", "answers after the timeout -> 504 wechat_timeout"),
    ("garbled", "a body that is not JSON -> 502 wechat_error"),
    ("union-*", "any code starting with `union` also returns a unionid, the same in every app"),
];

struct MockState {
    /// AppID → AppSecret of every configured app.
    apps: HashMap<String, String>,
    slow: Duration,
    busy_once_seen: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Starts the mock on `127.0.0.1:<random port>` for `apps` and returns its base URL.
/// `slow` is how long the `slow` code takes (more than the client's timeout).
pub async fn spawn(apps: &[WechatApp], slow: Duration) -> std::io::Result<Url> {
    let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await?;
    let addr = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .ok_or_else(|| std::io::Error::other("mock has no address"))?;
    let state = Arc::new(MockState {
        apps: apps.iter().map(|a| (a.appid.clone(), a.secret.expose().to_owned())).collect(),
        slow,
        busy_once_seen: Default::default(),
    });
    let app = Route::new().at("/sns/jscode2session", get(jscode2session)).data(state);
    tokio::spawn(async move {
        if let Err(e) = Server::new_with_acceptor(acceptor).run(app).await {
            tracing::error!(error = %e, "dev WeChat mock stopped");
        }
    });
    Url::parse(&format!("http://{addr}")).map_err(std::io::Error::other)
}

#[handler]
async fn jscode2session(Query(q): Query<HashMap<String, String>>, state: Data<&Arc<MockState>>) -> Response {
    let field = |name: &str| q.get(name).map(String::as_str).unwrap_or_default();
    let code = field("js_code");
    let appid = field("appid");
    let reply = if !state.apps.contains_key(appid) {
        error(40013, "invalid appid")
    } else if state.apps.get(appid).map(String::as_str) != Some(field("secret")) {
        error(40125, "invalid appsecret")
    } else if field("grant_type") != "authorization_code" {
        error(40002, "invalid grant_type")
    } else if code.is_empty() {
        error(41008, "missing code")
    } else {
        match code {
            "invalid" => error(40029, "invalid code"),
            "used" => error(40163, "code been used"),
            "busy" => error(-1, "system error"),
            "limited" => error(45011, "api minute-quota reach limit, must slower, retry next minute"),
            "blocked" => error(40226, "code blocked"),
            "garbled" => "<html>502 Bad Gateway</html>".to_owned(),
            "busy-once" if first_time(&state, code) => error(-1, "system error"),
            "slow" => {
                tokio::time::sleep(state.slow).await;
                success(appid, code)
            }
            _ => success(appid, code),
        }
    };
    // WeChat's real Content-Type for these JSON bodies.
    Response::builder().header(header::CONTENT_TYPE, "text/plain").body(reply)
}

fn first_time(state: &MockState, code: &str) -> bool {
    state.busy_once_seen.lock().unwrap_or_else(|e| e.into_inner()).insert(code.to_owned())
}

fn error(errcode: i64, errmsg: &str) -> String {
    let rid = format!("dev{:08x}", rand_u32());
    serde_json::json!({ "errcode": errcode, "errmsg": format!("{errmsg}, rid: {rid}") }).to_string()
}

fn success(appid: &str, code: &str) -> String {
    let mut key = [0u8; 16];
    // A fresh session_key each login, as WeChat does.
    let _ = aws_lc_rs::rand::fill(&mut key);
    let mut reply = serde_json::json!({
        "openid": derived_id("o", "openid", appid, code),
        "session_key": STANDARD.encode(key),
    });
    if code.starts_with("union") {
        // One person across apps: the unionid depends on the code alone.
        reply["unionid"] = derived_id("u", "unionid", "", code).into();
    }
    reply.to_string()
}

/// A WeChat-shaped 28-character id derived from the code, so a code always maps to the
/// same person.
fn derived_id(prefix: &str, kind: &str, appid: &str, code: &str) -> String {
    let digest = digest::digest(&digest::SHA256, format!("wxauth-dev:{kind}:{appid}:{code}").as_bytes());
    let mut id = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(digest.as_ref()));
    id.truncate(28);
    id
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u32::from_le_bytes(b)
}
