//! Access tokens: claims, signing with the key ring, verification, and the JWKS document.

pub mod keys;
mod ring;
mod signer;

pub use ring::{KeyInfo, list_keys, rotate};

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use bytes::Bytes;
use jsonwebtoken::{Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{
    config::TokenSettings,
    domain::{Identity, KeyMode, SigningAlg, User},
};
use ring::Ring;

/// The JOSE `typ` of access tokens (RFC 9068). Verification requires it, so nothing else
/// wxauth signs can pass as an access token.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// Why a presented token was refused. The client's fault, never the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not a JWT, or a header naming an algorithm wxauth never uses (including `none`).
    Malformed,
    /// The `kid` is missing or names no key in the ring.
    UnknownKey,
    /// `exp` is past, beyond the leeway.
    Expired,
    /// Bad signature, wrong algorithm, issuer or audience, a missing claim, or `nbf` ahead.
    Invalid,
    /// The token itself starts with `Bearer `: the header said `Bearer Bearer ...`.
    DoubledPrefix,
    /// Signed by this issuer but not an access token: its `typ` is not `at+jwt`.
    NotAccessToken,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "the token is not a well-formed JWT",
            Self::UnknownKey => "the token was not signed by a key of this issuer",
            Self::Expired => "the token has expired; log in again",
            Self::Invalid => "the token failed verification",
            Self::NotAccessToken => "the token is not an access token (its typ is not at+jwt); log in again",
            Self::DoubledPrefix => {
                "the Authorization header says 'Bearer Bearer ...': send the token after a single 'Bearer ' \
                 (in Swagger UI's Authorize dialog, paste the token alone)"
            }
        })
    }
}

/// Errors of the token module.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The keys directory or a key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// A file in the keys directory is not a usable private key.
    #[error("key file {path}: {reason}")]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key ring has no key for the configured algorithm.
    #[error(
        "no {alg} signing key in {dir} (WXAUTH_KEYS_DIR); create one with `wxauth keys rotate` \
         (WXAUTH_SIGNING_ALG={alg})"
    )]
    NoSigningKey {
        /// The keys directory.
        dir: PathBuf,
        /// The configured algorithm.
        alg: SigningAlg,
    },
    /// The ring mixes dev-mode and production keys in the wrong mode.
    #[error(
        "{kid} in {dir} (WXAUTH_KEYS_DIR) is a {key_mode} key and this is {run_mode}: dev mode signs \
         tokens for any code, so dev and production keys never share a ring; use another keys directory"
    )]
    ModeMismatch {
        /// The keys directory.
        dir: PathBuf,
        /// The offending key.
        kid: String,
        /// The key's mode.
        key_mode: KeyMode,
        /// `serve --dev` or `production`.
        run_mode: &'static str,
    },
    /// The crypto library failed to generate a key.
    #[error("key generation failed")]
    KeyGeneration,
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

impl TokenError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

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
}

/// A freshly signed token. `Debug` leaves the token out: it is a credential.
#[derive(Clone)]
pub struct IssuedToken {
    /// The compact JWS.
    pub token: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken").field("token", &"<redacted>").field("expires_in", &self.expires_in).finish()
    }
}

/// Issues and verifies access tokens; owns the key ring.
pub struct Tokens {
    settings: TokenSettings,
    issuer: String,
    mode: KeyMode,
    keys_dir: PathBuf,
    ring: RwLock<Arc<Ring>>,
}

impl Tokens {
    /// Loads the key ring from `keys_dir`. In dev mode a missing signing key of the
    /// configured algorithm is created; in production its absence is an error. Either mode
    /// refuses keys made by the other.
    pub fn open(settings: &TokenSettings, issuer: String, keys_dir: &Path, mode: KeyMode) -> Result<Self, TokenError> {
        // Pin the crypto backend explicitly: feature unification could otherwise leave
        // jsonwebtoken with none or two, which panics at the first signature.
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(&jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER);
        let mut keys = keys::load_dir(keys_dir)?;
        if mode == KeyMode::Dev && !keys.iter().any(|k| k.alg == settings.signing_alg) {
            let key = keys::generate(keys_dir, settings.signing_alg, KeyMode::Dev)?;
            tracing::info!(kid = %key.kid, alg = %key.alg, dir = %keys_dir.display(), "generated a signing key");
            keys.push(key);
        }
        let ring = Ring::new(keys, settings.signing_alg, keys_dir, mode)?;
        Ok(Self {
            settings: settings.clone(),
            issuer,
            mode,
            keys_dir: keys_dir.into(),
            ring: RwLock::new(Arc::new(ring)),
        })
    }

    /// Re-reads the keys directory (after `wxauth keys rotate`). On error the old ring stays.
    pub fn reload(&self) -> Result<(), TokenError> {
        let ring = Ring::new(keys::load_dir(&self.keys_dir)?, self.settings.signing_alg, &self.keys_dir, self.mode)?;
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
        Ok(())
    }

    fn ring(&self) -> Arc<Ring> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Signs an access token for `user`, logged in through `identity`, with the newest key.
    pub fn issue(&self, user: &User, identity: &Identity) -> Result<IssuedToken, TokenError> {
        let ring = self.ring();
        let key = &ring.keys[ring.signer];
        let now = OffsetDateTime::now_utc().unix_timestamp();
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
        };
        let token = key.signer.sign(&claims)?;
        Ok(IssuedToken { token, expires_in: ttl })
    }

    /// Verifies a token: the algorithm is pinned by the key its `kid` names (never by the
    /// header), and `iss`, `aud`, `sub` and `exp` must be present and right.
    pub fn verify(&self, token: &str) -> Result<Claims, Rejection> {
        if token.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("bearer ")) {
            return Err(Rejection::DoubledPrefix);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        let ring = self.ring();
        let key = header.kid.and_then(|kid| ring.keys.iter().find(|k| k.kid == kid)).ok_or(Rejection::UnknownKey)?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation(key.alg))
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => Rejection::Expired,
                _ => Rejection::Invalid,
            })?;
        // RFC 9068 section 4: `at+jwt`, or the same with the `application/` prefix. Checked
        // after the signature, so that the answer names the real problem of a forgery.
        let typ = header.typ.as_deref().map(|t| t.strip_prefix("application/").unwrap_or(t));
        if !typ.is_some_and(|t| t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP)) {
            return Err(Rejection::NotAccessToken);
        }
        Ok(claims)
    }

    /// Checks for one key. `set_issuer`/`set_audience` alone would accept a token without
    /// `iss`/`aud`, hence the required claims.
    fn validation(&self, alg: SigningAlg) -> Validation {
        let mut validation = Validation::new(alg.into());
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation
    }

    /// The JWK Set with every key in the ring, serialized when the ring was loaded.
    pub fn jwks(&self) -> Bytes {
        self.ring().jwks.clone()
    }

    /// Algorithms of the published keys, signing algorithm first.
    pub fn algorithms(&self) -> Vec<SigningAlg> {
        let ring = self.ring();
        let mut algs = vec![ring.keys[ring.signer].alg];
        for key in &ring.keys {
            if !algs.contains(&key.alg) {
                algs.push(key.alg);
            }
        }
        algs
    }

    /// The issuer URL.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::UserId;

    fn settings(alg: SigningAlg) -> TokenSettings {
        TokenSettings {
            issuer: None,
            audience: "wx123".into(),
            access_token_ttl: Duration::from_secs(900),
            refresh_token_ttl: Duration::from_secs(3600),
            signing_alg: alg,
        }
    }

    fn user() -> User {
        let now = OffsetDateTime::now_utc();
        User {
            id: UserId::new(),
            identities: vec![identity()],
            unionid: None,
            account: None,
            unionid_shared_with: Vec::new(),
            created_at: now,
            last_login_at: now,
        }
    }

    fn identity() -> Identity {
        Identity { appid: "wx123".into(), openid: "o1".into() }
    }

    #[test]
    fn tokens_round_trip_with_every_algorithm() {
        for alg in [SigningAlg::ES256, SigningAlg::EdDSA, SigningAlg::RS256] {
            let dir = tempfile::tempdir().unwrap();
            let tokens =
                Tokens::open(&settings(alg), "https://auth.example.com".into(), dir.path(), KeyMode::Dev).unwrap();
            let user = user();
            let issued = tokens.issue(&user, &identity()).unwrap();
            let claims = tokens.verify(&issued.token).unwrap();
            assert_eq!(claims.sub, user.id.to_string(), "{alg}");
            let header = jsonwebtoken::decode_header(&issued.token).unwrap();
            assert_eq!(header.alg, alg.into());
        }
    }

    #[test]
    fn only_tokens_typed_as_access_tokens_verify() {
        let dir = tempfile::tempdir().unwrap();
        let tokens =
            Tokens::open(&settings(SigningAlg::ES256), "https://auth.example.com".into(), dir.path(), KeyMode::Dev)
                .unwrap();
        let issued = tokens.issue(&user(), &identity()).unwrap();
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        let claims = tokens.verify(&issued.token).unwrap();

        // The same claims, signed by the same key, under other types.
        let kid = header.kid.unwrap();
        let pem = std::fs::read(dir.path().join(format!("{kid}.pem"))).unwrap();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap();
        let sign = |typ: Option<&str>| {
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
            header.kid = Some(kid.clone());
            header.typ = typ.map(str::to_owned);
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        };
        for typ in [Some("JWT"), None, Some("bt+jwt")] {
            assert_eq!(tokens.verify(&sign(typ)), Err(Rejection::NotAccessToken), "{typ:?}");
        }
        assert!(tokens.verify(&sign(Some("application/at+jwt"))).is_ok());
        assert!(tokens.verify(&sign(Some("AT+JWT"))).is_ok());
    }

    #[test]
    fn key_files_are_private_and_named_by_kid() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let info = rotate(dir.path(), SigningAlg::EdDSA, KeyMode::Production).unwrap();
        let meta = std::fs::metadata(dir.path().join(format!("{}.pem", info.kid))).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(list_keys(dir.path()).unwrap()[0].kid, info.kid);
    }

    #[test]
    fn validation_requires_registered_claims_even_for_untyped_claims() {
        // Decoding into `Value` takes the `Claims` struct's own required fields out of the
        // picture, so only the validation stands between a token and acceptance.
        let dir = tempfile::tempdir().unwrap();
        let tokens =
            Tokens::open(&settings(SigningAlg::ES256), "https://auth.example.com".into(), dir.path(), KeyMode::Dev)
                .unwrap();
        let ring = tokens.ring();
        let key = &ring.keys[0];
        let full = serde_json::json!({
            "iss": "https://auth.example.com", "aud": "wx123", "sub": "u1",
            "exp": OffsetDateTime::now_utc().unix_timestamp() + 600,
        });
        let sign = |claims: &serde_json::Value| key.signer.sign(claims).unwrap();
        let decode =
            |token: &str| jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &tokens.validation(key.alg));
        assert!(decode(&sign(&full)).is_ok(), "control");
        for claim in ["iss", "aud", "sub", "exp"] {
            let mut claims = full.clone();
            claims.as_object_mut().unwrap().remove(claim);
            assert!(decode(&sign(&claims)).is_err(), "accepted a token without {claim}");
        }
    }

    #[test]
    fn the_newest_key_by_recorded_creation_signs_whatever_the_file_times() {
        let dir = tempfile::tempdir().unwrap();
        let old = rotate(dir.path(), SigningAlg::ES256, KeyMode::Production).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let new = rotate(dir.path(), SigningAlg::ES256, KeyMode::Production).unwrap();
        // A copy without -p, or a touch, makes the old file look newest.
        let future = std::time::SystemTime::now() + Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join(format!("{}.pem", old.kid)))
            .unwrap()
            .set_modified(future)
            .unwrap();
        let tokens = Tokens::open(
            &settings(SigningAlg::ES256),
            "https://auth.example.com".into(),
            dir.path(),
            KeyMode::Production,
        )
        .unwrap();
        let issued = tokens.issue(&user(), &identity()).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&issued.token).unwrap().kid.unwrap(), new.kid);
    }

    #[test]
    fn unreadable_or_future_creation_times_are_refused() {
        for (line, expected) in
            [("created: 2026-11-22T00:23:03", "RFC 3339"), ("created: 2999-01-01T00:00:00Z", "future")]
        {
            let dir = tempfile::tempdir().unwrap();
            let info = rotate(dir.path(), SigningAlg::ES256, KeyMode::Production).unwrap();
            let path = dir.path().join(format!("{}.pem", info.kid));
            let text = std::fs::read_to_string(&path).unwrap();
            let edited: String = text
                .lines()
                .map(|l| if l.starts_with("created:") { line.to_owned() } else { l.to_owned() })
                .collect::<Vec<_>>()
                .join("\n");
            std::fs::write(&path, edited).unwrap();
            let err = list_keys(dir.path()).err().unwrap().to_string();
            assert!(err.contains(expected), "{line}: {err}");
        }
    }

    #[test]
    fn dev_and_production_keys_never_share_a_ring() {
        let issuer = || "https://auth.example.com".to_string();
        let dir = tempfile::tempdir().unwrap();
        rotate(dir.path(), SigningAlg::ES256, KeyMode::Dev).unwrap();
        let err = Tokens::open(&settings(SigningAlg::ES256), issuer(), dir.path(), KeyMode::Production)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("dev-mode key"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        rotate(dir.path(), SigningAlg::ES256, KeyMode::Production).unwrap();
        let err =
            Tokens::open(&settings(SigningAlg::ES256), issuer(), dir.path(), KeyMode::Dev).err().unwrap().to_string();
        assert!(err.contains("production key"), "{err}");
    }

    #[test]
    fn rotation_keeps_the_mode_of_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        assert!(rotate(dir.path(), SigningAlg::ES256, KeyMode::Dev).unwrap().mode == KeyMode::Dev);
        assert!(
            rotate(dir.path(), SigningAlg::ES256, KeyMode::Production).unwrap().mode == KeyMode::Dev,
            "a dev ring got a production key"
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(rotate(dir.path(), SigningAlg::ES256, KeyMode::Production).unwrap().mode, KeyMode::Production);
        assert!(rotate(dir.path(), SigningAlg::ES256, KeyMode::Dev).is_err(), "a production ring got a dev key");
    }

    #[test]
    fn production_refuses_an_empty_ring() {
        let dir = tempfile::tempdir().unwrap();
        let err = Tokens::open(
            &settings(SigningAlg::ES256),
            "https://auth.example.com".into(),
            dir.path(),
            KeyMode::Production,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("wxauth keys rotate"), "{err}");
    }
}
