//! Issue 18, item 1, from outside: after a realistic session at reception — card checks, a My
//! Number card on the reader, outage searches by name and by kana, a provisional record of a
//! self-declaration, mailbox requests in UTF-8 and Shift_JIS — nothing personal of the people
//! involved is anywhere under the edge's data directory in plain text: names, kana in full- and
//! half-width forms and hiragana, in UTF-8 and Shift_JIS; birth dates as written; addresses; card
//! numbers and My Number card ids. Nor in the edge's log.
//!
//! The scan is shown to work on the same needles: the mailbox's own folders (the receipt
//! computers' share, plain by design) hold the same people's card numbers, birth dates and
//! Shift_JIS half-width kana, and the scan finds them there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use onshi_tests::oqs::{request_doc, result_name, search_info};
use onshi_tests::scan::{contains, files_under, personal as needles};
use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, TODAY, TestDir, reconciler_with_registry, to_hiragana, wait_until,
};
use serde_json::{Value, json};

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

/// Drops an OQS request file into `mailbox/req/` the way receipt computers do (write, rename).
fn drop_request(mailbox: &Path, staging: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(staging.join(name), bytes).unwrap();
    std::fs::rename(staging.join(name), mailbox.join("req").join(name)).unwrap();
}

fn wait_file(path: &Path) -> Vec<u8> {
    wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
        std::fs::read(path).ok()
    })
    .unwrap_or_else(|| panic!("{} did not appear", path.display()))
}

#[test]
fn nothing_personal_is_in_plain_text_under_the_data_directory_after_a_session() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("at-rest-scan");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let mailbox = t.join("mailbox");
    let staging = t.join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let data = t.join("edge");
    let mut opts = EdgeOpts::new(FACILITY_A, &data, &pki, rec.addr);
    opts.mailbox = Some(mailbox.clone());
    opts.mailbox_settle_ms = Some(50);
    let mut edge = Edge::start(&t, opts);
    edge.wait_online();
    let status = edge.status();
    assert_eq!(status["at_rest"]["encrypted"], true, "{status}");
    assert_eq!(status["at_rest"]["key"], "beside", "{status}");

    let people: Vec<Value> = reg.valid_people(0, 6).into_iter().cloned().collect();
    let carded = reg.with_card_id().clone();
    // Card checks at the counter.
    for q in &people[..3] {
        let (code, v) = edge.post_check(&onshi_tests::card_check(q, TODAY));
        assert_eq!((code, v["validity"].as_str()), (200, Some("valid")), "{v}");
    }
    // A My Number card on the reader.
    let (code, v) = edge.post(
        "/v1/reader/card",
        &json!({"reader_id": "R1", "card_id": carded["card_id"], "verified": "face"}),
    );
    assert_eq!(code, 200, "{v}");
    // Mailbox requests: one in UTF-8, one in Shift_JIS; both answered.
    let utf8 = "OQSsiquc01req_20260401090000_0001.xml";
    let doc = request_doc("UTF-8", FACILITY_A, "RC-0001", &search_info(&people[3]));
    drop_request(&mailbox, &staging, utf8, doc.as_bytes());
    let sjis = "OQSsiquc01req_20260401090100_0002.xml";
    let doc = request_doc(
        "Shift_JIS",
        FACILITY_A,
        "受付-0002",
        &search_info(&people[4]),
    );
    let (bytes, _, _) = encoding_rs::SHIFT_JIS.encode(&doc);
    drop_request(&mailbox, &staging, sjis, &bytes);
    wait_file(&mailbox.join("res").join(result_name(utf8)));
    wait_file(&mailbox.join("res").join(result_name(sjis)));
    // Searches by name (kanji) and by kana (hiragana, as a patient spells it).
    for query in [
        json!({"name": people[0]["name"], "birth_date": people[0]["birth_date"], "sex": people[0]["sex"]}),
        json!({"name_kana": to_hiragana(&s(&people[1]["name_kana"])), "birth_date": people[1]["birth_date"], "sex": people[1]["sex"], "address": people[1]["address"]}),
    ] {
        let (code, found) = edge.post("/v1/search", &query);
        assert_eq!(code, 200, "{found}");
    }
    // A provisional record of a self-declaration, address and all.
    let p = &people[5];
    let (code, v) = edge.post(
        "/v1/provisional",
        &json!({
            "declared": {"name": p["name"], "name_kana": p["name_kana"], "birth_date": p["birth_date"],
                         "sex": p["sex"], "address": p["address"]},
            "service_date": TODAY, "total_fee_yen": 1000
        }),
    );
    assert_eq!(code, 201, "{v}");

    // Stopped cleanly, so whatever the store keeps is on disk.
    edge.proc.signal(libc::SIGTERM);
    edge.proc
        .wait_exit(Duration::from_secs(20))
        .expect("the edge stops on SIGTERM");
    let log = edge.proc.stderr();

    let mut involved = people.clone();
    involved.push(carded);
    let all: Vec<(String, Vec<u8>)> = involved.iter().flat_map(needles).collect();

    // The scan finds what is there: the share holds the requests' card numbers and birth dates
    // and the Shift_JIS result's half-width kana.
    let share = files_under(&mailbox);
    for q in [&people[3], &people[4]] {
        for (what, needle) in needles(q) {
            let plainly_there = what.starts_with("insurer number (UTF-8)")
                || what.starts_with("birth date (file form) (UTF-8)")
                || (std::ptr::eq(q, &people[4])
                    && what.starts_with("kana, half-width (Shift_JIS)"));
            if plainly_there {
                assert!(
                    share.iter().any(|(_, b)| contains(b, &needle)),
                    "the scan does not find {what} in the mailbox folders"
                );
            }
        }
    }

    let files = files_under(&data);
    assert!(
        files.iter().any(|(p, _)| p.ends_with("journal/db")),
        "the data directory holds the store"
    );
    let mut found = Vec::new();
    for (path, bytes) in &files {
        for (what, needle) in &all {
            if contains(bytes, needle) {
                found.push(format!("{what} in {}", path.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "personal data in plain text:\n{}",
        found.join("\n")
    );
    let in_log: Vec<&String> = all
        .iter()
        .filter(|(_, n)| contains(log.as_bytes(), n))
        .map(|(w, _)| w)
        .collect();
    assert!(
        in_log.is_empty(),
        "personal data in the edge's log: {in_log:?}"
    );
    // The key is beside the data directory, not in it.
    assert!(t.join("edge.key").is_file());
}
