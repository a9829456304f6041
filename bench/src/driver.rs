//! The load generator: closed loop (N operations outstanding, each worker sends its next
//! operation when the previous one returns) and open loop (a fixed rate; each operation has
//! an intended start time and its latency is measured from it, so a stalled server shows
//! up in the latencies instead of silently lowering the offered load — no coordinated
//! omission). Latencies go into HdrHistograms, one per worker, merged at the end.
//!
//! A run is one warm-up then one measured window; an operation counts when it was meant to
//! start inside the window and finished inside it. Server counters (`/proc`) are read at
//! the window's two edges.

use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::procstat::{self, ProcSample, ServerProcess};
use crate::target::{self, Target};
use crate::workload::{record_key, Distribution, KeySpace, OpGenerator, Workload};
use crate::BenchError;

/// Highest latency the histograms hold (longer ones are recorded as this), in µs.
pub const MAX_LATENCY_US: u64 = 60_000_000;
/// Significant figures of the histograms.
const HISTOGRAM_SIGFIGS: u8 = 3;
/// Error messages kept per run (the count is always complete).
pub const MAX_ERROR_SAMPLES: usize = 5;
/// How long workers may take to return after the window closed (an operation in flight
/// ends within the request timeout).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Records per `Target::load` call of one loader task.
const LOAD_CHUNK_RECORDS: u64 = 1000;

/// How operations are issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "loop")]
pub enum LoopMode {
    /// `outstanding` workers, each with one operation in flight at all times.
    Closed {
        /// Operations in flight (= workers = "clients").
        outstanding: usize,
    },
    /// `rate_per_s` operations per second in total, spread over `workers` workers.
    Open {
        /// Offered load.
        rate_per_s: u64,
        /// Workers (bounds the operations in flight).
        workers: usize,
    },
}

impl LoopMode {
    /// Workers of the run.
    pub fn workers(self) -> usize {
        match self {
            LoopMode::Closed { outstanding } => outstanding,
            LoopMode::Open { workers, .. } => workers,
        }
    }
}

/// One measured run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// What to send.
    pub workload: Workload,
    /// How keys are chosen.
    pub distribution: Distribution,
    /// How operations are issued.
    pub mode: LoopMode,
    /// Load before the window.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Bytes of every written value.
    pub value_bytes: usize,
    /// Seed of the workers' generators (worker `i` uses `seed + i`).
    pub seed: u64,
}

/// What a run measured.
#[derive(Debug)]
pub struct Measurement {
    /// Operations that succeeded in the window.
    pub ops: u64,
    /// Operations that failed in the window.
    pub errors: u64,
    /// The first few failures.
    pub error_samples: Vec<String>,
    /// Latencies of the successful operations, in µs.
    pub latency_us: Histogram<u64>,
    /// The window's length.
    pub measured: Duration,
    /// Each server's counters at the window's start and end.
    pub usage: Vec<(ProcSample, ProcSample)>,
    /// CPU seconds this load generator used in the window (it shares the machine with the
    /// servers).
    pub client_cpu_s: f64,
}

/// One worker's tally.
struct Tally {
    ops: u64,
    errors: u64,
    error_samples: Vec<String>,
    latency_us: Histogram<u64>,
}

fn new_histogram() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_max(MAX_LATENCY_US, HISTOGRAM_SIGFIGS)
        .map_err(|err| BenchError::Usage(format!("cannot create a latency histogram: {err}")))
}

/// A value of `bytes` bytes (printable, varied).
pub fn value_of(bytes: usize, seed: u64) -> Vec<u8> {
    (0..bytes)
        .map(|index| b'a' + ((index as u64 + seed) % 26) as u8)
        .collect()
}

/// Runs `spec` against `target` while reading the counters of `servers`.
pub async fn run<T: Target>(
    target: &T,
    keys: &KeySpace,
    spec: &RunSpec,
    servers: &[ServerProcess],
) -> Result<Measurement, BenchError> {
    let workers = spec.mode.workers();
    if workers == 0 {
        return Err(BenchError::Usage("a run needs at least one worker".into()));
    }
    let started = Instant::now();
    let window_start = started + spec.warmup;
    let window_end = window_start + spec.duration;
    let mut tasks = JoinSet::new();
    for worker in 0..workers {
        let handle = target.for_worker(worker);
        let generator = OpGenerator::new(
            spec.workload,
            spec.distribution,
            keys.clone(),
            spec.seed.wrapping_add(worker as u64),
        );
        let value = value_of(spec.value_bytes, worker as u64);
        let schedule = Schedule::new(spec.mode, worker, started);
        let histogram = new_histogram()?;
        tasks.spawn(async move {
            run_worker(
                handle,
                generator,
                value,
                schedule,
                histogram,
                window_start,
                window_end,
            )
            .await
        });
    }

    let me = ServerProcess {
        name: "ringkv-bench".into(),
        pid: std::process::id(),
    };
    tokio::time::sleep_until(window_start).await;
    let before = procstat::sample_all(servers)?;
    let client_before = procstat::sample(&me)?;
    tokio::time::sleep_until(window_end).await;
    let after = procstat::sample_all(servers)?;
    let client_after = procstat::sample(&me)?;

    let mut total = Tally {
        ops: 0,
        errors: 0,
        error_samples: Vec::new(),
        latency_us: new_histogram()?,
    };
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(joined) = tasks.join_next().await {
            let tally = joined.map_err(|err| BenchError::Usage(format!("a worker failed: {err}")))?;
            total.ops += tally.ops;
            total.errors += tally.errors;
            let room = MAX_ERROR_SAMPLES.saturating_sub(total.error_samples.len());
            total
                .error_samples
                .extend(tally.error_samples.into_iter().take(room));
            total
                .latency_us
                .add(&tally.latency_us)
                .map_err(|err| BenchError::Usage(format!("cannot merge histograms: {err}")))?;
        }
        Ok::<(), BenchError>(())
    })
    .await;
    match drained {
        Ok(result) => result?,
        Err(_elapsed) => {
            return Err(BenchError::Timeout {
                what: "the workers to finish their last operations".into(),
                timeout: DRAIN_TIMEOUT,
            })
        }
    }
    Ok(Measurement {
        ops: total.ops,
        errors: total.errors,
        error_samples: total.error_samples,
        latency_us: total.latency_us,
        measured: spec.duration,
        usage: before.into_iter().zip(after).collect(),
        client_cpu_s: (client_after.cpu_s - client_before.cpu_s).max(0.0),
    })
}

/// When a worker's operations are meant to start.
#[derive(Clone, Copy, Debug)]
enum Schedule {
    /// As soon as the previous one returned.
    Closed,
    /// At `first + k * interval`.
    Open { first: Instant, interval: Duration },
}

impl Schedule {
    fn new(mode: LoopMode, worker: usize, started: Instant) -> Schedule {
        match mode {
            LoopMode::Closed { .. } => Schedule::Closed,
            LoopMode::Open { rate_per_s, workers } => {
                // Worker w of W sends every W/rate seconds, offset by w/rate: together they
                // send evenly spaced operations at `rate`.
                let rate = rate_per_s.max(1) as f64;
                Schedule::Open {
                    first: started + Duration::from_secs_f64(worker as f64 / rate),
                    interval: Duration::from_secs_f64(workers as f64 / rate),
                }
            }
        }
    }

    /// The intended start of operation `sequence`.
    fn intended(self, sequence: u32) -> Instant {
        match self {
            Schedule::Closed => Instant::now(),
            Schedule::Open { first, interval } => first + interval * sequence,
        }
    }
}

/// Until when a worker waits before sending an operation meant to start at `intended`:
/// only an operation whose start is still ahead waits. tokio's timer rounds every deadline
/// up to its next millisecond tick, so even `sleep_until(now)` parks the worker for up to a
/// millisecond; a closed loop that did so added ~1 ms to every operation (and to both
/// systems' latencies) until 2026-12-04.
fn start_delay(intended: Instant, now: Instant) -> Option<Instant> {
    (intended > now).then_some(intended)
}

async fn run_worker<T: Target>(
    target: T,
    mut generator: OpGenerator,
    value: Vec<u8>,
    schedule: Schedule,
    latency_us: Histogram<u64>,
    window_start: Instant,
    window_end: Instant,
) -> Tally {
    let mut tally = Tally {
        ops: 0,
        errors: 0,
        error_samples: Vec::new(),
        latency_us,
    };
    let mut sequence: u32 = 0;
    loop {
        let intended = schedule.intended(sequence);
        if intended >= window_end {
            return tally;
        }
        sequence = sequence.saturating_add(1);
        if let Some(start) = start_delay(intended, Instant::now()) {
            tokio::time::sleep_until(start).await;
        }
        let op = generator.next_op();
        let result = target::execute(&target, op, &value).await;
        let done = Instant::now();
        if intended < window_start || done > window_end {
            continue;
        }
        match result {
            Ok(()) => {
                tally.ops += 1;
                let micros = u64::try_from(done.duration_since(intended).as_micros()).unwrap_or(u64::MAX);
                tally.latency_us.saturating_record(micros.max(1));
            }
            Err(err) => {
                tally.errors += 1;
                if tally.error_samples.len() < MAX_ERROR_SAMPLES {
                    tally.error_samples.push(err.to_string());
                }
            }
        }
    }
}

/// Writes records `0..keys.records()` with `concurrency` loader tasks.
pub async fn load<T: Target>(
    target: &T,
    system: &str,
    keys: &KeySpace,
    value_bytes: usize,
    concurrency: usize,
) -> Result<(), BenchError> {
    let records = keys.records();
    let loaders = concurrency.max(1) as u64;
    let mut tasks = JoinSet::new();
    for loader in 0..loaders {
        let handle = target.for_worker(loader as usize);
        let value = value_of(value_bytes, loader);
        tasks.spawn(async move {
            // Loader l writes records l, l + L, l + 2L, ... in chunks.
            let mine: Vec<u64> = (loader..records).step_by(loaders as usize).collect();
            for chunk in mine.chunks(LOAD_CHUNK_RECORDS as usize) {
                let entries = chunk
                    .iter()
                    .map(|index| (record_key(*index), value.clone()))
                    .collect();
                handle.load(entries).await?;
            }
            Ok::<(), target::TargetError>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let loaded = joined.map_err(|err| BenchError::Load {
            system: system.to_string(),
            message: format!("a loader failed: {err}"),
        })?;
        loaded.map_err(|err| BenchError::Load {
            system: system.to_string(),
            message: err.to_string(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::workload::Consistency;

    /// A target whose every operation takes `latency`, except operation number `stall_op`,
    /// which takes `stall`.
    #[derive(Clone)]
    struct FakeTarget {
        latency: Duration,
        stall_op: u64,
        stall: Duration,
        started_ops: Arc<AtomicU64>,
    }

    impl FakeTarget {
        fn new(latency_ms: u64, stall_op: u64, stall_ms: u64) -> FakeTarget {
            FakeTarget {
                latency: Duration::from_millis(latency_ms),
                stall_op,
                stall: Duration::from_millis(stall_ms),
                started_ops: Arc::new(AtomicU64::new(0)),
            }
        }

        async fn operation(&self) {
            let number = self.started_ops.fetch_add(1, Ordering::Relaxed);
            let took = if number == self.stall_op {
                self.stall
            } else {
                self.latency
            };
            tokio::time::sleep(took).await;
        }
    }

    impl Target for FakeTarget {
        fn for_worker(&self, _worker: usize) -> Self {
            self.clone()
        }

        async fn get(&self, _key: Vec<u8>, _consistency: Consistency) -> Result<bool, target::TargetError> {
            self.operation().await;
            Ok(true)
        }

        async fn put(&self, _key: Vec<u8>, _value: Vec<u8>) -> Result<(), target::TargetError> {
            self.operation().await;
            Ok(())
        }

        async fn scan(&self, _start: Vec<u8>, records: u32) -> Result<usize, target::TargetError> {
            self.operation().await;
            Ok(records as usize)
        }

        async fn transact(
            &self,
            _keys: Vec<Vec<u8>>,
            _value: Vec<u8>,
            _isolation: crate::workload::TxnIsolation,
        ) -> Result<(), target::TargetError> {
            self.operation().await;
            Ok(())
        }
    }

    fn spec(mode: LoopMode, warmup_ms: u64, duration_ms: u64) -> RunSpec {
        RunSpec {
            workload: Workload::Put,
            distribution: Distribution::Uniform,
            mode,
            warmup: Duration::from_millis(warmup_ms),
            duration: Duration::from_millis(duration_ms),
            value_bytes: 8,
            seed: 1,
        }
    }

    /// Closed loop: N workers each keep one operation in flight, so a 1 s window of 1 ms
    /// operations counts about N × 1000; warm-up operations are not counted.
    #[tokio::test(start_paused = true)]
    async fn closed_loop_counts_the_window_only() {
        let target = FakeTarget::new(1, u64::MAX, 0);
        let keys = KeySpace::new(10);
        let mode = LoopMode::Closed { outstanding: 4 };
        let measured = run(&target, &keys, &spec(mode, 500, 1000), &[])
            .await
            .expect("run");
        assert!((3990..=4000).contains(&measured.ops), "{}", measured.ops);
        assert_eq!(measured.errors, 0);
        let p50 = measured.latency_us.value_at_quantile(0.5);
        assert!((1000..=1100).contains(&p50), "{p50}");
    }

    /// A closed loop's next operation, and an open loop's late one, go out without touching
    /// the timer (which would round up to the next millisecond).
    #[test]
    fn only_an_operation_meant_for_later_waits() {
        let now = Instant::now();
        assert_eq!(start_delay(now, now), None);
        assert_eq!(start_delay(now - Duration::from_millis(3), now), None);
        let later = now + Duration::from_micros(200);
        assert_eq!(start_delay(later, now), Some(later));
    }

    /// Open loop: one operation stalls 300 ms; the operations meant to start during the
    /// stall (and the backlog drained after it) are measured from their intended start, so
    /// about 30 of them show the wait (a closed loop, or an open loop timing from the actual
    /// send, would show one).
    #[tokio::test(start_paused = true)]
    async fn open_loop_has_no_coordinated_omission() {
        // 100 ops/s on one worker: one every 10 ms; operation 50 (at 0.5 s) stalls.
        let target = FakeTarget::new(1, 50, 300);
        let keys = KeySpace::new(10);
        let mode = LoopMode::Open {
            rate_per_s: 100,
            workers: 1,
        };
        let measured = run(&target, &keys, &spec(mode, 0, 1000), &[]).await.expect("run");
        assert!((98..=100).contains(&measured.ops), "{}", measured.ops);
        let delayed = measured.latency_us.count_between(20_000, MAX_LATENCY_US);
        assert!((28..=35).contains(&delayed), "{delayed} operations saw the stall");
        let max = measured.latency_us.max();
        assert!((300_000..=302_000).contains(&max), "{max}");
        let p50 = measured.latency_us.value_at_quantile(0.5);
        assert!(p50 < 2_000, "{p50}");
    }
}
