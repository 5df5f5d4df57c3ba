//! Account deletion by the person (注销), as PIPL Art. 47 and WeChat's mini-program rules
//! require: asked for with a bearer token and a fresh `wx.login` code of the same person (a
//! stolen access token alone deletes nothing), erased after `WXAUTH_DELETION_GRACE_SECS`,
//! and cancelled in between with a code alone (the person has no token then: their
//! sessions ended with the request).

use std::time::Duration;

use time::OffsetDateTime;

use super::{AppChoice, Auth, BearerFailure, Internal, Peer};
use crate::{
    domain::{Deletion, DomainError, JsCode, UserId},
    store::{Erasure, StoreError, events::EventKind},
    wechat::WechatError,
};

/// Users erased per batch of a sweep.
const SWEEP_BATCH: usize = 100;
/// Batches per sweep at most; the next sweep takes the rest.
const SWEEP_BATCHES: usize = 100;

/// A pending deletion that refuses a login or a bind.
#[derive(Debug, thiserror::Error)]
#[error(
    "该账号正在注销: this account is being deleted and is erased at {erase_at}; \
     POST /v1/deletion/cancel with a fresh wx.login code keeps it"
)]
pub struct PendingDeletion {
    /// When the erasure is due.
    pub erase_at: OffsetDateTime,
}

impl PendingDeletion {
    /// The pending deletion of `user`, if any.
    pub(crate) fn of(user: &crate::domain::User) -> Option<Self> {
        user.controls.deletion.map(|d| Self { erase_at: d.erase_at })
    }
}

/// Why `DELETE /v1/me` failed.
#[derive(Debug, thiserror::Error)]
pub enum DeletionFailure {
    /// The code is malformed.
    #[error(transparent)]
    InvalidInput(#[from] DomainError),
    /// The bearer token was refused, or the server failed.
    #[error(transparent)]
    Bearer(#[from] BearerFailure),
    /// WeChat refused or failed.
    #[error(transparent)]
    Wechat(#[from] WechatError),
    /// The code belongs to another WeChat identity than the token's.
    #[error(
        "the code is not of this token's WeChat identity: call wx.login in the same mini-program, as the same \
         person, and send that code"
    )]
    CodeMismatch,
}

impl From<StoreError> for DeletionFailure {
    fn from(e: StoreError) -> Self {
        Self::Bearer(BearerFailure::Internal(Internal::Store(e)))
    }
}

/// Why `POST /v1/deletion/cancel` failed.
#[derive(Debug, thiserror::Error)]
pub enum CancelFailure {
    /// The code is malformed.
    #[error(transparent)]
    InvalidInput(#[from] DomainError),
    /// The request names an app this server does not serve.
    #[error("unknown appid {0:?}; this server serves: {1}")]
    UnknownApp(String, String),
    /// Several apps are configured and the request names none.
    #[error("appid is required: this server serves several mini-programs ({0})")]
    AppRequired(String),
    /// WeChat refused or failed.
    #[error(transparent)]
    Wechat(#[from] WechatError),
    /// The code's WeChat identity has no pending deletion (none asked, already erased, or
    /// never a user).
    #[error("no deletion of this WeChat identity's account is pending: there is nothing to cancel")]
    NothingPending,
    /// The server failed.
    #[error(transparent)]
    Internal(#[from] Internal),
}

impl From<StoreError> for CancelFailure {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.into())
    }
}

impl Auth {
    /// Deletes the bearer's account, if `code` (a fresh `wx.login` code) is of the token's
    /// WeChat identity: every session ends now, and the account is erased at the returned
    /// time (now, with no grace period, and then already erased when this returns).
    pub async fn request_deletion(
        &self,
        bearer: &str,
        code: &str,
        peer: &Peer<'_>,
    ) -> Result<OffsetDateTime, DeletionFailure> {
        let code = JsCode::parse(code)?;
        let me = self.caller(bearer).await?;
        // A token of an app no longer served is as good as one of no app.
        let app = self
            .app(Some(&me.identity.appid))
            .map_err(|_| BearerFailure::Rejected(crate::token::Rejection::Invalid))?;
        // The token's identity must still be the user's: after an unbind (and a bind of
        // another person to the account), an old token must not delete the account.
        if me.user.openid_in(&me.identity.appid) != Some(me.identity.openid.as_str()) {
            return Err(BearerFailure::Rejected(crate::token::Rejection::Invalid).into());
        }
        let session = app.exchange(&code).await?;
        if session.openid != me.identity.openid {
            tracing::info!(user_id = %me.user.id, "deletion refused: the code is of another WeChat identity");
            return Err(DeletionFailure::CodeMismatch);
        }
        let now = self.parts.clock.now();
        let erase_at = now + self.parts.deletion_grace;
        let deletion = Deletion { requested_at: now, erase_at };
        self.parts.store.request_deletion(&me.user.id, deletion).await?;
        tracing::info!(user_id = %me.user.id, %erase_at, "deletion requested by the person; every session ended");
        let event = self.caller_event(EventKind::DeletionRequested, &me, peer).detail("erase_at", rfc3339(erase_at));
        self.record(event).await;
        if self.parts.deletion_grace == Duration::ZERO {
            self.erase(&me.user.id).await?;
        }
        Ok(erase_at)
    }

    /// Cancels the pending deletion of the account of `code`'s WeChat identity (of app
    /// `appid`, or the only one).
    pub async fn cancel_deletion(&self, code: &str, appid: Option<&str>, peer: &Peer<'_>) -> Result<(), CancelFailure> {
        let code = JsCode::parse(code)?;
        let app = self.code_app(appid).map_err(|e| match e {
            AppChoice::Unknown(a, known) => CancelFailure::UnknownApp(a, known),
            AppChoice::Required(known) => CancelFailure::AppRequired(known),
        })?;
        let session = app.exchange(&code).await?;
        let store = &self.parts.store;
        let user = store.user_by_openid(app.appid(), &session.openid).await?.ok_or(CancelFailure::NothingPending)?;
        if !store.cancel_deletion(&user.id, self.parts.clock.now()).await? {
            return Err(CancelFailure::NothingPending);
        }
        tracing::info!(user_id = %user.id, "deletion cancelled by the person");
        let event = self.event(EventKind::DeletionCancelled).user(user.id).app(app.appid());
        self.record(event.origin(&self.origin(peer))).await;
        Ok(())
    }

    /// Deletes user `id` at once for an operator (`actor`): what a person's request with no
    /// grace period does.
    pub(crate) async fn delete_now(&self, id: &UserId, actor: &str) -> Result<(), StoreError> {
        let now = self.parts.clock.now();
        self.parts.store.request_deletion(id, Deletion { requested_at: now, erase_at: now }).await?;
        tracing::info!(user_id = %id, actor, "user deleted by an operator");
        let event = self.event(EventKind::DeletionRequested).user(*id).actor(actor);
        self.record(event.detail("erase_at", rfc3339(now))).await;
        self.erase(id).await
    }

    /// Erases user `id` if its deletion is due, and records that it was.
    async fn erase(&self, id: &UserId) -> Result<(), StoreError> {
        match self.parts.store.erase(id, self.parts.clock.now()).await? {
            Erasure::Erased { account_kept } => {
                tracing::info!(user_id = %id, account_kept = account_kept.is_some(), "user erased");
                self.record(self.event(EventKind::DeletionDone).user(*id)).await;
            }
            Erasure::NotDue | Erasure::Gone => {}
        }
        Ok(())
    }

    /// Erases the users whose deletion is due (a batch at a time, until none is left):
    /// those whose grace period ended, and those whose erasure a crash interrupted.
    /// Returns how many were looked at.
    pub async fn erase_due(&self) -> Result<usize, StoreError> {
        let mut seen = 0;
        // Bounded, so that a store that kept naming a user it does not erase could not
        // hold the sweep: the next one goes on.
        for _ in 0..SWEEP_BATCHES {
            let due = self.parts.store.due_deletions(self.parts.clock.now(), SWEEP_BATCH).await?;
            for id in &due {
                self.erase(id).await?;
            }
            seen += due.len();
            if due.len() < SWEEP_BATCH {
                break;
            }
        }
        Ok(seen)
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
