//! Writes the counter-query set of issue 17 as JSON lines (`{"kind","truth","body"}`, `body` a
//! `POST /v1/search` body) over the synthetic registry, for the outage- and central-search
//! benchmarks to run the same queries:
//!
//! ```text
//! cargo run -p onshi-fallback --example gen_queries -- --people 1000000 --seed 7 --per-kind 300 --out queries.jsonl
//! ```
//! The registry is `onshi_sync::synth::generate` with the same `--people` and `--seed` and today
//! 2025-06-15 (what `search_bench` and `onshi-reconciler`'s synthetic import use); the queries are
//! seeded from `--seed` too. Kinds: see BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/querygen.rs"]
mod querygen;

use chrono::NaiveDate;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!(
            "gen_queries --people N (1000000) --seed S (7) --per-kind K (300) --out FILE\nkinds: {}",
            querygen::KINDS.join(", ")
        );
        return;
    }
    let people: usize = arg("--people")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = arg("--seed").and_then(|v| v.parse().ok()).unwrap_or(7);
    let per_kind: usize = arg("--per-kind")
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let Some(out) = arg("--out") else {
        eprintln!("gen_queries: --out FILE is required");
        std::process::exit(2);
    };
    let today = NaiveDate::from_ymd_opt(2025, 6, 15).expect("date");
    let periods = onshi_sync::synth::generate(&onshi_sync::synth::SynthParams {
        people,
        seed,
        today,
    });
    let newest = querygen::newest_periods(&periods);
    let queries = querygen::generate(&newest, per_kind, seed ^ 0x17_17, today);
    querygen::write_jsonl(&queries, &out).expect("write the queries");
    println!(
        "{} queries ({} kinds) written to {out}",
        queries.len(),
        querygen::KINDS.len()
    );
}
