//! The embedded central store: sled in `DATA/registry` (the layout of the first wave, so an
//! existing data directory keeps working), one process. The registry's trees as
//! [`onshi_sync::registry::Registry`] keeps them, one `journal.<facility>` tree per facility, and
//! the centre's own trees:
//! - `central.registry_changes`: seq (u64, big-endian) → the period (JSON), the change feed;
//! - `central.revisions`: facility + seq → record id, the revision feed;
//! - `central.revisit`: facility + `/` + record id → birth date and service date;
//! - `central.outage_requests`, `central.grants`, `central.facilities`: JSON values;
//! - `central.search`: central search's index ([`super::SearchBlock`]). Its keys hold no name,
//!   reading or birth date in plain text: each is a keyed hash ([`Store::blind`]) of what a scan
//!   looks up by, then the person id. Per period: `d ‖ blind(key ‖ 0x1f ‖ birth day) ‖ person id`
//!   → sex code, for the empty key (by birth date alone) and each of [`super::search_keys`]; and
//!   for each of those keys `y ‖ blind(key ‖ 0x1f ‖ birth year) ‖ person id` → sex code ‖ birth
//!   day (the values sealed like every value). One prefix is one key's people born on a day, or in
//!   a year. Written before the period it indexes, flushed by the same fsync; an entry for a
//!   period since changed only adds a candidate the ranking then judges by the periods
//!   themselves. Built once from the periods at the first open of a store that has none
//!   (recorded under `0xff version`), so a plain store converted to an encrypted one (whose
//!   conversion leaves this tree behind) rebuilds it;
//! - `central.audit_links`: facility code ‖ seq (u64) → prev ‖ hash (64 bytes), each facility's
//!   access-log chain as its edge sent it; `central.audit_chains`: facility → its state (JSON
//!   [`crate::audit::CentreChain`]: links held, the break recorded).
//!
//! At rest (issue 18): the directory is opened through [`Vault::open`] with the key-encryption key
//! of `--data-key`, the credential `onshi-data-key`, or a key file beside the data directory;
//! every value is sealed, and a plain store of an earlier version is converted at its first open
//! with a key. Must never: keep a name, reading, birth date or card number in a key in plain text.
//!
//! Durability: every call that writes ends with the store's flush + fsync. Exclusion: sled locks
//! the directory to one process, so a second process (`import` while `serve` runs) goes through
//! the running one's admin socket (`crate::admin`); within the process, [`EmbeddedStore::update`]
//! holds a per-facility lock over read, decide and write.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, Utc};
use onshi_model::{CheckOutcome, CheckRequest, FacilityCode, PersonId, Qualification, Sex};
use onshi_sync::audit_chain::{AuditLink, AuditReport};
use onshi_sync::crdt::{Journal, JournalRecord, RecordId};
use onshi_sync::journal_store::{JournalTree, facility_tree_name};
use onshi_sync::registry::{Applied, Registry};
use onshi_sync::sealed::{ResealProgress, Vault, VaultOpenError};
use onshi_sync::store::{Store, StoreError, Tree};
use onshi_sync::vault::KeySource;

use super::{
    CentralError, CentralStore, Decide, FacilityEntry, Grant, GrantScope, ImportCounts,
    OutageRequest, Picked, RegistryChange, RevisitCandidate, SEARCH_KEYS_VERSION, SearchBlock,
    SearchCandidates, nearest, revisit_key, search_keys, sex_code,
};

/// Where the search index records the version of the keys it was built with.
const SEARCH_VERSION_KEY: &[u8] = b"\xffversion";
const SEP: u8 = 0x1f;
/// How many years either side of the query's birth year block 3 looks at most.
const NEAR_YEARS: i32 = 130;
/// The search index's two kinds of entry: by birth day, by birth year.
const DAY_ENTRY: u8 = b'd';
const YEAR_ENTRY: u8 = b'y';
/// What the search index's key parts are blinded under ([`Store::blind`]).
const SEARCH_DAY_DOMAIN: &str = "central.search.day";
const SEARCH_YEAR_DOMAIN: &str = "central.search.year";
/// The trees an encrypted store's conversion leaves behind: rebuilt from the periods.
const REBUILT_TREES: &[&str] = &["central.search"];

fn days_from_ce(day: NaiveDate) -> u32 {
    day.num_days_from_ce().max(0) as u32
}

/// `y ‖ blind(key ‖ SEP ‖ year)`: every entry of `key` born in `year`.
fn search_year_prefix(store: &dyn Store, key: &str, year: i32) -> Vec<u8> {
    let mut part = Vec::with_capacity(key.len() + 3);
    part.extend_from_slice(key.as_bytes());
    part.push(SEP);
    part.extend_from_slice(&(year.clamp(0, i32::from(u16::MAX)) as u16).to_be_bytes());
    let mut k = vec![YEAR_ENTRY];
    k.extend(store.blind(SEARCH_YEAR_DOMAIN, &part));
    k
}

/// `d ‖ blind(key ‖ SEP ‖ day)`: every entry of `key` born on `day`.
fn search_day_prefix(store: &dyn Store, key: &str, day: NaiveDate) -> Vec<u8> {
    let mut part = Vec::with_capacity(key.len() + 5);
    part.extend_from_slice(key.as_bytes());
    part.push(SEP);
    part.extend_from_slice(&days_from_ce(day).to_be_bytes());
    let mut k = vec![DAY_ENTRY];
    k.extend(store.blind(SEARCH_DAY_DOMAIN, &part));
    k
}

/// Whether another process holds the store in `dir` (sled's lock on its `db` file, an flock):
/// asked before the key is, so an operator's command reaches a running `serve` through its admin
/// socket without the data key. Changes nothing on disk.
fn held_elsewhere(dir: &Path) -> bool {
    match std::fs::File::open(dir.join("db")) {
        Ok(f) => matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

/// sled's own lock error (another process took the directory since [`held_elsewhere`] looked).
fn is_lock_error(e: &StoreError) -> bool {
    matches!(e, StoreError::Engine(sled::Error::Io(e))
        if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock"))
}

/// What `check-config` says of the data directory's key, checked against the keyring without
/// opening (or changing) anything: a wrong key, or none for an encrypted directory, is the same
/// error [`EmbeddedStore::open_with_key`] would give.
pub fn check_key(data: &Path, source: &KeySource) -> Result<String, CentralError> {
    onshi_sync::sealed::check_key(&data.join("registry"), source)
        .map_err(|e| CentralError::Vault(VaultOpenError::Key(e)))
}

/// The embedded store (see the module docs).
#[derive(Debug)]
pub struct EmbeddedStore {
    store: Arc<dyn Store>,
    vault: Vault,
    registry: Registry,
    changes: Arc<dyn Tree>,
    revisions: Arc<dyn Tree>,
    revisit: Arc<dyn Tree>,
    requests: Arc<dyn Tree>,
    grants: Arc<dyn Tree>,
    facilities: Arc<dyn Tree>,
    search: Arc<dyn Tree>,
    journals: Mutex<HashMap<FacilityCode, Facility>>,
    change_seq: AtomicU64,
    revision_seq: AtomicU64,
    facilities_version: AtomicU64,
    /// Serialises imports (the change feed's order is the order of the writes).
    importing: Mutex<()>,
    audit_links: Arc<dyn Tree>,
    audit_chains: Arc<dyn Tree>,
    /// Serialises the access-log chains' read, decide and write (one process: one lock will do).
    auditing: Mutex<()>,
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
    /// Opens (or creates) the store in `DATA/registry` with the key [`KeySource::choose`] finds
    /// for `data` without a `--data-key` (the tools' and tests' way).
    pub fn open(data: &Path) -> Result<Self, CentralError> {
        Self::open_with_key(data, KeySource::choose(None, data))
    }

    /// Opens (or creates, or converts from plain) the store in `DATA/registry` with the
    /// key-encryption key from `source`. [`CentralError::Busy`] when a running `serve` holds it
    /// (asked first: no key is needed to be told); a wrong or missing key is
    /// [`CentralError::Vault`], with nothing on disk changed.
    pub fn open_with_key(data: &Path, source: KeySource) -> Result<Self, CentralError> {
        let dir = data.join("registry");
        if held_elsewhere(&dir) {
            return Err(CentralError::Busy);
        }
        if let Some(w) = source.warning() {
            tracing::warn!("{w}");
        }
        let (vault, report) = match Vault::open(&dir, source, REBUILT_TREES) {
            Ok(v) => v,
            Err(VaultOpenError::Store(e) | VaultOpenError::Convert { source: e, .. })
                if is_lock_error(&e) =>
            {
                return Err(CentralError::Busy);
            }
            Err(e) => return Err(e.into()),
        };
        if report.key_created {
            tracing::info!(key = %vault.source().path().display(), "a new data key was made");
        }
        if let Some(n) = report.converted {
            tracing::warn!(
                entries = n,
                store = %dir.display(),
                "the plain-text store of an earlier version was converted to an encrypted one"
            );
        }
        let store: Arc<dyn Store> = Arc::new(vault.store().clone());
        let registry = Registry::open(store.clone())?;
        let s = EmbeddedStore {
            registry,
            changes: store.tree("central.registry_changes")?,
            revisions: store.tree("central.revisions")?,
            revisit: store.tree("central.revisit")?,
            requests: store.tree("central.outage_requests")?,
            grants: store.tree("central.grants")?,
            facilities: store.tree("central.facilities")?,
            search: store.tree("central.search")?,
            journals: Mutex::default(),
            change_seq: AtomicU64::new(0),
            revision_seq: AtomicU64::new(0),
            facilities_version: AtomicU64::new(1),
            importing: Mutex::new(()),
            audit_links: store.tree("central.audit_links")?,
            audit_chains: store.tree("central.audit_chains")?,
            auditing: Mutex::new(()),
            store,
            vault,
        };
        s.change_seq
            .store(last_seq(s.changes.as_ref(), 0)?, Ordering::SeqCst);
        s.revision_seq
            .store(last_seq(s.revisions.as_ref(), 10)?, Ordering::SeqCst);
        s.build_search_index()?;
        if report.resealing {
            // A `key rotate --data` was interrupted: finish it before anything is served.
            tracing::warn!(
                data_key = s.vault.key_state().current,
                "an interrupted data key rotation is finished first"
            );
            let n = s.vault.reseal(&ResealProgress::default())?;
            tracing::info!(
                resealed = n,
                "data key rotation finished: the previous data key is forgotten"
            );
        }
        Ok(s)
    }

    /// Builds central search's index from the periods, once (a store of the first wave, or one
    /// whose keys' rules changed: [`SEARCH_KEYS_VERSION`]); recorded, so later opens skip it.
    /// Streams the periods: memory stays bounded whatever the registry's size.
    fn build_search_index(&self) -> Result<(), CentralError> {
        let recorded = self
            .search
            .get(SEARCH_VERSION_KEY)?
            .and_then(|v| Some(i32::from_be_bytes(v.as_slice().try_into().ok()?)));
        if recorded == Some(SEARCH_KEYS_VERSION) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        if recorded.is_some() {
            // Keys of other rules: start over (nothing else lives in this tree).
            for kv in self.search.scan_prefix(&[]) {
                let (k, _) = kv?;
                self.search.remove(&k)?;
            }
        }
        let mut periods = 0u64;
        for q in self.registry.all_periods() {
            self.index_search(&q?)?;
            periods += 1;
        }
        self.search
            .put(SEARCH_VERSION_KEY, &SEARCH_KEYS_VERSION.to_be_bytes())?;
        self.sync()?;
        tracing::info!(
            periods,
            ms = started.elapsed().as_millis() as u64,
            "central search index built in the store (once)"
        );
        Ok(())
    }

    /// Files one period in the search index (entries already there are not written again).
    fn index_search(&self, q: &Qualification) -> Result<(), CentralError> {
        let store = self.store.as_ref();
        let sex = sex_code(q.sex) as u8;
        let mut by_year = vec![sex];
        by_year.extend_from_slice(&days_from_ce(q.birth_date).to_be_bytes());
        let person = q.person_id.as_str().as_bytes();
        let put = |mut k: Vec<u8>, v: &[u8]| -> Result<(), CentralError> {
            k.extend_from_slice(person);
            if self.search.get(&k)?.as_deref() != Some(v) {
                self.search.put(&k, v)?;
            }
            Ok(())
        };
        // By birth date alone: day entries of the empty key.
        put(search_day_prefix(store, "", q.birth_date), &[sex])?;
        for key in search_keys(&q.name, &q.name_kana) {
            put(search_day_prefix(store, &key, q.birth_date), &[sex])?;
            put(
                search_year_prefix(store, &key, q.birth_date.year()),
                &by_year,
            )?;
        }
        Ok(())
    }

    /// The people under `prefix` (a day's or a year's entries of a key) whose sex fits, with the
    /// birth day a year entry holds, until `f` says stop.
    fn search_scan(
        &self,
        prefix: &[u8],
        block: &SearchBlock,
        f: &mut dyn FnMut(Option<NaiveDate>, String) -> bool,
    ) -> Result<(), CentralError> {
        for kv in self.search.scan_prefix(prefix) {
            let (k, v) = kv?;
            let sex = v.first().copied().unwrap_or(3);
            let filed = match sex {
                1 => Sex::Male,
                2 => Sex::Female,
                _ => Sex::Unset,
            };
            if !super::sex_compatible(block.sex, filed) {
                continue;
            }
            let day = v
                .get(1..5)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
                .and_then(|d| i32::try_from(d).ok())
                .and_then(NaiveDate::from_num_days_from_ce_opt);
            let person = k
                .get(prefix.len()..)
                .and_then(|p| std::str::from_utf8(p).ok())
                .filter(|p| !p.is_empty())
                .ok_or_else(|| corrupt("search entry", "no person id"))?;
            if !f(day, person.to_string()) {
                break;
            }
        }
        Ok(())
    }

    /// The encrypted store's vault: its directory, key source and key state (tools and tests).
    pub fn vault(&self) -> &Vault {
        &self.vault
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
                self.revisit.put(&key, &v)?;
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

fn audit_key(facility: &FacilityCode, seq: u64) -> Vec<u8> {
    let mut k = facility.as_str().as_bytes().to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn audit_link(
    facility: &FacilityCode,
    key: &[u8],
    value: &[u8],
) -> Result<AuditLink, CentralError> {
    let n = facility.as_str().len();
    let seq = key
        .get(n..n + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt("audit link", "short key"))?;
    let (Some(prev), Some(hash)) = (value.get(0..32), value.get(32..64)) else {
        return Err(corrupt("audit link", "short value"));
    };
    let mut link = AuditLink {
        seq,
        prev: [0; 32],
        hash: [0; 32],
    };
    link.prev.copy_from_slice(prev);
    link.hash.copy_from_slice(hash);
    Ok(link)
}

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
            // The index first: a crash between the two leaves an entry without its period (no
            // candidate), never a period central search cannot find.
            self.index_search(q)?;
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
            self.changes.put(&seq.to_be_bytes(), &bytes)?;
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

    fn sealed_vault(&self) -> Option<&Vault> {
        Some(&self.vault)
    }

    fn search_candidates(&self, block: &SearchBlock) -> Result<SearchCandidates, CentralError> {
        let Some(&birth) = block.birth_dates.first() else {
            return Ok(SearchCandidates::default());
        };
        let mut picked = Picked::for_block(block);
        let store = self.store.as_ref();
        // 1. Born on the query's date.
        if block.blocks.dated() {
            self.search_scan(&search_day_prefix(store, "", birth), block, &mut |_, p| {
                picked.take(&p)
            })?;
        }
        // 2. Born on a likely misreading, with one of the keys.
        let slips = if block.blocks.dated() {
            &block.birth_dates[1..]
        } else {
            &[]
        };
        'slips: for &d in slips {
            for key in block.keys.iter().chain(&block.split_keys) {
                if picked.full() {
                    break 'slips;
                }
                self.search_scan(&search_day_prefix(store, key, d), block, &mut |_, p| {
                    picked.take(&p)
                })?;
            }
        }
        // 3. One of the keys, born nearest the query's date: year by year outwards until the
        // nearest `near_per_key` are known.
        let n = block.near_per_key;
        for key in &block.keys {
            if !block.blocks.far() || picked.full() || n == 0 {
                break;
            }
            let mut near: Vec<(i64, String)> = Vec::new();
            let mut short = false;
            for r in 0..=NEAR_YEARS {
                let years = if r == 0 {
                    vec![birth.year()]
                } else {
                    vec![birth.year() - r, birth.year() + r]
                };
                for y in years {
                    let prefix = search_year_prefix(store, key, y);
                    self.search_scan(&prefix, block, &mut |day, p| {
                        match day {
                            Some(day) => near.push(((day - birth).num_days().abs(), p)),
                            None => short = true,
                        }
                        true
                    })?;
                    if short {
                        return Err(corrupt("search entry", "a year entry without its day"));
                    }
                }
                // Anything not yet read is born before year − r or after year + r.
                let unread = NaiveDate::from_ymd_opt(birth.year() - r, 1, 1)
                    .map_or(i64::MAX, |d| (birth - d).num_days() + 1)
                    .min(
                        NaiveDate::from_ymd_opt(birth.year() + r + 1, 1, 1)
                            .map_or(i64::MAX, |d| (d - birth).num_days()),
                    );
                if near.len() >= n {
                    let mut ds: Vec<i64> = near.iter().map(|e| e.0).collect();
                    ds.select_nth_unstable(n - 1);
                    if ds[n - 1] <= unread {
                        break;
                    }
                }
            }
            for p in nearest(near, n) {
                if !picked.take(&p) {
                    break;
                }
            }
        }
        let mut out = SearchCandidates {
            people: picked.ids.len(),
            capped: picked.capped,
            periods: Vec::new(),
        };
        for id in &picked.ids {
            let person = PersonId::parse(id).map_err(|e| corrupt("search entry", e))?;
            out.periods
                .extend(self.registry.periods_of_person(&person)?);
        }
        Ok(out)
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
                self.revisions.put(&key, id.to_string().as_bytes())?;
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
            .put(&Self::time_key(grant.since, &grant.scope.key()), &bytes)?;
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
                self.grants.put(&k, &bytes)?;
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
            .put(entry.code.as_str().as_bytes(), &bytes)?;
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

    fn audit_receive(
        &self,
        facility: &FacilityCode,
        report: &AuditReport,
        now: DateTime<Utc>,
    ) -> Result<crate::audit::Receipt, CentralError> {
        let _g = lock(&self.auditing);
        let chain = self.audit_chain(facility)?;
        let mut held = BTreeMap::new();
        for seq in crate::audit::needed(&chain, report) {
            let key = audit_key(facility, seq);
            if let Some(v) = self.audit_links.get(&key)? {
                held.insert(seq, audit_link(facility, &key, &v)?);
            }
        }
        let receipt = crate::audit::receive(&chain, &held, report, now)?;
        if receipt.chain != chain {
            for l in &receipt.append {
                let mut v = Vec::with_capacity(64);
                v.extend_from_slice(&l.prev);
                v.extend_from_slice(&l.hash);
                self.audit_links.put(&audit_key(facility, l.seq), &v)?;
            }
            let bytes =
                serde_json::to_vec(&receipt.chain).map_err(|e| corrupt("audit chain", e))?;
            self.audit_chains
                .put(facility.as_str().as_bytes(), &bytes)?;
            self.sync()?;
        }
        Ok(receipt)
    }

    fn audit_links(
        &self,
        facility: &FacilityCode,
        from: u64,
        limit: usize,
    ) -> Result<Vec<AuditLink>, CentralError> {
        // Keys are dense from 0 (only ever appended in order): a range is a run of lookups.
        let next = self.audit_chain(facility)?.next;
        let mut out = Vec::new();
        let mut seq = from;
        while seq < next && out.len() < limit {
            let key = audit_key(facility, seq);
            if let Some(v) = self.audit_links.get(&key)? {
                out.push(audit_link(facility, &key, &v)?);
            }
            seq += 1;
        }
        Ok(out)
    }

    fn audit_chain(
        &self,
        facility: &FacilityCode,
    ) -> Result<crate::audit::CentreChain, CentralError> {
        match self.audit_chains.get(facility.as_str().as_bytes())? {
            None => Ok(crate::audit::CentreChain::default()),
            Some(v) => serde_json::from_slice(&v).map_err(|e| corrupt("audit chain", e)),
        }
    }
}
