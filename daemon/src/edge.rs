//! The edge's lifecycle: open the journal, bind the HTTP socket, start the link, tell systemd we are
//! READY, serve until shutdown, then drain in-flight requests, make the journal durable and say
//! STOPPING. Nothing here decides anything: the gate and the API do; `http.rs` serves the API
//! (timeouts, connection limits, the checks before routing, TLS).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use onshi_sync::link::{LinkClient, LinkSettings};
use onshi_sync::store::Store;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::config::{EdgeConfig, HttpTransport};
use crate::deferred;
use crate::gate::{Gate, GateStats};
use crate::journal::Journal;
use crate::monitor::{self, ModeHandle};
use crate::notify;
use crate::replica::Replica;

/// A started edge: where it listens, and the task that ends when it has shut down.
#[derive(Debug)]
pub struct RunningEdge {
    pub http_addr: SocketAddr,
    /// `https` with a certificate, else `http`.
    pub scheme: &'static str,
    pub link: Arc<LinkClient>,
    pub task: JoinHandle<anyhow::Result<()>>,
}

/// Starts the edge; returns once the journal is open and the HTTP socket is bound.
pub async fn start(
    config: EdgeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunningEdge> {
    start_with_reload(config, None, shutdown).await
}

/// As [`start`], reloading the configuration from `reload` on SIGHUP or when the file changes.
pub async fn start_with_reload(
    config: EdgeConfig,
    reload: Option<crate::reload::ReloadSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunningEdge> {
    // First, before any file is opened: the HTTP connections' budget is what remains of it.
    let nofile = crate::http::raise_nofile_limit();
    let journal_dir = crate::at_rest::store_dir(&config.data);
    // The key is checked before anything else opens: a wrong or missing one stops the start here,
    // with the directory as it was.
    let (at_rest, opened) = crate::at_rest::AtRest::open(&config.data, config.data_key.as_deref())
        .map_err(|e| crate::at_rest::open_error(e, &journal_dir))?;
    at_rest.log_open(&opened);
    let at_rest = Arc::new(at_rest);
    if opened.resealing {
        at_rest.spawn_reseal();
    }
    let store: Arc<dyn Store> = at_rest.store();
    let journal =
        Journal::open(store.clone(), config.facility.clone()).context("opening the journal")?;
    let replica = Replica::open(store.clone()).context("opening the replica")?;
    let identity = onshi_sync::pki::load_client(&config.pki, &config.facility)
        .context("loading the facility's certificate")?;
    let link = Arc::new(
        LinkClient::with_servers(
            config.reconciler.addrs(),
            &identity,
            LinkSettings::default(),
        )
        .context("starting the link to the reconciler")?,
    );
    // The certificate is read before anything listens: a bad one stops the start, naming it.
    let tls = match &config.http_transport {
        HttpTransport::Tls { cert, key } => Some(crate::http::tls_config(cert, key)?),
        HttpTransport::Loopback | HttpTransport::PlainOnLan => None,
    };
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("binding the HTTP API to {}", config.http))?;
    let http_addr = listener.local_addr()?;
    if config.http_transport == HttpTransport::PlainOnLan {
        // At every start: plain HTTP beyond loopback was chosen, and stays visible in the log.
        tracing::warn!(
            http = %http_addr,
            "plain HTTP on a non-loopback address (allow_plain_http_on_lan = true): passwords, \
             tokens and patients' data cross the network unencrypted; give --http-cert and \
             --http-key to serve HTTPS"
        );
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mode = ModeHandle::new(config.mode, config.reader_timeout, &config.readers);
    let live = crate::config::Live::new(config.runtime());
    let backfilled = journal
        .backfill_sync()
        .await
        .context("filling the sync journal")?;
    if backfilled > 0 {
        tracing::info!(
            records = backfilled,
            "records made before the sync journal were added to it"
        );
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let audit_log =
        crate::auth::AuditLog::open(store.as_ref()).context("opening the access log")?;
    let (sync, sync_task) = crate::sync::spawn(
        journal.clone(),
        audit_log.clone(),
        link.clone(),
        stop_rx.clone(),
    )
    .context("starting journal sync")?;
    let gate = Gate {
        journal,
        replica,
        link: link.clone(),
        mode: mode.clone(),
        live: live.clone(),
        stats: Arc::new(GateStats::default()),
        deferred_wake: Arc::new(tokio::sync::Notify::new()),
        sync,
        checks_completed: Arc::new(tokio::sync::Notify::new()),
    };
    let mailbox_store = crate::mailbox::store::MailboxStore::open(store.as_ref())
        .context("opening the mailbox records")?;
    let (mailbox, mailbox_task) = match &config.mailbox {
        Some(dir) => {
            let (m, t) = crate::mailbox::Mailbox::start(
                dir.clone(),
                config.mailbox_timing,
                gate.clone(),
                mailbox_store.clone(),
                &config.data.join("mailbox-in-hand"),
                stop_rx.clone(),
            )?;
            (Some(m), Some(t))
        }
        None => (None, None),
    };
    let idempotency = crate::idempotency::IdempotencyStore::open(store.as_ref())
        .context("opening the idempotency keys")?;
    // `onshi-edge audit verify` while this edge holds the store. Without it (a path too long for
    // a Unix socket, say) the edge still serves: only that command needs the edge stopped.
    let admin_socket = match crate::admin::serve_socket(
        &config.data,
        crate::admin::AdminContext {
            audit: audit_log.clone(),
            at_rest: at_rest.clone(),
        },
        stop_rx.clone(),
    ) {
        Ok(task) => Some(task),
        Err(e) => {
            tracing::warn!(error = %e, "no admin socket: `onshi-edge audit verify` needs the edge stopped");
            None
        }
    };
    let auth = crate::auth::Authenticator::new(
        &config.data,
        crate::auth::AuthSettings {
            session: crate::auth::SessionSettings {
                idle: config.session_idle,
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let state = AppState {
        auth,
        audit: api::Audit::new(audit_log, gate.journal.clone()),
        gate: gate.clone(),
        started: Instant::now(),
        mailbox,
        mailbox_store,
        idempotency,
        at_rest,
    };
    // The page shares the API's sessions and access log: one Authenticator, one AuditLog.
    let page = crate::page::PageState {
        app: state.clone(),
        auth: state.auth.clone(),
        audit: state.audit.log().clone(),
    };
    let app = api::router(state.clone(), crate::page::router(page));
    tracing::info!(facility = %config.facility, http = %http_addr, scheme, reconciler = %config.reconciler, "edge ready");
    // The configuration watch is in place before READY: a change right after it is not missed.
    let reloader = reload.map(|source| {
        crate::reload::spawn(
            source,
            config.clone(),
            live.clone(),
            mode.clone(),
            stop_rx.clone(),
        )
    });
    notify::ready(&status_line(&state));

    let heartbeat = tokio::spawn(heartbeat(state.clone(), stop_rx.clone()));
    let monitor = monitor::spawn(mode, link.clone(), stop_rx.clone());
    let deferred = deferred::spawn(gate, stop_rx);
    let link_for_task = link.clone();
    let task = tokio::spawn(async move {
        let served = crate::http::serve(
            listener,
            app,
            config.http_settings.clone(),
            tls,
            nofile,
            shutdown,
        )
        .await;
        notify::stopping();
        let _ = stop_tx.send(true);
        if let Some(m) = mailbox_task {
            let _ = m.await;
        }
        let _ = heartbeat.await;
        let _ = monitor.await;
        if let Some(r) = reloader {
            let _ = r.await;
        }
        let _ = deferred.await;
        let _ = sync_task.await;
        if let Some(a) = admin_socket {
            let _ = a.await;
        }
        link_for_task.close().await;
        // Every acknowledged record is already durable; this makes any remaining write durable too.
        let synced = tokio::task::spawn_blocking(move || store.sync()).await;
        served.context("serving HTTP")?;
        synced.context("final sync")?.context("final sync")?;
        tracing::info!("edge stopped");
        Ok(())
    });
    Ok(RunningEdge {
        http_addr,
        scheme,
        link,
        task,
    })
}

fn status_line(state: &AppState) -> String {
    let mode = state.gate.mode.mode();
    // The queue's own count (open items), as /v1/status and /metrics give it.
    let pending = state
        .gate
        .journal
        .tally()
        .brief(&state.gate.live.get().queue, chrono::Utc::now())
        .pending;
    let sync = state.gate.sync.status();
    let sync = if sync.synced {
        "synced".to_string()
    } else {
        format!("{} to sync", sync.outgoing + sync.incoming)
    };
    let line = format!(
        "{mode} · {pending} pending · {} checks · {sync}",
        state.gate.journal.len()
    );
    journal_status_prefix(&state.gate.journal.health()) + &line
}

/// What the STATUS line says first while the journal cannot write (nothing otherwise).
fn journal_status_prefix(h: &onshi_sync::store::StoreHealth) -> String {
    match h.unwritable_for {
        None => String::new(),
        Some(d) => format!(
            "journal cannot write for {} s ({}) · ",
            d.as_secs(),
            h.last_error.as_deref().unwrap_or("unknown error")
        ),
    }
}

/// Keeps systemd's STATUS line current and feeds its watchdog from the main loop.
async fn heartbeat(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = notify::watchdog_interval()
        .unwrap_or(Duration::from_secs(1))
        .min(Duration::from_secs(1));
    let mut last = String::new();
    let mut last_warnings: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        // Not fed while the journal has been unable to commit for too long (see notify.rs).
        let health = state.gate.journal.health();
        if notify::feed_watchdog(health.unwritable_for, notify::unwritable_bound()) {
            notify::watchdog();
        }
        let line = status_line(&state);
        if line != last {
            notify::status(&line);
            last = line;
        }
        // Queue caps (the tally makes this a lookup): a new warning is logged once, its end too.
        let q = state
            .gate
            .journal
            .tally()
            .brief(&state.gate.live.get().queue, chrono::Utc::now());
        if q.warnings != last_warnings {
            for w in q.warnings.iter().filter(|w| !last_warnings.contains(w)) {
                tracing::warn!(warning = %w, pending = q.pending, provisional_yen = q.provisional_yen, "queue past a cap");
            }
            if q.warnings.is_empty() {
                tracing::info!("queue back within its caps");
            }
            last_warnings = q.warnings;
        }
    }
}

pub use onshi_sync::lifecycle::shutdown_signal;
