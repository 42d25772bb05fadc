//! `onshi-central`: the centre's benchmark, the embedded store beside PostgreSQL in one run. For
//! each store it
//! 1. imports a synthetic registry with `onshi-reconciler import` (lines/s; PostgreSQL after
//!    `migrate`, on a private server started by this command: `tests/src/pg.rs`);
//! 2. starts `onshi-reconciler serve` (one instance; on PostgreSQL also a second on the same
//!    database) and drives online checks straight over QUIC as fast as they go (closed loop:
//!    checks/s, p50/p99), to one instance and, on PostgreSQL, spread over two;
//! 3. drives checks at a fixed rate (open loop, latency from the scheduled send) first alone, then
//!    while `onshi-reconciler import` applies a second file to the serving centre (the embedded
//!    store through the admin socket): check p99 without and with the import, and the live
//!    import's lines/s;
//! 4. measures sync persistence in process: `CentralStore::merge` of batches of 64 provisional
//!    records (each batch durable: a transaction / an fsync), records/s.
//!
//! Prints one line per measurement and the ratios PostgreSQL ÷ embedded. The release binaries
//! (`onshi-reconciler`) are taken from this binary's directory.
//!
//! `--mode search` measures central search instead: the registry (`--people`, streamed to a file
//! and imported with `onshi-reconciler import`), `serve`, an outage granted to prefecture 13, then
//! each query of `--queries FILE` (JSON lines `{"kind","truth","body"}`, body = a
//! `POST /v1/search` body, truth = the person id sought; without the flag, a few kinds made here
//! from a sample of the registry) sent over QUIC one at a time, round robin over
//! `--search-clients` facilities (each facility's search rate limit is the production one).
//! Per kind and overall: recall@1, recall@5, p50/p99; and the serving process's resident memory
//! (now and its peak, from /proc), which must not grow with the registry.
//!
//!     cargo build --release --workspace --bins
//!     target/release/onshi-central [--people 200000] [--duration 10] [--stores embedded,postgres]
//!     target/release/onshi-central --mode search --people 10000000 --queries hard.jsonl

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::NaiveDate;
use clap::Parser;
use hdrhistogram::Histogram;
use onshi_model::{CheckRequest, FacilityCode, Qualification};
use onshi_reconciler::store::CentralStore;
use onshi_sync::link::{LinkClient, LinkSettings};
use onshi_sync::wire::{Request, Response};
use onshi_tests::TestDir;
use onshi_tests::bench::{BenchProc, PgCentre, UNTHROTTLED, cpu_seconds, daemon_bins, spawn_ready};

#[derive(Debug, Parser)]
#[command(about = "The centre's benchmark: embedded store beside PostgreSQL")]
struct Args {
    /// People in the synthetic registry (≈1.1 periods each).
    #[arg(long, default_value_t = 200_000)]
    people: usize,
    /// People in the second file imported while serving.
    #[arg(long, default_value_t = 200_000)]
    live_people: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of each load phase.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Checks in flight in the closed loop.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// QUIC connections (facilities) driving the checks.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Checks/s of the fixed-rate phases.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Provisional records merged in the persistence measurement.
    #[arg(long, default_value_t = 20_000)]
    merge_records: usize,
    /// Stores to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "embedded,postgres")]
    stores: Vec<String>,
    /// `checks` (the measurements above) or `search` (central search's recall and latency).
    #[arg(long, default_value = "checks", value_parser = ["checks", "search"])]
    mode: String,
    /// Search mode: the queries, JSON lines `{"kind","truth","body"}`.
    #[arg(long)]
    queries: Option<PathBuf>,
    /// Search mode without `--queries`: people sampled from the registry to make queries of.
    #[arg(long, default_value_t = 200)]
    sample: usize,
    /// Search mode: facilities the queries are spread over (each has the production rate limit).
    #[arg(long, default_value_t = 64)]
    search_clients: usize,
    /// Search mode: the synthetic registry's "today" (ages and current periods are computed
    /// against it). The default is the one `gen_queries` uses, so its queries' truths are the
    /// registry's people.
    #[arg(long, default_value = "2025-06-15")]
    registry_today: NaiveDate,
    /// Search mode: stream the generated registry straight into `onshi-reconciler import -`
    /// instead of writing it to a file first (a 10M registry is ≈4.4 GB of JSON lines). Needs
    /// `--queries`.
    #[arg(long)]
    stream_registry: bool,
    /// Search mode: print each query whose person is not in the top five (kind, body, truth).
    #[arg(long)]
    show_misses: bool,
    /// Search mode: an existing PostgreSQL database (`postgres://USER@HOST:PORT/DB`, the password
    /// in `--postgres-password-file`) instead of a throw-away server. It is migrated, and kept
    /// afterwards, so later runs can search it again with `--skip-import`; the facilities' PKI
    /// is kept beside the password file (`onshi-central-pki/`), as the database records their
    /// certificates.
    #[arg(long, requires = "postgres_password_file")]
    postgres_url: Option<String>,
    /// The password of `--postgres-url`'s role (the file, without its trailing newline).
    #[arg(long)]
    postgres_password_file: Option<PathBuf>,
    /// Search mode: the store already holds this `--people`/`--seed` registry (imported by an
    /// earlier run on the same `--postgres-url`): no import.
    #[arg(long, requires = "postgres_url")]
    skip_import: bool,
}

#[derive(Debug, Clone, Copy)]
struct Load {
    checks_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
    reconciler_cpu: f64,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).unwrap_or_else(|_| unreachable!())
}

/// Card checks of the registry's people on `today`: mostly valid, every tenth with a typo.
fn checks(periods: &[Qualification], today: NaiveDate) -> Vec<CheckRequest> {
    let mut out = Vec::new();
    for (i, q) in periods.iter().enumerate().take(50_000) {
        let number = if i % 10 == 9 {
            format!("{}9", q.number.as_str())
        } else {
            q.number.as_str().to_string()
        };
        let body = serde_json::json!({
            "insurance_card": {"insurer_number": q.insurer_number, "symbol": q.symbol, "number": number, "branch": q.branch},
            "birth_date": q.birth_date,
            "service_date": today,
        });
        if let Ok(r) = CheckRequest::from_json(&body, today) {
            out.push(r);
        }
    }
    out
}

async fn check(c: &LinkClient, req: &CheckRequest) -> bool {
    matches!(
        c.call(Request::Check(req.clone()), Duration::from_secs(10))
            .await,
        Ok(Response::Check(_))
    )
}

/// As many checks as `concurrency` in flight allow, for `seconds`.
async fn closed_loop(
    clients: &[Arc<LinkClient>],
    reqs: &Arc<Vec<CheckRequest>>,
    concurrency: usize,
    seconds: f64,
    pids: &[u32],
) -> Load {
    let next = Arc::new(AtomicUsize::new(0));
    let cpu0: f64 = pids.iter().map(|p| cpu_seconds(Some(*p))).sum();
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (clients, reqs, next) = (clients.to_vec(), reqs.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = hist();
            let mut errors = 0;
            let c = &clients[w % clients.len()];
            while Instant::now() < until {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                if check(c, &reqs[i % reqs.len()]).await {
                    let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                } else {
                    errors += 1;
                }
            }
            (h, errors)
        }));
    }
    let mut h = hist();
    let mut errors = 0;
    for t in tasks {
        if let Ok((th, e)) = t.await {
            let _ = h.add(th);
            errors += e;
        }
    }
    let took = start.elapsed().as_secs_f64();
    let cpu: f64 = pids.iter().map(|p| cpu_seconds(Some(*p))).sum::<f64>() - cpu0;
    Load {
        checks_per_s: h.len() as f64 / took,
        p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
        errors,
        reconciler_cpu: cpu / took,
    }
}

/// `rate` checks/s on schedule for `seconds` (or until `stop` says so); latency from the
/// scheduled send, so a stall is not hidden.
async fn open_loop(
    clients: &[Arc<LinkClient>],
    reqs: &Arc<Vec<CheckRequest>>,
    rate: f64,
    seconds: f64,
    stop: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> Load {
    let start = Instant::now();
    let every = Duration::from_secs_f64(1.0 / rate);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut i = 0usize;
    loop {
        let due = start + every * i as u32;
        if due > start + Duration::from_secs_f64(seconds)
            || stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed))
        {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let (c, req, tx) = (
            clients[i % clients.len()].clone(),
            reqs[i % reqs.len()].clone(),
            tx.clone(),
        );
        tokio::spawn(async move {
            let ok = check(&c, &req).await;
            let _ = tx.send((ok, due.elapsed()));
        });
        i += 1;
    }
    drop(tx);
    let mut h = hist();
    let mut errors = 0;
    while let Some((ok, d)) = rx.recv().await {
        if ok {
            let _ = h.record(d.as_micros().max(1) as u64);
        } else {
            errors += 1;
        }
    }
    Load {
        checks_per_s: h.len() as f64 / start.elapsed().as_secs_f64(),
        p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
        errors,
        reconciler_cpu: f64::NAN,
    }
}

fn show(what: &str, l: &Load) {
    println!(
        "  {what:<44} {:>9.0} checks/s  p50 {:>6.2} ms  p99 {:>7.2} ms  errors {:>4}  reconciler CPU {:.2}",
        l.checks_per_s, l.p50_ms, l.p99_ms, l.errors, l.reconciler_cpu
    );
}

/// Where a store lives for the commands: `--data DIR` or `--store URL --store-password-file F`.
#[derive(Debug, Clone)]
enum Place {
    Embedded(PathBuf),
    Postgres { url: String, password_file: PathBuf },
}

impl Place {
    fn args(&self) -> Vec<String> {
        match self {
            Place::Embedded(d) => vec!["--data".into(), d.display().to_string()],
            Place::Postgres { url, password_file } => vec![
                "--store".into(),
                url.clone(),
                "--store-password-file".into(),
                password_file.display().to_string(),
            ],
        }
    }
}

fn reconciler(bins: &Path, args: &[String]) -> anyhow::Result<std::process::Output> {
    let out = std::process::Command::new(bins.join("onshi-reconciler"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()?;
    if !out.status.success() {
        bail!(
            "onshi-reconciler {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

fn import(bins: &Path, place: &Place, file: &Path) -> anyhow::Result<f64> {
    // Counted streaming: a national registry file does not fit in memory.
    let lines = std::io::BufRead::lines(std::io::BufReader::new(std::fs::File::open(file)?))
        .try_fold(0usize, |n, l| l.map(|_| n + 1))?;
    let mut args = vec!["import".to_string()];
    args.extend(place.args());
    args.push(file.display().to_string());
    let t = Instant::now();
    reconciler(bins, &args)?;
    Ok(lines as f64 / t.elapsed().as_secs_f64())
}

fn serve(
    bins: &Path,
    place: &Place,
    pki: &Path,
    log: &Path,
) -> anyhow::Result<(BenchProc, String)> {
    let mut args: Vec<String> = vec!["serve".into()];
    args.extend(place.args());
    args.extend([
        "--pki".into(),
        pki.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ]);
    args.extend(UNTHROTTLED.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_ready(
        &bins.join("onshi-reconciler"),
        &refs,
        &[("RUST_LOG", "warn")],
        log,
        "onshi-reconciler: listening on quic://",
    )
}

/// The synthetic registry streamed to `path` (nothing of it held here).
fn write_registry_file(
    path: &Path,
    params: &onshi_sync::synth::SynthParams,
) -> anyhow::Result<onshi_sync::synth::SynthSummary> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    Ok(onshi_sync::synth::write_jsonl(params, &mut out)?)
}

/// `onshi-reconciler import … -` with the synthetic registry generated into its standard input.
fn import_streamed(
    bins: &Path,
    place: &Place,
    params: &onshi_sync::synth::SynthParams,
) -> anyhow::Result<onshi_sync::synth::SynthSummary> {
    let mut args = vec!["import".to_string()];
    args.extend(place.args());
    args.push("-".into());
    let mut child = std::process::Command::new(bins.join("onshi-reconciler"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stdin = child.stdin.take().context("import's stdin")?;
    let summary = onshi_sync::synth::write_jsonl(params, &mut std::io::BufWriter::new(stdin))?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "onshi-reconciler {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(summary)
}

/// The registry's tables on disk (heap and indexes), to see what a larger registry needs.
fn print_table_sizes(rt: &tokio::runtime::Runtime, url: &str) -> anyhow::Result<()> {
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let task = tokio::spawn(conn);
        let rows = client
            .query(
                "SELECT c.relname::text, pg_table_size(c.oid), pg_indexes_size(c.oid),
                        c.reltuples::int8
                 FROM pg_class c WHERE c.relkind = 'r' AND c.relname IN
                     ('registry_periods', 'registry_changes', 'registry_search')
                 ORDER BY 1",
                &[],
            )
            .await?;
        for r in rows {
            let mib = |b: i64| b as f64 / (1u64 << 20) as f64;
            println!(
                "  table {}: {:.0} MiB + indexes {:.0} MiB (≈{} rows)",
                r.get::<_, String>(0),
                mib(r.get(1)),
                mib(r.get(2)),
                r.get::<_, i64>(3)
            );
        }
        drop(client);
        let _ = task.await;
        anyhow::Ok(())
    })
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => dir_bytes(&e.path()),
                Ok(_) => e.metadata().map_or(0, |m| m.len()),
                Err(_) => 0,
            })
            .sum()
    })
}

fn write_registry(
    path: &Path,
    people: usize,
    seed: u64,
    today: NaiveDate,
) -> anyhow::Result<Vec<Qualification>> {
    let periods = onshi_sync::synth::generate(&onshi_sync::synth::SynthParams {
        people,
        seed,
        today,
    });
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for q in &periods {
        serde_json::to_writer(&mut out, q)?;
        std::io::Write::write_all(&mut out, b"\n")?;
    }
    std::io::Write::flush(&mut out)?;
    Ok(periods)
}

/// Provisional records merged in batches of 64, each batch durable: records/s.
fn merge_rate(store: &dyn CentralStore, n: usize, facility: &FacilityCode) -> anyhow::Result<f64> {
    use onshi_model::record::{Basis, Declaration, ProvisionalRecord, RecordState};
    use onshi_sync::crdt::{JournalRecord, RecordFacts, RecordId};
    let day = NaiveDate::from_ymd_opt(2026, 4, 1).context("date")?;
    let records: Vec<JournalRecord> = (0..n as u64)
        .map(|seq| {
            let id = RecordId::new(facility.clone(), 1, seq + 1);
            let p = ProvisionalRecord {
                record_id: id.to_string(),
                created_at: chrono::Utc::now(),
                declared: Declaration {
                    name: "山田　太郎".into(),
                    name_kana: Some("ヤマダ　タロウ".into()),
                    birth_date: NaiveDate::from_ymd_opt(1980, 1, 1).unwrap_or(day),
                    sex: onshi_model::Sex::Male,
                    address: None,
                    insurer_name: None,
                    insurance_type: None,
                    employer: None,
                    contact: None,
                    share_percent: None,
                },
                person_id: None,
                service_date: day,
                total_fee_yen: 10_000,
                share_percent: 30,
                collected_yen: 3_000,
                basis: Basis::AgeRule,
                rule: None,
                explanation: String::new(),
                state: RecordState::Sent,
            };
            JournalRecord::new(id, RecordFacts::Provisional(p))
                .map_err(|e| anyhow::anyhow!("{e:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let t = Instant::now();
    for batch in records.chunks(64) {
        store.merge(facility, batch.to_vec())?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

#[derive(Debug, Default)]
struct Summary {
    import: Option<f64>,
    one: Option<Load>,
    two: Option<Load>,
    quiet: Option<Load>,
    during: Option<Load>,
    live_import: Option<f64>,
    merge: Option<f64>,
}

fn run_store(
    kind: &str,
    args: &Args,
    rt: &tokio::runtime::Runtime,
    work: &TestDir,
    bins: &Path,
) -> anyhow::Result<Summary> {
    let _in_runtime = rt.enter();
    let today = NaiveDate::from_ymd_opt(2026, 4, 1).context("date")?;
    let dir = work.join(kind);
    std::fs::create_dir_all(&dir)?;
    let pki = dir.join("pki");
    let facilities: Vec<FacilityCode> = (0..args.clients)
        .map(|i| FacilityCode::parse(&format!("131{:07}", i + 1)))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    onshi_sync::pki::init(&pki, &facilities)?;
    let registry = dir.join("registry.jsonl");
    let periods = write_registry(&registry, args.people, args.seed, today)?;
    let live = dir.join("live.jsonl");
    write_registry(&live, args.live_people, args.seed + 1000, today)?;
    let mut server = None;
    let place = match kind {
        "embedded" => Place::Embedded(dir.join("data")),
        "postgres" => {
            let centre = PgCentre::start(work, &dir, bins)?;
            let place = Place::Postgres {
                url: centre.url.clone(),
                password_file: centre.password_file.clone(),
            };
            server = Some(centre);
            place
        }
        other => bail!("--stores: unknown store {other}"),
    };
    println!("{kind}:");
    let mut sum = Summary::default();
    let rate = import(bins, &place, &registry)?;
    println!("  import of {} lines: {rate:.0} lines/s", periods.len());
    sum.import = Some(rate);
    let reqs = Arc::new(checks(&periods, today));
    let (one, addr1) = serve(bins, &place, &pki, &dir.join("reconciler-1.log"))?;
    let addr1: std::net::SocketAddr = addr1.trim().parse()?;
    let connect = |addr: std::net::SocketAddr| -> anyhow::Result<Vec<Arc<LinkClient>>> {
        facilities
            .iter()
            .map(|f| {
                let id = onshi_sync::pki::load_client(&pki, f)?;
                Ok(Arc::new(LinkClient::new(
                    addr,
                    &id,
                    LinkSettings::default(),
                )?))
            })
            .collect()
    };
    let clients1 = connect(addr1)?;
    // Warm-up: connections up, pages cached.
    rt.block_on(closed_loop(&clients1, &reqs, args.concurrency, 2.0, &[]));
    let l = rt.block_on(closed_loop(
        &clients1,
        &reqs,
        args.concurrency,
        args.duration,
        &[one.0.id()],
    ));
    show("closed loop, one instance", &l);
    sum.one = Some(l);
    if kind == "postgres" {
        let (two, addr2) = serve(bins, &place, &pki, &dir.join("reconciler-2.log"))?;
        let addr2: std::net::SocketAddr = addr2.trim().parse()?;
        let clients2 = connect(addr2)?;
        let both: Vec<Arc<LinkClient>> = clients1
            .iter()
            .cloned()
            .zip(clients2.iter().cloned())
            .flat_map(|(a, b)| [a, b])
            .collect();
        rt.block_on(closed_loop(&both, &reqs, args.concurrency, 2.0, &[]));
        let l = rt.block_on(closed_loop(
            &both,
            &reqs,
            args.concurrency,
            args.duration,
            &[one.0.id(), two.0.id()],
        ));
        show("closed loop, two instances", &l);
        sum.two = Some(l);
        drop(clients2);
        drop(two);
    }
    let quiet = rt.block_on(open_loop(&clients1, &reqs, args.rate, args.duration, None));
    show(&format!("{} checks/s, no import", args.rate), &quiet);
    sum.quiet = Some(quiet);
    // The live import beside the same fixed-rate load.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (b, p, f, s) = (
        bins.to_path_buf(),
        place.clone(),
        live.clone(),
        stop.clone(),
    );
    let importer = std::thread::spawn(move || {
        let r = import(&b, &p, &f);
        s.store(true, Ordering::Relaxed);
        r
    });
    let during = rt.block_on(open_loop(&clients1, &reqs, args.rate, 3600.0, Some(stop)));
    let live_rate = importer
        .join()
        .map_err(|_| anyhow::anyhow!("importer panicked"))??;
    show(
        &format!("{} checks/s, during a live import", args.rate),
        &during,
    );
    println!("  live import while serving: {live_rate:.0} lines/s");
    sum.during = Some(during);
    sum.live_import = Some(live_rate);
    drop(clients1);
    drop(one);
    // Persistence, in process (no serve holds the store now).
    let store = onshi_reconciler::store::open(&match &place {
        Place::Embedded(d) => onshi_reconciler::store::StoreTarget::Embedded {
            dir: d.clone(),
            data_key: None,
        },
        Place::Postgres { url, password_file } => onshi_reconciler::store::StoreTarget::Postgres {
            url: url.clone(),
            password: Some(
                std::fs::read_to_string(password_file)?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            ca: None,
        },
    })?;
    let m = merge_rate(
        store.as_ref(),
        args.merge_records,
        &FacilityCode::parse("1319999999").map_err(|e| anyhow::anyhow!("{e}"))?,
    )?;
    println!("  sync persistence (merge, batches of 64, each durable): {m:.0} records/s");
    sum.merge = Some(m);
    drop(store);
    drop(server);
    Ok(sum)
}

// ---------------------------------------------------------------------------------------------
// Search mode

/// One query of the set: its kind, the person sought, the `POST /v1/search` body.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
struct QueryLine {
    kind: String,
    truth: String,
    body: serde_json::Value,
}

/// Queries made here from every `step`-th registry line (when no `--queries` file is given): the
/// registry's own name and date (`clean`), the reading alone in hiragana (`kana_only`), the
/// surname alone (`surname_only`), month and day swapped (`date_swapped`, when that is a date).
fn sample_queries(registry: &Path, sample: usize) -> anyhow::Result<Vec<QueryLine>> {
    use std::io::BufRead;
    let lines = std::io::BufReader::new(std::fs::File::open(registry)?)
        .lines()
        .count();
    let step = (lines / sample.max(1)).max(1);
    let mut out = Vec::new();
    let file = std::io::BufReader::new(std::fs::File::open(registry)?);
    for line in file.lines().step_by(step).take(sample) {
        let q: serde_json::Value = serde_json::from_str(&line?)?;
        let text = |k: &str| q[k].as_str().unwrap_or_default().to_string();
        let truth = text("person_id");
        let hiragana: String = text("name_kana")
            .chars()
            .map(|c| match c {
                'ァ'..='ヶ' => char::from_u32(c as u32 - 0x60).unwrap_or(c),
                c => c,
            })
            .collect();
        let surname = text("name")
            .split([' ', '　'])
            .next()
            .unwrap_or_default()
            .to_string();
        let mut push = |kind: &str, body: serde_json::Value| {
            out.push(QueryLine {
                kind: kind.into(),
                truth: truth.clone(),
                body,
            })
        };
        let (birth, sex) = (q["birth_date"].clone(), q["sex"].clone());
        push(
            "clean",
            serde_json::json!({"name": q["name"], "birth_date": birth, "sex": sex}),
        );
        push(
            "kana_only",
            serde_json::json!({"name": hiragana, "birth_date": birth, "sex": sex}),
        );
        push(
            "surname_only",
            serde_json::json!({"name": surname, "birth_date": birth, "sex": sex, "address": q["address"]}),
        );
        if let Some(d) = birth
            .as_str()
            .and_then(|b| NaiveDate::parse_from_str(b, "%Y-%m-%d").ok())
            && let Some(swapped) = chrono::Datelike::with_month(&d, 1)
                .and_then(|x| chrono::Datelike::with_day(&x, chrono::Datelike::month(&d)))
                .and_then(|x| chrono::Datelike::with_month(&x, chrono::Datelike::day(&d)))
            && swapped != d
        {
            push(
                "date_swapped",
                serde_json::json!({"name": q["name"], "birth_date": swapped, "sex": sex}),
            );
        }
    }
    Ok(out)
}

fn read_queries(path: &Path) -> anyhow::Result<Vec<QueryLine>> {
    std::fs::read_to_string(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1))
        })
        .collect()
}

/// Resident memory of a process now and at its peak, in MiB (`VmRSS`, `VmHWM`).
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[derive(Debug, Default)]
struct KindScore {
    queries: usize,
    at1: usize,
    at5: usize,
    refused: usize,
    latency: Option<Histogram<u64>>,
}

impl KindScore {
    fn add(&mut self, rank: Option<usize>, us: u64) {
        self.queries += 1;
        self.at1 += usize::from(rank == Some(0));
        self.at5 += usize::from(rank.is_some_and(|r| r < 5));
        let _ = self.latency.get_or_insert_with(hist).record(us.max(1));
    }

    fn show(&self, kind: &str) {
        let pct = |n: usize| 100.0 * n as f64 / self.queries.max(1) as f64;
        let q = |p: f64| {
            self.latency
                .as_ref()
                .map_or(f64::NAN, |h| h.value_at_quantile(p) as f64 / 1000.0)
        };
        println!(
            "  {kind:<20} {:>6} queries  recall@1 {:>5.1} %  recall@5 {:>5.1} %  p50 {:>7.2} ms  p99 {:>7.2} ms{}",
            self.queries,
            pct(self.at1),
            pct(self.at5),
            q(0.5),
            q(0.99),
            if self.refused > 0 {
                format!("  refused {}", self.refused)
            } else {
                String::new()
            }
        );
    }
}

fn run_search(
    kind: &str,
    args: &Args,
    rt: &tokio::runtime::Runtime,
    work: &TestDir,
    bins: &Path,
) -> anyhow::Result<()> {
    let _in_runtime = rt.enter();
    let today = args.registry_today;
    let dir = work.join(format!("search-{kind}"));
    std::fs::create_dir_all(&dir)?;
    // A kept database remembers the facilities' certificates: keep their PKI beside its password
    // file too, so a later run presents the same ones (`pki init` only adds what is missing).
    let pki = match &args.postgres_password_file {
        Some(pw) if args.postgres_url.is_some() => pw
            .parent()
            .unwrap_or(Path::new("."))
            .join("onshi-central-pki"),
        _ => dir.join("pki"),
    };
    let facilities: Vec<FacilityCode> = (0..args.search_clients.max(1))
        .map(|i| FacilityCode::parse(&format!("131{:07}", i + 1)))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    onshi_sync::pki::init(&pki, &facilities)?;
    let params = onshi_sync::synth::SynthParams {
        people: args.people,
        seed: args.seed,
        today,
    };
    let registry = dir.join("registry.jsonl");
    let mut written = None;
    let queries = match &args.queries {
        Some(path) => read_queries(path)?,
        None if args.stream_registry => bail!("--stream-registry needs --queries"),
        None => {
            written = Some(write_registry_file(&registry, &params)?);
            sample_queries(&registry, args.sample)?
        }
    };
    let mut server = None;
    let place = match (kind, &args.postgres_url, &args.postgres_password_file) {
        ("postgres", Some(url), Some(password_file)) => {
            let place = Place::Postgres {
                url: url.clone(),
                password_file: password_file.clone(),
            };
            let mut migrate = vec!["migrate".to_string()];
            migrate.extend(place.args());
            reconciler(bins, &migrate)?;
            place
        }
        ("embedded", _, _) => Place::Embedded(dir.join("data")),
        ("postgres", _, _) => {
            let centre = PgCentre::start(work, &dir, bins)?;
            let place = Place::Postgres {
                url: centre.url.clone(),
                password_file: centre.password_file.clone(),
            };
            server = Some(centre);
            place
        }
        (other, _, _) => bail!("--stores: unknown store {other}"),
    };
    println!("{kind}, central search:");
    if args.skip_import {
        println!(
            "  no import: the store already holds the registry of {} people (seed {})",
            args.people, args.seed
        );
    } else if args.stream_registry {
        // Generation and import run together (the generator is the faster of the two).
        let t = Instant::now();
        let summary = import_streamed(bins, &place, &params)?;
        println!(
            "  import of {} people ({} periods), streamed from the generator: {:.0} lines/s ({:.0} s)",
            summary.people,
            summary.periods,
            summary.periods as f64 / t.elapsed().as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
    } else {
        let summary = match written {
            Some(s) => s,
            None => write_registry_file(&registry, &params)?,
        };
        let rate = import(bins, &place, &registry)?;
        println!(
            "  import of {} people ({} periods): {rate:.0} lines/s",
            summary.people, summary.periods
        );
    }
    let data = match &server {
        Some(centre) => centre.server.data_dir().map(Path::to_path_buf),
        None => Some(dir.join("data")),
    };
    if let Some(data) = data {
        println!(
            "  data directory after the import: {:.2} GiB",
            dir_bytes(&data) as f64 / (1u64 << 30) as f64
        );
    }
    if let Some(centre) = &server {
        print_table_sizes(rt, centre.server.url())?;
    }
    let (proc_, addr) = serve(bins, &place, &pki, &dir.join("reconciler.log"))?;
    let pid = proc_.0.id();
    let addr: std::net::SocketAddr = addr.trim().parse()?;
    let (rss, _) = memory_mib(pid);
    println!("  reconciler resident memory after start: {rss:.0} MiB");
    let mut grant = vec!["outage".to_string(), "grant".into()];
    grant.extend(place.args());
    grant.extend(["--prefecture".into(), "13".into()]);
    reconciler(bins, &grant)?;
    let clients: Vec<LinkClient> = facilities
        .iter()
        .map(|f| {
            let id = onshi_sync::pki::load_client(&pki, f)?;
            Ok(LinkClient::new(addr, &id, LinkSettings::default())?)
        })
        .collect::<anyhow::Result<_>>()?;
    let mut kinds: std::collections::BTreeMap<String, KindScore> = Default::default();
    let mut all = KindScore::default();
    for (i, q) in queries.iter().enumerate() {
        let query = match onshi_reconciler::search::Query::from_json(&q.body) {
            Ok(query) => query,
            Err(e) => {
                kinds.entry(q.kind.clone()).or_default().refused += 1;
                eprintln!("query {}: {e}", i + 1);
                continue;
            }
        };
        let client = &clients[i % clients.len()];
        let (answer, us) = loop {
            let t = Instant::now();
            let r =
                rt.block_on(client.call(Request::Search(query.clone()), Duration::from_secs(30)))?;
            let us = t.elapsed().as_micros() as u64;
            match r {
                // The production limit per facility: wait, and ask again (not timed).
                Response::Error { code, .. } if code == "rate_limited" => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => break (other, us),
            }
        };
        let rank = match answer {
            Response::Search(hits) => hits.iter().position(|h| h.person_id.as_str() == q.truth),
            Response::Error { code, message } => {
                kinds.entry(q.kind.clone()).or_default().refused += 1;
                eprintln!("query {}: {code}: {message}", i + 1);
                continue;
            }
            other => bail!("unexpected answer {other:?}"),
        };
        if args.show_misses && rank.is_none_or(|r| r >= 5) {
            eprintln!("miss {} {} {}", q.kind, q.truth, q.body);
        }
        kinds.entry(q.kind.clone()).or_default().add(rank, us);
        all.add(rank, us);
    }
    for (k, score) in &kinds {
        score.show(k);
    }
    all.show("overall");
    let (rss, peak) = memory_mib(pid);
    println!("  reconciler resident memory after the queries: {rss:.0} MiB (peak {peak:.0} MiB)");
    drop(clients);
    drop(proc_);
    drop(server);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if (args.postgres_url.is_some() || args.skip_import)
        && (args.mode != "search" || args.stores != ["postgres"])
    {
        bail!("--postgres-url and --skip-import: only with --mode search --stores postgres");
    }
    let bins = if args.mode == "search" {
        // Central search needs the reconciler only (no edge is started).
        let exe = std::env::current_exe()?;
        let bins = exe.parent().context("exe dir")?.to_path_buf();
        if !bins.join("onshi-reconciler").is_file() {
            bail!("onshi-reconciler not found next to {}", exe.display());
        }
        bins
    } else {
        daemon_bins()?
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let work = TestDir::new("central-bench");
    eprintln!(
        "load average before: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if args.mode == "search" {
        for kind in &args.stores {
            run_search(kind, &args, &rt, &work, &bins)?;
        }
        return Ok(());
    }
    let mut results = Vec::new();
    for kind in &args.stores {
        results.push((kind.clone(), run_store(kind, &args, &rt, &work, &bins)?));
    }
    if let (Some((_, e)), Some((_, p))) = (
        results.iter().find(|(k, _)| k == "embedded"),
        results.iter().find(|(k, _)| k == "postgres"),
    ) {
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if a > 0.0 => format!("{:.2}", b / a),
            _ => "-".into(),
        };
        println!("PostgreSQL ÷ embedded:");
        println!("  import lines/s {}", ratio(e.import, p.import));
        println!(
            "  checks/s, one instance {}",
            ratio(e.one.map(|l| l.checks_per_s), p.one.map(|l| l.checks_per_s))
        );
        println!(
            "  checks/s, PostgreSQL with two ÷ embedded with one {}",
            ratio(e.one.map(|l| l.checks_per_s), p.two.map(|l| l.checks_per_s))
        );
        println!(
            "  p99 at {} checks/s {}",
            args.rate,
            ratio(e.quiet.map(|l| l.p99_ms), p.quiet.map(|l| l.p99_ms))
        );
        println!(
            "  p99 during a live import {}",
            ratio(e.during.map(|l| l.p99_ms), p.during.map(|l| l.p99_ms))
        );
        println!(
            "  live import lines/s {}",
            ratio(e.live_import, p.live_import)
        );
        println!("  sync persistence records/s {}", ratio(e.merge, p.merge));
    }
    eprintln!(
        "load average after: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    Ok(())
}
