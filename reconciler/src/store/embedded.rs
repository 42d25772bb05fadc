//! The embedded central store: sled in `DATA/registry` (the layout of the first wave, so an
//! existing data directory keeps working), one process. The registry's trees as
//! [`onshi_sync::registry::Registry`] keeps them, one `journal.<facility>` tree per facility, and
//! the centre's own trees:
//! - `central.registry_changes`: seq (u64, big-endian) → the period (JSON), the change feed;
//! - `central.revisions`: facility + seq → record id, the revision feed;
//! - `central.revisit`: facility + `/` + record id → birth date and service date;
//! - `central.outage_requests`, `central.grants`, `central.facilities`: JSON values.
//!
//! Durability: every call that writes ends with the store's flush + fsync. Exclusion: sled locks
//! the directory to one process, so a second process (`import` while `serve` runs) goes through
//! the running one's admin socket (`crate::admin`); within the process, [`EmbeddedStore::update`]
//! holds a per-facility lock over read, decide and write.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, Utc};
use onshi_model::{CheckOutcome, CheckRequest, FacilityCode, PersonId, Qualification};
use onshi_sync::crdt::{Journal, JournalRecord, RecordId};
use onshi_sync::journal_store::{JournalTree, facility_tree_name};
use onshi_sync::registry::{Applied, Registry};
use onshi_sync::store::{SledStore, Store, StoreError, Tree};

use super::{
    CentralError, CentralStore, Decide, FacilityEntry, Grant, GrantScope, ImportCounts,
    OutageRequest, RegistryChange, RevisitCandidate, revisit_key,
};

/// The embedded store (see the module docs).
#[derive(Debug)]
pub struct EmbeddedStore {
    store: Arc<SledStore>,
    registry: Registry,
    changes: Arc<dyn Tree>,
    revisions: Arc<dyn Tree>,
    revisit: Arc<dyn Tree>,
    requests: Arc<dyn Tree>,
    grants: Arc<dyn Tree>,
    facilities: Arc<dyn Tree>,
    journals: Mutex<HashMap<FacilityCode, Facility>>,
    change_seq: AtomicU64,
    revision_seq: AtomicU64,
    facilities_version: AtomicU64,
    /// Serialises imports (the change feed's order is the order of the writes).
    importing: Mutex<()>,
}

/// A facility's journal tree and the lock [`CentralStore::update`] holds.
#[derive(Debug, Clone)]
struct Facility {
    tree: JournalTree,
    update: Arc<Mutex<()>>,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> CentralError {
    CentralError::Corrupt {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn last_seq(tree: &dyn Tree, key_prefix_len: usize) -> Result<u64, StoreError> {
    let mut max = 0;
    for kv in tree.scan_prefix(&[]) {
        let (k, _) = kv?;
        if let Some(b) = k.get(key_prefix_len..key_prefix_len + 8) {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            max = max.max(u64::from_be_bytes(a));
        }
    }
    Ok(max)
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `DATA/registry`. [`CentralError::Busy`] when a running
    /// `serve` holds it.
    pub fn open(data: &Path) -> Result<Self, CentralError> {
        let store = match SledStore::open(&data.join("registry")) {
            Ok(s) => Arc::new(s),
            Err(StoreError::Engine(sled::Error::Io(e)))
                if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock") =>
            {
                return Err(CentralError::Busy);
            }
            Err(e) => return Err(e.into()),
        };
        let dyn_store: Arc<dyn Store> = store.clone();
        let registry = Registry::open(dyn_store)?;
        let s = EmbeddedStore {
            registry,
            changes: store.tree("central.registry_changes")?,
            revisions: store.tree("central.revisions")?,
            revisit: store.tree("central.revisit")?,
            requests: store.tree("central.outage_requests")?,
            grants: store.tree("central.grants")?,
            facilities: store.tree("central.facilities")?,
            journals: Mutex::default(),
            change_seq: AtomicU64::new(0),
            revision_seq: AtomicU64::new(0),
            facilities_version: AtomicU64::new(1),
            importing: Mutex::new(()),
            store,
        };
        s.change_seq
            .store(last_seq(s.changes.as_ref(), 0)?, Ordering::SeqCst);
        s.revision_seq
            .store(last_seq(s.revisions.as_ref(), 10)?, Ordering::SeqCst);
        Ok(s)
    }

    /// The sled store underneath (the registry's storage, shared with tools and tests).
    pub fn sled(&self) -> &Arc<SledStore> {
        &self.store
    }

    /// The registry as the first wave kept it.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn facility(&self, facility: &FacilityCode) -> Result<Facility, CentralError> {
        let mut journals = lock(&self.journals);
        if let Some(f) = journals.get(facility) {
            return Ok(f.clone());
        }
        let f = Facility {
            tree: JournalTree::open(self.store.as_ref(), &facility_tree_name(facility))?,
            update: Arc::default(),
        };
        journals.insert(facility.clone(), f.clone());
        Ok(f)
    }

    fn sync(&self) -> Result<(), CentralError> {
        Ok(self.store.sync()?)
    }

    fn revisit_key_of(facility: &FacilityCode, id: &RecordId) -> Vec<u8> {
        format!("{facility}/{id}").into_bytes()
    }

    /// Keeps the revisit index in step with a written record.
    fn index_revisit(
        &self,
        facility: &FacilityCode,
        r: &JournalRecord,
    ) -> Result<(), CentralError> {
        let key = Self::revisit_key_of(facility, r.id());
        match revisit_key(r) {
            Some(k) => {
                let mut v = Vec::with_capacity(8);
                v.extend_from_slice(&k.birth_date.num_days_from_ce().to_be_bytes());
                v.extend_from_slice(&k.service_date.num_days_from_ce().to_be_bytes());
                self.revisit.insert(&key, &v)?;
            }
            None => {
                self.revisit.remove(&key)?;
            }
        }
        Ok(())
    }

    fn json_values<T: serde::de::DeserializeOwned>(
        tree: &dyn Tree,
        what: &str,
    ) -> Result<Vec<T>, CentralError> {
        tree.scan_prefix(&[])
            .map(|kv| {
                let (_, v) = kv?;
                serde_json::from_slice(&v).map_err(|e| corrupt(what, e))
            })
            .collect()
    }

    fn time_key(at: DateTime<Utc>, rest: &str) -> Vec<u8> {
        let mut k = at
            .timestamp_nanos_opt()
            .unwrap_or(i64::MAX)
            .to_be_bytes()
            .to_vec();
        k.extend_from_slice(rest.as_bytes());
        k
    }
}

use chrono::Datelike;

fn day(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(days)
}

impl CentralStore for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn check(&self, req: &CheckRequest) -> Result<CheckOutcome, CentralError> {
        Ok(self.registry.check(req)?)
    }

    fn periods_of_person(&self, person: &PersonId) -> Result<Vec<Qualification>, CentralError> {
        Ok(self.registry.periods_of_person(person)?)
    }

    fn period_count(&self) -> Result<u64, CentralError> {
        Ok(self.registry.period_count() as u64)
    }

    fn import(&self, periods: &[Qualification]) -> Result<ImportCounts, CentralError> {
        let _g = lock(&self.importing);
        let mut counts = ImportCounts::default();
        for q in periods {
            match self.registry.put(q)? {
                Applied::Added => counts.added += 1,
                Applied::Updated => counts.updated += 1,
                Applied::Unchanged => {
                    counts.unchanged += 1;
                    continue;
                }
            }
            let seq = self.change_seq.fetch_add(1, Ordering::SeqCst) + 1;
            let bytes = serde_json::to_vec(q).map_err(|e| corrupt("period", e))?;
            self.changes.insert(&seq.to_be_bytes(), &bytes)?;
        }
        self.sync()?;
        Ok(counts)
    }

    fn registry_changes(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<RegistryChange>, CentralError> {
        let mut out = Vec::new();
        let last = self.change_seq.load(Ordering::SeqCst);
        let mut seq = after;
        while out.len() < limit && seq < last {
            seq += 1;
            if let Some(v) = self.changes.get(&seq.to_be_bytes())? {
                out.push(RegistryChange {
                    seq,
                    qualification: serde_json::from_slice(&v).map_err(|e| corrupt("change", e))?,
                });
            }
        }
        Ok(out)
    }

    fn registry_cursor(&self) -> Result<u64, CentralError> {
        Ok(self.change_seq.load(Ordering::SeqCst))
    }

    fn for_each_period(
        &self,
        f: &mut dyn FnMut(Qualification) -> Result<(), CentralError>,
    ) -> Result<(), CentralError> {
        for q in self.registry.all_periods() {
            f(q?)?;
        }
        Ok(())
    }

    fn journal(&self, facility: &FacilityCode) -> Result<Journal, CentralError> {
        Ok(self.facility(facility)?.tree.load()?)
    }

    fn record(
        &self,
        facility: &FacilityCode,
        id: &RecordId,
    ) -> Result<Option<JournalRecord>, CentralError> {
        Ok(self.facility(facility)?.tree.get(id)?)
    }

    fn merge(
        &self,
        facility: &FacilityCode,
        records: Vec<JournalRecord>,
    ) -> Result<Vec<JournalRecord>, CentralError> {
        let f = self.facility(facility)?;
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let merged = f.tree.merge(r)?;
            self.index_revisit(facility, &merged)?;
            out.push(merged);
        }
        if !out.is_empty() {
            self.sync()?;
        }
        Ok(out)
    }

    fn update(
        &self,
        facility: &FacilityCode,
        ids: &[RecordId],
        announce: bool,
        decide: &mut Decide<'_>,
    ) -> Result<Vec<JournalRecord>, CentralError> {
        let f = self.facility(facility)?;
        let _g = lock(&f.update);
        let mut out = Vec::new();
        for id in ids {
            let Some(current) = f.tree.get(id)? else {
                continue;
            };
            let Some(next) = decide(&current) else {
                continue;
            };
            let merged = f.tree.merge(next)?;
            self.index_revisit(facility, &merged)?;
            if announce {
                let seq = self.revision_seq.fetch_add(1, Ordering::SeqCst) + 1;
                let mut key = facility.as_str().as_bytes().to_vec();
                key.extend_from_slice(&seq.to_be_bytes());
                self.revisions.insert(&key, id.to_string().as_bytes())?;
            }
            out.push(merged);
        }
        if !out.is_empty() {
            self.sync()?;
        }
        Ok(out)
    }

    fn revisions(
        &self,
        facility: &FacilityCode,
        after: u64,
    ) -> Result<(Vec<JournalRecord>, u64), CentralError> {
        let f = self.facility(facility)?;
        let prefix = facility.as_str().as_bytes();
        let mut cursor = after;
        let mut ids = Vec::new();
        for kv in self.revisions.scan_prefix(prefix) {
            let (k, v) = kv?;
            let mut a = [0u8; 8];
            a.copy_from_slice(k.get(prefix.len()..prefix.len() + 8).unwrap_or(&[0; 8]));
            let seq = u64::from_be_bytes(a);
            if seq > after {
                cursor = cursor.max(seq);
                let id = String::from_utf8_lossy(&v).into_owned();
                ids.push(RecordId::parse(&id).map_err(|e| corrupt("revision", e))?);
            }
        }
        let mut out = Vec::new();
        for id in ids {
            if let Some(r) = f.tree.get(&id)? {
                out.push(r);
            }
        }
        Ok((out, cursor))
    }

    fn revision_cursor(&self, _facility: &FacilityCode) -> Result<u64, CentralError> {
        Ok(self.revision_seq.load(Ordering::SeqCst))
    }

    fn revisit_candidates(
        &self,
        birth_dates: &[NaiveDate],
        service_from: NaiveDate,
    ) -> Result<Vec<RevisitCandidate>, CentralError> {
        let wanted: std::collections::HashSet<NaiveDate> = birth_dates.iter().copied().collect();
        let mut out = Vec::new();
        for kv in self.revisit.scan_prefix(&[]) {
            let (k, v) = kv?;
            let (Some(b), Some(s)) = (v.get(0..4), v.get(4..8)) else {
                return Err(corrupt("revisit entry", "short value"));
            };
            let birth = day(i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            let service = day(i32::from_be_bytes([s[0], s[1], s[2], s[3]]));
            if !birth.is_some_and(|b| wanted.contains(&b))
                || service.is_none_or(|s| s < service_from)
            {
                continue;
            }
            let key = String::from_utf8_lossy(&k).into_owned();
            let Some((fac, id)) = key.split_once('/') else {
                return Err(corrupt("revisit entry", "no facility"));
            };
            out.push(RevisitCandidate {
                facility: FacilityCode::parse(fac).map_err(|e| corrupt("revisit entry", e))?,
                record: RecordId::parse(id).map_err(|e| corrupt("revisit entry", e))?,
            });
        }
        Ok(out)
    }

    fn record_outage_request(&self, request: &OutageRequest) -> Result<(), CentralError> {
        let bytes = serde_json::to_vec(request).map_err(|e| corrupt("outage request", e))?;
        self.requests.insert(
            &Self::time_key(request.at, request.facility.as_str()),
            &bytes,
        )?;
        self.sync()
    }

    fn outage_requests(&self) -> Result<Vec<OutageRequest>, CentralError> {
        Self::json_values(self.requests.as_ref(), "outage request")
    }

    fn grant(&self, grant: &Grant) -> Result<(), CentralError> {
        let bytes = serde_json::to_vec(grant).map_err(|e| corrupt("grant", e))?;
        self.grants
            .insert(&Self::time_key(grant.since, &grant.scope.key()), &bytes)?;
        self.sync()
    }

    fn end_grants(&self, scope: &GrantScope, at: DateTime<Utc>) -> Result<usize, CentralError> {
        let mut ended = 0;
        for kv in self.grants.scan_prefix(&[]) {
            let (k, v) = kv?;
            let mut g: Grant = serde_json::from_slice(&v).map_err(|e| corrupt("grant", e))?;
            if &g.scope == scope && g.active_at(at) {
                g.ended_at = Some(at);
                let bytes = serde_json::to_vec(&g).map_err(|e| corrupt("grant", e))?;
                self.grants.insert(&k, &bytes)?;
                ended += 1;
            }
        }
        if ended > 0 {
            self.sync()?;
        }
        Ok(ended)
    }

    fn grants(&self) -> Result<Vec<Grant>, CentralError> {
        Self::json_values(self.grants.as_ref(), "grant")
    }

    fn put_facility(&self, entry: &FacilityEntry) -> Result<(), CentralError> {
        let bytes = serde_json::to_vec(entry).map_err(|e| corrupt("facility", e))?;
        self.facilities
            .insert(entry.code.as_str().as_bytes(), &bytes)?;
        self.sync()?;
        self.facilities_version.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn revoke_facility(
        &self,
        code: &FacilityCode,
        at: DateTime<Utc>,
    ) -> Result<bool, CentralError> {
        let Some(v) = self.facilities.get(code.as_str().as_bytes())? else {
            return Ok(false);
        };
        let mut e: FacilityEntry =
            serde_json::from_slice(&v).map_err(|e| corrupt("facility", e))?;
        if e.revoked_at.is_some() {
            return Ok(false);
        }
        e.revoked_at = Some(at);
        self.put_facility(&e)?;
        Ok(true)
    }

    fn facilities(&self) -> Result<Vec<FacilityEntry>, CentralError> {
        Self::json_values(self.facilities.as_ref(), "facility")
    }

    fn facilities_version(&self) -> Result<u64, CentralError> {
        Ok(self.facilities_version.load(Ordering::SeqCst))
    }
}
