//! A qualification period (資格): one line of the registry, one period of one person under one
//! insurer. A person may have several (a job change loses one and acquires another).

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ErrorCode, FieldError};
use crate::fields::Fields;
use crate::ids::{
    Branch, CardClass, CardId, CardNumber, CardSymbol, InsurerNumber, PersonId, PostalCode,
};
use crate::person::{LossReason, Relationship, Sex};

/// One qualification period. Field names are those of the registry JSONL (DESIGN.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Qualification {
    pub person_id: PersonId,
    pub card_id: Option<CardId>,
    pub insurer_number: InsurerNumber,
    pub insurer_name: String,
    pub card_class: CardClass,
    pub symbol: Option<CardSymbol>,
    pub number: CardNumber,
    pub branch: Option<Branch>,
    pub relationship: Relationship,
    pub name: String,
    pub name_kana: String,
    pub sex: Sex,
    pub birth_date: NaiveDate,
    pub address: String,
    pub postal_code: Option<PostalCode>,
    pub acquired_on: NaiveDate,
    pub lost_on: Option<NaiveDate>,
    pub loss_reason: Option<LossReason>,
    pub share_percent: u8,
}

/// The registry line's field names, in order.
pub const REGISTRY_FIELDS: &[&str] = &[
    "person_id",
    "card_id",
    "insurer_number",
    "insurer_name",
    "card_class",
    "symbol",
    "number",
    "branch",
    "relationship",
    "name",
    "name_kana",
    "sex",
    "birth_date",
    "address",
    "postal_code",
    "acquired_on",
    "lost_on",
    "loss_reason",
    "share_percent",
];

fn req_text(f: &Fields<'_>, name: &str, max_chars: usize) -> Result<String, FieldError> {
    let s = f.req_str(name)?;
    let t = s.trim();
    let p = f.path(name);
    if t.is_empty() {
        return Err(FieldError::new(
            p.clone(),
            ErrorCode::MissingField,
            format!("{p}: is empty"),
        ));
    }
    if t.chars().count() > max_chars {
        return Err(FieldError::new(
            p.clone(),
            ErrorCode::InvalidLength,
            format!("{p}: longer than {max_chars} characters"),
        ));
    }
    if t.chars().any(char::is_control) {
        return Err(FieldError::new(
            p.clone(),
            ErrorCode::InvalidCharacter,
            format!("{p}: contains a control character"),
        ));
    }
    Ok(t.to_string())
}

impl Qualification {
    /// Whether this period covers `date`: acquired on or before it and not yet lost. The lost date
    /// is the first day without the qualification (喪失日).
    pub fn is_valid_on(&self, date: NaiveDate) -> bool {
        self.acquired_on <= date && self.lost_on.is_none_or(|l| date < l)
    }

    /// Parses one registry JSONL line, naming the field of the first problem found.
    pub fn from_registry_json(line: &str) -> Result<Self, FieldError> {
        let v: Value = serde_json::from_str(line).map_err(|e| {
            FieldError::new("", ErrorCode::InvalidFormat, format!("not valid JSON: {e}"))
        })?;
        Self::from_registry_value(&v)
    }

    pub fn from_registry_value(v: &Value) -> Result<Self, FieldError> {
        let f = Fields::root(v)?;
        f.deny_unknown(REGISTRY_FIELDS)?;
        let share = f.req_u64("share_percent", 0, 100)?;
        let q = Qualification {
            person_id: f.req("person_id", PersonId::parse)?,
            card_id: f.opt("card_id", CardId::parse)?,
            insurer_number: f.req("insurer_number", InsurerNumber::parse)?,
            insurer_name: req_text(&f, "insurer_name", 100)?,
            card_class: f.req("card_class", CardClass::parse)?,
            symbol: f.opt("symbol", CardSymbol::parse)?,
            number: f.req("number", CardNumber::parse)?,
            branch: f.opt("branch", Branch::parse)?,
            relationship: f.req("relationship", Relationship::parse)?,
            name: req_text(&f, "name", 100)?,
            name_kana: req_text(&f, "name_kana", 100)?,
            sex: f.req("sex", Sex::parse)?,
            birth_date: f.req_date("birth_date")?,
            address: req_text(&f, "address", 200)?,
            postal_code: f.opt("postal_code", PostalCode::parse)?,
            acquired_on: f.req_date("acquired_on")?,
            lost_on: f.opt_date("lost_on")?,
            loss_reason: f.opt("loss_reason", LossReason::parse)?,
            share_percent: share as u8,
        };
        if q.acquired_on < q.birth_date {
            return Err(FieldError::new(
                "acquired_on",
                ErrorCode::OutOfRange,
                format!(
                    "acquired_on: {} is before birth_date {}",
                    q.acquired_on, q.birth_date
                ),
            ));
        }
        if let Some(lost) = q.lost_on
            && lost < q.acquired_on
        {
            return Err(FieldError::new(
                "lost_on",
                ErrorCode::OutOfRange,
                format!("lost_on: {lost} is before acquired_on {}", q.acquired_on),
            ));
        }
        if q.loss_reason.is_some() && q.lost_on.is_none() {
            return Err(FieldError::new(
                "loss_reason",
                ErrorCode::OutOfRange,
                "loss_reason: given without lost_on",
            ));
        }
        Ok(q)
    }

    /// The registry JSONL line for this period.
    pub fn to_registry_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"person_id":"P0000001","card_id":"C0000001","insurer_number":"06130017","insurer_name":"霞が関健康保険組合","card_class":"01","symbol":"123","number":"4567","branch":"01","relationship":"insured","name":"山田　太郎","name_kana":"ヤマダ　タロウ","sex":"male","birth_date":"1980-04-01","address":"東京都千代田区霞が関1-2-2","postal_code":"100-8916","acquired_on":"2020-04-01","lost_on":null,"loss_reason":null,"share_percent":30}"#;

    fn with(field: &str, value: Value) -> String {
        let mut v: Value = serde_json::from_str(LINE).unwrap();
        v[field] = value;
        v.to_string()
    }

    #[test]
    fn the_contract_example_parses_and_round_trips() {
        let q = Qualification::from_registry_json(LINE).unwrap();
        assert_eq!(q.insurer_number.as_str(), "06130017");
        assert_eq!(q.branch.as_ref().map(|b| b.as_str()), Some("01"));
        let again = Qualification::from_registry_json(&q.to_registry_json()).unwrap();
        assert_eq!(again, q);
    }

    #[test]
    fn validity_window_uses_the_lost_date_as_first_day_without() {
        let q = Qualification::from_registry_json(&with("lost_on", "2023-04-01".into())).unwrap();
        let d = |s| crate::parse_date(s).unwrap();
        assert!(!q.is_valid_on(d("2020-03-31")));
        assert!(q.is_valid_on(d("2020-04-01")));
        assert!(q.is_valid_on(d("2023-03-31")));
        assert!(!q.is_valid_on(d("2023-04-01")));
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: &[(&str, Value, &str, ErrorCode)] = &[
            (
                "insurer_number",
                "06130012".into(),
                "insurer_number",
                ErrorCode::InvalidCheckDigit,
            ),
            (
                "number",
                "45●7".into(),
                "number",
                ErrorCode::InvalidCharacter,
            ),
            (
                "birth_date",
                "1980-02-30".into(),
                "birth_date",
                ErrorCode::InvalidDate,
            ),
            ("sex", "x".into(), "sex", ErrorCode::OutOfRange),
            (
                "share_percent",
                130.into(),
                "share_percent",
                ErrorCode::OutOfRange,
            ),
            (
                "person_id",
                Value::Null,
                "person_id",
                ErrorCode::MissingField,
            ),
            (
                "name",
                serde_json::json!({"a":1}),
                "name",
                ErrorCode::WrongType,
            ),
            (
                "lost_on",
                "2019-01-01".into(),
                "lost_on",
                ErrorCode::OutOfRange,
            ),
            ("nmae", "x".into(), "nmae", ErrorCode::UnknownField),
            (
                "address",
                serde_json::json!([]),
                "address",
                ErrorCode::WrongType,
            ),
        ];
        for (field, value, want_field, want_code) in cases {
            let e = Qualification::from_registry_json(&with(field, value.clone())).unwrap_err();
            assert_eq!(&e.field, want_field, "{field}: {e}");
            assert_eq!(&e.code, want_code, "{field}: {e}");
            assert!(e.message.starts_with(want_field), "{}", e.message);
        }
        let e = Qualification::from_registry_json("{not json").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidFormat);
    }
}
