//! PC login by scanning a mini-program code: `POST /v1/scan-sessions`,
//! `POST /v1/scan-sessions/{scene}/confirm`, `GET /v1/scan-sessions/{id}`
//! ([`crate::auth::Auth::start_scan`]).

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};

use super::{
    ApiTags, NO_STORE,
    error::{ScanConfirmError, ScanPollError, ScanStartError},
    login::LoginBody,
    me::BearerToken,
};
use crate::auth::{Auth, ScanPoll};

/// The longest a poll waits for the confirmation, in seconds.
pub const MAX_WAIT_SECS: u64 = 25;
/// How often a waiting poll looks again.
const RECHECK: Duration = Duration::from_millis(250);

/// `POST /v1/scan-sessions`.
#[derive(Debug, Object, Default)]
pub struct ScanRequest {
    /// The mini-program whose code the PC shows; optional when the server serves one.
    #[oai(nullable)]
    pub appid: Option<String>,
    /// `true`: the answer carries the code's PNG from WeChat (`getwxacodeunlimit`); else
    /// the PC renders a code for `scene` itself.
    #[oai(default)]
    pub image: bool,
    /// The mini-program page the code opens (default `pages/scan/confirm`); it gets the
    /// scene as `options.scene`.
    #[oai(nullable)]
    pub page: Option<String>,
}

/// A new scan session (no `Debug`: `id` is the PC's secret).
#[derive(Object)]
pub struct ScanSessionBody {
    /// The PC's secret handle: poll `GET /v1/scan-sessions/{id}` with it. Never put it
    /// in the code.
    pub id: String,
    /// What the mini-program code carries; the mini-program confirms it.
    pub scene: String,
    /// The mini-program.
    pub appid: String,
    /// Seconds the session works.
    pub expires_in: u64,
    /// With `image: true`: the code as a `data:image/png;base64,...` URL for an `<img>`.
    #[oai(skip_serializing_if_is_none)]
    pub image: Option<String>,
}

/// A poll's answer (no `Debug`: it holds tokens).
#[derive(Object)]
pub struct ScanStatusBody {
    /// `pending` (not confirmed yet) or `confirmed` (the login is here, once).
    pub status: String,
    /// While pending: seconds left.
    #[oai(skip_serializing_if_is_none)]
    pub expires_in: Option<u64>,
    /// Once confirmed: the PC's tokens, as `POST /v1/login` answers them.
    #[oai(skip_serializing_if_is_none)]
    pub login: Option<LoginBody>,
}

/// `POST /v1/scan-sessions`' answer.
#[derive(ApiResponse)]
pub enum ScanStartResponse {
    /// Started.
    #[oai(status = 201)]
    Created(Json<ScanSessionBody>, #[oai(header = "Cache-Control")] String),
}

/// The confirmation's answer.
#[derive(ApiResponse)]
pub enum ScanConfirmResponse {
    /// Confirmed: the PC's next poll gets the tokens.
    #[oai(status = 204)]
    Confirmed,
}

/// A poll's answer.
#[derive(ApiResponse)]
pub enum ScanPollResponse {
    /// Pending, or confirmed with the tokens.
    #[oai(status = 200)]
    Ok(Json<ScanStatusBody>, #[oai(header = "Cache-Control")] String),
}

/// Scan-login operations.
pub struct ScanApi {
    /// The service.
    pub auth: Arc<Auth>,
}

#[OpenApi(tag = "ApiTags::Login")]
impl ScanApi {
    /// Start a PC login by scanning a mini-program code
    ///
    /// For the PC page: answers a secret `id` to poll with and the `scene` the
    /// mini-program code carries (with `image: true`, the code's PNG from WeChat). The
    /// session works for five minutes, is confirmed once and collected once.
    #[oai(path = "/v1/scan-sessions", method = "post", operation_id = "start_scan")]
    async fn start(
        &self,
        body: Json<ScanRequest>,
        remote: &poem::web::RemoteAddr,
        headers: &poem::http::HeaderMap,
    ) -> Result<ScanStartResponse, ScanStartError> {
        let req = body.0;
        let peer = super::peer(remote, headers);
        let started = self.auth.start_scan(req.appid.as_deref(), req.image, req.page.as_deref(), &peer).await?;
        let image = started.image.map(|png| format!("data:image/png;base64,{}", STANDARD.encode(png)));
        let body = ScanSessionBody {
            id: started.id,
            scene: started.scene,
            appid: started.appid,
            expires_in: started.expires_in,
            image,
        };
        Ok(ScanStartResponse::Created(Json(body), NO_STORE.into()))
    }

    /// Confirm a scanned code (mini-program)
    ///
    /// The mini-program page the code opened, logged in, confirms its `scene`: the PC
    /// polling the session is logged in as this user. The token must be of the code's
    /// mini-program, or of a user who also has an identity there (unionid).
    #[oai(path = "/v1/scan-sessions/:scene/confirm", method = "post", operation_id = "confirm_scan")]
    async fn confirm(&self, token: BearerToken, scene: Path<String>) -> Result<ScanConfirmResponse, ScanConfirmError> {
        self.auth.confirm_scan(&scene.0, &token.0.token).await?;
        Ok(ScanConfirmResponse::Confirmed)
    }

    /// Poll a scan session (PC)
    ///
    /// `pending` until the mini-program confirms; then, once, `confirmed` with the tokens.
    /// `wait` (0 to 25 seconds) holds the answer until the confirmation or the wait ends.
    #[oai(path = "/v1/scan-sessions/:id", method = "get", operation_id = "poll_scan")]
    async fn poll(
        &self,
        id: Path<String>,
        /// Seconds to wait for the confirmation (long poll), 0 to 25; default 0.
        wait: Query<Option<u64>>,
        remote: &poem::web::RemoteAddr,
        headers: &poem::http::HeaderMap,
    ) -> Result<ScanPollResponse, ScanPollError> {
        let peer = super::peer(remote, headers);
        let until = tokio::time::Instant::now() + Duration::from_secs(wait.0.unwrap_or(0).min(MAX_WAIT_SECS));
        loop {
            let body = match self.auth.poll_scan(&id.0, &peer).await? {
                ScanPoll::Confirmed(outcome) => {
                    ScanStatusBody { status: "confirmed".into(), expires_in: None, login: Some((*outcome).into()) }
                }
                ScanPoll::Pending(left) if tokio::time::Instant::now() + RECHECK >= until => {
                    ScanStatusBody { status: "pending".into(), expires_in: Some(left), login: None }
                }
                ScanPoll::Pending(_) => {
                    tokio::time::sleep(RECHECK).await;
                    continue;
                }
            };
            return Ok(ScanPollResponse::Ok(Json(body), NO_STORE.into()));
        }
    }
}
