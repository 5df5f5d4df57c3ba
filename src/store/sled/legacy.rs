//! Layouts of earlier releases, kept only to migrate from them.
//!
//! - Schema 1 (the first release): JSON users in `users` and JSON session keys in
//!   `session_keys`, both keyed by user id.
//! - Schema 2: one postcard record per user in `user_records`, for exactly one openid of
//!   one app, with its session key.
//! - Schemas 3 to 5: user records without roles, custom claims and a ban.
//! - Schema 5: refresh families without their last refresh and origin.
//! - Schema 6: user records without a deletion (read as they are, written in the current
//!   layout by the next change; the schema number did not change); events with their
//!   address, user agent and details in the clear; values not sealed per user, and
//!   openids and unionids in the clear in index keys.

use serde::{Deserialize, Serialize};

use super::record::{ControlsRecord, IdentityRecord, UserRecord, encode_key};
use crate::store::{StoreError, StoredSessionKey};

/// A schema 1 user (JSON).
#[derive(Serialize, Deserialize)]
pub(super) struct V1User {
    pub(super) appid: String,
    pub(super) openid: String,
    pub(super) unionid: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub(super) created_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub(super) last_login_at: time::OffsetDateTime,
}

/// A schema 2 user record (postcard). Times are Unix nanoseconds.
#[derive(Serialize, Deserialize)]
pub(super) struct V2Record {
    pub(super) appid: String,
    pub(super) openid: String,
    pub(super) unionid: Option<String>,
    pub(super) created_at: i128,
    pub(super) last_login_at: i128,
    pub(super) session_key: Option<(String, i128)>,
}

impl V2Record {
    pub(super) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("schema 2 user record: {e}")))
    }

    /// The schema 1 user and its session key, as schema 2 stored them.
    pub(super) fn from_v1(user: &V1User, key: Option<&StoredSessionKey>) -> Self {
        Self {
            appid: user.appid.clone(),
            openid: user.openid.clone(),
            unionid: user.unionid.clone(),
            created_at: user.created_at.unix_timestamp_nanos(),
            last_login_at: user.last_login_at.unix_timestamp_nanos(),
            session_key: key.map(encode_key),
        }
    }

    /// The same user in schema 3: one identity.
    pub(super) fn upgrade(self) -> UserRecord {
        UserRecord {
            identities: vec![IdentityRecord { appid: self.appid, openid: self.openid, session_key: self.session_key }],
            unionid: self.unionid,
            account: None,
            unionid_shared_with: Vec::new(),
            created_at: self.created_at,
            last_login_at: self.last_login_at,
            controls: ControlsRecord::default(),
        }
    }

    #[cfg(test)]
    pub(super) fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap()
    }
}

/// A schema 5 refresh family (postcard), before sessions: no last refresh, no origin.
#[derive(Serialize, Deserialize)]
pub(super) struct V5FamilyRecord {
    pub(super) verifier_hash: [u8; 32],
    pub(super) generation: u32,
    pub(super) started: i128,
    pub(super) user: [u8; 16],
    pub(super) appid: String,
    pub(super) openid: String,
    pub(super) expires_at: i128,
    pub(super) revoked: bool,
}

/// A user record of schemas 3 to 5 (postcard), before roles, custom claims and bans.
#[derive(Serialize, Deserialize)]
pub(super) struct V3UserRecord {
    pub(super) identities: Vec<IdentityRecord>,
    pub(super) unionid: Option<String>,
    pub(super) account: Option<String>,
    pub(super) unionid_shared_with: Vec<[u8; 16]>,
    pub(super) created_at: i128,
    pub(super) last_login_at: i128,
}

impl V3UserRecord {
    /// The same user with no controls.
    pub(super) fn upgrade(self) -> UserRecord {
        UserRecord {
            identities: self.identities,
            unionid: self.unionid,
            account: self.account,
            unionid_shared_with: self.unionid_shared_with,
            created_at: self.created_at,
            last_login_at: self.last_login_at,
            controls: ControlsRecord::default(),
        }
    }
}

/// The controls of a schema 6 user record, before deletions.
#[derive(Serialize, Deserialize)]
pub(super) struct V6ControlsRecord {
    pub(super) roles: Vec<String>,
    pub(super) claims: String,
    pub(super) ban: Option<(String, Option<i128>, i128)>,
}

/// A user record of schema 6 (postcard): controls without a deletion.
#[derive(Serialize, Deserialize)]
pub(super) struct V6UserRecord {
    pub(super) identities: Vec<IdentityRecord>,
    pub(super) unionid: Option<String>,
    pub(super) account: Option<String>,
    pub(super) unionid_shared_with: Vec<[u8; 16]>,
    pub(super) created_at: i128,
    pub(super) last_login_at: i128,
    pub(super) controls: V6ControlsRecord,
}

impl V6UserRecord {
    /// The same user with no deletion.
    pub(super) fn upgrade(self) -> UserRecord {
        let V6ControlsRecord { roles, claims, ban } = self.controls;
        UserRecord {
            identities: self.identities,
            unionid: self.unionid,
            account: self.account,
            unionid_shared_with: self.unionid_shared_with,
            created_at: self.created_at,
            last_login_at: self.last_login_at,
            controls: ControlsRecord { roles, claims, ban, deletion: None },
        }
    }
}

/// A schema 6 event (postcard). Times are Unix nanoseconds.
#[derive(Serialize, Deserialize)]
pub(super) struct V6EventRecord {
    at: i128,
    kind: String,
    user: Option<[u8; 16]>,
    appid: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    actor: Option<String>,
    details: String,
}

impl V6EventRecord {
    pub(super) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("schema 6 event: {e}")))
    }

    /// The event in the current layout, its private part not sealed (the migration seals
    /// it).
    pub(super) fn upgrade(self) -> Result<super::events::EventRecord, StoreError> {
        let head = (self.at, self.kind, self.user, self.appid, self.actor);
        super::events::EventRecord::clear(head, self.ip, self.user_agent, self.details)
    }
}
