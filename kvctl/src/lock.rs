//! `kvctl lock NAME [-- COMMAND ARGS]` and `kvctl elect NAME PROPOSAL | --listen NAME`
//! (issue 16), as etcdctl's, on a lease of their own kept alive while they run.
//!
//! `lock` prints the lock's key and fencing token when it holds the lock, then holds it
//! until interrupted — or runs COMMAND with the token in `RINGKV_LOCK_TOKEN` (and the key
//! and lease in `RINGKV_LOCK_KEY`, `RINGKV_LOCK_LEASE`), releases, and exits with the
//! command's status. The token is what a resource should check: a holder paused past its
//! lease can still believe it holds the lock (README "Leases, locks and elections").
//! Interrupting (Ctrl-C, SIGTERM) revokes the lease, which releases at once; a holder that
//! dies releases when its lease expires.

use std::ffi::OsString;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures::TryStreamExt;
use ringkv_client::{Client, Held, LeaseKeeper};
use tokio::signal::unix::{signal, SignalKind};

use crate::exit::{Outcome, UsageError, EXIT_FAILURE};
use crate::output::{self, display_bytes, Format};

/// Arguments of `kvctl lock`.
#[derive(Args, Debug)]
pub struct LockArgs {
    /// The lock's name: the key that marks it held.
    pub name: String,
    /// The TTL of the lock's lease: how long the lock outlives a holder that died
    /// (etcdctl's default is 60 s; a shorter one frees a dead holder's lock sooner).
    #[arg(long, value_parser = crate::ttl::parse_ttl, default_value = "10s")]
    pub ttl: Duration,
    /// Run this command while holding the lock (after `--`), then release.
    #[arg(last = true)]
    pub command: Vec<OsString>,
}

/// Arguments of `kvctl elect`.
#[derive(Args, Debug)]
pub struct ElectArgs {
    /// The election's name: the key that names the leader.
    pub name: String,
    /// What this campaigner proposes (e.g. its address); printed by observers.
    #[arg(required_unless_present = "listen", conflicts_with = "listen")]
    pub proposal: Option<String>,
    /// Print each leader as it changes instead of campaigning.
    #[arg(long)]
    pub listen: bool,
    /// The TTL of the campaign's lease.
    #[arg(long, value_parser = crate::ttl::parse_ttl, default_value = "10s")]
    pub ttl: Duration,
}

/// A line about a held lock or leadership: table or JSON.
fn held_line(what: &str, held: &Held, format: Format) -> String {
    match format {
        Format::Json | Format::Jsonl => {
            let mut object = output::keyed_object(&held.key);
            object.insert("lease".to_string(), held.lease.to_string().into());
            object.insert("fencing_token".to_string(), held.fencing_token.into());
            if what == "leader" {
                output::insert_bytes(&mut object, "proposal", &held.proposal);
            }
            serde_json::Value::Object(object).to_string()
        }
        _ => format!(
            "{what} {} (lease {}, fencing token {})",
            display_bytes(&held.key),
            held.lease,
            held.fencing_token
        ),
    }
}

fn lines_only(format: Format, command: &str) -> Result<(), UsageError> {
    match format {
        Format::Tsv | Format::Raw => Err(UsageError(format!(
            "-o {} is not for `{command}`: it prints lines (table) or JSON lines",
            format.name()
        ))),
        _ => Ok(()),
    }
}

/// Grants a lease of `ttl` and keeps it alive.
async fn own_lease(client: &Client, ttl: Duration) -> anyhow::Result<LeaseKeeper> {
    let lease = client.lease_grant(ttl).await.context("lease grant")?;
    Ok(client.keep_lease_alive(lease))
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

/// Ends the lease (which releases what it holds) and its keep-alive.
async fn release(client: &Client, keeper: LeaseKeeper) {
    let id = keeper.id();
    keeper.shutdown().await;
    if let Err(err) = client.lease_revoke(id).await {
        eprintln!("could not revoke lease {id} (the lock is released when it expires): {err}");
    }
}

/// `kvctl lock`.
pub async fn lock(client: &Client, args: LockArgs, format: Format) -> anyhow::Result<Outcome> {
    lines_only(format, "lock")?;
    if args.name.is_empty() {
        return Err(UsageError("a lock needs a non-empty NAME".into()).into());
    }
    let keeper = own_lease(client, args.ttl).await?;
    let acquired = tokio::select! {
        held = client.lock(&args.name, keeper.id()) => held,
        outcome = interrupted() => {
            release(client, keeper).await;
            return outcome.map(|()| Outcome::Success);
        }
    };
    let held = match acquired.with_context(|| format!("lock {}", args.name)) {
        Ok(held) => held,
        Err(err) => {
            release(client, keeper).await;
            return Err(err);
        }
    };
    output::emit(&held_line("locked", &held, format))?;
    let Some((program, program_args)) = args.command.split_first() else {
        return hold(client, keeper).await;
    };
    let mut child = match tokio::process::Command::new(program)
        .args(program_args)
        .env("RINGKV_LOCK_TOKEN", held.fencing_token.to_string())
        .env("RINGKV_LOCK_KEY", &args.name)
        .env("RINGKV_LOCK_LEASE", held.lease.to_string())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            release(client, keeper).await;
            return Err(UsageError(format!("cannot run {}: {err}", program.to_string_lossy())).into());
        }
    };
    let status = tokio::select! {
        status = child.wait() => status.context("waiting for the command")?,
        outcome = interrupted() => {
            // Interrupted while the command runs: stop it, then release.
            let _ = child.kill().await;
            release(client, keeper).await;
            outcome?;
            eprintln!("interrupted: the command was stopped and the lock released");
            return Ok(Outcome::Exit(EXIT_FAILURE));
        }
        why = keeper.lost() => {
            // The lock may be someone else's now: stop the command.
            let _ = child.kill().await;
            eprintln!("lock lost while the command ran, the command was killed: {why}");
            return Ok(Outcome::Exit(EXIT_FAILURE));
        }
    };
    release(client, keeper).await;
    let code = status
        .code()
        .and_then(|code| u8::try_from(code).ok())
        .unwrap_or(EXIT_FAILURE);
    Ok(Outcome::Exit(code))
}

/// Holds until interrupted (then releases) or the lease is lost (exit 1).
async fn hold(client: &Client, keeper: LeaseKeeper) -> anyhow::Result<Outcome> {
    tokio::select! {
        outcome = interrupted() => {
            release(client, keeper).await;
            outcome.map(|()| Outcome::Success)
        }
        why = keeper.lost() => {
            eprintln!("lost: {why}");
            Ok(Outcome::Exit(EXIT_FAILURE))
        }
    }
}

/// `kvctl elect`.
pub async fn elect(client: &Client, args: ElectArgs, format: Format) -> anyhow::Result<Outcome> {
    lines_only(format, "elect")?;
    if args.name.is_empty() {
        return Err(UsageError("an election needs a non-empty NAME".into()).into());
    }
    let Some(proposal) = args.proposal.filter(|_| !args.listen) else {
        return listen(client, &args.name, format).await;
    };
    let keeper = own_lease(client, args.ttl).await?;
    let elected = tokio::select! {
        held = client.campaign(&args.name, proposal.into_bytes(), keeper.id()) => held,
        outcome = interrupted() => {
            release(client, keeper).await;
            return outcome.map(|()| Outcome::Success);
        }
    };
    let held = match elected.with_context(|| format!("elect {}", args.name)) {
        Ok(held) => held,
        Err(err) => {
            release(client, keeper).await;
            return Err(err);
        }
    };
    output::emit(&held_line("leader", &held, format))?;
    hold(client, keeper).await
}

/// `kvctl elect --listen NAME`: a line per leader, and one per vacancy (`no leader`; JSON
/// `{"vacant": true}`) when the leader resigned, its lease was revoked or it expired.
async fn listen(client: &Client, name: &str, format: Format) -> anyhow::Result<Outcome> {
    let mut changes = Box::pin(client.observe_changes(name));
    loop {
        let next = tokio::select! {
            next = changes.try_next() => next.with_context(|| format!("elect --listen {name}"))?,
            outcome = interrupted() => return outcome.map(|()| Outcome::Success),
        };
        let Some(change) = next else {
            return Ok(Outcome::Success);
        };
        let json = matches!(format, Format::Json | Format::Jsonl);
        let line = match change {
            None if json => serde_json::json!({ "vacant": true }).to_string(),
            None => "no leader".to_string(),
            Some(leader) if json => {
                let mut object = serde_json::Map::new();
                object.insert("vacant".to_string(), false.into());
                object.insert("lease".to_string(), leader.lease.to_string().into());
                output::insert_bytes(&mut object, "proposal", &leader.proposal);
                object.insert("fencing_token".to_string(), leader.fencing_token.into());
                serde_json::Value::Object(object).to_string()
            }
            Some(leader) => {
                let token = leader
                    .fencing_token
                    .map_or_else(|| "-".to_string(), |token| token.to_string());
                format!(
                    "{} (lease {}, fencing token {token})",
                    display_bytes(&leader.proposal),
                    leader.lease
                )
            }
        };
        output::emit(&line)?;
    }
}
