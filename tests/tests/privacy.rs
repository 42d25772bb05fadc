//! Logs carry no personal data at info level: a day of reception (checks online and offline, a
//! search, a provisional record, a batch, an outage, sync, request files through the OQS mailbox,
//! a rejected one among them) for a known person, then neither daemon's log holds their name,
//! reading, card number, birth date or address.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, TODAY, TestDir, card_check, reconciler_with_registry,
};
use serde_json::json;

fn str_of(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// A single-check request file for period `q` with this insurer number.
fn request_xml(q: &serde_json::Value, insurer: &serde_json::Value) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><XmlMsg><MessageHeader><QualificationConfirmationDate>{}</QualificationConfirmationDate><MedicalInstitutionCode>{FACILITY_A}</MedicalInstitutionCode><ArbitraryFileIdentifier>P</ArbitraryFileIdentifier></MessageHeader><MessageBody><QualificationConfirmSearchInfo><InsurerNumber>{}</InsurerNumber><InsuredCardSymbol>{}</InsuredCardSymbol><InsuredIdentificationNumber>{}</InsuredIdentificationNumber><InsuredBranchNumber>{}</InsuredBranchNumber><Birthdate>{}</Birthdate></QualificationConfirmSearchInfo></MessageBody></XmlMsg>",
        TODAY.replace('-', ""),
        str_of(insurer),
        str_of(&q["symbol"]),
        str_of(&q["number"]),
        str_of(&q["branch"]),
        str_of(&q["birth_date"]).replace('-', "")
    )
}

fn drop_request(mailbox: &std::path::Path, name: &str, text: &str) {
    let tmp = mailbox.join(format!("{name}.part"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, mailbox.join("req").join(name)).unwrap();
}

fn wait_file(path: &std::path::Path) {
    onshi_tests::wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
        path.exists().then_some(())
    })
    .unwrap_or_else(|| panic!("{} never appeared", path.display()));
}

#[test]
fn no_personal_data_in_info_logs() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("privacy");
    let (pki, reg, mut rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let mut opts = EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr);
    let mailbox = t.join("mailbox");
    opts.mailbox = Some(mailbox.clone());
    opts.mailbox_settle_ms = Some(50);
    let edge = Edge::start(&t, opts);
    edge.wait_online();
    // Someone whose card number is long enough to be told apart from other numbers in a log.
    let p = reg
        .valid_people(0, 300)
        .into_iter()
        .find(|q| str_of(&q["number"]).len() >= 6)
        .expect("a person with a long card number")
        .clone();
    let check = card_check(&p, TODAY);

    assert_eq!(edge.post_check(&check).0, 200);
    // Through the file mailbox: a request, and a rejected one (a mistyped insurer number).
    drop_request(
        &mailbox,
        "OQSsiquc01req_privacy_1.xml",
        &request_xml(&p, &p["insurer_number"]),
    );
    wait_file(&mailbox.join("res/OQSsiquc01res_privacy_1.xml"));
    let typo = json!(onshi_tests::mistype_check_digit(&str_of(
        &p["insurer_number"]
    )));
    drop_request(
        &mailbox,
        "OQSsiquc01req_privacy_2.xml",
        &request_xml(&p, &typo),
    );
    wait_file(&mailbox.join("err/OQSsiquc01req_privacy_2.xml.reason.txt"));
    assert_eq!(
        edge.post(
            "/v1/batch",
            &json!({"service_date": TODAY, "checks": [check.clone()]})
        )
        .0,
        200
    );
    assert_eq!(
        edge.post(
            "/v1/outage",
            &json!({"active": true, "reason": "card reader broken"})
        )
        .0,
        200
    );
    let search = json!({"name": p["name"], "birth_date": p["birth_date"], "sex": p["sex"], "address": p["address"]});
    assert_eq!(edge.post("/v1/search", &search).0, 200);
    let prov = json!({"declared": {"name": p["name"], "name_kana": p["name_kana"], "birth_date": p["birth_date"], "sex": p["sex"], "address": p["address"], "insurer_name": p["insurer_name"]}, "service_date": TODAY, "total_fee_yen": 4321});
    assert_eq!(edge.post("/v1/provisional", &prov).0, 201);
    // Offline too: the answer from the replica, and a record synced later.
    rec.kill9();
    edge.wait_status("offline", Duration::from_secs(10), |v| {
        v["mode"] == "offline"
    });
    assert_eq!(edge.post_check(&check).0, 200);
    assert_eq!(edge.post("/v1/provisional", &prov).0, 201);
    drop_request(
        &mailbox,
        "OQSsiquc01req_privacy_3.xml",
        &request_xml(&p, &p["insurer_number"]),
    );
    let res3 = mailbox.join("res/OQSsiquc01res_privacy_3.xml");
    wait_file(&res3);
    let rec = rec.restart(&t);
    edge.wait_online();
    // The final result replaces the interim one once the link is back.
    onshi_tests::wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
        std::fs::read_to_string(&res3)
            .ok()
            .filter(|t| t.contains("<SegmentOfResult>1<"))
    })
    .expect("the final result");
    let synced = edge.cli(&["sync-now", "--timeout-s", "20"]);
    assert!(
        synced.status.success(),
        "{}",
        String::from_utf8_lossy(&synced.stdout)
    );

    let logs = format!("{}\n{}", edge.proc.stderr(), rec.proc.stderr());
    assert!(
        logs.lines().count() > 10,
        "the daemons logged their work:\n{logs}"
    );
    let name = str_of(&p["name"]);
    let family = name.split('　').next().unwrap_or_default().to_string();
    let secrets = [
        ("name", name.clone()),
        ("family name", family),
        ("kana", str_of(&p["name_kana"])),
        ("card number", str_of(&p["number"])),
        ("birth date", str_of(&p["birth_date"])),
        ("address", str_of(&p["address"])),
    ];
    for (what, secret) in secrets {
        assert!(secret.chars().count() >= 2, "{what}: {secret}");
        let hit = logs.lines().find(|l| l.contains(&secret));
        assert!(
            hit.is_none(),
            "the {what} ({secret}) is in a log line: {}",
            hit.unwrap_or_default()
        );
    }
}
