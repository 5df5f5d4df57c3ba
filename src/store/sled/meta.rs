//! The `meta` tree on sled: the schema version, the mode the store was created in, the
//! import marker and `/readyz`'s probe; and the health of the store as a whole.

use time::OffsetDateTime;

use super::{SCHEMA_KEY, SledStore, decode_version};
use crate::{
    domain::KeyMode,
    store::{StoreError, backend::Backend, meta::agree, sealed::Sealer},
};

impl Backend for SledStore {
    /// Reads come from cache, so after a failed flush the check flushes again itself:
    /// otherwise an instance taken out of rotation would never see a login that proves it
    /// recovered.
    async fn check(&self) -> Result<(), StoreError> {
        if !self.commit.healthy() {
            self.commit.wait().await?;
        }
        decode_version(self.meta.get(SCHEMA_KEY)?.as_deref()).map(|_| ())
    }

    async fn claim_mode(&self, mode: KeyMode) -> Result<(), StoreError> {
        // Not waited for: lost in a crash right after start, it is claimed again at the next.
        match self.meta.compare_and_swap(MODE_KEY, None::<&[u8]>, Some(mode.as_str().as_bytes()))? {
            Ok(()) => Ok(()),
            Err(found) => agree(found.current.as_deref().unwrap_or_default(), mode, "WXAUTH_DATA_DIR"),
        }
    }

    /// sled records no sealing key: one process at a time uses a data directory, and a
    /// lost key costs the stored session keys only (the clients log in again).
    async fn claim_sealing_key(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Writes a probe record and waits until it is durable: proof that writes work now.
    async fn check_writable(&self) -> Result<(), StoreError> {
        let now = OffsetDateTime::now_utc().unix_timestamp().to_be_bytes();
        self.meta.insert(WRITE_PROBE_KEY, &now)?;
        self.commit.wait().await
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.commit.wait().await?;
        let stats = self.commit.stats();
        tracing::info!(
            target: "wxauth::store",
            group_commits = stats.flushes,
            fsyncs = stats.fsyncs,
            "store closed"
        );
        Ok(())
    }

    fn sealer(&self) -> &Sealer {
        &self.sealer
    }
}

/// The meta key of the mode the store was created in.
pub(super) const MODE_KEY: &[u8] = b"mode";

/// The meta key present while `wxauth store import` fills the store.
pub(super) const IMPORTING_KEY: &[u8] = b"importing";

/// The meta key `/readyz` writes to.
const WRITE_PROBE_KEY: &[u8] = b"write_probe";
