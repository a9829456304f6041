//! A strict reader of the Prometheus text format: what a scrape of ours must satisfy.
//!
//! Every line is a `# HELP`/`# TYPE` line or a sample `name{label="value",...} value`;
//! names and label names match Prometheus's grammar, label values use only its escapes,
//! values are floats (or `+Inf`, `-Inf`, `NaN`); a family's `# TYPE` comes before its
//! samples and once; a family's samples are contiguous; a histogram's samples are its
//! `_bucket` (with `le`), `_sum` and `_count`; the text ends with a line feed.

use std::collections::HashSet;

/// Where and why a text is not valid exposition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpositionError {
    /// 1-based line number.
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for ExpositionError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for ExpositionError {}

/// Checks `text` line by line (see the module docs); the first fault is the error.
pub fn check_exposition(text: &str) -> Result<(), ExpositionError> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(ExpositionError {
            line: text.lines().count(),
            reason: "the text does not end with a line feed".to_string(),
        });
    }
    let mut reader = Reader::default();
    for (index, line) in text.lines().enumerate() {
        reader.line(line).map_err(|reason| ExpositionError {
            line: index + 1,
            reason,
        })?;
    }
    Ok(())
}

#[derive(Default)]
struct Reader {
    /// The family whose samples may follow, and its type.
    current: Option<(String, String)>,
    /// Families already started (a family is typed once, its samples contiguous).
    seen: HashSet<String>,
}

impl Reader {
    fn line(&mut self, line: &str) -> Result<(), String> {
        if line.is_empty() {
            return Ok(());
        }
        if let Some(comment) = line.strip_prefix('#') {
            return self.comment(comment);
        }
        self.sample(line)
    }

    fn comment(&mut self, comment: &str) -> Result<(), String> {
        let mut words = comment.trim_start().splitn(3, ' ');
        match words.next() {
            Some("HELP") => {
                let name = words.next().unwrap_or_default();
                check_metric_name(name)
            }
            Some("TYPE") => {
                let name = words.next().unwrap_or_default();
                check_metric_name(name)?;
                let kind = words.next().unwrap_or_default();
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                    return Err(format!("unknown type {kind:?} of {name}"));
                }
                if !self.seen.insert(name.to_string()) {
                    return Err(format!("family {name} typed twice or not contiguous"));
                }
                self.current = Some((name.to_string(), kind.to_string()));
                Ok(())
            }
            // Any other comment is allowed.
            _ => Ok(()),
        }
    }

    fn sample(&mut self, line: &str) -> Result<(), String> {
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| format!("no value in {line:?}"))?;
        let name = &line[..name_end];
        check_metric_name(name)?;
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end + 1..])?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| format!("no space before the value of {name}"))?;
        let mut fields = rest.split(' ');
        let value = fields.next().unwrap_or_default();
        check_value(value)?;
        if let Some(timestamp) = fields.next() {
            timestamp
                .parse::<i64>()
                .map_err(|_| format!("bad timestamp {timestamp:?} of {name}"))?;
        }
        if fields.next().is_some() {
            return Err(format!("trailing text after the sample of {name}"));
        }
        self.check_family(name, &labels)
    }

    /// The sample belongs to the family typed last.
    fn check_family(&self, name: &str, labels: &[String]) -> Result<(), String> {
        let Some((family, kind)) = &self.current else {
            return Err(format!("sample {name} before any # TYPE"));
        };
        let belongs = match kind.as_str() {
            "histogram" => {
                if name == format!("{family}_bucket") {
                    if !labels.iter().any(|label| label == "le") {
                        return Err(format!("bucket of {family} without le"));
                    }
                    true
                } else {
                    name == format!("{family}_sum") || name == format!("{family}_count")
                }
            }
            "summary" => {
                name == family || name == format!("{family}_sum") || name == format!("{family}_count")
            }
            _ => name == family,
        };
        if !belongs {
            return Err(format!("sample {name} is not of family {family} ({kind})"));
        }
        if kind == "counter" && !name.ends_with("_total") {
            return Err(format!("counter {name} does not end in _total"));
        }
        Ok(())
    }
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let mut characters = name.chars();
    let first_ok = characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':');
    if first_ok && characters.all(|rest| rest.is_ascii_alphanumeric() || rest == '_' || rest == ':') {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

fn check_label_name(name: &str) -> Result<(), String> {
    let mut characters = name.chars();
    let first_ok = characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_');
    if first_ok && characters.all(|rest| rest.is_ascii_alphanumeric() || rest == '_') {
        Ok(())
    } else {
        Err(format!("bad label name {name:?}"))
    }
}

fn check_value(value: &str) -> Result<(), String> {
    if ["+Inf", "-Inf", "NaN"].contains(&value) || value.parse::<f64>().is_ok_and(f64::is_finite) {
        Ok(())
    } else {
        Err(format!("bad value {value:?}"))
    }
}

/// Reads `name="value",...}` (after the `{`): the label names, and the text after `}`.
fn parse_labels(text: &str) -> Result<(Vec<String>, &str), String> {
    let mut names = Vec::new();
    let mut rest = text;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((names, after));
        }
        let equals = rest.find('=').ok_or("a label without '='")?;
        let name = &rest[..equals];
        check_label_name(name)?;
        if names.iter().any(|seen| seen == name) {
            return Err(format!("label {name} twice"));
        }
        names.push(name.to_string());
        rest = rest[equals + 1..]
            .strip_prefix('"')
            .ok_or_else(|| format!("label {name}'s value is not quoted"))?;
        let mut characters = rest.char_indices();
        let end = loop {
            match characters.next() {
                None => return Err(format!("label {name}'s value is not closed")),
                Some((_, '\\')) => match characters.next() {
                    Some((_, '\\' | '"' | 'n')) => {}
                    _ => return Err(format!("bad escape in label {name}'s value")),
                },
                Some((_, '\n')) => return Err(format!("a line feed in label {name}'s value")),
                Some((index, '"')) => break index,
                Some(_) => {}
            }
        };
        rest = &rest[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(format!("expected ',' or '}}' after label {name}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each malformed text is refused at the line that breaks the format (table: case, text,
    /// line).
    #[test]
    fn refuses_malformed_texts() {
        let cases: [(&str, &str, usize); 11] = [
            ("no TYPE", "a_total 1\n", 1),
            ("bad name", "# TYPE 1a gauge\n", 1),
            ("bad value", "# TYPE a gauge\na x\n", 2),
            ("unquoted label", "# TYPE a gauge\na{b=c} 1\n", 2),
            ("bad escape", "# TYPE a gauge\na{b=\"\\x\"} 1\n", 2),
            ("unclosed labels", "# TYPE a gauge\na{b=\"c\" 1\n", 2),
            ("other family", "# TYPE a gauge\nb 1\n", 2),
            ("counter without _total", "# TYPE a counter\na 1\n", 2),
            (
                "bucket without le",
                "# TYPE h histogram\nh_bucket{x=\"1\"} 1\n",
                2,
            ),
            (
                "family twice",
                "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# TYPE a gauge\n",
                5,
            ),
            ("no final line feed", "# TYPE a gauge\na 1", 2),
        ];
        for (index, (case, text, line)) in cases.iter().enumerate() {
            let error = check_exposition(text).expect_err(&format!("case {index} ({case}) is refused"));
            assert_eq!(error.line, *line, "case {index} ({case}): {error}");
        }
    }

    /// Well-formed texts pass, timestamps and other comments included.
    #[test]
    fn accepts_well_formed_texts() {
        let text = "# a comment\n# HELP a A.\n# TYPE a gauge\na{b=\"c\",d=\"\\\"\"} -1.5e3 1700000000000\na +Inf\n\n";
        check_exposition(text).expect("valid");
    }
}
