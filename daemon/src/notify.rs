//! systemd notifications (READY, STATUS, WATCHDOG, STOPPING). Outside systemd (no NOTIFY_SOCKET)
//! every call is a no-op, so the same binary runs by hand, in tests and under systemd.
//!
//! Also the watchdog rule ([`feed_watchdog`]): the watchdog is fed only while the edge can keep
//! its promise that an acknowledged record is on disk. Must never feed it while the journal has
//! been unable to commit for longer than [`unwritable_bound`].

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// Stores are open and sockets bound.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: draining requests"),
    ]);
}

/// How long the journal may be unable to commit while the watchdog is still fed, when systemd set
/// no watchdog (`WATCHDOG_USEC`); under systemd the bound is the watchdog timeout itself, so an
/// edge whose journal stays unwritable is restarted within twice `WatchdogSec`.
pub const UNWRITABLE_BOUND: Duration = Duration::from_secs(30);

/// The bound for [`feed_watchdog`]: systemd's watchdog timeout, or [`UNWRITABLE_BOUND`].
pub fn unwritable_bound() -> Duration {
    sd_notify::watchdog_enabled().unwrap_or(UNWRITABLE_BOUND)
}

/// Whether to send WATCHDOG=1 now: yes while the journal can write, and for at most `bound` after
/// it stopped (a full disk that clears by itself within the bound costs no restart; one that does
/// not gets the edge restarted by systemd, which may succeed where a reopen did not).
#[must_use]
pub fn feed_watchdog(unwritable_for: Option<Duration>, bound: Duration) -> bool {
    unwritable_for.is_none_or(|d| d <= bound)
}

/// Half the watchdog interval systemd asked for, if it asked.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_fed_while_writable_and_stops_past_the_bound() {
        let bound = Duration::from_secs(2);
        // A fake clock: the time the journal has been unwritable, step by step.
        assert!(feed_watchdog(None, bound), "writable: fed");
        for ms in [0, 500, 1_999, 2_000] {
            assert!(
                feed_watchdog(Some(Duration::from_millis(ms)), bound),
                "{ms} ms unwritable is within the bound"
            );
        }
        for ms in [2_001, 10_000, 3_600_000] {
            assert!(
                !feed_watchdog(Some(Duration::from_millis(ms)), bound),
                "{ms} ms unwritable is past the bound"
            );
        }
        // Writable again: fed again at once.
        assert!(feed_watchdog(None, bound));
    }
}
