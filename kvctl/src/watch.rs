//! `kvctl watch`: prints the changes of a key or a prefix as they commit, from now or from
//! a revision (an oracle timestamp, as events and `kvctl timestamp` show), until
//! interrupted or `--limit` events. The client library resumes a broken watch from each
//! shard's progress, so no event is printed twice or left out.

use anyhow::Context;
use clap::Args;
use futures::TryStreamExt;
use ringkv_client::{Client, WatchEvent, WatchEventKind, WatchOptions, WatchTarget};
use serde_json::Value;

use crate::exit::{Outcome, UsageError};
use crate::output::{self, display_bytes, insert_bytes, keyed_object, Format};

/// Arguments of `kvctl watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The key to watch.
    #[arg(required_unless_present = "prefix", conflicts_with = "prefix")]
    pub key: Option<String>,
    /// Watch every key starting with this prefix ("" for every key).
    #[arg(long)]
    pub prefix: Option<String>,
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

/// `kvctl watch`: one line per event (a JSON object per line with `-o json` or `-o jsonl`).
pub async fn run(client: &Client, args: WatchArgs, format: Format) -> anyhow::Result<Outcome> {
    let json = match format {
        Format::Table => false,
        Format::Json | Format::Jsonl => true,
        Format::Tsv | Format::Raw => {
            return Err(UsageError(format!(
                "-o {} is not for `watch`: it prints lines (table) or JSON lines (json, jsonl)",
                format.name()
            ))
            .into())
        }
    };
    let target = match (args.key, args.prefix) {
        (_, Some(prefix)) => WatchTarget::Prefix(prefix.into_bytes()),
        (Some(key), None) if !key.is_empty() => WatchTarget::Key(key.into_bytes()),
        _ => return Err(UsageError("watch needs a non-empty KEY or --prefix P".to_string()).into()),
    };
    if args.limit == Some(0) {
        return Err(UsageError("--limit must be at least 1".to_string()).into());
    }
    let options = WatchOptions::new(target)
        .after(args.from_revision.unwrap_or(0))
        .keys_only(args.keys_only);
    let mut events = client.watch(options);
    let mut printed = 0u64;
    while let Some(event) = events.try_next().await.context("watch")? {
        let line = if json {
            event_json(&event).to_string()
        } else {
            event_line(&event)
        };
        output::emit(&line)?;
        printed += 1;
        if args.limit.is_some_and(|limit| printed >= limit) {
            break;
        }
    }
    Ok(Outcome::Success)
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

/// `{"type", "key", "value", "version", "revision", "shard"}` (non-UTF-8 bytes as
/// `key_hex`, `value_hex`).
fn event_json(event: &WatchEvent) -> Value {
    let mut object = keyed_object(&event.key);
    let kind = match event.kind {
        WatchEventKind::Put => "put",
        WatchEventKind::Delete => "delete",
    };
    object.insert("type".to_string(), Value::from(kind));
    if event.kind == WatchEventKind::Put {
        insert_bytes(&mut object, "value", &event.value);
        object.insert("version".to_string(), Value::from(event.version));
    }
    object.insert("revision".to_string(), Value::from(event.commit_ts));
    object.insert("shard".to_string(), Value::from(event.shard_id));
    Value::Object(object)
}

#[cfg(test)]
mod tests {
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

    /// Lines for people and JSON lines for scripts carry the kind, key, value, version
    /// and revision.
    #[test]
    fn events_print_as_lines_and_json() {
        assert_eq!(
            event_line(&event(WatchEventKind::Put)),
            "PUT k = v (version 7, revision 99)"
        );
        assert_eq!(
            event_line(&event(WatchEventKind::Delete)),
            "DELETE k (revision 99)"
        );
        let json = event_json(&event(WatchEventKind::Put));
        assert_eq!(json["type"], "put");
        assert_eq!(json["value"], "v");
        assert_eq!(json["revision"], 99);
        let json = event_json(&event(WatchEventKind::Delete));
        assert_eq!(json["type"], "delete");
        assert!(json.get("value").is_none());
    }
}
