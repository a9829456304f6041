//! `kvctl check perf`: a few seconds of puts at a fixed rate against the cluster, then a
//! verdict, like etcdctl's `check perf`: PASS when the cluster kept up with the rate
//! (at least [`MIN_THROUGHPUT_SHARE`] of it) with a p99 latency within the limit and no
//! errors; FAIL (exit 1) otherwise. The keys go under a prefix of their own, deleted at
//! the end.
//!
//! Puts start on a fixed schedule (`--rate` a second), at most `--concurrency` in flight:
//! a put that finds every slot busy is not sent (the cluster did not keep up), so the
//! measured rate falls behind the target rather than latencies hiding behind a queue.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use futures::stream::{FuturesUnordered, StreamExt};
use ringkv_client::{Client, KeyRange};
use tokio::time::MissedTickBehavior;

use crate::exit::Outcome;
use crate::output::{self, Column, Field, Format, Records, Shape};
use crate::progress;

/// The share of the target rate a passing run must reach.
pub const MIN_THROUGHPUT_SHARE: f64 = 0.9;

/// Checks of the cluster.
#[derive(Subcommand, Debug)]
pub enum CheckCommand {
    /// Puts at a fixed rate for a few seconds; PASS or FAIL on throughput, p99 latency and
    /// errors (exit 1 on FAIL).
    Perf(PerfArgs),
}

/// Arguments of `kvctl check perf`.
#[derive(Args, Debug)]
pub struct PerfArgs {
    /// Puts per second to start.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,
    /// How long to put, in seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub seconds: u64,
    /// Puts in flight at most.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// Bytes per value.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    pub value_size: u32,
    /// The p99 latency a passing run stays within, in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_p99_ms: u64,
    /// Prefix of the keys written (and deleted at the end).
    #[arg(long, default_value = "__kvctl_check_perf/")]
    pub prefix: String,
}

/// `kvctl check ...`.
pub async fn run(client: &Client, command: CheckCommand, format: Format) -> anyhow::Result<Outcome> {
    match command {
        CheckCommand::Perf(args) => perf(client, args, format).await,
    }
}

/// What a run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measured {
    /// Puts acknowledged.
    pub ok: u64,
    /// Puts that failed.
    pub errors: u64,
    /// Puts not sent: every slot was busy at their time.
    pub skipped: u64,
    /// Latencies of the acknowledged puts.
    pub latencies: Vec<Duration>,
    /// From the first put to the last answer.
    pub elapsed: Duration,
}

/// The verdict on a run, with the numbers it rests on.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub target_rate: u32,
    pub throughput: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: u64,
    pub skipped: u64,
    /// Why the run failed (empty: it passed).
    pub failures: Vec<String>,
}

impl Report {
    /// Judges `measured` against the target rate and the p99 limit.
    pub fn judge(measured: &Measured, target_rate: u32, max_p99: Duration) -> Report {
        let mut latencies = measured.latencies.clone();
        latencies.sort_unstable();
        let seconds = measured.elapsed.as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let throughput = if seconds > 0.0 {
            measured.ok as f64 / seconds
        } else {
            0.0
        };
        let p50 = percentile(&latencies, 50);
        let p99 = percentile(&latencies, 99);
        let mut failures = Vec::new();
        let wanted = f64::from(target_rate) * MIN_THROUGHPUT_SHARE;
        if throughput < wanted {
            failures.push(format!(
                "throughput {throughput:.0} puts/s is below {wanted:.0} ({:.0}% of {target_rate})",
                MIN_THROUGHPUT_SHARE * 100.0
            ));
        }
        if p99 > max_p99 {
            failures.push(format!(
                "p99 latency {} ms is over {} ms",
                p99.as_millis(),
                max_p99.as_millis()
            ));
        }
        if measured.errors > 0 {
            failures.push(format!("{} puts failed", measured.errors));
        }
        Report {
            target_rate,
            throughput,
            p50,
            p99,
            errors: measured.errors,
            skipped: measured.skipped,
            failures,
        }
    }

    /// Whether the run passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The report as one record: target and achieved rates, p50 and p99 in ms, errors,
    /// puts not sent, the verdict. Raw output is the verdict.
    pub fn records(&self) -> Records {
        let columns = [
            Column::new("target_rate"),
            Column::new("throughput"),
            Column::new("p50_ms"),
            Column::new("p99_ms"),
            Column::new("errors"),
            Column::new("not_sent"),
            Column::new("verdict"),
        ];
        let mut records = Records::new(&columns, "verdict");
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let throughput = self.throughput.round().max(0.0) as u64;
        records.push(vec![
            Field::Number(u64::from(self.target_rate)),
            Field::Number(throughput),
            Field::Text(format!("{:.1}", self.p50.as_secs_f64() * 1000.0)),
            Field::Text(format!("{:.1}", self.p99.as_secs_f64() * 1000.0)),
            Field::Number(self.errors),
            Field::Number(self.skipped),
            Field::Text(if self.passed() { "PASS" } else { "FAIL" }.to_string()),
        ]);
        records
    }
}

/// The `percent`th percentile of sorted latencies (nearest rank; zero when empty).
pub fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// `kvctl check perf`.
async fn perf(client: &Client, args: PerfArgs, format: Format) -> anyhow::Result<Outcome> {
    // The run overwrites and then deletes everything under its prefix: never someone's data.
    if args.prefix.is_empty() {
        anyhow::bail!("--prefix must not be empty: check perf deletes every key under it at the end");
    }
    let present = client
        .count(
            &KeyRange::prefix(args.prefix.as_bytes()),
            &ringkv_client::CountOptions::new(),
        )
        .await
        .with_context(|| format!("checking that nothing is stored under {}", args.prefix))?;
    if present.count > 0 {
        anyhow::bail!(
            "{} keys are stored under {:?}: check perf writes and then deletes every key under its \
             prefix, so it runs only under an empty one (give another --prefix)",
            present.count,
            args.prefix
        );
    }
    let total = u64::from(args.rate) * args.seconds;
    let bar = progress::bar(Some(total), progress::CHECK_TEMPLATE);
    let value = vec![b'x'; usize::try_from(args.value_size).unwrap_or(0)];
    let period = Duration::from_secs(1) / args.rate;
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let concurrency = usize::try_from(args.concurrency).unwrap_or(1);
    let mut in_flight = FuturesUnordered::new();
    let mut measured = Measured::default();
    let mut first_error: Option<String> = None;
    let started = Instant::now();
    let mut scheduled = 0u64;
    while scheduled < total || !in_flight.is_empty() {
        tokio::select! {
            _ = ticks.tick(), if scheduled < total => {
                scheduled += 1;
                bar.set_position(scheduled);
                if in_flight.len() >= concurrency {
                    measured.skipped += 1;
                    continue;
                }
                let key = format!("{}{:08}", args.prefix, scheduled % 100_000);
                let value = value.clone();
                in_flight.push(async move {
                    let sent = Instant::now();
                    let result = client.put(key, value).await;
                    (sent.elapsed(), result)
                });
            }
            Some((latency, result)) = in_flight.next(), if !in_flight.is_empty() => match result {
                Ok(_) => {
                    measured.ok += 1;
                    measured.latencies.push(latency);
                }
                Err(err) => {
                    measured.errors += 1;
                    first_error.get_or_insert_with(|| err.to_string());
                }
            },
        }
    }
    measured.elapsed = started.elapsed();
    bar.finish_and_clear();
    if let Err(err) = client
        .delete_range(&KeyRange::prefix(args.prefix.as_bytes()))
        .await
        .with_context(|| format!("deleting the keys under {}", args.prefix))
    {
        eprintln!("warning: {err:#}");
    }
    let report = Report::judge(&measured, args.rate, Duration::from_millis(args.max_p99_ms));
    output::emit_raw(&report.records().render(format, Shape::One))?;
    for failure in &report.failures {
        eprintln!("FAIL: {failure}");
    }
    if let Some(error) = first_error {
        eprintln!("first error: {error}");
    }
    Ok(if report.passed() {
        Outcome::Success
    } else {
        Outcome::CheckFailed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(count: u64) -> Duration {
        Duration::from_millis(count)
    }

    /// Nearest-rank percentiles.
    #[test]
    fn percentiles() {
        let sorted: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&sorted, 50), ms(50));
        assert_eq!(percentile(&sorted, 99), ms(99));
        assert_eq!(percentile(&[ms(7)], 99), ms(7));
        assert_eq!(percentile(&[], 99), Duration::ZERO);
    }

    /// A run passes when it keeps up with the rate within the p99 limit, without errors;
    /// each shortfall is named.
    #[test]
    fn verdicts() {
        let good = Measured {
            ok: 1000,
            latencies: vec![ms(5); 1000],
            elapsed: Duration::from_secs(5),
            ..Measured::default()
        };
        let report = Report::judge(&good, 200, ms(100));
        assert!(report.passed(), "{report:?}");
        assert_eq!(report.throughput.round(), 200.0);

        let slow = Measured {
            ok: 500,
            errors: 2,
            latencies: vec![ms(250); 500],
            elapsed: Duration::from_secs(5),
            ..Measured::default()
        };
        let report = Report::judge(&slow, 200, ms(100));
        assert!(!report.passed());
        assert_eq!(report.failures.len(), 3, "{:?}", report.failures);
        let tsv = String::from_utf8(report.records().render(Format::Tsv, Shape::One)).expect("utf-8");
        assert_eq!(
            tsv,
            "target_rate\tthroughput\tp50_ms\tp99_ms\terrors\tnot_sent\tverdict\n200\t100\t250.0\t250.0\t2\t0\tFAIL\n"
        );
    }
}
