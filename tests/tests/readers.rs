//! Several card readers (#15 item 4), through the HTTP routes of a real edge: each reader has its
//! own heartbeats and faults, one reader's heartbeat or card never clears another's fault, the mode
//! is degraded while any configured (or seen) reader is down and the reasons name it; a card check
//! records how the holder was verified and by which route, and one without verification is refused.

use std::time::Duration;

use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, Proc, TODAY, TestDir, assert_error, card_check, edge_bin,
    reconciler_with_registry,
};
use serde_json::{Value, json};

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// The reader `id` in a status's `readers` (Null if absent).
fn reader<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["readers"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["id"] == id))
        .unwrap_or(&Value::Null)
}

/// The status's reasons that contain `needle`.
fn reasons_with(status: &Value, needle: &str) -> Vec<String> {
    status["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|r| r.contains(needle))
        .map(String::from)
        .collect()
}

/// A reader bridge beating every 100 ms, as its own process (killed when dropped).
fn bridge(edge: &Edge, t: &TestDir, id: &str) -> Proc {
    let mut cmd = std::process::Command::new(edge_bin());
    cmd.args([
        "reader-sim",
        "--reader-id",
        id,
        "--every-ms",
        "100",
        "--http",
        &edge.http_addr.to_string(),
    ]);
    // A bridge is a program: it sends the edge's token (ONSHI_TOKEN).
    if let Some(token) = edge.http.token() {
        cmd.env("ONSHI_TOKEN", token);
    }
    Proc::spawn(&format!("reader-sim-{id}"), cmd, t.path())
}

#[test]
fn two_readers_each_keep_their_own_faults_and_card_checks_record_verification_and_route() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("readers");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let mut opts = EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr);
    opts.reader_timeout_ms = Some(1000);
    opts.extra_args = ["--reader", "A", "--reader", "B"]
        .map(String::from)
        .to_vec();
    let edge = Edge::start(&t, opts);

    // Configured and never heard: both down once the timeout since the start has passed.
    let s = edge.wait_status(
        "degraded, readers A and B never heard",
        Duration::from_secs(15),
        |v| {
            v["link"]["state"] == "up"
                && v["mode"] == "degraded"
                && reader(v, "A")["state"] == "down"
                && reader(v, "B")["state"] == "down"
        },
    );
    for id in ["A", "B"] {
        assert_eq!(reader(&s, id)["configured"], true, "{s}");
        assert_eq!(reader(&s, id)["last_heard_s"], Value::Null, "{s}");
        assert_eq!(
            reasons_with(&s, &format!("reader {id}")).len(),
            1,
            "the reasons name {id}: {s}"
        );
    }

    // B's bridge beats: B is up, A stays down, and the mode is degraded because of A alone.
    let mut sim_b = bridge(&edge, &t, "B");
    let s = edge.wait_status("B up while A is down", Duration::from_secs(5), |v| {
        reader(v, "B")["state"] == "up" && reader(v, "A")["state"] == "down"
    });
    assert_eq!(s["mode"], "degraded", "{s}");
    assert_eq!(reasons_with(&s, "reader A").len(), 1, "{s}");
    assert_eq!(reasons_with(&s, "reader B"), Vec::<String>::new(), "{s}");
    assert!(reader(&s, "B")["last_heard_s"].is_number(), "{s}");
    assert_eq!(s["reader"]["state"], "down", "the one-reader summary: {s}");
    assert_eq!(s["reader"]["reader_id"], "A", "{s}");

    // A card on B: answered, recorded with the verification and B as its route; A still down.
    let carded = reg.with_card_id();
    let (code, card) = edge.post(
        "/v1/reader/card",
        &json!({"reader_id": "B", "card_id": carded["card_id"], "verified": "face"}),
    );
    assert_eq!(code, 200, "{card}");
    assert_eq!(
        (card["verified"].as_str(), card["via"].as_str()),
        (Some("face"), Some("reader:B")),
        "{card}"
    );
    let (code, stored) = edge.get(&format!("/v1/checks/{}", str_of(&card["check_id"])));
    assert_eq!(code, 200, "{stored}");
    assert_eq!(
        (stored["verified"].as_str(), stored["via"].as_str()),
        (Some("face"), Some("reader:B")),
        "{stored}"
    );
    let s = edge.status();
    assert_eq!(
        (s["mode"].as_str(), reader(&s, "A")["state"].as_str()),
        (Some("degraded"), Some("down")),
        "B's card does not clear A: {s}"
    );

    // A reports a fault of its own: its words, on A only.
    let (code, v) = edge.post(
        "/v1/reader/heartbeat",
        &json!({"reader_id": "A", "status": "fault", "fault": "face camera error"}),
    );
    assert_eq!(code, 200, "{v}");
    let s = edge.wait_status("A reports its fault", Duration::from_secs(5), |v| {
        reasons_with(v, "reader A reports: face camera error").len() == 1
    });
    assert_eq!(s["mode"], "degraded", "{s}");
    assert_eq!(reader(&s, "B")["state"], "up", "{s}");

    // A's bridge beats too: both up, online again (after the hold time).
    let mut sim_a = bridge(&edge, &t, "A");
    let s = edge.wait_status("online with both readers up", Duration::from_secs(5), |v| {
        v["mode"] == "online"
    });
    assert_eq!(s["reasons"], json!([]), "{s}");
    for id in ["A", "B"] {
        assert_eq!(reader(&s, id)["state"], "up", "{s}");
    }

    // A reader that is not configured is tracked once it posts: silent, it degrades the mode too.
    let (code, v) = edge.post("/v1/reader/heartbeat", &json!({"reader_id": "C"}));
    assert_eq!(code, 200, "{v}");
    let s = edge.wait_status("degraded: C silent", Duration::from_secs(5), |v| {
        v["mode"] == "degraded" && reasons_with(v, "no heartbeat from reader C").len() == 1
    });
    assert_eq!(reader(&s, "C")["configured"], false, "{s}");
    assert_eq!(
        (
            reader(&s, "A")["state"].as_str(),
            reader(&s, "B")["state"].as_str()
        ),
        (Some("up"), Some("up")),
        "{s}"
    );
    assert_error(
        &edge.post("/v1/reader/heartbeat", &json!({"reader_id": "R 1"})),
        400,
        "invalid_format",
        Some("reader_id"),
    );

    // POST /v1/checks with a card_id must say how the holder was verified.
    let by_card = |verified: Option<&str>| {
        let mut body = json!({"card_id": carded["card_id"], "service_date": TODAY});
        if let Some(v) = verified {
            body["verified"] = json!(v);
        }
        edge.post_check(&body)
    };
    assert_error(&by_card(None), 400, "missing_field", Some("verified"));
    assert_error(
        &by_card(Some("retina")),
        400,
        "out_of_range",
        Some("verified"),
    );
    let (code, a) = by_card(Some("pin"));
    assert_eq!(code, 200, "{a}");
    assert_eq!(a["validity"], "valid", "{a}");
    let (_, stored) = edge.get(&format!("/v1/checks/{}", str_of(&a["check_id"])));
    assert_eq!(
        (stored["verified"].as_str(), stored["via"].as_str()),
        (Some("pin"), Some("api")),
        "{stored}"
    );
    // An insurance-card check has no card verification to carry.
    let mut insured = card_check(reg.valid_insured(), TODAY);
    insured["verified"] = json!("face");
    assert_error(
        &edge.post_check(&insured),
        400,
        "unknown_field",
        Some("verified"),
    );
    let (code, plain) = edge.post_check(&card_check(reg.valid_insured(), TODAY));
    assert_eq!(code, 200, "{plain}");
    assert_eq!(plain.get("verified"), None, "{plain}");

    sim_a.kill9();
    sim_b.kill9();
    drop(rec);
}
