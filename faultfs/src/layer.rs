//! The volatile layer of one file: everything written or truncated since the file's last sync,
//! kept in memory on top of the durable backing file. Pure data structure, no IO: the filesystem
//! asks it how to serve a read ([`VolatileFile::read_plan`]) and what to write at a sync
//! ([`VolatileFile::sync_plan`]).
//!
//! The model: the backing file holds `durable_len` bytes that survive a power cut. Since the last
//! sync the file was written (`extents`, non-overlapping), possibly shrunk (`visible_backing_len`,
//! the lowest size since the last sync: backing bytes at or past it are gone, even if the file grew
//! again, because a truncate followed by an extension reads zeros) and has the size `len`.
//! Invariant: `visible_backing_len <= durable_len`, `visible_backing_len <= len`, and every extent
//! ends at or before `len`.

use std::collections::BTreeMap;

/// Where one piece of a read comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadPiece<'a> {
    /// `len` bytes of the backing file at `offset`.
    Backing { offset: u64, len: u64 },
    /// Bytes from the volatile layer.
    Volatile(&'a [u8]),
    /// `len` zero bytes (a hole left by truncate-then-extend or a write past the end).
    Zeros { len: u64 },
}

/// What a sync must do to the backing file, in this order, to make it equal to the file seen
/// through the mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPlan {
    /// Shrink the backing file to this size first (the file was truncated below its durable size).
    pub truncate_to: Option<u64>,
    /// Then write these extents.
    pub writes: Vec<(u64, Vec<u8>)>,
    /// Finally set the size to this, when the writes alone do not leave the file at this size.
    pub extend_to: Option<u64>,
    /// The file's size after the plan ran.
    pub final_len: u64,
}

impl SyncPlan {
    /// Bytes this plan writes.
    pub fn written_bytes(&self) -> u64 {
        self.writes.iter().map(|(_, data)| data.len() as u64).sum()
    }
}

/// Unsynced state of one file.
#[derive(Debug, Clone)]
pub struct VolatileFile {
    durable_len: u64,
    visible_backing_len: u64,
    len: u64,
    extents: BTreeMap<u64, Vec<u8>>,
}

impl VolatileFile {
    /// A clean layer over a backing file of `durable_len` bytes.
    pub fn new(durable_len: u64) -> Self {
        Self {
            durable_len,
            visible_backing_len: durable_len,
            len: durable_len,
            extents: BTreeMap::new(),
        }
    }

    /// The file's size as seen through the mount.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the file seen through the mount is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held only in memory (what a power cut now would lose, not counting truncations).
    pub fn volatile_bytes(&self) -> u64 {
        self.extents.values().map(|data| data.len() as u64).sum()
    }

    /// True when the layer differs from the backing file.
    pub fn is_dirty(&self) -> bool {
        !self.extents.is_empty() || self.len != self.durable_len
    }

    /// Records a write of `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        self.cut_out(offset, end);
        // Merge with the extent that ends exactly where this one starts, and the one that starts
        // exactly where it ends, so sequential appends stay one extent.
        let mut start = offset;
        let mut merged = Vec::new();
        if let Some((&left_start, left)) = self.extents.range(..offset).next_back() {
            if left_start + left.len() as u64 == offset {
                start = left_start;
                merged = self.extents.remove(&left_start).unwrap_or_default();
            }
        }
        merged.extend_from_slice(data);
        if let Some(right) = self.extents.remove(&end) {
            merged.extend_from_slice(&right);
        }
        self.extents.insert(start, merged);
        self.len = self.len.max(end);
        self.debug_check();
    }

    /// Records a change of the file's size to `new_len` (truncate or extend).
    pub fn set_len(&mut self, new_len: u64) {
        if new_len < self.len {
            self.cut_out(new_len, self.len);
            self.visible_backing_len = self.visible_backing_len.min(new_len);
        }
        self.len = new_len;
        self.debug_check();
    }

    /// How to serve a read of up to `size` bytes at `offset`: pieces in file order, covering
    /// `offset..min(offset + size, len)`.
    pub fn read_plan(&self, offset: u64, size: u64) -> Vec<ReadPiece<'_>> {
        let end = offset.saturating_add(size).min(self.len);
        let mut pieces = Vec::new();
        let mut pos = offset;
        while pos < end {
            if let Some((&ext_start, data)) = self.extents.range(..=pos).next_back() {
                let ext_end = ext_start + data.len() as u64;
                if ext_end > pos {
                    let from = (pos - ext_start) as usize;
                    let to = (end.min(ext_end) - ext_start) as usize;
                    pieces.push(ReadPiece::Volatile(&data[from..to]));
                    pos = ext_start + to as u64;
                    continue;
                }
            }
            let gap_end = self
                .extents
                .range(pos..)
                .next()
                .map_or(end, |(&start, _)| start.min(end));
            let backing_end = gap_end.min(self.visible_backing_len);
            if pos < backing_end {
                pieces.push(ReadPiece::Backing {
                    offset: pos,
                    len: backing_end - pos,
                });
                pos = backing_end;
            }
            if pos < gap_end {
                pieces.push(ReadPiece::Zeros { len: gap_end - pos });
                pos = gap_end;
            }
        }
        pieces
    }

    /// What a sync must do to the backing file; the layer is consumed (after a successful sync the
    /// file is clean).
    pub fn sync_plan(self) -> SyncPlan {
        let truncate_to = (self.visible_backing_len < self.durable_len).then_some(self.visible_backing_len);
        let size_after_writes = self
            .extents
            .iter()
            .map(|(start, data)| start + data.len() as u64)
            .fold(self.visible_backing_len, u64::max);
        let extend_to = (size_after_writes != self.len).then_some(self.len);
        debug_assert!(
            size_after_writes <= self.len,
            "an extent ends past the file's size"
        );
        SyncPlan {
            truncate_to,
            writes: self.extents.into_iter().collect(),
            extend_to,
            final_len: self.len,
        }
    }

    /// Removes the bytes `start..end` from the extents (splitting the ones that straddle a bound).
    fn cut_out(&mut self, start: u64, end: u64) {
        let overlapping: Vec<u64> = self
            .extents
            .range(..end)
            .rev()
            .take_while(|(&ext_start, data)| ext_start + data.len() as u64 > start)
            .map(|(&ext_start, _)| ext_start)
            .collect();
        for ext_start in overlapping {
            let Some(data) = self.extents.remove(&ext_start) else {
                continue;
            };
            let ext_end = ext_start + data.len() as u64;
            if ext_end > end {
                self.extents
                    .insert(end, data[(end - ext_start) as usize..].to_vec());
            }
            if ext_start < start {
                let mut left = data;
                left.truncate((start - ext_start) as usize);
                self.extents.insert(ext_start, left);
            }
        }
    }

    fn debug_check(&self) {
        debug_assert!(self.visible_backing_len <= self.durable_len);
        debug_assert!(self.visible_backing_len <= self.len);
        let mut previous_end = 0;
        for (&start, data) in &self.extents {
            debug_assert!(start >= previous_end, "extents overlap");
            debug_assert!(!data.is_empty(), "empty extent");
            previous_end = start + data.len() as u64;
        }
        debug_assert!(previous_end <= self.len, "an extent ends past the file's size");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies a read plan to `backing` (the durable file's bytes).
    fn read(layer: &VolatileFile, backing: &[u8], offset: u64, size: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in layer.read_plan(offset, size) {
            match piece {
                ReadPiece::Backing { offset, len } => {
                    out.extend_from_slice(&backing[offset as usize..(offset + len) as usize])
                }
                ReadPiece::Volatile(data) => out.extend_from_slice(data),
                ReadPiece::Zeros { len } => out.resize(out.len() + len as usize, 0),
            }
        }
        out
    }

    /// Applies a sync plan to `backing`, as the filesystem does to the backing file.
    fn apply(plan: SyncPlan, backing: &mut Vec<u8>) {
        if let Some(len) = plan.truncate_to {
            backing.truncate(len as usize);
        }
        for (offset, data) in plan.writes {
            let end = offset as usize + data.len();
            if backing.len() < end {
                backing.resize(end, 0);
            }
            backing[offset as usize..end].copy_from_slice(&data);
        }
        if let Some(len) = plan.extend_to {
            backing.resize(len as usize, 0);
        }
        assert_eq!(backing.len() as u64, plan.final_len);
    }

    enum Op {
        Write(u64, &'static [u8]),
        SetLen(u64),
    }

    /// The file seen through the layer equals a plain in-memory file after the same operations,
    /// and a sync makes the backing file equal to it; cases as data, the case index in messages.
    #[test]
    fn layer_matches_a_plain_file_and_sync_reproduces_it() {
        let cases: Vec<(&[u8], Vec<Op>)> = vec![
            (b"", vec![Op::Write(0, b"hello")]),
            (b"abcdef", vec![Op::Write(2, b"XY")]),
            (b"abcdef", vec![Op::Write(4, b"XYZW")]),
            (b"abcdef", vec![Op::Write(10, b"Q")]),
            (b"abcdef", vec![Op::SetLen(2), Op::SetLen(5)]),
            (b"abcdef", vec![Op::SetLen(2), Op::Write(4, b"Z")]),
            (b"abcdef", vec![Op::Write(0, b"12345678"), Op::SetLen(3)]),
            (
                b"abcdef",
                vec![Op::Write(1, b"1"), Op::Write(3, b"3"), Op::Write(0, b"xxxxx")],
            ),
            (
                b"abcdef",
                vec![Op::Write(0, b"ab"), Op::Write(2, b"cd"), Op::Write(4, b"ef")],
            ),
            (b"abcdef", vec![Op::SetLen(0)]),
            (b"abcdef", vec![Op::SetLen(9)]),
            (
                b"abcdefgh",
                vec![Op::Write(2, b"12"), Op::Write(5, b"34"), Op::Write(3, b"ZZZ")],
            ),
        ];
        for (case, (durable, ops)) in cases.into_iter().enumerate() {
            let mut layer = VolatileFile::new(durable.len() as u64);
            let mut model = durable.to_vec();
            for op in ops {
                match op {
                    Op::Write(offset, data) => {
                        layer.write(offset, data);
                        let end = offset as usize + data.len();
                        if model.len() < end {
                            model.resize(end, 0);
                        }
                        model[offset as usize..end].copy_from_slice(data);
                    }
                    Op::SetLen(len) => {
                        layer.set_len(len);
                        model.resize(len as usize, 0);
                    }
                }
            }
            assert_eq!(layer.len(), model.len() as u64, "case {case}: len");
            assert_eq!(read(&layer, durable, 0, 1 << 20), model, "case {case}: full read");
            for offset in 0..model.len() as u64 {
                let expected = &model[offset as usize..model.len().min(offset as usize + 3)];
                assert_eq!(
                    read(&layer, durable, offset, 3),
                    expected,
                    "case {case}: read at {offset}"
                );
            }
            let mut backing = durable.to_vec();
            apply(layer.sync_plan(), &mut backing);
            assert_eq!(backing, model, "case {case}: backing after sync");
        }
    }

    /// Random writes, size changes, syncs and drops against a plain model of the file and of the
    /// durable bytes (a fixed-seed generator, so a failure reproduces); the step in every message.
    #[test]
    fn random_operations_match_the_model_across_syncs_and_drops() {
        let mut seed: u64 = 0x5eed_f00d;
        let mut next = move |bound: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % bound
        };
        let mut durable: Vec<u8> = Vec::new();
        let mut model: Vec<u8> = Vec::new();
        let mut layer = VolatileFile::new(0);
        for step in 0..5000 {
            match next(10) {
                0..=4 => {
                    let offset = next(64);
                    let data: Vec<u8> = (0..next(16) + 1).map(|_| next(255) as u8 + 1).collect();
                    layer.write(offset, &data);
                    let end = offset as usize + data.len();
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[offset as usize..end].copy_from_slice(&data);
                }
                5 | 6 => {
                    let len = next(80);
                    layer.set_len(len);
                    model.resize(len as usize, 0);
                }
                7 => {
                    apply(
                        std::mem::replace(&mut layer, VolatileFile::new(0)).sync_plan(),
                        &mut durable,
                    );
                    assert_eq!(durable, model, "step {step}: backing after sync");
                    layer = VolatileFile::new(durable.len() as u64);
                }
                8 => {
                    layer = VolatileFile::new(durable.len() as u64);
                    model = durable.clone();
                }
                _ => {
                    let offset = next(90);
                    let size = next(40);
                    let end = model.len().min((offset + size) as usize);
                    let expected = model.get(offset as usize..end).unwrap_or_default();
                    assert_eq!(
                        read(&layer, &durable, offset, size),
                        expected,
                        "step {step}: read"
                    );
                }
            }
            assert_eq!(layer.len(), model.len() as u64, "step {step}: len");
        }
    }

    /// Sequential appends stay one extent, so reads and syncs do not degrade with many small writes.
    #[test]
    fn sequential_appends_merge_into_one_extent() {
        let mut layer = VolatileFile::new(0);
        for i in 0..100u64 {
            layer.write(i * 4, b"abcd");
        }
        assert_eq!(layer.extents.len(), 1);
        assert_eq!(layer.volatile_bytes(), 400);
    }

    /// A clean layer has nothing to lose; a truncation alone makes it dirty.
    #[test]
    fn dirtiness_tracks_data_and_size() {
        let mut layer = VolatileFile::new(10);
        assert!(!layer.is_dirty());
        layer.set_len(4);
        assert!(layer.is_dirty());
        assert_eq!(layer.volatile_bytes(), 0);
    }
}
