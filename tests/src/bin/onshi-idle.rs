//! `onshi-idle`: what idle facilities cost the centre. Starts one `onshi-reconciler serve` (release
//! binary next to this one, embedded store) with N facilities in its PKI, connects N edges' links
//! from this process (one `LinkClient` each, its own certificate and UDP socket, QUIC keep-alive
//! every second as the edge has it), pings each once, then leaves them idle and measures the
//! reconciler's CPU time and resident memory over a window. Prints one line per N and the
//! extrapolation to 230,000 facilities (cores = CPU seconds per second × 230,000 / N).
//!
//!     cargo build --release --workspace --bins
//!     target/release/onshi-idle --facilities 1000,2000,5000,10000 [--window-s 20]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use onshi_model::FacilityCode;
use onshi_sync::link::{LinkClient, LinkSettings};
use onshi_sync::wire::{Request, Response};
use onshi_tests::bench::{cpu_seconds, daemon_bins, spawn_reconciler};

#[derive(Debug, Parser)]
#[command(about = "The reconciler's CPU and memory with N idle edge connections")]
struct Args {
    /// Comma-separated counts of idle facilities, measured in turn (one reconciler each).
    #[arg(long, value_delimiter = ',', default_value = "1000,2000,5000,10000")]
    facilities: Vec<usize>,
    /// Seconds measured once every connection is up and idle.
    #[arg(long, default_value_t = 20.0)]
    window_s: f64,
    /// Seconds waited after the last connection before the window starts (handshakes settle).
    #[arg(long, default_value_t = 5.0)]
    settle_s: f64,
    /// Also send an application-level ping every this many ms from each facility, as the
    /// edge's mode monitor does (`daemon/src/monitor.rs`, 1 s); 0: QUIC keep-alives only.
    #[arg(long, default_value_t = 0)]
    ping_every_ms: u64,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Row {
    facilities: usize,
    connected: usize,
    connect_s: f64,
    reconciler_cpu_per_s: f64,
    reconciler_rss_mib: f64,
    rss_per_facility_kib: f64,
    cores_for_230k: f64,
    memory_for_230k_gib: f64,
}

fn rss_kib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(f64::NAN)
}

/// Facility codes: prefecture 13, medical, distinct 7-digit numbers.
fn codes(n: usize) -> Vec<FacilityCode> {
    (0..n)
        .map(|i| FacilityCode::parse(&format!("131{:07}", i + 1)).expect("a facility code"))
        .collect()
}

fn measure(n: usize, args: &Args, rt: &tokio::runtime::Runtime) -> anyhow::Result<Row> {
    // Clients are made and dropped inside the runtime (their endpoints hold its IO driver).
    let _in_runtime = rt.enter();
    let bins = daemon_bins()?;
    let dir = tempfile::Builder::new().prefix("onshi-idle-").tempdir()?;
    let pki = dir.path().join("pki");
    let facilities = codes(n);
    onshi_sync::pki::init(&pki, &facilities).context("pki init")?;
    let (proc, addr) = spawn_reconciler(
        &bins,
        &dir.path().join("data"),
        &pki,
        &[("RUST_LOG", "warn")],
        &dir.path().join("reconciler.log"),
    )?;
    let pid = proc.0.id();
    let addr: std::net::SocketAddr = addr.trim().parse().context("reconciler address")?;
    let started = Instant::now();
    let clients: Vec<Arc<LinkClient>> = rt.block_on(async {
        let mut clients = Vec::with_capacity(n);
        for f in &facilities {
            let identity = onshi_sync::pki::load_client(&pki, f)?;
            clients.push(Arc::new(LinkClient::new(
                addr,
                &identity,
                LinkSettings::default(),
            )?));
        }
        // Connect in waves of 200: a real centre sees facilities arrive over minutes, not at once.
        for wave in clients.chunks(200) {
            let pings = wave.iter().map(|c| {
                let c = c.clone();
                tokio::spawn(async move { c.call(Request::Ping, Duration::from_secs(30)).await })
            });
            for p in pings {
                let _ = p.await;
            }
        }
        anyhow::Ok(clients)
    })?;
    let connect_s = started.elapsed().as_secs_f64();
    let connected = rt.block_on(async {
        let mut up = 0;
        for c in &clients {
            if matches!(
                c.call(Request::Ping, Duration::from_secs(10)).await,
                Ok(Response::Pong)
            ) {
                up += 1;
            }
        }
        up
    });
    let pingers: Vec<_> = if args.ping_every_ms > 0 {
        clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let c = c.clone();
                let every = Duration::from_millis(args.ping_every_ms);
                rt.spawn(async move {
                    // Spread over the interval, as independent edges are.
                    tokio::time::sleep(every * (i as u32 % 1000) / 1000).await;
                    let mut tick = tokio::time::interval(every);
                    loop {
                        tick.tick().await;
                        let _ = c.call(Request::Ping, every).await;
                    }
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    rt.block_on(tokio::time::sleep(Duration::from_secs_f64(args.settle_s)));
    let cpu0 = cpu_seconds(Some(pid));
    let t0 = Instant::now();
    rt.block_on(tokio::time::sleep(Duration::from_secs_f64(args.window_s)));
    let cpu = (cpu_seconds(Some(pid)) - cpu0) / t0.elapsed().as_secs_f64();
    let rss = rss_kib(pid);
    for p in pingers {
        p.abort();
    }
    drop(clients);
    drop(proc);
    let per = rss / n as f64;
    Ok(Row {
        facilities: n,
        connected,
        connect_s,
        reconciler_cpu_per_s: cpu,
        reconciler_rss_mib: rss / 1024.0,
        rss_per_facility_kib: per,
        cores_for_230k: cpu * 230_000.0 / n as f64,
        memory_for_230k_gib: per * 230_000.0 / 1024.0 / 1024.0,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Many UDP sockets in this process: one per client.
    let _ = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .map(|max| {
            rustix::process::setrlimit(
                rustix::process::Resource::Nofile,
                rustix::process::Rlimit {
                    current: Some(max),
                    maximum: Some(max),
                },
            )
        });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!("load average before: {}", load.trim());
    let mut rows: Vec<Row> = Vec::new();
    for &n in &args.facilities {
        let row = measure(n, &args, &rt)?;
        if args.json {
            println!("{}", serde_json::to_string(&row)?);
        } else {
            println!(
                "{:>6} idle facilities ({} connected in {:.1} s): reconciler {:.3} CPU-s/s, RSS {:.0} MiB ({:.1} KiB each) → 230,000: {:.1} cores, {:.1} GiB",
                row.facilities,
                row.connected,
                row.connect_s,
                row.reconciler_cpu_per_s,
                row.reconciler_rss_mib,
                row.rss_per_facility_kib,
                row.cores_for_230k,
                row.memory_for_230k_gib
            );
        }
        rows.push(row);
    }
    // The marginal cost per facility (the slope between the smallest and the largest N), which
    // leaves out the process's fixed cost.
    if let (Some(a), Some(b)) = (rows.first(), rows.last())
        && b.facilities > a.facilities
    {
        let dn = (b.facilities - a.facilities) as f64;
        let cpu = (b.reconciler_cpu_per_s - a.reconciler_cpu_per_s) / dn;
        let kib = (b.reconciler_rss_mib - a.reconciler_rss_mib) * 1024.0 / dn;
        println!(
            "marginal per idle facility ({}→{}): {:.1} µs CPU per second, {:.1} KiB → 230,000 facilities: {:.2} cores, {:.1} GiB",
            a.facilities,
            b.facilities,
            cpu * 1e6,
            kib,
            cpu * 230_000.0,
            kib * 230_000.0 / 1024.0 / 1024.0
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!("load average after: {}", load.trim());
    Ok(())
}
