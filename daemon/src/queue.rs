//! The queue as reception and IT staff see it: every deferred check still waiting for its online
//! answer and every provisional record with its lifecycle (`recorded`, `sent`, `settled`, `closed`,
//! or `quarantined`) and, once back from the reconciler, its settlement. `pending`,
//! `provisional_yen` and the oldest age count what is still open: deferred checks and provisional
//! records not yet closed by staff (a settled record waits for staff to act on it).
//! Caps (count, yen, age) only raise warnings: nothing is ever dropped or deleted by a timer.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::journal::{CheckState, Journal, JournalError};
use crate::provisional::RecordState;
use onshi_model::record::Settlement;
use onshi_sync::crdt::{JournalRecord, RecordFacts, RecordId};

/// Limits that raise a warning when passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCaps {
    pub max_pending: usize,
    pub max_provisional_yen: u64,
    pub max_age_s: u64,
}

impl Default for QueueCaps {
    fn default() -> Self {
        QueueCaps {
            max_pending: 1_000,
            max_provisional_yen: 1_000_000,
            max_age_s: 3 * 24 * 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueItem {
    pub id: String,
    pub kind: &'static str,
    pub state: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collected_yen: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueSummary {
    pub items: Vec<QueueItem>,
    pub pending: usize,
    pub provisional_yen: u64,
    pub oldest_pending_s: Option<i64>,
    pub warnings: Vec<String>,
}

/// Reads the queue from the journal at `now`.
pub fn summary(
    journal: &Journal,
    caps: &QueueCaps,
    now: DateTime<Utc>,
) -> Result<QueueSummary, JournalError> {
    let mut items = Vec::new();
    for id in journal.deferred_ids()? {
        if let Some(r) = journal.get(&id)?
            && r.state == CheckState::Deferred
        {
            items.push(QueueItem {
                id: r.check_id,
                kind: "deferred_check",
                state: "pending".into(),
                created_at: r.created_at,
                collected_yen: None,
                last_error: r.last_error,
                settlement: None,
            });
        }
    }
    let mut provisional_yen = 0;
    let mut open = items.len();
    for r in journal.provisional_records()? {
        let synced = RecordId::parse(&r.record_id)
            .ok()
            .map(|id| journal.sync.get(&id))
            .transpose()?
            .flatten();
        let lifecycle = synced.as_ref().map_or(r.state, JournalRecord::state);
        if lifecycle < RecordState::Closed {
            provisional_yen += r.collected_yen;
            open += 1;
        }
        items.push(QueueItem {
            id: r.record_id,
            kind: "provisional",
            state: synced.as_ref().map_or_else(
                || state_name(r.state, false),
                |s| state_name(s.state(), s.quarantine().is_some()),
            ),
            created_at: r.created_at,
            collected_yen: Some(r.collected_yen),
            last_error: synced
                .as_ref()
                .and_then(|s| s.quarantine())
                .map(|q| q.reason.clone()),
            settlement: synced
                .as_ref()
                .and_then(|s| s.settlement())
                .map(settlement_json),
        });
    }
    items.sort_by(|a, b| {
        a.created_at
            .cmp(&b.created_at)
            .then_with(|| a.id.cmp(&b.id))
    });
    let oldest_pending_s = items
        .iter()
        .find(|i| i.state != "closed")
        .map(|i| (now - i.created_at).num_seconds().max(0));
    let mut warnings = Vec::new();
    if open > caps.max_pending {
        warnings.push(format!(
            "{open} items pending, more than the cap of {}",
            caps.max_pending
        ));
    }
    if provisional_yen > caps.max_provisional_yen {
        warnings.push(format!(
            "¥{provisional_yen} collected provisionally, more than the cap of ¥{}",
            caps.max_provisional_yen
        ));
    }
    if let Some(age) = oldest_pending_s
        && age as u64 > caps.max_age_s
    {
        warnings.push(format!(
            "the oldest pending item is {} h old, more than the cap of {} h",
            age / 3600,
            caps.max_age_s / 3600
        ));
    }
    Ok(QueueSummary {
        pending: open,
        items,
        provisional_yen,
        oldest_pending_s,
        warnings,
    })
}

/// `recorded`, `sent`, `settled`, `closed`, or `quarantined` (set aside with a reason).
fn state_name(state: RecordState, quarantined: bool) -> String {
    if quarantined {
        return "quarantined".into();
    }
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A settlement as reception reads it: the kind, the yen to refund or charge, the insurer of the
/// qualification valid on the service date, and the sentence for staff (plus the details).
pub fn settlement_json(s: &Settlement) -> Value {
    json!({
        "kind": s.kind,
        "yen": s.yen,
        "insurer": s.qualification.as_ref().map(|q| json!({"name": q.insurer_name, "number": q.insurer_number})),
        "explanation": s.explanation,
        "settled_at": s.settled_at,
        "correct_share_percent": s.correct_share_percent,
        "due_yen": s.due_yen,
        "payer": s.payer,
        "qualification": s.qualification,
        "candidates": s.candidates,
    })
}

/// One sync record as a queue item (the answer of closing it).
pub fn sync_item_json(r: &JournalRecord) -> Value {
    let (kind, created_at, collected) = match r.facts() {
        RecordFacts::Provisional(p) => ("provisional", p.created_at, Some(p.collected_yen)),
        RecordFacts::DeferredCheck(d) => ("deferred_check", d.created_at, None),
    };
    json!({
        "id": r.id().to_string(),
        "kind": kind,
        "state": state_name(r.state(), r.quarantine().is_some()),
        "created_at": created_at,
        "collected_yen": collected,
        "settlement": r.settlement().map(settlement_json),
        "last_error": r.quarantine().map(|q| q.reason.clone()),
    })
}

/// The short form for status.
pub fn brief(q: &QueueSummary) -> Value {
    json!({"pending": q.pending, "provisional_yen": q.provisional_yen, "oldest_pending_s": q.oldest_pending_s, "warnings": q.warnings})
}
