//! What both daemons do the same way around their life: logging set-up (stderr, JSON or journald)
//! and the shutdown signal.

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// Human-readable lines on stderr (colour only on a terminal).
    Text,
    /// One JSON object per line on stderr.
    Json,
    /// journald's native protocol: each event with its fields as journal fields
    /// (`ONSHI_FACILITY=…`), its level as `PRIORITY`.
    Journald,
}

/// The log target from `ONSHI_LOG_FORMAT` (`text`, `json`, `journald`, or unset) and whether
/// stderr is systemd's journal stream; plus a note when the variable held something unknown.
/// Unset under systemd (stderr is the journal stream) means journald; unset elsewhere, text.
pub fn log_target(format: Option<&str>, stderr_is_journal: bool) -> (LogTarget, Option<String>) {
    let default = if stderr_is_journal {
        LogTarget::Journald
    } else {
        LogTarget::Text
    };
    match format.map(|f| f.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") => (default, None),
        Some("json") => (LogTarget::Json, None),
        Some("journald") | Some("journal") => (LogTarget::Journald, None),
        Some("text") | Some("plain") => (LogTarget::Text, None),
        Some(other) => (
            default,
            Some(format!(
                "ONSHI_LOG_FORMAT={other} is not text, json or journald; using the default"
            )),
        ),
    }
}

/// True when systemd connected stderr to the journal: `JOURNAL_STREAM` (`DEVICE:INODE`) names
/// the file stderr is (systemd.exec(5); a child whose stderr was redirected must not count).
pub fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Sets up logging, filtered by `RUST_LOG` (default `info`), to the target [`log_target`] picks:
/// under systemd natively to journald with structured fields; on a terminal human-readable with
/// colour; in a file or pipe plain text without escape codes; one JSON object per line when
/// `ONSHI_LOG_FORMAT=json`. If journald was chosen but its socket cannot be reached, logs go to
/// stderr as text with a warning saying so (the daemon still starts).
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter =
        || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let format = std::env::var("ONSHI_LOG_FORMAT").ok();
    let (target, note) = log_target(format.as_deref(), stderr_is_journal());
    let mut fallback = None;
    if target == LogTarget::Journald {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer.with_field_prefix(Some("ONSHI".into()));
                tracing_subscriber::registry()
                    .with(filter())
                    .with(layer)
                    .init();
                if let Some(note) = note {
                    tracing::warn!("{note}");
                }
                return;
            }
            Err(e) => fallback = Some(e.to_string()),
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    if target == LogTarget::Json {
        builder.json().flatten_event(true).init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    if let Some(note) = note {
        tracing::warn!("{note}");
    }
    if let Some(error) = fallback {
        tracing::warn!(
            %error,
            "journald was asked for but its socket cannot be reached; logging to stderr instead"
        );
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journald_under_systemd_text_elsewhere_and_json_or_journald_on_request() {
        assert_eq!(log_target(None, true), (LogTarget::Journald, None));
        assert_eq!(log_target(None, false), (LogTarget::Text, None));
        assert_eq!(log_target(Some("json"), true), (LogTarget::Json, None));
        assert_eq!(log_target(Some("JSON"), false), (LogTarget::Json, None));
        assert_eq!(
            log_target(Some("journald"), false),
            (LogTarget::Journald, None)
        );
        assert_eq!(log_target(Some("text"), true), (LogTarget::Text, None));
        let (t, note) = log_target(Some("xml"), false);
        assert_eq!(t, LogTarget::Text);
        assert!(note.is_some_and(|n| n.contains("ONSHI_LOG_FORMAT=xml")));
    }
}
