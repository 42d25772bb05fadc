//! The rustls side of the link: who trusts whom. The server requires a client certificate that
//! chains to the deployment's CA; the client trusts only that CA and always expects the server
//! name [`SERVER_NAME`](crate::pki::SERVER_NAME), whatever address it dials. TLS 1.3 only, ALPN
//! `onshi/1` ([`super::ALPN`]), ring provider only.
//!
//! This module must never build a configuration on rustls' process-wide default provider (two
//! providers compiled in make rustls panic), and never trust anything but the given CA.

use std::sync::Arc;

use rustls::crypto::{CryptoProvider, ring};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::CertificateDer;

use super::{ALPN, LinkSetupError};
use crate::pki::{ClientIdentity, ServerIdentity};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, LinkSetupError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).map_err(LinkSetupError::BadCa)?;
    Ok(Arc::new(roots))
}

/// The reconciler's TLS: its own certificate, and a required client certificate from the CA.
pub fn server_config(identity: &ServerIdentity) -> Result<ServerConfig, LinkSetupError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(&identity.ca)?, provider.clone())
            .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// A facility's TLS: its certificate, trusting only the CA.
pub fn client_config(identity: &ClientIdentity) -> Result<ClientConfig, LinkSetupError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(&identity.ca)?)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// A client that presents no certificate (diagnostics, and tests that the server refuses it).
pub fn client_config_without_certificate(
    ca: &CertificateDer<'static>,
) -> Result<ClientConfig, LinkSetupError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca)?)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}
