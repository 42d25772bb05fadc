//! Settlement: the reconciler's verdict on one provisional patient-share record, a pure function of
//! the record and the registry (no IO of its own, no clock: `settled_at` is passed in). It finds the
//! qualification valid **on the service date** (never "today") and says what reception must do:
//! nothing (`confirmed`), give money back (`refund`), collect more (`charge`), re-route the claim
//! (`insurer_changed`, 振替), file it as insurer unknown (`insurer_unknown`, 不詳請求), or choose
//! among people (`ambiguous`).
//!
//! The rules, in order:
//! 1. **Who.** The record's `person_id` when it has one; else the outage search
//!    ([`onshi_fallback::SearchIndex`]) on the declared name, reading, birth date, sex, insurer name and
//!    address. One clear best candidate ([`MIN_IDENTIFY_SCORE`] and [`MIN_MARGIN`] over the second,
//!    born on the declared date exactly) identifies the person; several close ones (namesakes born the same day, nothing deciding), or
//!    only weak ones above [`MIN_CANDIDATE_SCORE`] (a near name, a birth date a slip away), give
//!    `ambiguous`; nobody gives `insurer_unknown`.
//! 2. **Which qualification.** The person's period valid on the service date. A record on the 10th
//!    settles against the old insurer when the job changed on the 15th, against the new one when it
//!    was done on the 20th: a claim that spans a mid-month change is split (分割) by service date for
//!    free. No period that day (the gap of a job change, or the new insurer has not registered the
//!    person yet) gives `insurer_unknown`, with the payer by the declared insurance type.
//! 3. **Which insurer.** A declared insurer name that does not match the qualification's insurer, or
//!    (without a name) a declared insurance type of another kind (e.g. 国保 on the 75th birthday,
//!    when 後期高齢者医療 takes over), gives `insurer_changed` with the right numbers.
//! 4. **How much.** The qualification's share is authoritative; what was due is
//!    [`collected_yen`] of the total fee at that share (rounded to 10 yen as the co-payment is); due
//!    equal to what was collected gives `confirmed`, less gives `refund`, more gives `charge`.
//!    Under `insurer_changed` the difference travels in the same fields and the explanation says
//!    which way it goes.
//!
//! It must never read the clock, a file or the network itself: the [`RegistryView`] is the only
//! window on the registry, so tests settle against a few crafted lines in memory.

use std::cmp::Ordering;

use chrono::{DateTime, NaiveDate, Utc};
use onshi_fallback::index::BirthMatch;
use onshi_fallback::normalize::{insurer_key, insurer_score};
use onshi_fallback::share::collected_yen;
use onshi_fallback::{Candidate, Reason, SearchIndex, SearchQuery};
use onshi_model::record::{ProvisionalRecord, Settlement, SettlementCandidate, SettlementKind};
use onshi_model::{InsurerNumber, PersonId, Qualification};

use onshi_sync::registry::Registry;

use crate::store::{CentralError, CentralStore};

/// Least search score that identifies a person (exact name, birth date and sex score 1.0; an exact
/// name and birth date with a new address and an unregistered new insurer ≈0.90).
pub const MIN_IDENTIFY_SCORE: f32 = 0.85;

/// Least lead of the best candidate over the second. Namesakes born the same day differ only by the
/// address and insurer parts (weight 0.05 each, so ≈0.05 when one of them decides); less than this
/// and staff choose.
pub const MIN_MARGIN: f32 = 0.03;

/// Least score for a candidate shown to staff. An exact name a birth-date slip away (≈0.86) is
/// shown; an exact name with a wholly different birth date (≤0.80) is someone else.
pub const MIN_CANDIDATE_SCORE: f32 = 0.82;

/// Candidates shown under `ambiguous`: those within this of the best.
pub const AMBIGUOUS_BAND: f32 = 0.10;

/// How many candidates the search returns.
pub const SEARCH_LIMIT: usize = 10;

/// Least [`insurer_score`] for a declared insurer name to count as the qualification's insurer
/// (`協会けんぽ` in `全国健康保険協会東京支部` scores 0.9, `府中市` in `府中市国保` 0.8).
pub const MIN_INSURER_MATCH: f32 = 0.8;

/// The examination-and-payment body for employees' insurance (社保).
pub const PAYER_SHAHO: &str = "社会保険診療報酬支払基金";
/// The examination-and-payment body for national health insurance and 後期高齢者医療.
pub const PAYER_KOKUHO: &str = "国民健康保険団体連合会";

/// What settlement reads of the registry: a person's periods, and the outage search.
pub trait RegistryView {
    /// Every qualification period of `person` (any order; empty for an unknown person).
    fn periods_of(&self, person: &PersonId) -> Result<Vec<Qualification>, CentralError>;
    /// The best `limit` candidates for `query`, best first.
    fn search(&self, query: &SearchQuery, limit: usize) -> Result<Vec<Candidate>, CentralError>;
}

/// The reconciler's registry with its search index.
#[derive(Debug, Clone, Copy)]
pub struct IndexedRegistry<'a> {
    pub registry: &'a Registry,
    pub index: &'a SearchIndex,
}

impl RegistryView for IndexedRegistry<'_> {
    fn periods_of(&self, person: &PersonId) -> Result<Vec<Qualification>, CentralError> {
        Ok(self.registry.periods_of_person(person)?)
    }

    fn search(&self, query: &SearchQuery, limit: usize) -> Result<Vec<Candidate>, CentralError> {
        Ok(self.index.search(query, limit))
    }
}

/// The centre's store: central search from its own index ([`crate::search`]).
#[derive(Debug, Clone, Copy)]
pub struct StoreView<'a> {
    pub store: &'a dyn CentralStore,
}

impl RegistryView for StoreView<'_> {
    fn periods_of(&self, person: &PersonId) -> Result<Vec<Qualification>, CentralError> {
        self.store.periods_of_person(person)
    }

    fn search(&self, query: &SearchQuery, limit: usize) -> Result<Vec<Candidate>, CentralError> {
        Ok(crate::search::search(self.store, query, limit)?
            .into_iter()
            .map(|f| f.candidate)
            .collect())
    }
}

/// A registry held in memory (tests, small tools).
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    periods: Vec<Qualification>,
    index: SearchIndex,
}

impl MemoryRegistry {
    pub fn new(periods: Vec<Qualification>) -> Self {
        let index = SearchIndex::build(&periods);
        MemoryRegistry { periods, index }
    }
}

impl RegistryView for MemoryRegistry {
    fn periods_of(&self, person: &PersonId) -> Result<Vec<Qualification>, CentralError> {
        Ok(self
            .periods
            .iter()
            .filter(|q| &q.person_id == person)
            .cloned()
            .collect())
    }

    fn search(&self, query: &SearchQuery, limit: usize) -> Result<Vec<Candidate>, CentralError> {
        Ok(self.index.search(query, limit))
    }
}

/// The kind of insurance, as far as it decides the payer and tells a declared type apart from the
/// registry's. Several kinds share a payer; a change of kind is a change of insurer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsuranceKind {
    /// 協会けんぽ (法別 01).
    Kyokai,
    /// 船員保険 (02).
    Seamen,
    /// 組合管掌健康保険, 健保組合 (06).
    Kumiai,
    /// 共済組合 (31–34).
    Kyosai,
    /// 国民健康保険: municipal (6-digit numbers), 国保組合, 退職者医療 (67).
    Kokuho,
    /// 後期高齢者医療 (39), from the 75th birthday.
    LateElderly,
}

impl InsuranceKind {
    /// The kind of a declared insurance type or insurer name (協会けんぽ, 健保組合, 国保, 後期高齢者…),
    /// matched on the insurer key so that width, kana and spacing do not matter. `None` when the text
    /// names no kind (a bare insurer name, 社保).
    pub fn of_declared(text: &str) -> Option<Self> {
        let k = insurer_key(text);
        // Order matters: 国保組合 before 組合, 協会健保 before 健保.
        let kind = if k.contains("後期高齢") {
            InsuranceKind::LateElderly
        } else if k.contains("船員") {
            InsuranceKind::Seamen
        } else if k.contains("共済") {
            InsuranceKind::Kyosai
        } else if k.contains("国保") {
            InsuranceKind::Kokuho
        } else if k.contains("協会健保") {
            InsuranceKind::Kyokai
        } else if k.contains("健保") || k.contains("組合") {
            InsuranceKind::Kumiai
        } else {
            return None;
        };
        Some(kind)
    }

    /// The kind of a registry insurer number, by 法別 (DOMAIN.md). 特例退職 (63, 72–75), 自衛官等 (07)
    /// and codes the table does not know give `None`: never compared, so never a false re-route.
    pub fn of_insurer(n: &InsurerNumber) -> Option<Self> {
        let Some(h) = n.houbetsu() else {
            return Some(InsuranceKind::Kokuho);
        };
        Some(match h {
            "01" => InsuranceKind::Kyokai,
            "02" => InsuranceKind::Seamen,
            "06" => InsuranceKind::Kumiai,
            "31" | "32" | "33" | "34" => InsuranceKind::Kyosai,
            "39" => InsuranceKind::LateElderly,
            "67" => InsuranceKind::Kokuho,
            _ => return None,
        })
    }

    /// Whom an insurer-unknown claim (不詳請求) of this kind goes to. (unconfirmed: the routing of
    /// 不詳請求 by insurance type is taken from DOMAIN.md's one sentence; change it here only.)
    pub fn payer(self) -> &'static str {
        match self {
            InsuranceKind::Kyokai
            | InsuranceKind::Seamen
            | InsuranceKind::Kumiai
            | InsuranceKind::Kyosai => PAYER_SHAHO,
            InsuranceKind::Kokuho | InsuranceKind::LateElderly => PAYER_KOKUHO,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InsuranceKind::Kyokai => "協会けんぽ",
            InsuranceKind::Seamen => "船員保険",
            InsuranceKind::Kumiai => "健保組合",
            InsuranceKind::Kyosai => "共済組合",
            InsuranceKind::Kokuho => "国民健康保険",
            InsuranceKind::LateElderly => "後期高齢者医療",
        }
    }
}

/// The payer of an insurer-unknown claim for this record, and why: by the declared insurance type,
/// else by what the declared insurer name says, else 支払基金 with a note to check.
/// (unconfirmed: as [`InsuranceKind::payer`]; 社保 / 社会保険 without a kind go to 支払基金.)
pub fn unknown_insurer_payer(record: &ProvisionalRecord) -> (&'static str, String) {
    let d = &record.declared;
    for (what, text) in [
        ("declared insurance type", &d.insurance_type),
        ("declared insurer name", &d.insurer_name),
    ] {
        let Some(text) = text.as_deref() else {
            continue;
        };
        if let Some(kind) = InsuranceKind::of_declared(text) {
            let payer = kind.payer();
            let named = if insurer_key(text) == insurer_key(kind.as_str()) {
                String::new()
            } else {
                format!(" ({})", kind.as_str())
            };
            return (payer, format!("{payer} by the {what} {text}{named}"));
        }
        if insurer_key(text).contains("社保") || text.contains("社会保険") {
            return (
                PAYER_SHAHO,
                format!("{PAYER_SHAHO} by the {what} {text} (employees' insurance)"),
            );
        }
    }
    (
        PAYER_SHAHO,
        format!(
            "{PAYER_SHAHO} by default: no insurance type the payer can be told from was declared; check with the patient before filing"
        ),
    )
}

/// Settles one provisional record against the registry as of its service date. Errors only when the
/// registry cannot be read (a store error is never turned into a verdict).
pub fn settle(
    record: &ProvisionalRecord,
    registry: &impl RegistryView,
    settled_at: DateTime<Utc>,
) -> Result<Settlement, CentralError> {
    settle_for(record, None, registry, settled_at)
}

/// Settles again, against the person staff chose among an `ambiguous` settlement's candidates:
/// rule 1 is replaced by the choice, rules 2–4 are the same (the chosen person's qualification
/// valid on the service date decides insurer and share). A chosen person without any period
/// (gone from the registry since) files as insurer unknown, never back to `ambiguous`.
pub fn settle_chosen(
    record: &ProvisionalRecord,
    chosen: &PersonId,
    registry: &impl RegistryView,
    settled_at: DateTime<Utc>,
) -> Result<Settlement, CentralError> {
    settle_for(record, Some(chosen), registry, settled_at)
}

fn settle_for(
    record: &ProvisionalRecord,
    chosen: Option<&PersonId>,
    registry: &impl RegistryView,
    settled_at: DateTime<Utc>,
) -> Result<Settlement, CentralError> {
    let base = Settlement {
        kind: SettlementKind::InsurerUnknown,
        settled_at,
        qualification: None,
        correct_share_percent: None,
        due_yen: None,
        yen: None,
        payer: None,
        candidates: Vec::new(),
        explanation: String::new(),
    };
    let service = record.service_date;
    let (person, periods, how) = match identify(record, chosen, registry)? {
        Identity::Person {
            person,
            periods,
            how,
        } => (person, periods, how),
        Identity::Ambiguous { candidates, why } => {
            return Ok(Settlement {
                kind: SettlementKind::Ambiguous,
                candidates,
                explanation: why,
                ..base
            });
        }
        Identity::Nobody { why } => {
            let (payer, payer_why) = unknown_insurer_payer(record);
            return Ok(Settlement {
                payer: Some(payer.to_string()),
                explanation: format!(
                    "File as insurer unknown (不詳請求): {why}. Payer: {payer_why}."
                ),
                ..base
            });
        }
    };
    let Some(q) = valid_on(&periods, service) else {
        let (payer, payer_why) = unknown_insurer_payer(record);
        return Ok(Settlement {
            payer: Some(payer.to_string()),
            explanation: format!(
                "File as insurer unknown (不詳請求), or settle again once the new insurer registers the person: {person} ({how}) has no qualification valid on {service}; {}. Payer: {payer_why}.",
                periods_around(&periods, service)
            ),
            ..base
        });
    };

    let correct = q.share_percent;
    let due = collected_yen(record.total_fee_yen, correct);
    let collected = record.collected_yen;
    let insurer = format!(
        "{} ({}{})",
        q.insurer_name,
        q.insurer_number,
        card_numbers(q)
    );
    let money = match due.cmp(&collected) {
        Ordering::Equal => format!("the {} collected is right", yen(collected)),
        Ordering::Less => format!(
            "refund {} ({} collected at {} %)",
            yen(collected - due),
            yen(collected),
            record.share_percent
        ),
        Ordering::Greater => format!(
            "collect {} more ({} collected at {} %)",
            yen(due - collected),
            yen(collected),
            record.share_percent
        ),
    };
    let found = format!("{insurer}, valid for {person} ({how}) on {service}");
    let share = format!(
        "{correct} % of {} = {} due",
        yen(record.total_fee_yen),
        yen(due)
    );
    let settled = Settlement {
        qualification: Some(q.clone()),
        correct_share_percent: Some(correct),
        due_yen: Some(due),
        yen: (due != collected).then(|| due.abs_diff(collected)),
        ..base
    };

    if let Some(declared) = insurer_mismatch(record, q) {
        return Ok(Settlement {
            kind: SettlementKind::InsurerChanged,
            explanation: format!(
                "Re-route the claim (振替) to {found}: {declared}. {share}; {money}."
            ),
            ..settled
        });
    }
    let (kind, lead) = match due.cmp(&collected) {
        Ordering::Equal => (SettlementKind::Confirmed, "Confirmed"),
        Ordering::Less => (SettlementKind::Refund, "Refund"),
        Ordering::Greater => (SettlementKind::Charge, "Charge"),
    };
    Ok(Settlement {
        kind,
        explanation: format!("{lead}: {found}: {share}; {money}."),
        ..settled
    })
}

/// `12,345 yen`.
fn yen(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + 8);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out.push_str(" yen");
    out
}

/// Who the record is about.
enum Identity {
    Person {
        person: PersonId,
        periods: Vec<Qualification>,
        how: String,
    },
    Ambiguous {
        candidates: Vec<SettlementCandidate>,
        why: String,
    },
    Nobody {
        why: String,
    },
}

fn identify(
    record: &ProvisionalRecord,
    chosen: Option<&PersonId>,
    registry: &impl RegistryView,
) -> Result<Identity, CentralError> {
    if let Some(person) = chosen {
        let periods = registry.periods_of(person)?;
        if periods.is_empty() {
            return Ok(Identity::Nobody {
                why: format!("the chosen person {person} has no period in the registry"),
            });
        }
        return Ok(Identity::Person {
            person: person.clone(),
            periods,
            how: "chosen by staff".into(),
        });
    }
    if let Some(person) = &record.person_id {
        let periods = registry.periods_of(person)?;
        if periods.is_empty() {
            return Ok(Identity::Nobody {
                why: format!("person id {person} has no period in the registry"),
            });
        }
        return Ok(Identity::Person {
            person: person.clone(),
            periods,
            how: "by person id".into(),
        });
    }
    let d = &record.declared;
    let query = SearchQuery {
        name: Some(d.name.clone()),
        name_kana: d.name_kana.clone(),
        birth_date: d.birth_date,
        sex: d.sex,
        insurer_name: d.insurer_name.clone(),
        address: d.address.clone(),
        service_date: None,
    };
    // A candidate whose periods are gone (an index older than the registry) is nobody.
    let mut found: Vec<(Candidate, Vec<Qualification>)> = Vec::new();
    for c in registry.search(&query, SEARCH_LIMIT)? {
        if c.score < MIN_CANDIDATE_SCORE {
            continue;
        }
        let periods = registry.periods_of(&c.person_id)?;
        if !periods.is_empty() {
            found.push((c, periods));
        }
    }
    found.sort_by(|a, b| {
        b.0.score
            .total_cmp(&a.0.score)
            .then_with(|| a.0.person_id.cmp(&b.0.person_id))
    });
    let who = format!("{} born {}", d.name, d.birth_date);
    let Some(best) = found.first().map(|(c, _)| c.score) else {
        return Ok(Identity::Nobody {
            why: format!("nobody in the registry matches {who}"),
        });
    };
    let second = found.get(1).map_or(0.0, |(c, _)| c.score);
    // A birth date a typing slip away is shown to staff, never taken on its own: it decides money.
    let exact_birth = found
        .first()
        .is_some_and(|(c, _)| c.reasons.contains(&Reason::BirthDate(BirthMatch::Exact)));
    if best >= MIN_IDENTIFY_SCORE && best - second >= MIN_MARGIN && exact_birth {
        let (c, periods) = found.swap_remove(0);
        let how = format!("found by the declaration, score {:.2}", c.score);
        return Ok(Identity::Person {
            person: c.person_id,
            periods,
            how,
        });
    }
    let service = record.service_date;
    let candidates: Vec<SettlementCandidate> = found
        .into_iter()
        .filter(|(c, _)| best - c.score <= AMBIGUOUS_BAND)
        .filter_map(|(c, periods)| {
            let q = valid_on(&periods, service)
                .or_else(|| newest(&periods))?
                .clone();
            Some(SettlementCandidate {
                person_id: c.person_id,
                score: c.score,
                qualification: q,
            })
        })
        .collect();
    let list = candidates
        .iter()
        .map(|c| format!("{} ({:.2})", c.person_id, c.score))
        .collect::<Vec<_>>()
        .join(", ");
    let why = if best >= MIN_IDENTIFY_SCORE && best - second < MIN_MARGIN {
        format!(
            "Choose the patient, then settle again: {} people match {who} about equally well ({list}); the address or insurer name would tell them apart",
            candidates.len()
        )
    } else {
        format!(
            "Confirm the patient, then settle again: nobody matches {who} closely enough (name and exact birth date) to be identified; nearest {list}"
        )
    };
    Ok(Identity::Ambiguous { candidates, why })
}

/// The period valid on `date`; of several (overlapping imports), the latest acquired.
fn valid_on(periods: &[Qualification], date: NaiveDate) -> Option<&Qualification> {
    periods
        .iter()
        .filter(|q| q.is_valid_on(date))
        .max_by(|a, b| {
            a.acquired_on
                .cmp(&b.acquired_on)
                .then_with(|| b.insurer_number.cmp(&a.insurer_number))
        })
}

fn newest(periods: &[Qualification]) -> Option<&Qualification> {
    periods.iter().max_by(|a, b| {
        a.acquired_on
            .cmp(&b.acquired_on)
            .then_with(|| b.insurer_number.cmp(&a.insurer_number))
    })
}

/// `, 記号 123 番号 4567 枝番 01` as far as the card has them.
fn card_numbers(q: &Qualification) -> String {
    let mut s = String::new();
    if let Some(sym) = &q.symbol {
        s.push_str(&format!(", 記号 {sym}"));
    }
    s.push_str(&format!(", 番号 {}", q.number));
    if let Some(b) = &q.branch {
        s.push_str(&format!(", 枝番 {b}"));
    }
    s
}

/// Why the declared insurer is not the qualification's, or `None` when it is (or nothing was
/// declared to compare). The name decides when given; else the kind of the declared type.
fn insurer_mismatch(record: &ProvisionalRecord, q: &Qualification) -> Option<String> {
    let d = &record.declared;
    if let Some(name) = d.insurer_name.as_deref().filter(|n| !n.trim().is_empty()) {
        let score = insurer_score(&insurer_key(name), &insurer_key(&q.insurer_name));
        return (score < MIN_INSURER_MATCH)
            .then(|| format!("the patient declared {name}, another insurer"));
    }
    let declared = d.insurance_type.as_deref()?;
    let (want, have) = (
        InsuranceKind::of_declared(declared)?,
        InsuranceKind::of_insurer(&q.insurer_number)?,
    );
    let which = if insurer_key(declared) == insurer_key(want.as_str()) {
        String::new()
    } else {
        format!(", which is {}", want.as_str())
    };
    (want != have).then(|| {
        format!(
            "the patient declared {declared}{which}, not {}",
            have.as_str()
        )
    })
}

/// The person's periods nearest to `date`: the last that ended before it and the first that
/// starts after it (a job-change gap shows both).
fn periods_around(periods: &[Qualification], date: NaiveDate) -> String {
    let before = periods
        .iter()
        .filter(|q| q.lost_on.is_some_and(|l| l <= date))
        .max_by_key(|q| q.lost_on);
    let after = periods
        .iter()
        .filter(|q| q.acquired_on > date)
        .min_by_key(|q| q.acquired_on);
    let mut parts = Vec::new();
    if let Some(q) = before {
        let lost = q.lost_on.unwrap_or(date);
        let last = lost.pred_opt().unwrap_or(lost);
        let reason = q
            .loss_reason
            .map(|r| format!(", reason {}", r.code()))
            .unwrap_or_default();
        parts.push(format!(
            "{} ({}) ended {last} (lost {lost}{reason})",
            q.insurer_name, q.insurer_number
        ));
    }
    if let Some(q) = after {
        parts.push(format!(
            "{} ({}) starts {}",
            q.insurer_name, q.insurer_number, q.acquired_on
        ));
    }
    if parts.is_empty() {
        "no period ends before or starts after it".into()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yen_amounts_are_grouped_by_thousands() {
        assert_eq!(yen(0), "0 yen");
        assert_eq!(yen(880), "880 yen");
        assert_eq!(yen(1_230), "1,230 yen");
        assert_eq!(yen(1_234_560), "1,234,560 yen");
    }

    #[test]
    fn declared_kinds_read_through_width_kana_and_spacing() {
        let kind = |s| InsuranceKind::of_declared(s);
        assert_eq!(kind("協会けんぽ"), Some(InsuranceKind::Kyokai));
        assert_eq!(kind("全国健康保険協会"), Some(InsuranceKind::Kyokai));
        assert_eq!(kind("協会 ｹﾝﾎﾟ"), Some(InsuranceKind::Kyokai));
        assert_eq!(kind("健保組合"), Some(InsuranceKind::Kumiai));
        assert_eq!(kind("○○健康保険組合"), Some(InsuranceKind::Kumiai));
        // 国民健康保険組合 contains 健康保険組合: still national health insurance.
        assert_eq!(
            kind("東京都医師国民健康保険組合"),
            Some(InsuranceKind::Kokuho)
        );
        assert_eq!(kind("国保"), Some(InsuranceKind::Kokuho));
        assert_eq!(kind("後期高齢者医療"), Some(InsuranceKind::LateElderly));
        assert_eq!(kind("地方職員共済組合"), Some(InsuranceKind::Kyosai));
        assert_eq!(kind("船員保険"), Some(InsuranceKind::Seamen));
        assert_eq!(kind("千代田区"), None);
    }

    #[test]
    fn registry_kinds_follow_the_houbetsu_table() {
        let kind = |s: &str| {
            InsuranceKind::of_insurer(
                &InsurerNumber::parse(s).unwrap_or_else(|e| panic!("{s}: {e}")),
            )
        };
        assert_eq!(kind("06130017"), Some(InsuranceKind::Kumiai));
        assert_eq!(kind("01130012"), Some(InsuranceKind::Kyokai));
        assert_eq!(kind("39130018"), Some(InsuranceKind::LateElderly));
        assert_eq!(kind("138057"), Some(InsuranceKind::Kokuho));
        assert_eq!(kind("33120015"), Some(InsuranceKind::Kyosai));
        assert_eq!(InsuranceKind::LateElderly.payer(), PAYER_KOKUHO);
        assert_eq!(InsuranceKind::Kyosai.payer(), PAYER_SHAHO);
    }
}
