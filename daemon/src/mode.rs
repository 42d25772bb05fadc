//! The mode machine: `online`, `degraded` or `offline`, from link events, request outcomes and the
//! card readers' health (each reader by its id: one reader coming back never clears another).
//! Sans-IO: it is driven by events carrying the time (milliseconds on any monotonic clock, passed
//! in), so it runs the same on a fake clock in tests.
//!
//! Rules: a worse condition takes effect at once (reception must stop waiting for a dead link); a
//! better one only once it has held for `hold` (so a flapping link cannot make the mode flap faster
//! than that). Every change carries its cause.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// What reception sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Link up, answers arriving within the deadline, reader working.
    Online,
    /// Link up but slow, or a card reader is down.
    Degraded,
    /// Link down.
    Offline,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Online => "online",
            Mode::Degraded => "degraded",
            Mode::Offline => "offline",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened, at `now_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModeEvent {
    LinkUp,
    LinkDown {
        reason: String,
    },
    /// Evidence the link is alive: a ping or any request answered.
    Heard,
    /// An online request got its answer within the deadline.
    AnswerInTime,
    /// An online request missed the deadline.
    DeadlineMissed,
    /// This reader works again (its own fault only is cleared).
    ReaderUp {
        reader: String,
    },
    /// This reader is down; `reason` names it.
    ReaderDown {
        reader: String,
        reason: String,
    },
    /// Time passes (lets a pending recovery take effect).
    Tick,
}

/// A change of mode and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModeChange {
    pub from: Mode,
    pub to: Mode,
    pub cause: String,
    pub at_ms: u64,
}

/// Settings of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeSettings {
    /// How long a better condition must hold before the mode improves.
    pub hold: Duration,
    /// Consecutive missed deadlines that make a live link `degraded`.
    pub slow_after_misses: u32,
    /// A link up but silent for this long counts as down (the edge pings every second).
    pub silence_limit: Duration,
}

impl Default for ModeSettings {
    fn default() -> Self {
        ModeSettings {
            hold: Duration::from_secs(10),
            slow_after_misses: 3,
            silence_limit: Duration::from_millis(2500),
        }
    }
}

/// The machine. See the module doc for the rules.
#[derive(Debug, Clone)]
pub struct ModeMachine {
    settings: ModeSettings,
    mode: Mode,
    since_ms: u64,
    link_up: bool,
    link_reason: String,
    last_heard_ms: u64,
    misses: u32,
    /// The readers down, by id, with why.
    readers_down: BTreeMap<String, String>,
    /// When the condition last became better than the current mode (a recovery candidate).
    better_since_ms: Option<u64>,
    history: Vec<ModeChange>,
}

/// How many changes the machine remembers for status pages.
const HISTORY: usize = 20;

impl ModeMachine {
    /// Starts `offline` (no link yet) at `now_ms`.
    pub fn new(settings: ModeSettings, now_ms: u64) -> Self {
        ModeMachine {
            settings,
            mode: Mode::Offline,
            since_ms: now_ms,
            link_up: false,
            link_reason: "not connected yet".into(),
            last_heard_ms: now_ms,
            misses: 0,
            readers_down: BTreeMap::new(),
            better_since_ms: None,
            history: Vec::new(),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// New settings (a configuration reload); they apply from the next event.
    pub fn set_settings(&mut self, settings: ModeSettings) {
        self.settings = settings;
    }

    pub fn since_ms(&self) -> u64 {
        self.since_ms
    }

    /// The most recent changes, oldest first.
    pub fn history(&self) -> &[ModeChange] {
        &self.history
    }

    /// Why the mode is not `online`, if it is not.
    pub fn reasons(&self) -> Vec<String> {
        let mut r = Vec::new();
        if !self.link_up {
            r.push(format!("link down: {}", self.link_reason));
        } else if self.misses >= self.settings.slow_after_misses {
            r.push(format!(
                "reconciler slow: {} answers in a row missed the deadline",
                self.misses
            ));
        }
        for reason in self.readers_down.values() {
            r.push(format!("card reader down: {reason}"));
        }
        if r.is_empty() && self.mode != Mode::Online {
            r.push("recovering: waiting for the hold time".into());
        }
        r
    }

    /// The mode the current conditions call for, and why.
    fn target(&self) -> (Mode, String) {
        if !self.link_up {
            return (Mode::Offline, format!("link down: {}", self.link_reason));
        }
        if self.misses >= self.settings.slow_after_misses {
            return (
                Mode::Degraded,
                format!("{} answers in a row missed the deadline", self.misses),
            );
        }
        if !self.readers_down.is_empty() {
            let down: Vec<&str> = self.readers_down.values().map(String::as_str).collect();
            return (
                Mode::Degraded,
                format!("card reader down: {}", down.join("; ")),
            );
        }
        (Mode::Online, "link up and answering".into())
    }

    /// Applies an event; returns the change of mode, if there is one.
    pub fn handle(&mut self, now_ms: u64, event: ModeEvent) -> Option<ModeChange> {
        match event {
            ModeEvent::LinkUp => {
                self.link_up = true;
                self.misses = 0;
                self.last_heard_ms = now_ms;
            }
            ModeEvent::Heard => {
                // A ping answered proves the link is up, even after a silence.
                self.link_up = true;
                self.last_heard_ms = now_ms;
                self.misses = 0;
            }
            ModeEvent::LinkDown { reason } => {
                self.link_up = false;
                self.link_reason = reason;
            }
            ModeEvent::AnswerInTime => {
                self.misses = 0;
                self.last_heard_ms = now_ms;
            }
            ModeEvent::DeadlineMissed => self.misses = self.misses.saturating_add(1),
            ModeEvent::ReaderUp { reader } => {
                self.readers_down.remove(&reader);
            }
            ModeEvent::ReaderDown { reader, reason } => {
                self.readers_down.insert(reader, reason);
            }
            ModeEvent::Tick => {}
        }
        if self.link_up
            && now_ms.saturating_sub(self.last_heard_ms)
                >= self.settings.silence_limit.as_millis() as u64
        {
            self.link_up = false;
            self.link_reason = format!(
                "no answer from the reconciler for {} ms",
                now_ms - self.last_heard_ms
            );
        }
        let (target, cause) = self.target();
        if target == self.mode {
            self.better_since_ms = None;
            return None;
        }
        if target > self.mode {
            // Worse: at once.
            return Some(self.change(now_ms, target, cause));
        }
        // Better: only after it has held for the hold time.
        let since = *self.better_since_ms.get_or_insert(now_ms);
        if now_ms.saturating_sub(since) >= self.settings.hold.as_millis() as u64 {
            return Some(self.change(now_ms, target, cause));
        }
        None
    }

    fn change(&mut self, now_ms: u64, to: Mode, cause: String) -> ModeChange {
        let change = ModeChange {
            from: self.mode,
            to,
            cause,
            at_ms: now_ms,
        };
        self.mode = to;
        self.since_ms = now_ms;
        self.better_since_ms = None;
        self.history.push(change.clone());
        if self.history.len() > HISTORY {
            self.history.remove(0);
        }
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> ModeMachine {
        // A silence limit longer than these tests' gaps, except where a test sets its own.
        ModeMachine::new(
            ModeSettings {
                hold: Duration::from_secs(10),
                slow_after_misses: 3,
                silence_limit: Duration::from_secs(3600),
            },
            0,
        )
    }

    fn up(m: &mut ModeMachine, at: u64) {
        m.handle(at, ModeEvent::LinkUp);
        m.handle(at + 10_000, ModeEvent::Tick);
        assert_eq!(m.mode(), Mode::Online);
    }

    #[test]
    fn a_silent_link_is_detected_as_lost_within_three_seconds() {
        let mut m = ModeMachine::new(ModeSettings::default(), 0);
        m.handle(0, ModeEvent::LinkUp);
        // Pings answered every second for a while.
        for t in (1_000..=20_000).step_by(1_000) {
            m.handle(t, ModeEvent::Heard);
        }
        assert_eq!(m.mode(), Mode::Online);
        // The reconciler dies at 20.0 s: pings stop being answered; the clock ticks every 100 ms.
        let mut detected = None;
        for t in (20_100..=30_000).step_by(100) {
            if let Some(c) = m.handle(t, ModeEvent::Tick) {
                detected = Some(c);
                break;
            }
        }
        let c = detected.expect("loss detected");
        assert_eq!(c.to, Mode::Offline);
        assert!(
            c.at_ms - 20_000 <= 3_000,
            "detected after {} ms",
            c.at_ms - 20_000
        );
        assert!(
            c.cause.contains("no answer from the reconciler"),
            "{}",
            c.cause
        );
    }

    #[test]
    fn starts_offline_and_comes_online_after_the_hold_time() {
        let mut m = machine();
        assert_eq!(m.mode(), Mode::Offline);
        assert_eq!(m.handle(1_000, ModeEvent::LinkUp), None);
        assert_eq!(m.handle(10_999, ModeEvent::Tick), None);
        let c = m.handle(11_000, ModeEvent::Tick).unwrap();
        assert_eq!((c.from, c.to), (Mode::Offline, Mode::Online));
    }

    #[test]
    fn link_loss_takes_effect_at_once_with_its_cause() {
        let mut m = machine();
        up(&mut m, 0);
        // The link reports loss (QUIC idle timeout of 3 s with 1 s keep-alives): offline at once.
        let c = m
            .handle(
                13_000,
                ModeEvent::LinkDown {
                    reason: "timed out".into(),
                },
            )
            .unwrap();
        assert_eq!(
            (c.from, c.to, c.at_ms),
            (Mode::Online, Mode::Offline, 13_000)
        );
        assert!(c.cause.contains("timed out"));
        assert_eq!(m.reasons(), vec!["link down: timed out".to_string()]);
    }

    #[test]
    fn missed_deadlines_degrade_a_live_link_and_an_answer_in_time_recovers_after_hold() {
        let mut m = machine();
        up(&mut m, 0);
        assert_eq!(m.handle(20_000, ModeEvent::DeadlineMissed), None);
        assert_eq!(m.handle(21_500, ModeEvent::DeadlineMissed), None);
        let c = m.handle(23_000, ModeEvent::DeadlineMissed).unwrap();
        assert_eq!(c.to, Mode::Degraded);
        assert_eq!(m.handle(24_000, ModeEvent::AnswerInTime), None);
        assert_eq!(m.handle(33_999, ModeEvent::Tick), None);
        assert_eq!(m.handle(34_000, ModeEvent::Tick).unwrap().to, Mode::Online);
    }

    #[test]
    fn reader_down_degrades_and_link_down_wins_over_it() {
        let mut m = machine();
        up(&mut m, 0);
        let c = m
            .handle(
                11_000,
                ModeEvent::ReaderDown {
                    reader: "R1".into(),
                    reason: "no heartbeat for 10 s".into(),
                },
            )
            .unwrap();
        assert_eq!(c.to, Mode::Degraded);
        assert!(c.cause.contains("no heartbeat"));
        assert_eq!(
            m.handle(12_000, ModeEvent::LinkDown { reason: "x".into() })
                .unwrap()
                .to,
            Mode::Offline
        );
        // Link back, reader still down: degraded, after the hold time.
        m.handle(13_000, ModeEvent::LinkUp);
        assert_eq!(
            m.handle(23_000, ModeEvent::Tick).unwrap().to,
            Mode::Degraded
        );
        assert_eq!(
            m.reasons(),
            vec!["card reader down: no heartbeat for 10 s".to_string()]
        );
    }

    #[test]
    fn a_flapping_link_does_not_flap_the_mode_faster_than_the_hold_time() {
        let mut m = machine();
        up(&mut m, 0);
        let mut changes = Vec::new();
        // The link goes down and up every 2 s for two minutes.
        let mut t = 10_000;
        while t < 130_000 {
            changes.extend(m.handle(
                t,
                ModeEvent::LinkDown {
                    reason: "flap".into(),
                },
            ));
            changes.extend(m.handle(t + 1_000, ModeEvent::LinkUp));
            changes.extend(m.handle(t + 1_500, ModeEvent::Tick));
            t += 2_000;
        }
        // One change to offline, none back while it keeps flapping.
        assert_eq!(changes.len(), 1, "{changes:?}");
        for pair in changes.windows(2) {
            assert!(pair[1].at_ms - pair[0].at_ms >= 10_000);
        }
        // Once it stays up for the hold time, online again.
        m.handle(t, ModeEvent::LinkUp);
        assert_eq!(
            m.handle(t + 10_000, ModeEvent::Tick).unwrap().to,
            Mode::Online
        );
    }

    #[test]
    fn flapping_slower_than_hold_changes_at_most_once_per_hold() {
        let mut m = machine();
        up(&mut m, 0);
        let mut changes = Vec::new();
        let mut t = 10_000u64;
        // Up for 12 s, down for 1 s, repeatedly: every improvement waited the hold time.
        for _ in 0..10 {
            changes.extend(m.handle(
                t,
                ModeEvent::LinkDown {
                    reason: "flap".into(),
                },
            ));
            changes.extend(m.handle(t + 1_000, ModeEvent::LinkUp));
            for s in 1..=12 {
                changes.extend(m.handle(t + 1_000 + s * 1_000, ModeEvent::Tick));
            }
            t += 13_000;
        }
        let ups: Vec<_> = changes.iter().filter(|c| c.to == Mode::Online).collect();
        assert_eq!(ups.len(), 10);
        for c in changes.windows(2) {
            if c[1].to == Mode::Online {
                assert!(c[1].at_ms - c[0].at_ms >= 10_000, "{c:?}");
            }
        }
    }

    #[test]
    fn one_readers_recovery_does_not_clear_another_readers_fault() {
        let mut m = machine();
        up(&mut m, 0);
        let down = |reader: &str| ModeEvent::ReaderDown {
            reader: reader.into(),
            reason: format!("no heartbeat from reader {reader} for 10 s"),
        };
        let c = m.handle(11_000, down("A")).unwrap();
        assert_eq!(c.to, Mode::Degraded);
        assert!(c.cause.contains("reader A"), "{}", c.cause);
        m.handle(12_000, down("B"));
        // B comes back: still degraded, because of A alone.
        m.handle(13_000, ModeEvent::ReaderUp { reader: "B".into() });
        assert_eq!(m.handle(30_000, ModeEvent::Tick), None);
        assert_eq!(m.mode(), Mode::Degraded);
        assert_eq!(
            m.reasons(),
            vec!["card reader down: no heartbeat from reader A for 10 s".to_string()]
        );
        // A comes back: online after the hold time.
        m.handle(31_000, ModeEvent::ReaderUp { reader: "A".into() });
        assert_eq!(m.handle(41_000, ModeEvent::Tick).unwrap().to, Mode::Online);
    }
}
