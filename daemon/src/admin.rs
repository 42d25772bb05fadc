//! The edge's admin socket, `DATA/admin.sock`: how a command that needs the edge's store reaches
//! it while the edge runs (sled allows one process). A Unix socket, 0600 in the edge's private data
//! directory (only the service user and root reach it), one JSON line each way, like the
//! reconciler's. Today it answers `audit verify` (the access log's chain walked by the running
//! edge), `key …`, and `backup` (the file written by the edge, sealed values only); without a
//! running edge the command opens the store itself.
//!
//! Must never: answer anything personal (the verdict is sequence numbers and hashes), or change
//! the store.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use onshi_sync::audit_chain::ChainVerdict;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::auth::AuditLog;

/// The admin socket's file name in the data directory.
pub const SOCKET: &str = "admin.sock";

/// The longest request line read.
const MAX_LINE: u64 = 64 * 1024;

/// One command to the running edge.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum EdgeAdminRequest {
    /// Walk the access log's chain.
    AuditVerify,
    /// The encryption at rest: key, data key, rotation progress.
    KeyStatus,
    /// A new key-encryption key (written to `new_key`, or where the current one is).
    KeyRotate { new_key: Option<PathBuf> },
    /// A new data key; the values are re-sealed in the background.
    KeyRotateData,
    /// A backup of the store, written by the running edge to `out` (an absolute path).
    Backup { out: PathBuf },
}

/// The answer to an [`EdgeAdminRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum EdgeAdminResponse {
    AuditVerified {
        verdict: ChainVerdict,
    },
    KeyStatus {
        status: crate::at_rest::AtRestStatus,
    },
    KeyRotated {
        rotated: crate::at_rest::RotatedKek,
    },
    BackupWritten {
        summary: crate::backup::BackupSummary,
    },
    Error {
        message: String,
    },
}

/// Why the running edge could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum AdminCallError {
    #[error(
        "the data directory is held by a running onshi-edge, and its admin socket {path} does not answer: {source}"
    )]
    Unreachable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the running onshi-edge answered something unexpected: {0}")]
    Answer(String),
}

/// Asks the edge serving `socket` (blocking).
pub fn call(
    socket: &Path,
    request: &EdgeAdminRequest,
) -> Result<EdgeAdminResponse, AdminCallError> {
    let unreachable = |source| AdminCallError::Unreachable {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    let mut line =
        serde_json::to_vec(request).map_err(|e| AdminCallError::Answer(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(unreachable)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(unreachable)?;
    serde_json::from_str(&answer).map_err(|e| AdminCallError::Answer(e.to_string()))
}

/// What the admin socket's commands work on.
#[derive(Debug, Clone)]
pub struct AdminContext {
    pub audit: AuditLog,
    pub at_rest: std::sync::Arc<crate::at_rest::AtRest>,
}

/// Serves `DATA/admin.sock` until `stop` turns true.
pub fn serve_socket(
    data: &Path,
    ctx: AdminContext,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let path = data.join(SOCKET);
    // Left by a killed edge: this process holds the store's lock, so nobody else serves it.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(&path)?;
    onshi_sync::modes::restrict_file(&path)?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(connection(stream, ctx.clone()));
                    }
                    Err(e) => tracing::warn!(error = %e, "admin socket accept failed"),
                },
            }
        }
        let _ = std::fs::remove_file(&path);
    }))
}

async fn connection(stream: tokio::net::UnixStream, ctx: AdminContext) {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    match tokio::io::BufReader::new(read)
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)
        .await
    {
        Ok(n) if n > 0 => {}
        _ => return,
    }
    let answer = match serde_json::from_slice::<EdgeAdminRequest>(&line) {
        Err(e) => EdgeAdminResponse::Error {
            message: format!("the request does not parse: {e}"),
        },
        Ok(EdgeAdminRequest::KeyStatus) => EdgeAdminResponse::KeyStatus {
            status: ctx.at_rest.status(),
        },
        Ok(EdgeAdminRequest::KeyRotate { new_key }) => {
            let at_rest = ctx.at_rest.clone();
            match tokio::task::spawn_blocking(move || at_rest.rotate_kek(new_key.as_deref())).await
            {
                Ok(Ok(rotated)) => EdgeAdminResponse::KeyRotated { rotated },
                Ok(Err(e)) => EdgeAdminResponse::Error {
                    message: format!("{e:#}"),
                },
                Err(e) => EdgeAdminResponse::Error {
                    message: format!("the command failed: {e}"),
                },
            }
        }
        Ok(EdgeAdminRequest::KeyRotateData) => match ctx.at_rest.rotate_data() {
            Ok(_) => EdgeAdminResponse::KeyStatus {
                status: ctx.at_rest.status(),
            },
            Err(e) => EdgeAdminResponse::Error {
                message: format!("{e:#}"),
            },
        },
        Ok(EdgeAdminRequest::Backup { out }) => backup(&ctx, out).await,
        Ok(EdgeAdminRequest::AuditVerify) => {
            let audit = ctx.audit.clone();
            match tokio::task::spawn_blocking(move || audit.verify()).await {
                Ok(Ok(verdict)) => EdgeAdminResponse::AuditVerified { verdict },
                Ok(Err(e)) => EdgeAdminResponse::Error {
                    message: e.to_string(),
                },
                Err(e) => EdgeAdminResponse::Error {
                    message: format!("the command failed: {e}"),
                },
            }
        }
    };
    let mut bytes = serde_json::to_vec(&answer).unwrap_or_default();
    bytes.push(b'\n');
    let _ = write.write_all(&bytes).await;
}

/// `backup` on the running edge: this process writes the file, as the service user.
async fn backup(ctx: &AdminContext, out: PathBuf) -> EdgeAdminResponse {
    if !out.is_absolute() {
        return EdgeAdminResponse::Error {
            message: format!(
                "{}: give the backup file as an absolute path",
                out.display()
            ),
        };
    }
    let at_rest = ctx.at_rest.clone();
    match tokio::task::spawn_blocking(move || crate::backup::write(&at_rest, &out)).await {
        Ok(Ok(summary)) => EdgeAdminResponse::BackupWritten { summary },
        Ok(Err(e @ crate::backup::BackupError::Create { .. })) => EdgeAdminResponse::Error {
            message: format!(
                "{e}. The running edge writes the backup itself, as its service user: give a path \
                 that user can write (under the systemd unit only its data directory and the \
                 unit's ReadWritePaths= are writable), then copy the file where it belongs"
            ),
        },
        Ok(Err(e)) => EdgeAdminResponse::Error {
            message: e.to_string(),
        },
        Err(e) => EdgeAdminResponse::Error {
            message: format!("the command failed: {e}"),
        },
    }
}
