//! `onshi-reconciler`: the central side. Commands: `pki init`, `import`, `serve`, `gen-registry`.

use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use onshi_sync::registry::Registry;
use onshi_sync::store::SledStore;

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
    /// Serve online checks to the edges over QUIC with mutual TLS.
    Serve {
        /// TOML file with the same settings as the flags (data, pki, listen); a flag wins.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: ServeSettings,
    },
    /// Import registry JSONL (one qualification period per line). Bad lines are reported with their
    /// line number and reason; good lines are applied; exit status 1 if any line was bad.
    Import {
        /// The reconciler's data directory.
        #[arg(long)]
        data: PathBuf,
        /// The JSONL file (`-` for standard input).
        file: PathBuf,
    },
    /// Check the `serve` configuration (settings, PKI files) without starting anything.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: ServeSettings,
    },
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
    /// The reconciler's data directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// PKI directory as `pki init` lays it out; its facility-*.pem files are the known facilities.
    #[arg(long)]
    pki: Option<PathBuf>,
    /// UDP address to listen on, e.g. 0.0.0.0:7700.
    #[arg(long)]
    listen: Option<String>,
}

/// `serve` settings from the flags and the TOML file (a flag wins), validated.
fn serve_settings(
    config: Option<&std::path::Path>,
    settings: ServeSettings,
) -> anyhow::Result<(PathBuf, PathBuf, std::net::SocketAddr)> {
    let file = match config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("--config: cannot read {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("--config: {}", p.display()))?
        }
        None => ServeSettings::default(),
    };
    let data = settings
        .data
        .or(file.data)
        .context("--data: is required (as a flag or in the --config file)")?;
    let pki = settings
        .pki
        .or(file.pki)
        .context("--pki: is required (as a flag or in the --config file)")?;
    let listen = settings
        .listen
        .or(file.listen)
        .context("--listen: is required (as a flag or in the --config file)")?;
    let listen: std::net::SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&listen)
        .with_context(|| format!("--listen: '{listen}' is not a host:port address"))?
        .next()
        .with_context(|| format!("--listen: '{listen}' resolves to no address"))?;
    Ok((data, pki, listen))
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
        Command::Import { data, file } => import(data, file),
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
            let (data, pki, listen) = serve_settings(config.as_deref(), settings)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(serve(data, pki, listen))
        }
        Command::CheckConfig { config, settings } => {
            let (data, pki, listen) = serve_settings(config.as_deref(), settings)?;
            onshi_sync::pki::load_server(&pki).context("pki")?;
            let facilities = onshi_sync::pki::facilities_in(&pki);
            println!(
                "ok: data {}, pki {} ({} facilities known), listen {listen}",
                data.display(),
                pki.display(),
                facilities.len()
            );
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

async fn serve(
    data: PathBuf,
    pki: PathBuf,
    listen: std::net::SocketAddr,
) -> anyhow::Result<ExitCode> {
    let store = Arc::new(
        SledStore::open(&data.join("registry"))
            .with_context(|| format!("opening the registry in {}", data.display()))?,
    );
    let registry = Registry::open(store.clone())?;
    let running = onshi_sync::reconciler::start(
        registry,
        store.clone(),
        &pki,
        listen,
        onshi_sync::lifecycle::shutdown_signal(),
    )?;
    println!("onshi-reconciler: listening on quic://{}", running.addr);
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving"),
    ]);
    running.task.await.context("reconciler task")?;
    notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("reconciler stopped");
    Ok(ExitCode::SUCCESS)
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(states)
    {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

fn import(data: PathBuf, file: PathBuf) -> anyhow::Result<ExitCode> {
    let store = Arc::new(
        SledStore::open(&data.join("registry"))
            .with_context(|| format!("opening the registry in {}", data.display()))?,
    );
    let registry = Registry::open(store)?;
    let report = if file.as_os_str() == "-" {
        registry.import(std::io::stdin().lock())?
    } else {
        let f =
            std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
        registry.import(BufReader::new(f))?
    };
    for (line, err) in &report.bad {
        eprintln!("{}:{line}: {err}", file.display());
    }
    println!(
        "imported {}: {} added, {} updated, {} unchanged, {} bad line(s); registry holds {} periods",
        file.display(),
        report.added,
        report.updated,
        report.unchanged,
        report.bad.len(),
        registry.period_count()
    );
    Ok(if report.bad.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
