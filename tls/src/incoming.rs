//! Accepting TLS connections for a tonic server whose TLS is ours ([`ReloadingIdentity`]'s
//! configuration) rather than tonic's: tonic's `ServerTlsConfig` is fixed at start.
//!
//! [`TlsIncoming::start`] owns one task that accepts TCP connections and runs each TLS
//! handshake in a task of its own (bounded by [`MAX_CONCURRENT_HANDSHAKES`] and
//! [`HANDSHAKE_TIMEOUT`], so a slow or silent client holds no other up), and hands the
//! finished connections to tonic as a stream. tonic reads the peer's certificates from
//! them (`TlsConnectInfo`), as with its own TLS. [`TlsIncoming::shutdown`] stops accepting
//! and joins the handshakes.
//!
//! [`ReloadingIdentity`]: crate::ReloadingIdentity

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Most TLS handshakes in progress at once; connections beyond it are closed at once.
pub const MAX_CONCURRENT_HANDSHAKES: usize = 256;
/// Longest a TLS handshake may take before its connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished connections waiting for tonic to take them.
const READY_QUEUE: usize = 64;
/// Pause after a failed accept (e.g. out of file descriptors) before the next.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The connections of a TLS server, as tonic's `serve_with_incoming` takes them.
pub type TlsConnections = ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>>;

/// The task accepting a listener's TLS connections.
#[derive(Debug)]
pub struct TlsIncoming {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl TlsIncoming {
    /// Accepts on `listener` with `config` (TCP_NODELAY on every connection); the stream
    /// yields connections whose handshake succeeded.
    pub fn start(listener: TcpListener, config: Arc<ServerConfig>) -> (TlsIncoming, TlsConnections) {
        let (ready, connections) = mpsc::channel(READY_QUEUE);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(accept_loop(
            listener,
            TlsAcceptor::from(config),
            ready,
            cancel.clone(),
        ));
        (TlsIncoming { cancel, task }, ReceiverStream::new(connections))
    }

    /// Stops accepting, ends the handshakes in progress and waits for the task.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(err) = self.task.await {
            warn!(%err, "the TLS accept task failed");
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<Result<TlsStream<TcpStream>, std::io::Error>>,
    cancel: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    let mut handshakes = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ready.closed() => break,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(%err, "accepting a connection failed");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!(%peer, "too many TLS handshakes in progress; closing the connection");
            continue;
        };
        if let Err(err) = stream.set_nodelay(true) {
            debug!(%peer, %err, "cannot set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        handshakes.spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(connection)) => {
                    // The server stopped if nobody takes it: the connection just closes.
                    let _ = ready.send(Ok(connection)).await;
                }
                Ok(Err(err)) => debug!(%peer, %err, "TLS handshake refused"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    handshakes.shutdown().await;
}
