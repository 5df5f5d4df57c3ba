//! `GET /v1/me/sessions` and `DELETE /v1/me/sessions/{id}`: the person's own sessions.

use std::sync::Arc;

use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};
use time::OffsetDateTime;

use super::{
    ApiTags, NO_STORE,
    error::{ErrorBody, ErrorCode, MeError, SessionError, body},
    me::BearerToken,
};
use crate::{
    auth::Auth,
    store::{Session, session_id},
};

/// One session: a login on one device, and its refreshes.
#[derive(Debug, Object)]
pub struct SessionBody {
    /// The session's id, for `DELETE /v1/me/sessions/{id}`; access tokens carry it as `sid`.
    pub id: String,
    /// The AppID of the login.
    pub app: String,
    /// When the login happened (RFC 3339).
    pub created_at: OffsetDateTime,
    /// The last refresh (RFC 3339); the login's time until the first refresh.
    pub last_refresh_at: OffsetDateTime,
    /// The client's IP address at the login (after trusted proxies), when known.
    #[oai(skip_serializing_if_is_none)]
    pub ip: Option<String>,
    /// The client's `User-Agent` at the login (up to 256 bytes, control characters
    /// removed), when it sent one.
    #[oai(skip_serializing_if_is_none)]
    pub user_agent: Option<String>,
}

impl From<Session> for SessionBody {
    fn from(s: Session) -> Self {
        Self {
            id: session_id(&s.family).to_string(),
            app: s.appid,
            created_at: s.created_at,
            last_refresh_at: s.last_refresh_at,
            ip: s.origin.ip,
            user_agent: s.origin.user_agent,
        }
    }
}

/// The user's sessions.
#[derive(Debug, Object)]
pub struct SessionsBody {
    /// Live sessions (neither ended nor expired), newest first.
    pub sessions: Vec<SessionBody>,
}

/// Answer of `GET /v1/me/sessions`.
#[derive(Debug, ApiResponse)]
pub enum SessionsResponse {
    /// The user's live sessions.
    #[oai(status = 200)]
    Ok(
        Json<SessionsBody>,
        /// Personal data (addresses, devices): no cache may keep it.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// Answer of `DELETE /v1/me/sessions/{id}`.
#[derive(Debug, ApiResponse)]
pub enum EndSessionResponse {
    /// Ended: the session's refresh tokens no longer work.
    #[oai(status = 204)]
    Done,
}

/// The answer to a session id that is not a UUID.
pub(super) fn malformed_id() -> Json<ErrorBody> {
    body(ErrorCode::InvalidRequest, "id must be a session id (a UUID) from GET /v1/me/sessions")
}

/// Session operations.
pub struct SessionsApi {
    /// The service.
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::User")]
impl SessionsApi {
    /// The user's sessions
    ///
    /// Lists the bearer's live sessions: each login (on each device) and its refreshes,
    /// with the app, times, and the address and user agent of the login, newest first. The
    /// session of the bearer token is the one whose `id` is the token's `sid` claim.
    #[oai(path = "/v1/me/sessions", method = "get", operation_id = "sessions")]
    async fn sessions(&self, token: BearerToken) -> Result<SessionsResponse, MeError> {
        let sessions = self.auth.sessions(&token.0.token).await?;
        let body = SessionsBody { sessions: sessions.into_iter().map(SessionBody::from).collect() };
        Ok(SessionsResponse::Ok(Json(body), NO_STORE.into()))
    }

    /// End a session
    ///
    /// Ends one of the bearer's sessions ("log out of that phone"): its refresh tokens stop
    /// working at once. Access tokens already issued stay valid until they expire.
    #[oai(path = "/v1/me/sessions/:id", method = "delete", operation_id = "endSession")]
    async fn end_session(
        &self,
        token: BearerToken,
        id: Path<String>,
        remote: &poem::web::RemoteAddr,
        headers: &poem::http::HeaderMap,
    ) -> Result<EndSessionResponse, SessionError> {
        let id = uuid::Uuid::parse_str(&id.0).map_err(|_| SessionError::BadRequest(malformed_id()))?;
        self.auth.end_session(&token.0.token, id, &super::peer(remote, headers)).await?;
        Ok(EndSessionResponse::Done)
    }
}
