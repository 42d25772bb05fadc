//! Which dates are plausible in a request, so that a mistyped year is refused with its field
//! instead of changing the answer (a birth year 0001 gets the 75+ share). Pure: "today" is passed
//! in. It must never refuse a date the service needs: past visits still being confirmed or
//! claimed, and reservations being prepared by a batch inquiry.

use chrono::{Days, Months, NaiveDate};

use crate::error::{ErrorCode, FieldError};

/// The earliest birth date taken: 1868-01-01, the start of 明治 (the first era the model reads).
pub const EARLIEST_BIRTH_DATE: NaiveDate = match NaiveDate::from_ymd_opt(1868, 1, 1) {
    Some(d) => d,
    None => panic!("1868-01-01 is a date"),
};

/// How far back a service date may be, in months: 36, the limitation of claims (診療報酬の請求権
/// は3年で時効), so every visit that can still be claimed can still be checked.
pub const SERVICE_DATE_MONTHS_BACK: u32 = 36;

/// How far ahead a service date may be, in days: 31, a month of reservations for a batch inquiry.
pub const SERVICE_DATE_DAYS_AHEAD: u64 = 31;

/// The service dates taken on `today`: `today - 36 months ..= today + 31 days`.
#[must_use]
pub fn service_date_window(today: NaiveDate) -> (NaiveDate, NaiveDate) {
    let from = today
        .checked_sub_months(Months::new(SERVICE_DATE_MONTHS_BACK))
        .unwrap_or(NaiveDate::MIN);
    let to = today
        .checked_add_days(Days::new(SERVICE_DATE_DAYS_AHEAD))
        .unwrap_or(NaiveDate::MAX);
    (from, to)
}

/// A service date within [`service_date_window`], or an `out_of_range` error naming `field`.
pub fn check_service_date(
    field: &str,
    date: NaiveDate,
    today: NaiveDate,
) -> Result<(), FieldError> {
    let (from, to) = service_date_window(today);
    if date < from || date > to {
        return Err(FieldError::new(
            field,
            ErrorCode::OutOfRange,
            format!(
                "{field}: {date} is outside {from}..={to} ({SERVICE_DATE_MONTHS_BACK} months back to {SERVICE_DATE_DAYS_AHEAD} days ahead of today)"
            ),
        ));
    }
    Ok(())
}

/// A birth date from [`EARLIEST_BIRTH_DATE`] to the service date, or an `out_of_range` error
/// naming `field`.
pub fn check_birth_date(
    field: &str,
    birth: NaiveDate,
    service_date: NaiveDate,
) -> Result<(), FieldError> {
    if birth < EARLIEST_BIRTH_DATE {
        return Err(FieldError::new(
            field,
            ErrorCode::OutOfRange,
            format!("{field}: {birth} is before {EARLIEST_BIRTH_DATE} (the start of 明治)"),
        ));
    }
    if birth > service_date {
        return Err(FieldError::new(
            field,
            ErrorCode::OutOfRange,
            format!("{field}: {birth} is after the service date {service_date}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn service_dates_three_years_back_to_a_month_ahead() {
        let today = d("2026-12-05");
        assert!(check_service_date("service_date", d("2023-12-05"), today).is_ok());
        assert!(check_service_date("service_date", d("2027-01-05"), today).is_ok());
        // The tests' fixed "today" stays valid against the real date.
        assert!(check_service_date("service_date", d("2026-04-01"), today).is_ok());
        let e = check_service_date("service_date", d("9999-12-31"), today).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.code),
            ("service_date", ErrorCode::OutOfRange)
        );
        assert!(check_service_date("service_date", d("2023-12-04"), today).is_err());
        assert!(check_service_date("service_date", d("2027-01-06"), today).is_err());
    }

    #[test]
    fn birth_dates_from_meiji_to_the_service_date() {
        let service = d("2026-04-01");
        assert!(check_birth_date("birth_date", d("1868-01-01"), service).is_ok());
        assert!(check_birth_date("birth_date", service, service).is_ok());
        let e = check_birth_date("declared.birth_date", d("0001-01-01"), service).unwrap_err();
        assert_eq!(e.field, "declared.birth_date");
        assert_eq!(e.code, ErrorCode::OutOfRange);
        assert!(check_birth_date("birth_date", d("2026-04-02"), service).is_err());
    }
}
