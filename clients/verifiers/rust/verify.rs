//! Verifies wxauth access tokens offline with jsonwebtoken: signature, issuer, audience,
//! expiry and type (at+jwt), with the JWKS fetched from wxauth and fetched again when a
//! token names a key id it does not know (after a key rotation).
//! Cargo.toml: jsonwebtoken = "11" (feature aws_lc_rs or rust_crypto), reqwest (json), serde.

use std::{
    sync::RwLock,
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{JwkSet, KeyAlgorithm},
};
use serde::Deserialize;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The claims your service uses.
#[derive(Debug, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    pub appid: String,
    pub openid: String,
}

pub struct WxauthVerifier {
    issuer: String,
    audience: String,
    jwks: RwLock<(JwkSet, Instant)>,
    /// How soon an unknown kid may trigger another fetch (30 s is a good default).
    refetch_after: Duration,
}

impl WxauthVerifier {
    pub async fn new(issuer: &str, audience: &str, refetch_after: Duration) -> Result<Self, Error> {
        let jwks = fetch(issuer).await?;
        Ok(Self {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks: RwLock::new((jwks, Instant::now())),
            refetch_after,
        })
    }

    pub async fn verify(&self, token: &str) -> Result<Claims, Error> {
        let header = jsonwebtoken::decode_header(token)?;
        let typ = header.typ.as_deref().unwrap_or_default().to_ascii_lowercase();
        if typ != "at+jwt" && typ != "application/at+jwt" {
            return Err("not an access token (typ is not at+jwt)".into());
        }
        let kid = header.kid.ok_or("the token has no kid")?;
        let known = |set: &JwkSet| set.find(&kid).cloned();
        let cached = { self.jwks.read().unwrap().clone() };
        let jwk = match known(&cached.0) {
            Some(jwk) => jwk,
            None if cached.1.elapsed() >= self.refetch_after => {
                let fresh = fetch(&self.issuer).await?;
                let jwk = known(&fresh);
                *self.jwks.write().unwrap() = (fresh, Instant::now());
                jwk.ok_or("unknown kid")?
            }
            None => return Err("unknown kid".into()),
        };
        // The algorithm comes from our key, never from the token's header.
        let alg = match jwk.common.key_algorithm {
            Some(KeyAlgorithm::ES256) => Algorithm::ES256,
            Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
            Some(KeyAlgorithm::RS256) => Algorithm::RS256,
            _ => return Err("unsupported key".into()),
        };
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        Ok(jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_jwk(&jwk)?, &validation)?.claims)
    }
}

async fn fetch(issuer: &str) -> Result<JwkSet, Error> {
    let url = format!("{issuer}/.well-known/jwks.json");
    Ok(reqwest::get(url).await?.error_for_status()?.json().await?)
}
