//! Completes deferred checks when the link returns: oldest first, each asked online, its record
//! updated with the final outcome and when it arrived, made durable, and only then taken off the
//! queue. A check that keeps failing stays queued with its last error; nothing is dropped and
//! nothing is removed by a timer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use onshi_sync::link::LinkError;
use onshi_sync::wire::{Request, Response};
use tokio::sync::watch;

use crate::gate::Gate;
use crate::journal::{CheckRecord, CheckState, FinalOutcome};

/// How long the outage declaration may wait for its answer.
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
    let Ok(Some(mut o)) = gate.journal.outage() else {
        return;
    };
    if o.central || !gate.link.state().is_up() {
        return;
    }
    match gate
        .link
        .call(
            Request::Outage {
                active: o.active,
                reason: o.reason.clone(),
            },
            DEFERRED_TIMEOUT,
        )
        .await
    {
        Ok(Response::Outage {
            active: granted,
            until,
            ..
        }) => {
            let active = o.active;
            o.central = true;
            o.until = until.filter(|_| granted && active);
            match gate.journal.set_outage(&o).await {
                Ok(()) => tracing::warn!(
                    active,
                    "outage declaration delivered to the reconciler after the link returned"
                ),
                Err(e) => tracing::error!(error = %e, "outage state not recorded"),
            }
        }
        Ok(other) => {
            tracing::warn!(answer = ?other, "the reconciler did not record the outage declaration")
        }
        Err(e) => tracing::info!(error = %e, "outage declaration still pending"),
    }
}

/// Deferred checks asked in one batch inquiry (one round trip for many: after a long outage on a
/// slow line, thousands are waiting).
pub const DEFERRED_BATCH: usize = 250;
/// Batch inquiries in flight at once: enough to keep a long, slow line busy (a 20 Mbit/s line
/// with 100 ms RTT holds ~250 kB, about four batches' answers) through losses and while earlier
/// answers are written; 16 drained 20,000 checks in 6–7 s where 4 took 9–10 s (BENCHMARKS.md).
pub const DEFERRED_IN_FLIGHT: usize = 16;
/// How long one batch may take.
const BATCH_TIMEOUT: Duration = Duration::from_secs(30);

/// One pass: completes what it can, up to [`DEFERRED_IN_FLIGHT`] batches at a time, each batch's
/// outcomes made durable before its checks leave the queue; starts no new batch after a link
/// failure (the rest would fail too).
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
    let mut chunks = ids.chunks(DEFERRED_BATCH);
    let mut batches = tokio::task::JoinSet::new();
    // One batch's outcomes recorded at a time: the answers of the batches in flight
    // (`DEFERRED_IN_FLIGHT`) arrive together, and recording them all at once would take both
    // cores from the link and the sync task.
    let recording = Arc::new(tokio::sync::Semaphore::new(1));
    let mut stopped = false;
    loop {
        while !stopped && batches.len() < DEFERRED_IN_FLIGHT {
            let Some(chunk) = chunks.next() else { break };
            if !gate.link.state().is_up() {
                stopped = true;
                break;
            }
            let records = load_batch(gate, chunk, &mut pass);
            if !records.is_empty() {
                let (gate, recording) = (gate.clone(), recording.clone());
                batches.spawn(async move { complete_batch(&gate, &recording, records).await });
            }
        }
        let Some(done) = batches.join_next().await else {
            return pass;
        };
        match done {
            Ok(b) => {
                pass.completed += b.pass.completed;
                pass.failed += b.pass.failed;
                stopped |= b.stop;
            }
            Err(e) => {
                tracing::error!(error = %e, "a deferred batch task failed; its checks stay queued");
                stopped = true;
            }
        }
    }
}

/// The still-deferred records of `ids` (a record completed before a crash took it off the queue
/// is dequeued here).
fn load_batch(gate: &Gate, ids: &[String], pass: &mut Pass) -> Vec<CheckRecord> {
    let mut records = Vec::with_capacity(ids.len());
    for id in ids {
        match gate.journal.get(id) {
            Ok(Some(r)) if r.state == CheckState::Deferred => records.push(r),
            Ok(Some(r)) => {
                // Completed before a crash took it off the queue: finish the job.
                if let Err(e) = gate.journal.put(&r) {
                    tracing::error!(check_id = %id, error = %e, "cannot dequeue");
                }
            }
            Ok(None) => {
                tracing::error!(check_id = %id, "queued check has no record; left queued");
                pass.failed += 1;
            }
            Err(e) => {
                tracing::error!(check_id = %id, error = %e, "queued check unreadable; left queued");
                pass.failed += 1;
            }
        }
    }
    records
}

struct BatchDone {
    pass: Pass,
    /// The link failed or the disk did: start no more batches in this pass.
    stop: bool,
}

/// One batch inquiry: ask, record every outcome (or the error), commit, count.
async fn complete_batch(
    gate: &Gate,
    recording: &tokio::sync::Semaphore,
    records: Vec<CheckRecord>,
) -> BatchDone {
    let requests = records.iter().map(|r| r.request.clone()).collect();
    let answer = gate
        .link
        .call(Request::Batch(requests), BATCH_TIMEOUT)
        .await;
    let mut stop = answer.is_err();
    // Learning 250 people and rewriting 250 records is a few milliseconds of disk-cache work:
    // on the blocking pool, so the runtime's workers keep driving the link (acknowledging what
    // arrives) and the sync task meanwhile.
    let recorded = {
        let gate = gate.clone();
        // The semaphore is never closed.
        let _turn = recording.acquire().await;
        tokio::task::spawn_blocking(move || record_outcomes(&gate, records, answer)).await
    };
    let (records, pass) = match recorded {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "recording a batch's outcomes failed; its checks stay queued");
            return BatchDone {
                pass: Pass::default(),
                stop: true,
            };
        }
    };
    match gate.journal.commit().await {
        Ok(()) => {
            let done = records
                .iter()
                .filter(|r| r.state == CheckState::Completed)
                .count();
            gate.stats
                .deferred_completed
                .fetch_add(done as u64, Ordering::Relaxed);
            if done > 0 {
                // The mailbox's finalizer writes the final results of these checks.
                gate.checks_completed.notify_one();
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "deferred outcomes not durable");
            stop = true;
        }
    }
    BatchDone { pass, stop }
}

/// Writes a batch's answer (or its error) into each record, the replica learning what the
/// answer showed; not durable until the journal's next commit.
fn record_outcomes(
    gate: &Gate,
    mut records: Vec<CheckRecord>,
    answer: Result<Response, LinkError>,
) -> (Vec<CheckRecord>, Pass) {
    let mut pass = Pass::default();
    match answer {
        Ok(Response::Batch(outcomes)) if outcomes.len() == records.len() => {
            let now = Utc::now();
            for (rec, outcome) in records.iter_mut().zip(outcomes) {
                if let Err(e) = gate.replica.learn(&outcome.qualifications, now) {
                    tracing::error!(check_id = %rec.check_id, error = %e, "replica not updated");
                }
                tracing::info!(check_id = %rec.check_id, validity = outcome.validity.as_str(), answered = rec.validity.as_str(), "deferred check completed");
                rec.final_outcome = Some(FinalOutcome {
                    outcome,
                    completed_at: now,
                });
                rec.state = CheckState::Completed;
                rec.last_error = None;
                pass.completed += 1;
            }
        }
        Ok(Response::Error { code, message }) => {
            for rec in &mut records {
                rec.last_error = Some(format!("reconciler error {code}: {message}"));
            }
            pass.failed += records.len();
        }
        Ok(other) => {
            for rec in &mut records {
                rec.last_error = Some(format!(
                    "unexpected answer to a batch of {}: {other:?}",
                    records_len(&other)
                ));
            }
            pass.failed += records.len();
        }
        Err(e) => {
            for rec in &mut records {
                rec.last_error = Some(e.to_string());
            }
            pass.failed += records.len();
        }
    }
    for rec in &mut records {
        rec.attempts = rec.attempts.saturating_add(1);
        if let Err(e) = gate.journal.put(rec) {
            tracing::error!(check_id = %rec.check_id, error = %e, "cannot record the outcome; left queued");
        }
    }
    (records, pass)
}

fn records_len(r: &Response) -> usize {
    match r {
        Response::Batch(o) => o.len(),
        _ => 0,
    }
}

/// Runs passes whenever woken, when the link comes up, and every few seconds, until `stop`.
pub fn spawn(gate: Gate, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut link = gate.link.subscribe();
        loop {
            let outage_pending = gate
                .journal
                .outage()
                .ok()
                .flatten()
                .is_some_and(|o| !o.central);
            if gate.link.state().is_up() && (gate.journal.deferred_len() > 0 || outage_pending) {
                let p = run_pass(&gate).await;
                if p.completed > 0 || p.failed > 0 {
                    tracing::info!(
                        completed = p.completed,
                        failed = p.failed,
                        left = gate.journal.deferred_len(),
                        "deferred pass"
                    );
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
