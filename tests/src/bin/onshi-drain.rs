//! `onshi-drain`: the drain after a long outage. An edge and a reconciler run as separate processes
//! with the user-space relay between them (`onshi_tests::relay`). With the link cut, reception
//! records `--provisional` provisional records and `--deferred` checks of patients the edge has
//! never seen (each queued as a deferred check). Then the link returns — once through a relay that
//! paces 20 Mbit/s each way with 100 ms RTT and 2 % loss, once clean — and the command measures the
//! time until the edge reports "synced", every deferred check completed, and every settlement back;
//! the goodput (the application bytes of the RPCs answered, from the edge's
//! `onshi_link_payload_bytes_total`) and the relay's utilisation (every byte it carried, QUIC
//! headers and retransmissions included), each as a fraction of the relay's capacity; and the
//! memory and CPU of both processes.
//!
//!     cargo build --release --workspace --bins
//!     target/release/onshi-drain [--provisional 5000] [--deferred 20000] [--json]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use onshi_model::{FacilityCode, Qualification};
use onshi_tests::relay::{Impairment, Relay};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(
    about = "Drain after a long outage: provisional records and deferred checks through a paced, lossy relay"
)]
struct Args {
    #[arg(long, default_value_t = 5000)]
    provisional: usize,
    /// The reconciler on PostgreSQL (a private server started by this command, migrated and
    /// imported) instead of the embedded store.
    #[arg(long)]
    postgres: bool,
    #[arg(long, default_value_t = 20000)]
    deferred: usize,
    /// Link rate each way, in Mbit/s.
    #[arg(long, default_value_t = 20.0)]
    mbit: f64,
    /// Round-trip time added by the relay, in ms (half each way).
    #[arg(long, default_value_t = 100)]
    rtt_ms: u64,
    /// Datagram loss, each way.
    #[arg(long, default_value_t = 0.02)]
    loss: f64,
    /// How often the edge's `/metrics` is scraped during the drain, in ms: the end of the drain
    /// is seen at the first scrape after it (a scrape reads counters and the queue's tally, no
    /// walk of the queue, so a fine one costs the edge little).
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
    /// Concurrent reception clients while recording.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Give up on a drain after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    #[arg(long)]
    json: bool,
    /// RUST_LOG of both daemons (their logs are in the work directory).
    #[arg(long, default_value = "warn")]
    log: String,
    /// Keep the work directory (logs, stores) and print where it is.
    #[arg(long)]
    keep: bool,
    /// Run only this drain (`impaired` or `clean`).
    #[arg(long)]
    only: Option<String>,
    /// Print a line per poll to stderr: seconds since the heal, cores used since the last poll by
    /// the edge, the reconciler and this command (relay and clients), deferred checks completed,
    /// records pending each way, and bytes carried each way.
    #[arg(long)]
    timeline: bool,
    /// During the drain, one reception check (a patient by insurance card) every N ms, each
    /// waiting for its answer: how reception fares while the backlog drains (latency and whether
    /// the answer came online). 0: none (the drain's figures are then the backlog's alone).
    #[arg(long, default_value_t = 0)]
    reception_every_ms: u64,
}

use onshi_tests::bench::{cpu_seconds, spawn_ready, spawn_reconciler};

/// The edge's deadline for an online answer (`--deadline-ms`).
const DEADLINE_MS: u64 = 300;

/// The body of `POST /v1/checks` for `q`'s insurance card on `today`.
fn card_check(q: &Qualification, today: chrono::NaiveDate) -> Value {
    json!({"insurance_card": {"insurer_number": q.insurer_number, "symbol": q.symbol, "number": q.number, "branch": q.branch}, "birth_date": q.birth_date, "service_date": today})
}

fn rss_mib(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[derive(Debug, serde::Serialize)]
struct Drain {
    link: String,
    seconds: f64,
    /// When every deferred check had completed.
    deferred_seconds: Option<f64>,
    /// When the edge last became synced (provisional records acknowledged, settlements back).
    synced_seconds: Option<f64>,
    synced: bool,
    deferred_completed: u64,
    settled: usize,
    bytes_to_reconciler: u64,
    bytes_to_edge: u64,
    /// Application bytes of the RPCs answered during the drain, each way (the edge's
    /// `onshi_link_payload_bytes_total`): no QUIC or UDP headers, no retransmissions.
    payload_to_reconciler: u64,
    payload_to_edge: u64,
    /// Goodput: application bytes in the busier direction ÷ (the relay's rate × the time).
    goodput_of_capacity: Option<f64>,
    /// The same with every byte the relay carried (headers and retransmissions included).
    utilisation_of_capacity: Option<f64>,
    /// When the edge's first datagram after the heal reached the relay (its reconnect attempt).
    first_byte_seconds: f64,
    /// When the edge's `/metrics` first showed the link up after the heal (handshake and probe
    /// done; to the scrape's resolution): `link_up_seconds - first_byte_seconds` is the
    /// handshake, long when a handshake datagram was lost. 0 when the connection from before the
    /// cut had not yet timed out (a short backlog), `null` if the link never came up.
    link_up_seconds: Option<f64>,
    /// The same utilisation over the time from that first datagram to the end: the transfer
    /// itself, without the wait for the edge's next connection attempt.
    goodput_of_capacity_in_use: Option<f64>,
    utilisation_of_capacity_in_use: Option<f64>,
    relay_dropped: u64,
    max_rss_edge_mib: f64,
    max_rss_reconciler_mib: f64,
    /// CPU seconds used during the drain by the edge, the reconciler, and this command (the
    /// relay and the scrapes): on a small machine they share the cores.
    cpu_seconds_edge: f64,
    cpu_seconds_reconciler: f64,
    cpu_seconds_harness: f64,
    /// The reception checks made during the drain (`--reception-every-ms`): how many, how many
    /// were answered online, and their latency.
    reception_checks: usize,
    reception_online: usize,
    /// Reception checks that waited the whole deadline for the reconciler and were then
    /// answered from the replica or queued (the others not online came while the edge knew the
    /// link was down, at once).
    reception_past_deadline: usize,
    reception_p50_ms: Option<f64>,
    reception_max_ms: Option<f64>,
}

async fn run_drain(
    args: &Args,
    root: &Path,
    name: &str,
    imp: Impairment,
    periods: &[Qualification],
    facility: &FacilityCode,
    today: chrono::NaiveDate,
) -> anyhow::Result<Drain> {
    let bins = onshi_tests::bench::daemon_bins()?;
    let dir = root.join(name);
    std::fs::create_dir_all(&dir)?;
    let pki = root.join("pki");
    let rec_data = dir.join("reconciler");
    let mut _centre = None;
    let (reconciler, raddr) = if args.postgres {
        let work = onshi_tests::TestDir::new(&format!("drain-pg-{name}"));
        let centre = onshi_tests::bench::PgCentre::start(&work, &dir, &bins)?;
        let registry = dir.join("registry.jsonl");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&registry)?);
        for q in periods {
            serde_json::to_writer(&mut out, q)?;
            std::io::Write::write_all(&mut out, b"\n")?;
        }
        std::io::Write::flush(&mut out)?;
        drop(out);
        let import = std::process::Command::new(bins.join("onshi-reconciler"))
            .arg("import")
            .args(centre.store_args())
            .arg(&registry)
            .output()?;
        if !import.status.success() {
            bail!("import: {}", String::from_utf8_lossy(&import.stderr));
        }
        let mut serve_args: Vec<String> = vec!["serve".into()];
        serve_args.extend(centre.store_args());
        serve_args.extend([
            "--pki".into(),
            pki.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ]);
        serve_args.extend(
            onshi_tests::bench::UNTHROTTLED
                .iter()
                .map(|s| s.to_string()),
        );
        let refs: Vec<&str> = serve_args.iter().map(String::as_str).collect();
        let spawned = spawn_ready(
            &bins.join("onshi-reconciler"),
            &refs,
            &[("RUST_LOG", args.log.as_str())],
            &dir.join("reconciler.log"),
            "onshi-reconciler: listening on quic://",
        )?;
        _centre = Some((centre, work));
        spawned
    } else {
        copy_dir(&root.join("registry"), &rec_data.join("registry"))?;
        spawn_reconciler(
            &bins,
            &rec_data,
            &pki,
            &[("RUST_LOG", args.log.as_str())],
            &dir.join("reconciler.log"),
        )?
    };
    let relay = Relay::start(raddr.parse()?, args.seed);
    let token = onshi_tests::bench::add_token(&bins.join("onshi-edge"), &dir.join("edge"))?;
    let (edge, http) = spawn_ready(
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
            &relay.addr().to_string(),
            "--http",
            "127.0.0.1:0",
            "--deadline-ms",
            &DEADLINE_MS.to_string(),
            "--hold-ms",
            "200",
            "--queue-max-pending",
            "1000000",
            "--queue-max-yen",
            "100000000000",
        ],
        &[("RUST_LOG", args.log.as_str())],
        &dir.join("edge.log"),
        "onshi-edge: HTTP API on ",
    )?;
    let client = reqwest::Client::builder()
        .default_headers(onshi_tests::bench::bearer(&token)?)
        .timeout(Duration::from_secs(60))
        .build()?;
    let get = |path: &str| {
        let (c, u) = (client.clone(), format!("{http}{path}"));
        async move { c.get(u).send().await?.text().await }
    };
    let wait = |what: &'static str, pred: fn(&Value) -> bool| async move {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Ok(t) = get("/v1/status").await
                && let Ok(v) = serde_json::from_str::<Value>(&t)
                && pred(&v)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the edge never became {what}")
    };
    wait("online", |v| v["mode"] == "online").await?;
    relay.set(Impairment::cut());
    wait("offline", |v| v["mode"] == "offline").await?;

    // Reception during the outage: provisional records and checks of never-seen patients.
    let valid: Vec<&Qualification> = periods.iter().filter(|q| q.is_valid_on(today)).collect();
    let mut bodies: Vec<(String, Value)> = Vec::new();
    for (i, q) in valid.iter().cycle().take(args.provisional).enumerate() {
        let mut b = json!({"declared": {"name": q.name, "name_kana": q.name_kana, "birth_date": q.birth_date, "sex": q.sex, "address": q.address, "insurer_name": q.insurer_name}, "service_date": today, "total_fee_yen": 1000 + (i % 50) * 370});
        if i % 2 == 0 {
            b["person_id"] = json!(q.person_id);
        }
        bodies.push(("/v1/provisional".into(), b));
    }
    for q in valid.iter().rev().cycle().take(args.deferred) {
        bodies.push(("/v1/checks".into(), card_check(q, today)));
    }
    let bodies = Arc::new(bodies);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let filling = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (client, http, bodies, next) =
            (client.clone(), http.clone(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut failed = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((path, body)) = bodies.get(i) else {
                    return failed;
                };
                match client.post(format!("{http}{path}")).json(body).send().await {
                    Ok(r) if r.status().is_success() => {}
                    _ => failed += 1,
                }
            }
        }));
    }
    let mut failed = 0;
    for t in tasks {
        failed += t.await?;
    }
    eprintln!(
        "onshi-drain [{name}]: recorded {} items offline in {:.1} s ({failed} failed)",
        bodies.len(),
        filling.elapsed().as_secs_f64()
    );
    if failed > 0 {
        bail!("{failed} requests failed while recording");
    }

    // The link returns.
    let (up0, down0) = (
        relay.stats().bytes[1].load(Ordering::Relaxed),
        relay.stats().bytes[0].load(Ordering::Relaxed),
    );
    let dropped0 = relay.stats().dropped.load(Ordering::Relaxed);
    let payload = |m: &str| {
        [
            metric(
                m,
                "onshi_link_payload_bytes_total{direction=\"to_reconciler\"}",
            ) as u64,
            metric(
                m,
                "onshi_link_payload_bytes_total{direction=\"from_reconciler\"}",
            ) as u64,
        ]
    };
    let payload0 = payload(&get("/metrics").await?);
    // Reception at work during the drain: patients whose cards the registry knows, checked one
    // after the other (each waits for its answer), every `--reception-every-ms`.
    let reception_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reception = (args.reception_every_ms > 0).then(|| {
        let bodies: Vec<Value> = valid
            .iter()
            .step_by(7)
            .map(|q| card_check(q, today))
            .collect();
        let (client, url, done, every) = (
            client.clone(),
            format!("{http}/v1/checks"),
            reception_done.clone(),
            Duration::from_millis(args.reception_every_ms),
        );
        tokio::spawn(async move {
            let mut seen: Vec<(f64, bool)> = Vec::new();
            for body in bodies.iter().cycle() {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let sent = Instant::now();
                if let Ok(r) = client.post(&url).json(body).send().await
                    && let Ok(v) = r.json::<Value>().await
                {
                    seen.push((
                        sent.elapsed().as_secs_f64() * 1000.0,
                        v["source"] == "online",
                    ));
                }
                tokio::time::sleep(every.saturating_sub(sent.elapsed())).await;
            }
            seen
        })
    });
    relay.set(imp);
    let healed = Instant::now();
    // When the edge's first datagram after the heal crossed (the edge only notices the line is
    // back at its next connection attempt): watched closely, apart from the coarser polling.
    let first_byte = {
        let stats = relay.clone_stats();
        tokio::spawn(async move {
            while stats.bytes[1].load(Ordering::Relaxed) == up0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            healed.elapsed().as_secs_f64()
        })
    };
    let (mut max_edge, mut max_rec) = (0.0f64, 0.0f64);
    let (mut synced, mut completed) = (false, 0u64);
    let (mut deferred_at, mut synced_at, mut link_up_at) = (None, None, None);
    let cpu = || {
        [
            cpu_seconds(Some(edge.0.id())),
            cpu_seconds(Some(reconciler.0.id())),
            cpu_seconds(None),
        ]
    };
    let cpu0 = cpu();
    let (mut last_cpu, mut last_t) = (cpu0, 0.0f64);
    let mut payload_end = payload0;
    while healed.elapsed() < Duration::from_secs(args.timeout_s) {
        max_edge = max_edge.max(rss_mib(edge.0.id()));
        max_rec = max_rec.max(rss_mib(reconciler.0.id()));
        // One scrape per poll: everything measured is on `/metrics`.
        let m = get("/metrics").await.unwrap_or_default();
        payload_end = payload(&m);
        completed = metric(&m, "onshi_deferred_completed_total") as u64;
        let settled_back = metric(&m, "onshi_queue_settled") as usize;
        synced = metric(&m, "onshi_sync_synced") == 1.0
            && metric(&m, "onshi_sync_pending_records{direction=\"outgoing\"}") == 0.0
            && metric(&m, "onshi_sync_pending_records{direction=\"incoming\"}") == 0.0;
        let t = healed.elapsed().as_secs_f64();
        if metric(&m, "onshi_link_up") == 1.0 {
            link_up_at.get_or_insert(t);
        }
        if args.timeline {
            let now = cpu();
            let dt = (t - last_t).max(1e-3);
            let cores = |i: usize| (now[i] - last_cpu[i]) / dt;
            eprintln!(
                "  {t:6.2} s  cores edge {:.2} reconciler {:.2} harness {:.2}  deferred {completed:>6}  pending out {:>6} in {:>6}  bytes up {:>9} down {:>9}",
                cores(0),
                cores(1),
                cores(2),
                metric(&m, "onshi_sync_pending_records{direction=\"outgoing\"}"),
                metric(&m, "onshi_sync_pending_records{direction=\"incoming\"}"),
                relay.stats().bytes[1].load(Ordering::Relaxed) - up0,
                relay.stats().bytes[0].load(Ordering::Relaxed) - down0,
            );
            (last_cpu, last_t) = (now, t);
        }
        if completed >= args.deferred as u64 {
            deferred_at.get_or_insert(t);
        }
        if synced {
            synced_at.get_or_insert(t);
        } else {
            synced_at = None;
        }
        if synced && completed >= args.deferred as u64 && settled_back >= args.provisional {
            break;
        }
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
    }
    let seconds = healed.elapsed().as_secs_f64();
    let cpu_end = cpu();
    reception_done.store(true, Ordering::Relaxed);
    let mut reception = match reception {
        Some(t) => t.await?,
        None => Vec::new(),
    };
    reception.sort_by(|a, b| a.0.total_cmp(&b.0));
    let up = relay.stats().bytes[1].load(Ordering::Relaxed) - up0;
    let down = relay.stats().bytes[0].load(Ordering::Relaxed) - down0;
    let queue: Value = serde_json::from_str(&get("/v1/queue").await?)?;
    let settled = queue["items"].as_array().map_or(0, |items| {
        items
            .iter()
            .filter(|i| i["kind"] == "provisional" && !i["settlement"].is_null())
            .count()
    });
    let first_byte_seconds = first_byte.await?;
    let capacity = (imp.rate_bytes_per_s > 0).then_some(imp.rate_bytes_per_s as f64 * seconds);
    let capacity_in_use = (imp.rate_bytes_per_s > 0)
        .then_some(imp.rate_bytes_per_s as f64 * (seconds - first_byte_seconds));
    let (payload_up, payload_down) = (payload_end[0] - payload0[0], payload_end[1] - payload0[1]);
    let goodput = payload_up.max(payload_down) as f64;
    let carried = up.max(down) as f64;
    Ok(Drain {
        link: name.to_string(),
        seconds,
        deferred_seconds: deferred_at,
        synced_seconds: synced_at,
        synced,
        deferred_completed: completed,
        settled,
        bytes_to_reconciler: up,
        bytes_to_edge: down,
        payload_to_reconciler: payload_up,
        payload_to_edge: payload_down,
        goodput_of_capacity: capacity.map(|c| goodput / c),
        utilisation_of_capacity: capacity.map(|c| carried / c),
        first_byte_seconds,
        link_up_seconds: link_up_at,
        goodput_of_capacity_in_use: capacity_in_use.map(|c| goodput / c),
        utilisation_of_capacity_in_use: capacity_in_use.map(|c| carried / c),
        relay_dropped: relay.stats().dropped.load(Ordering::Relaxed) - dropped0,
        max_rss_edge_mib: max_edge,
        max_rss_reconciler_mib: max_rec,
        cpu_seconds_edge: cpu_end[0] - cpu0[0],
        cpu_seconds_reconciler: cpu_end[1] - cpu0[1],
        cpu_seconds_harness: cpu_end[2] - cpu0[2],
        reception_checks: reception.len(),
        reception_online: reception.iter().filter(|(_, online)| *online).count(),
        reception_past_deadline: reception
            .iter()
            .filter(|(ms, online)| !online && *ms >= DEADLINE_MS as f64)
            .count(),
        reception_p50_ms: reception.get(reception.len() / 2).map(|r| r.0),
        reception_max_ms: reception.last().map(|r| r.0),
    })
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), target)?;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = tempfile::Builder::new().prefix("onshi-drain-").tempdir()?;
    let facility = FacilityCode::parse("1311234567")?;
    let today = chrono::Local::now().date_naive();
    onshi_sync::pki::init(&root.path().join("pki"), std::slice::from_ref(&facility))?;
    let people = (args.deferred + args.provisional).max(1000) + 2000;
    let periods = onshi_sync::synth::generate(&onshi_sync::synth::SynthParams {
        people,
        seed: 1,
        today,
    });
    {
        let store = Arc::new(onshi_sync::store::SledStore::open(
            &root.path().join("registry"),
        )?);
        let registry = onshi_sync::registry::Registry::open(store)?;
        for q in &periods {
            registry.put(q)?;
        }
        registry.sync()?;
    }
    let rate = (args.mbit * 1_000_000.0 / 8.0) as u64;
    let half = args.rtt_ms / 2;
    let impaired = Impairment {
        drop: args.loss,
        delay_ms: (half, half),
        rate_bytes_per_s: rate,
        ..Impairment::clean()
    };
    let mut results = Vec::new();
    for (name, imp) in [("impaired", impaired), ("clean", Impairment::clean())] {
        if args.only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let d = run_drain(&args, root.path(), name, imp, &periods, &facility, today).await?;
        // A moment the drain never reached says so (not NaN).
        let secs =
            |v: Option<f64>| v.map_or("— (not reached)".to_string(), |s| format!("{s:.2} s"));
        eprintln!(
            "onshi-drain [{name}]: {:.1} s to synced with {} deferred completed (at {}) and {} settled (synced at {}); {} B to the reconciler, {} B back ({} B / {} B of payload); first datagram at {:.2} s, link up at {}; goodput {} (from the first datagram {}; the relay carried {}); relay dropped {}; max RSS edge {:.0} MiB, reconciler {:.0} MiB; CPU edge {:.1} s, reconciler {:.1} s, harness {:.1} s",
            d.seconds,
            d.deferred_completed,
            secs(d.deferred_seconds),
            d.settled,
            secs(d.synced_seconds),
            d.bytes_to_reconciler,
            d.bytes_to_edge,
            d.payload_to_reconciler,
            d.payload_to_edge,
            d.first_byte_seconds,
            secs(d.link_up_seconds),
            d.goodput_of_capacity.map_or("—".to_string(), |g| format!(
                "{:.1} % of capacity",
                g * 100.0
            )),
            d.goodput_of_capacity_in_use
                .map_or("—".to_string(), |g| format!("{:.1} %", g * 100.0)),
            d.utilisation_of_capacity
                .map_or("—".to_string(), |g| format!(
                    "{:.1} % of capacity",
                    g * 100.0
                )),
            d.relay_dropped,
            d.max_rss_edge_mib,
            d.max_rss_reconciler_mib,
            d.cpu_seconds_edge,
            d.cpu_seconds_reconciler,
            d.cpu_seconds_harness
        );
        if d.reception_checks > 0 {
            eprintln!(
                "onshi-drain [{name}]: reception during the drain: {} checks, {} answered online, {} not online after the {DEADLINE_MS} ms deadline, p50 {:.0} ms, slowest {:.0} ms",
                d.reception_checks,
                d.reception_online,
                d.reception_past_deadline,
                d.reception_p50_ms.unwrap_or_default(),
                d.reception_max_ms.unwrap_or_default()
            );
        }
        results.push(d);
    }
    if args.keep {
        eprintln!(
            "onshi-drain: work directory kept: {}",
            root.keep().display()
        );
    }
    let out = json!({"provisional": args.provisional, "deferred": args.deferred, "mbit": args.mbit, "rtt_ms": args.rtt_ms, "loss": args.loss, "results": results});
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{out}");
    }
    Ok(())
}
