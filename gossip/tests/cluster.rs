//! Multi-member gossip tests over real UDP sockets on 127.0.0.1 (port 0).
//!
//! Every wait is a condition re-checked on each bump of [`Gossip::watch`] under an overall
//! deadline, so the tests also check that the watch fires for every change they wait on.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use ringkv_gossip::{Gossip, GossipConfig, GossipError, Liveness, MemberView};
use tokio::time::{timeout_at, Instant};

/// Gossip interval of the test members: short so that the tests are quick.
const INTERVAL: Duration = Duration::from_millis(100);
/// Deadline of each wait; generous, the conditions normally hold within a second.
const WAIT: Duration = Duration::from_secs(10);

fn localhost_any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn config(cluster: &str, member: &str, seeds: &[&Gossip]) -> GossipConfig {
    let mut config = GossipConfig::new(cluster, member, localhost_any_port());
    config.seeds = seeds.iter().map(|seed| seed.local_addr().to_string()).collect();
    config.interval = INTERVAL;
    config.phi_threshold = 4.0;
    config.dead_grace = Duration::from_secs(60);
    config.initial_state = vec![("name".to_string(), member.to_string())];
    config
}

async fn start(config: GossipConfig) -> Gossip {
    match Gossip::start(config).await {
        Ok(gossip) => gossip,
        Err(err) => panic!("gossip failed to start: {err}"),
    }
}

/// Waits until `pred` holds for `gossip.members()`, re-checking on every watch bump; panics
/// with the last view after [`WAIT`].
async fn wait_for(gossip: &Gossip, what: &str, pred: impl Fn(&[MemberView]) -> bool) -> Vec<MemberView> {
    let deadline = Instant::now() + WAIT;
    let mut changes = gossip.watch();
    loop {
        let members = gossip.members().await;
        if pred(&members) {
            return members;
        }
        match timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("{}: watch closed while waiting for {what}", gossip.member_id()),
            Err(_) => panic!(
                "{}: timed out waiting for {what}; last view: {members:#?}",
                gossip.member_id()
            ),
        }
    }
}

/// Like [`wait_for`] for conditions that do not bump the watch: re-checks every interval.
async fn poll_for(gossip: &Gossip, what: &str, pred: impl Fn(&[MemberView]) -> bool) -> Vec<MemberView> {
    let deadline = Instant::now() + WAIT;
    let mut ticks = tokio::time::interval(INTERVAL);
    loop {
        let members = gossip.members().await;
        if pred(&members) {
            return members;
        }
        if timeout_at(deadline, ticks.tick()).await.is_err() {
            panic!(
                "{}: timed out waiting for {what}; last view: {members:#?}",
                gossip.member_id()
            );
        }
    }
}

fn find<'a>(members: &'a [MemberView], id: &str) -> Option<&'a MemberView> {
    members.iter().find(|member| member.member_id == id)
}

fn is_alive(members: &[MemberView], id: &str) -> bool {
    find(members, id).is_some_and(|member| member.liveness == Liveness::Alive)
}

fn has_key(members: &[MemberView], id: &str, key: &str, value: &str) -> bool {
    find(members, id).is_some_and(|member| member.state.get(key).map(String::as_str) == Some(value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_find_each_other_and_share_keys() {
    let a = start(config("c1", "node-a", &[])).await;
    let b = start(config("c1", "node-b", &[&a])).await;
    let c = start(config("c1", "node-c", &[&a])).await;
    let ids = ["node-a", "node-b", "node-c"];

    for gossip in [&a, &b, &c] {
        assert_ne!(gossip.local_addr().port(), 0, "port 0 must be resolved");
        let members = wait_for(gossip, "all three alive with their initial state", |members| {
            ids.iter()
                .all(|id| is_alive(members, id) && has_key(members, id, "name", id))
        })
        .await;
        let listed: Vec<&str> = members.iter().map(|member| member.member_id.as_str()).collect();
        assert_eq!(listed, ids, "members are every member, sorted by id");
        for (member, peer) in members.iter().zip([&a, &b, &c]) {
            assert_eq!(member.gossip_addr, peer.local_addr());
        }
        // `last_heard` is `None` until a heartbeat change is seen after learning of a member,
        // which is no membership change (no watch bump): poll for it, one check per interval.
        let members = poll_for(gossip, "every member heard from", |members| {
            members.iter().all(|member| member.last_heard.is_some())
        })
        .await;
        for member in &members {
            assert!(member.last_heard.is_some_and(|heard| heard < WAIT), "{member:?}");
        }
        let own = find(&members, gossip.member_id()).map(|member| member.last_heard);
        assert_eq!(own, Some(Some(Duration::ZERO)));
    }

    // Keys set after start propagate to every member, including those not seeded with the
    // setter (c learns b's key through a or directly once it knows b).
    b.set("shard-leader", "7").await;
    b.set_many(vec![
        ("load".into(), "0.5".into()),
        ("name".into(), "node-b2".into()),
    ])
    .await;
    for gossip in [&a, &b, &c] {
        wait_for(gossip, "b's new keys", |members| {
            has_key(members, "node-b", "shard-leader", "7")
                && has_key(members, "node-b", "load", "0.5")
                && has_key(members, "node-b", "name", "node-b2")
        })
        .await;
    }

    let a_addr = a.local_addr();
    for gossip in [a, b, c] {
        gossip.shutdown().await;
    }
    // Shutdown stopped chitchat, which released its socket.
    assert!(
        UdpSocket::bind(a_addr).is_ok(),
        "gossip socket still bound after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_member_becomes_dead_then_forgotten() {
    let dead_grace = Duration::from_secs(2);
    let with_grace = |mut config: GossipConfig| {
        config.dead_grace = dead_grace;
        config
    };
    let a = start(with_grace(config("c2", "node-a", &[]))).await;
    let b = start(with_grace(config("c2", "node-b", &[&a]))).await;
    let c = start(with_grace(config("c2", "node-c", &[&a]))).await;
    for gossip in [&a, &b] {
        wait_for(gossip, "all three alive", |members| {
            ["node-a", "node-b", "node-c"]
                .iter()
                .all(|id| is_alive(members, id))
        })
        .await;
    }

    c.shutdown().await;
    let stopped = Instant::now();
    for gossip in [&a, &b] {
        let members = wait_for(gossip, "node-c dead", |members| {
            find(members, "node-c").is_some_and(|member| member.liveness == Liveness::Dead)
        })
        .await;
        assert!(
            is_alive(&members, "node-a") && is_alive(&members, "node-b"),
            "{members:#?}"
        );
        let silent = find(&members, "node-c").and_then(|member| member.last_heard);
        assert!(
            silent.is_some_and(|silent| silent > INTERVAL),
            "last_heard of the dead member: {silent:?}"
        );
    }
    // Detection is bounded: a few intervals, far below the wait deadline.
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "detection took {:?}",
        stopped.elapsed()
    );

    // After the dead grace period the member is forgotten altogether.
    for gossip in [&a, &b] {
        wait_for(gossip, "node-c forgotten", |members| {
            find(members, "node-c").is_none() && is_alive(members, "node-a") && is_alive(members, "node-b")
        })
        .await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_other_clusters_are_ignored() {
    let alpha1 = start(config("alpha", "alpha-1", &[])).await;
    // The clusters do contact each other: beta-1 is seeded with alpha-1, alpha-2 with both.
    let beta1 = start(config("beta", "beta-1", &[&alpha1])).await;
    let alpha2 = start(config("alpha", "alpha-2", &[&alpha1, &beta1])).await;

    // Positive control: the two alpha members find each other, so several gossip rounds with
    // the cross-cluster seeds have happened by then.
    for gossip in [&alpha1, &alpha2] {
        wait_for(gossip, "both alpha members alive", |members| {
            is_alive(members, "alpha-1") && is_alive(members, "alpha-2")
        })
        .await;
    }
    // beta-1 changes its state, then alpha-2 does: once alpha-1 has alpha-2's change, more
    // gossip rounds have run (beta-1 gossips with its seed alpha-1 every round), and still
    // nothing crossed the cluster boundary.
    beta1.set("k", "v").await;
    for round in 0..3 {
        alpha2.set("marker", &round.to_string()).await;
        wait_for(&alpha1, "alpha-2's marker", |members| {
            has_key(members, "alpha-2", "marker", &round.to_string())
        })
        .await;
    }

    for gossip in [&alpha1, &alpha2] {
        let ids: Vec<String> = gossip
            .members()
            .await
            .into_iter()
            .map(|member| member.member_id)
            .collect();
        assert_eq!(ids, ["alpha-1", "alpha-2"]);
    }
    let ids: Vec<String> = beta1
        .members()
        .await
        .into_iter()
        .map(|member| member.member_id)
        .collect();
    assert_eq!(ids, ["beta-1"]);

    for gossip in [alpha1, alpha2, beta1] {
        gossip.shutdown().await;
    }
}

#[tokio::test]
async fn invalid_configs_are_rejected() {
    let unspecified = GossipConfig::new("c", "m", SocketAddr::from(([0, 0, 0, 0], 0)));
    assert!(matches!(
        Gossip::start(unspecified).await,
        Err(GossipError::InvalidConfig(_))
    ));

    let mut zero_interval = GossipConfig::new("c", "m", localhost_any_port());
    zero_interval.interval = Duration::ZERO;
    assert!(matches!(
        Gossip::start(zero_interval).await,
        Err(GossipError::InvalidConfig(_))
    ));

    let mut bad_phi = GossipConfig::new("c", "m", localhost_any_port());
    bad_phi.phi_threshold = f64::NAN;
    assert!(matches!(
        Gossip::start(bad_phi).await,
        Err(GossipError::InvalidConfig(_))
    ));

    let empty_id = GossipConfig::new("c", "", localhost_any_port());
    assert!(matches!(
        Gossip::start(empty_id).await,
        Err(GossipError::InvalidConfig(_))
    ));
}

#[tokio::test]
async fn listen_on_unspecified_ip_with_advertise_port_zero() {
    let mut config = GossipConfig::new("c", "m", SocketAddr::from(([0, 0, 0, 0], 0)));
    config.advertise = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let gossip = start(config).await;
    let port = gossip.local_addr().port();
    assert_ne!(port, 0);
    assert_eq!(gossip.advertise_addr(), SocketAddr::from(([127, 0, 0, 1], port)));
    let members = gossip.members().await;
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].gossip_addr, gossip.advertise_addr());
    assert_eq!(members[0].liveness, Liveness::Alive);

    // A fixed port that is already taken is reported, not retried.
    let mut taken = GossipConfig::new("c", "m2", SocketAddr::from(([127, 0, 0, 1], port)));
    taken.interval = INTERVAL;
    match Gossip::start(taken).await {
        Err(GossipError::Start { addr, .. }) => assert_eq!(addr.port(), port),
        other => panic!("expected a start error, got {other:?}"),
    }
    gossip.shutdown().await;
}

/// Members sharing a gossip key form a cluster; a member with another key, and one without
/// authentication, are never admitted, and every member counts their datagrams as rejected.
#[tokio::test]
async fn only_members_with_the_key_gossip_together() {
    use ringkv_gossip::{GossipKey, GossipKeys};
    let keys = GossipKeys::new(GossipKey::generate().expect("a random key"));
    let authenticated = |member: &str, seeds: &[&Gossip]| {
        let mut config = config("auth", member, seeds);
        config.auth = Some(keys.clone());
        config
    };
    let a = start(authenticated("a", &[])).await;
    let b = start(authenticated("b", &[&a])).await;
    assert!(a.is_authenticated() && b.is_authenticated());
    let mut stranger_config = config("auth", "stranger", &[&a, &b]);
    stranger_config.auth = Some(GossipKeys::new(GossipKey::generate().expect("a random key")));
    let stranger = start(stranger_config).await;
    let plain = start(config("auth", "plain", &[&a, &b])).await;
    let ids = |members: &[MemberView]| -> Vec<String> {
        members.iter().map(|member| member.member_id.clone()).collect()
    };
    wait_for(&a, "b alive", |members| {
        members
            .iter()
            .any(|member| member.member_id == "b" && member.liveness == Liveness::Alive)
    })
    .await;
    // Both outsiders have been heard from (and dropped) by both members.
    poll_for(&a, "a rejected both outsiders", |_| a.rejected_datagrams() >= 2).await;
    poll_for(&b, "b rejected both outsiders", |_| b.rejected_datagrams() >= 2).await;
    assert_eq!(ids(&a.members().await), ["a", "b"]);
    assert_eq!(ids(&b.members().await), ["a", "b"]);
    assert_eq!(ids(&stranger.members().await), ["stranger"]);
    assert_eq!(ids(&plain.members().await), ["plain"]);
    for member in [a, b, stranger, plain] {
        member.shutdown().await;
    }
}
