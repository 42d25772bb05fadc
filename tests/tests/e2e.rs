//! End-to-end: an edge and a reconciler as separate processes over loopback QUIC with mutual TLS,
//! asserting on what a receipt computer sees over HTTP and what IT staff see from the CLI.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, Pki, TODAY, TestDir, assert_error, card_check, edge_bin,
    mistype_check_digit, reconciler_with_registry, run, shift_date,
};
use serde_json::{Value, json};

/// The qualification in `answer` that is this registry period (same person, same start).
fn find_period<'a>(answer: &'a Value, period: &Value) -> Option<&'a Value> {
    answer["qualifications"].as_array()?.iter().find(|q| {
        q["person_id"] == period["person_id"] && q["acquired_on"] == period["acquired_on"]
    })
}

#[track_caller]
fn assert_answer(answer: &(u16, Value), validity: &str) -> String {
    let (code, v) = answer;
    assert_eq!(*code, 200, "expected 200 {validity}; got {code}: {v}");
    assert_eq!(v["validity"], validity, "{v}");
    assert_eq!(v["source"], "online", "{v}");
    assert_eq!(v["state"], "answered", "{v}");
    assert!(!v["as_of"].is_null(), "as_of: {v}");
    assert!(v["qualifications"].is_array(), "qualifications: {v}");
    let id = v["check_id"]
        .as_str()
        .unwrap_or_else(|| panic!("check_id: {v}"));
    assert!(!id.is_empty(), "check_id: {v}");
    id.to_string()
}

#[test]
fn edge_checks_eligibility_online_through_the_reconciler() {
    let t = TestDir::new("online");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let edge = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr),
    );
    let status = edge.wait_online();
    assert_eq!(status["facility"], FACILITY_A, "{status}");

    // A valid qualification: the answer carries the registry's period as imported.
    let valid = reg.valid_insured();
    let a = edge.post_check(&card_check(valid, TODAY));
    let valid_id = assert_answer(&a, "valid");
    assert_eq!(
        find_period(&a.1, valid),
        Some(valid),
        "the answer's qualification is the registry line: {}",
        a.1
    );

    // A qualification lost because the person joined other insurance: 無効（新しい資格あり）.
    let (lost, newer) = reg.lost_with_newer();
    let b = edge.post_check(&card_check(lost, TODAY));
    let lost_id = assert_answer(&b, "invalid_newer_exists");
    assert!(
        find_period(&b.1, lost).is_some(),
        "the lost period is in the answer: {}",
        b.1
    );
    assert!(
        find_period(&b.1, newer).is_some(),
        "the newer period is in the answer: {}",
        b.1
    );

    // A dependent, told apart from the insured under the same card numbers by the branch.
    let dependent = reg.dependent();
    let c = edge.post_check(&card_check(dependent, TODAY));
    let dependent_id = assert_answer(&c, "valid");
    let quals = c.1["qualifications"].as_array().expect("qualifications");
    assert_eq!(quals.len(), 1, "only the dependent's period: {}", c.1);
    assert_eq!(&quals[0], dependent, "{}", c.1);
    assert_eq!(quals[0]["relationship"], "dependent");

    // The right card with the wrong birth date: 該当資格なし, and nothing about the person leaks.
    let mut wrong_birth = card_check(valid, TODAY);
    wrong_birth["birth_date"] = json!(shift_date(
        valid["birth_date"].as_str().expect("birth_date"),
        1
    ));
    let d = edge.post_check(&wrong_birth);
    let not_found_id = assert_answer(&d, "not_found");
    assert_eq!(d.1["qualifications"], json!([]), "{}", d.1);

    // Dates in YYYYMMDD form are accepted too.
    let mut compact = card_check(valid, &TODAY.replace('-', ""));
    compact["birth_date"] = json!(
        valid["birth_date"]
            .as_str()
            .expect("birth_date")
            .replace('-', "")
    );
    let e = edge.post_check(&compact);
    let compact_id = assert_answer(&e, "valid");

    // A My Number card (its id as the reader reports it).
    let carded = reg.with_card_id();
    let f = edge.post_check(
        &json!({"card_id": carded["card_id"], "verified": "pin", "service_date": TODAY}),
    );
    let card_id_check = assert_answer(&f, "valid");
    assert!(
        find_period(&f.1, carded).is_some(),
        "the card holder's period is in the answer: {}",
        f.1
    );

    let ids = [
        &valid_id,
        &lost_id,
        &dependent_id,
        &not_found_id,
        &compact_id,
        &card_id_check,
    ];
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "check ids are distinct: {ids:?}");

    // Each stored check reads back as it was answered.
    for (id, answer) in [
        (&valid_id, &a.1),
        (&lost_id, &b.1),
        (&dependent_id, &c.1),
        (&not_found_id, &d.1),
        (&compact_id, &e.1),
        (&card_id_check, &f.1),
    ] {
        let (code, stored) = edge.get(&format!("/v1/checks/{id}"));
        assert_eq!(code, 200, "GET /v1/checks/{id}: {stored}");
        assert_eq!(stored["check_id"], answer["check_id"], "{stored}");
        assert_eq!(stored["validity"], answer["validity"], "{stored}");
        assert_eq!(
            stored["qualifications"], answer["qualifications"],
            "{stored}"
        );
        assert!(stored["created_at"].is_string(), "created_at: {stored}");
        assert!(stored["request"].is_object(), "request: {stored}");
        // Answered online: what reception was told is the final word.
        assert_eq!(stored["state"], "answered", "{stored}");
        assert_eq!(
            stored["answered"]["validity"], answer["validity"],
            "{stored}"
        );
        assert_eq!(stored["answered"]["source"], "online", "{stored}");
        assert_eq!(stored["final"], Value::Null, "{stored}");
    }
    let (_, stored) = edge.get(&format!("/v1/checks/{valid_id}"));
    assert_eq!(
        stored["request"]["insurance_card"]["insurer_number"], valid["insurer_number"],
        "{stored}"
    );
    assert_eq!(
        stored["request"]["birth_date"], valid["birth_date"],
        "{stored}"
    );

    let status = edge.status();
    assert_eq!(status["mode"], "online", "{status}");
    assert_eq!(status["link"]["state"], "up", "{status}");
    assert_eq!(status["journal"]["checks"], 6, "{status}");
    assert_eq!(status["reasons"], json!([]), "{status}");
    assert_eq!(status["reader"]["state"], "none", "{status}");
    assert_eq!(status["queue"]["pending"], 0, "{status}");
    assert!(
        status["replica"]["people"].as_u64().is_some_and(|n| n >= 4),
        "online answers fill the replica: {status}"
    );
    let came_online = status["mode_changes"]
        .as_array()
        .and_then(|c| c.last())
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        (came_online["from"].as_str(), came_online["to"].as_str()),
        (Some("offline"), Some("online")),
        "{status}"
    );

    // What IT staff see: `onshi-edge status`.
    let addr = edge.http_addr.to_string();
    let out = run(
        &edge_bin(),
        &["status", "--http", &addr, "--token", &edge.token],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "onshi-edge status: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("online"),
        "onshi-edge status says online:\n{text}"
    );
    assert!(
        text.contains(FACILITY_A),
        "onshi-edge status names the facility:\n{text}"
    );
    let out = run(
        &edge_bin(),
        &["status", "--http", &addr, "--json", "--token", &edge.token],
    );
    assert!(
        out.status.success(),
        "onshi-edge status --json: {}",
        out.status
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(v["mode"], "online", "{v}");

    let metrics = edge.http.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text.contains("# TYPE "),
        "Prometheus text:\n{}",
        metrics.text
    );
}

#[test]
fn bad_input_is_refused_naming_the_field_and_nothing_is_recorded() {
    let t = TestDir::new("bad-input");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let edge = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr),
    );
    edge.wait_online();
    let valid = reg.valid_insured();

    let accepted = edge.post_check(&card_check(valid, TODAY));
    assert_eq!(accepted.0, 200, "{}", accepted.1);
    let accepted_id = accepted.1["check_id"]
        .as_str()
        .expect("check_id")
        .to_string();
    let before = edge.journal_checks();
    assert_eq!(before, 1);

    let mut typo = card_check(valid, TODAY);
    typo["insurance_card"]["insurer_number"] = json!(mistype_check_digit(
        valid["insurer_number"].as_str().expect("insurer_number")
    ));
    assert_error(
        &edge.post_check(&typo),
        400,
        "invalid_check_digit",
        Some("insurance_card.insurer_number"),
    );

    let mut masked = card_check(valid, TODAY);
    let number = valid["number"].as_str().expect("number");
    masked["insurance_card"]["number"] = json!(format!("{}●", &number[..number.len() - 1]));
    assert_error(
        &edge.post_check(&masked),
        400,
        "invalid_character",
        Some("insurance_card.number"),
    );

    let mut era = card_check(valid, TODAY);
    era["birth_date"] = json!("昭和64年1月8日");
    assert_error(
        &edge.post_check(&era),
        400,
        "invalid_date",
        Some("birth_date"),
    );

    let mut missing = card_check(valid, TODAY);
    missing
        .as_object_mut()
        .expect("object")
        .remove("birth_date");
    assert_error(
        &edge.post_check(&missing),
        400,
        "missing_field",
        Some("birth_date"),
    );

    let broken = edge.http.post_raw(
        "/v1/checks",
        r#"{"insurance_card": {"insurer_number": "06130017""#,
    );
    assert_error(
        &(broken.status, broken.json.clone()),
        400,
        "invalid_json",
        None,
    );

    assert_eq!(
        edge.journal_checks(),
        before,
        "refused requests are not recorded"
    );
    let (code, stored) = edge.get(&format!("/v1/checks/{accepted_id}"));
    assert_eq!(code, 200, "{stored}");
    assert_eq!(stored["check_id"], accepted_id.as_str());
    assert_eq!(stored["validity"], "valid");

    let (code, body) = edge.get("/v1/checks/no-such-check");
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
}

/// Receives datagrams on the notify socket until one has `state` (e.g. `READY=1`) as a line.
fn wait_notify(sock: &UnixDatagram, state: &str, timeout: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    while std::time::Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(std::time::Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .expect("set_read_timeout");
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let found = msg.lines().any(|l| l == state);
                seen.push(msg);
                if found {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no {state} on NOTIFY_SOCKET within {timeout:?}; received: {seen:?}");
}

#[test]
fn edge_tells_systemd_it_is_ready_and_stopping() {
    let t = TestDir::new("notify");
    let pki = Pki::init(&t.join("pki"), &[FACILITY_A]);
    let sock_path = t.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("binding the notify socket");
    // No reconciler at all: READY means the journal is open and HTTP bound, not that the link is up.
    let unused = std::net::UdpSocket::bind("127.0.0.1:0").expect("a free port");
    let nowhere = unused.local_addr().expect("addr");
    drop(unused);
    let mut opts = EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, nowhere);
    opts.notify_socket = Some(sock_path.clone());
    let mut edge = Edge::start(&t, opts);
    let msgs = wait_notify(&sock, "READY=1", Duration::from_secs(20));
    assert!(msgs.iter().any(|m| m.contains("READY=1")), "{msgs:?}");
    // The daemon answers while offline: a check is queued, not refused.
    let status = edge.status();
    assert_ne!(status["mode"], "online", "{status}");
    let check = json!({"insurance_card": {"insurer_number": "06130017", "symbol": "123", "number": "4567", "branch": "01"}, "birth_date": "1980-04-01", "service_date": TODAY});
    let (code, v) = edge.post_check(&check);
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (
            v["validity"].as_str(),
            v["source"].as_str(),
            v["state"].as_str()
        ),
        (Some("pending"), Some("queued"), Some("deferred")),
        "{v}"
    );
    assert_eq!(edge.queue()["pending"], 1);

    edge.proc.signal(libc::SIGTERM);
    let msgs = wait_notify(&sock, "STOPPING=1", Duration::from_secs(10));
    assert!(msgs.iter().any(|m| m.contains("STOPPING=1")), "{msgs:?}");
    let exit = edge
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("the edge exits after SIGTERM");
    assert!(exit.success(), "the edge exits 0 after SIGTERM, got {exit}");
}
