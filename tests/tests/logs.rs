//! Log formats: human-readable by default (no colour codes when stderr is not a terminal), one JSON
//! object per line with `ONSHI_LOG_FORMAT=json`, and natively to journald under systemd (stderr is
//! the `JOURNAL_STREAM`) with structured fields; journald asked for but unreachable falls back to
//! stderr with a warning instead of failing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
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

/// journald's native protocol: `NAME=value` lines, or `NAME`, a little-endian u64 length and the
/// value for values with a newline.
fn journal_fields(mut d: &[u8]) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    while !d.is_empty() {
        let nl = d.iter().position(|b| *b == b'\n').unwrap_or(d.len());
        let line = &d[..nl];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            out.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            d = &d[(nl + 1).min(d.len())..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let rest = &d[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            out.insert(
                name,
                String::from_utf8_lossy(&rest[8..8 + len]).into_owned(),
            );
            d = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    out
}

#[test]
fn journald_asked_for_but_unreachable_falls_back_to_stderr_with_a_warning() {
    if Path::new("/run/systemd/journal/socket").exists() {
        eprintln!("skipped: this machine runs journald, so the socket is not absent");
        return;
    }
    let t = TestDir::new("logs-journald-absent");
    let pki = Pki::init(&t.join("pki"), &[FACILITY_A]);
    let mut cmd = Command::new(reconciler_bin());
    cmd.args(["serve", "--data"])
        .arg(t.join("data"))
        .arg("--pki")
        .arg(&pki.dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("ONSHI_LOG_FORMAT", "journald")
        .env_remove("NOTIFY_SOCKET");
    let mut p = Proc::spawn("reconciler", cmd, t.path());
    p.wait_line(
        "onshi-reconciler: listening on quic://",
        Duration::from_secs(30),
    );
    p.wait_stderr(&["reconciler listening"], Duration::from_secs(10));
    let text = p.stderr();
    assert!(
        text.lines().any(|l| l.contains("WARN")
            && l.contains(
                "journald was asked for but its socket cannot be reached; logging to stderr instead"
            )),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("INFO") && l.contains("reconciler listening")),
        "{text}"
    );
}

#[test]
fn under_systemd_logs_go_natively_to_journald_with_structured_fields() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::net::UnixDatagram;
    // A stand-in journald: our socket at /run/systemd/journal/socket inside a private mount
    // namespace (root only; skipped where unshare is not allowed).
    let can_unshare = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !can_unshare {
        eprintln!("skipped: cannot make a mount namespace here (unshare --mount needs root)");
        return;
    }
    let t = TestDir::new("logs-journald");
    let pki = Pki::init(&t.join("pki"), &[FACILITY_A]);
    let sock_path = t.join("journal.sock");
    let journal = UnixDatagram::bind(&sock_path).unwrap();
    journal
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // systemd's JOURNAL_STREAM names the stream stderr is connected to: here the log file the
    // harness connects stderr to, made first so its device and inode are known.
    let stderr_file = t.join("reconciler.stderr");
    std::fs::write(&stderr_file, "").unwrap();
    let meta = std::fs::metadata(&stderr_file).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t tmpfs none /run && mkdir -p /run/systemd/journal && \
             ln -s \"$1\" /run/systemd/journal/socket && shift && exec \"$@\"",
        )
        .arg("sh")
        .arg(&sock_path)
        .arg(reconciler_bin())
        .args(["serve", "--data"])
        .arg(t.join("data"))
        .arg("--pki")
        .arg(&pki.dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("ONSHI_LOG_FORMAT")
        .env_remove("NOTIFY_SOCKET");
    let mut p = Proc::spawn("reconciler", cmd, t.path());
    p.wait_line(
        "onshi-reconciler: listening on quic://",
        Duration::from_secs(30),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 65536];
    let mut seen = Vec::new();
    let listening = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no 'reconciler listening' entry reached the journal; got {seen:?}; stderr: {}",
            p.stderr()
        );
        let Ok(n) = journal.recv(&mut buf) else {
            continue;
        };
        let fields = journal_fields(&buf[..n]);
        if fields.get("MESSAGE").map(String::as_str) == Some("reconciler listening") {
            break fields;
        }
        seen.push(fields);
    };
    assert_eq!(
        listening["PRIORITY"], "5",
        "INFO is journald's notice: {listening:?}"
    );
    assert_eq!(listening["SYSLOG_IDENTIFIER"], "onshi-reconciler");
    assert_eq!(
        listening["ONSHI_FACILITIES"], "1",
        "structured fields are journal fields: {listening:?}"
    );
    assert!(listening.contains_key("ONSHI_ADDR"), "{listening:?}");
    assert!(
        !p.stderr().contains("reconciler listening"),
        "with journald, events are not also written to stderr: {}",
        p.stderr()
    );
}
