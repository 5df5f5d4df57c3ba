//! Refresh tokens: rotation with reuse detection, logout, logout-all, and the purge.
//!
//! A login (or bind) starts a family with one opaque token. Each refresh spends the token
//! and answers its successor; presenting a spent token again means two parties hold the
//! family (a stolen token, RFC 9700 section 4.14.2), so the whole family is revoked, the
//! newest token included. There is no grace window for a client that retries after a lost
//! answer: it gets `invalid_grant` and logs in again with `wx.login`, which costs the person
//! nothing and keeps reuse detection exact.

use aws_lc_rs::digest;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use super::{Auth, Internal, IssuedRefresh, LoginOutcome, REFRESH_TOKEN_PREFIX};
use crate::domain::UserId;
use crate::store::{PurgeBatch, RefreshId, Refreshed, StoreError, events::EventKind};

/// Records looked at per purge batch: a few milliseconds of sled work.
pub const PURGE_BATCH: usize = 1000;

/// Why `POST /v1/token/refresh` failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshFailure {
    /// The refresh token cannot be used; the client logs in again.
    #[error("{0}; log in again with wx.login")]
    InvalidGrant(&'static str),
    /// An operator banned the user: every family was revoked with the ban.
    #[error(transparent)]
    Banned(#[from] super::Banned),
    /// Too many refreshes of this family, or from this address.
    #[error("too many refreshes of this login; retry in {retry_after} s")]
    TooManyAttempts {
        /// Seconds until the next attempt is allowed.
        retry_after: u64,
    },
    /// The server failed.
    #[error(transparent)]
    Internal(#[from] Internal),
}

impl From<StoreError> for RefreshFailure {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.into())
    }
}

/// Bytes of a refresh token after its prefix: user, family, generation, verifier.
const TOKEN_BYTES: usize = 16 + 16 + 4 + 32;

/// The first token of a new family of `user`: `rt_` + base64url(user ‖ family ‖
/// generation 0 ‖ verifier). The family is a UUID v7 (a user's families sort by age), the
/// verifier 256 random bits of which only the SHA-256 is stored.
pub(super) fn first_token(user: UserId) -> Result<(String, RefreshId), Internal> {
    Ok(NewFamily::new()?.first(user))
}

/// A new family and its first verifier, before its user is known: a login finds (or
/// creates) the user and starts the family in one store step.
pub(super) struct NewFamily {
    /// The family: a UUID v7, so that a user's families sort by age.
    pub(super) family: [u8; 16],
    verifier: [u8; 32],
}

impl NewFamily {
    pub(super) fn new() -> Result<Self, Internal> {
        let mut verifier = [0u8; 32];
        aws_lc_rs::rand::fill(&mut verifier).map_err(|_| Internal::Randomness)?;
        Ok(Self { family: *uuid::Uuid::now_v7().as_bytes(), verifier })
    }

    /// SHA-256 of the first token's verifier, which the store keeps.
    pub(super) fn verifier_hash(&self) -> [u8; 32] {
        hash(&self.verifier)
    }

    /// The family's first token, of `user`.
    pub(super) fn first(&self, user: UserId) -> (String, RefreshId) {
        (
            text(user, self.family, 0, &self.verifier),
            RefreshId { user, family: self.family, generation: 0, verifier_hash: self.verifier_hash() },
        )
    }
}

/// The token of `generation` in `family`, with a new verifier.
fn token(user: UserId, family: [u8; 16], generation: u32) -> Result<(String, RefreshId), Internal> {
    let mut verifier = [0u8; 32];
    aws_lc_rs::rand::fill(&mut verifier).map_err(|_| Internal::Randomness)?;
    Ok((
        text(user, family, generation, &verifier),
        RefreshId { user, family, generation, verifier_hash: hash(&verifier) },
    ))
}

/// A token's text: the prefix and base64url(user ‖ family ‖ generation ‖ verifier).
fn text(user: UserId, family: [u8; 16], generation: u32, verifier: &[u8; 32]) -> String {
    let bytes = [&user.as_bytes()[..], &family, &generation.to_be_bytes(), verifier].concat();
    format!("{REFRESH_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Which user, family, generation and verifier a presented token names; `None` for text
/// that is not a refresh token.
fn parse_token(text: &str) -> Option<RefreshId> {
    let bytes = URL_SAFE_NO_PAD.decode(text.strip_prefix(REFRESH_TOKEN_PREFIX)?).ok()?;
    let bytes: &[u8; TOKEN_BYTES] = bytes.as_slice().try_into().ok()?;
    let (user, rest) = bytes.split_first_chunk::<16>()?;
    let (family, rest) = rest.split_first_chunk::<16>()?;
    let (generation, verifier) = rest.split_first_chunk::<4>()?;
    Some(RefreshId {
        user: UserId::from_bytes(*user),
        family: *family,
        generation: u32::from_be_bytes(*generation),
        verifier_hash: hash(verifier),
    })
}

fn hash(verifier: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, verifier).as_ref());
    out
}

impl Auth {
    /// Spends a refresh token and answers a new access token with the token's successor.
    /// Each family may refresh `WXAUTH_REFRESH_ATTEMPTS_PER_FAMILY` times a minute.
    #[tracing::instrument(skip_all, fields(user_id = tracing::field::Empty))]
    pub async fn refresh(&self, presented: &str, peer: &super::Peer<'_>) -> Result<LoginOutcome, RefreshFailure> {
        let store = &self.parts.store;
        let Some(old) = parse_token(presented) else {
            return Err(RefreshFailure::InvalidGrant("the refresh token is not known"));
        };
        self.parts
            .attempts
            .check_refresh_family(old.family)
            .map_err(|wait| RefreshFailure::TooManyAttempts { retry_after: wait.as_secs().max(1) })?;
        // A generation past u32::MAX is never rotated into (the store answers Expired).
        let (mut text, mut id) = token(old.user, old.family, old.generation.wrapping_add(1))?;
        let now = self.parts.clock.now();
        let expires_at = now + self.parts.refresh_ttl;
        let sid = crate::store::session_id(&old.family);
        // Kept by the store with the rotation when the refresh succeeds (its user and app
        // are the family's).
        let refreshed = self.event(EventKind::Refresh).origin(&self.origin(peer)).detail("session", sid.to_string());
        let (mut rotated, mut user) =
            store.rotate_refresh_reading_user(&old, &id.verifier_hash, now, expires_at, refreshed.clone()).await?;
        // Not found under its user: the user may have been merged into another (looked up
        // only then, so that refreshes pay nothing for merges).
        let mut old = old;
        if matches!(rotated, Refreshed::Unknown)
            && let Some(into) = store.merged_into(&old.user).await?
        {
            old = RefreshId { user: into, ..old };
            (text, id) = token(into, old.family, old.generation.wrapping_add(1))?;
            (rotated, user) =
                store.rotate_refresh_reading_user(&old, &id.verifier_hash, now, expires_at, refreshed).await?;
        }
        let grant = match rotated {
            Refreshed::Rotated(grant) => grant,
            Refreshed::Unknown => return Err(RefreshFailure::InvalidGrant("the refresh token is not known")),
            Refreshed::Expired => return Err(RefreshFailure::InvalidGrant("the refresh token has expired")),
            Refreshed::Revoked => {
                // A ban revokes every family: say so rather than just "revoked".
                if let Some(user) = store.user(&old.user).await?
                    && let Some(banned) = super::Banned::of(&user, now)
                {
                    return Err(banned.into());
                }
                return Err(RefreshFailure::InvalidGrant("the refresh token was revoked"));
            }
            Refreshed::Reused => {
                tracing::warn!("a spent refresh token was presented again; its family is revoked");
                let event = self.event(EventKind::RefreshReuse).user(old.user).origin(&self.origin(peer));
                let sid = crate::store::session_id(&old.family).to_string();
                self.record(event.detail("session", sid).detail("generation", old.generation)).await;
                return Err(RefreshFailure::InvalidGrant(
                    "the refresh token was already used, so every token of this login is revoked",
                ));
            }
        };
        tracing::Span::current().record("user_id", tracing::field::display(grant.user));
        let Some(user) = user.filter(|u| u.openid_in(&grant.identity.appid) == Some(grant.identity.openid.as_str()))
        else {
            // Unbound (or removed) since the login: the family ends here.
            store.revoke_refresh(&id).await?;
            return Err(RefreshFailure::InvalidGrant("the WeChat identity of this login is no longer bound"));
        };
        if let Some(banned) = super::Banned::of(&user, now) {
            // Banned while the ban's revocation had not reached this family yet.
            store.revoke_refresh(&id).await?;
            return Err(banned.into());
        }
        if user.controls.deletion.is_some() {
            // A login that raced with the deletion request started this family after the
            // request revoked the others: it ends too.
            store.revoke_refresh(&id).await?;
            return Err(RefreshFailure::InvalidGrant("this account is being deleted; its sessions have ended"));
        }
        debug_assert!(user.admits_session(&grant.identity, now), "the store kept the event on the same rule");
        let token = self.parts.tokens.issue(&user, &grant.identity, sid).map_err(Internal::from)?;
        self.parts.metrics.token_issued(token.alg.as_str());
        tracing::info!("refreshed");
        let refresh = IssuedRefresh { token: text, expires_in: self.parts.refresh_ttl.as_secs() };
        Ok(LoginOutcome { token, refresh, user, identity: grant.identity, created: false })
    }

    /// Revokes the family of a refresh token. Unknown tokens are fine: logging out twice,
    /// or after expiry, succeeds the same.
    pub async fn logout(&self, presented: &str, peer: &super::Peer<'_>) -> Result<(), Internal> {
        let Some(id) = parse_token(presented) else { return Ok(()) };
        let store = &self.parts.store;
        let logout = |user| {
            let event = self.event(EventKind::Logout).user(user).origin(&self.origin(peer));
            event.detail("session", crate::store::session_id(&id.family).to_string())
        };
        if !store.revoke_refresh_recording(&id, logout(id.user)).await?
            && let Some(into) = store.merged_into(&id.user).await?
        {
            store.revoke_refresh_recording(&RefreshId { user: into, ..id }, logout(into)).await?;
        }
        Ok(())
    }

    /// Revokes every refresh family of the bearer's user (a lost phone). Access tokens
    /// already issued stay valid until they expire.
    pub async fn logout_all(&self, bearer: &str, peer: &super::Peer<'_>) -> Result<(), super::BearerFailure> {
        let caller = self.caller(bearer).await?;
        let event = self.caller_event(EventKind::LogoutAll, &caller, peer);
        self.parts.store.revoke_user_refresh_recording(&caller.user.id, event).await?;
        tracing::info!(user_id = %caller.user.id, "every refresh token of the user revoked");
        Ok(())
    }

    /// Removes the events older than `WXAUTH_EVENT_RETENTION_DAYS`, in bounded batches
    /// with a pause between them, like [`Auth::purge_refresh`]. Returns how many.
    pub async fn purge_events(&self) -> Result<usize, StoreError> {
        let before = self.parts.clock.now() - self.parts.event_retention;
        let mut removed = 0;
        loop {
            let PurgeBatch { removed: batch, done } = self.parts.store.purge_events(before, PURGE_BATCH).await?;
            removed += batch;
            if done {
                return Ok(removed);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_token_names_its_family_and_generation_and_proves_itself() {
        let user = UserId::new();
        let (text, id) = first_token(user).unwrap();
        assert!(text.starts_with("rt_") && text.len() == 3 + 91, "{text}");
        assert_eq!((id.user, id.generation), (user, 0));
        assert_eq!(parse_token(&text), Some(id));
        let (next, next_id) = token(user, id.family, 1).unwrap();
        assert_eq!(parse_token(&next), Some(next_id));
        assert_eq!((next_id.user, next_id.family, next_id.generation), (user, id.family, 1));
        assert_ne!(next_id.verifier_hash, id.verifier_hash);
        let (other, _) = first_token(user).unwrap();
        assert_ne!(parse_token(&other).unwrap().family, id.family);
        for junk in ["", "rt_", "rt_AAAA", "bt_x", &text[3..], &text[..text.len() - 1], &format!("{text}A")] {
            assert!(parse_token(junk).is_none_or(|p| p != id), "{junk:?}");
        }
        // Another verifier under the same family and generation is another token.
        let mut forged = URL_SAFE_NO_PAD.decode(&text[3..]).unwrap();
        forged[60] ^= 1;
        let forged = parse_token(&format!("rt_{}", URL_SAFE_NO_PAD.encode(forged))).unwrap();
        assert_eq!((forged.family, forged.generation), (id.family, id.generation));
        assert_ne!(forged.verifier_hash, id.verifier_hash);
    }
}
