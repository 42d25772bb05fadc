//! Code lists about a person: sex, insured/dependent, reason a qualification was lost.

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, ValueError};
use crate::text::fold_trim;

/// Sex as the qualification records it (1 male, 2 female, 3 unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    Male,
    Female,
    Unset,
}

impl Sex {
    /// Accepts `male|female|unset`, the codes `1|2|3`, and 男/女.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        match fold_trim(input).to_ascii_lowercase().as_str() {
            "male" | "1" | "男" | "男性" | "m" => Ok(Sex::Male),
            "female" | "2" | "女" | "女性" | "f" => Ok(Sex::Female),
            "unset" | "3" => Ok(Sex::Unset),
            other => Err(ValueError::new(
                ErrorCode::OutOfRange,
                format!("'{other}' is not a sex; use male, female or unset"),
            )),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Sex::Male => 1,
            Sex::Female => 2,
            Sex::Unset => 3,
        }
    }
}

/// 本人 (the insured) or 家族 (a dependent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Relationship {
    Insured,
    Dependent,
}

impl Relationship {
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        match fold_trim(input).to_ascii_lowercase().as_str() {
            "insured" | "1" | "本人" => Ok(Relationship::Insured),
            "dependent" | "2" | "家族" => Ok(Relationship::Dependent),
            other => Err(ValueError::new(
                ErrorCode::OutOfRange,
                format!("'{other}' is not a relationship; use insured or dependent"),
            )),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Relationship::Insured => 1,
            Relationship::Dependent => 2,
        }
    }
}

/// Why a qualification was lost (資格喪失事由): 01 death, 02 public assistance, 03 joined other
/// insurance, 99 other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossReason {
    Death,
    PublicAssistance,
    JoinedOtherInsurance,
    Other,
}

impl LossReason {
    /// Accepts the code (`01`, `02`, `03`, `99`) or the snake-case name.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        match fold_trim(input).to_ascii_lowercase().as_str() {
            "01" | "1" | "death" => Ok(LossReason::Death),
            "02" | "2" | "public_assistance" => Ok(LossReason::PublicAssistance),
            "03" | "3" | "joined_other_insurance" => Ok(LossReason::JoinedOtherInsurance),
            "99" | "other" => Ok(LossReason::Other),
            other => Err(ValueError::new(
                ErrorCode::OutOfRange,
                format!(
                    "'{other}' is not a loss reason; use 01 (death), 02 (public assistance), 03 (joined other insurance) or 99 (other)"
                ),
            )),
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            LossReason::Death => "01",
            LossReason::PublicAssistance => "02",
            LossReason::JoinedOtherInsurance => "03",
            LossReason::Other => "99",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_lists_accept_names_and_codes() {
        assert_eq!(Sex::parse("2").unwrap(), Sex::Female);
        assert_eq!(Sex::parse("Male").unwrap(), Sex::Male);
        assert_eq!(Sex::parse("x").unwrap_err().code, ErrorCode::OutOfRange);
        assert_eq!(
            Relationship::parse("家族").unwrap(),
            Relationship::Dependent
        );
        assert!(
            Relationship::parse("spouse")
                .unwrap_err()
                .message
                .contains("insured or dependent")
        );
        assert_eq!(
            LossReason::parse("03").unwrap(),
            LossReason::JoinedOtherInsurance
        );
        assert_eq!(LossReason::parse("death").unwrap().code(), "01");
        assert_eq!(
            LossReason::parse("04").unwrap_err().code,
            ErrorCode::OutOfRange
        );
    }
}
