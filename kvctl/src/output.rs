//! What every command's output shares: the output formats, bytes as table cells and JSON
//! fields, aligned tables (whole or streamed), records rendered in every format, and
//! writing to stdout. Each command module renders its own results with these (pure
//! functions returning strings).
//!
//! Data goes to stdout, everything else (progress, footers such as "2 entries; next page:
//! …", hints, warnings) to stderr, so `kvctl … -o tsv | cut -f1` sees only data.
//!
//! Bytes are shown as UTF-8 when they are valid UTF-8 (control characters escaped),
//! else as `0x`-prefixed hex. JSON objects carry `value` as a string when it is UTF-8,
//! else `value: null` plus `value_hex` (keys likewise with `key_hex`).
//!
//! [`Format`] is what `-o` asks for; the commands that print key-value data (`get`, `mget`,
//! `put`, `del`, `cas`, `scan`, `count`, `delrange`, the TTL and lease commands, `watch`
//! (a stream: its `json` is JSON lines) and `check perf`) render [`Records`] in all five
//! formats, and `endpoint status|health` in all but raw (one row per endpoint: there is no
//! single value to print bare).
//! The others render a table or one JSON document ([`OutputFormat`], see
//! [`Format::document`]): a line format there is a usage error naming the formats they print.

use std::io::Write;

use clap::ValueEnum;
use comfy_table::{presets, CellAlignment, ContentArrangement, Table};
use serde_json::{Map, Value};

use crate::exit::UsageError;

/// Longest value shown in a table cell, in characters; longer values are cut.
pub const MAX_TABLE_VALUE_CHARS: usize = 200;

/// What `-o` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// One JSON document.
    Json,
    /// One JSON object per line (per key or entry).
    Jsonl,
    /// Tab-separated columns with a header line; bytes as in a table but never cut, with
    /// `\`, tab, newline and carriage return escaped as `\\`, `\t`, `\n`, `\r`.
    Tsv,
    /// The bare values (keys with `--keys-only`), one per line; `get` writes the value's
    /// bytes exactly, without a newline.
    Raw,
}

impl Format {
    /// The format of a command that prints a table or one JSON document: `table` and
    /// `json` as asked; the record formats are a usage error naming the commands that
    /// have them.
    pub fn document(self, command: &str) -> Result<OutputFormat, UsageError> {
        match self {
            Format::Table => Ok(OutputFormat::Table),
            Format::Json => Ok(OutputFormat::Json),
            Format::Jsonl | Format::Tsv | Format::Raw => Err(UsageError(format!(
                "-o {} is for commands that print keys and values or rows ({RECORD_COMMANDS}); \
                 `{command}` prints table or json",
                self.name()
            ))),
        }
    }

    /// The name `-o` takes.
    pub fn name(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Json => "json",
            Format::Jsonl => "jsonl",
            Format::Tsv => "tsv",
            Format::Raw => "raw",
        }
    }
}

/// The commands that print in the line formats (`endpoint` in all but raw).
pub const RECORD_COMMANDS: &str =
    "get, mget, put, del, cas, scan, count, delrange, ttl, expire, persist, lease, watch, check perf, endpoint (not raw)";

/// How commands that print a table or one JSON document print it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

/// Compact JSON text of a value, on one line, with a newline.
pub fn json_line(value: &Value) -> String {
    format!("{value}\n")
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

/// One field of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    /// Key or value bytes.
    Bytes(Vec<u8>),
    /// A count, a version.
    Number(u64),
    /// A yes or no (`yes`/`no` in a table, `true`/`false` in TSV).
    Bool(bool),
    /// A word such as `swapped`.
    Text(String),
    /// Nothing (a missing key's value): left out of JSON, `-` in a table, an empty TSV
    /// cell, an empty line in raw output.
    Absent,
}

/// A column of [`Records`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    /// The JSON field and TSV header; upper-cased, the table header.
    pub name: &'static str,
    /// Left out of tables (which say it otherwise, e.g. `found` by a `-` value).
    pub hidden_in_table: bool,
}

impl Column {
    /// A column shown in every format.
    pub const fn new(name: &'static str) -> Self {
        Column {
            name,
            hidden_in_table: false,
        }
    }

    /// A column of JSON and TSV only.
    pub const fn hidden_in_table(name: &'static str) -> Self {
        Column {
            name,
            hidden_in_table: true,
        }
    }
}

/// How a JSON rendering of records is shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The result of one key: one object (the first record).
    One,
    /// An array of objects.
    Many,
}

/// Rows of typed fields under named columns, rendered in every [`Format`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Records {
    columns: Vec<Column>,
    raw_column: usize,
    rows: Vec<Vec<Field>>,
}

impl Records {
    /// No rows yet; raw output prints the `raw_column` field of each row.
    pub fn new(columns: &[Column], raw_column: &str) -> Self {
        let raw_column = columns
            .iter()
            .position(|column| column.name == raw_column)
            .unwrap_or(0);
        Records {
            columns: columns.to_vec(),
            raw_column,
            rows: Vec::new(),
        }
    }

    /// Adds a row: one field per column.
    pub fn push(&mut self, row: Vec<Field>) {
        debug_assert_eq!(row.len(), self.columns.len(), "one field per column");
        self.rows.push(row);
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Each row as a JSON object (absent fields left out).
    pub fn json_objects(&self) -> Vec<Value> {
        self.rows.iter().map(|row| self.json_object(row)).collect()
    }

    fn json_object(&self, row: &[Field]) -> Value {
        let mut object = Map::new();
        for (column, field) in self.columns.iter().zip(row) {
            match field {
                Field::Bytes(bytes) => insert_bytes(&mut object, column.name, bytes),
                Field::Number(number) => {
                    object.insert(column.name.into(), Value::from(*number));
                }
                Field::Bool(flag) => {
                    object.insert(column.name.into(), Value::Bool(*flag));
                }
                Field::Text(text) => {
                    object.insert(column.name.into(), Value::String(text.clone()));
                }
                Field::Absent => {}
            }
        }
        Value::Object(object)
    }

    /// The whole rendering, ending with a newline (nothing at all for no rows, except a
    /// table's or TSV's header and JSON's `[]`).
    pub fn render(&self, format: Format, shape: Shape) -> Vec<u8> {
        match format {
            Format::Table => {
                let mut text = self.table();
                text.push('\n');
                text.into_bytes()
            }
            Format::Json => {
                let document = match shape {
                    Shape::One => self.rows.first().map_or(Value::Null, |row| self.json_object(row)),
                    Shape::Many => Value::Array(self.json_objects()),
                };
                let mut text = to_json(&document);
                text.push('\n');
                text.into_bytes()
            }
            Format::Jsonl | Format::Tsv | Format::Raw => self.lines(format, true),
        }
    }

    /// An aligned table of the columns not hidden in tables (numbers right-aligned).
    pub fn table(&self) -> String {
        let (headers, rows, numeric) = self.table_parts();
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        render_table(&headers, rows, &numeric)
    }

    /// Headers, cells and numeric column indexes of the table rendering.
    pub fn table_parts(&self) -> (Vec<String>, Vec<Vec<String>>, Vec<usize>) {
        let shown: Vec<usize> = (0..self.columns.len())
            .filter(|index| !self.columns[*index].hidden_in_table)
            .collect();
        let headers = shown
            .iter()
            .map(|index| self.columns[*index].name.to_uppercase().replace('_', " "))
            .collect();
        let rows = self
            .rows
            .iter()
            .map(|row| shown.iter().map(|index| table_cell(&row[*index])).collect())
            .collect();
        let numeric = shown
            .iter()
            .enumerate()
            .filter(|(_, index)| {
                !self.rows.is_empty()
                    && self
                        .rows
                        .iter()
                        .all(|row| matches!(row[**index], Field::Number(_)))
            })
            .map(|(position, _)| position)
            .collect();
        (headers, rows, numeric)
    }

    /// The rows in a line format (`jsonl`, `tsv`, `raw`), each line ending with a
    /// newline; TSV starts with its header line when `header`. Table and JSON (not line
    /// formats) give JSON lines.
    pub fn lines(&self, format: Format, header: bool) -> Vec<u8> {
        let mut out = Vec::new();
        match format {
            Format::Tsv => {
                if header {
                    let names: Vec<&str> = self.columns.iter().map(|column| column.name).collect();
                    out.extend_from_slice(names.join("\t").as_bytes());
                    out.push(b'\n');
                }
                for row in &self.rows {
                    let cells: Vec<String> = row.iter().map(tsv_cell).collect();
                    out.extend_from_slice(cells.join("\t").as_bytes());
                    out.push(b'\n');
                }
            }
            Format::Raw => {
                for row in &self.rows {
                    out.extend_from_slice(&raw_field(&row[self.raw_column]));
                    out.push(b'\n');
                }
            }
            Format::Table | Format::Json | Format::Jsonl => {
                for row in &self.rows {
                    out.extend_from_slice(self.json_object(row).to_string().as_bytes());
                    out.push(b'\n');
                }
            }
        }
        out
    }
}

/// A field in a table cell.
fn table_cell(field: &Field) -> String {
    match field {
        Field::Bytes(bytes) => display_bytes(bytes),
        Field::Number(number) => number.to_string(),
        Field::Bool(flag) => if *flag { "yes" } else { "no" }.to_string(),
        Field::Text(text) => text.clone(),
        Field::Absent => "-".to_string(),
    }
}

/// A field in a TSV cell: never cut; backslash, tab, newline and carriage return escaped.
pub fn tsv_cell(field: &Field) -> String {
    let text = match field {
        Field::Bytes(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => text.to_string(),
            Err(_) => format!("0x{}", hex::encode(bytes)),
        },
        Field::Number(number) => number.to_string(),
        Field::Bool(flag) => flag.to_string(),
        Field::Text(text) => text.clone(),
        Field::Absent => String::new(),
    };
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\t' => escaped.push_str("\\t"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// A field as raw output: bytes as they are, anything else as its text.
fn raw_field(field: &Field) -> Vec<u8> {
    match field {
        Field::Bytes(bytes) => bytes.clone(),
        Field::Absent => Vec::new(),
        other => tsv_cell(other).into_bytes(),
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
