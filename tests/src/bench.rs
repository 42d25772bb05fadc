//! Process handling shared by the benchmark commands (`onshi-failover`, `onshi-drain`,
//! `onshi-mailbox-bench`): find the daemons' binaries, start a daemon, wait for its readiness line, kill it when dropped. (The tests use `Proc` in lib.rs, which
//! also keeps stderr for assertions; `onshi-load` keeps its own guard with CPU accounting.)

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The folder of the running benchmark command, checked to hold `onshi-edge` and
/// `onshi-reconciler` (built by the same `cargo build`).
pub fn daemon_bins() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bins = exe.parent().context("exe dir")?.to_path_buf();
    for b in ["onshi-edge", "onshi-reconciler"] {
        if !bins.join(b).is_file() {
            bail!(
                "{b} not found next to {}: run `cargo build --release --workspace --bins`",
                exe.display()
            );
        }
    }
    Ok(bins)
}

/// A child process killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct BenchProc(pub Child);

impl Drop for BenchProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `serve` flags that raise the per-facility rate limits far above any load a benchmark makes:
/// one edge at 1,000 checks/s (or a 10,000-file mailbox burst) is exactly what the production
/// limits throttle, and the benchmarks measure the edge, not the throttle (whose path still runs).
pub const UNTHROTTLED: [&str; 8] = [
    "--check-burst",
    "1000000000",
    "--checks-per-minute",
    "1000000000",
    "--batch-people-burst",
    "1000000000",
    "--batch-people-per-minute",
    "1000000000",
];

/// Starts `onshi-reconciler serve` (from `bins`) on `data` and `pki`, listening on a free loopback
/// port, stderr to `log`; returns the process and its `host:port`.
pub fn spawn_reconciler(
    bins: &Path,
    data: &Path,
    pki: &Path,
    envs: &[(&str, &str)],
    log: &Path,
) -> anyhow::Result<(BenchProc, String)> {
    spawn_ready(
        &bins.join("onshi-reconciler"),
        &[
            "serve",
            "--data",
            data.to_str().context("data path")?,
            "--pki",
            pki.to_str().context("pki path")?,
            "--listen",
            "127.0.0.1:0",
        ]
        .into_iter()
        .chain(UNTHROTTLED)
        .collect::<Vec<_>>(),
        envs,
        log,
        "onshi-reconciler: listening on quic://",
    )
}

/// Starts `bin args…` with `envs`, stderr to `log`, and waits up to 60 s for a stdout line starting
/// with `prefix`; returns the process and the rest of that line.
pub fn spawn_ready(
    bin: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    log: &Path,
    prefix: &str,
) -> anyhow::Result<(BenchProc, String)> {
    let err = std::fs::File::create(log)?;
    let mut child = Command::new(bin)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let out = child.stdout.take().context("stdout")?;
    let proc = BenchProc(child);
    let (tx, rx) = std::sync::mpsc::channel();
    // Drains stdout for the child's whole life, so it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100))
            && let Some(rest) = line.strip_prefix(prefix)
        {
            return Ok((proc, rest.trim().to_string()));
        }
    }
    bail!(
        "{} printed no '{prefix}' line; see {}",
        bin.display(),
        log.display()
    )
}

/// CPU time (user + system) a process has used so far, from /proc (clock ticks of 1/100 s).
pub fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return f64::NAN;
    };
    let Some((_, rest)) = text.rsplit_once(')') else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command name: state is field 3, utime field 14, stime field 15.
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (tick(11) + tick(12)) / 100.0
}

/// Makes an admin token in the edge's data directory `data` with `onshi-edge token add` (as an
/// operator would, before the edge starts); the benchmarks' requests send it like any client.
pub fn add_token(edge_bin: &Path, data: &Path) -> anyhow::Result<String> {
    let out = Command::new(edge_bin)
        .args(["token", "add", "bench", "--role", "admin", "--data"])
        .arg(data)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} token add", edge_bin.display()))?;
    if !out.status.success() {
        bail!(
            "onshi-edge token add: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Default headers that send `token` as a bearer token with every request.
pub fn bearer(token: &str) -> anyhow::Result<reqwest::header::HeaderMap> {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    Ok(h)
}

/// A centre on a private PostgreSQL server (`crate::pg::PgServer`) for the benchmarks: migrated,
/// with the password in a file (the reconciler refuses one on its command line).
#[derive(Debug)]
pub struct PgCentre {
    pub server: crate::pg::PgServer,
    /// `postgres://USER@HOST:PORT/DB`, without the password.
    pub url: String,
    pub password_file: PathBuf,
}

impl PgCentre {
    /// Starts the server under `work`, writes the password file into `dir` and runs
    /// `onshi-reconciler migrate` (from `bins`).
    pub fn start(work: &crate::TestDir, dir: &Path, bins: &Path) -> anyhow::Result<PgCentre> {
        let server = crate::pg::PgServer::start(work);
        let crate::Store::Postgres { url, password_file } = crate::Store::postgres(&server, dir)
        else {
            bail!("not a PostgreSQL store");
        };
        let centre = PgCentre {
            server,
            url,
            password_file,
        };
        let out = Command::new(bins.join("onshi-reconciler"))
            .arg("migrate")
            .args(centre.store_args())
            .output()?;
        if !out.status.success() {
            bail!("migrate: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(centre)
    }

    /// `--store URL --store-password-file FILE`.
    pub fn store_args(&self) -> Vec<String> {
        vec![
            "--store".into(),
            self.url.clone(),
            "--store-password-file".into(),
            self.password_file.display().to_string(),
        ]
    }

    /// The same store for the library (`onshi_reconciler::store::open`).
    pub fn target(&self) -> anyhow::Result<onshi_reconciler::store::StoreTarget> {
        Ok(onshi_reconciler::store::StoreTarget::Postgres {
            url: self.url.clone(),
            // As the CLI reads it: the file's first line.
            password: Some(
                std::fs::read_to_string(&self.password_file)?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            ca: None,
        })
    }
}
