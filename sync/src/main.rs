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
#[command(name = "onshi-reconciler", version, about = "onshi's central reconciler: registry, online checks, settlement")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Import registry JSONL (one qualification period per line). Bad lines are reported with their
    /// line number and reason; good lines are applied; exit status 1 if any line was bad.
    Import {
        /// The reconciler's data directory.
        #[arg(long)]
        data: PathBuf,
        /// The JSONL file (`-` for standard input).
        file: PathBuf,
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

fn parse_date_arg(s: &str) -> Result<chrono::NaiveDate, String> {
    onshi_model::parse_date(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
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
        Command::GenRegistry { .. } => anyhow::bail!("GENREG_PENDING"),
    }
}

fn import(data: PathBuf, file: PathBuf) -> anyhow::Result<ExitCode> {
    let store = Arc::new(SledStore::open(&data.join("registry")).with_context(|| format!("opening the registry in {}", data.display()))?);
    let registry = Registry::open(store)?;
    let report = if file.as_os_str() == "-" {
        registry.import(std::io::stdin().lock())?
    } else {
        let f = std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
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
    Ok(if report.bad.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
