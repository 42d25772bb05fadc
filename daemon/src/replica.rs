//! The facility's local replica: every qualification the edge has seen in an online answer or
//! prefetched by a batch inquiry, with the time it was known to be true ("as of"). Offline answers
//! come from here. It lives in the same store as the journal, so one group commit makes both
//! durable. It only ever learns: nothing is removed from it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use onshi_model::{CheckOutcome, CheckRequest, PersonId, Qualification, Validity};
use onshi_sync::registry::{Registry, RegistryError};
use onshi_sync::store::{Store, StoreError, Tree};

/// The replica.
#[derive(Debug, Clone)]
pub struct Replica {
    periods: Registry,
    /// person id → RFC 3339 time their periods were last confirmed.
    as_of: Arc<dyn Tree>,
}

/// A replica answer: the outcome on the replica's data, and how old that data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaAnswer {
    pub outcome: CheckOutcome,
    pub as_of: DateTime<Utc>,
}

impl Replica {
    pub fn open(store: Arc<dyn Store>) -> Result<Self, RegistryError> {
        Ok(Replica { as_of: store.tree("replica.as_of")?, periods: Registry::open_named(store, "replica")? })
    }

    /// Learns the qualifications of an online answer, true at `at`. Not durable by itself: the
    /// caller commits the journal, which shares the store.
    pub fn learn(&self, qualifications: &[Qualification], at: DateTime<Utc>) -> Result<usize, RegistryError> {
        let stamp = at.to_rfc3339();
        for q in qualifications {
            self.periods.put(q)?;
            self.as_of.insert(q.person_id.as_str().as_bytes(), stamp.as_bytes())?;
        }
        Ok(qualifications.len())
    }

    pub fn as_of(&self, person: &PersonId) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .as_of
            .get(person.as_str().as_bytes())?
            .and_then(|b| DateTime::parse_from_rfc3339(&String::from_utf8_lossy(&b)).ok())
            .map(|d| d.with_timezone(&Utc)))
    }

    /// Answers a check from what the replica knows; `None` when it does not know the person (a
    /// `not_found` here only means "not seen", never "not insured").
    pub fn check(&self, req: &CheckRequest) -> Result<Option<ReplicaAnswer>, RegistryError> {
        let outcome = self.periods.check(req)?;
        if outcome.validity == Validity::NotFound || outcome.qualifications.is_empty() {
            return Ok(None);
        }
        // The answer is as old as the oldest knowledge it rests on.
        let mut oldest: Option<DateTime<Utc>> = None;
        for q in &outcome.qualifications {
            if let Some(t) = self.as_of(&q.person_id)? {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        }
        Ok(oldest.map(|as_of| ReplicaAnswer { outcome, as_of }))
    }

    /// Periods of one person (for provisional records that name a person).
    pub fn periods_of(&self, person: &PersonId) -> Result<Vec<Qualification>, RegistryError> {
        self.periods.periods_of_person(person)
    }

    /// Every period, grouped by nothing: to build the outage-search index.
    pub fn all_periods(&self) -> Result<Vec<Qualification>, RegistryError> {
        self.periods.all_periods().collect()
    }

    pub fn period_count(&self) -> usize {
        self.periods.period_count()
    }

    pub fn people_count(&self) -> usize {
        self.as_of.len()
    }
}
