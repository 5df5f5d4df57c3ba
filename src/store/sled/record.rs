//! How a user is stored (since schema 3): one compact record per user, holding its WeChat
//! identities with each one's newest session key, so a login reads one value and changes
//! one value. Session keys are per identity because WeChat issues them per mini-program.
//!
//! Earlier layouts are in [`super::legacy`], kept only to migrate from them.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub(super) use crate::store::codec::{DetailsRecord, Keys, time};
use crate::{
    domain::{Ban, Controls, CustomClaims, Deletion, Identity, User, UserId},
    store::{StoreError, StoredSessionKey},
};

/// One WeChat identity of a user, as stored.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct IdentityRecord {
    pub(super) appid: String,
    pub(super) openid: String,
    /// The newest session key and when it was first received (Unix nanoseconds).
    pub(super) session_key: Option<(String, i128)>,
}

/// A user, as stored. Times are Unix nanoseconds.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct UserRecord {
    pub(super) identities: Vec<IdentityRecord>,
    pub(super) unionid: Option<String>,
    pub(super) account: Option<String>,
    pub(super) unionid_shared_with: Vec<[u8; 16]>,
    pub(super) created_at: i128,
    pub(super) last_login_at: i128,
    /// Since schema 6.
    pub(super) controls: ControlsRecord,
}

/// A user's roles, custom claims (compact JSON, empty for none) and ban, as stored.
#[derive(Clone, Default, Serialize, Deserialize)]
pub(super) struct ControlsRecord {
    pub(super) roles: Vec<String>,
    pub(super) claims: String,
    /// Reason, end, start (Unix nanoseconds).
    pub(super) ban: Option<(String, Option<i128>, i128)>,
    /// Asked, due (Unix nanoseconds). Absent from schema-6 records, which decode as
    /// [`super::legacy::V6ControlsRecord`].
    pub(super) deletion: Option<(i128, i128)>,
}

impl ControlsRecord {
    pub(super) fn new(controls: &Controls) -> Self {
        Self {
            roles: controls.roles.clone(),
            claims: if controls.claims.is_empty() { String::new() } else { controls.claims.to_json() },
            ban: controls.ban.as_ref().map(|b| {
                (b.reason.clone(), b.until.map(OffsetDateTime::unix_timestamp_nanos), b.at.unix_timestamp_nanos())
            }),
            deletion: controls
                .deletion
                .map(|d| (d.requested_at.unix_timestamp_nanos(), d.erase_at.unix_timestamp_nanos())),
        }
    }

    pub(super) fn controls(&self) -> Result<Controls, StoreError> {
        let claims = match self.claims.as_str() {
            "" => CustomClaims::default(),
            text => CustomClaims::parse(text).map_err(|e| StoreError::Corrupt(format!("custom claims: {e}")))?,
        };
        let ban = match &self.ban {
            Some((reason, until, at)) => {
                Some(Ban { reason: reason.clone(), until: until.map(time).transpose()?, at: time(*at)? })
            }
            None => None,
        };
        let deletion = match self.deletion {
            Some((requested_at, erase_at)) => {
                Some(Deletion { requested_at: time(requested_at)?, erase_at: time(erase_at)? })
            }
            None => None,
        };
        Ok(Controls { roles: self.roles.clone(), claims, ban, deletion })
    }
}

impl UserRecord {
    /// A user with no identity yet, created at `now`.
    pub(super) fn empty(now: OffsetDateTime) -> Self {
        let now = now.unix_timestamp_nanos();
        Self {
            identities: Vec::new(),
            unionid: None,
            account: None,
            unionid_shared_with: Vec::new(),
            created_at: now,
            last_login_at: now,
            controls: ControlsRecord::default(),
        }
    }

    /// A record of this layout, of schema 6 (without a deletion) or of schemas 3 to 5
    /// (without controls), which the next write stores in this layout. An older record is
    /// too short to read as a newer one: postcard fails at its end.
    pub(super) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        postcard::from_bytes(bytes).or_else(|e| {
            if let Ok(v6) = postcard::from_bytes::<super::legacy::V6UserRecord>(bytes) {
                return Ok(v6.upgrade());
            }
            let old: super::legacy::V3UserRecord =
                postcard::from_bytes(bytes).map_err(|_| StoreError::Corrupt(format!("user record: {e}")))?;
            Ok(old.upgrade())
        })
    }

    pub(super) fn encode(&self) -> Result<Vec<u8>, StoreError> {
        postcard::to_stdvec(self).map_err(|e| StoreError::Corrupt(format!("user record: {e}")))
    }

    /// The user stored under `id`.
    pub(super) fn user(&self, id: UserId) -> Result<User, StoreError> {
        Ok(User {
            id,
            identities: self
                .identities
                .iter()
                .map(|i| Identity { appid: i.appid.clone(), openid: i.openid.clone() })
                .collect(),
            unionid: self.unionid.clone(),
            account: self.account.clone(),
            unionid_shared_with: self.unionid_shared_with.iter().copied().map(UserId::from_bytes).collect(),
            created_at: time(self.created_at)?,
            last_login_at: time(self.last_login_at)?,
            controls: self.controls.controls()?,
        })
    }

    /// The identity of `appid`, if one is bound.
    pub(super) fn identity(&self, appid: &str) -> Option<&IdentityRecord> {
        self.identities.iter().find(|i| i.appid == appid)
    }

    /// The identity of `appid` for changing.
    pub(super) fn identity_mut(&mut self, appid: &str) -> Option<&mut IdentityRecord> {
        self.identities.iter_mut().find(|i| i.appid == appid)
    }

    pub(super) fn last_login_at(&self) -> Result<OffsetDateTime, StoreError> {
        time(self.last_login_at)
    }
}

impl IdentityRecord {
    /// An identity with its session key already sealed ([`Keys::seal`]).
    pub(super) fn new(appid: &str, openid: &str, sealed_key: Option<(String, i128)>) -> Self {
        Self { appid: appid.to_owned(), openid: openid.to_owned(), session_key: sealed_key }
    }
}

pub(super) fn encode_key(key: &StoredSessionKey) -> (String, i128) {
    (key.session_key.expose().to_owned(), key.issued_at.unix_timestamp_nanos())
}

/// An account, as stored under its username.
#[derive(Serialize, Deserialize)]
pub(super) struct AccountRecord {
    pub(super) user: [u8; 16],
    /// The argon2id PHC string.
    pub(super) password_hash: String,
    pub(super) created_at: i128,
}

impl AccountRecord {
    pub(super) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("account record: {e}")))
    }

    pub(super) fn encode(&self) -> Result<Vec<u8>, StoreError> {
        postcard::to_stdvec(self).map_err(|e| StoreError::Corrupt(format!("account record: {e}")))
    }
}

/// A bind ticket, as stored under the SHA-256 of its text. Holds the session key (sealed,
/// bound to the ticket's id), which therefore never leaves the server while the client
/// holds the ticket.
#[derive(Serialize, Deserialize)]
pub(super) struct TicketRecord {
    pub(super) appid: String,
    pub(super) openid: String,
    pub(super) unionid: Option<String>,
    pub(super) session_key: String,
    pub(super) expires_at: i128,
}

impl TicketRecord {
    pub(super) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("ticket record: {e}")))
    }

    pub(super) fn encode(&self) -> Result<Vec<u8>, StoreError> {
        postcard::to_stdvec(self).map_err(|e| StoreError::Corrupt(format!("ticket record: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::SessionKey, store::sealed::Sealer};

    #[test]
    fn a_record_round_trips_and_is_compact() {
        let now = OffsetDateTime::now_utc();
        let key = StoredSessionKey { session_key: SessionKey::new("tiihtNczf5v6AKRyjwEUhQ==".into()), issued_at: now };
        let (sealer, id) = (Sealer::ephemeral().unwrap(), UserId::new());
        let keys = Keys { sealer: &sealer, user: id.as_bytes() };
        let mut record = UserRecord::empty(now);
        let sealed = keys.seal("wx4f4bc4dec97d474b", &key).unwrap();
        record.identities.push(IdentityRecord::new("wx4f4bc4dec97d474b", "o6_bmjrPTlm6_2sgVt7hMZOPfL2M", Some(sealed)));
        record.unionid = Some("o6_bmasdasdsad6_2sgVt7hMZOPfL".into());
        let bytes = record.encode().unwrap();
        let back = UserRecord::decode(&bytes).unwrap();
        assert_eq!(back.user(id).unwrap(), record.user(id).unwrap());
        assert_eq!(
            keys.open("wx4f4bc4dec97d474b", back.identity("wx4f4bc4dec97d474b").unwrap().session_key.as_ref()).unwrap(),
            Some(key)
        );
        let other = UserId::new();
        let moved = Keys { sealer: &sealer, user: other.as_bytes() };
        assert_eq!(
            moved
                .open("wx4f4bc4dec97d474b", back.identity("wx4f4bc4dec97d474b").unwrap().session_key.as_ref())
                .unwrap(),
            None
        );
        // The sealed key (nonce, tag, base64) costs about 50 bytes over the plaintext.
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
    }
}
