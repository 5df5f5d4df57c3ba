//! Key-ring administration: the ring the server signs with, and the `keys` commands'
//! listing and rotation.

use std::path::Path;

use bytes::Bytes;
use jsonwebtoken::jwk::JwkSet;
use time::OffsetDateTime;

use super::{
    TokenError,
    keys::{self, RingKey},
};
use crate::domain::{KeyMode, SigningAlg};

/// One immutable view of the keys directory, with the JWKS serialized once for it.
pub(super) struct Ring {
    pub(super) keys: Vec<RingKey>,
    pub(super) signer: usize,
    pub(super) jwks: Bytes,
}

impl Ring {
    pub(super) fn new(keys: Vec<RingKey>, alg: SigningAlg, dir: &Path, mode: KeyMode) -> Result<Self, TokenError> {
        if let Some(key) = keys.iter().find(|k| k.mode != mode) {
            return Err(TokenError::ModeMismatch {
                dir: dir.into(),
                kid: key.kid.clone(),
                key_mode: key.mode,
                run_mode: if mode == KeyMode::Dev { "serve --dev" } else { "production" },
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
    /// Dev-mode or production.
    pub mode: KeyMode,
}

/// Lists the keys in `dir`, oldest first.
pub fn list_keys(dir: &Path) -> Result<Vec<KeyInfo>, TokenError> {
    Ok(keys::load_dir(dir)?
        .into_iter()
        .map(|k| KeyInfo { kid: k.kid, alg: k.alg, created: k.created, mode: k.mode })
        .collect())
}

/// Adds a new key of `alg` to the ring in `dir`; it signs from the next start (or reload).
/// The key takes the mode of the keys already there (so `serve --dev` followed by
/// `keys rotate` keeps working); an empty ring gets a key of the `requested` mode.
pub fn rotate(dir: &Path, alg: SigningAlg, requested: KeyMode) -> Result<KeyInfo, TokenError> {
    let existing = keys::load_dir(dir)?;
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
    let k = keys::generate(dir, alg, mode)?;
    Ok(KeyInfo { kid: k.kid, alg: k.alg, created: k.created, mode: k.mode })
}
