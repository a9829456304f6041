//! Leases, locks and elections (issue 16, item 2) through a real router and nodes, in the
//! client library and kvctl: keys attached to a lease live while it is kept alive and
//! vanish when it expires or is revoked; `kvctl lock` excludes, hands its lock on when a
//! holder dies or releases, with fencing tokens strictly increasing; `kvctl elect --listen`
//! sees leaders change; bad input gets clear errors. Every wait is a condition with a
//! timeout.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use ringkv_client::{Client, Error, LeaseId, Ttl, MAX_KEYS_PER_LEASE};
use ringkv_tests::{add_user, bin_dir, grant, wait_until, Cluster, ClusterOptions, WAIT};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The TTL of the tests' leases: short, so expiry comes quickly, and long enough for a
/// debug build on a loaded machine to keep it alive.
const SHORT_TTL: Duration = Duration::from_secs(2);

/// A long-running kvctl (lock, elect) whose stdout lines the test reads.
struct Running {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Running {
    fn spawn(cluster: &Cluster, args: &[&str]) -> Result<Running> {
        let router = cluster.router_addr.clone().context("no router")?;
        let mut child = Command::new(bin_dir()?.join("kvctl"))
            .env_remove("RINGKV_ENDPOINTS")
            .args(["-e", &router, "--timeout", "10000"])
            .args(args)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("spawning kvctl")?;
        let stdout = child.stdout.take().context("kvctl stdout")?;
        Ok(Running {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next line it prints, within [`WAIT`].
    async fn line(&mut self) -> Result<String> {
        match tokio::time::timeout(WAIT, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => bail!("kvctl ended without printing"),
            Ok(Err(err)) => Err(err.into()),
            Err(_) => bail!("kvctl printed nothing within {WAIT:?}"),
        }
    }

    /// Sends `signal` and waits for the process to end; its exit code.
    async fn stop(mut self, signal: i32) -> Result<Option<i32>> {
        let pid = self.child.id().context("kvctl already ended")?;
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        let sent = unsafe { libc::kill(pid as i32, signal) };
        ensure!(sent == 0, "kill({pid}, {signal}) failed");
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .context("kvctl did not end")??;
        Ok(status.code())
    }
}

/// The fencing token of a `locked ...`/`leader ...` line: `(lease L, fencing token T)`.
fn token_of(line: &str) -> Result<u64> {
    let token = line
        .rsplit("fencing token ")
        .next()
        .and_then(|rest| rest.strip_suffix(')'))
        .with_context(|| format!("no fencing token in {line:?}"))?;
    token.parse().with_context(|| format!("token in {line:?}"))
}

/// Waits until the oracle passes `ts`.
async fn oracle_passes(client: &Client, ts: u64) -> Result<()> {
    wait_until("the oracle to pass a deadline", WAIT, || async {
        matches!(client.timestamp().await, Ok(now) if now > ts).then_some(())
    })
    .await?;
    Ok(())
}

/// Keys attached to a lease share its deadline, outlive their first deadline while a
/// keeper keeps the lease alive, and vanish with the record once it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attached_keys_live_with_their_lease_and_vanish_when_it_expires() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.client().await?;
    let lease = client.lease_grant(SHORT_TTL).await?;
    client.put_with_lease("l/a", "a", lease.id).await?;
    let id = lease.id.to_string();
    let put = cluster.kvctl(&["put", "--lease", &id, "l/b", "b"]).await?;
    ensure!(put.status.success(), "kvctl put --lease: {put:?}");
    client.put("l/plain", "stays").await?;
    let status = client.lease_time_to_live(lease.id).await?;
    ensure!(
        status.keys == vec![b"l/a".to_vec(), b"l/b".to_vec()],
        "{status:?}"
    );
    for key in ["l/a", "l/b"] {
        let value = client.get_expiring(key).await?.context("attached key")?;
        ensure!(
            value.expires_at_ts == Some(status.lease.expires_at_ts),
            "{key} expires with its lease: {value:?} vs {status:?}"
        );
    }
    let listed = cluster.kvctl(&["lease", "list"]).await?;
    ensure!(
        String::from_utf8_lossy(&listed.stdout).contains(&id),
        "{listed:?}"
    );

    // Kept alive past its first deadline, the lease and its keys stay.
    let keeper = client.keep_lease_alive(lease);
    oracle_passes(&client, lease.expires_at_ts).await?;
    ensure!(client.get("l/a").await?.is_some() && client.get("l/b").await?.is_some());
    let kept = client.lease_time_to_live(lease.id).await?;
    ensure!(kept.lease.expires_at_ts > lease.expires_at_ts, "{kept:?}");

    // Without keep-alive, the keys and the lease vanish.
    keeper.shutdown().await;
    wait_until("the attached keys to vanish", WAIT, || async {
        let gone = matches!(client.get("l/a").await, Ok(None)) && matches!(client.get("l/b").await, Ok(None));
        gone.then_some(())
    })
    .await?;
    ensure!(matches!(
        client.lease_time_to_live(lease.id).await,
        Err(Error::NotFound(_))
    ));
    ensure!(
        client.get("l/plain").await?.is_some(),
        "a key without a lease stays"
    );
    let ttl = cluster.kvctl(&["lease", "ttl", &id]).await?;
    ensure!(ttl.status.code() == Some(1), "{ttl:?}");
    ensure!(
        String::from_utf8_lossy(&ttl.stderr).contains("not found"),
        "{ttl:?}"
    );
    Ok(())
}

/// Revoking a lease deletes its keys at once; the lease is gone after; bad input (an
/// unknown lease, a TTL of 0 or over a day, a lease with too many keys) gets clear errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_removes_attached_keys_and_bad_input_is_refused() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.client().await?;
    let granted = cluster.kvctl(&["-o", "json", "lease", "grant", "30s"]).await?;
    ensure!(granted.status.success(), "{granted:?}");
    let granted: serde_json::Value = serde_json::from_slice(&granted.stdout)?;
    let id = granted["id"].as_str().context("lease id")?.to_string();
    let lease: LeaseId = id.parse()?;
    for key in ["r/1", "r/2", "r/3"] {
        client.put_with_lease(key, "v", lease).await?;
    }
    // A put without the lease detaches a key (etcd's rule): a keep-alive leaves it without
    // an expiry and drops it from the lease; a revoke does not delete it.
    client.put("r/2", "mine").await?;
    let once = cluster.kvctl(&["lease", "keep-alive", "--once", &id]).await?;
    ensure!(once.status.success(), "{once:?}");
    ensure!(client.ttl("r/2").await? == Ttl::Persistent, "r/2 detached");
    let status = client.lease_time_to_live(lease).await?;
    ensure!(
        status.keys == vec![b"r/1".to_vec(), b"r/3".to_vec()],
        "{:?}",
        status.keys
    );
    ensure!(
        matches!(client.ttl("r/1").await?, Ttl::Expires { expires_at_ts, .. } if expires_at_ts == status.lease.expires_at_ts),
        "r/1 follows the lease"
    );
    client.put("r/3", "mine too").await?;
    let revoked = cluster.kvctl(&["-o", "json", "lease", "revoke", &id]).await?;
    ensure!(revoked.status.success(), "{revoked:?}");
    let revoked: serde_json::Value = serde_json::from_slice(&revoked.stdout)?;
    ensure!(revoked["keys_deleted"] == 1, "{revoked}");
    ensure!(client.get("r/1").await?.is_none(), "r/1 after revoke");
    for (key, value) in [("r/2", &b"mine"[..]), ("r/3", b"mine too")] {
        let kept = client
            .get(key)
            .await?
            .with_context(|| format!("{key} after revoke"))?;
        ensure!(kept.value == value, "{key}: {kept:?}");
    }

    // An unknown (here: revoked) lease.
    let put = cluster.kvctl(&["put", "--lease", &id, "r/4", "v"]).await?;
    ensure!(put.status.code() == Some(1), "{put:?}");
    ensure!(
        String::from_utf8_lossy(&put.stderr).contains("not found"),
        "{put:?}"
    );
    ensure!(
        client.get("r/4").await?.is_none(),
        "nothing written for a gone lease"
    );
    let again = cluster.kvctl(&["lease", "revoke", &id]).await?;
    ensure!(again.status.code() == Some(1), "{again:?}");
    // TTLs out of bounds; a malformed id.
    let zero = cluster.kvctl(&["lease", "grant", "0"]).await?;
    ensure!(zero.status.code() == Some(64), "{zero:?}");
    let long = cluster.kvctl(&["lease", "grant", "2d"]).await?;
    ensure!(long.status.code() == Some(65), "{long:?}");
    ensure!(
        String::from_utf8_lossy(&long.stderr).contains("a lease TTL is"),
        "{long:?}"
    );
    ensure!(matches!(
        client.lease_grant(Duration::ZERO).await,
        Err(Error::InvalidArgument(_))
    ));
    let bad_id = cluster.kvctl(&["lease", "ttl", "not-hex"]).await?;
    ensure!(bad_id.status.code() == Some(64), "{bad_id:?}");
    // On the wire: a TTL and an absolute expiry together.
    let both = cluster
        .kv()
        .await?
        .put(ringkv_client::proto::PutRequest {
            key: b"r/both".to_vec(),
            value: b"v".to_vec(),
            request_id: Vec::new(),
            ttl_ms: 1_000,
            expires_at_ts: client.timestamp().await?,
            lease: 0,
        })
        .await;
    match both {
        Err(status) => ensure!(
            status.code() == tonic::Code::InvalidArgument && status.message().contains("not both"),
            "{status:?}"
        ),
        Ok(reply) => bail!("a put with both expiries was taken: {reply:?}"),
    }

    // The most keys a lease holds, then one more.
    let full = client.lease_grant(Duration::from_secs(120)).await?;
    let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..MAX_KEYS_PER_LEASE)
        .map(|index| (format!("many/{index}").into_bytes(), b"v".to_vec()))
        .collect();
    let versions = client.put_many_with_lease(entries, full.id).await?;
    ensure!(versions.len() == MAX_KEYS_PER_LEASE && versions.iter().all(|version| *version > 0));
    let status = client.lease_time_to_live(full.id).await?;
    ensure!(status.keys.len() == MAX_KEYS_PER_LEASE);
    match client.put_with_lease("many/one-too-many", "v", full.id).await {
        Err(Error::InvalidArgument(message)) => {
            ensure!(message.contains("MAX_KEYS_PER_LEASE"), "{message}")
        }
        other => bail!("a key past the limit: {other:?}"),
    }
    ensure!(client.get("many/one-too-many").await?.is_none());
    ensure!(client.lease_revoke(full.id).await? == MAX_KEYS_PER_LEASE as u64);
    Ok(())
}

/// Two `kvctl lock` holders running a command never overlap, and the tokens they were
/// given strictly increase in the order they held the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_commands_exclude_each_other_with_increasing_tokens() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let dir = tempfile::tempdir()?;
    let journal = dir.path().join("journal");
    let journal = journal.to_str().context("utf-8 path")?;
    // The critical section: mark the start, linger (widening any overlap), mark the end.
    let script = format!(
        "echo \"start $RINGKV_LOCK_TOKEN\" >> {journal}; sleep 0.3; echo \"end $RINGKV_LOCK_TOKEN\" >> {journal}"
    );
    let args = ["lock", "--ttl", "5s", "locks/journal", "--", "sh", "-c", &script];
    let holders: Vec<_> = (0..3).map(|_| cluster.kvctl(&args)).collect();
    for output in futures::future::join_all(holders).await {
        let output = output?;
        ensure!(output.status.success(), "{output:?}");
    }
    let journal = std::fs::read_to_string(journal)?;
    let lines: Vec<&str> = journal.lines().collect();
    ensure!(lines.len() == 6, "three sections: {journal}");
    let mut last_token = 0;
    for section in lines.chunks(2) {
        let start = section[0].strip_prefix("start ").context("a start")?;
        let end = section[1].strip_prefix("end ").context("an end")?;
        ensure!(start == end, "sections overlap: {journal}");
        let token: u64 = start.parse()?;
        ensure!(token > last_token, "tokens increase: {journal}");
        last_token = token;
    }
    Ok(())
}

/// A waiter takes the lock when its holder is killed (its lease expires) and when a
/// holder releases it; each new holder's token is above the last; the library's
/// lock/unlock does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_takes_the_lock_after_the_holder_dies_or_releases() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.client().await?;
    let mut first = Running::spawn(&cluster, &["lock", "--ttl", "2s", "locks/w"])?;
    let first_token = token_of(&first.line().await?)?;
    let mut second = Running::spawn(&cluster, &["lock", "--ttl", "2s", "locks/w"])?;
    // The second waits: the lock's key still names the first's lease.
    let holder = client.leader("locks/w").await?.context("a holder")?;
    first.stop(libc::SIGKILL).await?;
    let second_line = second.line().await?;
    let second_token = token_of(&second_line)?;
    ensure!(second_token > first_token, "{second_token} after {first_token}");
    let now_holder = client.leader("locks/w").await?.context("a holder")?;
    ensure!(
        now_holder.lease != holder.lease,
        "the second holds it under its own lease"
    );

    // The library waits too, and takes it the moment kvctl releases (SIGTERM revokes).
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move {
            let lease = client.lease_grant(Duration::from_secs(10)).await?;
            let held = client.lock("locks/w", lease.id).await?;
            Ok::<_, Error>((lease, held))
        })
    };
    ensure!(second.stop(libc::SIGTERM).await? == Some(0));
    let (lease, held) = tokio::time::timeout(WAIT, waiter)
        .await
        .context("the library's lock")???;
    ensure!(held.fencing_token > second_token, "{held:?} after {second_token}");
    ensure!(client.unlock(&held).await?, "unlock releases");
    ensure!(client.get("locks/w").await?.is_none());
    ensure!(!client.unlock(&held).await?, "a second unlock finds nothing held");
    let again = client.lock("locks/w", lease.id).await?;
    ensure!(again.fencing_token > held.fencing_token);
    client.lease_revoke(lease.id).await?;
    Ok(())
}

/// `kvctl elect --listen` prints the leader; a vacancy once the leader dies and its lease
/// expires; the next leader with its fencing token; and a vacancy again when that one
/// resigns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_see_each_new_leader_and_vacancies() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let mut alpha = Running::spawn(&cluster, &["elect", "--ttl", "2s", "elections/e", "alpha"])?;
    let alpha_line = alpha.line().await?;
    ensure!(alpha_line.starts_with("leader elections/e"), "{alpha_line}");
    let mut listener = Running::spawn(&cluster, &["elect", "--listen", "elections/e"])?;
    let first = listener.line().await?;
    ensure!(first.starts_with("alpha "), "{first}");
    // Killed: no resignation, so the vacancy is its lease's deadline passing.
    alpha.stop(libc::SIGKILL).await?;
    let vacancy = listener.line().await?;
    ensure!(vacancy == "no leader", "{vacancy}");
    let mut beta = Running::spawn(&cluster, &["elect", "--ttl", "2s", "elections/e", "beta"])?;
    let beta_line = beta.line().await?;
    ensure!(
        token_of(&beta_line)? > token_of(&alpha_line)?,
        "{beta_line} after {alpha_line}"
    );
    let next = listener.line().await?;
    ensure!(next.starts_with("beta "), "{next}");
    ensure!(token_of(&next)? == token_of(&beta_line)?, "{next} vs {beta_line}");
    // Resigned (SIGTERM deletes its key): a vacancy again.
    ensure!(beta.stop(libc::SIGTERM).await? == Some(0));
    let resigned = listener.line().await?;
    ensure!(resigned == "no leader", "{resigned}");
    listener.stop(libc::SIGTERM).await?;
    Ok(())
}

/// With permissions on, leases and locks are plain `Kv` calls checked as always: a user
/// with write on the lease prefix and the lock's key grants, attaches and locks; without
/// write on the lease prefix, a grant is PERMISSION_DENIED naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_and_locks_need_the_permissions_of_their_keys() -> Result<()> {
    use ringkv_client::{ClientConfig, ClientTls};
    use ringkv_proto::v1::{self, change_auth_request::Change};

    let cluster = Cluster::start(ClusterOptions {
        shards: 4,
        tls: true,
        ..ClusterOptions::default()
    })
    .await?;
    let root = cluster.client().await?;
    let client_as = |user: &str| -> Result<ringkv_client::ClientConfig> {
        let identity = cluster.user_cert(user)?;
        Ok(ClientConfig::builder()
            .max_attempts(1)
            .tls(ClientTls {
                ca_pem: std::fs::read_to_string(cluster.certs()?.ca())?,
                cert_pem: identity.cert_pem.clone(),
                key_pem: identity.key_pem.clone(),
            })
            .build()?)
    };
    let router = cluster.router_addr.clone().context("a router")?;
    let carol = Client::connect_with(vec![router.clone()], client_as("carol")?).await?;
    let dave = Client::connect_with(vec![router], client_as("dave")?).await?;
    let write_grant = |role: &str, prefix: &str| grant(role, prefix, v1::Permission::Write);
    let user_with_role = |user: &str, role: &str| add_user(user, &[role]);
    for change in [
        Change::AddRole("locker".into()),
        write_grant("locker", "__ringkv/lease/"),
        write_grant("locker", "locks/"),
        Change::AddRole("no-leases".into()),
        write_grant("no-leases", "locks/"),
        user_with_role("carol", "locker"),
        user_with_role("dave", "no-leases"),
        Change::Enable(true),
    ] {
        root.change_auth(change).await?;
    }
    wait_until("the router to enforce permissions", WAIT, || async {
        dave.lease_grant(SHORT_TTL).await.is_err().then_some(())
    })
    .await?;
    match dave.lease_grant(SHORT_TTL).await {
        Err(Error::Other { code, message }) => ensure!(
            code == tonic::Code::PermissionDenied && message.contains("__ringkv/lease/"),
            "{code:?}: {message}"
        ),
        other => bail!("a grant without permission on the lease prefix: {other:?}"),
    }
    let lease = carol.lease_grant(Duration::from_secs(10)).await?;
    carol.put_with_lease("locks/attached", "v", lease.id).await?;
    let held = carol.lock("locks/p", lease.id).await?;
    ensure!(held.fencing_token > 0);
    ensure!(matches!(
        carol.put_with_lease("elsewhere/k", "v", lease.id).await,
        Err(Error::Other {
            code: tonic::Code::PermissionDenied,
            ..
        })
    ));
    carol.lease_revoke(lease.id).await?;
    ensure!(root.get("locks/p").await?.is_none() && root.get("locks/attached").await?.is_none());
    Ok(())
}
