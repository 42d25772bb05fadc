//! The facility's local replica: every qualification the edge has seen in an online answer or
//! prefetched by a batch inquiry, with the time it was known to be true ("as of"). Offline answers
//! come from here. It lives in the same store as the journal, so one group commit makes both
//! durable. It only ever learns: nothing is removed from it.

use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use onshi_fallback::{Candidate, SearchIndex, SearchQuery};
use onshi_model::{CheckOutcome, CheckRequest, PersonId, Qualification, Validity};
use onshi_sync::registry::{Applied, Registry, RegistryError};
use onshi_sync::store::{Store, StoreError, Tree};

/// The replica.
#[derive(Debug, Clone)]
pub struct Replica {
    periods: Registry,
    /// The outage-search index over everyone in the replica, kept in step with `learn`.
    index: Arc<RwLock<SearchIndex>>,
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
    /// Opens the replica and builds its search index (about a second per 100,000 periods).
    pub fn open(store: Arc<dyn Store>) -> Result<Self, RegistryError> {
        let periods = Registry::open_named(store.clone(), "replica")?;
        let mut index = SearchIndex::new();
        for q in periods.all_periods() {
            index.insert(&q?);
        }
        Ok(Replica {
            as_of: store.tree("replica.as_of")?,
            periods,
            index: Arc::new(RwLock::new(index)),
        })
    }

    /// Ranked outage search over the replica.
    pub fn search(&self, query: &SearchQuery, limit: usize) -> Vec<Candidate> {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .search(query, limit)
    }

    /// Learns the qualifications of an online answer, true at `at`. Not durable by itself: the
    /// caller commits the journal, which shares the store.
    pub fn learn(
        &self,
        qualifications: &[Qualification],
        at: DateTime<Utc>,
    ) -> Result<usize, RegistryError> {
        let stamp = at.to_rfc3339();
        let mut changed = Vec::new();
        for q in qualifications {
            if self.periods.put(q)? != Applied::Unchanged {
                changed.push(q);
            }
            self.as_of
                .put(q.person_id.as_str().as_bytes(), stamp.as_bytes())?;
        }
        if !changed.is_empty() {
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            for q in changed {
                index.insert(q);
            }
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
