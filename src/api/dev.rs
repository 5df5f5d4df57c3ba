//! `POST /v1/dev/open-data` (dev mode only): fakes the encrypted data WeChat gives a
//! mini-program, so that the open-data flow runs from Swagger UI without a phone. In
//! production `api::routes` answers 404 for it like for any unknown path, whatever the
//! request holds, and the document does not show it.

use std::sync::Arc;

use poem_openapi::{ApiResponse, Enum, Object, OpenApi, payload::Json, types::Example};

use super::{ApiTags, error::DevError, me::BearerToken};
use crate::{
    auth::Auth,
    devmock::{FakeData, FakeOpenData},
};

/// Which getter of the mini-program to fake.
#[derive(Debug, Enum)]
#[oai(rename_all = "lowercase")]
pub enum DevDataKind {
    /// `getPhoneNumber` (older base libraries): send the answer to `POST /v1/me/phone`.
    Phone,
    /// Legacy `getUserInfo`: send the answer to `POST /v1/me/profile`.
    Profile,
}

/// What to fake.
#[derive(Debug, Object)]
#[oai(example)]
pub struct DevOpenDataRequest {
    /// `phone` or `profile`.
    pub kind: DevDataKind,
    /// With `phone`: the number, digits only and without country code (default: one
    /// derived from the openid, the same every time).
    #[oai(nullable)]
    pub pure_phone_number: Option<String>,
}

impl Example for DevOpenDataRequest {
    fn example() -> Self {
        Self { kind: DevDataKind::Phone, pure_phone_number: Some("13912345678".into()) }
    }
}

/// Fake open data, as the mini-program would receive it.
#[derive(Debug, Object)]
pub struct DevOpenDataBody {
    /// `encryptedData`.
    pub encrypted_data: String,
    /// `iv`.
    pub iv: String,
    /// `rawData` (profiles only).
    #[oai(skip_serializing_if_is_none)]
    pub raw_data: Option<String>,
    /// `signature` (profiles only).
    #[oai(skip_serializing_if_is_none)]
    pub signature: Option<String>,
}

impl From<FakeOpenData> for DevOpenDataBody {
    fn from(f: FakeOpenData) -> Self {
        Self { encrypted_data: f.encrypted_data, iv: f.iv, raw_data: f.raw_data, signature: f.signature }
    }
}

/// Answer of `POST /v1/dev/open-data`.
#[derive(Debug, ApiResponse)]
pub enum DevOpenDataResponse {
    /// Encrypted with the session key the mock gave at the bearer's latest login.
    #[oai(status = 200)]
    Ok(Json<DevOpenDataBody>),
}

/// Dev-mode helpers.
pub struct DevApi {
    /// The service.
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::Dev")]
impl DevApi {
    /// Fake encrypted open data (dev mode only)
    ///
    /// Returns the `encryptedData` and `iv` (and, for a profile, `rawData` and `signature`)
    /// that WeChat would give the logged-in user's mini-program, encrypted with the session
    /// key of their latest login. Send them to `POST /v1/me/phone` or `POST /v1/me/profile`.
    /// Log in again and the old data turns `session_key_stale`, as in production.
    #[oai(path = "/v1/dev/open-data", method = "post", operation_id = "devOpenData")]
    async fn open_data(
        &self,
        token: BearerToken,
        body: Json<DevOpenDataRequest>,
    ) -> Result<DevOpenDataResponse, DevError> {
        let data = match body.0.kind {
            DevDataKind::Phone => FakeData::Phone { pure_phone_number: body.0.pure_phone_number.unwrap_or_default() },
            DevDataKind::Profile => FakeData::Profile,
        };
        let fake = self.auth.fake_open_data(&token.0.token, data).await?;
        Ok(DevOpenDataResponse::Ok(Json(fake.into())))
    }
}
