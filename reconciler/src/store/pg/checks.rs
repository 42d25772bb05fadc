//! Insurance-card checks on PostgreSQL, batched: the checks that arrive while the database is busy
//! with earlier ones go to it together, as one query over arrays of card numbers, instead of one
//! round trip and one statement execution each.
//!
//! A dispatcher task on the store's runtime takes the first waiting check, waits for one of
//! [`IN_FLIGHT`] batch slots, then takes every other check already waiting (up to [`MAX_BATCH`]):
//! an idle centre answers a lone check at once (a batch of one), a busy one batches as many as
//! queued up meanwhile. The rows come back tagged with the check's position, and each check's
//! outcome is decided by the same code as the unbatched check ([`super::insurance_card_outcome`]),
//! so a batched answer is the unbatched answer (the conformance suite holds them equal).
//!
//! Must never: answer a check with another's rows; leave a caller waiting when its batch failed
//! (every check of a failed batch gets the error); hold a reading connection while waiting for a
//! slot.

use std::sync::Arc;

use deadpool_postgres::Pool;
use onshi_model::{CheckOutcome, CheckRequest, CheckSubject, Qualification};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{CentralError, db, decode_period, insurance_card_outcome, pool_error};

/// Batches at the database at once. Two cores' worth of PostgreSQL backends are kept busy by a
/// few; more would only queue inside PostgreSQL instead of here, where they can join a batch.
const IN_FLIGHT: usize = 4;
/// The most checks one query carries.
pub(super) const MAX_BATCH: usize = 128;

/// Every period of each card of the batch, tagged with the card's position (1-based), in the
/// unbatched query's order within a card (`SQL_BY_CARD`).
const SQL_BY_CARDS: &str = "SELECT q.i, p.period
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY
          AS q(insurer_number, symbol, number, branch, i)
     JOIN registry_periods p
       ON p.insurer_number = q.insurer_number AND p.symbol = q.symbol AND p.number = q.number
      AND (q.branch IS NULL OR p.branch = q.branch)
     ORDER BY q.i, p.branch, p.person_id, p.acquired_on";

/// A check waiting for its batch.
struct Waiting {
    req: CheckRequest,
    reply: oneshot::Sender<Result<CheckOutcome, CentralError>>,
}

/// The handle checks are sent through; the dispatcher ends when the last handle is dropped.
#[derive(Clone)]
pub(super) struct CheckBatcher {
    tx: mpsc::UnboundedSender<Waiting>,
}

impl CheckBatcher {
    /// Starts the dispatcher on `rt` (the store's runtime, which drives the pool's connections).
    pub(super) fn start(rt: &tokio::runtime::Handle, pool: Pool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        rt.spawn(dispatch(pool, rx));
        CheckBatcher { tx }
    }

    /// The outcome of an insurance-card check, decided with the checks batched beside it.
    pub(super) async fn check(&self, req: CheckRequest) -> Result<CheckOutcome, CentralError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Waiting { req, reply })
            .map_err(|_| CentralError::Database("the check dispatcher has stopped".into()))?;
        answer.await.map_err(|_| {
            CentralError::Database("the check's batch ended without an answer".into())
        })?
    }
}

async fn dispatch(pool: Pool, mut rx: mpsc::UnboundedReceiver<Waiting>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot is what lets the checks arriving meanwhile join this batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            run_batch(&pool, batch).await;
            drop(slot);
        });
    }
}

/// Runs one batch and answers each of its checks.
async fn run_batch(pool: &Pool, batch: Vec<Waiting>) {
    match candidates_of(pool, &batch).await {
        Ok((c, mut per_check)) => {
            for (i, w) in batch.into_iter().enumerate() {
                let candidates = std::mem::take(&mut per_check[i]);
                let outcome = insurance_card_outcome(&c, &w.req, candidates).await;
                // A caller that gave up (its connection closed) no longer listens: nothing to do.
                let _ = w.reply.send(outcome);
            }
        }
        Err(e) => {
            let message = e.to_string();
            for w in batch {
                let _ = w.reply.send(Err(CentralError::Database(message.clone())));
            }
        }
    }
}

/// The batch's candidate periods, one list per check in the batch's order, and the connection
/// they were read on (kept for the rare second query of a lapsed card).
async fn candidates_of(
    pool: &Pool,
    batch: &[Waiting],
) -> Result<(deadpool_postgres::Object, Vec<Vec<Qualification>>), CentralError> {
    let n = batch.len();
    let (mut insurers, mut symbols, mut numbers, mut branches) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for w in batch {
        let CheckSubject::InsuranceCard { card, .. } = &w.req.subject else {
            return Err(CentralError::Database(
                "a card-id check was sent to the insurance-card batch (a bug)".into(),
            ));
        };
        insurers.push(card.insurer_number.as_str());
        symbols.push(card.symbol.as_ref().map_or("", |s| s.as_str()));
        numbers.push(card.number.as_str());
        branches.push(card.branch.as_ref().map(|b| b.as_str()));
    }
    let c = pool.get().await.map_err(pool_error)?;
    let st = c.prepare_cached(SQL_BY_CARDS).await.map_err(db)?;
    let rows = c
        .query(&st, &[&insurers, &symbols, &numbers, &branches])
        .await
        .map_err(db)?;
    let mut per_check: Vec<Vec<Qualification>> = vec![Vec::new(); n];
    for r in &rows {
        let i: i64 = r.get(0);
        let slot = usize::try_from(i - 1)
            .ok()
            .and_then(|i| per_check.get_mut(i))
            .ok_or_else(|| CentralError::Database(format!("batch row for check {i} of {n}")))?;
        slot.push(decode_period(r.get(1))?);
    }
    Ok((c, per_check))
}
