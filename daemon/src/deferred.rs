//! Completes deferred checks when the link returns: oldest first, each asked online, its record
//! updated with the final outcome and when it arrived, made durable, and only then taken off the
//! queue. A check that keeps failing stays queued with its last error; nothing is dropped and
//! nothing is removed by a timer.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use onshi_sync::wire::{Request, Response};
use tokio::sync::watch;

use crate::gate::Gate;
use crate::journal::{CheckState, FinalOutcome};

/// How long one deferred check may wait for its answer.
const DEFERRED_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the queue is looked at even without a wake-up (e.g. after a failed pass).
const RETRY_EVERY: Duration = Duration::from_secs(2);

/// Outcome of one pass over the queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub completed: usize,
    pub failed: usize,
}

/// An outage declared (or ended) while the link was down is told to the reconciler once it is back.
async fn send_pending_outage(gate: &Gate) {
    let Ok(Some(mut o)) = gate.journal.outage() else { return };
    if o.central || !gate.link.state().is_up() {
        return;
    }
    match gate.link.call(Request::Outage { active: o.active, reason: o.reason.clone() }, DEFERRED_TIMEOUT).await {
        Ok(Response::Outage { active, until, .. }) if active == o.active => {
            o.central = true;
            o.until = until;
            match gate.journal.set_outage(&o).await {
                Ok(()) => tracing::warn!(active, "outage declaration delivered to the reconciler after the link returned"),
                Err(e) => tracing::error!(error = %e, "outage state not recorded"),
            }
        }
        Ok(other) => tracing::warn!(answer = ?other, "the reconciler did not record the outage declaration"),
        Err(e) => tracing::info!(error = %e, "outage declaration still pending"),
    }
}

/// One pass: completes what it can; stops at the first link failure (the rest would fail too).
pub async fn run_pass(gate: &Gate) -> Pass {
    send_pending_outage(gate).await;
    let mut pass = Pass::default();
    let ids = match gate.journal.deferred_ids() {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the deferred queue");
            return pass;
        }
    };
    for id in ids {
        if !gate.link.state().is_up() {
            break;
        }
        let mut rec = match gate.journal.get(&id) {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::error!(check_id = %id, "queued check has no record; left queued");
                pass.failed += 1;
                continue;
            }
            Err(e) => {
                tracing::error!(check_id = %id, error = %e, "queued check unreadable; left queued");
                pass.failed += 1;
                continue;
            }
        };
        if rec.state != CheckState::Deferred {
            // Completed before a crash took it off the queue: finish the job.
            if let Err(e) = gate.journal.put(&rec) {
                tracing::error!(check_id = %id, error = %e, "cannot dequeue");
            }
            continue;
        }
        let answer = gate.link.call(Request::Check(rec.request.clone()), DEFERRED_TIMEOUT).await;
        rec.attempts = rec.attempts.saturating_add(1);
        match answer {
            Ok(Response::Check(outcome)) => {
                let now = Utc::now();
                if let Err(e) = gate.replica.learn(&outcome.qualifications, now) {
                    tracing::error!(check_id = %id, error = %e, "replica not updated");
                }
                tracing::info!(check_id = %id, validity = outcome.validity.as_str(), answered = rec.validity.as_str(), "deferred check completed");
                rec.final_outcome = Some(FinalOutcome { outcome, completed_at: now });
                rec.state = CheckState::Completed;
                rec.last_error = None;
                pass.completed += 1;
            }
            Ok(Response::Error { code, message }) => {
                rec.last_error = Some(format!("reconciler error {code}: {message}"));
                pass.failed += 1;
            }
            Ok(other) => {
                rec.last_error = Some(format!("unexpected answer {other:?}"));
                pass.failed += 1;
            }
            Err(e) => {
                rec.last_error = Some(e.to_string());
                pass.failed += 1;
                let _ = gate.journal.put(&rec);
                break;
            }
        }
        if let Err(e) = gate.journal.put(&rec) {
            tracing::error!(check_id = %id, error = %e, "cannot record the outcome; left queued");
        }
    }
    if let Err(e) = gate.journal.commit().await {
        tracing::error!(error = %e, "deferred outcomes not durable");
    } else {
        gate.stats.deferred_completed.fetch_add(pass.completed as u64, Ordering::Relaxed);
    }
    pass
}

/// Runs passes whenever woken, when the link comes up, and every few seconds, until `stop`.
pub fn spawn(gate: Gate, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut link = gate.link.subscribe();
        loop {
            let outage_pending = gate.journal.outage().ok().flatten().is_some_and(|o| !o.central);
            if gate.link.state().is_up() && (gate.journal.deferred_len() > 0 || outage_pending) {
                let p = run_pass(&gate).await;
                if p.completed > 0 || p.failed > 0 {
                    tracing::info!(completed = p.completed, failed = p.failed, left = gate.journal.deferred_len(), "deferred pass");
                }
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = gate.deferred_wake.notified() => {}
                r = link.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(RETRY_EVERY) => {}
            }
        }
    })
}
