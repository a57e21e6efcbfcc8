//! The fuser binding: each kernel request becomes one call on [`Fs`].
//!
//! Entries and attributes are given with the TTL `super::kernel_cache`
//! chooses: cached for view paths, whose switches by commit, checkout or
//! discard are invalidated explicitly, and not at all for the control
//! directory and history trees. Files are opened without
//! `FOPEN_KEEP_CACHE`, so that each open drops cached pages; control files
//! are `direct_io`, so that each read asks the daemon.
//!
//! Every reply that hands the kernel an entry (lookup, create, mknod,
//! mkdir, link, readdirplus) is counted in the inode table, and `forget`
//! (fuser turns a batch forget into one `forget` per inode) gives the
//! count back: see `super::inodes`.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::core::{Fs, FsError};
use super::handles::Opened;
use super::passthrough::OpenMode;
use super::request_counts::Op;

const GENERATION: Generation = Generation(0);

/// The fuser `Filesystem` over a shared [`Fs`].
pub struct FuseFs {
    fs: Arc<Fs>,
}

impl FuseFs {
    pub fn new(fs: Arc<Fs>) -> FuseFs {
        FuseFs { fs }
    }
}

fn errno(e: FsError) -> Errno {
    Errno::from_i32(e.0)
}

fn open_flags(opened: &Opened) -> FopenFlags {
    if opened.direct_io {
        FopenFlags::FOPEN_DIRECT_IO
    } else {
        FopenFlags::empty()
    }
}

/// The most filesystems stacked under a backing file: 2 lets the
/// repository live on overlayfs (as in containers).
const MAX_STACK_DEPTH: u32 = 2;

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        // open(O_TRUNC) arrives as one open, not an open and a setattr:
        // a committed file is not copied up only to be truncated.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        // Handles served by the daemon beside passthrough ones are
        // direct_io; let programs still mmap them.
        let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(MAX_STACK_DEPTH).is_ok()
        {
            self.fs.backings.enable();
            tracing::info!("FUSE passthrough on: the kernel reads and writes file data directly");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.fs.requests.count(Op::Lookup);
        match self.fs.lookup(parent.0, name) {
            Ok(attr) => reply.entry(&self.fs.ttl(attr.ino.0), &attr, GENERATION),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.requests.count(Op::Forget);
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.fs.requests.count(Op::GetAttr);
        match self.fs.getattr(ino.0, fh.map(|f| f.0)) {
            Ok(attr) => reply.attr(&self.fs.ttl(attr.ino.0), &attr),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.fs.requests.count(Op::SetAttr);
        // Ownership is not kept: chown is accepted and changes nothing.
        match self
            .fs
            .setattr(ino.0, mode, size, mtime.map(time), fh.map(|f| f.0))
        {
            Ok(attr) => reply.attr(&self.fs.ttl(attr.ino.0), &attr),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, _ino: INodeNo, reply: ReplyData) {
        self.fs.requests.count(Op::Other);
        reply.error(Errno::EINVAL);
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        self.fs.requests.count(Op::MkNod);
        if mode & libc::S_IFMT != libc::S_IFREG {
            reply.error(Errno::EPERM);
            return;
        }
        match self
            .fs
            .create(parent.0, name, mode, umask, libc::O_WRONLY | libc::O_EXCL)
        {
            Ok((attr, opened)) => {
                self.fs.release(opened.fh);
                reply.entry(&self.fs.ttl(attr.ino.0), &attr, GENERATION);
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.fs.requests.count(Op::MkDir);
        match self.fs.mkdir(parent.0, name) {
            Ok(attr) => reply.entry(&self.fs.ttl(attr.ino.0), &attr, GENERATION),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.fs.requests.count(Op::Unlink);
        match self.fs.unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.fs.requests.count(Op::RmDir);
        match self.fs.rmdir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        self.fs.requests.count(Op::Other);
        reply.error(Errno::EPERM);
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
        self.fs.requests.count(Op::Rename);
        match self
            .fs
            .rename(parent.0, name, newparent.0, newname, flags.bits())
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.fs.requests.count(Op::Link);
        match self.fs.link(ino.0, newparent.0, newname) {
            Ok(attr) => reply.entry(&self.fs.ttl(attr.ino.0), &attr, GENERATION),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.fs.requests.count(Op::Open);
        let opened = match self.fs.open(ino.0, flags.0) {
            Ok(opened) => opened,
            Err(e) => return reply.error(errno(e)),
        };
        let fh = FileHandle(opened.fh);
        let decision = self
            .fs
            .backings
            .decide(ino.0, opened.fh, opened.backing.as_ref(), |file| {
                reply.open_backing(file)
            });
        match decision.mode() {
            OpenMode::Passthrough(id) => reply.opened_passthrough(fh, FopenFlags::empty(), id),
            OpenMode::Refused => {
                drop(decision);
                self.fs.backings.release(opened.fh);
                self.fs.release(opened.fh);
                // A write open's retry mark went to its check in Fs::open.
                reply.error(errno(self.fs.look_up_again(ino.0, false)))
            }
            OpenMode::Plain => reply.opened(fh, open_flags(&opened)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.fs.requests.count(Op::Read);
        match self.fs.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.fs.requests.count(Op::Write);
        match self.fs.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
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
        self.fs.requests.count(Op::Flush);
        // Nothing is buffered here (writes go straight to the staged file,
        // or through passthrough): ENOSYS makes the kernel stop sending a
        // FLUSH on every close, one round trip fewer per file.
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
        self.fs.requests.count(Op::Release);
        self.fs.backings.release(fh.0);
        self.fs.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.requests.count(Op::FSync);
        match self.fs.fsync(ino.0, fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.fs.requests.count(Op::OpenDir);
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.fs.requests.count(Op::ReadDir);
        match self.fs.readdir(fh.0, offset) {
            Ok(entries) => {
                for (next, entry) in entries {
                    if reply.add(entry.attr.ino, next, entry.attr.kind, &entry.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.fs.requests.count(Op::ReadDirPlus);
        match self.fs.readdir(fh.0, offset) {
            Ok(entries) => {
                for (next, entry) in entries {
                    if reply.add(
                        entry.attr.ino,
                        next,
                        &entry.name,
                        &self.fs.ttl(entry.attr.ino.0),
                        &entry.attr,
                        GENERATION,
                    ) {
                        break;
                    }
                    // The kernel counts a lookup for each entry it is
                    // handed, except "." and "..": so do we, before the
                    // reply can lead to a forget.
                    if entry.name != "." && entry.name != ".." {
                        self.fs.entry_sent(entry.attr.ino.0);
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.requests.count(Op::ReleaseDir);
        self.fs.release(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.requests.count(Op::FSyncDir);
        match self.fs.sync_journal() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.fs.requests.count(Op::StatFs);
        match self.fs.statfs() {
            Ok(st) => reply.statfs(
                st.f_blocks,
                st.f_bfree,
                st.f_bavail,
                st.f_files,
                st.f_ffree,
                st.f_bsize as u32,
                255,
                st.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    // Extended attributes are not part of a repository. ENOSYS makes the
    // kernel remember that and answer EOPNOTSUPP itself, instead of asking
    // (security.capability) on every file written.
    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.fs.requests.count(Op::XAttr);
        reply.error(Errno::from_i32(libc::ENOSYS));
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        self.fs.requests.count(Op::XAttr);
        reply.error(Errno::from_i32(libc::ENOSYS));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        self.fs.requests.count(Op::XAttr);
        reply.error(Errno::from_i32(libc::ENOSYS));
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        self.fs.requests.count(Op::XAttr);
        reply.error(Errno::from_i32(libc::ENOSYS));
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        self.fs.requests.count(Op::Access);
        match self.fs.access(ino.0, mask.bits()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
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
        self.fs.requests.count(Op::Create);
        let (attr, opened) = match self.fs.create(parent.0, name, mode, umask, flags) {
            Ok(created) => created,
            Err(e) => return reply.error(errno(e)),
        };
        let fh = FileHandle(opened.fh);
        let decision =
            self.fs
                .backings
                .decide(attr.ino.0, opened.fh, opened.backing.as_ref(), |file| {
                    reply.open_backing(file)
                });
        match decision.mode() {
            OpenMode::Passthrough(id) => reply.created_passthrough(
                &self.fs.ttl(attr.ino.0),
                &attr,
                GENERATION,
                fh,
                FopenFlags::empty(),
                id,
            ),
            OpenMode::Refused => {
                drop(decision);
                self.fs.release(opened.fh);
                reply.error(Errno::from_i32(libc::ETXTBSY))
            }
            OpenMode::Plain => reply.created(
                &self.fs.ttl(attr.ino.0),
                &attr,
                GENERATION,
                fh,
                open_flags(&opened),
            ),
        }
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
        // No ioctl is supported. The kernel asks anyway on every call (it
        // has no "not implemented" memory for ioctl), most often TCGETS
        // from isatty(), as Python's open() makes: ENOTTY says it.
        self.fs.requests.count(Op::IoCtl);
        reply.error(Errno::from_i32(libc::ENOTTY));
    }
}
