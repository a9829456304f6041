//! Workloads as data, and the pure generator of their operations.
//!
//! A [`Workload`] is a mix of operations ([`Mix`]) and a key choice ([`Distribution`]).
//! YCSB's core workloads follow the YCSB definitions (A 50/50 read/update, B 95/5 read/update,
//! C read-only, D 95/5 read-latest/insert, E 95/5 short-scan/insert, F 50/50
//! read/read-modify-write, zipfian constant 0.99), W is 100% update with uniform keys, and
//! `put` / `get` / `stale-get` are the plain single-operation loads. The transactional ones
//! follow YCSB-T's "closed economy" idea: `t` moves value between two records (read both,
//! write both, one transaction at repeatable read: cross-shard when they fall on two shards),
//! `t-ru`, `t-rc` and `t-ser` the same at read uncommitted, read committed and serializable,
//! `t1` is a one-record read-modify-write transaction (repeatable read, single-shard).
//!
//! Keys are `user` + 16 hex digits of the FNV-1a hash of the record number (YCSB's hashed
//! insert order), so hot records are spread over the key space and over shards, and a scan
//! starts at a random place. Everything here is deterministic given the seed: no IO, no time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// YCSB's zipfian constant.
pub const ZIPFIAN_THETA: f64 = 0.99;
/// Longest scan of workload E (YCSB's `maxscanlength` for E), in records.
pub const MAX_SCAN_RECORDS: u32 = 100;

/// A benchmark workload.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// 100% put (uniform keys).
    Put,
    /// 100% linearizable get (uniform keys).
    Get,
    /// 100% stale (serializable) get (uniform keys).
    StaleGet,
    /// YCSB A: 50% read, 50% update.
    A,
    /// YCSB B: 95% read, 5% update.
    B,
    /// YCSB C: 100% read.
    C,
    /// YCSB D: 95% read of the latest records, 5% insert.
    D,
    /// YCSB E: 95% short scan, 5% insert.
    E,
    /// YCSB F: 50% read, 50% read-modify-write.
    F,
    /// W: 100% update, uniform keys.
    W,
    /// T: a transaction reading two records and writing both (repeatable read).
    T,
    /// T at read uncommitted.
    TRu,
    /// T at read committed.
    TRc,
    /// T at serializable.
    TSer,
    /// T1: a transaction reading one record and writing it (repeatable read; one shard).
    T1,
}

/// Percentages of each operation kind in a workload (they sum to 100).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Point reads.
    pub read: u32,
    /// Overwrites of existing records.
    pub update: u32,
    /// New records.
    pub insert: u32,
    /// Short ordered scans.
    pub scan: u32,
    /// A read, then a write of the same record.
    pub read_modify_write: u32,
    /// A transaction reading records and writing them.
    pub transaction: u32,
}

impl Mix {
    const fn new(read: u32, update: u32, insert: u32, scan: u32, read_modify_write: u32) -> Mix {
        Mix {
            read,
            update,
            insert,
            scan,
            read_modify_write,
            transaction: 0,
        }
    }

    const fn transactions() -> Mix {
        Mix {
            transaction: 100,
            ..Mix::new(0, 0, 0, 0, 0)
        }
    }

    fn total(self) -> u32 {
        self.read + self.update + self.insert + self.scan + self.read_modify_write + self.transaction
    }
}

/// How keys are chosen.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    /// Scrambled zipfian, constant 0.99 (YCSB's default).
    Zipfian,
    /// Every record equally likely.
    Uniform,
    /// Zipfian over the most recently inserted records (YCSB D).
    Latest,
}

impl Distribution {
    /// `zipfian`, `uniform`, `latest`.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Zipfian => "zipfian",
            Distribution::Uniform => "uniform",
            Distribution::Latest => "latest",
        }
    }
}

/// How a read is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// Linearizable: ringkv's leader ReadIndex, etcd's default (`serializable = false`).
    Linearizable,
    /// Possibly stale: ringkv's `--stale` (any replica), etcd's `serializable = true`.
    Stale,
}

impl Workload {
    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::StaleGet => "stale-get",
            Workload::A => "a",
            Workload::B => "b",
            Workload::C => "c",
            Workload::D => "d",
            Workload::E => "e",
            Workload::F => "f",
            Workload::W => "w",
            Workload::T => "t",
            Workload::TRu => "t-ru",
            Workload::TRc => "t-rc",
            Workload::TSer => "t-ser",
            Workload::T1 => "t1",
        }
    }

    /// A human description, for tables.
    pub fn describe(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "linearizable get",
            Workload::StaleGet => "stale get",
            Workload::A => "YCSB A (50/50 read/update)",
            Workload::B => "YCSB B (95/5 read/update)",
            Workload::C => "YCSB C (read only)",
            Workload::D => "YCSB D (read latest/insert)",
            Workload::E => "YCSB E (scan/insert)",
            Workload::F => "YCSB F (read-modify-write)",
            Workload::W => "W (100% update)",
            Workload::T => "T (two-record transfer transaction, repeatable read)",
            Workload::TRu => "T-RU (two-record transfer transaction, read uncommitted)",
            Workload::TRc => "T-RC (two-record transfer transaction, read committed)",
            Workload::TSer => "T-SER (two-record transfer transaction, serializable)",
            Workload::T1 => "T1 (one-record read-modify-write transaction)",
        }
    }

    /// The operation mix.
    pub fn mix(self) -> Mix {
        match self {
            Workload::Put | Workload::W => Mix::new(0, 100, 0, 0, 0),
            Workload::Get | Workload::StaleGet | Workload::C => Mix::new(100, 0, 0, 0, 0),
            Workload::A => Mix::new(50, 50, 0, 0, 0),
            Workload::B => Mix::new(95, 5, 0, 0, 0),
            Workload::D => Mix::new(95, 0, 5, 0, 0),
            Workload::E => Mix::new(0, 0, 5, 95, 0),
            Workload::F => Mix::new(50, 0, 0, 0, 50),
            Workload::T | Workload::TRu | Workload::TRc | Workload::TSer | Workload::T1 => {
                Mix::transactions()
            }
        }
    }

    /// The key choice when none is asked for: YCSB's own, uniform for the plain loads.
    pub fn default_distribution(self) -> Distribution {
        match self {
            Workload::Put
            | Workload::Get
            | Workload::StaleGet
            | Workload::W
            | Workload::T
            | Workload::TRu
            | Workload::TRc
            | Workload::TSer
            | Workload::T1 => Distribution::Uniform,
            Workload::D => Distribution::Latest,
            Workload::A | Workload::B | Workload::C | Workload::E | Workload::F => Distribution::Zipfian,
        }
    }

    /// How this workload's reads are served.
    pub fn read_consistency(self) -> Consistency {
        match self {
            Workload::StaleGet => Consistency::Stale,
            _ => Consistency::Linearizable,
        }
    }

    /// Whether the workload reads records (so they must be loaded first).
    pub fn reads(self) -> bool {
        let mix = self.mix();
        mix.read + mix.scan + mix.read_modify_write + mix.transaction > 0
    }

    /// Records one transaction of this workload reads and writes (0: not transactional).
    pub fn txn_records(self) -> usize {
        match self {
            Workload::T | Workload::TRu | Workload::TRc | Workload::TSer => 2,
            Workload::T1 => 1,
            _ => 0,
        }
    }

    /// How isolated this workload's transactions are (repeatable read for the
    /// non-transactional ones, where it is not used).
    pub fn txn_isolation(self) -> TxnIsolation {
        match self {
            Workload::TRu => TxnIsolation::ReadUncommitted,
            Workload::TRc => TxnIsolation::ReadCommitted,
            Workload::TSer => TxnIsolation::Serializable,
            _ => TxnIsolation::RepeatableRead,
        }
    }
}

/// One operation to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read `key`.
    Read {
        /// The key.
        key: Vec<u8>,
        /// How.
        consistency: Consistency,
    },
    /// Overwrite `key`.
    Update {
        /// The key.
        key: Vec<u8>,
    },
    /// Write a new record.
    Insert {
        /// The key.
        key: Vec<u8>,
    },
    /// Read up to `records` records in key order from `start`.
    Scan {
        /// The first key.
        start: Vec<u8>,
        /// Most records returned.
        records: u32,
    },
    /// Read `key`, then write it.
    ReadModifyWrite {
        /// The key.
        key: Vec<u8>,
    },
    /// One transaction: read every key, then write every key.
    Transaction {
        /// Distinct keys.
        keys: Vec<Vec<u8>>,
        /// How isolated.
        isolation: TxnIsolation,
    },
}

/// The isolation level of a transactional workload, as the seed's table names them
/// (systems with fewer levels run each as the nearest one they offer that is at least as strong).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnIsolation {
    /// Dirty reads allowed.
    ReadUncommitted,
    /// Each read sees committed data, not one snapshot.
    ReadCommitted,
    /// One snapshot; first committer wins.
    RepeatableRead,
    /// Snapshot plus read validation.
    Serializable,
}

/// 64-bit FNV-1a of the record number's little-endian bytes.
pub fn fnv1a(value: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in value.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The key of record `index`.
pub fn record_key(index: u64) -> Vec<u8> {
    format!("user{:016x}", fnv1a(index)).into_bytes()
}

/// YCSB's zipfian generator (Gray et al., "Quickly generating billion-record synthetic
/// databases"): item 0 is the most popular. The zeta constant is computed once, in O(items).
#[derive(Clone, Debug)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
}

impl Zipfian {
    /// A generator over `0..items` (`items` ≥ 1) with constant `theta` in (0, 1).
    pub fn new(items: u64, theta: f64) -> Zipfian {
        debug_assert!(items >= 1, "a zipfian needs at least one item");
        debug_assert!(theta > 0.0 && theta < 1.0, "theta out of (0, 1)");
        let items = items.max(1);
        let zeta = |count: u64| {
            (1..=count)
                .map(|rank| 1.0 / (rank as f64).powf(theta))
                .sum::<f64>()
        };
        let zeta_n = zeta(items);
        let zeta_2 = zeta(2);
        let eta = (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n);
        Zipfian {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta_n,
            eta,
        }
    }

    /// The number of items.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// The next item, in `0..items`.
    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        let uniform: f64 = rng.random();
        let scaled = uniform * self.zeta_n;
        if scaled < 1.0 {
            return 0;
        }
        if scaled < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let item = (self.items as f64 * (self.eta * uniform - self.eta + 1.0).powf(self.alpha)) as u64;
        item.min(self.items - 1)
    }
}

/// The records of one benchmark: `records` loaded ones plus those inserted since, shared by
/// every worker of a run.
#[derive(Clone, Debug)]
pub struct KeySpace {
    records: u64,
    next_insert: Arc<AtomicU64>,
    zipfian: Zipfian,
}

impl KeySpace {
    /// `records` loaded records (at least 1).
    pub fn new(records: u64) -> KeySpace {
        let records = records.max(1);
        KeySpace {
            records,
            next_insert: Arc::new(AtomicU64::new(records)),
            zipfian: Zipfian::new(records, ZIPFIAN_THETA),
        }
    }

    /// Records loaded before the runs.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Records that exist now (loaded and inserted).
    pub fn existing(&self) -> u64 {
        self.next_insert.load(Ordering::Relaxed)
    }

    fn take_insert(&self) -> u64 {
        self.next_insert.fetch_add(1, Ordering::Relaxed)
    }

    fn choose(&self, distribution: Distribution, rng: &mut impl Rng) -> u64 {
        match distribution {
            Distribution::Uniform => rng.random_range(0..self.records),
            // Scrambled: the popular items are spread over the key space (YCSB's
            // ScrambledZipfianGenerator).
            Distribution::Zipfian => fnv1a(self.zipfian.sample(rng)) % self.records,
            Distribution::Latest => {
                let newest = self.existing().saturating_sub(1);
                newest.saturating_sub(self.zipfian.sample(rng))
            }
        }
    }
}

/// Generates one worker's operations.
#[derive(Debug)]
pub struct OpGenerator {
    workload: Workload,
    distribution: Distribution,
    keys: KeySpace,
    rng: StdRng,
}

impl OpGenerator {
    /// A generator for `workload` with keys chosen by `distribution`, seeded with `seed`.
    pub fn new(workload: Workload, distribution: Distribution, keys: KeySpace, seed: u64) -> OpGenerator {
        OpGenerator {
            workload,
            distribution,
            keys,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The next operation.
    pub fn next_op(&mut self) -> Op {
        let mix = self.workload.mix();
        debug_assert_eq!(mix.total(), 100, "a mix is in percent");
        let mut roll = self.rng.random_range(0..100u32);
        if roll < mix.transaction {
            let wanted = self.workload.txn_records().min(self.keys.records() as usize);
            let mut keys: Vec<Vec<u8>> = Vec::with_capacity(wanted);
            while keys.len() < wanted {
                let key = record_key(self.keys.choose(self.distribution, &mut self.rng));
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            return Op::Transaction {
                keys,
                isolation: self.workload.txn_isolation(),
            };
        }
        roll -= mix.transaction;
        if roll < mix.insert {
            return Op::Insert {
                key: record_key(self.keys.take_insert()),
            };
        }
        roll -= mix.insert;
        let key = record_key(self.keys.choose(self.distribution, &mut self.rng));
        if roll < mix.read {
            return Op::Read {
                key,
                consistency: self.workload.read_consistency(),
            };
        }
        roll -= mix.read;
        if roll < mix.update {
            return Op::Update { key };
        }
        roll -= mix.update;
        if roll < mix.scan {
            return Op::Scan {
                start: key,
                records: self.rng.random_range(1..=MAX_SCAN_RECORDS),
            };
        }
        Op::ReadModifyWrite { key }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every mix sums to 100%.
    #[test]
    fn mixes_are_percentages() {
        use clap::ValueEnum;
        for workload in Workload::value_variants() {
            assert_eq!(workload.mix().total(), 100, "{workload:?}");
        }
    }

    /// The zipfian stays in range and favours item 0 (about 1/zeta(n) of the draws).
    #[test]
    fn zipfian_is_skewed_and_bounded() {
        let zipfian = Zipfian::new(1000, ZIPFIAN_THETA);
        let mut rng = StdRng::seed_from_u64(7);
        let draws = 100_000;
        let mut zeros = 0;
        for _ in 0..draws {
            let item = zipfian.sample(&mut rng);
            assert!(item < 1000);
            if item == 0 {
                zeros += 1;
            }
        }
        let expected = f64::from(draws) / zipfian.zeta_n;
        assert!(
            (f64::from(zeros) - expected).abs() < expected * 0.1,
            "{zeros} vs {expected}"
        );
    }

    /// Inserts take fresh record numbers; `latest` reads favour the newest records.
    #[test]
    fn inserts_are_new_and_latest_reads_them() {
        let keys = KeySpace::new(100);
        let mut generator = OpGenerator::new(Workload::D, Distribution::Latest, keys.clone(), 1);
        let mut inserts = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            if let Op::Insert { key } = generator.next_op() {
                assert!(inserts.insert(key), "an insert repeated a key");
            }
        }
        assert_eq!(keys.existing(), 100 + inserts.len() as u64);
        let mut rng = StdRng::seed_from_u64(3);
        let newest = keys.existing() - 1;
        let near_newest = (0..1000)
            .filter(|_| keys.choose(Distribution::Latest, &mut rng) + 10 > newest)
            .count();
        assert!(near_newest > 300, "{near_newest}");
    }

    /// Workload E scans 1..=100 records; F mixes reads with read-modify-writes only.
    #[test]
    fn scan_and_rmw_shapes() {
        let keys = KeySpace::new(50);
        let mut scans = OpGenerator::new(Workload::E, Distribution::Zipfian, keys.clone(), 2);
        let mut rmw = OpGenerator::new(Workload::F, Distribution::Zipfian, keys, 2);
        for _ in 0..500 {
            match scans.next_op() {
                Op::Scan { records, .. } => assert!((1..=MAX_SCAN_RECORDS).contains(&records)),
                Op::Insert { .. } => {}
                other => panic!("E generated {other:?}"),
            }
            match rmw.next_op() {
                Op::Read { .. } | Op::ReadModifyWrite { .. } => {}
                other => panic!("F generated {other:?}"),
            }
        }
    }

    /// The transactional workloads read and write distinct records, each at its own level.
    #[test]
    fn transactions_carry_their_level() {
        let cases = [
            (Workload::T, TxnIsolation::RepeatableRead, 2),
            (Workload::TRu, TxnIsolation::ReadUncommitted, 2),
            (Workload::TRc, TxnIsolation::ReadCommitted, 2),
            (Workload::TSer, TxnIsolation::Serializable, 2),
            (Workload::T1, TxnIsolation::RepeatableRead, 1),
        ];
        for (workload, level, records) in cases {
            let mut ops = OpGenerator::new(workload, Distribution::Uniform, KeySpace::new(10), 7);
            for _ in 0..100 {
                match ops.next_op() {
                    Op::Transaction { keys, isolation } => {
                        assert_eq!(isolation, level, "{workload:?}");
                        assert_eq!(keys.len(), records, "{workload:?}");
                        assert_ne!(keys.first(), keys.get(1), "{workload:?}");
                    }
                    other => panic!("{workload:?} generated {other:?}"),
                }
            }
        }
    }
}
