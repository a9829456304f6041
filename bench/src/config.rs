//! [`BenchConfig`]: what a benchmark runs, typed and validated (the binary turns its flags
//! into one). Defaults follow the measuring protocol (`BENCHMARKS.md`): 100k records of
//! 256 B, 1/16/64/256 outstanding operations, 10 s warm-up, 30 s measured, 3 repetitions.

use serde::{Deserialize, Serialize};

use crate::workload::{Distribution, Workload};
use crate::BenchError;

/// Most outstanding operations (workers) of one run.
pub const MAX_CLIENTS: usize = 4096;
/// Most connections per system.
pub const MAX_CONNECTIONS: usize = 256;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Everything that decides what a benchmark sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchConfig {
    /// Workloads, run in this order on every system.
    pub workloads: Vec<Workload>,
    /// Key choice for every workload (`None`: each workload's own, see
    /// [`Workload::default_distribution`]).
    pub distribution: Option<Distribution>,
    /// Closed-loop runs: operations outstanding ("clients").
    pub clients: Vec<usize>,
    /// Open-loop runs: offered rates in operations per second (may be empty).
    pub rates: Vec<u64>,
    /// Workers of an open-loop run (bounds the operations in flight).
    pub open_loop_workers: usize,
    /// Records loaded before the runs.
    pub records: u64,
    /// Bytes per value.
    pub value_bytes: usize,
    /// Warm-up before each measured window, in seconds.
    pub warmup_s: f64,
    /// Measured window of each run, in seconds.
    pub duration_s: f64,
    /// Repetitions of everything (each on a freshly started system); medians are reported.
    pub repetitions: u32,
    /// Connections to each system (ringkv: clients of the router; etcd: channels spread
    /// over the members); the same for both.
    pub connections: usize,
    /// Loader tasks of the load phase.
    pub load_concurrency: usize,
    /// Shards of a started ringkv cluster.
    pub shards: u32,
    /// Seed of the key choices.
    pub seed: u64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            workloads: vec![
                Workload::Put,
                Workload::Get,
                Workload::StaleGet,
                Workload::A,
                Workload::B,
                Workload::C,
                Workload::D,
                Workload::E,
                Workload::F,
                Workload::W,
                Workload::T,
                Workload::TRu,
                Workload::TRc,
                Workload::TSer,
                Workload::T1,
            ],
            distribution: None,
            clients: vec![1, 16, 64, 256],
            rates: Vec::new(),
            open_loop_workers: 256,
            records: 100_000,
            value_bytes: 256,
            warmup_s: 10.0,
            duration_s: 30.0,
            repetitions: 3,
            connections: 3,
            load_concurrency: 64,
            shards: 16,
            seed: 42,
        }
    }
}

impl BenchConfig {
    /// A tiny, fast configuration for tests: a few hundred records, a one-second window.
    pub fn for_test() -> BenchConfig {
        BenchConfig {
            workloads: vec![Workload::Put, Workload::Get],
            clients: vec![4],
            records: 200,
            warmup_s: 0.2,
            duration_s: 1.0,
            repetitions: 1,
            connections: 1,
            load_concurrency: 4,
            shards: 4,
            ..BenchConfig::default()
        }
    }

    /// The key choice of `workload` in this benchmark.
    pub fn distribution_of(&self, workload: Workload) -> Distribution {
        self.distribution
            .unwrap_or_else(|| workload.default_distribution())
    }

    /// Refuses configurations that cannot run or would not mean anything.
    pub fn validate(&self) -> Result<(), BenchError> {
        let fail = |message: String| Err(BenchError::Usage(message));
        if self.workloads.is_empty() {
            return fail("no workload given".into());
        }
        if self.clients.is_empty() && self.rates.is_empty() {
            return fail("give closed-loop client counts (--clients) or open-loop rates (--rates)".into());
        }
        if let Some(clients) = self
            .clients
            .iter()
            .find(|clients| !(1..=MAX_CLIENTS).contains(*clients))
        {
            return fail(format!("--clients {clients} is out of 1..={MAX_CLIENTS}"));
        }
        if self.rates.contains(&0) {
            return fail("an open-loop rate must be above 0 ops/s".into());
        }
        if !(1..=MAX_CLIENTS).contains(&self.open_loop_workers) {
            return fail(format!("--open-loop-workers must be in 1..={MAX_CLIENTS}"));
        }
        if self.records == 0 {
            return fail("--records must be at least 1".into());
        }
        if !(1..=MAX_VALUE_BYTES).contains(&self.value_bytes) {
            return fail(format!("--value-bytes must be in 1..={MAX_VALUE_BYTES}"));
        }
        if !(self.warmup_s >= 0.0 && self.warmup_s.is_finite()) {
            return fail("--warmup-s must be a number of seconds ≥ 0".into());
        }
        if !(self.duration_s > 0.0 && self.duration_s.is_finite()) {
            return fail("--duration-s must be a number of seconds > 0".into());
        }
        if self.repetitions == 0 {
            return fail("--repetitions must be at least 1".into());
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return fail(format!("--connections must be in 1..={MAX_CONNECTIONS}"));
        }
        if !(1..=MAX_CLIENTS).contains(&self.load_concurrency) {
            return fail(format!("--load-concurrency must be in 1..={MAX_CLIENTS}"));
        }
        if !self.shards.is_power_of_two() {
            return fail(format!("--shards {} is not a power of two", self.shards));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults and the test configuration are valid; nonsense is refused.
    #[test]
    fn validation() {
        BenchConfig::default().validate().expect("defaults");
        BenchConfig::for_test().validate().expect("for_test");
        let cases: Vec<(&str, BenchConfig)> = vec![
            (
                "no workload",
                BenchConfig {
                    workloads: vec![],
                    ..BenchConfig::for_test()
                },
            ),
            (
                "zero clients",
                BenchConfig {
                    clients: vec![0],
                    ..BenchConfig::for_test()
                },
            ),
            (
                "zero duration",
                BenchConfig {
                    duration_s: 0.0,
                    ..BenchConfig::for_test()
                },
            ),
            (
                "zero rate",
                BenchConfig {
                    rates: vec![0],
                    ..BenchConfig::for_test()
                },
            ),
            (
                "odd shards",
                BenchConfig {
                    shards: 3,
                    ..BenchConfig::for_test()
                },
            ),
            (
                "no records",
                BenchConfig {
                    records: 0,
                    ..BenchConfig::for_test()
                },
            ),
        ];
        for (index, (name, config)) in cases.iter().enumerate() {
            assert!(config.validate().is_err(), "case {index}: {name} accepted");
        }
    }
}
