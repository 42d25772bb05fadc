//! Insurers' updates while the centre serves: `onshi-reconciler import` against the store of a
//! running `serve` changes the next check's answer, and the next central search finds the new
//! line (the store's search index is written with it: no follower lag), with no restart and no
//! dropped link — on the embedded store (the command goes through the serve's admin socket) and
//! on PostgreSQL (the command writes the database; the serving instance reads it).

use onshi_tests::pg::PgServer;
use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, Pki, Reconciler, Registry, Store, TODAY, TestDir, card_check,
};
use serde_json::{Value, json};

#[test]
fn an_import_while_serving_changes_the_next_checks_answer_embedded() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("live-import");
    let store = Store::Embedded(t.join("reconciler"));
    import_while_serving(&t, &store);
}

#[test]
fn an_import_while_serving_changes_the_next_checks_answer_on_postgresql() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("live-import-pg");
    let pg = PgServer::start(&t);
    let store = Store::postgres(&pg, t.path());
    store.migrate();
    import_while_serving(&t, &store);
}

fn import_while_serving(t: &TestDir, store: &Store) {
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
    first.import_into(store);
    let rec = Reconciler::start_named(t, "reconciler", store, &pki, "127.0.0.1:0");
    let edge = Edge::start(
        t,
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
    // Central search, granted to the facility: what it finds of the late person.
    rec.grant(FACILITY_A);
    let search = |q: &Value| {
        let body = json!({"name": q["name"], "birth_date": q["birth_date"], "sex": q["sex"]});
        let (code, v) = edge.post("/v1/search", &body);
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["source"], "online", "central search answers: {v}");
        v["candidates"]
            .as_array()
            .map(|c| c.iter().map(|c| c["person_id"].clone()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert!(
        !search(late).contains(&late["person_id"]),
        "not in the registry yet"
    );
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
    assert_eq!(
        search(late).first(),
        Some(&late["person_id"]),
        "central search finds the new line at once"
    );
    assert_ne!(check(changed), "valid", "the loss answers at once");
    assert_eq!(
        edge.status()["link"]["reconnects"],
        reconnects,
        "the link was never dropped"
    );
}
