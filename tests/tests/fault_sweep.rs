//! The fault harness (issue 4, item 5): an edge talks to the reconciler through a seeded UDP relay;
//! while a seeded workload records provisional records and checks, a seeded fault schedule changes
//! the link's loss, duplication, reordering and delay, cuts it, and SIGKILLs and restarts the edge
//! (same data) and the reconciler (same port). Then everything heals, the edge syncs, and:
//! every provisional record the edge acknowledged (201) is in its queue, settled; the reconciler
//! settled it exactly once (never two "provisional record settled" log lines across all its lives;
//! none only when a kill fell between the settlement's fsync and its line) and holds it exactly
//! once in its store, settled; every deferred check the edge acknowledged is completed.
//!
//! A short sweep by default; `FAULT_SEEDS=N` runs seeds 1..=N, `FAULT_SEED=S` reruns one seed.
//! Every assertion message names the seed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use onshi_sync::store::{SledStore, Store};
use onshi_tests::relay::{Impairment, Relay};
use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, Http, Pki, Reconciler, Registry, TODAY, TestDir, card_check,
    shift_date, wait_until,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

/// How long the fault schedule runs per seed.
const SCHEDULE: Duration = Duration::from_secs(10);
const DEFAULT_SEEDS: u64 = 3;

/// What the workload was told by the edge (acknowledged only: HTTP 200/201).
#[derive(Debug, Default)]
struct Acked {
    provisional: Vec<String>,
    deferred_checks: Vec<String>,
    answered_checks: usize,
    unacknowledged: usize,
}

#[derive(Debug, Default)]
struct Outcome {
    records: usize,
    checks: usize,
    edge_restarts: usize,
    reconciler_restarts: usize,
    cuts: usize,
}

fn seeds() -> Vec<u64> {
    if let Some(s) = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![s];
    }
    let n = std::env::var("FAULT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEEDS);
    (1..=n).collect()
}

#[test]
fn acknowledged_records_reach_the_reconciler_exactly_once_and_come_back_settled_under_faults() {
    let _serial = onshi_tests::serial();
    let shared = TestDir::new("fault-sweep-registry");
    let registry = Registry::standard(&shared);
    let started = Instant::now();
    let mut total = Outcome::default();
    let seeds = seeds();
    for &seed in &seeds {
        let t0 = Instant::now();
        let o = run_seed(seed, &registry);
        eprintln!(
            "seed {seed}: {} records and {} deferred checks checked; {} edge and {} reconciler restarts, {} cuts; {:?}",
            o.records,
            o.checks,
            o.edge_restarts,
            o.reconciler_restarts,
            o.cuts,
            t0.elapsed()
        );
        total.records += o.records;
        total.checks += o.checks;
        total.edge_restarts += o.edge_restarts;
        total.reconciler_restarts += o.reconciler_restarts;
        total.cuts += o.cuts;
    }
    eprintln!(
        "fault sweep: {} seeds, {} provisional records and {} deferred checks checked, lost 0, duplicated 0; \
         {} edge and {} reconciler SIGKILLs, {} cuts; {:?}",
        seeds.len(),
        total.records,
        total.checks,
        total.edge_restarts,
        total.reconciler_restarts,
        total.cuts,
        started.elapsed()
    );
}

/// A random impairment: loss 0–30 %, some duplication, reordering and delay.
fn random_impairment(rng: &mut ChaCha8Rng) -> Impairment {
    let lo = rng.random_range(0..20u64);
    Impairment {
        drop: rng.random_range(0.0..0.3),
        duplicate: if rng.random_bool(0.5) {
            rng.random_range(0.0..0.2)
        } else {
            0.0
        },
        reorder: if rng.random_bool(0.5) {
            rng.random_range(0.0..0.3)
        } else {
            0.0
        },
        delay_ms: (lo, lo + rng.random_range(0..50u64)),
        cut: false,
        rate_bytes_per_s: 0,
    }
}

fn run_seed(seed: u64, registry: &Registry) -> Outcome {
    let t = TestDir::new(&format!("fault-{seed}"));
    let pki = Pki::init(&t.join("pki"), &[FACILITY_A]);
    let rec_data = t.join("reconciler");
    registry.import(&rec_data);
    let mut rec = Some(Reconciler::start(&t, &rec_data, &pki));
    let rec_addr = rec.as_ref().map(|r| r.addr).expect("reconciler");
    let relay = Relay::start(rec_addr, seed);
    let mut opts = EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, relay.addr());
    opts.deadline_ms = Some(500);
    opts.hold_ms = Some(300);
    let mut edge = Some(Edge::start(&t, opts));
    edge.as_ref().expect("edge").wait_online();

    // The workload, on its own thread, against whichever edge process is up.
    let people: Vec<Value> = registry.valid_people(0, 60).into_iter().cloned().collect();
    let current: Arc<Mutex<Option<Http>>> =
        Arc::new(Mutex::new(edge.as_ref().map(|e| e.http.clone())));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Acked::default()));
    let workload = {
        let (current, stop, acked) = (current.clone(), stop.clone(), acked.clone());
        std::thread::spawn(move || workload(seed, &people, &current, &stop, &acked))
    };

    // The fault schedule.
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0xfa17);
    let mut outcome = Outcome::default();
    let begin = Instant::now();
    while begin.elapsed() < SCHEDULE {
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1200)));
        match rng.random_range(0..100u32) {
            0..40 => relay.set(random_impairment(&mut rng)),
            40..55 => {
                // Cut, or heal a cut.
                let cut = !relay.impairment().cut;
                outcome.cuts += usize::from(cut);
                relay.set_cut(cut);
            }
            55..75 => {
                outcome.edge_restarts += 1;
                let mut e = edge.take().expect("edge");
                *current.lock().unwrap_or_else(|p| p.into_inner()) = None;
                e.kill9();
                std::thread::sleep(Duration::from_millis(rng.random_range(0..500)));
                let e = e.restart();
                *current.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.http.clone());
                edge = Some(e);
            }
            75..90 => {
                outcome.reconciler_restarts += 1;
                let mut r = rec.take().expect("reconciler");
                r.kill9();
                std::thread::sleep(Duration::from_millis(rng.random_range(0..500)));
                rec = Some(r.restart(&t));
            }
            _ => relay.set(Impairment::clean()),
        }
    }
    stop.store(true, Ordering::SeqCst);
    workload.join().expect("the workload thread");
    let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|p| p.into_inner()));
    assert!(
        !acked.provisional.is_empty(),
        "seed {seed}: the workload recorded nothing: {acked:?}"
    );

    // Heal, and sync until synced.
    relay.set(Impairment::clean());
    let edge = edge.expect("edge");
    let rec = rec.expect("reconciler");
    let mut last = Value::Null;
    let synced = wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
        let a = edge
            .http
            .try_post_json("/v1/sync-now", &json!({"timeout_ms": 5000}))
            .ok()?;
        last = a.json;
        (a.status == 200 && last["synced"] == true).then_some(())
    });
    assert!(
        synced.is_some(),
        "seed {seed}: never synced after healing; last answer {last}; status {}",
        edge.status()
    );

    // Every acknowledged provisional record is back at the edge, settled.
    let mut missing: Vec<String> = Vec::new();
    let settled = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let q = edge.queue();
        let items: BTreeMap<&str, &Value> = q["items"]
            .as_array()?
            .iter()
            .filter_map(|i| Some((i["id"].as_str()?, i)))
            .collect();
        missing = acked
            .provisional
            .iter()
            .filter(|id| {
                !items
                    .get(id.as_str())
                    .is_some_and(|i| i["state"] == "settled" && i["settlement"]["kind"].is_string())
            })
            .cloned()
            .collect();
        missing.is_empty().then_some(())
    });
    assert!(
        settled.is_some(),
        "seed {seed}: {} of {} acknowledged provisional records are not settled at the edge: {:?}\nqueue: {}",
        missing.len(),
        acked.provisional.len(),
        missing,
        edge.queue()
    );
    let queue = edge.queue();
    let in_queue = |id: &str| {
        queue["items"]
            .as_array()
            .map_or(0, |items| items.iter().filter(|i| i["id"] == id).count())
    };
    for id in &acked.provisional {
        assert_eq!(
            in_queue(id),
            1,
            "seed {seed}: {id} in the edge's queue once"
        );
    }

    // Every acknowledged deferred check completed.
    for id in &acked.deferred_checks {
        let deadline = Duration::from_secs(30);
        let r = wait_until(deadline, Duration::from_millis(100), || {
            let (code, v) = edge.get(&format!("/v1/checks/{id}"));
            (code == 200 && v["state"] == "completed").then_some(v)
        });
        assert!(
            r.is_some(),
            "seed {seed}: deferred check {id} never completed: {:?}",
            edge.get(&format!("/v1/checks/{id}"))
        );
    }

    // Settled exactly once at the reconciler, across all its lives (one appended log).
    let log = rec.proc.stderr();
    let mut settlements: BTreeMap<String, usize> = BTreeMap::new();
    for line in log
        .lines()
        .filter(|l| l.contains("provisional record settled"))
    {
        if let Some(id) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("record="))
        {
            *settlements.entry(id.to_string()).or_default() += 1;
        }
    }
    let twice: Vec<(&String, &usize)> = settlements.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "seed {seed}: records settled more than once at the reconciler: {twice:?}"
    );
    // The line is written once the settlement is on disk, so a SIGKILL between the fsync and the
    // write leaves a settled record without its line (seen once, seed 3, after 3 of 4 kills). A
    // record without a line must then be settled in the store (checked below) and the
    // reconciler must have been killed; two lines would be a second durable settlement.
    let mut unlogged = Vec::new();
    for id in &acked.provisional {
        match settlements.get(id) {
            Some(1) => {}
            None if outcome.reconciler_restarts > 0 => unlogged.push(id.clone()),
            other => panic!(
                "seed {seed}: {id} settled exactly once at the reconciler (log lines: {other:?})"
            ),
        }
    }

    // Stopped, the reconciler's store holds each record once, settled.
    drop(edge);
    let mut rec = rec;
    rec.kill9();
    let store = SledStore::open(&rec_data.join("registry"))
        .unwrap_or_else(|e| panic!("seed {seed}: opening the reconciler's store: {e}"));
    let tree = store
        .tree(&format!("journal.{FACILITY_A}"))
        .unwrap_or_else(|e| panic!("seed {seed}: the facility's journal: {e}"));
    let mut held: BTreeMap<String, usize> = BTreeMap::new();
    let mut settled_held: BTreeMap<String, bool> = BTreeMap::new();
    for kv in tree.scan_prefix(&[]) {
        let (k, v) =
            kv.unwrap_or_else(|e| panic!("seed {seed}: reading the reconciler's journal: {e}"));
        let r = onshi_sync::crdt::JournalRecord::from_bytes(&v)
            .unwrap_or_else(|e| panic!("seed {seed}: undecodable record: {e}"));
        let key = String::from_utf8_lossy(&k).into_owned();
        assert_eq!(
            r.id().to_string(),
            key,
            "seed {seed}: a record stored under another id"
        );
        *held.entry(r.id().to_string()).or_default() += 1;
        settled_held.insert(key, r.settlement().is_some());
    }
    if !unlogged.is_empty() {
        eprintln!(
            "seed {seed}: settled in the store without a log line (a kill after the fsync): {unlogged:?}"
        );
    }
    for id in &acked.provisional {
        assert_eq!(
            held.get(id),
            Some(&1),
            "seed {seed}: {id} held exactly once by the reconciler"
        );
        assert_eq!(
            settled_held.get(id),
            Some(&true),
            "seed {seed}: {id} settled in the reconciler's store"
        );
    }
    eprintln!(
        "seed {seed}: acknowledged {} provisional, {} deferred checks, {} answered online; {} requests unacknowledged; relay {:?}",
        acked.provisional.len(),
        acked.deferred_checks.len(),
        acked.answered_checks,
        acked.unacknowledged,
        relay.stats()
    );
    outcome.records = acked.provisional.len();
    outcome.checks = acked.deferred_checks.len();
    outcome
}

/// Posts provisional records and checks until `stop`, recording what the edge acknowledged.
fn workload(
    seed: u64,
    people: &[Value],
    current: &Mutex<Option<Http>>,
    stop: &AtomicBool,
    acked: &Mutex<Acked>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x3017_10ad);
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let Some(http) = current.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        n += 1;
        let q = &people[rng.random_range(0..people.len())];
        let provisional = rng.random_bool(0.6);
        let body = if provisional {
            let share = q["share_percent"].as_u64().unwrap_or(30);
            let declared_share = if rng.random_bool(0.7) {
                share
            } else {
                (share + 10).min(100)
            };
            let mut body = json!({
                "declared": {"name": q["name"], "name_kana": q["name_kana"], "birth_date": q["birth_date"], "sex": q["sex"],
                             "insurer_name": q["insurer_name"], "share_percent": declared_share},
                "service_date": TODAY,
                "total_fee_yen": rng.random_range(500..50_000u64),
            });
            if rng.random_bool(0.5) {
                body["person_id"] = q["person_id"].clone();
            }
            body
        } else {
            card_check(q, &shift_date(TODAY, -(rng.random_range(0..3i64))))
        };
        let path = if provisional {
            "/v1/provisional"
        } else {
            "/v1/checks"
        };
        let answer = http.try_post_json(path, &body);
        let mut a = acked.lock().unwrap_or_else(|p| p.into_inner());
        match answer {
            Ok(r) if provisional && r.status == 201 => {
                let id = r.json["record_id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("seed {seed}: 201 without a record_id: {}", r.text));
                a.provisional.push(id.to_string());
            }
            Ok(r) if !provisional && r.status == 200 => {
                let id = r.json["check_id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("seed {seed}: 200 without a check_id: {}", r.text));
                if r.json["state"] == "deferred" {
                    a.deferred_checks.push(id.to_string());
                } else {
                    a.answered_checks += 1;
                }
            }
            Ok(r) if r.status >= 500 => a.unacknowledged += 1,
            Ok(r) => panic!(
                "seed {seed}: request {n} to {path} refused with {}: {}\n{body}",
                r.status, r.text
            ),
            Err(_) => a.unacknowledged += 1,
        }
        drop(a);
        std::thread::sleep(Duration::from_millis(rng.random_range(10..60)));
    }
}
