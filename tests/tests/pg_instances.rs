//! Several `onshi-reconciler serve` processes on one PostgreSQL database (issue 16, items 3 and 7),
//! as operators run them and as a facility sees them:
//! - one edge with both addresses records 2,000 provisional records while no reconciler runs;
//!   both start, the drain begins, and the instance serving the edge is SIGKILLed mid-drain: the
//!   edge is online again, on the other instance, within 5 s of the kill; every record reaches
//!   the edge settled; the database holds each record once, settled once; the two instances'
//!   logs never say one record was settled twice;
//! - grants of central search on both instances at once: a facility's own outage declaration
//!   opens nothing; `outage grant --facility` opens it on both instances, `--prefecture` for the
//!   facilities of that prefecture (and no other) on both, `outage end` closes it on both — seen
//!   through each facility's edge (each served by a different instance) and by asking each
//!   instance directly over the facility's own link.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use onshi_model::FacilityCode;
use onshi_sync::crdt::{JournalRecord, RecordFacts};
use onshi_sync::link::{LinkClient, LinkSettings, LinkState};
use onshi_sync::wire::{Request, Response};
use onshi_tests::pg::PgServer;
use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, FACILITY_B, Pki, Reconciler, Registry, Store, TODAY, TestDir,
    card_check, runtime, wait_until,
};
use serde_json::{Value, json};

/// Issue 16: with two instances and the serving one SIGKILLed, online again within 5 s.
const BACK_ONLINE_WITHIN: Duration = Duration::from_secs(5);

/// Provisional records made in the outage (issue 16: "mid-drain of 2,000 provisional records").
const RECORDS: usize = 2_000;

/// A medical facility in Osaka (prefecture 27): outside a grant for Tokyo (13).
const FACILITY_OSAKA: &str = "2711234567";

/// A migrated PostgreSQL database holding the standard registry, and a PKI for `facilities`.
fn centre(t: &TestDir, facilities: &[&str]) -> (PgServer, Store, Pki, Registry) {
    let pg = PgServer::start(t);
    let store = Store::postgres(&pg, t.path());
    store.migrate();
    let registry = Registry::standard(t);
    registry.import_into(&store);
    let pki = Pki::init(&t.join("pki"), facilities);
    (pg, store, pki, registry)
}

/// Every record id in a "provisional record settled" line of `log`, with how often.
fn settled_lines(log: &str, into: &mut BTreeMap<String, usize>) {
    for line in log
        .lines()
        .filter(|l| l.contains("provisional record settled"))
    {
        let id = line
            .split_once("record=")
            .map(|(_, rest)| rest.split_whitespace().next().unwrap_or_default())
            .unwrap_or_else(|| panic!("a settled line without its record: {line}"));
        *into.entry(id.to_string()).or_default() += 1;
    }
}

/// The facility's provisional records as PostgreSQL holds them: (record id, record) per row.
fn provisional_rows(pg: &PgServer, facility: &str) -> Vec<(String, JournalRecord)> {
    runtime().block_on(async {
        let pool = pg.pool();
        let c = pool.get().await.expect("a connection");
        c.query(
            "SELECT record_id, record FROM journal_records WHERE facility = $1",
            &[&facility],
        )
        .await
        .expect("reading the journal")
        .iter()
        .map(|row| {
            let id: String = row.get(0);
            let rec = JournalRecord::from_bytes(row.get(1))
                .unwrap_or_else(|e| panic!("{id}: stored bytes do not decode: {e}"));
            (id, rec)
        })
        .filter(|(_, r)| matches!(r.facts(), RecordFacts::Provisional(_)))
        .collect()
    })
}

#[test]
fn the_instance_serving_a_drain_killed_every_record_is_settled_once_and_the_edge_is_back_within_5_s()
 {
    let t = TestDir::new("pg-instances-drain");
    let (pg, store, pki, registry) = centre(&t, &[FACILITY_A]);

    // Both instances start once (so their ports are known) and are SIGKILLed: the edge starts
    // with its centre gone, as in an outage.
    let mut recs: Vec<Reconciler> = ["reconciler-1", "reconciler-2"]
        .iter()
        .map(|name| Reconciler::start_named(&t, name, &store, &pki, "127.0.0.1:0"))
        .collect();
    for r in &mut recs {
        r.kill9();
    }
    let mut opts = EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, recs[0].addr);
    opts.more_reconcilers = vec![recs[1].addr];
    let edge = Edge::start(&t, opts);
    assert_ne!(edge.status()["link"]["state"], "up");

    // 2,000 provisional records at reception, each acknowledged (durable at the edge).
    let people = registry.valid_people(0, 40);
    let mut ids: Vec<String> = Vec::with_capacity(RECORDS);
    for n in 0..RECORDS {
        let q = people[n % people.len()];
        let declared = json!({"name": q["name"], "name_kana": q["name_kana"],
            "birth_date": q["birth_date"], "sex": q["sex"], "insurer_name": q["insurer_name"],
            "share_percent": q["share_percent"]});
        let (code, v) = edge.post(
            "/v1/provisional",
            &json!({"declared": declared, "person_id": q["person_id"], "service_date": TODAY,
                    "total_fee_yen": 1_000 + n as u64}),
        );
        assert_eq!(code, 201, "record {n}: {v}");
        ids.push(
            v["record_id"]
                .as_str()
                .unwrap_or_else(|| panic!("no record_id: {v}"))
                .to_string(),
        );
    }
    let status = edge.status();
    assert_ne!(
        status["link"]["state"], "up",
        "recorded in the outage: {status}"
    );
    assert_eq!(status["queue"]["settled"], 0, "{status}");
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        RECORDS,
        "2,000 different record ids"
    );

    // The centre is back, both instances on their ports: the drain starts.
    recs = recs.into_iter().map(|r| r.restart(&t)).collect();
    // Mid-drain: some records settled at the edge, not all.
    let settled_of = |v: &Value| v["queue"]["settled"].as_u64().unwrap_or(0);
    let mid = wait_until(Duration::from_secs(60), Duration::from_millis(10), || {
        let v = edge.status();
        (settled_of(&v) > 0).then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "no record settled after the centre came back: {}",
            edge.status()
        )
    });
    let serving = mid["link"]["reconciler"].as_str().unwrap_or_default();
    let victim = recs
        .iter()
        .position(|r| r.addr.to_string() == serving)
        .unwrap_or_else(|| panic!("the edge is served by neither instance: {mid}"));
    recs[victim].kill9();
    let killed = Instant::now();
    let before_kill = settled_of(&mid);
    // What the killed instance left in the database (for the record; the edge's count is the
    // one asserted, as that is what a user sees).
    let at_kill = provisional_rows(&pg, FACILITY_A);
    eprintln!(
        "killed {} (serving the edge) with {before_kill} of {RECORDS} settled at the edge; \
         in PostgreSQL then: {} records, {} settled",
        recs[victim].proc.name,
        at_kill.len(),
        at_kill
            .iter()
            .filter(|(_, r)| r.settlement().is_some())
            .count()
    );
    assert!(
        (before_kill as usize) < RECORDS,
        "the drain was over before the kill: {mid}"
    );

    // Online again on the other instance within 5 s of the kill.
    let other = recs[1 - victim].addr.to_string();
    let back = wait_until(BACK_ONLINE_WITHIN, Duration::from_millis(20), || {
        let v = edge.status();
        (v["mode"] == "online" && v["link"]["state"] == "up" && v["link"]["reconciler"] == *other)
            .then(|| killed.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "not online on the other instance within {BACK_ONLINE_WITHIN:?} of the kill; status: {}",
            edge.status()
        )
    });
    eprintln!("online again on {other} {back:?} after the kill");
    let (code, v) = edge.post_check(&card_check(registry.valid_insured(), TODAY));
    assert_eq!((code, &v["source"]), (200, &json!("online")), "{v}");

    // Every record comes back settled.
    edge.wait_status("every record settled", Duration::from_secs(120), |v| {
        settled_of(v) == RECORDS as u64
    });

    // PostgreSQL holds each acknowledged record exactly once, settled exactly once (one verdict
    // by the reconciler, never revised).
    let rows = provisional_rows(&pg, FACILITY_A);
    let mut in_db: BTreeMap<String, JournalRecord> = BTreeMap::new();
    for (id, rec) in rows {
        assert_eq!(rec.id().to_string(), id, "the row's key is its record's id");
        assert!(in_db.insert(id.clone(), rec).is_none(), "{id} twice");
    }
    let acknowledged: BTreeSet<&String> = ids.iter().collect();
    let missing: Vec<&&String> = acknowledged
        .iter()
        .filter(|id| !in_db.contains_key(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged records lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(in_db.len(), RECORDS, "no record the edge did not make");
    for (id, rec) in &in_db {
        assert!(
            rec.settlement().is_some(),
            "{id} is not settled in PostgreSQL"
        );
        assert_eq!(
            (rec.settlement_revision(), rec.versions().reconciler),
            (0, 1),
            "{id}: settled once, one write by the centre"
        );
    }

    // The logs of both instances (all their lives): never two settlements of one record. A kill
    // may fall between a commit and its log line, so a record may have none.
    let mut logged = BTreeMap::new();
    for r in &recs {
        settled_lines(&r.proc.stderr(), &mut logged);
    }
    let twice: Vec<_> = logged.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "records settled more than once: {twice:?}"
    );
    let strangers: Vec<_> = logged
        .keys()
        .filter(|id| !in_db.contains_key(id.as_str()))
        .collect();
    assert!(
        strangers.is_empty(),
        "settled but not in the journal: {strangers:?}"
    );
    eprintln!(
        "{} of {RECORDS} settlements logged across both instances",
        logged.len()
    );
    assert!(
        logged.len() >= RECORDS - 64 * 8,
        "at most the records of the batches in flight at the kill go unlogged: {} logged",
        logged.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Grants

/// One facility's own link to one instance (its certificate, that instance only).
struct Asker {
    facility: &'static str,
    instance: usize,
    link: LinkClient,
}

impl Asker {
    fn connect(pki: &Pki, facility: &'static str, instance: usize, rec: &Reconciler) -> Asker {
        let code = FacilityCode::parse(facility).expect("a facility code");
        let identity =
            onshi_sync::pki::load_client(&pki.dir, &code).expect("the facility's certificate");
        let link = runtime().block_on(async {
            let link = LinkClient::new(rec.addr, &identity, LinkSettings::default())
                .expect("a link client");
            let mut rx = link.subscribe();
            tokio::time::timeout(Duration::from_secs(15), rx.wait_for(LinkState::is_up))
                .await
                .unwrap_or_else(|_| panic!("{facility}: no link to {}", rec.addr))
                .expect("the link's state channel");
            link
        });
        Asker {
            facility,
            instance,
            link,
        }
    }

    fn call(&self, req: Request) -> Response {
        runtime()
            .block_on(self.link.call(req, Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("{} asking instance {}: {e}", self.facility, self.instance))
    }

    /// Whether this instance searches the national registry for this facility now.
    fn searches(&self, query: &Value) -> bool {
        let query = serde_json::from_value(query.clone()).expect("a search query");
        match self.call(Request::Search(query)) {
            Response::Search(hits) => {
                assert!(
                    !hits.is_empty(),
                    "{}: instance {} searched and found nobody",
                    self.facility,
                    self.instance
                );
                true
            }
            Response::Error { code, .. } if code == "no_outage_declared" => false,
            other => panic!(
                "{} asking instance {}: {other:?}",
                self.facility, self.instance
            ),
        }
    }
}

/// Which (facility, instance) pairs central search is open for, and what each edge's search
/// answers (`online` or `replica`).
fn open_now(askers: &[Asker], edges: &[&Edge], query: &Value) -> (Vec<String>, Vec<String>) {
    let open = askers
        .iter()
        .filter(|a| a.searches(query))
        .map(|a| format!("{}@{}", a.facility, a.instance))
        .collect();
    let sources = edges
        .iter()
        .map(|e| {
            let (code, v) = e.post("/v1/search", query);
            assert_eq!(code, 200, "{}: {v}", e.opts.facility);
            format!(
                "{}:{}",
                e.opts.facility,
                v["source"].as_str().unwrap_or("?")
            )
        })
        .collect();
    (open, sources)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn grants_open_and_close_central_search_on_both_instances_at_once() {
    let t = TestDir::new("pg-instances-grants");
    let (_pg, store, pki, registry) = centre(&t, &[FACILITY_A, FACILITY_B, FACILITY_OSAKA]);
    let recs: Vec<Reconciler> = ["reconciler-1", "reconciler-2"]
        .iter()
        .map(|name| Reconciler::start_named(&t, name, &store, &pki, "127.0.0.1:0"))
        .collect();
    // Facility A's edge is served by instance 0, B's by instance 1.
    let edge_a = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_A, &t.join("edge-a"), &pki, recs[0].addr),
    );
    let edge_b = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_B, &t.join("edge-b"), &pki, recs[1].addr),
    );
    edge_a.wait_online();
    edge_b.wait_online();
    let askers: Vec<Asker> = [FACILITY_A, FACILITY_B, FACILITY_OSAKA]
        .iter()
        .flat_map(|f| (0..2).map(move |i| (*f, i)))
        .map(|(f, i)| Asker::connect(&pki, f, i, &recs[i]))
        .collect();
    let edges = [&edge_a, &edge_b];
    // A person neither edge has seen (their replicas are empty).
    let target = registry.valid_people(3, 1)[0];
    let query =
        json!({"name": target["name"], "birth_date": target["birth_date"], "sex": target["sex"]});

    // Every facility declares its own outage (the edges through their instance, Osaka directly
    // to both): requests the centre records, which open nothing.
    for e in edges {
        let (code, v) = e.post(
            "/v1/outage",
            &json!({"active": true, "reason": "card reader broken"}),
        );
        assert_eq!(code, 200, "{v}");
        assert_eq!(
            (v["central"].as_bool(), v["granted"].as_bool()),
            (Some(true), Some(false)),
            "{}: {v}",
            e.opts.facility
        );
    }
    for a in askers.iter().filter(|a| a.facility == FACILITY_OSAKA) {
        let answer = a.call(Request::Outage {
            active: true,
            reason: "flooded".into(),
        });
        // The answer is the centre's decision: a request, not a grant.
        assert!(
            matches!(answer, Response::Outage { active: false, .. }),
            "{answer:?}"
        );
    }
    let (code, listed, err) = recs[1].command(&["outage", "list"]);
    assert_eq!(code, 0, "{err}");
    for f in [FACILITY_A, FACILITY_B, FACILITY_OSAKA] {
        assert!(
            listed.contains(f),
            "the centre sees {f}'s request:\n{listed}"
        );
    }
    assert_eq!(
        open_now(&askers, &edges, &query),
        (
            vec![],
            strings(&[
                &format!("{FACILITY_A}:replica"),
                &format!("{FACILITY_B}:replica")
            ])
        ),
        "a facility's own declaration opens central search nowhere"
    );

    // Granted to facility A by the centre (the command writes the database, not an instance):
    // open on both instances at once, for A only.
    let (code, out, err) = recs[0].command(&["outage", "grant", "--facility", FACILITY_A]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        open_now(&askers, &edges, &query),
        (
            strings(&[&format!("{FACILITY_A}@0"), &format!("{FACILITY_A}@1")]),
            strings(&[
                &format!("{FACILITY_A}:online"),
                &format!("{FACILITY_B}:replica")
            ])
        ),
        "a facility's grant opens it on both instances"
    );

    // Granted to Tokyo (a disaster area): B too, on both instances; Osaka still not.
    let (code, out, err) = recs[1].command(&["outage", "grant", "--prefecture", "13"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        open_now(&askers, &edges, &query),
        (
            strings(&[
                &format!("{FACILITY_A}@0"),
                &format!("{FACILITY_A}@1"),
                &format!("{FACILITY_B}@0"),
                &format!("{FACILITY_B}@1")
            ]),
            strings(&[
                &format!("{FACILITY_A}:online"),
                &format!("{FACILITY_B}:online")
            ])
        ),
        "a prefecture's grant opens its facilities on both instances, and no other"
    );

    // The facility's grant ends: A stays open through Tokyo's; Tokyo's ends: closed everywhere.
    let (code, out, err) = recs[0].command(&["outage", "end", "--facility", FACILITY_A]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(open_now(&askers, &edges, &query).0.len(), 4);
    let (code, out, err) = recs[0].command(&["outage", "end", "--prefecture", "13"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        open_now(&askers, &edges, &query),
        (
            vec![],
            strings(&[
                &format!("{FACILITY_A}:replica"),
                &format!("{FACILITY_B}:replica")
            ])
        ),
        "ended: closed on both instances at once"
    );

    // Every central look-up was logged by the instance that made it, with the facility.
    for (i, r) in recs.iter().enumerate() {
        let log = r.proc.stderr();
        for f in [FACILITY_A, FACILITY_B] {
            assert!(
                log.lines().any(|l| l.contains("central search")
                    && l.contains(f)
                    && l.contains("candidates")),
                "instance {i} logs {f}'s central searches:\n{}",
                r.proc.stderr_tail(20)
            );
        }
    }
    for a in &askers {
        runtime().block_on(a.link.close());
    }
}
