//! The router's typed configuration: loaded from an optional TOML file, then overridden by
//! command-line flags (in `bin/`), then checked by [`RouterConfig::validate`].
//!
//! Every bound the router enforces is named here, with its unit last (`rpc_timeout_ms`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::failpoint::Failpoint;

/// Bytes in one mebibyte.
const MIB: usize = 1024 * 1024;

/// Largest accepted key limit: keys are 1 B .. 4 KiB by design; allow raising it a little.
const MAX_KEY_BYTES_CEILING: usize = 64 * 1024;
/// Largest accepted fan-out width.
const MAX_FANOUT_CEILING: usize = 4096;
/// Upper bound for every configured duration: one hour.
const MAX_DURATION_MS: u64 = 60 * 60 * 1000;
/// Room for protobuf framing and the other fields of a request around its keys and values.
const REQUEST_OVERHEAD_BYTES: usize = 64 * 1024;

/// Errors loading or checking a [`RouterConfig`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid config: {field} {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// Configuration of one router process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Address the gRPC server binds, `ip:port`. Port 0 picks a free port
    /// (see `RouterHandle::local_addr`).
    pub listen_addr: SocketAddr,
    /// `host:port` of storage nodes to learn the cluster from. Ring members found through
    /// them are polled too, so a few seeds are enough.
    pub seed_nodes: Vec<String>,
    /// How often the topology refresher polls `NodeStatus` on every known node (gossip
    /// triggers a refresh as soon as the cluster changes; this is the fallback).
    pub refresh_interval_ms: u64,
    /// Gossip round interval (gossip runs over UDP on the listen address).
    pub gossip_interval_ms: u64,
    /// Deadline of a client request that carries no `grpc-timeout` header.
    pub default_request_timeout_ms: u64,
    /// Cap on a client's `grpc-timeout`: no request is retried for longer than this.
    pub max_request_timeout_ms: u64,
    /// Timeout of one attempt against one node (also of one `NodeStatus` poll); an attempt
    /// gets `min(rpc_timeout_ms, time left before the request deadline)` — a write's up to
    /// 5 times longer at a node whose writes take longer (`attempt_timeout.rs`).
    pub rpc_timeout_ms: u64,
    /// Timeout for opening a TCP connection to a node.
    pub connect_timeout_ms: u64,
    /// Largest accepted key, in bytes (keys are never empty).
    pub max_key_bytes: usize,
    /// Largest accepted value, in bytes.
    pub max_value_bytes: usize,
    /// Most keys (or entries) in one `BatchGet` / `BatchPut`.
    pub max_batch_keys: usize,
    /// Largest encoded client request, in bytes (tonic's `max_decoding_message_size`).
    pub max_request_bytes: usize,
    /// Largest encoded response, in bytes: what the router accepts from a node and sends
    /// to a client (a `BatchGet` of many large values).
    pub max_response_bytes: usize,
    /// Most concurrent sub-requests of one batch (and `NodeStatus` polls of one refresh).
    pub max_fanout: usize,
    /// Most client requests served at once; beyond it requests fail fast with
    /// `RESOURCE_EXHAUSTED`. Streams (`ScanStream`, `Count`) do not count: they have
    /// `max_open_streams`.
    pub max_inflight_requests: usize,
    /// Most streams (`ScanStream`, `Count`, `Txn.Gc`) open at once, apart from
    /// `max_inflight_requests`; beyond it a stream is refused with `RESOURCE_EXHAUSTED`.
    /// With `stream_buffer_bytes`, it bounds the router memory streams use.
    pub max_open_streams: usize,
    /// A stream whose reader takes no message for this long is cut (`DEADLINE_EXCEEDED`),
    /// and what it holds is freed.
    pub stream_idle_timeout_ms: u64,
    /// A stream open this long is cut (`DEADLINE_EXCEEDED`); a client resumes a scan from
    /// its last continuation token.
    pub stream_total_timeout_ms: u64,
    /// First retry backoff; doubles per retry up to `retry_max_backoff_ms`, with jitter.
    pub retry_initial_backoff_ms: u64,
    /// Largest retry backoff.
    pub retry_max_backoff_ms: u64,
    /// How long a graceful shutdown waits for in-flight requests before cutting them.
    pub shutdown_timeout_ms: u64,
    /// Bytes of shard pages one `Scan` page buffers across all shards (each shard's fetch
    /// gets `scan_buffer_bytes / shards`, at least 64 KiB): the router memory one scan page
    /// needs, however large its result. Streams have `stream_buffer_bytes`.
    pub scan_buffer_bytes: u64,
    /// Bytes of shard pages one streamed scan buffers ahead of its reader, split like
    /// `scan_buffer_bytes` (at least 64 KiB per shard fetch). A stream holds this, plus the
    /// message being made and the one or two its transport holds (256 KiB each), for
    /// as long as it is open.
    pub stream_buffer_bytes: u64,
    /// How often the router collects the records of old transactions (`txn_gc.rs`); 0 never
    /// (`Txn.Gc` / `kvctl txn-gc` still do on demand).
    pub txn_gc_interval_ms: u64,
    /// Records of transactions that started longer ago than this (oracle time) are
    /// collected, and a transaction older than this can no longer commit (`TXN_TOO_OLD`).
    pub txn_gc_age_ms: u64,
    /// NEGATIVE CONTROL ONLY — breaks repeatable read on purpose: transactions commit
    /// without the write-conflict check (lost updates). Not settable from a config file.
    #[serde(skip)]
    pub unsafe_skip_write_conflict: bool,
    /// NEGATIVE CONTROL ONLY — breaks serializable on purpose: transactions commit without
    /// validating their reads (write skew, as under repeatable read). Not settable from a
    /// config file.
    #[serde(skip)]
    pub unsafe_skip_read_validation: bool,
    /// NEGATIVE CONTROL ONLY — breaks atomicity on purpose: a lock a request meets is rolled
    /// back at once, without asking its primary's shard for the transaction record (no
    /// status check, no wait for its time to live), so a transaction whose primary commits
    /// loses the writes whose locks went. For testing only; not settable from a config file.
    #[serde(skip)]
    pub unsafe_resolve_without_primary: bool,
    /// TESTS ONLY — the router exits at this point of a transaction's commit
    /// (`failpoint.rs`). Not settable from a config file.
    #[serde(skip)]
    pub unsafe_failpoint: Option<Failpoint>,
    /// NEGATIVE CONTROL ONLY — breaks real-time order on purpose: the router takes this many
    /// timestamps from the oracle at a time and hands them out from its own range (a
    /// per-router pre-allocated range), so a client of another router that starts later can
    /// get a smaller timestamp. 0: off. Not settable from a config file.
    #[serde(skip)]
    pub unsafe_tso_prefetch: u32,
    /// NEGATIVE CONTROL ONLY — breaks exactly-once writes on purpose: every attempt of a
    /// shard write gets a request id of its own instead of the request's, so a retry after
    /// an attempt that applied without an answer applies a second time (the retry TiDB's
    /// Jepsen analysis found losing updates). Write attempts then keep the fixed
    /// `rpc_timeout_ms` (no adaptation), as such a router's did. Not settable from a config
    /// file.
    #[serde(skip)]
    pub unsafe_fresh_request_id_per_attempt: bool,
    /// Mutual TLS: the cluster CA, this router's certificate (role `router`) and its key.
    /// The router serves TLS only, checks clients' certificates against this CA (any role),
    /// and dials nodes with its own certificate. Required unless `insecure`.
    pub tls: Option<TlsPaths>,
    /// With `tls`: refuse TLS clients without a certificate of the CA at the handshake. By
    /// default such a client may connect, and every call but a login must carry a valid
    /// token (`Auth.Login` with a password): etcd's password users over server-authenticated
    /// TLS. A certificate that is sent must be of the CA either way.
    pub require_client_cert: bool,
    /// Serve and dial without TLS: anyone who can reach the port reads and writes every
    /// key. For tests and local experiments; refused together with `tls`.
    pub insecure: bool,
    /// The cluster's gossip key file (`gossip.key`, written by `kvctl cert create-ca`): every
    /// gossip datagram is authenticated with it (`ringkv_gossip::auth`). Required with `tls`;
    /// without it (insecure clusters) anyone who can send UDP to the router's gossip port can
    /// feed it forged leader claims.
    pub gossip_key: Option<PathBuf>,
    /// `ip:port` of the Prometheus endpoint (`GET /metrics`, plain HTTP; port 0 picks a
    /// free port, reported by the router's `Admin.NodeStatus`). None (the default): no
    /// endpoint. It shows counters, no keys or values.
    pub metrics_addr: Option<SocketAddr>,
}

/// The files of the router's TLS identity (`--ca`, `--cert`, `--key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    /// The cluster CA's certificate (PEM).
    pub ca: PathBuf,
    /// This router's certificate (PEM), signed by the CA, role `router`.
    pub cert: PathBuf,
    /// This router's private key (PEM).
    pub key: PathBuf,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
            seed_nodes: Vec::new(),
            // A fallback only (gossip and requests trigger refreshes): each poll costs every
            // node a status of all its replicas, which dominated an idle node's CPU.
            refresh_interval_ms: 2_000,
            gossip_interval_ms: 500,
            default_request_timeout_ms: 5_000,
            max_request_timeout_ms: 60_000,
            rpc_timeout_ms: 2_000,
            connect_timeout_ms: 1_000,
            max_key_bytes: 4096,
            max_value_bytes: MIB,
            max_batch_keys: 1000,
            max_request_bytes: 8 * MIB,
            max_response_bytes: 64 * MIB,
            max_fanout: 32,
            max_inflight_requests: 4096,
            // 64 streams of 2 MiB of pages and about 1 MiB of messages and encoding: ≈ 200 MiB.
            max_open_streams: 64,
            stream_idle_timeout_ms: 30_000,
            stream_total_timeout_ms: 600_000,
            retry_initial_backoff_ms: 10,
            retry_max_backoff_ms: 200,
            shutdown_timeout_ms: 10_000,
            scan_buffer_bytes: 16 * MIB as u64,
            stream_buffer_bytes: 2 * MIB as u64,
            txn_gc_interval_ms: 300_000,
            txn_gc_age_ms: 600_000,
            unsafe_skip_write_conflict: false,
            unsafe_skip_read_validation: false,
            unsafe_tso_prefetch: 0,
            unsafe_resolve_without_primary: false,
            unsafe_fresh_request_id_per_attempt: false,
            tls: None,
            require_client_cert: false,
            insecure: false,
            gossip_key: None,
            metrics_addr: None,
            unsafe_failpoint: None,
        }
    }
}

impl RouterConfig {
    /// A config for tests: port 0 on loopback, the given seeds, short intervals and timeouts.
    pub fn for_test(seed_nodes: Vec<String>) -> Self {
        RouterConfig {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed_nodes,
            refresh_interval_ms: 50,
            default_request_timeout_ms: 3_000,
            max_request_timeout_ms: 10_000,
            rpc_timeout_ms: 500,
            connect_timeout_ms: 200,
            retry_initial_backoff_ms: 2,
            retry_max_backoff_ms: 50,
            shutdown_timeout_ms: 2_000,
            insecure: true,
            ..RouterConfig::default()
        }
    }

    /// Parses a TOML document; absent fields keep their defaults. Does not validate.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: origin.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// Reads and parses a TOML file; absent fields keep their defaults. Does not validate.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Checks every field against its documented range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.seed_nodes.is_empty() {
            return Err(invalid(
                "seed_nodes",
                "must name at least one node address (host:port)",
            ));
        }
        for addr in &self.seed_nodes {
            check_node_addr(addr)?;
        }
        for (field, value_ms) in [
            ("refresh_interval_ms", self.refresh_interval_ms),
            ("gossip_interval_ms", self.gossip_interval_ms),
            ("default_request_timeout_ms", self.default_request_timeout_ms),
            ("max_request_timeout_ms", self.max_request_timeout_ms),
            ("rpc_timeout_ms", self.rpc_timeout_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("retry_initial_backoff_ms", self.retry_initial_backoff_ms),
            ("retry_max_backoff_ms", self.retry_max_backoff_ms),
            ("shutdown_timeout_ms", self.shutdown_timeout_ms),
            ("txn_gc_age_ms", self.txn_gc_age_ms),
            ("stream_idle_timeout_ms", self.stream_idle_timeout_ms),
            ("stream_total_timeout_ms", self.stream_total_timeout_ms),
        ] {
            if value_ms == 0 || value_ms > MAX_DURATION_MS {
                return Err(invalid(
                    field,
                    format!("must be between 1 and {MAX_DURATION_MS}, got {value_ms}"),
                ));
            }
        }
        if self.txn_gc_interval_ms > MAX_DURATION_MS {
            return Err(invalid(
                "txn_gc_interval_ms",
                format!(
                    "must be at most {MAX_DURATION_MS} (0: never), got {}",
                    self.txn_gc_interval_ms
                ),
            ));
        }
        for (field, bytes) in [
            ("scan_buffer_bytes", self.scan_buffer_bytes),
            ("stream_buffer_bytes", self.stream_buffer_bytes),
        ] {
            if !(64 * 1024..=1 << 30).contains(&bytes) {
                return Err(invalid(
                    field,
                    format!("must be between 64 KiB and 1 GiB, got {bytes}"),
                ));
            }
        }
        if self.stream_idle_timeout_ms > self.stream_total_timeout_ms {
            return Err(invalid(
                "stream_idle_timeout_ms",
                format!(
                    "({}) must not exceed stream_total_timeout_ms ({})",
                    self.stream_idle_timeout_ms, self.stream_total_timeout_ms
                ),
            ));
        }
        if self.default_request_timeout_ms > self.max_request_timeout_ms {
            return Err(invalid(
                "default_request_timeout_ms",
                format!(
                    "({}) must not exceed max_request_timeout_ms ({})",
                    self.default_request_timeout_ms, self.max_request_timeout_ms
                ),
            ));
        }
        if self.retry_initial_backoff_ms > self.retry_max_backoff_ms {
            return Err(invalid(
                "retry_initial_backoff_ms",
                format!(
                    "({}) must not exceed retry_max_backoff_ms ({})",
                    self.retry_initial_backoff_ms, self.retry_max_backoff_ms
                ),
            ));
        }
        if self.max_key_bytes == 0 || self.max_key_bytes > MAX_KEY_BYTES_CEILING {
            return Err(invalid(
                "max_key_bytes",
                format!(
                    "must be between 1 and {MAX_KEY_BYTES_CEILING}, got {}",
                    self.max_key_bytes
                ),
            ));
        }
        if self.max_value_bytes == 0 {
            return Err(invalid("max_value_bytes", "must be at least 1"));
        }
        if self.max_batch_keys == 0 {
            return Err(invalid("max_batch_keys", "must be at least 1"));
        }
        let smallest_request = self.max_key_bytes + self.max_value_bytes + REQUEST_OVERHEAD_BYTES;
        if self.max_request_bytes < smallest_request {
            return Err(invalid(
                "max_request_bytes",
                format!(
                    "({}) must leave room for one maximal key and value: at least {smallest_request}",
                    self.max_request_bytes
                ),
            ));
        }
        if self.max_response_bytes < smallest_request {
            return Err(invalid(
                "max_response_bytes",
                format!(
                    "({}) must leave room for one maximal key and value: at least {smallest_request}",
                    self.max_response_bytes
                ),
            ));
        }
        if self.max_fanout == 0 || self.max_fanout > MAX_FANOUT_CEILING {
            return Err(invalid(
                "max_fanout",
                format!(
                    "must be between 1 and {MAX_FANOUT_CEILING}, got {}",
                    self.max_fanout
                ),
            ));
        }
        if self.max_inflight_requests == 0 {
            return Err(invalid("max_inflight_requests", "must be at least 1"));
        }
        if self.max_open_streams == 0 {
            return Err(invalid("max_open_streams", "must be at least 1"));
        }
        match (&self.tls, self.insecure) {
            (None, false) => {
                return Err(invalid(
                    "tls",
                    "no TLS configured: give --ca, --cert and --key (see `kvctl cert`), or \
                     --insecure to serve every key to anyone who can reach the router",
                ))
            }
            (Some(_), true) => {
                return Err(invalid(
                    "tls",
                    "--insecure and --ca/--cert/--key exclude each other",
                ))
            }
            _ => {}
        }
        if self.tls.is_some() && self.gossip_key.is_none() {
            return Err(invalid(
                "gossip_key",
                "TLS without --gossip-key: give the cluster's gossip key (gossip.key beside the \
                 CA, see `kvctl cert create-ca`), or anyone who can send UDP to the router could \
                 forge gossip",
            ));
        }
        Ok(())
    }

    /// [`Self::gossip_interval_ms`] as a duration.
    pub fn gossip_interval(&self) -> Duration {
        Duration::from_millis(self.gossip_interval_ms)
    }

    /// [`Self::refresh_interval_ms`] as a duration.
    pub fn refresh_interval(&self) -> Duration {
        Duration::from_millis(self.refresh_interval_ms)
    }

    /// [`Self::txn_gc_age_ms`] as a duration.
    pub fn txn_gc_age(&self) -> Duration {
        Duration::from_millis(self.txn_gc_age_ms)
    }

    /// [`Self::default_request_timeout_ms`] as a duration.
    pub fn default_request_timeout(&self) -> Duration {
        Duration::from_millis(self.default_request_timeout_ms)
    }

    /// [`Self::max_request_timeout_ms`] as a duration.
    pub fn max_request_timeout(&self) -> Duration {
        Duration::from_millis(self.max_request_timeout_ms)
    }

    /// [`Self::rpc_timeout_ms`] as a duration.
    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.rpc_timeout_ms)
    }

    /// [`Self::connect_timeout_ms`] as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// [`Self::stream_idle_timeout_ms`] as a duration.
    pub fn stream_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.stream_idle_timeout_ms)
    }

    /// [`Self::stream_total_timeout_ms`] as a duration.
    pub fn stream_total_timeout(&self) -> Duration {
        Duration::from_millis(self.stream_total_timeout_ms)
    }

    /// [`Self::shutdown_timeout_ms`] as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}

/// A node address must look like `host:port` (optionally with an `http://` scheme).
fn check_node_addr(addr: &str) -> Result<(), ConfigError> {
    let without_scheme = addr.strip_prefix("http://").unwrap_or(addr);
    let Some((host, port)) = without_scheme.rsplit_once(':') else {
        return Err(invalid("seed_nodes", format!("entry {addr:?} is not host:port")));
    };
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(invalid(
            "seed_nodes",
            format!("entry {addr:?} has an empty or malformed host"),
        ));
    }
    if !matches!(port.parse::<u16>(), Ok(port) if port != 0) {
        return Err(invalid(
            "seed_nodes",
            format!("entry {addr:?} has an invalid port"),
        ));
    }
    Ok(())
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_seed() -> RouterConfig {
        RouterConfig {
            seed_nodes: vec!["127.0.0.1:7100".to_string()],
            insecure: true,
            ..RouterConfig::default()
        }
    }

    /// The defaults documented in the brief, plus one seed, pass validation.
    #[test]
    fn defaults_with_a_seed_are_valid() {
        let config = with_seed();
        assert_eq!(config.validate().ok(), Some(()));
        // 500 ms until idle cost was measured: polling every node's full status twice a
        // second cost each node of 1024 shards ≈ 0.4 % of a core (ARCHITECTURE.md).
        assert_eq!(config.refresh_interval_ms, 2000);
        assert_eq!(config.default_request_timeout_ms, 5000);
        assert_eq!(config.rpc_timeout_ms, 2000);
        assert_eq!(config.max_key_bytes, 4096);
        assert_eq!(config.max_value_bytes, 1 << 20);
        assert_eq!(config.max_batch_keys, 1000);
        assert_eq!(config.max_request_bytes, 8 << 20);
        assert_eq!(config.max_fanout, 32);
        assert_eq!(config.max_inflight_requests, 4096);
        assert_eq!(config.max_open_streams, 64);
        assert_eq!(config.stream_idle_timeout_ms, 30_000);
        assert_eq!(config.stream_total_timeout_ms, 600_000);
        assert_eq!(config.stream_buffer_bytes, 2 << 20);
        assert_eq!(config.retry_initial_backoff_ms, 10);
        assert_eq!(config.retry_max_backoff_ms, 200);
    }

    /// With TLS a router starts only with a gossip key, and says which flag is missing.
    #[test]
    fn tls_requires_a_gossip_key() {
        let without_gossip_key = RouterConfig {
            tls: Some(TlsPaths {
                ca: "ca.crt".into(),
                cert: "router.crt".into(),
                key: "router.key".into(),
            }),
            insecure: false,
            ..with_seed()
        };
        let err = without_gossip_key
            .validate()
            .expect_err("TLS without a gossip key");
        assert!(err.to_string().contains("--gossip-key"), "{err}");
        let secure = RouterConfig {
            gossip_key: Some("gossip.key".into()),
            ..without_gossip_key
        };
        assert!(secure.validate().is_ok());
    }

    /// `for_test` is valid once given a seed.
    #[test]
    fn for_test_is_valid() {
        let config = RouterConfig::for_test(vec!["localhost:7100".into()]);
        assert!(config.validate().is_ok());
        assert_eq!(config.listen_addr.port(), 0);
    }

    /// Validation names the offending field.
    #[test]
    fn validation_names_the_field() {
        let cases: Vec<(RouterConfig, &str)> = vec![
            (RouterConfig::default(), "seed_nodes"),
            (
                RouterConfig {
                    seed_nodes: vec!["no-port".into()],
                    ..with_seed()
                },
                "seed_nodes",
            ),
            (
                RouterConfig {
                    rpc_timeout_ms: 0,
                    ..with_seed()
                },
                "rpc_timeout_ms",
            ),
            (
                RouterConfig {
                    default_request_timeout_ms: 70_000,
                    ..with_seed()
                },
                "default_request_timeout_ms",
            ),
            (
                RouterConfig {
                    retry_initial_backoff_ms: 500,
                    ..with_seed()
                },
                "retry_initial_backoff_ms",
            ),
            (
                RouterConfig {
                    max_fanout: 0,
                    ..with_seed()
                },
                "max_fanout",
            ),
            (
                RouterConfig {
                    max_request_bytes: 1024,
                    ..with_seed()
                },
                "max_request_bytes",
            ),
            (
                RouterConfig {
                    max_key_bytes: 0,
                    ..with_seed()
                },
                "max_key_bytes",
            ),
            (
                RouterConfig {
                    max_open_streams: 0,
                    ..with_seed()
                },
                "max_open_streams",
            ),
            (
                RouterConfig {
                    stream_idle_timeout_ms: 0,
                    ..with_seed()
                },
                "stream_idle_timeout_ms",
            ),
            (
                RouterConfig {
                    stream_idle_timeout_ms: 60_000,
                    stream_total_timeout_ms: 30_000,
                    ..with_seed()
                },
                "stream_idle_timeout_ms",
            ),
            (
                RouterConfig {
                    stream_buffer_bytes: 1024,
                    ..with_seed()
                },
                "stream_buffer_bytes",
            ),
        ];
        for (config, field) in cases {
            match config.validate() {
                Err(ConfigError::Invalid { field: got, .. }) => assert_eq!(got, field),
                other => panic!("expected {field} to be rejected, got {other:?}"),
            }
        }
    }

    /// A TOML file overrides only the fields it names; unknown fields are rejected.
    #[test]
    fn toml_overrides_and_rejects_unknown_fields() {
        let path = Path::new("router.toml");
        let parsed = RouterConfig::from_toml_str("seed_nodes = [\"10.0.0.1:7100\"]\nmax_fanout = 8\n", path);
        let config = match parsed {
            Ok(config) => config,
            Err(err) => panic!("parse failed: {err}"),
        };
        assert_eq!(config.max_fanout, 8);
        assert_eq!(config.rpc_timeout_ms, 2000);
        assert_eq!(config.seed_nodes, vec!["10.0.0.1:7100".to_string()]);

        let unknown = RouterConfig::from_toml_str("max_fanotu = 8\n", path);
        assert!(matches!(unknown, Err(ConfigError::Parse { .. })));
    }
}
