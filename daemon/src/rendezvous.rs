//! The order in which an edge tries several reconciler instances: rendezvous (highest random
//! weight) hashing of its facility code with each address as written. Facilities spread evenly
//! over the instances, and when an instance leaves the list, only its own facilities move (each to
//! its next choice, again spread evenly); every other facility keeps its order.
//!
//! The weight is SHA-256, a fixed function: the order of a facility must never change with the
//! Rust version or the build (std's `DefaultHasher` may), or every edge would move at an upgrade.
//! Pure: no IO, no clock, no randomness.

use ring::digest::{SHA256, digest};

/// A facility's weight for one address: the first eight bytes of SHA-256(code, 0, address).
/// The zero byte keeps (`"1311", "2:7700"`) and (`"13112", ":7700"`) apart.
fn weight(facility: &str, address: &str) -> u64 {
    let mut input = Vec::with_capacity(facility.len() + 1 + address.len());
    input.extend_from_slice(facility.as_bytes());
    input.push(0);
    input.extend_from_slice(address.as_bytes());
    let hash = digest(&SHA256, &input);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// The positions of `addresses` in the order `facility` tries them: the highest weight first.
/// Equal weights (never seen with SHA-256) fall back to the address, so the order is total.
pub(crate) fn order(facility: &str, addresses: &[String]) -> Vec<usize> {
    let mut ranked: Vec<(u64, &str, usize)> = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| (weight(facility, a), a.as_str(), i))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    ranked.into_iter().map(|(_, _, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn ordered<'a>(facility: &str, addresses: &'a [String]) -> Vec<&'a str> {
        order(facility, addresses)
            .into_iter()
            .map(|i| addresses[i].as_str())
            .collect()
    }

    /// Ten thousand facility codes, as varied as real ones (prefecture, fee table, number).
    fn facilities() -> impl Iterator<Item = String> {
        (0..10_000u32).map(|i| format!("{:02}1{:07}", 1 + i % 47, i * 7919 % 10_000_000))
    }

    #[test]
    fn the_order_is_fixed_by_the_facility_and_the_addresses_alone() {
        let addrs = list(&["reconciler-a.example:7700", "reconciler-b.example:7700"]);
        // Pinned (and checked against Python's hashlib): SHA-256 gives these on every build and
        // platform; a change here would move every edge at an upgrade.
        assert_eq!(weight("1311234567", &addrs[0]), 0xd200_8304_7fa1_f37a);
        assert_eq!(
            ordered("1311234567", &addrs),
            vec!["reconciler-a.example:7700", "reconciler-b.example:7700"]
        );
        assert_eq!(
            ordered("2711234567", &addrs),
            vec!["reconciler-b.example:7700", "reconciler-a.example:7700"]
        );
        // The order the list is written in does not matter.
        let reversed = list(&["reconciler-b.example:7700", "reconciler-a.example:7700"]);
        for f in facilities().take(100) {
            assert_eq!(ordered(&f, &addrs), ordered(&f, &reversed), "{f}");
        }
        // One address: itself.
        assert_eq!(order("1311234567", &list(&["127.0.0.1:7700"])), vec![0]);
        assert!(order("1311234567", &[]).is_empty());
    }

    #[test]
    fn each_address_comes_first_for_its_fair_share() {
        for addrs in [
            list(&["10.0.0.1:7700", "10.0.0.2:7700"]),
            list(&["10.0.0.1:7700", "10.0.0.2:7700", "10.0.0.3:7700"]),
        ] {
            let mut first = vec![0usize; addrs.len()];
            let mut n = 0;
            for f in facilities() {
                first[order(&f, &addrs)[0]] += 1;
                n += 1;
            }
            let fair = n as f64 / addrs.len() as f64;
            for (i, got) in first.iter().enumerate() {
                let off = (*got as f64 - fair).abs() / fair;
                assert!(
                    off < 0.05,
                    "{} of {n} facilities start at {} (fair: {fair:.0}, off by {:.1} %)",
                    got,
                    addrs[i],
                    off * 100.0
                );
            }
        }
    }

    #[test]
    fn removing_an_address_keeps_the_order_of_the_others() {
        let all = list(&["10.0.0.1:7700", "10.0.0.2:7700", "10.0.0.3:7700"]);
        let mut moved = 0;
        for gone in 0..all.len() {
            let rest: Vec<String> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != gone)
                .map(|(_, a)| a.clone())
                .collect();
            for f in facilities() {
                let before: Vec<&str> = ordered(&f, &all)
                    .into_iter()
                    .filter(|a| *a != all[gone])
                    .collect();
                assert_eq!(ordered(&f, &rest), before, "{f} without {}", all[gone]);
                if ordered(&f, &all)[0] == all[gone] {
                    moved += 1;
                }
            }
        }
        // Only the facilities that started at the removed address changed their first choice.
        assert!(moved > 0);
    }
}
