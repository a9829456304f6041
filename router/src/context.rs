//! What every request handler shares: limits, deadlines, backpressure, the topology and the
//! forwarder. Built once per router from its config.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;

use crate::backoff::BackoffConfig;
use crate::config::RouterConfig;
use crate::deadline::TimeoutPolicy;
use crate::error::RouterError;
use crate::failpoint::Failpoint;
use crate::forward::{ForwardSettings, Forwarder};
use crate::inflight::InflightLimiter;
use crate::node_api::NodeApi;
use crate::secondaries::SecondaryCommits;
use crate::streams::{StreamSettings, StreamSlot, StreamSlots};
use crate::topology::TopologyHandle;
use crate::validate::Limits;

/// State shared by the `Kv` and `Admin` services of one router.
pub struct RouterContext<N> {
    pub nodes: Arc<N>,
    pub topology: TopologyHandle,
    pub forwarder: Forwarder<N>,
    pub limits: Limits,
    pub timeouts: TimeoutPolicy,
    pub inflight: InflightLimiter,
    /// Timeout of one call to one node.
    pub rpc_timeout: Duration,
    /// Most concurrent sub-requests of one client request.
    pub max_fanout: usize,
    /// Largest response message to a client.
    pub max_response_bytes: usize,
    /// Bytes of shard pages one scan page buffers.
    pub scan_buffer_bytes: u64,
    /// Bytes of shard pages one streamed scan buffers ahead of its reader.
    pub stream_buffer_bytes: u64,
    /// Server streams: their slots (apart from `inflight`), deadlines and tasks.
    pub streams: StreamSlots,
    /// Node liveness as the router's gossip sees it.
    pub gossip: Arc<crate::gossip::GossipView>,
    /// NEGATIVE CONTROL ONLY: transactions skip the write-conflict check.
    pub unsafe_skip_write_conflict: bool,
    /// NEGATIVE CONTROL ONLY: serializable commits skip read validation.
    pub unsafe_skip_read_validation: bool,
    /// TESTS ONLY: where a commit exits the process (`failpoint.rs`).
    pub failpoint: Option<Failpoint>,
    /// Transactions' secondary commits running after their answers.
    pub secondaries: SecondaryCommits,
    /// The permission table and the callers' users (`auth.rs`).
    pub auth: crate::auth::AuthView,
}

/// An admitted request: its in-flight permit (released on drop) and its deadline.
pub struct Admission {
    pub _permit: OwnedSemaphorePermit,
    pub deadline: Instant,
}

/// An admitted stream: its stream slot and the deadline of its opening (and of each round
/// of shard calls).
pub struct StreamAdmission {
    pub slot: StreamSlot,
    pub deadline: Instant,
}

impl<N: NodeApi> RouterContext<N> {
    pub fn new(config: &RouterConfig, nodes: Arc<N>, topology: TopologyHandle) -> Self {
        let settings = ForwardSettings {
            rpc_timeout: config.rpc_timeout(),
            backoff: BackoffConfig {
                initial: Duration::from_millis(config.retry_initial_backoff_ms),
                max: Duration::from_millis(config.retry_max_backoff_ms),
            },
            unsafe_resolve_without_primary: config.unsafe_resolve_without_primary,
            unsafe_fresh_request_id_per_attempt: config.unsafe_fresh_request_id_per_attempt,
        };
        RouterContext {
            forwarder: Forwarder::new(Arc::clone(&nodes), topology.clone(), settings),
            nodes,
            topology,
            limits: Limits::from_config(config),
            timeouts: TimeoutPolicy {
                default_timeout: config.default_request_timeout(),
                max_timeout: config.max_request_timeout(),
            },
            inflight: InflightLimiter::new(config.max_inflight_requests),
            rpc_timeout: config.rpc_timeout(),
            max_fanout: config.max_fanout.max(1),
            max_response_bytes: config.max_response_bytes,
            scan_buffer_bytes: config.scan_buffer_bytes,
            stream_buffer_bytes: config.stream_buffer_bytes,
            streams: StreamSlots::new(StreamSettings {
                max_open_streams: config.max_open_streams,
                idle_timeout: config.stream_idle_timeout(),
                total_timeout: config.stream_total_timeout(),
            }),
            gossip: Arc::default(),
            unsafe_skip_write_conflict: config.unsafe_skip_write_conflict,
            unsafe_skip_read_validation: config.unsafe_skip_read_validation,
            failpoint: config.unsafe_failpoint,
            secondaries: SecondaryCommits::default(),
            auth: crate::auth::AuthView::default(),
        }
    }

    /// The byte budget of the entries of one reply to a client: the protocol's
    /// ([`ringkv_proto::budget::REPLY_BUDGET_BYTES`], so a reply fits in gRPC's default 4 MiB
    /// receive limit), or half of `max_response_bytes` when that is smaller.
    pub fn reply_budget_bytes(&self) -> usize {
        ringkv_proto::budget::REPLY_BUDGET_BYTES.min(self.max_response_bytes / 2)
    }

    /// Takes an in-flight permit and computes the request deadline.
    pub fn admit(&self, metadata: &MetadataMap) -> Result<Admission, RouterError> {
        let permit = self.inflight.try_acquire()?;
        Ok(Admission {
            _permit: permit,
            deadline: self.timeouts.deadline(metadata),
        })
    }

    /// [`RouterContext::admit`] for a pipeline frame: the client waits `timeout` (None: not
    /// said), as a unary call's `grpc-timeout` would say.
    pub fn admit_within(&self, timeout: Option<Duration>) -> Result<Admission, RouterError> {
        let permit = self.inflight.try_acquire()?;
        Ok(Admission {
            _permit: permit,
            deadline: Instant::now() + self.timeouts.budget_for(timeout),
        })
    }

    /// Takes a stream slot (never an in-flight permit: streams that wait for slow readers
    /// must not starve unary requests) and computes the opening's deadline.
    pub fn admit_stream(&self, metadata: &MetadataMap) -> Result<StreamAdmission, RouterError> {
        let slot = self.streams.try_open()?;
        Ok(StreamAdmission {
            slot,
            deadline: self.timeouts.deadline(metadata),
        })
    }
}
