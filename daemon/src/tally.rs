//! The queue's counts, kept as the journal is written ([`QueueTally`]), and the brief that status
//! pages and metrics show ([`QueueBrief`], against the warning [`QueueCaps`]): they cost the same
//! with 25 items queued or 25,000. A leaf the journal writes into; the full list is
//! [`crate::queue::summary`], which walks the journal and must count the same.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::provisional::{ProvisionalRecord, RecordState};
use onshi_sync::crdt::{JournalRecord, RecordFacts};

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

/// The counts status pages show: what is still open (`pending`, `provisional_yen`, the oldest
/// age), records set aside, and the caps' warnings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueBrief {
    pub pending: usize,
    pub provisional_yen: u64,
    pub oldest_pending_s: Option<i64>,
    pub quarantined: usize,
    /// Provisional records whose settlement is back (settled, or closed by staff since).
    pub settled: usize,
    pub warnings: Vec<String>,
}

impl QueueBrief {
    pub(crate) fn new(
        pending: usize,
        provisional_yen: u64,
        oldest: Option<DateTime<Utc>>,
        (quarantined, settled): (usize, usize),
        caps: &QueueCaps,
        now: DateTime<Utc>,
    ) -> Self {
        let oldest_pending_s = oldest.map(|t| (now - t).num_seconds().max(0));
        let mut warnings = Vec::new();
        if pending > caps.max_pending {
            warnings.push(format!(
                "{pending} items pending, more than the cap of {}",
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
        QueueBrief {
            pending,
            provisional_yen,
            oldest_pending_s,
            quarantined,
            settled,
            warnings,
        }
    }
}

/// A provisional record as the tally knows it.
#[derive(Debug, Clone, Copy)]
struct TalliedProvisional {
    created_at: DateTime<Utc>,
    yen: u64,
    /// Its state in the provisional tree, once written there (only such records are queue items).
    stored: Option<RecordState>,
    /// Its lifecycle and whether it is set aside, from the sync journal (which has the last word).
    sync: Option<(RecordState, bool)>,
}

impl TalliedProvisional {
    fn listed(&self) -> bool {
        self.stored.is_some()
    }

    fn open(&self) -> bool {
        self.listed() && self.lifecycle() < RecordState::Closed
    }

    fn quarantined(&self) -> bool {
        self.listed() && self.sync.is_some_and(|(_, q)| q)
    }

    fn settled(&self) -> bool {
        self.listed() && self.lifecycle() >= RecordState::Settled
    }

    fn lifecycle(&self) -> RecordState {
        self.sync
            .map(|(s, _)| s)
            .or(self.stored)
            .unwrap_or(RecordState::Recorded)
    }
}

#[derive(Debug, Default)]
struct Tally {
    /// Pending deferred checks: id → when made.
    deferred: HashMap<String, DateTime<Utc>>,
    provisional: HashMap<String, TalliedProvisional>,
    /// Every open item (pending deferred check, provisional record not closed), oldest first.
    open: BTreeSet<(DateTime<Utc>, String)>,
    provisional_yen: u64,
    quarantined: usize,
    settled: usize,
}

impl Tally {
    fn account(&mut self, id: &str, p: &TalliedProvisional, sign: bool) {
        if p.open() {
            if sign {
                self.provisional_yen += p.yen;
                self.open.insert((p.created_at, id.to_string()));
            } else {
                self.provisional_yen -= p.yen;
                self.open.remove(&(p.created_at, id.to_string()));
            }
        }
        if p.quarantined() {
            if sign {
                self.quarantined += 1;
            } else {
                self.quarantined -= 1;
            }
        }
        if p.settled() {
            if sign {
                self.settled += 1;
            } else {
                self.settled -= 1;
            }
        }
    }

    fn provisional(
        &mut self,
        id: &str,
        created_at: DateTime<Utc>,
        yen: u64,
        f: impl FnOnce(&mut TalliedProvisional),
    ) {
        let mut p = match self.provisional.remove(id) {
            Some(p) => {
                self.account(id, &p, false);
                p
            }
            None => TalliedProvisional {
                created_at,
                yen,
                stored: None,
                sync: None,
            },
        };
        f(&mut p);
        self.account(id, &p, true);
        self.provisional.insert(id.to_string(), p);
    }
}

/// The queue's counts, kept in step with every write to the journal's check, provisional and
/// sync trees (the journal calls it under the lock of the tree it writes, after the write), and
/// built by one walk when the journal opens. Must always equal what [`summary`] counts.
#[derive(Debug, Default)]
pub struct QueueTally {
    inner: Mutex<Tally>,
}

impl QueueTally {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the counts by what `walk` tells a fresh tally (after the store was reopened and
    /// dropped writes it had counted). Writers wait meanwhile, so none is lost or counted twice.
    pub(crate) fn rebuild(&self, walk: impl FnOnce(&QueueTally)) {
        let mut guard = self.lock();
        let fresh = QueueTally::default();
        walk(&fresh);
        *guard = fresh.inner.into_inner().unwrap_or_else(|p| p.into_inner());
    }

    /// A check record as written: queued while deferred, off the queue otherwise.
    pub fn check(&self, id: &str, created_at: DateTime<Utc>, deferred: bool) {
        let mut t = self.lock();
        if deferred {
            if t.deferred.insert(id.to_string(), created_at).is_none() {
                t.open.insert((created_at, id.to_string()));
            }
        } else if let Some(at) = t.deferred.remove(id) {
            t.open.remove(&(at, id.to_string()));
        }
    }

    /// A provisional record as written to the provisional tree.
    pub fn provisional_stored(&self, r: &ProvisionalRecord) {
        self.lock()
            .provisional(&r.record_id, r.created_at, r.collected_yen, |p| {
                p.stored = Some(r.state)
            });
    }

    /// A sync record as written to the sync journal (only provisional records count).
    pub fn synced(&self, r: &JournalRecord) {
        if let RecordFacts::Provisional(facts) = r.facts() {
            self.lock().provisional(
                &facts.record_id,
                facts.created_at,
                facts.collected_yen,
                |p| p.sync = Some((r.state(), r.quarantine().is_some())),
            );
        }
    }

    pub fn brief(&self, caps: &QueueCaps, now: DateTime<Utc>) -> QueueBrief {
        let t = self.lock();
        QueueBrief::new(
            t.open.len(),
            t.provisional_yen,
            t.open.first().map(|(at, _)| *at),
            (t.quarantined, t.settled),
            caps,
            now,
        )
    }
}
