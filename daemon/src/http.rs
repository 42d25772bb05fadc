//! The edge's HTTP server: its own accept loop (axum::serve has no timeouts and no limits), with
//! a header-read timeout that also closes idle keep-alive connections, a connection limit within
//! the process's file descriptors minus a reserve, a per-address limit, and the checks every
//! request passes before the API sees it: the `Host` is one of the edge's names or addresses, a
//! state change carries no foreign `Origin`, a JSON endpoint gets `application/json`, the target
//! and the headers are of a sane size. Every refusal is the JSON error envelope, including what
//! axum answers in plain text and what hyper writes by itself for a request it cannot parse.
//! With a certificate (`--http-cert`, `--http-key`) every connection is TLS (rustls on the ring
//! provider, through tokio-rustls), its handshake bounded by the header timeout.
//!
//! It must never accept a connection it has no descriptor budget for (the journal's and the
//! mailbox's files come first), never build a TLS configuration on rustls' process-wide default
//! provider (two providers compiled in make rustls panic), and never decide anything about checks
//! or records.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;

use crate::api::ApiError;
use crate::config::HttpSettings;

/// Descriptors kept for everything but HTTP connections: the journal's and replica's files, the
/// mailbox's watch and its workers' files, the QUIC socket, logs (a few dozen in practice).
pub const FD_RESERVE: u64 = 256;
/// The longest request target we take (a record id is 32 characters); answered 414 in JSON.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) we take; answered 431 in JSON.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The most headers we take; answered 431 in JSON.
pub const MAX_HEADERS: usize = 64;
/// hyper's own limits, above ours, so that ours answer first; past these hyper answers by itself
/// (rewritten to JSON by [`Wire`]).
const HYPER_MAX_BUF: usize = 64 * 1024;
const HYPER_MAX_HEADERS: usize = 128;

/// Why the HTTPS certificate or key cannot be used; `setting` names the flag to fix.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct TlsSetupError {
    pub setting: &'static str,
    pub message: String,
}

/// The HTTPS server configuration from PEM files: `cert` holds the server's certificate first,
/// then any intermediate certificates; `key` its private key (PKCS#8, PKCS#1 or SEC1). TLS 1.2
/// and 1.3, ALPN `http/1.1`, the ring provider only.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let cert_err = |message: String| TlsSetupError {
        setting: "--http-cert",
        message: format!("{}: {message}", cert.display()),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("holds no PEM certificate".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsSetupError {
        setting: "--http-key",
        message: format!("{}: {e}", key.display()),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsSetupError {
            setting: "--http-key",
            message: format!(
                "{} with {}: {e} (is it the certificate's key?)",
                key.display(),
                cert.display()
            ),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Raises the soft limit of open files to the hard limit (safe: rustix) and returns the soft
/// limit now in force (`None`: unlimited).
pub fn raise_nofile_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let l = getrlimit(Resource::Nofile);
    if l.current != l.maximum {
        let raised = Rlimit {
            current: l.maximum,
            maximum: l.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::info!(from = ?l.current, to = ?l.maximum, "open-file limit raised to its hard limit");
                return l.maximum;
            }
            Err(e) => {
                tracing::warn!(error = %e, soft = ?l.current, "cannot raise the open-file limit")
            }
        }
    }
    l.current
}

/// How many HTTP connections may be open at once: the configured number, but never more than
/// the file limit leaves after [`FD_RESERVE`] (at least 16, so the API stays reachable).
#[must_use]
pub fn connection_budget(nofile: Option<u64>, configured: usize) -> usize {
    let fds = nofile.map_or(u64::MAX, |n| n.saturating_sub(FD_RESERVE).max(16));
    configured.min(usize::try_from(fds).unwrap_or(usize::MAX))
}

/// The names and addresses the API answers to.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// The `--http` address (when not a wildcard).
    bound: Option<IpAddr>,
    /// `http_hosts`, lower case.
    names: Vec<String>,
}

/// Loopback names that never leave the machine (a rebinding attack needs a name it controls).
const LOOPBACK_NAMES: &[&str] = &["localhost", "localhost.localdomain", "ip6-localhost"];

impl HostPolicy {
    pub fn new(http: SocketAddr, names: &[String]) -> Self {
        HostPolicy {
            bound: Some(http.ip()).filter(|ip| !ip.is_unspecified()),
            names: names.to_vec(),
        }
    }

    /// Whether a `Host` value (`name`, `name:port`, `[v6]:port`) names this edge as reached on
    /// `local` (the address the client connected to). The port is not compared: a rebinding page
    /// gets the attacker's name in `Host`, whatever the port.
    #[must_use]
    pub fn allows_host(&self, host: &str, local: IpAddr) -> bool {
        let Some(name) = host_part(host) else {
            return false;
        };
        if let Ok(ip) = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            let ip = ip.to_canonical();
            return ip.is_loopback() || ip == local.to_canonical() || Some(ip) == self.bound;
        }
        let name = name.trim_end_matches('.');
        LOOPBACK_NAMES.iter().any(|n| name.eq_ignore_ascii_case(n))
            || self.names.iter().any(|n| name.eq_ignore_ascii_case(n))
    }

    /// Whether an `Origin` is this edge's own (a page it served): an allowed host on the port the
    /// client connected to. `null` (a sandboxed or file page) is foreign.
    #[must_use]
    pub fn allows_origin(&self, origin: &str, local: SocketAddr) -> bool {
        let (scheme, rest) = match origin.split_once("://") {
            Some(x) => x,
            None => return false,
        };
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "http" => 80,
            "https" => 443,
            _ => return false,
        };
        if rest.contains('/') || rest.is_empty() {
            return false;
        }
        let port = match rest.rsplit_once(':') {
            Some((_, p)) if !rest.ends_with(']') => match p.parse::<u16>() {
                Ok(p) => p,
                Err(_) => return false,
            },
            _ => default_port,
        };
        port == local.port() && self.allows_host(rest, local.ip())
    }
}

/// The host of a `Host` value, without its port; `None` if it is not `host[:port]`.
fn host_part(host: &str) -> Option<&str> {
    let host = host.trim();
    if host.is_empty() || host.contains(['/', '@', ' ', '\\']) {
        return None;
    }
    if host.starts_with('[') {
        let end = host.find(']')?;
        let rest = &host[end + 1..];
        if !(rest.is_empty() || rest.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return Some(&host[..=end]);
    }
    match host.split_once(':') {
        Some((name, port)) if is_port(port) && !name.is_empty() => Some(name),
        Some(_) => None,
        None => Some(host),
    }
}

fn is_port(p: &str) -> bool {
    p.parse::<u16>().is_ok()
}

/// Methods that change state: these need JSON and no foreign `Origin`.
fn changes_state(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Whether a `Content-Type` is JSON (`application/json`, any parameters, any case).
#[must_use]
pub fn is_json_media_type(value: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether a `Content-Type` is an HTML form's (`application/x-www-form-urlencoded`).
pub fn is_form_media_type(value: &str) -> bool {
    value.split(';').next().is_some_and(|t| {
        t.trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    })
}

fn refuse(status: StatusCode, code: &str, field: &str, message: String) -> ApiError {
    ApiError {
        status,
        code: code.to_string(),
        field: Some(field.to_string()),
        message,
    }
}

/// The checks before routing, in order: sizes, `Host`, `Origin`, `Content-Type`. Pure and cheap:
/// a walk over the headers, no allocation unless refused.
pub fn precheck(
    method: &Method,
    path: &str,
    uri_len: usize,
    headers: &HeaderMap,
    authority: Option<&str>,
    hosts: &HostPolicy,
    local: SocketAddr,
) -> Result<(), ApiError> {
    if uri_len > MAX_URI_BYTES {
        return Err(refuse(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            "",
            format!("the request target is {uri_len} bytes; at most {MAX_URI_BYTES}"),
        ));
    }
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return Err(refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            "",
            format!(
                "{} headers of {bytes} bytes; at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes",
                headers.len()
            ),
        ));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(authority);
    match host {
        Some(h) if hosts.allows_host(h, local.ip()) => {}
        Some(_) => {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                "Host",
                "Host: not a name of this edge; add it with http_hosts (--http-host) if it is one"
                    .into(),
            ));
        }
        None => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "missing_field",
                "Host",
                "Host: is required".into(),
            ));
        }
    }
    if !changes_state(method) {
        return Ok(());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let ok = origin.to_str().is_ok_and(|o| hosts.allows_origin(o, local));
        if !ok {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "Origin",
                "Origin: a page from another site cannot change anything here".into(),
            ));
        }
    }
    // Every POST of the API takes JSON (other methods that change state have no route: 405);
    // outside `/v1/` (the page's forms, `/login`, `/logout`) a form-encoded body is taken too.
    if method != Method::POST {
        return Ok(());
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            is_json_media_type(v) || (!path.starts_with("/v1/") && is_form_media_type(v))
        });
    if !json {
        let got = headers
            .get(header::CONTENT_TYPE)
            .map_or("none".to_string(), |v| {
                String::from_utf8_lossy(v.as_bytes())
                    .chars()
                    .take(60)
                    .collect()
            });
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Content-Type",
            format!("Content-Type: must be application/json (got {got})"),
        ));
    }
    Ok(())
}

/// The envelope's code for a status that axum or hyper produced without one.
fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        431 => "headers_too_large",
        503 => "unavailable",
        s if s >= 500 => "internal_error",
        _ => "bad_request",
    }
}

fn default_message(status: StatusCode) -> String {
    match status.as_u16() {
        404 => "no such endpoint; see GET /v1/status".into(),
        405 => "this endpoint does not take this method (see the Allow header)".into(),
        408 => "the request's headers did not arrive in time".into(),
        413 => "the request body is too large".into(),
        414 => "the request target is too long".into(),
        431 => "the request's headers are too large".into(),
        _ => status
            .canonical_reason()
            .unwrap_or("the request was refused")
            .to_string(),
    }
}

fn is_json_response(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json_media_type)
}

/// The reception page's own answers (its error pages are HTML for the browser).
fn is_html_response(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/html"))
}

/// An error answer that is not JSON (axum's 405, 413, path rejections …) in the envelope; the
/// original text becomes the message. Success answers pass untouched.
pub async fn envelope(resp: Response<Body>) -> Response<Body> {
    let status = resp.status();
    if status.as_u16() < 400 || is_json_response(resp.headers()) || is_html_response(resp.headers())
    {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        default_message(status)
    } else {
        text
    };
    let mut out = axum::response::IntoResponse::into_response(ApiError {
        status,
        code: code_for(status).to_string(),
        field: None,
        message,
    });
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}

/// The JSON error envelope as raw HTTP/1.1, for answers written outside hyper.
fn raw_answer(status: u16, code: &str, message: &str) -> Vec<u8> {
    let body =
        serde_json::json!({"error": {"code": code, "field": null, "message": message}}).to_string();
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// hyper's own answer to a request it could not parse: a 4xx head with no content type (every
/// answer of ours has one). Cheap for the others: a prefix test first.
fn automatic_error_status(buf: &[u8]) -> Option<u16> {
    if buf.len() < 12 || !buf.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(buf.len());
    let head = &buf[..head_end];
    let has_type = head
        .windows(14)
        .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-type"));
    if has_type {
        return None;
    }
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
}

/// The connection's socket as hyper sees it: hyper's own error answers are rewritten into the
/// JSON envelope, and whether bytes arrived since the last answer is kept (a header timeout then
/// means a request was cut short, answered 408, rather than an idle connection, just closed).
#[derive(Debug)]
struct Wire<T> {
    inner: T,
    /// The JSON answer being written in place of hyper's, and how much of it is written.
    replacing: Option<(Vec<u8>, usize)>,
    read_since_write: bool,
}

impl<T: AsyncRead + Unpin> AsyncRead for Wire<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.read_since_write = true;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Wire<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none()
            && let Some(status) = automatic_error_status(buf)
        {
            let code = code_for(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST));
            let message = match status {
                400 => "the request is not valid HTTP".to_string(),
                s => default_message(StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_REQUEST)),
            };
            this.replacing = Some((raw_answer(status, code, &message), 0));
        }
        if let Some((bytes, at)) = &mut this.replacing {
            while *at < bytes.len() {
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &bytes[*at..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *at += n;
            }
            this.replacing = None;
            this.read_since_write = false;
            // hyper's bytes count as written: ours replaced them.
            return Poll::Ready(Ok(buf.len()));
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if n > 0 {
            this.read_since_write = false;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs.iter().find(|b| !b.is_empty());
        let this = self.get_mut();
        if let Some(first) = first
            && (this.replacing.is_some() || automatic_error_status(first).is_some())
        {
            return Pin::new(this).poll_write(cx, first);
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        if n > 0 {
            this.read_since_write = false;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Open connections, in total and per address.
#[derive(Debug)]
struct Admission {
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    max_total: usize,
    max_per_address: usize,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Total,
    PerAddress,
}

impl Admission {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut g = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per) = &mut *g;
        if *total >= self.max_total {
            return Err(Refusal::Total);
        }
        let n = per.entry(ip).or_default();
        if *n >= self.max_per_address {
            return Err(Refusal::PerAddress);
        }
        *n += 1;
        *total += 1;
        Ok(Slot {
            admission: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self
            .admission
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (total, per) = &mut *g;
        *total = total.saturating_sub(1);
        if let Some(n) = per.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.ip);
            }
        }
    }
}

/// What every connection task shares.
#[derive(Debug)]
struct Shared {
    app: Router,
    hosts: HostPolicy,
    settings: HttpSettings,
    /// HTTPS: every connection starts with a TLS handshake.
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// Serves `app` on `listener` until `shutdown`, then lets the open connections finish their
/// request in flight (idle ones are closed at once) and returns when all are closed. With `tls`,
/// HTTPS.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: HttpSettings,
    tls: Option<Arc<rustls::ServerConfig>>,
    nofile: Option<u64>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let bound = listener.local_addr()?;
    let max_total = connection_budget(nofile, settings.max_connections);
    tracing::info!(
        max_connections = max_total,
        per_address = settings.max_connections_per_address,
        header_timeout_ms = settings.header_timeout.as_millis() as u64,
        "HTTP limits"
    );
    let admission = Arc::new(Admission {
        open: Mutex::default(),
        max_total,
        max_per_address: settings.max_connections_per_address.min(max_total),
    });
    let shared = Arc::new(Shared {
        app,
        hosts: HostPolicy::new(bound, &settings.hosts),
        settings,
        tls,
    });
    let (close_tx, close_rx) = tokio::sync::watch::channel(false);
    let mut refusing = false;
    let mut accept_failing = false;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                if accept_failing {
                    tracing::info!("accepting HTTP connections again");
                    accept_failing = false;
                }
                x
            }
            Err(e) => {
                // Out of descriptors (or a connection reset before accept): wait a little rather
                // than spin; the reserve keeps the journal writing meanwhile.
                if !accept_failing {
                    tracing::warn!(error = %e, "cannot accept HTTP connections");
                    accept_failing = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match admission.admit(peer.ip()) {
            Ok(s) => {
                if refusing {
                    tracing::info!("HTTP connections admitted again");
                    refusing = false;
                }
                s
            }
            Err(why) => {
                if !refusing {
                    tracing::warn!(peer = %peer.ip(), limit = ?why, "HTTP connection refused: too many open");
                    refusing = true;
                }
                let message = match why {
                    Refusal::Total => "too many connections open; try again shortly",
                    Refusal::PerAddress => {
                        "too many connections open from this address; close idle ones and try again"
                    }
                };
                // A best-effort answer: the socket buffer of a new connection takes it whole. Over
                // TLS nothing can be said before a handshake we have no budget for: just closed.
                if shared.tls.is_none() {
                    let _ = stream.try_write(&raw_answer(503, "too_many_connections", message));
                }
                continue;
            }
        };
        let local = stream.local_addr().unwrap_or(bound);
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let close = close_rx.clone();
        tokio::spawn(async move {
            let Some(config) = shared.tls.clone() else {
                return connection(stream, local, peer, shared, slot, close).await;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            // The handshake gets the header timeout: a client that connects and says nothing
            // holds its place no longer than an idle plain connection would.
            let timeout = shared.settings.header_timeout;
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => connection(tls, local, peer, shared, slot, close).await,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                }
                Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    drop(close_rx);
    let _ = close_tx.send(true);
    // Every connection task holds a receiver: this returns once all have ended.
    close_tx.closed().await;
    Ok(())
}

/// One connection: hyper's HTTP/1.1 with our timer and limits, the checks before the router,
/// the envelope after it, and a graceful close on shutdown.
async fn connection<S>(
    stream: S,
    local: SocketAddr,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _slot: Slot,
    mut close: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Wire {
        inner: stream,
        replacing: None,
        read_since_write: false,
    });
    let svc_shared = shared.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shared = svc_shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, local, peer, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.settings.header_timeout)
        .max_buf_size(HYPER_MAX_BUF)
        .max_headers(HYPER_MAX_HEADERS)
        .keep_alive(true);
    let mut conn = builder.serve_connection(io, svc);
    let result = loop {
        if *close.borrow() {
            Pin::new(&mut conn).graceful_shutdown();
            break (&mut conn).await;
        }
        tokio::select! {
            r = &mut conn => break r,
            changed = close.changed() => {
                if changed.is_err() {
                    Pin::new(&mut conn).graceful_shutdown();
                    break (&mut conn).await;
                }
            }
        }
    };
    if let Err(e) = result
        && e.is_timeout()
    {
        // hyper closes a connection whose headers are late without a word: say why, in JSON, if
        // a request had begun; an idle keep-alive connection is just closed.
        let wire = conn.into_parts().io.into_inner();
        if wire.read_since_write {
            let mut stream = wire.inner;
            let answer = raw_answer(
                408,
                "request_timeout",
                &default_message(StatusCode::REQUEST_TIMEOUT),
            );
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                let _ = stream.write_all(&answer).await;
                let _ = stream.shutdown().await;
            })
            .await;
        }
    }
}

async fn handle(
    shared: &Shared,
    local: SocketAddr,
    peer: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<Body> {
    // The client's address, for the access log (`api::auth::client_address`).
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if let Err(e) = precheck(
        req.method(),
        req.uri().path(),
        uri_len,
        req.headers(),
        req.uri().authority().map(|a| a.as_str()),
        &shared.hosts,
        local,
    ) {
        return axum::response::IntoResponse::into_response(e);
    }
    let mut req = req.map(Body::new);
    // The client's address, for the access log.
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    let mut app = shared.app.clone();
    let resp = match tower_service::Service::call(&mut app, req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    envelope(resp).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HostPolicy {
        HostPolicy::new(
            "192.168.1.10:7600".parse().unwrap(),
            &["onshi.clinic.lan".to_string()],
        )
    }

    #[test]
    fn hosts_are_the_edges_names_and_addresses() {
        let p = policy();
        let lan: IpAddr = "192.168.1.10".parse().unwrap();
        for ok in [
            "localhost:7600",
            "LOCALHOST",
            "127.0.0.1:7600",
            "[::1]:7600",
            "192.168.1.10:7600",
            "onshi.clinic.lan:7600",
            "Onshi.Clinic.Lan.",
        ] {
            assert!(p.allows_host(ok, lan), "{ok}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:7600",
            "192.168.1.11:7600",
            "localhost.attacker.example",
            "",
            "a b",
            "localhost:99999",
            "user@localhost",
        ] {
            assert!(!p.allows_host(bad, lan), "{bad}");
        }
        // A wildcard bind: the address the client reached is the edge's.
        let any = HostPolicy::new("0.0.0.0:7600".parse().unwrap(), &[]);
        assert!(any.allows_host("10.0.0.5:7600", "10.0.0.5".parse().unwrap()));
        assert!(!any.allows_host("10.0.0.6:7600", "10.0.0.5".parse().unwrap()));
    }

    #[test]
    fn origins_must_be_the_edges_own() {
        let p = policy();
        let local: SocketAddr = "192.168.1.10:7600".parse().unwrap();
        assert!(p.allows_origin("http://192.168.1.10:7600", local));
        assert!(p.allows_origin("http://localhost:7600", local));
        assert!(p.allows_origin("http://onshi.clinic.lan:7600", local));
        for bad in [
            "null",
            "http://attacker.example",
            "http://localhost:3000",
            "http://localhost",
            "https://onshi.clinic.lan",
            "file://",
            "http://localhost:7600/x",
        ] {
            assert!(!p.allows_origin(bad, local), "{bad}");
        }
    }

    #[test]
    fn budget_keeps_a_reserve_of_descriptors() {
        assert_eq!(connection_budget(Some(1024), 4096), 1024 - 256);
        assert_eq!(connection_budget(Some(100), 4096), 16);
        assert_eq!(connection_budget(Some(1_000_000), 4096), 4096);
        assert_eq!(connection_budget(None, 4096), 4096);
    }

    #[test]
    fn json_media_types() {
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type("Application/JSON; charset=utf-8"));
        assert!(!is_json_media_type("text/plain"));
        assert!(!is_json_media_type("application/x-www-form-urlencoded"));
        assert!(!is_json_media_type("application/jsonp"));
    }

    #[test]
    fn hypers_own_error_heads_are_recognised_and_ours_are_not() {
        assert_eq!(
            automatic_error_status(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n"
            ),
            Some(431)
        );
        assert_eq!(
            automatic_error_status(
                b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\n{...}"
            ),
            None
        );
        assert_eq!(
            automatic_error_status(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            None
        );
    }
}
