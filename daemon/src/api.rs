//! The local HTTP API (JSON) for receipt computers and the reception page. Handlers only translate
//! between HTTP and the gate/journal; errors are `{"error":{"code","field","message"}}` (`http.rs`
//! puts whatever axum or hyper answer by themselves in the same envelope). POSTs that create
//! something take an `Idempotency-Key` (`idempotency.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use onshi_fallback::SearchQuery;
use onshi_model::fields::Fields;
use onshi_model::{CheckRequest, CheckSubject, ErrorCode, FieldError, Qualification};
use onshi_sync::wire::{Request, Response as WireResponse};
use serde_json::{Value, json};

use crate::gate::{Gate, GateError};
use crate::idempotency::{Created, IdempotencyStore, Lookup};
use crate::journal::{CheckRecord, OutageState};
use crate::provisional::{self, ProvisionalRecord, ProvisionalRequest, RecordState};
use crate::queue;
use crate::reader::Via;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub gate: Gate,
    pub started: Instant,
    pub reconciler: String,
    /// The OQS file mailbox, when configured.
    pub mailbox: Option<crate::mailbox::Mailbox>,
    /// The mailbox's records (kept, and exported, even when the mailbox is not configured now).
    pub mailbox_store: crate::mailbox::store::MailboxStore,
    /// The `Idempotency-Key`s of POSTs that created something.
    pub idempotency: IdempotencyStore,
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
        ApiError {
            status,
            code: code.to_string(),
            field: None,
            message: message.into(),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: e.code.as_str().to_string(),
            field: Some(e.field),
            message: e.message,
        }
    }
}

impl From<GateError> for ApiError {
    fn from(e: GateError) -> Self {
        let code = match &e {
            GateError::Journal(_) => "journal_unavailable",
            GateError::Replica(_) => "replica_unavailable",
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"error": {"code": self.code, "field": self.field, "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/checks", post(post_check))
        .route("/v1/checks/{id}", get(get_check))
        .route("/v1/status", get(get_status))
        .route("/v1/queue", get(get_queue))
        .route("/v1/export", get(get_export))
        .route("/v1/queue/{id}/close", post(post_close))
        .route("/v1/sync-now", post(post_sync_now))
        .route("/v1/batch", post(post_batch))
        .route("/v1/search", post(post_search))
        .route("/v1/outage", post(post_outage).get(get_outage))
        .route("/v1/provisional", post(post_provisional))
        .route("/v1/provisional/{id}", get(get_provisional))
        .route("/v1/reader/heartbeat", post(post_reader_heartbeat))
        .route("/v1/reader/card", post(post_reader_card))
        .route("/metrics", get(get_metrics))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see GET /v1/status",
            )
        })
        .with_state(Arc::new(state))
}

/// A path's `{id}`: a rejection (e.g. bad percent-encoding) is a 400 naming `id`.
fn path_id(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(id)| id).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_format".into(),
        field: Some("id".into()),
        message: format!("id: {}", e.body_text()),
    })
}

/// The request's `Idempotency-Key` for `endpoint`, looked up: `None` without one.
fn idempotent(
    app: &AppState,
    headers: &HeaderMap,
    endpoint: &str,
    body: &[u8],
) -> Result<Option<Lookup>, ApiError> {
    let Some(key) = crate::idempotency::key_of(headers, endpoint, body)? else {
        return Ok(None);
    };
    let journal = &app.gate.journal;
    app.idempotency
        .begin(key, |created| match created {
            Created::Check { check_id } | Created::CardCheck { check_id, .. } => {
                Ok(journal.get(check_id).map_err(unavailable)?.is_some())
            }
            Created::Provisional { record_id } => Ok(journal
                .get_provisional(record_id)
                .map_err(unavailable)?
                .is_some()),
            Created::Batch { .. } => Ok(true),
        })
        .map(Some)
}

/// A replayed answer says so (the record is the first request's).
fn replayed(status: StatusCode, body: Value) -> Response {
    let mut r = (status, axum::Json(body)).into_response();
    r.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    r
}

fn replay_mismatch() -> ApiError {
    ApiError {
        status: StatusCode::CONFLICT,
        code: "idempotency_key_reused".into(),
        field: Some("Idempotency-Key".into()),
        message: "Idempotency-Key: this key was used for another kind of request".into(),
    }
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
    r.outcome
        .as_ref()
        .map_or(&[], |o| o.qualifications.as_slice())
}

/// The answer as reception got it.
fn answer_json(r: &CheckRecord) -> Value {
    let mut v = json!({
        "check_id": r.check_id,
        "validity": r.validity,
        "source": r.source,
        "qualifications": qualifications(r),
        "as_of": r.as_of,
        "service_date": r.request.service_date,
        "state": r.state,
    });
    // A card check: how its holder was verified, and the route (`reader:ID` or `api`).
    if let Some(c) = &r.card {
        v["verified"] = json!(c.verified);
        v["via"] = json!(c.via);
    }
    v
}

/// The stored record: the latest knowledge on top (the final online outcome once it arrived), what
/// reception was told under `answered`, and the final outcome under `final`.
pub fn record_json(r: &CheckRecord) -> Value {
    let mut v = answer_json(r);
    v["answered"] = json!({"validity": r.validity, "source": r.source, "as_of": r.as_of, "qualifications": qualifications(r)});
    v["final"] = match &r.final_outcome {
        Some(f) => {
            json!({"validity": f.outcome.validity, "qualifications": f.outcome.qualifications, "completed_at": f.completed_at})
        }
        None => Value::Null,
    };
    if let Some(f) = &r.final_outcome {
        v["validity"] = json!(f.outcome.validity);
        v["qualifications"] = json!(f.outcome.qualifications);
        v["source"] = json!("online");
        v["as_of"] = json!(f.completed_at);
        v["changed"] = json!(f.outcome.validity != r.validity);
    }
    v["facility"] = json!(r.facility);
    v["created_at"] = json!(r.created_at);
    v["request"] = request_json(&r.request);
    v["attempts"] = json!(r.attempts);
    v["last_error"] = json!(r.last_error);
    v
}

async fn post_check(
    State(app): State<Arc<AppState>>,
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
    let claim = match idempotent(&app, &headers, "checks", &body)? {
        None => None,
        Some(Lookup::New(c)) => Some(c),
        Some(Lookup::Replay(Created::Check { check_id })) => {
            let rec = app
                .gate
                .journal
                .get(&check_id)
                .map_err(unavailable)?
                .ok_or_else(|| unavailable("the key's check is gone"))?;
            return Ok(replayed(StatusCode::OK, answer_json(&rec)));
        }
        Some(Lookup::Replay(_)) => return Err(replay_mismatch()),
    };
    // The key is written with the check, so the check's commit makes both durable.
    let record = app
        .gate
        .check_card_with(req, card, |r| {
            if let Some(c) = &claim {
                app.idempotency.put(
                    c,
                    Created::Check {
                        check_id: r.check_id.clone(),
                    },
                )?;
            }
            Ok(())
        })
        .await?;
    Ok(axum::Json(answer_json(&record)).into_response())
}

async fn get_check(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = path_id(id)?;
    let rec = app
        .gate
        .journal
        .get(&id)
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "journal_unavailable",
                e.to_string(),
            )
        })?
        .ok_or_else(|| ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found".into(),
            field: Some("id".into()),
            message: format!("no check with id {id}"),
        })?;
    Ok(axum::Json(record_json(&rec)))
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "journal_unavailable",
        e.to_string(),
    )
}

fn status_json(app: &AppState) -> Result<Value, ApiError> {
    let link = app.gate.link.state();
    let mode = app.gate.mode.snapshot();
    let queue = app
        .gate
        .journal
        .tally()
        .brief(&app.gate.live.get().queue, chrono::Utc::now());
    let sync = app.gate.sync.status();
    // Each card reader; `reader` is the one-reader summary older clients read.
    let readers = app.gate.mode.readers();
    let reader = crate::reader::ReaderSummary::of(&readers);
    Ok(json!({
        "mode": mode.mode,
        "mode_for_s": mode.for_s,
        "reasons": mode.reasons,
        "mode_changes": mode.history,
        "facility": app.gate.journal.facility(),
        "link": {
            "state": link.name(),
            "reconciler": app.reconciler,
            "since_s": link.since.elapsed().as_secs_f64(),
            "reconnects": link.reconnects,
            "last_error": link.last_error.as_ref().map(|e| e.to_string()),
            "rtt_ms": link.last_rtt.map(|d| d.as_secs_f64() * 1000.0),
        },
        "reader": reader,
        "readers": readers,
        "queue": queue::brief_json(&queue),
        "warnings": queue.warnings.iter().cloned().chain(app.gate.journal.warning()).collect::<Vec<_>>(),
        "journal": app.gate.journal.status(),
        "replica": {"people": app.gate.replica.people_count(), "periods": app.gate.replica.period_count()},
        "deadline_ms": app.gate.deadline().as_millis() as u64,
        "mailbox": app.mailbox.as_ref().map(|m| {
            let st = m.stats();
            json!({
                "dir": m.dir().display().to_string(),
                "records": app.mailbox_store.len(),
                "open": app.mailbox_store.open_len(),
                "answered": st.answered.load(Ordering::Relaxed),
                "rejected": st.rejected.load(Ordering::Relaxed),
                "finals": st.finals.load(Ordering::Relaxed),
                "faces": st.faces.load(Ordering::Relaxed),
            })
        }),
        "uptime_s": app.started.elapsed().as_secs(),
        "last_sync": sync.last_sync,
        "sync": {"synced": sync.synced, "outgoing": sync.outgoing, "incoming": sync.incoming, "rounds": sync.rounds, "last_error": sync.last_error},
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn get_status(State(app): State<Arc<AppState>>) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(status_json(&app)?))
}

/// How many bytes of export lines are gathered before they are sent; with the channel's room
/// for a few such chunks, this is what an export holds in memory, never the whole journal.
const EXPORT_CHUNK: usize = 64 * 1024;

/// The export's lines on their way to the response body, a chunk at a time.
struct ExportSink {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, String>>,
    buf: String,
}

impl ExportSink {
    /// Adds a line; `Err` once the client is gone (stop reading the journal).
    fn line(&mut self, v: &Value) -> Result<(), String> {
        self.buf.push_str(&v.to_string());
        self.buf.push('\n');
        if self.buf.len() >= EXPORT_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| "the client went away".to_string())
    }
}

/// Writes every export line into `sink`, reading the journal one record at a time.
fn export_into(app: &AppState, sink: &mut ExportSink) -> Result<(), String> {
    for r in app.gate.journal.checks_iter() {
        let mut v = record_json(&r.map_err(|e| e.to_string())?);
        v["record"] = json!("check");
        sink.line(&v)?;
    }
    for r in app.gate.journal.provisional_iter() {
        let mut v = provisional_json(&r.map_err(|e| e.to_string())?);
        v["record"] = json!("provisional");
        sink.line(&v)?;
    }
    let store = &app.mailbox_store;
    for key in store.keys_by_received().map_err(|e| e.to_string())? {
        let Some(r) = store.get(&key).map_err(|e| e.to_string())? else {
            continue;
        };
        let batch = match &r.reception_number {
            Some(n) if r.kind == crate::mailbox::store::RecordKind::BatchUpload => {
                store.get_batch(n).map_err(|e| e.to_string())?
            }
            _ => None,
        };
        let mut v = mailbox_json(&r, batch.as_ref());
        v["record"] = json!("mailbox");
        sink.line(&v)?;
    }
    sink.flush()
}

/// `GET /v1/export`: the whole journal as JSON lines (checks, then provisional records, then
/// mailbox records), each line a record as `GET /v1/checks/{id}` or `GET /v1/provisional/{id}`
/// shows it, with a `"record"` kind. Streamed: read on the blocking pool one record at a time and
/// sent in chunks, so a large journal never sits in memory whole.
async fn get_export(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
    use futures_util::StreamExt;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(4);
    tokio::task::spawn_blocking(move || {
        let mut sink = ExportSink {
            tx,
            buf: String::new(),
        };
        if let Err(e) = export_into(&app, &mut sink) {
            let _ = sink.tx.blocking_send(Err(e));
        }
    });
    // The first chunk decides the status: a journal unreadable from the start is still a 503 with
    // the error envelope; a failure later can only cut the body short (the client sees an error).
    let first = match rx.recv().await {
        None => Bytes::new(),
        Some(Ok(b)) => b,
        Some(Err(e)) => return Err(unavailable(e)),
    };
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|c| (c.map_err(std::io::Error::other), rx))
    });
    let body =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(rest);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// A mailbox record as exported: the request file, the request, and every result text written.
fn mailbox_json(
    r: &crate::mailbox::store::MailboxRecord,
    batch: Option<&crate::mailbox::store::BatchRecord>,
) -> Value {
    let results: Vec<Value> = r
        .results
        .iter()
        .enumerate()
        .map(|(i, t)| {
            json!({"at": t.at, "segment_of_result": t.segment, "written": i < r.written, "text": t.text})
        })
        .collect();
    let mut v = json!({
        "key": r.key,
        "kind": r.kind,
        "file": r.file,
        "sha256": r.sha256,
        "received_at": r.received_at,
        "encoding": r.encoding.label(),
        "arbitrary_file_identifier": r.echo.arbitrary_id,
        "check_id": r.check_id,
        "reception_number": r.reception_number,
        "result_file": r.result_file,
        "results": results,
        "awaiting_final": r.awaiting_final,
        "reason": r.reason,
        "moved_to": r.moved_to,
        // The request as the journal keeps it (parsed), rendered back as an OQS request; records
        // from before that kept the decoded text, shown as it was. A rejected file: null.
        "request": r.legacy_text.clone().or_else(|| {
            r.request.as_ref().map(|k| {
                crate::mailbox::xml::render_request(&r.echo, r.encoding, &k.body(batch))
            })
        }),
    });
    if let Some(b) = batch {
        v["batch"] = json!({
            "checks": b.requests.len(),
            "state": if b.outcomes.is_some() { "answered" } else { "processing" },
            "completed_at": b.completed_at,
            "attempts": b.attempts,
            "last_error": b.last_error,
        });
    }
    v
}

async fn get_queue(State(app): State<Arc<AppState>>) -> Result<impl IntoResponse, ApiError> {
    let q = queue::summary(
        &app.gate.journal,
        &app.gate.live.get().queue,
        chrono::Utc::now(),
    )
    .map_err(unavailable)?;
    Ok(axum::Json(serde_json::to_value(q).unwrap_or(Value::Null)))
}

/// `POST /v1/queue/{id}/close`: staff acted on a settlement. The edge is the only writer of
/// `closed`; closing a closed item changes nothing. 404 for an unknown id, 409 `not_settled` before
/// the settlement has come back.
async fn post_close(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = path_id(id)?;
    let not_found = || ApiError {
        status: StatusCode::NOT_FOUND,
        code: "not_found".into(),
        field: Some("id".into()),
        message: format!("no queue item with id {id}"),
    };
    let rid = onshi_sync::crdt::RecordId::parse(&id).map_err(|_| not_found())?;
    let updated = app
        .gate
        .journal
        .sync
        .update(&rid, |r| r.close(onshi_sync::crdt::Actor::Edge))
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
    app.gate.journal.commit().await.map_err(unavailable)?;
    app.gate.sync.local_change(rec.clone());
    tracing::info!(record_id = %id, "queue item closed");
    Ok(axum::Json(queue::sync_item_json(&rec)))
}

/// `POST /v1/sync-now` `{"timeout_ms"?}`: a sync round now; answers once synced or at the timeout
/// (default 10 s) with the sync status.
async fn post_sync_now(
    State(app): State<Arc<AppState>>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let timeout_ms = if body.is_empty() {
        10_000
    } else {
        let v = parse_body(&body)?;
        let f = Fields::root(&v)?;
        f.deny_unknown(&["timeout_ms"])?;
        f.opt_u64("timeout_ms", 0, 600_000)?.unwrap_or(10_000)
    };
    let s = app
        .gate
        .sync
        .sync_now(std::time::Duration::from_millis(timeout_ms))
        .await;
    Ok(axum::Json(
        json!({"synced": s.synced, "outgoing": s.outgoing, "incoming": s.incoming, "last_sync": s.last_sync, "last_error": s.last_error, "link": app.gate.link.state().name()}),
    ))
}

async fn post_provisional(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v = parse_body(&body)?;
    let req = ProvisionalRequest::from_json(&v, chrono::Local::now().date_naive())?;
    let claim = match idempotent(&app, &headers, "provisional", &body)? {
        None => None,
        Some(Lookup::New(c)) => Some(c),
        Some(Lookup::Replay(Created::Provisional { record_id })) => {
            let rec = app
                .gate
                .journal
                .get_provisional(&record_id)
                .map_err(unavailable)?
                .ok_or_else(|| unavailable("the key's record is gone"))?;
            return Ok(replayed(StatusCode::CREATED, provisional_json(&rec)));
        }
        Some(Lookup::Replay(_)) => return Err(replay_mismatch()),
    };
    let share = provisional::decide_share(&req, &app.gate.replica, &app.gate.live.get().share)
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "replica_unavailable", e))?;
    let rec = ProvisionalRecord {
        record_id: app.gate.journal.next_id().map_err(unavailable)?,
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
    let sync_record = app
        .gate
        .journal
        .put_sync_provisional(&rec)
        .map_err(unavailable)?;
    if let Some(c) = &claim {
        app.idempotency
            .put(
                c,
                Created::Provisional {
                    record_id: rec.record_id.clone(),
                },
            )
            .map_err(unavailable)?;
    }
    app.gate
        .journal
        .put_provisional_durable(&rec)
        .await
        .map_err(unavailable)?;
    app.gate.sync.local_change(sync_record);
    tracing::info!(record_id = %rec.record_id, share = rec.share_percent, basis = ?rec.basis, "provisional record");
    Ok((StatusCode::CREATED, axum::Json(provisional_json(&rec))).into_response())
}

fn provisional_json(rec: &ProvisionalRecord) -> Value {
    json!({
        "record_id": rec.record_id,
        "share_percent": rec.share_percent,
        "collected_yen": rec.collected_yen,
        "basis": rec.basis,
        "rule": rec.rule,
        "explanation": rec.explanation,
        "total_fee_yen": rec.total_fee_yen,
        "service_date": rec.service_date,
        "person_id": rec.person_id,
        "declared": rec.declared,
        "state": rec.state,
        "created_at": rec.created_at,
    })
}

async fn get_provisional(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = path_id(id)?;
    let rec = app
        .gate
        .journal
        .get_provisional(&id)
        .map_err(unavailable)?
        .ok_or_else(|| ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found".into(),
            field: Some("id".into()),
            message: format!("no provisional record with id {id}"),
        })?;
    Ok(axum::Json(provisional_json(&rec)))
}

async fn post_reader_heartbeat(
    State(app): State<Arc<AppState>>,
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

async fn post_reader_card(
    State(app): State<Arc<AppState>>,
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
    let claim = match idempotent(&app, &headers, "reader/card", &body)? {
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
    let put_key = |check: &CheckRecord, face_file: Option<String>| match &claim {
        Some(c) => app.idempotency.put(
            c,
            Created::CardCheck {
                check_id: check.check_id.clone(),
                face_file,
            },
        ),
        None => Ok(()),
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

/// `POST /v1/batch`: a batch inquiry (e.g. tomorrow's reservations), answered online in chunks;
/// every answer refreshes the replica, so the day's patients can be answered even offline.
async fn post_batch(
    State(app): State<Arc<AppState>>,
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
    let claim = match idempotent(&app, &headers, "batch", &body)? {
        None => None,
        Some(Lookup::New(c)) => Some(c),
        Some(Lookup::Replay(Created::Batch { answer })) => {
            let v: Value = serde_json::from_str(&answer).map_err(unavailable)?;
            return Ok(replayed(StatusCode::OK, v));
        }
        Some(Lookup::Replay(_)) => return Err(replay_mismatch()),
    };
    let mut results = Vec::with_capacity(reqs.len());
    let mut counts = std::collections::BTreeMap::<&'static str, usize>::new();
    for chunk in reqs.chunks(onshi_sync::wire::MAX_BATCH) {
        let answer = app
            .gate
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
            app.gate
                .replica
                .learn(&o.qualifications, now)
                .map_err(unavailable)?;
        }
        app.gate.journal.commit().await.map_err(unavailable)?;
        for o in outcomes {
            *counts.entry(o.validity.as_str()).or_default() += 1;
            results.push(o);
        }
    }
    tracing::info!(checks = results.len(), "batch inquiry: replica refreshed");
    let results: Vec<Value> = results
        .iter()
        .enumerate()
        .map(|(i, o)| json!({"index": i, "validity": o.validity, "person_id": o.qualifications.first().map(|q| &q.person_id), "qualifications": o.qualifications}))
        .collect();
    let answer = json!({"service_date": service_date, "total": results.len(), "counts": counts, "results": results, "replica_people": app.gate.replica.people_count()});
    if let Some(c) = &claim {
        app.idempotency
            .put(
                c,
                Created::Batch {
                    answer: answer.to_string(),
                },
            )
            .map_err(unavailable)?;
        app.gate.journal.commit().await.map_err(unavailable)?;
    }
    Ok(axum::Json(answer).into_response())
}

/// `POST /v1/search`: outage search. Central (the reconciler searches the registry) when the link
/// is up and this facility has declared an outage; otherwise, or if the centre does not answer in
/// time, over the local replica.
async fn post_search(
    State(app): State<Arc<AppState>>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let v = parse_body(&body)?;
    let f = Fields::root(&v)?;
    // Names are text: a number where a name belongs is the client's mistake.
    for name in ["name", "name_kana", "insurer_name", "address"] {
        f.opt_text(name)?;
    }
    let query = SearchQuery::from_json(&v)?;
    onshi_model::plausible::check_birth_date(
        "birth_date",
        query.birth_date,
        chrono::Local::now().date_naive(),
    )?;
    let outage = app
        .gate
        .journal
        .outage()
        .map_err(unavailable)?
        .filter(|o| o.active);
    let mut note = None;
    if outage.is_some() && app.gate.link.state().is_up() {
        match app
            .gate
            .link
            .call(Request::Search(query.clone()), app.gate.deadline())
            .await
        {
            Ok(WireResponse::Search(hits)) => {
                let candidates: Vec<Value> = hits
                    .iter()
                    .map(|h| json!({"person_id": h.person_id, "score": h.score, "qualification": h.qualification}))
                    .collect();
                return Ok(axum::Json(
                    json!({"source": "online", "as_of": chrono::Utc::now(), "candidates": candidates}),
                ));
            }
            Ok(WireResponse::Error { code, message }) => {
                note = Some(format!(
                    "central search refused ({code}: {message}); searched this facility's replica"
                ))
            }
            Ok(other) => {
                note = Some(format!(
                    "unexpected answer {other:?}; searched this facility's replica"
                ))
            }
            Err(e) => {
                note = Some(format!(
                    "central search unavailable ({e}); searched this facility's replica"
                ))
            }
        }
    } else if outage.is_none() && app.gate.link.state().is_up() {
        note = Some("no outage declared: searched this facility's replica (declare one with POST /v1/outage for central search)".into());
    }
    let today = chrono::Local::now().date_naive();
    let mut candidates = Vec::new();
    let mut oldest: Option<chrono::DateTime<chrono::Utc>> = None;
    for c in app
        .gate
        .replica
        .search(&query, onshi_sync::reconciler::SEARCH_LIMIT)
    {
        let periods = app
            .gate
            .replica
            .periods_of(&c.person_id)
            .map_err(unavailable)?;
        let Some(q) = onshi_sync::reconciler::best_period(periods, today) else {
            continue;
        };
        if let Some(t) = app.gate.replica.as_of(&c.person_id).map_err(unavailable)? {
            oldest = Some(oldest.map_or(t, |o| o.min(t)));
        }
        candidates.push(json!({"person_id": c.person_id, "score": c.score, "reasons": c.reasons, "qualification": q}));
    }
    Ok(axum::Json(
        json!({"source": "replica", "as_of": oldest, "candidates": candidates, "note": note}),
    ))
}

/// `POST /v1/outage` `{"active": true|false, "reason"}`: declares or ends this facility's outage,
/// locally (durable) and at the reconciler when the link is up.
async fn post_outage(
    State(app): State<Arc<AppState>>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let v = parse_body(&body)?;
    let f = Fields::root(&v)?;
    f.deny_unknown(&["active", "reason"])?;
    let active = match v.get("active") {
        Some(Value::Bool(b)) => *b,
        None | Some(Value::Null) => {
            return Err(FieldError::new(
                "active",
                ErrorCode::MissingField,
                "active: is required (true declares an outage, false ends it)",
            )
            .into());
        }
        Some(_) => {
            return Err(FieldError::new(
                "active",
                ErrorCode::WrongType,
                "active: must be true or false",
            )
            .into());
        }
    };
    let reason =
        crate::provisional::opt_text(&f, "reason", MAX_OUTAGE_REASON_CHARS)?.unwrap_or_default();
    if active && reason.trim().is_empty() {
        return Err(FieldError::new(
            "reason",
            ErrorCode::MissingField,
            "reason: say why (e.g. \"card reader broken\"); it is logged centrally",
        )
        .into());
    }
    let previous = app.gate.journal.outage().map_err(unavailable)?;
    let since = previous
        .as_ref()
        .filter(|o| o.active && active)
        .map_or_else(chrono::Utc::now, |o| o.since);
    let mut state = OutageState {
        active,
        reason: reason.clone(),
        since,
        central: false,
        until: None,
    };
    let mut note = None;
    match app
        .gate
        .link
        .call(Request::Outage { active, reason }, app.gate.deadline())
        .await
    {
        Ok(WireResponse::Outage {
            active: a, until, ..
        }) if a == active => {
            state.central = true;
            state.until = until;
        }
        Ok(other) => note = Some(format!("the reconciler did not record it: {other:?}")),
        Err(e) => {
            note = Some(format!(
                "recorded here only; the reconciler is unreachable ({e}): declare again once the link is up"
            ))
        }
    }
    app.gate
        .journal
        .set_outage(&state)
        .await
        .map_err(unavailable)?;
    tracing::warn!(
        active,
        central = state.central,
        "outage {}",
        if active { "declared" } else { "ended" }
    );
    Ok(axum::Json(
        json!({"active": state.active, "reason": state.reason, "since": state.since, "until": state.until, "central": state.central, "note": note}),
    ))
}

async fn get_outage(State(app): State<Arc<AppState>>) -> Result<impl IntoResponse, ApiError> {
    let o = app.gate.journal.outage().map_err(unavailable)?;
    Ok(axum::Json(match o {
        Some(o) => {
            json!({"active": o.active, "reason": o.reason, "since": o.since, "until": o.until, "central": o.central})
        }
        None => json!({"active": false}),
    }))
}

/// The longest outage reason taken (it is logged and sent to the centre).
pub const MAX_OUTAGE_REASON_CHARS: usize = 200;

/// The most checks one `POST /v1/batch` takes (a large hospital's night batch fits).
pub const MAX_BATCH_ITEMS: usize = 20_000;
const BATCH_CHUNK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn get_metrics(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    use onshi_sync::metrics::{Exposition, labels};
    let s = &app.gate.stats;
    let (syncs, commits) = app.gate.journal.commit_stats();
    let link = app.gate.link.state();
    let mode = app.gate.mode.mode();
    let sync = app.gate.sync.status();
    let q = app
        .gate
        .journal
        .tally()
        .brief(&app.gate.live.get().queue, chrono::Utc::now());
    let n = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
    let mut e = Exposition::new();
    e.counter(
        "onshi_checks_total",
        "Checks answered, by source.",
        &[
            (labels(&[("source", "online")]), n(&s.answered_online)),
            (labels(&[("source", "replica")]), n(&s.answered_replica)),
            (labels(&[("source", "queued")]), n(&s.answered_queued)),
        ],
    );
    e.labelled_counter(
        "onshi_check_answers_total",
        "Checks answered, by source and validity (what reception was told).",
        &["source", "validity"],
        &s.answers,
    );
    let series: Vec<([(&str, &str); 1], &onshi_sync::metrics::Histogram)> = crate::gate::SOURCES
        .iter()
        .zip(&s.latency)
        .map(|(src, h)| ([("source", src.as_str())], h))
        .collect();
    let series: Vec<(&[(&str, &str)], &onshi_sync::metrics::Histogram)> =
        series.iter().map(|(l, h)| (&l[..], *h)).collect();
    e.histogram(
        "onshi_check_duration_seconds",
        "Time from a check's request to its durable answer, by source.",
        &series,
    );
    e.counter(
        "onshi_deadline_missed_total",
        "Online answers that missed the deadline.",
        &[(String::new(), n(&s.deadline_missed))],
    );
    e.counter(
        "onshi_deferred_completed_total",
        "Deferred checks completed online.",
        &[(String::new(), n(&s.deferred_completed))],
    );
    let modes = [
        ("online", crate::mode::Mode::Online),
        ("degraded", crate::mode::Mode::Degraded),
        ("offline", crate::mode::Mode::Offline),
    ];
    e.gauge(
        "onshi_mode",
        "1 for the current mode.",
        &modes
            .iter()
            .map(|(name, m)| (labels(&[("mode", name)]), f64::from(u8::from(mode == *m))))
            .collect::<Vec<_>>(),
    );
    e.gauge1(
        "onshi_link_up",
        "1 when the QUIC link to the reconciler is up.",
        f64::from(u8::from(link.is_up())),
    );
    e.gauge1(
        "onshi_link_rtt_seconds",
        "Round-trip time of the current (or last) QUIC connection to the reconciler.",
        link.last_rtt.map_or(0.0, |d| d.as_secs_f64()),
    );
    let (to_reconciler, from_reconciler) = app.gate.link.payload_bytes();
    e.counter(
        "onshi_link_payload_bytes_total",
        "Application bytes of answered RPCs with the reconciler (no QUIC headers or retransmissions), by direction.",
        &[
            (labels(&[("direction", "to_reconciler")]), to_reconciler),
            (labels(&[("direction", "from_reconciler")]), from_reconciler),
        ],
    );
    e.counter(
        "onshi_link_reconnects_total",
        "Connection attempts to the reconciler after the first.",
        &[(String::new(), link.reconnects)],
    );
    e.counter(
        "onshi_sync_rounds_total",
        "Journal sync rounds with the reconciler (an RPC answered or failed).",
        &[(String::new(), sync.rounds)],
    );
    e.gauge1(
        "onshi_sync_synced",
        "1 when every record is acknowledged by the reconciler and nothing is to receive.",
        f64::from(u8::from(sync.synced)),
    );
    e.gauge(
        "onshi_sync_pending_records",
        "Sync records still to send or to receive.",
        &[
            (labels(&[("direction", "outgoing")]), sync.outgoing as f64),
            (labels(&[("direction", "incoming")]), sync.incoming as f64),
        ],
    );
    e.gauge1(
        "onshi_sync_last_synced_timestamp_seconds",
        "When a sync round last found everything synced (Unix time; 0 never).",
        sync.last_sync.map_or(0.0, |t| t.timestamp() as f64),
    );
    let journal = app.gate.journal.status();
    e.gauge1(
        "onshi_journal_writable",
        "1 while the journal can record; 0 from a failed write (a full disk) until it reopens.",
        f64::from(u8::from(journal.writable)),
    );
    e.counter(
        "onshi_journal_commit_failures_total",
        "Commits answered with an error (the caller was told: not recorded).",
        &[(String::new(), journal.commit_failures)],
    );
    e.counter(
        "onshi_journal_write_failures_total",
        "Failed writes and syncs of the journal's store.",
        &[(String::new(), journal.write_failures)],
    );
    e.counter(
        "onshi_journal_recoveries_total",
        "Reopens of the journal's store after a failure.",
        &[(String::new(), journal.recoveries)],
    );
    e.gauge1(
        "onshi_queue_pending",
        "Deferred checks and provisional records not yet closed.",
        q.pending as f64,
    );
    e.gauge1(
        "onshi_queue_provisional_yen",
        "Yen collected provisionally in records not yet closed.",
        q.provisional_yen as f64,
    );
    e.gauge1(
        "onshi_queue_oldest_pending_seconds",
        "Age of the oldest pending item (0 when nothing is pending).",
        q.oldest_pending_s.map_or(0.0, |s| s as f64),
    );
    e.gauge1(
        "onshi_queue_quarantined",
        "Records set aside with a reason (they stay visible in the queue).",
        q.quarantined as f64,
    );
    e.gauge1(
        "onshi_queue_settled",
        "Provisional records whose settlement is back from the reconciler (settled or closed).",
        q.settled as f64,
    );
    e.gauge1(
        "onshi_journal_records",
        "Checks in the journal.",
        app.gate.journal.len() as f64,
    );
    e.counter(
        "onshi_journal_syncs_total",
        "Flush+fsync rounds of the journal.",
        &[(String::new(), syncs)],
    );
    e.counter(
        "onshi_journal_commits_total",
        "Writes made durable (several per sync under load).",
        &[(String::new(), commits)],
    );
    if let Some(m) = &app.mailbox {
        let st = m.stats();
        e.counter(
            "onshi_mailbox_files_total",
            "Mailbox files handled: requests answered, files rejected to err/, final results written after an outage, face files.",
            &[
                (labels(&[("outcome", "answered")]), n(&st.answered)),
                (labels(&[("outcome", "rejected")]), n(&st.rejected)),
                (labels(&[("outcome", "final")]), n(&st.finals)),
                (labels(&[("outcome", "face")]), n(&st.faces)),
            ],
        );
        e.gauge1(
            "onshi_mailbox_open",
            "Mailbox records with a final result awaited or a result not yet written.",
            app.mailbox_store.open_len() as f64,
        );
    }
    e.gauge1(
        "onshi_replica_people",
        "People in the local replica.",
        app.gate.replica.people_count() as f64,
    );
    (
        [(header::CONTENT_TYPE, onshi_sync::metrics::CONTENT_TYPE)],
        e.finish(),
    )
}

/// The body readers under random, deep, huge and mistyped JSON: never a panic, always a value or
/// an error that names its field in its message. `PROPTEST_CASES` sets the number of cases
/// (default 256 per property; README: a longer run).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn today() -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(2026, 4, 1).expect("a date")
    }

    /// Any JSON value, a few levels deep, with text that looks like dates, numbers and names.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,40}".prop_map(Value::String),
            "[0-9０-９SHRT令和平成昭和年月日./-]{0,14}".prop_map(Value::String),
            prop::sample::select(vec![
                "1980-04-01",
                "0001-01-01",
                "9999-12-31",
                "令和99年1月1日",
                "S55.4.1",
                "female",
                "male",
                "06130017",
                "",
            ])
            .prop_map(|s| json!(s)),
            (0usize..200_000).prop_map(|n| json!("x".repeat(n))),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(field_name(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn field_name() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "insurance_card",
                "insurer_number",
                "symbol",
                "number",
                "branch",
                "birth_date",
                "service_date",
                "card_id",
                "declared",
                "name",
                "name_kana",
                "sex",
                "address",
                "insurer_name",
                "share_percent",
                "person_id",
                "total_fee_yen",
                "active",
                "reason",
                "checks",
            ])
            .prop_map(str::to_string),
            ".{0,12}",
        ]
    }

    /// A valid body of each reader, with one field (at any depth) replaced by anything.
    fn mutated() -> impl Strategy<Value = Value> {
        let bases = vec![
            json!({"insurance_card": {"insurer_number": "06130017", "symbol": "1", "number": "4567", "branch": "01"}, "birth_date": "1980-04-01", "service_date": "2026-04-01"}),
            json!({"declared": {"name": "山田　花子", "birth_date": "1980-04-01", "sex": "female", "share_percent": 30}, "service_date": "2026-04-01", "total_fee_yen": 5000}),
            json!({"name_kana": "ヤマダ", "birth_date": "1980-04-01", "sex": "female"}),
        ];
        (
            prop::sample::select(bases),
            field_name(),
            field_name(),
            json_value(),
        )
            .prop_map(|(mut base, outer, inner, v)| {
                match base.get_mut(&outer) {
                    Some(Value::Object(o)) => {
                        o.insert(inner, v);
                    }
                    _ => base[outer] = v,
                }
                base
            })
    }

    /// Every reader on one body: a value, or an error whose message names its field.
    fn read_all(v: &Value) {
        let errors = [
            CheckRequest::from_json(v, today()).err(),
            ProvisionalRequest::from_json(v, today()).err(),
            SearchQuery::from_json(v).err(),
        ];
        for e in errors.into_iter().flatten() {
            assert!(!e.message.is_empty(), "{e:?}");
            assert!(
                e.message.contains(&e.field),
                "the message names {}: {e:?}",
                e.field
            );
            if e.field.is_empty() {
                assert!(!v.is_object() || e.code != ErrorCode::UnknownField, "{e:?}");
            }
        }
    }

    proptest! {
        #[test]
        fn random_json_gives_a_value_or_a_named_error(v in json_value()) {
            read_all(&v);
        }

        #[test]
        fn one_wrong_field_gives_a_value_or_a_named_error(v in mutated()) {
            read_all(&v);
        }

        #[test]
        fn random_bytes_are_refused_as_json_or_read(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(v) = parse_body(&Bytes::from(bytes)) {
                read_all(&v);
            }
        }

        #[test]
        fn deep_nesting_is_refused_without_a_crash(depth in 1usize..20_000, object in any::<bool>()) {
            let (open, close) = if object { ("{\"a\":", "}") } else { ("[", "]") };
            let text = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            match parse_body(&Bytes::from(text)) {
                Ok(v) => read_all(&v),
                Err(e) => prop_assert_eq!(e.code, "invalid_json"),
            }
        }
    }
}
