//! Configuration reload: a good change to the file applies while the edge runs (and is logged), a
//! bad one is rejected with the reason and the running configuration kept, SIGHUP reloads too, and a
//! setting that needs a restart is said to need one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use onshi_tests::{
    FACILITY_A, Http, Proc, TestDir, edge_bin, reconciler_with_registry, wait_until,
};

const READY: Duration = Duration::from_secs(30);

fn write_config(path: &std::path::Path, body: &str) {
    // Written beside and renamed into place, as editors and config tools do.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn good_changes_apply_bad_ones_are_rejected_and_sighup_reloads() {
    let t = TestDir::new("reload");
    let (pki, _reg, rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let config = t.join("edge.toml");
    let base = format!(
        "facility = \"{FACILITY_A}\"\ndata = \"{}\"\npki = \"{}\"\nreconciler = \"{}\"\nhttp = \"127.0.0.1:0\"\nhold_ms = 300\n",
        t.join("edge").display(),
        pki.dir.display(),
        rec.addr
    );
    write_config(
        &config,
        &format!("{base}deadline_ms = 1500\nqueue_max_pending = 1000\n"),
    );
    let mut cmd = Command::new(edge_bin());
    cmd.args(["run", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET");
    let mut edge = Proc::spawn("edge-reload", cmd, t.path());
    let addr = edge.wait_line("onshi-edge: HTTP API on http://", READY);
    let http = Http::new(&format!("http://{}", addr.trim()))
        .with_token(Some(&onshi_tests::admin_token(&t.join("edge"))));
    let status = |key: &str| http.get("/v1/status").json[key].clone();
    assert_eq!(status("deadline_ms"), 1500);

    // A good change: applied, and logged setting by setting.
    write_config(
        &config,
        &format!("{base}deadline_ms = 900\nqueue_max_pending = 0\n"),
    );
    let applied = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        (status("deadline_ms") == 900).then_some(())
    });
    assert!(
        applied.is_some(),
        "the new deadline applies; log:\n{}",
        edge.stderr_tail(20)
    );
    assert!(
        edge.wait_stderr(&["deadline_ms: 1500 → 900"], Duration::from_secs(5))
            .is_some(),
        "{}",
        edge.stderr_tail(20)
    );
    assert!(
        edge.wait_stderr(&["queue_max_pending: 1000 → 0"], Duration::from_secs(5))
            .is_some(),
        "{}",
        edge.stderr_tail(20)
    );

    // A bad change: rejected with file, key and reason; the running value stays.
    write_config(
        &config,
        &format!("{base}deadline_ms = 700\nshare_75_plus = 15\n"),
    );
    assert!(
        edge.wait_stderr(&["configuration reload rejected"], Duration::from_secs(10))
            .is_some(),
        "the rejection is logged:\n{}",
        edge.stderr_tail(20)
    );
    let log = edge.stderr();
    let said = log
        .lines()
        .find(|l| l.contains("configuration reload rejected"))
        .unwrap_or_default();
    assert!(
        said.contains("share_75_plus: 15 is not 10, 20 or 30"),
        "{said}"
    );
    assert_eq!(
        status("deadline_ms"),
        900,
        "the running configuration is kept"
    );

    // A setting that needs a restart is said to need one; the others still apply. SIGHUP reloads.
    let moved = base.replace(
        &format!("{}", t.join("edge").display()),
        &format!("{}", t.join("elsewhere").display()),
    );
    std::fs::write(&config, format!("{moved}deadline_ms = 800\n")).unwrap();
    edge.signal(libc::SIGHUP);
    let applied = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        (status("deadline_ms") == 800).then_some(())
    });
    assert!(
        applied.is_some(),
        "SIGHUP reloads; log:\n{}",
        edge.stderr_tail(20)
    );
    assert!(
        edge.wait_stderr(&["take effect after a restart"], Duration::from_secs(5))
            .is_some(),
        "{}",
        edge.stderr_tail(20)
    );
    let log = edge.stderr();
    let said = log
        .lines()
        .find(|l| l.contains("take effect after a restart"))
        .unwrap_or_default();
    assert!(said.contains("settings=data"), "{said}");
    assert_eq!(status("facility"), FACILITY_A);
    edge.kill9();
    drop(rec);
}
