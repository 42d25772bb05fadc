//! Deterministic synthetic registry: realistic-looking qualification periods for demos, load tests
//! and search tests. Same [`SynthParams`] → byte-identical output; nothing here reads the clock
//! (`today` is passed in) or the OS's randomness (one ChaCha8 stream seeded from `seed`).
//!
//! What it models (DOMAIN.md): kanji names with matching katakana readings, old/variant kanji
//! (髙/﨑/齋/邊/澤/櫻/廣/國/濱/嶋/𠮷…) in a share of names; Japanese addresses with postal codes of the
//! right prefecture; insurers of every 法別 (01, 02, 06, 07, 31–34, 39, 63, 67, 72–75) and 6-digit
//! municipal NHI numbers, all with valid check digits; households (insured + dependents sharing
//! insurer/symbol/number with their own branch); job changes (old period lost with reason 03, new one
//! acquired after a gap or the same day); deaths, public assistance, moves abroad; 75+ people on their
//! prefecture's 後期高齢者医療広域連合 from the 75th birthday; co-payment shares by age.
//!
//! The tables are fictional where they name employers; place names and postal prefixes are real
//! enough to be plausible, not a postal database.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{Datelike, Days, Months, NaiveDate};
use onshi_model::ids::luhn_check_digit;
use onshi_model::{
    Branch, CardClass, CardId, CardNumber, CardSymbol, InsurerNumber, LossReason, PersonId,
    PostalCode, Qualification, Relationship, Sex,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthParams {
    /// Number of distinct people (person ids `P0000001`…).
    pub people: usize,
    pub seed: u64,
    /// The registry's "today": ages, shares and which periods are current are computed against it.
    pub today: NaiveDate,
}

/// Counts over what was generated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SynthSummary {
    pub people: usize,
    pub households: usize,
    /// Lines (qualification periods).
    pub periods: usize,
    /// People with a My Number card id.
    pub with_card_id: usize,
    /// Periods valid on `today`.
    pub valid_today: usize,
    /// Periods with a lost date.
    pub lost: usize,
    /// People with a period lost for 03 (joined other insurance: job change, retirement, turning 75).
    pub changed_insurer: usize,
    /// People valid today on a 後期高齢者医療 (法別 39) period.
    pub late_elderly: usize,
    /// People whose name has an old/variant kanji.
    pub variant_kanji: usize,
    /// Distinct insurer numbers used.
    pub insurers: usize,
}

/// Periods a demo can use to print example requests that work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Examples {
    /// An insured person's (本人) period valid today, with symbol and branch (not 法別 39).
    pub valid_insured: Option<Qualification>,
    /// A period lost for 03 (job change) whose person has a newer period valid today.
    pub lost_with_newer: Option<Qualification>,
    /// That newer period.
    pub newer: Option<Qualification>,
    /// A period valid today of a person with a card id.
    pub card_holder: Option<Qualification>,
}

/// All qualification periods, ordered by person id then acquired date.
pub fn generate(params: &SynthParams) -> Vec<Qualification> {
    let tables = Tables::new();
    let mut g = Gen::new(&tables, params);
    let mut out = Vec::with_capacity(params.people + params.people / 4);
    while let Some(batch) = g.next_household() {
        out.extend(batch);
    }
    out
}

/// Writes one registry JSONL line per period (the same periods as [`generate`], streamed household
/// by household) and returns the counts.
pub fn write_jsonl(
    params: &SynthParams,
    out: &mut impl std::io::Write,
) -> std::io::Result<SynthSummary> {
    let tables = Tables::new();
    let mut g = Gen::new(&tables, params);
    let mut acc = Accumulator::default();
    let mut line = Vec::with_capacity(1024);
    while let Some(batch) = g.next_household() {
        for q in &batch {
            line.clear();
            registry_line(q, &mut line);
            out.write_all(&line)?;
        }
        acc.add(&batch, params.today);
    }
    out.flush()?;
    Ok(acc.finish(g.households))
}

/// `q.to_registry_json()` plus a newline, written directly: the same bytes (a test holds them equal)
/// several times faster in a debug build, where the model's derived serializer is not optimised.
fn registry_line(q: &Qualification, buf: &mut Vec<u8>) {
    fn text(buf: &mut Vec<u8>, s: &str) {
        if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            buf.push(b'"');
            buf.extend_from_slice(s.as_bytes());
            buf.push(b'"');
        } else {
            buf.extend_from_slice(serde_json::to_string(s).unwrap_or_default().as_bytes());
        }
    }
    fn opt(buf: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => text(buf, s),
            None => buf.extend_from_slice(b"null"),
        }
    }
    fn date(buf: &mut Vec<u8>, d: NaiveDate) {
        let (y, m, dd) = (d.year(), d.month(), d.day());
        if (0..=9999).contains(&y) {
            let mut b = *b"\"0000-00-00\"";
            for (i, v) in [
                (1, y as u32 / 1000),
                (2, y as u32 / 100 % 10),
                (3, y as u32 / 10 % 10),
                (4, y as u32 % 10),
                (6, m / 10),
                (7, m % 10),
                (9, dd / 10),
                (10, dd % 10),
            ] {
                b[i] = b'0' + v as u8;
            }
            buf.extend_from_slice(&b);
        } else {
            buf.extend_from_slice(serde_json::to_string(&d).unwrap_or_default().as_bytes());
        }
    }
    let field = |buf: &mut Vec<u8>, name: &str| {
        buf.extend_from_slice(if name == "person_id" { b"{\"" } else { b",\"" });
        buf.extend_from_slice(name.as_bytes());
        buf.extend_from_slice(b"\":");
    };
    field(buf, "person_id");
    text(buf, q.person_id.as_str());
    field(buf, "card_id");
    opt(buf, q.card_id.as_ref().map(|c| c.as_str()));
    field(buf, "insurer_number");
    text(buf, q.insurer_number.as_str());
    field(buf, "insurer_name");
    text(buf, &q.insurer_name);
    field(buf, "card_class");
    text(buf, q.card_class.as_str());
    field(buf, "symbol");
    opt(buf, q.symbol.as_ref().map(|c| c.as_str()));
    field(buf, "number");
    text(buf, q.number.as_str());
    field(buf, "branch");
    opt(buf, q.branch.as_ref().map(|c| c.as_str()));
    field(buf, "relationship");
    text(
        buf,
        match q.relationship {
            Relationship::Insured => "insured",
            Relationship::Dependent => "dependent",
        },
    );
    field(buf, "name");
    text(buf, &q.name);
    field(buf, "name_kana");
    text(buf, &q.name_kana);
    field(buf, "sex");
    text(
        buf,
        match q.sex {
            Sex::Male => "male",
            Sex::Female => "female",
            Sex::Unset => "unset",
        },
    );
    field(buf, "birth_date");
    date(buf, q.birth_date);
    field(buf, "address");
    text(buf, &q.address);
    field(buf, "postal_code");
    opt(buf, q.postal_code.as_ref().map(|c| c.as_str()));
    field(buf, "acquired_on");
    date(buf, q.acquired_on);
    field(buf, "lost_on");
    match q.lost_on {
        Some(d) => date(buf, d),
        None => buf.extend_from_slice(b"null"),
    }
    field(buf, "loss_reason");
    opt(
        buf,
        q.loss_reason.map(|r| match r {
            LossReason::Death => "death",
            LossReason::PublicAssistance => "public_assistance",
            LossReason::JoinedOtherInsurance => "joined_other_insurance",
            LossReason::Other => "other",
        }),
    );
    field(buf, "share_percent");
    buf.extend_from_slice(q.share_percent.to_string().as_bytes());
    buf.extend_from_slice(b"}\n");
}

/// Counts over a list of periods (households counted as distinct people's first insurer keys is not
/// recoverable from the lines, so `households` is 0 here).
pub fn summarize(periods: &[Qualification], today: NaiveDate) -> SynthSummary {
    let mut acc = Accumulator::default();
    acc.add(periods, today);
    acc.finish(0)
}

/// Picks example periods for a demo (see [`Examples`]). Deterministic: the first that fits, in order.
pub fn pick_examples(periods: &[Qualification], today: NaiveDate) -> Examples {
    let mut ex = Examples::default();
    let mut i = 0;
    while i < periods.len() {
        let mut j = i + 1;
        while j < periods.len() && periods[j].person_id == periods[i].person_id {
            j += 1;
        }
        let person = &periods[i..j];
        for q in person {
            if ex.valid_insured.is_none()
                && q.is_valid_on(today)
                && q.relationship == Relationship::Insured
                && q.symbol.is_some()
                && q.branch.is_some()
                && q.insurer_number.houbetsu() != Some("39")
            {
                ex.valid_insured = Some(q.clone());
            }
            if ex.card_holder.is_none() && q.card_id.is_some() && q.is_valid_on(today) {
                ex.card_holder = Some(q.clone());
            }
            if ex.lost_with_newer.is_none()
                && q.loss_reason == Some(LossReason::JoinedOtherInsurance)
                && let Some(lost) = q.lost_on
                && let Some(newer) = person
                    .iter()
                    .find(|n| n.acquired_on >= lost && n.is_valid_on(today))
            {
                ex.lost_with_newer = Some(q.clone());
                ex.newer = Some(newer.clone());
            }
        }
        if ex.valid_insured.is_some() && ex.lost_with_newer.is_some() && ex.card_holder.is_some() {
            break;
        }
        i = j;
    }
    ex
}

/// Characters that mark an old or variant form of a kanji (旧字・異体字) in names.
pub const VARIANT_KANJI: &str = "髙﨑齋齊邊邉澤櫻廣國濱嶋瀧𠮷冨關桒榮惠眞";

/// Whether a name contains an old/variant kanji of [`VARIANT_KANJI`].
pub fn has_variant_kanji(name: &str) -> bool {
    name.chars().any(|c| VARIANT_KANJI.contains(c))
}

// ---------------------------------------------------------------------------------------------
// Dates and shares

/// 後期高齢者医療 started on this day; nobody was on 法別 39 before it.
const KOUKI_START: NaiveDate = ymd(2008, 4, 1);
/// 退職者医療 (法別 67) took no new entrants after this day.
const TAISHOKU_LAST_ENTRY: NaiveDate = ymd(2015, 3, 31);
/// Branch numbers (枝番) were introduced from about this day; cards lost before it may lack one.
const BRANCH_START: NaiveDate = ymd(2021, 4, 1);

const fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    match NaiveDate::from_ymd_opt(y, m, d) {
        Some(d) => d,
        None => panic!("bad constant date"),
    }
}

/// The date `n` years after `d` (29 February → 28 February).
fn add_years(d: NaiveDate, n: u32) -> NaiveDate {
    d.checked_add_months(Months::new(12 * n)).unwrap_or(d)
}

fn sub_years(d: NaiveDate, n: u32) -> NaiveDate {
    d.checked_sub_months(Months::new(12 * n)).unwrap_or(d)
}

fn add_days(d: NaiveDate, n: u64) -> NaiveDate {
    d.checked_add_days(Days::new(n)).unwrap_or(d)
}

fn sub_days(d: NaiveDate, n: u64) -> NaiveDate {
    d.checked_sub_days(Days::new(n)).unwrap_or(d)
}

/// Age in completed years on `on`.
pub fn age_on(birth: NaiveDate, on: NaiveDate) -> u32 {
    let mut age = (on.year() - birth.year()).max(0) as u32;
    while age > 0 && add_years(birth, age) > on {
        age -= 1;
    }
    age
}

/// Last day of the preschool share: the first 31 March on or after the day before the 6th birthday.
fn preschool_last_day(birth: NaiveDate) -> NaiveDate {
    let reach6 = sub_days(add_years(birth, 6), 1);
    let march31 = ymd(reach6.year(), 3, 31);
    if reach6 <= march31 {
        march31
    } else {
        ymd(reach6.year() + 1, 3, 31)
    }
}

/// First day of the 70–74 share: the 1st of the month after the 70th birthday's month, or that
/// month's 1st for someone born on the 1st.
fn elderly70_first_day(birth: NaiveDate) -> NaiveDate {
    let b70 = add_years(birth, 70);
    if b70.day() == 1 {
        b70
    } else {
        let first = b70.with_day(1).unwrap_or(b70);
        first.checked_add_months(Months::new(1)).unwrap_or(b70)
    }
}

/// The co-payment share on `on` by the age rules, with the person's income-dependent choices.
fn share_on(birth: NaiveDate, on: NaiveDate, share70: u8, share75: u8) -> u8 {
    if on >= add_years(birth, 75) {
        share75
    } else if on >= elderly70_first_day(birth) {
        share70
    } else if on <= preschool_last_day(birth) {
        20
    } else {
        30
    }
}

// ---------------------------------------------------------------------------------------------
// Tables

/// (prefecture name, short name used in insurer branch names), index = code − 1.
const PREFS: [(&str, &str); 47] = [
    ("北海道", "北海道"),
    ("青森県", "青森"),
    ("岩手県", "岩手"),
    ("宮城県", "宮城"),
    ("秋田県", "秋田"),
    ("山形県", "山形"),
    ("福島県", "福島"),
    ("茨城県", "茨城"),
    ("栃木県", "栃木"),
    ("群馬県", "群馬"),
    ("埼玉県", "埼玉"),
    ("千葉県", "千葉"),
    ("東京都", "東京"),
    ("神奈川県", "神奈川"),
    ("新潟県", "新潟"),
    ("富山県", "富山"),
    ("石川県", "石川"),
    ("福井県", "福井"),
    ("山梨県", "山梨"),
    ("長野県", "長野"),
    ("岐阜県", "岐阜"),
    ("静岡県", "静岡"),
    ("愛知県", "愛知"),
    ("三重県", "三重"),
    ("滋賀県", "滋賀"),
    ("京都府", "京都"),
    ("大阪府", "大阪"),
    ("兵庫県", "兵庫"),
    ("奈良県", "奈良"),
    ("和歌山県", "和歌山"),
    ("鳥取県", "鳥取"),
    ("島根県", "島根"),
    ("岡山県", "岡山"),
    ("広島県", "広島"),
    ("山口県", "山口"),
    ("徳島県", "徳島"),
    ("香川県", "香川"),
    ("愛媛県", "愛媛"),
    ("高知県", "高知"),
    ("福岡県", "福岡"),
    ("佐賀県", "佐賀"),
    ("長崎県", "長崎"),
    ("熊本県", "熊本"),
    ("大分県", "大分"),
    ("宮崎県", "宮崎"),
    ("鹿児島県", "鹿児島"),
    ("沖縄県", "沖縄"),
];

/// (prefecture code, municipality as written in an address, NHI insurer (the municipality), first 3
/// digits of its postal codes, 3-digit municipal code for its NHI number, weight ≈ population in
/// 10,000s, rural (大字/番地 addresses)).
type CityRow = (u8, &'static str, &'static str, u16, u16, u32, bool);
const CITIES: &[CityRow] = &[
    (1, "札幌市中央区", "札幌市", 60, 100, 25, false),
    (1, "札幌市北区", "札幌市", 1, 100, 28, false),
    (1, "旭川市", "旭川市", 70, 204, 32, false),
    (1, "函館市", "函館市", 40, 202, 24, false),
    (1, "虻田郡倶知安町", "倶知安町", 44, 400, 2, true),
    (2, "青森市", "青森市", 30, 201, 27, false),
    (2, "八戸市", "八戸市", 31, 203, 22, false),
    (2, "弘前市", "弘前市", 36, 202, 16, false),
    (3, "盛岡市", "盛岡市", 20, 201, 28, false),
    (3, "一関市", "一関市", 21, 209, 11, false),
    (3, "岩手郡雫石町", "雫石町", 20, 301, 2, true),
    (4, "仙台市青葉区", "仙台市", 980, 100, 30, false),
    (4, "仙台市泉区", "仙台市", 981, 100, 21, false),
    (4, "石巻市", "石巻市", 986, 202, 14, false),
    (5, "秋田市", "秋田市", 10, 201, 30, false),
    (5, "横手市", "横手市", 13, 203, 9, false),
    (6, "山形市", "山形市", 990, 201, 24, false),
    (6, "鶴岡市", "鶴岡市", 997, 203, 12, false),
    (7, "福島市", "福島市", 960, 201, 27, false),
    (7, "郡山市", "郡山市", 963, 203, 32, false),
    (7, "いわき市", "いわき市", 970, 204, 32, false),
    (8, "水戸市", "水戸市", 310, 201, 27, false),
    (8, "つくば市", "つくば市", 305, 220, 24, false),
    (8, "日立市", "日立市", 317, 202, 17, false),
    (9, "宇都宮市", "宇都宮市", 320, 201, 51, false),
    (9, "小山市", "小山市", 323, 208, 17, false),
    (10, "前橋市", "前橋市", 371, 201, 33, false),
    (10, "高崎市", "高崎市", 370, 202, 37, false),
    (11, "さいたま市浦和区", "さいたま市", 330, 100, 17, false),
    (11, "さいたま市大宮区", "さいたま市", 330, 100, 12, false),
    (11, "川口市", "川口市", 332, 203, 60, false),
    (11, "川越市", "川越市", 350, 201, 35, false),
    (11, "所沢市", "所沢市", 359, 208, 34, false),
    (12, "千葉市中央区", "千葉市", 260, 100, 21, false),
    (12, "船橋市", "船橋市", 273, 204, 64, false),
    (12, "柏市", "柏市", 277, 217, 43, false),
    (12, "市川市", "市川市", 272, 203, 49, false),
    (13, "千代田区", "千代田区", 101, 101, 7, false),
    (13, "新宿区", "新宿区", 160, 104, 35, false),
    (13, "世田谷区", "世田谷区", 154, 112, 92, false),
    (13, "練馬区", "練馬区", 176, 120, 74, false),
    (13, "大田区", "大田区", 144, 111, 73, false),
    (13, "足立区", "足立区", 120, 121, 69, false),
    (13, "江戸川区", "江戸川区", 132, 123, 69, false),
    (13, "杉並区", "杉並区", 166, 115, 57, false),
    (13, "板橋区", "板橋区", 173, 119, 57, false),
    (13, "八王子市", "八王子市", 192, 201, 56, false),
    (13, "町田市", "町田市", 194, 209, 43, false),
    (13, "府中市", "府中市", 183, 206, 26, false),
    (14, "横浜市中区", "横浜市", 231, 100, 15, false),
    (14, "横浜市港北区", "横浜市", 222, 100, 36, false),
    (14, "横浜市青葉区", "横浜市", 225, 100, 31, false),
    (14, "川崎市中原区", "川崎市", 211, 130, 26, false),
    (14, "川崎市川崎区", "川崎市", 210, 130, 23, false),
    (14, "相模原市中央区", "相模原市", 252, 150, 27, false),
    (14, "藤沢市", "藤沢市", 251, 205, 44, false),
    (14, "横須賀市", "横須賀市", 238, 201, 39, false),
    (15, "新潟市中央区", "新潟市", 951, 100, 18, false),
    (15, "長岡市", "長岡市", 940, 202, 26, false),
    (15, "上越市", "上越市", 943, 222, 19, false),
    (16, "富山市", "富山市", 930, 201, 41, false),
    (16, "高岡市", "高岡市", 933, 202, 17, false),
    (17, "金沢市", "金沢市", 920, 201, 46, false),
    (17, "小松市", "小松市", 923, 203, 11, false),
    (18, "福井市", "福井市", 910, 201, 26, false),
    (18, "敦賀市", "敦賀市", 914, 202, 6, false),
    (19, "甲府市", "甲府市", 400, 201, 19, false),
    (
        19,
        "南都留郡富士河口湖町",
        "富士河口湖町",
        401,
        430,
        3,
        true,
    ),
    (20, "長野市", "長野市", 380, 201, 37, false),
    (20, "松本市", "松本市", 390, 202, 24, false),
    (20, "北佐久郡軽井沢町", "軽井沢町", 389, 321, 2, true),
    (21, "岐阜市", "岐阜市", 500, 201, 40, false),
    (21, "大垣市", "大垣市", 503, 202, 16, false),
    (22, "静岡市葵区", "静岡市", 420, 100, 25, false),
    (22, "浜松市中央区", "浜松市", 430, 130, 50, false),
    (22, "沼津市", "沼津市", 410, 203, 19, false),
    (23, "名古屋市中区", "名古屋市", 460, 100, 10, false),
    (23, "名古屋市千種区", "名古屋市", 464, 100, 16, false),
    (23, "名古屋市緑区", "名古屋市", 458, 100, 25, false),
    (23, "豊田市", "豊田市", 471, 211, 42, false),
    (23, "岡崎市", "岡崎市", 444, 202, 38, false),
    (23, "一宮市", "一宮市", 491, 203, 38, false),
    (24, "津市", "津市", 514, 201, 27, false),
    (24, "四日市市", "四日市市", 510, 202, 31, false),
    (25, "大津市", "大津市", 520, 201, 34, false),
    (25, "草津市", "草津市", 525, 206, 14, false),
    (26, "京都市中京区", "京都市", 604, 100, 11, false),
    (26, "京都市左京区", "京都市", 606, 100, 16, false),
    (26, "宇治市", "宇治市", 611, 204, 18, false),
    (27, "大阪市北区", "大阪市", 530, 100, 14, false),
    (27, "大阪市住吉区", "大阪市", 558, 100, 15, false),
    (27, "大阪市平野区", "大阪市", 547, 100, 19, false),
    (27, "堺市堺区", "堺市", 590, 140, 15, false),
    (27, "豊中市", "豊中市", 560, 203, 40, false),
    (27, "東大阪市", "東大阪市", 577, 227, 48, false),
    (27, "枚方市", "枚方市", 573, 210, 39, false),
    (28, "神戸市中央区", "神戸市", 650, 100, 14, false),
    (28, "神戸市垂水区", "神戸市", 655, 100, 21, false),
    (28, "姫路市", "姫路市", 670, 201, 53, false),
    (28, "西宮市", "西宮市", 662, 204, 48, false),
    (28, "尼崎市", "尼崎市", 660, 202, 46, false),
    (29, "奈良市", "奈良市", 630, 201, 35, false),
    (29, "橿原市", "橿原市", 634, 205, 12, false),
    (30, "和歌山市", "和歌山市", 640, 201, 36, false),
    (30, "田辺市", "田辺市", 646, 206, 7, false),
    (31, "鳥取市", "鳥取市", 680, 201, 18, false),
    (31, "米子市", "米子市", 683, 202, 15, false),
    (32, "松江市", "松江市", 690, 201, 20, false),
    (32, "出雲市", "出雲市", 693, 203, 17, false),
    (33, "岡山市北区", "岡山市", 700, 100, 30, false),
    (33, "倉敷市", "倉敷市", 710, 202, 47, false),
    (34, "広島市中区", "広島市", 730, 100, 14, false),
    (34, "広島市安佐南区", "広島市", 731, 100, 24, false),
    (34, "福山市", "福山市", 720, 207, 46, false),
    (35, "下関市", "下関市", 750, 201, 25, false),
    (35, "山口市", "山口市", 753, 203, 19, false),
    (36, "徳島市", "徳島市", 770, 201, 25, false),
    (36, "阿南市", "阿南市", 774, 204, 7, false),
    (37, "高松市", "高松市", 760, 201, 42, false),
    (37, "丸亀市", "丸亀市", 763, 202, 11, false),
    (38, "松山市", "松山市", 790, 201, 50, false),
    (38, "今治市", "今治市", 794, 202, 15, false),
    (39, "高知市", "高知市", 780, 201, 32, false),
    (39, "四万十市", "四万十市", 787, 210, 3, false),
    (40, "福岡市中央区", "福岡市", 810, 130, 20, false),
    (40, "福岡市東区", "福岡市", 812, 130, 32, false),
    (40, "北九州市小倉北区", "北九州市", 803, 100, 18, false),
    (40, "久留米市", "久留米市", 830, 203, 30, false),
    (41, "佐賀市", "佐賀市", 840, 201, 23, false),
    (41, "唐津市", "唐津市", 847, 202, 12, false),
    (42, "長崎市", "長崎市", 850, 201, 40, false),
    (42, "佐世保市", "佐世保市", 857, 202, 24, false),
    (43, "熊本市中央区", "熊本市", 860, 100, 19, false),
    (43, "熊本市東区", "熊本市", 862, 100, 19, false),
    (43, "阿蘇郡小国町", "小国町", 869, 423, 1, true),
    (44, "大分市", "大分市", 870, 201, 47, false),
    (44, "別府市", "別府市", 874, 202, 11, false),
    (45, "宮崎市", "宮崎市", 880, 201, 40, false),
    (45, "都城市", "都城市", 885, 202, 16, false),
    (46, "鹿児島市", "鹿児島市", 890, 201, 59, false),
    (46, "霧島市", "霧島市", 899, 218, 12, false),
    (47, "那覇市", "那覇市", 900, 201, 32, false),
    (47, "沖縄市", "沖縄市", 904, 211, 14, false),
    (47, "国頭郡恩納村", "恩納村", 904, 324, 1, true),
];

/// Common town names (町名), used for municipalities without their own list.
const URBAN_TOWNS: &[&str] = &[
    "本町",
    "中央",
    "栄町",
    "緑町",
    "旭町",
    "幸町",
    "錦町",
    "東町",
    "西町",
    "南町",
    "北町",
    "大手町",
    "桜木町",
    "新町",
    "元町",
    "寿町",
    "宮前",
    "松原",
    "若葉",
    "青葉台",
    "泉町",
    "日吉町",
    "住吉町",
    "港町",
    "駅前",
    "花園",
    "富士見",
    "平和台",
    "昭和町",
    "東雲",
    "中町",
    "上町",
    "山手町",
    "美原",
    "千代田",
    "春日",
    "八幡町",
    "弥生町",
    "末広町",
    "朝日町",
];

const RURAL_TOWNS: &[&str] = &[
    "大字中山",
    "大字上野",
    "大字西原",
    "大字本郷",
    "大字新田",
    "大字下川",
    "字東原",
    "大字宮田",
    "大字長者原",
    "大字大野",
];

fn towns_for(city: &str, rural: bool) -> &'static [&'static str] {
    if rural {
        return RURAL_TOWNS;
    }
    match city {
        "千代田区" => &[
            "霞が関",
            "丸の内",
            "神田小川町",
            "一番町",
            "飯田橋",
            "神田神保町",
            "麹町",
        ],
        "新宿区" => &[
            "西新宿",
            "高田馬場",
            "神楽坂",
            "大久保",
            "四谷",
            "百人町",
            "早稲田町",
        ],
        "世田谷区" => &[
            "三軒茶屋",
            "成城",
            "北沢",
            "用賀",
            "桜新町",
            "太子堂",
            "経堂",
            "上北沢",
        ],
        "横浜市中区" => &[
            "山下町",
            "本町",
            "元町",
            "山手町",
            "日本大通",
            "伊勢佐木町",
            "本牧町",
        ],
        "名古屋市中区" => &["栄", "錦", "丸の内", "大須", "新栄", "千代田"],
        "大阪市北区" => &["梅田", "天神橋", "中之島", "扇町", "天満", "豊崎"],
        "福岡市中央区" => &["天神", "大名", "赤坂", "警固", "薬院", "今泉"],
        _ => URBAN_TOWNS,
    }
}

const BUILDINGS: &[&str] = &[
    "サンハイツ",
    "コーポ",
    "メゾン",
    "グランドハイツ",
    "パークサイド",
    "レジデンス",
    "ハイム",
    "ヴィラ",
    "シャトー",
    "ロイヤルマンション",
];

/// Surnames: kanji and katakana reading, in rough order of frequency.
const SURNAMES: &str = "\
佐藤 サトウ 鈴木 スズキ 高橋 タカハシ 田中 タナカ 伊藤 イトウ 渡辺 ワタナベ 山本 ヤマモト 中村 ナカムラ 小林 コバヤシ 加藤 カトウ \
吉田 ヨシダ 山田 ヤマダ 佐々木 ササキ 山口 ヤマグチ 松本 マツモト 井上 イノウエ 木村 キムラ 林 ハヤシ 斎藤 サイトウ 清水 シミズ \
山崎 ヤマザキ 森 モリ 池田 イケダ 橋本 ハシモト 阿部 アベ 石川 イシカワ 山下 ヤマシタ 中島 ナカジマ 石井 イシイ 小川 オガワ \
前田 マエダ 岡田 オカダ 長谷川 ハセガワ 藤田 フジタ 後藤 ゴトウ 近藤 コンドウ 村上 ムラカミ 遠藤 エンドウ 青木 アオキ 坂本 サカモト \
斉藤 サイトウ 福田 フクダ 太田 オオタ 西村 ニシムラ 藤井 フジイ 金子 カネコ 岡本 オカモト 藤原 フジワラ 中野 ナカノ 三浦 ミウラ \
原田 ハラダ 中川 ナカガワ 松田 マツダ 竹内 タケウチ 小野 オノ 田村 タムラ 中山 ナカヤマ 和田 ワダ 石田 イシダ 森田 モリタ \
上田 ウエダ 原 ハラ 内田 ウチダ 柴田 シバタ 酒井 サカイ 宮崎 ミヤザキ 横山 ヨコヤマ 高木 タカギ 安藤 アンドウ 宮本 ミヤモト \
大野 オオノ 小島 コジマ 谷口 タニグチ 今井 イマイ 工藤 クドウ 高田 タカダ 増田 マスダ 丸山 マルヤマ 杉山 スギヤマ 村田 ムラタ \
大塚 オオツカ 小山 コヤマ 藤本 フジモト 平野 ヒラノ 新井 アライ 河野 コウノ 上野 ウエノ 武田 タケダ 野口 ノグチ 松井 マツイ \
千葉 チバ 岩崎 イワサキ 菅原 スガワラ 木下 キノシタ 久保 クボ 佐野 サノ 野村 ノムラ 松尾 マツオ 市川 イチカワ 菊地 キクチ \
杉本 スギモト 古川 フルカワ 大西 オオニシ 島田 シマダ 水野 ミズノ 桜井 サクライ 高野 タカノ 渡部 ワタナベ 吉川 ヨシカワ 山内 ヤマウチ \
西田 ニシダ 飯田 イイダ 菊池 キクチ 西川 ニシカワ 小松 コマツ 北村 キタムラ 安田 ヤスダ 五十嵐 イガラシ 川口 カワグチ 平田 ヒラタ \
関 セキ 中田 ナカタ 久保田 クボタ 服部 ハットリ 東 ヒガシ 岩田 イワタ 土屋 ツチヤ 川崎 カワサキ 福島 フクシマ 本田 ホンダ \
辻 ツジ 樋口 ヒグチ 秋山 アキヤマ 田口 タグチ 永井 ナガイ 山中 ヤマナカ 中西 ナカニシ 吉村 ヨシムラ 川上 カワカミ 大橋 オオハシ \
石原 イシハラ 松岡 マツオカ 浅野 アサノ 馬場 ババ 荒木 アラキ 大久保 オオクボ 野田 ノダ 小沢 オザワ 田辺 タナベ 川村 カワムラ \
星野 ホシノ 黒田 クロダ 堀 ホリ 尾崎 オザキ 望月 モチヅキ 永田 ナガタ 熊谷 クマガイ 内藤 ナイトウ 松村 マツムラ 西山 ニシヤマ \
大谷 オオタニ 平井 ヒライ 大島 オオシマ 岩本 イワモト 片山 カタヤマ 本間 ホンマ 早川 ハヤカワ 横田 ヨコタ 岡崎 オカザキ 荒井 アライ \
大石 オオイシ 鎌田 カマタ 成田 ナリタ 宮田 ミヤタ 小田 オダ 石橋 イシバシ 篠原 シノハラ 須藤 スドウ 河合 カワイ 大川 オオカワ \
高山 タカヤマ 桑原 クワバラ 吉岡 ヨシオカ 松下 マツシタ 菅野 カンノ 岡 オカ 中尾 ナカオ 小池 コイケ 奥村 オクムラ 浜田 ハマダ \
広瀬 ヒロセ 沢田 サワダ 国分 コクブン 柳沢 ヤナギサワ 滝沢 タキザワ 黒沢 クロサワ 大沢 オオサワ 藤沢 フジサワ 富田 トミタ 宮下 ミヤシタ \
金田 カネダ 上村 ウエムラ 森本 モリモト 飯島 イイジマ 日高 ヒダカ 比嘉 ヒガ 金城 キンジョウ 大城 オオシロ 宮城 ミヤギ 新垣 アラカキ \
玉城 タマキ 照屋 テルヤ 佐久間 サクマ 古賀 コガ 緒方 オガタ 有村 アリムラ 東海林 ショウジ 小野寺 オノデラ 及川 オイカワ 高瀬 タカセ \
吉野 ヨシノ 坂口 サカグチ 目黒 メグロ 一ノ瀬 イチノセ 八木 ヤギ 根本 ネモト 竹田 タケダ 北川 キタガワ 松浦 マツウラ 安井 ヤスイ \
榎本 エノモト 長尾 ナガオ 河村 カワムラ 堀内 ホリウチ 今村 イマムラ 西岡 ニシオカ 足立 アダチ 塚本 ツカモト 秋元 アキモト 小西 コニシ \
藤川 フジカワ 野中 ノナカ 植田 ウエダ 関口 セキグチ 大森 オオモリ 水谷 ミズタニ 岩井 イワイ 稲垣 イナガキ 田島 タジマ 青山 アオヤマ \
広田 ヒロタ 桑田 クワタ 長島 ナガシマ 寺田 テラダ 相沢 アイザワ 浜口 ハマグチ 宮沢 ミヤザワ 奥田 オクダ 野崎 ノザキ";

/// Standard form → old/variant forms used by some families (same reading).
const SURNAME_VARIANTS: &str = "\
高橋:髙橋 高田:髙田 高木:髙木 高野:髙野 高山:髙山 山崎:山﨑 宮崎:宮﨑 岡崎:岡﨑 川崎:川﨑 尾崎:尾﨑 岩崎:岩﨑 野崎:野﨑 \
斎藤:齋藤,齊藤 渡辺:渡邊,渡邉 沢田:澤田 桜井:櫻井 広瀬:廣瀬 広田:廣田 国分:國分 浜田:濱田 浜口:濱口 島田:嶋田 \
小島:小嶋 中島:中嶋 大島:大嶋 飯島:飯嶋 長島:長嶋 田島:田嶋 柳沢:柳澤 滝沢:瀧澤,滝澤 黒沢:黒澤 大沢:大澤 藤沢:藤澤 小沢:小澤 \
相沢:相澤 宮沢:宮澤 吉田:𠮷田 吉村:𠮷村 吉川:𠮷川 富田:冨田 関:關 桑原:桒原";

/// Given names: kanji, katakana reading, generation (0 born before 1955, 1 1955–1989, 2 from 1990).
const MALE_NAMES: &str = "\
清 キヨシ 0 茂 シゲル 0 博 ヒロシ 0 勇 イサム 0 実 ミノル 0 進 ススム 0 正 タダシ 0 武 タケシ 0 勝 マサル 0 三郎 サブロウ 0 \
一郎 イチロウ 0 次郎 ジロウ 0 正男 マサオ 0 和夫 カズオ 0 昭 アキラ 0 稔 ミノル 0 修 オサム 0 豊 ユタカ 0 義雄 ヨシオ 0 幸雄 ユキオ 0 \
秀夫 ヒデオ 0 忠 タダシ 0 栄一 エイイチ 0 榮一 エイイチ 0 国男 クニオ 0 國男 クニオ 0 広志 ヒロシ 0 廣志 ヒロシ 0 保 タモツ 0 昇 ノボル 0 \
誠 マコト 1 浩 ヒロシ 1 健 ケン 1 大輔 ダイスケ 1 拓也 タクヤ 1 直樹 ナオキ 1 和也 カズヤ 1 達也 タツヤ 1 哲也 テツヤ 1 剛 ツヨシ 1 \
学 マナブ 1 聡 サトシ 1 健太 ケンタ 1 洋平 ヨウヘイ 1 隆之 タカユキ 1 英樹 ヒデキ 1 浩二 コウジ 1 雅之 マサユキ 1 修一 シュウイチ 1 淳 ジュン 1 \
智之 トモユキ 1 亮 リョウ 1 大介 ダイスケ 1 慎一 シンイチ 1 克也 カツヤ 1 裕介 ユウスケ 1 崇 タカシ 1 隆 タカシ 1 健一 ケンイチ 1 翔太 ショウタ 1 \
翔 ショウ 2 大翔 ヒロト 2 蓮 レン 2 悠真 ユウマ 2 陽翔 ハルト 2 湊 ミナト 2 蒼 アオイ 2 樹 イツキ 2 颯太 ソウタ 2 大和 ヤマト 2 \
陸 リク 2 拓海 タクミ 2 海斗 カイト 2 翼 ツバサ 2 涼 リョウ 2 駿 シュン 2 優斗 ユウト 2 大輝 ダイキ 2 悠斗 ユウト 2 颯 ハヤテ 2 \
律 リツ 2 朝陽 アサヒ 2 結翔 ユイト 2 蒼空 ソラ 2 碧 アオイ 2 陽向 ヒナタ 2 奏太 カナタ 2 蒼真 ソウマ 2 悠人 ユウト 2 健太 ケンタ 2";

const FEMALE_NAMES: &str = "\
和子 カズコ 0 幸子 サチコ 0 節子 セツコ 0 洋子 ヨウコ 0 恵子 ケイコ 0 惠子 ケイコ 0 京子 キョウコ 0 弘子 ヒロコ 0 美代子 ミヨコ 0 久子 ヒサコ 0 \
文子 フミコ 0 千代 チヨ 0 ハナ ハナ 0 キヨ キヨ 0 トミ トミ 0 静子 シズコ 0 光子 ミツコ 0 信子 ノブコ 0 芳子 ヨシコ 0 悦子 エツコ 0 \
照子 テルコ 0 昭子 アキコ 0 澄子 スミコ 0 君子 キミコ 0 登美子 トミコ 0 栄子 エイコ 0 榮子 エイコ 0 和枝 カズエ 0 静江 シズエ 0 咲子 サキコ 0 \
裕子 ユウコ 1 真由美 マユミ 1 明美 アケミ 1 由美子 ユミコ 1 直美 ナオミ 1 智子 トモコ 1 久美子 クミコ 1 美穂 ミホ 1 恵 メグミ 1 陽子 ヨウコ 1 \
純子 ジュンコ 1 香織 カオリ 1 愛 アイ 1 真理子 マリコ 1 眞理子 マリコ 1 奈美 ナミ 1 由香 ユカ 1 美香 ミカ 1 直子 ナオコ 1 麻衣 マイ 1 \
綾 アヤ 1 沙織 サオリ 1 理恵 リエ 1 千尋 チヒロ 1 典子 ノリコ 1 朋美 トモミ 1 亜希子 アキコ 1 彩 アヤ 1 舞 マイ 1 めぐみ メグミ 1 \
陽菜 ヒナ 2 結衣 ユイ 2 葵 アオイ 2 凛 リン 2 結菜 ユイナ 2 美咲 ミサキ 2 芽依 メイ 2 さくら サクラ 2 莉子 リコ 2 紬 ツムギ 2 \
陽葵 ヒマリ 2 結愛 ユア 2 杏 アン 2 美羽 ミウ 2 愛梨 アイリ 2 七海 ナナミ 2 花 ハナ 2 琴音 コトネ 2 咲良 サクラ 2 優奈 ユウナ 2 \
彩花 アヤカ 2 真央 マオ 2 遥 ハルカ 2 楓 カエデ 2 澪 ミオ 2 詩 ウタ 2 芽生 メイ 2 紗希 サキ 2 ひなた ヒナタ 2 心春 コハル 2";

/// Fictional employers' health-insurance societies (健康保険組合): (prefecture, name).
const KUMIAI: &[(u8, &str)] = &[
    (13, "霞が関健康保険組合"),
    (13, "関東電機工業健康保険組合"),
    (13, "日本精密機器健康保険組合"),
    (27, "大和化学健康保険組合"),
    (23, "富士見自動車健康保険組合"),
    (13, "中央商事健康保険組合"),
    (23, "東海鉄鋼健康保険組合"),
    (1, "北斗製薬健康保険組合"),
    (14, "みなと海運健康保険組合"),
    (13, "さくら情報システム健康保険組合"),
    (34, "瀬戸内造船健康保険組合"),
    (4, "あおば百貨店健康保険組合"),
    (27, "近畿印刷健康保険組合"),
    (13, "東京都食品産業健康保険組合"),
    (27, "大阪府機械工業健康保険組合"),
    (14, "神奈川県建設業健康保険組合"),
    (23, "愛知県自動車部品健康保険組合"),
    (13, "全国情報通信健康保険組合"),
    (13, "日本物流健康保険組合"),
    (26, "京阪電子健康保険組合"),
    (20, "信州精機健康保険組合"),
    (16, "北陸化成健康保険組合"),
    (40, "九州ガス健康保険組合"),
    (47, "琉球商事健康保険組合"),
    (4, "東北地方銀行健康保険組合"),
    (34, "広島自動車健康保険組合"),
    (22, "静岡楽器健康保険組合"),
    (15, "新潟米菓健康保険組合"),
    (12, "千葉石油化学健康保険組合"),
    (11, "埼玉流通健康保険組合"),
    (28, "兵庫県鉄工業健康保険組合"),
    (33, "岡山繊維健康保険組合"),
    (38, "四国紙業健康保険組合"),
    (1, "北海道農機健康保険組合"),
    (8, "常陽電工健康保険組合"),
    (10, "群馬精工健康保険組合"),
    (24, "三重石油化学健康保険組合"),
    (40, "筑紫商事健康保険組合"),
    (43, "熊本半導体健康保険組合"),
    (13, "日本薬品卸健康保険組合"),
];

/// National civil servants' mutual aid associations (法別 31), all numbered in Tokyo.
const KOKKA_KYOSAI: &[&str] = &[
    "財務省共済組合",
    "文部科学省共済組合",
    "厚生労働省共済組合",
    "国土交通省共済組合",
    "法務省共済組合",
    "農林水産省共済組合",
    "防衛省共済組合",
    "裁判所共済組合",
    "外務省共済組合",
    "経済産業省共済組合",
];

/// National health insurance associations (国民健康保険組合), 6-digit numbers: (prefecture, code, name).
const NHI_UNIONS: &[(u8, u16, &str)] = &[
    (13, 301, "東京都医師国民健康保険組合"),
    (13, 302, "全国建設工事業国民健康保険組合"),
    (27, 303, "大阪府歯科医師国民健康保険組合"),
    (13, 304, "東京美容国民健康保険組合"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Kyokai,
    Senin,
    Kumiai,
    Jieikan,
    Kyosai,
    Kouki,
    Tokurei,
    Taishoku,
    Nhi,
    NhiUnion,
}

#[derive(Debug, Clone)]
struct Insurer {
    number: InsurerNumber,
    name: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
struct Given {
    kanji: &'static str,
    kana: &'static str,
}

#[derive(Debug, Clone)]
struct Surname {
    kanji: &'static str,
    kana: &'static str,
    variants: Vec<&'static str>,
}

/// Everything fixed: names, places, insurers. Independent of the seed.
#[derive(Debug)]
struct Tables {
    surnames: Vec<Surname>,
    /// [sex 0 male / 1 female][generation 0..3]
    given: [[Vec<Given>; 3]; 2],
    city_cum: Vec<u32>,
    insurers: Vec<Insurer>,
    kyokai: Vec<usize>,
    kouki: Vec<usize>,
    chihou: Vec<usize>,
    shichoson: Vec<usize>,
    keisatsu: Vec<usize>,
    kouritsu: Vec<usize>,
    tokyo_shokuin: usize,
    shigaku: usize,
    senin: usize,
    jieikan: usize,
    kumiai: Vec<usize>,
    kokka: Vec<usize>,
    nhi_by_city: Vec<usize>,
    taishoku_by_city: Vec<usize>,
    unions: Vec<usize>,
    /// (特例退職 insurer, the employees' insurer its members retired from)
    tokurei: Vec<(usize, usize)>,
}

fn number8(houbetsu: &str, pref: u8, code: u16) -> String {
    let body = format!("{houbetsu}{pref:02}{code:03}");
    let check = luhn_check_digit(&body);
    format!("{body}{check}")
}

fn number6(pref: u8, code: u16) -> String {
    let body = format!("{pref:02}{code:03}");
    let check = luhn_check_digit(&body);
    format!("{body}{check}")
}

fn parse_given(s: &'static str) -> [Vec<Given>; 3] {
    let mut out: [Vec<Given>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let words: Vec<&str> = s.split_whitespace().collect();
    for w in words.chunks_exact(3) {
        let g = w[2].parse::<usize>().unwrap_or(1).min(2);
        out[g].push(Given {
            kanji: w[0],
            kana: w[1],
        });
    }
    out
}

impl Tables {
    fn new() -> Self {
        let mut variants: HashMap<&str, Vec<&str>> = HashMap::new();
        for entry in SURNAME_VARIANTS.split_whitespace() {
            if let Some((std, vars)) = entry.split_once(':') {
                variants.insert(std, vars.split(',').collect());
            }
        }
        let words: Vec<&'static str> = SURNAMES.split_whitespace().collect();
        let surnames = words
            .chunks_exact(2)
            .map(|w| Surname {
                kanji: w[0],
                kana: w[1],
                variants: variants.get(w[0]).cloned().unwrap_or_default(),
            })
            .collect();

        let mut city_cum = Vec::with_capacity(CITIES.len());
        let mut total = 0;
        for c in CITIES {
            total += c.5;
            city_cum.push(total);
        }

        let mut insurers = Vec::new();
        fn add(insurers: &mut Vec<Insurer>, number: String, name: String, kind: Kind) -> usize {
            let number = InsurerNumber::parse(&number)
                .expect("synthetic insurer numbers carry their check digit");
            insurers.push(Insurer { number, name, kind });
            insurers.len() - 1
        }
        let prefs = 1..=47u8;
        let kyokai: Vec<usize> = prefs
            .clone()
            .map(|p| {
                add(
                    &mut insurers,
                    number8("01", p, 1),
                    format!("全国健康保険協会{}支部", PREFS[p as usize - 1].1),
                    Kind::Kyokai,
                )
            })
            .collect();
        let senin = add(
            &mut insurers,
            number8("02", 13, 1),
            "全国健康保険協会船員保険部".into(),
            Kind::Senin,
        );
        let mut per_pref_seq = [0u16; 48];
        let kumiai: Vec<usize> = KUMIAI
            .iter()
            .map(|&(p, name)| {
                let code = 101 + per_pref_seq[p as usize] * 3;
                per_pref_seq[p as usize] += 1;
                add(
                    &mut insurers,
                    number8("06", p, code),
                    name.into(),
                    Kind::Kumiai,
                )
            })
            .collect();
        let jieikan = add(
            &mut insurers,
            number8("07", 13, 1),
            "防衛省".into(),
            Kind::Jieikan,
        );
        let kokka: Vec<usize> = KOKKA_KYOSAI
            .iter()
            .enumerate()
            .map(|(i, name)| {
                add(
                    &mut insurers,
                    number8("31", 13, 11 + i as u16),
                    (*name).into(),
                    Kind::Kyosai,
                )
            })
            .collect();
        let chihou: Vec<usize> = prefs
            .clone()
            .map(|p| {
                add(
                    &mut insurers,
                    number8("32", p, 1),
                    format!("地方職員共済組合{}支部", PREFS[p as usize - 1].0),
                    Kind::Kyosai,
                )
            })
            .collect();
        let shichoson: Vec<usize> = prefs
            .clone()
            .map(|p| {
                let pn = PREFS[p as usize - 1].0;
                let name = if p == 13 {
                    "東京都市町村職員共済組合".to_string()
                } else {
                    format!("{pn}市町村職員共済組合")
                };
                add(&mut insurers, number8("32", p, 2), name, Kind::Kyosai)
            })
            .collect();
        let tokyo_shokuin = add(
            &mut insurers,
            number8("32", 13, 3),
            "東京都職員共済組合".into(),
            Kind::Kyosai,
        );
        let keisatsu: Vec<usize> = prefs
            .clone()
            .map(|p| {
                add(
                    &mut insurers,
                    number8("33", p, 1),
                    format!("警察共済組合{}支部", PREFS[p as usize - 1].0),
                    Kind::Kyosai,
                )
            })
            .collect();
        let kouritsu: Vec<usize> = prefs
            .clone()
            .map(|p| {
                add(
                    &mut insurers,
                    number8("34", p, 1),
                    format!("公立学校共済組合{}支部", PREFS[p as usize - 1].1),
                    Kind::Kyosai,
                )
            })
            .collect();
        let shigaku = add(
            &mut insurers,
            number8("34", 13, 901),
            "日本私立学校振興・共済事業団".into(),
            Kind::Kyosai,
        );
        let kouki: Vec<usize> = prefs
            .clone()
            .map(|p| {
                add(
                    &mut insurers,
                    number8("39", p, 1),
                    format!("{}後期高齢者医療広域連合", PREFS[p as usize - 1].0),
                    Kind::Kouki,
                )
            })
            .collect();

        let mut tokurei = Vec::new();
        for &k in kumiai.iter().take(8) {
            let parent = &insurers[k];
            let (pref, code) = (
                parent.number.prefecture().parse::<u8>().unwrap_or(13),
                parent.number.as_str()[4..7].parse::<u16>().unwrap_or(0),
            );
            let name = format!("{}（特例退職）", parent.name);
            tokurei.push((
                add(
                    &mut insurers,
                    number8("63", pref, code),
                    name,
                    Kind::Tokurei,
                ),
                k,
            ));
        }
        for &k in kokka.iter().take(4) {
            let code = insurers[k].number.as_str()[4..7]
                .parse::<u16>()
                .unwrap_or(0);
            let name = format!("{}（特例退職）", insurers[k].name);
            tokurei.push((
                add(&mut insurers, number8("72", 13, code), name, Kind::Tokurei),
                k,
            ));
        }
        for (hb, parent) in [
            ("73", chihou[12]),
            ("74", keisatsu[12]),
            ("75", kouritsu[12]),
            ("75", shigaku),
        ] {
            let code = insurers[parent].number.as_str()[4..7]
                .parse::<u16>()
                .unwrap_or(0);
            let name = format!("{}（特例退職）", insurers[parent].name);
            tokurei.push((
                add(&mut insurers, number8(hb, 13, code), name, Kind::Tokurei),
                parent,
            ));
        }

        let mut nhi_seen: BTreeMap<(u8, u16), (usize, usize)> = BTreeMap::new();
        let mut nhi_by_city = Vec::with_capacity(CITIES.len());
        let mut taishoku_by_city = Vec::with_capacity(CITIES.len());
        for &(pref, _, nhi, _, code, _, _) in CITIES {
            let (n, t) = *nhi_seen.entry((pref, code)).or_insert_with(|| {
                let n = add(
                    &mut insurers,
                    number6(pref, code),
                    nhi.to_string(),
                    Kind::Nhi,
                );
                let t = add(
                    &mut insurers,
                    number8("67", pref, code),
                    format!("{nhi}（退職者医療）"),
                    Kind::Taishoku,
                );
                (n, t)
            });
            nhi_by_city.push(n);
            taishoku_by_city.push(t);
        }
        let unions = NHI_UNIONS
            .iter()
            .map(|&(p, code, name)| {
                add(&mut insurers, number6(p, code), name.into(), Kind::NhiUnion)
            })
            .collect();

        Tables {
            surnames,
            given: [parse_given(MALE_NAMES), parse_given(FEMALE_NAMES)],
            city_cum,
            insurers,
            kyokai,
            kouki,
            chihou,
            shichoson,
            keisatsu,
            kouritsu,
            tokyo_shokuin,
            shigaku,
            senin,
            jieikan,
            kumiai,
            kokka,
            nhi_by_city,
            taishoku_by_city,
            unions,
            tokurei,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Generation

#[derive(Debug, Clone)]
struct Member {
    id: PersonId,
    card: Option<CardId>,
    name: String,
    kana: String,
    sex: Sex,
    birth: NaiveDate,
    /// Share at 70–74 (30 with working-level income).
    share70: u8,
    /// Share at 75+ (10/20/30 by income).
    share75: u8,
}

#[derive(Debug, Clone)]
struct Home {
    pref: u8,
    city: usize,
    address: String,
    postal: PostalCode,
}

/// A household's card key under one insurer.
#[derive(Debug, Clone)]
struct Coverage {
    insurer: usize,
    symbol: Option<CardSymbol>,
    number: CardNumber,
}

#[derive(Debug)]
struct PeriodSpec<'c> {
    cov: &'c Coverage,
    branch: Option<u8>,
    relationship: Relationship,
    acquired: NaiveDate,
    lost: Option<(NaiveDate, LossReason)>,
}

#[derive(Debug)]
struct Gen<'t> {
    t: &'t Tables,
    rng: ChaCha8Rng,
    today: NaiveDate,
    remaining: usize,
    next_person: u64,
    next_card: u64,
    counters: Vec<u64>,
    households: usize,
}

impl<'t> Gen<'t> {
    fn new(t: &'t Tables, p: &SynthParams) -> Self {
        Gen {
            t,
            rng: ChaCha8Rng::seed_from_u64(p.seed),
            today: p.today,
            remaining: p.people,
            next_person: 0,
            next_card: 0,
            counters: vec![0; t.insurers.len()],
            households: 0,
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn pick(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n as u32) as usize
    }

    fn range(&mut self, lo: u32, hi_inclusive: u32) -> u32 {
        if hi_inclusive <= lo {
            lo
        } else {
            self.rng.random_range(lo..=hi_inclusive)
        }
    }

    /// A date in `[lo, hi]`; `lo` when the range is empty.
    fn date_between(&mut self, lo: NaiveDate, hi: NaiveDate) -> NaiveDate {
        let span = (hi - lo).num_days();
        if span <= 0 {
            lo
        } else {
            add_days(lo, self.rng.random_range(0..=span as u64))
        }
    }

    /// A birth date giving exactly `age` on today.
    fn birth_for_age(&mut self, age: u32) -> NaiveDate {
        let hi = sub_years(self.today, age);
        let lo = add_days(sub_years(self.today, age + 1), 1);
        self.date_between(lo, hi)
    }

    fn surname(&mut self) -> (&'static str, &'static str) {
        let n = self.t.surnames.len();
        let u: f64 = self.rng.random();
        let i = ((n as f64) * u.powf(1.5)) as usize;
        let s = &self.t.surnames[i.min(n - 1)];
        if !s.variants.is_empty() && self.chance(0.22) {
            let v = s.variants[self.pick(s.variants.len())];
            (v, s.kana)
        } else {
            (s.kanji, s.kana)
        }
    }

    fn member(
        &mut self,
        surname: (&'static str, &'static str),
        sex: Sex,
        birth: NaiveDate,
        share70_high: f64,
    ) -> Member {
        self.next_person += 1;
        let id =
            PersonId::parse(&format!("P{:07}", self.next_person)).expect("synthetic person id");
        let card = if self.chance(0.10) {
            self.next_card += 1;
            Some(CardId::parse(&format!("C{:07}", self.next_card)).expect("synthetic card id"))
        } else {
            None
        };
        let generation = match birth.year() {
            ..1955 => 0,
            1955..1990 => 1,
            _ => 2,
        };
        let generation = if self.chance(0.95) {
            generation
        } else {
            self.pick(3)
        };
        let list = &self.t.given[usize::from(sex == Sex::Female)][generation];
        let g = &list[self.pick(list.len())];
        let share70 = if self.chance(share70_high) { 30 } else { 20 };
        let share75 = match self.rng.random_range(0..100u32) {
            0..72 => 10,
            72..92 => 20,
            _ => 30,
        };
        Member {
            id,
            card,
            name: format!("{}\u{3000}{}", surname.0, g.kanji),
            kana: format!("{}\u{3000}{}", surname.1, g.kana),
            sex,
            birth,
            share70,
            share75,
        }
    }

    fn home(&mut self) -> Home {
        let total = *self.t.city_cum.last().unwrap_or(&1);
        let x = self.rng.random_range(0..total);
        let ci = self
            .t
            .city_cum
            .partition_point(|&c| c <= x)
            .min(CITIES.len() - 1);
        let (pref, city, _, postal3, _, _, rural) = CITIES[ci];
        let towns = towns_for(city, rural);
        let ti = self.pick(towns.len());
        let town = towns[ti];
        // The same town always has the same postal code.
        let h = (ci as u32)
            .wrapping_mul(7919)
            .wrapping_add((ti as u32).wrapping_mul(104_729))
            % 900;
        let low4 = (h % 90 + 1) + (h / 90) * 100;
        let postal =
            PostalCode::parse(&format!("{postal3:03}-{low4:04}")).expect("synthetic postal code");
        let c = self.range(1, 5);
        let b = self.range(1, 30);
        let g = self.range(1, 25);
        let place = if rural {
            if self.chance(0.5) {
                format!("{town}{}番地", self.range(1, 3000))
            } else {
                format!("{town}{}番地{}", self.range(1, 3000), self.range(1, 9))
            }
        } else {
            match self.rng.random_range(0..100u32) {
                0..50 => format!("{town}{c}-{b}-{g}"),
                50..75 => format!("{town}{c}丁目{b}番{g}号"),
                75..90 => {
                    let bldg = BUILDINGS[self.pick(BUILDINGS.len())];
                    let room = self.range(1, 8) * 100 + self.range(1, 12);
                    format!("{town}{c}-{b}-{g}\u{3000}{bldg}{room}")
                }
                90..95 => {
                    let kanji = ["一", "二", "三", "四", "五"][c as usize - 1];
                    format!("{town}{kanji}丁目{b}-{g}")
                }
                _ => {
                    let wide: String = format!("{c}-{b}-{g}")
                        .chars()
                        .map(|ch| {
                            if ch == '-' {
                                '－'
                            } else {
                                char::from_u32(ch as u32 + 0xFEE0).unwrap_or(ch)
                            }
                        })
                        .collect();
                    format!("{town}{wide}")
                }
            }
        };
        Home {
            pref,
            city: ci,
            address: format!("{}{city}{place}", PREFS[pref as usize - 1].0),
            postal,
        }
    }

    fn digits(&mut self, min_len: u32, max_len: u32) -> String {
        let len = self.range(min_len, max_len);
        let mut s = String::with_capacity(len as usize);
        for i in 0..len {
            let d = if i == 0 {
                self.range(1, 9)
            } else {
                self.range(0, 9)
            };
            s.push(char::from(b'0' + d as u8));
        }
        s
    }

    /// A new card key under `insurer`: a symbol in the insurer's style and a number unique within it.
    fn coverage(&mut self, insurer: usize) -> Coverage {
        let ins = &self.t.insurers[insurer];
        // Kanji symbols start with the insurer's name, without a trailing 市/区/町/村 (柏市 → 柏).
        let trimmed = ins.name.trim_end_matches(['市', '区', '町', '村']);
        let (kind, hb, name_head) = (
            ins.kind,
            ins.number.houbetsu().unwrap_or(""),
            trimmed.chars().take(2).collect::<String>(),
        );
        let step = if kind == Kind::Kouki {
            self.range(1, 9)
        } else {
            self.range(1, 3)
        } as u64;
        self.counters[insurer] += step;
        let serial = self.counters[insurer];
        let (symbol, number) = match kind {
            Kind::Kyokai => (Some(self.digits(7, 8)), serial.to_string()),
            Kind::Senin => (
                Some(format!("21{:02}", self.range(1, 60))),
                serial.to_string(),
            ),
            Kind::Kumiai | Kind::Tokurei => (Some(self.digits(1, 3)), serial.to_string()),
            Kind::Jieikan => {
                let unit = ["陸自", "海自", "空自"][self.pick(3)];
                (
                    Some(format!("{unit}{}", self.digits(2, 3))),
                    serial.to_string(),
                )
            }
            Kind::Kyosai => {
                let sym = match hb {
                    "33" => format!("警{}", self.digits(2, 2)),
                    "34" if self.chance(0.5) => format!("公学{}", self.digits(2, 2)),
                    "32" if self.chance(0.3) => format!("{name_head}{}", self.digits(1, 2)),
                    _ => self.digits(2, 4),
                };
                (Some(sym), format!("{:06}", 100_000 + serial))
            }
            Kind::Nhi | Kind::NhiUnion => {
                let sym = match self.rng.random_range(0..10u32) {
                    0..4 => format!("{name_head}{}", self.digits(1, 2)),
                    4..5 => format!("{}-{}", self.digits(2, 2), self.digits(1, 2)),
                    _ => format!("{:02}", self.range(1, 99)),
                };
                (Some(sym), format!("{:07}", 1_000_000 + serial))
            }
            Kind::Kouki => (None, format!("{:08}", 10_000_000 + serial)),
            Kind::Taishoku => (
                Some(format!("{:02}", self.range(1, 99))),
                format!("{:07}", 2_000_000 + serial),
            ),
        };
        Coverage {
            insurer,
            symbol: symbol.map(|s| CardSymbol::parse(&s).expect("synthetic card symbol")),
            number: CardNumber::parse(&number).expect("synthetic card number"),
        }
    }

    /// An employees' insurer for someone living in `pref`, other than `not`.
    fn employer(&mut self, pref: u8, not: Option<usize>) -> usize {
        let p = pref as usize - 1;
        // People around Tokyo often work for a Tokyo employer.
        let capital = matches!(pref, 11 | 12 | 14);
        loop {
            let i = match self.rng.random_range(0..1000u32) {
                0..400 => self.t.kyokai[p],
                400..500 => self.t.kyokai[if capital { 12 } else { p }],
                500..780 => {
                    // Mostly a society of the home prefecture or a national one (numbered in Tokyo).
                    let mut k = self.t.kumiai[self.pick(self.t.kumiai.len())];
                    for _ in 0..3 {
                        let kp = self.t.insurers[k].number.prefecture();
                        if kp == "13" || kp == format!("{pref:02}") {
                            break;
                        }
                        k = self.t.kumiai[self.pick(self.t.kumiai.len())];
                    }
                    k
                }
                780..820 => self.t.kokka[self.pick(self.t.kokka.len())],
                820..860 => self.t.chihou[p],
                860..890 => self.t.shichoson[p],
                890..900 => {
                    if pref == 13 || capital {
                        self.t.tokyo_shokuin
                    } else {
                        self.t.chihou[p]
                    }
                }
                900..920 => self.t.keisatsu[p],
                920..950 => self.t.kouritsu[p],
                950..965 => self.t.shigaku,
                965..980 => self.t.senin,
                _ => self.t.jieikan,
            };
            if Some(i) != not {
                return i;
            }
        }
    }

    fn qualification(&self, m: &Member, home: &Home, s: &PeriodSpec<'_>) -> Qualification {
        let ins = &self.t.insurers[s.cov.insurer];
        let reference = match s.lost {
            Some((lost, _)) => sub_days(lost, 1).max(s.acquired),
            None => self.today.max(s.acquired),
        };
        let share_percent = if ins.kind == Kind::Kouki {
            m.share75
        } else {
            share_on(m.birth, reference, m.share70, m.share75)
        };
        Qualification {
            person_id: m.id.clone(),
            card_id: m.card.clone(),
            insurer_number: ins.number.clone(),
            insurer_name: ins.name.clone(),
            card_class: CardClass::parse("01").expect("card class"),
            symbol: s.cov.symbol.clone(),
            number: s.cov.number.clone(),
            branch: s
                .branch
                .map(|b| Branch::parse(&format!("{b:02}")).expect("synthetic branch")),
            relationship: s.relationship,
            name: m.name.clone(),
            name_kana: m.kana.clone(),
            sex: m.sex,
            birth_date: m.birth,
            address: home.address.clone(),
            postal_code: Some(home.postal.clone()),
            acquired_on: s.acquired,
            lost_on: s.lost.map(|l| l.0),
            loss_reason: s.lost.map(|l| l.1),
            share_percent,
        }
    }

    /// Old cards (lost before branch numbers existed) often carry none.
    fn branch_for(&mut self, branch: u8, lost: Option<NaiveDate>) -> Option<u8> {
        match lost {
            Some(l) if l < BRANCH_START && self.chance(0.7) => None,
            _ => Some(branch),
        }
    }

    fn opposite(sex: Sex) -> Sex {
        if sex == Sex::Male {
            Sex::Female
        } else {
            Sex::Male
        }
    }

    fn random_sex(&mut self, p_male: f64) -> Sex {
        if self.chance(p_male) {
            Sex::Male
        } else {
            Sex::Female
        }
    }

    /// Spouse (maybe) and children (maybe) for a head of `age`.
    fn family(
        &mut self,
        surname: (&'static str, &'static str),
        head: &Member,
        age: u32,
        p_spouse: f64,
        kids: bool,
        max_age: u32,
    ) -> Vec<Member> {
        let mut out = Vec::new();
        let mut youngest_parent = age;
        if age >= 25 && self.chance(p_spouse) {
            let sage = (age as i64 + self.range(0, 10) as i64 - 5).clamp(20, max_age as i64) as u32;
            youngest_parent = youngest_parent.min(sage);
            let birth = self.birth_for_age(sage);
            out.push(self.member(surname, Self::opposite(head.sex), birth, 0.1));
        }
        if kids && (24..=62).contains(&age) && youngest_parent >= 21 {
            let n = match self.rng.random_range(0..100u32) {
                0..45 => 0,
                45..70 => 1,
                70..94 => 2,
                _ => 3,
            };
            let max_child = (youngest_parent - 20).min(22);
            let mut ages: Vec<u32> = (0..n).map(|_| self.range(0, max_child)).collect();
            ages.sort_unstable_by(|a, b| b.cmp(a));
            for a in ages {
                let birth = self.birth_for_age(a);
                let sex = self.random_sex(0.51);
                out.push(self.member(surname, sex, birth, 0.1));
            }
        }
        out
    }

    fn next_household(&mut self) -> Option<Vec<Qualification>> {
        if self.remaining == 0 {
            return None;
        }
        self.households += 1;
        let out = match self.rng.random_range(0..100u32) {
            0..47 => self.employee_household(),
            47..73 => self.nhi_household(),
            73..96 => self.elderly_household(),
            _ => self.tokurei_household(),
        };
        Some(out)
    }

    /// Keeps at most `remaining` members (the head first).
    fn take(&mut self, mut members: Vec<Member>) -> Vec<Member> {
        members.truncate(self.remaining);
        self.remaining -= members.len();
        members
    }

    fn finish(
        &self,
        members: &[Member],
        home: &Home,
        mut periods: Vec<(usize, PeriodSpec<'_>)>,
    ) -> Vec<Qualification> {
        periods.sort_by_key(|(m, s)| (*m, s.acquired));
        periods
            .iter()
            .map(|(m, s)| self.qualification(&members[*m], home, s))
            .collect()
    }

    /// An employee (被用者保険) with dependents; some changed jobs.
    fn employee_household(&mut self) -> Vec<Qualification> {
        let home = self.home();
        let surname = self.surname();
        let age = match self.rng.random_range(0..100u32) {
            0..4 => self.range(18, 21),
            4..92 => self.range(22, 64),
            _ => self.range(65, 74),
        };
        let sex = self.random_sex(0.68);
        let birth = self.birth_for_age(age);
        let head = self.member(surname, sex, birth, 0.3);
        let family = self.family(surname, &head, age, 0.55, true, 74);
        let members = self.take(std::iter::once(head).chain(family).collect());

        let today = self.today;
        let earliest = add_years(members[0].birth, 18).max(sub_years(today, 40));
        let hire = self.date_between(earliest, today);
        let old = self.employer(home.pref, None);
        let cov_old = self.coverage(old);
        let changer = (today - hire).num_days() >= 400 && self.chance(0.19);
        let mut periods = Vec::new();
        if !changer {
            for (i, m) in members.iter().enumerate() {
                let relationship = if i == 0 {
                    Relationship::Insured
                } else {
                    Relationship::Dependent
                };
                periods.push((
                    i,
                    PeriodSpec {
                        cov: &cov_old,
                        branch: Some(i as u8 + 1),
                        relationship,
                        acquired: hire.max(m.birth),
                        lost: None,
                    },
                ));
            }
            return self.finish(&members, &home, periods);
        }
        // Job change: the old period ends (the lost date is the first day without it); the new one
        // starts the same day or after a gap of days or weeks.
        let lost = self.date_between(
            add_days(hire, 180).max(sub_years(today, 8)),
            sub_days(today, 1),
        );
        let gap = match self.rng.random_range(0..100u32) {
            0..25 => 0,
            25..60 => self.range(1, 13),
            _ => self.range(14, 60),
        };
        let new_acq = add_days(lost, u64::from(gap)).min(today);
        let to_nhi = self.chance(0.15);
        let new = if to_nhi {
            self.t.nhi_by_city[home.city]
        } else {
            self.employer(home.pref, Some(old))
        };
        let cov_new = self.coverage(new);
        for (i, m) in members.iter().enumerate() {
            let acq_old = hire.max(m.birth);
            if acq_old < lost {
                let branch = self.branch_for(i as u8 + 1, Some(lost));
                let relationship = if i == 0 {
                    Relationship::Insured
                } else {
                    Relationship::Dependent
                };
                periods.push((
                    i,
                    PeriodSpec {
                        cov: &cov_old,
                        branch,
                        relationship,
                        acquired: acq_old,
                        lost: Some((lost, LossReason::JoinedOtherInsurance)),
                    },
                ));
            }
            let relationship = if i == 0 || to_nhi {
                Relationship::Insured
            } else {
                Relationship::Dependent
            };
            periods.push((
                i,
                PeriodSpec {
                    cov: &cov_new,
                    branch: Some(i as u8 + 1),
                    relationship,
                    acquired: new_acq.max(m.birth),
                    lost: None,
                },
            ));
        }
        self.finish(&members, &home, periods)
    }

    /// Municipal national health insurance (市町村国保) or an NHI association: every member is insured.
    fn nhi_household(&mut self) -> Vec<Qualification> {
        let home = self.home();
        let surname = self.surname();
        let age = match self.rng.random_range(0..100u32) {
            0..25 => self.range(20, 39),
            25..60 => self.range(40, 64),
            _ => self.range(65, 74),
        };
        let sex = self.random_sex(0.55);
        let birth = self.birth_for_age(age);
        let head = self.member(surname, sex, birth, 0.1);
        let family = self.family(surname, &head, age, 0.5, age <= 55, 74);
        let members = self.take(std::iter::once(head).chain(family).collect());

        let today = self.today;
        let union = self.chance(0.04);
        let insurer = if union {
            self.t.unions[self.pick(self.t.unions.len())]
        } else {
            self.t.nhi_by_city[home.city]
        };
        let cov = self.coverage(insurer);
        let hb = members[0].birth;
        let mut head_acq = self.date_between(add_years(hb, 20).max(sub_years(today, 30)), today);
        // 退職者医療 (法別 67): entered at 60 until March 2015, left at 65 for the general NHI.
        let taishoku_cov;
        let mut periods = Vec::new();
        if !union
            && add_years(hb, 60) <= TAISHOKU_LAST_ENTRY
            && add_years(hb, 65) <= today
            && self.chance(0.25)
        {
            taishoku_cov = self.coverage(self.t.taishoku_by_city[home.city]);
            let (t_acq, t_lost) = (add_years(hb, 60), add_years(hb, 65));
            periods.push((
                0,
                PeriodSpec {
                    cov: &taishoku_cov,
                    branch: self.branch_for(1, Some(t_lost)),
                    relationship: Relationship::Insured,
                    acquired: t_acq,
                    lost: Some((t_lost, LossReason::Other)),
                },
            ));
            head_acq = t_lost;
        }
        let public_assistance = self.chance(0.03);
        let pa_day = self.date_between(sub_years(today, 5), today);
        for (i, m) in members.iter().enumerate() {
            let acquired = head_acq.max(m.birth);
            let lost = if public_assistance && pa_day > acquired {
                Some((pa_day, LossReason::PublicAssistance))
            } else if self.chance(0.004) {
                let d = self.date_between(add_days(acquired, 1), today);
                (d > acquired).then_some((d, LossReason::Other))
            } else if age_on(m.birth, today) >= 50 && self.chance(0.004) {
                let d = self.date_between(add_days(acquired, 1), today);
                (d > acquired).then_some((d, LossReason::Death))
            } else {
                None
            };
            periods.push((
                i,
                PeriodSpec {
                    cov: &cov,
                    branch: Some(i as u8 + 1),
                    relationship: Relationship::Insured,
                    acquired,
                    lost,
                },
            ));
        }
        self.finish(&members, &home, periods)
    }

    /// One or two people of 75 and over, each on the prefecture's 後期高齢者医療広域連合 with their own
    /// number (no symbol, no branch: the scheme is per person).
    fn elderly_household(&mut self) -> Vec<Qualification> {
        let home = self.home();
        let surname = self.surname();
        let couple = self.chance(0.4);
        let u: f64 = self.rng.random();
        let age = 75 + (26.0 * u.powf(1.8)) as u32;
        let head_sex = if couple {
            Sex::Male
        } else {
            self.random_sex(0.35)
        };
        let birth = self.birth_for_age(age.min(100));
        let mut members = vec![self.member(surname, head_sex, birth, 0.1)];
        if couple {
            let sage = (age as i64 + self.range(0, 8) as i64 - 6).clamp(75, 100) as u32;
            let birth = self.birth_for_age(sage);
            members.push(self.member(surname, Sex::Female, birth, 0.1));
        }
        let members = self.take(members);

        let today = self.today;
        let kouki = self.t.kouki[home.pref as usize - 1];
        let covs: Vec<Coverage> = members.iter().map(|_| self.coverage(kouki)).collect();
        let prior_cov = self.coverage(self.t.nhi_by_city[home.city]);
        let mut periods = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let b75 = add_years(m.birth, 75);
            let acquired = b75.max(KOUKI_START);
            // Recently turned 75: the NHI period ended on the 75th birthday.
            if b75 >= KOUKI_START && b75 >= sub_years(today, 6) && self.chance(0.5) {
                let p_acq = self.date_between(add_years(m.birth, 60), add_years(m.birth, 65));
                periods.push((
                    i,
                    PeriodSpec {
                        cov: &prior_cov,
                        branch: Some(i as u8 + 1),
                        relationship: Relationship::Insured,
                        acquired: p_acq,
                        lost: Some((b75, LossReason::JoinedOtherInsurance)),
                    },
                ));
            }
            let lost = if self.chance(0.025) {
                let died = self.date_between(acquired, sub_days(today, 1));
                let l = add_days(died, 1);
                (l > acquired && l <= today).then_some((l, LossReason::Death))
            } else if self.chance(0.008) {
                let d = self.date_between(add_days(acquired, 1), today);
                (d > acquired).then_some((d, LossReason::PublicAssistance))
            } else {
                None
            };
            periods.push((
                i,
                PeriodSpec {
                    cov: &covs[i],
                    branch: None,
                    relationship: Relationship::Insured,
                    acquired,
                    lost,
                },
            ));
        }
        self.finish(&members, &home, periods)
    }

    /// A retiree of a large employer or the public service on 特例退職 (60–74), often with the
    /// employees' period that ended on retirement.
    fn tokurei_household(&mut self) -> Vec<Qualification> {
        let home = self.home();
        let surname = self.surname();
        let age = self.range(60, 74);
        let sex = self.random_sex(0.85);
        let birth = self.birth_for_age(age);
        let head = self.member(surname, sex, birth, 0.1);
        let family = self.family(surname, &head, age, 0.6, false, 74);
        let members = self.take(std::iter::once(head).chain(family).collect());

        let today = self.today;
        let (tokurei, parent) = self.t.tokurei[self.pick(self.t.tokurei.len())];
        let retire_age = self.range(60, age.min(64));
        let retire = self
            .date_between(
                add_years(birth, retire_age),
                add_days(add_years(birth, retire_age), 300),
            )
            .min(today);
        let cov_t = self.coverage(tokurei);
        let cov_p = self.coverage(parent);
        let with_prior = self.chance(0.7);
        let hire = self.date_between(
            add_years(birth, 22).max(sub_years(today, 45)),
            sub_days(retire, 365),
        );
        let mut periods = Vec::new();
        for (i, m) in members.iter().enumerate() {
            let relationship = if i == 0 {
                Relationship::Insured
            } else {
                Relationship::Dependent
            };
            let acq_prior = hire.max(m.birth);
            if with_prior && acq_prior < retire {
                let branch = self.branch_for(i as u8 + 1, Some(retire));
                periods.push((
                    i,
                    PeriodSpec {
                        cov: &cov_p,
                        branch,
                        relationship,
                        acquired: acq_prior,
                        lost: Some((retire, LossReason::JoinedOtherInsurance)),
                    },
                ));
            }
            periods.push((
                i,
                PeriodSpec {
                    cov: &cov_t,
                    branch: Some(i as u8 + 1),
                    relationship,
                    acquired: retire.max(m.birth),
                    lost: None,
                },
            ));
        }
        self.finish(&members, &home, periods)
    }
}

#[derive(Debug, Default)]
struct Accumulator {
    s: SynthSummary,
    insurers: BTreeSet<String>,
}

impl Accumulator {
    fn add(&mut self, periods: &[Qualification], today: NaiveDate) {
        let mut i = 0;
        while i < periods.len() {
            let mut j = i + 1;
            while j < periods.len() && periods[j].person_id == periods[i].person_id {
                j += 1;
            }
            let person = &periods[i..j];
            self.s.people += 1;
            self.s.with_card_id += usize::from(person[0].card_id.is_some());
            self.s.variant_kanji += usize::from(has_variant_kanji(&person[0].name));
            self.s.changed_insurer += usize::from(
                person
                    .iter()
                    .any(|q| q.loss_reason == Some(LossReason::JoinedOtherInsurance)),
            );
            self.s.late_elderly += usize::from(
                person
                    .iter()
                    .any(|q| q.is_valid_on(today) && q.insurer_number.houbetsu() == Some("39")),
            );
            i = j;
        }
        for q in periods {
            self.s.periods += 1;
            self.s.valid_today += usize::from(q.is_valid_on(today));
            self.s.lost += usize::from(q.lost_on.is_some());
            if !self.insurers.contains(q.insurer_number.as_str()) {
                self.insurers.insert(q.insurer_number.as_str().to_string());
            }
        }
    }

    fn finish(mut self, households: usize) -> SynthSummary {
        self.s.households = households;
        self.s.insurers = self.insurers.len();
        self.s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(people: usize, seed: u64) -> SynthParams {
        SynthParams {
            people,
            seed,
            today: ymd(2025, 6, 15),
        }
    }

    fn jsonl(p: &SynthParams) -> (Vec<u8>, SynthSummary) {
        let mut buf = Vec::new();
        let s = write_jsonl(p, &mut buf).expect("write to a Vec");
        (buf, s)
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let (a, sa) = jsonl(&params(3000, 7));
        let (b, sb) = jsonl(&params(3000, 7));
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        let (c, _) = jsonl(&params(3000, 8));
        assert_ne!(a, c);
        // generate() and write_jsonl() agree.
        let lines: Vec<String> = generate(&params(3000, 7))
            .iter()
            .map(|q| q.to_registry_json() + "\n")
            .collect();
        assert_eq!(lines.concat().into_bytes(), a);
    }

    #[test]
    fn exact_people_count_and_ids() {
        for n in [0, 1, 2, 7, 1000] {
            let periods = generate(&params(n, 1));
            let s = summarize(&periods, ymd(2025, 6, 15));
            assert_eq!(s.people, n);
            if n > 0 {
                assert_eq!(periods[0].person_id.as_str(), "P0000001");
                assert_eq!(
                    periods.last().map(|q| q.person_id.as_str().to_string()),
                    Some(format!("P{n:07}"))
                );
            }
        }
    }

    #[test]
    fn every_line_parses_and_round_trips() {
        let (buf, summary) = jsonl(&params(5000, 3));
        let text = String::from_utf8(buf).expect("utf-8");
        let mut n = 0;
        for (i, line) in text.lines().enumerate() {
            let q = Qualification::from_registry_json(line)
                .unwrap_or_else(|e| panic!("line {}: {e}: {line}", i + 1));
            assert_eq!(q.to_registry_json(), line);
            n += 1;
        }
        assert_eq!(n, summary.periods);
    }

    fn is_katakana_name(s: &str) -> bool {
        let mut parts = s.split('\u{3000}');
        let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        !a.is_empty()
            && !b.is_empty()
            && a.chars()
                .chain(b.chars())
                .all(|c| ('\u{30A1}'..='\u{30FC}').contains(&c))
    }

    #[test]
    fn invariants_hold() {
        let today = ymd(2025, 6, 15);
        let periods = generate(&params(20_000, 11));
        let s = summarize(&periods, today);
        let mut by_person: BTreeMap<&str, Vec<&Qualification>> = BTreeMap::new();
        let mut by_key: HashMap<(&str, Option<&str>, &str), Vec<&Qualification>> = HashMap::new();
        let mut houbetsu = BTreeSet::new();
        let mut municipal = 0;
        for q in &periods {
            by_person.entry(q.person_id.as_str()).or_default().push(q);
            by_key
                .entry((
                    q.insurer_number.as_str(),
                    q.symbol.as_ref().map(|s| s.as_str()),
                    q.number.as_str(),
                ))
                .or_default()
                .push(q);
            let n = q.insurer_number.as_str();
            let (body, check) = n.split_at(n.len() - 1);
            assert_eq!(luhn_check_digit(body).to_string(), check, "{n}");
            match q.insurer_number.houbetsu() {
                Some(h) => {
                    houbetsu.insert(h.to_string());
                }
                None => municipal += 1,
            }
            assert!(is_katakana_name(&q.name_kana), "{}", q.name_kana);
            assert_eq!(q.name.matches('\u{3000}').count(), 1, "{}", q.name);
            assert!(q.acquired_on <= today);
            assert!(
                q.lost_on.is_none_or(|l| l > q.acquired_on && l <= today),
                "{q:?}"
            );
            assert!(matches!(q.sex, Sex::Male | Sex::Female));
            assert!(q.postal_code.is_some());
            if q.insurer_number.houbetsu() == Some("39") {
                assert!(q.symbol.is_none() && q.branch.is_none());
                assert!(age_on(q.birth_date, q.acquired_on) >= 75, "{q:?}");
                assert!(q.acquired_on >= KOUKI_START);
                assert!([10, 20, 30].contains(&q.share_percent));
            }
            if q.lost_on.is_none_or(|l| l >= BRANCH_START)
                && q.insurer_number.houbetsu() != Some("39")
            {
                assert!(q.branch.is_some(), "modern card without branch: {q:?}");
            }
        }
        for h in [
            "01", "02", "06", "07", "31", "32", "33", "34", "39", "63", "67", "72", "73", "74",
            "75",
        ] {
            assert!(houbetsu.contains(h), "no insurer of 法別 {h}");
        }
        assert!(municipal > 0);

        // Households: dependents share insurer/symbol/number with an insured; branches are distinct.
        for (key, group) in &by_key {
            assert!(
                group
                    .iter()
                    .any(|q| q.relationship == Relationship::Insured),
                "{key:?} has no insured"
            );
            let mut branches = BTreeMap::new();
            for q in group {
                if let Some(b) = &q.branch
                    && let Some(other) = branches.insert(b.as_str(), q.person_id.as_str())
                {
                    assert_eq!(other, q.person_id.as_str(), "{key:?} branch {b} used twice");
                }
            }
        }
        assert!(
            by_key
                .values()
                .any(|g| g.iter().any(|q| q.relationship == Relationship::Dependent))
        );

        let mut changers = 0;
        let mut same_day = 0;
        let mut with_gap = 0;
        for (pid, ps) in &by_person {
            // Periods of one person are consecutive and do not overlap.
            for w in ps.windows(2) {
                assert!(w[0].acquired_on <= w[1].acquired_on);
                assert!(
                    w[0].lost_on.is_some_and(|l| l <= w[1].acquired_on),
                    "{pid}: overlapping periods"
                );
            }
            for q in ps {
                if q.loss_reason == Some(LossReason::JoinedOtherInsurance) {
                    let lost = q.lost_on.expect("reason 03 has a lost date");
                    let next = ps
                        .iter()
                        .find(|n| n.acquired_on >= lost)
                        .unwrap_or_else(|| panic!("{pid}: no later period"));
                    assert_ne!(next.insurer_number, q.insurer_number, "{pid}");
                    if next.acquired_on == lost {
                        same_day += 1
                    } else {
                        with_gap += 1
                    }
                }
            }
            if ps
                .iter()
                .any(|q| q.loss_reason == Some(LossReason::JoinedOtherInsurance))
            {
                changers += 1;
            }
            // Whoever is 75+ today and covered is on 法別 39; nobody under 75 is.
            let age = age_on(ps[0].birth_date, today);
            for q in ps.iter().filter(|q| q.is_valid_on(today)) {
                assert_eq!(
                    q.insurer_number.houbetsu() == Some("39"),
                    age >= 75,
                    "{pid} aged {age}: {q:?}"
                );
                let want = if age >= 75 {
                    q.share_percent
                } else if today >= elderly70_first_day(q.birth_date) {
                    assert!([20, 30].contains(&q.share_percent));
                    q.share_percent
                } else if today <= preschool_last_day(q.birth_date) {
                    20
                } else {
                    30
                };
                assert_eq!(q.share_percent, want, "{pid} aged {age}");
            }
        }
        assert_eq!(changers, s.changed_insurer);
        assert!(same_day > 0 && with_gap > 0);
        let share = |n: usize| n as f64 / s.people as f64;
        assert!(
            (0.05..0.16).contains(&share(changers)),
            "changed insurer {}",
            share(changers)
        );
        assert!(
            (0.01..0.15).contains(&share(s.variant_kanji)),
            "variant kanji {}",
            share(s.variant_kanji)
        );
        assert!(
            (0.08..0.12).contains(&share(s.with_card_id)),
            "card ids {}",
            share(s.with_card_id)
        );
        assert!(
            (0.10..0.30).contains(&share(s.late_elderly)),
            "75+ {}",
            share(s.late_elderly)
        );
        let reasons: BTreeSet<_> = periods
            .iter()
            .filter_map(|q| q.loss_reason)
            .map(|r| r.code())
            .collect();
        assert_eq!(
            reasons.into_iter().collect::<Vec<_>>(),
            ["01", "02", "03", "99"]
        );
        let ages: Vec<u32> = by_person
            .values()
            .map(|ps| age_on(ps[0].birth_date, today))
            .collect();
        assert!(ages.contains(&0) && ages.iter().any(|&a| a >= 95));
        assert!(ages.iter().filter(|&&a| a < 6).count() > 200);
    }

    #[test]
    fn tables_are_well_formed() {
        let t = Tables::new();
        assert!(t.surnames.len() >= 250, "{}", t.surnames.len());
        for s in &t.surnames {
            assert!(
                is_katakana_name(&format!("{}\u{3000}{}", s.kana, s.kana)),
                "{}",
                s.kanji
            );
        }
        for std in SURNAME_VARIANTS
            .split_whitespace()
            .filter_map(|e| e.split_once(':').map(|p| p.0))
        {
            assert!(
                t.surnames
                    .iter()
                    .any(|s| s.kanji == std && !s.variants.is_empty()),
                "{std} not a surname"
            );
        }
        for sex in &t.given {
            for generation in sex {
                assert!(generation.len() >= 30);
                for g in generation {
                    assert!(
                        is_katakana_name(&format!("{}\u{3000}{}", g.kana, g.kana)),
                        "{}",
                        g.kanji
                    );
                }
            }
        }
        let numbers: BTreeSet<&str> = t.insurers.iter().map(|i| i.number.as_str()).collect();
        assert_eq!(
            numbers.len(),
            t.insurers.len(),
            "insurer numbers are unique"
        );
        assert_eq!(t.insurers[t.kyokai[12]].number.as_str(), "01130012");
        assert_eq!(t.insurers[t.kouki[12]].number.as_str(), "39130018");
        assert_eq!(
            t.insurers[t.nhi_by_city[CITIES.iter().position(|c| c.1 == "千代田区").unwrap_or(0)]]
                .name,
            "千代田区"
        );
        assert_eq!(CITIES.len(), t.city_cum.len());
        for p in 1..=47u8 {
            assert!(
                CITIES.iter().any(|c| c.0 == p),
                "prefecture {p} has no municipality"
            );
        }
    }

    #[test]
    fn share_rules_at_the_edges() {
        // Born 1 April: preschool ends on the 31 March just before the 6th birthday.
        let b = ymd(2019, 4, 1);
        assert_eq!(preschool_last_day(b), ymd(2025, 3, 31));
        assert_eq!(preschool_last_day(ymd(2019, 4, 2)), ymd(2026, 3, 31));
        assert_eq!(elderly70_first_day(ymd(1955, 6, 1)), ymd(2025, 6, 1));
        assert_eq!(elderly70_first_day(ymd(1955, 6, 2)), ymd(2025, 7, 1));
        assert_eq!(share_on(ymd(1950, 6, 15), ymd(2025, 6, 14), 20, 10), 20);
        assert_eq!(share_on(ymd(1950, 6, 15), ymd(2025, 6, 15), 20, 10), 10);
        assert_eq!(age_on(ymd(2000, 2, 29), ymd(2025, 2, 28)), 25);
        assert_eq!(age_on(ymd(2000, 3, 1), ymd(2025, 2, 28)), 24);
    }

    #[test]
    fn examples_work_for_a_demo() {
        let today = ymd(2025, 6, 15);
        let periods = generate(&params(500, 42));
        let ex = pick_examples(&periods, today);
        let v = ex.valid_insured.expect("a valid insured period");
        assert!(v.is_valid_on(today) && v.relationship == Relationship::Insured);
        let lost = ex.lost_with_newer.expect("a job changer");
        let newer = ex.newer.expect("the newer period");
        assert_eq!(lost.person_id, newer.person_id);
        assert_eq!(lost.loss_reason, Some(LossReason::JoinedOtherInsurance));
        assert!(!lost.is_valid_on(today) && newer.is_valid_on(today));
        assert!(ex.card_holder.is_some_and(|q| q.card_id.is_some()));
    }

    #[test]
    #[ignore = "timing: cargo test -p onshi-sync --lib synth::tests::time_100k -- --ignored --nocapture"]
    fn time_100k() {
        let start = std::time::Instant::now();
        let mut sink = std::io::sink();
        let s = write_jsonl(&params(100_000, 1), &mut sink).expect("sink");
        eprintln!("{s:?} in {:?}", start.elapsed());
    }
}
