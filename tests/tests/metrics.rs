//! `/metrics` on the edge and on the reconciler (`--metrics`), scraped from real processes and
//! parsed as Prometheus text: the values move with known traffic (online checks by validity, a
//! check answered from the replica with the link down, a provisional record synced and settled),
//! the latency histograms count every check, and no label carries personal data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, Metrics, Reconciler, Registry, TODAY, TestDir, card_check,
    mistype_check_digit, wait_until,
};
use serde_json::json;

/// Polls until `pred` holds for a fresh scrape; returns it or panics with the last one.
fn wait_metrics(
    what: &str,
    scrape: impl Fn() -> Metrics,
    pred: impl Fn(&Metrics) -> bool,
) -> Metrics {
    let mut last = Metrics::default();
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let m = scrape();
        if pred(&m) {
            Some(m)
        } else {
            last = m;
            None
        }
    })
    .unwrap_or_else(|| panic!("metrics never showed {what}; last page:\n{}", last.text))
}

#[test]
fn edge_and_reconciler_metrics_follow_the_traffic() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("metrics");
    let pki = onshi_tests::Pki::init(&t.join("pki"), &[FACILITY_A]);
    let reg = Registry::standard(&t);
    let data = t.join("reconciler");
    reg.import(&data);
    let mut rec = Reconciler::start_with_metrics(&t, &data, &pki);

    let before = rec.metrics();
    assert_eq!(
        before.types["onshi_reconciler_request_duration_seconds"],
        "histogram"
    );
    assert_eq!(before.get("onshi_reconciler_connected_facilities"), 0.0);
    assert_eq!(before.get("onshi_reconciler_known_facilities"), 1.0);
    assert!(before.get("onshi_reconciler_registry_periods") > 0.0);

    let edge = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr),
    );
    edge.wait_online();
    let edge_metrics = || Metrics::scrape(&edge.http.base);

    // Three online checks: two valid, one not found (a card number nobody has).
    // Someone whose card number is long enough to be told apart from numbers on a metrics page.
    let p = reg
        .valid_people(0, 300)
        .into_iter()
        .find(|q| q["number"].as_str().is_some_and(|n| n.len() >= 6))
        .expect("a person with a long card number")
        .clone();
    let check = card_check(&p, TODAY);
    for _ in 0..2 {
        let (code, v) = edge.post_check(&check);
        assert_eq!((code, v["validity"].as_str()), (200, Some("valid")), "{v}");
    }
    let mut unknown = check.clone();
    unknown["insurance_card"]["number"] = json!("99999999");
    let (code, v) = edge.post_check(&unknown);
    assert_eq!(
        (code, v["validity"].as_str()),
        (200, Some("not_found")),
        "{v}"
    );
    // A mistyped check digit is refused (400) and counted nowhere.
    let mut typo = check.clone();
    typo["insurance_card"]["insurer_number"] =
        json!(mistype_check_digit(p["insurer_number"].as_str().unwrap()));
    assert_eq!(edge.post_check(&typo).0, 400);

    let r = rec.metrics();
    assert_eq!(
        r.get("onshi_reconciler_checks_total{validity=\"valid\"}"),
        2.0,
        "{}",
        r.text
    );
    assert_eq!(
        r.get("onshi_reconciler_checks_total{validity=\"not_found\"}"),
        1.0
    );
    assert_eq!(
        r.get(&format!(
            "onshi_reconciler_facility_checks_total{{facility=\"{FACILITY_A}\"}}"
        )),
        3.0
    );
    assert_eq!(
        r.get("onshi_reconciler_requests_total{kind=\"check\"}"),
        3.0
    );
    assert_eq!(
        r.get("onshi_reconciler_request_duration_seconds_count{kind=\"check\"}"),
        3.0
    );
    assert_eq!(
        r.get("onshi_reconciler_request_duration_seconds_bucket{kind=\"check\",le=\"+Inf\"}"),
        3.0
    );
    assert_eq!(r.get("onshi_reconciler_connected_facilities"), 1.0);
    assert_eq!(
        r.get("onshi_reconciler_connections_total{outcome=\"accepted\"}"),
        1.0
    );
    assert!(r.get("onshi_reconciler_requests_total{kind=\"ping\"}") >= 1.0);

    let e = edge_metrics();
    assert_eq!(
        e.get("onshi_check_answers_total{source=\"online\",validity=\"valid\"}"),
        2.0,
        "{}",
        e.text
    );
    assert_eq!(
        e.get("onshi_check_answers_total{source=\"online\",validity=\"not_found\"}"),
        1.0
    );
    assert_eq!(e.get("onshi_checks_total{source=\"online\"}"), 3.0);
    assert_eq!(e.types["onshi_check_duration_seconds"], "histogram");
    assert_eq!(
        e.get("onshi_check_duration_seconds_count{source=\"online\"}"),
        3.0
    );
    // Every answer took at most the deadline plus the fsync: all in the 3 s bucket.
    assert_eq!(
        e.get("onshi_check_duration_seconds_bucket{source=\"online\",le=\"3\"}"),
        3.0
    );
    assert!(e.get("onshi_check_duration_seconds_sum{source=\"online\"}") > 0.0);
    assert_eq!(e.get("onshi_mode{mode=\"online\"}"), 1.0);
    assert_eq!(e.get("onshi_link_up"), 1.0);
    let rtt = e.get("onshi_link_rtt_seconds");
    assert!(rtt > 0.0 && rtt < 1.0, "link RTT on loopback: {rtt}");
    assert!(e.get("onshi_sync_rounds_total") >= 1.0, "{}", e.text);
    assert_eq!(e.get("onshi_queue_quarantined"), 0.0);
    // The link's goodput: three checks and their answers (each a frame of tens of bytes at
    // least), pings and sync rounds.
    let payload = |m: &Metrics| {
        (
            m.get("onshi_link_payload_bytes_total{direction=\"to_reconciler\"}"),
            m.get("onshi_link_payload_bytes_total{direction=\"from_reconciler\"}"),
        )
    };
    let (up, down) = payload(&e);
    assert!(up >= 3.0 * 20.0 && down >= 3.0 * 20.0, "{}", e.text);

    // The reconciler goes: the same person is answered from the replica, an unknown one is
    // queued, and a provisional record waits with its yen.
    rec.kill9();
    edge.wait_mode("offline", Duration::from_secs(10));
    let (code, v) = edge.post_check(&check);
    assert_eq!((code, v["source"].as_str()), (200, Some("replica")), "{v}");
    let (code, v) = edge.post_check(&unknown);
    assert_eq!((code, v["source"].as_str()), (200, Some("queued")), "{v}");
    let prov = json!({"declared": {"name": p["name"], "name_kana": p["name_kana"], "birth_date": p["birth_date"],
        "sex": p["sex"], "insurer_name": p["insurer_name"], "share_percent": p["share_percent"]},
        "service_date": TODAY, "total_fee_yen": 10_000});
    let (code, made) = edge.post("/v1/provisional", &prov);
    assert_eq!(code, 201, "{made}");
    let collected = made["collected_yen"].as_f64().unwrap();

    let e = edge_metrics();
    assert_eq!(
        e.get("onshi_check_answers_total{source=\"replica\",validity=\"valid\"}"),
        1.0,
        "{}",
        e.text
    );
    assert_eq!(
        e.get("onshi_check_answers_total{source=\"queued\",validity=\"pending\"}"),
        1.0
    );
    assert_eq!(
        e.get("onshi_check_duration_seconds_count{source=\"replica\"}"),
        1.0
    );
    assert_eq!(e.get("onshi_mode{mode=\"offline\"}"), 1.0);
    assert_eq!(e.get("onshi_link_up"), 0.0);
    // Two deferred checks and the provisional record.
    assert_eq!(e.get("onshi_queue_pending"), 3.0);
    assert_eq!(e.get("onshi_queue_provisional_yen"), collected);
    assert_eq!(e.get("onshi_sync_synced"), 0.0);
    let e = wait_metrics("an oldest pending age of 1 s or more", edge_metrics, |m| {
        m.get("onshi_queue_oldest_pending_seconds") >= 1.0
    });
    let rounds_offline = e.get("onshi_sync_rounds_total");
    // Nothing is answered while the reconciler is gone: no goodput counted.
    let offline_payload = payload(&e);
    assert!(offline_payload.0 >= up && offline_payload.1 >= down);
    assert_eq!(payload(&edge_metrics()), offline_payload);

    // Back: the record syncs and is settled; the deferred checks complete.
    let rec = rec.restart_with_metrics(&t);
    let r = wait_metrics(
        "a settlement at the reconciler",
        || rec.metrics(),
        |m| m.sum("onshi_reconciler_settlements_total{") >= 1.0,
    );
    assert_eq!(
        r.get("onshi_reconciler_settlements_total{kind=\"confirmed\"}"),
        1.0,
        "{}",
        r.text
    );
    assert!(r.get("onshi_reconciler_records_persisted_total") >= 1.0);
    assert!(r.get("onshi_reconciler_sync_rounds_total") >= 1.0);
    assert_eq!(r.get("onshi_reconciler_quarantined_total"), 0.0);
    assert!(r.get("onshi_reconciler_request_duration_seconds_count{kind=\"sync\"}") >= 1.0);
    let e = wait_metrics(
        "synced with the deferred checks completed",
        edge_metrics,
        |m| m.get("onshi_sync_synced") == 1.0 && m.get("onshi_deferred_completed_total") == 2.0,
    );
    assert!(e.get("onshi_sync_rounds_total") > rounds_offline);
    assert!(e.get("onshi_sync_last_synced_timestamp_seconds") > 1.7e9);
    assert!(e.get("onshi_link_reconnects_total") >= 1.0);

    // No label names a person: neither their name, card number nor birth date appears anywhere.
    for page in [&e.text, &r.text] {
        for field in ["name", "name_kana", "number", "birth_date", "address"] {
            let v = p[field].as_str().unwrap();
            assert!(!page.contains(v), "{field} {v} appears in a metrics page");
        }
    }

    // The edge gone, the facility is no longer connected.
    drop(edge);
    wait_metrics(
        "no facility connected",
        || rec.metrics(),
        |m| m.get("onshi_reconciler_connected_facilities") == 0.0,
    );
}
