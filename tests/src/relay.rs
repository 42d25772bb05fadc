//! A user-space UDP relay for the QUIC link between one edge and the reconciler, with seeded,
//! changeable impairments: drop, duplicate, reorder (hold a datagram, send it after the next one),
//! delay (uniform in a range), and a cut that blocks both directions until it heals.
//!
//! The relay binds `127.0.0.1:0` (the edge's `--reconciler` is [`Relay::addr`]); datagrams from a
//! client go to the upstream address from one upstream socket, and datagrams arriving there go back
//! to the client that sent last (one edge at a time: a restarted edge is a new client address, and
//! answers follow it). Plain `std` sockets with read timeouts on threads of its own; every random
//! choice comes from a ChaCha RNG per direction seeded from the relay's seed. Stops on drop.

use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What the relay does to the datagrams crossing it; change it at any time with [`Relay::set`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impairment {
    /// Probability that a datagram is dropped.
    pub drop: f64,
    /// Probability that a (not dropped) datagram is sent twice.
    pub duplicate: f64,
    /// Probability that a datagram is held and sent after the next one in its direction (or after
    /// a short quiet time if none follows).
    pub reorder: f64,
    /// Delay of each datagram, uniform in `min..=max` milliseconds.
    pub delay_ms: (u64, u64),
    /// The link is cut: nothing crosses in either direction.
    pub cut: bool,
    /// The link's capacity in bytes per second in each direction (0: unlimited). Datagrams are
    /// serialised onto the link one after the other; one that would wait longer than
    /// [`MAX_QUEUE_DELAY`] in the link's queue is dropped, as a router's buffer would.
    pub rate_bytes_per_s: u64,
}

/// The deepest a rate-limited link's queue gets before it drops (a router's buffer).
pub const MAX_QUEUE_DELAY: Duration = Duration::from_millis(100);

impl Impairment {
    /// A clean link.
    pub fn clean() -> Impairment {
        Impairment::default()
    }

    /// The link cut both ways.
    pub fn cut() -> Impairment {
        Impairment {
            cut: true,
            ..Impairment::default()
        }
    }
}

/// Counts of what the relay did, both directions together.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub received: AtomicU64,
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
    pub reordered: AtomicU64,
    /// Bytes sent on, per direction: [to the client, to the upstream].
    pub bytes: [AtomicU64; 2],
}

/// A datagram due at a time (the earliest first; equal times in the order scheduled).
#[derive(Debug, PartialEq, Eq)]
struct Due {
    at: Instant,
    seq: u64,
    to_upstream: bool,
    bytes: Vec<u8>,
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Default)]
struct Queue {
    heap: BinaryHeap<Due>,
    seq: u64,
    /// The latest delivery time scheduled per direction ([to client, to upstream]): with a delay
    /// range, later datagrams are not sent before earlier ones unless reordering says so.
    last_at: [Option<Instant>; 2],
    /// When a rate-limited link is free again, per direction.
    link_free: [Option<Instant>; 2],
}

#[derive(Debug)]
struct Shared {
    impairment: Mutex<Impairment>,
    stop: AtomicBool,
    queue: Mutex<Queue>,
    wake: Condvar,
    client: Mutex<Option<SocketAddr>>,
    stats: Arc<RelayStats>,
}

/// The relay; see the module documentation.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

const POLL: Duration = Duration::from_millis(20);

impl Relay {
    /// A relay to `upstream` on a free loopback port, its randomness seeded with `seed`.
    pub fn start(upstream: SocketAddr, seed: u64) -> Relay {
        let front = UdpSocket::bind("127.0.0.1:0").expect("binding the relay's front socket");
        let back = UdpSocket::bind("127.0.0.1:0").expect("binding the relay's upstream socket");
        front.set_read_timeout(Some(POLL)).expect("read timeout");
        back.set_read_timeout(Some(POLL)).expect("read timeout");
        let addr = front.local_addr().expect("the relay's address");
        let shared = Arc::new(Shared {
            impairment: Mutex::new(Impairment::default()),
            stop: AtomicBool::new(false),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            client: Mutex::new(None),
            stats: Arc::default(),
        });
        let mut threads = Vec::new();
        for (to_upstream, sock, salt) in [
            (true, front.try_clone().expect("clone"), 0x5eed_0001u64),
            (false, back.try_clone().expect("clone"), 0x5eed_0002),
        ] {
            let shared = shared.clone();
            let rng = ChaCha8Rng::seed_from_u64(seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            threads.push(std::thread::spawn(move || {
                receive_loop(&shared, &sock, to_upstream, rng)
            }));
        }
        let sender = {
            let shared = shared.clone();
            std::thread::spawn(move || send_loop(&shared, &front, &back, upstream))
        };
        threads.push(sender);
        Relay {
            addr,
            upstream,
            shared,
            threads,
        }
    }

    /// Where clients send (the edge's `--reconciler`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Changes the impairment (takes effect for the next datagram received).
    pub fn set(&self, imp: Impairment) {
        *self
            .shared
            .impairment
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = imp;
    }

    pub fn impairment(&self) -> Impairment {
        *self
            .shared
            .impairment
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Cuts (`true`) or heals (`false`) the link, keeping the rest of the impairment.
    pub fn set_cut(&self, cut: bool) {
        self.shared
            .impairment
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cut = cut;
    }

    /// The counters, to watch from another task.
    pub fn clone_stats(&self) -> Arc<RelayStats> {
        self.shared.stats.clone()
    }

    pub fn stats(&self) -> &RelayStats {
        &self.shared.stats
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn receive_loop(shared: &Shared, sock: &UdpSocket, to_upstream: bool, mut rng: ChaCha8Rng) {
    let mut buf = vec![0u8; 65_536];
    // The datagram held back for reordering, and since when.
    let mut held: Option<(Vec<u8>, Instant)> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        let got = sock.recv_from(&mut buf);
        let imp = *shared.impairment.lock().unwrap_or_else(|p| p.into_inner());
        let (n, from) = match got {
            Ok(v) => v,
            Err(_) => {
                // Quiet: a held datagram goes out after a while even if none follows it.
                if let Some((bytes, _)) = held.take_if(|(_, since)| since.elapsed() >= POLL)
                    && !imp.cut
                {
                    schedule(shared, &mut rng, &imp, to_upstream, bytes);
                }
                continue;
            }
        };
        shared.stats.received.fetch_add(1, Ordering::Relaxed);
        if to_upstream {
            *shared.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(from);
        }
        if imp.cut {
            shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
            held = None;
            continue;
        }
        if rng.random::<f64>() < imp.drop {
            shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let bytes = buf[..n].to_vec();
        let copies = if rng.random::<f64>() < imp.duplicate {
            shared.stats.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        if held.is_none() && rng.random::<f64>() < imp.reorder {
            shared.stats.reordered.fetch_add(1, Ordering::Relaxed);
            held = Some((bytes, Instant::now()));
            continue;
        }
        for _ in 0..copies {
            schedule(shared, &mut rng, &imp, to_upstream, bytes.clone());
        }
        if let Some((h, _)) = held.take() {
            schedule(shared, &mut rng, &imp, to_upstream, h);
        }
    }
}

fn schedule(
    shared: &Shared,
    rng: &mut ChaCha8Rng,
    imp: &Impairment,
    to_upstream: bool,
    bytes: Vec<u8>,
) {
    let (lo, hi) = (
        imp.delay_ms.0.min(imp.delay_ms.1),
        imp.delay_ms.0.max(imp.delay_ms.1),
    );
    let delay = if hi == 0 {
        0
    } else {
        rng.random_range(lo..=hi)
    };
    let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
    let dir = usize::from(to_upstream);
    let now = Instant::now();
    let mut at = now;
    if imp.rate_bytes_per_s > 0 {
        let start = q.link_free[dir].map_or(now, |free| free.max(now));
        if start.duration_since(now) > MAX_QUEUE_DELAY {
            shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let done =
            start + Duration::from_secs_f64(bytes.len() as f64 / imp.rate_bytes_per_s as f64);
        q.link_free[dir] = Some(done);
        at = done;
    }
    let mut at = at + Duration::from_millis(delay);
    if let Some(last) = q.last_at[dir] {
        at = at.max(last);
    }
    q.last_at[dir] = Some(at);
    q.seq += 1;
    let seq = q.seq;
    q.heap.push(Due {
        at,
        seq,
        to_upstream,
        bytes,
    });
    drop(q);
    shared.wake.notify_all();
}

fn send_loop(shared: &Shared, front: &UdpSocket, back: &UdpSocket, upstream: SocketAddr) {
    let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
    while !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        match q.heap.peek() {
            Some(d) if d.at <= now => {
                let Some(d) = q.heap.pop() else { continue };
                drop(q);
                // A datagram scheduled before a cut is lost with it.
                let cut = shared
                    .impairment
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .cut;
                if cut {
                    shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
                } else if d.to_upstream {
                    let _ = back.send_to(&d.bytes, upstream);
                    shared.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                    shared.stats.bytes[1].fetch_add(d.bytes.len() as u64, Ordering::Relaxed);
                } else if let Some(client) =
                    *shared.client.lock().unwrap_or_else(|p| p.into_inner())
                {
                    let _ = front.send_to(&d.bytes, client);
                    shared.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                    shared.stats.bytes[0].fetch_add(d.bytes.len() as u64, Ordering::Relaxed);
                }
                q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            }
            Some(d) => {
                let wait = d.at - now;
                q = shared
                    .wake
                    .wait_timeout(q, wait.min(POLL))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            None => {
                q = shared
                    .wake
                    .wait_timeout(q, POLL)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client socket, a server socket, and a relay to the server.
    fn setup(seed: u64) -> (UdpSocket, UdpSocket, Relay) {
        let server = UdpSocket::bind("127.0.0.1:0").expect("server");
        let client = UdpSocket::bind("127.0.0.1:0").expect("client");
        server
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let relay = Relay::start(server.local_addr().expect("addr"), seed);
        (client, server, relay)
    }

    /// Everything `sock` receives until it has been quiet for its read timeout.
    fn drain(sock: &UdpSocket) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            got.push((buf[..n].to_vec(), from));
        }
        got
    }

    fn send_n(from: &UdpSocket, to: SocketAddr, n: u32) {
        for i in 0..n {
            from.send_to(&i.to_be_bytes(), to).expect("send");
        }
    }

    fn numbers(got: &[(Vec<u8>, SocketAddr)]) -> Vec<u32> {
        got.iter()
            .map(|(b, _)| u32::from_be_bytes(b[..4].try_into().expect("4 bytes")))
            .collect()
    }

    #[test]
    fn a_clean_relay_delivers_everything_in_order_both_ways() {
        let (client, server, relay) = setup(1);
        send_n(&client, relay.addr(), 100);
        let got = drain(&server);
        assert_eq!(numbers(&got), (0..100).collect::<Vec<_>>());
        // The reply goes to the relay's upstream socket, and comes back to the client.
        let back_to = got[0].1;
        send_n(&server, back_to, 50);
        let replies = drain(&client);
        assert_eq!(numbers(&replies), (0..50).collect::<Vec<_>>());
        assert!(replies.iter().all(|(_, from)| *from == relay.addr()));
    }

    #[test]
    fn a_rate_limited_link_paces_and_drops_past_its_queue() {
        let (client, server, relay) = setup(7);
        // 10,000 bytes/s and 1,000-byte datagrams: 10 a second; the 100 ms queue holds one more.
        relay.set(Impairment {
            rate_bytes_per_s: 10_000,
            ..Impairment::clean()
        });
        for i in 0..5u32 {
            let mut d = vec![0u8; 1000];
            d[..4].copy_from_slice(&i.to_be_bytes());
            client.send_to(&d, relay.addr()).expect("send");
        }
        let got = drain(&server);
        // The first goes out at once, the second waits for the link (100 ms), the rest overflow.
        assert_eq!(numbers(&got), vec![0, 1]);
        assert_eq!(relay.stats().dropped.load(Ordering::Relaxed), 3);
        assert_eq!(relay.stats().bytes[1].load(Ordering::Relaxed), 2000);
    }

    #[test]
    fn a_drop_rate_of_one_delivers_nothing() {
        let (client, server, relay) = setup(2);
        relay.set(Impairment {
            drop: 1.0,
            ..Impairment::clean()
        });
        send_n(&client, relay.addr(), 50);
        assert!(drain(&server).is_empty());
        assert_eq!(relay.stats().dropped.load(Ordering::Relaxed), 50);
    }

    #[test]
    fn a_duplicate_rate_of_one_doubles_every_datagram() {
        let (client, server, relay) = setup(3);
        relay.set(Impairment {
            duplicate: 1.0,
            ..Impairment::clean()
        });
        send_n(&client, relay.addr(), 20);
        let got = numbers(&drain(&server));
        assert_eq!(got, (0..20).flat_map(|i| [i, i]).collect::<Vec<_>>());
    }

    #[test]
    fn reordering_swaps_neighbours_and_loses_nothing() {
        let (client, server, relay) = setup(4);
        relay.set(Impairment {
            reorder: 1.0,
            ..Impairment::clean()
        });
        send_n(&client, relay.addr(), 10);
        let got = numbers(&drain(&server));
        assert_eq!(got, vec![1, 0, 3, 2, 5, 4, 7, 6, 9, 8]);
    }

    #[test]
    fn delay_and_loss_are_reproducible_from_the_seed() {
        let run = |seed| {
            let (client, server, relay) = setup(seed);
            relay.set(Impairment {
                drop: 0.3,
                delay_ms: (1, 5),
                ..Impairment::clean()
            });
            for i in 0..100u32 {
                client
                    .send_to(&i.to_be_bytes(), relay.addr())
                    .expect("send");
                std::thread::sleep(Duration::from_millis(1));
            }
            numbers(&drain(&server))
        };
        let a = run(9);
        assert!(
            a.len() > 40 && a.len() < 95,
            "about 70 % delivered: {}",
            a.len()
        );
        assert!(
            a.windows(2).all(|w| w[0] < w[1]),
            "a delay range keeps the order: {a:?}"
        );
        assert_eq!(a, run(9), "the same seed drops the same datagrams");
    }

    #[test]
    fn a_cut_blocks_both_ways_and_heals() {
        let (client, server, relay) = setup(5);
        send_n(&client, relay.addr(), 1);
        let back_to = drain(&server)[0].1;
        relay.set_cut(true);
        send_n(&client, relay.addr(), 10);
        send_n(&server, back_to, 10);
        assert!(drain(&server).is_empty());
        assert!(drain(&client).is_empty());
        relay.set_cut(false);
        send_n(&client, relay.addr(), 3);
        assert_eq!(numbers(&drain(&server)), vec![0, 1, 2]);
        send_n(&server, back_to, 3);
        assert_eq!(numbers(&drain(&client)), vec![0, 1, 2]);
    }
}
