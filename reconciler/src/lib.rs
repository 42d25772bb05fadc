//! onshi's central side (`onshi-reconciler`): online checks and batch inquiries against the
//! registry, settlement of provisional records, central search for facilities in a granted
//! outage, and the reconciler's half of the journal sync. The shared core (wire, journal CRDT,
//! sync state machines, link and PKI, the store traits, the registry's storage) is `onshi-sync`.

pub mod admin;
pub mod audit;
pub mod facilities;
pub mod metrics;
pub mod replication;
pub mod revisit;
pub mod search;
pub mod service;
pub mod settlement;
pub mod store;
