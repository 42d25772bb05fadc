//! Insurers' updates while the centre serves: `onshi-reconciler import` against the data directory
//! of a running `serve` (it goes through the admin socket) changes the next check's answer, with
//! no restart and no dropped link.

use std::time::Duration;

use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, Pki, Reconciler, Registry, TODAY, TestDir, card_check,
};
use serde_json::Value;

#[test]
fn an_import_while_serving_changes_the_next_checks_answer() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("live-import");
    let pki = Pki::init(&t.join("pki"), &[FACILITY_A]);
    let reg = Registry::generate(t.path(), 300, 5);
    let people: Vec<Value> = reg.valid_people(0, 2).into_iter().cloned().collect();
    let (late, changed) = (&people[0], &people[1]);
    // The registry without the late person's line: the insurer has not sent it yet.
    let first = Registry {
        path: t.join("first.jsonl"),
        periods: reg
            .periods
            .iter()
            .filter(|q| q["person_id"] != late["person_id"])
            .cloned()
            .collect(),
    };
    let lines: Vec<String> = first.periods.iter().map(Value::to_string).collect();
    std::fs::write(&first.path, lines.join("\n") + "\n").expect("writing the registry");
    let data = t.join("reconciler");
    first.import(&data);
    let rec = Reconciler::start(&t, &data, &pki);
    let edge = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr),
    );
    edge.wait_online();
    let check = |q: &Value| {
        let (code, v) = edge.post("/v1/checks", &card_check(q, TODAY));
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["source"], "online", "{v}");
        v["validity"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(check(late), "not_found");
    assert_eq!(check(changed), "valid");
    let reconnects = edge.status()["link"]["reconnects"].clone();

    // The insurer's daily file: the late person's line, and a loss of qualification.
    let mut lost = changed.clone();
    // The day before the service date (TODAY): the card no longer holds.
    lost["lost_on"] = Value::String("2026-03-31".into());
    lost["loss_reason"] = Value::String("other".into());
    let update = t.join("update.jsonl");
    std::fs::write(&update, format!("{late}\n{lost}\n")).expect("writing the update");
    let (code, out, err) = rec.command(&["import", update.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 added, 1 updated"), "{out}");

    assert_eq!(check(late), "valid", "the new line answers at once");
    assert_ne!(check(changed), "valid", "the loss answers at once");
    assert_eq!(
        edge.status()["link"]["reconnects"],
        reconnects,
        "the link was never dropped"
    );
    assert!(
        rec.proc
            .wait_stderr(&["admin socket"], Duration::from_secs(1))
            .is_some()
    );
}
