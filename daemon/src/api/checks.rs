//! Checks: `POST /v1/checks` (an eligibility check, answered once durable) and
//! `GET /v1/checks/{id}` (the stored record with its final outcome). Both are logged in the access
//! log with the check's and the people's ids, in the same commit as the check.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use onshi_model::{CheckRequest, CheckSubject, FacilityCode, Qualification, Source, Validity};
use serde::Serialize;
use serde_json::Value;

use super::audit::{self, Audit};
use super::{
    ApiError, Caller, idempotent, parse_body, path_id, replay_mismatch, replayed, unavailable,
};
use crate::auth::audit::AuditAction;
use crate::gate::Gate;
use crate::idempotency::{Created, IdempotencyStore, Lookup};
use crate::journal::{CheckRecord, CheckState};
use crate::reader::{CardVerification, Via};

/// The insurance card as the API spells it.
#[derive(Debug, Serialize)]
pub struct CardView<'a> {
    insurer_number: &'a onshi_model::InsurerNumber,
    symbol: &'a Option<onshi_model::CardSymbol>,
    number: &'a onshi_model::CardNumber,
    branch: &'a Option<onshi_model::Branch>,
}

/// The request as the API spells it.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RequestView<'a> {
    InsuranceCard {
        insurance_card: CardView<'a>,
        birth_date: NaiveDate,
        service_date: NaiveDate,
    },
    Card {
        card_id: &'a onshi_model::CardId,
        service_date: NaiveDate,
    },
}

impl<'a> RequestView<'a> {
    pub fn of(r: &'a CheckRequest) -> RequestView<'a> {
        match &r.subject {
            CheckSubject::InsuranceCard { card, birth_date } => RequestView::InsuranceCard {
                insurance_card: CardView {
                    insurer_number: &card.insurer_number,
                    symbol: &card.symbol,
                    number: &card.number,
                    branch: &card.branch,
                },
                birth_date: *birth_date,
                service_date: r.service_date,
            },
            CheckSubject::Card { card_id } => RequestView::Card {
                card_id,
                service_date: r.service_date,
            },
        }
    }
}

/// The request as the API spells it (JSON).
pub fn request_json(r: &CheckRequest) -> Value {
    serde_json::to_value(RequestView::of(r)).unwrap_or(Value::Null)
}

fn qualifications(r: &CheckRecord) -> &[Qualification] {
    r.outcome
        .as_ref()
        .map_or(&[], |o| o.qualifications.as_slice())
}

/// The answer as reception got it.
#[derive(Debug, Serialize)]
pub struct CheckAnswer<'a> {
    pub check_id: &'a str,
    pub validity: Validity,
    pub source: Source,
    pub qualifications: &'a [Qualification],
    pub as_of: Option<DateTime<Utc>>,
    pub service_date: NaiveDate,
    pub state: CheckState,
    /// A card check: how its holder was verified, and the route (`reader:ID` or `api`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub card: Option<&'a CardVerification>,
}

impl<'a> CheckAnswer<'a> {
    pub fn of(r: &'a CheckRecord) -> CheckAnswer<'a> {
        CheckAnswer {
            check_id: &r.check_id,
            validity: r.validity,
            source: r.source,
            qualifications: qualifications(r),
            as_of: r.as_of,
            service_date: r.request.service_date,
            state: r.state,
            card: r.card.as_ref(),
        }
    }
}

/// The answer as reception got it (JSON, for handlers that add to it).
pub(super) fn answer_json(r: &CheckRecord) -> Value {
    serde_json::to_value(CheckAnswer::of(r)).unwrap_or(Value::Null)
}

/// What reception was told.
#[derive(Debug, Serialize)]
struct Answered<'a> {
    validity: Validity,
    source: Source,
    as_of: Option<DateTime<Utc>>,
    qualifications: &'a [Qualification],
}

/// The online answer that completed a deferred check.
#[derive(Debug, Serialize)]
struct Final<'a> {
    validity: Validity,
    qualifications: &'a [Qualification],
    completed_at: DateTime<Utc>,
}

/// The stored record: the latest knowledge on top (the final online outcome once it arrived), what
/// reception was told under `answered`, and the final outcome under `final`.
#[derive(Debug, Serialize)]
pub struct RecordView<'a> {
    check_id: &'a str,
    validity: Validity,
    source: Source,
    qualifications: &'a [Qualification],
    as_of: Option<DateTime<Utc>>,
    service_date: NaiveDate,
    state: CheckState,
    answered: Answered<'a>,
    #[serde(rename = "final")]
    final_: Option<Final<'a>>,
    /// Whether the final answer differs from what reception was told (only once it came).
    #[serde(skip_serializing_if = "Option::is_none")]
    changed: Option<bool>,
    facility: &'a FacilityCode,
    created_at: DateTime<Utc>,
    request: RequestView<'a>,
    attempts: u32,
    last_error: &'a Option<String>,
    /// A card check: how its holder was verified, and the route (`reader:ID` or `api`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    card: Option<&'a CardVerification>,
}

impl<'a> RecordView<'a> {
    pub fn of(r: &'a CheckRecord) -> RecordView<'a> {
        let told = CheckAnswer::of(r);
        let final_ = r.final_outcome.as_ref().map(|f| Final {
            validity: f.outcome.validity,
            qualifications: &f.outcome.qualifications,
            completed_at: f.completed_at,
        });
        let (validity, source, qualifications, as_of) = match &r.final_outcome {
            Some(f) => (
                f.outcome.validity,
                Source::Online,
                f.outcome.qualifications.as_slice(),
                Some(f.completed_at),
            ),
            None => (told.validity, told.source, told.qualifications, told.as_of),
        };
        RecordView {
            check_id: &r.check_id,
            validity,
            source,
            qualifications,
            as_of,
            service_date: r.request.service_date,
            state: r.state,
            answered: Answered {
                validity: r.validity,
                source: r.source,
                as_of: r.as_of,
                qualifications: told.qualifications,
            },
            final_,
            changed: r
                .final_outcome
                .as_ref()
                .map(|f| f.outcome.validity != r.validity),
            facility: &r.facility,
            created_at: r.created_at,
            request: RequestView::of(&r.request),
            attempts: r.attempts,
            last_error: &r.last_error,
            card: r.card.as_ref(),
        }
    }
}

/// The stored record (JSON, for the export's lines).
pub fn record_json(r: &CheckRecord) -> Value {
    serde_json::to_value(RecordView::of(r)).unwrap_or(Value::Null)
}

/// The access log's subject of a check: its id and its people (the final answer's too).
pub(super) fn check_subject(r: &CheckRecord) -> Vec<crate::auth::SubjectId> {
    let finals = r
        .final_outcome
        .iter()
        .flat_map(|f| f.outcome.qualifications.iter());
    audit::check_id(&r.check_id)
        .into_iter()
        .chain(audit::people(qualifications(r).iter().chain(finals)))
        .collect()
}

pub(super) async fn post_check(
    State(gate): State<Gate>,
    State(ids): State<IdempotencyStore>,
    State(audit): State<Audit>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut v = parse_body(&body)?;
    let today = chrono::Local::now().date_naive();
    // `verified` is the edge's record of the holder's verification, not part of the check the
    // reconciler answers: taken out before the check is read, required for a card check.
    let verified = v.as_object_mut().and_then(|o| o.remove("verified"));
    let req = CheckRequest::from_json(&v, today)?;
    let card = crate::reader::verification(&req.subject, verified.as_ref(), Via::Api)?;
    let claim = match idempotent(&gate, &ids, &headers, "checks", &body)? {
        None => None,
        Some(Lookup::New(c)) => Some(c),
        Some(Lookup::Replay(Created::Check { check_id })) => {
            let rec = gate
                .journal
                .get(&check_id)
                .map_err(unavailable)?
                .ok_or_else(|| unavailable("the key's check is gone"))?;
            audit
                .read(&caller, AuditAction::Check, check_subject(&rec))
                .await?;
            return Ok(replayed(StatusCode::OK, answer_json(&rec)));
        }
        Some(Lookup::Replay(_)) => return Err(replay_mismatch()),
    };
    // The key and the access-log entry are written with the check, so the check's commit makes
    // all three durable.
    let mut logged = Ok(());
    let record = gate
        .check_card_with(req, card, |r| {
            if let Some(c) = &claim {
                ids.put(
                    c,
                    Created::Check {
                        check_id: r.check_id.clone(),
                    },
                )?;
            }
            logged = audit.note(&caller, AuditAction::Check, check_subject(r));
            Ok(())
        })
        .await?;
    logged?;
    Ok(axum::Json(CheckAnswer::of(&record)).into_response())
}

pub(super) async fn get_check(
    State(gate): State<Gate>,
    State(audit): State<Audit>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let rec = gate
        .journal
        .get(&id)
        .map_err(unavailable)?
        .ok_or_else(|| ApiError::not_found("check", &id))?;
    audit
        .read(&caller, AuditAction::CheckRead, check_subject(&rec))
        .await?;
    Ok(axum::Json(RecordView::of(&rec)).into_response())
}
