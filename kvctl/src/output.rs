//! What every command's output shares: the output format, bytes as table cells and JSON
//! fields, aligned tables (whole or streamed), and writing to stdout. Each command module
//! renders its own results with these (pure functions returning strings).
//!
//! Bytes are shown as UTF-8 when they are valid UTF-8 (control characters escaped),
//! else as `0x`-prefixed hex. JSON objects carry `value` as a string when it is UTF-8,
//! else `value: null` plus `value_hex` (keys likewise with `key_hex`).

use std::io::Write;

use clap::ValueEnum;
use comfy_table::{presets, CellAlignment, ContentArrangement, Table};
use serde_json::{Map, Value};

/// Longest value shown in a table cell, in characters; longer values are cut.
pub const MAX_TABLE_VALUE_CHARS: usize = 200;

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON document for scripts.
    Json,
}

/// Bytes for a table cell: UTF-8 text (control characters escaped) or `0x` hex, cut
/// after [`MAX_TABLE_VALUE_CHARS`] with the total size noted.
pub fn display_bytes(bytes: &[u8]) -> String {
    let full = match std::str::from_utf8(bytes) {
        Ok(text) => escape_controls(text),
        Err(_) => format!("0x{}", hex::encode(bytes)),
    };
    if full.chars().count() <= MAX_TABLE_VALUE_CHARS {
        return full;
    }
    let cut: String = full.chars().take(MAX_TABLE_VALUE_CHARS).collect();
    format!("{cut}… ({} bytes)", bytes.len())
}

/// Escapes control characters so a value cannot break the table or the terminal.
fn escape_controls(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().collect::<String>()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Inserts `bytes` under `field` (UTF-8 string), or `field: null` plus `field_hex`.
pub fn insert_bytes(object: &mut Map<String, Value>, field: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            object.insert(field.to_string(), Value::String(text.to_string()));
        }
        Err(_) => {
            object.insert(field.to_string(), Value::Null);
            object.insert(format!("{field}_hex"), Value::String(hex::encode(bytes)));
        }
    }
}

/// An object with the key already inserted.
pub fn keyed_object(key: &[u8]) -> Map<String, Value> {
    let mut object = Map::new();
    insert_bytes(&mut object, "key", key);
    object
}

/// A borderless table with left-aligned columns and no wrapping; `numeric` columns
/// are right-aligned. Ends without trailing spaces or newline.
pub fn render_table(headers: &[&str], rows: Vec<Vec<String>>, numeric: &[usize]) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.iter().copied());
    for row in rows {
        table.add_row(row);
    }
    for index in numeric {
        if let Some(column) = table.column_mut(*index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
        .lines()
        .map(|line| line.trim_end().to_string())
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Prints `text` and a newline to stdout. A closed pipe (`kvctl ... | head`) is not an
/// error.
pub fn emit(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    ignore_broken_pipe(writeln!(stdout, "{text}").and_then(|()| stdout.flush()))
}

/// Writes `bytes` to stdout exactly as they are.
pub fn emit_raw(bytes: &[u8]) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    ignore_broken_pipe(stdout.write_all(bytes).and_then(|()| stdout.flush()))
}

fn ignore_broken_pipe(result: std::io::Result<()>) -> std::io::Result<()> {
    match result {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Pretty JSON text of a value.
pub fn to_json(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"))
}

/// `1 entry`, `2 entries`.
pub fn plural(count: u64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// Shard ids joined by `, `.
pub fn join_shards(shards: impl IntoIterator<Item = u32>) -> String {
    shards
        .into_iter()
        .map(|shard| shard.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A table printed as its rows arrive: the first rows fix the column widths (later,
/// longer cells push their row's next columns right rather than being cut).
#[derive(Debug)]
pub struct StreamingTable {
    headers: Vec<String>,
    numeric: Vec<usize>,
    widths: Option<Vec<usize>>,
}

impl StreamingTable {
    /// A table with `headers`; `numeric` columns are right-aligned.
    pub fn new(headers: &[&str], numeric: &[usize]) -> Self {
        StreamingTable {
            headers: headers.iter().map(|header| header.to_string()).collect(),
            numeric: numeric.to_vec(),
            widths: None,
        }
    }

    /// The lines of `rows`, each ending with a newline; the first call also returns the
    /// header line.
    pub fn lines(&mut self, rows: &[Vec<String>]) -> String {
        let mut out = String::new();
        let widths = match &self.widths {
            Some(widths) => widths.clone(),
            None => {
                let mut widths: Vec<usize> =
                    self.headers.iter().map(|header| header.chars().count()).collect();
                for row in rows {
                    for (width, cell) in widths.iter_mut().zip(row) {
                        *width = (*width).max(cell.chars().count());
                    }
                }
                self.widths = Some(widths.clone());
                out.push_str(&self.line(&self.headers, &widths));
                widths
            }
        };
        for row in rows {
            out.push_str(&self.line(row, &widths));
        }
        out
    }

    fn line(&self, cells: &[String], widths: &[usize]) -> String {
        let mut line = String::new();
        for (index, cell) in cells.iter().enumerate() {
            if index > 0 {
                line.push_str("  ");
            }
            let width = widths.get(index).copied().unwrap_or(0);
            let pad = " ".repeat(width.saturating_sub(cell.chars().count()));
            if self.numeric.contains(&index) {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&pad);
            }
        }
        let mut line = line.trim_end().to_string();
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Valid UTF-8 is shown as text, anything else as 0x-hex.
    #[test]
    fn display_bytes_text_or_hex() {
        assert_eq!(display_bytes(b"hello"), "hello");
        assert_eq!(display_bytes("héllo".as_bytes()), "héllo");
        assert_eq!(display_bytes(&[0xff, 0x00, 0x10]), "0xff0010");
    }

    /// Control characters in text are escaped so they cannot break the table.
    #[test]
    fn display_bytes_escapes_controls() {
        assert_eq!(display_bytes(b"a\nb\x1b"), "a\\nb\\u{1b}");
    }

    /// Long values are cut and the total size is noted.
    #[test]
    fn display_bytes_truncates() {
        let long = vec![b'x'; 1000];
        let shown = display_bytes(&long);
        assert!(shown.starts_with(&"x".repeat(MAX_TABLE_VALUE_CHARS)));
        assert!(shown.ends_with("… (1000 bytes)"));
    }

    /// JSON carries UTF-8 as a string and other bytes as null plus hex.
    #[test]
    fn json_bytes_fields() {
        let mut object = Map::new();
        insert_bytes(&mut object, "value", b"text");
        assert_eq!(object["value"], json!("text"));
        assert!(!object.contains_key("value_hex"));

        let mut object = Map::new();
        insert_bytes(&mut object, "value", &[0xff, 0xfe]);
        assert_eq!(object["value"], Value::Null);
        assert_eq!(object["value_hex"], json!("fffe"));
    }

    /// The streaming table fixes its widths on the first rows and aligns later ones.
    #[test]
    fn streaming_table_alignment() {
        let mut table = StreamingTable::new(&["KEY", "VERSION", "VALUE"], &[1]);
        let first = table.lines(&[vec!["alpha".into(), "7".into(), "x".into()]]);
        assert_eq!(first, "KEY    VERSION  VALUE\nalpha        7  x\n");
        let next = table.lines(&[
            vec!["b".into(), "12".into(), "y".into()],
            vec!["a-much-longer-key".into(), "3".into(), "z".into()],
        ]);
        assert_eq!(next, "b           12  y\na-much-longer-key        3  z\n");
    }
}
