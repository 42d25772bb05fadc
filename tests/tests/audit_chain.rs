//! The access log's hash chain (issue 18 item 3), on real processes and real sled files:
//! `onshi-edge audit verify` names a changed, a removed and a reordered entry after the stopped
//! edge's store was tampered with through the store API; and a log rewritten and re-chained
//! consistently (which the edge's own walk cannot see) is caught by the reconciler, which holds the
//! chain's links, and named by `onshi-reconciler audit verify --facility`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use onshi_sync::audit_chain::{self, LinkedEntry, StoredValue};
use onshi_sync::store::{Store, Tree};
use onshi_tests::{
    Edge, EdgeOpts, FACILITY_A, Reconciler, TODAY, TestDir, card_check, edge_bin,
    reconciler_with_registry, run, wait_until,
};

/// The access log's tree and its entry keys, as the edge stores them.
const AUDIT_TREE: &str = "audit";

fn entry_key(seq: u64) -> Vec<u8> {
    let mut k = vec![b'e'];
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `onshi-edge audit verify --data DATA`: (exit code, stdout).
fn verify_edge(data: &Path) -> (i32, String) {
    let out = run(
        &edge_bin(),
        &["audit", "verify", "--data", &data.display().to_string()],
    );
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs `f` on the stopped edge's audit tree (the store API, as a tool with the disk would), then
/// makes it durable and lets go of the store.
fn with_audit_tree(data: &Path, f: impl FnOnce(&dyn Tree)) {
    let source = onshi_sync::vault::KeySource::choose(None, data);
    let (vault, _) = onshi_sync::sealed::Vault::open(&data.join("journal"), source, &[])
        .expect("the stopped edge's store (its key beside the data)");
    let store = vault.store();
    let tree = store.tree(AUDIT_TREE).unwrap();
    f(tree.as_ref());
    store.sync().unwrap();
}

/// Stops the edge cleanly (SIGTERM): its store is closed when the process is gone.
fn stop(edge: &mut Edge) {
    edge.proc.signal(libc::SIGTERM);
    edge.proc
        .wait_exit(Duration::from_secs(20))
        .expect("the edge stops on SIGTERM");
}

/// An edge that made `checks` checks (one access-log entry each).
fn edge_with_entries(t: &TestDir, checks: usize) -> (Reconciler, Edge) {
    let (pki, reg, rec) = reconciler_with_registry(t, &[FACILITY_A]);
    let edge = Edge::start(
        t,
        EdgeOpts::new(FACILITY_A, &t.join("edge"), &pki, rec.addr),
    );
    edge.wait_online();
    for _ in 0..checks {
        let (code, v) = edge.post_check(&card_check(reg.valid_insured(), TODAY));
        assert_eq!(code, 200, "{v}");
    }
    (rec, edge)
}

#[test]
fn audit_verify_names_a_changed_a_removed_and_a_reordered_entry() {
    let t = TestDir::new("audit-verify");
    let (_rec, mut edge) = edge_with_entries(&t, 6);
    let data = edge.opts.data.clone();
    // While the edge runs (it holds the store): through its admin socket.
    let (code, out) = verify_edge(&data);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("entries, chain intact"), "{out}");
    stop(&mut edge);
    let (code, out) = verify_edge(&data);
    assert_eq!(code, 0, "{out}");

    let mut saved = Vec::new();
    with_audit_tree(&data, |tree| {
        for seq in 0..6 {
            saved.push(tree.get(&entry_key(seq)).unwrap().expect("six entries"));
        }
    });
    let restore = |tree: &dyn Tree| {
        for (seq, v) in saved.iter().enumerate() {
            tree.insert(&entry_key(seq as u64), v).unwrap();
        }
    };

    // Changed: the actor of entry 2 renamed in place (still a well-formed entry).
    with_audit_tree(&data, |tree| {
        let mut v = saved[2].clone();
        let actor = onshi_tests::HARNESS_TOKEN.as_bytes();
        let at = v
            .windows(actor.len())
            .position(|w| w == actor)
            .expect("the actor's name in the entry");
        v[at] = b'X';
        tree.insert(&entry_key(2), &v).unwrap();
    });
    let (code, out) = verify_edge(&data);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("entry 2: changed"), "{out}");
    // Sequence numbers and hashes only: not even the actor.
    assert!(!out.contains("harness"), "{out}");

    // Removed: entry 3 gone.
    with_audit_tree(&data, |tree| {
        restore(tree);
        tree.remove(&entry_key(3)).unwrap();
    });
    let (code, out) = verify_edge(&data);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("entry 3: removed (a gap: the next entry present is 4)"),
        "{out}"
    );

    // Reordered: entries 4 and 5 swapped.
    with_audit_tree(&data, |tree| {
        restore(tree);
        tree.insert(&entry_key(4), &saved[5]).unwrap();
        tree.insert(&entry_key(5), &saved[4]).unwrap();
    });
    let (code, out) = verify_edge(&data);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("entry 4: reordered (entry 5 is stored in its place)"),
        "{out}"
    );

    // The last entry removed: the log's counter still says six.
    with_audit_tree(&data, |tree| {
        restore(tree);
        tree.remove(&entry_key(5)).unwrap();
    });
    let (code, out) = verify_edge(&data);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("entry 5: removed"), "{out}");

    with_audit_tree(&data, restore);
    let (code, out) = verify_edge(&data);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("6 entries, chain intact"), "{out}");
}

#[test]
fn a_log_rewritten_and_rechained_is_caught_by_the_reconciler() {
    let t = TestDir::new("audit-rewritten");
    let (rec, mut edge) = edge_with_entries(&t, 6);
    let data = edge.opts.data.clone();
    let centre = |rec: &Reconciler| {
        let (code, out, err) = rec.command(&["audit", "verify", "--facility", FACILITY_A]);
        (code, format!("{out}{err}"))
    };
    // The centre comes to hold the whole chain.
    let (code, out) = verify_edge(&data);
    assert_eq!(code, 0, "{out}");
    let held = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let (code, out) = centre(&rec);
        (code == 0 && out.contains("unbroken: 6 entries held")).then_some(out)
    });
    assert!(
        held.is_some(),
        "the centre never held the chain: {:?}",
        centre(&rec)
    );
    stop(&mut edge);

    // Entry 2 changed, and it and every entry after it re-hashed: a consistent chain.
    with_audit_tree(&data, |tree| {
        let mut prev = None;
        for seq in 0..6 {
            let v = tree.get(&entry_key(seq)).unwrap().unwrap();
            let StoredValue::Linked(mut e) = audit_chain::decode_stored(&v) else {
                panic!("entry {seq} is not linked");
            };
            if seq == 2 {
                let actor = onshi_tests::HARNESS_TOKEN.as_bytes();
                let at = e
                    .entry
                    .windows(actor.len())
                    .position(|w| w == actor)
                    .unwrap();
                e.entry[at] = b'X';
            }
            if seq >= 2 {
                e = LinkedEntry::new(seq, prev.unwrap(), e.entry);
                tree.insert(&entry_key(seq), &e.encode()).unwrap();
            }
            prev = Some(e.hash);
        }
    });
    // The edge's own walk cannot see it.
    let (code, out) = verify_edge(&data);
    assert_eq!(code, 0, "{out}");

    // The edge syncs again: the centre finds the break and narrows it to entry 2.
    let edge = Edge::start(&t, edge.opts.clone());
    edge.wait_online();
    let broken = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let (code, out) = centre(&rec);
        (code == 1 && out.contains("broken at entry 2: rewritten at the edge")).then_some(out)
    });
    let out = broken.unwrap_or_else(|| {
        panic!(
            "the centre never named entry 2: {:?}; reconciler log: {}",
            centre(&rec),
            rec.proc.stderr_tail(20)
        )
    });
    assert!(out.contains("entries before it agree"), "{out}");
    // Logged once, with the facility and the entry's number, nothing of its content.
    rec.proc
        .wait_stderr(&["access log chain broken"], Duration::from_secs(5))
        .expect("the reconciler warns");
    let log = rec.proc.stderr();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("access log chain broken"))
        .collect();
    assert!(
        warnings
            .iter()
            .all(|l| l.contains(FACILITY_A) && !l.contains("harness")),
        "{warnings:?}"
    );
    // And the edge hears of it.
    edge.proc
        .wait_stderr(
            &["no longer matches the chain it holds"],
            Duration::from_secs(10),
        )
        .expect("the edge logs the centre's finding");
}
