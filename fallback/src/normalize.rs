//! Normalisation of what staff type and what the registry holds into comparison keys: names, kana
//! readings, addresses and insurer names. Two spellings that a person at reception would call "the
//! same" must give equal keys (or keys one edit apart); everything here is a pure function of its
//! input. Keys are for matching only: never show one to a user or store one as the person's data.
//!
//! Rules, in order (each has a test in `tests/normalize.rs`):
//! 1. `゛`/`゜` typed as separate marks become combining marks, then NFKC: full-width ASCII and
//!    digits become ASCII, half-width kana become full-width and `ｶﾞ` composes to `ガ`.
//! 2. Spaces of every width, zero-width characters and variation selectors (異体字セレクタ, e.g. 邉󠄂)
//!    are removed; punctuation such as `・` is removed from name keys.
//! 3. Hiragana fold to katakana (`さとう` → `サトウ`); small kana to large (`ァ`→`ア`, `ッ`→`ツ`,
//!    `ャ`→`ヤ`, `ヶ`→`ケ`…); `ヂ`→`ジ`, `ヅ`→`ズ`, `ヲ`→`オ`, `ヰ`→`イ`, `ヱ`→`エ`, `ヴ`→`ブ`.
//! 4. Long vowels: a long-vowel mark (`ー`, `ｰ`, `－`, `‐`, `−`, `～`…) after a kana becomes that
//!    kana's vowel; `ウ` after an o-row kana becomes `オ`, `イ` after an e-row kana becomes `エ`.
//!    So `オオノ`, `オーノ` and `オウノ` all give `オオノ`, and `サトウ`/`サトー` give `サトオ`;
//!    `オノ` (小野) stays one edit away from `オオノ` (大野), so they are not merged.
//! 5. Old and variant kanji fold to one form ([`VARIANT_KANJI`]: 髙→高, 﨑→崎, 齋/齊/斉→斎, …);
//!    `々` and `ヽ` repeat the character before them (`佐々木` = `佐佐木`).
//! 6. Addresses ([`address_key`]): a leading prefecture is split off as its own token; kanji numerals
//!    before 丁目/番/号/-/の become digits (`二十三番` → `23-`); 丁目, 番地, 番, 号, の between digits and
//!    every hyphen form become `-`; 大字/字 are dropped; ケ/ガ/ノ between kanji are dropped
//!    (霞が関 = 霞ヶ関 = 霞ケ関); a postal code written in front (`〒183-0003`) is dropped.
//! 7. Insurer names ([`insurer_key`]): common long and short forms fold to one word (協会けんぽ =
//!    全国健康保険協会, 国保 = 国民健康保険, 健保 = 健康保険組合, 後期高齢 = 後期高齢者医療広域連合,
//!    共済 = 共済組合), brackets are dropped; matching is by containment either way.
//!
//! Every key function is idempotent (`key(key(x)) == key(x)`), checked by property tests.

use unicode_normalization::UnicodeNormalization;

/// Old/variant kanji → the form keys use, as (variant, standard) pairs. No standard form is itself
/// a variant (a test checks), so folding once is enough. Extend here; nothing else needs to change.
pub const VARIANT_KANJI: &[(char, char)] = &[
    // The common surname characters of DOMAIN.md and issue 3.
    ('髙', '高'),
    ('\u{FA11}', '崎'),
    ('嵜', '崎'),
    ('碕', '崎'),
    ('齋', '斎'),
    ('齊', '斎'),
    ('斉', '斎'),
    ('邊', '辺'),
    ('邉', '辺'),
    ('澤', '沢'),
    ('櫻', '桜'),
    ('廣', '広'),
    ('國', '国'),
    ('濱', '浜'),
    ('濵', '浜'),
    ('嶋', '島'),
    ('嶌', '島'),
    ('眞', '真'),
    ('惠', '恵'),
    ('德', '徳'),
    ('龍', '竜'),
    ('藏', '蔵'),
    ('冨', '富'),
    ('槇', '槙'),
    ('栁', '柳'),
    ('曾', '曽'),
    ('\u{20BB7}', '吉'),
    ('瀧', '滝'),
    ('關', '関'),
    ('榮', '栄'),
    ('桒', '桑'),
    ('舘', '館'),
    ('峯', '峰'),
    ('\u{FA10}', '塚'),
    ('篭', '籠'),
    ('渕', '淵'),
    ('崗', '岡'),
    ('檜', '桧'),
    ('邨', '村'),
    ('曻', '昇'),
    ('嶽', '岳'),
    ('寳', '宝'),
    ('寶', '宝'),
    ('巖', '巌'),
    // Other old forms (旧字体) seen in names and addresses.
    ('學', '学'),
    ('會', '会'),
    ('實', '実'),
    ('壽', '寿'),
    ('團', '団'),
    ('與', '与'),
    ('靜', '静'),
    ('將', '将'),
    ('來', '来'),
    ('淺', '浅'),
    ('豐', '豊'),
    ('禮', '礼'),
    ('萬', '万'),
    ('彌', '弥'),
    ('條', '条'),
    ('黑', '黒'),
    ('穗', '穂'),
    ('鐵', '鉄'),
    ('亞', '亜'),
    ('兒', '児'),
    ('圓', '円'),
    ('鷗', '鴎'),
    ('衞', '衛'),
    ('藝', '芸'),
    ('縣', '県'),
    ('莊', '荘'),
    ('澁', '渋'),
    ('顯', '顕'),
    ('檢', '検'),
    ('驛', '駅'),
    ('假', '仮'),
    ('氣', '気'),
    ('參', '参'),
    ('恆', '恒'),
    ('竝', '並'),
    ('晉', '晋'),
    ('齒', '歯'),
    ('樂', '楽'),
    ('藥', '薬'),
    ('佛', '仏'),
    ('傳', '伝'),
    ('兩', '両'),
    ('價', '価'),
    ('劍', '剣'),
    ('勞', '労'),
    ('區', '区'),
    ('卷', '巻'),
    ('嚴', '厳'),
    ('圍', '囲'),
    ('圖', '図'),
    ('壯', '壮'),
    ('奧', '奥'),
    ('寬', '寛'),
    ('專', '専'),
    ('從', '従'),
    ('應', '応'),
    ('戰', '戦'),
    ('擧', '挙'),
    ('敎', '教'),
    ('曉', '暁'),
    ('歸', '帰'),
    ('步', '歩'),
    ('每', '毎'),
    ('滿', '満'),
    ('濟', '済'),
    ('燈', '灯'),
    ('營', '営'),
    ('狹', '狭'),
    ('獨', '独'),
    ('畫', '画'),
    ('當', '当'),
    ('發', '発'),
    ('盡', '尽'),
    ('祿', '禄'),
    ('稻', '稲'),
    ('經', '経'),
    ('綠', '緑'),
    ('總', '総'),
    ('繪', '絵'),
    ('繩', '縄'),
    ('聲', '声'),
    ('聽', '聴'),
    ('臺', '台'),
    ('舊', '旧'),
    ('處', '処'),
    ('號', '号'),
    ('螢', '蛍'),
    ('裝', '装'),
    ('覺', '覚'),
    ('觀', '観'),
    ('譯', '訳'),
    ('讓', '譲'),
    ('豫', '予'),
    ('賣', '売'),
    ('贊', '賛'),
    ('輕', '軽'),
    ('辭', '辞'),
    ('遲', '遅'),
    ('醫', '医'),
    ('鑛', '鉱'),
    ('隨', '随'),
    ('險', '険'),
    ('隱', '隠'),
    ('雙', '双'),
    ('雜', '雑'),
    ('靑', '青'),
    ('顏', '顔'),
    ('驗', '験'),
    ('體', '体'),
    ('髮', '髪'),
    ('黃', '黄'),
    ('默', '黙'),
    ('齡', '齢'),
    ('龜', '亀'),
    ('淨', '浄'),
    ('乘', '乗'),
    ('亂', '乱'),
    ('姬', '姫'),
    ('溫', '温'),
    ('驒', '騨'),
    ('廳', '庁'),
    ('鄕', '郷'),
];

/// The standard form of an old/variant kanji, or the character itself.
pub fn fold_variant(c: char) -> char {
    static TABLE: std::sync::OnceLock<std::collections::HashMap<char, char>> =
        std::sync::OnceLock::new();
    if (c as u32) < 0x4E00 {
        return c;
    }
    *TABLE
        .get_or_init(|| VARIANT_KANJI.iter().copied().collect())
        .get(&c)
        .unwrap_or(&c)
}

fn is_ignorable(c: char) -> bool {
    c.is_whitespace()
        || matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}')
}

/// Long-vowel marks and the dashes people type for them (after NFKC).
fn is_long_mark(c: char) -> bool {
    matches!(
        c,
        'ー' | '-' | '‐' | '‒' | '–' | '—' | '―' | '−' | '~' | '〜' | '∼'
    )
}

fn is_hyphen(c: char) -> bool {
    matches!(c, '-' | '‐' | '‒' | '–' | '—' | '―' | '−' | '﹣' | '⁃')
}

/// One katakana character folded by rule 3 (hiragana, small kana, archaic and voiced variants).
pub fn fold_kana(c: char) -> char {
    let c = match c {
        // Hiragana → katakana (same offset for the whole block, incl. ゔ).
        '\u{3041}'..='\u{3096}' => char::from_u32(c as u32 + 0x60).unwrap_or(c),
        'ゝ' => 'ヽ',
        'ゞ' => 'ヾ',
        _ => c,
    };
    match c {
        'ァ' => 'ア',
        'ィ' => 'イ',
        'ゥ' => 'ウ',
        'ェ' => 'エ',
        'ォ' => 'オ',
        'ッ' => 'ツ',
        'ャ' => 'ヤ',
        'ュ' => 'ユ',
        'ョ' => 'ヨ',
        'ヮ' => 'ワ',
        'ヵ' => 'カ',
        'ヶ' => 'ケ',
        'ㇰ' => 'ク',
        'ㇱ' => 'シ',
        'ㇲ' => 'ス',
        'ㇳ' => 'ト',
        'ㇴ' => 'ヌ',
        'ㇵ' => 'ハ',
        'ㇶ' => 'ヒ',
        'ㇷ' => 'フ',
        'ㇸ' => 'ヘ',
        'ㇹ' => 'ホ',
        'ㇺ' => 'ム',
        'ㇻ' => 'ラ',
        'ㇼ' => 'リ',
        'ㇽ' => 'ル',
        'ㇾ' => 'レ',
        'ㇿ' => 'ロ',
        'ヂ' => 'ジ',
        'ヅ' => 'ズ',
        'ヲ' => 'オ',
        'ヰ' => 'イ',
        'ヱ' => 'エ',
        'ヴ' => 'ブ',
        'ヷ' => 'バ',
        'ヸ' => 'ビ',
        'ヹ' => 'ベ',
        'ヺ' => 'ボ',
        _ => c,
    }
}

/// Whether `c` is a (folded) katakana syllable.
pub fn is_katakana(c: char) -> bool {
    matches!(c, '\u{30A1}'..='\u{30FA}')
}

/// The vowel of a large katakana syllable (ア, イ, ウ, エ, オ), `None` for ン and non-kana.
fn vowel_of(c: char) -> Option<char> {
    const A: &str = "アカガサザタダナハバパマヤラワ";
    const I: &str = "イキギシジチニヒビピミリ";
    const U: &str = "ウクグスズツヌフブプムユル";
    const E: &str = "エケゲセゼテデネヘベペメレ";
    const O: &str = "オコゴソゾトドノホボポモヨロ";
    if !is_katakana(c) {
        return None;
    }
    [(A, 'ア'), (I, 'イ'), (U, 'ウ'), (E, 'エ'), (O, 'オ')]
        .iter()
        .find(|(row, _)| row.contains(c))
        .map(|(_, v)| *v)
}

/// Rule 1: separate voicing marks become combining ones so NFKC composes them; then NFKC.
fn nfkc(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars()
        .map(|c| match c {
            '゛' => '\u{3099}',
            '゜' => '\u{309A}',
            _ => c,
        })
        .nfkc()
}

/// Appends `c` to a key under construction, applying the kana rules (3, 4) and the iteration
/// marks (5) against what is already in the key.
fn push_folded(out: &mut Vec<char>, c: char) {
    let prev = out.last().copied();
    if is_long_mark(c) {
        if let Some(v) = prev.and_then(vowel_of) {
            out.push(v);
        }
        return;
    }
    let c = fold_variant(fold_kana(c));
    match c {
        'ヽ' | 'ヾ' | '々' | '〻' => {
            // An iteration mark repeats the character before it; alone it means nothing.
            if let Some(p) = prev {
                out.push(p);
            }
        }
        'ウ' if prev.and_then(vowel_of) == Some('オ') => out.push('オ'),
        'イ' if prev.and_then(vowel_of) == Some('エ') => out.push('エ'),
        _ => out.push(c),
    }
}

/// The key of a name or a kana reading as characters (see [`name_key`]).
pub fn name_key_chars(s: &str) -> Vec<char> {
    let mut out = Vec::with_capacity(s.len() / 2);
    for c in nfkc(s) {
        if is_ignorable(c) {
            continue;
        }
        if is_long_mark(c) || c.is_alphanumeric() {
            push_folded(&mut out, c.to_ascii_uppercase());
        }
    }
    out
}

/// The matching key of a kanji (or kana, or romaji) name: rules 1–5; family and given name run
/// together, since staff put the space in different places or leave it out.
pub fn name_key(s: &str) -> String {
    name_key_chars(s).into_iter().collect()
}

/// The matching key of a kana reading. The same rules as [`name_key`], so that a reading typed in
/// the name field (`やまだ たろう`) compares equal to the registry's `ヤマダ　タロウ`.
pub fn kana_key(s: &str) -> String {
    name_key(s)
}

/// Whether a key is all kana (then a name typed in kana can be compared with the reading).
pub fn is_kana_key(key: &[char]) -> bool {
    !key.is_empty() && key.iter().all(|&c| is_katakana(c))
}

/// The 47 prefectures, code order (JIS X 0401).
pub const PREFECTURES: [&str; 47] = [
    "北海道",
    "青森県",
    "岩手県",
    "宮城県",
    "秋田県",
    "山形県",
    "福島県",
    "茨城県",
    "栃木県",
    "群馬県",
    "埼玉県",
    "千葉県",
    "東京都",
    "神奈川県",
    "新潟県",
    "富山県",
    "石川県",
    "福井県",
    "山梨県",
    "長野県",
    "岐阜県",
    "静岡県",
    "愛知県",
    "三重県",
    "滋賀県",
    "京都府",
    "大阪府",
    "兵庫県",
    "奈良県",
    "和歌山県",
    "鳥取県",
    "島根県",
    "岡山県",
    "広島県",
    "山口県",
    "徳島県",
    "香川県",
    "愛媛県",
    "高知県",
    "福岡県",
    "佐賀県",
    "長崎県",
    "熊本県",
    "大分県",
    "宮崎県",
    "鹿児島県",
    "沖縄県",
];

/// An address as matching keys: the prefecture (if written) apart, and the rest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AddressKey {
    /// JIS prefecture code 1..=47, when the address starts with a prefecture's name.
    pub prefecture: Option<u8>,
    /// The rest after rules 1–6, e.g. `府中市朝日町1-7-15`.
    pub rest: String,
}

impl AddressKey {
    /// The key as one string (`prefecture code` + `|` + rest), e.g. for display in tests.
    pub fn to_key_string(&self) -> String {
        match self.prefecture {
            Some(p) => format!("{}{}", PREFECTURES[usize::from(p - 1)], self.rest),
            None => self.rest.clone(),
        }
    }
}

const KANJI_DIGITS: &str = "〇一二三四五六七八九";

fn kanji_numeral(c: char) -> bool {
    KANJI_DIGITS.contains(c) || matches!(c, '十' | '百' | '千')
}

/// The value of a run of kanji numerals: positional (`二〇三` = 203) or with 十/百/千 (`二十三` = 23).
fn kanji_number(run: &[char]) -> Option<u32> {
    let digit = |c: char| KANJI_DIGITS.chars().position(|d| d == c).map(|p| p as u32);
    if run.iter().any(|c| matches!(c, '十' | '百' | '千')) {
        let (mut total, mut current) = (0u32, 0u32);
        for &c in run {
            match c {
                '十' | '百' | '千' => {
                    let unit = match c {
                        '十' => 10,
                        '百' => 100,
                        _ => 1000,
                    };
                    total += if current == 0 { 1 } else { current } * unit;
                    current = 0;
                }
                _ => current = current * 10 + digit(c)?,
            }
        }
        Some(total + current)
    } else {
        run.iter()
            .try_fold(0u32, |acc, &c| Some(acc.checked_mul(10)? + digit(c)?))
    }
}

fn is_kanji(c: char) -> bool {
    matches!(c, '\u{3400}'..='\u{9FFF}' | '\u{F900}'..='\u{FAFF}' | '\u{20000}'..='\u{3FFFF}' | '々')
}

/// Rules 1–6 for an address. `東京都府中市朝日町一丁目7番15号` → prefecture 13, `府中市朝日町1-7-15`.
pub fn address_key(s: &str) -> AddressKey {
    // A drop can bring together what another rule reads (大の字 → 大字 → ""), so the rules run
    // until nothing changes; that is what makes the key idempotent. Two rounds in practice.
    let mut prefecture = None;
    let mut cur = s.to_string();
    for _ in 0..8 {
        let (p, rest) = address_round(&cur, prefecture.is_none());
        prefecture = prefecture.or(p);
        if rest == cur {
            break;
        }
        cur = rest;
    }
    AddressKey {
        prefecture,
        rest: cur,
    }
}

/// One round of rules 1–6; a postal code and a prefecture are taken off the front only while no
/// prefecture has been found.
fn address_round(s: &str, strip_front: bool) -> (Option<u8>, String) {
    // Pass 1: rules 1–3 and 5 per character; hyphens unified; long marks after kana as in names.
    let mut chars: Vec<char> = Vec::with_capacity(s.len() / 2);
    for c in nfkc(s) {
        if is_ignorable(c) {
            continue;
        }
        let prev_digit = chars
            .last()
            .is_some_and(|p| p.is_ascii_digit() || kanji_numeral(*p));
        if c == 'ー' && prev_digit || is_hyphen(c) {
            chars.push('-');
        } else if is_long_mark(c) {
            push_folded(&mut chars, c);
        } else if c.is_alphanumeric() {
            push_folded(&mut chars, c.to_ascii_uppercase());
        }
    }
    // A postal code written in front (〒 itself was dropped above as a symbol).
    let postal = |c: &[char]| {
        c.len() > 8
            && c[..3].iter().all(char::is_ascii_digit)
            && c[3] == '-'
            && c[4..8].iter().all(char::is_ascii_digit)
            && !c[8].is_ascii_digit()
    };
    let mut prefecture = None;
    while strip_front && postal(&chars) {
        chars.drain(..8);
    }
    // The prefecture, split off before numerals are read (千葉県 is not 1000葉県).
    for (i, p) in PREFECTURES.iter().enumerate().filter(|_| strip_front) {
        let pc: Vec<char> = p.chars().map(fold_variant).collect();
        if chars.starts_with(&pc) {
            prefecture = Some(i as u8 + 1);
            chars.drain(..pc.len());
            break;
        }
    }
    // Pass 2: numerals, separators, 大字/字, ケ/ガ/ノ between kanji.
    let at = |v: &[char], i: usize, w: &str| {
        w.chars().enumerate().all(|(k, c)| v.get(i + k) == Some(&c))
    };
    let mut out: Vec<char> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if kanji_numeral(c) {
            let start = i;
            let mut end = i;
            while end < chars.len() && kanji_numeral(chars[end]) {
                end += 1;
            }
            let next_is_sep = end >= chars.len() && out.last().is_some_and(|p| *p == '-')
                || ["丁", "番", "号", "-", "ノ", "条", "線", "地割"]
                    .iter()
                    .any(|w| at(&chars, end, w))
                || chars.get(end).is_some_and(char::is_ascii_digit);
            if next_is_sep && let Some(n) = kanji_number(&chars[start..end]) {
                out.extend(n.to_string().chars());
                i = end;
                continue;
            }
            out.extend_from_slice(&chars[start..end]);
            i = end;
            continue;
        }
        let after_digit = out.last().is_some_and(char::is_ascii_digit);
        let next_digit = chars
            .get(i + 1)
            .is_some_and(|n| n.is_ascii_digit() || kanji_numeral(*n));
        if after_digit {
            let sep = ["丁目", "番地", "番", "号", "丁"]
                .iter()
                .find(|w| at(&chars, i, w));
            if let Some(w) = sep {
                out.push('-');
                i += w.chars().count();
                continue;
            }
            if c == 'ノ' && next_digit {
                out.push('-');
                i += 1;
                continue;
            }
        }
        if at(&chars, i, "大字") {
            i += 2;
            continue;
        }
        if c == '字'
            && out
                .last()
                .is_none_or(|p| matches!(p, '町' | '村' | '市' | '区' | '郡'))
        {
            i += 1;
            continue;
        }
        if matches!(c, 'ケ' | 'ガ' | 'ノ')
            && out.last().is_some_and(|p| is_kanji(*p))
            && chars.get(i + 1).is_some_and(|n| is_kanji(*n))
        {
            i += 1;
            continue;
        }
        if c == '-' && (out.is_empty() || out.last() == Some(&'-')) {
            i += 1;
            continue;
        }
        out.push(c);
        i += 1;
    }
    while out.last() == Some(&'-') {
        out.pop();
    }
    (prefecture, out.into_iter().collect())
}

fn find_bounded(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let starts_digit = needle.starts_with(|c: char| c.is_ascii_digit());
    let ends_digit = needle.ends_with(|c: char| c.is_ascii_digit());
    let mut from = 0;
    while let Some(pos) = hay[from..].find(needle) {
        let at = from + pos;
        let before_ok = !starts_digit || !hay[..at].ends_with(|c: char| c.is_ascii_digit());
        let after_ok =
            !ends_digit || !hay[at + needle.len()..].starts_with(|c: char| c.is_ascii_digit());
        if before_ok && after_ok {
            return true;
        }
        from = at + needle.len().max(1);
        while from < hay.len() && !hay.is_char_boundary(from) {
            from += 1;
        }
    }
    false
}

/// How well a (possibly partial) address typed at reception matches a registry address, 0..=1.
/// 1: the query's rest appears in the registry's rest, numbers not cut in the middle (`朝日町1-7`
/// matches `朝日町1-7-15` but not `朝日町1-71`). 0.9: the same after dropping a building/room tail
/// from the query. Otherwise partial credit for the longest leading part found (same town, other
/// number). A prefecture written on both sides must agree.
pub fn address_score(query: &AddressKey, target: &AddressKey) -> f32 {
    address_score_parts(query, target.prefecture, &target.rest)
}

/// [`address_score`] against a target given as its parts (the index keeps them apart).
pub fn address_score_parts(
    query: &AddressKey,
    target_prefecture: Option<u8>,
    target_rest: &str,
) -> f32 {
    if let (Some(a), Some(b)) = (query.prefecture, target_prefecture)
        && a != b
    {
        return 0.0;
    }
    let q = query.rest.as_str();
    let t = target_rest;
    if q.is_empty() {
        return if query.prefecture.is_some() && query.prefecture == target_prefecture {
            0.3
        } else {
            0.0
        };
    }
    if find_bounded(t, q) {
        return 1.0;
    }
    // A building or room written after the house number: cut the query after a house number
    // (a run of digits with a '-' in it) that is followed by more text, and try again.
    let mut run_start: Option<usize> = None;
    let mut cuts = Vec::new();
    for (b, c) in q.char_indices().chain(std::iter::once((q.len(), ' '))) {
        let in_run = c.is_ascii_digit() || c == '-';
        match (in_run, run_start) {
            (true, None) => run_start = Some(b),
            (false, Some(s0)) => {
                let run = q[s0..b].trim_end_matches('-');
                if b < q.len() && run.contains('-') && run.starts_with(|c: char| c.is_ascii_digit())
                {
                    cuts.push(s0 + run.len());
                }
                run_start = None;
            }
            _ => {}
        }
    }
    if cuts.iter().rev().any(|&cut| find_bounded(t, &q[..cut])) {
        return 0.9;
    }
    // The longest leading part of the query found in the registry address.
    let qc: Vec<(usize, char)> = q.char_indices().collect();
    let total = qc.len() as f32;
    for n in (2..qc.len()).rev() {
        let end = qc.get(n).map_or(q.len(), |(b, _)| *b);
        let part = q[..end].trim_end_matches('-');
        if part.chars().count() >= 2 && find_bounded(t, part) {
            return 0.8 * part.chars().count() as f32 / total;
        }
    }
    0.0
}

/// Forms of insurer names folded to one word, longest first (rule 7). Both sides are already in
/// key form (a test checks), so they are used as they are.
pub const INSURER_ALIASES: &[(&str, &str)] = &[
    ("全国健康保険協会", "協会健保"),
    ("協会ケンポ", "協会健保"),
    ("後期高齢者医療広域連合", "後期高齢"),
    ("後期高齢者医療", "後期高齢"),
    ("後期高齢者", "後期高齢"),
    ("国民健康保険組合", "国保組合"),
    ("国民健康保険", "国保"),
    ("健康保険組合", "健保"),
    ("健保組合", "健保"),
    ("健康保険", "健保"),
    ("ケンポ", "健保"),
    ("共済組合", "共済"),
    ("広域連合", ""),
];

/// The matching key of an insurer name: the name rules 1–5 (punctuation and brackets dropped), then
/// the aliases of rule 7.
pub fn insurer_key(s: &str) -> String {
    let mut k = name_key(s);
    for (from, to) in INSURER_ALIASES {
        if k.contains(from) {
            k = k.replace(from, to);
        }
    }
    k
}

/// How well an insurer name typed at reception matches a registry insurer name, 0..=1: equal keys
/// 1; the query inside the registry name (`協会けんぽ` in `全国健康保険協会東京支部`) 0.9; the registry
/// name inside the query (`府中市` in `府中市国保`) 0.8.
pub fn insurer_score(query_key: &str, target_key: &str) -> f32 {
    if query_key.is_empty() || target_key.is_empty() {
        0.0
    } else if query_key == target_key {
        1.0
    } else if target_key.contains(query_key) {
        0.9
    } else if target_key.chars().count() >= 2 && query_key.contains(target_key) {
        0.8
    } else {
        0.0
    }
}

// ---------------------------------------------------------------------------------------------
// Names in parts, loose kana keys, romaji (issue 17)

/// A registry or query name split into family and given name at its first space (any width):
/// the registry writes `FAMILY　GIVEN`. A name without a space is all family (the caller tries
/// other splits when it matters).
pub fn split_name(s: &str) -> (&str, &str) {
    let t = s.trim_matches(|c: char| c.is_whitespace());
    match t.find(char::is_whitespace) {
        Some(i) => {
            let (a, b) = t.split_at(i);
            (a, b.trim_matches(|c: char| c.is_whitespace()))
        }
        None => (t, ""),
    }
}

/// The unvoiced kana of a voiced or semi-voiced one (`ガ`→`カ`, `パ`→`ハ`), else the kana itself.
fn unvoiced(c: char) -> char {
    const VOICED: &str = "ガギグゲゴザジズゼゾダヂヅデドバビブベボパピプペポヴ";
    const BASE: &str = "カキクケコサシスセソタチツテトハヒフヘホハヒフヘホウ";
    VOICED
        .chars()
        .position(|v| v == c)
        .and_then(|i| BASE.chars().nth(i))
        .unwrap_or(c)
}

/// The loose key of a (strict) key: what is left when the usual ways of writing one reading
/// differently are taken out. Voicing marks are dropped (`ハ`/`バ`/`パ` alike) and a vowel that
/// only lengthens the syllable before it is dropped (`オオノ`, `オーノ`, `オウノ`, `オノ` → `オノ`;
/// `ユウコ`, `ユーコ`, `ユコ` → `ユコ`). Small kana, `ヂ`/`ヅ`/`ヲ`/`ヰ`/`ヱ` are already folded by
/// [`name_key_chars`]. It merges readings that differ (大野/小野), so a loose match is a *variant*,
/// never *exact*; non-kana characters pass through unchanged.
pub fn loose_kana_key(key: &[char]) -> Vec<char> {
    let mut out: Vec<char> = Vec::with_capacity(key.len());
    for &c in key {
        let u = unvoiced(c);
        // Only a vowel equal to the one before lengthens it (`オオ`, `ユウ`; `アオ` is two
        // syllables). `エイ` and `オウ` were made `エエ`/`オオ` by the strict rules, so they
        // fall here too.
        let lengthens = matches!(u, 'ア' | 'イ' | 'ウ' | 'エ' | 'オ')
            && out.last().and_then(|p| vowel_of(*p)) == Some(u);
        if lengthens {
            continue;
        }
        out.push(u);
    }
    out
}

/// Romaji → katakana pairs, longest first within each start letter (Hepburn, 訓令式 and the
/// passport spellings of long vowels).
const ROMAJI: &[(&str, &str)] = &[
    ("KYA", "キャ"),
    ("KYU", "キュ"),
    ("KYO", "キョ"),
    ("GYA", "ギャ"),
    ("GYU", "ギュ"),
    ("GYO", "ギョ"),
    ("SHA", "シャ"),
    ("SHU", "シュ"),
    ("SHO", "ショ"),
    ("SHI", "シ"),
    ("SYA", "シャ"),
    ("SYU", "シュ"),
    ("SYO", "ショ"),
    ("CHA", "チャ"),
    ("CHU", "チュ"),
    ("CHO", "チョ"),
    ("CHI", "チ"),
    ("TYA", "チャ"),
    ("TYU", "チュ"),
    ("TYO", "チョ"),
    ("TSU", "ツ"),
    ("NYA", "ニャ"),
    ("NYU", "ニュ"),
    ("NYO", "ニョ"),
    ("HYA", "ヒャ"),
    ("HYU", "ヒュ"),
    ("HYO", "ヒョ"),
    ("MYA", "ミャ"),
    ("MYU", "ミュ"),
    ("MYO", "ミョ"),
    ("RYA", "リャ"),
    ("RYU", "リュ"),
    ("RYO", "リョ"),
    ("BYA", "ビャ"),
    ("BYU", "ビュ"),
    ("BYO", "ビョ"),
    ("PYA", "ピャ"),
    ("PYU", "ピュ"),
    ("PYO", "ピョ"),
    ("JYA", "ジャ"),
    ("JYU", "ジュ"),
    ("JYO", "ジョ"),
    ("ZYA", "ジャ"),
    ("ZYU", "ジュ"),
    ("ZYO", "ジョ"),
    ("DYA", "ヂャ"),
    ("DYU", "ヂュ"),
    ("DYO", "ヂョ"),
    ("JA", "ジャ"),
    ("JU", "ジュ"),
    ("JO", "ジョ"),
    ("JI", "ジ"),
    ("JE", "ジェ"),
    ("FA", "ファ"),
    ("FI", "フィ"),
    ("FE", "フェ"),
    ("FO", "フォ"),
    ("FU", "フ"),
    ("HU", "フ"),
    ("TI", "チ"),
    ("TU", "ツ"),
    ("SI", "シ"),
    ("ZI", "ジ"),
    ("DI", "ヂ"),
    ("DU", "ヅ"),
    ("WO", "ヲ"),
    ("WA", "ワ"),
    ("VA", "バ"),
    ("VI", "ビ"),
    ("VU", "ブ"),
    ("VE", "ベ"),
    ("VO", "ボ"),
    ("KA", "カ"),
    ("KI", "キ"),
    ("KU", "ク"),
    ("KE", "ケ"),
    ("KO", "コ"),
    ("GA", "ガ"),
    ("GI", "ギ"),
    ("GU", "グ"),
    ("GE", "ゲ"),
    ("GO", "ゴ"),
    ("SA", "サ"),
    ("SU", "ス"),
    ("SE", "セ"),
    ("SO", "ソ"),
    ("ZA", "ザ"),
    ("ZU", "ズ"),
    ("ZE", "ゼ"),
    ("ZO", "ゾ"),
    ("TA", "タ"),
    ("TE", "テ"),
    ("TO", "ト"),
    ("DA", "ダ"),
    ("DE", "デ"),
    ("DO", "ド"),
    ("NA", "ナ"),
    ("NI", "ニ"),
    ("NU", "ヌ"),
    ("NE", "ネ"),
    ("NO", "ノ"),
    ("HA", "ハ"),
    ("HI", "ヒ"),
    ("HE", "ヘ"),
    ("HO", "ホ"),
    ("BA", "バ"),
    ("BI", "ビ"),
    ("BU", "ブ"),
    ("BE", "ベ"),
    ("BO", "ボ"),
    ("PA", "パ"),
    ("PI", "ピ"),
    ("PU", "プ"),
    ("PE", "ペ"),
    ("PO", "ポ"),
    ("MA", "マ"),
    ("MI", "ミ"),
    ("MU", "ム"),
    ("ME", "メ"),
    ("MO", "モ"),
    ("YA", "ヤ"),
    ("YU", "ユ"),
    ("YO", "ヨ"),
    ("RA", "ラ"),
    ("RI", "リ"),
    ("RU", "ル"),
    ("RE", "レ"),
    ("RO", "ロ"),
    ("LA", "ラ"),
    ("LI", "リ"),
    ("LU", "ル"),
    ("LE", "レ"),
    ("LO", "ロ"),
    ("A", "ア"),
    ("I", "イ"),
    ("U", "ウ"),
    ("E", "エ"),
    ("O", "オ"),
];

/// A name written in romaji (`Taro Yamada`, `OHNO`, `Yūko`, `shinichi`) as katakana, or `None` when
/// the text is not all Latin letters or does not read as romaji. Passport spellings of long vowels
/// (`OH`, `OU`, `OO`, macrons) become a doubled vowel, which the loose key then merges with `ー`,
/// `ウ` and a dropped vowel. Spaces are kept (as `　`), so the parts stay apart.
pub fn romaji_to_kana(s: &str) -> Option<String> {
    let mut t = String::with_capacity(s.len());
    for c in s.nfkc() {
        match c {
            'ā' | 'Ā' | 'â' | 'Â' => t.push_str("AA"),
            'ī' | 'Ī' | 'î' | 'Î' => t.push_str("II"),
            'ū' | 'Ū' | 'û' | 'Û' => t.push_str("UU"),
            'ē' | 'Ē' | 'ê' | 'Ê' => t.push_str("EE"),
            'ō' | 'Ō' | 'ô' | 'Ô' => t.push_str("OU"),
            '-' | '\'' | '.' => {}
            c if c.is_whitespace() => t.push(' '),
            c if c.is_ascii_alphabetic() => t.push(c.to_ascii_uppercase()),
            _ => return None,
        }
    }
    if !t.chars().any(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let b = t.as_bytes();
    let mut out = String::with_capacity(t.len() * 2);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b' ' {
            if !out.ends_with('　') && !out.is_empty() {
                out.push('　');
            }
            i += 1;
            continue;
        }
        let next = b.get(i + 1).copied();
        // A doubled consonant is ッ (`HATTORI`, `MATCHA` as TCH).
        if c != b'N'
            && !b"AIUEO".contains(&c)
            && (next == Some(c) || (c == b'T' && next == Some(b'C')))
        {
            out.push('ッ');
            i += 1;
            continue;
        }
        // `OH` before a consonant or at the end is a long O (passport style: OHNO, SATOH).
        if c == b'H'
            && out.ends_with(|p: char| vowel_of(p) == Some('オ'))
            && next.is_none_or(|n| !b"AIUEOY".contains(&n))
        {
            out.push('オ');
            i += 1;
            continue;
        }
        // N before a consonant, N' or NN, or at the end: ン.
        if c == b'N' && next.is_none_or(|n| !b"AIUEOY".contains(&n)) {
            out.push('ン');
            i += if next == Some(b'N') && b.get(i + 2).is_none_or(|n| !b"AIUEOY".contains(n)) {
                2
            } else {
                1
            };
            continue;
        }
        let rest = &t[i..];
        let (r, k) = ROMAJI.iter().find(|(r, _)| rest.starts_with(r))?;
        out.push_str(k);
        i += r.len();
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Merged municipalities (issue 17)

/// Municipalities merged into another (平成の大合併 and earlier, and Hamamatsu's 2024 wards), as
/// (prefecture code, the old name, the name addresses now have). A small table of real mergers
/// whose new name the synthetic registry uses; extend here.
pub const MERGED_MUNICIPALITIES: &[(u8, &str, &str)] = &[
    (1, "戸井町", "函館市"),
    (1, "南茅部町", "函館市"),
    (2, "浪岡町", "青森市"),
    (2, "南郷村", "八戸市"),
    (2, "岩木町", "弘前市"),
    (3, "玉山村", "盛岡市"),
    (3, "千厩町", "一関市"),
    (3, "花泉町", "一関市"),
    (4, "河北町", "石巻市"),
    (4, "牡鹿町", "石巻市"),
    (5, "雄和町", "秋田市"),
    (5, "増田町", "横手市"),
    (5, "十文字町", "横手市"),
    (6, "藤島町", "鶴岡市"),
    (6, "温海町", "鶴岡市"),
    (7, "飯野町", "福島市"),
    (7, "平市", "いわき市"),
    (7, "勿来市", "いわき市"),
    (8, "内原町", "水戸市"),
    (8, "谷田部町", "つくば市"),
    (8, "桜村", "つくば市"),
    (8, "十王町", "日立市"),
    (9, "上河内町", "宇都宮市"),
    (10, "大胡町", "前橋市"),
    (10, "群馬町", "高崎市"),
    (10, "榛名町", "高崎市"),
    (11, "浦和市", "さいたま市浦和区"),
    (11, "大宮市", "さいたま市大宮区"),
    (11, "鳩ヶ谷市", "川口市"),
    (12, "沼南町", "柏市"),
    (15, "栃尾市", "長岡市"),
    (15, "高田市", "上越市"),
    (15, "直江津市", "上越市"),
    (16, "八尾町", "富山市"),
    (16, "福岡町", "高岡市"),
    (19, "中道町", "甲府市"),
    (19, "河口湖町", "南都留郡富士河口湖町"),
    (20, "豊野町", "長野市"),
    (20, "梓川村", "松本市"),
    (21, "柳津町", "岐阜市"),
    (21, "墨俣町", "大垣市"),
    (22, "浜松市中区", "浜松市中央区"),
    (22, "浜松市東区", "浜松市中央区"),
    (22, "戸田村", "沼津市"),
    (23, "足助町", "豊田市"),
    (23, "額田町", "岡崎市"),
    (23, "尾西市", "一宮市"),
    (24, "久居市", "津市"),
    (24, "楠町", "四日市市"),
    (25, "志賀町", "大津市"),
    (28, "夢前町", "姫路市"),
    (29, "月ヶ瀬村", "奈良市"),
    (30, "本宮町", "田辺市"),
    (31, "国府町", "鳥取市"),
    (31, "淀江町", "米子市"),
    (32, "宍道町", "松江市"),
    (32, "平田市", "出雲市"),
    (33, "真備町", "倉敷市"),
    (34, "神辺町", "福山市"),
    (35, "菊川町", "下関市"),
    (35, "小郡町", "山口市"),
    (36, "羽ノ浦町", "阿南市"),
    (37, "牟礼町", "高松市"),
    (37, "綾歌町", "丸亀市"),
    (38, "北条市", "松山市"),
    (38, "大三島町", "今治市"),
    (39, "春野町", "高知市"),
    (39, "中村市", "四万十市"),
    (40, "田主丸町", "久留米市"),
    (41, "諸富町", "佐賀市"),
    (41, "呼子町", "唐津市"),
    (42, "野母崎町", "長崎市"),
    (42, "吉井町", "佐世保市"),
    (44, "佐賀関町", "大分市"),
    (45, "佐土原町", "宮崎市"),
    (45, "高城町", "都城市"),
    (46, "喜入町", "鹿児島市"),
    (46, "国分市", "霧島市"),
    (47, "コザ市", "沖縄市"),
];

/// The query's address as written and with each old municipality name it contains replaced by
/// today's (`浦和市高砂` → also `さいたま市浦和区高砂`), in key form; the first is the address itself.
pub fn address_alternatives(a: &AddressKey) -> Vec<AddressKey> {
    // The table in key form, computed once: every search with an address reads it.
    static KEYS: std::sync::OnceLock<Vec<(u8, String, String)>> = std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        MERGED_MUNICIPALITIES
            .iter()
            .map(|(p, old, new)| (*p, address_key(old).rest, address_key(new).rest))
            .filter(|(_, old, _)| !old.is_empty())
            .collect()
    });
    let mut out = vec![a.clone()];
    for (pref, old_key, new_key) in keys {
        if a.prefecture.is_some_and(|p| p != *pref) || !a.rest.contains(old_key.as_str()) {
            continue;
        }
        // Already written with today's name in front (`一関市千厩町…`): nothing to replace.
        if a.rest.contains(&format!("{new_key}{old_key}")) {
            continue;
        }
        out.push(AddressKey {
            prefecture: Some(*pref),
            rest: a.rest.replacen(old_key.as_str(), new_key, 1),
        });
    }
    out
}
