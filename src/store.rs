//! Users, openid bindings and session keys in an embedded sled database.
//!
//! The rest of wxauth sees only the typed methods below, so another backend (PostgreSQL
//! for several replicas) can take sled's place without touching callers.
//!
//! Trees:
//! - `users`: user id (16 bytes) → [`User`] as JSON
//! - `openids`: `"{appid}:{openid}"` → user id; the binding a login looks up
//! - `session_keys`: user id → [`StoredSessionKey`] as JSON; only the newest is kept
//! - `meta`: `schema_version` → u32 big-endian

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use serde::{Deserialize, Serialize};
use sled::{
    Transactional,
    transaction::{ConflictableTransactionError, TransactionError},
};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::domain::{SessionKey, User, UserId, WechatSession};

/// Layout version written by this build. Bump it with a migration when the layout changes.
pub const SCHEMA_VERSION: u32 = 1;
const SCHEMA_KEY: &[u8] = b"schema_version";

/// Errors of the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// sled failed (I/O, corruption, lock held by another process).
    #[error("database error: {0}")]
    Database(String),
    /// The data directory was written by a newer wxauth.
    #[error("data directory has schema version {found}; this build understands up to {SCHEMA_VERSION}")]
    SchemaTooNew {
        /// Version found on disk.
        found: u32,
    },
    /// A record could not be decoded, or a binding points at a missing user.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        Self::Database(e.to_string())
    }
}

/// The session key kept for a user: only the newest one is valid at WeChat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSessionKey {
    /// WeChat's key.
    pub session_key: SessionKey,
    /// When WeChat issued it (time of the login).
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
}

/// The outcome of recording a login.
#[derive(Debug, Clone)]
pub struct LoginRecord {
    /// The user, after this login.
    pub user: User,
    /// Whether this login created the user.
    pub created: bool,
}

/// Handle to the database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    users: sled::Tree,
    openids: sled::Tree,
    session_keys: sled::Tree,
    meta: sled::Tree,
    commit: GroupCommit,
}

impl Store {
    /// Opens (or creates) the database in `dir`. Must run inside a tokio runtime.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).cache_capacity(cache_bytes).open()?;
        let meta = db.open_tree("meta")?;
        let version = match meta.compare_and_swap(SCHEMA_KEY, None::<&[u8]>, Some(&SCHEMA_VERSION.to_be_bytes()[..]))? {
            Ok(()) => SCHEMA_VERSION,
            Err(current) => decode_version(current.current.as_deref())?,
        };
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { found: version });
        }
        Ok(Self {
            users: db.open_tree("users")?,
            openids: db.open_tree("openids")?,
            session_keys: db.open_tree("session_keys")?,
            commit: GroupCommit::start(db.clone()),
            meta,
            db,
        })
    }

    /// Records a successful login of `session` for `appid` and waits until it is on disk.
    ///
    /// The first login of an openid creates a user; later ones update it. One serializable
    /// transaction covers lookup and insert, so concurrent first logins create one user.
    pub async fn record_login(&self, appid: &str, session: &WechatSession) -> Result<LoginRecord, StoreError> {
        let now = OffsetDateTime::now_utc();
        let index_key = format!("{appid}:{}", session.openid);
        // Made outside the closure: sled may run it several times.
        let fresh_id = UserId::new();
        let key_record = encode(&StoredSessionKey { session_key: session.session_key.clone(), issued_at: now })?;
        let record = (&self.openids, &self.users, &self.session_keys)
            .transaction(|(openids, users, keys)| {
                let (mut user, created) = match openids.get(index_key.as_bytes())? {
                    Some(id) => {
                        let bytes =
                            users.get(&id)?.ok_or_else(|| abort(StoreError::Corrupt("binding without user".into())))?;
                        (decode::<User>(&bytes).map_err(abort)?, false)
                    }
                    None => {
                        openids.insert(index_key.as_bytes(), &fresh_id.as_bytes()[..])?;
                        let user = User {
                            id: fresh_id,
                            appid: appid.to_owned(),
                            openid: session.openid.clone(),
                            unionid: None,
                            created_at: now,
                            last_login_at: now,
                        };
                        (user, true)
                    }
                };
                user.last_login_at = now;
                if session.unionid.is_some() {
                    user.unionid.clone_from(&session.unionid);
                }
                users.insert(&user.id.as_bytes()[..], encode(&user).map_err(abort)?)?;
                keys.insert(&user.id.as_bytes()[..], key_record.as_slice())?;
                Ok(LoginRecord { user, created })
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => e.into(),
            })?;
        self.commit.wait().await?;
        Ok(record)
    }

    /// The user with `id`, if any.
    pub fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        self.users.get(id.as_bytes())?.map(|bytes| decode(&bytes)).transpose()
    }

    /// The newest session key of a user. Never sent to clients; for decrypting open data.
    pub fn session_key(&self, id: &UserId) -> Result<Option<StoredSessionKey>, StoreError> {
        self.session_keys.get(id.as_bytes())?.map(|bytes| decode(&bytes)).transpose()
    }

    /// Checks that the database answers reads and that writes reach the disk. Reads come
    /// from cache, so after a failed flush the check flushes again itself: otherwise an
    /// instance taken out of rotation would never see a login that proves it recovered.
    pub async fn check(&self) -> Result<(), StoreError> {
        if !self.commit.last_flush_ok.load(Ordering::Relaxed) {
            self.commit.wait().await?;
        }
        decode_version(self.meta.get(SCHEMA_KEY)?.as_deref()).map(|_| ())
    }

    /// Group-commit flushes completed since the store was opened (for benchmarks/metrics).
    pub fn flush_count(&self) -> u64 {
        self.commit.flushes.load(Ordering::Relaxed)
    }

    /// Flushes everything to disk (used at shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

fn decode_version(raw: Option<&[u8]>) -> Result<u32, StoreError> {
    raw.and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("schema_version".into()))
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// Group commit: writers wait for a flush that started after their write; everyone who
/// queued while one flush ran shares the next, so N concurrent logins cost about two
/// fsyncs, not N.
#[derive(Clone)]
struct GroupCommit {
    queue: mpsc::UnboundedSender<Waiter>,
    flushes: Arc<AtomicU64>,
    last_flush_ok: Arc<AtomicBool>,
}

impl GroupCommit {
    fn start(db: sled::Db) -> Self {
        let (queue, mut rx) = mpsc::unbounded_channel::<Waiter>();
        let flushes = Arc::new(AtomicU64::new(0));
        let counter = flushes.clone();
        let last_flush_ok = Arc::new(AtomicBool::new(true));
        let health = last_flush_ok.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while let Ok(next) = rx.try_recv() {
                    batch.push(next);
                }
                let result = db.flush_async().await.map(|_| ()).map_err(StoreError::from);
                counter.fetch_add(1, Ordering::Relaxed);
                health.store(result.is_ok(), Ordering::Relaxed);
                for waiter in batch {
                    let _ = waiter.send(result.clone());
                }
            }
        });
        Self { queue, flushes, last_flush_ok }
    }

    async fn wait(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.queue.send(tx).map_err(|_| StoreError::Database("flusher stopped".into()))?;
        rx.await.map_err(|_| StoreError::Database("flusher stopped".into()))?
    }
}
