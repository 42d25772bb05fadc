//! The card readers' routes: heartbeats (`POST /v1/reader/heartbeat`) and a My Number card
//! presented (`POST /v1/reader/card`, a check). Kept thin: the reader logic is `reader.rs`/`mode.rs`.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use onshi_model::fields::Fields;
use onshi_model::{CheckRequest, ErrorCode, FieldError};
use serde_json::{Value, json};

use super::checks::{answer_json, check_subject};
use super::{
    ApiError, Caller, Shared, idempotent, parse_body, replay_mismatch, replayed, unavailable,
};
use crate::auth::audit::AuditAction;
use crate::idempotency::{Created, Lookup};
use crate::journal::CheckRecord;
use crate::reader::Via;

pub(super) async fn post_reader_heartbeat(
    State(app): State<Shared>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let v = parse_body(&body)?;
    let f = Fields::root(&v)?;
    f.deny_unknown(&["reader_id", "status", "fault"])?;
    let reader_id = f.req_str("reader_id")?;
    let status = f.opt_str("status")?.unwrap_or_else(|| "ok".into());
    let fault = match status.as_str() {
        "ok" => None,
        "fault" => Some(
            f.opt_str("fault")?
                .unwrap_or_else(|| "fault (no detail)".into()),
        ),
        other => {
            return Err(FieldError::new(
                "status",
                ErrorCode::OutOfRange,
                format!("status: '{other}' is not ok or fault"),
            )
            .into());
        }
    };
    app.gate.mode.reader_heartbeat(&reader_id, fault)?;
    Ok(axum::Json(json!({"mode": app.gate.mode.mode()})))
}

pub(super) async fn post_reader_card(
    State(app): State<Shared>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = parse_body(&body)?;
    let f = Fields::root(&v)?;
    f.deny_unknown(&["reader_id", "card_id", "verified", "service_date"])?;
    let reader_id = f.req_str("reader_id")?;
    crate::reader::check_reader_id("reader_id", &reader_id)?;
    // The holder's verification is checked before the card: an unverified holder is refused.
    crate::reader::Verified::from_json(v.get("verified"))?;
    let mut check = json!({"card_id": v.get("card_id").cloned().unwrap_or(Value::Null)});
    if let Some(d) = v.get("service_date") {
        check["service_date"] = d.clone();
    }
    let req = CheckRequest::from_json(&check, chrono::Local::now().date_naive())?;
    let card = crate::reader::verification(
        &req.subject,
        v.get("verified"),
        Via::Reader(reader_id.clone()),
    )?;
    // A card presented proves this reader works (and no other).
    app.gate.mode.reader_heartbeat(&reader_id, None)?;
    let claim = match idempotent(&app.gate, &app.idempotency, &headers, "reader/card", &body)? {
        None => None,
        Some(Lookup::New(c)) => Some(c),
        Some(Lookup::Replay(Created::CardCheck {
            check_id,
            face_file,
        })) => {
            let rec = app
                .gate
                .journal
                .get(&check_id)
                .map_err(unavailable)?
                .ok_or_else(|| unavailable("the key's check is gone"))?;
            let mut a = answer_json(&rec);
            if let Some(f) = face_file {
                a["face_file"] = json!(f);
            }
            return Ok(replayed(StatusCode::OK, a));
        }
        Some(Lookup::Replay(_)) => return Err(replay_mismatch()),
    };
    let put_key_only = |check: &CheckRecord, face_file: Option<String>| match &claim {
        Some(c) => app.idempotency.put(
            c,
            Created::CardCheck {
                check_id: check.check_id.clone(),
                face_file,
            },
        ),
        None => Ok(()),
    };
    // The access-log entry is written with the key, in the check's commit.
    let logged = std::sync::Mutex::new(Ok(()));
    let put_key = |check: &CheckRecord, face_file: Option<String>| {
        *logged.lock().unwrap_or_else(|p| p.into_inner()) =
            app.audit
                .note(&caller, AuditAction::Check, check_subject(check));
        put_key_only(check, face_file)
    };
    let record = match &app.mailbox {
        // The face file (and the key) are recorded with the check (one commit), then written.
        Some(mailbox) => {
            let mut face = None;
            let checked = app
                .gate
                .check_card_with(req, card, |check| {
                    let key = mailbox.put_face(check)?;
                    let file = a_face(check.clone(), &key).1;
                    face = Some(key);
                    put_key(check, file)?;
                    Ok(())
                })
                .await;
            match (checked, face) {
                (Ok(record), Some(key)) => {
                    mailbox.write_face(&key).await;
                    a_face(record, &key)
                }
                (Ok(record), None) => (record, None),
                (Err(e), key) => {
                    if let Some(k) = key {
                        mailbox.release(&k);
                    }
                    return Err(e.into());
                }
            }
        }
        None => (
            app.gate
                .check_card_with(req, card, |check| Ok(put_key(check, None)?))
                .await?,
            None,
        ),
    };
    let (record, face_file) = record;
    logged.into_inner().unwrap_or_else(|p| p.into_inner())?;
    if let Some(card) = &record.card {
        // For the check page's "recent card checks" (no name: ids, verification, validity).
        app.gate.mode.card_seen(crate::reader::CardSeen {
            at: record.created_at,
            reader_id: reader_id.clone(),
            verified: card.verified,
            validity: record.validity,
            check_id: record.check_id.clone(),
        });
    }
    let mut a = answer_json(&record);
    if let Some(f) = face_file {
        a["face_file"] = json!(f);
    }
    Ok(axum::Json(a).into_response())
}

/// A card check with the name of its face file.
fn a_face(record: CheckRecord, key: &str) -> (CheckRecord, Option<String>) {
    let file = key.strip_prefix("face:").unwrap_or(key);
    (record, Some(format!("face/{file}")))
}
