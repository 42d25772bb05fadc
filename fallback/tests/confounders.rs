//! Issue 17: every kind of counter error, as normalisation and as ranking. The registry below
//! holds each trap next to the person: a woman with the same given name and birth date under
//! another surname, 大野/小野 with the same reading but one long vowel, namesakes born the same day
//! told apart only by address or insurer, a foreign resident registered in the alphabet.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::NaiveDate;
use onshi_fallback::index::{
    BirthMatch, NameMatch, Partial, Reason, SexMatch, birth_match, birth_slips,
};
use onshi_fallback::normalize::{
    address_alternatives, address_key, address_score, loose_kana_key, name_key, name_key_chars,
    romaji_to_kana, split_name,
};
use onshi_fallback::{Confidence, SearchIndex, SearchQuery, confidence, settled_without_far};
use onshi_model::Qualification;
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
) -> Qualification {
    Qualification::from_registry_value(&json!({
        "person_id": pid, "card_id": null, "insurer_number": insurer.0, "insurer_name": insurer.1,
        "card_class": "01", "symbol": "1", "number": "1", "branch": "01", "relationship": "insured",
        "name": name, "name_kana": kana, "sex": sex, "birth_date": birth, "address": address,
        "postal_code": null, "acquired_on": "2020-04-01", "lost_on": null, "loss_reason": null,
        "share_percent": 30
    }))
    .unwrap()
}

const KYOKAI: (&str, &str) = ("01130012", "全国健康保険協会東京支部");
const HACHIOJI: (&str, &str) = ("132019", "八王子市");
const ICHINOSEKI: (&str, &str) = ("032094", "一関市");

fn registry() -> Vec<Qualification> {
    vec![
        q(
            "P0000001",
            "佐藤　花子",
            "サトウ　ハナコ",
            "female",
            "1985-03-12",
            "東京都府中市朝日町1-7-15",
            KYOKAI,
        ),
        // Same given name, birth date and sex under another surname, elsewhere.
        q(
            "P0000002",
            "鈴木　花子",
            "スズキ　ハナコ",
            "female",
            "1985-03-12",
            "東京都町田市本町2-2-2",
            KYOKAI,
        ),
        q(
            "P0000003",
            "大野　裕子",
            "オオノ　ユウコ",
            "female",
            "1970-11-05",
            "大阪府豊中市本町1-1-1",
            KYOKAI,
        ),
        q(
            "P0000004",
            "小野　裕子",
            "オノ　ユウコ",
            "female",
            "1970-11-05",
            "大阪府豊中市本町1-1-2",
            KYOKAI,
        ),
        // A foreign resident: the registry name in the alphabet, the reading in katakana.
        q(
            "P0000005",
            "SMITH　JOHN",
            "スミス　ジョン",
            "male",
            "1990-07-04",
            "東京都新宿区西新宿2-8-1",
            KYOKAI,
        ),
        q(
            "P0000006",
            "高橋　健太",
            "タカハシ　ケンタ",
            "male",
            "1992-01-30",
            "東京都新宿区西新宿1-1-1",
            KYOKAI,
        ),
        // Namesakes born the same day, told apart by address or insurer only.
        q(
            "P0000008",
            "佐藤　一郎",
            "サトウ　イチロウ",
            "male",
            "1950-02-02",
            "東京都八王子市元町3-2-1",
            HACHIOJI,
        ),
        q(
            "P0000009",
            "佐藤　一郎",
            "サトウ　イチロウ",
            "male",
            "1950-02-02",
            "埼玉県さいたま市浦和区高砂3-15-7　サンハイツ203",
            KYOKAI,
        ),
        // Born 昭和5年: confused with 平成5年.
        q(
            "P0000010",
            "伊藤　千代",
            "イトウ　チヨ",
            "female",
            "1930-06-01",
            "東京都府中市緑町1-1-1",
            KYOKAI,
        ),
        // Rural address with 大字 and 番地, in a municipality that absorbed 千厩町.
        q(
            "P0000011",
            "千葉　和夫",
            "チバ　カズオ",
            "male",
            "1948-10-10",
            "岩手県一関市大字中山123番地4",
            ICHINOSEKI,
        ),
        q(
            "P0000012",
            "山本　かをる",
            "ヤマモト　カヲル",
            "female",
            "1960-09-09",
            "東京都府中市緑町2-2-2",
            KYOKAI,
        ),
        q(
            "P0000013",
            "服部　拓也",
            "ハットリ　タクヤ",
            "male",
            "1980-12-24",
            "東京都府中市緑町3-3-3",
            KYOKAI,
        ),
        q(
            "P0000014",
            "馬場　純子",
            "ババ　ジュンコ",
            "female",
            "1975-04-15",
            "東京都府中市緑町4-4-4",
            KYOKAI,
        ),
        q(
            "P0000015",
            "上野　ゑみ",
            "ウエノ　ヱミ",
            "female",
            "1940-01-20",
            "東京都府中市緑町5-5-5",
            KYOKAI,
        ),
    ]
}

fn index() -> SearchIndex {
    SearchIndex::build(&registry())
}

fn body(v: serde_json::Value) -> SearchQuery {
    SearchQuery::from_json(&v).unwrap()
}

fn search(ix: &SearchIndex, v: serde_json::Value) -> Vec<onshi_fallback::Candidate> {
    ix.search(&body(v), 5)
}

fn ids(r: &[onshi_fallback::Candidate]) -> Vec<&str> {
    r.iter().map(|c| c.person_id.as_str()).collect()
}

fn first(ix: &SearchIndex, v: serde_json::Value) -> String {
    let r = search(ix, v.clone());
    r.first()
        .map(|c| c.person_id.as_str().to_string())
        .unwrap_or_else(|| panic!("nothing found for {v}"))
}

fn reasons_of(ix: &SearchIndex, v: serde_json::Value) -> Vec<Reason> {
    search(ix, v)[0].reasons.clone()
}

// ----- normalisation -----------------------------------------------------------------------

#[test]
fn names_split_into_family_and_given_at_any_space() {
    assert_eq!(split_name("山田　太郎"), ("山田", "太郎"));
    assert_eq!(split_name(" 山田 太郎 "), ("山田", "太郎"));
    assert_eq!(split_name("山田太郎"), ("山田太郎", ""));
    assert_eq!(split_name("SMITH JOHN PAUL"), ("SMITH", "JOHN PAUL"));
}

#[test]
fn loose_kana_keys_merge_voicing_long_vowels_and_small_kana() {
    let loose = |s: &str| {
        loose_kana_key(&name_key_chars(s))
            .into_iter()
            .collect::<String>()
    };
    // Dakuten and handakuten lost or added.
    assert_eq!(loose("ハバ"), loose("ババ"));
    assert_eq!(loose("ハナ"), loose("パナ"));
    // Long vowels written ー, ウ, オ or dropped.
    for s in ["オオノ", "オーノ", "オウノ", "オノ", "おおの"] {
        assert_eq!(loose(s), "オノ", "{s}");
    }
    for s in ["ユウコ", "ユーコ", "ユコ"] {
        assert_eq!(loose(s), "ユコ", "{s}");
    }
    // Small kana written large; ヂ/ジ, ヅ/ズ, ヲ/オ, ヰ/イ, ヱ/エ (already in the strict key).
    assert_eq!(name_key("ハットリ"), name_key("ハツトリ"));
    assert_eq!(name_key("キャ"), name_key("キヤ"));
    assert_eq!(name_key("ミカヅキ"), name_key("ミカズキ"));
    assert_eq!(name_key("チヂミ"), name_key("チジミ"));
    assert_eq!(name_key("カヲル"), name_key("カオル"));
    assert_eq!(name_key("ヰノ"), name_key("イノ"));
    assert_eq!(name_key("ヱミ"), name_key("エミ"));
    // Two different readings stay apart in the strict key.
    assert_ne!(name_key("オオノ"), name_key("オノ"));
    // Idempotent.
    let once = loose_kana_key(&name_key_chars("ジュンコウ"));
    assert_eq!(loose_kana_key(&once), once);
}

#[test]
fn romaji_reads_as_katakana_hepburn_kunrei_and_passport_spellings() {
    let k = |s: &str| romaji_to_kana(s).unwrap();
    assert_eq!(k("Yamada Taro"), "ヤマダ　タロ");
    assert_eq!(k("HATTORI"), "ハットリ");
    assert_eq!(k("shinbashi"), "シンバシ");
    assert_eq!(k("Ohno"), "オオノ");
    assert_eq!(k("Yūko"), "ユウコ");
    assert_eq!(k("tsuchiya"), "ツチヤ");
    assert_eq!(k("tutiya"), "ツチヤ");
    assert_eq!(k("Kyoko"), "キョコ");
    assert_eq!(romaji_to_kana("山田"), None);
    // The loose keys meet: OHNO, ONO and オーノ.
    let loose = |s: &str| loose_kana_key(&name_key_chars(s));
    assert_eq!(loose(&k("OHNO")), loose("オーノ"));
    assert_eq!(loose(&k("ONO")), loose("オオノ"));
    assert_eq!(loose(&k("YUKO")), loose("ユウコ"));
}

#[test]
fn address_forms_compare_equal_or_contained() {
    let target = address_key("東京都府中市朝日町3丁目15番7号");
    for (typed, want) in [
        // Kanji numerals, 番地 for 番.
        ("府中市朝日町三丁目十五番地七号", 1.0),
        ("府中市朝日町三丁目十五番地", 1.0),
        // The block without the house number.
        ("朝日町3-15", 1.0),
        // Prefecture omitted, city omitted (prefecture written).
        ("府中市朝日町3-15-7", 1.0),
        ("東京都朝日町3-15-7", 1.0),
        // A building after the number.
        ("朝日町3-15-7 サンハイツ203", 0.9),
    ] {
        let s = address_score(&address_key(typed), &target);
        assert!((s - want).abs() < 1e-6, "{typed}: {s}");
    }
    // 大字/字 dropped on either side.
    let rural = address_key("岩手県一関市大字中山123番地4");
    assert_eq!(address_score(&address_key("一関市中山123-4"), &rural), 1.0);
    assert_eq!(
        address_score(&address_key("一関市字中山123番4"), &rural),
        1.0
    );
    // The old name of a merged municipality: 浦和市 → さいたま市浦和区, 千厩町 → 一関市.
    let urawa = address_key("埼玉県さいたま市浦和区高砂3-15-7");
    let alts = address_alternatives(&address_key("浦和市高砂3-15"));
    assert!(address_score(&alts[0], &urawa) < 0.9);
    assert!(
        alts.iter().any(|a| address_score(a, &urawa) == 1.0),
        "{alts:?}"
    );
    let alts = address_alternatives(&address_key("岩手県千厩町中山123番地4"));
    assert!(
        alts.iter().any(|a| address_score(a, &rural) == 1.0),
        "{alts:?}"
    );
    // Not replaced in another prefecture, nor when today's name is already there.
    assert_eq!(
        address_alternatives(&address_key("大阪府浦和市高砂")).len(),
        1
    );
    assert_eq!(
        address_alternatives(&address_key("一関市千厩町千厩")).len(),
        1
    );
}

#[test]
fn birth_dates_a_search_considers() {
    let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    let q = d("1985-03-12");
    let s = birth_slips(q);
    for (x, how) in [
        ("1985-12-03", BirthMatch::Swapped),
        ("1984-03-12", BirthMatch::YearOff),
        ("1986-03-12", BirthMatch::YearOff),
        ("1985-03-13", BirthMatch::Typo),
        ("1958-03-12", BirthMatch::Typo),
        ("1985-03-21", BirthMatch::Typo),
    ] {
        assert!(s.contains(&d(x)), "{x}");
        assert_eq!(birth_match(q, d(x)), how, "{x}");
    }
    // 1979 → 1980 is not one digit, but one year.
    assert_eq!(
        birth_match(d("1979-12-31"), d("1980-12-31")),
        BirthMatch::YearOff
    );
    // 昭和5年 ↔ 平成5年 ↔ 令和5年, 大正5年 ↔ 昭和5年.
    assert_eq!(
        birth_match(d("1993-06-01"), d("1930-06-01")),
        BirthMatch::Era
    );
    assert_eq!(
        birth_match(d("1930-06-01"), d("1993-06-01")),
        BirthMatch::Era
    );
    assert_eq!(
        birth_match(d("1993-06-01"), d("2023-06-01")),
        BirthMatch::Era
    );
    assert_eq!(
        birth_match(d("1916-06-01"), d("1930-06-01")),
        BirthMatch::Era
    );
    assert_eq!(birth_match(q, d("1970-01-01")), BirthMatch::Differs);
    assert!(!s.contains(&q));
    let mut sorted = s.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, s, "sorted, each once");
}

// ----- ranking -----------------------------------------------------------------------------

#[test]
fn a_changed_surname_still_finds_the_person_by_given_name_birth_sex_and_address() {
    let ix = index();
    // Married: the registry still has 佐藤; the address tells her from 鈴木 花子 born the same day.
    let v = json!({"name": "田中 花子", "birth_date": "1985-03-12", "sex": "female", "address": "府中市朝日町1-7-15"});
    let r = search(&ix, v.clone());
    assert_eq!(ids(&r)[..2], ["P0000001", "P0000002"], "{r:?}");
    assert!(
        r[0].reasons
            .contains(&Reason::FamilyName(NameMatch::Differs))
    );
    assert!(r[0].reasons.contains(&Reason::GivenName(NameMatch::Exact)));
    assert!(r[0].reasons.contains(&Reason::Address(Partial::Full)));
    // In kana, the new surname with the given name.
    let v = json!({"name_kana": "たなか はなこ", "birth_date": "S60.3.12", "sex": "female", "address": "朝日町1-7"});
    assert_eq!(first(&ix, v), "P0000001");
}

#[test]
fn the_given_name_alone_often_in_kana_or_the_family_name_alone() {
    let ix = index();
    for v in [
        json!({"name": "はなこ", "birth_date": "1985-03-12", "sex": "female", "address": "府中市朝日町"}),
        json!({"name_kana": "ハナコ", "birth_date": "1985-03-12", "sex": "female", "address": "東京都府中市"}),
        json!({"name": "花子", "birth_date": "1985-03-12", "sex": "female", "insurer_name": "協会けんぽ", "address": "朝日町1-7-15"}),
        json!({"name": "佐藤", "birth_date": "1985-03-12", "sex": "female"}),
        json!({"name_kana": "さとう", "birth_date": "1985-03-12", "sex": "female"}),
    ] {
        assert_eq!(first(&ix, v.clone()), "P0000001", "{v}");
    }
    let r = reasons_of(
        &ix,
        json!({"name_kana": "ハナコ", "birth_date": "1985-03-12", "sex": "female"}),
    );
    assert!(r.contains(&Reason::FamilyName(NameMatch::Missing)), "{r:?}");
    assert!(r.contains(&Reason::GivenName(NameMatch::Exact)), "{r:?}");
}

#[test]
fn mixed_scripts_in_one_field() {
    let ix = index();
    for name in [
        "高橋 けんた",
        "高橋ケンタ",
        "高橋けんた",
        "たかはし 健太",
        "タカハシ健太",
    ] {
        let v = json!({"name": name, "birth_date": "1992-01-30", "sex": "male"});
        let r = search(&ix, v);
        assert_eq!(ids(&r)[0], "P0000006", "{name}");
        assert!((r[0].score - 1.0).abs() < 1e-6, "{name}: {r:?}");
    }
}

#[test]
fn romaji_and_foreign_residents_registered_in_the_alphabet() {
    let ix = index();
    for (name, who) in [
        ("John Smith", "P0000005"),
        ("SMITH JOHN", "P0000005"),
        ("smith john", "P0000005"),
        ("ジョン スミス", "P0000005"),
        ("スミス　ジョン", "P0000005"),
        ("Kenta Takahashi", "P0000006"),
        ("TAKAHASHI KENTA", "P0000006"),
        ("Ohno Yuko", "P0000003"),
        ("Hattori Takuya", "P0000013"),
    ] {
        let birth = match who {
            "P0000005" => "1990-07-04",
            "P0000006" => "1992-01-30",
            "P0000003" => "1970-11-05",
            _ => "1980-12-24",
        };
        let sex = if who == "P0000003" { "female" } else { "male" };
        let v = json!({"name": name, "birth_date": birth, "sex": sex});
        assert_eq!(first(&ix, v), who, "{name}");
    }
    // Given name first: the parts are found crosswise, and said so.
    let r = reasons_of(
        &ix,
        json!({"name": "John Smith", "birth_date": "1990-07-04", "sex": "male"}),
    );
    assert!(r.contains(&Reason::FamilyName(NameMatch::Swapped)), "{r:?}");
}

#[test]
fn kana_variants_find_the_reading_and_keep_oono_apart_from_ono() {
    let ix = index();
    for (kana, who, birth, sex) in [
        ("ハハ シユンコ", "P0000014", "1975-04-15", "female"),
        ("パパ ジュンコ", "P0000014", "1975-04-15", "female"),
        ("ババ ジユンコ", "P0000014", "1975-04-15", "female"),
        ("ハツトリ タクヤ", "P0000013", "1980-12-24", "male"),
        ("はとり たくや", "P0000013", "1980-12-24", "male"),
        ("ヤマモト カオル", "P0000012", "1960-09-09", "female"),
        ("ウエノ エミ", "P0000015", "1940-01-20", "female"),
        ("オーノ ユーコ", "P0000003", "1970-11-05", "female"),
        ("おうの ゆうこ", "P0000003", "1970-11-05", "female"),
        ("オノ ユウコ", "P0000004", "1970-11-05", "female"),
    ] {
        let v = json!({"name_kana": kana, "birth_date": birth, "sex": sex});
        assert_eq!(first(&ix, v), who, "{kana}");
    }
    let r = reasons_of(
        &ix,
        json!({"name_kana": "ハハ ジュンコ", "birth_date": "1975-04-15", "sex": "female"}),
    );
    assert!(r.contains(&Reason::FamilyName(NameMatch::Variant)), "{r:?}");
    // 大野 comes first for オーノ, and 小野 is still shown (one long vowel apart).
    let r = search(
        &ix,
        json!({"name_kana": "オーノ ユウコ", "birth_date": "1970-11-05", "sex": "female"}),
    );
    assert_eq!(ids(&r)[..2], ["P0000003", "P0000004"]);
}

#[test]
fn birth_date_errors_score_lower_but_still_find_the_person() {
    let ix = index();
    let exact = search(
        &ix,
        json!({"name": "佐藤花子", "birth_date": "1985-03-12", "sex": "female"}),
    )[0]
    .score;
    for (date, how) in [
        ("1985-12-03", BirthMatch::Swapped),
        ("1984-03-12", BirthMatch::YearOff),
        ("昭和59年3月12日", BirthMatch::YearOff),
        ("1985-03-13", BirthMatch::Typo),
        ("1958-03-12", BirthMatch::Typo),
    ] {
        let r = search(
            &ix,
            json!({"name": "佐藤花子", "birth_date": date, "sex": "female"}),
        );
        assert_eq!(ids(&r)[0], "P0000001", "{date}");
        assert!(
            r[0].reasons.contains(&Reason::BirthDate(how)),
            "{date}: {:?}",
            r[0].reasons
        );
        assert!(r[0].score < exact, "{date}");
    }
    // 平成5年 said for 昭和5年; and the kana alone with it.
    for v in [
        json!({"name": "伊藤千代", "birth_date": "平成5年6月1日", "sex": "female"}),
        json!({"name_kana": "いとう ちよ", "birth_date": "1993-06-01", "sex": "female"}),
    ] {
        let r = search(&ix, v.clone());
        assert_eq!(ids(&r)[0], "P0000010", "{v}");
        assert!(
            r[0].reasons.contains(&Reason::BirthDate(BirthMatch::Era)),
            "{r:?}"
        );
    }
    // The given name alone with the year off by one.
    let v = json!({"name_kana": "ハナコ", "birth_date": "1986-03-12", "sex": "female", "address": "府中市朝日町1-7-15"});
    assert_eq!(first(&ix, v), "P0000001");
}

#[test]
fn one_mismatching_field_never_hides_a_strong_match() {
    let ix = index();
    // A wrong address, a wrong insurer, an unset sex: each lowers the score, none drops him.
    for v in [
        json!({"name": "高橋健太", "birth_date": "1992-01-30", "sex": "male", "address": "北海道札幌市中央区北1条"}),
        json!({"name": "高橋健太", "birth_date": "1992-01-30", "sex": "male", "insurer_name": "大阪府国保"}),
        json!({"name": "高橋健太", "birth_date": "1992-01-30", "sex": "unset"}),
        json!({"name": "高橋健太", "birth_date": "1992-01-30", "sex": "female"}),
    ] {
        assert_eq!(first(&ix, v.clone()), "P0000006", "{v}");
    }
}

#[test]
fn namesakes_are_decided_by_address_or_insurer_and_said_low_when_they_cannot_be() {
    let ix = index();
    let base = json!({"name": "佐藤一郎", "birth_date": "1950-02-02", "sex": "male"});
    let r = search(&ix, base.clone());
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].score, r[1].score);
    assert_eq!(confidence(&r), Confidence::Low, "namesakes not told apart");
    for (extra, who) in [
        (json!({"address": "八王子市元町3-2-1"}), "P0000008"),
        (json!({"address": "浦和市高砂3-15"}), "P0000009"),
        (
            json!({"address": "さいたま市浦和区高砂三丁目十五番"}),
            "P0000009",
        ),
        (json!({"insurer_name": "八王子市国保"}), "P0000008"),
        (json!({"insurer_name": "協会けんぽ"}), "P0000009"),
    ] {
        let mut v = base.clone();
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = search(&ix, v.clone());
        assert_eq!(ids(&r)[0], who, "{v}");
        assert_ne!(confidence(&r), Confidence::Low, "{v}: {r:?}");
    }
    // The exact birth date decides a namesake born another day.
    let r = search(
        &ix,
        json!({"name": "佐藤花子", "birth_date": "1985-03-12", "sex": "female"}),
    );
    assert_eq!(ids(&r)[0], "P0000001");
    assert_eq!(confidence(&r), Confidence::High);
}

#[test]
fn a_high_confidence_best_is_settled_whatever_anyone_born_on_another_date_matches() {
    // Central search ranks the people born on the query's date (or a misreading of it) first and
    // reads the rest only when those do not settle the answer: a far twin matching every other
    // field must not be able to overtake the best, or come within a high confidence's margin.
    let me = q(
        "P0000101",
        "髙橋　美咲",
        "タカハシ　ミサキ",
        "female",
        "1990-06-21",
        "東京都八王子市元横山町二丁目５番地１２号",
        HACHIOJI,
    );
    let mut twin = me.clone();
    twin.person_id = onshi_model::PersonId::parse("P0000102").unwrap();
    twin.birth_date = NaiveDate::from_ymd_opt(1961, 11, 3).unwrap();
    let every_field = json!({
        "name": "髙橋　美咲", "name_kana": "タカハシ　ミサキ", "birth_date": "1990-06-21",
        "sex": "female", "address": "東京都八王子市元横山町二丁目５番地１２号",
        "insurer_name": "八王子市"
    });
    let dated = search(
        &SearchIndex::build(std::slice::from_ref(&me)),
        every_field.clone(),
    );
    assert!(settled_without_far(&dated), "{dated:?}");
    let all = search(&SearchIndex::build(&[me, twin]), every_field);
    assert_eq!(ids(&all), ["P0000101", "P0000102"], "{all:?}");
    assert_eq!(confidence(&all), Confidence::High, "{all:?}");
    assert!(
        all[1].score + 0.05 < 0.9,
        "the far twin scores {}",
        all[1].score
    );
    // A weak or tied best is not settled: the far candidates are read.
    let given_only = search(
        &index(),
        json!({"name": "健太", "birth_date": "1992-01-30", "sex": "male"}),
    );
    assert!(!settled_without_far(&given_only), "{given_only:?}");
    assert!(!settled_without_far(&[]));
}

#[test]
fn a_weak_best_match_is_reported_low() {
    let ix = index();
    // The family name alone, with a slipped birth date.
    let r = search(
        &ix,
        json!({"name_kana": "ハットリ", "birth_date": "1980-12-25", "sex": "male"}),
    );
    assert_eq!(ids(&r)[0], "P0000013");
    assert_eq!(confidence(&r), Confidence::Low, "{r:?}");
    assert_eq!(confidence(&[]), Confidence::Low);
    // The given name alone, exact: medium at best.
    let r = search(
        &ix,
        json!({"name": "健太", "birth_date": "1992-01-30", "sex": "male"}),
    );
    assert_eq!(ids(&r)[0], "P0000006");
    assert_eq!(confidence(&r), Confidence::Medium, "{r:?}");
}

#[test]
fn a_candidate_whose_sex_and_birth_date_both_differ_is_never_returned() {
    let ix = index();
    for date in ["1985-03-13", "1985-12-03", "1984-03-12", "1970-01-01"] {
        let r = search(
            &ix,
            json!({"name": "佐藤花子", "name_kana": "サトウハナコ", "birth_date": date, "sex": "male"}),
        );
        assert!(!ids(&r).contains(&"P0000001"), "{date}: {r:?}");
    }
    // Either one alone is kept.
    let r = search(
        &ix,
        json!({"name": "佐藤花子", "birth_date": "1985-03-12", "sex": "male"}),
    );
    assert_eq!(ids(&r)[0], "P0000001");
    assert!(r[0].reasons.contains(&Reason::Sex(SexMatch::Differs)));
}

#[test]
fn reasons_keep_the_field_and_match_shape() {
    let ix = index();
    let r = search(
        &ix,
        json!({"name": "John Smith", "birth_date": "1990-04-07", "sex": "male", "address": "西新宿2-8-1"}),
    );
    let v = serde_json::to_value(&r[0].reasons).unwrap();
    assert_eq!(
        v,
        json!([
            {"field": "family_name", "match": "swapped"},
            {"field": "given_name", "match": "swapped"},
            {"field": "birth_date", "match": "swapped"},
            {"field": "sex", "match": "same"},
            {"field": "address", "match": "full"},
        ])
    );
    assert_eq!(
        serde_json::to_value(Confidence::Medium).unwrap(),
        json!("medium")
    );
}
