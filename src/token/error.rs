//! Why a token was refused (the client's fault) and what can fail in the token module
//! (the server's).

use std::{
    fmt,
    path::{Path, PathBuf},
};

use crate::domain::{KeyMode, SigningAlg};

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
    pub(super) fn io(path: &Path, source: std::io::Error) -> Self {
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
