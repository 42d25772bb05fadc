//! The sync state machines in memory, over thousands of seeded fault schedules: a transport that
//! drops, duplicates, delays and reorders messages and cuts the link; either side crashing (losing
//! memory and unfinished disk writes, keeping what it made durable); records created at the edge
//! while the link flaps, settled by the reconciler, closed by the edge; now and then a record of
//! another facility, which the reconciler must refuse. After healing and running to quiescence:
//! every record is at the reconciler once with the same facts, every settlement is back at the
//! edge, both journals agree, nothing acknowledged was sent again, no status went backwards, and
//! "synced" was never claimed while something was missing.
//!
//! `SYNC_SIM_SEEDS=N` sweeps seeds 0..N (default 2000); `SYNC_SIM_SEED=N` runs one seed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use onshi_model::record::{
    Basis, Declaration, ProvisionalRecord, RecordState, Settlement, SettlementKind,
};
use onshi_model::{CardId, CheckRequest, CheckSubject, FacilityCode, Sex, Source, Validity};
use onshi_sync::crdt::{
    Actor, Choice, DeferredCheck, Journal, JournalRecord, RecordFacts, RecordId, Versions,
};
use onshi_sync::protocol::{Action, EdgeSync, Input, ReconcilerSync, SyncConfig, SyncMessage};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const FACILITY: &str = "1311234567";
const FOREIGN: &str = "1341234567";
const NODE: u32 = 0x3f2a_9c01;
const TICK_MS: u64 = 10;

fn at(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + (ms / 1000) as i64, 0).unwrap()
}

fn facts(id: &RecordId, n: u64, now: u64) -> RecordFacts {
    if n.is_multiple_of(3) {
        RecordFacts::DeferredCheck(DeferredCheck {
            check_id: id.to_string(),
            created_at: at(now),
            request: CheckRequest {
                subject: CheckSubject::Card {
                    card_id: CardId::parse(&format!("C{n:07}")).unwrap(),
                },
                service_date: NaiveDate::from_ymd_opt(2025, 1, 6).unwrap(),
            },
            answered: Validity::Pending,
            source: Source::Queued,
        })
    } else {
        RecordFacts::Provisional(ProvisionalRecord {
            record_id: id.to_string(),
            created_at: at(now),
            declared: Declaration {
                name: format!("患者　{n}"),
                name_kana: None,
                birth_date: NaiveDate::from_ymd_opt(1950 + (n % 60) as i32, 4, 1).unwrap(),
                sex: Sex::Female,
                address: None,
                insurer_name: None,
                insurance_type: None,
                employer: None,
                contact: None,
                share_percent: None,
            },
            person_id: None,
            service_date: NaiveDate::from_ymd_opt(2025, 1, 6).unwrap(),
            total_fee_yen: 1_000 * n,
            share_percent: 30,
            collected_yen: 300 * n,
            basis: Basis::AgeRule,
            rule: None,
            explanation: "age rule".into(),
            state: RecordState::Recorded,
        })
    }
}

fn settlement_for(id: &RecordId, now: u64) -> Settlement {
    Settlement {
        kind: if id.seq().is_multiple_of(2) {
            SettlementKind::Confirmed
        } else {
            SettlementKind::Refund
        },
        settled_at: at(now),
        qualification: None,
        correct_share_percent: Some(30),
        due_yen: None,
        yen: (id.seq() % 2 == 1).then_some(100),
        payer: None,
        candidates: Vec::new(),
        explanation: format!("settled {id}"),
    }
}

/// Both machines behind one face, so the driver treats the sides alike.
enum Machine {
    Edge(EdgeSync),
    Reconciler(ReconcilerSync),
}

macro_rules! both {
    ($m:expr, $x:ident => $e:expr) => {
        match $m {
            Machine::Edge($x) => $e,
            Machine::Reconciler($x) => $e,
        }
    };
}

impl Machine {
    fn handle(&mut self, now: u64, i: Input) {
        both!(self, m => m.handle(now, i))
    }
    fn poll_transmit(&mut self, now: u64) -> Option<SyncMessage> {
        both!(self, m => m.poll_transmit(now))
    }
    fn poll_action(&mut self) -> Option<Action> {
        both!(self, m => m.poll_action())
    }
    fn is_synced(&self) -> bool {
        both!(self, m => m.is_synced())
    }
    fn journal(&self) -> &Journal {
        both!(self, m => m.journal())
    }
}

struct Side {
    name: &'static str,
    disk: Journal,
    /// Writes not yet on disk: (done at, machine generation, persist id, records). Lost on crash.
    writes: Vec<(u64, u64, u64, Vec<JournalRecord>)>,
    machine: Option<Machine>,
    generation: u64,
    /// Down (crashed) until this time.
    down_until: Option<u64>,
    /// What acknowledgements that reached this side said the peer holds.
    acked_seen: BTreeMap<RecordId, Versions>,
    highest_state: BTreeMap<RecordId, RecordState>,
}

impl Side {
    fn new(name: &'static str) -> Self {
        Side {
            name,
            disk: Journal::new(),
            writes: Vec::new(),
            machine: None,
            generation: 0,
            down_until: None,
            acked_seen: BTreeMap::new(),
            highest_state: BTreeMap::new(),
        }
    }

    /// Every disk write goes through here: checks that nothing moves backwards.
    fn write(&mut self, seed: u64, r: JournalRecord) {
        let id = r.id().clone();
        let before = self.disk.get(&id).cloned();
        let after = self.disk.merge_record(r).clone();
        if let Some(b) = before {
            assert!(
                after.state() >= b.state(),
                "seed {seed}: {} status of {id} went back {:?} -> {:?}",
                self.name,
                b.state(),
                after.state()
            );
            assert!(
                b.settlement().is_none() || after.settlement() == b.settlement(),
                "seed {seed}: {} settlement of {id} changed",
                self.name
            );
            assert!(
                b.quarantine().is_none() || after.quarantine().is_some(),
                "seed {seed}: {} quarantine of {id} unset",
                self.name
            );
            assert_eq!(
                after.facts(),
                b.facts(),
                "seed {seed}: {} facts of {id} changed",
                self.name
            );
        }
        let h = self
            .highest_state
            .entry(id.clone())
            .or_insert(RecordState::Recorded);
        assert!(
            after.state() >= *h,
            "seed {seed}: {} status of {id} went back",
            self.name
        );
        *h = after.state();
    }

    fn alive(&self) -> bool {
        self.down_until.is_none()
    }
}

struct Net {
    drop_p: f64,
    dup_p: f64,
    max_delay_ms: u64,
    /// (deliver at, to edge?, message)
    in_flight: Vec<(u64, bool, SyncMessage)>,
}

struct Sim {
    seed: u64,
    rng: ChaCha8Rng,
    now: u64,
    config: SyncConfig,
    facility: FacilityCode,
    edge: Side,
    rec: Side,
    net: Net,
    link_up: bool,
    link_back_at: u64,
    next_seq: u64,
    created: BTreeSet<RecordId>,
    foreign: BTreeSet<RecordId>,
    settled_count: BTreeMap<RecordId, u32>,
    batches_sent: u64,
    crashes: u64,
    cuts: u64,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let config = SyncConfig {
            batch_records: rng.random_range(1..8),
            max_batches_in_flight: rng.random_range(1..4),
            retransmit_ms: rng.random_range(100..400),
            hello_retransmit_ms: rng.random_range(50..300),
            max_unpersisted_batches: rng.random_range(1..4),
            slow_down_ms: rng.random_range(10..200),
            max_summary_entries: 1_000_000,
        };
        let net = Net {
            drop_p: if rng.random_bool(0.2) {
                0.0
            } else {
                rng.random_range(0.0..0.3)
            },
            dup_p: rng.random_range(0.0..0.15),
            max_delay_ms: rng.random_range(1..120),
            in_flight: Vec::new(),
        };
        let mut sim = Sim {
            seed,
            rng,
            now: 0,
            config,
            facility: FacilityCode::parse(FACILITY).unwrap(),
            edge: Side::new("edge"),
            rec: Side::new("reconciler"),
            net,
            link_up: false,
            link_back_at: 0,
            next_seq: 0,
            created: BTreeSet::new(),
            foreign: BTreeSet::new(),
            settled_count: BTreeMap::new(),
            batches_sent: 0,
            crashes: 0,
            cuts: 0,
        };
        sim.edge.machine = Some(Machine::Edge(EdgeSync::new(
            sim.config.clone(),
            sim.facility.clone(),
            Journal::new(),
        )));
        sim
    }

    // --- link and crashes ----------------------------------------------------------------------

    fn cut(&mut self, down_for: u64) {
        if self.link_up {
            self.cuts += 1;
            self.link_up = false;
            self.net.in_flight.clear();
            if let Some(m) = self.edge.machine.as_mut() {
                m.handle(self.now, Input::Disconnected);
            }
            // The reconciler's machine lives for one connection.
            if let Some(m) = self.rec.machine.as_mut() {
                m.handle(self.now, Input::Disconnected);
            }
            self.rec.machine = None;
            self.rec.generation += 1;
        }
        self.link_back_at = self.link_back_at.max(self.now + down_for);
    }

    fn try_connect(&mut self) {
        if self.link_up || !self.edge.alive() || !self.rec.alive() || self.now < self.link_back_at {
            return;
        }
        self.link_up = true;
        self.rec.generation += 1;
        let mut r = ReconcilerSync::new(self.config.clone(), self.facility.clone(), &self.rec.disk);
        r.handle(self.now, Input::Connected);
        self.rec.machine = Some(Machine::Reconciler(r));
        if let Some(m) = self.edge.machine.as_mut() {
            m.handle(self.now, Input::Connected);
        }
    }

    fn crash(&mut self, edge: bool) {
        let down = self.rng.random_range(0..500);
        self.crashes += 1;
        self.cut(down);
        let side = if edge { &mut self.edge } else { &mut self.rec };
        side.machine = None;
        side.writes.clear();
        side.generation += 1;
        side.down_until = Some(self.now + down);
    }

    fn restarts(&mut self) {
        if self.edge.down_until.is_some_and(|t| self.now >= t) {
            self.edge.down_until = None;
            self.edge.generation += 1;
            self.edge.machine = Some(Machine::Edge(EdgeSync::new(
                self.config.clone(),
                self.facility.clone(),
                self.edge.disk.clone(),
            )));
        }
        if self.rec.down_until.is_some_and(|t| self.now >= t) {
            self.rec.down_until = None;
        }
    }

    // --- workload --------------------------------------------------------------------------------

    fn create(&mut self, foreign: bool) {
        if !self.edge.alive() {
            return;
        }
        let facility = if foreign {
            FacilityCode::parse(FOREIGN).unwrap()
        } else {
            self.facility.clone()
        };
        let id = RecordId::new(facility, NODE, self.next_seq);
        self.next_seq += 1;
        let r = JournalRecord::new(id.clone(), facts(&id, self.next_seq, self.now)).unwrap();
        // Durable before anything else: the gate flushes before answering.
        self.edge.write(self.seed, r.clone());
        if foreign {
            self.foreign.insert(id);
        } else {
            self.created.insert(id);
        }
        if let Some(m) = self.edge.machine.as_mut() {
            m.handle(self.now, Input::LocalChange(r));
        }
    }

    fn settle_one(&mut self, all: bool) {
        if !self.rec.alive() {
            return;
        }
        let unsettled: Vec<RecordId> = self
            .rec
            .disk
            .iter()
            .filter(|r| r.settlement().is_none())
            .map(|r| r.id().clone())
            .collect();
        let picks: Vec<RecordId> = if all {
            unsettled
        } else if unsettled.is_empty() {
            return;
        } else {
            vec![unsettled[self.rng.random_range(0..unsettled.len())].clone()]
        };
        for id in picks {
            let mut r = self.rec.disk.get(&id).unwrap().clone();
            r.settle(Actor::Reconciler, settlement_for(&id, self.now))
                .unwrap();
            assert!(
                r.close(Actor::Reconciler).is_err(),
                "seed {}: reconciler could close",
                self.seed
            );
            *self.settled_count.entry(id).or_default() += 1;
            self.rec.write(self.seed, r.clone());
            if let Some(m) = self.rec.machine.as_mut() {
                m.handle(self.now, Input::LocalChange(r));
            }
        }
    }

    fn close_one(&mut self, all: bool) {
        if !self.edge.alive() {
            return;
        }
        let closable: Vec<RecordId> = self
            .edge
            .disk
            .iter()
            .filter(|r| r.settlement().is_some() && r.state() < RecordState::Closed)
            .map(|r| r.id().clone())
            .collect();
        if closable.is_empty() {
            return;
        }
        let picks = if all {
            closable
        } else {
            vec![closable[self.rng.random_range(0..closable.len())].clone()]
        };
        for id in picks {
            let mut r = self.edge.disk.get(&id).unwrap().clone();
            assert!(
                r.settle(Actor::Edge, settlement_for(&id, self.now))
                    .is_err(),
                "seed {}: edge could settle",
                self.seed
            );
            r.close(Actor::Edge).unwrap();
            self.edge.write(self.seed, r.clone());
            if let Some(m) = self.edge.machine.as_mut() {
                m.handle(self.now, Input::LocalChange(r));
            }
        }
    }

    // --- the pump --------------------------------------------------------------------------------

    /// Runs every machine until it has nothing more to say or do at `now`.
    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            for edge_side in [true, false] {
                let now = self.now;
                let seed = self.seed;
                let delay = self.net.max_delay_ms;
                let (side, peer) = if edge_side {
                    (&mut self.edge, &self.rec)
                } else {
                    (&mut self.rec, &self.edge)
                };
                let _ = peer;
                let Some(m) = side.machine.as_mut() else {
                    continue;
                };
                let actions: Vec<Action> = std::iter::from_fn(|| m.poll_action()).collect();
                for a in actions {
                    progressed = true;
                    match a {
                        Action::Persist {
                            persist_id,
                            records,
                        } => {
                            let done = now + self.rng.random_range(0..40);
                            side.writes
                                .push((done, side.generation, persist_id, records));
                        }
                        Action::Quarantined { record, reason } => {
                            assert!(!reason.is_empty(), "seed {seed}: empty quarantine reason");
                            side.write(seed, record);
                        }
                        Action::Sent { ids } => {
                            for id in ids {
                                let mut r = side
                                    .disk
                                    .get(&id)
                                    .expect("sent mark for a record not on disk")
                                    .clone();
                                r.mark_sent();
                                side.write(seed, r);
                            }
                        }
                        Action::Report(_) => {}
                        Action::Close { reason } => {
                            panic!("seed {seed}: {} closed the connection: {reason}", side.name)
                        }
                    }
                }
                let m = side.machine.as_mut().unwrap();
                while let Some(msg) = m.poll_transmit(now) {
                    progressed = true;
                    if let SyncMessage::Batch { records, .. } = &msg {
                        self.batches_sent += 1;
                        for r in records {
                            if let Some(v) = side.acked_seen.get(r.id()) {
                                assert!(
                                    !r.versions().le(v),
                                    "seed {seed}: {} resent {} {:?} after the peer acknowledged {:?}",
                                    side.name,
                                    r.id(),
                                    r.versions(),
                                    v
                                );
                            }
                        }
                    }
                    if !self.link_up || self.rng.random_bool(self.net.drop_p) {
                        continue;
                    }
                    let copies = if self.rng.random_bool(self.net.dup_p) {
                        2
                    } else {
                        1
                    };
                    for _ in 0..copies {
                        let at = now + self.rng.random_range(0..=delay);
                        self.net.in_flight.push((at, !edge_side, msg.clone()));
                    }
                }
            }
            if !progressed {
                break;
            }
        }
    }

    /// Delivers due messages and finishes due disk writes.
    fn deliver(&mut self) {
        let now = self.now;
        let mut due: Vec<(u64, bool, SyncMessage)> = Vec::new();
        self.net.in_flight.retain(|(t, to_edge, m)| {
            if *t <= now {
                due.push((*t, *to_edge, m.clone()));
                false
            } else {
                true
            }
        });
        due.sort_by_key(|(t, _, _)| *t);
        for (_, to_edge, msg) in due {
            let side = if to_edge {
                &mut self.edge
            } else {
                &mut self.rec
            };
            if let SyncMessage::Ack { acked, .. } = &msg {
                for (id, v) in acked {
                    let e = side.acked_seen.entry(id.clone()).or_default();
                    *e = e.join(v);
                }
            }
            if let Some(m) = side.machine.as_mut() {
                m.handle(now, Input::Message(msg));
            }
            self.pump();
        }
        for edge_side in [true, false] {
            let side = if edge_side {
                &mut self.edge
            } else {
                &mut self.rec
            };
            let mut done = Vec::new();
            side.writes.retain(|w| {
                if w.0 <= now {
                    done.push(w.clone());
                    false
                } else {
                    true
                }
            });
            for (_, generation, pid, records) in done {
                for r in records {
                    side.write(self.seed, r);
                }
                if generation == side.generation
                    && let Some(m) = side.machine.as_mut()
                {
                    m.handle(now, Input::Durable(pid));
                }
            }
        }
    }

    /// "Synced" must mean it: everything of the claimant is held by the other side's disk.
    fn check_synced_claims(&self) {
        let pairs = [(&self.edge, &self.rec), (&self.rec, &self.edge)];
        for (side, other) in pairs {
            let Some(m) = side.machine.as_ref() else {
                continue;
            };
            if !m.is_synced() {
                continue;
            }
            for r in side.disk.iter() {
                if self.foreign.contains(r.id()) {
                    continue;
                }
                let theirs = other.disk.get(r.id()).map(JournalRecord::versions);
                assert!(
                    theirs.is_some_and(|t| r.versions().le(&t)),
                    "seed {}: {} claims synced but {} {:?} is not at the {} (has {:?})",
                    self.seed,
                    side.name,
                    r.id(),
                    r.versions(),
                    other.name,
                    theirs
                );
            }
        }
    }

    fn step(&mut self) {
        self.now += TICK_MS;
        self.restarts();
        self.try_connect();
        self.pump();
        self.deliver();
        self.pump();
        self.check_synced_claims();
    }

    fn chaos(&mut self, ticks: u32) {
        for _ in 0..ticks {
            let roll: f64 = self.rng.random();
            if roll < 0.12 {
                self.create(false);
            } else if roll < 0.125 {
                self.create(true);
            } else if roll < 0.17 {
                self.settle_one(false);
            } else if roll < 0.20 {
                self.close_one(false);
            } else if roll < 0.215 {
                let down = self.rng.random_range(0..400);
                self.cut(down);
            } else if roll < 0.222 {
                let edge = self.rng.random_bool(0.5);
                self.crash(edge);
            } else if roll < 0.225
                && let Some(Machine::Reconciler(r)) = self.rec.machine.as_mut()
            {
                r.slow_down(self.rng.random_range(10..300));
            }
            self.step();
        }
    }

    fn quiescent(&self) -> bool {
        let synced = |s: &Side| s.machine.as_ref().is_some_and(Machine::is_synced);
        self.link_up
            && synced(&self.edge)
            && synced(&self.rec)
            && self.net.in_flight.is_empty()
            && self.edge.writes.is_empty()
            && self.rec.writes.is_empty()
    }

    fn heal_and_settle(&mut self, what: &str) {
        self.net.drop_p = 0.0;
        self.net.dup_p = 0.0;
        for _ in 0..20_000 {
            self.step();
            if self.quiescent() {
                return;
            }
        }
        panic!(
            "seed {}: no quiescence after healing ({what}); edge synced {:?}, reconciler synced {:?}, link {}, in flight {}",
            self.seed,
            self.edge.machine.as_ref().map(Machine::is_synced),
            self.rec.machine.as_ref().map(Machine::is_synced),
            self.link_up,
            self.net.in_flight.len()
        );
    }
}

struct Stats {
    records: usize,
    foreign: usize,
    batches: u64,
    crashes: u64,
    cuts: u64,
}

fn run(seed: u64) -> Stats {
    let mut sim = Sim::new(seed);
    let ticks = sim.rng.random_range(50..400);
    sim.chaos(ticks);

    // Heal: both up, link back, faults off; settle what is left, then close what is settled.
    sim.edge.down_until = sim.edge.down_until.map(|_| sim.now);
    sim.rec.down_until = sim.rec.down_until.map(|_| sim.now);
    sim.link_back_at = sim.now;
    sim.heal_and_settle("first drain");
    sim.settle_one(true);
    sim.heal_and_settle("settlements back");
    sim.close_one(true);
    sim.heal_and_settle("closes up");

    let seed_ = seed;
    // Every record made durable at the edge is at the reconciler exactly once, the same.
    for id in &sim.created {
        let e = sim
            .edge
            .disk
            .get(id)
            .unwrap_or_else(|| panic!("seed {seed_}: edge lost its own record {id}"));
        let r = sim
            .rec
            .disk
            .get(id)
            .unwrap_or_else(|| panic!("seed {seed_}: {id} never reached the reconciler"));
        assert_eq!(e.facts(), r.facts(), "seed {seed_}: facts of {id} differ");
        assert_eq!(e, r, "seed {seed_}: the two sides disagree on {id}");
        assert!(
            e.quarantine().is_none(),
            "seed {seed_}: {id} quarantined: {:?}",
            e.quarantine()
        );
        assert_eq!(
            sim.settled_count.get(id),
            Some(&1),
            "seed {seed_}: {id} settled {:?} times",
            sim.settled_count.get(id)
        );
        assert!(
            e.settlement().is_some(),
            "seed {seed_}: settlement of {id} not back at the edge"
        );
        assert_eq!(
            e.state(),
            RecordState::Closed,
            "seed {seed_}: {id} not closed"
        );
    }
    // Nothing else at the reconciler: no foreign record, no duplicate.
    let rec_ids: BTreeSet<RecordId> = sim.rec.disk.ids().cloned().collect();
    assert_eq!(
        rec_ids, sim.created,
        "seed {seed_}: reconciler holds other records than the edge created"
    );
    // Another facility's record was refused and is quarantined at the edge with the reason.
    for id in &sim.foreign {
        let e = sim.edge.disk.get(id).unwrap();
        let q = e
            .quarantine()
            .unwrap_or_else(|| panic!("seed {seed_}: foreign {id} not quarantined"));
        assert!(
            q.reason.contains(FOREIGN),
            "seed {seed_}: reason does not name the facility: {}",
            q.reason
        );
    }
    // The machines' journals mirror the disks.
    assert_eq!(
        sim.edge.machine.as_ref().unwrap().journal(),
        &sim.edge.disk,
        "seed {seed_}: edge machine differs from its disk"
    );
    assert_eq!(
        sim.rec.machine.as_ref().unwrap().journal(),
        &sim.rec.disk,
        "seed {seed_}: reconciler machine differs from its disk"
    );
    Stats {
        records: sim.created.len(),
        foreign: sim.foreign.len(),
        batches: sim.batches_sent,
        crashes: sim.crashes,
        cuts: sim.cuts,
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn sync_survives_lossy_reordering_links_and_crashes() {
    let seeds: Vec<u64> = match env_u64("SYNC_SIM_SEED") {
        Some(s) => vec![s],
        None => (0..env_u64("SYNC_SIM_SEEDS").unwrap_or(2_000)).collect(),
    };
    let mut total = Stats {
        records: 0,
        foreign: 0,
        batches: 0,
        crashes: 0,
        cuts: 0,
    };
    for &seed in &seeds {
        let s = run(seed);
        total.records += s.records;
        total.foreign += s.foreign;
        total.batches += s.batches;
        total.crashes += s.crashes;
        total.cuts += s.cuts;
    }
    eprintln!(
        "sync sim: {} seeds, {} records checked ({} foreign refused), {} batches, {} crashes, {} link cuts; lost 0, duplicated 0, acked resent 0",
        seeds.len(),
        total.records,
        total.foreign,
        total.batches,
        total.crashes,
        total.cuts,
    );
}

#[test]
fn a_clean_link_drains_a_backlog_in_batches_and_then_reports_synced() {
    let facility = FacilityCode::parse(FACILITY).unwrap();
    let config = SyncConfig {
        batch_records: 10,
        max_batches_in_flight: 2,
        ..SyncConfig::default()
    };
    let mut disk = Journal::new();
    for n in 0..95 {
        let id = RecordId::new(facility.clone(), NODE, n);
        disk.merge_record(JournalRecord::new(id.clone(), facts(&id, n + 1, 0)).unwrap());
    }
    let mut edge = EdgeSync::new(config.clone(), facility.clone(), disk.clone());
    let mut rec = ReconcilerSync::new(config, facility, &Journal::new());
    let mut rec_disk = Journal::new();
    edge.handle(0, Input::Connected);
    rec.handle(0, Input::Connected);
    let mut batches = 0;
    let mut reports = Vec::new();
    for now in 0..200 {
        while let Some(m) = edge.poll_transmit(now) {
            if matches!(m, SyncMessage::Batch { .. }) {
                batches += 1;
            }
            rec.handle(now, Input::Message(m));
        }
        while let Some(a) = rec.poll_action() {
            if let Action::Persist {
                persist_id,
                records,
            } = a
            {
                for r in records {
                    rec_disk.merge_record(r);
                }
                rec.handle(now, Input::Durable(persist_id));
            }
        }
        while let Some(m) = rec.poll_transmit(now) {
            edge.handle(now, Input::Message(m));
        }
        while let Some(a) = edge.poll_action() {
            if let Action::Report(r) = a {
                reports.push(r);
            }
        }
    }
    assert_eq!(rec_disk.len(), 95);
    assert_eq!(batches, 10, "95 records in batches of 10");
    assert!(edge.is_synced() && rec.is_synced());
    assert!(
        edge.journal()
            .iter()
            .all(|r| r.state() == RecordState::Sent)
    );
    assert!(reports.last().is_some_and(|r| r.synced && r.outgoing == 0));
    assert!(
        reports.iter().take(reports.len() - 1).all(|r| !r.synced),
        "synced reported before the end: {reports:?}"
    );
}

#[test]
fn acknowledgement_waits_for_the_disk() {
    let facility = FacilityCode::parse(FACILITY).unwrap();
    let id = RecordId::new(facility.clone(), NODE, 1);
    let r = JournalRecord::new(id.clone(), facts(&id, 1, 0)).unwrap();
    let mut rec = ReconcilerSync::new(SyncConfig::default(), facility.clone(), &Journal::new());
    rec.handle(0, Input::Connected);
    let _hello = rec.poll_transmit(0);
    let edge_hello = SyncMessage::Hello {
        facility,
        seen_yours: true,
        have: Default::default(),
    };
    rec.handle(0, Input::Message(edge_hello));
    rec.handle(
        1,
        Input::Message(SyncMessage::Batch {
            batch_id: 7,
            records: vec![r],
        }),
    );
    let mut persist = None;
    while let Some(a) = rec.poll_action() {
        if let Action::Persist { persist_id, .. } = a {
            persist = Some(persist_id);
        }
    }
    assert!(
        std::iter::from_fn(|| rec.poll_transmit(2)).all(|m| !matches!(m, SyncMessage::Ack { .. })),
        "acked before durable"
    );
    rec.handle(3, Input::Durable(persist.expect("a persist")));
    let acks: Vec<SyncMessage> = std::iter::from_fn(|| rec.poll_transmit(3))
        .filter(|m| matches!(m, SyncMessage::Ack { .. }))
        .collect();
    assert_eq!(acks.len(), 1);
    let SyncMessage::Ack {
        batch_id,
        acked,
        rejected,
    } = &acks[0]
    else {
        unreachable!()
    };
    assert_eq!((*batch_id, acked.len(), rejected.len()), (7, 1, 0));
}

#[test]
fn a_foreign_record_is_rejected_with_its_reason_and_the_rest_flows() {
    let facility = FacilityCode::parse(FACILITY).unwrap();
    let foreign = FacilityCode::parse(FOREIGN).unwrap();
    let own = RecordId::new(facility.clone(), NODE, 1);
    let other = RecordId::new(foreign, NODE, 2);
    let mut rec = ReconcilerSync::new(SyncConfig::default(), facility.clone(), &Journal::new());
    rec.handle(0, Input::Connected);
    rec.handle(
        0,
        Input::Message(SyncMessage::Hello {
            facility,
            seen_yours: true,
            have: Default::default(),
        }),
    );
    let batch = vec![
        JournalRecord::new(other.clone(), facts(&other, 2, 0)).unwrap(),
        JournalRecord::new(own.clone(), facts(&own, 1, 0)).unwrap(),
    ];
    rec.handle(
        1,
        Input::Message(SyncMessage::Batch {
            batch_id: 1,
            records: batch,
        }),
    );
    while let Some(a) = rec.poll_action() {
        if let Action::Persist {
            persist_id,
            records,
        } = a
        {
            assert!(
                records.iter().all(|r| r.id() == &own),
                "a foreign record reached the disk"
            );
            rec.handle(2, Input::Durable(persist_id));
        }
    }
    let ack = std::iter::from_fn(|| rec.poll_transmit(2))
        .find(|m| matches!(m, SyncMessage::Ack { .. }))
        .expect("an ack");
    let SyncMessage::Ack {
        acked, rejected, ..
    } = ack
    else {
        unreachable!()
    };
    assert_eq!(
        acked.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>(),
        vec![own]
    );
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].id, other);
    assert!(rejected[0].reason.contains(FOREIGN));
    assert!(rec.journal().get(&other).is_none());
}

#[test]
fn messages_round_trip_behind_a_version_tag() {
    let facility = FacilityCode::parse(FACILITY).unwrap();
    let id = RecordId::new(facility.clone(), NODE, 3);
    let mut j = Journal::new();
    j.merge_record(JournalRecord::new(id.clone(), facts(&id, 3, 0)).unwrap());
    let msgs = vec![
        SyncMessage::Hello {
            facility,
            seen_yours: false,
            have: onshi_sync::protocol::Summary::of(j.iter()),
        },
        SyncMessage::Batch {
            batch_id: 1,
            records: j.iter().cloned().collect(),
        },
        SyncMessage::Ack {
            batch_id: 1,
            acked: vec![(
                id,
                Versions {
                    edge: 1,
                    reconciler: 0,
                },
            )],
            rejected: vec![],
        },
        SyncMessage::SlowDown { delay_ms: 250 },
    ];
    for m in msgs {
        let bytes = m.encode().unwrap();
        // V1 while no record uses staff's choice or a settlement revision (issue 15), so that
        // peers not yet upgraded keep reading it.
        assert_eq!(bytes[0], 0, "version tag V1 first");
        assert_eq!(SyncMessage::decode(&bytes).unwrap(), m);
    }
    // A batch from a peer not yet upgraded (V1 records) is still read.
    #[derive(serde::Serialize)]
    enum OldWire {
        V1(OldMessage),
    }
    #[derive(serde::Serialize)]
    #[allow(dead_code)]
    enum OldMessage {
        Hello,
        Batch {
            batch_id: u64,
            records: Vec<onshi_sync::crdt::JournalRecordV1>,
        },
    }
    let old = postcard::to_allocvec(&OldWire::V1(OldMessage::Batch {
        batch_id: 1,
        records: j.iter().map(JournalRecord::to_v1).collect(),
    }))
    .unwrap();
    assert_eq!(
        SyncMessage::decode(&old).unwrap(),
        SyncMessage::Batch {
            batch_id: 1,
            records: j.iter().cloned().collect(),
        }
    );
    assert!(SyncMessage::decode(&[9, 1, 2]).is_err());
}

/// Drives a handshake between two fresh machines with no loss, returning when both are idle.
fn exchange(edge: &mut EdgeSync, rec: &mut ReconcilerSync, now: u64, rec_disk: &mut Journal) {
    for _ in 0..20 {
        let mut moved = false;
        while let Some(m) = edge.poll_transmit(now) {
            moved = true;
            rec.handle(now, Input::Message(m));
        }
        while let Some(a) = rec.poll_action() {
            if let Action::Persist {
                persist_id,
                records,
            } = a
            {
                for r in records {
                    rec_disk.merge_record(r);
                }
                rec.handle(now, Input::Durable(persist_id));
            }
        }
        while let Some(m) = rec.poll_transmit(now) {
            moved = true;
            edge.handle(now, Input::Message(m));
        }
        while edge.poll_action().is_some() {}
        if !moved {
            return;
        }
    }
}

#[test]
fn the_edge_waits_when_told_to_slow_down() {
    let facility = FacilityCode::parse(FACILITY).unwrap();
    let mut edge = EdgeSync::new(SyncConfig::default(), facility.clone(), Journal::new());
    let mut rec = ReconcilerSync::new(SyncConfig::default(), facility.clone(), &Journal::new());
    let mut rec_disk = Journal::new();
    edge.handle(0, Input::Connected);
    rec.handle(0, Input::Connected);
    exchange(&mut edge, &mut rec, 0, &mut rec_disk);
    rec.slow_down(500);
    exchange(&mut edge, &mut rec, 1, &mut rec_disk);
    let id = RecordId::new(facility, NODE, 1);
    edge.handle(
        2,
        Input::LocalChange(JournalRecord::new(id.clone(), facts(&id, 1, 0)).unwrap()),
    );
    assert!(
        std::iter::from_fn(|| edge.poll_transmit(100))
            .all(|m| !matches!(m, SyncMessage::Batch { .. })),
        "sent during the pause"
    );
    assert_eq!(edge.poll_timeout(), Some(501), "wakes when the pause ends");
    assert!(!edge.is_synced());
    exchange(&mut edge, &mut rec, 501, &mut rec_disk);
    assert!(rec_disk.get(&id).is_some());
    assert!(edge.is_synced());
}

#[test]
fn conflicting_facts_for_one_id_are_quarantined_on_both_sides() {
    let facility = FacilityCode::parse(FACILITY).unwrap();
    let id = RecordId::new(facility.clone(), NODE, 5);
    let theirs = JournalRecord::new(id.clone(), facts(&id, 1, 0)).unwrap();
    let ours = JournalRecord::new(id.clone(), facts(&id, 2, 0)).unwrap();
    let mut rec_disk: Journal = [theirs].into_iter().collect();
    let edge_disk: Journal = [ours].into_iter().collect();
    let mut rec = ReconcilerSync::new(SyncConfig::default(), facility.clone(), &rec_disk);
    let mut edge = EdgeSync::new(SyncConfig::default(), facility, edge_disk);
    edge.handle(0, Input::Connected);
    rec.handle(0, Input::Connected);
    // Same versions on both sides: only a changed record travels, so change ours.
    let mut changed = edge.journal().get(&id).unwrap().clone();
    changed
        .quarantine_with(Actor::Edge, "staff: check this one")
        .unwrap();
    edge.handle(0, Input::LocalChange(changed));
    exchange(&mut edge, &mut rec, 0, &mut rec_disk);
    assert!(rec.journal().get(&id).unwrap().has_conflicting_facts());
    assert!(rec_disk.get(&id).unwrap().has_conflicting_facts());
    let q = edge
        .journal()
        .get(&id)
        .unwrap()
        .quarantine()
        .unwrap()
        .clone();
    assert!(q.reason == onshi_sync::crdt::CONFLICTING_FACTS || q.reason == "staff: check this one");
    assert!(edge.is_synced(), "a refused record does not hold the queue");
}

/// Issue 15: staff choose again (P2) before the reconciler's settlement against their first choice
/// (P1, revision 1) has reached the edge. The edge's record still carries the revision-0
/// `ambiguous` settlement: not a forgery, so the reconciler takes the new choice, keeps its
/// revision-1 settlement, and has to settle again against P2.
#[test]
fn a_second_choice_racing_the_settlement_of_the_first_is_taken_not_refused() {
    let facility = FacilityCode::parse(FACILITY).unwrap();
    let id = RecordId::new(facility.clone(), NODE, 1);
    let candidate = |p: &str| {
        onshi_model::record::SettlementCandidate {
        person_id: onshi_model::PersonId::parse(p).unwrap(),
        score: 1.0,
        qualification: onshi_model::Qualification::from_registry_value(&serde_json::json!({
            "person_id": p, "card_id": null, "insurer_number": "06130017",
            "insurer_name": "霞が関健康保険組合", "card_class": "01", "symbol": "123", "number": "4567",
            "branch": "01", "relationship": "insured", "name": "患者　1", "name_kana": "カンジャ",
            "sex": "female", "birth_date": "1951-04-01", "address": "東京都", "postal_code": null,
            "acquired_on": "2020-04-01", "lost_on": null, "loss_reason": null, "share_percent": 30}))
        .unwrap(),
    }
    };
    let choice = |p: &str, s: u64| Choice {
        at: at(s * 1000),
        by: "uketsuke".into(),
        person_id: onshi_model::PersonId::parse(p).unwrap(),
    };
    let mut base = JournalRecord::new(id.clone(), facts(&id, 1, 0)).unwrap();
    base.settle(
        Actor::Reconciler,
        Settlement {
            kind: SettlementKind::Ambiguous,
            candidates: vec![candidate("P1"), candidate("P2")],
            ..settlement_for(&id, 0)
        },
    )
    .unwrap();
    base.choose(Actor::Edge, choice("P1", 1)).unwrap();
    // The reconciler settled again against P1 …
    let mut theirs = base.clone();
    theirs
        .resettle(Actor::Reconciler, settlement_for(&id, 2000))
        .unwrap();
    // … while staff, not having seen it, chose P2.
    let mut ours = base.clone();
    ours.choose(Actor::Edge, choice("P2", 3)).unwrap();

    // Both sides start in step on `base` (synced), then each changes it at the same time.
    let mut rec_disk: Journal = [base.clone()].into_iter().collect();
    let mut rec = ReconcilerSync::new(SyncConfig::default(), facility.clone(), &rec_disk);
    let mut edge = EdgeSync::new(
        SyncConfig::default(),
        facility,
        [base].into_iter().collect(),
    );
    edge.handle(0, Input::Connected);
    rec.handle(0, Input::Connected);
    let pump =
        |edge: &mut EdgeSync, rec: &mut ReconcilerSync, rec_disk: &mut Journal, to_edge: bool| {
            // As `exchange`, with the edge's persists made durable too; `to_edge` false holds back
            // what the reconciler sends (the race: the edge's batch arrives first).
            for _ in 0..20 {
                let mut moved = false;
                while let Some(m) = edge.poll_transmit(0) {
                    moved = true;
                    rec.handle(0, Input::Message(m));
                }
                while let Some(a) = rec.poll_action() {
                    if let Action::Persist {
                        persist_id,
                        records,
                    } = a
                    {
                        for r in records {
                            rec_disk.merge_record(r);
                        }
                        rec.handle(0, Input::Durable(persist_id));
                    }
                }
                if to_edge {
                    while let Some(m) = rec.poll_transmit(0) {
                        moved = true;
                        edge.handle(0, Input::Message(m));
                    }
                }
                while let Some(a) = edge.poll_action() {
                    if let Action::Persist { persist_id, .. } = a {
                        edge.handle(0, Input::Durable(persist_id));
                    }
                }
                if !moved {
                    break;
                }
            }
        };
    pump(&mut edge, &mut rec, &mut rec_disk, true);
    assert!(edge.is_synced());
    rec_disk.merge_record(theirs.clone());
    rec.handle(0, Input::LocalChange(theirs));
    edge.handle(0, Input::LocalChange(ours));
    pump(&mut edge, &mut rec, &mut rec_disk, false);
    let r = rec_disk.get(&id).unwrap();
    assert_eq!(
        r.choice().unwrap().person_id.as_str(),
        "P2",
        "the edge's batch reached the reconciler first and was taken"
    );
    pump(&mut edge, &mut rec, &mut rec_disk, true);

    let r = rec_disk.get(&id).unwrap();
    assert!(r.quarantine().is_none(), "refused: {:?}", r.quarantine());
    assert_eq!(r.choice().unwrap().person_id.as_str(), "P2");
    assert_eq!(r.settlement_revision(), 1);
    assert_eq!(r.settled_choice().unwrap().person_id.as_str(), "P1");
    assert!(r.needs_resettlement(), "P2 is still to be settled against");
    // The edge now holds the revision-1 settlement too, and its own choice.
    let e = edge.journal().get(&id).unwrap();
    assert!(e.quarantine().is_none(), "{:?}", e.quarantine());
    assert_eq!(e.settlement_revision(), 1);
    assert_eq!(e.choice().unwrap().person_id.as_str(), "P2");
}

/// A batch carrying staff's choice is sent as V2 and read back whole.
#[test]
fn a_batch_with_a_choice_travels_as_v2() {
    let facility = FacilityCode::parse(FACILITY).unwrap();
    let id = RecordId::new(facility, NODE, 1);
    let p = onshi_model::PersonId::parse("P1").unwrap();
    let mut r = JournalRecord::new(id.clone(), facts(&id, 1, 0)).unwrap();
    let mut amb = settlement_for(&id, 0);
    amb.kind = SettlementKind::Ambiguous;
    amb.candidates = vec![onshi_model::record::SettlementCandidate {
        person_id: p.clone(),
        score: 1.0,
        qualification: onshi_model::Qualification::from_registry_value(&serde_json::json!({
            "person_id": "P1", "card_id": null, "insurer_number": "06130017",
            "insurer_name": "霞が関健康保険組合", "card_class": "01", "symbol": "123", "number": "4567",
            "branch": "01", "relationship": "insured", "name": "患者　1", "name_kana": "カンジャ",
            "sex": "female", "birth_date": "1951-04-01", "address": "東京都", "postal_code": null,
            "acquired_on": "2020-04-01", "lost_on": null, "loss_reason": null, "share_percent": 30}))
        .unwrap(),
    }];
    r.settle(Actor::Reconciler, amb).unwrap();
    let plain = SyncMessage::Batch {
        batch_id: 1,
        records: vec![r.clone()],
    };
    assert_eq!(plain.encode().unwrap()[0], 0, "nothing new: V1");
    r.choose(
        Actor::Edge,
        Choice {
            at: at(1000),
            by: "uketsuke".into(),
            person_id: p,
        },
    )
    .unwrap();
    let m = SyncMessage::Batch {
        batch_id: 2,
        records: vec![r],
    };
    let bytes = m.encode().unwrap();
    assert_eq!(bytes[0], 1, "a choice: V2");
    assert_eq!(SyncMessage::decode(&bytes).unwrap(), m);
}
