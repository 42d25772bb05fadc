//! The edge's configuration: every `run` flag can also be set in a TOML file given with `--config`;
//! a flag given on the command line wins. Validated once, with errors that name the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use onshi_fallback::share::{SharePolicy, SharePolicyError, UnidentifiedRule};
use onshi_model::FacilityCode;

use crate::mode::ModeSettings;
use crate::queue::QueueCaps;
use serde::Deserialize;

/// The default deadline for an online answer (DESIGN.md: 1.5 s).
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(1500);

/// Settings as given (flags or file): every field optional until merged.
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct EdgeSettings {
    /// 10-digit facility code (医療機関コード).
    #[arg(long)]
    pub facility: Option<String>,
    /// Data directory (journal and replica).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The key that protects personal data at rest (64 hex digits; created, 0600, for a new data
    /// directory). Else the systemd credential onshi-data-key; else DATA.key beside the data
    /// directory, with a warning (a key on the same disk protects nothing against theft).
    #[arg(long, value_name = "FILE")]
    pub data_key: Option<PathBuf>,
    /// PKI directory as `onshi-reconciler pki init` lays it out.
    #[arg(long)]
    pub pki: Option<PathBuf>,
    /// The reconciler's QUIC address, e.g. 127.0.0.1:7700 or reconciler.example:7700; several
    /// instances comma-separated (`a:7700,b:7700`; in the file also a list). Each facility tries
    /// them in its own order (a hash of its code) and moves to the next when one fails.
    #[arg(long, value_name = "ADDR[,ADDR…]")]
    pub reconciler: Option<AddressList>,
    /// Address of the local HTTP API, e.g. 127.0.0.1:7600.
    #[arg(long)]
    pub http: Option<String>,
    /// OQS file mailbox directory (req/res/face/err/done are created in it).
    #[arg(long)]
    pub mailbox: Option<PathBuf>,
    /// A request file not known to be complete (no close or rename seen) must keep its size this
    /// long before it is read, in ms (default 200).
    #[arg(long)]
    pub mailbox_settle_ms: Option<u64>,
    /// A request file that stays an incomplete XML document, unchanged, this long is moved to err/,
    /// in ms (default 30000).
    #[arg(long)]
    pub mailbox_incomplete_ms: Option<u64>,
    /// The req/ folder is also listed this often, in case an event was missed (e.g. a network
    /// file system), in ms (default 10000).
    #[arg(long)]
    pub mailbox_rescan_ms: Option<u64>,
    /// Deadline for an online answer, in milliseconds (default 1500).
    #[arg(long)]
    pub deadline_ms: Option<u64>,
    /// How long a better mode must hold before the edge switches to it, in ms (default 10000).
    #[arg(long)]
    pub hold_ms: Option<u64>,
    /// A card reader silent this long is down, in ms (default 10000).
    #[arg(long)]
    pub reader_timeout_ms: Option<u64>,
    /// Collect the full fee (refunded later) from an unidentified patient instead of the age-rule
    /// share (default false).
    #[arg(long)]
    pub unidentified_full_fee: Option<bool>,
    /// Share of 70–74-year-olds for provisional records: 20 or 30 (default 20).
    #[arg(long)]
    pub share_70_74: Option<u8>,
    /// Share of 75+ for provisional records: 10, 20 or 30 (default 10).
    #[arg(long)]
    pub share_75_plus: Option<u8>,
    /// Warn when more than this many items are pending (default 1000).
    #[arg(long)]
    pub queue_max_pending: Option<usize>,
    /// Warn when more than this many yen were collected provisionally (default 1000000).
    #[arg(long)]
    pub queue_max_yen: Option<u64>,
    /// Warn when the oldest pending item is older than this many hours (default 72).
    #[arg(long)]
    pub queue_max_age_h: Option<u64>,
    /// A further name the HTTP API is reached by (the `Host` header), e.g. `onshi.clinic.lan`;
    /// repeat the flag for several. The `--http` address, the address a client connected to,
    /// `localhost` and loopback addresses are always accepted.
    #[arg(long = "http-host", value_name = "NAME")]
    pub http_hosts: Option<Vec<String>>,
    /// A client must send a request's headers within this long, and an idle keep-alive connection
    /// is closed after it, in ms (default 10000).
    #[arg(long)]
    pub http_header_timeout_ms: Option<u64>,
    /// The most HTTP connections open at once (default 4096; never more than the process's file
    /// limit allows after a reserve for the journal and the mailbox).
    #[arg(long)]
    pub http_max_connections: Option<usize>,
    /// The most HTTP connections open at once from one IP address (default 256).
    #[arg(long)]
    pub http_max_connections_per_address: Option<usize>,
    /// A signed-in session ends after this many minutes without a request (default 30).
    #[arg(long)]
    pub session_idle_min: Option<u64>,
    /// The bearer token the command-line clients (`status`, `queue`, `export`, `sync-now`,
    /// `reader-sim`, `audit`) send; `run` ignores it. Only in the file (or `--token` /
    /// `ONSHI_TOKEN` on those commands).
    #[arg(skip)]
    pub token: Option<String>,
    /// The HTTP API's TLS certificate (PEM, the server's certificate first, then its chain): with
    /// `--http-key`, the API is served over HTTPS. Needed for a non-loopback `--http` address
    /// unless `allow_plain_http_on_lan` is set.
    #[arg(long, value_name = "FILE")]
    pub http_cert: Option<PathBuf>,
    /// The private key of `--http-cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    pub http_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback `--http` address without TLS (passwords, tokens and
    /// patients' data then cross the LAN unencrypted; a warning is logged at every start).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub allow_plain_http_on_lan: Option<bool>,
    /// A card reader this facility has (its `reader_id`); repeat the flag for several (`readers =
    /// ["R1","R2"]` in the file). A configured reader not heard within reader_timeout_ms of the
    /// start is down; a reader that posts but is not configured is tracked too.
    #[arg(long = "reader", value_name = "ID")]
    pub readers: Option<Vec<String>>,
}

impl EdgeSettings {
    /// `self` (the command line) wins over `file`.
    pub fn or(self, file: EdgeSettings) -> EdgeSettings {
        EdgeSettings {
            facility: self.facility.or(file.facility),
            data: self.data.or(file.data),
            data_key: self.data_key.or(file.data_key),
            pki: self.pki.or(file.pki),
            reconciler: self.reconciler.or(file.reconciler),
            http: self.http.or(file.http),
            mailbox: self.mailbox.or(file.mailbox),
            mailbox_settle_ms: self.mailbox_settle_ms.or(file.mailbox_settle_ms),
            mailbox_incomplete_ms: self.mailbox_incomplete_ms.or(file.mailbox_incomplete_ms),
            mailbox_rescan_ms: self.mailbox_rescan_ms.or(file.mailbox_rescan_ms),
            deadline_ms: self.deadline_ms.or(file.deadline_ms),
            hold_ms: self.hold_ms.or(file.hold_ms),
            reader_timeout_ms: self.reader_timeout_ms.or(file.reader_timeout_ms),
            unidentified_full_fee: self.unidentified_full_fee.or(file.unidentified_full_fee),
            share_70_74: self.share_70_74.or(file.share_70_74),
            share_75_plus: self.share_75_plus.or(file.share_75_plus),
            queue_max_pending: self.queue_max_pending.or(file.queue_max_pending),
            queue_max_yen: self.queue_max_yen.or(file.queue_max_yen),
            queue_max_age_h: self.queue_max_age_h.or(file.queue_max_age_h),
            http_hosts: self.http_hosts.or(file.http_hosts),
            http_header_timeout_ms: self.http_header_timeout_ms.or(file.http_header_timeout_ms),
            http_max_connections: self.http_max_connections.or(file.http_max_connections),
            http_max_connections_per_address: self
                .http_max_connections_per_address
                .or(file.http_max_connections_per_address),
            session_idle_min: self.session_idle_min.or(file.session_idle_min),
            token: self.token.or(file.token),
            http_cert: self.http_cert.or(file.http_cert),
            http_key: self.http_key.or(file.http_key),
            allow_plain_http_on_lan: self
                .allow_plain_http_on_lan
                .or(file.allow_plain_http_on_lan),
            readers: self.readers.or(file.readers),
        }
    }

    pub fn from_file(path: &Path) -> Result<EdgeSettings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("--config", format!("cannot read {}: {e}", path.display()))
        })?;
        toml::from_str(&text)
            .map_err(|e| ConfigError::new("--config", format!("{}: {e}", path.display())))
    }
}

/// The reconciler addresses as given: a comma-separated string (the flag, or the file's string
/// form) or the file's list of strings. Checked by [`Reconcilers::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressList(pub Vec<String>);

impl std::str::FromStr for AddressList {
    type Err = std::convert::Infallible;

    /// Never fails: an empty or repeated entry is refused by [`Reconcilers::resolve`], which names
    /// the setting whichever way it was given.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(AddressList(
            s.split(',').map(|a| a.trim().to_string()).collect(),
        ))
    }
}

impl<'de> Deserialize<'de> for AddressList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        match Form::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "reconciler: expected an address (\"host:port\"), several comma-separated, \
                 or a list of addresses",
            )
        })? {
            Form::One(s) => Ok(s.parse().unwrap_or_else(|e| match e {})),
            Form::Many(v) => Ok(AddressList(
                v.into_iter().map(|a| a.trim().to_string()).collect(),
            )),
        }
    }
}

/// One reconciler instance: its address as written (what the order is computed from, so it does
/// not change when DNS does) and what it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcilerAddr {
    pub written: String,
    pub addr: SocketAddr,
}

/// The reconciler instances in the order this facility tries them ([`crate::rendezvous`]); never
/// empty, no address twice. Compared as a whole on reload: a changed list needs a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconcilers(Vec<ReconcilerAddr>);

impl Reconcilers {
    /// One instance (the demo, tests).
    pub fn single(addr: SocketAddr) -> Self {
        Reconcilers(vec![ReconcilerAddr {
            written: addr.to_string(),
            addr,
        }])
    }

    /// Resolves and checks `list` (no empty entry, none twice as written or as resolved) and puts
    /// it in `facility`'s order.
    pub fn resolve(
        setting: &str,
        list: &AddressList,
        facility: &FacilityCode,
    ) -> Result<Self, ConfigError> {
        let mut out: Vec<ReconcilerAddr> = Vec::with_capacity(list.0.len());
        for written in &list.0 {
            if written.is_empty() {
                return Err(ConfigError::new(
                    setting,
                    format!("'{}' has an empty address", list.0.join(",")),
                ));
            }
            if out.iter().any(|r| r.written.eq_ignore_ascii_case(written)) {
                return Err(ConfigError::new(
                    setting,
                    format!("'{written}' is given twice"),
                ));
            }
            let addr = resolve(setting, written)?;
            if let Some(same) = out.iter().find(|r| r.addr == addr) {
                return Err(ConfigError::new(
                    setting,
                    format!(
                        "'{}' and '{written}' are the same address ({addr}): give each instance once",
                        same.written
                    ),
                ));
            }
            out.push(ReconcilerAddr {
                written: written.clone(),
                addr,
            });
        }
        let written: Vec<String> = out.iter().map(|r| r.written.clone()).collect();
        let order = crate::rendezvous::order(facility.as_str(), &written);
        Ok(Reconcilers(
            order.into_iter().map(|i| out[i].clone()).collect(),
        ))
    }

    /// In this facility's order; the first is tried first.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.0.iter().map(|r| r.addr).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ReconcilerAddr> {
        self.0.iter()
    }
}

impl std::fmt::Display for Reconcilers {
    /// `a:7700 (10.0.0.1:7700), b:7700 (10.0.0.2:7700)` in the facility's order; an address
    /// written as its own resolution appears once.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if r.written == r.addr.to_string() {
                write!(f, "{}", r.addr)?;
            } else {
                write!(f, "{} ({})", r.written, r.addr)?;
            }
        }
        Ok(())
    }
}

/// A setting that is missing or wrong.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    pub setting: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(setting: &str, message: impl Into<String>) -> Self {
        ConfigError {
            setting: setting.to_string(),
            message: message.into(),
        }
    }
}

/// The settings that can change while the edge runs (reloaded on SIGHUP or when the file changes).
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeSettings {
    pub deadline: Duration,
    pub mode: ModeSettings,
    pub reader_timeout: Duration,
    pub share: SharePolicy,
    pub queue: QueueCaps,
}

impl RuntimeSettings {
    /// What changed from `self` to `new`, one line per setting, for the log.
    pub fn changes(&self, new: &RuntimeSettings) -> Vec<String> {
        let mut out = Vec::new();
        let mut diff = |key: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{key}: {a} → {b}"));
            }
        };
        diff(
            "deadline_ms",
            self.deadline.as_millis().to_string(),
            new.deadline.as_millis().to_string(),
        );
        diff(
            "hold_ms",
            self.mode.hold.as_millis().to_string(),
            new.mode.hold.as_millis().to_string(),
        );
        diff(
            "reader_timeout_ms",
            self.reader_timeout.as_millis().to_string(),
            new.reader_timeout.as_millis().to_string(),
        );
        diff(
            "share_70_74",
            self.share.age70_74_percent().to_string(),
            new.share.age70_74_percent().to_string(),
        );
        diff(
            "share_75_plus",
            self.share.age75_plus_percent().to_string(),
            new.share.age75_plus_percent().to_string(),
        );
        diff(
            "unidentified_full_fee",
            format!("{:?}", self.share.unidentified()),
            format!("{:?}", new.share.unidentified()),
        );
        diff(
            "queue_max_pending",
            self.queue.max_pending.to_string(),
            new.queue.max_pending.to_string(),
        );
        diff(
            "queue_max_yen",
            self.queue.max_provisional_yen.to_string(),
            new.queue.max_provisional_yen.to_string(),
        );
        diff(
            "queue_max_age_h",
            (self.queue.max_age_s / 3600).to_string(),
            (new.queue.max_age_s / 3600).to_string(),
        );
        out
    }
}

/// The live runtime settings, shared by everything that reads them.
#[derive(Debug, Clone)]
pub struct Live(std::sync::Arc<std::sync::RwLock<RuntimeSettings>>);

impl Live {
    pub fn new(s: RuntimeSettings) -> Self {
        Live(std::sync::Arc::new(std::sync::RwLock::new(s)))
    }

    pub fn get(&self) -> RuntimeSettings {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, s: RuntimeSettings) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = s;
    }
}

/// How the mailbox decides a request file is complete, and how often it lists `req/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxTiming {
    pub settle: Duration,
    pub incomplete_timeout: Duration,
    pub rescan: Duration,
}

impl Default for MailboxTiming {
    fn default() -> Self {
        MailboxTiming {
            settle: Duration::from_millis(200),
            incomplete_timeout: Duration::from_secs(30),
            rescan: Duration::from_secs(10),
        }
    }
}

impl MailboxTiming {
    fn from_settings(s: &EdgeSettings) -> Result<Self, ConfigError> {
        let d = MailboxTiming::default();
        let ms = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
        let t = MailboxTiming {
            settle: ms(s.mailbox_settle_ms, d.settle),
            incomplete_timeout: ms(s.mailbox_incomplete_ms, d.incomplete_timeout),
            rescan: ms(s.mailbox_rescan_ms, d.rescan),
        };
        if t.settle.is_zero() || t.settle > Duration::from_secs(10) {
            return Err(ConfigError::new(
                "--mailbox-settle-ms",
                "must be between 1 and 10000 milliseconds",
            ));
        }
        if t.incomplete_timeout < t.settle || t.incomplete_timeout > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "--mailbox-incomplete-ms",
                format!(
                    "must be between mailbox_settle_ms ({}) and 3600000 milliseconds",
                    t.settle.as_millis()
                ),
            ));
        }
        if t.rescan < Duration::from_millis(100) || t.rescan > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "--mailbox-rescan-ms",
                "must be between 100 and 3600000 milliseconds",
            ));
        }
        Ok(t)
    }
}

/// Checks the mailbox folder: absolute, and a directory if it exists (else it is created at start).
fn mailbox_dir(dir: Option<PathBuf>) -> Result<Option<PathBuf>, ConfigError> {
    let Some(dir) = dir else { return Ok(None) };
    if !dir.is_absolute() {
        return Err(ConfigError::new(
            "--mailbox",
            format!("{} is not an absolute path", dir.display()),
        ));
    }
    if dir.exists() && !dir.is_dir() {
        return Err(ConfigError::new(
            "--mailbox",
            format!("{} exists and is not a directory", dir.display()),
        ));
    }
    Ok(Some(dir))
}

/// How the HTTP server guards itself: the names it answers to, its timeout and connection limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Extra names accepted in `Host` (lower case), beyond the addresses and loopback names.
    pub hosts: Vec<String>,
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            hosts: Vec::new(),
            header_timeout: Duration::from_secs(10),
            // Generous: a facility has a few receipt computers and browsers; the load benchmark
            // holds 64 keep-alive connections from one address.
            max_connections: 4096,
            max_connections_per_address: 256,
        }
    }
}

impl HttpSettings {
    fn from_settings(s: &EdgeSettings) -> Result<Self, ConfigError> {
        let d = HttpSettings::default();
        let mut hosts = Vec::new();
        for h in s.http_hosts.iter().flatten() {
            let name = h.trim().trim_end_matches('.').to_ascii_lowercase();
            let ok = !name.is_empty()
                && name.len() <= 253
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
            if !ok {
                return Err(ConfigError::new(
                    "--http-host",
                    format!(
                        "'{h}' is not a host name (letters, digits, '-', '.', no port; addresses are always accepted)"
                    ),
                ));
            }
            hosts.push(name);
        }
        let header_timeout = s
            .http_header_timeout_ms
            .map_or(d.header_timeout, Duration::from_millis);
        if header_timeout < Duration::from_millis(100) || header_timeout > Duration::from_secs(600)
        {
            return Err(ConfigError::new(
                "--http-header-timeout-ms",
                "must be between 100 and 600000 milliseconds",
            ));
        }
        let max_connections = s.http_max_connections.unwrap_or(d.max_connections);
        if !(16..=1_000_000).contains(&max_connections) {
            return Err(ConfigError::new(
                "--http-max-connections",
                "must be between 16 and 1000000",
            ));
        }
        let per_address = s
            .http_max_connections_per_address
            .unwrap_or(d.max_connections_per_address);
        if per_address == 0 || per_address > max_connections {
            return Err(ConfigError::new(
                "--http-max-connections-per-address",
                format!("must be between 1 and http_max_connections ({max_connections})"),
            ));
        }
        Ok(HttpSettings {
            hosts,
            header_timeout,
            max_connections,
            max_connections_per_address: per_address,
        })
    }
}

/// The validated configuration of a running edge.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub facility: FacilityCode,
    pub data: PathBuf,
    /// `--data-key`: see [`onshi_sync::vault::KeySource::choose`].
    pub data_key: Option<PathBuf>,
    pub pki: PathBuf,
    /// The reconciler instances, in this facility's order.
    pub reconciler: Reconcilers,
    pub http: SocketAddr,
    pub http_settings: HttpSettings,
    /// How the HTTP API is served: TLS (certificate and key files), or plain.
    pub http_transport: HttpTransport,
    /// The configured card readers' ids.
    pub readers: Vec<String>,
    pub mailbox: Option<PathBuf>,
    pub mailbox_timing: MailboxTiming,
    pub deadline: Duration,
    pub mode: ModeSettings,
    pub reader_timeout: Duration,
    pub share: SharePolicy,
    pub queue: QueueCaps,
    /// A signed-in session ends after this long without a request.
    pub session_idle: Duration,
}

fn share_policy(
    full: Option<bool>,
    s70: Option<u8>,
    s75: Option<u8>,
) -> Result<SharePolicy, ConfigError> {
    let d = SharePolicy::default();
    let rule = if full.unwrap_or(false) {
        UnidentifiedRule::FullFee
    } else {
        UnidentifiedRule::AgeRule
    };
    SharePolicy::new(
        s70.unwrap_or(d.age70_74_percent()),
        s75.unwrap_or(d.age75_plus_percent()),
        rule,
    )
    .map_err(|e| match e {
        SharePolicyError::Age70To74(v) => {
            ConfigError::new("--share-70-74", format!("{v} is not 20 or 30"))
        }
        SharePolicyError::Age75Plus(v) => {
            ConfigError::new("--share-75-plus", format!("{v} is not 10, 20 or 30"))
        }
    })
}

/// How the HTTP API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpTransport {
    /// Plain HTTP on a loopback address: nothing leaves the machine.
    Loopback,
    /// HTTPS with this certificate (chain) and key, PEM files.
    Tls { cert: PathBuf, key: PathBuf },
    /// Plain HTTP on a non-loopback address, because `allow_plain_http_on_lan = true` says so.
    PlainOnLan,
}

/// The rule for listening beyond loopback: a non-loopback address (a wildcard such as 0.0.0.0
/// included: it listens on the LAN too) needs TLS, or the explicit setting for plain HTTP.
pub(crate) fn http_transport(
    http: SocketAddr,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    allow_plain_on_lan: bool,
) -> Result<HttpTransport, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(HttpTransport::Tls { cert, key }),
        (Some(_), None) => Err(ConfigError::new(
            "--http-key",
            "is required with --http-cert (the certificate's private key, PEM)",
        )),
        (None, Some(_)) => Err(ConfigError::new(
            "--http-cert",
            "is required with --http-key (the certificate, PEM)",
        )),
        (None, None) if http.ip().to_canonical().is_loopback() => Ok(HttpTransport::Loopback),
        (None, None) if allow_plain_on_lan => Ok(HttpTransport::PlainOnLan),
        (None, None) => Err(ConfigError::new(
            "--http",
            format!(
                "{http} is not a loopback address: serving the API beyond this machine needs TLS \
                 (--http-cert FILE and --http-key FILE), or plain HTTP chosen knowingly with \
                 allow_plain_http_on_lan = true (--allow-plain-http-on-lan)"
            ),
        )),
    }
}

/// The configured readers: valid ids, no duplicates, at most [`crate::reader::MAX_READERS`].
fn readers(ids: Option<Vec<String>>) -> Result<Vec<String>, ConfigError> {
    let ids = ids.unwrap_or_default();
    if ids.len() > crate::reader::MAX_READERS {
        return Err(ConfigError::new(
            "--reader",
            format!(
                "{} readers; at most {}",
                ids.len(),
                crate::reader::MAX_READERS
            ),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for id in &ids {
        crate::reader::check_reader_id("--reader", id).map_err(|e| {
            let reason = e.message.trim_start_matches("--reader: ").to_string();
            ConfigError::new("--reader", reason)
        })?;
        if !seen.insert(id.as_str()) {
            return Err(ConfigError::new(
                "--reader",
                format!("'{id}' is given twice"),
            ));
        }
    }
    Ok(ids)
}

fn required<T>(v: Option<T>, setting: &str) -> Result<T, ConfigError> {
    v.ok_or_else(|| ConfigError::new(setting, "is required (as a flag or in the --config file)"))
}

fn resolve(setting: &str, addr: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map_err(|e| {
            ConfigError::new(setting, format!("'{addr}' is not a host:port address: {e}"))
        })?
        .next()
        .ok_or_else(|| ConfigError::new(setting, format!("'{addr}' resolves to no address")))
}

impl EdgeConfig {
    pub fn runtime(&self) -> RuntimeSettings {
        RuntimeSettings {
            deadline: self.deadline,
            mode: self.mode,
            reader_timeout: self.reader_timeout,
            share: self.share,
            queue: self.queue,
        }
    }

    /// Settings that only take effect after a restart, if they differ.
    pub fn restart_needed(&self, new: &EdgeConfig) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.facility != new.facility {
            out.push("facility");
        }
        if self.data != new.data {
            out.push("data");
        }
        if self.data_key != new.data_key {
            out.push("data_key");
        }
        if self.pki != new.pki {
            out.push("pki");
        }
        if self.reconciler != new.reconciler {
            out.push("reconciler");
        }
        if self.http != new.http {
            out.push("http");
        }
        if self.http_transport != new.http_transport {
            out.push("http_cert/http_key/allow_plain_http_on_lan");
        }
        if self.readers != new.readers {
            out.push("readers");
        }
        if self.http_settings != new.http_settings {
            out.push("http_hosts/http_header_timeout_ms/http_max_connections*");
        }
        if self.mailbox != new.mailbox {
            out.push("mailbox");
        }
        if self.session_idle != new.session_idle {
            out.push("session_idle_min");
        }
        if self.mailbox_timing != new.mailbox_timing {
            out.push("mailbox_settle_ms/mailbox_incomplete_ms/mailbox_rescan_ms");
        }
        out
    }
}

impl TryFrom<EdgeSettings> for EdgeConfig {
    type Error = ConfigError;

    fn try_from(s: EdgeSettings) -> Result<Self, ConfigError> {
        let mailbox_timing = MailboxTiming::from_settings(&s)?;
        let http_settings = HttpSettings::from_settings(&s)?;
        let facility = required(s.facility, "--facility")?;
        let facility = FacilityCode::parse(&facility)
            .map_err(|e| ConfigError::new("--facility", e.message))?;
        let deadline =
            Duration::from_millis(s.deadline_ms.unwrap_or(DEFAULT_DEADLINE.as_millis() as u64));
        if deadline.is_zero() || deadline > Duration::from_secs(30) {
            return Err(ConfigError::new(
                "--deadline-ms",
                "must be between 1 and 30000 milliseconds",
            ));
        }
        let session_idle = match s.session_idle_min {
            None => crate::auth::session::DEFAULT_IDLE,
            Some(m) if (1..=24 * 60).contains(&m) => Duration::from_secs(m * 60),
            Some(m) => {
                return Err(ConfigError::new(
                    "--session-idle-min",
                    format!("{m} is not between 1 and 1440 minutes"),
                ));
            }
        };
        let http = resolve("--http", &required(s.http, "--http")?)?;
        let http_transport = http_transport(
            http,
            s.http_cert,
            s.http_key,
            s.allow_plain_http_on_lan.unwrap_or(false),
        )?;
        let reconciler = Reconcilers::resolve(
            "--reconciler",
            &required(s.reconciler, "--reconciler")?,
            &facility,
        )?;
        Ok(EdgeConfig {
            session_idle,
            facility,
            data: required(s.data, "--data")?,
            data_key: s.data_key,
            pki: required(s.pki, "--pki")?,
            reconciler,
            http,
            http_settings,
            http_transport,
            readers: readers(s.readers)?,
            mailbox: mailbox_dir(s.mailbox)?,
            mailbox_timing,
            deadline,
            mode: ModeSettings {
                hold: Duration::from_millis(s.hold_ms.unwrap_or(10_000)),
                ..ModeSettings::default()
            },
            reader_timeout: Duration::from_millis(s.reader_timeout_ms.unwrap_or(10_000)),
            share: share_policy(s.unidentified_full_fee, s.share_70_74, s.share_75_plus)?,
            queue: QueueCaps {
                max_pending: s
                    .queue_max_pending
                    .unwrap_or(QueueCaps::default().max_pending),
                max_provisional_yen: s
                    .queue_max_yen
                    .unwrap_or(QueueCaps::default().max_provisional_yen),
                max_age_s: s
                    .queue_max_age_h
                    .map_or(QueueCaps::default().max_age_s, |h| h * 3600),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> EdgeSettings {
        EdgeSettings {
            facility: Some("1311234567".into()),
            data: Some("/tmp/d".into()),
            pki: Some("/tmp/p".into()),
            reconciler: Some("127.0.0.1:7700".parse().unwrap()),
            http: Some("127.0.0.1:7600".into()),
            mailbox: None,
            deadline_ms: None,
            ..Default::default()
        }
    }

    #[test]
    fn command_line_wins_over_file_and_defaults_apply() {
        let file: EdgeSettings = toml::from_str(
            "facility = \"1311234567\"\ndata = \"/var/lib/onshi\"\ndeadline_ms = 900\n",
        )
        .unwrap();
        let cli = EdgeSettings {
            data: Some("/tmp/cli".into()),
            ..Default::default()
        };
        let merged = cli.or(file);
        assert_eq!(merged.data, Some(PathBuf::from("/tmp/cli")));
        assert_eq!(merged.deadline_ms, Some(900));
        let c = EdgeConfig::try_from(full()).unwrap();
        assert_eq!(c.deadline, DEFAULT_DEADLINE);
    }

    #[test]
    fn errors_name_the_setting() {
        let e = EdgeConfig::try_from(EdgeSettings {
            facility: None,
            ..full()
        })
        .unwrap_err();
        assert_eq!(e.setting, "--facility");
        let e = EdgeConfig::try_from(EdgeSettings {
            facility: Some("1321234567".into()),
            ..full()
        })
        .unwrap_err();
        assert!(
            e.to_string().starts_with("--facility: fee-table digit"),
            "{e}"
        );
        let e = EdgeConfig::try_from(EdgeSettings {
            http: Some("nowhere".into()),
            ..full()
        })
        .unwrap_err();
        assert_eq!(e.setting, "--http");
        let e = EdgeConfig::try_from(EdgeSettings {
            deadline_ms: Some(0),
            ..full()
        })
        .unwrap_err();
        assert_eq!(e.setting, "--deadline-ms");
        assert!(toml::from_str::<EdgeSettings>("facilty = \"1\"").is_err());
    }

    #[test]
    fn http_settings_are_read_and_checked() {
        let file: EdgeSettings =
            toml::from_str("http_hosts = [\"Onshi.Clinic.LAN.\"]\nhttp_max_connections = 512\n")
                .unwrap();
        let c = EdgeConfig::try_from(EdgeSettings { ..full() }.or(file)).unwrap();
        assert_eq!(c.http_settings.hosts, vec!["onshi.clinic.lan".to_string()]);
        assert_eq!(c.http_settings.max_connections, 512);
        assert_eq!(c.http_settings.max_connections_per_address, 256);
        let e = EdgeConfig::try_from(EdgeSettings {
            http_hosts: Some(vec!["evil.example:80".into()]),
            ..full()
        })
        .unwrap_err();
        assert_eq!(e.setting, "--http-host");
        let e = EdgeConfig::try_from(EdgeSettings {
            http_max_connections_per_address: Some(5000),
            ..full()
        })
        .unwrap_err();
        assert_eq!(e.setting, "--http-max-connections-per-address");
    }

    #[test]
    fn a_non_loopback_address_needs_tls_or_the_explicit_setting() {
        let lan = |more: EdgeSettings| {
            EdgeConfig::try_from(EdgeSettings {
                http: Some("0.0.0.0:7600".into()),
                ..more
            })
        };
        let e = lan(full()).unwrap_err();
        assert_eq!(e.setting, "--http");
        for way_out in ["--http-cert", "--http-key", "allow_plain_http_on_lan"] {
            assert!(e.message.contains(way_out), "{e}");
        }
        let c = lan(EdgeSettings {
            allow_plain_http_on_lan: Some(true),
            ..full()
        })
        .unwrap();
        assert_eq!(c.http_transport, HttpTransport::PlainOnLan);
        let c = lan(EdgeSettings {
            http_cert: Some("/etc/onshi/http.pem".into()),
            http_key: Some("/etc/onshi/http.key".into()),
            ..full()
        })
        .unwrap();
        assert!(matches!(c.http_transport, HttpTransport::Tls { .. }));
        let e = lan(EdgeSettings {
            http_cert: Some("/etc/onshi/http.pem".into()),
            ..full()
        })
        .unwrap_err();
        assert_eq!(e.setting, "--http-key");
        // Loopback (any 127/8 address, ::1) stays plain without a word; the file's setting works.
        for http in ["127.0.0.1:7600", "127.0.0.2:7600", "[::1]:7600"] {
            let c = EdgeConfig::try_from(EdgeSettings {
                http: Some(http.into()),
                ..full()
            })
            .unwrap();
            assert_eq!(c.http_transport, HttpTransport::Loopback, "{http}");
        }
        let file: EdgeSettings = toml::from_str("allow_plain_http_on_lan = true\n").unwrap();
        let c = lan(full().or(file)).unwrap();
        assert_eq!(c.http_transport, HttpTransport::PlainOnLan);
    }

    #[test]
    fn several_reconcilers_are_read_in_every_form_and_ordered_for_the_facility() {
        let written = |c: &EdgeConfig| {
            c.reconciler
                .iter()
                .map(|r| r.written.clone())
                .collect::<Vec<_>>()
        };
        let flag = EdgeConfig::try_from(EdgeSettings {
            reconciler: Some(
                "127.0.0.1:7701, 127.0.0.1:7702,127.0.0.1:7703"
                    .parse()
                    .unwrap(),
            ),
            ..full()
        })
        .unwrap();
        let string: EdgeSettings =
            toml::from_str("reconciler = \"127.0.0.1:7703,127.0.0.1:7701,127.0.0.1:7702\"\n")
                .unwrap();
        let array: EdgeSettings = toml::from_str(
            "reconciler = [\"127.0.0.1:7702\", \"127.0.0.1:7703\", \"127.0.0.1:7701\"]\n",
        )
        .unwrap();
        let from = |file: EdgeSettings| {
            EdgeConfig::try_from(
                EdgeSettings {
                    reconciler: None,
                    ..full()
                }
                .or(file),
            )
            .unwrap()
        };
        // However written, the same facility's order (the rendezvous order, not the list's).
        let order = crate::rendezvous::order(
            "1311234567",
            &[
                "127.0.0.1:7701".into(),
                "127.0.0.1:7702".into(),
                "127.0.0.1:7703".into(),
            ],
        );
        let expected: Vec<String> = order
            .iter()
            .map(|i| format!("127.0.0.1:770{}", i + 1))
            .collect();
        assert_eq!(written(&flag), expected);
        assert_eq!(from(string.clone()).reconciler, flag.reconciler);
        assert_eq!(from(array).reconciler, flag.reconciler);
        assert_eq!(flag.reconciler.addrs()[0], expected[0].parse().unwrap());
        // The single address as before: itself, from the flag or the file's string.
        let one = EdgeConfig::try_from(full()).unwrap();
        assert_eq!(
            one.reconciler.addrs(),
            vec!["127.0.0.1:7700".parse().unwrap()]
        );
        assert_eq!(one.reconciler.to_string(), "127.0.0.1:7700");
        let file: EdgeSettings = toml::from_str("reconciler = \"127.0.0.1:7700\"\n").unwrap();
        assert_eq!(from(file).reconciler, one.reconciler);
        // A changed list needs a restart, like a changed address; the same list reordered does not.
        assert_eq!(one.restart_needed(&flag), vec!["reconciler"]);
        assert!(flag.restart_needed(&from(string)).is_empty());
    }

    #[test]
    fn a_bad_reconciler_list_is_refused_naming_the_setting() {
        for (bad, why) in [
            ("127.0.0.1:7701,127.0.0.1:7701", "given twice"),
            (
                "127.0.0.1:7701,127.0.0.1:7702,127.0.0.1:7701",
                "given twice",
            ),
            ("127.0.0.1:7701,,127.0.0.1:7702", "empty address"),
            ("127.0.0.1:7701,", "empty address"),
            ("", "empty address"),
            ("127.0.0.1:7701,nowhere", "not a host:port"),
            ("127.0.0.1:7701,127.0.0.1:07701", "the same address"),
        ] {
            let e = EdgeConfig::try_from(EdgeSettings {
                reconciler: Some(bad.parse().unwrap()),
                ..full()
            })
            .unwrap_err();
            assert_eq!(e.setting, "--reconciler", "{bad}");
            assert!(e.message.contains(why), "{bad}: {e}");
        }
        let file: EdgeSettings =
            toml::from_str("reconciler = [\"127.0.0.1:7701\", \"127.0.0.1:7701\"]\n").unwrap();
        let e = EdgeConfig::try_from(
            EdgeSettings {
                reconciler: None,
                ..full()
            }
            .or(file),
        )
        .unwrap_err();
        assert_eq!(e.setting, "--reconciler");
        for bad in ["reconciler = 7700\n", "reconciler = [7700]\n"] {
            let e = toml::from_str::<EdgeSettings>(bad).unwrap_err();
            assert!(e.to_string().contains("reconciler"), "{bad}: {e}");
        }
    }

    #[test]
    fn readers_are_read_from_flags_or_the_file_and_checked() {
        let file: EdgeSettings = toml::from_str("readers = [\"R1\", \"R2\"]\n").unwrap();
        let c = EdgeConfig::try_from(full().or(file)).unwrap();
        assert_eq!(c.readers, vec!["R1".to_string(), "R2".to_string()]);
        for bad in [vec!["R1", "R1"], vec!["R 1"], vec![""]] {
            let e = EdgeConfig::try_from(EdgeSettings {
                readers: Some(bad.iter().map(|s| s.to_string()).collect()),
                ..full()
            })
            .unwrap_err();
            assert_eq!(e.setting, "--reader", "{bad:?}");
        }
    }
}
