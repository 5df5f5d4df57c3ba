//! Client for WeChat's server API. One struct, one method per WeChat API.
//!
//! Facts this relies on (see `shared/wechat.md`): WeChat answers HTTP 200 for errors too,
//! often with `Content-Type: text/plain`; `errcode` may be absent, 0, a number or a numeric
//! string; `errmsg` ends with a request id worth logging.

mod access_token;
mod singleflight;

use std::{sync::Arc, time::Duration};

use serde::Deserialize;
use url::Url;

use crate::{
    config::{Secret, WechatApp, WechatSettings},
    domain::{JsCode, PhoneNumber, SessionKey, WechatSession},
};
use access_token::AccessToken;
use singleflight::SingleFlight;

/// Delay before the single retry after errcode -1 (WeChat busy).
const BUSY_RETRY_DELAY: Duration = Duration::from_millis(200);
/// How long a code's successful answer is reused. WeChat usually answers before a second
/// tap arrives, so sharing only in-flight calls would still turn a double tap (or a client
/// retrying after a lost response) into 40163. Short, because a replayed code gets a token.
const REPLAY_WINDOW: Duration = Duration::from_secs(10);

/// What went wrong talking to WeChat. Cloneable so single-flight waiters can share it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WechatError {
    /// 40029: the code is wrong, expired, or for another appid.
    #[error("WeChat rejected the code as invalid (errcode 40029{rid})", rid = rid_suffix(.rid))]
    InvalidCode {
        /// WeChat's request id.
        rid: Option<String>,
    },
    /// 40163: the code was already used.
    #[error("WeChat says the code was already used (errcode 40163{rid})", rid = rid_suffix(.rid))]
    CodeUsed {
        /// WeChat's request id.
        rid: Option<String>,
    },
    /// 45011: per-user minute quota reached.
    #[error("WeChat rate limit reached (errcode 45011{rid})", rid = rid_suffix(.rid))]
    RateLimited {
        /// WeChat's request id.
        rid: Option<String>,
    },
    /// 40226: WeChat's risk control blocked this user.
    #[error("WeChat blocked this user's login (errcode 40226{rid})", rid = rid_suffix(.rid))]
    UserBlocked {
        /// WeChat's request id.
        rid: Option<String>,
    },
    /// -1: WeChat is busy (already retried once).
    #[error("WeChat is busy (errcode -1{rid})", rid = rid_suffix(.rid))]
    Busy {
        /// WeChat's request id.
        rid: Option<String>,
    },
    /// 40001, 40014 or 42001: WeChat refused the access token, and again after one refresh.
    #[error("WeChat refused the server's access token (errcode {errcode}{rid})", rid = rid_suffix(.rid))]
    AccessTokenRejected {
        /// The errcode.
        errcode: i64,
        /// WeChat's request id.
        rid: Option<String>,
    },
    /// No complete answer within the configured timeout.
    #[error("WeChat did not answer in time")]
    Timeout,
    /// Anything else: connection failure, non-200, malformed body, unknown errcode.
    #[error("{0}")]
    Upstream(String),
}

fn rid_suffix(rid: &Option<String>) -> String {
    rid.as_ref().map(|r| format!(", rid {r}")).unwrap_or_default()
}

/// The raw JSON WeChat sends; every field optional because WeChat omits freely.
#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    errcode: Option<serde_json::Value>,
    #[serde(default)]
    errmsg: Option<String>,
    #[serde(default)]
    openid: Option<String>,
    #[serde(default)]
    session_key: Option<String>,
    #[serde(default)]
    unionid: Option<String>,
}

/// The WeChat API client. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct WechatClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    code2session_url: Url,
    /// `code2session_url` with every parameter but `js_code`, ending in `&js_code=`: the
    /// per-call work is then encoding the code and one URL parse, where `.query()` cost a
    /// serializer pass and two parses. It holds the AppSecret, hence the wrapper.
    code2session_prefix: Secret,
    appid: String,
    inflight: SingleFlight<Result<WechatSession, WechatError>>,
    access_token: AccessToken,
    phone_url: Url,
}

impl WechatClient {
    /// One client per configured app, sharing one connection pool, in the settings' order.
    pub fn for_apps(settings: &WechatSettings) -> Result<Vec<Self>, WechatError> {
        let http = Self::http(settings)?;
        settings.apps.iter().map(|app| Self::with_http(settings, app, http.clone())).collect()
    }

    /// Builds the client of one app: rustls with certificate verification, timeouts,
    /// keep-alive.
    pub fn new(settings: &WechatSettings, app: &WechatApp) -> Result<Self, WechatError> {
        Self::with_http(settings, app, Self::http(settings)?)
    }

    fn http(settings: &WechatSettings) -> Result<reqwest::Client, WechatError> {
        reqwest::Client::builder()
            .connect_timeout(settings.timeout.min(Duration::from_secs(3)))
            .timeout(settings.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            // The request carries the AppSecret: never let a 3xx send it elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("wxauth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WechatError::Upstream(format!("cannot build HTTP client: {}", e.without_url())))
    }

    fn with_http(settings: &WechatSettings, app: &WechatApp, http: reqwest::Client) -> Result<Self, WechatError> {
        let mut code2session_url = settings.base_url.clone();
        code2session_url
            .path_segments_mut()
            .map_err(|()| WechatError::Upstream("WeChat base URL cannot have a path".into()))?
            .pop_if_empty()
            .extend(["sns", "jscode2session"]);
        let mut phone_url = settings.base_url.clone();
        phone_url
            .path_segments_mut()
            .map_err(|()| WechatError::Upstream("WeChat base URL cannot have a path".into()))?
            .pop_if_empty()
            .extend(["wxa", "business", "getuserphonenumber"]);
        Ok(Self {
            inner: Arc::new(Inner {
                access_token: AccessToken::new(http.clone(), &settings.base_url, app)?,
                phone_url,
                http,
                code2session_prefix: Secret::new(query_prefix(&code2session_url, &app.appid, app.secret.expose())),
                code2session_url,
                appid: app.appid.clone(),
                inflight: SingleFlight::new(REPLAY_WINDOW, |result| result.is_ok()),
            }),
        })
    }

    /// The AppID this client logs users in for.
    pub fn appid(&self) -> &str {
        &self.inner.appid
    }

    /// `auth.code2Session`: exchanges a `wx.login` code for the user's identity.
    ///
    /// Calls with the same code share one upstream request (and a success is reused for
    /// [`REPLAY_WINDOW`]), because a code works once and a double tap would otherwise turn
    /// into a 40163.
    pub async fn code2session(&self, code: &JsCode) -> Result<WechatSession, WechatError> {
        let this = self.clone();
        let owned = code.clone();
        self.inner.inflight.run(code.as_str(), async move { this.code2session_with_retry(&owned).await }).await
    }

    /// `getuserphonenumber`: the phone number behind a code from the mini-program's
    /// `getPhoneNumber` button. When WeChat refuses the access token (40001, 40014,
    /// 42001), it is refreshed and the call retried once, never in a loop.
    pub async fn phone_number(&self, code: &JsCode, openid: &str) -> Result<PhoneNumber, WechatError> {
        let body = serde_json::json!({ "code": code.as_str(), "openid": openid }).to_string();
        let mut refused = None;
        for _ in 0..2 {
            let token = self.inner.access_token.get().await?;
            let mut url = self.inner.phone_url.clone();
            url.query_pairs_mut().append_pair("access_token", token.expose());
            let response = self
                .inner
                .http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await
                .map_err(transport_error)?;
            let status = response.status();
            let answer = response.bytes().await.map_err(transport_error)?;
            if status != reqwest::StatusCode::OK {
                return Err(WechatError::Upstream(format!(
                    "getuserphonenumber: WeChat answered HTTP {}",
                    status.as_u16()
                )));
            }
            match interpret_phone(&answer) {
                Err(e @ WechatError::AccessTokenRejected { .. }) => {
                    tracing::warn!(error = %e, "access token refused; refreshing it and retrying once");
                    self.inner.access_token.invalidate(&token);
                    refused = Some(e);
                }
                other => return other,
            }
        }
        Err(refused.unwrap_or(WechatError::Upstream("access token refused".into())))
    }

    /// How many access tokens this client has fetched (for tests and operators).
    pub fn access_token_fetches(&self) -> u64 {
        self.inner.access_token.fetches()
    }

    async fn code2session_with_retry(&self, code: &JsCode) -> Result<WechatSession, WechatError> {
        match self.code2session_once(code).await {
            // -1 is transient; retrying re-sends the same code, so only once.
            Err(WechatError::Busy { .. }) => {
                tokio::time::sleep(BUSY_RETRY_DELAY).await;
                self.code2session_once(code).await
            }
            other => other,
        }
    }

    /// One call, logged once with its outcome (never with the query: it carries the
    /// AppSecret and the code).
    async fn code2session_once(&self, code: &JsCode) -> Result<WechatSession, WechatError> {
        let started = std::time::Instant::now();
        let result = self.fetch_session(code).await;
        let endpoint = self.inner.code2session_url.as_str();
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(_) => tracing::debug!(%endpoint, elapsed_ms, "code2Session succeeded"),
            Err(err) => tracing::warn!(%endpoint, elapsed_ms, error = %err, "code2Session failed"),
        }
        result
    }

    async fn fetch_session(&self, code: &JsCode) -> Result<WechatSession, WechatError> {
        let inner = &self.inner;
        let mut url = inner.code2session_prefix.expose().to_owned();
        url.extend(url::form_urlencoded::byte_serialize(code.as_str().as_bytes()));
        let url = Url::parse(&url).map_err(|_| WechatError::Upstream("cannot build the code2Session URL".into()))?;
        let response = inner.http.get(url).send().await.map_err(transport_error)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport_error)?;
        if status != reqwest::StatusCode::OK {
            return Err(WechatError::Upstream(format!("WeChat answered HTTP {}", status.as_u16())));
        }
        interpret(&body)
    }
}

/// `url?appid=..&secret=..&grant_type=authorization_code&js_code=`, encoded by `url`.
fn query_prefix(url: &Url, appid: &str, secret: &str) -> String {
    let mut url = url.clone();
    url.query_pairs_mut()
        .append_pair("appid", appid)
        .append_pair("secret", secret)
        .append_pair("grant_type", "authorization_code");
    let mut prefix = String::from(url);
    prefix.push_str("&js_code=");
    prefix
}

fn transport_error(err: reqwest::Error) -> WechatError {
    if err.is_timeout() {
        WechatError::Timeout
    } else {
        // `without_url`: the URL holds the AppSecret.
        WechatError::Upstream(format!("cannot reach WeChat: {}", err.without_url()))
    }
}

/// Turns WeChat's body into a session or an error, whatever the Content-Type said.
fn interpret(body: &[u8]) -> Result<WechatSession, WechatError> {
    let reply: Reply = serde_json::from_slice(body)
        .map_err(|e| WechatError::Upstream(format!("WeChat sent a malformed answer ({e})")))?;
    let rid = reply.errmsg.as_deref().and_then(request_id);
    let errcode = errcode(reply.errcode.as_ref())?;
    match errcode {
        0 => {}
        40029 => return Err(WechatError::InvalidCode { rid }),
        40163 => return Err(WechatError::CodeUsed { rid }),
        45011 => return Err(WechatError::RateLimited { rid }),
        40226 => return Err(WechatError::UserBlocked { rid }),
        -1 => return Err(WechatError::Busy { rid }),
        40013 | 40125 | 40243 => {
            tracing::error!(
                errcode,
                "WeChat rejected this server's AppID or AppSecret: check WXAUTH_WECHAT_APPID / WXAUTH_WECHAT_SECRET"
            );
            return Err(WechatError::Upstream(format!("WeChat errcode {errcode}{}", rid_suffix(&rid))));
        }
        other => {
            return Err(WechatError::Upstream(format!("WeChat errcode {other}{}", rid_suffix(&rid))));
        }
    }
    match (reply.openid, reply.session_key) {
        (Some(openid), Some(session_key)) if !openid.is_empty() && !session_key.is_empty() => Ok(WechatSession {
            openid,
            unionid: reply.unionid.filter(|u| !u.is_empty()),
            session_key: SessionKey::new(session_key),
        }),
        _ => Err(WechatError::Upstream(format!(
            "WeChat reported success without openid or session_key{}",
            rid_suffix(&rid)
        ))),
    }
}

/// WeChat's `errcode`: absent, null, a number or a numeric string; 0 means success.
fn errcode(value: Option<&serde_json::Value>) -> Result<i64, WechatError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(0),
        Some(serde_json::Value::Number(n)) => n.as_i64().ok_or_else(|| bad_errcode(n)),
        Some(serde_json::Value::String(s)) => s.trim().parse().map_err(|_| bad_errcode(s)),
        Some(other) => Err(bad_errcode(other)),
    }
}

fn bad_errcode(value: impl std::fmt::Display) -> WechatError {
    WechatError::Upstream(format!("WeChat sent an unreadable errcode: {value}"))
}

/// `getuserphonenumber`'s answer.
fn interpret_phone(body: &[u8]) -> Result<PhoneNumber, WechatError> {
    #[derive(Deserialize)]
    struct Reply {
        #[serde(default)]
        errcode: Option<serde_json::Value>,
        #[serde(default)]
        errmsg: Option<String>,
        #[serde(default)]
        phone_info: Option<serde_json::Map<String, serde_json::Value>>,
    }
    let reply: Reply = serde_json::from_slice(body)
        .map_err(|e| WechatError::Upstream(format!("getuserphonenumber: WeChat sent a malformed answer ({e})")))?;
    let rid = reply.errmsg.as_deref().and_then(request_id);
    match errcode(reply.errcode.as_ref())? {
        0 => {}
        40029 => return Err(WechatError::InvalidCode { rid }),
        45011 => return Err(WechatError::RateLimited { rid }),
        -1 => return Err(WechatError::Busy { rid }),
        code @ (40001 | 40014 | 42001) => return Err(WechatError::AccessTokenRejected { errcode: code, rid }),
        other => {
            return Err(WechatError::Upstream(format!(
                "getuserphonenumber: WeChat errcode {other}{}",
                rid_suffix(&rid)
            )));
        }
    }
    reply
        .phone_info
        .as_ref()
        .and_then(crate::opendata::phone)
        .ok_or_else(|| WechatError::Upstream("getuserphonenumber: success without a readable phone_info".into()))
}

/// Pulls the request id out of `errmsg` (`..., rid: 626d...` or `hints: [ req_id: Aij... ]`).
fn request_id(errmsg: &str) -> Option<String> {
    ["rid:", "req_id:"].iter().find_map(|marker| {
        let rest = &errmsg[errmsg.find(marker)? + marker.len()..];
        let id: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(64)
            .collect();
        (!id.is_empty()).then_some(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_answers_are_interpreted() {
        let ok = interpret(br#"{"openid":"o6_bmjrPTlm6_2sgVt7hMZOPfL2M","session_key":"tiihtNczf5v6AKRyjwEUhQ==","unionid":"o6_bmasdasdsad6_2sgVt7hMZOPfL"}"#).unwrap();
        assert_eq!(ok.openid, "o6_bmjrPTlm6_2sgVt7hMZOPfL2M");
        assert!(interpret(br#"{"errcode":0,"errmsg":"ok","openid":"o","session_key":"k"}"#).is_ok());
        assert_eq!(
            interpret(br#"{"errcode":40029,"errmsg":"invalid code, rid: 626d6eea-742b9141-407c26f8"}"#),
            Err(WechatError::InvalidCode { rid: Some("626d6eea-742b9141-407c26f8".into()) })
        );
        assert_eq!(
            interpret(br#"{"errcode":"40163","errmsg":"code been used, hints: [ req_id: AijFoqaLRa-pTFm4 ]"}"#),
            Err(WechatError::CodeUsed { rid: Some("AijFoqaLRa-pTFm4".into()) })
        );
        assert!(
            matches!(interpret(br#"{"errcode":99999,"errmsg":"new"}"#), Err(WechatError::Upstream(m)) if m.contains("99999"))
        );
        assert!(matches!(interpret(br#"{"openid":"o"}"#), Err(WechatError::Upstream(_))));
        assert!(matches!(interpret(b"<html>"), Err(WechatError::Upstream(_))));
    }

    #[test]
    fn a_success_without_a_usable_openid_or_session_key_is_not_a_login() {
        // Accepted, each would log its person in as the one user keyed `"{appid}:"`.
        for body in [
            r#"{"openid":"","session_key":"k"}"#,
            r#"{"openid":"o","session_key":""}"#,
            r#"{"openid":"","session_key":""}"#,
            r#"{"errcode":0,"errmsg":"ok","openid":"","session_key":"k"}"#,
            r#"{"session_key":"k"}"#,
            r#"{"openid":null,"session_key":"k"}"#,
        ] {
            let answer = interpret(body.as_bytes());
            assert!(
                matches!(&answer, Err(WechatError::Upstream(m)) if m.contains("without openid or session_key")),
                "{body}: {:?}",
                answer.map(|s| s.openid)
            );
        }
    }

    #[test]
    fn an_empty_unionid_from_wechat_is_dropped_and_a_real_one_kept() {
        let session = |body: &str| interpret(body.as_bytes()).unwrap();
        assert_eq!(session(r#"{"openid":"o","session_key":"k","unionid":""}"#).unionid, None);
        assert_eq!(session(r#"{"openid":"o","session_key":"k","unionid":null}"#).unionid, None);
        assert_eq!(session(r#"{"openid":"o","session_key":"k","unionid":"u1"}"#).unionid.as_deref(), Some("u1"));
    }
}

#[cfg(test)]
mod phone_tests;
