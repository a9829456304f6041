//! sled 0.34 on the fault filesystem, configured as `ringkv-node` configures it (timer flush off,
//! durability from explicit `Db::flush`): what survives a kill -9 followed by a drop of unsynced
//! data (a power cut)? `Db::flush` ends in `sync_file_range`, not `fsync`/`fdatasync`, so this
//! filesystem sees no sync at all and the drop takes everything — the durability bug of issue 12.
//! The second test shows the fix the issue asks for (a real `fdatasync` of sled's files after
//! `flush`) makes every flushed write survive.
//!
//! The writer runs in a child process (this test binary again, selected by [`CHILD_ENV`]) so it can
//! be killed with SIGKILL like a node.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::Fixture;

/// Set in the child: the sled directory to write to.
const CHILD_ENV: &str = "RINGKV_FAULTFS_SLED_CHILD_DIR";
/// Set in the child to `1` to fsync every file of the sled directory after `flush`.
const CHILD_FSYNC_ENV: &str = "RINGKV_FAULTFS_SLED_CHILD_FSYNC";
/// Keys the child writes.
const KEYS: u32 = 1000;
/// The line the child prints after its flush (libtest may print other text before it).
const FLUSHED_MARKER: &str = "RINGKV_FAULTFS_SLED_FLUSHED";

fn open_like_the_node(dir: &Path) -> sled::Db {
    sled::Config::new()
        .path(dir)
        .flush_every_ms(None)
        .cache_capacity(16 << 20)
        .open()
        .expect("open sled")
}

/// Syncs every file and directory under `dir` (what a real durability point must do for sled).
fn fsync_tree(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read sled dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            fsync_tree(&path);
        } else {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_data())
                .expect("fdatasync");
        }
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync dir");
}

/// Not a test on its own: the child process body (a no-op unless [`CHILD_ENV`] is set). Writes
/// [`KEYS`] keys, flushes, says `flushed`, then waits to be killed.
#[test]
fn sled_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let db = open_like_the_node(Path::new(&dir));
    for i in 0..KEYS {
        db.insert(format!("key-{i:05}"), format!("value-{i}").as_bytes())
            .expect("insert");
    }
    db.flush().expect("flush");
    if std::env::var(CHILD_FSYNC_ENV).as_deref() == Ok("1") {
        fsync_tree(Path::new(&dir));
    }
    println!("{FLUSHED_MARKER}");
    let mut line = String::new();
    // Blocks until the parent kills this process (stdin is a pipe the parent never writes to).
    let _ = std::io::stdin().read_line(&mut line);
}

/// What one kill -9 + power cut left of a flushed sled database.
struct Outcome {
    syncs: u64,
    dropped_bytes: u64,
    dropped_files: u64,
    surviving_keys: usize,
}

fn kill_drop_reopen(test: &str, fsync_after_flush: bool) -> Option<Outcome> {
    let fx = Fixture::mount(test)?;
    let db_dir = fx.mnt.join("db");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["sled_child_writer", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &db_dir)
        .env(CHILD_FSYNC_ENV, if fsync_after_flush { "1" } else { "0" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the sled writer");
    let stdout = child.stdout.take().expect("child stdout");
    let flushed = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains(FLUSHED_MARKER));
    child.kill().expect("kill -9 the writer");
    child.wait().expect("reap the writer");
    assert!(flushed, "the sled writer died before flushing");

    let stats = fx.control().stats();
    let report = fx.control().drop_unsynced();
    let surviving_keys = match sled::Config::new().path(&db_dir).flush_every_ms(None).open() {
        Ok(db) => db.iter().count(),
        Err(err) => {
            eprintln!("{test}: sled failed to reopen after the drop: {err}");
            0
        }
    };
    let outcome = Outcome {
        syncs: stats.fsyncs + stats.fdatasyncs,
        dropped_bytes: report.dropped_bytes,
        dropped_files: report.dropped_files,
        surviving_keys,
    };
    eprintln!(
        "{test}: {} fsync/fdatasync, drop lost {} bytes and {} never-synced files, {} of {KEYS} flushed keys survived",
        outcome.syncs, outcome.dropped_bytes, outcome.dropped_files, outcome.surviving_keys
    );
    Some(outcome)
}

/// `Db::flush` alone (the node's durability point today) issues no fsync: a power cut after it
/// loses every flushed key.
#[test]
fn sled_flush_alone_loses_flushed_writes_at_a_power_cut() {
    let Some(outcome) = kill_drop_reopen("sled_flush_alone_loses_flushed_writes_at_a_power_cut", false)
    else {
        return;
    };
    assert_eq!(outcome.syncs, 0, "sled 0.34 flush issues no fsync/fdatasync");
    assert!(
        outcome.dropped_bytes > 0,
        "the flushed data was only in the volatile layer"
    );
    assert_eq!(outcome.surviving_keys, 0, "no flushed key survives the power cut");
}

/// `Db::flush` followed by an fdatasync of every sled file (and an fsync of the directories):
/// every flushed key survives — the nemesis does not flag a database that syncs.
#[test]
fn sled_flush_plus_fdatasync_keeps_flushed_writes() {
    let Some(outcome) = kill_drop_reopen("sled_flush_plus_fdatasync_keeps_flushed_writes", true) else {
        return;
    };
    assert!(outcome.syncs > 0);
    assert_eq!(
        outcome.surviving_keys, KEYS as usize,
        "every flushed key survives"
    );
}
