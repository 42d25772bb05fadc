//! Configuration reload: on SIGHUP, or when the configuration file changes (notify watches its
//! folder, so an editor's write-and-rename is seen too), the file is read again, merged with the
//! command line (a flag still wins), and validated. A valid change to a setting that can change at
//! run time takes effect at once and is logged setting by setting; a setting that needs a restart is
//! logged as such; an invalid file is rejected with the reason and the running configuration kept.

use std::path::PathBuf;
use std::time::Duration;

use notify::Watcher;
use tokio::sync::{mpsc, watch};

use crate::config::{EdgeConfig, EdgeSettings, Live};
use crate::monitor::ModeHandle;

/// Where the configuration came from: the file, and the flags given on the command line.
#[derive(Debug, Clone)]
pub struct ReloadSource {
    pub path: PathBuf,
    pub cli: EdgeSettings,
}

/// Editors write a file in several steps: events closer than this are one change.
const SETTLE: Duration = Duration::from_millis(200);

/// What a reload did, for the log and the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    Applied {
        changes: Vec<String>,
        restart_needed: Vec<&'static str>,
    },
    Rejected(String),
}

/// Reads, validates and applies the configuration once.
pub fn reload_once(
    source: &ReloadSource,
    current: &mut EdgeConfig,
    live: &Live,
    mode: &ModeHandle,
) -> Reloaded {
    let file = match EdgeSettings::from_file(&source.path) {
        Ok(f) => f,
        Err(e) => return Reloaded::Rejected(e.to_string()),
    };
    let new = match EdgeConfig::try_from(source.cli.clone().or(file)) {
        Ok(c) => c,
        Err(e) => {
            return Reloaded::Rejected(format!(
                "{}: {}: {}",
                source.path.display(),
                e.setting.trim_start_matches("--").replace('-', "_"),
                e.message
            ));
        }
    };
    let changes = current.runtime().changes(&new.runtime());
    let restart_needed = current.restart_needed(&new);
    live.set(new.runtime());
    mode.apply(new.mode, new.reader_timeout);
    // Settings that need a restart keep their running values, so the warning repeats until then.
    let mut kept = new;
    kept.facility = current.facility.clone();
    kept.data = current.data.clone();
    kept.pki = current.pki.clone();
    kept.reconciler = current.reconciler.clone();
    kept.http = current.http;
    kept.mailbox = current.mailbox.clone();
    kept.mailbox_timing = current.mailbox_timing;
    kept.http_transport = current.http_transport.clone();
    kept.readers = current.readers.clone();
    *current = kept;
    Reloaded::Applied {
        changes,
        restart_needed,
    }
}

fn log(result: &Reloaded) {
    match result {
        Reloaded::Rejected(reason) => {
            tracing::warn!(%reason, "configuration reload rejected; the running configuration is kept")
        }
        Reloaded::Applied {
            changes,
            restart_needed,
        } => {
            if changes.is_empty() && restart_needed.is_empty() {
                tracing::info!("configuration reloaded: nothing changed");
            }
            for c in changes {
                tracing::info!(change = %c, "configuration reloaded");
            }
            if !restart_needed.is_empty() {
                tracing::warn!(settings = %restart_needed.join(", "), "changed in the configuration file; they take effect after a restart");
            }
        }
    }
}

/// Watches for SIGHUP and changes of the file until `stop`. The watch and the signal handler are
/// in place when this returns (before the edge says READY), so a change made right after the
/// start is never missed.
pub fn spawn(
    source: ReloadSource,
    mut current: EdgeConfig,
    live: Live,
    mode: ModeHandle,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let name = source.path.file_name().map(|n| n.to_os_string());
        let dir = source.path.parent().map(|p| {
            if p.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                p.to_path_buf()
            }
        });
        let watch_tx = tx.clone();
        let watcher =
            notify::recommended_watcher(move |ev: notify::Result<notify::Event>| match ev {
                Ok(ev) => {
                    if concerns_the_file(&ev, name.as_deref()) {
                        let _ = watch_tx.send(());
                    }
                }
                // An error or an overflow: look at the file again rather than miss a change.
                Err(_) => {
                    let _ = watch_tx.send(());
                }
            });
        let watcher = match (watcher, dir) {
            (Ok(mut w), Some(dir)) => match w.watch(&dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the configuration folder; reload with SIGHUP");
                    None
                }
            },
            (Err(e), _) => {
                tracing::warn!(error = %e, "cannot watch the configuration file; reload with SIGHUP");
                None
            }
            (Ok(_), None) => None,
        };
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler");
                None
            }
        };
        tokio::spawn(async move {
            let _watcher = watcher;
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    Some(()) = rx.recv() => {}
                    Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                        tracing::info!("SIGHUP: reloading the configuration");
                    }
                }
                // Let a burst of writes settle, then read once.
                tokio::time::sleep(SETTLE).await;
                while rx.try_recv().is_ok() {}
                let result = reload_once(&source, &mut current, &live, &mode);
                log(&result);
            }
        })
    }
}

/// Whether a file-system event may have changed the configuration file `name`: reading the file
/// (the edge's own reload opens and closes it) is not a change, or every reload would trigger the
/// next one, five times a second; an overflow is (look again rather than miss one).
fn concerns_the_file(ev: &notify::Event, name: Option<&std::ffi::OsStr>) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    if ev.need_rescan() {
        return true;
    }
    if let EventKind::Access(kind) = ev.kind
        && kind != AccessKind::Close(AccessMode::Write)
    {
        return false;
    }
    ev.paths.iter().any(|p| p.file_name() == name)
}

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, AccessMode, CreateKind, Event, EventKind, ModifyKind};

    #[test]
    fn reading_the_file_is_not_a_change_writing_it_is() {
        let at = |kind| Event::new(kind).add_path("/etc/onshi/edge.toml".into());
        let name = Some(std::ffi::OsStr::new("edge.toml"));
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
        ] {
            assert!(!super::concerns_the_file(&at(kind), name), "{kind:?}");
        }
        for kind in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Create(CreateKind::File),
        ] {
            assert!(super::concerns_the_file(&at(kind), name), "{kind:?}");
        }
        let other = Event::new(EventKind::Modify(ModifyKind::Any)).add_path("/etc/onshi/x".into());
        assert!(!super::concerns_the_file(&other, name));
    }
}
