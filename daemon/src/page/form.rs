//! Form fields → the JSON API's request bodies. The page's forms carry the API's field names
//! (nested ones dotted: `insurance_card.insurer_number`, `declared.name`), so a form is turned into
//! the same JSON the API reads and goes through the same readers (`CheckRequest::from_json`, …):
//! one set of rules, and every error names the API's field.
//!
//! It must never decide what a value means (that is the model's readers' job): it only nests,
//! drops empty fields and turns the listed numeric fields into JSON numbers when they are digits.

use serde_json::{Map, Value};

/// The fields a form may have that are not part of the request (the CSRF token, buttons).
const NOT_REQUEST: &[&str] = &["csrf", "action"];

/// Builds the JSON body from form pairs. An empty (blank) value is left out, as an absent JSON
/// field; a field in `numeric` made of ASCII digits (full-width digits too, as a Japanese IME may
/// type them) becomes a number, anything else stays text so the reader names it.
pub(crate) fn to_json(pairs: &[(String, String)], numeric: &[&str]) -> Value {
    let mut root = Map::new();
    for (name, value) in pairs {
        let value = value.trim();
        if value.is_empty() || NOT_REQUEST.contains(&name.as_str()) {
            continue;
        }
        let v = if numeric.contains(&name.as_str()) {
            number(value).map_or_else(|| Value::String(value.to_string()), Value::from)
        } else {
            Value::String(value.to_string())
        };
        insert(&mut root, name, v);
    }
    Value::Object(root)
}

fn number(s: &str) -> Option<u64> {
    let ascii: String = s
        .chars()
        .filter(|c| *c != ',' && *c != '，')
        .map(|c| match c {
            '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32).unwrap_or(c),
            c => c,
        })
        .collect();
    if ascii.is_empty() || !ascii.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ascii.parse().ok()
}

/// Puts `v` at the dotted path `name`. A path that runs into a text value is kept flat under its
/// full name, so the reader refuses it as an unknown field rather than it being lost.
fn insert(root: &mut Map<String, Value>, name: &str, v: Value) {
    let mut parts: Vec<&str> = name.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut probe = &*root;
    for p in &parts {
        match probe.get(*p) {
            None => break,
            Some(Value::Object(m)) => probe = m,
            Some(_) => {
                root.insert(name.to_string(), v);
                return;
            }
        }
    }
    let mut at = root;
    for p in parts {
        let entry = at
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(m) = entry else { return };
        at = m;
    }
    at.insert(last.to_string(), v);
}

/// A form field's value (the first one of that name).
pub(crate) fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn dotted_names_nest_blank_fields_are_absent_and_the_csrf_token_is_not_sent() {
        let v = to_json(
            &pairs(&[
                ("csrf", "abc"),
                ("insurance_card.insurer_number", "06130012"),
                ("insurance_card.symbol", " "),
                ("insurance_card.number", "4567"),
                ("birth_date", "昭和55年4月1日"),
            ]),
            &[],
        );
        assert_eq!(
            v,
            json!({"insurance_card": {"insurer_number": "06130012", "number": "4567"}, "birth_date": "昭和55年4月1日"})
        );
    }

    #[test]
    fn numeric_fields_become_numbers_only_when_they_are_digits() {
        let v = to_json(
            &pairs(&[
                ("total_fee_yen", "１２，３４０"),
                ("declared.share_percent", "30"),
                ("declared.name", "123"),
            ]),
            &["total_fee_yen", "declared.share_percent"],
        );
        assert_eq!(
            v,
            json!({"total_fee_yen": 12340, "declared": {"share_percent": 30, "name": "123"}})
        );
        let bad = to_json(&pairs(&[("total_fee_yen", "12a")]), &["total_fee_yen"]);
        assert_eq!(bad, json!({"total_fee_yen": "12a"}));
    }

    #[test]
    fn a_path_through_a_text_value_is_not_mistaken_for_a_nested_one() {
        let v = to_json(&pairs(&[("declared", "x"), ("declared.name", "y")]), &[]);
        assert_eq!(v, json!({"declared": "x", "declared.name": "y"}));
    }
}
