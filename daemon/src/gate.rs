//! The gate: every check is validated, asked of the reconciler within the deadline, written to the
//! journal and made durable, and only then answered. With the link down or past the deadline the
//! check is refused with a clear reason (the outage mode that answers from the replica comes later);
//! a refused check was never acknowledged, so nothing acknowledged is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use onshi_model::{CheckRequest, Source};
use onshi_sync::link::{LinkClient, LinkError};
use onshi_sync::wire::{Request, Response};

use crate::journal::{CheckRecord, Journal, JournalError};

/// Why a check could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("the link to the reconciler is down ({0}); the check was not recorded: try again, or confirm eligibility another way")]
    LinkDown(String),
    #[error("the reconciler did not answer within {0} ms; the check was not recorded: try again")]
    Deadline(u128),
    #[error("the reconciler refused the check: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("the journal could not record the check: {0}")]
    Journal(#[from] JournalError),
}

/// Counters for status and metrics.
#[derive(Debug, Default)]
pub struct GateStats {
    pub answered_online: AtomicU64,
    pub refused_link_down: AtomicU64,
    pub refused_deadline: AtomicU64,
    pub refused_other: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct Gate {
    pub journal: Journal,
    pub link: Arc<LinkClient>,
    pub deadline: Duration,
    pub stats: Arc<GateStats>,
}

impl Gate {
    pub async fn check(&self, req: CheckRequest) -> Result<CheckRecord, GateError> {
        let created_at = Utc::now();
        let answer = self.link.call(Request::Check(req.clone()), self.deadline).await;
        let outcome = match answer {
            Ok(Response::Check(outcome)) => outcome,
            Ok(Response::Error { code, message }) => {
                self.stats.refused_other.fetch_add(1, Ordering::Relaxed);
                return Err(GateError::Refused { code, message });
            }
            Ok(other) => {
                self.stats.refused_other.fetch_add(1, Ordering::Relaxed);
                return Err(GateError::Refused { code: "unexpected_response".into(), message: format!("{other:?}") });
            }
            Err(LinkError::Timeout(_)) => {
                self.stats.refused_deadline.fetch_add(1, Ordering::Relaxed);
                return Err(GateError::Deadline(self.deadline.as_millis()));
            }
            Err(e) => {
                self.stats.refused_link_down.fetch_add(1, Ordering::Relaxed);
                return Err(GateError::LinkDown(e.to_string()));
            }
        };
        let record = CheckRecord {
            check_id: self.journal.next_id()?,
            facility: self.journal.facility().clone(),
            created_at,
            request: req,
            validity: outcome.validity,
            source: Source::Online,
            outcome: Some(outcome),
            as_of: Some(Utc::now()),
        };
        self.journal.put_durable(&record).await?;
        self.stats.answered_online.fetch_add(1, Ordering::Relaxed);
        Ok(record)
    }
}
