//! Refresh tokens: rotation with reuse detection, logout, logout-all, and the purge.
//!
//! A login (or bind) starts a family with one opaque token. Each refresh spends the token
//! and answers its successor; presenting a spent token again means two parties hold the
//! family (a stolen token, RFC 9700 section 4.14.2), so the whole family is revoked, the
//! newest token included. There is no grace window for a client that retries after a lost
//! answer: it gets `invalid_grant` and logs in again with `wx.login`, which costs the person
//! nothing and keeps reuse detection exact.

use super::{Auth, Internal, IssuedRefresh, LoginOutcome, REFRESH_TOKEN_PREFIX, secret, secret_id};
use crate::store::{PurgeBatch, Refreshed, StoreError};

/// Records looked at per purge batch: a few milliseconds of sled work.
pub const PURGE_BATCH: usize = 1000;

/// Why `POST /v1/token/refresh` failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshFailure {
    /// The refresh token cannot be used; the client logs in again.
    #[error("{0}; log in again with wx.login")]
    InvalidGrant(&'static str),
    /// The server failed.
    #[error(transparent)]
    Internal(#[from] Internal),
}

impl From<StoreError> for RefreshFailure {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.into())
    }
}

impl Auth {
    /// Spends a refresh token and answers a new access token with the token's successor.
    #[tracing::instrument(skip_all, fields(user_id = tracing::field::Empty))]
    pub async fn refresh(&self, presented: &str) -> Result<LoginOutcome, RefreshFailure> {
        let store = &self.parts.store;
        let (text, id) = secret(REFRESH_TOKEN_PREFIX)?;
        let now = self.parts.clock.now();
        let grant = match store.rotate_refresh(&secret_id(presented), &id, now, now + self.parts.refresh_ttl).await? {
            Refreshed::Rotated(grant) => grant,
            Refreshed::Unknown => return Err(RefreshFailure::InvalidGrant("the refresh token is not known")),
            Refreshed::Expired => return Err(RefreshFailure::InvalidGrant("the refresh token has expired")),
            Refreshed::Revoked => return Err(RefreshFailure::InvalidGrant("the refresh token was revoked")),
            Refreshed::Reused => {
                tracing::warn!("a spent refresh token was presented again; its family is revoked");
                return Err(RefreshFailure::InvalidGrant(
                    "the refresh token was already used, so every token of this login is revoked",
                ));
            }
        };
        tracing::Span::current().record("user_id", tracing::field::display(grant.user));
        let user = store.user(&grant.user).await?;
        let Some(user) = user.filter(|u| u.openid_in(&grant.identity.appid) == Some(grant.identity.openid.as_str()))
        else {
            // Unbound (or removed) since the login: the family ends here.
            store.revoke_refresh(&id).await?;
            return Err(RefreshFailure::InvalidGrant("the WeChat identity of this login is no longer bound"));
        };
        let token = self.parts.tokens.issue(&user, &grant.identity).map_err(Internal::from)?;
        tracing::info!("refreshed");
        let refresh = IssuedRefresh { token: text, expires_in: self.parts.refresh_ttl.as_secs() };
        Ok(LoginOutcome { token, refresh, user, identity: grant.identity, created: false })
    }

    /// Revokes the family of a refresh token. Unknown tokens are fine: logging out twice,
    /// or after expiry, succeeds the same.
    pub async fn logout(&self, presented: &str) -> Result<(), Internal> {
        self.parts.store.revoke_refresh(&secret_id(presented)).await?;
        Ok(())
    }

    /// Revokes every refresh family of the bearer's user (a lost phone). Access tokens
    /// already issued stay valid until they expire.
    pub async fn logout_all(&self, bearer: &str) -> Result<usize, super::BearerFailure> {
        let caller = self.caller(bearer).await?;
        let revoked = self.parts.store.revoke_user_refresh(&caller.user.id).await?;
        tracing::info!(user_id = %caller.user.id, families = revoked, "every refresh token of the user revoked");
        Ok(revoked)
    }

    /// One pass of the purge of dead refresh records, in bounded batches with a pause
    /// between them, so that logins never wait behind it. Returns how many were removed.
    pub async fn purge_refresh(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        loop {
            let PurgeBatch { removed: batch, done } =
                self.parts.store.purge_refresh(self.parts.clock.now(), PURGE_BATCH).await?;
            removed += batch;
            if done {
                return Ok(removed);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}
