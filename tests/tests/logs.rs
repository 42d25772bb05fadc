//! Log formats: human-readable by default (no colour codes when stderr is not a terminal), one JSON
//! object per line with `ONSHI_LOG_FORMAT=json`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use onshi_tests::{FACILITY_A, Pki, Proc, TestDir, reconciler_bin};

fn start(t: &TestDir, pki: &Pki, name: &str, json: bool) -> Proc {
    let mut cmd = Command::new(reconciler_bin());
    cmd.args(["serve", "--data"])
        .arg(t.join(name))
        .arg("--pki")
        .arg(&pki.dir)
        .args(["--listen", "127.0.0.1:0"]);
    cmd.env_remove("NOTIFY_SOCKET").env("RUST_LOG", "info");
    if json {
        cmd.env("ONSHI_LOG_FORMAT", "json");
    } else {
        cmd.env_remove("ONSHI_LOG_FORMAT");
    }
    let mut p = Proc::spawn(name, cmd, t.path());
    p.wait_line(
        "onshi-reconciler: listening on quic://",
        Duration::from_secs(30),
    );
    assert!(
        p.wait_stderr(&["reconciler listening"], Duration::from_secs(10))
            .is_some(),
        "{}",
        p.stderr_tail(10)
    );
    p
}

#[test]
fn plain_by_default_and_json_on_request() {
    let t = TestDir::new("logs");
    let pki = Pki::init(&t.join("pki"), &[FACILITY_A]);

    let plain = start(&t, &pki, "plain", false);
    let text = plain.stderr();
    assert!(
        !text.contains('\u{1b}'),
        "no escape codes in a log file:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("INFO") && l.contains("reconciler listening")),
        "{text}"
    );

    let json = start(&t, &pki, "json", true);
    let text = json.stderr();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let listening = lines
        .iter()
        .find(|v| v["message"] == "reconciler listening")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(listening["level"], "INFO");
    assert_eq!(
        listening["facilities"], 1,
        "structured fields are fields: {listening}"
    );
}
