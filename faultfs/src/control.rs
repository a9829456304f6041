//! The control socket: how another process (the nemesis, or `ringkv-faultfs drop-unsynced`) tells a
//! running `ringkv-faultfs mount` to drop its volatile layer or report its counters.
//!
//! A unix stream socket at `<MOUNTPOINT>.faultfs.sock` (next to the mountpoint, not inside it, so
//! the served directory shows nothing extra) unless `--control-socket` says otherwise. Protocol:
//! one request line ([`Request`]: `drop-unsynced`, `stats`, `fail-syncs [keep]`, `slow-syncs <ms>`,
//! `fast-syncs`, `heal-syncs`, `fill [<bytes>]` or `unfill`), one JSON answer line ([`Answer`]), then the server closes the
//! connection. Requests are served one at a time.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::Error;
use crate::mount::Control;
use crate::stats::{DropReport, Stats};

/// Longest request line accepted.
const MAX_REQUEST_BYTES: u64 = 64;
/// How long a client may take to send its request, and the server to answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A request to the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Drop the volatile layer, then report.
    DropUnsynced,
    /// Report the counters only.
    Stats,
    /// Make file syncs fail with `EIO` from now on, then report. Their unsynced data is lost
    /// at once (`fail-syncs`), or with `keep_unsynced` kept readable until a drop
    /// (`fail-syncs keep`, [`crate::FailedSyncData::Kept`]).
    FailSyncs { keep_unsynced: bool },
    /// Make every sync take `delay_ms` before it runs and succeeds (a slow disk), then report;
    /// the line is `slow-syncs <ms>`.
    SlowSyncs { delay_ms: u64 },
    /// Make syncs fast again (undo `slow-syncs` only), then report.
    FastSyncs,
    /// Make syncs work normally again, neither failing nor slow, then report.
    HealSyncs,
    /// Make the disk full once writes have taken `headroom_bytes` more of new space (`0`: at
    /// once), then report; the line is `fill` or `fill <bytes>`.
    Fill { headroom_bytes: u64 },
    /// Give the disk unlimited space again, then report.
    Unfill,
}

/// Every request line the server knows, for the answer to an unknown one.
const KNOWN_REQUESTS: &str =
    "drop-unsynced, stats, fail-syncs [keep], slow-syncs <ms>, fast-syncs, heal-syncs, fill [<bytes>] or unfill";

impl Request {
    /// The request as sent on the wire (without the newline).
    pub fn to_line(self) -> String {
        match self {
            Request::DropUnsynced => "drop-unsynced".into(),
            Request::Stats => "stats".into(),
            Request::FailSyncs { keep_unsynced: false } => "fail-syncs".into(),
            Request::FailSyncs { keep_unsynced: true } => "fail-syncs keep".into(),
            Request::SlowSyncs { delay_ms } => format!("slow-syncs {delay_ms}"),
            Request::FastSyncs => "fast-syncs".into(),
            Request::HealSyncs => "heal-syncs".into(),
            Request::Fill { headroom_bytes: 0 } => "fill".into(),
            Request::Fill { headroom_bytes } => format!("fill {headroom_bytes}"),
            Request::Unfill => "unfill".into(),
        }
    }

    /// Parses one request line; `None` for anything else.
    pub fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        let request = match (words.next()?, words.next()) {
            ("drop-unsynced", None) => Request::DropUnsynced,
            ("stats", None) => Request::Stats,
            ("fail-syncs", None) => Request::FailSyncs { keep_unsynced: false },
            ("fail-syncs", Some("keep")) => Request::FailSyncs { keep_unsynced: true },
            ("slow-syncs", Some(delay_ms)) => Request::SlowSyncs {
                delay_ms: delay_ms.parse().ok()?,
            },
            ("fast-syncs", None) => Request::FastSyncs,
            ("heal-syncs", None) => Request::HealSyncs,
            ("fill", None) => Request::Fill { headroom_bytes: 0 },
            ("fill", Some(headroom_bytes)) => Request::Fill {
                headroom_bytes: headroom_bytes.parse().ok()?,
            },
            ("unfill", None) => Request::Unfill,
            _ => return None,
        };
        words.next().is_none().then_some(request)
    }
}

/// The answer to a request: what a drop lost (for `drop-unsynced`) and the counters after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Set for `drop-unsynced`.
    pub dropped: Option<DropReport>,
    /// Counters since the mount.
    pub stats: Stats,
}

/// The default control socket of a mountpoint: `<MOUNTPOINT>.faultfs.sock`, beside it.
pub fn default_socket_path(mountpoint: &Path) -> PathBuf {
    let trimmed = mountpoint.components().as_path();
    let mut name = OsString::from(trimmed.as_os_str());
    name.push(".faultfs.sock");
    PathBuf::from(name)
}

/// Sends one request to a running `ringkv-faultfs mount` and returns its answer.
pub fn request(socket: &Path, request: Request) -> Result<Answer, Error> {
    let socket_error = |source| Error::ControlSocket {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(socket_error)?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(socket_error)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(socket_error)?;
    writeln!(stream, "{}", request.to_line()).map_err(socket_error)?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(socket_error)?;
    serde_json::from_str(&line).map_err(|_| Error::ControlAnswer {
        path: socket.to_path_buf(),
        answer: line,
    })
}

/// The thread serving the control socket; stop it with [`ControlServer::shutdown`].
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Binds `path` (replacing a stale socket file) and serves requests against `control`.
    pub fn start(path: &Path, control: Control) -> Result<Self, Error> {
        let socket_error = |source| Error::ControlSocket {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::remove_file(path) {
            Ok(()) => info!(path = %path.display(), "removed a stale control socket"),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(socket_error(err)),
        }
        let listener = UnixListener::bind(path).map_err(socket_error)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("faultfs-control".into())
            .spawn(move || serve(&listener, &control, &thread_stop))
            .map_err(|source| Error::Spawn {
                name: "faultfs-control",
                source,
            })?;
        info!(path = %path.display(), "control socket listening");
        Ok(Self {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, joins the thread and removes the socket file.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept(); the loop sees the flag and returns.
        if let Err(err) = UnixStream::connect(&self.path) {
            warn!(%err, "failed to wake the control thread");
        }
        if thread.join().is_err() {
            warn!("control thread panicked");
        }
        if let Err(err) = std::fs::remove_file(&self.path) {
            warn!(path = %self.path.display(), %err, "failed to remove the control socket");
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn serve(listener: &UnixListener, control: &Control, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match stream {
            Ok(stream) => {
                if let Err(err) = answer(stream, control) {
                    warn!(%err, "control request failed");
                }
            }
            Err(err) => warn!(%err, "failed to accept a control connection"),
        }
    }
}

fn answer(stream: UnixStream, control: &Control) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(io::Read::take(&stream, MAX_REQUEST_BYTES)).read_line(&mut line)?;
    let mut writer = &stream;
    let Some(request) = Request::parse(&line) else {
        warn!(request = line.trim(), "unknown control request");
        return writeln!(
            writer,
            "{{\"error\":\"unknown request; expected {KNOWN_REQUESTS}\"}}"
        );
    };
    match request {
        Request::FailSyncs { keep_unsynced: false } => control.fail_syncs(true),
        Request::FailSyncs { keep_unsynced: true } => control.fail_syncs_keeping_unsynced(),
        Request::SlowSyncs { delay_ms } => control.slow_syncs(Duration::from_millis(delay_ms)),
        Request::FastSyncs => control.slow_syncs(Duration::ZERO),
        Request::HealSyncs => control.heal_syncs(),
        Request::Fill { headroom_bytes } => control.fill(headroom_bytes),
        Request::Unfill => control.unfill(),
        Request::DropUnsynced | Request::Stats => {}
    }
    let dropped = (request == Request::DropUnsynced).then(|| control.drop_unsynced());
    let answer = Answer {
        dropped,
        stats: control.stats(),
    };
    let json = serde_json::to_string(&answer).map_err(io::Error::other)?;
    writeln!(writer, "{json}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every request survives the wire: parsed back from the line it is sent as.
    #[test]
    fn requests_round_trip_through_their_lines() {
        let requests = [
            Request::DropUnsynced,
            Request::Stats,
            Request::FailSyncs { keep_unsynced: false },
            Request::FailSyncs { keep_unsynced: true },
            Request::SlowSyncs { delay_ms: 250 },
            Request::FastSyncs,
            Request::HealSyncs,
            Request::Fill { headroom_bytes: 0 },
            Request::Fill { headroom_bytes: 4096 },
            Request::Unfill,
        ];
        for request in requests {
            assert_eq!(Request::parse(&request.to_line()), Some(request), "{request:?}");
        }
        assert_eq!(Request::Fill { headroom_bytes: 0 }.to_line(), "fill");
        assert_eq!(
            Request::FailSyncs { keep_unsynced: true }.to_line(),
            "fail-syncs keep"
        );
        for bad in [
            "",
            "slow-syncs",
            "slow-syncs -1",
            "slow-syncs 1 2",
            "stats now",
            "fill-syncs",
            "fill lots",
            "unfill 5",
            "fail-syncs lose",
            "fail-syncs keep now",
        ] {
            assert_eq!(Request::parse(bad), None, "{bad:?}");
        }
    }
}
