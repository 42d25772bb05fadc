//! The reconciler's end of the link: accepts QUIC connections, authorises each by the facility
//! code in its client certificate against the known set, and serves each bidirectional stream as
//! one RPC, many at once per connection.
//!
//! Every refusal is logged with its reason (`tracing::warn!`) and, where the handshake got far
//! enough, sent to the peer as an application close ([`CLOSE_REFUSED`]) with the same reason. This
//! module must never call the [`Service`] for a connection it has not authorised, and never close a
//! stream silently because a frame was bad: the peer gets a `Response::Error` saying why.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use onshi_model::FacilityCode;
use quinn::{Connection, Endpoint, Incoming, RecvStream, SendStream, VarInt};
use rustls_pki_types::CertificateDer;
use tokio::task::JoinSet;

use super::{
    CLOSE_REFUSED, CLOSE_SHUTDOWN, Connections, KnownFacilities, LinkSettings, LinkSetupError, tls,
    transport_config,
};
use crate::pki::{ServerIdentity, facility_of_certificate};
use crate::wire::{self, DecodeError, MAX_FRAME_BYTES, Request, Response};

/// What the reconciler does with an authorised facility's request. `Ping` and `Check` are called
/// on the async task (they must stay quick lookups); every other request on a blocking-capable
/// thread, so it may touch disk. Every request arrives here, `Request::Ping` included (the client's
/// connection probe is a ping, so a service should answer it cheaply with `Response::Pong`).
pub trait Service: Send + Sync + 'static {
    fn call(&self, facility: &FacilityCode, req: Request) -> Response;
}

/// How long `run` waits, after shutdown, for connections to close cleanly.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A bound, not yet serving, link endpoint.
#[derive(Debug)]
pub struct LinkServer {
    endpoint: Endpoint,
    known: KnownFacilities,
    connections: Connections,
}

impl LinkServer {
    /// Bind `addr` (port 0 picks a free port; see [`LinkServer::local_addr`]).
    pub fn bind(
        addr: SocketAddr,
        identity: &ServerIdentity,
        known: KnownFacilities,
        settings: &LinkSettings,
    ) -> Result<Self, LinkSetupError> {
        let crypto =
            quinn::crypto::rustls::QuicServerConfig::try_from(tls::server_config(identity)?)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(Arc::new(transport_config(
            settings,
            super::SERVER_INITIAL_RTT,
        )?));
        let endpoint = super::endpoint(addr, Some(config))
            .map_err(|source| LinkSetupError::Bind { addr, source })?;
        Ok(LinkServer {
            endpoint,
            known,
            connections: Connections::default(),
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
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    connections.spawn(serve_connection(
                        incoming,
                        self.known.clone(),
                        self.connections.clone(),
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

/// Handshake, authorise, then serve streams until the connection ends.
async fn serve_connection(
    incoming: Incoming,
    known: KnownFacilities,
    stats: Connections,
    service: Arc<dyn Service>,
) {
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
    let facility = match authorise(&conn, &known) {
        Ok(facility) => facility,
        Err(reason) => {
            tracing::warn!(%remote, %reason, "link connection refused");
            stats.refused();
            conn.close(VarInt::from_u32(CLOSE_REFUSED), reason.as_bytes());
            return;
        }
    };
    tracing::info!(%remote, %facility, "facility connected");
    let _open = stats.opened(&facility);

    let mut streams = JoinSet::new();
    let ended = loop {
        tokio::select! {
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    // Re-checked per request, so removing a facility takes effect on a live connection.
                    if !known.contains(&facility) {
                        let reason = format!("facility {facility} is no longer known to the reconciler");
                        tracing::warn!(%remote, %facility, %reason, "link connection refused");
                        conn.close(VarInt::from_u32(CLOSE_REFUSED), reason.as_bytes());
                        break reason;
                    }
                    streams.spawn(serve_stream(facility.clone(), service.clone(), send, recv));
                }
                Err(e) => break e.to_string(),
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    };
    tracing::info!(%remote, %facility, reason = %ended, "facility disconnected");
}

/// The facility this connection may act for, or the reason it may not.
fn authorise(conn: &Connection, known: &KnownFacilities) -> Result<FacilityCode, String> {
    let chain = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| "no client certificate was presented".to_string())?;
    let leaf = chain
        .first()
        .ok_or_else(|| "no client certificate was presented".to_string())?;
    let facility = facility_of_certificate(leaf)
        .map_err(|e| format!("client certificate names no facility: {e}"))?;
    if !known.contains(&facility) {
        return Err(format!(
            "facility {facility} is not known to the reconciler"
        ));
    }
    Ok(facility)
}

/// One RPC: read the request frame to its end, answer with one frame.
async fn serve_stream(
    facility: FacilityCode,
    service: Arc<dyn Service>,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let response = match recv.read_to_end(MAX_FRAME_BYTES).await {
        Ok(frame) => {
            let (response, priority) = answer(&facility, &service, &frame).await;
            // The answer goes out at its request's answer priority (a check before bulk).
            let _ = send.set_priority(priority);
            response
        }
        Err(quinn::ReadToEndError::TooLong) => Response::error(
            "bad_frame",
            format!("request frame is larger than the limit of {MAX_FRAME_BYTES} bytes"),
        ),
        Err(e) => {
            tracing::debug!(%facility, error = %e, "request stream ended before its frame was complete");
            return;
        }
    };
    let bytes = wire::encode(&response);
    tracing::trace!(%facility, bytes = bytes.len(), "answer");
    let result = match send.write_all(&bytes).await {
        Ok(()) => send.finish().map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = result {
        tracing::debug!(%facility, error = %e, "could not send a response (peer gone?)");
    }
}

/// The answer, and the priority of its stream ([`Request::answer_priority`]).
async fn answer(
    facility: &FacilityCode,
    service: &Arc<dyn Service>,
    frame: &[u8],
) -> (Response, i32) {
    let decoded = wire::decode::<Request>(frame);
    let priority = decoded.as_ref().map_or(0, Request::answer_priority);
    let response = match decoded {
        // Pings and single checks are a few lookups in memory-cached pages: answered on this task,
        // since handing each to the blocking pool would cost more than the lookup. Anything that
        // scans, searches or writes goes to the blocking pool.
        Ok(req @ (Request::Ping | Request::Check(_))) => service.call(facility, req),
        Ok(req) => {
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
        Err(e @ DecodeError::UnsupportedVersion { .. }) => {
            tracing::warn!(%facility, error = %e, "request in an unsupported wire version");
            Response::error("unsupported_version", e.to_string())
        }
        Err(e) => {
            tracing::warn!(%facility, error = %e, "undecodable request frame");
            Response::error("bad_frame", e.to_string())
        }
    };
    (response, priority)
}
