//! Keys and values from the command line: raw argument bytes, hex, files and stdin.
//!
//! Arguments are taken byte for byte (not required to be UTF-8). With `--hex` the key
//! and an argument value are hex-decoded (an optional `0x` prefix is accepted); values
//! from `--file` or `--stdin` are always taken as they are.

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::exit::UsageError;

/// Largest value kvctl reads from a file or stdin; the cluster's own limit (1 MiB by
/// default) is usually lower and reported by the router.
pub const MAX_VALUE_READ_BYTES: u64 = 64 * 1024 * 1024;

/// Where a value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueSource {
    /// The command-line argument, already decoded.
    Literal(Vec<u8>),
    /// The contents of a file.
    File(PathBuf),
    /// Everything on standard input.
    Stdin,
}

/// Decodes hex text (optional `0x` prefix, case-insensitive).
pub fn parse_hex(text: &str) -> Result<Vec<u8>, UsageError> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    hex::decode(digits).map_err(|err| UsageError(format!("invalid hex {text:?}: {err}")))
}

/// The bytes of an argument, hex-decoded when `hex` is set.
pub fn decode_arg(what: &str, raw: OsString, hex: bool) -> Result<Vec<u8>, UsageError> {
    if !hex {
        return Ok(raw.into_encoded_bytes());
    }
    let text = raw
        .into_string()
        .map_err(|_| UsageError(format!("{what}: hex input must be ASCII")))?;
    parse_hex(&text).map_err(|err| UsageError(format!("{what}: {}", err.0)))
}

/// A key argument; the empty key is rejected.
pub fn decode_key(raw: OsString, hex: bool) -> Result<Vec<u8>, UsageError> {
    let key = decode_arg("key", raw, hex)?;
    if key.is_empty() {
        return Err(UsageError("key must not be empty".into()));
    }
    Ok(key)
}

/// Chooses the value source from the mutually exclusive options; `None` when none is
/// given (clap's argument groups normally prevent both cases).
pub fn value_source(
    literal: Option<OsString>,
    file: Option<PathBuf>,
    stdin: bool,
    hex: bool,
) -> Result<Option<ValueSource>, UsageError> {
    let given = usize::from(literal.is_some()) + usize::from(file.is_some()) + usize::from(stdin);
    if given > 1 {
        return Err(UsageError(
            "give the value only once: as an argument, --file or --stdin".into(),
        ));
    }
    if let Some(literal) = literal {
        return Ok(Some(ValueSource::Literal(decode_arg("value", literal, hex)?)));
    }
    if let Some(path) = file {
        return Ok(Some(ValueSource::File(path)));
    }
    Ok(stdin.then_some(ValueSource::Stdin))
}

/// Reads the value bytes from their source; `stdin` is the reader used for
/// [`ValueSource::Stdin`]. At most [`MAX_VALUE_READ_BYTES`] are accepted.
pub fn read_value(source: ValueSource, stdin: impl Read) -> anyhow::Result<Vec<u8>> {
    match source {
        ValueSource::Literal(bytes) => Ok(bytes),
        ValueSource::File(path) => {
            let file =
                std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            read_bounded(file).with_context(|| format!("cannot read {}", path.display()))
        }
        ValueSource::Stdin => read_bounded(stdin).context("cannot read the value from stdin"),
    }
}

fn read_bounded(reader: impl Read) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(MAX_VALUE_READ_BYTES + 1).read_to_end(&mut bytes)?;
    if u64::try_from(bytes.len()).map_or(true, |len| len > MAX_VALUE_READ_BYTES) {
        anyhow::bail!(
            "value is larger than {} MiB",
            MAX_VALUE_READ_BYTES / (1024 * 1024)
        );
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// Hex accepts both cases and an optional 0x prefix.
    #[test]
    fn parse_hex_variants() {
        assert_eq!(parse_hex("00ff").expect("hex"), vec![0x00, 0xff]);
        assert_eq!(parse_hex("0xABcd").expect("hex"), vec![0xab, 0xcd]);
        assert_eq!(parse_hex("").expect("hex"), Vec::<u8>::new());
    }

    /// Odd lengths and non-hex characters are usage errors.
    #[test]
    fn parse_hex_rejects_garbage() {
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
        assert!(parse_hex("0x0g").is_err());
    }

    /// Without --hex the argument bytes are taken verbatim.
    #[test]
    fn decode_arg_verbatim() {
        assert_eq!(
            decode_arg("value", OsString::from("héllo 0x12"), false).expect("bytes"),
            "héllo 0x12".as_bytes()
        );
    }

    /// With --hex the argument is decoded.
    #[test]
    fn decode_arg_hex() {
        assert_eq!(
            decode_arg("key", OsString::from("6b6579"), true).expect("hex"),
            b"key"
        );
        assert!(decode_arg("key", OsString::from("6b657"), true).is_err());
    }

    /// The empty key is refused, also when it comes from empty hex.
    #[test]
    fn empty_key_is_usage_error() {
        assert!(decode_key(OsString::new(), false).is_err());
        assert!(decode_key(OsString::from("0x"), true).is_err());
    }

    /// Exactly one source may be given; the literal is hex-decoded when asked.
    #[test]
    fn value_source_selection() {
        assert_eq!(
            value_source(Some("ff".into()), None, false, true).expect("ok"),
            Some(ValueSource::Literal(vec![0xff]))
        );
        assert_eq!(
            value_source(None, Some("/x".into()), false, true).expect("ok"),
            Some(ValueSource::File("/x".into()))
        );
        assert_eq!(
            value_source(None, None, true, false).expect("ok"),
            Some(ValueSource::Stdin)
        );
        assert_eq!(value_source(None, None, false, false).expect("ok"), None);
        assert!(value_source(Some("v".into()), None, true, false).is_err());
    }

    /// Stdin and files are read byte for byte, binary included.
    #[test]
    fn read_value_is_binary_safe() {
        let binary = vec![0u8, 159, 146, 150, b'\n', 255];
        let from_stdin = read_value(ValueSource::Stdin, std::io::Cursor::new(binary.clone())).expect("read");
        assert_eq!(from_stdin, binary);

        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(&binary).expect("write");
        let from_file =
            read_value(ValueSource::File(file.path().to_path_buf()), std::io::empty()).expect("read");
        assert_eq!(from_file, binary);
    }

    /// A missing file is an error naming the path.
    #[test]
    fn read_value_missing_file() {
        let error = read_value(
            ValueSource::File("/nonexistent/ringkv-value".into()),
            std::io::empty(),
        )
        .expect_err("missing file");
        assert!(format!("{error:#}").contains("/nonexistent/ringkv-value"));
    }
}
