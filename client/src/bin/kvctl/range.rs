//! `scan`, `count`, `delrange`: commands over a range of keys.

use std::ffi::OsString;
use std::io::{BufWriter, ErrorKind};

use anyhow::Context as _;
use clap::Args;
use futures::TryStreamExt;
use ringkv_client::{
    Client, ContinuationToken, CountOptions, KeyRange, ReadConsistency, ScanOptions, MAX_SCAN_PAGE_LIMIT,
};

use crate::exit::{Outcome, UsageError};
use crate::output::{self, OutputFormat, ScanPrinter};
use crate::progress;
use crate::value::decode_arg;

/// Entries of one `scan` page when --limit is not given.
pub const DEFAULT_PAGE_LIMIT: u32 = 100;

/// The range of keys a command works on.
#[derive(Args, Debug)]
pub struct RangeArgs {
    /// First key of the range, included [default: the first key].
    pub start: Option<OsString>,
    /// End of the range, excluded [default: no upper bound].
    pub end: Option<OsString>,
    /// Only the keys starting with PREFIX (instead of START and END).
    #[arg(long, value_name = "PREFIX", conflicts_with_all = ["start", "end"])]
    pub prefix: Option<OsString>,
    /// START, END and PREFIX are hex-encoded.
    #[arg(long)]
    pub hex: bool,
}

impl RangeArgs {
    /// The range: `--prefix`, or `[START, END)` with open ends when left out.
    pub fn key_range(self) -> Result<KeyRange, UsageError> {
        let hex = self.hex;
        if let Some(prefix) = self.prefix {
            return Ok(KeyRange::prefix(decode_arg("prefix", prefix, hex)?));
        }
        let start = self
            .start
            .map(|start| decode_arg("START", start, hex))
            .transpose()?
            .unwrap_or_default();
        let Some(end) = self.end else {
            return Ok(KeyRange::starting_at(start));
        };
        let end = decode_arg("END", end, hex)?;
        if end.is_empty() {
            return Err(UsageError(
                "END must not be empty (leave it out for no upper bound)".into(),
            ));
        }
        if start > end {
            return Err(UsageError("START must not come after END".into()));
        }
        Ok(KeyRange::between(start, end))
    }
}

/// Arguments of `kvctl scan`.
#[derive(Args, Debug)]
pub struct ScanArgs {
    #[command(flatten)]
    pub range: RangeArgs,
    /// One page: its size, 1..=10000 [default: 100]. With --all: the most entries in all
    /// [default: no limit].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Descending key order.
    #[arg(long)]
    pub reverse: bool,
    /// Keys and versions only, no values.
    #[arg(long)]
    pub keys_only: bool,
    /// Serve each shard's part from any replica (fast, possibly stale).
    #[arg(long)]
    pub stale: bool,
    /// When shards cannot answer, list the others' keys and name the missing shards.
    #[arg(long)]
    pub allow_partial: bool,
    /// Continue a scan after its page: the token it printed (same range and flags).
    #[arg(long, value_name = "TOKEN", conflicts_with = "all")]
    pub page_token: Option<String>,
    /// Stream the whole range instead of one page (resumes by itself after transient
    /// errors).
    #[arg(long)]
    pub all: bool,
}

/// Arguments of `kvctl count`.
#[derive(Args, Debug)]
pub struct CountArgs {
    #[command(flatten)]
    pub range: RangeArgs,
    /// Serve each shard's part from any replica (fast, possibly stale).
    #[arg(long)]
    pub stale: bool,
    /// When shards cannot answer, count the others and name the missing shards.
    #[arg(long)]
    pub allow_partial: bool,
}

/// Arguments of `kvctl delrange`.
#[derive(Args, Debug)]
pub struct DelrangeArgs {
    /// First key to delete, included (give END too; an empty START is the first key).
    pub start: Option<OsString>,
    /// End of the range, excluded.
    pub end: Option<OsString>,
    /// Delete the keys starting with PREFIX (not empty; instead of START and END).
    #[arg(long, value_name = "PREFIX", conflicts_with_all = ["start", "end"])]
    pub prefix: Option<OsString>,
    /// START, END and PREFIX are hex-encoded.
    #[arg(long)]
    pub hex: bool,
    /// Delete every key of the cluster (requires --yes).
    #[arg(long, conflicts_with_all = ["start", "end", "prefix"])]
    pub all: bool,
    /// Confirm --all.
    #[arg(long)]
    pub yes: bool,
}

fn consistency(stale: bool) -> ReadConsistency {
    if stale {
        ReadConsistency::Stale
    } else {
        ReadConsistency::Linearizable
    }
}

/// `kvctl scan`: one page (and the token of the next), or with `--all` the whole range
/// streamed to stdout as it arrives.
pub async fn scan(client: &Client, args: ScanArgs, format: OutputFormat) -> anyhow::Result<Outcome> {
    let range = args.range.key_range()?;
    let mut options = ScanOptions::new()
        .reverse(args.reverse)
        .keys_only(args.keys_only)
        .consistency(consistency(args.stale))
        .allow_partial(args.allow_partial);
    if args.all {
        if let Some(limit) = args.limit {
            options = options.limit(limit);
        }
        return scan_all(client, &range, &options, args.keys_only, format).await;
    }
    let limit = args.limit.unwrap_or(DEFAULT_PAGE_LIMIT);
    if limit > MAX_SCAN_PAGE_LIMIT {
        return Err(UsageError(format!(
            "--limit of one page must be at most {MAX_SCAN_PAGE_LIMIT} (use --all for more)"
        ))
        .into());
    }
    let options = options.limit(limit);
    let token = args
        .page_token
        .map(|token| {
            token
                .parse::<ContinuationToken>()
                .map_err(|err| UsageError(format!("--page-token: {err}")))
        })
        .transpose()?;
    let page = client
        .scan(&range, &options, token.as_ref())
        .await
        .with_context(|| format!("scan {range}"))?;
    if page.is_partial() {
        eprintln!("{}", output::partial_warning(&page.missing_shards));
    }
    output::emit(&output::render_scan_page(&page, args.keys_only, format))?;
    Ok(Outcome::Success)
}

/// `scan --all`: prints each chunk as it arrives; a closed stdout ends the scan quietly.
async fn scan_all(
    client: &Client,
    range: &KeyRange,
    options: &ScanOptions,
    keys_only: bool,
    format: OutputFormat,
) -> anyhow::Result<Outcome> {
    let mut printer = ScanPrinter::new(BufWriter::new(std::io::stdout()), format, keys_only);
    let mut chunks = client.scan_stream(range, options);
    let result: anyhow::Result<()> = async {
        printer.begin()?;
        while let Some(chunk) = chunks.try_next().await.with_context(|| format!("scan {range}"))? {
            printer.chunk(&chunk)?;
        }
        Ok(())
    }
    .await;
    let missing = printer.missing_shards();
    let error_text = result.as_ref().err().map(|error| format!("{error:#}"));
    let finished = printer.finish(error_text.as_deref());
    if let Err(error) = result {
        if is_broken_pipe(&error) {
            return Ok(Outcome::Success);
        }
        return Err(error);
    }
    match finished {
        Err(error) if error.kind() == ErrorKind::BrokenPipe => return Ok(Outcome::Success),
        other => other?,
    }
    if !missing.is_empty() {
        eprintln!("{}", output::partial_warning(&missing));
    }
    Ok(Outcome::Success)
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
}

/// `kvctl count`: the number of keys, with a progress bar on stderr when it is a
/// terminal.
pub async fn count(client: &Client, args: CountArgs, format: OutputFormat) -> anyhow::Result<Outcome> {
    let range = args.range.key_range()?;
    let options = CountOptions::new()
        .consistency(consistency(args.stale))
        .allow_partial(args.allow_partial);
    let bar = progress::bar(None, progress::COUNT_TEMPLATE);
    bar.set_message("waiting for the first report");
    let result = client
        .count_with_progress(&range, &options, |report| {
            bar.set_message(progress::count_message(
                report.count,
                report.shards_done,
                report.shards_total,
            ));
        })
        .await;
    bar.finish_and_clear();
    let result = result.with_context(|| format!("count {range}"))?;
    if result.is_partial() {
        eprintln!("{}", output::partial_warning(&result.missing_shards));
    }
    output::emit(&output::render_count(&result, format))?;
    Ok(Outcome::Success)
}

/// `kvctl delrange`: deletes `[START, END)`, a prefix, or with `--all --yes` every key.
pub async fn delrange(client: &Client, args: DelrangeArgs, format: OutputFormat) -> anyhow::Result<Outcome> {
    let deleted = if args.all {
        if !args.yes {
            return Err(
                UsageError("--all deletes every key of the cluster: add --yes to confirm".into()).into(),
            );
        }
        client.delete_all().await.context("delrange --all")?
    } else {
        let range = delete_range_of(RangeArgs {
            start: args.start,
            end: args.end,
            prefix: args.prefix,
            hex: args.hex,
        })?;
        client
            .delete_range(&range)
            .await
            .with_context(|| format!("delrange {range}"))?
    };
    output::emit(&output::render_delete_range(deleted, format))?;
    Ok(Outcome::Success)
}

/// The range of `delrange`: a non-empty prefix, or both START and END.
fn delete_range_of(args: RangeArgs) -> Result<KeyRange, UsageError> {
    let explicit = args.prefix.is_some() || (args.start.is_some() && args.end.is_some());
    if !explicit {
        return Err(UsageError(
            "give START and END, --prefix PREFIX, or --all --yes".into(),
        ));
    }
    let range = args.key_range()?;
    if range.is_all() {
        return Err(UsageError(
            "an empty prefix is every key: use --all --yes to delete every key".into(),
        ));
    }
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range_args(start: Option<&str>, end: Option<&str>, prefix: Option<&str>, hex: bool) -> RangeArgs {
        RangeArgs {
            start: start.map(OsString::from),
            end: end.map(OsString::from),
            prefix: prefix.map(OsString::from),
            hex,
        }
    }

    /// START/END/--prefix map to ranges; hex is decoded; open ends stay open.
    #[test]
    fn ranges_from_arguments() {
        assert_eq!(
            range_args(None, None, None, false).key_range().expect("ok"),
            KeyRange::starting_at("")
        );
        assert_eq!(
            range_args(Some("a"), None, None, false).key_range().expect("ok"),
            KeyRange::starting_at("a")
        );
        assert_eq!(
            range_args(Some("a"), Some("c"), None, false)
                .key_range()
                .expect("ok"),
            KeyRange::between("a", "c")
        );
        assert_eq!(
            range_args(None, None, Some("ff00"), true)
                .key_range()
                .expect("ok"),
            KeyRange::prefix([0xff, 0x00])
        );
        assert_eq!(
            range_args(Some(""), Some("b"), None, false)
                .key_range()
                .expect("ok"),
            KeyRange::ending_before("b")
        );
    }

    /// Inverted bounds, an empty END and bad hex are usage errors.
    #[test]
    fn bad_ranges_are_usage_errors() {
        assert!(range_args(Some("b"), Some("a"), None, false).key_range().is_err());
        assert!(range_args(Some("a"), Some(""), None, false).key_range().is_err());
        assert!(range_args(Some("zz"), None, None, true).key_range().is_err());
    }

    /// delrange needs both bounds or a non-empty prefix.
    #[test]
    fn delrange_needs_an_explicit_range() {
        assert!(delete_range_of(range_args(None, None, None, false)).is_err());
        assert!(delete_range_of(range_args(Some("a"), None, None, false)).is_err());
        assert!(delete_range_of(range_args(None, None, Some(""), false)).is_err());
        assert_eq!(
            delete_range_of(range_args(Some("a"), Some("b"), None, false)).expect("ok"),
            KeyRange::between("a", "b")
        );
        assert_eq!(
            delete_range_of(range_args(None, None, Some("p/"), false)).expect("ok"),
            KeyRange::prefix("p/")
        );
    }
}
