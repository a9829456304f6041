//! Starting a node or router process ([`Launch`]) and owning it ([`Process`]).
//!
//! A process is killed and reaped when its [`Process`] is dropped, so a harness that fails
//! half-way leaves nothing running. Its stdout and stderr go to a log file (appended, so a
//! restarted node keeps one log) or nowhere. A command prefix runs the program through
//! another one, e.g. `ip netns exec <namespace>`; environment variables reach it through
//! the prefix (libfaketime's `LD_PRELOAD`, for one).

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::wait::{FIRST_POLL_PAUSE, MAX_POLL_PAUSE};
use crate::LaunchError;

/// How long a killed process may take to be reaped (one in an uninterruptible fsync dies
/// only when the call returns, which can take seconds on a loaded disk).
pub const KILL_WAIT: Duration = Duration::from_secs(10);
/// Pause between two checks of whether a killed process is gone.
const REAP_POLL: Duration = Duration::from_millis(5);
/// Log lines shown when a process exits unexpectedly.
pub const LOG_TAIL_LINES: usize = 15;
/// Bytes read from the end of a log to find those lines.
pub const LOG_TAIL_BYTES: u64 = 16 * 1024;

/// What to start: a program, its arguments and environment, where its output goes.
#[derive(Clone, Debug)]
pub struct Launch {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    prefix: Vec<OsString>,
    log: Option<PathBuf>,
    own_process_group: bool,
    die_with_parent: bool,
}

impl Launch {
    /// Runs `program`; `name` (`node 1`, `router`) appears in errors.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Launch {
        Launch {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            prefix: Vec::new(),
            log: None,
            own_process_group: false,
            die_with_parent: false,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Launch {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, A>(mut self, args: I) -> Launch
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Launch {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs the program as `prefix... program args...` (e.g. `ip netns exec ns1`).
    pub fn prefix<I, A>(mut self, prefix: I) -> Launch
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        self.prefix = prefix.into_iter().map(Into::into).collect();
        self
    }

    /// Appends the process's stdout and stderr to `path` (default: discarded).
    pub fn log(mut self, path: impl Into<PathBuf>) -> Launch {
        self.log = Some(path.into());
        self
    }

    /// Starts the process in a process group of its own, so a Ctrl-C at the terminal
    /// reaches only the parent, which stops its children in order.
    pub fn own_process_group(mut self) -> Launch {
        self.own_process_group = true;
        self
    }

    /// On Linux, the kernel sends the process SIGTERM when the thread that spawned it
    /// dies (`PR_SET_PDEATHSIG`): spawn from the main thread of a current-thread runtime.
    pub fn die_with_parent(mut self) -> Launch {
        self.die_with_parent = true;
        self
    }

    /// The program and its arguments, as run (without the prefix).
    pub fn command_line(&self) -> String {
        std::iter::once(self.program.display().to_string())
            .chain(self.args.iter().map(|arg| arg.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Starts the process. Needs a tokio runtime.
    pub fn spawn(self) -> Result<Process, LaunchError> {
        let spawn_error = |source| LaunchError::Spawn {
            name: self.name.clone(),
            source,
        };
        let mut command = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut command = tokio::process::Command::new(first);
                command.args(rest).arg(&self.program);
                command
            }
            None => tokio::process::Command::new(&self.program),
        };
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        match &self.log {
            Some(log) => {
                let stdout = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .map_err(spawn_error)?;
                let stderr = stdout.try_clone().map_err(spawn_error)?;
                command.stdout(Stdio::from(stdout)).stderr(Stdio::from(stderr));
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        #[cfg(unix)]
        if self.own_process_group {
            command.process_group(0);
        }
        #[cfg(target_os = "linux")]
        if self.die_with_parent {
            let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
            // SAFETY: the closure runs in the forked child before exec and only makes
            // async-signal-safe system calls (prctl, getppid); it allocates nothing.
            unsafe {
                command.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    if libc::getppid() != parent {
                        // The parent died between fork and prctl: do not run orphaned.
                        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().map_err(spawn_error)?;
        let pid = child.id().ok_or_else(|| LaunchError::Spawn {
            name: self.name.clone(),
            source: std::io::Error::other("exited before its pid was known"),
        })?;
        Ok(Process {
            name: self.name,
            pid,
            log: self.log,
            child,
            exited: None,
        })
    }
}

/// A running (or exited, not yet dropped) process; killed and reaped on drop.
#[derive(Debug)]
pub struct Process {
    name: String,
    pid: u32,
    log: Option<PathBuf>,
    child: tokio::process::Child,
    exited: Option<ExitStatus>,
}

impl Process {
    /// `node 1`, `router`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id (kept after the process exited).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The log file, if output goes to one.
    pub fn log(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// How the process ended, once that was noticed.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exited
    }

    /// Checks without blocking whether the process has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, LaunchError> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().map_err(|source| LaunchError::Io {
                what: format!("cannot check {} (pid {})", self.name, self.pid),
                source,
            })?;
        }
        Ok(self.exited)
    }

    /// Fails with [`LaunchError::Exited`] (and the end of the log) when the process has
    /// exited.
    pub fn check_running(&mut self) -> Result<(), LaunchError> {
        match self.try_wait()? {
            None => Ok(()),
            Some(status) => Err(LaunchError::Exited {
                name: self.name.clone(),
                pid: self.pid,
                status,
                tail: self.log.as_deref().map(log_tail).unwrap_or_default(),
                log: self.log.clone(),
            }),
        }
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`) to the process, unless it was reaped.
    #[cfg(unix)]
    pub fn signal(&self, signal: libc::c_int) -> Result<(), LaunchError> {
        let not_running = || LaunchError::Io {
            what: format!("cannot signal {} (pid {})", self.name, self.pid),
            source: std::io::Error::from_raw_os_error(libc::ESRCH),
        };
        // `id()` is `None` once tokio reaped the child: the pid may name another process.
        let pid = self.child.id().ok_or_else(not_running)?;
        let pid = libc::pid_t::try_from(pid).map_err(|_| not_running())?;
        // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our unreaped child.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(LaunchError::Io {
                what: format!("kill({pid}, {signal}) of {}", self.name),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// `kill -9` and reap, waiting at most [`KILL_WAIT`] (blocking the thread).
    #[allow(
        clippy::disallowed_methods,
        reason = "synchronous on purpose (also called from Drop): a SIGKILLed child is reaped within milliseconds"
    )]
    pub fn kill(&mut self) -> Result<ExitStatus, LaunchError> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        self.child.start_kill().map_err(|source| LaunchError::Io {
            what: format!("cannot kill {} (pid {})", self.name, self.pid),
            source,
        })?;
        let deadline = std::time::Instant::now() + KILL_WAIT;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() >= deadline {
                return Err(LaunchError::Timeout {
                    what: format!("{} (pid {}) to die after SIGKILL", self.name, self.pid),
                    timeout: KILL_WAIT,
                });
            }
            std::thread::sleep(REAP_POLL);
        }
    }

    /// Waits until the process exits.
    pub async fn wait(&mut self) -> Result<ExitStatus, LaunchError> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        let status = self.child.wait().await.map_err(|source| LaunchError::Io {
            what: format!("cannot wait for {} (pid {})", self.name, self.pid),
            source,
        })?;
        self.exited = Some(status);
        Ok(status)
    }

    /// Waits until the process wrote its address (`host:port`) to `path`; fails early,
    /// with the end of its log, when it exits first.
    pub async fn wait_for_addr_file(
        &mut self,
        path: &Path,
        timeout: Duration,
    ) -> Result<String, LaunchError> {
        let deadline = Instant::now() + timeout;
        let mut pause = FIRST_POLL_PAUSE;
        loop {
            if let Some(addr) = std::fs::read_to_string(path).ok().filter(|addr| !addr.is_empty()) {
                return Ok(addr);
            }
            self.check_running()?;
            if Instant::now() >= deadline {
                return Err(LaunchError::Timeout {
                    what: format!("{} to listen", self.name),
                    timeout,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_POLL_PAUSE);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited.is_some() {
            return;
        }
        // A stopped (SIGSTOP) process dies of SIGKILL too; resuming it first lets the
        // kernel tear it down without waiting for a continue.
        #[cfg(unix)]
        let _ = self.signal(libc::SIGCONT);
        let _ = self.kill();
    }
}

/// The last [`LOG_TAIL_LINES`] lines of a log file, indented, or a note when it cannot
/// be read.
pub fn log_tail(path: &Path) -> String {
    let read = || -> std::io::Result<Vec<u8>> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.take(LOG_TAIL_BYTES).read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    match read() {
        Ok(bytes) => tail_lines(&String::from_utf8_lossy(&bytes), LOG_TAIL_LINES),
        Err(err) => format!("    (cannot read the log: {err})"),
    }
}

/// The last `count` non-empty lines of `text`, each indented by four spaces.
pub fn tail_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(count);
    lines[start..]
        .iter()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// The tail keeps the last non-empty lines, indented.
    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail_lines("a\nb\n\nc\n", 2), "    b\n    c");
        assert_eq!(tail_lines("", 3), "");
    }

    /// A process started through a prefix, with an environment variable, writes its
    /// address file; kill reaps it.
    #[tokio::test]
    async fn addr_file_through_a_prefix() {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr_file = dir.path().join("addr");
        let mut process = Launch::new("sleeper", "/bin/sh")
            .prefix(["env"])
            .env("RINGKV_TEST_ADDR", "127.0.0.1:9")
            .args(["-c", "printf %s \"$RINGKV_TEST_ADDR\" > \"$0\"; exec sleep 30"])
            .arg(&addr_file)
            .spawn()
            .expect("spawn");
        let addr = process
            .wait_for_addr_file(&addr_file, Duration::from_secs(10))
            .await
            .expect("address");
        assert_eq!(addr, "127.0.0.1:9");
        process.check_running().expect("still running");
        process.signal(libc::SIGSTOP).expect("stop");
        let status = process.kill().expect("killed");
        assert!(!status.success());
        assert!(
            process.signal(libc::SIGCONT).is_err(),
            "a reaped process takes no signals"
        );
    }

    /// A process that exits before writing its address file fails the wait at once, with
    /// the end of its log.
    #[tokio::test]
    async fn early_exit_shows_the_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("failing.log");
        let mut process = Launch::new("node 7", "/bin/sh")
            .args(["-c", "echo 'error: address in use' >&2; exit 3"])
            .log(&log)
            .spawn()
            .expect("spawn");
        let err = process
            .wait_for_addr_file(&dir.path().join("addr"), Duration::from_secs(30))
            .await
            .expect_err("exited");
        let message = err.to_string();
        assert!(message.starts_with("node 7 (pid "), "{message}");
        assert!(message.ends_with(":\n    error: address in use"), "{message}");
    }
}
