//! `POST /v1/me/phone` and `POST /v1/me/profile`: what the person shares through WeChat's
//! open data, verified and kept on the user.

use std::sync::Arc;

use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json, types::Example};

use super::{
    ApiTags, NO_STORE,
    error::{PhoneError, ProfileError},
    login::CodeText,
    me::BearerToken,
};
use crate::{
    auth::{Auth, OpenDataFailure, PhoneProof, ProfileRequest, SharedProfile},
    domain::PhoneNumber,
};

/// Phone request: `code` (the current API), or `encrypted_data` with `iv` (the legacy one).
#[derive(Debug, Object)]
#[oai(example)]
pub struct PhoneRequest {
    /// The code from `<button open-type="getPhoneNumber">` (`e.detail.code`; single use,
    /// valid 5 minutes; not a `wx.login` code). The server asks WeChat for the number.
    #[oai(nullable)]
    pub code: Option<CodeText>,
    /// Or, from the same button in older base libraries, `e.detail.encryptedData`: decrypted
    /// with the session key of the person's latest login.
    #[oai(nullable)]
    pub encrypted_data: Option<String>,
    /// With `encrypted_data`: `e.detail.iv`.
    #[oai(nullable)]
    pub iv: Option<String>,
}

impl Example for PhoneRequest {
    fn example() -> Self {
        Self {
            code: Some(CodeText("e31968a7f94cc5ee25fafc2aef2773f0bb8c3937b22520eb8ee345274d00c144".into())),
            encrypted_data: None,
            iv: None,
        }
    }
}

/// A phone number WeChat vouched for.
#[derive(Debug, Object)]
pub struct PhoneBody {
    /// With the country code, e.g. `+8613800138000` (`+` is absent for some regions).
    pub phone_number: String,
    /// Without it, e.g. `13800138000`.
    pub pure_phone_number: String,
    /// e.g. `86`.
    pub country_code: String,
}

impl From<PhoneNumber> for PhoneBody {
    fn from(p: PhoneNumber) -> Self {
        Self { phone_number: p.phone_number, pure_phone_number: p.pure_phone_number, country_code: p.country_code }
    }
}

/// Answer of `POST /v1/me/phone`.
#[derive(Debug, ApiResponse)]
pub enum PhoneResponse {
    /// Verified and kept on the user; `GET /v1/me` shows it from now on.
    #[oai(status = 200)]
    Ok(
        Json<PhoneBody>,
        /// Personal data: never cached.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// Profile request: what legacy `wx.getUserInfo` gave (with `withCredentials: true`).
#[derive(Debug, Object)]
pub struct ProfileRequestBody {
    /// `encryptedData`.
    pub encrypted_data: String,
    /// `iv`.
    pub iv: String,
    /// `rawData`: checked against `signature` when given (send both or neither).
    #[oai(nullable)]
    pub raw_data: Option<String>,
    /// `signature`: `sha1(rawData + session_key)` in hex.
    #[oai(nullable)]
    pub signature: Option<String>,
}

/// The decrypted profile without its watermark, with WeChat's (camelCase) field names, as
/// in `wx.getUserInfo`'s `userInfo`.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct DecryptedProfile {
    /// The person's openid in this mini-program.
    #[oai(skip_serializing_if_is_none)]
    pub open_id: Option<String>,
    /// The unionid, when the mini-program belongs to an Open Platform account.
    #[oai(skip_serializing_if_is_none)]
    pub union_id: Option<String>,
    /// Nickname (`微信用户` when WeChat withholds it).
    pub nick_name: String,
    /// Avatar URL.
    pub avatar_url: String,
    /// 0 unknown, 1 male, 2 female.
    pub gender: u8,
    /// Country.
    pub country: String,
    /// Province.
    pub province: String,
    /// City.
    pub city: String,
    /// Language of the region names, e.g. `zh_CN`.
    pub language: String,
}

impl From<SharedProfile> for DecryptedProfile {
    fn from(shared: SharedProfile) -> Self {
        let text = |name: &str| shared.decrypted.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let p = shared.profile;
        Self {
            open_id: text("openId"),
            union_id: text("unionId"),
            nick_name: p.nickname,
            avatar_url: p.avatar_url,
            gender: p.gender,
            country: p.country,
            province: p.province,
            city: p.city,
            language: p.language,
        }
    }
}

/// Answer of `POST /v1/me/profile`.
#[derive(Debug, ApiResponse)]
pub enum ProfileResponse {
    /// Decrypted and kept on the user; `GET /v1/me` shows it from now on.
    #[oai(status = 200)]
    Ok(
        Json<DecryptedProfile>,
        /// Personal data: never cached.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// Open-data operations.
pub struct OpenDataApi {
    /// The service.
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::OpenData")]
impl OpenDataApi {
    /// Verify the user's phone number
    ///
    /// Send what `<button open-type="getPhoneNumber">` gave: `code` (base library 2.21.2
    /// and later), or `encrypted_data` and `iv`. The number is kept on the user. When the
    /// answer is 409 `session_key_stale`, call `wx.login`, `POST /v1/login`, ask for the
    /// number again and retry.
    #[oai(path = "/v1/me/phone", method = "post", operation_id = "phone")]
    async fn phone(
        &self,
        token: BearerToken,
        body: Json<PhoneRequest>,
        remote: &poem::web::RemoteAddr,
        headers: &poem::http::HeaderMap,
    ) -> Result<PhoneResponse, PhoneError> {
        let b = &body.0;
        let proof = match (&b.code, &b.encrypted_data, &b.iv) {
            (Some(code), None, None) => PhoneProof::Code(&code.0),
            (None, Some(encrypted_data), Some(iv)) => PhoneProof::Encrypted { encrypted_data, iv },
            _ => {
                return Err(
                    OpenDataFailure::InvalidRequest("send either code, or encrypted_data with iv".into()).into()
                );
            }
        };
        let phone = self.auth.phone(&token.0.token, proof, &super::peer(remote, headers)).await?;
        Ok(PhoneResponse::Ok(Json(phone.into()), NO_STORE.into()))
    }

    /// Decrypt the user's WeChat profile
    ///
    /// Send what legacy `wx.getUserInfo` gave. The data is decrypted with the session key
    /// of the person's latest login; `raw_data` is checked against `signature` when given.
    /// Nickname, avatar, gender and region are kept on the user.
    #[oai(path = "/v1/me/profile", method = "post", operation_id = "profile")]
    async fn profile(
        &self,
        token: BearerToken,
        body: Json<ProfileRequestBody>,
        remote: &poem::web::RemoteAddr,
        headers: &poem::http::HeaderMap,
    ) -> Result<ProfileResponse, ProfileError> {
        let b = &body.0;
        let request = ProfileRequest {
            encrypted_data: &b.encrypted_data,
            iv: &b.iv,
            raw_data: b.raw_data.as_deref(),
            signature: b.signature.as_deref(),
        };
        let shared = self.auth.profile(&token.0.token, request, &super::peer(remote, headers)).await?;
        Ok(ProfileResponse::Ok(Json(shared.into()), NO_STORE.into()))
    }
}
