//! The edge's adapter of the sync protocol: one task owning the [`EdgeSync`] state machine, built
//! from the durable sync journal (`journal.sync`) at start-up. Link events become
//! `Connected`/`Disconnected` (a reconnect the watch coalesced is noticed by the reconnect count).
//! What the state machine has to send goes out as `Request::Sync` RPCs of at most
//! [`BATCHES_PER_RPC`] data batches each, up to [`RPCS_IN_FLIGHT`] at once while data or
//! acknowledgements flow (so a long, slow line stays busy and the reconciler works on one RPC
//! while the next is on the wire); each answer is fed back as it arrives. Without anything to
//! send, a round (an RPC, perhaps empty) runs at once on a local change or `sync-now`, every
//! [`ROUND_UNSYNCED`] while not synced and every [`ROUND_SYNCED`] when synced (the reconciler
//! answers only when asked, so settlements come back on the next round).
//!
//! The access log's chain (issue 18) rides along: after each round's data, when the log has
//! grown since the centre last said what it holds (or on a new connection, a probe of the
//! centre's, or every [`AUDIT_RECHECK`]), one `Request::Sync` carrying a lone
//! `SyncMessage::AuditLinks` goes out (never more than one at a time, so the centre sees the
//! log's length only grow), with links of durable entries only (the journal is committed first).
//! A reconciler that does not know the message refuses that RPC alone (`bad_frame`): the edge then
//! tries again after [`AUDIT_REFUSED_WAIT`].
//!
//! `Persist` is a CRDT merge into the sync journal, then the group commit, then `Durable`;
//! `Quarantined` is merged and committed too; `Sent` marks are merged without waiting for the
//! disk (losing one costs a resend the reconciler ignores). Callers make a local change durable before
//! [`SyncHandle::local_change`]. Must never: acknowledge before the commit; report synced while
//! the state machine is not.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use onshi_sync::audit_chain::{AuditHeld, AuditReport, report_seqs};
use onshi_sync::crdt::JournalRecord;
use onshi_sync::link::LinkClient;
use onshi_sync::protocol::{Action, EdgeSync, Input, SyncConfig, SyncMessage};
use onshi_sync::wire::NO_SESSION;
use onshi_sync::wire::{Request, Response};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::auth::AuditLog;
use crate::journal::Journal;

/// Time between rounds while something is pending.
pub const ROUND_UNSYNCED: Duration = Duration::from_millis(300);
/// Time between rounds when synced (to hear of settlements).
pub const ROUND_SYNCED: Duration = Duration::from_secs(3);
/// How long one sync RPC may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Sync RPCs in flight at once while data flows: the state machine's window is
/// `RPCS_IN_FLIGHT × BATCHES_PER_RPC` batches of 64 records (about 1 MB: a 20 Mbit/s line with
/// 100 ms RTT holds 250 kB, and the reconciler's fsync per RPC is the other half of a round).
/// Measured with `onshi-drain` (BENCHMARKS.md): 4 × 2 drained in 17–19 s, 16 × 4 in 8–9 s.
pub const RPCS_IN_FLIGHT: usize = 16;
/// Data batches (of [`SyncConfig::batch_records`]) in one RPC.
pub const BATCHES_PER_RPC: usize = 4;
/// The access log's head is shown to the centre at least this often, grown or not (a log
/// rewritten while the edge ran is seen within this time).
pub const AUDIT_RECHECK: Duration = Duration::from_secs(60);
/// After a reconciler refused the access log's chain (an older version), the next try.
pub const AUDIT_REFUSED_WAIT: Duration = Duration::from_secs(600);
/// After another failed audit RPC, the next try.
const AUDIT_RETRY: Duration = Duration::from_secs(5);

/// What status pages show.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SyncStatus {
    pub synced: bool,
    pub outgoing: usize,
    pub incoming: usize,
    /// When the last round that found everything synced ended (a round where `synced` became true).
    pub last_sync: Option<DateTime<Utc>>,
    /// Rounds completed (an RPC answered) since start.
    pub rounds: u64,
    pub last_error: Option<String>,
}

enum Cmd {
    Local(Box<JournalRecord>),
    Now,
}

/// How the rest of the edge talks to the sync task.
#[derive(Debug, Clone)]
pub struct SyncHandle {
    tx: mpsc::UnboundedSender<Cmd>,
    status: watch::Receiver<SyncStatus>,
    /// Local changes sent to the task and not yet given to the state machine: while any is,
    /// nothing is synced (the task may be waiting on the link).
    unread: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cmd::Local(_) => "Local",
            Cmd::Now => "Now",
        })
    }
}

impl SyncHandle {
    /// A record changed here and the change is already durable.
    pub fn local_change(&self, record: JournalRecord) {
        self.unread.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(Cmd::Local(Box::new(record))).is_err() {
            self.unread.fetch_sub(1, Ordering::SeqCst);
        }
    }

    pub fn status(&self) -> SyncStatus {
        let mut s = self.status.borrow().clone();
        if self.unread.load(Ordering::SeqCst) > 0 {
            s.synced = false;
        }
        s
    }

    /// Runs a round now and waits until synced (after that round) or `timeout`.
    pub async fn sync_now(&self, timeout: Duration) -> SyncStatus {
        let mut rx = self.status.clone();
        let start_round = rx.borrow_and_update().rounds;
        let _ = self.tx.send(Cmd::Now);
        let wait = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if s.rounds > start_round && s.synced && self.unread.load(Ordering::SeqCst) == 0
                    {
                        return;
                    }
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
        self.status()
    }
}

/// Builds the state machine from the durable sync journal and starts the task; `audit` is the
/// access log whose chain goes to the centre.
pub fn spawn(
    journal: Journal,
    audit: AuditLog,
    link: Arc<LinkClient>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(SyncHandle, tokio::task::JoinHandle<()>)> {
    let loaded = journal.sync.load()?;
    tracing::info!(records = loaded.len(), "sync journal loaded");
    let config = SyncConfig {
        max_batches_in_flight: RPCS_IN_FLIGHT * BATCHES_PER_RPC,
        // A batch whose RPC may still be answered is not sent again.
        retransmit_ms: (RPC_TIMEOUT + Duration::from_secs(1)).as_millis() as u64,
        batch_records: 64,
        ..SyncConfig::default()
    };
    let machine = EdgeSync::new(config, journal.facility().clone(), loaded);
    let (tx, rx) = mpsc::unbounded_channel();
    let (status_tx, status_rx) = watch::channel(SyncStatus::default());
    let unread = Arc::new(AtomicUsize::new(0));
    let adapter = Adapter {
        journal,
        link,
        machine,
        clock: Instant::now(),
        status: status_tx,
        connected: false,
        reconnects: 0,
        retry_at: None,
        unread: unread.clone(),
        epoch: 0,
        held: Vec::new(),
        audit,
        audit_sync: AuditSync::default(),
    };
    let task = tokio::spawn(adapter.run(rx, stop));
    Ok((
        SyncHandle {
            tx,
            status: status_rx,
            unread,
        },
        task,
    ))
}

struct Adapter {
    journal: Journal,
    link: Arc<LinkClient>,
    machine: EdgeSync,
    clock: Instant,
    status: watch::Sender<SyncStatus>,
    connected: bool,
    reconnects: u64,
    /// After a refused session, no new one before this.
    retry_at: Option<Instant>,
    unread: Arc<AtomicUsize>,
    /// Bumped whenever the session starts over: answers to RPCs of an earlier session are
    /// dropped (to the protocol, a lost message).
    epoch: u64,
    /// Frames polled from the state machine but not yet sent (a `Hello` while an RPC is out).
    held: Vec<Vec<u8>>,
    audit: AuditLog,
    audit_sync: AuditSync,
}

/// What the edge knows of the centre's copy of the access log's chain, and when to send.
#[derive(Debug, Default, Clone, PartialEq)]
struct AuditSync {
    /// The centre holds links `0 .. held` (unknown on a new connection).
    held: Option<u64>,
    /// Entries the centre asked to see, to narrow a break.
    probe: Option<(u64, u64)>,
    /// The centre asked for the same probe as the time before: not again before the recheck
    /// (an entry the edge cannot read would otherwise be asked for every round).
    stale_probe: bool,
    /// Where the centre finds the log departs from what it holds.
    broken_at: Option<u64>,
    /// The epoch of the audit RPC out, if one is.
    in_flight: Option<u64>,
    last_sent: Option<Instant>,
    /// No audit RPC before this (refused by an older reconciler, or failed).
    wait_until: Option<Instant>,
}

impl AuditSync {
    /// Whether an audit RPC should go now, for a log of `len` entries in session `epoch`.
    fn due(&self, len: u64, epoch: u64, now: Instant) -> bool {
        if self.in_flight == Some(epoch) || self.wait_until.is_some_and(|t| now < t) {
            return false;
        }
        let recheck = self
            .last_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= AUDIT_RECHECK);
        match self.held {
            None => true,
            // Once broken, the centre takes no more links: only its probe and the recheck.
            Some(_) if self.broken_at.is_some() => {
                (self.probe.is_some() && !self.stale_probe) || recheck
            }
            Some(h) => len > h || (self.probe.is_some() && !self.stale_probe) || recheck,
        }
    }

    /// The centre's answer. Returns the new break, when it is news.
    fn answered(&mut self, held: AuditHeld) -> Option<u64> {
        self.in_flight = None;
        self.held = Some(held.next);
        self.stale_probe = held.probe.is_some() && held.probe == self.probe;
        self.probe = held.probe;
        let news = held.broken_at.filter(|b| self.broken_at != Some(*b));
        self.broken_at = held.broken_at;
        news
    }

    /// A new session: what the centre holds is asked again.
    fn reconnected(&mut self) {
        self.held = None;
        self.in_flight = None;
    }
}

/// The epoch an audit RPC was sent in, and its answer.
type AuditAnswer = (u64, Result<Response, onshi_sync::link::LinkError>);

/// The epoch the RPC was sent in, how long it took, how many frames it carried, its answer.
type RpcAnswer = (
    u64,
    Duration,
    usize,
    Result<Response, onshi_sync::link::LinkError>,
);

impl Adapter {
    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    fn input(&mut self, input: Input) {
        let now = self.now_ms();
        self.machine.handle(now, input);
    }

    /// Follows the link: a new connection (or one the watch coalesced) is `Connected`.
    fn follow_link(&mut self) {
        let st = self.link.state();
        let up = st.is_up() && self.retry_at.is_none_or(|t| Instant::now() >= t);
        if up && (!self.connected || st.reconnects != self.reconnects) {
            if self.connected {
                self.input(Input::Disconnected);
            }
            self.new_epoch();
            self.input(Input::Connected);
            self.connected = true;
            self.retry_at = None;
        } else if !st.is_up() && self.connected {
            self.input(Input::Disconnected);
            self.connected = false;
            self.new_epoch();
        }
        self.reconnects = st.reconnects;
    }

    fn new_epoch(&mut self) {
        self.epoch += 1;
        self.held.clear();
        self.audit_sync.reconnected();
    }

    fn restart_session(&mut self, why: &str) {
        tracing::info!(reason = why, "sync session restarts");
        self.input(Input::Disconnected);
        self.new_epoch();
        self.input(Input::Connected);
    }

    /// Carries out the state machine's actions.
    async fn drain(&mut self) {
        loop {
            let mut persisted = Vec::new();
            let mut wrote = false;
            let mut lost = false;
            while let Some(a) = self.machine.poll_action() {
                match a {
                    Action::Persist {
                        persist_id,
                        records,
                    } => {
                        let mut ok = true;
                        for r in records {
                            if let Err(e) = self.journal.sync.merge(r) {
                                tracing::error!(error = %e, "sync journal write failed; not acknowledged");
                                ok = false;
                            }
                        }
                        if ok {
                            persisted.push(persist_id);
                        } else {
                            lost = true;
                        }
                    }
                    Action::Quarantined { record, reason } => {
                        tracing::warn!(record = %record.id(), %reason, "record quarantined by the reconciler");
                        if let Err(e) = self.journal.sync.merge(record) {
                            tracing::error!(error = %e, "quarantine not recorded");
                        }
                        wrote = true;
                    }
                    // Written, not waited for: the next commit takes it to disk. A crash that
                    // loses a sent mark only sends the record again, and the reconciler's merge
                    // of what it already holds changes nothing. (Waiting for an fsync per answer
                    // capped a drain at ~40 answers a second.)
                    Action::Sent { ids } => {
                        for id in ids {
                            if let Err(e) = self.journal.sync.update(&id, |r| {
                                r.mark_sent();
                                Ok::<(), ()>(())
                            }) {
                                tracing::error!(error = %e, "sent mark not recorded");
                            }
                        }
                    }
                    Action::Report(r) => tracing::info!(
                        synced = r.synced,
                        outgoing = r.outgoing,
                        incoming = r.incoming,
                        "sync"
                    ),
                    Action::Close { reason } => {
                        tracing::warn!(%reason, "sync session refused; starting again in a moment");
                        self.input(Input::Disconnected);
                        self.connected = false;
                        self.new_epoch();
                        self.retry_at = Some(Instant::now() + Duration::from_secs(1));
                    }
                }
            }
            if persisted.is_empty() && !wrote && !lost {
                return;
            }
            let committed = if persisted.is_empty() && !wrote {
                Ok(())
            } else {
                self.journal.commit().await
            };
            if lost || committed.is_err() {
                if let Err(e) = committed {
                    tracing::error!(error = %e, "sync journal commit failed; not acknowledged");
                }
                // A persist that was not recorded is never acknowledged, and the machine would
                // wait for it forever: start the session again once the journal can write, so
                // the reconciler sends what we lack again.
                self.input(Input::Disconnected);
                self.connected = false;
                self.new_epoch();
                self.retry_at = Some(Instant::now() + Duration::from_secs(1));
                return;
            }
            for pid in persisted {
                self.input(Input::Durable(pid));
            }
        }
    }

    /// Starts the RPCs there is reason for: while fewer than [`RPCS_IN_FLIGHT`] are out, one per
    /// [`BATCHES_PER_RPC`] data batches (with any acknowledgements); a message without data (a
    /// `Hello`) waits until no RPC is out; an empty round only when `due` and none is out.
    /// Returns whether a round started.
    async fn send_rounds(&mut self, rpcs: &mut tokio::task::JoinSet<RpcAnswer>, due: bool) -> bool {
        let mut started = false;
        while rpcs.len() < RPCS_IN_FLIGHT {
            let now = self.now_ms();
            let mut frames = std::mem::take(&mut self.held);
            let (mut batches, mut data) = (0, false);
            while batches < BATCHES_PER_RPC {
                let Some(m) = self.machine.poll_transmit(now) else {
                    break;
                };
                match &m {
                    SyncMessage::Batch { .. } => (batches, data) = (batches + 1, true),
                    SyncMessage::Ack { .. } => data = true,
                    SyncMessage::Hello { .. }
                    | SyncMessage::SlowDown { .. }
                    | SyncMessage::AuditLinks(_)
                    | SyncMessage::AuditHeld(_) => {}
                }
                match m.encode() {
                    Ok(f) => frames.push(f),
                    Err(e) => tracing::error!(error = %e, "sync message does not encode"),
                }
            }
            // Transmitting can ask for actions (sent marks).
            self.drain().await;
            let alone = rpcs.is_empty();
            if !(data || (alone && (due && !started || !frames.is_empty()))) {
                self.held = frames;
                break;
            }
            let (link, epoch) = (self.link.clone(), self.epoch);
            rpcs.spawn(async move {
                let (sent, n) = (Instant::now(), frames.len());
                let answer = link.call(Request::Sync(frames), RPC_TIMEOUT).await;
                (epoch, sent.elapsed(), n, answer)
            });
            started = true;
        }
        started
    }

    /// An RPC's answer fed back (unless it belongs to an earlier session), and the status.
    async fn answered(
        &mut self,
        epoch: u64,
        answer: Result<Response, onshi_sync::link::LinkError>,
    ) {
        let mut last_error = None;
        match answer {
            _ if epoch != self.epoch => {}
            Ok(Response::Sync(frames)) => {
                for f in frames {
                    match SyncMessage::decode(&f) {
                        Ok(m) => self.input(Input::Message(m)),
                        Err(e) => {
                            tracing::warn!(error = %e, "undecodable sync message from the reconciler")
                        }
                    }
                }
                // One commit for everything the answer brought.
                self.drain().await;
            }
            Ok(Response::Error { code, message }) if code == NO_SESSION => {
                self.restart_session(&message);
                last_error = Some(message);
            }
            Ok(Response::Error { code, message }) => {
                last_error = Some(format!("{code}: {message}"))
            }
            Ok(other) => last_error = Some(format!("unexpected answer {other:?}")),
            Err(e) => last_error = Some(e.to_string()),
        }
        let report = self.machine.status();
        self.status.send_modify(|s| {
            s.rounds += 1;
            if report.synced && !s.synced {
                s.last_sync = Some(Utc::now());
            }
            s.synced = report.synced;
            s.outgoing = report.outgoing;
            s.incoming = report.incoming;
            s.last_error = last_error;
        });
    }

    /// Sends the access log's report when one is due (see the module docs).
    async fn send_audit(&mut self, audit_rpcs: &mut tokio::task::JoinSet<AuditAnswer>) {
        let len = self.audit.len();
        if !self.audit_sync.due(len, self.epoch, Instant::now()) {
            return;
        }
        // Entries before `len` are on disk once this returns: no link of an entry a crash could
        // still take back (and write again differently) reaches the centre.
        if let Err(e) = self.journal.commit().await {
            tracing::warn!(error = %e, "access log not committed; its chain is sent later");
            self.audit_sync.wait_until = Some(Instant::now() + AUDIT_RETRY);
            return;
        }
        let seqs = report_seqs(len, self.audit_sync.held, self.audit_sync.probe);
        let links = match self.audit.links(&seqs) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "access log links not readable");
                self.audit_sync.wait_until = Some(Instant::now() + AUDIT_RETRY);
                return;
            }
        };
        let frame = match SyncMessage::AuditLinks(AuditReport { len, links }).encode() {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "access log report does not encode");
                return;
            }
        };
        let (link, epoch) = (self.link.clone(), self.epoch);
        self.audit_sync.in_flight = Some(epoch);
        self.audit_sync.last_sent = Some(Instant::now());
        audit_rpcs.spawn(async move {
            (
                epoch,
                link.call(Request::Sync(vec![frame]), RPC_TIMEOUT).await,
            )
        });
    }

    /// The centre's answer to the access log's report.
    fn audit_answered(
        &mut self,
        epoch: u64,
        answer: Result<Response, onshi_sync::link::LinkError>,
    ) {
        if epoch != self.epoch {
            return;
        }
        self.audit_sync.in_flight = None;
        let held = match answer {
            Ok(Response::Sync(frames)) => {
                frames.iter().find_map(|f| match SyncMessage::decode(f) {
                    Ok(SyncMessage::AuditHeld(h)) => Some(h),
                    _ => None,
                })
            }
            Ok(Response::Error { code, .. }) if code == "bad_frame" => {
                tracing::info!(
                    "the reconciler does not take the access log's chain (an older version); trying again later"
                );
                self.audit_sync.wait_until = Some(Instant::now() + AUDIT_REFUSED_WAIT);
                return;
            }
            Ok(Response::Error { code, message }) => {
                tracing::warn!(%code, %message, "the access log's chain was not taken");
                None
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "access log report not answered");
                None
            }
        };
        match held {
            Some(h) => {
                if let Some(at) = self.audit_sync.answered(h) {
                    tracing::error!(
                        entry = at,
                        "the centre finds this edge's access log no longer matches the chain it holds from this entry on (changed, removed or rewritten here); see `onshi-edge audit verify` and `onshi-reconciler audit verify`"
                    );
                }
            }
            None => self.audit_sync.wait_until = Some(Instant::now() + AUDIT_RETRY),
        }
    }

    fn publish_idle(&mut self) {
        let report = self.machine.status();
        self.status.send_if_modified(|s| {
            let changed = s.synced != report.synced
                || s.outgoing != report.outgoing
                || s.incoming != report.incoming;
            s.synced = report.synced;
            s.outgoing = report.outgoing;
            s.incoming = report.incoming;
            changed
        });
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>, mut stop: watch::Receiver<bool>) {
        let mut link = self.link.subscribe();
        let mut rpcs = tokio::task::JoinSet::new();
        // Apart from the data's RPCs: the journal's rounds never wait on it.
        let mut audit_rpcs = tokio::task::JoinSet::new();
        let mut due = true;
        loop {
            self.follow_link();
            self.drain().await;
            // Status first: a local change is news even while the rounds below wait on the link.
            self.publish_idle();
            if self.connected && self.send_rounds(&mut rpcs, due).await {
                due = false;
            }
            if self.connected {
                self.send_audit(&mut audit_rpcs).await;
            }
            let synced = self.machine.is_synced();
            let mut wait = if synced { ROUND_SYNCED } else { ROUND_UNSYNCED };
            // A retransmission is due only when a round can carry it; never a busy loop.
            if rpcs.len() < RPCS_IN_FLIGHT
                && let Some(t) = self.machine.poll_timeout()
            {
                let until = Duration::from_millis(t.saturating_sub(self.now_ms()));
                wait = wait.min(until.max(Duration::from_millis(5)));
            }
            if let Some(t) = self.retry_at {
                wait = wait.min(t.saturating_duration_since(Instant::now()));
            }
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Cmd::Local(r)) => {
                        self.input(Input::LocalChange(*r));
                        self.unread.fetch_sub(1, Ordering::SeqCst);
                        // Gather a burst of changes into one round.
                        while let Ok(c) = rx.try_recv() {
                            match c {
                                Cmd::Local(r) => {
                                    self.input(Input::LocalChange(*r));
                                    self.unread.fetch_sub(1, Ordering::SeqCst);
                                }
                                Cmd::Now => due = true,
                            }
                        }
                    }
                    Some(Cmd::Now) => due = true,
                    None => return,
                },
                Some(done) = audit_rpcs.join_next(), if !audit_rpcs.is_empty() => match done {
                    Ok((epoch, answer)) => self.audit_answered(epoch, answer),
                    Err(e) => tracing::error!(error = %e, "an audit RPC task failed"),
                },
                Some(done) = rpcs.join_next(), if !rpcs.is_empty() => match done {
                    Ok((epoch, took, sent, answer)) => {
                        tracing::debug!(
                            took_ms = took.as_millis() as u64,
                            frames_sent = sent,
                            frames_back = match &answer { Ok(Response::Sync(f)) => f.len(), _ => 0 },
                            in_flight = rpcs.len(),
                            "sync RPC answered"
                        );
                        self.answered(epoch, answer).await
                    }
                    Err(e) => tracing::error!(error = %e, "a sync RPC task failed"),
                },
                r = link.changed() => {
                    if r.is_err() {
                        return;
                    }
                    due = true;
                }
                _ = tokio::time::sleep(wait) => due = true,
                _ = stop.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(next: u64, broken_at: Option<u64>, probe: Option<(u64, u64)>) -> AuditHeld {
        AuditHeld {
            next,
            broken_at,
            probe,
        }
    }

    #[test]
    fn the_chain_goes_on_connect_on_growth_on_a_probe_and_on_the_recheck_only() {
        let t0 = Instant::now();
        let mut a = AuditSync::default();
        // A new connection: what the centre holds is unknown.
        assert!(a.due(0, 1, t0));
        a.in_flight = Some(1);
        a.last_sent = Some(t0);
        assert!(!a.due(5, 1, t0), "one at a time");
        // An answer of an earlier session does not block this one.
        assert!(a.due(5, 2, t0));
        assert_eq!(a.answered(held(5, None, None)), None);
        assert!(!a.due(5, 1, t0), "nothing new");
        assert!(a.due(6, 1, t0), "the log grew");
        assert!(a.due(5, 1, t0 + AUDIT_RECHECK), "the head shown again");
        a.wait_until = Some(t0 + AUDIT_REFUSED_WAIT);
        assert!(!a.due(6, 1, t0 + AUDIT_RECHECK), "refused: wait");
        a.wait_until = None;
        a.reconnected();
        assert!(a.due(5, 2, t0));
    }

    #[test]
    fn after_a_break_only_the_probe_and_the_recheck_send_and_a_repeated_probe_waits() {
        let t0 = Instant::now();
        let mut a = AuditSync {
            last_sent: Some(t0),
            ..AuditSync::default()
        };
        assert_eq!(a.answered(held(10, Some(9), Some((0, 9)))), Some(9));
        assert!(a.due(20, 1, t0), "the probe");
        assert_eq!(a.answered(held(10, Some(4), Some((3, 4)))), Some(4));
        assert!(a.due(20, 1, t0));
        // The same probe again (an entry the edge cannot read): not every round.
        assert_eq!(a.answered(held(10, Some(4), Some((3, 4)))), None);
        assert!(
            !a.due(20, 1, t0),
            "grown past the centre, but it takes no more links"
        );
        assert!(a.due(20, 1, t0 + AUDIT_RECHECK));
        assert_eq!(a.answered(held(10, Some(4), None)), None);
        assert!(!a.due(20, 1, t0));
    }
}
