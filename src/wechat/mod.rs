//! Client for WeChat's server API. One struct, one method per WeChat API.
//!
//! Facts this relies on (see `shared/wechat.md`): WeChat answers HTTP 200 for errors too,
//! often with `Content-Type: text/plain`; `errcode` may be absent, 0, a number or a numeric
//! string; `errmsg` ends with a request id worth logging.

mod access_token;
mod singleflight;
mod upstream;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::{
    clock::Clock,
    config::{AppKind, WechatApp, WechatSettings},
    domain::{JsCode, PhoneNumber, SessionKey, WechatSession},
    metrics::Metrics,
};
use access_token::AccessToken;
use singleflight::SingleFlight;
pub use upstream::{Limits, MAX_ANSWER_BYTES, Upstream};

/// Delay before the single retry after errcode -1 (WeChat busy).
const BUSY_RETRY_DELAY: Duration = Duration::from_millis(200);
/// The retry after -1 is sent only if, after the delay, at least this share of the login's
/// deadline remains: a retry that can only time out would just hold the client longer.
const RETRY_NEEDS_SHARE: u32 = 4;
/// Longest text taken from WeChat's answer (an errmsg, an errcode sent as a string) into an
/// error description or a log line.
const MAX_QUOTED_CHARS: usize = 120;
/// How long a code's successful answer is reused. WeChat usually answers before a second
/// tap arrives, so sharing only in-flight calls would still turn a double tap (or a client
/// retrying after a lost response) into 40163. Short, because a replayed code gets a token.
const REPLAY_WINDOW: Duration = Duration::from_secs(10);
/// Answers the replay window keeps at most, per app and API (a few hundred bytes each:
/// the code and WeChat's answer). Past it the oldest go first, so above 5,000 logins a
/// second the window is shorter than [`REPLAY_WINDOW`]; a double tap comes within a
/// second, and a code replayed after its answer was forgotten gets WeChat's 40163.
const REPLAY_ANSWERS: usize = 50_000;

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
    /// `is_snapshotuser`: a visitor of an official account's "snapshot page" (朋友圈快照页),
    /// who has not authorised anything; WeChat's openid for them is not the person's.
    #[error("WeChat says this visitor only saw a snapshot page and has not authorised the official account{rid}", rid = rid_suffix(.rid))]
    SnapshotUser {
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
    /// WeChat could not be reached or sent no usable answer: connection refused or reset,
    /// HTTP 5xx, a body that is not JSON or is too large. Counts against the breaker.
    #[error("{0}")]
    Transport(String),
    /// Not sent: too many requests in flight, or the circuit breaker is open.
    #[error("WeChat is unavailable: {reason}")]
    Unavailable {
        /// Why the request was not sent.
        reason: &'static str,
        /// When trying again makes sense.
        retry_after: Duration,
    },
    /// Anything else WeChat answered: another HTTP status, an unknown errcode, a success
    /// without its fields.
    #[error("{0}")]
    Upstream(String),
}

impl WechatError {
    /// The `errcode` label of `wxauth_wechat_errors_total`.
    pub fn errcode_label(&self) -> String {
        match self {
            Self::InvalidCode { .. } => "40029".into(),
            Self::CodeUsed { .. } => "40163".into(),
            Self::RateLimited { .. } => "45011".into(),
            Self::UserBlocked { .. } => "40226".into(),
            Self::SnapshotUser { .. } => "snapshot".into(),
            Self::Busy { .. } => "-1".into(),
            Self::AccessTokenRejected { errcode, .. } => errcode.to_string(),
            Self::Timeout => "timeout".into(),
            Self::Transport(_) => "transport".into(),
            Self::Unavailable { .. } => "unavailable".into(),
            Self::Upstream(message) => message
                .split("errcode ")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !(c == '-' || c.is_ascii_digit())).next())
                .filter(|code| !code.is_empty())
                .unwrap_or("other")
                .to_owned(),
        }
    }
}

/// Text from WeChat made safe to quote: control characters escaped (a CR/LF would split a
/// log line), and at most [`MAX_QUOTED_CHARS`] characters.
pub(crate) fn clean(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_QUOTED_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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
    upstream: Arc<Upstream>,
    /// The deadline of one login (or phone-number request), retries included.
    timeout: Duration,
    code2session_url: Url,
    /// `code2session_url` with every parameter but `js_code`, ending in `&js_code=`: the
    /// per-call work is then encoding the code and one URL parse, where `.query()` cost a
    /// serializer pass and two parses. It holds the AppSecret, hence the wrapper.
    code2session_prefix: SecretString,
    appid: String,
    kind: AppKind,
    /// `/sns/oauth2/access_token` with every parameter but `code`, ending in `&code=`
    /// (the other surfaces' exchange; it holds the AppSecret).
    oauth_prefix: SecretString,
    oauth_url: Url,
    userinfo_url: Url,
    inflight: SingleFlight<Result<WechatSession, WechatError>>,
    access_token: AccessToken,
    phone_url: Url,
    wxacode_url: Url,
    /// Phone verifications by person and code: WeChat bills each one, so a retried
    /// request shares the first call and, for the replay window, its answer.
    phone_inflight: SingleFlight<Result<PhoneNumber, WechatError>>,
}

impl WechatClient {
    /// One client per configured app, in the settings' order, sharing one connection pool,
    /// one bound on requests in flight and one circuit breaker: they all reach one WeChat.
    /// Cached access tokens expire on `clock`.
    pub fn for_apps(settings: &WechatSettings, metrics: &Metrics, clock: &Clock) -> Result<Vec<Self>, WechatError> {
        let upstream = Arc::new(Upstream::new(Self::http(settings)?, settings.limits, metrics.clone()));
        settings.apps.iter().map(|app| Self::with_upstream(settings, app, upstream.clone(), clock.clone())).collect()
    }

    /// Builds the client of one app: rustls with certificate verification, timeouts,
    /// keep-alive. Cached access tokens expire on `clock`.
    pub fn new(settings: &WechatSettings, app: &WechatApp, clock: Clock) -> Result<Self, WechatError> {
        let upstream = Upstream::new(Self::http(settings)?, settings.limits, Metrics::new());
        Self::with_upstream(settings, app, Arc::new(upstream), clock)
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

    fn with_upstream(
        settings: &WechatSettings,
        app: &WechatApp,
        upstream: Arc<Upstream>,
        clock: Clock,
    ) -> Result<Self, WechatError> {
        let mut code2session_url = settings.base_url.clone();
        code2session_url
            .path_segments_mut()
            .map_err(|()| WechatError::Upstream("WeChat base URL cannot have a path".into()))?
            .pop_if_empty()
            .extend(["sns", "jscode2session"]);
        let endpoint = |segments: &[&str]| {
            let mut url = settings.base_url.clone();
            url.path_segments_mut()
                .map_err(|()| WechatError::Upstream("WeChat base URL cannot have a path".into()))?
                .pop_if_empty()
                .extend(segments);
            Ok::<Url, WechatError>(url)
        };
        let oauth_url = endpoint(&["sns", "oauth2", "access_token"])?;
        let mut oauth_prefix = query_prefix(&oauth_url, &app.appid, app.secret.expose_secret());
        oauth_prefix.truncate(oauth_prefix.len() - "js_code=".len());
        oauth_prefix.push_str("code=");
        let mut phone_url = settings.base_url.clone();
        phone_url
            .path_segments_mut()
            .map_err(|()| WechatError::Upstream("WeChat base URL cannot have a path".into()))?
            .pop_if_empty()
            .extend(["wxa", "business", "getuserphonenumber"]);
        Ok(Self {
            inner: Arc::new(Inner {
                access_token: AccessToken::new(&settings.base_url, app, clock)?,
                phone_url,
                wxacode_url: endpoint(&["wxa", "getwxacodeunlimit"])?,
                upstream,
                timeout: settings.timeout,
                code2session_prefix: SecretString::from(query_prefix(
                    &code2session_url,
                    &app.appid,
                    app.secret.expose_secret(),
                )),
                code2session_url,
                appid: app.appid.clone(),
                kind: app.kind,
                oauth_prefix: SecretString::from(oauth_prefix),
                oauth_url,
                userinfo_url: endpoint(&["sns", "userinfo"])?,
                inflight: SingleFlight::new(REPLAY_WINDOW, REPLAY_ANSWERS, |result| result.is_ok()),
                phone_inflight: SingleFlight::new(REPLAY_WINDOW, REPLAY_ANSWERS, |result| result.is_ok()),
            }),
        })
    }

    /// The AppID this client logs users in for.
    pub fn appid(&self) -> &str {
        &self.inner.appid
    }

    /// Which surface this app is.
    pub fn kind(&self) -> AppKind {
        self.inner.kind
    }

    /// Exchanges a code a client posted to `/v1/login` for the person's identity: a
    /// mini-program's at `code2Session`, a mobile app's at `/sns/oauth2/access_token`.
    /// Either way one code is one upstream call, shared by double taps.
    pub async fn exchange(&self, code: &JsCode) -> Result<WechatSession, WechatError> {
        match self.inner.kind {
            AppKind::MiniProgram => self.code2session(code).await,
            AppKind::MobileApp | AppKind::OfficialAccount | AppKind::Website => {
                let (this, owned) = (self.clone(), code.clone());
                let exchange = async move { this.oauth_access_token(&owned).await.map(|grant| grant.session) };
                self.inner.inflight.run(code.as_str(), exchange).await
            }
        }
    }

    /// `GET /sns/oauth2/access_token`: the exchange of the official-account, website and
    /// mobile-app surfaces. Its answer carries no session key, and the person's own web
    /// access token, used only for `/sns/userinfo` and then dropped.
    pub async fn oauth_access_token(&self, code: &JsCode) -> Result<OauthGrant, WechatError> {
        let inner = &self.inner;
        let deadline = Instant::now() + inner.timeout;
        let mut url = inner.oauth_prefix.expose_secret().to_owned();
        url.extend(url::form_urlencoded::byte_serialize(code.as_str().as_bytes()));
        let url = Url::parse(&url).map_err(|_| WechatError::Upstream("cannot build the access_token URL".into()))?;
        let result =
            inner.upstream.call("oauth2_access_token", inner.upstream.http().get(url), deadline, interpret_oauth).await;
        if let Err(err) = &result {
            tracing::warn!(endpoint = %inner.oauth_url, error = %err, "oauth2/access_token failed");
        }
        result
    }

    /// `GET /sns/userinfo`: the nickname and avatar of a person who granted
    /// `snsapi_userinfo` or `snsapi_login`.
    pub async fn userinfo(&self, grant: &OauthGrant) -> Result<WebProfile, WechatError> {
        let inner = &self.inner;
        let deadline = Instant::now() + inner.timeout;
        let mut url = inner.userinfo_url.clone();
        url.query_pairs_mut()
            .append_pair("access_token", grant.access_token.expose_secret())
            .append_pair("openid", &grant.session.openid)
            .append_pair("lang", "zh_CN");
        inner.upstream.call("userinfo", inner.upstream.http().get(url), deadline, interpret_userinfo).await
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
    /// `getPhoneNumber` button. The same code sent again by the same person (a double
    /// tap, a retry after a lost answer) shares the first call, and for 10 seconds after a
    /// success its answer: WeChat bills each call. When WeChat refuses the access token
    /// (40001, 40014, 42001), it is refreshed and the call retried once, never in a loop.
    /// The token fetch and the retry share one deadline.
    pub async fn phone_number(&self, code: &JsCode, openid: &str) -> Result<PhoneNumber, WechatError> {
        let (this, owned, person) = (self.clone(), code.clone(), openid.to_owned());
        // Keyed by the person too: another person's copy of a code is asked of WeChat
        // (which refuses it), never answered with this person's number.
        let key = format!("{openid}\u{0}{}", code.as_str());
        self.inner.phone_inflight.run(&key, async move { this.verify_phone(&owned, &person).await }).await
    }

    /// `getwxacodeunlimit`: the PNG of a mini-program code that opens `page` with `scene`
    /// (PC login by scanning). Like the phone API, a refused access token is refreshed
    /// and the call retried once.
    pub async fn mini_program_code(&self, scene: &str, page: &str) -> Result<Vec<u8>, WechatError> {
        let body = serde_json::json!({ "scene": scene, "page": page, "check_path": false }).to_string();
        let (url, limit) = (&self.inner.wxacode_url, MAX_IMAGE_BYTES);
        self.post_with_access_token("getwxacodeunlimit", url, &body, limit, interpret_image).await
    }

    async fn verify_phone(&self, code: &JsCode, openid: &str) -> Result<PhoneNumber, WechatError> {
        let body = serde_json::json!({ "code": code.as_str(), "openid": openid }).to_string();
        let (url, limit) = (&self.inner.phone_url, MAX_ANSWER_BYTES);
        let verified = self.post_with_access_token("getuserphonenumber", url, &body, limit, interpret_phone).await;
        if verified.is_ok() {
            // WeChat bills each number it verifies: operators watch the cost.
            self.inner.upstream.metrics().phone_verified(&self.inner.appid);
        }
        verified
    }

    /// POSTs the JSON `body` to `url` with the app's access token, within one deadline.
    /// When WeChat refuses the token (40001, 40014, 42001), it is refreshed and the call
    /// retried once, never in a loop.
    async fn post_with_access_token<T>(
        &self,
        api: &'static str,
        url: &Url,
        body: &str,
        limit: usize,
        read: impl Fn(&[u8]) -> Result<T, WechatError>,
    ) -> Result<T, WechatError> {
        let inner = &self.inner;
        let deadline = Instant::now() + inner.timeout;
        let mut refused = None;
        for _ in 0..2 {
            let token = inner.access_token.get(&inner.upstream, deadline).await?;
            let mut url = url.clone();
            url.query_pairs_mut().append_pair("access_token", token.expose_secret());
            let request = inner
                .upstream
                .http()
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_owned());
            match inner.upstream.call_limited(api, request, deadline, limit, &read).await {
                Err(e @ WechatError::AccessTokenRejected { .. }) => {
                    tracing::warn!(error = %e, "access token refused; refreshing it and retrying once");
                    inner.access_token.invalidate(&token);
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

    /// Whether requests reach WeChat (the circuit breaker is closed).
    pub fn reachable(&self) -> bool {
        self.inner.upstream.is_closed()
    }

    /// One login's exchange, within one deadline. -1 is transient, but retrying re-sends
    /// the same code, so only once, and only when enough of the deadline remains for it.
    async fn code2session_with_retry(&self, code: &JsCode) -> Result<WechatSession, WechatError> {
        let deadline = Instant::now() + self.inner.timeout;
        match self.code2session_once(code, deadline).await {
            Err(WechatError::Busy { rid })
                if deadline.saturating_duration_since(Instant::now())
                    >= BUSY_RETRY_DELAY + self.inner.timeout / RETRY_NEEDS_SHARE =>
            {
                tracing::info!(rid = rid.as_deref().unwrap_or_default(), "WeChat busy (-1); retrying once");
                tokio::time::sleep(BUSY_RETRY_DELAY).await;
                self.code2session_once(code, deadline).await
            }
            other => other,
        }
    }

    /// One call, logged once with its outcome (never with the query: it carries the
    /// AppSecret and the code).
    async fn code2session_once(&self, code: &JsCode, deadline: Instant) -> Result<WechatSession, WechatError> {
        let started = Instant::now();
        let result = self.fetch_session(code, deadline).await;
        let endpoint = self.inner.code2session_url.as_str();
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &result {
            Ok(_) => tracing::debug!(%endpoint, elapsed_ms, "code2Session succeeded"),
            Err(err) => tracing::warn!(%endpoint, elapsed_ms, error = %err, "code2Session failed"),
        }
        result
    }

    async fn fetch_session(&self, code: &JsCode, deadline: Instant) -> Result<WechatSession, WechatError> {
        let inner = &self.inner;
        let mut url = inner.code2session_prefix.expose_secret().to_owned();
        url.extend(url::form_urlencoded::byte_serialize(code.as_str().as_bytes()));
        let url = Url::parse(&url).map_err(|_| WechatError::Upstream("cannot build the code2Session URL".into()))?;
        inner.upstream.call("code2session", inner.upstream.http().get(url), deadline, interpret).await
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

/// What `/sns/oauth2/access_token` gives: the person, and their web access token.
pub struct OauthGrant {
    /// The person (never a session key on this surface).
    pub session: WechatSession,
    /// The person's own web access token, for `/sns/userinfo` only.
    pub access_token: SecretString,
    /// What they granted (`snsapi_base`, `snsapi_userinfo`, `snsapi_login`).
    pub scope: String,
}

/// A person's WeChat nickname and avatar from `/sns/userinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebProfile {
    /// `nickname`.
    pub nickname: Option<String>,
    /// `headimgurl`.
    pub avatar_url: Option<String>,
}

/// The errcodes every code exchange shares (`code2Session`, `/sns/oauth2/access_token`).
fn exchange_errcode(errcode: i64, rid: Option<String>) -> Result<(), WechatError> {
    match errcode {
        0 => Ok(()),
        40029 => Err(WechatError::InvalidCode { rid }),
        40163 => Err(WechatError::CodeUsed { rid }),
        45011 => Err(WechatError::RateLimited { rid }),
        40226 => Err(WechatError::UserBlocked { rid }),
        -1 => Err(WechatError::Busy { rid }),
        40013 | 40125 | 40243 => {
            tracing::error!(
                errcode,
                "WeChat rejected this server's AppID or AppSecret: check WXAUTH_WECHAT_APPID / WXAUTH_WECHAT_SECRET \
                 or [[wechat_apps]]"
            );
            Err(WechatError::Upstream(format!("WeChat errcode {errcode}{}", rid_suffix(&rid))))
        }
        other => Err(WechatError::Upstream(format!("WeChat errcode {other}{}", rid_suffix(&rid)))),
    }
}

/// `/sns/oauth2/access_token`'s answer, whatever the Content-Type said.
fn interpret_oauth(body: &[u8]) -> Result<OauthGrant, WechatError> {
    #[derive(Deserialize)]
    struct Reply {
        #[serde(default)]
        errcode: Option<serde_json::Value>,
        #[serde(default)]
        errmsg: Option<String>,
        #[serde(default)]
        openid: Option<String>,
        #[serde(default)]
        unionid: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
        #[serde(default)]
        scope: Option<String>,
        #[serde(default)]
        is_snapshotuser: Option<serde_json::Value>,
    }
    let reply: Reply = serde_json::from_slice(body).map_err(|e| malformed("oauth2/access_token", &e))?;
    let rid = reply.errmsg.as_deref().and_then(request_id);
    exchange_errcode(errcode(reply.errcode.as_ref())?, rid.clone())?;
    if reply.is_snapshotuser.as_ref().is_some_and(|v| v.as_i64() == Some(1) || v.as_str() == Some("1")) {
        return Err(WechatError::SnapshotUser { rid });
    }
    match (reply.openid, reply.access_token) {
        (Some(openid), Some(token)) if !openid.is_empty() && !token.is_empty() => Ok(OauthGrant {
            session: WechatSession { openid, unionid: reply.unionid.filter(|u| !u.is_empty()), session_key: None },
            access_token: SecretString::from(token),
            scope: reply.scope.unwrap_or_default(),
        }),
        _ => Err(WechatError::Upstream(format!(
            "oauth2/access_token: WeChat reported success without openid or access_token{}",
            rid_suffix(&rid)
        ))),
    }
}

/// `/sns/userinfo`'s answer: an empty text is no value.
fn interpret_userinfo(body: &[u8]) -> Result<WebProfile, WechatError> {
    #[derive(Deserialize)]
    struct Reply {
        #[serde(default)]
        errcode: Option<serde_json::Value>,
        #[serde(default)]
        errmsg: Option<String>,
        #[serde(default)]
        nickname: Option<String>,
        #[serde(default)]
        headimgurl: Option<String>,
    }
    let reply: Reply = serde_json::from_slice(body).map_err(|e| malformed("userinfo", &e))?;
    let rid = reply.errmsg.as_deref().and_then(request_id);
    match errcode(reply.errcode.as_ref())? {
        0 => {}
        -1 => return Err(WechatError::Busy { rid }),
        45011 => return Err(WechatError::RateLimited { rid }),
        other => return Err(WechatError::Upstream(format!("userinfo: WeChat errcode {other}{}", rid_suffix(&rid)))),
    }
    let text = |v: Option<String>| v.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    Ok(WebProfile { nickname: text(reply.nickname), avatar_url: text(reply.headimgurl) })
}

/// Turns WeChat's body into a session or an error, whatever the Content-Type said.
fn interpret(body: &[u8]) -> Result<WechatSession, WechatError> {
    let reply: Reply = serde_json::from_slice(body).map_err(|e| malformed("code2Session", &e))?;
    let rid = reply.errmsg.as_deref().and_then(request_id);
    exchange_errcode(errcode(reply.errcode.as_ref())?, rid.clone())?;
    match (reply.openid, reply.session_key) {
        (Some(openid), Some(session_key)) if !openid.is_empty() && !session_key.is_empty() => Ok(WechatSession {
            openid,
            unionid: reply.unionid.filter(|u| !u.is_empty()),
            session_key: Some(SessionKey::new(session_key)),
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
    WechatError::Upstream(format!("WeChat sent an unreadable errcode: {}", clean(&value.to_string())))
}

/// A body that is not the JSON an API answers: not WeChat speaking, so a transport failure.
fn malformed(api: &str, err: &serde_json::Error) -> WechatError {
    WechatError::Transport(format!("{api}: WeChat sent a malformed answer ({})", clean(&err.to_string())))
}

/// The largest mini-program code image taken from WeChat.
const MAX_IMAGE_BYTES: usize = 1024 * 1024;

/// `getwxacodeunlimit`'s answer: a PNG, or JSON with an errcode.
fn interpret_image(body: &[u8]) -> Result<Vec<u8>, WechatError> {
    if body.starts_with(b"\x89PNG\r\n\x1a\n") || body.starts_with(b"\xff\xd8\xff") {
        return Ok(body.to_vec());
    }
    #[derive(Deserialize)]
    struct Reply {
        #[serde(default)]
        errcode: Option<serde_json::Value>,
        #[serde(default)]
        errmsg: Option<String>,
    }
    let reply: Reply = serde_json::from_slice(body).map_err(|e| malformed("getwxacodeunlimit", &e))?;
    let rid = reply.errmsg.as_deref().and_then(request_id);
    match errcode(reply.errcode.as_ref())? {
        -1 => Err(WechatError::Busy { rid }),
        45011 | 45009 => Err(WechatError::RateLimited { rid }),
        code @ (40001 | 40014 | 42001) => Err(WechatError::AccessTokenRejected { errcode: code, rid }),
        other => Err(WechatError::Upstream(format!("getwxacodeunlimit: WeChat errcode {other}{}", rid_suffix(&rid)))),
    }
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
    let reply: Reply = serde_json::from_slice(body).map_err(|e| malformed("getuserphonenumber", &e))?;
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
    fn every_failure_has_its_errcode_label() {
        let rid = || Some("r".to_owned());
        for (error, label) in [
            (WechatError::InvalidCode { rid: rid() }, "40029"),
            (WechatError::CodeUsed { rid: rid() }, "40163"),
            (WechatError::RateLimited { rid: rid() }, "45011"),
            (WechatError::UserBlocked { rid: rid() }, "40226"),
            (WechatError::Busy { rid: rid() }, "-1"),
            (WechatError::AccessTokenRejected { errcode: 42001, rid: rid() }, "42001"),
            (WechatError::Timeout, "timeout"),
            (WechatError::Transport("refused".into()), "transport"),
            (WechatError::Unavailable { reason: "open", retry_after: Duration::from_secs(1) }, "unavailable"),
            (interpret(br#"{"errcode":40125,"errmsg":"invalid appsecret, rid: x"}"#).unwrap_err(), "40125"),
            (interpret(br#"{"errcode":-1001,"errmsg":"new"}"#).unwrap_err(), "-1001"),
            (interpret(br#"{"openid":""}"#).unwrap_err(), "other"),
        ] {
            assert_eq!(error.errcode_label(), label, "{error:?}");
        }
    }

    #[test]
    fn quoted_text_is_cut_and_its_control_characters_escaped() {
        assert_eq!(clean("ok\r\nX-Injected: 1\u{0}"), "ok\\r\\nX-Injected: 1\\u{0}");
        let long = "界".repeat(500);
        let cut = clean(&long);
        assert_eq!(cut.chars().count(), MAX_QUOTED_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(clean(&"a".repeat(MAX_QUOTED_CHARS)), "a".repeat(MAX_QUOTED_CHARS));
    }

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
        assert!(matches!(interpret(b"<html>"), Err(WechatError::Transport(_))));
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
