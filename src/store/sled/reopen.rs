//! sled stops for good after an I/O error: once a write to its log fails (a full disk,
//! EIO, a file-size limit), every later operation returns that first error until the
//! database is opened again. [`Reopening`] opens it again by itself, so that the server
//! recovers once the disk does, without a restart.
//!
//! After a database error, new operations are refused (503) while the old handle drains:
//! sled holds an exclusive lock on its file, so the new one opens only when every operation
//! that still holds the old one has finished and its flusher has stopped. Retried every
//! [`RETRY`] for as long as opening fails (the disk may still be full).

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use super::SledStore;
use crate::{
    config::SledSettings,
    store::{StoreError, sealed::Sealer},
};

/// Pause between attempts to open the database again.
const RETRY: Duration = Duration::from_millis(200);

/// A sled store that is opened again after a database error.
pub(in crate::store) struct Reopening {
    /// `None` while the database is being opened again.
    current: RwLock<Option<Arc<SledStore>>>,
    settings: SledSettings,
    sealer: Sealer,
    reopening: AtomicBool,
}

impl Reopening {
    /// Opens the database.
    pub(in crate::store) async fn open(settings: &SledSettings, sealer: Sealer) -> Result<Arc<Self>, StoreError> {
        let store = SledStore::open(settings, sealer.clone()).await?;
        Ok(Arc::new(Self {
            current: RwLock::new(Some(Arc::new(store))),
            settings: settings.clone(),
            sealer,
            reopening: AtomicBool::new(false),
        }))
    }

    /// The open database, or an error while it is being opened again.
    pub(in crate::store) fn get(&self) -> Result<Arc<SledStore>, StoreError> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Database("the database is being opened again after a write failure".into()))
    }

    /// Passes `result` on; a database error starts opening the database again.
    pub(in crate::store) fn note<T>(self: &Arc<Self>, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::Database(e)) = &result
            && !self.reopening.swap(true, Ordering::AcqRel)
        {
            tracing::error!(error = %e, "database error; opening the database again");
            tokio::spawn(self.clone().reopen());
        }
        result
    }

    async fn reopen(self: Arc<Self>) {
        let old = self.current.write().unwrap_or_else(|e| e.into_inner()).take();
        drop(old);
        let mut attempts = 0u32;
        loop {
            // Fails with a lock error until the last operation on the old handle is done.
            match SledStore::open(&self.settings, self.sealer.clone()).await {
                Ok(store) => {
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(store));
                    tracing::info!(attempts, "database opened again; writes work");
                    break;
                }
                Err(e) => {
                    attempts += 1;
                    if attempts % 50 == 1 {
                        tracing::warn!(error = %e, attempts, "cannot open the database again yet; retrying");
                    }
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
        self.reopening.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::Mutex,
        time::{Duration, Instant},
    };

    use super::*;

    /// Log lines, captured in memory.
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
        type Writer = Logs;

        fn make_writer(&'a self) -> Logs {
            self.clone()
        }
    }

    #[tokio::test]
    async fn opening_again_waits_for_the_old_handle_warns_once_and_recovers_when_it_is_released() {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt().with_writer(logs.clone()).with_ansi(false).finish();
        // The test runs on one thread, the reopening task included.
        let _guard = tracing::subscriber::set_default(subscriber);
        let dir = tempfile::tempdir().unwrap();
        let settings = SledSettings { data_dir: dir.path().join("data"), cache_bytes: 8 << 20 };
        let store = Reopening::open(&settings, Sealer::ephemeral().unwrap()).await.unwrap();
        let old = store.get().unwrap();

        let noted: Result<(), _> = store.note(Err(StoreError::Database("disk full".into())));
        assert!(noted.is_err(), "the error was not passed on");
        // An operation still holding the old handle keeps sled's lock: opening fails meanwhile.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(store.get().is_err(), "opened again while the old handle held the lock");
        drop(old);
        let started = Instant::now();
        while store.get().is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "never opened again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let warnings: Vec<&str> = text.lines().filter(|l| l.contains("cannot open the database again yet")).collect();
        assert_eq!(warnings.len(), 1, "one warning per 50 attempts:\n{text}");
        assert!(warnings[0].contains("attempts=1"), "no warning at the first failure:\n{text}");
        assert!(text.contains("database opened again"), "{text}");
    }
}
