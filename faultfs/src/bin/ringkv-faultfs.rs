//! `ringkv-faultfs`: mount the fault filesystem, or ask a running mount to drop its unsynced data,
//! report its counters, make its syncs fail or slow, or its disk full (and heal them). Signals of `mount`: SIGUSR1 drops unsynced data (like `drop-unsynced`),
//! SIGTERM/SIGINT unmount and exit.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use ringkv_faultfs::control::{self, ControlServer, Request};
use ringkv_faultfs::FaultMount;
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use tracing::{info, warn};

#[derive(Debug, Parser)]
#[command(
    name = "ringkv-faultfs",
    version,
    about = "FUSE pass-through that loses unsynced data on command"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve MOUNTPOINT as BACKING_DIR, keeping unsynced file data in memory. Runs until
    /// SIGTERM/SIGINT (then unmounts); SIGUSR1 drops unsynced data. Prints `mounted` on stdout
    /// once the mount and the control socket are ready.
    Mount {
        /// Directory holding the durable data.
        backing_dir: PathBuf,
        /// Empty directory to mount on.
        mountpoint: PathBuf,
        /// Control socket [default: <MOUNTPOINT>.faultfs.sock].
        #[arg(long)]
        control_socket: Option<PathBuf>,
    },
    /// Drop the unsynced data of a running mount (a simulated power cut); prints a JSON answer.
    DropUnsynced {
        mountpoint: PathBuf,
        /// Control socket [default: <MOUNTPOINT>.faultfs.sock].
        #[arg(long)]
        control_socket: Option<PathBuf>,
    },
    /// Print the counters of a running mount (fsyncs, dropped bytes, ...) as JSON.
    Stats {
        mountpoint: PathBuf,
        /// Control socket [default: <MOUNTPOINT>.faultfs.sock].
        #[arg(long)]
        control_socket: Option<PathBuf>,
    },
    /// Make every file fsync/fdatasync of a running mount fail with EIO (losing the file's
    /// unsynced data) until `heal-syncs`: a failing disk.
    FailSyncs {
        mountpoint: PathBuf,
        /// Keep the unsynced data of a failed sync readable until `drop-unsynced` (a failing
        /// disk under the page cache) instead of losing it at once.
        #[arg(long)]
        keep_unsynced: bool,
        /// Control socket [default: <MOUNTPOINT>.faultfs.sock].
        #[arg(long)]
        control_socket: Option<PathBuf>,
    },
    /// Make every fsync/fdatasync of a running mount wait DELAY_MS milliseconds before it runs
    /// and succeeds (a slow disk; other requests are not held up) until `fast-syncs` or
    /// `heal-syncs`.
    SlowSyncs {
        mountpoint: PathBuf,
        /// How long each sync waits, in milliseconds (0: not at all).
        delay_ms: u64,
        /// Control socket [default: <MOUNTPOINT>.faultfs.sock].
        #[arg(long)]
        control_socket: Option<PathBuf>,
    },
    /// Make the syncs of a running mount fast again (undoes `slow-syncs` only).
    FastSyncs {
        mountpoint: PathBuf,
        /// Control socket [default: <MOUNTPOINT>.faultfs.sock].
        #[arg(long)]
        control_socket: Option<PathBuf>,
    },
    /// Make the syncs of a running mount work normally again: neither failing nor slow.
    HealSyncs {
        mountpoint: PathBuf,
        /// Control socket [default: <MOUNTPOINT>.faultfs.sock].
        #[arg(long)]
        control_socket: Option<PathBuf>,
    },
    /// Make the disk of a running mount full: writes that need new space and file creation
    /// fail with ENOSPC (reads keep working) until `unfill`.
    Fill {
        mountpoint: PathBuf,
        /// New space writes may still take before the disk is full.
        #[arg(long, default_value_t = 0)]
        headroom_bytes: u64,
        /// Control socket [default: <MOUNTPOINT>.faultfs.sock].
        #[arg(long)]
        control_socket: Option<PathBuf>,
    },
    /// Give the disk of a running mount unlimited space again.
    Unfill {
        mountpoint: PathBuf,
        /// Control socket [default: <MOUNTPOINT>.faultfs.sock].
        #[arg(long)]
        control_socket: Option<PathBuf>,
    },
}

fn socket_path(mountpoint: &Path, flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| control::default_socket_path(mountpoint))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match Args::parse().command {
        Command::Mount {
            backing_dir,
            mountpoint,
            control_socket,
        } => run_mount(
            &backing_dir,
            &mountpoint,
            &socket_path(&mountpoint, control_socket),
        ),
        Command::DropUnsynced {
            mountpoint,
            control_socket,
        } => print_answer(&socket_path(&mountpoint, control_socket), Request::DropUnsynced),
        Command::Stats {
            mountpoint,
            control_socket,
        } => print_answer(&socket_path(&mountpoint, control_socket), Request::Stats),
        Command::FailSyncs {
            mountpoint,
            keep_unsynced,
            control_socket,
        } => print_answer(
            &socket_path(&mountpoint, control_socket),
            Request::FailSyncs { keep_unsynced },
        ),
        Command::SlowSyncs {
            mountpoint,
            delay_ms,
            control_socket,
        } => print_answer(
            &socket_path(&mountpoint, control_socket),
            Request::SlowSyncs { delay_ms },
        ),
        Command::FastSyncs {
            mountpoint,
            control_socket,
        } => print_answer(&socket_path(&mountpoint, control_socket), Request::FastSyncs),
        Command::HealSyncs {
            mountpoint,
            control_socket,
        } => print_answer(&socket_path(&mountpoint, control_socket), Request::HealSyncs),
        Command::Fill {
            mountpoint,
            headroom_bytes,
            control_socket,
        } => print_answer(
            &socket_path(&mountpoint, control_socket),
            Request::Fill { headroom_bytes },
        ),
        Command::Unfill {
            mountpoint,
            control_socket,
        } => print_answer(&socket_path(&mountpoint, control_socket), Request::Unfill),
    }
}

fn print_answer(socket: &Path, request: Request) -> anyhow::Result<()> {
    let answer = control::request(socket, request)?;
    println!("{}", serde_json::to_string(&answer)?);
    Ok(())
}

fn run_mount(backing_dir: &Path, mountpoint: &Path, socket: &Path) -> anyhow::Result<()> {
    // Registered before mounting, so a SIGTERM during start-up still unmounts.
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGUSR1]).context("registering signal handlers")?;
    let signals_handle = signals.handle();
    // If the mount goes away from outside (umount), stop waiting for signals.
    let mount = FaultMount::mount_with_exit_hook(backing_dir, mountpoint, move || signals_handle.close())?;
    let server = ControlServer::start(socket, mount.control())?;
    println!("mounted");
    for signal in signals.forever() {
        match signal {
            SIGUSR1 => {
                mount.control().drop_unsynced();
            }
            _ => {
                info!(signal, "shutting down");
                break;
            }
        }
    }
    server.shutdown();
    let stats = mount.control().stats();
    info!(
        fsyncs = stats.fsyncs,
        fdatasyncs = stats.fdatasyncs,
        dir_fsyncs = stats.dir_fsyncs,
        drops = stats.drops,
        dropped_bytes = stats.dropped_bytes,
        volatile_bytes = stats.volatile_bytes,
        "final counters (volatile bytes are lost with this process)"
    );
    if let Err(err) = mount.unmount() {
        warn!(%err, "unclean unmount");
        return Err(err.into());
    }
    Ok(())
}
