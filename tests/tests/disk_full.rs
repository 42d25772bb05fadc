//! Storage hardening, as processes show it: a real edge whose data directory is a small tmpfs the
//! test mounts and fills (a check and a provisional record get 503 and are not recorded; status,
//! metrics and systemd's STATUS say the journal cannot write; WATCHDOG=1 stops past the bound),
//! then frees (the next check succeeds with no restart, status is clean, everything acknowledged
//! is still there). And file modes: the daemons under `umask 000` still create private data, and
//! `check-config` of both binaries warns about a world-readable key or data directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, Pki, Proc, TODAY, TestDir, card_check, edge_bin, reconciler_bin,
    reconciler_with_registry, run,
};
use serde_json::{Value, json};

/// A tmpfs mounted for one test (tests run as root), unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root and mount permission)");
            return None;
        }
        Some(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Writes `path` until its file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x55u8; 64 * 1024];
    while f.write_all(&chunk).and_then(|()| f.sync_all()).is_ok() {}
    while f
        .write_all(&[0x55; 512])
        .and_then(|()| f.sync_all())
        .is_ok()
    {}
}

/// Every notify message that arrives within `window`.
fn collect(sock: &UnixDatagram, window: Duration) -> Vec<String> {
    let deadline = Instant::now() + window;
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => seen.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    seen
}

/// Receives notify messages until one has a line for which `want` is true.
fn until(sock: &UnixDatagram, timeout: Duration, want: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let got = collect(sock, Duration::from_millis(200));
        let found = got.iter().any(|m| m.lines().any(&want));
        seen.extend(got);
        if found {
            return seen;
        }
    }
    panic!("no wanted notify message within {timeout:?}; got {seen:?}");
}

fn provisional() -> Value {
    json!({"declared": {"name": "山田　花子", "birth_date": "S55.4.1", "sex": "female"}, "service_date": TODAY, "total_fee_yen": 5000})
}

#[test]
fn a_full_disk_answers_503_says_so_and_recovers_without_a_restart() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("disk-full");
    let Some(fs) = Tmpfs::mount(&t.join("edge-data"), "16m") else {
        return;
    };
    let (pki, reg, _rec) = reconciler_with_registry(&t, &[FACILITY_A]);
    let sock_path = t.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let mut opts = EdgeOpts::new(FACILITY_A, &fs.dir, &pki, _rec.addr);
    opts.notify_socket = Some(sock_path);
    // WatchdogSec=2: the bound on an unwritable journal is 2 s.
    opts.watchdog_usec = Some(2_000_000);
    let edge = Edge::start(&t, opts);
    edge.wait_online();
    until(&sock, Duration::from_secs(10), |l| l == "WATCHDOG=1");

    let check = card_check(reg.valid_insured(), TODAY);
    let mut acknowledged: Vec<String> = Vec::new();
    let (code, first) = edge.post_check(&check);
    assert_eq!(code, 200, "{first}");
    acknowledged.push(first["check_id"].as_str().unwrap().to_string());
    let (code, prov) = edge.post("/v1/provisional", &provisional());
    assert_eq!(code, 201, "{prov}");

    // The disk fills. A write that needs space fails; from then on every write is refused.
    fill(&fs.dir.join("filler"));
    let mut refused = None;
    for _ in 0..200 {
        let a = edge.post_check_answer(&check);
        match a.status {
            200 => acknowledged.push(a.json["check_id"].as_str().unwrap().to_string()),
            503 => {
                refused = Some(a.json);
                break;
            }
            other => panic!("unexpected {other}: {}", a.text),
        }
    }
    let refused = refused.expect("a check on a full disk is refused");
    assert_eq!(refused["error"]["code"], "journal_unavailable", "{refused}");
    assert!(refused.get("check_id").is_none(), "{refused}");
    let (code, p) = edge.post("/v1/provisional", &provisional());
    assert_eq!(code, 503, "a provisional record is refused too: {p}");
    assert_eq!(p["error"]["code"], "journal_unavailable", "{p}");

    // Status, metrics and STATUS say so.
    let st = edge.status();
    assert_eq!(st["journal"]["writable"], false, "{st}");
    let last_error = st["journal"]["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("No space left"), "{st}");
    let warnings = st["warnings"].to_string();
    assert!(warnings.contains("journal_unwritable"), "{st}");
    assert_eq!(edge.metric("onshi_journal_writable"), Some(0.0));
    assert!(edge.metric("onshi_journal_write_failures_total").unwrap() >= 1.0);
    until(&sock, Duration::from_secs(10), |l| {
        l.starts_with("STATUS=journal cannot write")
    });

    // Past the bound (2 s unwritable) the watchdog is no longer fed: two heartbeats without it.
    edge.wait_status("unwritable past the bound", Duration::from_secs(20), |v| {
        v["journal"]["unwritable_s"].as_f64().unwrap_or(0.0) > 2.5
    });
    let _ = collect(&sock, Duration::from_millis(50));
    let quiet = collect(&sock, Duration::from_millis(2_500));
    assert!(
        !quiet.iter().any(|m| m.lines().any(|l| l == "WATCHDOG=1")),
        "no WATCHDOG=1 while the journal cannot write: {quiet:?}"
    );

    // Space returns: the edge reopens its journal by itself, the next check succeeds.
    std::fs::remove_file(fs.dir.join("filler")).unwrap();
    edge.wait_status("writable again", Duration::from_secs(30), |v| {
        v["journal"]["writable"] == true
    });
    let (code, after) = edge.post_check(&check);
    assert_eq!(code, 200, "{after}");
    acknowledged.push(after["check_id"].as_str().unwrap().to_string());
    let (code, prov2) = edge.post("/v1/provisional", &provisional());
    assert_eq!(code, 201, "{prov2}");
    let st = edge.status();
    assert!(
        !st["warnings"].to_string().contains("journal_unwritable"),
        "{st}"
    );
    assert_eq!(edge.metric("onshi_journal_writable"), Some(1.0));
    // STATUS is sent when it changes (once), the watchdog every second: STATUS first.
    until(&sock, Duration::from_secs(10), |l| {
        l.starts_with("STATUS=online")
    });
    until(&sock, Duration::from_secs(10), |l| l == "WATCHDOG=1");

    // Everything acknowledged is there, nothing refused was recorded, ids never repeat.
    let mut unique = acknowledged.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), acknowledged.len(), "{acknowledged:?}");
    assert_eq!(st["journal"]["checks"], acknowledged.len(), "{st}");
    assert_eq!(st["journal"]["provisional"], 2, "{st}");
    for id in &acknowledged {
        let (code, stored) = edge.get(&format!("/v1/checks/{id}"));
        assert_eq!(code, 200, "{stored}");
    }
    // And after a restart, from disk.
    let edge = edge.restart();
    let st = edge.status();
    assert_eq!(st["journal"]["checks"], acknowledged.len(), "{st}");
    assert_eq!(st["journal"]["provisional"], 2, "{st}");
    for r in [&prov, &prov2] {
        let (code, stored) = edge.get(&format!(
            "/v1/provisional/{}",
            r["record_id"].as_str().unwrap()
        ));
        assert_eq!(code, 200, "{stored}");
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// `bin args…` run under `umask 000` (a shell sets it, then execs the binary).
fn umask_000(bin: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "umask 000; exec \"$0\" \"$@\""])
        .arg(bin)
        .args(args);
    cmd
}

#[test]
fn data_and_keys_are_private_under_umask_000() {
    let _serial = onshi_tests::serial();
    let t = TestDir::new("modes");
    // pki init under umask 000.
    let pki_dir = t.join("pki");
    let out = umask_000(
        &reconciler_bin(),
        &[
            "pki",
            "init",
            "--dir",
            pki_dir.to_str().unwrap(),
            "--facility",
            FACILITY_A,
        ],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&pki_dir), 0o700);
    for key in [
        "ca.key",
        "reconciler.key",
        &format!("facility-{FACILITY_A}.key"),
    ] {
        assert_eq!(mode(&pki_dir.join(key)), 0o600, "{key}");
    }
    let pki = Pki { dir: pki_dir };

    // The reconciler's data directory.
    let rec_data = t.join("rec/data");
    let mut rec = Proc::spawn(
        "reconciler",
        umask_000(
            &reconciler_bin(),
            &[
                "serve",
                "--data",
                rec_data.to_str().unwrap(),
                "--pki",
                pki.dir.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ],
        ),
        t.path(),
    );
    let addr = rec.wait_line(
        "onshi-reconciler: listening on quic://",
        Duration::from_secs(30),
    );
    let addr: std::net::SocketAddr = addr.trim().parse().unwrap();

    // The edge's data directory, journal and sled files.
    let edge_data = t.join("edge/data");
    let mut edge = Proc::spawn(
        "edge",
        umask_000(
            &edge_bin(),
            &[
                "run",
                "--facility",
                FACILITY_A,
                "--data",
                edge_data.to_str().unwrap(),
                "--pki",
                pki.dir.to_str().unwrap(),
                "--reconciler",
                &addr.to_string(),
                "--http",
                "127.0.0.1:0",
            ],
        ),
        t.path(),
    );
    edge.wait_line("onshi-edge: HTTP API on http://", Duration::from_secs(30));
    for dir in [
        t.join("edge"),
        edge_data.clone(),
        edge_data.join("journal"),
        t.join("rec"),
        rec_data.clone(),
        rec_data.join("registry"),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    for file in [
        edge_data.join("journal/db"),
        edge_data.join("journal/conf"),
        rec_data.join("registry/db"),
        rec_data.join("registry/conf"),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    edge.kill9();
    rec.kill9();
}

#[test]
fn check_config_warns_about_a_world_readable_key_or_data_directory() {
    let t = TestDir::new("modes-check");
    let pki = Pki::init(&t.join("pki"), &[FACILITY_A]);
    let data = t.join("edge");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let edge_args = |data: &Path| {
        vec![
            "check-config".to_string(),
            "--facility".into(),
            FACILITY_A.into(),
            "--data".into(),
            data.to_str().unwrap().into(),
            "--pki".into(),
            pki.dir.to_str().unwrap().into(),
            "--reconciler".into(),
            "127.0.0.1:4433".into(),
            "--http".into(),
            "127.0.0.1:0".into(),
            // A key of its own, not beside the data (which check-config warns about too).
            "--data-key".into(),
            t.join("edge-data.key").to_str().unwrap().into(),
        ]
    };
    let rec_args = |data: &Path| {
        vec![
            "check-config".to_string(),
            "--data".into(),
            data.to_str().unwrap().into(),
            "--pki".into(),
            pki.dir.to_str().unwrap().into(),
            "--listen".into(),
            "127.0.0.1:4433".into(),
            "--data-key".into(),
            t.join("reconciler-data.key").to_str().unwrap().into(),
        ]
    };
    let check = |bin: &Path, args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(bin, &args);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Private: no warning.
    let quiet = check(&edge_bin(), edge_args(&data));
    assert!(!quiet.contains("warning"), "{quiet}");
    let quiet = check(&reconciler_bin(), rec_args(&data));
    assert!(!quiet.contains("warning"), "{quiet}");

    // chmod 644 on the keys, 755 on the data directory: both binaries warn, naming each.
    let facility_key = pki.dir.join(format!("facility-{FACILITY_A}.key"));
    let reconciler_key = pki.dir.join("reconciler.key");
    for k in [&facility_key, &reconciler_key] {
        std::fs::set_permissions(k, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let said = check(&edge_bin(), edge_args(&data));
    assert!(
        said.contains("private key") && said.contains(&facility_key.display().to_string()),
        "{said}"
    );
    assert!(said.contains("0644"), "{said}");
    assert!(
        said.contains("data directory") && said.contains("0755"),
        "{said}"
    );
    let said = check(&reconciler_bin(), rec_args(&data));
    assert!(
        said.contains(&reconciler_key.display().to_string()) && said.contains("0644"),
        "{said}"
    );
    assert!(
        said.contains("data directory") && said.contains("0755"),
        "{said}"
    );
}
