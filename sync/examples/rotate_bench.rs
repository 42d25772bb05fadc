//! Issue 18's key benchmark: how long the key operations take on a store of N records.
//!
//! ```sh
//! cargo run --release -p onshi-sync --example rotate_bench -- --people 870000 --dir /var/tmp/rb
//! ```
//!
//! Fills an encrypted store (a [`Vault`] on sled, as the edge opens `DATA/journal`) with the
//! synthetic registry's periods as the edge's replica keeps them (≈ 1.15 periods a person: 870,000
//! people ≈ 1,000,000 records), made durable; then times `key rotate` (a new key-encryption key:
//! the keyring re-wrapped) and `key rotate --data` (a new data key: every value re-sealed, as the
//! edge's background task does it); then, on a plain store of the same records as an earlier
//! version left it, the conversion at the first open with a key. Prints one JSON line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use onshi_sync::registry::Registry;
use onshi_sync::sealed::{ResealProgress, Vault};
use onshi_sync::store::{SledStore, Store};
use onshi_sync::vault::{Kek, KeySource};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn fill(store: Arc<dyn Store>, periods: &[onshi_model::Qualification]) -> f64 {
    let t = Instant::now();
    let reg = Registry::open_named(store.clone(), "replica").expect("registry");
    for q in periods {
        reg.put(q).expect("put");
    }
    store.sync().expect("sync");
    t.elapsed().as_secs_f64()
}

fn main() {
    let people: usize = arg("--people").map_or(870_000, |s| s.parse().expect("--people N"));
    let base = PathBuf::from(arg("--dir").unwrap_or_else(|| "/var/tmp/onshi-rotate-bench".into()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("--dir");
    let periods = onshi_sync::synth::generate(&onshi_sync::synth::SynthParams {
        people,
        seed: 7,
        today: chrono::NaiveDate::from_ymd_opt(2025, 6, 15).expect("date"),
    });
    let records = periods.len();

    // An encrypted store, filled.
    let key = KeySource::File(base.join("k"));
    let (vault, _) = Vault::open(&base.join("journal"), key, &[]).expect("vault");
    let fill_s = fill(Arc::new(vault.store().clone()), &periods);
    let stored = vault
        .store()
        .inner()
        .tree("replica.periods")
        .expect("tree")
        .len();

    let t = Instant::now();
    vault
        .rotate_kek(Kek::generate().expect("key"), |k| k.write(&base.join("k")))
        .expect("kek rotation");
    let kek_ms = t.elapsed().as_secs_f64() * 1000.0;

    let t = Instant::now();
    vault.start_data_rotation().expect("data rotation");
    let progress = ResealProgress::default();
    let resealed = vault.reseal(&progress).expect("reseal");
    let reseal_s = t.elapsed().as_secs_f64();
    let rss = rss_mib();
    drop(vault);

    // A plain store of the same records, converted at the first open with a key.
    let plain_dir = base.join("plain").join("journal");
    {
        let plain: Arc<dyn Store> = Arc::new(SledStore::open(&plain_dir).expect("plain store"));
        fill(plain, &periods);
    }
    let t = Instant::now();
    let (converted, report) =
        Vault::open(&plain_dir, KeySource::File(base.join("k2")), &[]).expect("conversion");
    let convert_s = t.elapsed().as_secs_f64();
    drop(converted);
    let _ = std::fs::remove_dir_all(&base);

    println!(
        "{}",
        serde_json::json!({
            "people": people,
            "records": records,
            "stored_periods": stored,
            "values_resealed": resealed,
            "fill_s": fill_s,
            "kek_rotation_ms": kek_ms,
            "data_key_rotation_s": reseal_s,
            "resealed_per_s": resealed as f64 / reseal_s,
            "conversion_s": convert_s,
            "converted_entries": report.converted,
            "rss_mib_after_reseal": rss,
        })
    );
}
