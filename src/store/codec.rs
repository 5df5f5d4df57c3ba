//! How session keys and shared details are sealed into stored values. Shared by every
//! backend and by `wxauth store export`/`import`, so that a value moved between backends
//! still opens: the associated data names the user (and app), never a backend's key.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{
    domain::{Dated, Details, PhoneNumber, Profile, SessionKey},
    store::{StoreError, StoredSessionKey, sealed::Sealer},
};

/// Seals and opens the session keys of one user's record: the associated data is the user
/// id and the app, so a sealed key copied to another identity does not open.
pub struct Keys<'a> {
    /// The cipher (`session-keys.secret`).
    pub sealer: &'a Sealer,
    /// The user's id (16 bytes), part of the associated data.
    pub user: &'a [u8],
}

impl Keys<'_> {
    fn context(&self, appid: &str) -> Vec<u8> {
        let mut context = self.user.to_vec();
        context.push(b':');
        context.extend_from_slice(appid.as_bytes());
        context
    }

    /// The stored form of `key` for the identity of `appid`.
    pub fn seal(&self, appid: &str, key: &StoredSessionKey) -> Result<(String, i128), StoreError> {
        let sealed = self
            .sealer
            .seal(key.session_key.expose(), &self.context(appid))
            .map_err(|e| StoreError::Database(e.to_string()))?;
        Ok((sealed, key.issued_at.unix_timestamp_nanos()))
    }

    /// The session key stored (sealed, with its issue time) for the identity of `appid`.
    /// `None` when there is none, or when it does not open (the key file was lost or
    /// replaced): either way the client must log in again.
    pub fn open(&self, appid: &str, stored: Option<&(String, i128)>) -> Result<Option<StoredSessionKey>, StoreError> {
        let Some((sealed, issued)) = stored else { return Ok(None) };
        Ok(match self.sealer.open(sealed, &self.context(appid)) {
            Some(plain) => Some(StoredSessionKey { session_key: SessionKey::new(plain), issued_at: time(*issued)? }),
            None => None,
        })
    }
}

/// A stored time (Unix nanoseconds).
pub fn time(nanos: i128) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|e| StoreError::Corrupt(format!("timestamp: {e}")))
}

/// The pseudonym a phone number is indexed by, from its normalised form
/// ([`PhoneNumber::normalised`]).
pub fn phone_pseudonym(sealer: &Sealer, normalised: &str) -> [u8; 16] {
    sealer.pseudonym("phone", normalised)
}

/// An account's phone number (normalised) as stored where the store seals with the shared
/// key (PostgreSQL, exports): bound to the account's username.
pub fn seal_account_phone(sealer: &Sealer, username: &str, phone: &str) -> Result<String, StoreError> {
    sealer.seal(phone, &account_phone_context(username)).map_err(|e| StoreError::Database(e.to_string()))
}

/// Opens what [`seal_account_phone`] sealed; `None` when it does not open (another key).
pub fn open_account_phone(sealer: &Sealer, username: &str, sealed: &str) -> Option<String> {
    sealer.open(sealed, &account_phone_context(username))
}

fn account_phone_context(username: &str) -> Vec<u8> {
    [b"account-phone:".as_slice(), username.as_bytes()].concat()
}

/// The index entry of the phone number in `details`, if it holds one.
pub fn phone_index(sealer: &Sealer, details: &Details) -> Option<[u8; 16]> {
    details.phone.as_ref().map(|p| phone_pseudonym(sealer, &p.value.normalised()))
}

/// What a user shared through open data ([`crate::domain::Details`]), as stored: JSON,
/// sealed as a whole (it is personal data), bound to the user id. Times are Unix
/// nanoseconds.
#[derive(Default, Serialize, Deserialize)]
pub struct DetailsRecord {
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
    pub fn seal(details: &Details, sealer: &Sealer, user: &[u8]) -> Result<Vec<u8>, StoreError> {
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
    pub fn open(bytes: &[u8], sealer: &Sealer, user: &[u8]) -> Result<Details, StoreError> {
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
    use crate::domain::UserId;

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
}
