//! `kvctl watch`: prints the changes of a key, a range or a prefix as they commit, from now
//! or from a revision (an oracle timestamp, as events and `kvctl timestamp` show), until
//! interrupted or `--limit` events. The client library resumes a broken watch from each
//! shard's progress, so no event is printed twice or left out.
//!
//! The targets are etcdctl's: `watch KEY` (that key), `watch KEY END` (the range `[KEY,
//! END)`, as `scan START END` spells a range) and `watch --prefix P`, with `--hex` for all
//! three as on the range commands. Every `-o` format is a stream of one event per line:
//! `table` a line for people, `json` and `jsonl` a JSON object, `tsv` a row under a header
//! line, `raw` the bare value (the key with `--keys-only`; an empty line for a delete).

use std::ffi::OsString;

use anyhow::Context;
use clap::Args;
use futures::TryStreamExt;
use ringkv_client::{Client, WatchEvent, WatchEventKind, WatchOptions, WatchTarget};

use crate::exit::{Outcome, UsageError};
use crate::output::{self, display_bytes, Column, Field, Format, Records};
use crate::value::decode_arg;

/// Arguments of `kvctl watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The key to watch; with END, the first key of the range.
    #[arg(required_unless_present = "prefix", conflicts_with = "prefix")]
    pub key: Option<OsString>,
    /// Watch the range [KEY, END) instead of KEY alone (END excluded, as etcdctl's
    /// RANGE_END).
    pub end: Option<OsString>,
    /// Watch every key starting with PREFIX ("" for every key; instead of KEY and END).
    /// Lease records (__ringkv/) are left out unless PREFIX lies inside __ringkv/.
    #[arg(long, value_name = "PREFIX", conflicts_with_all = ["key", "end"])]
    pub prefix: Option<OsString>,
    /// KEY, END and PREFIX are hex-encoded.
    #[arg(long)]
    pub hex: bool,
    /// Print the changes committed after this revision first (an oracle timestamp; a
    /// revision older than the cluster's history is refused, naming where it can resume).
    #[arg(long, value_name = "R")]
    pub from_revision: Option<u64>,
    /// Leave values out.
    #[arg(long)]
    pub keys_only: bool,
    /// Stop after this many events.
    #[arg(long)]
    pub limit: Option<u64>,
}

impl WatchArgs {
    /// What to watch: `--prefix`, `KEY END` as a range, or `KEY` alone.
    fn target(&self) -> Result<WatchTarget, UsageError> {
        let hex = self.hex;
        if let Some(prefix) = &self.prefix {
            return Ok(WatchTarget::Prefix(decode_arg("PREFIX", prefix.clone(), hex)?));
        }
        let key = match &self.key {
            Some(key) => decode_arg("KEY", key.clone(), hex)?,
            None => Vec::new(),
        };
        let Some(end) = &self.end else {
            if key.is_empty() {
                return Err(UsageError(
                    "watch needs a non-empty KEY, KEY END or --prefix P".into(),
                ));
            }
            return Ok(WatchTarget::Key(key));
        };
        let end = decode_arg("END", end.clone(), hex)?;
        if end.is_empty() {
            return Err(UsageError(
                "END must not be empty (for every key from KEY on, watch --prefix \"\" or a range)".into(),
            ));
        }
        if key >= end {
            return Err(UsageError(
                "KEY must come before END (the range [KEY, END) is empty otherwise)".into(),
            ));
        }
        Ok(WatchTarget::Range { start: key, end })
    }
}

/// `kvctl watch`: one line per event, in the format `-o` asks for (see the module docs).
pub async fn run(client: &Client, args: WatchArgs, format: Format) -> anyhow::Result<Outcome> {
    let target = args.target()?;
    if args.limit == Some(0) {
        return Err(UsageError("--limit must be at least 1".to_string()).into());
    }
    let options = WatchOptions::new(target)
        .after(args.from_revision.unwrap_or(0))
        .keys_only(args.keys_only);
    if format == Format::Tsv {
        output::emit_raw(&event_records(&[], args.keys_only).lines(Format::Tsv, true))?;
    }
    let mut events = client.watch(options);
    let mut printed = 0u64;
    while let Some(event) = events.try_next().await.context("watch")? {
        output::emit_raw(&render_event(&event, args.keys_only, format))?;
        printed += 1;
        if args.limit.is_some_and(|limit| printed >= limit) {
            break;
        }
    }
    Ok(Outcome::Success)
}

/// One event as its line (newline included) in `format`; TSV without its header.
fn render_event(event: &WatchEvent, keys_only: bool, format: Format) -> Vec<u8> {
    match format {
        Format::Table => {
            let mut line = event_line(event);
            line.push('\n');
            line.into_bytes()
        }
        // A watch is a stream: `json` prints the lines `jsonl` does, one object per event.
        Format::Json | Format::Jsonl => {
            event_records(std::slice::from_ref(event), keys_only).lines(Format::Jsonl, false)
        }
        Format::Tsv | Format::Raw => {
            event_records(std::slice::from_ref(event), keys_only).lines(format, false)
        }
    }
}

/// `PUT key = value (version V, revision R)` or `DELETE key (revision R)`.
fn event_line(event: &WatchEvent) -> String {
    match event.kind {
        WatchEventKind::Put => format!(
            "PUT {} = {} (version {}, revision {})",
            display_bytes(&event.key),
            display_bytes(&event.value),
            event.version,
            event.commit_ts
        ),
        WatchEventKind::Delete => format!(
            "DELETE {} (revision {})",
            display_bytes(&event.key),
            event.commit_ts
        ),
    }
}

/// Events as records: `type` (`put`/`delete`), `key`, `value` (not with `keys_only`),
/// `version` and `value` absent for a delete, `revision`, `shard` (non-UTF-8 bytes in JSON
/// as `key_hex`, `value_hex`). Raw output is the values (the keys with `keys_only`).
fn event_records(events: &[WatchEvent], keys_only: bool) -> Records {
    let mut columns = vec![Column::new("type"), Column::new("key")];
    if !keys_only {
        columns.push(Column::new("value"));
    }
    columns.extend([
        Column::new("version"),
        Column::new("revision"),
        Column::new("shard"),
    ]);
    let mut records = Records::new(&columns, if keys_only { "key" } else { "value" });
    for event in events {
        let put = event.kind == WatchEventKind::Put;
        let mut row = vec![
            Field::Text(if put { "put" } else { "delete" }.to_string()),
            Field::Bytes(event.key.clone()),
        ];
        if !keys_only {
            row.push(if put {
                Field::Bytes(event.value.clone())
            } else {
                Field::Absent
            });
        }
        row.push(if put {
            Field::Number(event.version)
        } else {
            Field::Absent
        });
        row.push(Field::Number(event.commit_ts));
        row.push(Field::Number(u64::from(event.shard_id)));
        records.push(row);
    }
    records
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn event(kind: WatchEventKind) -> WatchEvent {
        WatchEvent {
            kind,
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            version: 7,
            commit_ts: 99,
            shard_id: 2,
        }
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).expect("utf-8")
    }

    /// Every format prints one line per event: lines for people, JSON objects, TSV rows,
    /// bare values; a delete has no value and no version.
    #[test]
    fn events_print_in_every_format() {
        let put = event(WatchEventKind::Put);
        let delete = event(WatchEventKind::Delete);
        assert_eq!(
            text(render_event(&put, false, Format::Table)),
            "PUT k = v (version 7, revision 99)\n"
        );
        assert_eq!(
            text(render_event(&delete, false, Format::Table)),
            "DELETE k (revision 99)\n"
        );
        for format in [Format::Json, Format::Jsonl] {
            let line = text(render_event(&put, false, format));
            assert_eq!(line.lines().count(), 1, "{line}");
            let json: serde_json::Value = serde_json::from_str(&line).expect("json");
            assert_eq!(json["type"], "put");
            assert_eq!(json["key"], "k");
            assert_eq!(json["value"], "v");
            assert_eq!(json["version"], 7);
            assert_eq!(json["revision"], 99);
            assert_eq!(json["shard"], 2);
            let json: serde_json::Value =
                serde_json::from_str(&text(render_event(&delete, false, format))).expect("json");
            assert_eq!(json["type"], "delete");
            assert!(json.get("value").is_none() && json.get("version").is_none());
        }
        assert_eq!(
            text(event_records(&[], false).lines(Format::Tsv, true)),
            "type\tkey\tvalue\tversion\trevision\tshard\n"
        );
        assert_eq!(
            text(render_event(&put, false, Format::Tsv)),
            "put\tk\tv\t7\t99\t2\n"
        );
        assert_eq!(
            text(render_event(&delete, false, Format::Tsv)),
            "delete\tk\t\t\t99\t2\n"
        );
        assert_eq!(text(render_event(&put, false, Format::Raw)), "v\n");
        assert_eq!(text(render_event(&delete, false, Format::Raw)), "\n");
        assert_eq!(text(render_event(&put, true, Format::Raw)), "k\n");
        assert_eq!(text(render_event(&put, true, Format::Tsv)), "put\tk\t7\t99\t2\n");
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: WatchArgs,
    }

    fn target(args: &[&str]) -> Result<WatchTarget, String> {
        let cli = Cli::try_parse_from(std::iter::once("watch").chain(args.iter().copied()))
            .map_err(|err| err.kind().to_string())?;
        cli.args.target().map_err(|err| err.0)
    }

    /// KEY alone is the key, KEY END the range (etcdctl's RANGE_END), --prefix the prefix,
    /// each hex-encoded with --hex; empty or reversed ranges are usage errors.
    #[test]
    fn targets_are_a_key_a_range_or_a_prefix() {
        assert_eq!(target(&["a"]), Ok(WatchTarget::Key(b"a".to_vec())));
        assert_eq!(
            target(&["a", "c"]),
            Ok(WatchTarget::Range {
                start: b"a".to_vec(),
                end: b"c".to_vec()
            })
        );
        assert_eq!(
            target(&["--hex", "00", "ff"]),
            Ok(WatchTarget::Range {
                start: vec![0],
                end: vec![0xff]
            })
        );
        assert_eq!(
            target(&["--prefix", "p/"]),
            Ok(WatchTarget::Prefix(b"p/".to_vec()))
        );
        assert_eq!(target(&["--prefix", ""]), Ok(WatchTarget::Prefix(Vec::new())));
        assert!(target(&["c", "a"]).is_err(), "reversed");
        assert!(target(&["a", "a"]).is_err(), "empty");
        assert!(target(&["a", ""]).is_err(), "empty END");
        assert!(target(&[""]).is_err(), "empty KEY");
        assert!(target(&["a", "--prefix", "p"]).is_err(), "both");
        assert!(target(&[]).is_err(), "nothing");
    }
}
