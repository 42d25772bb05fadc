//! Outage search as reception would use it: typo tolerance, kana vs kanji, variant kanji, partial
//! addresses, era birth dates, birth-date slips, and namesakes told apart by birth date, insurer or
//! address. Plus the `POST /v1/search` body parser and the index's update rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::NaiveDate;
use onshi_fallback::index::{BirthMatch, Reason, birth_slips, osa};
use onshi_fallback::{SearchIndex, SearchQuery};
use onshi_model::{ErrorCode, Qualification, Sex};
use serde_json::json;

#[allow(clippy::too_many_arguments)]
fn q(
    pid: &str,
    name: &str,
    kana: &str,
    sex: &str,
    birth: &str,
    address: &str,
    insurer: (&str, &str),
    acquired: &str,
) -> Qualification {
    Qualification::from_registry_value(&json!({
        "person_id": pid, "card_id": null, "insurer_number": insurer.0, "insurer_name": insurer.1,
        "card_class": "01", "symbol": "1", "number": "1", "branch": "01", "relationship": "insured",
        "name": name, "name_kana": kana, "sex": sex, "birth_date": birth, "address": address,
        "postal_code": null, "acquired_on": acquired, "lost_on": null, "loss_reason": null, "share_percent": 30
    }))
    .unwrap()
}

const KYOKAI: (&str, &str) = ("01130012", "全国健康保険協会東京支部");
const FUCHU: (&str, &str) = ("132068", "府中市");
const KASUMI: (&str, &str) = ("06130017", "霞が関健康保険組合");

fn registry() -> Vec<Qualification> {
    vec![
        q(
            "P0000001",
            "山田　太郎",
            "ヤマダ　タロウ",
            "male",
            "1980-04-01",
            "東京都府中市朝日町1丁目7番15号",
            KYOKAI,
            "2020-04-01",
        ),
        // Namesake, same birth date and sex, other address and insurer.
        q(
            "P0000002",
            "山田　太郎",
            "ヤマダ　タロウ",
            "male",
            "1980-04-01",
            "東京都八王子市元町3-2-1",
            FUCHU,
            "2020-04-01",
        ),
        // Namesake, other birth date.
        q(
            "P0000003",
            "山田　太郎",
            "ヤマダ　タロウ",
            "male",
            "1975-11-20",
            "東京都府中市朝日町1-7-15",
            KYOKAI,
            "2020-04-01",
        ),
        q(
            "P0000004",
            "髙橋　惠子",
            "タカハシ　ケイコ",
            "female",
            "1962-08-09",
            "東京都新宿区西新宿2-8-1",
            KASUMI,
            "2019-01-01",
        ),
        q(
            "P0000005",
            "渡邉　翔太",
            "ワタナベ　ショウタ",
            "male",
            "1990-01-05",
            "東京都千代田区霞が関1-2-2",
            KASUMI,
            "2019-01-01",
        ),
        q(
            "P0000006",
            "大野　さくら",
            "オオノ　サクラ",
            "female",
            "2019-05-01",
            "東京都府中市緑町2-3-4",
            FUCHU,
            "2019-05-01",
        ),
        q(
            "P0000007",
            "小野　さくら",
            "オノ　サクラ",
            "female",
            "2019-05-01",
            "東京都府中市緑町2-3-5",
            FUCHU,
            "2019-05-01",
        ),
        q(
            "P0000008",
            "齋藤　誠",
            "サイトウ　マコト",
            "male",
            "1971-03-12",
            "大阪府大阪市北区梅田1-1-1",
            KYOKAI,
            "2019-01-01",
        ),
        q(
            "P0000009",
            "斉藤　誠",
            "サイトウ　マコト",
            "male",
            "1971-03-21",
            "大阪府大阪市北区梅田2-2-2",
            KYOKAI,
            "2019-01-01",
        ),
    ]
}

fn index() -> SearchIndex {
    SearchIndex::build(&registry())
}

fn query(name: Option<&str>, kana: Option<&str>, birth: &str, sex: Sex) -> SearchQuery {
    SearchQuery {
        name: name.map(String::from),
        name_kana: kana.map(String::from),
        birth_date: onshi_model::parse_date(birth).unwrap(),
        sex,
        insurer_name: None,
        address: None,
        service_date: None,
    }
}

fn top(ix: &SearchIndex, q: &SearchQuery) -> Vec<String> {
    ix.search(q, 5)
        .into_iter()
        .map(|c| c.person_id.as_str().to_string())
        .collect()
}

#[test]
fn exact_query_finds_the_person_with_score_one() {
    let ix = index();
    let r = ix.search(
        &query(
            Some("髙橋　惠子"),
            Some("タカハシ　ケイコ"),
            "1962-08-09",
            Sex::Female,
        ),
        5,
    );
    assert_eq!(r[0].person_id.as_str(), "P0000004");
    assert!((r[0].score - 1.0).abs() < 1e-6, "{}", r[0].score);
    assert!(r[0].reasons.contains(&Reason::BirthDate(BirthMatch::Exact)));
}

#[test]
fn variant_kanji_and_standard_forms_find_each_other() {
    let ix = index();
    for name in ["高橋　恵子", "髙橋恵子", "高橋 惠子"] {
        assert_eq!(
            top(&ix, &query(Some(name), None, "1962-08-09", Sex::Female))[0],
            "P0000004",
            "{name}"
        );
    }
    for name in ["渡辺翔太", "渡邊 翔太", "渡邉　翔太"] {
        assert_eq!(
            top(&ix, &query(Some(name), None, "1990-01-05", Sex::Male))[0],
            "P0000005",
            "{name}"
        );
    }
}

#[test]
fn kana_input_hiragana_half_width_and_in_the_name_field() {
    let ix = index();
    for (name, kana) in [
        (None, Some("たかはし けいこ")),
        (None, Some("ﾀｶﾊｼ ｹｲｺ")),
        (None, Some("タカハシ　ケーコ")),
        (Some("たかはし　けいこ"), None),
        (Some("タカハシケイコ"), None),
    ] {
        let r = top(&ix, &query(name, kana, "1962-08-09", Sex::Female));
        assert_eq!(
            r.first().map(String::as_str),
            Some("P0000004"),
            "{name:?} {kana:?}"
        );
    }
}

#[test]
fn one_character_typos_in_name_or_kana_are_tolerated() {
    let ix = index();
    // Substitution, deletion, insertion, transposition.
    for name in ["高橋敬子", "高橋子", "高橋恵恵子", "橋高恵子"] {
        let r = ix.search(&query(Some(name), None, "1962-08-09", Sex::Female), 5);
        assert_eq!(
            r.first().map(|c| c.person_id.as_str()),
            Some("P0000004"),
            "{name}"
        );
        assert!(r[0].score < 1.0);
    }
    for kana in [
        "タカハシケイユ",
        "タカハケイコ",
        "タカハシケイコウ",
        "タカシハケイコ",
    ] {
        let r = top(&ix, &query(None, Some(kana), "1962-08-09", Sex::Female));
        assert_eq!(r.first().map(String::as_str), Some("P0000004"), "{kana}");
    }
}

#[test]
fn unrelated_names_born_the_same_day_are_not_candidates() {
    let ix = index();
    assert!(top(&ix, &query(Some("鈴木一郎"), None, "1962-08-09", Sex::Male)).is_empty());
}

#[test]
fn era_birth_dates_in_the_query_body() {
    let ix = index();
    for date in ["昭和37年8月9日", "S37.8.9", "19620809", "1962/08/09"] {
        let body = json!({"name": "高橋恵子", "birth_date": date, "sex": "female"});
        let q = SearchQuery::from_json(&body).unwrap();
        assert_eq!(top(&ix, &q)[0], "P0000004", "{date}");
    }
    let body = json!({"name_kana": "ヤマダタロウ", "birth_date": "H2.1.5", "sex": "2"});
    let q = SearchQuery::from_json(&body).unwrap();
    assert_eq!(q.birth_date, NaiveDate::from_ymd_opt(1990, 1, 5).unwrap());
    assert_eq!(q.sex, Sex::Female);
}

#[test]
fn birth_date_decides_between_namesakes() {
    let ix = index();
    let r = ix.search(&query(Some("山田太郎"), None, "1975-11-20", Sex::Male), 5);
    assert_eq!(r[0].person_id.as_str(), "P0000003");
    // The namesakes born on another day come after, with a lower score.
    assert!(r.len() == 3 && r[1].score < r[0].score, "{r:?}");
}

#[test]
fn address_or_insurer_decides_between_namesakes_born_the_same_day() {
    let ix = index();
    let mut q = query(
        Some("山田太郎"),
        Some("ヤマダタロウ"),
        "1980-04-01",
        Sex::Male,
    );
    q.address = Some("府中市朝日町1-7".into());
    assert_eq!(top(&ix, &q)[..2], ["P0000001", "P0000002"]);
    q.address = Some("八王子市元町".into());
    assert_eq!(top(&ix, &q)[..2], ["P0000002", "P0000001"]);
    q.address = None;
    q.insurer_name = Some("府中市国保".into());
    assert_eq!(top(&ix, &q)[..2], ["P0000002", "P0000001"]);
    q.insurer_name = Some("協会けんぽ".into());
    assert_eq!(top(&ix, &q)[..2], ["P0000001", "P0000002"]);
    // Without either they tie, and come in person-id order.
    q.insurer_name = None;
    let r = ix.search(&q, 5);
    assert_eq!(r[0].score, r[1].score);
}

#[test]
fn a_birth_date_with_a_typing_slip_still_finds_the_person() {
    let ix = index();
    // 1962-08-09 typed as 1962-08-06 (one digit), 1962-09-08 (month/day swapped), 1926-08-09.
    for date in ["1962-08-06", "1962-09-08", "1926-08-09", "1962-08-19"] {
        let r = ix.search(&query(Some("高橋恵子"), None, date, Sex::Female), 5);
        assert_eq!(
            r.first().map(|c| c.person_id.as_str()),
            Some("P0000004"),
            "{date}"
        );
        assert!(
            r[0].reasons
                .iter()
                .any(|x| matches!(x, Reason::BirthDate(BirthMatch::Typo | BirthMatch::Swapped))),
            "{date}: {:?}",
            r[0].reasons
        );
        assert!(r[0].score < 0.95);
    }
    // A wholly different birth date: found by the exact name, with a lower score still.
    let r = ix.search(
        &query(
            Some("高橋恵子"),
            Some("タカハシケイコ"),
            "1970-01-01",
            Sex::Female,
        ),
        5,
    );
    assert_eq!(r[0].person_id.as_str(), "P0000004");
    assert!(
        r[0].reasons
            .contains(&Reason::BirthDate(BirthMatch::Differs))
    );
}

#[test]
fn kana_only_query_separates_oono_and_ono() {
    let ix = index();
    assert_eq!(
        top(
            &ix,
            &query(None, Some("オーノサクラ"), "2019-05-01", Sex::Female)
        )[0],
        "P0000006"
    );
    assert_eq!(
        top(
            &ix,
            &query(None, Some("おうの さくら"), "R1.5.1", Sex::Female)
        )[0],
        "P0000006"
    );
    assert_eq!(
        top(
            &ix,
            &query(None, Some("オノサクラ"), "2019-05-01", Sex::Female)
        )[0],
        "P0000007"
    );
}

#[test]
fn sex_differs_lowers_but_keeps_the_candidate() {
    let ix = index();
    let r = ix.search(&query(Some("高橋恵子"), None, "1962-08-09", Sex::Male), 5);
    assert_eq!(r[0].person_id.as_str(), "P0000004");
    assert!(r[0].score < 0.95);
}

#[test]
fn search_body_errors_name_the_field() {
    let cases = [
        (
            json!({"birth_date": "1980-04-01", "sex": "male"}),
            "name",
            ErrorCode::MissingField,
        ),
        (
            json!({"name": "  ", "birth_date": "1980-04-01", "sex": "male"}),
            "name",
            ErrorCode::MissingField,
        ),
        (
            json!({"name": "・・", "birth_date": "1980-04-01", "sex": "male"}),
            "name",
            ErrorCode::InvalidCharacter,
        ),
        (
            json!({"name": "山田", "sex": "male"}),
            "birth_date",
            ErrorCode::MissingField,
        ),
        (
            json!({"name": "山田", "birth_date": "1980-02-30", "sex": "male"}),
            "birth_date",
            ErrorCode::InvalidDate,
        ),
        (
            json!({"name": "山田", "birth_date": "1980-02-01", "sex": "x"}),
            "sex",
            ErrorCode::OutOfRange,
        ),
        (
            json!({"name": "山田", "birth_date": "1980-02-01"}),
            "sex",
            ErrorCode::MissingField,
        ),
        (
            json!({"name": ["x"], "birth_date": "1980-02-01", "sex": "1"}),
            "name",
            ErrorCode::WrongType,
        ),
        (
            json!({"name": "山田", "birth_date": "1980-02-01", "sex": "1", "adress": "x"}),
            "adress",
            ErrorCode::UnknownField,
        ),
        (
            json!({"name": "山田", "birth_date": "1980-02-01", "sex": "1", "address": "a".repeat(201)}),
            "address",
            ErrorCode::InvalidLength,
        ),
        (json!([1]), "", ErrorCode::WrongType),
    ];
    for (body, field, code) in cases {
        let e = SearchQuery::from_json(&body).unwrap_err();
        assert_eq!((e.field.as_str(), e.code), (field, code), "{body}: {e}");
        assert!(e.message.starts_with(field), "{}", e.message);
    }
}

#[test]
fn insert_is_idempotent_and_newer_periods_update_the_entry() {
    let reg = registry();
    let mut ix = SearchIndex::new();
    for p in reg.iter().chain(reg.iter()) {
        ix.insert(p);
    }
    assert_eq!(ix.len(), reg.len());
    let before = top(&ix, &query(Some("山田太郎"), None, "1980-04-01", Sex::Male));
    // A newer period: P0000001 married and moved; the old name no longer finds them exactly.
    let newer = q(
        "P0000001",
        "佐藤　太郎",
        "サトウ　タロウ",
        "male",
        "1980-04-01",
        "東京都町田市本町1-1-1",
        FUCHU,
        "2024-04-01",
    );
    ix.insert(&newer);
    ix.insert(&newer);
    assert_eq!(ix.len(), reg.len());
    assert_eq!(
        top(&ix, &query(Some("佐藤太郎"), None, "1980-04-01", Sex::Male))[0],
        "P0000001"
    );
    let after = top(&ix, &query(Some("山田太郎"), None, "1980-04-01", Sex::Male));
    assert_ne!(before, after);
    assert_eq!(after[0], "P0000002");
    // The older period again changes nothing; its insurer name is still known.
    ix.insert(&reg[0]);
    assert_eq!(
        top(&ix, &query(Some("佐藤太郎"), None, "1980-04-01", Sex::Male))[0],
        "P0000001"
    );
    let mut qk = query(Some("佐藤太郎"), None, "1980-04-01", Sex::Male);
    qk.insurer_name = Some("協会けんぽ".into());
    let r = ix.search(&qk, 1);
    assert!(
        r[0].reasons
            .iter()
            .any(|x| matches!(x, Reason::InsurerName(onshi_fallback::index::Partial::Full))),
        "{r:?}"
    );
    // A corrected birth date moves the person to the new block.
    let corrected = q(
        "P0000004",
        "髙橋　惠子",
        "タカハシ　ケイコ",
        "female",
        "1962-08-10",
        "東京都新宿区西新宿2-8-1",
        KASUMI,
        "2025-01-01",
    );
    ix.insert(&corrected);
    let r = ix.search(&query(Some("高橋恵子"), None, "1962-08-10", Sex::Female), 5);
    assert!(r[0].reasons.contains(&Reason::BirthDate(BirthMatch::Exact)));
}

#[test]
fn limit_is_respected_and_scores_are_in_range() {
    let ix = index();
    let r = ix.search(&query(Some("山田太郎"), None, "1980-04-01", Sex::Male), 1);
    assert_eq!(r.len(), 1);
    for c in ix.search(&query(Some("山田太郎"), None, "1980-04-01", Sex::Unset), 10) {
        assert!((0.0..=1.0).contains(&c.score));
    }
    assert!(
        ix.search(&query(Some("山田太郎"), None, "1980-04-01", Sex::Male), 0)
            .is_empty()
    );
}

#[test]
fn birth_slips_and_edit_distance() {
    let d = NaiveDate::from_ymd_opt(1962, 8, 9).unwrap();
    let s = birth_slips(d);
    assert!(s.contains(&NaiveDate::from_ymd_opt(1962, 9, 8).unwrap()));
    assert!(s.contains(&NaiveDate::from_ymd_opt(1926, 8, 9).unwrap()));
    assert!(s.contains(&NaiveDate::from_ymd_opt(1962, 8, 19).unwrap()));
    assert!(!s.contains(&d));
    assert!(s.len() < 90);
    let c = |s: &str| s.chars().collect::<Vec<_>>();
    assert_eq!(osa(&c("タカハシ"), &c("タカシハ")), 1);
    assert_eq!(osa(&c("abc"), &c("")), 3);
    assert_eq!(osa(&c("kitten"), &c("sitting")), 3);
    let long: Vec<char> = "ア".repeat(60).chars().collect();
    let mut other = long.clone();
    other[30] = 'イ';
    assert_eq!(osa(&long, &other), 1);
}

#[test]
fn synthetic_registry_people_are_found_by_their_own_data() {
    let today = NaiveDate::from_ymd_opt(2025, 6, 15).unwrap();
    let periods = onshi_sync::synth::generate(&onshi_sync::synth::SynthParams {
        people: 3000,
        seed: 5,
        today,
    });
    let ix = SearchIndex::build(&periods);
    assert_eq!(ix.len(), 3000);
    let mut found = 0;
    let mut n = 0;
    for p in periods.iter().step_by(37) {
        n += 1;
        let sq = SearchQuery {
            name: Some(p.name.clone()),
            name_kana: None,
            birth_date: p.birth_date,
            sex: p.sex,
            insurer_name: None,
            address: Some(p.address.clone()),
            service_date: None,
        };
        let r = ix.search(&sq, 5);
        found += usize::from(r.iter().any(|c| c.person_id == p.person_id));
    }
    assert_eq!(found, n);
}

#[test]
fn top_k_equals_the_head_of_the_full_ranking() {
    // The index finishes insurer/address scoring only for candidates that can still reach the top
    // k; that must never change the answer.
    let today = NaiveDate::from_ymd_opt(2025, 6, 15).unwrap();
    let periods = onshi_sync::synth::generate(&onshi_sync::synth::SynthParams {
        people: 2000,
        seed: 9,
        today,
    });
    let ix = SearchIndex::build(&periods);
    for (n, p) in periods.iter().step_by(53).enumerate() {
        let family: String = p.name.split('\u{3000}').next().unwrap_or("").to_string();
        let sq = SearchQuery {
            name: Some(if n % 2 == 0 { family } else { p.name.clone() }),
            name_kana: None,
            birth_date: p.birth_date,
            sex: if n % 3 == 0 { Sex::Unset } else { p.sex },
            insurer_name: (n % 2 == 1).then(|| "協会けんぽ".to_string()),
            address: (n % 4 < 2).then(|| p.address.chars().take(6).collect()),
            service_date: None,
        };
        let all = ix.search(&sq, 10_000);
        for k in [1, 3, 5] {
            let head: Vec<_> = all
                .iter()
                .take(k)
                .map(|c| (c.person_id.clone(), c.score))
                .collect();
            let top: Vec<_> = ix
                .search(&sq, k)
                .into_iter()
                .map(|c| (c.person_id, c.score))
                .collect();
            assert_eq!(top, head, "k={k} {sq:?}");
        }
    }
}
