//! The mailbox's records, in the journal's store (so the journal's group commit makes them durable
//! with the checks they answer): one record per request file (keyed by its name and the SHA-256 of
//! its bytes) or face file, holding the request's text and every result text written for it; the
//! batch uploads with their answers; an index of the records with a result still to write or
//! a final answer still awaited; and how many times each request file's handling was started
//! without finishing (so a file that kills the edge is quarantined, never crash-looped).
//!
//! A record keeps the *parsed* request (`KeptRequest`), its SHA-256 and the results, never the
//! file's bytes: a file from the share must not be able to grow the journal by its size. Records
//! written before that (`V1`, with the decoded text) still load and export.
//!
//! Values are postcard behind an enum tag that is the version.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use onshi_model::{CheckOutcome, CheckRequest};
use onshi_sync::store::{Store, StoreError, Tree};
use serde::{Deserialize, Serialize};

use super::xml::{Echo, RequestBody, SearchInfo, TextEncoding};

/// What a mailbox record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// `OQSsiquc01req`: one check.
    Single,
    /// `OQSmuquc01req`: a batch upload.
    BatchUpload,
    /// `OQSmuquc02req`: a batch download.
    BatchDownload,
    /// A card-reader check written to `face/` unasked.
    Face,
    /// A file moved to `err/`.
    Rejected,
}

/// One result text, as written (or to be written) to the result file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultText {
    pub at: DateTime<Utc>,
    /// `SegmentOfResult`: 1 done, 2 processing (an interim answer), 9 failed.
    pub segment: String,
    pub text: String,
}

/// One request file (or face file) and what was answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxRecord {
    pub key: String,
    pub kind: RecordKind,
    /// The request file's name (for a face record: the face file's).
    pub file: String,
    pub sha256: Option<String>,
    pub received_at: DateTime<Utc>,
    pub encoding: TextEncoding,
    /// What the request asked, parsed (`None` for a face record and a rejected file).
    pub request: Option<KeptRequest>,
    /// The request's decoded text, as records written before requests were kept parsed (`V1`)
    /// stored it; never written now.
    pub legacy_text: Option<String>,
    pub echo: Echo,
    pub check_id: Option<String>,
    pub reception_number: Option<String>,
    /// Where results go, relative to the mailbox: `res/NAME` or `face/NAME`.
    pub result_file: Option<String>,
    /// Every result text, oldest first; the last one is what the result file holds.
    pub results: Vec<ResultText>,
    /// How many of `results` are known to be on disk (the last one written counts for all).
    pub written: usize,
    /// A deferred check: its final result is still to come.
    pub awaiting_final: bool,
    /// Why the file was moved to `err/`.
    pub reason: Option<String>,
    /// Where the request file went: `done/NAME` or `err/NAME`.
    pub moved_to: Option<String>,
}

/// What the journal keeps of a request: the parsed request, never the file's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeptRequest {
    Single(SearchInfo),
    /// The searches are the batch's (`BatchRecord::requests`); these are the 1-based entries
    /// whose `LimitApplicationCertificateRelatedConsFlg` was 1.
    BatchUpload {
        consented: Vec<u32>,
    },
    BatchDownload {
        reception_number: String,
    },
}

impl KeptRequest {
    /// The request's body, for [`super::xml::render_request`] (a batch upload's searches come from
    /// its batch record).
    pub fn body(&self, batch: Option<&BatchRecord>) -> RequestBody {
        match self {
            KeptRequest::Single(s) => RequestBody::Searches(vec![s.clone()]),
            KeptRequest::BatchUpload { consented } => RequestBody::Searches(
                batch
                    .map(|b| {
                        b.requests
                            .iter()
                            .enumerate()
                            .map(|(i, r)| SearchInfo {
                                request: r.clone(),
                                limit_consent: consented.contains(&(i as u32 + 1)),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            KeptRequest::BatchDownload { reception_number } => {
                RequestBody::Download(reception_number.clone())
            }
        }
    }
}

impl MailboxRecord {
    /// Something is still to do: a result to write, or a final answer to wait for.
    pub fn is_open(&self) -> bool {
        self.awaiting_final || self.written < self.results.len()
    }
}

/// A batch upload and, once they came, its answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub reception_number: String,
    /// The key of the upload's mailbox record.
    pub upload_key: String,
    pub service_date: NaiveDate,
    pub requests: Vec<CheckRequest>,
    /// One per request, in order, once the reconciler answered them all.
    pub outcomes: Option<Vec<CheckOutcome>>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// A record as written before requests were kept parsed: the decoded text instead.
#[derive(Debug, Serialize, Deserialize)]
struct MailboxRecordV1 {
    key: String,
    kind: RecordKind,
    file: String,
    sha256: Option<String>,
    received_at: DateTime<Utc>,
    encoding: TextEncoding,
    request_text: Option<String>,
    echo: Echo,
    check_id: Option<String>,
    reception_number: Option<String>,
    result_file: Option<String>,
    results: Vec<ResultText>,
    written: usize,
    awaiting_final: bool,
    reason: Option<String>,
    moved_to: Option<String>,
}

impl From<MailboxRecordV1> for MailboxRecord {
    fn from(r: MailboxRecordV1) -> Self {
        MailboxRecord {
            key: r.key,
            kind: r.kind,
            file: r.file,
            sha256: r.sha256,
            received_at: r.received_at,
            encoding: r.encoding,
            request: None,
            legacy_text: r.request_text,
            echo: r.echo,
            check_id: r.check_id,
            reception_number: r.reception_number,
            result_file: r.result_file,
            results: r.results,
            written: r.written,
            awaiting_final: r.awaiting_final,
            reason: r.reason,
            moved_to: r.moved_to,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum StoredRecord {
    V1(MailboxRecordV1),
    V2(MailboxRecord),
}

#[derive(Debug, Serialize, Deserialize)]
enum StoredBatch {
    V1(BatchRecord),
}

/// The mailbox's trees.
#[derive(Debug, Clone)]
pub struct MailboxStore {
    records: Arc<dyn Tree>,
    open: Arc<dyn Tree>,
    batches: Arc<dyn Tree>,
    open_batches: Arc<dyn Tree>,
    /// Read-modify-write of a record happens under this lock (the request worker, the finalizer
    /// and the result writer update the same records).
    lock: Arc<std::sync::Mutex<()>>,
}

fn corrupt(key: &[u8], e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    }
}

impl MailboxStore {
    pub fn open(store: &dyn Store) -> Result<Self, StoreError> {
        Ok(MailboxStore {
            records: store.tree("mailbox.records")?,
            open: store.tree("mailbox.open")?,
            batches: store.tree("mailbox.batches")?,
            open_batches: store.tree("mailbox.batches.open")?,
            lock: Arc::default(),
        })
    }

    fn decode(key: &[u8], b: &[u8]) -> Result<MailboxRecord, StoreError> {
        match postcard::from_bytes::<StoredRecord>(b) {
            Ok(StoredRecord::V1(r)) => Ok(r.into()),
            Ok(StoredRecord::V2(r)) => Ok(r),
            Err(e) => Err(corrupt(key, e)),
        }
    }

    pub fn get(&self, key: &str) -> Result<Option<MailboxRecord>, StoreError> {
        self.records
            .get(key.as_bytes())?
            .map(|b| Self::decode(key.as_bytes(), &b))
            .transpose()
    }

    fn put_unlocked(&self, rec: &MailboxRecord) -> Result<(), StoreError> {
        let bytes = postcard::to_allocvec(&StoredRecord::V2(rec.clone()))
            .map_err(|e| corrupt(rec.key.as_bytes(), e))?;
        // The open index is written before the record and cleared after it, so a crash in between
        // leaves at worst an index entry with nothing to do.
        if rec.is_open() {
            self.open.put(rec.key.as_bytes(), &[])?;
        }
        self.records.put(rec.key.as_bytes(), &bytes)?;
        if !rec.is_open() {
            self.open.remove(rec.key.as_bytes())?;
        }
        Ok(())
    }

    /// Writes a record (durable at the journal's next commit).
    pub fn put(&self, rec: &MailboxRecord) -> Result<(), StoreError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.put_unlocked(rec)
    }

    /// Changes a record in place; `None` if there is none under `key`.
    pub fn update(
        &self,
        key: &str,
        f: impl FnOnce(&mut MailboxRecord),
    ) -> Result<Option<MailboxRecord>, StoreError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mut rec) = self.get(key)? else {
            return Ok(None);
        };
        f(&mut rec);
        self.put_unlocked(&rec)?;
        Ok(Some(rec))
    }

    /// Keys of the records with something still to do.
    pub fn open_keys(&self) -> Result<Vec<String>, StoreError> {
        self.open
            .scan_prefix(&[])
            .map(|kv| Ok(String::from_utf8_lossy(&kv?.0).into_owned()))
            .collect()
    }

    pub fn open_len(&self) -> usize {
        self.open.len()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The keys of every record, in the order they were received (for a streamed export: only
    /// the keys are held, each record is read again when its turn comes).
    pub fn keys_by_received(&self) -> Result<Vec<String>, StoreError> {
        let mut keys = self
            .records
            .scan_prefix(&[])
            .map(|kv| {
                let (k, v) = kv?;
                let r = Self::decode(&k, &v)?;
                Ok((r.received_at, r.key))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        keys.sort();
        Ok(keys.into_iter().map(|(_, k)| k).collect())
    }

    /// Every record, in the order they were received.
    pub fn all(&self) -> Result<Vec<MailboxRecord>, StoreError> {
        let mut all = self
            .records
            .scan_prefix(&[])
            .map(|kv| {
                let (k, v) = kv?;
                Self::decode(&k, &v)
            })
            .collect::<Result<Vec<_>, _>>()?;
        all.sort_by(|a, b| a.received_at.cmp(&b.received_at).then(a.key.cmp(&b.key)));
        Ok(all)
    }

    pub fn get_batch(&self, number: &str) -> Result<Option<BatchRecord>, StoreError> {
        match self.batches.get(number.as_bytes())? {
            None => Ok(None),
            Some(b) => match postcard::from_bytes::<StoredBatch>(&b) {
                Ok(StoredBatch::V1(r)) => Ok(Some(r)),
                Err(e) => Err(corrupt(number.as_bytes(), e)),
            },
        }
    }

    /// Writes a batch (durable at the journal's next commit); it is open until its outcomes are in.
    pub fn put_batch(&self, b: &BatchRecord) -> Result<(), StoreError> {
        let bytes = postcard::to_allocvec(&StoredBatch::V1(b.clone()))
            .map_err(|e| corrupt(b.reception_number.as_bytes(), e))?;
        let key = b.reception_number.as_bytes();
        if b.outcomes.is_none() {
            self.open_batches.put(key, &[])?;
        }
        self.batches.put(key, &bytes)?;
        if b.outcomes.is_some() {
            self.open_batches.remove(key)?;
        }
        Ok(())
    }

    /// Reception numbers of the batches still to answer, oldest first.
    pub fn open_batches(&self) -> Result<Vec<String>, StoreError> {
        self.open_batches
            .scan_prefix(&[])
            .map(|kv| Ok(String::from_utf8_lossy(&kv?.0).into_owned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use onshi_sync::store::SledStore;

    #[test]
    fn records_stored_with_their_full_text_still_load() {
        let d = tempfile::tempdir().unwrap();
        let store = SledStore::open(d.path()).unwrap();
        let m = MailboxStore::open(&store).unwrap();
        let old = MailboxRecordV1 {
            key: "req:a.xml:0123".into(),
            kind: RecordKind::Single,
            file: "a.xml".into(),
            sha256: Some("0123".into()),
            received_at: Utc::now(),
            encoding: TextEncoding::Utf8,
            request_text: Some("<XmlMsg/>".into()),
            echo: Echo::default(),
            check_id: Some("c-1".into()),
            reception_number: None,
            result_file: None,
            results: Vec::new(),
            written: 0,
            awaiting_final: false,
            reason: None,
            moved_to: Some("done/a.xml".into()),
        };
        let bytes = postcard::to_allocvec(&StoredRecord::V1(old)).unwrap();
        store
            .tree("mailbox.records")
            .unwrap()
            .insert(b"req:a.xml:0123", &bytes)
            .unwrap();
        let r = m.get("req:a.xml:0123").unwrap().unwrap();
        assert_eq!(r.legacy_text.as_deref(), Some("<XmlMsg/>"));
        assert_eq!(r.request, None);
        assert_eq!(r.check_id.as_deref(), Some("c-1"));
        // Rewritten as V2, it still reads the same.
        m.update("req:a.xml:0123", |r| r.written = 1).unwrap();
        assert_eq!(
            m.get("req:a.xml:0123")
                .unwrap()
                .unwrap()
                .legacy_text
                .as_deref(),
            Some("<XmlMsg/>")
        );
        assert_eq!(m.keys_by_received().unwrap(), ["req:a.xml:0123"]);
    }
}
