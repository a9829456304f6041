//! Keys that expire (issue 16, TTL): `kvctl expire KEY TTL`, `kvctl persist KEY`,
//! `kvctl ttl KEY`, and the `--ttl` of `put` and `cas` ([`parse_ttl`]).
//!
//! A time to live is oracle time, counted from the write's commit: the cluster decides
//! expiry, not this machine's clock. `expire` and `persist` keep the value under a new
//! version. Like Redis, `ttl` tells a key without an expiry from a missing one.

use std::ffi::OsString;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ringkv_client::{Client, Ttl};

use crate::exit::{Outcome, UsageError};
use crate::output::{self, display_bytes, Column, Field, Format, Records, Shape};
use crate::value::decode_key;

/// Arguments of `kvctl expire`.
#[derive(Args, Debug)]
pub struct ExpireArgs {
    /// The key (bytes as given; hex with --hex).
    pub key: OsString,
    /// The time to live: a number with a unit, `ms`, `s`, `m`, `h` or `d` (`500ms`, `30s`,
    /// `10m`); a bare number is seconds.
    #[arg(value_parser = parse_ttl)]
    pub ttl: Duration,
    /// The key is hex-encoded.
    #[arg(long)]
    pub hex: bool,
}

/// Arguments of `kvctl persist` and `kvctl ttl`.
#[derive(Args, Debug)]
pub struct KeyArgs {
    /// The key (bytes as given; hex with --hex).
    pub key: OsString,
    /// The key is hex-encoded.
    #[arg(long)]
    pub hex: bool,
}

/// Parses a time to live: digits and a unit (`ms`, `s`, `m`, `h`, `d`; none: seconds),
/// at least 1 ms.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("a time to live is a number and a unit (500ms, 30s, 10m), got {text:?}"))?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("unknown unit {other:?} (ms, s, m, h or d)")),
    };
    match number.checked_mul(unit_ms) {
        Some(0) => Err("a time to live must be at least 1 ms".to_string()),
        Some(ms) => Ok(Duration::from_millis(ms)),
        None => Err(format!("time to live {text} is too long")),
    }
}

/// `kvctl expire`: the key expires the TTL after this write; prints its new version. A
/// missing key exits 1.
pub async fn expire(client: &Client, args: ExpireArgs, format: Format) -> anyhow::Result<Outcome> {
    let key = decode_key(args.key, args.hex)?;
    let applied = client
        .expire(&key, args.ttl)
        .await
        .with_context(|| format!("expire {}", display_bytes(&key)))?;
    changed(&key, applied, "key not found", format)
}

/// `kvctl persist`: the key no longer expires; prints its new version. A missing key, or
/// one without an expiry, exits 1.
pub async fn persist(client: &Client, args: KeyArgs, format: Format) -> anyhow::Result<Outcome> {
    let key = decode_key(args.key, args.hex)?;
    let applied = client
        .persist(&key)
        .await
        .with_context(|| format!("persist {}", display_bytes(&key)))?;
    changed(&key, applied, "key not found or without an expiry", format)
}

/// Prints the new version of a changed expiry, or says on stderr why nothing changed.
fn changed(key: &[u8], version: Option<u64>, unchanged: &str, format: Format) -> anyhow::Result<Outcome> {
    let mut records = Records::new(&[Column::new("key"), Column::new("version")], "version");
    let Some(version) = version else {
        eprintln!("{unchanged}: {}", display_bytes(key));
        return Ok(Outcome::NotFound);
    };
    records.push(vec![Field::Bytes(key.to_vec()), Field::Number(version)]);
    output::emit_raw(&records.render(format, Shape::One))?;
    Ok(Outcome::Success)
}

/// `kvctl ttl`: what the key has left to live (`ttl_ms`; `-` in a table and absent in JSON
/// for a key that never expires) and its expiry as an oracle timestamp. A missing key exits 1.
pub async fn ttl(client: &Client, args: KeyArgs, format: Format) -> anyhow::Result<Outcome> {
    let key = decode_key(args.key, args.hex)?;
    let ttl = client
        .ttl(&key)
        .await
        .with_context(|| format!("ttl {}", display_bytes(&key)))?;
    let (remaining, expires_at) = match ttl {
        Ttl::Missing => {
            eprintln!("key not found: {}", display_bytes(&key));
            return Ok(Outcome::NotFound);
        }
        Ttl::Persistent => (Field::Absent, Field::Absent),
        Ttl::Expires {
            remaining,
            expires_at_ts,
        } => (
            Field::Number(u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX)),
            Field::Number(expires_at_ts),
        ),
    };
    let persistent = Field::Bool(matches!(ttl, Ttl::Persistent));
    let mut records = Records::new(
        &[
            Column::new("key"),
            Column::new("ttl_ms"),
            Column::new("persistent"),
            Column::new("expires_at_ts"),
        ],
        "ttl_ms",
    );
    records.push(vec![Field::Bytes(key), remaining, persistent, expires_at]);
    output::emit_raw(&records.render(format, Shape::One))?;
    Ok(Outcome::Success)
}

/// A `--ttl` flag's check: given with `--delete`, it is a usage error.
pub fn check_ttl_with_delete(ttl: Option<Duration>, delete: bool) -> Result<(), UsageError> {
    match (ttl, delete) {
        (Some(_), true) => Err(UsageError("--ttl belongs to a new value, not --delete".into())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Units and bare numbers parse; zero, unknown units and overflow are refused.
    #[test]
    fn ttls_parse_with_units() {
        let ok = [
            ("500ms", 500),
            ("30", 30_000),
            ("30s", 30_000),
            ("10m", 600_000),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
        ];
        for (text, ms) in ok {
            assert_eq!(parse_ttl(text), Ok(Duration::from_millis(ms)), "{text}");
        }
        for bad in ["", "0", "0s", "ms", "5x", "-5s", "1.5s", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
