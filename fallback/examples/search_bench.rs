//! Outage-search benchmark and quality run (issues 3 and 17), with an SQL baseline in the same run.
//!
//! ```text
//! cargo run --release -p onshi-fallback --example search_bench -- --people 1000000 [--queries 5000] [--seed 7]
//!     [--per-kind 300] [--queries-file FILE] [--out FILE]
//! ```
//! Builds the index over the synthetic registry (`onshi_sync::synth`), generates a query set with
//! the noise reception produces (described in `--help` and BENCHMARKS.md), and reports build time,
//! resident memory, p50/p99 per query and recall@1/@5; then the same queries as SQL over SQLite
//! (exact birth date + sex, `LIKE '%…%'` on name, kana and address) and the ratio.
//!
//! Then the counter queries of issue 17 (`support/querygen.rs`, one kind of confounder at a time):
//! generated (`--per-kind` each, seeded from `--seed`; `--out FILE` writes them as JSON lines) or
//! read from `--queries-file FILE` (as `gen_queries` writes them, over the same `--people` and
//! `--seed`), with recall@1/@5 per kind, over the hard kinds and overall, and p50/p99.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/querygen.rs"]
mod querygen;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate};
use onshi_fallback::normalize::VARIANT_KANJI;
use onshi_fallback::{SearchIndex, SearchQuery};
use onshi_model::{Qualification, Sex};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What noise a query carries, for the per-kind recall table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Noise {
    Clean,
    VariantKanji,
    NameTypo,
    KanaOnly,
    KanaTypo,
    HiraganaInNameField,
    BirthSlip,
    EraBirthDate,
    Address,
    InsurerName,
}

struct Q {
    body: serde_json::Value,
    truth: String,
    noise: Vec<Noise>,
    /// For the SQL baseline: the fields as typed.
    name: Option<String>,
    kana: Option<String>,
    birth_iso: String,
    sex: u8,
    address: Option<String>,
}

fn to_hiragana(s: &str) -> String {
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

fn to_half_width(s: &str) -> String {
    const FULL: &str = "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲンァィゥェォャュョッー";
    const HALF: &str = "ｱｲｳｴｵｶｷｸｹｺｻｼｽｾｿﾀﾁﾂﾃﾄﾅﾆﾇﾈﾉﾊﾋﾌﾍﾎﾏﾐﾑﾒﾓﾔﾕﾖﾗﾘﾙﾚﾛﾜｦﾝｧｨｩｪｫｬｭｮｯｰ";
    const VOICED: &str = "ガギグゲゴザジズゼゾダヂヅデドバビブベボ";
    const VOICED_BASE: &str = "カキクケコサシスセソタチツテトハヒフヘホ";
    const SEMI: &str = "パピプペポ";
    let full: Vec<char> = FULL.chars().collect();
    let half: Vec<char> = HALF.chars().collect();
    let mut out = String::new();
    for c in s.chars() {
        if let Some(i) = VOICED.chars().position(|v| v == c) {
            let base = VOICED_BASE.chars().nth(i).unwrap_or(c);
            out.push(half[full.iter().position(|f| *f == base).unwrap_or(0)]);
            out.push('ﾞ');
        } else if let Some(i) = SEMI.chars().position(|v| v == c) {
            let base = "ハヒフヘホ".chars().nth(i).unwrap_or(c);
            out.push(half[full.iter().position(|f| *f == base).unwrap_or(0)]);
            out.push('ﾟ');
        } else if let Some(i) = full.iter().position(|f| *f == c) {
            out.push(half[i]);
        } else if c == '\u{3000}' {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// One character substituted, dropped, doubled, or two neighbours swapped (never the space).
fn typo(rng: &mut ChaCha8Rng, s: &str, pool: &[char]) -> String {
    let mut v: Vec<char> = s.chars().collect();
    let positions: Vec<usize> = (0..v.len()).filter(|&i| v[i] != '\u{3000}').collect();
    if positions.len() < 2 {
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

/// Long vowels as people write them: オウ/ウウ → ー.
fn long_marks(s: &str) -> String {
    s.replace("ウ", "ー")
}

fn era_form(rng: &mut ChaCha8Rng, d: NaiveDate) -> String {
    let (y, m, dd) = (d.year(), d.month(), d.day());
    let eras = [
        ("令和", 'R', 2019, (5, 1)),
        ("平成", 'H', 1989, (1, 8)),
        ("昭和", 'S', 1926, (12, 25)),
        ("大正", 'T', 1912, (7, 30)),
    ];
    for (kanji, letter, start, (sm, sd)) in eras {
        if (y, m, dd) >= (start, sm, sd) {
            let ey = y - start + 1;
            return if rng.random_bool(0.5) {
                format!("{kanji}{ey}年{m}月{dd}日")
            } else {
                format!("{letter}{ey}.{m}.{dd}")
            };
        }
    }
    d.to_string()
}

fn birth_slip(rng: &mut ChaCha8Rng, d: NaiveDate) -> NaiveDate {
    loop {
        let s = format!("{:04}{:02}{:02}", d.year(), d.month(), d.day());
        let mut b: Vec<u8> = s.into_bytes();
        let p = [2usize, 3, 5, 6, 7][rng.random_range(0..5)];
        b[p] = b'0' + rng.random_range(0..10u8);
        let t = String::from_utf8(b).unwrap_or_default();
        if let Ok(x) = NaiveDate::parse_from_str(&t, "%Y%m%d")
            && x != d
        {
            return x;
        }
    }
}

/// A partial or re-written address: city+town, town+numbers, other written form, no prefecture.
fn address_form(rng: &mut ChaCha8Rng, addr: &str) -> String {
    let no_pref = onshi_fallback::normalize::PREFECTURES
        .iter()
        .find_map(|p| addr.strip_prefix(p))
        .unwrap_or(addr)
        .to_string();
    let head_end = no_pref
        .find(|c: char| {
            c.is_ascii_digit() || ('０'..='９').contains(&c) || "一二三四五".contains(c)
        })
        .unwrap_or(no_pref.len());
    let head = &no_pref[..head_end];
    let numbers = &no_pref[head_end..];
    let numbers = numbers.split('\u{3000}').next().unwrap_or("");
    let city_end = head
        .rfind(['市', '区', '町', '村'])
        .map(|i| i + 3)
        .unwrap_or(0);
    match rng.random_range(0..5u32) {
        0 => head.to_string(),
        1 => {
            let town = &head[city_end.min(head.len())..];
            let first = numbers.split(['-', '－', '番', '丁']).next().unwrap_or("");
            if town.is_empty() {
                head.to_string()
            } else {
                format!("{town}{first}")
            }
        }
        2 => no_pref.replace('-', "ー"),
        3 => {
            let parts: Vec<&str> = numbers.split('-').collect();
            if parts.len() == 3 {
                format!("{head}{}丁目{}番{}号", parts[0], parts[1], parts[2])
            } else {
                no_pref.clone()
            }
        }
        _ => addr.to_string(),
    }
}

fn insurer_form(name: &str) -> String {
    if name.starts_with("全国健康保険協会") && name.ends_with("支部") {
        "協会けんぽ".to_string()
    } else if name.ends_with("市")
        || name.ends_with("区")
        || name.ends_with("町")
        || name.ends_with("村")
    {
        format!("{name}国保")
    } else {
        name.replace("健康保険組合", "健保")
    }
}

fn make_queries(people: &[&Qualification], n: usize, seed: u64) -> Vec<Q> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let standard_to_variant: HashMap<char, char> =
        VARIANT_KANJI.iter().map(|(v, s)| (*s, *v)).collect();
    let kana_pool: Vec<char> =
        "アイウエオカキクケコサシスセソタチツテトナニヌネノマミムメモラリルレロ"
            .chars()
            .collect();
    let kanji_pool: Vec<char> = "田中山川本藤井木村野原子一郎美和".chars().collect();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let p = people[rng.random_range(0..people.len())];
        let mut noise = Vec::new();
        let mut name = None;
        let mut kana = None;
        let form = rng.random_range(0..100u32);
        if form < 55 {
            // Kanji name, sometimes with both name and kana.
            let mut nm = p.name.clone();
            if rng.random_bool(0.3) {
                // Variant ↔ standard kanji, as the card and the registry disagree.
                let swapped: String = nm
                    .chars()
                    .map(|c| {
                        let f = onshi_fallback::normalize::fold_variant(c);
                        if f != c {
                            f
                        } else {
                            standard_to_variant.get(&c).copied().unwrap_or(c)
                        }
                    })
                    .collect();
                if swapped != nm {
                    noise.push(Noise::VariantKanji);
                    nm = swapped;
                }
            }
            if rng.random_bool(0.15) {
                nm = typo(&mut rng, &nm, &kanji_pool);
                noise.push(Noise::NameTypo);
            }
            if rng.random_bool(0.5) {
                nm = nm.replace('\u{3000}', if rng.random_bool(0.5) { "" } else { " " });
            }
            name = Some(nm);
            if rng.random_bool(0.3) {
                kana = Some(p.name_kana.clone());
            }
        } else if form < 85 {
            noise.push(Noise::KanaOnly);
            let mut k = p.name_kana.clone();
            if rng.random_bool(0.3) {
                k = long_marks(&k);
            }
            if rng.random_bool(0.15) {
                k = typo(&mut rng, &k, &kana_pool);
                noise.push(Noise::KanaTypo);
            }
            k = match rng.random_range(0..3u32) {
                0 => to_hiragana(&k),
                1 => to_half_width(&k),
                _ => k,
            };
            kana = Some(k);
        } else {
            noise.push(Noise::HiraganaInNameField);
            name = Some(to_hiragana(&p.name_kana).replace('\u{3000}', " "));
        }
        let mut birth = p.birth_date;
        if rng.random_bool(0.05) {
            birth = birth_slip(&mut rng, birth);
            noise.push(Noise::BirthSlip);
        }
        let birth_text = if rng.random_bool(0.3) {
            era_form(&mut rng, birth)
        } else {
            birth.to_string()
        };
        let address = rng
            .random_bool(0.4)
            .then(|| address_form(&mut rng, &p.address));
        let insurer = rng.random_bool(0.2).then(|| insurer_form(&p.insurer_name));
        if noise.is_empty() {
            noise.push(Noise::Clean);
        }
        if !birth_text.starts_with(|c: char| c.is_ascii_digit()) {
            noise.push(Noise::EraBirthDate);
        }
        if address.is_some() {
            noise.push(Noise::Address);
        }
        if insurer.is_some() {
            noise.push(Noise::InsurerName);
        }
        let sex = match p.sex {
            Sex::Male => "male",
            Sex::Female => "female",
            Sex::Unset => "unset",
        };
        let mut body = serde_json::json!({"birth_date": birth_text, "sex": sex});
        if let Some(n) = &name {
            body["name"] = n.clone().into();
        }
        if let Some(k) = &kana {
            body["name_kana"] = k.clone().into();
        }
        if let Some(a) = &address {
            body["address"] = a.clone().into();
        }
        if let Some(i) = &insurer {
            body["insurer_name"] = i.clone().into();
        }
        out.push(Q {
            body,
            truth: p.person_id.as_str().to_string(),
            noise,
            name,
            kana,
            birth_iso: birth.to_string(),
            sex: p.sex.code(),
            address,
        });
    }
    out
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn arg_text(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Recall@1/@5 and latency per kind of the issue-17 counter queries.
fn counter_queries(ix: &SearchIndex, newest: &[&Qualification], seed: u64, today: NaiveDate) {
    let queries = match arg_text("--queries-file") {
        Some(path) => querygen::read_jsonl(&path).expect("read --queries-file"),
        None => {
            let per_kind = arg("--per-kind", 300) as usize;
            querygen::generate(newest, per_kind, seed ^ 0x17_17, today)
        }
    };
    if let Some(out) = arg_text("--out") {
        querygen::write_jsonl(&queries, &out).expect("write --out");
        println!("counter queries written to {out}");
    }
    // kind → (queries, @1, @5)
    let mut by_kind: HashMap<String, (usize, usize, usize)> = HashMap::new();
    let mut lat = Vec::with_capacity(queries.len());
    let mut misses: HashMap<String, Vec<String>> = HashMap::new();
    let mut refused = 0;
    for q in &queries {
        let t = Instant::now();
        let Ok(sq) = SearchQuery::from_json(&q.body) else {
            refused += 1;
            continue;
        };
        let r = ix.search(&sq, 5);
        lat.push(t.elapsed());
        let at1 = r.first().is_some_and(|c| c.person_id.as_str() == q.truth);
        let at5 = r.iter().any(|c| c.person_id.as_str() == q.truth);
        let e = by_kind.entry(q.kind.clone()).or_default();
        e.0 += 1;
        e.1 += usize::from(at1);
        e.2 += usize::from(at5);
        let m = misses.entry(q.kind.clone()).or_default();
        if !at1 && m.len() < 2 {
            let got = r.first().map_or("-".to_string(), |c| {
                format!("{} {:.2}", c.person_id, c.score)
            });
            m.push(format!("{} {} → {got}", q.truth, q.body));
        }
    }
    lat.sort();
    println!(
        "counter queries (issue 17): {} queries, {} refused by the parser; p50 {} p99 {} max {}",
        queries.len(),
        refused,
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default())
    );
    println!(
        "  {:<16} {:>7} {:>9} {:>9}",
        "kind", "queries", "recall@1", "recall@5"
    );
    let (mut hn, mut h1, mut h5) = (0, 0, 0);
    let (mut an, mut a1, mut a5) = (0, 0, 0);
    let pc = |a: usize, n: usize| 100.0 * a as f64 / n.max(1) as f64;
    for kind in querygen::KINDS {
        let Some(&(n, r1, r5)) = by_kind.get(*kind) else {
            continue;
        };
        println!(
            "  {kind:<16} {n:>7} {:>8.1}% {:>8.1}%",
            pc(r1, n),
            pc(r5, n)
        );
        if *kind != "clean" {
            (hn, h1, h5) = (hn + n, h1 + r1, h5 + r5);
        }
        (an, a1, a5) = (an + n, a1 + r1, a5 + r5);
    }
    println!(
        "  {:<16} {hn:>7} {:>8.1}% {:>8.1}%",
        "hard (all but clean)",
        pc(h1, hn),
        pc(h5, hn)
    );
    println!(
        "  {:<16} {an:>7} {:>8.1}% {:>8.1}%",
        "overall",
        pc(a1, an),
        pc(a5, an)
    );
    if std::env::args().any(|a| a == "--show-misses") {
        for kind in querygen::KINDS {
            for m in misses.get(*kind).into_iter().flatten() {
                println!("  miss@1 {kind}: {m}");
            }
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!(
            "search_bench --people N (1000000) --queries Q (5000) --seed S (7) --per-kind K (300) [--queries-file FILE] [--out FILE] [--show-misses] [--no-sql]"
        );
        return;
    }
    let people = arg("--people", 1_000_000) as usize;
    let nq = arg("--queries", 5000) as usize;
    let seed = arg("--seed", 7);
    let today = NaiveDate::from_ymd_opt(2025, 6, 15).expect("date");

    let rss0 = rss_kib();
    let t = Instant::now();
    let periods = onshi_sync::synth::generate(&onshi_sync::synth::SynthParams {
        people,
        seed,
        today,
    });
    println!(
        "synthetic registry: {people} people, {} periods in {:.1} s",
        periods.len(),
        t.elapsed().as_secs_f64()
    );
    // Truth = each person's newest period (what the index keeps); periods are ordered by person.
    let mut newest: Vec<&Qualification> = Vec::with_capacity(people);
    for q in &periods {
        match newest.last_mut() {
            Some(last) if last.person_id == q.person_id => *last = q,
            _ => newest.push(q),
        }
    }

    let rss1 = rss_kib();
    let t = Instant::now();
    let ix = SearchIndex::build(&periods);
    let build = t.elapsed();
    let rss2 = rss_kib();
    println!(
        "index: {} people, built in {:.2} s; RSS {} MiB before, {} MiB after (+{} MiB for the index; registry itself {} MiB)",
        ix.len(),
        build.as_secs_f64(),
        rss1 / 1024,
        rss2 / 1024,
        rss2.saturating_sub(rss1) / 1024,
        rss1.saturating_sub(rss0) / 1024
    );

    let queries = make_queries(&newest, nq, seed ^ 0x5EA2C4);
    let mut counts: HashMap<Noise, usize> = HashMap::new();
    for q in &queries {
        for n in &q.noise {
            *counts.entry(*n).or_default() += 1;
        }
    }
    let with_addr = queries.iter().filter(|q| q.address.is_some()).count();
    let with_ins = queries
        .iter()
        .filter(|q| q.body.get("insurer_name").is_some())
        .count();
    let era = queries
        .iter()
        .filter(|q| {
            !q.body["birth_date"]
                .as_str()
                .unwrap_or("")
                .starts_with(|c: char| c.is_ascii_digit())
        })
        .count();
    println!(
        "queries: {nq}; with address {with_addr}, insurer {with_ins}, era birth date {era}; noise {counts:?}"
    );

    // Warm up, then measure.
    for q in queries.iter().take(200) {
        let sq = SearchQuery::from_json(&q.body).expect("query");
        std::hint::black_box(ix.search(&sq, 5));
    }
    let mut lat = Vec::with_capacity(nq);
    let (mut r1, mut r5) = (0usize, 0usize);
    let mut by_noise: HashMap<Noise, (usize, usize, usize)> = HashMap::new();
    let mut misses = Vec::new();
    for q in &queries {
        let t = Instant::now();
        let sq = SearchQuery::from_json(&q.body).expect("query");
        let r = ix.search(&sq, 5);
        lat.push(t.elapsed());
        let at1 = r.first().is_some_and(|c| c.person_id.as_str() == q.truth);
        let at5 = r.iter().any(|c| c.person_id.as_str() == q.truth);
        r1 += usize::from(at1);
        r5 += usize::from(at5);
        for n in &q.noise {
            let e = by_noise.entry(*n).or_default();
            e.0 += 1;
            e.1 += usize::from(at1);
            e.2 += usize::from(at5);
        }
        if !at5 && misses.len() < 8 {
            misses.push(format!("{} {}", q.truth, q.body));
        }
    }
    let mut slow: Vec<(Duration, usize)> = lat.iter().copied().zip(0..).collect();
    slow.sort();
    for (d, i) in slow.iter().rev().take(3) {
        println!("  slowest: {} {}", ms(*d), queries[*i].body);
    }
    lat.sort();
    let (p50, p99, max) = (
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or_default(),
    );
    println!(
        "fallback index: p50 {} p99 {} max {}; recall@1 {:.2} %, recall@5 {:.2} %",
        ms(p50),
        ms(p99),
        ms(max),
        100.0 * r1 as f64 / nq as f64,
        100.0 * r5 as f64 / nq as f64
    );
    let mut kinds: Vec<_> = by_noise.into_iter().collect();
    kinds.sort();
    for (k, (n, a, b)) in kinds {
        println!(
            "  {k:?}: {n} queries, recall@1 {:.1} %, recall@5 {:.1} %",
            100.0 * a as f64 / n as f64,
            100.0 * b as f64 / n as f64
        );
    }
    for m in &misses {
        println!("  miss: {m}");
    }

    counter_queries(&ix, &newest, seed, today);

    if std::env::args().any(|a| a == "--no-sql") {
        return;
    }
    // SQL baseline: SQLite in memory, one row per person (newest period), index on the exact keys.
    let rss3 = rss_kib();
    let t = Instant::now();
    let db = rusqlite::Connection::open_in_memory().expect("sqlite");
    db.execute_batch(
        "CREATE TABLE people (person_id TEXT PRIMARY KEY, name TEXT, name_kana TEXT, birth_date TEXT, sex INTEGER, address TEXT, insurer_name TEXT);",
    )
    .expect("schema");
    {
        let tx = db.unchecked_transaction().expect("tx");
        {
            let mut ins = tx
                .prepare("INSERT INTO people VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
                .expect("insert");
            for p in &newest {
                ins.execute(rusqlite::params![
                    p.person_id.as_str(),
                    p.name,
                    p.name_kana,
                    p.birth_date.to_string(),
                    p.sex.code(),
                    p.address,
                    p.insurer_name
                ])
                .expect("row");
            }
        }
        tx.commit().expect("commit");
    }
    db.execute_batch("CREATE INDEX people_birth_sex ON people (birth_date, sex);")
        .expect("index");
    let sql_build = t.elapsed();
    let rss4 = rss_kib();
    println!(
        "sqlite: built in {:.2} s, +{} MiB",
        sql_build.as_secs_f64(),
        rss4.saturating_sub(rss3) / 1024
    );
    let mut stmt = db
        .prepare(
            "SELECT person_id FROM people WHERE birth_date = ?1 AND sex = ?2 \
             AND (?3 IS NULL OR name LIKE ?3) AND (?4 IS NULL OR name_kana LIKE ?4) AND (?5 IS NULL OR address LIKE ?5) \
             ORDER BY person_id LIMIT 5",
        )
        .expect("prepare");
    // The query as typed, spaces of either width becoming '%' (the least a form search does).
    let like = |s: &Option<String>| {
        s.as_ref().map(|s| {
            format!(
                "%{}%",
                s.split([' ', '\u{3000}'])
                    .filter(|p| !p.is_empty())
                    .collect::<Vec<_>>()
                    .join("%")
            )
        })
    };
    let mut slat = Vec::with_capacity(nq);
    let (mut s1, mut s5) = (0usize, 0usize);
    for q in &queries {
        let t = Instant::now();
        // The baseline gets the birth date already parsed (era dates are not SQL's job).
        let rows: Vec<String> = stmt
            .query_map(
                rusqlite::params![
                    q.birth_iso,
                    q.sex,
                    like(&q.name),
                    like(&q.kana),
                    like(&q.address)
                ],
                |r| r.get(0),
            )
            .expect("query")
            .filter_map(Result::ok)
            .collect();
        slat.push(t.elapsed());
        s1 += usize::from(rows.first().is_some_and(|r| *r == q.truth));
        s5 += usize::from(rows.contains(&q.truth));
    }
    slat.sort();
    let (sp50, sp99) = (pct(&slat, 0.5), pct(&slat, 0.99));
    println!(
        "sqlite LIKE baseline: p50 {} p99 {}; recall@1 {:.2} %, recall@5 {:.2} %",
        ms(sp50),
        ms(sp99),
        100.0 * s1 as f64 / nq as f64,
        100.0 * s5 as f64 / nq as f64
    );
    println!(
        "ratio (sqlite / fallback): p50 {:.2}×, p99 {:.2}×; recall@5 {:.2} % vs {:.2} %",
        sp50.as_secs_f64() / p50.as_secs_f64().max(1e-9),
        sp99.as_secs_f64() / p99.as_secs_f64().max(1e-9),
        100.0 * r5 as f64 / nq as f64,
        100.0 * s5 as f64 / nq as f64
    );
}
