//! Each node as its own host: a Linux network namespace per node, joined to a bridge in the host
//! namespace, and partitions as silent packet drops.
//!
//! # Topology
//!
//! ```text
//!  host namespace (router, harness)                      node namespaces
//!  ┌──────────────────────────────┐
//!  │ bridge <prefix>-br           │── <prefix>-h1 ═ veth ═ eth0  10.A.B.1/24   <prefix>-n1
//!  │ 10.A.B.254/24                │── <prefix>-h2 ═ veth ═ eth0  10.A.B.2/24   <prefix>-n2
//!  └──────────────────────────────┘── <prefix>-h3 ═ veth ═ eth0  10.A.B.3/24   <prefix>-n3
//! ```
//!
//! Nodes are numbered from 1 and node `i` has address `.i`. The bridge address `.254` is every
//! namespace's default gateway, so nodes reach processes in the host namespace (the router) and
//! the host reaches nodes through the bridge's connected route. Nodes reach each other through
//! the bridge; no IP forwarding is involved. Node interfaces carry no IPv6 address
//! (`addrgenmode none`), so nothing can route around the IPv4 drop rules.
//!
//! `prefix` is `rkv` plus six hex digits hashed from the run id, and the /24 is hashed from the
//! run id too (skipping any /24 that overlaps an existing route or address), so parallel runs do
//! not collide. Every interface name stays within Linux's 15-character limit.
//!
//! # Faults
//!
//! A partition is a set of directed drops `(from, to)`. Each one becomes an iptables rule
//! `-A INPUT -s <from's ip> -j DROP` in `to`'s namespace, so packets vanish silently on arrival: a
//! connect times out, nothing is refused or reset, and the sender's stack behaves exactly as on a
//! lossy network. This is what Jepsen does. Rules go in `INPUT` only, never `OUTPUT`: a packet
//! dropped in `OUTPUT` is a local error (`sendto` fails with `EPERM` for UDP and ICMP), which a
//! real partition never causes. A namespace's whole filter table is rewritten atomically with
//! `iptables-restore`. The host namespace is never filtered by a node partition: the routers
//! keep reaching every node.
//!
//! Slow, lossy and reordering links are the userspace emulator's ([`crate::netem`]), set with
//! [`Network::emulate`]: `mangle`-table rules in the receiving namespaces queue the links'
//! packets to it (before the filter table, so a partition still drops a delayed packet).
//!
//! A router is cut off from some nodes with [`Network::cut_router`]. Every router runs in the
//! host namespace and reaches the nodes from the bridge's address, so the address cannot tell
//! routers apart: each router process is put into a `net_cls` cgroup of its own (cgroup v1;
//! mounted under `/run/ringkv-jepsen-net/net_cls` when no `net_cls` hierarchy is), and one
//! host `mangle OUTPUT` rule sets a DSCP value of its own on every packet it sends into the
//! bridge (`-m cgroup --cgroup <classid> -j DSCP`). The DSCP bits travel in the IP header into
//! the namespaces, where the cut nodes drop them on arrival (`-A INPUT -s <bridge> -m dscp
//! --dscp N -j DROP`), as silently as a partition. `net_cls` and not cgroup v2 because a
//! socket's v2 cgroup is fixed when the socket is created, while moving a process into a
//! `net_cls` cgroup re-tags the sockets it has: the router's connections opened before the cut
//! are cut too. The rules and cgroups go at teardown.
//!
//! # br_netfilter
//!
//! When `br_netfilter` is active (`/proc/sys/net/bridge/bridge-nf-call-iptables` is `1`, as it is
//! on this project's kernel, where it is built in), frames crossing a bridge traverse the host's
//! iptables `FORWARD` chain, and a host whose `FORWARD` policy is `DROP` (Docker sets that) would
//! cut nodes off from each other. Rather than flip that host-wide sysctl, which would change how
//! every other bridge on the machine is filtered, [`Network::create`] inserts one rule at the top
//! of the host `FORWARD` chain accepting traffic that enters and leaves this run's bridge, tagged
//! with the comment `ringkv-jepsen:<prefix>`, and removes it at teardown.
//!
//! # Requirements
//!
//! Root, `ip` (iproute2) and `iptables` (both the nf_tables and the legacy variant work);
//! `jepsen/scripts/install-deps.sh` installs them. [`check_prerequisites`] says what is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};

use tracing::{debug, info, warn};

use crate::netem::{self, Emulator, Inbox, LinkFault, NetemStats};

/// Every namespace, bridge and veth this module creates starts with this.
pub const NAME_PREFIX: &str = "rkv";

/// Node addresses are `.1 ..= .253`; `.254` is the bridge.
pub const MAX_NODES: usize = 253;

/// Last octet of the bridge's address in every run's /24.
const BRIDGE_HOST_OCTET: u8 = 254;

/// Name of each node's end of its veth pair, inside the node's namespace.
const NODE_INTERFACE: &str = "eth0";

/// Hex digits of the run-id hash in the prefix: `rkv` + 6 + `-h253` = 13 ≤ 15 (IFNAMSIZ - 1).
const PREFIX_HASH_HEX_DIGITS: usize = 6;

/// How many /24 candidates to try before giving up on finding a free one.
const MAX_SUBNET_ATTEMPTS: u64 = 64;

/// How long iptables waits for the xtables lock (shared by every namespace with the legacy
/// variant) before failing, in seconds.
const IPTABLES_LOCK_WAIT_SECS: &str = "5";

/// Where each live network records the pid that owns it, so [`cleanup_stale`] can tell a crashed
/// run's leftovers from a parallel run's live network.
const OWNER_DIR: &str = "/run/ringkv-jepsen-net";

/// Comment tag on the host `FORWARD` rule that lets bridged traffic through br_netfilter.
const FORWARD_RULE_COMMENT_PREFIX: &str = "ringkv-jepsen:";

/// Directory, under the `net_cls` root, of every run's router cgroups (`<prefix>-r<index>`).
const ROUTER_CGROUP_PARENT: &str = "ringkv-jepsen";

/// Router `i`'s packets carry DSCP `FIRST_ROUTER_DSCP + i` (0 is everyone's default).
const FIRST_ROUTER_DSCP: usize = 8;

/// Router `i`'s cgroup has `net_cls.classid` `ROUTER_CLASSID_BASE + i` (major `0x52`, "R").
const ROUTER_CLASSID_BASE: u32 = 0x0052_0000;

/// Where a `net_cls` hierarchy is mounted when none is.
const NET_CLS_MOUNT: &str = "/run/ringkv-jepsen-net/net_cls";

/// Routers that can be cut off: DSCP values are 6 bits.
pub const MAX_ROUTERS: usize = 64 - FIRST_ROUTER_DSCP;

/// Where `ip netns add` bind-mounts named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Where the host namespace lists its network interfaces.
const SYS_CLASS_NET: &str = "/sys/class/net";

/// When this reads `1`, bridged frames traverse the host's iptables chains.
const BRIDGE_NF_CALL_IPTABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// Directories searched for `ip` and `iptables` besides `$PATH` (non-login shells often lack
/// the sbin directories).
const EXTRA_TOOL_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin"];

/// Errors of the network layer. Each failing external command carries its command line and
/// stderr.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Namespaces, bridges and iptables rules can only be changed by root.
    #[error("network partitions need root: run as root or pick nemeses without partitions")]
    NotRoot,
    /// A required program is not installed.
    #[error("`{program}` not found (needed for network partitions): run jepsen/scripts/install-deps.sh")]
    MissingTool {
        /// The program that was searched for.
        program: &'static str,
    },
    /// An external command exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The full command line.
        command: String,
        /// Exit status as printed by the OS.
        status: String,
        /// What the command wrote to stderr, trimmed.
        stderr: String,
    },
    /// An external command could not be started.
    #[error("could not start `{command}`: {source}")]
    Spawn {
        /// The full command line.
        command: String,
        /// Why it could not start.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Joining a node's network namespace from this process failed.
    #[error("could not enter network namespace {namespace}: {source}")]
    EnterNamespace {
        /// The namespace that could not be entered.
        namespace: String,
        /// The `setns` error.
        #[source]
        source: std::io::Error,
    },
    /// The run id is empty.
    #[error("run id must not be empty")]
    EmptyRunId,
    /// The node count is outside `1..=MAX_NODES`.
    #[error("node count {node_count} out of range 1..={MAX_NODES}")]
    InvalidNodeCount {
        /// The requested node count.
        node_count: usize,
    },
    /// A node index is outside `1..=node_count`.
    #[error("node {index} does not exist: nodes are numbered 1..={node_count}")]
    UnknownNode {
        /// The offending index.
        index: usize,
        /// Nodes in this network.
        node_count: usize,
    },
    /// A fault would cut a node off from itself.
    #[error("node {node} cannot be cut off from itself")]
    SelfPair {
        /// The node named on both sides.
        node: usize,
    },
    /// A node appears in two groups of a partition.
    #[error("node {node} appears in more than one partition group: use block() for overlapping topologies")]
    OverlappingGroups {
        /// The node listed twice.
        node: usize,
    },
    /// Resources with this run's prefix exist already.
    #[error("network {prefix} already exists: a live run uses the same run id")]
    AlreadyExists {
        /// The colliding prefix.
        prefix: String,
    },
    /// Every candidate /24 overlapped an existing route or address.
    #[error("no free /24 in 10.0.0.0/8 after {attempts} attempts")]
    NoFreeSubnet {
        /// How many candidates were tried.
        attempts: u64,
    },
    /// A link fault is out of range (see [`LinkFault::validate`]).
    #[error("invalid fault on link {from} -> {to}: {reason}")]
    InvalidLinkFault {
        /// Sending node.
        from: usize,
        /// Receiving node.
        to: usize,
        /// What is wrong.
        reason: String,
    },
    /// The network emulator's queue could not be opened in a node's namespace, or its thread
    /// could not start.
    #[error("network emulator (NFQUEUE) for node {node}: {source}")]
    Emulator {
        /// The node whose queue failed (0: the thread).
        node: usize,
        /// The netlink or thread error.
        #[source]
        source: std::io::Error,
    },
    /// No `net_cls` cgroup hierarchy is mounted and mounting one failed, so routers cannot be
    /// told apart.
    #[error("cutting a router off needs a net_cls cgroup hierarchy; mounting one on {NET_CLS_MOUNT} failed: {source}")]
    NoNetCls {
        /// The `mount` error.
        #[source]
        source: std::io::Error,
    },
    /// Router indices beyond the DSCP values set aside for them.
    #[error("router {router} cannot be cut off: at most {MAX_ROUTERS} routers have a DSCP tag")]
    TooManyRouters {
        /// The router index (from 0).
        router: usize,
    },
    /// `cleanup_stale` only removes resources named with [`NAME_PREFIX`].
    #[error("prefix pattern {pattern:?} must start with {NAME_PREFIX:?}")]
    InvalidPrefixPattern {
        /// The rejected pattern.
        pattern: String,
    },
}

/// Absolute paths of the programs this module runs.
#[derive(Debug, Clone)]
struct Tools {
    ip: PathBuf,
    iptables: PathBuf,
    iptables_restore: PathBuf,
}

impl Tools {
    /// Checks root and finds the programs; the error says what to do.
    fn locate() -> Result<Tools, NetError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let effective_uid = unsafe { libc::geteuid() };
        if effective_uid != 0 {
            return Err(NetError::NotRoot);
        }
        Ok(Tools {
            ip: find_program("ip")?,
            iptables: find_program("iptables")?,
            iptables_restore: find_program("iptables-restore")?,
        })
    }
}

/// Checks that this process can build node namespaces and partition them: it runs as root, `ip`
/// and `iptables` are installed, and iptables can read its filter table on this kernel.
pub fn check_prerequisites() -> Result<(), NetError> {
    let tools = Tools::locate()?;
    let mut list_rules = Command::new(&tools.iptables);
    list_rules.args(["-w", IPTABLES_LOCK_WAIT_SECS, "-S", "OUTPUT"]);
    run(list_rules, None)?;
    Ok(())
}

/// One node's place in the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNet {
    /// Node number, from 1.
    pub index: usize,
    /// Name of the node's network namespace, `<prefix>-n<index>`.
    pub namespace: String,
    /// The node's address, `.index` in the run's /24.
    pub ip: Ipv4Addr,
    /// The host end of the node's veth pair, `<prefix>-h<index>`, attached to the bridge.
    pub host_veth: String,
}

/// What the partition state looks like and what each namespace currently holds.
#[derive(Debug, Default)]
struct FaultState {
    /// Directed drops `(from, to)`: packets from node `from` to node `to` are dropped.
    drops: BTreeSet<(usize, usize)>,
    /// Routers cut off: `(router's DSCP tag, node)` drops packets the router sends to `node`.
    router_drops: BTreeSet<(u8, usize)>,
    /// The filter table last written into each namespace (index 0 is node 1); `None` when
    /// unknown, which forces a rewrite.
    applied_tables: Vec<Option<String>>,
}

/// A run's bridge and node namespaces. Dropping it (or [`Network::teardown`]) removes them.
#[derive(Debug)]
pub struct Network {
    run_id: String,
    prefix: String,
    bridge: String,
    /// Network address of the run's /24 (last octet 0).
    subnet: Ipv4Addr,
    nodes: Vec<HostNet>,
    /// How many nodes `create` was asked for: teardown removes this many by name, even when
    /// setup stopped halfway and `nodes` is shorter.
    planned_node_count: usize,
    tools: Tools,
    /// Arguments after `-D`/`-I FORWARD` of the host rule accepting bridged traffic, when one
    /// was inserted because br_netfilter is active.
    forward_rule: Option<Vec<String>>,
    faults: Mutex<FaultState>,
    /// The running emulator and the links it serves, when any link is emulated.
    emulation: Mutex<Option<Emulation>>,
    /// Routers tagged so far (router index → its cgroup and host rule).
    router_tags: Mutex<BTreeMap<usize, RouterTag>>,
    torn_down: bool,
}

/// The emulator and the links whose packets its rules queue.
#[derive(Debug)]
struct Emulation {
    emulator: Emulator,
    links: BTreeMap<(usize, usize), LinkFault>,
}

/// How a router's packets are told apart from other routers'.
#[derive(Debug)]
struct RouterTag {
    dscp: u8,
    /// The `net_cls` root (where processes go back at teardown).
    cgroup_root: PathBuf,
    /// The router's cgroup directory.
    cgroup: PathBuf,
    /// Arguments after `-A`/`-D OUTPUT` of the host `mangle` rule setting the DSCP tag.
    rule: Vec<String>,
}

impl Network {
    /// Builds a bridge and `node_count` node namespaces for run `run_id`; see the module docs.
    /// On failure, whatever was already built is removed.
    pub fn create(run_id: &str, node_count: usize) -> Result<Network, NetError> {
        if run_id.is_empty() {
            return Err(NetError::EmptyRunId);
        }
        if node_count == 0 || node_count > MAX_NODES {
            return Err(NetError::InvalidNodeCount { node_count });
        }
        let tools = Tools::locate()?;
        let run_hash = fnv1a_64(run_id.as_bytes());
        let prefix = prefix_from_hash(run_hash);
        let bridge = bridge_name(&prefix);
        // A run that died without tearing its network down (killed, interrupted) left it under
        // this name: its leftovers go first. A live run's network is left alone, and refused
        // below.
        if !cleanup_stale(&prefix)?.removed.is_empty() {
            info!(run_id, %prefix, "removed what a dead run of the same id left behind");
        }
        if !claim_owner_marker(&prefix)? {
            return Err(NetError::AlreadyExists { prefix });
        }
        if leftovers_exist(&prefix, node_count) {
            remove_owner_marker(&prefix)?;
            return Err(NetError::AlreadyExists { prefix });
        }

        // From here on, dropping `network` undoes whatever has been built so far.
        let mut network = Network {
            run_id: run_id.to_owned(),
            prefix,
            bridge,
            subnet: Ipv4Addr::UNSPECIFIED,
            nodes: Vec::with_capacity(node_count),
            planned_node_count: node_count,
            tools,
            forward_rule: None,
            faults: Mutex::new(FaultState {
                drops: BTreeSet::new(),
                router_drops: BTreeSet::new(),
                applied_tables: vec![None; node_count],
            }),
            emulation: Mutex::new(None),
            router_tags: Mutex::new(BTreeMap::new()),
            torn_down: false,
        };
        network.create_bridge(run_hash)?;
        network.let_bridged_traffic_through_br_netfilter()?;
        for index in 1..=node_count {
            network.create_node(index)?;
        }
        // Write an empty filter table everywhere now, so an iptables that cannot work inside
        // the namespaces fails here rather than at the first partition.
        network.heal()?;
        info!(
            run_id,
            prefix = %network.prefix,
            subnet = %network.subnet,
            node_count,
            "created node network namespaces"
        );
        Ok(network)
    }

    fn create_bridge(&mut self, run_hash: u64) -> Result<(), NetError> {
        let mut add_bridge = self.ip();
        add_bridge.args(["link", "add", "name", &self.bridge, "type", "bridge"]);
        if let Err(err) = run(add_bridge, None) {
            if link_exists(&self.bridge) {
                return Err(NetError::AlreadyExists {
                    prefix: self.prefix.clone(),
                });
            }
            return Err(err);
        }
        self.run_ip(&["link", "set", &self.bridge, "up"])?;

        for attempt in 0..MAX_SUBNET_ATTEMPTS {
            let candidate = subnet_candidate(run_hash, attempt);
            if self.subnet_overlaps_host(candidate, None)? {
                continue;
            }
            let bridge_cidr = format!("{}/24", with_host_octet(candidate, BRIDGE_HOST_OCTET));
            self.run_ip(&["addr", "add", &bridge_cidr, "dev", &self.bridge])?;
            // A parallel run may have picked the same /24 between the check and the add.
            if self.subnet_overlaps_host(candidate, Some(&self.bridge))? {
                self.run_ip(&["addr", "del", &bridge_cidr, "dev", &self.bridge])?;
                continue;
            }
            self.subnet = candidate;
            return Ok(());
        }
        Err(NetError::NoFreeSubnet {
            attempts: MAX_SUBNET_ATTEMPTS,
        })
    }

    /// Whether `candidate`/24 overlaps a route or an address of the host namespace, ignoring
    /// addresses on `own_device`.
    fn subnet_overlaps_host(&self, candidate: Ipv4Addr, own_device: Option<&str>) -> Result<bool, NetError> {
        let mut list_routes = self.ip();
        list_routes.args(["-4", "-o", "route", "show", "table", "all"]);
        let routes = run(list_routes, None)?;
        let mut list_addresses = self.ip();
        list_addresses.args(["-4", "-o", "addr", "show"]);
        let addresses = run(list_addresses, None)?;

        let route_overlaps = routes
            .lines()
            .filter(|line| own_device.is_none_or(|device| !line.contains(&format!(" dev {device}"))))
            .filter_map(parse_route_destination)
            .any(|(network, prefix_len)| prefixes_overlap(candidate, 24, network, prefix_len));
        let address_overlaps = addresses
            .lines()
            .filter_map(parse_address_line)
            .filter(|(device, _, _)| own_device != Some(device.as_str()))
            .any(|(_, address, prefix_len)| prefixes_overlap(candidate, 24, address, prefix_len));
        Ok(route_overlaps || address_overlaps)
    }

    fn let_bridged_traffic_through_br_netfilter(&mut self) -> Result<(), NetError> {
        let setting = match fs::read_to_string(BRIDGE_NF_CALL_IPTABLES) {
            Ok(setting) => setting,
            // No such file: br_netfilter is not loaded, bridged frames skip iptables.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(NetError::Io {
                    path: BRIDGE_NF_CALL_IPTABLES.into(),
                    source,
                })
            }
        };
        if setting.trim() != "1" {
            return Ok(());
        }
        let rule = forward_accept_rule(&self.bridge, &self.prefix);
        let mut insert = Command::new(&self.tools.iptables);
        insert
            .args(["-w", IPTABLES_LOCK_WAIT_SECS, "-I", "FORWARD", "1"])
            .args(&rule);
        run(insert, None)?;
        debug!(bridge = %self.bridge, "br_netfilter active: accepting bridged traffic in host FORWARD");
        self.forward_rule = Some(rule);
        Ok(())
    }

    fn create_node(&mut self, index: usize) -> Result<(), NetError> {
        let namespace = namespace_name(&self.prefix, index);
        let host_veth = host_veth_name(&self.prefix, index);
        let octet = u8::try_from(index).map_err(|_| NetError::InvalidNodeCount { node_count: index })?;
        let ip = with_host_octet(self.subnet, octet);
        let node_cidr = format!("{ip}/24");
        let gateway = self.bridge_ip().to_string();

        self.run_ip(&["netns", "add", &namespace])?;
        self.run_ip(&[
            "link",
            "add",
            &host_veth,
            "type",
            "veth",
            "peer",
            "name",
            NODE_INTERFACE,
            "netns",
            &namespace,
        ])?;
        self.run_ip(&["link", "set", &host_veth, "master", &self.bridge, "up"])?;
        self.run_ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        self.run_ip(&["-n", &namespace, "addr", "add", &node_cidr, "dev", NODE_INTERFACE])?;
        // No IPv6 address on the node's interface: the drop rules are IPv4 only, and an IPv6
        // link-local path between nodes would slip past a partition.
        self.run_ip(&[
            "-n",
            &namespace,
            "link",
            "set",
            NODE_INTERFACE,
            "addrgenmode",
            "none",
        ])?;
        self.run_ip(&["-n", &namespace, "link", "set", NODE_INTERFACE, "up"])?;
        self.run_ip(&["-n", &namespace, "route", "add", "default", "via", &gateway])?;
        self.nodes.push(HostNet {
            index,
            namespace,
            ip,
            host_veth,
        });
        debug_assert_eq!(self.nodes.len(), index, "nodes are created in order from 1");
        Ok(())
    }

    /// The run id this network was created for.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The name prefix of every resource of this network (`rkv` + 6 hex digits).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The bridge's interface name in the host namespace.
    pub fn bridge_name(&self) -> &str {
        &self.bridge
    }

    /// The bridge's address: nodes' default gateway and how they reach host processes.
    pub fn bridge_ip(&self) -> Ipv4Addr {
        with_host_octet(self.subnet, BRIDGE_HOST_OCTET)
    }

    /// Network address of the run's /24.
    pub fn subnet(&self) -> Ipv4Addr {
        self.subnet
    }

    /// How many nodes this network has; they are numbered `1..=node_count()`.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Every node, in order from node 1.
    pub fn nodes(&self) -> &[HostNet] {
        &self.nodes
    }

    /// Node `index`'s address.
    ///
    /// # Panics
    /// If `index` is not in `1..=node_count()`.
    pub fn host_ip(&self, index: usize) -> Ipv4Addr {
        self.node(index).ip
    }

    /// Node `index`'s namespace name.
    ///
    /// # Panics
    /// If `index` is not in `1..=node_count()`.
    pub fn namespace(&self, index: usize) -> &str {
        &self.node(index).namespace
    }

    /// A command that runs `program` inside node `index`'s namespace (`ip netns exec <ns>
    /// program`); add arguments, environment and stdio as usual. `ip netns exec` execs the
    /// program in place, so the spawned child's pid is the program's pid: SIGKILL and SIGSTOP
    /// sent to it reach the program itself.
    ///
    /// # Panics
    /// If `index` is not in `1..=node_count()`.
    pub fn command(&self, index: usize, program: impl AsRef<OsStr>) -> Command {
        let prefix = self.exec_prefix(index);
        let mut command = Command::new(&prefix[0]);
        command.args(&prefix[1..]).arg(program);
        command
    }

    /// The command prefix that runs a program inside node `index`'s namespace: `ip netns
    /// exec <ns>` (see [`Network::command`]), for launchers that take a prefix.
    ///
    /// # Panics
    /// If `index` is not in `1..=node_count()`.
    pub fn exec_prefix(&self, index: usize) -> Vec<OsString> {
        vec![
            self.tools.ip.clone().into_os_string(),
            "netns".into(),
            "exec".into(),
            self.namespace(index).into(),
        ]
    }

    /// Runs `work` on a fresh thread that has joined node `index`'s network namespace, and
    /// returns its result. Sockets created by `work` stay in that namespace after it returns,
    /// so this also binds listeners or opens connections "from" a node without a child process.
    pub fn in_namespace<T, F>(&self, index: usize, work: F) -> Result<T, NetError>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        self.check_index(index)?;
        let namespace = self.namespace(index);
        let namespace_path = Path::new(NETNS_DIR).join(namespace);
        let namespace_file = fs::File::open(&namespace_path).map_err(|source| NetError::Io {
            path: namespace_path.clone(),
            source,
        })?;
        let outcome = std::thread::scope(|scope| {
            let worker = scope.spawn(|| {
                // SAFETY: the fd is a valid open namespace file for the duration of the call;
                // setns only changes this (new, unshared) thread's network namespace.
                let status = unsafe { libc::setns(namespace_file.as_raw_fd(), libc::CLONE_NEWNET) };
                if status != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(work())
            });
            worker.join()
        });
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(NetError::EnterNamespace {
                namespace: namespace.to_owned(),
                source,
            }),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Drops all traffic between each pair of nodes, in both directions; adds to the drops
    /// already in place. A bridge topology (two majorities sharing one node) is a `block` of
    /// every pair across the two sides except the shared node.
    pub fn block(&self, pairs: &[(usize, usize)]) -> Result<(), NetError> {
        let mut directed = Vec::with_capacity(pairs.len() * 2);
        for &(first, second) in pairs {
            self.check_pair(first, second)?;
            directed.push((first, second));
            directed.push((second, first));
        }
        self.add_drops(&directed)
    }

    /// Splits nodes into groups that cannot exchange packets with each other; nodes within a
    /// group, and nodes listed in no group, keep talking to everyone. Adds to the drops already
    /// in place: call [`Network::heal`] first for a fresh topology.
    pub fn partition(&self, groups: &[Vec<usize>]) -> Result<(), NetError> {
        let pairs = partition_pairs(groups)?;
        self.block(&pairs)
    }

    /// Drops packets from node `from` to node `to` only; `to` → `from` still flows. (A TCP
    /// handshake fails both ways since half of it is dropped; datagrams show the asymmetry.)
    pub fn isolate_one_way(&self, from: usize, to: usize) -> Result<(), NetError> {
        self.check_pair(from, to)?;
        self.add_drops(&[(from, to)])
    }

    /// Removes every fault: stops the link emulation (its rules first, then the emulator,
    /// which releases what it holds) and rewrites an empty filter table into every node
    /// namespace (node partitions and cut routers).
    pub fn heal(&self) -> Result<(), NetError> {
        let emulation_stopped = self.stop_emulation();
        let mut faults = self.lock_faults();
        faults.drops.clear();
        faults.router_drops.clear();
        // Forget what was applied so every namespace is rewritten, whatever happened before.
        faults.applied_tables.iter_mut().for_each(|table| *table = None);
        self.apply(&mut faults)?;
        emulation_stopped.map(drop)
    }

    /// Emulates `links`: each directed link `(from, to)` delays, drops or reorders the packets
    /// `to` receives from `from` as its [`LinkFault`] says (see [`crate::netem`]). Replaces the
    /// links emulated before (an empty map stops the emulation); partitions stay. `seed` seeds
    /// the per-packet draws.
    pub fn emulate(&self, links: &BTreeMap<(usize, usize), LinkFault>, seed: u64) -> Result<(), NetError> {
        for (&(from, to), fault) in links {
            self.check_pair(from, to)?;
            fault
                .validate()
                .map_err(|reason| NetError::InvalidLinkFault { from, to, reason })?;
        }
        self.stop_emulation()?;
        if links.is_empty() {
            return Ok(());
        }
        let receivers: BTreeSet<usize> = links.keys().map(|&(_, to)| to).collect();
        let mut inboxes = Vec::with_capacity(receivers.len());
        for &node in &receivers {
            let queue = self
                .in_namespace(node, netem::open_queue)?
                .map_err(|source| NetError::Emulator { node, source })?;
            let links_in = links
                .iter()
                .filter(|((_, to), _)| *to == node)
                .map(|(&(from, _), fault)| (self.host_ip(from), *fault))
                .collect();
            inboxes.push(Inbox {
                node,
                queue,
                links: links_in,
            });
        }
        let emulator =
            Emulator::start(inboxes, seed).map_err(|source| NetError::Emulator { node: 0, source })?;
        *self.lock_emulation() = Some(Emulation {
            emulator,
            links: links.clone(),
        });
        if let Err(err) = self.write_mangle_tables(links) {
            if let Err(stop_err) = self.stop_emulation() {
                warn!(%stop_err, "stopping the emulator after its rules failed");
            }
            return Err(err);
        }
        info!(prefix = %self.prefix, links = links.len(), "emulating slow or lossy links");
        Ok(())
    }

    /// The emulated links, sorted.
    pub fn emulated_links(&self) -> BTreeMap<(usize, usize), LinkFault> {
        self.lock_emulation()
            .as_ref()
            .map(|emulation| emulation.links.clone())
            .unwrap_or_default()
    }

    /// What the running emulator did so far; `None` when no link is emulated.
    pub fn emulator_stats(&self) -> Option<NetemStats> {
        self.lock_emulation()
            .as_ref()
            .map(|emulation| emulation.emulator.stats())
    }

    /// Removes the emulator's rules, then stops it (it releases what it holds) and joins its
    /// thread; its final counters, `None` when nothing was emulated. [`Network::heal`] does
    /// this too.
    pub fn stop_emulation(&self) -> Result<Option<NetemStats>, NetError> {
        let Some(emulation) = self.lock_emulation().take() else {
            return Ok(None);
        };
        // Rules first: with them gone no packet is queued. They are flushed from the chain,
        // not rewritten with the table: a rewrite re-registers the chain's netfilter hook,
        // which drops every packet the emulator still holds.
        let rules_removed = self.flush_emulation_rules(&emulation.links);
        let stats = emulation.emulator.stop();
        debug!(prefix = %self.prefix, ?stats, "stopped the network emulator");
        rules_removed.map(|()| Some(stats))
    }

    /// Flushes the `mangle INPUT` chain (only the emulator's rules live there) of every node
    /// that `links` lead to; tries every one and returns the first error.
    fn flush_emulation_rules(&self, links: &BTreeMap<(usize, usize), LinkFault>) -> Result<(), NetError> {
        let receivers: BTreeSet<usize> = links.keys().map(|&(_, to)| to).collect();
        let mut first_error = None;
        for node in self.nodes.iter().filter(|node| receivers.contains(&node.index)) {
            let mut flush = self.ip();
            flush
                .args(["netns", "exec", &node.namespace])
                .arg(&self.tools.iptables)
                .args(["-w", IPTABLES_LOCK_WAIT_SECS, "-t", "mangle", "-F", "INPUT"]);
            keep_first_error(&mut first_error, run(flush, None).map(drop));
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Writes every namespace's `mangle` table for `links` (empty: no rule); tries every
    /// namespace and returns the first error.
    fn write_mangle_tables(&self, links: &BTreeMap<(usize, usize), LinkFault>) -> Result<(), NetError> {
        let mut first_error = None;
        for node in &self.nodes {
            let table = netem::mangle_table(node.index, links, |index| self.host_ip(index));
            keep_first_error(&mut first_error, self.restore_tables(node, &table));
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Cuts router `router` (its index, from 0; its process `pid` in the host namespace) off
    /// from `nodes`: what it sends them is dropped on arrival, silently. Adds to the faults in
    /// place; [`Network::heal`] removes it. A router restarted under a new pid is cut by
    /// calling this again with that pid.
    pub fn cut_router(&self, router: usize, pid: u32, nodes: &[usize]) -> Result<(), NetError> {
        for &node in nodes {
            self.check_index(node)?;
        }
        let dscp = self.tag_router(router, pid)?;
        let mut faults = self.lock_faults();
        faults.router_drops.extend(nodes.iter().map(|&node| (dscp, node)));
        self.apply(&mut faults)
    }

    /// Packets of cut routers dropped so far, summed over the nodes (read from the drop
    /// rules' counters, which start at zero whenever a table is rewritten).
    pub fn router_packets_dropped(&self) -> Result<u64, NetError> {
        let mut dropped = 0;
        for node in &self.nodes {
            let mut list = self.ip();
            list.args(["netns", "exec", &node.namespace])
                .arg(&self.tools.iptables)
                .args(["-w", IPTABLES_LOCK_WAIT_SECS, "-v", "-S", "INPUT"]);
            dropped += run(list, None)?
                .lines()
                .filter(|rule| rule.contains("-m dscp"))
                .filter_map(rule_packet_count)
                .sum::<u64>();
        }
        Ok(dropped)
    }

    /// The nodes each router is cut off from, by router DSCP tag.
    pub fn active_router_drops(&self) -> Vec<(u8, usize)> {
        self.lock_faults().router_drops.iter().copied().collect()
    }

    /// Puts `pid` into router `router`'s cgroup, creating it and its host DSCP rule on first
    /// use; the router's DSCP tag.
    fn tag_router(&self, router: usize, pid: u32) -> Result<u8, NetError> {
        if router >= MAX_ROUTERS {
            return Err(NetError::TooManyRouters { router });
        }
        let mut tags = self.lock_router_tags();
        let tag = match tags.entry(router) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => entry.insert(self.new_router_tag(router)?),
        };
        let procs = tag.cgroup.join("cgroup.procs");
        fs::write(&procs, format!("{pid}\n")).map_err(|source| NetError::Io { path: procs, source })?;
        Ok(tag.dscp)
    }

    /// Creates router `router`'s cgroup and the host rule tagging its packets.
    fn new_router_tag(&self, router: usize) -> Result<RouterTag, NetError> {
        let cgroup_root = net_cls_root()?;
        let cgroup = cgroup_root
            .join(ROUTER_CGROUP_PARENT)
            .join(format!("{}-r{router}", self.prefix));
        fs::create_dir_all(&cgroup).map_err(|source| NetError::Io {
            path: cgroup.clone(),
            source,
        })?;
        let too_many = |_| NetError::TooManyRouters { router };
        let classid = ROUTER_CLASSID_BASE + u32::try_from(router).map_err(too_many)?;
        let classid_file = cgroup.join("net_cls.classid");
        fs::write(&classid_file, format!("{classid}\n")).map_err(|source| NetError::Io {
            path: classid_file,
            source,
        })?;
        let dscp = u8::try_from(FIRST_ROUTER_DSCP + router).map_err(too_many)?;
        let rule = router_tag_rule(&self.bridge, classid, dscp, &self.prefix);
        let mut append = Command::new(&self.tools.iptables);
        append
            .args(["-w", IPTABLES_LOCK_WAIT_SECS, "-t", "mangle", "-A", "OUTPUT"])
            .args(&rule);
        run(append, None)?;
        Ok(RouterTag {
            dscp,
            cgroup_root,
            cgroup,
            rule,
        })
    }

    /// Removes the routers' host rules and cgroups (their processes go back to the root).
    fn remove_router_tags(&self) -> Result<(), NetError> {
        let mut first_error = None;
        let tags = std::mem::take(&mut *self.lock_router_tags());
        for tag in tags.into_values() {
            keep_first_error(
                &mut first_error,
                delete_mangle_output_rule(&self.tools, &tag.rule),
            );
            keep_first_error(&mut first_error, remove_cgroup(&tag.cgroup_root, &tag.cgroup));
            // Shared by parallel runs: removed only once empty.
            if let Some(parent) = tag.cgroup.parent() {
                let _ = fs::remove_dir(parent);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The directed drops `(from, to)` in place, sorted.
    pub fn active_drops(&self) -> Vec<(usize, usize)> {
        self.lock_faults().drops.iter().copied().collect()
    }

    /// Removes the namespaces, veths, bridge and host rule. Safe to call after a partial setup;
    /// each step is skipped when its resource is already gone. Processes still running inside
    /// a namespace are not killed (the harness owns them) but lose their network.
    pub fn teardown(mut self) -> Result<(), NetError> {
        self.torn_down = true;
        self.remove_everything()
    }

    fn remove_everything(&mut self) -> Result<(), NetError> {
        let mut first_error = None;
        keep_first_error(&mut first_error, self.stop_emulation().map(drop));
        keep_first_error(&mut first_error, self.remove_router_tags());
        if let Some(rule) = self.forward_rule.take() {
            keep_first_error(&mut first_error, delete_forward_rule(&self.tools, &rule));
        }
        let node_indices = 1..=self.planned_node_count;
        for index in node_indices.clone() {
            keep_first_error(
                &mut first_error,
                delete_link(&self.tools, &host_veth_name(&self.prefix, index)),
            );
        }
        keep_first_error(&mut first_error, delete_link(&self.tools, &self.bridge));
        for index in node_indices {
            keep_first_error(
                &mut first_error,
                delete_namespace(&self.tools, &namespace_name(&self.prefix, index)),
            );
        }
        keep_first_error(&mut first_error, remove_owner_marker(&self.prefix));
        match first_error {
            None => {
                info!(run_id = %self.run_id, prefix = %self.prefix, "removed node network namespaces");
                Ok(())
            }
            Some(err) => Err(err),
        }
    }

    fn add_drops(&self, directed: &[(usize, usize)]) -> Result<(), NetError> {
        let mut faults = self.lock_faults();
        faults.drops.extend(directed.iter().copied());
        self.apply(&mut faults)
    }

    /// Rewrites the filter table of every namespace whose rules differ from what it holds.
    fn apply(&self, faults: &mut FaultState) -> Result<(), NetError> {
        debug_assert_eq!(faults.applied_tables.len(), self.planned_node_count);
        for node in &self.nodes {
            let table = filter_table(
                node.index,
                &faults.drops,
                &faults.router_drops,
                self.bridge_ip(),
                |index| self.host_ip(index),
            );
            let slot = &mut faults.applied_tables[node.index - 1];
            if slot.as_deref() == Some(table.as_str()) {
                continue;
            }
            // Unknown until the restore succeeds: a failed write must be retried next time.
            *slot = None;
            self.restore_tables(node, &table)?;
            *slot = Some(table);
        }
        debug!(prefix = %self.prefix, drops = ?faults.drops, router_drops = ?faults.router_drops, "applied partition rules");
        Ok(())
    }

    /// Writes `tables` (`iptables-restore` input; only the tables it names change) into
    /// `node`'s namespace.
    fn restore_tables(&self, node: &HostNet, tables: &str) -> Result<(), NetError> {
        let mut restore = self.ip();
        restore
            .args(["netns", "exec", &node.namespace])
            .arg(&self.tools.iptables_restore)
            .args(["-w", IPTABLES_LOCK_WAIT_SECS]);
        run(restore, Some(tables)).map(drop)
    }

    fn lock_emulation(&self) -> MutexGuard<'_, Option<Emulation>> {
        // The emulation is taken out whole, never left half changed.
        self.emulation
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_router_tags(&self) -> MutexGuard<'_, BTreeMap<usize, RouterTag>> {
        // A tag is inserted only once its rule exists.
        self.router_tags
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_faults(&self) -> MutexGuard<'_, FaultState> {
        // The state is valid after any panic (applied tables are reset before each write).
        self.faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn node(&self, index: usize) -> &HostNet {
        match self.check_index(index) {
            Ok(()) => &self.nodes[index - 1],
            Err(err) => panic!("{err}"),
        }
    }

    fn check_index(&self, index: usize) -> Result<(), NetError> {
        if index == 0 || index > self.nodes.len() {
            return Err(NetError::UnknownNode {
                index,
                node_count: self.nodes.len(),
            });
        }
        Ok(())
    }

    fn check_pair(&self, from: usize, to: usize) -> Result<(), NetError> {
        self.check_index(from)?;
        self.check_index(to)?;
        if from == to {
            return Err(NetError::SelfPair { node: from });
        }
        Ok(())
    }

    fn ip(&self) -> Command {
        Command::new(&self.tools.ip)
    }

    fn run_ip(&self, args: &[&str]) -> Result<String, NetError> {
        let mut command = self.ip();
        command.args(args);
        run(command, None)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        if let Err(err) = self.remove_everything() {
            warn!(prefix = %self.prefix, %err, "failed to remove node network namespaces");
        }
    }
}

/// What [`cleanup_stale`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StaleCleanup {
    /// Prefixes whose namespaces, links, rules and marker were removed.
    pub removed: Vec<String>,
    /// Prefixes left alone because the process that created them is still running.
    pub live: Vec<String>,
}

/// Removes namespaces, bridges, veths and host `FORWARD` rules left behind by earlier runs that
/// crashed, for every prefix starting with `prefix_pattern` (which must start with `rkv`; pass
/// `"rkv"` for all). Networks whose creating process is still alive, such as a parallel run's,
/// are left alone.
pub fn cleanup_stale(prefix_pattern: &str) -> Result<StaleCleanup, NetError> {
    if !prefix_pattern.starts_with(NAME_PREFIX) {
        return Err(NetError::InvalidPrefixPattern {
            pattern: prefix_pattern.to_owned(),
        });
    }
    let tools = Tools::locate()?;
    let namespaces = list_dir_names(Path::new(NETNS_DIR))?;
    let links = list_dir_names(Path::new(SYS_CLASS_NET))?;
    let markers = list_dir_names(Path::new(OWNER_DIR))?;
    let forward_rules = list_forward_rules(&tools)?;
    let mangle_rules = list_mangle_output_rules(&tools)?;
    let cgroup_root = existing_net_cls_root();
    let router_cgroups = cgroup_root
        .as_ref()
        .map(|root| list_dir_names(&root.join(ROUTER_CGROUP_PARENT)))
        .transpose()?
        .unwrap_or_default();

    let mut prefixes = BTreeSet::new();
    prefixes.extend(
        namespaces
            .iter()
            .chain(&links)
            .filter_map(|name| prefix_of_resource(name)),
    );
    prefixes.extend(
        markers
            .iter()
            .filter_map(|name| name.strip_suffix(".owner"))
            .map(str::to_owned),
    );
    prefixes.extend(
        forward_rules
            .iter()
            .chain(&mangle_rules)
            .filter_map(|rule| prefix_of_forward_rule(rule)),
    );
    prefixes.extend(
        router_cgroups
            .iter()
            .filter_map(|name| name.rsplit_once("-r"))
            .map(|(prefix, _)| prefix.to_owned())
            .filter(|prefix| prefix.starts_with(NAME_PREFIX)),
    );

    let mut report = StaleCleanup::default();
    for prefix in prefixes
        .into_iter()
        .filter(|prefix| prefix.starts_with(prefix_pattern))
    {
        if owner_alive(&prefix) {
            report.live.push(prefix);
            continue;
        }
        for rule in forward_rules
            .iter()
            .filter(|rule| prefix_of_forward_rule(rule).as_ref() == Some(&prefix))
        {
            delete_forward_rule(&tools, &forward_rule_args(rule))?;
        }
        for rule in mangle_rules
            .iter()
            .filter(|rule| prefix_of_forward_rule(rule).as_ref() == Some(&prefix))
        {
            delete_mangle_output_rule(&tools, &forward_rule_args(rule))?;
        }
        if let Some(root) = &cgroup_root {
            for name in router_cgroups
                .iter()
                .filter(|name| name.rsplit_once("-r").is_some_and(|(owner, _)| owner == prefix))
            {
                remove_cgroup(root, &root.join(ROUTER_CGROUP_PARENT).join(name))?;
            }
        }
        for link in links
            .iter()
            .filter(|link| prefix_of_resource(link).as_ref() == Some(&prefix))
        {
            // Veths first, then the bridge; deleting a veth also deletes its peer.
            if link.ends_with("-br") {
                continue;
            }
            delete_link(&tools, link)?;
        }
        delete_link(&tools, &bridge_name(&prefix))?;
        for namespace in namespaces
            .iter()
            .filter(|name| prefix_of_resource(name).as_ref() == Some(&prefix))
        {
            delete_namespace(&tools, namespace)?;
        }
        remove_owner_marker(&prefix)?;
        info!(%prefix, "removed stale node network");
        report.removed.push(prefix);
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Naming and addressing: pure functions.

/// 64-bit FNV-1a: stable across builds and platforms, unlike std's hasher.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

fn prefix_from_hash(run_hash: u64) -> String {
    let hash_bits = run_hash & ((1 << (4 * PREFIX_HASH_HEX_DIGITS)) - 1);
    format!(
        "{NAME_PREFIX}{hash_bits:0width$x}",
        width = PREFIX_HASH_HEX_DIGITS
    )
}

fn bridge_name(prefix: &str) -> String {
    format!("{prefix}-br")
}

fn namespace_name(prefix: &str, index: usize) -> String {
    format!("{prefix}-n{index}")
}

fn host_veth_name(prefix: &str, index: usize) -> String {
    format!("{prefix}-h{index}")
}

/// The `attempt`-th /24 candidate for a run: `10.<1..=254>.<0..=255>.0`, skipping 10.0.x.x and
/// 10.255.x.x, which other software tends to use.
fn subnet_candidate(run_hash: u64, attempt: u64) -> Ipv4Addr {
    const SECOND_OCTETS: u64 = 254;
    const SLOTS: u64 = SECOND_OCTETS * 256;
    // Use the hash bits the prefix does not, so prefix and subnet vary independently; step by a
    // large odd constant so successive attempts spread out.
    let slot = (run_hash >> 24).wrapping_add(attempt.wrapping_mul(0x9e37_79b9)) % SLOTS;
    let second_octet = u8::try_from(1 + slot / 256).unwrap_or(1);
    let third_octet = u8::try_from(slot % 256).unwrap_or(0);
    Ipv4Addr::new(10, second_octet, third_octet, 0)
}

fn with_host_octet(subnet: Ipv4Addr, host_octet: u8) -> Ipv4Addr {
    let [first, second, third, _] = subnet.octets();
    Ipv4Addr::new(first, second, third, host_octet)
}

fn prefixes_overlap(first: Ipv4Addr, first_len: u8, second: Ipv4Addr, second_len: u8) -> bool {
    let shorter_len = first_len.min(second_len).min(32);
    if shorter_len == 0 {
        return true;
    }
    let mask = u32::MAX << (32 - u32::from(shorter_len));
    (u32::from(first) & mask) == (u32::from(second) & mask)
}

/// The destination of an `ip -4 -o route show table all` line; `None` for default routes and
/// lines that name no IPv4 destination.
fn parse_route_destination(line: &str) -> Option<(Ipv4Addr, u8)> {
    const ROUTE_TYPES: [&str; 10] = [
        "unicast",
        "local",
        "broadcast",
        "multicast",
        "anycast",
        "blackhole",
        "unreachable",
        "prohibit",
        "throw",
        "nat",
    ];
    let mut words = line.split_whitespace();
    let first = words.next()?;
    let destination = if ROUTE_TYPES.contains(&first) {
        words.next()?
    } else {
        first
    };
    parse_cidr(destination)
}

/// `(device, address, prefix_len)` of an `ip -4 -o addr show` line, such as
/// `4: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\ ...`.
fn parse_address_line(line: &str) -> Option<(String, Ipv4Addr, u8)> {
    let mut words = line.split_whitespace();
    let _ordinal = words.next()?;
    let device = words.next()?;
    if words.next()? != "inet" {
        return None;
    }
    let (address, prefix_len) = parse_cidr(words.next()?)?;
    Some((device.to_owned(), address, prefix_len))
}

/// `a.b.c.d/len` or `a.b.c.d` (a /32).
fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    match text.split_once('/') {
        Some((address, prefix_len)) => {
            let prefix_len: u8 = prefix_len.parse().ok()?;
            (prefix_len <= 32).then_some(())?;
            Some((address.parse().ok()?, prefix_len))
        }
        None => Some((text.parse().ok()?, 32)),
    }
}

/// The prefix of a namespace or link this module names (`<prefix>-n<i>`, `<prefix>-h<i>`,
/// `<prefix>-br`), or `None` for anything else.
fn prefix_of_resource(name: &str) -> Option<String> {
    let (prefix, suffix) = name.rsplit_once('-')?;
    if !prefix.starts_with(NAME_PREFIX) || prefix.contains('-') {
        return None;
    }
    let is_indexed = |tag: char| {
        suffix
            .strip_prefix(tag)
            .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit()))
    };
    (suffix == "br" || is_indexed('n') || is_indexed('h')).then(|| prefix.to_owned())
}

/// Each pair of nodes in different groups; an error if a node is in two groups.
fn partition_pairs(groups: &[Vec<usize>]) -> Result<Vec<(usize, usize)>, NetError> {
    let mut seen = BTreeSet::new();
    for node in groups.iter().flatten() {
        if !seen.insert(*node) {
            return Err(NetError::OverlappingGroups { node: *node });
        }
    }
    let mut pairs = Vec::new();
    for (group_index, group) in groups.iter().enumerate() {
        for other_group in &groups[group_index + 1..] {
            for &node in group {
                pairs.extend(other_group.iter().map(|&other_node| (node, other_node)));
            }
        }
    }
    Ok(pairs)
}

/// The whole filter table for node `node`'s namespace, in `iptables-restore` format: one
/// `INPUT` drop per node whose packets `node` must not receive, and one per router cut off
/// from `node` (the bridge's packets carrying that router's DSCP tag).
fn filter_table(
    node: usize,
    drops: &BTreeSet<(usize, usize)>,
    router_drops: &BTreeSet<(u8, usize)>,
    bridge_ip: Ipv4Addr,
    ip_of: impl Fn(usize) -> Ipv4Addr,
) -> String {
    let mut table =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for &(from, to) in drops {
        debug_assert_ne!(from, to, "a node is never cut off from itself");
        if to == node {
            table.push_str(&format!("-A INPUT -s {}/32 -j DROP\n", ip_of(from)));
        }
    }
    for &(dscp, to) in router_drops {
        if to == node {
            table.push_str(&format!(
                "-A INPUT -s {bridge_ip}/32 -m dscp --dscp {dscp} -j DROP\n"
            ));
        }
    }
    table.push_str("COMMIT\n");
    table
}

/// Match and target of the host `mangle OUTPUT` rule tagging router packets into `bridge`
/// with `dscp`, for sockets of processes in the `net_cls` cgroup of `classid`.
fn router_tag_rule(bridge: &str, classid: u32, dscp: u8, prefix: &str) -> Vec<String> {
    let comment = format!("{FORWARD_RULE_COMMENT_PREFIX}{prefix}");
    let dscp = dscp.to_string();
    let classid = classid.to_string();
    [
        "-o",
        bridge,
        "-m",
        "cgroup",
        "--cgroup",
        &classid,
        "-m",
        "comment",
        "--comment",
        &comment,
        "-j",
        "DSCP",
        "--set-dscp",
        &dscp,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The packet counter of an `iptables -v -S` rule (`… -c <packets> <bytes> …`).
fn rule_packet_count(rule: &str) -> Option<u64> {
    let mut words = rule.split_whitespace().skip_while(|word| *word != "-c");
    words.next()?;
    words.next()?.parse().ok()
}

/// The mount point of a `net_cls` cgroup (v1) hierarchy in a `/proc/self/mounts` listing.
fn parse_net_cls_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let _source = fields.next()?;
        let mount_point = fields.next()?;
        let is_net_cls =
            fields.next()? == "cgroup" && fields.next()?.split(',').any(|option| option == "net_cls");
        is_net_cls.then(|| PathBuf::from(mount_point))
    })
}

/// Match and target of the host rule accepting traffic bridged within `bridge`.
fn forward_accept_rule(bridge: &str, prefix: &str) -> Vec<String> {
    let comment = format!("{FORWARD_RULE_COMMENT_PREFIX}{prefix}");
    [
        "-i",
        bridge,
        "-o",
        bridge,
        "-m",
        "comment",
        "--comment",
        &comment,
        "-j",
        "ACCEPT",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The prefix tagged on an `iptables -S FORWARD` line, when it is one of ours.
fn prefix_of_forward_rule(rule: &str) -> Option<String> {
    let tag_start = rule.find(FORWARD_RULE_COMMENT_PREFIX)? + FORWARD_RULE_COMMENT_PREFIX.len();
    let prefix: String = rule[tag_start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    prefix.starts_with(NAME_PREFIX).then_some(prefix)
}

/// The match and target of an `iptables -S FORWARD` line (`-A FORWARD ...`), ready for `-D FORWARD`.
fn forward_rule_args(rule: &str) -> Vec<String> {
    rule.split_whitespace()
        .skip_while(|word| *word == "-A")
        .skip(1)
        .map(|word| word.trim_matches('"').to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Side effects.

fn find_program(name: &'static str) -> Result<PathBuf, NetError> {
    let path_dirs = std::env::var_os("PATH").map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>());
    path_dirs
        .unwrap_or_default()
        .into_iter()
        .chain(EXTRA_TOOL_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or(NetError::MissingTool { program: name })
}

/// Runs `command` to completion, feeding it `stdin`; its stdout on success.
fn run(mut command: Command, stdin: Option<&str>) -> Result<String, NetError> {
    let command_line = format_command(&command);
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawn_error = |source| NetError::Spawn {
        command: command_line.clone(),
        source,
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    if let (Some(input), Some(mut child_stdin)) = (stdin, child.stdin.take()) {
        // A write error (the child exited early) shows up as a failed exit status below.
        let _ = child_stdin.write_all(input.as_bytes());
    }
    let output = child.wait_with_output().map_err(spawn_error)?;
    if !output.status.success() {
        return Err(NetError::CommandFailed {
            command: command_line,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn format_command(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| word.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn link_exists(name: &str) -> bool {
    Path::new(SYS_CLASS_NET).join(name).exists()
}

fn namespace_exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

/// Whether a namespace or link named for `prefix` exists (a crashed run's, since no live
/// process owns the prefix).
fn leftovers_exist(prefix: &str, node_count: usize) -> bool {
    link_exists(&bridge_name(prefix))
        || (1..=node_count).any(|index| {
            namespace_exists(&namespace_name(prefix, index)) || link_exists(&host_veth_name(prefix, index))
        })
}

fn delete_link(tools: &Tools, name: &str) -> Result<(), NetError> {
    if !link_exists(name) {
        return Ok(());
    }
    let mut delete = Command::new(&tools.ip);
    delete.args(["link", "del", name]);
    match run(delete, None) {
        // Deleting one end of a veth removes the other: it may vanish between check and delete.
        Err(_) if !link_exists(name) => Ok(()),
        other => other.map(drop),
    }
}

fn delete_namespace(tools: &Tools, name: &str) -> Result<(), NetError> {
    if !namespace_exists(name) {
        return Ok(());
    }
    let mut list_pids = Command::new(&tools.ip);
    list_pids.args(["netns", "pids", name]);
    if let Ok(pids) = run(list_pids, None) {
        let pids: Vec<&str> = pids.split_whitespace().collect();
        if !pids.is_empty() {
            warn!(
                namespace = name,
                ?pids,
                "processes still running in a namespace being removed"
            );
        }
    }
    let mut delete = Command::new(&tools.ip);
    delete.args(["netns", "del", name]);
    run(delete, None).map(drop)
}

fn list_forward_rules(tools: &Tools) -> Result<Vec<String>, NetError> {
    let mut list = Command::new(&tools.iptables);
    list.args(["-w", IPTABLES_LOCK_WAIT_SECS, "-S", "FORWARD"]);
    Ok(run(list, None)?.lines().map(str::to_owned).collect())
}

fn delete_forward_rule(tools: &Tools, rule: &[String]) -> Result<(), NetError> {
    let mut check = Command::new(&tools.iptables);
    check
        .args(["-w", IPTABLES_LOCK_WAIT_SECS, "-C", "FORWARD"])
        .args(rule);
    if run(check, None).is_err() {
        // Already gone (or never matched): nothing to delete.
        return Ok(());
    }
    let mut delete = Command::new(&tools.iptables);
    delete
        .args(["-w", IPTABLES_LOCK_WAIT_SECS, "-D", "FORWARD"])
        .args(rule);
    run(delete, None).map(drop)
}

fn delete_mangle_output_rule(tools: &Tools, rule: &[String]) -> Result<(), NetError> {
    let mut check = Command::new(&tools.iptables);
    check
        .args(["-w", IPTABLES_LOCK_WAIT_SECS, "-t", "mangle", "-C", "OUTPUT"])
        .args(rule);
    if run(check, None).is_err() {
        return Ok(());
    }
    let mut delete = Command::new(&tools.iptables);
    delete
        .args(["-w", IPTABLES_LOCK_WAIT_SECS, "-t", "mangle", "-D", "OUTPUT"])
        .args(rule);
    run(delete, None).map(drop)
}

fn list_mangle_output_rules(tools: &Tools) -> Result<Vec<String>, NetError> {
    let mut list = Command::new(&tools.iptables);
    list.args(["-w", IPTABLES_LOCK_WAIT_SECS, "-t", "mangle", "-S", "OUTPUT"]);
    Ok(run(list, None)?.lines().map(str::to_owned).collect())
}

/// Where a `net_cls` hierarchy is mounted already, if anywhere.
fn existing_net_cls_root() -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    parse_net_cls_mount(&mounts)
}

/// The `net_cls` root: an existing mount, else one mounted on [`NET_CLS_MOUNT`] (left
/// mounted: parallel runs share it, and it holds nothing once their cgroups are gone).
fn net_cls_root() -> Result<PathBuf, NetError> {
    if let Some(root) = existing_net_cls_root() {
        return Ok(root);
    }
    fs::create_dir_all(NET_CLS_MOUNT).map_err(|source| NetError::Io {
        path: NET_CLS_MOUNT.into(),
        source,
    })?;
    let to_c_string =
        |text: &str| std::ffi::CString::new(text).map_err(|err| NetError::NoNetCls { source: err.into() });
    let source = to_c_string("net_cls")?;
    let target = to_c_string(NET_CLS_MOUNT)?;
    let fstype = to_c_string("cgroup")?;
    let options = to_c_string("net_cls")?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let status = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    if status != 0 {
        let source = std::io::Error::last_os_error();
        // A parallel run may have mounted it in between.
        return existing_net_cls_root().ok_or(NetError::NoNetCls { source });
    }
    Ok(PathBuf::from(NET_CLS_MOUNT))
}

/// Moves every process of `cgroup` back to `root` and removes the cgroup; nothing when it is
/// gone already.
fn remove_cgroup(root: &Path, cgroup: &Path) -> Result<(), NetError> {
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| NetError::Io { path, source }
    };
    let procs = match fs::read_to_string(cgroup.join("cgroup.procs")) {
        Ok(procs) => procs,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(io_error(cgroup)(source)),
    };
    let root_procs = root.join("cgroup.procs");
    for pid in procs.split_whitespace() {
        // A process that exited meanwhile cannot be moved: nothing to do for it.
        if let Err(err) = fs::write(&root_procs, format!("{pid}\n")) {
            debug!(pid, %err, "moving a process out of a router cgroup");
        }
    }
    fs::remove_dir(cgroup).map_err(io_error(cgroup))
}

fn owner_marker_path(prefix: &str) -> PathBuf {
    Path::new(OWNER_DIR).join(format!("{prefix}.owner"))
}

/// Records this process as the owner of `prefix`; `false` when a live process owns it already.
/// A marker left by a dead process is replaced.
fn claim_owner_marker(prefix: &str) -> Result<bool, NetError> {
    fs::create_dir_all(OWNER_DIR).map_err(|source| NetError::Io {
        path: OWNER_DIR.into(),
        source,
    })?;
    let marker = owner_marker_path(prefix);
    // Two tries: the second follows removing a dead owner's marker.
    for _ in 0..2 {
        match fs::OpenOptions::new().write(true).create_new(true).open(&marker) {
            Ok(mut file) => {
                file.write_all(format!("{}\n", std::process::id()).as_bytes())
                    .map_err(|source| NetError::Io {
                        path: marker.clone(),
                        source,
                    })?;
                return Ok(true);
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                if owner_alive(prefix) {
                    return Ok(false);
                }
                remove_owner_marker(prefix)?;
            }
            Err(source) => return Err(NetError::Io { path: marker, source }),
        }
    }
    Ok(false)
}

fn remove_owner_marker(prefix: &str) -> Result<(), NetError> {
    let marker = owner_marker_path(prefix);
    match fs::remove_file(&marker) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetError::Io { path: marker, source }),
    }
}

/// Whether the process recorded as creating `prefix`'s network is still running.
fn owner_alive(prefix: &str) -> bool {
    let Ok(contents) = fs::read_to_string(owner_marker_path(prefix)) else {
        return false;
    };
    let Ok(pid) = contents.trim().parse::<libc::pid_t>() else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the pid exists; nothing is delivered.
    let status = unsafe { libc::kill(pid, 0) };
    status == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn list_dir_names(dir: &Path) -> Result<Vec<String>, NetError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(NetError::Io {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| NetError::Io {
            path: dir.to_owned(),
            source,
        })?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

fn keep_first_error(first_error: &mut Option<NetError>, result: Result<(), NetError>) {
    if let Err(err) = result {
        if first_error.is_none() {
            *first_error = Some(err);
        } else {
            warn!(%err, "further error while removing node network");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names fit Linux's 15-character interface limit for the largest node index.
    #[test]
    fn names_fit_ifnamsiz() {
        let prefix = prefix_from_hash(fnv1a_64(b"any run id"));
        assert_eq!(prefix.len(), NAME_PREFIX.len() + PREFIX_HASH_HEX_DIGITS);
        assert!(host_veth_name(&prefix, MAX_NODES).len() <= 15);
        assert!(bridge_name(&prefix).len() <= 15);
    }

    /// Different run ids give different prefixes and subnets; the same id gives the same.
    #[test]
    fn prefix_and_subnet_follow_the_run_id() {
        let first = fnv1a_64(b"run-1");
        let second = fnv1a_64(b"run-2");
        assert_ne!(prefix_from_hash(first), prefix_from_hash(second));
        assert_eq!(prefix_from_hash(first), prefix_from_hash(fnv1a_64(b"run-1")));
        assert_ne!(subnet_candidate(first, 0), subnet_candidate(first, 1));
        for attempt in 0..MAX_SUBNET_ATTEMPTS {
            let [first_octet, second_octet, _, last_octet] = subnet_candidate(first, attempt).octets();
            assert_eq!((first_octet, last_octet), (10, 0));
            assert!((1..=254).contains(&second_octet));
        }
    }

    /// Overlap is decided by the shorter prefix.
    #[test]
    fn overlap_uses_the_shorter_prefix() {
        let subnet = Ipv4Addr::new(10, 1, 2, 0);
        assert!(prefixes_overlap(subnet, 24, Ipv4Addr::new(10, 0, 0, 0), 8));
        assert!(prefixes_overlap(subnet, 24, Ipv4Addr::new(10, 1, 2, 7), 32));
        assert!(!prefixes_overlap(subnet, 24, Ipv4Addr::new(10, 1, 3, 0), 24));
        assert!(!prefixes_overlap(subnet, 24, Ipv4Addr::new(192, 0, 2, 0), 24));
    }

    /// Route and address lines from `ip -o` parse into prefixes; default routes are skipped.
    #[test]
    fn parses_ip_output() {
        assert_eq!(parse_route_destination("default via 192.0.2.1 dev eth0"), None);
        assert_eq!(
            parse_route_destination("192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2"),
            Some((Ipv4Addr::new(192, 0, 2, 0), 24))
        );
        assert_eq!(
            parse_route_destination("local 10.7.7.254 dev rkv-br table local proto kernel"),
            Some((Ipv4Addr::new(10, 7, 7, 254), 32))
        );
        assert_eq!(
            parse_address_line("4: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\\"),
            Some(("eth0".to_owned(), Ipv4Addr::new(192, 0, 2, 2), 24))
        );
    }

    /// Only our own naming scheme is recognised as ours.
    #[test]
    fn recognises_our_resource_names() {
        assert_eq!(prefix_of_resource("rkv0a1b2c-n3").as_deref(), Some("rkv0a1b2c"));
        assert_eq!(prefix_of_resource("rkv0a1b2c-h12").as_deref(), Some("rkv0a1b2c"));
        assert_eq!(prefix_of_resource("rkv0a1b2c-br").as_deref(), Some("rkv0a1b2c"));
        assert_eq!(prefix_of_resource("rkv0a1b2c-x"), None);
        assert_eq!(prefix_of_resource("docker0"), None);
        assert_eq!(prefix_of_resource("veth-n1"), None);
        let rule = "-A FORWARD -i rkv0a1b2c-br -o rkv0a1b2c-br -m comment --comment ringkv-jepsen:rkv0a1b2c -j ACCEPT";
        assert_eq!(prefix_of_forward_rule(rule).as_deref(), Some("rkv0a1b2c"));
        assert_eq!(
            forward_rule_args(rule),
            forward_accept_rule("rkv0a1b2c-br", "rkv0a1b2c")
        );
    }

    /// A partition blocks exactly the cross-group pairs and rejects a node in two groups.
    #[test]
    fn partition_pairs_cross_groups_only() {
        let pairs = partition_pairs(&[vec![1], vec![2, 3]]).unwrap();
        assert_eq!(pairs, vec![(1, 2), (1, 3)]);
        assert!(matches!(
            partition_pairs(&[vec![1, 2], vec![2, 3]]),
            Err(NetError::OverlappingGroups { node: 2 })
        ));
    }

    /// A directed drop is an INPUT rule in the receiver's table only, never an OUTPUT rule.
    #[test]
    fn filter_tables_drop_on_arrival_only() {
        let drops = BTreeSet::from([(2, 1)]);
        let ip_of = |index: usize| Ipv4Addr::new(10, 1, 2, u8::try_from(index).unwrap());
        let bridge = Ipv4Addr::new(10, 1, 2, 254);
        let receiver = filter_table(1, &drops, &BTreeSet::new(), bridge, ip_of);
        let sender = filter_table(2, &drops, &BTreeSet::new(), bridge, ip_of);
        assert!(receiver.contains("-A INPUT -s 10.1.2.2/32 -j DROP\n"));
        assert!(!receiver.contains("-A OUTPUT"));
        assert!(!sender.contains("-A "));
        assert!(sender.ends_with("COMMIT\n"));
    }

    /// A cut router is a drop of the bridge's packets carrying its DSCP tag, in the cut
    /// nodes' tables only.
    #[test]
    fn router_cuts_drop_the_routers_tag_on_arrival() {
        let router_drops = BTreeSet::from([(9, 2)]);
        let ip_of = |index: usize| Ipv4Addr::new(10, 1, 2, u8::try_from(index).unwrap());
        let bridge = Ipv4Addr::new(10, 1, 2, 254);
        let cut = filter_table(2, &BTreeSet::new(), &router_drops, bridge, ip_of);
        let other = filter_table(1, &BTreeSet::new(), &router_drops, bridge, ip_of);
        assert!(cut.contains("-A INPUT -s 10.1.2.254/32 -m dscp --dscp 9 -j DROP\n"));
        assert!(!other.contains("-A "));
        let rule = router_tag_rule("rkv0a1b2c-br", 0x0052_0001, 9, "rkv0a1b2c").join(" ");
        assert_eq!(
            rule,
            "-o rkv0a1b2c-br -m cgroup --cgroup 5373953 -m comment \
             --comment ringkv-jepsen:rkv0a1b2c -j DSCP --set-dscp 9"
        );
        let counted = "-A INPUT -s 10.1.2.254/32 -m dscp --dscp 0x09 -c 17 1020 -j DROP";
        assert_eq!(rule_packet_count(counted), Some(17));
        assert_eq!(rule_packet_count("-P INPUT ACCEPT"), None);
        let listed = format!("-A OUTPUT {}", rule.replace("--set-dscp 9", "--set-dscp 0x09"));
        assert_eq!(prefix_of_forward_rule(&listed).as_deref(), Some("rkv0a1b2c"));
    }

    /// A `net_cls` hierarchy is found in a mounts listing, alone or with `net_prio`.
    #[test]
    fn finds_the_net_cls_mount() {
        let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup /sys/fs/cgroup/net_cls,net_prio cgroup rw,nosuid,net_cls,net_prio 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert_eq!(
            parse_net_cls_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/net_cls,net_prio"))
        );
        assert_eq!(
            parse_net_cls_mount("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"),
            None
        );
        assert_eq!(
            parse_net_cls_mount("cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n"),
            None
        );
    }
}
