//! The reconciler's end of the link: accepts QUIC connections, authorises each by the facility
//! code in its client certificate and that certificate's fingerprint against [`KnownFacilities`]
//! (the one certificate the centre accepts for the facility), and serves each bidirectional
//! stream as one RPC, many at once per connection. When the known facilities change (a
//! revocation, a re-issued certificate), every live connection is checked again at once and one
//! whose certificate is no longer accepted is closed, idle or not.
//!
//! Every refusal is logged with its reason (`tracing::warn!`) and, where the handshake got far
//! enough, sent to the peer as an application close ([`CLOSE_REFUSED`]) with the same reason. This
//! module must never call the [`Service`] for a connection it has not authorised, and never close a
//! stream silently because a frame was bad: the peer gets a `Response::Error` saying why.
//!
//! A facility's box may be compromised, so what it can make the reconciler hold is bounded
//! ([`LinkLimits`]): a request's size by its kind, known from its first three bytes before the rest
//! is read; the request bytes a connection has buffered (a byte budget); the streams open per
//! connection and the unread bytes (QUIC flow control); the connections per facility (a new one
//! closes the oldest); and the time a request may stay unfinished. A request that breaks a limit
//! gets an error answer, then its connection is closed ([`CLOSE_LIMIT`]) with the reason, logged
//! with the facility code and counted ([`Connections::limits_broken`]). Text a peer chose never
//! reaches a log unescaped ([`Untrusted`]).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use onshi_model::{FacilityCode, Untrusted};
use quinn::{Connection, Endpoint, Incoming, RecvStream, SendStream, VarInt};
use rustls_pki_types::CertificateDer;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{
    CLOSE_LIMIT, CLOSE_REFUSED, CLOSE_SHUTDOWN, Connections, KnownFacilities, LimitBroken,
    LinkLimits, LinkSettings, LinkSetupError, Refusal, tls, transport_config,
};
use crate::pki::{Fingerprint, ServerIdentity, facility_of_certificate};
use crate::wire::{self, DecodeError, REQUEST_HEAD_BYTES, Request, Response};

/// What the reconciler does with an authorised facility's request. `Ping` and `Check` are called
/// on the async task (they must stay quick lookups); every other request on a blocking-capable
/// thread, so it may touch disk. Every request arrives here, `Request::Ping` included (the client's
/// connection probe is a ping, so a service should answer it cheaply with `Response::Pong`).
pub trait Service: Send + Sync + 'static {
    fn call(&self, facility: &FacilityCode, req: Request) -> Response;
    /// Whether a single check is a few lookups in memory-cached pages, cheap enough to answer on
    /// the connection's task (an embedded store); false when it waits on a database.
    fn checks_inline(&self) -> bool {
        true
    }
    /// A single check as a future the connection's task awaits (a service whose store waits on
    /// the network: no blocking-pool thread parked per check in flight); `None`: answered by
    /// [`Service::call`].
    fn check_future(
        &self,
        _facility: &FacilityCode,
        _check: &onshi_model::CheckRequest,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>> {
        None
    }
}

/// How long `run` waits, after shutdown, for connections to close cleanly.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a refused request's error answer may take to be acknowledged before its connection
/// is closed anyway (closing first would discard the answer).
const ANSWER_BEFORE_CLOSE: Duration = Duration::from_secs(1);

/// A bound, not yet serving, link endpoint.
#[derive(Debug)]
pub struct LinkServer {
    endpoint: Endpoint,
    known: KnownFacilities,
    connections: Connections,
    limits: Arc<LinkLimits>,
}

impl LinkServer {
    /// Bind `addr` (port 0 picks a free port; see [`LinkServer::local_addr`]) with the production
    /// [`LinkLimits`].
    pub fn bind(
        addr: SocketAddr,
        identity: &ServerIdentity,
        known: KnownFacilities,
        settings: &LinkSettings,
    ) -> Result<Self, LinkSetupError> {
        Self::bind_with_limits(addr, identity, known, settings, LinkLimits::default())
    }

    /// As [`LinkServer::bind`], with these limits on what a facility may make it hold.
    pub fn bind_with_limits(
        addr: SocketAddr,
        identity: &ServerIdentity,
        known: KnownFacilities,
        settings: &LinkSettings,
        limits: LinkLimits,
    ) -> Result<Self, LinkSetupError> {
        let crypto =
            quinn::crypto::rustls::QuicServerConfig::try_from(tls::server_config(identity)?)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = transport_config(settings, super::SERVER_INITIAL_RTT)?;
        transport
            .max_concurrent_bidi_streams(limits.streams_per_connection.into())
            // The link uses no unidirectional streams: none may be opened, so none fill a buffer.
            .max_concurrent_uni_streams(0u32.into())
            .receive_window(limits.receive_window.into());
        config.transport_config(Arc::new(transport));
        let endpoint = super::endpoint(addr, Some(config))
            .map_err(|source| LinkSetupError::Bind { addr, source })?;
        Ok(LinkServer {
            endpoint,
            known,
            connections: Connections::default(),
            limits: Arc::new(limits),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The set this server authorises against (a clone shares it, so updates take effect).
    pub fn known(&self) -> &KnownFacilities {
        &self.known
    }

    /// The live connections (a clone shares them): connected facilities, accepted, refused.
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Serve until `shutdown` completes, then close every connection and release the socket.
    pub async fn run(self, service: Arc<dyn Service>, shutdown: impl Future<Output = ()>) {
        let mut connections = JoinSet::new();
        let held = FacilityConnections::default();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    connections.spawn(serve_connection(
                        incoming,
                        Shared {
                            known: self.known.clone(),
                            stats: self.connections.clone(),
                            held: held.clone(),
                            limits: self.limits.clone(),
                        },
                        service.clone(),
                    ));
                }
                // Reap finished connection tasks so the set does not grow without bound.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                () = &mut shutdown => break,
            }
        }
        tracing::info!("link server shutting down");
        self.endpoint.close(
            VarInt::from_u32(CLOSE_SHUTDOWN),
            b"reconciler shutting down",
        );
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, self.endpoint.wait_idle()).await;
        connections.shutdown().await;
    }
}

/// What every connection's task shares with the server.
struct Shared {
    known: KnownFacilities,
    stats: Connections,
    held: FacilityConnections,
    limits: Arc<LinkLimits>,
}

/// The open connections of each facility, oldest first, so one more than
/// [`LinkLimits::connections_per_facility`] closes the oldest. Clones share one map.
#[derive(Debug, Clone, Default)]
struct FacilityConnections(Arc<Mutex<HashMap<FacilityCode, VecDeque<Connection>>>>);

/// Takes a connection out of [`FacilityConnections`] when its task ends.
struct HeldConnection {
    held: FacilityConnections,
    facility: FacilityCode,
    id: usize,
}

impl FacilityConnections {
    /// Adds `conn`; returns the connections it displaces (the oldest beyond `limit`).
    fn add(
        &self,
        facility: &FacilityCode,
        conn: &Connection,
        limit: usize,
    ) -> (HeldConnection, Vec<Connection>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let open = map.entry(facility.clone()).or_default();
        open.push_back(conn.clone());
        let excess = open.len().saturating_sub(limit.max(1));
        let displaced = open.drain(..excess).collect();
        let held = HeldConnection {
            held: self.clone(),
            facility: facility.clone(),
            id: conn.stable_id(),
        };
        (held, displaced)
    }
}

impl Drop for HeldConnection {
    fn drop(&mut self) {
        let mut map = self.held.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = map.get_mut(&self.facility) {
            open.retain(|c| c.stable_id() != self.id);
            if open.is_empty() {
                map.remove(&self.facility);
            }
        }
    }
}

/// Handshake, authorise, then serve streams until the connection ends.
async fn serve_connection(incoming: Incoming, shared: Shared, service: Arc<dyn Service>) {
    let Shared {
        known,
        stats,
        held,
        limits,
    } = shared;
    let remote = incoming.remote_address();
    // A missing certificate or one from another CA fails here, inside the TLS handshake.
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(%remote, reason = %e, "link handshake failed; connection refused");
            stats.refused();
            return;
        }
    };
    // Subscribed before authorising, so a change from here on is seen by the loop below.
    let mut changes = known.changes();
    let (facility, fingerprint) = match authorise(&conn, &known) {
        Ok(who) => who,
        Err(refused) => {
            let reason = match &refused {
                Unauthorised::Certificate(reason) => reason.clone(),
                Unauthorised::Refused(facility, refusal) => {
                    stats.certificate_refused(facility, *refusal);
                    refusal.reason(facility, false)
                }
            };
            tracing::warn!(%remote, reason = %Untrusted(&reason), "link connection refused");
            stats.refused();
            conn.close(VarInt::from_u32(CLOSE_REFUSED), reason.as_bytes());
            return;
        }
    };
    tracing::info!(%remote, %facility, "facility connected");
    let _open = stats.opened(&facility);
    let (_held, displaced) = held.add(&facility, &conn, limits.connections_per_facility);
    for old in displaced {
        let reason = format!(
            "facility {facility} opened more than {} connections; the oldest is closed",
            limits.connections_per_facility
        );
        tracing::warn!(%facility, old = %old.remote_address(), new = %remote, "{reason}");
        stats.limit_broken(&facility, LimitBroken::TooManyConnections);
        old.close(VarInt::from_u32(CLOSE_LIMIT), reason.as_bytes());
    }
    // The request bytes this connection's streams hold, all together.
    let budget = Arc::new(Semaphore::new(limits.request_bytes_per_connection));

    // A certificate no longer accepted: the connection is closed with the reason, logged and
    // counted (the facility's edge sees it refused and goes offline).
    let close_refused = |refusal: Refusal| {
        let reason = refusal.reason(&facility, true);
        tracing::warn!(%remote, %facility, reason = %reason, "link connection closed: its certificate is no longer accepted");
        stats.certificate_refused(&facility, refusal);
        conn.close(VarInt::from_u32(CLOSE_REFUSED), reason.as_bytes());
        reason
    };
    let mut streams = JoinSet::new();
    let ended = loop {
        tokio::select! {
            // A change of the known facilities (a revocation, a re-issue): checked at once, so an
            // idle connection is closed too, not only at its next request.
            Ok(()) = changes.changed() => {
                if let Err(refusal) = known.check(&facility, &fingerprint) {
                    break close_refused(refusal);
                }
            }
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    // Also re-checked per request (cheap), so no request is served after a change.
                    if let Err(refusal) = known.check(&facility, &fingerprint) {
                        break close_refused(refusal);
                    }
                    let stream = Stream {
                        facility: facility.clone(),
                        conn: conn.clone(),
                        stats: stats.clone(),
                        budget: budget.clone(),
                        timeout: limits.request_read_timeout,
                    };
                    streams.spawn(serve_stream(stream, service.clone(), send, recv));
                }
                Err(e) => break e.to_string(),
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    };
    tracing::info!(%remote, %facility, reason = %Untrusted(&ended), "facility disconnected");
}

/// Why a connection is not authorised.
enum Unauthorised {
    /// The certificate names no facility (or none was presented).
    Certificate(String),
    /// It names one whose certificate the reconciler does not accept.
    Refused(FacilityCode, Refusal),
}

/// The facility this connection may act for and its certificate's fingerprint, or the reason it
/// may not.
fn authorise(
    conn: &Connection,
    known: &KnownFacilities,
) -> Result<(FacilityCode, Fingerprint), Unauthorised> {
    let none = || Unauthorised::Certificate("no client certificate was presented".to_string());
    let chain = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(none)?;
    let leaf = chain.first().ok_or_else(none)?;
    let facility = facility_of_certificate(leaf).map_err(|e| {
        Unauthorised::Certificate(format!("client certificate names no facility: {e}"))
    })?;
    let fingerprint = Fingerprint::of(leaf);
    match known.check(&facility, &fingerprint) {
        Ok(()) => Ok((facility, fingerprint)),
        Err(refusal) => Err(Unauthorised::Refused(facility, refusal)),
    }
}

/// What one request stream's task needs of its connection.
struct Stream {
    facility: FacilityCode,
    conn: Connection,
    stats: Connections,
    budget: Arc<Semaphore>,
    timeout: Duration,
}

/// Bytes taken from a connection's budget; given back when dropped (once the request is answered).
struct Held {
    budget: Arc<Semaphore>,
    bytes: usize,
}

impl Held {
    /// Waits until the connection's budget has room for `bytes` more.
    async fn take(&mut self, bytes: usize) {
        let Ok(n) = u32::try_from(bytes) else { return };
        // The semaphore is never closed; a request bigger than the whole budget waits out its
        // deadline (the limits make one frame always fit).
        if let Ok(permit) = self.budget.acquire_many(n).await {
            permit.forget();
            self.bytes += bytes;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.add_permits(self.bytes);
    }
}

/// What was read of one request stream.
enum Received {
    /// The whole frame (a frame too short to say its kind too: decoding says why).
    Frame(Vec<u8>, Held),
    /// Answered from the first bytes alone: a version or kind this build does not speak.
    Refused(Response),
}

/// Why a request stream was not read.
enum Unread {
    /// The peer reset the stream or the connection ended: nobody to answer.
    Gone(quinn::ReadError),
    /// A limit was broken: answer, then close the connection.
    Limit(LimitBroken, String),
}

/// Reads one request frame: its head first, which names its kind and so its size limit, then the
/// rest, never more than that limit and only as the connection's byte budget allows.
async fn read_request(recv: &mut RecvStream, budget: &Arc<Semaphore>) -> Result<Received, Unread> {
    let mut held = Held {
        budget: budget.clone(),
        bytes: 0,
    };
    let mut head = [0u8; REQUEST_HEAD_BYTES];
    let mut got = 0;
    while got < head.len() {
        match recv.read(&mut head[got..]).await.map_err(Unread::Gone)? {
            Some(n) => got += n,
            None => return Ok(Received::Frame(head[..got].to_vec(), held)),
        }
    }
    let kind = match wire::request_kind(&head) {
        Ok(kind) => kind,
        Err(e) => return Ok(Received::Refused(decode_error(e))),
    };
    let limit = kind.max_frame_bytes();
    held.take(head.len()).await;
    let mut frame = head.to_vec();
    loop {
        let room = limit - frame.len();
        // One byte more than the room: receiving it proves the frame too large, unread.
        let Some(chunk) = recv
            .read_chunk(room + 1, true)
            .await
            .map_err(Unread::Gone)?
        else {
            return Ok(Received::Frame(frame, held));
        };
        if chunk.bytes.len() > room {
            return Err(Unread::Limit(
                LimitBroken::RequestTooLarge,
                format!("a {kind} request may be at most {limit} bytes; this one is larger"),
            ));
        }
        held.take(chunk.bytes.len()).await;
        frame.extend_from_slice(&chunk.bytes);
    }
}

/// One RPC: read the request frame to its end (within the limits), answer with one frame.
async fn serve_stream(
    stream: Stream,
    service: Arc<dyn Service>,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let facility = &stream.facility;
    let read = tokio::time::timeout(stream.timeout, read_request(&mut recv, &stream.budget))
        .await
        .unwrap_or_else(|_| {
            Err(Unread::Limit(
                LimitBroken::RequestUnfinished,
                format!(
                    "a request must be sent whole within {} ms; this one was not finished",
                    stream.timeout.as_millis()
                ),
            ))
        });
    let response = match read {
        Ok(Received::Frame(frame, _held)) => {
            let (response, priority) = answer(facility, &service, &frame).await;
            // The answer goes out at its request's answer priority (a check before bulk).
            let _ = send.set_priority(priority);
            response
        }
        Ok(Received::Refused(response)) => {
            if let Response::Error { message, .. } = &response {
                tracing::warn!(%facility, error = %message, "request refused unread");
            }
            // The rest is not read; stopping tells the peer not to send it.
            let _ = recv.stop(VarInt::from_u32(0));
            response
        }
        Err(Unread::Limit(limit, reason)) => {
            let _ = recv.stop(VarInt::from_u32(0));
            refuse_and_close(&stream, send, limit, reason).await;
            return;
        }
        Err(Unread::Gone(e)) => {
            tracing::debug!(%facility, error = %e, "request stream ended before its frame was complete");
            return;
        }
    };
    send_answer(facility, &mut send, &response).await;
}

async fn send_answer(facility: &FacilityCode, send: &mut SendStream, response: &Response) {
    let bytes = wire::encode(response);
    tracing::trace!(%facility, bytes = bytes.len(), "answer");
    let result = match send.write_all(&bytes).await {
        Ok(()) => send.finish().map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = result {
        tracing::debug!(%facility, error = %e, "could not send a response (peer gone?)");
    }
}

/// A broken limit: logged with the facility, counted, answered on the stream (waiting briefly
/// for the answer to arrive, since a close discards what is unsent), then the connection closed.
async fn refuse_and_close(
    stream: &Stream,
    mut send: SendStream,
    limit: LimitBroken,
    reason: String,
) {
    let facility = &stream.facility;
    tracing::warn!(%facility, remote = %stream.conn.remote_address(), limit = limit.label(), %reason, "request refused and connection closed: a link limit was broken");
    stream.stats.limit_broken(facility, limit);
    send_answer(
        facility,
        &mut send,
        &Response::error(limit.label(), reason.clone()),
    )
    .await;
    let _ = tokio::time::timeout(ANSWER_BEFORE_CLOSE, send.stopped()).await;
    stream
        .conn
        .close(VarInt::from_u32(CLOSE_LIMIT), reason.as_bytes());
}

/// The error answer for a frame that does not decode.
fn decode_error(e: DecodeError) -> Response {
    match e {
        DecodeError::UnsupportedVersion { .. } => {
            Response::error("unsupported_version", e.to_string())
        }
        e => Response::error("bad_frame", e.to_string()),
    }
}

/// The answer, and the priority of its stream ([`Request::answer_priority`]).
/// `req` answered on the blocking pool.
async fn blocking(service: &Arc<dyn Service>, facility: &FacilityCode, req: Request) -> Response {
    let (service, facility) = (service.clone(), facility.clone());
    tokio::task::spawn_blocking(move || service.call(&facility, req))
        .await
        .unwrap_or_else(|e| {
            Response::error(
                "internal",
                format!("the reconciler failed while answering: {e}"),
            )
        })
}

async fn answer(
    facility: &FacilityCode,
    service: &Arc<dyn Service>,
    frame: &[u8],
) -> (Response, i32) {
    let decoded = wire::decode::<Request>(frame);
    let priority = decoded.as_ref().map_or(0, Request::answer_priority);
    let response = match decoded {
        // Pings, and single checks on an embedded store (a few lookups in memory-cached pages), are
        // answered on this task, since handing each to the blocking pool would cost more than the
        // lookup; a check on a store that waits on the network is awaited here (no thread parked
        // per check in flight). Anything that scans, searches or writes goes to the blocking pool.
        Ok(req @ Request::Ping) => service.call(facility, req),
        Ok(Request::Check(check)) => match service.check_future(facility, &check) {
            Some(answer) => answer.await,
            None if service.checks_inline() => service.call(facility, Request::Check(check)),
            None => blocking(service, facility, Request::Check(check)).await,
        },
        Ok(req) => blocking(service, facility, req).await,
        Err(e) => {
            tracing::warn!(%facility, error = %Untrusted(&e.to_string()), "undecodable request frame");
            decode_error(e)
        }
    };
    (response, priority)
}
