//! The centre's copy of each facility's access-log chain (issue 18): the links
//! ([`onshi_sync::audit_chain`]) an edge sends with its syncs, held per facility by the store, and
//! the pure decisions about them: [`receive`] (does what the edge sends continue what the centre
//! holds? what to append, which break to record, what to ask for next) and [`check_held`] (does the
//! centre's own copy still link up, for `onshi-reconciler audit verify`).
//!
//! Why it finds a rewritten log. A link commits to every entry before it (each hash covers the
//! previous one), so the edge's link `s` equals the one held for `s` exactly when the two logs
//! agree on entries `0..=s`. An edge whose log was changed from entry `k` on, even re-chained
//! consistently, sends links that differ from `k` on: its head no longer matches the one held, or
//! its next link does not continue the held chain. A log cut short is seen once the edge writes
//! its next entry (which differs from the one held under that number); fewer entries alone prove
//! nothing, since a report delayed behind a newer one looks the same.
//! The first difference is then narrowed by asking the edge for links in `[agreed_below, seq)`
//! (at most [`onshi_sync::audit_chain::PROBE_SAMPLES`] a round) until it is exact.
//!
//! After a break the centre keeps what it held (the evidence) and appends nothing more for that
//! facility: the edge's later links cannot continue it. The break stays on record.
//!
//! Must never: hold or log anything of an entry's content (links are numbers and hashes), or drop
//! a link already held.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use onshi_sync::audit_chain::{AuditHeld, AuditLink, AuditReport, GENESIS, ReportError};
use serde::{Deserialize, Serialize};

/// How the edge's log departs from what the centre holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// The edge's entry `seq` is not the one it sent before (changed, replaced or re-chained).
    Rewritten,
    /// As `Rewritten`, seen while the edge had fewer entries than the centre holds: entries were
    /// removed (from `seq` on) and others written in their place.
    Removed,
}

impl BreakKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakKind::Rewritten => "rewritten",
            BreakKind::Removed => "removed",
        }
    }
}

/// A recorded break in a facility's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainBreak {
    /// The first entry known to differ at the edge (exact once `agreed_below == seq`).
    pub seq: u64,
    pub kind: BreakKind,
    /// Entries `0..agreed_below` are known to agree.
    pub agreed_below: u64,
    /// When the break was first seen.
    pub at: DateTime<Utc>,
}

impl ChainBreak {
    /// Whether `seq` is the first entry that differs (not just an upper bound).
    pub fn exact(&self) -> bool {
        self.agreed_below >= self.seq
    }
}

/// What the centre holds of a facility's chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CentreChain {
    /// Links `0..next` are held.
    pub next: u64,
    pub brk: Option<ChainBreak>,
}

/// The outcome of one report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Links to add, continuing what is held.
    pub append: Vec<AuditLink>,
    /// The chain's new state.
    pub chain: CentreChain,
    /// The break is new, or now names an earlier entry (worth a warning).
    pub news: bool,
    /// The answer to the edge.
    pub answer: AuditHeld,
}

/// The held links [`receive`] needs for `report`: those of the seqs it mentions below `next`, and
/// the last one held (what a new link must continue).
pub fn needed(chain: &CentreChain, report: &AuditReport) -> Vec<u64> {
    let mut v: Vec<u64> = report
        .links
        .iter()
        .map(|l| l.seq)
        .filter(|&s| s < chain.next)
        .collect();
    if let Some(last) = chain.next.checked_sub(1) {
        v.push(last);
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// Decides what a report means for the chain held (`held`: at least the links [`needed`] names).
pub fn receive(
    chain: &CentreChain,
    held: &BTreeMap<u64, AuditLink>,
    report: &AuditReport,
    now: DateTime<Utc>,
) -> Result<Receipt, ReportError> {
    report.validate()?;
    let start = chain.next;
    let mut next = chain.next;
    let mut tip = match next.checked_sub(1) {
        None => GENESIS,
        Some(last) => held.get(&last).map_or(GENESIS, |l| l.hash),
    };
    let mut append = Vec::new();
    // The earliest difference this report shows, and how far it shows agreement.
    let mut found: Option<(u64, BreakKind)> = None;
    let mut agreed = 0u64;
    let note = |found: &mut Option<(u64, BreakKind)>, seq: u64, kind: BreakKind| {
        if found.is_none_or(|(s, _)| seq < s) {
            *found = Some((seq, kind));
        }
    };
    // Fewer entries than held is no evidence alone: a report delayed behind a newer one (an RPC
    // retried on another instance) says the same. A link that differs is: an honest edge's links
    // never change. A log cut short differs from its next entry on.
    let differs = if report.len < start {
        BreakKind::Removed
    } else {
        BreakKind::Rewritten
    };
    for link in &report.links {
        if link.seq < start {
            match held.get(&link.seq) {
                Some(h) if h == link => agreed = agreed.max(link.seq + 1),
                Some(_) => note(&mut found, link.seq, differs),
                None => {}
            }
        } else if link.seq == next && chain.brk.is_none() && found.is_none() {
            if link.prev == tip {
                append.push(*link);
                tip = link.hash;
                next += 1;
            } else if next > start || next == 0 {
                // The edge's own link does not continue its previous one (or entry 0 does not
                // start from the genesis value): this entry is where its chain breaks.
                note(&mut found, next, BreakKind::Rewritten);
            } else {
                // It continues an entry `next − 1` other than the one held.
                note(&mut found, next - 1, BreakKind::Rewritten);
            }
        }
    }
    let mut brk = chain.brk.clone();
    match (&mut brk, found) {
        (None, Some((seq, kind))) => {
            brk = Some(ChainBreak {
                seq,
                kind,
                agreed_below: agreed.min(seq),
                at: now,
            });
        }
        (Some(b), found) => {
            if let Some((seq, kind)) = found
                && seq < b.seq
            {
                b.seq = seq;
                b.kind = kind;
            }
            b.agreed_below = b.agreed_below.max(agreed).min(b.seq);
        }
        (None, None) => {}
    }
    let news = match (&chain.brk, &brk) {
        (None, Some(_)) => true,
        (Some(a), Some(b)) => b.seq < a.seq,
        _ => false,
    };
    let chain = CentreChain { next, brk };
    let answer = AuditHeld {
        next,
        broken_at: chain.brk.as_ref().map(|b| b.seq),
        probe: chain
            .brk
            .as_ref()
            .filter(|b| !b.exact())
            .map(|b| (b.agreed_below, b.seq)),
    };
    Ok(Receipt {
        append,
        chain,
        news,
        answer,
    })
}

/// Where the centre's own copy of a chain does not link up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum HeldFault {
    /// No link held under this number, though later ones are.
    Missing { seq: u64 },
    /// The link held does not continue the one before it.
    Unlinked { seq: u64 },
}

/// Walks the held links in order (pages of [`crate::store::CentralStore::audit_links`]); the
/// first fault, if any. `state` carries the walk across pages: `(expected seq, previous hash)`.
pub fn check_held(state: &mut (u64, [u8; 32]), links: &[AuditLink]) -> Result<(), HeldFault> {
    for l in links {
        if l.seq != state.0 {
            return Err(HeldFault::Missing { seq: state.0 });
        }
        if l.prev != state.1 {
            return Err(HeldFault::Unlinked { seq: l.seq });
        }
        *state = (l.seq + 1, l.hash);
    }
    Ok(())
}

/// What `onshi-reconciler audit verify --facility` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainReport {
    /// Links held.
    pub held: u64,
    /// The last link held.
    pub head: Option<AuditLink>,
    pub brk: Option<ChainBreak>,
    /// The centre's own copy does not link up (its store was changed).
    pub held_fault: Option<HeldFault>,
}

impl ChainReport {
    pub fn unbroken(&self) -> bool {
        self.brk.is_none() && self.held_fault.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onshi_sync::audit_chain::LinkedEntry;

    /// An edge's chain of `n` entries, with entry contents `tag`-ed from `from` on.
    fn chain(n: u64, from: u64, tag: &str) -> Vec<AuditLink> {
        let mut prev = GENESIS;
        (0..n)
            .map(|seq| {
                let body = if seq >= from {
                    format!("{tag} {seq}")
                } else {
                    format!("entry {seq}")
                };
                let e = LinkedEntry::new(seq, prev, body.into_bytes());
                prev = e.hash;
                e.link()
            })
            .collect()
    }

    fn now() -> DateTime<Utc> {
        "2026-04-01T09:00:00Z".parse().unwrap()
    }

    /// The centre: a chain state and the links it holds; `send` plays one report.
    #[derive(Default)]
    struct Centre {
        chain: CentreChain,
        held: BTreeMap<u64, AuditLink>,
    }

    impl Centre {
        fn send(&mut self, len: u64, links: Vec<AuditLink>) -> Receipt {
            let report = AuditReport { len, links };
            let need: BTreeMap<u64, AuditLink> = needed(&self.chain, &report)
                .into_iter()
                .filter_map(|s| self.held.get(&s).map(|l| (s, *l)))
                .collect();
            let r = receive(&self.chain, &need, &report, now()).unwrap();
            for l in &r.append {
                self.held.insert(l.seq, *l);
            }
            self.chain = r.chain.clone();
            r
        }

        /// What the edge with `log` sends after the answer `held`.
        fn follow(&mut self, log: &[AuditLink], held: &AuditHeld) -> Receipt {
            let seqs =
                onshi_sync::audit_chain::report_seqs(log.len() as u64, Some(held.next), held.probe);
            self.send(
                log.len() as u64,
                seqs.iter().map(|&s| log[s as usize]).collect(),
            )
        }
    }

    #[test]
    fn an_honest_edge_s_links_are_appended_and_its_head_agrees() {
        let mut c = Centre::default();
        let log = chain(10, 10, "");
        let r = c.send(6, vec![log[5]]);
        assert_eq!(r.answer.next, 0, "the head alone: nothing to append yet");
        let r = c.send(6, log[0..6].to_vec());
        assert_eq!(
            (r.answer.next, r.answer.broken_at, r.news),
            (6, None, false)
        );
        let r = c.send(10, log[6..10].to_vec());
        assert_eq!(r.append.len(), 4);
        let r = c.send(10, vec![log[9]]);
        assert_eq!((r.answer.next, r.answer.broken_at), (10, None));
        let mut walk = (0, GENESIS);
        let held: Vec<AuditLink> = c.held.values().copied().collect();
        assert_eq!(check_held(&mut walk, &held), Ok(()));
    }

    #[test]
    fn a_log_rewritten_and_rechained_is_caught_and_narrowed_to_its_first_changed_entry() {
        let mut c = Centre::default();
        let honest = chain(300, 300, "");
        c.send(300, honest[0..300].to_vec());
        // Entry 137 changed at the edge, every later entry re-hashed; then two more entries.
        let forged = chain(302, 137, "forged");
        let r = c.send(302, vec![forged[301]]);
        assert_eq!(
            r.answer.broken_at, None,
            "beyond what is held: not comparable"
        );
        let mut r = c.follow(&forged, &r.answer);
        assert!(r.news);
        assert_eq!(r.answer.broken_at, Some(299));
        assert!(r.append.is_empty(), "nothing continues a broken chain");
        let mut rounds = 0;
        while r.answer.probe.is_some() {
            r = c.follow(&forged, &r.answer);
            rounds += 1;
            assert!(rounds < 5, "narrows by 64 a round");
        }
        let b = c.chain.brk.clone().unwrap();
        assert_eq!(
            (b.seq, b.kind, b.exact()),
            (137, BreakKind::Rewritten, true)
        );
        assert_eq!(c.chain.next, 300, "what was held stays");
        // Later reports change nothing and are no news.
        let r = c.follow(&forged, &r.answer);
        assert!(!r.news);
        assert_eq!(c.chain.brk, Some(b));
    }

    #[test]
    fn a_changed_head_alone_is_exact_at_once() {
        let mut c = Centre::default();
        c.send(5, chain(5, 5, "").to_vec());
        let r = c.send(5, chain(5, 4, "x")[3..5].to_vec());
        let b = r.chain.brk.unwrap();
        assert_eq!((b.seq, b.agreed_below, r.answer.probe), (4, 4, None));
    }

    #[test]
    fn a_log_cut_short_is_a_removal_once_it_writes_again_and_a_late_report_is_no_break() {
        let mut c = Centre::default();
        let log = chain(8, 8, "");
        c.send(8, log.clone());
        // A report delayed behind newer ones: shorter, but every link agrees.
        let r = c.send(5, vec![log[4]]);
        assert_eq!((r.chain.brk, r.answer.next), (None, 8));
        // Cut to 5 entries, then a new entry 5.
        let cut = chain(6, 5, "new");
        let r = c.send(6, vec![cut[5]]);
        let b = r.chain.brk.unwrap();
        assert_eq!((b.seq, b.kind, b.exact()), (5, BreakKind::Removed, false));
        let r = c.follow(&cut, &r.answer);
        assert!(r.chain.brk.unwrap().exact());
        // Emptied, then a new entry 0.
        let mut c = Centre::default();
        c.send(8, log);
        assert_eq!(c.send(0, vec![]).chain.brk, None);
        let b = c.send(1, chain(1, 0, "new")).chain.brk.unwrap();
        assert_eq!((b.seq, b.kind, b.exact()), (0, BreakKind::Removed, true));
    }

    #[test]
    fn a_chain_not_starting_from_genesis_or_not_linking_up_is_a_break_at_that_entry() {
        let mut c = Centre::default();
        let mut log = chain(3, 3, "");
        log[0].prev = [7; 32];
        let b = c.send(3, log).chain.brk.unwrap();
        assert_eq!(b.seq, 0);
        let mut c = Centre::default();
        let mut log = chain(3, 3, "");
        log[2].prev = [7; 32];
        let r = c.send(3, log);
        assert_eq!((r.chain.next, r.chain.brk.unwrap().seq), (2, 2));
    }

    #[test]
    fn a_malformed_report_is_refused_before_anything_is_decided() {
        let log = chain(3, 3, "");
        let report = AuditReport {
            len: 3,
            links: vec![log[1], log[0]],
        };
        assert!(receive(&CentreChain::default(), &BTreeMap::new(), &report, now()).is_err());
    }

    #[test]
    fn the_held_copy_is_checked_for_gaps_and_links() {
        let log = chain(4, 4, "");
        let mut w = (0, GENESIS);
        assert_eq!(
            check_held(&mut w, &[log[0], log[2]]),
            Err(HeldFault::Missing { seq: 1 })
        );
        let mut bad = log.clone();
        bad[2].prev = [1; 32];
        let mut w = (0, GENESIS);
        assert_eq!(
            check_held(&mut w, &bad),
            Err(HeldFault::Unlinked { seq: 2 })
        );
    }
}
