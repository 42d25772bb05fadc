//! The vocabulary of onshi: every identifier, date, person, qualification and check that the API,
//! the wire, storage and files speak. Each type validates on construction and says which field is
//! wrong and why. This crate does no IO and reads no clock: "today" is always passed in.

pub mod check;
pub mod date;
pub mod error;
pub mod fields;
pub mod ids;
pub mod person;
pub mod plausible;
pub mod qualification;
pub mod record;
pub mod text;
pub mod untrusted;

pub use check::{CheckOutcome, CheckRequest, CheckSubject, InsuranceCardKey, Source, Validity};
pub use date::{Era, parse_date};
pub use error::{ErrorCode, FieldError};
pub use ids::{
    Branch, CardClass, CardId, CardNumber, CardSymbol, FacilityCode, InsurerNumber, PersonId,
    PostalCode,
};
pub use person::{LossReason, Relationship, Sex};
pub use qualification::Qualification;
pub use untrusted::Untrusted;

/// Re-exported so that users of the model name dates with the same type.
pub use chrono::NaiveDate;
