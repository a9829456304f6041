//! Locks and leader elections on leases, with fencing tokens (issue 16).
//!
//! A lock (or an election) named `NAME` is the key `NAME`: holding it is having created
//! it, attached to one's lease (see `lease.rs`), with the value `<lease id>:<proposal>`
//! (the proposal is empty for a lock). Acquiring is a compare-and-set on absence; a waiter
//! watches the key from a timestamp taken before its failed attempt and tries again when
//! the key is deleted, or when the holder's deadline passes without a keep-alive (an
//! expired key may be deleted by the background purge only later) — so it waits on the
//! watch and on one timer per holder deadline, never in a tight loop. Waiters are not
//! queued: whoever's compare-and-set lands first wins.
//!
//! The **fencing token** is the oracle commit timestamp of the write that created the
//! key, read back from the key's watch history. Commit timestamps are globally monotonic,
//! and a holder's key is created only after the previous holder's was deleted or expired,
//! so tokens strictly increase across successive holders of the same name. (Versions are
//! log indexes of the key's shard: monotonic only while the key stays in one Raft log;
//! the oracle's timestamps do not depend on where the key lives.) A holder's key is
//! rewritten by every keep-alive (new versions), but the token stays that of its creation.
//!
//! What a lock does not promise: mutual exclusion under process pauses or clock faults.
//! A holder paused past its lease's deadline still believes it holds the lock while
//! another does; only a resource that refuses tokens lower than the highest it has seen
//! is safe (README "Leases, locks and elections").
//!
//! ```no_run
//! # async fn example(client: ringkv_client::Client) -> Result<(), ringkv_client::Error> {
//! use std::time::Duration;
//!
//! let lease = client.lease_grant(Duration::from_secs(10)).await?;
//! let keeper = client.keep_lease_alive(lease); // every TTL/3, until shut down or lost
//! let held = client.lock("jobs/nightly", lease.id).await?;
//! // Send held.fencing_token with every write to the guarded resource; stop when
//! // keeper.lost() resolves.
//! client.unlock(&held).await?;
//! keeper.shutdown().await;
//! client.lease_revoke(lease.id).await?;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use futures::stream::{self, Stream, StreamExt};
use tracing::debug;

use crate::lease::{oracle_time_until, AttachWrite, Attached, LeaseId};
use crate::watch::{WatchEventKind, WatchOptions, WatchStream, WatchTarget};
use crate::{Client, Error};

/// How long the write that created a held key may take to show in its watch history.
pub const TOKEN_LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a waiter sleeps before it looks at the lock again, whatever the holder's
/// deadline (a bounded poll behind the watch, in case the holder's deadline moves far).
pub const MAX_WAIT_SLICE: Duration = Duration::from_secs(30);
/// The least an observer waits before it reads a leader's key at its deadline again (the
/// oracle may still be a millisecond short of it): bounds the re-reads to a slow poll.
pub const MIN_DEADLINE_RECHECK: Duration = Duration::from_millis(20);

/// A lock or leadership held: the key, the lease it is attached to, its fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub key: Vec<u8>,
    pub lease: LeaseId,
    /// The oracle commit timestamp of the write that created the key: strictly greater
    /// than every earlier holder's.
    pub fencing_token: u64,
    pub proposal: Vec<u8>,
}

/// A leader of an election, as an observer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub lease: LeaseId,
    pub proposal: Vec<u8>,
    /// The leader's fencing token, when the observer saw its key created (not for the
    /// leader already in place when observation began).
    pub fencing_token: Option<u64>,
}

/// The value of a held key.
fn holder_value(lease: LeaseId, proposal: &[u8]) -> Vec<u8> {
    let mut value = format!("{lease}:").into_bytes();
    value.extend_from_slice(proposal);
    value
}

/// The lease and proposal of a held key's value; `None` when it is not one.
fn parse_holder(value: &[u8]) -> Option<(LeaseId, Vec<u8>)> {
    let colon = value.iter().position(|byte| *byte == b':')?;
    let lease = std::str::from_utf8(value.get(..colon)?).ok()?.parse().ok()?;
    Some((lease, value.get(colon + 1..)?.to_vec()))
}

impl Client {
    /// Acquires the lock `name` with lease `lease`, waiting while someone else holds it.
    /// The lock is released by [`Client::unlock`], by revoking the lease, or when the
    /// lease expires.
    pub async fn lock(&self, name: impl AsRef<[u8]>, lease: LeaseId) -> Result<Held, Error> {
        self.campaign(name, Vec::new(), lease).await
    }

    /// Campaigns in election `name` with `proposal`: waits until this lease holds the
    /// leadership (as [`Client::lock`]).
    pub async fn campaign(
        &self,
        name: impl AsRef<[u8]>,
        proposal: impl Into<Vec<u8>>,
        lease: LeaseId,
    ) -> Result<Held, Error> {
        let key = name.as_ref().to_vec();
        let proposal = proposal.into();
        let value = holder_value(lease, &proposal);
        loop {
            let before_ts = self.timestamp().await?;
            match self
                .attach(lease, vec![(key.clone(), AttachWrite::Create(value.clone()))])
                .await?
            {
                Attached::Written { versions, .. } => {
                    let version = versions.first().copied().unwrap_or(0);
                    let mut held = Held {
                        key,
                        lease,
                        fencing_token: 0,
                        proposal,
                    };
                    match self.creation_ts(&held.key, version, before_ts).await {
                        Ok(fencing_token) => held.fencing_token = fencing_token,
                        Err(err) => {
                            // Held without a token is of no use: let go before failing.
                            if let Err(unlock_err) = self.unlock(&held).await {
                                debug!(%unlock_err, "could not release a lock whose token was not found");
                            }
                            return Err(err);
                        }
                    }
                    return Ok(held);
                }
                Attached::Taken => self.wait_for_release(&key, before_ts).await?,
            }
        }
    }

    /// Releases a lock or leadership held by `held`'s lease; `false` when it no longer
    /// held it (its lease expired and maybe someone else holds it now). The lease lives on.
    pub async fn unlock(&self, held: &Held) -> Result<bool, Error> {
        for _ in 0..crate::lease::MAX_RECORD_RACES {
            let Some(current) = self.get(&held.key).await? else {
                return Ok(false);
            };
            if parse_holder(&current.value).map(|(lease, _)| lease) != Some(held.lease) {
                return Ok(false);
            }
            // A keep-alive may rewrite the key (a new version) meanwhile: read again.
            if self
                .compare_and_swap(&held.key, current.version, None)
                .await?
                .is_swapped()
            {
                return Ok(true);
            }
        }
        Err(Error::Unavailable("the lock kept changing under unlock".into()))
    }

    /// The current leader of election `name` (or holder of lock `name`), if any.
    pub async fn leader(&self, name: impl AsRef<[u8]>) -> Result<Option<Leader>, Error> {
        let current = self.get(name.as_ref()).await?;
        Ok(current.and_then(|current| {
            let (lease, proposal) = parse_holder(&current.value)?;
            Some(Leader {
                lease,
                proposal,
                fencing_token: None,
            })
        }))
    }

    /// Every leader of election `name` as it changes, the current one first: a stream
    /// that lasts as long as the watch under it.
    pub fn observe(
        &self,
        name: impl AsRef<[u8]>,
    ) -> impl Stream<Item = Result<Leader, Error>> + Send + 'static {
        self.observe_changes(name)
            .filter_map(|item: Result<Option<Leader>, Error>| std::future::ready(item.transpose()))
    }

    /// [`Client::observe`] with vacancies: `None` when the election has no leader — at the
    /// start, once the leader's key is deleted (resigned, revoked, purged), or once its
    /// deadline passes without a keep-alive (looked at with a read then: an expired key is
    /// invisible at once but deleted by the background purge only later). A vacancy is
    /// reported once, until the next leader.
    pub fn observe_changes(
        &self,
        name: impl AsRef<[u8]>,
    ) -> impl Stream<Item = Result<Option<Leader>, Error>> + Send + 'static {
        struct Observing {
            client: Client,
            key: Vec<u8>,
            watch: Option<WatchStream>,
            /// The leader's lease; `None` while vacant.
            last: Option<LeaseId>,
            /// The leader key's expiry (oracle timestamp), looked at when it passes.
            deadline: Option<u64>,
        }
        let start = Observing {
            client: self.clone(),
            key: name.as_ref().to_vec(),
            watch: None,
            last: None,
            deadline: None,
        };
        stream::unfold(Some(start), |state| async move {
            let mut state = state?;
            let Some(watch) = state.watch.as_mut() else {
                let opened = async {
                    let since = state.client.timestamp().await?;
                    let current = state.client.holder_with_deadline(&state.key).await?;
                    let watch = state
                        .client
                        .watch(WatchOptions::new(WatchTarget::Key(state.key.clone())).after(since));
                    Ok::<_, Error>((current, watch))
                };
                return match opened.await {
                    Err(err) => Some((Err(err), None)),
                    Ok((current, watch)) => {
                        state.watch = Some(watch);
                        state.last = current.as_ref().map(|(leader, _)| leader.lease);
                        state.deadline = current.as_ref().and_then(|(_, deadline)| *deadline);
                        Some((Ok(current.map(|(leader, _)| leader)), Some(state)))
                    }
                };
            };
            loop {
                let wait = match state.deadline {
                    None => None,
                    Some(deadline) => match state.client.timestamp().await {
                        Ok(now_ts) => Some(oracle_time_until(deadline, now_ts).max(MIN_DEADLINE_RECHECK)),
                        Err(err) => return Some((Err(err), None)),
                    },
                };
                let event = tokio::select! {
                    event = watch.next() => Some(event),
                    () = tokio::time::sleep(wait.unwrap_or(MAX_WAIT_SLICE)), if wait.is_some() => None,
                };
                let vacant_or_new = match event {
                    // The deadline passed with no event: is the leader still there?
                    None => match state.client.holder_with_deadline(&state.key).await {
                        Err(err) => return Some((Err(err), None)),
                        // Kept alive (its event not seen yet): wait for the new deadline.
                        Ok(Some((leader, deadline))) if state.last == Some(leader.lease) => {
                            state.deadline = deadline;
                            continue;
                        }
                        // Gone, or another leader already: the old one's term is over (a
                        // new leader is reported with its fencing token from its event).
                        Ok(_) => None,
                    },
                    Some(None) => return None,
                    Some(Some(Err(err))) => return Some((Err(err), None)),
                    Some(Some(Ok(event))) => match event.kind {
                        WatchEventKind::Delete => None,
                        WatchEventKind::Put => {
                            let Some((lease, proposal)) = parse_holder(&event.value) else {
                                continue;
                            };
                            // A keep-alive moves the deadline; a new leader brings its own.
                            let deadline = match state.client.get_expiring(&state.key).await {
                                Ok(found) => found.and_then(|found| found.expires_at_ts),
                                Err(err) => return Some((Err(err), None)),
                            };
                            let leader = Leader {
                                lease,
                                proposal,
                                fencing_token: Some(event.commit_ts),
                            };
                            Some((leader, deadline))
                        }
                    },
                };
                match vacant_or_new {
                    None => {
                        state.deadline = None;
                        if state.last.take().is_some() {
                            return Some((Ok(None), Some(state)));
                        }
                    }
                    Some((leader, deadline)) => {
                        state.deadline = deadline;
                        if state.last != Some(leader.lease) {
                            state.last = Some(leader.lease);
                            return Some((Ok(Some(leader)), Some(state)));
                        }
                    }
                }
            }
        })
    }

    /// The holder of `key` and its key's expiry (oracle timestamp), if held.
    async fn holder_with_deadline(&self, key: &[u8]) -> Result<Option<(Leader, Option<u64>)>, Error> {
        let Some(found) = self.get_expiring(key).await? else {
            return Ok(None);
        };
        Ok(parse_holder(&found.value.value).map(|(lease, proposal)| {
            let leader = Leader {
                lease,
                proposal,
                fencing_token: None,
            };
            (leader, found.expires_at_ts)
        }))
    }

    /// The commit timestamp of the write that gave `key` version `version`, committed
    /// after `after_ts`: read from the key's watch history.
    async fn creation_ts(&self, key: &[u8], version: u64, after_ts: u64) -> Result<u64, Error> {
        let mut watch = self.watch(WatchOptions::new(WatchTarget::Key(key.to_vec())).after(after_ts));
        let found = tokio::time::timeout(TOKEN_LOOKUP_TIMEOUT, async {
            while let Some(event) = watch.next().await {
                let event = event?;
                if event.kind == WatchEventKind::Put && event.version == version {
                    return Ok(event.commit_ts);
                }
            }
            Err(Error::Unavailable("the watch for the fencing token ended".into()))
        })
        .await;
        match found {
            Ok(token) => token,
            Err(_) => Err(Error::DeadlineExceeded(format!(
                "the lock's creation did not show in its watch within {TOKEN_LOOKUP_TIMEOUT:?}"
            ))),
        }
    }

    /// Waits until `key` may be free: deleted after `since_ts` (seen by a watch), or its
    /// holder's deadline passed, or [`MAX_WAIT_SLICE`].
    async fn wait_for_release(&self, key: &[u8], since_ts: u64) -> Result<(), Error> {
        let mut watch = self.watch(WatchOptions::new(WatchTarget::Key(key.to_vec())).after(since_ts));
        let Some(holder) = self.get_expiring(key).await? else {
            return Ok(());
        };
        let wait = match holder.expires_at_ts {
            Some(expires_at_ts) => {
                let now_ts = self.timestamp().await?;
                // A millisecond past the deadline: the key is expired from then on.
                (crate::lease::oracle_time_until(expires_at_ts, now_ts) + Duration::from_millis(1))
                    .min(MAX_WAIT_SLICE)
            }
            None => MAX_WAIT_SLICE,
        };
        let deleted = async {
            while let Some(event) = watch.next().await {
                if event?.kind == WatchEventKind::Delete {
                    return Ok(());
                }
            }
            Ok::<(), Error>(())
        };
        match tokio::time::timeout(wait, deleted).await {
            Ok(outcome) => outcome,
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A held key's value names its lease and proposal; other values are not holders.
    #[test]
    fn holder_values_round_trip() {
        let value = holder_value(LeaseId(0xabc), b"node-1:8080");
        assert_eq!(value, b"0000000000000abc:node-1:8080".to_vec());
        assert_eq!(
            parse_holder(&value),
            Some((LeaseId(0xabc), b"node-1:8080".to_vec()))
        );
        assert_eq!(
            parse_holder(b"0000000000000abc:"),
            Some((LeaseId(0xabc), Vec::new()))
        );
        assert_eq!(parse_holder(b"plain value"), None);
    }
}
