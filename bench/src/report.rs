//! Results: one [`RunResult`] per measured run, medians over repetitions, the JSON
//! document ([`Report`]), the markdown table and the ringkv/etcd ratios. Pure: the
//! measurements come in, text goes out.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::config::BenchConfig;
use crate::driver::{LoopMode, Measurement};
use crate::procstat::ServerProcess;
use crate::system::{SystemInfo, SystemKind};
use crate::workload::{Distribution, Workload};

/// Percentiles (in %) kept for the latency CDF plots.
const CDF_PERCENTILES: [f64; 12] = [
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99, 100.0,
];

/// Latency summary, in µs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

/// One point of a latency CDF.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CdfPoint {
    /// Percent of operations at or below `latency_us`.
    pub percentile: f64,
    /// Latency, µs.
    pub latency_us: u64,
}

/// One server process's use during a measured window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerUsage {
    /// `ringkv node 1`, `etcd m2`.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// CPU seconds (user + system) in the window.
    pub cpu_s: f64,
    /// Bytes written to storage in the window (`None`: not readable).
    pub write_bytes: Option<u64>,
    /// Peak resident set since the process started, bytes.
    pub peak_rss_bytes: Option<u64>,
}

/// What identifies a run across repetitions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RunKey {
    /// Which system.
    pub system: SystemKind,
    /// Which workload.
    pub workload: Workload,
    /// Key choice.
    pub distribution: Distribution,
    /// Closed or open loop.
    pub mode: LoopMode,
    /// ringkv over mutual TLS (absent in results from before TLS: false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
}

impl RunKey {
    /// `ringkv`, `ringkv (TLS)`, `etcd`.
    pub fn system_label(&self) -> String {
        if self.tls {
            format!("{} (TLS)", self.system.name())
        } else {
            self.system.name().to_string()
        }
    }

    /// Closed-loop outstanding operations, or open-loop workers.
    pub fn clients(&self) -> usize {
        self.mode.workers()
    }
}

/// One measured run (or the median of several).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// What ran.
    #[serde(flatten)]
    pub key: RunKey,
    /// 1-based repetition (0 for a median).
    pub repetition: u32,
    /// Measured window, seconds.
    pub measured_s: f64,
    /// Successful operations in the window.
    pub ops: u64,
    /// Failed operations in the window.
    pub errors: u64,
    /// The first failures' messages.
    pub error_samples: Vec<String>,
    /// Successful operations per second.
    pub ops_per_s: f64,
    /// Latency of successful operations.
    pub latency: Latency,
    /// Latency CDF points.
    pub cdf: Vec<CdfPoint>,
    /// Per server process.
    pub servers: Vec<ServerUsage>,
    /// CPU seconds of all server processes in the window (`None`: no process known).
    pub server_cpu_s: Option<f64>,
    /// Operations per server-CPU-second.
    pub ops_per_server_cpu_s: Option<f64>,
    /// Bytes the servers wrote to storage per operation.
    pub write_bytes_per_op: Option<f64>,
    /// Sum of the servers' peak resident sets, bytes.
    pub peak_rss_bytes: Option<u64>,
    /// CPU seconds the load generator used in the window.
    #[serde(default)]
    pub client_cpu_s: f64,
}

impl RunResult {
    /// The result of `measurement` of the run `key` on `servers`.
    pub fn new(
        key: RunKey,
        repetition: u32,
        measurement: &Measurement,
        servers: &[ServerProcess],
    ) -> RunResult {
        let histogram = &measurement.latency_us;
        let measured_s = measurement.measured.as_secs_f64();
        let usage: Vec<ServerUsage> = servers
            .iter()
            .zip(&measurement.usage)
            .map(|(server, (before, after))| ServerUsage {
                name: server.name.clone(),
                pid: server.pid,
                cpu_s: (after.cpu_s - before.cpu_s).max(0.0),
                write_bytes: after
                    .write_bytes
                    .zip(before.write_bytes)
                    .map(|(after, before)| after.saturating_sub(before)),
                peak_rss_bytes: after.peak_rss_bytes,
            })
            .collect();
        let server_cpu_s = (!usage.is_empty()).then(|| usage.iter().map(|server| server.cpu_s).sum::<f64>());
        let written: Option<u64> = if usage.is_empty() {
            None
        } else {
            usage.iter().map(|server| server.write_bytes).sum()
        };
        let peak_rss_bytes: Option<u64> = if usage.is_empty() {
            None
        } else {
            usage.iter().map(|server| server.peak_rss_bytes).sum()
        };
        let ops = measurement.ops;
        RunResult {
            key,
            repetition,
            measured_s,
            ops,
            errors: measurement.errors,
            error_samples: measurement.error_samples.clone(),
            ops_per_s: ops as f64 / measured_s.max(f64::MIN_POSITIVE),
            latency: latency_of(histogram),
            cdf: cdf_of(histogram),
            servers: usage,
            server_cpu_s,
            ops_per_server_cpu_s: server_cpu_s.filter(|cpu| *cpu > 0.0).map(|cpu| ops as f64 / cpu),
            write_bytes_per_op: written.filter(|_| ops > 0).map(|bytes| bytes as f64 / ops as f64),
            peak_rss_bytes,
            client_cpu_s: measurement.client_cpu_s,
        }
    }
}

fn latency_of(histogram: &Histogram<u64>) -> Latency {
    if histogram.is_empty() {
        return Latency::default();
    }
    Latency {
        p50_us: histogram.value_at_quantile(0.50),
        p90_us: histogram.value_at_quantile(0.90),
        p99_us: histogram.value_at_quantile(0.99),
        p999_us: histogram.value_at_quantile(0.999),
        max_us: histogram.max(),
        mean_us: histogram.mean(),
    }
}

fn cdf_of(histogram: &Histogram<u64>) -> Vec<CdfPoint> {
    if histogram.is_empty() {
        return Vec::new();
    }
    CDF_PERCENTILES
        .iter()
        .map(|percentile| CdfPoint {
            percentile: *percentile,
            latency_us: histogram.value_at_percentile(*percentile),
        })
        .collect()
}

/// The median of `values` (the lower middle for an even count); `None` when empty.
pub fn median<T: Copy + PartialOrd>(values: impl IntoIterator<Item = T>) -> Option<T> {
    let mut values: Vec<T> = values.into_iter().collect();
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let middle = values.len().checked_sub(1)? / 2;
    values.get(middle).copied()
}

/// One result per run key: each figure the median over the repetitions; the CDF and the
/// per-server figures are those of the repetition with the median throughput.
pub fn medians(runs: &[RunResult]) -> Vec<RunResult> {
    let mut groups: BTreeMap<&RunKey, Vec<&RunResult>> = BTreeMap::new();
    for run in runs {
        groups.entry(&run.key).or_default().push(run);
    }
    groups
        .into_values()
        .filter_map(|group| {
            let median_ops = median(group.iter().map(|run| run.ops_per_s))?;
            let typical = group.iter().find(|run| run.ops_per_s == median_ops)?;
            let pick = |field: fn(&RunResult) -> u64| median(group.iter().map(|run| field(run))).unwrap_or(0);
            let pick_f =
                |field: fn(&RunResult) -> Option<f64>| median(group.iter().filter_map(|run| field(run)));
            Some(RunResult {
                repetition: 0,
                ops: pick(|run| run.ops),
                errors: pick(|run| run.errors),
                ops_per_s: median_ops,
                latency: Latency {
                    p50_us: pick(|run| run.latency.p50_us),
                    p90_us: pick(|run| run.latency.p90_us),
                    p99_us: pick(|run| run.latency.p99_us),
                    p999_us: pick(|run| run.latency.p999_us),
                    max_us: pick(|run| run.latency.max_us),
                    mean_us: median(group.iter().map(|run| run.latency.mean_us)).unwrap_or(0.0),
                },
                server_cpu_s: pick_f(|run| run.server_cpu_s),
                ops_per_server_cpu_s: pick_f(|run| run.ops_per_server_cpu_s),
                write_bytes_per_op: pick_f(|run| run.write_bytes_per_op),
                client_cpu_s: median(group.iter().map(|run| run.client_cpu_s)).unwrap_or(0.0),
                ..(*typical).clone()
            })
        })
        .collect()
}

/// The JSON document of a benchmark.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `ringkv-bench <version>`.
    pub tool: String,
    /// When it started, seconds since the Unix epoch.
    pub started_unix_s: u64,
    /// The command line.
    pub command: Vec<String>,
    /// Online CPUs of the machine.
    pub cpus: usize,
    /// What ran.
    pub config: BenchConfig,
    /// The systems, as set up.
    pub systems: Vec<SystemInfo>,
    /// Every measured run.
    pub runs: Vec<RunResult>,
    /// Medians over the repetitions (without the runs of `tls_medians`).
    pub medians: Vec<RunResult>,
    /// `compare --tls-cost`: medians of the extra ringkv runs over mutual TLS, the same
    /// workloads and loops as ringkv's runs in `medians`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_medians: Vec<RunResult>,
}

fn ms(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

fn optional(value: Option<f64>, format: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "—".to_string(), format)
}

/// `1234567` → `1,234,567`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// How a run's loop is shown: `closed`, `open 2,000/s`.
pub fn loop_label(mode: LoopMode) -> String {
    match mode {
        LoopMode::Closed { .. } => "closed".into(),
        LoopMode::Open { rate_per_s, .. } => format!("open {}/s", thousands(rate_per_s as f64)),
    }
}

/// The markdown table of `results`.
pub fn markdown_table(results: &[RunResult]) -> String {
    let mut table = String::from(
        "| system | workload | keys | loop | clients | ops/s | p50 ms | p99 ms | p99.9 ms | max ms | errors \
         | server CPU s | ops per server-CPU-s | bytes written per op | peak RSS MiB | bench CPU s |\n\
         | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for result in results {
        let key = &result.key;
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |\n",
            key.system_label(),
            key.workload.describe(),
            key.distribution.name(),
            loop_label(key.mode),
            key.clients(),
            thousands(result.ops_per_s),
            ms(result.latency.p50_us),
            ms(result.latency.p99_us),
            ms(result.latency.p999_us),
            ms(result.latency.max_us),
            result.errors,
            optional(result.server_cpu_s, |cpu| format!("{cpu:.1}")),
            optional(result.ops_per_server_cpu_s, thousands),
            optional(result.write_bytes_per_op, thousands),
            optional(result.peak_rss_bytes.map(|bytes| bytes as f64), |bytes| {
                format!("{:.0}", bytes / (1024.0 * 1024.0))
            }),
            result.client_cpu_s,
        ));
    }
    table
}

/// The cost of TLS: for each run in `tls_medians`, its figures beside those of the same
/// run without TLS in `medians`, as ratios with TLS ÷ without (ops/s below 1 and
/// latencies above 1 are the cost); a run without its counterpart is left out.
pub fn tls_cost_table(medians: &[RunResult], tls_medians: &[RunResult]) -> String {
    let mut table = String::from(
        "| workload | keys | loop | clients | ops/s without | ops/s with TLS | ops/s ratio \
         | p50 ms without | p50 ms with TLS | p50 ratio | p99 ms without | p99 ms with TLS | p99 ratio |\n\
         | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let ratio = |with: f64, without: f64| {
        if without > 0.0 {
            format!("{:.2}×", with / without)
        } else {
            "—".to_string()
        }
    };
    for with in tls_medians {
        let plain_key = RunKey {
            tls: false,
            ..with.key.clone()
        };
        let Some(without) = medians.iter().find(|run| run.key == plain_key) else {
            continue;
        };
        let key = &with.key;
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            key.workload.describe(),
            key.distribution.name(),
            loop_label(key.mode),
            key.clients(),
            thousands(without.ops_per_s),
            thousands(with.ops_per_s),
            ratio(with.ops_per_s, without.ops_per_s),
            ms(without.latency.p50_us),
            ms(with.latency.p50_us),
            ratio(with.latency.p50_us as f64, without.latency.p50_us as f64),
            ms(without.latency.p99_us),
            ms(with.latency.p99_us),
            ratio(with.latency.p99_us as f64, without.latency.p99_us as f64),
        ));
    }
    table
}

/// A headline figure compared between the two systems.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// What is compared.
    pub what: String,
    /// ringkv's value, formatted.
    pub ringkv: String,
    /// etcd's value, formatted.
    pub etcd: String,
    /// ringkv / etcd.
    pub ratio: Option<f64>,
    /// Whether a higher value is better.
    pub higher_is_better: bool,
}

/// The closed-loop median of `system`, `workload` at `clients`.
fn closed_cell(
    medians: &[RunResult],
    system: SystemKind,
    workload: Workload,
    clients: usize,
) -> Option<&RunResult> {
    medians.iter().find(|result| {
        result.key.system == system
            && result.key.workload == workload
            && result.key.mode == LoopMode::Closed { outstanding: clients }
    })
}

/// One headline figure: which run, which number, how it reads.
struct Headline {
    what: &'static str,
    workload: Workload,
    clients: usize,
    figure: fn(&RunResult) -> Option<f64>,
    higher_is_better: bool,
    format: fn(f64) -> String,
}

fn milliseconds(value: f64) -> String {
    format!("{value:.2}")
}

/// The headline figures: puts/s and linearizable gets/s at 64 clients, 1-client put p50,
/// put p99 at 64 clients, puts per server-CPU-second at 64 clients.
const HEADLINES: [Headline; 8] = [
    Headline {
        what: "puts/s, 64 clients",
        workload: Workload::Put,
        clients: 64,
        figure: |run| Some(run.ops_per_s),
        higher_is_better: true,
        format: thousands,
    },
    Headline {
        what: "linearizable gets/s, 64 clients",
        workload: Workload::Get,
        clients: 64,
        figure: |run| Some(run.ops_per_s),
        higher_is_better: true,
        format: thousands,
    },
    Headline {
        what: "put p50, 1 client (ms)",
        workload: Workload::Put,
        clients: 1,
        figure: |run| Some(run.latency.p50_us as f64 / 1000.0),
        higher_is_better: false,
        format: milliseconds,
    },
    Headline {
        what: "put p99, 64 clients (ms)",
        workload: Workload::Put,
        clients: 64,
        figure: |run| Some(run.latency.p99_us as f64 / 1000.0),
        higher_is_better: false,
        format: milliseconds,
    },
    Headline {
        what: "puts per server-CPU-second, 64 clients",
        workload: Workload::Put,
        clients: 64,
        figure: |run| run.ops_per_server_cpu_s,
        higher_is_better: true,
        format: thousands,
    },
    Headline {
        what: "two-record transfers (t)/s, 64 clients",
        workload: Workload::T,
        clients: 64,
        figure: |run| Some(run.ops_per_s),
        higher_is_better: true,
        format: thousands,
    },
    Headline {
        what: "two-record transfer (t) p50, 1 client (ms)",
        workload: Workload::T,
        clients: 1,
        figure: |run| Some(run.latency.p50_us as f64 / 1000.0),
        higher_is_better: false,
        format: milliseconds,
    },
    Headline {
        what: "one-record transactions (t1)/s, 64 clients",
        workload: Workload::T1,
        clients: 64,
        figure: |run| Some(run.ops_per_s),
        higher_is_better: true,
        format: thousands,
    },
];

/// The headline ratios ringkv/etcd, from the medians: puts/s and linearizable gets/s at 64 clients,
/// 1-client put p50, put p99 at 64 clients, puts per server-CPU-second at 64 clients, and the
/// transactional ones; a figure neither system measured is left out.
pub fn headline_ratios(medians: &[RunResult]) -> Vec<Ratio> {
    HEADLINES
        .iter()
        .filter_map(|headline| {
            let value = |system| {
                closed_cell(medians, system, headline.workload, headline.clients).and_then(headline.figure)
            };
            let ringkv = value(SystemKind::Ringkv);
            let etcd = value(SystemKind::Etcd);
            if ringkv.is_none() && etcd.is_none() {
                return None;
            }
            Some(Ratio {
                what: headline.what.to_string(),
                ringkv: ringkv.map_or_else(|| "—".into(), headline.format),
                etcd: etcd.map_or_else(|| "—".into(), headline.format),
                ratio: ringkv
                    .zip(etcd)
                    .filter(|(_, etcd)| *etcd > 0.0)
                    .map(|(ringkv, etcd)| ringkv / etcd),
                higher_is_better: headline.higher_is_better,
            })
        })
        .collect()
}

/// The ratios as a markdown table.
pub fn ratio_table(ratios: &[Ratio]) -> String {
    let mut table =
        String::from("| figure | ringkv | etcd | ringkv / etcd |\n| --- | ---: | ---: | ---: |\n");
    for ratio in ratios {
        let better = if ratio.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        };
        table.push_str(&format!(
            "| {} ({better}) | {} | {} | {} |\n",
            ratio.what,
            ratio.ringkv,
            ratio.etcd,
            ratio
                .ratio
                .map_or_else(|| "—".into(), |ratio| format!("{ratio:.2}×")),
        ));
    }
    table
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A closed-loop run of `workload` with `clients`, measuring `ops_per_s`.
    pub(crate) fn result(
        system: SystemKind,
        workload: Workload,
        clients: usize,
        repetition: u32,
        ops_per_s: f64,
    ) -> RunResult {
        RunResult {
            key: RunKey {
                system,
                workload,
                distribution: Distribution::Uniform,
                mode: LoopMode::Closed { outstanding: clients },
                tls: false,
            },
            repetition,
            measured_s: 10.0,
            ops: (ops_per_s * 10.0) as u64,
            errors: 0,
            error_samples: vec![],
            ops_per_s,
            latency: Latency {
                p50_us: (1_000_000.0 / ops_per_s) as u64,
                ..Latency::default()
            },
            cdf: vec![],
            servers: vec![],
            server_cpu_s: Some(10.0),
            ops_per_server_cpu_s: Some(ops_per_s),
            write_bytes_per_op: None,
            peak_rss_bytes: None,
            client_cpu_s: 1.0,
        }
    }

    /// Medians are per run key; an even count takes the lower middle.
    #[test]
    fn medians_per_key() {
        assert_eq!(median([3, 1, 2]), Some(2));
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), Some(2.0));
        assert_eq!(median(Vec::<u64>::new()), None);
        let runs = vec![
            result(SystemKind::Ringkv, Workload::Put, 64, 1, 100.0),
            result(SystemKind::Ringkv, Workload::Put, 64, 2, 300.0),
            result(SystemKind::Ringkv, Workload::Put, 64, 3, 200.0),
            result(SystemKind::Etcd, Workload::Put, 64, 1, 400.0),
        ];
        let medians = medians(&runs);
        assert_eq!(medians.len(), 2);
        assert_eq!(medians[0].ops_per_s, 200.0);
        assert_eq!(medians[0].repetition, 0);
        assert_eq!(medians[1].ops_per_s, 400.0);
    }

    /// The headline ratios divide ringkv by etcd; a missing cell shows a dash, and a figure
    /// neither system measured is left out.
    #[test]
    fn ratios() {
        let medians = vec![
            result(SystemKind::Ringkv, Workload::Put, 64, 0, 1000.0),
            result(SystemKind::Etcd, Workload::Put, 64, 0, 4000.0),
            result(SystemKind::Ringkv, Workload::T, 64, 0, 100.0),
        ];
        let ratios = headline_ratios(&medians);
        let whats: Vec<&str> = ratios.iter().map(|ratio| ratio.what.as_str()).collect();
        assert_eq!(
            whats,
            [
                "puts/s, 64 clients",
                "put p99, 64 clients (ms)",
                "puts per server-CPU-second, 64 clients",
                "two-record transfers (t)/s, 64 clients"
            ]
        );
        assert_eq!(ratios[0].ratio, Some(0.25));
        assert_eq!(ratios[3].ratio, None, "etcd's cell is missing");
        let table = ratio_table(&ratios);
        assert!(
            table.contains("| puts/s, 64 clients (higher is better) | 1,000 | 4,000 | 0.25× |"),
            "{table}"
        );
    }

    /// The TLS cost divides each TLS run by the same run without TLS; a TLS run without its
    /// counterpart is left out; the TLS runs' key survives a JSON round trip and results
    /// from before TLS (no `tls` field) decode as runs without it.
    #[test]
    fn tls_cost_ratios() {
        let with_tls = |mut run: RunResult| {
            run.key.tls = true;
            run
        };
        let medians = vec![
            result(SystemKind::Ringkv, Workload::Put, 64, 0, 1000.0),
            result(SystemKind::Etcd, Workload::Put, 64, 0, 4000.0),
        ];
        let tls_medians = vec![
            with_tls(result(SystemKind::Ringkv, Workload::Put, 64, 0, 800.0)),
            with_tls(result(SystemKind::Ringkv, Workload::Put, 1, 0, 100.0)),
        ];
        let table = tls_cost_table(&medians, &tls_medians);
        assert!(
            table.contains("| put | uniform | closed | 64 | 1,000 | 800 | 0.80× | 1.00 | 1.25 | 1.25× |"),
            "{table}"
        );
        assert_eq!(
            table.lines().count(),
            3,
            "the 1-client TLS run has no counterpart: {table}"
        );
        assert!(markdown_table(&tls_medians).contains("| ringkv (TLS) | put |"));

        let json = serde_json::to_value(&tls_medians[0]).expect("encodes");
        assert_eq!(json["tls"], serde_json::Value::Bool(true));
        let mut old = serde_json::to_value(&medians[0]).expect("encodes");
        assert!(old.get("tls").is_none(), "runs without TLS are written as before");
        old.as_object_mut().expect("an object").remove("tls");
        let decoded: RunResult = serde_json::from_value(old).expect("decodes");
        assert!(!decoded.key.tls);
    }

    /// Thousands separators.
    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234567.0), "1,234,567");
    }
}
