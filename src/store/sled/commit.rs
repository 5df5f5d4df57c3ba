//! Group commit: writers that need durability wait for a flush that started after their
//! write. Everyone who queued while one flush ran shares the next, so N concurrent first
//! logins cost about two flushes, not N.
//!
//! A flush is `fdatasync` of the per-user keys (`user-keys`, [`super::vault`]: a key is
//! durable before any record sealed under it is acknowledged, without an fsync per new
//! user), then sled's `flush_async` followed by `fdatasync` on the database file through a
//! handle of our own. sled 0.34's flush ends in `sync_file_range` (sled issue #1452), which
//! neither empties the drive's write cache nor writes file metadata such as the length.

use std::{
    collections::HashMap,
    fs::File,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
};

use tokio::sync::{mpsc, oneshot};

use crate::store::StoreError;

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// Counters for the shutdown log line and the benchmarks.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stats {
    /// Group commits completed (each one sled flush).
    pub(super) flushes: u64,
    /// `fdatasync` calls completed.
    pub(super) fsyncs: u64,
}

#[derive(Default)]
struct Shared {
    flushes: AtomicU64,
    fsyncs: AtomicU64,
    /// Whether the last flush failed.
    failed: AtomicBool,
    /// Users with a change that is written but not yet durable, with how many such changes
    /// are in flight (two binds of one account can overlap).
    unflushed: Mutex<HashMap<[u8; 16], usize>>,
    /// `unflushed.len()`, readable without the lock: zero nearly always.
    unflushed_len: AtomicUsize,
    /// Tests hold this to keep flushes from starting.
    #[cfg(test)]
    gate: Arc<tokio::sync::Mutex<()>>,
    /// Tests set this to make flushes fail, as a full or failing disk would.
    #[cfg(test)]
    fail: AtomicBool,
}

/// Handle to the flusher task. Cheap to clone.
#[derive(Clone)]
pub(super) struct GroupCommit {
    queue: mpsc::UnboundedSender<Waiter>,
    shared: Arc<Shared>,
}

impl GroupCommit {
    /// Starts the flusher for `db`, stored in `dir`.
    pub(super) async fn start(db: ::sled::Db, dir: &Path) -> Result<Self, StoreError> {
        let file = open_for_sync(dir).await?;
        let (queue, rx) = mpsc::unbounded_channel::<Waiter>();
        let shared = Arc::new(Shared::default());
        tokio::spawn(run(db, file, rx, shared.clone()));
        Ok(Self { queue, shared })
    }

    /// Waits until everything written before the call is durable.
    pub(super) async fn wait(&self) -> Result<(), StoreError> {
        let stopped = || StoreError::Database("flusher stopped".into());
        let (tx, rx) = oneshot::channel();
        self.queue.send(tx).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Marks `id` as changed but not yet durable, until the guard is dropped. Mark before
    /// the change becomes visible, so that no reader can see it unmarked.
    pub(super) fn track(&self, id: [u8; 16]) -> Unflushed {
        let mut map = self.shared.unflushed.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(id).or_default() += 1;
        self.shared.unflushed_len.store(map.len(), Ordering::Release);
        Unflushed { id, shared: self.shared.clone() }
    }

    /// Whether `id`'s creation might not be durable yet.
    pub(super) fn is_unflushed(&self, id: &[u8]) -> bool {
        self.shared.unflushed_len.load(Ordering::Acquire) > 0
            && <[u8; 16]>::try_from(id)
                .is_ok_and(|id| self.shared.unflushed.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&id))
    }

    /// Whether the last flush succeeded.
    pub(super) fn healthy(&self) -> bool {
        !self.shared.failed.load(Ordering::Relaxed)
    }

    pub(super) fn stats(&self) -> Stats {
        Stats {
            flushes: self.shared.flushes.load(Ordering::Relaxed),
            fsyncs: self.shared.fsyncs.load(Ordering::Relaxed),
        }
    }

    /// Keeps flushes from starting until the returned guard is dropped.
    #[cfg(test)]
    pub(super) fn pause(&self) -> Pause {
        self.shared.gate.clone().try_lock_owned().expect("already paused")
    }

    /// Makes every flush from now on fail (`true`) or work again (`false`).
    #[cfg(test)]
    pub(super) fn fail_flushes(&self, fail: bool) {
        self.shared.fail.store(fail, Ordering::Relaxed);
    }
}

/// A creation that is not yet durable; dropping it says it is (or that the wait failed,
/// which [`GroupCommit::healthy`] then reports).
pub(super) struct Unflushed {
    id: [u8; 16],
    shared: Arc<Shared>,
}

impl Drop for Unflushed {
    fn drop(&mut self) {
        let mut map = self.shared.unflushed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = map.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.id);
            }
        }
        self.shared.unflushed_len.store(map.len(), Ordering::Release);
    }
}

/// Held by a test to pause flushing.
#[cfg(test)]
pub(super) type Pause = tokio::sync::OwnedMutexGuard<()>;

/// The files a group commit syncs.
struct Files {
    keys: File,
    db: File,
}

/// Opens the per-user keys and the database file for `fdatasync`, and makes their
/// directory entries durable once: a new file's name lives in the directory, which
/// `fdatasync` on the file does not cover.
async fn open_for_sync(dir: &Path) -> Result<Arc<Files>, StoreError> {
    let dir = dir.to_owned();
    let io = |what: &str, e: std::io::Error| StoreError::Database(format!("{what}: {e}"));
    tokio::task::spawn_blocking(move || {
        File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| io("syncing the data directory", e))?;
        let keys = File::open(dir.join(super::vault::FILE)).map_err(|e| io("opening the user keys", e))?;
        let db = File::open(dir.join("db")).map_err(|e| io("opening the database file", e))?;
        Ok(Arc::new(Files { keys, db }))
    })
    .await
    .map_err(|e| StoreError::Database(e.to_string()))?
}

async fn run(db: ::sled::Db, file: Arc<Files>, mut rx: mpsc::UnboundedReceiver<Waiter>, shared: Arc<Shared>) {
    while let Some(first) = rx.recv().await {
        #[cfg(test)]
        let _gate = shared.gate.lock().await;
        let mut batch = vec![first];
        while let Ok(next) = rx.try_recv() {
            batch.push(next);
        }
        let result = flush(&db, &file, &shared).await;
        shared.failed.store(result.is_err(), Ordering::Relaxed);
        if let Err(e) = &result {
            tracing::error!(error = %e, "group commit failed");
        }
        for waiter in batch {
            let _ = waiter.send(result.clone());
        }
    }
}

async fn flush(db: &::sled::Db, files: &Arc<Files>, shared: &Shared) -> Result<(), StoreError> {
    #[cfg(test)]
    if shared.fail.load(Ordering::Relaxed) {
        return Err(StoreError::Database("fdatasync: injected failure".into()));
    }
    let keys = files.clone();
    tokio::task::spawn_blocking(move || keys.keys.sync_data())
        .await
        .map_err(|e| StoreError::Database(e.to_string()))?
        .map_err(|e| StoreError::Database(format!("fdatasync of the user keys: {e}")))?;
    db.flush_async().await?;
    shared.flushes.fetch_add(1, Ordering::Relaxed);
    let files = files.clone();
    tokio::task::spawn_blocking(move || files.db.sync_data())
        .await
        .map_err(|e| StoreError::Database(e.to_string()))?
        .map_err(|e| StoreError::Database(format!("fdatasync: {e}")))?;
    shared.fsyncs.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
