//! `kvctl backup DIR` and `kvctl restore DIR`: one consistent copy of every key, as of one
//! timestamp of the oracle, and loading it into a (new) cluster.
//!
//! **Backup** takes a timestamp `T` (or `--at`), asks every node to keep its version
//! history from `T` on (`Admin.HoldHistory`, renewed while it runs, released at the end),
//! and streams the whole key space as of `T`, the reserved keyspace of lease records
//! included (`Client::scan_stream` at `ReadConsistency::At` of each range of
//! `every_range_with_reserved`:
//! every shard answers at `T`, so the copy is the acknowledged state at `T` across shards —
//! writes acknowledged before `T` was taken are in it, writes that started after are not).
//! Online: writes go on meanwhile. Paced by `--max-rate-mib`, with a progress bar.
//!
//! **Format** (`DIR`): `data-NNNNNN.rkv` files of records `u32 key length ‖ key ‖ u32 value
//! length ‖ value ‖ u64 expires_at_ts` (big-endian; the expiry is the value's as of the
//! backup's timestamp, an absolute oracle timestamp, 0 = never), in key order, each at most
//! [`FILE_BYTES`]; then `manifest.json` (format [`FORMAT`], `read_ts`, per file its keys,
//! bytes and CRC-32 over its records), written last and atomically: a directory without a
//! manifest is an unfinished backup. Files and the directory are fsynced. Versions are not
//! kept: restored keys get new versions. Format [`FORMAT_WITHOUT_EXPIRY`] (older kvctl)
//! has records without the expiry; restore still reads it, and its keys do not expire.
//!
//! **Expiry** (TTLs and lease deadlines) is kept as the absolute oracle timestamp: oracle
//! timestamps are milliseconds since the Unix epoch in every cluster, so a key restored
//! into a new cluster expires when it would have in the old one, and a lease's keys still
//! expire with its record. Restore takes a timestamp of the target cluster first and
//! skips the keys whose expiry it has passed (counted as `EXPIRED` in its summary); a key
//! whose expiry passes while restore runs is written with it and is expired at once.
//!
//! **Restore** checks the manifest and reads every file through, checking its CRC-32 and
//! record count, before it writes anything; refuses a cluster that already holds keys
//! (unless `--allow-existing`); then loads the records in batches (at most four in flight,
//! each an owned task): the keys without an expiry in one batch put (atomic per shard),
//! the others one put each with their expiry.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use futures::{stream, StreamExt, TryStreamExt};
use ringkv_client::{
    every_range_with_reserved, Client, CountOptions, KeyRange, ReadConsistency, ScanOptions,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::exit::Outcome;
use crate::output::{self, render_table, to_json, OutputFormat};
use crate::progress;

/// The manifest's `format`: records with their expiry.
const FORMAT: &str = "ringkv-backup-2";
/// The format before expiries were kept: records of a key and a value.
const FORMAT_WITHOUT_EXPIRY: &str = "ringkv-backup-1";
const MANIFEST: &str = "manifest.json";
/// Largest data file.
const FILE_BYTES: u64 = 256 << 20;
/// How long a history hold lasts without renewal, and how often the backup renews it.
const HOLD_TTL: Duration = Duration::from_secs(60);
const HOLD_RENEW: Duration = Duration::from_secs(15);
/// Keys and bytes of one restore batch, and batches in flight.
const RESTORE_BATCH_KEYS: usize = 256;
const RESTORE_BATCH_BYTES: usize = 1 << 20;
const RESTORE_IN_FLIGHT: usize = 4;
/// Longest key or value a record may declare (a corrupt length must not allocate GiBs).
const MAX_RECORD_PART: u32 = 64 << 20;

/// `kvctl backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Directory to write (created; must be empty if it exists).
    pub dir: PathBuf,
    /// Back up the state as of this oracle timestamp (`kvctl timestamp`) instead of now. It
    /// must still be within the nodes' version history (--mvcc-window-ms, 10 s by default).
    #[arg(long, value_name = "TS")]
    pub at: Option<u64>,
    /// Most MiB per second read from the cluster (0: no limit).
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub max_rate_mib: u64,
}

/// `kvctl restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// A directory written by `kvctl backup`.
    pub dir: PathBuf,
    /// Load into a cluster that already holds keys (restored keys overwrite theirs).
    #[arg(long)]
    pub allow_existing: bool,
    /// Most MiB per second written to the cluster (0: no limit).
    #[arg(long, value_name = "MIB", default_value_t = 32)]
    pub max_rate_mib: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    read_ts: u64,
    keys: u64,
    bytes: u64,
    files: Vec<DataFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DataFile {
    name: String,
    keys: u64,
    bytes: u64,
    crc32: u32,
}

/// Holds the rate of bytes moved to `bytes_per_sec` (0: no limit) by sleeping when ahead.
struct Pacer {
    bytes_per_sec: u64,
    start: Instant,
    bytes: u64,
}

impl Pacer {
    fn new(mib_per_sec: u64) -> Pacer {
        Pacer {
            bytes_per_sec: mib_per_sec.saturating_mul(1 << 20),
            start: Instant::now(),
            bytes: 0,
        }
    }

    async fn moved(&mut self, bytes: u64) {
        self.bytes += bytes;
        if self.bytes_per_sec == 0 {
            return;
        }
        #[allow(clippy::cast_precision_loss)]
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            // Pacing, not a wait for a condition: the rate is the point.
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// The data file being written, with its running totals.
struct Writer {
    dir: PathBuf,
    file: Option<(DataFile, BufWriter<File>, crc32fast::Hasher)>,
    done: Vec<DataFile>,
}

impl Writer {
    /// Writes one record: `key`, `value` and its expiry (oracle timestamp; `None`: never).
    fn record(&mut self, key: &[u8], value: &[u8], expires_at_ts: Option<u64>) -> anyhow::Result<u64> {
        let size = 16 + key.len() as u64 + value.len() as u64;
        if self
            .file
            .as_ref()
            .is_some_and(|(meta, ..)| meta.bytes + size > FILE_BYTES)
        {
            self.close_file()?;
        }
        if self.file.is_none() {
            let name = format!("data-{:06}.rkv", self.done.len());
            let path = self.dir.join(&name);
            let file = File::create_new(&path).with_context(|| format!("creating {}", path.display()))?;
            let meta = DataFile {
                name,
                keys: 0,
                bytes: 0,
                crc32: 0,
            };
            self.file = Some((meta, BufWriter::new(file), crc32fast::Hasher::new()));
        }
        let Some((meta, out, crc)) = self.file.as_mut() else {
            bail!("no data file open");
        };
        for part in [key, value] {
            let len = u32::try_from(part.len()).context("a key or value over 4 GiB")?;
            out.write_all(&len.to_be_bytes())?;
            out.write_all(part)?;
            crc.update(&len.to_be_bytes());
            crc.update(part);
        }
        let expiry = expires_at_ts.unwrap_or(0).to_be_bytes();
        out.write_all(&expiry)?;
        crc.update(&expiry);
        meta.keys += 1;
        meta.bytes += size;
        Ok(size)
    }

    fn close_file(&mut self) -> anyhow::Result<()> {
        if let Some((mut meta, out, crc)) = self.file.take() {
            let file = out.into_inner().map_err(|err| err.into_error())?;
            file.sync_all()
                .with_context(|| format!("syncing {}", meta.name))?;
            meta.crc32 = crc.finalize();
            self.done.push(meta);
        }
        Ok(())
    }
}

/// `kvctl backup DIR`.
pub async fn backup(client: &Client, args: BackupArgs, format: OutputFormat) -> anyhow::Result<Outcome> {
    prepare_dir(&args.dir)?;
    let started = Instant::now();
    let read_ts = match args.at {
        Some(ts) => ts,
        None => client
            .timestamp()
            .await
            .context("taking the backup's timestamp")?,
    };
    let hold_id = rand::random::<u64>().max(1);
    if let Err(err) = client.hold_history(hold_id, read_ts, HOLD_TTL).await {
        // Some nodes may have taken it: keep renewing (they answer again when they can).
        eprintln!(
            "warning: not every node keeps its history for the backup ({err}); a backup \
             longer than their --mvcc-window-ms may fail with \"snapshot too old\""
        );
    }
    let renewer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HOLD_RENEW);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(err) = client.hold_history(hold_id, read_ts, HOLD_TTL).await {
                    eprintln!("warning: renewing the history hold failed: {err}");
                }
            }
        })
    };
    // The renewer stops with this guard on every path out (an error, a panic unwinding).
    let stop_renewing = renewer.abort_handle();
    let copied = {
        struct AbortOnDrop(tokio::task::AbortHandle);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let _guard = AbortOnDrop(stop_renewing);
        copy_out(client, &args, read_ts).await
    };
    // Released at once; had this failed, the hold lapses by itself after HOLD_TTL.
    let _ = client.hold_history(hold_id, read_ts, Duration::ZERO).await;
    let manifest = copied?;
    let text = serde_json::to_string_pretty(&manifest)?;
    let tmp = args.dir.join(format!("{MANIFEST}.tmp"));
    {
        let mut file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    fs::rename(&tmp, args.dir.join(MANIFEST))?;
    File::open(&args.dir)?.sync_all()?;
    output::emit(&summary(&manifest, &args.dir, started.elapsed(), None, format))?;
    Ok(Outcome::Success)
}

/// Creates `dir`, or checks that it is empty.
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        if fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
        {
            bail!(
                "{} is not empty: a backup goes into a new or empty directory",
                dir.display()
            );
        }
    } else {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// Streams every key as of `read_ts` into data files.
async fn copy_out(client: &Client, args: &BackupArgs, read_ts: u64) -> anyhow::Result<Manifest> {
    let at = ReadConsistency::At(read_ts);
    // A scan of everything leaves the reserved keyspace (lease records) out: the backup
    // copies it too, as its own range, in key order.
    let ranges = every_range_with_reserved();
    let mut total = 0;
    for range in &ranges {
        total += client
            .count(range, &CountOptions::new().consistency(at))
            .await
            .context("counting the keys to back up")?
            .count;
    }
    let bar = progress::bar(Some(total), progress::LOAD_TEMPLATE);
    let mut entries = stream::iter(ranges)
        .map(|range| {
            client
                .scan_stream(&range, &ScanOptions::new().consistency(at))
                .entries()
        })
        .flatten();
    let mut writer = Writer {
        dir: args.dir.clone(),
        file: None,
        done: Vec::new(),
    };
    let mut pacer = Pacer::new(args.max_rate_mib);
    let result = async {
        while let Some(entry) = entries.try_next().await.context("reading the cluster")? {
            let size = writer.record(&entry.key, &entry.value, entry.expires_at_ts)?;
            bar.inc(1);
            bar.set_message(progress::rate_message(&bar));
            pacer.moved(size).await;
        }
        writer.close_file()
    }
    .await;
    bar.finish_and_clear();
    result?;
    Ok(Manifest {
        format: FORMAT.to_string(),
        read_ts,
        keys: writer.done.iter().map(|file| file.keys).sum(),
        bytes: writer.done.iter().map(|file| file.bytes).sum(),
        files: writer.done,
    })
}

/// What a backup wrote or a restore loaded; `expired` (restore only): the keys skipped
/// because their expiry had passed.
fn summary(
    manifest: &Manifest,
    dir: &Path,
    took: Duration,
    expired: Option<u64>,
    format: OutputFormat,
) -> String {
    match format {
        OutputFormat::Table => {
            let mut headers = vec!["DIRECTORY", "READ TS", "KEYS", "BYTES", "FILES", "SECONDS"];
            let mut row = vec![
                dir.display().to_string(),
                manifest.read_ts.to_string(),
                manifest.keys.to_string(),
                manifest.bytes.to_string(),
                manifest.files.len().to_string(),
                format!("{:.1}", took.as_secs_f64()),
            ];
            if let Some(expired) = expired {
                headers.push("EXPIRED");
                row.push(expired.to_string());
            }
            render_table(&headers, vec![row], &[1, 2, 3, 4, 5, 6])
        }
        OutputFormat::Json => {
            let mut document = json!({
                "dir": dir.display().to_string(),
                "format": manifest.format,
                "read_ts": manifest.read_ts,
                "keys": manifest.keys,
                "bytes": manifest.bytes,
                "files": manifest.files.len(),
                "seconds": took.as_secs_f64(),
            });
            if let Some(expired) = expired {
                document["expired_skipped"] = json!(expired);
            }
            to_json(&document)
        }
    }
}

/// One record of a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    key: Vec<u8>,
    value: Vec<u8>,
    /// Oracle timestamp; `None`: never (and every record of [`FORMAT_WITHOUT_EXPIRY`]).
    expires_at_ts: Option<u64>,
}

/// Reads the records of one data file, checking its CRC-32 at the end.
struct Records {
    name: String,
    input: BufReader<File>,
    crc: crc32fast::Hasher,
    expected_crc: u32,
    left: u64,
    /// Records end with their expiry ([`FORMAT`]), or not ([`FORMAT_WITHOUT_EXPIRY`]).
    with_expiry: bool,
}

impl Records {
    fn open(dir: &Path, meta: &DataFile, with_expiry: bool) -> anyhow::Result<Records> {
        if meta.name.contains('/') || meta.name.contains("..") {
            bail!("the manifest names a data file outside the backup: {}", meta.name);
        }
        let path = dir.join(&meta.name);
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        Ok(Records {
            name: meta.name.clone(),
            input: BufReader::new(file),
            crc: crc32fast::Hasher::new(),
            expected_crc: meta.crc32,
            left: meta.keys,
            with_expiry,
        })
    }

    fn expiry(&mut self) -> anyhow::Result<Option<u64>> {
        let mut expiry = [0u8; 8];
        self.input
            .read_exact(&mut expiry)
            .with_context(|| format!("{}: cut short", self.name))?;
        self.crc.update(&expiry);
        let expires_at_ts = u64::from_be_bytes(expiry);
        Ok((expires_at_ts != 0).then_some(expires_at_ts))
    }

    fn part(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        self.input
            .read_exact(&mut len)
            .with_context(|| format!("{}: cut short", self.name))?;
        let size = u32::from_be_bytes(len);
        if size > MAX_RECORD_PART {
            bail!(
                "{}: a record declares {size} bytes: the file is corrupt",
                self.name
            );
        }
        let mut part = vec![0u8; size as usize];
        self.input
            .read_exact(&mut part)
            .with_context(|| format!("{}: cut short", self.name))?;
        self.crc.update(&len);
        self.crc.update(&part);
        Ok(part)
    }

    /// The next record; `None` once the manifest's count was read and the CRC matched.
    fn next_record(&mut self) -> anyhow::Result<Option<Record>> {
        if self.left == 0 {
            let crc = std::mem::take(&mut self.crc).finalize();
            if crc != self.expected_crc {
                bail!(
                    "{}: CRC-32 {crc:08x}, the manifest says {:08x}: the file is corrupt",
                    self.name,
                    self.expected_crc
                );
            }
            let mut extra = [0u8; 1];
            if self.input.read(&mut extra)? != 0 {
                bail!("{}: more data than the manifest's record count", self.name);
            }
            return Ok(None);
        }
        self.left -= 1;
        let key = self.part()?;
        let value = self.part()?;
        let expires_at_ts = if self.with_expiry { self.expiry()? } else { None };
        Ok(Some(Record {
            key,
            value,
            expires_at_ts,
        }))
    }
}

fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = fs::read_to_string(&path)
        .with_context(|| format!("reading {} (a backup without one is unfinished)", path.display()))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a backup manifest", path.display()))?;
    if manifest.format != FORMAT && manifest.format != FORMAT_WITHOUT_EXPIRY {
        bail!(
            "{}: format {:?}, this kvctl reads {FORMAT:?} and {FORMAT_WITHOUT_EXPIRY:?}",
            path.display(),
            manifest.format
        );
    }
    Ok(manifest)
}

/// Reads every data file through and checks its CRC-32 and record count, writing nothing.
fn verify(dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let bar = progress::bar(Some(manifest.keys), progress::LOAD_TEMPLATE);
    bar.set_message("checking the backup");
    let result = manifest.files.iter().try_for_each(|meta| {
        let mut records = Records::open(dir, meta, manifest.format == FORMAT)?;
        while records.next_record()?.is_some() {
            bar.inc(1);
        }
        Ok(())
    });
    bar.finish_and_clear();
    result
}

/// `kvctl restore DIR`: checks every file first, then loads the records in batches, at most
/// [`RESTORE_IN_FLIGHT`] at once.
pub async fn restore(client: &Client, args: RestoreArgs, format: OutputFormat) -> anyhow::Result<Outcome> {
    let manifest = read_manifest(&args.dir)?;
    verify(&args.dir, &manifest)?;
    if !args.allow_existing {
        let present = client
            .count(&KeyRange::all(), &CountOptions::new())
            .await
            .context("checking that the cluster is empty")?;
        if present.count > 0 {
            bail!(
                "the cluster holds {} keys: restore loads into an empty cluster (or give --allow-existing)",
                present.count
            );
        }
    }
    let started = Instant::now();
    // Keys whose expiry the target's oracle has passed are not written.
    let now_ts = client
        .timestamp()
        .await
        .context("taking the restore's timestamp")?;
    let with_expiry = manifest.format == FORMAT;
    let bar = progress::bar(Some(manifest.keys), progress::LOAD_TEMPLATE);
    let mut pacer = Pacer::new(args.max_rate_mib);
    // Owned: dropping the set (an error below) aborts the batches still running.
    let mut in_flight = tokio::task::JoinSet::new();
    let mut restored = 0u64;
    let mut expired = 0u64;
    let result: anyhow::Result<()> = async {
        let mut batch: Vec<Record> = Vec::new();
        let mut batch_bytes = 0;
        for meta in &manifest.files {
            let mut records = Records::open(&args.dir, meta, with_expiry)?;
            while let Some(record) = records.next_record()? {
                if record
                    .expires_at_ts
                    .is_some_and(|expires_at| expires_at <= now_ts)
                {
                    expired += 1;
                    continue;
                }
                batch_bytes += record.key.len() + record.value.len();
                batch.push(record);
                if batch.len() >= RESTORE_BATCH_KEYS || batch_bytes >= RESTORE_BATCH_BYTES {
                    pacer.moved(batch_bytes as u64).await;
                    while in_flight.len() >= RESTORE_IN_FLIGHT {
                        restored += settle(&mut in_flight).await?;
                        bar.set_position(restored + expired);
                    }
                    in_flight.spawn(put_batch(client.clone(), std::mem::take(&mut batch)));
                    batch_bytes = 0;
                }
            }
        }
        if !batch.is_empty() {
            in_flight.spawn(put_batch(client.clone(), batch));
        }
        while !in_flight.is_empty() {
            restored += settle(&mut in_flight).await?;
            bar.set_position(restored + expired);
        }
        Ok(())
    }
    .await;
    bar.finish_and_clear();
    result.with_context(|| {
        format!(
            "restore stopped after {restored} keys were written (batches in flight may or may \
             not have been): running it again with --allow-existing writes every key again"
        )
    })?;
    output::emit(&summary(
        &manifest,
        &args.dir,
        started.elapsed(),
        Some(expired),
        format,
    ))?;
    Ok(Outcome::Success)
}

/// Writes one batch of records: those without an expiry in one batch put (atomic per
/// shard), the others one put each with their absolute expiry.
async fn put_batch(client: Client, batch: Vec<Record>) -> anyhow::Result<u64> {
    let keys = batch.len() as u64;
    let (expiring, lasting): (Vec<Record>, Vec<Record>) = batch
        .into_iter()
        .partition(|record| record.expires_at_ts.is_some());
    if !lasting.is_empty() {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = lasting
            .into_iter()
            .map(|record| (record.key, record.value))
            .collect();
        client.batch_put(pairs).await.context("writing a batch")?;
    }
    for record in expiring {
        let expires_at_ts = record.expires_at_ts.unwrap_or(0);
        client
            .put_expiring_at(&record.key, record.value, expires_at_ts)
            .await
            .with_context(|| format!("writing {} with its expiry", String::from_utf8_lossy(&record.key)))?;
    }
    Ok(keys)
}

/// Waits for one batch in flight; its key count.
async fn settle(in_flight: &mut tokio::task::JoinSet<anyhow::Result<u64>>) -> anyhow::Result<u64> {
    match in_flight.join_next().await {
        Some(done) => done.context("a batch task failed")?,
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records written are read back in order; a flipped byte is caught by the CRC.
    #[test]
    fn records_round_trip_and_corruption_is_caught() {
        let dir = std::env::temp_dir().join(format!("kvctl-backup-{}", rand::random::<u64>()));
        fs::create_dir_all(&dir).expect("dir");
        let mut writer = Writer {
            dir: dir.clone(),
            file: None,
            done: Vec::new(),
        };
        let records: Vec<Record> = (0..100u32)
            .map(|i| Record {
                key: format!("key-{i:03}").into_bytes(),
                value: vec![u8::try_from(i % 256).unwrap_or(0); i as usize],
                expires_at_ts: (i % 3 == 0).then_some((u64::from(i) + 1) << 20),
            })
            .collect();
        for record in &records {
            writer
                .record(&record.key, &record.value, record.expires_at_ts)
                .expect("record");
        }
        writer.close_file().expect("close");
        let meta = writer.done[0].clone();
        assert_eq!(meta.keys, 100);
        let mut read = Vec::new();
        let mut reader = Records::open(&dir, &meta, true).expect("open");
        while let Some(record) = reader.next_record().expect("read") {
            read.push(record);
        }
        assert_eq!(read, records);

        let path = dir.join(&meta.name);
        let mut bytes = fs::read(&path).expect("read file");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        fs::write(&path, &bytes).expect("write");
        let mut reader = Records::open(&dir, &meta, true).expect("open");
        let error = loop {
            match reader.next_record() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("a corrupt file read as whole"),
                Err(err) => break err,
            }
        };
        assert!(error.to_string().contains("CRC-32"), "{error}");
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// A file of the format before expiries (key and value per record) still reads, its
    /// keys without an expiry.
    #[test]
    fn records_without_expiry_still_read() {
        let dir = std::env::temp_dir().join(format!("kvctl-backup-v1-{}", rand::random::<u64>()));
        fs::create_dir_all(&dir).expect("dir");
        let mut bytes = Vec::new();
        for (key, value) in [(&b"a"[..], &b"1"[..]), (b"bb", b"")] {
            for part in [key, value] {
                bytes.extend_from_slice(&u32::try_from(part.len()).expect("len").to_be_bytes());
                bytes.extend_from_slice(part);
            }
        }
        fs::write(dir.join("data-000000.rkv"), &bytes).expect("write");
        let meta = DataFile {
            name: "data-000000.rkv".to_string(),
            keys: 2,
            bytes: bytes.len() as u64,
            crc32: crc32fast::hash(&bytes),
        };
        let mut reader = Records::open(&dir, &meta, false).expect("open");
        let mut read = Vec::new();
        while let Some(record) = reader.next_record().expect("read") {
            read.push(record);
        }
        let expected = vec![
            Record {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                expires_at_ts: None,
            },
            Record {
                key: b"bb".to_vec(),
                value: Vec::new(),
                expires_at_ts: None,
            },
        ];
        assert_eq!(read, expected);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// A manifest naming a file outside the backup is refused.
    #[test]
    fn manifests_cannot_point_outside_the_backup() {
        let meta = DataFile {
            name: "../etc/passwd".to_string(),
            keys: 1,
            bytes: 1,
            crc32: 0,
        };
        assert!(Records::open(Path::new("/tmp"), &meta, true).is_err());
    }
}
