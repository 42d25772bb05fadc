//! Personal data at rest on the edge (issue 18): the journal's store (`DATA/journal`: the journal,
//! the replica, the mailbox records, the idempotency answers, the access log) is opened through
//! [`onshi_sync::sealed::Vault`], so every value is sealed under the data key and the data key is
//! wrapped by the key-encryption key from `--data-key FILE`, the systemd credential
//! `onshi-data-key`, or (neither given) `DATA.key` beside the data directory — with a warning at
//! every start and in the status, since a key on the same disk protects nothing against theft.
//!
//! Also the key rotations: `key rotate` (a new KEK, instantly) and `key rotate --data` (a new data
//! key; the values are re-sealed in the background, with progress, and a start after a SIGKILL
//! continues it).
//!
//! Must never: log a key or a personal value; forget a retiring data key before everything it
//! sealed is re-sealed and durable.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use onshi_sync::sealed::{OpenReport, ResealProgress, Vault, VaultOpenError};
use onshi_sync::store::{Store, StoreError};
use onshi_sync::vault::KeySource;

/// The edge's store directory inside its data directory.
pub fn store_dir(data: &Path) -> PathBuf {
    data.join("journal")
}

/// The encrypted store and its keys.
#[derive(Debug)]
pub struct AtRest {
    vault: Vault,
    progress: ResealProgress,
    resealing: AtomicBool,
}

pub use onshi_sync::sealed::{AtRestStatus, KeyKind, RotatedKek, Rotation};

/// Why the store would not open: the process exits with it.
pub fn open_error(e: VaultOpenError, dir: &Path) -> anyhow::Error {
    if is_busy(&e) {
        return anyhow::anyhow!(
            "{} is held by a running onshi-edge (sled allows one process)",
            dir.display()
        );
    }
    anyhow::Error::new(e).context(format!("opening the journal in {}", dir.display()))
}

/// Whether opening failed because another process holds the store.
pub fn is_busy(e: &VaultOpenError) -> bool {
    matches!(e, VaultOpenError::Store(StoreError::Engine(sled::Error::Io(io)))
        if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock"))
}

impl AtRest {
    /// Opens `DATA/journal` with the key from `--data-key`, the credential, or beside the data.
    pub fn open(
        data: &Path,
        data_key: Option<&Path>,
    ) -> Result<(AtRest, OpenReport), VaultOpenError> {
        let source = KeySource::choose(data_key, data);
        let (vault, report) = Vault::open(&store_dir(data), source, &[])?;
        Ok((
            AtRest {
                vault,
                progress: ResealProgress::default(),
                resealing: AtomicBool::new(false),
            },
            report,
        ))
    }

    /// Logs what opening did (at every start: the warning of a key beside the data).
    pub fn log_open(&self, report: &OpenReport) {
        let key = self.vault.source().path().display().to_string();
        if report.key_created {
            tracing::warn!(
                key = %key,
                kek = %self.vault.kek_fingerprint(),
                "a new data key was made for this data directory: keep a copy of it apart from the \
                 box (without it the data cannot be read)"
            );
        }
        if let Some(entries) = report.converted {
            tracing::warn!(
                entries,
                "the plain-text store of an earlier version was encrypted"
            );
        }
        if report.dropped_old_keks > 0 {
            tracing::info!(kek = %self.vault.kek_fingerprint(), "key rotation finished: the previous key no longer opens the data");
        }
        if let Some(w) = self.vault.source().warning() {
            tracing::warn!("{w}");
        }
    }

    /// The store every part of the edge uses.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::new(self.vault.store().clone())
    }

    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    pub fn status(&self) -> AtRestStatus {
        self.vault.status(Some(&self.progress))
    }

    /// Re-seals in the background what a retiring data key sealed (after `key rotate --data`, or
    /// at a start that finds one unfinished). One at a time.
    pub fn spawn_reseal(self: &Arc<Self>) {
        if self.resealing.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let to = me.vault.key_state().current;
            tracing::info!(
                data_key = to,
                "re-sealing the stored values with the new data key"
            );
            match me.vault.reseal(&me.progress) {
                Ok(n) => tracing::info!(
                    data_key = to,
                    resealed = n,
                    ms = started.elapsed().as_millis() as u64,
                    "data key rotation finished: the previous data key is forgotten"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    "data key rotation stopped; it continues at the next start or `key rotate --data`"
                ),
            }
            me.resealing.store(false, Ordering::SeqCst);
        });
    }

    /// `key rotate --data` on the running edge: a new data key, the re-seal in the background.
    pub fn rotate_data(self: &Arc<Self>) -> anyhow::Result<u32> {
        anyhow::ensure!(
            !self.resealing.load(Ordering::SeqCst),
            "a data key rotation is already under way (see `onshi-edge key status`)"
        );
        let id = self
            .vault
            .start_data_rotation()
            .context("starting the data key rotation")?;
        self.spawn_reseal();
        Ok(id)
    }

    /// `key rotate`: a new key-encryption key, written to `new_key` or where the current one is.
    pub fn rotate_kek(&self, new_key: Option<&Path>) -> anyhow::Result<RotatedKek> {
        Ok(self.vault.rotate_kek_to(new_key)?)
    }
}
