//! [`BenchError`]: what stops a benchmark. Failed operations during a measured run are not
//! errors of the tool: they are counted in the results (see [`crate::target::TargetError`]).

use std::time::Duration;

/// An error that stops the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The arguments do not describe a runnable benchmark.
    #[error("{0}")]
    Usage(String),
    /// No `etcd` binary was found.
    #[error(
        "etcd not found (searched: {searched}); install it with `bench/scripts/install-etcd.sh` \
         (Debian's etcd-server package), pass --etcd-bin, or bench a running etcd with --etcd-endpoints"
    )]
    EtcdMissing {
        /// The places looked at.
        searched: String,
    },
    /// Starting or watching a ringkv or etcd process failed.
    #[error(transparent)]
    Launch(#[from] ringkv_launcher::LaunchError),
    /// The ringkv client failed outside a measured run (connect, init, load).
    #[error("ringkv: {0}")]
    Ringkv(#[from] ringkv_client::Error),
    /// An etcd endpoint could not be reached.
    #[error("cannot connect to etcd at {endpoint}: {source}")]
    EtcdConnect {
        /// `host:port`.
        endpoint: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// Loading the records before the measured runs failed.
    #[error("loading {system}: {message}")]
    Load {
        /// `ringkv`, `etcd`.
        system: String,
        /// The first failure.
        message: String,
    },
    /// A file or `/proc` entry could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Results could not be encoded or decoded.
    #[error("{what}: {source}")]
    Json {
        /// What was being done, with the path.
        what: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A condition did not hold in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// The condition.
        what: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// The user interrupted the benchmark.
    #[error("interrupted ({0}); the servers were stopped")]
    Interrupted(&'static str),
}

impl BenchError {
    /// An [`BenchError::Io`] for `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}
