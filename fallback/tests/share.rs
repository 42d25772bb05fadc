//! The age boundaries of DOMAIN.md on exact dates, the policy choices, and the 10-yen rounding.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::NaiveDate;
use onshi_fallback::share::{
    ShareBasis, SharePolicy, SharePolicyError, UnidentifiedRule, age_on, collected_yen,
    estimate_share, estimate_share_checked, estimate_unidentified_share, reaches_age_on,
};

fn d(s: &str) -> NaiveDate {
    onshi_model::parse_date(s).unwrap()
}

fn share(birth: &str, service: &str) -> (u8, ShareBasis) {
    let e = estimate_share(d(birth), d(service), &SharePolicy::default());
    (e.percent, e.basis)
}

#[test]
fn legal_age_is_reached_the_day_before_the_birthday() {
    assert_eq!(reaches_age_on(d("2019-06-15"), 6), d("2025-06-14"));
    assert_eq!(reaches_age_on(d("2019-04-01"), 6), d("2025-03-31"));
    assert_eq!(reaches_age_on(d("1955-06-01"), 70), d("2025-05-31"));
    // 29 February: the 28th, in common and leap years alike.
    assert_eq!(reaches_age_on(d("2000-02-29"), 25), d("2025-02-28"));
    assert_eq!(reaches_age_on(d("2000-02-29"), 28), d("2028-02-28"));
    assert_eq!(age_on(d("2000-02-29"), d("2025-02-28")), 24);
    assert_eq!(age_on(d("2000-02-29"), d("2025-03-01")), 25);
    assert_eq!(age_on(d("1980-04-01"), d("2025-03-31")), 44);
    assert_eq!(age_on(d("1980-04-01"), d("2025-04-01")), 45);
}

#[test]
fn preschool_until_the_31_march_after_reaching_6() {
    // Born 15 June 2019: 6th birthday 15 June 2025, preschool until 31 March 2026.
    assert_eq!(
        share("2019-06-15", "2025-06-14"),
        (20, ShareBasis::Preschool)
    );
    assert_eq!(
        share("2019-06-15", "2025-06-15"),
        (20, ShareBasis::Preschool)
    );
    assert_eq!(
        share("2019-06-15", "2026-03-31"),
        (20, ShareBasis::Preschool)
    );
    assert_eq!(
        share("2019-06-15", "2026-04-01"),
        (30, ShareBasis::SchoolAgeTo69)
    );
    // A newborn and a service date on the birth date itself.
    assert_eq!(
        share("2025-06-15", "2025-06-15"),
        (20, ShareBasis::Preschool)
    );
}

#[test]
fn born_1_april_leaves_preschool_on_the_31_march_before_the_6th_birthday() {
    assert_eq!(
        share("2019-04-01", "2025-03-31"),
        (20, ShareBasis::Preschool)
    );
    assert_eq!(
        share("2019-04-01", "2025-04-01"),
        (30, ShareBasis::SchoolAgeTo69)
    );
}

#[test]
fn born_2_april_stays_preschool_for_another_year() {
    assert_eq!(
        share("2019-04-02", "2025-04-01"),
        (20, ShareBasis::Preschool)
    );
    assert_eq!(
        share("2019-04-02", "2025-04-02"),
        (20, ShareBasis::Preschool)
    );
    assert_eq!(
        share("2019-04-02", "2026-03-31"),
        (20, ShareBasis::Preschool)
    );
    assert_eq!(
        share("2019-04-02", "2026-04-01"),
        (30, ShareBasis::SchoolAgeTo69)
    );
}

#[test]
fn preschool_for_a_leap_day_birth() {
    // Reaches 6 on 28 Feb 2026 → preschool until 31 March 2026.
    assert_eq!(
        share("2020-02-29", "2026-03-31"),
        (20, ShareBasis::Preschool)
    );
    assert_eq!(
        share("2020-02-29", "2026-04-01"),
        (30, ShareBasis::SchoolAgeTo69)
    );
}

#[test]
fn seventy_from_the_month_after_the_birthday_month() {
    // Born 15 June 1955: 70 on 15 June 2025 → 20 % from 1 July 2025.
    assert_eq!(
        share("1955-06-15", "2025-06-15"),
        (30, ShareBasis::SchoolAgeTo69)
    );
    assert_eq!(
        share("1955-06-15", "2025-06-30"),
        (30, ShareBasis::SchoolAgeTo69)
    );
    assert_eq!(
        share("1955-06-15", "2025-07-01"),
        (20, ShareBasis::Age70To74)
    );
    // Born 2 June: reaches 70 on 1 June → still July.
    assert_eq!(
        share("1955-06-02", "2025-06-30"),
        (30, ShareBasis::SchoolAgeTo69)
    );
    assert_eq!(
        share("1955-06-02", "2025-07-01"),
        (20, ShareBasis::Age70To74)
    );
    // Born 30 June: 1 July, the day after the birthday.
    assert_eq!(
        share("1955-06-30", "2025-06-30"),
        (30, ShareBasis::SchoolAgeTo69)
    );
    assert_eq!(
        share("1955-06-30", "2025-07-01"),
        (20, ShareBasis::Age70To74)
    );
}

#[test]
fn seventy_born_on_the_1st_starts_in_the_birthday_month_itself() {
    // Born 1 June 1955: reaches 70 on 31 May 2025 → 20 % from 1 June 2025, the birthday.
    assert_eq!(
        share("1955-06-01", "2025-05-31"),
        (30, ShareBasis::SchoolAgeTo69)
    );
    assert_eq!(
        share("1955-06-01", "2025-06-01"),
        (20, ShareBasis::Age70To74)
    );
    // Born 1 January: reaches 70 on 31 December of the year before.
    assert_eq!(
        share("1955-01-01", "2024-12-31"),
        (30, ShareBasis::SchoolAgeTo69)
    );
    assert_eq!(
        share("1955-01-01", "2025-01-01"),
        (20, ShareBasis::Age70To74)
    );
}

#[test]
fn seventy_for_a_leap_day_birth() {
    // Born 29 Feb 1956: reaches 70 on 28 Feb 2026 → from 1 March 2026.
    assert_eq!(
        share("1956-02-29", "2026-02-28"),
        (30, ShareBasis::SchoolAgeTo69)
    );
    assert_eq!(
        share("1956-02-29", "2026-03-01"),
        (20, ShareBasis::Age70To74)
    );
}

#[test]
fn seventy_five_from_the_birthday_itself() {
    assert_eq!(
        share("1950-06-15", "2025-06-14"),
        (20, ShareBasis::Age70To74)
    );
    assert_eq!(
        share("1950-06-15", "2025-06-15"),
        (10, ShareBasis::Age75Plus)
    );
    // Born on the 1st: the birthday too, not the month before.
    assert_eq!(
        share("1950-06-01", "2025-05-31"),
        (20, ShareBasis::Age70To74)
    );
    assert_eq!(
        share("1950-06-01", "2025-06-01"),
        (10, ShareBasis::Age75Plus)
    );
    // 29 February: 1 March in a common year, 29 February in a leap year.
    assert_eq!(
        share("1951-02-28", "2026-02-28"),
        (10, ShareBasis::Age75Plus)
    );
    assert_eq!(
        share("1952-02-29", "2027-02-28"),
        (20, ShareBasis::Age70To74)
    );
    assert_eq!(
        share("1952-02-29", "2027-03-01"),
        (10, ShareBasis::Age75Plus)
    );
    assert_eq!(
        share("1953-02-28", "2028-02-28"),
        (10, ShareBasis::Age75Plus)
    );
    assert_eq!(
        share("1956-02-29", "2031-02-28"),
        (20, ShareBasis::Age70To74)
    );
    assert_eq!(
        share("1956-02-29", "2031-03-01"),
        (10, ShareBasis::Age75Plus)
    );
    assert_eq!(
        share("1948-02-29", "2023-02-28"),
        (20, ShareBasis::Age70To74)
    );
    assert_eq!(
        share("1948-02-29", "2023-03-01"),
        (10, ShareBasis::Age75Plus)
    );
    assert_eq!(
        share("1949-02-28", "2024-02-28"),
        (10, ShareBasis::Age75Plus)
    );
    assert_eq!(
        share("1952-02-29", "2027-02-28"),
        (20, ShareBasis::Age70To74)
    );
}

#[test]
fn era_birth_dates_give_the_same_share() {
    let policy = SharePolicy::default();
    let a = estimate_share(d("昭和25年6月15日"), d("令和7年6月15日"), &policy);
    let b = estimate_share(d("1950-06-15"), d("2025-06-15"), &policy);
    assert_eq!(a, b);
    assert_eq!(a.percent, 10);
    assert!(a.explanation.contains("2025-06-15"), "{}", a.explanation);
}

#[test]
fn policy_choices_apply_and_are_validated() {
    let p = SharePolicy::new(30, 30, UnidentifiedRule::AgeRule).unwrap();
    assert_eq!(
        estimate_share(d("1955-01-10"), d("2025-03-01"), &p).percent,
        30
    );
    assert_eq!(
        estimate_share(d("1950-01-10"), d("2025-03-01"), &p).percent,
        30
    );
    let p = SharePolicy::new(20, 20, UnidentifiedRule::AgeRule).unwrap();
    assert_eq!(
        estimate_share(d("1950-01-10"), d("2025-03-01"), &p).percent,
        20
    );
    assert_eq!(
        SharePolicy::new(10, 10, UnidentifiedRule::AgeRule),
        Err(SharePolicyError::Age70To74(10))
    );
    assert_eq!(
        SharePolicy::new(20, 40, UnidentifiedRule::AgeRule),
        Err(SharePolicyError::Age75Plus(40))
    );
    assert!(
        SharePolicyError::Age75Plus(40)
            .to_string()
            .starts_with("age75_plus_percent")
    );
}

#[test]
fn unidentified_patient_rule() {
    let full = SharePolicy::new(20, 10, UnidentifiedRule::FullFee).unwrap();
    let e = estimate_unidentified_share(Some(d("1980-01-01")), d("2025-06-15"), &full);
    assert_eq!((e.percent, e.basis), (100, ShareBasis::Unidentified));
    let age = SharePolicy::default();
    let e = estimate_unidentified_share(Some(d("1980-01-01")), d("2025-06-15"), &age);
    assert_eq!((e.percent, e.basis), (30, ShareBasis::SchoolAgeTo69));
    let e = estimate_unidentified_share(None, d("2025-06-15"), &age);
    assert_eq!((e.percent, e.basis), (100, ShareBasis::Unidentified));
}

#[test]
fn service_before_birth_is_rejected_on_the_service_date_field() {
    let e = estimate_share_checked(d("2025-06-15"), d("2025-06-14"), &SharePolicy::default())
        .unwrap_err();
    assert_eq!(e.field, "service_date");
    assert!(
        estimate_share_checked(d("2025-06-15"), d("2025-06-15"), &SharePolicy::default()).is_ok()
    );
}

#[test]
fn collected_amount_rounds_half_up_to_10_yen() {
    assert_eq!(collected_yen(1234, 30), 370); // 370.2
    assert_eq!(collected_yen(1235, 30), 370); // 370.5: the yen digit is 0
    assert_eq!(collected_yen(1250, 30), 380); // 375 → 380
    assert_eq!(collected_yen(1248, 30), 370); // 374.4
    assert_eq!(collected_yen(1249, 30), 370); // 374.7 (under 5 yen)
    assert_eq!(collected_yen(1217, 30), 370); // 365.1 → 370
    assert_eq!(collected_yen(1216, 30), 360); // 364.8 → 360
    assert_eq!(collected_yen(10_000, 10), 1000);
    assert_eq!(collected_yen(4_321, 20), 860); // 864.2
    assert_eq!(collected_yen(4_325, 20), 870); // 865
    assert_eq!(collected_yen(0, 30), 0);
    assert_eq!(collected_yen(12_345, 100), 12_350);
    assert_eq!(collected_yen(u64::MAX, 100), u64::MAX);
}
