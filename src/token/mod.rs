//! Access tokens: claims, signing with the key ring, verification, and the JWKS document.

pub mod keys;
mod ring;
mod signer;

pub use ring::{Activation, KeyInfo, KeyState, Listing, list_keys, prune, rotate};

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

/// The file in the keys directory that replicas lock while one of them stages a key. Not a
/// key file (`*.pem`), so the ring ignores it.
const ROTATION_LOCK: &str = "rotation.lock";

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
    /// The header has a `crit` parameter: wxauth understands no JOSE extensions, so it must
    /// refuse any token that says some are critical (RFC 7515 section 4.1.11).
    CriticalExtension,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "the token is not a well-formed JWT",
            Self::UnknownKey => "the token was not signed by a key of this issuer",
            Self::Expired => "the token has expired; log in again",
            Self::Invalid => "the token failed verification",
            Self::NotAccessToken => "the token is not an access token (its typ is not at+jwt); log in again",
            Self::CriticalExtension => {
                "the token's header names critical extensions (crit), which wxauth does not support"
            }
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

impl From<crate::keyfile::KeyFileError> for TokenError {
    fn from(e: crate::keyfile::KeyFileError) -> Self {
        match e {
            crate::keyfile::KeyFileError::Io { path, source } => Self::Io { path, source },
            crate::keyfile::KeyFileError::Untrusted { path, reason } => Self::BadKeyFile { path, reason },
        }
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
    /// The algorithm it was signed with.
    pub alg: SigningAlg,
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
    /// refuses keys made by the other, and any file that is not a usable key.
    pub fn open(settings: &TokenSettings, issuer: String, keys_dir: &Path, mode: KeyMode) -> Result<Self, TokenError> {
        // Pin the crypto backend explicitly: feature unification could otherwise leave
        // jsonwebtoken with none or two, which panics at the first signature.
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(&jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER);
        let mut keys = keys::load_dir(keys_dir)?.strict()?;
        if mode == KeyMode::Dev && !keys.iter().any(|k| k.alg == settings.signing_alg) {
            let key = keys::generate(keys_dir, settings.signing_alg, KeyMode::Dev, OffsetDateTime::now_utc())?;
            tracing::info!(kid = %key.kid, alg = %key.alg, dir = %keys_dir.display(), "generated a signing key");
            keys.push(key);
        }
        let tokens = Self {
            settings: settings.clone(),
            issuer,
            mode,
            keys_dir: keys_dir.into(),
            ring: RwLock::new(Arc::new(Self::evaluate(settings, keys_dir, mode, Arc::new(keys))?)),
        };
        Ok(tokens)
    }

    fn evaluate(
        settings: &TokenSettings,
        dir: &Path,
        mode: KeyMode,
        keys: Arc<Vec<keys::RingKey>>,
    ) -> Result<Ring, TokenError> {
        let now = OffsetDateTime::now_utc();
        Ring::new(keys, settings.signing_alg, dir, mode, now, settings.access_token_ttl)
    }

    /// Re-reads the keys directory (after `wxauth keys rotate`; the server also does it
    /// every minute). On error the old ring stays.
    pub fn reload(&self) -> Result<(), TokenError> {
        let keys = keys::load_dir(&self.keys_dir)?.strict()?;
        let ring = Self::evaluate(&self.settings, &self.keys_dir, self.mode, Arc::new(keys))?;
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
        Ok(())
    }

    /// Creates the next key ahead of time when `WXAUTH_KEY_ROTATION_DAYS` says the active
    /// one is due, staged like `keys rotate`. Returns the new key, if one was made.
    ///
    /// Replicas sharing the keys directory take turns under a lock file in it, each first
    /// reading what the others staged: one of them makes the key, and all sign with it. A
    /// replica that finds the lock taken does not wait (this runs on the server's runtime):
    /// it looks again at its next round, and finds the key the holder made.
    pub fn rotate_if_due(&self) -> Result<Option<KeyInfo>, TokenError> {
        let Some(every) = self.settings.key_rotation else { return Ok(None) };
        if !self.due(every) {
            return Ok(None);
        }
        use std::os::unix::fs::OpenOptionsExt;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.keys_dir.join(ROTATION_LOCK))
            .map_err(|e| TokenError::io(&self.keys_dir, e))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
            Err(e) => return Err(TokenError::io(&self.keys_dir, e.into())),
        }
        self.reload()?;
        if !self.due(every) {
            return Ok(None);
        }
        let now = OffsetDateTime::now_utc();
        let due = self.ring().signer().activates + every;
        let key = keys::generate(
            &self.keys_dir,
            self.settings.signing_alg,
            self.mode,
            due.max(now + self.settings.key_activation),
        )?;
        self.reload()?;
        // Closing the file releases the lock.
        drop(lock);
        Ok(Some(KeyInfo::from(&key)))
    }

    /// Whether the ring as this replica knows it needs a next key now.
    fn due(&self, every: std::time::Duration) -> bool {
        let ring = self.ring();
        let now = OffsetDateTime::now_utc();
        let alg = self.settings.signing_alg;
        if ring.all.iter().any(|k| k.alg == alg && k.activates > now) {
            return false;
        }
        now + self.settings.key_activation >= ring.signer().activates + every
    }

    /// The ring as of now: re-evaluated (without reading the directory) once a staged key
    /// activates or a retired one expires.
    fn ring(&self) -> Arc<Ring> {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner()).clone();
        if ring.changes_at.is_none_or(|t| OffsetDateTime::now_utc() < t) {
            return ring;
        }
        let Ok(fresh) = Self::evaluate(&self.settings, &self.keys_dir, self.mode, ring.all.clone()) else {
            return ring;
        };
        let fresh = Arc::new(fresh);
        let mut current = self.ring.write().unwrap_or_else(|e| e.into_inner());
        if Arc::ptr_eq(&current, &ring) {
            tracing::info!(kid = %fresh.signer().kid, "key ring re-evaluated: a staged key activated or a retired one expired");
            *current = fresh.clone();
        }
        fresh
    }

    /// Signs an access token for `user`, logged in through `identity`, with the newest key.
    pub fn issue(&self, user: &User, identity: &Identity) -> Result<IssuedToken, TokenError> {
        let ring = self.ring();
        let key = ring.signer();
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
        Ok(IssuedToken { token, expires_in: ttl, alg: key.alg })
    }

    /// Verifies a token: the algorithm is pinned by the key its `kid` names (never by the
    /// header), and `iss`, `aud`, `sub` and `exp` must be present and right.
    pub fn verify(&self, token: &str) -> Result<Claims, Rejection> {
        if token.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("bearer ")) {
            return Err(Rejection::DoubledPrefix);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        let ring = self.ring();
        let key = header.kid.and_then(|kid| ring.keys().find(|k| k.kid == kid)).ok_or(Rejection::UnknownKey)?;
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
        if has_crit(token) {
            return Err(Rejection::CriticalExtension);
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
        let mut algs = vec![ring.signer().alg];
        for key in ring.keys() {
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

/// Whether the header of `token` has a `crit` parameter, whatever its value: `Header` reads
/// `"crit": null` as no `crit` at all. A header that `decode_header` read but this cannot
/// counts as having one: refusing is the safe side.
fn has_crit(token: &str) -> bool {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let header = token.split('.').next().and_then(|h| URL_SAFE_NO_PAD.decode(h).ok());
    let header = header.and_then(|h| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&h).ok());
    header.is_none_or(|h| h.contains_key("crit"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::UserId;

    /// Adds a key that signs at once.
    fn add(dir: &Path, alg: SigningAlg, mode: KeyMode) -> KeyInfo {
        rotate(dir, alg, mode, Activation::Now).unwrap().0
    }

    fn settings(alg: SigningAlg) -> TokenSettings {
        TokenSettings {
            issuer: None,
            audience: "wx123".into(),
            access_token_ttl: Duration::from_secs(900),
            refresh_token_ttl: Duration::from_secs(3600),
            refresh_families_per_user: 20,
            signing_alg: alg,
            key_activation: Duration::from_secs(600),
            key_rotation: None,
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
        let info = add(dir.path(), SigningAlg::EdDSA, KeyMode::Production);
        let meta = std::fs::metadata(dir.path().join(format!("{}.pem", info.kid))).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(list_keys(dir.path(), SigningAlg::EdDSA, Duration::from_secs(900)).unwrap().keys[0].0.kid, info.kid);
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
        let key = ring.signer();
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
        let old = add(dir.path(), SigningAlg::ES256, KeyMode::Production);
        std::thread::sleep(Duration::from_millis(20));
        let new = add(dir.path(), SigningAlg::ES256, KeyMode::Production);
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
            let info = add(dir.path(), SigningAlg::ES256, KeyMode::Production);
            let path = dir.path().join(format!("{}.pem", info.kid));
            let text = std::fs::read_to_string(&path).unwrap();
            let edited: String = text
                .lines()
                .map(|l| if l.starts_with("created:") { line.to_owned() } else { l.to_owned() })
                .collect::<Vec<_>>()
                .join("\n");
            std::fs::write(&path, edited).unwrap();
            let err = list_keys(dir.path(), SigningAlg::ES256, Duration::from_secs(900)).unwrap().bad[0].to_string();
            assert!(err.contains(expected), "{line}: {err}");
        }
    }

    #[test]
    fn dev_and_production_keys_never_share_a_ring() {
        let issuer = || "https://auth.example.com".to_string();
        let dir = tempfile::tempdir().unwrap();
        add(dir.path(), SigningAlg::ES256, KeyMode::Dev);
        let err = Tokens::open(&settings(SigningAlg::ES256), issuer(), dir.path(), KeyMode::Production)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("dev-mode key"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        add(dir.path(), SigningAlg::ES256, KeyMode::Production);
        let err =
            Tokens::open(&settings(SigningAlg::ES256), issuer(), dir.path(), KeyMode::Dev).err().unwrap().to_string();
        assert!(err.contains("production key"), "{err}");
    }

    #[test]
    fn rotation_keeps_the_mode_of_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        assert!(add(dir.path(), SigningAlg::ES256, KeyMode::Dev).mode == KeyMode::Dev);
        assert!(
            add(dir.path(), SigningAlg::ES256, KeyMode::Production).mode == KeyMode::Dev,
            "a dev ring got a production key"
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(add(dir.path(), SigningAlg::ES256, KeyMode::Production).mode, KeyMode::Production);
        assert!(
            rotate(dir.path(), SigningAlg::ES256, KeyMode::Dev, Activation::Now).is_err(),
            "a production ring got a dev key"
        );
    }

    #[test]
    fn the_server_stages_the_next_key_when_rotation_is_due_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let key = add(dir.path(), SigningAlg::ES256, KeyMode::Production);
        // Activated a day minus 5 minutes ago.
        let path = dir.path().join(format!("{}.pem", key.kid));
        let when = (OffsetDateTime::now_utc() - time::Duration::seconds(86_400 - 300))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let text: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| if l.starts_with("activates:") { format!("activates: {when}") } else { l.to_owned() })
            .collect();
        std::fs::write(&path, text.join("\n") + "\n").unwrap();
        let mut settings = settings(SigningAlg::ES256);
        let issuer = || "https://auth.example.com".to_string();

        // Due in 11 minutes: more than the 10-minute activation delay away, so not yet.
        settings.key_rotation = Some(Duration::from_secs(86_400 + 360));
        let tokens = Tokens::open(&settings, issuer(), dir.path(), KeyMode::Production).unwrap();
        assert!(tokens.rotate_if_due().unwrap().is_none(), "rotated a key early");

        // Due in 5 minutes: staged now, to activate after the full delay.
        settings.key_rotation = Some(Duration::from_secs(86_400));
        let tokens = Tokens::open(&settings, issuer(), dir.path(), KeyMode::Production).unwrap();
        let replica = Tokens::open(&settings, issuer(), dir.path(), KeyMode::Production).unwrap();
        let next = tokens.rotate_if_due().unwrap().expect("no key staged although one was due");
        assert!(next.activates >= OffsetDateTime::now_utc() + Duration::from_secs(590), "not staged");
        assert!(tokens.rotate_if_due().unwrap().is_none(), "a second next key");
        // Another replica on the same directory, whose ring predates the staged key: it
        // finds that key instead of making one of its own.
        assert!(replica.rotate_if_due().unwrap().is_none(), "a second replica staged a key of its own");
        let pems = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pem"));
        assert_eq!(pems.count(), 2);
        let issued = tokens.issue(&user(), &identity()).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&issued.token).unwrap().kid.unwrap(), key.kid);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&tokens.jwks()).unwrap()["keys"].as_array().unwrap().len(),
            2
        );
    }

    #[test]
    fn dev_mode_generates_a_key_only_when_the_ring_has_none_of_the_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let open =
            |alg| Tokens::open(&settings(alg), "http://127.0.0.1:8080".into(), dir.path(), KeyMode::Dev).unwrap();
        let count = || std::fs::read_dir(dir.path()).unwrap().count();
        open(SigningAlg::ES256);
        open(SigningAlg::ES256);
        assert_eq!(count(), 1, "a second key although one of the algorithm was there");
        open(SigningAlg::EdDSA);
        assert_eq!(count(), 2);
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
