//! Central search from the store: the outage search of `POST /v1/search` over the whole registry
//! (a facility in a granted outage, and settlement's search for a declared person), with memory
//! bounded whatever the registry's size. The store's search index blocks the candidates
//! ([`SearchBlock`]: the query's birth date and its likely misreadings plus sex, and the name
//! keys); their periods are read, and the ranking is the fallback crate's own, on a small
//! [`SearchIndex`] built over those candidates only. The qualification shown is each candidate's
//! on the service date.
//!
//! In two stages: the people born on the query's date or a likely misreading of it first
//! ([`Blocks::Dated`]); the people with one of the name keys born on any other date
//! ([`Blocks::Far`]: up to [`NEAR_PER_KEY`] per key, most of a full query's reads) only when the
//! first stage's best is not already of high confidence (`onshi_fallback::settled_without_far`:
//! nobody born on another date could change that best or its confidence). A clean query is
//! answered from the first stage; the candidates after the best then come from it too.
//!
//! Must never: hold an index of the whole registry (nothing here outlives one query); read more
//! than [`CANDIDATE_CAP`] people for one query; log a searched value (names, dates) above debug.

use std::collections::{HashMap, HashSet};

use chrono::NaiveDate;
use onshi_fallback::index::birth_slips;
use onshi_fallback::{Candidate, SearchIndex, SearchQuery, settled_without_far};
use onshi_model::{PersonId, Qualification};
use onshi_sync::registry::best_period;

use crate::store::{Blocks, CentralError, CentralStore, SearchBlock, query_keys};

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
        blocks: Blocks::All,
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
/// candidates the store's index blocks, in two stages (see the module docs).
pub fn search(
    store: &dyn CentralStore,
    query: &SearchQuery,
    limit: usize,
) -> Result<Vec<Found>, CentralError> {
    Ok(search_in_stages(store, query, limit)?.found)
}

/// What [`search_in_stages`] found, and whether it needed the far stage.
#[derive(Debug, Clone)]
pub struct Searched {
    found: Vec<Found>,
    far_read: bool,
}

impl Searched {
    /// The candidates, best first.
    pub fn found(&self) -> &[Found] {
        &self.found
    }

    /// Whether the far candidates were read (the dated ones did not settle the answer).
    pub fn far_read(&self) -> bool {
        self.far_read
    }
}

/// [`search`], saying which stages it took.
pub fn search_in_stages(
    store: &dyn CentralStore,
    query: &SearchQuery,
    limit: usize,
) -> Result<Searched, CentralError> {
    let mut block = block_for(query);
    block.blocks = Blocks::Dated;
    let dated = store.search_candidates(&block)?;
    let mut periods = dated.periods;
    let mut index = SearchIndex::build(&periods);
    let mut ranked = index.search(query, limit);
    let mut capped = dated.capped;
    let far_read = !capped && !settled_without_far(&ranked);
    if far_read {
        // The dated people are taken already: not read again, not counted twice.
        let known: HashSet<PersonId> = periods.iter().map(|q| q.person_id.clone()).collect();
        block.blocks = Blocks::Far {
            known: known.iter().map(|p| p.as_str().to_string()).collect(),
        };
        block.cap = block.cap.saturating_sub(dated.people);
        let far = store.search_candidates(&block)?;
        capped = far.capped;
        // Added to the dated stage's index: the same as one built over both, in that order.
        for q in far
            .periods
            .into_iter()
            .filter(|q| !known.contains(&q.person_id))
        {
            index.insert(&q);
            periods.push(q);
        }
        ranked = index.search(query, limit);
    }
    Ok(Searched {
        found: found(ranked, periods, capped),
        far_read,
    })
}

/// [`search`] in one stage: every block read at once ([`Blocks::All`]), whatever the dated
/// people's best. The reference the two stages are tested against.
pub fn search_in_one_stage(
    store: &dyn CentralStore,
    query: &SearchQuery,
    limit: usize,
) -> Result<Vec<Found>, CentralError> {
    let block = block_for(query);
    let all = store.search_candidates(&block)?;
    let ranked = SearchIndex::build(&all.periods).search(query, limit);
    Ok(found(ranked, all.periods, all.capped))
}

fn found(ranked: Vec<Candidate>, read: Vec<Qualification>, capped: bool) -> Vec<Found> {
    if capped {
        tracing::debug!(
            cap = CANDIDATE_CAP,
            "central search: more candidates than the cap; the rest were not read"
        );
    }
    let mut periods: HashMap<PersonId, Vec<Qualification>> = HashMap::new();
    for q in read {
        periods.entry(q.person_id.clone()).or_default().push(q);
    }
    ranked
        .into_iter()
        .map(|c| Found {
            periods: periods.remove(&c.person_id).unwrap_or_default(),
            candidate: c,
        })
        .collect()
}
