//! The journal CRDT's laws, on arbitrary records and journals (settled, closed, quarantined, and
//! same-id records with conflicting facts): merge is commutative, associative and idempotent
//! (compared structurally), never loses a record, never moves a status backwards, never unsets a
//! quarantine or a settlement; writer rules hold; storage round-trips. Histories include the
//! reconciler's revisions after a registry change (issue 16), also of closed records.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, NaiveDate, Utc};
use crdts::CvRDT;
use onshi_model::record::SettlementCandidate;
use onshi_model::record::{
    Basis, Declaration, ProvisionalRecord, RecordState, Settlement, SettlementKind,
};
use onshi_model::{
    CardId, CheckRequest, CheckSubject, FacilityCode, PersonId, Qualification, Sex, Source,
    Validity,
};
use onshi_sync::crdt::{
    Actor, CONFLICTING_FACTS, Choice, DeferredCheck, Journal, JournalRecord, QuarantinedBy,
    RecordFacts, RecordId, Versions, WriteError,
};
use proptest::prelude::*;

const FACILITIES: [&str; 2] = ["1311234567", "1341234567"];

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
}

fn id(f: usize, node: u32, seq: u64) -> RecordId {
    RecordId::new(FacilityCode::parse(FACILITIES[f]).unwrap(), node, seq)
}

/// Facts of a small domain, so that same-id records often agree and sometimes conflict.
fn facts(id: &RecordId, variant: u8) -> RecordFacts {
    if variant.is_multiple_of(2) {
        RecordFacts::Provisional(ProvisionalRecord {
            record_id: id.to_string(),
            created_at: at(i64::from(variant)),
            declared: Declaration {
                name: "山田　太郎".into(),
                name_kana: Some("ヤマダ　タロウ".into()),
                birth_date: NaiveDate::from_ymd_opt(1980, 4, 1).unwrap(),
                sex: Sex::Male,
                address: None,
                insurer_name: None,
                insurance_type: None,
                employer: None,
                contact: None,
                share_percent: Some(30),
            },
            person_id: None,
            service_date: NaiveDate::from_ymd_opt(2025, 1, 6).unwrap(),
            total_fee_yen: 10_000 + u64::from(variant),
            share_percent: 30,
            collected_yen: 3_000,
            basis: Basis::Declared,
            rule: None,
            explanation: "declared".into(),
            state: RecordState::Recorded,
        })
    } else {
        RecordFacts::DeferredCheck(DeferredCheck {
            check_id: id.to_string(),
            created_at: at(i64::from(variant)),
            request: CheckRequest {
                subject: CheckSubject::Card {
                    card_id: CardId::parse(&format!("C{variant:07}")).unwrap(),
                },
                service_date: NaiveDate::from_ymd_opt(2025, 1, 6).unwrap(),
            },
            answered: Validity::Pending,
            source: Source::Queued,
        })
    }
}

/// Two candidates' person ids: `P1`, `P2`; a choice may name `P3`, who is never a candidate.
fn person(n: u8) -> PersonId {
    PersonId::parse(&format!("P{n}")).unwrap()
}

fn candidate(n: u8) -> SettlementCandidate {
    let q = Qualification::from_registry_value(&serde_json::json!({"person_id":format!("P{n}"),"card_id":null,
        "insurer_number":"06130017","insurer_name":"霞が関健康保険組合","card_class":"01","symbol":"123",
        "number":"4567","branch":"01","relationship":"insured","name":"山田　太郎","name_kana":"ヤマダ　タロウ",
        "sex":"male","birth_date":"1980-04-01","address":"東京都千代田区霞が関1-2-2","postal_code":"100-8916",
        "acquired_on":"2020-04-01","lost_on":null,"loss_reason":null,"share_percent":30}))
    .unwrap();
    SettlementCandidate {
        person_id: person(n),
        score: 1.0,
        qualification: q,
    }
}

/// Variants 4 and 5 are `ambiguous` between P1 and P2 (so staff can choose).
fn settlement(variant: u8) -> Settlement {
    if variant >= 4 {
        return Settlement {
            kind: SettlementKind::Ambiguous,
            settled_at: at(100 + i64::from(variant % 3)),
            qualification: None,
            correct_share_percent: None,
            due_yen: None,
            yen: None,
            payer: None,
            candidates: vec![candidate(1), candidate(2)],
            explanation: format!("ambiguous {variant}"),
        };
    }
    Settlement {
        kind: if variant.is_multiple_of(2) {
            SettlementKind::Confirmed
        } else {
            SettlementKind::Refund
        },
        settled_at: at(100 + i64::from(variant % 3)),
        qualification: None,
        correct_share_percent: Some(30),
        due_yen: Some(3_000),
        yen: (variant % 2 == 1).then_some(u64::from(variant) * 10),
        payer: None,
        candidates: Vec::new(),
        explanation: format!("settlement {variant}"),
    }
}

/// What can happen to a record after it is created; invalid ones are refused and change nothing.
#[derive(Debug, Clone)]
enum Op {
    Settle(Actor, u8),
    Close(Actor),
    Quarantine(Actor, u8),
    Rejected(Actor, u8),
    MarkSent,
    /// Staff choose person `P{1}` at second `{2}`.
    Choose(Actor, u8, u8),
    Resettle(Actor, u8),
    /// The reconciler revises the settlement after a registry change (issue 16).
    Revise(Actor, u8),
}

fn actor() -> impl Strategy<Value = Actor> {
    prop_oneof![Just(Actor::Edge), Just(Actor::Reconciler)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (actor(), 0u8..6).prop_map(|(a, v)| Op::Settle(a, v)),
        (actor(), 1u8..4, 0u8..3).prop_map(|(a, p, t)| Op::Choose(a, p, t)),
        (actor(), 0u8..6).prop_map(|(a, v)| Op::Resettle(a, v)),
        (actor(), 0u8..6).prop_map(|(a, v)| Op::Revise(a, v)),
        actor().prop_map(Op::Close),
        (actor(), 0u8..3).prop_map(|(a, v)| Op::Quarantine(a, v)),
        (actor(), 0u8..3).prop_map(|(a, v)| Op::Rejected(a, v)),
        Just(Op::MarkSent),
    ]
}

fn apply(r: &mut JournalRecord, op: &Op) {
    let _ = match op {
        Op::Settle(a, v) => r.settle(*a, settlement(*v)),
        Op::Close(a) => r.close(*a),
        Op::Quarantine(a, v) => r.quarantine_with(*a, &format!("reason {v}")),
        Op::Rejected(a, v) => {
            r.note_rejection(*a, &format!("rejected {v}"));
            Ok(())
        }
        Op::MarkSent => {
            r.mark_sent();
            Ok(())
        }
        Op::Choose(a, p, t) => r.choose(*a, choice(*p, *t)).map(|_| ()),
        Op::Resettle(a, v) => r.resettle(*a, settlement(*v)),
        Op::Revise(a, v) => r.revise(*a, settlement(*v)),
    };
}

fn choice(p: u8, t: u8) -> Choice {
    Choice {
        at: at(200 + i64::from(t)),
        by: format!("staff{}", t % 2),
        person_id: person(p),
    }
}

fn build(id: RecordId, variant: u8, ops: &[Op]) -> JournalRecord {
    let mut r = JournalRecord::new(id.clone(), facts(&id, variant)).unwrap();
    for o in ops {
        apply(&mut r, o);
    }
    r
}

/// A replica's view of one record: facts variant (0..3: conflicts are frequent) and history.
fn replica_of(id: RecordId) -> impl Strategy<Value = JournalRecord> {
    (0u8..3, prop::collection::vec(op(), 0..6)).prop_map(move |(v, ops)| build(id.clone(), v, &ops))
}

fn same_id_triple() -> impl Strategy<Value = (JournalRecord, JournalRecord, JournalRecord)> {
    (0usize..2, 0u32..2, 0u64..3).prop_flat_map(|(f, n, s)| {
        let i = id(f, n, s);
        (replica_of(i.clone()), replica_of(i.clone()), replica_of(i))
    })
}

fn any_record() -> impl Strategy<Value = JournalRecord> {
    (0usize..2, 0u32..2, 0u64..4).prop_flat_map(|(f, n, s)| replica_of(id(f, n, s)))
}

fn journal() -> impl Strategy<Value = Journal> {
    prop::collection::vec(any_record(), 0..12).prop_map(|rs| rs.into_iter().collect())
}

fn merged<T: CvRDT + Clone>(a: &T, b: &T) -> T {
    let mut m = a.clone();
    m.merge(b.clone());
    m
}

fn no_regression(before: &JournalRecord, after: &JournalRecord) -> Result<(), TestCaseError> {
    prop_assert!(
        after.state() >= before.state(),
        "state went back: {:?} -> {:?}",
        before.state(),
        after.state()
    );
    prop_assert!(
        before.versions().le(&after.versions()),
        "versions went back"
    );
    if before.quarantine().is_some() {
        prop_assert!(after.quarantine().is_some(), "quarantine was unset");
    }
    if before.settlement().is_some() {
        prop_assert!(after.settlement().is_some(), "settlement was unset");
    }
    prop_assert!(
        after.settlement_revision() >= before.settlement_revision(),
        "settlement revision went back"
    );
    if before.choice().is_some() {
        prop_assert!(after.choice() >= before.choice(), "choice went back");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn record_merge_is_commutative((a, b, _c) in same_id_triple()) {
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
    }

    #[test]
    fn record_merge_is_associative((a, b, c) in same_id_triple()) {
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
    }

    #[test]
    fn record_merge_is_idempotent((a, b, _c) in same_id_triple()) {
        prop_assert_eq!(merged(&a, &a), a.clone());
        let ab = merged(&a, &b);
        prop_assert_eq!(merged(&ab, &b), ab.clone());
        prop_assert_eq!(merged(&ab, &a), ab);
    }

    #[test]
    fn record_merge_never_moves_backwards((a, b, _c) in same_id_triple()) {
        let m = merged(&a, &b);
        no_regression(&a, &m)?;
        no_regression(&b, &m)?;
        prop_assert!(m.validate().is_ok(), "merge broke an invariant: {:?}", m.validate());
        if m.state() == RecordState::Closed {
            prop_assert!(m.settlement().is_some());
        }
    }

    #[test]
    fn conflicting_facts_are_quarantined_whatever_the_order((a, b, _c) in same_id_triple()) {
        let m = merged(&a, &b);
        if a.facts() != b.facts() {
            let q = m.quarantine().expect("conflict must quarantine");
            // Another reason may sort first, but the record is quarantined and flagged either way.
            prop_assert!(q.reason.as_str() <= CONFLICTING_FACTS);
            prop_assert!(m.facts() == a.facts() || m.facts() == b.facts());
            let ba = merged(&b, &a);
            prop_assert_eq!(ba.facts(), m.facts());
        } else {
            prop_assert_eq!(m.facts(), a.facts());
        }
    }

    #[test]
    fn journal_merge_is_commutative(a in journal(), b in journal()) {
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
    }

    #[test]
    fn journal_merge_is_associative(a in journal(), b in journal(), c in journal()) {
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
    }

    #[test]
    fn journal_merge_is_idempotent(a in journal(), b in journal()) {
        prop_assert_eq!(merged(&a, &a), a.clone());
        let ab = merged(&a, &b);
        prop_assert_eq!(merged(&ab, &a), ab.clone());
        prop_assert_eq!(merged(&ab, &b), ab);
    }

    #[test]
    fn journal_merge_never_loses_a_record_nor_moves_backwards(a in journal(), b in journal()) {
        let m = merged(&a, &b);
        for side in [&a, &b] {
            for r in side.iter() {
                let got = m.get(r.id());
                prop_assert!(got.is_some(), "record {} lost", r.id());
                no_regression(r, got.unwrap())?;
            }
        }
        prop_assert!(m.len() <= a.len() + b.len());
    }

    #[test]
    fn writer_rules_hold(r in any_record(), v in 0u8..4) {
        // Only the reconciler settles.
        let mut e = r.clone();
        prop_assert!(matches!(e.settle(Actor::Edge, settlement(v)), Err(WriteError::SettleByEdge { .. })), "writer rule not enforced");
        prop_assert_eq!(&e, &r);
        // Only the edge closes.
        let mut c = r.clone();
        prop_assert!(matches!(c.close(Actor::Reconciler), Err(WriteError::CloseByReconciler { .. })), "writer rule not enforced");
        prop_assert_eq!(&c, &r);
        // Closing needs a settlement.
        let mut c = r.clone();
        let res = c.close(Actor::Edge);
        if r.settlement().is_none() {
            prop_assert!(matches!(res, Err(WriteError::CloseUnsettled { .. })), "writer rule not enforced");
            prop_assert_eq!(&c, &r);
        } else {
            prop_assert!(res.is_ok());
            prop_assert_eq!(c.state(), RecordState::Closed);
        }
        // A settlement is written once.
        let mut s = r.clone();
        let res = s.settle(Actor::Reconciler, settlement(v));
        if r.settlement().is_some() {
            prop_assert!(matches!(res, Err(WriteError::AlreadySettled { .. })), "writer rule not enforced");
            prop_assert_eq!(&s, &r);
        } else {
            prop_assert!(res.is_ok());
            prop_assert!(s.state() >= RecordState::Settled);
            prop_assert_eq!(s.versions().reconciler, r.versions().reconciler + 1);
        }
    }

    #[test]
    fn choice_writer_rules_hold(r in any_record(), p in 1u8..4, t in 0u8..3, v in 0u8..6) {
        // Only the edge chooses; only the reconciler settles again.
        let mut e = r.clone();
        prop_assert!(matches!(e.choose(Actor::Reconciler, choice(p, t)), Err(WriteError::ChooseByReconciler { .. })), "writer rule not enforced");
        prop_assert!(matches!(e.resettle(Actor::Edge, settlement(v)), Err(WriteError::ResettleByEdge { .. })), "writer rule not enforced");
        prop_assert_eq!(&e, &r);
        // A choice only under an ambiguous settlement, of one of its candidates, before closing.
        let mut c = r.clone();
        let res = c.choose(Actor::Edge, choice(p, t));
        let ambiguous = r.settlement().is_some_and(|s| s.kind == SettlementKind::Ambiguous);
        if !ambiguous || p == 3 || r.state() == RecordState::Closed {
            prop_assert!(res.is_err(), "choice accepted: {:?}", res);
            prop_assert_eq!(&c, &r);
        } else {
            prop_assert!(res.is_ok());
            prop_assert_eq!(&c.choice().unwrap().person_id, &person(p));
            // Idempotent: the same person again changes nothing.
            let again = c.clone();
            prop_assert_eq!(c.choose(Actor::Edge, choice(p, t)), Ok(false));
            prop_assert_eq!(&c, &again);
            // Settled again: a higher revision, against that person, and nothing more to do.
            prop_assert!(c.needs_resettlement() == r.quarantine().is_none());
            if c.needs_resettlement() {
                c.resettle(Actor::Reconciler, settlement(v)).unwrap();
                prop_assert_eq!(c.settlement_revision(), r.settlement_revision() + 1);
                prop_assert_eq!(c.settled_choice(), c.choice());
                prop_assert!(!c.needs_resettlement());
                // The new settlement wins a merge with the ambiguous one, in either order.
                let (rc, cr) = (merged(&r, &c), merged(&c, &r));
                prop_assert_eq!(rc.settlement(), c.settlement());
                prop_assert_eq!(cr.settlement(), c.settlement());
            }
        }
    }

    #[test]
    fn revision_writer_rules_hold(r in any_record(), v in 0u8..6) {
        // Only the reconciler revises.
        let mut e = r.clone();
        prop_assert!(matches!(e.revise(Actor::Edge, settlement(v)), Err(WriteError::ReviseByEdge { .. })), "writer rule not enforced");
        prop_assert_eq!(&e, &r);
        let mut c = r.clone();
        let res = c.revise(Actor::Reconciler, settlement(v));
        if r.settlement().is_none() || r.quarantine().is_some() {
            // Nothing to revise, or set aside: refused, nothing changed.
            prop_assert!(res.is_err(), "revision accepted: {:?}", res);
            prop_assert_eq!(&c, &r);
        } else {
            prop_assert!(res.is_ok());
            // One revision higher, the new settlement, the lifecycle where it was (a closed
            // record stays closed), the choice untouched.
            prop_assert_eq!(c.settlement_revision(), r.settlement_revision() + 1);
            prop_assert_eq!(c.settlement(), Some(&settlement(v)));
            prop_assert_eq!(c.state(), r.state());
            prop_assert_eq!(c.choice(), r.choice());
            prop_assert_eq!(c.settled_choice(), r.settled_choice());
            prop_assert_eq!(c.versions().reconciler, r.versions().reconciler + 1);
            prop_assert!(c.validate().is_ok());
            // The revision wins a merge with what it replaces, in either order, and it is never
            // sent or stored in the V1 layout (which has no revision to carry).
            let (rc, cr) = (merged(&r, &c), merged(&c, &r));
            prop_assert_eq!(rc.settlement(), c.settlement());
            prop_assert_eq!(cr.settlement(), c.settlement());
            prop_assert_eq!(rc.settlement_revision(), c.settlement_revision());
            prop_assert!(c.as_v1().is_none());
            prop_assert_eq!(&JournalRecord::from_bytes(&c.to_bytes().unwrap()).unwrap(), &c);
            // Closing after the revision, or the revision arriving after a close, both end
            // closed with the revised settlement.
            let mut closed = r.clone();
            if closed.close(Actor::Edge).is_ok() {
                let m = merged(&closed, &c);
                prop_assert_eq!(m.state(), RecordState::Closed);
                prop_assert_eq!(m.settlement(), c.settlement());
            }
        }
    }

    #[test]
    fn records_stored_before_the_choice_still_load(r in any_record()) {
        #[derive(serde::Serialize)]
        enum OldStored {
            V1(onshi_sync::crdt::JournalRecordV1),
        }
        let old = postcard::to_allocvec(&OldStored::V1(r.to_v1())).unwrap();
        let back = JournalRecord::from_bytes(&old).unwrap();
        prop_assert_eq!(back.settlement(), r.settlement());
        prop_assert_eq!(back.state(), r.state());
        prop_assert_eq!(back.versions(), r.versions());
        prop_assert!(back.choice().is_none());
        prop_assert_eq!(back.settlement_revision(), 0);
    }

    #[test]
    fn versions_bump_only_for_their_writer(r in any_record()) {
        let mut q = r.clone();
        q.quarantine_with(Actor::Edge, "a reason").unwrap();
        prop_assert_eq!(q.versions().reconciler, r.versions().reconciler);
        let mut s = r.clone();
        s.mark_sent();
        prop_assert_eq!(s.versions(), r.versions());
    }

    #[test]
    fn storage_round_trips(j in journal()) {
        let bytes = j.to_bytes().unwrap();
        prop_assert_eq!(Journal::from_bytes(&bytes).unwrap(), j.clone());
        for r in j.iter() {
            prop_assert_eq!(&JournalRecord::from_bytes(&r.to_bytes().unwrap()).unwrap(), r);
        }
    }

    #[test]
    fn version_vectors_form_a_lattice(a in (0u64..5, 0u64..5), b in (0u64..5, 0u64..5), c in (0u64..5, 0u64..5)) {
        let [a, b, c] = [a, b, c].map(|(edge, reconciler)| Versions { edge, reconciler });
        prop_assert_eq!(a.join(&b), b.join(&a));
        prop_assert_eq!(a.join(&b).join(&c), a.join(&b.join(&c)));
        prop_assert_eq!(a.join(&a), a);
        prop_assert!(a.le(&a.join(&b)) && b.le(&a.join(&b)));
    }
}

#[test]
fn a_conflict_is_quarantined_with_its_reason() {
    let i = id(0, 1, 7);
    let a = build(i.clone(), 0, &[]);
    let b = build(i, 2, &[]);
    let m = merged(&a, &b);
    let q = m.quarantine().unwrap();
    assert_eq!(q.reason, CONFLICTING_FACTS);
    assert_eq!(q.by, QuarantinedBy::Merge);
    assert!(m.has_conflicting_facts());
    assert_eq!(m, merged(&b, &a));
}

#[test]
fn facts_must_name_the_record_id() {
    let i = id(0, 1, 7);
    let other = id(0, 1, 8);
    assert!(JournalRecord::new(i, facts(&other, 0)).is_err());
}

#[test]
fn stored_bytes_that_break_invariants_are_refused() {
    assert!(Journal::from_bytes(b"\x07garbage").is_err());
    assert!(JournalRecord::from_bytes(&[]).is_err());
}
