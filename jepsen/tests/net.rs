//! Node network namespaces for real: reachability through the bridge, silent partitions, one-way
//! drops, heal, teardown and stale cleanup. Needs root, `ip` and `iptables`; without them each
//! test prints why it is skipped and passes.

use std::io::{BufRead as _, BufReader, ErrorKind, Read as _};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringkv_jepsen::net::{self, Network};

/// How long a connect may take before it counts as silently dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long to wait for a datagram before it counts as dropped.
const DATAGRAM_TIMEOUT: Duration = Duration::from_millis(500);
/// Port of the listeners inside node namespaces (each namespace has its own ports).
const NODE_PORT: u16 = 7000;
/// A port nothing listens on, to see a refusal.
const CLOSED_PORT: u16 = 7001;
/// Port of the UDP sockets inside node namespaces.
const DATAGRAM_PORT: u16 = 9000;
/// Bound on waiting for a spawned program's first line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a TCP connect attempt saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reach {
    Connected,
    /// No answer at all within the timeout: a silent drop.
    TimedOut,
    /// A RST came back: something answered.
    Refused,
    Other(String),
}

fn classify(result: std::io::Result<TcpStream>) -> Reach {
    match result {
        Ok(_) => Reach::Connected,
        Err(err) if err.kind() == ErrorKind::TimedOut => Reach::TimedOut,
        Err(err) if err.kind() == ErrorKind::ConnectionRefused => Reach::Refused,
        Err(err) => Reach::Other(err.to_string()),
    }
}

fn unique_run_id(test_name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0);
    format!("net-test-{test_name}-{}-{nanos}", std::process::id())
}

/// A network for this test, or `None` (after printing why) when this machine cannot build one.
fn network_or_skip(test_name: &str, node_count: usize) -> Option<Network> {
    if let Err(err) = net::check_prerequisites() {
        eprintln!("skipping {test_name}: {err}");
        return None;
    }
    Some(Network::create(&unique_run_id(test_name), node_count).expect("create network"))
}

fn node_addr(network: &Network, index: usize, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(network.host_ip(index), port))
}

/// Connects from node `from` (or from the host namespace when `from` is 0) to `to`.
fn reach(network: &Network, from: usize, to: SocketAddr) -> Reach {
    if from == 0 {
        return classify(TcpStream::connect_timeout(&to, CONNECT_TIMEOUT));
    }
    network
        .in_namespace(from, || {
            classify(TcpStream::connect_timeout(&to, CONNECT_TIMEOUT))
        })
        .expect("enter namespace")
}

/// Probes node-to-node links on `NODE_PORT` concurrently, so timeouts overlap.
fn reach_all(network: &Network, links: &[(usize, usize)]) -> Vec<Reach> {
    std::thread::scope(|scope| {
        let probes: Vec<_> = links
            .iter()
            .map(|&(from, to)| scope.spawn(move || reach(network, from, node_addr(network, to, NODE_PORT))))
            .collect();
        probes
            .into_iter()
            .map(|probe| probe.join().expect("probe thread"))
            .collect()
    })
}

/// A TCP listener on `NODE_PORT` inside each node's namespace. The kernel completes handshakes
/// from the backlog, so nothing needs to accept.
fn listen_on_every_node(network: &Network) -> Vec<TcpListener> {
    (1..=network.node_count())
        .map(|index| {
            network
                .in_namespace(index, || TcpListener::bind(("0.0.0.0", NODE_PORT)))
                .expect("enter namespace")
                .expect("bind listener in namespace")
        })
        .collect()
}

/// Kills (SIGKILL) and reaps a child this test started when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the first line a child prints, bounded by `STARTUP_TIMEOUT`.
fn first_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    receiver
        .recv_timeout(STARTUP_TIMEOUT)
        .expect("child printed its first line in time")
}

fn python3() -> Option<String> {
    let system_python = Path::new("/usr/bin/python3");
    if system_python.is_file() {
        return Some(system_python.display().to_string());
    }
    let found = Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .is_ok_and(|status| status.success());
    found.then(|| "python3".to_owned())
}

/// Serves `ok` to every connection on the given port; prints `ready <pid>` once listening.
const PYTHON_SERVER: &str = r#"
import os, socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", int(sys.argv[1])))
server.listen(64)
print("ready", os.getpid(), flush=True)
while True:
    connection, _ = server.accept()
    connection.sendall(b"ok")
    connection.close()
"#;

/// A program started with command() runs in the node's namespace, under the spawned child's pid.
#[test]
fn command_runs_in_the_node_namespace_as_the_child_pid() {
    let Some(network) = network_or_skip("command-pid", 2) else {
        return;
    };
    let child = network
        .command(2, "sh")
        .args(["-c", "echo $$; exec sleep 30"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sh in namespace");
    let child_pid = child.id();
    let mut guard_child = ChildGuard(child);
    let reported_pid: u32 = first_line(&mut guard_child.0).trim().parse().expect("pid line");
    assert_eq!(
        reported_pid, child_pid,
        "ip netns exec must exec the program in place"
    );

    let program_namespace = std::fs::metadata(format!("/proc/{child_pid}/ns/net")).expect("program ns");
    let node_namespace =
        std::fs::metadata(Path::new("/run/netns").join(network.namespace(2))).expect("node ns");
    assert_eq!(
        program_namespace.ino(),
        node_namespace.ino(),
        "program runs in node 2's namespace"
    );

    // Only IPv4 on the node's interface, so no IPv6 path slips past the IPv4 drop rules.
    let ipv6 = network
        .command(2, "ip")
        .args(["-6", "-o", "addr", "show", "dev", "eth0"])
        .output()
        .expect("ip -6");
    assert!(
        ipv6.status.success() && ipv6.stdout.is_empty(),
        "no IPv6 address on eth0"
    );

    // The harness signals nodes by pid: SIGKILL to the child's pid ends the program itself.
    // SAFETY: plain kill(2) on a child this test spawned and has not reaped.
    let status = unsafe { libc::kill(i32::try_from(child_pid).expect("pid fits"), libc::SIGKILL) };
    assert_eq!(status, 0);
    let exit = guard_child.0.wait().expect("wait");
    assert_eq!(exit.signal(), Some(libc::SIGKILL));
    network.teardown().expect("teardown");
}

/// Host and peers reach a node; a partition drops packets silently (a timeout, not a refusal); heal restores.
#[test]
fn partition_drops_silently_and_heal_restores() {
    let Some(network) = network_or_skip("partition", 3) else {
        return;
    };
    let Some(python) = python3() else {
        eprintln!("skipping partition_drops_silently_and_heal_restores: python3 not found");
        return;
    };
    let server = network
        .command(1, &python)
        .args(["-c", PYTHON_SERVER, &NODE_PORT.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python server in node 1");
    let server_pid = server.id();
    let mut server = ChildGuard(server);
    let ready = first_line(&mut server.0);
    assert_eq!(
        ready.trim(),
        format!("ready {server_pid}"),
        "server runs under the spawned pid"
    );
    let server_addr = node_addr(&network, 1, NODE_PORT);

    // The host reaches the node, and it is our server answering.
    let mut from_host = TcpStream::connect_timeout(&server_addr, CONNECT_TIMEOUT).expect("host -> node 1");
    let mut greeting = String::new();
    from_host.read_to_string(&mut greeting).expect("read greeting");
    assert_eq!(greeting, "ok");
    // A node reaches another node through the bridge; a closed port is refused (so the
    // classification below can tell a drop from a refusal).
    assert_eq!(
        reach(&network, 2, server_addr),
        Reach::Connected,
        "node 2 -> node 1"
    );
    assert_eq!(
        reach(&network, 2, node_addr(&network, 1, CLOSED_PORT)),
        Reach::Refused
    );
    // A node reaches processes in the host namespace (the router) at the bridge address.
    let host_listener = TcpListener::bind((network.bridge_ip(), 0)).expect("bind on bridge ip");
    let host_addr = host_listener.local_addr().expect("host listener addr");
    assert_eq!(reach(&network, 3, host_addr), Reach::Connected, "node 3 -> host");

    network.partition(&[vec![1], vec![2, 3]]).expect("partition");
    let started = Instant::now();
    assert_eq!(
        reach(&network, 2, server_addr),
        Reach::TimedOut,
        "node 2 -> node 1 is dropped silently"
    );
    assert!(
        started.elapsed() >= CONNECT_TIMEOUT,
        "a drop waits out the timeout"
    );
    assert_eq!(
        reach(&network, 2, node_addr(&network, 1, CLOSED_PORT)),
        Reach::TimedOut,
        "no RST either"
    );
    assert_eq!(
        reach(&network, 0, server_addr),
        Reach::Connected,
        "the host is never partitioned"
    );
    assert_eq!(network.active_drops(), vec![(1, 2), (1, 3), (2, 1), (3, 1)]);

    network.heal().expect("heal");
    assert!(network.active_drops().is_empty());
    assert_eq!(
        reach(&network, 2, server_addr),
        Reach::Connected,
        "node 2 -> node 1 after heal"
    );
    drop(server);
    network.teardown().expect("teardown");
}

/// Nodes listed in no group keep every link, and block() cuts exactly the pairs given (a bridge).
#[test]
fn unlisted_nodes_and_bridge_topologies_keep_their_links() {
    let Some(network) = network_or_skip("topologies", 3) else {
        return;
    };
    let _listeners = listen_on_every_node(&network);

    network.partition(&[vec![1], vec![2]]).expect("partition 1 | 2");
    let links = [(1, 2), (2, 1), (3, 1), (3, 2), (1, 3), (2, 3)];
    let reached = reach_all(&network, &links);
    let expected = [
        Reach::TimedOut,
        Reach::TimedOut,
        Reach::Connected,
        Reach::Connected,
        Reach::Connected,
        Reach::Connected,
    ];
    assert_eq!(reached, expected, "node 3 is in no group: {links:?}");

    // Bridge: majorities {1, 2} and {2, 3} share node 2; only 1 <-> 3 is cut.
    network.heal().expect("heal");
    network.block(&[(1, 3)]).expect("block 1 <-> 3");
    let reached = reach_all(&network, &links);
    let expected = [
        Reach::Connected,
        Reach::Connected,
        Reach::TimedOut,
        Reach::Connected,
        Reach::TimedOut,
        Reach::Connected,
    ];
    assert_eq!(reached, expected, "bridge through node 2: {links:?}");

    assert!(
        network.block(&[(2, 2)]).is_err(),
        "a node cannot be cut from itself"
    );
    assert!(network.block(&[(1, 4)]).is_err(), "node 4 does not exist");
    assert!(
        network.partition(&[vec![1, 2], vec![2, 3]]).is_err(),
        "groups must not overlap"
    );
    network.teardown().expect("teardown");
}

/// isolate_one_way drops packets in one direction only (datagrams show it; TCP needs both ways).
#[test]
fn one_way_isolation_drops_one_direction_only() {
    let Some(network) = network_or_skip("one-way", 2) else {
        return;
    };
    let bind_datagram_socket = |index: usize| {
        let socket = network
            .in_namespace(index, || UdpSocket::bind(("0.0.0.0", DATAGRAM_PORT)))
            .expect("enter namespace")
            .expect("bind udp in namespace");
        socket
            .set_read_timeout(Some(DATAGRAM_TIMEOUT))
            .expect("read timeout");
        socket
    };
    let node_one = bind_datagram_socket(1);
    let node_two = bind_datagram_socket(2);
    let delivered = |sender: &UdpSocket, receiver: &UdpSocket, to: usize| -> bool {
        let message = format!("to node {to}");
        sender
            .send_to(message.as_bytes(), node_addr(&network, to, DATAGRAM_PORT))
            .expect("send is never refused");
        let mut buffer = [0_u8; 64];
        match receiver.recv_from(&mut buffer) {
            Ok((length, _)) => &buffer[..length] == message.as_bytes(),
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(err) => panic!("recv failed: {err}"),
        }
    };
    assert!(delivered(&node_two, &node_one, 1), "2 -> 1 before");
    assert!(delivered(&node_one, &node_two, 2), "1 -> 2 before");

    network.isolate_one_way(2, 1).expect("isolate 2 -> 1");
    assert_eq!(network.active_drops(), vec![(2, 1)]);
    assert!(!delivered(&node_two, &node_one, 1), "2 -> 1 is dropped");
    assert!(delivered(&node_one, &node_two, 2), "1 -> 2 still flows");

    network.heal().expect("heal");
    assert!(delivered(&node_two, &node_one, 1), "2 -> 1 after heal");
    network.teardown().expect("teardown");
}

/// Teardown (explicit or by drop) removes namespaces, veths and the bridge, and repeats harmlessly.
#[test]
fn teardown_removes_everything() {
    let Some(network) = network_or_skip("teardown", 2) else {
        return;
    };
    let namespaces: Vec<String> = (1..=2).map(|index| network.namespace(index).to_owned()).collect();
    let mut links: Vec<String> = network
        .nodes()
        .iter()
        .map(|node| node.host_veth.clone())
        .collect();
    links.push(network.bridge_name().to_owned());
    assert!(
        listed("netns", &namespaces[0]) && listed("link", network.bridge_name()),
        "exists before"
    );
    network.teardown().expect("teardown");
    for name in namespaces.iter().chain(&links) {
        assert!(
            !listed("netns", name) && !listed("link", name),
            "{name} still present after teardown"
        );
    }

    // Dropping without teardown cleans up too.
    let dropped = Network::create(&unique_run_id("teardown-drop"), 1).expect("create");
    let dropped_namespace = dropped.namespace(1).to_owned();
    let dropped_bridge = dropped.bridge_name().to_owned();
    drop(dropped);
    assert!(!listed("netns", &dropped_namespace) && !listed("link", &dropped_bridge));
}

/// A run id whose earlier run died without tearing its network down (interrupted, killed)
/// builds its network again: what the dead run left is removed first. A live run's network
/// under the same id is still refused.
#[test]
fn a_run_id_reused_after_a_crash_builds_its_network_again() {
    let run_id = unique_run_id("reused");
    let Some(crashed) = network_or_skip("reused", 1) else {
        return;
    };
    drop(crashed);
    let crashed = Network::create(&run_id, 1).expect("create");
    let prefix = crashed.prefix().to_owned();
    // The crashed run tears nothing down, and its process is gone: its owner marker names
    // one that has exited.
    std::mem::forget(crashed);
    let mut exited = Command::new("true").spawn().expect("spawn true");
    let exited_pid = exited.id();
    exited.wait().expect("wait for true");
    std::fs::write(
        format!("/run/ringkv-jepsen-net/{prefix}.owner"),
        format!("{exited_pid}\n"),
    )
    .expect("write the owner marker");

    let again = Network::create(&run_id, 1).expect("the dead run's leftovers are removed first");
    assert_eq!(again.prefix(), prefix);
    assert!(listed("netns", again.namespace(1)) && listed("link", again.bridge_name()));
    assert!(
        matches!(
            Network::create(&run_id, 1),
            Err(net::NetError::AlreadyExists { .. })
        ),
        "a live run's network is not taken over"
    );
    again.teardown().expect("teardown");
}

/// cleanup_stale removes a crashed run's leftovers and leaves live networks alone.
#[test]
fn cleanup_stale_removes_leftovers_but_not_live_networks() {
    let Some(live) = network_or_skip("cleanup", 1) else {
        return;
    };
    // Leftovers of a "crashed" run: resources in our naming scheme with no live owner.
    let crashed_prefix = format!("rkvz{:05}", std::process::id() % 100_000);
    let crashed_namespace = format!("{crashed_prefix}-n1");
    let crashed_bridge = format!("{crashed_prefix}-br");
    run_ip(&["netns", "add", &crashed_namespace]);
    run_ip(&["link", "add", "name", &crashed_bridge, "type", "bridge"]);

    let report = net::cleanup_stale(&crashed_prefix).expect("cleanup crashed run");
    assert_eq!(report.removed, vec![crashed_prefix.clone()]);
    assert!(!listed("netns", &crashed_namespace) && !listed("link", &crashed_bridge));

    let report = net::cleanup_stale(live.prefix()).expect("cleanup live run");
    assert_eq!(
        report.live,
        vec![live.prefix().to_owned()],
        "a live network is left alone"
    );
    assert!(listed("netns", live.namespace(1)) && listed("link", live.bridge_name()));
    assert!(
        net::cleanup_stale("docker").is_err(),
        "only our own prefix may be cleaned"
    );
    live.teardown().expect("teardown");
}

fn run_ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?} failed");
}

/// Whether `ip netns list` or `ip -o link show` lists `name`.
fn listed(kind: &str, name: &str) -> bool {
    let args: &[&str] = if kind == "netns" {
        &["netns", "list"]
    } else {
        &["-o", "link", "show"]
    };
    let output = Command::new("ip").args(args).output().expect("run ip");
    String::from_utf8_lossy(&output.stdout).lines().any(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let listed_name = if kind == "netns" {
            words.first().copied()
        } else {
            words.get(1).copied()
        };
        listed_name.is_some_and(|word| word.trim_end_matches(':').split('@').next() == Some(name))
    })
}
