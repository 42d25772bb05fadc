//! `onshi-reconciler`: the central side. Commands: `pki init`, `import`, `serve`, `outage …`,
//! `facility add|revoke|list`, `check-config`, `migrate`, `gen-registry`, `completions`.
//!
//! The store is `--data DIR` (embedded) or `--store postgres://USER@HOST[:PORT]/DATABASE`. The
//! database password never comes from the command line (other users see it in `ps`): it is read
//! from `--store-password-file PATH` / `store_password_file`, else from the systemd credential
//! `onshi-db-password` (`$CREDENTIALS_DIRECTORY`). A URL with a password is refused as a flag, and
//! accepted in the `--config` file only when that file is not readable by others (mode 0600),
//! with a warning. The operators' commands (`import`, `outage …`, `facility …`) work while `serve`
//! runs: on PostgreSQL directly, on the embedded store through the running serve's admin socket.
//!
//! The embedded store is encrypted at rest (issue 18) under the data key of `--data-key FILE` /
//! `data_key`, else the systemd credential `onshi-data-key`, else a key file beside the data
//! directory (with a warning at start and from `check-config`); a wrong or missing key is refused
//! by every command that opens the directory, with nothing changed. An operator's command while
//! serve runs needs no key (it goes through the socket).

use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use onshi_reconciler::admin::{AdminRequest, AdminResponse, AdminTarget};
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
        /// The data key (key-encryption key) of the embedded store: a file of 64 hex digits, made
        /// (0600) when the data directory is new. Default: the systemd credential onshi-data-key, else
        /// DATA.key beside the data directory (with a warning: it protects nothing against a stolen
        /// disk).
        #[arg(long, value_name = "FILE")]
        data_key: Option<PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
        /// The JSONL file (`-` for standard input).
        file: PathBuf,
    },
    /// Disaster mode: the centre grants central search (by name and birth date over the national
    /// registry) to a facility or a prefecture; a facility's own outage declaration is a request
    /// listed here. Works while serve runs.
    Outage {
        #[command(subcommand)]
        command: OutageCommand,
    },
    /// The facilities allowed to connect and their certificates: add (issue and record a
    /// certificate; again to re-issue, which replaces the old one), revoke, list. Works while
    /// serve runs: running instances follow within seconds.
    Facility {
        #[command(subcommand)]
        command: FacilityCommand,
    },
    /// Facilities' access logs as the centre holds their hash chains (sent by each edge with its
    /// syncs; no entry's content). Works while serve runs.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The embedded store's keys: status, and rotation of the key-encryption key or of the data
    /// key. Works while serve runs (through its admin socket). PostgreSQL keeps no key of onshi's.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
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
    /// PEM file of the CA(s) the database server's certificate must chain to: the connection is
    /// then TLS, the certificate checked with the URL's host name (default: no TLS).
    #[arg(long, value_name = "FILE")]
    store_ca: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum OutageCommand {
    /// Grant central search from now on, for --days days.
    Grant {
        #[command(flatten)]
        scope: ScopeArgs,
        /// How long the grant lasts (1–90 days; default 7).
        #[arg(long, default_value_t = 7)]
        days: u32,
        #[command(flatten)]
        centre: CentreArgs,
    },
    /// End the active grants of a facility or a prefecture now.
    End {
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        centre: CentreArgs,
    },
    /// The grants (active and past) and the facilities' outage requests.
    List {
        #[command(flatten)]
        centre: CentreArgs,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check a facility's access-log chain: exit 0 when it is unbroken; else name the first entry
    /// where the facility's log departs from what the centre holds (rewritten or removed at the
    /// edge), or where the centre's own copy is damaged, and exit 1.
    Verify {
        /// The facility code (10 digits).
        #[arg(long)]
        facility: String,
        #[command(flatten)]
        centre: CentreArgs,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Which key protects the data, and the data key in use.
    Status {
        #[command(flatten)]
        at: KeyAt,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// A new key-encryption key: the data keys are re-wrapped under it (instant; no record is
    /// touched). It replaces the current key file, or is written to --new-key.
    Rotate {
        #[command(flatten)]
        at: KeyAt,
        /// A new DATA key instead: every stored value is re-sealed with it before the command
        /// returns; one interrupted (a SIGKILL, a power cut) is finished by the next open of the
        /// store (a serve's start, or any command while none runs, `key status` included).
        #[arg(long = "data")]
        data_key_too: bool,
        /// Write the new key-encryption key to this file instead of replacing the current one
        /// (needed when the key is the systemd credential: encrypt it with systemd-creds).
        #[arg(long, value_name = "FILE", conflicts_with = "data_key_too")]
        new_key: Option<PathBuf>,
    },
}

/// The embedded store for `key …` (`--data` there means the data key, as for onshi-edge).
#[derive(Debug, clap::Args)]
struct KeyAt {
    /// The reconciler's data directory (the embedded store).
    #[arg(long = "data-dir", value_name = "DIR")]
    data_dir: PathBuf,
    /// The data directory's key file (else the systemd credential onshi-data-key, or DATA.key
    /// beside the data directory).
    #[arg(long, value_name = "FILE")]
    data_key: Option<PathBuf>,
}

impl KeyAt {
    fn target(self) -> anyhow::Result<AdminTarget> {
        let target = store_target(Some(self.data_dir), self.data_key, None, None, None)?;
        AdminTarget::open(&target).with_context(|| format!("opening {target}"))
    }
}

#[derive(Debug, Subcommand)]
enum FacilityCommand {
    /// Issue a new key and certificate for the facility under the CA in --pki (as `pki init`
    /// does) and record it as the one certificate accepted for it. Run again to re-issue: the
    /// old pair is moved to DIR/replaced/ and refused from then on.
    Add {
        /// The facility code (10 digits).
        #[arg(value_name = "CODE")]
        code: String,
        /// The PKI directory `pki init` made (its CA signs the certificate).
        #[arg(long)]
        pki: PathBuf,
        #[command(flatten)]
        centre: CentreArgs,
    },
    /// Revoke the facility's certificate: running instances close its connections and refuse
    /// it (`facility add` issues it a new one).
    Revoke {
        /// The facility code (10 digits).
        #[arg(value_name = "CODE")]
        code: String,
        #[command(flatten)]
        centre: CentreArgs,
    },
    /// Every facility: state (active or revoked), when added and revoked, the certificate's
    /// fingerprint (SHA-256, first 16 hex digits).
    List {
        #[command(flatten)]
        centre: CentreArgs,
    },
}

/// Where an operator's command finds the centre's data: the embedded store's directory (while
/// serve runs, reached through its admin socket) or the PostgreSQL store.
#[derive(Debug, clap::Args)]
struct CentreArgs {
    /// The reconciler's data directory (the embedded store).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The data key (key-encryption key) of the embedded store: a file of 64 hex digits, made
    /// (0600) when the data directory is new. Default: the systemd credential onshi-data-key, else
    /// DATA.key beside the data directory (with a warning: it protects nothing against a stolen
    /// disk).
    #[arg(long, value_name = "FILE")]
    data_key: Option<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
}

impl CentreArgs {
    fn target(self) -> anyhow::Result<AdminTarget> {
        let url = self.store.store.map(|u| (u, UrlFrom::Flag));
        let target = store_target(
            self.data,
            self.data_key,
            url,
            self.store.store_password_file,
            self.store.store_ca,
        )?;
        AdminTarget::open(&target).with_context(|| format!("opening {target}"))
    }
}

/// Whom a grant covers: one facility or one prefecture.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct ScopeArgs {
    /// A facility code (10 digits).
    #[arg(long)]
    facility: Option<String>,
    /// A prefecture code, 01–47 (a disaster area: every facility whose code starts with it).
    #[arg(long)]
    prefecture: Option<String>,
}

impl ScopeArgs {
    fn scope(&self) -> anyhow::Result<onshi_reconciler::store::GrantScope> {
        use onshi_reconciler::store::GrantScope;
        match (&self.facility, &self.prefecture) {
            (Some(f), _) => Ok(GrantScope::Facility(
                onshi_model::FacilityCode::parse(f)
                    .map_err(|e| anyhow::anyhow!("--facility {f}: {e}"))?,
            )),
            (None, Some(p)) => {
                let ok = p.len() == 2 && p.parse::<u8>().is_ok_and(|n| (1..=47).contains(&n));
                anyhow::ensure!(
                    ok,
                    "--prefecture {p}: a prefecture code is two digits, 01 to 47"
                );
                Ok(GrantScope::Prefecture(p.clone()))
            }
            (None, None) => anyhow::bail!("--facility or --prefecture: one is required"),
        }
    }
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
    /// The data key (key-encryption key) of the embedded store: a file of 64 hex digits, made
    /// (0600) when the data directory is new. Default: the systemd credential onshi-data-key, else
    /// DATA.key beside the data directory (with a warning: it protects nothing against a stolen
    /// disk).
    #[arg(long, value_name = "FILE")]
    data_key: Option<PathBuf>,
    /// The PostgreSQL store instead: postgres://USER@HOST[:PORT]/DATABASE (no password in it).
    #[arg(long)]
    store: Option<String>,
    /// File holding the database password (default: the systemd credential onshi-db-password).
    #[arg(long)]
    store_password_file: Option<PathBuf>,
    /// PEM file of the CA(s) the database server's certificate must chain to: the connection is
    /// then TLS, the certificate checked with the URL's host name (default: no TLS).
    #[arg(long, value_name = "FILE")]
    store_ca: Option<PathBuf>,
    /// PKI directory as `pki init` lays it out; at start, its facility-*.pem files the store does
    /// not know yet are recorded as accepted (then `facility add|revoke` decide).
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
    /// Days after its service date an `insurer_unknown` or `ambiguous` settlement is still
    /// settled again when the registry changes for the people it could concern (default 90; at
    /// most 3650).
    #[arg(long)]
    revisit_days: Option<u32>,
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
    revisit: onshi_reconciler::revisit::RevisitSettings,
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
        settings.data_key.or(file.data_key),
        url,
        settings.store_password_file.or(file.store_password_file),
        settings.store_ca.or(file.store_ca),
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
    let mut revisit = onshi_reconciler::revisit::RevisitSettings::default();
    if let Some(days) = settings.revisit_days.or(file.revisit_days) {
        revisit.horizon_days = days;
    }
    revisit
        .validate()
        .map_err(|e| anyhow::anyhow!("--{}", e.replace('_', "-")))?;
    Ok(Serve {
        store,
        pki,
        listen,
        metrics,
        rates,
        link,
        revisit,
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
    data_key: Option<PathBuf>,
    url: Option<(String, UrlFrom<'_>)>,
    password_file: Option<PathBuf>,
    ca: Option<PathBuf>,
) -> anyhow::Result<StoreTarget> {
    if ca.is_some() && url.is_none() {
        anyhow::bail!(
            "--store-ca: only with --store (the CA of the PostgreSQL server's certificate)"
        );
    }
    if data_key.is_some() && url.is_some() {
        anyhow::bail!(
            "--data-key: only with --data (the embedded store's key); PostgreSQL's data at rest is \
             protected by the database server's disk encryption (packaging/README.md)"
        );
    }
    let (url, from) = match (data, url) {
        (Some(_), Some(_)) => anyhow::bail!(
            "--data and --store: give one (--data DIR is the embedded store, --store postgres://… PostgreSQL)"
        ),
        (None, None) => {
            anyhow::bail!("--data or --store: one is required (as a flag or in the --config file)")
        }
        (Some(dir), None) => return Ok(StoreTarget::Embedded { dir, data_key }),
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
    if let Some(ca) = &ca {
        pg::PgConnect::new(
            pg::config_from_url(&url, None).map_err(|e| anyhow::anyhow!("--store: {e}"))?,
            Some(ca),
        )?;
    }
    Ok(StoreTarget::Postgres { url, password, ca })
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
        None,
        Some(url),
        args.store_password_file.or(file.store_password_file),
        args.store_ca.or(file.store_ca),
    )
}

/// The PostgreSQL connection settings of a target.
fn pg_config(target: &StoreTarget) -> anyhow::Result<pg::PgConnect> {
    match target {
        StoreTarget::Postgres { url, password, ca } => {
            let config = pg::config_from_url(url, password.as_deref())
                .map_err(|e| anyhow::anyhow!("--store: {e}"))?;
            Ok(pg::PgConnect::new(config, ca.as_deref())?)
        }
        StoreTarget::Embedded { .. } => {
            anyhow::bail!(
                "--store: a postgres:// URL is required (the embedded store needs no migration)"
            )
        }
    }
}

/// Opens the store, saying which one could not be opened and why.
fn open_store(target: &StoreTarget) -> anyhow::Result<std::sync::Arc<dyn CentralStore>> {
    onshi_reconciler::store::open(target).with_context(|| match target {
        StoreTarget::Embedded { dir, .. } => {
            format!("opening the registry in {}", dir.display())
        }
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
        Command::Import {
            data,
            data_key,
            store,
            file,
        } => {
            let target = CentreArgs {
                data,
                data_key,
                store,
            }
            .target()?;
            import(target, file)
        }
        Command::Outage { command } => outage(command),
        Command::Facility { command } => facility(command),
        Command::Audit {
            command: AuditCommand::Verify { facility, centre },
        } => audit_verify(&facility, centre),
        Command::Key { command } => key_command(command),
        Command::Migrate { config, store } => {
            let target = store_of_config(config.as_deref(), store)?;
            let migrated =
                pg::migrate(pg_config(&target)?).with_context(|| format!("migrating {target}"))?;
            for m in &migrated.applied {
                println!("applied {:04}_{}", m.version, m.name);
            }
            if let Some(n) = migrated.search_indexed {
                println!("central search index filled from {n} periods");
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
                StoreTarget::Embedded { dir, data_key } => {
                    // Checked against the keyring without opening the store (a running serve
                    // may hold it): a wrong or missing key fails here, before the start.
                    let key = onshi_sync::vault::KeySource::choose(data_key.as_deref(), dir);
                    if let Some(w) = key.warning() {
                        eprintln!("warning: {w}");
                    }
                    let state = onshi_reconciler::store::embedded::check_key(dir, &key)
                        .context("data key")?;
                    format!("data {} ({state})", dir.display())
                }
                target @ StoreTarget::Postgres { .. } => {
                    let connect = pg_config(target)?;
                    let wire = if connect.tls() {
                        "TLS, the server's certificate verified"
                    } else {
                        if let Some(host) = connect.remote_host() {
                            eprintln!(
                                "warning: store: the connection to {host} is not encrypted: give \
                                 store_ca (the CA of the database server's certificate), or keep \
                                 the database on this host (packaging/README.md)"
                            );
                        }
                        "no TLS"
                    };
                    let db =
                        pg::PgStore::connect(connect).with_context(|| format!("store {target}"))?;
                    format!(
                        "store postgresql {} (schema version {}, {wire})",
                        db.database(),
                        db.schema_version()
                    )
                }
            };
            let data_dir = match &s.store {
                StoreTarget::Embedded { dir, .. } => Some(dir.as_path()),
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
        revisit: s.revisit,
    };
    let running = onshi_reconciler::service::start_with_options(
        store.clone(),
        &s.pki,
        s.listen,
        options,
        onshi_sync::lifecycle::shutdown_signal(),
    )?;
    // The embedded store's directory is this process's alone (sled): the operators' commands
    // reach it through the admin socket. PostgreSQL needs none (they connect themselves).
    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_task = match &s.store {
        StoreTarget::Embedded { dir: data, .. } => Some(
            onshi_reconciler::admin::serve_socket(data, store.clone(), async move {
                let _ = admin_stopped.await;
            })
            .with_context(|| format!("the admin socket in {}", data.display()))?,
        ),
        StoreTarget::Postgres { .. } => None,
    };
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
    let _ = admin_stop.send(());
    if let Some(t) = admin_task {
        let _ = t.await;
    }
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
ca.pem, ca.key, reconciler.pem, reconciler.key, and one facility\-CODE.pem (and .key) per facility, issued by pki init or facility add; replaced/ keeps the files of re\-issued certificates. Which certificate each facility may connect with is recorded in the store (facility list).
.TP
/var/lib/onshi\-reconciler/
The registry and every facility's journal, encrypted (registry.keyring holds the data keys, wrapped by the data key of \-\-data\-key or the credential onshi\-data\-key).
.SH ENVIRONMENT
.TP
RUST_LOG
Log filter (default info).
.TP
CREDENTIALS_DIRECTORY
Set by systemd (LoadCredential=): the database password of \-\-store is read from its onshi\-db\-password file unless \-\-store\-password\-file names one. A password in a \-\-store URL on the command line is refused. The embedded store's data key is read from its onshi\-data\-key file (LoadCredentialEncrypted=, made with systemd\-creds encrypt) unless \-\-data\-key names one.
.TP
ONSHI_LOG_FORMAT
text, json or journald. Under systemd the default is journald (native, with structured fields); elsewhere human\-readable text on stderr.
.SH SEE ALSO
onshi\-edge(1), /usr/share/doc/onshi/README.md
"#;

/// Lines read and applied per store call: each chunk is one transaction (one fsync).
const IMPORT_CHUNK: usize = 5_000;
/// On PostgreSQL a chunk is copied in bulk and applied set-based (`store::pg`'s import): larger
/// chunks walk its indexes in order once per chunk. Bounded (≈100 MB of periods in memory).
const PG_IMPORT_CHUNK: usize = 50_000;

fn outage(command: OutageCommand) -> anyhow::Result<ExitCode> {
    match command {
        OutageCommand::Grant {
            scope,
            days,
            centre,
        } => {
            anyhow::ensure!((1..=90).contains(&days), "--days {days}: from 1 to 90");
            let scope = scope.scope()?;
            match centre.target()?.run(AdminRequest::Grant { scope, days })? {
                AdminResponse::Granted { grant } => println!(
                    "granted: central search for {} from {} until {}",
                    grant.scope,
                    grant.since.format("%Y-%m-%d %H:%M:%S UTC"),
                    grant.until.format("%Y-%m-%d %H:%M:%S UTC")
                ),
                other => anyhow::bail!("unexpected answer: {other:?}"),
            }
        }
        OutageCommand::End { scope, centre } => {
            let scope = scope.scope()?;
            match centre.target()?.run(AdminRequest::EndGrants {
                scope: scope.clone(),
            })? {
                AdminResponse::Ended { count: 0 } => {
                    println!("no active grant for {scope}");
                    return Ok(ExitCode::from(1));
                }
                AdminResponse::Ended { count } => {
                    println!("ended {count} grant(s) for {scope}: central search is off for it now")
                }
                other => anyhow::bail!("unexpected answer: {other:?}"),
            }
        }
        OutageCommand::List { centre } => match centre.target()?.run(AdminRequest::Outages)? {
            AdminResponse::Outages { grants, requests } => {
                let now = chrono::Utc::now();
                println!("grants ({}):", grants.len());
                for g in &grants {
                    let state = if g.active_at(now) {
                        "active"
                    } else if g.ended_at.is_some() {
                        "ended"
                    } else {
                        "expired"
                    };
                    println!(
                        "  {:<22} {:<7} since {}  until {}{}",
                        g.scope.to_string(),
                        state,
                        g.since.format("%Y-%m-%d %H:%M"),
                        g.until.format("%Y-%m-%d %H:%M"),
                        g.ended_at
                            .map(|e| format!("  ended {}", e.format("%Y-%m-%d %H:%M")))
                            .unwrap_or_default()
                    );
                }
                println!("requests from facilities ({}):", requests.len());
                for r in &requests {
                    println!(
                        "  {}  {}  {}  {}",
                        r.at.format("%Y-%m-%d %H:%M:%S"),
                        r.facility,
                        if r.active { "outage" } else { "over  " },
                        onshi_model::Untrusted(&r.reason)
                    );
                }
            }
            other => anyhow::bail!("unexpected answer: {other:?}"),
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn facility_code(code: &str) -> anyhow::Result<onshi_model::FacilityCode> {
    onshi_model::FacilityCode::parse(code).map_err(|e| anyhow::anyhow!("CODE '{code}': {e}"))
}

fn facility(command: FacilityCommand) -> anyhow::Result<ExitCode> {
    use onshi_reconciler::store::FacilityEntry;
    match command {
        FacilityCommand::Add { code, pki, centre } => {
            let code = facility_code(&code)?;
            let target = centre.target()?;
            let issued = onshi_sync::pki::issue_facility(&pki, &code)
                .with_context(|| format!("--pki {}", pki.display()))?;
            let entry = FacilityEntry {
                code: code.clone(),
                fingerprint: issued.fingerprint.to_string(),
                added_at: chrono::Utc::now(),
                revoked_at: None,
            };
            match target.run(AdminRequest::PutFacility { entry }).with_context(|| {
                format!(
                    "the certificate {} was written but not recorded, so it is not accepted yet; run `onshi-reconciler facility add {code}` again",
                    issued.cert_path.display()
                )
            })? {
                AdminResponse::FacilityPut => {}
                other => anyhow::bail!("unexpected answer: {other:?}"),
            }
            println!(
                "facility {code} added: certificate {} (SHA-256 {}), key {}",
                issued.cert_path.display(),
                issued.fingerprint,
                issued.key_path.display()
            );
            if !issued.replaced.is_empty() {
                let moved: Vec<String> = issued
                    .replaced
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                println!(
                    "re-issued: the previous certificate is refused from now on (its files moved to {})",
                    moved.join(", ")
                );
            }
            println!(
                "hand the certificate, the key and {} to the facility's IT staff (onshi-edge enroll); running reconcilers accept it within seconds",
                pki.join(onshi_sync::pki::CA_CERT_FILE).display()
            );
        }
        FacilityCommand::Revoke { code, centre } => {
            let code = facility_code(&code)?;
            let target = centre.target()?;
            match target.run(AdminRequest::RevokeFacility { code: code.clone() })? {
                AdminResponse::Revoked { revoked: true } => println!(
                    "revoked: facility {code}'s certificate is refused from now on; running reconcilers close its connections within seconds"
                ),
                AdminResponse::Revoked { revoked: false } => {
                    let known = match target.run(AdminRequest::Facilities)? {
                        AdminResponse::Facilities { facilities } => {
                            facilities.into_iter().find(|f| f.code == code)
                        }
                        other => anyhow::bail!("unexpected answer: {other:?}"),
                    };
                    match known.and_then(|f| f.revoked_at) {
                        Some(at) => eprintln!(
                            "error: CODE {code}: already revoked at {}",
                            at.format("%Y-%m-%d %H:%M:%S UTC")
                        ),
                        None => eprintln!(
                            "error: CODE {code}: no such facility (`onshi-reconciler facility list` shows the known ones)"
                        ),
                    }
                    return Ok(ExitCode::from(1));
                }
                other => anyhow::bail!("unexpected answer: {other:?}"),
            }
        }
        FacilityCommand::List { centre } => match centre.target()?.run(AdminRequest::Facilities)? {
            AdminResponse::Facilities { facilities } => {
                println!("facilities ({}):", facilities.len());
                for f in &facilities {
                    println!(
                        "  {}  {:<7}  added {}  revoked {}  certificate {}",
                        f.code,
                        if f.is_active() { "active" } else { "revoked" },
                        f.added_at.format("%Y-%m-%d %H:%M:%S"),
                        f.revoked_at.map_or_else(
                            || "-                  ".to_string(),
                            |r| r.format("%Y-%m-%d %H:%M:%S").to_string()
                        ),
                        f.fingerprint.get(..16).unwrap_or(&f.fingerprint)
                    );
                }
            }
            other => anyhow::bail!("unexpected answer: {other:?}"),
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// `key status|rotate [--data]` on the embedded store (through the running serve's socket when
/// one holds it).
fn key_command(command: KeyCommand) -> anyhow::Result<ExitCode> {
    let unexpected = |a: AdminResponse| anyhow::anyhow!("unexpected answer: {a:?}");
    match command {
        KeyCommand::Status { at, json } => {
            let s = match at.target()?.run(AdminRequest::KeyStatus)? {
                AdminResponse::KeyStatus { status } => status,
                other => return Err(unexpected(other)),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!(
                    "data at rest: encrypted (AES-256-GCM), data key {}, key-encryption key {} from {} ({:?})",
                    s.data_key, s.kek, s.key_path, s.key
                );
                if let Some(r) = &s.rotation {
                    println!(
                        "data key rotation to key {}: {} of {} values looked at",
                        r.to_key, r.done, r.total
                    );
                }
                if let Some(w) = &s.warning {
                    println!("warning: {w}");
                }
            }
        }
        KeyCommand::Rotate {
            at,
            data_key_too: false,
            new_key,
        } => {
            // A running serve writes the key file: give it a path it can resolve.
            let new_key = new_key.map(std::path::absolute).transpose()?;
            match at.target()?.run(AdminRequest::KeyRotate { new_key })? {
                AdminResponse::KeyRotated { rotated } => println!(
                    "key-encryption key rotated: {} -> {}; the new key is in {} (the old one no longer opens the data)",
                    rotated.old, rotated.new, rotated.written_to
                ),
                other => return Err(unexpected(other)),
            }
        }
        KeyCommand::Rotate {
            at,
            data_key_too: true,
            ..
        } => {
            println!("a new data key: re-sealing every stored value (this takes a while)");
            match at.target()?.run(AdminRequest::KeyRotateData)? {
                AdminResponse::KeyResealed { data_key, resealed } => println!(
                    "data key rotation finished: {resealed} values re-sealed with data key {data_key}"
                ),
                other => return Err(unexpected(other)),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn audit_verify(code: &str, centre: CentreArgs) -> anyhow::Result<ExitCode> {
    use onshi_reconciler::audit::{BreakKind, HeldFault};
    use onshi_sync::audit_chain::short_hex;
    let code = onshi_model::FacilityCode::parse(code)
        .map_err(|e| anyhow::anyhow!("--facility '{code}': {e}"))?;
    let target = centre.target()?;
    let known = match target.run(AdminRequest::Facilities)? {
        AdminResponse::Facilities { facilities } => facilities.iter().any(|f| f.code == code),
        other => anyhow::bail!("unexpected answer: {other:?}"),
    };
    let report = match target.run(AdminRequest::AuditVerify {
        facility: code.clone(),
    })? {
        AdminResponse::AuditVerified { report } => report,
        other => anyhow::bail!("unexpected answer: {other:?}"),
    };
    if !known && report.held == 0 && report.brk.is_none() {
        anyhow::bail!(
            "--facility {code}: no such facility (`onshi-reconciler facility list` shows the known ones)"
        );
    }
    let mut broken = false;
    if let Some(f) = &report.held_fault {
        broken = true;
        match f {
            HeldFault::Missing { seq } => println!(
                "facility {code}: the centre's copy of the access log chain is damaged at entry {seq}: missing"
            ),
            HeldFault::Unlinked { seq } => println!(
                "facility {code}: the centre's copy of the access log chain is damaged at entry {seq}: it does not link to entry {}",
                seq.saturating_sub(1)
            ),
        }
    }
    if let Some(b) = &report.brk {
        broken = true;
        let what = match b.kind {
            BreakKind::Rewritten if b.exact() => format!(
                "rewritten at the edge (the link it now sends for entry {} differs from the one it sent before; entries before it agree)",
                b.seq
            ),
            BreakKind::Rewritten => format!(
                "rewritten at the edge at or before entry {} (entries before {} agree; narrowed further as the edge syncs)",
                b.seq, b.agreed_below
            ),
            BreakKind::Removed => format!(
                "removed at the edge (its log became shorter than the {} entries the centre holds, and its entry {} is not the one it sent before{})",
                report.held,
                b.seq,
                if b.exact() {
                    String::new()
                } else {
                    format!("; entries before {} agree so far", b.agreed_below)
                }
            ),
        };
        println!(
            "facility {code}: access log chain broken at entry {}: {what}; first seen {}",
            b.seq,
            b.at.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    if broken {
        return Ok(ExitCode::from(1));
    }
    match report.head {
        None => println!(
            "facility {code}: no access log chain held yet (its edge has not sent one); nothing broken"
        ),
        Some(h) => println!(
            "facility {code}: access log chain unbroken: {} entries held (head: entry {}, sha256 {}…)",
            report.held,
            h.seq,
            short_hex(&h.hash)
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn import(target: AdminTarget, file: PathBuf) -> anyhow::Result<ExitCode> {
    let mut periods_now = 0;
    let mut run = |chunk: &mut Vec<onshi_model::Qualification>| -> anyhow::Result<ImportCounts> {
        let periods = std::mem::take(chunk);
        match target.run(AdminRequest::Import { periods })? {
            AdminResponse::Imported { counts, periods } => {
                periods_now = periods;
                Ok(counts)
            }
            other => anyhow::bail!("unexpected answer: {other:?}"),
        }
    };
    let reader: Box<dyn std::io::BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f =
            std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
        Box::new(BufReader::new(f))
    };
    let mut counts = ImportCounts::default();
    let mut bad = 0usize;
    let chunk_lines = match &target {
        AdminTarget::Direct(store) if store.kind() == "postgresql" => PG_IMPORT_CHUNK,
        _ => IMPORT_CHUNK,
    };
    let mut chunk = Vec::with_capacity(chunk_lines);
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
        if chunk.len() >= chunk_lines {
            counts.add(run(&mut chunk)?);
        }
    }
    if !chunk.is_empty() {
        counts.add(run(&mut chunk)?);
    }
    println!(
        "imported {}: {} added, {} updated, {} unchanged, {} bad line(s); registry holds {} periods",
        file.display(),
        counts.added,
        counts.updated,
        counts.unchanged,
        bad,
        periods_now
    );
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
