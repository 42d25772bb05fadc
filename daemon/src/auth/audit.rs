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
//! after it), as postcard behind a version tag. Nothing is ever removed by this module.
//!
//! **Durability is the caller's:** [`AuditLog::append_uncommitted`] writes without fsync, so that
//! the entry becomes durable in the same group commit as the request's own writes; the caller must
//! commit (`GroupCommit`) before it answers. An entry is never answered ahead of its commit.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use onshi_model::PersonId;
use onshi_sync::crdt::RecordId;
use onshi_sync::store::{Store, StoreError, Tree};
use serde::{Deserialize, Serialize};

use super::accounts::AccountName;
use super::role::Role;

/// The store tree of the access log.
pub const AUDIT_TREE: &str = "audit";
const ENTRY_PREFIX: u8 = b'e';
const NEXT_KEY: &[u8] = b"next";

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
    /// A provisional record read back (the page's printable self-declaration sheet). Last, so the
    /// stored entries' postcard indexes of the others stay what they were.
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

/// The stored form, behind a version tag.
#[derive(Debug, Serialize, Deserialize)]
enum StoredEntry {
    V1(AuditEntry),
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

/// The access log on the edge's store.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tree: Arc<dyn Tree>,
    /// The next sequence number; appends are serialised by it.
    next: Arc<Mutex<u64>>,
}

fn entry_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY_PREFIX;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl AuditLog {
    /// Opens the log's tree; the next sequence is the stored one, moved past any entry found there
    /// (an append whose meta write did not reach the disk).
    pub fn open(store: &dyn Store) -> Result<AuditLog, AuditError> {
        let tree = store.tree(AUDIT_TREE)?;
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
        Ok(AuditLog {
            tree,
            next: Arc::new(Mutex::new(next)),
        })
    }

    /// Appends an entry **without** making it durable: the caller commits it with the request's own
    /// writes (one group commit) before answering. Returns its sequence number.
    pub fn append_uncommitted(&self, entry: &AuditEntry) -> Result<u64, AuditError> {
        let bytes = postcard::to_allocvec(&StoredEntry::V1(entry.clone()))
            .map_err(|e| AuditError::Encode(e.to_string()))?;
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let seq = *next;
        self.tree.insert(&entry_key(seq), &bytes)?;
        self.tree.insert(NEXT_KEY, &(seq + 1).to_be_bytes())?;
        *next = seq + 1;
        Ok(seq)
    }

    /// Entries matching `query`, oldest first.
    pub fn list(&self, query: &AuditQuery) -> Result<AuditPage, AuditError> {
        let mut entries = Vec::new();
        let mut more = false;
        for item in self.tree.scan_prefix(&[ENTRY_PREFIX]) {
            let (key, value) = item?;
            let seq = key
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map_or(u64::MAX, u64::from_be_bytes);
            let entry = match postcard::from_bytes::<StoredEntry>(&value) {
                Ok(StoredEntry::V1(e)) => e,
                Err(e) => {
                    return Err(AuditError::Corrupt {
                        seq,
                        reason: e.to_string(),
                    });
                }
            };
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
        *self.next.lock().unwrap_or_else(|p| p.into_inner())
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
        let tree = store.tree(AUDIT_TREE).unwrap();
        let bytes = postcard::to_allocvec(&StoredEntry::V1(entry(
            "2026-04-01T09:01:00Z",
            "bob",
            AuditAction::Check,
            vec![],
        )))
        .unwrap();
        tree.insert(&entry_key(1), &bytes).unwrap();
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
}
