//! Admin API tokens as the store keeps them: a name, a role, and only the SHA-256 of the
//! token's secret, found by the token's id. Revoked tokens stay, for the record (events
//! name them), and never work again.

use time::OffsetDateTime;

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRole {
    /// Read: search users, read events, introspect tokens.
    Read,
    /// Read and change: ban, revoke sessions, delete, set roles and claims.
    Write,
}

impl AdminRole {
    /// `read` or `write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }

    /// The role named `text` (`read` or `write`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            _ => None,
        }
    }
}

/// An admin token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminToken {
    /// The token's id (a UUID v7, in the token's text).
    pub id: [u8; 16],
    /// Its name, unique, given at creation.
    pub name: String,
    /// What it may do.
    pub role: AdminRole,
    /// SHA-256 of the token's secret part.
    pub secret_hash: [u8; 32],
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
}
