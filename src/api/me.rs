//! `GET /v1/me`.

use std::sync::Arc;

use poem_openapi::{ApiResponse, Object, OpenApi, SecurityScheme, auth::Bearer, payload::Json};
use time::OffsetDateTime;

use super::{ApiTags, NO_STORE, error::MeError};
use crate::{
    auth::{Auth, Me},
    domain::{Dated, Identity, PhoneNumber, Profile},
};

/// The `access_token` from `POST /v1/login` or `POST /v1/bind`. In the Authorize dialog,
/// paste the token alone, without `Bearer `: Swagger UI adds the prefix itself.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT")]
pub struct BearerToken(pub(super) Bearer);

/// A WeChat identity bound to the user.
#[derive(Debug, Object)]
pub struct IdentityBody {
    /// The app's AppID.
    pub appid: String,
    /// The person's openid within it.
    pub openid: String,
    /// Which surface the app is: `miniprogram`, `official_account`, `website` or
    /// `mobile_app`; absent for an app this server no longer serves.
    #[oai(skip_serializing_if_is_none)]
    pub kind: Option<String>,
}

/// The user record.
#[derive(Debug, Object)]
pub struct UserBody {
    /// Stable, opaque user id (UUID v7).
    pub id: String,
    /// The AppID the token was issued through.
    pub appid: String,
    /// The openid the token was issued for (within `appid`).
    pub openid: String,
    /// Every WeChat identity bound to the user now, one per mini-program; empty after
    /// `DELETE /v1/me/binding`.
    pub identities: Vec<IdentityBody>,
    /// The account's username, when the user belongs to an account.
    #[oai(skip_serializing_if_is_none)]
    pub username: Option<String>,
    /// WeChat unionid, when known.
    #[oai(skip_serializing_if_is_none)]
    pub unionid: Option<String>,
    /// First login (RFC 3339).
    pub created_at: OffsetDateTime,
    /// Most recent login (RFC 3339), to within 5 minutes: a returning login rewrites it only
    /// when the stored value is at least 5 minutes old.
    pub last_login_at: OffsetDateTime,
    /// The phone number verified through `POST /v1/me/phone`, if any.
    #[oai(skip_serializing_if_is_none)]
    pub phone: Option<VerifiedPhone>,
    /// The WeChat profile decrypted through `POST /v1/me/profile`, if any.
    #[oai(skip_serializing_if_is_none)]
    pub profile: Option<ProfileBody>,
}

/// A phone number WeChat vouched for, and when.
#[derive(Debug, Object)]
pub struct VerifiedPhone {
    /// With the country code, e.g. `+8613800138000`.
    pub phone_number: String,
    /// Without it, e.g. `13800138000`.
    pub pure_phone_number: String,
    /// e.g. `86`.
    pub country_code: String,
    /// When it was verified (RFC 3339).
    pub verified_at: OffsetDateTime,
}

/// A WeChat profile as kept on the user.
#[derive(Debug, Object)]
pub struct ProfileBody {
    /// Nickname.
    pub nickname: String,
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
    /// When it was received (RFC 3339).
    pub updated_at: OffsetDateTime,
}

impl From<Me> for UserBody {
    fn from(me: Me) -> Self {
        let u = me.user;
        Self {
            id: u.id.to_string(),
            appid: me.identity.appid,
            openid: me.identity.openid,
            identities: u.identities.into_iter().map(|i| identity(i, &me.kinds)).collect(),
            username: u.account,
            unionid: u.unionid,
            created_at: u.created_at,
            last_login_at: u.last_login_at,
            phone: me.details.phone.map(phone_body),
            profile: me.details.profile.map(profile_body),
        }
    }
}

/// A verified phone number as the API shows it.
pub(super) fn phone_body(Dated { value: p, at }: Dated<PhoneNumber>) -> VerifiedPhone {
    VerifiedPhone {
        phone_number: p.phone_number,
        pure_phone_number: p.pure_phone_number,
        country_code: p.country_code,
        verified_at: at,
    }
}

/// A profile as the API shows it.
pub(super) fn profile_body(Dated { value: p, at }: Dated<Profile>) -> ProfileBody {
    ProfileBody {
        nickname: p.nickname,
        avatar_url: p.avatar_url,
        gender: p.gender,
        country: p.country,
        province: p.province,
        city: p.city,
        language: p.language,
        updated_at: at,
    }
}

/// An identity as the API shows it.
pub(super) fn identity(i: Identity, kinds: &crate::auth::AppKinds) -> IdentityBody {
    let kind = kinds.get(&i.appid).map(|k| k.as_str().to_owned());
    IdentityBody { appid: i.appid, openid: i.openid, kind }
}

/// Answer of `GET /v1/me`.
#[derive(Debug, ApiResponse)]
pub enum MeResponse {
    /// The user the token was issued to.
    #[oai(status = 200)]
    Ok(
        Json<UserBody>,
        /// Personal data (phone number, profile): no cache may keep it.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// Identity operations.
pub struct MeApi {
    /// The service.
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::User")]
impl MeApi {
    /// The current user
    ///
    /// Returns the user the bearer token was issued to.
    #[oai(path = "/v1/me", method = "get", operation_id = "me")]
    async fn me(&self, token: BearerToken) -> Result<MeResponse, MeError> {
        Ok(MeResponse::Ok(Json(self.auth.me(&token.0.token).await?.into()), NO_STORE.into()))
    }

    /// Delete my account
    ///
    /// Deletes the bearer's account (注销), for the person's right to erasure (PIPL Art. 47).
    /// Send a fresh `wx.login` code: it must be of the token's WeChat identity, so a stolen
    /// token alone deletes nothing. Every session ends at once; the account is erased at
    /// `erase_at` (at once with no grace period). Until then logins answer 403
    /// `account_pending_deletion` and `POST /v1/deletion/cancel` keeps the account.
    #[oai(path = "/v1/me", method = "delete", operation_id = "deleteMe")]
    async fn delete_me(
        &self,
        token: BearerToken,
        body: Json<super::deletion::DeleteMeRequest>,
        remote: &poem::web::RemoteAddr,
        headers: &poem::http::HeaderMap,
    ) -> Result<super::deletion::DeleteMeResponse, super::error::DeleteMeError> {
        let peer = super::peer(remote, headers);
        let erase_at = self.auth.request_deletion(&token.0.token, &body.0.code.0, &peer).await?;
        Ok(super::deletion::DeleteMeResponse::Accepted(Json(super::deletion::DeletionBody { erase_at })))
    }
}
