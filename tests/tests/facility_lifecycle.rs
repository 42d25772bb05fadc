//! A facility's lifecycle while the reconciler serves (issue 16, item 6), across real processes:
//! `onshi-reconciler facility add|revoke|list` reach the running `serve` through its admin socket
//! (it holds the embedded store), and real edges connect over QUIC with the certificates those
//! commands issue. A facility added while serving connects; a revoked one's connected edge is
//! closed and refused with the reason in the reconciler's log; a re-issued certificate connects
//! while the one it replaced is refused; `facility list` shows each state.
//!
//! The reconciler follows the store every 2 s, so each change takes effect within 10 s (the
//! issue's bound): the waits below are that bound, conditions polled, never sleeps.

use std::process::Output;
use std::time::Duration;

use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, FACILITY_B, Pki, Reconciler, Registry, TODAY, TestDir, card_check,
    reconciler_bin, run, wait_until,
};
use serde_json::Value;

/// How long a change may take to reach the running reconciler and its edges.
const WITHIN: Duration = Duration::from_secs(10);

fn facility(args: &[&str]) -> Output {
    let mut all = vec!["facility"];
    all.extend_from_slice(args);
    run(&reconciler_bin(), &all)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `facility ARGS…`, which must succeed; its standard output.
#[track_caller]
fn facility_ok(args: &[&str]) -> String {
    let out = facility(args);
    assert!(
        out.status.success(),
        "facility {args:?}: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `facility list`'s line for `code`.
#[track_caller]
fn listed(data: &str, code: &str) -> String {
    let out = facility_ok(&["list", "--data", data]);
    out.lines()
        .find(|l| l.trim_start().starts_with(code))
        .unwrap_or_else(|| panic!("facility list has no line for {code}:\n{out}"))
        .to_string()
}

/// Waits for a line of the reconciler's stderr written after byte `from` containing every one of
/// `words`.
#[track_caller]
fn wait_log(rec: &Reconciler, from: usize, words: &[&str]) -> String {
    wait_until(WITHIN, Duration::from_millis(50), || {
        rec.proc
            .stderr()
            .get(from..)
            .unwrap_or_default()
            .lines()
            .find(|l| words.iter().all(|w| l.contains(w)))
            .map(str::to_string)
    })
    .unwrap_or_else(|| {
        panic!(
            "the reconciler logs a line with {words:?}; its stderr:\n{}",
            rec.proc.stderr_tail(40)
        )
    })
}

/// Waits until the edge's link is down and refused with a reason containing `why`.
#[track_caller]
fn wait_refused(edge: &Edge, why: &str) -> Value {
    edge.wait_status(&format!("refused: {why}"), WITHIN, |v| {
        v["link"]["state"] != "up"
            && v["mode"] != "online"
            && v["link"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("refused") && e.contains(why))
    })
}

#[test]
fn facilities_are_added_revoked_and_reissued_while_the_reconciler_serves() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("facility-lifecycle");
    let pki = Pki::init(&t.join("pki"), &[FACILITY_A]);
    let registry = Registry::standard(&t);
    let data_dir = t.join("reconciler");
    registry.import(&data_dir);
    let rec = Reconciler::start_with_metrics(&t, &data_dir, &pki);
    let data = data_dir.display().to_string();
    let pki_dir = pki.dir.display().to_string();
    let check = card_check(registry.valid_insured(), TODAY);

    // A facility of `pki init` is recorded at start and keeps working.
    let line = listed(&data, FACILITY_A);
    assert!(line.contains("active"), "{line}");
    let a = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_A, &t.join("edge-a"), &pki, rec.addr),
    );
    a.wait_online();

    // Added while serving (through the admin socket): its edge connects and is answered online.
    let out = facility_ok(&["add", FACILITY_B, "--pki", &pki_dir, "--data", &data]);
    assert!(
        out.contains(&format!("facility {FACILITY_B} added")),
        "{out}"
    );
    let first = listed(&data, FACILITY_B);
    assert!(first.contains("active"), "{first}");
    // The first certificate, as a box that is later stolen still holds it.
    let first_pki = pki.copy_to(&t.join("pki-first-certificate"));
    let b = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_B, &t.join("edge-b"), &pki, rec.addr),
    );
    b.wait_status("online", WITHIN, |v| {
        v["mode"] == "online" && v["link"]["state"] == "up"
    });
    let (code, v) = b.post_check(&check);
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["validity"].as_str(), v["source"].as_str()),
        (Some("valid"), Some("online")),
        "{v}"
    );

    // Revoked: its connected edge is closed and refused, the reason in the reconciler's log; the
    // other facility keeps its connection.
    let reconnects_a = a.status()["link"]["reconnects"].clone();
    let logged = rec.proc.stderr().len();
    let out = facility_ok(&["revoke", FACILITY_B, "--data", &data]);
    assert!(out.contains("revoked"), "{out}");
    wait_refused(&b, "certificate revoked");
    let said = wait_log(&rec, logged, &[FACILITY_B, "certificate revoked", "closed"]);
    eprintln!("the reconciler said: {said}");
    let status_a = a.status();
    assert_eq!(status_a["mode"], "online", "{status_a}");
    assert_eq!(status_a["link"]["reconnects"], reconnects_a, "{status_a}");
    let line = listed(&data, FACILITY_B);
    assert!(line.contains("revoked"), "{line}");
    assert!(
        !line.contains("revoked -"),
        "the time of revocation: {line}"
    );

    // Revoking again, an unknown facility, a malformed code: refused, naming what is wrong.
    let out = facility(&["revoke", FACILITY_B, "--data", &data]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("already revoked"), "{out:?}");
    let out = facility(&["revoke", "2712345678", "--data", &data]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("no such facility"), "{out:?}");
    let out = facility(&["add", "12345", "--pki", &pki_dir, "--data", &data]);
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("CODE '12345'"), "{out:?}");

    // Re-issued: the edge with the new certificate connects; one still holding the replaced
    // certificate is refused.
    let out = facility_ok(&["add", FACILITY_B, "--pki", &pki_dir, "--data", &data]);
    assert!(out.contains("re-issued"), "{out}");
    let again = listed(&data, FACILITY_B);
    assert!(again.contains("active"), "{again}");
    let fingerprint = |l: &str| l.split_whitespace().last().unwrap_or_default().to_string();
    assert_ne!(
        fingerprint(&again),
        fingerprint(&first),
        "a new certificate"
    );
    let b = b.restart();
    b.wait_status("online with the new certificate", WITHIN, |v| {
        v["mode"] == "online" && v["link"]["state"] == "up"
    });
    let (code, v) = b.post_check(&check);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["source"], "online", "{v}");
    let logged = rec.proc.stderr().len();
    let mut opts = EdgeOpts::new(FACILITY_B, &t.join("edge-b-old"), &first_pki, rec.addr);
    opts.name = "edge-b-replaced-certificate".into();
    let old = Edge::start(&t, opts);
    wait_refused(&old, "certificate replaced");
    wait_log(
        &rec,
        logged,
        &[FACILITY_B, "certificate replaced", "refused"],
    );

    // Counted by reason.
    let m = rec.metrics();
    for reason in ["certificate_revoked", "certificate_replaced"] {
        let sample = format!(
            "onshi_reconciler_link_refused_total{{facility=\"{FACILITY_B}\",reason=\"{reason}\"}}"
        );
        assert!(m.get(&sample) >= 1.0, "{sample}:\n{}", m.text);
    }
    assert_eq!(
        m.get("onshi_reconciler_known_facilities"),
        2.0,
        "{}",
        m.text
    );
}
