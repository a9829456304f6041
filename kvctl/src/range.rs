//! `scan`, `count`, `delrange`: commands over a range of keys.
//!
//! A scan's data (its entries; with `-o json` the whole document, token included) goes to
//! stdout, its footer (`2 entries; next page: --page-token …`) to stderr.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufWriter, ErrorKind, Write};

use anyhow::Context as _;
use clap::Args;
use futures::TryStreamExt;
use ringkv_client::{
    Client, ContinuationToken, CountOptions, CountResult, KeyRange, ReadConsistency, ScanEntry, ScanOptions,
    ScanPage, MAX_SCAN_PAGE_LIMIT,
};
use serde_json::{json, Value};

use crate::exit::{Outcome, UsageError};
use crate::output::{
    self, join_shards, json_line, plural, render_table, to_json, Column, Field, Format, Records, Shape,
    StreamingTable,
};
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
    /// One page: its size, 1..=10000 [default: 100] (the router's replies are followed until
    /// it is filled or the range ends). With --all: the most entries in all [default: no
    /// limit].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Descending key order.
    #[arg(long)]
    pub reverse: bool,
    /// Keys only: no versions, no values.
    #[arg(long)]
    pub keys_only: bool,
    /// Serve each shard's part from any replica (fast, possibly stale).
    #[arg(long, conflicts_with = "at")]
    pub stale: bool,
    /// Read the range as of this timestamp (from `kvctl timestamp`): one consistent snapshot
    /// across every shard (give it again with --page-token). Timestamps older than the
    /// nodes' --mvcc-window-ms are refused.
    #[arg(long, value_name = "TIMESTAMP")]
    pub at: Option<u64>,
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
    #[arg(long, conflicts_with = "at")]
    pub stale: bool,
    /// Count the keys present at this timestamp (from `kvctl timestamp`), on every shard
    /// at the same moment. Timestamps older than the nodes' --mvcc-window-ms are refused.
    #[arg(long, value_name = "TIMESTAMP")]
    pub at: Option<u64>,
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
    /// Delete every key of the cluster (requires --yes); lease records (the reserved
    /// keyspace __ringkv/) stay: delete them with --prefix __ringkv/.
    #[arg(long, conflicts_with_all = ["start", "end", "prefix"])]
    pub all: bool,
    /// Confirm --all.
    #[arg(long)]
    pub yes: bool,
}

/// How a read asked for with `--stale` / `--at TIMESTAMP` (which conflict) is served.
pub(crate) fn consistency(stale: bool, at: Option<u64>) -> ReadConsistency {
    match (stale, at) {
        (_, Some(ts)) => ReadConsistency::At(ts),
        (true, None) => ReadConsistency::Stale,
        (false, None) => ReadConsistency::Linearizable,
    }
}

/// `kvctl scan`: one page (and the token of the next), or with `--all` the whole range
/// streamed to stdout as it arrives.
pub async fn scan(client: &Client, args: ScanArgs, format: Format) -> anyhow::Result<Outcome> {
    let range = args.range.key_range()?;
    let mut options = ScanOptions::new()
        .reverse(args.reverse)
        .keys_only(args.keys_only)
        .consistency(consistency(args.stale, args.at))
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
    let page = scan_page(client, &range, options, limit, token)
        .await
        .with_context(|| format!("scan {range}"))?;
    if page.is_partial() {
        eprintln!("{}", partial_warning(&page.missing_shards));
    }
    output::emit_raw(&render_scan_page(&page, args.keys_only, format))?;
    if format != Format::Json {
        eprintln!("{}", scan_page_footer(&page));
    }
    Ok(Outcome::Success)
}

/// One page of up to `limit` entries, following the router's continuation tokens: a router
/// page ends at its reply's byte budget (3.5 MiB), possibly before the limit, and the user
/// asked for `limit` entries (or the end of the range). The token printed is the last one.
async fn scan_page(
    client: &Client,
    range: &KeyRange,
    options: ScanOptions,
    limit: u32,
    token: Option<ContinuationToken>,
) -> Result<ScanPage, ringkv_client::Error> {
    let mut page = client.scan(range, &options, token.as_ref()).await?;
    loop {
        let taken = u32::try_from(page.entries.len()).unwrap_or(u32::MAX);
        let Some(next) = page.next.clone().filter(|_| taken < limit) else {
            return Ok(page);
        };
        let rest = client
            .scan(range, &options.clone().limit(limit - taken), Some(&next))
            .await?;
        page.entries.extend(rest.entries);
        page.next = rest.next;
        for shard in rest.missing_shards {
            if !page.missing_shards.contains(&shard) {
                page.missing_shards.push(shard);
            }
        }
    }
}

/// `scan --all`: prints each chunk as it arrives; a closed stdout ends the scan quietly.
async fn scan_all(
    client: &Client,
    range: &KeyRange,
    options: &ScanOptions,
    keys_only: bool,
    format: Format,
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
    let footer = printer.footer(error_text.is_some());
    let finished = printer.finish(error_text.as_deref());
    if let Some(footer) = footer {
        eprintln!("{footer}");
    }
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
        eprintln!("{}", partial_warning(&missing));
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
pub async fn count(client: &Client, args: CountArgs, format: Format) -> anyhow::Result<Outcome> {
    let range = args.range.key_range()?;
    let options = CountOptions::new()
        .consistency(consistency(args.stale, args.at))
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
        eprintln!("{}", partial_warning(&result.missing_shards));
    }
    output::emit_raw(&render_count(&result, format))?;
    Ok(Outcome::Success)
}

/// `kvctl delrange`: deletes `[START, END)`, a prefix, or with `--all --yes` every key.
pub async fn delrange(client: &Client, args: DelrangeArgs, format: Format) -> anyhow::Result<Outcome> {
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
    output::emit_raw(&render_delete_range(deleted, format))?;
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

/// The warning printed on stderr when shards are missing from a result.
pub fn partial_warning(missing_shards: &[u32]) -> String {
    format!(
        "warning: partial result: shard{} {} did not answer",
        if missing_shards.len() == 1 { "" } else { "s" },
        join_shards(missing_shards.iter().copied())
    )
}

/// Scan entries as records: key, version and value, or with `keys_only` the key alone. Raw
/// output is the values (the keys with `keys_only`).
pub fn scan_records(entries: &[ScanEntry], keys_only: bool) -> Records {
    let mut records = if keys_only {
        Records::new(&[Column::new("key")], "key")
    } else {
        Records::new(
            &[Column::new("key"), Column::new("version"), Column::new("value")],
            "value",
        )
    };
    for entry in entries {
        let mut row = vec![Field::Bytes(entry.key.clone())];
        if !keys_only {
            row.push(Field::Number(entry.version));
            row.push(Field::Bytes(entry.value.clone()));
        }
        records.push(row);
    }
    records
}

/// The data of one page of `scan`: the entries (a table, or lines); JSON: `{"entries":
/// [...], "next_page_token": "<hex>" | null, "missing_shards": [...]}`. The rest is the
/// footer ([`scan_page_footer`]).
pub fn render_scan_page(page: &ScanPage, keys_only: bool, format: Format) -> Vec<u8> {
    let records = scan_records(&page.entries, keys_only);
    match format {
        Format::Table if records.is_empty() => Vec::new(),
        Format::Table | Format::Jsonl | Format::Tsv | Format::Raw => records.render(format, Shape::Many),
        Format::Json => {
            let mut text = to_json(&json!({
                "entries": records.json_objects(),
                "next_page_token": page.next.as_ref().map(|token| token.to_string()),
                "missing_shards": page.missing_shards,
            }));
            text.push('\n');
            text.into_bytes()
        }
    }
}

/// The line about a page that goes to stderr: its number of entries, the token of the
/// next page (or the end of the range), the missing shards.
pub fn scan_page_footer(page: &ScanPage) -> String {
    let mut out = plural(
        u64::try_from(page.entries.len()).unwrap_or(u64::MAX),
        "entry",
        "entries",
    );
    match &page.next {
        Some(token) => {
            let _ = write!(out, "; next page: --page-token {token}");
        }
        None => out.push_str("; end of range"),
    }
    if page.is_partial() {
        let _ = write!(
            out,
            "; PARTIAL: missing shards {}",
            join_shards(page.missing_shards.iter().copied())
        );
    }
    out
}

/// Writes a streamed scan (`scan --all`) as its chunks arrive, in constant memory: a
/// table, lines (`jsonl`, `tsv` after its header, `raw`), or one JSON document
/// `{"entries": [...], "count": N, "missing_shards": [...]}` (plus `"error"` when the scan
/// failed part way) with one entry per line. The table's and the lines' footer is
/// [`ScanPrinter::footer`], for stderr.
pub struct ScanPrinter<W: Write> {
    out: W,
    format: Format,
    keys_only: bool,
    table: StreamingTable,
    count: u64,
    missing_shards: BTreeSet<u32>,
}

impl<W: Write> ScanPrinter<W> {
    /// A printer writing to `out`.
    pub fn new(out: W, format: Format, keys_only: bool) -> Self {
        let headers: &[&str] = if keys_only {
            &["KEY"]
        } else {
            &["KEY", "VERSION", "VALUE"]
        };
        ScanPrinter {
            out,
            format,
            keys_only,
            table: StreamingTable::new(headers, &[1]),
            count: 0,
            missing_shards: BTreeSet::new(),
        }
    }

    /// Writes what comes before the first entry.
    pub fn begin(&mut self) -> std::io::Result<()> {
        match self.format {
            Format::Json => self.out.write_all(b"{\n  \"entries\": ["),
            Format::Tsv => self
                .out
                .write_all(&scan_records(&[], self.keys_only).lines(Format::Tsv, true)),
            Format::Table | Format::Jsonl | Format::Raw => Ok(()),
        }
    }

    /// Writes the entries of one chunk and flushes them.
    pub fn chunk(&mut self, page: &ScanPage) -> std::io::Result<()> {
        self.missing_shards.extend(page.missing_shards.iter().copied());
        let records = scan_records(&page.entries, self.keys_only);
        match self.format {
            Format::Table => {
                if !records.is_empty() {
                    let (_, rows, _) = records.table_parts();
                    self.out.write_all(self.table.lines(&rows).as_bytes())?;
                }
            }
            Format::Json => {
                for (index, entry) in records.json_objects().iter().enumerate() {
                    let separator = if self.count == 0 && index == 0 {
                        "\n"
                    } else {
                        ",\n"
                    };
                    write!(self.out, "{separator}    {entry}")?;
                }
            }
            Format::Jsonl | Format::Tsv | Format::Raw => {
                self.out.write_all(&records.lines(self.format, false))?;
            }
        }
        self.count += u64::try_from(page.entries.len()).unwrap_or(u64::MAX);
        self.out.flush()
    }

    /// Shards missing from the chunks so far.
    pub fn missing_shards(&self) -> Vec<u32> {
        self.missing_shards.iter().copied().collect()
    }

    /// The line for stderr after the entries (none for JSON, whose document says it): the
    /// count, the missing shards, whether the scan `failed` part way.
    pub fn footer(&self, failed: bool) -> Option<String> {
        if self.format == Format::Json {
            return None;
        }
        let mut footer = plural(self.count, "entry", "entries");
        if !self.missing_shards.is_empty() {
            let _ = write!(
                footer,
                "; PARTIAL: missing shards {}",
                join_shards(self.missing_shards.iter().copied())
            );
        }
        if failed {
            footer.push_str("; the scan FAILED before the end of the range");
        }
        Some(footer)
    }

    /// Writes what comes after the last entry: for JSON, the count (and `error`, when the
    /// scan failed part way).
    pub fn finish(mut self, error: Option<&str>) -> std::io::Result<()> {
        if self.format == Format::Json {
            let close = if self.count == 0 { "]" } else { "\n  ]" };
            let missing = Value::from(self.missing_shards());
            write!(
                self.out,
                "{close},\n  \"count\": {},\n  \"missing_shards\": {missing}",
                self.count
            )?;
            if let Some(error) = error {
                write!(self.out, ",\n  \"error\": {}", Value::from(error))?;
            }
            self.out.write_all(b"\n}\n")?;
        }
        self.out.flush()
    }
}

/// The result of `count`: a table; JSON `{"count", "shards_total", "shards_counted",
/// "missing_shards": [...]}` (one line for `jsonl`); TSV with those columns (missing shards
/// comma-separated). Raw output is the count.
pub fn render_count(result: &CountResult, format: Format) -> Vec<u8> {
    let counted = u32::try_from(result.missing_shards.len())
        .map_or(0, |missing| result.shards_total.saturating_sub(missing));
    let document = json!({
        "count": result.count,
        "shards_total": result.shards_total,
        "shards_counted": counted,
        "missing_shards": result.missing_shards,
    });
    let text = match format {
        Format::Table => {
            let mut headers = vec!["COUNT", "SHARDS"];
            let mut row = vec![
                result.count.to_string(),
                format!("{counted}/{}", result.shards_total),
            ];
            if result.is_partial() {
                headers.push("MISSING SHARDS");
                row.push(join_shards(result.missing_shards.iter().copied()));
            }
            format!("{}\n", render_table(&headers, vec![row], &[0]))
        }
        Format::Json => format!("{}\n", to_json(&document)),
        Format::Jsonl => json_line(&document),
        Format::Tsv | Format::Raw => {
            let columns = [
                Column::new("count"),
                Column::new("shards_total"),
                Column::new("shards_counted"),
                Column::new("missing_shards"),
            ];
            let mut records = Records::new(&columns, "count");
            records.push(vec![
                Field::Number(result.count),
                Field::Number(u64::from(result.shards_total)),
                Field::Number(u64::from(counted)),
                Field::Text(
                    result
                        .missing_shards
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                ),
            ]);
            return records.render(format, Shape::One);
        }
    };
    text.into_bytes()
}

/// The result of `delrange`: the number of keys deleted (`{"deleted": N}`).
pub fn render_delete_range(deleted: u64, format: Format) -> Vec<u8> {
    let mut records = Records::new(&[Column::new("deleted")], "deleted");
    records.push(vec![Field::Number(deleted)]);
    records.render(format, Shape::One)
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

    fn entry(key: &[u8], value: &[u8], version: u64) -> ScanEntry {
        ScanEntry {
            expires_at_ts: None,
            key: key.to_vec(),
            value: value.to_vec(),
            version,
        }
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).expect("utf-8")
    }

    /// A scan page as JSON: entries (binary-safe), the next token as hex, missing shards;
    /// keys-only entries are keys alone.
    #[test]
    fn scan_page_json_shape() {
        let page = ScanPage {
            entries: vec![entry(b"a", b"x", 3), entry(&[0xff], &[0xfe, 0x01], 4)],
            next: Some("0a0b".parse().expect("token")),
            missing_shards: vec![],
        };
        let value: Value =
            serde_json::from_slice(&render_scan_page(&page, false, Format::Json)).expect("json");
        assert_eq!(
            value,
            json!({
                "entries": [
                    {"key": "a", "version": 3, "value": "x"},
                    {"key": null, "key_hex": "ff", "version": 4, "value": null, "value_hex": "fe01"},
                ],
                "next_page_token": "0a0b",
                "missing_shards": [],
            })
        );
        let last = ScanPage {
            entries: vec![entry(b"k", b"", 1)],
            next: None,
            missing_shards: vec![2, 5],
        };
        let value: Value =
            serde_json::from_slice(&render_scan_page(&last, true, Format::Json)).expect("json");
        assert_eq!(
            value,
            json!({"entries": [{"key": "k"}], "next_page_token": null, "missing_shards": [2, 5]})
        );
    }

    /// A scan page table lists the entries; the count and the next-page token are the
    /// footer (for stderr).
    #[test]
    fn scan_page_table() {
        let page = ScanPage {
            entries: vec![entry(b"a", b"x", 3), entry(b"bb", b"yy", 10)],
            next: Some("ff".parse().expect("token")),
            missing_shards: vec![7],
        };
        let table = text(render_scan_page(&page, false, Format::Table));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["KEY", "VERSION", "VALUE"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["bb", "10", "yy"]
        );
        assert_eq!(
            scan_page_footer(&page),
            "2 entries; next page: --page-token ff; PARTIAL: missing shards 7"
        );
        let empty = ScanPage::default();
        assert!(render_scan_page(&empty, true, Format::Table).is_empty());
        assert_eq!(scan_page_footer(&empty), "0 entries; end of range");
    }

    /// A scan page in the line formats: one JSON object, TSV row or raw value per entry;
    /// keys only with --keys-only.
    #[test]
    fn scan_page_lines() {
        let page = ScanPage {
            entries: vec![entry(b"a", b"x", 3), entry(b"b\tc", b"y\nz", 4)],
            ..ScanPage::default()
        };
        let jsonl = text(render_scan_page(&page, false, Format::Jsonl));
        let objects: Vec<Value> = jsonl
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect();
        assert_eq!(
            objects,
            [
                json!({"key": "a", "version": 3, "value": "x"}),
                json!({"key": "b\tc", "version": 4, "value": "y\nz"})
            ]
        );
        assert_eq!(
            text(render_scan_page(&page, false, Format::Tsv)),
            "key\tversion\tvalue\na\t3\tx\nb\\tc\t4\ty\\nz\n"
        );
        assert_eq!(
            text(render_scan_page(&page, true, Format::Tsv)),
            "key\na\nb\\tc\n"
        );
        assert_eq!(render_scan_page(&page, false, Format::Raw), b"x\ny\nz\n");
        assert_eq!(render_scan_page(&page, true, Format::Raw), b"a\nb\tc\n");
        assert_eq!(
            text(render_scan_page(&page, true, Format::Table)),
            "KEY\na\nb\\tc\n"
        );
    }

    /// A streamed scan as JSON is one valid document, whatever the chunking.
    #[test]
    fn scan_printer_json_document() {
        let mut out = Vec::new();
        let mut printer = ScanPrinter::new(&mut out, Format::Json, false);
        printer.begin().expect("write");
        printer
            .chunk(&ScanPage {
                entries: vec![entry(b"a", b"1", 1), entry(b"b", b"2", 2)],
                ..ScanPage::default()
            })
            .expect("write");
        printer.chunk(&ScanPage::default()).expect("write");
        printer
            .chunk(&ScanPage {
                entries: vec![entry(b"c", b"3", 3)],
                missing_shards: vec![4],
                ..ScanPage::default()
            })
            .expect("write");
        assert_eq!(printer.footer(false), None);
        printer.finish(None).expect("write");
        let value: Value = serde_json::from_slice(&out).expect("one JSON document");
        assert_eq!(value["count"], json!(3));
        assert_eq!(value["missing_shards"], json!([4]));
        assert_eq!(
            value["entries"][2],
            json!({"key": "c", "version": 3, "value": "3"})
        );
        assert!(value.get("error").is_none());

        let mut out = Vec::new();
        let mut printer = ScanPrinter::new(&mut out, Format::Json, true);
        printer.begin().expect("write");
        printer.finish(Some("unavailable: \"no leader\"")).expect("write");
        let value: Value = serde_json::from_slice(&out).expect("one JSON document");
        assert_eq!(
            value,
            json!({"entries": [], "count": 0, "missing_shards": [], "error": "unavailable: \"no leader\""})
        );
    }

    /// A streamed scan table has only entries on stdout; the footer counts them and says
    /// when it failed.
    #[test]
    fn scan_printer_table() {
        let mut out = Vec::new();
        let mut printer = ScanPrinter::new(&mut out, Format::Table, true);
        printer.begin().expect("write");
        printer
            .chunk(&ScanPage {
                entries: vec![entry(b"a", b"", 1)],
                ..ScanPage::default()
            })
            .expect("write");
        assert_eq!(
            printer.footer(true).as_deref(),
            Some("1 entry; the scan FAILED before the end of the range")
        );
        printer.finish(Some("boom")).expect("write");
        assert_eq!(text(out), "KEY\na\n");
    }

    /// A streamed TSV scan has one header line, then a row per entry across chunks.
    #[test]
    fn scan_printer_tsv() {
        let mut out = Vec::new();
        let mut printer = ScanPrinter::new(&mut out, Format::Tsv, false);
        printer.begin().expect("write");
        for (key, value) in [(b"a", b"1"), (b"b", b"2")] {
            printer
                .chunk(&ScanPage {
                    entries: vec![entry(key, value, 1)],
                    ..ScanPage::default()
                })
                .expect("write");
        }
        printer.finish(None).expect("write");
        assert_eq!(text(out), "key\tversion\tvalue\na\t1\t1\nb\t1\t2\n");
    }

    /// Counts show the shards counted, and name the missing ones.
    #[test]
    fn count_output() {
        let full = CountResult {
            count: 1234,
            shards_total: 16,
            missing_shards: vec![],
        };
        let table = text(render_count(&full, Format::Table));
        assert_eq!(
            table
                .lines()
                .nth(1)
                .map(|line| line.split_whitespace().collect::<Vec<_>>()),
            Some(vec!["1234", "16/16"])
        );
        let partial = CountResult {
            count: 10,
            shards_total: 4,
            missing_shards: vec![1, 3],
        };
        assert!(text(render_count(&partial, Format::Table)).contains("1, 3"));
        let expected = json!({"count": 10, "shards_total": 4, "shards_counted": 2, "missing_shards": [1, 3]});
        for format in [Format::Json, Format::Jsonl] {
            let value: Value = serde_json::from_slice(&render_count(&partial, format)).expect("json");
            assert_eq!(value, expected, "{format:?}");
        }
        assert_eq!(
            text(render_count(&partial, Format::Tsv)),
            "count\tshards_total\tshards_counted\tmissing_shards\n10\t4\t2\t1,3\n"
        );
        assert_eq!(render_count(&partial, Format::Raw), b"10\n");
        assert_eq!(
            partial_warning(&[1, 3]),
            "warning: partial result: shards 1, 3 did not answer"
        );
    }

    /// The `delrange` summary.
    #[test]
    fn delrange_output() {
        let value: Value = serde_json::from_slice(&render_delete_range(42, Format::Json)).expect("json");
        assert_eq!(value, json!({"deleted": 42}));
        assert!(text(render_delete_range(42, Format::Table)).ends_with("42\n"));
        assert_eq!(render_delete_range(42, Format::Raw), b"42\n");
    }
}
