//! Reading a JSON object field by field, so that every error names the field's full path
//! (e.g. `insurance_card.insurer_number`) and the reason. Used for the HTTP API and registry lines,
//! where a generic deserializer's "invalid value at column 17" would not tell staff what to fix.

use chrono::NaiveDate;
use serde_json::{Map, Value};

use crate::date::parse_date;
use crate::error::{ErrorCode, FieldError, ValueError};

/// A view of one JSON object at a path.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Fields<'a> {
    /// The top-level object of a request; anything else is an error for the field `""`.
    pub fn root(v: &'a Value) -> Result<Self, FieldError> {
        match v {
            Value::Object(obj) => Ok(Fields {
                obj,
                prefix: String::new(),
            }),
            _ => Err(FieldError::new(
                "",
                ErrorCode::WrongType,
                "the request body must be a JSON object",
            )),
        }
    }

    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.obj.get(name).is_some_and(|v| !v.is_null())
    }

    /// A nested object.
    pub fn object(&self, name: &str) -> Result<Fields<'a>, FieldError> {
        let p = self.path(name);
        match self.obj.get(name) {
            Some(Value::Object(obj)) => Ok(Fields { obj, prefix: p }),
            None | Some(Value::Null) => Err(FieldError::new(
                p.clone(),
                ErrorCode::MissingField,
                format!("{p}: is required"),
            )),
            Some(_) => Err(FieldError::new(
                p.clone(),
                ErrorCode::WrongType,
                format!("{p}: must be an object"),
            )),
        }
    }

    /// Text of an optional field; numbers are accepted as their decimal text (a JSON client may send
    /// `"number": 4567`).
    pub fn opt_str(&self, name: &str) -> Result<Option<String>, FieldError> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => {
                let p = self.path(name);
                Err(FieldError::new(
                    p.clone(),
                    ErrorCode::WrongType,
                    format!("{p}: must be text"),
                ))
            }
        }
    }

    /// Text of an optional field that must be JSON text: a number is refused (`wrong_type`), since
    /// a name or a reason written as a number is a client's mistake, not a value.
    pub fn opt_text(&self, name: &str) -> Result<Option<String>, FieldError> {
        match self.obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => {
                let p = self.path(name);
                Err(FieldError::new(
                    p.clone(),
                    ErrorCode::WrongType,
                    format!("{p}: must be text (in quotes)"),
                ))
            }
        }
    }

    pub fn req_str(&self, name: &str) -> Result<String, FieldError> {
        self.opt_str(name)?.ok_or_else(|| {
            let p = self.path(name);
            FieldError::new(
                p.clone(),
                ErrorCode::MissingField,
                format!("{p}: is required"),
            )
        })
    }

    /// A required field through a value parser.
    pub fn req<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, ValueError>,
    ) -> Result<T, FieldError> {
        let s = self.req_str(name)?;
        parse(&s).map_err(|e| e.at(&self.path(name)))
    }

    /// An optional field through a value parser; null, absent and empty text are all "absent".
    pub fn opt<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, ValueError>,
    ) -> Result<Option<T>, FieldError> {
        match self.opt_str(name)? {
            None => Ok(None),
            Some(s) if s.trim().is_empty() => Ok(None),
            Some(s) => parse(&s).map(Some).map_err(|e| e.at(&self.path(name))),
        }
    }

    pub fn req_date(&self, name: &str) -> Result<NaiveDate, FieldError> {
        self.req(name, parse_date)
    }

    pub fn opt_date(&self, name: &str) -> Result<Option<NaiveDate>, FieldError> {
        self.opt(name, parse_date)
    }

    /// An optional whole number in a range. It must be a JSON number: text (`"1200"`) is
    /// `wrong_type`; a negative or too large number is `out_of_range`; a fraction is `wrong_type`.
    pub fn opt_u64(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, FieldError> {
        let p = self.path(name);
        let n = match self.obj.get(name) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => n,
            Some(_) => {
                return Err(FieldError::new(
                    p.clone(),
                    ErrorCode::WrongType,
                    format!("{p}: must be a whole number (not in quotes)"),
                ));
            }
        };
        let out_of_range = || {
            FieldError::new(
                p.clone(),
                ErrorCode::OutOfRange,
                format!("{p}: {n} is outside {min}..={max}"),
            )
        };
        match (n.as_u64(), n.as_i64()) {
            (Some(v), _) if (min..=max).contains(&v) => Ok(Some(v)),
            (Some(_), _) | (None, Some(_)) => Err(out_of_range()),
            // A fraction, or beyond i64/u64: whole numbers only.
            _ => match n.as_f64() {
                Some(f) if f.fract() == 0.0 => Err(out_of_range()),
                _ => Err(FieldError::new(
                    p.clone(),
                    ErrorCode::WrongType,
                    format!("{p}: must be a whole number"),
                )),
            },
        }
    }

    pub fn req_u64(&self, name: &str, min: u64, max: u64) -> Result<u64, FieldError> {
        self.opt_u64(name, min, max)?.ok_or_else(|| {
            let p = self.path(name);
            FieldError::new(
                p.clone(),
                ErrorCode::MissingField,
                format!("{p}: is required"),
            )
        })
    }

    /// Names in the object that are not in `known`: reported so that a misspelt field is not
    /// silently ignored.
    pub fn deny_unknown(&self, known: &[&str]) -> Result<(), FieldError> {
        if let Some(k) = self.obj.keys().find(|k| !known.contains(&k.as_str())) {
            // An empty name is shown quoted, so it is not mistaken for the body itself.
            let p = if k.is_empty() {
                self.path("\"\"")
            } else {
                self.path(k)
            };
            return Err(FieldError::new(
                p.clone(),
                ErrorCode::UnknownField,
                format!("{p}: unknown field; known fields are {}", known.join(", ")),
            ));
        }
        Ok(())
    }
}
