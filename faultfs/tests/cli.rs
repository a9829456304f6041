//! The `ringkv-faultfs` binary as the nemesis drives it: mount, `drop-unsynced` and `stats` through
//! the control socket, SIGUSR1, and a clean unmount on SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use ringkv_faultfs::control::{default_socket_path, Answer};

const BIN: &str = env!("CARGO_BIN_EXE_ringkv-faultfs");

/// A running `ringkv-faultfs mount`; killed and unmounted on drop if the test did not stop it.
struct MountProcess {
    child: Option<Child>,
    mnt: PathBuf,
}

impl MountProcess {
    fn start(backing: &Path, mnt: &Path) -> Self {
        let mut child = Command::new(BIN)
            .arg("mount")
            .arg(backing)
            .arg(mnt)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn ringkv-faultfs mount");
        let stdout = child.stdout.take().expect("stdout");
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line == "mounted");
        let process = Self {
            child: Some(child),
            mnt: mnt.to_path_buf(),
        };
        assert!(ready, "ringkv-faultfs mount exited before it was ready");
        process
    }

    fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// Sends SIGTERM and waits for a successful exit.
    fn terminate(mut self) {
        self.signal(libc::SIGTERM);
        let status = self.child.take().expect("running").wait().expect("wait");
        assert!(status.success(), "ringkv-faultfs exited with {status}");
    }
}

impl Drop for MountProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if common::is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

fn control(subcommand: &str, mnt: &Path) -> Answer {
    let output = Command::new(BIN)
        .arg(subcommand)
        .arg(mnt)
        .output()
        .expect("run ringkv-faultfs");
    assert!(
        output.status.success(),
        "{subcommand} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a JSON answer")
}

/// drop-unsynced and stats work through the control socket, SIGUSR1 drops too, SIGTERM unmounts
/// and removes the socket.
#[test]
fn binary_drops_on_command_and_unmounts_on_sigterm() {
    if !common::fuse_or_skip("binary_drops_on_command_and_unmounts_on_sigterm") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (backing, mnt) = (dir.path().join("backing"), dir.path().join("mnt"));
    std::fs::create_dir(&backing).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let process = MountProcess::start(&backing, &mnt);
    assert!(common::is_mounted(&mnt));

    let mut file = std::fs::File::create(mnt.join("f")).unwrap();
    file.write_all(b"synced").unwrap();
    file.sync_all().unwrap();
    file.write_all(b"+lost").unwrap();
    drop(file);
    let stats = control("stats", &mnt).stats;
    assert_eq!((stats.fsyncs, stats.volatile_bytes), (1, 5));

    let answer = control("drop-unsynced", &mnt);
    assert_eq!(answer.dropped.expect("a drop report").dropped_bytes, 5);
    assert_eq!(std::fs::read(mnt.join("f")).unwrap(), b"synced");

    std::fs::write(mnt.join("g"), b"never synced").unwrap();
    process.signal(libc::SIGUSR1);
    // The signal is handled asynchronously: a control request is served after it only once the
    // signal thread has run, so ask until the drop shows (bounded).
    let drops = (0..1000)
        .map(|_| control("stats", &mnt).stats.drops)
        .find(|&drops| drops == 2);
    assert_eq!(drops, Some(2), "SIGUSR1 did not drop");
    assert!(!mnt.join("g").exists());

    process.terminate();
    assert!(!common::is_mounted(&mnt), "SIGTERM unmounts");
    assert!(
        !default_socket_path(&mnt).exists(),
        "the control socket is removed"
    );
    assert_eq!(std::fs::read(backing.join("f")).unwrap(), b"synced");
}

/// `slow-syncs <ms>` slows every sync of the mount through the control socket; `fast-syncs`
/// and `heal-syncs` undo it; `fill` and `unfill` fill and free the disk; `fail-syncs
/// --keep-unsynced` fails syncs keeping the data readable, `fail-syncs` losing it; an unknown or
/// malformed request gets an error line, not a crash.
#[test]
fn binary_slows_syncs_and_fills_on_command() {
    if !common::fuse_or_skip("binary_slows_syncs_and_fills_on_command") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (backing, mnt) = (dir.path().join("backing"), dir.path().join("mnt"));
    std::fs::create_dir(&backing).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let process = MountProcess::start(&backing, &mnt);

    let output = Command::new(BIN)
        .args(["slow-syncs".as_ref(), mnt.as_os_str(), "250".as_ref()])
        .output()
        .expect("run ringkv-faultfs slow-syncs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Answer = serde_json::from_slice(&output.stdout).expect("a JSON answer");
    assert_eq!(answer.stats.sync_delay_ms, 250);

    let mut file = std::fs::File::create(mnt.join("f")).unwrap();
    file.write_all(b"data").unwrap();
    let started = std::time::Instant::now();
    file.sync_data().unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));

    assert_eq!(control("fast-syncs", &mnt).stats.sync_delay_ms, 0);
    let again = ringkv_faultfs::control::request(
        &default_socket_path(&mnt),
        ringkv_faultfs::control::Request::SlowSyncs { delay_ms: 100 },
    )
    .expect("the library client");
    assert_eq!(again.stats.sync_delay_ms, 100);
    assert_eq!(control("heal-syncs", &mnt).stats.sync_delay_ms, 0);

    assert_eq!(control("fill", &mnt).stats.space_left_bytes, Some(0));
    let refused = std::fs::File::create(mnt.join("g")).expect_err("the disk is full");
    assert_eq!(refused.raw_os_error(), Some(libc::ENOSPC));
    assert_eq!(control("unfill", &mnt).stats.space_left_bytes, None);
    std::fs::File::create(mnt.join("g")).expect("unfilled");

    let output = Command::new(BIN)
        .args(["fail-syncs".as_ref(), mnt.as_os_str(), "--keep-unsynced".as_ref()])
        .output()
        .expect("run ringkv-faultfs fail-syncs --keep-unsynced");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Answer = serde_json::from_slice(&output.stdout).expect("a JSON answer");
    assert!(answer.stats.syncs_failing && answer.stats.failing_syncs_keep_unsynced);
    file.write_all(b"+kept").unwrap();
    let failed = file.sync_data().expect_err("the disk fails");
    assert_eq!(failed.raw_os_error(), Some(libc::EIO), "{failed}");
    assert_eq!(std::fs::read(mnt.join("f")).unwrap(), b"data+kept");
    let answer = control("fail-syncs", &mnt);
    assert!(answer.stats.syncs_failing && !answer.stats.failing_syncs_keep_unsynced);
    file.sync_data().expect_err("the disk fails");
    assert_eq!(
        std::fs::read(mnt.join("f")).unwrap(),
        b"data",
        "lost at the failed sync"
    );
    let answer = control("heal-syncs", &mnt);
    assert!(!answer.stats.syncs_failing && !answer.stats.failing_syncs_keep_unsynced);

    for bad in [
        "slow-syncs",
        "slow-syncs soon",
        "slow-syncs 5 6",
        "fly",
        "fail-syncs maybe",
    ] {
        let mut stream = std::os::unix::net::UnixStream::connect(default_socket_path(&mnt)).unwrap();
        writeln!(stream, "{bad}").unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        assert!(line.contains("unknown request"), "{bad:?} answered {line:?}");
    }
    drop(file);
    process.terminate();
}
