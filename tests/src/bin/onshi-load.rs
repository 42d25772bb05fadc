//! `onshi-load`: the benchmark. In one run it
//!
//! 1. sets up from nothing (PKI, a synthetic registry imported into the reconciler's sled store) in
//!    a temporary directory, or reuses the setup in `--dir`;
//! 2. starts `onshi-reconciler serve` and `onshi-edge run` as separate processes (the release
//!    binaries next to this one) and waits for the edge's link to be up;
//! 3. measures the bare fsync rate of the disk under the edge's data directory;
//! 4. drives `POST /v1/checks` on the edge with many concurrent keep-alive HTTP clients (closed
//!    loop: maximum throughput), then at a fixed rate (open loop, `--rate`, latency measured from
//!    the scheduled send time so a stall is not hidden);
//! 5. sends the same request mix straight to the reconciler over QUIC (`LinkClient::call`, one
//!    stream per check, on one or more connections);
//! 6. prints a table (or `--json`) with checks/s, p50/p99/max latency, errors by kind, the CPU each
//!    process used, and the ratios edge/direct and edge checks/s ÷ fsyncs/s.
//!
//! Build and run:
//! ```text
//! cargo build --release --workspace --bins
//! target/release/onshi-load            # or: cargo run --release -p onshi-tests --bin onshi-load -- [flags]
//! ```
//! The child processes are killed when the run ends, also on an error, a panic or Ctrl-C.

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::NaiveDate;
use clap::Parser;
use hdrhistogram::Histogram;
use onshi_model::{CheckRequest, FacilityCode, Qualification};
use onshi_sync::link::{LinkClient, LinkSettings};
use onshi_sync::wire::{Request, Response};
use onshi_tests::bench::cpu_seconds;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

/// The targets of the issue, on the 2-core benchmark machine.
const TARGET_EDGE_RATE: f64 = 1000.0;
const TARGET_EDGE_P99_MS: f64 = 10.0;
const TARGET_DIRECT_RATE: f64 = 20_000.0;

/// Marker of a reusable setup in `--dir`.
const SETUP_MARKER: &str = "onshi-load-setup.json";

#[derive(Debug, Parser)]
#[command(
    name = "onshi-load",
    about = "Load benchmark: edge HTTP checks vs. direct QUIC checks to the reconciler, plus the disk's bare fsync rate, in one run",
    long_about = None
)]
struct Args {
    /// People in the synthetic registry.
    #[arg(long, default_value_t = 20_000)]
    people: usize,
    /// Seed of the registry and of the request mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// "Today" of the registry and the service date of every check (default: today).
    #[arg(long, value_parser = parse_date_arg)]
    today: Option<NaiveDate>,
    /// Seconds measured in each load phase.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up before each load phase (not measured).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Concurrent HTTP clients in the edge's maximum-throughput (closed-loop) phase.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Checks/s of the edge's fixed-rate (open-loop) phase; 0 skips it.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Concurrent in-flight checks in the direct (QUIC) phase.
    #[arg(long, default_value_t = 128)]
    direct_concurrency: usize,
    /// QUIC connections (LinkClients) in the direct phase; checks are spread over them.
    #[arg(long, default_value_t = 2)]
    direct_clients: usize,
    /// Facility code of the edge.
    #[arg(long, default_value = "1311234567")]
    facility: String,
    /// Seconds of the bare fsync measurement.
    #[arg(long, default_value_t = 2.0)]
    fsync_seconds: f64,
    /// Percent of checks for a lost qualification.
    #[arg(long, default_value_t = 10)]
    lost_pct: u32,
    /// Percent of checks with a typo in the card number (not found).
    #[arg(long, default_value_t = 10)]
    typo_pct: u32,
    /// Work directory: set up there (kept afterwards) or reuse the setup already there. Default: a
    /// fresh temporary directory, removed at the end.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Where the temporary directory is made (its filesystem is the one whose fsync is measured).
    #[arg(long)]
    tmp_root: Option<PathBuf>,
    /// Keep the temporary directory (logs, stores) after the run.
    #[arg(long)]
    keep: bool,
    /// Directory holding `onshi-reconciler` and `onshi-edge` (default: this binary's directory).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Print the results as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Phases to run, comma-separated, in this order: fsync, edge, rate, direct.
    #[arg(long, default_value = "fsync,edge,rate,direct", value_delimiter = ',')]
    phases: Vec<String>,
}

fn parse_date_arg(s: &str) -> Result<NaiveDate, String> {
    onshi_model::parse_date(s).map_err(|e| e.to_string())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("onshi-load: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = rt.block_on(async {
        tokio::select! {
            r = run(args) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    // Dropping the runtime after `run` has returned (or been cancelled) has already killed the
    // children: their guards live inside `run`'s future.
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("onshi-load: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// A child process that is killed (SIGKILL) and reaped when dropped.
struct ChildGuard {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!(
            "onshi-load: stopped {} (pid {})",
            self.name,
            self.child.id()
        );
    }
}

/// Starts `bin args…` with stderr to `log`, and waits (up to 30 s) for a stdout line starting
/// with `ready_prefix`; returns the guard and the rest of that line.
fn spawn_ready(
    name: &'static str,
    bin: &Path,
    args: &[&str],
    log: PathBuf,
    ready_prefix: &str,
) -> anyhow::Result<(ChildGuard, String)> {
    let err = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut guard = ChildGuard { name, child, log };
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    // Keeps draining stdout for the child's whole life, so it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix(ready_prefix) {
                    return Ok((guard, rest.trim().to_string()));
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = guard.child.wait().ok();
                bail!(
                    "{name} exited before it was ready ({status:?}); its log:\n{}",
                    guard.log_tail()
                );
            }
        }
        if let Ok(Some(status)) = guard.child.try_wait() {
            bail!(
                "{name} exited before it was ready ({status}); its log:\n{}",
                guard.log_tail()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{name} printed no '{ready_prefix}' line within 30 s; its log:\n{}",
                guard.log_tail()
            );
        }
    }
}

fn find_bin(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        bail!(
            "{} not found: build the binaries first with `cargo build --release --workspace --bins` (or pass --bin-dir)",
            p.display()
        )
    }
}

/// CPU use of the three processes over a phase.
#[derive(Debug, Clone, Copy)]
struct CpuSnapshot {
    at: Instant,
    edge: f64,
    reconciler: f64,
    load: f64,
}

impl CpuSnapshot {
    fn take(edge: u32, reconciler: u32) -> Self {
        CpuSnapshot {
            at: Instant::now(),
            edge: cpu_seconds(Some(edge)),
            reconciler: cpu_seconds(Some(reconciler)),
            load: cpu_seconds(None),
        }
    }

    /// Cores used by each (1.0 = one core busy all the time).
    fn cores_since(&self, before: &CpuSnapshot) -> Value {
        let wall = self.at.duration_since(before.at).as_secs_f64().max(1e-9);
        json!({
            "edge": round2((self.edge - before.edge) / wall),
            "reconciler": round2((self.reconciler - before.reconciler) / wall),
            "load_generator": round2((self.load - before.load) / wall),
        })
    }
}

/// The first three fields of /proc/loadavg: other work on the machine skews every figure.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

// ---------------------------------------------------------------------------------------------
// Setup

#[derive(Debug)]
struct Layout {
    root: PathBuf,
    pki: PathBuf,
    reconciler_data: PathBuf,
    edge_data: PathBuf,
}

impl Layout {
    fn new(root: &Path) -> Self {
        Layout {
            root: root.to_path_buf(),
            pki: root.join("pki"),
            reconciler_data: root.join("reconciler"),
            edge_data: root.join("edge"),
        }
    }
}

/// Creates the PKI and imports the registry (or reuses both when the marker matches); returns the
/// registry's periods and its "today".
fn setup(
    layout: &Layout,
    args: &Args,
    facility: &FacilityCode,
) -> anyhow::Result<(Vec<Qualification>, NaiveDate)> {
    let marker_path = layout.root.join(SETUP_MARKER);
    if let Ok(text) = std::fs::read_to_string(&marker_path) {
        let m: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", marker_path.display()))?;
        let today: NaiveDate =
            serde_json::from_value(m["today"].clone()).context("today in the setup marker")?;
        let same = m["people"].as_u64() == Some(args.people as u64)
            && m["seed"].as_u64() == Some(args.seed)
            && m["facility"].as_str() == Some(facility.as_str())
            && args.today.is_none_or(|t| t == today);
        if !same {
            bail!(
                "{} holds a setup for {} (people/seed/facility/today); use another --dir or the same flags",
                layout.root.display(),
                text.trim()
            );
        }
        eprintln!(
            "onshi-load: reusing the setup in {} (registry today = {today})",
            layout.root.display()
        );
        let periods = onshi_sync::synth::generate(&onshi_sync::synth::SynthParams {
            people: args.people,
            seed: args.seed,
            today,
        });
        return Ok((periods, today));
    }

    let today = args
        .today
        .unwrap_or_else(|| chrono::Local::now().date_naive());
    let t = Instant::now();
    onshi_sync::pki::init(&layout.pki, std::slice::from_ref(facility)).context("pki init")?;
    let periods = onshi_sync::synth::generate(&onshi_sync::synth::SynthParams {
        people: args.people,
        seed: args.seed,
        today,
    });
    {
        let store = Arc::new(
            onshi_sync::store::SledStore::open(&layout.reconciler_data.join("registry"))
                .context("opening the registry store")?,
        );
        let registry =
            onshi_sync::registry::Registry::open(store).context("opening the registry")?;
        for q in &periods {
            registry.put(q).context("importing the registry")?;
        }
        registry.sync().context("syncing the registry")?;
        // Dropped here: sled's lock is released before the reconciler opens the store.
    }
    std::fs::create_dir_all(&layout.edge_data)?;
    let marker = json!({"people": args.people, "seed": args.seed, "facility": facility.as_str(), "today": today});
    std::fs::write(&marker_path, serde_json::to_string_pretty(&marker)?)?;
    eprintln!(
        "onshi-load: set up in {} ({} people, {} qualification periods, today {today}) in {:.1} s",
        layout.root.display(),
        args.people,
        periods.len(),
        t.elapsed().as_secs_f64()
    );
    Ok((periods, today))
}

/// The filesystem type of the mount holding `path` (longest mount point that is a prefix).
fn fs_type(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best: Option<(usize, String, String)> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let mp = Path::new(f[1]);
        if path.starts_with(mp) && best.as_ref().is_none_or(|(n, _, _)| f[1].len() > *n) {
            best = Some((f[1].len(), f[2].to_string(), f[0].to_string()));
        }
    }
    best.map(|(_, t, dev)| format!("{t} on {dev}"))
        .unwrap_or_else(|| "unknown".into())
}

// ---------------------------------------------------------------------------------------------
// The request mix

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Valid,
    Lost,
    Typo,
}

struct Mix {
    /// HTTP bodies for the edge.
    bodies: Vec<Vec<u8>>,
    /// The same checks for the reconciler.
    requests: Vec<CheckRequest>,
    kinds: BTreeMap<&'static str, usize>,
}

fn body_of(q: &Qualification, today: NaiveDate) -> Value {
    json!({
        "insurance_card": {"insurer_number": q.insurer_number, "symbol": q.symbol, "number": q.number, "branch": q.branch},
        "birth_date": q.birth_date,
        "service_date": today,
    })
}

/// A seeded, shuffled pool of checks: valid people, lost qualifications, and card numbers with a
/// typo (last digit changed: not found).
fn build_mix(
    periods: &[Qualification],
    today: NaiveDate,
    args: &Args,
    size: usize,
) -> anyhow::Result<Mix> {
    let valid: Vec<&Qualification> = periods
        .iter()
        .filter(|q| q.acquired_on <= today && q.lost_on.is_none_or(|l| l > today))
        .collect();
    let lost: Vec<&Qualification> = periods
        .iter()
        .filter(|q| q.lost_on.is_some_and(|l| l <= today))
        .collect();
    if valid.is_empty() {
        bail!("the registry has no qualification valid on {today}");
    }
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x6c6f_6164);
    let mut mix = Mix {
        bodies: Vec::with_capacity(size),
        requests: Vec::with_capacity(size),
        kinds: BTreeMap::new(),
    };
    while mix.requests.len() < size {
        let roll = rng.random_range(0..100u32);
        let kind = if roll < args.typo_pct {
            Kind::Typo
        } else if roll < args.typo_pct + args.lost_pct && !lost.is_empty() {
            Kind::Lost
        } else {
            Kind::Valid
        };
        let q = match kind {
            Kind::Lost => lost[rng.random_range(0..lost.len())],
            _ => valid[rng.random_range(0..valid.len())],
        };
        let mut body = body_of(q, today);
        if kind == Kind::Typo {
            let number = q.number.as_str();
            let Some(last) = number.chars().last().and_then(|c| c.to_digit(10)) else {
                continue;
            };
            let typo = format!(
                "{}{}",
                &number[..number.len() - 1],
                (last + 1 + rng.random_range(0..9u32)) % 10
            );
            body["insurance_card"]["number"] = json!(typo);
        }
        // The direct phase sends exactly what the edge would have parsed from the body.
        let req = match CheckRequest::from_json(&body, today) {
            Ok(r) => r,
            Err(_) => continue,
        };
        mix.bodies.push(serde_json::to_vec(&body)?);
        mix.requests.push(req);
        *mix.kinds
            .entry(match kind {
                Kind::Valid => "valid",
                Kind::Lost => "lost",
                Kind::Typo => "typo",
            })
            .or_default() += 1;
    }
    Ok(mix)
}

// ---------------------------------------------------------------------------------------------
// Load engines

/// What one check came back as: `Ok(validity)` or `Err(error kind)`.
type OpResult = Result<&'static str, String>;
type OpFuture = Pin<Box<dyn Future<Output = OpResult> + Send>>;
/// One check, given a sequence number (which picks the request from the pool).
type Op = Arc<dyn Fn(usize) -> OpFuture + Send + Sync>;

fn new_hist() -> Histogram<u64> {
    // Microseconds, 1 µs … 120 s, 3 significant digits.
    Histogram::new_with_bounds(1, 120_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let _ = h.record((d.as_micros() as u64).clamp(1, 120_000_000));
}

#[derive(Debug)]
struct PhaseResult {
    name: String,
    mode: &'static str,
    concurrency: Option<usize>,
    target_rate: Option<f64>,
    measured_s: f64,
    ok: u64,
    failed: u64,
    /// Latency of answered checks (from the scheduled send time in the open-loop phase).
    hist: Histogram<u64>,
    /// Open loop only: latency from the actual send.
    hist_send: Option<Histogram<u64>>,
    outcomes: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    cpu: Value,
    extra: Value,
}

impl PhaseResult {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.measured_s
    }
    fn ms(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            f64::NAN
        } else {
            self.hist.value_at_quantile(q) as f64 / 1000.0
        }
    }
    fn max_ms(&self) -> f64 {
        if self.hist.is_empty() {
            f64::NAN
        } else {
            self.hist.max() as f64 / 1000.0
        }
    }

    fn to_json(&self) -> Value {
        let lat = |h: &Histogram<u64>| {
            json!({
                "p50_ms": h.value_at_quantile(0.50) as f64 / 1000.0,
                "p90_ms": h.value_at_quantile(0.90) as f64 / 1000.0,
                "p99_ms": h.value_at_quantile(0.99) as f64 / 1000.0,
                "p999_ms": h.value_at_quantile(0.999) as f64 / 1000.0,
                "max_ms": h.max() as f64 / 1000.0,
                "mean_ms": h.mean() / 1000.0,
            })
        };
        json!({
            "name": self.name,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "target_rate": self.target_rate,
            "measured_s": self.measured_s,
            "checks_per_s": round2(self.rate()),
            "answered": self.ok,
            "failed": self.failed,
            "latency": lat(&self.hist),
            "latency_from_send": self.hist_send.as_ref().map(lat),
            "validity": self.outcomes,
            "errors": self.errors,
            "cpu_cores": self.cpu,
            "extra": self.extra,
        })
    }
}

/// Tallies of one task (merged at the end).
struct Tally {
    hist: Histogram<u64>,
    hist_send: Histogram<u64>,
    ok: u64,
    failed: u64,
    outcomes: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            hist: new_hist(),
            hist_send: new_hist(),
            ok: 0,
            failed: 0,
            outcomes: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }
    fn add(&mut self, r: OpResult, lat: Duration, lat_send: Duration) {
        match r {
            Ok(v) => {
                self.ok += 1;
                record(&mut self.hist, lat);
                record(&mut self.hist_send, lat_send);
                *self.outcomes.entry(v.to_string()).or_default() += 1;
            }
            Err(e) => {
                self.failed += 1;
                *self.errors.entry(e).or_default() += 1;
            }
        }
    }
    fn merge(&mut self, o: Tally) {
        let _ = self.hist.add(&o.hist);
        let _ = self.hist_send.add(&o.hist_send);
        self.ok += o.ok;
        self.failed += o.failed;
        for (k, v) in o.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

/// `concurrency` tasks, each sending its next check as soon as the last is answered, for
/// `warmup + duration`; only checks sent and answered inside the measured window count.
async fn closed_loop(
    op: Op,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> (Tally, f64) {
    let seq = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let start = t0 + warmup;
    let end = start + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let op = op.clone();
        let seq = seq.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let r = op(seq.fetch_add(1, Ordering::Relaxed)).await;
                let done = Instant::now();
                if sent >= start && done <= end {
                    let lat = done - sent;
                    tally.add(r, lat, lat);
                }
            }
            tally
        }));
    }
    let mut total = Tally::new();
    for t in tasks {
        if let Ok(tally) = t.await {
            total.merge(tally);
        }
    }
    (total, duration.as_secs_f64())
}

/// Open loop: check `i` is scheduled at `t0 + i / rate` whatever happened before; latency counts
/// from the scheduled time (no coordinated omission). At most `max_inflight` outstanding checks;
/// past that a scheduled check is counted as failed (`overload`).
async fn open_loop(
    op: Op,
    rate: f64,
    warmup: Duration,
    duration: Duration,
    max_inflight: usize,
) -> (Tally, f64) {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let t0 = tokio::time::Instant::now() + Duration::from_millis(10);
    let start = t0 + warmup;
    let end = start + duration;
    let tally = Arc::new(Mutex::new(Tally::new()));
    let inflight = Arc::new(AtomicU64::new(0));
    let mut handles = tokio::task::JoinSet::new();
    let mut i: u64 = 0;
    loop {
        let intended = t0 + interval.mul_f64(i as f64);
        if intended >= end {
            break;
        }
        tokio::time::sleep_until(intended).await;
        // Send everything that is due (the timer wakes at millisecond granularity).
        let now = tokio::time::Instant::now();
        loop {
            let intended = t0 + interval.mul_f64(i as f64);
            if intended > now || intended >= end {
                break;
            }
            i += 1;
            let measured = intended >= start;
            if inflight.load(Ordering::Relaxed) as usize >= max_inflight {
                if measured && let Ok(mut t) = tally.lock() {
                    t.failed += 1;
                    *t.errors
                        .entry("overload (load generator cap)".into())
                        .or_default() += 1;
                }
                continue;
            }
            inflight.fetch_add(1, Ordering::Relaxed);
            let fut = op(i as usize);
            let tally = tally.clone();
            let inflight = inflight.clone();
            handles.spawn(async move {
                let sent = tokio::time::Instant::now();
                let r = fut.await;
                let done = tokio::time::Instant::now();
                inflight.fetch_sub(1, Ordering::Relaxed);
                if measured && let Ok(mut t) = tally.lock() {
                    t.add(r, done - intended, done - sent);
                }
            });
        }
        // Reap finished tasks now and then so the set stays small.
        while handles.try_join_next().is_some() {}
    }
    while handles.join_next().await.is_some() {}
    let tally = match Arc::try_unwrap(tally) {
        Ok(m) => m.into_inner().unwrap_or_else(|e| e.into_inner()),
        Err(_) => Tally::new(),
    };
    (tally, duration.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// Edge and direct operations

fn edge_op(client: reqwest::Client, url: String, bodies: Arc<Vec<Vec<u8>>>) -> Op {
    let url = Arc::new(url);
    Arc::new(move |i| {
        let client = client.clone();
        let url = url.clone();
        let body = bodies[i % bodies.len()].clone();
        Box::pin(async move {
            let resp = client
                .post(url.as_str())
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "http: {}",
                        if e.is_timeout() {
                            "timeout"
                        } else if e.is_connect() {
                            "connect"
                        } else {
                            "transport"
                        }
                    )
                })?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|_| "http: body".to_string())?;
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if status.is_success() {
                Ok(validity_label(v["validity"].as_str().unwrap_or("")))
            } else {
                Err(format!(
                    "HTTP {} {}",
                    status.as_u16(),
                    v["error"]["code"].as_str().unwrap_or("?")
                ))
            }
        }) as OpFuture
    })
}

fn validity_label(s: &str) -> &'static str {
    match s {
        "valid" => "valid",
        "invalid" => "invalid",
        "invalid_newer_exists" => "invalid_newer_exists",
        "not_found" => "not_found",
        "multiple" => "multiple",
        "valid_unregistered" => "valid_unregistered",
        "pending" => "pending",
        _ => "other",
    }
}

fn direct_op(
    clients: Arc<Vec<LinkClient>>,
    requests: Arc<Vec<CheckRequest>>,
    timeout: Duration,
) -> Op {
    Arc::new(move |i| {
        let clients = clients.clone();
        let req = requests[i % requests.len()].clone();
        Box::pin(async move {
            let client = &clients[i % clients.len()];
            match client.call(Request::Check(req), timeout).await {
                Ok(Response::Check(outcome)) => Ok(outcome.validity.as_str()),
                Ok(Response::Error { code, .. }) => Err(format!("reconciler error {code}")),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(format!("link: {}", link_error_kind(&e))),
            }
        }) as OpFuture
    })
}

fn link_error_kind(e: &onshi_sync::link::LinkError) -> &'static str {
    use onshi_sync::link::LinkError::*;
    match e {
        NotConnected { .. } => "not connected",
        Timeout(_) => "timeout",
        Refused { .. } => "refused",
        Io(_) => "io",
        Protocol(_) => "protocol",
        Closed => "closed",
    }
}

async fn edge_status(client: &reqwest::Client, base: &str) -> anyhow::Result<Value> {
    let resp = client.get(format!("{base}/v1/status")).send().await?;
    Ok(resp.json::<Value>().await?)
}

async fn wait_edge_up(
    client: &reqwest::Client,
    base: &str,
    edge: &ChildGuard,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(v) = edge_status(client, base).await
            && v["link"]["state"] == "up"
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the edge's link did not come up within 30 s; its log:\n{}",
                edge.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn journal_counts(v: &Value) -> (u64, u64) {
    (
        v["journal"]["syncs"].as_u64().unwrap_or(0),
        v["journal"]["commits"].as_u64().unwrap_or(0),
    )
}

// ---------------------------------------------------------------------------------------------
// Bare fsync

#[derive(Debug)]
struct FsyncResult {
    /// `append` (the file grows: each fsync also commits the filesystem's journal) or `overwrite`
    /// (4 KiB blocks rewritten in place in a preallocated 1 MiB file: data + device cache flush).
    mode: &'static str,
    fsyncs: u64,
    seconds: f64,
    hist: Histogram<u64>,
    fs: String,
    path: PathBuf,
}

impl FsyncResult {
    fn rate(&self) -> f64 {
        self.fsyncs as f64 / self.seconds
    }

    fn to_json(&self) -> Value {
        json!({
            "mode": self.mode,
            "fsyncs_per_s": round2(self.rate()),
            "fsyncs": self.fsyncs,
            "seconds": self.seconds,
            "p50_ms": self.hist.value_at_quantile(0.5) as f64 / 1000.0,
            "p99_ms": self.hist.value_at_quantile(0.99) as f64 / 1000.0,
            "max_ms": self.hist.max() as f64 / 1000.0,
            "filesystem": self.fs,
            "path": self.path,
        })
    }
}

/// Writes 4 KiB and fsyncs (`sync_all`) in a loop on one thread, for `seconds`: what one durable
/// write costs when nothing is grouped.
fn bare_fsync(dir: &Path, seconds: f64, append: bool) -> anyhow::Result<FsyncResult> {
    use std::io::{Seek, SeekFrom};
    const BLOCKS: u64 = 256;
    let path = dir.join(if append {
        "fsync-probe-append.bin"
    } else {
        "fsync-probe-overwrite.bin"
    });
    let mut f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let block = vec![0xa5u8; 4096];
    if !append {
        for _ in 0..BLOCKS {
            f.write_all(&block)?;
        }
    }
    f.sync_all()?;
    let mut hist = new_hist();
    let mut n = 0u64;
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs_f64(seconds);
    while Instant::now() < until {
        let t = Instant::now();
        if !append {
            f.seek(SeekFrom::Start((n % BLOCKS) * 4096))?;
        }
        f.write_all(&block)?;
        f.sync_all()?;
        record(&mut hist, t.elapsed());
        n += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(FsyncResult {
        mode: if append { "append" } else { "overwrite" },
        fsyncs: n,
        seconds: secs,
        hist,
        fs: fs_type(dir),
        path,
    })
}

// ---------------------------------------------------------------------------------------------
// The run

async fn run(args: Args) -> anyhow::Result<()> {
    for p in &args.phases {
        if !["fsync", "edge", "rate", "direct"].contains(&p.as_str()) {
            bail!("--phases: unknown phase '{p}' (fsync, edge, rate, direct)");
        }
    }
    let loadavg_start = loadavg();
    let facility = FacilityCode::parse(&args.facility)
        .map_err(|e| anyhow::anyhow!("--facility {}: {e}", args.facility))?;
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary's directory")?
            .to_path_buf(),
    };
    let reconciler_bin = find_bin(&bin_dir, "onshi-reconciler")?;
    let edge_bin = find_bin(&bin_dir, "onshi-edge")?;

    // Kept alive to the end of the run: removes the directory when dropped (unless --keep).
    let mut _tmp: Option<tempfile::TempDir> = None;
    let root = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            let base = args.tmp_root.clone().unwrap_or_else(std::env::temp_dir);
            let t = tempfile::Builder::new()
                .prefix("onshi-load-")
                .tempdir_in(&base)
                .with_context(|| format!("temp dir in {}", base.display()))?;
            let p = t.path().to_path_buf();
            if args.keep {
                let _ = t.keep();
            } else {
                _tmp = Some(t);
            }
            p
        }
    };
    let layout = Layout::new(&root);
    // Blocking, but nothing else runs on the runtime yet.
    let (periods, today) = setup(&layout, &args, &facility)?;
    let mix = build_mix(&periods, today, &args, 20_000)?;
    drop(periods);
    eprintln!(
        "onshi-load: request mix {:?} (pool of {})",
        mix.kinds,
        mix.requests.len()
    );

    // --- processes
    let pki = layout.pki.to_string_lossy().into_owned();
    let rdata = layout.reconciler_data.to_string_lossy().into_owned();
    let (reconciler, raddr) = spawn_ready(
        "onshi-reconciler",
        &reconciler_bin,
        &[
            "serve",
            "--data",
            &rdata,
            "--pki",
            &pki,
            "--listen",
            "127.0.0.1:0",
        ]
        .into_iter()
        .chain(onshi_tests::bench::UNTHROTTLED)
        .collect::<Vec<_>>(),
        root.join("reconciler.log"),
        "onshi-reconciler: listening on quic://",
    )?;
    let raddr: SocketAddr = raddr
        .parse()
        .with_context(|| format!("reconciler address '{raddr}'"))?;
    let edata = layout.edge_data.to_string_lossy().into_owned();
    let raddr_s = raddr.to_string();
    let token = onshi_tests::bench::add_token(&edge_bin, &layout.edge_data)?;
    let (edge, http) = spawn_ready(
        "onshi-edge",
        &edge_bin,
        &[
            "run",
            "--facility",
            facility.as_str(),
            "--data",
            &edata,
            "--pki",
            &pki,
            "--reconciler",
            &raddr_s,
            "--http",
            "127.0.0.1:0",
        ],
        root.join("edge.log"),
        "onshi-edge: HTTP API on ",
    )?;
    let base = http.trim_end_matches('/').to_string();
    eprintln!(
        "onshi-load: reconciler quic://{raddr} (pid {}), edge {base} (pid {})",
        reconciler.pid(),
        edge.pid()
    );

    let client = reqwest::Client::builder()
        .default_headers(onshi_tests::bench::bearer(&token)?)
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(Duration::from_secs(10))
        .build()?;
    wait_edge_up(&client, &base, &edge).await?;
    eprintln!("onshi-load: edge link up");

    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    let mut phases: Vec<PhaseResult> = Vec::new();
    let mut fsync: Vec<FsyncResult> = Vec::new();
    let bodies = Arc::new(mix.bodies);
    let requests = Arc::new(mix.requests);

    for phase in &args.phases {
        match phase.as_str() {
            "fsync" => {
                eprintln!(
                    "onshi-load: bare fsync of {} (append, then overwrite), {:.0} s each …",
                    layout.edge_data.display(),
                    args.fsync_seconds
                );
                let dir = layout.edge_data.clone();
                let secs = args.fsync_seconds;
                let r = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<FsyncResult>> {
                    Ok(vec![
                        bare_fsync(&dir, secs, true)?,
                        bare_fsync(&dir, secs, false)?,
                    ])
                })
                .await??;
                for f in &r {
                    eprintln!(
                        "onshi-load:   {}: {:.0} fsyncs/s ({})",
                        f.mode,
                        f.rate(),
                        f.fs
                    );
                }
                fsync = r;
            }
            "edge" => {
                eprintln!(
                    "onshi-load: edge, {} concurrent HTTP clients, {:.0}+{:.0} s …",
                    args.concurrency, args.warmup, args.duration
                );
                let op = edge_op(client.clone(), format!("{base}/v1/checks"), bodies.clone());
                let (r, extra) = measure(
                    &edge,
                    &reconciler,
                    &client,
                    &base,
                    || closed_loop(op, args.concurrency, warmup, duration),
                    warmup,
                )
                .await?;
                let p = phase_result(
                    format!("edge POST /v1/checks, {} clients", args.concurrency),
                    "closed",
                    Some(args.concurrency),
                    None,
                    r,
                    false,
                    extra,
                );
                print_progress(&p);
                phases.push(p);
            }
            "rate" if args.rate > 0.0 => {
                eprintln!(
                    "onshi-load: edge at a fixed {:.0} checks/s (open loop), {:.0}+{:.0} s …",
                    args.rate, args.warmup, args.duration
                );
                let op = edge_op(client.clone(), format!("{base}/v1/checks"), bodies.clone());
                let rate = args.rate;
                let (r, extra) = measure(
                    &edge,
                    &reconciler,
                    &client,
                    &base,
                    || open_loop(op, rate, warmup, duration, 10_000),
                    warmup,
                )
                .await?;
                let p = phase_result(
                    format!("edge POST /v1/checks at {rate:.0}/s"),
                    "open",
                    None,
                    Some(rate),
                    r,
                    true,
                    extra,
                );
                print_progress(&p);
                phases.push(p);
            }
            "rate" => {}
            "direct" => {
                eprintln!(
                    "onshi-load: direct to the reconciler over QUIC, {} in flight on {} connection(s), {:.0}+{:.0} s …",
                    args.direct_concurrency, args.direct_clients, args.warmup, args.duration
                );
                let identity = onshi_sync::pki::load_client(&layout.pki, &facility)
                    .context("loading the facility's client certificate")?;
                let mut clients = Vec::new();
                for _ in 0..args.direct_clients.max(1) {
                    clients.push(LinkClient::new(raddr, &identity, LinkSettings::default())?);
                }
                for c in &clients {
                    let mut rx = c.subscribe();
                    tokio::time::timeout(Duration::from_secs(15), async {
                        while !rx.borrow_and_update().is_up() {
                            if rx.changed().await.is_err() {
                                break;
                            }
                        }
                    })
                    .await
                    .context("the direct QUIC link did not come up within 15 s")?;
                    anyhow::ensure!(
                        c.state().is_up(),
                        "the direct QUIC link is not up: {:?}",
                        c.state().last_error
                    );
                }
                let clients = Arc::new(clients);
                let op = direct_op(clients.clone(), requests.clone(), Duration::from_secs(10));
                let conc = args.direct_concurrency;
                let (r, extra) = measure(
                    &edge,
                    &reconciler,
                    &client,
                    &base,
                    || closed_loop(op, conc, warmup, duration),
                    warmup,
                )
                .await?;
                let p = phase_result(
                    format!("direct QUIC, {} in flight on {} conn", conc, clients.len()),
                    "closed",
                    Some(conc),
                    None,
                    r,
                    false,
                    json!({"connections": clients.len(), "cpu": extra["cpu"].clone()}),
                );
                print_progress(&p);
                phases.push(p);
                for c in clients.iter() {
                    c.close().await;
                }
            }
            _ => {}
        }
    }

    report(
        &args,
        &root,
        today,
        &mix.kinds,
        &phases,
        &fsync,
        &loadavg_start,
    )?;
    drop(edge);
    drop(reconciler);
    if let Some(t) = _tmp.take() {
        let _ = t.close();
    } else {
        eprintln!("onshi-load: work directory kept: {}", root.display());
    }
    Ok(())
}

/// Runs a load phase, taking CPU and journal counters around its measured window.
async fn measure<F, Fut>(
    edge: &ChildGuard,
    reconciler: &ChildGuard,
    client: &reqwest::Client,
    base: &str,
    load: F,
    warmup: Duration,
) -> anyhow::Result<((Tally, f64), Value)>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = (Tally, f64)> + Send + 'static,
{
    let (epid, rpid) = (edge.pid(), reconciler.pid());
    let handle = tokio::spawn(load());
    tokio::time::sleep(warmup).await;
    let before = CpuSnapshot::take(epid, rpid);
    let j0 = edge_status(client, base)
        .await
        .map(|v| journal_counts(&v))
        .unwrap_or((0, 0));
    let r = handle.await.context("load task")?;
    let after = CpuSnapshot::take(epid, rpid);
    let j1 = edge_status(client, base)
        .await
        .map(|v| journal_counts(&v))
        .unwrap_or((0, 0));
    let (syncs, commits) = (j1.0.saturating_sub(j0.0), j1.1.saturating_sub(j0.1));
    let extra = json!({
        "cpu": after.cores_since(&before),
        "journal_syncs": syncs,
        "journal_commits": commits,
        "commits_per_sync": if syncs > 0 { round2(commits as f64 / syncs as f64) } else { 0.0 },
        "journal_syncs_per_s": round2(syncs as f64 / after.at.duration_since(before.at).as_secs_f64()),
    });
    Ok((r, extra))
}

fn phase_result(
    name: String,
    mode: &'static str,
    concurrency: Option<usize>,
    target_rate: Option<f64>,
    (t, secs): (Tally, f64),
    open: bool,
    extra: Value,
) -> PhaseResult {
    PhaseResult {
        name,
        mode,
        concurrency,
        target_rate,
        measured_s: secs,
        ok: t.ok,
        failed: t.failed,
        hist: t.hist,
        hist_send: open.then_some(t.hist_send),
        outcomes: t.outcomes,
        errors: t.errors,
        cpu: extra["cpu"].clone(),
        extra,
    }
}

fn print_progress(p: &PhaseResult) {
    eprintln!(
        "onshi-load:   {:.0} checks/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} failed",
        p.rate(),
        p.ms(0.5),
        p.ms(0.99),
        p.max_ms(),
        p.failed
    );
}

fn report(
    args: &Args,
    root: &Path,
    today: NaiveDate,
    kinds: &BTreeMap<&'static str, usize>,
    phases: &[PhaseResult],
    fsync: &[FsyncResult],
    loadavg_start: &str,
) -> anyhow::Result<()> {
    let edge_max = phases
        .iter()
        .find(|p| p.name.starts_with("edge") && p.mode == "closed");
    let edge_rate = phases
        .iter()
        .find(|p| p.name.starts_with("edge") && p.mode == "open");
    let direct = phases.iter().find(|p| p.name.starts_with("direct"));
    let edge_over_direct = match (edge_max, direct) {
        (Some(e), Some(d)) if d.rate() > 0.0 => Some(e.rate() / d.rate()),
        _ => None,
    };
    // Edge maximum checks/s over each bare fsync rate.
    let edge_over_fsync: BTreeMap<&str, f64> = match edge_max {
        Some(e) => fsync
            .iter()
            .filter(|f| f.rate() > 0.0)
            .map(|f| (f.mode, round2(e.rate() / f.rate())))
            .collect(),
        None => BTreeMap::new(),
    };
    // Target: 1,000 checks/s sustained with p99 < 10 ms (from the fixed-rate phase when run).
    let edge_target = edge_rate.map(|p| {
        let achieved = p.rate() >= 0.99 * TARGET_EDGE_RATE.min(p.target_rate.unwrap_or(0.0))
            && p.target_rate.unwrap_or(0.0) >= TARGET_EDGE_RATE;
        achieved && p.failed == 0 && p.ms(0.99) < TARGET_EDGE_P99_MS
    });
    let edge_max_target = edge_max.map(|p| p.rate() >= TARGET_EDGE_RATE);
    let direct_target = direct.map(|p| p.rate() >= TARGET_DIRECT_RATE);

    let mut out = String::new();
    let w = &mut out;
    use std::fmt::Write as _;
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "load average (1/5/15 min) at start: {loadavg_start}; at end: {}",
        loadavg()
    );
    let _ = writeln!(
        w,
        "onshi-load: {} people, seed {}, today {today}, mix {:?}, {} s measured after {} s warm-up",
        args.people, args.seed, kinds, args.duration, args.warmup
    );
    let _ = writeln!(
        w,
        "{:<44} {:>10} {:>8} {:>8} {:>9} {:>7}  {:<26}",
        "phase", "checks/s", "p50 ms", "p99 ms", "max ms", "failed", "CPU cores edge/rec/load"
    );
    let _ = writeln!(w, "{}", "-".repeat(118));
    for p in phases {
        let cpu = format!(
            "{:.2} / {:.2} / {:.2}",
            p.cpu["edge"].as_f64().unwrap_or(f64::NAN),
            p.cpu["reconciler"].as_f64().unwrap_or(f64::NAN),
            p.cpu["load_generator"].as_f64().unwrap_or(f64::NAN)
        );
        let _ = writeln!(
            w,
            "{:<44} {:>10.0} {:>8.2} {:>8.2} {:>9.2} {:>7}  {:<26}",
            p.name,
            p.rate(),
            p.ms(0.5),
            p.ms(0.99),
            p.max_ms(),
            p.failed,
            cpu
        );
        if let Some(h) = &p.hist_send
            && !h.is_empty()
        {
            let _ = writeln!(
                w,
                "{:<44} {:>10} {:>8.2} {:>8.2} {:>9.2}",
                "  (same, latency from actual send)",
                "",
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
                h.max() as f64 / 1000.0
            );
        }
    }
    for f in fsync {
        let _ = writeln!(
            w,
            "{:<44} {:>10.0} {:>8.2} {:>8.2} {:>9.2} {:>7}  ({})",
            format!("bare fsync: 4 KiB {} + fsync, 1 thread", f.mode),
            f.rate(),
            f.hist.value_at_quantile(0.5) as f64 / 1000.0,
            f.hist.value_at_quantile(0.99) as f64 / 1000.0,
            f.hist.max() as f64 / 1000.0,
            "",
            f.fs
        );
    }
    let _ = writeln!(w);
    for p in phases {
        if !p.outcomes.is_empty() || !p.errors.is_empty() {
            let _ = writeln!(
                w,
                "{}: answers {:?}{}",
                p.name,
                p.outcomes,
                if p.errors.is_empty() {
                    String::new()
                } else {
                    format!(", errors {:?}", p.errors)
                }
            );
        }
        if p.name.starts_with("edge") {
            let _ = writeln!(
                w,
                "{}: journal {} group commits for {} checks ({:.1} checks per fsync round, {:.0} rounds/s)",
                p.name,
                p.extra["journal_syncs"],
                p.extra["journal_commits"],
                p.extra["commits_per_sync"].as_f64().unwrap_or(0.0),
                p.extra["journal_syncs_per_s"].as_f64().unwrap_or(0.0)
            );
        }
    }
    if let Some(r) = edge_over_direct {
        let _ = writeln!(w, "ratio edge / direct throughput:      {r:.3}");
    }
    for (mode, r) in &edge_over_fsync {
        let _ = writeln!(
            w,
            "ratio edge max checks/s / bare fsyncs/s ({mode}): {r:.2}"
        );
    }
    let verdict = |b: Option<bool>| match b {
        Some(true) => "MET",
        Some(false) => "NOT MET",
        None => "not measured",
    };
    let _ = writeln!(
        w,
        "target: edge sustains 1,000 checks/s with p99 < 10 ms (fixed-rate phase): {}",
        verdict(edge_target)
    );
    let _ = writeln!(
        w,
        "target: edge maximum throughput >= 1,000 checks/s: {}",
        verdict(edge_max_target)
    );
    let _ = writeln!(
        w,
        "target: reconciler alone >= 20,000 checks/s: {}",
        verdict(direct_target)
    );

    if args.json {
        eprint!("{out}");
        let v = json!({
            "people": args.people,
            "seed": args.seed,
            "today": today,
            "work_dir": root,
            "mix": kinds,
            "machine": {"nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "loadavg_start": loadavg_start, "loadavg_end": loadavg()},
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "phases": phases.iter().map(PhaseResult::to_json).collect::<Vec<_>>(),
            "fsync": fsync.iter().map(FsyncResult::to_json).collect::<Vec<_>>(),
            "ratios": {"edge_over_direct": edge_over_direct, "edge_checks_per_fsync": edge_over_fsync},
            "targets": {
                "edge_1000_per_s_p99_under_10ms": edge_target,
                "edge_max_at_least_1000_per_s": edge_max_target,
                "reconciler_at_least_20000_per_s": direct_target,
            },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{out}");
    }
    Ok(())
}
