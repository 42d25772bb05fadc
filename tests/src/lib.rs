//! The end-to-end harness: real `onshi-reconciler` and `onshi-edge` processes on loopback QUIC, with
//! real certificates (`pki init`) and real sled files, driven the way a user drives them (CLI and
//! HTTP). Tests assert on what a user sees: exit codes, output lines, HTTP status codes and JSON.
//!
//! Readiness is always a condition (a line on stdout, a status field), never a sleep. Every child is
//! SIGKILLed on drop; its stderr goes to a file in the test's own directory, and when a test fails
//! the tail of every child's stderr is printed and the directory is kept for inspection.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub mod bench;
pub mod oqs;
pub mod pg;
pub mod powercut;
pub mod relay;
pub mod scan;
pub mod webdriver;

/// How long a process may take to print its readiness line (debug builds, parallel tests).
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The fixed "today" of the generated registry: every service date in the tests is derived from it,
/// so answers do not depend on the day the tests run.
pub const TODAY: &str = "2026-04-01";

/// Facility codes used by the tests (Tokyo, medical).
pub const FACILITY_A: &str = "1311234567";
pub const FACILITY_B: &str = "1311234575";

// ---------------------------------------------------------------------------------------------
// Binaries

/// The path of one of the workspace's binaries, found next to the test executable's target dir
/// (`target/debug/deps/e2e-…` → `target/debug/NAME`; walking up also covers relocated
/// `CARGO_TARGET_DIR` and `target/<triple>/debug` layouts). `ONSHI_BIN_DIR` overrides.
pub fn binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("ONSHI_BIN_DIR") {
        let p = PathBuf::from(dir).join(name);
        assert!(
            p.is_file(),
            "ONSHI_BIN_DIR is set but {} does not exist",
            p.display()
        );
        return p;
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    for dir in exe.ancestors().skip(1) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            refuse_stale(&candidate);
            return candidate;
        }
        if dir.file_name().is_some_and(|n| n == "target") {
            break;
        }
    }
    panic!(
        "the binary `{name}` was not found near {}: run `cargo test --workspace` so cargo builds the binaries, \
         or `cargo build --workspace --bins` first",
        exe.display()
    );
}

/// `cargo test -p onshi-tests` does not rebuild the other packages' binaries: testing an old
/// binary against new sources would mislead, so a binary older than any workspace source cargo
/// built it from (as listed in its `NAME.d` dep-info file) is refused. Set
/// `ONSHI_ALLOW_STALE_BINS=1` to run anyway.
fn refuse_stale(bin: &Path) {
    if std::env::var_os("ONSHI_ALLOW_STALE_BINS").is_some() {
        return;
    }
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return;
    };
    let Ok(dep_info) = std::fs::read_to_string(bin.with_extension("d")) else {
        return;
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("/"));
    let Some(first_rule) = dep_info.lines().next() else {
        return;
    };
    let Some((_, deps)) = first_rule.split_once(": ") else {
        return;
    };
    // Paths are space-separated, with spaces inside a path escaped as "\ ".
    let deps = deps.replace("\\ ", "\u{0}");
    for dep in deps
        .split_whitespace()
        .map(|d| PathBuf::from(d.replace('\u{0}', " ")))
    {
        if !dep.starts_with(workspace) {
            continue;
        }
        if let Ok(changed) = std::fs::metadata(&dep).and_then(|m| m.modified())
            && changed > built
        {
            panic!(
                "{} is older than {}: run `cargo build --workspace --bins` (or `cargo test --workspace`, which builds \
                 them) so the tests run the current code, or set ONSHI_ALLOW_STALE_BINS=1",
                bin.display(),
                dep.display()
            );
        }
    }
}

pub fn edge_bin() -> PathBuf {
    binary("onshi-edge")
}

pub fn reconciler_bin() -> PathBuf {
    binary("onshi-reconciler")
}

/// Runs a command to completion (with a timeout) and returns its output.
pub fn run(bin: &Path, args: &[&str]) -> Output {
    run_with(Command::new(bin).args(args))
}

pub fn run_with(cmd: &mut Command) -> Output {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
    // Read both pipes on threads so a chatty child cannot block on a full pipe.
    let out = child.stdout.take().map(read_all_in_thread);
    let err = child.stderr.take().map(read_all_in_thread);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for a child") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{desc} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default(),
        stderr: err
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default(),
    }
}

fn read_all_in_thread(
    mut r: impl std::io::Read + Send + 'static,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// `onshi-edge ARGS…` with `input` on standard input (e.g. `user add … --password-stdin`).
pub fn run_edge_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(edge_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting onshi-edge");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("writing to onshi-edge's standard input");
    child.wait_with_output().expect("waiting for onshi-edge")
}

/// `onshi-edge user add NAME --role ROLE --password-stdin --data DATA`, which must succeed.
pub fn add_user(data: &Path, name: &str, role: &str, password: &str) {
    let data = data.to_str().expect("a UTF-8 data path");
    let out = run_edge_stdin(
        &[
            "user",
            "add",
            name,
            "--role",
            role,
            "--password-stdin",
            "--data",
            data,
        ],
        &format!("{password}\n"),
    );
    assert!(
        out.status.success(),
        "user add {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command that must succeed; panics with its stderr otherwise.
pub fn run_ok(bin: &Path, args: &[&str]) -> Output {
    let out = run(bin, args);
    assert!(
        out.status.success(),
        "{} {:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        bin.display(),
        args,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Test directory

/// A test's own directory; kept (and its path printed) when the test fails.
#[derive(Debug)]
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("onshi-e2e-{name}-"))
            .tempdir()
            .expect("creating a temporary directory");
        let path = dir.path().to_path_buf();
        TestDir {
            dir: Some(dir),
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(d) = self.dir.take()
        {
            eprintln!("test directory kept for inspection: {}", d.keep().display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A running child process: stdout lines arrive on a channel (and are kept), stderr goes to a
/// file. SIGKILLed on drop; if the test is failing, the tail of its stderr is printed.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    lines: Receiver<String>,
    stdout_seen: Arc<Mutex<Vec<String>>>,
    pub stderr_path: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stderr into `dir/NAME.stderr` (appended, so a restarted process keeps the
    /// earlier log in the same file).
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Proc {
        let stderr_path = dir.join(format!("{name}.stderr"));
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&stderr_path)
            .expect("creating the stderr log");
        // Plain, predictable logs: no colour codes inside the text the tests search.
        cmd.env("NO_COLOR", "1").env(
            "RUST_LOG",
            std::env::var("ONSHI_TEST_LOG").unwrap_or_else(|_| "info".into()),
        );
        let desc = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {desc}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let mut log = File::create(dir.join(format!("{name}.stdout"))).ok();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(f) = log.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if let Ok(mut s) = seen2.lock() {
                    s.push(line.clone());
                }
                let _ = tx.send(line);
            }
        });
        Proc {
            name: name.to_string(),
            child: Some(child),
            lines: rx,
            stdout_seen: seen,
            stderr_path,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Every stdout line seen so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout_seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Waits for the next stdout line that starts with `prefix` and returns the rest of it.
    /// Panics (with the process's stderr) if the process ends or the timeout passes first.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.to_string();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no stdout line starting with {prefix:?} within {timeout:?}\nstderr:\n{}",
                        self.name,
                        self.stderr_tail(60)
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().and_then(|c| c.wait().ok());
                    panic!(
                        "{}: exited ({status:?}) before printing a line starting with {prefix:?}\nstdout:\n{}\nstderr:\n{}",
                        self.name,
                        self.stdout_lines().join("\n"),
                        self.stderr_tail(60)
                    )
                }
            }
        }
    }

    /// Waits until stderr contains any of `needles`; returns the one found, or `None` at the timeout.
    pub fn wait_stderr(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        wait_until(timeout, Duration::from_millis(50), || {
            let s = self.stderr();
            needles
                .iter()
                .find(|n| s.contains(*n))
                .map(|n| (*n).to_string())
        })
    }

    /// The next stdout line, or `None` if the process closed stdout or `timeout` passed.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    pub fn stderr_tail(&self, lines: usize) -> String {
        let s = self.stderr();
        let all: Vec<&str> = s.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    #[allow(unsafe_code)]
    pub fn signal(&self, sig: libc::c_int) {
        let pid = self.pid() as libc::pid_t;
        if pid > 0 {
            // SAFETY: kill(2) on our own child's pid; it has not been reaped (we hold the Child).
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// SIGKILL, and reap the process.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit by itself within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                self.child = None;
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "----- {} stderr ({}) -----\n{}",
                self.name,
                self.stderr_path.display(),
                self.stderr_tail(80)
            );
        }
    }
}

/// Polls `probe` every `interval` until it returns `Some`, or `None` once `timeout` has passed.
pub fn wait_until<T>(
    timeout: Duration,
    interval: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(interval);
    }
}

// ---------------------------------------------------------------------------------------------
// PKI

/// A directory laid out by `onshi-reconciler pki init`.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn init(dir: &Path, facilities: &[&str]) -> Pki {
        let mut args = vec!["pki", "init", "--dir", dir.to_str().expect("utf-8 path")];
        for f in facilities {
            args.push("--facility");
            args.push(f);
        }
        run_ok(&reconciler_bin(), &args);
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        for f in ["ca.pem", "reconciler.pem", "reconciler.key"] {
            assert!(
                pki.dir.join(f).is_file(),
                "pki init did not write {f} in {}",
                dir.display()
            );
        }
        for code in facilities {
            for ext in ["pem", "key"] {
                let f = pki.dir.join(format!("facility-{code}.{ext}"));
                assert!(f.is_file(), "pki init did not write {}", f.display());
            }
        }
        pki
    }

    /// A copy of every file of this directory in `dir`.
    pub fn copy_to(&self, dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("creating the copy");
        for e in std::fs::read_dir(&self.dir).expect("reading the pki dir") {
            let e = e.expect("a pki dir entry");
            if e.file_type().is_ok_and(|t| t.is_file()) {
                std::fs::copy(e.path(), dir.join(e.file_name())).expect("copying a pki file");
            }
        }
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    /// Removes a facility's certificate and key (the reconciler then does not know it).
    pub fn remove_facility(&self, code: &str) {
        for ext in ["pem", "key"] {
            std::fs::remove_file(self.dir.join(format!("facility-{code}.{ext}")))
                .expect("removing a facility file");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Registry

/// A generated registry JSONL file, parsed, with example periods picked from it.
#[derive(Debug, Clone)]
pub struct Registry {
    pub path: PathBuf,
    pub periods: Vec<Value>,
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The card numbers of a period, with the branch.
fn card_key(q: &Value) -> (String, String, String, String) {
    (
        s(&q["insurer_number"]).into(),
        s(&q["symbol"]).into(),
        s(&q["number"]).into(),
        s(&q["branch"]).into(),
    )
}

/// Whether the period covers `date` (YYYY-MM-DD compares as text).
pub fn valid_on(q: &Value, date: &str) -> bool {
    s(&q["acquired_on"]) <= date && q["lost_on"].as_str().is_none_or(|l| date < l)
}

impl Registry {
    /// `onshi-reconciler gen-registry --people N --seed S --today TODAY > dir/registry-N-S.jsonl`.
    pub fn generate(dir: &Path, people: usize, seed: u64) -> Registry {
        let path = dir.join(format!("registry-{people}-{seed}.jsonl"));
        let out = run_ok(
            &reconciler_bin(),
            &[
                "gen-registry",
                "--people",
                &people.to_string(),
                "--seed",
                &seed.to_string(),
                "--today",
                TODAY,
            ],
        );
        std::fs::write(&path, &out.stdout).expect("writing the registry file");
        let text = String::from_utf8(out.stdout).expect("gen-registry writes UTF-8");
        let periods: Vec<Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("gen-registry line {}: not JSON ({e}): {l}", i + 1))
            })
            .collect();
        assert!(!periods.is_empty(), "gen-registry wrote no periods");
        Registry { path, periods }
    }

    /// The registry of the tests (500 people, seed 7) in the test's own directory.
    pub fn standard(test: &TestDir) -> Registry {
        Registry::generate(test.path(), 500, 7)
    }

    /// `onshi-reconciler import --data DIR FILE`, which must succeed.
    pub fn import(&self, data: &Path) -> Output {
        run_ok(
            &reconciler_bin(),
            &[
                "import",
                "--data",
                data.to_str().expect("utf-8 path"),
                self.path.to_str().expect("utf-8 path"),
            ],
        )
    }

    /// `onshi-reconciler import STORE-FLAGS FILE` into either store, which must succeed.
    pub fn import_into(&self, store: &Store) -> Output {
        store.run_ok(&["import", self.path.to_str().expect("utf-8 path")])
    }

    /// Every period filed under exactly these card numbers (with branch).
    fn same_card(&self, q: &Value) -> Vec<&Value> {
        let k = card_key(q);
        self.periods.iter().filter(|p| card_key(p) == k).collect()
    }

    /// Periods under these card numbers (any branch) of other people.
    fn others_on_card(&self, q: &Value) -> Vec<&Value> {
        let (i, sy, n, _) = card_key(q);
        self.periods
            .iter()
            .filter(|p| {
                let (pi, ps, pn, _) = card_key(p);
                pi == i && ps == sy && pn == n && p["person_id"] != q["person_id"]
            })
            .collect()
    }

    fn unambiguous(&self, q: &Value) -> bool {
        self.same_card(q)
            .iter()
            .all(|p| p["person_id"] == q["person_id"])
    }

    /// An insured person's period valid on `TODAY`, unambiguous under its card numbers.
    pub fn valid_insured(&self) -> &Value {
        self.periods
            .iter()
            .find(|q| q["relationship"] == "insured" && valid_on(q, TODAY) && self.unambiguous(q))
            .expect("the generated registry has a valid insured period")
    }

    /// A period lost on or before `TODAY` because the person joined other insurance (loss reason
    /// 03), whose person has a later period under other card numbers: `(lost, newer)`.
    pub fn lost_with_newer(&self) -> (&Value, &Value) {
        for q in &self.periods {
            let reason = s(&q["loss_reason"]);
            if !matches!(reason, "03" | "joined_other_insurance")
                || valid_on(q, TODAY)
                || !self.unambiguous(q)
            {
                continue;
            }
            if self.same_card(q).iter().any(|p| valid_on(p, TODAY)) {
                continue;
            }
            let newer = self.periods.iter().find(|p| {
                p["person_id"] == q["person_id"]
                    && s(&p["acquired_on"]) > s(&q["acquired_on"])
                    && card_key(p) != card_key(q)
            });
            if let Some(n) = newer {
                return (q, n);
            }
        }
        panic!(
            "the generated registry has no lost period (loss_reason 03) whose person has a newer one"
        )
    }

    /// A dependent's period valid on `TODAY` with a branch, preferably one whose card numbers
    /// (without the branch) are shared with another person, so only the branch tells them apart.
    pub fn dependent(&self) -> &Value {
        let candidates: Vec<&Value> = self
            .periods
            .iter()
            .filter(|q| {
                q["relationship"] == "dependent"
                    && q["branch"].is_string()
                    && valid_on(q, TODAY)
                    && self.unambiguous(q)
            })
            .collect();
        candidates
            .iter()
            .find(|q| !self.others_on_card(q).is_empty())
            .or_else(|| candidates.first())
            .copied()
            .expect("the generated registry has a valid dependent with a branch")
    }
}

impl Registry {
    /// A period valid on `TODAY` of a person with a My Number card id used by no one else.
    pub fn with_card_id(&self) -> &Value {
        self.periods
            .iter()
            .find(|q| {
                q["card_id"].is_string()
                    && valid_on(q, TODAY)
                    && self
                        .periods
                        .iter()
                        .filter(|p| p["card_id"] == q["card_id"])
                        .all(|p| p["person_id"] == q["person_id"])
            })
            .expect("the generated registry has a valid period with a card id")
    }
}

impl Registry {
    /// `n` periods valid on `TODAY`, of `n` different people, each unambiguous under its card
    /// numbers (so a check of it answers `valid` with that person), in registry order after
    /// skipping `skip` such people. Panics if the registry has too few.
    pub fn valid_people(&self, skip: usize, n: usize) -> Vec<&Value> {
        let mut seen = std::collections::BTreeSet::new();
        let picked: Vec<&Value> = self
            .periods
            .iter()
            .filter(|q| valid_on(q, TODAY) && self.unambiguous(q) && q["birth_date"].is_string())
            .filter(|q| seen.insert(s(&q["person_id"]).to_string()))
            .skip(skip)
            .take(n)
            .collect();
        assert_eq!(
            picked.len(),
            n,
            "the generated registry has {n} valid people after skipping {skip}"
        );
        picked
    }
}

/// The `POST /v1/checks` body for a period's insurance card (as typed from the card).
pub fn card_check(q: &Value, service_date: &str) -> Value {
    json!({
        "insurance_card": {"insurer_number": q["insurer_number"], "symbol": q["symbol"], "number": q["number"], "branch": q["branch"]},
        "birth_date": q["birth_date"],
        "service_date": service_date,
    })
}

/// The same insurer number with its last (check) digit changed.
pub fn mistype_check_digit(insurer_number: &str) -> String {
    let (body, last) = insurer_number.split_at(insurer_number.len() - 1);
    let d = last.parse::<u8>().expect("a digit");
    format!("{body}{}", (d + 1) % 10)
}

/// Katakana to hiragana (ー and everything else unchanged): how reception may type a reading.
pub fn to_hiragana(kana: &str) -> String {
    kana.chars()
        .map(|c| match c {
            '\u{30A1}'..='\u{30F6}' => char::from_u32(c as u32 - 0x60).unwrap_or(c),
            _ => c,
        })
        .collect()
}

/// A YYYY-MM-DD date as a Japanese era date, e.g. `1980-04-01` → `昭和55年4月1日` (the first
/// year written 元年 when `gannen`).
pub fn era_date(date: &str, gannen: bool) -> String {
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").expect("a YYYY-MM-DD date");
    let ymd =
        |y: i32, m: u32, dd: u32| chrono::NaiveDate::from_ymd_opt(y, m, dd).expect("an era start");
    let eras = [
        ("令和", ymd(2019, 5, 1)),
        ("平成", ymd(1989, 1, 8)),
        ("昭和", ymd(1926, 12, 25)),
        ("大正", ymd(1912, 7, 30)),
        ("明治", ymd(1868, 10, 23)),
    ];
    let (name, start) = eras
        .iter()
        .find(|(_, start)| d >= *start)
        .expect("a date in a known era");
    use chrono::Datelike;
    let year = d.year() - start.year() + 1;
    let year = if year == 1 && gannen {
        "元".to_string()
    } else {
        year.to_string()
    };
    format!("{name}{year}年{}月{}日", d.month(), d.day())
}

/// A date (YYYY-MM-DD) shifted by `days`.
pub fn shift_date(date: &str, days: i64) -> String {
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").expect("a YYYY-MM-DD date");
    (d + chrono::Duration::days(days))
        .format("%Y-%m-%d")
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// The harness's tokio runtime (the HTTP client's), for tests that drive async clients of their
/// own (e.g. TLS).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// A small blocking HTTP client over reqwest (the tests are plain threads). It sends its bearer
/// token, if it has one, with every request ([`Edge`]'s has the harness's admin token).
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    pub base: String,
    token: Option<String>,
}

/// An HTTP answer: status, body text, the body as JSON (`Null` if it is not JSON), and the
/// headers (names lowercase).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub text: String,
    pub json: Value,
    pub elapsed: Duration,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn headers_of(resp: &reqwest::Response) -> Vec<(String, String)> {
    resp.headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

impl Http {
    pub fn new(base: &str) -> Http {
        let client = runtime().block_on(async {
            reqwest::Client::builder()
                .no_proxy()
                // A redirect is an answer to look at (e.g. a sign-in's 303), not to follow.
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(15))
                .build()
                .expect("an HTTP client")
        });
        Http {
            client,
            base: base.trim_end_matches('/').to_string(),
            token: None,
        }
    }

    /// The same client sending `token` (`None`: no credentials at all).
    pub fn with_token(&self, token: Option<&str>) -> Http {
        Http {
            token: token.map(str::to_string),
            ..self.clone()
        }
    }

    /// The same client without credentials.
    pub fn anonymous(&self) -> Http {
        self.with_token(None)
    }

    /// The bearer token this client sends.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A request to `path` with this client's token, to finish and [`Http::send`].
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends a request (e.g. from [`Http::request`]); panics if no answer came.
    pub fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let started = Instant::now();
        runtime().block_on(async move {
            let resp = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("HTTP request failed: {e}"));
            let status = resp.status().as_u16();
            let headers = headers_of(&resp);
            let text = resp.text().await.unwrap_or_default();
            let json = serde_json::from_str(&text).unwrap_or(Value::Null);
            Answer {
                status,
                text,
                json,
                elapsed: started.elapsed(),
                headers,
            }
        })
    }

    /// POSTs JSON, returning the transport error instead of panicking (e.g. the server was killed
    /// while answering): an `Err` means the request was not acknowledged.
    pub fn try_post_json(&self, path: &str, body: &Value) -> Result<Answer, String> {
        let started = Instant::now();
        let req = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_string());
        runtime().block_on(async move {
            let resp = req.send().await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let headers = headers_of(&resp);
            let text = resp.text().await.map_err(|e| e.to_string())?;
            let json = serde_json::from_str(&text).unwrap_or(Value::Null);
            Ok(Answer {
                status,
                text,
                json,
                elapsed: started.elapsed(),
                headers,
            })
        })
    }

    pub fn get(&self, path: &str) -> Answer {
        self.send(self.request(reqwest::Method::GET, path))
    }

    /// POSTs raw bytes as `application/json`.
    pub fn post_raw(&self, path: &str, body: &str) -> Answer {
        self.send(
            self.request(reqwest::Method::POST, path)
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.post_raw(path, &body.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// A Prometheus text page, parsed: every sample by its name with labels as written
/// (`onshi_checks_total{source="online"}`), and each family's `# TYPE`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub samples: std::collections::BTreeMap<String, f64>,
    pub types: std::collections::BTreeMap<String, String>,
    pub text: String,
}

impl Metrics {
    /// Parses the text format; panics on a line that is neither a comment nor `name{labels} value`.
    pub fn parse(text: &str) -> Metrics {
        let mut m = Metrics {
            text: text.to_string(),
            ..Metrics::default()
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                m.types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample line: {line}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|e| panic!("not a number in '{line}': {e}"));
            m.samples.insert(key.to_string(), value);
        }
        m
    }

    /// `GET {base}/metrics`, checked to be text format, parsed.
    pub fn scrape(base: &str) -> Metrics {
        let a = Http::new(base).get("/metrics");
        assert_eq!(a.status, 200, "GET {base}/metrics: {}", a.text);
        Metrics::parse(&a.text)
    }

    /// One sample (0 when absent: a counter not yet incremented has no labelled sample).
    pub fn get(&self, sample: &str) -> f64 {
        self.samples.get(sample).copied().unwrap_or(0.0)
    }

    /// The sum of a family's samples whose key starts with `prefix` (e.g. every label set).
    pub fn sum(&self, prefix: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }
}

// ---------------------------------------------------------------------------------------------
// Reconciler

/// Where a reconciler keeps the centre's data, as its command line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// The embedded store: `--data DIR`.
    Embedded(PathBuf),
    /// PostgreSQL: `--store URL --store-password-file FILE`, the URL without its password (as the
    /// CLI requires), the password in a file of mode 0600.
    Postgres { url: String, password_file: PathBuf },
}

impl Store {
    /// A PostgreSQL store on `pg`'s database as an operator writes it: the URL without the
    /// password, which goes to `dir/db-password` (mode 0600).
    pub fn postgres(pg: &pg::PgServer, dir: &Path) -> Store {
        use std::os::unix::fs::PermissionsExt;
        let full = pg.url();
        let (scheme, rest) = full.split_once("://").expect("a URL");
        let (userinfo, host) = rest.split_once('@').expect("user and password in the URL");
        let (user, password) = userinfo.split_once(':').expect("a password in the URL");
        let file = dir.join("db-password");
        std::fs::write(&file, format!("{password}\n")).expect("writing the password file");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        Store::Postgres {
            url: format!("{scheme}://{user}@{host}"),
            password_file: file,
        }
    }

    /// The flags that name this store on `onshi-reconciler`'s command line.
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        match self {
            Store::Embedded(dir) => vec!["--data".into(), dir.into()],
            Store::Postgres { url, password_file } => vec![
                "--store".into(),
                url.into(),
                "--store-password-file".into(),
                password_file.into(),
            ],
        }
    }

    /// `onshi-reconciler migrate` on this store, which must succeed (PostgreSQL only; the
    /// embedded store needs none).
    pub fn migrate(&self) -> Output {
        self.run_ok(&["migrate"])
    }

    /// `onshi-reconciler ARGS… STORE-FLAGS`, which must succeed.
    pub fn run_ok(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(reconciler_bin());
        cmd.args(args).args(self.args());
        let out = run_with(&mut cmd);
        assert!(
            out.status.success(),
            "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// A running `onshi-reconciler serve`.
#[derive(Debug)]
pub struct Reconciler {
    pub proc: Proc,
    pub addr: SocketAddr,
    /// The store it serves; [`Reconciler::command`] and [`Reconciler::restart`] name the same.
    pub store: Store,
    pub pki: Pki,
    /// Where `/metrics` is served (started with `--metrics`).
    pub metrics_addr: Option<SocketAddr>,
}

impl Reconciler {
    /// Serves `data` with `pki` on a free loopback port.
    pub fn start(test: &TestDir, data: &Path, pki: &Pki) -> Reconciler {
        Self::start_on(test, data, pki, "127.0.0.1:0")
    }

    /// Serves on a given address (e.g. the same port again after a kill).
    pub fn start_on(test: &TestDir, data: &Path, pki: &Pki, listen: &str) -> Reconciler {
        Self::start_with(test, data, pki, listen, |_| {})
    }

    /// Serves with `--metrics 127.0.0.1:0`; see [`Reconciler::metrics`].
    pub fn start_with_metrics(test: &TestDir, data: &Path, pki: &Pki) -> Reconciler {
        Self::start_with(test, data, pki, "127.0.0.1:0", |cmd| {
            cmd.args(["--metrics", "127.0.0.1:0"]);
        })
    }

    /// Serves on `listen`, with `edit` adding flags or environment to the command.
    pub fn start_with(
        test: &TestDir,
        data: &Path,
        pki: &Pki,
        listen: &str,
        edit: impl FnOnce(&mut Command),
    ) -> Reconciler {
        let store = Store::Embedded(data.to_path_buf());
        Self::start_store(test.path(), "reconciler", &store, pki, listen, edit)
    }

    /// Serves from PostgreSQL on a free loopback port: `serve --store URL --store-password-file
    /// FILE` (the URL without a password, as the CLI requires).
    pub fn start_pg(test: &TestDir, url: &str, password_file: &Path, pki: &Pki) -> Reconciler {
        let store = Store::Postgres {
            url: url.to_string(),
            password_file: password_file.to_path_buf(),
        };
        Self::start_named(test, "reconciler", &store, pki, "127.0.0.1:0")
    }

    /// Serves `store` on `listen` as the process `name` (its stderr in `TEST/NAME.stderr`, so
    /// several instances keep apart logs).
    pub fn start_named(
        test: &TestDir,
        name: &str,
        store: &Store,
        pki: &Pki,
        listen: &str,
    ) -> Reconciler {
        Self::start_store(test.path(), name, store, pki, listen, |_| {})
    }

    fn start_store(
        test_dir: &Path,
        name: &str,
        store: &Store,
        pki: &Pki,
        listen: &str,
        edit: impl FnOnce(&mut Command),
    ) -> Reconciler {
        let mut cmd = Command::new(reconciler_bin());
        cmd.arg("serve")
            .args(store.args())
            .arg("--pki")
            .arg(&pki.dir)
            .args(["--listen", listen]);
        edit(&mut cmd);
        let metrics_asked = cmd.get_args().any(|a| a == "--metrics");
        let mut proc = Proc::spawn(name, cmd, test_dir);
        let rest = proc.wait_line("onshi-reconciler: listening on quic://", READY_TIMEOUT);
        let addr: SocketAddr = rest
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}: '{rest}' is not an address: {e}"));
        let metrics_addr = metrics_asked.then(|| {
            let rest = proc.wait_line("onshi-reconciler: metrics on http://", READY_TIMEOUT);
            rest.trim()
                .trim_end_matches("/metrics")
                .parse()
                .unwrap_or_else(|e| panic!("{name}: '{rest}' is not a metrics address: {e}"))
        });
        Reconciler {
            proc,
            addr,
            store: store.clone(),
            pki: pki.clone(),
            metrics_addr,
        }
    }

    /// The embedded store's directory; panics for a reconciler on PostgreSQL.
    pub fn data(&self) -> &Path {
        match &self.store {
            Store::Embedded(dir) => dir,
            Store::Postgres { .. } => {
                panic!("{} serves PostgreSQL, not a data directory", self.proc.name)
            }
        }
    }

    /// `GET /metrics` of a reconciler started with metrics, parsed.
    pub fn metrics(&self) -> Metrics {
        let addr = self
            .metrics_addr
            .expect("the reconciler was started without --metrics");
        Metrics::scrape(&format!("http://{addr}"))
    }

    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// As [`Reconciler::restart`], with `--metrics` (on a new free port).
    pub fn restart_with_metrics(self, test: &TestDir) -> Reconciler {
        self.restart_editing(test, |cmd| {
            cmd.args(["--metrics", "127.0.0.1:0"]);
        })
    }

    /// Kills this reconciler if it still runs, and serves the same store with the same PKI on the
    /// same address, under the same name, with `edit` applied to the command.
    fn restart_editing(mut self, test: &TestDir, edit: impl FnOnce(&mut Command)) -> Reconciler {
        self.proc.kill9();
        let (name, store, pki, addr) = (
            self.proc.name.clone(),
            self.store.clone(),
            self.pki.clone(),
            self.addr,
        );
        drop(self);
        Self::start_store(test.path(), &name, &store, &pki, &addr.to_string(), edit)
    }

    /// Runs `onshi-reconciler ARGS… --data DATA` (or `--store URL --store-password-file FILE`
    /// on PostgreSQL) while this reconciler serves (on the embedded store the command goes through
    /// its admin socket; on PostgreSQL it connects to the database) and returns (exit code,
    /// stdout, stderr).
    pub fn command(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(reconciler_bin())
            .args(args)
            .args(self.store.args())
            .output()
            .expect("running onshi-reconciler");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `outage grant --facility CODE`: the centre grants central search to the facility.
    pub fn grant(&self, facility: &str) {
        let (code, out, err) = self.command(&["outage", "grant", "--facility", facility]);
        assert_eq!(code, 0, "outage grant: {out}{err}");
    }

    /// Kills this reconciler if it still runs and serves the same store on the same address again
    /// (its stderr log continues in the same file).
    pub fn restart(self, test: &TestDir) -> Reconciler {
        self.restart_editing(test, |_| {})
    }
}

// ---------------------------------------------------------------------------------------------
// Edge

/// How to run an edge.
#[derive(Debug, Clone)]
pub struct EdgeOpts {
    pub facility: String,
    pub data: PathBuf,
    pub pki: PathBuf,
    pub reconciler: SocketAddr,
    /// Further reconciler instances: `--reconciler` is given `reconciler,more…` (the edge tries
    /// them in its facility's order, not in this one).
    pub more_reconcilers: Vec<SocketAddr>,
    pub deadline_ms: Option<u64>,
    /// `--hold-ms`: how long a better mode must hold before the mode improves. [`EdgeOpts::new`]
    /// sets [`TEST_HOLD_MS`] so coming online takes a fraction of a second; `None` runs with the
    /// daemon's default (10 s).
    pub hold_ms: Option<u64>,
    /// `--reader-timeout-ms`: a card reader silent this long is down.
    pub reader_timeout_ms: Option<u64>,
    /// `--unidentified-full-fee true|false`.
    pub unidentified_full_fee: Option<bool>,
    /// `--share-70-74 N`.
    pub share_70_74: Option<u8>,
    /// `--share-75-plus N`.
    pub share_75_plus: Option<u8>,
    /// `--mailbox DIR`: the OQS file mailbox.
    pub mailbox: Option<PathBuf>,
    /// `--mailbox-settle-ms`, `--mailbox-incomplete-ms`, `--mailbox-rescan-ms`.
    pub mailbox_settle_ms: Option<u64>,
    pub mailbox_incomplete_ms: Option<u64>,
    pub mailbox_rescan_ms: Option<u64>,
    pub notify_socket: Option<PathBuf>,
    /// `WATCHDOG_USEC` for the edge, as systemd sets it with `WatchdogSec=`.
    pub watchdog_usec: Option<u64>,
    /// The name of the process in logs (and of its stderr file).
    pub name: String,
    /// Further `run` flags, as given (e.g. `--http-header-timeout-ms 500`).
    pub extra_args: Vec<String>,
    /// The open-file limit the edge starts with (`SOFT:HARD`, util-linux's `prlimit --nofile`),
    /// as a shell's `ulimit` or systemd's `LimitNOFILE=` would set it; `None`: the test's own.
    pub nofile: Option<String>,
    /// `--http`: where the API listens (default `127.0.0.1:0`). A wildcard (`0.0.0.0:0`) is
    /// reached through 127.0.0.1.
    pub http: String,
    /// Further environment variables of the edge process (e.g. the `ONSHI_CRASH_AT` test hook).
    pub env: Vec<(String, String)>,
}

/// The hold time the tests run edges with (the daemon's default is 10 s).
pub const TEST_HOLD_MS: u64 = 300;

impl EdgeOpts {
    pub fn new(facility: &str, data: &Path, pki: &Pki, reconciler: SocketAddr) -> EdgeOpts {
        EdgeOpts {
            facility: facility.to_string(),
            data: data.to_path_buf(),
            pki: pki.dir.clone(),
            reconciler,
            more_reconcilers: Vec::new(),
            deadline_ms: None,
            hold_ms: Some(TEST_HOLD_MS),
            reader_timeout_ms: None,
            unidentified_full_fee: None,
            share_70_74: None,
            share_75_plus: None,
            mailbox: None,
            mailbox_settle_ms: None,
            mailbox_incomplete_ms: None,
            mailbox_rescan_ms: None,
            notify_socket: None,
            watchdog_usec: None,
            name: format!("edge-{facility}"),
            extra_args: Vec::new(),
            nofile: None,
            http: "127.0.0.1:0".to_string(),
            env: Vec::new(),
        }
    }
}

/// A running `onshi-edge run`.
#[derive(Debug)]
pub struct Edge {
    pub proc: Proc,
    pub opts: EdgeOpts,
    pub http_addr: SocketAddr,
    /// Sends [`Edge::token`] (an admin token); `edge.http.anonymous()` sends none.
    pub http: Http,
    /// The harness's admin token for this data directory.
    pub token: String,
    test_dir: PathBuf,
}

/// The name of the harness's admin token in every edge's data directory.
pub const HARNESS_TOKEN: &str = "harness-admin";

/// The harness's admin token for the edge data directory `data`: made once per directory (in this
/// test process) with `onshi-edge token add`, as an operator would, before the edge starts.
pub fn admin_token(data: &Path) -> String {
    let mut tokens = admin_tokens();
    if let Some(t) = tokens.get(data) {
        return t.clone();
    }
    let out = run(
        &edge_bin(),
        &[
            "token",
            "add",
            HARNESS_TOKEN,
            "--role",
            "admin",
            "--data",
            &data.display().to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "onshi-edge token add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("onshi_"), "token add printed {token:?}");
    tokens.insert(data.to_path_buf(), token.clone());
    token
}

fn admin_tokens() -> std::sync::MutexGuard<'static, HashMap<PathBuf, String>> {
    static TOKENS: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    TOKENS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The data directory `to` holds `from`'s accounts (a restored backup): the harness's admin token
/// made for `from` is the one to send to an edge on `to`.
pub fn same_admin_token(from: &Path, to: &Path) {
    let token = admin_token(from);
    admin_tokens().insert(to.to_path_buf(), token);
}

impl Edge {
    /// Starts the edge and waits for its "HTTP API on" line (journal open, HTTP bound).
    pub fn start(test: &TestDir, opts: EdgeOpts) -> Edge {
        Self::start_in(test.path(), opts)
    }

    fn start_in(test_dir: &Path, opts: EdgeOpts) -> Edge {
        let token = admin_token(&opts.data);
        // prlimit execs the edge: the process (and its pid) is the edge's.
        let mut cmd = match &opts.nofile {
            Some(limits) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={limits}"))
                    .arg("--")
                    .arg(edge_bin());
                c
            }
            None => Command::new(edge_bin()),
        };
        let reconcilers: Vec<String> = std::iter::once(opts.reconciler)
            .chain(opts.more_reconcilers.iter().copied())
            .map(|a| a.to_string())
            .collect();
        cmd.args(["run", "--facility", &opts.facility, "--data"])
            .arg(&opts.data)
            .arg("--pki")
            .arg(&opts.pki)
            .args(["--reconciler", &reconcilers.join(","), "--http", &opts.http]);
        if let Some(m) = &opts.mailbox {
            cmd.arg("--mailbox").arg(m);
        }
        let flags: [(&str, Option<String>); 9] = [
            (
                "--mailbox-settle-ms",
                opts.mailbox_settle_ms.map(|v| v.to_string()),
            ),
            (
                "--mailbox-incomplete-ms",
                opts.mailbox_incomplete_ms.map(|v| v.to_string()),
            ),
            (
                "--mailbox-rescan-ms",
                opts.mailbox_rescan_ms.map(|v| v.to_string()),
            ),
            ("--deadline-ms", opts.deadline_ms.map(|v| v.to_string())),
            ("--hold-ms", opts.hold_ms.map(|v| v.to_string())),
            (
                "--reader-timeout-ms",
                opts.reader_timeout_ms.map(|v| v.to_string()),
            ),
            (
                "--unidentified-full-fee",
                opts.unidentified_full_fee.map(|v| v.to_string()),
            ),
            ("--share-70-74", opts.share_70_74.map(|v| v.to_string())),
            ("--share-75-plus", opts.share_75_plus.map(|v| v.to_string())),
        ];
        for (flag, value) in flags {
            if let Some(v) = value {
                cmd.args([flag, &v]);
            }
        }
        cmd.args(&opts.extra_args);
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        match opts.watchdog_usec {
            Some(us) => {
                cmd.env("WATCHDOG_USEC", us.to_string());
            }
            None => {
                cmd.env_remove("WATCHDOG_USEC");
            }
        }
        match &opts.notify_socket {
            Some(p) => {
                cmd.env("NOTIFY_SOCKET", p);
            }
            None => {
                cmd.env_remove("NOTIFY_SOCKET");
            }
        }
        let mut proc = Proc::spawn(&opts.name, cmd, test_dir);
        let rest = proc.wait_line("onshi-edge: HTTP API on ", READY_TIMEOUT);
        let (scheme, addr) = rest
            .trim()
            .split_once("://")
            .unwrap_or_else(|| panic!("edge: '{rest}' is not scheme://address"));
        let mut http_addr: SocketAddr = addr
            .parse()
            .unwrap_or_else(|e| panic!("edge: '{rest}' is not an address: {e}"));
        // Listening on every address: reached on loopback (its Host is always accepted).
        if http_addr.ip().is_unspecified() {
            http_addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let http = Http::new(&format!("{scheme}://{http_addr}")).with_token(Some(&token));
        Edge {
            proc,
            opts,
            http_addr,
            http,
            token,
            test_dir: test_dir.to_path_buf(),
        }
    }

    /// Kills this edge if it still runs and starts it again with the same options (same data dir).
    pub fn restart(mut self) -> Edge {
        self.proc.kill9();
        let opts = self.opts.clone();
        let dir = self.test_dir.clone();
        drop(self);
        Self::start_in(&dir, opts)
    }

    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// `POST /v1/checks` with a JSON body: (status, body).
    pub fn post_check(&self, body: &Value) -> (u16, Value) {
        let a = self.http.post_json("/v1/checks", body);
        (a.status, a.json)
    }

    /// `POST /v1/checks` with the full answer (timing, raw text).
    pub fn post_check_answer(&self, body: &Value) -> Answer {
        self.http.post_json("/v1/checks", body)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let a = self.http.get(path);
        (a.status, a.json)
    }

    pub fn status(&self) -> Value {
        let (code, v) = self.get("/v1/status");
        assert_eq!(code, 200, "GET /v1/status: {v}");
        v
    }

    /// Polls `/v1/status` (every 50 ms) until `pred` holds; returns that status, or panics with
    /// the last status seen after `timeout`.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        let got = wait_until(timeout, Duration::from_millis(50), || {
            let v = self.status();
            if pred(&v) {
                Some(v)
            } else {
                last = v;
                None
            }
        });
        got.unwrap_or_else(|| {
            panic!(
                "{}: status never became {what} within {timeout:?}; last status: {last}",
                self.opts.name
            )
        })
    }

    /// Waits until the link is up and the mode online.
    pub fn wait_online(&self) -> Value {
        self.wait_status("online with the link up", Duration::from_secs(15), |v| {
            v["mode"] == "online" && v["link"]["state"] == "up"
        })
    }

    /// Waits until the mode is `mode`; returns that status.
    pub fn wait_mode(&self, mode: &str, timeout: Duration) -> Value {
        self.wait_status(mode, timeout, |v| v["mode"] == mode)
    }

    /// `POST path` with a JSON body: (status, body).
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let a = self.http.post_json(path, body);
        (a.status, a.json)
    }

    /// `GET /v1/queue`, which must answer 200.
    pub fn queue(&self) -> Value {
        let (code, v) = self.get("/v1/queue");
        assert_eq!(code, 200, "GET /v1/queue: {v}");
        v
    }

    /// Polls `GET /v1/checks/{id}` until its `state` is `state`; returns the record, or panics
    /// with the last record seen.
    pub fn wait_check_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        let mut last = Value::Null;
        let got = wait_until(timeout, Duration::from_millis(50), || {
            let (code, v) = self.get(&format!("/v1/checks/{id}"));
            if code == 200 && v["state"] == state {
                Some(v)
            } else {
                last = v;
                None
            }
        });
        got.unwrap_or_else(|| panic!("{}: check {id} never became {state} within {timeout:?}; last record: {last}; status: {}", self.opts.name, self.status()))
    }

    /// `onshi-edge ARGS… --http ADDR` (e.g. `reader-sim`, `queue`) with the admin token in
    /// `ONSHI_TOKEN`, run to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        let addr = self.http_addr.to_string();
        let mut cmd = Command::new(edge_bin());
        cmd.args(args)
            .args(["--http", &addr])
            .env("ONSHI_TOKEN", &self.token);
        run_with(&mut cmd)
    }

    /// `onshi-edge export`: the whole journal, one JSON value a line (checks, provisional records,
    /// mailbox records), as a vendor or an auditor gets it.
    pub fn export(&self) -> Vec<Value> {
        let out = self.cli(&["export"]);
        assert!(
            out.status.success(),
            "export: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("each export line is JSON"))
            .collect()
    }

    /// One sample of `GET /metrics`, e.g. `onshi_checks_total{source="online"}`.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let text = self.http.get("/metrics").text;
        text.lines().find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// The number of checks in the journal as status reports it.
    pub fn journal_checks(&self) -> u64 {
        let v = self.status();
        v["journal"]["checks"]
            .as_u64()
            .unwrap_or_else(|| panic!("status has no journal.checks: {v}"))
    }
}

/// A reconciler serving the standard registry, its PKI knowing `facilities`, all in `test`.
pub fn reconciler_with_registry(
    test: &TestDir,
    facilities: &[&str],
) -> (Pki, Registry, Reconciler) {
    let pki = Pki::init(&test.join("pki"), facilities);
    let registry = Registry::standard(test);
    let data = test.join("reconciler");
    registry.import(&data);
    let r = Reconciler::start(test, &data, &pki);
    (pki, registry, r)
}

/// Asserts an error answer: status, `error.code` and `error.field`.
#[track_caller]
pub fn assert_error(answer: &(u16, Value), status: u16, code: &str, field: Option<&str>) {
    let (got, body) = answer;
    assert_eq!(
        *got, status,
        "expected HTTP {status} {code}; got {got}: {body}"
    );
    assert_eq!(body["error"]["code"], code, "error code: {body}");
    if let Some(f) = field {
        assert_eq!(body["error"]["field"], f, "error field: {body}");
    }
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error message: {body}"
    );
}

/// Tests of one binary that assert on time bounds (an answer within the deadline + 0.5 s) take this
/// lock for their whole run, and so do the other tests of that binary: on a 2-core machine, five
/// clusters of processes started at once would otherwise measure the scheduler, not the edge.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}
