//! The IO side of the mode machine: feeds it link-state changes, ping answers, deadline misses,
//! the card readers' health and clock ticks, logs every change with its cause (and every reader
//! going down or up), and publishes the mode.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use onshi_sync::link::LinkClient;
use onshi_sync::wire::{Request, Response};
use tokio::sync::watch;

use crate::mode::{Mode, ModeChange, ModeEvent, ModeMachine, ModeSettings};
use crate::reader::{CardSeen, ReaderStatus, ReaderTracker, RecentCards};

/// How often the edge pings the reconciler, and how long a ping may take.
pub const PING_EVERY: Duration = Duration::from_secs(1);
/// How often time is fed to the machine.
const TICK_EVERY: Duration = Duration::from_millis(200);

/// The shared mode: the machine behind a lock, and a channel that tells about changes.
#[derive(Debug, Clone)]
pub struct ModeHandle {
    machine: Arc<Mutex<ModeMachine>>,
    reader: Arc<Mutex<ReaderTracker>>,
    /// The last few card checks at the readers, for the check page.
    cards: Arc<Mutex<RecentCards>>,
    started: Instant,
    tx: Arc<watch::Sender<Mode>>,
}

impl ModeHandle {
    /// `readers`: the configured card readers (expected from the start).
    pub fn new(settings: ModeSettings, reader_timeout: Duration, readers: &[String]) -> Self {
        let machine = ModeMachine::new(settings, 0);
        let (tx, _) = watch::channel(machine.mode());
        ModeHandle {
            machine: Arc::new(Mutex::new(machine)),
            reader: Arc::new(Mutex::new(ReaderTracker::new(reader_timeout, readers, 0))),
            cards: Arc::new(Mutex::new(RecentCards::default())),
            started: Instant::now(),
            tx: Arc::new(tx),
        }
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, ReaderTracker> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// New mode and reader settings (a configuration reload).
    pub fn apply(&self, settings: ModeSettings, reader_timeout: Duration) {
        self.lock().set_settings(settings);
        self.reader().set_timeout(reader_timeout);
    }

    /// A reader heartbeat (with the reader's own fault report, if any), or a card it presented
    /// (`fault` None: a card read proves that reader works). Refused for a malformed reader id or
    /// one reader too many.
    pub fn reader_heartbeat(
        &self,
        reader_id: &str,
        fault: Option<String>,
    ) -> Result<(), onshi_model::FieldError> {
        // The tracker stays locked while the machine learns of it, so two readers' (or one
        // reader's) events reach the machine in the order the tracker decided them.
        let mut tracker = self.reader();
        if let Some(ev) = tracker.heartbeat(self.now_ms(), reader_id, fault)? {
            self.reader_event(ev);
        }
        drop(tracker);
        Ok(())
    }

    /// Every card reader (configured or seen), by id.
    pub fn readers(&self) -> Vec<ReaderStatus> {
        self.reader().snapshot(self.now_ms())
    }

    /// A card checked at a reader (for the check page's list).
    pub fn card_seen(&self, card: CardSeen) {
        self.cards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .note(card);
    }

    /// The last few card checks at the readers, newest first.
    pub fn recent_cards(&self) -> Vec<CardSeen> {
        self.cards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .latest_first()
    }

    /// Time passes, for the machine and the readers.
    pub fn tick(&self) {
        let mut tracker = self.reader();
        for ev in tracker.tick(self.now_ms()) {
            self.reader_event(ev);
        }
        drop(tracker);
        self.event(ModeEvent::Tick);
    }

    /// A reader's change is logged by itself: while the mode is already degraded, a second
    /// reader going down changes no mode, and staff must still learn of it.
    fn reader_event(&self, ev: ModeEvent) {
        match &ev {
            ModeEvent::ReaderDown { reader, reason } => {
                tracing::warn!(reader = %reader, reason = %reason, "card reader down");
            }
            ModeEvent::ReaderUp { reader } => {
                tracing::info!(reader = %reader, "card reader up");
            }
            _ => {}
        }
        self.event(ev);
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ModeMachine> {
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Feeds one event; logs and publishes a change.
    pub fn event(&self, event: ModeEvent) -> Option<ModeChange> {
        let now = self.now_ms();
        let change = self.lock().handle(now, event)?;
        if change.to > change.from {
            tracing::warn!(from = %change.from, to = %change.to, cause = %change.cause, "mode changed");
        } else {
            tracing::info!(from = %change.from, to = %change.to, cause = %change.cause, "mode changed");
        }
        self.tx.send_replace(change.to);
        Some(change)
    }

    pub fn mode(&self) -> Mode {
        self.lock().mode()
    }

    pub fn subscribe(&self) -> watch::Receiver<Mode> {
        self.tx.subscribe()
    }

    /// Mode, seconds in it, reasons, recent changes (seconds since start), for status.
    pub fn snapshot(&self) -> ModeSnapshot {
        let now = self.now_ms();
        let m = self.lock();
        ModeSnapshot {
            mode: m.mode(),
            for_s: (now.saturating_sub(m.since_ms())) as f64 / 1000.0,
            reasons: m.reasons(),
            history: m.history().to_vec(),
        }
    }
}

/// What status pages show of the mode.
#[derive(Debug, Clone)]
pub struct ModeSnapshot {
    pub mode: Mode,
    pub for_s: f64,
    pub reasons: Vec<String>,
    pub history: Vec<ModeChange>,
}

/// Runs the feeders until `stop` turns true.
pub fn spawn(
    mode: ModeHandle,
    link: Arc<LinkClient>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut link_state = link.subscribe();
        let mut ping = tokio::time::interval(PING_EVERY);
        let mut tick = tokio::time::interval(TICK_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_up = false;
        // Pings run in their own task so a slow one never holds up ticks.
        let (heard_tx, mut heard_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        loop {
            let state = link_state.borrow_and_update().clone();
            if state.is_up() != was_up {
                was_up = state.is_up();
                if was_up {
                    mode.event(ModeEvent::LinkUp);
                } else {
                    let reason = state
                        .last_error
                        .as_ref()
                        .map_or_else(|| state.name().to_string(), |e| e.to_string());
                    mode.event(ModeEvent::LinkDown { reason });
                }
            }
            tokio::select! {
                _ = stop.changed() => return,
                r = link_state.changed() => if r.is_err() { return },
                _ = tick.tick() => { mode.tick(); }
                Some(()) = heard_rx.recv() => { mode.event(ModeEvent::Heard); }
                _ = ping.tick() => {
                    if was_up {
                        let link = link.clone();
                        let tx = heard_tx.clone();
                        tokio::spawn(async move {
                            if let Ok(Response::Pong) = link.call(Request::Ping, PING_EVERY).await {
                                let _ = tx.send(());
                            }
                        });
                    }
                }
            }
        }
    })
}
