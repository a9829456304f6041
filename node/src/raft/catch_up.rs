//! Pacing of catch-up traffic: snapshot chunks and the log entries a leader reads for a
//! follower that lags (a new replica of a move, or one that was down) share one byte rate
//! per node, so moves leave disk, CPU and network to client writes and heartbeats.
//!
//! Log entries are paced where the replication task reads them ([`CatchUp::pace_read`]),
//! not where they are sent: openraft bounds an AppendEntries RPC by one heartbeat
//! interval, so a wait inside the RPC had to be capped below that and, with a few
//! followers catching up at once, the cap rather than the rate decided how fast they went.
//! Only entries the quorum already committed wait (the follower is not needed for them);
//! fresh entries never do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The committed index goes to the log at most this often per group (see
/// [`CatchUp::set_committed`]).
pub const COMMITTED_SAVE_INTERVAL: Duration = Duration::from_millis(100);

/// Reads of catch-up entries at least this large are paced (smaller ones are cheap enough).
pub const CATCH_UP_READ_BYTES: usize = 256 << 10;

/// The budget never cuts a read below this: a follower only slightly behind (lagging the
/// commit by a few entries, as the slower follower of a group often does) still gets all it
/// lacks at once while the node's budget is spent on moves, and the budget's overshoot is at
/// most this much per follower catching up per capped wait.
pub const CATCH_UP_MIN_READ_BYTES: usize = 64 << 10;

/// Paces bytes to a rate shared by every caller: each send reserves its share of time
/// after the previous reservation and waits until its slot starts.
pub struct Pacer {
    bytes_per_sec: f64,
    next_free: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Pacer {
    pub fn new(bytes_per_sec: u64) -> Option<Arc<Pacer>> {
        (bytes_per_sec > 0).then(|| {
            Arc::new(Pacer {
                bytes_per_sec: bytes_per_sec as f64,
                next_free: tokio::sync::Mutex::new(tokio::time::Instant::now()),
            })
        })
    }

    /// Waits until `bytes` may be sent at the configured rate.
    pub async fn pace(&self, bytes: usize) {
        let start = self.reserve(bytes).await;
        tokio::time::sleep_until(start).await;
    }

    /// Like [`Pacer::pace`] but waits at most `max_wait` (the bytes still count against the
    /// rate, so later callers wait longer).
    pub async fn pace_at_most(&self, bytes: usize, max_wait: Duration) {
        let start = self.reserve(bytes).await;
        tokio::time::sleep_until(start.min(tokio::time::Instant::now() + max_wait)).await;
    }

    /// How many bytes a send asked for now could take so that its reservation ends within
    /// `horizon`: what is left of the horizon after the reservations already made, at the
    /// rate (0 when they reach past it).
    async fn room_within(&self, horizon: Duration) -> usize {
        let next_free = *self.next_free.lock().await;
        let now = tokio::time::Instant::now();
        let left = (now + horizon).saturating_duration_since(next_free.max(now));
        (left.as_secs_f64() * self.bytes_per_sec) as usize
    }

    /// Reserves the next slot for `bytes`; returns when it starts.
    async fn reserve(&self, bytes: usize) -> tokio::time::Instant {
        let mut next_free = self.next_free.lock().await;
        let start = (*next_free).max(tokio::time::Instant::now());
        *next_free = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec);
        start
    }
}

/// One group's side of catch-up pacing: the node's pacer and what the group committed.
#[derive(Clone)]
pub struct CatchUp {
    /// The node's catch-up pacer (None = unlimited).
    pacer: Option<Arc<Pacer>>,
    /// Longest wait of one read: replication to that follower, heartbeats included, waits
    /// meanwhile, so this stays well under an election timeout.
    max_wait: Duration,
    /// The group's committed index + 1 (0 = nothing committed), shared by the log store
    /// and its replication readers.
    committed: Arc<AtomicU64>,
    /// When the log store last wrote the committed index to the log.
    committed_saved_at: Arc<Mutex<Option<Instant>>>,
}

impl CatchUp {
    pub fn new(pacer: Option<Arc<Pacer>>, max_wait: Duration) -> CatchUp {
        CatchUp {
            pacer,
            max_wait,
            committed: Arc::new(AtomicU64::new(0)),
            committed_saved_at: Arc::default(),
        }
    }

    /// Records the group's committed index; whether the log store should also write it to
    /// the log now. That copy is only a hint openraft re-applies up to when the replica
    /// starts: it is never synced, so a power cut already leaves it behind the true commit
    /// (a restored leader serves reads only after applying its whole log, openraft patch 4),
    /// and a follower learns the rest from its leader. Written for every entry it was a WAL
    /// record per commit per group (64 clients' puts, 16 shards, three alternating pairs:
    /// +9 % puts per server CPU-second, +14 % puts/s without it); at most every
    /// [`COMMITTED_SAVE_INTERVAL`] it stays within that of the commit while writes flow.
    pub fn set_committed(&self, index: Option<u64>) -> bool {
        self.set_committed_at(index, Instant::now())
    }

    /// [`CatchUp::set_committed`] at `now`.
    fn set_committed_at(&self, index: Option<u64>, now: Instant) -> bool {
        let value = index.map_or(0, |index| index.saturating_add(1));
        self.committed.fetch_max(value, Ordering::Relaxed);
        let mut saved_at = self
            .committed_saved_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if saved_at.is_some_and(|at| now.saturating_duration_since(at) < COMMITTED_SAVE_INTERVAL) {
            return false;
        }
        *saved_at = Some(now);
        true
    }

    /// The group's committed index as openraft last saved it (None: nothing committed since
    /// the replica opened).
    pub fn committed_index(&self) -> Option<u64> {
        self.committed.load(Ordering::Relaxed).checked_sub(1)
    }

    /// Whether entries up to `last_index` are all committed.
    pub fn is_committed(&self, last_index: u64) -> bool {
        last_index < self.committed.load(Ordering::Relaxed)
    }

    /// How many bytes of entries a replication read starting at `first_index` should take,
    /// at most `max_bytes`. A read of committed entries is cut to what the node's budget has
    /// room for within the longest wait (never below [`CATCH_UP_MIN_READ_BYTES`]). The wait of
    /// [`CatchUp::pace_read`] is capped, so uncut reads let several followers catching up at
    /// once (a node leads several moving shards) each take a full batch per capped wait: up
    /// to twice the budget with two moves from one node, and never less than a batch per
    /// wait each, however low the budget was set. Cut reads hold the node to its budget.
    pub async fn read_limit(&self, first_index: u64, max_bytes: usize) -> usize {
        match &self.pacer {
            Some(pacer) if self.is_committed(first_index) => {
                let room = pacer.room_within(self.max_wait).await;
                room.max(CATCH_UP_MIN_READ_BYTES).min(max_bytes)
            }
            _ => max_bytes,
        }
    }

    /// Waits for the budget of a replication read of `bytes` ending at `last_index`, when
    /// those entries were already committed and the read is large or stopped at the limit
    /// [`CatchUp::read_limit`] cut for the budget (`cut`: more entries were left to read).
    /// A small read of every entry the follower lacks (one slightly behind) never waits.
    pub async fn pace_read(&self, last_index: u64, bytes: usize, cut: bool) {
        if (bytes < CATCH_UP_READ_BYTES && !cut) || !self.is_committed(last_index) {
            return;
        }
        if let Some(pacer) = &self.pacer {
            pacer.pace_at_most(bytes, self.max_wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed index is always recorded; the log is asked to write it at most once
    /// per [`COMMITTED_SAVE_INTERVAL`].
    #[test]
    fn the_committed_index_is_saved_at_most_once_per_interval() {
        let catch_up = CatchUp::new(None, Duration::from_secs(10));
        let start = Instant::now();
        assert!(
            catch_up.set_committed_at(Some(1), start),
            "the first save is written"
        );
        assert!(!catch_up.set_committed_at(Some(2), start + COMMITTED_SAVE_INTERVAL / 2));
        assert_eq!(catch_up.committed_index(), Some(2), "recorded all the same");
        assert!(
            catch_up.set_committed_at(Some(3), start + COMMITTED_SAVE_INTERVAL),
            "written once the interval passed"
        );
        assert!(!catch_up.set_committed_at(Some(4), start + COMMITTED_SAVE_INTERVAL));
    }

    /// Large reads of committed entries wait for the rate; fresh or small ones never do.
    #[tokio::test(start_paused = true)]
    async fn only_large_committed_reads_wait() {
        let pacer = Pacer::new(1 << 20);
        let catch_up = CatchUp::new(pacer, Duration::from_secs(10));
        catch_up.set_committed(Some(100));
        let timed = |last: u64, bytes: usize| {
            let catch_up = catch_up.clone();
            async move {
                let start = tokio::time::Instant::now();
                catch_up.pace_read(last, bytes, false).await;
                start.elapsed()
            }
        };
        // The first reservation starts now; the next waits for the first's second.
        assert_eq!(timed(100, 1 << 20).await, Duration::ZERO);
        assert_eq!(timed(100, 1 << 20).await, Duration::from_secs(1));
        assert_eq!(
            timed(101, 1 << 20).await,
            Duration::ZERO,
            "fresh entries never wait"
        );
        assert_eq!(timed(50, 1 << 10).await, Duration::ZERO, "small reads never wait");
        // A lower commit index reported late does not move it back.
        catch_up.set_committed(Some(10));
        assert!(catch_up.is_committed(100));
    }

    /// A wait is capped, and the bytes still count against the rate.
    #[tokio::test(start_paused = true)]
    async fn waits_are_capped() {
        let catch_up = CatchUp::new(Pacer::new(1 << 20), Duration::from_millis(200));
        catch_up.set_committed(Some(9));
        let start = tokio::time::Instant::now();
        catch_up.pace_read(9, 4 << 20, false).await;
        catch_up.pace_read(9, 4 << 20, false).await;
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        let unlimited = CatchUp::new(None, Duration::from_secs(1));
        unlimited.set_committed(Some(9));
        let start = tokio::time::Instant::now();
        unlimited.pace_read(9, 64 << 20, false).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    /// Reads of committed entries are cut to the room the budget has within the longest
    /// wait (never below the smallest read); fresh entries and an unlimited node read in
    /// full.
    #[tokio::test(start_paused = true)]
    async fn committed_reads_are_cut_to_the_budget_room() {
        // 8 MiB/s and a 125 ms wait: 1 MiB of room when nothing is reserved.
        let catch_up = CatchUp::new(Pacer::new(8 << 20), Duration::from_millis(125));
        catch_up.set_committed(Some(100));
        assert_eq!(catch_up.read_limit(50, 4 << 20).await, 1 << 20);
        assert_eq!(
            catch_up.read_limit(50, 100 << 10).await,
            100 << 10,
            "within the room"
        );
        catch_up.pace_read(100, 1 << 20, true).await;
        assert_eq!(
            catch_up.read_limit(50, 4 << 20).await,
            CATCH_UP_MIN_READ_BYTES,
            "the budget is spent up to the horizon: the smallest read"
        );
        assert_eq!(catch_up.read_limit(50, 1 << 10).await, 1 << 10);
        assert_eq!(catch_up.read_limit(101, 4 << 20).await, 4 << 20, "fresh entries");
        tokio::time::advance(Duration::from_millis(125)).await;
        assert_eq!(catch_up.read_limit(50, 4 << 20).await, 1 << 20, "room again");
        let unlimited = CatchUp::new(None, Duration::from_millis(125));
        unlimited.set_committed(Some(100));
        assert_eq!(unlimited.read_limit(50, 4 << 20).await, 4 << 20);
    }

    /// A small read that took every entry the follower lacks never waits, even while the
    /// budget is spent; one the budget cut waits for it whatever its size.
    #[tokio::test(start_paused = true)]
    async fn only_cut_or_large_reads_wait() {
        let catch_up = CatchUp::new(Pacer::new(1 << 20), Duration::from_secs(10));
        catch_up.set_committed(Some(100));
        catch_up.pace_read(100, 1 << 20, false).await;
        let start = tokio::time::Instant::now();
        catch_up.pace_read(100, 4 << 10, false).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "small, not cut");
        catch_up.pace_read(100, 4 << 10, true).await;
        assert_eq!(start.elapsed(), Duration::from_secs(1), "cut: waits for its slot");
    }

    /// Several followers catching up at once from one node (entries of 4 KiB, reads of at
    /// most 1 MiB, each follower reading again as soon as its last read went) together stay
    /// near the node's budget, and no read waits longer than the bound. Before reads were cut, each follower took
    /// 1 MiB per capped wait: 8 MiB/s each, 24 MiB/s in all at a budget of 4 MiB/s.
    #[tokio::test(start_paused = true)]
    async fn followers_catching_up_together_share_the_budget() {
        const RATE: u64 = 4 << 20;
        const ENTRY: usize = 4 << 10;
        let max_wait = Duration::from_millis(125);
        let catch_up = CatchUp::new(Pacer::new(RATE), max_wait);
        catch_up.set_committed(Some(u64::MAX - 1));
        let run_for = Duration::from_secs(20);
        let began = tokio::time::Instant::now();
        let followers: Vec<_> = (0..3)
            .map(|_| {
                let catch_up = catch_up.clone();
                tokio::spawn(async move {
                    let (mut sent, mut longest_wait) = (0usize, Duration::ZERO);
                    while began.elapsed() < run_for {
                        let limit = catch_up.read_limit(0, 1 << 20).await;
                        let bytes = (limit / ENTRY).max(1) * ENTRY;
                        let asked = tokio::time::Instant::now();
                        catch_up.pace_read(0, bytes, limit < 1 << 20).await;
                        longest_wait = longest_wait.max(asked.elapsed());
                        sent += bytes;
                        tokio::task::yield_now().await;
                    }
                    (sent, longest_wait)
                })
            })
            .collect();
        let mut total = 0;
        for follower in followers {
            let (sent, longest_wait) = follower.await.expect("follower");
            assert!(longest_wait <= max_wait, "{longest_wait:?}");
            total += sent;
        }
        let budget = RATE as f64 * run_for.as_secs_f64();
        assert!(
            (total as f64) < budget * 1.25 && (total as f64) > budget * 0.75,
            "{total} bytes in {run_for:?} at a budget of {budget}"
        );
    }

    /// Chunks share the rate: the third 1 MB chunk at 1 MB/s may start only after 2 s.
    #[tokio::test(start_paused = true)]
    async fn pacer_spreads_chunks_at_the_rate() {
        let pacer = Pacer::new(1_000_000).expect("limited");
        let began = tokio::time::Instant::now();
        for _ in 0..3 {
            pacer.pace(1_000_000).await;
        }
        let waited = began.elapsed();
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100),
            "{waited:?}"
        );
        assert!(Pacer::new(0).is_none(), "0 means unlimited");
    }

    /// A bounded wait returns by its bound, yet the bytes still count: the next sender's
    /// slot starts after them.
    #[tokio::test(start_paused = true)]
    async fn bounded_pacing_waits_at_most_its_bound() {
        let pacer = Pacer::new(1_000_000).expect("limited");
        let start = tokio::time::Instant::now();
        pacer.pace(1_000_000).await;
        pacer.pace_at_most(1_000_000, Duration::from_millis(100)).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(100),
            "the first slot ends at 1 s; the bound is 100 ms"
        );
        pacer.pace(1).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(2),
            "the bounded sender's bytes still took their slot"
        );
    }
}
