//! `onshi-failover`: the outage-mode failover benchmark. Starts a reconciler and an edge as separate
//! processes (release binaries next to this one), lets the edge see a set of patients online, then
//! keeps reception busy (several clients posting checks of those patients) and SIGKILLs the
//! reconciler. It reports the time from the kill to the first answer served from the replica, the
//! time until the edge's mode is `offline`, and the slowest answer (which must stay within the
//! deadline plus a little). Repeats for `--runs` and prints one line per run and a summary.
//!
//!     cargo build --release --workspace --bins
//!     target/release/onshi-failover [--runs 5] [--deadline-ms 1500] [--clients 8]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use onshi_model::{FacilityCode, Qualification};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(
    about = "Failover benchmark: time from killing the reconciler to the first answer from the replica"
)]
struct Args {
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[arg(long, default_value_t = 1500)]
    deadline_ms: u64,
    /// Concurrent reception clients posting checks.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Patients seen online before the kill (their checks are then answered from the replica).
    #[arg(long, default_value_t = 200)]
    seen: usize,
    #[arg(long, default_value_t = 5000)]
    people: usize,
    /// How long the clients keep posting after the kill, in seconds.
    #[arg(long, default_value_t = 6.0)]
    after_s: f64,
    #[arg(long)]
    json: bool,
}

use onshi_tests::bench::{spawn_ready, spawn_reconciler};

fn body(q: &Qualification) -> Value {
    json!({"insurance_card": {"insurer_number": q.insurer_number, "symbol": q.symbol, "number": q.number, "branch": q.branch}, "birth_date": q.birth_date})
}

#[derive(Debug, Clone)]
struct Answer {
    sent: Instant,
    done: Instant,
    source: String,
}

#[derive(Debug, serde::Serialize)]
struct RunResult {
    run: usize,
    first_replica_after_kill_ms: Option<f64>,
    offline_after_kill_ms: Option<f64>,
    max_latency_ms: f64,
    max_latency_after_kill_ms: f64,
    answers: usize,
    by_source: std::collections::BTreeMap<String, usize>,
    errors: usize,
}

async fn run_once(
    args: &Args,
    run: usize,
    bins: &Path,
    root: &Path,
    facility: &FacilityCode,
    periods: &[Qualification],
    today: chrono::NaiveDate,
) -> anyhow::Result<RunResult> {
    let dir = root.join(format!("run-{run}"));
    std::fs::create_dir_all(&dir)?;
    let pki = root.join("pki");
    let rec_data = root.join("reconciler");
    let (mut reconciler, raddr) =
        spawn_reconciler(bins, &rec_data, &pki, &[], &dir.join("reconciler.log"))?;
    let deadline_ms = args.deadline_ms.to_string();
    let token = onshi_tests::bench::add_token(&bins.join("onshi-edge"), &dir.join("edge"))?;
    let (_edge, http) = spawn_ready(
        &bins.join("onshi-edge"),
        &[
            "run",
            "--facility",
            facility.as_str(),
            "--data",
            dir.join("edge").to_str().context("path")?,
            "--pki",
            pki.to_str().context("path")?,
            "--reconciler",
            &raddr,
            "--http",
            "127.0.0.1:0",
            "--deadline-ms",
            &deadline_ms,
            "--hold-ms",
            "200",
        ],
        &[],
        &dir.join("edge.log"),
        "onshi-edge: HTTP API on ",
    )?;
    let client = reqwest::Client::builder()
        .default_headers(onshi_tests::bench::bearer(&token)?)
        .timeout(Duration::from_secs(30))
        .build()?;
    let status = |c: reqwest::Client, http: String| async move {
        c.get(format!("{http}/v1/status"))
            .send()
            .await?
            .json::<Value>()
            .await
    };
    let up_by = Instant::now() + Duration::from_secs(20);
    loop {
        if status(client.clone(), http.clone())
            .await
            .is_ok_and(|s| s["mode"] == "online")
        {
            break;
        }
        if Instant::now() > up_by {
            bail!("the edge did not come online");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Patients seen online: valid insured people of the registry.
    let seen: Vec<&Qualification> = periods
        .iter()
        .filter(|q| q.is_valid_on(today))
        .step_by(7)
        .take(args.seen)
        .collect();
    for q in &seen {
        let r = client
            .post(format!("{http}/v1/checks"))
            .json(&body(q))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("warm-up check failed: {}", r.text().await?);
        }
    }
    let bodies: Arc<Vec<Value>> = Arc::new(seen.iter().map(|q| body(q)).collect());
    let stop_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let client = client.clone();
        let http = http.clone();
        let bodies = bodies.clone();
        let stop_at = stop_at.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut errors = 0usize;
            let mut i = c;
            loop {
                if stop_at
                    .lock()
                    .map(|s| s.is_some_and(|t| Instant::now() > t))
                    .unwrap_or(true)
                {
                    break;
                }
                let sent = Instant::now();
                match client
                    .post(format!("{http}/v1/checks"))
                    .json(&bodies[i % bodies.len()])
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        out.push(Answer {
                            sent,
                            done: Instant::now(),
                            source: v["source"].as_str().unwrap_or("?").to_string(),
                        });
                    }
                    _ => errors += 1,
                }
                i += 1;
            }
            (out, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = Instant::now();
    reconciler.0.kill().context("SIGKILL of the reconciler")?;
    let _ = reconciler.0.wait();
    *stop_at.lock().map_err(|_| anyhow::anyhow!("lock"))? =
        Some(killed + Duration::from_secs_f64(args.after_s));
    let mut offline_after = None;
    while killed.elapsed() < Duration::from_secs_f64(args.after_s) {
        if offline_after.is_none()
            && status(client.clone(), http.clone())
                .await
                .is_ok_and(|s| s["mode"] == "offline")
        {
            offline_after = Some(killed.elapsed().as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut answers = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (a, e) = t.await?;
        answers.extend(a);
        errors += e;
    }
    let first_replica = answers
        .iter()
        .filter(|a| a.source == "replica" && a.done > killed)
        .map(|a| a.done.duration_since(killed))
        .min();
    let lat = |a: &Answer| a.done.duration_since(a.sent).as_secs_f64() * 1000.0;
    let max_latency_ms = answers.iter().map(lat).fold(0.0, f64::max);
    let max_after = answers
        .iter()
        .filter(|a| a.done > killed)
        .map(lat)
        .fold(0.0, f64::max);
    let mut by_source = std::collections::BTreeMap::new();
    for a in &answers {
        *by_source.entry(a.source.clone()).or_insert(0) += 1;
    }
    Ok(RunResult {
        run,
        first_replica_after_kill_ms: first_replica.map(|d| d.as_secs_f64() * 1000.0),
        offline_after_kill_ms: offline_after,
        max_latency_ms,
        max_latency_after_kill_ms: max_after,
        answers: answers.len(),
        by_source,
        errors,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = onshi_tests::bench::daemon_bins()?;
    let root = tempfile::Builder::new()
        .prefix("onshi-failover-")
        .tempdir()?;
    let facility = FacilityCode::parse("1311234567")?;
    let today = chrono::Local::now().date_naive();
    onshi_sync::pki::init(&root.path().join("pki"), std::slice::from_ref(&facility))?;
    let periods = onshi_sync::synth::generate(&onshi_sync::synth::SynthParams {
        people: args.people,
        seed: 1,
        today,
    });
    {
        let store = Arc::new(onshi_sync::store::SledStore::open(
            &root.path().join("reconciler/registry"),
        )?);
        let registry = onshi_sync::registry::Registry::open(store)?;
        for q in &periods {
            registry.put(q)?;
        }
        registry.sync()?;
    }
    let mut results = Vec::new();
    // Something that did not happen within `--after-s` says so (it printed NaN before).
    let ms = |v: Option<f64>| {
        v.map_or(format!("— (not within {} s)", args.after_s), |ms| {
            format!("{ms:.0} ms")
        })
    };
    for run in 1..=args.runs {
        let r = run_once(&args, run, &bins, root.path(), &facility, &periods, today).await?;
        eprintln!(
            "run {run}: first replica answer {} after the kill, offline after {}, slowest answer {:.0} ms ({:.0} ms after the kill), {} answers {:?}, {} errors",
            ms(r.first_replica_after_kill_ms),
            ms(r.offline_after_kill_ms),
            r.max_latency_ms,
            r.max_latency_after_kill_ms,
            r.answers,
            r.by_source,
            r.errors
        );
        results.push(r);
    }
    let worst = |f: fn(&RunResult) -> f64| results.iter().map(f).fold(0.0, f64::max);
    // The worst of something every run saw; `None` (JSON null) if a run never saw it.
    let worst_seen = |f: fn(&RunResult) -> Option<f64>| {
        results
            .iter()
            .map(f)
            .try_fold(0.0, |m: f64, v| v.map(|v| m.max(v)))
    };
    let summary = json!({
        "deadline_ms": args.deadline_ms,
        "clients": args.clients,
        "runs": results.len(),
        "worst_first_replica_after_kill_ms": worst_seen(|r| r.first_replica_after_kill_ms),
        "worst_offline_after_kill_ms": worst_seen(|r| r.offline_after_kill_ms),
        "worst_latency_ms": worst(|r| r.max_latency_ms),
        "errors": results.iter().map(|r| r.errors).sum::<usize>(),
        "results": results,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "failover over {} runs (deadline {} ms, {} clients): first replica answer ≤ {} after the kill; offline ≤ {}; slowest answer {:.0} ms; errors {}",
            summary["runs"],
            args.deadline_ms,
            args.clients,
            ms(summary["worst_first_replica_after_kill_ms"].as_f64()),
            ms(summary["worst_offline_after_kill_ms"].as_f64()),
            summary["worst_latency_ms"].as_f64().unwrap_or(f64::NAN),
            summary["errors"]
        );
    }
    Ok(())
}
