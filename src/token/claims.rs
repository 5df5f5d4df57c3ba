//! What an access token says, and signing one.

use std::fmt;

use super::{TokenError, Tokens};
use crate::domain::{Identity, SigningAlg, User};
use serde::{Deserialize, Serialize};

/// Claims of a wxauth access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer URL.
    pub iss: String,
    /// User id.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Not before (Unix seconds).
    pub nbf: i64,
    /// Expires (Unix seconds).
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
    /// Mini-program AppID.
    pub appid: String,
    /// User's openid within `appid`.
    pub openid: String,
    /// User's unionid, when WeChat has sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
    /// The session (login) the token belongs to: the `id` of `GET /v1/me/sessions`. Absent
    /// from tokens issued before sessions existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The user's roles, sorted; absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The user's custom claims, at the top level beside the others (their names are never
    /// those above: [`crate::domain::RESERVED_CLAIMS`]).
    #[serde(flatten)]
    pub custom: serde_json::Map<String, serde_json::Value>,
}

/// A freshly signed token. `Debug` leaves the token out: it is a credential.
#[derive(Clone)]
pub struct IssuedToken {
    /// The compact JWS.
    pub token: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
    /// The algorithm it was signed with.
    pub alg: SigningAlg,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken").field("token", &"<redacted>").field("expires_in", &self.expires_in).finish()
    }
}

impl Tokens {
    /// Signs an access token for `user`, logged in through `identity` in session `sid`,
    /// with the newest key.
    pub fn issue(&self, user: &User, identity: &Identity, sid: uuid::Uuid) -> Result<IssuedToken, TokenError> {
        let ring = self.ring();
        let key = ring.signer();
        let now = self.clock.now().unix_timestamp();
        let ttl = self.settings.access_token_ttl.as_secs();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: user.id.to_string(),
            aud: self.settings.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + i64::try_from(ttl).unwrap_or(i64::MAX),
            jti: uuid::Uuid::new_v4().to_string(),
            appid: identity.appid.clone(),
            openid: identity.openid.clone(),
            unionid: user.unionid.clone(),
            sid: Some(sid.to_string()),
            roles: user.controls.roles.clone(),
            custom: user.controls.claims.as_map().clone(),
        };
        let token = key.signer.sign(&claims)?;
        Ok(IssuedToken { token, expires_in: ttl, alg: key.alg })
    }
}
