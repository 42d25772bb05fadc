//! The facility's journal as a state-based CRDT (a join-semilattice): a map from record id to
//! record, each record's facts written once by its creator, a lifecycle that only moves forward,
//! a quarantine that once set stays set, and a settlement only the reconciler writes. Under an
//! `ambiguous` settlement the edge records staff's [`Choice`] of person; the reconciler then
//! settles again against that person, under a higher settlement revision (issue 15). When the
//! registry changes for the people a settlement could concern, the reconciler may revise it
//! ([`JournalRecord::revise`], issue 16): the same register, one revision higher, in any
//! lifecycle state (a closed record stays closed; the edge shows the revision as news).
//!
//! Encodings: a record with a revision above 0 is stored and sent in the V2 layout only (V1 has
//! no revision, so a downgrade would silently lose it). A peer that reads only V1 (before issue
//! 15) cannot decode such a message: it logs it as undecodable and never acknowledges that batch,
//! as for a staff choice; it never takes an older settlement for the newer one.
//!
//! Laws (checked by `tests/crdt_laws.rs`): for journals or records `a`, `b`, `c` of the same id,
//! `merge` is commutative (`a ⊔ b = b ⊔ a`), associative (`(a ⊔ b) ⊔ c = a ⊔ (b ⊔ c)`) and
//! idempotent (`a ⊔ a = a`); it never loses a record and never moves a status backwards.
//! Writer rules are enforced by the operations: only the reconciler settles, only the edge closes
//! (and only a settled record).
//!
//! This module does no IO and reads no clock. It must never resolve two different sets of facts for
//! the same id silently: such a record is quarantined (deterministically, whatever the merge order).

use std::collections::btree_map::{self, BTreeMap};
use std::fmt;

use chrono::{DateTime, Utc};
use crdts::CvRDT;
use onshi_model::record::SettlementKind;
use onshi_model::record::{ProvisionalRecord, RecordState, Settlement};
use onshi_model::{CheckRequest, FacilityCode, PersonId, Source, Validity};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The quarantine reason of a record whose id was seen with two different sets of facts.
pub const CONFLICTING_FACTS: &str = "conflicting facts for the same id";

/// Who performs an operation on the journal. Writer rules depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Actor {
    /// The facility's edge node: creates records, writes facts and closes settled items.
    Edge,
    /// The central reconciler: the only writer of settlements.
    Reconciler,
}

// ---------------------------------------------------------------------------------------------
// Record ids
// ---------------------------------------------------------------------------------------------

/// A record id, unique without coordination: facility code, the edge node's id (8 lower-case hex
/// digits, chosen at install) and the node's own sequence (at least 10 digits, zero-padded), e.g.
/// `1311234567-3f2a9c01-0000000042`. Orders by facility, node, then sequence.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RecordId {
    facility: FacilityCode,
    node: u32,
    seq: u64,
}

/// Why a string is not a record id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordIdError {
    #[error("record id `{0}`: expected FACILITY-NODE-SEQ, e.g. 1311234567-3f2a9c01-0000000042")]
    Shape(String),
    #[error("record id `{id}`: facility: {reason}")]
    Facility { id: String, reason: String },
    #[error("record id `{0}`: node: expected 8 lower-case hex digits")]
    Node(String),
    #[error("record id `{0}`: sequence: expected at least 10 decimal digits, zero-padded")]
    Seq(String),
}

impl RecordId {
    pub fn new(facility: FacilityCode, node: u32, seq: u64) -> Self {
        RecordId {
            facility,
            node,
            seq,
        }
    }

    pub fn parse(s: &str) -> Result<Self, RecordIdError> {
        let mut parts = s.split('-');
        let (Some(f), Some(n), Some(q), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(RecordIdError::Shape(s.to_string()));
        };
        let facility = FacilityCode::parse(f).map_err(|e| RecordIdError::Facility {
            id: s.to_string(),
            reason: e.message,
        })?;
        // The parser folds full-width digits; an id must be in its canonical form already.
        if facility.as_str() != f {
            return Err(RecordIdError::Facility {
                id: s.to_string(),
                reason: "not in canonical form (10 ASCII digits)".into(),
            });
        }
        if n.len() != 8
            || !n
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(RecordIdError::Node(s.to_string()));
        }
        let node = u32::from_str_radix(n, 16).map_err(|_| RecordIdError::Node(s.to_string()))?;
        if !q.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RecordIdError::Seq(s.to_string()));
        }
        let seq: u64 = q.parse().map_err(|_| RecordIdError::Seq(s.to_string()))?;
        if format!("{seq:010}") != q {
            return Err(RecordIdError::Seq(s.to_string()));
        }
        Ok(RecordId {
            facility,
            node,
            seq,
        })
    }

    pub fn facility(&self) -> &FacilityCode {
        &self.facility
    }

    pub fn node(&self) -> u32 {
        self.node
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:08x}-{:010}", self.facility, self.node, self.seq)
    }
}

impl From<RecordId> for String {
    fn from(id: RecordId) -> String {
        id.to_string()
    }
}

impl TryFrom<String> for RecordId {
    type Error = RecordIdError;
    fn try_from(s: String) -> Result<Self, RecordIdError> {
        RecordId::parse(&s)
    }
}

impl std::str::FromStr for RecordId {
    type Err = RecordIdError;
    fn from_str(s: &str) -> Result<Self, RecordIdError> {
        RecordId::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Facts, status, versions
// ---------------------------------------------------------------------------------------------

/// A check answered from local knowledge whose online result is still to come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeferredCheck {
    pub check_id: String,
    pub created_at: DateTime<Utc>,
    pub request: CheckRequest,
    /// What reception was told at the time.
    pub answered: Validity,
    pub source: Source,
}

/// What happened, written once by the record's creator and never changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordFacts {
    /// A provisional patient-share record. Its `state` field is not a fact: it is kept at
    /// `Recorded` here and the lifecycle lives in [`JournalRecord::state`].
    Provisional(ProvisionalRecord),
    DeferredCheck(DeferredCheck),
}

impl RecordFacts {
    /// A deterministic total order used only to pick the same facts on every replica when two
    /// conflict. Facts hold no hash maps, so their postcard encoding is stable.
    fn tie_break_key(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }
}

/// Why a record is set aside for staff. Once set it stays set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Quarantine {
    pub reason: String,
    pub by: QuarantinedBy,
}

/// Who set a quarantine: one of the actors, or the merge itself (conflicting facts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum QuarantinedBy {
    Edge,
    Reconciler,
    Merge,
}

impl From<Actor> for QuarantinedBy {
    fn from(a: Actor) -> Self {
        match a {
            Actor::Edge => QuarantinedBy::Edge,
            Actor::Reconciler => QuarantinedBy::Reconciler,
        }
    }
}

/// Per-record version vector with one entry per writer: each bumps its own entry on every change
/// it makes. Join is the entry-wise maximum. The sync protocol uses it to send only what the other
/// side lacks; `Sent` marks and rejection quarantines are derived and not versioned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Versions {
    pub edge: u64,
    pub reconciler: u64,
}

impl Versions {
    /// `self ≤ other` entry-wise: everything in `self` is known to whoever holds `other`.
    pub fn le(&self, other: &Versions) -> bool {
        self.edge <= other.edge && self.reconciler <= other.reconciler
    }

    pub fn join(&self, other: &Versions) -> Versions {
        Versions {
            edge: self.edge.max(other.edge),
            reconciler: self.reconciler.max(other.reconciler),
        }
    }

    fn bump(&mut self, actor: Actor) {
        match actor {
            Actor::Edge => self.edge += 1,
            Actor::Reconciler => self.reconciler += 1,
        }
    }
}

/// Two merges' inputs that cannot be joined (records of different ids).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("cannot merge record {left} with record {right}: ids differ")]
pub struct MergeError {
    pub left: RecordId,
    pub right: RecordId,
}

impl CvRDT for Versions {
    type Validation = std::convert::Infallible;
    fn validate_merge(&self, _: &Self) -> Result<(), Self::Validation> {
        Ok(())
    }
    fn merge(&mut self, other: Self) {
        *self = self.join(&other);
    }
}

/// Staff's choice of the person an `ambiguous` settlement is about. Written by the edge only.
///
/// Merge: last writer wins by (`at`, `by`, `person_id`) — a total order, so the join is a max and
/// keeps the laws. Last rather than first writer: staff may correct a wrong pick while the record
/// is still ambiguous, and the only writer is one edge whose clock orders its own writes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Choice {
    pub at: DateTime<Utc>,
    /// The staff member (user or token name) who chose.
    pub by: String,
    pub person_id: PersonId,
}

// ---------------------------------------------------------------------------------------------
// The record
// ---------------------------------------------------------------------------------------------

/// One journal entry: immutable facts plus the lattice of what happened to them since.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    id: RecordId,
    facts: RecordFacts,
    state: RecordState,
    quarantine: Option<Quarantine>,
    settlement: Option<Settlement>,
    versions: Versions,
    /// Staff's choice under an `ambiguous` settlement (last writer wins).
    choice: Option<Choice>,
    /// The settlement's revision: 0 for the first verdict, one more for each settlement again
    /// (against a choice, or revised after a registry change). The higher revision wins a
    /// merge, with `settled_choice`.
    revision: u32,
    /// The choice the current settlement was made against (`None` for the first verdict).
    settled_choice: Option<Choice>,
}

/// The record as stored and sent before issue 15 (no choice, no settlement revision).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalRecordV1 {
    id: RecordId,
    facts: RecordFacts,
    state: RecordState,
    quarantine: Option<Quarantine>,
    settlement: Option<Settlement>,
    versions: Versions,
}

/// A record in the V1 layout, borrowed: what is sent and stored while the record uses nothing
/// of issue 15, so that peers and binaries not yet upgraded keep reading it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct JournalRecordV1Ref<'a> {
    id: &'a RecordId,
    facts: &'a RecordFacts,
    state: &'a RecordState,
    quarantine: &'a Option<Quarantine>,
    settlement: &'a Option<Settlement>,
    versions: &'a Versions,
}

impl JournalRecord {
    /// The record in the V1 layout, when it has no choice and no settlement revision.
    pub fn as_v1(&self) -> Option<JournalRecordV1Ref<'_>> {
        (self.choice.is_none() && self.revision == 0 && self.settled_choice.is_none()).then_some(
            JournalRecordV1Ref {
                id: &self.id,
                facts: &self.facts,
                state: &self.state,
                quarantine: &self.quarantine,
                settlement: &self.settlement,
                versions: &self.versions,
            },
        )
    }
}

impl From<JournalRecordV1> for JournalRecord {
    fn from(r: JournalRecordV1) -> Self {
        JournalRecord {
            id: r.id,
            facts: r.facts,
            state: r.state,
            quarantine: r.quarantine,
            settlement: r.settlement,
            versions: r.versions,
            choice: None,
            revision: 0,
            settled_choice: None,
        }
    }
}

/// Why a record cannot be created.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NewRecordError {
    #[error("facts.record_id `{facts}` is not the record id `{id}`")]
    IdMismatch { id: RecordId, facts: String },
}

/// Why an operation on a record was refused (writer rules).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WriteError {
    #[error("record {id}: only the reconciler settles")]
    SettleByEdge { id: RecordId },
    #[error("record {id}: already settled; a settlement is written once")]
    AlreadySettled { id: RecordId },
    #[error("record {id}: only the edge closes")]
    CloseByReconciler { id: RecordId },
    #[error("record {id}: not settled yet; only a settled record can be closed")]
    CloseUnsettled { id: RecordId },
    #[error("record {id}: quarantine reason is empty")]
    EmptyReason { id: RecordId },
    #[error("record {id}: only the edge records staff's choice")]
    ChooseByReconciler { id: RecordId },
    #[error("record {id}: only the reconciler settles again")]
    ResettleByEdge { id: RecordId },
    #[error("record {id}: the settlement is not ambiguous; there is no person to choose")]
    NotAmbiguous { id: RecordId },
    #[error("record {id}: person {person} is not among the settlement's candidates")]
    NotACandidate { id: RecordId, person: PersonId },
    #[error("record {id}: already closed")]
    ChooseClosed { id: RecordId },
    #[error("record {id}: no choice to settle again against, or already settled against it")]
    NothingToResettle { id: RecordId },
    #[error("record {id}: only the reconciler revises a settlement")]
    ReviseByEdge { id: RecordId },
    #[error("record {id}: not settled yet; there is no settlement to revise")]
    ReviseUnsettled { id: RecordId },
    #[error("record {id}: set aside; a quarantined record is not revised")]
    ReviseQuarantined { id: RecordId },
}

/// Why a stored or received record breaks the record's invariants.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidRecord {
    #[error("record {id}: facts.record_id `{facts}` differs")]
    IdMismatch { id: RecordId, facts: String },
    #[error("record {id}: state is {state:?} without a settlement")]
    StateWithoutSettlement { id: RecordId, state: RecordState },
    #[error("record {id}: settled without a reconciler version")]
    UnversionedSettlement { id: RecordId },
    #[error("record {id}: no edge version (the creator's write is version 1)")]
    NoEdgeVersion { id: RecordId },
    #[error("record {id}: settlement revision {revision} without a settlement")]
    RevisionWithoutSettlement { id: RecordId, revision: u32 },
}

impl JournalRecord {
    /// A new record, as its creator writes it: state `Recorded`, edge version 1.
    pub fn new(id: RecordId, facts: RecordFacts) -> Result<Self, NewRecordError> {
        let facts = match facts {
            RecordFacts::Provisional(mut p) => {
                if p.record_id != id.to_string() {
                    return Err(NewRecordError::IdMismatch {
                        id,
                        facts: p.record_id,
                    });
                }
                p.state = RecordState::Recorded;
                RecordFacts::Provisional(p)
            }
            other => other,
        };
        Ok(JournalRecord {
            id,
            facts,
            state: RecordState::Recorded,
            quarantine: None,
            settlement: None,
            versions: Versions {
                edge: 1,
                reconciler: 0,
            },
            choice: None,
            revision: 0,
            settled_choice: None,
        })
    }

    pub fn id(&self) -> &RecordId {
        &self.id
    }

    pub fn facts(&self) -> &RecordFacts {
        &self.facts
    }

    pub fn state(&self) -> RecordState {
        self.state
    }

    pub fn quarantine(&self) -> Option<&Quarantine> {
        self.quarantine.as_ref()
    }

    pub fn settlement(&self) -> Option<&Settlement> {
        self.settlement.as_ref()
    }

    pub fn versions(&self) -> Versions {
        self.versions
    }

    /// Staff's choice of person, if any.
    pub fn choice(&self) -> Option<&Choice> {
        self.choice.as_ref()
    }

    /// The settlement's revision (0: the first verdict).
    pub fn settlement_revision(&self) -> u32 {
        self.revision
    }

    /// The choice the current settlement was made against.
    pub fn settled_choice(&self) -> Option<&Choice> {
        self.settled_choice.as_ref()
    }

    /// Whether the reconciler has to settle again: staff chose a person the current settlement
    /// was not made against, the record is not closed and not set aside.
    pub fn needs_resettlement(&self) -> bool {
        self.settlement.is_some()
            && self.choice.is_some()
            && self.choice != self.settled_choice
            && self.state < RecordState::Closed
            && self.quarantine.is_none()
    }

    /// The provisional record as reception sees it, with its lifecycle filled in.
    pub fn provisional(&self) -> Option<ProvisionalRecord> {
        match &self.facts {
            RecordFacts::Provisional(p) => Some(ProvisionalRecord {
                state: self.state,
                ..p.clone()
            }),
            RecordFacts::DeferredCheck(_) => None,
        }
    }

    /// Checks what a record read from disk or the wire must satisfy.
    pub fn validate(&self) -> Result<(), InvalidRecord> {
        if let RecordFacts::Provisional(p) = &self.facts
            && p.record_id != self.id.to_string()
        {
            return Err(InvalidRecord::IdMismatch {
                id: self.id.clone(),
                facts: p.record_id.clone(),
            });
        }
        if self.state >= RecordState::Settled && self.settlement.is_none() {
            return Err(InvalidRecord::StateWithoutSettlement {
                id: self.id.clone(),
                state: self.state,
            });
        }
        if self.settlement.is_some() && self.versions.reconciler == 0 {
            return Err(InvalidRecord::UnversionedSettlement {
                id: self.id.clone(),
            });
        }
        if self.versions.edge == 0 {
            return Err(InvalidRecord::NoEdgeVersion {
                id: self.id.clone(),
            });
        }
        if self.revision > 0 && self.settlement.is_none() {
            return Err(InvalidRecord::RevisionWithoutSettlement {
                id: self.id.clone(),
                revision: self.revision,
            });
        }
        Ok(())
    }

    /// The reconciler's verdict. Written once, by the reconciler only; moves the state to at
    /// least `Settled`.
    pub fn settle(&mut self, actor: Actor, settlement: Settlement) -> Result<(), WriteError> {
        if actor != Actor::Reconciler {
            return Err(WriteError::SettleByEdge {
                id: self.id.clone(),
            });
        }
        if self.settlement.is_some() {
            return Err(WriteError::AlreadySettled {
                id: self.id.clone(),
            });
        }
        self.settlement = Some(settlement);
        self.state = self.state.max(RecordState::Settled);
        self.versions.bump(actor);
        Ok(())
    }

    /// Staff chose the person of an `ambiguous` settlement. Edge only; only while the settlement
    /// is ambiguous, the record is not closed, and the person is one of the candidates. Choosing
    /// the person already chosen changes nothing (idempotent); choosing another replaces it.
    /// Returns whether the record changed.
    pub fn choose(&mut self, actor: Actor, choice: Choice) -> Result<bool, WriteError> {
        let id = || self.id.clone();
        if actor != Actor::Edge {
            return Err(WriteError::ChooseByReconciler { id: id() });
        }
        if self.state >= RecordState::Closed {
            return Err(WriteError::ChooseClosed { id: id() });
        }
        let Some(s) = self
            .settlement
            .as_ref()
            .filter(|s| s.kind == SettlementKind::Ambiguous)
        else {
            return Err(WriteError::NotAmbiguous { id: id() });
        };
        if !s.candidates.iter().any(|c| c.person_id == choice.person_id) {
            return Err(WriteError::NotACandidate {
                id: id(),
                person: choice.person_id,
            });
        }
        if self
            .choice
            .as_ref()
            .is_some_and(|c| c.person_id == choice.person_id)
        {
            return Ok(false);
        }
        // A choice with an older clock than the one held would lose the merge anyway: keep the
        // register's order by never writing below it.
        let choice = match &self.choice {
            Some(old) if choice <= *old => Choice {
                at: old.at + chrono::Duration::milliseconds(1),
                ..choice
            },
            _ => choice,
        };
        self.choice = Some(choice);
        self.versions.bump(actor);
        Ok(true)
    }

    /// The reconciler's verdict again, against staff's choice: replaces the settlement under the
    /// next revision. Reconciler only, and only when [`Self::needs_resettlement`].
    pub fn resettle(&mut self, actor: Actor, settlement: Settlement) -> Result<(), WriteError> {
        if actor != Actor::Reconciler {
            return Err(WriteError::ResettleByEdge {
                id: self.id.clone(),
            });
        }
        if !self.needs_resettlement() {
            return Err(WriteError::NothingToResettle {
                id: self.id.clone(),
            });
        }
        self.settlement = Some(settlement);
        self.settled_choice = self.choice.clone();
        self.revision += 1;
        self.state = self.state.max(RecordState::Settled);
        self.versions.bump(actor);
        Ok(())
    }

    /// The reconciler's verdict again after the registry changed (issue 16): replaces the
    /// settlement under the next revision, so it wins every merge with the one it replaces.
    /// Reconciler only; only a settled record that is not set aside. Allowed in any lifecycle
    /// state, `Closed` included: the state never moves back (the edge shows a revision that
    /// arrived after closing as an item to act on again). The choice the settlement was made
    /// against stays as it was: the caller settled against it.
    pub fn revise(&mut self, actor: Actor, settlement: Settlement) -> Result<(), WriteError> {
        let id = || self.id.clone();
        if actor != Actor::Reconciler {
            return Err(WriteError::ReviseByEdge { id: id() });
        }
        if self.settlement.is_none() {
            return Err(WriteError::ReviseUnsettled { id: id() });
        }
        if self.quarantine.is_some() {
            return Err(WriteError::ReviseQuarantined { id: id() });
        }
        self.settlement = Some(settlement);
        self.revision += 1;
        self.versions.bump(actor);
        Ok(())
    }

    /// Staff acted on the settlement. Edge only, and only once settled. Closing a closed record
    /// changes nothing.
    pub fn close(&mut self, actor: Actor) -> Result<(), WriteError> {
        if actor != Actor::Edge {
            return Err(WriteError::CloseByReconciler {
                id: self.id.clone(),
            });
        }
        if self.settlement.is_none() {
            return Err(WriteError::CloseUnsettled {
                id: self.id.clone(),
            });
        }
        if self.state < RecordState::Closed {
            self.state = RecordState::Closed;
            self.versions.bump(actor);
        }
        Ok(())
    }

    /// Sets the record aside with a reason (either actor). The record stays visible and keeps its
    /// place in the lifecycle.
    pub fn quarantine_with(&mut self, actor: Actor, reason: &str) -> Result<(), WriteError> {
        if reason.trim().is_empty() {
            return Err(WriteError::EmptyReason {
                id: self.id.clone(),
            });
        }
        let before = self.quarantine.clone();
        self.quarantine = join_quarantine(
            self.quarantine.take(),
            Some(Quarantine {
                reason: reason.to_string(),
                by: actor.into(),
            }),
        );
        if self.quarantine != before {
            self.versions.bump(actor);
        }
        Ok(())
    }

    /// Records that the peer refused this record (`by` is the peer). Not versioned: it is not
    /// news to the peer, which decided it.
    pub fn note_rejection(&mut self, by: Actor, reason: &str) {
        self.quarantine = join_quarantine(
            self.quarantine.take(),
            Some(Quarantine {
                reason: reason.to_string(),
                by: by.into(),
            }),
        );
    }

    /// The reconciler holds this record. Not versioned: derived from an acknowledgement.
    pub fn mark_sent(&mut self) {
        self.state = self.state.max(RecordState::Sent);
    }

    /// Whether merging found two different sets of facts for this id.
    pub fn has_conflicting_facts(&self) -> bool {
        self.quarantine
            .as_ref()
            .is_some_and(|q| q.by == QuarantinedBy::Merge && q.reason == CONFLICTING_FACTS)
    }

    fn join_in(&mut self, other: JournalRecord) {
        if self.facts != other.facts {
            if other.facts.tie_break_key() < self.facts.tie_break_key() {
                self.facts = other.facts;
            }
            self.quarantine = join_quarantine(
                self.quarantine.take(),
                Some(Quarantine {
                    reason: CONFLICTING_FACTS.to_string(),
                    by: QuarantinedBy::Merge,
                }),
            );
        }
        self.state = self.state.max(other.state);
        self.quarantine = join_quarantine(self.quarantine.take(), other.quarantine);
        // The settlement, its revision and the choice it was made against travel as one register:
        // the higher revision wins; at equal revisions the old written-once rule picks.
        match self.revision.cmp(&other.revision) {
            std::cmp::Ordering::Less => {
                self.revision = other.revision;
                self.settlement = other.settlement;
                self.settled_choice = other.settled_choice;
            }
            std::cmp::Ordering::Greater => {}
            std::cmp::Ordering::Equal => {
                // One total order on (settlement, settled_choice), so the pick is a join.
                let take_other = match (&self.settlement, &other.settlement) {
                    (None, Some(_)) => true,
                    (Some(a), Some(b)) if a == b => other.settled_choice > self.settled_choice,
                    (Some(a), Some(b)) => settlement_key(b) < settlement_key(a),
                    _ => false,
                };
                if take_other {
                    self.settlement = other.settlement;
                    self.settled_choice = other.settled_choice;
                }
            }
        }
        self.choice = self.choice.take().max(other.choice);
        self.versions = self.versions.join(&other.versions);
    }
}

/// Keep one deterministically: the smaller (reason, by). Once set, stays set.
fn join_quarantine(a: Option<Quarantine>, b: Option<Quarantine>) -> Option<Quarantine> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Within one revision a settlement is written once by the reconciler, so two different ones mean
/// a bug elsewhere; still pick the same one everywhere: the smaller key (earlier `settled_at`, then
/// the smaller postcard encoding; a settlement holds no hash maps, so its encoding is stable).
fn settlement_key(s: &Settlement) -> (DateTime<Utc>, Vec<u8>) {
    (s.settled_at, postcard::to_allocvec(s).unwrap_or_default())
}

impl CvRDT for JournalRecord {
    type Validation = MergeError;

    fn validate_merge(&self, other: &Self) -> Result<(), MergeError> {
        if self.id == other.id {
            Ok(())
        } else {
            Err(MergeError {
                left: self.id.clone(),
                right: other.id.clone(),
            })
        }
    }

    /// Precondition: same id (see `validate_merge`); a record of another id is ignored.
    fn merge(&mut self, other: Self) {
        if self.id == other.id {
            self.join_in(other);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The journal
// ---------------------------------------------------------------------------------------------

/// The facility's journal: record id → record. Merge is the union with the per-record join.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    records: BTreeMap<RecordId, JournalRecord>,
}

impl Journal {
    pub fn new() -> Self {
        Journal::default()
    }

    pub fn get(&self, id: &RecordId) -> Option<&JournalRecord> {
        self.records.get(id)
    }

    /// Mutable access for the owner's operations (`settle`, `close`, …); the id cannot change.
    pub fn get_mut(&mut self, id: &RecordId) -> Option<&mut JournalRecord> {
        self.records.get_mut(id)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn iter(&self) -> btree_map::Values<'_, RecordId, JournalRecord> {
        self.records.values()
    }

    pub fn ids(&self) -> btree_map::Keys<'_, RecordId, JournalRecord> {
        self.records.keys()
    }

    /// Joins one record in (insert if new). Returns the record as it now stands.
    pub fn merge_record(&mut self, record: JournalRecord) -> &JournalRecord {
        match self.records.entry(record.id.clone()) {
            btree_map::Entry::Vacant(v) => v.insert(record),
            btree_map::Entry::Occupied(o) => {
                let r = o.into_mut();
                r.join_in(record);
                r
            }
        }
    }

    /// The records of one facility (what a reconciler connection may see).
    pub fn of_facility(&self, facility: &FacilityCode) -> Journal {
        Journal {
            records: self
                .records
                .iter()
                .filter(|(id, _)| id.facility() == facility)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

impl FromIterator<JournalRecord> for Journal {
    fn from_iter<T: IntoIterator<Item = JournalRecord>>(iter: T) -> Self {
        let mut j = Journal::new();
        for r in iter {
            j.merge_record(r);
        }
        j
    }
}

impl CvRDT for Journal {
    type Validation = std::convert::Infallible;

    fn validate_merge(&self, _: &Self) -> Result<(), Self::Validation> {
        Ok(())
    }

    fn merge(&mut self, other: Self) {
        for r in other.records.into_values() {
            self.merge_record(r);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Storage encoding
// ---------------------------------------------------------------------------------------------

/// A record as stored on disk: postcard behind a version tag, never JSON. V1 records (before the
/// choice and the settlement revision) still load, as revision 0 without a choice; a record that
/// uses neither is still written as V1.
#[derive(Debug, Serialize, Deserialize)]
pub enum StoredRecord {
    V1(JournalRecordV1),
    V2(JournalRecord),
}

/// A whole journal as stored (snapshots, tests).
#[derive(Debug, Serialize, Deserialize)]
pub enum StoredJournal {
    V1(BTreeMap<RecordId, JournalRecordV1>),
    V2(Journal),
}

/// Why stored bytes could not be read back.
#[derive(Debug, Error)]
pub enum DecodeError {
    #[error("not a stored journal value: {0}")]
    Postcard(#[from] postcard::Error),
    #[error("stored record is invalid: {0}")]
    Invalid(#[from] InvalidRecord),
    #[error("stored record is under id {stored}, but its key is {key}")]
    WrongKey { key: RecordId, stored: RecordId },
}

impl JournalRecord {
    pub fn to_bytes(&self) -> Result<Vec<u8>, postcard::Error> {
        #[derive(Serialize)]
        enum Ref<'a> {
            V1(JournalRecordV1Ref<'a>),
            V2(&'a JournalRecord),
        }
        // V1 while the record uses nothing newer: a binary not yet upgraded still reads it.
        match self.as_v1() {
            Some(v1) => postcard::to_allocvec(&Ref::V1(v1)),
            None => postcard::to_allocvec(&Ref::V2(self)),
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let r = match postcard::from_bytes(bytes)? {
            StoredRecord::V1(r) => JournalRecord::from(r),
            StoredRecord::V2(r) => r,
        };
        r.validate()?;
        Ok(r)
    }

    /// The record in the pre-issue-15 layout (tests of old stored bytes); drops the choice and
    /// the revision.
    pub fn to_v1(&self) -> JournalRecordV1 {
        JournalRecordV1 {
            id: self.id.clone(),
            facts: self.facts.clone(),
            state: self.state,
            quarantine: self.quarantine.clone(),
            settlement: self.settlement.clone(),
            versions: self.versions,
        }
    }
}

impl Journal {
    pub fn to_bytes(&self) -> Result<Vec<u8>, postcard::Error> {
        #[derive(Serialize)]
        enum Ref<'a> {
            V1(BTreeMap<&'a RecordId, JournalRecordV1Ref<'a>>),
            V2(&'a Journal),
        }
        let v1: Option<BTreeMap<_, _>> = self
            .records
            .iter()
            .map(|(k, r)| r.as_v1().map(|v| (k, v)))
            .collect();
        match v1 {
            Some(v1) => postcard::to_allocvec(&Ref::V1(v1)),
            None => postcard::to_allocvec(&Ref::V2(self)),
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let j = match postcard::from_bytes(bytes)? {
            StoredJournal::V1(records) => Journal {
                records: records
                    .into_iter()
                    .map(|(k, r)| (k, JournalRecord::from(r)))
                    .collect(),
            },
            StoredJournal::V2(j) => j,
        };
        for (k, r) in &j.records {
            if k != &r.id {
                return Err(DecodeError::WrongKey {
                    key: k.clone(),
                    stored: r.id.clone(),
                });
            }
            r.validate()?;
        }
        Ok(j)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_round_trip_and_refuse_bad_forms() {
        let id = RecordId::parse("1311234567-3f2a9c01-0000000042").expect("valid id");
        assert_eq!(id.node(), 0x3f2a_9c01);
        assert_eq!(id.seq(), 42);
        assert_eq!(id.to_string(), "1311234567-3f2a9c01-0000000042");
        assert!(matches!(
            RecordId::parse("1311234567-3f2a9c01"),
            Err(RecordIdError::Shape(_))
        ));
        assert!(matches!(
            RecordId::parse("1321234567-3f2a9c01-0000000042"),
            Err(RecordIdError::Facility { .. })
        ));
        assert!(matches!(
            RecordId::parse("1311234567-3F2A9C01-0000000042"),
            Err(RecordIdError::Node(_))
        ));
        assert!(matches!(
            RecordId::parse("1311234567-3f2a9c01-42"),
            Err(RecordIdError::Seq(_))
        ));
        assert!(matches!(
            RecordId::parse("1311234567-3f2a9c01-+000000042"),
            Err(RecordIdError::Seq(_))
        ));
        let big = RecordId::parse("1311234567-00000001-12345678901").expect("long seq");
        assert_eq!(big.seq(), 12_345_678_901);
    }
}
