//! The journal sync protocol as a sans-IO state machine pair, in the style of quinn-proto: the
//! edge's [`EdgeSync`] and the reconciler's per-connection [`ReconcilerSync`] exchange
//! [`SyncMessage`]s. They own no socket, read no clock and draw no random numbers: the adapter
//! feeds inputs with the time (`handle`), sends what `poll_transmit` gives, performs what
//! `poll_action` asks, and wakes at `poll_timeout`.
//!
//! The protocol. On connect each side sends `Hello` with a summary of the (durable) records it
//! holds and their [`Versions`]. From then on each side sends, in batches, only the records whose
//! versions the other side's knowledge does not cover, at most a few batches in flight, re-sending a
//! batch's still-unacknowledged records after a timeout. The receiver merges a batch into its
//! journal only through `Action::Persist`, and acknowledges (`Ack`, with the versions it now holds)
//! only after the adapter reports `Input::Durable`. Knowledge of the peer only grows by joins, so
//! duplicated, reordered or late messages are harmless, and a record acknowledged is never sent
//! again (unless changed). A record the receiver refuses (another facility's, invalid, forged
//! settlement, conflicting facts) comes back in the `Ack` as rejected: the sender quarantines it
//! with the reason and the rest keeps flowing. The reconciler can send `SlowDown`; the edge then
//! sends no data before the delay has passed. Everything is resumable: after any interruption,
//! the next `Hello` tells each side what the other already holds.
//!
//! Must never: acknowledge before durable; send a record of another facility on a reconciler
//! connection; accept one; report synced while anything is unacknowledged or unpersisted.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use onshi_model::FacilityCode;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::audit_chain::{AuditHeld, AuditReport};
use crate::crdt::{
    Actor, CONFLICTING_FACTS, InvalidRecord, Journal, JournalRecord, JournalRecordV1,
    JournalRecordV1Ref, RecordId, Versions,
};

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// One protocol message. On the wire it is postcard behind a version tag ([`SyncMessage::encode`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SyncMessage {
    /// First message of a connection, repeated until the peer has shown it got it.
    Hello {
        facility: FacilityCode,
        /// Whether the sender has already received the peer's `Hello` on this connection.
        seen_yours: bool,
        have: Summary,
    },
    /// Records the receiver lacks.
    Batch {
        batch_id: u64,
        records: Vec<JournalRecord>,
    },
    /// Sent only once the batch's accepted records are durable at the sender of the `Ack`.
    Ack {
        batch_id: u64,
        acked: Vec<(RecordId, Versions)>,
        rejected: Vec<Rejection>,
    },
    /// Reconciler → edge: send no data for `delay_ms`.
    SlowDown { delay_ms: u64 },
    /// Edge → reconciler: the access log's chain (issue 18, [`crate::audit_chain`]). Carried by
    /// the sync RPC but not part of the journal's protocol: the adapters handle it, the state
    /// machines ignore it. Sent in its own RPC, so a reconciler that does not know it refuses
    /// that RPC alone.
    AuditLinks(AuditReport),
    /// Reconciler → edge: the answer to [`SyncMessage::AuditLinks`].
    AuditHeld(AuditHeld),
}

/// A record the receiver refused, with the reason for staff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub id: RecordId,
    pub versions: Versions,
    pub reason: String,
}

// V2 (issue 15): records carry staff's choice and the settlement revision. A V1 message from a peer
// not yet upgraded is still read (its records as revision 0 without a choice), and a message whose
// records use neither is still sent as V1, so that such a peer keeps syncing until staff choose.
#[derive(Serialize)]
enum WireRef<'a> {
    V1(SyncMessageV1Ref<'a>),
    V2(&'a SyncMessage),
}

/// [`SyncMessage`] in the V1 layout, borrowed (only a batch differs).
#[derive(Serialize)]
enum SyncMessageV1Ref<'a> {
    Hello {
        facility: &'a FacilityCode,
        seen_yours: &'a bool,
        have: &'a Summary,
    },
    Batch {
        batch_id: &'a u64,
        records: Vec<JournalRecordV1Ref<'a>>,
    },
    Ack {
        batch_id: &'a u64,
        acked: &'a Vec<(RecordId, Versions)>,
        rejected: &'a Vec<Rejection>,
    },
    SlowDown {
        delay_ms: &'a u64,
    },
}

impl SyncMessage {
    /// The message in the V1 layout, when every record it carries fits it.
    fn as_v1(&self) -> Option<SyncMessageV1Ref<'_>> {
        Some(match self {
            SyncMessage::Hello {
                facility,
                seen_yours,
                have,
            } => SyncMessageV1Ref::Hello {
                facility,
                seen_yours,
                have,
            },
            SyncMessage::Batch { batch_id, records } => SyncMessageV1Ref::Batch {
                batch_id,
                records: records
                    .iter()
                    .map(JournalRecord::as_v1)
                    .collect::<Option<_>>()?,
            },
            SyncMessage::Ack {
                batch_id,
                acked,
                rejected,
            } => SyncMessageV1Ref::Ack {
                batch_id,
                acked,
                rejected,
            },
            SyncMessage::SlowDown { delay_ms } => SyncMessageV1Ref::SlowDown { delay_ms },
            // Newer than V1: only in the V2 form.
            SyncMessage::AuditLinks(_) | SyncMessage::AuditHeld(_) => return None,
        })
    }
}

#[derive(Deserialize)]
enum Wire {
    V1(SyncMessageV1),
    V2(SyncMessage),
}

/// [`SyncMessage`] as sent before issue 15; only read.
#[derive(Deserialize)]
enum SyncMessageV1 {
    Hello {
        facility: FacilityCode,
        seen_yours: bool,
        have: Summary,
    },
    Batch {
        batch_id: u64,
        records: Vec<JournalRecordV1>,
    },
    Ack {
        batch_id: u64,
        acked: Vec<(RecordId, Versions)>,
        rejected: Vec<Rejection>,
    },
    SlowDown {
        delay_ms: u64,
    },
}

impl From<SyncMessageV1> for SyncMessage {
    fn from(m: SyncMessageV1) -> Self {
        match m {
            SyncMessageV1::Hello {
                facility,
                seen_yours,
                have,
            } => SyncMessage::Hello {
                facility,
                seen_yours,
                have,
            },
            SyncMessageV1::Batch { batch_id, records } => SyncMessage::Batch {
                batch_id,
                records: records.into_iter().map(JournalRecord::from).collect(),
            },
            SyncMessageV1::Ack {
                batch_id,
                acked,
                rejected,
            } => SyncMessage::Ack {
                batch_id,
                acked,
                rejected,
            },
            SyncMessageV1::SlowDown { delay_ms } => SyncMessage::SlowDown { delay_ms },
        }
    }
}

/// Why received bytes are not a sync message.
#[derive(Debug, Error)]
#[error("not a sync message (or an unknown version): {0}")]
pub struct DecodeError(#[from] postcard::Error);

impl SyncMessage {
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        match self.as_v1() {
            Some(v1) => postcard::to_allocvec(&WireRef::V1(v1)),
            None => postcard::to_allocvec(&WireRef::V2(self)),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(match postcard::from_bytes(bytes)? {
            Wire::V1(m) => m.into(),
            Wire::V2(m) => m,
        })
    }
}

/// What a side holds: runs of consecutive sequence numbers of one facility and node that share
/// the same versions. Compact when most records are at the same stage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub runs: Vec<Run>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub facility: FacilityCode,
    pub node: u32,
    pub first_seq: u64,
    pub count: u64,
    pub versions: Versions,
}

impl Summary {
    pub fn of<'a>(records: impl IntoIterator<Item = &'a JournalRecord>) -> Summary {
        let mut runs: Vec<Run> = Vec::new();
        for r in records {
            let id = r.id();
            let v = r.versions();
            if let Some(last) = runs.last_mut()
                && &last.facility == id.facility()
                && last.node == id.node()
                && last.versions == v
                && last.first_seq.checked_add(last.count) == Some(id.seq())
            {
                last.count += 1;
                continue;
            }
            runs.push(Run {
                facility: id.facility().clone(),
                node: id.node(),
                first_seq: id.seq(),
                count: 1,
                versions: v,
            });
        }
        Summary { runs }
    }

    /// Every (id, versions) of the summary. A run is capped at `limit` entries in total, so a
    /// hostile summary cannot make the receiver allocate without bound.
    pub fn entries(&self, limit: usize) -> impl Iterator<Item = (RecordId, Versions)> + '_ {
        self.runs
            .iter()
            .flat_map(|r| {
                (0..r.count).map_while(move |i| {
                    r.first_seq
                        .checked_add(i)
                        .map(|s| (RecordId::new(r.facility.clone(), r.node, s), r.versions))
                })
            })
            .take(limit)
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs, actions, configuration
// ---------------------------------------------------------------------------------------------

/// What the adapter tells the state machine.
// Inputs are moved once into `handle`, never stored in bulk: boxing the record buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A connection is up (the adapter has already authorised the peer).
    Connected,
    /// The connection is gone; in-flight batches are forgotten and recomputed on the next one.
    Disconnected,
    /// A message arrived from the peer.
    Message(SyncMessage),
    /// The records of `Action::Persist { persist_id }` are now on disk.
    Durable(u64),
    /// The owner changed or created a record and has already made the change durable.
    LocalChange(JournalRecord),
}

/// What the state machine asks the adapter to do.
// A short queue drained after every input; boxing the record buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Merge these records into the durable journal (`Journal::merge_record`), make them durable,
    /// then give `Input::Durable(persist_id)`. Persists may complete in any order (merge is a join).
    Persist {
        persist_id: u64,
        records: Vec<JournalRecord>,
    },
    /// The peer refused this record: merge it (it now carries the quarantine) into the journal,
    /// show it to staff. No confirmation needed: if lost, the peer refuses again next time.
    Quarantined {
        record: JournalRecord,
        reason: String,
    },
    /// The reconciler holds these records: mark them `Sent` (`JournalRecord::mark_sent`).
    Sent { ids: Vec<RecordId> },
    /// Sync status changed.
    Report(SyncReport),
    /// The peer broke the protocol (e.g. a `Hello` for another facility): close the connection.
    Close { reason: String },
}

/// What the status page shows about sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub synced: bool,
    /// Records the peer lacks (to send or in flight).
    pub outgoing: usize,
    /// Records the peer holds in a newer version than here (to receive).
    pub incoming: usize,
}

/// Tuning; the defaults suit one facility's link.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Records per batch.
    pub batch_records: usize,
    /// Unacknowledged batches at a time.
    pub max_batches_in_flight: usize,
    /// A batch unacknowledged this long has its unacknowledged records sent again.
    pub retransmit_ms: u64,
    /// `Hello` is repeated at this interval until the handshake is complete.
    pub hello_retransmit_ms: u64,
    /// Reconciler: past this many batches waiting for the disk, tell the edge to slow down.
    pub max_unpersisted_batches: usize,
    /// The delay asked for then.
    pub slow_down_ms: u64,
    /// Upper bound of entries read from one `Hello` summary.
    pub max_summary_entries: usize,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            batch_records: 64,
            max_batches_in_flight: 4,
            retransmit_ms: 2_000,
            hello_retransmit_ms: 1_000,
            max_unpersisted_batches: 8,
            slow_down_ms: 1_000,
            max_summary_entries: 10_000_000,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The shared core
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct InFlight {
    sent_at: u64,
    records: Vec<(RecordId, Versions)>,
}

#[derive(Debug)]
struct PendingPersist {
    /// The connection it arrived on; no `Ack` goes out on another.
    connection: u64,
    batch_id: u64,
    records: Vec<JournalRecord>,
    /// Ids acknowledged once durable (all accepted records of the batch).
    ack_ids: Vec<RecordId>,
    rejected: Vec<Rejection>,
}

#[derive(Debug)]
struct Core {
    me: Actor,
    facility: FacilityCode,
    config: SyncConfig,
    /// Mirrors the durable journal: changed only by durable persists and local changes.
    journal: Journal,
    connection: u64,
    connected: bool,
    got_peer_hello: bool,
    peer_saw_hello: bool,
    hello_due: Option<u64>,
    /// Versions the peer is known to hold (its `Hello`, its `Ack`s, what it sent us).
    peer_has: BTreeMap<RecordId, Versions>,
    /// Versions the peer refused on this connection.
    rejected: BTreeMap<RecordId, Versions>,
    /// Records the peer lacks.
    outgoing: BTreeSet<RecordId>,
    /// The records of `outgoing` to put in the next batches: every one not in flight at its
    /// current versions is here (some in flight may be too: `poll_transmit` drops them), so a
    /// batch is found without walking the thousands in flight.
    unsent: BTreeSet<RecordId>,
    /// Records the peer holds newer than we do.
    incoming: BTreeSet<RecordId>,
    in_flight: BTreeMap<u64, InFlight>,
    in_flight_ids: BTreeMap<RecordId, (u64, Versions)>,
    next_batch: u64,
    persists: BTreeMap<u64, PendingPersist>,
    next_persist: u64,
    transmits: VecDeque<SyncMessage>,
    actions: VecDeque<Action>,
    paused_until: u64,
    last_report: Option<SyncReport>,
}

impl Core {
    fn new(me: Actor, facility: FacilityCode, config: SyncConfig, journal: Journal) -> Self {
        Core {
            me,
            facility,
            config,
            journal,
            connection: 0,
            connected: false,
            got_peer_hello: false,
            peer_saw_hello: false,
            hello_due: None,
            peer_has: BTreeMap::new(),
            rejected: BTreeMap::new(),
            outgoing: BTreeSet::new(),
            unsent: BTreeSet::new(),
            incoming: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            in_flight_ids: BTreeMap::new(),
            next_batch: 0,
            persists: BTreeMap::new(),
            next_persist: 0,
            transmits: VecDeque::new(),
            actions: VecDeque::new(),
            paused_until: 0,
            last_report: None,
        }
    }

    fn peer(&self) -> Actor {
        match self.me {
            Actor::Edge => Actor::Reconciler,
            Actor::Reconciler => Actor::Edge,
        }
    }

    fn reset_connection(&mut self) {
        self.got_peer_hello = false;
        self.peer_saw_hello = false;
        self.hello_due = None;
        self.peer_has.clear();
        self.rejected.clear();
        self.outgoing.clear();
        self.unsent.clear();
        self.incoming.clear();
        self.in_flight.clear();
        self.in_flight_ids.clear();
        self.transmits.clear();
        self.paused_until = 0;
    }

    fn handle(&mut self, now: u64, input: Input) {
        match input {
            Input::Connected => {
                self.reset_connection();
                self.connection += 1;
                self.connected = true;
                self.hello_due = Some(now);
            }
            Input::Disconnected => {
                self.reset_connection();
                self.connected = false;
            }
            Input::Message(m) => {
                if self.connected {
                    self.on_message(now, m);
                }
            }
            Input::Durable(pid) => self.on_durable(pid),
            Input::LocalChange(record) => {
                if record.id().facility() != &self.facility && self.me == Actor::Reconciler {
                    // Another facility's record never enters this connection's view.
                    return;
                }
                let id = record.id().clone();
                self.journal.merge_record(record);
                self.refresh(&id);
            }
        }
        self.report();
    }

    fn on_message(&mut self, now: u64, m: SyncMessage) {
        match m {
            SyncMessage::Hello {
                facility,
                seen_yours,
                have,
            } => {
                if facility != self.facility {
                    self.actions.push_back(Action::Close {
                        reason: format!(
                            "peer says facility {facility}; this connection is for {}",
                            self.facility
                        ),
                    });
                    self.connected = false;
                    self.reset_connection();
                    return;
                }
                let first = !self.got_peer_hello;
                self.got_peer_hello = true;
                let mut touched: Vec<RecordId> = Vec::new();
                for (id, v) in have.entries(self.config.max_summary_entries) {
                    if self.me == Actor::Reconciler && id.facility() != &self.facility {
                        continue;
                    }
                    self.learn(id.clone(), v);
                    touched.push(id);
                }
                if first {
                    // Everything held here is now comparable with what the peer holds.
                    touched.extend(self.journal.ids().cloned());
                    touched.extend(self.peer_has.keys().cloned());
                }
                for id in &touched {
                    self.refresh(id);
                }
                if seen_yours {
                    self.peer_saw_hello = true;
                } else {
                    // The peer has not got ours yet: answer at once.
                    self.hello_due = Some(now);
                }
            }
            SyncMessage::Batch { batch_id, records } => {
                self.peer_saw_hello = true;
                self.on_batch(batch_id, records);
            }
            SyncMessage::Ack {
                batch_id,
                acked,
                rejected,
            } => {
                self.peer_saw_hello = true;
                if let Some(f) = self.in_flight.remove(&batch_id) {
                    for (id, _) in f.records {
                        if self
                            .in_flight_ids
                            .get(&id)
                            .is_some_and(|(b, _)| *b == batch_id)
                        {
                            self.in_flight_ids.remove(&id);
                            // Not acknowledged after all (refresh below takes off what was).
                            if self.outgoing.contains(&id) {
                                self.unsent.insert(id);
                            }
                        }
                    }
                }
                for (id, v) in acked {
                    self.learn(id.clone(), v);
                    self.refresh(&id);
                }
                for r in rejected {
                    self.on_rejected(r);
                }
            }
            SyncMessage::SlowDown { delay_ms } => {
                if self.me == Actor::Edge {
                    self.paused_until = self.paused_until.max(now.saturating_add(delay_ms));
                }
            }
            // The access log's chain is the adapters' business, not the journal's.
            SyncMessage::AuditLinks(_) | SyncMessage::AuditHeld(_) => {}
        }
    }

    /// Joins what the peer holds; stale news changes nothing.
    fn learn(&mut self, id: RecordId, v: Versions) {
        let e = self.peer_has.entry(id).or_default();
        *e = e.join(&v);
    }

    fn on_rejected(&mut self, r: Rejection) {
        let e = self.rejected.entry(r.id.clone()).or_default();
        *e = e.join(&r.versions);
        let peer = self.peer();
        if let Some(rec) = self.journal.get_mut(&r.id) {
            let before = rec.quarantine().cloned();
            rec.note_rejection(peer, &r.reason);
            if rec.quarantine() != before.as_ref() {
                self.actions.push_back(Action::Quarantined {
                    record: rec.clone(),
                    reason: r.reason.clone(),
                });
            }
        }
        self.refresh(&r.id);
    }

    /// Why this side refuses a received record, if it does.
    fn refuse(&self, r: &JournalRecord) -> Option<String> {
        if r.id().facility() != &self.facility {
            return Some(format!(
                "record {} belongs to facility {}; this connection is for facility {}",
                r.id(),
                r.id().facility(),
                self.facility
            ));
        }
        if let Err(e) = r.validate() {
            return Some(invalid_reason(&e));
        }
        if self.me == Actor::Reconciler {
            let mine = self.journal.get(r.id());
            let my_version = mine.map_or(0, |m| m.versions().reconciler);
            if r.versions().reconciler > my_version {
                return Some(format!(
                    "record {} carries reconciler changes the reconciler never made",
                    r.id()
                ));
            }
            // A settlement of an older revision than ours loses the merge (the edge chose again
            // before our settlement against its first choice reached it): not a forgery.
            let my_revision = mine.map(|m| m.settlement_revision());
            if let Some(s) = r.settlement()
                && Some(r.settlement_revision()) >= my_revision
                && mine.and_then(|m| m.settlement()) != Some(s)
            {
                return Some(format!(
                    "record {} carries a settlement the reconciler did not write",
                    r.id()
                ));
            }
        }
        None
    }

    fn on_batch(&mut self, batch_id: u64, records: Vec<JournalRecord>) {
        let mut rejected = Vec::new();
        let mut ack_ids = Vec::new();
        let mut to_persist = Vec::new();
        for mut r in records {
            if let Some(reason) = self.refuse(&r) {
                rejected.push(Rejection {
                    id: r.id().clone(),
                    versions: r.versions(),
                    reason,
                });
                continue;
            }
            let id = r.id().clone();
            self.learn(id.clone(), r.versions());
            if self.me == Actor::Reconciler {
                r.mark_sent();
            }
            let current = self.journal.get(&id);
            let mut merged = current.cloned().unwrap_or_else(|| r.clone());
            crdts::CvRDT::merge(&mut merged, r.clone());
            let conflict_new = merged.has_conflicting_facts()
                && !current.is_some_and(JournalRecord::has_conflicting_facts);
            if merged.has_conflicting_facts() {
                // Kept here, quarantined by the merge; the sender quarantines its copy.
                rejected.push(Rejection {
                    id: id.clone(),
                    versions: r.versions(),
                    reason: CONFLICTING_FACTS.to_string(),
                });
            } else {
                ack_ids.push(id.clone());
            }
            if current != Some(&merged) || conflict_new {
                to_persist.push(r);
            }
            self.refresh(&id);
        }
        if to_persist.is_empty() {
            let acked = self.versions_of(&ack_ids);
            self.transmits.push_back(SyncMessage::Ack {
                batch_id,
                acked,
                rejected,
            });
        } else {
            let persist_id = self.next_persist;
            self.next_persist += 1;
            self.actions.push_back(Action::Persist {
                persist_id,
                records: to_persist.clone(),
            });
            self.persists.insert(
                persist_id,
                PendingPersist {
                    connection: self.connection,
                    batch_id,
                    records: to_persist,
                    ack_ids,
                    rejected,
                },
            );
            // Once per crossing of the threshold, not once per batch.
            if self.me == Actor::Reconciler
                && self.persists.len() == self.config.max_unpersisted_batches + 1
            {
                self.transmits.push_back(SyncMessage::SlowDown {
                    delay_ms: self.config.slow_down_ms,
                });
            }
        }
    }

    fn versions_of(&self, ids: &[RecordId]) -> Vec<(RecordId, Versions)> {
        ids.iter()
            .filter_map(|id| self.journal.get(id).map(|r| (id.clone(), r.versions())))
            .collect()
    }

    fn on_durable(&mut self, pid: u64) {
        let Some(p) = self.persists.remove(&pid) else {
            return;
        };
        for r in p.records {
            let id = r.id().clone();
            self.journal.merge_record(r);
            self.refresh(&id);
        }
        if self.connected && p.connection == self.connection {
            let acked = self.versions_of(&p.ack_ids);
            self.transmits.push_back(SyncMessage::Ack {
                batch_id: p.batch_id,
                acked,
                rejected: p.rejected,
            });
        }
    }

    /// Recomputes whether the peer lacks `id` and whether we lack what the peer has.
    fn refresh(&mut self, id: &RecordId) {
        if !self.got_peer_hello {
            return;
        }
        let mine = self.journal.get(id).map(JournalRecord::versions);
        let theirs = self.peer_has.get(id).copied();
        let refused = self.rejected.get(id).copied();
        let lacks = match mine {
            Some(m) => {
                let covered = theirs.is_some_and(|t| m.le(&t)) || refused.is_some_and(|x| m.le(&x));
                let foreign = self.me == Actor::Reconciler && id.facility() != &self.facility;
                !covered && !foreign
            }
            None => false,
        };
        if lacks {
            self.outgoing.insert(id.clone());
            self.unsent.insert(id.clone());
        } else {
            self.outgoing.remove(id);
            self.unsent.remove(id);
            if self.me == Actor::Edge
                && theirs.is_some()
                && let Some(rec) = self.journal.get_mut(id)
                && rec.state() < onshi_model::record::RecordState::Sent
            {
                rec.mark_sent();
                self.actions.push_back(Action::Sent {
                    ids: vec![id.clone()],
                });
            }
        }
        let behind = match (theirs, mine) {
            (Some(t), Some(m)) => !t.le(&m),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if behind {
            self.incoming.insert(id.clone());
        } else {
            self.incoming.remove(id);
        }
    }

    fn is_synced(&self) -> bool {
        self.connected
            && self.got_peer_hello
            && self.outgoing.is_empty()
            && self.incoming.is_empty()
            && self.persists.is_empty()
    }

    fn report(&mut self) {
        let r = SyncReport {
            synced: self.is_synced(),
            outgoing: self.outgoing.len(),
            incoming: self.incoming.len(),
        };
        let changed = match &self.last_report {
            None => true,
            Some(last) => last.synced != r.synced || (r.outgoing == 0) != (last.outgoing == 0),
        };
        if changed {
            self.actions.push_back(Action::Report(r.clone()));
            self.last_report = Some(r);
        }
    }

    fn poll_transmit(&mut self, now: u64) -> Option<SyncMessage> {
        if !self.connected {
            return None;
        }
        if let Some(due) = self.hello_due {
            if now >= due {
                let handshake_done = self.got_peer_hello && self.peer_saw_hello;
                self.hello_due = if handshake_done {
                    None
                } else {
                    Some(now.saturating_add(self.config.hello_retransmit_ms))
                };
                return Some(SyncMessage::Hello {
                    facility: self.facility.clone(),
                    seen_yours: self.got_peer_hello,
                    have: Summary::of(self.journal.iter()),
                });
            }
            if self.got_peer_hello && self.peer_saw_hello {
                self.hello_due = None;
            }
        }
        if let Some(m) = self.transmits.pop_front() {
            return Some(m);
        }
        if !self.got_peer_hello || now < self.paused_until {
            return None;
        }
        self.expire_batches(now);
        if self.in_flight.len() >= self.config.max_batches_in_flight {
            return None;
        }
        let mut records = Vec::new();
        let mut taken = Vec::new();
        for id in &self.unsent {
            if records.len() >= self.config.batch_records.max(1) {
                break;
            }
            taken.push(id.clone());
            if !self.outgoing.contains(id) {
                continue;
            }
            let Some(r) = self.journal.get(id) else {
                continue;
            };
            if self
                .in_flight_ids
                .get(id)
                .is_some_and(|(_, v)| r.versions().le(v))
            {
                continue;
            }
            records.push(r.clone());
        }
        for id in &taken {
            self.unsent.remove(id);
        }
        if records.is_empty() {
            return None;
        }
        let batch_id = self.next_batch;
        self.next_batch += 1;
        let entries: Vec<(RecordId, Versions)> = records
            .iter()
            .map(|r| (r.id().clone(), r.versions()))
            .collect();
        for (id, v) in &entries {
            self.in_flight_ids.insert(id.clone(), (batch_id, *v));
        }
        self.in_flight.insert(
            batch_id,
            InFlight {
                sent_at: now,
                records: entries,
            },
        );
        Some(SyncMessage::Batch { batch_id, records })
    }

    /// Batches unacknowledged past the timeout are forgotten; their records still lacking at the
    /// peer go out again in new batches (never those acknowledged meanwhile).
    fn expire_batches(&mut self, now: u64) {
        let expired: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| now >= f.sent_at.saturating_add(self.config.retransmit_ms))
            .map(|(b, _)| *b)
            .collect();
        for b in expired {
            if let Some(f) = self.in_flight.remove(&b) {
                for (id, _) in f.records {
                    if self.in_flight_ids.get(&id).is_some_and(|(x, _)| *x == b) {
                        self.in_flight_ids.remove(&id);
                        if self.outgoing.contains(&id) {
                            self.unsent.insert(id);
                        }
                    }
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<u64> {
        if !self.connected {
            return None;
        }
        let mut t: Option<u64> = self.hello_due;
        let mut consider = |x: u64| t = Some(t.map_or(x, |y| y.min(x)));
        for f in self.in_flight.values() {
            consider(f.sent_at.saturating_add(self.config.retransmit_ms));
        }
        if self.paused_until > 0 && !self.outgoing.is_empty() {
            consider(self.paused_until);
        }
        t
    }
}

fn invalid_reason(e: &InvalidRecord) -> String {
    format!("invalid record: {e}")
}

// ---------------------------------------------------------------------------------------------
// The two sides
// ---------------------------------------------------------------------------------------------

macro_rules! sans_io_api {
    () => {
        /// Feeds one input, at `now_ms` (milliseconds on any monotonic clock).
        pub fn handle(&mut self, now_ms: u64, input: Input) {
            self.core.handle(now_ms, input);
        }

        /// The next message to send, if any. Call until `None` after every input and timeout.
        pub fn poll_transmit(&mut self, now_ms: u64) -> Option<SyncMessage> {
            let m = self.core.poll_transmit(now_ms);
            self.core.report();
            m
        }

        /// The next thing the adapter must do, if any.
        pub fn poll_action(&mut self) -> Option<Action> {
            self.core.actions.pop_front()
        }

        /// When to call `poll_transmit` again even if nothing arrives.
        pub fn poll_timeout(&self) -> Option<u64> {
            self.core.poll_timeout()
        }

        /// Connected, handshake done, nothing for the peer unacknowledged, nothing from the peer
        /// missing or waiting for the disk.
        pub fn is_synced(&self) -> bool {
            self.core.is_synced()
        }

        /// The sync status now (what `Action::Report` would say), for status pages.
        pub fn status(&self) -> SyncReport {
            SyncReport {
                synced: self.core.is_synced(),
                outgoing: self.core.outgoing.len(),
                incoming: self.core.incoming.len(),
            }
        }

        /// The journal as far as it is durable (persists confirmed, local changes given).
        pub fn journal(&self) -> &Journal {
            &self.core.journal
        }

        pub fn facility(&self) -> &FacilityCode {
            &self.core.facility
        }
    };
}

/// The edge's side of one facility's sync. Lives across connections; rebuilt from the durable
/// journal after a restart.
#[derive(Debug)]
pub struct EdgeSync {
    core: Core,
}

impl EdgeSync {
    pub fn new(config: SyncConfig, facility: FacilityCode, journal: Journal) -> Self {
        EdgeSync {
            core: Core::new(Actor::Edge, facility, config, journal),
        }
    }

    sans_io_api!();
}

/// The reconciler's side of one edge connection. `facility` is the one the peer's certificate
/// authorises; only its records are accepted or sent.
#[derive(Debug)]
pub struct ReconcilerSync {
    core: Core,
}

impl ReconcilerSync {
    /// `journal` may hold other facilities' records: only `facility`'s are kept.
    pub fn new(config: SyncConfig, facility: FacilityCode, journal: &Journal) -> Self {
        let own = journal.of_facility(&facility);
        ReconcilerSync {
            core: Core::new(Actor::Reconciler, facility, config, own),
        }
    }

    /// The reconciler is under load (e.g. many facilities draining at once): ask this edge to
    /// send no data for `delay_ms`.
    pub fn slow_down(&mut self, delay_ms: u64) {
        if self.core.connected {
            self.core
                .transmits
                .push_back(SyncMessage::SlowDown { delay_ms });
        }
    }

    sans_io_api!();
}
