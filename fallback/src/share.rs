//! The age-based patient share (自己負担割合) for a provisional record, when neither the insurer's
//! answer nor the replica gives one, and the amount to collect. DOMAIN.md's rules, exact on dates.
//! This is an estimate only: the ratio the insurer returns is authoritative, and settlement corrects
//! the difference. Never reads the clock: the service date is passed in.
//!
//! Ages are legal ages (年齢計算ニ関スル法律, 民法143条): one reaches age N at the end of the day
//! before the Nth birthday; for someone born on 29 February that day is 28 February in every year.
//! - Preschool (未就学, 20 %): until the first 31 March on or after the day one reaches 6.
//! - School age to 69 (30 %).
//! - 70–74 (20 %, or 30 % with working-level income: [`SharePolicy`]): from the 1st of the month
//!   after the month in which one reaches 70 — the birthday's own month for someone born on the 1st.
//! - 75 and over (後期高齢者医療, 10/20/30 % by income: [`SharePolicy`]): from the 75th birthday itself,
//!   i.e. the day after one reaches 75 (1 March for a 29 February birthday in a common year).

use chrono::{Datelike, Days, Months, NaiveDate};
use onshi_model::{ErrorCode, FieldError};
use serde::{Deserialize, Serialize};

pub use onshi_model::record::ShareBasis;

/// What to do for a patient who cannot be identified (no card, no proof, not in the replica).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnidentifiedRule {
    /// Charge 100 % and refund the difference once the qualification is confirmed.
    FullFee,
    /// Charge the normal share by age from the declared birth date (DOMAIN.md: the outage default).
    AgeRule,
}

/// The facility's configurable choices. Build with [`SharePolicy::new`] (validated) or take the
/// default: 20 % at 70–74, 10 % at 75+, age rule for unidentified patients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharePolicy {
    age70_74_percent: u8,
    age75_plus_percent: u8,
    unidentified: UnidentifiedRule,
}

/// A policy value outside what the law allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharePolicyError {
    #[error("age70_74_percent: {0} is not a 70–74 share; use 20 or 30")]
    Age70To74(u8),
    #[error("age75_plus_percent: {0} is not a 75+ share; use 10, 20 or 30")]
    Age75Plus(u8),
}

impl Default for SharePolicy {
    fn default() -> Self {
        SharePolicy {
            age70_74_percent: 20,
            age75_plus_percent: 10,
            unidentified: UnidentifiedRule::AgeRule,
        }
    }
}

impl SharePolicy {
    pub fn new(
        age70_74_percent: u8,
        age75_plus_percent: u8,
        unidentified: UnidentifiedRule,
    ) -> Result<Self, SharePolicyError> {
        if ![20, 30].contains(&age70_74_percent) {
            return Err(SharePolicyError::Age70To74(age70_74_percent));
        }
        if ![10, 20, 30].contains(&age75_plus_percent) {
            return Err(SharePolicyError::Age75Plus(age75_plus_percent));
        }
        Ok(SharePolicy {
            age70_74_percent,
            age75_plus_percent,
            unidentified,
        })
    }

    pub fn age70_74_percent(&self) -> u8 {
        self.age70_74_percent
    }

    pub fn age75_plus_percent(&self) -> u8 {
        self.age75_plus_percent
    }

    pub fn unidentified(&self) -> UnidentifiedRule {
        self.unidentified
    }
}

/// The share to collect and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareEstimate {
    pub percent: u8,
    pub basis: ShareBasis,
    /// One sentence for staff, with the dates that decided it.
    pub explanation: String,
}

/// The day one reaches age `n` (the end of the day before the nth birthday).
pub fn reaches_age_on(birth: NaiveDate, n: u32) -> NaiveDate {
    if birth.month() == 2 && birth.day() == 29 {
        // No 29 February in most years: the period ends on the last day of February (民法143条2項),
        // and in a leap year on the day before the 29th, which is also the 28th.
        return NaiveDate::from_ymd_opt(birth.year() + n as i32, 2, 28).unwrap_or(birth);
    }
    birth
        .checked_add_months(Months::new(12 * n))
        .and_then(|d| d.checked_sub_days(Days::new(1)))
        .unwrap_or(birth)
}

/// Age in completed years on `on` (it goes up on the birthday: the day after one reaches it).
pub fn age_on(birth: NaiveDate, on: NaiveDate) -> u32 {
    if on <= birth {
        return 0;
    }
    let mut age = (on.year() - birth.year()).max(0) as u32;
    while age > 0 && reaches_age_on(birth, age) >= on {
        age -= 1;
    }
    age
}

/// Last day of the preschool share: the first 31 March on or after the day one reaches 6.
pub fn preschool_last_day(birth: NaiveDate) -> NaiveDate {
    let reach6 = reaches_age_on(birth, 6);
    let march31 = |y| NaiveDate::from_ymd_opt(y, 3, 31).unwrap_or(reach6);
    if reach6 <= march31(reach6.year()) {
        march31(reach6.year())
    } else {
        march31(reach6.year() + 1)
    }
}

/// First day of the 70–74 share: the 1st of the month after the month in which one reaches 70.
pub fn age70_first_day(birth: NaiveDate) -> NaiveDate {
    let reach70 = reaches_age_on(birth, 70);
    reach70
        .with_day(1)
        .and_then(|d| d.checked_add_months(Months::new(1)))
        .unwrap_or(reach70)
}

/// First day of the 75+ share: the 75th birthday itself.
pub fn age75_first_day(birth: NaiveDate) -> NaiveDate {
    let reach75 = reaches_age_on(birth, 75);
    reach75.checked_add_days(Days::new(1)).unwrap_or(reach75)
}

/// The share by age on the service date, for a patient whose birth date is known (declared or
/// from the replica). A service date before the birth date is treated as age 0; use
/// [`estimate_share_checked`] to reject it instead.
pub fn estimate_share(birth: NaiveDate, service: NaiveDate, policy: &SharePolicy) -> ShareEstimate {
    let age = age_on(birth, service);
    let start75 = age75_first_day(birth);
    let start70 = age70_first_day(birth);
    let pre_last = preschool_last_day(birth);
    let (percent, basis, why) = if service >= start75 {
        (
            policy.age75_plus_percent,
            ShareBasis::Age75Plus,
            format!("75 and over from the 75th birthday, {start75}"),
        )
    } else if service >= start70 {
        (
            policy.age70_74_percent,
            ShareBasis::Age70To74,
            format!(
                "70–74 from {start70}, the 1st of the month after reaching 70, until {}",
                start75.pred_opt().unwrap_or(start75)
            ),
        )
    } else if service <= pre_last {
        (
            20,
            ShareBasis::Preschool,
            format!("preschool until {pre_last}, the first 31 March after reaching 6"),
        )
    } else {
        (
            30,
            ShareBasis::SchoolAgeTo69,
            format!(
                "school age from {} until {}",
                pre_last.succ_opt().unwrap_or(pre_last),
                start70.pred_opt().unwrap_or(start70)
            ),
        )
    };
    ShareEstimate {
        percent,
        basis,
        explanation: format!("{percent} %: aged {age} on {service}; {why}"),
    }
}

/// [`estimate_share`], rejecting a service date before the birth date (error on `service_date`).
pub fn estimate_share_checked(
    birth: NaiveDate,
    service: NaiveDate,
    policy: &SharePolicy,
) -> Result<ShareEstimate, FieldError> {
    if service < birth {
        return Err(FieldError::new(
            "service_date",
            ErrorCode::OutOfRange,
            format!("service_date: {service} is before the birth date {birth}"),
        ));
    }
    Ok(estimate_share(birth, service, policy))
}

/// The share for a patient who could not be identified: 100 % under [`UnidentifiedRule::FullFee`],
/// else the age rule on the declared birth date (100 % if there is none to go by).
pub fn estimate_unidentified_share(
    birth: Option<NaiveDate>,
    service: NaiveDate,
    policy: &SharePolicy,
) -> ShareEstimate {
    match (policy.unidentified, birth) {
        (UnidentifiedRule::AgeRule, Some(b)) => estimate_share(b, service, policy),
        (UnidentifiedRule::AgeRule, None) => ShareEstimate {
            percent: 100,
            basis: ShareBasis::Unidentified,
            explanation: "100 %: patient not identified and no birth date to apply the age rule; refund the difference once confirmed".into(),
        },
        (UnidentifiedRule::FullFee, _) => ShareEstimate {
            percent: 100,
            basis: ShareBasis::Unidentified,
            explanation: "100 %: patient not identified (facility policy); refund the difference once confirmed".into(),
        },
    }
}

/// The amount to collect: `total_fee_yen × percent / 100`, rounded to 10 yen the way the
/// co-payment is (一部負担金の10円未満四捨五入: under 5 yen down, 5 yen and over up).
pub fn collected_yen(total_fee_yen: u64, percent: u8) -> u64 {
    // total × percent is the share in hundredths of a yen, exactly; 5 yen is 500 of them.
    let hundredths = u128::from(total_fee_yen) * u128::from(percent);
    let tens = (hundredths + 500) / 1000;
    u64::try_from(tens * 10).unwrap_or(u64::MAX)
}
