//! `POST /v1/batch`: a batch inquiry (e.g. tomorrow's reservations), answered online in chunks;
//! every answer refreshes the replica, so the day's patients can be answered even offline. The
//! access log gets the people answered about, in the same commit as the replica's update.

use std::collections::BTreeMap;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use onshi_model::fields::Fields;
use onshi_model::{CheckOutcome, CheckRequest, CheckSubject, ErrorCode, FieldError, PersonId};
use onshi_model::{Qualification, Validity};
use serde::Serialize;
use serde_json::{Value, json};

use super::audit::{self, Audit};
use super::{ApiError, Caller, idempotent, parse_body, replay_mismatch, replayed, unavailable};
use crate::auth::audit::AuditAction;
use crate::gate::Gate;
use crate::idempotency::{Created, IdempotencyStore, Lookup};

/// One check of the batch, in the order given.
#[derive(Debug, Serialize)]
pub struct BatchResult<'a> {
    pub index: usize,
    pub validity: Validity,
    pub person_id: Option<&'a PersonId>,
    pub qualifications: &'a [Qualification],
}

/// The batch's answer.
#[derive(Debug, Serialize)]
pub struct BatchAnswer<'a> {
    pub service_date: NaiveDate,
    pub total: usize,
    pub counts: BTreeMap<&'static str, usize>,
    pub results: Vec<BatchResult<'a>>,
    pub replica_people: usize,
}

/// The most checks one `POST /v1/batch` takes (a large hospital's night batch fits).
pub const MAX_BATCH_ITEMS: usize = 20_000;
const BATCH_CHUNK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub(super) async fn post_batch(
    State(gate): State<Gate>,
    State(ids): State<IdempotencyStore>,
    State(audit): State<Audit>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = parse_body(&body)?;
    let f = Fields::root(&v)?;
    f.deny_unknown(&["service_date", "checks"])?;
    let today = chrono::Local::now().date_naive();
    let service_date = f.opt_date("service_date")?.unwrap_or(today);
    onshi_model::plausible::check_service_date("service_date", service_date, today)?;
    let items = match v.get("checks") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => {
            return Err(
                FieldError::new("checks", ErrorCode::MissingField, "checks: is empty").into(),
            );
        }
        Some(_) => {
            return Err(FieldError::new(
                "checks",
                ErrorCode::WrongType,
                "checks: must be a list of insurance-card checks",
            )
            .into());
        }
        None => {
            return Err(
                FieldError::new("checks", ErrorCode::MissingField, "checks: is required").into(),
            );
        }
    };
    if items.len() > MAX_BATCH_ITEMS {
        return Err(FieldError::new(
            "checks",
            ErrorCode::OutOfRange,
            format!(
                "checks: {} items; at most {MAX_BATCH_ITEMS} per batch",
                items.len()
            ),
        )
        .into());
    }
    let mut reqs = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let mut item = item.clone();
        if item.get("service_date").is_none() && item.is_object() {
            item["service_date"] = json!(service_date);
        }
        let r =
            CheckRequest::from_json(&item, today).map_err(|e| e.under(&format!("checks[{i}]")))?;
        if !matches!(r.subject, CheckSubject::InsuranceCard { .. }) {
            return Err(FieldError::new(
                format!("checks[{i}]"),
                ErrorCode::OutOfRange,
                format!("checks[{i}]: a batch inquiry takes insurance-card checks"),
            )
            .into());
        }
        reqs.push(r);
    }
    let claim = match idempotent(&gate, &ids, &headers, "batch", &body)? {
        None => None,
        Some(Lookup::New(c)) => Some(c),
        Some(Lookup::Replay(Created::Batch { answer })) => {
            let v: Value = serde_json::from_str(&answer).map_err(unavailable)?;
            return Ok(replayed(StatusCode::OK, v));
        }
        Some(Lookup::Replay(_)) => return Err(replay_mismatch()),
    };
    let mut results = Vec::with_capacity(reqs.len());
    let mut counts = BTreeMap::<&'static str, usize>::new();
    for chunk in reqs.chunks(onshi_sync::wire::MAX_BATCH) {
        let answer = gate
            .link
            .call(
                onshi_sync::wire::Request::Batch(chunk.to_vec()),
                BATCH_CHUNK_TIMEOUT,
            )
            .await;
        let outcomes = match answer {
            Ok(onshi_sync::wire::Response::Batch(o)) if o.len() == chunk.len() => o,
            Ok(other) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "reconciler_refused",
                    format!("the reconciler answered the batch with {other:?}"),
                ));
            }
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "link_down",
                    format!(
                        "a batch inquiry needs the link to the reconciler: {e}; nothing was stored, try again later"
                    ),
                ));
            }
        };
        let now = chrono::Utc::now();
        for o in &outcomes {
            gate.replica
                .learn(&o.qualifications, now)
                .map_err(unavailable)?;
        }
        // The people answered about are logged with the replica's update (one commit).
        let people = audit::people(outcomes.iter().flat_map(|o| o.qualifications.iter()));
        audit.note(&caller, AuditAction::Check, people)?;
        gate.journal.commit().await.map_err(unavailable)?;
        for o in outcomes {
            *counts.entry(o.validity.as_str()).or_default() += 1;
            results.push(o);
        }
    }
    tracing::info!(checks = results.len(), "batch inquiry: replica refreshed");
    let results: Vec<CheckOutcome> = results;
    let answer = BatchAnswer {
        service_date,
        total: results.len(),
        counts,
        results: results
            .iter()
            .enumerate()
            .map(|(index, o)| BatchResult {
                index,
                validity: o.validity,
                person_id: o.qualifications.first().map(|q| &q.person_id),
                qualifications: &o.qualifications,
            })
            .collect(),
        replica_people: gate.replica.people_count(),
    };
    let answer = serde_json::to_value(&answer).map_err(unavailable)?;
    if let Some(c) = &claim {
        ids.put(
            c,
            Created::Batch {
                answer: answer.to_string(),
            },
        )
        .map_err(unavailable)?;
        gate.journal.commit().await.map_err(unavailable)?;
    }
    Ok(axum::Json(answer).into_response())
}
