//! The card reader adapter. A reader bridge (the face-authentication reader's driver) posts
//! heartbeats and "card presented" events to the edge; missing heartbeats or a reported fault mark
//! the reader down, which makes the mode `degraded` with the reason. [`ReaderTracker`] is the pure
//! part; the API and the monitor feed it.

use std::time::Duration;

use crate::mode::ModeEvent;

/// The reader's health as last reported, with the time (ms on the monitor's clock).
#[derive(Debug, Clone)]
pub struct ReaderTracker {
    timeout: Duration,
    /// None until a reader has ever reported: a facility without a reader is not degraded.
    last_heartbeat_ms: Option<u64>,
    reader_id: Option<String>,
    down: Option<String>,
}

impl ReaderTracker {
    pub fn new(timeout: Duration) -> Self {
        ReaderTracker {
            timeout,
            last_heartbeat_ms: None,
            reader_id: None,
            down: None,
        }
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// A heartbeat: `fault` is the reader's own report of a problem.
    pub fn heartbeat(
        &mut self,
        now_ms: u64,
        reader_id: &str,
        fault: Option<String>,
    ) -> Option<ModeEvent> {
        self.last_heartbeat_ms = Some(now_ms);
        self.reader_id = Some(reader_id.to_string());
        match fault {
            Some(f) => self.set_down(format!("reader {reader_id} reports: {f}")),
            None => self.set_up(),
        }
    }

    /// Time passes: a reader silent for longer than the timeout is down.
    pub fn tick(&mut self, now_ms: u64) -> Option<ModeEvent> {
        let last = self.last_heartbeat_ms?;
        let silent = now_ms.saturating_sub(last);
        if silent > self.timeout.as_millis() as u64 && self.down.is_none() {
            let id = self.reader_id.clone().unwrap_or_default();
            return self.set_down(format!(
                "no heartbeat from reader {id} for {} s",
                silent / 1000
            ));
        }
        None
    }

    fn set_down(&mut self, reason: String) -> Option<ModeEvent> {
        if self.down.as_deref() == Some(reason.as_str()) {
            return None;
        }
        self.down = Some(reason.clone());
        Some(ModeEvent::ReaderDown { reason })
    }

    fn set_up(&mut self) -> Option<ModeEvent> {
        self.down.take().map(|_| ModeEvent::ReaderUp)
    }

    /// `None` (no reader), `Some(Ok(id))` working, `Some(Err(reason))` down.
    pub fn health(&self) -> Option<Result<String, String>> {
        let id = self.reader_id.clone()?;
        Some(match &self.down {
            None => Ok(id),
            Some(r) => Err(r.clone()),
        })
    }

    pub fn last_heartbeat_ms(&self) -> Option<u64> {
        self.last_heartbeat_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_reader_is_not_a_fault_and_silence_or_a_fault_is() {
        let mut t = ReaderTracker::new(Duration::from_secs(10));
        assert_eq!(t.tick(60_000), None);
        assert_eq!(t.health(), None);
        assert_eq!(t.heartbeat(60_000, "R1", None), None);
        assert_eq!(t.tick(70_000), None);
        let down = t.tick(70_001).unwrap();
        assert_eq!(
            down,
            ModeEvent::ReaderDown {
                reason: "no heartbeat from reader R1 for 10 s".into()
            }
        );
        assert_eq!(t.tick(80_000), None, "reported once");
        assert_eq!(t.heartbeat(80_500, "R1", None), Some(ModeEvent::ReaderUp));
        assert_eq!(
            t.heartbeat(81_000, "R1", Some("face camera error".into())),
            Some(ModeEvent::ReaderDown {
                reason: "reader R1 reports: face camera error".into()
            })
        );
        assert_eq!(
            t.health(),
            Some(Err("reader R1 reports: face camera error".into()))
        );
        assert_eq!(t.heartbeat(82_000, "R1", None), Some(ModeEvent::ReaderUp));
        assert_eq!(t.health(), Some(Ok("R1".into())));
    }
}
