//! The access log: who read or wrote personal data, when, from where, and which records or people
//! it concerned (DOMAIN.md, "Consent, roles and logs").
//!
//! An [`AuditEntry`] is `{at, actor, role, action, subject, from}`. What may be in it is a type
//! rule: `action` is an [`AuditAction`], `subject` a list of typed ids ([`SubjectId`]: check,
//! record, person, account), `actor` an account name. There is no free-text field, so a searched
//! name, birth date or card number cannot be written here by mistake.
//!
//! Entries live in the edge's store, tree [`AUDIT_TREE`], under an 8-byte big-endian sequence that
//! only grows (the next one is kept under a meta key and, at open, probed past any entry written
//! after it). Nothing is ever removed by this module.
//!
//! **Tamper-evident** (issue 18): each entry is stored linked ([`onshi_sync::audit_chain`]): its
//! sequence, the hash of the entry before (entry 0: the genesis value), its own hash over the
//! sequence, that link and the content's stored bytes (postcard of [`AuditEntry`]), and those
//! bytes. [`AuditLog::verify`] walks the chain and names the first entry changed, removed
//! (a gap), reordered or unlinked; [`AuditLog::links`] gives the links the sync sends to the
//! centre, which keeps the chain of hashes and so sees a log rewritten consistently. A log of an
//! earlier version (entries without a link) is chained **once, at the first open**: each old
//! entry is stored again in the linked form around its content's bytes exactly as they were
//! (never re-encoded, so nothing of it changes), in order, resumable after a crash; then the
//! marker `chained` is set, and from then on an unlinked entry is a fault, never chained.
//!
//! **Durability is the caller's:** [`AuditLog::append_uncommitted`] writes without fsync, so that
//! the entry becomes durable in the same group commit as the request's own writes; the caller must
//! commit (`GroupCommit`) before it answers. An entry is never answered ahead of its commit, and
//! its link is never sent to the centre before it is durable (the sync commits first).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use onshi_model::PersonId;
use onshi_sync::audit_chain::{
    self, AuditLink, ChainVerdict, Digest, GENESIS, LinkedEntry, StoredValue,
};
use onshi_sync::crdt::RecordId;
use onshi_sync::store::{Store, StoreError, Tree};
use serde::{Deserialize, Serialize};

use super::accounts::AccountName;
use super::role::Role;

/// The store tree of the access log.
pub const AUDIT_TREE: &str = "audit";
const ENTRY_PREFIX: u8 = b'e';
const NEXT_KEY: &[u8] = b"next";
/// Set once every entry is linked (a log of an earlier version was chained, or a new log).
const CHAINED_KEY: &[u8] = b"chained";

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// An eligibility check (`POST /v1/checks`, a card at a reader).
    Check,
    /// A stored check read back (`GET /v1/checks/{id}`).
    CheckRead,
    /// An outage search (the values searched for are never logged).
    Search,
    /// A provisional record (self-declaration) made.
    Provisional,
    /// The worklist read.
    QueueRead,
    /// The whole journal exported.
    Export,
    /// A settled item closed.
    Close,
    /// A person chosen for an ambiguous settlement.
    ChooseCandidate,
    /// The access log itself read.
    AuditRead,
    /// An outage (disaster mode) requested.
    OutageRequest,
    SignIn,
    SignOut,
    UserAdd,
    UserDisable,
    UserPasswd,
    TokenAdd,
    TokenRevoke,
    /// A provisional record read back (`GET /v1/provisional/{id}`). Last: postcard stores the
    /// variant's index, so new actions go at the end.
    ProvisionalRead,
}

/// What an entry concerns: ids only, never values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectId {
    Check(RecordId),
    Record(RecordId),
    Person(PersonId),
    Account(AccountName),
}

/// One line of the access log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// The user's or token's name.
    pub actor: AccountName,
    /// The actor's role at the time.
    pub role: Role,
    pub action: AuditAction,
    pub subject: Vec<SubjectId>,
    /// The client's address (none for the file mailbox, which is local files).
    pub from: Option<IpAddr>,
}

/// The stored forms, by their first byte (postcard's variant index of the enum they were):
/// `V1(AuditEntry)` before issue 18 ([`audit_chain::UNLINKED_TAG`]), then a
/// [`LinkedEntry`] ([`audit_chain::LINKED_TAG`]) whose `entry` is postcard of [`AuditEntry`].
fn decode_entry(seq: u64, value: &[u8]) -> Result<AuditEntry, AuditError> {
    let corrupt = |reason: String| AuditError::Corrupt { seq, reason };
    let bytes = match audit_chain::decode_stored(value) {
        StoredValue::Linked(e) => e.entry,
        StoredValue::Unlinked(b) => b,
        StoredValue::Undecodable(r) => return Err(corrupt(r)),
    };
    postcard::from_bytes(&bytes).map_err(|e| corrupt(e.to_string()))
}

/// Which entries to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only this actor's entries.
    pub actor: Option<AccountName>,
    /// At most this many (0: no limit).
    pub limit: usize,
}

/// Entries in the order they were written; `more` when `limit` cut the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub more: bool,
}

/// Why the access log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("access log: {0}")]
    Store(#[from] StoreError),
    #[error("access log entry {seq}: {reason}")]
    Corrupt { seq: u64, reason: String },
    #[error("access log: the next sequence number is not readable: {0}")]
    BadNext(String),
    #[error("access log entry: cannot encode: {0}")]
    Encode(String),
}

/// Where the chain stands: the next sequence and the hash the next entry links to.
#[derive(Debug, Clone, Copy)]
struct Head {
    next: u64,
    prev: Digest,
}

/// The access log on the edge's store.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tree: Arc<dyn Tree>,
    /// Appends are serialised by it.
    head: Arc<Mutex<Head>>,
}

fn entry_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY_PREFIX;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn seq_of(key: &[u8]) -> u64 {
    key.get(1..9)
        .and_then(|b| b.try_into().ok())
        .map_or(u64::MAX, u64::from_be_bytes)
}

impl AuditLog {
    /// Opens the log's tree; the next sequence is the stored one, moved past any entry found there
    /// (an append whose meta write did not reach the disk). A log of an earlier version is chained
    /// first (see the module docs), durably.
    pub fn open(store: &dyn Store) -> Result<AuditLog, AuditError> {
        let tree = store.tree(AUDIT_TREE)?;
        if tree.get(CHAINED_KEY)?.is_none() {
            let converted = Self::chain_unlinked(tree.as_ref())?;
            tree.put(CHAINED_KEY, &converted.to_be_bytes())?;
            store.sync()?;
            if converted > 0 {
                tracing::info!(
                    entries = converted,
                    "access log of an earlier version chained (content unchanged)"
                );
            }
        }
        let mut next = match tree.get(NEXT_KEY)? {
            None => 0,
            Some(b) => u64::from_be_bytes(
                b.as_slice()
                    .try_into()
                    .map_err(|_| AuditError::BadNext(format!("{} bytes", b.len())))?,
            ),
        };
        while tree.get(&entry_key(next))?.is_some() {
            next += 1;
        }
        let prev = match next.checked_sub(1) {
            None => GENESIS,
            Some(last) => match tree.get(&entry_key(last))? {
                Some(v) => match audit_chain::decode_stored(&v) {
                    StoredValue::Linked(e) => e.hash,
                    // A damaged last entry: the chain goes on after it (from a value fixed by
                    // its bytes) and `audit verify` names it.
                    _ => {
                        tracing::error!(
                            seq = last,
                            "the access log's last entry is damaged; `onshi-edge audit verify` names it"
                        );
                        audit_chain::link_hash(last, &GENESIS, &v)
                    }
                },
                None => GENESIS,
            },
        };
        Ok(AuditLog {
            tree,
            head: Arc::new(Mutex::new(Head { next, prev })),
        })
    }

    /// Stores every unlinked entry again, linked, in order, around its content's bytes as they
    /// are; resumable (a linked entry met on the way is continued from). Returns how many.
    fn chain_unlinked(tree: &dyn Tree) -> Result<u64, AuditError> {
        let mut prev = GENESIS;
        let mut converted = 0;
        let entries: Vec<(u64, Vec<u8>)> = tree
            .scan_prefix(&[ENTRY_PREFIX])
            .map(|kv| kv.map(|(k, v)| (seq_of(&k), v)))
            .collect::<Result<_, _>>()?;
        for (seq, value) in entries {
            match audit_chain::decode_stored(&value) {
                StoredValue::Linked(e) => prev = e.hash,
                StoredValue::Unlinked(bytes) => {
                    let e = LinkedEntry::new(seq, prev, bytes);
                    tree.put(&entry_key(seq), &e.encode())?;
                    prev = e.hash;
                    converted += 1;
                }
                StoredValue::Undecodable(reason) => {
                    return Err(AuditError::Corrupt { seq, reason });
                }
            }
        }
        Ok(converted)
    }

    /// Appends an entry **without** making it durable: the caller commits it with the request's own
    /// writes (one group commit) before answering. Returns its sequence number.
    pub fn append_uncommitted(&self, entry: &AuditEntry) -> Result<u64, AuditError> {
        let bytes = postcard::to_allocvec(entry).map_err(|e| AuditError::Encode(e.to_string()))?;
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let seq = head.next;
        let linked = LinkedEntry::new(seq, head.prev, bytes);
        self.tree.put(&entry_key(seq), &linked.encode())?;
        self.tree.put(NEXT_KEY, &(seq + 1).to_be_bytes())?;
        *head = Head {
            next: seq + 1,
            prev: linked.hash,
        };
        Ok(seq)
    }

    /// Walks the whole chain (see [`audit_chain::walk`]): the first entry changed, removed,
    /// reordered or unlinked, if any. Reads only.
    pub fn verify(&self) -> Result<ChainVerdict, AuditError> {
        let counter = match self.tree.get(NEXT_KEY)? {
            Some(b) => b
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| AuditError::BadNext(format!("{} bytes", b.len())))?,
            None => 0,
        };
        // The counter in memory too: an entry whose counter write is not on disk yet counts.
        let counter = counter.max(self.len());
        let mut failed = None;
        let entries = self
            .tree
            .scan_prefix(&[ENTRY_PREFIX])
            .map_while(|kv| match kv {
                Ok((k, v)) => Some((seq_of(&k), audit_chain::decode_stored(&v))),
                Err(e) => {
                    failed = Some(e);
                    None
                }
            });
        let verdict = audit_chain::walk(entries, counter);
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(verdict),
        }
    }

    /// The links of the entries `seqs` that are stored linked (a damaged one is left out: the
    /// centre then asks again, and `audit verify` names it).
    pub fn links(&self, seqs: &[u64]) -> Result<Vec<AuditLink>, AuditError> {
        let mut out = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            if let Some(v) = self.tree.get(&entry_key(seq))?
                && let StoredValue::Linked(e) = audit_chain::decode_stored(&v)
                && e.seq == seq
            {
                out.push(e.link());
            }
        }
        Ok(out)
    }

    /// Entries matching `query`, oldest first.
    pub fn list(&self, query: &AuditQuery) -> Result<AuditPage, AuditError> {
        let mut entries = Vec::new();
        let mut more = false;
        for item in self.tree.scan_prefix(&[ENTRY_PREFIX]) {
            let (key, value) = item?;
            let entry = decode_entry(seq_of(&key), &value)?;
            if query.since.is_some_and(|s| entry.at < s)
                || query.actor.as_ref().is_some_and(|a| &entry.actor != a)
            {
                continue;
            }
            if query.limit != 0 && entries.len() == query.limit {
                more = true;
                break;
            }
            entries.push(entry);
        }
        Ok(AuditPage { entries, more })
    }

    /// The number of entries (for metrics).
    pub fn len(&self) -> u64 {
        self.head.lock().unwrap_or_else(|p| p.into_inner()).next
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onshi_model::FacilityCode;
    use onshi_sync::store::SledStore;

    fn entry(at: &str, actor: &str, action: AuditAction, subject: Vec<SubjectId>) -> AuditEntry {
        AuditEntry {
            at: at.parse().unwrap(),
            actor: AccountName::parse(actor).unwrap(),
            role: Role::Reception,
            action,
            subject,
            from: Some("192.168.1.20".parse().unwrap()),
        }
    }

    fn record(seq: u64) -> RecordId {
        RecordId::new(FacilityCode::parse("1311234567").unwrap(), 0x3f2a9c01, seq)
    }

    #[test]
    fn entries_survive_a_reopen_in_order_and_new_ones_go_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let person = PersonId::parse("P0000001").unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            let log = AuditLog::open(&store).unwrap();
            assert_eq!(
                log.append_uncommitted(&entry(
                    "2026-04-01T09:00:00Z",
                    "alice",
                    AuditAction::Check,
                    vec![
                        SubjectId::Check(record(1)),
                        SubjectId::Person(person.clone())
                    ],
                ))
                .unwrap(),
                0
            );
            log.append_uncommitted(&entry(
                "2026-04-01T09:05:00Z",
                "alice",
                AuditAction::Search,
                vec![SubjectId::Person(person.clone())],
            ))
            .unwrap();
            // The caller's commit.
            store.sync().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let log = AuditLog::open(&store).unwrap();
        assert_eq!(log.len(), 2);
        let seq = log
            .append_uncommitted(&entry(
                "2026-04-01T09:10:00Z",
                "root",
                AuditAction::Export,
                vec![],
            ))
            .unwrap();
        assert_eq!(seq, 2);
        let all = log.list(&AuditQuery::default()).unwrap();
        let actions: Vec<_> = all
            .entries
            .iter()
            .map(|e| (e.actor.as_str(), e.action))
            .collect();
        assert_eq!(
            actions,
            vec![
                ("alice", AuditAction::Check),
                ("alice", AuditAction::Search),
                ("root", AuditAction::Export)
            ]
        );
        assert!(!all.more);
        assert_eq!(
            all.entries[0].subject,
            vec![SubjectId::Check(record(1)), SubjectId::Person(person)]
        );
        assert_eq!(all.entries[0].from, Some("192.168.1.20".parse().unwrap()));
    }

    #[test]
    fn an_entry_written_after_the_stored_counter_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let log = AuditLog::open(&store).unwrap();
        log.append_uncommitted(&entry(
            "2026-04-01T09:00:00Z",
            "alice",
            AuditAction::Check,
            vec![],
        ))
        .unwrap();
        // As if the process died between writing entry 1 and the counter.
        log.append_uncommitted(&entry(
            "2026-04-01T09:01:00Z",
            "bob",
            AuditAction::Check,
            vec![],
        ))
        .unwrap();
        let tree = store.tree(AUDIT_TREE).unwrap();
        tree.insert(NEXT_KEY, &1u64.to_be_bytes()).unwrap();
        let reopened = AuditLog::open(&store).unwrap();
        assert_eq!(
            reopened
                .append_uncommitted(&entry(
                    "2026-04-01T09:02:00Z",
                    "carol",
                    AuditAction::Check,
                    vec![]
                ))
                .unwrap(),
            2
        );
        let actors: Vec<_> = reopened
            .list(&AuditQuery::default())
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.actor.to_string())
            .collect();
        assert_eq!(actors, ["alice", "bob", "carol"]);
        // And the chain goes on from bob's entry.
        assert_eq!(reopened.verify().unwrap().fault, None);
    }

    #[test]
    fn list_filters_by_time_and_actor_and_says_when_the_limit_cut_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let log = AuditLog::open(&store).unwrap();
        for (i, actor) in ["alice", "bob", "alice", "bob", "alice"].iter().enumerate() {
            log.append_uncommitted(&entry(
                &format!("2026-04-01T09:0{i}:00Z"),
                actor,
                AuditAction::QueueRead,
                vec![],
            ))
            .unwrap();
        }
        let q = |since: Option<&str>, actor: Option<&str>, limit| AuditQuery {
            since: since.map(|s| s.parse().unwrap()),
            actor: actor.map(|a| AccountName::parse(a).unwrap()),
            limit,
        };
        let times = |p: AuditPage| {
            p.entries
                .iter()
                .map(|e| e.at.format("%M").to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            times(log.list(&q(Some("2026-04-01T09:02:00Z"), None, 0)).unwrap()),
            ["02", "03", "04"]
        );
        assert_eq!(
            times(log.list(&q(None, Some("alice"), 0)).unwrap()),
            ["00", "02", "04"]
        );
        assert_eq!(
            times(
                log.list(&q(Some("2026-04-01T09:01:00Z"), Some("bob"), 0))
                    .unwrap()
            ),
            ["01", "03"]
        );
        let page = log.list(&q(None, None, 2)).unwrap();
        assert!(page.more);
        assert_eq!(times(page), ["00", "01"]);
        assert!(!log.list(&q(None, None, 5)).unwrap().more);
    }

    #[test]
    fn the_json_form_is_the_contract_s_and_holds_ids_only() {
        let e = entry(
            "2026-04-01T09:00:00Z",
            "alice",
            AuditAction::ChooseCandidate,
            vec![
                SubjectId::Record(record(42)),
                SubjectId::Person(PersonId::parse("P0000001").unwrap()),
            ],
        );
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({
                "at": "2026-04-01T09:00:00Z",
                "actor": "alice",
                "role": "reception",
                "action": "choose_candidate",
                "subject": [{"record": "1311234567-3f2a9c01-0000000042"}, {"person": "P0000001"}],
                "from": "192.168.1.20"
            })
        );
    }

    /// The stored form before issue 18.
    #[derive(Serialize)]
    enum StoredEntryV1 {
        V1(AuditEntry),
    }

    fn three(log_or_tree: &dyn Fn(u64, &AuditEntry)) {
        for (i, actor) in ["alice", "bob", "carol"].iter().enumerate() {
            log_or_tree(
                i as u64,
                &entry(
                    &format!("2026-04-01T09:0{i}:00Z"),
                    actor,
                    AuditAction::CheckRead,
                    vec![SubjectId::Check(record(i as u64))],
                ),
            );
        }
    }

    #[test]
    fn a_log_of_an_earlier_version_is_chained_once_at_open_with_its_content_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let tree = store.tree(AUDIT_TREE).unwrap();
        let mut old = Vec::new();
        three(&|seq, e| {
            let bytes = postcard::to_allocvec(&StoredEntryV1::V1(e.clone())).unwrap();
            tree.insert(&entry_key(seq), &bytes).unwrap();
        });
        tree.insert(NEXT_KEY, &3u64.to_be_bytes()).unwrap();
        for seq in 0..3 {
            old.push(tree.get(&entry_key(seq)).unwrap().unwrap());
        }
        // Half converted, as if killed mid-way: entry 0 linked, no marker yet.
        let first = LinkedEntry::new(0, GENESIS, old[0][1..].to_vec());
        tree.insert(&entry_key(0), &first.encode()).unwrap();

        let log = AuditLog::open(&store).unwrap();
        let v = log.verify().unwrap();
        assert_eq!((v.fault, v.checked), (None, 3));
        for (seq, was) in old.iter().enumerate() {
            let now = tree.get(&entry_key(seq as u64)).unwrap().unwrap();
            let StoredValue::Linked(e) = audit_chain::decode_stored(&now) else {
                panic!("entry {seq} not linked");
            };
            // The content's bytes exactly as the old version wrote them.
            assert_eq!(e.entry, was[1..]);
        }
        let actors: Vec<_> = log
            .list(&AuditQuery::default())
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.actor.to_string())
            .collect();
        assert_eq!(actors, ["alice", "bob", "carol"]);
        // New entries continue the chain.
        log.append_uncommitted(&entry(
            "2026-04-01T10:00:00Z",
            "root",
            AuditAction::Export,
            vec![],
        ))
        .unwrap();
        assert_eq!(log.verify().unwrap().fault, None);

        // Once chained, an unlinked entry slipped in is a fault, never chained.
        let forged = postcard::to_allocvec(&StoredEntryV1::V1(entry(
            "2026-04-01T09:01:00Z",
            "mallory",
            AuditAction::CheckRead,
            vec![],
        )))
        .unwrap();
        tree.insert(&entry_key(1), &forged).unwrap();
        let reopened = AuditLog::open(&store).unwrap();
        assert_eq!(
            reopened.verify().unwrap().fault,
            Some(audit_chain::ChainFault::Unchained { seq: 1 })
        );
    }

    #[test]
    fn verify_names_an_entry_changed_removed_or_reordered_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let log = AuditLog::open(&store).unwrap();
        three(&|_, e| {
            log.append_uncommitted(e).unwrap();
        });
        let tree = store.tree(AUDIT_TREE).unwrap();
        assert_eq!(log.verify().unwrap().fault, None);
        let saved: Vec<Vec<u8>> = (0..3)
            .map(|s| tree.get(&entry_key(s)).unwrap().unwrap())
            .collect();
        let restore = || {
            for (s, v) in saved.iter().enumerate() {
                tree.insert(&entry_key(s as u64), v).unwrap();
            }
        };
        // bob → eve: same length, still decodes.
        let mut changed = saved[1].clone();
        let at = changed.windows(3).position(|w| w == b"bob").unwrap();
        changed[at..at + 3].copy_from_slice(b"eve");
        tree.insert(&entry_key(1), &changed).unwrap();
        assert_eq!(
            log.list(&AuditQuery::default()).unwrap().entries[1]
                .actor
                .as_str(),
            "eve"
        );
        assert_eq!(
            log.verify().unwrap().fault.map(|f| f.to_string()),
            Some("entry 1: changed (its content or link no longer matches its hash)".into())
        );
        restore();
        tree.remove(&entry_key(1)).unwrap();
        assert_eq!(
            log.verify().unwrap().fault,
            Some(audit_chain::ChainFault::Removed {
                seq: 1,
                next_present: Some(2)
            })
        );
        restore();
        tree.insert(&entry_key(1), &saved[2]).unwrap();
        tree.insert(&entry_key(2), &saved[1]).unwrap();
        assert_eq!(
            log.verify().unwrap().fault,
            Some(audit_chain::ChainFault::Reordered { seq: 1, holds: 2 })
        );
        restore();
        let v = log.verify().unwrap();
        assert_eq!(v.fault, None);
        assert_eq!(log.links(&[0, 2]).unwrap()[1], v.head.unwrap());
    }
}
