//! Access tokens: claims, signing with the key ring, verification, and the JWKS document.

pub mod keys;
mod signer;

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    sync::{Arc, RwLock},
};

use bytes::Bytes;
use jsonwebtoken::{Validation, errors::ErrorKind, jwk::JwkSet};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{
    config::TokenSettings,
    domain::{Identity, User},
};
use keys::RingKey;

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// Algorithms wxauth signs with. HMAC is deliberately absent: a shared secret would have
/// to be handed to every verifier, and HS* is the classic algorithm-confusion vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlg {
    /// ECDSA P-256 with SHA-256 (default: small keys, small signatures).
    ES256,
    /// Ed25519.
    EdDSA,
    /// RSASSA-PKCS1-v1_5 with SHA-256 and 2048-bit keys, for verifiers without EC support.
    RS256,
}

impl FromStr for SigningAlg {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "ES256" => Ok(Self::ES256),
            "EdDSA" => Ok(Self::EdDSA),
            "RS256" => Ok(Self::RS256),
            _ => Err(()),
        }
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

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
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "the token is not a well-formed JWT",
            Self::UnknownKey => "the token was not signed by a key of this issuer",
            Self::Expired => "the token has expired; log in again",
            Self::Invalid => "the token failed verification",
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
    /// A presented token is not acceptable.
    #[error("{0}")]
    Rejected(Rejection),
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
        /// `dev-mode` or `production`.
        key_mode: &'static str,
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

/// One immutable view of the keys directory, with the JWKS serialized once for it.
struct Ring {
    keys: Vec<RingKey>,
    signer: usize,
    jwks: Bytes,
}

/// Issues and verifies access tokens; owns the key ring.
pub struct Tokens {
    settings: TokenSettings,
    issuer: String,
    dev: bool,
    keys_dir: PathBuf,
    ring: RwLock<Arc<Ring>>,
}

impl Tokens {
    /// Loads the key ring from `keys_dir`. In dev mode a missing signing key of the
    /// configured algorithm is created; in production its absence is an error. Either mode
    /// refuses keys made by the other.
    pub fn open(settings: &TokenSettings, issuer: String, keys_dir: &Path, dev: bool) -> Result<Self, TokenError> {
        // Pin the crypto backend explicitly: feature unification could otherwise leave
        // jsonwebtoken with none or two, which panics at the first signature.
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(&jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER);
        let mut keys = keys::load_dir(keys_dir)?;
        if dev && !keys.iter().any(|k| k.alg == settings.signing_alg) {
            let key = keys::generate(keys_dir, settings.signing_alg, true)?;
            tracing::info!(kid = %key.kid, alg = %key.alg, dir = %keys_dir.display(), "generated a signing key");
            keys.push(key);
        }
        let ring = Ring::new(keys, settings.signing_alg, keys_dir, dev)?;
        Ok(Self {
            settings: settings.clone(),
            issuer,
            dev,
            keys_dir: keys_dir.into(),
            ring: RwLock::new(Arc::new(ring)),
        })
    }

    /// Re-reads the keys directory (after `wxauth keys rotate`). On error the old ring stays.
    pub fn reload(&self) -> Result<(), TokenError> {
        let ring = Ring::new(keys::load_dir(&self.keys_dir)?, self.settings.signing_alg, &self.keys_dir, self.dev)?;
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
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let reject = |r| TokenError::Rejected(r);
        if token.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("bearer ")) {
            return Err(reject(Rejection::DoubledPrefix));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| reject(Rejection::Malformed))?;
        let ring = self.ring();
        let key =
            header.kid.and_then(|kid| ring.keys.iter().find(|k| k.kid == kid)).ok_or(reject(Rejection::UnknownKey))?;
        jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation(key.alg)).map(|data| data.claims).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => reject(Rejection::Expired),
                _ => reject(Rejection::Invalid),
            },
        )
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

impl Ring {
    fn new(keys: Vec<RingKey>, alg: SigningAlg, dir: &Path, dev: bool) -> Result<Self, TokenError> {
        if let Some(key) = keys.iter().find(|k| k.dev != dev) {
            let mode = |dev| if dev { "dev-mode" } else { "production" };
            return Err(TokenError::ModeMismatch {
                dir: dir.into(),
                kid: key.kid.clone(),
                key_mode: mode(key.dev),
                run_mode: if dev { "serve --dev" } else { "production" },
            });
        }
        let signer =
            keys.iter().rposition(|k| k.alg == alg).ok_or_else(|| TokenError::NoSigningKey { dir: dir.into(), alg })?;
        let set = JwkSet { keys: keys.iter().map(|k| k.jwk.clone()).collect() };
        let jwks = serde_json::to_vec(&set).map_err(|e| TokenError::Sign(e.to_string()))?;
        Ok(Self { keys, signer, jwks: Bytes::from(jwks) })
    }
}

/// A key as shown by `wxauth keys list`.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// Algorithm.
    pub alg: SigningAlg,
    /// When the key file was written.
    pub created: OffsetDateTime,
    /// A dev-mode key.
    pub dev: bool,
}

/// Lists the keys in `dir`, oldest first.
pub fn list_keys(dir: &Path) -> Result<Vec<KeyInfo>, TokenError> {
    Ok(keys::load_dir(dir)?
        .into_iter()
        .map(|k| KeyInfo { kid: k.kid, alg: k.alg, created: k.created, dev: k.dev })
        .collect())
}

/// Adds a new key of `alg` to the ring in `dir`; it signs from the next start (or reload).
/// The key takes the mode of the keys already there (so `serve --dev` followed by
/// `keys rotate` keeps working); an empty ring gets a production key unless `dev`.
pub fn rotate(dir: &Path, alg: SigningAlg, dev: bool) -> Result<KeyInfo, TokenError> {
    let existing = keys::load_dir(dir)?;
    let dev = match existing.first() {
        Some(key) if dev && !key.dev => {
            return Err(TokenError::ModeMismatch {
                dir: dir.into(),
                kid: key.kid.clone(),
                key_mode: "production",
                run_mode: "keys rotate --dev",
            });
        }
        Some(key) => key.dev,
        None => dev,
    };
    let k = keys::generate(dir, alg, dev)?;
    Ok(KeyInfo { kid: k.kid, alg: k.alg, created: k.created, dev: k.dev })
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
            let tokens = Tokens::open(&settings(alg), "https://auth.example.com".into(), dir.path(), true).unwrap();
            let user = user();
            let issued = tokens.issue(&user, &identity()).unwrap();
            let claims = tokens.verify(&issued.token).unwrap();
            assert_eq!(claims.sub, user.id.to_string(), "{alg}");
            let header = jsonwebtoken::decode_header(&issued.token).unwrap();
            assert_eq!(header.alg, alg.into());
        }
    }

    #[test]
    fn key_files_are_private_and_named_by_kid() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let info = rotate(dir.path(), SigningAlg::EdDSA, false).unwrap();
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
            Tokens::open(&settings(SigningAlg::ES256), "https://auth.example.com".into(), dir.path(), true).unwrap();
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
        let old = rotate(dir.path(), SigningAlg::ES256, false).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let new = rotate(dir.path(), SigningAlg::ES256, false).unwrap();
        // A copy without -p, or a touch, makes the old file look newest.
        let future = std::time::SystemTime::now() + Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join(format!("{}.pem", old.kid)))
            .unwrap()
            .set_modified(future)
            .unwrap();
        let tokens =
            Tokens::open(&settings(SigningAlg::ES256), "https://auth.example.com".into(), dir.path(), false).unwrap();
        let issued = tokens.issue(&user(), &identity()).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&issued.token).unwrap().kid.unwrap(), new.kid);
    }

    #[test]
    fn unreadable_or_future_creation_times_are_refused() {
        for (line, expected) in
            [("created: 2026-11-22T00:23:03", "RFC 3339"), ("created: 2999-01-01T00:00:00Z", "future")]
        {
            let dir = tempfile::tempdir().unwrap();
            let info = rotate(dir.path(), SigningAlg::ES256, false).unwrap();
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
        rotate(dir.path(), SigningAlg::ES256, true).unwrap();
        let err = Tokens::open(&settings(SigningAlg::ES256), issuer(), dir.path(), false).err().unwrap().to_string();
        assert!(err.contains("dev-mode key"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        rotate(dir.path(), SigningAlg::ES256, false).unwrap();
        let err = Tokens::open(&settings(SigningAlg::ES256), issuer(), dir.path(), true).err().unwrap().to_string();
        assert!(err.contains("production key"), "{err}");
    }

    #[test]
    fn rotation_keeps_the_mode_of_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        assert!(rotate(dir.path(), SigningAlg::ES256, true).unwrap().dev);
        assert!(rotate(dir.path(), SigningAlg::ES256, false).unwrap().dev, "a dev ring got a production key");
        let dir = tempfile::tempdir().unwrap();
        assert!(!rotate(dir.path(), SigningAlg::ES256, false).unwrap().dev);
        assert!(rotate(dir.path(), SigningAlg::ES256, true).is_err(), "a production ring got a dev key");
    }

    #[test]
    fn production_refuses_an_empty_ring() {
        let dir = tempfile::tempdir().unwrap();
        let err = Tokens::open(&settings(SigningAlg::ES256), "https://auth.example.com".into(), dir.path(), false)
            .err()
            .unwrap();
        assert!(err.to_string().contains("wxauth keys rotate"), "{err}");
    }
}
