//! Key/value records for `mput`: JSON lines or CSV, read incrementally.
//!
//! - JSON lines: one object per line, `{"key": "...", "value": "..."}`. Binary keys and
//!   values use `key_hex` / `value_hex` instead (the shape `kvctl -o json` prints, so
//!   `scan` output entries can be loaded back); other fields are ignored.
//! - CSV: `key,value` records (RFC 4180 quoting: `"a,b"`, `"say ""hi"""`, line breaks
//!   inside quotes). Fields are taken byte for byte; a first record `key,value` is a
//!   header and is skipped.
//!
//! With `--hex`, the `key`/`value` strings (JSON) or both fields (CSV) are hex-encoded.
//! Blank lines are skipped. Malformed input is a [`UsageError`] naming the line.

use std::io::BufRead;
use std::path::Path;

use clap::ValueEnum;
use serde_json::{Map, Value};

use crate::exit::UsageError;
use crate::value::parse_hex;

/// The format of an `mput` input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// One JSON object per line (`.jsonl`, `.ndjson`, `.json`).
    #[value(alias = "json", alias = "ndjson")]
    Jsonl,
    /// `key,value` records (`.csv`).
    Csv,
}

impl InputFormat {
    /// The format implied by a file name's extension.
    pub fn from_path(path: &Path) -> Option<InputFormat> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "jsonl" | "ndjson" | "json" => Some(InputFormat::Jsonl),
            "csv" => Some(InputFormat::Csv),
            _ => None,
        }
    }
}

/// One key/value pair of the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The line the record starts on (1-based).
    pub line: usize,
    /// The key (not empty).
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

/// The records of an input, in order.
pub struct Records<R> {
    reader: R,
    format: InputFormat,
    hex: bool,
    /// Lines read so far.
    line: usize,
    /// The first CSV record was looked at (it may be a header).
    seen_first: bool,
}

impl<R: BufRead> Records<R> {
    /// Reads records of `format` from `reader`; `hex` says keys and values are hex.
    pub fn new(reader: R, format: InputFormat, hex: bool) -> Self {
        Records {
            reader,
            format,
            hex,
            line: 0,
            seen_first: false,
        }
    }

    /// Reads one line (with its `\n`, if any) into `buf`; false at the end.
    fn read_line(&mut self, buf: &mut Vec<u8>) -> anyhow::Result<bool> {
        buf.clear();
        let read = self.reader.read_until(b'\n', buf)?;
        if read == 0 {
            return Ok(false);
        }
        self.line += 1;
        Ok(true)
    }

    fn next_json(&mut self) -> anyhow::Result<Option<Record>> {
        let mut buf = Vec::new();
        loop {
            if !self.read_line(&mut buf)? {
                return Ok(None);
            }
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(parse_json_line(&buf, self.line, self.hex)?));
        }
    }

    fn next_csv(&mut self) -> anyhow::Result<Option<Record>> {
        loop {
            let Some((line, fields)) = self.csv_fields()? else {
                return Ok(None);
            };
            if fields.len() == 1 && fields[0].is_empty() {
                continue;
            }
            let first = !self.seen_first;
            self.seen_first = true;
            if first && is_csv_header(&fields) {
                continue;
            }
            return Ok(Some(csv_record(line, fields, self.hex)?));
        }
    }

    /// The fields of the next CSV record and the line it starts on.
    fn csv_fields(&mut self) -> anyhow::Result<Option<(usize, Vec<Vec<u8>>)>> {
        #[derive(PartialEq)]
        enum State {
            FieldStart,
            Unquoted,
            Quoted,
            /// A quote inside a quoted field: the end of the field, or `""`.
            QuoteInQuoted,
        }
        let mut buf = Vec::new();
        let mut fields = Vec::new();
        let mut field = Vec::new();
        let mut state = State::FieldStart;
        let start_line = self.line + 1;
        loop {
            if !self.read_line(&mut buf)? {
                if self.line < start_line {
                    return Ok(None);
                }
                if state == State::Quoted {
                    return Err(UsageError(format!("line {start_line}: unterminated quoted field")).into());
                }
                fields.push(field);
                return Ok(Some((start_line, fields)));
            }
            let mut index = 0;
            while index < buf.len() {
                let byte = buf[index];
                index += 1;
                let line_end = state != State::Quoted
                    && (byte == b'\n' || (byte == b'\r' && buf.get(index) == Some(&b'\n')));
                if line_end {
                    fields.push(field);
                    return Ok(Some((start_line, fields)));
                }
                match state {
                    State::FieldStart | State::Unquoted if byte == b',' => {
                        fields.push(std::mem::take(&mut field));
                        state = State::FieldStart;
                    }
                    State::FieldStart if byte == b'"' => state = State::Quoted,
                    State::FieldStart | State::Unquoted => {
                        field.push(byte);
                        state = State::Unquoted;
                    }
                    State::Quoted if byte == b'"' => state = State::QuoteInQuoted,
                    State::Quoted => field.push(byte),
                    State::QuoteInQuoted if byte == b'"' => {
                        field.push(b'"');
                        state = State::Quoted;
                    }
                    State::QuoteInQuoted if byte == b',' => {
                        fields.push(std::mem::take(&mut field));
                        state = State::FieldStart;
                    }
                    State::QuoteInQuoted => {
                        return Err(UsageError(format!(
                            "line {}: unexpected {:?} after a closing quote (write a quote inside a \
                             quoted field as \"\")",
                            self.line,
                            char::from(byte)
                        ))
                        .into());
                    }
                }
            }
        }
    }
}

impl<R: BufRead> Iterator for Records<R> {
    type Item = anyhow::Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        let next = match self.format {
            InputFormat::Jsonl => self.next_json(),
            InputFormat::Csv => self.next_csv(),
        };
        next.transpose()
    }
}

/// Whether the first CSV record is the `key,value` header.
fn is_csv_header(fields: &[Vec<u8>]) -> bool {
    matches!(fields, [key, value] if key.eq_ignore_ascii_case(b"key") && value.eq_ignore_ascii_case(b"value"))
}

/// A CSV record of exactly two fields to a [`Record`].
fn csv_record(line: usize, fields: Vec<Vec<u8>>, hex: bool) -> Result<Record, UsageError> {
    let count = fields.len();
    let Ok([key, value]) = <[Vec<u8>; 2]>::try_from(fields) else {
        return Err(UsageError(format!(
            "line {line}: expected 2 fields (key,value), found {count} (quote fields that contain commas)"
        )));
    };
    let decode = |what: &str, bytes: Vec<u8>| -> Result<Vec<u8>, UsageError> {
        if !hex {
            return Ok(bytes);
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| UsageError(format!("line {line}: {what}: hex input must be ASCII")))?;
        parse_hex(&text).map_err(|err| UsageError(format!("line {line}: {what}: {}", err.0)))
    };
    let key = decode("key", key)?;
    let value = decode("value", value)?;
    record(line, key, value)
}

fn record(line: usize, key: Vec<u8>, value: Vec<u8>) -> Result<Record, UsageError> {
    if key.is_empty() {
        return Err(UsageError(format!("line {line}: the key is empty")));
    }
    Ok(Record { line, key, value })
}

/// One JSON line to a [`Record`].
pub fn parse_json_line(text: &[u8], line: usize, hex: bool) -> Result<Record, UsageError> {
    let value: Value = serde_json::from_slice(text)
        .map_err(|err| UsageError(format!("line {line}: not valid JSON: {err}")))?;
    let Value::Object(object) = value else {
        return Err(UsageError(format!(
            "line {line}: expected an object like {{\"key\": \"k\", \"value\": \"v\"}}"
        )));
    };
    let key = bytes_field(&object, "key", line, hex)?
        .ok_or_else(|| UsageError(format!("line {line}: missing \"key\" (or \"key_hex\")")))?;
    let value = bytes_field(&object, "value", line, hex)?
        .ok_or_else(|| UsageError(format!("line {line}: missing \"value\" (or \"value_hex\")")))?;
    record(line, key, value)
}

/// The bytes of `name` (a string; hex when `hex`) or `name_hex` (always hex); `None`
/// when neither is present (or both are null).
fn bytes_field(
    object: &Map<String, Value>,
    name: &str,
    line: usize,
    hex: bool,
) -> Result<Option<Vec<u8>>, UsageError> {
    let hex_name = format!("{name}_hex");
    let text = object.get(name).filter(|value| !value.is_null());
    let hex_text = object.get(&hex_name).filter(|value| !value.is_null());
    let decode_hex = |field: &str, digits: &str| {
        parse_hex(digits).map_err(|err| UsageError(format!("line {line}: \"{field}\": {}", err.0)))
    };
    match (text, hex_text) {
        (Some(_), Some(_)) => Err(UsageError(format!(
            "line {line}: give \"{name}\" or \"{hex_name}\", not both"
        ))),
        (Some(Value::String(text)), None) if hex => decode_hex(name, text).map(Some),
        (Some(Value::String(text)), None) => Ok(Some(text.as_bytes().to_vec())),
        (None, Some(Value::String(digits))) => decode_hex(&hex_name, digits).map(Some),
        (Some(_), None) => Err(UsageError(format!("line {line}: \"{name}\" must be a string"))),
        (None, Some(_)) => Err(UsageError(format!(
            "line {line}: \"{hex_name}\" must be a string"
        ))),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8], format: InputFormat, hex: bool) -> anyhow::Result<Vec<Record>> {
        Records::new(input, format, hex).collect()
    }

    fn pairs(records: &[Record]) -> Vec<(Vec<u8>, Vec<u8>)> {
        records
            .iter()
            .map(|record| (record.key.clone(), record.value.clone()))
            .collect()
    }

    fn usage_message(error: anyhow::Error) -> String {
        match error.downcast::<UsageError>() {
            Ok(usage) => usage.0,
            Err(other) => panic!("not a usage error: {other:#}"),
        }
    }

    /// The format follows the extension; unknown extensions need --format.
    #[test]
    fn format_from_extension() {
        assert_eq!(InputFormat::from_path(Path::new("a.csv")), Some(InputFormat::Csv));
        assert_eq!(
            InputFormat::from_path(Path::new("a.JSONL")),
            Some(InputFormat::Jsonl)
        );
        assert_eq!(
            InputFormat::from_path(Path::new("a.ndjson")),
            Some(InputFormat::Jsonl)
        );
        assert_eq!(InputFormat::from_path(Path::new("a.txt")), None);
        assert_eq!(InputFormat::from_path(Path::new("-")), None);
    }

    /// JSON lines with text and hex fields, blank lines and extra fields.
    #[test]
    fn json_lines() {
        let input = b"{\"key\": \"a\", \"value\": \"1\"}\n\n  \r\n\
            {\"key\": null, \"key_hex\": \"00ff\", \"value_hex\": \"0a\", \"version\": 3}\r\n\
            {\"key\": \"\xc3\xa9\", \"value\": \"\"}";
        let records = read(input, InputFormat::Jsonl, false).expect("valid");
        assert_eq!(
            pairs(&records),
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (vec![0x00, 0xff], vec![0x0a]),
                ("é".as_bytes().to_vec(), vec![]),
            ]
        );
        assert_eq!(records.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 4, 5]);
    }

    /// With --hex the JSON strings are hex.
    #[test]
    fn json_lines_hex() {
        let records = read(
            b"{\"key\": \"6b\", \"value\": \"0x00\"}\n",
            InputFormat::Jsonl,
            true,
        )
        .expect("valid");
        assert_eq!(pairs(&records), vec![(b"k".to_vec(), vec![0])]);
    }

    /// Malformed JSON lines are usage errors naming the line.
    #[test]
    fn json_lines_errors() {
        let cases: [(&[u8], &str); 8] = [
            (b"{\"key\": \"a\"", "line 1: not valid JSON"),
            (b"[1, 2]", "line 1: expected an object"),
            (b"{\"value\": \"v\"}", "line 1: missing \"key\""),
            (b"{\"key\": \"k\"}", "line 1: missing \"value\""),
            (b"{\"key\": \"\", \"value\": \"v\"}", "line 1: the key is empty"),
            (
                b"{\"key\": 5, \"value\": \"v\"}",
                "line 1: \"key\" must be a string",
            ),
            (
                b"{\"key\": \"k\", \"key_hex\": \"6b\", \"value\": \"v\"}",
                "not both",
            ),
            (
                b"{\"key_hex\": \"zz\", \"value\": \"v\"}",
                "line 1: \"key_hex\": invalid hex",
            ),
        ];
        for (input, expected) in cases {
            let error = read(input, InputFormat::Jsonl, false).expect_err("invalid");
            let message = usage_message(error);
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
        let error = read(
            b"{\"key\": \"a\", \"value\": \"1\"}\n\nnope\n",
            InputFormat::Jsonl,
            false,
        )
        .expect_err("invalid");
        assert!(usage_message(error).starts_with("line 3:"));
    }

    /// CSV with a header, quotes, escaped quotes, commas and line breaks in fields, CRLF.
    #[test]
    fn csv_records() {
        let input = b"key,value\r\n\
            a,1\r\n\
            \"b,c\",\"say \"\"hi\"\"\"\n\
            \n\
            multi,\"line one\nline two\"\n\
            empty,\n\
            \xff\xfe,raw bytes";
        let records = read(input, InputFormat::Csv, false).expect("valid");
        assert_eq!(
            pairs(&records),
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b,c".to_vec(), b"say \"hi\"".to_vec()),
                (b"multi".to_vec(), b"line one\nline two".to_vec()),
                (b"empty".to_vec(), vec![]),
                (vec![0xff, 0xfe], b"raw bytes".to_vec()),
            ]
        );
        assert_eq!(
            records.iter().map(|r| r.line).collect::<Vec<_>>(),
            [2, 3, 5, 7, 8]
        );
    }

    /// Only the first record can be a header; hex fields are decoded with --hex.
    #[test]
    fn csv_header_and_hex() {
        let records = read(b"a,1\nkey,value\n", InputFormat::Csv, false).expect("valid");
        assert_eq!(pairs(&records)[1], (b"key".to_vec(), b"value".to_vec()));
        let records = read(b"KEY,VALUE\n6b,00ff\n", InputFormat::Csv, true).expect("valid");
        assert_eq!(pairs(&records), vec![(b"k".to_vec(), vec![0x00, 0xff])]);
    }

    /// Malformed CSV is a usage error naming the line.
    #[test]
    fn csv_errors() {
        let cases: [(&[u8], bool, &str); 5] = [
            (
                b"a,1\nb\n",
                false,
                "line 2: expected 2 fields (key,value), found 1",
            ),
            (
                b"a,1,2\n",
                false,
                "line 1: expected 2 fields (key,value), found 3",
            ),
            (
                b"a,\"unterminated\n\n",
                false,
                "line 1: unterminated quoted field",
            ),
            (
                b"\"a\"x,1\n",
                false,
                "line 1: unexpected 'x' after a closing quote",
            ),
            (b",v\n", false, "line 1: the key is empty"),
        ];
        for (input, hex, expected) in cases {
            let error = read(input, InputFormat::Csv, hex).expect_err("invalid");
            let message = usage_message(error);
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
        let error = read(b"zz,00\n", InputFormat::Csv, true).expect_err("invalid");
        assert!(usage_message(error).starts_with("line 1: key: invalid hex"));
    }
}
