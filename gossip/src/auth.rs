//! Authenticated gossip: a chitchat [`Transport`] over UDP whose every datagram carries an
//! HMAC-SHA256 tag under the cluster's gossip key ([`GossipKeys`]). Chitchat has no TLS, so
//! without it anyone who can send UDP to a gossip port could inject liveness or leader claims.
//!
//! # The frame
//!
//! ```text
//! | "rG" (2) | key id (4) | chitchat message (as chitchat serializes it) | tag (32) |
//! ```
//!
//! The tag is HMAC-SHA256 over everything before it, under the key the id names. A received
//! datagram is decoded only after its tag checked out under an accepted key (the current key or
//! the one also accepted); anything else (too short, another magic — an unauthenticated chitchat
//! datagram among them —, an unknown key id, a wrong tag) is dropped before chitchat sees it,
//! counted ([`AuthStats`]) and reported by a warning at most every [`REJECT_WARN_INTERVAL`].
//! The frame costs [`FRAME_OVERHEAD`] bytes per datagram; chitchat leaves room for them (patch
//! 2 in `vendor/README.md`). Sending reuses one buffer and receiving another, as chitchat's
//! own UDP transport does: no allocation per datagram beyond chitchat's decoding.
//!
//! # Replays
//!
//! A captured datagram can be sent again and will be accepted: there is no nonce or clock in
//! the frame. That is harmless because chitchat is idempotent: a node's state only moves
//! forward by version and heartbeat, so a replayed delta carries nothing newer than what the
//! receiver holds, and a replayed digest only makes the receiver answer (to the source
//! address, with a tag the attacker cannot forge anything from). Forging a new claim (a
//! higher heartbeat, a leader, a dead node) needs the key.
//!
//! The frame checks are pure functions ([`seal`], [`open`]); the socket around them only
//! moves bytes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::ChitchatEnvelope;
use ring::hmac;
use tracing::warn;

use crate::key::{GossipKeys, GOSSIP_KEY_ID_LEN};
use crate::key_source::KeySource;

/// The first bytes of every authenticated datagram (chitchat's own start with `0x53 0xb0`).
pub const FRAME_MAGIC: [u8; 2] = *b"rG";

/// Bytes before the chitchat message: magic and key id.
pub const FRAME_HEADER_LEN: usize = FRAME_MAGIC.len() + GOSSIP_KEY_ID_LEN;

/// Length of the tag (HMAC-SHA256, untruncated).
pub const TAG_LEN: usize = 32;

/// Bytes the frame adds to each chitchat message.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_LEN + TAG_LEN;

// Chitchat cuts its messages so that this many bytes still fit in the datagram.
const _: () = assert!(FRAME_OVERHEAD <= chitchat::TRANSPORT_RESERVED_LEN);

/// The largest UDP payload (IPv6 without jumbograms); the receive buffer's size.
const MAX_DATAGRAM_LEN: usize = 65_527;

/// Dropped datagrams are reported by one warning per this interval at most (with the count),
/// so a flood of forged datagrams cannot flood the log.
pub const REJECT_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Shorter than a frame, or not starting with [`FRAME_MAGIC`] (e.g. unauthenticated
    /// chitchat).
    NotAFrame,
    /// The key id is not one of the accepted keys'.
    UnknownKey,
    /// The tag does not match the contents under the key the id names.
    BadTag,
}

impl Rejection {
    /// A short lowercase name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Rejection::NotAFrame => "not an authenticated frame",
            Rejection::UnknownKey => "unknown key id",
            Rejection::BadTag => "bad tag",
        }
    }
}

/// Appends the frame of `envelope` to `buf`, signed with the current key.
pub fn seal(keys: &GossipKeys, envelope: &ChitchatEnvelope, buf: &mut Vec<u8>) {
    let start = buf.len();
    buf.extend_from_slice(&FRAME_MAGIC);
    buf.extend_from_slice(&keys.current().id());
    envelope.serialize(buf);
    let tag = hmac::sign(keys.current().hmac(), &buf[start..]);
    buf.extend_from_slice(tag.as_ref());
}

/// Checks a received datagram; returns the chitchat message it carries (still encoded) if
/// its tag checks out under an accepted key.
pub fn open<'a>(keys: &GossipKeys, datagram: &'a [u8]) -> Result<&'a [u8], Rejection> {
    if datagram.len() < FRAME_OVERHEAD || datagram[..FRAME_MAGIC.len()] != FRAME_MAGIC {
        return Err(Rejection::NotAFrame);
    }
    let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
    let key_id = &signed[FRAME_MAGIC.len()..FRAME_HEADER_LEN];
    let key = keys.accepted(key_id).ok_or(Rejection::UnknownKey)?;
    // Constant-time comparison.
    hmac::verify(key.hmac(), signed, tag).map_err(|_| Rejection::BadTag)?;
    Ok(&signed[FRAME_HEADER_LEN..])
}

/// Counters of an authenticated transport, shared by its sockets and whoever reports them.
#[derive(Debug, Default)]
pub struct AuthStats {
    rejected: AtomicU64,
}

impl AuthStats {
    /// Datagrams dropped because they failed authentication, since start.
    pub fn rejected_datagrams(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    fn count_rejected(&self) -> u64 {
        self.rejected.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Chitchat's transport over UDP with every datagram authenticated (see the
/// [module docs](self)).
#[derive(Debug, Clone)]
pub struct AuthenticatedUdpTransport {
    keys: Arc<KeySource>,
    stats: Arc<AuthStats>,
}

impl AuthenticatedUdpTransport {
    /// A transport signing and checking with `keys`, counting into `stats`.
    pub fn new(keys: GossipKeys, stats: Arc<AuthStats>) -> AuthenticatedUdpTransport {
        AuthenticatedUdpTransport::with_source(Arc::new(KeySource::fixed(keys)), stats)
    }

    /// A transport signing and checking with the keys `source` has at each datagram (a key
    /// file it follows), counting into `stats`.
    pub fn with_source(source: Arc<KeySource>, stats: Arc<AuthStats>) -> AuthenticatedUdpTransport {
        AuthenticatedUdpTransport { keys: source, stats }
    }
}

#[async_trait]
impl Transport for AuthenticatedUdpTransport {
    async fn open(&self, bind_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = tokio::net::UdpSocket::bind(bind_addr)
            .await
            .with_context(|| format!("failed to bind to {bind_addr}/UDP for gossip"))?;
        Ok(Box::new(AuthenticatedUdpSocket {
            socket,
            keys: self.keys.clone(),
            stats: self.stats.clone(),
            send_buf: Vec::with_capacity(MAX_DATAGRAM_LEN),
            recv_buf: vec![0u8; MAX_DATAGRAM_LEN].into_boxed_slice(),
            last_warning: None,
        }))
    }
}

struct AuthenticatedUdpSocket {
    socket: tokio::net::UdpSocket,
    keys: Arc<KeySource>,
    stats: Arc<AuthStats>,
    send_buf: Vec<u8>,
    recv_buf: Box<[u8]>,
    /// When the last "dropped datagrams" warning was logged.
    last_warning: Option<Instant>,
}

impl AuthenticatedUdpSocket {
    fn reject(&mut self, from_addr: SocketAddr, len: usize, rejection: Rejection) {
        let rejected_total = self.stats.count_rejected();
        let now = Instant::now();
        let due = self
            .last_warning
            .is_none_or(|last| now.saturating_duration_since(last) >= REJECT_WARN_INTERVAL);
        if due {
            self.last_warning = Some(now);
            warn!(
                from = %from_addr,
                len,
                reason = rejection.name(),
                rejected_total,
                "dropped a gossip datagram that failed authentication (one warning per {}s at most)",
                REJECT_WARN_INTERVAL.as_secs()
            );
        }
    }
}

#[async_trait]
impl Socket for AuthenticatedUdpSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.socket
            .local_addr()
            .context("failed to get UDP socket address")
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        self.send_buf.clear();
        seal(&self.keys.keys(), &envelope, &mut self.send_buf);
        let num_bytes_sent = self
            .socket
            .send_to(&self.send_buf, to)
            .await
            .context("failed to send chitchat message to peer")?;
        Ok(SendOutcome { num_bytes_sent })
    }

    /// Cancel-safe (chitchat selects on it): nothing is kept between awaits.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let (num_bytes_received, from_addr) = match self.socket.recv_from(&mut self.recv_buf).await {
                Ok(received) => received,
                Err(err) if is_transient_io_error(&err) => {
                    warn!(error = %err, "transient UDP recv error");
                    continue;
                }
                Err(err) => return Err(err).context("fatal UDP recv error"),
            };
            let keys = self.keys.keys();
            let opened = open(&keys, &self.recv_buf[..num_bytes_received]);
            let mut message = match opened {
                Ok(message) => message,
                Err(rejection) => {
                    self.reject(from_addr, num_bytes_received, rejection);
                    continue;
                }
            };
            match ChitchatEnvelope::deserialize(&mut message) {
                Ok(envelope) => {
                    return Ok(RecvOutcome {
                        from_addr,
                        envelope,
                        num_bytes_received,
                    })
                }
                // Signed by a member but not understood (another chitchat version?).
                Err(err) => {
                    warn!(from = %from_addr, len = num_bytes_received, error = %err, "invalid chitchat payload");
                }
            }
        }
    }
}

/// The receive errors after which the socket still works (as chitchat's UDP transport).
fn is_transient_io_error(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::OutOfMemory
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{GossipKey, GOSSIP_KEY_LEN};
    use chitchat::transport::UdpTransport;
    use chitchat::{ChitchatMessage, ProtocolVersion};

    const WAIT: Duration = Duration::from_secs(5);
    /// How long a datagram that should be dropped is given to (wrongly) arrive.
    const SILENCE: Duration = Duration::from_millis(300);

    fn key(byte: u8) -> GossipKey {
        GossipKey::from_bytes([byte; GOSSIP_KEY_LEN])
    }

    fn envelope() -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: ChitchatMessage::BadCluster,
        }
    }

    /// The envelope as chitchat's own UDP transport sends it.
    fn plain() -> Vec<u8> {
        let mut buf = Vec::new();
        envelope().serialize(&mut buf);
        buf
    }

    fn sealed(keys: &GossipKeys) -> Vec<u8> {
        let mut buf = Vec::new();
        seal(keys, &envelope(), &mut buf);
        buf
    }

    fn localhost() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// A receiving socket with `keys` and its counters.
    async fn receiver(keys: GossipKeys) -> (Box<dyn Socket>, Arc<AuthStats>) {
        let stats = Arc::new(AuthStats::default());
        let transport = AuthenticatedUdpTransport::new(keys, stats.clone());
        let socket = transport.open(localhost()).await.expect("bind");
        (socket, stats)
    }

    async fn raw_sender() -> tokio::net::UdpSocket {
        tokio::net::UdpSocket::bind(localhost()).await.expect("bind")
    }

    async fn expect_received(socket: &mut Box<dyn Socket>) -> RecvOutcome {
        tokio::time::timeout(WAIT, socket.recv())
            .await
            .expect("a datagram arrives in time")
            .expect("the socket works")
    }

    async fn expect_nothing(socket: &mut Box<dyn Socket>) {
        let outcome = tokio::time::timeout(SILENCE, socket.recv()).await;
        assert!(outcome.is_err(), "nothing should have been accepted: {outcome:?}");
    }

    /// The frame's checks, without sockets: the right key opens, anything else is refused
    /// with its reason.
    #[test]
    fn frames_open_only_under_an_accepted_key() {
        let keys = GossipKeys::new(key(1));
        let frame = sealed(&keys);
        assert_eq!(frame.len(), plain().len() + FRAME_OVERHEAD);
        assert!(open(&keys, &frame).is_ok());
        let strangers = GossipKeys::new(key(2));
        assert_eq!(open(&strangers, &frame), Err(Rejection::UnknownKey));
        let mut flipped = frame.clone();
        let middle = FRAME_HEADER_LEN + 1;
        flipped[middle] ^= 1;
        assert_eq!(open(&keys, &flipped), Err(Rejection::BadTag));
        let truncated = &frame[..frame.len() - 1];
        assert_eq!(open(&keys, truncated), Err(Rejection::BadTag));
        assert_eq!(
            open(&keys, &frame[..FRAME_OVERHEAD - 1]),
            Err(Rejection::NotAFrame)
        );
        assert_eq!(open(&keys, &plain()), Err(Rejection::NotAFrame));
        // A tag made with another key under this key's id.
        let mut forged = frame.clone();
        let signed_len = forged.len() - TAG_LEN;
        let tag = hmac::sign(key(2).hmac(), &forged[..signed_len]);
        forged[signed_len..].copy_from_slice(tag.as_ref());
        assert_eq!(open(&keys, &forged), Err(Rejection::BadTag));
    }

    /// Two sockets with the same key talk; a socket with another key, an unauthenticated
    /// chitchat socket, and a datagram whose tag lost its last byte are dropped and counted.
    #[tokio::test]
    async fn wrong_key_unauthenticated_and_truncated_datagrams_are_dropped() {
        let keys = GossipKeys::new(key(1));
        let (mut receiver_socket, stats) = receiver(keys.clone()).await;
        let to = receiver_socket.local_addr().expect("addr");

        let mut member = AuthenticatedUdpTransport::new(keys.clone(), Arc::default())
            .open(localhost())
            .await
            .expect("bind");
        member.send(to, envelope()).await.expect("send");
        let received = expect_received(&mut receiver_socket).await;
        assert_eq!(received.envelope, envelope());
        assert_eq!(received.from_addr, member.local_addr().expect("addr"));
        assert_eq!(stats.rejected_datagrams(), 0);

        let mut stranger = AuthenticatedUdpTransport::new(GossipKeys::new(key(2)), Arc::default())
            .open(localhost())
            .await
            .expect("bind");
        stranger.send(to, envelope()).await.expect("send");
        let mut unauthenticated = UdpTransport.open(localhost()).await.expect("bind");
        unauthenticated.send(to, envelope()).await.expect("send");
        let raw = raw_sender().await;
        let frame = sealed(&keys);
        raw.send_to(&frame[..frame.len() - 1], to).await.expect("send");
        expect_nothing(&mut receiver_socket).await;
        assert_eq!(stats.rejected_datagrams(), 3);

        // The socket still accepts members after the rejections.
        member.send(to, envelope()).await.expect("send");
        expect_received(&mut receiver_socket).await;
        assert_eq!(stats.rejected_datagrams(), 3);
    }

    /// A valid datagram sent twice is accepted twice: there is no replay protection, and
    /// none is needed because chitchat applies a message idempotently (module docs).
    #[tokio::test]
    async fn a_replayed_datagram_is_accepted() {
        let keys = GossipKeys::new(key(1));
        let (mut receiver_socket, stats) = receiver(keys.clone()).await;
        let to = receiver_socket.local_addr().expect("addr");
        let raw = raw_sender().await;
        let frame = sealed(&keys);
        for _ in 0..2 {
            raw.send_to(&frame, to).await.expect("send");
            assert_eq!(expect_received(&mut receiver_socket).await.envelope, envelope());
        }
        assert_eq!(stats.rejected_datagrams(), 0);
    }

    /// During a rotation a process signing with the new key and accepting the previous one
    /// accepts both old and new senders, and still drops a third key.
    #[tokio::test]
    async fn rotation_accepts_the_previous_key() {
        let (old, new) = (key(1), key(2));
        let rotated = GossipKeys::with_also_accepted(new.clone(), old.clone());
        let (mut receiver_socket, stats) = receiver(rotated.clone()).await;
        let to = receiver_socket.local_addr().expect("addr");
        let raw = raw_sender().await;
        for sender_keys in [GossipKeys::new(old.clone()), GossipKeys::new(new.clone())] {
            raw.send_to(&sealed(&sender_keys), to).await.expect("send");
            expect_received(&mut receiver_socket).await;
        }
        raw.send_to(&sealed(&GossipKeys::new(key(3))), to)
            .await
            .expect("send");
        expect_nothing(&mut receiver_socket).await;
        assert_eq!(stats.rejected_datagrams(), 1);
        // What the rotated process sends, a process still on the old key alone does not
        // accept (hence the three steps in `key`'s docs), and one that has the new key as its
        // second does.
        let sent = sealed(&rotated);
        assert_eq!(
            open(&GossipKeys::new(old.clone()), &sent),
            Err(Rejection::UnknownKey)
        );
        assert!(open(&GossipKeys::with_also_accepted(old, new), &sent).is_ok());
    }
}
