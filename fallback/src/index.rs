//! The outage-search index: one compact entry per person over the replica (edge) or the registry
//! (reconciler), and the ranked search of `POST /v1/search` by name or kana, birth date, sex, and
//! insurer name or part of the address. It must stay fast on a million people (blocking by birth
//! date, no scan of the whole index) and must never read a clock, a file or randomness; what a
//! candidate's qualification is, the caller looks up in its own store.
//!
//! Candidates come from three places, each scored by the same function:
//! 1. everyone born on the query's birth date (≈30 people a day in a million);
//! 2. everyone born on a date one typing slip away from it (one digit wrong, two digits swapped,
//!    month and day swapped), if the name is close;
//! 3. everyone with exactly the query's name or reading key, whatever their birth date (same sex;
//!    for a very common name, the 64 whose birth date shares most digits with the query's).
//!
//! Score (0..=1) = weighted mean of name similarity (0.55; 1 − edit distance / length on the keys of
//! [`crate::normalize`]), birth date (0.25; exact 1, a slip away 0.5, other 0.2), sex (0.10; unset
//! on either side 0.5), and, when the query gives them, insurer name (0.05) and address (0.05),
//! which are what separates namesakes born on the same day. Those two, the costly parts, are only
//! computed for candidates whose upper bound can still reach the top k (a test holds the answer equal
//! to the head of the full ranking).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use chrono::{Datelike, NaiveDate};
use onshi_model::fields::Fields;
use onshi_model::{ErrorCode, FieldError, PersonId, Qualification, Sex};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::normalize::{
    AddressKey, PREFECTURES, address_key, address_score_parts, insurer_key, insurer_score,
    is_kana_key, name_key_chars,
};

/// The longest name, reading, insurer name or address a query may carry (characters).
const MAX_QUERY_CHARS: usize = 200;

/// Weights of the score's parts (see the module doc).
const W_NAME: f32 = 0.55;
const W_BIRTH: f32 = 0.25;
const W_SEX: f32 = 0.10;
const W_INSURER: f32 = 0.05;
const W_ADDRESS: f32 = 0.05;

/// Least name similarity for a candidate born on the query's date, and on a date a slip away.
const MIN_NAME_SAME_BIRTH: f32 = 0.5;
const MIN_NAME_BIRTH_SLIP: f32 = 0.75;

/// Most candidates taken from the same-name lists with another birth date.
const MAX_FAR: usize = 64;

/// How many insurers a person's entry remembers (the newest ones win).
const INSURERS_PER_PERSON: usize = 4;

/// A `POST /v1/search` query. At least one of `name` and `name_kana` is present. It also travels
/// on the link as is (central search).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchQuery {
    pub name: Option<String>,
    pub name_kana: Option<String>,
    pub birth_date: NaiveDate,
    pub sex: Sex,
    pub insurer_name: Option<String>,
    pub address: Option<String>,
    /// The day the care is given: each candidate's qualification is the one valid then (today
    /// when absent; the caller supplies today, this crate never reads a clock).
    #[serde(default)]
    pub service_date: Option<NaiveDate>,
}

impl SearchQuery {
    /// The body's field names.
    pub const FIELDS: &'static [&'static str] = &[
        "name",
        "name_kana",
        "birth_date",
        "sex",
        "insurer_name",
        "address",
        "service_date",
    ];

    /// Reads a `POST /v1/search` body: `{"name"?,"name_kana"?,"birth_date","sex","insurer_name"?,
    /// "address"?,"service_date"?}`. Dates in any form `onshi_model::parse_date` accepts (`1980-04-01`, `19800401`,
    /// `昭和55年4月1日`, `S55.4.1`); sex as `Sex::parse` accepts. Every error names its field.
    pub fn from_json(v: &Value) -> Result<Self, FieldError> {
        let f = Fields::root(v)?;
        f.deny_unknown(Self::FIELDS)?;
        let name = opt_text(&f, "name", true)?;
        let name_kana = opt_text(&f, "name_kana", true)?;
        if name.is_none() && name_kana.is_none() {
            return Err(FieldError::new(
                "name",
                ErrorCode::MissingField,
                "name: name or name_kana is required",
            ));
        }
        Ok(SearchQuery {
            name,
            name_kana,
            birth_date: f.req_date("birth_date")?,
            sex: f.req("sex", Sex::parse)?,
            insurer_name: opt_text(&f, "insurer_name", false)?,
            address: opt_text(&f, "address", false)?,
            service_date: f.opt_date("service_date")?,
        })
    }
}

fn opt_text(f: &Fields<'_>, name: &str, is_name: bool) -> Result<Option<String>, FieldError> {
    let Some(s) = f.opt_str(name)? else {
        return Ok(None);
    };
    let t = s.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let p = f.path(name);
    if t.chars().count() > MAX_QUERY_CHARS {
        return Err(FieldError::new(
            p.clone(),
            ErrorCode::InvalidLength,
            format!("{p}: longer than {MAX_QUERY_CHARS} characters"),
        ));
    }
    if t.chars().any(char::is_control) {
        return Err(FieldError::new(
            p.clone(),
            ErrorCode::InvalidCharacter,
            format!("{p}: contains a control character"),
        ));
    }
    if is_name && name_key_chars(t).is_empty() {
        return Err(FieldError::new(
            p.clone(),
            ErrorCode::InvalidCharacter,
            format!("{p}: has no letters to search by"),
        ));
    }
    Ok(Some(t.to_string()))
}

/// Why a candidate is where it is, for staff to judge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "field", content = "match")]
pub enum Reason {
    /// The name (`exact`, or `edits` = edit distance on the keys).
    Name(Closeness),
    /// The kana reading (also when a name typed in kana matched the reading).
    NameKana(Closeness),
    BirthDate(BirthMatch),
    Sex(SexMatch),
    InsurerName(Partial),
    Address(Partial),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Closeness {
    Exact,
    Edits(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BirthMatch {
    Exact,
    /// One typing slip away (a digit, two swapped digits, month and day swapped).
    Slip,
    Differs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SexMatch {
    Same,
    Unknown,
    Differs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Partial {
    Full,
    Partial,
    No,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub person_id: PersonId,
    /// 0..=1; 1 when every given field matches exactly.
    pub score: f32,
    pub reasons: Vec<Reason>,
}

/// Span of text in an arena.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u16,
}

/// What the index keeps per person: ≈60 bytes plus the address text.
#[derive(Debug, Clone)]
struct Entry {
    pid: Span,
    birth: NaiveDate,
    sex: Sex,
    /// The period the name/address/sex/birth fields come from: (acquired on, lost on or MAX).
    newest: (NaiveDate, NaiveDate),
    name: u32,
    kana: u32,
    /// Key lengths, kept here so most non-matches are ruled out without reading the keys.
    name_len: u8,
    kana_len: u8,
    prefecture: u8,
    address: Span,
    insurers: [u32; INSURERS_PER_PERSON],
    n_insurers: u8,
}

/// Interned name/kana keys with the people holding each.
#[derive(Debug, Default)]
struct Keys {
    ids: HashMap<Box<[char]>, u32>,
    text: Vec<Box<[char]>>,
    /// Per key id: people whose name key is it, and people whose kana key is it.
    by_name: Vec<Vec<u32>>,
    by_kana: Vec<Vec<u32>>,
}

impl Keys {
    fn intern(&mut self, key: Vec<char>) -> u32 {
        if let Some(&id) = self.ids.get(key.as_slice()) {
            return id;
        }
        let id = self.text.len() as u32;
        let key: Box<[char]> = key.into_boxed_slice();
        self.ids.insert(key.clone(), id);
        self.text.push(key);
        self.by_name.push(Vec::new());
        self.by_kana.push(Vec::new());
        id
    }

    fn len_of(&self, id: u32) -> u8 {
        self.text
            .get(id as usize)
            .map_or(0, |k| k.len().min(255) as u8)
    }

    fn get(&self, key: &[char]) -> Option<u32> {
        self.ids.get(key).copied()
    }
}

/// The outage-search index. Build it with [`SearchIndex::build`] or [`SearchIndex::insert`]; both
/// are idempotent per qualification period.
#[derive(Debug, Default)]
pub struct SearchIndex {
    entries: Vec<Entry>,
    /// Person id hash → entry; a person whose id hashes like another's goes to `overflow`.
    by_person: HashMap<u64, u32>,
    overflow: HashMap<Box<str>, u32>,
    pid_text: String,
    address_text: String,
    keys: Keys,
    insurer_ids: HashMap<String, u32>,
    insurer_by_name: HashMap<String, u32>,
    insurer_keys: Vec<String>,
    by_birth: HashMap<i32, Vec<u32>>,
}

fn pid_hash(pid: &str) -> u64 {
    let mut h = DefaultHasher::new();
    pid.hash(&mut h);
    h.finish()
}

fn span_of(arena: &mut String, s: &str) -> Span {
    // Longer texts are cut at a character boundary: keys beyond 64 KiB do not occur in practice.
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let span = Span {
        start: arena.len() as u32,
        len: end as u16,
    };
    arena.push_str(&s[..end]);
    span
}

fn text(arena: &str, span: Span) -> &str {
    let (s, e) = (span.start as usize, span.start as usize + span.len as usize);
    arena.get(s..e).unwrap_or("")
}

fn digits_of(d: NaiveDate) -> [u8; 8] {
    let (y, m, dd) = (d.year().rem_euclid(10_000) as u32, d.month(), d.day());
    let v = [
        y / 1000,
        y / 100 % 10,
        y / 10 % 10,
        y % 10,
        m / 10,
        m % 10,
        dd / 10,
        dd % 10,
    ];
    v.map(|x| x as u8)
}

fn day(d: NaiveDate) -> i32 {
    d.num_days_from_ce()
}

fn remove_from(list: &mut Vec<u32>, idx: u32) {
    if let Some(p) = list.iter().position(|&x| x == idx) {
        list.swap_remove(p);
    }
}

impl SearchIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// An index over every period in `periods` (a person's newest period gives their name, address
    /// and birth date; all periods give insurer names).
    pub fn build(periods: &[Qualification]) -> Self {
        let mut ix = Self::new();
        ix.entries.reserve(periods.len());
        for q in periods {
            ix.insert(q);
        }
        ix
    }

    /// Number of people.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, pid: &str) -> Option<u32> {
        if let Some(&i) = self.by_person.get(&pid_hash(pid))
            && self
                .entries
                .get(i as usize)
                .is_some_and(|e| text(&self.pid_text, e.pid) == pid)
        {
            return Some(i);
        }
        self.overflow.get(pid).copied()
    }

    /// Whether the person is in the index.
    pub fn contains(&self, person: &PersonId) -> bool {
        self.find(person.as_str()).is_some()
    }

    fn insurer_id(&mut self, name: &str) -> u32 {
        // A few thousand insurers serve a million people: normalise each name once.
        if let Some(&id) = self.insurer_by_name.get(name) {
            return id;
        }
        let id = self.insurer_id_of_key(insurer_key(name));
        self.insurer_by_name.insert(name.to_string(), id);
        id
    }

    fn insurer_id_of_key(&mut self, k: String) -> u32 {
        if let Some(&id) = self.insurer_ids.get(&k) {
            return id;
        }
        let id = self.insurer_keys.len() as u32;
        self.insurer_ids.insert(k.clone(), id);
        self.insurer_keys.push(k);
        id
    }

    /// Adds one qualification period. The same period again changes nothing; a newer period of a
    /// known person (later acquired, or the same acquired date and a later or no loss; on a full tie
    /// the later insert) replaces their name, reading, sex, birth date and address; every period adds
    /// its insurer name (the newest four are kept).
    pub fn insert(&mut self, q: &Qualification) {
        let pid = q.person_id.as_str();
        let newest = (q.acquired_on, q.lost_on.unwrap_or(NaiveDate::MAX));
        let insurer = self.insurer_id(&q.insurer_name);
        let Some(idx) = self.find(pid) else {
            let idx = self.entries.len() as u32;
            let name = self.keys.intern(name_key_chars(&q.name));
            let kana = self.keys.intern(name_key_chars(&q.name_kana));
            let ak = address_key(&q.address);
            let mut insurers = [0; INSURERS_PER_PERSON];
            insurers[0] = insurer;
            let entry = Entry {
                pid: span_of(&mut self.pid_text, pid),
                birth: q.birth_date,
                sex: q.sex,
                newest,
                name,
                kana,
                name_len: self.keys.len_of(name),
                kana_len: self.keys.len_of(kana),
                prefecture: ak.prefecture.unwrap_or(0),
                address: span_of(&mut self.address_text, &ak.rest),
                insurers,
                n_insurers: 1,
            };
            self.entries.push(entry);
            match self.by_person.entry(pid_hash(pid)) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    self.overflow.insert(pid.into(), idx);
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(idx);
                }
            }
            self.keys.by_name[name as usize].push(idx);
            self.keys.by_kana[kana as usize].push(idx);
            self.by_birth
                .entry(day(q.birth_date))
                .or_default()
                .push(idx);
            return;
        };
        let i = idx as usize;
        let e = &mut self.entries[i];
        let n = e.n_insurers as usize;
        if !e.insurers[..n].contains(&insurer) {
            if n < INSURERS_PER_PERSON {
                e.insurers[n] = insurer;
                e.n_insurers += 1;
            } else {
                e.insurers.rotate_left(1);
                e.insurers[INSURERS_PER_PERSON - 1] = insurer;
            }
        }
        if newest < e.newest {
            return;
        }
        let name = self.keys.intern(name_key_chars(&q.name));
        let kana = self.keys.intern(name_key_chars(&q.name_kana));
        let ak = address_key(&q.address);
        let e = &mut self.entries[i];
        e.newest = newest;
        e.sex = q.sex;
        if e.birth != q.birth_date {
            if let Some(l) = self.by_birth.get_mut(&day(e.birth)) {
                remove_from(l, idx);
            }
            self.by_birth
                .entry(day(q.birth_date))
                .or_default()
                .push(idx);
            e.birth = q.birth_date;
        }
        e.name_len = self.keys.len_of(name);
        e.kana_len = self.keys.len_of(kana);
        if e.name != name {
            remove_from(&mut self.keys.by_name[e.name as usize], idx);
            self.keys.by_name[name as usize].push(idx);
            e.name = name;
        }
        if e.kana != kana {
            remove_from(&mut self.keys.by_kana[e.kana as usize], idx);
            self.keys.by_kana[kana as usize].push(idx);
            e.kana = kana;
        }
        e.prefecture = ak.prefecture.unwrap_or(0);
        if text(&self.address_text, e.address) != ak.rest {
            // The old text stays in the arena: addresses change rarely, and never in a loop.
            e.address = span_of(&mut self.address_text, &ak.rest);
        }
    }

    /// The best `limit` candidates for `query`, best first (ties by person id).
    pub fn search(&self, query: &SearchQuery, limit: usize) -> Vec<Candidate> {
        if limit == 0 {
            return Vec::new();
        }
        let pq = Prepared::new(query);
        let mut scored: Vec<Scored> = Vec::new();
        let birth = day(query.birth_date);
        if let Some(block) = self.by_birth.get(&birth) {
            for &i in block {
                if let Some(s) = self.score(&pq, i, BirthMatch::Exact, MIN_NAME_SAME_BIRTH) {
                    scored.push(s);
                }
            }
        }
        let slips: Vec<i32> = birth_slips(query.birth_date).into_iter().map(day).collect();
        for d in &slips {
            if let Some(block) = self.by_birth.get(d) {
                for &i in block {
                    if let Some(s) = self.score(&pq, i, BirthMatch::Slip, MIN_NAME_BIRTH_SLIP) {
                        scored.push(s);
                    }
                }
            }
        }
        // Same name or reading, any other birth date.
        let mut lists: Vec<&[u32]> = Vec::new();
        if let Some(n) = &pq.name
            && let Some(id) = self.keys.get(n)
        {
            lists.push(&self.keys.by_name[id as usize]);
            if pq.name_is_kana {
                lists.push(&self.keys.by_kana[id as usize]);
            }
        }
        if let Some(k) = &pq.kana
            && let Some(id) = self.keys.get(k)
        {
            lists.push(&self.keys.by_kana[id as usize]);
        }
        let birth_digits = digits_of(query.birth_date);
        let mut far: Vec<(u8, u32)> = lists
            .into_iter()
            .flatten()
            .copied()
            .filter_map(|i| {
                let e = &self.entries[i as usize];
                let b = day(e.birth);
                // A wholly different birth date and a different sex is too little to go on.
                let sex_ok = pq.sex == Sex::Unset || e.sex == Sex::Unset || e.sex == pq.sex;
                (sex_ok && b != birth && !slips.contains(&b)).then(|| {
                    let same = digits_of(e.birth)
                        .iter()
                        .zip(&birth_digits)
                        .filter(|(a, b)| a == b)
                        .count() as u8;
                    (8 - same, i)
                })
            })
            .collect();
        far.sort_unstable();
        far.dedup_by_key(|x| x.1);
        // A very common name: keep those whose birth date shares the most digits with the query.
        if far.len() > MAX_FAR {
            far.select_nth_unstable(MAX_FAR);
            far.truncate(MAX_FAR);
        }
        for (_, i) in far {
            if let Some(s) = self.score(&pq, i, BirthMatch::Differs, MIN_NAME_BIRTH_SLIP) {
                scored.push(s);
            }
        }
        // Best-first on what the insurer and address parts could add at most; finish candidates
        // until the k-th best final score beats every remaining bound.
        scored.sort_by(|a, b| b.base.total_cmp(&a.base));
        let mut done: Vec<Scored> = Vec::with_capacity(limit.min(scored.len()) + 1);
        let mut kth = f32::NEG_INFINITY;
        for mut s in scored {
            let bound = ((s.base + pq.extras) / pq.weight).min(1.0);
            if done.len() >= limit && bound < kth {
                break;
            }
            self.finish(&pq, &mut s);
            done.push(s);
            if done.len() >= limit {
                self.rank(&mut done);
                done.truncate(limit);
                kth = done.last().map_or(f32::NEG_INFINITY, |s| s.score);
            }
        }
        self.rank(&mut done);
        done.truncate(limit);
        done.into_iter()
            .filter_map(|s| {
                let pid =
                    PersonId::parse(text(&self.pid_text, self.entries[s.idx as usize].pid)).ok()?;
                Some(Candidate {
                    person_id: pid,
                    score: s.score,
                    reasons: s.reasons(),
                })
            })
            .collect()
    }

    /// Best score first, ties by person id.
    fn rank(&self, v: &mut [Scored]) {
        v.sort_by(|a, b| {
            b.score.total_cmp(&a.score).then_with(|| {
                let ea = &self.entries[a.idx as usize];
                let eb = &self.entries[b.idx as usize];
                text(&self.pid_text, ea.pid).cmp(text(&self.pid_text, eb.pid))
            })
        });
    }

    fn score(&self, pq: &Prepared, idx: u32, birth: BirthMatch, min_name: f32) -> Option<Scored> {
        let e = &self.entries[idx as usize];
        // Edit distance is at least the difference in length: an upper bound on the similarity.
        let bound = |q: usize, t: u8| sim_n(q.abs_diff(usize::from(t)), q.max(usize::from(t)));
        let ub_name = pq.name.as_ref().map(|q| {
            let b = bound(q.len(), e.name_len);
            if pq.name_is_kana {
                b.max(bound(q.len(), e.kana_len))
            } else {
                b
            }
        });
        let ub_kana = pq.kana.as_ref().map(|q| bound(q.len(), e.kana_len));
        let ub = match (ub_name, ub_kana) {
            (Some(a), Some(b)) if pq.name_is_kana => a.max(b),
            (Some(a), Some(b)) => (a + b) / 2.0,
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => 0.0,
        };
        if ub < min_name {
            return None;
        }
        let name_text = &self.keys.text[e.name as usize];
        let kana_text = &self.keys.text[e.kana as usize];
        let mut name = None;
        let mut kana = None;
        if let Some(q) = &pq.name {
            let d = osa(q, name_text);
            name = Some(d);
            if pq.name_is_kana {
                let dk = osa(q, kana_text);
                if sim(q, kana_text, dk) > sim(q, name_text, d) {
                    name = None;
                    kana = Some((dk, q.len().max(kana_text.len())));
                }
            }
        }
        let name_part = name.map(|d| {
            (
                d,
                pq.name.as_ref().map_or(0, |q| q.len().max(name_text.len())),
            )
        });
        if let Some(q) = &pq.kana {
            let d = osa(q, kana_text);
            let len = q.len().max(kana_text.len());
            if kana.is_none_or(|(kd, kl)| sim_n(d, len) > sim_n(kd, kl)) {
                kana = Some((d, len));
            }
        }
        let name_sim = match (name_part, kana) {
            (Some((a, al)), Some((b, bl))) => (sim_n(a, al) + sim_n(b, bl)) / 2.0,
            (Some((a, al)), None) => sim_n(a, al),
            (None, Some((b, bl))) => sim_n(b, bl),
            (None, None) => 0.0,
        };
        if name_sim < min_name {
            return None;
        }
        let sex = match (pq.sex, e.sex) {
            (Sex::Unset, _) | (_, Sex::Unset) => SexMatch::Unknown,
            (a, b) if a == b => SexMatch::Same,
            _ => SexMatch::Differs,
        };
        let total = W_NAME * name_sim
            + W_BIRTH
                * match birth {
                    BirthMatch::Exact => 1.0,
                    BirthMatch::Slip => 0.5,
                    BirthMatch::Differs => 0.2,
                }
            + W_SEX
                * match sex {
                    SexMatch::Same => 1.0,
                    SexMatch::Unknown => 0.5,
                    SexMatch::Differs => 0.0,
                };
        Some(Scored {
            idx,
            base: total,
            score: 0.0,
            name: name_part.map(|(d, _)| d),
            kana: kana.map(|(d, _)| d),
            birth,
            sex,
            insurer: None,
            address: None,
        })
    }

    /// Adds the insurer and address parts (the costly ones) and sets the final score.
    fn finish(&self, pq: &Prepared, s: &mut Scored) {
        let e = &self.entries[s.idx as usize];
        let mut total = s.base;
        if let Some(qk) = &pq.insurer {
            let best = e.insurers[..e.n_insurers as usize]
                .iter()
                .map(|&id| {
                    insurer_score(
                        qk,
                        self.insurer_keys
                            .get(id as usize)
                            .map_or("", String::as_str),
                    )
                })
                .fold(0.0f32, f32::max);
            total += W_INSURER * best;
            s.insurer = Some(best);
        }
        if let Some(qa) = &pq.address {
            let a = address_score_parts(
                qa,
                (e.prefecture > 0).then_some(e.prefecture),
                text(&self.address_text, e.address),
            );
            total += W_ADDRESS * a;
            s.address = Some(a);
        }
        s.score = (total / pq.weight).clamp(0.0, 1.0);
    }
}

/// The query's keys, computed once.
#[derive(Debug)]
struct Prepared {
    name: Option<Vec<char>>,
    name_is_kana: bool,
    kana: Option<Vec<char>>,
    sex: Sex,
    insurer: Option<String>,
    address: Option<AddressKey>,
    /// Sum of the weights of the parts this query has.
    weight: f32,
    /// Most the insurer and address parts can add.
    extras: f32,
}

impl Prepared {
    fn new(q: &SearchQuery) -> Self {
        let name = q
            .name
            .as_deref()
            .map(name_key_chars)
            .filter(|k| !k.is_empty());
        let name_is_kana = name.as_deref().is_some_and(is_kana_key);
        let insurer = q
            .insurer_name
            .as_deref()
            .map(insurer_key)
            .filter(|k| !k.is_empty());
        let address = q
            .address
            .as_deref()
            .map(address_key)
            .filter(|a| !a.rest.is_empty() || a.prefecture.is_some());
        let extras = if insurer.is_some() { W_INSURER } else { 0.0 }
            + if address.is_some() { W_ADDRESS } else { 0.0 };
        Prepared {
            name,
            name_is_kana,
            kana: q
                .name_kana
                .as_deref()
                .map(name_key_chars)
                .filter(|k| !k.is_empty()),
            sex: q.sex,
            insurer,
            address,
            weight: W_NAME + W_BIRTH + W_SEX + extras,
            extras,
        }
    }
}

#[derive(Debug)]
struct Scored {
    idx: u32,
    /// Weighted name, birth and sex parts (not yet divided by the weight).
    base: f32,
    score: f32,
    name: Option<usize>,
    kana: Option<usize>,
    birth: BirthMatch,
    sex: SexMatch,
    insurer: Option<f32>,
    address: Option<f32>,
}

impl Scored {
    fn reasons(&self) -> Vec<Reason> {
        let close = |d: usize| {
            if d == 0 {
                Closeness::Exact
            } else {
                Closeness::Edits(d.min(255) as u8)
            }
        };
        let part = |s: f32| {
            if s >= 0.9 {
                Partial::Full
            } else if s > 0.0 {
                Partial::Partial
            } else {
                Partial::No
            }
        };
        let mut r = Vec::with_capacity(6);
        if let Some(d) = self.name {
            r.push(Reason::Name(close(d)));
        }
        if let Some(d) = self.kana {
            r.push(Reason::NameKana(close(d)));
        }
        r.push(Reason::BirthDate(self.birth));
        r.push(Reason::Sex(self.sex));
        if let Some(s) = self.insurer {
            r.push(Reason::InsurerName(part(s)));
        }
        if let Some(s) = self.address {
            r.push(Reason::Address(part(s)));
        }
        r
    }
}

fn sim_n(d: usize, len: usize) -> f32 {
    if len == 0 {
        0.0
    } else {
        1.0 - (d.min(len) as f32 / len as f32)
    }
}

fn sim(a: &[char], b: &[char], d: usize) -> f32 {
    sim_n(d, a.len().max(b.len()))
}

/// Optimal-string-alignment distance (insert, delete, substitute, swap of neighbours): a slip of
/// one character, or two characters typed in the wrong order, costs 1.
pub fn osa(a: &[char], b: &[char]) -> usize {
    if a == b {
        return 0;
    }
    if a.is_empty() || b.is_empty() {
        return a.len().max(b.len());
    }
    const N: usize = 48;
    if b.len() >= N || a.len() >= 255 {
        return osa_vec(a, b);
    }
    let m = b.len();
    // Three rows used in turn (i-2, i-1, i), so nothing is copied between rows.
    let mut rows = [[0u8; N]; 3];
    for (j, v) in rows[1].iter_mut().enumerate().take(m + 1) {
        *v = j as u8;
    }
    for i in 1..=a.len() {
        let (cur_i, prev_i, prev2_i) = ((i + 1) % 3, i % 3, (i + 2) % 3);
        rows[cur_i][0] = i as u8;
        for j in 1..=m {
            let cost = u8::from(a[i - 1] != b[j - 1]);
            let mut v = (rows[prev_i][j] + 1)
                .min(rows[cur_i][j - 1] + 1)
                .min(rows[prev_i][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(rows[prev2_i][j - 2] + 1);
            }
            rows[cur_i][j] = v;
        }
    }
    usize::from(rows[(a.len() + 1) % 3][m])
}

fn osa_vec(a: &[char], b: &[char]) -> usize {
    let m = b.len();
    let mut prev2 = vec![0usize; m + 1];
    let mut prev: Vec<usize> = (0..=m).collect();
    let mut cur = vec![0usize; m + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(prev2[j - 2] + 1);
            }
            cur[j] = v;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[m]
}

/// Dates one typing slip away from `d` as written `YYYYMMDD`: one digit changed, two neighbouring
/// digits swapped, or month and day swapped. Only real dates; never `d` itself.
pub fn birth_slips(d: NaiveDate) -> Vec<NaiveDate> {
    let (y, m, dd) = (d.year(), d.month(), d.day());
    if !(1000..=9999).contains(&y) {
        return Vec::new();
    }
    let digits: Vec<u8> = format!("{y:04}{m:02}{dd:02}")
        .bytes()
        .map(|b| b - b'0')
        .collect();
    let to_date = |g: &[u8]| {
        let n = |r: std::ops::Range<usize>| g[r].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
        NaiveDate::from_ymd_opt(n(0..4) as i32, n(4..6), n(6..8))
    };
    let mut out = Vec::with_capacity(80);
    let mut g = digits.clone();
    for p in 0..8 {
        for v in 0..10u8 {
            if v != digits[p] {
                g[p] = v;
                out.extend(to_date(&g));
            }
        }
        g[p] = digits[p];
    }
    for p in 0..7 {
        g.swap(p, p + 1);
        out.extend(to_date(&g));
        g.swap(p, p + 1);
    }
    out.extend(NaiveDate::from_ymd_opt(y, dd, m));
    out.sort_unstable();
    out.dedup();
    out.retain(|x| *x != d);
    out
}

/// The prefecture name for a JIS code (1..=47), for callers that show an [`AddressKey`].
pub fn prefecture_name(code: u8) -> Option<&'static str> {
    PREFECTURES.get(usize::from(code).checked_sub(1)?).copied()
}
