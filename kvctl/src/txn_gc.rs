//! `kvctl txn-gc`: collect the records of old transactions now (routers also do it on their
//! own every `txn_gc_interval_ms`), with a progress bar while the shards are visited.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ringkv_client::timestamp::{format_utc_millis, physical_ms};
use ringkv_client::{Client, TxnGcProgress};
use serde_json::json;

use crate::exit::Outcome;
use crate::output::{self, render_table, to_json, OutputFormat};
use crate::progress;

/// Arguments of `kvctl txn-gc`.
#[derive(Args, Debug)]
pub struct TxnGcArgs {
    /// Collect the records of transactions older than this many ms [default: the router's
    /// txn_gc_age_ms]. A transaction older than the safe point can no longer commit on a
    /// shard that collected.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub age_ms: Option<u64>,
}

/// `kvctl txn-gc`: runs one collection and prints what it did.
pub async fn run(client: &Client, args: TxnGcArgs, format: OutputFormat) -> anyhow::Result<Outcome> {
    let bar = progress::bar(None, progress::GC_TEMPLATE);
    let done = client
        .collect_txn_records(args.age_ms.map(Duration::from_millis), |step| {
            bar.set_length(u64::from(step.shards));
            bar.set_position(u64::from(step.shards_done));
            bar.set_message(progress::gc_message(
                step.phase,
                step.locks_resolved,
                step.records_purged,
            ));
        })
        .await;
    bar.finish_and_clear();
    let done = done.context("txn-gc")?;
    output::emit(&render(&done, format))?;
    Ok(Outcome::Success)
}

fn render(done: &TxnGcProgress, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => render_table(
            &[
                "SAFE POINT",
                "SAFE POINT (UTC)",
                "SHARDS",
                "LOCKS RESOLVED",
                "RECORDS COLLECTED",
            ],
            vec![vec![
                done.safe_point.to_string(),
                format_utc_millis(physical_ms(done.safe_point)),
                done.shards.to_string(),
                done.locks_resolved.to_string(),
                done.records_purged.to_string(),
            ]],
            &[0, 2, 3, 4],
        ),
        OutputFormat::Json => to_json(&json!({
            "safe_point": done.safe_point,
            "shards": done.shards,
            "locks_resolved": done.locks_resolved,
            "records_collected": done.records_purged,
        })),
    }
}
