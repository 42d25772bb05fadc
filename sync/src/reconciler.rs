//! The reconciler as a service on the link: it answers each facility's requests from the registry.
//! The facility is the one the link authorised from the client certificate; it never comes from
//! the request.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use onshi_model::FacilityCode;
use tokio::task::JoinHandle;

use crate::link::{KnownFacilities, LinkServer, LinkSettings, Service};
use crate::registry::Registry;
use crate::wire::{Request, Response};

/// Answers link requests from the registry.
#[derive(Debug, Clone)]
pub struct Reconciler {
    registry: Registry,
}

impl Reconciler {
    pub fn new(registry: Registry) -> Self {
        Reconciler { registry }
    }
}

impl Service for Reconciler {
    fn call(&self, facility: &FacilityCode, req: Request) -> Response {
        match req {
            Request::Ping => Response::Pong,
            Request::Check(check) => match self.registry.check(&check) {
                Ok(outcome) => {
                    tracing::debug!(%facility, validity = outcome.validity.as_str(), "check answered");
                    Response::Check(outcome)
                }
                Err(e) => {
                    tracing::error!(%facility, error = %e, "registry unavailable");
                    Response::error("registry_unavailable", e.to_string())
                }
            },
            Request::Batch(checks) => {
                if checks.len() > crate::wire::MAX_BATCH {
                    return Response::error("batch_too_large", format!("{} checks in one batch; send at most {}", checks.len(), crate::wire::MAX_BATCH));
                }
                let mut out = Vec::with_capacity(checks.len());
                for check in &checks {
                    match self.registry.check(check) {
                        Ok(o) => out.push(o),
                        Err(e) => {
                            tracing::error!(%facility, error = %e, "registry unavailable");
                            return Response::error("registry_unavailable", e.to_string());
                        }
                    }
                }
                tracing::info!(%facility, checks = out.len(), "batch inquiry answered");
                Response::Batch(out)
            }
        }
    }
}

/// A reconciler serving on the link.
#[derive(Debug)]
pub struct RunningReconciler {
    pub addr: SocketAddr,
    pub known: KnownFacilities,
    pub task: JoinHandle<()>,
}

/// Binds the link on `listen` with the server identity in `pki_dir`, knowing the facilities whose
/// certificates are in `pki_dir`, and serves until `shutdown` resolves.
pub fn start(
    registry: Registry,
    pki_dir: &Path,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunningReconciler> {
    let identity = crate::pki::load_server(pki_dir)?;
    let known = KnownFacilities::new(crate::pki::facilities_in(pki_dir));
    let server = LinkServer::bind(listen, &identity, known.clone(), &LinkSettings::default())?;
    let addr = server.local_addr()?;
    tracing::info!(%addr, facilities = known.len(), periods = registry.period_count(), "reconciler listening");
    let service: Arc<dyn Service> = Arc::new(Reconciler::new(registry));
    let task = tokio::spawn(server.run(service, shutdown));
    Ok(RunningReconciler { addr, known, task })
}
