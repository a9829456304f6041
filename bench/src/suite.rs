//! A whole benchmark: for each repetition, each system in turn (never two at once) is
//! started fresh (or reached at its endpoints), loaded, and put through every workload at
//! every loop setting; then it is stopped and its data deleted. Repetitions are the outer
//! loop, so slow drifts of a shared machine hit both systems alike, and the systems take
//! turns going first ([`run_order`]).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ringkv_launcher::binaries::Binaries;

use crate::config::BenchConfig;
use crate::driver::{self, LoopMode, RunSpec};
use crate::report::{loop_label, thousands, RunKey, RunResult};
use crate::system::{self, RunningSystem, SystemInfo, SystemKind};
use crate::target::etcd::EtcdTarget;
use crate::target::ringkv::RingkvTarget;
use crate::target::Target;
use crate::workload::KeySpace;
use crate::BenchError;

/// Where a system comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Started by the tool, fresh for every repetition.
    Start,
    /// Already running at `endpoints`; `pids` (may be empty) are its local server processes.
    External {
        /// `host:port` of the router(s) or members.
        endpoints: Vec<String>,
        /// Server processes to measure.
        pids: Vec<u32>,
    },
}

/// One system of the benchmark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemPlan {
    /// Which system.
    pub kind: SystemKind,
    /// Started or external.
    pub source: Source,
    /// A started ringkv speaks mutual TLS (issue 15); its runs are keyed apart.
    pub tls: bool,
}

/// Where things are on this machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    /// Parent of the systems' fresh data directories (default: the temp dir).
    pub work_dir: Option<PathBuf>,
    /// Directory of `ringkv-node` and `ringkv-router`.
    pub bin_dir: Option<PathBuf>,
    /// The `etcd` binary.
    pub etcd_bin: Option<PathBuf>,
}

/// The binaries a started system needs, found before anything runs.
enum Launcher {
    Ringkv(Binaries),
    Etcd(PathBuf),
    External,
}

/// The progress bar (on a terminal) or progress lines (otherwise), on stderr.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar of `runs` runs; drawn only when stderr is a terminal.
    pub fn new(runs: u64) -> Progress {
        let bar = if std::io::stderr().is_terminal() {
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} runs  eta {eta}  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            let bar =
                ProgressBar::with_draw_target(Some(runs), ProgressDrawTarget::stderr()).with_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress { bar }
    }

    /// A line above the bar (or on stderr).
    pub fn note(&self, line: String) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    fn start_run(&self, what: String) {
        self.bar.set_message(what);
    }

    fn finish_run(&self, line: String) {
        self.note(line);
        self.bar.inc(1);
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// The loop settings of every workload: closed loops, then open loops.
pub fn modes(config: &BenchConfig) -> Vec<LoopMode> {
    config
        .clients
        .iter()
        .map(|clients| LoopMode::Closed {
            outstanding: *clients,
        })
        .chain(config.rates.iter().map(|rate| LoopMode::Open {
            rate_per_s: *rate,
            workers: config.open_loop_workers,
        }))
        .collect()
}

/// The order the systems run in during `repetition` (1-based): as given in odd repetitions,
/// reversed in even ones. In paired put runs of two builds on this shared machine
/// (2026-12-07), the first run of a pair came out ahead in 6 of 7 pairs, whichever build it
/// was; a fixed order could favour the system listed first in every repetition, and
/// alternating spreads whatever the order does over both.
pub fn run_order(repetition: u32, systems: usize) -> Vec<usize> {
    let order = 0..systems;
    match repetition % 2 {
        1 => order.collect(),
        _ => order.rev().collect(),
    }
}

/// Measured runs the benchmark will make.
pub fn run_count(config: &BenchConfig, systems: usize) -> u64 {
    (config.workloads.len() * modes(config).len() * systems) as u64 * u64::from(config.repetitions)
}

/// Runs the benchmark; returns the systems as set up and every run's result.
pub async fn run(
    config: &BenchConfig,
    plans: &[SystemPlan],
    environment: &Environment,
    progress: &Progress,
) -> Result<(Vec<SystemInfo>, Vec<RunResult>), BenchError> {
    config.validate()?;
    let launchers = plans
        .iter()
        .map(|plan| match (&plan.source, plan.kind) {
            (Source::External { .. }, _) => Ok(Launcher::External),
            (Source::Start, SystemKind::Ringkv) => Ok(Launcher::Ringkv(system::ringkv::locate_binaries(
                environment.bin_dir.as_deref(),
            )?)),
            (Source::Start, SystemKind::Etcd) => Ok(Launcher::Etcd(system::etcd::locate_etcd(
                environment.etcd_bin.as_deref(),
            )?)),
        })
        .collect::<Result<Vec<_>, BenchError>>()?;
    let work_dir = environment.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let mut infos: Vec<SystemInfo> = Vec::new();
    let mut results = Vec::new();
    for repetition in 1..=config.repetitions {
        for index in run_order(repetition, plans.len()) {
            let (plan, launcher) = (&plans[index], &launchers[index]);
            let name = plan.kind.name();
            progress.note(format!(
                "{name}, repetition {repetition}/{}: starting",
                config.repetitions
            ));
            let mut running = start(plan, launcher, config, &work_dir).await?;
            if !infos.contains(&running.info) {
                infos.push(running.info.clone());
            }
            let outcome = measure_system(config, &mut running, repetition, progress).await;
            running.shutdown().await;
            results.extend(outcome?);
        }
    }
    Ok((infos, results))
}

async fn start(
    plan: &SystemPlan,
    launcher: &Launcher,
    config: &BenchConfig,
    work_dir: &Path,
) -> Result<RunningSystem, BenchError> {
    match (launcher, &plan.source) {
        (_, Source::External { endpoints, pids }) => {
            Ok(RunningSystem::external(plan.kind, endpoints.clone(), pids))
        }
        (Launcher::Ringkv(binaries), Source::Start) => {
            system::ringkv::start(binaries, config.shards, plan.tls, work_dir).await
        }
        (Launcher::Etcd(etcd), Source::Start) => system::etcd::start(etcd, work_dir).await,
        (Launcher::External, Source::Start) => Err(BenchError::Usage(format!(
            "{} has neither endpoints nor binaries",
            plan.kind.name()
        ))),
    }
}

async fn measure_system(
    config: &BenchConfig,
    running: &mut RunningSystem,
    repetition: u32,
    progress: &Progress,
) -> Result<Vec<RunResult>, BenchError> {
    match running.info.system {
        SystemKind::Ringkv => {
            let target =
                RingkvTarget::connect(&running.endpoints, running.client_tls.clone(), config.connections)
                    .await?;
            measure(&target, config, running, repetition, progress).await
        }
        SystemKind::Etcd => {
            let target = EtcdTarget::connect(&running.endpoints, config.connections).await?;
            measure(&target, config, running, repetition, progress).await
        }
    }
}

async fn measure<T: Target>(
    target: &T,
    config: &BenchConfig,
    running: &mut RunningSystem,
    repetition: u32,
    progress: &Progress,
) -> Result<Vec<RunResult>, BenchError> {
    let system = running.info.system;
    let keys = KeySpace::new(config.records);
    progress.note(format!(
        "{}: loading {} records of {} B",
        system.name(),
        thousands(config.records as f64),
        config.value_bytes
    ));
    let loaded_at = tokio::time::Instant::now();
    driver::load(
        target,
        system.name(),
        &keys,
        config.value_bytes,
        config.load_concurrency,
    )
    .await?;
    running.check_running()?;
    progress.note(format!(
        "{}: loaded in {:.1} s",
        system.name(),
        loaded_at.elapsed().as_secs_f64()
    ));
    let mut results = Vec::new();
    for workload in &config.workloads {
        for mode in modes(config) {
            let key = RunKey {
                system,
                workload: *workload,
                distribution: config.distribution_of(*workload),
                mode,
                tls: running.client_tls.is_some(),
            };
            let label = format!(
                "{} rep {repetition}: {} ({}), {} ×{}",
                key.system_label(),
                workload.describe(),
                key.distribution.name(),
                loop_label(mode),
                mode.workers()
            );
            progress.start_run(label.clone());
            let spec = RunSpec {
                workload: *workload,
                distribution: key.distribution,
                mode,
                warmup: Duration::from_secs_f64(config.warmup_s),
                duration: Duration::from_secs_f64(config.duration_s),
                value_bytes: config.value_bytes,
                seed: config.seed.wrapping_add(u64::from(repetition) << 32),
            };
            let measurement = driver::run(target, &keys, &spec, &running.servers).await;
            // A server that died explains a failed run better than the run's own error.
            running.check_running()?;
            let measurement = measurement?;
            let result = RunResult::new(key, repetition, &measurement, &running.servers);
            progress.finish_run(format!(
                "{label}: {} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
                thousands(result.ops_per_s),
                result.latency.p50_us as f64 / 1000.0,
                result.latency.p99_us as f64 / 1000.0,
                result.errors
            ));
            results.push(result);
        }
    }
    Ok(results)
}

#[cfg(test)]
mod run_order_tests {
    use super::run_order;

    #[test]
    fn systems_take_turns_going_first() {
        assert_eq!(run_order(1, 2), vec![0, 1]);
        assert_eq!(run_order(2, 2), vec![1, 0]);
        assert_eq!(run_order(3, 2), vec![0, 1]);
        assert_eq!(run_order(1, 1), vec![0]);
        assert_eq!(run_order(2, 1), vec![0]);
        assert_eq!(run_order(2, 3), vec![2, 1, 0]);
    }
}
