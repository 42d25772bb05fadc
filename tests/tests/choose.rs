//! Issue 15, `ambiguous` settlements, across real processes: a provisional record of a patient with
//! a namesake (same name, reading, birth date and sex; another person, another insurer) settles
//! `ambiguous` at the reconciler; staff choose one of the candidates on the edge
//! (`POST /v1/queue/{id}/choose`); the choice is journalled, synced, and the reconciler settles
//! again against the chosen person's qualification on the service date; the new settlement comes
//! back to the worklist. Bad choices are refused with the field named, and the choice is in the
//! access log with the person id. The same in headless Chromium: the worklist's choice form.

use std::time::Duration;

use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, Pki, Reconciler, Registry, TODAY, TestDir, assert_error, wait_until,
};
use serde_json::{Value, json};

fn queue_item(edge: &Edge, id: &str) -> Value {
    let q = edge.queue();
    q["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("{id} is not in the queue: {q}"))
}

/// Waits until the queue's settlement of `id` satisfies `pred`.
fn wait_settlement(edge: &Edge, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        // Ask the edge to sync at once rather than waiting for its interval.
        let _ = edge.post("/v1/sync-now", &json!({}));
        let item = queue_item(edge, id);
        pred(&item["settlement"]).then_some(item)
    })
    .unwrap_or_else(|| panic!("no {what} settlement for {id}: {}", edge.queue()))
}

const PASSWORD: &str = "reception counter 1";

/// A reconciler whose registry holds a valid insured person `a` and a namesake `b` (same name,
/// reading, birth date and sex; another person under another insurer); an edge of facility A with
/// a reception user `uketsuke`; and a provisional record made in an outage (reconciler SIGKILLed),
/// declared without address or insurer so that nothing tells the two apart. The reconciler is
/// back when this returns: `(reconciler, edge, a, b, record id)`.
fn namesakes(t: &TestDir) -> (Reconciler, Edge, Value, Value, String) {
    let pki = Pki::init(&t.join("pki"), &[FACILITY_A]);
    let reg = Registry::standard(t);
    let data = t.join("reconciler");
    reg.import(&data);

    // A namesake of a valid insured person: same name, reading, birth date and sex, another
    // person under another insurer (taken from a period of someone else).
    let a = reg.valid_insured().clone();
    let other = reg
        .periods
        .iter()
        .find(|p| {
            p["insurer_number"] != a["insurer_number"] && p["insurer_name"] != a["insurer_name"]
        })
        .expect("a period under another insurer")
        .clone();
    let mut b = other.clone();
    for k in [
        "name",
        "name_kana",
        "birth_date",
        "sex",
        "share_percent",
        "relationship",
    ] {
        b[k] = a[k].clone();
    }
    b["person_id"] = json!("PNAMESAKE0001");
    b["card_id"] = Value::Null;
    b["number"] = json!("98765");
    b["branch"] = json!("01");
    b["acquired_on"] = json!("2020-04-01");
    b["lost_on"] = Value::Null;
    b["loss_reason"] = Value::Null;
    let extra = Registry {
        path: t.join("namesake.jsonl"),
        periods: vec![b.clone()],
    };
    std::fs::write(&extra.path, format!("{b}\n")).expect("write the namesake's line");
    extra.import(&data);

    let mut rec = Reconciler::start(t, &data, &pki);
    let edge_data = t.join("edge-a");
    add_user(&edge_data, "uketsuke", "reception");
    let edge = Edge::start(t, EdgeOpts::new(FACILITY_A, &edge_data, &pki, rec.addr));
    edge.wait_online();
    rec.kill9();
    edge.wait_mode("offline", Duration::from_secs(10));

    // Declared without address or insurer: nothing tells the two apart.
    let declared = json!({"name": a["name"], "name_kana": a["name_kana"], "birth_date": a["birth_date"],
        "sex": a["sex"], "share_percent": a["share_percent"]});
    let (code, v) = edge.post(
        "/v1/provisional",
        &json!({"declared": declared, "service_date": TODAY, "total_fee_yen": 12_340}),
    );
    assert_eq!(code, 201, "{v}");
    let id = v["record_id"].as_str().expect("record_id").to_string();

    // Not settled yet: nothing to choose from.
    assert_error(
        &edge.post(
            &format!("/v1/queue/{id}/choose"),
            &json!({"person_id": b["person_id"]}),
        ),
        409,
        "not_ambiguous",
        Some("id"),
    );

    let rec = rec.restart(t);
    edge.wait_online();
    (rec, edge, a, b, id)
}

#[test]
fn staff_choose_among_namesakes_and_the_reconciler_settles_against_the_chosen_person() {
    let t = TestDir::new("choose");
    let (_rec, edge, a, b, id) = namesakes(&t);
    let item = wait_settlement(&edge, &id, "ambiguous", |s| s["kind"] == "ambiguous");
    let candidates: Vec<&Value> = item["settlement"]["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .map(|c| &c["person_id"])
        .collect();
    assert!(
        candidates.contains(&&a["person_id"]) && candidates.contains(&&b["person_id"]),
        "both namesakes are candidates: {item}"
    );

    // Someone not among the candidates, a malformed or missing person id: 400 naming person_id.
    assert_error(
        &edge.post(
            &format!("/v1/queue/{id}/choose"),
            &json!({"person_id": "PNOTACANDIDATE"}),
        ),
        400,
        "not_a_candidate",
        Some("person_id"),
    );
    let (code, v) = edge.post(&format!("/v1/queue/{id}/choose"), &json!({}));
    assert_eq!(
        (code, &v["error"]["field"]),
        (400, &json!("person_id")),
        "{v}"
    );
    assert_error(
        &edge.post(
            &format!("/v1/queue/{FACILITY_A}-00000000-0000000099/choose"),
            &json!({"person_id": b["person_id"]}),
        ),
        404,
        "not_found",
        Some("id"),
    );

    // Staff choose the namesake (twice: idempotent).
    for _ in 0..2 {
        let (code, v) = edge.post(
            &format!("/v1/queue/{id}/choose"),
            &json!({"person_id": b["person_id"]}),
        );
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["choice"]["person_id"], b["person_id"], "{v}");
    }

    // The reconciler settles again against the chosen person: her insurer, her qualification.
    let item = wait_settlement(&edge, &id, "re-", |s| {
        s["kind"] != "ambiguous" && !s.is_null()
    });
    let s = &item["settlement"];
    assert_eq!(
        s["kind"], "confirmed",
        "same share collected as the chosen person's: {item}"
    );
    assert_eq!(s["qualification"]["person_id"], b["person_id"], "{item}");
    assert_eq!(s["insurer"]["number"], b["insurer_number"], "{item}");
    assert!(
        s["explanation"]
            .as_str()
            .is_some_and(|e| e.contains("chosen by staff")),
        "{item}"
    );
    assert_eq!(item["state"], "settled", "{item}");
    assert_eq!(item["choice"]["person_id"], b["person_id"], "{item}");

    // Settled again: no more choosing, and closing works as for any settlement.
    assert_error(
        &edge.post(
            &format!("/v1/queue/{id}/choose"),
            &json!({"person_id": a["person_id"]}),
        ),
        409,
        "not_ambiguous",
        Some("id"),
    );
    let (code, v) = edge.post(&format!("/v1/queue/{id}/close"), &json!({}));
    assert_eq!((code, &v["state"]), (200, &json!("closed")), "{v}");

    // The access log has the choice with the record and the person, never a declared value.
    let log = edge.http.get("/v1/audit");
    assert_eq!(log.status, 200, "{}", log.text);
    let chosen = log.json["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["action"] == "choose_candidate")
        .unwrap_or_else(|| panic!("no choose_candidate entry: {}", log.text))
        .clone();
    let subject = chosen["subject"].as_array().expect("subject");
    assert!(subject.contains(&json!({"record": id})), "{chosen}");
    assert!(
        subject.contains(&json!({"person": b["person_id"]})),
        "{chosen}"
    );
    assert!(
        !log.text.contains(a["name"].as_str().unwrap_or("?")),
        "{}",
        log.text
    );
}

/// `onshi-edge user add NAME --role ROLE --password-stdin --data DIR`.
fn add_user(data: &std::path::Path, name: &str, role: &str) {
    onshi_tests::add_user(data, name, role, PASSWORD);
}

#[test]
fn the_worklist_offers_each_candidate_and_shows_the_settlement_against_the_chosen_one() {
    let t = TestDir::new("choose-page");
    let (_rec, edge, a, b, id) = namesakes(&t);
    wait_settlement(&edge, &id, "ambiguous", |s| s["kind"] == "ambiguous");
    let base = format!("http://{}", edge.http_addr);
    let br = onshi_tests::webdriver::Driver::start(t.path()).browser();
    br.goto(&format!("{base}/login"));
    br.fill("input[name='user']", "uketsuke");
    br.fill(
        "input[name='password']",
        &format!("{PASSWORD}{}", onshi_tests::webdriver::ENTER),
    );
    br.find("#banner");

    // The row says to choose, with one form per candidate, each with the CSRF token.
    br.goto(&format!("{base}/worklist"));
    let row = format!("tr.item[data-id='{id}']");
    let r = br.find(&row);
    assert_eq!(br.attr(&r, "data-settlement").as_deref(), Some("ambiguous"));
    assert!(
        br.text(&r).contains("候補から本人を選んでください"),
        "{}",
        br.text(&r)
    );
    let pa = a["person_id"].as_str().unwrap_or_default();
    let pb = b["person_id"].as_str().unwrap_or_default();
    for p in [pa, pb] {
        let f = br.find(&format!("{row} li[data-person-id='{p}'] form"));
        assert!(
            br.attr(&f, "action")
                .is_some_and(|a| a.ends_with(&format!("/worklist/{id}/choose"))),
            "{:?}",
            br.attr(&f, "action")
        );
        let csrf = br.find(&format!(
            "{row} li[data-person-id='{p}'] input[name='csrf']"
        ));
        assert!(br.attr(&csrf, "value").is_some_and(|v| !v.is_empty()));
    }

    // Choose the namesake: the reconciler settles again against her; the row says it in words.
    br.click(&format!(
        "{row} li[data-person-id='{pb}'] button[type='submit']"
    ));
    let settled = onshi_tests::webdriver::wait(Duration::from_secs(30), || {
        let _ = edge.post("/v1/sync-now", &json!({}));
        br.goto(&format!("{base}/worklist"));
        let r = br.find(&row);
        (br.attr(&r, "data-settlement").as_deref() == Some("confirmed")).then_some(r)
    })
    .unwrap_or_else(|| {
        panic!(
            "no settlement against the chosen person; page:\n{}",
            br.source()
        )
    });
    assert!(br.text(&settled).contains("確定"), "{}", br.text(&settled));
    assert!(
        br.try_find(&format!("{row} li[data-person-id]")).is_none(),
        "no choice is offered once settled again: {}",
        br.text(&settled)
    );
    let item = queue_item(&edge, &id);
    assert_eq!(
        item["settlement"]["qualification"]["person_id"], b["person_id"],
        "{item}"
    );
    assert_eq!(item["choice"]["by"], "uketsuke", "{item}");
}
