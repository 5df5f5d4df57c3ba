//! Dev mode's stand-in for WeChat: a real HTTP server on loopback, called through the
//! same client as production, answering `GET /sns/jscode2session` like WeChat does
//! (HTTP 200 and `text/plain` JSON for successes and errors alike), and the phone API with
//! its access token (`POST /cgi-bin/stable_token`, `POST /wxa/business/getuserphonenumber`).
//!
//! Deterministic: the same code text always gives the same openid, and so does the same
//! text after an `@` (`1@alice`, `2@alice`), with a fresh session key each time. Reserved codes return
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
    post,
    web::{Data, Query},
};
use secrecy::ExposeSecret;
use url::Url;

use crate::config::WechatApp;

/// Reserved codes and what they produce, for the README's table and the log.
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
    ("*@name", "logs in as the same person as `name` with a new session key, like a later wx.login"),
];

/// Reserved codes of the phone API (`POST /v1/me/phone` with `code`); any other code gives
/// the person's fake number.
pub const RESERVED_PHONE_CODES: &[(&str, &str)] = &[
    ("invalid", "errcode 40029 (invalid code) -> 400 invalid_code"),
    ("limited", "errcode 45011 (minute quota) -> 429 rate_limited"),
    ("busy", "errcode -1 (WeChat busy) -> 503 wechat_unavailable"),
    ("slow", "answers after the timeout -> 504 wechat_timeout"),
    ("garbled", "a body that is not JSON -> 502 wechat_error"),
    ("token-expired", "errcode 42001 (access token expired): wxauth refreshes the token and retries once -> 200"),
    (
        "1xxxxxxxxxx",
        "an 11-digit mainland number as the code verifies that number, e.g. an account's from `accounts add --phone`",
    ),
];

struct MockState {
    /// AppID → AppSecret of every configured app.
    apps: HashMap<String, String>,
    slow: Duration,
    busy_once_seen: std::sync::Mutex<std::collections::HashSet<String>>,
    /// AppID → the access token `stable_token` hands out until it expires.
    tokens: std::sync::Mutex<HashMap<String, String>>,
    /// `appid:openid` → the token a `token-expired` phone call expired: the retry, with
    /// another token, succeeds.
    expired_for: std::sync::Mutex<HashMap<String, String>>,
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
        apps: apps.iter().map(|a| (a.appid.clone(), a.secret.expose_secret().to_owned())).collect(),
        slow,
        busy_once_seen: Default::default(),
        tokens: Default::default(),
        expired_for: Default::default(),
    });
    let app = Route::new()
        .at("/sns/jscode2session", get(jscode2session))
        .at("/cgi-bin/stable_token", post(stable_token))
        .at("/wxa/business/getuserphonenumber", post(phone_number))
        .at("/sns/oauth2/access_token", get(oauth_access_token))
        .at("/sns/userinfo", get(userinfo))
        .at("/connect/oauth2/authorize", get(authorize_page))
        .at("/connect/qrconnect", get(qr_page))
        .at("/connect/qrconnect/scanned", get(authorize_page))
        .at("/wxa/getwxacodeunlimit", post(wxacode))
        .data(state);
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

/// `POST /cgi-bin/stable_token`: the app's current token, a new one once it expired.
#[handler]
fn stable_token(body: String, state: Data<&Arc<MockState>>) -> Response {
    // Like WeChat, whatever the Content-Type says.
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let field = |name: &str| body.get(name).and_then(serde_json::Value::as_str).unwrap_or_default();
    let appid = field("appid");
    let reply = if !state.apps.contains_key(appid) {
        error(40013, "invalid appid")
    } else if state.apps.get(appid).map(String::as_str) != Some(field("secret")) {
        error(40125, "invalid appsecret")
    } else if field("grant_type") != "client_credential" {
        error(40002, "invalid grant_type")
    } else {
        let mut tokens = state.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let token = tokens.entry(appid.to_owned()).or_insert_with(|| format!("dev-access-token-{:08x}", rand_u32()));
        serde_json::json!({ "access_token": token, "expires_in": 7200 }).to_string()
    };
    Response::builder().header(header::CONTENT_TYPE, "application/json; charset=UTF-8").body(reply)
}

/// `POST /wxa/business/getuserphonenumber`: the person's fake number, or a reserved code's
/// error.
#[handler]
async fn phone_number(
    Query(q): Query<HashMap<String, String>>,
    body: String,
    state: Data<&Arc<MockState>>,
) -> Response {
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let token = q.get("access_token").map(String::as_str).unwrap_or_default();
    let field = |name: &str| body.get(name).and_then(serde_json::Value::as_str).unwrap_or_default();
    let (code, openid) = (field("code"), field("openid"));
    let appid = {
        let tokens = state.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.iter().find(|(_, t)| t.as_str() == token).map(|(appid, _)| appid.clone())
    };
    let reply = match (appid, code) {
        (None, _) => error(40001, "invalid credential, access_token is invalid or not latest"),
        (Some(_), "") => error(41008, "missing code"),
        (Some(_), "invalid") => error(40029, "invalid code"),
        (Some(_), "limited") => error(45011, "api minute-quota reach limit, must slower, retry next minute"),
        (Some(_), "busy") => error(-1, "system error"),
        (Some(_), "garbled") => "<html>502 Bad Gateway</html>".to_owned(),
        (Some(appid), "token-expired") if expire_once(&state, &appid, openid, token) => {
            error(42001, "access_token expired")
        }
        (Some(appid), code) => {
            if code == "slow" {
                tokio::time::sleep(state.slow).await;
            }
            let chosen = code.len() == 11 && code.starts_with('1') && code.bytes().all(|b| b.is_ascii_digit());
            let pure = if chosen { code.to_owned() } else { fake_phone_number(openid) };
            serde_json::json!({
                "errcode": 0,
                "errmsg": "ok",
                "phone_info": {
                    "phoneNumber": format!("+86{pure}"),
                    "purePhoneNumber": pure,
                    "countryCode": "86",
                    "watermark": { "timestamp": time::OffsetDateTime::now_utc().unix_timestamp(), "appid": appid },
                },
            })
            .to_string()
        }
    };
    Response::builder().header(header::CONTENT_TYPE, "application/json; charset=UTF-8").body(reply)
}

/// `GET /sns/oauth2/access_token` of official accounts, websites and mobile apps: the same
/// reserved codes as `code2Session`, and the person after an `@`, with no session key.
#[handler]
async fn oauth_access_token(Query(q): Query<HashMap<String, String>>, state: Data<&Arc<MockState>>) -> Response {
    let field = |name: &str| q.get(name).map(String::as_str).unwrap_or_default();
    let (code, appid) = (field("code"), field("appid"));
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
            "snapshot" => {
                let openid = derived_id("o", "openid", appid, "snapshot");
                serde_json::json!({"access_token": "dev-web-snapshot", "expires_in": 7200, "openid": openid,
                    "scope": "snsapi_base", "is_snapshotuser": 1})
                .to_string()
            }
            _ => {
                let person = code.rsplit('@').next().unwrap_or(code);
                let mut reply = serde_json::json!({
                    "access_token": format!("dev-web-token.{person}"),
                    "expires_in": 7200,
                    "refresh_token": "dev-web-refresh",
                    "openid": derived_id("o", "openid", appid, person),
                    "scope": "snsapi_userinfo",
                });
                if person.starts_with("union") {
                    reply["unionid"] = derived_id("u", "unionid", "", person).into();
                }
                reply.to_string()
            }
        }
    };
    Response::builder().header(header::CONTENT_TYPE, "text/plain").body(reply)
}

/// `GET /sns/userinfo`: a made-up nickname and avatar for the person of the token.
#[handler]
fn userinfo(Query(q): Query<HashMap<String, String>>) -> Response {
    let token = q.get("access_token").map(String::as_str).unwrap_or_default();
    let reply = match token.strip_prefix("dev-web-token.") {
        Some(person) => serde_json::json!({
            "openid": q.get("openid"),
            "nickname": format!("开发者 {person}"),
            "headimgurl": "https://thirdwx.qlogo.cn/mmopen/vi_32/dev/132",
        })
        .to_string(),
        None => error(40001, "invalid credential, access_token is invalid or not latest"),
    };
    Response::builder().header(header::CONTENT_TYPE, "text/plain").body(reply)
}

/// The person the dev pages log in: the same as a mini-program login with code `union-dev`,
/// so the pages show one person across surfaces.
const DEV_BROWSER_PERSON: &str = "union-dev";

/// WeChat's authorize page, as a person who allows at once (and the QR page's button):
/// back to `redirect_uri` with a fresh code for the person (`person`, else
/// [`DEV_BROWSER_PERSON`]) and the same `state`.
#[handler]
fn authorize_page(Query(q): Query<HashMap<String, String>>) -> Response {
    let person = q.get("person").map(|p| p.trim()).filter(|p| !p.is_empty() && p.len() <= 64);
    let person = person.unwrap_or(DEV_BROWSER_PERSON);
    let Some(mut target) = q.get("redirect_uri").and_then(|u| Url::parse(u).ok()) else {
        return Response::builder().status(poem::http::StatusCode::BAD_REQUEST).body("redirect_uri is not a URL");
    };
    let code = format!("{:08x}@{person}", rand_u32());
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", q.get("state").map(String::as_str).unwrap_or_default());
    Response::builder().status(poem::http::StatusCode::FOUND).header(header::LOCATION, target.as_str()).finish()
}

/// The website QR page: instead of a code to scan with a phone, a button that stands for
/// "scanned and allowed".
#[handler]
fn qr_page(Query(q): Query<HashMap<String, String>>) -> Response {
    let field = |name: &str| html_escape(q.get(name).map(String::as_str).unwrap_or_default());
    let page = format!(
        "<!doctype html><html lang=\"zh-CN\"><meta charset=\"utf-8\"><title>微信登录 (dev mock)</title>\
         <body style=\"font-family:sans-serif;max-width:28em;margin:3em auto;text-align:center\">\
         <h1>微信扫码登录</h1><p>Dev mode: WeChat's QR page is replaced by this button.</p>\
         <form action=\"/connect/qrconnect/scanned\" method=\"get\">\
         <input type=\"hidden\" name=\"redirect_uri\" value=\"{}\"><input type=\"hidden\" name=\"state\" value=\"{}\">\
         <p><label>Person <input name=\"person\" value=\"{DEV_BROWSER_PERSON}\"></label></p>\
         <button id=\"scanned\" type=\"submit\">扫码并确认登录 (scan and allow)</button></form></body></html>",
        field("redirect_uri"),
        field("state"),
    );
    Response::builder().header(header::CONTENT_TYPE, "text/html; charset=utf-8").body(page)
}

/// `POST /wxa/getwxacodeunlimit`: a PNG (any scene), or 40001 for an unknown token.
#[handler]
fn wxacode(Query(q): Query<HashMap<String, String>>, state: Data<&Arc<MockState>>) -> Response {
    let token = q.get("access_token").map(String::as_str).unwrap_or_default();
    let known = state.tokens.lock().unwrap_or_else(|e| e.into_inner()).values().any(|t| t == token);
    if !known {
        let body = error(40001, "invalid credential, access_token is invalid or not latest");
        return Response::builder().header(header::CONTENT_TYPE, "application/json").body(body);
    }
    Response::builder().header(header::CONTENT_TYPE, "image/png").body(MOCK_PNG.to_vec())
}

/// An 8x8 checkerboard PNG: what a mini-program code stands for in dev mode.
pub const MOCK_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x08, 0x00, 0x00, 0x00, 0x08, 0x08, 0x00, 0x00, 0x00, 0x00, 0xe1, 0x64, 0xe1, 0x57, 0x00, 0x00, 0x00, 0x13, 0x49,
    0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0x00, 0x81, 0x0c, 0x0c, 0xff, 0xd1, 0x20, 0x49, 0x22, 0x00, 0x7c,
    0x04, 0x1f, 0xe1, 0xa9, 0x1b, 0xcc, 0xe4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// Text safe inside an HTML attribute.
fn html_escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// Expires the app's token for a `token-expired` call, unless this is the retry (it comes
/// with another token than the one expired for this person).
fn expire_once(state: &MockState, appid: &str, openid: &str, token: &str) -> bool {
    let key = format!("{appid}:{openid}");
    let mut expired = state.expired_for.lock().unwrap_or_else(|e| e.into_inner());
    if expired.get(&key).is_some_and(|t| t != token) {
        expired.remove(&key);
        return false;
    }
    expired.insert(key, token.to_owned());
    state.tokens.lock().unwrap_or_else(|e| e.into_inner()).remove(appid);
    true
}

fn first_time(state: &MockState, code: &str) -> bool {
    state.busy_once_seen.lock().unwrap_or_else(|e| e.into_inner()).insert(code.to_owned())
}

fn error(errcode: i64, errmsg: &str) -> String {
    let rid = format!("dev{:08x}", rand_u32());
    serde_json::json!({ "errcode": errcode, "errmsg": format!("{errmsg}, rid: {rid}") }).to_string()
}

fn success(appid: &str, code: &str) -> String {
    // `2@alice` is alice again: a later `wx.login` of the same person.
    let person = code.rsplit('@').next().unwrap_or(code);
    let mut key = [0u8; 16];
    // A fresh session_key each login, as WeChat does.
    let _ = aws_lc_rs::rand::fill(&mut key);
    let mut reply = serde_json::json!({
        "openid": derived_id("o", "openid", appid, person),
        "session_key": STANDARD.encode(key),
    });
    if person.starts_with("union") {
        // One person across apps: the unionid depends on the person alone.
        reply["unionid"] = derived_id("u", "unionid", "", person).into();
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

/// What the dev-only `POST /v1/dev/open-data` fakes.
#[derive(Debug, Clone)]
pub enum FakeData {
    /// What `getPhoneNumber` gives in older base libraries, for this number (digits, no
    /// country code).
    Phone {
        /// e.g. `13800138000`.
        pure_phone_number: String,
    },
    /// What legacy `getUserInfo` gives.
    Profile,
}

/// Fake open data, encrypted as WeChat would for the mini-program.
#[derive(Debug, Clone)]
pub struct FakeOpenData {
    /// `encryptedData`.
    pub encrypted_data: String,
    /// `iv`.
    pub iv: String,
    /// `rawData` (profiles only).
    pub raw_data: Option<String>,
    /// `signature` (profiles only).
    pub signature: Option<String>,
}

/// A phone number for `openid`, the same every time, so a developer sees one person keep
/// one number.
pub fn fake_phone_number(openid: &str) -> String {
    let digest = digest::digest(&digest::SHA256, format!("wxauth-dev:phone:{openid}").as_bytes());
    let tail: String = digest.as_ref().iter().take(8).map(|b| char::from(b'0' + b % 10)).collect();
    format!("138{tail}")
}

/// Encrypts fake open data for the person `openid` of `appid` with `session_key`, the key
/// the mock gave at their latest login: what WeChat hands the mini-program.
pub fn fake_open_data(
    session_key: &str,
    appid: &str,
    openid: &str,
    data: FakeData,
) -> Result<FakeOpenData, crate::opendata::OpenDataError> {
    let watermark =
        serde_json::json!({ "timestamp": time::OffsetDateTime::now_utc().unix_timestamp(), "appid": appid });
    let (plain, raw) = match data {
        FakeData::Phone { pure_phone_number } => (
            serde_json::json!({
                "phoneNumber": format!("+86{pure_phone_number}"),
                "purePhoneNumber": pure_phone_number,
                "countryCode": "86",
                "watermark": watermark,
            }),
            None,
        ),
        FakeData::Profile => {
            let mut profile = serde_json::json!({
                "nickName": "开发者",
                "gender": 0,
                "language": "zh_CN",
                "city": "Shenzhen",
                "province": "Guangdong",
                "country": "China",
                "avatarUrl": "https://thirdwx.qlogo.cn/mmopen/vi_32/dev/132",
            });
            let raw = profile.to_string();
            profile["openId"] = openid.into();
            profile["watermark"] = watermark;
            (profile, Some(raw))
        }
    };
    let (encrypted_data, iv) = crate::opendata::encrypt(session_key, &plain.to_string())?;
    let signature = raw.as_deref().map(|raw| crate::opendata::raw_data_signature(raw, session_key));
    Ok(FakeOpenData { encrypted_data, iv, raw_data: raw, signature })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    #[tokio::test]
    async fn token_expired_refuses_a_token_once_and_the_retry_with_a_new_token_succeeds() {
        let app = WechatApp {
            appid: "wxdev".into(),
            secret: SecretString::from("s"),
            default_role: None,
            kind: Default::default(),
            redirect_uris: vec![],
        };
        let base = spawn(std::slice::from_ref(&app), Duration::from_secs(1)).await.unwrap();
        let http = reqwest::Client::new();
        let token = async || {
            let body = serde_json::json!({"grant_type": "client_credential", "appid": "wxdev", "secret": "s"});
            let reply = http.post(format!("{base}cgi-bin/stable_token")).body(body.to_string()).send().await.unwrap();
            reply.json::<serde_json::Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
        };
        let phone = async |token: &str| {
            let body = serde_json::json!({"code": "token-expired", "openid": "o1"});
            let url = format!("{base}wxa/business/getuserphonenumber?access_token={token}");
            let reply = http.post(url).body(body.to_string()).send().await.unwrap();
            reply.json::<serde_json::Value>().await.unwrap()
        };
        let first = token().await;
        assert_eq!(token().await, first, "stable_token changed a token that had not expired");
        assert_eq!(phone(&first).await["errcode"], 42001);
        let second = token().await;
        assert_ne!(second, first, "the expired token was handed out again");
        assert_eq!(phone(&second).await["errcode"], 0);
        assert_eq!(phone(&first).await["errcode"], 40001, "the expired token still works");
    }
}
