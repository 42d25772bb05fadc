//! The PKI (being written).
