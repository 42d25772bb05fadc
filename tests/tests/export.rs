//! `onshi-edge export`: the whole journal as JSON lines, as a vendor or an auditor gets it; and the
//! shell completions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, TODAY, TestDir, card_check, edge_bin, reconciler_with_registry, run,
};
use serde_json::{Value, json};

#[test]
fn export_lists_every_check_and_provisional_record() {
    let t = TestDir::new("export");
    let (pki, reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let edge = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr),
    );
    edge.wait_online();
    let (code, check) = edge.post_check(&card_check(reg.valid_insured(), TODAY));
    assert_eq!(code, 200, "{check}");
    let (code, prov) = edge.post(
        "/v1/provisional",
        &json!({"declared": {"name": "山田　花子", "birth_date": "S55.4.1", "sex": "female"}, "service_date": TODAY, "total_fee_yen": 5000}),
    );
    assert_eq!(code, 201, "{prov}");

    let out = edge.cli(&["export"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["record"], "check");
    assert_eq!(lines[0]["check_id"], check["check_id"]);
    assert_eq!(lines[0]["validity"], "valid");
    assert_eq!(
        lines[0]["request"]["birth_date"],
        reg.valid_insured()["birth_date"]
    );
    assert_eq!(lines[1]["record"], "provisional");
    assert_eq!(lines[1]["record_id"], prov["record_id"]);
    assert_eq!(lines[1]["collected_yen"], prov["collected_yen"]);
    drop(rec);
}

#[test]
fn bash_completions_cover_the_commands() {
    let out = run(&edge_bin(), &["completions", "bash"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "run",
        "status",
        "queue",
        "export",
        "sync-now",
        "reader-sim",
        "check-config",
        "demo",
    ] {
        assert!(text.contains(cmd), "completions mention {cmd}");
    }
    assert!(text.contains("complete -F"), "a bash completion script");
}
