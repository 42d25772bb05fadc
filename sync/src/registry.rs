//! The registry (being written).
