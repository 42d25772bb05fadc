//! Journal sync across real processes (issue 4): provisional records made while the reconciler is
//! down (SIGKILL) reach it after its restart exactly once, are settled there against the registry
//! on the service date, and the settlements come back to the edge's queue; staff close them
//! (idempotent, 409 before a settlement, 404 for an unknown id); status shows the last sync; and a
//! facility never sees, nor can write, another facility's records, even by crafting sync messages
//! on its own authenticated connection.

use std::time::Duration;

use onshi_model::FacilityCode;
use onshi_sync::crdt::{JournalRecord, RecordFacts};
use onshi_sync::link::{LinkClient, LinkSettings};
use onshi_sync::protocol::{Run, Summary, SyncMessage};
use onshi_sync::wire::NO_SESSION;
use onshi_sync::wire::{Request, Response};
use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, FACILITY_B, TODAY, TestDir, assert_error, reconciler_with_registry,
    wait_until,
};
use serde_json::{Value, json};

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// `onshi-edge sync-now`, which must report "synced".
#[track_caller]
fn sync_now(edge: &Edge) {
    let out = edge.cli(&["sync-now", "--timeout-s", "20"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("synced"),
        "onshi-edge sync-now: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn queue_item(edge: &Edge, id: &str) -> Value {
    let q = edge.queue();
    q["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("{id} is not in the queue: {q}"))
}

/// Waits until the queue shows a settlement for `id`.
fn wait_settled(edge: &Edge, id: &str) -> Value {
    wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let item = queue_item(edge, id);
        item["settlement"].is_object().then_some(item)
    })
    .unwrap_or_else(|| panic!("no settlement came back for {id}: {}", edge.queue()))
}

#[test]
fn offline_records_reach_the_reconciler_once_settle_and_come_back_and_facilities_stay_apart() {
    let t = TestDir::new("sync");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A, FACILITY_B]);
    let edge = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_A, &t.join("edge-a"), &pki, rec.addr),
    );
    edge.wait_online();

    // A person valid on the service date, with their share.
    let q = reg.valid_insured().clone();
    let share = q["share_percent"].as_u64().expect("share_percent");
    assert!(share <= 90, "{q}");
    let declared = |share_percent: u64| {
        json!({"name": q["name"], "name_kana": q["name_kana"], "birth_date": q["birth_date"], "sex": q["sex"],
               "insurer_name": q["insurer_name"], "share_percent": share_percent})
    };

    // The reconciler dies; two records are made offline: one at the right share (confirmed), one
    // at ten points too many (refund of 10 % of the total fee).
    let mut rec = rec;
    rec.kill9();
    edge.wait_mode("offline", Duration::from_secs(10));
    let total = 12_340u64;
    let mut ids = Vec::new();
    for s in [share, share + 10] {
        let (code, v) = edge.post("/v1/provisional", &json!({"declared": declared(s), "person_id": q["person_id"], "service_date": TODAY, "total_fee_yen": total}));
        assert_eq!(code, 201, "{v}");
        ids.push(str_of(&v["record_id"]).to_string());
    }
    for id in &ids {
        let item = queue_item(&edge, id);
        assert_eq!(item["state"], "recorded", "{item}");
        assert!(item["settlement"].is_null(), "{item}");
        // Not settled yet: closing is refused.
        assert_error(
            &edge.post(&format!("/v1/queue/{id}/close"), &json!({})),
            409,
            "not_settled",
            Some("id"),
        );
    }
    assert_error(
        &edge.post(
            &format!("/v1/queue/{FACILITY_A}-00000000-0000000099/close"),
            &json!({}),
        ),
        404,
        "not_found",
        Some("id"),
    );
    assert_error(
        &edge.post("/v1/queue/nonsense/close", &json!({})),
        404,
        "not_found",
        Some("id"),
    );
    let s = edge.status();
    assert_eq!(s["sync"]["synced"], false, "{s}");
    let out = edge.cli(&["sync-now", "--timeout-s", "1"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "sync-now with the reconciler down: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Back: the records flow, are settled once, and the settlements come back.
    let rec = rec.restart(&t);
    edge.wait_online();
    sync_now(&edge);
    let confirmed = wait_settled(&edge, &ids[0]);
    let refund = wait_settled(&edge, &ids[1]);
    // Status and metrics count both settlements back, and both still open until staff close them.
    let status = edge.status();
    assert_eq!(status["queue"]["settled"], 2, "{status}");
    assert_eq!(status["queue"]["pending"], 2, "{status}");
    assert_eq!(status["queue"]["quarantined"], 0, "{status}");
    let metrics = onshi_tests::Metrics::scrape(&edge.http.base);
    assert_eq!(metrics.get("onshi_queue_settled"), 2.0);
    assert_eq!(confirmed["settlement"]["kind"], "confirmed", "{confirmed}");
    assert_eq!(confirmed["state"], "settled", "{confirmed}");
    assert_eq!(
        confirmed["settlement"]["insurer"]["name"], q["insurer_name"],
        "{confirmed}"
    );
    assert!(
        confirmed["settlement"]["explanation"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{confirmed}"
    );
    let collected = |p: u64| (total * p + 500) / 1000 * 10;
    let expected = collected(share + 10) - collected(share);
    assert_eq!(refund["settlement"]["kind"], "refund", "{refund}");
    assert_eq!(
        refund["settlement"]["yen"], expected,
        "refund of ¥{total} × 10 %, rounded to 10 yen: {refund}"
    );
    assert_eq!(
        refund["settlement"]["insurer"]["number"], q["insurer_number"],
        "{refund}"
    );
    let s = edge.wait_status("synced", Duration::from_secs(10), |v| {
        v["sync"]["synced"] == true
    });
    assert!(
        s["last_sync"].is_string(),
        "status shows the last sync: {s}"
    );
    assert_eq!(
        (
            s["sync"]["outgoing"].as_u64(),
            s["sync"]["incoming"].as_u64()
        ),
        (Some(0), Some(0)),
        "{s}"
    );

    // Close: idempotent, and the queue shows it; pending counts only open items.
    let pending_before = edge.queue()["pending"].as_u64().expect("pending");
    for _ in 0..2 {
        let (code, v) = edge.post(&format!("/v1/queue/{}/close", ids[1]), &json!({}));
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["state"], "closed", "{v}");
        assert_eq!(v["settlement"]["kind"], "refund", "{v}");
    }
    assert_eq!(queue_item(&edge, &ids[1])["state"], "closed");
    assert_eq!(edge.queue()["pending"].as_u64(), Some(pending_before - 1));
    sync_now(&edge);

    // Another SIGKILL of the reconciler and of the edge: nothing is sent or settled again.
    let rec = rec.restart(&t);
    let mut edge = edge;
    edge.kill9();
    let edge = edge.restart();
    edge.wait_online();
    sync_now(&edge);
    assert_eq!(
        queue_item(&edge, &ids[1])["state"],
        "closed",
        "closing survives both restarts"
    );
    assert_eq!(
        queue_item(&edge, &ids[0])["settlement"],
        confirmed["settlement"],
        "the settlement is the same one"
    );
    let log = rec.proc.stderr();
    for id in &ids {
        let settled = log
            .lines()
            .filter(|l| l.contains("provisional record settled") && l.contains(id.as_str()))
            .count();
        assert_eq!(
            settled,
            1,
            "{id} settled exactly once at the reconciler:\n{}",
            rec.proc.stderr_tail(40)
        );
    }

    // Facility B: its edge syncs and never sees A's records.
    let edge_b = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_B, &t.join("edge-b"), &pki, rec.addr),
    );
    edge_b.wait_online();
    sync_now(&edge_b);
    let qb = edge_b.queue();
    assert!(
        qb["items"].as_array().is_some_and(Vec::is_empty),
        "B's queue holds none of A's records: {qb}"
    );

    // A crafted attempt from B's authenticated connection: claiming to be A, summarising A's ids,
    // and sending A's record. The reconciler refuses each and sends nothing of A's.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let b = FacilityCode::parse(FACILITY_B).expect("B");
        let a = FacilityCode::parse(FACILITY_A).expect("A");
        let identity = onshi_sync::pki::load_client(&pki.dir, &b).expect("B's certificate");
        let link = LinkClient::new(rec.addr, &identity, LinkSettings::default()).expect("link");
        let mut watch = link.subscribe();
        tokio::time::timeout(Duration::from_secs(10), watch.wait_for(|s| s.is_up())).await.expect("B's link comes up").expect("watch");
        let call = |msgs: Vec<SyncMessage>| {
            let link = &link;
            async move {
                let frames = msgs.iter().map(|m| m.encode().expect("encode")).collect();
                match link.call(Request::Sync(frames), Duration::from_secs(10)).await.expect("sync RPC") {
                    Response::Sync(frames) => Ok(frames.iter().map(|f| SyncMessage::decode(f).expect("decode")).collect::<Vec<_>>()),
                    Response::Error { code, message } => Err((code, message)),
                    other => panic!("unexpected answer {other:?}"),
                }
            }
        };
        let a_id = onshi_sync::crdt::RecordId::parse(&ids[0]).expect("id");
        let runs = vec![Run { facility: a.clone(), node: a_id.node(), first_seq: a_id.seq(), count: 2, versions: Default::default() }];
        // 1. A Hello naming A on B's connection: the session is refused.
        let r = call(vec![SyncMessage::Hello { facility: a.clone(), seen_yours: false, have: Summary { runs: runs.clone() } }]).await;
        assert_eq!(r.as_ref().err().map(|e| e.0.as_str()), Some(NO_SESSION), "a Hello for A on B's connection: {r:?}");
        // 2. B's own Hello claiming to lack A's records: nothing of A's comes back.
        let r = call(vec![SyncMessage::Hello { facility: b.clone(), seen_yours: false, have: Summary { runs } }]).await.expect("B's hello");
        let mut answers = r;
        // 3. A's record (a forged copy) in a batch from B: rejected, nothing of A's comes back.
        let forged = JournalRecord::new(a_id.clone(), RecordFacts::Provisional(onshi_model::record::ProvisionalRecord {
            record_id: ids[0].clone(),
            created_at: chrono::Utc::now(),
            declared: serde_json::from_value(json!({"name": "偽", "name_kana": null, "birth_date": "1990-01-01", "sex": "male", "address": null,
                "insurer_name": null, "insurance_type": null, "employer": null, "contact": null, "share_percent": 30})).expect("declaration"),
            person_id: None,
            service_date: chrono::NaiveDate::from_ymd_opt(2026, 4, 1).expect("date"),
            total_fee_yen: 1000,
            share_percent: 30,
            collected_yen: 300,
            basis: onshi_model::record::Basis::Declared,
            rule: None,
            explanation: "forged".into(),
            state: onshi_model::record::RecordState::Recorded,
        }))
        .expect("record");
        let r = call(vec![SyncMessage::Batch { batch_id: 7, records: vec![forged] }]).await.expect("batch answered");
        let rejected = r.iter().any(|m| matches!(m, SyncMessage::Ack { batch_id: 7, acked, rejected } if acked.is_empty() && rejected.iter().any(|x| x.id == a_id)));
        assert!(rejected, "A's record from B's connection is rejected: {r:?}");
        answers.extend(r);
        for _ in 0..3 {
            answers.extend(call(vec![]).await.unwrap_or_default());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for m in &answers {
            match m {
                SyncMessage::Batch { records, .. } => {
                    assert!(records.iter().all(|r| r.id().facility() == &b), "B was sent another facility's record: {m:?}")
                }
                SyncMessage::Hello { facility, have, .. } => {
                    assert_eq!(facility, &b);
                    assert!(have.runs.iter().all(|r| r.facility == b), "B's Hello summarises another facility: {m:?}");
                }
                _ => {}
            }
        }
        link.close().await;
    });

    // A's records at the reconciler are untouched by B's attempt: A still syncs, its settlement unchanged.
    sync_now(&edge);
    let item = queue_item(&edge, &ids[0]);
    assert_eq!(item["settlement"], confirmed["settlement"], "{item}");
    assert_ne!(item["state"], "quarantined", "{item}");
}
