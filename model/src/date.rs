//! Dates as people and files write them: ISO `YYYY-MM-DD`, `YYYYMMDD`, `YYYY/MM/DD`, and the
//! Japanese era calendar (和暦): `昭和45年3月2日`, `S45.3.2`, `H2/1/5`, `R1.5.1`, `令和元年5月1日`,
//! with full-width digits too. An era date outside its era (e.g. 昭和64年1月8日) is rejected.

use chrono::{Datelike, NaiveDate};

use crate::error::{ErrorCode, ValueError};
use crate::text::fold_trim;

/// The eras of the modern calendar, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Era {
    Meiji,
    Taisho,
    Showa,
    Heisei,
    Reiwa,
}

impl Era {
    pub const ALL: [Era; 5] = [Era::Meiji, Era::Taisho, Era::Showa, Era::Heisei, Era::Reiwa];

    /// First day of the era (Gregorian). Meiji: 1868-10-23, the day the era name was adopted.
    pub fn start(self) -> NaiveDate {
        let (y, m, d) = match self {
            Era::Meiji => (1868, 10, 23),
            Era::Taisho => (1912, 7, 30),
            Era::Showa => (1926, 12, 25),
            Era::Heisei => (1989, 1, 8),
            Era::Reiwa => (2019, 5, 1),
        };
        NaiveDate::from_ymd_opt(y, m, d).unwrap_or(NaiveDate::MIN)
    }

    /// The first day of the next era, if there is one.
    pub fn end_exclusive(self) -> Option<NaiveDate> {
        let i = Era::ALL.iter().position(|e| *e == self)?;
        Era::ALL.get(i + 1).map(|e| e.start())
    }

    pub fn kanji(self) -> &'static str {
        match self {
            Era::Meiji => "明治",
            Era::Taisho => "大正",
            Era::Showa => "昭和",
            Era::Heisei => "平成",
            Era::Reiwa => "令和",
        }
    }

    pub fn letter(self) -> char {
        match self {
            Era::Meiji => 'M',
            Era::Taisho => 'T',
            Era::Showa => 'S',
            Era::Heisei => 'H',
            Era::Reiwa => 'R',
        }
    }

    /// The era a date falls in, or `None` before Meiji.
    pub fn of(date: NaiveDate) -> Option<Era> {
        Era::ALL.iter().rev().copied().find(|e| date >= e.start())
    }

    fn from_prefix(s: &str) -> Option<(Era, &str)> {
        for e in Era::ALL {
            if let Some(rest) = s.strip_prefix(e.kanji()) {
                return Some((e, rest));
            }
            let mut chars = s.chars();
            if let Some(c) = chars.next()
                && c.to_ascii_uppercase() == e.letter()
            {
                return Some((e, chars.as_str()));
            }
        }
        None
    }
}

/// A date in the era calendar, e.g. `昭和45年3月2日` (year 1 is written 元).
pub fn format_era(date: NaiveDate) -> Option<String> {
    let era = Era::of(date)?;
    let y = date.year() - era.start().year() + 1;
    let year = if y == 1 {
        "元".to_string()
    } else {
        y.to_string()
    };
    Some(format!(
        "{}{year}年{}月{}日",
        era.kanji(),
        date.month(),
        date.day()
    ))
}

/// A date in the short era form, e.g. `S45.03.02`.
pub fn format_era_short(date: NaiveDate) -> Option<String> {
    let era = Era::of(date)?;
    let y = date.year() - era.start().year() + 1;
    Some(format!(
        "{}{y:02}.{:02}.{:02}",
        era.letter(),
        date.month(),
        date.day()
    ))
}

fn bad(input: &str, why: &str) -> ValueError {
    ValueError::new(
        ErrorCode::InvalidDate,
        format!(
            "'{input}' {why}; write YYYY-MM-DD, YYYYMMDD or an era date such as 昭和45年3月2日 or S45.3.2"
        ),
    )
}

fn ymd(input: &str, y: i32, m: u32, d: u32) -> Result<NaiveDate, ValueError> {
    NaiveDate::from_ymd_opt(y, m, d).ok_or_else(|| {
        bad(
            input,
            &format!("is not a real day (year {y}, month {m}, day {d})"),
        )
    })
}

/// Parses a date in any accepted form. See the module doc.
pub fn parse_date(input: &str) -> Result<NaiveDate, ValueError> {
    let s = fold_trim(input);
    if s.is_empty() {
        return Err(ValueError::new(
            ErrorCode::MissingField,
            "is empty; a date is required",
        ));
    }
    if let Some((era, rest)) = Era::from_prefix(&s) {
        return parse_era(input, era, rest);
    }
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(0);
        return ymd(input, n(0..4) as i32, n(4..6), n(6..8));
    }
    let parts: Vec<&str> = s.split(['-', '/', '.']).collect();
    if parts.len() == 3
        && parts[0].len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()))
    {
        let y: i32 = parts[0].parse().map_err(|_| bad(input, "has no year"))?;
        let m: u32 = parts[1].parse().map_err(|_| bad(input, "has no month"))?;
        let d: u32 = parts[2].parse().map_err(|_| bad(input, "has no day"))?;
        return ymd(input, y, m, d);
    }
    // 1980年4月1日
    if let Some((y, rest)) = s.split_once('年')
        && y.len() == 4
        && y.bytes().all(|b| b.is_ascii_digit())
    {
        let (m, d) = month_day(input, rest)?;
        return ymd(input, y.parse().unwrap_or(0), m, d);
    }
    Err(bad(input, "is not a date"))
}

fn month_day(input: &str, rest: &str) -> Result<(u32, u32), ValueError> {
    let rest = rest.trim_end_matches('日').trim();
    let mut it = rest.split(['月', '.', '/', '-']).map(str::trim);
    let m = it
        .next()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| bad(input, "has no month"))?;
    let d = it
        .next()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| bad(input, "has no day"))?;
    if it.next().is_some() {
        return Err(bad(input, "has too many parts"));
    }
    let num = |p: &str, what: &str| -> Result<u32, ValueError> {
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(input, &format!("has '{p}' where the {what} should be")));
        }
        p.parse().map_err(|_| bad(input, &format!("has no {what}")))
    };
    Ok((num(m, "month")?, num(d, "day")?))
}

fn parse_era(input: &str, era: Era, rest: &str) -> Result<NaiveDate, ValueError> {
    let rest = rest.trim();
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (year, after) = if let Some(after) = rest.strip_prefix('元') {
        (1, after)
    } else {
        if digits_end == 0 || digits_end > 2 {
            return Err(bad(
                input,
                &format!("has no year of {} (1–2 digits or 元)", era.kanji()),
            ));
        }
        (
            rest[..digits_end].parse::<i32>().unwrap_or(0),
            &rest[digits_end..],
        )
    };
    if year == 0 {
        return Err(bad(
            input,
            "has year 0; the first year of an era is 1 (元年)",
        ));
    }
    let after = after.trim_start();
    let after = after
        .strip_prefix('年')
        .or_else(|| after.strip_prefix(['.', '/', '-']))
        .ok_or_else(|| bad(input, "has no separator after the year"))?;
    let (m, d) = month_day(input, after)?;
    let date = ymd(input, era.start().year() + year - 1, m, d)?;
    if date < era.start() {
        return Err(ValueError::new(
            ErrorCode::InvalidDate,
            format!(
                "'{input}' is before {} began on {}",
                era.kanji(),
                era.start()
            ),
        ));
    }
    if let Some(end) = era.end_exclusive()
        && date >= end
    {
        return Err(ValueError::new(
            ErrorCode::InvalidDate,
            format!(
                "'{input}' is after {} ended on {}",
                era.kanji(),
                end.pred_opt().unwrap_or(end)
            ),
        ));
    }
    Ok(date)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, dd: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, dd).unwrap()
    }

    #[test]
    fn every_written_form_of_the_same_day() {
        for s in [
            "1970-03-02",
            "19700302",
            "1970/3/2",
            "昭和45年3月2日",
            "S45.3.2",
            "s45.03.02",
            "S45/3/2",
            "昭和４５年３月２日",
            "1970年3月2日",
            " 昭和 45年3月2日 ",
        ] {
            assert_eq!(parse_date(s).unwrap(), d(1970, 3, 2), "{s}");
        }
        assert_eq!(parse_date("H2/1/5").unwrap(), d(1990, 1, 5));
        assert_eq!(parse_date("R1.5.1").unwrap(), d(2019, 5, 1));
        assert_eq!(parse_date("令和元年5月1日").unwrap(), d(2019, 5, 1));
        assert_eq!(parse_date("平成元年1月8日").unwrap(), d(1989, 1, 8));
        assert_eq!(parse_date("T15.12.24").unwrap(), d(1926, 12, 24));
    }

    #[test]
    fn era_boundaries() {
        assert_eq!(format_era(d(1989, 1, 7)).unwrap(), "昭和64年1月7日");
        assert_eq!(format_era(d(1989, 1, 8)).unwrap(), "平成元年1月8日");
        assert_eq!(format_era(d(2019, 4, 30)).unwrap(), "平成31年4月30日");
        assert_eq!(format_era(d(2019, 5, 1)).unwrap(), "令和元年5月1日");
        assert_eq!(format_era(d(1926, 12, 25)).unwrap(), "昭和元年12月25日");
        assert_eq!(parse_date("昭和64年1月7日").unwrap(), d(1989, 1, 7));
        let e = parse_date("昭和64年1月8日").unwrap_err();
        assert!(
            e.message.contains("after 昭和 ended on 1989-01-07"),
            "{}",
            e.message
        );
        let e = parse_date("平成元年1月7日").unwrap_err();
        assert!(
            e.message.contains("before 平成 began on 1989-01-08"),
            "{}",
            e.message
        );
        assert!(parse_date("H31.4.30").is_ok());
        assert!(parse_date("H31.5.1").is_err());
        assert!(parse_date("R1.4.30").is_err());
    }

    #[test]
    fn bad_dates_say_why() {
        assert_eq!(parse_date("").unwrap_err().code, ErrorCode::MissingField);
        for s in [
            "2023-02-30",
            "20230230",
            "S45.13.1",
            "S0.1.1",
            "S45",
            "X45.1.1",
            "yesterday",
            "1980-4",
            "S45年3月",
        ] {
            let e = parse_date(s).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidDate, "{s}");
            assert!(e.message.contains(s.trim()), "{s}: {}", e.message);
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn era_forms_round_trip(days in 0i64..(365 * 160)) {
                let date = Era::Meiji.start() + chrono::Duration::days(days);
                prop_assert_eq!(parse_date(&format_era(date).unwrap()).unwrap(), date);
                prop_assert_eq!(parse_date(&format_era_short(date).unwrap()).unwrap(), date);
                prop_assert_eq!(parse_date(&date.format("%Y%m%d").to_string()).unwrap(), date);
                prop_assert_eq!(parse_date(&date.to_string()).unwrap(), date);
            }
        }
    }
}
