//! The reception page: server-rendered HTML in Japanese for staff at the counter (sign in, the
//! mode banner, checks by card numbers, outage search, the self-declaration and its printable
//! sheet, the worklist). Every asset is compiled into the binary (`assets.rs`): facilities may
//! have no internet.
//!
//! The handlers call the domain layer (gate, journal, replica, provisional, queue) and the auth
//! core directly, never the JSON handlers; forms carry the JSON API's field names and go through
//! the same readers (`form.rs`), so a form and a JSON body are refused for the same reasons.
//!
//! It must never show or change anything before the session is checked (every route but
//! `/login` and the assets), never change state on a GET or without the session's CSRF token,
//! never let a read or write of personal data pass without its access-log entry committed first,
//! and never log a value a user typed.

// The `Err` of the handlers' helpers is the page to answer (a redirect, a refusal), built once
// per request and returned straight out: boxing it would buy nothing.
#![allow(clippy::result_large_err)]

mod admin;
mod assets;
mod cards;
mod form;
mod views;
mod words;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{Local, Utc};
use maud::Markup;
use onshi_fallback::SearchQuery;
use onshi_model::record::{ProvisionalRecord, RecordState};
use onshi_model::{CheckRequest, FieldError, PersonId};
use onshi_sync::crdt::RecordId;

use crate::api::AppState;
use crate::auth::{Actor, AuditAction, AuditEntry, AuditLog, Authenticator, Role, SubjectId};
use crate::provisional::{self, ProvisionalRequest};
use crate::queue;
use views::{Chrome, FormError, Prefill};

/// The session cookie (the same one the API's middleware reads).
pub const SESSION_COOKIE: &str = "onshi_session";

/// What the page's handlers share: the edge's state, the authenticator whose sessions the API
/// also honours, and the access log.
#[derive(Debug, Clone)]
pub struct PageState {
    pub app: AppState,
    pub auth: Authenticator,
    pub audit: AuditLog,
}

type Shared = State<Arc<PageState>>;
/// A form post's fields in order; a body that is not a form is answered with the page's 400.
#[derive(Debug)]
pub(crate) struct Pairs(pub Vec<(String, String)>);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Pairs {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Response> {
        axum::Form::<Vec<(String, String)>>::from_request(req, state)
            .await
            .map(|f| Pairs(f.0))
            .map_err(|e| bad_form(&e))
    }
}

/// The page's routes, to be merged into the API's router.
pub fn router(state: PageState) -> Router {
    Router::new()
        .route("/", get(get_check))
        .route("/check", post(post_check))
        // `POST /login` and `POST /logout` are the API's (`api/auth.rs`): one sign-in for the
        // page and for programs; a form sign-in that fails is answered with this page's form.
        .route("/login", get(get_login))
        .route("/search", get(get_search).post(post_search))
        .route("/declare", get(get_declare).post(post_declare))
        .route("/declare/{id}/print", get(get_print))
        .route("/worklist", get(get_worklist))
        .route("/worklist/{id}/close", post(post_close))
        .route("/worklist/{id}/choose", post(post_choose))
        .route("/procedure", get(get_procedure))
        .route("/page/banner", get(get_banner))
        .route("/page/cards", get(cards::get_cards))
        // The admin pages (admin role only): users and tokens, the access log, disaster mode.
        .route("/admin/accounts", get(admin::get_accounts))
        .route("/admin/users", post(admin::post_user))
        .route("/admin/users/{name}/disable", post(admin::post_disable))
        .route("/admin/tokens", post(admin::post_token))
        .route("/admin/tokens/{name}/revoke", post(admin::post_revoke))
        .route("/admin/audit", get(admin::get_audit))
        .route(
            "/admin/outage",
            get(admin::get_outage).post(admin::post_outage),
        )
        .route("/assets/page.css", get(assets::css))
        .route("/assets/page.js", get(assets::js))
        .with_state(Arc::new(state))
}

/// The client's address, from the accept loop (none in tests that call the router directly).
#[derive(Debug, Clone, Copy)]
struct Peer(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// A signed-in person on this request.
#[derive(Debug)]
struct Staff {
    actor: Actor,
    csrf: String,
    from: Option<IpAddr>,
}

/// An HTML answer with the headers every page carries: no caching of personal data, no framing,
/// nothing from another origin.
fn html(status: StatusCode, markup: Markup) -> Response {
    let mut r = (status, markup.into_string()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    security_headers(h);
    r
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        // Not `no-referrer`: under it Chromium sends `Origin: null` with a form's POST, which
        // the HTTP server rightly refuses as foreign.
        HeaderValue::from_static("same-origin"),
    );
}

fn see_other(to: &str) -> Response {
    let mut r = Redirect::to(to).into_response();
    // 303 for POSTs too: the browser follows with a GET.
    *r.status_mut() = StatusCode::SEE_OTHER;
    security_headers(r.headers_mut());
    r
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl PageState {
    /// The signed-in staff member, or the answer to give instead (the sign-in page for a browser;
    /// a 503 page when the accounts file cannot be read).
    fn staff(&self, headers: &HeaderMap, peer: Peer) -> Result<Staff, Response> {
        let Some(cookie) = cookie_value(headers, SESSION_COOKIE) else {
            return Err(see_other("/login"));
        };
        match self.auth.session(cookie, Instant::now()) {
            Ok((actor, csrf)) => {
                actor
                    .require(Role::Reception)
                    .map_err(|e| html(StatusCode::FORBIDDEN, views::problem(&e.to_string())))?;
                Ok(Staff {
                    actor,
                    csrf,
                    from: peer.0,
                })
            }
            Err(e) if e.http_status() == 401 => Err(see_other("/login")),
            Err(e) => Err(html(
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                views::problem(&e.to_string()),
            )),
        }
    }

    /// As [`PageState::staff`], for a POST: the form's `csrf` must be the session's.
    fn staff_posting(
        &self,
        headers: &HeaderMap,
        peer: Peer,
        pairs: &[(String, String)],
    ) -> Result<Staff, Response> {
        let staff = self.staff(headers, peer)?;
        let presented = form::get(pairs, "csrf").unwrap_or("");
        if !same_secret(presented, &staff.csrf) {
            return Err(html(
                StatusCode::FORBIDDEN,
                views::problem(
                    "フォームの有効期限が切れています（csrf）。ページを開き直してからもう一度送信してください。",
                ),
            ));
        }
        Ok(staff)
    }

    /// Appends the access-log entry and commits it (with any writes of the request not yet
    /// committed) before the page answers.
    async fn log(
        &self,
        staff: &Staff,
        action: AuditAction,
        subject: Vec<SubjectId>,
    ) -> Result<(), Response> {
        self.append(staff, action, subject)?;
        self.app
            .gate
            .journal
            .commit()
            .await
            .map_err(|e| unavailable(&e.to_string()))
    }

    /// Appends without committing: the caller's own commit makes it durable.
    fn append(
        &self,
        staff: &Staff,
        action: AuditAction,
        subject: Vec<SubjectId>,
    ) -> Result<(), Response> {
        self.audit
            .append_uncommitted(&AuditEntry {
                at: Utc::now(),
                actor: staff.actor.name.clone(),
                role: staff.actor.role,
                action,
                subject,
                from: staff.from,
            })
            .map(|_| ())
            .map_err(|e| unavailable(&e.to_string()))
    }

    fn banner(&self) -> views::BannerFacts {
        let gate = &self.app.gate;
        let mode = gate.mode.snapshot();
        let q = gate
            .journal
            .tally()
            .brief(&gate.live.get().queue, Utc::now());
        // Each card reader by id: up, or down (or not yet heard) with why.
        let readers = gate
            .mode
            .readers()
            .into_iter()
            .map(|r| {
                let up = r.state == crate::reader::ReaderState::Up;
                (Some(r.id), up, r.reason)
            })
            .collect();
        views::BannerFacts {
            mode: mode.mode.as_str(),
            for_s: mode.for_s.max(0.0) as u64,
            reasons: mode.reasons,
            pending: q.pending,
            provisional_yen: q.provisional_yen,
            oldest_pending_s: q.oldest_pending_s,
            settled: q.settled,
            quarantined: q.quarantined,
            last_sync: gate.sync.status().last_sync,
            readers,
            warnings: q.warnings,
        }
    }

    fn chrome<'a>(&self, staff: &'a Staff, active: &'a str) -> Chrome<'a> {
        Chrome {
            user: staff.actor.name.as_str(),
            role: staff.actor.role.as_str(),
            csrf: &staff.csrf,
            banner: views::banner(&self.banner()),
            active,
        }
    }

    fn page(&self, staff: &Staff, active: &str, title: &str, body: Markup) -> Response {
        self.page_status(StatusCode::OK, staff, active, title, body)
    }

    fn page_status(
        &self,
        status: StatusCode,
        staff: &Staff,
        active: &str,
        title: &str,
        body: Markup,
    ) -> Response {
        html(
            status,
            views::layout(title, &self.chrome(staff, active), body),
        )
    }
}

/// Compares two secrets without stopping at the first difference.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

fn unavailable(message: &str) -> Response {
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        views::problem(&format!(
            "記録できませんでした（何も記録されていません）：{message}"
        )),
    )
}

fn bad_form(e: &FormRejection) -> Response {
    html(
        StatusCode::BAD_REQUEST,
        views::problem(&format!("フォームを読めませんでした：{e}")),
    )
}

fn field_error(e: FieldError) -> FormError {
    FormError {
        field: Some(e.field.clone()),
        message: format!("{}（{}）", e.message, e.field),
    }
}

fn prefill(pairs: &[(String, String)]) -> Prefill {
    pairs
        .iter()
        .filter(|(k, _)| k != "csrf")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn today() -> chrono::NaiveDate {
    Local::now().date_naive()
}

fn unwrap_either(r: Result<Response, Response>) -> Response {
    r.unwrap_or_else(|e| e)
}

// ---------------------------------------------------------------------------------------------
// Sign in and out

async fn get_login(State(st): Shared, headers: HeaderMap, peer: Peer) -> Response {
    if st.staff(&headers, peer).is_ok() {
        return see_other("/");
    }
    html(StatusCode::OK, views::login(None, ""))
}

/// The sign-in form again, with what went wrong, for a form sign-in the API refused.
pub(crate) fn login_failed(e: &crate::auth::SignInError, user: &str) -> Response {
    let message = match e {
        crate::auth::SignInError::Throttled(_) => format!(
            "サインインの失敗が続いたため、{}秒待ってからもう一度お試しください。",
            e.retry_after().unwrap_or(1)
        ),
        crate::auth::SignInError::BadCredentials => {
            "ユーザー名またはパスワードが違います。".to_string()
        }
        crate::auth::SignInError::Unavailable(m) => {
            format!("アカウント情報を読めないため、サインインできません：{m}")
        }
    };
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut r = html(status, views::login(Some(&message), user));
    if let Some(s) = e.retry_after()
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

// ---------------------------------------------------------------------------------------------
// The banner

/// How long `GET /page/banner?mode=M` waits for the mode to leave `M` before answering anyway
/// (so the counts in the banner are at most this old).
const BANNER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The banner alone, for `page.js` to swap in. With `?mode=M` (the mode the page shows) it
/// answers as soon as the mode is no longer `M`, or after [`BANNER_WAIT`]: a change of mode
/// reaches the page at once, without polling faster. 401 once the session has ended (the script
/// then goes to the sign-in page).
async fn get_banner(
    State(st): Shared,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    // The banner's refresh is the page's own doing, not a person's: it must not keep the session
    // from idling out.
    let signed_in = cookie_value(&headers, SESSION_COOKIE)
        .is_some_and(|c| st.auth.session_quiet(c, Instant::now()).is_ok());
    if !signed_in {
        return html(StatusCode::UNAUTHORIZED, maud::html! {});
    }
    if let Some(shown) = q.get("mode") {
        let mut modes = st.app.gate.mode.subscribe();
        let changed = async {
            while modes.borrow_and_update().as_str() == shown {
                if modes.changed().await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(BANNER_WAIT, changed).await;
    }
    html(StatusCode::OK, views::banner(&st.banner()))
}

// ---------------------------------------------------------------------------------------------
// Check by insurance-card numbers

const CHECK_TITLE: &str = "資格確認（保険証の番号）";

async fn get_check(State(st): Shared, headers: HeaderMap, peer: Peer) -> Response {
    let staff = match st.staff(&headers, peer) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let body = maud::html! {
        (views::check_form(&Prefill::new(), None, &staff.csrf))
        (st.recent_cards())
    };
    st.page(&staff, "check", CHECK_TITLE, body)
}

async fn post_check(
    State(st): Shared,
    headers: HeaderMap,
    peer: Peer,
    Pairs(pairs): Pairs,
) -> Response {
    unwrap_either(check(&st, &headers, peer, &pairs).await)
}

async fn check(
    st: &PageState,
    headers: &HeaderMap,
    peer: Peer,
    pairs: &[(String, String)],
) -> Result<Response, Response> {
    let staff = st.staff_posting(headers, peer, pairs)?;
    let p = prefill(pairs);
    let req = match CheckRequest::from_json(&form::to_json(pairs, &[]), today()) {
        Ok(r) => r,
        Err(e) => {
            let body = views::check_form(&p, Some(&field_error(e)), &staff.csrf);
            return Ok(st.page_status(StatusCode::BAD_REQUEST, &staff, "check", CHECK_TITLE, body));
        }
    };
    let record = st
        .app
        .gate
        .check(req)
        .await
        .map_err(|e| unavailable(&e.to_string()))?;
    let subject = RecordId::parse(&record.check_id)
        .map(|id| vec![SubjectId::Check(id)])
        .unwrap_or_default();
    st.log(&staff, AuditAction::Check, subject).await?;
    let body = maud::html! {
        (views::check_answer(&record))
        h2 { "次の照会" }
        (views::check_form(&Prefill::new(), None, &staff.csrf))
        (st.recent_cards())
    };
    Ok(st.page(&staff, "check", CHECK_TITLE, body))
}

// ---------------------------------------------------------------------------------------------
// Outage search

const SEARCH_TITLE: &str = "患者検索（障害時）";

async fn get_search(State(st): Shared, headers: HeaderMap, peer: Peer) -> Response {
    let staff = match st.staff(&headers, peer) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let body = views::search_form(&Prefill::new(), None, &staff.csrf);
    st.page(&staff, "search", SEARCH_TITLE, body)
}

async fn post_search(
    State(st): Shared,
    headers: HeaderMap,
    peer: Peer,
    Pairs(pairs): Pairs,
) -> Response {
    unwrap_either(search(&st, &headers, peer, &pairs).await)
}

/// Searches this facility's replica (what it has seen online or prefetched), as the API does
/// without a declared outage.
async fn search(
    st: &PageState,
    headers: &HeaderMap,
    peer: Peer,
    pairs: &[(String, String)],
) -> Result<Response, Response> {
    let staff = st.staff_posting(headers, peer, pairs)?;
    let p = prefill(pairs);
    let query = SearchQuery::from_json(&form::to_json(pairs, &[])).and_then(|q| {
        // As the API: a plausible day of care, the person born by it (and by today).
        let day = q.service_date.unwrap_or_else(today);
        onshi_model::plausible::check_service_date("service_date", day, today())?;
        onshi_model::plausible::check_birth_date("birth_date", q.birth_date, day.min(today()))?;
        Ok(q)
    });
    let query = match query {
        Ok(q) => q,
        Err(e) => {
            let body = views::search_form(&p, Some(&field_error(e)), &staff.csrf);
            return Ok(st.page_status(
                StatusCode::BAD_REQUEST,
                &staff,
                "search",
                SEARCH_TITLE,
                body,
            ));
        }
    };
    let replica = &st.app.gate.replica;
    let day = query.service_date.unwrap_or_else(today);
    let mut candidates = Vec::new();
    let found = replica.search(&query, onshi_sync::registry::SEARCH_LIMIT);
    let confidence = onshi_fallback::confidence(&found);
    for c in found {
        let periods = replica
            .periods_of(&c.person_id)
            .map_err(|e| unavailable(&e.to_string()))?;
        let Some(q) = onshi_sync::registry::best_period(periods, day) else {
            continue;
        };
        let as_of = replica
            .as_of(&c.person_id)
            .map_err(|e| unavailable(&e.to_string()))?;
        candidates.push(views::CandidateView {
            person_id: c.person_id.to_string(),
            score: c.score,
            reasons: c.reasons,
            qualification: q,
            service_date: day,
            as_of,
        });
    }
    // The people shown are logged by id; what was typed is not.
    let subject = candidates
        .iter()
        .filter_map(|c| PersonId::parse(&c.person_id).ok())
        .map(SubjectId::Person)
        .collect();
    st.log(&staff, AuditAction::Search, subject).await?;
    let note = "この施設の控え（過去にオンラインで確認した人）から検索しました。";
    let body = maud::html! {
        (views::search_results("replica", Some(note), confidence, &candidates))
        h2 { "検索し直す" }
        (views::search_form(&p, None, &staff.csrf))
    };
    Ok(st.page(&staff, "search", SEARCH_TITLE, body))
}

// ---------------------------------------------------------------------------------------------
// Self-declaration

const DECLARE_TITLE: &str = "申立書（資格が確認できない患者）";

/// The form, prefilled from a chosen candidate (`?person_id=`) or a check (`?birth_date=`).
async fn get_declare(
    State(st): Shared,
    headers: HeaderMap,
    peer: Peer,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let staff = match st.staff(&headers, peer) {
        Ok(s) => s,
        Err(r) => return r,
    };
    unwrap_either(declare_form(&st, &staff, &q).await)
}

async fn declare_form(
    st: &PageState,
    staff: &Staff,
    q: &HashMap<String, String>,
) -> Result<Response, Response> {
    let mut p = Prefill::new();
    // The day of care the search was for (a plausible one), else today.
    let day = q
        .get("service_date")
        .and_then(|d| d.parse::<chrono::NaiveDate>().ok())
        .filter(|d| onshi_model::plausible::check_service_date("service_date", *d, today()).is_ok())
        .unwrap_or_else(today);
    p.insert("service_date".into(), day.to_string());
    if let Some(b) = q.get("birth_date") {
        p.insert("declared.birth_date".into(), b.clone());
    }
    if let Some(person) = q.get("person_id").and_then(|s| PersonId::parse(s).ok()) {
        let periods = st
            .app
            .gate
            .replica
            .periods_of(&person)
            .map_err(|e| unavailable(&e.to_string()))?;
        if let Some(qual) = onshi_sync::registry::best_period(periods, day) {
            st.log(
                staff,
                AuditAction::Search,
                vec![SubjectId::Person(person.clone())],
            )
            .await?;
            let sex = serde_json::to_value(qual.sex)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            for (k, v) in [
                ("person_id", person.to_string()),
                ("declared.name", qual.name),
                ("declared.name_kana", qual.name_kana),
                ("declared.birth_date", qual.birth_date.to_string()),
                ("declared.sex", sex),
                ("declared.address", qual.address),
                ("declared.insurer_name", qual.insurer_name),
            ] {
                p.insert(k.into(), v);
            }
        }
    }
    let body = views::declare_form(&p, None, &staff.csrf);
    Ok(st.page(staff, "declare", DECLARE_TITLE, body))
}

async fn post_declare(
    State(st): Shared,
    headers: HeaderMap,
    peer: Peer,
    Pairs(pairs): Pairs,
) -> Response {
    unwrap_either(declare(&st, &headers, peer, &pairs).await)
}

/// Records the self-declaration as `POST /v1/provisional` does: the share decided, the sync
/// record and the access-log entry written, then one commit with the provisional record.
async fn declare(
    st: &PageState,
    headers: &HeaderMap,
    peer: Peer,
    pairs: &[(String, String)],
) -> Result<Response, Response> {
    let staff = st.staff_posting(headers, peer, pairs)?;
    let p = prefill(pairs);
    let v = form::to_json(pairs, &["total_fee_yen", "declared.share_percent"]);
    let req = match ProvisionalRequest::from_json(&v, today()) {
        Ok(r) => r,
        Err(e) => {
            let body = views::declare_form(&p, Some(&field_error(e)), &staff.csrf);
            return Ok(st.page_status(
                StatusCode::BAD_REQUEST,
                &staff,
                "declare",
                DECLARE_TITLE,
                body,
            ));
        }
    };
    let gate = &st.app.gate;
    let share = provisional::decide_share(&req, &gate.replica, &gate.live.get().share)
        .map_err(|e| unavailable(&e))?;
    let record_id = gate
        .journal
        .next_id()
        .map_err(|e| unavailable(&e.to_string()))?;
    let rec = ProvisionalRecord {
        record_id,
        created_at: Utc::now(),
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
    let sync_record = gate
        .journal
        .put_sync_provisional(&rec)
        .map_err(|e| unavailable(&e.to_string()))?;
    let mut subject: Vec<SubjectId> = RecordId::parse(&rec.record_id)
        .map(SubjectId::Record)
        .into_iter()
        .collect();
    subject.extend(rec.person_id.clone().map(SubjectId::Person));
    st.append(&staff, AuditAction::Provisional, subject)?;
    gate.journal
        .put_provisional_durable(&rec)
        .await
        .map_err(|e| unavailable(&e.to_string()))?;
    gate.sync.local_change(sync_record);
    tracing::info!(record_id = %rec.record_id, share = rec.share_percent, "provisional record (page)");
    Ok(st.page_status(
        StatusCode::CREATED,
        &staff,
        "declare",
        "申立書を記録しました",
        views::declared(&rec),
    ))
}

/// The printable A4 sheet of a recorded self-declaration.
async fn get_print(
    State(st): Shared,
    headers: HeaderMap,
    peer: Peer,
    Path(id): Path<String>,
) -> Response {
    let staff = match st.staff(&headers, peer) {
        Ok(s) => s,
        Err(r) => return r,
    };
    unwrap_either(print(&st, &staff, &id).await)
}

async fn print(st: &PageState, staff: &Staff, id: &str) -> Result<Response, Response> {
    let not_found = || {
        st.page_status(
            StatusCode::NOT_FOUND,
            staff,
            "declare",
            "申立書",
            views::problem("その記録番号の申立書はありません。"),
        )
    };
    let Ok(rid) = RecordId::parse(id) else {
        return Err(not_found());
    };
    let rec = st
        .app
        .gate
        .journal
        .get_provisional(id)
        .map_err(|e| unavailable(&e.to_string()))?
        .ok_or_else(not_found)?;
    let mut subject = vec![SubjectId::Record(rid)];
    subject.extend(rec.person_id.clone().map(SubjectId::Person));
    st.log(staff, AuditAction::ProvisionalRead, subject).await?;
    Ok(html(
        StatusCode::OK,
        views::print_sheet(&rec, st.app.gate.journal.facility().as_str()),
    ))
}

/// The printable outage procedure for the counter.
async fn get_procedure(State(st): Shared, headers: HeaderMap, peer: Peer) -> Response {
    match st.staff(&headers, peer) {
        Ok(_) => html(StatusCode::OK, views::procedure()),
        Err(r) => r,
    }
}

// ---------------------------------------------------------------------------------------------
// Worklist

const WORKLIST_TITLE: &str = "作業リスト";

async fn get_worklist(
    State(st): Shared,
    headers: HeaderMap,
    peer: Peer,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let staff = match st.staff(&headers, peer) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let filter = views::WorkFilter::from_query(q.get("show"), q.get("kind"));
    unwrap_either(worklist(&st, &staff, filter).await)
}

async fn worklist(
    st: &PageState,
    staff: &Staff,
    filter: views::WorkFilter,
) -> Result<Response, Response> {
    let gate = &st.app.gate;
    let journal = &gate.journal;
    let summary = queue::summary(journal, &gate.live.get().queue, Utc::now())
        .map_err(|e| unavailable(&e.to_string()))?;
    // Only what the filter shows is read further (and named in the access log).
    let listed = summary.items.len();
    let summary_items: Vec<_> = summary
        .items
        .into_iter()
        .filter(|it| filter.keeps(it.kind, &it.state, it.revised_after_close))
        .collect();
    let mut items = Vec::with_capacity(summary_items.len());
    // The candidates' people shown for a choice: their ids go into the access log.
    let mut shown: Vec<SubjectId> = Vec::new();
    for it in summary_items {
        // The settlement in words comes from the sync record (the typed settlement).
        let synced = if it.kind == "provisional" {
            RecordId::parse(&it.id)
                .ok()
                .map(|id| journal.sync.get(&id))
                .transpose()
                .map_err(|e| unavailable(&e.to_string()))?
                .flatten()
        } else {
            None
        };
        let settlement = synced
            .as_ref()
            .and_then(|r| r.settlement())
            .map(|s| (s.kind.as_str(), words::settlement(s)));
        // Under an ambiguous settlement staff choose among its candidates (issue 15).
        let candidates: Vec<views::ChoiceCandidate> = synced
            .as_ref()
            .and_then(|r| r.settlement())
            .filter(|s| s.kind == onshi_model::record::SettlementKind::Ambiguous)
            .map(|s| {
                s.candidates
                    .iter()
                    .map(|c| views::ChoiceCandidate {
                        person_id: c.person_id.to_string(),
                        name: c.qualification.name.clone(),
                        birth_date: c.qualification.birth_date,
                        insurer: c.qualification.insurer_name.clone(),
                        address: c.qualification.address.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        shown.extend(
            candidates
                .iter()
                .filter_map(|c| onshi_model::PersonId::parse(&c.person_id).ok())
                .map(SubjectId::Person),
        );
        let chosen = synced
            .as_ref()
            .and_then(|r| r.choice())
            .map(|c| c.person_id.to_string());
        items.push(views::WorkItem {
            quarantine: (it.state == "quarantined")
                .then(|| it.last_error.clone().unwrap_or_default()),
            id: it.id,
            kind: it.kind,
            state: it.state,
            created_at: it.created_at,
            collected_yen: it.collected_yen,
            settlement,
            candidates,
            chosen,
            revision: it.settlement_revision.unwrap_or(0),
            reopened: it.revised_after_close,
        });
    }
    // Newest first at the counter; closed items at the end, unless revised since.
    items.sort_by(|a, b| {
        (a.state == "closed" && !a.reopened)
            .cmp(&(b.state == "closed" && !b.reopened))
            .then(b.created_at.cmp(&a.created_at))
    });
    let mut changed = Vec::new();
    for r in journal.checks_iter() {
        let r = r.map_err(|e| unavailable(&e.to_string()))?;
        if let Some(f) = &r.final_outcome
            && f.outcome.validity != r.validity
        {
            changed.push(views::ChangedAnswer {
                check_id: r.check_id.clone(),
                told: r.validity,
                told_source: r.source,
                final_validity: f.outcome.validity,
                completed_at: f.completed_at,
            });
        }
    }
    changed.sort_by_key(|c| std::cmp::Reverse(c.completed_at));
    st.log(staff, AuditAction::QueueRead, shown).await?;
    let body = views::worklist(
        &items,
        &changed,
        (summary.pending, summary.provisional_yen),
        (filter, listed),
        &staff.csrf,
    );
    Ok(st.page(staff, "worklist", WORKLIST_TITLE, body))
}

async fn post_close(
    State(st): Shared,
    headers: HeaderMap,
    peer: Peer,
    Path(id): Path<String>,
    Pairs(pairs): Pairs,
) -> Response {
    unwrap_either(close(&st, &headers, peer, &id, &pairs).await)
}

async fn post_choose(
    State(st): Shared,
    headers: HeaderMap,
    peer: Peer,
    Path(id): Path<String>,
    Pairs(pairs): Pairs,
) -> Response {
    unwrap_either(choose(&st, &headers, peer, &id, &pairs).await)
}

/// Records staff's choice of person for an ambiguous settlement (as
/// `POST /v1/queue/{id}/choose`), then shows the worklist again.
async fn choose(
    st: &PageState,
    headers: &HeaderMap,
    peer: Peer,
    id: &str,
    pairs: &[(String, String)],
) -> Result<Response, Response> {
    use onshi_sync::crdt::{Actor, Choice, WriteError};
    let staff = st.staff_posting(headers, peer, pairs)?;
    let problem = |status, message: &str| {
        st.page_status(
            status,
            &staff,
            "worklist",
            WORKLIST_TITLE,
            views::problem(message),
        )
    };
    let Ok(rid) = RecordId::parse(id) else {
        return Err(problem(StatusCode::NOT_FOUND, "その作業はありません。"));
    };
    let Some(person) =
        form::get(pairs, "person_id").and_then(|p| onshi_model::PersonId::parse(p).ok())
    else {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            "person_id: 本人を候補から選んでください。",
        ));
    };
    let choice = Choice {
        at: Utc::now(),
        by: staff.actor.name.to_string(),
        person_id: person.clone(),
    };
    let journal = &st.app.gate.journal;
    let mut changed = false;
    let updated = journal
        .sync
        .update(&rid, |r| {
            changed = r.choose(Actor::Edge, choice)?;
            Ok::<(), WriteError>(())
        })
        .map_err(|e| unavailable(&e.to_string()))?
        .ok_or_else(|| problem(StatusCode::NOT_FOUND, "その作業はありません。"))?;
    let rec = updated.map_err(|e| match e {
        WriteError::NotACandidate { .. } => problem(
            StatusCode::BAD_REQUEST,
            &format!("person_id: その方は候補にありません：{e}"),
        ),
        e => problem(
            StatusCode::CONFLICT,
            &format!("本人を選べる精算結果ではありません：{e}"),
        ),
    })?;
    st.append(
        &staff,
        AuditAction::ChooseCandidate,
        vec![SubjectId::Record(rid), SubjectId::Person(person)],
    )?;
    journal
        .commit()
        .await
        .map_err(|e| unavailable(&e.to_string()))?;
    if changed {
        st.app.gate.sync.local_change(rec);
    }
    tracing::info!(record_id = %id, "person chosen for an ambiguous settlement (page)");
    Ok(see_other("/worklist"))
}

/// Closes a settled item (as `POST /v1/queue/{id}/close`), then shows the worklist again.
async fn close(
    st: &PageState,
    headers: &HeaderMap,
    peer: Peer,
    id: &str,
    pairs: &[(String, String)],
) -> Result<Response, Response> {
    let staff = st.staff_posting(headers, peer, pairs)?;
    let problem = |status, message: &str| {
        st.page_status(
            status,
            &staff,
            "worklist",
            WORKLIST_TITLE,
            views::problem(message),
        )
    };
    let Ok(rid) = RecordId::parse(id) else {
        return Err(problem(StatusCode::NOT_FOUND, "その作業はありません。"));
    };
    let journal = &st.app.gate.journal;
    // Closing remembers the revision staff acted on: a later one shows as an item again.
    let updated = journal
        .close_item(&rid)
        .map_err(|e| unavailable(&e.to_string()))?
        .ok_or_else(|| problem(StatusCode::NOT_FOUND, "その作業はありません。"))?;
    let rec = updated.map_err(|e| {
        problem(
            StatusCode::CONFLICT,
            &format!("まだ精算結果がないため、対応済みにできません：{e}"),
        )
    })?;
    st.append(&staff, AuditAction::Close, vec![SubjectId::Record(rid)])?;
    journal
        .commit()
        .await
        .map_err(|e| unavailable(&e.to_string()))?;
    st.app.gate.sync.local_change(rec);
    tracing::info!(record_id = %id, "queue item closed (page)");
    Ok(see_other("/worklist"))
}
