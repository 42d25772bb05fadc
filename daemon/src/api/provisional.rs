//! Provisional records (self-declarations, 申立書): `POST /v1/provisional` decides the share and
//! records what was collected; `GET /v1/provisional/{id}` reads one back. Both are logged in the
//! access log (the record's and the chosen person's ids), in the same commit as the record.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::audit::{self, Audit};
use super::{
    ApiError, Caller, idempotent, parse_body, path_id, replay_mismatch, replayed, unavailable,
};
use crate::auth::SubjectId;
use crate::auth::audit::AuditAction;
use crate::gate::Gate;
use crate::idempotency::{Created, IdempotencyStore, Lookup};
use crate::provisional::{self, ProvisionalRecord, ProvisionalRequest, RecordState};

/// The access log's subject of a record: its id and the person it was recorded for.
fn subject(rec: &ProvisionalRecord) -> Vec<SubjectId> {
    audit::record_id(&rec.record_id)
        .into_iter()
        .chain(rec.person_id.clone().map(SubjectId::Person))
        .collect()
}

pub(super) async fn post_provisional(
    State(gate): State<Gate>,
    State(ids): State<IdempotencyStore>,
    State(audit): State<Audit>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = parse_body(&body)?;
    let req = ProvisionalRequest::from_json(&v, chrono::Local::now().date_naive())?;
    let claim = match idempotent(&gate, &ids, &headers, "provisional", &body)? {
        None => None,
        Some(Lookup::New(c)) => Some(c),
        Some(Lookup::Replay(Created::Provisional { record_id })) => {
            let rec = gate
                .journal
                .get_provisional(&record_id)
                .map_err(unavailable)?
                .ok_or_else(|| unavailable("the key's record is gone"))?;
            audit
                .read(&caller, AuditAction::Provisional, subject(&rec))
                .await?;
            return Ok(replayed(StatusCode::CREATED, provisional_json(&rec)));
        }
        Some(Lookup::Replay(_)) => return Err(replay_mismatch()),
    };
    let share = provisional::decide_share(&req, &gate.replica, &gate.live.get().share)
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "replica_unavailable", e))?;
    let rec = ProvisionalRecord {
        record_id: gate.journal.next_id().map_err(unavailable)?,
        created_at: chrono::Utc::now(),
        collected_yen: provisional::amount(req.total_fee_yen, share.percent),
        declared: req.declared,
        person_id: req.person_id,
        service_date: req.service_date,
        total_fee_yen: req.total_fee_yen,
        share_percent: share.percent,
        basis: share.basis,
        rule: share.rule,
        explanation: share.explanation,
        state: RecordState::Recorded,
    };
    // The sync record and the key are written first; the commit of the provisional record makes
    // all three durable.
    let sync_record = gate
        .journal
        .put_sync_provisional(&rec)
        .map_err(unavailable)?;
    if let Some(c) = &claim {
        ids.put(
            c,
            Created::Provisional {
                record_id: rec.record_id.clone(),
            },
        )
        .map_err(unavailable)?;
    }
    audit.note(&caller, AuditAction::Provisional, subject(&rec))?;
    gate.journal
        .put_provisional_durable(&rec)
        .await
        .map_err(unavailable)?;
    gate.sync.local_change(sync_record);
    tracing::info!(record_id = %rec.record_id, share = rec.share_percent, basis = ?rec.basis, "provisional record");
    Ok((StatusCode::CREATED, axum::Json(rec)).into_response())
}

/// The record as the API shows it: every field of the stored record, as it is typed.
pub(super) fn provisional_json(rec: &ProvisionalRecord) -> Value {
    serde_json::to_value(rec).unwrap_or(Value::Null)
}

pub(super) async fn get_provisional(
    State(gate): State<Gate>,
    State(audit): State<Audit>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let rec = gate
        .journal
        .get_provisional(&id)
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found("provisional record", &id))?;
    audit
        .read(&caller, AuditAction::ProvisionalRead, subject(&rec))
        .await?;
    Ok(axum::Json(rec).into_response())
}
