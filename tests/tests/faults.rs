//! End-to-end faults across real processes: certificates the reconciler must refuse, an edge killed
//! with SIGKILL (what it acknowledged must survive), and a reconciler that dies and comes back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, FACILITY_B, Pki, Reconciler, Registry, TODAY, TestDir, assert_error, card_check,
    reconciler_with_registry, shift_date, wait_until,
};
use serde_json::{Value, json};

/// What the reconciler logs when it refuses a peer: the handshake failure or the authorisation.
const REFUSAL_WORDS: &[&str] = &["refus", "Refus", "handshake", "certificate", "UnknownCA", "unknown ca", "BadCertificate"];

/// Waits until the edge has tried the link and failed (a last error, or reconnect attempts).
fn wait_link_failed(edge: &Edge) -> Value {
    edge.wait_status("a failed link attempt", Duration::from_secs(15), |v| {
        !v["link"]["last_error"].is_null() || v["link"]["reconnects"].as_u64().is_some_and(|n| n > 0)
    })
}

#[track_caller]
fn assert_refused_edge(edge: &Edge, check: &Value) {
    let status = wait_link_failed(edge);
    assert_ne!(status["mode"], "online", "{status}");
    assert_ne!(status["link"]["state"], "up", "{status}");
    let answer = edge.post_check(check);
    assert_error(&answer, 503, "link_down", None);
    assert_eq!(edge.journal_checks(), 0, "a refused check is not recorded");
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    let t = TestDir::new("other-ca");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let check = card_check(reg.valid_insured(), TODAY);

    // The whole PKI of the edge from another CA (same facility code).
    let other = Pki::init(&t.join("other-pki"), &[FACILITY_A]);
    let mut opts = EdgeOpts::new(FACILITY_A, &t.join("edge-other"), &other, rec.addr);
    opts.name = "edge-other-ca".into();
    let edge = Edge::start(&t, opts);
    assert_refused_edge(&edge, &check);
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
    let said = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let new = rec.proc.stderr().get(logged_before..).unwrap_or_default().to_string();
        new.lines().find(|l| REFUSAL_WORDS.iter().any(|w| l.contains(w))).map(str::to_string)
    });
    let said = said.unwrap_or_else(|| panic!("the reconciler logs the refused client certificate; its stderr:\n{}", rec.proc.stderr_tail(40)));
    eprintln!("the reconciler said: {said}");

    // The reconciler still serves a rightful edge.
    let good = Edge::start(&t, EdgeOpts::new(FACILITY_A, &t.join("edge-good"), &pki, rec.addr));
    good.wait_online();
    let (code, v) = good.post_check(&check);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["validity"], "valid", "{v}");
}

#[test]
fn facility_unknown_to_the_reconciler_is_refused() {
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

    let a = Edge::start(&t, EdgeOpts::new(FACILITY_A, &t.join("edge-a"), &x, rec.addr));
    a.wait_online();
    let (code, v) = a.post_check(&check);
    assert_eq!(code, 200, "{v}");

    let b = Edge::start(&t, EdgeOpts::new(FACILITY_B, &t.join("edge-b"), &x, rec.addr));
    assert_refused_edge(&b, &check);
    // The reconciler's words: "link connection refused … facility CODE is not known to the reconciler".
    let reason = format!("facility {FACILITY_B} is not known to the reconciler");
    let said = rec.proc.wait_stderr(&[&reason], Duration::from_secs(10));
    assert!(said.is_some(), "the reconciler logs {reason:?}; its stderr:\n{}", rec.proc.stderr_tail(40));
    let stderr = rec.proc.stderr();
    let line = stderr.lines().find(|l| l.contains(&reason)).unwrap_or_default();
    assert!(line.contains("refused"), "the refusal says so: {line}");
}

#[test]
fn acknowledged_checks_survive_sigkill_of_the_edge() {
    let t = TestDir::new("sigkill");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let edge = Edge::start(&t, EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr));
    edge.wait_online();
    let valid = reg.valid_insured();
    let (lost, _) = reg.lost_with_newer();
    let dependent = reg.dependent();
    let mut wrong_birth = card_check(valid, TODAY);
    wrong_birth["birth_date"] = json!(shift_date(valid["birth_date"].as_str().expect("birth_date"), -1));
    let bodies = [card_check(valid, TODAY), card_check(lost, TODAY), card_check(dependent, TODAY), wrong_birth];

    // Concurrent checks (several per group commit), then SIGKILL as soon as the last is answered.
    let mut answers: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let http = edge.http.clone();
                let body = bodies[i % bodies.len()].clone();
                s.spawn(move || http.post_json("/v1/checks", &body))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a request thread")).map(|a| {
            assert_eq!(a.status, 200, "{}", a.text);
            a.json
        }).collect()
    });
    let mut edge = edge;
    edge.kill9();

    let edge = edge.restart();
    let ids: BTreeMap<String, Value> = answers.drain(..).map(|a| (a["check_id"].as_str().expect("check_id").to_string(), a)).collect();
    assert_eq!(ids.len(), 16, "16 distinct check ids");
    for (id, answer) in &ids {
        let (code, stored) = edge.get(&format!("/v1/checks/{id}"));
        assert_eq!(code, 200, "check {id} acknowledged before SIGKILL is gone after restart: {stored}");
        for field in ["check_id", "validity", "source", "qualifications", "as_of"] {
            assert_eq!(stored[field], answer[field], "{field} of {id}: stored {stored}\nanswered {answer}");
        }
    }
    assert_eq!(edge.journal_checks(), 16);

    // A record read before a second SIGKILL reads identically after it; new ids never reuse old ones.
    let before: BTreeMap<&String, Value> = ids.keys().map(|id| (id, edge.get(&format!("/v1/checks/{id}")).1)).collect();
    edge.wait_online();
    let (code, fresh) = edge.post_check(&bodies[0]);
    assert_eq!(code, 200, "{fresh}");
    let fresh_id = fresh["check_id"].as_str().expect("check_id").to_string();
    assert!(!ids.contains_key(&fresh_id), "a new check reuses id {fresh_id}");
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
fn link_down_is_refused_in_bounded_time_and_the_edge_reconnects() {
    let t = TestDir::new("link-down");
    let (pki, reg, mut rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let deadline = Duration::from_millis(1000);
    let mut opts = EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr);
    opts.deadline_ms = Some(deadline.as_millis() as u64);
    let edge = Edge::start(&t, opts);
    edge.wait_online();
    let check = card_check(reg.valid_insured(), TODAY);
    let (code, v) = edge.post_check(&check);
    assert_eq!(code, 200, "{v}");
    let recorded = edge.journal_checks();
    let reconnects_before = edge.status()["link"]["reconnects"].as_u64().unwrap_or(0);

    rec.kill9();
    let killed = Instant::now();
    // Right after the kill the edge may not know yet; the answer is still a refusal within the deadline.
    let first = edge.post_check_answer(&check);
    assert_eq!(first.status, 503, "{}", first.text);
    assert!(first.elapsed <= deadline + Duration::from_secs(1), "answered after {:?}", first.elapsed);
    let first_code = first.json["error"]["code"].as_str().unwrap_or("").to_string();
    assert!(matches!(first_code.as_str(), "link_down" | "deadline_exceeded"), "{}", first.text);

    // Once the link is known down: offline, and checks answer link_down at once.
    let status = edge.wait_status("offline", Duration::from_secs(10), |v| v["mode"] == "offline");
    assert_ne!(status["link"]["state"], "up", "{status}");
    eprintln!("link known down {:?} after the kill; first answer was {first_code}", killed.elapsed());
    let down = edge.post_check_answer(&check);
    assert_error(&(down.status, down.json.clone()), 503, "link_down", None);
    assert!(down.elapsed <= deadline + Duration::from_secs(1), "answered after {:?}", down.elapsed);
    assert_eq!(edge.journal_checks(), recorded, "refused checks are not recorded");

    // The reconciler comes back on the same port: the edge reconnects by itself.
    let rec = Reconciler::start_on(&t, &rec.data.clone(), &rec.pki.clone(), &rec.addr.to_string());
    let status = edge.wait_status("online again", Duration::from_secs(20), |v| v["mode"] == "online" && v["link"]["state"] == "up");
    let reconnects = status["link"]["reconnects"].as_u64().unwrap_or(0);
    assert!(reconnects > reconnects_before, "reconnects counted: {status}");
    let again = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        let (code, v) = edge.post_check(&check);
        (code == 200).then_some(v)
    });
    let again = again.unwrap_or_else(|| panic!("checks do not answer again after the reconnect; status {}", edge.status()));
    assert_eq!(again["validity"], "valid", "{again}");
    assert_eq!(edge.journal_checks(), recorded + 1);
    drop(rec);
}
