//! The reception page's speed as staff see it (issue 15's benchmark): time to first byte and to
//! DOMContentLoaded of each page in headless Chromium (the browser's own Navigation Timing), with
//! the edge idle and then while it carries a fixed rate of checks (default 1,000/s, open loop) from
//! a program with a token. Real processes: `onshi-reconciler` and `onshi-edge` (release builds next
//! to this command), chromedriver and Chromium from Debian's packages.
//!
//! ```sh
//! cargo build --release --workspace --bins
//! target/release/onshi-page-bench            # ≈ 1 min; --json for the figures as JSON
//! ```

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use onshi_model::{FacilityCode, Qualification};
use onshi_tests::bench::{add_token, bearer, daemon_bins, spawn_ready, spawn_reconciler};
use onshi_tests::webdriver::{Browser, Driver, ENTER, wait};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(
    about = "The reception page's TTFB and DOMContentLoaded in Chromium, idle and under load"
)]
struct Args {
    /// Checks per second sent to the edge during the loaded phase (0: idle only).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Page loads per page and phase.
    #[arg(long, default_value_t = 20)]
    loads: usize,
    /// People in the synthetic registry.
    #[arg(long, default_value_t = 20_000)]
    people: usize,
    #[arg(long)]
    json: bool,
}

const FACILITY: &str = "1311234567";

/// Failed checks by HTTP status (or "connect", "transport").
type Failures = Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>;
const USER: &str = "counter";
const PASSWORD: &str = "reception bench password";
/// The pages staff open most, in the order they are loaded each round.
const PAGES: [&str; 4] = ["/", "/check", "/search", "/worklist"];

/// Navigation Timing of the page just loaded: [TTFB, DOMContentLoaded] in ms from the start.
const TIMING: &str = "const n = performance.getEntriesByType('navigation')[0];\
    return [n.responseStart - n.startTime, n.domContentLoadedEventEnd - n.startTime];";

fn ms_summary(h: &Histogram<u64>) -> Value {
    let ms = |v: u64| v as f64 / 1000.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "max_ms": ms(h.max()),
    })
}

/// Loads every page `loads` times and reads the browser's own timing of each load.
fn measure(b: &Browser, base: &str, loads: usize) -> anyhow::Result<Value> {
    let mut out = serde_json::Map::new();
    for page in PAGES {
        let (mut ttfb, mut dcl) = (Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?);
        for _ in 0..loads {
            b.goto(&format!("{base}{page}"));
            let t = b.execute(TIMING);
            let (Some(first), Some(loaded)) = (t[0].as_f64(), t[1].as_f64()) else {
                bail!("{page}: no navigation timing ({t})");
            };
            ttfb.record((first * 1000.0) as u64)?;
            dcl.record((loaded * 1000.0) as u64)?;
        }
        out.insert(
            page.to_string(),
            json!({"ttfb": ms_summary(&ttfb), "dom_content_loaded": ms_summary(&dcl)}),
        );
    }
    Ok(Value::Object(out))
}

/// Sends checks at `rate`/s (each at its scheduled time, never waiting for the one before) until
/// `stop`; counts answers and failures.
async fn load(
    http: String,
    token: String,
    bodies: Arc<Vec<String>>,
    rate: u64,
    stop: tokio::sync::watch::Receiver<bool>,
    answered: Arc<AtomicU64>,
    failed: Failures,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .default_headers(bearer(&token)?)
        .pool_max_idle_per_host(64)
        .build()?;
    // At most 64 checks in flight, on at most 64 connections (as `onshi-load`'s 64 clients): the
    // edge refuses more than 256 connections from one address.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0usize.. {
        tick.tick().await;
        if *stop.borrow() {
            break;
        }
        let req = client
            .post(format!("{http}/v1/checks"))
            .header("content-type", "application/json")
            .body(bodies[i % bodies.len()].clone());
        let (answered, failed) = (answered.clone(), failed.clone());
        let permit = in_flight.clone().acquire_owned();
        tokio::spawn(async move {
            let _permit = permit.await;
            let why = match req.send().await {
                Ok(r) if r.status().is_success() => {
                    answered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(r) => r.status().as_u16().to_string(),
                Err(e) if e.is_connect() => "connect".to_string(),
                Err(_) => "transport".to_string(),
            };
            *failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(why)
                .or_default() += 1;
        });
    }
    Ok(())
}

fn add_user(edge_bin: &Path, data: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new(edge_bin)
        .args([
            "user",
            "add",
            USER,
            "--role",
            "reception",
            "--password-stdin",
        ])
        .arg("--data")
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{PASSWORD}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("user add: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn sign_in(b: &Browser, base: &str) {
    b.goto(&format!("{base}/login"));
    b.fill("input[name=user]", USER);
    b.fill("input[name=password]", &format!("{PASSWORD}{ENTER}"));
    b.find("[data-mode]");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = daemon_bins()?;
    let root = tempfile::Builder::new()
        .prefix("onshi-page-bench-")
        .tempdir()?;
    let dir = root.path();
    let facility = FacilityCode::parse(FACILITY)?;
    let today = chrono::Local::now().date_naive();
    let pki = dir.join("pki");
    onshi_sync::pki::init(&pki, std::slice::from_ref(&facility))?;
    let periods = onshi_sync::synth::generate(&onshi_sync::synth::SynthParams {
        people: args.people,
        seed: 1,
        today,
    });
    {
        let store = Arc::new(onshi_sync::store::SledStore::open(
            &dir.join("reconciler/registry"),
        )?);
        let registry = onshi_sync::registry::Registry::open(store)?;
        for q in &periods {
            registry.put(q)?;
        }
        registry.sync()?;
    }
    let bodies: Vec<String> = periods
        .iter()
        .filter(|q: &&Qualification| q.is_valid_on(today))
        .take(5_000)
        .map(|q| {
            json!({"insurance_card": {"insurer_number": q.insurer_number.to_string(),
                "symbol": q.symbol.as_ref().map(|s| s.to_string()), "number": q.number.to_string(),
                "branch": q.branch.as_ref().map(|b| b.to_string())},
                "birth_date": q.birth_date.to_string()})
            .to_string()
        })
        .collect();
    let (_rec, raddr) = spawn_reconciler(
        &bins,
        &dir.join("reconciler"),
        &pki,
        &[],
        &dir.join("reconciler.log"),
    )?;
    let edge_bin = bins.join("onshi-edge");
    let token = add_token(&edge_bin, &dir.join("edge"))?;
    add_user(&edge_bin, &dir.join("edge"))?;
    let (_edge, http) = spawn_ready(
        &edge_bin,
        &[
            "run",
            "--facility",
            FACILITY,
            "--data",
            dir.join("edge").to_str().context("path")?,
            "--pki",
            pki.to_str().context("path")?,
            "--reconciler",
            &raddr,
            "--http",
            "127.0.0.1:0",
            "--hold-ms",
            "200",
        ],
        &[],
        &dir.join("edge.log"),
        "onshi-edge: HTTP API on ",
    )?;
    let loadavg_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    // The browser is driven from a thread of its own (its client blocks).
    let base = http.clone();
    let loads = args.loads;
    let (phase_tx, phase_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<anyhow::Result<Value>>(2);
    let log_dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let run = || -> anyhow::Result<()> {
            let b = Driver::start(&log_dir).browser();
            sign_in(&b, &base);
            // Online before the first measure: the banner says so.
            wait(Duration::from_secs(30), || {
                b.goto(&format!("{base}/"));
                b.try_find("[data-mode=online]")
            })
            .context("the edge did not come online")?;
            let _ = done_tx.blocking_send(measure(&b, &base, loads));
            // The loaded phase starts when the load has reached its rate.
            phase_rx.recv()?;
            let _ = done_tx.blocking_send(measure(&b, &base, loads));
            Ok(())
        };
        if let Err(e) = run() {
            let _ = done_tx.blocking_send(Err(e));
        }
    });
    let idle = done_rx.recv().await.context("the browser thread")??;
    let mut loaded = Value::Null;
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Failures::default();
    let mut load_s = 0.0;
    if args.rate > 0 {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(load(
            http.clone(),
            token.clone(),
            Arc::new(bodies),
            args.rate,
            stop_rx,
            answered.clone(),
            failed.clone(),
        ));
        // Two seconds of warm-up at the rate, then the pages.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let start = Instant::now();
        let before = answered.load(Ordering::Relaxed);
        phase_tx.send(())?;
        loaded = done_rx.recv().await.context("the browser thread")??;
        load_s = start.elapsed().as_secs_f64();
        let during = answered.load(Ordering::Relaxed) - before;
        let _ = stop_tx.send(true);
        task.await??;
        loaded["checks_per_s_during"] = json!(during as f64 / load_s);
    }
    let report = json!({
        "rate": args.rate,
        "loads_per_page": args.loads,
        "idle": idle,
        "loaded": loaded,
        "loaded_seconds": load_s,
        "checks_answered": answered.load(Ordering::Relaxed),
        "checks_failed": *failed.lock().unwrap_or_else(|p| p.into_inner()),
        "loadavg_start": loadavg_start.trim(),
        "loadavg_end": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    eprintln!("page                  phase    TTFB p50 / p99 ms     DOMContentLoaded p50 / p99 ms");
    for (phase, v) in [("idle", &report["idle"]), ("loaded", &report["loaded"])] {
        for page in PAGES {
            let p = &v[page];
            if p.is_null() {
                continue;
            }
            eprintln!(
                "{page:<21} {phase:<8} {:>7.2} / {:<9.2}      {:>7.2} / {:.2}",
                p["ttfb"]["p50_ms"].as_f64().unwrap_or(f64::NAN),
                p["ttfb"]["p99_ms"].as_f64().unwrap_or(f64::NAN),
                p["dom_content_loaded"]["p50_ms"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                p["dom_content_loaded"]["p99_ms"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
            );
        }
    }
    eprintln!(
        "checks during the loaded phase: {:.0}/s ({} answered, {} failed in all); load average {} → {}",
        report["loaded"]["checks_per_s_during"]
            .as_f64()
            .unwrap_or(0.0),
        report["checks_answered"],
        report["checks_failed"],
        report["loadavg_start"].as_str().unwrap_or(""),
        report["loadavg_end"].as_str().unwrap_or(""),
    );
    Ok(())
}
