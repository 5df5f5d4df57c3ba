//! How a user is stored (schema 2): one compact record per user that holds the session key
//! too, so a login reads one value and changes one value.
//!
//! Schema 1 kept the user and its session key as two JSON values in two trees. At a million
//! users that was about 360 bytes per user in three trees, and sled's memory grows with the
//! number and size of records: the record below is about a third of that, in two trees.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{
    domain::{SessionKey, User, UserId},
    store::{StoreError, StoredSessionKey},
};

/// A user and the newest session key, as stored. Times are Unix nanoseconds.
#[derive(Serialize, Deserialize)]
pub(super) struct UserRecord {
    appid: String,
    openid: String,
    unionid: Option<String>,
    created_at: i128,
    last_login_at: i128,
    session_key: Option<(String, i128)>,
}

impl UserRecord {
    pub(super) fn new(user: &User, key: Option<&StoredSessionKey>) -> Self {
        Self {
            appid: user.appid.clone(),
            openid: user.openid.clone(),
            unionid: user.unionid.clone(),
            created_at: user.created_at.unix_timestamp_nanos(),
            last_login_at: user.last_login_at.unix_timestamp_nanos(),
            session_key: key.map(|k| (k.session_key.expose().to_owned(), k.issued_at.unix_timestamp_nanos())),
        }
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("user record: {e}")))
    }

    pub(super) fn encode(&self) -> Result<Vec<u8>, StoreError> {
        postcard::to_stdvec(self).map_err(|e| StoreError::Corrupt(format!("user record: {e}")))
    }

    /// The user stored under `id`.
    pub(super) fn user(&self, id: UserId) -> Result<User, StoreError> {
        Ok(User {
            id,
            appid: self.appid.clone(),
            openid: self.openid.clone(),
            unionid: self.unionid.clone(),
            created_at: time(self.created_at)?,
            last_login_at: time(self.last_login_at)?,
        })
    }

    /// The session key, if WeChat has sent one.
    pub(super) fn session_key(&self) -> Result<Option<StoredSessionKey>, StoreError> {
        self.session_key
            .as_ref()
            .map(|(key, issued)| {
                Ok(StoredSessionKey { session_key: SessionKey::new(key.clone()), issued_at: time(*issued)? })
            })
            .transpose()
    }
}

fn time(nanos: i128) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|e| StoreError::Corrupt(format!("timestamp: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_is_compact() {
        let now = OffsetDateTime::now_utc();
        let user = User {
            id: UserId::new(),
            appid: "wx4f4bc4dec97d474b".into(),
            openid: "o6_bmjrPTlm6_2sgVt7hMZOPfL2M".into(),
            unionid: Some("o6_bmasdasdsad6_2sgVt7hMZOPfL".into()),
            created_at: now,
            last_login_at: now,
        };
        let key = StoredSessionKey { session_key: SessionKey::new("tiihtNczf5v6AKRyjwEUhQ==".into()), issued_at: now };
        let bytes = UserRecord::new(&user, Some(&key)).encode().unwrap();
        let back = UserRecord::decode(&bytes).unwrap();
        assert_eq!(back.user(user.id).unwrap(), user);
        assert_eq!(back.session_key().unwrap(), Some(key));
        let json = serde_json::to_vec(&user).unwrap().len();
        assert!(bytes.len() * 2 < json + 80, "{} bytes vs {json} as JSON", bytes.len());
    }
}
