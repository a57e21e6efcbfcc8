//! The floor of any FUSE filesystem on this machine, for the benchmark:
//! a mount that only mirrors a directory, with no versioning at all.
//!
//! It answers the requests of the benchmark's writers (lookup, getattr,
//! mkdir, create, open, release; the link, unlink and rename of files
//! that zarr-python's LocalStore makes) by doing the same thing in a
//! backing directory, and hands every opened file to the kernel by FUSE
//! passthrough, as zarrfs does; it serves them over zarrfs's request
//! loop (the vendored fuser, with the same threads and spinning reader).
//! Whatever a workload costs through this mount beyond the plain
//! directory is the cost of FUSE's round trips here, which no filesystem
//! built on FUSE avoids; what zarrfs costs beyond this mount is zarrfs's
//! own.
//!
//! Not a filesystem to use: it lists no directory, follows no directory
//! rename, and gives each open a backing of its own (Linux refuses a
//! second one for a file open already).
//!
//! Usage: `fuse_floor BACKING_DIR MOUNTPOINT` (root, Linux 6.9+ with
//! passthrough); it serves until the mount is unmounted (`umount`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, IoctlFlags, KernelConfig, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, Request,
};

/// As zarrfs caches view entries and attributes.
const TTL: Duration = Duration::from_secs(1);
const GENERATION: Generation = Generation(0);

/// A mirror of one directory; inode numbers are those of the backing
/// files, so that no table beyond number -> path is needed.
struct Mirror {
    root: PathBuf,
    root_ino: u64,
    paths: Mutex<HashMap<u64, PathBuf>>,
    /// Open files: the backing the kernel does their I/O on.
    handles: Mutex<HashMap<u64, Arc<BackingId>>>,
    next_handle: AtomicU64,
}

fn errno(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn time_of(secs: i64, nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs.max(0) as u64, nanos as u32)
}

impl Mirror {
    fn attr(&self, meta: &fs::Metadata) -> FileAttr {
        let ino = if meta.ino() == self.root_ino {
            1
        } else {
            meta.ino()
        };
        FileAttr {
            ino: INodeNo(ino),
            size: meta.size(),
            blocks: meta.blocks(),
            atime: time_of(meta.atime(), meta.atime_nsec()),
            mtime: time_of(meta.mtime(), meta.mtime_nsec()),
            ctime: time_of(meta.ctime(), meta.ctime_nsec()),
            crtime: time_of(meta.mtime(), meta.mtime_nsec()),
            kind: if meta.is_dir() {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        if ino.0 == 1 {
            return Ok(self.root.clone());
        }
        let paths = self.paths.lock().unwrap();
        paths
            .get(&ino.0)
            .cloned()
            .ok_or(Errno::from_i32(libc::ENOENT))
    }

    /// The entry of `parent/name`, now that it exists in the backing
    /// directory.
    fn entry(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, Errno> {
        let path = self.path(parent)?.join(name);
        let meta = fs::symlink_metadata(&path).map_err(|e| errno(&e))?;
        let attr = self.attr(&meta);
        self.paths.lock().unwrap().insert(attr.ino.0, path);
        Ok(attr)
    }

    /// A handle for an open file, and the backing to reply with (held
    /// outside the table's lock while the reply goes out).
    fn add_handle(&self, backing: BackingId) -> (FileHandle, Arc<BackingId>) {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let backing = Arc::new(backing);
        self.handles.lock().unwrap().insert(fh, backing.clone());
        (FileHandle(fh), backing)
    }
}

fn reply_entry(reply: ReplyEntry, entry: Result<FileAttr, Errno>) {
    match entry {
        Ok(attr) => reply.entry(&TTL, &attr, GENERATION),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for Mirror {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        if config
            .add_capabilities(InitFlags::FUSE_PASSTHROUGH)
            .is_err()
            || config.set_max_stack_depth(2).is_err()
        {
            return Err(io::Error::other("the kernel offers no FUSE passthrough"));
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.entry(parent, name));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self
            .path(ino)
            .and_then(|path| fs::symlink_metadata(path).map_err(|e| errno(&e)))
        {
            Ok(meta) => reply.attr(&TTL, &self.attr(&meta)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let made = self.path(parent).and_then(|dir| {
            fs::DirBuilder::new()
                .mode(mode & !umask)
                .create(dir.join(name))
                .map_err(|e| errno(&e))
        });
        reply_entry(reply, made.and_then(|()| self.entry(parent, name)));
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
        let created = self.path(parent).and_then(|dir| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(flags & libc::O_TRUNC != 0)
                .mode(mode & !umask)
                .open(dir.join(name))
                .map_err(|e| errno(&e))
        });
        let (file, attr) = match created.and_then(|file| Ok((file, self.entry(parent, name)?))) {
            Ok(made) => made,
            Err(e) => return reply.error(e),
        };
        match reply.open_backing(&file) {
            Ok(backing) => {
                let (fh, id) = self.add_handle(backing);
                reply.created_passthrough(&TTL, &attr, GENERATION, fh, FopenFlags::empty(), &id);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let removed = self
            .path(parent)
            .and_then(|dir| fs::remove_file(dir.join(name)).map_err(|e| errno(&e)));
        match removed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// zarr-python writes a key exclusively by linking its temporary file
    /// into place.
    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let linked = self.path(ino).and_then(|from| {
            let to = self.path(newparent)?.join(newname);
            fs::hard_link(from, to).map_err(|e| errno(&e))
        });
        reply_entry(reply, linked.and_then(|()| self.entry(newparent, newname)));
    }

    /// Files only (zarr-python renames each chunk's temporary file into
    /// place): the paths below a renamed directory would go stale here.
    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let renamed = self.path(parent).and_then(|from_dir| {
            let from = from_dir.join(name);
            let to = self.path(newparent)?.join(newname);
            let meta = fs::symlink_metadata(&from).map_err(|e| errno(&e))?;
            if meta.is_dir() {
                return Err(Errno::from_i32(libc::EXDEV));
            }
            fs::rename(&from, &to).map_err(|e| errno(&e))?;
            self.paths
                .lock()
                .unwrap()
                .insert(self.attr(&meta).ino.0, to);
            Ok(())
        });
        match renamed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let writes = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        let opened = self.path(ino).and_then(|path| {
            OpenOptions::new()
                .read(true)
                .write(writes)
                .truncate(writes && flags.0 & libc::O_TRUNC != 0)
                .open(path)
                .map_err(|e| errno(&e))
        });
        let file: File = match opened {
            Ok(file) => file,
            Err(e) => return reply.error(e),
        };
        match reply.open_backing(&file) {
            Ok(backing) => {
                let (fh, id) = self.add_handle(backing);
                reply.opened_passthrough(fh, FopenFlags::empty(), &id);
            }
            Err(e) => reply.error(errno(&e)),
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
        // As zarrfs: no FLUSH on every close.
        reply.error(Errno::from_i32(libc::ENOSYS));
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
        self.handles.lock().unwrap().remove(&fh.0);
        reply.ok();
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::from_i32(libc::ENOTTY));
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [backing, mountpoint] = args.as_slice() else {
        eprintln!("usage: fuse_floor BACKING_DIR MOUNTPOINT");
        std::process::exit(2);
    };
    let root = fs::canonicalize(backing)?;
    let mirror = Mirror {
        root_ino: fs::metadata(&root)?.ino(),
        root,
        paths: Mutex::new(HashMap::new()),
        handles: Mutex::new(HashMap::new()),
        next_handle: AtomicU64::new(1),
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("fuse_floor".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    // zarrfs's request loop, as `zarrfs mount` sets it up (fs::daemon).
    config.n_threads = Some(zarrfs::fs::daemon::THREADS);
    config.clone_fd = true;
    config.spin = Some(zarrfs::fs::daemon::SPIN);
    fuser::Session::new(mirror, Path::new(mountpoint), &config)?.run()
}
