//! The reconciler's facility follower: which certificate each facility may connect with, as the
//! centre's store records it (`onshi-reconciler facility add` / `revoke`), kept current in the
//! link's [`KnownFacilities`] while serving.
//!
//! At start, every `facility-*.pem` of the PKI directory whose facility the store does not know
//! yet is recorded with its certificate's fingerprint (so a deployment made with `pki init`
//! works as before); from then on the store is the truth. A task asks the store for its
//! facilities' version every [`FOLLOW_EVERY`] and, when it moved, reloads them into
//! [`KnownFacilities`]: the link then closes the connections whose certificate is no longer
//! accepted and lets a newly added facility in. Every instance sharing the store follows it.
//!
//! Must never: accept a certificate other than the one the store records for a facility (the
//! PKI directory only seeds facilities the store does not know), re-add a revoked facility from
//! the PKI directory, or call the store on an async worker (its calls block).

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use onshi_model::FacilityCode;
use onshi_sync::link::{Accepted, KnownFacilities};
use onshi_sync::pki::{Fingerprint, FingerprintError};
use tokio::task::JoinHandle;

use crate::store::{CentralError, CentralStore, FacilityEntry};

/// How often the follower asks the store whether the facilities changed (a cheap call): a
/// revocation or an addition takes effect on every instance within this, well inside 10 s.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// What the link accepts of a facility, by the store's record of it.
pub fn accepted_of(entry: &FacilityEntry) -> Result<Accepted, FingerprintError> {
    if !entry.is_active() {
        return Ok(Accepted::Revoked);
    }
    Fingerprint::parse(&entry.fingerprint).map(Accepted::Certificate)
}

/// What changed for one facility between two loads, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FacilityChange {
    /// A facility (or a revoked one re-issued) is accepted now.
    Added(FacilityCode),
    /// Its certificate was replaced by a newer one.
    Replaced(FacilityCode),
    /// Its certificate was revoked.
    Revoked(FacilityCode),
    /// It is no longer in the store at all.
    Removed(FacilityCode),
}

/// The changes from `before` to `after`, by facility code.
pub fn changes(
    before: &HashMap<FacilityCode, Accepted>,
    after: &HashMap<FacilityCode, Accepted>,
) -> Vec<FacilityChange> {
    let mut out = Vec::new();
    for (code, now) in after {
        let was = before.get(code);
        if was == Some(now) {
            continue;
        }
        let accepted_before = was.is_some_and(|a| *a != Accepted::Revoked);
        out.push(match now {
            Accepted::Revoked => FacilityChange::Revoked(code.clone()),
            _ if accepted_before => FacilityChange::Replaced(code.clone()),
            _ => FacilityChange::Added(code.clone()),
        });
    }
    for code in before.keys() {
        if !after.contains_key(code) {
            out.push(FacilityChange::Removed(code.clone()));
        }
    }
    out.sort_by(|a, b| code_of(a).cmp(code_of(b)));
    out
}

fn code_of(c: &FacilityChange) -> &FacilityCode {
    match c {
        FacilityChange::Added(f)
        | FacilityChange::Replaced(f)
        | FacilityChange::Revoked(f)
        | FacilityChange::Removed(f) => f,
    }
}

/// At start (blocking): records each facility with a certificate in `pki_dir` that the store
/// does not know yet; returns those recorded. A facility the store knows is left as the store
/// has it, with a warning when the directory's certificate is not the one accepted.
pub fn enrol_pki_dir(
    store: &dyn CentralStore,
    pki_dir: &Path,
    now: DateTime<Utc>,
) -> Result<Vec<FacilityCode>, CentralError> {
    let known: HashMap<FacilityCode, FacilityEntry> = store
        .facilities()?
        .into_iter()
        .map(|e| (e.code.clone(), e))
        .collect();
    let mut recorded = Vec::new();
    for code in onshi_sync::pki::facilities_in(pki_dir) {
        let fingerprint = match onshi_sync::pki::facility_fingerprint(pki_dir, &code) {
            Ok(fp) => fp,
            Err(e) => {
                tracing::warn!(facility = %code, error = %e, "a facility certificate in the PKI directory is not usable; not recorded");
                continue;
            }
        };
        match known.get(&code) {
            Some(entry) => {
                if entry.is_active() && entry.fingerprint != fingerprint.to_string() {
                    tracing::warn!(facility = %code, file = %fingerprint.short(), accepted = %entry.fingerprint.get(..16).unwrap_or(&entry.fingerprint), "the facility's certificate in the PKI directory is not the one the centre accepts (re-issue it with `onshi-reconciler facility add`)");
                }
            }
            None => {
                store.put_facility(&FacilityEntry {
                    code: code.clone(),
                    fingerprint: fingerprint.to_string(),
                    added_at: now,
                    revoked_at: None,
                })?;
                tracing::info!(facility = %code, fingerprint = %fingerprint.short(), "facility recorded from the PKI directory");
                recorded.push(code);
            }
        }
    }
    Ok(recorded)
}

/// What the store says the link accepts (blocking); a record whose fingerprint does not read is
/// logged and left out (the facility is refused as unknown).
pub fn load(store: &dyn CentralStore) -> Result<HashMap<FacilityCode, Accepted>, CentralError> {
    let mut out = HashMap::new();
    for entry in store.facilities()? {
        match accepted_of(&entry) {
            Ok(a) => {
                out.insert(entry.code, a);
            }
            Err(e) => {
                tracing::error!(facility = %entry.code, error = %e, "the store's record of a facility does not read; the facility is refused")
            }
        }
    }
    Ok(out)
}

/// At start (blocking): records the PKI directory's new facilities and loads the store's into a
/// new [`KnownFacilities`]; returns it with the facilities' version it reflects.
pub fn start(
    store: &dyn CentralStore,
    pki_dir: &Path,
) -> Result<(KnownFacilities, u64), CentralError> {
    enrol_pki_dir(store, pki_dir, Utc::now())?;
    // The version first: a change after it is seen by the follower's first look.
    let version = store.facilities_version()?;
    let known = KnownFacilities::accepting(load(store)?);
    Ok((known, version))
}

/// Follows the store's facilities into `known` until `shutdown`: every `every`, the version;
/// when it moved, a reload, each change logged.
pub fn follow(
    store: Arc<dyn CentralStore>,
    known: KnownFacilities,
    mut seen: u64,
    every: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::pin!(shutdown);
        let mut failing = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = &mut shutdown => break,
            }
            let s = store.clone();
            let read = tokio::task::spawn_blocking(move || {
                let version = s.facilities_version()?;
                if version == seen {
                    return Ok(None);
                }
                Ok::<_, CentralError>(Some((version, load(s.as_ref())?)))
            })
            .await
            .unwrap_or_else(|e| Err(CentralError::Database(format!("the follower failed: {e}"))));
            match read {
                Ok(None) => failing = false,
                Ok(Some((version, now))) => {
                    failing = false;
                    let before = known.snapshot();
                    for change in changes(&before, &now) {
                        log_change(&change);
                    }
                    known.replace_accepting(now);
                    seen = version;
                }
                Err(e) => {
                    // Once per episode: the known facilities stay as they were meanwhile.
                    if !failing {
                        tracing::error!(error = %e, "cannot read the facilities from the store; the known facilities stay as they are until it answers");
                    }
                    failing = true;
                }
            }
        }
    })
}

fn log_change(change: &FacilityChange) {
    match change {
        FacilityChange::Added(f) => {
            tracing::info!(facility = %f, "facility added: its certificate is accepted")
        }
        FacilityChange::Replaced(f) => {
            tracing::warn!(facility = %f, "facility certificate replaced: only the new one is accepted, connections with the old one are closed")
        }
        FacilityChange::Revoked(f) => {
            tracing::warn!(facility = %f, "facility certificate revoked: its connections are closed and refused")
        }
        FacilityChange::Removed(f) => {
            tracing::warn!(facility = %f, "facility no longer in the store: its connections are closed and refused")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> FacilityCode {
        FacilityCode::parse(s).expect("facility code")
    }

    fn entry(c: &str, fp: &Fingerprint, revoked: bool) -> FacilityEntry {
        FacilityEntry {
            code: code(c),
            fingerprint: fp.to_string(),
            added_at: DateTime::from_timestamp(1_700_000_000, 0).expect("time"),
            revoked_at: revoked.then(|| DateTime::from_timestamp(1_700_000_100, 0).expect("time")),
        }
    }

    #[test]
    fn the_store_record_decides_what_the_link_accepts() {
        let old = Fingerprint::of(b"old certificate");
        let new = Fingerprint::of(b"new certificate");
        assert_eq!(
            accepted_of(&entry("1311234567", &new, false)),
            Ok(Accepted::Certificate(new))
        );
        assert_eq!(
            accepted_of(&entry("1311234567", &new, true)),
            Ok(Accepted::Revoked)
        );
        let mut bad = entry("1311234567", &old, false);
        bad.fingerprint = "not hex".into();
        assert!(accepted_of(&bad).is_err());
    }

    #[test]
    fn changes_name_what_happened_to_each_facility() {
        let (a, b, c, d) = (
            code("1311234567"),
            code("1341234567"),
            code("2712345678"),
            code("0112345678"),
        );
        let fp = |s: &str| Accepted::Certificate(Fingerprint::of(s.as_bytes()));
        let before: HashMap<_, _> = [
            (a.clone(), fp("a1")),
            (b.clone(), fp("b1")),
            (c.clone(), fp("c1")),
            (d.clone(), Accepted::Revoked),
        ]
        .into();
        let after: HashMap<_, _> = [
            (a.clone(), fp("a1")),
            (b.clone(), fp("b2")),
            (c.clone(), Accepted::Revoked),
            (d.clone(), fp("d2")),
        ]
        .into();
        assert_eq!(
            changes(&before, &after),
            vec![
                FacilityChange::Added(d.clone()),
                FacilityChange::Replaced(b.clone()),
                FacilityChange::Revoked(c.clone()),
            ]
        );
        let fewer: HashMap<_, _> = [(a.clone(), fp("a1"))].into();
        assert_eq!(
            changes(&after, &fewer),
            vec![
                FacilityChange::Removed(d),
                FacilityChange::Removed(b),
                FacilityChange::Removed(c),
            ]
        );
    }
}
