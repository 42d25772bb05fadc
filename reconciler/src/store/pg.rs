//! The central store on PostgreSQL (`--store postgres://…`): several `onshi-reconciler serve`
//! processes share one database. The schema is `reconciler/migrations/*.sql`, applied by
//! [`migrate`] (`onshi-reconciler migrate`) and checked by [`PgStore::connect`]: a binary refuses
//! a database without the schema or with a schema newer than it knows.
//!
//! How the domain maps onto tables (the migration's comments say more):
//! - the registry: `registry_periods` keyed as the embedded store keys it, with indexes by person
//!   and by card id; a check is one query (two only when a lapsed period needs the person's newer
//!   ones); `import` is one transaction per chunk, copied into a staging table and applied by
//!   set-based statements ([`import`]), that also appends to `registry_changes`, files the
//!   changed periods in `registry_search` and keeps `registry_state` (the feed's seq and the
//!   period count);
//! - journals: `journal_records` keyed by (facility, record id) holding `JournalRecord::to_bytes`,
//!   with the revisit index in two columns of the same row; `merge` and `update` lock the rows
//!   `FOR UPDATE`, join in Rust (the CRDT), write what changed and commit, one facility per
//!   transaction; `update` keeps the lock while `decide` runs, so two processes settle a record
//!   once; announced records go on `journal_revisions`, numbered under the facility's
//!   `journal_feeds` row lock so that seq order is commit order;
//! - outage requests, grants and facilities in their own tables, a version row for facilities;
//! - each facility's access-log chain (migration 0003): `audit_links` keyed by (facility, seq),
//!   its state in `audit_chains`, whose row lock (`FOR UPDATE`) serialises a facility's reports.
//!
//! The trait is synchronous (its callers are blocking threads); the store owns a small tokio
//! runtime that drives the connections, and each call runs its future on the calling thread
//! ([`block_on`], the runtime entered so connections and timers land on it). That is legal
//! anywhere: from a CLI command without a runtime, from `spawn_blocking`, and (wastefully, but
//! without tokio's "runtime within a runtime" panic) on an async worker.
//!
//! Must never: hold a connection of the reading pool while waiting for a row lock (the
//! `locking` pool serves the transactions that lock journal rows, and `decide` reads through the
//! other one, so a decision that reads the registry cannot starve the lock holders); touch two
//! facilities' journal rows in one transaction; delete anything; log a password or a period.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use crdts::CvRDT;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use onshi_model::{
    CheckOutcome, CheckRequest, CheckSubject, FacilityCode, PersonId, Qualification, Sex,
};
use onshi_sync::audit_chain::{AuditLink, AuditReport, Digest};
use onshi_sync::crdt::{Journal, JournalRecord, RecordId};
use onshi_sync::registry::{decide_card, decide_insurance_card};
use serde::{Deserialize, Serialize};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use self::checks::CheckBatcher;
use super::{
    CentralError, CentralStore, Decide, FacilityEntry, Grant, GrantScope, ImportCounts,
    OutageRequest, Picked, RegistryChange, RevisitCandidate, SEARCH_KEYS_VERSION, SearchBlock,
    SearchCandidates, nearest, revisit_key, search_keys, sex_code,
};

mod checks;
mod import;

/// One schema migration: applied once, in order, recorded in `schema_migrations`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration this binary knows, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "central",
        sql: include_str!("../../migrations/0001_central.sql"),
    },
    Migration {
        version: 2,
        name: "search_index",
        sql: include_str!("../../migrations/0002_search_index.sql"),
    },
    Migration {
        version: 3,
        name: "audit_heads",
        sql: include_str!("../../migrations/0003_audit_heads.sql"),
    },
];

/// The schema version this binary serves.
pub fn known_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Connections of the pool for reads and short writes, and of the pool for journal transactions.
const READ_POOL: usize = 16;
const LOCKING_POOL: usize = 8;
/// A transaction that PostgreSQL aborted as a deadlock victim or a lost race is run again this
/// many times in all.
const ATTEMPTS: usize = 10;
/// Rows fetched at a time when reading every period.
const FETCH: i32 = 5_000;

/// The connection settings of a `postgres://` URL, with the password (if any) from elsewhere.
pub fn config_from_url(
    url: &str,
    password: Option<&str>,
) -> Result<tokio_postgres::Config, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("must be a postgres://USER@HOST[:PORT]/DATABASE URL".into());
    }
    let mut config = tokio_postgres::Config::from_str(url).map_err(|e| e.to_string())?;
    if let Some(p) = password {
        config.password(p);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    if config.get_application_name().is_none() {
        config.application_name("onshi-reconciler");
    }
    Ok(config)
}

/// How to reach the database: the connection settings, and TLS when `--store-ca` gives the CAs
/// the server's certificate must chain to (checked with the URL's host name; rustls with ring).
/// Without them nothing is encrypted on the wire (a database on the same host, or behind a
/// tunnel); a URL asking for `sslmode=require` without them is refused.
#[derive(Clone)]
pub struct PgConnect {
    config: tokio_postgres::Config,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl PgConnect {
    /// `config`, over TLS verified against the PEM certificates in `ca` when given.
    pub fn new(
        mut config: tokio_postgres::Config,
        ca: Option<&Path>,
    ) -> Result<PgConnect, CentralError> {
        let Some(ca) = ca else {
            return Ok(PgConnect { config, tls: None });
        };
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        use tokio_postgres::config::{Host, SslMode};
        let bad = |reason: String| {
            CentralError::Database(format!("--store-ca {}: {reason}", ca.display()))
        };
        if config.get_ssl_mode() == SslMode::Disable {
            return Err(bad("the store URL says sslmode=disable".into()));
        }
        if config
            .get_hosts()
            .iter()
            .any(|h| matches!(h, Host::Unix(_)))
        {
            return Err(bad(
                "TLS needs a host name or address in the store URL, not a Unix socket".into(),
            ));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))? {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("no certificate in the file".into()));
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.ssl_mode(SslMode::Require);
        Ok(PgConnect {
            config,
            tls: Some(Arc::new(tls)),
        })
    }

    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Whether the connections are TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The first host of the URL that is not this machine (a name other than `localhost`, an
    /// address other than a loopback one), if any: where an unencrypted connection would cross
    /// a network.
    pub fn remote_host(&self) -> Option<String> {
        use tokio_postgres::config::Host;
        self.config.get_hosts().iter().find_map(|h| match h {
            Host::Tcp(name) => {
                let local = name == "localhost"
                    || name
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                (!local).then(|| name.clone())
            }
            Host::Unix(_) => None,
        })
    }
}

/// Never the password.
impl std::fmt::Debug for PgConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnect")
            .field("user", &self.config.get_user())
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Settings alone: no TLS (tests and tools on a local server).
impl From<&tokio_postgres::Config> for PgConnect {
    fn from(config: &tokio_postgres::Config) -> PgConnect {
        PgConnect {
            config: config.clone(),
            tls: None,
        }
    }
}

impl From<tokio_postgres::Config> for PgConnect {
    fn from(config: tokio_postgres::Config) -> PgConnect {
        PgConnect { config, tls: None }
    }
}

/// Whether a `postgres://` URL carries a password.
pub fn url_has_password(url: &str) -> bool {
    tokio_postgres::Config::from_str(url).is_ok_and(|c| c.get_password().is_some())
}

/// The central store on PostgreSQL (see the module docs).
pub struct PgStore {
    pool: Pool,
    /// Insurance-card checks, batched on `pool` ([`checks`]).
    checks: CheckBatcher,
    locking: Pool,
    version: i32,
    where_: String,
    // Last: the pools' connections run on it and are dropped first.
    bridge: Bridge,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("PgStore")
            .field("database", &self.where_)
            .field("schema_version", &self.version)
            .finish_non_exhaustive()
    }
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The migrations applied now (empty: the schema was already current).
    pub applied: Vec<Migration>,
    pub version: i32,
    /// Periods filed in central search's index now (`None`: it was already current).
    pub search_indexed: Option<u64>,
}

/// Applies the migrations the database does not have yet, in one transaction (idempotent; two
/// `migrate` at once wait for each other). Refuses a schema newer than this binary knows.
pub fn migrate(connect: impl Into<PgConnect>) -> Result<Migrated, CentralError> {
    let store = PgStore::connect_unchecked(connect)?;
    store.bridge.run(async {
        let mut c = store.pool.get().await.map_err(pool_error)?;
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(db)?;
        let tx = c.transaction().await.map_err(db)?;
        tx.batch_execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
            .await
            .map_err(db)?;
        let done: HashSet<i32> = tx
            .query("SELECT version FROM schema_migrations", &[])
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if let Some(newer) = done.iter().copied().filter(|v| *v > known_version()).max() {
            return Err(newer_schema(newer));
        }
        let mut applied = Vec::new();
        for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
            tx.batch_execute(m.sql).await.map_err(|e| {
                CentralError::Schema(format!(
                    "migration {:04}_{} failed: {}",
                    m.version,
                    m.name,
                    db_text(&e)
                ))
            })?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&m.version, &m.name],
            )
            .await
            .map_err(db)?;
            applied.push(*m);
        }
        let keys: i32 = tx
            .query_one(
                "SELECT keys_version FROM registry_search_state WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await
            .map_err(db)?
            .get(0);
        let search_indexed = if keys == SEARCH_KEYS_VERSION {
            None
        } else {
            Some(fill_search_index(&tx).await?)
        };
        tx.commit().await.map_err(db)?;
        Ok(Migrated {
            applied,
            version: known_version(),
            search_indexed,
        })
    })
}

/// Fills `registry_search` from every period (the keys are Rust's: Unicode normalisation and
/// kana folding), in `tx`, streaming: memory stays bounded whatever the registry's size.
async fn fill_search_index(tx: &tokio_postgres::Transaction<'_>) -> Result<u64, CentralError> {
    let started = std::time::Instant::now();
    tx.batch_execute("DELETE FROM registry_search")
        .await
        .map_err(db)?;
    let st = tx
        .prepare("SELECT period FROM registry_periods")
        .await
        .map_err(db)?;
    let portal = tx.bind(&st, &[]).await.map_err(db)?;
    let insert = tx.prepare(SQL_INDEX_SEARCH).await.map_err(db)?;
    let mut periods = 0u64;
    loop {
        let rows = tx.query_portal(&portal, FETCH).await.map_err(db)?;
        if rows.is_empty() {
            break;
        }
        let qs: Vec<Qualification> = rows
            .iter()
            .map(|r| decode_period(r.get(0)))
            .collect::<Result<_, _>>()?;
        let e = SearchRows::of(qs.iter());
        tx.execute(&insert, &[&e.keys, &e.births, &e.persons, &e.sexes])
            .await
            .map_err(db)?;
        periods += qs.len() as u64;
    }
    tx.execute(
        "UPDATE registry_search_state SET keys_version = $1 WHERE id = 1",
        &[&SEARCH_KEYS_VERSION],
    )
    .await
    .map_err(db)?;
    tracing::info!(
        periods,
        ms = started.elapsed().as_millis() as u64,
        "central search index filled"
    );
    Ok(periods)
}

/// Rows of `registry_search` for some periods: each (key, birth date, person) once (one
/// statement cannot change a row twice), the last period's sex.
#[derive(Default)]
struct SearchRows {
    keys: Vec<String>,
    births: Vec<NaiveDate>,
    persons: Vec<String>,
    sexes: Vec<i16>,
}

impl SearchRows {
    fn of<'a>(periods: impl Iterator<Item = &'a Qualification>) -> Self {
        let mut rows: std::collections::BTreeMap<(String, NaiveDate, String), i16> =
            std::collections::BTreeMap::new();
        for q in periods {
            let keys = std::iter::once(String::new()).chain(search_keys(&q.name, &q.name_kana));
            for key in keys {
                rows.insert(
                    (key, q.birth_date, q.person_id.as_str().to_string()),
                    sex_code(q.sex),
                );
            }
        }
        let mut out = SearchRows::default();
        for ((k, b, p), s) in rows {
            out.keys.push(k);
            out.births.push(b);
            out.persons.push(p);
            out.sexes.push(s);
        }
        out
    }
}

/// The sex codes a query of sex `asked` matches ([`super::sex_compatible`]).
fn sex_codes(asked: Sex) -> Vec<i16> {
    [Sex::Male, Sex::Female, Sex::Unset]
        .into_iter()
        .filter(|f| super::sex_compatible(asked, *f))
        .map(sex_code)
        .collect()
}

fn newer_schema(v: i32) -> CentralError {
    CentralError::Schema(format!(
        "the database's schema is version {v}, newer than this onshi-reconciler knows (up to {}): \
         run the onshi-reconciler whose `onshi-reconciler migrate` applied it, or point --store at \
         the right database",
        known_version()
    ))
}

fn db_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} (SQLSTATE {})", d.message(), d.code().code()),
        None => match std::error::Error::source(e) {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        },
    }
}

fn db(e: tokio_postgres::Error) -> CentralError {
    CentralError::Database(db_text(&e))
}

fn pool_error(e: PoolError) -> CentralError {
    CentralError::Database(match e {
        PoolError::Backend(e) => format!("cannot connect: {}", db_text(&e)),
        PoolError::Timeout(_) => "timed out waiting for a database connection".into(),
        other => other.to_string(),
    })
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> CentralError {
    CentralError::Corrupt {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

/// Why one attempt of a transaction ended without committing.
enum TxError {
    /// Deadlock victim, serialization failure, or a row another instance inserted meanwhile:
    /// run the transaction again.
    Retry,
    Fail(CentralError),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED => TxError::Retry,
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE => TxError::Retry,
            _ => TxError::Fail(db(e)),
        }
    }
}

impl From<CentralError> for TxError {
    fn from(e: CentralError) -> Self {
        TxError::Fail(e)
    }
}

impl From<PoolError> for TxError {
    fn from(e: PoolError) -> Self {
        TxError::Fail(pool_error(e))
    }
}

// ---------------------------------------------------------------------------------------------
// Running futures from synchronous callers

/// The store's own runtime: it runs the connections' tasks and timers; the callers' futures run
/// on the callers' threads.
struct Bridge {
    rt: Option<tokio::runtime::Runtime>,
}

impl Bridge {
    fn new() -> Result<Self, CentralError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("onshi-pg")
            .enable_all()
            .build()
            .map_err(|e| {
                CentralError::Database(format!("cannot start the database client: {e}"))
            })?;
        Ok(Bridge { rt: Some(rt) })
    }

    fn run<F: Future>(&self, f: F) -> F::Output {
        // New connections are spawned, and timeouts registered, on the store's runtime.
        let _entered = self.rt.as_ref().map(|rt| rt.enter());
        block_on(f)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids on an async worker (where the last
        // reference to the store may go): let its threads end on their own.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Polls `f` to completion on this thread, parking between wake-ups. Unlike tokio's `block_on`,
/// legal inside a runtime; nested calls (a `decide` that reads the store) each wait for their own
/// wake-up flag. Unconstrained: tokio's cooperative budget belongs to the task this thread may be
/// running, and would never be refilled here.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Flag {
        woken: AtomicBool,
        thread: std::thread::Thread,
    }
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.woken.store(true, Ordering::SeqCst);
            self.thread.unpark();
        }
    }
    let flag = Arc::new(Flag {
        woken: AtomicBool::new(false),
        thread: std::thread::current(),
    });
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(tokio::task::unconstrained(f));
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        while !flag.woken.swap(false, Ordering::SeqCst) {
            std::thread::park();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encodings

/// How a period is stored: the enum tag is the version.
#[derive(Serialize)]
enum StoredPeriodRef<'a> {
    V1(&'a Qualification),
}

#[derive(Deserialize)]
enum StoredPeriod {
    V1(Qualification),
}

fn encode_period(q: &Qualification) -> Result<Vec<u8>, CentralError> {
    postcard::to_allocvec(&StoredPeriodRef::V1(q)).map_err(|e| corrupt("period", e))
}

fn decode_period(bytes: &[u8]) -> Result<Qualification, CentralError> {
    match postcard::from_bytes::<StoredPeriod>(bytes) {
        Ok(StoredPeriod::V1(q)) => Ok(q),
        Err(e) => Err(corrupt("period", e)),
    }
}

/// A period's identity: card numbers, branch, person, acquisition date (the primary key).
type PeriodKey = (String, String, String, String, String, NaiveDate);

fn period_key(q: &Qualification) -> PeriodKey {
    (
        q.insurer_number.as_str().to_string(),
        q.symbol.as_ref().map_or("", |s| s.as_str()).to_string(),
        q.number.as_str().to_string(),
        q.branch.as_ref().map_or("", |b| b.as_str()).to_string(),
        q.person_id.as_str().to_string(),
        q.acquired_on,
    )
}

fn decode_record(key: &str, bytes: &[u8]) -> Result<JournalRecord, CentralError> {
    let r = JournalRecord::from_bytes(bytes).map_err(|e| corrupt(&format!("record {key}"), e))?;
    if r.id().to_string() != key {
        return Err(corrupt(
            &format!("record {key}"),
            format!("holds record {}", r.id()),
        ));
    }
    Ok(r)
}

fn encode_record(r: &JournalRecord) -> Result<Vec<u8>, CentralError> {
    r.to_bytes()
        .map_err(|e| corrupt(&format!("record {}", r.id()), e))
}

/// The revisit columns of a record.
fn revisit_columns(r: &JournalRecord) -> (Option<NaiveDate>, Option<NaiveDate>) {
    match revisit_key(r) {
        Some(k) => (Some(k.birth_date), Some(k.service_date)),
        None => (None, None),
    }
}

fn scope_columns(scope: &GrantScope) -> (&'static str, &str) {
    match scope {
        GrantScope::Facility(f) => ("facility", f.as_str()),
        GrantScope::Prefecture(p) => ("prefecture", p.as_str()),
    }
}

// ---------------------------------------------------------------------------------------------
// SQL

const SQL_BY_CARD: &str = "SELECT period FROM registry_periods
     WHERE insurer_number = $1 AND symbol = $2 AND number = $3 AND ($4::text IS NULL OR branch = $4)
     ORDER BY branch, person_id, acquired_on";
const SQL_OF_PERSON: &str = "SELECT period FROM registry_periods WHERE person_id = $1
     ORDER BY insurer_number, symbol, number, branch, acquired_on";
/// Every period of every person the card id is registered to, grouped by person.
const SQL_BY_CARD_ID: &str = "SELECT person_id, period FROM registry_periods
     WHERE person_id IN (SELECT person_id FROM registry_periods WHERE card_id = $1)
     ORDER BY person_id, insurer_number, symbol, number, branch, acquired_on";
const SQL_INDEX_SEARCH: &str = "INSERT INTO registry_search AS s (key, birth_date, person_id, sex)
     SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::int2[])
     ON CONFLICT (key, birth_date, person_id) DO UPDATE SET sex = EXCLUDED.sex
         WHERE s.sex <> EXCLUDED.sex";
/// Block 1 of a search: born on the day (the empty key), a compatible sex.
const SQL_SEARCH_DAY: &str = "SELECT person_id FROM registry_search
     WHERE key = '' AND birth_date = $1 AND sex = ANY($2) ORDER BY person_id LIMIT $3";
/// Block 2: one of the keys, born on a misread date.
const SQL_SEARCH_SLIPS: &str = "SELECT DISTINCT person_id FROM registry_search
     WHERE key = ANY($1) AND birth_date = ANY($2) AND sex = ANY($3) ORDER BY person_id LIMIT $4";
/// Block 3: per key, the entries born nearest the date on either side (distance in days).
const SQL_SEARCH_NEAR: &str = "SELECT k.key, n.person_id, abs(n.birth_date - $2)::int8
     FROM unnest($1::text[]) AS k(key), LATERAL (
         (SELECT person_id, birth_date FROM registry_search r
          WHERE r.key = k.key AND r.birth_date >= $2 AND r.sex = ANY($3)
          ORDER BY r.birth_date, r.person_id LIMIT $4)
         UNION ALL
         (SELECT person_id, birth_date FROM registry_search r
          WHERE r.key = k.key AND r.birth_date < $2 AND r.sex = ANY($3)
          ORDER BY r.birth_date DESC, r.person_id LIMIT $4)) n";
const SQL_PERIODS_OF_PEOPLE: &str = "SELECT period FROM registry_periods WHERE person_id = ANY($1)
     ORDER BY person_id, insurer_number, symbol, number, branch, acquired_on";
const SQL_LOCK_RECORDS: &str = "SELECT record_id, record FROM journal_records
     WHERE facility = $1 AND record_id = ANY($2) ORDER BY record_id FOR UPDATE";
const SQL_INSERT_RECORDS: &str = "INSERT INTO journal_records
         (facility, record_id, record, revisit_birth, revisit_service)
     SELECT $1::text, * FROM unnest($2::text[], $3::bytea[], $4::date[], $5::date[])
     ON CONFLICT (facility, record_id) DO NOTHING RETURNING record_id";
const SQL_UPDATE_RECORDS: &str = "UPDATE journal_records j
     SET record = u.record, revisit_birth = u.birth, revisit_service = u.service, updated_at = now()
     FROM unnest($2::text[], $3::bytea[], $4::date[], $5::date[]) AS u(record_id, record, birth, service)
     WHERE j.facility = $1 AND j.record_id = u.record_id";
const SQL_ANNOUNCE: &str = "WITH head AS (
         INSERT INTO journal_feeds AS f (facility, revision) VALUES ($1, $2)
         ON CONFLICT (facility) DO UPDATE SET revision = f.revision + $2
         RETURNING revision)
     INSERT INTO journal_revisions (facility, seq, record_id)
     SELECT $1, head.revision - $2 + u.ord, u.id
     FROM head, unnest($3::text[]) WITH ORDINALITY AS u(id, ord)";

/// A row `(seq, prev, hash)` of `audit_links`.
fn audit_link_row(r: &tokio_postgres::Row) -> Result<AuditLink, CentralError> {
    let digest = |i: usize| -> Result<Digest, CentralError> {
        let b: &[u8] = r.get(i);
        b.try_into()
            .map_err(|_| corrupt("audit link", format!("{} bytes", b.len())))
    };
    Ok(AuditLink {
        seq: u64::try_from(r.get::<_, i64>(0)).map_err(|e| corrupt("audit link", e))?,
        prev: digest(1)?,
        hash: digest(2)?,
    })
}

/// A row `(next, break_seq, break_kind, break_agreed_below, break_at)` of `audit_chains`.
fn audit_chain_row(r: &tokio_postgres::Row) -> Result<crate::audit::CentreChain, CentralError> {
    use crate::audit::{BreakKind, ChainBreak};
    let n = |v: i64| u64::try_from(v).map_err(|e| corrupt("audit chain", e));
    let brk = match r.get::<_, Option<i64>>(1) {
        None => None,
        Some(seq) => Some(ChainBreak {
            seq: n(seq)?,
            kind: match r.get::<_, Option<&str>>(2) {
                Some("removed") => BreakKind::Removed,
                Some("rewritten") => BreakKind::Rewritten,
                other => return Err(corrupt("audit chain", format!("break kind {other:?}"))),
            },
            agreed_below: n(r.get::<_, Option<i64>>(3).unwrap_or(0))?,
            at: r
                .get::<_, Option<DateTime<Utc>>>(4)
                .ok_or_else(|| corrupt("audit chain", "no break time"))?,
        }),
    };
    Ok(crate::audit::CentreChain {
        next: n(r.get(0))?,
        brk,
    })
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Records to write in one statement: ids, bytes and the revisit columns.
#[derive(Default)]
struct Rows {
    ids: Vec<String>,
    bytes: Vec<Vec<u8>>,
    births: Vec<Option<NaiveDate>>,
    services: Vec<Option<NaiveDate>>,
}

impl Rows {
    fn push(&mut self, r: &JournalRecord) -> Result<(), CentralError> {
        let (b, s) = revisit_columns(r);
        self.ids.push(r.id().to_string());
        self.bytes.push(encode_record(r)?);
        self.births.push(b);
        self.services.push(s);
        Ok(())
    }
}

impl PgStore {
    /// Connects and checks the schema: [`CentralError::Schema`] when the database has none, an
    /// older one (run `onshi-reconciler migrate`), or one newer than this binary knows.
    pub fn connect(connect: impl Into<PgConnect>) -> Result<Self, CentralError> {
        let store = Self::connect_unchecked(connect)?;
        match store.version {
            0 => Err(CentralError::Schema(
                "the database has no onshi schema: run `onshi-reconciler migrate --store URL` first"
                    .into(),
            )),
            v if v < known_version() => Err(CentralError::Schema(format!(
                "the database's schema is version {v}; this onshi-reconciler needs version {}: run \
                 `onshi-reconciler migrate --store URL`",
                known_version()
            ))),
            v if v > known_version() => Err(newer_schema(v)),
            _ => {
                let keys: i32 = store.bridge.run(async {
                    let c = store.read().await?;
                    let row = c
                        .query_one(
                            "SELECT keys_version FROM registry_search_state WHERE id = 1",
                            &[],
                        )
                        .await
                        .map_err(db)?;
                    Ok::<i32, CentralError>(row.get(0))
                })?;
                if keys != SEARCH_KEYS_VERSION {
                    return Err(CentralError::Schema(format!(
                        "central search's index was filled by key rules version {keys}; this \
                         onshi-reconciler files by version {SEARCH_KEYS_VERSION}: run \
                         `onshi-reconciler migrate --store URL`"
                    )));
                }
                Ok(store)
            }
        }
    }

    /// Connects (one connection, to say now whether the database is there) without checking
    /// the schema.
    pub fn connect_unchecked(connect: impl Into<PgConnect>) -> Result<Self, CentralError> {
        let connect = connect.into();
        let config = &connect.config;
        if connect.tls.is_none()
            && config.get_ssl_mode() == tokio_postgres::config::SslMode::Require
        {
            return Err(CentralError::Database(
                "--store: sslmode=require, but no --store-ca FILE (store_ca) names the CA the \
                 database server's certificate is checked against"
                    .into(),
            ));
        }
        let bridge = Bridge::new()?;
        let pool = |size: usize| {
            let recycling = ManagerConfig {
                // A connection the server closed is noticed by its task and not reused; a
                // query per checkout would double a check's round trips.
                recycling_method: RecyclingMethod::Fast,
            };
            let manager = match &connect.tls {
                Some(tls) => Manager::from_config(
                    config.clone(),
                    tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone()),
                    recycling,
                ),
                None => Manager::from_config(config.clone(), NoTls, recycling),
            };
            Pool::builder(manager)
                .max_size(size)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(Duration::from_secs(30)))
                .create_timeout(Some(Duration::from_secs(15)))
                .recycle_timeout(Some(Duration::from_secs(5)))
                .build()
                .map_err(|e| CentralError::Database(format!("connection pool: {e}")))
        };
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        let where_ = format!(
            "{}@{}:{}/{}",
            config.get_user().unwrap_or(""),
            hosts.join(","),
            config.get_ports().first().copied().unwrap_or(5432),
            config.get_dbname().unwrap_or("")
        );
        let read = pool(READ_POOL)?;
        let checks = match bridge.rt.as_ref() {
            Some(rt) => CheckBatcher::start(rt.handle(), read.clone()),
            None => {
                return Err(CentralError::Database(
                    "the database client has stopped".into(),
                ));
            }
        };
        let mut store = PgStore {
            pool: read,
            checks,
            locking: pool(LOCKING_POOL)?,
            version: 0,
            where_,
            bridge,
        };
        store.version = store.bridge.run(async {
            let c = store.pool.get().await.map_err(pool_error)?;
            let has = c
                .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
                .await
                .map_err(db)?
                .get::<_, bool>(0);
            if !has {
                return Ok::<i32, CentralError>(0);
            }
            let v: Option<i32> = c
                .query_one("SELECT max(version) FROM schema_migrations", &[])
                .await
                .map_err(db)?
                .get(0);
            Ok(v.unwrap_or(0))
        })?;
        Ok(store)
    }

    /// The schema version found at connect (0: none).
    pub fn schema_version(&self) -> i32 {
        self.version
    }

    /// `user@host:port/database`, never the password.
    pub fn database(&self) -> &str {
        &self.where_
    }

    async fn read(&self) -> Result<Object, CentralError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Runs `query` on a reading connection (prepared once per connection).
    fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, CentralError> {
        self.bridge.run(async {
            let c = self.read().await?;
            let st = c.prepare_cached(sql).await.map_err(db)?;
            c.query(&st, params).await.map_err(db)
        })
    }

    fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, CentralError> {
        self.bridge.run(async {
            let c = self.read().await?;
            let st = c.prepare_cached(sql).await.map_err(db)?;
            c.execute(&st, params).await.map_err(db)
        })
    }

    /// Runs one attempt of a transaction again while PostgreSQL asks for it.
    fn retrying<T>(
        &self,
        what: &str,
        mut attempt: impl FnMut() -> Result<T, TxError>,
    ) -> Result<T, CentralError> {
        for n in 1..=ATTEMPTS {
            match attempt() {
                Ok(v) => return Ok(v),
                Err(TxError::Fail(e)) => return Err(e),
                Err(TxError::Retry) => {
                    tracing::debug!(
                        attempt = n,
                        "{what}: transaction retried (deadlock or race)"
                    );
                }
            }
        }
        Err(CentralError::Database(format!(
            "{what}: the transaction was aborted {ATTEMPTS} times in a row (deadlocks or races)"
        )))
    }

    async fn merge_once(
        &self,
        facility: &FacilityCode,
        records: &[JournalRecord],
    ) -> Result<Vec<JournalRecord>, TxError> {
        let mut c = self.locking.get().await?;
        let tx = c.transaction().await?;
        let mut keys: Vec<String> = records.iter().map(|r| r.id().to_string()).collect();
        keys.sort();
        keys.dedup();
        let lock = tx.prepare_cached(SQL_LOCK_RECORDS).await?;
        let mut stored: HashMap<String, JournalRecord> = HashMap::new();
        for row in tx.query(&lock, &[&facility.as_str(), &keys]).await? {
            let key: String = row.get(0);
            let rec = decode_record(&key, row.get(1))?;
            stored.insert(key, rec);
        }
        let mut now: HashMap<String, JournalRecord> = stored.clone();
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let key = r.id().to_string();
            let merged = match now.remove(&key) {
                Some(mut current) => {
                    current.merge(r.clone());
                    current
                }
                None => r.clone(),
            };
            out.push(merged.clone());
            now.insert(key, merged);
        }
        let (mut inserts, mut updates) = (Rows::default(), Rows::default());
        for key in &keys {
            let Some(r) = now.get(key) else { continue };
            match stored.get(key) {
                None => inserts.push(r)?,
                Some(old) if old != r => updates.push(r)?,
                Some(_) => {}
            }
        }
        if !inserts.ids.is_empty() {
            let st = tx.prepare_cached(SQL_INSERT_RECORDS).await?;
            let inserted = tx
                .query(
                    &st,
                    &[
                        &facility.as_str(),
                        &inserts.ids,
                        &inserts.bytes,
                        &inserts.births,
                        &inserts.services,
                    ],
                )
                .await?;
            if inserted.len() != inserts.ids.len() {
                // Another instance inserted one of them since our read: join with theirs.
                return Err(TxError::Retry);
            }
        }
        if !updates.ids.is_empty() {
            let st = tx.prepare_cached(SQL_UPDATE_RECORDS).await?;
            tx.execute(
                &st,
                &[
                    &facility.as_str(),
                    &updates.ids,
                    &updates.bytes,
                    &updates.births,
                    &updates.services,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn update_once(
        &self,
        facility: &FacilityCode,
        ids: &[RecordId],
        announce: bool,
        decide: &mut Decide<'_>,
    ) -> Result<Vec<JournalRecord>, TxError> {
        let mut c = self.locking.get().await?;
        let tx = c.transaction().await?;
        let mut keys: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        keys.sort();
        keys.dedup();
        let lock = tx.prepare_cached(SQL_LOCK_RECORDS).await?;
        let mut current: HashMap<String, JournalRecord> = HashMap::new();
        for row in tx.query(&lock, &[&facility.as_str(), &keys]).await? {
            let key: String = row.get(0);
            let rec = decode_record(&key, row.get(1))?;
            current.insert(key, rec);
        }
        // The rows stay locked while `decide` runs: another instance's update of them waits, then
        // reads what this one wrote.
        let mut out = Vec::new();
        let mut dirty: HashSet<String> = HashSet::new();
        let mut announced: Vec<String> = Vec::new();
        for id in ids {
            let key = id.to_string();
            let Some(cur) = current.get(&key) else {
                continue;
            };
            let Some(next) = decide(cur) else {
                continue;
            };
            let mut merged = cur.clone();
            merged.merge(next);
            if &merged != cur {
                dirty.insert(key.clone());
            }
            current.insert(key.clone(), merged.clone());
            out.push(merged);
            if announce {
                announced.push(key);
            }
        }
        if !dirty.is_empty() {
            let mut rows = Rows::default();
            for key in &keys {
                if dirty.contains(key)
                    && let Some(r) = current.get(key)
                {
                    rows.push(r)?;
                }
            }
            let st = tx.prepare_cached(SQL_UPDATE_RECORDS).await?;
            tx.execute(
                &st,
                &[
                    &facility.as_str(),
                    &rows.ids,
                    &rows.bytes,
                    &rows.births,
                    &rows.services,
                ],
            )
            .await?;
        }
        if !announced.is_empty() {
            let st = tx.prepare_cached(SQL_ANNOUNCE).await?;
            tx.execute(
                &st,
                &[&facility.as_str(), &(announced.len() as i64), &announced],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn audit_receive_once(
        &self,
        facility: &FacilityCode,
        report: &AuditReport,
        now: DateTime<Utc>,
    ) -> Result<crate::audit::Receipt, TxError> {
        let mut c = self.locking.get().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO audit_chains (facility, next) VALUES ($1, 0) ON CONFLICT DO NOTHING",
            &[&facility.as_str()],
        )
        .await?;
        let row = tx
            .query_one(
                "SELECT next, break_seq, break_kind, break_agreed_below, break_at
                 FROM audit_chains WHERE facility = $1 FOR UPDATE",
                &[&facility.as_str()],
            )
            .await?;
        let chain = audit_chain_row(&row)?;
        let seqs: Vec<i64> = crate::audit::needed(&chain, report)
            .into_iter()
            .map(as_i64)
            .collect();
        let mut held = std::collections::BTreeMap::new();
        for r in tx
            .query(
                "SELECT seq, prev, hash FROM audit_links WHERE facility = $1 AND seq = ANY($2)",
                &[&facility.as_str(), &seqs],
            )
            .await?
        {
            let l = audit_link_row(&r)?;
            held.insert(l.seq, l);
        }
        let receipt =
            crate::audit::receive(&chain, &held, report, now).map_err(CentralError::from)?;
        if receipt.chain == chain {
            // Nothing to write: the lock goes with the rollback.
            return Ok(receipt);
        }
        if !receipt.append.is_empty() {
            let seqs: Vec<i64> = receipt.append.iter().map(|l| as_i64(l.seq)).collect();
            let prevs: Vec<&[u8]> = receipt.append.iter().map(|l| &l.prev[..]).collect();
            let hashes: Vec<&[u8]> = receipt.append.iter().map(|l| &l.hash[..]).collect();
            tx.execute(
                "INSERT INTO audit_links (facility, seq, prev, hash)
                 SELECT $1::text, * FROM unnest($2::int8[], $3::bytea[], $4::bytea[])",
                &[&facility.as_str(), &seqs, &prevs, &hashes],
            )
            .await?;
        }
        let b = receipt.chain.brk.as_ref();
        tx.execute(
            "UPDATE audit_chains SET next = $2, break_seq = $3, break_kind = $4,
                 break_agreed_below = $5, break_at = $6
             WHERE facility = $1",
            &[
                &facility.as_str(),
                &as_i64(receipt.chain.next),
                &b.map(|b| as_i64(b.seq)),
                &b.map(|b| b.kind.as_str()),
                &b.map(|b| as_i64(b.agreed_below)),
                &b.map(|b| b.at),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(receipt)
    }

    fn decode_periods(
        rows: &[tokio_postgres::Row],
        col: usize,
    ) -> Result<Vec<Qualification>, CentralError> {
        rows.iter().map(|r| decode_period(r.get(col))).collect()
    }
}

fn facility_entry(r: &tokio_postgres::Row) -> Result<FacilityEntry, CentralError> {
    let code: String = r.get(0);
    Ok(FacilityEntry {
        code: FacilityCode::parse(&code).map_err(|e| corrupt("facility", e))?,
        fingerprint: r.get(1),
        added_at: r.get(2),
        revoked_at: r.get(3),
    })
}

/// The outcome of an insurance-card check from the card's periods (`SQL_BY_CARD`'s rows), on
/// connection `c`: the unbatched check and [`checks`]' batches both decide here. The person's
/// other periods (the decision's `periods_of`) are read exactly when the decision will ask for
/// them: one person matching the birth date and none of their periods valid on the service date.
async fn insurance_card_outcome(
    c: &Object,
    req: &CheckRequest,
    candidates: Vec<Qualification>,
) -> Result<CheckOutcome, CentralError> {
    let CheckSubject::InsuranceCard { birth_date, .. } = &req.subject else {
        return Err(CentralError::Database(
            "a card-id check was decided as an insurance-card check (a bug)".into(),
        ));
    };
    let matching: Vec<&Qualification> = candidates
        .iter()
        .filter(|q| q.birth_date == *birth_date)
        .collect();
    let persons: HashSet<&PersonId> = matching.iter().map(|q| &q.person_id).collect();
    let mut others: Option<(PersonId, Vec<Qualification>)> = None;
    if persons.len() == 1 && !matching.iter().any(|q| q.is_valid_on(req.service_date)) {
        let person = matching[0].person_id.clone();
        let st = c.prepare_cached(SQL_OF_PERSON).await.map_err(db)?;
        let rows = c.query(&st, &[&person.as_str()]).await.map_err(db)?;
        others = Some((person, PgStore::decode_periods(&rows, 0)?));
    }
    decide_insurance_card(
        candidates,
        *birth_date,
        req.service_date,
        |p| match &others {
            Some((person, periods)) if person == p => Ok(periods.clone()),
            _ => Err(CentralError::Database(
                "the check asked for a person it had not read (a bug)".into(),
            )),
        },
    )
}

/// A check on PostgreSQL, unbatched: [`CentralStore::check`] runs it on the bridge, and
/// [`CentralStore::check_future`] awaits it for card-id checks (insurance-card checks go to
/// [`checks`]' batches).
async fn check_async(pool: Pool, req: CheckRequest) -> Result<CheckOutcome, CentralError> {
    let c = pool.get().await.map_err(pool_error)?;
    match &req.subject {
        CheckSubject::InsuranceCard { card, .. } => {
            let st = c.prepare_cached(SQL_BY_CARD).await.map_err(db)?;
            let rows = c
                .query(
                    &st,
                    &[
                        &card.insurer_number.as_str(),
                        &card.symbol.as_ref().map_or("", |s| s.as_str()),
                        &card.number.as_str(),
                        &card.branch.as_ref().map(|b| b.as_str()),
                    ],
                )
                .await
                .map_err(db)?;
            let candidates = PgStore::decode_periods(&rows, 0)?;
            insurance_card_outcome(&c, &req, candidates).await
        }
        CheckSubject::Card { card_id } => {
            let st = c.prepare_cached(SQL_BY_CARD_ID).await.map_err(db)?;
            let rows = c.query(&st, &[&card_id.as_str()]).await.map_err(db)?;
            let mut per_person: Vec<Vec<Qualification>> = Vec::new();
            let mut last: Option<String> = None;
            for r in &rows {
                let person: String = r.get(0);
                let q = decode_period(r.get(1))?;
                if last.as_deref() != Some(person.as_str()) {
                    per_person.push(Vec::new());
                    last = Some(person);
                }
                if let Some(v) = per_person.last_mut() {
                    v.push(q);
                }
            }
            Ok(decide_card(per_person, req.service_date))
        }
    }
}

impl CentralStore for PgStore {
    fn kind(&self) -> &'static str {
        "postgresql"
    }

    fn check_future(&self, req: CheckRequest) -> Option<super::CheckFuture> {
        if matches!(req.subject, CheckSubject::InsuranceCard { .. }) {
            let batcher = self.checks.clone();
            return Some(Box::pin(async move { batcher.check(req).await }));
        }
        Some(Box::pin(check_async(self.pool.clone(), req)))
    }

    fn check(&self, req: &CheckRequest) -> Result<CheckOutcome, CentralError> {
        // One copy of the queries and the decision: the awaitable check, run on the bridge.
        self.bridge.run(check_async(self.pool.clone(), req.clone()))
    }

    fn periods_of_person(&self, person: &PersonId) -> Result<Vec<Qualification>, CentralError> {
        let rows = self.query(SQL_OF_PERSON, &[&person.as_str()])?;
        Self::decode_periods(&rows, 0)
    }

    /// Exact, and cheap: the count `import` keeps in `registry_state` (only imports add periods,
    /// and they are serialised on that row), not a `count(*)` over the table.
    fn period_count(&self) -> Result<u64, CentralError> {
        let rows = self.query("SELECT period_count FROM registry_state WHERE id = 1", &[])?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)).max(0) as u64)
    }

    fn import(&self, periods: &[Qualification]) -> Result<ImportCounts, CentralError> {
        if periods.is_empty() {
            return Ok(ImportCounts::default());
        }
        // One statement cannot change a row twice: the n-th line of a key goes in round n, so a
        // key repeated in a chunk counts as the embedded store counts it, line after line.
        let mut seen: HashMap<PeriodKey, i32> = HashMap::new();
        let round: Vec<i32> = periods
            .iter()
            .map(|q| {
                let n = seen.entry(period_key(q)).or_insert(0);
                *n += 1;
                *n - 1
            })
            .collect();
        drop(seen);
        let encoded: Vec<Vec<u8>> = periods
            .iter()
            .map(encode_period)
            .collect::<Result<_, _>>()?;
        self.retrying("import", || {
            self.bridge
                .run(self.import_bulk_once(periods, &encoded, &round))
        })
    }

    fn registry_changes(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<RegistryChange>, CentralError> {
        let rows = self.query(
            "SELECT seq, period FROM registry_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[
                &(after.min(i64::MAX as u64) as i64),
                &(limit.min(i64::MAX as usize) as i64),
            ],
        )?;
        rows.iter()
            .map(|r| {
                Ok(RegistryChange {
                    seq: r.get::<_, i64>(0) as u64,
                    qualification: decode_period(r.get(1))?,
                })
            })
            .collect()
    }

    fn registry_cursor(&self) -> Result<u64, CentralError> {
        let rows = self.query("SELECT change_seq FROM registry_state WHERE id = 1", &[])?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)).max(0) as u64)
    }

    fn search_candidates(&self, block: &SearchBlock) -> Result<SearchCandidates, CentralError> {
        let Some(&birth) = block.birth_dates.first() else {
            return Ok(SearchCandidates::default());
        };
        let sexes = sex_codes(block.sex);
        let limit = (block.cap.min(i64::MAX as usize - 1) + 1) as i64;
        self.bridge.run(async {
            let c = self.read().await?;
            let mut picked = Picked::for_block(block);
            if block.blocks.dated() {
                let st = c.prepare_cached(SQL_SEARCH_DAY).await.map_err(db)?;
                for r in c.query(&st, &[&birth, &sexes, &limit]).await.map_err(db)? {
                    if !picked.take(r.get(0)) {
                        break;
                    }
                }
            }
            let slip_keys: Vec<&str> = block
                .keys
                .iter()
                .chain(&block.split_keys)
                .map(String::as_str)
                .collect();
            if block.blocks.dated()
                && !picked.full()
                && block.birth_dates.len() > 1
                && !slip_keys.is_empty()
            {
                let st = c.prepare_cached(SQL_SEARCH_SLIPS).await.map_err(db)?;
                let dates = &block.birth_dates[1..];
                for r in c
                    .query(&st, &[&slip_keys, &dates, &sexes, &limit])
                    .await
                    .map_err(db)?
                {
                    if !picked.take(r.get(0)) {
                        break;
                    }
                }
            }
            if block.blocks.far()
                && !picked.full()
                && block.near_per_key > 0
                && !block.keys.is_empty()
            {
                let st = c.prepare_cached(SQL_SEARCH_NEAR).await.map_err(db)?;
                let n = block.near_per_key.min(i64::MAX as usize) as i64;
                let rows = c
                    .query(&st, &[&block.keys, &birth, &sexes, &n])
                    .await
                    .map_err(db)?;
                let mut per_key: std::collections::BTreeMap<String, Vec<(i64, String)>> =
                    std::collections::BTreeMap::new();
                for r in rows {
                    per_key
                        .entry(r.get(0))
                        .or_default()
                        .push((r.get(2), r.get(1)));
                }
                // In the order of the block's keys, as the embedded store takes them.
                'keys: for key in &block.keys {
                    for p in nearest(per_key.remove(key).unwrap_or_default(), block.near_per_key) {
                        if !picked.take(&p) {
                            break 'keys;
                        }
                    }
                }
            }
            let st = c.prepare_cached(SQL_PERIODS_OF_PEOPLE).await.map_err(db)?;
            let rows = c.query(&st, &[&picked.ids]).await.map_err(db)?;
            Ok(SearchCandidates {
                periods: Self::decode_periods(&rows, 0)?,
                people: picked.ids.len(),
                capped: picked.capped,
            })
        })
    }

    fn for_each_period(
        &self,
        f: &mut dyn FnMut(Qualification) -> Result<(), CentralError>,
    ) -> Result<(), CentralError> {
        self.bridge.run(async {
            let mut c = self.read().await?;
            let tx = c.transaction().await.map_err(db)?;
            let st = tx
                .prepare("SELECT period FROM registry_periods")
                .await
                .map_err(db)?;
            let portal = tx.bind(&st, &[]).await.map_err(db)?;
            loop {
                let rows = tx.query_portal(&portal, FETCH).await.map_err(db)?;
                if rows.is_empty() {
                    break;
                }
                for r in &rows {
                    f(decode_period(r.get(0))?)?;
                }
            }
            tx.commit().await.map_err(db)
        })
    }

    fn journal(&self, facility: &FacilityCode) -> Result<Journal, CentralError> {
        let rows = self.query(
            "SELECT record_id, record FROM journal_records WHERE facility = $1",
            &[&facility.as_str()],
        )?;
        rows.iter()
            .map(|r| decode_record(r.get(0), r.get(1)))
            .collect()
    }

    fn record(
        &self,
        facility: &FacilityCode,
        id: &RecordId,
    ) -> Result<Option<JournalRecord>, CentralError> {
        let key = id.to_string();
        let rows = self.query(
            "SELECT record FROM journal_records WHERE facility = $1 AND record_id = $2",
            &[&facility.as_str(), &key],
        )?;
        rows.first()
            .map(|r| decode_record(&key, r.get(0)))
            .transpose()
    }

    fn merge(
        &self,
        facility: &FacilityCode,
        records: Vec<JournalRecord>,
    ) -> Result<Vec<JournalRecord>, CentralError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        self.retrying("merge", || {
            self.bridge.run(self.merge_once(facility, &records))
        })
    }

    fn update(
        &self,
        facility: &FacilityCode,
        ids: &[RecordId],
        announce: bool,
        decide: &mut Decide<'_>,
    ) -> Result<Vec<JournalRecord>, CentralError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.retrying("update", || {
            self.bridge
                .run(self.update_once(facility, ids, announce, &mut *decide))
        })
    }

    fn revisions(
        &self,
        facility: &FacilityCode,
        after: u64,
    ) -> Result<(Vec<JournalRecord>, u64), CentralError> {
        let rows = self.query(
            "SELECT r.seq, r.record_id, j.record FROM journal_revisions r
             JOIN journal_records j ON j.facility = r.facility AND j.record_id = r.record_id
             WHERE r.facility = $1 AND r.seq > $2 ORDER BY r.seq",
            &[&facility.as_str(), &(after.min(i64::MAX as u64) as i64)],
        )?;
        let mut cursor = after;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            cursor = cursor.max(r.get::<_, i64>(0) as u64);
            out.push(decode_record(r.get(1), r.get(2))?);
        }
        Ok((out, cursor))
    }

    fn revision_cursor(&self, facility: &FacilityCode) -> Result<u64, CentralError> {
        let rows = self.query(
            "SELECT revision FROM journal_feeds WHERE facility = $1",
            &[&facility.as_str()],
        )?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)).max(0) as u64)
    }

    fn revisit_candidates(
        &self,
        birth_dates: &[NaiveDate],
        service_from: NaiveDate,
    ) -> Result<Vec<RevisitCandidate>, CentralError> {
        if birth_dates.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.query(
            "SELECT facility, record_id FROM journal_records
             WHERE revisit_birth = ANY($1) AND revisit_service >= $2
             ORDER BY facility, record_id",
            &[&birth_dates, &service_from],
        )?;
        rows.iter()
            .map(|r| {
                Ok(RevisitCandidate {
                    facility: FacilityCode::parse(r.get(0))
                        .map_err(|e| corrupt("revisit entry", e))?,
                    record: RecordId::parse(r.get(1)).map_err(|e| corrupt("revisit entry", e))?,
                })
            })
            .collect()
    }

    fn record_outage_request(&self, request: &OutageRequest) -> Result<(), CentralError> {
        self.execute(
            "INSERT INTO outage_requests (facility, at, active, reason) VALUES ($1, $2, $3, $4)",
            &[
                &request.facility.as_str(),
                &request.at,
                &request.active,
                &request.reason,
            ],
        )?;
        Ok(())
    }

    fn outage_requests(&self) -> Result<Vec<OutageRequest>, CentralError> {
        let rows = self.query(
            "SELECT facility, at, active, reason FROM outage_requests ORDER BY at, facility, id",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                Ok(OutageRequest {
                    facility: FacilityCode::parse(r.get(0))
                        .map_err(|e| corrupt("outage request", e))?,
                    at: r.get(1),
                    active: r.get(2),
                    reason: r.get(3),
                })
            })
            .collect()
    }

    fn grant(&self, grant: &Grant) -> Result<(), CentralError> {
        let (kind, code) = scope_columns(&grant.scope);
        self.execute(
            "INSERT INTO grants (scope_kind, scope_code, since, until, ended_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[&kind, &code, &grant.since, &grant.until, &grant.ended_at],
        )?;
        Ok(())
    }

    fn end_grants(&self, scope: &GrantScope, at: DateTime<Utc>) -> Result<usize, CentralError> {
        let (kind, code) = scope_columns(scope);
        // Active at `at` exactly as Grant::active_at says.
        let n = self.execute(
            "UPDATE grants SET ended_at = $3
             WHERE scope_kind = $1 AND scope_code = $2 AND since <= $3 AND $3 < until
               AND (ended_at IS NULL OR ended_at > $3)",
            &[&kind, &code, &at],
        )?;
        Ok(n as usize)
    }

    fn grants(&self) -> Result<Vec<Grant>, CentralError> {
        let rows = self.query(
            "SELECT scope_kind, scope_code, since, until, ended_at FROM grants
             ORDER BY since, scope_kind, scope_code, id",
            &[],
        )?;
        rows.iter()
            .map(|r| {
                let kind: &str = r.get(0);
                let code: String = r.get(1);
                let scope = match kind {
                    "facility" => GrantScope::Facility(
                        FacilityCode::parse(&code).map_err(|e| corrupt("grant", e))?,
                    ),
                    "prefecture" => GrantScope::Prefecture(code),
                    other => return Err(corrupt("grant", format!("unknown scope {other}"))),
                };
                Ok(Grant {
                    scope,
                    since: r.get(2),
                    until: r.get(3),
                    ended_at: r.get(4),
                })
            })
            .collect()
    }

    fn put_facility(&self, entry: &FacilityEntry) -> Result<(), CentralError> {
        self.bridge.run(async {
            let mut c = self.read().await?;
            let tx = c.transaction().await.map_err(db)?;
            tx.execute(
                "INSERT INTO facilities (code, fingerprint, added_at, revoked_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (code) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
                     added_at = EXCLUDED.added_at, revoked_at = EXCLUDED.revoked_at",
                &[
                    &entry.code.as_str(),
                    &entry.fingerprint,
                    &entry.added_at,
                    &entry.revoked_at,
                ],
            )
            .await
            .map_err(db)?;
            tx.execute(
                "UPDATE facilities_state SET version = version + 1 WHERE id = 1",
                &[],
            )
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)
        })
    }

    fn revoke_facility(
        &self,
        code: &FacilityCode,
        at: DateTime<Utc>,
    ) -> Result<bool, CentralError> {
        self.bridge.run(async {
            let mut c = self.read().await?;
            let tx = c.transaction().await.map_err(db)?;
            let n = tx
                .execute(
                    "UPDATE facilities SET revoked_at = $2 WHERE code = $1 AND revoked_at IS NULL",
                    &[&code.as_str(), &at],
                )
                .await
                .map_err(db)?;
            if n > 0 {
                tx.execute(
                    "UPDATE facilities_state SET version = version + 1 WHERE id = 1",
                    &[],
                )
                .await
                .map_err(db)?;
            }
            tx.commit().await.map_err(db)?;
            Ok(n > 0)
        })
    }

    fn facilities(&self) -> Result<Vec<FacilityEntry>, CentralError> {
        let rows = self.query(
            "SELECT code, fingerprint, added_at, revoked_at FROM facilities ORDER BY code",
            &[],
        )?;
        rows.iter().map(facility_entry).collect()
    }

    fn facilities_version(&self) -> Result<u64, CentralError> {
        let rows = self.query("SELECT version FROM facilities_state WHERE id = 1", &[])?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)).max(0) as u64)
    }

    fn audit_receive(
        &self,
        facility: &FacilityCode,
        report: &AuditReport,
        now: DateTime<Utc>,
    ) -> Result<crate::audit::Receipt, CentralError> {
        // Refused before a connection is taken.
        report.validate()?;
        self.retrying("audit report", || {
            self.bridge
                .run(self.audit_receive_once(facility, report, now))
        })
    }

    fn audit_links(
        &self,
        facility: &FacilityCode,
        from: u64,
        limit: usize,
    ) -> Result<Vec<AuditLink>, CentralError> {
        let rows = self.query(
            "SELECT seq, prev, hash FROM audit_links WHERE facility = $1 AND seq >= $2
             ORDER BY seq LIMIT $3",
            &[
                &facility.as_str(),
                &as_i64(from),
                &i64::try_from(limit).unwrap_or(i64::MAX),
            ],
        )?;
        rows.iter().map(audit_link_row).collect()
    }

    fn audit_chain(
        &self,
        facility: &FacilityCode,
    ) -> Result<crate::audit::CentreChain, CentralError> {
        let rows = self.query(
            "SELECT next, break_seq, break_kind, break_agreed_below, break_at
             FROM audit_chains WHERE facility = $1",
            &[&facility.as_str()],
        )?;
        rows.first()
            .map(audit_chain_row)
            .transpose()
            .map(Option::unwrap_or_default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_host_is_one_off_this_machine() {
        for (url, remote) in [
            ("postgres://onshi@localhost/onshi", None),
            ("postgres://onshi@127.0.0.1:5433/onshi", None),
            ("postgres://onshi@[::1]/onshi", None),
            (
                "postgres://onshi@db.centre.example/onshi",
                Some("db.centre.example"),
            ),
            ("postgres://onshi@10.1.2.3:5432/onshi", Some("10.1.2.3")),
            (
                "postgres://onshi@localhost,10.1.2.4/onshi",
                Some("10.1.2.4"),
            ),
        ] {
            let c = PgConnect::from(config_from_url(url, None).expect(url));
            assert_eq!(c.remote_host().as_deref(), remote, "{url}");
        }
    }

    #[test]
    fn block_on_runs_inside_and_outside_a_runtime_and_nested() {
        let bridge = Bridge::new().expect("a runtime");
        // No runtime: a plain thread (the CLI).
        assert_eq!(bridge.run(async { 1 }), 1);
        // A timer of the store's runtime, from a thread with none.
        bridge.run(async { tokio::time::sleep(Duration::from_millis(1)).await });
        // On an async worker of another runtime (tokio's own block_on would panic here), and
        // nested (a decide that reads the store).
        let other = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let bridge = Arc::new(bridge);
        let b = bridge.clone();
        let got = other.block_on(async move {
            tokio::spawn(async move {
                b.run(async {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    b.run(async { 2 }) + 1
                })
            })
            .await
            .expect("the task")
        });
        assert_eq!(got, 3);
        let b = bridge.clone();
        let got = other
            .block_on(async { tokio::task::spawn_blocking(move || b.run(async { 4 })).await })
            .expect("spawn_blocking");
        assert_eq!(got, 4);
        // The last reference dropped on an async worker does not panic.
        other.block_on(async move {
            tokio::spawn(async move { drop(bridge) })
                .await
                .expect("the task")
        });
    }

    #[test]
    fn the_migrations_are_numbered_in_order_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.name);
        }
        assert_eq!(known_version(), MIGRATIONS.len() as i32);
    }

    #[test]
    fn a_url_is_checked_and_its_password_noticed() {
        assert!(config_from_url("host=x", None).is_err());
        assert!(url_has_password("postgres://onshi:secret@127.0.0.1/onshi"));
        assert!(!url_has_password("postgres://onshi@127.0.0.1/onshi"));
        let c = config_from_url("postgres://onshi@127.0.0.1:5433/onshi", Some("pw")).expect("url");
        assert_eq!(c.get_password(), Some(&b"pw"[..]));
        assert_eq!(c.get_ports(), &[5433]);
    }
}
