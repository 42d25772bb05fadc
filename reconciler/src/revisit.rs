//! Settlements that catch up with the registry (issue 16): one follower task per reconciler
//! instance reads the registry's change feed ([`CentralStore::registry_changes`]) about every
//! second, from the feed's position when it started, and revisits the settlements a change could
//! concern: every `insurer_unknown` or `ambiguous` settlement ([`crate::store::revisit_key`])
//! declared born on a changed period's birth date, with a service date within the horizon
//! (`--revisit-days`, default 90), is settled again against the registry (central search reads
//! the store's own index, which the import wrote with the periods: nothing to feed here) under
//! the store's lock ([`CentralStore::update`]); a verdict that differs in substance
//! ([`same_substance`]) is written as the next revision
//! ([`onshi_sync::crdt::JournalRecord::revise`]) and announced on the facility's revision feed,
//! so a live sync session (of any instance) sends it to the edge.
//!
//! At start the follower sweeps every revisitable record once (any birth date): an import made
//! while no instance was following (the embedded store's `import` needs `serve` stopped) is
//! revisited too. Several instances revisiting the same record write one revision: the second
//! finds the verdict already there (same substance) and writes nothing.
//!
//! Must never: write a revision whose verdict says the same thing (each revision is news at the
//! counter), touch a record past the horizon, a record set aside, or one whose staff choice is
//! still to be settled (the sync session does that); log anything about a person (ids and kinds
//! only); run a store call on an async worker.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use onshi_model::FacilityCode;
use onshi_model::record::{Settlement, SettlementKind};
use onshi_sync::crdt::{Actor, JournalRecord, RecordId};
use tokio::task::JoinHandle;

use crate::metrics::ReconcilerMetrics;
use crate::settlement::{RegistryView, StoreView, settle, settle_chosen};
use crate::store::{CentralError, CentralStore, revisit_key};

/// How long after its service date a settlement is still revisited, unless configured.
pub const DEFAULT_REVISIT_DAYS: u32 = 90;

/// The longest horizon accepted (ten years): more is a typo.
pub const MAX_REVISIT_DAYS: u32 = 3650;

/// Changes read from the feed per store call.
const FEED_BATCH: usize = 10_000;

/// Changes read from the feed per pass before revisiting (a 10M-line import is followed in
/// passes of this size, each revisiting what it read).
const MAX_CHANGES_PER_PASS: usize = 500_000;

/// Records settled again per store transaction (one facility's lock held per chunk).
const UPDATE_CHUNK: usize = 100;

/// How the follower runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevisitSettings {
    /// Records whose service date is more than this many days before today are left alone.
    pub horizon_days: u32,
    /// How often the change feed is read.
    pub poll: Duration,
}

impl Default for RevisitSettings {
    fn default() -> Self {
        RevisitSettings {
            horizon_days: DEFAULT_REVISIT_DAYS,
            poll: Duration::from_secs(1),
        }
    }
}

impl RevisitSettings {
    /// Checks the horizon; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.horizon_days > MAX_REVISIT_DAYS {
            return Err(format!(
                "revisit_days: {} days; at most {MAX_REVISIT_DAYS} (ten years)",
                self.horizon_days
            ));
        }
        Ok(())
    }
}

/// The earliest service date still revisited on `today`.
pub fn horizon_start(today: NaiveDate, horizon_days: u32) -> NaiveDate {
    today
        .checked_sub_days(chrono::Days::new(u64::from(horizon_days)))
        .unwrap_or(NaiveDate::MIN)
}

/// Whether two verdicts say the same thing at the counter and on the claim: the kind, the person
/// and the qualification's claim numbers (insurer, symbol, number, branch, period start, share),
/// the payer, the amounts, and (under `ambiguous`) the candidates' person ids. The explanation
/// and the time of settling are not substance: a registry change that only rewords the
/// explanation (a new period after the service date) revises nothing.
pub fn same_substance(a: &Settlement, b: &Settlement) -> bool {
    let claim = |s: &Settlement| {
        s.qualification.as_ref().map(|q| {
            (
                q.person_id.clone(),
                q.insurer_number.clone(),
                q.symbol.clone(),
                q.number.clone(),
                q.branch.clone(),
                q.acquired_on,
                q.share_percent,
            )
        })
    };
    let candidates = |s: &Settlement| {
        s.candidates
            .iter()
            .map(|c| c.person_id.clone())
            .collect::<BTreeSet<_>>()
    };
    a.kind == b.kind
        && claim(a) == claim(b)
        && a.payer == b.payer
        && (a.correct_share_percent, a.due_yen, a.yen)
            == (b.correct_share_percent, b.due_yen, b.yen)
        && candidates(a) == candidates(b)
}

/// The decision for one record under the store's lock: the record revised (the next revision,
/// the new verdict) when the registry now says something different in substance, else `None`.
/// Left alone: a record no longer revisitable (settled otherwise since, set aside), one whose
/// service date is before `service_from`, one whose staff choice is still to be settled (the
/// sync session settles it against the choice). A settlement made against staff's choice is
/// settled again against that person. Errors only when the registry cannot be read.
pub fn revisit(
    current: &JournalRecord,
    registry: &impl RegistryView,
    service_from: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Option<JournalRecord>, CentralError> {
    let Some(key) = revisit_key(current) else {
        return Ok(None);
    };
    if key.service_date < service_from || current.needs_resettlement() {
        return Ok(None);
    }
    let (Some(p), Some(old)) = (current.provisional(), current.settlement()) else {
        return Ok(None);
    };
    let verdict = match current.settled_choice() {
        Some(c) => settle_chosen(&p, &c.person_id, registry, now)?,
        None => settle(&p, registry, now)?,
    };
    if same_substance(old, &verdict) {
        return Ok(None);
    }
    let mut rec = current.clone();
    Ok(rec.revise(Actor::Reconciler, verdict).ok().map(|()| rec))
}

/// Every birth date a declaration can carry (the start-up sweep asks for all of them).
fn every_birth_date(today: NaiveDate) -> Vec<NaiveDate> {
    let first = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or(NaiveDate::MIN);
    first.iter_days().take_while(|d| *d <= today).collect()
}

/// What one pass did (for tests and the debug log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Changes read from the feed.
    pub changes: usize,
    /// Records settled again (whether or not the verdict changed).
    pub revisited: usize,
    /// Revisions written.
    pub revised: usize,
}

/// The follower's state between passes.
#[derive(Debug)]
pub struct Follower {
    store: Arc<dyn CentralStore>,
    metrics: Arc<ReconcilerMetrics>,
    settings: RevisitSettings,
    /// The change feed's position the revisits have caught up with.
    cursor: u64,
    /// Whether the start-up sweep is done.
    swept: bool,
    stop: Arc<AtomicBool>,
}

impl Follower {
    /// Follows the feed after `cursor` (what came before is covered by the start-up sweep).
    pub fn new(
        store: Arc<dyn CentralStore>,
        metrics: Arc<ReconcilerMetrics>,
        cursor: u64,
        settings: RevisitSettings,
    ) -> Self {
        Follower {
            store,
            metrics,
            settings,
            cursor,
            swept: false,
            stop: Arc::default(),
        }
    }

    /// One pass (blocking: store calls): the feed's changes, then the revisits. The cursor
    /// moves only once the revisits are durable, so a failed pass is done again.
    pub fn pass(
        &mut self,
        today: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<PassReport, CentralError> {
        let mut report = PassReport::default();
        let mut dates = BTreeSet::new();
        let mut cursor = self.cursor;
        loop {
            let changes = self.store.registry_changes(cursor, FEED_BATCH)?;
            if changes.is_empty() {
                break;
            }
            for c in &changes {
                dates.insert(c.qualification.birth_date);
                cursor = cursor.max(c.seq);
            }
            report.changes += changes.len();
            if changes.len() < FEED_BATCH || report.changes >= MAX_CHANGES_PER_PASS {
                break;
            }
        }
        let service_from = horizon_start(today, self.settings.horizon_days);
        let dates: Vec<NaiveDate> = if self.swept {
            dates.into_iter().collect()
        } else {
            every_birth_date(today)
        };
        if !dates.is_empty() {
            let candidates = self.store.revisit_candidates(&dates, service_from)?;
            let mut by_facility: BTreeMap<FacilityCode, Vec<RecordId>> = BTreeMap::new();
            for c in candidates {
                by_facility.entry(c.facility).or_default().push(c.record);
            }
            for (facility, ids) in by_facility {
                for chunk in ids.chunks(UPDATE_CHUNK) {
                    if self.stop.load(Ordering::Relaxed) {
                        return Ok(report);
                    }
                    let (revisited, revised) =
                        self.revisit_chunk(&facility, chunk, service_from, now)?;
                    report.revisited += revisited;
                    report.revised += revised;
                }
            }
        }
        self.cursor = cursor;
        self.swept = true;
        self.metrics
            .registry_followed
            .store(cursor, Ordering::SeqCst);
        if report != PassReport::default() {
            tracing::debug!(
                changes = report.changes,
                revisited = report.revisited,
                revised = report.revised,
                cursor,
                "registry change feed followed"
            );
        }
        Ok(report)
    }

    /// Settles `ids` of one facility again under the store's lock; writes and announces the
    /// revisions. Returns (settled again, revised).
    fn revisit_chunk(
        &self,
        facility: &FacilityCode,
        ids: &[RecordId],
        service_from: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<(usize, usize), CentralError> {
        let view = StoreView {
            store: self.store.as_ref(),
        };
        let mut revisited = 0;
        let mut before: BTreeMap<RecordId, SettlementKind> = BTreeMap::new();
        let mut decide = |current: &JournalRecord| -> Option<JournalRecord> {
            match revisit(current, &view, service_from, now) {
                Ok(next) => {
                    if revisit_key(current).is_some() {
                        revisited += 1;
                    }
                    if let (Some(_), Some(s)) = (&next, current.settlement()) {
                        before.insert(current.id().clone(), s.kind);
                    }
                    next
                }
                Err(e) => {
                    tracing::error!(record = %current.id(), error = %e, "revisit failed (registry unavailable); tried again with the next change");
                    None
                }
            }
        };
        let written = self.store.update(facility, ids, true, &mut decide)?;
        self.metrics
            .revisits
            .fetch_add(revisited as u64, Ordering::Relaxed);
        // Logged once durable: ids and kinds only.
        for rec in &written {
            let to = rec.settlement().map(|s| s.kind);
            if let Some(k) = to {
                self.metrics.revisions.inc(&[k.as_str()]);
            }
            tracing::info!(
                %facility,
                record = %rec.id(),
                from = before.get(rec.id()).map(|k| k.as_str()),
                to = to.map(|k| k.as_str()),
                revision = rec.settlement_revision(),
                "settlement revised after a registry change"
            );
        }
        Ok((revisited, written.len()))
    }
}

/// Runs `follower` every `poll` on the blocking pool until `shutdown`. A failed pass is logged
/// and done again at the next tick.
pub fn spawn(
    follower: Follower,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    let stop = follower.stop.clone();
    let poll = follower.settings.poll;
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut follower = Some(follower);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {}
            }
            let Some(mut f) = follower.take() else { break };
            let mut pass = tokio::task::spawn_blocking(move || {
                let today = chrono::Local::now().date_naive();
                let r = f.pass(today, Utc::now());
                (f, r)
            });
            let done = tokio::select! {
                _ = &mut shutdown => {
                    // The pass ends at its next chunk; what it wrote is durable.
                    stop.store(true, Ordering::Relaxed);
                    let _ = (&mut pass).await;
                    break;
                }
                done = &mut pass => done,
            };
            match done {
                Ok((f, result)) => {
                    follower = Some(f);
                    match result {
                        Ok(_) if failing => {
                            failing = false;
                            tracing::info!("registry change feed followed again");
                        }
                        Ok(_) => {}
                        Err(e) if !failing => {
                            failing = true;
                            tracing::error!(error = %e, "registry change feed cannot be followed; central search and revisits wait (tried every second, logged once)");
                        }
                        Err(_) => {}
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "the registry follower stopped");
                    break;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use onshi_model::record::{
        Basis, Declaration, ProvisionalRecord, RecordState, SettlementCandidate,
    };
    use onshi_model::{Qualification, Sex};
    use onshi_sync::crdt::{Choice, RecordFacts};
    use serde_json::json;

    use crate::settlement::MemoryRegistry;

    fn d(s: &str) -> NaiveDate {
        onshi_model::parse_date(s).unwrap()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 9, 0, 0).unwrap()
    }

    /// 山田 太郎's period; `over` replaces fields.
    fn period(over: serde_json::Value) -> Qualification {
        let mut v = json!({"person_id":"P0000001","card_id":null,"insurer_number":"06130017","insurer_name":"霞が関健康保険組合",
            "card_class":"01","symbol":"123","number":"4567","branch":"01","relationship":"insured",
            "name":"山田　太郎","name_kana":"ヤマダ　タロウ","sex":"male","birth_date":"1980-04-01",
            "address":"東京都千代田区霞が関1-2-2","postal_code":"100-8916",
            "acquired_on":"2020-04-01","lost_on":null,"loss_reason":null,"share_percent":30});
        for (k, val) in over.as_object().unwrap() {
            v[k] = val.clone();
        }
        Qualification::from_registry_value(&v).unwrap()
    }

    /// The old period, lost on 2026-05-01 (the job change).
    fn old() -> Qualification {
        period(json!({"lost_on":"2026-05-01","loss_reason":"03"}))
    }

    /// The new insurer's period from 2026-05-10 (協会けんぽ, check digit worked out: 01130012).
    fn new() -> Qualification {
        period(
            json!({"insurer_number":"01130012","insurer_name":"全国健康保険協会東京支部",
            "symbol":"55","number":"901","branch":"00","acquired_on":"2026-05-10"}),
        )
    }

    const ID: &str = "1311234567-0000000e-0000000001";

    fn record(service: &str) -> JournalRecord {
        let id = RecordId::parse(ID).unwrap();
        let p = ProvisionalRecord {
            record_id: ID.into(),
            created_at: now(),
            declared: Declaration {
                name: "山田　太郎".into(),
                name_kana: Some("ヤマダ　タロウ".into()),
                birth_date: d("1980-04-01"),
                sex: Sex::Male,
                address: None,
                insurer_name: Some("霞が関健康保険組合".into()),
                insurance_type: None,
                employer: None,
                contact: None,
                share_percent: Some(30),
            },
            person_id: None,
            service_date: d(service),
            total_fee_yen: 10_000,
            share_percent: 30,
            collected_yen: 3_000,
            basis: Basis::Declared,
            rule: None,
            explanation: String::new(),
            state: RecordState::Recorded,
        };
        JournalRecord::new(id, RecordFacts::Provisional(p)).unwrap()
    }

    /// The record settled against `registry` as the sync session would.
    fn settled(service: &str, registry: &MemoryRegistry) -> JournalRecord {
        let mut r = record(service);
        let s = settle(&r.provisional().unwrap(), registry, now()).unwrap();
        r.settle(Actor::Reconciler, s).unwrap();
        r
    }

    #[test]
    fn the_new_insurers_period_revises_insurer_unknown_to_insurer_changed_once() {
        let before = MemoryRegistry::new(vec![old()]);
        let r = settled("2026-05-20", &before);
        assert_eq!(r.settlement().unwrap().kind, SettlementKind::InsurerUnknown);
        // Nothing new in the registry: nothing to write.
        assert_eq!(revisit(&r, &before, d("2026-03-01"), now()).unwrap(), None);

        let after = MemoryRegistry::new(vec![old(), new()]);
        let revised = revisit(&r, &after, d("2026-03-01"), now())
            .unwrap()
            .expect("a revision");
        let s = revised.settlement().unwrap();
        assert_eq!(s.kind, SettlementKind::InsurerChanged, "{}", s.explanation);
        assert_eq!(
            s.qualification.as_ref().unwrap().insurer_number.as_str(),
            "01130012"
        );
        assert_eq!(revised.settlement_revision(), 1);
        assert_eq!(revised.state(), RecordState::Settled);
        // A second instance (or pass) finds it settled otherwise now: nothing more.
        assert_eq!(
            revisit(&revised, &after, d("2026-03-01"), now()).unwrap(),
            None
        );
    }

    #[test]
    fn a_closed_record_is_revised_and_stays_closed() {
        let before = MemoryRegistry::new(vec![old()]);
        let mut r = settled("2026-05-20", &before);
        r.close(Actor::Edge).unwrap();
        let after = MemoryRegistry::new(vec![old(), new()]);
        let revised = revisit(&r, &after, d("2026-03-01"), now())
            .unwrap()
            .expect("a revision");
        assert_eq!(revised.state(), RecordState::Closed);
        assert_eq!(revised.settlement_revision(), 1);
    }

    #[test]
    fn a_change_that_only_rewords_the_explanation_revises_nothing() {
        // Service on 2026-05-05: in the gap, before the new period starts. The new line changes
        // the explanation (it now names the period starting on the 10th), not the verdict.
        let before = MemoryRegistry::new(vec![old()]);
        let r = settled("2026-05-05", &before);
        let after = MemoryRegistry::new(vec![old(), new()]);
        let again = settle(&r.provisional().unwrap(), &after, now()).unwrap();
        assert_ne!(again.explanation, r.settlement().unwrap().explanation);
        assert!(same_substance(r.settlement().unwrap(), &again));
        assert_eq!(revisit(&r, &after, d("2026-03-01"), now()).unwrap(), None);
    }

    #[test]
    fn past_the_horizon_set_aside_or_already_decided_is_left_alone() {
        let before = MemoryRegistry::new(vec![old()]);
        let after = MemoryRegistry::new(vec![old(), new()]);
        let r = settled("2026-05-20", &before);
        // The service date is before the horizon's start.
        assert_eq!(revisit(&r, &after, d("2026-05-21"), now()).unwrap(), None);
        assert_eq!(horizon_start(d("2026-08-18"), 90), d("2026-05-20"));
        assert!(
            revisit(&r, &after, horizon_start(d("2026-08-18"), 90), now())
                .unwrap()
                .is_some()
        );
        assert_eq!(
            revisit(&r, &after, horizon_start(d("2026-08-19"), 90), now()).unwrap(),
            None
        );
        // Set aside.
        let mut q = r.clone();
        q.quarantine_with(Actor::Edge, "staff set it aside")
            .unwrap();
        assert_eq!(revisit(&q, &after, d("2026-03-01"), now()).unwrap(), None);
        // Confirmed at first: not revisitable.
        let c = settled("2026-04-01", &before);
        assert_eq!(c.settlement().unwrap().kind, SettlementKind::Confirmed);
        assert_eq!(revisit(&c, &after, d("2026-03-01"), now()).unwrap(), None);
        // Not settled yet: the sync session settles it.
        assert_eq!(
            revisit(&record("2026-05-20"), &after, d("2026-03-01"), now()).unwrap(),
            None
        );
    }

    fn namesake(person: &str, insurer: &str, name: &str) -> Qualification {
        period(
            json!({"person_id":person,"insurer_number":insurer,"insurer_name":name,
            "number":"777","address":"大阪府大阪市北区1-1"}),
        )
    }

    #[test]
    fn an_ambiguous_settlement_is_revised_when_a_candidate_appears_and_a_choice_is_respected() {
        let two = vec![
            period(json!({})),
            namesake("P0000002", "01270016", "全国健康保険協会大阪支部"),
        ];
        let mut r = record("2026-05-20");
        // Declared without an insurer: nothing tells them apart.
        let mut p = r.provisional().unwrap();
        p.declared.insurer_name = None;
        r = JournalRecord::new(r.id().clone(), RecordFacts::Provisional(p.clone())).unwrap();
        let reg2 = MemoryRegistry::new(two.clone());
        let s = settle(&p, &reg2, now()).unwrap();
        assert_eq!(s.kind, SettlementKind::Ambiguous, "{}", s.explanation);
        r.settle(Actor::Reconciler, s).unwrap();
        // A third namesake registered: the candidates change, staff see it.
        let mut three = two.clone();
        three.push(namesake("P0000003", "06271233", "大阪健康保険組合"));
        let reg3 = MemoryRegistry::new(three);
        let revised = revisit(&r, &reg3, d("2026-03-01"), now())
            .unwrap()
            .expect("a revision");
        let s = revised.settlement().unwrap();
        assert_eq!(s.kind, SettlementKind::Ambiguous, "{}", s.explanation);
        assert_eq!(s.candidates.len(), 3, "{}", s.explanation);
        // The same three again: nothing to write.
        assert_eq!(
            revisit(&revised, &reg3, d("2026-03-01"), now()).unwrap(),
            None
        );
        // Staff chose P0000002 and the record is not settled against it yet: left to the
        // session, which settles against the choice.
        let mut chosen = r.clone();
        chosen
            .choose(
                Actor::Edge,
                Choice {
                    at: now(),
                    by: "uketsuke".into(),
                    person_id: onshi_model::PersonId::parse("P0000002").unwrap(),
                },
            )
            .unwrap();
        assert!(chosen.needs_resettlement());
        assert_eq!(
            revisit(&chosen, &reg3, d("2026-03-01"), now()).unwrap(),
            None
        );
    }

    fn verdict(kind: SettlementKind) -> Settlement {
        Settlement {
            kind,
            settled_at: now(),
            qualification: None,
            correct_share_percent: None,
            due_yen: None,
            yen: None,
            payer: Some("社会保険診療報酬支払基金".into()),
            candidates: Vec::new(),
            explanation: "one".into(),
        }
    }

    #[test]
    fn substance_is_kind_person_insurer_payer_amounts_and_candidates_not_words_or_time() {
        let a = verdict(SettlementKind::InsurerUnknown);
        let mut b = a.clone();
        b.explanation = "two".into();
        b.settled_at = now() + chrono::Duration::days(3);
        assert!(same_substance(&a, &b));
        let mut c = a.clone();
        c.kind = SettlementKind::Ambiguous;
        assert!(!same_substance(&a, &c));
        let mut c = a.clone();
        c.payer = Some("国民健康保険団体連合会".into());
        assert!(!same_substance(&a, &c));
        let mut c = a.clone();
        c.yen = Some(100);
        assert!(!same_substance(&a, &c));
        let mut c = a.clone();
        c.qualification = Some(new());
        assert!(!same_substance(&a, &c));
        let mut x = a.clone();
        x.qualification = Some(new());
        let mut y = x.clone();
        // Another insurer, or the same insurer for another person.
        y.qualification = Some(old());
        assert!(!same_substance(&x, &y));
        y.qualification = Some(period(
            json!({"person_id":"P0000009","insurer_number":"01130012","insurer_name":"全国健康保険協会東京支部",
            "symbol":"55","number":"901","branch":"00","acquired_on":"2026-05-10"}),
        ));
        assert!(!same_substance(&x, &y));
        // An address corrected in the registry is not news for the claim.
        y.qualification = Some(period(
            json!({"insurer_number":"01130012","insurer_name":"全国健康保険協会東京支部",
            "symbol":"55","number":"901","branch":"00","acquired_on":"2026-05-10","address":"東京都港区1-1"}),
        ));
        assert!(same_substance(&x, &y));
        // Candidates: the same people in another order are the same; one more is news.
        let cand = |p: &str| SettlementCandidate {
            person_id: onshi_model::PersonId::parse(p).unwrap(),
            score: 0.9,
            qualification: old(),
        };
        let mut m = verdict(SettlementKind::Ambiguous);
        m.candidates = vec![cand("P1"), cand("P2")];
        let mut n = m.clone();
        n.candidates = vec![cand("P2"), cand("P1")];
        n.candidates[0].score = 0.95;
        assert!(same_substance(&m, &n));
        n.candidates.push(cand("P3"));
        assert!(!same_substance(&m, &n));
    }

    #[test]
    fn the_settings_name_the_horizon_when_it_is_too_long() {
        assert_eq!(RevisitSettings::default().validate(), Ok(()));
        assert_eq!(RevisitSettings::default().horizon_days, 90);
        let e = RevisitSettings {
            horizon_days: 4000,
            ..RevisitSettings::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.starts_with("revisit_days: 4000 days"), "{e}");
    }
}
