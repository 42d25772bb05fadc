//! The sign-in throttle: failed sign-ins are slowed per user name and per client address, so a
//! password cannot be guessed quickly at one name, nor many names tried from one machine.
//!
//! The first [`ThrottleSettings::free_failures`] failures cost nothing (people mistype); each
//! further attempt must wait, from the last failure, a delay that starts at `first_delay` and
//! doubles up to `max_delay` (by default 3 free, then 1 s, 2 s, 4 s … 60 s). A success resets the
//! user's and the address's counts; failures older than `forget_after` are forgotten. IPv6
//! addresses count per /64 (one machine usually holds a whole /64). Memory is bounded: at
//! `capacity` entries the one with the oldest failure is dropped. Pure: `now` is passed in; the
//! route answers [`Verdict::Wait`] with 429 and `Retry-After`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How the throttle behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleSettings {
    pub free_failures: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    pub forget_after: Duration,
    pub capacity: usize,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            free_failures: 3,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            forget_after: Duration::from_secs(15 * 60),
            capacity: 10_000,
        }
    }
}

/// Whether a sign-in may be tried now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    Allow,
    /// Try again after this long (HTTP 429, `Retry-After` rounded up to whole seconds).
    Wait(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Addr(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// The failures seen, per user name and per address.
#[derive(Debug, Default)]
pub struct Throttle {
    settings: ThrottleSettings,
    failures: HashMap<Key, Failures>,
}

impl Throttle {
    pub fn new(settings: ThrottleSettings) -> Throttle {
        Throttle {
            settings,
            failures: HashMap::new(),
        }
    }

    /// Whether `user` may try to sign in from `from` now: the longer of the two waits.
    pub fn check(&self, user: &str, from: IpAddr, now: Instant) -> Verdict {
        let wait = [
            self.wait(&user_key(user), now),
            self.wait(&addr_key(from), now),
        ]
        .into_iter()
        .max()
        .unwrap_or_default();
        if wait.is_zero() {
            Verdict::Allow
        } else {
            Verdict::Wait(wait)
        }
    }

    /// Records a failed sign-in.
    pub fn failed(&mut self, user: &str, from: IpAddr, now: Instant) {
        for key in [user_key(user), addr_key(from)] {
            let forget = self.settings.forget_after;
            match self.failures.get_mut(&key) {
                Some(f) if now.saturating_duration_since(f.last) <= forget => {
                    f.count = f.count.saturating_add(1);
                    f.last = now;
                }
                Some(f) => {
                    *f = Failures {
                        count: 1,
                        last: now,
                    }
                }
                None => {
                    self.make_room(now);
                    self.failures.insert(
                        key,
                        Failures {
                            count: 1,
                            last: now,
                        },
                    );
                }
            }
        }
    }

    /// Records a successful sign-in: the user's and the address's counts start again.
    pub fn succeeded(&mut self, user: &str, from: IpAddr) {
        self.failures.remove(&user_key(user));
        self.failures.remove(&addr_key(from));
    }

    pub fn len(&self) -> usize {
        self.failures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.failures.is_empty()
    }

    fn wait(&self, key: &Key, now: Instant) -> Duration {
        let Some(f) = self.failures.get(key) else {
            return Duration::ZERO;
        };
        let s = &self.settings;
        if f.count < s.free_failures || now.saturating_duration_since(f.last) > s.forget_after {
            return Duration::ZERO;
        }
        let doublings = f.count - s.free_failures;
        let delay = s
            .first_delay
            .checked_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
            .unwrap_or(s.max_delay)
            .min(s.max_delay);
        (f.last + delay).saturating_duration_since(now)
    }

    /// Drops forgotten entries, then the oldest, until one more fits.
    fn make_room(&mut self, now: Instant) {
        if self.failures.len() < self.settings.capacity.max(2) {
            return;
        }
        let forget = self.settings.forget_after;
        self.failures
            .retain(|_, f| now.saturating_duration_since(f.last) <= forget);
        while self.failures.len() >= self.settings.capacity.max(2) {
            let Some(oldest) = self
                .failures
                .iter()
                .min_by_key(|(_, f)| f.last)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.failures.remove(&oldest);
        }
    }
}

fn user_key(user: &str) -> Key {
    // Names are ASCII; fold case so `Alice` and `alice` share one count.
    Key::User(user.to_ascii_lowercase())
}

fn addr_key(addr: IpAddr) -> Key {
    match addr {
        IpAddr::V4(_) => Key::Addr(addr),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Key::Addr(IpAddr::V4(v4)),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                Key::Addr(IpAddr::V6(seg.into()))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 10));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 11));

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn three_free_failures_then_waits_doubling_to_a_minute() {
        let mut t = Throttle::default();
        let mut now = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..10 {
            assert_eq!(t.check("alice", A, now), Verdict::Allow);
            t.failed("alice", A, now);
            match t.check("alice", A, now) {
                Verdict::Allow => waits.push(Duration::ZERO),
                Verdict::Wait(w) => {
                    waits.push(w);
                    // Trying again before the time is up is still refused, just less long.
                    assert_eq!(t.check("alice", A, now + w / 2), Verdict::Wait(w - w / 2));
                    now += w;
                    assert_eq!(t.check("alice", A, now), Verdict::Allow);
                }
            }
        }
        assert_eq!(
            waits,
            vec![
                s(0),
                s(0),
                s(1),
                s(2),
                s(4),
                s(8),
                s(16),
                s(32),
                s(60),
                s(60)
            ]
        );
    }

    #[test]
    fn per_user_across_addresses_and_per_address_across_users() {
        let mut t = Throttle::default();
        let now = Instant::now();
        for _ in 0..4 {
            t.failed("alice", A, now);
        }
        // Same name from another machine: slowed (guessing alice's password from many places).
        assert_eq!(t.check("alice", B, now), Verdict::Wait(s(2)));
        assert_eq!(t.check("ALICE", B, now), Verdict::Wait(s(2)));
        // Another name from the same machine: slowed (trying many names from one place).
        assert_eq!(t.check("bob", A, now), Verdict::Wait(s(2)));
        // Another name from another machine: free.
        assert_eq!(t.check("bob", B, now), Verdict::Allow);
    }

    #[test]
    fn a_success_resets_and_old_failures_are_forgotten() {
        let mut t = Throttle::default();
        let now = Instant::now();
        for _ in 0..5 {
            t.failed("alice", A, now);
        }
        t.succeeded("alice", A);
        assert_eq!(t.check("alice", A, now), Verdict::Allow);
        assert!(t.is_empty());
        for _ in 0..5 {
            t.failed("alice", A, now);
        }
        let later = now + s(15 * 60 + 1);
        assert_eq!(t.check("alice", A, later), Verdict::Allow);
        // A failure after the quiet time counts as the first one.
        t.failed("alice", A, later);
        assert_eq!(t.check("alice", A, later), Verdict::Allow);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let mut t = Throttle::default();
        let now = Instant::now();
        let a: IpAddr = "2001:db8:1:2::10".parse().unwrap();
        let same64: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let other64: IpAddr = "2001:db8:1:3::10".parse().unwrap();
        for i in 0..3 {
            t.failed(&format!("user{i}"), a, now);
        }
        assert_eq!(t.check("someone", same64, now), Verdict::Wait(s(1)));
        assert_eq!(t.check("someone", other64, now), Verdict::Allow);
        for i in 0..3 {
            t.failed(
                &format!("x{i}"),
                "::ffff:192.168.1.10".parse().unwrap(),
                now,
            );
        }
        assert!(matches!(t.check("someone", A, now), Verdict::Wait(_)));
    }

    #[test]
    fn memory_stays_bounded_under_many_names() {
        let mut t = Throttle::new(ThrottleSettings {
            capacity: 100,
            ..ThrottleSettings::default()
        });
        let t0 = Instant::now();
        for i in 0..1000u64 {
            t.failed(&format!("name{i}"), B, t0 + Duration::from_millis(i));
        }
        assert!(t.len() <= 100, "{}", t.len());
        // The address that sent them all is still slowed: its entry is the most recent.
        assert!(matches!(t.check("anyone", B, t0 + s(1)), Verdict::Wait(_)));
    }
}
