//! One test per normalisation rule of `onshi_fallback::normalize`, and the laws: keys are
//! idempotent, hiragana and katakana give equal keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use onshi_fallback::normalize::{
    INSURER_ALIASES, VARIANT_KANJI, address_key, address_score, fold_variant, insurer_key,
    insurer_score, kana_key, name_key,
};
use proptest::prelude::*;

#[test]
fn nfkc_and_half_width_kana_with_voicing_marks() {
    assert_eq!(kana_key("ﾔﾏﾀﾞ ﾀﾛｳ"), kana_key("ヤマダ　タロウ"));
    assert_eq!(kana_key("ｶﾞｸ"), "ガク");
    assert_eq!(kana_key("ﾊﾟﾝ"), "パン");
    // Voicing marks typed as separate characters.
    assert_eq!(kana_key("カ゛ク"), "ガク");
    assert_eq!(name_key("ＹＡＭＡＤＡ　taro"), "YAMADATARO");
}

#[test]
fn spaces_of_every_width_and_punctuation_are_dropped() {
    let want = name_key("山田太郎");
    for s in [
        "山田 太郎",
        "山田　太郎",
        " 山田\u{2003}太郎 ",
        "山田\t太郎",
        "山田・太郎",
        "山田\u{200B}太郎",
    ] {
        assert_eq!(name_key(s), want, "{s:?}");
    }
}

#[test]
fn hiragana_folds_to_katakana() {
    assert_eq!(kana_key("やまだ たろう"), kana_key("ヤマダ　タロウ"));
    assert_eq!(name_key("さくら"), name_key("サクラ"));
    assert_eq!(name_key("佐藤　めぐみ"), name_key("佐藤メグミ"));
}

#[test]
fn small_kana_fold_to_large() {
    assert_eq!(kana_key("キョウコ"), kana_key("キヨウコ"));
    assert_eq!(kana_key("ハットリ"), kana_key("ハツトリ"));
    assert_eq!(kana_key("シュン"), kana_key("シユン"));
    assert_eq!(kana_key("ヴァイオリン"), kana_key("ブアイオリン"));
    assert_eq!(kana_key("ヶ"), "ケ");
}

#[test]
fn archaic_and_voiced_kana_fold() {
    assert_eq!(kana_key("モチヅキ"), kana_key("モチズキ"));
    assert_eq!(kana_key("チヂワ"), kana_key("チジワ"));
    assert_eq!(kana_key("ヲノ"), kana_key("オノ"));
}

#[test]
fn long_vowels_compare_equal_in_every_written_form() {
    // The rule: a long mark after a kana is that kana's vowel; オウ → オオ; エイ → エエ.
    let oono = kana_key("オオノ");
    for s in [
        "オーノ",
        "オウノ",
        "ｵｰﾉ",
        "オ－ノ",
        "オ‐ノ",
        "オ−ノ",
        "おおの",
        "おうの",
        "オ〜ノ",
    ] {
        assert_eq!(kana_key(s), oono, "{s}");
    }
    assert_eq!(kana_key("サトウ"), kana_key("サトー"));
    assert_eq!(kana_key("ユウコ"), kana_key("ユーコ"));
    assert_eq!(kana_key("ケイコ"), kana_key("ケーコ"));
    assert_eq!(kana_key("キョウコ"), kana_key("キョーコ"));
    // 小野 and 大野 stay apart (one edit).
    assert_ne!(kana_key("オノ"), oono);
    // A long mark with nothing before it is dropped.
    assert_eq!(kana_key("ーアキ"), "アキ");
}

#[test]
fn variant_kanji_fold_to_one_form() {
    let pairs = [
        ("髙橋", "高橋"),
        ("山﨑", "山崎"),
        ("山嵜", "山崎"),
        ("齋藤", "斎藤"),
        ("齊藤", "斎藤"),
        ("斉藤", "斎藤"),
        ("渡邊", "渡辺"),
        ("渡邉", "渡辺"),
        ("澤田", "沢田"),
        ("櫻井", "桜井"),
        ("廣瀬", "広瀬"),
        ("國分", "国分"),
        ("濱田", "浜田"),
        ("嶋田", "島田"),
        ("小嶌", "小島"),
        ("眞理子", "真理子"),
        ("惠子", "恵子"),
        ("德永", "徳永"),
        ("龍也", "竜也"),
        ("藏本", "蔵本"),
        ("冨田", "富田"),
        ("槇原", "槙原"),
        ("栁田", "柳田"),
        ("曾根", "曽根"),
        ("𠮷田", "吉田"),
        ("瀧澤", "滝沢"),
        ("關", "関"),
        ("榮一", "栄一"),
        ("桒原", "桑原"),
        ("舘野", "館野"),
        ("峯岸", "峰岸"),
        ("\u{FA10}本", "塚本"),
        ("篭谷", "籠谷"),
    ];
    for (variant, standard) in pairs {
        assert_eq!(
            name_key(variant),
            name_key(standard),
            "{variant} vs {standard}"
        );
    }
    // An ideographic variation sequence (邉 + selector) is the base character.
    assert_eq!(name_key("渡邉\u{E0103}"), name_key("渡辺"));
}

#[test]
fn variant_table_is_a_function_onto_standard_forms() {
    for (v, s) in VARIANT_KANJI {
        assert_ne!(v, s);
        assert_eq!(
            fold_variant(*s),
            *s,
            "{s} is both a standard form and a variant"
        );
        assert_eq!(
            VARIANT_KANJI.iter().filter(|(x, _)| x == v).count(),
            1,
            "{v} listed twice"
        );
    }
    assert!(VARIANT_KANJI.len() >= 150);
}

#[test]
fn iteration_marks_repeat() {
    assert_eq!(name_key("佐々木"), name_key("佐佐木"));
    assert_eq!(kana_key("サヽキ"), kana_key("ササキ"));
}

#[test]
fn address_digits_numerals_and_separators() {
    let want = address_key("東京都府中市朝日町1-7-15");
    assert_eq!(want.prefecture, Some(13));
    assert_eq!(want.rest, "府中市朝日町1-7-15");
    for s in [
        "東京都府中市朝日町1丁目7番15号",
        "東京都府中市朝日町一丁目7番15号",
        "東京都府中市朝日町１－７－１５",
        "東京都府中市朝日町1‐7‐15",
        "東京都府中市朝日町1−7−15",
        "東京都府中市朝日町1ー7ー15",
        "東京都府中市朝日町1ｰ7ｰ15",
        "東京都 府中市 朝日町 1の7の15",
        "東京都府中市朝日町一丁目七番十五号",
    ] {
        assert_eq!(address_key(s), want, "{s}");
    }
    assert_eq!(
        address_key("北海道札幌市中央区大通二十三番地").rest,
        "札幌市中央区大通23"
    );
    assert_eq!(
        address_key("長野県軽井沢町大字長者原123番地4").rest,
        "軽井沢町長者原123-4"
    );
    // Place names with numeral kanji are left alone.
    assert_eq!(address_key("三重県四日市市本町1-2").rest, "四日市市本町1-2");
    assert_eq!(
        address_key("千葉県千葉市中央区中央1-1").prefecture,
        Some(12)
    );
    // A drop that makes another rule apply (found by the property test below).
    let k = address_key("大の字");
    assert_eq!(address_key(&k.to_key_string()), k);
}

#[test]
fn address_postal_code_in_front_is_dropped() {
    let want = address_key("東京都府中市朝日町1-7-15");
    assert_eq!(address_key("〒183-0003 東京都府中市朝日町1-7-15"), want);
    assert_eq!(
        address_key("１８３－０００３　東京都府中市朝日町１－７－１５"),
        want
    );
}

#[test]
fn address_ke_ga_no_between_kanji() {
    let want = address_key("東京都千代田区霞が関1-2-2");
    assert_eq!(address_key("東京都千代田区霞ヶ関1-2-2"), want);
    assert_eq!(address_key("東京都千代田区霞ケ関1-2-2"), want);
    assert_eq!(address_key("千代田区霞関1丁目2番2号").rest, want.rest);
}

#[test]
fn address_prefecture_is_optional_and_separate() {
    let full = address_key("東京都府中市朝日町1丁目7番15号");
    let bare = address_key("府中市朝日町1-7-15");
    assert_eq!(bare.prefecture, None);
    assert_eq!(bare.rest, full.rest);
    assert_eq!(address_score(&bare, &full), 1.0);
    // A different prefecture written on both sides never matches.
    let osaka = address_key("大阪府府中市朝日町1-7-15");
    assert_eq!(address_score(&osaka, &full), 0.0);
}

#[test]
fn partial_addresses_match() {
    let reg = address_key("東京都府中市朝日町1丁目7番15号");
    for q in [
        "府中市朝日町",
        "朝日町1-7",
        "朝日町1丁目7番",
        "府中市朝日町一丁目",
        "朝日町1-7-15",
        "東京都府中市",
    ] {
        assert_eq!(address_score(&address_key(q), &reg), 1.0, "{q}");
    }
    // Numbers are not cut in the middle.
    let other = address_key("東京都府中市朝日町1丁目71番2号");
    assert!(address_score(&address_key("朝日町1-7"), &other) < 1.0);
    // A building and room written in the query but not in the registry.
    assert_eq!(
        address_score(&address_key("府中市朝日町1-7-15 サンハイツ101"), &reg),
        0.9
    );
    // And in the registry but not in the query.
    let with_room = address_key("東京都府中市朝日町1-7-15　サンハイツ101");
    assert_eq!(
        address_score(&address_key("府中市朝日町1-7-15"), &with_room),
        1.0
    );
    // Same town, other number: partial credit, less than a match.
    let s = address_score(&address_key("府中市朝日町2-3-4"), &reg);
    assert!(s > 0.0 && s < 0.9, "{s}");
    assert_eq!(address_score(&address_key("八王子市元町"), &reg), 0.0);
}

#[test]
fn insurer_names_match_by_alias_and_part() {
    let kyokai = insurer_key("全国健康保険協会東京支部");
    assert!(insurer_score(&insurer_key("協会けんぽ"), &kyokai) >= 0.9);
    assert!(insurer_score(&insurer_key("協会けんぽ 東京"), &kyokai) >= 0.9);
    assert!(insurer_score(&insurer_key("全国健康保険協会東京支部"), &kyokai) == 1.0);
    assert!(insurer_score(&insurer_key("府中市国保"), &insurer_key("府中市")) >= 0.8);
    assert!(insurer_score(&insurer_key("府中市国民健康保険"), &insurer_key("府中市")) >= 0.8);
    assert!(
        insurer_score(
            &insurer_key("霞が関健保"),
            &insurer_key("霞が関健康保険組合")
        ) >= 0.9
    );
    assert!(
        insurer_score(
            &insurer_key("後期高齢者医療"),
            &insurer_key("東京都後期高齢者医療広域連合")
        ) >= 0.9
    );
    assert!(insurer_score(&insurer_key("財務省共済"), &insurer_key("財務省共済組合")) >= 0.9);
    assert_eq!(
        insurer_score(
            &insurer_key("協会けんぽ"),
            &insurer_key("霞が関健康保険組合")
        ),
        0.0
    );
    assert_eq!(
        insurer_score(&insurer_key("八王子市国保"), &insurer_key("府中市")),
        0.0
    );
}

#[test]
fn insurer_aliases_are_in_key_form() {
    for (from, to) in INSURER_ALIASES {
        assert_eq!(&name_key(from), from);
        assert_eq!(&name_key(to), to);
    }
}

fn kana_string() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            (0x3041u32..=0x3096).prop_map(|c| char::from_u32(c).unwrap_or('あ')),
            (0x30A1u32..=0x30FC).prop_map(|c| char::from_u32(c).unwrap_or('ア')),
            Just('ー'),
            Just(' '),
            Just('　'),
        ],
        0..12,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn any_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            any::<char>(),
            (0x3041u32..=0x30FF).prop_map(|c| char::from_u32(c).unwrap_or('あ')),
            (0xFF61u32..=0xFF9F).prop_map(|c| char::from_u32(c).unwrap_or('ｱ')),
            proptest::sample::select(vec![
                '髙', '﨑', '齋', '邉', '々', '一', '二', '十', '丁', '目', '番', '地', '号', 'の',
                '-', 'ー', '−', '１', '7', '都', '東', '京', '県', '大', '字', 'ケ', '関'
            ]),
        ],
        0..24,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #[test]
    fn name_key_is_idempotent(s in any_text()) {
        let k = name_key(&s);
        prop_assert_eq!(name_key(&k), k);
    }

    #[test]
    fn kana_key_is_idempotent(s in kana_string()) {
        let k = kana_key(&s);
        prop_assert_eq!(kana_key(&k), k);
    }

    #[test]
    fn address_key_is_idempotent(s in any_text()) {
        let k = address_key(&s);
        prop_assert_eq!(address_key(&k.to_key_string()), k);
    }

    #[test]
    fn insurer_key_is_idempotent(s in any_text()) {
        let k = insurer_key(&s);
        prop_assert_eq!(insurer_key(&k), k);
    }

    #[test]
    fn hiragana_and_katakana_give_equal_keys(s in kana_string()) {
        let kata: String = s.chars().map(|c| match c {
            '\u{3041}'..='\u{3096}' => char::from_u32(c as u32 + 0x60).unwrap_or(c),
            _ => c,
        }).collect();
        let hira: String = s.chars().map(|c| match c {
            '\u{30A1}'..='\u{30F6}' => char::from_u32(c as u32 - 0x60).unwrap_or(c),
            _ => c,
        }).collect();
        prop_assert_eq!(kana_key(&kata), kana_key(&s));
        prop_assert_eq!(kana_key(&hira), kana_key(&s));
    }
}
