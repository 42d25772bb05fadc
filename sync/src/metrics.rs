//! Prometheus text exposition (format 0.0.4) for both daemons' `/metrics`: a latency histogram with
//! fixed buckets on atomics, a labelled counter, and [`Exposition`], which writes `# HELP`/`# TYPE`
//! and the samples. Hand-written because the daemons need four kinds of line, not a registry.
//!
//! Must never carry personal data in a label: labels are sources, validities, kinds, modes and
//! facility codes (a facility is not a person), never a name, card number or birth date.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) for answer latencies: the online deadline is 1.5 s by default.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
];

/// A histogram of durations with fixed bucket bounds (cumulative on output, as Prometheus wants).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts per bucket; the last one is `+Inf`.
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// A histogram with [`LATENCY_BUCKETS`].
    pub fn latency() -> Self {
        Self::new(LATENCY_BUCKETS)
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::latency()
    }
}

/// Counters keyed by a small, fixed-vocabulary label set (e.g. `("online", "valid")`).
#[derive(Debug, Default)]
pub struct LabelledCounter(Mutex<BTreeMap<Vec<String>, u64>>);

impl LabelledCounter {
    pub fn inc(&self, labels: &[&str]) {
        self.add(labels, 1);
    }

    pub fn add(&self, labels: &[&str], n: u64) {
        let key = labels.iter().map(|s| (*s).to_string()).collect();
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default() += n;
    }

    /// Every label set seen with its count, sorted.
    pub fn snapshot(&self) -> Vec<(Vec<String>, u64)> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// The count of one label set (0 if never seen).
    pub fn get(&self, labels: &[&str]) -> u64 {
        let key: Vec<String> = labels.iter().map(|s| (*s).to_string()).collect();
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .copied()
            .unwrap_or(0)
    }
}

/// `{a="x",b="y"}` with values escaped as the text format requires; empty for no labels.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A metrics page being written.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One counter family: `(labels, value)` per sample (`labels` from [`labels`]).
    pub fn counter(&mut self, name: &str, help: &str, samples: &[(String, u64)]) {
        self.head(name, "counter", help);
        for (l, v) in samples {
            let _ = writeln!(self.text, "{name}{l} {v}");
        }
    }

    /// A counter family from a [`LabelledCounter`] whose labels are named `names`.
    pub fn labelled_counter(
        &mut self,
        name: &str,
        help: &str,
        names: &[&str],
        counter: &LabelledCounter,
    ) {
        let samples: Vec<(String, u64)> = counter
            .snapshot()
            .into_iter()
            .map(|(values, v)| {
                let pairs: Vec<(&str, &str)> = names
                    .iter()
                    .copied()
                    .zip(values.iter().map(String::as_str))
                    .collect();
                (labels(&pairs), v)
            })
            .collect();
        self.counter(name, help, &samples);
    }

    /// One gauge family.
    pub fn gauge(&mut self, name: &str, help: &str, samples: &[(String, f64)]) {
        self.head(name, "gauge", help);
        for (l, v) in samples {
            let _ = writeln!(self.text, "{name}{l} {}", number(*v));
        }
    }

    /// One unlabelled gauge.
    pub fn gauge1(&mut self, name: &str, help: &str, value: f64) {
        self.gauge(name, help, &[(String::new(), value)]);
    }

    /// One histogram family: `(labels, histogram)` per series, `labels` as the inner part
    /// (`a="x"`) or empty.
    pub fn histogram(&mut self, name: &str, help: &str, series: &[(&[(&str, &str)], &Histogram)]) {
        self.head(name, "histogram", help);
        for (pairs, h) in series {
            let mut cumulative = 0u64;
            for (i, c) in h.counts.iter().enumerate() {
                cumulative += c.load(Ordering::Relaxed);
                let le = h.bounds.get(i).map_or("+Inf".to_string(), |b| number(*b));
                let mut all: Vec<(&str, &str)> = pairs.to_vec();
                all.push(("le", &le));
                let _ = writeln!(self.text, "{name}_bucket{} {cumulative}", labels(&all));
            }
            let sum = h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(self.text, "{name}_sum{} {}", labels(pairs), number(sum));
            let _ = writeln!(self.text, "{name}_count{} {cumulative}", labels(pairs));
        }
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// A sample value as the text format writes it (integers without a fraction).
fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_with_sum_and_count() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(3));
        let mut e = Exposition::new();
        e.histogram("x_seconds", "X.", &[(&[("source", "online")], &h)]);
        let text = e.finish();
        assert!(
            text.contains("x_seconds_bucket{source=\"online\",le=\"0.1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{source=\"online\",le=\"1\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{source=\"online\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_count{source=\"online\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_sum{source=\"online\"} 3.55\n"),
            "{text}"
        );
        assert!(text.starts_with("# HELP x_seconds X.\n# TYPE x_seconds histogram\n"));
    }

    #[test]
    fn labels_are_escaped_and_counters_grouped() {
        assert_eq!(labels(&[("a", "x\"y\\")]), "{a=\"x\\\"y\\\\\"}");
        let c = LabelledCounter::default();
        c.inc(&["online", "valid"]);
        c.add(&["online", "valid"], 2);
        c.inc(&["replica", "invalid"]);
        let mut e = Exposition::new();
        e.labelled_counter("c_total", "C.", &["source", "validity"], &c);
        let text = e.finish();
        assert!(text.contains("c_total{source=\"online\",validity=\"valid\"} 3\n"));
        assert!(text.contains("c_total{source=\"replica\",validity=\"invalid\"} 1\n"));
        assert_eq!(c.get(&["online", "valid"]), 3);
    }
}
