//! The central store's conformance suite: the same test functions run against the embedded store
//! (sled in a temporary directory) and the PostgreSQL store (a real server from
//! `onshi_tests::pg`, one per test binary while tests overlap, one fresh database per test). Every
//! method of `CentralStore` is covered: checks answering as the embedded store on a synthetic
//! registry, import counts and the change feed, merge as a join, update exactly once under
//! concurrency (two `PgStore`s on one database), the revision feed, revisit candidates, outage
//! requests and grants, facilities and their version, central search's candidates from the
//! store's index (and that index built for a store that had none), the access logs' chains
//! (appended once under concurrency, a rewritten log's break recorded and narrowed), durability
//! across a crash, the schema check.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

use chrono::{DateTime, NaiveDate, Utc};
use onshi_model::record::{
    Basis, Declaration, ProvisionalRecord, RecordState, Settlement, SettlementKind,
};
use onshi_model::{
    CardId, CheckRequest, CheckSubject, FacilityCode, InsuranceCardKey, PersonId, Qualification,
    Sex,
};
use onshi_reconciler::audit::{BreakKind, CentreChain};
use onshi_reconciler::store::embedded::EmbeddedStore;
use onshi_reconciler::store::pg::{self, PgStore};
use onshi_reconciler::store::{
    Blocks, CentralError, CentralStore, FacilityEntry, Grant, GrantScope, ImportCounts,
    OutageRequest, RevisitCandidate, SearchBlock, query_keys,
};
use onshi_sync::audit_chain::{AuditLink, AuditReport, GENESIS, LinkedEntry, probe_samples};
use onshi_sync::crdt::{Actor, JournalRecord, RecordFacts, RecordId};
use onshi_tests::TestDir;
use onshi_tests::pg::PgServer;
use onshi_tests::runtime;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// One PostgreSQL server shared by the tests of this binary that run at the same time; stopped
/// when the last of them drops it.
struct Shared {
    pg: PgServer,
    _dir: TestDir,
}

fn shared_server() -> Arc<Shared> {
    static SHARED: Mutex<Weak<Shared>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = slot.upgrade() {
        return s;
    }
    let dir = TestDir::new("store-conformance");
    let s = Arc::new(Shared {
        pg: PgServer::start(&dir),
        _dir: dir,
    });
    *slot = Arc::downgrade(&s);
    s
}

/// Creates database `name` on `server` (owned by the role of its URL) and returns its settings.
fn fresh_database(server: &PgServer, name: &str) -> tokio_postgres::Config {
    let mut config = pg::config_from_url(server.url(), None).expect("the test server's URL");
    let owner = config.get_user().expect("a user").to_string();
    let superuser = server.superuser_url().to_string();
    let sql = format!("CREATE DATABASE \"{name}\" OWNER \"{owner}\"");
    runtime().block_on(async move {
        let (client, conn) = tokio_postgres::connect(&superuser, tokio_postgres::NoTls)
            .await
            .expect("connecting as the superuser");
        let task = tokio::spawn(conn);
        client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {}", onshi_tests::pg::db_error(&e)));
        drop(client);
        let _ = task.await;
    });
    config.dbname(name);
    config
}

/// A store under test, with what keeps it alive.
struct Fixture {
    store: Arc<dyn CentralStore>,
    /// A second store on the same data when the store allows one (PostgreSQL: another process).
    twin: Option<Arc<dyn CentralStore>>,
    _dir: TestDir,
    _server: Option<Arc<Shared>>,
}

impl Fixture {
    fn embedded(name: &str) -> Fixture {
        let dir = TestDir::new(&format!("store-{name}"));
        let store = EmbeddedStore::open(&dir.join("data")).expect("the embedded store");
        Fixture {
            store: Arc::new(store),
            twin: None,
            _dir: dir,
            _server: None,
        }
    }

    fn postgres(name: &str) -> Fixture {
        let server = shared_server();
        let config = fresh_database(&server.pg, &format!("conf_{name}"));
        let migrated = pg::migrate(&config).expect("migrate");
        assert_eq!(migrated.version, pg::known_version());
        let store = PgStore::connect(&config).expect("the PostgreSQL store");
        let twin = PgStore::connect(&config).expect("a second PostgreSQL store");
        Fixture {
            store: Arc::new(store),
            twin: Some(Arc::new(twin)),
            _dir: TestDir::new(&format!("store-{name}")),
            _server: Some(server),
        }
    }

    /// The stores that share the data: the second one where there is one.
    fn sharers(&self) -> Vec<Arc<dyn CentralStore>> {
        let mut v = vec![self.store.clone()];
        v.extend(self.twin.clone());
        v
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $( #[test] fn $case() { super::$case(&super::Fixture::embedded(stringify!($case))); } )*
        }
        mod postgresql {
            $( #[test] fn $case() { super::$case(&super::Fixture::postgres(stringify!($case))); } )*
        }
    };
}

conformance!(
    checks_answer_as_the_embedded_store,
    import_counts_and_the_change_feed,
    merge_is_a_join,
    update_settles_each_record_exactly_once_under_concurrency,
    the_revision_feed_carries_announced_records_only,
    revisit_candidates_are_the_open_questions,
    outage_requests_and_grants_are_kept,
    facilities_and_their_version,
    central_search_blocks_by_birth_date_sex_and_name_keys,
    access_log_chains_are_appended_once_and_a_rewrite_is_recorded,
);

// ---------------------------------------------------------------------------------------------
// The access logs' chains

/// An edge's chain of `n` links; entries from `from` on have other contents (a rewrite).
fn audit_links(n: u64, from: u64) -> Vec<AuditLink> {
    let mut prev = GENESIS;
    (0..n)
        .map(|seq| {
            let body = if seq >= from { "forged" } else { "honest" };
            let e = LinkedEntry::new(seq, prev, format!("{body} {seq}").into_bytes());
            prev = e.hash;
            e.link()
        })
        .collect()
}

fn report(len: u64, links: &[AuditLink]) -> AuditReport {
    AuditReport {
        len,
        links: links.to_vec(),
    }
}

fn access_log_chains_are_appended_once_and_a_rewrite_is_recorded(f: &Fixture) {
    let (a, b) = (facility("1311000001"), facility("1311000002"));
    let s = &f.store;
    let now = t("2026-04-01T09:00:00Z");
    let honest = audit_links(40, 40);
    // The head alone: nothing held yet.
    let r = s.audit_receive(&a, &report(5, &honest[4..5]), now).unwrap();
    assert_eq!((r.answer.next, r.answer.broken_at), (0, None));
    let r = s.audit_receive(&a, &report(5, &honest[0..5]), now).unwrap();
    assert_eq!(r.answer.next, 5);
    // The same links from every sharer at once: each appended once.
    let sharers = f.sharers();
    let threads: Vec<_> = (0..4)
        .map(|n| {
            let (store, fac, links) = (
                sharers[n % sharers.len()].clone(),
                a.clone(),
                honest.clone(),
            );
            std::thread::spawn(move || {
                for end in [10, 20, 30, 40] {
                    store
                        .audit_receive(&fac, &report(end as u64, &links[5..end]), now)
                        .unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    assert_eq!(s.audit_links(&a, 0, 1000).unwrap(), honest);
    assert_eq!(s.audit_links(&a, 7, 2).unwrap(), honest[7..9].to_vec());
    assert_eq!(s.audit_chain(&a).unwrap().next, 40);
    // Another facility's chain is its own.
    assert_eq!(s.audit_chain(&b).unwrap(), CentreChain::default());
    assert!(s.audit_links(&b, 0, 10).unwrap().is_empty());
    // A malformed report changes nothing.
    let mut unordered = honest[0..3].to_vec();
    unordered.reverse();
    let e = s
        .audit_receive(&a, &report(40, &unordered), now)
        .unwrap_err();
    assert!(matches!(e, CentralError::BadReport(_)), "{e}");
    let verified = onshi_reconciler::admin::verify_chain(s.as_ref(), &a).unwrap();
    assert!(verified.unbroken(), "{verified:?}");
    assert_eq!(verified.head, Some(honest[39]));

    // The log rewritten from entry 23 on and re-chained, then grown by two: the centre records
    // the break, narrows it to entry 23 through its probes, and keeps what it held.
    let forged = audit_links(42, 23);
    let mut r = s
        .audit_receive(&a, &report(42, &forged[40..42]), now)
        .unwrap();
    assert!(r.news);
    assert_eq!(r.answer.broken_at, Some(39));
    let mut rounds = 0;
    while let Some((from, to)) = r.answer.probe {
        let sample: Vec<AuditLink> = probe_samples(from, to)
            .into_iter()
            .map(|seq| forged[seq as usize])
            .collect();
        r = s.audit_receive(&a, &report(42, &sample), now).unwrap();
        rounds += 1;
        assert!(rounds < 4);
    }
    let brk = s.audit_chain(&a).unwrap().brk.unwrap();
    assert_eq!(
        (brk.seq, brk.kind, brk.exact()),
        (23, BreakKind::Rewritten, true)
    );
    assert_eq!(brk.at, now);
    // Again: no news, nothing appended, the honest links kept.
    let r = s
        .audit_receive(&a, &report(42, &forged[40..42]), t("2026-04-02T09:00:00Z"))
        .unwrap();
    assert!(!r.news);
    assert_eq!(s.audit_chain(&a).unwrap().brk.unwrap().at, now);
    assert_eq!(s.audit_links(&a, 0, 1000).unwrap(), honest);
    let verified = onshi_reconciler::admin::verify_chain(s.as_ref(), &a).unwrap();
    assert!(!verified.unbroken());
    assert_eq!(verified.brk.map(|b| b.seq), Some(23));
}

// ---------------------------------------------------------------------------------------------
// Central search's candidates

/// A person of the search cases: a synthetic period with the name, reading, birth date and sex.
fn searchable(id: u32, name: &str, kana: &str, birth: &str, sex: Sex) -> Qualification {
    let mut q = synth(1, 7).remove(0);
    q.person_id = PersonId::parse(&format!("P{id:07}")).unwrap();
    q.card_id = None;
    q.name = name.into();
    q.name_kana = kana.into();
    q.birth_date = d(birth);
    q.sex = sex;
    q
}

fn search_people() -> Vec<Qualification> {
    let a = searchable(101, "山田　太郎", "ヤマダ　タロウ", "1980-04-01", Sex::Male);
    // A's job change: a second period, from another acquisition date.
    let mut a2 = a.clone();
    a2.acquired_on = d("2025-10-01");
    a2.number = onshi_model::CardNumber::parse("99999").unwrap();
    vec![
        a,
        a2,
        // Born the same day: of the other sex, and of no sex on record.
        searchable(
            102,
            "佐藤　花子",
            "サトウ　ハナコ",
            "1980-04-01",
            Sex::Female,
        ),
        searchable(
            103,
            "鈴木　一郎",
            "スズキ　イチロウ",
            "1980-04-01",
            Sex::Unset,
        ),
        // Born on a misreading of the date (day's digits swapped): with the surname, and without.
        searchable(104, "山田　次郎", "ヤマダ　ジロウ", "1980-04-10", Sex::Male),
        searchable(
            105,
            "高橋　三郎",
            "タカハシ　サブロウ",
            "1980-04-10",
            Sex::Male,
        ),
        // The whole name, born long before; the given name on a woman.
        searchable(106, "山田　太郎", "ヤマダ　タロウ", "1955-07-07", Sex::Male),
        searchable(
            107,
            "田中　太郎",
            "タナカ　タロウ",
            "1955-07-07",
            Sex::Female,
        ),
        // One surname over the years, for the nearest-by-date block.
        searchable(201, "伊藤　一", "イトウ　ハジメ", "1950-01-01", Sex::Male),
        searchable(202, "伊藤　二", "イトウ　ツギ", "1962-01-01", Sex::Male),
        searchable(203, "伊藤　三", "イトウ　ミツ", "1975-01-01", Sex::Male),
        searchable(204, "伊藤　四", "イトウ　ヨツ", "1990-01-01", Sex::Male),
        searchable(205, "伊藤　五", "イトウ　イツ", "2010-01-01", Sex::Male),
    ]
}

fn people_found(f: &Fixture, block: &SearchBlock) -> (Vec<String>, usize, bool) {
    let found = f.store.search_candidates(block).unwrap();
    let mut people: Vec<String> = found
        .periods
        .iter()
        .map(|q| q.person_id.as_str().to_string())
        .collect();
    people.sort();
    (people, found.people, found.capped)
}

fn central_search_blocks_by_birth_date_sex_and_name_keys(f: &Fixture) {
    let block = SearchBlock {
        blocks: Blocks::All,
        birth_dates: vec![d("1980-04-01"), d("1980-04-10"), d("1980-04-11")],
        sex: Sex::Male,
        keys: query_keys(Some("山田 太郎"), None).keys,
        split_keys: vec![],
        near_per_key: 64,
        cap: 100,
    };
    // Before the import: nobody (and no error on an empty index).
    assert_eq!(people_found(f, &block), (vec![], 0, false));
    f.store.import(&search_people()).unwrap();
    // Born that day with a compatible sex (every period of each: A's two), a misread date with
    // the surname, the whole name born long before. Not: the woman born that day, the man on the
    // misread date without a key, the woman with the given name.
    let expect = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        people_found(f, &block),
        (
            expect(&["P0000101", "P0000101", "P0000103", "P0000104", "P0000106"]),
            4,
            false
        )
    );
    // The two stages of a search read the same people: the dated blocks (born that day, or on
    // the misread date with the surname), then the far one (the whole name born long before, and
    // those of the dated ones who hold one of the keys, unless the dated stage's people are
    // passed as known: then they are passed over outside the cap, and with a cap of one the far
    // name is still found).
    let dated_people = ["P0000101", "P0000103", "P0000104"]
        .map(String::from)
        .to_vec();
    let dated_ids = ["P0000101", "P0000101", "P0000103", "P0000104"];
    let far_ids = ["P0000101", "P0000101", "P0000104", "P0000106"];
    for (blocks, cap, ids, people) in [
        (Blocks::Dated, 100, &dated_ids[..], 3),
        (Blocks::Far { known: vec![] }, 100, &far_ids[..], 3),
        (
            Blocks::Far {
                known: dated_people,
            },
            1,
            &["P0000106"][..],
            1,
        ),
    ] {
        let stage = SearchBlock {
            blocks: blocks.clone(),
            cap,
            ..block.clone()
        };
        assert_eq!(
            people_found(f, &stage),
            (expect(ids), people, false),
            "{blocks:?}"
        );
    }
    // The twin (another process on the same database) sees the same at once.
    for s in f.sharers() {
        assert_eq!(s.search_candidates(&block).unwrap().people, 4);
    }
    // Sex unset in the query matches both.
    let any_sex = SearchBlock {
        sex: Sex::Unset,
        ..block.clone()
    };
    assert_eq!(
        people_found(f, &any_sex).0,
        expect(&[
            "P0000101", "P0000101", "P0000102", "P0000103", "P0000104", "P0000106", "P0000107"
        ])
    );
    // The kana reading alone, in hiragana, given name only: its key meets the registry's.
    let given = SearchBlock {
        birth_dates: vec![d("1955-07-07")],
        keys: query_keys(None, Some("たろう")).keys,
        ..block.clone()
    };
    assert_eq!(
        people_found(f, &given).0,
        expect(&["P0000101", "P0000101", "P0000106"])
    );
    // A lone given name on a misread date (block 2 alone: nobody is born on the query's date and
    // no key is looked up whatever the date), in romaji with the long vowel dropped, in hiragana
    // with a voicing mark lost, and after a changed surname written without a space: the shared
    // key function files and looks up the same key (`ジロウ` → loose `シロ`; `次郎` split off).
    for (name, kana) in [
        (Some("Jiro"), None),
        (None, Some("しろう")),
        (Some("鈴木次郎"), None),
        (Some("鈴木ジロー"), None),
    ] {
        let keys = query_keys(name, kana);
        let slip = SearchBlock {
            birth_dates: vec![d("1980-05-01"), d("1980-04-10")],
            keys: keys.keys,
            split_keys: keys.splits,
            near_per_key: 0,
            ..block.clone()
        };
        assert_eq!(
            people_found(f, &slip).0,
            expect(&["P0000104"]),
            "{name:?} {kana:?}"
        );
    }
    // Bounded: at the cap, the people born that day come first, and the answer says it is capped.
    let capped = SearchBlock {
        cap: 1,
        ..block.clone()
    };
    assert_eq!(
        people_found(f, &capped),
        (expect(&["P0000101", "P0000101"]), 1, true)
    );
    // A common key: only the nearest by birth date, whatever the date's distance.
    let near = SearchBlock {
        birth_dates: vec![d("1985-01-01")],
        keys: query_keys(Some("伊藤"), None).keys,
        near_per_key: 3,
        ..block.clone()
    };
    assert_eq!(
        people_found(f, &near).0,
        expect(&["P0000202", "P0000203", "P0000204"])
    );
    // A changed period is found by its new name, at once.
    let mut renamed = search_people().remove(7);
    renamed.name = "中村　太郎".into();
    renamed.name_kana = "ナカムラ　タロウ".into();
    f.store.import(&[renamed]).unwrap();
    let by_new_name = SearchBlock {
        birth_dates: vec![d("2000-01-01")],
        sex: Sex::Female,
        keys: query_keys(Some("中村"), None).keys,
        ..block
    };
    assert_eq!(people_found(f, &by_new_name).0, expect(&["P0000107"]));
}

#[test]
fn embedded_search_index_is_built_at_the_first_open_of_a_store_without_one() {
    use onshi_sync::store::{SledStore, Store};
    let dir = TestDir::new("store-search-build");
    let people = search_people();
    {
        // A store of the first wave: the periods written as its registry keeps them.
        let sled = Arc::new(SledStore::open(&dir.join("data").join("registry")).unwrap());
        let reg = onshi_sync::registry::Registry::open(sled.clone()).unwrap();
        for q in &people {
            reg.put(q).unwrap();
        }
        sled.sync().unwrap();
    }
    let f = Fixture {
        store: Arc::new(EmbeddedStore::open(&dir.join("data")).unwrap()),
        twin: None,
        _dir: dir,
        _server: None,
    };
    let block = SearchBlock {
        blocks: Blocks::All,
        birth_dates: vec![d("1980-04-01")],
        sex: Sex::Male,
        keys: query_keys(Some("山田 太郎"), None).keys,
        split_keys: vec![],
        near_per_key: 64,
        cap: 100,
    };
    // Born that day (A, the unset one), and by the name keys (the misread date's and the old one).
    assert_eq!(people_found(&f, &block).1, 4);
}

#[test]
fn embedded_search_index_filed_by_older_key_rules_is_refiled_at_the_next_open() {
    use onshi_sync::store::Store;
    let dir = TestDir::new("store-search-refile");
    {
        let store = EmbeddedStore::open(&dir.join("data")).unwrap();
        store.import(&search_people()).unwrap();
        // An index of the first key rules: recorded as version 1, without the keys of today's.
        let tree = store.vault().store().tree("central.search").unwrap();
        let keys: Vec<Vec<u8>> = tree
            .scan_prefix(&[])
            .map(|kv| kv.unwrap().0)
            .filter(|k| !k.is_empty() && k[0] != 0x1f && k[0] != 0xff)
            .collect();
        for k in keys {
            tree.remove(&k).unwrap();
        }
        tree.insert(b"\xffversion", &1i32.to_be_bytes()).unwrap();
        store.vault().store().sync().unwrap();
    }
    let f = Fixture {
        store: Arc::new(EmbeddedStore::open(&dir.join("data")).unwrap()),
        twin: None,
        _dir: dir,
        _server: None,
    };
    // The given name in romaji on a misread date: only a key of today's rules finds it.
    let keys = query_keys(Some("Jiro"), None);
    let block = SearchBlock {
        blocks: Blocks::All,
        birth_dates: vec![d("1980-05-01"), d("1980-04-10")],
        sex: Sex::Male,
        keys: keys.keys,
        split_keys: keys.splits,
        near_per_key: 0,
        cap: 100,
    };
    assert_eq!(people_found(&f, &block).0, vec!["P0000104".to_string()]);
}

#[test]
fn postgresql_migrate_fills_the_search_index_of_the_periods_it_finds() {
    let server = shared_server();
    let config = fresh_database(&server.pg, "conf_search_fill");
    assert_eq!(pg::migrate(&config).unwrap().search_indexed, Some(0));
    let store = PgStore::connect(&config).unwrap();
    store.import(&search_people()).unwrap();
    // An index emptied and marked unfilled (a database of schema 1 migrated, or a change of the
    // key rules): serving refuses until `migrate` fills it again from the periods.
    let url = format!(
        "{}/conf_search_fill",
        server.pg.url().rsplit_once('/').unwrap().0
    );
    runtime().block_on(async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        client
            .batch_execute(
                "DELETE FROM registry_search; UPDATE registry_search_state SET keys_version = 0",
            )
            .await
            .unwrap();
        drop(client);
        let _ = task.await;
    });
    let e = PgStore::connect(&config).unwrap_err();
    assert!(
        matches!(e, CentralError::Schema(_)) && e.to_string().contains("onshi-reconciler migrate"),
        "{e}"
    );
    let migrated = pg::migrate(&config).unwrap();
    assert!(migrated.applied.is_empty());
    assert_eq!(migrated.search_indexed, Some(search_people().len() as u64));
    assert_eq!(pg::migrate(&config).unwrap().search_indexed, None, "once");
    let f = Fixture {
        store: Arc::new(PgStore::connect(&config).unwrap()),
        twin: None,
        _dir: TestDir::new("store-search-fill"),
        _server: Some(server),
    };
    let block = SearchBlock {
        blocks: Blocks::All,
        birth_dates: vec![d("1980-04-01")],
        sex: Sex::Male,
        keys: query_keys(Some("山田 太郎"), None).keys,
        split_keys: vec![],
        near_per_key: 64,
        cap: 100,
    };
    // Born that day (A, the unset one), and by the name keys (the misread date's and the old one).
    assert_eq!(people_found(&f, &block).1, 4);
}

// ---------------------------------------------------------------------------------------------
// Data

fn d(s: &str) -> NaiveDate {
    onshi_model::parse_date(s).unwrap()
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

const TODAY: &str = "2026-01-05";

fn synth(people: usize, seed: u64) -> Vec<Qualification> {
    onshi_sync::synth::generate(&onshi_sync::synth::SynthParams {
        people,
        seed,
        today: d(TODAY),
    })
}

fn facility(code: &str) -> FacilityCode {
    FacilityCode::parse(code).unwrap()
}

/// A provisional record of `facility`, number `seq`, declared born on `birth`.
fn provisional(facility: &FacilityCode, seq: u64, birth: &str, service: &str) -> JournalRecord {
    let id = RecordId::new(facility.clone(), 1, seq);
    let p = ProvisionalRecord {
        record_id: id.to_string(),
        created_at: t("2026-01-05T00:00:00Z"),
        declared: Declaration {
            name: "山田　太郎".into(),
            name_kana: Some("ヤマダ　タロウ".into()),
            birth_date: d(birth),
            sex: Sex::Male,
            address: None,
            insurer_name: None,
            insurance_type: None,
            employer: None,
            contact: None,
            share_percent: None,
        },
        person_id: None,
        service_date: d(service),
        total_fee_yen: 10_000,
        share_percent: 30,
        collected_yen: 3_000,
        basis: Basis::AgeRule,
        rule: None,
        explanation: String::new(),
        state: RecordState::Sent,
    };
    JournalRecord::new(id, RecordFacts::Provisional(p)).unwrap()
}

fn settlement(kind: SettlementKind, explanation: &str) -> Settlement {
    Settlement {
        kind,
        settled_at: t("2026-01-05T10:00:00Z"),
        qualification: None,
        correct_share_percent: None,
        due_yen: None,
        yen: None,
        payer: None,
        candidates: vec![],
        explanation: explanation.into(),
    }
}

fn settled(r: &JournalRecord, kind: SettlementKind, explanation: &str) -> JournalRecord {
    let mut s = r.clone();
    s.settle(Actor::Reconciler, settlement(kind, explanation))
        .unwrap();
    s
}

/// Checks a registry is asked in practice: the card numbers with and without the branch, the right
/// and a wrong birth date, on days inside, before and after each period; My Number cards; unknowns.
fn checks_for(periods: &[Qualification]) -> Vec<CheckRequest> {
    let mut out = Vec::new();
    for (i, q) in periods.iter().enumerate() {
        let mut days = vec![q.acquired_on, q.acquired_on.pred_opt().unwrap(), d(TODAY)];
        if let Some(l) = q.lost_on {
            days.push(l);
        }
        let key = InsuranceCardKey::of(q);
        let mut anybranch = key.clone();
        anybranch.branch = None;
        for (n, service_date) in days.into_iter().enumerate() {
            let card = if (i + n) % 2 == 0 { &key } else { &anybranch };
            out.push(CheckRequest {
                subject: CheckSubject::InsuranceCard {
                    card: card.clone(),
                    birth_date: q.birth_date,
                },
                service_date,
            });
            if n == 0 {
                out.push(CheckRequest {
                    subject: CheckSubject::InsuranceCard {
                        card: card.clone(),
                        birth_date: q.birth_date.succ_opt().unwrap(),
                    },
                    service_date,
                });
            }
            if let Some(c) = &q.card_id {
                out.push(CheckRequest {
                    subject: CheckSubject::Card { card_id: c.clone() },
                    service_date,
                });
            }
        }
    }
    out.push(CheckRequest {
        subject: CheckSubject::Card {
            card_id: CardId::parse("NOSUCHCARD").unwrap(),
        },
        service_date: d(TODAY),
    });
    out
}

// ---------------------------------------------------------------------------------------------
// The cases

fn checks_answer_as_the_embedded_store(f: &Fixture) {
    let mut periods = synth(400, 11);
    // Namesakes: another person under the same card numbers and birth date, and a My Number card
    // registered to two people (the registry's mistakes a check must answer `multiple` to).
    let mut twin = periods[0].clone();
    twin.person_id = PersonId::parse("P8888888").unwrap();
    twin.card_id = periods.iter().find_map(|q| q.card_id.clone());
    periods.push(twin);
    let reference_dir = TestDir::new("store-reference");
    let reference = EmbeddedStore::open(&reference_dir.join("data")).unwrap();
    for chunk in periods.chunks(97) {
        reference.import(chunk).unwrap();
        f.store.import(chunk).unwrap();
    }
    let checks = checks_for(&periods);
    assert!(checks.len() > 1_500, "{} checks", checks.len());
    let mut seen = BTreeMap::new();
    for c in &checks {
        let want = reference.check(c).unwrap();
        let got = f.store.check(c).unwrap();
        assert_eq!(got, want, "{c:?}");
        // The awaitable check (PostgreSQL's, for the link's task) answers the same.
        if let Some(answer) = f.store.check_future(c.clone()) {
            let got = onshi_tests::runtime().block_on(answer).unwrap();
            assert_eq!(got, want, "check_future: {c:?}");
            *seen.entry("(future)").or_insert(0) += 1;
        }
        *seen.entry(want.validity.as_str()).or_insert(0) += 1;
    }
    if f.store.kind() == "postgresql" {
        assert!(
            seen.contains_key("(future)"),
            "PostgreSQL's checks are awaitable"
        );
    }
    // All at once: PostgreSQL batches the insurance-card checks that wait together into one
    // query; each still gets its own answer, the one the embedded store gives.
    let futures: Vec<_> = checks
        .iter()
        .filter_map(|c| f.store.check_future(c.clone()).map(|fut| (c, fut)))
        .collect();
    if !futures.is_empty() {
        let rt = onshi_tests::runtime();
        let answers = rt.block_on(async {
            let handles: Vec<_> = futures
                .into_iter()
                .map(|(c, fut)| (c, tokio::spawn(fut)))
                .collect();
            let mut out = Vec::new();
            for (c, h) in handles {
                out.push((c, h.await.unwrap().unwrap()));
            }
            out
        });
        assert_eq!(answers.len(), checks.len());
        for (c, got) in answers {
            assert_eq!(got, reference.check(c).unwrap(), "concurrent: {c:?}");
        }
    }
    // The comparison covered every kind of answer, not just `valid`.
    for v in ["valid", "invalid", "not_found", "multiple"] {
        assert!(seen.contains_key(v), "no {v} answer among {seen:?}");
    }
    for q in periods.iter().step_by(37) {
        let mut want = reference.periods_of_person(&q.person_id).unwrap();
        let mut got = f.store.periods_of_person(&q.person_id).unwrap();
        want.sort_by_key(|q| (q.acquired_on, q.insurer_number.as_str().to_string()));
        got.sort_by_key(|q| (q.acquired_on, q.insurer_number.as_str().to_string()));
        assert_eq!(got, want);
    }
    assert!(
        f.store
            .periods_of_person(&PersonId::parse("P9999999").unwrap())
            .unwrap()
            .is_empty()
    );
}

fn import_counts_and_the_change_feed(f: &Fixture) {
    let s = &f.store;
    assert_eq!(s.period_count().unwrap(), 0);
    assert_eq!(s.registry_cursor().unwrap(), 0);
    assert!(s.registry_changes(0, 10).unwrap().is_empty());
    let periods = synth(60, 3);
    let n = periods.len() as u64;
    let counts = s.import(&periods).unwrap();
    assert_eq!(
        counts,
        ImportCounts {
            added: n,
            updated: 0,
            unchanged: 0
        }
    );
    assert_eq!(s.period_count().unwrap(), n);
    let cursor = s.registry_cursor().unwrap();
    let feed = s.registry_changes(0, usize::MAX).unwrap();
    assert_eq!(feed.len() as u64, n);
    assert_eq!(feed.last().unwrap().seq, cursor);
    assert_eq!(
        feed.iter().map(|c| &c.qualification).collect::<Vec<_>>(),
        periods.iter().collect::<Vec<_>>(),
        "the feed is in the order of the import"
    );
    // Paging through the feed gives the same.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = s.registry_changes(after, 7).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        after = page.last().unwrap().seq;
        paged.extend(page);
    }
    assert_eq!(paged, feed);

    // The same again: nothing changes, nothing on the feed.
    let again = s.import(&periods).unwrap();
    assert_eq!(
        again,
        ImportCounts {
            added: 0,
            updated: 0,
            unchanged: n
        }
    );
    assert_eq!(s.registry_cursor().unwrap(), cursor);

    // One period lost, one line repeated in the chunk (changed, then identical), one new person.
    let mut lost = periods[0].clone();
    lost.lost_on = Some(d("2025-12-31"));
    let mut moved = periods[1].clone();
    moved.address = "東京都千代田区霞が関1-2-2".into();
    let mut new = periods[2].clone();
    new.person_id = PersonId::parse("P7654321").unwrap();
    let chunk = vec![lost.clone(), moved.clone(), moved.clone(), new.clone()];
    let counts = s.import(&chunk).unwrap();
    assert_eq!(
        counts,
        ImportCounts {
            added: 1,
            updated: 2,
            unchanged: 1
        }
    );
    assert_eq!(s.period_count().unwrap(), n + 1);
    let changes = s.registry_changes(cursor, 100).unwrap();
    assert_eq!(
        changes
            .iter()
            .map(|c| c.qualification.clone())
            .collect::<Vec<_>>(),
        vec![lost.clone(), moved, new.clone()]
    );
    assert_eq!(s.registry_cursor().unwrap(), changes.last().unwrap().seq);
    // What a check sees now.
    let theirs = s.periods_of_person(&lost.person_id).unwrap();
    assert!(theirs.contains(&lost) && !theirs.contains(&periods[0]));
    let mut all = Vec::new();
    s.for_each_period(&mut |q| {
        all.push(q);
        Ok(())
    })
    .unwrap();
    assert_eq!(all.len() as u64, n + 1);
    assert!(all.contains(&new) && all.contains(&lost));
    // An empty chunk does nothing.
    assert_eq!(s.import(&[]).unwrap(), ImportCounts::default());
}

fn merge_is_a_join(f: &Fixture) {
    let s = &f.store;
    let a = facility("1310000001");
    let r = provisional(&a, 1, "1980-04-01", "2026-01-05");
    let settled_r = settled(&r, SettlementKind::InsurerUnknown, "nobody found");
    let mut closed = settled_r.clone();
    closed.close(Actor::Edge).unwrap();

    assert_eq!(s.record(&a, r.id()).unwrap(), None);
    assert_eq!(s.merge(&a, vec![r.clone()]).unwrap(), vec![r.clone()]);
    assert_eq!(
        s.merge(&a, vec![settled_r.clone()]).unwrap(),
        vec![settled_r.clone()]
    );
    // The older version changes nothing (idempotent, never goes back).
    assert_eq!(
        s.merge(&a, vec![r.clone()]).unwrap(),
        vec![settled_r.clone()]
    );
    assert_eq!(s.record(&a, r.id()).unwrap(), Some(settled_r.clone()));
    assert_eq!(s.journal(&a).unwrap().len(), 1);

    // Commutative: the settlement and the close in both orders, on two facilities' records.
    let (b, c) = (facility("1310000002"), facility("1310000003"));
    let rb = provisional(&b, 1, "1980-04-01", "2026-01-05");
    let rc = provisional(&c, 1, "1980-04-01", "2026-01-05");
    let sb = settled(&rb, SettlementKind::InsurerUnknown, "x");
    let mut cb = sb.clone();
    cb.close(Actor::Edge).unwrap();
    let sc = settled(&rc, SettlementKind::InsurerUnknown, "x");
    let mut cc = sc.clone();
    cc.close(Actor::Edge).unwrap();
    // An edge that closed the item and a reconciler that set it aside meanwhile.
    let mut sb2 = sb.clone();
    sb2.quarantine_with(Actor::Reconciler, "duplicate").unwrap();
    let mut sc2 = sc.clone();
    sc2.quarantine_with(Actor::Reconciler, "duplicate").unwrap();
    s.merge(&b, vec![rb.clone(), cb.clone()]).unwrap();
    s.merge(&b, vec![sb2.clone()]).unwrap();
    s.merge(&c, vec![sc2.clone()]).unwrap();
    s.merge(&c, vec![cc.clone(), rc.clone()]).unwrap();
    let jb = s.record(&b, rb.id()).unwrap().unwrap();
    let jc = s.record(&c, rc.id()).unwrap().unwrap();
    let mut want = cb.clone();
    crdts::CvRDT::merge(&mut want, sb2);
    assert_eq!(jb, want);
    assert!(jb.quarantine().is_some() && jb.state() == RecordState::Closed);
    // The same facts in the other order (ids differ by facility only).
    assert_eq!(jc.settlement(), jb.settlement());
    assert_eq!(jc.quarantine(), jb.quarantine());
    assert_eq!(jc.state(), jb.state());

    // A batch with the same record twice answers each as it stands after it.
    let r2 = provisional(&a, 2, "1990-01-01", "2026-01-05");
    let s2 = settled(&r2, SettlementKind::Ambiguous, "two");
    let out = s
        .merge(&a, vec![s2.clone(), r2.clone(), r.clone()])
        .unwrap();
    assert_eq!(out, vec![s2.clone(), s2.clone(), settled_r.clone()]);
    let journal = s.journal(&a).unwrap();
    assert_eq!(journal.len(), 2);
    assert_eq!(journal.get(r2.id()), Some(&s2));
    // Other facilities' journals are their own.
    assert_eq!(s.journal(&b).unwrap().len(), 1);
    assert!(s.journal(&facility("1310000009")).unwrap().is_empty());
    assert!(s.merge(&a, vec![]).unwrap().is_empty());
}

fn update_settles_each_record_exactly_once_under_concurrency(f: &Fixture) {
    let a = facility("1311000001");
    let records: Vec<JournalRecord> = (1..=40)
        .map(|n| provisional(&a, n, "1975-05-05", "2026-01-05"))
        .collect();
    let ids: Vec<RecordId> = records.iter().map(|r| r.id().clone()).collect();
    f.store.merge(&a, records).unwrap();
    let cursor = f.store.revision_cursor(&a).unwrap();
    // Four deciders (two per store where there are two), each wanting to settle every record,
    // in its own order.
    let sharers = f.sharers();
    let threads: Vec<_> = (0..4)
        .map(|n| {
            let store = sharers[n % sharers.len()].clone();
            let mut order = ids.clone();
            order.rotate_left(n * 10);
            if n % 2 == 1 {
                order.reverse();
            }
            let fac = a.clone();
            std::thread::spawn(move || {
                let who = format!("decider {n}");
                let mut written = Vec::new();
                // Several calls of a few records, as the sync drains them.
                for part in order.chunks(7) {
                    let reader = store.clone();
                    let mut decide = |current: &JournalRecord| -> Option<JournalRecord> {
                        if current.settlement().is_some() {
                            return None;
                        }
                        // A decision reads the registry while the rows are locked.
                        reader
                            .periods_of_person(&PersonId::parse("P0000001").unwrap())
                            .unwrap();
                        Some(settled(current, SettlementKind::InsurerUnknown, &who))
                    };
                    written.extend(store.update(&fac, part, true, &mut decide).unwrap());
                }
                (who, written)
            })
        })
        .collect();
    let mut by_id: BTreeMap<RecordId, String> = BTreeMap::new();
    for th in threads {
        let (who, written) = th.join().unwrap();
        for r in written {
            assert_eq!(r.settlement().unwrap().explanation, who);
            let before = by_id.insert(r.id().clone(), who.clone());
            assert_eq!(before, None, "{} settled twice", r.id());
        }
    }
    assert_eq!(by_id.len(), ids.len(), "every record settled once");
    // The store holds what each winner wrote.
    for (id, who) in &by_id {
        let stored = f.store.record(&a, id).unwrap().unwrap();
        assert_eq!(&stored.settlement().unwrap().explanation, who);
    }
    // Each settlement was announced once.
    let (revised, _) = f.store.revisions(&a, cursor).unwrap();
    let announced: Vec<&RecordId> = revised.iter().map(|r| r.id()).collect();
    let distinct: HashSet<&RecordId> = announced.iter().copied().collect();
    assert_eq!(announced.len(), ids.len());
    assert_eq!(distinct.len(), ids.len());
    // Unknown ids are skipped.
    let ghost = RecordId::new(a.clone(), 9, 9);
    let mut never = |_: &JournalRecord| -> Option<JournalRecord> { panic!("no record to decide") };
    assert!(
        f.store
            .update(&a, &[ghost], true, &mut never)
            .unwrap()
            .is_empty()
    );
}

fn the_revision_feed_carries_announced_records_only(f: &Fixture) {
    let s = &f.store;
    let (a, b) = (facility("1330000001"), facility("1330000002"));
    let r1 = provisional(&a, 1, "1960-01-01", "2026-01-05");
    let r2 = provisional(&a, 2, "1960-01-01", "2026-01-05");
    let rb = provisional(&b, 1, "1960-01-01", "2026-01-05");
    s.merge(&a, vec![r1.clone(), r2.clone()]).unwrap();
    s.merge(&b, vec![rb.clone()]).unwrap();
    let start = s.revision_cursor(&a).unwrap();
    let start_b = s.revision_cursor(&b).unwrap();
    let mut settle = |c: &JournalRecord| Some(settled(c, SettlementKind::InsurerUnknown, "x"));
    // Not announced: not on the feed.
    let w = s
        .update(&a, &[r1.id().clone()], false, &mut settle)
        .unwrap();
    assert_eq!(w.len(), 1);
    assert_eq!(s.revisions(&a, start).unwrap(), (vec![], start));
    // Announced: on the feed, with the record as it stands.
    let w = s.update(&a, &[r2.id().clone()], true, &mut settle).unwrap();
    let (got, cursor) = s.revisions(&a, start).unwrap();
    assert_eq!(got, w);
    assert!(cursor > start);
    assert_eq!(s.revision_cursor(&a).unwrap(), cursor);
    assert_eq!(s.revisions(&a, cursor).unwrap(), (vec![], cursor));
    // Another facility's feed does not carry it.
    let (theirs, _) = s.revisions(&b, start_b).unwrap();
    assert!(theirs.is_empty(), "{theirs:?}");
    // A later change is sent again, as the record now stands.
    let mut again = |c: &JournalRecord| {
        let mut r = c.clone();
        r.quarantine_with(Actor::Reconciler, "duplicate").ok()?;
        Some(r)
    };
    s.update(&a, &[r2.id().clone()], true, &mut again).unwrap();
    let (got, next) = s.revisions(&a, cursor).unwrap();
    assert_eq!(got.len(), 1);
    assert!(got[0].quarantine().is_some());
    assert!(next > cursor);
}

fn revisit_candidates_are_the_open_questions(f: &Fixture) {
    let s = &f.store;
    let (a, b) = (facility("1340000001"), facility("1340000002"));
    let unknown = settled(
        &provisional(&a, 1, "1970-07-07", "2026-01-05"),
        SettlementKind::InsurerUnknown,
        "x",
    );
    let ambiguous = settled(
        &provisional(&b, 1, "1970-07-07", "2026-01-10"),
        SettlementKind::Ambiguous,
        "x",
    );
    let old = settled(
        &provisional(&a, 2, "1970-07-07", "2025-06-01"),
        SettlementKind::InsurerUnknown,
        "x",
    );
    let confirmed = settled(
        &provisional(&a, 3, "1970-07-07", "2026-01-05"),
        SettlementKind::Confirmed,
        "x",
    );
    let other_birth = settled(
        &provisional(&a, 4, "1971-07-07", "2026-01-05"),
        SettlementKind::InsurerUnknown,
        "x",
    );
    let unsettled = provisional(&a, 5, "1970-07-07", "2026-01-05");
    let mut set_aside = settled(
        &provisional(&a, 6, "1970-07-07", "2026-01-05"),
        SettlementKind::InsurerUnknown,
        "x",
    );
    set_aside.quarantine_with(Actor::Edge, "duplicate").unwrap();
    s.merge(
        &a,
        vec![
            unknown.clone(),
            old,
            confirmed,
            other_birth,
            unsettled,
            set_aside,
        ],
    )
    .unwrap();
    s.merge(&b, vec![ambiguous.clone()]).unwrap();
    let got: HashSet<RevisitCandidate> = s
        .revisit_candidates(&[d("1970-07-07")], d("2025-10-01"))
        .unwrap()
        .into_iter()
        .collect();
    let want: HashSet<RevisitCandidate> = [
        RevisitCandidate {
            facility: a.clone(),
            record: unknown.id().clone(),
        },
        RevisitCandidate {
            facility: b.clone(),
            record: ambiguous.id().clone(),
        },
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
    // Set aside by an update: no longer a candidate (the index follows the record).
    let mut confirm = |c: &JournalRecord| {
        let mut r = c.clone();
        r.quarantine_with(Actor::Reconciler, "duplicate").ok()?;
        Some(r)
    };
    s.update(&a, &[unknown.id().clone()], false, &mut confirm)
        .unwrap();
    let got = s
        .revisit_candidates(&[d("1970-07-07"), d("1999-01-01")], d("2025-10-01"))
        .unwrap();
    assert_eq!(
        got,
        vec![RevisitCandidate {
            facility: b.clone(),
            record: ambiguous.id().clone(),
        }]
    );
    assert!(
        s.revisit_candidates(&[], d("2025-10-01"))
            .unwrap()
            .is_empty()
    );
}

fn outage_requests_and_grants_are_kept(f: &Fixture) {
    let s = &f.store;
    let a = facility("1411000001");
    let b = facility("2710000001");
    assert!(s.outage_requests().unwrap().is_empty());
    let r1 = OutageRequest {
        facility: a.clone(),
        at: t("2026-01-05T09:00:00Z"),
        active: true,
        reason: "回線断".into(),
    };
    let r2 = OutageRequest {
        facility: b.clone(),
        at: t("2026-01-05T08:00:00Z"),
        active: true,
        reason: "停電".into(),
    };
    let r3 = OutageRequest {
        facility: a.clone(),
        at: t("2026-01-05T11:00:00Z"),
        active: false,
        reason: String::new(),
    };
    for r in [&r1, &r2, &r3] {
        s.record_outage_request(r).unwrap();
    }
    assert_eq!(
        s.outage_requests().unwrap(),
        vec![r2.clone(), r1.clone(), r3.clone()],
        "oldest first"
    );

    assert!(s.grants().unwrap().is_empty());
    let by_facility = Grant {
        scope: GrantScope::Facility(a.clone()),
        since: t("2026-01-05T09:30:00Z"),
        until: t("2026-01-12T09:30:00Z"),
        ended_at: None,
    };
    let by_prefecture = Grant {
        scope: GrantScope::Prefecture("27".into()),
        since: t("2026-01-05T09:00:00Z"),
        until: t("2026-01-12T09:00:00Z"),
        ended_at: None,
    };
    s.grant(&by_facility).unwrap();
    s.grant(&by_prefecture).unwrap();
    assert_eq!(
        s.grants().unwrap(),
        vec![by_prefecture.clone(), by_facility.clone()]
    );
    let noon = t("2026-01-06T12:00:00Z");
    // Ending one scope ends its active grants only, and keeps them on record.
    assert_eq!(
        s.end_grants(&GrantScope::Facility(a.clone()), noon)
            .unwrap(),
        1
    );
    assert_eq!(
        s.end_grants(&GrantScope::Facility(a.clone()), noon)
            .unwrap(),
        0
    );
    assert_eq!(
        s.end_grants(&GrantScope::Facility(b.clone()), noon)
            .unwrap(),
        0
    );
    let grants = s.grants().unwrap();
    let mut ended = by_facility.clone();
    ended.ended_at = Some(noon);
    assert_eq!(grants, vec![by_prefecture.clone(), ended.clone()]);
    assert!(!ended.active_at(t("2026-01-06T13:00:00Z")));
    assert!(grants[0].active_at(t("2026-01-06T13:00:00Z")) && grants[0].scope.covers(&b));
    // A new grant for the same scope: the ended one stays on record.
    let again = Grant {
        scope: GrantScope::Facility(a.clone()),
        since: t("2026-01-07T00:00:00Z"),
        until: t("2026-01-08T00:00:00Z"),
        ended_at: None,
    };
    s.grant(&again).unwrap();
    assert_eq!(s.grants().unwrap(), vec![by_prefecture, ended, again]);
}

fn facilities_and_their_version(f: &Fixture) {
    let s = &f.store;
    let a = facility("1431000001");
    let b = facility("1431000002");
    assert!(s.facilities().unwrap().is_empty());
    let v0 = s.facilities_version().unwrap();
    let ea = FacilityEntry {
        code: a.clone(),
        fingerprint: "aa".repeat(32),
        added_at: t("2026-01-05T09:00:00Z"),
        revoked_at: None,
    };
    let eb = FacilityEntry {
        code: b.clone(),
        fingerprint: "bb".repeat(32),
        added_at: t("2026-01-05T09:01:00Z"),
        revoked_at: None,
    };
    s.put_facility(&eb).unwrap();
    s.put_facility(&ea).unwrap();
    let v1 = s.facilities_version().unwrap();
    assert!(v1 > v0);
    assert_eq!(s.facilities().unwrap(), vec![ea.clone(), eb.clone()]);
    // Revoked: on record with its time, refused from then on; once.
    let at = t("2026-01-06T00:00:00Z");
    assert!(s.revoke_facility(&a, at).unwrap());
    let v2 = s.facilities_version().unwrap();
    assert!(v2 > v1);
    assert!(!s.revoke_facility(&a, at).unwrap());
    assert!(!s.revoke_facility(&facility("1431000009"), at).unwrap());
    assert_eq!(s.facilities_version().unwrap(), v2);
    let list = s.facilities().unwrap();
    assert_eq!(list[0].revoked_at, Some(at));
    assert!(!list[0].is_active() && list[1].is_active());
    // A re-issued certificate replaces the entry and is active again.
    let reissued = FacilityEntry {
        fingerprint: "cc".repeat(32),
        added_at: t("2026-01-07T00:00:00Z"),
        ..ea.clone()
    };
    s.put_facility(&reissued).unwrap();
    assert!(s.facilities_version().unwrap() > v2);
    assert_eq!(s.facilities().unwrap(), vec![reissued, eb]);
}

// ---------------------------------------------------------------------------------------------
// Durability and the schema (each store as it can)

/// Writes a little of everything.
fn write_some(s: &dyn CentralStore, periods: &[Qualification]) -> JournalRecord {
    let a = facility("1441000001");
    s.import(periods).unwrap();
    let r = settled(
        &provisional(&a, 1, "1980-01-01", "2026-01-05"),
        SettlementKind::InsurerUnknown,
        "x",
    );
    s.merge(&a, vec![r.clone()]).unwrap();
    s.grant(&Grant {
        scope: GrantScope::Prefecture("13".into()),
        since: t("2026-01-05T00:00:00Z"),
        until: t("2026-01-12T00:00:00Z"),
        ended_at: None,
    })
    .unwrap();
    s.audit_receive(
        &a,
        &report(3, &audit_links(3, 3)),
        t("2026-01-05T00:00:00Z"),
    )
    .unwrap();
    r
}

fn assert_still_there(s: &dyn CentralStore, periods: &[Qualification], r: &JournalRecord) {
    let a = facility("1441000001");
    assert_eq!(s.audit_links(&a, 0, 10).unwrap(), audit_links(3, 3));
    assert_eq!(s.period_count().unwrap(), periods.len() as u64);
    assert_eq!(s.record(&a, r.id()).unwrap().as_ref(), Some(r));
    assert_eq!(s.grants().unwrap().len(), 1);
    assert!(
        s.periods_of_person(&periods[0].person_id)
            .unwrap()
            .contains(&periods[0])
    );
}

#[test]
fn embedded_writes_survive_a_reopen() {
    let dir = TestDir::new("store-durable-embedded");
    let periods = synth(20, 5);
    let r = {
        let s = EmbeddedStore::open(&dir.join("data")).unwrap();
        write_some(&s, &periods)
    };
    let s = EmbeddedStore::open(&dir.join("data")).unwrap();
    assert_still_there(&s, &periods, &r);
}

#[test]
fn postgresql_writes_survive_a_crash_of_the_server() {
    let dir = TestDir::new("store-durable-pg");
    let mut server = PgServer::start(&dir);
    let config = pg::config_from_url(server.url(), None).unwrap();
    pg::migrate(&config).unwrap();
    let store = PgStore::connect(&config).unwrap();
    let periods = synth(20, 5);
    let r = write_some(&store, &periods);
    server.kill();
    // Down: a clear error, not a hang or a panic.
    let e = store.period_count().unwrap_err();
    assert!(matches!(e, CentralError::Database(_)), "{e}");
    server.start_again();
    // The same store reconnects; a new one sees the same.
    onshi_tests::wait_until(
        std::time::Duration::from_secs(20),
        std::time::Duration::from_millis(50),
        || store.period_count().ok(),
    )
    .expect("the store reconnects");
    assert_still_there(&store, &periods, &r);
    assert_still_there(&PgStore::connect(&config).unwrap(), &periods, &r);
}

#[test]
fn postgresql_schema_is_checked_at_connect_and_migrated_once() {
    let server = shared_server();
    let config = fresh_database(&server.pg, "conf_schema");
    // No schema: refused, naming the command that makes it.
    let e = PgStore::connect(&config).unwrap_err();
    assert!(matches!(e, CentralError::Schema(_)), "{e}");
    assert!(e.to_string().contains("onshi-reconciler migrate"), "{e}");
    let first = pg::migrate(&config).unwrap();
    assert_eq!(
        first.applied.iter().map(|m| m.version).collect::<Vec<_>>(),
        (1..=pg::known_version()).collect::<Vec<_>>()
    );
    // Idempotent.
    assert!(pg::migrate(&config).unwrap().applied.is_empty());
    let store = PgStore::connect(&config).unwrap();
    assert_eq!(store.schema_version(), pg::known_version());
    assert_eq!(store.kind(), "postgresql");
    // A schema newer than this binary knows: refused by connect and by migrate.
    let newer = pg::known_version() + 1;
    let sql = format!("INSERT INTO schema_migrations (version, name) VALUES ({newer}, 'future')");
    let url = {
        let mut u = server.pg.url().rsplit_once('/').unwrap().0.to_string();
        u.push_str("/conf_schema");
        u
    };
    runtime().block_on(async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        client.batch_execute(&sql).await.unwrap();
        drop(client);
        let _ = task.await;
    });
    let e = PgStore::connect(&config).unwrap_err();
    assert!(
        e.to_string().contains(&format!("version {newer}, newer"))
            && e.to_string().contains("onshi-reconciler migrate"),
        "{e}"
    );
    let e = pg::migrate(&config).unwrap_err();
    assert!(e.to_string().contains("newer"), "{e}");
    // An unreachable database is a database error naming the cause.
    let mut nowhere = config.clone();
    nowhere.port(1);
    let e = PgStore::connect(&nowhere).unwrap_err();
    assert!(matches!(e, CentralError::Database(_)), "{e}");
}
