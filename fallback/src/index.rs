//! The outage-search index: one compact entry per person over the replica (edge) or the registry
//! (reconciler), and the ranked search of `POST /v1/search` by name or kana, birth date, sex, and
//! insurer name or part of the address. It must stay fast on a million people (blocking by birth
//! date and by name keys, never a scan of the whole index) and must never read a clock, a file or
//! randomness; what a candidate's qualification is, the caller looks up in its own store.
//!
//! People are asked for at a counter the way they are remembered, so the search expects errors:
//! - Family and given names are matched **independently**, each in any script: the registry's
//!   kanji name, its kana reading, the reading's loose key ([`loose_kana_key`]: voicing marks and
//!   long vowels taken out), romaji ([`romaji_to_kana`]). A query may give both parts (in either
//!   order, with or without a space, in mixed scripts: `山田 たろう`), or only one of them.
//! - The birth date is strong evidence that may be slightly wrong: the dates [`birth_slips`]
//!   lists (day↔month, ±1 year, the same era year in another era, one digit slipped or two
//!   swapped) are searched too and score lower than the exact date.
//! - One mismatching field never hides an otherwise strong match: a changed surname or a slipped
//!   birth date lowers the score, it does not drop the candidate. But a candidate whose sex and
//!   birth date both differ from the query is never returned.
//!
//! Candidates come from three places, each scored by the same function:
//! 1. everyone born on the query's birth date (≈30 people a day in a million) with any name
//!    evidence (one part close);
//! 2. everyone born on a date of [`birth_slips`]: for day↔month, ±1 year and era confusion with a
//!    close name part, for a slipped digit only when a name part's key is one of the query's;
//! 3. everyone holding both a family-name key and a given-name key of the query (the key lists),
//!    whatever their birth date (same sex; for very common names, the 64 whose birth date shares
//!    most digits with the query's).
//!
//! Score (0..=1) = weighted mean of name similarity (0.55: the mean of the family and given parts,
//! exact 1, variant or order swapped 0.9, typo 0.45–0.9, not given 0.5, differs 0.2), birth date
//! (0.25: exact 1, swapped or ±1 year 0.6, era or digit slip 0.5, other 0), sex (0.10; unset on
//! either side 0.5), and, when the query gives them, insurer name (0.05) and address (0.05 for a
//! town, 0.075 with a number, 0.10 with a house number `1-7`), which are what separates namesakes
//! born on the same day. Those two, the costly parts, are only
//! computed for candidates whose upper bound can still reach the top k (a test holds the answer
//! equal to the head of the full ranking). [`confidence`] says how far staff can trust the best.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use chrono::{Datelike, NaiveDate};
use onshi_model::fields::Fields;
use onshi_model::{Era, ErrorCode, FieldError, PersonId, Qualification, Sex};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::keys::script_split;
use crate::normalize::{
    AddressKey, PREFECTURES, address_alternatives, address_key, address_score_parts, insurer_key,
    insurer_score, is_katakana, loose_kana_key, name_key_chars, romaji_to_kana, split_name,
};

/// The longest name, reading, insurer name or address a query may carry (characters).
const MAX_QUERY_CHARS: usize = 200;

/// Weights of the score's parts (see the module doc).
const W_NAME: f32 = 0.55;
const W_BIRTH: f32 = 0.25;
const W_SEX: f32 = 0.10;
const W_INSURER: f32 = 0.05;
/// The address weighs by how much it says: a house number (`1-7-15`) tells one household, a town
/// a few thousand people. At most 0.10, so an exact name, birth date and sex with a wholly new
/// address still scores ≈0.86 (the reconciler's settlement identifies from 0.85).
const W_ADDRESS: f32 = 0.05;
const W_ADDRESS_NUMBER: f32 = 0.075;
const W_ADDRESS_HOUSE: f32 = 0.10;

/// What a name part contributes (see the module doc).
const P_EXACT: f32 = 1.0;
const P_VARIANT: f32 = 0.9;
const P_SWAPPED: f32 = 0.9;
const P_MISSING: f32 = 0.5;
const P_DIFFERS: f32 = 0.2;
/// A typo's part score is this times the similarity (1 − edits / length, at least 0.5).
const TYPO_FACTOR: f32 = 0.9;

/// Least name evidence (the best part given) for a candidate born on the query's date, and on a
/// date of [`birth_slips`]; least name similarity for one born on another day.
const MIN_PART_SAME_BIRTH: f32 = 0.6;
const MIN_PART_NEAR_BIRTH: f32 = 0.7;
const MIN_NAME_FAR: f32 = 0.8;

/// Most candidates taken from the key lists with another birth date.
const MAX_FAR: usize = 64;
/// A key list longer than this is not walked for the far candidates: a person is found through the
/// list of their other part (佐藤 is common, 佐藤 with a given name is in the given name's list).
const MAX_FAR_LIST: usize = 20_000;

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

/// Why a candidate is where it is, for staff to judge it: one per field, as
/// `{"field": "family_name", "match": "exact"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "field", content = "match")]
pub enum Reason {
    /// The family name (surname), in whatever script the query gave it.
    FamilyName(NameMatch),
    /// The given name.
    GivenName(NameMatch),
    BirthDate(BirthMatch),
    Sex(SexMatch),
    InsurerName(Partial),
    Address(Partial),
}

/// How one part of the name matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameMatch {
    /// The same key (old/variant kanji, kana of either kind and width folded), or the reading.
    Exact,
    /// The same reading written another way: voicing marks, long vowels, romaji.
    Variant,
    /// One or two characters wrong, missing, extra or swapped.
    Typo,
    /// Family and given name given in the other order.
    Swapped,
    /// The query did not give this part.
    Missing,
    /// Given, and different (a changed surname, another person).
    Differs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BirthMatch {
    Exact,
    /// Day and month swapped.
    Swapped,
    /// The year off by one (a slip, or an era year converted with the wrong base).
    YearOff,
    /// The same era year number in another era (昭和5年 for 平成5年).
    Era,
    /// One digit slipped, or two neighbouring digits swapped.
    Typo,
    Differs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SexMatch {
    Same,
    Unknown,
    Differs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// How far staff can trust a search's best candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// The best matches closely (score ≥ 0.9, exact birth date when known) and well ahead of the
    /// next.
    High,
    Medium,
    /// Nothing found, the best is weak (< 0.75), or the first two cannot be told apart (less
    /// than 0.02 between them: namesakes the address or insurer did not separate).
    Low,
}

/// Least score for a high confidence, and least lead over the second.
const HIGH_SCORE: f32 = 0.9;
const HIGH_MARGIN: f32 = 0.05;
/// Below this the best is weak; within `TIE` of the second it is not told apart.
const LOW_SCORE: f32 = 0.75;
const TIE: f32 = 0.02;

/// The most a candidate born on none of the dates the query considers ([`BirthMatch::Differs`])
/// can score: its birth part adds nothing, whatever else matches, and the query's weight is at most
/// that of every part.
const FAR_MAX: f32 = 1.0 - W_BIRTH / (W_NAME + W_BIRTH + W_SEX + W_INSURER + W_ADDRESS_HOUSE);
const _: () = assert!(
    FAR_MAX + HIGH_MARGIN < HIGH_SCORE,
    "a far candidate must not be able to unsettle a high-confidence best"
);

/// Whether the candidates born on the query's date or a likely misreading of it already settle a
/// search (`ranked`: them, best first): the best is of high confidence. Nobody born on another date
/// can change that answer: such a candidate scores at most [`FAR_MAX`], below the best by more than
/// the margin a high confidence needs, so the best and its confidence stay as they are. Central
/// search reads the far candidates (a name whatever the date) only when this is false.
pub fn settled_without_far(ranked: &[Candidate]) -> bool {
    confidence(ranked) == Confidence::High
}

/// The confidence of a ranked answer (best first), by the scores and, where the candidates have
/// them, the reasons; the edge computes it for central answers (no reasons) too.
pub fn confidence(ranked: &[Candidate]) -> Confidence {
    let Some(best) = ranked.first() else {
        return Confidence::Low;
    };
    let second = ranked.get(1).map_or(0.0, |c| c.score);
    if best.score < LOW_SCORE || best.score - second < TIE {
        return Confidence::Low;
    }
    let birth_ok = best.reasons.iter().all(|r| match r {
        Reason::BirthDate(b) => *b == BirthMatch::Exact,
        Reason::FamilyName(n) | Reason::GivenName(n) => *n != NameMatch::Missing,
        _ => true,
    });
    if best.score >= HIGH_SCORE && best.score - second >= HIGH_MARGIN && birth_ok {
        Confidence::High
    } else {
        Confidence::Medium
    }
}

/// Span of text in an arena.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u16,
}

/// The slots of [`Entry::keys`]: family and given name as registered, as read, loosely read.
const F_NAME: usize = 0;
const G_NAME: usize = 1;
const F_KANA: usize = 2;
const G_KANA: usize = 3;
const F_LOOSE: usize = 4;
const G_LOOSE: usize = 5;

/// What the index keeps per person: ≈70 bytes plus the address text.
#[derive(Debug, Clone)]
struct Entry {
    pid: Span,
    birth: NaiveDate,
    sex: Sex,
    /// The period the name/address/sex/birth fields come from: (acquired on, lost on or MAX).
    newest: (NaiveDate, NaiveDate),
    /// Interned keys by slot (`F_NAME`…`G_LOOSE`).
    keys: [u32; 6],
    prefecture: u8,
    address: Span,
    insurers: [u32; INSURERS_PER_PERSON],
    n_insurers: u8,
}

/// Interned name-part keys with the people holding each (in any slot).
#[derive(Debug, Default)]
struct Keys {
    ids: HashMap<Box<[char]>, u32>,
    text: Vec<Box<[char]>>,
    people: Vec<Vec<u32>>,
}

impl Keys {
    fn intern(&mut self, key: &[char]) -> u32 {
        if let Some(&id) = self.ids.get(key) {
            return id;
        }
        let id = self.text.len() as u32;
        let key: Box<[char]> = key.into();
        self.ids.insert(key.clone(), id);
        self.text.push(key);
        self.people.push(Vec::new());
        id
    }

    fn get(&self, key: &[char]) -> Option<u32> {
        self.ids.get(key).copied()
    }

    fn text(&self, id: u32) -> &[char] {
        self.text.get(id as usize).map_or(&[], |k| k)
    }

    /// The distinct non-empty keys of a person, for the key lists.
    fn distinct(&self, keys: &[u32; 6]) -> Vec<u32> {
        let mut v: Vec<u32> = keys
            .iter()
            .copied()
            .filter(|&id| !self.text(id).is_empty())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
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

/// The six key texts of a registry name and reading (`FAMILY　GIVEN`), in slot order.
fn person_key_texts(name: &str, kana: &str) -> [Vec<char>; 6] {
    let (f, g) = split_name(name);
    let (kf, kg) = split_name(kana);
    let (fk, gk) = (name_key_chars(kf), name_key_chars(kg));
    let (fl, gl) = (loose_kana_key(&fk), loose_kana_key(&gk));
    // F_NAME, G_NAME, F_KANA, G_KANA, F_LOOSE, G_LOOSE.
    [name_key_chars(f), name_key_chars(g), fk, gk, fl, gl]
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
        let k = insurer_key(name);
        let id = match self.insurer_ids.get(&k) {
            Some(&id) => id,
            None => {
                let id = self.insurer_keys.len() as u32;
                self.insurer_ids.insert(k.clone(), id);
                self.insurer_keys.push(k);
                id
            }
        };
        self.insurer_by_name.insert(name.to_string(), id);
        id
    }

    fn intern_person(&mut self, q: &Qualification) -> [u32; 6] {
        let texts = person_key_texts(&q.name, &q.name_kana);
        let mut ids = [0u32; 6];
        for (slot, t) in texts.iter().enumerate() {
            ids[slot] = self.keys.intern(t);
        }
        ids
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
            let keys = self.intern_person(q);
            let ak = address_key(&q.address);
            let mut insurers = [0; INSURERS_PER_PERSON];
            insurers[0] = insurer;
            let entry = Entry {
                pid: span_of(&mut self.pid_text, pid),
                birth: q.birth_date,
                sex: q.sex,
                newest,
                keys,
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
            for id in self.keys.distinct(&keys) {
                self.keys.people[id as usize].push(idx);
            }
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
        let keys = self.intern_person(q);
        let ak = address_key(&q.address);
        let old_keys = self.entries[i].keys;
        if old_keys != keys {
            for id in self.keys.distinct(&old_keys) {
                remove_from(&mut self.keys.people[id as usize], idx);
            }
            for id in self.keys.distinct(&keys) {
                self.keys.people[id as usize].push(idx);
            }
        }
        let e = &mut self.entries[i];
        e.keys = keys;
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
        let pq = Prepared::new(query, &self.keys);
        let mut scored: Vec<Scored> = Vec::new();
        let birth = day(query.birth_date);
        if let Some(block) = self.by_birth.get(&birth) {
            for &i in block {
                if let Some(s) = self.score(&pq, i, BirthMatch::Exact, MIN_PART_SAME_BIRTH) {
                    scored.push(s);
                }
            }
        }
        let near = birth_candidates(query.birth_date);
        for (d, how) in &near {
            let Some(block) = self.by_birth.get(&day(*d)) else {
                continue;
            };
            for &i in block {
                // A slipped digit is only believed with a name part's key the query has: there
                // are 80 such dates, most of them other people's.
                if *how == BirthMatch::Typo && !pq.hits(&self.entries[i as usize].keys) {
                    continue;
                }
                if let Some(s) = self.score(&pq, i, *how, MIN_PART_NEAR_BIRTH) {
                    scored.push(s);
                }
            }
        }
        self.far(&pq, query.birth_date, &near, &mut scored);
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

    /// People holding a family-part and a given-part key of the query, born on another day than
    /// those already searched: a birth date wholly wrong, the name right.
    fn far(
        &self,
        pq: &Prepared,
        birth: NaiveDate,
        near: &[(NaiveDate, BirthMatch)],
        scored: &mut Vec<Scored>,
    ) {
        if pq.key_ids.len() < 2 {
            return;
        }
        let birth_day = day(birth);
        let birth_digits = digits_of(birth);
        let mut seen: Vec<u32> = Vec::new();
        for &id in &pq.key_ids {
            let list = &self.keys.people[id as usize];
            if list.len() > MAX_FAR_LIST {
                continue;
            }
            for &i in list {
                let e = &self.entries[i as usize];
                let fam = [F_NAME, F_KANA, F_LOOSE]
                    .iter()
                    .any(|&s| pq.key_ids.binary_search(&e.keys[s]).is_ok());
                let giv = [G_NAME, G_KANA, G_LOOSE]
                    .iter()
                    .any(|&s| pq.key_ids.binary_search(&e.keys[s]).is_ok());
                // A wholly different birth date and a different sex is too little to go on.
                let sex_ok = pq.sex == Sex::Unset || e.sex == Sex::Unset || e.sex == pq.sex;
                if fam && giv && sex_ok {
                    seen.push(i);
                }
            }
        }
        seen.sort_unstable();
        seen.dedup();
        let mut far: Vec<(u8, u32)> = seen
            .into_iter()
            .filter_map(|i| {
                let e = &self.entries[i as usize];
                let b = day(e.birth);
                (b != birth_day && !near.iter().any(|(d, _)| day(*d) == b)).then(|| {
                    let same = digits_of(e.birth)
                        .iter()
                        .zip(&birth_digits)
                        .filter(|(a, b)| a == b)
                        .count() as u8;
                    (8 - same, i)
                })
            })
            .collect();
        // A very common name: keep those whose birth date shares the most digits with the query.
        if far.len() > MAX_FAR {
            far.select_nth_unstable(MAX_FAR);
            far.truncate(MAX_FAR);
        }
        for (_, i) in far {
            if let Some(s) = self.score(pq, i, BirthMatch::Differs, 0.0) {
                scored.push(s);
            }
        }
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

    fn score(&self, pq: &Prepared, idx: u32, birth: BirthMatch, min_part: f32) -> Option<Scored> {
        let e = &self.entries[idx as usize];
        let sex = match (pq.sex, e.sex) {
            (Sex::Unset, _) | (_, Sex::Unset) => SexMatch::Unknown,
            (a, b) if a == b => SexMatch::Same,
            _ => SexMatch::Differs,
        };
        // Sex and birth date both wrong: someone else, however close the name.
        if sex == SexMatch::Differs && birth != BirthMatch::Exact {
            return None;
        }
        let c = CandKeys {
            f: [
                self.keys.text(e.keys[F_NAME]),
                self.keys.text(e.keys[F_KANA]),
                self.keys.text(e.keys[F_LOOSE]),
            ],
            g: [
                self.keys.text(e.keys[G_NAME]),
                self.keys.text(e.keys[G_KANA]),
                self.keys.text(e.keys[G_LOOSE]),
            ],
        };
        let [fam, giv] = pq.name_match(&c);
        let given: Vec<f32> = [fam, giv]
            .iter()
            .filter(|p| p.1 != NameMatch::Missing)
            .map(|p| p.0)
            .collect();
        let best_part = given.iter().copied().fold(0.0f32, f32::max);
        let both_typo = given.len() == 2 && given.iter().all(|&s| s >= TYPO_FACTOR * 0.5);
        if best_part < min_part && !both_typo {
            return None;
        }
        let name_sim = (fam.0 + giv.0) / 2.0;
        if birth == BirthMatch::Differs && name_sim < MIN_NAME_FAR {
            return None;
        }
        let total = W_NAME * name_sim
            + W_BIRTH * birth_weight(birth)
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
            family: fam.1,
            given: giv.1,
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
        if !pq.address.is_empty() {
            let target = text(&self.address_text, e.address);
            let pref = (e.prefecture > 0).then_some(e.prefecture);
            let a = pq
                .address
                .iter()
                .map(|qa| address_score_parts(qa, pref, target))
                .fold(0.0f32, f32::max);
            total += pq.w_address * a;
            s.address = Some(a);
        }
        s.score = (total / pq.weight).clamp(0.0, 1.0);
    }
}

/// Whether an address key has a house number (`…1-7`, digits on both sides of a `-`).
fn has_house_number(rest: &str) -> bool {
    let c: Vec<char> = rest.chars().collect();
    c.windows(3)
        .any(|w| w[0].is_ascii_digit() && w[1] == '-' && w[2].is_ascii_digit())
}

fn birth_weight(b: BirthMatch) -> f32 {
    match b {
        BirthMatch::Exact => 1.0,
        BirthMatch::Swapped | BirthMatch::YearOff => 0.6,
        BirthMatch::Era | BirthMatch::Typo => 0.5,
        // A wholly different date is no evidence: an exact name born another day is a namesake
        // more often than the person (a changed surname with the right date outranks it).
        BirthMatch::Differs => 0.0,
    }
}

/// A candidate's name-part keys: `[as registered, as read, loosely read]`.
struct CandKeys<'a> {
    f: [&'a [char]; 3],
    g: [&'a [char]; 3],
}

/// One word of the query's name, in the forms it is compared in.
#[derive(Debug, Clone)]
struct QTok {
    /// The key as typed (kanji, kana or Latin).
    strict: Vec<char>,
    /// Its reading in katakana when it is kana or romaji.
    reading: Option<Vec<char>>,
    /// The loose key of the reading.
    loose: Option<Vec<char>>,
}

impl QTok {
    fn new(raw: &str) -> Self {
        Self::from_key(name_key_chars(raw), raw)
    }

    fn from_key(strict: Vec<char>, raw: &str) -> Self {
        let reading = if !strict.is_empty() && strict.iter().all(|&c| is_katakana(c)) {
            Some(strict.clone())
        } else if !strict.is_empty() && strict.iter().all(char::is_ascii_alphabetic) {
            romaji_to_kana(raw).map(|k| name_key_chars(&k))
        } else {
            None
        };
        let loose = reading.as_deref().map(loose_kana_key);
        QTok {
            strict,
            reading,
            loose,
        }
    }

    fn from_chars(strict: &[char]) -> Self {
        let raw: String = strict.iter().collect();
        Self::from_key(strict.to_vec(), &raw)
    }
}

/// The name or the reading of a query, as words.
#[derive(Debug)]
struct QField {
    toks: Vec<QTok>,
}

impl QField {
    fn new(raw: &str) -> Option<Self> {
        let words: Vec<&str> = raw
            .split(char::is_whitespace)
            .filter(|w| !w.is_empty())
            .collect();
        let mut toks: Vec<QTok> = match words.as_slice() {
            [] => return None,
            [one] => vec![QTok::new(one)],
            // Middle names (foreign residents) go with the given name.
            [first, rest @ ..] => vec![QTok::new(first), QTok::new(&rest.join(""))],
        };
        toks.retain(|t| !t.strict.is_empty());
        if toks.len() == 1
            && let Some(at) = script_split(&toks[0].strict)
        {
            let (a, b) = toks[0].strict.split_at(at);
            toks = vec![QTok::from_chars(a), QTok::from_chars(b)];
        }
        (!toks.is_empty()).then_some(QField { toks })
    }

    /// The best reading of this field against a candidate: (family, given).
    fn against(&self, c: &CandKeys<'_>) -> [(f32, NameMatch); 2] {
        match self.toks.as_slice() {
            [t] => single(t, c),
            [a, b, ..] => {
                let straight = [part(a, &c.f), part(b, &c.g)];
                let crossed = [part(b, &c.f), part(a, &c.g)].map(|(s, m)| match m {
                    NameMatch::Exact | NameMatch::Variant => (P_SWAPPED, NameMatch::Swapped),
                    _ => (s * 0.95, m),
                });
                if sum(&crossed) > sum(&straight) {
                    crossed
                } else {
                    straight
                }
            }
            [] => [(P_MISSING, NameMatch::Missing); 2],
        }
    }
}

fn sum(p: &[(f32, NameMatch); 2]) -> f32 {
    p[0].0 + p[1].0
}

/// Similarity for a typo: `TYPO_FACTOR × (1 − edits/length)` for at most two edits and at least
/// half the characters right, else 0.
fn typo_sim(a: &[char], b: &[char]) -> f32 {
    if a.is_empty() || b.is_empty() || a.len().abs_diff(b.len()) > 2 {
        return 0.0;
    }
    let d = osa(a, b);
    let len = a.len().max(b.len());
    let s = 1.0 - d as f32 / len as f32;
    if d > 2 || s < 0.5 {
        0.0
    } else {
        TYPO_FACTOR * s
    }
}

/// One query word against one part of a candidate's name (`[registered, read, loose]`).
fn part(t: &QTok, c: &[&[char]; 3]) -> (f32, NameMatch) {
    if c[0].is_empty() && c[1].is_empty() {
        return (P_DIFFERS, NameMatch::Differs);
    }
    if t.strict == c[0] || t.strict == c[1] {
        return (P_EXACT, NameMatch::Exact);
    }
    if t.reading.as_deref() == Some(c[1]) || t.loose.as_deref() == Some(c[2]) {
        return (P_VARIANT, NameMatch::Variant);
    }
    let mut best = typo_sim(&t.strict, c[0]);
    if let Some(l) = &t.loose {
        best = best.max(typo_sim(l, c[2]));
    }
    if best > 0.0 {
        (best, NameMatch::Typo)
    } else {
        (P_DIFFERS, NameMatch::Differs)
    }
}

/// One query word against a whole candidate: the family name alone, the given name alone, or
/// both written without a space (in either order), whichever reads best.
fn single(t: &QTok, c: &CandKeys<'_>) -> [(f32, NameMatch); 2] {
    let missing = (P_MISSING, NameMatch::Missing);
    let as_f = part(t, &c.f);
    let as_g = part(t, &c.g);
    let mut best = if as_g.0 > as_f.0 {
        [missing, as_g]
    } else {
        [as_f, missing]
    };
    let mut consider = |p: [(f32, NameMatch); 2]| {
        if sum(&p) > sum(&best) {
            best = p;
        }
    };
    // The whole name without a space: split where a candidate's part ends or begins.
    let forms: [(Option<&[char]>, usize, f32, NameMatch); 3] = [
        (Some(&t.strict), 0, P_EXACT, NameMatch::Exact),
        (t.reading.as_deref(), 1, P_EXACT, NameMatch::Exact),
        (t.loose.as_deref(), 2, P_VARIANT, NameMatch::Variant),
    ];
    let mut split_found = false;
    for (form, k, s, m) in forms {
        let Some(q) = form else { continue };
        let (f, g) = (c.f[k], c.g[k]);
        if f.is_empty() || g.is_empty() || q.len() <= f.len().min(g.len()) {
            continue;
        }
        if q.starts_with(f) {
            split_found = true;
            consider([(s, m), part(&QTok::from_chars(&q[f.len()..]), &c.g)]);
        }
        if q.ends_with(g) {
            split_found = true;
            consider([
                part(&QTok::from_chars(&q[..q.len() - g.len()]), &c.f),
                (s, m),
            ]);
        }
        if q.starts_with(g) {
            split_found = true;
            let rest = part(&QTok::from_chars(&q[g.len()..]), &c.f);
            let rest = match rest.1 {
                NameMatch::Exact | NameMatch::Variant => (P_SWAPPED, NameMatch::Swapped),
                _ => rest,
            };
            consider([rest, (P_SWAPPED, NameMatch::Swapped)]);
        }
    }
    if !split_found {
        // A typo somewhere in a name written without a space.
        for (form, k) in [(Some(&t.strict[..]), 0), (t.loose.as_deref(), 2)] {
            let Some(q) = form else { continue };
            let (f, g) = (c.f[k], c.g[k]);
            if f.is_empty() || g.is_empty() || q.len().abs_diff(f.len() + g.len()) > 2 {
                continue;
            }
            let whole: Vec<char> = f.iter().chain(g).copied().collect();
            let s = typo_sim(q, &whole);
            if s > 0.0 {
                consider([(s, NameMatch::Typo), (s, NameMatch::Typo)]);
            }
        }
    }
    best
}

/// The query's keys, computed once.
#[derive(Debug)]
struct Prepared {
    fields: Vec<QField>,
    /// Interned keys the query's words (and, for a word without a space, its heads and tails)
    /// have, sorted: which people's key lists to walk, and which slipped-date people to score.
    key_ids: Vec<u32>,
    sex: Sex,
    insurer: Option<String>,
    /// The address as written, and with old municipality names replaced.
    address: Vec<AddressKey>,
    /// The address part's weight (by how specific the address is).
    w_address: f32,
    /// Sum of the weights of the parts this query has.
    weight: f32,
    /// Most the insurer and address parts can add.
    extras: f32,
}

impl Prepared {
    fn new(q: &SearchQuery, keys: &Keys) -> Self {
        let fields: Vec<QField> = [q.name.as_deref(), q.name_kana.as_deref()]
            .into_iter()
            .flatten()
            .filter_map(QField::new)
            .collect();
        let mut key_ids = Vec::new();
        for f in &fields {
            for t in &f.toks {
                for form in [Some(&t.strict), t.reading.as_ref(), t.loose.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    key_ids.extend(keys.get(form));
                    if f.toks.len() == 1 {
                        // Without a space the parts' keys are a head and a tail of the word.
                        for n in 1..form.len() {
                            key_ids.extend(keys.get(&form[..n]));
                            key_ids.extend(keys.get(&form[n..]));
                        }
                    }
                }
            }
        }
        key_ids.sort_unstable();
        key_ids.dedup();
        let insurer = q
            .insurer_name
            .as_deref()
            .map(insurer_key)
            .filter(|k| !k.is_empty());
        let address = q
            .address
            .as_deref()
            .map(address_key)
            .filter(|a| !a.rest.is_empty() || a.prefecture.is_some())
            .map(|a| address_alternatives(&a))
            .unwrap_or_default();
        let w_address = match address.first() {
            None => 0.0,
            Some(a) if has_house_number(&a.rest) => W_ADDRESS_HOUSE,
            Some(a) if a.rest.contains(|c: char| c.is_ascii_digit()) => W_ADDRESS_NUMBER,
            Some(_) => W_ADDRESS,
        };
        let extras = if insurer.is_some() { W_INSURER } else { 0.0 } + w_address;
        Prepared {
            fields,
            key_ids,
            sex: q.sex,
            insurer,
            address,
            w_address,
            weight: W_NAME + W_BIRTH + W_SEX + extras,
            extras,
        }
    }

    /// Whether a person has one of the query's keys.
    fn hits(&self, keys: &[u32; 6]) -> bool {
        keys.iter().any(|k| self.key_ids.binary_search(k).is_ok())
    }

    /// Family and given part of the name against a candidate. With both a name and a reading,
    /// each part is mostly the better of the two and a little the other (so a reading that
    /// matches does not hide a kanji typo, and namesakes in kana are told apart by the kanji).
    fn name_match(&self, c: &CandKeys<'_>) -> [(f32, NameMatch); 2] {
        let mut out = [(P_MISSING, NameMatch::Missing); 2];
        let mut seen = [false; 2];
        for f in &self.fields {
            let r = f.against(c);
            for p in 0..2 {
                if r[p].1 == NameMatch::Missing {
                    continue;
                }
                if !seen[p] {
                    out[p] = r[p];
                    seen[p] = true;
                } else {
                    let (hi, lo) = if r[p].0 > out[p].0 {
                        (r[p], out[p])
                    } else {
                        (out[p], r[p])
                    };
                    out[p] = (0.75 * hi.0 + 0.25 * lo.0, hi.1);
                }
            }
        }
        out
    }
}

#[derive(Debug)]
struct Scored {
    idx: u32,
    /// Weighted name, birth and sex parts (not yet divided by the weight).
    base: f32,
    score: f32,
    family: NameMatch,
    given: NameMatch,
    birth: BirthMatch,
    sex: SexMatch,
    insurer: Option<f32>,
    address: Option<f32>,
}

impl Scored {
    fn reasons(&self) -> Vec<Reason> {
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
        r.push(Reason::FamilyName(self.family));
        r.push(Reason::GivenName(self.given));
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

/// The same era year number in the other eras a person may be born in (大正, 昭和, 平成, 令和):
/// `昭和5年` heard or typed for `平成5年` and back. Only dates inside their era.
fn era_confusions(d: NaiveDate) -> Vec<NaiveDate> {
    let Some(era) = Era::of(d) else {
        return Vec::new();
    };
    let n = d.year() - era.start().year();
    [Era::Taisho, Era::Showa, Era::Heisei, Era::Reiwa]
        .into_iter()
        .filter(|e| *e != era)
        .filter_map(|e| {
            let x = NaiveDate::from_ymd_opt(e.start().year() + n, d.month(), d.day())?;
            (x >= e.start() && e.end_exclusive().is_none_or(|end| x < end)).then_some(x)
        })
        .collect()
}

/// The dates a search considers for a query's birth date besides the date itself, with how each
/// differs from it, most likely first: day and month swapped ([`BirthMatch::Swapped`]); the year
/// off by one ([`BirthMatch::YearOff`]); the same era year in another era, 大正/昭和/平成/令和
/// ([`BirthMatch::Era`]); one digit of `YYYYMMDD` changed or two neighbouring digits swapped
/// ([`BirthMatch::Typo`]). Only real dates; never `d` itself; each date once.
pub fn birth_candidates(d: NaiveDate) -> Vec<(NaiveDate, BirthMatch)> {
    let (y, m, dd) = (d.year(), d.month(), d.day());
    if !(1000..=9999).contains(&y) {
        return Vec::new();
    }
    let mut out: Vec<(NaiveDate, BirthMatch)> = Vec::with_capacity(96);
    out.extend(NaiveDate::from_ymd_opt(y, dd, m).map(|x| (x, BirthMatch::Swapped)));
    for dy in [-1, 1] {
        out.extend(NaiveDate::from_ymd_opt(y + dy, m, dd).map(|x| (x, BirthMatch::YearOff)));
    }
    out.extend(era_confusions(d).into_iter().map(|x| (x, BirthMatch::Era)));
    let digits: Vec<u8> = format!("{y:04}{m:02}{dd:02}")
        .bytes()
        .map(|b| b - b'0')
        .collect();
    let to_date = |g: &[u8]| {
        let n = |r: std::ops::Range<usize>| g[r].iter().fold(0u32, |a, &x| a * 10 + u32::from(x));
        NaiveDate::from_ymd_opt(n(0..4) as i32, n(4..6), n(6..8))
    };
    let mut g = digits.clone();
    for p in 0..8 {
        for v in 0..10u8 {
            if v != digits[p] {
                g[p] = v;
                out.extend(to_date(&g).map(|x| (x, BirthMatch::Typo)));
            }
        }
        g[p] = digits[p];
    }
    for p in 0..7 {
        g.swap(p, p + 1);
        out.extend(to_date(&g).map(|x| (x, BirthMatch::Typo)));
        g.swap(p, p + 1);
    }
    // The first (most likely) reading of each date wins.
    let mut seen = std::collections::HashSet::with_capacity(out.len());
    out.retain(|(x, _)| *x != d && seen.insert(*x));
    out
}

/// The dates a search considers for a query's birth date (besides the date itself): day↔month
/// swapped, ±1 year, the same era year in another era (大正/昭和/平成/令和), one digit slipped or
/// two neighbouring digits swapped. Sorted; only real dates; never `d` itself. A central search
/// that blocks candidates by birth date must block by exactly these (and `d`).
pub fn birth_slips(d: NaiveDate) -> Vec<NaiveDate> {
    let mut v: Vec<NaiveDate> = birth_candidates(d).into_iter().map(|(x, _)| x).collect();
    v.sort_unstable();
    v
}

/// How a candidate's birth date differs from the query's (see [`birth_candidates`]).
pub fn birth_match(query: NaiveDate, candidate: NaiveDate) -> BirthMatch {
    if query == candidate {
        return BirthMatch::Exact;
    }
    birth_candidates(query)
        .into_iter()
        .find(|(x, _)| *x == candidate)
        .map_or(BirthMatch::Differs, |(_, m)| m)
}

/// The prefecture name for a JIS code (1..=47), for callers that show an [`AddressKey`].
pub fn prefecture_name(code: u8) -> Option<&'static str> {
    PREFECTURES.get(usize::from(code).checked_sub(1)?).copied()
}
