//! The facility's journal of checks, on the store. A record is acknowledged only after
//! [`Journal::commit`] returned, i.e. after flush + fsync (grouped across concurrent writers).
//!
//! Record ids are unique without coordination: facility code, a node id drawn once when the data
//! directory is created, and a sequence from the store that never repeats across restarts.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use onshi_model::{CheckOutcome, CheckRequest, FacilityCode, Source, Validity};
use onshi_sync::crdt::{Actor, DeferredCheck, JournalRecord, RecordFacts, RecordId, WriteError};
use onshi_sync::journal_store::JournalTree;
use onshi_sync::store::{GroupCommit, Store, StoreError, StoreHealth, Tree};
use serde::{Deserialize, Serialize};

use crate::provisional::ProvisionalRecord;
use crate::reader::CardVerification;
use crate::tally::QueueTally;

/// Where a check is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    /// Answered online; nothing more to do.
    Answered,
    /// Answered from the replica or queued; the online check is still to be done.
    Deferred,
    /// A deferred check whose online answer has arrived.
    Completed,
}

/// The online answer that completed a deferred check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalOutcome {
    pub outcome: CheckOutcome,
    pub completed_at: DateTime<Utc>,
}

/// One check as the facility recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub check_id: String,
    pub facility: FacilityCode,
    pub created_at: DateTime<Utc>,
    pub request: CheckRequest,
    /// What reception was told.
    pub validity: Validity,
    pub source: Source,
    pub outcome: Option<CheckOutcome>,
    /// When the answer was true (online: when it arrived; replica: when the replica learnt it).
    pub as_of: Option<DateTime<Utc>>,
    pub state: CheckState,
    /// The online answer of a deferred check, once it arrived.
    pub final_outcome: Option<FinalOutcome>,
    /// Online attempts made for a deferred check, and the last failure.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// A card check's verification of the holder (face or PIN) and its route (a reader, or the
    /// API); `None` for an insurance-card check.
    pub card: Option<CardVerification>,
}

/// The facility's own record of a declared outage (central search mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutageState {
    pub active: bool,
    pub reason: String,
    pub since: DateTime<Utc>,
    /// True once the reconciler recorded the declaration (or its end).
    pub central: bool,
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize)]
enum StoredOutage {
    V1(OutageState),
}

const OUTAGE_KEY: &[u8] = b"outage";

/// How a provisional record is stored: the enum tag is the version.
#[derive(Debug, Serialize, Deserialize)]
enum StoredProvisional {
    V1(ProvisionalRecord),
}

/// The first stored form (issue 2): an online answer only.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckRecordV1 {
    check_id: String,
    facility: FacilityCode,
    created_at: DateTime<Utc>,
    request: CheckRequest,
    validity: Validity,
    source: Source,
    outcome: Option<CheckOutcome>,
    as_of: Option<DateTime<Utc>>,
}

/// The second stored form (issue 3 to 14): deferred checks, before the card verification.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckRecordV2 {
    check_id: String,
    facility: FacilityCode,
    created_at: DateTime<Utc>,
    request: CheckRequest,
    validity: Validity,
    source: Source,
    outcome: Option<CheckOutcome>,
    as_of: Option<DateTime<Utc>>,
    state: CheckState,
    final_outcome: Option<FinalOutcome>,
    attempts: u32,
    last_error: Option<String>,
}

/// How a record is stored: the enum tag is the version (postcard has no optional fields, so a
/// new field is a new version; the old forms stay readable).
#[derive(Debug, Serialize, Deserialize)]
enum StoredCheck {
    V1(CheckRecordV1),
    V2(CheckRecordV2),
    V3(CheckRecord),
}

impl StoredCheck {
    fn into_current(self) -> CheckRecord {
        match self {
            StoredCheck::V3(r) => r,
            StoredCheck::V2(r) => CheckRecord {
                check_id: r.check_id,
                facility: r.facility,
                created_at: r.created_at,
                request: r.request,
                validity: r.validity,
                source: r.source,
                outcome: r.outcome,
                as_of: r.as_of,
                state: r.state,
                final_outcome: r.final_outcome,
                attempts: r.attempts,
                last_error: r.last_error,
                card: None,
            },
            StoredCheck::V1(r) => CheckRecord {
                check_id: r.check_id,
                facility: r.facility,
                created_at: r.created_at,
                request: r.request,
                validity: r.validity,
                source: r.source,
                outcome: r.outcome,
                as_of: r.as_of,
                state: CheckState::Answered,
                final_outcome: None,
                attempts: 0,
                last_error: None,
                card: None,
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("record {id} does not decode: {reason}")]
    Corrupt { id: String, reason: String },
}

/// The journal in `GET /v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct JournalStatus {
    pub checks: usize,
    pub provisional: usize,
    pub syncs: u64,
    pub commits: u64,
    /// False while nothing can be recorded (a full disk, an IO error), until a reopen succeeds.
    pub writable: bool,
    /// The last write or sync failure (kept after recovery).
    pub last_error: Option<String>,
    pub unwritable_s: Option<f64>,
    /// Commits answered "not recorded".
    pub commit_failures: u64,
    /// Failed writes and syncs of the store.
    pub write_failures: u64,
    /// Reopens that made it writable again.
    pub recoveries: u64,
}

/// What the queue's tally is counted from (at open, and again after a reopen).
#[derive(Debug, Clone)]
struct TallyParts {
    checks: Arc<dyn Tree>,
    deferred: Arc<dyn Tree>,
    provisional: Arc<dyn Tree>,
    sync: JournalTree,
}

impl TallyParts {
    /// The one walk: deferred checks, provisional records and their sync records into `tally`.
    fn walk(&self, tally: &QueueTally) -> Result<(), JournalError> {
        for kv in self.deferred.scan_prefix(&[]) {
            let id = String::from_utf8_lossy(&kv?.0).into_owned();
            if let Some(b) = self.checks.get(id.as_bytes())? {
                let r = postcard::from_bytes::<StoredCheck>(&b)
                    .map(StoredCheck::into_current)
                    .map_err(|e| JournalError::Corrupt {
                        id: id.clone(),
                        reason: e.to_string(),
                    })?;
                tally.check(&id, r.created_at, r.state == CheckState::Deferred);
            }
        }
        for kv in self.provisional.scan_prefix(&[]) {
            let (k, v) = kv?;
            let p = Journal::decode_provisional(&k, &v)?;
            tally.provisional_stored(&p);
            if let Ok(id) = RecordId::parse(&p.record_id)
                && let Some(r) = self.sync.get(&id)?
            {
                tally.synced(&r);
            }
        }
        Ok(())
    }
}

/// The journal of checks.
#[derive(Debug, Clone)]
pub struct Journal {
    facility: FacilityCode,
    node_id: u32,
    checks: Arc<dyn Tree>,
    deferred: Arc<dyn Tree>,
    provisional: Arc<dyn Tree>,
    meta: Arc<dyn Tree>,
    /// Record id → the settlement revision staff closed it at (u32, big-endian): a revision that
    /// arrives after closing is shown as an item to act on again (issue 16). The edge's own
    /// bookkeeping, never synced.
    closed_revisions: Arc<dyn Tree>,
    /// The sync journal (CRDT records of provisional records and deferred checks).
    pub sync: JournalTree,
    commit: GroupCommit,
    seq_lock: Arc<std::sync::Mutex<()>>,
    /// The queue's counts, kept with every write (see [`QueueTally`]).
    tally: Arc<QueueTally>,
    /// Held over a write to the check or provisional trees and its tally, so the tally sees
    /// writes of one record in the order the trees do.
    write_lock: Arc<std::sync::Mutex<()>>,
    /// The highest sequence number handed out by this process: a reopen after a write failure
    /// may drop the stored counter's last increments, and an id must never be given twice.
    issued: Arc<std::sync::atomic::AtomicU64>,
}

const NODE_ID_KEY: &[u8] = b"node_id";
const SEQ_KEY: &[u8] = b"next_seq";

/// A restored data directory (`onshi-edge restore`) gets a node id of its own: the edge it was
/// backed up from may have handed out the sequence numbers after the backup's moment under the
/// old one, and those records may have reached the centre. Returns the new id.
pub(crate) fn renew_node_id(store: &dyn Store) -> Result<u32, StoreError> {
    let meta = store.tree("journal.meta")?;
    let old = meta.get(NODE_ID_KEY)?;
    let id = loop {
        let id: u32 = rand::random();
        if old.as_deref() != Some(&id.to_be_bytes()[..]) {
            break id;
        }
    };
    meta.put(NODE_ID_KEY, &id.to_be_bytes())?;
    store.sync()?;
    Ok(id)
}

impl Journal {
    /// Opens the journal; a new data directory gets a fresh node id. Must run inside a tokio runtime
    /// (it starts the group-commit task).
    pub fn open(store: Arc<dyn Store>, facility: FacilityCode) -> Result<Self, JournalError> {
        let checks = store.tree("journal.checks")?;
        let deferred = store.tree("journal.deferred")?;
        let provisional = store.tree("journal.provisional")?;
        let meta = store.tree("journal.meta")?;
        let closed_revisions = store.tree("journal.closed_revisions")?;
        let tally = Arc::new(QueueTally::default());
        let sync = {
            let tally = tally.clone();
            JournalTree::open(store.as_ref(), "journal.sync")?
                .observed(Arc::new(move |r| tally.synced(r)))
        };
        let node_id = match meta.get(NODE_ID_KEY)? {
            Some(b) if b.len() == 4 => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            _ => {
                let id: u32 = rand::random();
                meta.put(NODE_ID_KEY, &id.to_be_bytes())?;
                store.sync()?;
                id
            }
        };
        let parts = TallyParts {
            checks: checks.clone(),
            deferred: deferred.clone(),
            provisional: provisional.clone(),
            sync: sync.clone(),
        };
        // After a reopen the tally is counted again from what is on disk.
        let on_recovered = {
            let (parts, tally) = (parts.clone(), tally.clone());
            Arc::new(move || {
                tally.rebuild(|fresh| {
                    if let Err(e) = parts.walk(fresh) {
                        tracing::error!(error = %e, "the queue's counts could not be rebuilt");
                    }
                })
            })
        };
        let commit = GroupCommit::start_with(store, on_recovered);
        let journal = Journal {
            facility,
            node_id,
            checks,
            deferred,
            provisional,
            meta,
            closed_revisions,
            sync,
            commit,
            seq_lock: Arc::default(),
            tally,
            write_lock: Arc::default(),
            issued: Arc::default(),
        };
        // The one walk: the tally from what is stored.
        parts.walk(&journal.tally)?;
        Ok(journal)
    }

    /// Whether the journal can write now, why not, and since when (see [`StoreHealth`]).
    pub fn health(&self) -> StoreHealth {
        self.commit.health()
    }

    /// The journal's part of `GET /v1/status`.
    pub fn status(&self) -> JournalStatus {
        let (syncs, commits) = self.commit_stats();
        let h = self.health();
        JournalStatus {
            checks: self.len(),
            provisional: self.provisional_len(),
            syncs,
            commits,
            writable: h.writable,
            last_error: h.last_error,
            unwritable_s: h.unwritable_for.map(|d| d.as_secs_f64()),
            commit_failures: self.commit_failures(),
            write_failures: h.failures,
            recoveries: h.recoveries,
        }
    }

    /// The status warning while the journal cannot write.
    pub fn warning(&self) -> Option<String> {
        let h = self.health();
        h.unwritable_for.map(|d| {
            format!(
                "journal_unwritable: nothing can be recorded for {} s ({}); every write is refused until it can",
                d.as_secs(),
                h.last_error.as_deref().unwrap_or("unknown error")
            )
        })
    }

    /// Commits answered "not recorded" since start.
    pub fn commit_failures(&self) -> u64 {
        self.commit
            .stats()
            .failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The queue's counts without a walk.
    pub fn tally(&self) -> &QueueTally {
        &self.tally
    }

    pub fn facility(&self) -> &FacilityCode {
        &self.facility
    }

    /// A new record id, e.g. `1311234567-3f2a9c01-0000000042`. The counter is stored in the same
    /// store and made durable with the record it numbers, so an acknowledged id is never reused.
    pub fn next_id(&self) -> Result<String, JournalError> {
        let _g = self.seq_lock.lock().unwrap_or_else(|p| p.into_inner());
        use std::sync::atomic::Ordering::SeqCst;
        let stored = self
            .meta
            .get(SEQ_KEY)?
            .as_deref()
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(1, u64::from_be_bytes);
        let n = stored.max(self.issued.load(SeqCst) + 1);
        self.meta.put(SEQ_KEY, &(n + 1).to_be_bytes())?;
        self.issued.fetch_max(n, SeqCst);
        Ok(format!("{}-{:08x}-{n:010}", self.facility, self.node_id))
    }

    /// Writes a record (and its place in the deferred queue while it is deferred) without waiting
    /// for the disk; follow with [`Journal::commit`] before acknowledging anything.
    pub fn put(&self, rec: &CheckRecord) -> Result<(), JournalError> {
        let bytes = postcard::to_allocvec(&StoredCheck::V3(rec.clone())).map_err(|e| {
            JournalError::Corrupt {
                id: rec.check_id.clone(),
                reason: e.to_string(),
            }
        })?;
        let deferred = rec.state == CheckState::Deferred;
        let _g = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        // The queue entry is written first and removed last, so a crash in between leaves a
        // completed record still queued (done again, harmlessly), never a deferred one unqueued.
        if deferred {
            self.deferred.put(rec.check_id.as_bytes(), &[])?;
        }
        self.checks.put(rec.check_id.as_bytes(), &bytes)?;
        if !deferred {
            self.deferred.remove(rec.check_id.as_bytes())?;
        }
        self.tally.check(&rec.check_id, rec.created_at, deferred);
        Ok(())
    }

    /// Everything written so far is on disk when this returns (group commit).
    pub async fn commit(&self) -> Result<(), JournalError> {
        Ok(self.commit.commit().await?)
    }

    /// Writes a record and returns once it is on disk.
    pub async fn put_durable(&self, rec: &CheckRecord) -> Result<(), JournalError> {
        let epoch = self.commit.epoch();
        self.put(rec)?;
        Ok(self.commit.commit_since(epoch).await?)
    }

    pub fn get(&self, id: &str) -> Result<Option<CheckRecord>, JournalError> {
        match self.checks.get(id.as_bytes())? {
            None => Ok(None),
            Some(b) => match postcard::from_bytes::<StoredCheck>(&b) {
                Ok(r) => Ok(Some(r.into_current())),
                Err(e) => Err(JournalError::Corrupt {
                    id: id.to_string(),
                    reason: e.to_string(),
                }),
            },
        }
    }

    /// The ids of deferred checks, oldest first (ids sort by sequence within a node).
    pub fn deferred_ids(&self) -> Result<Vec<String>, JournalError> {
        self.deferred
            .scan_prefix(&[])
            .map(|kv| Ok(String::from_utf8_lossy(&kv?.0).into_owned()))
            .collect()
    }

    pub fn deferred_len(&self) -> usize {
        self.deferred.len()
    }

    /// Records the outage state durably.
    pub async fn set_outage(&self, o: &OutageState) -> Result<(), JournalError> {
        let bytes = postcard::to_allocvec(&StoredOutage::V1(o.clone())).map_err(|e| {
            JournalError::Corrupt {
                id: "outage".into(),
                reason: e.to_string(),
            }
        })?;
        let epoch = self.commit.epoch();
        self.meta.put(OUTAGE_KEY, &bytes)?;
        Ok(self.commit.commit_since(epoch).await?)
    }

    pub fn outage(&self) -> Result<Option<OutageState>, JournalError> {
        match self.meta.get(OUTAGE_KEY)? {
            None => Ok(None),
            Some(b) => match postcard::from_bytes::<StoredOutage>(&b) {
                Ok(StoredOutage::V1(o)) => Ok(Some(o)),
                Err(e) => Err(JournalError::Corrupt {
                    id: "outage".into(),
                    reason: e.to_string(),
                }),
            },
        }
    }

    /// Writes a provisional record and returns once it is on disk.
    pub async fn put_provisional_durable(
        &self,
        rec: &ProvisionalRecord,
    ) -> Result<(), JournalError> {
        let bytes = postcard::to_allocvec(&StoredProvisional::V1(rec.clone())).map_err(|e| {
            JournalError::Corrupt {
                id: rec.record_id.clone(),
                reason: e.to_string(),
            }
        })?;
        let epoch = self.commit.epoch();
        {
            let _g = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
            self.provisional.put(rec.record_id.as_bytes(), &bytes)?;
            self.tally.provisional_stored(rec);
        }
        Ok(self.commit.commit_since(epoch).await?)
    }

    pub fn get_provisional(&self, id: &str) -> Result<Option<ProvisionalRecord>, JournalError> {
        match self.provisional.get(id.as_bytes())? {
            None => Ok(None),
            Some(b) => Self::decode_provisional(id.as_bytes(), &b).map(Some),
        }
    }

    fn decode_provisional(id: &[u8], b: &[u8]) -> Result<ProvisionalRecord, JournalError> {
        match postcard::from_bytes::<StoredProvisional>(b) {
            Ok(StoredProvisional::V1(r)) => Ok(r),
            Err(e) => Err(JournalError::Corrupt {
                id: String::from_utf8_lossy(id).into_owned(),
                reason: e.to_string(),
            }),
        }
    }

    /// Every provisional record, oldest first, one at a time (a streamed export holds one).
    pub fn provisional_iter(
        &self,
    ) -> impl Iterator<Item = Result<ProvisionalRecord, JournalError>> + '_ {
        self.provisional.scan_prefix(&[]).map(|kv| {
            let (k, v) = kv?;
            Self::decode_provisional(&k, &v)
        })
    }

    /// Every check record in id order, one at a time (a streamed export holds one).
    pub fn checks_iter(&self) -> impl Iterator<Item = Result<CheckRecord, JournalError>> + '_ {
        self.checks.scan_prefix(&[]).map(|kv| {
            let (k, v) = kv?;
            postcard::from_bytes::<StoredCheck>(&v)
                .map(StoredCheck::into_current)
                .map_err(|e| JournalError::Corrupt {
                    id: String::from_utf8_lossy(&k).into_owned(),
                    reason: e.to_string(),
                })
        })
    }

    /// Every provisional record, oldest first.
    pub fn provisional_records(&self) -> Result<Vec<ProvisionalRecord>, JournalError> {
        self.provisional
            .scan_prefix(&[])
            .map(|kv| {
                let (k, v) = kv?;
                Self::decode_provisional(&k, &v)
            })
            .collect()
    }

    pub fn provisional_len(&self) -> usize {
        self.provisional.len()
    }

    /// Every check record, in id order (for `onshi-edge export`).
    pub fn all_checks(&self) -> Result<Vec<CheckRecord>, JournalError> {
        self.checks
            .scan_prefix(&[])
            .map(|kv| {
                let (k, v) = kv?;
                postcard::from_bytes::<StoredCheck>(&v)
                    .map(StoredCheck::into_current)
                    .map_err(|e| JournalError::Corrupt {
                        id: String::from_utf8_lossy(&k).into_owned(),
                        reason: e.to_string(),
                    })
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.checks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sync record of a provisional record, written (merged) into the sync journal. Not
    /// durable until the next commit.
    pub fn put_sync_provisional(
        &self,
        rec: &ProvisionalRecord,
    ) -> Result<JournalRecord, JournalError> {
        let id = RecordId::parse(&rec.record_id).map_err(|e| JournalError::Corrupt {
            id: rec.record_id.clone(),
            reason: e.to_string(),
        })?;
        let jr = JournalRecord::new(id, RecordFacts::Provisional(rec.clone())).map_err(|e| {
            JournalError::Corrupt {
                id: rec.record_id.clone(),
                reason: e.to_string(),
            }
        })?;
        Ok(self.sync.merge(jr)?)
    }

    /// The sync record of a deferred check (its facts as answered), merged into the sync journal.
    /// Not durable until the next commit.
    pub fn put_sync_deferred(&self, rec: &CheckRecord) -> Result<JournalRecord, JournalError> {
        let id = RecordId::parse(&rec.check_id).map_err(|e| JournalError::Corrupt {
            id: rec.check_id.clone(),
            reason: e.to_string(),
        })?;
        let facts = RecordFacts::DeferredCheck(DeferredCheck {
            check_id: rec.check_id.clone(),
            created_at: rec.created_at,
            request: rec.request.clone(),
            answered: rec.validity,
            source: rec.source,
        });
        let jr = JournalRecord::new(id, facts).map_err(|e| JournalError::Corrupt {
            id: rec.check_id.clone(),
            reason: e.to_string(),
        })?;
        Ok(self.sync.merge(jr)?)
    }

    /// Staff acted on a settled item: closes it (a closed one stays closed) and remembers the
    /// settlement revision staff saw, so that a revision arriving later shows as an item to act
    /// on again ([`crate::queue::revised_after_close`]); closing that again remembers the new
    /// revision. `None` for an unknown id; the inner error when it cannot be closed (unsettled).
    /// Not durable until the next commit.
    pub fn close_item(
        &self,
        id: &RecordId,
    ) -> Result<Option<Result<JournalRecord, WriteError>>, JournalError> {
        let mut seen = 0;
        let closed = self.sync.update(id, |r| {
            seen = r.settlement_revision();
            r.close(Actor::Edge)
        })?;
        if let Some(Ok(_)) = &closed {
            // The revision read, not the one merged: one that came in meanwhile was not seen.
            self.closed_revisions
                .put(id.to_string().as_bytes(), &seen.to_be_bytes())?;
        }
        Ok(closed)
    }

    /// The settlement revision staff closed the record at; `None` if not recorded (not closed,
    /// or closed by a version before issue 16).
    pub fn closed_revision(&self, id: &RecordId) -> Result<Option<u32>, JournalError> {
        Ok(self
            .closed_revisions
            .get(id.to_string().as_bytes())?
            .as_deref()
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes))
    }

    /// Records made before the sync journal existed get their sync record (start-up, idempotent).
    pub async fn backfill_sync(&self) -> Result<usize, JournalError> {
        let mut added = 0;
        for p in self.provisional_records()? {
            if let Ok(id) = RecordId::parse(&p.record_id)
                && self.sync.get(&id)?.is_none()
            {
                self.put_sync_provisional(&p)?;
                added += 1;
            }
        }
        for cid in self.deferred_ids()? {
            if let Ok(id) = RecordId::parse(&cid)
                && self.sync.get(&id)?.is_none()
                && let Some(r) = self.get(&cid)?
            {
                self.put_sync_deferred(&r)?;
                added += 1;
            }
        }
        if added > 0 {
            self.commit().await?;
        }
        Ok(added)
    }

    pub fn commit_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = self.commit.stats();
        (s.syncs.load(Relaxed), s.commits.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::{Verified, Via};

    fn v2(card_id: &str) -> CheckRecordV2 {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        CheckRecordV2 {
            check_id: "1311234567-00000001-0000000001".into(),
            facility: FacilityCode::parse("1311234567").unwrap(),
            created_at: Utc::now(),
            request: CheckRequest::from_json(&serde_json::json!({ "card_id": card_id }), today)
                .unwrap(),
            validity: Validity::Pending,
            source: Source::Queued,
            outcome: None,
            as_of: None,
            state: CheckState::Deferred,
            final_outcome: None,
            attempts: 1,
            last_error: Some("link down".into()),
        }
    }

    #[test]
    fn records_stored_before_the_card_verification_still_read_and_new_ones_keep_it() {
        let old = v2("C0000001");
        let bytes = postcard::to_allocvec(&StoredCheck::V2(old.clone())).unwrap();
        let read = postcard::from_bytes::<StoredCheck>(&bytes)
            .unwrap()
            .into_current();
        assert_eq!(
            (read.check_id.as_str(), read.state, read.card.clone()),
            (old.check_id.as_str(), CheckState::Deferred, None)
        );
        let mut new = read;
        new.card = Some(CardVerification {
            verified: Verified::Face,
            via: Via::Reader("R2".into()),
        });
        let bytes = postcard::to_allocvec(&StoredCheck::V3(new.clone())).unwrap();
        let back = postcard::from_bytes::<StoredCheck>(&bytes)
            .unwrap()
            .into_current();
        assert_eq!(back, new);
    }
}
