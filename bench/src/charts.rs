//! The benchmark's plots, from the median results: throughput against clients (one chart
//! per workload, a line per system) and latency CDFs (one chart per workload, a line per
//! system and client count, on a "nines" axis so the tail is visible).

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

    /// The nines axis puts p90 at 1 and p99 at 2, and caps at p99.99.
    #[test]
    fn nines_axis() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
        assert!((nines(100.0) - 4.0).abs() < 1e-6);
    }
}
