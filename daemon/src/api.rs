//! The local HTTP API (JSON) for receipt computers and the reception page. Handlers only translate
//! between HTTP and the gate/journal; errors are `{"error":{"code","field","message"}}`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use onshi_model::{CheckRequest, CheckSubject, FieldError, Qualification};
use serde_json::{Value, json};

use crate::gate::{Gate, GateError};
use crate::journal::CheckRecord;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub gate: Gate,
    pub started: Instant,
    pub reconciler: String,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub field: Option<String>,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError { status, code: code.to_string(), field: None, message: message.into() }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, code: e.code.as_str().to_string(), field: Some(e.field), message: e.message }
    }
}

impl From<GateError> for ApiError {
    fn from(e: GateError) -> Self {
        let code = match &e {
            GateError::LinkDown(_) => "link_down",
            GateError::Deadline(_) => "deadline_exceeded",
            GateError::Refused { .. } => "reconciler_refused",
            GateError::Journal(_) => "journal_unavailable",
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "field": self.field, "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/checks", post(post_check))
        .route("/v1/checks/{id}", get(get_check))
        .route("/v1/status", get(get_status))
        .route("/metrics", get(get_metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint; see GET /v1/status") })
        .with_state(Arc::new(state))
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_json".into(),
        field: Some(String::new()),
        message: format!("the request body is not valid JSON: {e}"),
    })
}

/// The request as the API spells it.
pub fn request_json(r: &CheckRequest) -> Value {
    let mut v = match &r.subject {
        CheckSubject::InsuranceCard { card, birth_date } => json!({
            "insurance_card": {"insurer_number": card.insurer_number, "symbol": card.symbol, "number": card.number, "branch": card.branch},
            "birth_date": birth_date,
        }),
        CheckSubject::Card { card_id } => json!({"card_id": card_id}),
    };
    v["service_date"] = json!(r.service_date);
    v
}

fn qualifications(r: &CheckRecord) -> &[Qualification] {
    r.outcome.as_ref().map_or(&[], |o| o.qualifications.as_slice())
}

fn answer_json(r: &CheckRecord) -> Value {
    json!({
        "check_id": r.check_id,
        "validity": r.validity,
        "source": r.source,
        "qualifications": qualifications(r),
        "as_of": r.as_of,
        "service_date": r.request.service_date,
    })
}

async fn post_check(State(app): State<Arc<AppState>>, body: Bytes) -> Result<impl IntoResponse, ApiError> {
    let v = parse_body(&body)?;
    let today = chrono::Local::now().date_naive();
    let req = CheckRequest::from_json(&v, today)?;
    let record = app.gate.check(req).await?;
    Ok(axum::Json(answer_json(&record)))
}

async fn get_check(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let rec = app
        .gate
        .journal
        .get(&id)
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "journal_unavailable", e.to_string()))?
        .ok_or_else(|| ApiError { status: StatusCode::NOT_FOUND, code: "not_found".into(), field: Some("id".into()), message: format!("no check with id {id}") })?;
    let mut v = answer_json(&rec);
    v["facility"] = json!(rec.facility);
    v["created_at"] = json!(rec.created_at);
    v["request"] = request_json(&rec.request);
    v["state"] = json!(if rec.outcome.is_some() { "answered" } else { "pending" });
    Ok(axum::Json(v))
}

fn status_json(app: &AppState) -> Value {
    let link = app.gate.link.state();
    let mode = if link.is_up() { "online" } else { "offline" };
    let (syncs, commits) = app.gate.journal.commit_stats();
    json!({
        "mode": mode,
        "facility": app.gate.journal.facility(),
        "link": {
            "state": link.name(),
            "reconciler": app.reconciler,
            "since_s": link.since.elapsed().as_secs_f64(),
            "reconnects": link.reconnects,
            "last_error": link.last_error.as_ref().map(|e| e.to_string()),
            "rtt_ms": link.last_rtt.map(|d| d.as_secs_f64() * 1000.0),
        },
        "queue": {"pending": 0, "provisional_yen": 0, "oldest_pending_s": null},
        "journal": {"checks": app.gate.journal.len(), "syncs": syncs, "commits": commits},
        "deadline_ms": app.gate.deadline.as_millis() as u64,
        "uptime_s": app.started.elapsed().as_secs(),
        "last_sync": null,
        "version": env!("CARGO_PKG_VERSION"),
    })
}

async fn get_status(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    axum::Json(status_json(&app))
}

async fn get_metrics(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    let s = &app.gate.stats;
    let (syncs, commits) = app.gate.journal.commit_stats();
    let up = u8::from(app.gate.link.state().is_up());
    let text = format!(
        "# HELP onshi_checks_total Checks by outcome at the gate.\n# TYPE onshi_checks_total counter\n\
         onshi_checks_total{{result=\"online\"}} {}\n\
         onshi_checks_total{{result=\"refused_link_down\"}} {}\n\
         onshi_checks_total{{result=\"refused_deadline\"}} {}\n\
         onshi_checks_total{{result=\"refused_other\"}} {}\n\
         # HELP onshi_link_up 1 when the QUIC link to the reconciler is up.\n# TYPE onshi_link_up gauge\nonshi_link_up {up}\n\
         # HELP onshi_journal_records Records in the journal.\n# TYPE onshi_journal_records gauge\nonshi_journal_records {}\n\
         # HELP onshi_journal_syncs_total Flush+fsync rounds of the journal.\n# TYPE onshi_journal_syncs_total counter\nonshi_journal_syncs_total {syncs}\n\
         # HELP onshi_journal_commits_total Writes made durable (several per sync under load).\n# TYPE onshi_journal_commits_total counter\nonshi_journal_commits_total {commits}\n",
        s.answered_online.load(Ordering::Relaxed),
        s.refused_link_down.load(Ordering::Relaxed),
        s.refused_deadline.load(Ordering::Relaxed),
        s.refused_other.load(Ordering::Relaxed),
        app.gate.journal.len(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
