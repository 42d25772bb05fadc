//! onshi's edge node (`onshi-edge`): the front doors (HTTP API), the gate, the durable journal, and
//! the lifecycle under systemd. Decisions live in the gate and the model; IO in thin adapters.

pub mod admin;
pub mod api;
pub mod at_rest;
pub mod auth;
pub mod backup;
pub mod config;
pub mod deferred;
pub mod demo;
pub mod edge;
pub mod enroll;
pub mod gate;
pub mod http;
pub mod idempotency;
pub mod journal;
pub mod mailbox;
pub mod mode;
pub mod monitor;
pub mod notify;
pub mod page;
pub mod provisional;
pub mod queue;
pub mod reader;
pub mod reload;
mod rendezvous;
pub mod replica;
pub mod sync;
pub mod tally;
