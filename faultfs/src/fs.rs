//! The FUSE filesystem: a pass-through of the backing directory whose file data goes through a
//! [`VolatileFile`] layer per inode until the file is synced.
//!
//! One mutex guards all state and the FUSE session runs one request thread, so requests are
//! serialised; this is a test filesystem, correctness first. The one exception is a slow sync
//! ([`State::set_sync_delay`]): its handler hands the request to [`SlowSyncs`] and returns, so
//! the delay holds up only the caller, never other requests. Every request replies with the
//! backing directory's errno when the backing call fails.
//!
//! Kernel caching is switched off where it could show dropped data after a drop: files are opened
//! with `FOPEN_DIRECT_IO` (no page cache, every read and write reaches this process) and
//! attributes and entries are cached for zero seconds. The price: `mmap` of files on the mount is
//! refused by the kernel, which neither sled nor openraft's storage uses.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, FileTimes, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use tracing::{info, warn};

use crate::error::Error;
use crate::layer::{ReadPiece, VolatileFile};
use crate::mount::FailedSyncData;
use crate::slow::{SlowSyncs, SyncTarget};
use crate::stats::{DropReport, Stats};

/// Attributes and entries are never cached by the kernel (see the module docs).
const TTL: Duration = Duration::ZERO;
/// The inode number of the root directory.
const ROOT_INO: u64 = 1;
/// The parent of an inode that no longer has a name (unlinked, or replaced by a rename).
const DETACHED: u64 = 0;
/// Largest read served at once (the kernel asks for at most its `max_read`, far below this).
const MAX_READ_BYTES: u64 = 16 << 20;

/// One inode the kernel knows about.
#[derive(Debug)]
struct Node {
    /// Parent directory's inode, or [`DETACHED`].
    parent: u64,
    /// Name in the parent directory.
    name: OsString,
    /// Unsynced changes of a regular file.
    layer: Option<VolatileFile>,
    /// Created through the mount and never synced: a drop removes it.
    created_unsynced: bool,
    /// Open handles on this inode.
    open_handles: u64,
    /// Lookups the kernel has not forgotten yet.
    lookups: u64,
    /// The backing file when this node was made: another one under the same name means the
    /// file was replaced behind the mount, and must not inherit this node's layer.
    backing: BackingId,
}

/// Which backing file a node stands for: its inode number and birth time. The number alone
/// is not enough: ext4 hands a freed inode number to the next file created, so a file
/// replaced behind the mount often gets the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BackingId {
    ino: u64,
    born: Option<std::time::SystemTime>,
}

impl BackingId {
    fn of(meta: &fs::Metadata) -> Self {
        BackingId {
            ino: meta.ino(),
            born: meta.created().ok(),
        }
    }
}

impl Node {
    fn new(parent: u64, name: OsString, backing: BackingId) -> Self {
        Self {
            parent,
            name,
            layer: None,
            created_unsynced: false,
            open_handles: 0,
            lookups: 0,
            backing,
        }
    }
}

/// An open directory: its listing taken at `opendir`, so offsets stay stable.
struct DirHandle {
    entries: Vec<(OsString, FileType, u64)>,
}

/// All state of a mounted filesystem; behind one mutex shared by the FUSE thread and [`Control`].
pub(crate) struct State {
    backing_root: PathBuf,
    nodes: HashMap<u64, Node>,
    entries: HashMap<(u64, OsString), u64>,
    next_ino: u64,
    files: HashMap<u64, (u64, File)>,
    dirs: HashMap<u64, DirHandle>,
    next_fh: u64,
    stats: Stats,
    /// File syncs fail with `EIO` (a failing disk) while set, and this says what happens to the
    /// file's unsynced data then.
    failing_syncs: Option<FailedSyncData>,
    /// How long every file and directory sync takes before it runs (a slow disk); zero: no delay.
    sync_delay: Duration,
    /// New space that writes may still take: `None` unlimited, `Some(0)` a full disk.
    space_left: Option<u64>,
}

impl State {
    pub(crate) fn new(backing_root: PathBuf) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT_INO,
            Node::new(ROOT_INO, OsString::new(), BackingId { ino: 0, born: None }),
        );
        Self {
            backing_root,
            nodes,
            entries: HashMap::new(),
            next_ino: ROOT_INO + 1,
            files: HashMap::new(),
            dirs: HashMap::new(),
            next_fh: 1,
            stats: Stats::default(),
            failing_syncs: None,
            sync_delay: Duration::ZERO,
            space_left: None,
        }
    }

    /// The backing path of `ino`, or `None` when it has no name any more.
    fn path(&self, ino: u64) -> Option<PathBuf> {
        let mut names = Vec::new();
        let mut current = ino;
        while current != ROOT_INO {
            let node = self.nodes.get(&current)?;
            if node.parent == DETACHED {
                return None;
            }
            names.push(node.name.as_os_str());
            current = node.parent;
        }
        let mut path = self.backing_root.clone();
        path.extend(names.iter().rev());
        Some(path)
    }

    fn path_or_enoent(&self, ino: u64) -> Result<PathBuf, Errno> {
        self.path(ino).ok_or(Errno::ENOENT)
    }

    fn child_path(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path_or_enoent(parent)?.join(name))
    }

    /// The inode of `parent/name` backed by the backing file `backing`, created on first
    /// sight (or anew when the backing file was replaced behind the mount).
    fn ino_of(&mut self, parent: u64, name: &OsStr, backing: BackingId) -> u64 {
        if let Some(&ino) = self.entries.get(&(parent, name.to_os_string())) {
            if self.nodes.get(&ino).is_some_and(|n| n.backing == backing) {
                return ino;
            }
            warn!(ino, name = ?name, "backing file replaced behind the mount: its unsynced data is dropped");
            self.forget_layer_unless_open(ino);
            self.detach(ino);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes
            .insert(ino, Node::new(parent, name.to_os_string(), backing));
        self.entries.insert((parent, name.to_os_string()), ino);
        ino
    }

    /// Takes `ino` out of the namespace (after an unlink, or when a rename replaced it).
    fn detach(&mut self, ino: u64) {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        let key = (node.parent, std::mem::take(&mut node.name));
        node.parent = DETACHED;
        if self.entries.get(&key) == Some(&ino) {
            self.entries.remove(&key);
        }
        self.collect(ino);
    }

    /// Drops the layer of a file that lost its name, unless an open handle can still read it
    /// (nobody else can reach its data any more: nothing to keep in memory).
    fn forget_layer_unless_open(&mut self, ino: u64) {
        if let Some(node) = self.nodes.get_mut(&ino).filter(|n| n.open_handles == 0) {
            node.layer = None;
        }
    }

    /// Forgets a detached inode nobody refers to any more.
    fn collect(&mut self, ino: u64) {
        let unused = self
            .nodes
            .get(&ino)
            .is_some_and(|n| n.parent == DETACHED && n.lookups == 0 && n.open_handles == 0);
        if unused {
            self.nodes.remove(&ino);
        }
    }

    /// The backing metadata of `ino`: by path, or through an open handle once it has no name.
    fn backing_metadata(&self, ino: u64) -> Result<Metadata, Errno> {
        if let Some(path) = self.path(ino) {
            return fs::symlink_metadata(path).map_err(Errno::from);
        }
        let (_, file) = self
            .files
            .values()
            .find(|(owner, _)| *owner == ino)
            .ok_or(Errno::ENOENT)?;
        file.metadata().map_err(Errno::from)
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let meta = self.backing_metadata(ino)?;
        let size = self
            .nodes
            .get(&ino)
            .and_then(|n| n.layer.as_ref())
            .map(VolatileFile::len);
        Ok(file_attr(ino, &meta, size))
    }

    /// Answers a lookup of `parent/name` (one more kernel reference to the inode).
    fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let path = self.child_path(parent, name)?;
        let meta = fs::symlink_metadata(&path).map_err(Errno::from)?;
        let ino = self.ino_of(parent, name, BackingId::of(&meta));
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups += 1;
        }
        self.attr(ino)
    }

    /// The volatile layer of `ino`, created over the current backing size on first use.
    fn layer_mut(
        &mut self,
        ino: u64,
        durable_len: impl FnOnce() -> Result<u64, Errno>,
    ) -> Result<&mut VolatileFile, Errno> {
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        if node.layer.is_none() {
            node.layer = Some(VolatileFile::new(durable_len()?));
        }
        node.layer.as_mut().ok_or(Errno::EIO)
    }

    fn set_size(&mut self, ino: u64, fh: Option<u64>, size: u64) -> Result<(), Errno> {
        let durable_len = match fh.and_then(|fh| self.files.get(&fh)) {
            Some((_, file)) => file.metadata().map_err(Errno::from)?.len(),
            None => self.backing_metadata(ino)?.len(),
        };
        self.layer_mut(ino, || Ok(durable_len))?.set_len(size);
        Ok(())
    }

    fn setattr(&mut self, ino: u64, change: AttrChange) -> Result<FileAttr, Errno> {
        if let Some(size) = change.size {
            self.set_size(ino, change.fh, size)?;
        }
        let path = self.path(ino);
        if let Some(mode) = change.mode {
            let path = path.as_ref().ok_or(Errno::ENOENT)?;
            fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777))
                .map_err(Errno::from)?;
        }
        if change.uid.is_some() || change.gid.is_some() {
            let path = path.as_ref().ok_or(Errno::ENOENT)?;
            std::os::unix::fs::lchown(path, change.uid, change.gid).map_err(Errno::from)?;
        }
        if change.atime.is_some() || change.mtime.is_some() {
            let path = path.as_ref().ok_or(Errno::ENOENT)?;
            let mut times = FileTimes::new();
            if let Some(atime) = change.atime {
                times = times.set_accessed(system_time(atime));
            }
            if let Some(mtime) = change.mtime {
                times = times.set_modified(system_time(mtime));
            }
            File::open(path)
                .and_then(|file| file.set_times(times))
                .map_err(Errno::from)?;
        }
        self.attr(ino)
    }

    /// Opens the backing file for a handle: read-write when allowed (a sync through any handle
    /// writes the whole inode's layer), never truncating or appending (both are volatile).
    fn open_backing(path: &Path, flags: i32) -> io::Result<File> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        match options.open(path) {
            Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
                let mut fallback = OpenOptions::new();
                match flags & libc::O_ACCMODE {
                    libc::O_WRONLY => fallback.write(true),
                    libc::O_RDWR => fallback.read(true).write(true),
                    _ => fallback.read(true),
                };
                fallback.open(path)
            }
            other => other,
        }
    }

    fn add_handle(&mut self, ino: u64, file: File) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.files.insert(fh, (ino, file));
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.open_handles += 1;
        }
        fh
    }

    fn open(&mut self, ino: u64, flags: i32) -> Result<u64, Errno> {
        let path = self.path_or_enoent(ino)?;
        let file = Self::open_backing(&path, flags).map_err(Errno::from)?;
        let fh = self.add_handle(ino, file);
        if flags & libc::O_TRUNC != 0 {
            self.set_size(ino, Some(fh), 0)?;
        }
        Ok(fh)
    }

    fn create(&mut self, parent: u64, name: &OsStr, mode: u32, flags: i32) -> Result<(FileAttr, u64), Errno> {
        let path = self.child_path(parent, name)?;
        if fs::symlink_metadata(&path).is_err() {
            self.check_room_for_an_entry()?;
        }
        let created = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path);
        let (file, is_new) = match created {
            Ok(file) => (file, true),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists && flags & libc::O_EXCL == 0 => {
                (Self::open_backing(&path, flags).map_err(Errno::from)?, false)
            }
            Err(err) => return Err(Errno::from(err)),
        };
        let backing = BackingId::of(&file.metadata().map_err(Errno::from)?);
        let ino = self.ino_of(parent, name, backing);
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups += 1;
            node.created_unsynced |= is_new;
        }
        let fh = self.add_handle(ino, file);
        if !is_new && flags & libc::O_TRUNC != 0 {
            self.set_size(ino, Some(fh), 0)?;
        }
        Ok((self.attr(ino)?, fh))
    }

    fn read(&self, ino: u64, fh: u64, offset: u64, size: u64) -> Result<Vec<u8>, Errno> {
        let (_, file) = self.files.get(&fh).ok_or(Errno::EBADF)?;
        let size = size.min(MAX_READ_BYTES);
        let Some(layer) = self.nodes.get(&ino).and_then(|n| n.layer.as_ref()) else {
            return read_backing(file, offset, size);
        };
        let mut out = Vec::with_capacity(size as usize);
        for piece in layer.read_plan(offset, size) {
            match piece {
                ReadPiece::Backing { offset, len } => {
                    let mut data = read_backing(file, offset, len)?;
                    // The backing file shrank under us (changed outside the mount): zeros, as a hole.
                    data.resize(len as usize, 0);
                    out.extend_from_slice(&data);
                }
                ReadPiece::Volatile(data) => out.extend_from_slice(data),
                ReadPiece::Zeros { len } => out.resize(out.len() + len as usize, 0),
            }
        }
        Ok(out)
    }

    fn write(&mut self, ino: u64, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let written = u32::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
        let (_, file) = self.files.get(&fh).ok_or(Errno::EBADF)?;
        let layer_len = self
            .nodes
            .get(&ino)
            .and_then(|n| n.layer.as_ref())
            .map(VolatileFile::len);
        // The backing size matters only when the layer is made (one fstat, not one per write).
        let durable_len = match layer_len {
            Some(_) => 0,
            None => file.metadata().map_err(Errno::from)?.len(),
        };
        if self.space_left.is_some() {
            let end = offset.saturating_add(data.len() as u64);
            self.take_space(end.saturating_sub(layer_len.unwrap_or(durable_len)))?;
        }
        self.layer_mut(ino, || Ok(durable_len))?.write(offset, data);
        self.stats.written_bytes += data.len() as u64;
        Ok(written)
    }

    fn release(&mut self, fh: u64) {
        if let Some((ino, _)) = self.files.remove(&fh) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.open_handles = node.open_handles.saturating_sub(1);
            }
            self.collect(ino);
        }
    }

    /// Writes the inode's volatile layer to the backing file and syncs it there too.
    pub(crate) fn fsync(&mut self, ino: u64, fh: u64, datasync: bool) -> Result<(), Errno> {
        if datasync {
            self.stats.fdatasyncs += 1;
        } else {
            self.stats.fsyncs += 1;
        }
        let (_, file) = self.files.get(&fh).ok_or(Errno::EBADF)?;
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        match self.failing_syncs {
            None => {}
            Some(FailedSyncData::Lost) => {
                // What a failing disk does under Linux at worst: the sync reports EIO and the
                // dirty pages are gone, so a later sync finds nothing left to write and succeeds.
                if let Some(layer) = node.layer.take() {
                    self.stats.dropped_bytes += layer.volatile_bytes();
                }
                self.stats.failed_syncs += 1;
                return Err(Errno::EIO);
            }
            Some(FailedSyncData::Kept) => {
                // The pages stay in the page cache: the process reads its writes back until
                // a drop (a power cut, or their eviction) loses them.
                self.stats.failed_syncs += 1;
                return Err(Errno::EIO);
            }
        }
        if let Some(layer) = node.layer.take() {
            let plan = layer.clone().sync_plan();
            let written = plan.written_bytes();
            if let Err(err) = apply_plan(file, plan) {
                // Keep the layer: applying a plan twice is harmless, and nothing may be lost silently.
                node.layer = Some(layer);
                warn!(ino, %err, "failed to write unsynced data to the backing file");
                return Err(Errno::from(err));
            }
            self.stats.synced_bytes += written;
        }
        node.created_unsynced = false;
        let synced = if datasync {
            file.sync_data()
        } else {
            file.sync_all()
        };
        synced.map_err(Errno::from)
    }

    fn mkdir(&mut self, parent: u64, name: &OsStr, mode: u32) -> Result<FileAttr, Errno> {
        let path = self.child_path(parent, name)?;
        self.check_room_for_an_entry()?;
        fs::DirBuilder::new()
            .mode(mode)
            .create(&path)
            .map_err(Errno::from)?;
        self.lookup(parent, name)
    }

    fn symlink(&mut self, parent: u64, name: &OsStr, target: &Path) -> Result<FileAttr, Errno> {
        let path = self.child_path(parent, name)?;
        self.check_room_for_an_entry()?;
        std::os::unix::fs::symlink(target, &path).map_err(Errno::from)?;
        self.lookup(parent, name)
    }

    fn remove(&mut self, parent: u64, name: &OsStr, is_dir: bool) -> Result<(), Errno> {
        let path = self.child_path(parent, name)?;
        let removed = if is_dir {
            fs::remove_dir(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(Errno::from)?;
        if let Some(&ino) = self.entries.get(&(parent, name.to_os_string())) {
            self.forget_layer_unless_open(ino);
            self.detach(ino);
        }
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        let from = self.child_path(parent, name)?;
        let to = self.child_path(new_parent, new_name)?;
        if flags.contains(RenameFlags::RENAME_EXCHANGE) || flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        if flags.contains(RenameFlags::RENAME_NOREPLACE) && fs::symlink_metadata(&to).is_ok() {
            return Err(Errno::EEXIST);
        }
        fs::rename(&from, &to).map_err(Errno::from)?;
        if let Some(&replaced) = self.entries.get(&(new_parent, new_name.to_os_string())) {
            self.detach(replaced);
        }
        if let Some(ino) = self.entries.remove(&(parent, name.to_os_string())) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.parent = new_parent;
                node.name = new_name.to_os_string();
            }
            self.entries.insert((new_parent, new_name.to_os_string()), ino);
        }
        Ok(())
    }

    fn opendir(&mut self, ino: u64) -> Result<u64, Errno> {
        let path = self.path_or_enoent(ino)?;
        let parent = self.nodes.get(&ino).map_or(ROOT_INO, |n| n.parent);
        let mut entries = vec![
            (OsString::from("."), FileType::Directory, ino),
            (OsString::from(".."), FileType::Directory, parent),
        ];
        for entry in fs::read_dir(&path).map_err(Errno::from)? {
            let entry = entry.map_err(Errno::from)?;
            let kind = entry
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            entries.push((entry.file_name(), kind, entry.ino()));
        }
        let fh = self.next_fh;
        self.next_fh += 1;
        self.dirs.insert(fh, DirHandle { entries });
        Ok(fh)
    }

    /// Throws away every unsynced change: the page-cache loss of a power cut.
    pub(crate) fn drop_unsynced(&mut self) -> DropReport {
        let mut report = DropReport::default();
        let mut created = Vec::new();
        for (&ino, node) in &mut self.nodes {
            if let Some(layer) = node.layer.take() {
                report.dropped_bytes += layer.volatile_bytes();
                report.reverted_files += u64::from(layer.is_dirty());
            }
            if node.created_unsynced && node.parent != DETACHED {
                created.push(ino);
            }
            node.created_unsynced = false;
        }
        for ino in created {
            let Some(path) = self.path(ino) else { continue };
            match fs::remove_file(&path) {
                Ok(()) => report.dropped_files += 1,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => warn!(path = %path.display(), %err, "failed to remove a never-synced file"),
            }
            self.detach(ino);
        }
        self.stats.drops += 1;
        self.stats.dropped_bytes += report.dropped_bytes;
        self.stats.dropped_files += report.dropped_files;
        info!(
            dropped_bytes = report.dropped_bytes,
            reverted_files = report.reverted_files,
            dropped_files = report.dropped_files,
            fsyncs = self.stats.fsyncs,
            fdatasyncs = self.stats.fdatasyncs,
            dir_fsyncs = self.stats.dir_fsyncs,
            "dropped unsynced data"
        );
        report
    }

    /// Syncs a directory (counted; metadata is durable anyway, see the crate docs).
    pub(crate) fn fsync_dir(&mut self, ino: u64) -> Result<(), Errno> {
        self.stats.dir_fsyncs += 1;
        let path = self.path_or_enoent(ino)?;
        File::open(path)
            .and_then(|dir| dir.sync_all())
            .map_err(Errno::from)
    }

    /// Makes file syncs fail with `EIO`, losing or keeping their unsynced data as `failing`
    /// says; `None`: syncs work again.
    pub(crate) fn set_failing_syncs(&mut self, failing: Option<FailedSyncData>) {
        if failing != self.failing_syncs {
            info!(?failing, "failing syncs changed");
        }
        self.failing_syncs = failing;
    }

    /// Makes every sync arriving from now on take `delay` before it runs; zero: no delay.
    pub(crate) fn set_sync_delay(&mut self, delay: Duration) {
        if delay != self.sync_delay {
            info!(delay_ms = delay.as_millis(), "sync delay changed");
        }
        self.sync_delay = delay;
    }

    /// Makes the disk full once writes have taken `headroom_bytes` more of new space (`0`: full
    /// now); `None` gives it unlimited space again.
    pub(crate) fn set_space_left(&mut self, space_left: Option<u64>) {
        if space_left != self.space_left {
            info!(?space_left, "space left changed");
        }
        self.space_left = space_left;
    }

    /// Takes `bytes` of new space, or fails with `ENOSPC` (counted) when less is left.
    fn take_space(&mut self, bytes: u64) -> Result<(), Errno> {
        let Some(left) = self.space_left else {
            return Ok(());
        };
        if bytes > left {
            self.stats.enospc_errors += 1;
            return Err(Errno::ENOSPC);
        }
        self.space_left = Some(left - bytes);
        Ok(())
    }

    /// A new directory entry (file, directory, symlink) needs room: `ENOSPC` on a full disk.
    fn check_room_for_an_entry(&mut self) -> Result<(), Errno> {
        if self.space_left == Some(0) {
            self.stats.enospc_errors += 1;
            return Err(Errno::ENOSPC);
        }
        Ok(())
    }

    /// When a sync arriving now may run: `None` at once, else after the sync delay (counted).
    fn sync_due(&mut self) -> Option<Instant> {
        if self.sync_delay.is_zero() {
            return None;
        }
        self.stats.slowed_syncs += 1;
        Some(Instant::now() + self.sync_delay)
    }

    pub(crate) fn stats(&self) -> Stats {
        let mut stats = self.stats.clone();
        stats.syncs_failing = self.failing_syncs.is_some();
        stats.failing_syncs_keep_unsynced = self.failing_syncs == Some(FailedSyncData::Kept);
        stats.sync_delay_ms = u64::try_from(self.sync_delay.as_millis()).unwrap_or(u64::MAX);
        stats.space_left_bytes = self.space_left;
        let layers = self.nodes.values().filter_map(|n| n.layer.as_ref());
        for layer in layers.filter(|layer| layer.is_dirty()) {
            stats.volatile_files += 1;
            stats.volatile_bytes += layer.volatile_bytes();
        }
        stats
    }
}

/// The changes of one `setattr`.
struct AttrChange {
    fh: Option<u64>,
    size: Option<u64>,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
}

fn system_time(time: TimeOrNow) -> SystemTime {
    match time {
        TimeOrNow::SpecificTime(time) => time,
        TimeOrNow::Now => SystemTime::now(),
    }
}

fn read_backing(file: &File, offset: u64, size: u64) -> Result<Vec<u8>, Errno> {
    let mut data = vec![0; size as usize];
    let mut filled = 0;
    while filled < data.len() {
        match file.read_at(&mut data[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(Errno::from(err)),
        }
    }
    data.truncate(filled);
    Ok(data)
}

/// Free blocks as `statfs` reports them: the backing filesystem's, fewer when a fill leaves
/// less space (`block_bytes` is the unit of block counts).
fn free_blocks(backing_free: u64, block_bytes: u64, space_left: Option<u64>) -> u64 {
    match space_left {
        Some(left) => backing_free.min(left / block_bytes.max(1)),
        None => backing_free,
    }
}

fn apply_plan(file: &File, plan: crate::layer::SyncPlan) -> io::Result<()> {
    if let Some(len) = plan.truncate_to {
        file.set_len(len)?;
    }
    for (offset, data) in &plan.writes {
        file.write_all_at(data, *offset)?;
    }
    if let Some(len) = plan.extend_to {
        file.set_len(len)?;
    }
    Ok(())
}

fn unix_time(secs: i64, nsecs: i64) -> SystemTime {
    let nanos = u32::try_from(nsecs).unwrap_or(0);
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH + Duration::new(secs, nanos),
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
    }
}

fn file_attr(ino: u64, meta: &Metadata, size_override: Option<u64>) -> FileAttr {
    let size = size_override.unwrap_or(meta.size());
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: if size_override.is_some() {
            size.div_ceil(512)
        } else {
            meta.blocks()
        },
        atime: unix_time(meta.atime(), meta.atime_nsec()),
        mtime: unix_time(meta.mtime(), meta.mtime_nsec()),
        ctime: unix_time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile),
        perm: (meta.mode() & 0o7777) as u16,
        nlink: u32::try_from(meta.nlink()).unwrap_or(u32::MAX),
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: u32::try_from(meta.rdev()).unwrap_or(0),
        blksize: u32::try_from(meta.blksize()).unwrap_or(4096),
        flags: 0,
    }
}

/// Locks the state; a panic in another request does not make the state unusable (each request
/// leaves it consistent before it can panic), so poisoning is ignored.
pub(crate) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The [`fuser::Filesystem`] served on the mountpoint.
pub(crate) struct FaultFs {
    state: Arc<Mutex<State>>,
    /// Answers syncs that must wait (a slow disk) without holding up the request thread.
    slow_syncs: SlowSyncs,
}

impl FaultFs {
    /// The filesystem over `state`, with its slow-sync thread started.
    pub(crate) fn new(state: Arc<Mutex<State>>) -> Result<Self, Error> {
        let slow_syncs = SlowSyncs::start(Arc::clone(&state))?;
        Ok(Self { state, slow_syncs })
    }

    /// Runs a sync now, or hands it to the slow-sync thread when syncs are slow.
    fn sync(&self, target: SyncTarget, reply: ReplyEmpty) {
        let mut state = lock(&self.state);
        if let Some(due) = state.sync_due() {
            drop(state);
            self.slow_syncs.defer(due, target, reply);
            return;
        }
        let synced = match target {
            SyncTarget::File { ino, fh, datasync } => state.fsync(ino, fh, datasync),
            SyncTarget::Dir { ino } => state.fsync_dir(ino),
        };
        drop(state);
        match synced {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }
}

/// Files are opened without the page cache (see the module docs).
const OPEN_FLAGS: FopenFlags = FopenFlags::FOPEN_DIRECT_IO;

impl Filesystem for FaultFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match lock(&self.state).lookup(parent.0, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(errno) => reply.error(errno),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut state = lock(&self.state);
        if let Some(node) = state.nodes.get_mut(&ino.0) {
            node.lookups = node.lookups.saturating_sub(nlookup);
        }
        state.collect(ino.0);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match lock(&self.state).attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(errno) => reply.error(errno),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = AttrChange {
            fh: fh.map(|fh| fh.0),
            size,
            mode,
            uid,
            gid,
            atime,
            mtime,
        };
        match lock(&self.state).setattr(ino.0, change) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(errno) => reply.error(errno),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let target = lock(&self.state)
            .path_or_enoent(ino.0)
            .and_then(|p| fs::read_link(p).map_err(Errno::from));
        match target {
            Ok(target) => reply.data(target.as_os_str().as_bytes()),
            Err(errno) => reply.error(errno),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        match lock(&self.state).mkdir(parent.0, name, mode & !umask) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(errno) => reply.error(errno),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match lock(&self.state).remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match lock(&self.state).remove(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }

    fn symlink(&self, _req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        match lock(&self.state).symlink(parent.0, link_name, target) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(errno) => reply.error(errno),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match lock(&self.state).rename(parent.0, name, newparent.0, newname, flags) {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match lock(&self.state).open(ino.0, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), OPEN_FLAGS),
            Err(errno) => reply.error(errno),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match lock(&self.state).read(ino.0, fh.0, offset, u64::from(size)) {
            Ok(data) => reply.data(&data),
            Err(errno) => reply.error(errno),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match lock(&self.state).write(ino.0, fh.0, offset, data) {
            Ok(written) => reply.written(written),
            Err(errno) => reply.error(errno),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() is not a durability point.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.state).release(fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let target = SyncTarget::File {
            ino: ino.0,
            fh: fh.0,
            datasync,
        };
        self.sync(target, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match lock(&self.state).opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(errno) => reply.error(errno),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let state = lock(&self.state);
        let Some(dir) = state.dirs.get(&fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (index, (name, kind, ino)) in dir.entries.iter().enumerate().skip(start) {
            if reply.add(INodeNo(*ino), index as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.state).dirs.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.sync(SyncTarget::Dir { ino: ino.0 }, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (root, space_left) = {
            let state = lock(&self.state);
            (state.backing_root.clone(), state.space_left)
        };
        match nix::sys::statvfs::statvfs(&root) {
            Ok(st) => reply.statfs(
                st.blocks(),
                free_blocks(st.blocks_free(), st.fragment_size(), space_left),
                free_blocks(st.blocks_available(), st.fragment_size(), space_left),
                st.files(),
                st.files_free(),
                u32::try_from(st.block_size()).unwrap_or(4096),
                u32::try_from(st.name_max()).unwrap_or(255),
                u32::try_from(st.fragment_size()).unwrap_or(4096),
            ),
            Err(errno) => reply.error(Errno::from_i32(errno as i32)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match lock(&self.state).create(parent.0, name, mode & !umask, flags) {
            Ok((attr, fh)) => reply.created(&TTL, &attr, Generation(0), FileHandle(fh), OPEN_FLAGS),
            Err(errno) => reply.error(errno),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Plain preallocation only: it can grow the file, which is volatile like any size change.
        if mode != 0 {
            reply.error(Errno::EOPNOTSUPP);
            return;
        }
        let mut state = lock(&self.state);
        let grown = state.attr(ino.0).and_then(|attr| {
            let end = offset.saturating_add(length);
            if end > attr.size {
                state.take_space(end - attr.size)?;
                state.set_size(ino.0, Some(fh.0), end)
            } else {
                Ok(())
            }
        });
        match grown {
            Ok(()) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }
}
