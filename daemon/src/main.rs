//! `onshi-edge`: the facility's edge node. Commands: `run`, `check-config`, `enroll`, `status`,
//! `queue`, `sync-now`, `export`, `audit`, `key …`, `backup`, `restore`, `completions`,
//! `reader-sim`, `demo`, `user …`, `token …`. The clients of a running edge send a token (`--token`, `token` in `--config`, or
//! `ONSHI_TOKEN`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use onshi_edge::auth::{self, AccountName, AccountsDir, Password, Role};
use onshi_edge::config::{EdgeConfig, EdgeSettings};

#[derive(Debug, Parser)]
#[command(
    name = "onshi-edge",
    version,
    about = "onshi edge node: eligibility checks that never turn a patient away"
)]
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
        /// mailbox, deadline_ms, …).
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: EdgeSettings,
    },
    /// Check a configuration without starting anything: every setting, the PKI files, the data
    /// directory. Exit 0 if it would run; else each problem as `FILE: key: reason`, exit 2.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: EdgeSettings,
    },
    /// Place the facility's certificate: check that the key belongs to the certificate, that the
    /// certificate chains to the CA and names the facility, then install ca.pem,
    /// facility-CODE.pem and facility-CODE.key (mode 0640, group onshi) in the PKI directory, and
    /// set facility and pki in the configuration file if one is given. Run it as root.
    Enroll {
        /// The edge's PKI directory (created if missing).
        #[arg(long, default_value = "/etc/onshi/pki")]
        pki: PathBuf,
        /// The deployment's CA certificate (ca.pem from the centre).
        #[arg(long)]
        ca: PathBuf,
        /// The facility's certificate (facility-CODE.pem).
        #[arg(long)]
        cert: PathBuf,
        /// The facility's private key (facility-CODE.key).
        #[arg(long)]
        key: PathBuf,
        /// The facility code the certificate must name (default: any; the configuration then gets
        /// the certificate's).
        #[arg(long)]
        facility: Option<String>,
        /// The edge's configuration file to update (facility and pki), e.g. /etc/onshi/edge.toml.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The group that may read the key (the service's).
        #[arg(long, default_value = "onshi")]
        group: String,
        /// Replace a different certificate, key or CA already installed (a renewal).
        #[arg(long)]
        replace: bool,
    },
    /// Show what the running daemon says about itself.
    Status {
        #[command(flatten)]
        client: ClientArgs,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// The whole journal as JSON lines on standard output (checks, then provisional records), for a
    /// vendor or an auditor.
    Export {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Shell completions (bash, zsh, fish, …) on standard output.
    Completions { shell: clap_complete::Shell },
    /// The manual page (roff) on standard output (packaging/man/onshi-edge.1).
    #[command(hide = true)]
    Manpage,
    /// The queue: deferred checks and provisional records not yet settled.
    Queue {
        #[command(flatten)]
        client: ClientArgs,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// A simulated face-authentication card reader: sends heartbeats to the edge (optionally
    /// reporting a fault), or presents one card and prints the answer.
    ReaderSim {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, default_value = "SIM-READER-1")]
        reader_id: String,
        /// Milliseconds between heartbeats.
        #[arg(long, default_value_t = 1000)]
        every_ms: u64,
        /// Stop after this many heartbeats (default: run until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
        /// Report this fault in every heartbeat.
        #[arg(long)]
        fault: Option<String>,
        /// Present this My Number card id once (instead of heartbeats) and print the answer.
        #[arg(long)]
        card: Option<String>,
        /// How the reader verified the holder: face or pin.
        #[arg(long, default_value = "face")]
        verified: String,
    },
    /// Force a journal sync round now and wait until synced (or the timeout); exit 0 if synced, 1
    /// if not.
    SyncNow {
        #[command(flatten)]
        client: ClientArgs,
        /// How long to wait for "synced", in seconds.
        #[arg(long, default_value_t = 10)]
        timeout_s: u64,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// The access log of the running edge: who read or wrote personal data, when, from where, and
    /// which checks, records or people (never what was searched for). Needs an admin token.
    /// `audit verify` checks the log's hash chain instead.
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        verify: Option<AuditCommand>,
        #[command(flatten)]
        client: ClientArgs,
        /// Only entries at or after this time (RFC 3339) or date (YYYY-MM-DD).
        #[arg(long)]
        since: Option<String>,
        /// Only this user's or token's entries.
        #[arg(long)]
        actor: Option<String>,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// The keys that protect personal data at rest: `key status`, `key rotate` (a new
    /// key-encryption key, instantly), `key rotate --data` (a new data key; every stored value
    /// re-sealed in the background). Works whether the edge runs or not (through its admin socket
    /// when it does).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// A consistent, encrypted snapshot of the edge's data in one file (0600): before an upgrade,
    /// nightly to other media, or to move to a new box. Nothing is decrypted: the file is useless
    /// without the data key, which must be kept (and moved) apart from it. Works whether the edge
    /// runs or not; a running edge writes FILE itself, as its service user. Refused while a data
    /// key rotation is under way.
    Backup {
        /// The backup file to write (replaced atomically if it exists).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        at: KeyAt,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// A new data directory from a backup: DIR must not exist or be empty, and the key must be the
    /// one the backed-up edge used (a wrong key is refused, nothing written). Then start the edge
    /// on DIR with that key. Run it as the service user: the files are made 0600 for whoever runs
    /// it.
    Restore {
        /// The backup file (made by `onshi-edge backup`).
        file: PathBuf,
        /// The new data directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The key file the backed-up edge used (else the systemd credential onshi-data-key, or
        /// DIR.key beside the new data directory).
        #[arg(long, value_name = "FILE")]
        data_key: Option<PathBuf>,
    },
    /// Staff accounts (sign-in to the page): add, list, disable, change a password. Works whether
    /// the edge runs or not; the running edge sees each change at its next request.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Bearer tokens for programs (receipt-computer software, scripts, the card-reader bridge).
    /// Works whether the edge runs or not.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
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

/// How a command-line client reaches the running edge, and the token it sends.
#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// The edge's HTTP address.
    #[arg(long, default_value = "127.0.0.1:7600")]
    http: String,
    /// A bearer token (onshi-edge token add NAME --role ROLE); else `token` in --config, else the
    /// ONSHI_TOKEN environment variable.
    #[arg(long, env = "ONSHI_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The edge's configuration file, for its `token` setting.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// A client of the running edge: its address and the token to send.
#[derive(Debug)]
struct Client {
    addr: String,
    token: Option<String>,
}

impl ClientArgs {
    /// The flag (or ONSHI_TOKEN) wins over the configuration file's `token`.
    fn client(self) -> anyhow::Result<Client> {
        let token = match (self.token, &self.config) {
            (Some(t), _) => Some(t),
            (None, Some(c)) => EdgeSettings::from_file(c)?.token,
            (None, None) => None,
        };
        Ok(Client {
            addr: self.http,
            token: token
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
        })
    }
}

/// Where the accounts file is: the edge's data directory, given or read from its configuration.
#[derive(Debug, clap::Args)]
struct AccountsAt {
    /// The edge's data directory (accounts.json is kept in it).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The edge's configuration file: its `data` setting is used.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the access log's hash chain: exit 0 when it holds; else name the first entry changed,
    /// removed (a gap) or reordered, and exit 1. Prints sequence numbers and hashes only. Works
    /// whether the edge runs or not (through its admin socket when it does).
    Verify {
        #[command(flatten)]
        at: LogAt,
    },
}

/// Where the access log is: the edge's data directory, given or read from its configuration.
#[derive(Debug, clap::Args)]
struct LogAt {
    /// The edge's data directory (the access log is in its journal/ store).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The edge's configuration file: its `data` and `data_key` settings are used.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The data directory's key file (else the configuration's, the systemd credential
    /// onshi-data-key, or DATA.key beside the data directory).
    #[arg(long, value_name = "FILE")]
    data_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Which key protects the data, the data key in use, and a rotation's progress.
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
        /// A new DATA key instead: every stored value is re-sealed with it, in the background on
        /// a running edge (progress in `key status`); a restart or a SIGKILL mid-way continues it.
        #[arg(long = "data")]
        data_key_too: bool,
        /// Write the new key-encryption key to this file instead of replacing the current one
        /// (needed when the key is the systemd credential: encrypt it with systemd-creds).
        #[arg(long, value_name = "FILE", conflicts_with = "data_key_too")]
        new_key: Option<PathBuf>,
    },
}

/// The edge's data directory and key, for `key …` (`--data` there means the data key).
#[derive(Debug, clap::Args)]
struct KeyAt {
    /// The edge's data directory.
    #[arg(long = "data-dir", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The edge's configuration file: its `data` and `data_key` settings are used.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The current key file (else the configuration's, the systemd credential onshi-data-key, or
    /// DATA.key beside the data directory).
    #[arg(long, value_name = "FILE")]
    data_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user. The password is read from standard input (one line, at least 10 characters),
    /// never from the command line.
    Add {
        /// The sign-in name: ASCII letters, digits, '.', '_', '-', '@' (never reused).
        name: String,
        #[arg(long)]
        role: Role,
        /// Read the password from standard input (required).
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        at: AccountsAt,
    },
    /// List the users: name, role, enabled, created (never the password hashes).
    List {
        #[command(flatten)]
        at: AccountsAt,
    },
    /// Disable a user: their sessions end at their next request and they cannot sign in again.
    /// Users are never deleted.
    Disable {
        name: String,
        #[command(flatten)]
        at: AccountsAt,
    },
    /// Set a user's password (read from standard input, one line); their sessions end.
    Passwd {
        name: String,
        /// Read the password from standard input (required).
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        at: AccountsAt,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a token and print it, alone on one line: it is shown this once and stored only as a
    /// hash.
    Add {
        /// The token's name: ASCII letters, digits, '.', '_', '-', '@' (never reused).
        name: String,
        #[arg(long)]
        role: Role,
        #[command(flatten)]
        at: AccountsAt,
    },
    /// List the tokens: name, id, role, active or revoked, created (never the tokens).
    List {
        #[command(flatten)]
        at: AccountsAt,
    },
    /// Revoke a token: its next request is refused. Tokens are never deleted.
    Revoke {
        name: String,
        #[command(flatten)]
        at: AccountsAt,
    },
}

fn main() -> ExitCode {
    onshi_sync::lifecycle::init_logging();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
            let reload = config.clone().map(|path| onshi_edge::reload::ReloadSource {
                path,
                cli: settings.clone(),
            });
            let config = EdgeConfig::try_from(settings.or(file))?;
            let edge = onshi_edge::edge::start_with_reload(
                config,
                reload,
                onshi_edge::edge::shutdown_signal(),
            )
            .await?;
            println!(
                "onshi-edge: HTTP API on {}://{}",
                edge.scheme, edge.http_addr
            );
            edge.task.await.context("edge task")??;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config, settings } => check_config(config, settings),
        Command::Enroll {
            pki,
            ca,
            cert,
            key,
            facility,
            config,
            group,
            replace,
        } => enroll(onshi_edge::enroll::EnrollRequest {
            pki,
            ca,
            cert,
            key,
            facility: facility
                .map(|f| {
                    onshi_model::FacilityCode::parse(&f)
                        .map_err(|e| anyhow::anyhow!("--facility {f}: {}", e.message))
                })
                .transpose()?,
            config,
            group,
            replace,
        }),
        Command::Manpage => {
            let cmd = <Cli as clap::CommandFactory>::command();
            let page = onshi_sync::manpage::render(&cmd, MAN_EXTRA)?;
            std::io::Write::write_all(&mut std::io::stdout(), &page)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { client, json } => status(&client.client()?, json).await,
        Command::Queue { client, json } => queue(&client.client()?, json).await,
        Command::Audit {
            verify: Some(AuditCommand::Verify { at }),
            ..
        } => audit_verify(at),
        Command::Key { command } => key_command(command),
        Command::Backup { out, at, json } => backup_command(out, at, json),
        Command::Restore {
            file,
            data,
            data_key,
        } => restore_command(file, data, data_key),
        Command::Audit {
            verify: None,
            client,
            since,
            actor,
            json,
        } => audit(&client.client()?, since, actor, json).await,
        Command::Export { client } => {
            let (status, body) = http_call(&client.client()?, "GET", "/v1/export", None).await?;
            if status != 200 {
                anyhow::bail!("the daemon answered {status}: {body}");
            }
            print!("{body}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "onshi-edge", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::SyncNow {
            client,
            timeout_s,
            json,
        } => sync_now(&client.client()?, timeout_s, json).await,
        Command::ReaderSim {
            client,
            reader_id,
            every_ms,
            count,
            fault,
            card,
            verified,
        } => {
            reader_sim(
                &client.client()?,
                &reader_id,
                every_ms,
                count,
                fault,
                card,
                &verified,
            )
            .await
        }
        Command::User { command } => user(command),
        Command::Token { command } => token(command),
        Command::Demo { http, people, seed } => {
            onshi_edge::demo::run(&http, people, seed, onshi_edge::edge::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn enroll(req: onshi_edge::enroll::EnrollRequest) -> anyhow::Result<ExitCode> {
    match onshi_edge::enroll::enroll(&req) {
        Ok(report) => {
            println!(
                "enrolled facility {} (certificate valid until {})",
                report.files.facility,
                report.files.not_after.format("%Y-%m-%d")
            );
            for (path, state) in &report.installed {
                println!("  {:<9} {}", state, path.display());
            }
            if let Some(c) = &req.config {
                println!("  updated   {} (facility, pki)", c.display());
            }
            for note in &report.notes {
                println!("note: {note}");
            }
            match &req.config {
                Some(c) => println!("next: onshi-edge check-config --config {}", c.display()),
                None => println!(
                    "next: set facility = \"{}\" and pki = \"{}\" in the configuration, then onshi-edge check-config --config FILE",
                    report.files.facility,
                    req.pki.display()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("enroll: {e}");
            eprintln!("enroll: nothing was installed");
            Ok(ExitCode::from(2))
        }
    }
}

/// The manual page's sections after COMMANDS.
const MAN_EXTRA: &str = r#".SH FILES
.TP
/etc/onshi/edge.toml
The configuration read by the systemd unit (every key is a flag of run; see the comments in the file).
.TP
/etc/onshi/pki/
ca.pem, facility\-CODE.pem and facility\-CODE.key (mode 0640, group onshi), placed by enroll.
.TP
/var/lib/onshi/
The journal and the replica (systemd's StateDirectory).
.TP
/var/lib/onshi/accounts.json
Staff users and tokens (argon2id hashes only, mode 0600) and the history of their changes, written by user and token whether the edge runs or not.
.TP
/etc/onshi/edge\-data\-key.cred
The data key as an encrypted systemd credential (systemd\-creds encrypt \-\-name=onshi\-data\-key), loaded by a drop\-in with LoadCredentialEncrypted=onshi\-data\-key:/etc/onshi/edge\-data\-key.cred; keep a copy of the key off the box.
.TP
/var/lib/onshi.key
The data key used when neither \-\-data\-key nor the credential is given (made by the package; on the same disk as the data, so the edge warns at every start).
.SH ENVIRONMENT
.TP
CREDENTIALS_DIRECTORY
Set by systemd: the data key is read from its onshi\-data\-key file unless \-\-data\-key names one.
.TP
RUST_LOG
Log filter (default info).
.TP
ONSHI_LOG_FORMAT
text, json or journald. Under systemd the default is journald (native, with structured fields, e.g. journalctl \-u onshi\-edge ONSHI_FACILITY=1311234567); elsewhere human\-readable text on stderr.
.SH EXIT STATUS
0 on success; 1 when sync\-now did not reach synced; 2 for a bad configuration, a refused enrolment or any other error.
.SH SEE ALSO
onshi\-reconciler(1), /usr/share/doc/onshi/README.md, /usr/share/doc/onshi/INSTALL.md
"#;

fn check_config(path: Option<PathBuf>, settings: EdgeSettings) -> anyhow::Result<ExitCode> {
    let where_ = path
        .as_ref()
        .map_or_else(|| "(command line)".to_string(), |p| p.display().to_string());
    let key = |setting: &str| setting.trim_start_matches("--").replace('-', "_");
    let file = match &path {
        Some(p) => match EdgeSettings::from_file(p) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("{}", e.message);
                return Ok(ExitCode::from(2));
            }
        },
        None => EdgeSettings::default(),
    };
    let config = match EdgeConfig::try_from(settings.or(file)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{where_}: {}: {}", key(&e.setting), e.message);
            return Ok(ExitCode::from(2));
        }
    };
    if let Err(e) = onshi_sync::pki::load_client(&config.pki, &config.facility) {
        eprintln!("{where_}: pki: {e}");
        return Ok(ExitCode::from(2));
    }
    if let onshi_edge::config::HttpTransport::Tls {
        cert,
        key: key_file,
    } = &config.http_transport
        && let Err(e) = onshi_edge::http::tls_config(cert, key_file)
    {
        eprintln!("{where_}: {}: {}", key(e.setting), e.message);
        return Ok(ExitCode::from(2));
    }
    if config.http_transport == onshi_edge::config::HttpTransport::PlainOnLan {
        eprintln!(
            "{where_}: warning: http: plain HTTP on {} (allow_plain_http_on_lan = true): passwords, tokens and patients' data cross the network unencrypted",
            config.http
        );
    }
    if config.data.exists()
        && std::fs::metadata(&config.data)
            .map(|m| m.permissions().readonly())
            .unwrap_or(false)
    {
        eprintln!("{where_}: data: {} is read-only", config.data.display());
        return Ok(ExitCode::from(2));
    }
    if let Some(mailbox) = &config.mailbox {
        // It is created at start if missing: its nearest existing ancestor must be writable.
        let existing = mailbox.ancestors().find(|p| p.exists());
        let writable = existing.is_some_and(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_dir() && !m.permissions().readonly())
        });
        if !writable {
            eprintln!(
                "{where_}: mailbox: {} cannot be created or written (check the folder and its parents)",
                mailbox.display()
            );
            return Ok(ExitCode::from(2));
        }
    }
    // The data key, checked against the keyring without opening the store (the running edge
    // may hold it): a wrong or missing one fails here, before a start would.
    let source = onshi_sync::vault::KeySource::choose(config.data_key.as_deref(), &config.data);
    let at_rest =
        match onshi_sync::sealed::check_key(&onshi_edge::at_rest::store_dir(&config.data), &source)
        {
            Ok(state) => state,
            Err(e) => {
                eprintln!("{where_}: data_key: {e}");
                return Ok(ExitCode::from(2));
            }
        };
    if let Some(w) = source.warning() {
        eprintln!("{where_}: warning: data_key: {w}");
    }
    // Personal data and the facility's key: readable by "other" is worth a warning, not a refusal
    // (the administrator may have reasons; the data still works).
    let key = config
        .pki
        .join(onshi_sync::pki::facility_key_file(&config.facility));
    for w in [
        onshi_sync::modes::exposure_warning("private key", &key),
        onshi_sync::modes::exposure_warning("data directory", &config.data),
    ]
    .into_iter()
    .flatten()
    {
        eprintln!("{where_}: {w}");
    }
    println!(
        "{where_}: ok: facility {}, data {} ({at_rest}), pki {}, {}, http {}, deadline {} ms, mailbox {}",
        config.facility,
        config.data.display(),
        config.pki.display(),
        match config.reconciler.iter().count() {
            1 => format!("reconciler {}", config.reconciler),
            _ => format!("reconcilers {} (tried in this order)", config.reconciler),
        },
        config.http,
        config.deadline.as_millis(),
        config
            .mailbox
            .as_ref()
            .map_or_else(|| "none".to_string(), |m| m.display().to_string())
    );
    Ok(ExitCode::SUCCESS)
}

/// A tiny HTTP/1.1 client, so the CLI needs no HTTP client dependency: (status, body).
/// A 401 or 403 fails the command with what to do about it.
async fn http_call(
    client: &Client,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, String)> {
    let (status, text) = http_send(client, method, path, body).await?;
    let message = || {
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.clone())
    };
    match status {
        401 if client.token.is_none() => anyhow::bail!(
            "the edge asks for credentials (401): give --token TOKEN, `token = \"…\"` in --config FILE, or ONSHI_TOKEN (make one with: onshi-edge token add NAME --role reception)"
        ),
        401 => anyhow::bail!(
            "the edge refused the token (401: {}); check it, or make a new one with onshi-edge token add",
            message()
        ),
        403 => anyhow::bail!("the token's role is not enough (403: {})", message()),
        _ => Ok((status, text)),
    }
}

async fn http_send(
    client: &Client,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = client.addr.as_str();
    let auth = client
        .token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("no onshi-edge answers on {addr}"))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = match split {
        Some(i) => (&buf[..i], &buf[i + 4..]),
        None => (&buf[..], &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // A streamed answer (`GET /v1/export`) comes in chunks.
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    let body = if chunked {
        dechunk(body).context("the daemon's chunked answer is cut short")?
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The body of an HTTP/1.1 chunked answer; `None` if it ends before its last chunk.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

async fn http_get(client: &Client, path: &str) -> anyhow::Result<String> {
    Ok(http_call(client, "GET", path, None).await?.1)
}

async fn sync_now(http: &Client, timeout_s: u64, raw: bool) -> anyhow::Result<ExitCode> {
    let (code, body) = http_call(
        http,
        "POST",
        "/v1/sync-now",
        Some(&serde_json::json!({"timeout_ms": timeout_s.saturating_mul(1000)})),
    )
    .await?;
    let v: serde_json::Value = serde_json::from_str(&body).with_context(|| {
        format!("the daemon answered something that is not JSON ({code}): {body}")
    })?;
    if code != 200 {
        eprintln!("sync-now refused ({code}): {body}");
        return Ok(ExitCode::from(2));
    }
    let synced = v["synced"].as_bool() == Some(true);
    if raw {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if synced {
        println!(
            "synced · last sync {}",
            v["last_sync"].as_str().unwrap_or("?")
        );
    } else {
        println!(
            "not synced after {timeout_s} s: {} to send, {} to receive, link {}{}",
            v["outgoing"],
            v["incoming"],
            v["link"].as_str().unwrap_or("?"),
            v["last_error"]
                .as_str()
                .map(|e| format!(", last error: {e}"))
                .unwrap_or_default()
        );
    }
    Ok(if synced {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn queue(http: &Client, raw: bool) -> anyhow::Result<ExitCode> {
    let body = http_get(http, "/v1/queue").await?;
    let v: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("the daemon answered something that is not JSON: {body}"))?;
    if raw {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} pending · ¥{} collected provisionally · oldest {}",
        v["pending"],
        v["provisional_yen"],
        v["oldest_pending_s"]
            .as_i64()
            .map_or("—".to_string(), |s| format!("{s} s ago"))
    );
    for w in v["warnings"].as_array().into_iter().flatten() {
        println!("warning: {}", w.as_str().unwrap_or_default());
    }
    for item in v["items"].as_array().into_iter().flatten() {
        println!(
            "{:<32} {:<15} {:<9} {}{}",
            item["id"].as_str().unwrap_or("?"),
            item["kind"].as_str().unwrap_or("?"),
            item["state"].as_str().unwrap_or("?"),
            item["created_at"].as_str().unwrap_or("?"),
            item["collected_yen"]
                .as_u64()
                .map(|y| format!(" ¥{y}"))
                .unwrap_or_default()
        );
        if let Some(s) = item["settlement"].as_object() {
            println!(
                "    {} {}: {}",
                s["kind"].as_str().unwrap_or("?"),
                s["yen"]
                    .as_u64()
                    .map(|y| format!("¥{y}"))
                    .unwrap_or_default(),
                s["explanation"].as_str().unwrap_or_default()
            );
        }
        if item["revised_after_close"] == true {
            println!(
                "    revised by the centre after it was closed (revision {}): act on it again, then close it again",
                item["settlement_revision"]
            );
        } else if item["revised"] == true {
            println!(
                "    revised by the centre (revision {})",
                item["settlement_revision"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn reader_sim(
    http: &Client,
    reader_id: &str,
    every_ms: u64,
    count: Option<u64>,
    fault: Option<String>,
    card: Option<String>,
    verified: &str,
) -> anyhow::Result<ExitCode> {
    if let Some(card) = card {
        let (status, body) = http_call(
            http,
            "POST",
            "/v1/reader/card",
            Some(
                &serde_json::json!({"reader_id": reader_id, "card_id": card, "verified": verified}),
            ),
        )
        .await?;
        println!("{body}");
        return Ok(if status == 200 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let beat = match &fault {
        Some(f) => serde_json::json!({"reader_id": reader_id, "status": "fault", "fault": f}),
        None => serde_json::json!({"reader_id": reader_id, "status": "ok"}),
    };
    let mut sent = 0u64;
    let mut every = tokio::time::interval(std::time::Duration::from_millis(every_ms.max(10)));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
        match http_call(http, "POST", "/v1/reader/heartbeat", Some(&beat)).await {
            Ok((200, body)) => eprintln!("heartbeat {}: {body}", sent + 1),
            Ok((status, body)) => eprintln!("heartbeat refused ({status}): {body}"),
            Err(e) => eprintln!("heartbeat not delivered: {e:#}"),
        }
        sent += 1;
        if count.is_some_and(|c| sent >= c) {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

async fn status(http: &Client, raw: bool) -> anyhow::Result<ExitCode> {
    let body = http_get(http, "/v1/status").await?;
    let v: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("the daemon answered something that is not JSON: {body}"))?;
    if raw {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("mode:       {}", v["mode"].as_str().unwrap_or("?"));
        for r in v["reasons"].as_array().into_iter().flatten() {
            println!("            because {}", r.as_str().unwrap_or_default());
        }
        println!("facility:   {}", v["facility"].as_str().unwrap_or("?"));
        println!(
            "link:       {} to {} (reconnects {}){}",
            v["link"]["state"].as_str().unwrap_or("?"),
            v["link"]["reconciler"].as_str().unwrap_or("?"),
            v["link"]["reconnects"],
            v["link"]["last_error"]
                .as_str()
                .map(|e| format!(", last error: {e}"))
                .unwrap_or_default()
        );
        if let Some(all) = v["link"]["reconcilers"].as_array().filter(|a| a.len() > 1) {
            let all: Vec<&str> = all.iter().filter_map(|a| a.as_str()).collect();
            println!("            of {} (in this order)", all.join(", "));
        }
        println!("journal:    {} checks", v["journal"]["checks"]);
        println!(
            "queue:      {} pending, ¥{} provisional",
            v["queue"]["pending"], v["queue"]["provisional_yen"]
        );
        println!(
            "sync:       {} ({} to send, {} to receive), last sync {}",
            if v["sync"]["synced"].as_bool() == Some(true) {
                "synced"
            } else {
                "not synced"
            },
            v["sync"]["outgoing"],
            v["sync"]["incoming"],
            v["last_sync"].as_str().unwrap_or("never")
        );
        println!("replica:    {} people", v["replica"]["people"]);
        println!(
            "reader:     {}",
            v["reader"]["state"].as_str().unwrap_or("?")
        );
        for w in v["warnings"].as_array().into_iter().flatten() {
            println!("warning:    {}", w.as_str().unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn query_value(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn audit(
    client: &Client,
    since: Option<String>,
    actor: Option<String>,
    raw: bool,
) -> anyhow::Result<ExitCode> {
    let mut query: Vec<String> = Vec::new();
    if let Some(s) = since {
        query.push(format!("since={}", query_value(&s)));
    }
    if let Some(a) = actor {
        query.push(format!("actor={}", query_value(&a)));
    }
    let path = if query.is_empty() {
        "/v1/audit".to_string()
    } else {
        format!("/v1/audit?{}", query.join("&"))
    };
    let (code, body) = http_call(client, "GET", &path, None).await?;
    let v: serde_json::Value = serde_json::from_str(&body).with_context(|| {
        format!("the daemon answered something that is not JSON ({code}): {body}")
    })?;
    if code != 200 {
        anyhow::bail!(
            "the daemon answered {code}: {}",
            v["error"]["message"].as_str().unwrap_or(&body)
        );
    }
    if raw {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    for e in v["entries"].as_array().into_iter().flatten() {
        let subject: Vec<String> = e["subject"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                s.as_object()?
                    .iter()
                    .next()
                    .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or("?")))
            })
            .collect();
        println!(
            "{} {} ({}) {} from {} {}",
            e["at"].as_str().unwrap_or("?"),
            e["actor"].as_str().unwrap_or("?"),
            e["role"].as_str().unwrap_or("?"),
            e["action"].as_str().unwrap_or("?"),
            e["from"].as_str().unwrap_or("-"),
            subject.join(" ")
        );
    }
    if v["more"].as_bool() == Some(true) {
        println!("(more entries: narrow with --since or --actor)");
    }
    Ok(ExitCode::SUCCESS)
}

/// The data directory of `user …`/`token …`: `--data`, else the configuration's `data` (read only).
fn accounts_at(at: AccountsAt) -> anyhow::Result<AccountsDir> {
    Ok(AccountsDir::new(&data_dir(
        at,
        "the edge's data directory holds accounts.json",
    )?))
}

/// `--data`, else the configuration's `data`.
fn data_dir(at: AccountsAt, why: &str) -> anyhow::Result<PathBuf> {
    Ok(match (at.data, at.config) {
        (Some(d), _) => d,
        (None, Some(c)) => EdgeSettings::from_file(&c)?
            .data
            .ok_or_else(|| anyhow::anyhow!("{}: data: not set", c.display()))?,
        (None, None) => anyhow::bail!("give --data DIR or --config FILE ({why})"),
    })
}

/// The data directory and its `--data-key`: given, or read from the configuration file.
fn edge_at(
    data: Option<PathBuf>,
    config: Option<PathBuf>,
    data_key: Option<PathBuf>,
    why: &str,
) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    let file = config
        .as_ref()
        .map(|c| EdgeSettings::from_file(c))
        .transpose()?
        .unwrap_or_default();
    let data = match (data, file.data) {
        (Some(d), _) | (None, Some(d)) => d,
        (None, None) => match config {
            Some(c) => anyhow::bail!("{}: data: not set", c.display()),
            None => anyhow::bail!("give the data directory or --config FILE ({why})"),
        },
    };
    let journal = onshi_edge::at_rest::store_dir(&data);
    anyhow::ensure!(
        journal.is_dir(),
        "{}: no edge data here (no journal/ directory)",
        data.display()
    );
    Ok((data, data_key.or(file.data_key)))
}

/// The edge's store opened by this process, or `None` when a running edge holds it (then ask
/// that edge through its admin socket).
fn open_at_rest(
    data: &std::path::Path,
    data_key: Option<&std::path::Path>,
) -> anyhow::Result<Option<onshi_edge::at_rest::AtRest>> {
    use onshi_edge::at_rest::{self, AtRest};
    // A running edge answers first: it holds the store and its key (a systemd credential this
    // shell does not have), so the command needs no key of its own then.
    if std::os::unix::net::UnixStream::connect(data.join(onshi_edge::admin::SOCKET)).is_ok() {
        return Ok(None);
    }
    match AtRest::open(data, data_key) {
        Ok((a, report)) => {
            a.log_open(&report);
            Ok(Some(a))
        }
        Err(e) if at_rest::is_busy(&e) => Ok(None),
        Err(e) => Err(at_rest::open_error(e, &at_rest::store_dir(data))),
    }
}

fn ask_edge(
    data: &std::path::Path,
    request: &onshi_edge::admin::EdgeAdminRequest,
) -> anyhow::Result<onshi_edge::admin::EdgeAdminResponse> {
    use onshi_edge::admin::{self, EdgeAdminResponse};
    match admin::call(&data.join(admin::SOCKET), request)? {
        EdgeAdminResponse::Error { message } => {
            anyhow::bail!("the running edge refused: {message}")
        }
        answer => Ok(answer),
    }
}

/// `key status` and `key rotate [--data]`.
fn key_command(command: KeyCommand) -> anyhow::Result<ExitCode> {
    use onshi_edge::admin::{EdgeAdminRequest, EdgeAdminResponse};
    use onshi_edge::at_rest::{AtRestStatus, RotatedKek};
    let print_status = |s: &AtRestStatus, json: bool| {
        if json {
            println!("{}", serde_json::to_string_pretty(s).unwrap_or_default());
            return;
        }
        println!(
            "data at rest: encrypted (AES-256-GCM), data key {}, key-encryption key {} from {} ({:?})",
            s.data_key, s.kek, s.key_path, s.key
        );
        match &s.rotation {
            Some(r) => println!(
                "data key rotation to key {}: {} of {} values looked at",
                r.to_key, r.done, r.total
            ),
            None => println!("no data key rotation under way"),
        }
        if let Some(w) = &s.warning {
            println!("warning: {w}");
        }
    };
    let print_rotated = |r: &RotatedKek| {
        println!(
            "key-encryption key rotated: {} -> {}; the new key is in {} (the old one no longer opens the data)",
            r.old, r.new, r.written_to
        );
    };
    match command {
        KeyCommand::Status { at, json } => {
            let (data, key) = edge_at(at.data_dir, at.config, at.data_key, "--data-dir DIR")?;
            let status = match open_at_rest(&data, key.as_deref())? {
                Some(a) => a.status(),
                None => match ask_edge(&data, &EdgeAdminRequest::KeyStatus)? {
                    EdgeAdminResponse::KeyStatus { status } => status,
                    other => anyhow::bail!("the running edge answered {other:?}"),
                },
            };
            print_status(&status, json);
        }
        KeyCommand::Rotate {
            at,
            data_key_too: false,
            new_key,
        } => {
            let (data, key) = edge_at(at.data_dir, at.config, at.data_key, "--data-dir DIR")?;
            let rotated = match open_at_rest(&data, key.as_deref())? {
                Some(a) => a.rotate_kek(new_key.as_deref())?,
                None => {
                    // The running edge writes the key file: give it a path it can resolve.
                    let new_key = new_key.map(std::path::absolute).transpose()?;
                    match ask_edge(&data, &EdgeAdminRequest::KeyRotate { new_key })? {
                        EdgeAdminResponse::KeyRotated { rotated } => rotated,
                        other => anyhow::bail!("the running edge answered {other:?}"),
                    }
                }
            };
            print_rotated(&rotated);
        }
        KeyCommand::Rotate {
            at,
            data_key_too: true,
            ..
        } => {
            let (data, key) = edge_at(at.data_dir, at.config, at.data_key, "--data-dir DIR")?;
            match open_at_rest(&data, key.as_deref())? {
                Some(a) => {
                    // No edge runs: re-seal here, in the foreground. One killed mid-way is
                    // continued rather than followed by yet another new key.
                    let state = a.vault().key_state();
                    let to = if state.retiring.is_empty() {
                        a.vault().start_data_rotation()?
                    } else {
                        println!(
                            "continuing the unfinished rotation to data key {}",
                            state.current
                        );
                        state.current
                    };
                    println!("data key {to}: re-sealing every stored value");
                    let progress = onshi_sync::sealed::ResealProgress::default();
                    let n = a.vault().reseal(&progress)?;
                    println!("data key rotation finished: {n} values re-sealed with data key {to}");
                }
                None => match ask_edge(&data, &EdgeAdminRequest::KeyRotateData)? {
                    EdgeAdminResponse::KeyStatus { status } => {
                        println!(
                            "the running edge rotates to data key {} in the background; `onshi-edge key status` shows the progress",
                            status.data_key
                        );
                    }
                    other => anyhow::bail!("the running edge answered {other:?}"),
                },
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `backup --out FILE`: written by this process when the edge is stopped, else by the running
/// edge through its admin socket.
fn backup_command(out: PathBuf, at: KeyAt, json: bool) -> anyhow::Result<ExitCode> {
    use onshi_edge::admin::{EdgeAdminRequest, EdgeAdminResponse};
    let (data, key) = edge_at(at.data_dir, at.config, at.data_key, "--data-dir DIR")?;
    // The running edge resolves paths from its own working directory: give it an absolute one.
    let out = std::path::absolute(&out)?;
    let (summary, by) = match open_at_rest(&data, key.as_deref())? {
        Some(a) => (
            onshi_edge::backup::write(&a, &out)?,
            "this process (the edge is stopped)",
        ),
        None => match ask_edge(&data, &EdgeAdminRequest::Backup { out: out.clone() })? {
            EdgeAdminResponse::BackupWritten { summary } => {
                // Under systemd the service has its own /tmp (PrivateTmp=yes): a file it wrote
                // there is not where the person asking looks.
                let seen = std::fs::metadata(&out).map(|m| m.len()).ok();
                anyhow::ensure!(
                    seen == Some(summary.bytes),
                    "the running edge wrote {} ({} bytes), but this process does not see it there \
                     (the service has its own /tmp and view of the file system under systemd): \
                     give a path in its data directory, e.g. {}, then copy the file",
                    out.display(),
                    summary.bytes,
                    data.join("backup.onshi").display()
                );
                (summary, "the running edge")
            }
            other => anyhow::bail!("the running edge answered {other:?}"),
        },
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "backup written by {by} to {} ({} bytes, SHA-256 {}): {} entries in {} trees, files: {}; writes waited {} ms",
            summary.file,
            summary.bytes,
            summary.sha256,
            summary.entries,
            summary.trees,
            if summary.files.is_empty() {
                "none".to_string()
            } else {
                summary.files.join(", ")
            },
            summary.paused_ms
        );
        println!(
            "it opens only with the key-encryption key {}: keep that key, apart from the backup",
            summary.keks.join(" or ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `restore FILE --data DIR`.
fn restore_command(
    file: PathBuf,
    data: PathBuf,
    data_key: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let source = onshi_sync::vault::KeySource::choose(data_key.as_deref(), &data);
    let s = onshi_edge::backup::restore(&file, &data, &source)?;
    println!(
        "restored the backup of {} into {}: {} entries in {} trees, files: {}; key-encryption key {} from {}",
        s.made_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        s.data,
        s.entries,
        s.trees,
        if s.files.is_empty() {
            "none".to_string()
        } else {
            s.files.join(", ")
        },
        s.kek,
        source.path().display()
    );
    println!(
        "start the edge on it with the same key: onshi-edge run --data {} --data-key {} (or data/data_key in its configuration)",
        s.data,
        source.path().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `audit verify`: the chain walked by this process, or by the running edge that holds the store.
fn audit_verify(at: LogAt) -> anyhow::Result<ExitCode> {
    use onshi_edge::admin::{EdgeAdminRequest, EdgeAdminResponse};
    use onshi_sync::audit_chain::short_hex;
    let (data, key) = edge_at(
        at.data,
        at.config,
        at.data_key,
        "--data DIR: the edge's data directory holds the access log",
    )?;
    let verdict = match open_at_rest(&data, key.as_deref())? {
        Some(a) => auth::AuditLog::open(a.store().as_ref())
            .context("opening the access log")?
            .verify()
            .context("reading the access log")?,
        None => match ask_edge(&data, &EdgeAdminRequest::AuditVerify)? {
            EdgeAdminResponse::AuditVerified { verdict } => verdict,
            other => anyhow::bail!("the running edge answered {other:?}"),
        },
    };
    match (&verdict.fault, &verdict.head) {
        (None, None) => println!("access log: no entries; nothing to break"),
        (None, Some(head)) => println!(
            "access log: {} entries, chain intact (head: entry {}, sha256 {}…)",
            verdict.checked,
            head.seq,
            short_hex(&head.hash)
        ),
        (Some(fault), _) => {
            println!("access log: chain broken: {fault}");
            println!(
                "  entries before it hold: {} (the first broken one is named; later ones are not checked)",
                verdict.checked
            );
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Who made a change, for the accounts file's history: the uid running the command and, under
/// sudo, who ran sudo.
fn cli_actor() -> String {
    let uid = rustix::process::getuid().as_raw();
    match std::env::var("SUDO_USER") {
        Ok(by) if !by.is_empty() => format!("cli uid {uid} (sudo by {by})"),
        _ => format!("cli uid {uid}"),
    }
}

/// The password of `--password-stdin`: one line of standard input.
fn password_from_stdin(given: bool) -> anyhow::Result<Password> {
    use std::io::{IsTerminal, Read};
    if !given {
        anyhow::bail!(
            "give the password on standard input with --password-stdin (never on the command line)"
        );
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!(
            "password (one line, at least {} characters; it is shown as typed):",
            auth::password::MIN_PASSWORD_CHARS
        );
    }
    let mut bytes = Vec::new();
    stdin
        .lock()
        .take(auth::password::MAX_PASSWORD_BYTES as u64 + 3)
        .read_to_end(&mut bytes)
        .context("reading the password from standard input")?;
    Ok(Password::from_stdin(&bytes)?)
}

fn user(command: UserCommand) -> anyhow::Result<ExitCode> {
    let now = chrono::Utc::now();
    match command {
        UserCommand::Add {
            name,
            role,
            password_stdin,
            at,
        } => {
            let name = AccountName::parse(&name)?;
            let dir = accounts_at(at)?;
            // Refused before a password is asked for; checked again under the lock.
            let file = dir.read()?;
            if file.user(name.as_str()).is_some() || file.token(name.as_str()).is_some() {
                return Err(auth::AccountsError::NameTaken(name.to_string()).into());
            }
            let hash = auth::password::hash_password(&password_from_stdin(password_stdin)?)?;
            dir.update(|f| f.add_user(name.clone(), role, hash, now, &cli_actor()))?;
            println!("added user {name} ({role})");
        }
        UserCommand::List { at } => {
            let file = accounts_at(at)?.read()?;
            println!("{:<24} {:<10} {:<9} CREATED", "NAME", "ROLE", "STATE");
            for u in &file.users {
                println!(
                    "{:<24} {:<10} {:<9} {}",
                    u.name,
                    u.role,
                    if u.disabled { "disabled" } else { "enabled" },
                    u.created_at.format("%Y-%m-%d %H:%M UTC")
                );
            }
        }
        UserCommand::Disable { name, at } => {
            let dir = accounts_at(at)?;
            if dir.update(|f| f.disable_user(&name, now, &cli_actor()))? {
                println!("disabled user {name}");
            } else {
                println!("user {name} was already disabled");
            }
        }
        UserCommand::Passwd {
            name,
            password_stdin,
            at,
        } => {
            let dir = accounts_at(at)?;
            if dir.read()?.user(&name).is_none() {
                return Err(auth::AccountsError::UnknownUser(name).into());
            }
            let hash = auth::password::hash_password(&password_from_stdin(password_stdin)?)?;
            dir.update(|f| f.set_password(&name, hash, now, &cli_actor()))?;
            println!("changed the password of {name}; their sessions have ended");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    let now = chrono::Utc::now();
    match command {
        TokenCommand::Add { name, role, at } => {
            let name = AccountName::parse(&name)?;
            let dir = accounts_at(at)?;
            let new = auth::NewToken::generate()?;
            dir.update(|f| {
                f.add_token(
                    name.clone(),
                    role,
                    new.id,
                    new.hash.clone(),
                    now,
                    &cli_actor(),
                )
            })?;
            // Only now that it is stored: the token alone on stdout, the note on stderr.
            println!("{}", new.text);
            eprintln!(
                "added token {name} ({role}, id {}): it is shown only this once; give it to the program now",
                new.id
            );
        }
        TokenCommand::List { at } => {
            let file = accounts_at(at)?.read()?;
            println!(
                "{:<24} {:<16} {:<10} {:<28} CREATED",
                "NAME", "ID", "ROLE", "STATE"
            );
            for t in &file.tokens {
                let state = t.revoked_at.map_or_else(
                    || "active".to_string(),
                    |r| format!("revoked {}", r.format("%Y-%m-%d %H:%M UTC")),
                );
                println!(
                    "{:<24} {:<16} {:<10} {:<28} {}",
                    t.name,
                    t.id,
                    t.role,
                    state,
                    t.created_at.format("%Y-%m-%d %H:%M UTC")
                );
            }
        }
        TokenCommand::Revoke { name, at } => {
            let dir = accounts_at(at)?;
            if dir.update(|f| f.revoke_token(&name, now, &cli_actor()))? {
                println!("revoked token {name}");
            } else {
                println!("token {name} was already revoked");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
