//! The open-data use cases: a phone number (by the current code API or by legacy
//! `encryptedData`) and a profile (legacy `getUserInfo`), verified for the bearer's user and
//! kept on it.

use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::{Auth, BearerFailure, Caller, Internal};
use crate::{
    devmock::{self, FakeData, FakeOpenData},
    domain::{Dated, DomainError, JsCode, PhoneNumber, Profile},
    opendata::{self, OpenDataError},
    store::StoreError,
    token::Rejection,
    wechat::WechatError,
};

/// Why an open-data operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenDataFailure {
    /// The bearer token is not acceptable, or its user no longer exists.
    #[error("{0}")]
    Rejected(Rejection),
    /// The body does not have the shape the operation needs.
    #[error("{0}")]
    InvalidRequest(String),
    /// The phone `code` is not a code at all.
    #[error(transparent)]
    InvalidCode(DomainError),
    /// The data cannot be used: malformed, stale or for another app.
    #[error(transparent)]
    Data(#[from] OpenDataError),
    /// No session key is stored for the identity the token names: the client must log in
    /// again before fetching the data.
    #[error(
        "no session key is stored for this login: call wx.login, POST /v1/login, then fetch the data again \
         and retry"
    )]
    NoSessionKey,
    /// `raw_data` does not match `signature` under the session key.
    #[error("signature does not match raw_data under the session key of your latest login")]
    BadSignature,
    /// The token names an app this server no longer serves.
    #[error("the token was issued through app {0:?}, which this server no longer serves; log in again")]
    UnknownApp(String),
    /// WeChat refused or failed (the phone code API).
    #[error(transparent)]
    Wechat(#[from] WechatError),
    /// The server failed.
    #[error(transparent)]
    Internal(#[from] Internal),
}

impl From<BearerFailure> for OpenDataFailure {
    fn from(f: BearerFailure) -> Self {
        match f {
            BearerFailure::Rejected(r) => Self::Rejected(r),
            BearerFailure::Internal(e) => Self::Internal(e),
        }
    }
}

/// What proves the phone number: one of the two APIs' payloads, unchecked.
#[derive(Debug)]
pub enum PhoneProof<'a> {
    /// The current API: the code from the `getPhoneNumber` button.
    Code(&'a str),
    /// The legacy API: `encryptedData` and `iv` from the same button.
    Encrypted {
        /// `encryptedData`.
        encrypted_data: &'a str,
        /// `iv`.
        iv: &'a str,
    },
}

/// A legacy `getUserInfo` payload, unchecked.
#[derive(Debug)]
pub struct ProfileRequest<'a> {
    /// `encryptedData`.
    pub encrypted_data: &'a str,
    /// `iv`.
    pub iv: &'a str,
    /// `rawData`, checked against `signature` when given.
    pub raw_data: Option<&'a str>,
    /// `signature`: `hex(sha1(rawData + session_key))`.
    pub signature: Option<&'a str>,
}

/// A profile as decrypted and as kept.
#[derive(Debug)]
pub struct SharedProfile {
    /// The decrypted object without its watermark, with WeChat's field names.
    pub decrypted: Map<String, Value>,
    /// What was kept on the user.
    pub profile: Profile,
}

impl Auth {
    /// Verifies the bearer's phone number with WeChat (by code) or by decrypting it with
    /// the stored session key, and keeps it on the user. Nothing is stored on failure.
    #[tracing::instrument(skip_all, fields(user_id = tracing::field::Empty, via))]
    pub async fn phone(
        &self,
        bearer: &str,
        proof: PhoneProof<'_>,
        peer: &super::Peer<'_>,
    ) -> Result<PhoneNumber, OpenDataFailure> {
        let caller = self.caller(bearer).await?;
        tracing::Span::current().record("user_id", tracing::field::display(caller.user.id));
        let via = match proof {
            PhoneProof::Code(_) => "code",
            PhoneProof::Encrypted { .. } => "encrypted_data",
        };
        let phone = match proof {
            PhoneProof::Code(raw) => {
                tracing::Span::current().record("via", "code");
                let code = JsCode::parse(raw).map_err(OpenDataFailure::InvalidCode)?;
                let appid = &caller.identity.appid;
                let app = self.app(Some(appid)).map_err(|_| OpenDataFailure::UnknownApp(appid.clone()))?;
                app.phone_number(&code, &caller.identity.openid).await?
            }
            PhoneProof::Encrypted { encrypted_data, iv } => {
                tracing::Span::current().record("via", "encrypted_data");
                let object = self.decrypt(&caller, encrypted_data, iv).await?;
                opendata::phone(&object).ok_or_else(|| {
                    OpenDataFailure::InvalidRequest(
                        "encrypted_data holds no phone number: send what getPhoneNumber gave".into(),
                    )
                })?
            }
        };
        let at = OffsetDateTime::now_utc();
        self.parts.store.set_phone(&caller.user.id, Dated { value: phone.clone(), at }).await.map_err(gone)?;
        // Never the number itself: it is personal data.
        tracing::info!("phone number verified and stored");
        let event = self.caller_event(crate::store::events::EventKind::PhoneVerified, &caller, peer);
        self.record(event.detail("via", via)).await;
        Ok(phone)
    }

    /// Decrypts the bearer's legacy `getUserInfo` data, checks `raw_data` against its
    /// signature when given, and keeps the profile on the user.
    #[tracing::instrument(skip_all, fields(user_id = tracing::field::Empty))]
    pub async fn profile(
        &self,
        bearer: &str,
        req: ProfileRequest<'_>,
        peer: &super::Peer<'_>,
    ) -> Result<SharedProfile, OpenDataFailure> {
        let caller = self.caller(bearer).await?;
        tracing::Span::current().record("user_id", tracing::field::display(caller.user.id));
        let signed = match (req.raw_data, req.signature) {
            (Some(raw), Some(signature)) => Some((raw, signature)),
            (None, None) => None,
            _ => {
                return Err(OpenDataFailure::InvalidRequest("send raw_data and signature together, or neither".into()));
            }
        };
        let (object, key) = self.decrypt_with_key(&caller, req.encrypted_data, req.iv).await?;
        if let Some((raw, signature)) = signed
            && !opendata::raw_data_signature_matches(raw, &key, signature)
        {
            return Err(OpenDataFailure::BadSignature);
        }
        let profile = opendata::profile(&object).ok_or_else(|| {
            OpenDataFailure::InvalidRequest("encrypted_data holds no profile: send what getUserInfo gave".into())
        })?;
        let at = OffsetDateTime::now_utc();
        self.parts.store.set_profile(&caller.user.id, Dated { value: profile.clone(), at }).await.map_err(gone)?;
        tracing::info!("profile decrypted and stored");
        let event = self.caller_event(crate::store::events::EventKind::ProfileUpdated, &caller, peer);
        self.record(event.detail("signed", signed.is_some())).await;
        Ok(SharedProfile { decrypted: object, profile })
    }

    async fn decrypt(
        &self,
        caller: &Caller,
        encrypted_data: &str,
        iv: &str,
    ) -> Result<Map<String, Value>, OpenDataFailure> {
        Ok(self.decrypt_with_key(caller, encrypted_data, iv).await?.0)
    }

    /// Decrypts with the session key of the identity the token names: the key of the app
    /// the person logged in through, whose watermark the data must carry.
    async fn decrypt_with_key(
        &self,
        caller: &Caller,
        encrypted_data: &str,
        iv: &str,
    ) -> Result<(Map<String, Value>, String), OpenDataFailure> {
        let key = self.session_key_of(caller).await?;
        let object = opendata::decrypt(&key, iv, encrypted_data, &caller.identity.appid)?;
        Ok((object, key))
    }

    /// The newest session key of the identity the token names.
    async fn session_key_of(&self, caller: &Caller) -> Result<String, OpenDataFailure> {
        let appid = &caller.identity.appid;
        let stored = self.parts.store.session_key(&caller.user.id, appid).await?;
        // A key of another openid (the token predates an unbind and a new bind) is no key.
        let bound = caller.user.openid_in(appid) == Some(caller.identity.openid.as_str());
        match stored.filter(|_| bound) {
            Some(stored) => Ok(stored.session_key.expose().to_owned()),
            None => Err(OpenDataFailure::NoSessionKey),
        }
    }
}

/// A user removed while its token still worked: the same answer as for any vanished user.
fn gone(e: StoreError) -> OpenDataFailure {
    match e {
        StoreError::NoSuchUser => OpenDataFailure::Rejected(Rejection::Invalid),
        other => other.into(),
    }
}

impl Auth {
    /// Dev mode only: fake open data for the bearer, encrypted with the session key the
    /// mock WeChat gave at their latest login, exactly as a mini-program would receive it.
    pub async fn fake_open_data(&self, bearer: &str, data: FakeData) -> Result<FakeOpenData, OpenDataFailure> {
        let caller = self.caller(bearer).await?;
        let key = self.session_key_of(&caller).await?;
        let data = match data {
            FakeData::Phone { pure_phone_number } if pure_phone_number.is_empty() => {
                FakeData::Phone { pure_phone_number: devmock::fake_phone_number(&caller.identity.openid) }
            }
            FakeData::Phone { pure_phone_number }
                if !(5..=20).contains(&pure_phone_number.len())
                    || !pure_phone_number.bytes().all(|b| b.is_ascii_digit()) =>
            {
                return Err(OpenDataFailure::InvalidRequest("pure_phone_number must be 5 to 20 digits".into()));
            }
            other => other,
        };
        Ok(devmock::fake_open_data(&key, &caller.identity.appid, &caller.identity.openid, data)?)
    }
}
