//! The access log's hash chain, shared by the edge (which keeps the log) and the centre (which
//! keeps the chain of hashes): what a link is, how its hash is made, the stored form of a linked
//! entry, the edge's verification walk ([`walk`]), and what the edge sends with its syncs
//! ([`AuditReport`], answered by [`AuditHeld`]). Pure: no IO, no clock.
//!
//! Entry `seq` (0, 1, 2, …) stores `prev` (the hash of entry `seq − 1`, or [`GENESIS`] for entry 0),
//! its own `hash` and its content's stored bytes (`entry`, postcard of the edge's `AuditEntry`):
//! `hash = SHA-256(DOMAIN ‖ seq (u64 big-endian) ‖ prev ‖ entry)`. A link ([`AuditLink`]) is
//! `(seq, prev, hash)`: 72 bytes, nothing of the content, so the centre can hold every facility's
//! chain without holding a single entry.
//!
//! What a chain shows. Locally, an entry changed after it was written no longer matches its hash,
//! one removed leaves a gap in the sequence numbers, one moved sits under another entry's number,
//! and one re-hashed after a change no longer matches the `prev` of the entry after it. A log
//! rewritten *consistently* (changed, then every later entry re-hashed) passes the local walk:
//! only a copy held elsewhere shows it, which is why the edge sends its links to the centre.
//!
//! Must never: carry any of an entry's content off the edge (links are hashes and numbers only).

use serde::{Deserialize, Serialize};

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// What entry 0 links to.
pub const GENESIS: Digest = [0; 32];

/// Separates these hashes from any other SHA-256 of the same bytes.
const DOMAIN: &[u8] = b"onshi access log v1\0";

/// The first byte of a linked entry's stored value: postcard's variant index of the edge's stored
/// entry enum (`V1(AuditEntry)` is 0, an unlinked entry of an earlier version; 1 is linked).
pub const LINKED_TAG: u8 = 1;
/// The first byte of an unlinked entry (written before the chain existed).
pub const UNLINKED_TAG: u8 = 0;

/// The most links one [`AuditReport`] carries (72 bytes each: about 300 KB).
pub const MAX_REPORT_LINKS: usize = 4096;
/// How many entries the edge samples within a range the centre asks about ([`AuditHeld::probe`]).
pub const PROBE_SAMPLES: u64 = 64;

/// One entry's place in the chain: no content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AuditLink {
    pub seq: u64,
    pub prev: Digest,
    pub hash: Digest,
}

/// `SHA-256(DOMAIN ‖ seq ‖ prev ‖ entry)`.
pub fn link_hash(seq: u64, prev: &Digest, entry: &[u8]) -> Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(DOMAIN);
    ctx.update(&seq.to_be_bytes());
    ctx.update(prev);
    ctx.update(entry);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A digest's first 8 bytes in hex, to print (enough to compare by eye; never personal).
pub fn short_hex(d: &Digest) -> String {
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A linked entry as stored: its place in the chain and its content's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedEntry {
    pub seq: u64,
    pub prev: Digest,
    pub hash: Digest,
    /// The content's stored bytes (postcard of the edge's `AuditEntry`), hashed as they are.
    pub entry: Vec<u8>,
}

impl LinkedEntry {
    /// Entry `seq` after the entry whose hash is `prev`.
    pub fn new(seq: u64, prev: Digest, entry: Vec<u8>) -> Self {
        let hash = link_hash(seq, &prev, &entry);
        LinkedEntry {
            seq,
            prev,
            hash,
            entry,
        }
    }

    pub fn link(&self) -> AuditLink {
        AuditLink {
            seq: self.seq,
            prev: self.prev,
            hash: self.hash,
        }
    }

    /// Whether the stored hash is the hash of what is stored.
    pub fn holds(&self) -> bool {
        link_hash(self.seq, &self.prev, &self.entry) == self.hash
    }

    /// The stored value: [`LINKED_TAG`] ‖ postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![LINKED_TAG];
        // Plain data into a Vec: cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }
}

/// A stored value as the chain sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredValue {
    Linked(LinkedEntry),
    /// An entry of an earlier version (no link): its content's bytes.
    Unlinked(Vec<u8>),
    /// Neither: the reason.
    Undecodable(String),
}

/// Reads a stored value's form (not its content).
pub fn decode_stored(bytes: &[u8]) -> StoredValue {
    match bytes.split_first() {
        Some((&LINKED_TAG, rest)) => match postcard::from_bytes::<LinkedEntry>(rest) {
            Ok(e) => StoredValue::Linked(e),
            Err(e) => StoredValue::Undecodable(e.to_string()),
        },
        Some((&UNLINKED_TAG, rest)) => StoredValue::Unlinked(rest.to_vec()),
        Some((tag, _)) => StoredValue::Undecodable(format!("unknown form {tag}")),
        None => StoredValue::Undecodable("empty".into()),
    }
}

/// The first thing wrong with a log, by entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum ChainFault {
    /// The entry's content or link was changed after it was written (its hash no longer matches).
    Changed { seq: u64 },
    /// No entry under this number: removed (`next_present`: the next number that has one; none
    /// when the log's counter says more entries were written than remain).
    Removed { seq: u64, next_present: Option<u64> },
    /// The entry under this number is another one (`holds`): moved.
    Reordered { seq: u64, holds: u64 },
    /// The entry matches its own hash but does not link to the entry before it: that one, or this
    /// one, was replaced and re-hashed.
    Unlinked { seq: u64 },
    /// An entry in the form of an earlier version, after the chain began: written behind the
    /// log's back.
    Unchained { seq: u64 },
    /// The stored value is not an entry at all.
    Undecodable { seq: u64 },
}

impl ChainFault {
    pub fn seq(&self) -> u64 {
        match self {
            ChainFault::Changed { seq }
            | ChainFault::Removed { seq, .. }
            | ChainFault::Reordered { seq, .. }
            | ChainFault::Unlinked { seq }
            | ChainFault::Unchained { seq }
            | ChainFault::Undecodable { seq } => *seq,
        }
    }
}

impl std::fmt::Display for ChainFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainFault::Changed { seq } => write!(
                f,
                "entry {seq}: changed (its content or link no longer matches its hash)"
            ),
            ChainFault::Removed {
                seq,
                next_present: Some(n),
            } => write!(
                f,
                "entry {seq}: removed (a gap: the next entry present is {n})"
            ),
            ChainFault::Removed {
                seq,
                next_present: None,
            } => write!(
                f,
                "entry {seq}: removed (the log counted more entries than remain; the last present is {})",
                seq.checked_sub(1)
                    .map_or_else(|| "none".to_string(), |s| s.to_string())
            ),
            ChainFault::Reordered { seq, holds } => write!(
                f,
                "entry {seq}: reordered (entry {holds} is stored in its place)"
            ),
            ChainFault::Unlinked { seq } => write!(
                f,
                "entry {seq}: does not link to entry {} (one of them was replaced and re-hashed)",
                seq.saturating_sub(1)
            ),
            ChainFault::Unchained { seq } => write!(
                f,
                "entry {seq}: changed (an entry without a link, after the chain began)"
            ),
            ChainFault::Undecodable { seq } => {
                write!(f, "entry {seq}: changed (it no longer reads as an entry)")
            }
        }
    }
}

/// What [`walk`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainVerdict {
    /// Entries checked (up to the first fault).
    pub checked: u64,
    /// The last entry that held, when there is one.
    pub head: Option<AuditLink>,
    pub fault: Option<ChainFault>,
}

/// Walks a log's stored values in key order (`(seq, value)`; `counter`: how many entries the log
/// says it wrote) and stops at the first fault.
pub fn walk(entries: impl IntoIterator<Item = (u64, StoredValue)>, counter: u64) -> ChainVerdict {
    let mut expected = 0u64;
    let mut prev = GENESIS;
    let mut head = None;
    let fault = |fault, checked, head| ChainVerdict {
        checked,
        head,
        fault: Some(fault),
    };
    for (seq, value) in entries {
        if seq != expected {
            return fault(
                ChainFault::Removed {
                    seq: expected,
                    next_present: Some(seq),
                },
                expected,
                head,
            );
        }
        let e = match value {
            StoredValue::Linked(e) => e,
            StoredValue::Unlinked(_) => return fault(ChainFault::Unchained { seq }, seq, head),
            StoredValue::Undecodable(_) => {
                return fault(ChainFault::Undecodable { seq }, seq, head);
            }
        };
        if e.seq != seq {
            return fault(ChainFault::Reordered { seq, holds: e.seq }, seq, head);
        }
        if !e.holds() {
            return fault(ChainFault::Changed { seq }, seq, head);
        }
        if e.prev != prev {
            return fault(ChainFault::Unlinked { seq }, seq, head);
        }
        prev = e.hash;
        head = Some(e.link());
        expected += 1;
    }
    if counter > expected {
        return fault(
            ChainFault::Removed {
                seq: expected,
                next_present: None,
            },
            expected,
            head,
        );
    }
    ChainVerdict {
        checked: expected,
        head,
        fault: None,
    }
}

/// Edge → centre, with a sync: the log's length and some of its links, ascending: those the
/// centre does not hold yet (from [`AuditHeld::next`]), the head, and samples the centre asked
/// for ([`AuditHeld::probe`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    /// Entries in the edge's log (the head is entry `len − 1`).
    pub len: u64,
    pub links: Vec<AuditLink>,
}

/// Why a report is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("links: {0} links; at most {MAX_REPORT_LINKS}")]
    TooMany(usize),
    #[error("links: not in ascending order of seq at {0}")]
    Unordered(u64),
    #[error("links: seq {seq} is not below len {len}")]
    BeyondLen { seq: u64, len: u64 },
}

impl AuditReport {
    /// Checks the report's shape (the centre's first step).
    pub fn validate(&self) -> Result<(), ReportError> {
        if self.links.len() > MAX_REPORT_LINKS {
            return Err(ReportError::TooMany(self.links.len()));
        }
        for w in self.links.windows(2) {
            if w[1].seq <= w[0].seq {
                return Err(ReportError::Unordered(w[1].seq));
            }
        }
        if let Some(l) = self.links.iter().find(|l| l.seq >= self.len) {
            return Err(ReportError::BeyondLen {
                seq: l.seq,
                len: self.len,
            });
        }
        Ok(())
    }
}

/// Centre → edge: how far the centre holds the chain, and what it wants to see next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHeld {
    /// Links held: entries `0 .. next`.
    pub next: u64,
    /// The first entry where the edge's log departs from what the centre holds, if it does.
    pub broken_at: Option<u64>,
    /// `[from, to)`: entries to sample ([`probe_samples`]) in the next report, to narrow a break.
    pub probe: Option<(u64, u64)>,
}

/// The entries an edge samples for a probe `[from, to)`: all of them when there are at most
/// [`PROBE_SAMPLES`], else that many evenly spaced, starting at `from`.
pub fn probe_samples(from: u64, to: u64) -> Vec<u64> {
    let span = to.saturating_sub(from);
    if span <= PROBE_SAMPLES {
        return (from..to).collect();
    }
    (0..PROBE_SAMPLES)
        .map(|i| from + i * span / PROBE_SAMPLES)
        .collect()
}

/// Which entries' links the edge sends: those from `held` (what the centre holds, when known) up
/// to [`MAX_REPORT_LINKS`], the head, and the probe's samples; ascending, each below `len`.
pub fn report_seqs(len: u64, held: Option<u64>, probe: Option<(u64, u64)>) -> Vec<u64> {
    let mut seqs = std::collections::BTreeSet::new();
    if let Some((from, to)) = probe {
        seqs.extend(probe_samples(from, to.min(len)));
    }
    if len > 0 {
        seqs.insert(len - 1);
    }
    if let Some(h) = held {
        let room = (MAX_REPORT_LINKS - seqs.len().min(MAX_REPORT_LINKS)) as u64;
        seqs.extend(h..len.min(h.saturating_add(room)));
    }
    seqs.into_iter().take(MAX_REPORT_LINKS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<LinkedEntry> {
        let mut prev = GENESIS;
        (0..n)
            .map(|seq| {
                let e = LinkedEntry::new(seq, prev, format!("entry {seq}").into_bytes());
                prev = e.hash;
                e
            })
            .collect()
    }

    fn stored(entries: &[LinkedEntry]) -> Vec<(u64, StoredValue)> {
        entries
            .iter()
            .map(|e| (e.seq, decode_stored(&e.encode())))
            .collect()
    }

    #[test]
    fn an_intact_chain_holds_and_its_head_is_the_last_entry() {
        let c = chain(5);
        let v = walk(stored(&c), 5);
        assert_eq!(v.fault, None);
        assert_eq!(v.checked, 5);
        assert_eq!(v.head, Some(c[4].link()));
        assert_eq!(walk(Vec::new(), 0).fault, None);
    }

    #[test]
    fn a_changed_entry_is_named() {
        let mut c = chain(5);
        c[2].entry = b"entry X".to_vec();
        assert_eq!(
            walk(stored(&c), 5).fault,
            Some(ChainFault::Changed { seq: 2 })
        );
    }

    #[test]
    fn a_changed_and_rehashed_entry_breaks_the_next_link() {
        let mut c = chain(5);
        c[2] = LinkedEntry::new(2, c[2].prev, b"entry X".to_vec());
        assert_eq!(
            walk(stored(&c), 5).fault,
            Some(ChainFault::Unlinked { seq: 3 })
        );
    }

    #[test]
    fn a_removed_entry_is_a_gap_and_a_removed_last_one_is_counted() {
        let c = chain(5);
        let mut s = stored(&c);
        s.remove(2);
        assert_eq!(
            walk(s, 5).fault,
            Some(ChainFault::Removed {
                seq: 2,
                next_present: Some(3)
            })
        );
        let mut s = stored(&c);
        s.pop();
        assert_eq!(
            walk(s, 5).fault,
            Some(ChainFault::Removed {
                seq: 4,
                next_present: None
            })
        );
    }

    #[test]
    fn swapped_entries_are_named_as_reordered() {
        let c = chain(5);
        let mut s = stored(&c);
        let (a, b) = (s[1].1.clone(), s[2].1.clone());
        s[1].1 = b;
        s[2].1 = a;
        assert_eq!(
            walk(s, 5).fault,
            Some(ChainFault::Reordered { seq: 1, holds: 2 })
        );
    }

    #[test]
    fn an_unlinked_or_unreadable_entry_inside_the_chain_is_named() {
        let c = chain(3);
        let mut s = stored(&c);
        s[1].1 = decode_stored(&[UNLINKED_TAG, 1, 2, 3]);
        assert_eq!(walk(s, 3).fault, Some(ChainFault::Unchained { seq: 1 }));
        let mut s = stored(&c);
        s[2].1 = decode_stored(&[LINKED_TAG, 0xff]);
        assert_eq!(walk(s, 3).fault, Some(ChainFault::Undecodable { seq: 2 }));
    }

    #[test]
    fn the_hash_binds_the_sequence_and_the_previous_hash() {
        let a = link_hash(1, &GENESIS, b"x");
        assert_ne!(a, link_hash(2, &GENESIS, b"x"));
        assert_ne!(a, link_hash(1, &[1; 32], b"x"));
        assert_ne!(a, link_hash(1, &GENESIS, b"y"));
        assert_eq!(a, link_hash(1, &GENESIS, b"x"));
    }

    #[test]
    fn a_report_sends_what_the_centre_lacks_the_head_and_the_probe() {
        assert_eq!(report_seqs(0, None, None), Vec::<u64>::new());
        assert_eq!(report_seqs(10, None, None), vec![9]);
        assert_eq!(report_seqs(10, Some(7), None), vec![7, 8, 9]);
        assert_eq!(report_seqs(10, Some(12), None), vec![9]);
        assert_eq!(report_seqs(10, Some(10), Some((2, 5))), vec![2, 3, 4, 9]);
        let big = report_seqs(100_000, Some(0), None);
        assert_eq!(big.len(), MAX_REPORT_LINKS);
        assert!(big.contains(&99_999));
        let p = probe_samples(0, 6_400);
        assert_eq!(p.len(), PROBE_SAMPLES as usize);
        assert_eq!((p[0], p[1], p[63]), (0, 100, 6_300));
    }

    #[test]
    fn a_report_out_of_order_or_beyond_its_length_is_refused() {
        let c = chain(3);
        let ok = AuditReport {
            len: 3,
            links: c.iter().map(LinkedEntry::link).collect(),
        };
        assert_eq!(ok.validate(), Ok(()));
        let mut r = ok.clone();
        r.links.swap(0, 1);
        assert_eq!(r.validate(), Err(ReportError::Unordered(0)));
        let mut r = ok;
        r.len = 2;
        assert_eq!(r.validate(), Err(ReportError::BeyondLen { seq: 2, len: 2 }));
    }

    #[test]
    fn the_messages_travel_in_the_v2_form_and_come_back_whole() {
        use crate::protocol::SyncMessage;
        let links = SyncMessage::AuditLinks(AuditReport {
            len: 3,
            links: chain(3).iter().map(LinkedEntry::link).collect(),
        });
        let held = SyncMessage::AuditHeld(AuditHeld {
            next: 3,
            broken_at: Some(1),
            probe: Some((0, 1)),
        });
        for m in [links, held] {
            let bytes = m.encode().unwrap();
            // The V2 tag: a peer of before issue 18 refuses the frame rather than misread it.
            assert_eq!(bytes[0], 1);
            assert_eq!(SyncMessage::decode(&bytes).unwrap(), m);
        }
    }
}
