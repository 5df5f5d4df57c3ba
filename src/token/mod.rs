//! Access tokens: claims, signing with the key ring, verification, and the JWKS document.
//!
//! [`Tokens`] owns the ring; its jobs live in one file each: `claims` (what a token says
//! and signing it), `verify`, `rotation` (the server staging its next key), `ring` (which
//! key signs when) and `keys` (the key files), with `error` for what all of them refuse.

mod claims;
mod error;
#[cfg(test)]
mod fixtures;
pub mod keys;
mod ring;
mod rotation;
mod signer;
mod verify;

pub use claims::{Claims, IssuedToken};
pub use error::{Rejection, TokenError};
pub use ring::{Activation, KeyInfo, KeyState, Listing, list_keys, prune, rotate};

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use bytes::Bytes;
use time::OffsetDateTime;

use crate::{
    clock::Clock,
    config::TokenSettings,
    domain::{KeyMode, SigningAlg},
};
use ring::Ring;

/// The JOSE `typ` of access tokens (RFC 9068). Verification requires it, so nothing else
/// wxauth signs can pass as an access token.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Seconds of clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// Issues and verifies access tokens; owns the key ring.
pub struct Tokens {
    settings: TokenSettings,
    issuer: String,
    mode: KeyMode,
    keys_dir: PathBuf,
    ring: RwLock<Arc<Ring>>,
    /// Decides which key signs, and what `iat`, `exp` and `nbf` are and mean.
    clock: Clock,
    /// Told of each key that starts to sign ([`Tokens::on_activation`]).
    activations: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<KeyInfo>>>,
}

impl Tokens {
    /// Loads the key ring from `keys_dir`. In dev mode a missing signing key of the
    /// configured algorithm is created; in production its absence is an error. Either mode
    /// refuses keys made by the other, and any file that is not a usable key. Which key
    /// signs, and the times in tokens and their checks, follow `clock`.
    pub fn open(
        settings: &TokenSettings,
        issuer: String,
        keys_dir: &Path,
        mode: KeyMode,
        clock: Clock,
    ) -> Result<Self, TokenError> {
        // Pin the crypto backend explicitly: feature unification could otherwise leave
        // jsonwebtoken with none or two, which panics at the first signature.
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(&jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER);
        let mut keys = keys::load_dir(keys_dir)?.strict()?;
        if mode == KeyMode::Dev && !keys.iter().any(|k| k.alg == settings.signing_alg) {
            let key = keys::generate(keys_dir, settings.signing_alg, KeyMode::Dev, clock.now())?;
            tracing::info!(kid = %key.kid, alg = %key.alg, dir = %keys_dir.display(), "generated a signing key");
            keys.push(key);
        }
        let tokens = Self {
            settings: settings.clone(),
            issuer,
            mode,
            keys_dir: keys_dir.into(),
            ring: RwLock::new(Arc::new(Self::evaluate(settings, keys_dir, mode, Arc::new(keys), clock.now())?)),
            clock,
            activations: std::sync::Mutex::default(),
        };
        Ok(tokens)
    }

    fn evaluate(
        settings: &TokenSettings,
        dir: &Path,
        mode: KeyMode,
        keys: Arc<Vec<keys::RingKey>>,
        now: OffsetDateTime,
    ) -> Result<Ring, TokenError> {
        Ring::new(keys, settings.signing_alg, dir, mode, now, settings.access_token_ttl)
    }

    /// Re-reads the keys directory (after `wxauth keys rotate`; the server also does it
    /// every minute). On error the old ring stays.
    pub fn reload(&self) -> Result<(), TokenError> {
        let keys = keys::load_dir(&self.keys_dir)?.strict()?;
        let ring =
            Arc::new(Self::evaluate(&self.settings, &self.keys_dir, self.mode, Arc::new(keys), self.clock.now())?);
        let old = std::mem::replace(&mut *self.ring.write().unwrap_or_else(|e| e.into_inner()), ring.clone());
        self.note_signer(&old, &ring);
        Ok(())
    }

    /// Sends each key that starts to sign from now on to `activations` (the server records
    /// a `key_activated` event for it).
    pub fn on_activation(&self, activations: tokio::sync::mpsc::UnboundedSender<KeyInfo>) {
        *self.activations.lock().unwrap_or_else(|e| e.into_inner()) = Some(activations);
    }

    /// Tells [`Tokens::on_activation`]'s receiver of `new`'s signer if `old` had another.
    fn note_signer(&self, old: &Ring, new: &Ring) {
        if old.signer().kid != new.signer().kid
            && let Some(activations) = self.activations.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
        {
            let _ = activations.send(KeyInfo::from(new.signer()));
        }
    }

    /// The ring as of now: re-evaluated (without reading the directory) once a staged key
    /// activates or a retired one expires.
    fn ring(&self) -> Arc<Ring> {
        let ring = self.ring.read().unwrap_or_else(|e| e.into_inner()).clone();
        let now = self.clock.now();
        if ring.changes_at.is_none_or(|t| now < t) {
            return ring;
        }
        let Ok(fresh) = Self::evaluate(&self.settings, &self.keys_dir, self.mode, ring.all.clone(), now) else {
            return ring;
        };
        let fresh = Arc::new(fresh);
        let mut current = self.ring.write().unwrap_or_else(|e| e.into_inner());
        if Arc::ptr_eq(&current, &ring) {
            tracing::info!(kid = %fresh.signer().kid, "key ring re-evaluated: a staged key activated or a retired one expired");
            *current = fresh.clone();
            drop(current);
            self.note_signer(&ring, &fresh);
        }
        fresh
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

    /// Every key of the ring in memory (published or not) with its state now, oldest
    /// activation first: what the admin API shows.
    pub fn listing(&self) -> Vec<(KeyInfo, KeyState)> {
        let ring = self.ring();
        let views: Vec<ring::KeyView> = ring.all.iter().map(ring::KeyView::from).collect();
        let states = ring::states(&views, self.settings.signing_alg, self.clock.now(), self.settings.access_token_ttl);
        ring.all.iter().map(KeyInfo::from).zip(states).collect()
    }

    /// The key that signs now.
    pub fn signing_key(&self) -> KeyInfo {
        KeyInfo::from(self.ring().signer())
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
    use crate::{
        clock::{Clock, TestClock},
        token::fixtures::{add, identity, settings, user},
    };

    #[test]
    fn a_staged_key_signs_once_the_clock_passes_its_activation_and_its_predecessor_leaves_the_jwks_later() {
        let (dir, clock) = (tempfile::tempdir().unwrap(), TestClock::default());
        let old = add(dir.path(), SigningAlg::ES256, KeyMode::Production);
        // What `wxauth keys rotate` does: publish now, sign in 600 s.
        let staged = Activation::After(Duration::from_secs(600));
        let (next, _) = rotate(dir.path(), SigningAlg::ES256, KeyMode::Production, staged).unwrap();
        let tokens = Tokens::open(
            &settings(SigningAlg::ES256),
            "https://auth.example.com".into(),
            dir.path(),
            KeyMode::Production,
            clock.clock(),
        )
        .unwrap();
        let signer = || {
            let token = tokens.issue(&user(), &identity(), uuid::Uuid::nil()).unwrap().token;
            jsonwebtoken::decode_header(&token).unwrap().kid.unwrap()
        };
        let published = || {
            let jwks: serde_json::Value = serde_json::from_slice(&tokens.jwks()).unwrap();
            jwks["keys"].as_array().unwrap().len()
        };

        clock.advance(600 - 5);
        assert_eq!((signer(), published()), (old.kid.clone(), 2), "the staged key signed early");
        clock.advance(10);
        assert_eq!(signer(), next.kid);
        // The old key's last tokens live 900 s more, and 30 s of leeway.
        clock.advance(900 + 30 - 10);
        assert_eq!(published(), 2, "the old key left while its tokens lived");
        clock.advance(20);
        assert_eq!(published(), 1);
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
            Clock::system(),
        )
        .unwrap();
        let issued = tokens.issue(&user(), &identity(), uuid::Uuid::nil()).unwrap();
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
        let err =
            Tokens::open(&settings(SigningAlg::ES256), issuer(), dir.path(), KeyMode::Production, Clock::system())
                .err()
                .unwrap()
                .to_string();
        assert!(err.contains("dev-mode key"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        add(dir.path(), SigningAlg::ES256, KeyMode::Production);
        let err = Tokens::open(&settings(SigningAlg::ES256), issuer(), dir.path(), KeyMode::Dev, Clock::system())
            .err()
            .unwrap()
            .to_string();
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
    fn dev_mode_generates_a_key_only_when_the_ring_has_none_of_the_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let open = |alg| {
            Tokens::open(&settings(alg), "http://127.0.0.1:8080".into(), dir.path(), KeyMode::Dev, Clock::system())
                .unwrap()
        };
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
            Clock::system(),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("wxauth keys rotate"), "{err}");
    }
}
