//! How a user is stored (schema 3): one compact record per user, holding its WeChat
//! identities with each one's newest session key, so a login reads one value and changes
//! one value. Session keys are per identity because WeChat issues them per mini-program.
//!
//! Earlier layouts are in [`super::legacy`], kept only to migrate from them.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{
    domain::{Dated, Details, Identity, PhoneNumber, Profile, SessionKey, User, UserId},
    store::{StoreError, StoredSessionKey, sealed::Sealer},
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

/// Seals and opens the session keys of one user's record: the associated data is the user
/// id and the app, so a sealed key copied to another identity does not open.
pub(super) struct Keys<'a> {
    pub(super) sealer: &'a Sealer,
    pub(super) user: &'a [u8],
}

impl Keys<'_> {
    fn context(&self, appid: &str) -> Vec<u8> {
        let mut context = self.user.to_vec();
        context.push(b':');
        context.extend_from_slice(appid.as_bytes());
        context
    }

    /// The stored form of `key` for the identity of `appid`.
    pub(super) fn seal(&self, appid: &str, key: &StoredSessionKey) -> Result<(String, i128), StoreError> {
        let sealed = self
            .sealer
            .seal(key.session_key.expose(), &self.context(appid))
            .map_err(|e| StoreError::Database(e.to_string()))?;
        Ok((sealed, key.issued_at.unix_timestamp_nanos()))
    }

    /// The identity's session key. `None` when there is none, or when it does not open
    /// (the key file was lost or replaced): either way the client must log in again.
    pub(super) fn open(&self, identity: &IdentityRecord) -> Result<Option<StoredSessionKey>, StoreError> {
        let Some((sealed, issued)) = &identity.session_key else { return Ok(None) };
        Ok(match self.sealer.open(sealed, &self.context(&identity.appid)) {
            Some(plain) => Some(StoredSessionKey { session_key: SessionKey::new(plain), issued_at: time(*issued)? }),
            None => None,
        })
    }
}

pub(super) fn encode_key(key: &StoredSessionKey) -> (String, i128) {
    (key.session_key.expose().to_owned(), key.issued_at.unix_timestamp_nanos())
}

pub(super) fn time(nanos: i128) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|e| StoreError::Corrupt(format!("timestamp: {e}")))
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

/// What a user shared through open data ([`crate::domain::Details`]), as stored: JSON,
/// sealed as a whole (it is personal data), bound to the user id. Times are Unix
/// nanoseconds.
#[derive(Default, Serialize, Deserialize)]
pub(super) struct DetailsRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phone: Option<PhoneRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    profile: Option<ProfileRecord>,
}

#[derive(Serialize, Deserialize)]
struct PhoneRecord {
    phone_number: String,
    pure_phone_number: String,
    country_code: String,
    at: i128,
}

#[derive(Serialize, Deserialize)]
struct ProfileRecord {
    nickname: String,
    avatar_url: String,
    gender: u8,
    country: String,
    province: String,
    city: String,
    language: String,
    at: i128,
}

impl DetailsRecord {
    fn context(user: &[u8]) -> Vec<u8> {
        [b"details:".as_slice(), user].concat()
    }

    /// The stored form of `details` for the user `user`.
    pub(super) fn seal(details: &Details, sealer: &Sealer, user: &[u8]) -> Result<Vec<u8>, StoreError> {
        let record = Self {
            phone: details.phone.as_ref().map(|p| PhoneRecord {
                phone_number: p.value.phone_number.clone(),
                pure_phone_number: p.value.pure_phone_number.clone(),
                country_code: p.value.country_code.clone(),
                at: p.at.unix_timestamp_nanos(),
            }),
            profile: details.profile.as_ref().map(|p| ProfileRecord {
                nickname: p.value.nickname.clone(),
                avatar_url: p.value.avatar_url.clone(),
                gender: p.value.gender,
                country: p.value.country.clone(),
                province: p.value.province.clone(),
                city: p.value.city.clone(),
                language: p.value.language.clone(),
                at: p.at.unix_timestamp_nanos(),
            }),
        };
        let json = serde_json::to_string(&record).map_err(|e| StoreError::Corrupt(format!("details: {e}")))?;
        let sealed = sealer.seal(&json, &Self::context(user)).map_err(|e| StoreError::Database(e.to_string()))?;
        Ok(sealed.into_bytes())
    }

    /// The details stored for `user`. Empty when they do not open (the key file was lost
    /// or replaced): unreadable is as good as absent, and the person can share them again.
    pub(super) fn open(bytes: &[u8], sealer: &Sealer, user: &[u8]) -> Result<Details, StoreError> {
        let Some(json) = std::str::from_utf8(bytes).ok().and_then(|text| sealer.open(text, &Self::context(user)))
        else {
            tracing::warn!("a user's stored details do not open with this key file; treating them as absent");
            return Ok(Details::default());
        };
        let record: Self = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("details: {e}")))?;
        Ok(Details {
            phone: record
                .phone
                .map(|p| -> Result<_, StoreError> {
                    Ok(Dated {
                        value: PhoneNumber {
                            phone_number: p.phone_number,
                            pure_phone_number: p.pure_phone_number,
                            country_code: p.country_code,
                        },
                        at: time(p.at)?,
                    })
                })
                .transpose()?,
            profile: record
                .profile
                .map(|p| -> Result<_, StoreError> {
                    Ok(Dated {
                        value: Profile {
                            nickname: p.nickname,
                            avatar_url: p.avatar_url,
                            gender: p.gender,
                            country: p.country,
                            province: p.province,
                            city: p.city,
                            language: p.language,
                        },
                        at: time(p.at)?,
                    })
                })
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_open_only_for_the_user_they_were_sealed_for() {
        let sealer = Sealer::ephemeral().unwrap();
        let (alice, bob) = (UserId::new(), UserId::new());
        let phone = PhoneNumber {
            phone_number: "+8613800138000".into(),
            pure_phone_number: "13800138000".into(),
            country_code: "86".into(),
        };
        let details = Details { phone: Some(Dated { value: phone, at: OffsetDateTime::now_utc() }), profile: None };
        let sealed = DetailsRecord::seal(&details, &sealer, alice.as_bytes()).unwrap();
        assert!(!sealed.windows(11).any(|w| w == b"13800138000"), "stored in plaintext");
        assert_eq!(DetailsRecord::open(&sealed, &sealer, alice.as_bytes()).unwrap().phone, details.phone);
        // Copied onto another user's record, they do not open.
        assert_eq!(DetailsRecord::open(&sealed, &sealer, bob.as_bytes()).unwrap(), Details::default());
    }

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
        assert_eq!(keys.open(back.identity("wx4f4bc4dec97d474b").unwrap()).unwrap(), Some(key));
        let other = UserId::new();
        let moved = Keys { sealer: &sealer, user: other.as_bytes() };
        assert_eq!(moved.open(back.identity("wx4f4bc4dec97d474b").unwrap()).unwrap(), None);
        // The sealed key (nonce, tag, base64) costs about 50 bytes over the plaintext.
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
    }
}
