//! A FUSE filesystem that loses every byte not yet fsynced when its process dies.
//!
//! `serve` mounts a passthrough view of a backing directory. File data written through the
//! mount is held in this process's memory, as dirty 4 KiB pages per inode over the backing
//! file, and reaches the backing file only when that file is fsynced (or fdatasynced): then
//! the dirty pages, and only those, are written to the backing file and it is fsynced. Reads
//! merge the dirty pages over the backing file, and sizes are the logical ones, so every
//! process using the mount sees its own and others' writes as on any filesystem.
//!
//! Power loss is this process dying (SIGKILL): the dirty pages die with it and the backing
//! directory holds exactly what was fsynced. The harness then detaches the dead mount
//! (`unmount`) and serves the same backing directory again. A broker that merely crashes,
//! with the filesystem still served, keeps its unsynced writes, as it would keep them in the
//! page cache of a machine that stays up. Unmounting cleanly does not persist dirty pages
//! either: only fsync does, so the order in which the harness stops things cannot hide a loss.
//!
//! Simplifications, relative to a real power loss:
//! - Namespace and size changes (create, mkdir, unlink, rmdir, rename, truncate, chmod) are
//!   applied to the backing directory at once and survive, fsynced or not; a real filesystem
//!   may lose directory entries not yet made durable by an fsync of their directory. A file
//!   written to a temporary name and renamed over its target without an fsync comes back
//!   empty, the well-known zero-length-file outcome.
//! - A write held in memory cannot fail for lack of space; ENOSPC (or EIO) from the backing
//!   filesystem comes back from the fsync that tries to write it, as with delayed allocation.
//!   The pages stay dirty after a failed fsync, so a later fsync retries them.
//! - Timestamps other than a dirty file's modification time are the backing file's.
//!
//! The kernel talks to this filesystem without its writeback cache (fuser does not ask for
//! it), so every write(2) reaches this process before it returns; attributes and entries get
//! a zero TTL, and a new mount is a new superblock with an empty page cache, so nothing read
//! through the previous mount can be served again after a power cycle.
//!
//! Mounting needs root and `/dev/fuse`, nothing else: fuser mounts with mount(2) itself, so
//! neither libfuse nor fusermount3 is used.

use std::collections::btree_map::Entry as PageEntry;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File, Metadata, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

const PAGE: u64 = 4096;
/// Every size the kernel shows comes from this process, which alone knows the dirty pages.
const TTL: Duration = Duration::ZERO;
/// Dirty pages written back with one pwrite, at most.
const WRITEBACK_CHUNK: usize = 1 << 20;

/// Mounts `backing` at `mountpoint` and serves it until unmounted or killed. Killing the
/// process is the power loss. `mountpoint` must not hold a dead mount: `unmount` it first.
pub fn serve(backing: &Path, mountpoint: &Path) -> anyhow::Result<()> {
    let backing = backing
        .canonicalize()
        .with_context(|| format!("backing directory {}", backing.display()))?;
    if !backing.is_dir() {
        bail!("backing {} is not a directory", backing.display());
    }
    let mut config = fuser::Config::default();
    // Listed in /proc/mounts as `lossyfs <mountpoint> fuse`.
    config.mount_options = vec![MountOption::FSName("lossyfs".into())];
    fuser::mount(LossyFs::new(backing.clone()), mountpoint, &config)
        .with_context(|| format!("serving {} at {}", backing.display(), mountpoint.display()))
}

/// Detaches the mount at `mountpoint` lazily, so that a mount whose process died (whose every
/// access fails with ENOTCONN) or one still in use goes away; succeeds if nothing is mounted.
/// Only the topmost mount at that path is detached.
pub fn unmount(mountpoint: &Path) -> anyhow::Result<()> {
    match nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point.
        Ok(()) | Err(nix::errno::Errno::EINVAL) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("unmounting {}", mountpoint.display())),
    }
}

/// Waits until a live filesystem is mounted at `mountpoint`: one that answers stat(2) on a
/// device other than its parent directory's.
pub fn wait_mounted(mountpoint: &Path, timeout: Duration) -> anyhow::Result<()> {
    let mountpoint = std::path::absolute(mountpoint)?;
    let parent = mountpoint
        .parent()
        .context("the mount point has no parent directory")?;
    let deadline = Instant::now() + timeout;
    loop {
        let parent_dev = fs::metadata(parent)
            .with_context(|| format!("stat {}", parent.display()))?
            .dev();
        let last = match fs::metadata(&mountpoint) {
            Ok(m) if m.dev() != parent_dev => return Ok(()),
            Ok(_) => "not mounted yet".to_string(),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            bail!(
                "no live filesystem at {} after {timeout:?} ({last})",
                mountpoint.display()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct LossyFs {
    state: Mutex<State>,
}

struct State {
    backing: PathBuf,
    nodes: HashMap<u64, Node>,
    /// Path relative to `backing` (the root is the empty path) to inode number.
    inos: HashMap<PathBuf, u64>,
    next_ino: u64,
    /// Open directory handles: their entries as of opendir, so readdir offsets stay stable.
    dirs: HashMap<u64, Vec<DirEntry>>,
    next_dir_handle: u64,
}

struct Node {
    /// None once unlinked or replaced by a rename; the node lives on while open.
    path: Option<PathBuf>,
    /// The backing file, shared by every open handle of the inode.
    file: Option<File>,
    open_handles: u32,
    dirty: Option<Dirty>,
}

/// What the backing file has not got yet. Without it the backing file is the whole truth.
struct Dirty {
    size: u64,
    /// The backing file's length, never more than `size`: truncation applies to both.
    backing_len: u64,
    pages: BTreeMap<u64, Box<[u8; PAGE as usize]>>,
    modified: SystemTime,
}

struct DirEntry {
    ino: u64,
    kind: FileType,
    name: OsString,
}

impl LossyFs {
    fn new(backing: PathBuf) -> LossyFs {
        let root = Node {
            path: Some(PathBuf::new()),
            file: None,
            open_handles: 0,
            dirty: None,
        };
        LossyFs {
            state: Mutex::new(State {
                backing,
                nodes: HashMap::from([(INodeNo::ROOT.0, root)]),
                inos: HashMap::from([(PathBuf::new(), INodeNo::ROOT.0)]),
                next_ino: INodeNo::ROOT.0 + 1,
                dirs: HashMap::new(),
                next_dir_handle: 1,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic mid-request leaves no half-applied invariant worth refusing every later one.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn node(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn path(&self, ino: u64) -> Result<&Path, Errno> {
        self.nodes
            .get(&ino)
            .and_then(|n| n.path.as_deref())
            .ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    fn real(&self, rel: &Path) -> PathBuf {
        self.backing.join(rel)
    }

    fn ino_for(&mut self, rel: &Path) -> u64 {
        if let Some(&ino) = self.inos.get(rel) {
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inos.insert(rel.to_path_buf(), ino);
        self.nodes.insert(
            ino,
            Node {
                path: Some(rel.to_path_buf()),
                file: None,
                open_handles: 0,
                dirty: None,
            },
        );
        ino
    }

    /// The path no longer names the node: unlinked, or replaced by a rename.
    fn detach(&mut self, rel: &Path) {
        let Some(ino) = self.inos.remove(rel) else {
            return;
        };
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.path = None;
            if node.open_handles == 0 {
                self.nodes.remove(&ino);
            }
        }
    }

    fn move_paths(&mut self, from: &Path, to: &Path) {
        let moved: Vec<PathBuf> = self
            .inos
            .keys()
            .filter(|p| p.starts_with(from))
            .cloned()
            .collect();
        for old in moved {
            let new = match old.strip_prefix(from) {
                Ok(rest) if rest.as_os_str().is_empty() => to.to_path_buf(),
                Ok(rest) => to.join(rest),
                Err(_) => continue,
            };
            let ino = self.inos.remove(&old).expect("listed above");
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.path = Some(new.clone());
            }
            self.inos.insert(new, ino);
        }
    }

    fn attr(&mut self, ino: u64) -> Result<FileAttr, Errno> {
        let real = self.path(ino).map(|p| self.backing.join(p));
        let node = self.node(ino)?;
        let meta = match (&node.file, real) {
            (Some(file), _) => file.metadata()?,
            (None, Ok(real)) => fs::symlink_metadata(real)?,
            (None, Err(e)) => return Err(e),
        };
        Ok(file_attr(ino, &meta, node.dirty.as_ref()))
    }

    /// Opens the backing file if no handle has it open yet.
    fn open_file(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        let real = self.path(ino).map(|p| self.backing.join(p));
        let node = self.node(ino)?;
        if node.file.is_none() {
            let real = real?;
            // Read-write whatever the caller asked for: a later fsync may come through a
            // read-only handle and must still write the dirty pages.
            let file = match OpenOptions::new().read(true).write(true).open(&real) {
                Ok(file) => file,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EACCES | libc::EPERM | libc::EROFS | libc::EISDIR)
                    ) =>
                {
                    File::open(&real)?
                }
                Err(e) => return Err(e.into()),
            };
            node.file = Some(file);
        }
        Ok(node)
    }

    /// Closes the backing file once nothing needs it: dirty pages stay, keyed by inode.
    fn settle(&mut self, ino: u64) {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        if node.open_handles == 0 {
            node.file = None;
            if node.path.is_none() {
                self.nodes.remove(&ino);
            }
        }
    }

    fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let node = self.open_file(ino)?;
        let file = node.file.as_ref().expect("opened above");
        if node.dirty.is_none() {
            let len = file.metadata()?.len();
            node.dirty = Some(Dirty {
                size: len,
                backing_len: len,
                pages: BTreeMap::new(),
                modified: SystemTime::now(),
            });
        }
        let dirty = node.dirty.as_mut().expect("set above");
        let end = offset.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let index = pos / PAGE;
            let within = (pos % PAGE) as usize;
            let n = rest.len().min(PAGE as usize - within);
            let page = match dirty.pages.entry(index) {
                PageEntry::Occupied(e) => e.into_mut(),
                PageEntry::Vacant(e) => e.insert(load_page(file, index, dirty.backing_len)?),
            };
            page[within..within + n].copy_from_slice(&rest[..n]);
            pos += n as u64;
            rest = &rest[n..];
        }
        dirty.size = dirty.size.max(end);
        dirty.modified = SystemTime::now();
        Ok(())
    }

    fn read(&mut self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let node = self.open_file(ino)?;
        let file = node.file.as_ref().expect("opened above");
        let Some(dirty) = &node.dirty else {
            let mut buf = vec![0; size as usize];
            let n = read_at_most(file, &mut buf, offset)?;
            buf.truncate(n);
            return Ok(buf);
        };
        let end = offset.saturating_add(u64::from(size)).min(dirty.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0; (end - offset) as usize];
        if offset < dirty.backing_len {
            let from_backing = (dirty.backing_len.min(end) - offset) as usize;
            read_at_most(file, &mut buf[..from_backing], offset)?;
        }
        for (&index, page) in dirty.pages.range(offset / PAGE..=(end - 1) / PAGE) {
            let page_start = index * PAGE;
            let lo = page_start.max(offset);
            let hi = (page_start + PAGE).min(end);
            buf[(lo - offset) as usize..(hi - offset) as usize]
                .copy_from_slice(&page[(lo - page_start) as usize..(hi - page_start) as usize]);
        }
        Ok(buf)
    }

    fn fsync(&mut self, ino: u64, datasync: bool) -> Result<(), Errno> {
        let node = self.open_file(ino)?;
        let Some(dirty) = node.dirty.take() else {
            return Ok(());
        };
        let file = node.file.as_ref().expect("opened above");
        let result = write_back(file, &dirty).and_then(|()| {
            if datasync {
                file.sync_data()
            } else {
                file.sync_all()
            }
        });
        if let Err(e) = result {
            node.dirty = Some(dirty);
            return Err(e.into());
        }
        Ok(())
    }

    fn truncate(&mut self, ino: u64, size: u64) -> Result<(), Errno> {
        let node = self.open_file(ino)?;
        node.file.as_ref().expect("opened above").set_len(size)?;
        if let Some(dirty) = &mut node.dirty {
            dirty.pages.split_off(&size.div_ceil(PAGE));
            if let Some(page) = dirty.pages.get_mut(&(size / PAGE)) {
                // A later extension must read zeros here, not the bytes cut off.
                page[(size % PAGE) as usize..].fill(0);
            }
            dirty.size = size;
            dirty.backing_len = size;
            dirty.modified = SystemTime::now();
            if dirty.pages.is_empty() {
                node.dirty = None;
            }
        }
        Ok(())
    }

    fn setattr(
        &mut self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
    ) -> Result<FileAttr, Errno> {
        if let Some(size) = size {
            self.truncate(ino, size)?;
        }
        if mode.is_some() || uid.is_some() || gid.is_some() {
            let real = self.path(ino).map(|p| self.backing.join(p));
            let node = self.node(ino)?;
            match (&node.file, real) {
                (Some(file), _) => {
                    if let Some(mode) = mode {
                        file.set_permissions(Permissions::from_mode(mode & 0o7777))?;
                    }
                    if uid.is_some() || gid.is_some() {
                        std::os::unix::fs::fchown(file, uid, gid)?;
                    }
                }
                (None, Ok(real)) => {
                    if let Some(mode) = mode {
                        fs::set_permissions(&real, Permissions::from_mode(mode & 0o7777))?;
                    }
                    if uid.is_some() || gid.is_some() {
                        std::os::unix::fs::lchown(&real, uid, gid)?;
                    }
                }
                (None, Err(e)) => return Err(e),
            }
        }
        let attr = self.attr(ino);
        self.settle(ino);
        attr
    }

    fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let rel = self.child(parent, name)?;
        fs::symlink_metadata(self.real(&rel))?;
        let ino = self.ino_for(&rel);
        self.attr(ino)
    }

    fn create(&mut self, parent: u64, name: &OsStr, mode: u32, flags: i32) -> Result<FileAttr, Errno> {
        let rel = self.child(parent, name)?;
        let mut options = OpenOptions::new();
        options.read(true).write(true).mode(mode & 0o7777);
        if flags & libc::O_EXCL != 0 {
            options.create_new(true);
        } else {
            options.create(true);
        }
        let file = options.open(self.real(&rel))?;
        let ino = self.ino_for(&rel);
        let node = self.node(ino)?;
        node.file.get_or_insert(file);
        node.open_handles += 1;
        if flags & libc::O_TRUNC != 0 {
            self.truncate(ino, 0)?;
        }
        self.attr(ino)
    }

    fn mkdir(&mut self, parent: u64, name: &OsStr, mode: u32) -> Result<FileAttr, Errno> {
        let rel = self.child(parent, name)?;
        DirBuilder::new().mode(mode & 0o7777).create(self.real(&rel))?;
        let ino = self.ino_for(&rel);
        self.attr(ino)
    }

    fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let rel = self.child(parent, name)?;
        let real = self.real(&rel);
        if dir {
            fs::remove_dir(real)?;
        } else {
            fs::remove_file(real)?;
        }
        self.detach(&rel);
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
        let from = self.child(parent, name)?;
        let to = self.child(new_parent, new_name)?;
        if flags.contains(RenameFlags::RENAME_EXCHANGE) || flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        // Requests are served one at a time, and nothing else writes the backing directory.
        if flags.contains(RenameFlags::RENAME_NOREPLACE) && fs::symlink_metadata(self.real(&to)).is_ok() {
            return Err(Errno::EEXIST);
        }
        fs::rename(self.real(&from), self.real(&to))?;
        if from != to {
            self.detach(&to);
            self.move_paths(&from, &to);
        }
        Ok(())
    }

    fn opendir(&mut self, ino: u64) -> Result<u64, Errno> {
        let rel = self.path(ino)?.to_path_buf();
        let parent_ino = match rel.parent() {
            Some(parent) => self.ino_for(parent),
            None => ino,
        };
        let mut entries = vec![
            DirEntry {
                ino,
                kind: FileType::Directory,
                name: ".".into(),
            },
            DirEntry {
                ino: parent_ino,
                kind: FileType::Directory,
                name: "..".into(),
            },
        ];
        for entry in fs::read_dir(self.real(&rel))? {
            let entry = entry?;
            let kind = FileType::from_std(entry.file_type()?).unwrap_or(FileType::RegularFile);
            let name = entry.file_name();
            entries.push(DirEntry {
                ino: self.ino_for(&rel.join(&name)),
                kind,
                name,
            });
        }
        let handle = self.next_dir_handle;
        self.next_dir_handle += 1;
        self.dirs.insert(handle, entries);
        Ok(handle)
    }

    fn statfs(&self) -> Result<nix::sys::statvfs::Statvfs, Errno> {
        nix::sys::statvfs::statvfs(&self.backing).map_err(|e| Errno::from_i32(e as i32))
    }
}

fn file_attr(ino: u64, meta: &Metadata, dirty: Option<&Dirty>) -> FileAttr {
    let time = |secs: i64, nsecs: i64| {
        let since = Duration::new(secs.unsigned_abs(), nsecs as u32);
        if secs >= 0 {
            UNIX_EPOCH + since
        } else {
            UNIX_EPOCH - since
        }
    };
    let (size, blocks, mtime) = match dirty {
        Some(d) => (d.size, meta.blocks().max(d.size.div_ceil(512)), d.modified),
        None => (meta.len(), meta.blocks(), time(meta.mtime(), meta.mtime_nsec())),
    };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks,
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime,
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile),
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: PAGE as u32,
        flags: 0,
    }
}

/// A page about to be dirtied, as the backing file has it; zeros past its end.
fn load_page(file: &File, index: u64, backing_len: u64) -> io::Result<Box<[u8; PAGE as usize]>> {
    let mut page = Box::new([0; PAGE as usize]);
    if index * PAGE < backing_len {
        read_at_most(file, &mut page[..], index * PAGE)?;
    }
    Ok(page)
}

/// Fills `buf` from `offset` up to the end of the file; returns how much it read.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Writes the dirty pages, contiguous runs in one pwrite each, the last cut at the size.
fn write_back(file: &File, dirty: &Dirty) -> io::Result<()> {
    let mut run = Vec::with_capacity(WRITEBACK_CHUNK.min(dirty.pages.len() * PAGE as usize));
    let mut run_start = 0;
    for (&index, page) in &dirty.pages {
        let start = index * PAGE;
        if !run.is_empty() && (run_start + run.len() as u64 != start || run.len() >= WRITEBACK_CHUNK) {
            file.write_all_at(&run, run_start)?;
            run.clear();
        }
        if run.is_empty() {
            run_start = start;
        }
        let len = (dirty.size.saturating_sub(start)).min(PAGE) as usize;
        run.extend_from_slice(&page[..len]);
    }
    if !run.is_empty() {
        file.write_all_at(&run, run_start)?;
    }
    if file.metadata()?.len() < dirty.size {
        file.set_len(dirty.size)?;
    }
    Ok(())
}

impl Filesystem for LossyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.state().lookup(parent.0, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state().attr(ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
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
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.state().setattr(ino.0, mode, uid, gid, size) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.state().mkdir(parent.0, name, mode) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.state().remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.state().remove(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
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
        match self.state().rename(parent.0, name, newparent.0, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.state();
        match state.open_file(ino.0) {
            Ok(node) => {
                node.open_handles += 1;
                reply.opened(FileHandle(ino.0), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.state().create(parent.0, name, mode, flags) {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(attr.ino.0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.state().read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.state().write(ino.0, offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
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
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        if let Some(node) = state.nodes.get_mut(&ino.0) {
            node.open_handles = node.open_handles.saturating_sub(1);
        }
        state.settle(ino.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        // An ENOSYS here would make the kernel treat every later fsync as done.
        match self.state().fsync(ino.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.state().opendir(ino.0) {
            Ok(handle) => reply.opened(FileHandle(handle), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let state = self.state();
        let Some(entries) = state.dirs.get(&fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        for (i, entry) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(entry.ino), i as u64 + 1, entry.kind, &entry.name) {
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
        self.state().dirs.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // Directory changes reach the backing directory as they happen.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.state().statfs() {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File, OpenOptions};
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    const BACKING_ENV: &str = "ODRADEK_LOSSYFS_TEST_BACKING";
    const MOUNTPOINT_ENV: &str = "ODRADEK_LOSSYFS_TEST_MOUNTPOINT";

    /// Not a test: the filesystem process the tests start, this binary run again with the
    /// directories in the environment, so that killing it is a real process dying.
    #[test]
    fn daemon() {
        let (Some(backing), Some(mountpoint)) =
            (std::env::var_os(BACKING_ENV), std::env::var_os(MOUNTPOINT_ENV))
        else {
            return;
        };
        super::serve(Path::new(&backing), Path::new(&mountpoint)).unwrap();
    }

    struct Machine {
        dir: PathBuf,
        backing: PathBuf,
        mnt: PathBuf,
        daemon: Option<Child>,
        backing_tmpfs: bool,
    }

    impl Machine {
        /// None, after saying why, where FUSE mounts are impossible.
        fn new(name: &str) -> Option<Machine> {
            Machine::with_backing_tmpfs(name, None)
        }

        /// With `tmpfs_size`, the backing directory is a tmpfs of that size (mount(8)'s `size=`).
        fn with_backing_tmpfs(name: &str, tmpfs_size: Option<&str>) -> Option<Machine> {
            if !nix::unistd::geteuid().is_root() {
                eprintln!("skipped: mounting a FUSE filesystem needs root");
                return None;
            }
            if !Path::new("/dev/fuse").exists() {
                eprintln!("skipped: no /dev/fuse");
                return None;
            }
            let dir = std::env::temp_dir().join(format!("lossyfs-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            let backing = dir.join("backing");
            let mnt = dir.join("mnt");
            fs::create_dir_all(&backing).unwrap();
            fs::create_dir_all(&mnt).unwrap();
            if let Some(size) = tmpfs_size {
                nix::mount::mount(
                    Some("tmpfs"),
                    &backing,
                    Some("tmpfs"),
                    nix::mount::MsFlags::empty(),
                    Some(format!("size={size}").as_str()),
                )
                .unwrap();
            }
            let mut machine = Machine {
                dir,
                backing,
                mnt,
                daemon: None,
                backing_tmpfs: tmpfs_size.is_some(),
            };
            machine.power_on();
            Some(machine)
        }

        fn power_on(&mut self) {
            let child = Command::new(std::env::current_exe().unwrap())
                .args(["lossyfs::tests::daemon", "--exact", "--nocapture"])
                .env(BACKING_ENV, &self.backing)
                .env(MOUNTPOINT_ENV, &self.mnt)
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            self.daemon = Some(child);
            for _ in 0..100 {
                if super::wait_mounted(&self.mnt, Duration::from_millis(100)).is_ok() {
                    return;
                }
                if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                    panic!("the filesystem process exited before mounting: {status}");
                }
            }
            panic!("nothing mounted at {} after 10 s", self.mnt.display());
        }

        fn power_off(&mut self) {
            if let Some(mut child) = self.daemon.take() {
                child.kill().unwrap();
                child.wait().unwrap();
            }
            super::unmount(&self.mnt).unwrap();
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.mnt.join(rel)
        }
    }

    impl Drop for Machine {
        fn drop(&mut self) {
            if let Some(mut child) = self.daemon.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = super::unmount(&self.mnt);
            if self.backing_tmpfs {
                let _ = super::unmount(&self.backing);
            }
            if !std::thread::panicking() {
                let _ = fs::remove_dir_all(&self.dir);
            }
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
            .collect()
    }

    #[test]
    fn power_loss_keeps_exactly_the_fsynced_bytes() {
        let Some(mut m) = Machine::new("power-loss") else {
            return;
        };
        // A: 10,000 bytes fsynced, then appended to and overwritten in place without fsync.
        let synced = pattern(10_000, 1);
        let mut a = File::create(m.path("a")).unwrap();
        a.write_all(&synced).unwrap();
        a.sync_all().unwrap();
        a.write_all(&pattern(5_000, 2)).unwrap();
        a.write_all_at(b"unsynced", 4_090).unwrap();
        let mut expected = synced.clone();
        expected.extend(pattern(5_000, 2));
        expected[4_090..4_098].copy_from_slice(b"unsynced");
        assert_eq!(fs::read(m.path("a")).unwrap(), expected, "read your writes");
        assert_eq!(fs::metadata(m.path("a")).unwrap().len(), 15_000);
        assert_eq!(fs::read(m.backing.join("a")).unwrap(), synced);

        // B: created and written, never fsynced.
        fs::write(m.path("b"), b"never fsynced").unwrap();
        // C: a directory, with D in it fdatasynced across several contiguous runs of pages.
        fs::create_dir(m.path("c")).unwrap();
        let big = pattern(3 << 20 | 123, 3);
        let d = File::create(m.path("c/d")).unwrap();
        d.write_all_at(&big, 0).unwrap();
        d.sync_data().unwrap();
        d.write_all_at(b"lost", 1 << 20).unwrap();
        drop(d);

        // `a` stays open across the power loss, as a broker's segment would.
        m.power_off();
        drop(a);
        m.power_on();

        assert_eq!(fs::read(m.path("a")).unwrap(), synced);
        assert_eq!(fs::metadata(m.path("b")).unwrap().len(), 0);
        assert!(fs::metadata(m.path("c")).unwrap().is_dir());
        assert_eq!(fs::read(m.path("c/d")).unwrap(), big);
        let mut names: Vec<_> = fs::read_dir(&m.mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn truncate_and_rename_carry_dirty_pages() {
        let Some(mut m) = Machine::new("truncate-rename") else {
            return;
        };
        // Truncation cuts dirty pages: growing the file again shows zeros, not the old bytes.
        let x = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(m.path("x"))
            .unwrap();
        x.write_all_at(&pattern(10_000, 4), 0).unwrap();
        x.set_len(3_000).unwrap();
        x.set_len(8_000).unwrap();
        let mut expected = pattern(3_000, 4);
        expected.resize(8_000, 0);
        assert_eq!(fs::read(m.path("x")).unwrap(), expected);
        x.sync_all().unwrap();
        // Truncating a clean file leaves it clean.
        x.set_len(5_000).unwrap();
        expected.truncate(5_000);
        drop(x);

        // Written to a temporary name, fsynced, renamed over the old checkpoint.
        fs::write(m.path("ckpt1"), b"old").unwrap();
        File::open(m.path("ckpt1")).unwrap().sync_all().unwrap();
        let tmp = File::create(m.path("ckpt1.tmp")).unwrap();
        tmp.write_all_at(b"new", 0).unwrap();
        tmp.sync_all().unwrap();
        drop(tmp);
        fs::rename(m.path("ckpt1.tmp"), m.path("ckpt1")).unwrap();

        // Renamed over the old one without an fsync: the zero-length file after power loss.
        fs::write(m.path("ckpt2"), b"old").unwrap();
        File::open(m.path("ckpt2")).unwrap().sync_all().unwrap();
        fs::write(m.path("ckpt2.tmp"), b"new").unwrap();
        fs::rename(m.path("ckpt2.tmp"), m.path("ckpt2")).unwrap();
        assert_eq!(fs::read(m.path("ckpt2")).unwrap(), b"new");

        // Dirty pages follow a file, and a directory, to their new names, where fsync finds them.
        fs::create_dir(m.path("d1")).unwrap();
        fs::write(m.path("d1/f"), pattern(6_000, 5)).unwrap();
        fs::rename(m.path("d1/f"), m.path("d1/g")).unwrap();
        fs::rename(m.path("d1"), m.path("d2")).unwrap();
        assert_eq!(fs::read(m.path("d2/g")).unwrap(), pattern(6_000, 5));
        File::open(m.path("d2/g")).unwrap().sync_data().unwrap();

        m.power_off();
        m.power_on();

        assert_eq!(fs::read(m.path("x")).unwrap(), expected);
        assert_eq!(fs::read(m.path("ckpt1")).unwrap(), b"new");
        assert!(!m.path("ckpt1.tmp").exists());
        assert_eq!(fs::read(m.path("ckpt2")).unwrap(), b"");
        assert!(!m.path("d1").exists());
        assert_eq!(fs::read(m.path("d2/g")).unwrap(), pattern(6_000, 5));
    }

    #[test]
    fn disk_full_surfaces_at_fsync() {
        let Some(mut m) = Machine::with_backing_tmpfs("disk-full", Some("1m")) else {
            return;
        };
        let st = nix::sys::statvfs::statvfs(&m.mnt).unwrap();
        let total = st.blocks() * st.fragment_size();
        assert!(
            (512 << 10..=2 << 20).contains(&total),
            "the backing tmpfs's size, got {total}"
        );

        // Held in memory, the write has nothing to fail on; the fsync that writes it back has.
        let data = pattern(2 << 20, 6);
        let f = File::create(m.path("f")).unwrap();
        f.write_all_at(&data, 0).unwrap();
        let err = f.sync_data().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        // The pages stay dirty and readable; once there is room, a later fsync writes them.
        assert_eq!(fs::read(m.path("f")).unwrap(), data);
        f.set_len(100 << 10).unwrap();
        f.sync_data().unwrap();
        drop(f);

        m.power_off();
        m.power_on();
        assert_eq!(fs::read(m.path("f")).unwrap(), &data[..100 << 10]);
    }
}
