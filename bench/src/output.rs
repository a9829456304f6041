//! Writing results: `results.json`, the SVG plots and (for `compare`) a README.md with the
//! headline ratios, the median table and the plots; and the date of a results directory.

use std::path::Path;

use crate::charts::{isolation_chart, latency_charts, throughput_charts, PlotFile};
use crate::report::{headline_ratios, markdown_table, ratio_table, tls_cost_table, Report};
use crate::BenchError;

/// `YYYY-MM-DD` (UTC) of `unix_s` seconds since the epoch.
pub fn utc_date(unix_s: u64) -> String {
    ringkv_client::timestamp::format_utc_date(unix_s)
}

/// Every plot of `report`.
pub fn plots(report: &Report) -> Vec<PlotFile> {
    let mut files = throughput_charts(&report.medians);
    files.extend(latency_charts(&report.medians));
    files.extend(isolation_chart(&report.medians));
    files
}

fn write(path: &Path, contents: &str) -> Result<(), BenchError> {
    std::fs::write(path, contents).map_err(BenchError::io(format!("writing {}", path.display())))
}

/// Writes `results.json` and the plots into `dir` (created), and `README.md` when
/// `readme` is set.
pub fn write_results(dir: &Path, report: &Report, readme: bool) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir).map_err(BenchError::io(format!("creating {}", dir.display())))?;
    let json = serde_json::to_string_pretty(report).map_err(|source| BenchError::Json {
        what: "encoding the results".into(),
        source,
    })?;
    write(&dir.join("results.json"), &json)?;
    let plots = plots(report);
    for plot in &plots {
        write(&dir.join(&plot.name), &plot.svg)?;
    }
    if readme {
        write(&dir.join("README.md"), &readme_text(report, &plots))?;
    }
    Ok(())
}

/// The README of a `compare` results directory.
pub fn readme_text(report: &Report, plots: &[PlotFile]) -> String {
    let config = &report.config;
    let mut text = format!("# ringkv vs etcd, {}\n\n", utc_date(report.started_unix_s));
    text.push_str(&format!(
        "Measured by `{}` ({}): {} repetition(s), each system started fresh for each (never \
         both at once; the first system of one repetition runs second in the next), {} records \
         of {} B loaded first, {} s warm-up and {} s measured per run, \
         {} connection(s) per system, on a machine with {} CPUs. Figures are medians over the \
         repetitions. These machines are shared and noisy: compare the ratios, not absolute \
         numbers across runs.\n\n",
        report.command.join(" "),
        report.tool,
        config.repetitions,
        config.records,
        config.value_bytes,
        config.warmup_s,
        config.duration_s,
        config.connections,
        report.cpus,
    ));
    text.push_str("## Systems\n\n");
    for info in &report.systems {
        text.push_str(&format!(
            "- **{}**: {}; {}\n",
            info.system.name(),
            info.version,
            info.setup
        ));
    }
    text.push_str("\n## Headline ratios\n\n");
    text.push_str(&ratio_table(&headline_ratios(&report.medians)));
    text.push_str("\n## All runs (medians)\n\n");
    text.push_str(&markdown_table(&report.medians));
    text.push_str(
        "\nServer CPU is user + system time of every server process (ringkv: 3 nodes and the \
         router; etcd: 3 members) during the measured window, from `/proc/<pid>/stat`; bytes \
         written are `/proc/<pid>/io` `write_bytes`; peak RSS is the sum of the processes' \
         `VmHWM`; bench CPU s is the load generator's own CPU time in the window (it shares the \
         machine with the servers). Latency is measured from each operation's intended start.\n",
    );
    if !report.tls_medians.is_empty() {
        text.push_str("\n## TLS cost\n\n");
        text.push_str(
            "ringkv measured again with mutual TLS between every process and from the client \
             (`--tls-cost`; certificates made for the cluster, the client presenting its own), in \
             the same repetitions; ratios are with TLS ÷ without (ops/s below 1×, latencies above \
             1× are the cost). The runs above, and the plots, are without TLS.\n\n",
        );
        text.push_str(&tls_cost_table(&report.medians, &report.tls_medians));
    }
    if !plots.is_empty() {
        text.push_str("\n## Plots\n\n");
        for plot in plots {
            text.push_str(&format!("![{}]({})\n\n", plot.title, plot.name));
        }
    }
    text.push_str("Raw results: [results.json](results.json).\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report's date is the UTC date of its start (the arithmetic is the client's).
    #[test]
    fn dates() {
        assert_eq!(utc_date(1_796_342_400), "2026-12-04");
    }
}
