//! The benchmark's plots, from the median results: throughput against clients (one chart
//! per workload, a line per system) and latency CDFs (one chart per workload, a line per
//! system and client count, on a "nines" axis so the tail is visible), and the two-record
//! transfer's throughput per isolation level (a line per system and client count).

use crate::driver::LoopMode;
use crate::plot::{Axis, Chart, Scale, Series};
use crate::report::{loop_label, RunResult};
use crate::system::SystemKind;
use crate::workload::Workload;

/// Highest percentile drawn on a CDF (100 cannot go on a nines axis).
const CDF_TOP_PERCENTILE: f64 = 99.99;

/// An SVG file to write: its name and content.
#[derive(Clone, Debug, PartialEq)]
pub struct PlotFile {
    /// File name, e.g. `throughput-put.svg`.
    pub name: String,
    /// What it shows.
    pub title: String,
    /// The SVG document.
    pub svg: String,
}

fn workloads_of(results: &[RunResult]) -> Vec<Workload> {
    let mut workloads: Vec<Workload> = results.iter().map(|result| result.key.workload).collect();
    workloads.sort();
    workloads.dedup();
    workloads
}

fn systems_of(results: &[RunResult]) -> Vec<SystemKind> {
    let mut systems: Vec<SystemKind> = results.iter().map(|result| result.key.system).collect();
    systems.sort();
    systems.dedup();
    systems
}

/// Throughput against closed-loop clients, per workload with at least two client counts.
pub fn throughput_charts(medians: &[RunResult]) -> Vec<PlotFile> {
    let mut files = Vec::new();
    for workload in workloads_of(medians) {
        let mut series = Vec::new();
        let mut ticks: Vec<usize> = Vec::new();
        for system in systems_of(medians) {
            let mut points: Vec<(f64, f64)> = medians
                .iter()
                .filter(|result| result.key.system == system && result.key.workload == workload)
                .filter_map(|result| match result.key.mode {
                    LoopMode::Closed { outstanding } => {
                        ticks.push(outstanding);
                        Some((outstanding as f64, result.ops_per_s))
                    }
                    LoopMode::Open { .. } => None,
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            if !points.is_empty() {
                series.push(Series {
                    name: system.name().into(),
                    points,
                    dashed: system == SystemKind::Etcd,
                });
            }
        }
        ticks.sort_unstable();
        ticks.dedup();
        if ticks.len() < 2 {
            continue;
        }
        let title = format!(
            "{}: throughput vs clients (closed loop, median)",
            workload.describe()
        );
        let chart = Chart {
            title: title.clone(),
            x: Axis {
                label: "outstanding operations (clients), log scale".into(),
                scale: Scale::Log,
                ticks: ticks
                    .iter()
                    .map(|clients| (*clients as f64, clients.to_string()))
                    .collect(),
            },
            y: Axis::new("operations per second", Scale::Linear),
            series,
        };
        files.push(PlotFile {
            name: format!("throughput-{}.svg", workload.name()),
            title,
            svg: chart.render(),
        });
    }
    files
}

/// The two-record transfer at each isolation level, weakest first, with the level's label.
const TRANSFER_LEVELS: [(Workload, &str); 4] = [
    (Workload::TRu, "RU"),
    (Workload::TRc, "RC"),
    (Workload::T, "RR"),
    (Workload::TSer, "SER"),
];

/// Transfers per second at each isolation level measured (at least two), one line per
/// system and closed-loop client count.
pub fn isolation_chart(medians: &[RunResult]) -> Option<PlotFile> {
    let measured: Vec<(usize, &str)> = TRANSFER_LEVELS
        .iter()
        .enumerate()
        .filter(|(_, (workload, _))| medians.iter().any(|result| result.key.workload == *workload))
        .map(|(position, (_, label))| (position, *label))
        .collect();
    if measured.len() < 2 {
        return None;
    }
    let mut lines: Vec<(SystemKind, usize)> = medians
        .iter()
        .filter(|result| {
            TRANSFER_LEVELS
                .iter()
                .any(|(workload, _)| *workload == result.key.workload)
        })
        .filter_map(|result| match result.key.mode {
            LoopMode::Closed { outstanding } => Some((result.key.system, outstanding)),
            LoopMode::Open { .. } => None,
        })
        .collect();
    lines.sort_unstable();
    lines.dedup();
    let series = lines
        .into_iter()
        .map(|(system, clients)| {
            let points = TRANSFER_LEVELS
                .iter()
                .enumerate()
                .filter_map(|(position, (workload, _))| {
                    medians
                        .iter()
                        .find(|result| {
                            result.key.system == system
                                && result.key.workload == *workload
                                && result.key.mode == LoopMode::Closed { outstanding: clients }
                        })
                        .map(|result| (position as f64 + 1.0, result.ops_per_s))
                })
                .collect();
            Series {
                name: format!("{} ×{clients}", system.name()),
                points,
                dashed: system == SystemKind::Etcd,
            }
        })
        .collect();
    let title = "Two-record transfers per second by isolation level (closed loop, median)".to_string();
    let chart = Chart {
        title: title.clone(),
        x: Axis {
            label: "read uncommitted, read committed, repeatable read, serializable (etcd: its one Txn)"
                .into(),
            scale: Scale::Linear,
            ticks: measured
                .iter()
                .map(|(position, label)| (*position as f64 + 1.0, (*label).to_string()))
                .collect(),
        },
        y: Axis::new("transactions per second", Scale::Linear),
        series,
    };
    Some(PlotFile {
        name: "throughput-by-isolation.svg".into(),
        title,
        svg: chart.render(),
    })
}

/// `-log10(1 - p/100)`: 0 at p0, 1 at p90, 2 at p99, 3 at p99.9.
fn nines(percentile: f64) -> f64 {
    -(1.0 - percentile.min(CDF_TOP_PERCENTILE) / 100.0).log10()
}

/// Latency CDFs, per workload: one line per system and loop.
pub fn latency_charts(medians: &[RunResult]) -> Vec<PlotFile> {
    let mut files = Vec::new();
    for workload in workloads_of(medians) {
        let series: Vec<Series> = medians
            .iter()
            .filter(|result| result.key.workload == workload && !result.cdf.is_empty())
            .map(|result| Series {
                name: format!(
                    "{} {} ×{}",
                    result.key.system.name(),
                    loop_label(result.key.mode),
                    result.key.clients()
                ),
                points: result
                    .cdf
                    .iter()
                    .filter(|point| point.percentile <= CDF_TOP_PERCENTILE)
                    .map(|point| (nines(point.percentile), point.latency_us.max(1) as f64 / 1000.0))
                    .collect(),
                dashed: result.key.system == SystemKind::Etcd,
            })
            .collect();
        if series.is_empty() {
            continue;
        }
        let title = format!("{}: latency CDF (median run)", workload.describe());
        let chart = Chart {
            title: title.clone(),
            x: Axis {
                label: "percentile".into(),
                scale: Scale::Linear,
                ticks: [0.0, 50.0, 90.0, 99.0, 99.9, 99.99]
                    .iter()
                    .map(|percentile| (nines(*percentile), format!("p{percentile}")))
                    .collect(),
            },
            y: Axis::new("latency (ms), log scale", Scale::Log),
            series,
        };
        files.push(PlotFile {
            name: format!("latency-{}.svg", workload.name()),
            title,
            svg: chart.render(),
        });
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The isolation chart has a tick per measured level, in strength order, and a line per
    /// system and client count; one level alone makes no chart.
    #[test]
    fn isolation_chart_orders_levels() {
        use crate::report::tests::result;
        let medians = [
            result(SystemKind::Ringkv, Workload::TSer, 64, 0, 700.0),
            result(SystemKind::Ringkv, Workload::TRu, 64, 0, 1000.0),
            result(SystemKind::Ringkv, Workload::TRu, 1, 0, 200.0),
            result(SystemKind::Etcd, Workload::TRu, 64, 0, 2000.0),
            result(SystemKind::Ringkv, Workload::Put, 64, 0, 5000.0),
        ];
        assert_eq!(isolation_chart(&medians[..1]), None);
        let chart = isolation_chart(&medians).expect("two levels measured");
        let svg = &chart.svg;
        let uncommitted = svg.find(">RU<").expect("tick");
        let serializable = svg.find(">SER<").expect("tick");
        assert!(uncommitted < serializable, "weakest first");
        assert!(!svg.contains(">RC<"), "an unmeasured level has no tick");
        for legend in ["ringkv ×1", "ringkv ×64", "etcd ×64"] {
            assert!(svg.contains(legend), "{legend}");
        }
    }

    /// The nines axis puts p90 at 1 and p99 at 2, and caps at p99.99.
    #[test]
    fn nines_axis() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
        assert!((nines(100.0) - 4.0).abs() < 1e-6);
    }
}
