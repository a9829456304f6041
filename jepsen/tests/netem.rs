//! The userspace network emulator and the router cut, for real, between node namespaces:
//! emulated links delay (a TCP handshake takes the two one-way delays), reorder (jittered UDP
//! sequence numbers arrive out of order) and drop (about the loss share of datagrams never
//! arrive); a cut router's packets are dropped while another process's still arrive; heal and
//! teardown remove all of it. Needs root, `ip`, `iptables`, NFQUEUE and `net_cls` cgroups;
//! without root or the tools each test prints why it is skipped and passes. Last, a smoke run
//! of the nemeses built on them (`partition-router`, `slow-link-one`, `slow-network`,
//! `lossy-network`) against a real cluster with two routers.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringkv_jepsen::checker::Validity;
use ringkv_jepsen::nemesis::{NemesisKind, Schedule};
use ringkv_jepsen::net::{self, Network};
use ringkv_jepsen::netem::LinkFault;
use ringkv_jepsen::runner::{self, RunOptions};

/// A connect slower than this did not cross an emulated delay-free link.
const FAST_CONNECT: Duration = Duration::from_millis(60);
/// Bound on any connect in these tests.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The receiver stops once no datagram came for this long.
const QUIET_AFTER_LAST_DATAGRAM: Duration = Duration::from_millis(600);

fn unique_run_id(test_name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0);
    format!("netem-test-{test_name}-{}-{nanos}", std::process::id())
}

/// A network for this test, or `None` (after printing why) when this machine cannot build one.
fn network_or_skip(test_name: &str, node_count: usize) -> Option<Network> {
    if let Err(err) = net::check_prerequisites() {
        eprintln!("skipping {test_name}: {err}");
        return None;
    }
    Some(Network::create(&unique_run_id(test_name), node_count).expect("create network"))
}

/// Both directions between nodes 1 and 2 get `fault`.
fn both_ways(fault: LinkFault) -> BTreeMap<(usize, usize), LinkFault> {
    BTreeMap::from([((1, 2), fault), ((2, 1), fault)])
}

/// How long a TCP handshake from node 1 to a listener in node 2 takes: one round trip.
fn handshake_time(network: &Network, listener: SocketAddr) -> Duration {
    network
        .in_namespace(1, || {
            let started = Instant::now();
            TcpStream::connect_timeout(&listener, CONNECT_TIMEOUT).expect("connect from node 1 to node 2");
            started.elapsed()
        })
        .expect("enter namespace")
}

/// Sends `count` datagrams numbered 0.. from node 1 to node 2 back to back, and returns the
/// numbers in the order node 2 received them.
fn send_sequence(network: &Network, count: u32) -> Vec<u32> {
    send_sequence_then(network, count, || {})
}

/// [`send_sequence`], running `after_sending` once every datagram is sent.
fn send_sequence_then(network: &Network, count: u32, after_sending: impl FnOnce()) -> Vec<u32> {
    let receiver = network
        .in_namespace(2, || UdpSocket::bind("0.0.0.0:0"))
        .expect("enter namespace")
        .expect("bind in node 2");
    receiver
        .set_read_timeout(Some(QUIET_AFTER_LAST_DATAGRAM))
        .expect("set read timeout");
    let port = receiver.local_addr().expect("receiver address").port();
    let target = SocketAddr::V4(SocketAddrV4::new(network.host_ip(2), port));
    let sender = network
        .in_namespace(1, || UdpSocket::bind("0.0.0.0:0"))
        .expect("enter namespace")
        .expect("bind in node 1");
    std::thread::scope(|scope| {
        let reading = scope.spawn(|| {
            let mut received = Vec::new();
            let mut buffer = [0u8; 16];
            while let Ok(length) = receiver.recv(&mut buffer) {
                if let Ok(number) = <[u8; 4]>::try_from(&buffer[..length.min(4)]) {
                    received.push(u32::from_be_bytes(number));
                }
            }
            received
        });
        for number in 0..count {
            sender
                .send_to(&number.to_be_bytes(), target)
                .expect("send datagram");
        }
        after_sending();
        reading.join().expect("receiver thread")
    })
}

/// How many received numbers are smaller than one received before them.
fn out_of_order(received: &[u32]) -> usize {
    let mut highest = None;
    let mut late = 0;
    for &number in received {
        if highest.is_some_and(|highest| number < highest) {
            late += 1;
        }
        highest = highest.max(Some(number));
    }
    late
}

/// `iptables -t <table> -S <chain>` inside node `index`'s namespace.
fn rules(network: &Network, index: usize, table: &str, chain: &str) -> String {
    let output = network
        .command(index, "iptables")
        .args(["-w", "5", "-t", table, "-S", chain])
        .output()
        .expect("run iptables in namespace");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// An emulated link really delays (a handshake takes both one-way delays), reorders with
/// jitter (sequence numbers arrive out of order, none lost) and drops (about the loss share
/// never arrives); heal releases the packets held, removes the rules and the emulator, and the
/// link is fast and in order again.
#[test]
fn emulated_links_delay_reorder_and_drop_until_healed() {
    let Some(network) = network_or_skip("emulated-links", 2) else {
        return;
    };
    let listener = network
        .in_namespace(2, || TcpListener::bind("0.0.0.0:0"))
        .expect("enter namespace")
        .expect("bind listener in node 2");
    let listener_addr = SocketAddr::V4(SocketAddrV4::new(
        network.host_ip(2),
        listener.local_addr().expect("listener address").port(),
    ));
    let before = handshake_time(&network, listener_addr);
    assert!(
        before < FAST_CONNECT,
        "a handshake took {before:?} before any emulation"
    );

    // Delay: 100 ms each way, no jitter.
    network
        .emulate(
            &both_ways(LinkFault::slow(Duration::from_millis(100), Duration::ZERO)),
            1,
        )
        .expect("emulate slow links");
    let delayed = handshake_time(&network, listener_addr);
    assert!(
        delayed >= Duration::from_millis(195) && delayed < Duration::from_millis(1500),
        "a handshake over two 100 ms links took {delayed:?}"
    );
    assert!(rules(&network, 2, "mangle", "INPUT").contains("NFQUEUE"));

    // Reordering: 10..90 ms per packet.
    network
        .emulate(
            &both_ways(LinkFault::slow(
                Duration::from_millis(50),
                Duration::from_millis(40),
            )),
            2,
        )
        .expect("emulate jittered links");
    let received = send_sequence(&network, 200);
    assert_eq!(received.len(), 200, "a jittered link loses nothing");
    let late = out_of_order(&received);
    assert!(late >= 20, "only {late} of 200 datagrams arrived out of order");

    // Loss: 30 %, no delay.
    network
        .emulate(&both_ways(LinkFault::lossy(0.3)), 3)
        .expect("emulate lossy links");
    let received = send_sequence(&network, 300);
    assert!(
        (150..=260).contains(&received.len()),
        "{} of 300 datagrams arrived over a 30 % lossy link",
        received.len()
    );
    let stats = network.emulator_stats().expect("the emulator runs");
    assert!(stats.dropped_by_loss >= 40, "{stats:?}");

    // Heal releases what the emulator holds: late, not lost.
    network
        .emulate(
            &both_ways(LinkFault::slow(Duration::from_millis(300), Duration::ZERO)),
            4,
        )
        .expect("emulate slow links");
    let received = send_sequence_then(&network, 50, || network.heal().expect("heal"));
    assert_eq!(received.len(), 50, "heal dropped held datagrams: {received:?}");
    assert!(network.emulated_links().is_empty());
    assert!(network.emulator_stats().is_none());
    for index in 1..=2 {
        assert!(
            !rules(&network, index, "mangle", "INPUT").contains("NFQUEUE"),
            "heal removed the queue rules of node {index}"
        );
    }
    let healed = handshake_time(&network, listener_addr);
    assert!(healed < FAST_CONNECT, "a handshake took {healed:?} after heal");
    let received = send_sequence(&network, 200);
    assert_eq!(
        received,
        (0..200).collect::<Vec<u32>>(),
        "healed: everything, in order"
    );
    network.teardown().expect("teardown");
}

/// Connects once told to (a line on stdin) and prints `reached` or `cut`: a new connection,
/// made by a process forked after the prober was put into a router cgroup.
const PROBE_NEW_CONNECTION: &str =
    r#"read _; if timeout 2 bash -c "exec 3<>/dev/tcp/$0/$1"; then echo reached; else echo cut; fi"#;

/// Connects at once and prints `open`; once told to, sends a line on that connection and
/// prints `reached` when the echo comes back within 2 s, else `cut`: a connection opened
/// before the prober was put into a router cgroup.
const PROBE_OPEN_CONNECTION: &str = r#"exec 3<>/dev/tcp/$0/$1; echo open; read _; echo ping >&3; if timeout 2 head -n 1 <&3 >/dev/null; then echo reached; else echo cut; fi"#;

/// A bash child of the host namespace, standing in for a router process.
struct Prober {
    child: std::process::Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Prober {
    fn start(script: &str, target: SocketAddr) -> Prober {
        let mut child = Command::new("bash")
            .args(["-c", script, &target.ip().to_string(), &target.port().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn bash");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Prober { child, stdout }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line it prints.
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("read the prober's output");
        line.trim().to_owned()
    }

    /// Tells it to go and returns its answer.
    fn probe(mut self) -> String {
        let mut stdin = self.child.stdin.take().expect("piped stdin");
        stdin.write_all(b"go\n").expect("tell the prober to go");
        self.line()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Echoes every connection's bytes back, on a thread of its own (the listener lives in a node
/// namespace; accepting from any thread works).
fn serve_echo(listener: TcpListener) {
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            let Ok(mut connection) = connection else { continue };
            std::thread::spawn(move || {
                let Ok(mut reader) = connection.try_clone() else {
                    return;
                };
                let _ = std::io::copy(&mut reader, &mut connection);
            });
        }
    });
}

/// A cut router's packets to the cut node are dropped, silently — on connections it opens
/// after the cut and on those it had open before; its packets to another node and another
/// host process's packets to the cut node still arrive; heal lets it through again; teardown
/// removes its cgroup and host rule.
#[test]
fn a_cut_router_loses_only_its_own_packets_to_the_cut_nodes() {
    let Some(network) = network_or_skip("cut-router", 2) else {
        return;
    };
    let targets: Vec<SocketAddr> = (1..=2)
        .map(|index| {
            let listener = network
                .in_namespace(index, || TcpListener::bind("0.0.0.0:0"))
                .expect("enter namespace")
                .expect("bind listener");
            let port = listener.local_addr().expect("listener address").port();
            serve_echo(listener);
            SocketAddr::V4(SocketAddrV4::new(network.host_ip(index), port))
        })
        .collect();
    let target = |index: usize| targets[index - 1];

    let mut already_open = Prober::start(PROBE_OPEN_CONNECTION, target(2));
    assert_eq!(already_open.line(), "open");
    network
        .cut_router(0, already_open.pid(), &[2])
        .expect("cut router 0 off from node 2");
    assert_eq!(network.active_router_drops().len(), 1);
    let to_cut_node = Prober::start(PROBE_NEW_CONNECTION, target(2));
    network
        .cut_router(0, to_cut_node.pid(), &[])
        .expect("tag the prober");
    let to_other_node = Prober::start(PROBE_NEW_CONNECTION, target(1));
    network
        .cut_router(0, to_other_node.pid(), &[])
        .expect("tag the prober");
    assert_eq!(
        already_open.probe(),
        "cut",
        "the cut router's open connection still delivers"
    );
    assert_eq!(to_cut_node.probe(), "cut", "the cut router reached node 2");
    assert_eq!(to_other_node.probe(), "reached", "the cut router lost node 1 too");
    TcpStream::connect_timeout(&target(2), CONNECT_TIMEOUT).expect("another host process reaches node 2");
    assert!(network.router_packets_dropped().expect("read the drop counters") > 0);

    network.heal().expect("heal");
    assert!(network.active_router_drops().is_empty());
    let after_heal = Prober::start(PROBE_NEW_CONNECTION, target(2));
    network
        .cut_router(0, after_heal.pid(), &[])
        .expect("tag the prober");
    assert_eq!(after_heal.probe(), "reached", "heal let the router through again");

    let prefix = network.prefix().to_owned();
    network.teardown().expect("teardown");
    let mangle = Command::new("iptables")
        .args(["-w", "5", "-t", "mangle", "-S", "OUTPUT"])
        .output()
        .expect("list host mangle rules");
    assert!(
        !String::from_utf8_lossy(&mangle.stdout).contains(&prefix),
        "teardown removed the router's DSCP rule"
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("read mounts");
    let net_cls_root = mounts
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let is_net_cls = fields.get(2) == Some(&"cgroup")
                && fields
                    .get(3)
                    .is_some_and(|options| options.split(',').any(|option| option == "net_cls"));
            is_net_cls.then(|| fields[1].to_owned())
        })
        .expect("a net_cls mount");
    let cgroup = std::path::Path::new(&net_cls_root).join(format!("ringkv-jepsen/{prefix}-r0"));
    assert!(!cgroup.exists(), "teardown removed {}", cgroup.display());
}

/// `$RINGKV_BIN_DIR`, else the profile directory above this test's `deps/`.
fn bin_dir() -> std::path::PathBuf {
    ringkv_launcher::binaries::env_bin_dir()
        .unwrap_or_else(|| ringkv_launcher::binaries::executable_dir().expect("locating the test executable"))
}

/// A short run with two routers through a router cut off from some nodes, one node's slow
/// links, a slow jittered network and a lossy one (each once, 1 s quiet + 4 s of fault) comes
/// out valid, and the emulator really held, reordered and dropped packets and the cut router
/// lost some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_slow_lossy_links_and_a_cut_router_are_valid() -> anyhow::Result<()> {
    if let Err(err) = net::check_prerequisites() {
        eprintln!("skipping smoke_slow_lossy_links_and_a_cut_router_are_valid: {err}");
        return Ok(());
    }
    let out = tempfile::tempdir()?;
    let kinds = vec![
        NemesisKind::PartitionRouter,
        NemesisKind::SlowLinkOne,
        NemesisKind::SlowNetwork,
        NemesisKind::LossyNetwork,
    ];
    let mut options = RunOptions::new(
        Duration::from_secs(21),
        kinds.clone(),
        bin_dir(),
        out.path().to_path_buf(),
    );
    // Distinct seeds: the seed also names the run's network namespaces.
    options.seed = 0x5eed_0e01;
    options.concurrency = 4;
    options.routers = 2;
    options.schedule = Schedule {
        quiet: Duration::from_secs(1),
        fault: Duration::from_secs(4),
    };
    let started = Instant::now();
    let report = runner::run(options).await?;
    let summary = std::fs::read_to_string(report.dir.join("summary.txt"))?;
    eprintln!(
        "smoke run: {} ops in {:?}; faults: {:#?}",
        report.ops,
        started.elapsed(),
        report.nemesis_log
    );
    assert_eq!(report.verdict.validity, Validity::Valid, "{summary}");
    assert!(report.ops > 100, "the workload ran: {summary}");
    for kind in &kinds {
        assert!(
            report
                .nemesis_log
                .iter()
                .any(|line| line.starts_with(&format!("start {} ", kind.name()))),
            "{} ran: {:?}",
            kind.name(),
            report.nemesis_log
        );
    }
    let emulated: Vec<&String> = report
        .nemesis_log
        .iter()
        .filter(|line| line.contains("emulator:"))
        .collect();
    assert_eq!(
        emulated.len(),
        3,
        "three emulated faults healed: {:?}",
        report.nemesis_log
    );
    assert!(
        emulated.iter().all(|line| !line.contains(" 0 packets queued")),
        "the emulator held packets in every emulated fault: {emulated:?}"
    );
    assert!(
        report
            .nemesis_log
            .iter()
            .any(|line| line.starts_with("stop slow-network") && !line.contains("(0 overtaking)")),
        "packets overtook others on the slow network: {:?}",
        report.nemesis_log
    );
    let router_drops: Vec<u64> = report
        .nemesis_log
        .iter()
        .filter_map(|line| line.strip_prefix("stop partition-router healed; "))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(
        router_drops.len() == 1 && router_drops[0] > 0,
        "the cut router lost packets: {:?}",
        report.nemesis_log
    );
    Ok(())
}

/// The `net_cls` hierarchy's mount point, from `/proc/self/mounts`.
fn net_cls_root() -> Option<std::path::PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let is_net_cls = fields.get(2) == Some(&"cgroup")
            && fields
                .get(3)
                .is_some_and(|options| options.split(',').any(|option| option == "net_cls"));
        is_net_cls.then(|| std::path::PathBuf::from(fields[1]))
    })
}

/// A crashed run's router leftovers — its cgroup and its host DSCP rule — are removed by
/// `cleanup_stale`, like its namespaces.
#[test]
fn cleanup_stale_removes_a_crashed_runs_router_tags() {
    let Some(live) = network_or_skip("router-leftovers", 1) else {
        return;
    };
    // Tagging a router mounts the net_cls hierarchy when none is.
    let prober = Prober::start(PROBE_NEW_CONNECTION, SocketAddr::from(([127, 0, 0, 1], 9)));
    live.cut_router(0, prober.pid(), &[]).expect("tag a router");
    let root = net_cls_root().expect("a net_cls hierarchy is mounted");

    let crashed_prefix = format!("rkvy{:05}", std::process::id() % 100_000);
    let crashed_cgroup = root.join(format!("ringkv-jepsen/{crashed_prefix}-r0"));
    std::fs::create_dir_all(&crashed_cgroup).expect("create a leftover cgroup");
    let comment = format!("ringkv-jepsen:{crashed_prefix}");
    let rule = [
        "-o",
        &format!("{crashed_prefix}-br"),
        "-m",
        "cgroup",
        "--cgroup",
        "5373952",
        "-m",
        "comment",
        "--comment",
        &comment,
        "-j",
        "DSCP",
        "--set-dscp",
        "8",
    ];
    let added = Command::new("iptables")
        .args(["-w", "5", "-t", "mangle", "-A", "OUTPUT"])
        .args(rule)
        .status()
        .expect("run iptables");
    assert!(added.success(), "add a leftover rule");

    let report = net::cleanup_stale(&crashed_prefix).expect("cleanup crashed run");
    assert_eq!(report.removed, vec![crashed_prefix.clone()]);
    assert!(!crashed_cgroup.exists(), "the leftover cgroup is gone");
    let mangle = Command::new("iptables")
        .args(["-w", "5", "-t", "mangle", "-S", "OUTPUT"])
        .output()
        .expect("list host mangle rules");
    assert!(
        !String::from_utf8_lossy(&mangle.stdout).contains(&comment),
        "the leftover rule is gone"
    );
    drop(prober);
    live.teardown().expect("teardown");
}
