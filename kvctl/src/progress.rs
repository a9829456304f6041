//! Progress bars on stderr (indicatif), drawn only when stderr is a terminal so they
//! never mix with redirected output or logs.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{HumanCount, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a spinner moves while nothing else changes.
const TICK: Duration = Duration::from_millis(120);

/// `mput`: keys loaded of the total, the rate (the message, see [`rate_message`]) and
/// the ETA.
pub const LOAD_TEMPLATE: &str =
    "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} keys  {msg}  eta {eta}";
/// `count`: the running count and shards done in the message (see [`count_message`]).
pub const COUNT_TEMPLATE: &str = "{spinner} counting: {msg}  [{elapsed}]";

/// `check perf`: puts started of the run's total.
pub const CHECK_TEMPLATE: &str = "{spinner} check perf: {wide_bar} {human_pos}/{human_len} puts  [{elapsed}]";

/// `txn-gc`: shards done of the phase, the phase and its counts in the message (see
/// [`gc_message`]).
pub const GC_TEMPLATE: &str = "{spinner} txn-gc: {wide_bar} shards {pos}/{len}  {msg}  [{elapsed}]";

/// `purge: 3 locks resolved, 1,234 records collected`.
pub fn gc_message(phase: &str, locks_resolved: u64, records_purged: u64) -> String {
    format!(
        "{phase}: {} locks resolved, {} records collected",
        HumanCount(locks_resolved),
        HumanCount(records_purged)
    )
}

/// `1,234 keys/s` from a bar's position and elapsed time.
pub fn rate_message(bar: &ProgressBar) -> String {
    let seconds = bar.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = if seconds > 0.0 {
        bar.position() as f64 / seconds
    } else {
        0.0
    };
    format!("{} keys/s", HumanCount(rate.round() as u64))
}

/// `1,234 keys so far, shards 3/16`.
pub fn count_message(count: u64, shards_done: u32, shards_total: u32) -> String {
    format!(
        "{} keys so far, shards {shards_done}/{shards_total}",
        HumanCount(count)
    )
}

/// A progress bar with `template` on stderr, or a hidden one when stderr is not a
/// terminal. `len` is `None` when the total is not known yet.
pub fn bar(len: Option<u64>, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr()).with_style(style);
    bar.enable_steady_tick(TICK);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every template parses (a typo would silently fall back to the default style).
    #[test]
    fn templates_parse() {
        for template in [LOAD_TEMPLATE, COUNT_TEMPLATE, GC_TEMPLATE, CHECK_TEMPLATE] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }

    /// Messages use thousands separators.
    #[test]
    fn messages() {
        assert_eq!(count_message(1234, 3, 16), "1,234 keys so far, shards 3/16");
        assert_eq!(rate_message(&ProgressBar::hidden()), "0 keys/s");
        assert_eq!(
            gc_message("purge", 3, 1234),
            "purge: 3 locks resolved, 1,234 records collected"
        );
    }
}
