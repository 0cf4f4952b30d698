//! A [`Store`] wrapper that times every commit (and can `fdatasync` the
//! WAL after each, as `synchronous=FULL` would): the commit breakdown of
//! the latency benches.

use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_im::store::{ContactRecord, HistoryCursor};
use shoal_im::{Changes, MessageId, MessageMeta, Store, StoreError, StoredMessage};

/// Start time and duration of every commit of one store.
pub type CommitLog = Arc<Mutex<Vec<(Instant, Duration)>>>;

/// A store that times its commits; with `wal`, it also `fdatasync`s the
/// WAL file after each (what `synchronous=FULL` does in WAL mode).
pub struct Timed {
    inner: Box<dyn Store>,
    log: CommitLog,
    wal: Option<File>,
}

impl Store for Timed {
    fn load_identity(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.load_identity()
    }

    fn load_contacts(&mut self) -> Result<Vec<ContactRecord>, StoreError> {
        self.inner.load_contacts()
    }

    fn load_index(&mut self) -> Result<Vec<MessageMeta>, StoreError> {
        self.inner.load_index()
    }

    fn message(&mut self, id: &MessageId) -> Result<Option<StoredMessage>, StoreError> {
        self.inner.message(id)
    }

    fn load_sealed(&mut self) -> Result<Vec<shoal_im::SealedRecord>, StoreError> {
        self.inner.load_sealed()
    }

    fn received(&mut self, key: &[u8; 32]) -> Result<Option<MessageId>, StoreError> {
        self.inner.received(key)
    }

    fn history(
        &mut self,
        contact: &[u8; 32],
        before: Option<HistoryCursor>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.history(contact, before, limit)
    }

    fn commit(&mut self, changes: &Changes) -> Result<(), StoreError> {
        let t0 = Instant::now();
        self.inner.commit(changes)?;
        if let Some(wal) = &self.wal {
            wal.sync_data()
                .map_err(|e| StoreError(format!("fdatasync of the WAL: {e}")))?;
        }
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((t0, t0.elapsed()));
        Ok(())
    }
}

impl Timed {
    /// Wraps `inner`, logging into `log`; with `wal`, syncs it after each
    /// commit.
    pub fn new(inner: Box<dyn Store>, log: CommitLog, wal: Option<File>) -> Timed {
        Timed { inner, log, wal }
    }
}
