//! The registry's answers on crafted cases (the import command line: reconciler/tests/cli.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use onshi_model::{CheckRequest, NaiveDate, Qualification, Validity};
use onshi_sync::registry::Registry;
use onshi_sync::store::SledStore;
use serde_json::{Value, json};

fn d(s: &str) -> NaiveDate {
    onshi_model::parse_date(s).unwrap()
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

fn registry(lines: &[Value]) -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(Arc::new(SledStore::open(dir.path()).unwrap())).unwrap();
    for l in lines {
        reg.put(&Qualification::from_registry_value(l).unwrap())
            .unwrap();
    }
    (dir, reg)
}

fn check(reg: &Registry, body: Value) -> (Validity, Vec<Qualification>) {
    // The registry is judged on any service date, also ones far outside the API's plausibility
    // window around today: read the body as if that date were today.
    let today = body["service_date"].as_str().map_or(d("2026-11-23"), d);
    let req = CheckRequest::from_json(&body, today).unwrap();
    let out = reg.check(&req).unwrap();
    (out.validity, out.qualifications)
}

fn card(
    insurer: &str,
    symbol: Value,
    number: &str,
    branch: Value,
    birth: &str,
    service: &str,
) -> Value {
    json!({"insurance_card":{"insurer_number":insurer,"symbol":symbol,"number":number,"branch":branch},"birth_date":birth,"service_date":service})
}

#[test]
fn validity_before_during_and_after_a_period() {
    let (_d, reg) = registry(&[line(json!({"lost_on":"2023-04-01","loss_reason":"99"}))]);
    let at = |service| {
        check(
            &reg,
            card(
                "06130017",
                "123".into(),
                "4567",
                "01".into(),
                "1980-04-01",
                service,
            ),
        )
    };
    assert_eq!(at("2020-03-31").0, Validity::Invalid, "before acquisition");
    assert_eq!(at("2020-04-01").0, Validity::Valid, "on the day acquired");
    assert_eq!(at("2023-03-31").0, Validity::Valid, "last day");
    let (v, q) = at("2023-04-01");
    assert_eq!(
        v,
        Validity::Invalid,
        "the lost date is the first day without"
    );
    assert_eq!(q[0].lost_on, Some(d("2023-04-01")));
    // The service date may be an era date.
    assert_eq!(at("R4.1.1").0, Validity::Valid);
}

#[test]
fn birth_date_mismatch_is_not_found_as_in_the_real_system() {
    let (_d, reg) = registry(&[line(json!({}))]);
    let (v, q) = check(
        &reg,
        card(
            "06130017",
            "123".into(),
            "4567",
            "01".into(),
            "1980-04-02",
            "2024-01-01",
        ),
    );
    assert_eq!(v, Validity::NotFound);
    assert!(q.is_empty());
    let (v, _) = check(
        &reg,
        card(
            "06130017",
            "123".into(),
            "4568",
            "01".into(),
            "1980-04-01",
            "2024-01-01",
        ),
    );
    assert_eq!(v, Validity::NotFound);
}

#[test]
fn job_change_answers_invalid_newer_exists_with_the_new_period() {
    let (_d, reg) = registry(&[
        line(json!({"lost_on":"2024-10-01","loss_reason":"03"})),
        line(
            json!({"insurer_number":"01130012","insurer_name":"全国健康保険協会東京支部","symbol":"55","number":"901","acquired_on":"2024-10-15"}),
        ),
    ]);
    let (v, q) = check(
        &reg,
        card(
            "06130017",
            "123".into(),
            "4567",
            "01".into(),
            "1980-04-01",
            "2024-11-01",
        ),
    );
    assert_eq!(v, Validity::InvalidNewerExists);
    assert_eq!(q.len(), 2);
    assert_eq!(q[0].insurer_number.as_str(), "06130017");
    assert_eq!(q[1].insurer_number.as_str(), "01130012");
    // In the gap, the old card is lost and the new one not yet acquired.
    let (v, _) = check(
        &reg,
        card(
            "01130012",
            "55".into(),
            "901",
            "01".into(),
            "1980-04-01",
            "2024-10-10",
        ),
    );
    assert_eq!(v, Validity::Invalid);
    let (v, _) = check(
        &reg,
        card(
            "01130012",
            "55".into(),
            "901",
            "01".into(),
            "1980-04-01",
            "2024-10-15",
        ),
    );
    assert_eq!(v, Validity::Valid);
    // Before the change, the old card was valid.
    assert_eq!(
        check(
            &reg,
            card(
                "06130017",
                "123".into(),
                "4567",
                "01".into(),
                "1980-04-01",
                "2024-09-30"
            )
        )
        .0,
        Validity::Valid
    );
}

#[test]
fn dependent_is_found_by_branch_and_old_cards_without_branch_by_birth_date() {
    let (_d, reg) = registry(&[
        line(json!({})),
        line(
            json!({"person_id":"P0000002","branch":"02","relationship":"dependent","name":"山田　花子","name_kana":"ヤマダ　ハナコ","sex":"female","birth_date":"1982-06-10"}),
        ),
        line(
            json!({"person_id":"P0000003","branch":"03","relationship":"dependent","name":"山田　一郎","name_kana":"ヤマダ　イチロウ","birth_date":"2015-01-20"}),
        ),
        line(
            json!({"person_id":"P0000004","branch":"04","relationship":"dependent","name":"山田　二郎","name_kana":"ヤマダ　ジロウ","birth_date":"2015-01-20"}),
        ),
    ]);
    let (v, q) = check(
        &reg,
        card(
            "06130017",
            "123".into(),
            "4567",
            "02".into(),
            "1982-06-10",
            "2025-01-01",
        ),
    );
    assert_eq!(v, Validity::Valid);
    assert_eq!(q[0].name, "山田　花子");
    // The right branch with someone else's birth date is not found.
    assert_eq!(
        check(
            &reg,
            card(
                "06130017",
                "123".into(),
                "4567",
                "02".into(),
                "1980-04-01",
                "2025-01-01"
            )
        )
        .0,
        Validity::NotFound
    );
    // Without the branch, the birth date tells the household apart…
    let (v, q) = check(
        &reg,
        card(
            "06130017",
            "123".into(),
            "4567",
            Value::Null,
            "1982-06-10",
            "2025-01-01",
        ),
    );
    assert_eq!((v, q.len()), (Validity::Valid, 1));
    // …except for twins: several match.
    let (v, q) = check(
        &reg,
        card(
            "06130017",
            "123".into(),
            "4567",
            Value::Null,
            "2015-01-20",
            "2025-01-01",
        ),
    );
    assert_eq!((v, q.len()), (Validity::Multiple, 2));
}

#[test]
fn card_without_symbol_and_my_number_card() {
    let (_d, reg) = registry(&[
        line(
            json!({"person_id":"P0000009","card_id":"C0000009","insurer_number":"39130018","insurer_name":"東京都後期高齢者医療広域連合","symbol":null,"number":"12345678","branch":null,"birth_date":"1945-05-05","acquired_on":"2020-05-05","share_percent":10}),
        ),
        line(
            json!({"person_id":"P0000009","card_id":"C0000009","insurer_number":"138057","insurer_name":"千代田区","symbol":"千代","number":"777","branch":null,"birth_date":"1945-05-05","acquired_on":"2010-04-01","lost_on":"2020-05-05","loss_reason":"99","share_percent":30}),
        ),
    ]);
    let (v, q) = check(
        &reg,
        card(
            "39130018",
            Value::Null,
            "12345678",
            Value::Null,
            "S20.5.5",
            "2025-01-01",
        ),
    );
    assert_eq!((v, q[0].share_percent), (Validity::Valid, 10));
    // A symbol the card does not have does not match.
    assert_eq!(
        check(
            &reg,
            card(
                "39130018",
                "1".into(),
                "12345678",
                Value::Null,
                "1945-05-05",
                "2025-01-01"
            )
        )
        .0,
        Validity::NotFound
    );
    let by_card = |service: &str| check(&reg, json!({"card_id":"C0000009","service_date":service}));
    let (v, q) = by_card("2025-01-01");
    assert_eq!(
        (v, q.len(), q[0].insurer_number.as_str()),
        (Validity::Valid, 1, "39130018")
    );
    let (v, q) = by_card("2015-01-01");
    assert_eq!(
        (v, q[0].insurer_number.as_str()),
        (Validity::Valid, "138057")
    );
    let (v, q) = by_card("2000-01-01");
    assert_eq!((v, q.len()), (Validity::Invalid, 1));
    assert_eq!(
        check(&reg, json!({"card_id":"C0000010"})).0,
        Validity::NotFound
    );
}

#[test]
fn reimport_is_idempotent_and_an_update_replaces_the_period() {
    let (_d, reg) = registry(&[]);
    let text = format!(
        "{}\n{}\n",
        line(json!({})),
        line(json!({"person_id":"P0000002","branch":"02","birth_date":"1990-01-01"}))
    );
    let r1 = reg.import(text.as_bytes()).unwrap();
    assert_eq!(
        (r1.added, r1.updated, r1.unchanged, r1.bad.len()),
        (2, 0, 0, 0)
    );
    let r2 = reg.import(text.as_bytes()).unwrap();
    assert_eq!((r2.added, r2.updated, r2.unchanged), (0, 0, 2));
    assert_eq!(reg.period_count(), 2);
    let lost = format!(
        "{}\n",
        line(json!({"lost_on":"2025-01-01","loss_reason":"01"}))
    );
    let r3 = reg.import(lost.as_bytes()).unwrap();
    assert_eq!((r3.added, r3.updated), (0, 1));
    assert_eq!(reg.period_count(), 2);
    assert_eq!(
        check(
            &reg,
            card(
                "06130017",
                "123".into(),
                "4567",
                "01".into(),
                "1980-04-01",
                "2025-02-01"
            )
        )
        .0,
        Validity::Invalid
    );
}
