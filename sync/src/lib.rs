//! onshi's link and centre: the wire protocol, the QUIC/mTLS transport, the PKI, and the
//! reconciler that holds the registry and answers checks. Only this crate knows QUIC.

pub mod crdt;
pub mod journal_store;
pub mod lifecycle;
pub mod link;
pub mod manpage;
pub mod metrics;
pub mod modes;
pub mod pki;
pub mod protocol;
pub mod reconciler;
pub mod reconciler_metrics;
pub mod registry;
pub mod replication;
pub mod settlement;
pub mod store;
pub mod synth;
pub mod wire;
