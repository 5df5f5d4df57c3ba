//! Where users, openid bindings and session keys live.
//!
//! The rest of wxauth talks to [`Store`] only. It is a struct over a private enum of
//! backends rather than a trait object: calls dispatch statically (no boxed futures on the
//! login path), and adding a backend is one enum variant whose missing match arms the
//! compiler lists. Its methods are `async` and mention no backend types, so a backend that
//! talks to a server (PostgreSQL) fits behind the same signatures. Backend-specific knobs
//! (directories, caches, flush policy) stay inside the backend's module and its settings.
//!
//! The contract every backend keeps, checked by the conformance suite in `tests/store`:
//! - the first login of an openid creates exactly one user, however many race, and answers
//!   only once the user and binding are durable;
//! - a returning login is visible to the very next call at once (a new session key
//!   included), writes only what changed, and does not wait for durability;
//! - a layout newer than this build is refused at open.

mod sled;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::{
    config::StoreSettings,
    domain::{SessionKey, User, UserId, WechatSession},
};

/// Layout version written by this build. Bump it with a migration when the layout changes.
pub const SCHEMA_VERSION: u32 = 2;

/// `last_login_at` is rewritten only when the stored value is at least this old, so that a
/// burst of logins by one person costs no writes. It is therefore accurate to 5 minutes.
pub const LAST_LOGIN_GRANULARITY: Duration = Duration::minutes(5);

/// Errors of the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database failed (I/O, corruption, lock held by another process).
    #[error("database error: {0}")]
    Database(String),
    /// The data was written by a newer wxauth.
    #[error("the store has schema version {found}; this build understands up to {SCHEMA_VERSION}")]
    SchemaTooNew {
        /// Version found.
        found: u32,
    },
    /// A record could not be decoded, or a binding points at a missing user.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// The session key kept for a user: only the newest one is valid at WeChat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSessionKey {
    /// WeChat's key.
    pub session_key: SessionKey,
    /// When wxauth first received this key.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
}

/// The outcome of recording a login.
#[derive(Debug, Clone)]
pub struct LoginRecord {
    /// The user, as stored after this login.
    pub user: User,
    /// Whether this login created the user.
    pub created: bool,
}

/// Handle to the configured backend. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sled(sled::SledStore),
}

impl Store {
    /// Opens (or creates) the store the settings name. Must run inside a tokio runtime.
    pub async fn open(settings: &StoreSettings) -> Result<Self, StoreError> {
        let backend = match settings {
            StoreSettings::Sled(s) => Backend::Sled(sled::SledStore::open(s).await?),
        };
        Ok(Self { backend })
    }

    /// Records a successful login of `session` for `appid`.
    ///
    /// The first login of an openid creates the user and answers once it is durable. Later
    /// logins update only what changed (a new session key, a unionid, a `last_login_at`
    /// older than [`LAST_LOGIN_GRANULARITY`]) and do not wait for the disk.
    pub async fn record_login(&self, appid: &str, session: &WechatSession) -> Result<LoginRecord, StoreError> {
        match &self.backend {
            Backend::Sled(s) => s.record_login(appid, session).await,
        }
    }

    /// The user with `id`, if any.
    pub async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        match &self.backend {
            Backend::Sled(s) => s.user(id),
        }
    }

    /// The newest session key of a user. Never sent to clients; for decrypting open data.
    pub async fn session_key(&self, id: &UserId) -> Result<Option<StoredSessionKey>, StoreError> {
        match &self.backend {
            Backend::Sled(s) => s.session_key(id),
        }
    }

    /// Checks that the store answers and that its writes reach durable storage.
    pub async fn check(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sled(s) => s.check().await,
        }
    }

    /// Makes everything written so far durable and logs the store's statistics (shutdown).
    pub async fn close(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sled(s) => s.close().await,
        }
    }
}

/// What a returning login must write, given what is stored: `None` when nothing changed.
/// Shared by the backends so that they agree on "only what changed".
fn returning_update(stored: &User, session: &WechatSession, now: OffsetDateTime) -> Option<User> {
    let new_unionid = session.unionid.is_some() && session.unionid != stored.unionid;
    let stale = now - stored.last_login_at >= LAST_LOGIN_GRANULARITY;
    (new_unionid || stale).then(|| {
        let mut user = stored.clone();
        if new_unionid {
            user.unionid.clone_from(&session.unionid);
        }
        user.last_login_at = now;
        user
    })
}

/// The session-key record to write, given what is stored: `None` when WeChat sent the same key.
fn session_key_update(
    stored: Option<&StoredSessionKey>,
    key: &SessionKey,
    now: OffsetDateTime,
) -> Option<StoredSessionKey> {
    match stored {
        Some(s) if s.session_key == *key => None,
        _ => Some(StoredSessionKey { session_key: key.clone(), issued_at: now }),
    }
}

/// A fresh user for a first login.
fn new_user(id: UserId, appid: &str, session: &WechatSession, now: OffsetDateTime) -> User {
    User {
        id,
        appid: appid.to_owned(),
        openid: session.openid.clone(),
        unionid: session.unionid.clone(),
        created_at: now,
        last_login_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(unionid: Option<&str>, key: &str) -> WechatSession {
        WechatSession {
            openid: "o1".into(),
            unionid: unionid.map(str::to_owned),
            session_key: SessionKey::new(key.into()),
        }
    }

    #[test]
    fn a_returning_login_rewrites_the_user_only_when_something_changed() {
        let t0 = OffsetDateTime::now_utc();
        let user = new_user(UserId::new(), "wx1", &session(None, "k"), t0);
        let soon = t0 + Duration::seconds(10);
        assert_eq!(returning_update(&user, &session(None, "k"), soon), None);
        let updated = returning_update(&user, &session(Some("u1"), "k"), soon).unwrap();
        assert_eq!((updated.unionid.as_deref(), updated.last_login_at), (Some("u1"), soon));
        let later = t0 + LAST_LOGIN_GRANULARITY;
        assert_eq!(returning_update(&user, &session(None, "k"), later).unwrap().last_login_at, later);
        let with_union = User { unionid: Some("u1".into()), ..user };
        // A unionid once received is kept when a later answer lacks it.
        assert_eq!(returning_update(&with_union, &session(None, "k"), soon), None);
        assert_eq!(returning_update(&with_union, &session(Some("u1"), "k"), soon), None);
    }

    #[test]
    fn a_session_key_is_written_only_when_wechat_sent_a_different_one() {
        let t0 = OffsetDateTime::now_utc();
        let key = SessionKey::new("k1".into());
        let stored = StoredSessionKey { session_key: key.clone(), issued_at: t0 };
        assert_eq!(session_key_update(Some(&stored), &key, t0 + Duration::seconds(1)), None);
        let other = SessionKey::new("k2".into());
        assert_eq!(session_key_update(Some(&stored), &other, t0).unwrap().session_key, other);
        assert!(session_key_update(None, &key, t0).is_some());
    }
}
