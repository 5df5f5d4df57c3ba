//! `DELETE /v1/me` and `POST /v1/deletion/cancel`: account deletion by the person.

use std::sync::Arc;

use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};
use time::OffsetDateTime;

use super::{ApiTags, error::CancelDeletionError, login::CodeText};
use crate::auth::Auth;

/// A deletion request.
#[derive(Debug, Object)]
pub struct DeleteMeRequest {
    /// A fresh `wx.login` code of the same person in the same mini-program as the token:
    /// proof that the person, not only their token, asks.
    pub code: CodeText,
}

/// A deletion accepted.
#[derive(Debug, Object)]
pub struct DeletionBody {
    /// When the account is erased (RFC 3339): now with no grace period (it is erased
    /// already), else after `WXAUTH_DELETION_GRACE_SECS`.
    pub erase_at: OffsetDateTime,
}

/// A cancellation request.
#[derive(Debug, Object)]
pub struct CancelDeletionRequest {
    /// A fresh `wx.login` code of the person whose account is being deleted.
    pub code: CodeText,
    /// The AppID of the mini-program the code comes from. Optional when the server serves
    /// one app; required when it serves several.
    #[oai(nullable)]
    pub appid: Option<String>,
}

/// Answer of `DELETE /v1/me`.
#[derive(Debug, ApiResponse)]
pub enum DeleteMeResponse {
    /// Accepted: every session ended, and the account is erased at `erase_at`.
    #[oai(status = 202)]
    Accepted(Json<DeletionBody>),
}

/// Answer of `POST /v1/deletion/cancel`.
#[derive(Debug, ApiResponse)]
pub enum CancelDeletionResponse {
    /// Cancelled: the account stays. Log in again with `wx.login`.
    #[oai(status = 204)]
    Done,
}

/// Cancelling a deletion (`DELETE /v1/me` is with `GET /v1/me` in [`super::me`]: one path,
/// one `#[OpenApi]` block, or the document keeps only one of its methods).
pub struct DeletionApi {
    /// The service.
    pub auth: Arc<Auth>,
}

#[OpenApi]
impl DeletionApi {
    /// Cancel my account's deletion
    ///
    /// During the grace period of a deletion, keeps the account: send a fresh `wx.login`
    /// code of the person (they have no token: their sessions ended). Then log in again.
    #[oai(path = "/v1/deletion/cancel", method = "post", operation_id = "cancelDeletion", tag = "ApiTags::Login")]
    async fn cancel(
        &self,
        body: Json<CancelDeletionRequest>,
        remote: &poem::web::RemoteAddr,
        headers: &poem::http::HeaderMap,
    ) -> Result<CancelDeletionResponse, CancelDeletionError> {
        let peer = super::peer(remote, headers);
        self.auth.cancel_deletion(&body.0.code.0, body.0.appid.as_deref(), &peer).await?;
        Ok(CancelDeletionResponse::Done)
    }
}
