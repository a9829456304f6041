//! `kvctl lease grant|keep-alive|revoke|ttl|list` (issue 16, etcd's leases) and the lease
//! id flag of `put --lease`.
//!
//! A lease lives in the cluster as a record with a deadline in oracle time; keys attached
//! to it vanish when it expires or is revoked (`ringkv_client`'s `lease` module says how).
//! `keep-alive` extends it every third of its TTL until interrupted, as etcdctl's does.

use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use ringkv_client::{Client, Lease, LeaseId};

use crate::exit::{Outcome, UsageError};
use crate::output::{self, Column, Field, Format, Records, Shape};

/// `kvctl lease ...`.
#[derive(Subcommand, Debug)]
pub enum LeaseCommand {
    /// Grant a lease of a TTL (1s to 1d); prints its id.
    Grant {
        /// The TTL: a number with a unit (`500ms`, `30s`, `10m`); a bare number is seconds.
        #[arg(value_parser = crate::ttl::parse_ttl)]
        ttl: Duration,
    },
    /// Keep a lease alive (every third of its TTL) until interrupted; exit 1 once it is
    /// lost (expired or revoked).
    KeepAlive {
        /// The lease id (hex, as `grant` printed it).
        #[arg(value_parser = parse_lease_id)]
        id: LeaseId,
        /// Extend it once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Revoke a lease: its attached keys are deleted, then the lease.
    Revoke {
        #[arg(value_parser = parse_lease_id)]
        id: LeaseId,
    },
    /// A lease's TTL, the time it has left and (with --keys) its attached keys.
    #[command(name = "ttl", alias = "timetolive")]
    Ttl {
        #[arg(value_parser = parse_lease_id)]
        id: LeaseId,
        /// List the attached keys too.
        #[arg(long)]
        keys: bool,
    },
    /// The ids of the live leases.
    List,
}

/// Parses a lease id (1 to 16 hex digits, not zero).
pub fn parse_lease_id(text: &str) -> Result<LeaseId, String> {
    text.parse::<LeaseId>().map_err(|err| err.to_string())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Runs a `kvctl lease` command.
pub async fn run(client: &Client, command: LeaseCommand, format: Format) -> anyhow::Result<Outcome> {
    match command {
        LeaseCommand::Grant { ttl } => {
            let lease = client.lease_grant(ttl).await.context("lease grant")?;
            print_lease(&lease, format)
        }
        LeaseCommand::KeepAlive { id, once: true } => {
            let lease = client
                .lease_keep_alive_once(id)
                .await
                .with_context(|| format!("lease keep-alive {id}"))?;
            print_lease(&lease, format)
        }
        LeaseCommand::KeepAlive { id, once: false } => keep_alive(client, id, format).await,
        LeaseCommand::Revoke { id } => {
            let deleted = client
                .lease_revoke(id)
                .await
                .with_context(|| format!("lease revoke {id}"))?;
            let mut records = Records::new(&[Column::new("id"), Column::new("keys_deleted")], "id");
            records.push(vec![Field::Text(id.to_string()), Field::Number(deleted)]);
            output::emit_raw(&records.render(format, Shape::One))?;
            Ok(Outcome::Success)
        }
        LeaseCommand::Ttl { id, keys } => {
            let status = client
                .lease_time_to_live(id)
                .await
                .with_context(|| format!("lease ttl {id}"))?;
            let mut columns = vec![
                Column::new("id"),
                Column::new("granted_ttl_ms"),
                Column::new("remaining_ms"),
                Column::new("expires_at_ts"),
                Column::new("key_count"),
            ];
            let mut row = vec![
                Field::Text(id.to_string()),
                Field::Number(millis(status.lease.ttl)),
                Field::Number(millis(status.remaining)),
                Field::Number(status.lease.expires_at_ts),
                Field::Number(status.keys.len() as u64),
            ];
            if keys {
                columns.push(Column::new("keys"));
                let names: Vec<String> = status.keys.iter().map(|key| output::display_bytes(key)).collect();
                row.push(Field::Text(names.join(",")));
            }
            let mut records = Records::new(&columns, "remaining_ms");
            records.push(row);
            output::emit_raw(&records.render(format, Shape::One))?;
            Ok(Outcome::Success)
        }
        LeaseCommand::List => {
            let ids = client.lease_list().await.context("lease list")?;
            let mut records = Records::new(&[Column::new("id")], "id");
            for id in ids {
                records.push(vec![Field::Text(id.to_string())]);
            }
            output::emit_raw(&records.render(format, Shape::Many))?;
            Ok(Outcome::Success)
        }
    }
}

/// One lease: id, TTL and deadline.
fn print_lease(lease: &Lease, format: Format) -> anyhow::Result<Outcome> {
    let mut records = Records::new(
        &[
            Column::new("id"),
            Column::new("ttl_ms"),
            Column::new("expires_at_ts"),
        ],
        "id",
    );
    records.push(vec![
        Field::Text(lease.id.to_string()),
        Field::Number(millis(lease.ttl)),
        Field::Number(lease.expires_at_ts),
    ]);
    output::emit_raw(&records.render(format, Shape::One))?;
    Ok(Outcome::Success)
}

/// `lease keep-alive ID`: a line per extension until interrupted or the lease is lost.
async fn keep_alive(client: &Client, id: LeaseId, format: Format) -> anyhow::Result<Outcome> {
    if matches!(format, Format::Tsv | Format::Raw) {
        return Err(UsageError(format!(
            "-o {} is not for `lease keep-alive`: it prints lines (table) or JSON lines",
            format.name()
        ))
        .into());
    }
    let first = client
        .lease_keep_alive_once(id)
        .await
        .with_context(|| format!("lease keep-alive {id}"))?;
    let keeper = client.keep_lease_alive(first);
    let mut state = first.expires_at_ts;
    print_extension(id, state, format)?;
    let mut ticks = tokio::time::interval(first.ttl / 3);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                keeper.shutdown().await;
                return Ok(Outcome::Success);
            }
            why = keeper.lost() => {
                eprintln!("lease {id} lost: {why}");
                return Ok(Outcome::NotFound);
            }
            // Print each extension the keeper made (checked at its own pace).
            _ = ticks.tick() => {
                if let ringkv_client::KeeperState::Alive { expires_at_ts } = keeper.state() {
                    if expires_at_ts != state {
                        state = expires_at_ts;
                        print_extension(id, state, format)?;
                    }
                }
            }
        }
    }
}

fn print_extension(id: LeaseId, expires_at_ts: u64, format: Format) -> anyhow::Result<()> {
    let line = match format {
        Format::Json | Format::Jsonl => {
            serde_json::json!({"id": id.to_string(), "expires_at_ts": expires_at_ts}).to_string()
        }
        _ => format!("lease {id} kept alive until {expires_at_ts}"),
    };
    output::emit(&line)?;
    Ok(())
}
