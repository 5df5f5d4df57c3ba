//! `GET /.well-known/jwks.json` and `GET /.well-known/openid-configuration`.

use std::sync::Arc;

use bytes::Bytes;
use poem::{IntoResponse, Response, http::header};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    payload::{Json, Payload},
    registry::{MetaSchemaRef, Registry},
    types::Type,
};

use super::ApiTags;
use crate::auth::Auth;

const CACHE: &str = "public, max-age=300";

/// A public key (RFC 7517). EC keys have `crv`, `x`, `y`; Ed25519 keys `crv`, `x`; RSA
/// keys `n`, `e`.
#[derive(Debug, Object)]
pub struct JwkDoc {
    /// Key type: `EC`, `OKP` or `RSA`.
    pub kty: String,
    /// RFC 7638 SHA-256 thumbprint; matches the token header's `kid`.
    pub kid: String,
    /// Algorithm: `ES256`, `EdDSA` or `RS256`.
    pub alg: String,
    /// Always `sig`.
    #[oai(rename = "use")]
    pub use_: String,
    /// Curve (`P-256`, `Ed25519`).
    pub crv: Option<String>,
    /// Public point x coordinate / Ed25519 public key (base64url).
    pub x: Option<String>,
    /// Public point y coordinate (base64url).
    pub y: Option<String>,
    /// RSA modulus (base64url).
    pub n: Option<String>,
    /// RSA exponent (base64url).
    pub e: Option<String>,
}

/// JWK Set (RFC 7517 section 5): every key that may have signed a live token.
#[derive(Debug, Object)]
pub struct JwkSetDoc {
    /// The keys.
    pub keys: Vec<JwkDoc>,
}

/// The JWK Set, serialized once per key-ring load and sent as stored.
pub struct JwksBody(Bytes);

impl Payload for JwksBody {
    const CONTENT_TYPE: &'static str = "application/jwk-set+json";

    fn schema_ref() -> MetaSchemaRef {
        JwkSetDoc::schema_ref()
    }

    fn register(registry: &mut Registry) {
        JwkSetDoc::register(registry);
    }
}

impl IntoResponse for JwksBody {
    fn into_response(self) -> Response {
        Response::builder().header(header::CONTENT_TYPE, Self::CONTENT_TYPE).body(self.0)
    }
}

/// JWKS answer.
#[derive(ApiResponse)]
pub enum JwksResponse {
    /// The key set.
    #[oai(status = 200)]
    Ok(
        JwksBody,
        /// Verifiers may cache the set for five minutes.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// OpenID Provider metadata (the subset that lets verifiers find the keys).
#[derive(Debug, Object)]
pub struct DiscoveryDoc {
    /// Issuer URL; equals the tokens' `iss`.
    pub issuer: String,
    /// URL of the JWK Set.
    pub jwks_uri: String,
    /// Signing algorithms of the published keys.
    pub id_token_signing_alg_values_supported: Vec<String>,
    /// Always `["public"]`.
    pub subject_types_supported: Vec<String>,
    /// `["code"]` when an official account or website is served (the browser login's
    /// authorization-code flow); else `["token"]`: tokens come from `POST /v1/login`.
    pub response_types_supported: Vec<String>,
    /// `GET /v1/oauth/wechat/authorize`, when a browser app is served.
    #[oai(skip_serializing_if_is_none)]
    pub authorization_endpoint: Option<String>,
    /// `POST /v1/token`, when a browser app is served.
    #[oai(skip_serializing_if_is_none)]
    pub token_endpoint: Option<String>,
    /// `["authorization_code"]`, when a browser app is served.
    #[oai(skip_serializing_if_is_none)]
    pub grant_types_supported: Option<Vec<String>>,
    /// `["S256"]` (PKCE is required), when a browser app is served.
    #[oai(skip_serializing_if_is_none)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// Claims in wxauth tokens (custom claims an operator set come on top).
    pub claims_supported: Vec<String>,
    /// `POST /v1/token/introspect` (RFC 7662).
    pub introspection_endpoint: String,
    /// Always `["client_secret_basic"]` (RFC 8414).
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
}

/// Discovery answer.
#[derive(ApiResponse)]
pub enum DiscoveryResponse {
    /// The metadata.
    #[oai(status = 200)]
    Ok(
        Json<DiscoveryDoc>,
        /// Cacheable for five minutes.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// Key publication.
pub struct KeysApi {
    /// The service.
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::Keys")]
impl KeysApi {
    /// Public signing keys (JWKS)
    ///
    /// Verify wxauth tokens offline with these keys: pick the key whose `kid` matches the
    /// token header and pin the algorithm to its `alg`.
    #[oai(path = "/.well-known/jwks.json", method = "get", operation_id = "jwks")]
    async fn jwks(&self) -> JwksResponse {
        JwksResponse::Ok(JwksBody(self.auth.tokens().jwks()), CACHE.into())
    }

    /// Discovery document
    ///
    /// Lets standard verifier libraries find the JWKS from the issuer URL alone.
    #[oai(path = "/.well-known/openid-configuration", method = "get", operation_id = "discovery")]
    async fn discovery(&self) -> DiscoveryResponse {
        let tokens = self.auth.tokens();
        let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let browser = self.auth.app_kinds().values().any(|k| k.is_browser());
        let issuer = tokens.issuer();
        let when_browser = |value: String| browser.then_some(value);
        DiscoveryResponse::Ok(
            Json(DiscoveryDoc {
                issuer: tokens.issuer().to_owned(),
                jwks_uri: format!("{}/.well-known/jwks.json", tokens.issuer()),
                id_token_signing_alg_values_supported: tokens.algorithms().iter().map(|a| a.to_string()).collect(),
                subject_types_supported: strings(&["public"]),
                response_types_supported: strings(if browser { &["code"] } else { &["token"] }),
                authorization_endpoint: when_browser(format!("{issuer}/v1/oauth/wechat/authorize")),
                token_endpoint: when_browser(format!("{issuer}/v1/token")),
                grant_types_supported: browser.then(|| strings(&["authorization_code"])),
                code_challenge_methods_supported: browser.then(|| strings(&["S256"])),
                claims_supported: strings(&[
                    "iss", "sub", "aud", "iat", "nbf", "exp", "jti", "appid", "openid", "unionid", "sid", "roles",
                ]),
                introspection_endpoint: format!("{}/v1/token/introspect", tokens.issuer()),
                introspection_endpoint_auth_methods_supported: strings(&["client_secret_basic"]),
            }),
            CACHE.into(),
        )
    }
}
