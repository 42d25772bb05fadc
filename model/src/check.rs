//! An eligibility check: what is asked (insurance-card numbers with birth date, or a My Number card),
//! for which service date, and what comes back (資格有効性 and the qualifications).

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ErrorCode, FieldError};
use crate::fields::Fields;
use crate::ids::{Branch, CardId, CardNumber, CardSymbol, InsurerNumber};
use crate::qualification::Qualification;

/// The four numbers of an insurance card that identify one qualification.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InsuranceCardKey {
    pub insurer_number: InsurerNumber,
    pub symbol: Option<CardSymbol>,
    pub number: CardNumber,
    pub branch: Option<Branch>,
}

impl InsuranceCardKey {
    pub fn of(q: &Qualification) -> Self {
        InsuranceCardKey {
            insurer_number: q.insurer_number.clone(),
            symbol: q.symbol.clone(),
            number: q.number.clone(),
            branch: q.branch.clone(),
        }
    }
}

/// Who a check is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckSubject {
    /// Numbers typed from an insurance card; the birth date must match (as in the real system).
    InsuranceCard {
        card: InsuranceCardKey,
        birth_date: NaiveDate,
    },
    /// A My Number card placed on the reader (face or PIN verified by the reader).
    Card { card_id: CardId },
}

/// A check as the edge and the reconciler understand it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRequest {
    pub subject: CheckSubject,
    pub service_date: NaiveDate,
}

/// 資格有効性: the six codes of the real system, plus `pending` (not answered yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validity {
    /// 1 有効
    Valid,
    /// 2 無効 (lost)
    Invalid,
    /// 3 無効（新しい資格あり）
    InvalidNewerExists,
    /// 4 該当資格なし
    NotFound,
    /// 5 複数該当
    Multiple,
    /// 6 有効（未登録）: public assistance only
    ValidUnregistered,
    /// No answer yet: the online check is queued.
    Pending,
}

impl Validity {
    /// The code of the file interface (`QualificationValidity`); `None` for `pending`.
    pub fn code(self) -> Option<u8> {
        Some(match self {
            Validity::Valid => 1,
            Validity::Invalid => 2,
            Validity::InvalidNewerExists => 3,
            Validity::NotFound => 4,
            Validity::Multiple => 5,
            Validity::ValidUnregistered => 6,
            Validity::Pending => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Validity::Valid => "valid",
            Validity::Invalid => "invalid",
            Validity::InvalidNewerExists => "invalid_newer_exists",
            Validity::NotFound => "not_found",
            Validity::Multiple => "multiple",
            Validity::ValidUnregistered => "valid_unregistered",
            Validity::Pending => "pending",
        }
    }
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Online,
    Replica,
    Queued,
}

impl Source {
    /// `online`, `replica` or `queued`, as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Online => "online",
            Source::Replica => "replica",
            Source::Queued => "queued",
        }
    }
}

/// The answer to a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOutcome {
    pub validity: Validity,
    pub qualifications: Vec<Qualification>,
}

const CHECK_FIELDS: &[&str] = &["insurance_card", "birth_date", "card_id", "service_date"];
const CARD_FIELDS: &[&str] = &["insurer_number", "symbol", "number", "branch"];

impl CheckRequest {
    /// Reads the `POST /v1/checks` body. `today` is the service date when none is given; a given
    /// one must be within [`crate::plausible::service_date_window`], a birth date from 1868 to it.
    pub fn from_json(v: &Value, today: NaiveDate) -> Result<Self, FieldError> {
        let f = Fields::root(v)?;
        f.deny_unknown(CHECK_FIELDS)?;
        let service_date = f.opt_date("service_date")?.unwrap_or(today);
        crate::plausible::check_service_date("service_date", service_date, today)?;
        let by_card = f.has("insurance_card");
        let by_id = f.has("card_id");
        let subject = match (by_card, by_id) {
            (true, true) => {
                return Err(FieldError::new(
                    "card_id",
                    ErrorCode::InvalidFormat,
                    "card_id: give either insurance_card (with birth_date) or card_id, not both",
                ));
            }
            (false, false) => {
                return Err(FieldError::new(
                    "insurance_card",
                    ErrorCode::MissingField,
                    "insurance_card: is required (with birth_date), or give card_id for a My Number card",
                ));
            }
            (false, true) => CheckSubject::Card {
                card_id: f.req("card_id", CardId::parse)?,
            },
            (true, false) => {
                let c = f.object("insurance_card")?;
                c.deny_unknown(CARD_FIELDS)?;
                let card = InsuranceCardKey {
                    insurer_number: c.req("insurer_number", InsurerNumber::parse)?,
                    symbol: c.opt("symbol", CardSymbol::parse)?,
                    number: c.req("number", CardNumber::parse)?,
                    branch: c.opt("branch", Branch::parse)?,
                };
                let birth_date = f.req_date("birth_date")?;
                crate::plausible::check_birth_date("birth_date", birth_date, service_date)?;
                CheckSubject::InsuranceCard { card, birth_date }
            }
        };
        Ok(CheckRequest {
            subject,
            service_date,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
    }

    #[test]
    fn insurance_card_request_with_era_birth_date_and_default_service_date() {
        let v = json!({"insurance_card":{"insurer_number":"06130017","symbol":null,"number":"4567","branch":null},"birth_date":"S55.4.1"});
        let r = CheckRequest::from_json(&v, today()).unwrap();
        assert_eq!(r.service_date, today());
        match r.subject {
            CheckSubject::InsuranceCard { card, birth_date } => {
                assert_eq!(card.symbol, None);
                assert_eq!(birth_date, NaiveDate::from_ymd_opt(1980, 4, 1).unwrap());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_nested_field() {
        let cases = [
            (
                json!({"insurance_card":{"insurer_number":"06130012","number":"1"},"birth_date":"1980-01-01"}),
                "insurance_card.insurer_number",
                ErrorCode::InvalidCheckDigit,
            ),
            (
                json!({"insurance_card":{"insurer_number":"06130017","number":"4●"},"birth_date":"1980-01-01"}),
                "insurance_card.number",
                ErrorCode::InvalidCharacter,
            ),
            (
                json!({"insurance_card":{"insurer_number":"06130017","number":"4","branch":"1"},"birth_date":"1980-01-01"}),
                "insurance_card.branch",
                ErrorCode::InvalidLength,
            ),
            (
                json!({"insurance_card":{"insurer_number":"06130017"},"birth_date":"1980-01-01"}),
                "insurance_card.number",
                ErrorCode::MissingField,
            ),
            (
                json!({"insurance_card":{"insurer_number":"06130017","number":"4"}}),
                "birth_date",
                ErrorCode::MissingField,
            ),
            (
                json!({"insurance_card":{"insurer_number":"06130017","number":"4"},"birth_date":"2030-01-01"}),
                "birth_date",
                ErrorCode::OutOfRange,
            ),
            (
                json!({"insurance_card":{"insurer_number":"06130017","number":"4"},"birth_date":"1980-01-01","service_date":"R8.13.1"}),
                "service_date",
                ErrorCode::InvalidDate,
            ),
            (
                json!({"insurance_card":"06130017","birth_date":"1980-01-01"}),
                "insurance_card",
                ErrorCode::WrongType,
            ),
            (
                json!({"insurance_card":{"insurer_number":"06130017","number":"4","nmber":"5"},"birth_date":"1980-01-01"}),
                "insurance_card.nmber",
                ErrorCode::UnknownField,
            ),
            (
                json!({"insurance_card":{"insurer_number":"06130017","number":"4"},"birth_date":"0001-01-01"}),
                "birth_date",
                ErrorCode::OutOfRange,
            ),
            (
                json!({"insurance_card":{"insurer_number":"06130017","number":"4"},"birth_date":"1980-01-01","service_date":"9999-12-31"}),
                "service_date",
                ErrorCode::OutOfRange,
            ),
            (
                json!({"insurance_card":{"insurer_number":"06130017","number":"4"},"birth_date":"1980-01-01","service_date":"令和99年1月1日"}),
                "service_date",
                ErrorCode::OutOfRange,
            ),
            (json!({}), "insurance_card", ErrorCode::MissingField),
            (
                json!({"card_id":"", "insurance_card": null}),
                "card_id",
                ErrorCode::MissingField,
            ),
            (
                json!({"card_id":"C1","insurance_card":{}}),
                "card_id",
                ErrorCode::InvalidFormat,
            ),
            (json!([1]), "", ErrorCode::WrongType),
        ];
        for (body, field, code) in cases {
            let e = CheckRequest::from_json(&body, today()).unwrap_err();
            assert_eq!(e.field, field, "{body}: {e}");
            assert_eq!(e.code, code, "{body}: {e}");
        }
    }

    #[test]
    fn validity_codes() {
        assert_eq!(Validity::InvalidNewerExists.code(), Some(3));
        assert_eq!(Validity::Pending.code(), None);
        assert_eq!(
            serde_json::to_value(Validity::InvalidNewerExists).unwrap(),
            json!("invalid_newer_exists")
        );
    }
}
