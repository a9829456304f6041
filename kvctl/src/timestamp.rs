//! `kvctl timestamp`: timestamps of the cluster's timestamp oracle, decoded.

use anyhow::Context;
use clap::Args;
use ringkv_client::timestamp::{format_utc_millis, logical, physical_ms};
use ringkv_client::Client;
use serde_json::{json, Value};

use crate::exit::{Outcome, UsageError};
use crate::output::{self, render_table, to_json, OutputFormat};

/// Most timestamps one call may ask for.
const MAX_COUNT: u32 = 1 << 16;
/// Most timestamps printed one per row; larger counts print the range.
const MAX_LISTED: u32 = 100;

/// Arguments of `kvctl timestamp`.
#[derive(Args, Debug)]
pub struct TimestampArgs {
    /// How many consecutive timestamps to take (1..=65536).
    #[arg(long, default_value_t = 1)]
    pub count: u32,
}

/// `kvctl timestamp`: takes timestamps and prints each with its physical time and counter.
pub async fn run(client: &Client, args: TimestampArgs, format: OutputFormat) -> anyhow::Result<Outcome> {
    if args.count == 0 || args.count > MAX_COUNT {
        return Err(UsageError(format!("--count must be 1..={MAX_COUNT}, got {}", args.count)).into());
    }
    let range = client.timestamps(args.count).await.context("timestamp")?;
    output::emit(&render(range.start, args.count, format))?;
    if args.count > MAX_LISTED && format == OutputFormat::Table {
        eprintln!(
            "(the first and the last of {} consecutive timestamps)",
            args.count
        );
    }
    Ok(Outcome::Success)
}

/// The rows (or JSON) of `count` timestamps from `first`.
fn render(first: u64, count: u32, format: OutputFormat) -> String {
    let listed: Vec<u64> = if count <= MAX_LISTED {
        (first..first + u64::from(count)).collect()
    } else {
        vec![first, first + u64::from(count) - 1]
    };
    match format {
        OutputFormat::Table => {
            let rows = listed
                .iter()
                .map(|&ts| {
                    vec![
                        ts.to_string(),
                        format_utc_millis(physical_ms(ts)),
                        logical(ts).to_string(),
                    ]
                })
                .collect();
            render_table(&["TIMESTAMP", "PHYSICAL (UTC)", "LOGICAL"], rows, &[0, 2])
        }
        OutputFormat::Json => {
            let items: Vec<Value> = listed
                .iter()
                .map(|&ts| {
                    json!({
                        "timestamp": ts,
                        "physical_ms": physical_ms(ts),
                        "physical": format_utc_millis(physical_ms(ts)),
                        "logical": logical(ts),
                    })
                })
                .collect();
            to_json(&json!({ "first": first, "count": count, "timestamps": items }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_with_their_parts() {
        let ts = (1_796_428_876_745u64 << ringkv_client::timestamp::LOGICAL_BITS) | 7;
        let table = render(ts, 2, OutputFormat::Table);
        assert!(table.contains("2026-12-05T00:01:16.745Z"), "{table}");
        assert!(table.contains(&(ts + 1).to_string()), "{table}");
        let parsed: Value = serde_json::from_str(&render(ts, 1, OutputFormat::Json)).expect("json");
        assert_eq!(parsed["timestamps"][0]["logical"], 7);
        assert_eq!(parsed["timestamps"][0]["physical_ms"], 1_796_428_876_745u64);
        let many = render(ts, 5_000, OutputFormat::Table);
        assert_eq!(
            many.lines().count(),
            3,
            "a header, the first and the last: {many}"
        );
        assert!(many.contains(&(ts + 4_999).to_string()), "{many}");
    }
}
