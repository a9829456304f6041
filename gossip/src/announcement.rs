//! What a ringkv process announces about itself in gossip: the one definition of the gossip
//! keys, written by nodes and routers ([`Announcement::to_state`]) and read by both
//! ([`Announcement::parse`]).
//!
//! # Wire format
//!
//! Chitchat carries each member's state as string key/values. A node publishes:
//!
//! | key          | value                                   | if missing or malformed          |
//! |--------------|-----------------------------------------|----------------------------------|
//! | `role`       | `node`                                  | announcement rejected            |
//! | `node_id`    | decimal, non-zero                       | announcement rejected            |
//! | `addr`       | the node's gRPC `host:port`             | announcement rejected (missing)  |
//! | `cluster_id` | the cluster id, empty before init       | announcement rejected (missing)  |
//! | `ring_epoch` | decimal, 0 before a ring is known       | 0                                |
//! | `leaders`    | `shard:term,...` of the shards it leads | missing: none; bad entries skipped |
//! | `load`       | `replicas=N,leaders=M`                  | missing or bad numbers: 0; other pairs ignored |
//! | `draining`   | `true` or `false`                       | `false`                          |
//!
//! A router publishes only `role` = `router`.
//!
//! # Why some keys reject the whole announcement and others do not
//!
//! The identity keys (`role`, `node_id`, `addr`, `cluster_id`) say who is talking; without
//! them nothing else can be attributed, so the announcement is rejected. The remaining keys
//! are facts about the node that a newer version may extend: reading them leniently keeps a
//! node's liveness visible to older peers (the system leader counts gossip as evidence a
//! node is alive before declaring it dead), and the fallbacks are the conservative values
//! (`ring_epoch` 0 never makes a router believe its ring is stale; a skipped leader claim
//! only leaves the router to learn that leader from a status poll or a not-leader hint).
//! A `role` this version does not know is rejected with [`AnnouncementError::UnknownRole`],
//! so callers skip processes they would not understand.

use std::collections::BTreeMap;
use std::fmt;

/// Chitchat cluster name shared by every ringkv process (nodes and routers). Members of
/// different ringkv clusters are told apart by the `cluster_id` key, not by this name.
pub const CLUSTER_NAME: &str = "ringkv";

/// Longest part of a malformed value quoted in an [`AnnouncementError`] (values are network
/// input).
const MAX_QUOTED_VALUE_CHARS: usize = 64;

const KEY_ROLE: &str = "role";
const KEY_NODE_ID: &str = "node_id";
const KEY_ADDR: &str = "addr";
const KEY_CLUSTER_ID: &str = "cluster_id";
const KEY_RING_EPOCH: &str = "ring_epoch";
const KEY_LEADERS: &str = "leaders";
const KEY_LOAD: &str = "load";
const KEY_DRAINING: &str = "draining";

const ROLE_NODE: &str = "node";
const ROLE_ROUTER: &str = "router";

const LOAD_REPLICAS: &str = "replicas";
const LOAD_LEADERS: &str = "leaders";

/// What one ringkv process publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// A storage node.
    Node(NodeAnnouncement),
    /// A router (it publishes nothing but its role).
    Router,
}

/// What a storage node publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAnnouncement {
    /// The node's id (never 0).
    pub node_id: u64,
    /// The node's gRPC address (`host:port`), which is also its gossip address.
    pub addr: String,
    /// The cluster the node belongs to; empty until it belongs to an initialised cluster.
    pub cluster_id: String,
    /// Epoch of the ring the node has applied; 0 when it knows none.
    pub ring_epoch: u64,
    /// The shards the node leads, with the term of its leadership.
    pub leaders: Vec<LeaderClaim>,
    /// How much the node hosts.
    pub load: Load,
    /// The node is being decommissioned (or is already removed or dead).
    pub draining: bool,
}

/// "I lead this shard in this term."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderClaim {
    pub shard_id: u32,
    pub term: u64,
}

/// How many shard replicas a node hosts, and how many of them it leads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub replicas: u64,
    pub leaders: u64,
}

/// Why a member's gossip state is not an announcement this version understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnouncementError {
    /// A key the announcement cannot do without is absent (it may not have reached us yet).
    #[error("gossip key `{key}` is missing")]
    MissingKey { key: &'static str },
    /// A key the announcement cannot do without has a value that does not parse.
    #[error("gossip key `{key}` has a malformed value {value:?}")]
    Malformed {
        key: &'static str,
        /// The value, cut to a bounded length.
        value: String,
    },
    /// The member is neither a node nor a router (a newer kind of process).
    #[error("unknown gossip role {role:?}")]
    UnknownRole {
        /// The role, cut to a bounded length.
        role: String,
    },
}

impl Announcement {
    /// The gossip key/values that announce `self`.
    pub fn to_state(&self) -> BTreeMap<String, String> {
        match self {
            Announcement::Router => BTreeMap::from([(KEY_ROLE.to_string(), ROLE_ROUTER.to_string())]),
            Announcement::Node(node) => node.to_state(),
        }
    }

    /// Reads a member's gossip key/values (see the module docs for what each key may hold).
    /// Never panics, whatever the input.
    pub fn parse(state: &BTreeMap<String, String>) -> Result<Announcement, AnnouncementError> {
        let role = required(state, KEY_ROLE)?;
        match role {
            ROLE_NODE => NodeAnnouncement::parse(state).map(Announcement::Node),
            ROLE_ROUTER => Ok(Announcement::Router),
            other => Err(AnnouncementError::UnknownRole { role: quote(other) }),
        }
    }
}

impl NodeAnnouncement {
    fn to_state(&self) -> BTreeMap<String, String> {
        let leaders: Vec<String> = self.leaders.iter().map(LeaderClaim::to_string).collect();
        BTreeMap::from([
            (KEY_ROLE.to_string(), ROLE_NODE.to_string()),
            (KEY_NODE_ID.to_string(), self.node_id.to_string()),
            (KEY_ADDR.to_string(), self.addr.clone()),
            (KEY_CLUSTER_ID.to_string(), self.cluster_id.clone()),
            (KEY_RING_EPOCH.to_string(), self.ring_epoch.to_string()),
            (KEY_LEADERS.to_string(), leaders.join(",")),
            (KEY_LOAD.to_string(), self.load.to_string()),
            (KEY_DRAINING.to_string(), self.draining.to_string()),
        ])
    }

    fn parse(state: &BTreeMap<String, String>) -> Result<NodeAnnouncement, AnnouncementError> {
        let node_id_text = required(state, KEY_NODE_ID)?;
        let node_id = node_id_text
            .parse::<u64>()
            .ok()
            .filter(|node_id| *node_id != 0)
            .ok_or_else(|| AnnouncementError::Malformed {
                key: KEY_NODE_ID,
                value: quote(node_id_text),
            })?;
        let addr = required(state, KEY_ADDR)?.to_string();
        let cluster_id = required(state, KEY_CLUSTER_ID)?.to_string();
        let ring_epoch = state
            .get(KEY_RING_EPOCH)
            .and_then(|epoch| epoch.parse::<u64>().ok())
            .unwrap_or(0);
        let leaders = state
            .get(KEY_LEADERS)
            .map(|leaders| leaders.split(',').filter_map(LeaderClaim::parse).collect())
            .unwrap_or_default();
        let load = state
            .get(KEY_LOAD)
            .map(|load| Load::parse(load))
            .unwrap_or_default();
        let draining = state.get(KEY_DRAINING).is_some_and(|draining| draining == "true");
        Ok(NodeAnnouncement {
            node_id,
            addr,
            cluster_id,
            ring_epoch,
            leaders,
            load,
            draining,
        })
    }
}

impl LeaderClaim {
    /// Parses one `shard:term` entry; `None` when malformed.
    fn parse(entry: &str) -> Option<LeaderClaim> {
        let (shard_id, term) = entry.split_once(':')?;
        Some(LeaderClaim {
            shard_id: shard_id.parse().ok()?,
            term: term.parse().ok()?,
        })
    }
}

impl fmt::Display for LeaderClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.shard_id, self.term)
    }
}

impl Load {
    /// Parses `replicas=N,leaders=M`; unknown pairs are ignored, missing or malformed
    /// numbers read as 0.
    fn parse(text: &str) -> Load {
        let mut load = Load::default();
        for (name, value) in text.split(',').filter_map(|pair| pair.split_once('=')) {
            let value = value.parse().unwrap_or(0);
            match name {
                LOAD_REPLICAS => load.replicas = value,
                LOAD_LEADERS => load.leaders = value,
                _ => {}
            }
        }
        load
    }
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{LOAD_REPLICAS}={},{LOAD_LEADERS}={}",
            self.replicas, self.leaders
        )
    }
}

fn required<'a>(
    state: &'a BTreeMap<String, String>,
    key: &'static str,
) -> Result<&'a str, AnnouncementError> {
    state
        .get(key)
        .map(String::as_str)
        .ok_or(AnnouncementError::MissingKey { key })
}

fn quote(value: &str) -> String {
    value.chars().take(MAX_QUOTED_VALUE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn node() -> NodeAnnouncement {
        NodeAnnouncement {
            node_id: 3,
            addr: "127.0.0.1:7003".into(),
            cluster_id: "c1".into(),
            ring_epoch: 4,
            leaders: vec![
                LeaderClaim { shard_id: 0, term: 5 },
                LeaderClaim { shard_id: 7, term: 2 },
            ],
            load: Load {
                replicas: 6,
                leaders: 2,
            },
            draining: false,
        }
    }

    fn state(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    /// The exact keys and value syntax older versions write and read (mixed versions must
    /// keep interoperating).
    #[test]
    fn wire_format_is_unchanged() {
        let expected = state(&[
            ("role", "node"),
            ("node_id", "3"),
            ("addr", "127.0.0.1:7003"),
            ("cluster_id", "c1"),
            ("ring_epoch", "4"),
            ("leaders", "0:5,7:2"),
            ("load", "replicas=6,leaders=2"),
            ("draining", "false"),
        ]);
        assert_eq!(Announcement::Node(node()).to_state(), expected);
        assert_eq!(Announcement::Router.to_state(), state(&[("role", "router")]));
        let idle = NodeAnnouncement {
            leaders: Vec::new(),
            draining: true,
            ..node()
        };
        let idle_state = Announcement::Node(idle).to_state();
        assert_eq!(idle_state.get("leaders").map(String::as_str), Some(""));
        assert_eq!(idle_state.get("draining").map(String::as_str), Some("true"));
    }

    /// A missing or malformed identity key rejects the announcement, with the key named.
    #[test]
    fn identity_keys_are_required() {
        let full = Announcement::Node(node()).to_state();
        let table: [(&str, Option<&str>, AnnouncementError); 7] = [
            ("role", None, AnnouncementError::MissingKey { key: "role" }),
            (
                "role",
                Some("witness"),
                AnnouncementError::UnknownRole {
                    role: "witness".into(),
                },
            ),
            ("node_id", None, AnnouncementError::MissingKey { key: "node_id" }),
            (
                "node_id",
                Some("three"),
                AnnouncementError::Malformed {
                    key: "node_id",
                    value: "three".into(),
                },
            ),
            (
                "node_id",
                Some("0"),
                AnnouncementError::Malformed {
                    key: "node_id",
                    value: "0".into(),
                },
            ),
            ("addr", None, AnnouncementError::MissingKey { key: "addr" }),
            (
                "cluster_id",
                None,
                AnnouncementError::MissingKey { key: "cluster_id" },
            ),
        ];
        for (case, (key, value, expected)) in table.into_iter().enumerate() {
            let mut broken = full.clone();
            match value {
                Some(value) => broken.insert(key.to_string(), value.to_string()),
                None => broken.remove(key),
            };
            assert_eq!(Announcement::parse(&broken), Err(expected), "case {case}");
        }
    }

    /// Bad values of the other keys fall back to conservative values instead of hiding the
    /// node: malformed leader entries are skipped, a bad epoch reads as 0.
    #[test]
    fn other_keys_are_read_leniently() {
        let parsed = Announcement::parse(&state(&[
            ("role", "node"),
            ("node_id", "2"),
            ("addr", "n2:1"),
            ("cluster_id", "c1"),
            ("ring_epoch", "-1"),
            ("leaders", "0:5,1:7,bad,3:x,:,4:,5:1:2,1:18446744073709551616"),
            ("load", "replicas=x,leaders=2,cpu=0.5,junk"),
            ("draining", "yes"),
        ]));
        let expected = NodeAnnouncement {
            node_id: 2,
            addr: "n2:1".into(),
            cluster_id: "c1".into(),
            ring_epoch: 0,
            leaders: vec![
                LeaderClaim { shard_id: 0, term: 5 },
                LeaderClaim { shard_id: 1, term: 7 },
            ],
            load: Load {
                replicas: 0,
                leaders: 2,
            },
            draining: false,
        };
        assert_eq!(parsed, Ok(Announcement::Node(expected.clone())));
        // Only the identity keys: everything else takes its default.
        let minimal = state(&[
            ("role", "node"),
            ("node_id", "2"),
            ("addr", "n2:1"),
            ("cluster_id", "c1"),
        ]);
        let defaults = NodeAnnouncement {
            ring_epoch: 0,
            leaders: Vec::new(),
            load: Load::default(),
            draining: false,
            ..expected
        };
        assert_eq!(Announcement::parse(&minimal), Ok(Announcement::Node(defaults)));
    }

    /// A router's announcement is its role; other keys next to it are ignored.
    #[test]
    fn routers_announce_their_role() {
        let with_extra = state(&[("role", "router"), ("node_id", "x")]);
        assert_eq!(Announcement::parse(&with_extra), Ok(Announcement::Router));
    }

    /// Quoted malformed values are bounded (they are network input).
    #[test]
    fn quoted_values_are_bounded() {
        let long_role = "r".repeat(10_000);
        let Err(AnnouncementError::UnknownRole { role }) =
            Announcement::parse(&state(&[("role", &long_role)]))
        else {
            panic!("an unknown role is rejected")
        };
        assert_eq!(role.chars().count(), MAX_QUOTED_VALUE_CHARS);
    }

    fn node_announcement() -> impl Strategy<Value = NodeAnnouncement> {
        (
            1..=u64::MAX,
            ".*",
            ".*",
            any::<u64>(),
            proptest::collection::vec((any::<u32>(), any::<u64>()), 0..16),
            (any::<u64>(), any::<u64>()),
            any::<bool>(),
        )
            .prop_map(
                |(node_id, addr, cluster_id, ring_epoch, leaders, (replicas, leader_count), draining)| {
                    NodeAnnouncement {
                        node_id,
                        addr,
                        cluster_id,
                        ring_epoch,
                        leaders: leaders
                            .into_iter()
                            .map(|(shard_id, term)| LeaderClaim { shard_id, term })
                            .collect(),
                        load: Load {
                            replicas,
                            leaders: leader_count,
                        },
                        draining,
                    }
                },
            )
    }

    fn announcement() -> impl Strategy<Value = Announcement> {
        prop_oneof![
            node_announcement().prop_map(Announcement::Node),
            Just(Announcement::Router),
        ]
    }

    proptest! {
        /// Whatever a process announces is read back exactly.
        #[test]
        fn parse_inverts_to_state(announcement in announcement()) {
            prop_assert_eq!(Announcement::parse(&announcement.to_state()), Ok(announcement));
        }

        /// Arbitrary key/values never panic the parser.
        #[test]
        fn arbitrary_state_never_panics(
            pairs in proptest::collection::btree_map(
                prop_oneof![
                    Just("role".to_string()),
                    Just("node_id".to_string()),
                    Just("addr".to_string()),
                    Just("cluster_id".to_string()),
                    Just("ring_epoch".to_string()),
                    Just("leaders".to_string()),
                    Just("load".to_string()),
                    Just("draining".to_string()),
                    ".*",
                ],
                prop_oneof![Just("node".to_string()), Just("router".to_string()), "[0-9:,=a-z]*", ".*"],
                0..10,
            )
        ) {
            let _ = Announcement::parse(&pairs);
        }

        /// A node's identity survives any garbage in the lenient keys.
        #[test]
        fn lenient_keys_never_hide_a_node(
            ring_epoch in ".*",
            leaders in ".*",
            load in ".*",
            draining in ".*",
        ) {
            let mut state = Announcement::Node(node()).to_state();
            state.insert("ring_epoch".into(), ring_epoch);
            state.insert("leaders".into(), leaders);
            state.insert("load".into(), load);
            state.insert("draining".into(), draining);
            let parsed = Announcement::parse(&state);
            prop_assert!(
                matches!(&parsed, Ok(Announcement::Node(parsed)) if parsed.node_id == 3 && parsed.cluster_id == "c1"),
                "{:?}", parsed
            );
        }
    }
}
