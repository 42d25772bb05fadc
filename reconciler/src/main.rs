//! `onshi-reconciler`: the central side. Commands: `pki init`, `import`, `serve`, `check-config`,
//! `migrate`, `gen-registry`, `completions`.
//!
//! The store is `--data DIR` (embedded) or `--store postgres://USER@HOST[:PORT]/DATABASE`. The
//! database password never comes from the command line (other users see it in `ps`): it is read
//! from `--store-password-file PATH` / `store_password_file`, else from the systemd credential
//! `onshi-db-password` (`$CREDENTIALS_DIRECTORY`). A URL with a password is refused as a flag, and
//! accepted in the `--config` file only when that file is not readable by others (mode 0600),
//! with a warning.

use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use onshi_reconciler::store::pg;
use onshi_reconciler::store::{CentralStore, ImportCounts, StoreTarget};

#[derive(Debug, Parser)]
#[command(
    name = "onshi-reconciler",
    version,
    about = "onshi's central reconciler: registry, online checks, settlement"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The private CA and certificates of the link.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Serve online checks to the edges over QUIC with mutual TLS (and /metrics if --metrics).
    Serve {
        /// TOML file with the same settings as the flags (data, pki, listen, metrics); a flag wins.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: ServeSettings,
    },
    /// Import registry JSONL (one qualification period per line). Bad lines are reported with their
    /// line number and reason; good lines are applied; exit status 1 if any line was bad.
    Import {
        /// The reconciler's data directory (the embedded store).
        #[arg(long)]
        data: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        /// The JSONL file (`-` for standard input).
        file: PathBuf,
    },
    /// Create or upgrade the PostgreSQL schema (idempotent: applies only the migrations the
    /// database lacks, and prints them). `serve` and `import` refuse a database without it.
    Migrate {
        /// TOML file of `serve` (its store and store_password_file are used); a flag wins.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Check the `serve` configuration (settings, PKI files) without starting anything.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: ServeSettings,
    },
    /// Shell completions (bash, zsh, fish, …) on standard output.
    Completions { shell: clap_complete::Shell },
    /// The manual page (roff) on standard output (packaging/man/onshi-reconciler.1).
    #[command(hide = true)]
    Manpage,
    /// Write a deterministic synthetic registry as JSONL to standard output.
    GenRegistry {
        /// Number of people.
        #[arg(long, default_value_t = 1000)]
        people: usize,
        /// Seed: the same seed gives the same registry.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// "Today" for ages and current periods (YYYY-MM-DD or an era date; default: today).
        #[arg(long, value_parser = parse_date_arg)]
        today: Option<chrono::NaiveDate>,
    },
}

/// The PostgreSQL store, for the commands other than `serve`.
#[derive(Debug, Default, Clone, clap::Args)]
struct StoreArgs {
    /// The PostgreSQL store: postgres://USER@HOST[:PORT]/DATABASE (no password in it).
    #[arg(long)]
    store: Option<String>,
    /// File holding the database password (default: the systemd credential onshi-db-password).
    #[arg(long)]
    store_password_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Create a private CA (or reuse the one in DIR), the reconciler's certificate and one client
    /// certificate per facility (the 10-digit code is in the certificate). Existing keys are kept.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// A facility code; repeat for several.
        #[arg(long = "facility", required = true)]
        facilities: Vec<String>,
    },
}

/// `serve` settings, as flags or in the TOML file.
#[derive(Debug, Default, Clone, serde::Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
struct ServeSettings {
    /// The reconciler's data directory (the embedded store).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The PostgreSQL store instead: postgres://USER@HOST[:PORT]/DATABASE (no password in it).
    #[arg(long)]
    store: Option<String>,
    /// File holding the database password (default: the systemd credential onshi-db-password).
    #[arg(long)]
    store_password_file: Option<PathBuf>,
    /// PKI directory as `pki init` lays it out; its facility-*.pem files are the known facilities.
    #[arg(long)]
    pki: Option<PathBuf>,
    /// UDP address to listen on, e.g. 0.0.0.0:7700.
    #[arg(long)]
    listen: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:7701 (default: off).
    #[arg(long)]
    metrics: Option<String>,
    /// Single online checks a facility may make at once before it is throttled (default 1000).
    #[arg(long)]
    check_burst: Option<f64>,
    /// Single online checks a facility may make per minute after its burst (default 600; 0: no
    /// limit, for benchmarks).
    #[arg(long)]
    checks_per_minute: Option<f64>,
    /// People a facility may check at once in batch inquiries (default 20000; at least 500).
    #[arg(long)]
    batch_people_burst: Option<f64>,
    /// People a facility may check per minute in batch inquiries after the burst (default 6000;
    /// 0: no limit).
    #[arg(long)]
    batch_people_per_minute: Option<f64>,
    /// Outage declarations a facility may make at once (default 10).
    #[arg(long)]
    outage_burst: Option<f64>,
    /// Outage declarations a facility may make per minute after the burst (default 1; 0: no limit).
    #[arg(long)]
    outages_per_minute: Option<f64>,
    /// Connections one facility may hold at once; one more closes its oldest (default 2).
    #[arg(long)]
    connections_per_facility: Option<usize>,
    /// Milliseconds a request may take to arrive whole; past it the connection is closed
    /// (default 30000).
    #[arg(long)]
    request_timeout_ms: Option<u64>,
}

/// `serve` settings, merged and validated.
#[derive(Debug)]
struct Serve {
    store: StoreTarget,
    pki: PathBuf,
    listen: std::net::SocketAddr,
    metrics: Option<std::net::SocketAddr>,
    rates: onshi_reconciler::service::RateLimits,
    link: onshi_sync::link::LinkLimits,
}

fn resolve(setting: &str, addr: &str) -> anyhow::Result<std::net::SocketAddr> {
    std::net::ToSocketAddrs::to_socket_addrs(addr)
        .with_context(|| format!("{setting}: '{addr}' is not a host:port address"))?
        .next()
        .with_context(|| format!("{setting}: '{addr}' resolves to no address"))
}

/// `serve` settings from the flags and the TOML file (a flag wins), validated.
fn serve_settings(
    config: Option<&std::path::Path>,
    settings: ServeSettings,
) -> anyhow::Result<Serve> {
    let file = match config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("--config: cannot read {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("--config: {}", p.display()))?
        }
        None => ServeSettings::default(),
    };
    let url = match (settings.store, file.store) {
        (Some(u), _) => Some((u, UrlFrom::Flag)),
        (None, Some(u)) => Some((u, UrlFrom::File(config.unwrap_or(std::path::Path::new(""))))),
        (None, None) => None,
    };
    let store = store_target(
        settings.data.or(file.data),
        url,
        settings.store_password_file.or(file.store_password_file),
    )?;
    let pki = settings
        .pki
        .or(file.pki)
        .context("--pki: is required (as a flag or in the --config file)")?;
    let listen = settings
        .listen
        .or(file.listen)
        .context("--listen: is required (as a flag or in the --config file)")?;
    let listen = resolve("--listen", &listen)?;
    let metrics = match settings.metrics.or(file.metrics) {
        Some(m) if !m.trim().is_empty() => Some(resolve("--metrics", &m)?),
        _ => None,
    };
    let mut rates = onshi_reconciler::service::RateLimits::default();
    let pairs = [
        (
            settings.check_burst.or(file.check_burst),
            &mut rates.checks.burst,
        ),
        (
            settings.checks_per_minute.or(file.checks_per_minute),
            &mut rates.checks.per_minute,
        ),
        (
            settings.batch_people_burst.or(file.batch_people_burst),
            &mut rates.batch_people.burst,
        ),
        (
            settings
                .batch_people_per_minute
                .or(file.batch_people_per_minute),
            &mut rates.batch_people.per_minute,
        ),
        (
            settings.outage_burst.or(file.outage_burst),
            &mut rates.outages.burst,
        ),
        (
            settings.outages_per_minute.or(file.outages_per_minute),
            &mut rates.outages.per_minute,
        ),
    ];
    for (given, setting) in pairs {
        if let Some(v) = given {
            *setting = v;
        }
    }
    rates
        .validate()
        .map_err(|e| anyhow::anyhow!("--{}", e.replace('_', "-")))?;
    let mut link = onshi_sync::link::LinkLimits::default();
    if let Some(n) = settings
        .connections_per_facility
        .or(file.connections_per_facility)
    {
        anyhow::ensure!(n >= 1, "--connections-per-facility: must be at least 1");
        link.connections_per_facility = n;
    }
    if let Some(ms) = settings.request_timeout_ms.or(file.request_timeout_ms) {
        anyhow::ensure!(ms >= 100, "--request-timeout-ms: must be at least 100");
        link.request_read_timeout = std::time::Duration::from_millis(ms);
    }
    Ok(Serve {
        store,
        pki,
        listen,
        metrics,
        rates,
        link,
    })
}

/// Where a store URL was given: a password in it is refused on the command line.
#[derive(Debug, Clone, Copy)]
enum UrlFrom<'a> {
    Flag,
    File(&'a std::path::Path),
}

/// The store from `--data` or a `--store` URL, with the password from its file or the systemd
/// credential.
fn store_target(
    data: Option<PathBuf>,
    url: Option<(String, UrlFrom<'_>)>,
    password_file: Option<PathBuf>,
) -> anyhow::Result<StoreTarget> {
    let (url, from) = match (data, url) {
        (Some(_), Some(_)) => anyhow::bail!(
            "--data and --store: give one (--data DIR is the embedded store, --store postgres://… PostgreSQL)"
        ),
        (None, None) => {
            anyhow::bail!("--data or --store: one is required (as a flag or in the --config file)")
        }
        (Some(dir), None) => return Ok(StoreTarget::Embedded(dir)),
        (None, Some(u)) => u,
    };
    pg::config_from_url(&url, None).map_err(|e| anyhow::anyhow!("--store: {e}"))?;
    if pg::url_has_password(&url) {
        match from {
            UrlFrom::Flag => anyhow::bail!(
                "--store: the URL carries a password, which every user of this machine can read on \
                 the command line: give the URL without it, and the password in a file \
                 (--store-password-file PATH, mode 0600) or the systemd credential onshi-db-password"
            ),
            UrlFrom::File(path) => {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)
                    .with_context(|| format!("--config: {}", path.display()))?
                    .permissions()
                    .mode();
                anyhow::ensure!(
                    mode & 0o077 == 0,
                    "store: {} holds a database password but other users can read it (mode {:o}): \
                     chmod 600 it, or move the password to store_password_file or the systemd \
                     credential onshi-db-password",
                    path.display(),
                    mode & 0o777
                );
                eprintln!(
                    "warning: store: the database password is in {}; store_password_file or the \
                     systemd credential onshi-db-password keep it out of the configuration",
                    path.display()
                );
            }
        }
    }
    let password = match password_file {
        Some(p) => Some(read_password(&p, "--store-password-file")?),
        None => match std::env::var_os("CREDENTIALS_DIRECTORY") {
            Some(dir) => {
                let p = PathBuf::from(dir).join("onshi-db-password");
                if p.exists() {
                    Some(read_password(
                        &p,
                        "the systemd credential onshi-db-password",
                    )?)
                } else {
                    None
                }
            }
            None => None,
        },
    };
    Ok(StoreTarget::Postgres { url, password })
}

fn read_password(path: &std::path::Path, setting: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{setting}: cannot read {}", path.display()))?;
    let password = text.trim_end_matches(['\n', '\r']).to_string();
    anyhow::ensure!(
        !password.is_empty(),
        "{setting}: {} is empty",
        path.display()
    );
    Ok(password)
}

/// `store` and `store_password_file` of a `serve` TOML file (for `migrate --config`).
fn store_of_config(
    config: Option<&std::path::Path>,
    args: StoreArgs,
) -> anyhow::Result<StoreTarget> {
    let file: ServeSettings = match config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("--config: cannot read {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("--config: {}", p.display()))?
        }
        None => ServeSettings::default(),
    };
    let url = match (args.store, file.store) {
        (Some(u), _) => (u, UrlFrom::Flag),
        (None, Some(u)) => (u, UrlFrom::File(config.unwrap_or(std::path::Path::new("")))),
        (None, None) => anyhow::bail!("--store: is required (as a flag or in the --config file)"),
    };
    store_target(
        None,
        Some(url),
        args.store_password_file.or(file.store_password_file),
    )
}

/// The PostgreSQL connection settings of a target.
fn pg_config(target: &StoreTarget) -> anyhow::Result<tokio_postgres::Config> {
    match target {
        StoreTarget::Postgres { url, password } => pg::config_from_url(url, password.as_deref())
            .map_err(|e| anyhow::anyhow!("--store: {e}")),
        StoreTarget::Embedded(_) => {
            anyhow::bail!(
                "--store: a postgres:// URL is required (the embedded store needs no migration)"
            )
        }
    }
}

/// Opens the store, saying which one could not be opened and why.
fn open_store(target: &StoreTarget) -> anyhow::Result<std::sync::Arc<dyn CentralStore>> {
    onshi_reconciler::store::open(target).with_context(|| match target {
        StoreTarget::Embedded(dir) => format!("opening the registry in {}", dir.display()),
        StoreTarget::Postgres { .. } => format!("opening the store {target}"),
    })
}

fn parse_date_arg(s: &str) -> Result<chrono::NaiveDate, String> {
    onshi_model::parse_date(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    onshi_sync::lifecycle::init_logging();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Import { data, store, file } => {
            let url = store.store.map(|u| (u, UrlFrom::Flag));
            let target = store_target(data, url, store.store_password_file)?;
            import(target, file)
        }
        Command::Migrate { config, store } => {
            let target = store_of_config(config.as_deref(), store)?;
            let migrated =
                pg::migrate(&pg_config(&target)?).with_context(|| format!("migrating {target}"))?;
            for m in &migrated.applied {
                println!("applied {:04}_{}", m.version, m.name);
            }
            println!(
                "schema version {} ({})",
                migrated.version,
                if migrated.applied.is_empty() {
                    "already current"
                } else {
                    "migrated"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Pki {
            command: PkiCommand::Init { dir, facilities },
        } => {
            let codes = facilities
                .iter()
                .map(|f| {
                    onshi_model::FacilityCode::parse(f)
                        .map_err(|e| anyhow::anyhow!("--facility {f}: {e}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let summary = onshi_sync::pki::init(&dir, &codes)?;
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { config, settings } => {
            let serve_config = serve_settings(config.as_deref(), settings)?;
            // Opened before the runtime: the store's calls block.
            let store = open_store(&serve_config.store)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(serve(serve_config, store))
        }
        Command::CheckConfig { config, settings } => {
            let s = serve_settings(config.as_deref(), settings)?;
            onshi_sync::pki::load_server(&s.pki).context("pki")?;
            let facilities = onshi_sync::pki::facilities_in(&s.pki);
            let store = match &s.store {
                StoreTarget::Embedded(dir) => format!("data {}", dir.display()),
                target @ StoreTarget::Postgres { .. } => {
                    let db = pg::PgStore::connect(&pg_config(target)?)
                        .with_context(|| format!("store {target}"))?;
                    format!(
                        "store postgresql {} (schema version {})",
                        db.database(),
                        db.schema_version()
                    )
                }
            };
            let data_dir = match &s.store {
                StoreTarget::Embedded(dir) => Some(dir.as_path()),
                StoreTarget::Postgres { .. } => None,
            };
            for w in [
                onshi_sync::modes::exposure_warning(
                    "private key",
                    &s.pki.join(onshi_sync::pki::RECONCILER_KEY_FILE),
                ),
                onshi_sync::modes::exposure_warning(
                    "CA private key",
                    &s.pki.join(onshi_sync::pki::CA_KEY_FILE),
                ),
                data_dir.and_then(|d| onshi_sync::modes::exposure_warning("data directory", d)),
            ]
            .into_iter()
            .flatten()
            {
                eprintln!("{w}");
            }
            println!(
                "ok: {}, pki {} ({} facilities known), listen {}, metrics {}",
                store,
                s.pki.display(),
                facilities.len(),
                s.listen,
                s.metrics
                    .map_or("off".to_string(), |m| format!("http://{m}/metrics"))
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "onshi-reconciler", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Manpage => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let page = onshi_sync::manpage::render(&cmd, MAN_EXTRA)?;
            std::io::Write::write_all(&mut std::io::stdout(), &page)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::GenRegistry {
            people,
            seed,
            today,
        } => {
            let today = today.unwrap_or_else(|| chrono::Local::now().date_naive());
            let params = onshi_sync::synth::SynthParams {
                people,
                seed,
                today,
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let summary = onshi_sync::synth::write_jsonl(&params, &mut out)
                .context("writing the registry")?;
            std::io::Write::flush(&mut out)?;
            eprintln!(
                "generated {} people, {} qualification periods",
                summary.people, summary.periods
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(s: Serve, store: Arc<dyn CentralStore>) -> anyhow::Result<ExitCode> {
    let options = onshi_reconciler::service::ServeOptions {
        metrics: s.metrics,
        rates: s.rates,
        link: s.link,
    };
    let running = onshi_reconciler::service::start_with_options(
        store.clone(),
        &s.pki,
        s.listen,
        options,
        onshi_sync::lifecycle::shutdown_signal(),
    )?;
    println!("onshi-reconciler: listening on quic://{}", running.addr);
    if let Some(m) = running.metrics_addr {
        println!("onshi-reconciler: metrics on http://{m}/metrics");
    }
    let status = running.metrics.status_line(&running.connections);
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
    let heartbeat = tokio::spawn(heartbeat(
        running.metrics.clone(),
        running.connections.clone(),
    ));
    running.task.await.context("reconciler task")?;
    heartbeat.abort();
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping"),
    ]);
    tracing::info!("reconciler stopped");
    Ok(ExitCode::SUCCESS)
}

/// Feeds systemd's watchdog (at half the interval it asked for, at least every second) and keeps
/// the STATUS line current: `serving · N facilities connected · N sync rounds · N settled`.
async fn heartbeat(
    metrics: Arc<onshi_reconciler::metrics::ReconcilerMetrics>,
    connections: onshi_sync::link::Connections,
) {
    let every = sd_notify::watchdog_enabled()
        .map_or(std::time::Duration::from_secs(1), |d| d / 2)
        .min(std::time::Duration::from_secs(1));
    let mut last = String::new();
    loop {
        tokio::time::sleep(every).await;
        let line = metrics.status_line(&connections);
        if line == last {
            notify(&[sd_notify::NotifyState::Watchdog]);
        } else {
            notify(&[
                sd_notify::NotifyState::Watchdog,
                sd_notify::NotifyState::Status(&line),
            ]);
            last = line;
        }
    }
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(states)
    {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// The manual page's sections after COMMANDS.
const MAN_EXTRA: &str = r#".SH FILES
.TP
/etc/onshi/reconciler.toml
The configuration read by the systemd unit (every key is a flag of serve).
.TP
/etc/onshi/pki/
ca.pem, ca.key, reconciler.pem, reconciler.key, and one facility\-CODE.pem per facility allowed to connect.
.TP
/var/lib/onshi\-reconciler/
The registry and every facility's journal.
.SH ENVIRONMENT
.TP
RUST_LOG
Log filter (default info).
.TP
CREDENTIALS_DIRECTORY
Set by systemd (LoadCredential=): the database password of \-\-store is read from its onshi\-db\-password file unless \-\-store\-password\-file names one. A password in a \-\-store URL on the command line is refused.
.TP
ONSHI_LOG_FORMAT
text, json or journald. Under systemd the default is journald (native, with structured fields); elsewhere human\-readable text on stderr.
.SH SEE ALSO
onshi\-edge(1), /usr/share/doc/onshi/README.md
"#;

/// Lines read and applied per store call: each chunk is one transaction (one fsync).
const IMPORT_CHUNK: usize = 5_000;

fn import(target: StoreTarget, file: PathBuf) -> anyhow::Result<ExitCode> {
    let store = open_store(&target)?;
    let reader: Box<dyn std::io::BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f =
            std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
        Box::new(BufReader::new(f))
    };
    let mut counts = ImportCounts::default();
    let mut bad = 0usize;
    let mut chunk = Vec::with_capacity(IMPORT_CHUNK);
    for (i, line) in std::io::BufRead::lines(reader).enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{}:{}: cannot read the line: {e}", file.display(), i + 1);
                bad += 1;
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match onshi_model::Qualification::from_registry_json(&line) {
            Ok(q) => chunk.push(q),
            Err(e) => {
                eprintln!("{}:{}: {e}", file.display(), i + 1);
                bad += 1;
            }
        }
        if chunk.len() >= IMPORT_CHUNK {
            counts.add(store.import(&chunk)?);
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        counts.add(store.import(&chunk)?);
    }
    println!(
        "imported {}: {} added, {} updated, {} unchanged, {} bad line(s); registry holds {} periods",
        file.display(),
        counts.added,
        counts.updated,
        counts.unchanged,
        bad,
        store.period_count()?
    );
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
