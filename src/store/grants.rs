//! One-time grants of the browser and scan-login flows (issue 22): a pending browser
//! authorization, a wxauth authorization code, a scan-login session. Each lives for
//! minutes, is found by the SHA-256 of a secret its holder has, and is spent at most once
//! (taken), or changed only from the state it was read in (compare-and-swap), on every
//! backend: a flow may start at one replica and end at another.
//!
//! The payload is the flow's own JSON, sealed at rest like a bind ticket; the store knows
//! only its kind and expiry. Grants are not exported: they outlive no flow.

use time::OffsetDateTime;

/// Where a grant is stored: the SHA-256 of its secret.
pub type GrantId = [u8; 32];

/// What a grant is for; a grant is only ever found as the kind it was stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum GrantKind {
    /// A browser sent to WeChat's authorize page, waiting for the callback.
    Authorization = 1,
    /// A wxauth authorization code waiting for `POST /v1/token`.
    Code = 2,
    /// A scan-login session, pending or confirmed.
    Scan = 3,
}

impl GrantKind {
    /// The kind stored as `byte`.
    pub(super) fn from_byte(byte: u8) -> Option<Self> {
        [Self::Authorization, Self::Code, Self::Scan].into_iter().find(|k| *k as u8 == byte)
    }

    /// What seals a grant's payload is bound to: its id and kind, so a payload moved to
    /// another row or kind does not open.
    pub(super) fn context(self, id: &GrantId) -> Vec<u8> {
        let mut context = id.to_vec();
        context.push(self as u8);
        context
    }
}

/// A grant as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// What it is for.
    pub kind: GrantKind,
    /// The flow's state (JSON), sealed at rest.
    pub payload: String,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
}
