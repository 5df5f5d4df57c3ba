//! Browser logins of official accounts (公众号 web pages) and websites (QR login): the OAuth
//! 2.0 authorization-code flow with PKCE (RFC 7636), by the security BCP's rules.
//!
//! 1. `authorize`: the client's `redirect_uri` must be on the app's list exactly; a
//!    pending authorization is stored (a grant) under a random `state` sent to WeChat, and
//!    the browser gets a cookie whose hash the grant keeps: the callback must come back to
//!    the browser that started it (no login CSRF).
//! 2. `callback`: WeChat's code is exchanged, and the browser goes back to the client with a
//!    one-time wxauth code (60 s) and the client's own `state`; never a token in a URL.
//! 3. `token`: the client trades the code, its `redirect_uri` and the PKCE verifier
//!    (S256 only) for the usual access and refresh tokens. The login decision (create,
//!    join by unionid, bind ticket, ban) is taken here, as `/v1/login` takes it.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use url::Url;

use super::{Auth, Internal, LoginFailure, LoginOutcome, Peer, secret, secret_id};
use crate::{
    config::AppKind,
    domain::{Dated, JsCode, Profile, WechatSession},
    store::grants::{Grant, GrantKind},
    wechat::{OauthGrant, WechatClient, WechatError},
};

/// How long a browser may take at WeChat's page, in seconds.
pub const AUTHORIZATION_SECS: i64 = 600;
/// How long a wxauth authorization code works, in seconds.
pub const CODE_SECS: i64 = 60;
/// The prefix of a wxauth authorization code.
pub const CODE_PREFIX: &str = "ac_";
/// The prefix of the cookie that binds an authorization to its browser; the `state` sent to
/// WeChat follows it, so that two tabs logging in at once do not overwrite each other.
pub const COOKIE_PREFIX: &str = "wxauth_oauth_";
/// Where WeChat sends the browser back.
pub const CALLBACK_PATH: &str = "/v1/oauth/wechat/callback";
/// The longest client `state` kept.
const MAX_STATE: usize = 512;

/// Why a browser-login step failed before anything could be sent back to the client.
#[derive(Debug, thiserror::Error)]
pub enum BrowserFailure {
    /// A parameter is missing or malformed, the `redirect_uri` is not on the app's list,
    /// or the callback's `state` or cookie do not match a pending authorization.
    #[error("{0}")]
    InvalidRequest(String),
    /// The `appid` names no browser app of this server.
    #[error("unknown appid {0:?}; this server's browser apps are: {1}")]
    UnknownApp(String, String),
    /// `POST /v1/token`: the code is unknown, spent or expired, or the verifier or
    /// `redirect_uri` does not match it.
    #[error("{0}")]
    InvalidGrant(&'static str),
    /// `POST /v1/token` with a `grant_type` other than `authorization_code`.
    #[error("grant_type must be authorization_code")]
    UnsupportedGrantType,
    /// The login the code stands for was refused (not bound, banned, ...).
    #[error(transparent)]
    Login(#[from] LoginFailure),
    /// Too many browser logins started from this address (`WXAUTH_RATE_LIMIT_PER_MINUTE`).
    #[error("too many browser logins from this address; retry in {retry_after} s")]
    TooManyRequests {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The server failed.
    #[error(transparent)]
    Internal(#[from] Internal),
}

impl From<crate::store::StoreError> for BrowserFailure {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Internal(e.into())
    }
}

/// `GET /v1/oauth/wechat/authorize`'s parameters, unchecked.
#[derive(Debug, Default)]
pub struct AuthorizeRequest<'a> {
    /// The official account's or website's AppID.
    pub appid: Option<&'a str>,
    /// Where the browser returns; exactly one of the app's `redirect_uris`.
    pub redirect_uri: Option<&'a str>,
    /// The client's own state, returned as it came.
    pub state: Option<&'a str>,
    /// BASE64URL(SHA-256(code_verifier)).
    pub code_challenge: Option<&'a str>,
    /// Must be `S256`.
    pub code_challenge_method: Option<&'a str>,
    /// `snsapi_base` (default) or `snsapi_userinfo` for official accounts; `snsapi_login`
    /// for websites.
    pub scope: Option<&'a str>,
}

/// Where to send the browser, and the cookie that binds the authorization to it (no
/// `Debug`: the cookie is a secret).
pub struct Authorization {
    /// WeChat's authorize or QR page.
    pub location: String,
    /// `Set-Cookie`.
    pub cookie: String,
}

/// Where the callback sends the browser: back to the client, with a code or an error (no
/// `Debug`: the code is a credential).
pub struct CallbackOutcome {
    /// The client's `redirect_uri` with `code` and `state`, or `error` and `state`.
    pub location: String,
    /// `Set-Cookie` that removes the authorization's cookie.
    pub clear_cookie: String,
}

/// `POST /v1/token`'s parameters, unchecked (no `Debug`: the code and verifier are
/// credentials).
#[derive(Default)]
pub struct TokenRequest<'a> {
    /// Must be `authorization_code`.
    pub grant_type: Option<&'a str>,
    /// The wxauth code from the redirect.
    pub code: Option<&'a str>,
    /// The same `redirect_uri` as at authorize.
    pub redirect_uri: Option<&'a str>,
    /// The PKCE verifier.
    pub code_verifier: Option<&'a str>,
}

/// A browser at WeChat's page, as stored until the callback.
#[derive(Serialize, Deserialize)]
struct Pending {
    appid: String,
    redirect_uri: String,
    state: Option<String>,
    challenge: String,
    scope: String,
    /// SHA-256 of the browser's cookie, base64url.
    browser: String,
}

/// What a wxauth code stands for until `POST /v1/token`.
#[derive(Serialize, Deserialize)]
struct CodeGrant {
    appid: String,
    openid: String,
    unionid: Option<String>,
    redirect_uri: String,
    challenge: String,
    nickname: Option<String>,
    avatar_url: Option<String>,
}

impl Auth {
    /// Starts a browser login: checks the request against the app's settings, keeps it,
    /// and answers where to send the browser (WeChat's page) and the cookie to set.
    pub async fn authorize(&self, req: AuthorizeRequest<'_>, peer: &Peer<'_>) -> Result<Authorization, BrowserFailure> {
        let invalid = |m: &str| BrowserFailure::InvalidRequest(m.to_owned());
        // Each start stores a grant for ten minutes: an address may not start them without end.
        if let Some(addr) = peer.addr {
            let attempts = &self.parts.attempts;
            attempts.check_request(attempts.client_ip(addr, &peer.forwarded_for)).map_err(|wait| {
                BrowserFailure::TooManyRequests { retry_after: (wait.as_secs_f64().ceil() as u64).max(1) }
            })?;
        }
        let app = self.browser_app(req.appid)?;
        let redirect_uri = req.redirect_uri.ok_or_else(|| invalid("redirect_uri is required"))?;
        if !self.parts.browser_redirects.get(app.appid()).is_some_and(|list| list.iter().any(|u| u == redirect_uri)) {
            return Err(invalid(
                "redirect_uri is not one of this app's redirect_uris (compared exactly); the browser is not sent back",
            ));
        }
        let challenge = req.code_challenge.ok_or_else(|| invalid("code_challenge is required (PKCE)"))?;
        if !is_pkce_text(challenge) || challenge.len() != 43 {
            return Err(invalid("code_challenge must be BASE64URL(SHA-256(code_verifier)), 43 characters"));
        }
        if req.code_challenge_method != Some("S256") {
            return Err(invalid("code_challenge_method must be S256 (plain is not supported)"));
        }
        if let Some(state) = req.state
            && (state.len() > MAX_STATE || !state.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(invalid("state must be at most 512 visible ASCII characters"));
        }
        let scope = match (app.kind(), req.scope) {
            (AppKind::OfficialAccount, None) => "snsapi_base",
            (AppKind::OfficialAccount, Some(s @ ("snsapi_base" | "snsapi_userinfo"))) => s,
            (AppKind::Website, None | Some("snsapi_login")) => "snsapi_login",
            _ => {
                return Err(invalid(
                    "scope must be snsapi_base or snsapi_userinfo (official account), snsapi_login (website)",
                ));
            }
        };
        // WeChat takes a state of letters and digits, up to 128 bytes: 128 random bits in hex.
        let mut nonce = [0u8; 16];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| Internal::Randomness)?;
        let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let (browser_secret, browser_hash) = secret("")?;
        let pending = Pending {
            appid: app.appid().to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            state: req.state.map(str::to_owned),
            challenge: challenge.to_owned(),
            scope: scope.to_owned(),
            browser: URL_SAFE_NO_PAD.encode(browser_hash),
        };
        let now = self.parts.clock.now();
        let grant = Grant {
            kind: GrantKind::Authorization,
            payload: serde_json::to_string(&pending).map_err(corrupt)?,
            expires_at: now + time::Duration::seconds(AUTHORIZATION_SECS),
        };
        self.parts.store.put_grant(&secret_id(&nonce), &grant, now).await?;
        let issuer = self.parts.tokens.issuer();
        let page = if app.kind() == AppKind::Website { "connect/qrconnect" } else { "connect/oauth2/authorize" };
        let mut location = self.parts.open_url.join(page).map_err(|e| {
            Internal::Store(crate::store::StoreError::Corrupt(format!("WXAUTH_WECHAT_OPEN_URL + {page}: {e}")))
        })?;
        // WeChat checks the parameters in this order.
        location
            .query_pairs_mut()
            .append_pair("appid", app.appid())
            .append_pair("redirect_uri", &format!("{issuer}{CALLBACK_PATH}"))
            .append_pair("response_type", "code")
            .append_pair("scope", scope)
            .append_pair("state", &nonce);
        location.set_fragment(Some("wechat_redirect"));
        let cookie = cookie(issuer, &format!("{COOKIE_PREFIX}{nonce}"), &browser_secret, AUTHORIZATION_SECS);
        tracing::info!(appid = app.appid(), scope, "browser login started");
        Ok(Authorization { location: location.into(), cookie })
    }

    /// WeChat's callback: checks that it comes back to the browser that started the
    /// authorization (its cookie), exchanges WeChat's code, and answers where to send the
    /// browser: the client's `redirect_uri` with a one-time wxauth code, or with an error.
    pub async fn callback(
        &self,
        code: Option<&str>,
        state: Option<&str>,
        cookies: Option<&str>,
    ) -> Result<CallbackOutcome, BrowserFailure> {
        let invalid = |m: &str| BrowserFailure::InvalidRequest(m.to_owned());
        let nonce = state
            .filter(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| invalid("state is missing or is not one wxauth sent to WeChat"))?;
        let id = secret_id(nonce);
        let now = self.parts.clock.now();
        let unknown = || invalid("this browser login is unknown, already used or expired; start it again");
        let payload = self.parts.store.grant(&id, GrantKind::Authorization, now).await?.ok_or_else(unknown)?;
        let pending: Pending = serde_json::from_str(&payload).map_err(corrupt)?;
        let cookie_name = format!("{COOKIE_PREFIX}{nonce}");
        let presented = cookies.and_then(|header| {
            cookie::Cookie::split_parse(header.to_owned())
                .flatten()
                .find(|c| c.name() == cookie_name)
                .map(|c| c.value().to_owned())
        });
        let same_browser = presented.is_some_and(|value| {
            let hash = URL_SAFE_NO_PAD.encode(secret_id(&value));
            aws_lc_rs::constant_time::verify_slices_are_equal(hash.as_bytes(), pending.browser.as_bytes()).is_ok()
        });
        if !same_browser {
            tracing::warn!(
                appid = pending.appid,
                "browser login callback without the cookie of the browser that started it"
            );
            return Err(invalid(
                "this browser did not start this login (its cookie is missing or wrong); start it again",
            ));
        }
        // Spent now: a replayed callback finds nothing.
        self.parts.store.take_grant(&id, GrantKind::Authorization, now).await?.ok_or_else(unknown)?;
        let issuer = self.parts.tokens.issuer().to_owned();
        let clear_cookie = cookie(&issuer, &cookie_name, "", 0);
        let back = |pairs: &[(&str, &str)]| {
            let mut url =
                Url::parse(&pending.redirect_uri).map_err(|_| invalid("the stored redirect_uri is not a URL"))?;
            {
                let mut query = url.query_pairs_mut();
                for (k, v) in pairs {
                    query.append_pair(k, v);
                }
                if let Some(state) = &pending.state {
                    query.append_pair("state", state);
                }
            }
            Ok::<_, BrowserFailure>(CallbackOutcome { location: url.into(), clear_cookie: clear_cookie.clone() })
        };
        let Some(code) = code.filter(|c| !c.is_empty()) else {
            // WeChat comes back without a code when the person declines.
            return back(&[("error", "access_denied"), ("error_description", "the person did not allow the login")]);
        };
        let app = self.app(Some(&pending.appid)).map_err(|_| unknown())?;
        let Ok(code) = JsCode::parse(code) else {
            return back(&[("error", "invalid_request"), ("error_description", "WeChat's code is malformed")]);
        };
        let grant = match app.oauth_access_token(&code).await {
            Ok(grant) => grant,
            Err(e) => {
                tracing::warn!(appid = app.appid(), error = %e, "browser login: WeChat refused the exchange");
                let (error, description) = callback_error(&e);
                return back(&[("error", error), ("error_description", description)]);
            }
        };
        let (nickname, avatar_url) = self.web_profile(app, &grant, &pending.scope).await;
        let (text, code_id) = secret(CODE_PREFIX)?;
        let payload = CodeGrant {
            appid: pending.appid.clone(),
            openid: grant.session.openid,
            unionid: grant.session.unionid,
            redirect_uri: pending.redirect_uri.clone(),
            challenge: pending.challenge.clone(),
            nickname,
            avatar_url,
        };
        let grant = Grant {
            kind: GrantKind::Code,
            payload: serde_json::to_string(&payload).map_err(corrupt)?,
            expires_at: now + time::Duration::seconds(CODE_SECS),
        };
        self.parts.store.put_grant(&code_id, &grant, now).await?;
        back(&[("code", &text)])
    }

    /// `POST /v1/token` (authorization code): spends the code, checks the PKCE verifier
    /// and the `redirect_uri`, and logs the person in as `/v1/login` would.
    pub async fn token(&self, req: TokenRequest<'_>, peer: &Peer<'_>) -> Result<LoginOutcome, BrowserFailure> {
        let invalid = |m: &str| BrowserFailure::InvalidRequest(m.to_owned());
        if req.grant_type != Some("authorization_code") {
            return Err(match req.grant_type {
                None => invalid("grant_type is required (authorization_code)"),
                Some(_) => BrowserFailure::UnsupportedGrantType,
            });
        }
        let code = req.code.ok_or_else(|| invalid("code is required"))?;
        let redirect_uri = req.redirect_uri.ok_or_else(|| invalid("redirect_uri is required"))?;
        let verifier = req.code_verifier.ok_or_else(|| invalid("code_verifier is required (PKCE)"))?;
        if !(43..=128).contains(&verifier.len()) || !is_pkce_text(verifier) {
            return Err(invalid("code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~"));
        }
        let now = self.parts.clock.now();
        // Spent whatever follows: a code is tried once (RFC 6749 section 4.1.2).
        let payload = self.parts.store.take_grant(&secret_id(code), GrantKind::Code, now).await?;
        let payload = payload.ok_or(BrowserFailure::InvalidGrant("the code is unknown, already used or expired"))?;
        let grant: CodeGrant = serde_json::from_str(&payload).map_err(corrupt)?;
        if grant.redirect_uri != redirect_uri {
            return Err(BrowserFailure::InvalidGrant("redirect_uri is not the one the code was issued for"));
        }
        let computed = URL_SAFE_NO_PAD.encode(secret_id(verifier));
        if aws_lc_rs::constant_time::verify_slices_are_equal(computed.as_bytes(), grant.challenge.as_bytes()).is_err() {
            tracing::warn!(appid = grant.appid, "browser login: the PKCE verifier does not match the challenge");
            return Err(BrowserFailure::InvalidGrant("code_verifier does not match the code_challenge"));
        }
        let app = self
            .app(Some(&grant.appid))
            .map_err(|_| BrowserFailure::InvalidGrant("the code's app is no longer served"))?;
        let session = WechatSession { openid: grant.openid, unionid: grant.unionid, session_key: None };
        let outcome = self.login_session(app, session, None, peer).await?;
        if let Some(nickname) = grant.nickname {
            let profile = Profile {
                nickname,
                avatar_url: grant.avatar_url.unwrap_or_default(),
                gender: 0,
                country: String::new(),
                province: String::new(),
                city: String::new(),
                language: "zh_CN".into(),
            };
            // The login is done (its tokens exist): a profile that cannot be kept costs the
            // profile, not the login.
            let kept = self.parts.store.set_profile(&outcome.user.id, Dated { value: profile, at: now }).await;
            if let Err(e) = kept {
                tracing::warn!(user_id = %outcome.user.id, error = %e, "browser login: the WeChat profile was not kept");
            }
        }
        Ok(outcome)
    }

    /// The browser app `appid` names.
    fn browser_app(&self, appid: Option<&str>) -> Result<&WechatClient, BrowserFailure> {
        let browser = || self.parts.apps.iter().filter(|a| a.kind().is_browser());
        let known = || browser().map(WechatClient::appid).collect::<Vec<_>>().join(", ");
        let appid = appid.ok_or_else(|| BrowserFailure::InvalidRequest("appid is required".into()))?;
        browser().find(|a| a.appid() == appid).ok_or_else(|| BrowserFailure::UnknownApp(appid.into(), known()))
    }

    /// The nickname and avatar, when the person granted them; a failure costs the
    /// profile, not the login.
    async fn web_profile(
        &self,
        app: &WechatClient,
        grant: &OauthGrant,
        scope: &str,
    ) -> (Option<String>, Option<String>) {
        if !matches!(scope, "snsapi_userinfo" | "snsapi_login") {
            return (None, None);
        }
        match app.userinfo(grant).await {
            Ok(profile) => (profile.nickname, profile.avatar_url),
            Err(e) => {
                tracing::warn!(appid = app.appid(), error = %e, "browser login: no profile from /sns/userinfo");
                (None, None)
            }
        }
    }
}

/// What the client is told of a refused exchange (RFC 6749 section 4.1.2.1).
fn callback_error(e: &WechatError) -> (&'static str, &'static str) {
    match e {
        WechatError::SnapshotUser { .. } => {
            ("access_denied", "the visitor only saw a snapshot page; open it in WeChat")
        }
        WechatError::UserBlocked { .. } => ("access_denied", "WeChat blocked this person's login"),
        WechatError::Busy { .. }
        | WechatError::RateLimited { .. }
        | WechatError::Timeout
        | WechatError::Unavailable { .. }
        | WechatError::Transport(_) => ("temporarily_unavailable", "WeChat could not be asked; try again"),
        WechatError::InvalidCode { .. } | WechatError::CodeUsed { .. } => {
            ("access_denied", "WeChat refused the code (used or expired); start the login again")
        }
        WechatError::AccessTokenRejected { .. } | WechatError::Upstream(_) => {
            ("server_error", "WeChat refused the exchange")
        }
    }
}

/// PKCE's character set (RFC 7636 section 4.1).
fn is_pkce_text(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The authorization's cookie: only for the callback, not for scripts, sent on WeChat's
/// top-level redirect back (`Lax`), `Secure` when wxauth is served over https.
fn cookie(issuer: &str, name: &str, value: &str, max_age: i64) -> String {
    let secure = if issuer.starts_with("https://") { "; Secure" } else { "" };
    format!("{name}={value}; Path={CALLBACK_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
}

fn corrupt(e: serde_json::Error) -> Internal {
    Internal::Store(crate::store::StoreError::Corrupt(format!("a browser login's grant: {e}")))
}
