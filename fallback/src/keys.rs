//! Blocking keys: the name keys a store files a registry period under, and the keys a query is
//! looked up by, made by one function ([`blocking_keys`]) on both sides so that whatever script
//! or kana variant a counter query is typed in, it meets the registry's keys. Central search
//! (the reconciler's store index) blocks its candidates by these keys on the query's birth date
//! and its likely misreadings ([`crate::index::birth_slips`]); the ranking is then the index's.
//!
//! The rules, per field (the name, the kana reading) alike:
//! - the field is cut into its parts at white space; a field of one word that changes script once
//!   (`山田たろう`, `ヤマダ太郎`) is cut at the change;
//! - a part in kana (any kana: hiragana, katakana, half-width) is keyed by its *loose* key
//!   ([`loose_kana_key`]: voicing marks and long vowels taken out, small kana made large, `ヂ`/`ヅ`/
//!   `ヲ`/`ヰ`/`ヱ` folded), so `ユウコ`, `ユーコ`, `ゆこ` and `ユコ` share one key; a part in
//!   romaji (`Yuko`, `OHNO`) is read as kana first ([`romaji_to_kana`]) and keyed the same way,
//!   so a foreign resident's or a passport spelling meets the registry's katakana reading;
//! - any other part (kanji) is keyed by its strict key ([`name_key_chars`]);
//! - each part is a key of its own (the family name alone, the given name alone), and, when there
//!   are several, the whole field is one more (a rare full name is found whatever the birth date);
//! - a field of one word in one script (`鈴木太郎`, `すずきたろう`: no space) may be a family name,
//!   a given name or both run together: besides the word's own key, each of its prefixes and
//!   suffixes is a *split* key, so a changed surname written without a space still meets the
//!   registry's given name.
//!
//! Must never: produce the empty key (a store keeps that for the birth date alone); produce a key
//! longer than [`MAX_KEY_CHARS`]; depend on anything but the text (the same text gives the same
//! keys in every process and every version with the same [`KEYS_VERSION`]).

use crate::normalize::{is_katakana, loose_kana_key, name_key_chars, romaji_to_kana};

/// The version of these rules. A store that files periods under them records it and refiles
/// when it changes.
pub const KEYS_VERSION: i32 = 2;

/// The longest key kept (characters): longer names are cut, on both sides alike.
pub const MAX_KEY_CHARS: usize = 64;

/// The longest one-word field cut into split keys (characters): a longer word is kept whole.
const MAX_SPLIT_CHARS: usize = 12;

/// The keys of a name and its reading ([`blocking_keys`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockingKeys {
    /// The parts' keys and the whole fields' keys, sorted, each once.
    pub keys: Vec<String>,
    /// The prefixes and suffixes of a one-word field (not in `keys`), sorted, each once.
    pub splits: Vec<String>,
}

impl BlockingKeys {
    /// Every key, `keys` then `splits`: what a store files a period under.
    pub fn all(&self) -> impl Iterator<Item = &String> {
        self.keys.iter().chain(self.splits.iter())
    }
}

/// The blocking keys of a name and its kana reading, of a registry period or of a query alike
/// (see the module doc for the rules). Either may be empty.
pub fn blocking_keys(name: &str, kana: &str) -> BlockingKeys {
    let mut keys = Vec::new();
    let mut splits = Vec::new();
    field_keys(name, &mut keys, &mut splits);
    field_keys(kana, &mut keys, &mut splits);
    keys.sort();
    keys.dedup();
    splits.sort();
    splits.dedup();
    splits.retain(|s| keys.binary_search(s).is_err());
    BlockingKeys { keys, splits }
}

/// Where a one-word key changes between kanji and kana, when it does so exactly once
/// (`山田たろう`, not `ヶ` inside a kanji name).
pub(crate) fn script_split(key: &[char]) -> Option<usize> {
    let kana = |c: &char| is_katakana(*c);
    let first = kana(key.first()?);
    let at = key.iter().position(|c| kana(c) != first)?;
    (key[at..].iter().all(|c| kana(c) != first) && at > 0).then_some(at)
}

/// A word as the characters it is keyed from: romaji read as katakana (when it reads), else the
/// strict key.
fn word_chars(word: &str) -> Vec<char> {
    let strict = name_key_chars(word);
    // Latin letters, macrons included (`Yūko`).
    let latin = |c: &char| c.is_alphabetic() && (*c as u32) < 0x250;
    if !strict.is_empty()
        && strict.iter().all(latin)
        && let Some(k) = romaji_to_kana(word)
    {
        let read = name_key_chars(&k);
        if !read.is_empty() {
            return read;
        }
    }
    strict
}

/// The key of one part (or of a whole field): loose when it is all kana, else as it is.
fn key_of(chars: &[char]) -> Option<String> {
    let k: Vec<char> = if !chars.is_empty() && chars.iter().all(|&c| is_katakana(c)) {
        loose_kana_key(chars)
    } else {
        chars.to_vec()
    };
    let k: String = k.into_iter().take(MAX_KEY_CHARS).collect();
    (!k.is_empty()).then_some(k)
}

fn field_keys(field: &str, keys: &mut Vec<String>, splits: &mut Vec<String>) {
    let mut parts: Vec<Vec<char>> = field
        .split(char::is_whitespace)
        .map(word_chars)
        .filter(|w| !w.is_empty())
        .collect();
    let one_word = parts.len() == 1;
    if one_word && let Some(at) = script_split(&parts[0]) {
        let (a, b) = parts[0].split_at(at);
        parts = vec![a.to_vec(), b.to_vec()];
    }
    for p in &parts {
        keys.extend(key_of(p));
    }
    if parts.len() > 1 {
        keys.extend(key_of(&parts.concat()));
    } else if one_word {
        let w = &parts[0];
        if w.len() <= MAX_SPLIT_CHARS {
            for at in 1..w.len() {
                splits.extend(key_of(&w[..at]));
                splits.extend(key_of(&w[at..]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(name: &str, kana: &str) -> Vec<String> {
        blocking_keys(name, kana).keys
    }

    fn meets(query: &BlockingKeys, registry: &BlockingKeys) -> bool {
        query.all().any(|q| registry.all().any(|r| r == q))
    }

    #[test]
    fn a_registry_name_is_keyed_by_each_part_and_the_whole_in_kanji_and_loose_kana() {
        let k = blocking_keys("山田　太郎", "ヤマダ　タロウ");
        assert_eq!(
            k.keys,
            vec!["タロ", "ヤマタ", "ヤマタタロ", "太郎", "山田", "山田太郎"]
        );
        assert!(k.splits.is_empty(), "{k:?}");
        assert!(k.all().all(|s| !s.is_empty()));
    }

    #[test]
    fn a_given_name_alone_in_any_script_meets_the_registry_given_name() {
        let registry = keys("佐藤　優子", "サトウ　ユウコ");
        for q in [
            "優子",
            "ゆうこ",
            "ユウコ",
            "ﾕｳｺ",
            "ユーコ",
            "ゆこ",
            "Yuko",
            "YUUKO",
            "Yūko",
        ] {
            let as_name = keys(q, "");
            let as_kana = keys("", q);
            for k in [as_name, as_kana] {
                assert!(
                    k.iter().any(|x| registry.contains(x)),
                    "{q}: {k:?} vs {registry:?}"
                );
            }
        }
    }

    #[test]
    fn kana_variants_give_the_same_key() {
        // Voicing marks, long vowels, small kana, ヂ/ヅ/ヲ/ヰ/ヱ.
        let same = [
            ("オオノ", &["オーノ", "オウノ", "オノ", "おおの", "ｵｵﾉ"][..]),
            ("ハナコ", &["バナコ", "パナコ", "はなこ"][..]),
            ("イツペイ", &["イッペイ", "いっぺい"][..]),
            ("キヨウコ", &["キョウコ", "キョーコ", "きょうこ"][..]),
            ("ジユン", &["ヂュン", "ぢゅん"][..]),
            ("ミズキ", &["ミヅキ", "みづき"][..]),
            ("オサム", &["ヲサム"][..]),
            ("イオリ", &["ヰオリ"][..]),
            ("エミ", &["ヱミ"][..]),
        ];
        for (registered, variants) in same {
            let r = keys("", registered);
            for v in variants {
                assert_eq!(keys("", v), r, "{v} vs {registered}");
                assert_eq!(keys(v, ""), r, "{v} in the name field vs {registered}");
            }
        }
    }

    #[test]
    fn romaji_gives_the_same_key_as_the_registry_katakana() {
        let registry = keys("大野　裕子", "オオノ　ユウコ");
        for q in [
            "Yuko Ohno",
            "OHNO YUKO",
            "ono yuko",
            "Ōno Yūko",
            "OUNO YUUKO",
        ] {
            let k = keys(q, "");
            assert!(k.contains(&"ユコ".to_string()), "{q}: {k:?}");
            assert!(k.contains(&"オノ".to_string()), "{q}: {k:?}");
            assert!(k.iter().any(|x| registry.contains(x)), "{q}");
        }
        // A foreign resident registered in katakana, asked for in the alphabet.
        let registry = blocking_keys("サントス　マリア", "サントス　マリア");
        assert!(meets(&blocking_keys("Maria", ""), &registry));
        assert!(meets(&blocking_keys("", "MARIA"), &registry));
    }

    #[test]
    fn mixed_scripts_are_cut_at_the_change_of_script() {
        let registry = keys("山田　太郎", "ヤマダ　タロウ");
        for q in [
            "山田たろう",
            "山田タロウ",
            "やまだ太郎",
            "山田 たろう",
            "やまだ 太郎",
        ] {
            let k = keys(q, "");
            assert!(
                k.iter().filter(|x| registry.contains(x)).count() >= 2,
                "{q}: both parts meet the registry: {k:?}"
            );
        }
    }

    #[test]
    fn a_changed_surname_without_a_space_meets_the_given_name_by_a_split_key() {
        let registry = blocking_keys("佐藤　太郎", "サトウ　タロウ");
        for q in ["鈴木太郎", "すずきたろう", "スズキタロー"] {
            let k = blocking_keys(q, "");
            assert!(meets(&k, &registry), "{q}: {k:?}");
            assert!(
                !k.keys.iter().any(|x| registry.keys.contains(x)),
                "{q}: only a split key meets it"
            );
        }
        // A changed surname with a space meets it by a part.
        assert!(meets(&blocking_keys("鈴木 太郎", ""), &registry));
    }

    #[test]
    fn no_key_is_empty_or_too_long() {
        let long = "あ".repeat(200);
        for (n, k) in [("", ""), ("　 ", " "), ("-・", ""), (long.as_str(), "")] {
            let b = blocking_keys(n, k);
            assert!(b.all().all(|s| !s.is_empty()), "{b:?}");
            assert!(b.all().all(|s| s.chars().count() <= MAX_KEY_CHARS), "{b:?}");
        }
        assert_eq!(blocking_keys("", ""), BlockingKeys::default());
    }
}
