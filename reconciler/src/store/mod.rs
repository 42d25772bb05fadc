//! The centre's storage at the level of the domain: the registry (lookups, import, a feed of
//! what changed), every facility's journal (merge, settle under a lock, revisions to announce),
//! outage requests and the centre's grants, and the facilities with their certificates. Two
//! implementations: [`embedded::EmbeddedStore`] (sled in `--data DIR`, one process: the default,
//! the demo and most tests) and [`pg::PgStore`] (`--store postgres://…`: several `serve` processes
//! on one database). One conformance suite (`tests/tests/store_conformance.rs`) runs against both.
//!
//! The rules every implementation keeps:
//! - a write is durable when the call returns (a committed transaction; sled flushed and fsynced),
//!   so the caller may acknowledge it;
//! - every transaction touches one facility's data only (the journal calls), so the PostgreSQL
//!   schema can be sharded by facility (ARCHITECTURE.md);
//! - [`CentralStore::update`] reads, decides and writes one record at a time under a lock that
//!   every process sharing the store respects (a row lock in PostgreSQL): a provisional record is
//!   settled once, whichever instance gets there first;
//! - nothing is deleted: an ended grant or a revoked facility stays on record with its time;
//! - a facility's access-log chain ([`crate::audit`]) is read, decided ([`crate::audit::receive`])
//!   and extended under one lock per facility every sharer respects (a row lock in PostgreSQL):
//!   links are only ever appended, and a break once recorded is only ever narrowed.
//!
//! Calls block (the embedded store touches the disk, PostgreSQL the network): call them from
//! blocking threads (`spawn_blocking`), never on an async worker.

pub mod embedded;
pub mod pg;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use onshi_model::record::SettlementKind;
use onshi_model::{CheckOutcome, CheckRequest, FacilityCode, PersonId, Qualification, Sex};
use onshi_sync::audit_chain::{AuditLink, AuditReport};
use onshi_sync::crdt::{Journal, JournalRecord, RecordId};
use onshi_sync::registry::RegistryError;
use onshi_sync::store::StoreError;
use onshi_sync::vault::KeySource;
use serde::{Deserialize, Serialize};

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum CentralError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Registry(#[from] RegistryError),
    /// The database refused or could not be reached.
    #[error("database: {0}")]
    Database(String),
    /// The database's schema is not the one this binary knows.
    #[error("{0}")]
    Schema(String),
    /// A stored value does not decode.
    #[error("stored {what} does not decode: {reason}")]
    Corrupt { what: String, reason: String },
    /// The embedded store is held by a running `serve` (sled allows one process).
    #[error("the data directory is in use by a running onshi-reconciler serve")]
    Busy,
    /// The embedded store's data key: missing, wrong (nothing was changed), or a plain store
    /// from an earlier version that could not be converted.
    #[error("{0}")]
    Vault(#[from] onshi_sync::sealed::VaultOpenError),
    /// A key command on a store without onshi's data keys (PostgreSQL).
    #[error(
        "this store has no data key of onshi's: PostgreSQL's data at rest is protected by the \
         server (disk encryption under the cluster, roles, TLS: packaging/README.md)"
    )]
    NoDataKey,
    /// An edge's access-log report is malformed (nothing of it was taken).
    #[error("access log report: {0}")]
    BadReport(#[from] onshi_sync::audit_chain::ReportError),
}

/// Where the centre's data is: `--data DIR` (embedded) or `--store postgres://…`.
#[derive(Clone)]
pub enum StoreTarget {
    /// The directory, and `--data-key FILE` if given (else the systemd credential
    /// `onshi-data-key`, else a key file beside the directory: [`KeySource::choose`]).
    Embedded {
        dir: PathBuf,
        data_key: Option<PathBuf>,
    },
    /// The URL (without a password) and the password from a file or a systemd credential.
    Postgres {
        url: String,
        password: Option<String>,
        /// `--store-ca FILE`: the connection is TLS, the server's certificate checked against
        /// these CAs and the URL's host name.
        ca: Option<PathBuf>,
    },
}

impl fmt::Debug for StoreTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        match self {
            StoreTarget::Embedded { dir, data_key } => f
                .debug_struct("Embedded")
                .field("dir", dir)
                .field("data_key", data_key)
                .finish(),
            StoreTarget::Postgres { url, password, ca } => f
                .debug_struct("Postgres")
                .field("url", &redacted(url))
                .field("password", &password.as_ref().map(|_| "…"))
                .field("ca", ca)
                .finish(),
        }
    }
}

impl fmt::Display for StoreTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreTarget::Embedded { dir, .. } => write!(f, "{}", dir.display()),
            StoreTarget::Postgres { url, .. } => write!(f, "{}", redacted(url)),
        }
    }
}

/// A URL with its password (if any) replaced by `***`, to print.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{}", &rest[end..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Opens the store: the embedded one in `DIR`, or PostgreSQL (connected, its schema checked).
pub fn open(target: &StoreTarget) -> Result<Arc<dyn CentralStore>, CentralError> {
    match target {
        StoreTarget::Embedded { dir, data_key } => {
            Ok(Arc::new(embedded::EmbeddedStore::open_with_key(
                dir,
                KeySource::choose(data_key.as_deref(), dir),
            )?))
        }
        StoreTarget::Postgres { url, password, ca } => {
            let config = pg::config_from_url(url, password.as_deref())
                .map_err(|e| CentralError::Database(format!("--store {url}: {e}")))?;
            Ok(Arc::new(pg::PgStore::connect(pg::PgConnect::new(
                config,
                ca.as_deref(),
            )?)?))
        }
    }
}

/// What an import chunk did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportCounts {
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
}

impl ImportCounts {
    pub fn add(&mut self, other: ImportCounts) {
        self.added += other.added;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
    }
}

/// One changed qualification period in the registry's change feed, in the order of `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryChange {
    pub seq: u64,
    pub qualification: Qualification,
}

/// Whom a grant of central search covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "code", rename_all = "snake_case")]
pub enum GrantScope {
    /// One facility.
    Facility(FacilityCode),
    /// Every facility of a prefecture (01–47: the first two digits of a facility code).
    Prefecture(String),
}

impl GrantScope {
    /// Whether the grant covers `facility`.
    pub fn covers(&self, facility: &FacilityCode) -> bool {
        match self {
            GrantScope::Facility(f) => f == facility,
            GrantScope::Prefecture(p) => facility.as_str().starts_with(p.as_str()),
        }
    }

    /// The key a store files it under (`facility:CODE`, `prefecture:NN`).
    pub fn key(&self) -> String {
        match self {
            GrantScope::Facility(f) => format!("facility:{f}"),
            GrantScope::Prefecture(p) => format!("prefecture:{p}"),
        }
    }
}

impl fmt::Display for GrantScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantScope::Facility(c) => write!(f, "facility {c}"),
            GrantScope::Prefecture(p) => write!(f, "prefecture {p}"),
        }
    }
}

/// The centre's grant of central search (disaster mode) to a facility or a prefecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub scope: GrantScope,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// When an operator ended it early (kept on record, never deleted).
    pub ended_at: Option<DateTime<Utc>>,
}

impl Grant {
    pub fn active_at(&self, now: DateTime<Utc>) -> bool {
        self.since <= now && now < self.until && self.ended_at.is_none_or(|e| e > now)
    }
}

/// A facility's own outage declaration (`POST /v1/outage` at its edge): a request the centre
/// sees, not a grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutageRequest {
    pub facility: FacilityCode,
    pub at: DateTime<Utc>,
    /// True: the facility says it is in an outage; false: it says the outage is over.
    pub active: bool,
    pub reason: String,
}

/// A facility the centre knows, by the certificate it was last issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FacilityEntry {
    pub code: FacilityCode,
    /// SHA-256 of the certificate's DER, lower-case hex: the only certificate accepted for it.
    pub fingerprint: String,
    pub added_at: DateTime<Utc>,
    /// Set by `facility revoke`: the certificate is refused from then on.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl FacilityEntry {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// A settled provisional record that may settle differently when the registry changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RevisitCandidate {
    pub facility: FacilityCode,
    pub record: RecordId,
}

/// What the revisit index keeps of a record: the declared birth date (the registry's changes are
/// matched on it) and the service date (the horizon is counted from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevisitKey {
    pub birth_date: NaiveDate,
    pub service_date: NaiveDate,
}

/// The settlements worth revisiting when the registry changes: nobody found, or several.
pub fn revisit_key(record: &JournalRecord) -> Option<RevisitKey> {
    let settlement = record.settlement()?;
    if record.quarantine().is_some()
        || !matches!(
            settlement.kind,
            SettlementKind::InsurerUnknown | SettlementKind::Ambiguous
        )
    {
        return None;
    }
    let p = record.provisional()?;
    Some(RevisitKey {
        birth_date: p.declared.birth_date,
        service_date: p.service_date,
    })
}

/// The version of the rules [`search_keys`] files periods under: `onshi_fallback`'s
/// [`onshi_fallback::keys::KEYS_VERSION`], plus one since the embedded index's keys are blinded
/// (issue 18). When it changes the embedded store rebuilds its search index at the next open,
/// `onshi-reconciler migrate` rebuilds PostgreSQL's (and `serve` refuses a database filed by
/// other rules until then).
pub const SEARCH_KEYS_VERSION: i32 = onshi_fallback::keys::KEYS_VERSION + 1;

/// The name keys central search finds a period by besides its birth date:
/// [`onshi_fallback::keys::blocking_keys`] of the name and the kana reading (each part alone, the
/// whole, kana by its loose key), every one of them. A query's keys are made by the same function
/// ([`query_keys`]), so a surname alone, a given name alone in any script or kana variant, romaji,
/// or a whole name meet one.
pub fn search_keys(name: &str, kana: &str) -> Vec<String> {
    let k = onshi_fallback::keys::blocking_keys(name, kana);
    let mut all: Vec<String> = k.keys.into_iter().chain(k.splits).collect();
    all.sort();
    all.dedup();
    all
}

/// The keys of a query's name and reading: the parts' and the whole's (`keys`), and the splits of
/// a one-word name (`splits`: `鈴木太郎` may be a changed surname and a given name run together).
pub fn query_keys(name: Option<&str>, kana: Option<&str>) -> onshi_fallback::keys::BlockingKeys {
    onshi_fallback::keys::blocking_keys(name.unwrap_or(""), kana.unwrap_or(""))
}

/// A sex as the search index files it: 1 male, 2 female, 3 unset (the registry's codes).
pub fn sex_code(sex: Sex) -> i16 {
    match sex {
        Sex::Male => 1,
        Sex::Female => 2,
        Sex::Unset => 3,
    }
}

/// Whether a period of sex `filed` can be the person a query of sex `asked` is after: unset on
/// either side matches both.
pub fn sex_compatible(asked: Sex, filed: Sex) -> bool {
    asked == Sex::Unset || filed == Sex::Unset || asked == filed
}

/// Which people central search considers for a query ([`CentralStore::search_candidates`]).
/// A person is a candidate when one of their periods
/// 1. is born on `birth_dates[0]` (the query's date) with a compatible sex ([`sex_compatible`]);
/// 2. is born on another of `birth_dates` (the likely misreadings), with a compatible sex and
///    one of `keys` or of `split_keys`;
/// 3. has one of `keys` and a compatible sex, whatever the birth date: for each key the
///    `near_per_key` such entries born nearest `birth_dates[0]` (a common surname with a badly
///    wrong date is left to the other blocks; a rare full name is found whatever the date).
///
/// At most `cap` people, taken from block 1, then 2, then 3; `blocks` says which are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchBlock {
    pub blocks: Blocks,
    pub birth_dates: Vec<NaiveDate>,
    pub sex: Sex,
    pub keys: Vec<String>,
    /// Keys for block 2 only (a one-word name's prefixes and suffixes: too many, and too short,
    /// to look up whatever the birth date).
    pub split_keys: Vec<String>,
    pub near_per_key: usize,
    pub cap: usize,
}

/// Which of a [`SearchBlock`]'s blocks a read takes: central search reads the dated ones first
/// and the far ones only when those leave the answer open (`onshi_fallback::settled_without_far`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocks {
    /// 1, 2 and 3.
    All,
    /// 1 and 2: born on the query's date or a likely misreading of it.
    Dated,
    /// 3 only: a name key, born nearest the query's date. The people in `known` (read by the
    /// dated stage) are passed over as already taken: not read again, not counted against the
    /// cap, as one read of all three blocks would take them.
    Far { known: Vec<String> },
}

impl Blocks {
    pub fn dated(&self) -> bool {
        matches!(self, Blocks::All | Blocks::Dated)
    }

    pub fn far(&self) -> bool {
        matches!(self, Blocks::All | Blocks::Far { .. })
    }

    /// The ids to start a [`Picked`] with: taken already, outside the cap.
    pub(crate) fn known(&self) -> &[String] {
        match self {
            Blocks::Far { known } => known,
            _ => &[],
        }
    }
}

/// What [`CentralStore::search_candidates`] found: every period of each candidate person.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchCandidates {
    pub periods: Vec<Qualification>,
    /// Candidate people (at most the block's `cap`).
    pub people: usize,
    /// Some people the blocks matched were left out at the cap.
    pub capped: bool,
}

/// Ids taken in block order up to a cap: the stores' shared bookkeeping for [`SearchBlock`].
#[derive(Debug, Default)]
pub(crate) struct Picked {
    pub(crate) ids: Vec<String>,
    seen: std::collections::HashSet<String>,
    cap: usize,
    pub(crate) capped: bool,
}

impl Picked {
    pub(crate) fn new(cap: usize) -> Self {
        Picked {
            cap,
            ..Picked::default()
        }
    }

    /// For `block`: its cap, and the people its stage knows already ([`Blocks::Far`]) taken
    /// outside the cap and never listed (their periods are not read again).
    pub(crate) fn for_block(block: &SearchBlock) -> Self {
        let mut p = Picked::new(block.cap);
        p.seen.extend(block.blocks.known().iter().cloned());
        p
    }

    /// Takes `id` unless already taken; false once the cap is reached (then `capped`).
    pub(crate) fn take(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return true;
        }
        if self.ids.len() >= self.cap {
            self.capped = true;
            return false;
        }
        self.seen.insert(id.to_string());
        self.ids.push(id.to_string());
        true
    }

    pub(crate) fn full(&self) -> bool {
        self.capped || self.ids.len() >= self.cap
    }
}

/// Of entries `(distance in days, person)` for one key, the `n` nearest (ties by person).
pub(crate) fn nearest(mut v: Vec<(i64, String)>, n: usize) -> Vec<String> {
    // Each person once, at their nearest entry; then nearest first.
    v.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    v.dedup_by(|a, b| a.1 == b.1);
    v.sort();
    v.into_iter().take(n).map(|(_, p)| p).collect()
}

/// A check's answer to come ([`CentralStore::check_future`]).
pub type CheckFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<CheckOutcome, CentralError>> + Send>>;

/// A decision made under [`CentralStore::update`]'s lock: the record as it should now stand, or
/// `None` to leave it.
pub type Decide<'a> = dyn FnMut(&JournalRecord) -> Option<JournalRecord> + 'a;

/// The centre's storage (see the module docs for the rules).
pub trait CentralStore: Send + Sync + fmt::Debug {
    /// `embedded` or `postgresql`, for logs and `check-config`.
    fn kind(&self) -> &'static str;

    // The registry.

    /// An online check against the registry (the pure decision of `onshi_sync::registry`).
    fn check(&self, req: &CheckRequest) -> Result<CheckOutcome, CentralError>;
    /// The same check as a future the link's task can await, for a store that waits on the
    /// network (no blocking-pool thread parked per check in flight); `None`: use
    /// [`CentralStore::check`]. Must answer exactly as `check` does.
    fn check_future(&self, _req: CheckRequest) -> Option<CheckFuture> {
        None
    }
    /// Every period of a person (any order; empty when unknown).
    fn periods_of_person(&self, person: &PersonId) -> Result<Vec<Qualification>, CentralError>;
    /// Periods held.
    fn period_count(&self) -> Result<u64, CentralError>;
    /// Applies one chunk of an import (a period keyed by person and acquisition date replaces the
    /// one stored); every period added or changed goes on the change feed. Durable on return.
    fn import(&self, periods: &[Qualification]) -> Result<ImportCounts, CentralError>;
    /// The change feed after `after`, at most `limit`, in order.
    fn registry_changes(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<RegistryChange>, CentralError>;
    /// The feed's last `seq` (0 when empty): the revisit follower of an instance starts here.
    fn registry_cursor(&self) -> Result<u64, CentralError>;
    /// The embedded store's vault (its data keys, for `key status|rotate`); `None`: the store
    /// keeps no keys of onshi's (PostgreSQL's data at rest is the server's).
    fn sealed_vault(&self) -> Option<&onshi_sync::sealed::Vault> {
        None
    }
    /// Central search's candidates ([`SearchBlock`]), read through the store's search index,
    /// which `import` writes in the same transaction (PostgreSQL) or before the same fsync
    /// (embedded) as the periods: a line imported is found at once, by every instance. Bounded:
    /// never more than `block.cap` people, whatever the registry's size.
    fn search_candidates(&self, block: &SearchBlock) -> Result<SearchCandidates, CentralError>;
    /// Every period, in no particular order (tools and tests; never on a serving path).
    fn for_each_period(
        &self,
        f: &mut dyn FnMut(Qualification) -> Result<(), CentralError>,
    ) -> Result<(), CentralError>;

    // Journals, one per facility.

    /// A facility's whole journal.
    fn journal(&self, facility: &FacilityCode) -> Result<Journal, CentralError>;
    /// One record.
    fn record(
        &self,
        facility: &FacilityCode,
        id: &RecordId,
    ) -> Result<Option<JournalRecord>, CentralError>;
    /// Joins each record into the stored one (CRDT merge) in one transaction; returns them as they
    /// now stand, in the same order. Durable on return.
    fn merge(
        &self,
        facility: &FacilityCode,
        records: Vec<JournalRecord>,
    ) -> Result<Vec<JournalRecord>, CentralError>;
    /// For each id: reads the record under a lock every sharer of the store respects, asks
    /// `decide`, and writes (merges) what it returns. Returns the records written, durable on
    /// return. With `announce`, each written record goes on the facility's revision feed
    /// ([`CentralStore::revisions`]) so a live session elsewhere sends it to the edge.
    fn update(
        &self,
        facility: &FacilityCode,
        ids: &[RecordId],
        announce: bool,
        decide: &mut Decide<'_>,
    ) -> Result<Vec<JournalRecord>, CentralError>;
    /// Records announced by [`CentralStore::update`] after `after`, and the new cursor.
    fn revisions(
        &self,
        facility: &FacilityCode,
        after: u64,
    ) -> Result<(Vec<JournalRecord>, u64), CentralError>;
    /// The facility's revision feed cursor now (a new session starts from here: its journal
    /// already holds everything before).
    fn revision_cursor(&self, facility: &FacilityCode) -> Result<u64, CentralError>;
    /// Settled records ([`revisit_key`]) declared born on one of `birth_dates`, with a service
    /// date on or after `service_from`.
    fn revisit_candidates(
        &self,
        birth_dates: &[NaiveDate],
        service_from: NaiveDate,
    ) -> Result<Vec<RevisitCandidate>, CentralError>;

    // Outages.

    fn record_outage_request(&self, request: &OutageRequest) -> Result<(), CentralError>;
    /// Every request, oldest first.
    fn outage_requests(&self) -> Result<Vec<OutageRequest>, CentralError>;
    /// Adds a grant (an earlier one for the same scope stays on record).
    fn grant(&self, grant: &Grant) -> Result<(), CentralError>;
    /// Ends every active grant of `scope` at `at`; how many.
    fn end_grants(&self, scope: &GrantScope, at: DateTime<Utc>) -> Result<usize, CentralError>;
    /// Every grant, oldest first.
    fn grants(&self) -> Result<Vec<Grant>, CentralError>;

    // Facilities.

    /// Adds the facility or replaces its certificate (the old one is refused from then on).
    fn put_facility(&self, entry: &FacilityEntry) -> Result<(), CentralError>;
    /// Revokes the facility's certificate; false if it is unknown or already revoked.
    fn revoke_facility(&self, code: &FacilityCode, at: DateTime<Utc>)
    -> Result<bool, CentralError>;
    /// Every facility, by code.
    fn facilities(&self) -> Result<Vec<FacilityEntry>, CentralError>;
    /// Bumped by every change of the facilities: instances re-read them when it moves.
    fn facilities_version(&self) -> Result<u64, CentralError>;

    // The access logs' chains (issue 18), one per facility.

    /// Takes an edge's report on its access log's chain: under the facility's lock, reads the
    /// chain's state and the links [`crate::audit::needed`] names, decides with
    /// [`crate::audit::receive`], appends and records what it says. Durable on return. A
    /// malformed report is [`CentralError::BadReport`], and changes nothing.
    fn audit_receive(
        &self,
        facility: &FacilityCode,
        report: &AuditReport,
        now: DateTime<Utc>,
    ) -> Result<crate::audit::Receipt, CentralError>;
    /// Links held from `from`, ascending, at most `limit`.
    fn audit_links(
        &self,
        facility: &FacilityCode,
        from: u64,
        limit: usize,
    ) -> Result<Vec<AuditLink>, CentralError>;
    /// What is held of the facility's chain (nothing yet: the default).
    fn audit_chain(
        &self,
        facility: &FacilityCode,
    ) -> Result<crate::audit::CentreChain, CentralError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_printed_url_never_shows_the_password() {
        assert_eq!(
            redacted("postgres://onshi:s3cr@t@db:5432/onshi?x=1"),
            "postgres://onshi:***@db:5432/onshi?x=1"
        );
        assert_eq!(
            redacted("postgres://onshi@db/onshi"),
            "postgres://onshi@db/onshi"
        );
        let t = StoreTarget::Postgres {
            url: "postgres://onshi:pw@db/onshi".into(),
            password: Some("pw2".into()),
            ca: None,
        };
        assert!(!format!("{t} {t:?}").contains("pw"), "{t} {t:?}");
    }
}
