//! Repeated warnings and errors from the crates ringkv builds on, rate-limited: an event
//! format that writes the same WARN or ERROR event (same call site) of a third-party crate
//! (openraft, tonic, h2, sled …) at most once per interval, and says on the next one it
//! writes how many it suppressed (`… (and 12 more like it, not shown)`; in JSON a
//! `"suppressed": 12` field). A peer that stays down otherwise fills the log with one
//! openraft ERROR per group and election round.
//!
//! Which events are limited is the [`Scope`]: a node limits only third-party crates (its own
//! call sites know what repeats and throttle it where they log, gossip's dropped datagrams
//! for one, and tests read some of their lines); a router limits every WARN and ERROR call
//! site, its own included (one `request failed` per failed request would otherwise flood
//! the log while a node is down). Installed by the binary; the libraries never initialise
//! tracing.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Default: one line per call site and 10 s.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(10);

/// Most call sites remembered (call sites are static, so a bound is only a guard).
const MAX_CALL_SITES: usize = 4096;

/// What to do with one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; `suppressed` events of its call site were dropped since the last written.
    Write { suppressed: u64 },
    /// Drop it (counted).
    Suppress,
}

/// The decision, without IO: per key, the first event of each interval is written.
#[derive(Debug)]
pub struct Limiter<K> {
    interval: Duration,
    windows: HashMap<K, Window>,
}

#[derive(Debug)]
struct Window {
    written_at: Instant,
    suppressed: u64,
}

impl<K: std::hash::Hash + Eq> Limiter<K> {
    /// At most one event per key and `interval`.
    pub fn new(interval: Duration) -> Self {
        Limiter {
            interval,
            windows: HashMap::new(),
        }
    }

    /// The verdict on an event of `key` at `now`.
    pub fn check(&mut self, key: K, now: Instant) -> Verdict {
        if self.windows.len() >= MAX_CALL_SITES && !self.windows.contains_key(&key) {
            return Verdict::Write { suppressed: 0 };
        }
        let window = match self.windows.entry(key) {
            std::collections::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(Window {
                    written_at: now,
                    suppressed: 0,
                });
                return Verdict::Write { suppressed: 0 };
            }
            std::collections::hash_map::Entry::Occupied(occupied) => occupied.into_mut(),
        };
        if now.saturating_duration_since(window.written_at) < self.interval {
            window.suppressed += 1;
            return Verdict::Suppress;
        }
        let suppressed = std::mem::take(&mut window.suppressed);
        window.written_at = now;
        Verdict::Write { suppressed }
    }
}

/// Which WARN and ERROR events a [`RateLimited`] format limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Those of crates other than ringkv's (targets not starting with `ringkv`).
    ThirdParty,
    /// All of them, ringkv's own included.
    Everything,
}

/// An event format that rate-limits the WARN and ERROR events of its [`Scope`] and formats
/// the rest with `inner`. A written event after suppressed ones says how many (`json`: as a
/// field of its object).
#[derive(Debug)]
pub struct RateLimited<F> {
    inner: F,
    json: bool,
    scope: Scope,
    limiter: Mutex<Limiter<Identifier>>,
}

impl<F> RateLimited<F> {
    /// `inner` behind a limit of one event per call site of `scope` and `interval`;
    /// `json`: `inner` writes one JSON object per line (the count goes in as a field).
    pub fn new(inner: F, json: bool, scope: Scope, interval: Duration) -> Self {
        RateLimited {
            inner,
            json,
            scope,
            limiter: Mutex::new(Limiter::new(interval)),
        }
    }
}

/// Whether events of `target` at `level` are rate-limited in `scope`.
pub fn is_limited(scope: Scope, target: &str, level: Level) -> bool {
    level <= Level::WARN && (scope == Scope::Everything || !target.starts_with("ringkv"))
}

impl<S, N, F> FormatEvent<S, N> for RateLimited<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        if !is_limited(self.scope, metadata.target(), *metadata.level()) {
            return self.inner.format_event(ctx, writer, event);
        }
        let verdict = match self.limiter.lock() {
            Ok(mut limiter) => limiter.check(metadata.callsite(), Instant::now()),
            // A panic while another event held the lock: write everything.
            Err(_) => Verdict::Write { suppressed: 0 },
        };
        match verdict {
            // Nothing written: the fmt layer writes no line.
            Verdict::Suppress => Ok(()),
            Verdict::Write { suppressed: 0 } => self.inner.format_event(ctx, writer, event),
            Verdict::Write { suppressed } => {
                // The event on one line, with the count: `… (and 12 more like it)`, or a
                // `"suppressed": 12` field in JSON.
                let mut line = String::new();
                self.inner.format_event(ctx, Writer::new(&mut line), event)?;
                let body = line.trim_end_matches('\n');
                match body.strip_suffix('}').filter(|_| self.json) {
                    Some(open) => writeln!(writer, "{open},\"suppressed\":{suppressed}}}"),
                    None => writeln!(writer, "{body} (and {suppressed} more like it, not shown)"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first event of a key is written, repeats within the interval are counted, and
    /// the next one after it says how many were dropped; keys are independent.
    #[test]
    fn one_per_interval_with_the_count() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut limiter = Limiter::new(10 * second);
        assert_eq!(limiter.check("a", start), Verdict::Write { suppressed: 0 });
        assert_eq!(limiter.check("a", start), Verdict::Suppress);
        assert_eq!(limiter.check("a", start + 9 * second), Verdict::Suppress);
        assert_eq!(
            limiter.check("b", start + 9 * second),
            Verdict::Write { suppressed: 0 }
        );
        assert_eq!(
            limiter.check("a", start + 10 * second),
            Verdict::Write { suppressed: 2 }
        );
        assert_eq!(limiter.check("a", start + 11 * second), Verdict::Suppress);
        assert_eq!(
            limiter.check("a", start + 25 * second),
            Verdict::Write { suppressed: 1 }
        );
        assert_eq!(
            limiter.check("a", start + 40 * second),
            Verdict::Write { suppressed: 0 }
        );
    }

    /// Captures what the fmt layer writes.
    struct Capture(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("capture lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Through the fmt layer: repeats of a third-party error within the interval write
    /// nothing, not even an empty line; ringkv's own errors are all written.
    #[test]
    fn repeats_write_nothing() {
        let captured = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = captured.clone();
        let inner = tracing_subscriber::fmt::format().with_ansi(false);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Capture(sink.clone()))
            .with_ansi(false)
            .event_format(RateLimited::new(
                inner,
                false,
                Scope::ThirdParty,
                Duration::from_secs(3600),
            ))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for attempt in 0..3 {
                tracing::error!(target: "openraft::replication", attempt, "peer unreachable");
                tracing::error!(target: "ringkv_node::server", attempt, "our own");
            }
        });
        let text = String::from_utf8(captured.lock().expect("capture lock").clone()).expect("utf-8");
        assert_eq!(text.matches("peer unreachable").count(), 1, "{text}");
        assert_eq!(text.matches("our own").count(), 3, "{text}");
        assert_eq!(text.lines().count(), 4, "no empty lines: {text}");
    }

    /// Only WARN and ERROR events are limited; ringkv's own only in `Scope::Everything`.
    #[test]
    fn warnings_and_errors_of_the_scope_only() {
        use Scope::{Everything, ThirdParty};
        assert!(is_limited(ThirdParty, "openraft::core::raft_core", Level::ERROR));
        assert!(is_limited(ThirdParty, "h2::proto", Level::WARN));
        assert!(!is_limited(ThirdParty, "openraft::core", Level::INFO));
        assert!(!is_limited(ThirdParty, "ringkv_node::server", Level::ERROR));
        assert!(is_limited(Everything, "ringkv_router::kv_service", Level::WARN));
        assert!(is_limited(Everything, "h2::proto", Level::WARN));
        assert!(!is_limited(Everything, "ringkv_router::kv_service", Level::INFO));
    }
}
