//! The test acts as systemd: it gives the edge a NOTIFY_SOCKET and WATCHDOG_USEC, and checks READY
//! only once the HTTP port answers, WATCHDOG pings from the main loop, a STATUS line that follows the
//! mode when the link is cut, and STOPPING then exit 0 on SIGTERM with nothing acknowledged lost.
//! The reconciler likewise: READY, WATCHDOG pings, a STATUS line with the facilities connected,
//! the sync rounds and the records settled, then STOPPING and exit 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, Pki, Reconciler, Registry, TODAY, TestDir, card_check,
    reconciler_with_registry,
};
use serde_json::json;

/// Receives notify messages until one has a line for which `want` is true, or the timeout.
fn until(sock: &UnixDatagram, timeout: Duration, want: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        let Ok(n) = sock.recv(&mut buf) else { break };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        let found = msg.lines().any(&want);
        seen.push(msg);
        if found {
            return seen;
        }
    }
    panic!("no wanted notify message within {timeout:?}; got {seen:?}");
}

#[test]
fn edge_speaks_to_systemd_ready_watchdog_status_stopping() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("systemd");
    let (pki, reg, mut rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let sock_path = t.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let mut opts = EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr);
    opts.notify_socket = Some(sock_path);
    // WatchdogSec=2: the edge pings at least every second.
    opts.watchdog_usec = Some(2_000_000);
    let mut edge = Edge::start(&t, opts);

    // READY comes once the HTTP port answers (the harness already saw the "HTTP API on" line; the
    // status call proves the socket serves).
    let msgs = until(&sock, Duration::from_secs(20), |l| l == "READY=1");
    assert!(
        msgs.iter().any(|m| m.contains("STATUS=")),
        "READY carries a STATUS line: {msgs:?}"
    );
    assert!(edge.status()["facility"] == FACILITY_A);

    // STATUS follows the mode: online once the link is up.
    until(&sock, Duration::from_secs(20), |l| {
        l.starts_with("STATUS=online")
    });

    // WATCHDOG pings keep coming from the main loop.
    let started = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        until(&sock, Duration::from_secs(5), |l| l == "WATCHDOG=1");
        pings += 1;
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "3 pings took {:?}",
        started.elapsed()
    );

    // Then offline when the link is cut.
    let check = card_check(reg.valid_insured(), TODAY);
    let (code, answered) = edge.post_check(&check);
    assert_eq!(code, 200, "{answered}");
    rec.kill9();
    let msgs = until(&sock, Duration::from_secs(10), |l| {
        l.starts_with("STATUS=offline")
    });
    let line = msgs
        .iter()
        .flat_map(|m| m.lines())
        .find(|l| l.starts_with("STATUS=offline"))
        .unwrap()
        .to_string();
    assert!(line.contains("pending"), "{line}");

    // SIGTERM: STOPPING, exit 0, and what was acknowledged is there after a restart.
    let (code, offline) = edge.post_check(&check);
    assert_eq!(code, 200, "{offline}");
    edge.proc.signal(libc::SIGTERM);
    until(&sock, Duration::from_secs(10), |l| l == "STOPPING=1");
    let exit = edge
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("the edge exits after SIGTERM");
    assert!(exit.success(), "exit status {exit}");
    let edge = edge.restart();
    for id in [&answered["check_id"], &offline["check_id"]] {
        let (code, stored) = edge.get(&format!("/v1/checks/{}", id.as_str().unwrap()));
        assert_eq!(code, 200, "{stored}");
        assert_eq!(&stored["check_id"], id);
    }
}

#[test]
fn reconciler_speaks_to_systemd_with_facilities_and_settlements_in_status() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("systemd-reconciler");
    let pki = Pki::init(&t.join("pki"), &[FACILITY_A]);
    let reg = Registry::standard(&t);
    let data = t.join("reconciler");
    reg.import(&data);
    let sock_path = t.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let mut rec = Reconciler::start_with(&t, &data, &pki, "127.0.0.1:0", |cmd| {
        cmd.env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "2000000");
    });

    let msgs = until(&sock, Duration::from_secs(20), |l| l == "READY=1");
    assert!(
        msgs.iter()
            .any(|m| m.contains("STATUS=serving · 0 facilities connected")),
        "READY carries a STATUS line: {msgs:?}"
    );
    let started = Instant::now();
    for _ in 0..3 {
        until(&sock, Duration::from_secs(5), |l| l == "WATCHDOG=1");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "3 pings took {:?}",
        started.elapsed()
    );

    // An edge connects and a provisional record is made, synced and settled.
    let edge = Edge::start(
        &t,
        EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr),
    );
    edge.wait_online();
    until(&sock, Duration::from_secs(20), |l| {
        l.starts_with("STATUS=serving · 1 facility connected")
    });
    let p = reg.valid_insured();
    let prov = json!({"declared": {"name": p["name"], "name_kana": p["name_kana"], "birth_date": p["birth_date"],
        "sex": p["sex"], "insurer_name": p["insurer_name"], "share_percent": p["share_percent"]},
        "service_date": TODAY, "total_fee_yen": 5_000});
    let (code, made) = edge.post("/v1/provisional", &prov);
    assert_eq!(code, 201, "{made}");
    let msgs = until(&sock, Duration::from_secs(20), |l| {
        l.starts_with("STATUS=serving · 1 facility connected") && l.ends_with(" · 1 settled")
    });
    let line = msgs
        .iter()
        .flat_map(|m| m.lines())
        .rfind(|l| l.ends_with(" · 1 settled"))
        .unwrap()
        .to_string();
    assert!(line.contains(" sync rounds · "), "{line}");

    // SIGTERM: STOPPING and exit 0.
    drop(edge);
    rec.proc.signal(libc::SIGTERM);
    until(&sock, Duration::from_secs(10), |l| l == "STOPPING=1");
    let exit = rec
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("the reconciler exits after SIGTERM");
    assert!(exit.success(), "exit status {exit}");
}
