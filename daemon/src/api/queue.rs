//! The worklist: `GET /v1/queue` (deferred checks, provisional records, their settlements) and
//! `POST /v1/queue/{id}/close` (also of a closed item whose settlement the centre revised since:
//! it acknowledges the new verdict), and `POST /v1/queue/{id}/choose` (staff's choice of person under an
//! `ambiguous` settlement). All are logged in the access log (the items' ids, the chosen person's).

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::audit::{self, Audit};
use super::{ApiError, Caller, parse_body, path_id, unavailable};
use crate::auth::SubjectId;
use crate::auth::audit::AuditAction;
use crate::gate::Gate;
use crate::queue;
use onshi_model::PersonId;
use onshi_model::fields::Fields;
use onshi_sync::crdt::{Actor, Choice, RecordId, WriteError};

pub(super) async fn get_queue(
    State(gate): State<Gate>,
    State(audit): State<Audit>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let q = queue::summary(&gate.journal, &gate.live.get().queue, chrono::Utc::now())
        .map_err(unavailable)?;
    let subject = q
        .items
        .iter()
        .filter_map(|i| audit::record_id(&i.id))
        .collect();
    audit.read(&caller, AuditAction::QueueRead, subject).await?;
    Ok(axum::Json(q).into_response())
}

/// `POST /v1/queue/{id}/close`: staff acted on a settlement. The edge is the only writer of
/// `closed`; closing a closed item changes nothing. 404 for an unknown id, 409 `not_settled` before
/// the settlement has come back.
pub(super) async fn post_close(
    State(gate): State<Gate>,
    State(audit): State<Audit>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let not_found = || ApiError::not_found("queue item", &id);
    let rid = onshi_sync::crdt::RecordId::parse(&id).map_err(|_| not_found())?;
    // Closing remembers the revision staff acted on: a later one shows as an item again.
    let updated = gate
        .journal
        .close_item(&rid)
        .map_err(unavailable)?
        .ok_or_else(not_found)?;
    let rec = match updated {
        Ok(r) => r,
        Err(e) => {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                code: "not_settled".into(),
                field: Some("id".into()),
                message: e.to_string(),
            });
        }
    };
    // Closed and logged in one commit.
    audit.note(
        &caller,
        AuditAction::Close,
        audit::record_id(&id).into_iter().collect(),
    )?;
    gate.journal.commit().await.map_err(unavailable)?;
    gate.sync.local_change(rec.clone());
    tracing::info!(record_id = %id, revision = rec.settlement_revision(), "queue item closed");
    let closed_at = gate.journal.closed_revision(&rid).map_err(unavailable)?;
    Ok(axum::Json(queue::sync_item_json(&rec, closed_at)).into_response())
}

/// `POST /v1/queue/{id}/choose` `{"person_id"}`: staff chose the person of an `ambiguous`
/// settlement among its candidates. The choice goes into the journal (edge only), durable and
/// access-logged (record and person ids) before the answer, then syncs; the reconciler settles
/// again against that person and the new settlement comes back. Choosing the person already
/// chosen changes nothing. 404 unknown id; 409 `not_ambiguous` unless the item's settlement is
/// ambiguous (or once closed); 400 naming `person_id` when it is not among the candidates.
pub(super) async fn post_choose(
    State(gate): State<Gate>,
    State(audit): State<Audit>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let v = parse_body(&body)?;
    let f = Fields::root(&v)?;
    f.deny_unknown(&["person_id"])?;
    let person_id = f.req("person_id", PersonId::parse)?;
    let not_found = || ApiError::not_found("queue item", &id);
    let rid = RecordId::parse(&id).map_err(|_| not_found())?;
    let choice = Choice {
        at: chrono::Utc::now(),
        by: caller.actor.name.to_string(),
        person_id: person_id.clone(),
    };
    let mut changed = false;
    let updated = gate
        .journal
        .sync
        .update(&rid, |r| {
            changed = r.choose(Actor::Edge, choice)?;
            Ok::<(), WriteError>(())
        })
        .map_err(unavailable)?
        .ok_or_else(not_found)?;
    let rec = match updated {
        Ok(r) => r,
        Err(e @ WriteError::NotACandidate { .. }) => {
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "not_a_candidate".into(),
                field: Some("person_id".into()),
                message: format!("person_id: {e}"),
            });
        }
        Err(e) => {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                code: "not_ambiguous".into(),
                field: Some("id".into()),
                message: e.to_string(),
            });
        }
    };
    // Chosen and logged in one commit.
    audit.note(
        &caller,
        AuditAction::ChooseCandidate,
        audit::record_id(&id)
            .into_iter()
            .chain([SubjectId::Person(person_id)])
            .collect(),
    )?;
    gate.journal.commit().await.map_err(unavailable)?;
    if changed {
        gate.sync.local_change(rec.clone());
    }
    tracing::info!(record_id = %id, "person chosen for an ambiguous settlement");
    Ok(axum::Json(queue::sync_item_json(&rec, None)).into_response())
}
