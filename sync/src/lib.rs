//! onshi's shared core, used by the edge and the centre alike: the wire protocol, the journal CRDT
//! and the sans-IO sync state machines, the QUIC/mTLS transport and the PKI, the store traits and
//! sled, and the registry's storage with the pure validity decision. Only this crate knows QUIC.

pub mod audit_chain;
pub mod crdt;
pub mod journal_store;
pub mod lifecycle;
pub mod link;
pub mod manpage;
pub mod metrics;
pub mod modes;
pub mod pki;
pub mod protocol;
pub mod registry;
pub mod sealed;
pub mod store;
pub mod synth;
pub mod vault;
pub mod wire;
