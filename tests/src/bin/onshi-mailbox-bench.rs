//! `onshi-mailbox-bench`: the OQS file mailbox's latency and burst throughput. Starts a reconciler
//! and an edge with `--mailbox` as separate processes (release binaries next to this one), then:
//!
//! 1. **latency**: `--latency-files` single-check request files, one at a time: each is written to a
//!    staging folder on the same file system, renamed into `req/`, and timed until its result file
//!    appears in `res/` (seen by this command's own inotify watch on `res/`);
//! 2. **burst**: `--burst` request files written to staging first, then renamed into `req/` as fast
//!    as possible; timed from the first rename until the last result appears (throughput), with the
//!    rename-to-result latency of each file.
//!
//! Every check is answered online (valid people of a synthetic registry). The run checks that every
//! request got its result and went to `done/`, and that nothing went to `err/`.
//!
//!     cargo build --release -p onshi-tests -p onshi-edge -p onshi-reconciler
//!     target/release/onshi-mailbox-bench [--latency-files 500] [--burst 10000] [--json]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use notify::Watcher;
use onshi_model::{FacilityCode, Qualification};
use onshi_tests::bench::{spawn_ready, spawn_reconciler};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "OQS mailbox benchmark: rename-to-result latency, and a burst's throughput")]
struct Args {
    /// Request files sent one at a time for the latency figures.
    #[arg(long, default_value_t = 500)]
    latency_files: usize,
    /// Request files renamed into req/ at once.
    #[arg(long, default_value_t = 10_000)]
    burst: usize,
    /// People in the synthetic registry.
    #[arg(long, default_value_t = 20_000)]
    people: usize,
    /// Where the temporary directory is made (the disk under test).
    #[arg(long)]
    tmp_root: Option<PathBuf>,
    /// Give up on the burst after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    #[arg(long)]
    json: bool,
}

const FACILITY: &str = "1311234567";

fn request(q: &Qualification, today: chrono::NaiveDate, id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n<XmlMsg>\n  <MessageHeader>\n    <QualificationConfirmationDate>{}</QualificationConfirmationDate>\n    <MedicalInstitutionCode>{FACILITY}</MedicalInstitutionCode>\n    <ArbitraryFileIdentifier>{id}</ArbitraryFileIdentifier>\n  </MessageHeader>\n  <MessageBody>\n    <QualificationConfirmSearchInfo>\n      <InsurerNumber>{}</InsurerNumber>\n      <InsuredCardSymbol>{}</InsuredCardSymbol>\n      <InsuredIdentificationNumber>{}</InsuredIdentificationNumber>\n      <InsuredBranchNumber>{}</InsuredBranchNumber>\n      <Birthdate>{}</Birthdate>\n      <LimitApplicationCertificateRelatedConsFlg>0</LimitApplicationCertificateRelatedConsFlg>\n    </QualificationConfirmSearchInfo>\n  </MessageBody>\n</XmlMsg>\n",
        today.format("%Y%m%d"),
        q.insurer_number.to_file_field(),
        q.symbol.as_ref().map_or("", |s| s.as_str()),
        q.number.as_str(),
        q.branch.as_ref().map_or("", |b| b.as_str()),
        q.birth_date.format("%Y%m%d"),
    )
}

fn result_name(req: &str) -> String {
    format!("{}res{}", &req[..10], &req[13..])
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 (1-based); after the ")" they are the 12th and 13th.
    (ticks(11) + ticks(12)) / 100.0
}

fn summary(h: &Histogram<u64>) -> Value {
    let ms = |v: u64| v as f64 / 1000.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "max_ms": ms(h.max()),
        "mean_ms": h.mean() / 1000.0,
    })
}

/// When each result file appeared in `res/` (its final rename), by name.
struct ResultWatch {
    _watcher: notify::RecommendedWatcher,
    rx: std::sync::mpsc::Receiver<(String, Instant)>,
    seen: HashMap<String, Instant>,
}

impl ResultWatch {
    fn new(res: &Path) -> anyhow::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let now = Instant::now();
            if let Ok(ev) = ev {
                use notify::event::{EventKind, ModifyKind, RenameMode};
                let to = match ev.kind {
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => ev.paths.get(1),
                    EventKind::Modify(ModifyKind::Name(RenameMode::To)) => ev.paths.first(),
                    _ => None,
                };
                if let Some(name) = to.and_then(|p| p.file_name()).and_then(|n| n.to_str())
                    && !name.starts_with('.')
                {
                    let _ = tx.send((name.to_string(), now));
                }
            }
        })?;
        w.watch(res, notify::RecursiveMode::NonRecursive)?;
        Ok(ResultWatch {
            _watcher: w,
            rx,
            seen: HashMap::new(),
        })
    }

    /// Waits until `name` has appeared; returns when.
    fn wait(&mut self, name: &str, timeout: Duration) -> anyhow::Result<Instant> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(t) = self.seen.get(name) {
                return Ok(*t);
            }
            let left = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((n, t)) => {
                    self.seen.entry(n).or_insert(t);
                }
                Err(_) => bail!("{name} did not appear within {timeout:?}"),
            }
        }
    }
}

async fn wait_online(http: &str, token: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .default_headers(onshi_tests::bench::bearer(token)?)
        .build()?;
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{http}/v1/status")).send().await
            && let Ok(v) = r.json::<Value>().await
            && v["mode"] == "online"
        {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("the edge did not come online");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = onshi_tests::bench::daemon_bins()?;
    let mut tmp = tempfile::Builder::new();
    tmp.prefix("onshi-mailbox-bench-");
    let root = match &args.tmp_root {
        Some(r) => tmp.tempdir_in(r)?,
        None => tmp.tempdir()?,
    };
    let root_path = root.path();
    let facility = FacilityCode::parse(FACILITY)?;
    let today = chrono::Local::now().date_naive();
    let pki = root_path.join("pki");
    onshi_sync::pki::init(&pki, std::slice::from_ref(&facility))?;
    let periods = onshi_sync::synth::generate(&onshi_sync::synth::SynthParams {
        people: args.people,
        seed: 1,
        today,
    });
    {
        let store = Arc::new(onshi_sync::store::SledStore::open(
            &root_path.join("reconciler/registry"),
        )?);
        let registry = onshi_sync::registry::Registry::open(store)?;
        for q in &periods {
            registry.put(q)?;
        }
        registry.sync()?;
    }
    // Valid people, each unambiguous under its card numbers.
    let mut by_card: HashMap<(String, String, String, String), usize> = HashMap::new();
    for q in &periods {
        let k = (
            q.insurer_number.to_string(),
            q.symbol.as_ref().map(|s| s.to_string()).unwrap_or_default(),
            q.number.to_string(),
            q.branch.as_ref().map(|s| s.to_string()).unwrap_or_default(),
        );
        *by_card.entry(k).or_default() += 1;
    }
    let people: Vec<&Qualification> = periods
        .iter()
        .filter(|q| q.is_valid_on(today))
        .filter(|q| {
            by_card[&(
                q.insurer_number.to_string(),
                q.symbol.as_ref().map(|s| s.to_string()).unwrap_or_default(),
                q.number.to_string(),
                q.branch.as_ref().map(|s| s.to_string()).unwrap_or_default(),
            )] == 1
        })
        .collect();
    if people.is_empty() {
        bail!("no valid people in the registry");
    }

    let mailbox = root_path.join("mailbox");
    let staging = root_path.join("staging");
    std::fs::create_dir_all(&staging)?;
    let (rec, raddr) = spawn_reconciler(
        &bins,
        &root_path.join("reconciler"),
        &pki,
        &[],
        &root_path.join("reconciler.log"),
    )?;
    let token = onshi_tests::bench::add_token(&bins.join("onshi-edge"), &root_path.join("edge"))?;
    let (edge, http) = spawn_ready(
        &bins.join("onshi-edge"),
        &[
            "run",
            "--facility",
            FACILITY,
            "--data",
            root_path.join("edge").to_str().context("path")?,
            "--pki",
            pki.to_str().context("path")?,
            "--reconciler",
            &raddr,
            "--http",
            "127.0.0.1:0",
            "--hold-ms",
            "200",
            "--mailbox",
            mailbox.to_str().context("path")?,
        ],
        &[],
        &root_path.join("edge.log"),
        "onshi-edge: HTTP API on ",
    )?;
    let http = format!("http://{}", http.trim_start_matches("http://"));
    wait_online(&http, &token).await?;
    let req = mailbox.join("req");
    let res = mailbox.join("res");
    let mut watch = ResultWatch::new(&res)?;
    let load_start = loadavg();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!("machine: {cores} cores, load average {load_start}");

    // 1. Latency: one file at a time.
    let mut lat = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for i in 0..args.latency_files {
        let name = format!("OQSsiquc01req_lat_{i:06}.xml");
        let q = people[i % people.len()];
        std::fs::write(staging.join(&name), request(q, today, &format!("L{i}")))?;
        let t0 = Instant::now();
        std::fs::rename(staging.join(&name), req.join(&name))?;
        let t1 = watch.wait(&result_name(&name), Duration::from_secs(30))?;
        lat.record(t1.saturating_duration_since(t0).as_micros().max(1) as u64)?;
    }
    let latency = summary(&lat);
    eprintln!("latency (rename into req/ → result in res/), one file at a time: {latency}");

    // 2. Burst: written first, renamed in at once.
    let names: Vec<String> = (0..args.burst)
        .map(|i| format!("OQSsiquc01req_burst_{i:06}.xml"))
        .collect();
    for (i, name) in names.iter().enumerate() {
        let q = people[(i * 7) % people.len()];
        std::fs::write(staging.join(name), request(q, today, &format!("B{i}")))?;
    }
    let cpu0 = cpu_s(edge.0.id());
    let t0 = Instant::now();
    let mut renamed = Vec::with_capacity(names.len());
    for name in &names {
        std::fs::rename(staging.join(name), req.join(name))?;
        renamed.push(Instant::now());
    }
    let renames_s = t0.elapsed().as_secs_f64();
    let mut burst_lat = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut last = t0;
    for (name, at) in names.iter().zip(&renamed) {
        let t = watch.wait(&result_name(name), Duration::from_secs(args.timeout_s))?;
        last = last.max(t);
        burst_lat.record(t.saturating_duration_since(*at).as_micros().max(1) as u64)?;
    }
    let elapsed = last.duration_since(t0).as_secs_f64();
    let cpu = cpu_s(edge.0.id()) - cpu0;
    let load_end = loadavg();
    // Every request answered once, moved to done/, nothing rejected.
    let want = args.latency_files + args.burst;
    let until = Instant::now() + Duration::from_secs(30);
    while count(&mailbox.join("done")) < want && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (done, err, left) = (
        count(&mailbox.join("done")),
        count(&mailbox.join("err")),
        count(&req),
    );
    let burst = json!({
        "files": args.burst,
        "renames_s": renames_s,
        "seconds": elapsed,
        "files_per_s": args.burst as f64 / elapsed,
        "latency": summary(&burst_lat),
        "edge_cpu_cores": cpu / elapsed,
    });
    eprintln!("burst of {}: {burst}", args.burst);
    let out = json!({
        "machine": {"cores": cores, "load_average_start": load_start, "load_average_end": load_end},
        "latency_one_at_a_time": latency,
        "burst": burst,
        "check": {"done": done, "err": err, "left_in_req": left, "expected": want},
    });
    drop(edge);
    drop(rec);
    if done != want || err != 0 || left != 0 {
        bail!("not every request was answered once: {}", out["check"]);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let l = &out["latency_one_at_a_time"];
        let b = &out["burst"];
        println!(
            "mailbox: latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} files one at a time); burst of {} in {:.2} s = {:.0} files/s (latency p50 {:.0} ms, p99 {:.0} ms; edge {:.2} cores); {cores} cores, load {} → {}",
            l["p50_ms"].as_f64().unwrap_or(f64::NAN),
            l["p99_ms"].as_f64().unwrap_or(f64::NAN),
            l["max_ms"].as_f64().unwrap_or(f64::NAN),
            args.latency_files,
            args.burst,
            b["seconds"].as_f64().unwrap_or(f64::NAN),
            b["files_per_s"].as_f64().unwrap_or(f64::NAN),
            b["latency"]["p50_ms"].as_f64().unwrap_or(f64::NAN),
            b["latency"]["p99_ms"].as_f64().unwrap_or(f64::NAN),
            b["edge_cpu_cores"].as_f64().unwrap_or(f64::NAN),
            out["machine"]["load_average_start"].as_str().unwrap_or("?"),
            out["machine"]["load_average_end"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}
