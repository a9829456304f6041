//! The `/metrics` endpoint: HTTP/1.1 on hyper, answering `GET /metrics` with the text a
//! [`Render`] makes at that moment, 404 for any other path.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] connections at once (more are closed at accept),
//! request headers within [`HEADER_READ_TIMEOUT`]. The accept loop and every connection
//! belong to the [`MetricsServer`] handle; `shutdown` stops and joins them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Most scrape connections served at once (Prometheus holds one per target).
pub const MAX_CONNECTIONS: usize = 16;
/// How long a connection may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The content type of the text format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Makes the exposition text of one scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// A running `/metrics` endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    cancel: CancellationToken,
    accept: JoinHandle<()>,
    connections: TaskTracker,
}

impl MetricsServer {
    /// Binds `addr` (port 0: any free port) and serves `render`'s text at `/metrics`.
    pub async fn start(addr: SocketAddr, render: Render) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let connections = TaskTracker::new();
        let accept = tokio::spawn(accept_loop(listener, render, cancel.clone(), connections.clone()));
        info!(%local_addr, "serving metrics at http://{local_addr}/metrics");
        Ok(MetricsServer {
            local_addr,
            cancel,
            accept,
            connections,
        })
    }

    /// The address bound (with the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, ends open connections and waits for their tasks.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(err) = self.accept.await {
            warn!(%err, "metrics accept task failed");
        }
        self.connections.close();
        self.connections.wait().await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    render: Render,
    cancel: CancellationToken,
    connections: TaskTracker,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Per-connection failures (reset before accept, no file descriptors left):
                // the next accept may succeed; back off a little so a persistent one does
                // not spin.
                warn!(%err, "metrics endpoint: accept failed");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            debug!(%peer, "metrics endpoint: too many connections, closing one");
            continue;
        };
        let render = Arc::clone(&render);
        let cancel = cancel.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let render = Arc::clone(&render);
                async move { Ok::<_, Infallible>(answer(&request, &render)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = cancel.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = served {
                debug!(%peer, %err, "metrics connection ended with an error");
            }
            drop(permit);
        });
    }
}

fn answer(request: &Request<Incoming>, render: &Render) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&hyper::Method::GET, "/metrics") => (StatusCode::OK, CONTENT_TYPE, render()),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "metrics are at /metrics\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    /// `/metrics` answers the renderer's text with the exposition's content type; other
    /// paths 404; shutdown stops the endpoint.
    #[tokio::test]
    async fn serves_the_rendered_text() {
        let render: Render = Arc::new(|| "# TYPE up gauge\nup 1\n".to_string());
        let server = MetricsServer::start("127.0.0.1:0".parse().expect("addr"), render)
            .await
            .expect("bind");
        let addr = server.local_addr();
        let scraped = get(addr, "/metrics").await;
        assert!(scraped.starts_with("HTTP/1.1 200 OK"), "{scraped}");
        assert!(
            scraped.contains("content-type: text/plain; version=0.0.4"),
            "{scraped}"
        );
        assert!(scraped.ends_with("\r\n\r\n# TYPE up gauge\nup 1\n"), "{scraped}");
        assert!(get(addr, "/").await.starts_with("HTTP/1.1 404"));
        server.shutdown().await;
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "closed after shutdown"
        );
    }
}
