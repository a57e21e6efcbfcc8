//! The filesystem logic, on inode numbers and file handles, without a
//! kernel: the fuser adapter (`super::fuse`) only translates its calls.
//!
//! This module holds [`Fs`] itself, its errors and options, attributes,
//! and the calls on one name or inode: lookup, getattr, setattr, access,
//! statfs. Changes of names (mkdir, unlink, rmdir, rename, link) are in
//! `super::namespace`, open files in `super::handles`, directory
//! listings in `super::listing`, and the control files' reads and
//! actions in `super::control`.
//!
//! Locks, always taken in this order:
//!
//! 1. `epoch` (RwLock): the view generation. Writes through a handle hold
//!    it shared while they write; commit, checkout and discard hold it
//!    exclusively while they replace the view, so that no write lands in
//!    a staged file during or after the commit that consumed it.
//! 2. a write handle's own state (Mutex).
//! 3. `session` (RwLock): the session; lookups and reads share it.
//! 4. `inodes`, `handles`, `last_commit`, `commit_progress` (Mutex, held
//!    briefly).
//! 5. `prefetch`'s sequences, then its job queue (Mutexes, held briefly
//!    and never while waiting: its worker takes `session` shared, holding
//!    nothing else).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use fuser::{FileAttr, FileType, INodeNo};

use super::control::{self, Node, RefKind};
use super::handles::Handle;
use super::inodes::InodeTable;
use super::passthrough::BackingKey;
use crate::repo::{EntryKind, RefError, Repo};
use crate::session::{NodeKind, SealPass, Session, SessionError};

/// An errno, the only thing a failed filesystem call can say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsError(pub i32);

pub type FsResult<T> = Result<T, FsError>;

impl From<SessionError> for FsError {
    fn from(e: SessionError) -> FsError {
        let errno = e.errno();
        if matches!(errno, libc::EIO | libc::EAGAIN)
            || matches!(e, SessionError::Io(_) | SessionError::Repo(_))
        {
            tracing::error!("{e}");
        }
        FsError(errno)
    }
}

impl From<io::Error> for FsError {
    fn from(e: io::Error) -> FsError {
        match e.raw_os_error() {
            Some(errno) => FsError(errno),
            None => {
                tracing::error!("{e}");
                FsError(libc::EIO)
            }
        }
    }
}

impl From<RefError> for FsError {
    fn from(e: RefError) -> FsError {
        match e {
            RefError::InvalidName(_) => FsError(libc::EINVAL),
            RefError::Exists(_) => FsError(libc::EEXIST),
            RefError::NotFound(_) => FsError(libc::ENOENT),
            RefError::Io(e) => e.into(),
        }
    }
}

pub(super) fn err<T>(errno: i32) -> FsResult<T> {
    Err(FsError(errno))
}

/// How a mount is set up.
#[derive(Clone, Debug)]
pub struct FsOptions {
    pub read_only: bool,
    /// The owner shown for every file.
    pub uid: u32,
    pub gid: u32,
    /// Where it is mounted, for `status.json`.
    pub mountpoint: String,
    /// The daemon's log file, for `status.json` (`None`: standard error).
    pub log: Option<String>,
    /// How long a closed file waits before it is sealed (stored ahead of
    /// the commit); `None`: never.
    pub seal_delay: Option<Duration>,
    /// Serve requests over FUSE's io_uring queues where the kernel offers
    /// them (`--io-uring`; see vendor/fuser/ZARRFS.md).
    pub io_uring: bool,
    /// Read ahead the files a program reading a directory in sequence
    /// will open next (`super::prefetch`; `--no-prefetch` turns it off).
    pub prefetch: bool,
}

impl FsOptions {
    pub fn new(mountpoint: &str) -> FsOptions {
        // SAFETY: getuid and getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        FsOptions {
            read_only: false,
            uid,
            gid,
            mountpoint: mountpoint.to_owned(),
            log: None,
            seal_delay: Some(super::daemon::SEAL_DELAY),
            io_uring: false,
            prefetch: true,
        }
    }
}

/// What `stat` says about a mount path, before it has an inode number.
#[derive(Clone, Copy, Debug)]
pub(super) struct Meta {
    pub dir: bool,
    pub size: u64,
    pub perm: u32,
    pub mtime: SystemTime,
}

impl Meta {
    pub fn dir(perm: u32, mtime: SystemTime) -> Meta {
        Meta {
            dir: true,
            size: 0,
            perm,
            mtime,
        }
    }

    /// An entry of a history tree, whose files are read-only.
    pub fn history(entry: &crate::repo::Entry, mtime: SystemTime) -> Meta {
        match entry.kind {
            EntryKind::Dir => Meta::dir(0o555, mtime),
            EntryKind::File => Meta {
                dir: false,
                size: entry.size,
                perm: entry.mode & 0o7555,
                mtime,
            },
        }
    }

    /// A control file: empty-looking, made fresh on each read.
    pub fn control(file: control::ControlFile) -> Meta {
        Meta {
            dir: false,
            size: 0,
            perm: file.mode(),
            mtime: SystemTime::now(),
        }
    }
}

/// One entry of a directory listing, with its attributes (readdirplus).
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: String,
    pub attr: FileAttr,
}

/// The filesystem of one mount: a session's view plus `.zarrfs/`.
pub struct Fs {
    pub(super) repo: Arc<Repo>,
    pub(super) session: RwLock<Session>,
    pub(super) epoch: RwLock<u64>,
    pub(super) inodes: Mutex<InodeTable>,
    pub(super) handles: Mutex<HashMap<u64, Arc<Handle>>>,
    pub(super) next_fh: AtomicU64,
    /// The outcome of the last commit, as `.zarrfs/commit` reads.
    pub(super) last_commit: Mutex<String>,
    /// The files the kernel reads and writes itself (FUSE passthrough).
    pub backings: super::passthrough::Backings,
    /// Whether the kernel's requests come over io_uring queues (set once
    /// mounted).
    pub io_uring: std::sync::atomic::AtomicBool,
    /// How far the running commit is, for `.zarrfs/progress`.
    pub(super) commit_progress: Mutex<Option<crate::session::CommitProgress>>,
    pub(super) options: FsOptions,
    pub(super) started: SystemTime,
    /// How to tell the kernel to drop cached entries (set once mounted).
    pub notifier: std::sync::OnceLock<fuser::Notifier>,
    /// Asks the mount's invalidation thread to make the kernel forget
    /// the whole view in the background (set once mounted).
    pub background_invalidation: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    /// The kernel's requests, by kind (logged at unmount).
    pub requests: super::request_counts::RequestCounts,
    /// Reads ahead across files (once mounted, see `Fs::start_prefetch`).
    pub(super) prefetch: super::prefetch::Prefetcher,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn name_str(name: &std::ffi::OsStr) -> FsResult<&str> {
    let name = name.to_str().ok_or(FsError(libc::EINVAL))?;
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return err(libc::EINVAL);
    }
    Ok(name)
}

impl Fs {
    pub fn new(session: Session, options: FsOptions) -> Fs {
        let generation = session.generation();
        Fs {
            repo: session.repo().clone(),
            session: RwLock::new(session),
            epoch: RwLock::new(generation),
            inodes: Mutex::new(InodeTable::new()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            last_commit: Mutex::new(String::new()),
            commit_progress: Mutex::new(None),
            backings: Default::default(),
            io_uring: Default::default(),
            options,
            started: SystemTime::now(),
            notifier: std::sync::OnceLock::new(),
            background_invalidation: Mutex::new(None),
            requests: Default::default(),
            prefetch: Default::default(),
        }
    }

    pub fn options(&self) -> &FsOptions {
        &self.options
    }

    pub fn repo(&self) -> &Arc<Repo> {
        &self.repo
    }

    /// Run `f` with the session, shared.
    pub fn with_session<T>(&self, f: impl FnOnce(&Session) -> T) -> T {
        f(&self.session_read())
    }

    pub(super) fn session_read(&self) -> RwLockReadGuard<'_, Session> {
        self.session.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn session_write(&self) -> RwLockWriteGuard<'_, Session> {
        self.session.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn epoch_read(&self) -> RwLockReadGuard<'_, u64> {
        self.epoch.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn epoch_write(&self) -> RwLockWriteGuard<'_, u64> {
        self.epoch.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Make the journal durable if it has unflushed changes (the mount's
    /// background flusher calls this every few seconds, and sooner when
    /// [`Fs::journal_wants_flush`]). The batch is written while requests
    /// go on: the session is held only to set it aside and to take the
    /// result.
    pub fn flush_journal(&self) -> FsResult<()> {
        if !self.session_read().has_unflushed_changes() {
            return Ok(());
        }
        let Some(job) = self.session_write().begin_flush() else {
            return Ok(());
        };
        let written = job.write();
        self.session_write().finish_flush(job, written)?;
        Ok(())
    }

    /// Whether enough journal changes are pending that the flusher should
    /// not wait for its interval.
    pub fn journal_wants_flush(&self) -> bool {
        self.session_read().wants_flush()
    }

    /// Seal the session's files that have been closed for `delay`, at
    /// most `limit` of them (the mount's sealing worker calls this; see
    /// `crate::session::Sealer`). Files the kernel holds open for reading
    /// wait, so that they can still be opened for writing beside those
    /// reads.
    pub fn seal_closed_files(&self, delay: Duration, limit: usize) -> SealPass {
        let (sealer, generation) = {
            let session = self.session_read();
            (session.sealer(), session.generation())
        };
        sealer.seal_due(delay, limit, &|staged| {
            self.backings
                .holds(BackingKey::Staged { generation, staged })
        })
    }

    /// Make the files sealed so far durable (see
    /// `crate::session::Sealer::sync_sealed`).
    pub fn sync_sealed_files(&self) -> FsResult<()> {
        let sealer = self.session_read().sealer();
        Ok(sealer.sync_sealed()?)
    }

    /// fsyncdir, and anything else that asks for durability of the
    /// journal as a whole.
    pub fn sync_journal(&self) -> FsResult<()> {
        self.session_write().flush()?;
        Ok(())
    }

    /// Flush the journal and give back the session (at unmount).
    pub fn into_session(self) -> Session {
        self.session.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    // ---- attributes ----

    pub(super) fn meta(&self, path: &str) -> FsResult<Option<Meta>> {
        let Some(node) = control::classify(path) else {
            return Ok(None);
        };
        Ok(match node {
            Node::View(p) => self.session_read().stat(p)?.map(|a| Meta {
                dir: a.kind == NodeKind::Dir,
                size: a.size,
                perm: a.mode & 0o7777,
                mtime: a.mtime,
            }),
            Node::ControlDir => Some(Meta::dir(0o755, self.started)),
            Node::Refs(_) => Some(Meta::dir(0o755, self.started)),
            Node::Control(file) => Some(Meta::control(file)),
            Node::History { kind, name, path } => self.history_meta(kind, name, path)?,
        })
    }

    /// A history tree's entry: the commit's tree looked up at `path`.
    pub(super) fn history_entry(
        &self,
        kind: RefKind,
        name: &str,
        path: &str,
    ) -> FsResult<Option<(crate::repo::Entry, SystemTime)>> {
        let Some(commit) = control::history_commit(&self.repo, kind, name)? else {
            return Ok(None);
        };
        let record = self.repo.commit_record(commit)?;
        let mtime = humantime::parse_rfc3339(&record.date).unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(self
            .repo
            .trees()
            .lookup(record.tree, path)?
            .map(|e| (e, mtime)))
    }

    pub(super) fn history_meta(
        &self,
        kind: RefKind,
        name: &str,
        path: &str,
    ) -> FsResult<Option<Meta>> {
        Ok(self
            .history_entry(kind, name, path)?
            .map(|(entry, mtime)| Meta::history(&entry, mtime)))
    }

    pub(super) fn attr(&self, ino: u64, meta: Meta) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: meta.size,
            blocks: meta.size.div_ceil(512),
            atime: meta.mtime,
            mtime: meta.mtime,
            ctime: meta.mtime,
            crtime: meta.mtime,
            kind: if meta.dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: (meta.perm & 0o7777) as u16,
            nlink: if meta.dir { 2 } else { 1 },
            uid: self.options.uid,
            gid: self.options.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The entry of a mount path that exists, for a reply that hands it
    /// to the kernel (lookup, create, mkdir, link): numbered, and counted
    /// as one lookup, which the kernel gives back with `forget`.
    pub(super) fn entry_of_path(&self, path: &str) -> FsResult<FileAttr> {
        let meta = self.meta(path)?.ok_or(FsError(libc::ENOENT))?;
        let ino = lock(&self.inodes).lookup(path, meta.dir);
        Ok(self.attr(ino, meta))
    }

    /// The entry of the file just created at `path`, whose staged file is
    /// `file`: from that file, without looking the path up again (which
    /// was half of what a CREATE cost the daemon).
    pub(super) fn entry_of_new_file(
        &self,
        path: &str,
        perm: u32,
        file: &File,
    ) -> FsResult<FileAttr> {
        let stat = file.metadata()?;
        let meta = Meta {
            dir: false,
            size: stat.len(),
            perm,
            mtime: stat.modified()?,
        };
        let ino = lock(&self.inodes).lookup(path, false);
        Ok(self.attr(ino, meta))
    }

    /// The kernel was handed an entry of a directory listing
    /// (readdirplus), other than `.` and `..`: count it as a lookup.
    pub fn entry_sent(&self, ino: u64) {
        lock(&self.inodes).looked_up(ino);
    }

    /// forget(ino, nlookup): the kernel drops `nlookup` lookups of
    /// `ino`. Once neither the kernel nor an open handle holds an inode,
    /// its number is dropped (see `super::inodes`).
    pub fn forget(&self, ino: u64, nlookup: u64) {
        lock(&self.inodes).forget(ino, nlookup);
    }

    /// How many inodes the mount holds now (the root included).
    pub fn inode_count(&self) -> usize {
        lock(&self.inodes).len()
    }

    pub(super) fn path_of(&self, ino: u64) -> FsResult<String> {
        lock(&self.inodes).path(ino).ok_or(FsError(libc::ENOENT))
    }

    pub(super) fn child_path(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<String> {
        let dir = self.path_of(parent)?;
        Ok(control::join(&dir, name_str(name)?))
    }

    pub fn lookup(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<FileAttr> {
        let path = self.child_path(parent, name)?;
        let entry = self.entry_of_path(&path);
        tracing::trace!(path, found = entry.is_ok(), "lookup");
        entry
    }

    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> FsResult<FileAttr> {
        let path = lock(&self.inodes).path(ino);
        if let Some(path) = path
            && let Some(meta) = self.meta(&path)?
        {
            return Ok(self.attr(ino, meta));
        }
        // Unlinked (or detached by a view switch) but open: answer from
        // the handle's file.
        if let Some(m) = fh
            .or_else(|| self.handle_on(ino))
            .map(|fh| self.handle_file_metadata(fh))
            .transpose()?
            .flatten()
        {
            let mut attr = self.attr(
                ino,
                Meta {
                    dir: false,
                    size: m.len(),
                    perm: 0o644,
                    mtime: m.modified().unwrap_or(self.started),
                },
            );
            attr.nlink = 0;
            return Ok(attr);
        }
        err(libc::ENOENT)
    }

    pub(super) fn view_path<'a>(&self, path: &'a str) -> FsResult<&'a str> {
        match control::classify(path) {
            Some(Node::View(p)) => {
                if self.options.read_only {
                    err(libc::EROFS)
                } else {
                    Ok(p)
                }
            }
            Some(Node::History { .. } | Node::Refs(RefKind::Commits)) => err(libc::EROFS),
            // The control directory and names under it that do not exist.
            Some(_) | None => err(libc::EPERM),
        }
    }

    pub fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        size: Option<u64>,
        mtime: Option<SystemTime>,
        fh: Option<u64>,
    ) -> FsResult<FileAttr> {
        let path = self.path_of(ino)?;
        match control::classify(&path) {
            Some(Node::Control(_) | Node::ControlDir | Node::Refs(_)) => {
                // Truncation comes with `echo > .zarrfs/commit`; touch is
                // harmless. Modes are fixed.
                if mode.is_some() {
                    return err(libc::EPERM);
                }
                return self.getattr(ino, fh);
            }
            Some(Node::History { .. }) => return err(libc::EROFS),
            None => return err(libc::ENOENT),
            Some(Node::View(_)) => {}
        }
        let p = self.view_path(&path)?;
        if let Some(size) = size {
            let through_handle = match fh {
                Some(fh) => self.truncate_through_handle(fh, size)?,
                None => false,
            };
            if !through_handle {
                // Truncating committed bytes by name copies them up: not
                // while the kernel reads them through passthrough.
                let generation = *self.epoch_read();
                self.check_write_backing(ino, p, generation)?;
                self.session_write().truncate(p, size)?;
            }
        }
        if let Some(mode) = mode {
            self.session_write().set_mode(p, mode)?;
        }
        if let Some(mtime) = mtime {
            self.session_write().set_mtime(p, mtime)?;
        }
        self.getattr(ino, fh)
    }

    /// access(2): whether the path exists and, for W_OK, is writable here.
    pub fn access(&self, ino: u64, mask: i32) -> FsResult<()> {
        let path = self.path_of(ino)?;
        let meta = self.meta(&path)?.ok_or(FsError(libc::ENOENT))?;
        if mask & libc::W_OK != 0 {
            match control::classify(&path) {
                Some(Node::View(_)) if self.options.read_only => return err(libc::EROFS),
                Some(Node::History { path: "", .. }) | Some(Node::Refs(_)) => {}
                Some(Node::History { .. }) => return err(libc::EROFS),
                Some(Node::Control(file)) if !file.writable() => return err(libc::EACCES),
                _ => {}
            }
        }
        if mask & libc::X_OK != 0 && !meta.dir && meta.perm & 0o111 == 0 {
            return err(libc::EACCES);
        }
        Ok(())
    }

    /// statfs(2): the repository's filesystem.
    pub fn statfs(&self) -> FsResult<libc::statvfs> {
        let path = std::ffi::CString::new(self.repo.path().as_os_str().as_encoded_bytes())
            .map_err(|_| FsError(libc::EINVAL))?;
        // SAFETY: statvfs fills the struct we pass; the path is a valid C string.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    //! Names and attributes, driven directly without a kernel.

    use super::super::inodes::ROOT_INO;
    use super::super::testing::*;
    use super::*;

    #[test]
    fn files_and_directories_without_a_kernel() {
        let (_dir, fs) = fs();
        fs.mkdir(ROOT_INO, name("g")).unwrap();
        write_file(&fs, "g", "f.partial", b"data");
        let g = ino(&fs, "g").unwrap();
        let tmp_ino = ino(&fs, "g/f.partial").unwrap();
        fs.rename(g, name("f.partial"), g, name("f"), 0).unwrap();
        assert_eq!(ino(&fs, "g/f").unwrap(), tmp_ino, "the number moves");
        assert_eq!(read_file(&fs, "g/f").unwrap(), b"data");
        assert_eq!(ino(&fs, "g/f.partial"), Err(FsError(libc::ENOENT)));
        assert_eq!(names(&fs, "g"), [".", "..", "f"]);
        assert_eq!(
            fs.rename(g, name("f"), g, name("f"), libc::RENAME_EXCHANGE),
            Err(FsError(libc::EINVAL))
        );
        assert_eq!(
            fs.mkdir(ROOT_INO, name("g")).unwrap_err(),
            FsError(libc::EEXIST)
        );
        fs.link(ino(&fs, "g/f").unwrap(), g, name("copy")).unwrap();
        assert_eq!(
            fs.link(ino(&fs, "g/f").unwrap(), g, name("copy")),
            Err(FsError(libc::EEXIST))
        );
        let attr = fs
            .setattr(ino(&fs, "g/f").unwrap(), Some(0o600), Some(2), None, None)
            .unwrap();
        assert_eq!((attr.perm, attr.size), (0o600, 2));
        assert_eq!(read_file(&fs, "g/copy").unwrap(), b"data");
    }

    #[test]
    fn rmdir_deletes_branches_but_not_tags() {
        let (_dir, fs) = fs();
        let branches = ino(&fs, ".zarrfs/branches").unwrap();
        let tags = ino(&fs, ".zarrfs/tags").unwrap();
        fs.mkdir(branches, name("dev")).unwrap();
        fs.mkdir(tags, name("v1")).unwrap();
        assert_eq!(fs.rmdir(branches, name("main")), Err(FsError(libc::EBUSY)));
        assert_eq!(fs.rmdir(tags, name("v1")), Err(FsError(libc::EPERM)));
        assert_eq!(fs.rmdir(branches, name("nope")), Err(FsError(libc::ENOENT)));
        let base = fs.with_session(|s| s.base().to_hex());
        let commits = ino(&fs, ".zarrfs/commits").unwrap();
        assert_eq!(fs.rmdir(commits, name(&base)), Err(FsError(libc::EROFS)));
        fs.rmdir(branches, name("dev")).unwrap();
        assert_eq!(names(&fs, ".zarrfs/branches"), [".", "..", "main"]);
        assert_eq!(ino(&fs, ".zarrfs/branches/dev"), Err(FsError(libc::ENOENT)));
        fs.mkdir(branches, name("dev")).unwrap();
        assert_eq!(names(&fs, ".zarrfs/branches"), [".", "..", "dev", "main"]);
    }

    /// The kernel's side of lookup counting, played by hand: whatever it
    /// was handed and forgot, and is not open, leaves the inode table.
    #[test]
    fn forgotten_inodes_leave_the_table() {
        let (_dir, fs) = fs();
        let start = fs.inode_count();
        let d = fs.mkdir(ROOT_INO, name("d")).unwrap().ino.0;
        let mut inos = Vec::new();
        for i in 0..1000 {
            let (attr, opened) = fs
                .create(d, name(&format!("c{i}")), 0o644, 0o022, libc::O_WRONLY)
                .unwrap();
            fs.release(opened.fh);
            inos.push(attr.ino.0);
        }
        assert_eq!(fs.inode_count(), start + 1001);
        // A listing pins what it shows until released; readdirplus
        // entries count as lookups.
        let fh = fs.opendir(d).unwrap();
        let listed = fs.readdir(fh, 0).unwrap();
        for (_, entry) in &listed[2..] {
            fs.entry_sent(entry.attr.ino.0);
        }
        fs.release(fh);
        for ino in &inos {
            fs.forget(*ino, 2);
        }
        assert_eq!(fs.inode_count(), start + 1, "only d is left");

        // An open file keeps its number however often it is forgotten:
        // fstat agrees with the lstat made before.
        let f = fs.lookup(d, name("c7")).unwrap().ino.0;
        assert!(!inos.contains(&f), "a number is never reused");
        let opened = fs.open(f, libc::O_RDONLY).unwrap();
        fs.forget(f, 1);
        assert_eq!(fs.getattr(f, Some(opened.fh)).unwrap().ino.0, f);
        assert_eq!(fs.lookup(d, name("c7")).unwrap().ino.0, f);
        fs.forget(f, 1);
        fs.release(opened.fh);
        fs.forget(d, 1);
        assert_eq!(fs.inode_count(), start);
        assert_eq!(fs.getattr(f, None), Err(FsError(libc::ENOENT)));
        let d2 = fs.lookup(ROOT_INO, name("d")).unwrap().ino.0;
        assert!(d2 > f, "shown again, d is a new inode");
        assert!(fs.lookup(d2, name("c7")).unwrap().ino.0 > d2);
    }
}
