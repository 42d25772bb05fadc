//! Central search from the store: the outage search of `POST /v1/search` over the whole registry
//! (a facility in a granted outage, and settlement's search for a declared person), with memory
//! bounded whatever the registry's size. The store's search index blocks the candidates
//! ([`SearchBlock`]: the query's birth date and its likely misreadings plus sex, and the name
//! keys); their periods are read, and the ranking is the fallback crate's own, on a small
//! [`SearchIndex`] built over those candidates only. The qualification shown is each candidate's
//! on the service date.
//!
//! Must never: hold an index of the whole registry (nothing here outlives one query); read more
//! than [`CANDIDATE_CAP`] people for one query; log a searched value (names, dates) above debug.

use std::collections::HashMap;

use chrono::NaiveDate;
use onshi_fallback::index::birth_slips;
use onshi_fallback::{Candidate, SearchIndex, SearchQuery};
use onshi_model::{PersonId, Qualification};
use onshi_sync::registry::best_period;

use crate::store::{CentralError, CentralStore, SearchBlock, query_keys};

/// The query central search answers (re-exported for tools that read `POST /v1/search` bodies).
pub use onshi_fallback::SearchQuery as Query;

/// Most people read for one query. Born on one day are ≈3,400 of 125 million people (half of
/// them of one sex); the misread dates and the name keys add at most a few hundred more.
pub const CANDIDATE_CAP: usize = 4096;

/// For each name key, the people with it born nearest the query's date who are read whatever
/// their birth date (the fallback index keeps as many of a common name's far candidates).
pub const NEAR_PER_KEY: usize = 64;

/// The store blocks for `query` ([`SearchBlock`]): the query's date first, then exactly the dates
/// `onshi_fallback` considers for it (`birth_slips`), so the candidates are those its ranking
/// would look at.
pub fn block_for(query: &SearchQuery) -> SearchBlock {
    let mut birth_dates = vec![query.birth_date];
    birth_dates.extend(
        birth_slips(query.birth_date)
            .into_iter()
            .filter(|d| *d != query.birth_date),
    );
    let keys = query_keys(query.name.as_deref(), query.name_kana.as_deref());
    SearchBlock {
        birth_dates,
        sex: query.sex,
        keys: keys.keys,
        split_keys: keys.splits,
        near_per_key: NEAR_PER_KEY,
        cap: CANDIDATE_CAP,
    }
}

/// One candidate of a central search with every period of the person.
#[derive(Debug, Clone)]
pub struct Found {
    pub candidate: Candidate,
    pub periods: Vec<Qualification>,
}

impl Found {
    /// The qualification to show for `day`: the one valid then, else the latest.
    pub fn qualification_on(&self, day: NaiveDate) -> Option<Qualification> {
        best_period(self.periods.clone(), day)
    }
}

/// The best `limit` candidates for `query`, best first, ranked by the fallback crate over the
/// candidates the store's index blocks.
pub fn search(
    store: &dyn CentralStore,
    query: &SearchQuery,
    limit: usize,
) -> Result<Vec<Found>, CentralError> {
    let block = block_for(query);
    let found = store.search_candidates(&block)?;
    if found.capped {
        tracing::debug!(
            cap = block.cap,
            "central search: more candidates than the cap; the rest were not read"
        );
    }
    let index = SearchIndex::build(&found.periods);
    let mut periods: HashMap<PersonId, Vec<Qualification>> = HashMap::new();
    for q in found.periods {
        periods.entry(q.person_id.clone()).or_default().push(q);
    }
    Ok(index
        .search(query, limit)
        .into_iter()
        .map(|c| Found {
            periods: periods.remove(&c.person_id).unwrap_or_default(),
            candidate: c,
        })
        .collect())
}
