//! The person's own sessions: each refresh family (one login on one device, and its
//! refreshes) is a session they can list and end, like "log out of that phone".

use super::{Auth, BearerFailure, Internal};
use crate::store::{Session, StoreError, session_id};

/// Why `DELETE /v1/me/sessions/{id}` failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionFailure {
    /// The bearer token was refused, or the server failed.
    #[error(transparent)]
    Bearer(#[from] BearerFailure),
    /// The id names none of the user's live sessions (another user's, ended, or never one).
    #[error("no live session of this user has that id; list them with GET /v1/me/sessions")]
    NotFound,
}

impl From<StoreError> for SessionFailure {
    fn from(e: StoreError) -> Self {
        Self::Bearer(BearerFailure::Internal(Internal::Store(e)))
    }
}

impl Auth {
    /// The bearer's live sessions, newest first.
    pub async fn sessions(&self, bearer: &str) -> Result<Vec<Session>, BearerFailure> {
        let me = self.caller(bearer).await?;
        Ok(self.parts.store.sessions(&me.user.id, self.parts.clock.now()).await?)
    }

    /// Ends the bearer's session `id` (its public id, [`session_id`]): its refresh tokens
    /// stop working at once. Access tokens already issued stay valid until they expire.
    ///
    /// The public id is looked up among the user's own live sessions, so that one user can
    /// neither end nor learn of another's.
    pub async fn end_session(
        &self,
        bearer: &str,
        id: uuid::Uuid,
        peer: &super::Peer<'_>,
    ) -> Result<(), SessionFailure> {
        let me = self.caller(bearer).await?;
        let store = &self.parts.store;
        let now = self.parts.clock.now();
        let sessions = store.sessions(&me.user.id, now).await?;
        let family = sessions.iter().find(|s| session_id(&s.family) == id).ok_or(SessionFailure::NotFound)?.family;
        if !store.revoke_session(&me.user.id, &family, now).await? {
            // Ended (or expired) since the list was read.
            return Err(SessionFailure::NotFound);
        }
        tracing::info!(user_id = %me.user.id, session = %id, "session ended by its user");
        let event = self.caller_event(crate::store::events::EventKind::SessionRevoked, &me, peer);
        self.record(event.detail("session", id.to_string())).await;
        Ok(())
    }
}
