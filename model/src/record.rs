//! The facility's records as they travel and are stored: the self-declaration and the provisional
//! patient-share record, their lifecycle, and the settlement the reconciler sends back. Facts are
//! written once by their creator; the lifecycle only moves forward.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::PersonId;
use crate::person::Sex;
use crate::qualification::Qualification;

/// Which rule gave the share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareBasis {
    Preschool,
    // snake_case would give `school_age_to69`: the names are spelt out to match `as_str`.
    #[serde(rename = "school_age_to_69")]
    SchoolAgeTo69,
    #[serde(rename = "age_70_to_74")]
    Age70To74,
    #[serde(rename = "age_75_plus")]
    Age75Plus,
    /// An unidentified patient under a policy that charges the full fee (refunded once confirmed).
    Unidentified,
}

impl ShareBasis {
    pub fn as_str(self) -> &'static str {
        match self {
            ShareBasis::Preschool => "preschool",
            ShareBasis::SchoolAgeTo69 => "school_age_to_69",
            ShareBasis::Age70To74 => "age_70_to_74",
            ShareBasis::Age75Plus => "age_75_plus",
            ShareBasis::Unidentified => "unidentified",
        }
    }
}

/// What the patient declared (申立書).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declaration {
    pub name: String,
    pub name_kana: Option<String>,
    pub birth_date: NaiveDate,
    pub sex: Sex,
    pub address: Option<String>,
    pub insurer_name: Option<String>,
    /// The insurance type the patient names (e.g. 協会けんぽ, 国保, 後期高齢者): decides the payer
    /// of an "insurer unknown" claim.
    pub insurance_type: Option<String>,
    pub employer: Option<String>,
    pub contact: Option<String>,
    pub share_percent: Option<u8>,
}

/// Where the share came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The patient declared it.
    Declared,
    /// The replica's qualification valid on the service date.
    Replica,
    /// The age rule of DOMAIN.md on the service date (`rule` says which band).
    AgeRule,
    /// Unidentified patient, and the policy says collect the full fee (refunded later).
    UnidentifiedFullFee,
}

/// Lifecycle; only moves forward (settlement and closing arrive with sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    Recorded,
    Sent,
    Settled,
    Closed,
}

/// A provisional patient-share record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionalRecord {
    pub record_id: String,
    pub created_at: DateTime<Utc>,
    pub declared: Declaration,
    pub person_id: Option<PersonId>,
    pub service_date: NaiveDate,
    pub total_fee_yen: u64,
    pub share_percent: u8,
    pub collected_yen: u64,
    pub basis: Basis,
    /// The age band, when the age rule decided.
    pub rule: Option<ShareBasis>,
    /// A sentence for reception: why this share.
    pub explanation: String,
    pub state: RecordState,
}

/// What the reconciler found when it settled a provisional record against the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettlementKind {
    /// The qualification valid on the service date has the share that was collected.
    Confirmed,
    /// Too much was collected: give back `yen`.
    Refund,
    /// Too little was collected: collect `yen` more.
    Charge,
    /// The claim must go to another insurer than declared: `qualification` gives the right one.
    InsurerChanged,
    /// No qualification found: file the claim as insurer unknown (不詳請求) to `payer`.
    InsurerUnknown,
    /// Several people match: staff choose among `candidates`.
    Ambiguous,
}

impl SettlementKind {
    /// The name the API and the metrics use (`confirmed`, `refund`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            SettlementKind::Confirmed => "confirmed",
            SettlementKind::Refund => "refund",
            SettlementKind::Charge => "charge",
            SettlementKind::InsurerChanged => "insurer_changed",
            SettlementKind::InsurerUnknown => "insurer_unknown",
            SettlementKind::Ambiguous => "ambiguous",
        }
    }
}

/// A person the settlement could not tell apart from others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettlementCandidate {
    pub person_id: PersonId,
    pub score: f32,
    pub qualification: Qualification,
}

/// The reconciler's verdict on one provisional record; written once, by the reconciler only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settlement {
    pub kind: SettlementKind,
    pub settled_at: DateTime<Utc>,
    /// The qualification valid on the service date, when one was found.
    pub qualification: Option<Qualification>,
    /// The share that qualification says, and what should have been collected.
    pub correct_share_percent: Option<u8>,
    pub due_yen: Option<u64>,
    /// The amount to refund or charge (for `refund` and `charge`).
    pub yen: Option<u64>,
    /// Whom to bill for an insurer-unknown claim.
    pub payer: Option<String>,
    pub candidates: Vec<SettlementCandidate>,
    /// One sentence for staff.
    pub explanation: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_basis_json_names_are_the_as_str_names() {
        for b in [
            ShareBasis::Preschool,
            ShareBasis::SchoolAgeTo69,
            ShareBasis::Age70To74,
            ShareBasis::Age75Plus,
            ShareBasis::Unidentified,
        ] {
            assert_eq!(
                serde_json::to_value(b).unwrap(),
                serde_json::json!(b.as_str())
            );
        }
    }

    #[test]
    fn lifecycle_only_orders_forward() {
        assert!(RecordState::Recorded < RecordState::Sent);
        assert!(RecordState::Sent < RecordState::Settled);
        assert!(RecordState::Settled < RecordState::Closed);
    }
}
