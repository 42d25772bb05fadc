//! What the edge says about itself: `GET /v1/status` (reception), `GET /v1/health` (open: the
//! mode only, nothing personal) and `GET /metrics` (open: Prometheus text, counts only).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;

use super::{AppState, Shared};
use crate::gate::Gate;
use crate::queue;

/// `GET /v1/health`: the mode, for a load balancer or a monitor without credentials.
#[derive(Debug, Serialize)]
pub struct Health {
    pub mode: crate::mode::Mode,
}

pub(super) async fn get_health(State(gate): State<Gate>) -> axum::Json<Health> {
    axum::Json(Health {
        mode: gate.mode.mode(),
    })
}

/// `GET /v1/status`: what the edge says about itself (counts and states; nothing personal).
#[derive(Debug, Serialize)]
pub struct Status<'a> {
    mode: crate::mode::Mode,
    mode_for_s: f64,
    reasons: Vec<String>,
    mode_changes: Vec<crate::mode::ModeChange>,
    facility: &'a onshi_model::FacilityCode,
    link: LinkStatus,
    /// The one-reader summary older clients read; `readers` has each.
    reader: crate::reader::ReaderSummary,
    readers: Vec<crate::reader::ReaderStatus>,
    queue: queue::QueueBrief,
    warnings: Vec<String>,
    journal: crate::journal::JournalStatus,
    replica: ReplicaStatus,
    deadline_ms: u64,
    mailbox: Option<MailboxStatus>,
    uptime_s: u64,
    last_sync: Option<chrono::DateTime<chrono::Utc>>,
    sync: crate::sync::SyncStatus,
    /// Encryption at rest: which key, the data key, a rotation under way.
    at_rest: crate::at_rest::AtRestStatus,
    version: &'static str,
}

#[derive(Debug, Serialize)]
struct LinkStatus {
    state: &'static str,
    /// The reconciler address in use: of the connection when up, of the attempt under way when
    /// connecting, of the last one tried when down. With one address, always that address.
    reconciler: String,
    /// Every configured reconciler address, in the order this facility tries them.
    reconcilers: Vec<String>,
    since_s: f64,
    reconnects: u64,
    last_error: Option<String>,
    rtt_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct ReplicaStatus {
    people: usize,
    periods: usize,
}

#[derive(Debug, Serialize)]
struct MailboxStatus {
    dir: String,
    records: usize,
    open: usize,
    answered: u64,
    rejected: u64,
    finals: u64,
    faces: u64,
}

fn status(app: &AppState) -> Status<'_> {
    let link = app.gate.link.state();
    let mode = app.gate.mode.snapshot();
    let queue = app
        .gate
        .journal
        .tally()
        .brief(&app.gate.live.get().queue, chrono::Utc::now());
    let sync = app.gate.sync.status();
    let readers = app.gate.mode.readers();
    let at_rest = app.at_rest.status();
    let warnings = queue
        .warnings
        .iter()
        .cloned()
        .chain(app.gate.journal.warning())
        .chain(at_rest.warning.clone())
        .collect();
    Status {
        mode: mode.mode,
        mode_for_s: mode.for_s,
        reasons: mode.reasons,
        mode_changes: mode.history,
        facility: app.gate.journal.facility(),
        link: LinkStatus {
            state: link.name(),
            reconciler: link.server.to_string(),
            reconcilers: app
                .gate
                .link
                .servers()
                .iter()
                .map(ToString::to_string)
                .collect(),
            since_s: link.since.elapsed().as_secs_f64(),
            reconnects: link.reconnects,
            last_error: link.last_error.as_ref().map(|e| e.to_string()),
            rtt_ms: link.last_rtt.map(|d| d.as_secs_f64() * 1000.0),
        },
        reader: crate::reader::ReaderSummary::of(&readers),
        readers,
        queue,
        warnings,
        journal: app.gate.journal.status(),
        replica: ReplicaStatus {
            people: app.gate.replica.people_count(),
            periods: app.gate.replica.period_count(),
        },
        deadline_ms: app.gate.deadline().as_millis() as u64,
        mailbox: app.mailbox.as_ref().map(|m| {
            let st = m.stats();
            MailboxStatus {
                dir: m.dir().display().to_string(),
                records: app.mailbox_store.len(),
                open: app.mailbox_store.open_len(),
                answered: st.answered.load(Ordering::Relaxed),
                rejected: st.rejected.load(Ordering::Relaxed),
                finals: st.finals.load(Ordering::Relaxed),
                faces: st.faces.load(Ordering::Relaxed),
            }
        }),
        uptime_s: app.started.elapsed().as_secs(),
        last_sync: sync.last_sync,
        sync,
        at_rest,
        version: env!("CARGO_PKG_VERSION"),
    }
}

pub(super) async fn get_status(State(app): State<Shared>) -> axum::response::Response {
    axum::Json(status(&app)).into_response()
}

pub(super) async fn get_metrics(State(app): State<Shared>) -> impl IntoResponse {
    use onshi_sync::metrics::{Exposition, labels};
    let s = &app.gate.stats;
    let (syncs, commits) = app.gate.journal.commit_stats();
    let link = app.gate.link.state();
    let mode = app.gate.mode.mode();
    let sync = app.gate.sync.status();
    let q = app
        .gate
        .journal
        .tally()
        .brief(&app.gate.live.get().queue, chrono::Utc::now());
    let n = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
    let mut e = Exposition::new();
    e.counter(
        "onshi_checks_total",
        "Checks answered, by source.",
        &[
            (labels(&[("source", "online")]), n(&s.answered_online)),
            (labels(&[("source", "replica")]), n(&s.answered_replica)),
            (labels(&[("source", "queued")]), n(&s.answered_queued)),
        ],
    );
    e.labelled_counter(
        "onshi_check_answers_total",
        "Checks answered, by source and validity (what reception was told).",
        &["source", "validity"],
        &s.answers,
    );
    let series: Vec<([(&str, &str); 1], &onshi_sync::metrics::Histogram)> = crate::gate::SOURCES
        .iter()
        .zip(&s.latency)
        .map(|(src, h)| ([("source", src.as_str())], h))
        .collect();
    let series: Vec<(&[(&str, &str)], &onshi_sync::metrics::Histogram)> =
        series.iter().map(|(l, h)| (&l[..], *h)).collect();
    e.histogram(
        "onshi_check_duration_seconds",
        "Time from a check's request to its durable answer, by source.",
        &series,
    );
    e.counter(
        "onshi_deadline_missed_total",
        "Online answers that missed the deadline.",
        &[(String::new(), n(&s.deadline_missed))],
    );
    e.counter(
        "onshi_deferred_completed_total",
        "Deferred checks completed online.",
        &[(String::new(), n(&s.deferred_completed))],
    );
    let modes = [
        ("online", crate::mode::Mode::Online),
        ("degraded", crate::mode::Mode::Degraded),
        ("offline", crate::mode::Mode::Offline),
    ];
    e.gauge(
        "onshi_mode",
        "1 for the current mode.",
        &modes
            .iter()
            .map(|(name, m)| (labels(&[("mode", name)]), f64::from(u8::from(mode == *m))))
            .collect::<Vec<_>>(),
    );
    e.gauge1(
        "onshi_link_up",
        "1 when the QUIC link to the reconciler is up.",
        f64::from(u8::from(link.is_up())),
    );
    e.gauge1(
        "onshi_link_rtt_seconds",
        "Round-trip time of the current (or last) QUIC connection to the reconciler.",
        link.last_rtt.map_or(0.0, |d| d.as_secs_f64()),
    );
    let (to_reconciler, from_reconciler) = app.gate.link.payload_bytes();
    e.counter(
        "onshi_link_payload_bytes_total",
        "Application bytes of answered RPCs with the reconciler (no QUIC headers or retransmissions), by direction.",
        &[
            (labels(&[("direction", "to_reconciler")]), to_reconciler),
            (labels(&[("direction", "from_reconciler")]), from_reconciler),
        ],
    );
    e.counter(
        "onshi_link_reconnects_total",
        "Connection attempts to the reconciler after the first.",
        &[(String::new(), link.reconnects)],
    );
    e.counter(
        "onshi_sync_rounds_total",
        "Journal sync rounds with the reconciler (an RPC answered or failed).",
        &[(String::new(), sync.rounds)],
    );
    e.gauge1(
        "onshi_sync_synced",
        "1 when every record is acknowledged by the reconciler and nothing is to receive.",
        f64::from(u8::from(sync.synced)),
    );
    e.gauge(
        "onshi_sync_pending_records",
        "Sync records still to send or to receive.",
        &[
            (labels(&[("direction", "outgoing")]), sync.outgoing as f64),
            (labels(&[("direction", "incoming")]), sync.incoming as f64),
        ],
    );
    e.gauge1(
        "onshi_sync_last_synced_timestamp_seconds",
        "When a sync round last found everything synced (Unix time; 0 never).",
        sync.last_sync.map_or(0.0, |t| t.timestamp() as f64),
    );
    let journal = app.gate.journal.status();
    e.gauge1(
        "onshi_journal_writable",
        "1 while the journal can record; 0 from a failed write (a full disk) until it reopens.",
        f64::from(u8::from(journal.writable)),
    );
    e.counter(
        "onshi_journal_commit_failures_total",
        "Commits answered with an error (the caller was told: not recorded).",
        &[(String::new(), journal.commit_failures)],
    );
    e.counter(
        "onshi_journal_write_failures_total",
        "Failed writes and syncs of the journal's store.",
        &[(String::new(), journal.write_failures)],
    );
    e.counter(
        "onshi_journal_recoveries_total",
        "Reopens of the journal's store after a failure.",
        &[(String::new(), journal.recoveries)],
    );
    e.gauge1(
        "onshi_queue_pending",
        "Deferred checks and provisional records not yet closed.",
        q.pending as f64,
    );
    e.gauge1(
        "onshi_queue_provisional_yen",
        "Yen collected provisionally in records not yet closed.",
        q.provisional_yen as f64,
    );
    e.gauge1(
        "onshi_queue_oldest_pending_seconds",
        "Age of the oldest pending item (0 when nothing is pending).",
        q.oldest_pending_s.map_or(0.0, |s| s as f64),
    );
    e.gauge1(
        "onshi_queue_quarantined",
        "Records set aside with a reason (they stay visible in the queue).",
        q.quarantined as f64,
    );
    e.gauge1(
        "onshi_queue_settled",
        "Provisional records whose settlement is back from the reconciler (settled or closed).",
        q.settled as f64,
    );
    e.gauge1(
        "onshi_journal_records",
        "Checks in the journal.",
        app.gate.journal.len() as f64,
    );
    e.counter(
        "onshi_journal_syncs_total",
        "Flush+fsync rounds of the journal.",
        &[(String::new(), syncs)],
    );
    e.counter(
        "onshi_journal_commits_total",
        "Writes made durable (several per sync under load).",
        &[(String::new(), commits)],
    );
    if let Some(m) = &app.mailbox {
        let st = m.stats();
        e.counter(
            "onshi_mailbox_files_total",
            "Mailbox files handled: requests answered, files rejected to err/, final results written after an outage, face files.",
            &[
                (labels(&[("outcome", "answered")]), n(&st.answered)),
                (labels(&[("outcome", "rejected")]), n(&st.rejected)),
                (labels(&[("outcome", "final")]), n(&st.finals)),
                (labels(&[("outcome", "face")]), n(&st.faces)),
            ],
        );
        e.gauge1(
            "onshi_mailbox_open",
            "Mailbox records with a final result awaited or a result not yet written.",
            app.mailbox_store.open_len() as f64,
        );
    }
    e.gauge1(
        "onshi_replica_people",
        "People in the local replica.",
        app.gate.replica.people_count() as f64,
    );
    (
        [(header::CONTENT_TYPE, onshi_sync::metrics::CONTENT_TYPE)],
        e.finish(),
    )
}
