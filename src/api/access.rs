//! `GET /v1/me/export`: everything wxauth holds about the person (PIPL's right of access).

use std::sync::Arc;

use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};
use time::OffsetDateTime;

use super::{
    ApiTags, NO_STORE, error::MeError, events::EventBody, me::BearerToken, me::UserBody, sessions::SessionBody,
};
use crate::auth::{Auth, Holdings};

/// When an identity's newest WeChat session key was received. The key itself stays on the
/// server: it decrypts the person's open data, and is no use to them.
#[derive(Debug, Object)]
pub struct SessionKeyHeld {
    /// The app the key is for.
    pub appid: String,
    /// When WeChat issued it to wxauth (RFC 3339).
    pub received_at: OffsetDateTime,
}

/// A ban, as the person sees it.
#[derive(Debug, Object)]
pub struct BanBody {
    /// The operator's reason.
    pub reason: String,
    /// When it was imposed (RFC 3339).
    pub at: OffsetDateTime,
    /// When it ends (RFC 3339); absent: until lifted.
    #[oai(skip_serializing_if_is_none)]
    pub until: Option<OffsetDateTime>,
}

/// Everything wxauth holds about the person.
#[derive(Debug, Object)]
pub struct ExportBody {
    /// When this export was made (RFC 3339).
    pub exported_at: OffsetDateTime,
    /// The user as `GET /v1/me` shows it: identities, account, unionid, phone, profile.
    pub user: UserBody,
    /// The phone number of the user's account (phone-first login), if it has one.
    #[oai(skip_serializing_if_is_none)]
    pub account_phone: Option<String>,
    /// Roles an operator gave the user.
    pub roles: Vec<String>,
    /// Custom claims an operator gave the user (`{}` when none).
    pub claims: serde_json::Value,
    /// A ban, current or ended and not yet lifted.
    #[oai(skip_serializing_if_is_none)]
    pub ban: Option<BanBody>,
    /// Live sessions, newest first, as `GET /v1/me/sessions` shows them.
    pub sessions: Vec<SessionBody>,
    /// WeChat session keys held (their times only).
    pub session_keys: Vec<SessionKeyHeld>,
    /// The events about the person kept (`WXAUTH_EVENT_RETENTION_DAYS`), newest first.
    pub events: Vec<EventBody>,
}

impl ExportBody {
    fn new(holdings: Holdings, now: OffsetDateTime) -> Self {
        let controls = holdings.me.user.controls.clone();
        Self {
            exported_at: now,
            account_phone: holdings.account_phone,
            roles: controls.roles,
            claims: serde_json::Value::Object(controls.claims.as_map().clone()),
            ban: controls.ban.map(|b| BanBody { reason: b.reason, at: b.at, until: b.until }),
            user: holdings.me.into(),
            sessions: holdings.sessions.into_iter().map(SessionBody::from).collect(),
            session_keys: holdings
                .session_keys
                .into_iter()
                .map(|(appid, received_at)| SessionKeyHeld { appid, received_at })
                .collect(),
            events: holdings.events.into_iter().map(EventBody::from).collect(),
        }
    }
}

/// Answer of `GET /v1/me/export`.
#[derive(Debug, ApiResponse)]
pub enum ExportResponse {
    /// Everything held about the person.
    #[oai(status = 200)]
    Ok(
        Json<ExportBody>,
        /// Personal data: no cache may keep it.
        #[oai(header = "Cache-Control")]
        String,
        /// `attachment; filename="wxauth-export.json"`: a browser saves it as a file.
        #[oai(header = "Content-Disposition")]
        String,
    ),
}

/// The person's right of access.
pub struct AccessApi {
    /// The service.
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::User")]
impl AccessApi {
    /// Everything wxauth holds about me
    ///
    /// The person's right of access (PIPL Art. 45): the user with its identities, account,
    /// unionid, phone number and profile, roles, custom claims, a ban, live sessions, and
    /// when each WeChat session key was received. No secret is included: not the session
    /// keys, the password hash, nor any token.
    #[oai(path = "/v1/me/export", method = "get", operation_id = "exportMe")]
    async fn export(&self, token: BearerToken) -> Result<ExportResponse, MeError> {
        let holdings = self.auth.holdings(&token.0.token).await?;
        let body = ExportBody::new(holdings, OffsetDateTime::now_utc());
        Ok(ExportResponse::Ok(Json(body), NO_STORE.into(), "attachment; filename=\"wxauth-export.json\"".into()))
    }
}
