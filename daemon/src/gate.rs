//! The gate: every check is validated, asked of the reconciler within the deadline, written to the
//! journal and made durable, and only then answered. Past the deadline or with the link down it
//! answers from the replica (`source: replica`, with the age of that knowledge), or `pending`
//! (`source: queued`) when the replica does not know the person; either way the online check is
//! queued as a deferred check and completed when the link returns. An answer always comes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use onshi_model::{CheckOutcome, CheckRequest, Source, Validity};
use onshi_sync::link::{LinkClient, LinkError};
use onshi_sync::metrics::{Histogram, LabelledCounter};
use onshi_sync::wire::{Request, Response};
use tokio::sync::Notify;

use crate::journal::{CheckRecord, CheckState, Journal, JournalError};
use crate::mode::ModeEvent;
use crate::monitor::ModeHandle;
use crate::replica::Replica;

/// Why a check could not be answered at all (only the disk can cause this).
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("the journal could not record the check: {0}")]
    Journal(#[from] JournalError),
    #[error("the replica could not be read: {0}")]
    Replica(String),
}

/// Counters for status and metrics.
#[derive(Debug, Default)]
pub struct GateStats {
    pub answered_online: AtomicU64,
    pub answered_replica: AtomicU64,
    pub answered_queued: AtomicU64,
    pub deadline_missed: AtomicU64,
    pub deferred_completed: AtomicU64,
    /// Checks answered, by source and validity.
    pub answers: LabelledCounter,
    /// Time from the request to the durable answer, by source (online, replica, queued).
    pub latency: [Histogram; 3],
}

impl GateStats {
    /// A check answered from `source` with `validity`, `took` after it arrived.
    pub fn answered(&self, source: Source, validity: Validity, took: Duration) {
        self.answers.inc(&[source.as_str(), validity.as_str()]);
        self.latency[source_index(source)].observe(took);
    }
}

/// The sources in the order of [`GateStats::latency`].
pub const SOURCES: [Source; 3] = [Source::Online, Source::Replica, Source::Queued];

fn source_index(source: Source) -> usize {
    SOURCES.iter().position(|s| *s == source).unwrap_or(0)
}

#[derive(Debug, Clone)]
pub struct Gate {
    pub journal: Journal,
    pub replica: Replica,
    pub link: Arc<LinkClient>,
    pub mode: ModeHandle,
    /// Settings that may change at run time (the deadline among them).
    pub live: crate::config::Live,
    pub stats: Arc<GateStats>,
    /// Wakes the deferred-check runner.
    pub deferred_wake: Arc<Notify>,
    /// The journal sync task.
    pub sync: crate::sync::SyncHandle,
    /// Woken when deferred checks have completed (the mailbox writes their final results).
    pub checks_completed: Arc<Notify>,
}

/// Why the online answer did not come, for the record.
fn why_not_online(e: &LinkError) -> String {
    e.to_string()
}

impl Gate {
    /// How long a check waits for the reconciler now.
    pub fn deadline(&self) -> Duration {
        self.live.get().deadline
    }

    /// Asks online within the deadline; `Err(reason)` when no online answer came in time.
    async fn ask_online(
        &self,
        req: &CheckRequest,
        budget: Duration,
    ) -> Result<CheckOutcome, String> {
        if !self.link.state().is_up() {
            return Err(format!(
                "link down: {}",
                self.link
                    .state()
                    .last_error
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "not connected".into())
            ));
        }
        match self.link.call(Request::Check(req.clone()), budget).await {
            Ok(Response::Check(outcome)) => {
                self.mode.event(ModeEvent::AnswerInTime);
                Ok(outcome)
            }
            Ok(Response::Error { code, message }) => {
                Err(format!("reconciler error {code}: {message}"))
            }
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e @ LinkError::Timeout(_)) => {
                self.stats.deadline_missed.fetch_add(1, Ordering::Relaxed);
                self.mode.event(ModeEvent::DeadlineMissed);
                Err(why_not_online(&e))
            }
            Err(e) => Err(why_not_online(&e)),
        }
    }

    pub async fn check(&self, req: CheckRequest) -> Result<CheckRecord, GateError> {
        self.check_with(req, |_| Ok(())).await
    }

    /// As [`Gate::check`]; `with_record` runs once the record is built, before it is made durable,
    /// so whatever it writes to the same store (e.g. the mailbox's record of the request file) is
    /// made durable by the same commit as the check.
    pub async fn check_with(
        &self,
        req: CheckRequest,
        with_record: impl FnOnce(&CheckRecord) -> Result<(), JournalError>,
    ) -> Result<CheckRecord, GateError> {
        self.check_card_with(req, None, with_record).await
    }

    /// As [`Gate::check_with`], recording with the check how a card's holder was verified and the
    /// route the card came by (`card`: None for an insurance-card check).
    pub async fn check_card_with(
        &self,
        req: CheckRequest,
        card: Option<crate::reader::CardVerification>,
        with_record: impl FnOnce(&CheckRecord) -> Result<(), JournalError>,
    ) -> Result<CheckRecord, GateError> {
        let started = Instant::now();
        let created_at = Utc::now();
        let online = self.ask_online(&req, self.deadline()).await;
        let check_id = self.journal.next_id()?;
        let facility = self.journal.facility().clone();
        let record = match online {
            Ok(outcome) => {
                let now = Utc::now();
                self.replica
                    .learn(&outcome.qualifications, now)
                    .map_err(|e| GateError::Replica(e.to_string()))?;
                self.stats.answered_online.fetch_add(1, Ordering::Relaxed);
                CheckRecord {
                    check_id,
                    facility,
                    created_at,
                    request: req,
                    validity: outcome.validity,
                    source: Source::Online,
                    outcome: Some(outcome),
                    as_of: Some(now),
                    state: CheckState::Answered,
                    final_outcome: None,
                    attempts: 1,
                    last_error: None,
                    card,
                }
            }
            Err(reason) => {
                let known = self
                    .replica
                    .check(&req)
                    .map_err(|e| GateError::Replica(e.to_string()))?;
                let (validity, source, outcome, as_of) = match known {
                    Some(a) => {
                        self.stats.answered_replica.fetch_add(1, Ordering::Relaxed);
                        (
                            a.outcome.validity,
                            Source::Replica,
                            Some(a.outcome),
                            Some(a.as_of),
                        )
                    }
                    None => {
                        self.stats.answered_queued.fetch_add(1, Ordering::Relaxed);
                        (Validity::Pending, Source::Queued, None, None)
                    }
                };
                tracing::info!(%check_id, source = ?source, after_ms = started.elapsed().as_millis() as u64, reason = %reason, "answered without the reconciler; online check deferred");
                CheckRecord {
                    check_id,
                    facility,
                    created_at,
                    request: req,
                    validity,
                    source,
                    outcome,
                    as_of,
                    state: CheckState::Deferred,
                    final_outcome: None,
                    attempts: 1,
                    last_error: Some(reason),
                    card,
                }
            }
        };
        let sync_record = if record.state == CheckState::Deferred {
            Some(self.journal.put_sync_deferred(&record)?)
        } else {
            None
        };
        with_record(&record)?;
        self.journal.put_durable(&record).await?;
        if let Some(r) = sync_record {
            self.sync.local_change(r);
        }
        if record.state == CheckState::Deferred {
            self.deferred_wake.notify_one();
        }
        self.stats
            .answered(record.source, record.validity, started.elapsed());
        Ok(record)
    }
}
