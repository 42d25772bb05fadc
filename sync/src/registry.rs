//! The registry of qualifications imported from insurers' files, and the check it answers: the
//! validity of a qualification **on the service date**. The decision ([`decide_insurance_card`],
//! [`decide_card`]) is a pure function of the periods found; [`Registry`] only finds them.
//!
//! Indexes: (insurer number, symbol, number, branch) → periods; card id → person; person → periods.
//! The registry never deletes a period: a re-import with the same key replaces it (e.g. a lost date
//! filled in later) and an identical line changes nothing.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::sync::Arc;

use chrono::NaiveDate;
use onshi_model::{
    CardId, CheckOutcome, CheckRequest, CheckSubject, FieldError, InsuranceCardKey, PersonId,
    Qualification, Validity,
};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, Tree};

/// How a period is stored: the enum tag is the version.
#[derive(Debug, Serialize, Deserialize)]
enum StoredPeriod {
    V1(Qualification),
}

const SEP: u8 = 0x1f;

fn card_prefix(insurer: &str, symbol: Option<&str>, number: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(48);
    for part in [insurer, symbol.unwrap_or(""), number] {
        k.extend_from_slice(part.as_bytes());
        k.push(SEP);
    }
    k
}

/// The identity of a period: the same person under the same card numbers from the same day. The
/// card numbers are stored as the store blinds them (a keyed hash in an encrypted store).
fn period_key(store: &dyn Store, q: &Qualification) -> Vec<u8> {
    let mut k = store.blind(
        CARD_DOMAIN,
        &card_prefix(
            q.insurer_number.as_str(),
            q.symbol.as_ref().map(|s| s.as_str()),
            q.number.as_str(),
        ),
    );
    // The rest is blinded too: a newborn's period starts on the birth date.
    let mut rest = Vec::with_capacity(32);
    rest.extend_from_slice(q.branch.as_ref().map_or("", |b| b.as_str()).as_bytes());
    rest.push(SEP);
    rest.extend_from_slice(q.person_id.as_str().as_bytes());
    rest.push(SEP);
    rest.extend_from_slice(q.acquired_on.format("%Y%m%d").to_string().as_bytes());
    k.extend_from_slice(&store.blind(PERIOD_DOMAIN, &rest));
    k
}

/// What the card-number part of a key is blinded under ([`Store::blind`]).
const CARD_DOMAIN: &str = "registry.card";
const CARD_ID_DOMAIN: &str = "registry.card_id";
const PERIOD_DOMAIN: &str = "registry.period";

/// The `by_card_id` prefix of a card: its id blinded, then the separator.
fn card_id_prefix(store: &dyn Store, card: &str) -> Vec<u8> {
    let mut k = store.blind(CARD_ID_DOMAIN, card.as_bytes());
    k.push(SEP);
    k
}

fn with_prefix(prefix: &str, key: &[u8]) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    k.push(SEP);
    k.extend_from_slice(key);
    k
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What happened to one line of an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Added,
    Updated,
    Unchanged,
}

/// The outcome of importing one file.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub added: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// 1-based line number and what is wrong with the line.
    pub bad: Vec<(usize, FieldError)>,
}

/// The registry on a [`Store`].
#[derive(Debug, Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
    periods: Arc<dyn Tree>,
    by_person: Arc<dyn Tree>,
    by_card_id: Arc<dyn Tree>,
}

impl Registry {
    pub fn open(store: Arc<dyn Store>) -> Result<Self, RegistryError> {
        Self::open_named(store, "registry")
    }

    /// A registry whose trees are named `NAME.*`: the edge keeps its replica (the qualifications it
    /// has seen) in the same shape, next to its journal.
    pub fn open_named(store: Arc<dyn Store>, name: &str) -> Result<Self, RegistryError> {
        Ok(Registry {
            periods: store.tree(&format!("{name}.periods"))?,
            by_person: store.tree(&format!("{name}.by_person"))?,
            by_card_id: store.tree(&format!("{name}.by_card_id"))?,
            store,
        })
    }

    /// Every period, in key order (to build a search index).
    pub fn all_periods(&self) -> impl Iterator<Item = Result<Qualification, RegistryError>> + '_ {
        self.periods.scan_prefix(&[]).map(|kv| {
            let (k, v) = kv?;
            Ok(Self::decode(&k, &v)?)
        })
    }

    pub fn period_count(&self) -> usize {
        self.periods.len()
    }

    fn decode(key: &[u8], bytes: &[u8]) -> Result<Qualification, StoreError> {
        match postcard::from_bytes::<StoredPeriod>(bytes) {
            Ok(StoredPeriod::V1(q)) => Ok(q),
            Err(e) => Err(StoreError::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                reason: e.to_string(),
            }),
        }
    }

    /// Stores one period (not yet durable: call [`Registry::sync`]).
    pub fn put(&self, q: &Qualification) -> Result<Applied, RegistryError> {
        let key = period_key(self.store.as_ref(), q);
        let bytes = postcard::to_allocvec(&StoredPeriod::V1(q.clone())).map_err(|e| {
            StoreError::Corrupt {
                key: String::from_utf8_lossy(&key).into_owned(),
                reason: e.to_string(),
            }
        })?;
        // Read first: an unchanged period (the common case for re-imports and for the edge's
        // replica, which relearns every answer) costs no write at all.
        let previous = self.periods.get(&key)?;
        let applied = match &previous {
            None => Applied::Added,
            Some(old) if old == &bytes => return Ok(Applied::Unchanged),
            Some(_) => Applied::Updated,
        };
        self.periods.put(&key, &bytes)?;
        if let Some(old) = previous
            && let Ok(old) = Self::decode(&key, &old)
            && let Some(old_card) = old.card_id
            && Some(&old_card) != q.card_id.as_ref()
        {
            self.by_card_id.remove(
                &[
                    card_id_prefix(self.store.as_ref(), old_card.as_str()),
                    key.clone(),
                ]
                .concat(),
            )?;
        }
        self.by_person
            .put(&with_prefix(q.person_id.as_str(), &key), &[])?;
        if let Some(card) = &q.card_id {
            self.by_card_id.insert(
                &[
                    card_id_prefix(self.store.as_ref(), card.as_str()),
                    key.clone(),
                ]
                .concat(),
                q.person_id.as_str().as_bytes(),
            )?;
        }
        Ok(applied)
    }

    /// Makes every put so far durable.
    pub fn sync(&self) -> Result<(), RegistryError> {
        Ok(self.store.sync()?)
    }

    /// Reads a registry JSONL stream: good lines are applied, each bad line is reported with its line
    /// number and reason, and the store is made durable at the end.
    pub fn import(&self, reader: impl BufRead) -> Result<ImportReport, RegistryError> {
        let mut report = ImportReport::default();
        for (i, line) in reader.lines().enumerate() {
            let n = i + 1;
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    report.bad.push((
                        n,
                        FieldError::new(
                            "",
                            onshi_model::ErrorCode::InvalidFormat,
                            format!("cannot read the line: {e}"),
                        ),
                    ));
                    continue;
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            match Qualification::from_registry_json(&line) {
                Ok(q) => match self.put(&q)? {
                    Applied::Added => report.added += 1,
                    Applied::Updated => report.updated += 1,
                    Applied::Unchanged => report.unchanged += 1,
                },
                Err(e) => report.bad.push((n, e)),
            }
        }
        self.sync()?;
        Ok(report)
    }

    /// Every period stored under these card numbers (any branch when the key has none).
    pub fn periods_by_card(
        &self,
        key: &InsuranceCardKey,
    ) -> Result<Vec<Qualification>, RegistryError> {
        let prefix = self.store.blind(
            CARD_DOMAIN,
            &card_prefix(
                key.insurer_number.as_str(),
                key.symbol.as_ref().map(|s| s.as_str()),
                key.number.as_str(),
            ),
        );
        let mut out = Vec::new();
        for kv in self.periods.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let q = Self::decode(&k, &v)?;
            if key.branch.is_none() || key.branch == q.branch {
                out.push(q);
            }
        }
        Ok(out)
    }

    pub fn periods_of_person(
        &self,
        person: &PersonId,
    ) -> Result<Vec<Qualification>, RegistryError> {
        let prefix = with_prefix(person.as_str(), &[]);
        let mut out = Vec::new();
        for kv in self.by_person.scan_prefix(&prefix) {
            let (k, _) = kv?;
            let pkey = &k[prefix.len()..];
            if let Some(v) = self.periods.get(pkey)? {
                out.push(Self::decode(pkey, &v)?);
            }
        }
        Ok(out)
    }

    pub fn persons_by_card_id(&self, card: &CardId) -> Result<BTreeSet<PersonId>, RegistryError> {
        let prefix = card_id_prefix(self.store.as_ref(), card.as_str());
        let mut out = BTreeSet::new();
        for kv in self.by_card_id.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let id = String::from_utf8_lossy(&v).into_owned();
            let id = PersonId::parse(&id).map_err(|e| StoreError::Corrupt {
                key: String::from_utf8_lossy(&k).into_owned(),
                reason: e.to_string(),
            })?;
            out.insert(id);
        }
        Ok(out)
    }

    /// Answers a check against the registry.
    pub fn check(&self, req: &CheckRequest) -> Result<CheckOutcome, RegistryError> {
        match &req.subject {
            CheckSubject::InsuranceCard { card, birth_date } => {
                let candidates = self.periods_by_card(card)?;
                decide_insurance_card(candidates, *birth_date, req.service_date, |p| {
                    self.periods_of_person(p)
                })
            }
            CheckSubject::Card { card_id } => {
                let persons = self.persons_by_card_id(card_id)?;
                let mut periods = Vec::new();
                for p in &persons {
                    periods.push(self.periods_of_person(p)?);
                }
                Ok(decide_card(periods, req.service_date))
            }
        }
    }
}

fn sort_newest_first(v: &mut [Qualification]) {
    v.sort_by(|a, b| {
        b.acquired_on
            .cmp(&a.acquired_on)
            .then_with(|| a.person_id.cmp(&b.person_id))
    });
}

/// The validity of insurance-card numbers on `service`, given every period stored under those
/// numbers. The birth date must match (a mismatch answers `not_found`, as the real system does);
/// two different people matching answers `multiple`; a matching period valid on the service date
/// answers `valid`; otherwise `invalid_newer_exists` when the person has a period acquired after
/// it, else `invalid`. `periods_of` finds all of one person's periods (for the newer one).
pub fn decide_insurance_card<E>(
    candidates: Vec<Qualification>,
    birth_date: NaiveDate,
    service: NaiveDate,
    periods_of: impl Fn(&PersonId) -> Result<Vec<Qualification>, E>,
) -> Result<CheckOutcome, E> {
    let mut matching: Vec<Qualification> = candidates
        .into_iter()
        .filter(|q| q.birth_date == birth_date)
        .collect();
    let persons: BTreeSet<&PersonId> = matching.iter().map(|q| &q.person_id).collect();
    if persons.is_empty() {
        return Ok(CheckOutcome {
            validity: Validity::NotFound,
            qualifications: vec![],
        });
    }
    if persons.len() > 1 {
        // Prefer the ones valid on the day, but staff need to see every candidate.
        sort_newest_first(&mut matching);
        return Ok(CheckOutcome {
            validity: Validity::Multiple,
            qualifications: matching,
        });
    }
    let valid: Vec<Qualification> = matching
        .iter()
        .filter(|q| q.is_valid_on(service))
        .cloned()
        .collect();
    if !valid.is_empty() {
        return Ok(CheckOutcome {
            validity: Validity::Valid,
            qualifications: valid,
        });
    }
    sort_newest_first(&mut matching);
    let latest = matching.swap_remove(0);
    let mut newer: Vec<Qualification> = periods_of(&latest.person_id)?
        .into_iter()
        .filter(|q| {
            q.acquired_on > latest.acquired_on
                && InsuranceCardKey::of(q) != InsuranceCardKey::of(&latest)
        })
        .collect();
    sort_newest_first(&mut newer);
    if newer.is_empty() {
        Ok(CheckOutcome {
            validity: Validity::Invalid,
            qualifications: vec![latest],
        })
    } else {
        let mut qualifications = vec![latest];
        qualifications.extend(newer);
        Ok(CheckOutcome {
            validity: Validity::InvalidNewerExists,
            qualifications,
        })
    }
}

/// The validity of a My Number card on `service`, given the periods of each person the card id is
/// registered to: `valid` if any of the person's periods is valid that day, else `invalid` with the
/// latest period; `not_found` for an unknown card; `multiple` if the card maps to several people.
pub fn decide_card(per_person: Vec<Vec<Qualification>>, service: NaiveDate) -> CheckOutcome {
    let mut per_person: Vec<Vec<Qualification>> =
        per_person.into_iter().filter(|p| !p.is_empty()).collect();
    match per_person.len() {
        0 => CheckOutcome {
            validity: Validity::NotFound,
            qualifications: vec![],
        },
        1 => {
            let mut periods = per_person.swap_remove(0);
            sort_newest_first(&mut periods);
            let valid: Vec<Qualification> = periods
                .iter()
                .filter(|q| q.is_valid_on(service))
                .cloned()
                .collect();
            if valid.is_empty() {
                periods.truncate(1);
                CheckOutcome {
                    validity: Validity::Invalid,
                    qualifications: periods,
                }
            } else {
                CheckOutcome {
                    validity: Validity::Valid,
                    qualifications: valid,
                }
            }
        }
        _ => {
            let mut all: Vec<Qualification> = per_person
                .into_iter()
                .flatten()
                .filter(|q| q.is_valid_on(service))
                .collect();
            sort_newest_first(&mut all);
            CheckOutcome {
                validity: Validity::Multiple,
                qualifications: all,
            }
        }
    }
}
/// Candidates a search returns at most.
pub const SEARCH_LIMIT: usize = 5;

/// The period valid on `day`, else the latest one.
pub fn best_period(
    mut periods: Vec<onshi_model::Qualification>,
    day: chrono::NaiveDate,
) -> Option<onshi_model::Qualification> {
    periods.sort_by_key(|q| std::cmp::Reverse(q.acquired_on));
    let i = periods.iter().position(|q| q.is_valid_on(day)).unwrap_or(0);
    (!periods.is_empty()).then(|| periods.swap_remove(i))
}
