//! Outage search and the provisional share: what the edge (offline) and the reconciler (central
//! search mode) use to find a patient without a card, and to say what to collect.
//!
//! Pure and fast: no IO, no clock, no randomness; "today" and the service date are passed in.
//! - [`normalize`]: matching keys for names, kana readings, addresses and insurer names.
//! - [`index`]: the per-person index and the ranked search of `POST /v1/search`.
//! - [`keys`]: the blocking keys a store files registry periods under and looks queries up by.
//! - [`share`]: the age-based share of `POST /v1/provisional` and the amount to collect.

pub mod index;
pub mod keys;
pub mod normalize;
pub mod share;

pub use index::{
    BirthMatch, Candidate, Confidence, NameMatch, Reason, SearchIndex, SearchQuery, confidence,
    settled_without_far,
};
pub use normalize::{AddressKey, address_key, insurer_key, kana_key, name_key};
pub use share::{
    ShareBasis, ShareEstimate, SharePolicy, UnidentifiedRule, collected_yen, estimate_share,
    estimate_unidentified_share,
};
