//! `onshi-edge`: the facility's edge node. Commands: `run`, `status`, `demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use onshi_edge::config::{EdgeConfig, EdgeSettings};

#[derive(Debug, Parser)]
#[command(name = "onshi-edge", version, about = "onshi edge node: eligibility checks that never turn a patient away")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon. Every flag can also be set in the TOML file given with --config; a flag on
    /// the command line wins.
    Run {
        /// TOML file with the same settings as the flags (facility, data, pki, reconciler, http,
        /// mailbox, deadline_ms).
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: EdgeSettings,
    },
    /// Show what the running daemon says about itself.
    Status {
        /// The daemon's HTTP address.
        #[arg(long, default_value = "127.0.0.1:7600")]
        http: String,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// One command that needs nothing else: a CA, a synthetic registry, a reconciler and an edge in
    /// one process on loopback; prints the web address and example requests.
    Demo {
        /// HTTP address of the demo edge (a free port is used if this one is taken).
        #[arg(long, default_value = "127.0.0.1:7600")]
        http: String,
        /// People in the synthetic registry.
        #[arg(long, default_value_t = 5000)]
        people: usize,
        /// Seed of the synthetic registry.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour only on a terminal: never escape codes in files or the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config, settings } => {
            let file = match &config {
                Some(path) => EdgeSettings::from_file(path)?,
                None => EdgeSettings::default(),
            };
            let config = EdgeConfig::try_from(settings.or(file))?;
            let edge = onshi_edge::edge::start(config, onshi_edge::edge::shutdown_signal()).await?;
            println!("onshi-edge: HTTP API on http://{}", edge.http_addr);
            edge.task.await.context("edge task")??;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { http, json } => status(&http, json).await,
        Command::Demo { http, people, seed } => {
            onshi_edge::demo::run(&http, people, seed, onshi_edge::edge::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A tiny HTTP/1.1 GET, so `status` needs no HTTP client dependency.
async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("no onshi-edge answers on {addr}"))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok(body)
}

async fn status(http: &str, raw: bool) -> anyhow::Result<ExitCode> {
    let body = http_get(http, "/v1/status").await?;
    let v: serde_json::Value = serde_json::from_str(&body).with_context(|| format!("the daemon answered something that is not JSON: {body}"))?;
    if raw {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("mode:       {}", v["mode"].as_str().unwrap_or("?"));
        println!("facility:   {}", v["facility"].as_str().unwrap_or("?"));
        println!("link:       {} to {} (reconnects {}){}", v["link"]["state"].as_str().unwrap_or("?"), v["link"]["reconciler"].as_str().unwrap_or("?"),
            v["link"]["reconnects"], v["link"]["last_error"].as_str().map(|e| format!(", last error: {e}")).unwrap_or_default());
        println!("journal:    {} checks", v["journal"]["checks"]);
        println!("queue:      {} pending", v["queue"]["pending"]);
    }
    Ok(ExitCode::SUCCESS)
}
