//! Key-ring administration: which key signs when, what is published, and the `keys`
//! commands (list, rotate, prune).
//!
//! Staged rotation: a new key is published at once but signs only from its activation
//! time, recorded in its file, so that verifiers that cached the JWKS (up to its 5-minute
//! max-age) already hold it when the first token it signed reaches them. Every process
//! sharing the keys directory reads the same times and so switches to the same key at the
//! same moment, without talking to the others. At any time `now`, for the configured
//! algorithm:
//! - **active**: the key with the latest activation at or before `now`; it signs;
//! - **next**: keys whose activation is after `now`; published, not signing yet;
//! - **retired**: keys replaced by a later activation; published until every token they
//!   signed has expired (their successor's activation + the access-token lifetime + the
//!   leeway), then left out of the JWKS and removed by `keys prune`.

use std::{path::Path, sync::Arc, time::Duration};

use bytes::Bytes;
use jsonwebtoken::jwk::JwkSet;
use time::OffsetDateTime;

use super::{
    LEEWAY_SECS, TokenError,
    keys::{self, RingKey},
};
use crate::domain::{KeyMode, SigningAlg};

/// Where a key stands at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published; signs from its activation time.
    Next,
    /// Signs.
    Active,
    /// Replaced at `since`; published while tokens it signed may still be alive.
    Retired {
        /// When a newer key took over.
        since: OffsetDateTime,
        /// Every token it signed has expired: no longer published, and `keys prune`
        /// removes it.
        prunable: bool,
    },
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Next => "next",
            Self::Active => "active",
            Self::Retired { prunable: false, .. } => "retired",
            Self::Retired { prunable: true, .. } => "retired (prunable)",
        })
    }
}

/// The states of `keys` (sorted by activation, as [`keys::load_dir`] returns them) at
/// `now`, signing with `alg`, when access tokens live `ttl`.
pub fn states(keys: &[KeyView], alg: SigningAlg, now: OffsetDateTime, ttl: Duration) -> Vec<KeyState> {
    let active = keys.iter().rposition(|k| k.alg == alg && k.activates <= now);
    let keep = ttl + Duration::from_secs(LEEWAY_SECS);
    keys.iter()
        .enumerate()
        .map(|(i, key)| {
            if Some(i) == active {
                return KeyState::Active;
            }
            if key.activates > now {
                return KeyState::Next;
            }
            // Replaced by the next key that activated; a key of another algorithm (the
            // setting changed) counts as replaced by the active key.
            let successor = keys[i + 1..].iter().find(|k| k.activates <= now).map(|k| k.activates);
            let since = successor.or(active.map(|a| keys[a].activates)).unwrap_or(now);
            KeyState::Retired { since, prunable: since + keep < now }
        })
        .collect()
}

/// What [`states`] needs of a key.
#[derive(Debug, Clone)]
pub struct KeyView {
    /// Algorithm.
    pub alg: SigningAlg,
    /// When it signs from.
    pub activates: OffsetDateTime,
}

impl From<&RingKey> for KeyView {
    fn from(k: &RingKey) -> Self {
        Self { alg: k.alg, activates: k.activates }
    }
}

/// One immutable view of the keys directory at one moment, with the JWKS serialized once
/// for it.
pub(super) struct Ring {
    /// Every loaded key, sorted by activation (including keys no longer published, so that
    /// the ring can be re-evaluated later without reading the directory).
    pub(super) all: Arc<Vec<RingKey>>,
    /// Indexes into `all` of the published keys.
    pub(super) published: Vec<usize>,
    /// Index into `all` of the signing key.
    pub(super) signer: usize,
    pub(super) jwks: Bytes,
    /// When a state changes (a key activates or becomes prunable): the ring must be
    /// re-evaluated then.
    pub(super) changes_at: Option<OffsetDateTime>,
}

impl Ring {
    pub(super) fn new(
        all: Arc<Vec<RingKey>>,
        alg: SigningAlg,
        dir: &Path,
        mode: KeyMode,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<Self, TokenError> {
        if let Some(key) = all.iter().find(|k| k.mode != mode) {
            return Err(TokenError::ModeMismatch {
                dir: dir.into(),
                kid: key.kid.clone(),
                key_mode: key.mode,
                run_mode: if mode == KeyMode::Dev { "serve --dev" } else { "production" },
            });
        }
        let views: Vec<KeyView> = all.iter().map(KeyView::from).collect();
        let states = states(&views, alg, now, ttl);
        let signer = states
            .iter()
            .position(|s| *s == KeyState::Active)
            .ok_or_else(|| TokenError::NoSigningKey { dir: dir.into(), alg })?;
        let published: Vec<usize> = states
            .iter()
            .enumerate()
            .filter(|(_, s)| !matches!(s, KeyState::Retired { prunable: true, .. }))
            .map(|(i, _)| i)
            .collect();
        let keep = ttl + Duration::from_secs(LEEWAY_SECS);
        let changes_at = states
            .iter()
            .zip(&views)
            .filter_map(|(state, key)| match state {
                KeyState::Next => Some(key.activates),
                KeyState::Retired { since, prunable: false } => Some(*since + keep),
                _ => None,
            })
            .min();
        let set = JwkSet { keys: published.iter().map(|&i| all[i].jwk.clone()).collect() };
        let jwks = serde_json::to_vec(&set).map_err(|e| TokenError::Sign(e.to_string()))?;
        Ok(Self { all, published, signer, jwks: Bytes::from(jwks), changes_at })
    }

    /// The published keys.
    pub(super) fn keys(&self) -> impl Iterator<Item = &RingKey> {
        self.published.iter().map(|&i| &self.all[i])
    }

    /// The signing key.
    pub(super) fn signer(&self) -> &RingKey {
        &self.all[self.signer]
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
    /// When it signs from.
    pub activates: OffsetDateTime,
    /// Dev-mode or production.
    pub mode: KeyMode,
}

impl From<&RingKey> for KeyInfo {
    fn from(k: &RingKey) -> Self {
        Self { kid: k.kid.clone(), alg: k.alg, created: k.created, activates: k.activates, mode: k.mode }
    }
}

/// The ring as `keys list` shows it.
pub struct Listing {
    /// Every usable key with its state now, oldest activation first.
    pub keys: Vec<(KeyInfo, KeyState)>,
    /// Files that are not usable keys, each with why.
    pub bad: Vec<TokenError>,
}

/// Lists the keys in `dir` with their state now, signing with `alg`, when access tokens
/// live `ttl`. Unusable files are listed apart and do not stop the listing.
pub fn list_keys(dir: &Path, alg: SigningAlg, ttl: Duration) -> Result<Listing, TokenError> {
    let loaded = keys::load_dir(dir)?;
    let views: Vec<KeyView> = loaded.keys.iter().map(KeyView::from).collect();
    let states = states(&views, alg, OffsetDateTime::now_utc(), ttl);
    Ok(Listing { keys: loaded.keys.iter().map(KeyInfo::from).zip(states).collect(), bad: loaded.bad })
}

/// How `keys rotate` stages the new key.
#[derive(Debug, Clone, Copy)]
pub enum Activation {
    /// Signs after this long (`WXAUTH_KEY_ACTIVATION_SECS`), once verifiers hold it.
    After(Duration),
    /// Signs at once (`--now`, for a compromised key).
    Now,
}

/// Adds a new key of `alg` to the ring in `dir`, staged by `activation`; when no key of
/// `alg` signs yet there is nothing to stage against and it signs at once. The key takes
/// the mode of the keys already there (so `serve --dev` followed by `keys rotate` keeps
/// working); an empty ring gets a key of the `requested` mode. Unusable files do not stop
/// it; they are returned for the caller to report.
pub fn rotate(
    dir: &Path,
    alg: SigningAlg,
    requested: KeyMode,
    activation: Activation,
) -> Result<(KeyInfo, Vec<TokenError>), TokenError> {
    let loaded = keys::load_dir(dir)?;
    let existing = &loaded.keys;
    let mode = match existing.first() {
        Some(key) if requested == KeyMode::Dev && key.mode == KeyMode::Production => {
            return Err(TokenError::ModeMismatch {
                dir: dir.into(),
                kid: key.kid.clone(),
                key_mode: KeyMode::Production,
                run_mode: "keys rotate --dev",
            });
        }
        Some(key) => key.mode,
        None => requested,
    };
    let now = OffsetDateTime::now_utc();
    let signing = existing.iter().any(|k| k.alg == alg && k.activates <= now);
    let activates = match activation {
        Activation::After(delay) if signing => now + delay,
        _ => now,
    };
    let key = keys::generate(dir, alg, mode, activates)?;
    Ok((KeyInfo::from(&key), loaded.bad))
}

/// Removes the key files of retired keys whose tokens have all expired; never a key that
/// signs or will. Returns the removed keys and the unusable files found.
pub fn prune(dir: &Path, alg: SigningAlg, ttl: Duration) -> Result<(Vec<KeyInfo>, Vec<TokenError>), TokenError> {
    let listing = list_keys(dir, alg, ttl)?;
    let mut removed = Vec::new();
    for (key, state) in listing.keys {
        if matches!(state, KeyState::Retired { prunable: true, .. }) {
            let path = dir.join(format!("{}.pem", key.kid));
            std::fs::remove_file(&path).map_err(|e| TokenError::Io { path, source: e })?;
            removed.push(key);
        }
    }
    Ok((removed, listing.bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(1_000_000 + minutes)
    }

    fn es256(minutes: i64) -> KeyView {
        KeyView { alg: SigningAlg::ES256, activates: at(minutes) }
    }

    const TTL: Duration = Duration::from_secs(15 * 60);

    #[test]
    fn the_latest_activated_key_signs_and_later_ones_wait() {
        let keys = [es256(0), es256(10), es256(20)];
        let now = states(&keys, SigningAlg::ES256, at(15), TTL);
        assert_eq!(now[1], KeyState::Active);
        assert_eq!(now[2], KeyState::Next);
        assert_eq!(now[0], KeyState::Retired { since: at(10), prunable: false });
        // The moment the staged key activates, it signs.
        assert_eq!(states(&keys, SigningAlg::ES256, at(20), TTL)[2], KeyState::Active);
    }

    #[test]
    fn a_retired_key_stays_published_until_its_last_token_expired() {
        let keys = [es256(0), es256(10)];
        // Tokens signed at 9:59 live until 24:59, plus 30 s of leeway.
        let alive = states(&keys, SigningAlg::ES256, at(25), TTL);
        assert_eq!(alive[0], KeyState::Retired { since: at(10), prunable: false });
        let gone = states(&keys, SigningAlg::ES256, at(26), TTL);
        assert_eq!(gone[0], KeyState::Retired { since: at(10), prunable: true });
        assert_eq!(gone[1], KeyState::Active);
    }

    #[test]
    fn keys_of_another_algorithm_retire_with_the_active_one_s_activation() {
        let keys = [KeyView { alg: SigningAlg::RS256, activates: at(0) }, es256(5)];
        let now = states(&keys, SigningAlg::ES256, at(6), TTL);
        assert_eq!(now, [KeyState::Retired { since: at(5), prunable: false }, KeyState::Active]);
    }
}

#[cfg(test)]
mod prune_tests {
    use super::*;

    /// Rewrites a key file's activation time, as if it had been rotated in long ago.
    fn activated(dir: &Path, key: &KeyInfo, at: OffsetDateTime) {
        let path = dir.join(format!("{}.pem", key.kid));
        let text = std::fs::read_to_string(&path).unwrap();
        let when = at.format(&time::format_description::well_known::Rfc3339).unwrap();
        let edited: Vec<String> = text
            .lines()
            .map(|l| if l.starts_with("activates:") { format!("activates: {when}") } else { l.to_owned() })
            .collect();
        std::fs::write(&path, edited.join("\n") + "\n").unwrap();
    }

    #[test]
    fn prune_removes_only_retired_keys_whose_tokens_have_all_expired() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let add = || rotate(dir.path(), SigningAlg::ES256, KeyMode::Production, Activation::Now).unwrap().0;
        let (oldest, older, active) = (add(), add(), add());
        activated(dir.path(), &oldest, now - time::Duration::hours(2));
        activated(dir.path(), &older, now - time::Duration::hours(1));
        activated(dir.path(), &active, now - time::Duration::minutes(5));
        let next =
            rotate(dir.path(), SigningAlg::ES256, KeyMode::Production, Activation::After(Duration::from_secs(600)))
                .unwrap()
                .0;
        let ttl = Duration::from_secs(15 * 60);

        let (removed, bad) = prune(dir.path(), SigningAlg::ES256, ttl).unwrap();
        assert!(bad.is_empty());
        // `older` signed until 5 minutes ago: its tokens live 10 more minutes.
        assert_eq!(removed.iter().map(|k| &k.kid).collect::<Vec<_>>(), [&oldest.kid]);
        let left = list_keys(dir.path(), SigningAlg::ES256, ttl).unwrap().keys;
        let states: Vec<_> = left.iter().map(|(k, s)| (k.kid.clone(), s.to_string())).collect();
        assert_eq!(
            states,
            [
                (older.kid.clone(), "retired".to_owned()),
                (active.kid.clone(), "active".to_owned()),
                (next.kid.clone(), "next".to_owned())
            ]
        );
    }
}
