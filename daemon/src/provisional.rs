//! Provisional patient-share records: when eligibility cannot be confirmed, reception records the
//! patient's self-declaration (被保険者資格申立書: name, birth date, sex, address, insurer, declared
//! share) with the service date and total fee, and collects the normal share, not 100 %. The share
//! is the declared one, else the replica's, else the age rule (configurable policy). The record is
//! durable before the answer; settlement (a later issue) compares it with the registry.

use chrono::NaiveDate;
use onshi_fallback::share::{
    ShareBasis, SharePolicy, collected_yen, estimate_share, estimate_unidentified_share,
};
use onshi_model::fields::Fields;
pub use onshi_model::record::{Basis, Declaration, ProvisionalRecord, RecordState};
use onshi_model::{ErrorCode, FieldError, PersonId, Sex};
use serde_json::Value;

use crate::replica::Replica;

/// A provisional request as read from the API, before the share is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionalRequest {
    pub declared: Declaration,
    pub person_id: Option<PersonId>,
    pub service_date: NaiveDate,
    pub total_fee_yen: u64,
}

/// The most a single visit's total fee may be (a typo guard: ¥10 million).
pub const MAX_TOTAL_FEE_YEN: u64 = 10_000_000;

/// Optional free text: JSON text only (a number as a name is a client's mistake), bounded, no
/// control characters.
pub(crate) fn opt_text(
    f: &Fields<'_>,
    name: &str,
    max: usize,
) -> Result<Option<String>, FieldError> {
    match f.opt_text(name)? {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => {
            let p = f.path(name);
            if s.chars().count() > max {
                return Err(FieldError::new(
                    p.clone(),
                    ErrorCode::InvalidLength,
                    format!("{p}: longer than {max} characters"),
                ));
            }
            if s.chars().any(char::is_control) {
                return Err(FieldError::new(
                    p.clone(),
                    ErrorCode::InvalidCharacter,
                    format!("{p}: contains a control character"),
                ));
            }
            Ok(Some(s.trim().to_string()))
        }
    }
}

impl ProvisionalRequest {
    /// Reads the `POST /v1/provisional` body. `service_date` is required (the contract) and must
    /// be within [`onshi_model::plausible::service_date_window`] of `today`.
    pub fn from_json(v: &Value, today: NaiveDate) -> Result<Self, FieldError> {
        let f = Fields::root(v)?;
        f.deny_unknown(&["declared", "person_id", "service_date", "total_fee_yen"])?;
        let d = f.object("declared")?;
        d.deny_unknown(&[
            "name",
            "name_kana",
            "birth_date",
            "sex",
            "address",
            "insurer_name",
            "insurance_type",
            "employer",
            "contact",
            "share_percent",
        ])?;
        let name = opt_text(&d, "name", 100)?.ok_or_else(|| {
            FieldError::new(
                "declared.name",
                ErrorCode::MissingField,
                "declared.name: is required (as written on the self-declaration)",
            )
        })?;
        let share = d.opt_u64("share_percent", 0, 100)?;
        if let Some(s) = share
            && s % 10 != 0
        {
            return Err(FieldError::new(
                "declared.share_percent",
                ErrorCode::OutOfRange,
                format!(
                    "declared.share_percent: {s} is not a co-payment ratio (0, 10, 20, 30 … 100)"
                ),
            ));
        }
        let service_date = f.opt_date("service_date")?.ok_or_else(|| {
            FieldError::new(
                "service_date",
                ErrorCode::MissingField,
                "service_date: is required (the day of the visit the fee is for)",
            )
        })?;
        onshi_model::plausible::check_service_date("service_date", service_date, today)?;
        let declared = Declaration {
            name,
            name_kana: opt_text(&d, "name_kana", 100)?,
            birth_date: d.req_date("birth_date")?,
            sex: d.req("sex", Sex::parse)?,
            address: opt_text(&d, "address", 200)?,
            insurer_name: opt_text(&d, "insurer_name", 100)?,
            insurance_type: opt_text(&d, "insurance_type", 50)?,
            employer: opt_text(&d, "employer", 100)?,
            contact: opt_text(&d, "contact", 100)?,
            share_percent: share.map(|s| s as u8),
        };
        onshi_model::plausible::check_birth_date(
            "declared.birth_date",
            declared.birth_date,
            service_date,
        )?;
        Ok(ProvisionalRequest {
            declared,
            person_id: f.opt("person_id", PersonId::parse)?,
            service_date,
            total_fee_yen: f.req_u64("total_fee_yen", 0, MAX_TOTAL_FEE_YEN)?,
        })
    }
}

/// The share, where it came from, the age band (age rule only) and a sentence for reception.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareDecision {
    pub percent: u8,
    pub basis: Basis,
    pub rule: Option<ShareBasis>,
    pub explanation: String,
}

/// Decides the share: declared, else the replica's period valid on the service date, else the age
/// rule; an unidentified patient (no person, no insurer or insurance type named) pays the full fee
/// if the policy says so. Pure but for the replica read.
pub fn decide_share(
    req: &ProvisionalRequest,
    replica: &Replica,
    policy: &SharePolicy,
) -> Result<ShareDecision, String> {
    if let Some(s) = req.declared.share_percent {
        return Ok(ShareDecision {
            percent: s,
            basis: Basis::Declared,
            rule: None,
            explanation: format!("the patient declared a {s} % share"),
        });
    }
    if let Some(person) = &req.person_id {
        let periods = replica.periods_of(person).map_err(|e| e.to_string())?;
        if let Some(q) = periods.iter().find(|q| q.is_valid_on(req.service_date)) {
            return Ok(ShareDecision {
                percent: q.share_percent,
                basis: Basis::Replica,
                rule: None,
                explanation: format!(
                    "{} % from the qualification with {} known to this facility",
                    q.share_percent, q.insurer_name
                ),
            });
        }
    }
    let unidentified = req.person_id.is_none()
        && req.declared.insurer_name.is_none()
        && req.declared.insurance_type.is_none();
    let e = if unidentified {
        estimate_unidentified_share(Some(req.declared.birth_date), req.service_date, policy)
    } else {
        estimate_share(req.declared.birth_date, req.service_date, policy)
    };
    if e.basis == ShareBasis::Unidentified {
        return Ok(ShareDecision {
            percent: e.percent,
            basis: Basis::UnidentifiedFullFee,
            rule: None,
            explanation: e.explanation,
        });
    }
    Ok(ShareDecision {
        percent: e.percent,
        basis: Basis::AgeRule,
        rule: Some(e.basis),
        explanation: e.explanation,
    })
}

/// The amount to collect.
pub fn amount(total_fee_yen: u64, percent: u8) -> u64 {
    collected_yen(total_fee_yen, percent)
}
