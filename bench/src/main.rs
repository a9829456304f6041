//! `ringkv-bench`: benchmarks ringkv and etcd. `run` measures one or both systems;
//! `compare` measures both and writes `docs/benchmarks/<date>/`. See the crate docs and
//! README.md "Benchmarks".

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use ringkv_bench::output::{utc_date, write_results};
use ringkv_bench::report::{headline_ratios, markdown_table, medians, ratio_table, tls_cost_table, Report};
use ringkv_bench::suite::{self, Environment, Progress, Source, SystemPlan};
use ringkv_bench::system::SystemKind;
use ringkv_bench::workload::{Distribution, Workload};
use ringkv_bench::{BenchConfig, BenchError};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser, Debug)]
#[command(
    name = "ringkv-bench",
    version,
    about = "Benchmarks ringkv side by side with etcd"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure one system (or both), print the table, optionally write JSON and plots.
    Run(RunArgs),
    /// Measure ringkv, then etcd, and write results.json, README.md and plots to
    /// docs/benchmarks/<date>/.
    Compare(CompareArgs),
    /// Draw the plots (and, with --readme, the README.md) of a results.json again, e.g.
    /// after the tool learned a new plot.
    Render(RenderArgs),
}

#[derive(Args, Debug)]
struct RenderArgs {
    /// The results.json written by `run --out-dir` or `compare`.
    results: PathBuf,
    /// Where to write [default: the directory of the results].
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Write README.md too (as `compare` does).
    #[arg(long)]
    readme: bool,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Systems to measure, in order.
    #[arg(long = "system", value_enum, default_values_t = [SystemKind::Ringkv])]
    systems: Vec<SystemKind>,
    /// Write the raw results (JSON) to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write results.json and the plots into this directory.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args, Debug)]
struct CompareArgs {
    /// Results directory [default: docs/benchmarks/<today, UTC>].
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Measure ringkv a second time with mutual TLS and add the cost of TLS (with ÷
    /// without) to the results.
    #[arg(long)]
    tls_cost: bool,
    #[command(flatten)]
    common: CommonArgs,
}

/// How the ringkv cluster the tool starts talks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SecurityArg {
    /// Plain http, `--insecure` (comparable with results from before TLS).
    Insecure,
    /// Mutual TLS with certificates made for the cluster; the tool's client presents the
    /// client certificate.
    Tls,
}

#[derive(Args, Debug)]
struct CommonArgs {
    /// How the ringkv cluster the tool starts talks.
    #[arg(long, value_enum, default_value = "insecure")]
    security: SecurityArg,
    /// Workloads (comma-separated) [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    workloads: Vec<Workload>,
    /// Key choice for every workload [default: each workload's own].
    #[arg(long, value_enum)]
    distribution: Option<Distribution>,
    /// Closed-loop outstanding operations (comma-separated) [default: 1,16,64,256].
    #[arg(long, value_delimiter = ',')]
    clients: Vec<usize>,
    /// Open-loop rates in ops/s (comma-separated) [default: none].
    #[arg(long, value_delimiter = ',')]
    rates: Vec<u64>,
    /// Workers of the open-loop runs.
    #[arg(long, default_value_t = BenchConfig::default().open_loop_workers)]
    open_loop_workers: usize,
    /// Records loaded before the runs.
    #[arg(long, default_value_t = BenchConfig::default().records)]
    records: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = BenchConfig::default().value_bytes)]
    value_bytes: usize,
    /// Warm-up before each measured window, seconds.
    #[arg(long, default_value_t = BenchConfig::default().warmup_s)]
    warmup_s: f64,
    /// Measured window of each run, seconds.
    #[arg(long, default_value_t = BenchConfig::default().duration_s)]
    duration_s: f64,
    /// Repetitions (each on a freshly started system); medians are reported.
    #[arg(long, default_value_t = BenchConfig::default().repetitions)]
    repetitions: u32,
    /// Connections to each system (the same for both).
    #[arg(long, default_value_t = BenchConfig::default().connections)]
    connections: usize,
    /// Loader tasks of the load phase.
    #[arg(long, default_value_t = BenchConfig::default().load_concurrency)]
    load_concurrency: usize,
    /// Shards of the ringkv cluster the tool starts.
    #[arg(long, default_value_t = BenchConfig::default().shards)]
    shards: u32,
    /// Seed of the key choices.
    #[arg(long, default_value_t = BenchConfig::default().seed)]
    seed: u64,
    /// Bench a running ringkv through these routers (comma-separated host:port) instead
    /// of starting one.
    #[arg(long, value_delimiter = ',')]
    ringkv_endpoints: Vec<String>,
    /// Server pids of that running ringkv, for the CPU, IO and memory figures.
    #[arg(long, value_delimiter = ',')]
    ringkv_pids: Vec<u32>,
    /// Bench a running etcd at these members (comma-separated host:port) instead of
    /// starting one.
    #[arg(long, value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Server pids of that running etcd.
    #[arg(long, value_delimiter = ',')]
    etcd_pids: Vec<u32>,
    /// Directory of ringkv-node and ringkv-router [default: $RINGKV_BIN_DIR, else next
    /// to this tool].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The etcd binary [default: etcd on $PATH, else /usr/bin/etcd].
    #[arg(long)]
    etcd_bin: Option<PathBuf>,
    /// Parent directory of the systems' fresh data directories [default: the temp dir].
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

impl CommonArgs {
    fn config(&self) -> BenchConfig {
        let defaults = BenchConfig::default();
        BenchConfig {
            workloads: if self.workloads.is_empty() {
                defaults.workloads
            } else {
                self.workloads.clone()
            },
            distribution: self.distribution,
            clients: if self.clients.is_empty() && self.rates.is_empty() {
                defaults.clients
            } else {
                self.clients.clone()
            },
            rates: self.rates.clone(),
            open_loop_workers: self.open_loop_workers,
            records: self.records,
            value_bytes: self.value_bytes,
            warmup_s: self.warmup_s,
            duration_s: self.duration_s,
            repetitions: self.repetitions,
            connections: self.connections,
            load_concurrency: self.load_concurrency,
            shards: self.shards,
            seed: self.seed,
        }
    }

    fn plan(&self, kind: SystemKind) -> SystemPlan {
        self.plan_with(kind, self.security == SecurityArg::Tls)
    }

    /// The plan of `kind`; a ringkv the tool starts speaks TLS when `tls` is set.
    fn plan_with(&self, kind: SystemKind, tls: bool) -> SystemPlan {
        let (endpoints, pids) = match kind {
            SystemKind::Ringkv => (&self.ringkv_endpoints, &self.ringkv_pids),
            SystemKind::Etcd => (&self.etcd_endpoints, &self.etcd_pids),
        };
        let source = if endpoints.is_empty() {
            Source::Start
        } else {
            Source::External {
                endpoints: endpoints.clone(),
                pids: pids.clone(),
            }
        };
        let tls = tls && kind == SystemKind::Ringkv && source == Source::Start;
        SystemPlan { kind, source, tls }
    }

    /// Refuses TLS for a ringkv the tool does not start.
    fn check_security(&self, tls_cost: bool) -> Result<(), BenchError> {
        let tls = tls_cost || self.security == SecurityArg::Tls;
        if tls && !self.ringkv_endpoints.is_empty() {
            return Err(BenchError::Usage(
                "--security tls and --tls-cost start their own ringkv; they cannot be used with \
                 --ringkv-endpoints"
                    .into(),
            ));
        }
        if tls_cost && self.security == SecurityArg::Tls {
            return Err(BenchError::Usage(
                "--tls-cost measures ringkv without and with TLS; leave --security at insecure".into(),
            ));
        }
        Ok(())
    }

    fn environment(&self) -> Environment {
        Environment {
            work_dir: self.work_dir.clone(),
            bin_dir: self.bin_dir.clone(),
            etcd_bin: self.etcd_bin.clone(),
        }
    }
}

fn now_unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Runs the benchmark of `plans` and assembles the report; with `tls_cost`, the medians of
/// runs over TLS go to `tls_medians`.
async fn benchmark(common: &CommonArgs, plans: &[SystemPlan], tls_cost: bool) -> Result<Report, BenchError> {
    let config = common.config();
    config.validate()?;
    let started_unix_s = now_unix_s();
    let progress = Progress::new(suite::run_count(&config, plans.len()));
    let outcome = suite::run(&config, plans, &common.environment(), &progress).await;
    progress.finish();
    let (systems, runs) = outcome?;
    let (tls_medians, medians) = medians(&runs)
        .into_iter()
        .partition(|run| tls_cost && run.key.tls);
    Ok(Report {
        tool: format!("ringkv-bench {}", env!("CARGO_PKG_VERSION")),
        started_unix_s,
        command: std::env::args().collect(),
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        config,
        systems,
        runs,
        medians,
        tls_medians,
    })
}

async fn execute(cli: Cli) -> Result<(), BenchError> {
    match cli.command {
        Command::Run(args) => {
            args.common.check_security(false)?;
            let plans: Vec<SystemPlan> = args.systems.iter().map(|kind| args.common.plan(*kind)).collect();
            let report = benchmark(&args.common, &plans, false).await?;
            println!("{}", markdown_table(&report.medians));
            if let Some(path) = &args.json {
                let json = serde_json::to_string_pretty(&report).map_err(|source| BenchError::Json {
                    what: "encoding the results".into(),
                    source,
                })?;
                std::fs::write(path, json).map_err(BenchError::io(format!("writing {}", path.display())))?;
            }
            if let Some(dir) = &args.out_dir {
                write_results(dir, &report, false)?;
                eprintln!("results written to {}", dir.display());
            }
        }
        Command::Compare(args) => {
            args.common.check_security(args.tls_cost)?;
            let mut plans = vec![args.common.plan(SystemKind::Ringkv)];
            if args.tls_cost {
                plans.push(args.common.plan_with(SystemKind::Ringkv, true));
            }
            plans.push(args.common.plan(SystemKind::Etcd));
            let dir = args
                .out_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("docs/benchmarks").join(utc_date(now_unix_s())));
            // Checked before the (long) run: recorded results are never overwritten.
            if dir.join("results.json").exists() {
                return Err(BenchError::Usage(format!(
                    "{} already holds results; pass another --out-dir or remove them",
                    dir.display()
                )));
            }
            let report = benchmark(&args.common, &plans, args.tls_cost).await?;
            println!("{}", ratio_table(&headline_ratios(&report.medians)));
            println!("{}", markdown_table(&report.medians));
            if args.tls_cost {
                println!("{}", tls_cost_table(&report.medians, &report.tls_medians));
            }
            write_results(&dir, &report, true)?;
            eprintln!("results written to {}", dir.display());
        }
        Command::Render(args) => {
            let path = &args.results;
            let text = std::fs::read_to_string(path)
                .map_err(BenchError::io(format!("reading {}", path.display())))?;
            let report: Report = serde_json::from_str(&text).map_err(|source| BenchError::Json {
                what: format!("decoding {}", path.display()),
                source,
            })?;
            let dir = match &args.out_dir {
                Some(dir) => dir.clone(),
                None => path.parent().map(PathBuf::from).unwrap_or_default(),
            };
            write_results(&dir, &report, args.readme)?;
            eprintln!("plots written to {}", dir.display());
        }
    }
    Ok(())
}

/// The first of Ctrl-C, SIGTERM and SIGHUP; never, when the handlers cannot be installed
/// (then the default handlers apply: the children still die with this process).
async fn shutdown_signal() -> &'static str {
    match wait_for_signal().await {
        Ok(name) => name,
        Err(err) => {
            eprintln!("warning: {err}");
            std::future::pending().await
        }
    }
}

async fn wait_for_signal() -> Result<&'static str, BenchError> {
    let register = |kind: SignalKind, name: &str| {
        signal(kind).map_err(BenchError::io(format!("installing the {name} handler")))
    };
    let mut interrupt = register(SignalKind::interrupt(), "SIGINT")?;
    let mut terminate = register(SignalKind::terminate(), "SIGTERM")?;
    let mut hangup = register(SignalKind::hangup(), "SIGHUP")?;
    Ok(tokio::select! {
        _ = interrupt.recv() => "interrupt",
        _ = terminate.recv() => "SIGTERM",
        _ = hangup.recv() => "SIGHUP",
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // On a signal the benchmark future is dropped: every started process is killed and
    // every data directory deleted by its owner's Drop.
    let outcome = tokio::select! {
        outcome = execute(cli) => outcome,
        name = shutdown_signal() => Err(BenchError::Interrupted(name)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let mut message = format!("error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !message.contains(&cause_text) {
                    message.push_str(&format!(": {cause_text}"));
                }
                source = cause.source();
            }
            eprintln!("{message}");
            match err {
                BenchError::Usage(_) => ExitCode::from(2),
                BenchError::Interrupted(_) => ExitCode::from(130),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
