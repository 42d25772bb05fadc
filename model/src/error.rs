//! The one error shape for bad input: which field, what kind of problem, and a sentence for people.

use serde::{Deserialize, Serialize};

/// What is wrong with a field, as a stable machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A required field is absent or null.
    MissingField,
    /// The field has the wrong JSON type (e.g. a number where text is expected).
    WrongType,
    /// The field contains a character that is never valid there (e.g. a stray "●").
    InvalidCharacter,
    /// The field has the wrong number of characters.
    InvalidLength,
    /// The check digit does not match the other digits.
    InvalidCheckDigit,
    /// The field is not in any accepted format.
    InvalidFormat,
    /// A date that does not exist, or is outside its era.
    InvalidDate,
    /// A value outside the allowed range or code list.
    OutOfRange,
    /// A field the request does not have (misspelt, or from another endpoint).
    UnknownField,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MissingField => "missing_field",
            ErrorCode::WrongType => "wrong_type",
            ErrorCode::InvalidCharacter => "invalid_character",
            ErrorCode::InvalidLength => "invalid_length",
            ErrorCode::InvalidCheckDigit => "invalid_check_digit",
            ErrorCode::InvalidFormat => "invalid_format",
            ErrorCode::InvalidDate => "invalid_date",
            ErrorCode::OutOfRange => "out_of_range",
            ErrorCode::UnknownField => "unknown_field",
        }
    }
}

/// A rejected input field. `field` is the path of the field in the request, e.g.
/// `insurance_card.insurer_number`; `message` is a sentence that names the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct FieldError {
    pub field: String,
    pub code: ErrorCode,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            code,
            message: message.into(),
        }
    }

    /// The same error, reported under a field path (`prefix.field`).
    pub fn under(mut self, prefix: &str) -> Self {
        if !prefix.is_empty() {
            self.field = if self.field.is_empty() {
                prefix.to_string()
            } else {
                format!("{prefix}.{}", self.field)
            };
        }
        self
    }
}

/// An error from a value parser that does not yet know its field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValueError {
    pub code: ErrorCode,
    pub message: String,
}

impl ValueError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ValueError {
            code,
            message: message.into(),
        }
    }

    /// Attach the field name: the message then reads "field: reason".
    pub fn at(self, field: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            code: self.code,
            message: format!("{field}: {}", self.message),
        }
    }
}
