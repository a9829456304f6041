//! Latency histograms with fixed buckets, counted with atomics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency buckets every ringkv histogram uses: 100 µs to
/// 10 s, about three per decade. A request or sync slower than the last lands in `+Inf`.
pub const LATENCY_BOUNDS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const BUCKETS: usize = LATENCY_BOUNDS_SECONDS.len() + 1;

/// A latency histogram over [`LATENCY_BOUNDS_SECONDS`]: one atomic per bucket plus the sum
/// in nanoseconds. Observing is two relaxed atomic additions.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket, not cumulative; the last is `+Inf`.
    buckets: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Counts one observation of `took`.
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BOUNDS_SECONDS.partition_point(|bound| *bound < seconds);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counts so far (each bucket read on its own: a scrape racing observations may see
    /// the sum and the buckets a few observations apart, as Prometheus clients do).
    pub fn snapshot(&self) -> Snapshot {
        let counts = self
            .buckets
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .collect();
        let sum_seconds = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        Snapshot::new(&LATENCY_BOUNDS_SECONDS, counts, sum_seconds)
    }
}

/// A histogram's counts as a scrape writes them: `bounds` ascending, `counts` per bucket
/// (not cumulative) with one more for `+Inf`.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub bounds: &'static [f64],
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl Snapshot {
    /// Counts per bucket of `bounds` plus `+Inf`; missing counts read as zero, extra ones
    /// join `+Inf`.
    pub fn new(bounds: &'static [f64], mut counts: Vec<u64>, sum: f64) -> Snapshot {
        if counts.len() > bounds.len() + 1 {
            let extra: u64 = counts.drain(bounds.len() + 1..).sum();
            counts[bounds.len()] += extra;
        }
        counts.resize(bounds.len() + 1, 0);
        Snapshot { bounds, counts, sum }
    }

    /// Observations in all buckets.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An observation lands in the first bucket whose bound is at least it (`le`), beyond
    /// the last bound in `+Inf`; the sum adds up.
    #[test]
    fn observations_land_in_their_buckets() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(100));
        histogram.observe(Duration::from_micros(101));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.counts.len(), LATENCY_BOUNDS_SECONDS.len() + 1);
        assert_eq!(snapshot.counts[0], 1, "100 µs is le 0.0001");
        assert_eq!(snapshot.counts[1], 1, "101 µs is le 0.00025");
        assert_eq!(snapshot.counts[5], 1, "3 ms is le 0.005");
        assert_eq!(snapshot.counts[LATENCY_BOUNDS_SECONDS.len()], 1, "60 s is +Inf");
        assert_eq!(snapshot.count(), 4);
        assert!((snapshot.sum - 60.003201).abs() < 1e-9, "{}", snapshot.sum);
    }

    /// Counts of another length are fitted to the bounds: missing as zero, extra in `+Inf`.
    #[test]
    fn snapshots_fit_their_counts_to_the_bounds() {
        static BOUNDS: [f64; 2] = [1.0, 2.0];
        assert_eq!(Snapshot::new(&BOUNDS, vec![1], 0.5).counts, vec![1, 0, 0]);
        assert_eq!(
            Snapshot::new(&BOUNDS, vec![1, 2, 3, 4], 0.5).counts,
            vec![1, 2, 7]
        );
    }
}
