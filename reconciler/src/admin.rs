//! The operators' commands on the centre's data (`import`, `outage …`, `facility …`,
//! `audit verify`, `key …`), carried out
//! in one place ([`execute`]) whichever way they reach the store:
//! - PostgreSQL: the command connects and runs them itself; every `serve` sees the result (the
//!   registry's change feed, the grants read at each search, the facilities' version);
//! - embedded, no `serve` running: the command opens the sled directory itself;
//! - embedded, `serve` running: sled allows one process, so the command hands each request to the
//!   running `serve` over its admin socket `DATA/admin.sock` (a Unix socket, 0600 in the 0700 data
//!   directory: only the service user reaches it), one JSON line each way.
//!
//! Must never: act on a request it cannot parse (answered with the reason), or answer before the
//! store made the change durable.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use onshi_model::{FacilityCode, Qualification};
use onshi_sync::sealed::{AtRestStatus, ResealProgress, RotatedKek, Vault, VaultOpenError};
use onshi_sync::vault::KeySource;
use serde::{Deserialize, Serialize};

use crate::store::embedded::EmbeddedStore;
use crate::store::{
    CentralError, CentralStore, FacilityEntry, Grant, GrantScope, ImportCounts, OutageRequest,
    StoreTarget,
};

/// The admin socket's file name in the data directory.
pub const SOCKET: &str = "admin.sock";

/// The largest request line the socket reads (an import chunk of 5,000 periods is ~2 MB).
const MAX_LINE: usize = 64 << 20;

/// One operator command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum AdminRequest {
    /// One chunk of a registry import.
    Import { periods: Vec<Qualification> },
    /// Central search for a facility or a prefecture from now for `days`.
    Grant { scope: GrantScope, days: u32 },
    /// Ends the active grants of a scope now.
    EndGrants { scope: GrantScope },
    /// Grants and the facilities' requests.
    Outages,
    /// Adds a facility or replaces its certificate.
    PutFacility { entry: FacilityEntry },
    /// Revokes a facility's certificate.
    RevokeFacility { code: FacilityCode },
    /// Every facility.
    Facilities,
    /// A facility's access-log chain as the centre holds it, checked.
    AuditVerify { facility: FacilityCode },
    /// The embedded store's keys.
    KeyStatus,
    /// A new key-encryption key, written to `new_key` or in place of the current key file.
    KeyRotate { new_key: Option<PathBuf> },
    /// A new data key, every value re-sealed with it before the answer. One rotation at a time
    /// per process; one left unfinished by a running serve is continued, not started again (a
    /// stopped store's open finishes an interrupted one first).
    KeyRotateData,
}

/// The answer to an [`AdminRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum AdminResponse {
    Imported {
        counts: ImportCounts,
        periods: u64,
    },
    Granted {
        grant: Grant,
    },
    Ended {
        count: usize,
    },
    Outages {
        grants: Vec<Grant>,
        requests: Vec<OutageRequest>,
    },
    FacilityPut,
    Revoked {
        revoked: bool,
    },
    Facilities {
        facilities: Vec<FacilityEntry>,
    },
    AuditVerified {
        report: crate::audit::ChainReport,
    },
    KeyStatus {
        status: AtRestStatus,
    },
    KeyRotated {
        rotated: RotatedKek,
    },
    KeyResealed {
        data_key: u32,
        resealed: u64,
    },
    Error {
        message: String,
    },
}

/// Carries out one request on the store (blocking). The one place the commands' effects are
/// decided, for a direct store and for the socket alike.
pub fn execute(
    store: &dyn CentralStore,
    request: AdminRequest,
    now: DateTime<Utc>,
) -> Result<AdminResponse, CentralError> {
    Ok(match request {
        AdminRequest::Import { periods } => {
            let counts = store.import(&periods)?;
            AdminResponse::Imported {
                counts,
                periods: store.period_count()?,
            }
        }
        AdminRequest::Grant { scope, days } => {
            let grant = Grant {
                scope,
                since: now,
                until: now + chrono::Duration::days(i64::from(days)),
                ended_at: None,
            };
            store.grant(&grant)?;
            tracing::warn!(scope = %grant.scope, until = %grant.until, "central search granted");
            AdminResponse::Granted { grant }
        }
        AdminRequest::EndGrants { scope } => {
            let count = store.end_grants(&scope, now)?;
            tracing::warn!(%scope, count, "central search grant ended");
            AdminResponse::Ended { count }
        }
        AdminRequest::Outages => AdminResponse::Outages {
            grants: store.grants()?,
            requests: store.outage_requests()?,
        },
        AdminRequest::PutFacility { entry } => {
            store.put_facility(&entry)?;
            tracing::info!(facility = %entry.code, fingerprint = %entry.fingerprint, "facility added (certificate recorded)");
            AdminResponse::FacilityPut
        }
        AdminRequest::RevokeFacility { code } => {
            let revoked = store.revoke_facility(&code, now)?;
            if revoked {
                tracing::warn!(facility = %code, "facility certificate revoked");
            }
            AdminResponse::Revoked { revoked }
        }
        AdminRequest::Facilities => AdminResponse::Facilities {
            facilities: store.facilities()?,
        },
        AdminRequest::AuditVerify { facility } => AdminResponse::AuditVerified {
            report: verify_chain(store, &facility)?,
        },
        AdminRequest::KeyStatus => AdminResponse::KeyStatus {
            status: vault_of(store)?.status(Some(&RESEAL)),
        },
        AdminRequest::KeyRotate { new_key } => {
            let rotated = vault_of(store)?
                .rotate_kek_to(new_key.as_deref())
                .map_err(VaultOpenError::from)?;
            tracing::warn!(old = %rotated.old, new = %rotated.new, "key-encryption key rotated");
            AdminResponse::KeyRotated { rotated }
        }
        AdminRequest::KeyRotateData => {
            let vault = vault_of(store)?;
            // A second request waits for the first (both starting a rotation, or two re-seals
            // racing over the same values, would be wrong); the status meanwhile shows progress.
            let _one = ROTATING.lock().unwrap_or_else(|p| p.into_inner());
            let state = vault.key_state();
            let data_key = if state.retiring.is_empty() {
                vault.start_data_rotation().map_err(VaultOpenError::from)?
            } else {
                state.current
            };
            tracing::warn!(data_key, "data key rotation: re-sealing every stored value");
            let resealed = vault.reseal(&RESEAL)?;
            tracing::warn!(data_key, resealed, "data key rotation finished");
            AdminResponse::KeyResealed { data_key, resealed }
        }
    })
}

/// The data key rotation of this process (a serve, or the command itself): one at a time, and
/// its progress for `key status`.
static ROTATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
static RESEAL: ResealProgress = ResealProgress {
    done: std::sync::atomic::AtomicU64::new(0),
    total: std::sync::atomic::AtomicU64::new(0),
};

fn vault_of(store: &dyn CentralStore) -> Result<&Vault, CentralError> {
    store.sealed_vault().ok_or(CentralError::NoDataKey)
}

/// Links read at a time by [`verify_chain`].
const VERIFY_PAGE: usize = 10_000;

/// Walks the links held for `facility` (the centre's own copy) and reports with the break on
/// record.
pub fn verify_chain(
    store: &dyn CentralStore,
    facility: &FacilityCode,
) -> Result<crate::audit::ChainReport, CentralError> {
    use crate::audit::{HeldFault, check_held};
    let chain = store.audit_chain(facility)?;
    let mut walk = (0u64, onshi_sync::audit_chain::GENESIS);
    let mut head = None;
    let mut held_fault = None;
    loop {
        let page = store.audit_links(facility, walk.0, VERIFY_PAGE)?;
        let Some(last) = page.last().copied() else {
            break;
        };
        if let Err(f) = check_held(&mut walk, &page) {
            held_fault = Some(f);
            break;
        }
        head = Some(last);
    }
    if held_fault.is_none() && walk.0 < chain.next {
        held_fault = Some(HeldFault::Missing { seq: walk.0 });
    }
    Ok(crate::audit::ChainReport {
        held: chain.next,
        head,
        brk: chain.brk,
        held_fault,
    })
}

/// Where an operator's command goes.
#[derive(Debug)]
pub enum AdminTarget {
    /// The store itself (PostgreSQL, or an embedded directory no `serve` holds).
    Direct(Arc<dyn CentralStore>),
    /// The running `serve` that holds the embedded directory.
    Socket(PathBuf),
}

impl AdminTarget {
    /// The embedded store in `data`: opened directly with the key from `key`, or through the
    /// running `serve`'s socket (which needs no key: the serve holds it).
    pub fn embedded(data: &Path, key: KeySource) -> Result<Self, CentralError> {
        match EmbeddedStore::open_with_key(data, key) {
            Ok(s) => Ok(AdminTarget::Direct(Arc::new(s))),
            Err(CentralError::Busy) => Ok(AdminTarget::Socket(data.join(SOCKET))),
            Err(e) => Err(e),
        }
    }

    /// The store a command names: PostgreSQL directly, the embedded directory as
    /// [`AdminTarget::embedded`].
    pub fn open(target: &StoreTarget) -> Result<Self, CentralError> {
        match target {
            StoreTarget::Embedded { dir, data_key } => {
                Self::embedded(dir, KeySource::choose(data_key.as_deref(), dir))
            }
            StoreTarget::Postgres { .. } => Ok(AdminTarget::Direct(crate::store::open(target)?)),
        }
    }

    /// Runs one request (blocking).
    pub fn run(&self, request: AdminRequest) -> Result<AdminResponse, CentralError> {
        match self {
            AdminTarget::Direct(store) => execute(store.as_ref(), request, Utc::now()),
            AdminTarget::Socket(path) => {
                let unreachable = |e: std::io::Error| {
                    CentralError::Database(format!(
                        "the data directory is held by a running onshi-reconciler serve, and its admin socket {} does not answer: {e}",
                        path.display()
                    ))
                };
                let mut stream = UnixStream::connect(path).map_err(unreachable)?;
                let mut line = serde_json::to_vec(&request).map_err(|e| CentralError::Corrupt {
                    what: "admin request".into(),
                    reason: e.to_string(),
                })?;
                line.push(b'\n');
                stream.write_all(&line).map_err(unreachable)?;
                let mut reader = BufReader::new(stream);
                let mut answer = String::new();
                reader.read_line(&mut answer).map_err(unreachable)?;
                let answer: AdminResponse =
                    serde_json::from_str(&answer).map_err(|e| CentralError::Corrupt {
                        what: "admin answer".into(),
                        reason: e.to_string(),
                    })?;
                match answer {
                    AdminResponse::Error { message } => Err(CentralError::Database(message)),
                    a => Ok(a),
                }
            }
        }
    }
}

/// Serves the admin socket at `DATA/admin.sock` for the running `serve` until `shutdown`.
pub fn serve_socket(
    data: &Path,
    store: Arc<dyn CentralStore>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let path = data.join(SOCKET);
    // A socket left by a killed serve: this process holds the store's lock, so nobody else
    // serves it.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(&path)?;
    onshi_sync::modes::restrict_file(&path)?;
    tracing::info!(socket = %path.display(), "admin socket (import, outage, facility commands while serving)");
    Ok(tokio::spawn(async move {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(connection(stream, store.clone()));
                    }
                    Err(e) => tracing::warn!(error = %e, "admin socket accept failed"),
                },
            }
        }
        let _ = std::fs::remove_file(&path);
    }))
}

async fn connection(stream: tokio::net::UnixStream, store: Arc<dyn CentralStore>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (read, mut write) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(read).take(MAX_LINE as u64 + 1);
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "admin socket read failed");
                return;
            }
        }
        let answer = match serde_json::from_slice::<AdminRequest>(&line) {
            Err(e) => AdminResponse::Error {
                message: format!("the request does not parse: {e}"),
            },
            Ok(request) => {
                let store = store.clone();
                match tokio::task::spawn_blocking(move || {
                    execute(store.as_ref(), request, Utc::now())
                })
                .await
                {
                    Ok(Ok(a)) => a,
                    Ok(Err(e)) => AdminResponse::Error {
                        message: e.to_string(),
                    },
                    Err(e) => AdminResponse::Error {
                        message: format!("the command failed: {e}"),
                    },
                }
            }
        };
        let mut bytes = serde_json::to_vec(&answer).unwrap_or_default();
        bytes.push(b'\n');
        if write.write_all(&bytes).await.is_err() {
            return;
        }
        if line.len() > MAX_LINE {
            return;
        }
        // The limit counts the whole connection: each request gets a fresh budget.
        lines.set_limit(MAX_LINE as u64 + 1);
    }
}

use tokio::io::AsyncReadExt as _;
