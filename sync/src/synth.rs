//! Synthetic registry (being written).
