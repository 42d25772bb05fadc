//! The edge's configuration: every `run` flag can also be set in a TOML file given with `--config`;
//! a flag given on the command line wins. Validated once, with errors that name the setting.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use onshi_model::FacilityCode;
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
    /// PKI directory as `onshi-reconciler pki init` lays it out.
    #[arg(long)]
    pub pki: Option<PathBuf>,
    /// The reconciler's QUIC address, e.g. 127.0.0.1:7700 or reconciler.example:7700.
    #[arg(long)]
    pub reconciler: Option<String>,
    /// Address of the local HTTP API, e.g. 127.0.0.1:7600.
    #[arg(long)]
    pub http: Option<String>,
    /// OQS file mailbox directory (req/res/face/err).
    #[arg(long)]
    pub mailbox: Option<PathBuf>,
    /// Deadline for an online answer, in milliseconds (default 1500).
    #[arg(long)]
    pub deadline_ms: Option<u64>,
}

impl EdgeSettings {
    /// `self` (the command line) wins over `file`.
    pub fn or(self, file: EdgeSettings) -> EdgeSettings {
        EdgeSettings {
            facility: self.facility.or(file.facility),
            data: self.data.or(file.data),
            pki: self.pki.or(file.pki),
            reconciler: self.reconciler.or(file.reconciler),
            http: self.http.or(file.http),
            mailbox: self.mailbox.or(file.mailbox),
            deadline_ms: self.deadline_ms.or(file.deadline_ms),
        }
    }

    pub fn from_file(path: &Path) -> Result<EdgeSettings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new("--config", format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ConfigError::new("--config", format!("{}: {e}", path.display())))
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
        ConfigError { setting: setting.to_string(), message: message.into() }
    }
}

/// The validated configuration of a running edge.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub facility: FacilityCode,
    pub data: PathBuf,
    pub pki: PathBuf,
    pub reconciler: SocketAddr,
    pub http: SocketAddr,
    pub mailbox: Option<PathBuf>,
    pub deadline: Duration,
}

fn required<T>(v: Option<T>, setting: &str) -> Result<T, ConfigError> {
    v.ok_or_else(|| ConfigError::new(setting, "is required (as a flag or in the --config file)"))
}

fn resolve(setting: &str, addr: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map_err(|e| ConfigError::new(setting, format!("'{addr}' is not a host:port address: {e}")))?
        .next()
        .ok_or_else(|| ConfigError::new(setting, format!("'{addr}' resolves to no address")))
}

impl TryFrom<EdgeSettings> for EdgeConfig {
    type Error = ConfigError;

    fn try_from(s: EdgeSettings) -> Result<Self, ConfigError> {
        let facility = required(s.facility, "--facility")?;
        let facility = FacilityCode::parse(&facility).map_err(|e| ConfigError::new("--facility", e.message))?;
        let deadline = Duration::from_millis(s.deadline_ms.unwrap_or(DEFAULT_DEADLINE.as_millis() as u64));
        if deadline.is_zero() || deadline > Duration::from_secs(30) {
            return Err(ConfigError::new("--deadline-ms", "must be between 1 and 30000 milliseconds"));
        }
        Ok(EdgeConfig {
            facility,
            data: required(s.data, "--data")?,
            pki: required(s.pki, "--pki")?,
            reconciler: resolve("--reconciler", &required(s.reconciler, "--reconciler")?)?,
            http: resolve("--http", &required(s.http, "--http")?)?,
            mailbox: s.mailbox,
            deadline,
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
            reconciler: Some("127.0.0.1:7700".into()),
            http: Some("127.0.0.1:7600".into()),
            mailbox: None,
            deadline_ms: None,
        }
    }

    #[test]
    fn command_line_wins_over_file_and_defaults_apply() {
        let file: EdgeSettings = toml::from_str("facility = \"1311234567\"\ndata = \"/var/lib/onshi\"\ndeadline_ms = 900\n").unwrap();
        let cli = EdgeSettings { data: Some("/tmp/cli".into()), ..Default::default() };
        let merged = cli.or(file);
        assert_eq!(merged.data, Some(PathBuf::from("/tmp/cli")));
        assert_eq!(merged.deadline_ms, Some(900));
        let c = EdgeConfig::try_from(full()).unwrap();
        assert_eq!(c.deadline, DEFAULT_DEADLINE);
    }

    #[test]
    fn errors_name_the_setting() {
        let e = EdgeConfig::try_from(EdgeSettings { facility: None, ..full() }).unwrap_err();
        assert_eq!(e.setting, "--facility");
        let e = EdgeConfig::try_from(EdgeSettings { facility: Some("1321234567".into()), ..full() }).unwrap_err();
        assert!(e.to_string().starts_with("--facility: fee-table digit"), "{e}");
        let e = EdgeConfig::try_from(EdgeSettings { http: Some("nowhere".into()), ..full() }).unwrap_err();
        assert_eq!(e.setting, "--http");
        let e = EdgeConfig::try_from(EdgeSettings { deadline_ms: Some(0), ..full() }).unwrap_err();
        assert_eq!(e.setting, "--deadline-ms");
        assert!(toml::from_str::<EdgeSettings>("facilty = \"1\"").is_err());
    }
}
