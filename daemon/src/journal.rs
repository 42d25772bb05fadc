//! The facility's journal of checks, on the store. A record is acknowledged only after
//! [`Journal::commit`] returned, i.e. after flush + fsync (grouped across concurrent writers).
//!
//! Record ids are unique without coordination: facility code, a node id drawn once when the data
//! directory is created, and a sequence from the store that never repeats across restarts.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use onshi_model::{CheckOutcome, CheckRequest, FacilityCode, Source, Validity};
use onshi_sync::store::{GroupCommit, Store, StoreError, Tree};
use serde::{Deserialize, Serialize};

/// One check as the facility recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub check_id: String,
    pub facility: FacilityCode,
    pub created_at: DateTime<Utc>,
    pub request: CheckRequest,
    pub validity: Validity,
    pub source: Source,
    pub outcome: Option<CheckOutcome>,
    /// When the answer was true (for an online answer, when it arrived).
    pub as_of: Option<DateTime<Utc>>,
}

/// How a record is stored: the enum tag is the version.
#[derive(Debug, Serialize, Deserialize)]
enum StoredCheck {
    V1(CheckRecord),
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("record {id} does not decode: {reason}")]
    Corrupt { id: String, reason: String },
}

/// The journal of checks.
#[derive(Debug, Clone)]
pub struct Journal {
    facility: FacilityCode,
    node_id: u32,
    checks: Arc<dyn Tree>,
    meta: Arc<dyn Tree>,
    commit: GroupCommit,
    seq_lock: Arc<std::sync::Mutex<()>>,
}

const NODE_ID_KEY: &[u8] = b"node_id";
const SEQ_KEY: &[u8] = b"next_seq";

impl Journal {
    /// Opens the journal; a new data directory gets a fresh node id. Must run inside a tokio runtime
    /// (it starts the group-commit task).
    pub fn open(store: Arc<dyn Store>, facility: FacilityCode) -> Result<Self, JournalError> {
        let checks = store.tree("journal.checks")?;
        let meta = store.tree("journal.meta")?;
        let node_id = match meta.get(NODE_ID_KEY)? {
            Some(b) if b.len() == 4 => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            _ => {
                let id: u32 = rand::random();
                meta.insert(NODE_ID_KEY, &id.to_be_bytes())?;
                store.sync()?;
                id
            }
        };
        let commit = GroupCommit::start(store);
        Ok(Journal { facility, node_id, checks, meta, commit, seq_lock: Arc::default() })
    }

    pub fn facility(&self) -> &FacilityCode {
        &self.facility
    }

    /// A new record id, e.g. `1311234567-3f2a9c01-0000000042`. The counter is stored in the same
    /// store and made durable with the record it numbers, so an acknowledged id is never reused.
    pub fn next_id(&self) -> Result<String, JournalError> {
        let _g = self.seq_lock.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.meta.get(SEQ_KEY)?.as_deref().and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(1, u64::from_be_bytes);
        self.meta.insert(SEQ_KEY, &(n + 1).to_be_bytes())?;
        Ok(format!("{}-{:08x}-{n:010}", self.facility, self.node_id))
    }

    /// Writes a record and returns once it is on disk.
    pub async fn put_durable(&self, rec: &CheckRecord) -> Result<(), JournalError> {
        let bytes = postcard::to_allocvec(&StoredCheck::V1(rec.clone())).map_err(|e| JournalError::Corrupt { id: rec.check_id.clone(), reason: e.to_string() })?;
        self.checks.insert(rec.check_id.as_bytes(), &bytes)?;
        self.commit.commit().await?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<CheckRecord>, JournalError> {
        match self.checks.get(id.as_bytes())? {
            None => Ok(None),
            Some(b) => match postcard::from_bytes::<StoredCheck>(&b) {
                Ok(StoredCheck::V1(r)) => Ok(Some(r)),
                Err(e) => Err(JournalError::Corrupt { id: id.to_string(), reason: e.to_string() }),
            },
        }
    }

    pub fn len(&self) -> usize {
        self.checks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn commit_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = self.commit.stats();
        (s.syncs.load(Relaxed), s.commits.load(Relaxed))
    }
}
