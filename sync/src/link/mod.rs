//! The QUIC/mTLS link (being written).
