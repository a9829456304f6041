//! The Prometheus text exposition format (version 0.0.4), written one family at a time.

use std::fmt::Write;

use crate::histogram::Snapshot;

/// A family's type, as its `# TYPE` line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The text of one scrape. Families are written whole, one after the other: a [`Family`]
/// borrows the exposition until its samples are written, so no two interleave.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts family `name` (its `# HELP` and `# TYPE` lines). A counter's name ends in
    /// `_total`; `name` and `help` are ours (static), never input.
    pub fn family(&mut self, name: &'static str, kind: Kind, help: &'static str) -> Family<'_> {
        debug_assert!(kind != Kind::Counter || name.ends_with("_total"), "{name}");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.as_str());
        Family {
            text: &mut self.text,
            name,
        }
    }

    /// The exposition's text.
    pub fn finish(self) -> String {
        self.text
    }
}

/// One family being written.
pub struct Family<'a> {
    text: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    /// One sample of a counter or gauge with `labels` (values escaped here).
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        write_sample(self.text, self.name, "", labels, None, value);
        self
    }

    /// The samples of one histogram with `labels`: cumulative buckets, `+Inf`, sum, count.
    pub fn histogram(&mut self, labels: &[(&str, &str)], snapshot: &Snapshot) -> &mut Self {
        let mut cumulative = 0u64;
        for (bound, count) in snapshot.bounds.iter().zip(&snapshot.counts) {
            cumulative += count;
            write_sample(
                self.text,
                self.name,
                "_bucket",
                labels,
                Some(*bound),
                cumulative as f64,
            );
        }
        let total = snapshot.count();
        write_sample(
            self.text,
            self.name,
            "_bucket",
            labels,
            Some(f64::INFINITY),
            total as f64,
        );
        write_sample(self.text, self.name, "_sum", labels, None, snapshot.sum);
        write_sample(self.text, self.name, "_count", labels, None, total as f64);
        self
    }
}

fn write_sample(
    text: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&str, &str)],
    le: Option<f64>,
    value: f64,
) {
    text.push_str(name);
    text.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        text.push('{');
        let mut first = true;
        for (label, label_value) in labels {
            if !first {
                text.push(',');
            }
            first = false;
            text.push_str(label);
            text.push_str("=\"");
            escape_into(text, label_value);
            text.push('"');
        }
        if let Some(le) = le {
            if !first {
                text.push(',');
            }
            text.push_str("le=\"");
            write_value(text, le);
            text.push('"');
        }
        text.push('}');
    }
    text.push(' ');
    write_value(text, value);
    text.push('\n');
}

/// A sample value: integers without a fraction, `+Inf`/`-Inf`/`NaN` spelled as Prometheus
/// spells them.
fn write_value(text: &mut String, value: f64) {
    if value.is_nan() {
        text.push_str("NaN");
    } else if value == f64::INFINITY {
        text.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        text.push_str("-Inf");
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        let _ = write!(text, "{}", value as i64);
    } else {
        let _ = write!(text, "{value}");
    }
}

/// A label value escaped: backslash, double quote and line feed.
fn escape_into(text: &mut String, value: &str) {
    for character in value.chars() {
        match character {
            '\\' => text.push_str("\\\\"),
            '"' => text.push_str("\\\""),
            '\n' => text.push_str("\\n"),
            other => text.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check_exposition;

    /// Families, labels (escaped), values and histograms come out as Prometheus reads them.
    #[test]
    fn writes_the_text_format() {
        static BOUNDS: [f64; 2] = [0.5, 1.0];
        let mut exposition = Exposition::new();
        exposition
            .family("ringkv_things_total", Kind::Counter, "Things.")
            .sample(&[("kind", "a\"b\\c\nd")], 3.0)
            .sample(&[], 4.0);
        exposition
            .family("ringkv_level", Kind::Gauge, "A level.")
            .sample(&[("group", "7")], 0.25)
            .sample(&[("group", "8")], f64::NAN);
        exposition
            .family("ringkv_wait_seconds", Kind::Histogram, "Waits.")
            .histogram(&[("op", "get")], &Snapshot::new(&BOUNDS, vec![1, 2, 3], 4.5));
        let text = exposition.finish();
        let expected = "\
# HELP ringkv_things_total Things.
# TYPE ringkv_things_total counter
ringkv_things_total{kind=\"a\\\"b\\\\c\\nd\"} 3
ringkv_things_total 4
# HELP ringkv_level A level.
# TYPE ringkv_level gauge
ringkv_level{group=\"7\"} 0.25
ringkv_level{group=\"8\"} NaN
# HELP ringkv_wait_seconds Waits.
# TYPE ringkv_wait_seconds histogram
ringkv_wait_seconds_bucket{op=\"get\",le=\"0.5\"} 1
ringkv_wait_seconds_bucket{op=\"get\",le=\"1\"} 3
ringkv_wait_seconds_bucket{op=\"get\",le=\"+Inf\"} 6
ringkv_wait_seconds_sum{op=\"get\"} 4.5
ringkv_wait_seconds_count{op=\"get\"} 6
";
        assert_eq!(text, expected);
        check_exposition(&text).expect("valid exposition");
    }
}
