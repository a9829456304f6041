//! A userspace network emulator: latency, jitter, loss and reordering per directed link between
//! node namespaces, because this kernel has no `tc netem` qdisc.
//!
//! # How
//!
//! For every emulated link `(from, to)`, `to`'s namespace gets a rule in the `INPUT` chain of its
//! `mangle` table, `-s <from's ip> -j NFQUEUE --queue-num 7 --queue-bypass` (written by
//! [`crate::net::Network::emulate`]). The kernel hands each such packet — TCP and gossip UDP
//! alike — to a netlink socket the harness opened inside that namespace, and waits for a
//! verdict. The emulator's one thread ([`Emulator`]) holds every packet and gives its verdict
//! later, as [`packet_fate`] decides from the link's [`LinkFault`]:
//!
//! - ACCEPT after the link's delay plus jitter, drawn per packet (uniform in
//!   `delay ± jitter`), so with jitter packets overtake each other;
//! - ACCEPT at once, with the link's reorder probability: the packet overtakes the ones held;
//! - DROP, with the link's loss probability.
//!
//! An accepted packet goes on through the `filter` table, so partitions (`net.rs`) still apply
//! to it. Packets are delayed where they arrive, like the partitions' drops: the sender's stack
//! sees nothing but a slow or lossy path.
//!
//! # Bounds
//!
//! At most [`MAX_HELD_PACKETS`] are held; a packet beyond that is dropped (a full router
//! queue), and so is one the kernel cannot queue because [`KERNEL_QUEUE_MAX_LEN`] packets wait
//! for the thread already. Delays are at most [`MAX_DELAY`].
//!
//! # Shutdown
//!
//! [`crate::net::Network::heal`] removes the rules first (no new packet is queued), then
//! [`Emulator::stop`] tells the thread to accept every packet it holds and every one still
//! waiting in the kernel's queues (unbinding would drop those), unbind its queues and return;
//! the thread is joined. Dropping an [`Emulator`] (a panicking harness, a dropped
//! network) does the same. `--queue-bypass` makes a rule whose queue nobody reads accept its
//! packets, so a dead emulator never blackholes a link.

use std::collections::{BTreeMap, BinaryHeap};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, warn};

/// The NFQUEUE number the emulator reads in every node namespace (queues are per namespace).
pub const QUEUE_NUM: u16 = 7;

/// Packets held by the emulator at most; a packet beyond is dropped.
pub const MAX_HELD_PACKETS: usize = 8192;

/// Packets the kernel keeps per queue while the thread has not read them; more are dropped.
pub const KERNEL_QUEUE_MAX_LEN: u32 = 4096;

/// The longest delay (with jitter) a link may have.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// How long the thread waits at most between two reads of its queues: the resolution of the
/// delays.
const TICK: Duration = Duration::from_millis(1);

/// Packets read from one queue per tick at most, so one busy link cannot starve the releases.
const MAX_READS_PER_TICK: usize = 1024;

/// Bytes of each packet copied to the emulator: enough for any IPv4 header (the source
/// address is all it reads).
const COPY_RANGE_BYTES: u16 = 60;

/// What one directed link does to its packets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkFault {
    /// Mean one-way delay added to every packet that is not dropped or reordered.
    pub delay: Duration,
    /// Each packet's delay is uniform in `delay ± jitter` (never below zero).
    pub jitter: Duration,
    /// Probability that a packet is dropped, in `0.0..=1.0`.
    pub loss_probability: f64,
    /// Probability that a packet is released at once, overtaking the held ones, in `0.0..=1.0`.
    pub reorder_probability: f64,
}

impl LinkFault {
    /// A delay of `delay ± jitter`, nothing lost.
    pub fn slow(delay: Duration, jitter: Duration) -> LinkFault {
        LinkFault {
            delay,
            jitter,
            loss_probability: 0.0,
            reorder_probability: 0.0,
        }
    }

    /// A loss of `loss_probability`, no delay.
    pub fn lossy(loss_probability: f64) -> LinkFault {
        LinkFault {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss_probability,
            reorder_probability: 0.0,
        }
    }

    /// Probabilities within `0..=1`, `delay + jitter` within [`MAX_DELAY`].
    pub fn validate(&self) -> Result<(), String> {
        for (name, probability) in [
            ("loss_probability", self.loss_probability),
            ("reorder_probability", self.reorder_probability),
        ] {
            if !(0.0..=1.0).contains(&probability) {
                return Err(format!("{name} {probability} is not within 0..=1"));
            }
        }
        if self.delay.saturating_add(self.jitter) > MAX_DELAY {
            return Err(format!(
                "delay {:?} + jitter {:?} exceeds {MAX_DELAY:?}",
                self.delay, self.jitter
            ));
        }
        Ok(())
    }
}

/// What happens to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketFate {
    /// Dropped.
    Drop,
    /// Accepted at once, overtaking the packets held (reordering).
    Overtake,
    /// Accepted once this much time has passed since it arrived (at once for zero).
    ReleaseAfter(Duration),
}

/// The fate of one packet on a link with `fault`: pure, given the random source.
pub fn packet_fate(fault: &LinkFault, rng: &mut impl Rng) -> PacketFate {
    if fault.loss_probability > 0.0 && rng.random_bool(fault.loss_probability.min(1.0)) {
        return PacketFate::Drop;
    }
    if fault.reorder_probability > 0.0 && rng.random_bool(fault.reorder_probability.min(1.0)) {
        return PacketFate::Overtake;
    }
    if fault.jitter.is_zero() {
        return PacketFate::ReleaseAfter(fault.delay);
    }
    let lowest = fault.delay.saturating_sub(fault.jitter);
    let highest = fault.delay.saturating_add(fault.jitter);
    PacketFate::ReleaseAfter(rng.random_range(lowest..=highest))
}

/// The source address of an IPv4 packet, `None` for anything else or a truncated header.
pub fn ipv4_source(packet: &[u8]) -> Option<Ipv4Addr> {
    const MIN_HEADER_BYTES: usize = 20;
    let version = packet.first()? >> 4;
    if version != 4 || packet.len() < MIN_HEADER_BYTES {
        return None;
    }
    let source: [u8; 4] = packet[12..16].try_into().ok()?;
    Some(Ipv4Addr::from(source))
}

/// Counters of everything the emulator did since it started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetemStats {
    /// Packets read from the queues.
    pub queued: u64,
    /// Packets accepted (after their delay, or at once).
    pub released: u64,
    /// Packets released at once to overtake the held ones (the links' reorder probability).
    pub reordered: u64,
    /// Packets dropped by the links' loss probability.
    pub dropped_by_loss: u64,
    /// Packets dropped because [`MAX_HELD_PACKETS`] were held.
    pub dropped_full: u64,
    /// Packets from an address no link names (accepted at once).
    pub unmatched: u64,
}

#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    released: AtomicU64,
    reordered: AtomicU64,
    dropped_by_loss: AtomicU64,
    dropped_full: AtomicU64,
    unmatched: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> NetemStats {
        NetemStats {
            queued: self.queued.load(Ordering::Relaxed),
            released: self.released.load(Ordering::Relaxed),
            reordered: self.reordered.load(Ordering::Relaxed),
            dropped_by_loss: self.dropped_by_loss.load(Ordering::Relaxed),
            dropped_full: self.dropped_full.load(Ordering::Relaxed),
            unmatched: self.unmatched.load(Ordering::Relaxed),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One namespace's queue and the faults of the links that end there, by source address.
pub struct Inbox {
    /// The receiving node (network slot), for logs.
    pub node: usize,
    /// A queue socket opened inside the node's namespace and bound to [`QUEUE_NUM`].
    pub queue: nfq::Queue,
    /// The fault of each link into this node, by the sending node's address.
    pub links: BTreeMap<Ipv4Addr, LinkFault>,
}

/// Opens and configures the emulator's queue; call it on a thread inside the namespace
/// whose packets it should read (netlink sockets belong to the namespace that created them).
pub fn open_queue() -> std::io::Result<nfq::Queue> {
    let mut queue = nfq::Queue::open()?;
    queue.bind(QUEUE_NUM)?;
    queue.set_copy_range(QUEUE_NUM, COPY_RANGE_BYTES)?;
    queue.set_queue_max_len(QUEUE_NUM, KERNEL_QUEUE_MAX_LEN)?;
    // A full kernel queue drops, as a full router would; the offload flag spares the kernel
    // segmenting large packets for us (the payload is never changed).
    queue.set_fail_open(QUEUE_NUM, false)?;
    queue.set_recv_gso(QUEUE_NUM, true)?;
    queue.set_nonblocking(true);
    Ok(queue)
}

/// A packet waiting for its release.
struct Held {
    release_at: Instant,
    /// Arrival order, so that packets due at the same instant leave in order.
    sequence: u64,
    inbox: usize,
    message: nfq::Message,
}

impl PartialEq for Held {
    fn eq(&self, other: &Held) -> bool {
        (self.release_at, self.sequence) == (other.release_at, other.sequence)
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Held) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    /// Reversed: the earliest release is the greatest, on top of the max-heap.
    fn cmp(&self, other: &Held) -> std::cmp::Ordering {
        (other.release_at, other.sequence).cmp(&(self.release_at, self.sequence))
    }
}

/// The running emulator: one thread reading every inbox. [`Emulator::stop`] (or dropping it)
/// releases what it holds and joins the thread.
pub struct Emulator {
    /// Dropping the sender (or sending) stops the thread.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Emulator")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Emulator {
    /// Starts the thread over `inboxes`; `seed` makes the per-packet draws reproducible for a
    /// given arrival order.
    pub fn start(inboxes: Vec<Inbox>, seed: u64) -> std::io::Result<Emulator> {
        let (stop_sender, stop_receiver) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let pump = Pump {
            inboxes,
            held: BinaryHeap::new(),
            next_sequence: 0,
            rng: StdRng::seed_from_u64(seed),
            counters: counters.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("netem".to_owned())
            .spawn(move || pump.run(&stop_receiver))?;
        Ok(Emulator {
            stop: Some(stop_sender),
            thread: Some(thread),
            counters,
        })
    }

    /// What the emulator did so far.
    pub fn stats(&self) -> NetemStats {
        self.counters.snapshot()
    }

    /// Accepts every held packet, unbinds the queues and joins the thread; the final counters.
    pub fn stop(mut self) -> NetemStats {
        self.shut_down();
        self.stats()
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            // An error means the thread is gone already; the join below reports a panic.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                warn!("the network emulator's thread panicked");
            }
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The thread's state.
struct Pump {
    inboxes: Vec<Inbox>,
    held: BinaryHeap<Held>,
    next_sequence: u64,
    rng: StdRng,
    counters: Arc<Counters>,
}

impl Pump {
    fn run(mut self, stop: &mpsc::Receiver<()>) {
        loop {
            for inbox_index in 0..self.inboxes.len() {
                self.read_inbox(inbox_index);
            }
            self.release_due(Instant::now());
            let wait = self
                .held
                .peek()
                .map_or(TICK, |next| {
                    next.release_at.saturating_duration_since(Instant::now())
                })
                .min(TICK);
            match stop.recv_timeout(wait) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        // Healing releases what is held: the packets were only late, never lost. So are those
        // still waiting in the kernel's queues, which unbinding would drop.
        while let Some(packet) = self.held.pop() {
            self.verdict(packet.inbox, packet.message, nfq::Verdict::Accept);
            bump(&self.counters.released);
        }
        for inbox_index in 0..self.inboxes.len() {
            self.release_waiting(inbox_index);
        }
        for inbox in &mut self.inboxes {
            if let Err(err) = inbox.queue.unbind(QUEUE_NUM) {
                debug!(node = inbox.node, %err, "unbinding the emulator's queue");
            }
        }
    }

    fn read_inbox(&mut self, inbox_index: usize) {
        for _ in 0..MAX_READS_PER_TICK {
            let message = match self.inboxes[inbox_index].queue.recv() {
                Ok(message) => message,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(err) => {
                    warn!(node = self.inboxes[inbox_index].node, %err, "reading the emulator's queue");
                    return;
                }
            };
            bump(&self.counters.queued);
            let arrived = Instant::now();
            let inbox = &self.inboxes[inbox_index];
            let fault = ipv4_source(message.get_payload()).and_then(|source| inbox.links.get(&source));
            let Some(fault) = fault.copied() else {
                bump(&self.counters.unmatched);
                self.verdict(inbox_index, message, nfq::Verdict::Accept);
                continue;
            };
            match packet_fate(&fault, &mut self.rng) {
                PacketFate::Drop => {
                    bump(&self.counters.dropped_by_loss);
                    self.verdict(inbox_index, message, nfq::Verdict::Drop);
                }
                PacketFate::Overtake => {
                    bump(&self.counters.reordered);
                    bump(&self.counters.released);
                    self.verdict(inbox_index, message, nfq::Verdict::Accept);
                }
                PacketFate::ReleaseAfter(delay) if delay.is_zero() => {
                    bump(&self.counters.released);
                    self.verdict(inbox_index, message, nfq::Verdict::Accept);
                }
                PacketFate::ReleaseAfter(_) if self.held.len() >= MAX_HELD_PACKETS => {
                    bump(&self.counters.dropped_full);
                    self.verdict(inbox_index, message, nfq::Verdict::Drop);
                }
                PacketFate::ReleaseAfter(delay) => {
                    let sequence = self.next_sequence;
                    self.next_sequence += 1;
                    self.held.push(Held {
                        release_at: arrived + delay,
                        sequence,
                        inbox: inbox_index,
                        message,
                    });
                }
            }
        }
    }

    /// Accepts every packet waiting in an inbox's kernel queue (at most [`KERNEL_QUEUE_MAX_LEN`]:
    /// the rules are gone, so no more arrive).
    fn release_waiting(&mut self, inbox_index: usize) {
        for _ in 0..KERNEL_QUEUE_MAX_LEN {
            let Ok(message) = self.inboxes[inbox_index].queue.recv() else {
                return;
            };
            bump(&self.counters.queued);
            bump(&self.counters.released);
            self.verdict(inbox_index, message, nfq::Verdict::Accept);
        }
    }

    fn release_due(&mut self, now: Instant) {
        while self.held.peek().is_some_and(|next| next.release_at <= now) {
            let Some(packet) = self.held.pop() else { break };
            self.verdict(packet.inbox, packet.message, nfq::Verdict::Accept);
            bump(&self.counters.released);
        }
    }

    fn verdict(&mut self, inbox_index: usize, mut message: nfq::Message, verdict: nfq::Verdict) {
        message.set_verdict(verdict);
        let inbox = &mut self.inboxes[inbox_index];
        if let Err(err) = inbox.queue.verdict(message) {
            // The kernel forgets a packet whose verdict it never gets only when the queue is
            // unbound: it is lost, as on a faulty link.
            debug!(node = inbox.node, %err, "giving a verdict to the emulator's queue");
        }
    }
}

/// The `mangle` table for node `node`'s namespace, in `iptables-restore` format: every packet
/// arriving from a node whose link into `node` is emulated goes to the emulator's queue.
pub fn mangle_table(
    node: usize,
    links: &BTreeMap<(usize, usize), LinkFault>,
    ip_of: impl Fn(usize) -> Ipv4Addr,
) -> String {
    let mut table = String::from(
        "*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n\
         :OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n",
    );
    for &(from, to) in links.keys() {
        debug_assert_ne!(from, to, "a node has no link to itself");
        if to == node {
            table.push_str(&format!(
                "-A INPUT -s {}/32 -j NFQUEUE --queue-num {QUEUE_NUM} --queue-bypass\n",
                ip_of(from)
            ));
        }
    }
    table.push_str("COMMIT\n");
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(fault: &LinkFault, count: usize) -> Vec<PacketFate> {
        let mut rng = StdRng::seed_from_u64(7);
        (0..count).map(|_| packet_fate(fault, &mut rng)).collect()
    }

    /// Every delay lies in `delay ± jitter`, and with jitter the delays differ, so packets sent
    /// in order overtake each other.
    #[test]
    fn jittered_delays_stay_in_range_and_reorder() {
        let fault = LinkFault::slow(Duration::from_millis(100), Duration::from_millis(40));
        let delays: Vec<Duration> = draws(&fault, 1000)
            .into_iter()
            .map(|fate| match fate {
                PacketFate::ReleaseAfter(delay) => delay,
                PacketFate::Drop | PacketFate::Overtake => panic!("a slow link neither drops nor reorders"),
            })
            .collect();
        assert!(delays
            .iter()
            .all(|delay| (Duration::from_millis(60)..=Duration::from_millis(140)).contains(delay)));
        // A packet sent 1 ms after another leaves first when its delay is over 1 ms shorter.
        let overtaken = delays
            .windows(2)
            .filter(|pair| pair[1] + Duration::from_millis(1) < pair[0])
            .count();
        assert!(
            overtaken > 300,
            "only {overtaken} of 999 packets overtook the one before"
        );
    }

    /// Without jitter every packet gets exactly the delay, in order.
    #[test]
    fn delay_without_jitter_is_exact() {
        let fault = LinkFault::slow(Duration::from_millis(50), Duration::ZERO);
        assert!(draws(&fault, 100)
            .iter()
            .all(|fate| *fate == PacketFate::ReleaseAfter(Duration::from_millis(50))));
    }

    /// A jitter larger than the delay never gives a negative delay.
    #[test]
    fn jitter_beyond_the_delay_saturates_at_zero() {
        let fault = LinkFault::slow(Duration::from_millis(5), Duration::from_millis(20));
        assert!(draws(&fault, 1000).iter().all(|fate| matches!(
            fate,
            PacketFate::ReleaseAfter(delay) if *delay <= Duration::from_millis(25)
        )));
    }

    /// Loss drops about its probability of the packets; reordering releases about its share
    /// at once.
    #[test]
    fn loss_and_reordering_follow_their_probabilities() {
        let lossy = LinkFault::lossy(0.2);
        let dropped = draws(&lossy, 10_000)
            .iter()
            .filter(|fate| **fate == PacketFate::Drop)
            .count();
        assert!(
            (1_700..=2_300).contains(&dropped),
            "{dropped} of 10,000 dropped at 20 %"
        );

        let reordering = LinkFault {
            reorder_probability: 0.25,
            ..LinkFault::slow(Duration::from_millis(30), Duration::ZERO)
        };
        let at_once = draws(&reordering, 10_000)
            .iter()
            .filter(|fate| **fate == PacketFate::Overtake)
            .count();
        assert!(
            (2_200..=2_800).contains(&at_once),
            "{at_once} of 10,000 at once at 25 %"
        );
    }

    /// Probabilities outside `0..=1` and delays beyond the bound are refused.
    #[test]
    fn invalid_faults_are_refused() {
        assert!(LinkFault::lossy(1.5).validate().is_err());
        assert!(LinkFault::lossy(-0.1).validate().is_err());
        assert!(LinkFault::slow(MAX_DELAY, Duration::from_millis(1))
            .validate()
            .is_err());
        assert!(
            LinkFault::slow(Duration::from_millis(200), Duration::from_millis(50))
                .validate()
                .is_ok()
        );
    }

    /// The source address is read from an IPv4 header; anything else is not matched.
    #[test]
    fn reads_the_ipv4_source() {
        let mut header = [0u8; 20];
        header[0] = 0x45;
        header[12..16].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(ipv4_source(&header), Some(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(ipv4_source(&header[..19]), None);
        header[0] = 0x60;
        assert_eq!(ipv4_source(&header), None);
        assert_eq!(ipv4_source(&[]), None);
    }

    /// Only the links into a node put rules into its table, one per sender.
    #[test]
    fn mangle_tables_queue_the_links_into_each_node() {
        let fault = LinkFault::lossy(0.1);
        let links = BTreeMap::from([((1, 2), fault), ((3, 2), fault), ((2, 1), fault)]);
        let ip_of = |index: usize| Ipv4Addr::new(10, 1, 2, u8::try_from(index).unwrap());
        let into_two = mangle_table(2, &links, ip_of);
        assert!(into_two.contains("-A INPUT -s 10.1.2.1/32 -j NFQUEUE --queue-num 7 --queue-bypass\n"));
        assert!(into_two.contains("-A INPUT -s 10.1.2.3/32 -j NFQUEUE"));
        assert_eq!(into_two.matches("-A ").count(), 2);
        let into_three = mangle_table(3, &links, ip_of);
        assert!(!into_three.contains("-A "));
        assert!(into_three.starts_with("*mangle\n") && into_three.ends_with("COMMIT\n"));
    }
}
