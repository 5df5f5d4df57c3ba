//! `POST /v1/token/introspect` (RFC 7662).

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::STANDARD};
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Form, payload::Json};
use serde::Deserialize;

use super::{ApiTags, NO_STORE, error::IntrospectError};
use crate::auth::{Auth, Introspection, Introspector};

/// An introspection request (`application/x-www-form-urlencoded`, RFC 7662 section 2.1).
#[derive(Debug, Object, Deserialize)]
pub struct IntrospectRequest {
    /// The access token to ask about.
    pub token: String,
    /// `access_token` or `refresh_token`: a hint only. Only access tokens can be active; a
    /// refresh token (or anything else) answers `{"active": false}`.
    pub token_type_hint: Option<String>,
}

/// What introspection says (RFC 7662 section 2.2). An inactive token gets
/// `{"active": false}` and nothing else, whatever the reason.
#[derive(Debug, Object)]
pub struct IntrospectBody {
    /// Whether the token works now: signature, times, user present and not banned, and its
    /// session live (no logout, logout-all, ended session, ban, unbind or removal since).
    pub active: bool,
    /// `Bearer`.
    #[oai(skip_serializing_if_is_none)]
    pub token_type: Option<String>,
    /// The user id.
    #[oai(skip_serializing_if_is_none)]
    pub sub: Option<String>,
    /// The issuer.
    #[oai(skip_serializing_if_is_none)]
    pub iss: Option<String>,
    /// The audience.
    #[oai(skip_serializing_if_is_none)]
    pub aud: Option<String>,
    /// Expiry (Unix seconds).
    #[oai(skip_serializing_if_is_none)]
    pub exp: Option<i64>,
    /// Issue time (Unix seconds).
    #[oai(skip_serializing_if_is_none)]
    pub iat: Option<i64>,
    /// Not before (Unix seconds).
    #[oai(skip_serializing_if_is_none)]
    pub nbf: Option<i64>,
    /// The token's id.
    #[oai(skip_serializing_if_is_none)]
    pub jti: Option<String>,
    /// The session the token belongs to.
    #[oai(skip_serializing_if_is_none)]
    pub sid: Option<String>,
    /// The AppID of the login.
    #[oai(skip_serializing_if_is_none)]
    pub appid: Option<String>,
    /// The openid of the login.
    #[oai(skip_serializing_if_is_none)]
    pub openid: Option<String>,
    /// The unionid, when known.
    #[oai(skip_serializing_if_is_none)]
    pub unionid: Option<String>,
    /// The user's roles as the token carries them.
    #[oai(skip_serializing_if_is_none)]
    pub roles: Option<Vec<String>>,
}

impl From<Introspection> for IntrospectBody {
    fn from(introspection: Introspection) -> Self {
        let inactive = Self {
            active: false,
            token_type: None,
            sub: None,
            iss: None,
            aud: None,
            exp: None,
            iat: None,
            nbf: None,
            jti: None,
            sid: None,
            appid: None,
            openid: None,
            unionid: None,
            roles: None,
        };
        match introspection {
            Introspection::Inactive => inactive,
            Introspection::Active(c) => Self {
                active: true,
                token_type: Some("Bearer".into()),
                sub: Some(c.sub),
                iss: Some(c.iss),
                aud: Some(c.aud),
                exp: Some(c.exp),
                iat: Some(c.iat),
                nbf: Some(c.nbf),
                jti: Some(c.jti),
                sid: c.sid,
                appid: Some(c.appid),
                openid: Some(c.openid),
                unionid: c.unionid,
                roles: (!c.roles.is_empty()).then_some(c.roles),
            },
        }
    }
}

/// Answer of `POST /v1/token/introspect`.
#[derive(Debug, ApiResponse)]
pub enum IntrospectResponse {
    /// What the token is; `{"active": false}` for any token that does not work.
    #[oai(status = 200)]
    Ok(
        Json<IntrospectBody>,
        /// The answer is about now: never cached.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// The credentials of an `Authorization` header: `Basic` client id and secret, or a
/// `Bearer` admin token.
enum Credentials {
    Basic(String, String),
    Bearer(String),
}

impl Credentials {
    fn of(headers: &poem::http::HeaderMap) -> Option<Self> {
        let value = headers.get(poem::http::header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, rest) = value.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(Self::Bearer(rest.trim().to_owned()));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = String::from_utf8(STANDARD.decode(rest.trim()).ok()?).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        Some(Self::Basic(id.to_owned(), secret.to_owned()))
    }

    fn caller(this: Option<&Self>) -> Introspector<'_> {
        match this {
            None => Introspector::Nobody,
            Some(Self::Basic(id, secret)) => Introspector::Client { id, secret },
            Some(Self::Bearer(token)) => Introspector::AdminToken(token),
        }
    }
}

/// Introspection.
pub struct IntrospectApi {
    /// The service.
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::Keys")]
impl IntrospectApi {
    /// Introspect an access token
    ///
    /// RFC 7662: tells a service whether an access token works now, for one that must not
    /// wait for a revoked token to expire. Authenticate as one of `[[introspection_clients]]`
    /// with `Authorization: Basic base64(client_id:secret)`, or with an admin token
    /// (`wxauth admin-tokens create`, either role) as `Authorization: Bearer wxa_...`; send
    /// `application/x-www-form-urlencoded` `token=...`. A token is inactive once its user is
    /// banned, removed or unbound, or its session ended (logout, logout-all, an ended
    /// session, a reuse), as well as when it is not valid at all.
    #[oai(path = "/v1/token/introspect", method = "post", operation_id = "introspect")]
    async fn introspect(
        &self,
        body: Form<IntrospectRequest>,
        headers: &poem::http::HeaderMap,
    ) -> Result<IntrospectResponse, IntrospectError> {
        let credentials = Credentials::of(headers);
        let introspection = self.auth.introspect(Credentials::caller(credentials.as_ref()), &body.0.token).await?;
        Ok(IntrospectResponse::Ok(Json(introspection.into()), NO_STORE.into()))
    }
}
