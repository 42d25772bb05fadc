//! Each settlement kind on crafted registry cases: confirmed, refund, charge, a job change mid-month,
//! the 75th birthday, the preschool boundary, an unknown insurer, namesakes. Every case is settled
//! three times, against the registry in memory, against the sled registry with its search index,
//! and against the embedded central store (central search from the store's own index), and the
//! verdicts must be equal. Yen amounts are worked out by hand in the comments.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chrono::{DateTime, Utc};
use onshi_fallback::SearchIndex;
use onshi_fallback::share::{SharePolicy, estimate_share};
use onshi_model::ids::luhn_check_digit;
use onshi_model::record::{
    Basis, Declaration, ProvisionalRecord, RecordState, Settlement, SettlementKind,
};
use onshi_model::{NaiveDate, PersonId, Qualification, Sex};
use onshi_reconciler::settlement::{
    IndexedRegistry, MemoryRegistry, PAYER_KOKUHO, PAYER_SHAHO, StoreView, settle,
};
use onshi_reconciler::store::CentralStore;
use onshi_reconciler::store::embedded::EmbeddedStore;
use onshi_sync::registry::Registry;
use onshi_sync::store::SledStore;
use serde_json::{Value, json};

fn d(s: &str) -> NaiveDate {
    onshi_model::parse_date(s).unwrap()
}

/// An insurer number with its check digit computed, never guessed.
fn ins(body: &str) -> String {
    format!("{body}{}", luhn_check_digit(body))
}

/// A registry line; `over` replaces fields.
fn line(over: Value) -> Value {
    let mut v = json!({"person_id":"P0000001","card_id":null,"insurer_number":"06130017","insurer_name":"霞が関健康保険組合",
        "card_class":"01","symbol":"123","number":"4567","branch":"01","relationship":"insured",
        "name":"山田　太郎","name_kana":"ヤマダ　タロウ","sex":"male","birth_date":"1980-04-01",
        "address":"東京都千代田区霞が関1-2-2","postal_code":"100-8916",
        "acquired_on":"2020-04-01","lost_on":null,"loss_reason":null,"share_percent":30});
    for (k, val) in over.as_object().unwrap() {
        v[k] = val.clone();
    }
    v
}

/// A provisional record for 山田 太郎 (not identified: found by search) on `service`, `total` yen,
/// `share` % collected; tests change the declaration as they need.
fn record(service: &str, total: u64, share: u8) -> ProvisionalRecord {
    ProvisionalRecord {
        record_id: "1310000001-e1-000001".into(),
        created_at: "2024-01-01T00:00:00Z".parse().unwrap(),
        declared: Declaration {
            name: "山田　太郎".into(),
            name_kana: Some("ヤマダ　タロウ".into()),
            birth_date: d("1980-04-01"),
            sex: Sex::Male,
            address: None,
            insurer_name: None,
            insurance_type: None,
            employer: None,
            contact: None,
            share_percent: None,
        },
        person_id: None,
        service_date: d(service),
        total_fee_yen: total,
        share_percent: share,
        collected_yen: onshi_fallback::collected_yen(total, share),
        basis: Basis::AgeRule,
        rule: None,
        explanation: String::new(),
        state: RecordState::Sent,
    }
}

fn who(r: &mut ProvisionalRecord, name: &str, kana: &str, birth: &str, sex: Sex) {
    r.declared.name = name.into();
    r.declared.name_kana = Some(kana.into());
    r.declared.birth_date = d(birth);
    r.declared.sex = sex;
}

fn at() -> DateTime<Utc> {
    "2026-01-05T09:00:00Z".parse().unwrap()
}

/// Settles against the registry in memory and against the sled registry + index; both must agree.
fn settle_both(lines: &[Value], r: &ProvisionalRecord) -> Settlement {
    let periods: Vec<Qualification> = lines
        .iter()
        .map(|l| Qualification::from_registry_value(l).unwrap())
        .collect();
    let mem = settle(r, &MemoryRegistry::new(periods.clone()), at()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(Arc::new(SledStore::open(dir.path()).unwrap())).unwrap();
    for q in &periods {
        reg.put(q).unwrap();
    }
    let all: Vec<Qualification> = reg.all_periods().collect::<Result<_, _>>().unwrap();
    let index = SearchIndex::build(&all);
    let live = settle(
        r,
        &IndexedRegistry {
            registry: &reg,
            index: &index,
        },
        at(),
    )
    .unwrap();
    assert_eq!(mem, live, "memory and sled registries disagree");
    let store = EmbeddedStore::open(&dir.path().join("centre")).unwrap();
    store.import(&periods).unwrap();
    let central = settle(r, &StoreView { store: &store }, at()).unwrap();
    assert_eq!(mem, central, "memory registry and central store disagree");
    assert_eq!(mem.settled_at, at());
    assert!(!mem.explanation.is_empty());
    mem
}

fn insurer_of(s: &Settlement) -> &str {
    s.qualification
        .as_ref()
        .expect("a qualification")
        .insurer_number
        .as_str()
}

#[test]
fn the_check_digits_used_here_are_the_ones_domain_md_gives() {
    assert_eq!(ins("0613001"), "06130017");
    assert_eq!(ins("0113001"), "01130012");
    assert_eq!(ins("3913001"), "39130018");
    assert_eq!(ins("13805"), "138057");
}

#[test]
fn confirmed_when_the_collected_share_is_the_registrys() {
    let lines = [line(json!({}))];
    // 12,345 yen at 30 % = 3,703.5 → 3,700 collected, and 30 % is what the registry says.
    let mut r = record("2024-06-10", 12_345, 30);
    r.declared.insurer_name = Some("霞が関健康保険組合".into());
    assert_eq!(r.collected_yen, 3_700);
    let s = settle_both(&lines, &r);
    assert_eq!(s.kind, SettlementKind::Confirmed, "{}", s.explanation);
    assert_eq!(insurer_of(&s), "06130017");
    assert_eq!(
        (s.correct_share_percent, s.due_yen, s.yen),
        (Some(30), Some(3_700), None)
    );
    assert!(s.payer.is_none() && s.candidates.is_empty());
}

#[test]
fn identified_by_person_id_directly_whatever_the_declared_name() {
    let lines = [
        line(json!({})),
        line(
            json!({"person_id":"P0000002","name":"山田　次郎","name_kana":"ヤマダ　ジロウ","branch":"02","relationship":"dependent","birth_date":"1982-01-01"}),
        ),
    ];
    let mut r = record("2024-06-10", 12_345, 30);
    r.person_id = Some(PersonId::parse("P0000002").unwrap());
    // The declaration would find P0000001; the person id decides.
    let s = settle_both(&lines, &r);
    assert_eq!(s.kind, SettlementKind::Confirmed, "{}", s.explanation);
    assert_eq!(
        s.qualification.as_ref().unwrap().person_id.as_str(),
        "P0000002"
    );
    assert!(s.explanation.contains("by person id"), "{}", s.explanation);

    // A person id the registry does not know: insurer unknown, not a search on the declaration.
    r.person_id = Some(PersonId::parse("P9999999").unwrap());
    let s = settle_both(&lines, &r);
    assert_eq!(s.kind, SettlementKind::InsurerUnknown);
    assert!(s.explanation.contains("P9999999"), "{}", s.explanation);
}

#[test]
fn refund_when_30_percent_was_collected_at_70_to_74_and_the_registry_says_20() {
    // Born 1954-03-10: reaches 70 on 2024-03-09, so 70–74 from 2024-04-01.
    let lines = [line(
        json!({"insurer_number":"138057","insurer_name":"千代田区","symbol":"千代","number":"777","branch":null,
        "birth_date":"1954-03-10","acquired_on":"2014-04-01","share_percent":20}),
    )];
    let mut r = record("2024-06-10", 12_345, 30);
    r.declared.birth_date = d("1954-03-10");
    r.declared.insurance_type = Some("国保".into());
    // Collected 30 % = 3,703.5 → 3,700; due 20 % = 2,469 → 2,470; refund 1,230.
    let s = settle_both(&lines, &r);
    assert_eq!(s.kind, SettlementKind::Refund, "{}", s.explanation);
    assert_eq!(insurer_of(&s), "138057");
    assert_eq!(
        (s.correct_share_percent, s.due_yen, s.yen),
        (Some(20), Some(2_470), Some(1_230))
    );
}

#[test]
fn a_full_fee_collection_from_an_unidentified_patient_ends_as_a_refund() {
    let lines = [line(json!({}))];
    let mut r = record("2024-06-10", 8_765, 100);
    r.basis = Basis::UnidentifiedFullFee;
    // Collected 100 % of 8,765 → 8,770 (rounded to 10 yen, 5 up); due 30 % = 2,629.5 → 2,630;
    // refund 6,140.
    assert_eq!(r.collected_yen, 8_770);
    let s = settle_both(&lines, &r);
    assert_eq!(s.kind, SettlementKind::Refund, "{}", s.explanation);
    assert_eq!(
        (s.correct_share_percent, s.due_yen, s.yen),
        (Some(30), Some(2_630), Some(6_140))
    );
}

#[test]
fn charge_when_10_percent_was_collected_from_a_75_plus_patient_whose_share_is_30() {
    let lines = [line(
        json!({"person_id":"P0000009","insurer_number":"39130018","insurer_name":"東京都後期高齢者医療広域連合",
        "symbol":null,"number":"12345678","branch":null,"name":"田中　一郎","name_kana":"タナカ　イチロウ",
        "birth_date":"1945-05-05","acquired_on":"2020-05-05","share_percent":30}),
    )];
    let mut r = record("2024-06-10", 8_765, 10);
    who(
        &mut r,
        "田中　一郎",
        "タナカ　イチロウ",
        "1945-05-05",
        Sex::Male,
    );
    r.declared.insurance_type = Some("後期高齢者".into());
    // Collected 10 % = 876.5 → 880; due 30 % = 2,629.5 → 2,630; charge 1,750.
    let s = settle_both(&lines, &r);
    assert_eq!(s.kind, SettlementKind::Charge, "{}", s.explanation);
    assert_eq!(insurer_of(&s), "39130018");
    assert_eq!(
        (s.correct_share_percent, s.due_yen, s.yen),
        (Some(30), Some(2_630), Some(1_750))
    );
}

#[test]
fn job_change_mid_month_settles_by_the_service_date() {
    // The old card is lost on the 15th (the first day without it); the new insurer's period starts
    // on the 20th. The patient declared the old insurer.
    let new = ins("0113001");
    let lines = [
        line(json!({"lost_on":"2024-10-15","loss_reason":"03"})),
        line(
            json!({"insurer_number":new,"insurer_name":"全国健康保険協会東京支部","symbol":"55","number":"901","branch":"00","acquired_on":"2024-10-20"}),
        ),
    ];
    let at_day = |day: &str| {
        let mut r = record(day, 12_345, 30);
        r.declared.insurer_name = Some("霞が関健康保険組合".into());
        r.declared.insurance_type = Some("健保組合".into());
        settle_both(&lines, &r)
    };

    // The 10th and the 14th: the old insurer, confirmed.
    for day in ["2024-10-10", "2024-10-14"] {
        let s = at_day(day);
        assert_eq!(
            s.kind,
            SettlementKind::Confirmed,
            "{day}: {}",
            s.explanation
        );
        assert_eq!(insurer_of(&s), "06130017", "{day}");
    }

    // The 15th and the 17th: in the gap, insurer unknown to the payer of the declared type, and the
    // explanation shows both periods around the date.
    for day in ["2024-10-15", "2024-10-17"] {
        let s = at_day(day);
        assert_eq!(
            s.kind,
            SettlementKind::InsurerUnknown,
            "{day}: {}",
            s.explanation
        );
        assert_eq!(s.payer.as_deref(), Some(PAYER_SHAHO));
        assert!(s.qualification.is_none() && s.due_yen.is_none() && s.yen.is_none());
        assert!(
            s.explanation
                .contains("ended 2024-10-14 (lost 2024-10-15, reason 03)"),
            "{}",
            s.explanation
        );
        assert!(
            s.explanation
                .contains(&format!("({new}) starts 2024-10-20")),
            "{}",
            s.explanation
        );
    }

    // The 20th: the new insurer; the claim is re-routed with its numbers; the share is the same.
    let s = at_day("2024-10-20");
    assert_eq!(s.kind, SettlementKind::InsurerChanged, "{}", s.explanation);
    let q = s.qualification.as_ref().unwrap();
    assert_eq!(
        (
            q.insurer_number.as_str(),
            q.symbol.as_ref().map(|x| x.as_str()),
            q.number.as_str(),
            q.branch.as_ref().map(|b| b.as_str())
        ),
        (new.as_str(), Some("55"), "901", Some("00"))
    );
    assert_eq!(
        (s.correct_share_percent, s.due_yen, s.yen),
        (Some(30), Some(3_700), None)
    );
    assert!(
        s.explanation.contains("全国健康保険協会東京支部"),
        "{}",
        s.explanation
    );
}

#[test]
fn the_75th_birthday_moves_the_patient_to_the_late_elderly_insurer_that_very_day() {
    // Born 1950-05-05: the 75th birthday is 2025-05-05, when 後期高齢者医療 (法別 39) starts and the
    // municipal insurance is lost.
    let lines = [
        line(
            json!({"person_id":"P0000005","insurer_number":"138057","insurer_name":"千代田区","symbol":"千代","number":"777","branch":null,
            "name":"鈴木　和子","name_kana":"スズキ　カズコ","sex":"female","birth_date":"1950-05-05",
            "acquired_on":"2015-04-01","lost_on":"2025-05-05","loss_reason":"99","share_percent":20}),
        ),
        line(
            json!({"person_id":"P0000005","insurer_number":"39130018","insurer_name":"東京都後期高齢者医療広域連合","symbol":null,"number":"12345678","branch":null,
            "name":"鈴木　和子","name_kana":"スズキ　カズコ","sex":"female","birth_date":"1950-05-05",
            "acquired_on":"2025-05-05","share_percent":10}),
        ),
    ];
    let rec = |day: &str, share: u8, insurer: Option<&str>, kind: Option<&str>| {
        let mut r = record(day, 12_345, share);
        who(
            &mut r,
            "鈴木　和子",
            "スズキ　カズコ",
            "1950-05-05",
            Sex::Female,
        );
        r.declared.insurer_name = insurer.map(Into::into);
        r.declared.insurance_type = kind.map(Into::into);
        r
    };

    // The day before: the municipal 国保 card, 20 % = 2,469 → 2,470 collected: confirmed.
    let s = settle_both(
        &lines,
        &rec("2025-05-04", 20, Some("千代田区"), Some("国保")),
    );
    assert_eq!(s.kind, SettlementKind::Confirmed, "{}", s.explanation);
    assert_eq!(insurer_of(&s), "138057");

    // The birthday itself, the old card shown: re-route to 39130018, and the share is now 10 %:
    // due 1,234.5 → 1,230, collected 2,470, so 1,240 goes back (said in the explanation).
    let s = settle_both(
        &lines,
        &rec("2025-05-05", 20, Some("千代田区"), Some("国保")),
    );
    assert_eq!(s.kind, SettlementKind::InsurerChanged, "{}", s.explanation);
    let q = s.qualification.as_ref().unwrap();
    assert_eq!(
        (
            q.insurer_number.houbetsu(),
            q.symbol.is_none(),
            q.number.as_str()
        ),
        (Some("39"), true, "12345678")
    );
    assert_eq!(
        (s.correct_share_percent, s.due_yen, s.yen),
        (Some(10), Some(1_230), Some(1_240))
    );
    assert!(
        s.explanation.contains("refund 1,240 yen"),
        "{}",
        s.explanation
    );

    // Only the insurance type declared (国保): a different kind from 後期高齢者医療, still a re-route.
    let s = settle_both(&lines, &rec("2025-05-05", 20, None, Some("国民健康保険")));
    assert_eq!(s.kind, SettlementKind::InsurerChanged, "{}", s.explanation);
    assert_eq!(insurer_of(&s), "39130018");

    // Nothing declared about the insurer and 10 % collected (the age rule got it right): confirmed.
    let s = settle_both(&lines, &rec("2025-05-05", 10, None, None));
    assert_eq!(s.kind, SettlementKind::Confirmed, "{}", s.explanation);
    assert_eq!((insurer_of(&s), s.due_yen), ("39130018", Some(1_230)));

    // The new card declared by type on the birthday: the same kind, confirmed.
    let s = settle_both(&lines, &rec("2025-05-05", 10, None, Some("後期高齢者医療")));
    assert_eq!(s.kind, SettlementKind::Confirmed, "{}", s.explanation);
}

#[test]
fn the_preschool_boundary_is_the_31_march_after_reaching_6() {
    // Two dependents on the household's card. Born 2019-04-01: reaches 6 on 2025-03-31 (the day
    // before the birthday), so 20 % until 2025-03-31 and 30 % from 2025-04-01. Born 2019-04-02:
    // reaches 6 on 2025-04-01, so 20 % until 2026-03-31. The registry carries the share by period.
    let child = |pid: &str,
                 branch: &str,
                 name: &str,
                 kana: &str,
                 birth: &str,
                 from: &str,
                 lost: Option<&str>,
                 share: u8| {
        line(
            json!({"person_id":pid,"branch":branch,"relationship":"dependent","name":name,"name_kana":kana,"sex":"female",
            "birth_date":birth,"acquired_on":from,"lost_on":lost,"loss_reason":lost.map(|_| "99"),"share_percent":share}),
        )
    };
    let lines = [
        line(json!({})),
        child(
            "P0000003",
            "03",
            "山田　一花",
            "ヤマダ　イチカ",
            "2019-04-01",
            "2019-04-01",
            Some("2025-04-01"),
            20,
        ),
        child(
            "P0000003",
            "03",
            "山田　一花",
            "ヤマダ　イチカ",
            "2019-04-01",
            "2025-04-01",
            None,
            30,
        ),
        child(
            "P0000004",
            "04",
            "山田　二葉",
            "ヤマダ　フタバ",
            "2019-04-02",
            "2019-04-02",
            Some("2026-04-01"),
            20,
        ),
        child(
            "P0000004",
            "04",
            "山田　二葉",
            "ヤマダ　フタバ",
            "2019-04-02",
            "2026-04-01",
            None,
            30,
        ),
    ];
    // The crafted registry follows DOMAIN.md's rule.
    let policy = SharePolicy::default();
    assert_eq!(
        estimate_share(d("2019-04-01"), d("2025-03-31"), &policy).percent,
        20
    );
    assert_eq!(
        estimate_share(d("2019-04-01"), d("2025-04-01"), &policy).percent,
        30
    );
    assert_eq!(
        estimate_share(d("2019-04-02"), d("2025-04-02"), &policy).percent,
        20
    );

    let rec = |day: &str, share: u8, name: &str, kana: &str, birth: &str| {
        let mut r = record(day, 12_345, share);
        who(&mut r, name, kana, birth, Sex::Female);
        r.declared.insurer_name = Some("霞が関健保".into());
        r
    };

    // Born 1 April, seen on 31 March at 20 % = 2,470: confirmed.
    let s = settle_both(
        &lines,
        &rec(
            "2025-03-31",
            20,
            "山田　一花",
            "ヤマダ　イチカ",
            "2019-04-01",
        ),
    );
    assert_eq!(
        (s.kind, s.correct_share_percent),
        (SettlementKind::Confirmed, Some(20)),
        "{}",
        s.explanation
    );

    // Born 1 April, seen on 1 April (the 6th birthday) and still charged the preschool 20 % (the
    // "31 March after the birthday" slip): due 30 % = 3,700, collected 2,470, charge 1,230.
    let s = settle_both(
        &lines,
        &rec(
            "2025-04-01",
            20,
            "山田　一花",
            "ヤマダ　イチカ",
            "2019-04-01",
        ),
    );
    assert_eq!(s.kind, SettlementKind::Charge, "{}", s.explanation);
    assert_eq!(
        (s.correct_share_percent, s.due_yen, s.yen),
        (Some(30), Some(3_700), Some(1_230))
    );
    assert_eq!(
        s.qualification.as_ref().unwrap().person_id.as_str(),
        "P0000003"
    );

    // Born 2 April, seen on the 6th birthday and charged 30 % (the "from the 6th birthday" slip):
    // still preschool until 2026-03-31, due 20 % = 2,470, collected 3,700, refund 1,230.
    let s = settle_both(
        &lines,
        &rec(
            "2025-04-02",
            30,
            "山田　二葉",
            "ヤマダ　フタバ",
            "2019-04-02",
        ),
    );
    assert_eq!(s.kind, SettlementKind::Refund, "{}", s.explanation);
    assert_eq!(
        (s.correct_share_percent, s.due_yen, s.yen),
        (Some(20), Some(2_470), Some(1_230))
    );
    assert_eq!(
        s.qualification.as_ref().unwrap().person_id.as_str(),
        "P0000004"
    );
}

#[test]
fn nobody_in_the_registry_is_filed_as_insurer_unknown_to_the_payer_of_the_declared_type() {
    let lines = [line(json!({}))];
    let unknown = |kind: Option<&str>, insurer: Option<&str>| {
        let mut r = record("2024-06-10", 12_345, 30);
        who(
            &mut r,
            "高橋　健",
            "タカハシ　ケン",
            "1990-01-01",
            Sex::Male,
        );
        r.declared.insurance_type = kind.map(Into::into);
        r.declared.insurer_name = insurer.map(Into::into);
        settle_both(&lines, &r)
    };
    for (kind, insurer, payer) in [
        (Some("協会けんぽ"), None, PAYER_SHAHO),
        (Some("健保組合"), None, PAYER_SHAHO),
        (Some("共済"), None, PAYER_SHAHO),
        (Some("船員保険"), None, PAYER_SHAHO),
        (Some("国保"), None, PAYER_KOKUHO),
        (Some("国民健康保険"), None, PAYER_KOKUHO),
        (Some("後期高齢者"), None, PAYER_KOKUHO),
        // No type: the insurer name tells the kind.
        (None, Some("府中市国民健康保険"), PAYER_KOKUHO),
    ] {
        let s = unknown(kind, insurer);
        assert_eq!(
            s.kind,
            SettlementKind::InsurerUnknown,
            "{kind:?}: {}",
            s.explanation
        );
        assert_eq!(s.payer.as_deref(), Some(payer), "{kind:?} {insurer:?}");
        assert!(s.qualification.is_none() && s.candidates.is_empty() && s.yen.is_none());
        assert!(s.explanation.contains("不詳請求"), "{}", s.explanation);
    }
    // Nothing to go by: 支払基金, with a note to check.
    let s = unknown(None, None);
    assert_eq!(s.payer.as_deref(), Some(PAYER_SHAHO));
    assert!(s.explanation.contains("by default"), "{}", s.explanation);
}

#[test]
fn namesakes_born_the_same_day_are_ambiguous_until_the_address_or_insurer_decides() {
    let osaka = ins("0127001");
    let hanako = |pid: &str, over: Value| {
        let mut l = line(
            json!({"person_id":pid,"name":"佐藤　花子","name_kana":"サトウ　ハナコ","sex":"female","birth_date":"1985-07-07"}),
        );
        for (k, v) in over.as_object().unwrap() {
            l[k] = v.clone();
        }
        l
    };
    let lines = [
        hanako("P0000010", json!({"number":"1010"})),
        hanako(
            "P0000011",
            json!({"insurer_number":osaka,"insurer_name":"全国健康保険協会大阪支部","symbol":"77","number":"1111",
            "address":"大阪府大阪市北区梅田1-1-1","postal_code":"530-0001"}),
        ),
        // The same name born another year is someone else: never a candidate.
        hanako(
            "P0000012",
            json!({"number":"1212","birth_date":"1960-01-01"}),
        ),
    ];
    let rec = || {
        let mut r = record("2024-06-10", 12_345, 30);
        who(
            &mut r,
            "佐藤　花子",
            "サトウ　ハナコ",
            "1985-07-07",
            Sex::Female,
        );
        r
    };

    // Name, reading, birth date and sex only: both score alike.
    let s = settle_both(&lines, &rec());
    assert_eq!(s.kind, SettlementKind::Ambiguous, "{}", s.explanation);
    let ids: Vec<&str> = s.candidates.iter().map(|c| c.person_id.as_str()).collect();
    assert_eq!(ids, ["P0000010", "P0000011"]);
    assert_eq!(
        s.candidates[0].qualification.insurer_number.as_str(),
        "06130017"
    );
    assert_eq!(s.candidates[1].qualification.insurer_number.as_str(), osaka);
    assert!(s.candidates.iter().all(|c| c.score > 0.99));
    assert!(s.qualification.is_none() && s.due_yen.is_none() && s.payer.is_none());

    // With the address: the one in Osaka, confirmed against her qualification.
    let mut r = rec();
    r.declared.address = Some("大阪府大阪市北区梅田1-1-1".into());
    let s = settle_both(&lines, &r);
    assert_eq!(s.kind, SettlementKind::Confirmed, "{}", s.explanation);
    assert_eq!(insurer_of(&s), osaka);
    assert_eq!(
        s.qualification.as_ref().unwrap().person_id.as_str(),
        "P0000011"
    );

    // With the insurer name alone (協会けんぽ is in 全国健康保険協会大阪支部): the same person.
    let mut r = rec();
    r.declared.insurer_name = Some("協会けんぽ".into());
    let s = settle_both(&lines, &r);
    assert_eq!(s.kind, SettlementKind::Confirmed, "{}", s.explanation);
    assert_eq!(
        s.qualification.as_ref().unwrap().person_id.as_str(),
        "P0000011"
    );
}

#[test]
fn settlements_serialise_with_the_contract_names() {
    let lines = [line(json!({}))];
    let s = settle_both(&lines, &record("2024-06-10", 12_345, 20));
    assert_eq!(s.kind, SettlementKind::Charge);
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["kind"], "charge");
    // 30 % = 3,700 due, 20 % = 2,469 → 2,470 collected: 1,230 more.
    assert_eq!(
        (v["due_yen"].as_u64(), v["yen"].as_u64()),
        (Some(3_700), Some(1_230))
    );
}

#[test]
fn a_near_match_is_shown_to_staff_not_taken() {
    let lines = [line(json!({}))];
    // The birth date typed with two digits swapped (04-10 for 04-01): a slip, shown, never taken.
    let mut r = record("2024-06-10", 12_345, 30);
    r.declared.birth_date = d("1980-04-10");
    let s = settle_both(&lines, &r);
    assert_eq!(s.kind, SettlementKind::Ambiguous, "{}", s.explanation);
    assert_eq!(s.candidates.len(), 1);
    assert_eq!(s.candidates[0].person_id.as_str(), "P0000001");
    assert!(
        s.explanation.contains("closely enough"),
        "{}",
        s.explanation
    );

    // One kanji of the given name wrong and no reading: shown, never taken.
    let mut r = record("2024-06-10", 12_345, 30);
    r.declared.name = "山田　太朗".into();
    r.declared.name_kana = None;
    let s = settle_both(&lines, &r);
    assert_eq!(
        (s.kind, s.candidates.len()),
        (SettlementKind::Ambiguous, 1),
        "{}",
        s.explanation
    );

    // The exact name with a wholly different birth date is someone else: insurer unknown.
    let mut r = record("2024-06-10", 12_345, 30);
    r.declared.birth_date = d("1975-12-25");
    let s = settle_both(&lines, &r);
    assert_eq!(s.kind, SettlementKind::InsurerUnknown, "{}", s.explanation);
}

/// Issue 15: staff choose one of two namesakes; settling again against the chosen person finds her
/// qualification valid on the service date, whatever the declaration left open.
#[test]
fn settling_again_against_the_chosen_namesake_uses_her_qualification_on_the_service_date() {
    use onshi_reconciler::settlement::settle_chosen;
    let osaka = ins("0127001");
    let hanako = |pid: &str, over: Value| {
        let mut l = line(
            json!({"person_id":pid,"name":"佐藤　花子","name_kana":"サトウ　ハナコ","sex":"female","birth_date":"1985-07-07"}),
        );
        for (k, v) in over.as_object().unwrap() {
            l[k] = v.clone();
        }
        l
    };
    let lines = [
        hanako("P0000010", json!({"number":"1010"})),
        // In Osaka, 協会けんぽ, and aged 70+ share 20 % (crafted: the share decides the money).
        hanako(
            "P0000011",
            json!({"insurer_number":osaka,"insurer_name":"全国健康保険協会大阪支部","symbol":"77","number":"1111",
            "address":"大阪府大阪市北区梅田1-1-1","postal_code":"530-0001","share_percent":20}),
        ),
    ];
    let periods: Vec<Qualification> = lines
        .iter()
        .map(|l| Qualification::from_registry_value(l).unwrap())
        .collect();
    let reg = MemoryRegistry::new(periods);
    let mut r = record("2024-06-10", 12_345, 30);
    who(
        &mut r,
        "佐藤　花子",
        "サトウ　ハナコ",
        "1985-07-07",
        Sex::Female,
    );
    assert_eq!(
        settle(&r, &reg, at()).unwrap().kind,
        SettlementKind::Ambiguous
    );

    // 12,345 yen at 30 % collected = 3,700; the first is at 30 %: confirmed.
    let s = settle_chosen(&r, &PersonId::parse("P0000010").unwrap(), &reg, at()).unwrap();
    assert_eq!(s.kind, SettlementKind::Confirmed, "{}", s.explanation);
    assert_eq!(insurer_of(&s), "06130017");
    assert!(
        s.explanation.contains("chosen by staff"),
        "{}",
        s.explanation
    );
    assert!(s.candidates.is_empty());

    // The second is at 20 %: 12,345 × 20 % = 2,469 → 2,470 due, so refund 1,230.
    let s = settle_chosen(&r, &PersonId::parse("P0000011").unwrap(), &reg, at()).unwrap();
    assert_eq!(s.kind, SettlementKind::Refund, "{}", s.explanation);
    assert_eq!(insurer_of(&s), osaka);
    assert_eq!((s.due_yen, s.yen), (Some(2_470), Some(1_230)));
    assert_eq!(
        s.qualification.as_ref().unwrap().person_id.as_str(),
        "P0000011"
    );

    // A person gone from the registry: insurer unknown, not ambiguous again.
    let s = settle_chosen(&r, &PersonId::parse("P0000099").unwrap(), &reg, at()).unwrap();
    assert_eq!(s.kind, SettlementKind::InsurerUnknown, "{}", s.explanation);
    assert!(s.explanation.contains("P0000099"), "{}", s.explanation);
}
