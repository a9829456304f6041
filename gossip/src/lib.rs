//! Cluster membership and liveness gossip for ringkv: a thin, bounded wrapper around
//! [`chitchat`] (Scuttlebutt reconciliation over UDP plus a phi-style failure detector).
//!
//! Each process (node or router) starts one [`Gossip`] member with a unique
//! [`GossipConfig::member_id`], publishes a few small key/values about itself
//! ([`Gossip::set`]), and reads everybody's view with [`Gossip::members`]. Changes are
//! signalled through a counter on a [`tokio::sync::watch`] channel ([`Gossip::watch`]).
//!
//! # Liveness
//!
//! [`Liveness`] of a member, as seen by the local member, is derived from chitchat's failure
//! detector plus a small heartbeat tracker of our own (see [`Liveness`] for the exact rules):
//!
//! - [`Liveness::Alive`]: chitchat's live set, and a heartbeat change was seen within the last
//!   [`SUSPECT_AFTER_INTERVALS`] × `interval`. The local member is always alive.
//! - [`Liveness::Suspect`]: chitchat still counts it live but no heartbeat change was seen for
//!   longer than that; or the member is new and chitchat has not collected enough heartbeats to
//!   judge it yet.
//! - [`Liveness::Dead`]: chitchat's dead set. Dead members are remembered for
//!   [`GossipConfig::dead_grace`] and then forgotten (they disappear from [`Gossip::members`]).
//!
//! # Heartbeats and `last_heard`
//!
//! Every chitchat member increments its own heartbeat counter on each gossip round and on every
//! gossip message it handles; the counters travel in the digests exchanged each round (also
//! indirectly, through third members). A background task of ours samples every member's
//! heartbeat once per `interval` (and on every [`Gossip::members`] / [`Gossip::set`] call) and
//! records the [`Instant`] at which it last saw the value change. [`MemberView::last_heard`] is
//! the time since that instant: the heartbeat really changed between `last_heard` and
//! `last_heard` + one interval ago.
//!
//! # Boundedness
//!
//! The wrapper spawns exactly one task (the sampler), which owns no queue: change notification
//! is a `watch` channel holding one `u64`. Per-member bookkeeping is dropped as soon as chitchat
//! forgets the member. Chitchat itself sends UDP datagrams of at most 64 KiB; a member's state
//! that does not fit is replicated over several rounds, so keep values small.
//!
//! # Authentication
//!
//! With [`GossipConfig::auth`] set, every datagram carries an HMAC-SHA256 tag under the
//! cluster's gossip key, and datagrams without a valid one are dropped before chitchat decodes
//! them and counted ([`Gossip::rejected_datagrams`]); see [`auth`]. Without it gossip is open to
//! anyone who can send UDP to the port (insecure clusters only).
//!
//! # Modules
//!
//! - [`announcement`]: what nodes and routers publish about themselves — the gossip keys
//!   and their value syntax, written and read through one type ([`Announcement`]).
//! - [`key`]: the cluster's gossip key ([`GossipKeys`]) and its file (`gossip.key`).
//! - [`key_source`]: the keys a transport uses now, following the file when it changes.
//! - [`auth`]: the authenticated UDP transport ([`AuthenticatedUdpTransport`]) and its frame.

pub mod announcement;
pub mod auth;
pub mod key;
pub mod key_source;

pub use announcement::{Announcement, AnnouncementError, LeaderClaim, Load, NodeAnnouncement};
pub use auth::{AuthStats, AuthenticatedUdpTransport};
pub use key::{GossipKey, GossipKeyError, GossipKeys, GOSSIP_KEY_FILE_NAME};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chitchat::transport::{Transport, UdpTransport};
use chitchat::{
    spawn_chitchat, Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig,
    ProtocolVersion,
};
use tokio::sync::{oneshot, watch, Mutex as AsyncMutex};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{debug, warn};

/// Default gossip interval ([`GossipConfig::interval`]).
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);

/// Default phi threshold of the failure detector ([`GossipConfig::phi_threshold`]).
pub const DEFAULT_PHI_THRESHOLD: f64 = 8.0;

/// Default time a dead member is remembered before being forgotten
/// ([`GossipConfig::dead_grace`]).
pub const DEFAULT_DEAD_GRACE: Duration = Duration::from_secs(60 * 60);

/// A member that chitchat still counts as live is reported [`Liveness::Suspect`] once no
/// change of its heartbeat has been seen for more than this many gossip intervals
/// (2 × 3: three missed rounds, doubled for sampling and propagation delay).
pub const SUSPECT_AFTER_INTERVALS: u32 = 6;

/// How many free ports are tried when [`GossipConfig::listen`] has port 0 (another process may
/// take the port between our probe and chitchat's bind).
const PORT_ZERO_ATTEMPTS: usize = 8;

/// Heartbeat intervals longer than this are ignored by chitchat's failure detector (its own
/// default); raised to a few gossip intervals if the gossip interval is very long.
const MIN_FAILURE_DETECTOR_MAX_INTERVAL: Duration = Duration::from_secs(10);

/// Retention of key tombstones inside chitchat. This crate never deletes keys, so the value
/// only matters for the rare internal tombstone.
const KEY_TOMBSTONE_GRACE: Duration = Duration::from_secs(60 * 60);

/// Configuration of one gossip member.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    /// Chitchat cluster id. Gossip messages from members of another cluster are rejected, so
    /// members of different clusters never see each other even if seeded with each other.
    pub cluster_name: String,
    /// Unique name of this member within the cluster, e.g. `node-3` or `router-<random>`.
    ///
    /// A restarted member may reuse its name: each start gets a new chitchat generation (the
    /// start time in milliseconds) and [`Gossip::members`] only shows the newest generation.
    pub member_id: String,
    /// UDP address to bind. Port 0 picks a free port; the address actually bound is reported
    /// by [`Gossip::local_addr`].
    pub listen: SocketAddr,
    /// Address other members use to reach this one. `None` means the bound address, which is
    /// then required to have a specified IP (not `0.0.0.0` / `::`). A port of 0 here means
    /// "the bound port".
    pub advertise: Option<SocketAddr>,
    /// `host:port` of other members' gossip endpoints. IP literals are used as they are; host
    /// names are resolved at start and re-resolved by chitchat every 60 s.
    pub seeds: Vec<String>,
    /// Gossip interval (default [`DEFAULT_INTERVAL`]). Must not be zero.
    pub interval: Duration,
    /// Failure detector threshold (default [`DEFAULT_PHI_THRESHOLD`]). Chitchat's "phi" is the
    /// time since the member's last heartbeat divided by the (smoothed) mean time between its
    /// heartbeats, so a member is declared dead after roughly `phi_threshold` mean heartbeat
    /// intervals of silence. Must be finite and positive.
    pub phi_threshold: f64,
    /// How long a dead member is remembered (and reported [`Liveness::Dead`]) before being
    /// forgotten (default [`DEFAULT_DEAD_GRACE`]).
    pub dead_grace: Duration,
    /// Key/values published at start, as if by [`Gossip::set_many`].
    pub initial_state: Vec<(String, String)>,
    /// The cluster's gossip keys: every datagram is authenticated with them (see [`auth`]).
    /// `None`: unauthenticated gossip, which anyone reaching the port can join or forge.
    pub auth: Option<GossipKeys>,
    /// The file `auth` was read from: followed, its keys used within about a second of a
    /// change (`key_source`), so a key rotation needs no restart. `None`: `auth` is fixed.
    pub auth_file: Option<std::path::PathBuf>,
}

impl GossipConfig {
    /// A configuration with the defaults: no advertise address override, no seeds,
    /// [`DEFAULT_INTERVAL`], [`DEFAULT_PHI_THRESHOLD`], [`DEFAULT_DEAD_GRACE`], no initial
    /// state and no authentication.
    pub fn new(
        cluster_name: impl Into<String>,
        member_id: impl Into<String>,
        listen: SocketAddr,
    ) -> GossipConfig {
        GossipConfig {
            cluster_name: cluster_name.into(),
            member_id: member_id.into(),
            listen,
            advertise: None,
            seeds: Vec::new(),
            interval: DEFAULT_INTERVAL,
            phi_threshold: DEFAULT_PHI_THRESHOLD,
            dead_grace: DEFAULT_DEAD_GRACE,
            initial_state: Vec::new(),
            auth: None,
            auth_file: None,
        }
    }

    fn validate(&self) -> Result<(), GossipError> {
        let invalid = |msg: String| Err(GossipError::InvalidConfig(msg));
        if self.cluster_name.is_empty() {
            return invalid("cluster_name is empty".into());
        }
        if self.member_id.is_empty() {
            return invalid("member_id is empty".into());
        }
        if self.interval.is_zero() {
            return invalid("interval must be positive".into());
        }
        if !(self.phi_threshold.is_finite() && self.phi_threshold > 0.0) {
            return invalid(format!(
                "phi_threshold must be finite and positive, got {}",
                self.phi_threshold
            ));
        }
        match self.advertise {
            Some(advertise) if advertise.ip().is_unspecified() => {
                return invalid(format!("advertise address {advertise} has an unspecified IP"));
            }
            None if self.listen.ip().is_unspecified() => {
                return invalid(format!(
                    "listen address {} has an unspecified IP: set an advertise address",
                    self.listen
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// The failure detector settings derived from this configuration.
    fn failure_detector(&self) -> FailureDetectorConfig {
        let defaults = FailureDetectorConfig::default();
        FailureDetectorConfig {
            phi_threshold: self.phi_threshold,
            sampling_window_size: defaults.sampling_window_size,
            max_interval: MIN_FAILURE_DETECTOR_MAX_INTERVAL.max(self.interval.saturating_mul(4)),
            // The prior mean heartbeat interval. Chitchat's default (5 s) would make early
            // failure detection take `phi_threshold` × 5 s regardless of `interval`.
            initial_interval: self.interval,
            dead_node_grace_period: self.dead_grace,
        }
    }
}

/// Errors of [`Gossip::start`].
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// The configuration is unusable (see the field docs of [`GossipConfig`]).
    #[error("invalid gossip config: {0}")]
    InvalidConfig(String),
    /// No UDP socket could be bound to find a free port.
    #[error("cannot bind gossip socket {addr}/UDP: {source}")]
    Bind {
        /// The address that was requested.
        addr: SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// Chitchat failed to start (usually: its UDP bind failed).
    #[error("cannot start gossip on {addr}/UDP: {reason}")]
    Start {
        /// The address chitchat tried to bind (last attempt).
        addr: SocketAddr,
        /// Chitchat's error, rendered.
        reason: String,
    },
}

/// Liveness of a member as seen by the local member.
///
/// With `I` = [`GossipConfig::interval`], `S` = [`SUSPECT_AFTER_INTERVALS`] × `I`, and
/// "silent for" = time since we last saw the member's heartbeat change (or, if we never saw it
/// change, since we first learned of the member):
///
/// | chitchat says | silent for | ever live in our view | liveness  |
/// |---------------|------------|-----------------------|-----------|
/// | (local member)| any        | any                   | `Alive`   |
/// | live          | ≤ S        | any                   | `Alive`   |
/// | live          | > S        | any                   | `Suspect` |
/// | dead          | ≤ S        | no (joining)          | `Suspect` |
/// | dead          | any        | yes                   | `Dead`    |
/// | dead          | > S        | no                    | `Dead`    |
/// | neither       | any        | any                   | `Suspect` |
///
/// The "joining" row exists because chitchat files a member it has not yet seen two heartbeat
/// increments from under dead; "neither" only lasts until chitchat's next liveness update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Liveness {
    /// Heartbeating normally.
    Alive,
    /// Possibly failing, or not judged yet: do not rely on it, do not give up on it either.
    Suspect,
    /// Declared dead by the failure detector.
    Dead,
}

impl std::fmt::Display for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Liveness::Alive => "alive",
            Liveness::Suspect => "suspect",
            Liveness::Dead => "dead",
        })
    }
}

/// One member as seen by the local member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// The member's [`GossipConfig::member_id`].
    pub member_id: String,
    /// The member's advertised gossip address.
    pub gossip_addr: SocketAddr,
    /// See [`Liveness`].
    pub liveness: Liveness,
    /// Time since we last saw the member's heartbeat change (it may have changed up to one
    /// gossip interval earlier: heartbeats are sampled once per interval and on every
    /// [`Gossip::members`] call); `None` if we have not seen it change since we learned of the
    /// member, which is normal for about one interval after discovery. Always
    /// `Some(Duration::ZERO)` for the local member.
    pub last_heard: Option<Duration>,
    /// The member's published key/values, as far as they have reached us.
    pub state: BTreeMap<String, String>,
}

impl MemberView {
    /// What the member announces if it is a storage node: `None` for routers and for members
    /// whose state is not an announcement this version understands (logged at debug level;
    /// see [`Announcement::parse`]).
    pub fn node_announcement(&self) -> Option<NodeAnnouncement> {
        match Announcement::parse(&self.state) {
            Ok(Announcement::Node(announced)) => Some(announced),
            Ok(Announcement::Router) => None,
            Err(err) => {
                debug!(member_id = %self.member_id, %err, "ignoring a gossip member");
                None
            }
        }
    }
}

/// A running gossip member. Stop it with [`Gossip::shutdown`]; merely dropping it also stops
/// the background tasks, without waiting for them.
pub struct Gossip {
    shared: Arc<Shared>,
    auth_stats: Option<Arc<AuthStats>>,
    handle: ChitchatHandle,
    local_addr: SocketAddr,
    advertise_addr: SocketAddr,
    stop_tx: oneshot::Sender<()>,
    sampler: JoinHandle<()>,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip")
            .field("member", self.handle.chitchat_id())
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Gossip {
    /// Binds the UDP socket, starts chitchat and the heartbeat sampler, and publishes
    /// [`GossipConfig::initial_state`].
    ///
    /// Seeds are contacted from the first gossip round on; unreachable seeds are not an
    /// error (they are retried every round).
    pub async fn start(config: GossipConfig) -> Result<Gossip, GossipError> {
        config.validate()?;
        let generation_id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let auth_stats = config.auth.as_ref().map(|_| Arc::new(AuthStats::default()));
        let transport: Box<dyn Transport> = match (&config.auth, &auth_stats) {
            (Some(keys), Some(stats)) => {
                let source = match &config.auth_file {
                    Some(path) => key_source::KeySource::following(keys.clone(), path.clone()),
                    None => key_source::KeySource::fixed(keys.clone()),
                };
                Box::new(AuthenticatedUdpTransport::with_source(
                    Arc::new(source),
                    stats.clone(),
                ))
            }
            _ => Box::new(UdpTransport),
        };
        let pick_port = config.listen.port() == 0;
        let attempts = if pick_port { PORT_ZERO_ATTEMPTS } else { 1 };
        let mut last_failure = None;
        for attempt in 1..=attempts {
            // Chitchat binds the socket itself and does not report the bound address, so for
            // port 0 we find a free port first and hand chitchat that exact address.
            let bind_addr = if pick_port {
                probe_free_port(config.listen)?
            } else {
                config.listen
            };
            let advertise_addr = match config.advertise {
                Some(advertise) if advertise.port() == 0 => SocketAddr::new(advertise.ip(), bind_addr.port()),
                Some(advertise) => advertise,
                None => bind_addr,
            };
            let chitchat_id = ChitchatId::new(config.member_id.as_str(), generation_id, advertise_addr);
            let chitchat_config = ChitchatConfig {
                chitchat_id,
                cluster_id: config.cluster_name.clone(),
                gossip_interval: config.interval,
                listen_addr: bind_addr,
                seed_nodes: config.seeds.clone(),
                failure_detector_config: config.failure_detector(),
                marked_for_deletion_grace_period: KEY_TOMBSTONE_GRACE,
                catchup_callback: None,
                extra_liveness_predicate: None,
                // V0 is readable by every chitchat version; V1 only by newer ones.
                protocol_version: ProtocolVersion::V0,
            };
            match spawn_chitchat(chitchat_config, config.initial_state.clone(), transport.as_ref()).await {
                Ok(handle) => {
                    let mut gossip = Gossip::assemble(handle, bind_addr, advertise_addr, config.interval);
                    gossip.auth_stats = auth_stats;
                    return Ok(gossip);
                }
                Err(err) => {
                    let reason = format!("{err:#}");
                    debug!(%bind_addr, attempt, %reason, "chitchat failed to start");
                    last_failure = Some((bind_addr, reason));
                }
            }
        }
        let (addr, reason) = last_failure.unwrap_or_else(|| (config.listen, "no attempt made".into()));
        Err(GossipError::Start { addr, reason })
    }

    fn assemble(
        handle: ChitchatHandle,
        local_addr: SocketAddr,
        advertise_addr: SocketAddr,
        interval: Duration,
    ) -> Gossip {
        let chitchat = handle.chitchat();
        let (changes_tx, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            chitchat,
            self_id: handle.chitchat_id().clone(),
            tracker: StdMutex::new(Tracker::default()),
            changes_tx,
            suspect_after: interval.saturating_mul(SUSPECT_AFTER_INTERVALS),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let sampler = tokio::spawn(run_sampler(shared.clone(), interval, stop_rx));
        Gossip {
            shared,
            auth_stats: None,
            handle,
            local_addr,
            advertise_addr,
            stop_tx,
            sampler,
        }
    }

    /// The UDP address actually bound (with the real port if [`GossipConfig::listen`] had
    /// port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address advertised to other members.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.advertise_addr
    }

    /// Whether datagrams are authenticated ([`GossipConfig::auth`] was set).
    pub fn is_authenticated(&self) -> bool {
        self.auth_stats.is_some()
    }

    /// Datagrams dropped since start because they failed authentication (0 without
    /// [`GossipConfig::auth`]).
    pub fn rejected_datagrams(&self) -> u64 {
        self.auth_stats
            .as_ref()
            .map_or(0, |stats| stats.rejected_datagrams())
    }

    /// This member's [`GossipConfig::member_id`].
    pub fn member_id(&self) -> &str {
        &self.handle.chitchat_id().node_id
    }

    /// Publishes (or overwrites) one of this member's keys. Setting the current value again is
    /// a no-op.
    pub async fn set(&self, key: &str, value: &str) {
        self.set_many(vec![(key.to_string(), value.to_string())]).await;
    }

    /// Publishes (or overwrites) several of this member's keys at once: they reach other
    /// members in the same gossip exchange (unless the state exceeds one datagram).
    pub async fn set_many(&self, pairs: Vec<(String, String)>) {
        let mut chitchat = self.shared.chitchat.lock().await;
        let own = chitchat.self_node_state();
        for (key, value) in pairs {
            own.set(key, value);
        }
        self.shared.observe(&chitchat, Instant::now());
    }

    /// Every member known to the local member, including itself, sorted by member id. A member
    /// that restarted appears once, with its newest generation. Dead members are listed until
    /// [`GossipConfig::dead_grace`] has passed.
    pub async fn members(&self) -> Vec<MemberView> {
        let chitchat = self.shared.chitchat.lock().await;
        let observations = self.shared.observe(&chitchat, Instant::now());
        let mut newest: BTreeMap<&str, (u64, MemberView)> = BTreeMap::new();
        for obs in &observations {
            let Some(node_state) = chitchat.node_state(&obs.id) else {
                continue;
            };
            let member_id: &str = &obs.id.node_id;
            if let Some((generation, _)) = newest.get(member_id) {
                if *generation >= obs.id.generation_id {
                    continue;
                }
            }
            let view = MemberView {
                member_id: member_id.to_string(),
                gossip_addr: obs.id.gossip_advertise_addr,
                liveness: obs.liveness,
                last_heard: obs.last_heard,
                state: node_state
                    .key_values()
                    .map(|(key, value)| (key.to_string(), value.to_string()))
                    .collect(),
            };
            newest.insert(member_id, (obs.id.generation_id, view));
        }
        newest.into_values().map(|(_, view)| view).collect()
    }

    /// A receiver whose value is bumped whenever the set of members, a member's liveness or any
    /// member's key/values change (detected at most one gossip interval late, or at once for
    /// this member's own [`Gossip::set`]). The counter value itself carries no meaning; call
    /// [`Gossip::members`] after a change. A new receiver starts with the current value marked
    /// seen. After [`Gossip::shutdown`], `changed()` returns an error.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.shared.changes_tx.subscribe()
    }

    /// Stops the sampler task and chitchat (which releases the UDP socket) and waits for both.
    /// Other members will see this one turn [`Liveness::Dead`] after failure detection.
    ///
    /// If some seeds were host names, chitchat's DNS refresh task (not stoppable through its
    /// API) exits on its next tick, within 60 s.
    pub async fn shutdown(self) {
        let Gossip {
            shared,
            handle,
            stop_tx,
            sampler,
            ..
        } = self;
        // An error only means the sampler is already gone.
        let _ = stop_tx.send(());
        if let Err(err) = sampler.await {
            warn!(error = %err, "gossip sampler task failed");
        }
        if let Err(err) = handle.shutdown().await {
            warn!(error = %format!("{err:#}"), "chitchat did not shut down cleanly");
        }
        drop(shared);
    }
}

/// Binds `listen` (port 0) to learn a free port, then releases it for chitchat.
fn probe_free_port(listen: SocketAddr) -> Result<SocketAddr, GossipError> {
    let bind_err = |source| GossipError::Bind { addr: listen, source };
    let socket = StdUdpSocket::bind(listen).map_err(bind_err)?;
    socket.local_addr().map_err(bind_err)
}

/// The sampler: once per interval, and whenever chitchat's live set changes, observes every
/// member's heartbeat and bumps the change counter if membership, liveness or state changed.
/// Stops when `stop_rx` fires or its sender is dropped (the [`Gossip`] was dropped).
async fn run_sampler(shared: Arc<Shared>, interval: Duration, mut stop_rx: oneshot::Receiver<()>) {
    let mut live_rx = Some(shared.chitchat.lock().await.live_nodes_watcher());
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop_rx => break,
            _ = ticker.tick() => {}
            changed = async {
                match live_rx.as_mut() {
                    Some(rx) => rx.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                if changed.is_err() {
                    // Chitchat is gone; keep sampling on the ticker until stopped.
                    live_rx = None;
                }
            }
        }
        let chitchat = shared.chitchat.lock().await;
        shared.observe(&chitchat, Instant::now());
    }
}

/// State shared by the [`Gossip`] handle and the sampler task.
struct Shared {
    chitchat: Arc<AsyncMutex<Chitchat>>,
    self_id: ChitchatId,
    tracker: StdMutex<Tracker>,
    changes_tx: watch::Sender<u64>,
    suspect_after: Duration,
}

/// Our heartbeat bookkeeping; one entry per member chitchat currently knows.
#[derive(Default)]
struct Tracker {
    observed: HashMap<ChitchatId, Observed>,
    /// `(member, max_version, liveness)` of the previous observation, to detect changes.
    fingerprint: Vec<(ChitchatId, u64, Liveness)>,
}

struct Observed {
    heartbeat: u64,
    first_seen: Instant,
    last_change: Option<Instant>,
    ever_live: bool,
}

/// The result of observing one member.
struct Observation {
    id: ChitchatId,
    liveness: Liveness,
    last_heard: Option<Duration>,
}

impl Shared {
    fn tracker(&self) -> MutexGuard<'_, Tracker> {
        // The tracker holds no invariant a panic could break halfway.
        self.tracker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Samples every member's heartbeat, classifies its liveness (rules on [`Liveness`]),
    /// forgets members chitchat forgot, and bumps the change counter on any change.
    fn observe(&self, chitchat: &Chitchat, now: Instant) -> Vec<Observation> {
        let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
        let dead: HashSet<&ChitchatId> = chitchat.dead_nodes().collect();
        let mut tracker = self.tracker();
        let mut observations = Vec::with_capacity(chitchat.node_states().len());
        let mut fingerprint = Vec::with_capacity(chitchat.node_states().len());
        for (id, node_state) in chitchat.node_states() {
            let heartbeat = u64::from(node_state.heartbeat());
            let is_live = live.contains(id);
            let entry = tracker.observed.entry(id.clone()).or_insert_with(|| Observed {
                heartbeat,
                first_seen: now,
                last_change: None,
                ever_live: false,
            });
            if entry.heartbeat != heartbeat {
                entry.heartbeat = heartbeat;
                entry.last_change = Some(now);
            }
            entry.ever_live |= is_live;
            let silent_for = now.saturating_duration_since(entry.last_change.unwrap_or(entry.first_seen));
            let liveness = classify(Classification {
                is_self: *id == self.self_id,
                is_live,
                is_dead: dead.contains(id),
                ever_live: entry.ever_live,
                silent_for,
                suspect_after: self.suspect_after,
            });
            let last_heard = if *id == self.self_id {
                Some(Duration::ZERO)
            } else {
                entry.last_change.map(|at| now.saturating_duration_since(at))
            };
            fingerprint.push((id.clone(), node_state.max_version(), liveness));
            observations.push(Observation {
                id: id.clone(),
                liveness,
                last_heard,
            });
        }
        let known = chitchat.node_states();
        tracker.observed.retain(|id, _| known.contains_key(id));
        if tracker.fingerprint != fingerprint {
            tracker.fingerprint = fingerprint;
            self.changes_tx
                .send_modify(|counter| *counter = counter.wrapping_add(1));
        }
        observations
    }
}

/// The inputs of the liveness rules documented on [`Liveness`].
struct Classification {
    is_self: bool,
    /// In chitchat's live set.
    is_live: bool,
    /// In chitchat's dead set.
    is_dead: bool,
    /// Was ever in chitchat's live set while we tracked it.
    ever_live: bool,
    /// Time since we saw its heartbeat change (or first saw it, if never).
    silent_for: Duration,
    suspect_after: Duration,
}

/// The liveness rules documented on [`Liveness`].
fn classify(c: Classification) -> Liveness {
    if c.is_self {
        Liveness::Alive
    } else if c.is_live {
        if c.silent_for > c.suspect_after {
            Liveness::Suspect
        } else {
            Liveness::Alive
        }
    } else if c.is_dead {
        if !c.ever_live && c.silent_for <= c.suspect_after {
            Liveness::Suspect
        } else {
            Liveness::Dead
        }
    } else {
        Liveness::Suspect
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(3);

    fn c(is_live: bool, is_dead: bool, ever_live: bool, silent_for: Duration) -> Liveness {
        classify(Classification {
            is_self: false,
            is_live,
            is_dead,
            ever_live,
            silent_for,
            suspect_after: S,
        })
    }

    #[test]
    fn liveness_rules() {
        let short = Duration::from_secs(1);
        let long = Duration::from_secs(4);
        // The local member is always alive, whatever chitchat's sets say.
        let own = Classification {
            is_self: true,
            is_live: false,
            is_dead: true,
            ever_live: false,
            silent_for: long,
            suspect_after: S,
        };
        assert_eq!(classify(own), Liveness::Alive);
        // Live per chitchat: alive while heartbeating, suspect once silent for longer than S.
        assert_eq!(c(true, false, true, short), Liveness::Alive);
        assert_eq!(c(true, false, true, S), Liveness::Alive);
        assert_eq!(c(true, false, true, long), Liveness::Suspect);
        // Dead per chitchat: dead, unless it is a new member still heartbeating (joining).
        assert_eq!(c(false, true, true, short), Liveness::Dead);
        assert_eq!(c(false, true, true, long), Liveness::Dead);
        assert_eq!(c(false, true, false, short), Liveness::Suspect);
        assert_eq!(c(false, true, false, long), Liveness::Dead);
        // Not judged by chitchat yet.
        assert_eq!(c(false, false, false, short), Liveness::Suspect);
        assert_eq!(c(false, false, false, long), Liveness::Suspect);
    }

    #[test]
    fn failure_detector_follows_the_config() {
        let mut config = GossipConfig::new("c", "m", SocketAddr::from(([127, 0, 0, 1], 0)));
        config.interval = Duration::from_millis(100);
        config.phi_threshold = 3.0;
        config.dead_grace = Duration::from_secs(7);
        let fd = config.failure_detector();
        assert_eq!(fd.phi_threshold, 3.0);
        assert_eq!(fd.initial_interval, Duration::from_millis(100));
        assert_eq!(fd.dead_node_grace_period, Duration::from_secs(7));
        assert_eq!(fd.max_interval, MIN_FAILURE_DETECTOR_MAX_INTERVAL);
        config.interval = Duration::from_secs(5);
        assert_eq!(config.failure_detector().max_interval, Duration::from_secs(20));
    }
}
