//! The counter-query generator of issue 17: queries written the way staff and patients really get
//! things wrong, one kind of confounder at a time, over the synthetic registry
//! (`onshi_sync::synth`). Seeded and deterministic: the same registry, `per_kind` and seed give
//! the same queries. Shared by `search_bench` (which measures recall per kind) and `gen_queries`
//! (which writes the set as JSON lines, `{"kind","truth","body"}` with `body` a `POST /v1/search`
//! body, for the central-search benchmark). BENCHMARKS.md describes the kinds.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, Write};

use chrono::{Datelike, NaiveDate};
use onshi_fallback::normalize::{MERGED_MUNICIPALITIES, PREFECTURES, name_key};
use onshi_model::{Qualification, Sex};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

/// The kinds, `clean` first; every other kind is a hard one.
pub const KINDS: &[&str] = &[
    "clean",
    "surname_changed",
    "given_only",
    "family_only",
    "mixed_script",
    "romaji",
    "kana_variant",
    "name_typo",
    "birth_swap",
    "birth_year",
    "birth_era",
    "birth_digit",
    "era_conversion",
    "address_form",
    "namesake",
    "combined",
];

/// One generated query.
#[derive(Debug, Clone)]
pub struct GenQuery {
    pub kind: String,
    /// The person id the query is for.
    pub truth: String,
    /// The `POST /v1/search` body.
    pub body: Value,
}

impl GenQuery {
    pub fn to_line(&self) -> String {
        json!({"kind": self.kind, "truth": self.truth, "body": self.body}).to_string()
    }
}

pub fn write_jsonl(queries: &[GenQuery], path: &str) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for q in queries {
        writeln!(f, "{}", q.to_line())?;
    }
    f.flush()
}

pub fn read_jsonl(path: &str) -> std::io::Result<Vec<GenQuery>> {
    let f = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut out = Vec::new();
    for (n, line) in f.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {}: {e}", n + 1),
            )
        })?;
        out.push(GenQuery {
            kind: v["kind"].as_str().unwrap_or("?").to_string(),
            truth: v["truth"].as_str().unwrap_or("").to_string(),
            body: v["body"].clone(),
        });
    }
    Ok(out)
}

/// Each person's newest period (what the index keeps); `periods` ordered by person, as
/// `synth::generate` returns them.
pub fn newest_periods(periods: &[Qualification]) -> Vec<&Qualification> {
    let mut newest: Vec<&Qualification> = Vec::new();
    for q in periods {
        match newest.last_mut() {
            Some(last) if last.person_id == q.person_id => *last = q,
            _ => newest.push(q),
        }
    }
    newest
}

fn split(s: &str) -> (String, String) {
    let mut it = s.splitn(2, '\u{3000}');
    (
        it.next().unwrap_or("").to_string(),
        it.next().unwrap_or("").to_string(),
    )
}

pub fn to_hiragana(s: &str) -> String {
    s.chars()
        .map(|c| {
            if ('\u{30A1}'..='\u{30F6}').contains(&c) {
                char::from_u32(c as u32 - 0x60).unwrap_or(c)
            } else {
                c
            }
        })
        .collect()
}

const ROMA: &[(char, &str)] = &[
    ('ア', "a"),
    ('イ', "i"),
    ('ウ', "u"),
    ('エ', "e"),
    ('オ', "o"),
    ('カ', "ka"),
    ('キ', "ki"),
    ('ク', "ku"),
    ('ケ', "ke"),
    ('コ', "ko"),
    ('サ', "sa"),
    ('シ', "shi"),
    ('ス', "su"),
    ('セ', "se"),
    ('ソ', "so"),
    ('タ', "ta"),
    ('チ', "chi"),
    ('ツ', "tsu"),
    ('テ', "te"),
    ('ト', "to"),
    ('ナ', "na"),
    ('ニ', "ni"),
    ('ヌ', "nu"),
    ('ネ', "ne"),
    ('ノ', "no"),
    ('ハ', "ha"),
    ('ヒ', "hi"),
    ('フ', "fu"),
    ('ヘ', "he"),
    ('ホ', "ho"),
    ('マ', "ma"),
    ('ミ', "mi"),
    ('ム', "mu"),
    ('メ', "me"),
    ('モ', "mo"),
    ('ヤ', "ya"),
    ('ユ', "yu"),
    ('ヨ', "yo"),
    ('ラ', "ra"),
    ('リ', "ri"),
    ('ル', "ru"),
    ('レ', "re"),
    ('ロ', "ro"),
    ('ワ', "wa"),
    ('ヲ', "o"),
    ('ン', "n"),
    ('ガ', "ga"),
    ('ギ', "gi"),
    ('グ', "gu"),
    ('ゲ', "ge"),
    ('ゴ', "go"),
    ('ザ', "za"),
    ('ジ', "ji"),
    ('ズ', "zu"),
    ('ゼ', "ze"),
    ('ゾ', "zo"),
    ('ダ', "da"),
    ('ヂ', "ji"),
    ('ヅ', "zu"),
    ('デ', "de"),
    ('ド', "do"),
    ('バ', "ba"),
    ('ビ', "bi"),
    ('ブ', "bu"),
    ('ベ', "be"),
    ('ボ', "bo"),
    ('パ', "pa"),
    ('ピ', "pi"),
    ('プ', "pu"),
    ('ペ', "pe"),
    ('ポ', "po"),
];

/// Hepburn romaji of a katakana word; `long`: 0 drops long vowels (passport `ONO`, `YUKO`),
/// 1 keeps them as written (`OUNO`), 2 writes a long O as `OH` (`OHNO`).
pub fn kana_to_romaji(s: &str, long: u8) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == 'ッ' {
            if let Some(n) = next
                && let Some((_, r)) = ROMA.iter().find(|(k, _)| *k == n)
            {
                let first = r.chars().next().unwrap_or('t');
                out.push(if first == 'c' { 't' } else { first });
            }
            i += 1;
            continue;
        }
        if c == 'ー' {
            if long == 1 {
                if let Some(v) = out.chars().last() {
                    out.push(v);
                }
            } else if long == 2 && out.ends_with('o') {
                out.push('h');
            }
            i += 1;
            continue;
        }
        let Some((_, r)) = ROMA.iter().find(|(k, _)| *k == c) else {
            i += 1;
            continue;
        };
        let mut syl = r.to_string();
        if let Some(small @ ('ャ' | 'ュ' | 'ョ')) = next {
            let v = match small {
                'ャ' => "a",
                'ュ' => "u",
                _ => "o",
            };
            syl = match c {
                'シ' => format!("sh{v}"),
                'チ' => format!("ch{v}"),
                'ジ' | 'ヂ' => format!("j{v}"),
                _ => format!("{}y{v}", &r[..r.len() - 1]),
            };
            i += 1;
        }
        // A long vowel: オウ, オオ, ウウ after a syllable ending in that vowel.
        let last = out.chars().last();
        let is_long =
            (syl == "u" && matches!(last, Some('o' | 'u'))) || (syl == "o" && last == Some('o'));
        if is_long && !out.is_empty() {
            match long {
                0 => {}
                2 if last == Some('o') => out.push('h'),
                _ => out.push_str(&syl),
            }
        } else {
            out.push_str(&syl);
        }
        i += 1;
    }
    out
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// One kana variant applied where it can be (or `None` when none applies).
fn kana_variant(rng: &mut ChaCha8Rng, k: &str) -> Option<String> {
    const VOICED: &str = "ガギグゲゴザジズゼゾダデドバビブベボパピプペポ";
    const BASE: &str = "カキクケコサシスセソタテトハヒフヘホハヒフヘホ";
    let chars: Vec<char> = k.chars().collect();
    for _ in 0..12 {
        let mut v = chars.clone();
        let i = rng.random_range(0..v.len());
        let c = v[i];
        let prev = if i > 0 { Some(v[i - 1]) } else { None };
        let done = match rng.random_range(0..7u32) {
            // Voicing mark lost or added.
            0 => {
                if let Some(p) = VOICED.chars().position(|x| x == c) {
                    v[i] = BASE.chars().nth(p).unwrap_or(c);
                    true
                } else if let Some(p) = BASE.chars().position(|x| x == c) {
                    v[i] = VOICED.chars().nth(p).unwrap_or(c);
                    true
                } else {
                    false
                }
            }
            // Long vowel: ウ/オ/イ after a syllable written ー, or dropped.
            1 | 2 if matches!(c, 'ウ' | 'オ' | 'イ') && prev.is_some_and(|p| p != '\u{3000}') => {
                if rng.random_bool(0.5) {
                    v[i] = 'ー';
                } else {
                    v.remove(i);
                }
                true
            }
            // Small kana written large.
            3 => {
                let big = match c {
                    'ッ' => 'ツ',
                    'ャ' => 'ヤ',
                    'ュ' => 'ユ',
                    'ョ' => 'ヨ',
                    _ => c,
                };
                v[i] = big;
                big != c
            }
            // ジ/ヂ, ズ/ヅ, オ/ヲ, イ/ヰ, エ/ヱ.
            _ => {
                let alt = match c {
                    'ジ' => 'ヂ',
                    'ズ' => 'ヅ',
                    'オ' if i > 0 => 'ヲ',
                    'イ' => 'ヰ',
                    'エ' => 'ヱ',
                    _ => c,
                };
                v[i] = alt;
                alt != c
            }
        };
        if done {
            let s: String = v.into_iter().collect();
            if s != k {
                return Some(s);
            }
        }
    }
    None
}

/// One character substituted, dropped, doubled, or two neighbours swapped (never the space).
fn typo(rng: &mut ChaCha8Rng, s: &str, pool: &[char]) -> String {
    let mut v: Vec<char> = s.chars().collect();
    let positions: Vec<usize> = (0..v.len()).filter(|&i| v[i] != '\u{3000}').collect();
    if positions.len() < 3 {
        return s.to_string();
    }
    let i = positions[rng.random_range(0..positions.len())];
    match rng.random_range(0..4u32) {
        0 => v[i] = pool[rng.random_range(0..pool.len())],
        1 => {
            v.remove(i);
        }
        2 => v.insert(i, v[i]),
        _ => {
            let j = if i + 1 < v.len() && v[i + 1] != '\u{3000}' {
                i + 1
            } else {
                i.saturating_sub(1)
            };
            v.swap(i, j);
        }
    }
    v.into_iter().collect()
}

fn kanji_number(n: u32) -> String {
    const D: [&str; 10] = ["〇", "一", "二", "三", "四", "五", "六", "七", "八", "九"];
    match n {
        0..=9 => D[n as usize].to_string(),
        10..=99 => {
            let (t, u) = (n / 10, n % 10);
            format!(
                "{}十{}",
                if t == 1 { "" } else { D[t as usize] },
                if u == 0 { "" } else { D[u as usize] }
            )
        }
        _ => n.to_string(),
    }
}

/// (prefecture, city, rest) of a synthetic address.
fn address_parts(addr: &str) -> (String, String, String) {
    let (pref, rest) = PREFECTURES
        .iter()
        .find_map(|p| addr.strip_prefix(p).map(|r| (p.to_string(), r.to_string())))
        .unwrap_or_default();
    let first_num = rest
        .find(|c: char| {
            c.is_ascii_digit() || ('０'..='９').contains(&c) || "一二三四五".contains(c)
        })
        .unwrap_or(rest.len());
    let head = &rest[..first_num];
    let city_end = if let Some(g) = head.find('郡') {
        head[g..].find(['町', '村']).map(|i| g + i + 3)
    } else {
        head.rfind(['市', '区']).map(|i| i + 3)
    }
    .unwrap_or(0);
    (
        pref,
        rest[..city_end].to_string(),
        rest[city_end..].to_string(),
    )
}

/// The address written another way: kanji numerals, 番地/番, 大字/字, the block without the
/// building, the prefecture or the city left out, the old name of a merged municipality.
fn address_form(rng: &mut ChaCha8Rng, addr: &str) -> String {
    let (pref, city, place) = address_parts(addr);
    let place_no_bldg = place.split('\u{3000}').next().unwrap_or("").to_string();
    let old = MERGED_MUNICIPALITIES
        .iter()
        .filter(|(p, _, new)| {
            PREFECTURES.get(usize::from(*p) - 1) == Some(&pref.as_str()) && *new == city
        })
        .map(|(_, old, _)| *old)
        .collect::<Vec<_>>();
    for _ in 0..8 {
        let out = match rng.random_range(0..8u32) {
            0 => {
                // 1-7-15 → 一丁目七番十五号 (or 番地).
                let nums: Vec<&str> = place_no_bldg
                    .trim_start_matches(|c: char| !c.is_ascii_digit())
                    .split('-')
                    .collect();
                let town: String = place_no_bldg
                    .chars()
                    .take_while(|c| !c.is_ascii_digit())
                    .collect();
                if nums.len() == 3 && nums.iter().all(|n| n.parse::<u32>().is_ok()) {
                    let k: Vec<String> = nums
                        .iter()
                        .map(|n| kanji_number(n.parse().unwrap_or(0)))
                        .collect();
                    let ban = if rng.random_bool(0.5) {
                        "番地"
                    } else {
                        "番"
                    };
                    format!("{city}{town}{}丁目{}{ban}{}号", k[0], k[1], k[2])
                } else {
                    continue;
                }
            }
            1 => {
                if place.contains("番地") {
                    format!("{pref}{city}{}", place.replacen("番地", "番", 1))
                } else if place.contains('番') {
                    format!("{pref}{city}{}", place.replacen('番', "番地", 1))
                } else {
                    continue;
                }
            }
            2 => {
                if place.starts_with("大字") {
                    format!("{city}{}", place.trim_start_matches("大字"))
                } else if place.starts_with("字") {
                    format!("{city}大{place}")
                } else {
                    continue;
                }
            }
            3 => {
                // The block (丁目-番) without the house and building number.
                let town: String = place_no_bldg
                    .chars()
                    .take_while(|c| !c.is_ascii_digit())
                    .collect();
                let nums: Vec<&str> = place_no_bldg[town.len()..].split('-').collect();
                if nums.len() >= 2 && !town.is_empty() {
                    format!("{city}{town}{}-{}", nums[0], nums[1])
                } else {
                    continue;
                }
            }
            4 => format!("{city}{place_no_bldg}"),
            5 => place.clone(),
            6 => {
                if old.is_empty() {
                    continue;
                }
                let o = old[rng.random_range(0..old.len())];
                if rng.random_bool(0.5) {
                    format!("{pref}{o}{place_no_bldg}")
                } else {
                    format!("{o}{place_no_bldg}")
                }
            }
            _ => format!("{pref}{place_no_bldg}"),
        };
        if !out.is_empty() {
            return out;
        }
    }
    format!("{city}{place_no_bldg}")
}

fn insurer_form(name: &str) -> String {
    if name.starts_with("全国健康保険協会") && name.ends_with("支部") {
        "協会けんぽ".to_string()
    } else if name.ends_with('市')
        || name.ends_with('区')
        || name.ends_with('町')
        || name.ends_with('村')
    {
        format!("{name}国保")
    } else {
        name.replace("健康保険組合", "健保")
    }
}

fn birth_text(rng: &mut ChaCha8Rng, d: NaiveDate) -> String {
    match rng.random_range(0..10u32) {
        0..6 => d.to_string(),
        6 | 7 => onshi_model::date::format_era(d).unwrap_or_else(|| d.to_string()),
        8 => onshi_model::date::format_era_short(d).unwrap_or_else(|| d.to_string()),
        _ => d.format("%Y%m%d").to_string(),
    }
}

fn sex_text(s: Sex) -> &'static str {
    match s {
        Sex::Male => "male",
        Sex::Female => "female",
        Sex::Unset => "unset",
    }
}

/// The same era year number in another era, plausible on `today`.
fn era_confused(rng: &mut ChaCha8Rng, d: NaiveDate, today: NaiveDate) -> Option<NaiveDate> {
    use onshi_model::Era;
    let era = Era::of(d)?;
    let n = d.year() - era.start().year();
    let options: Vec<NaiveDate> = [Era::Taisho, Era::Showa, Era::Heisei, Era::Reiwa]
        .into_iter()
        .filter(|e| *e != era)
        .filter_map(|e| {
            let x = NaiveDate::from_ymd_opt(e.start().year() + n, d.month(), d.day())?;
            (x >= e.start() && e.end_exclusive().is_none_or(|end| x < end) && x <= today)
                .then_some(x)
        })
        .collect();
    (!options.is_empty()).then(|| options[rng.random_range(0..options.len())])
}

fn digit_slip(rng: &mut ChaCha8Rng, d: NaiveDate, today: NaiveDate) -> Option<NaiveDate> {
    for _ in 0..30 {
        let mut b = format!("{:04}{:02}{:02}", d.year(), d.month(), d.day()).into_bytes();
        let p = [2usize, 3, 5, 6, 7][rng.random_range(0..5)];
        if rng.random_bool(0.3) && p < 7 {
            b.swap(p, p + 1);
        } else {
            b[p] = b'0' + rng.random_range(0..10u8);
        }
        let t = String::from_utf8(b).unwrap_or_default();
        if let Ok(x) = NaiveDate::parse_from_str(&t, "%Y%m%d")
            && x != d
            && x <= today
            && x.year() >= 1900
        {
            return Some(x);
        }
    }
    None
}

/// A birth-date confounder of the given kind, or `None` when it cannot apply to `d`.
fn birth_confounder(
    rng: &mut ChaCha8Rng,
    kind: &str,
    d: NaiveDate,
    today: NaiveDate,
) -> Option<(NaiveDate, bool)> {
    let ok = |x: NaiveDate| (x != d && x <= today).then_some(x);
    // The bool: write the wrong date in the era calendar.
    match kind {
        "birth_swap" => (d.day() <= 12 && d.day() != d.month())
            .then(|| NaiveDate::from_ymd_opt(d.year(), d.day(), d.month()))
            .flatten()
            .and_then(ok)
            .map(|x| (x, false)),
        "birth_year" => {
            let dy = if rng.random_bool(0.5) { 1 } else { -1 };
            NaiveDate::from_ymd_opt(d.year() + dy, d.month(), d.day())
                .and_then(ok)
                .map(|x| (x, false))
        }
        "birth_era" => era_confused(rng, d, today).map(|x| (x, rng.random_bool(0.7))),
        "birth_digit" => digit_slip(rng, d, today).map(|x| (x, false)),
        // The patient says the era date; staff convert it with the wrong base year (±1) or the
        // wrong era's base, and type the Western date.
        "era_conversion" => {
            if rng.random_bool(0.7) {
                let dy = if rng.random_bool(0.5) { 1 } else { -1 };
                NaiveDate::from_ymd_opt(d.year() + dy, d.month(), d.day())
                    .and_then(ok)
                    .map(|x| (x, false))
            } else {
                era_confused(rng, d, today).map(|x| (x, false))
            }
        }
        _ => None,
    }
}

struct Ctx<'a> {
    people: &'a [&'a Qualification],
    surnames: Vec<(String, String)>,
    /// People sharing their exact name and sex with someone else.
    namesakes: Vec<usize>,
    today: NaiveDate,
}

/// Generates `per_kind` queries of every kind of [`KINDS`] over `people` (newest periods).
pub fn generate(
    people: &[&Qualification],
    per_kind: usize,
    seed: u64,
    today: NaiveDate,
) -> Vec<GenQuery> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut by_name: HashMap<(String, u8), Vec<usize>> = HashMap::new();
    let mut surnames: Vec<(String, String)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, p) in people.iter().enumerate() {
        by_name
            .entry((name_key(&p.name), p.sex.code()))
            .or_default()
            .push(i);
        let (f, _) = split(&p.name);
        let (kf, _) = split(&p.name_kana);
        if seen.insert(name_key(&f)) {
            surnames.push((f, kf));
        }
    }
    let mut namesakes: Vec<usize> = by_name
        .values()
        .filter(|v| v.len() > 1)
        .flatten()
        .copied()
        .collect();
    namesakes.sort_unstable();
    let ctx = Ctx {
        people,
        surnames,
        namesakes,
        today,
    };
    let mut out = Vec::with_capacity(per_kind * KINDS.len());
    for kind in KINDS {
        let mut made = 0;
        let mut tries = 0;
        while made < per_kind && tries < per_kind * 50 {
            tries += 1;
            if let Some(q) = one(&mut rng, &ctx, kind) {
                out.push(q);
                made += 1;
            }
        }
    }
    out
}

fn one(rng: &mut ChaCha8Rng, ctx: &Ctx<'_>, kind: &str) -> Option<GenQuery> {
    let idx = if kind == "namesake" && !ctx.namesakes.is_empty() {
        ctx.namesakes[rng.random_range(0..ctx.namesakes.len())]
    } else {
        rng.random_range(0..ctx.people.len())
    };
    let p = ctx.people[idx];
    let (fam, giv) = split(&p.name);
    let (kfam, kgiv) = split(&p.name_kana);
    if giv.is_empty() || kgiv.is_empty() {
        return None;
    }
    let sp = |rng: &mut ChaCha8Rng| match rng.random_range(0..3u32) {
        0 => "",
        1 => " ",
        _ => "\u{3000}",
    };
    let kana_script = |rng: &mut ChaCha8Rng, s: &str| {
        if rng.random_bool(0.5) {
            to_hiragana(s)
        } else {
            s.to_string()
        }
    };
    let mut name: Option<String> = None;
    let mut kana: Option<String> = None;
    let mut birth = p.birth_date;
    let mut birth_era_form = false;
    let mut address = None;
    let mut insurer = None;
    let name_kind = if kind == "combined" {
        [
            "surname_changed",
            "given_only",
            "kana_variant",
            "mixed_script",
            "romaji",
        ][rng.random_range(0..5)]
    } else {
        kind
    };
    let birth_kind = if kind == "combined" {
        ["birth_swap", "birth_year", "birth_era", "birth_digit"][rng.random_range(0..4)]
    } else {
        kind
    };
    match name_kind {
        "surname_changed" => {
            let (of, okf) = loop {
                let s = &ctx.surnames[rng.random_range(0..ctx.surnames.len())];
                if name_key(&s.0) != name_key(&fam) && name_key(&s.1) != name_key(&kfam) {
                    break s.clone();
                }
            };
            if rng.random_bool(0.6) {
                name = Some(format!("{of}{}{giv}", sp(rng)));
            } else {
                let k = format!("{okf}{}{kgiv}", sp(rng));
                kana = Some(kana_script(rng, &k));
            }
            address = rng.random_bool(0.6).then(|| address_form(rng, &p.address));
        }
        "given_only" => {
            match rng.random_range(0..4u32) {
                0 => name = Some(giv.clone()),
                1 => name = Some(to_hiragana(&kgiv)),
                2 => kana = Some(kgiv.clone()),
                _ => kana = Some(to_hiragana(&kgiv)),
            }
            address = rng.random_bool(0.7).then(|| address_form(rng, &p.address));
            insurer = rng.random_bool(0.2).then(|| insurer_form(&p.insurer_name));
        }
        "family_only" => {
            if rng.random_bool(0.6) {
                name = Some(fam.clone());
            } else {
                kana = Some(kana_script(rng, &kfam));
            }
            address = rng.random_bool(0.7).then(|| address_form(rng, &p.address));
            insurer = rng.random_bool(0.3).then(|| insurer_form(&p.insurer_name));
        }
        "mixed_script" => {
            name = Some(match rng.random_range(0..3u32) {
                0 => format!("{fam}{}{}", sp(rng), to_hiragana(&kgiv)),
                1 => format!("{fam}{}{kgiv}", sp(rng)),
                _ => format!(
                    "{}{}{giv}",
                    to_hiragana(&kfam),
                    [" ", "\u{3000}"][rng.random_range(0..2)]
                ),
            });
        }
        "romaji" => {
            let style = rng.random_range(0..3u8);
            let (rf, rg) = (kana_to_romaji(&kfam, style), kana_to_romaji(&kgiv, style));
            name = Some(match rng.random_range(0..3u32) {
                0 => format!("{} {}", capitalise(&rg), capitalise(&rf)),
                1 => format!("{} {}", rf.to_uppercase(), rg.to_uppercase()),
                _ => format!("{rf} {rg}"),
            });
        }
        "kana_variant" => {
            let k = format!("{kfam}\u{3000}{kgiv}");
            let v = kana_variant(rng, &k)?;
            let v = kana_script(rng, &v);
            if rng.random_bool(0.6) {
                kana = Some(v);
            } else {
                name = Some(v.replace('\u{3000}', " "));
            }
        }
        "name_typo" => {
            if rng.random_bool(0.5) {
                let pool: Vec<char> = "田中山川本藤井木村野原子一郎美和".chars().collect();
                name = Some(typo(rng, &p.name, &pool));
            } else {
                let pool: Vec<char> =
                    "アイウエオカキクケコサシスセソタチツテトナニヌネノマミムメモラリルレロ"
                        .chars()
                        .collect();
                kana = Some(typo(rng, &p.name_kana, &pool));
            }
        }
        "address_form" => {
            if rng.random_bool(0.6) {
                name = Some(fam.clone());
            } else {
                kana = Some(kana_script(rng, &kfam));
            }
            address = Some(address_form(rng, &p.address));
        }
        "namesake" => {
            name = Some(format!("{fam}{}{giv}", sp(rng)));
            if rng.random_bool(0.5) {
                address = Some(address_form(rng, &p.address));
            } else {
                insurer = Some(insurer_form(&p.insurer_name));
            }
        }
        _ => {
            // clean, and the birth-date kinds: the name as registered.
            name = Some(format!("{fam}{}{giv}", sp(rng)));
            if rng.random_bool(0.3) {
                kana = Some(p.name_kana.clone());
            }
            address = rng.random_bool(0.3).then(|| p.address.clone());
        }
    }
    if birth_kind.starts_with("birth_") || birth_kind == "era_conversion" {
        let (b, era) = birth_confounder(rng, birth_kind, p.birth_date, ctx.today)?;
        birth = b;
        birth_era_form = era;
    }
    if kind == "combined" {
        address = address.or_else(|| rng.random_bool(0.5).then(|| address_form(rng, &p.address)));
    }
    let birth_text = if birth_era_form {
        onshi_model::date::format_era(birth)?
    } else if birth != p.birth_date {
        birth.to_string()
    } else {
        birth_text(rng, birth)
    };
    let mut body = json!({"birth_date": birth_text, "sex": sex_text(p.sex)});
    if let Some(n) = name {
        body["name"] = n.into();
    }
    if let Some(k) = kana {
        body["name_kana"] = k.into();
    }
    if let Some(a) = address {
        body["address"] = a.into();
    }
    if let Some(i) = insurer {
        body["insurer_name"] = i.into();
    }
    Some(GenQuery {
        kind: kind.to_string(),
        truth: p.person_id.as_str().to_string(),
        body,
    })
}
