//! Keys that expire (issue 16, TTL) through a real router and nodes: `put --ttl`, `ttl`,
//! `expire`, `persist` and compare-and-set with a TTL, in the client library and kvctl.
//! Expiry is oracle time decided inside Raft; every wait here is a condition with a timeout.

use std::process::Output;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ringkv_client::{CasOutcome, Client, CountOptions, KeyRange, ReadConsistency, ScanOptions, Ttl};
use ringkv_tests::{wait_until, Cluster, ClusterOptions, WAIT};
use serde_json::Value;

/// How long the tests' short-lived keys live.
const SHORT_TTL: Duration = Duration::from_millis(1_500);

/// The keys under `prefix` as a scan and a count see them now, and as a get of `keys`
/// does; then the same at one oracle timestamp.
async fn views(client: &Client, prefix: &str, keys: &[&str]) -> Result<Vec<Vec<String>>> {
    let range = KeyRange::prefix(prefix);
    let mut views = Vec::new();
    for at_timestamp in [false, true] {
        // The timestamp is taken after the reads of the latest values.
        let consistency = match at_timestamp {
            false => ReadConsistency::Linearizable,
            true => ReadConsistency::At(client.timestamp().await?),
        };
        let page = client
            .scan(
                &range,
                &ScanOptions::new().limit(100).consistency(consistency),
                None,
            )
            .await?;
        views.push(
            page.entries
                .iter()
                .map(|entry| String::from_utf8_lossy(&entry.key).into_owned())
                .collect(),
        );
        let mut found = Vec::new();
        for key in keys {
            if client.get_with(key, consistency).await?.is_some() {
                found.push((*key).to_string());
            }
        }
        let counted = client
            .count(&range, &CountOptions::new().consistency(consistency))
            .await?;
        ensure!(
            counted.count == found.len() as u64,
            "count {} at {consistency:?}, gets found {found:?}",
            counted.count
        );
        views.push(found);
    }
    Ok(views)
}

/// A value put with a TTL is there, with its time left, until the TTL passes and then gone
/// for gets, scans and counts alike (of the latest values and at a timestamp); a key
/// without a TTL stays; `ttl` tells a key that never expires from a missing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_put_with_a_ttl_vanishes_for_every_read() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.client().await?;
    let keys = ["ttl/a", "ttl/b", "ttl/keep"];
    client.put("ttl/keep", "stays").await?;
    client.put_with_ttl("ttl/a", "a", SHORT_TTL).await?;
    client.put_with_ttl("ttl/b", "b", SHORT_TTL).await?;
    match client.ttl("ttl/a").await? {
        Ttl::Expires { remaining, .. } => {
            ensure!(remaining <= SHORT_TTL, "{remaining:?} left of {SHORT_TTL:?}")
        }
        other => anyhow::bail!("ttl/a: {other:?}"),
    }
    ensure!(client.ttl("ttl/keep").await? == Ttl::Persistent);
    ensure!(client.ttl("ttl/missing").await? == Ttl::Missing);
    // Right after the puts (well within the TTL) the three keys are there; at one
    // timestamp a scan, gets and a count agree exactly.
    let all: Vec<String> = keys.iter().map(|key| key.to_string()).collect();
    let before = views(&client, "ttl/", &keys).await?;
    ensure!(
        before[2] == before[3],
        "a scan and gets at one timestamp: {before:?}"
    );
    ensure!(
        before[0].contains(&all[2]) && before[0].len() <= all.len(),
        "{before:?}"
    );
    for key in ["ttl/a", "ttl/b"] {
        wait_until(key, WAIT, || async {
            matches!(client.get(key).await, Ok(None)).then_some(())
        })
        .await?;
    }
    let after = views(&client, "ttl/", &keys).await?;
    for view in &after {
        ensure!(*view == vec!["ttl/keep".to_string()], "after the TTL: {after:?}");
    }
    ensure!(client.ttl("ttl/a").await? == Ttl::Missing);
    Ok(())
}

/// `persist` keeps a key past its TTL; `expire` gives a key one; neither touches a missing
/// key, and `persist` of a key without an expiry changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_keeps_a_key_and_expire_gives_one() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.client().await?;
    let version = client.put_with_ttl("p/kept", "v", SHORT_TTL).await?;
    let Ttl::Expires { expires_at_ts, .. } = client.ttl("p/kept").await? else {
        anyhow::bail!("p/kept has no expiry");
    };
    let persisted = client.persist("p/kept").await?.context("persist applied")?;
    ensure!(persisted > version, "a new version: {persisted} after {version}");
    ensure!(client.ttl("p/kept").await? == Ttl::Persistent);
    wait_until("the oracle to pass the old expiry", WAIT, || async {
        matches!(client.timestamp().await, Ok(now) if now > expires_at_ts).then_some(())
    })
    .await?;
    let kept = client.get("p/kept").await?.context("p/kept after its old TTL")?;
    ensure!(kept.value == b"v" && kept.version == persisted);

    ensure!(
        client.persist("p/kept").await?.is_none(),
        "nothing left to persist"
    );
    ensure!(client.persist("p/missing").await?.is_none());
    ensure!(client.expire("p/missing", SHORT_TTL).await?.is_none());
    client.put("p/later", "w").await?;
    client
        .expire("p/later", SHORT_TTL)
        .await?
        .context("expire applied")?;
    ensure!(matches!(client.ttl("p/later").await?, Ttl::Expires { .. }));
    wait_until("p/later to expire", WAIT, || async {
        matches!(client.get("p/later").await, Ok(None)).then_some(())
    })
    .await?;
    Ok(())
}

/// A compare-and-set with a TTL writes an expiring value; once it expired the key counts as
/// absent (version 0), so a CAS expecting absence wins again and one expecting the old
/// version loses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_with_a_ttl() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let client = cluster.client().await?;
    let CasOutcome::Swapped { new_version } = client
        .compare_and_swap_with_ttl("cas/lock", 0, "holder-1", SHORT_TTL)
        .await?
    else {
        anyhow::bail!("the first CAS on an absent key must win");
    };
    let held = client
        .compare_and_swap_with_ttl("cas/lock", 0, "holder-2", SHORT_TTL)
        .await?;
    ensure!(matches!(held, CasOutcome::Mismatch { .. }), "{held:?}");
    ensure!(matches!(client.ttl("cas/lock").await?, Ttl::Expires { .. }));
    wait_until("cas/lock to expire", WAIT, || async {
        matches!(client.get("cas/lock").await, Ok(None)).then_some(())
    })
    .await?;
    let stale = client
        .compare_and_swap_with_ttl("cas/lock", new_version, "holder-1", SHORT_TTL)
        .await?;
    ensure!(
        matches!(stale, CasOutcome::Mismatch { current: None }),
        "{stale:?}"
    );
    let again = client
        .compare_and_swap_with_ttl("cas/lock", 0, "holder-2", SHORT_TTL)
        .await?;
    ensure!(matches!(again, CasOutcome::Swapped { .. }), "{again:?}");
    Ok(())
}

/// Runs kvctl against the cluster's router.
async fn kvctl(cluster: &Cluster, args: &[&str]) -> Result<Output> {
    cluster.kvctl(args).await
}

/// kvctl's stdout as JSON, after checking it exited with `code`.
fn json_of(output: &Output, code: i32, what: &str) -> Result<Value> {
    ensure!(
        output.status.code() == Some(code),
        "{what}: exit {:?}, expected {code}; stderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).with_context(|| format!("{what}: JSON"))
}

/// kvctl `put --ttl`, `ttl`, `persist`, `expire` and `cas --ttl` end to end: JSON output,
/// a missing key exits 1, an expired key is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvctl_ttl_commands() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    json_of(
        &kvctl(&cluster, &["-o", "json", "put", "k/1", "v", "--ttl", "60s"]).await?,
        0,
        "put",
    )?;
    let ttl = json_of(&kvctl(&cluster, &["-o", "json", "ttl", "k/1"]).await?, 0, "ttl")?;
    let left = ttl["ttl_ms"].as_u64().context("ttl_ms")?;
    ensure!(left > 0 && left <= 60_000, "{ttl}");
    ensure!(ttl["persistent"] == Value::Bool(false), "{ttl}");
    json_of(
        &kvctl(&cluster, &["-o", "json", "persist", "k/1"]).await?,
        0,
        "persist",
    )?;
    let ttl = json_of(&kvctl(&cluster, &["-o", "json", "ttl", "k/1"]).await?, 0, "ttl")?;
    ensure!(
        ttl["persistent"] == Value::Bool(true) && ttl.get("ttl_ms").is_none(),
        "{ttl}"
    );
    let missing = kvctl(&cluster, &["ttl", "k/none"]).await?;
    ensure!(
        missing.status.code() == Some(1),
        "ttl of a missing key: {missing:?}"
    );
    json_of(
        &kvctl(&cluster, &["-o", "json", "expire", "k/1", "1500ms"]).await?,
        0,
        "expire",
    )?;
    wait_until("k/1 to expire", WAIT, || async {
        let get = kvctl(&cluster, &["get", "k/1"]).await.ok()?;
        (get.status.code() == Some(1)).then_some(())
    })
    .await?;
    let cas = kvctl(
        &cluster,
        &[
            "-o",
            "json",
            "cas",
            "k/1",
            "--expect-version",
            "0",
            "w",
            "--ttl",
            "60s",
        ],
    )
    .await?;
    let cas = json_of(&cas, 0, "cas --ttl")?;
    ensure!(cas["swapped"] == Value::Bool(true), "{cas}");
    let ttl = json_of(&kvctl(&cluster, &["-o", "json", "ttl", "k/1"]).await?, 0, "ttl")?;
    ensure!(ttl["ttl_ms"].as_u64().is_some_and(|left| left > 0), "{ttl}");
    let bad = kvctl(&cluster, &["put", "k/2", "v", "--ttl", "0s"]).await?;
    ensure!(
        bad.status.code() == Some(64),
        "a zero TTL is a usage error: {bad:?}"
    );
    Ok(())
}
