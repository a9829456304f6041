//! [`LaunchError`]: everything that can go wrong while starting and watching processes.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// An error of the launcher.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A binary is not where it was looked for.
    #[error("{name} not found (searched: {searched}): {hint}")]
    BinaryNotFound {
        /// `ringkv-node`, `ringkv-router`.
        name: String,
        /// The directories searched, comma-separated.
        searched: String,
        /// How to get it built.
        hint: String,
    },
    /// A process could not be started, or a file it needs could not be prepared.
    #[error("cannot start {name}: {source}")]
    Spawn {
        /// `node 1`, `router`.
        name: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A process exited while it was expected to run.
    #[error("{name} (pid {pid}) exited ({status}){}", log_note(log.as_ref(), tail))]
    Exited {
        /// `node 1`, `router`.
        name: String,
        /// Its process id.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
        /// Its log file, if it had one.
        log: Option<PathBuf>,
        /// The last lines of the log, indented (empty without a log).
        tail: String,
    },
    /// A signal could not be sent, or a process not be waited for.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The cluster's certificates could not be created or read.
    #[error("certificates: {0}")]
    Certificates(String),
    /// A condition did not hold within its timeout.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// The condition, e.g. `a leader for every shard`.
        what: String,
        /// How long it was given.
        timeout: Duration,
    },
}

fn log_note(log: Option<&PathBuf>, tail: &str) -> String {
    match log {
        Some(log) => format!("; last lines of {}:\n{tail}", log.display()),
        None => String::new(),
    }
}
