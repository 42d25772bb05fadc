//! The queue as reception and IT staff see it: every deferred check and every provisional record
//! not yet settled, the total collected provisionally, and the age of the oldest pending item.
//! Caps (count, yen, age) only raise warnings: nothing is ever dropped or deleted by a timer.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::journal::{CheckState, Journal, JournalError};
use crate::provisional::RecordState;

/// Limits that raise a warning when passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCaps {
    pub max_pending: usize,
    pub max_provisional_yen: u64,
    pub max_age_s: u64,
}

impl Default for QueueCaps {
    fn default() -> Self {
        QueueCaps { max_pending: 1_000, max_provisional_yen: 1_000_000, max_age_s: 3 * 24 * 3600 }
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
pub fn summary(journal: &Journal, caps: &QueueCaps, now: DateTime<Utc>) -> Result<QueueSummary, JournalError> {
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
    for r in journal.provisional_records()? {
        if r.state >= RecordState::Settled {
            continue;
        }
        provisional_yen += r.collected_yen;
        items.push(QueueItem {
            id: r.record_id,
            kind: "provisional",
            state: serde_json::to_value(r.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
            created_at: r.created_at,
            collected_yen: Some(r.collected_yen),
            last_error: None,
            settlement: None,
        });
    }
    items.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
    let oldest_pending_s = items.first().map(|i| (now - i.created_at).num_seconds().max(0));
    let mut warnings = Vec::new();
    if items.len() > caps.max_pending {
        warnings.push(format!("{} items pending, more than the cap of {}", items.len(), caps.max_pending));
    }
    if provisional_yen > caps.max_provisional_yen {
        warnings.push(format!("¥{provisional_yen} collected provisionally, more than the cap of ¥{}", caps.max_provisional_yen));
    }
    if let Some(age) = oldest_pending_s
        && age as u64 > caps.max_age_s
    {
        warnings.push(format!("the oldest pending item is {} h old, more than the cap of {} h", age / 3600, caps.max_age_s / 3600));
    }
    Ok(QueueSummary { pending: items.len(), items, provisional_yen, oldest_pending_s, warnings })
}

/// The short form for status.
pub fn brief(q: &QueueSummary) -> Value {
    json!({"pending": q.pending, "provisional_yen": q.provisional_yen, "oldest_pending_s": q.oldest_pending_s, "warnings": q.warnings})
}
