//! The access token of WeChat's server APIs, from `POST {base}/cgi-bin/stable_token`.
//!
//! `stable_token`, never the older `GET /cgi-bin/token`: the older one hands out a new
//! token on every call and invalidates the previous one, so two processes (or a restart)
//! knock each other's tokens out (errcode 40001). The token is cached until shortly before
//! it expires, and refreshed by one caller at a time however many wait: the others find the
//! fresh token when their turn comes. The login path never uses it.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use time::OffsetDateTime;
use url::Url;

use super::{Upstream, WechatError, errcode, malformed, request_id, rid_suffix};
use crate::{clock::Clock, config::WechatApp};

/// A token is refreshed this long before WeChat says it expires, so that no request sets
/// out with a token that expires on the way.
const MARGIN: Duration = Duration::from_secs(60);

/// A cached token.
struct Cached {
    token: SecretString,
    /// On the service's clock, so that tests can move past it.
    good_until: OffsetDateTime,
}

/// One app's access token.
pub(super) struct AccessToken {
    url: Url,
    /// The request body; it holds the AppSecret.
    body: SecretString,
    current: Mutex<Option<Cached>>,
    /// Held while a refresh is in flight.
    refreshing: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
    clock: Clock,
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    errcode: Option<serde_json::Value>,
    #[serde(default)]
    errmsg: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl AccessToken {
    pub(super) fn new(base: &Url, app: &WechatApp, clock: Clock) -> Result<Self, WechatError> {
        let mut url = base.clone();
        url.path_segments_mut()
            .map_err(|()| WechatError::Upstream("WeChat base URL cannot have a path".into()))?
            .pop_if_empty()
            .extend(["cgi-bin", "stable_token"]);
        let body = serde_json::json!({
            "grant_type": "client_credential",
            "appid": app.appid,
            "secret": app.secret.expose_secret(),
            "force_refresh": false,
        });
        Ok(Self {
            url,
            body: SecretString::from(body.to_string()),
            current: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
            clock,
        })
    }

    fn cached(&self) -> Option<SecretString> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now();
        current.as_ref().filter(|c| now < c.good_until).map(|c| c.token.clone())
    }

    /// A token that is good for at least [`MARGIN`] more, fetched before `deadline` if
    /// none is cached.
    pub(super) async fn get(&self, upstream: &Upstream, deadline: Instant) -> Result<SecretString, WechatError> {
        if let Some(token) = self.cached() {
            return Ok(token);
        }
        let _turn = self.refreshing.lock().await;
        // Whoever refreshed while this caller waited has left a fresh token.
        if let Some(token) = self.cached() {
            return Ok(token);
        }
        let (token, expires_in) = self.fetch(upstream, deadline).await?;
        let good_until = self.clock.now() + Duration::from_secs(expires_in).saturating_sub(MARGIN);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(Cached { token: token.clone(), good_until });
        Ok(token)
    }

    /// Forgets `token` after WeChat refused it (40001, 40014, 42001), unless a newer one
    /// replaced it meanwhile.
    pub(super) fn invalidate(&self, token: &SecretString) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|c| c.token.expose_secret() == token.expose_secret()) {
            *current = None;
        }
    }

    /// How many times a token was fetched from WeChat.
    pub(super) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    async fn fetch(&self, upstream: &Upstream, deadline: Instant) -> Result<(SecretString, u64), WechatError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let request = upstream
            .http()
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.body.expose_secret().to_owned());
        upstream.call("stable_token", request, deadline, interpret).await
    }
}

/// Turns `stable_token`'s body into a token and its lifetime in seconds.
fn interpret(body: &[u8]) -> Result<(SecretString, u64), WechatError> {
    let reply: Reply = serde_json::from_slice(body).map_err(|e| malformed("stable_token", &e))?;
    let rid = reply.errmsg.as_deref().and_then(request_id);
    match errcode(reply.errcode.as_ref())? {
        0 => {}
        45011 => return Err(WechatError::RateLimited { rid }),
        -1 => return Err(WechatError::Busy { rid }),
        other => {
            if matches!(other, 40013 | 40125 | 40243) {
                tracing::error!(errcode = other, "WeChat refused this server's AppID or AppSecret for stable_token");
            }
            return Err(WechatError::Upstream(format!("stable_token: WeChat errcode {other}{}", rid_suffix(&rid))));
        }
    }
    match (reply.access_token, reply.expires_in) {
        (Some(token), Some(expires_in)) if !token.is_empty() && expires_in > 0 => {
            Ok((SecretString::from(token), expires_in))
        }
        _ => Err(WechatError::Upstream("stable_token: WeChat reported success without a token".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_token_answers_are_interpreted() {
        let (token, expires) = interpret(br#"{"access_token":"ACCESS_TOKEN","expires_in":7200}"#).unwrap();
        assert_eq!((token.expose_secret(), expires), ("ACCESS_TOKEN", 7200));
        assert_eq!(
            interpret(br#"{"errcode":45011,"errmsg":"api minute-quota reach limit, rid: r1"}"#).err(),
            Some(WechatError::RateLimited { rid: Some("r1".into()) })
        );
        assert!(
            matches!(interpret(br#"{"errcode":40125,"errmsg":"invalid appsecret"}"#), Err(WechatError::Upstream(m)) if m.contains("40125"))
        );
        assert!(matches!(interpret(br#"{"access_token":""}"#), Err(WechatError::Upstream(_))));
        assert!(matches!(interpret(b"<html>"), Err(WechatError::Transport(_))));
    }
}
