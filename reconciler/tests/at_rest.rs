//! The embedded store at rest (issue 18), in process on real sled files: no name, reading, birth
//! date, address or card number in plain text in any file under the data directory (the keys of
//! central search's index included); a plain store of an earlier version converted at its first
//! open with a key and answering as before; a wrong or missing key refused with nothing changed;
//! a store another opener holds is `Busy` before any key is asked for (an operator's command then
//! goes through the running serve, which needs no key).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use onshi_model::{
    CheckOutcome, CheckRequest, CheckSubject, FacilityCode, InsuranceCardKey, Qualification,
};
use onshi_reconciler::store::embedded::{EmbeddedStore, check_key};
use onshi_reconciler::store::{
    Blocks, CentralError, CentralStore, FacilityEntry, SearchBlock, query_keys, search_keys,
};
use onshi_sync::registry::Registry;
use onshi_sync::store::{SledStore, Store};
use onshi_sync::vault::{Kek, KeySource};

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 4, 1).unwrap()
}

fn periods(people: usize, seed: u64) -> Vec<Qualification> {
    onshi_sync::synth::generate(&onshi_sync::synth::SynthParams {
        people,
        seed,
        today: today(),
    })
}

fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn sjis(s: &str) -> Vec<u8> {
    encoding_rs::SHIFT_JIS.encode(s).0.into_owned()
}

/// What of a period must never be found in plain text: each as UTF-8 and as Shift_JIS, long
/// enough (6 bytes) that sealed bytes do not hold it by chance.
fn personal(q: &Qualification) -> Vec<(String, Vec<u8>)> {
    let mut texts = vec![
        q.name.clone(),
        q.name_kana.clone(),
        onshi_model::text::to_halfwidth_kana(&q.name_kana),
        q.address.clone(),
        q.birth_date.format("%Y-%m-%d").to_string(),
        format!("{}{}", q.insurer_number.as_str(), q.number.as_str()),
        format!(
            "{}\u{1f}{}\u{1f}{}",
            q.insurer_number.as_str(),
            q.symbol.as_ref().map_or("", |s| s.as_str()),
            q.number.as_str()
        ),
        q.number.as_str().to_string(),
    ];
    for part in q.name.split(char::is_whitespace) {
        texts.push(part.to_string());
    }
    // Central search's keys (normalised names and readings) were its index's keys.
    texts.extend(search_keys(&q.name, &q.name_kana));
    let mut out = Vec::new();
    for t in texts {
        for bytes in [t.as_bytes().to_vec(), sjis(&t)] {
            if bytes.len() >= 6 {
                out.push((t.clone(), bytes));
            }
        }
    }
    out
}

fn assert_nothing_personal(dir: &Path, periods: &[Qualification]) {
    let needles: Vec<(String, Vec<u8>)> = periods.iter().flat_map(personal).collect();
    let finder = aho_corasick::AhoCorasick::new(needles.iter().map(|n| &n.1)).unwrap();
    let files = files_under(dir);
    assert!(!files.is_empty(), "{files:?}");
    for (path, bytes) in &files {
        if let Some(m) = finder.find(bytes.as_slice()) {
            panic!(
                "'{}' in plain text in {}",
                needles[m.pattern().as_usize()].0,
                path.display()
            );
        }
    }
}

/// Checks of every period on the day asked and on the day before it began, by its card.
fn checks(periods: &[Qualification]) -> Vec<CheckRequest> {
    periods
        .iter()
        .flat_map(|q| {
            [today(), q.acquired_on.pred_opt().unwrap()].map(|service_date| CheckRequest {
                subject: CheckSubject::InsuranceCard {
                    card: InsuranceCardKey::of(q),
                    birth_date: q.birth_date,
                },
                service_date,
            })
        })
        .collect()
}

/// Central search's blocks for the first `n` people: their name on their birth date, and their
/// name with a date one year off (found by the name keys alone).
fn blocks(periods: &[Qualification], n: usize) -> Vec<SearchBlock> {
    periods
        .iter()
        .take(n)
        .flat_map(|q| {
            let keys = query_keys(Some(&q.name), Some(&q.name_kana));
            let off = q.birth_date.with_year(q.birth_date.year() + 1).unwrap();
            [q.birth_date, off].map(|birth| SearchBlock {
                blocks: Blocks::All,
                birth_dates: vec![birth, birth.succ_opt().unwrap()],
                sex: q.sex,
                keys: keys.keys.clone(),
                split_keys: keys.splits.clone(),
                near_per_key: 16,
                cap: 200,
            })
        })
        .collect()
}

use chrono::Datelike;

/// What the store answers: each check's outcome and each block's people.
fn answers(
    store: &dyn CentralStore,
    checks: &[CheckRequest],
    blocks: &[SearchBlock],
) -> (Vec<CheckOutcome>, Vec<Vec<String>>) {
    let outcomes = checks.iter().map(|c| store.check(c).unwrap()).collect();
    let people = blocks
        .iter()
        .map(|b| {
            let mut p: Vec<String> = store
                .search_candidates(b)
                .unwrap()
                .periods
                .iter()
                .map(|q| q.person_id.as_str().to_string())
                .collect();
            p.sort();
            p.dedup();
            p
        })
        .collect();
    (outcomes, people)
}

fn facility_entry() -> FacilityEntry {
    FacilityEntry {
        code: FacilityCode::parse("1311234567").unwrap(),
        fingerprint: "ab".repeat(32),
        added_at: DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap(),
        revoked_at: None,
    }
}

#[test]
fn a_store_in_use_keeps_nothing_personal_in_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = KeySource::File(dir.path().join("data-key"));
    let periods = periods(150, 3);
    {
        let store = EmbeddedStore::open_with_key(&data, key.clone()).unwrap();
        store.import(&periods).unwrap();
        store.put_facility(&facility_entry()).unwrap();
        let (outcomes, found) = answers(&store, &checks(&periods[..20]), &blocks(&periods, 10));
        assert!(outcomes.iter().any(|o| !o.qualifications.is_empty()));
        for (q, people) in periods.iter().zip(found.chunks(2)) {
            for p in people {
                assert!(p.contains(&q.person_id.as_str().to_string()), "{q:?}");
            }
        }
    }
    assert_nothing_personal(&data, &periods);
}

#[test]
fn a_plain_store_of_an_earlier_version_is_converted_and_answers_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let periods = periods(150, 4);
    let (checks, blocks) = (checks(&periods[..30]), blocks(&periods, 15));
    // What a store answers that was encrypted from the start.
    let expected = {
        let store = EmbeddedStore::open(&dir.path().join("reference")).unwrap();
        store.import(&periods).unwrap();
        answers(&store, &checks, &blocks)
    };
    // A store as the previous version left it: the registry's trees, the change feed, a
    // facility, and central search's index under the old, plain keys.
    let data = dir.path().join("data");
    {
        let sled = Arc::new(SledStore::open(&data.join("registry")).unwrap());
        let registry = Registry::open(sled.clone()).unwrap();
        let changes = sled.tree("central.registry_changes").unwrap();
        let search = sled.tree("central.search").unwrap();
        for (i, q) in periods.iter().enumerate() {
            registry.put(q).unwrap();
            changes
                .insert(
                    &(i as u64 + 1).to_be_bytes(),
                    &serde_json::to_vec(q).unwrap(),
                )
                .unwrap();
            for k in search_keys(&q.name, &q.name_kana) {
                let mut e = k.into_bytes();
                e.push(0x1f);
                e.extend_from_slice(q.person_id.as_str().as_bytes());
                search.insert(&e, &[1]).unwrap();
            }
        }
        search.insert(b"\xffversion", &1i32.to_be_bytes()).unwrap();
        sled.tree("central.facilities")
            .unwrap()
            .insert(
                b"1311234567",
                &serde_json::to_vec(&facility_entry()).unwrap(),
            )
            .unwrap();
        sled.sync().unwrap();
    }
    let key = KeySource::File(dir.path().join("data-key"));
    let store = EmbeddedStore::open_with_key(&data, key).unwrap();
    assert_eq!(answers(&store, &checks, &blocks), expected);
    assert_eq!(store.facilities().unwrap(), vec![facility_entry()]);
    assert_eq!(store.registry_cursor().unwrap(), periods.len() as u64);
    let feed = store.registry_changes(0, 3).unwrap();
    assert_eq!(feed[2].qualification, periods[2]);
    drop(store);
    assert_nothing_personal(&data, &periods);
    let names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.contains("plain-old") && !n.contains("sealing")),
        "{names:?}"
    );
}

#[test]
fn a_wrong_or_missing_key_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let right = dir.path().join("right-key");
    let periods = periods(30, 5);
    {
        let store = EmbeddedStore::open_with_key(&data, KeySource::File(right.clone())).unwrap();
        store.import(&periods).unwrap();
    }
    let wrong = dir.path().join("wrong-key");
    Kek::generate().unwrap().write(&wrong).unwrap();
    let before = files_under(dir.path());

    let e = EmbeddedStore::open_with_key(&data, KeySource::File(wrong.clone())).unwrap_err();
    assert!(matches!(e, CentralError::Vault(_)), "{e:?}");
    assert!(e.to_string().contains("does not open"), "{e}");
    let e = check_key(&data, &KeySource::File(wrong)).unwrap_err();
    assert!(e.to_string().contains("does not open"), "{e}");
    let missing = KeySource::File(dir.path().join("no-such-key"));
    let e = EmbeddedStore::open_with_key(&data, missing.clone()).unwrap_err();
    assert!(e.to_string().contains("no data key was given"), "{e}");
    let e = check_key(&data, &missing).unwrap_err();
    assert!(e.to_string().contains("no data key was given"), "{e}");
    assert_eq!(files_under(dir.path()), before, "nothing changed");

    let store = EmbeddedStore::open_with_key(&data, KeySource::File(right.clone())).unwrap();
    assert_eq!(store.period_count().unwrap(), periods.len() as u64);
    assert!(
        check_key(&data, &KeySource::File(right))
            .unwrap()
            .starts_with("encrypted")
    );
}

#[test]
fn a_store_held_by_another_opener_is_busy_before_any_key_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let right = KeySource::File(dir.path().join("key"));
    let _held = EmbeddedStore::open_with_key(&data, right.clone()).unwrap();
    let nokey = KeySource::File(dir.path().join("no-such-key"));
    assert!(matches!(
        EmbeddedStore::open_with_key(&data, nokey),
        Err(CentralError::Busy)
    ));
    assert!(matches!(
        EmbeddedStore::open_with_key(&data, right),
        Err(CentralError::Busy)
    ));
    assert!(!dir.path().join("no-such-key").exists());
}

/// `onshi-reconciler key …` as an operator runs it.
fn key_cli(args: &[&str], data: &Path, crash_at: Option<&str>) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_onshi-reconciler"));
    cmd.arg("key").args(args).arg("--data-dir").arg(data);
    cmd.env_remove("ONSHI_CRASH_AT")
        .env_remove("CREDENTIALS_DIRECTORY");
    if let Some(at) = crash_at {
        cmd.env("ONSHI_CRASH_AT", at);
    }
    cmd.output().unwrap()
}

fn key_status(data: &Path, key: &Path) -> serde_json::Value {
    let out = key_cli(
        &["status", "--json", "--data-key", key.to_str().unwrap()],
        data,
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn keys_rotate_through_a_running_serve_and_offline_and_a_killed_data_rotation_is_finished() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("data-key");
    let periods = periods(300, 6);
    let (checks, blocks) = (checks(&periods[..30]), blocks(&periods, 15));

    // While serve runs (this process holds the store): through its admin socket, no key given.
    let expected = {
        let store =
            Arc::new(EmbeddedStore::open_with_key(&data, KeySource::File(key.clone())).unwrap());
        store.import(&periods).unwrap();
        let expected = answers(store.as_ref(), &checks, &blocks);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let socket = {
            let _in = rt.enter();
            onshi_reconciler::admin::serve_socket(&data, store.clone(), async move {
                let _ = stopped.await;
            })
            .unwrap()
        };
        let kek_before = store.vault().kek_fingerprint();
        let out = key_cli(&["rotate"], &data, None);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("key-encryption key rotated"), "{stdout}");
        let kek_after = store.vault().kek_fingerprint();
        assert_ne!(kek_before, kek_after);
        assert!(
            stdout.contains(&kek_after) && stdout.contains(key.to_str().unwrap()),
            "{stdout}"
        );
        let out = key_cli(&["rotate", "--data"], &data, None);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("data key rotation finished"), "{stdout}");
        let state = store.vault().key_state();
        assert_eq!((state.current, state.retiring.len()), (2, 0), "{state:?}");
        assert_eq!(answers(store.as_ref(), &checks, &blocks), expected);
        let out = key_cli(&["status", "--json"], &data, None);
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(status["data_key"], 2);
        assert_eq!(status["kek"], kek_after.as_str());
        let _ = stop.send(());
        rt.block_on(socket).unwrap();
        expected
    };

    // Stopped: the command opens the store itself, with the key.
    let old_key = dir.path().join("old-key");
    std::fs::copy(&key, &old_key).unwrap();
    let before = key_status(&data, &key);
    let out = key_cli(
        &["rotate", "--data-key", key.to_str().unwrap()],
        &data,
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = key_status(&data, &key);
    assert_ne!(before["kek"], after["kek"]);
    let e = check_key(&data, &KeySource::File(old_key)).unwrap_err();
    assert!(e.to_string().contains("does not open"), "{e}");

    // A data key rotation killed mid-way: the next open (here `key status`) finishes it.
    let out = key_cli(
        &["rotate", "--data", "--data-key", key.to_str().unwrap()],
        &data,
        Some("reseal:40"),
    );
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = key_status(&data, &key);
    assert_eq!(status["data_key"], 3, "{status}");
    assert!(status["rotation"].is_null(), "{status}");
    let store = EmbeddedStore::open_with_key(&data, KeySource::File(key.clone())).unwrap();
    assert!(store.vault().key_state().retiring.is_empty());
    assert_eq!(answers(&store, &checks, &blocks), expected);
    drop(store);
    assert_nothing_personal(&data, &periods);
}
