//! Who is asking, for every `/v1/*` route: the guard ([`needs`]) takes a bearer token
//! (`Authorization: Bearer onshi_…`) or the session cookie [`SESSION_COOKIE`], checks the role the
//! route needs, and hands the handler a [`Caller`] (actor and client address) for the access log.
//! A session's state changes (POST) must carry its CSRF token (`X-CSRF-Token`, or the form field
//! `csrf` on `POST /logout`); a bearer token needs none (a browser never sends one by itself).
//! `POST /login` and `POST /logout` sign in and out.
//!
//! This module must never log or echo a password, a token, a cookie or a CSRF token.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{FromFnLayer, Next};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, Audit};
use crate::auth::audit::{AuditAction, SubjectId};
use crate::auth::session::{SessionView, csrf_matches};
use crate::auth::{Actor, AuthError, Authenticator, Role, SignInError};

/// The session cookie's name (HttpOnly, SameSite=Strict, Path=/).
pub const SESSION_COOKIE: &str = "onshi_session";
/// The header a session's state change carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Who made the request, as the access log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub actor: Actor,
    /// The client's address (none when the request did not come over a socket, e.g. in tests).
    pub from: Option<IpAddr>,
}

/// The guard's state: the authenticator and the role the route needs.
#[derive(Debug, Clone)]
pub struct Guard {
    auth: Authenticator,
    needed: Role,
}

type GuardFn = fn(State<Guard>, Request, Next) -> GuardFuture;
type GuardFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>;

/// The layer a route takes to need `role`: `get(h).route_layer(needs(&auth, Role::Admin))`.
pub fn needs(
    auth: &Authenticator,
    role: Role,
) -> FromFnLayer<GuardFn, Guard, (State<Guard>, Request)> {
    axum::middleware::from_fn_with_state(
        Guard {
            auth: auth.clone(),
            needed: role,
        },
        |s, r, n| Box::pin(guard(s, r, n)) as GuardFuture,
    )
}

/// The client's address, when the server gave it (`http.rs` does for every connection).
pub fn client_address(req_extensions: &axum::http::Extensions) -> Option<IpAddr> {
    req_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

async fn guard(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    let from = client_address(req.extensions());
    let actor = match authenticate(&g.auth, req.method(), req.headers(), Instant::now()).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = actor.require(g.needed) {
        return auth_error(e).into_response();
    }
    req.extensions_mut().insert(Caller { actor, from });
    next.run(req).await
}

/// The value of the session cookie, if the request has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// Whether the method changes something (and so, under a session, needs the CSRF token).
fn changes_state(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The request's actor: a bearer token if there is an `Authorization` header, else the session
/// cookie (whose state changes must carry the CSRF token in `X-CSRF-Token`). Pure but for the
/// authenticator's lookups; the role is checked by the caller.
pub async fn authenticate(
    auth: &Authenticator,
    method: &Method,
    headers: &HeaderMap,
    now: Instant,
) -> Result<Actor, ApiError> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let token = v
            .to_str()
            .ok()
            .and_then(|s| {
                let (scheme, rest) = s.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .ok_or_else(|| ApiError {
                status: StatusCode::UNAUTHORIZED,
                code: "unauthenticated".into(),
                field: Some("Authorization".into()),
                message:
                    "Authorization: must be \"Bearer TOKEN\" (a token from onshi-edge token add)"
                        .into(),
            })?;
        return auth.authenticate_token(token).await.map_err(auth_error);
    }
    let Some(cookie) = session_cookie(headers) else {
        return Err(auth_error(AuthError::Missing));
    };
    let (actor, csrf) = auth.session(cookie, now).map_err(auth_error)?;
    if changes_state(method) {
        let presented = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !csrf_ok(&actor, &csrf, presented) {
            return Err(csrf_refused());
        }
    }
    Ok(actor)
}

fn csrf_ok(actor: &Actor, csrf: &str, presented: &str) -> bool {
    let view = SessionView {
        user: actor.name.clone(),
        role: actor.role,
        csrf: csrf.to_string(),
    };
    !presented.is_empty() && csrf_matches(&view, presented)
}

fn csrf_refused() -> ApiError {
    ApiError {
        status: StatusCode::FORBIDDEN,
        code: "csrf_invalid".into(),
        field: Some("X-CSRF-Token".into()),
        message: "X-CSRF-Token: a signed-in change must carry the session's CSRF token (the form field csrf on the page)".into(),
    }
}

/// A refusal in the envelope: 401 `unauthenticated` (naming `Authorization`), 403 `forbidden`
/// (naming the role needed), 503 `accounts_unavailable`.
pub fn auth_error(e: AuthError) -> ApiError {
    let field = match &e {
        AuthError::Missing | AuthError::BadToken | AuthError::Session(_) => {
            Some("Authorization".to_string())
        }
        _ => None,
    };
    ApiError {
        status: StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED),
        code: e.code().to_string(),
        field,
        message: e.to_string(),
    }
}

/// `POST /login`'s body, as a form (`user`, `password`) or JSON.
#[derive(Deserialize)]
pub struct SignIn {
    user: String,
    password: String,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn").field("user", &self.user).finish()
    }
}

/// `POST /login` answered to a program (JSON): who signed in and the CSRF token for its POSTs.
#[derive(Debug, Serialize)]
pub struct SignedIn {
    pub user: String,
    pub role: Role,
    pub csrf: String,
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The `Set-Cookie` of a new session (no `Max-Age`: it ends with the browser, or earlier on the
/// server after the idle time).
fn session_set_cookie(value: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("onshi_session=; Path=/"))
}

fn cleared_cookie() -> HeaderValue {
    HeaderValue::from_static("onshi_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// `POST /login` (`user`, `password`; form-encoded as the page posts it, or JSON): a session
/// cookie, then 303 to `/` for a form, or 200 `{"user","role","csrf"}` for JSON. A wrong password,
/// an unknown or disabled user: 401, the same for all three. Too many failures for the user or the
/// address: 429 with `Retry-After`.
pub async fn post_login(
    State(auth): State<Authenticator>,
    State(audit): State<Audit>,
    req: Request,
) -> Result<Response, ApiError> {
    let from = client_address(req.extensions());
    let form = is_form(req.headers());
    let body: SignIn = if form {
        axum::Form::<SignIn>::from_request(req, &())
            .await
            .map_err(|e| sign_in_field_error(&e.body_text()))?
            .0
    } else {
        let bytes = axum::body::Bytes::from_request(req, &())
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
        serde_json::from_slice(&bytes).map_err(|e| sign_in_field_error(&e.to_string()))?
    };
    let address = from.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let session = match auth
        .sign_in(&body.user, body.password, address, Instant::now())
        .await
    {
        Ok(s) => s,
        // A person at the page gets the form again with what went wrong; a program the envelope.
        Err(e) if form => return Ok(crate::page::login_failed(&e, &body.user)),
        Err(e) => {
            let secs = e.retry_after();
            return Ok(with_retry_after(sign_in_error(e).into_response(), secs));
        }
    };
    let (actor, csrf) = auth
        .session(&session.cookie, Instant::now())
        .map_err(auth_error)?;
    let name = actor.name.clone();
    audit
        .read(
            &Caller { actor, from },
            AuditAction::SignIn,
            vec![SubjectId::Account(name.clone())],
        )
        .await?;
    tracing::info!(user = %name, "signed in");
    let mut resp = if form {
        Redirect::to("/").into_response()
    } else {
        let role = auth
            .session(&session.cookie, Instant::now())
            .map_err(auth_error)?
            .0
            .role;
        axum::Json(SignedIn {
            user: name.to_string(),
            role,
            csrf,
        })
        .into_response()
    };
    resp.headers_mut()
        .append(header::SET_COOKIE, session_set_cookie(&session.cookie));
    Ok(resp)
}

fn sign_in_field_error(detail: &str) -> ApiError {
    let field = if detail.contains("password") {
        "password"
    } else {
        "user"
    };
    ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "missing_field".into(),
        field: Some(field.into()),
        message: format!("{field}: sign in with the fields user and password"),
    }
}

fn sign_in_error(e: SignInError) -> ApiError {
    ApiError {
        status: StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::UNAUTHORIZED),
        code: e.code().to_string(),
        field: matches!(e, SignInError::BadCredentials).then(|| "password".to_string()),
        message: e.to_string(),
    }
}

/// The body of `POST /logout` from a form (the CSRF token as a field).
#[derive(Deserialize)]
struct SignOutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout`: ends the session (CSRF token in `X-CSRF-Token` or the form field `csrf`) and
/// clears the cookie; 303 to `/login` for a form, 204 otherwise. Without a valid session: 401.
pub async fn post_logout(
    State(auth): State<Authenticator>,
    State(audit): State<Audit>,
    req: Request,
) -> Result<Response, ApiError> {
    let from = client_address(req.extensions());
    let form = is_form(req.headers());
    let cookie = session_cookie(req.headers())
        .map(str::to_string)
        .ok_or_else(|| auth_error(AuthError::Missing))?;
    let (actor, csrf) = auth.session(&cookie, Instant::now()).map_err(auth_error)?;
    let header_token = req
        .headers()
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let presented = match header_token {
        Some(t) => t,
        None if form => axum::Form::<SignOutForm>::from_request(req, &())
            .await
            .map(|f| f.0.csrf)
            .unwrap_or_default(),
        None => String::new(),
    };
    if !csrf_ok(&actor, &csrf, &presented) {
        return Err(csrf_refused());
    }
    auth.sign_out(&cookie);
    let name = actor.name.clone();
    audit
        .read(
            &Caller { actor, from },
            AuditAction::SignOut,
            vec![SubjectId::Account(name)],
        )
        .await?;
    let mut resp = if form {
        Redirect::to("/login").into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    };
    resp.headers_mut()
        .append(header::SET_COOKIE, cleared_cookie());
    Ok(resp)
}

/// A throttled sign-in's answer carries `Retry-After`.
fn with_retry_after(mut resp: Response, secs: Option<u64>) -> Response {
    if let Some(s) = secs
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; onshi_session=abc; b=2"),
        );
        assert_eq!(session_cookie(&h), Some("abc"));
        h.insert(header::COOKIE, HeaderValue::from_static("onshi_session="));
        assert_eq!(session_cookie(&h), None);
    }

    #[test]
    fn the_cookie_is_http_only_same_site_strict_for_the_whole_site() {
        let c = session_set_cookie("xyz");
        assert_eq!(
            c.to_str().unwrap(),
            "onshi_session=xyz; HttpOnly; SameSite=Strict; Path=/"
        );
    }
}
