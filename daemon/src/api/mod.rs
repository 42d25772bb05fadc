//! The local HTTP API (JSON) for receipt computers and the reception page: one module per
//! resource; handlers only translate between HTTP and the gate/journal, and take from the shared
//! [`AppState`] only what they need (axum `FromRef` substates: [`Gate`], [`Audit`],
//! [`Authenticator`], [`IdempotencyStore`]). Errors are `{"error":{"code","field","message"}}`
//! (`http.rs` puts whatever axum or hyper answer by themselves in the same envelope). POSTs that
//! create something take an `Idempotency-Key` (`idempotency.rs`).
//!
//! Every `/v1/*` route but `GET /v1/health` is behind [`auth`]'s guard (a bearer token or a
//! session, and a role); every read or write of personal data appends to the access log
//! ([`Audit`]) before it is answered. Handlers must never log or audit the values searched for.

pub mod audit;
pub mod auth;
mod batch;
mod checks;
mod export;
mod outage;
mod provisional;
mod queue;
mod reader;
mod search;
mod status;
mod sync;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRef, Path};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use onshi_model::FieldError;
use serde::Serialize;
use serde_json::Value;

pub use self::audit::Audit;
pub use self::auth::Caller;
pub use self::batch::MAX_BATCH_ITEMS;
pub use self::checks::{record_json, request_json};
pub use self::outage::MAX_OUTAGE_REASON_CHARS;
pub(crate) use self::outage::{ask_centre, declaration};
use crate::auth::{Authenticator, Role};
use crate::gate::{Gate, GateError};
use crate::idempotency::{Created, IdempotencyStore, Lookup};

/// What the handlers share; each takes the parts it needs (see the `FromRef` impls below).
#[derive(Debug, Clone)]
pub struct AppState {
    pub gate: Gate,
    pub started: Instant,
    /// The OQS file mailbox, when configured.
    pub mailbox: Option<crate::mailbox::Mailbox>,
    /// The mailbox's records (kept, and exported, even when the mailbox is not configured now).
    pub mailbox_store: crate::mailbox::store::MailboxStore,
    /// The `Idempotency-Key`s of POSTs that created something.
    pub idempotency: IdempotencyStore,
    /// Tokens, sessions and sign-in.
    pub auth: Authenticator,
    /// The access log, committed with the journal's group commit.
    pub audit: Audit,
    /// The store's encryption at rest: keys and rotations.
    pub at_rest: Arc<crate::at_rest::AtRest>,
}

/// The router's state: one `Arc`, cloned per request.
pub type Shared = Arc<AppState>;

impl FromRef<Shared> for Gate {
    fn from_ref(s: &Shared) -> Gate {
        s.gate.clone()
    }
}

impl FromRef<Shared> for Audit {
    fn from_ref(s: &Shared) -> Audit {
        s.audit.clone()
    }
}

impl FromRef<Shared> for Authenticator {
    fn from_ref(s: &Shared) -> Authenticator {
        s.auth.clone()
    }
}

impl FromRef<Shared> for IdempotencyStore {
    fn from_ref(s: &Shared) -> IdempotencyStore {
        s.idempotency.clone()
    }
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

    /// 404 `not_found` for the path's `id` (`what`: "check", "provisional record", "item").
    pub fn not_found(what: &str, id: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found".into(),
            field: Some("id".into()),
            message: format!("no {what} with id {id}"),
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

/// The error envelope as sent.
#[derive(Serialize)]
struct Envelope<'a> {
    error: EnvelopeBody<'a>,
}

#[derive(Serialize)]
struct EnvelopeBody<'a> {
    code: &'a str,
    field: Option<&'a str>,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Envelope {
            error: EnvelopeBody {
                code: &self.code,
                field: self.field.as_deref(),
                message: &self.message,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// The API's routes, each behind the role it needs, with `extra` (the reception page's routes,
/// already given their state) merged in: `api::router(state, page::router(…))`, or
/// `Router::new()` for none. `GET /v1/health`, `GET /metrics`, `POST /login` and `POST /logout`
/// need no credentials.
pub fn router(state: AppState, extra: Router) -> Router {
    let state: Shared = Arc::new(state);
    let auth = state.auth.clone();
    let reception = || auth::needs(&auth, Role::Reception);
    let admin = || auth::needs(&auth, Role::Admin);
    Router::new()
        .route(
            "/v1/checks",
            post(checks::post_check).route_layer(reception()),
        )
        .route(
            "/v1/checks/{id}",
            get(checks::get_check).route_layer(reception()),
        )
        .route(
            "/v1/status",
            get(status::get_status).route_layer(reception()),
        )
        .route("/v1/health", get(status::get_health))
        .route("/v1/queue", get(queue::get_queue).route_layer(reception()))
        .route("/v1/export", get(export::get_export).route_layer(admin()))
        .route(
            "/v1/queue/{id}/close",
            post(queue::post_close).route_layer(reception()),
        )
        .route(
            "/v1/queue/{id}/choose",
            post(queue::post_choose).route_layer(reception()),
        )
        .route(
            "/v1/sync-now",
            post(sync::post_sync_now).route_layer(reception()),
        )
        .route(
            "/v1/batch",
            post(batch::post_batch).route_layer(reception()),
        )
        .route(
            "/v1/search",
            post(search::post_search).route_layer(reception()),
        )
        .route(
            "/v1/outage",
            post(outage::post_outage)
                .route_layer(admin())
                .merge(get(outage::get_outage).route_layer(reception())),
        )
        .route(
            "/v1/provisional",
            post(provisional::post_provisional).route_layer(reception()),
        )
        .route(
            "/v1/provisional/{id}",
            get(provisional::get_provisional).route_layer(reception()),
        )
        .route(
            "/v1/reader/heartbeat",
            post(reader::post_reader_heartbeat).route_layer(reception()),
        )
        .route(
            "/v1/reader/card",
            post(reader::post_reader_card).route_layer(reception()),
        )
        .route("/v1/audit", get(audit::get_audit).route_layer(admin()))
        .route("/login", post(auth::post_login))
        .route("/logout", post(auth::post_logout))
        .route("/metrics", get(status::get_metrics))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see GET /v1/status",
            )
        })
        .with_state(state)
        .merge(extra)
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
    gate: &Gate,
    ids: &IdempotencyStore,
    headers: &HeaderMap,
    endpoint: &str,
    body: &[u8],
) -> Result<Option<Lookup>, ApiError> {
    let Some(key) = crate::idempotency::key_of(headers, endpoint, body)? else {
        return Ok(None);
    };
    let journal = &gate.journal;
    ids.begin(key, |created| match created {
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

pub(crate) fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "journal_unavailable",
        e.to_string(),
    )
}

/// The body readers under random, deep, huge and mistyped JSON: never a panic, always a value or
/// an error that names its field in its message. `PROPTEST_CASES` sets the number of cases
/// (default 256 per property; README: a longer run).
#[cfg(test)]
mod fuzz {
    use super::*;
    use onshi_fallback::SearchQuery;
    use onshi_model::{CheckRequest, ErrorCode};
    use serde_json::json;

    use crate::provisional::ProvisionalRequest;
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
