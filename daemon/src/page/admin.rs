//! The admin pages (issue #15): users and tokens, the access log, and asking the centre for
//! disaster mode (central search). Admin role only: anyone else gets a 403 page, and the page
//! chrome shows the links to admins only.
//!
//! Account changes go through the code the CLI uses (`AccountsDir::update` under the same lock,
//! the same `AccountsFile` methods, so the same history entries, with the signed-in admin as
//! `by`); the outage through the API's `declaration` and `ask_centre`. Every change is a POST
//! with the session's CSRF token and is in the access log, committed before the answer; reading
//! the access log is itself logged.
//!
//! It must never show or log a password hash, a token's hash, or a password; a new token's text
//! is shown once, on the answer to the POST that made it (`Cache-Control: no-store`), and never
//! again.

use std::net::IpAddr;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use super::{PageState, words};
use super::{Pairs, Peer, Shared, Staff, form, see_other, unavailable, unwrap_either};
use crate::auth::accounts::{AccountsFile, TokenRecord, UserRecord};
use crate::auth::audit::{AuditAction, AuditEntry, AuditQuery, SubjectId};
use crate::auth::{AccountName, AccountsError, NewToken, Password, Role, password};
use crate::journal::OutageState;

/// The access log page shows at most this many entries (the latest).
pub(super) const AUDIT_SHOWN: usize = 200;

const ACCOUNTS_TITLE: &str = "ユーザーとトークン";
const AUDIT_TITLE: &str = "アクセスログ";
const OUTAGE_TITLE: &str = "災害時モード（中央検索）";

/// An error beside an admin form: the field and the reason.
#[derive(Debug)]
struct Problem {
    status: StatusCode,
    field: &'static str,
    message: String,
}

impl Problem {
    fn new(status: StatusCode, field: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            status,
            field,
            message: message.into(),
        }
    }
}

impl PageState {
    /// The signed-in admin, or the answer to give instead (sign-in page, or 403 naming the role).
    fn admin(&self, headers: &HeaderMap, peer: Peer) -> Result<Staff, Response> {
        let staff = self.staff(headers, peer)?;
        self.require_admin(staff)
    }

    /// As [`PageState::admin`], for a POST: the form's `csrf` must be the session's.
    fn admin_posting(
        &self,
        headers: &HeaderMap,
        peer: Peer,
        pairs: &[(String, String)],
    ) -> Result<Staff, Response> {
        let staff = self.staff_posting(headers, peer, pairs)?;
        self.require_admin(staff)
    }

    fn require_admin(&self, staff: Staff) -> Result<Staff, Response> {
        match staff.actor.require(Role::Admin) {
            Ok(()) => Ok(staff),
            Err(e) => Err(self.page_status(
                StatusCode::FORBIDDEN,
                &staff,
                "admin",
                "管理者のみ",
                super::views::problem(&format!("このページは管理者（admin）だけが使えます：{e}")),
            )),
        }
    }
}

/// A user as listed (no hash).
struct UserRow<'a> {
    name: &'a str,
    role: Role,
    disabled: bool,
    created_at: DateTime<Utc>,
}

impl<'a> From<&'a UserRecord> for UserRow<'a> {
    fn from(u: &'a UserRecord) -> Self {
        UserRow {
            name: u.name.as_str(),
            role: u.role,
            disabled: u.disabled,
            created_at: u.created_at,
        }
    }
}

/// A token as listed (no hash).
struct TokenRow<'a> {
    name: &'a str,
    id: String,
    role: Role,
    revoked_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl<'a> From<&'a TokenRecord> for TokenRow<'a> {
    fn from(t: &'a TokenRecord) -> Self {
        TokenRow {
            name: t.name.as_str(),
            id: t.id.to_string(),
            role: t.role,
            revoked_at: t.revoked_at,
            created_at: t.created_at,
        }
    }
}

fn role_select(current: &str) -> Markup {
    html! {
        label { "役割"
            select name="role" {
                @for (v, l) in [("reception", "受付"), ("clinician", "医療職"), ("admin", "管理者")] {
                    option value=(v) selected[current == v] { (l) " (" (v) ")" }
                }
            }
        }
    }
}

fn problem_box(p: Option<&Problem>, form_of: &str) -> Markup {
    html! {
        @if let Some(p) = p.filter(|p| p.field.starts_with(form_of) || form_of.is_empty()) {
            p.error role="alert" data-error-field=(p.field.trim_start_matches(form_of)) { (p.message) }
        }
    }
}

/// The users and tokens, with the forms that change them. `problem.field` is prefixed by the form
/// it belongs to (`user:` / `token:`) so the error shows beside that form.
fn accounts_view(file: &AccountsFile, csrf: &str, problem: Option<&Problem>) -> Markup {
    let users: Vec<UserRow<'_>> = file.users.iter().map(UserRow::from).collect();
    let tokens: Vec<TokenRow<'_>> = file.tokens.iter().map(TokenRow::from).collect();
    html! {
        h2 { "ユーザー" }
        table.work id="users" {
            thead { tr { th { "名前" } th { "役割" } th { "状態" } th { "作成" } th {} } }
            tbody {
                @for u in &users {
                    tr data-user=(u.name) data-state=(if u.disabled { "disabled" } else { "enabled" }) {
                        td { (u.name) }
                        td { (u.role.as_str()) }
                        td { @if u.disabled { "無効" } @else { "有効" } }
                        td { (words::at(u.created_at)) }
                        td {
                            @if !u.disabled {
                                form method="post" action={ "/admin/users/" (u.name) "/disable" } {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button type="submit" { "無効にする" }
                                }
                            }
                        }
                    }
                }
            }
        }
        h3 { "ユーザーを追加" }
        (problem_box(problem, "user:"))
        form.card method="post" action="/admin/users" {
            input type="hidden" name="csrf" value=(csrf);
            label { "名前" input name="name" autocomplete="off" required; }
            (role_select("reception"))
            label { "パスワード（" (password::MIN_PASSWORD_CHARS) "文字以上）"
                input type="password" name="password" autocomplete="new-password" required; }
            label { "パスワード（確認）"
                input type="password" name="password_again" autocomplete="new-password" required; }
            button type="submit" { "追加する" }
        }
        h2 { "トークン（プログラム用）" }
        table.work id="tokens" {
            thead { tr { th { "名前" } th { "ID" } th { "役割" } th { "状態" } th { "作成" } th {} } }
            tbody {
                @for t in &tokens {
                    tr data-token=(t.name) data-state=(if t.revoked_at.is_some() { "revoked" } else { "active" }) {
                        td { (t.name) }
                        td { code { (t.id) } }
                        td { (t.role.as_str()) }
                        td {
                            @match t.revoked_at {
                                Some(r) => { "失効（" (words::at(r)) "）" }
                                None => { "有効" }
                            }
                        }
                        td { (words::at(t.created_at)) }
                        td {
                            @if t.revoked_at.is_none() {
                                form method="post" action={ "/admin/tokens/" (t.name) "/revoke" } {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button type="submit" { "失効させる" }
                                }
                            }
                        }
                    }
                }
            }
        }
        h3 { "トークンを発行" }
        (problem_box(problem, "token:"))
        form.card method="post" action="/admin/tokens" {
            input type="hidden" name="csrf" value=(csrf);
            label { "名前" input name="name" autocomplete="off" required; }
            (role_select("reception"))
            button type="submit" { "発行する" }
        }
    }
}

/// Runs an accounts change under the CLI's lock, off the async threads (flock and fsync block).
async fn change_accounts<T: Send + 'static>(
    st: &PageState,
    change: impl FnOnce(&mut AccountsFile) -> Result<T, AccountsError> + Send + 'static,
) -> Result<T, AccountsError> {
    let dir = st.auth.accounts_dir();
    match tokio::task::spawn_blocking(move || dir.update(change)).await {
        Ok(r) => r,
        Err(e) => Err(AccountsError::Corrupt {
            path: st.auth.accounts_dir().path(),
            reason: format!("the change did not finish: {e}"),
        }),
    }
}

fn accounts_problem(form_of: &'static str, e: &AccountsError) -> Problem {
    let name_field = if form_of == "user:" {
        "user:name"
    } else {
        "token:name"
    };
    let (status, field) = match e {
        AccountsError::BadName { .. } => (StatusCode::BAD_REQUEST, name_field),
        AccountsError::NameTaken(_) => (StatusCode::CONFLICT, name_field),
        AccountsError::UnknownUser(_) | AccountsError::UnknownToken(_) => {
            (StatusCode::NOT_FOUND, name_field)
        }
        _ => (StatusCode::SERVICE_UNAVAILABLE, form_of),
    };
    Problem::new(status, field, e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Users and tokens

pub(super) async fn get_accounts(State(st): Shared, headers: HeaderMap, peer: Peer) -> Response {
    let staff = match st.admin(&headers, peer) {
        Ok(s) => s,
        Err(r) => return r,
    };
    accounts_page(&st, &staff, None).await
}

async fn accounts_page(st: &PageState, staff: &Staff, problem: Option<Problem>) -> Response {
    let dir = st.auth.accounts_dir();
    let file = match tokio::task::spawn_blocking(move || dir.read()).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return unavailable(&e.to_string()),
        Err(e) => return unavailable(&e.to_string()),
    };
    let status = problem.as_ref().map_or(StatusCode::OK, |p| p.status);
    let body = accounts_view(&file, &staff.csrf, problem.as_ref());
    st.page_status(status, staff, "admin", ACCOUNTS_TITLE, body)
}

pub(super) async fn post_user(
    State(st): Shared,
    headers: HeaderMap,
    peer: Peer,
    Pairs(pairs): Pairs,
) -> Response {
    unwrap_either(add_user(&st, &headers, peer, &pairs).await)
}

/// The new user's name, role and password, checked as the CLI checks them.
fn read_new_user(pairs: &[(String, String)]) -> Result<(AccountName, Role, Password), Problem> {
    let bad = |field, m: String| Problem::new(StatusCode::BAD_REQUEST, field, m);
    let name = AccountName::parse(form::get(pairs, "name").unwrap_or("").trim())
        .map_err(|e| bad("user:name", format!("{e}（name）")))?;
    let role = read_role(pairs).map_err(|m| bad("user:role", m))?;
    let typed = form::get(pairs, "password").unwrap_or("");
    if form::get(pairs, "password_again").unwrap_or("") != typed {
        return Err(bad(
            "user:password_again",
            "2回入力したパスワードが一致しません（password_again）".into(),
        ));
    }
    let password = Password::new(typed.to_string())
        .map_err(|e| bad("user:password", format!("{e}（password）")))?;
    Ok((name, role, password))
}

fn read_role(pairs: &[(String, String)]) -> Result<Role, String> {
    form::get(pairs, "role")
        .unwrap_or("")
        .parse::<Role>()
        .map_err(|e| format!("{e}（role）"))
}

async fn add_user(
    st: &PageState,
    headers: &HeaderMap,
    peer: Peer,
    pairs: &[(String, String)],
) -> Result<Response, Response> {
    let staff = st.admin_posting(headers, peer, pairs)?;
    let (name, role, pw) = match read_new_user(pairs) {
        Ok(v) => v,
        Err(p) => return Ok(accounts_page(st, &staff, Some(p)).await),
    };
    // argon2id is slow on purpose: off the async threads.
    let hash = tokio::task::spawn_blocking(move || password::hash_password(&pw))
        .await
        .map_err(|e| unavailable(&e.to_string()))?
        .map_err(|e| unavailable(&e.to_string()))?;
    let by = staff.actor.name.to_string();
    let n = name.clone();
    if let Err(e) = change_accounts(st, move |f| f.add_user(n, role, hash, Utc::now(), &by)).await {
        return Ok(accounts_page(st, &staff, Some(accounts_problem("user:", &e))).await);
    }
    st.log(&staff, AuditAction::UserAdd, vec![SubjectId::Account(name)])
        .await?;
    Ok(see_other("/admin/accounts"))
}

pub(super) async fn post_disable(
    State(st): Shared,
    headers: HeaderMap,
    peer: Peer,
    Path(name): Path<String>,
    Pairs(pairs): Pairs,
) -> Response {
    unwrap_either(disable(&st, &headers, peer, &name, &pairs).await)
}

async fn disable(
    st: &PageState,
    headers: &HeaderMap,
    peer: Peer,
    name: &str,
    pairs: &[(String, String)],
) -> Result<Response, Response> {
    let staff = st.admin_posting(headers, peer, pairs)?;
    let by = staff.actor.name.to_string();
    let n = name.to_string();
    match change_accounts(st, move |f| f.disable_user(&n, Utc::now(), &by)).await {
        Ok(false) => {}
        Ok(true) => {
            let subject = AccountName::parse(name).map(SubjectId::Account).ok();
            st.log(
                &staff,
                AuditAction::UserDisable,
                subject.into_iter().collect(),
            )
            .await?;
        }
        Err(e) => return Ok(accounts_page(st, &staff, Some(accounts_problem("user:", &e))).await),
    }
    Ok(see_other("/admin/accounts"))
}

pub(super) async fn post_token(
    State(st): Shared,
    headers: HeaderMap,
    peer: Peer,
    Pairs(pairs): Pairs,
) -> Response {
    unwrap_either(add_token(&st, &headers, peer, &pairs).await)
}

async fn add_token(
    st: &PageState,
    headers: &HeaderMap,
    peer: Peer,
    pairs: &[(String, String)],
) -> Result<Response, Response> {
    let staff = st.admin_posting(headers, peer, pairs)?;
    let bad = |field, m: String| Problem::new(StatusCode::BAD_REQUEST, field, m);
    let read = AccountName::parse(form::get(pairs, "name").unwrap_or("").trim())
        .map_err(|e| bad("token:name", format!("{e}（name）")))
        .and_then(|n| Ok((n, read_role(pairs).map_err(|m| bad("token:role", m))?)));
    let (name, role) = match read {
        Ok(v) => v,
        Err(p) => return Ok(accounts_page(st, &staff, Some(p)).await),
    };
    let new = tokio::task::spawn_blocking(NewToken::generate)
        .await
        .map_err(|e| unavailable(&e.to_string()))?
        .map_err(|e| unavailable(&e.to_string()))?;
    let by = staff.actor.name.to_string();
    let (n, id, hash) = (name.clone(), new.id, new.hash.clone());
    if let Err(e) =
        change_accounts(st, move |f| f.add_token(n, role, id, hash, Utc::now(), &by)).await
    {
        return Ok(accounts_page(st, &staff, Some(accounts_problem("token:", &e))).await);
    }
    st.log(
        &staff,
        AuditAction::TokenAdd,
        vec![SubjectId::Account(name.clone())],
    )
    .await?;
    // Shown this once: the file keeps only its hash.
    let body = html! {
        p { "トークン " strong { (name.as_str()) } "（" (role.as_str()) "、ID " code { (new.id.to_string()) } "）を発行しました。" }
        p.warn { "このトークンが表示されるのは今回だけです。いまプログラムに設定してください。" }
        p { code id="new-token" data-token=(name.as_str()) { (new.text) } }
        p { a href="/admin/accounts" { "ユーザーとトークンへ戻る" } }
    };
    Ok(st.page_status(
        StatusCode::CREATED,
        &staff,
        "admin",
        "トークンを発行しました",
        body,
    ))
}

pub(super) async fn post_revoke(
    State(st): Shared,
    headers: HeaderMap,
    peer: Peer,
    Path(name): Path<String>,
    Pairs(pairs): Pairs,
) -> Response {
    unwrap_either(revoke(&st, &headers, peer, &name, &pairs).await)
}

async fn revoke(
    st: &PageState,
    headers: &HeaderMap,
    peer: Peer,
    name: &str,
    pairs: &[(String, String)],
) -> Result<Response, Response> {
    let staff = st.admin_posting(headers, peer, pairs)?;
    let by = staff.actor.name.to_string();
    let n = name.to_string();
    match change_accounts(st, move |f| f.revoke_token(&n, Utc::now(), &by)).await {
        Ok(false) => {}
        Ok(true) => {
            let subject = AccountName::parse(name).map(SubjectId::Account).ok();
            st.log(
                &staff,
                AuditAction::TokenRevoke,
                subject.into_iter().collect(),
            )
            .await?;
        }
        Err(e) => {
            return Ok(accounts_page(st, &staff, Some(accounts_problem("token:", &e))).await);
        }
    }
    Ok(see_other("/admin/accounts"))
}

// ---------------------------------------------------------------------------------------------
// The access log

/// `GET /admin/audit?actor=NAME&since=YYYY-MM-DD` (both optional).
#[derive(Debug, Deserialize)]
pub(super) struct AuditFilter {
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    since: Option<String>,
}

/// `since`: an RFC 3339 time or a date (its start, UTC). Empty: none.
fn parse_since(s: &str) -> Result<Option<DateTime<Utc>>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| Some(d.and_time(NaiveTime::MIN).and_utc()))
        .map_err(|_| format!("since: 「{s}」は日付（2026-04-01）か日時（RFC 3339）ではありません"))
}

fn action_words(a: AuditAction) -> &'static str {
    match a {
        AuditAction::Check => "資格確認",
        AuditAction::CheckRead => "確認結果の閲覧",
        AuditAction::Search => "患者検索",
        AuditAction::Provisional => "申立書の記録",
        AuditAction::QueueRead => "作業リストの閲覧",
        AuditAction::Export => "エクスポート",
        AuditAction::Close => "対応済み",
        AuditAction::ChooseCandidate => "候補の選択",
        AuditAction::AuditRead => "アクセスログの閲覧",
        AuditAction::OutageRequest => "災害時モードの申請",
        AuditAction::SignIn => "サインイン",
        AuditAction::SignOut => "サインアウト",
        AuditAction::UserAdd => "ユーザー追加",
        AuditAction::UserDisable => "ユーザー無効化",
        AuditAction::UserPasswd => "パスワード変更",
        AuditAction::TokenAdd => "トークン発行",
        AuditAction::TokenRevoke => "トークン失効",
        AuditAction::ProvisionalRead => "申立書の閲覧",
    }
}

/// The action as the API writes it (`user_add`, …), for `data-action`.
fn action_key(a: AuditAction) -> String {
    serde_json::to_value(a)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn subject_words(s: &SubjectId) -> String {
    match s {
        SubjectId::Check(id) => format!("確認 {id}"),
        SubjectId::Record(id) => format!("記録 {id}"),
        SubjectId::Person(id) => format!("人 {id}"),
        SubjectId::Account(n) => format!("アカウント {n}"),
    }
}

fn audit_view(entries: &[AuditEntry], actor: &str, since: &str, more: bool) -> Markup {
    html! {
        form.card method="get" action="/admin/audit" {
            label { "操作した人（actor）" input name="actor" value=(actor) autocomplete="off"; }
            label { "以降（since）" input name="since" value=(since) placeholder="2026-04-01"; }
            button type="submit" { "絞り込む" }
        }
        @if more { p { "新しいものから " (AUDIT_SHOWN) " 件を表示しています。絞り込むと前のものも見られます。" } }
        table.work id="audit" {
            thead { tr { th { "日時" } th { "操作した人" } th { "役割" } th { "操作" } th { "対象" } th { "接続元" } } }
            tbody {
                @for e in entries.iter().rev() {
                    tr data-actor=(e.actor.as_str()) data-action=(action_key(e.action)) {
                        td { (words::at(e.at)) }
                        td { (e.actor.as_str()) }
                        td { (e.role.as_str()) }
                        td { (action_words(e.action)) }
                        td { (e.subject.iter().map(subject_words).collect::<Vec<_>>().join("、")) }
                        td { (e.from.map_or_else(|| "—".to_string(), |a: IpAddr| a.to_string())) }
                    }
                }
            }
        }
    }
}

pub(super) async fn get_audit(
    State(st): Shared,
    headers: HeaderMap,
    peer: Peer,
    Query(q): Query<AuditFilter>,
) -> Response {
    let staff = match st.admin(&headers, peer) {
        Ok(s) => s,
        Err(r) => return r,
    };
    unwrap_either(audit(&st, &staff, &q).await)
}

async fn audit(st: &PageState, staff: &Staff, q: &AuditFilter) -> Result<Response, Response> {
    let actor_text = q.actor.as_deref().unwrap_or("").trim();
    let since_text = q.since.as_deref().unwrap_or("").trim();
    let refuse = |m: String| {
        st.page_status(
            StatusCode::BAD_REQUEST,
            staff,
            "audit",
            AUDIT_TITLE,
            html! {
                p.error role="alert" { (m) }
                (audit_view(&[], actor_text, since_text, false))
            },
        )
    };
    let actor = if actor_text.is_empty() {
        None
    } else {
        Some(AccountName::parse(actor_text).map_err(|e| refuse(format!("actor: {e}")))?)
    };
    let since = parse_since(since_text).map_err(refuse)?;
    let log = st.audit.clone();
    let query = AuditQuery {
        since,
        actor,
        limit: 0,
    };
    // The log is oldest first; the page shows the latest.
    let page = tokio::task::spawn_blocking(move || log.list(&query))
        .await
        .map_err(|e| unavailable(&e.to_string()))?
        .map_err(|e| unavailable(&e.to_string()))?;
    let more = page.entries.len() > AUDIT_SHOWN;
    let latest = &page.entries[page.entries.len().saturating_sub(AUDIT_SHOWN)..];
    let body = audit_view(latest, actor_text, since_text, more);
    st.log(staff, AuditAction::AuditRead, Vec::new()).await?;
    Ok(st.page(staff, "audit", AUDIT_TITLE, body))
}

// ---------------------------------------------------------------------------------------------
// Disaster mode

fn outage_view(
    o: Option<&OutageState>,
    csrf: &str,
    problem: Option<&Problem>,
    reason: &str,
) -> Markup {
    let now = Utc::now();
    // Central search answers while the centre's grant (its end is `until`) has not expired.
    let central_now = o.is_some_and(|o| o.active && o.central && o.until.is_some_and(|u| u > now));
    html! {
        section id="outage" data-active=(o.is_some_and(|o| o.active)) data-central=(central_now) {
            @match o {
                Some(o) if o.active => {
                    p { strong { "災害時モードを申請中です。" } }
                    dl {
                        dt { "理由" } dd { (o.reason) }
                        dt { "開始" } dd { (words::at(o.since)) }
                        dt { "期限" } dd { @match o.until { Some(u) => { (words::at(u)) } None => { "—" } } }
                        dt { "中央での記録" } dd { @if o.central { "記録済み" } @else { "未記録（中央に届いていません）" } }
                        dt { "中央の承認" } dd { @if o.until.is_some() { "承認済み" } @else if o.central { "承認待ち（中央が災害時モードを認めると中央検索が使えます）" } @else { "—" } }
                    }
                }
                _ => { p { "災害時モードは申請されていません。" } }
            }
            p.central {
                "中央検索は現在 " strong { @if central_now { "利用できます" } @else { "利用できません" } } "。"
            }
        }
        h2 { "中央に申請する" }
        (problem_box(problem, ""))
        form.card method="post" action="/admin/outage" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="active" value="true";
            label { "理由（必須、" (crate::api::MAX_OUTAGE_REASON_CHARS) "文字まで。中央に記録されます）"
                input name="reason" value=(reason) required maxlength=(crate::api::MAX_OUTAGE_REASON_CHARS); }
            button type="submit" { "災害時モードを申請する" }
        }
        @if o.is_some_and(|o| o.active) {
            form method="post" action="/admin/outage" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="active" value="false";
                button type="submit" { "災害時モードを終了する" }
            }
        }
    }
}

pub(super) async fn get_outage(State(st): Shared, headers: HeaderMap, peer: Peer) -> Response {
    let staff = match st.admin(&headers, peer) {
        Ok(s) => s,
        Err(r) => return r,
    };
    match st.app.gate.journal.outage() {
        Ok(o) => st.page(
            &staff,
            "outage",
            OUTAGE_TITLE,
            outage_view(o.as_ref(), &staff.csrf, None, ""),
        ),
        Err(e) => unavailable(&e.to_string()),
    }
}

pub(super) async fn post_outage(
    State(st): Shared,
    headers: HeaderMap,
    peer: Peer,
    Pairs(pairs): Pairs,
) -> Response {
    unwrap_either(outage(&st, &headers, peer, &pairs).await)
}

/// As `POST /v1/outage`: the same reader, the centre asked, the request logged, the state
/// recorded durably, then the state shown.
async fn outage(
    st: &PageState,
    headers: &HeaderMap,
    peer: Peer,
    pairs: &[(String, String)],
) -> Result<Response, Response> {
    let staff = st.admin_posting(headers, peer, pairs)?;
    let reason = form::get(pairs, "reason").unwrap_or("");
    let active = match form::get(pairs, "active") {
        Some("true") => serde_json::Value::Bool(true),
        Some("false") => serde_json::Value::Bool(false),
        other => serde_json::Value::from(other.unwrap_or("")),
    };
    let body = serde_json::json!({ "active": active, "reason": reason });
    let gate = &st.app.gate;
    let (active, reason_ok) = match crate::api::declaration(&body) {
        Ok(v) => v,
        Err(e) => {
            let p = Problem::new(
                StatusCode::BAD_REQUEST,
                "",
                format!("{}（{}）", e.message, e.field),
            );
            let o = gate
                .journal
                .outage()
                .map_err(|e| unavailable(&e.to_string()))?;
            return Ok(st.page_status(
                p.status,
                &staff,
                "outage",
                OUTAGE_TITLE,
                outage_view(o.as_ref(), &staff.csrf, Some(&p), reason),
            ));
        }
    };
    let (state, note) = crate::api::ask_centre(gate, active, reason_ok)
        .await
        .map_err(|e| unavailable(&e.to_string()))?;
    st.append(&staff, AuditAction::OutageRequest, Vec::new())?;
    gate.journal
        .set_outage(&state)
        .await
        .map_err(|e| unavailable(&e.to_string()))?;
    tracing::warn!(
        active,
        central = state.central,
        "outage {} (page)",
        if active { "declared" } else { "ended" }
    );
    let body = html! {
        @if let Some(n) = &note { p.warn role="alert" { (n) } }
        (outage_view(Some(&state), &staff.csrf, None, ""))
    };
    Ok(st.page(&staff, "outage", OUTAGE_TITLE, body))
}
