//! The queue as reception and IT staff see it: every deferred check still waiting for its online
//! answer and every provisional record with its lifecycle (`recorded`, `sent`, `settled`, `closed`,
//! or `quarantined`) and, once back from the reconciler, its settlement. `pending`,
//! `provisional_yen` and the oldest age count what is still open: deferred checks and provisional
//! records not yet closed by staff (a settled record waits for staff to act on it).
//! Caps (count, yen, age) only raise warnings: nothing is ever dropped or deleted by a timer.
//!
//! A settlement the centre settled again (`settlement_revision` above 0: against staff's choice,
//! or revised after a registry change, issue 16) is marked `revised`; one revised after staff
//! closed the item is marked `revised_after_close`: its state stays `closed` (the lifecycle never
//! goes back) but it is an item to act on again until staff close it again. Nothing closed is
//! reopened silently.
//!
//! [`summary`] walks the journal (for the full list); [`crate::tally`] keeps the same counts as the
//! journal is written, so status pages and metrics cost the same with 25 items queued or 25,000.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::journal::{CheckState, Journal, JournalError};
use crate::provisional::RecordState;
pub use crate::tally::{QueueBrief, QueueCaps, QueueTally};
use onshi_model::record::Settlement;
use onshi_sync::crdt::{Choice, JournalRecord, RecordFacts, RecordId};

#[derive(Debug, Clone, Serialize)]
pub struct QueueItem {
    pub id: String,
    pub kind: &'static str,
    pub state: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collected_yen: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement: Option<Value>,
    /// Staff's choice of person under an `ambiguous` settlement, until (and after) the
    /// reconciler settles again against it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choice: Option<Choice>,
    /// The settlement's revision, once settled: 0 for the first verdict, more each time the
    /// centre settled again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement_revision: Option<u32>,
    /// The centre revised the settlement (revision above 0); `settlement` is the current verdict.
    pub revised: bool,
    /// The centre revised the settlement after staff closed the item: to act on again (the
    /// state stays `closed`; closing it again acknowledges the new verdict).
    pub revised_after_close: bool,
}

/// Whether the centre revised `r`'s settlement after staff closed it at revision `closed_at`
/// (`Journal::closed_revision`). A record closed by a version that did not keep the revision
/// counts as closed at revision 0 — or, when its settlement was made against staff's choice
/// (settled again only before closing), at its current revision — so a revision from the centre
/// is never taken as seen.
pub fn revised_after_close(r: &JournalRecord, closed_at: Option<u32>) -> bool {
    if r.state() < RecordState::Closed {
        return false;
    }
    let seen = closed_at.unwrap_or_else(|| {
        if r.settled_choice().is_some() {
            r.settlement_revision()
        } else {
            0
        }
    });
    r.settlement_revision() > seen
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueSummary {
    pub items: Vec<QueueItem>,
    pub pending: usize,
    pub provisional_yen: u64,
    pub oldest_pending_s: Option<i64>,
    pub warnings: Vec<String>,
}

/// Reads the queue from the journal at `now`.
pub fn summary(
    journal: &Journal,
    caps: &QueueCaps,
    now: DateTime<Utc>,
) -> Result<QueueSummary, JournalError> {
    let mut items = Vec::new();
    for id in journal.deferred_ids()? {
        if let Some(r) = journal.get(&id)?
            && r.state == CheckState::Deferred
        {
            items.push(QueueItem {
                id: r.check_id,
                kind: "deferred_check",
                state: "pending".into(),
                created_at: r.created_at,
                collected_yen: None,
                last_error: r.last_error,
                settlement: None,
                choice: None,
                settlement_revision: None,
                revised: false,
                revised_after_close: false,
            });
        }
    }
    let mut provisional_yen = 0;
    let mut open = items.len();
    let mut oldest: Option<DateTime<Utc>> = items.iter().map(|i| i.created_at).min();
    let (mut quarantined, mut settled) = (0, 0);
    for r in journal.provisional_records()? {
        let synced = RecordId::parse(&r.record_id)
            .ok()
            .map(|id| journal.sync.get(&id))
            .transpose()?
            .flatten();
        let lifecycle = synced.as_ref().map_or(r.state, JournalRecord::state);
        if lifecycle < RecordState::Closed {
            provisional_yen += r.collected_yen;
            open += 1;
            oldest = Some(oldest.map_or(r.created_at, |o| o.min(r.created_at)));
        }
        if synced.as_ref().is_some_and(|s| s.quarantine().is_some()) {
            quarantined += 1;
        }
        if lifecycle >= RecordState::Settled {
            settled += 1;
        }
        let reopened = match &synced {
            Some(s) if s.state() >= RecordState::Closed => {
                revised_after_close(s, journal.closed_revision(s.id())?)
            }
            _ => false,
        };
        let revision = synced
            .as_ref()
            .filter(|s| s.settlement().is_some())
            .map(JournalRecord::settlement_revision);
        items.push(QueueItem {
            id: r.record_id,
            kind: "provisional",
            state: synced.as_ref().map_or_else(
                || state_name(r.state, false),
                |s| state_name(s.state(), s.quarantine().is_some()),
            ),
            created_at: r.created_at,
            collected_yen: Some(r.collected_yen),
            last_error: synced
                .as_ref()
                .and_then(|s| s.quarantine())
                .map(|q| q.reason.clone()),
            settlement: synced
                .as_ref()
                .and_then(|s| s.settlement())
                .map(settlement_json),
            choice: synced.as_ref().and_then(|s| s.choice().cloned()),
            settlement_revision: revision,
            revised: revision.is_some_and(|r| r > 0),
            revised_after_close: reopened,
        });
    }
    items.sort_by(|a, b| {
        a.created_at
            .cmp(&b.created_at)
            .then_with(|| a.id.cmp(&b.id))
    });
    let brief = QueueBrief::new(
        open,
        provisional_yen,
        oldest,
        (quarantined, settled),
        caps,
        now,
    );
    Ok(QueueSummary {
        items,
        pending: brief.pending,
        provisional_yen: brief.provisional_yen,
        oldest_pending_s: brief.oldest_pending_s,
        warnings: brief.warnings,
    })
}

/// `recorded`, `sent`, `settled`, `closed`, or `quarantined` (set aside with a reason).
fn state_name(state: RecordState, quarantined: bool) -> String {
    if quarantined {
        return "quarantined".into();
    }
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A settlement as reception reads it: the kind, the yen to refund or charge, the insurer of the
/// qualification valid on the service date, and the sentence for staff (plus the details).
pub fn settlement_json(s: &Settlement) -> Value {
    json!({
        "kind": s.kind,
        "yen": s.yen,
        "insurer": s.qualification.as_ref().map(|q| json!({"name": q.insurer_name, "number": q.insurer_number})),
        "explanation": s.explanation,
        "settled_at": s.settled_at,
        "correct_share_percent": s.correct_share_percent,
        "due_yen": s.due_yen,
        "payer": s.payer,
        "qualification": s.qualification,
        "candidates": s.candidates,
    })
}

/// One sync record as a queue item (the answer of closing it); `closed_at` as
/// [`revised_after_close`] takes it.
pub fn sync_item_json(r: &JournalRecord, closed_at: Option<u32>) -> Value {
    let (kind, created_at, collected) = match r.facts() {
        RecordFacts::Provisional(p) => ("provisional", p.created_at, Some(p.collected_yen)),
        RecordFacts::DeferredCheck(d) => ("deferred_check", d.created_at, None),
    };
    json!({
        "id": r.id().to_string(),
        "kind": kind,
        "state": state_name(r.state(), r.quarantine().is_some()),
        "created_at": created_at,
        "collected_yen": collected,
        "settlement": r.settlement().map(settlement_json),
        "last_error": r.quarantine().map(|q| q.reason.clone()),
        "choice": r.choice(),
        "settlement_revision": r.settlement().map(|_| r.settlement_revision()),
        "revised": r.settlement().is_some() && r.settlement_revision() > 0,
        "revised_after_close": revised_after_close(r, closed_at),
    })
}

/// The short form for status.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::provisional::ProvisionalRecord;
    use chrono::{Duration, TimeZone};
    use onshi_model::record::{Basis, Declaration, SettlementKind};
    use onshi_model::{CardId, CheckRequest, CheckSubject, FacilityCode, Sex, Source, Validity};
    use onshi_sync::crdt::Actor;
    use onshi_sync::store::SledStore;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::journal::CheckRecord;

    fn at(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap() + Duration::minutes(minutes)
    }

    fn check(id: &str, minutes: i64, state: CheckState) -> CheckRecord {
        CheckRecord {
            check_id: id.to_string(),
            facility: FacilityCode::parse("1311234567").unwrap(),
            created_at: at(minutes),
            request: CheckRequest {
                subject: CheckSubject::Card {
                    card_id: CardId::parse("card-1").unwrap(),
                },
                service_date: at(0).date_naive(),
            },
            validity: Validity::Pending,
            source: Source::Queued,
            outcome: None,
            as_of: None,
            state,
            final_outcome: None,
            attempts: 0,
            last_error: None,
            card: None,
        }
    }

    fn provisional(id: &str, minutes: i64, yen: u64) -> ProvisionalRecord {
        ProvisionalRecord {
            record_id: id.to_string(),
            created_at: at(minutes),
            declared: Declaration {
                name: "山田　太郎".into(),
                name_kana: None,
                birth_date: at(0).date_naive() - chrono::Days::new(40 * 365),
                sex: Sex::Male,
                address: None,
                insurer_name: None,
                insurance_type: None,
                employer: None,
                contact: None,
                share_percent: None,
            },
            person_id: None,
            service_date: at(0).date_naive(),
            total_fee_yen: yen * 10 / 3,
            share_percent: 30,
            collected_yen: yen,
            basis: Basis::AgeRule,
            rule: None,
            explanation: String::new(),
            state: RecordState::Recorded,
        }
    }

    fn settlement() -> Settlement {
        Settlement {
            kind: SettlementKind::Confirmed,
            settled_at: at(1_000),
            qualification: None,
            correct_share_percent: Some(30),
            due_yen: None,
            yen: None,
            payer: None,
            candidates: Vec::new(),
            explanation: "confirmed".into(),
        }
    }

    fn item<'a>(s: &'a QueueSummary, id: &str) -> &'a QueueItem {
        s.items.iter().find(|i| i.id == id).expect("the item")
    }

    /// The centre revises a settlement after staff closed the item: the item stays closed (the
    /// lifecycle never goes back) and shows as revised after close until staff close it again,
    /// which remembers the new revision; a revision before closing is only marked revised.
    #[test]
    fn a_revision_after_close_is_an_item_to_act_on_again_until_closed_again() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let caps = QueueCaps::default();
        rt.block_on(async {
            let store: Arc<dyn onshi_sync::store::Store> =
                Arc::new(SledStore::open(dir.path()).unwrap());
            let journal = Journal::open(store, FacilityCode::parse("1311234567").unwrap()).unwrap();
            let mut ids = Vec::new();
            for _ in 0..2 {
                let id = journal.next_id().unwrap();
                let p = provisional(&id, 0, 3_000);
                journal.put_sync_provisional(&p).unwrap();
                journal.put_provisional_durable(&p).await.unwrap();
                let rid = RecordId::parse(&id).unwrap();
                journal
                    .sync
                    .update(&rid, |r| r.settle(Actor::Reconciler, settlement()))
                    .unwrap();
                ids.push((id, rid));
            }
            let (closed_id, closed) = &ids[0];
            let (open_id, open) = &ids[1];
            // The centre's revision, as the sync merges it in.
            let revise = |rid: &RecordId, kind: SettlementKind| {
                let mut r = journal.sync.get(rid).unwrap().unwrap();
                r.revise(
                    Actor::Reconciler,
                    Settlement {
                        kind,
                        explanation: format!("{kind:?}"),
                        ..settlement()
                    },
                )
                .unwrap();
                journal.sync.merge(r).unwrap();
            };

            journal.close_item(closed).unwrap().unwrap().unwrap();
            assert_eq!(journal.closed_revision(closed).unwrap(), Some(0));
            let s = summary(&journal, &caps, at(10)).unwrap();
            let i = item(&s, closed_id);
            assert_eq!(
                (
                    i.state.as_str(),
                    i.settlement_revision,
                    i.revised,
                    i.revised_after_close
                ),
                ("closed", Some(0), false, false)
            );

            revise(closed, SettlementKind::InsurerChanged);
            revise(open, SettlementKind::InsurerChanged);
            let s = summary(&journal, &caps, at(10)).unwrap();
            let i = item(&s, closed_id);
            assert_eq!(
                (
                    i.state.as_str(),
                    i.settlement_revision,
                    i.revised,
                    i.revised_after_close
                ),
                ("closed", Some(1), true, true),
                "closed, revised since: to act on again"
            );
            assert_eq!(i.settlement.as_ref().unwrap()["kind"], "insurer_changed");
            let i = item(&s, open_id);
            assert_eq!(
                (i.state.as_str(), i.revised, i.revised_after_close),
                ("settled", true, false),
                "revised before closing: marked revised, to act on as any settlement"
            );
            let json = serde_json::to_value(item(&s, closed_id)).unwrap();
            assert_eq!(json["revised_after_close"], true);
            assert_eq!(json["settlement_revision"], 1);

            // Closing again acknowledges the revision; a second revision shows again.
            let rec = journal.close_item(closed).unwrap().unwrap().unwrap();
            assert_eq!(journal.closed_revision(closed).unwrap(), Some(1));
            assert_eq!(sync_item_json(&rec, Some(1))["revised_after_close"], false);
            let s = summary(&journal, &caps, at(10)).unwrap();
            assert!(!item(&s, closed_id).revised_after_close);
            revise(closed, SettlementKind::Refund);
            let s = summary(&journal, &caps, at(10)).unwrap();
            let i = item(&s, closed_id);
            assert_eq!(
                (i.settlement_revision, i.revised_after_close),
                (Some(2), true)
            );
            assert_eq!(i.state, "closed");
            journal.commit().await.unwrap();
        });
    }

    #[test]
    fn a_record_closed_before_revisions_were_remembered_never_hides_one() {
        let id = RecordId::parse("1311234567-00000001-0000000001").unwrap();
        let p = provisional(&id.to_string(), 0, 3_000);
        let mut r = JournalRecord::new(id, RecordFacts::Provisional(p)).unwrap();
        r.settle(Actor::Reconciler, settlement()).unwrap();
        r.close(Actor::Edge).unwrap();
        assert!(!revised_after_close(&r, None));
        let mut revised = r.clone();
        revised.revise(Actor::Reconciler, settlement()).unwrap();
        // No revision kept: taken as closed at 0, so the centre's revision shows.
        assert!(revised_after_close(&revised, None));
        assert!(revised_after_close(&revised, Some(0)));
        assert!(!revised_after_close(&revised, Some(1)));
        // Not closed: never "after close".
        let mut open = JournalRecord::new(
            r.id().clone(),
            RecordFacts::Provisional(provisional(&r.id().to_string(), 0, 3_000)),
        )
        .unwrap();
        open.settle(Actor::Reconciler, settlement()).unwrap();
        open.revise(Actor::Reconciler, settlement()).unwrap();
        assert!(!revised_after_close(&open, None));
    }

    /// What the walk counts, in the tally's form.
    fn walked(journal: &Journal, caps: &QueueCaps, now: DateTime<Utc>) -> QueueBrief {
        let s = summary(journal, caps, now).unwrap();
        let quarantined = s.items.iter().filter(|i| i.state == "quarantined").count();
        let settled = s
            .items
            .iter()
            .filter(|i| i.kind == "provisional" && i.settlement.is_some())
            .count();
        QueueBrief {
            pending: s.pending,
            provisional_yen: s.provisional_yen,
            oldest_pending_s: s.oldest_pending_s,
            quarantined,
            settled,
            warnings: s.warnings,
        }
    }

    /// A seeded random life of a queue: checks deferred and completed (also twice, also a leftover
    /// queue entry), provisional records written, settled by the reconciler, closed by staff, set
    /// aside, and records of another node that are not queue items. After every step the tally
    /// says what the walk says, and after a reopen too.
    #[test]
    fn the_tally_always_equals_the_walk_and_is_rebuilt_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let caps = QueueCaps {
            max_pending: 20,
            max_provisional_yen: 30_000,
            max_age_s: 3 * 3600,
        };
        let now = at(600);
        let facility = FacilityCode::parse("1311234567").unwrap();
        rt.block_on(async {
            let store: Arc<dyn onshi_sync::store::Store> =
                Arc::new(SledStore::open(dir.path()).unwrap());
            let journal = Journal::open(store, facility.clone()).unwrap();
            let mut rng = StdRng::seed_from_u64(11);
            let (mut checks, mut records) = (Vec::new(), Vec::new());
            let mut seen_warning = false;
            for step in 0..400i64 {
                match rng.random_range(0..8) {
                    0 | 1 => {
                        let id = journal.next_id().unwrap();
                        journal
                            .put(&check(&id, step, CheckState::Deferred))
                            .unwrap();
                        checks.push(id);
                    }
                    2 if !checks.is_empty() => {
                        let id = &checks[rng.random_range(0..checks.len())];
                        let mut c = journal.get(id).unwrap().unwrap();
                        c.state = CheckState::Completed;
                        journal.put(&c).unwrap();
                    }
                    3 => {
                        let id = journal.next_id().unwrap();
                        let p = provisional(&id, step, rng.random_range(1..400) * 10);
                        journal.put_sync_provisional(&p).unwrap();
                        journal.put_provisional_durable(&p).await.unwrap();
                        records.push(id);
                    }
                    4 if !records.is_empty() => {
                        let id =
                            RecordId::parse(&records[rng.random_range(0..records.len())]).unwrap();
                        journal
                            .sync
                            .update(&id, |r| r.settle(Actor::Reconciler, settlement()))
                            .unwrap();
                    }
                    5 if !records.is_empty() => {
                        let id =
                            RecordId::parse(&records[rng.random_range(0..records.len())]).unwrap();
                        journal.sync.update(&id, |r| r.close(Actor::Edge)).unwrap();
                    }
                    6 if !records.is_empty() => {
                        let id =
                            RecordId::parse(&records[rng.random_range(0..records.len())]).unwrap();
                        journal
                            .sync
                            .update(&id, |r| r.quarantine_with(Actor::Reconciler, "bad"))
                            .unwrap();
                    }
                    _ => {
                        // Another node's record, as the reconciler may send it: not a queue item.
                        let other = RecordId::new(facility.clone(), 7, step as u64);
                        let p = provisional(&other.to_string(), step, 1_000);
                        journal
                            .sync
                            .merge(JournalRecord::new(other, RecordFacts::Provisional(p)).unwrap())
                            .unwrap();
                    }
                }
                let tally = journal.tally().brief(&caps, now);
                assert_eq!(tally, walked(&journal, &caps, now), "after step {step}");
                seen_warning |= !tally.warnings.is_empty();
            }
            let last = journal.tally().brief(&caps, now);
            assert!(last.pending > 0 && last.quarantined > 0 && last.settled > 0 && seen_warning);
            journal.commit().await.unwrap();
        });
        drop(rt);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store: Arc<dyn onshi_sync::store::Store> =
                Arc::new(SledStore::open(dir.path()).unwrap());
            let journal = Journal::open(store, facility).unwrap();
            assert_eq!(
                journal.tally().brief(&caps, now),
                walked(&journal, &caps, now)
            );
        });
    }
}
