//! End-to-end faults across real processes: certificates the reconciler must refuse (the edge still
//! answers: `pending`/`queued`, recorded as a deferred check), an edge killed with SIGKILL (what it
//! acknowledged must survive), and a reconciler that dies and comes back (answers from the replica
//! meanwhile; the deferred checks complete on its return).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, FACILITY_B, Pki, Reconciler, Registry, TODAY, TestDir, card_check,
    reconciler_with_registry, shift_date, wait_until,
};
use serde_json::{Value, json};

/// What the reconciler logs when it refuses a peer: the handshake failure or the authorisation.
const REFUSAL_WORDS: &[&str] = &[
    "refus",
    "Refus",
    "handshake",
    "certificate",
    "UnknownCA",
    "unknown ca",
    "BadCertificate",
];

/// The default deadline of an online answer (DESIGN.md), and the slack a refused link may add.
const DEFAULT_DEADLINE: Duration = Duration::from_millis(1500);
const SLACK: Duration = Duration::from_millis(500);

/// Waits until the edge has tried the link and failed (a last error, or reconnect attempts).
fn wait_link_failed(edge: &Edge) -> Value {
    edge.wait_status("a failed link attempt", Duration::from_secs(15), |v| {
        !v["link"]["last_error"].is_null()
            || v["link"]["reconnects"].as_u64().is_some_and(|n| n > 0)
    })
}

/// Waits for a line of the reconciler's stderr, written after byte `from`, with any of `words`.
fn wait_log_line(rec: &Reconciler, from: usize, words: &[&str]) -> String {
    let said = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let new = rec
            .proc
            .stderr()
            .get(from..)
            .unwrap_or_default()
            .to_string();
        new.lines()
            .find(|l| words.iter().any(|w| l.contains(w)))
            .map(str::to_string)
    });
    said.unwrap_or_else(|| {
        panic!(
            "the reconciler logs a line with one of {words:?}; its stderr:\n{}",
            rec.proc.stderr_tail(40)
        )
    })
}

/// An edge whose link the reconciler refuses: never online, and a check of a person it has never
/// seen is still answered at once (`pending`, `queued`), recorded as a deferred check and queued.
/// Returns the check id.
#[track_caller]
fn assert_refused_edge(edge: &Edge, check: &Value) -> String {
    let status = wait_link_failed(edge);
    assert_ne!(status["mode"], "online", "{status}");
    assert_ne!(status["link"]["state"], "up", "{status}");
    let before = edge.journal_checks();
    let a = edge.post_check_answer(check);
    assert_eq!(
        a.status, 200,
        "a check with the link refused is answered: {}",
        a.text
    );
    assert!(
        a.elapsed <= DEFAULT_DEADLINE + SLACK,
        "answered after {:?}",
        a.elapsed
    );
    assert_eq!(a.json["validity"], "pending", "{}", a.text);
    assert_eq!(a.json["source"], "queued", "{}", a.text);
    assert_eq!(a.json["state"], "deferred", "{}", a.text);
    assert_eq!(a.json["qualifications"], json!([]), "{}", a.text);
    let id = a.json["check_id"]
        .as_str()
        .unwrap_or_else(|| panic!("check_id: {}", a.text))
        .to_string();
    assert_eq!(
        edge.journal_checks(),
        before + 1,
        "a deferred check is recorded"
    );

    let (code, stored) = edge.get(&format!("/v1/checks/{id}"));
    assert_eq!(code, 200, "{stored}");
    assert_eq!(stored["state"], "deferred", "{stored}");
    assert_eq!(stored["final"], Value::Null, "{stored}");
    assert_eq!(stored["answered"]["validity"], "pending", "{stored}");
    assert!(
        stored["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "why it was not asked online: {stored}"
    );
    let queue = edge.queue();
    assert!(
        queue["items"].as_array().is_some_and(|items| items
            .iter()
            .any(|i| i["id"] == id.as_str() && i["kind"] == "deferred_check")),
        "the deferred check is queued: {queue}"
    );
    assert!(queue["pending"].as_u64().is_some_and(|n| n >= 1), "{queue}");
    id
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("other-ca");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let check = card_check(reg.valid_insured(), TODAY);

    // The whole PKI of the edge from another CA (same facility code).
    let other = Pki::init(&t.join("other-pki"), &[FACILITY_A]);
    let mut opts = EdgeOpts::new(FACILITY_A, &t.join("edge-other"), &other, rec.addr);
    opts.name = "edge-other-ca".into();
    let logged_before = rec.proc.stderr().len();
    let edge = Edge::start(&t, opts);
    assert_refused_edge(&edge, &check);
    let said = wait_log_line(&rec, logged_before, REFUSAL_WORDS);
    eprintln!("the reconciler said: {said}");
    drop(edge);

    // Trusting the right CA for the reconciler, but presenting a client certificate of another CA:
    // only the reconciler can refuse this one.
    let mixed = other.copy_to(&t.join("mixed-pki"));
    std::fs::copy(pki.dir.join("ca.pem"), mixed.dir.join("ca.pem")).expect("copying ca.pem");
    let mut opts = EdgeOpts::new(FACILITY_A, &t.join("edge-mixed"), &mixed, rec.addr);
    opts.name = "edge-foreign-client-cert".into();
    let logged_before = rec.proc.stderr().len();
    let edge = Edge::start(&t, opts);
    assert_refused_edge(&edge, &check);
    let said = wait_log_line(&rec, logged_before, REFUSAL_WORDS);
    eprintln!("the reconciler said: {said}");

    // The reconciler still serves a rightful edge.
    let good = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_A, &t.join("edge-good"), &pki, rec.addr),
    );
    good.wait_online();
    let (code, v) = good.post_check(&check);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["validity"], "valid", "{v}");
}

#[test]
fn facility_unknown_to_the_reconciler_is_refused() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("unknown-facility");
    // One CA issues A and B; the reconciler's directory only has A.
    let x = Pki::init(&t.join("pki-x"), &[FACILITY_A, FACILITY_B]);
    let y = x.copy_to(&t.join("pki-y"));
    y.remove_facility(FACILITY_B);
    let reg = Registry::standard(&t);
    let data = t.join("reconciler");
    reg.import(&data);
    let rec = Reconciler::start(&t, &data, &y);
    let check = card_check(reg.valid_insured(), TODAY);

    let a = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_A, &t.join("edge-a"), &x, rec.addr),
    );
    a.wait_online();
    let (code, v) = a.post_check(&check);
    assert_eq!(code, 200, "{v}");

    let b = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_B, &t.join("edge-b"), &x, rec.addr),
    );
    assert_refused_edge(&b, &check);
    // The reconciler's words: "link connection refused … facility CODE is not known to the reconciler".
    let reason = format!("facility {FACILITY_B} is not known to the reconciler");
    let said = rec.proc.wait_stderr(&[&reason], Duration::from_secs(10));
    assert!(
        said.is_some(),
        "the reconciler logs {reason:?}; its stderr:\n{}",
        rec.proc.stderr_tail(40)
    );
    let stderr = rec.proc.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains(&reason))
        .unwrap_or_default();
    assert!(line.contains("refused"), "the refusal says so: {line}");
}

#[test]
fn acknowledged_checks_survive_sigkill_of_the_edge() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("sigkill");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let edge = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr),
    );
    edge.wait_online();
    let valid = reg.valid_insured();
    let (lost, _) = reg.lost_with_newer();
    let dependent = reg.dependent();
    let mut wrong_birth = card_check(valid, TODAY);
    wrong_birth["birth_date"] = json!(shift_date(
        valid["birth_date"].as_str().expect("birth_date"),
        -1
    ));
    let bodies = [
        card_check(valid, TODAY),
        card_check(lost, TODAY),
        card_check(dependent, TODAY),
        wrong_birth,
    ];

    // Concurrent checks (several per group commit), then SIGKILL as soon as the last is answered.
    let mut answers: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let http = edge.http.clone();
                let body = bodies[i % bodies.len()].clone();
                s.spawn(move || http.post_json("/v1/checks", &body))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a request thread"))
            .map(|a| {
                assert_eq!(a.status, 200, "{}", a.text);
                a.json
            })
            .collect()
    });
    let mut edge = edge;
    edge.kill9();

    let edge = edge.restart();
    let ids: BTreeMap<String, Value> = answers
        .drain(..)
        .map(|a| (a["check_id"].as_str().expect("check_id").to_string(), a))
        .collect();
    assert_eq!(ids.len(), 16, "16 distinct check ids");
    for (id, answer) in &ids {
        let (code, stored) = edge.get(&format!("/v1/checks/{id}"));
        assert_eq!(
            code, 200,
            "check {id} acknowledged before SIGKILL is gone after restart: {stored}"
        );
        for field in ["check_id", "validity", "source", "qualifications", "as_of"] {
            assert_eq!(
                stored[field], answer[field],
                "{field} of {id}: stored {stored}\nanswered {answer}"
            );
        }
    }
    assert_eq!(edge.journal_checks(), 16);

    // A record read before a second SIGKILL reads identically after it; new ids never reuse old ones.
    let before: BTreeMap<&String, Value> = ids
        .keys()
        .map(|id| (id, edge.get(&format!("/v1/checks/{id}")).1))
        .collect();
    edge.wait_online();
    let (code, fresh) = edge.post_check(&bodies[0]);
    assert_eq!(code, 200, "{fresh}");
    let fresh_id = fresh["check_id"].as_str().expect("check_id").to_string();
    assert!(
        !ids.contains_key(&fresh_id),
        "a new check reuses id {fresh_id}"
    );
    let edge = edge.restart();
    for (id, record) in &before {
        let (code, stored) = edge.get(&format!("/v1/checks/{id}"));
        assert_eq!(code, 200, "{stored}");
        assert_eq!(&stored, record, "check {id} changed across a restart");
    }
    assert_eq!(edge.get(&format!("/v1/checks/{fresh_id}")).0, 200);
    assert_eq!(edge.journal_checks(), 17);
}

#[test]
fn link_down_answers_from_the_replica_in_bounded_time_and_the_edge_reconnects() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("link-down");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let deadline = Duration::from_millis(1000);
    let mut opts = EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr);
    opts.deadline_ms = Some(deadline.as_millis() as u64);
    let edge = Edge::start(&t, opts);
    edge.wait_online();
    let check = card_check(reg.valid_insured(), TODAY);
    let (lost, _) = reg.lost_with_newer();
    let lost_check = card_check(lost, TODAY);
    let (code, online) = edge.post_check(&check);
    assert_eq!(code, 200, "{online}");
    assert_eq!(
        (online["validity"].as_str(), online["source"].as_str()),
        (Some("valid"), Some("online")),
        "{online}"
    );
    let (code, lost_online) = edge.post_check(&lost_check);
    assert_eq!(code, 200, "{lost_online}");
    assert_eq!(
        lost_online["validity"], "invalid_newer_exists",
        "{lost_online}"
    );
    let recorded = edge.journal_checks();
    let reconnects_before = edge.status()["link"]["reconnects"].as_u64().unwrap_or(0);

    let mut rec = rec;
    rec.kill9();
    let killed = Instant::now();
    // Right after the kill the edge may not know yet: the online ask runs into the deadline, and
    // the answer comes from the replica, as of the online answer it learnt from.
    let first = edge.post_check_answer(&check);
    assert_eq!(first.status, 200, "{}", first.text);
    assert!(
        first.elapsed <= deadline + SLACK,
        "answered after {:?}",
        first.elapsed
    );
    assert_eq!(first.json["source"], "replica", "{}", first.text);
    assert_eq!(first.json["validity"], "valid", "{}", first.text);
    assert_eq!(first.json["state"], "deferred", "{}", first.text);
    assert_eq!(
        first.json["as_of"], online["as_of"],
        "as_of is when the replica learnt it: {}\nonline: {online}",
        first.text
    );
    assert_eq!(
        first.json["qualifications"], online["qualifications"],
        "{}",
        first.text
    );

    // Once the link is known down: offline, with the cause, and answers come at once.
    let status = edge.wait_status(
        "offline with the link not up",
        Duration::from_secs(10),
        |v| v["mode"] == "offline" && v["link"]["state"] != "up",
    );
    let change = status["mode_changes"]
        .as_array()
        .and_then(|c| c.iter().rev().find(|c| c["to"] == "offline"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(change["to"], "offline", "{status}");
    assert!(
        change["cause"].as_str().is_some_and(|c| !c.is_empty()),
        "{status}"
    );
    assert!(
        status["reasons"].as_array().is_some_and(|r| !r.is_empty()),
        "{status}"
    );
    eprintln!(
        "link known down {:?} after the kill: {}",
        killed.elapsed(),
        change["cause"]
    );
    let down = edge.post_check_answer(&lost_check);
    assert_eq!(down.status, 200, "{}", down.text);
    assert!(
        down.elapsed <= deadline + SLACK,
        "answered after {:?}",
        down.elapsed
    );
    assert_eq!(down.json["source"], "replica", "{}", down.text);
    assert_eq!(
        down.json["validity"], "invalid_newer_exists",
        "{}",
        down.text
    );
    assert_eq!(
        edge.journal_checks(),
        recorded + 2,
        "checks answered from the replica are recorded"
    );
    let queue = edge.queue();
    assert_eq!(queue["pending"], 2, "{queue}");

    // The reconciler comes back on the same port: the edge reconnects by itself, and the deferred
    // checks complete, each confirming what reception was told.
    let rec = rec.restart(&t);
    let status = edge.wait_status("online again", Duration::from_secs(20), |v| {
        v["mode"] == "online" && v["link"]["state"] == "up"
    });
    let reconnects = status["link"]["reconnects"].as_u64().unwrap_or(0);
    assert!(
        reconnects > reconnects_before,
        "reconnects counted: {status}"
    );
    for (answer, validity) in [(&first.json, "valid"), (&down.json, "invalid_newer_exists")] {
        let id = answer["check_id"].as_str().expect("check_id");
        let done = edge.wait_check_state(id, "completed", Duration::from_secs(15));
        assert_eq!(done["final"]["validity"], validity, "{done}");
        assert!(done["final"]["completed_at"].is_string(), "{done}");
        assert_eq!(done["answered"]["source"], "replica", "{done}");
        assert_eq!(done["source"], "online", "{done}");
        assert_eq!(done["changed"], false, "{done}");
    }
    let drained = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let q = edge.queue();
        (q["pending"] == 0).then_some(q)
    });
    assert!(drained.is_some(), "the queue drains: {}", edge.queue());
    let (code, again) = edge.post_check(&check);
    assert_eq!(code, 200, "{again}");
    assert_eq!(
        (again["validity"].as_str(), again["source"].as_str()),
        (Some("valid"), Some("online")),
        "{again}"
    );
    assert_eq!(edge.journal_checks(), recorded + 3);
    drop(rec);
}
