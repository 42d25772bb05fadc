//! `GET /v1/export` (admin): the whole journal as JSON lines, streamed. Logged in the access log
//! (committed before the first byte goes out).

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use super::checks::RecordView;
use super::{ApiError, Caller, Shared, unavailable};
use crate::auth::audit::AuditAction;

/// One export line: the record as its `GET` shows it, with its kind.
#[derive(Serialize)]
struct Line<T: Serialize> {
    record: &'static str,
    #[serde(flatten)]
    body: T,
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
    fn line<T: Serialize>(&mut self, record: &'static str, body: T) -> Result<(), String> {
        let line = serde_json::to_string(&Line { record, body }).map_err(|e| e.to_string())?;
        self.buf.push_str(&line);
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
fn export_into(app: &Shared, sink: &mut ExportSink) -> Result<(), String> {
    for r in app.gate.journal.checks_iter() {
        let r = r.map_err(|e| e.to_string())?;
        sink.line("check", RecordView::of(&r))?;
    }
    for r in app.gate.journal.provisional_iter() {
        sink.line("provisional", r.map_err(|e| e.to_string())?)?;
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
        sink.line("mailbox", mailbox_json(&r, batch.as_ref()))?;
    }
    sink.flush()
}

/// `GET /v1/export`: the whole journal as JSON lines (checks, then provisional records, then
/// mailbox records), each line a record as `GET /v1/checks/{id}` or `GET /v1/provisional/{id}`
/// shows it, with a `"record"` kind. Streamed: read on the blocking pool one record at a time and
/// sent in chunks, so a large journal never sits in memory whole.
pub(super) async fn get_export(
    State(app): State<Shared>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    // Who exported is on disk before anything is sent.
    app.audit
        .read(&caller, AuditAction::Export, Vec::new())
        .await?;
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
