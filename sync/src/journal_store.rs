//! A sync journal on the store: one tree, record id → [`JournalRecord`] (`to_bytes`, postcard
//! behind a version tag). Every write is a CRDT merge (read, join, write) under one lock, so
//! concurrent writers (the sync adapter's persists, staff closing an item, a settlement) can never
//! lose each other's changes. Durability is the caller's: follow writes with the store's (group)
//! commit before telling anyone.
//!
//! The edge keeps its facility's journal in `journal.sync`; the reconciler one tree per facility,
//! `journal.<facility>`.

use std::sync::{Arc, Mutex};

use crate::crdt::{Journal, JournalRecord, RecordId};
use crate::store::{Store, StoreError, Tree};
use onshi_model::FacilityCode;

/// Called with a record as it now stands after every write that changed it, under the tree's
/// lock (so observers see the writes in the order the tree does).
pub type WriteObserver = Arc<dyn Fn(&JournalRecord) + Send + Sync>;

/// One journal in one tree.
#[derive(Clone)]
pub struct JournalTree {
    tree: Arc<dyn Tree>,
    lock: Arc<Mutex<()>>,
    observer: Option<WriteObserver>,
}

impl std::fmt::Debug for JournalTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalTree")
            .field("observed", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

/// The reconciler's tree name for a facility's journal.
pub fn facility_tree_name(facility: &FacilityCode) -> String {
    format!("journal.{facility}")
}

impl JournalTree {
    pub fn open(store: &dyn Store, name: &str) -> Result<Self, StoreError> {
        Ok(JournalTree {
            tree: store.tree(name)?,
            lock: Arc::default(),
            observer: None,
        })
    }

    /// The same tree with `observer` told of every write from now on (e.g. to keep counts that
    /// would otherwise need a walk of the tree).
    pub fn observed(mut self, observer: WriteObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    fn decode(key: &[u8], bytes: &[u8]) -> Result<JournalRecord, StoreError> {
        let r = JournalRecord::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: e.to_string(),
        })?;
        if r.id().to_string().as_bytes() != key {
            return Err(StoreError::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                reason: format!("holds record {}", r.id()),
            });
        }
        Ok(r)
    }

    pub fn get(&self, id: &RecordId) -> Result<Option<JournalRecord>, StoreError> {
        let key = id.to_string();
        match self.tree.get(key.as_bytes())? {
            None => Ok(None),
            Some(b) => Self::decode(key.as_bytes(), &b).map(Some),
        }
    }

    /// Joins `record` into the stored one (insert if new) and returns the record as it now stands.
    /// Writes only if something changed. Not durable until the store is synced.
    pub fn merge(&self, record: JournalRecord) -> Result<JournalRecord, StoreError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let key = record.id().to_string();
        let current = match self.tree.get(key.as_bytes())? {
            None => None,
            Some(b) => Some(Self::decode(key.as_bytes(), &b)?),
        };
        let merged = match &current {
            None => record,
            Some(c) => {
                let mut m = c.clone();
                crdts::CvRDT::merge(&mut m, record);
                m
            }
        };
        if current.as_ref() != Some(&merged) {
            let bytes = merged.to_bytes().map_err(|e| StoreError::Corrupt {
                key: key.clone(),
                reason: e.to_string(),
            })?;
            self.tree.put(key.as_bytes(), &bytes)?;
            if let Some(o) = &self.observer {
                o(&merged);
            }
        }
        Ok(merged)
    }

    /// Reads a record, applies `f` to it, and stores the result (as a merge). `None` if unknown.
    pub fn update<E>(
        &self,
        id: &RecordId,
        f: impl FnOnce(&mut JournalRecord) -> Result<(), E>,
    ) -> Result<Option<Result<JournalRecord, E>>, StoreError> {
        let Some(mut r) = self.get(id)? else {
            return Ok(None);
        };
        if let Err(e) = f(&mut r) {
            return Ok(Some(Err(e)));
        }
        Ok(Some(Ok(self.merge(r)?)))
    }

    /// The whole journal (e.g. to build the sync state machine at start-up).
    pub fn load(&self) -> Result<Journal, StoreError> {
        self.tree
            .scan_prefix(&[])
            .map(|kv| {
                let (k, v) = kv?;
                Self::decode(&k, &v)
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}
