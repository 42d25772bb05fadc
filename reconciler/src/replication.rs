//! The reconciler's adapter of the sync protocol: one [`ReconcilerSync`] per facility, fed by the
//! `Request::Sync` RPC of that facility's authorised connection (the facility comes from the
//! client certificate, never from a message). A `Hello` from the edge that has not yet seen ours
//! starts a new session (`Input::Connected`), built from the facility's durable journal tree
//! `journal.<facility>`. Messages without a session are answered with `sync_no_session`, so the
//! edge starts over with a `Hello`.
//!
//! After every input the adapter carries out the actions: `Persist` is a CRDT merge into the tree
//! then an fsync of the store, then `Durable`; `Quarantined` is merged too. Every provisional record
//! that became durable here unsettled, or with a staff choice its settlement was not made against
//! (issue 15: settled again against the chosen person, next revision), is settled against the registry (central search from the
//! store's index) with `settled_at` = now, the settlement written through the store and made durable, and
//! only then given to the state machine as `LocalChange`, so it flows back to the edge. The answer
//! carries every message the state machine has to send at that moment.
//!
//! An edge's access-log report (`SyncMessage::AuditLinks`, issue 18) is not the journal's: it is
//! taken by the store ([`CentralStore::audit_receive`], decided by [`crate::audit::receive`]) and
//! answered with `SyncMessage::AuditHeld`, without a session; an RPC carrying only reports never
//! touches the facility's sync session. A break newly found (or narrowed) is logged as a warning
//! with the facility and the entry's number only.
//!
//! Must never: acknowledge before the fsync; serve one facility's records to another's connection
//! (the state machine filters, and each facility has its own tree); settle from anything but the
//! stored record.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use onshi_model::FacilityCode;

use crate::metrics::ReconcilerMetrics;
use crate::settlement::{StoreView, settle, settle_chosen};
use crate::store::{CentralError, CentralStore};
use onshi_sync::crdt::{Actor, JournalRecord, RecordFacts, RecordId};
use onshi_sync::protocol::{Action, Input, ReconcilerSync, SyncConfig, SyncMessage};
use onshi_sync::wire::Response;

pub use onshi_sync::wire::NO_SESSION;

struct Session {
    sync: ReconcilerSync,
    /// The facility's revision feed read so far: records revised elsewhere (a registry change
    /// settled again by any instance) are given to the state machine as they appear.
    revisions: u64,
}

/// The reconciler's side of the protocol: settlements go back in up to 64 batches at a time (as
/// many as the edge sends: a slow, long line holds several), and a batch is sent again only after the edge's RPC timeout (an
/// answer may take that long to arrive).
pub fn reconciler_sync_config() -> SyncConfig {
    SyncConfig {
        max_batches_in_flight: 64,
        batch_records: 64,
        retransmit_ms: 6_000,
        ..SyncConfig::default()
    }
}

/// Data batches (settled records going back) in one RPC answer, besides every acknowledgement
/// due. Answers stay small, so an answer carrying acknowledgements (which let the edge send more)
/// never waits behind tens of kilobytes of settlements on a full line, and the settlements spread
/// over the edge's RPCs in flight. Measured with `onshi-drain` (BENCHMARKS.md): 1 drained faster
/// than 2, and both than no limit (up to the whole window in one answer).
pub const MAX_BATCHES_PER_ANSWER: usize = 1;

/// Every facility's sync session.
pub struct Replication {
    store: Arc<dyn CentralStore>,
    config: SyncConfig,
    sessions: Mutex<HashMap<FacilityCode, Arc<Mutex<Option<Session>>>>>,
    clock: Instant,
    metrics: Arc<ReconcilerMetrics>,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication").finish_non_exhaustive()
    }
}

impl Replication {
    pub fn new(store: Arc<dyn CentralStore>, metrics: Arc<ReconcilerMetrics>) -> Self {
        Replication {
            metrics,
            store,
            config: reconciler_sync_config(),
            sessions: Mutex::default(),
            clock: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// One `Request::Sync` of `facility`'s authorised connection. Blocking (touches the disk).
    pub fn call(&self, facility: &FacilityCode, frames: Vec<Vec<u8>>) -> Response {
        let mut messages = Vec::with_capacity(frames.len());
        for f in &frames {
            match SyncMessage::decode(f) {
                Ok(m) => messages.push(m),
                Err(e) => {
                    tracing::warn!(%facility, error = %onshi_model::Untrusted(&e.to_string()), "undecodable sync message");
                    return Response::error("bad_frame", e.to_string());
                }
            }
        }
        let (reports, messages): (Vec<_>, Vec<_>) = messages
            .into_iter()
            .partition(|m| matches!(m, SyncMessage::AuditLinks(_)));
        let mut audit_answers = Vec::new();
        for m in reports {
            if let SyncMessage::AuditLinks(report) = m {
                match self.audit_report(facility, &report) {
                    Ok(frame) => audit_answers.push(frame),
                    Err(CentralError::BadReport(e)) => {
                        tracing::warn!(%facility, error = %e, "malformed access log report refused");
                        return Response::error("bad_report", e.to_string());
                    }
                    Err(e) => {
                        tracing::error!(%facility, error = %e, "access log chain not recorded");
                        return Response::error("store_unavailable", e.to_string());
                    }
                }
            }
        }
        if messages.is_empty() && !audit_answers.is_empty() {
            return Response::Sync(audit_answers);
        }
        let slot = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.entry(facility.clone()).or_default().clone()
        };
        let asked = Instant::now();
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        let waited = asked.elapsed();
        self.metrics.sync_rounds.fetch_add(1, Ordering::Relaxed);
        let result = self.run(facility, &mut slot, messages);
        tracing::debug!(
            %facility,
            waited_ms = waited.as_millis() as u64,
            took_ms = (asked.elapsed() - waited).as_millis() as u64,
            frames_in = frames.len(),
            "sync RPC handled"
        );
        match result {
            Ok(Response::Sync(mut out)) => {
                out.extend(audit_answers);
                Response::Sync(out)
            }
            Ok(resp) => resp,
            Err(e) => {
                tracing::error!(%facility, error = %e, "sync journal unavailable; session dropped");
                *slot = None;
                Response::error("store_unavailable", e.to_string())
            }
        }
    }

    /// Takes an access-log report through the store; the encoded `AuditHeld` answer.
    fn audit_report(
        &self,
        facility: &FacilityCode,
        report: &onshi_sync::audit_chain::AuditReport,
    ) -> Result<Vec<u8>, CentralError> {
        let receipt = self.store.audit_receive(facility, report, Utc::now())?;
        if receipt.news
            && let Some(b) = &receipt.chain.brk
        {
            tracing::warn!(
                %facility,
                entry = b.seq,
                kind = b.kind.as_str(),
                exact = b.exact(),
                agreed_below = b.agreed_below,
                "access log chain broken: the facility's log no longer continues the chain the centre holds (onshi-reconciler audit verify --facility)"
            );
        }
        SyncMessage::AuditHeld(receipt.answer)
            .encode()
            .map_err(|e| CentralError::Corrupt {
                what: "sync message".into(),
                reason: e.to_string(),
            })
    }

    fn run(
        &self,
        facility: &FacilityCode,
        slot: &mut Option<Session>,
        messages: Vec<SyncMessage>,
    ) -> Result<Response, CentralError> {
        const CLOSED: &str = "the sync session was closed: start again with Hello";
        for m in messages {
            if let SyncMessage::Hello {
                seen_yours: false, ..
            } = &m
            {
                // What the old session still had to do is done (it acknowledges nothing the
                // edge will hear of; the new session's Hello tells it what is here).
                if let Some(old) = slot.as_mut()
                    && !self.drain(facility, old)?
                {
                    tracing::debug!(%facility, "the old session closed before a new Hello");
                }
                *slot = Some(self.open_session(facility)?);
            }
            let Some(session) = slot.as_mut() else {
                return Ok(Response::error(
                    NO_SESSION,
                    "no sync session for this connection: start with Hello",
                ));
            };
            let now = self.now_ms();
            session.sync.handle(now, Input::Message(m));
        }
        let Some(session) = slot.as_mut() else {
            return Ok(Response::error(
                NO_SESSION,
                "no sync session for this connection: start with Hello",
            ));
        };
        // Every batch of the RPC persisted with one fsync, then acknowledged and settled.
        if !self.drain(facility, session)? {
            *slot = None;
            return Ok(Response::error(NO_SESSION, CLOSED));
        }
        // Settlements revised since (by this instance or another), to go back to the edge.
        let (revised, cursor) = self.store.revisions(facility, session.revisions)?;
        session.revisions = cursor;
        let now = self.now_ms();
        for r in revised {
            session.sync.handle(now, Input::LocalChange(r));
        }
        let now = self.now_ms();
        let mut out = Vec::new();
        let mut batches = 0;
        while batches < MAX_BATCHES_PER_ANSWER
            && let Some(m) = session.sync.poll_transmit(now)
        {
            if matches!(m, SyncMessage::Batch { .. }) {
                batches += 1;
            }
            out.push(m.encode().map_err(|e| CentralError::Corrupt {
                what: "sync message".into(),
                reason: e.to_string(),
            })?);
        }
        // Transmitting can emit a report.
        self.drain(facility, session)?;
        Ok(Response::Sync(out))
    }

    /// A new session from the durable journal; provisional records left unsettled by a crash
    /// between their persist and their settlement (here or in another instance) are settled first.
    fn open_session(&self, facility: &FacilityCode) -> Result<Session, CentralError> {
        // The feed's cursor before the journal is read: a revision in between is sent twice
        // (harmless: the state machine merges), never missed.
        let revisions = self.store.revision_cursor(facility)?;
        let journal = self.store.journal(facility)?;
        let unsettled: Vec<RecordId> = journal
            .iter()
            .filter(|r| needs_settlement(r))
            .map(|r| r.id().clone())
            .collect();
        let mut sync = ReconcilerSync::new(self.config.clone(), facility.clone(), &journal);
        let settled = self.settle_all(facility, &unsettled)?;
        let now = self.now_ms();
        for r in settled {
            sync.handle(now, Input::LocalChange(r));
        }
        sync.handle(now, Input::Connected);
        tracing::info!(%facility, records = journal.len(), "sync session started");
        Ok(Session { sync, revisions })
    }

    /// Settles each record that still needs it, under the store's lock (whichever instance gets
    /// there first settles it; the others find it settled), durable on return.
    fn settle_all(
        &self,
        facility: &FacilityCode,
        ids: &[RecordId],
    ) -> Result<Vec<JournalRecord>, CentralError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let view = StoreView {
            store: self.store.as_ref(),
        };
        let mut failed = 0usize;
        let mut decide = |current: &JournalRecord| -> Option<JournalRecord> {
            if !needs_settlement(current) {
                return None;
            }
            let p = current.provisional()?;
            // Staff's choice under an ambiguous verdict: settle again against that person.
            let chosen = current
                .needs_resettlement()
                .then(|| current.choice().map(|c| c.person_id.clone()))
                .flatten();
            let verdict = match &chosen {
                Some(person) => settle_chosen(&p, person, &view, Utc::now()),
                None => settle(&p, &view, Utc::now()),
            };
            let settlement = match verdict {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(record = %current.id(), error = %e, "settlement failed (registry unavailable); retried with the next session");
                    failed += 1;
                    return None;
                }
            };
            let mut rec = current.clone();
            let written = if chosen.is_some() {
                rec.resettle(Actor::Reconciler, settlement)
            } else {
                rec.settle(Actor::Reconciler, settlement)
            };
            written.ok().map(|()| rec)
        };
        let done = self.store.update(facility, ids, false, &mut decide)?;
        // A record left unsettled must not wait for the edge to reconnect: the session is
        // dropped (the error below), the edge starts a new one, and the new session settles
        // what is still unsettled. What was settled is logged first.
        // Logged once durable: a crash before the commit settles again after restart, and the
        // log then says so once, not twice.
        for rec in &done {
            let kind = rec.settlement().map(|s| s.kind);
            if let Some(k) = kind {
                self.metrics.settlements.inc(&[k.as_str()]);
            }
            tracing::info!(record = %rec.id(), kind = ?kind, revision = rec.settlement_revision(), "provisional record settled");
        }
        if failed > 0 {
            return Err(CentralError::Database(format!(
                "{failed} record(s) could not be settled (the registry did not answer); the sync session starts over"
            )));
        }
        Ok(done)
    }

    /// Carries out the state machine's actions; false if it asked to close the session.
    fn drain(&self, facility: &FacilityCode, session: &mut Session) -> Result<bool, CentralError> {
        loop {
            let mut persisted: Vec<u64> = Vec::new();
            let mut records: Vec<JournalRecord> = Vec::new();
            let (mut persisted_records, mut quarantined) = (0u64, 0u64);
            while let Some(a) = session.sync.poll_action() {
                match a {
                    Action::Persist {
                        persist_id,
                        records: batch,
                    } => {
                        persisted_records += batch.len() as u64;
                        records.extend(batch);
                        persisted.push(persist_id);
                    }
                    Action::Quarantined { record, reason } => {
                        tracing::warn!(%facility, record = %record.id(), reason = %onshi_model::Untrusted(&reason), "record quarantined");
                        records.push(record);
                        quarantined += 1;
                    }
                    Action::Sent { .. } => {}
                    Action::Report(r) => {
                        tracing::debug!(%facility, synced = r.synced, outgoing = r.outgoing, incoming = r.incoming, "sync")
                    }
                    Action::Close { reason } => {
                        tracing::warn!(%facility, reason = %onshi_model::Untrusted(&reason), "sync session closed: the edge broke the protocol");
                        return Ok(false);
                    }
                }
            }
            if records.is_empty() && persisted.is_empty() {
                return Ok(true);
            }
            // Every persist of this round in one transaction (one fsync), then the
            // acknowledgements.
            let merged = self.store.merge(facility, records)?;
            let to_settle: Vec<RecordId> = merged
                .iter()
                .filter(|r| needs_settlement(r))
                .map(|r| r.id().clone())
                .collect();
            self.metrics
                .records_persisted
                .fetch_add(persisted_records, Ordering::Relaxed);
            self.metrics
                .quarantined
                .fetch_add(quarantined, Ordering::Relaxed);
            let now = self.now_ms();
            for pid in persisted {
                session.sync.handle(now, Input::Durable(pid));
            }
            for r in self.settle_all(facility, &to_settle)? {
                session.sync.handle(now, Input::LocalChange(r));
            }
        }
    }
}

/// A provisional record, durable here, not set aside, and not yet settled or with a choice of
/// person its settlement was not made against.
fn needs_settlement(r: &JournalRecord) -> bool {
    matches!(r.facts(), RecordFacts::Provisional(_))
        && r.quarantine().is_none()
        && (r.settlement().is_none() || r.needs_resettlement())
}
