//! The filesystem logic, on inode numbers and file handles, without a
//! kernel: the fuser adapter (`super::fuse`) only translates its calls.
//!
//! Locks, always taken in this order:
//!
//! 1. `epoch` (RwLock): the view generation. Writes through a handle hold
//!    it shared while they write; commit, checkout and discard hold it
//!    exclusively while they replace the view, so that no write lands in
//!    a staged file during or after the commit that consumed it.
//! 2. a write handle's own state (Mutex).
//! 3. `session` (RwLock): the session; lookups and reads share it.
//! 4. `inodes`, `handles`, `last_commit` (Mutex, held briefly).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::SystemTime;

use fuser::{FileAttr, FileType, INodeNo};

use super::control::{self, ControlFile, Node, RefKind};
use super::inodes::{InodeTable, ROOT_INO};
use crate::repo::{EntryKind, RefError, Repo};
use crate::session::{NodeKind, Session, SessionError, StagedFile};

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
            eprintln!("zarrfs: {e}");
        }
        FsError(errno)
    }
}

impl From<io::Error> for FsError {
    fn from(e: io::Error) -> FsError {
        match e.raw_os_error() {
            Some(errno) => FsError(errno),
            None => {
                eprintln!("zarrfs: {e}");
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

fn err<T>(errno: i32) -> FsResult<T> {
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
        }
    }
}

/// What `stat` says about a mount path, before it has an inode number.
#[derive(Clone, Copy, Debug)]
struct Meta {
    dir: bool,
    size: u64,
    perm: u32,
    mtime: SystemTime,
}

impl Meta {
    fn dir(perm: u32, mtime: SystemTime) -> Meta {
        Meta {
            dir: true,
            size: 0,
            perm,
            mtime,
        }
    }
}

/// One entry of a directory listing, with its attributes (readdirplus).
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub name: String,
    pub attr: FileAttr,
}

/// What an open handle is.
#[derive(Debug)]
enum Handle {
    /// A view file opened read-only, or a file of a history tree.
    Read { file: File },
    /// A view file opened for writing.
    Write {
        ino: u64,
        append: bool,
        state: Mutex<WriteState>,
    },
    /// A control file: reads come from `content`, taken at open and
    /// again at each read from offset 0.
    Control {
        file: ControlFile,
        content: Mutex<Vec<u8>>,
    },
    /// A directory: its listing, taken at opendir and at rewinddir.
    Dir {
        ino: u64,
        entries: Mutex<Vec<DirEntry>>,
        fresh: AtomicBool,
    },
}

#[derive(Debug)]
struct WriteState {
    staged: StagedFile,
    /// The view generation the staged file belongs to.
    generation: u64,
}

/// How a file was opened, as the kernel should treat it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// Bypass the page cache (control files, whose content is made per
    /// read).
    pub direct_io: bool,
}

/// The filesystem of one mount: a session's view plus `.zarrfs/`.
pub struct Fs {
    repo: Arc<Repo>,
    session: RwLock<Session>,
    epoch: RwLock<u64>,
    inodes: Mutex<InodeTable>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// The outcome of the last commit, as `.zarrfs/commit` reads.
    last_commit: Mutex<String>,
    options: FsOptions,
    started: SystemTime,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn name_str(name: &std::ffi::OsStr) -> FsResult<&str> {
    let name = name.to_str().ok_or(FsError(libc::EINVAL))?;
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return err(libc::EINVAL);
    }
    Ok(name)
}

/// Read up to `size` bytes at `offset`, short only at end of file.
fn read_full(file: &File, offset: u64, size: u32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size as usize];
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
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
            options,
            started: SystemTime::now(),
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
        f(&self.session.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn session_read(&self) -> RwLockReadGuard<'_, Session> {
        self.session.read().unwrap_or_else(|e| e.into_inner())
    }

    fn session_write(&self) -> std::sync::RwLockWriteGuard<'_, Session> {
        self.session.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Make the journal durable if it has unflushed changes (the mount's
    /// background flusher calls this every few seconds).
    pub fn flush_journal(&self) -> FsResult<()> {
        if self.session_read().has_unflushed_changes() {
            self.session_write().flush()?;
        }
        Ok(())
    }

    /// Flush the journal and give back the session (at unmount).
    pub fn into_session(self) -> Session {
        self.session.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    // ---- attributes ----

    fn meta(&self, path: &str) -> FsResult<Option<Meta>> {
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
            Node::Control(file) => Some(Meta {
                dir: false,
                size: 0,
                perm: file.mode(),
                mtime: SystemTime::now(),
            }),
            Node::History { kind, name, path } => self.history_meta(kind, name, path)?,
        })
    }

    /// A history tree's entry: the commit's tree looked up at `path`.
    fn history_entry(
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

    fn history_meta(&self, kind: RefKind, name: &str, path: &str) -> FsResult<Option<Meta>> {
        Ok(self
            .history_entry(kind, name, path)?
            .map(|(entry, mtime)| match entry.kind {
                EntryKind::Dir => Meta::dir(0o555, mtime),
                EntryKind::File => Meta {
                    dir: false,
                    size: entry.size,
                    perm: entry.mode & 0o7555,
                    mtime,
                },
            }))
    }

    fn attr(&self, ino: u64, meta: Meta) -> FileAttr {
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

    /// The attributes of a mount path that exists, numbering it.
    fn attr_of_path(&self, path: &str) -> FsResult<FileAttr> {
        let meta = self.meta(path)?.ok_or(FsError(libc::ENOENT))?;
        let ino = lock(&self.inodes).ino_for(path, meta.dir);
        Ok(self.attr(ino, meta))
    }

    fn path_of(&self, ino: u64) -> FsResult<String> {
        lock(&self.inodes).path(ino).ok_or(FsError(libc::ENOENT))
    }

    fn child_path(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<String> {
        let dir = self.path_of(parent)?;
        Ok(control::join(&dir, name_str(name)?))
    }

    pub fn lookup(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<FileAttr> {
        let path = self.child_path(parent, name)?;
        self.attr_of_path(&path)
    }

    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> FsResult<FileAttr> {
        let path = lock(&self.inodes).path(ino);
        if let Some(path) = path
            && let Some(meta) = self.meta(&path)?
        {
            return Ok(self.attr(ino, meta));
        }
        // Unlinked but open: answer from the handle's file.
        if let Some(fh) = fh
            && let Ok(handle) = self.handle(fh)
        {
            let file = match &*handle {
                Handle::Read { file } => Some(file.metadata()?),
                Handle::Write { state, .. } => Some(lock(state).staged.file.metadata()?),
                _ => None,
            };
            if let Some(m) = file {
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
        }
        err(libc::ENOENT)
    }

    fn view_path<'a>(&self, path: &'a str) -> FsResult<&'a str> {
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
            let handle = fh.and_then(|fh| self.handle(fh).ok());
            match handle.as_deref() {
                Some(h @ Handle::Write { .. }) => {
                    let (_epoch, file) = self.current_write_file(h)?;
                    file.set_len(size)?;
                }
                _ => self.session_write().truncate(p, size)?,
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

    // ---- handles ----

    fn insert_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Arc::new(handle));
        fh
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        lock(&self.handles)
            .get(&fh)
            .cloned()
            .ok_or(FsError(libc::EBADF))
    }

    /// The staged file a write handle writes to now, re-opened in the
    /// current view if the view was replaced since (copy-up there), with
    /// the epoch held shared until the caller's write is done.
    fn current_write_file(
        &self,
        handle: &Handle,
    ) -> FsResult<(RwLockReadGuard<'_, u64>, Arc<File>)> {
        let Handle::Write { ino, state, .. } = handle else {
            return err(libc::EBADF);
        };
        let epoch = self.epoch.read().unwrap_or_else(|e| e.into_inner());
        let mut state = lock(state);
        if state.generation != *epoch {
            let path = self.path_of(*ino).map_err(|_| FsError(libc::ESTALE))?;
            let Some(Node::View(p)) = control::classify(&path) else {
                return err(libc::ESTALE);
            };
            let staged = self.session_write().open_write(p, false)?;
            // The old staged file belonged to a session that is gone:
            // nothing to release there.
            state.staged = staged;
            state.generation = *epoch;
        }
        let file = state.staged.file.clone();
        Ok((epoch, file))
    }

    fn write_handle(&self, ino: u64, append: bool, staged: StagedFile, generation: u64) -> u64 {
        self.insert_handle(Handle::Write {
            ino,
            append,
            state: Mutex::new(WriteState { staged, generation }),
        })
    }

    fn control_content(&self, file: ControlFile) -> FsResult<Vec<u8>> {
        let text = match file {
            ControlFile::Status => control::status_text(&mut self.session_write())?,
            ControlFile::StatusJson => control::status_json(
                &mut self.session_write(),
                &self.options.mountpoint,
                self.options.read_only,
            )?,
            ControlFile::Commit => lock(&self.last_commit).clone(),
            ControlFile::Checkout => format!("{}\n", self.session_read().base()),
            ControlFile::Discard => String::new(),
            ControlFile::Log => {
                let start = control::log_start(&self.session_read())?;
                control::log_text(&self.repo, start)?
            }
            ControlFile::LogJson => {
                let start = control::log_start(&self.session_read())?;
                control::log_json(&self.repo, start)?
            }
            ControlFile::Session => format!("{}\n", self.session_read().id()),
        };
        Ok(text.into_bytes())
    }

    pub fn open(&self, ino: u64, flags: i32) -> FsResult<Opened> {
        let path = self.path_of(ino)?;
        let writing = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let truncate = flags & libc::O_TRUNC != 0;
        match control::classify(&path) {
            None => err(libc::ENOENT),
            Some(Node::ControlDir | Node::Refs(_)) => err(libc::EISDIR),
            Some(Node::Control(file)) => {
                if writing && !file.writable() {
                    return err(libc::EACCES);
                }
                let content = if flags & libc::O_ACCMODE == libc::O_WRONLY {
                    Vec::new()
                } else {
                    self.control_content(file)?
                };
                let fh = self.insert_handle(Handle::Control {
                    file,
                    content: Mutex::new(content),
                });
                Ok(Opened {
                    fh,
                    direct_io: true,
                })
            }
            Some(Node::History { kind, name, path }) => {
                if writing || truncate {
                    return err(libc::EROFS);
                }
                let (entry, _) = self
                    .history_entry(kind, name, path)?
                    .ok_or(FsError(libc::ENOENT))?;
                if entry.kind == EntryKind::Dir {
                    return err(libc::EISDIR);
                }
                let file = File::open(self.repo.objects().blob_path(entry.id))?;
                Ok(Opened {
                    fh: self.insert_handle(Handle::Read { file }),
                    direct_io: false,
                })
            }
            Some(Node::View(p)) => {
                if !writing {
                    let source = self.session_read().open_read(p)?;
                    return Ok(Opened {
                        fh: self.insert_handle(Handle::Read { file: source.file }),
                        direct_io: false,
                    });
                }
                if self.options.read_only {
                    return err(libc::EROFS);
                }
                let epoch = self.epoch.read().unwrap_or_else(|e| e.into_inner());
                let staged = self.session_write().open_write(p, truncate)?;
                let fh = self.write_handle(ino, flags & libc::O_APPEND != 0, staged, *epoch);
                Ok(Opened {
                    fh,
                    direct_io: false,
                })
            }
        }
    }

    pub fn create(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> FsResult<(FileAttr, Opened)> {
        let path = self.child_path(parent, name)?;
        if matches!(control::classify(&path), Some(Node::Control(_)) | None) {
            return err(libc::EACCES);
        }
        let p = self.view_path(&path)?;
        let epoch = self.epoch.read().unwrap_or_else(|e| e.into_inner());
        let staged = {
            let mut session = self.session_write();
            match session.create(p, mode & !umask & 0o7777) {
                Ok(staged) => staged,
                Err(SessionError::Exists(_)) if flags & libc::O_EXCL == 0 => {
                    session.open_write(p, flags & libc::O_TRUNC != 0)?
                }
                Err(e) => return Err(e.into()),
            }
        };
        let generation = *epoch;
        drop(epoch);
        let attr = match self.attr_of_path(&path) {
            Ok(attr) => attr,
            Err(e) => {
                self.session_write().release_write(staged.staged);
                return Err(e);
            }
        };
        let fh = self.write_handle(attr.ino.0, flags & libc::O_APPEND != 0, staged, generation);
        Ok((
            attr,
            Opened {
                fh,
                direct_io: false,
            },
        ))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let handle = self.handle(fh)?;
        match &*handle {
            Handle::Read { file } => Ok(read_full(file, offset, size)?),
            Handle::Write { .. } => {
                let (_epoch, file) = self.current_write_file(&handle)?;
                Ok(read_full(&file, offset, size)?)
            }
            Handle::Control { file, content } => {
                let mut content = lock(content);
                if offset == 0 {
                    *content = self.control_content(*file)?;
                }
                let start = (offset as usize).min(content.len());
                let end = (start + size as usize).min(content.len());
                Ok(content[start..end].to_vec())
            }
            Handle::Dir { .. } => err(libc::EISDIR),
        }
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let handle = self.handle(fh)?;
        match &*handle {
            Handle::Write { append, .. } => {
                let (_epoch, file) = self.current_write_file(&handle)?;
                let offset = if *append {
                    file.metadata()?.len()
                } else {
                    offset
                };
                file.write_all_at(data, offset)?;
                Ok(data.len() as u32)
            }
            Handle::Control { file, .. } => {
                self.control_write(*file, data)?;
                Ok(data.len() as u32)
            }
            _ => err(libc::EBADF),
        }
    }

    pub fn release(&self, fh: u64) {
        let Some(handle) = lock(&self.handles).remove(&fh) else {
            return;
        };
        if let Handle::Write { state, .. } = &*handle {
            let epoch = self.epoch.read().unwrap_or_else(|e| e.into_inner());
            let state = lock(state);
            // A handle of an older view holds nothing in this session.
            if state.generation == *epoch {
                self.session_write().release_write(state.staged.staged);
            }
        }
    }

    pub fn fsync(&self, ino: u64, fh: u64) -> FsResult<()> {
        let handle = self.handle(fh)?;
        match &*handle {
            Handle::Write { .. } => {
                let (_epoch, file) = self.current_write_file(&handle)?;
                file.sync_all()?;
            }
            Handle::Control { .. } | Handle::Read { .. } | Handle::Dir { .. } => {}
        }
        let path = lock(&self.inodes).path(ino);
        let mut session = self.session_write();
        match path.as_deref().and_then(control::classify) {
            Some(Node::View(p)) if session.stat(p).ok().flatten().is_some() => session.fsync(p)?,
            _ => session.flush()?,
        }
        Ok(())
    }

    /// fsyncdir, and anything else that asks for durability of the
    /// journal as a whole.
    pub fn sync_journal(&self) -> FsResult<()> {
        self.session_write().flush()?;
        Ok(())
    }

    // ---- control actions ----

    fn control_write(&self, file: ControlFile, data: &[u8]) -> FsResult<()> {
        if data.is_empty() {
            return Ok(());
        }
        match file {
            ControlFile::Commit => {
                if self.options.read_only {
                    return err(libc::EROFS);
                }
                let message = control::commit_message(data);
                let mut epoch = self.epoch.write().unwrap_or_else(|e| e.into_inner());
                let mut session = self.session_write();
                let result = session.commit(&message);
                *epoch = session.generation();
                drop(session);
                drop(epoch);
                match result {
                    Ok(id) => {
                        *lock(&self.last_commit) = format!("{id}\n");
                        Ok(())
                    }
                    Err(e) => {
                        *lock(&self.last_commit) = format!("{e}\n");
                        Err(e.into())
                    }
                }
            }
            ControlFile::Checkout => {
                let target = String::from_utf8_lossy(data).trim().to_owned();
                let mut epoch = self.epoch.write().unwrap_or_else(|e| e.into_inner());
                let mut session = self.session_write();
                // Session::checkout lets a checkout of the session's own base
                // through with changes, and starts a new session, which
                // would drop them: refuse any checkout while there are
                // changes, as the contract says.
                if !session.status()?.is_empty() {
                    eprintln!("zarrfs: checkout {target:?}: the session has uncommitted changes");
                    return err(libc::EBUSY);
                }
                let result = session.checkout(&target);
                *epoch = session.generation();
                match result {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        eprintln!("zarrfs: checkout {target:?}: {e}");
                        Err(e.into())
                    }
                }
            }
            ControlFile::Discard => {
                let mut epoch = self.epoch.write().unwrap_or_else(|e| e.into_inner());
                let mut session = self.session_write();
                let result = session.discard();
                *epoch = session.generation();
                result.map_err(Into::into)
            }
            _ => err(libc::EBADF),
        }
    }

    // ---- directories ----

    /// The entries of a directory, "." and ".." first.
    fn listing(&self, ino: u64) -> FsResult<Vec<DirEntry>> {
        let path = self.path_of(ino)?;
        let node = control::classify(&path).ok_or(FsError(libc::ENOENT))?;
        let mut children: Vec<(String, Meta)> = Vec::new();
        match node {
            Node::View(p) => {
                for (name, a) in self.session_read().list(p)? {
                    children.push((
                        name,
                        Meta {
                            dir: a.kind == NodeKind::Dir,
                            size: a.size,
                            perm: a.mode & 0o7777,
                            mtime: a.mtime,
                        },
                    ));
                }
                // `.zarrfs` is reachable by name but not listed, as ZFS
                // hides `.zfs`: `cp -r`, `rsync`, `tar` and `du` would
                // otherwise walk into every commit's tree, and Zarr
                // clients would see a node that is not theirs.
            }
            Node::ControlDir => {
                for file in ControlFile::ALL {
                    children.push((
                        file.name().to_owned(),
                        Meta {
                            dir: false,
                            size: 0,
                            perm: file.mode(),
                            mtime: SystemTime::now(),
                        },
                    ));
                }
                for kind in RefKind::ALL {
                    children.push((kind.name().to_owned(), Meta::dir(0o755, self.started)));
                }
            }
            Node::Refs(kind) => {
                let names: Vec<String> = match kind {
                    RefKind::Branches => self
                        .repo
                        .refs()
                        .branches()?
                        .into_iter()
                        .map(|(n, _)| n)
                        .collect(),
                    RefKind::Tags => self
                        .repo
                        .refs()
                        .tags()?
                        .into_iter()
                        .map(|(n, _)| n)
                        .collect(),
                    RefKind::Commits => {
                        let start = control::log_start(&self.session_read())?;
                        let mut ids = Vec::new();
                        for entry in self.repo.log(start).take(control::COMMITS_LISTED) {
                            ids.push(entry?.0.to_hex());
                        }
                        ids
                    }
                };
                for name in names {
                    if let Some(meta) = self.history_meta(kind, &name, "")? {
                        children.push((name, meta));
                    }
                }
            }
            Node::History { kind, name, path } => {
                let (entry, mtime) = self
                    .history_entry(kind, name, path)?
                    .ok_or(FsError(libc::ENOENT))?;
                if entry.kind != EntryKind::Dir {
                    return err(libc::ENOTDIR);
                }
                for child in self.repo.trees().list(entry.id)? {
                    let meta = match child.kind {
                        EntryKind::Dir => Meta::dir(0o555, mtime),
                        EntryKind::File => Meta {
                            dir: false,
                            size: child.size,
                            perm: child.mode & 0o7555,
                            mtime,
                        },
                    };
                    children.push((child.name, meta));
                }
            }
            Node::Control(_) => return err(libc::ENOTDIR),
        }
        let own = self.meta(&path)?.unwrap_or(Meta::dir(0o755, self.started));
        let parent_path = control::parent(&path).to_owned();
        let mut out = Vec::with_capacity(children.len() + 2);
        let mut inodes = lock(&self.inodes);
        let parent_ino = if ino == ROOT_INO {
            ROOT_INO
        } else {
            inodes.ino_for(&parent_path, true)
        };
        out.push(DirEntry {
            name: ".".into(),
            attr: self.attr(ino, own),
        });
        out.push(DirEntry {
            name: "..".into(),
            attr: self.attr(parent_ino, Meta::dir(0o755, own.mtime)),
        });
        for (name, meta) in children {
            let child_ino = inodes.ino_for(&control::join(&path, &name), meta.dir);
            out.push(DirEntry {
                name,
                attr: self.attr(child_ino, meta),
            });
        }
        Ok(out)
    }

    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let entries = self.listing(ino)?;
        Ok(self.insert_handle(Handle::Dir {
            ino,
            entries: Mutex::new(entries),
            fresh: AtomicBool::new(true),
        }))
    }

    /// The entries from `offset` on (an entry's offset cookie is its index
    /// plus one). Reading from offset 0 again lists afresh (rewinddir).
    pub fn readdir(&self, fh: u64, offset: u64) -> FsResult<Vec<(u64, DirEntry)>> {
        let handle = self.handle(fh)?;
        let Handle::Dir {
            ino,
            entries,
            fresh,
        } = &*handle
        else {
            return err(libc::ENOTDIR);
        };
        let mut entries = lock(entries);
        if offset == 0 && !fresh.swap(false, Ordering::Relaxed) {
            *entries = self.listing(*ino)?;
        }
        fresh.store(false, Ordering::Relaxed);
        Ok(entries
            .iter()
            .enumerate()
            .skip(offset as usize)
            .map(|(i, e)| (i as u64 + 1, e.clone()))
            .collect())
    }

    // ---- namespace changes ----

    pub fn mkdir(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<FileAttr> {
        let path = self.child_path(parent, name)?;
        match control::classify(&path) {
            Some(Node::History {
                kind: kind @ (RefKind::Branches | RefKind::Tags),
                name,
                path: "",
            }) => {
                if self.options.read_only {
                    return err(libc::EROFS);
                }
                let base = self.session_read().base();
                let refs = self.repo.refs();
                match kind {
                    RefKind::Branches => refs.create_branch(name, base)?,
                    _ => refs.create_tag(name, base)?,
                }
                return self.attr_of_path(&path);
            }
            Some(Node::View(_)) => {}
            Some(Node::History { .. } | Node::Refs(_)) => return err(libc::EROFS),
            Some(_) => return err(libc::EEXIST),
            None => return err(libc::EPERM),
        }
        let p = self.view_path(&path)?;
        self.session_write().mkdir(p)?;
        self.attr_of_path(&path)
    }

    pub fn unlink(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<()> {
        let path = self.child_path(parent, name)?;
        let p = self.view_path(&path)?;
        self.session_write().unlink(p)?;
        lock(&self.inodes).remove(&path);
        Ok(())
    }

    pub fn rmdir(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<()> {
        let path = self.child_path(parent, name)?;
        let p = self.view_path(&path)?;
        self.session_write().rmdir(p)?;
        lock(&self.inodes).remove(&path);
        Ok(())
    }

    /// rename(2), with renameat2's RENAME_NOREPLACE; RENAME_EXCHANGE and
    /// RENAME_WHITEOUT are refused (EINVAL).
    pub fn rename(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        new_parent: u64,
        new_name: &std::ffi::OsStr,
        flags: u32,
    ) -> FsResult<()> {
        if flags & !libc::RENAME_NOREPLACE != 0 {
            return err(libc::EINVAL);
        }
        let from_path = self.child_path(parent, name)?;
        let to_path = self.child_path(new_parent, new_name)?;
        let from = self.view_path(&from_path)?;
        let to = match self.view_path(&to_path) {
            Ok(to) => to,
            Err(FsError(libc::EPERM | libc::EROFS)) => return err(libc::EXDEV),
            Err(e) => return Err(e),
        };
        {
            let mut session = self.session_write();
            if flags & libc::RENAME_NOREPLACE != 0 && session.stat(to)?.is_some() {
                return err(libc::EEXIST);
            }
            session.rename(from, to)?;
        }
        lock(&self.inodes).rename(&from_path, &to_path);
        Ok(())
    }

    /// link(2): the new name is a copy (the repository has no hard links).
    pub fn link(
        &self,
        ino: u64,
        new_parent: u64,
        new_name: &std::ffi::OsStr,
    ) -> FsResult<FileAttr> {
        let from_path = self.path_of(ino)?;
        let to_path = self.child_path(new_parent, new_name)?;
        let from = self.view_path(&from_path)?;
        let to = match self.view_path(&to_path) {
            Ok(to) => to,
            Err(FsError(libc::EPERM | libc::EROFS)) => return err(libc::EXDEV),
            Err(e) => return Err(e),
        };
        self.session_write().link(from, to)?;
        self.attr_of_path(&to_path)
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
    //! The filesystem driven directly, without a kernel.

    use std::ffi::OsStr;

    use super::*;
    use crate::repo::DEFAULT_BRANCH;
    use crate::session::SessionOptions;

    fn fs() -> (tempfile::TempDir, Fs) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Arc::new(Repo::init(&dir.path().join("repo")).unwrap());
        let session = Session::start(repo, SessionOptions::new(DEFAULT_BRANCH)).unwrap();
        (dir, Fs::new(session, FsOptions::new("/nowhere")))
    }

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    /// The inode of a mount path, walking from the root.
    fn ino(fs: &Fs, path: &str) -> FsResult<u64> {
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = fs.lookup(ino, name(part))?.ino.0;
        }
        Ok(ino)
    }

    fn write_file(fs: &Fs, dir: &str, file: &str, bytes: &[u8]) {
        let parent = ino(fs, dir).unwrap();
        let (_, opened) = fs
            .create(
                parent,
                name(file),
                0o644,
                0o022,
                libc::O_WRONLY | libc::O_TRUNC,
            )
            .unwrap();
        assert_eq!(fs.write(opened.fh, 0, bytes).unwrap() as usize, bytes.len());
        fs.release(opened.fh);
    }

    fn read_file(fs: &Fs, path: &str) -> FsResult<Vec<u8>> {
        let opened = fs.open(ino(fs, path)?, libc::O_RDONLY)?;
        let data = fs.read(opened.fh, 0, 1 << 20);
        fs.release(opened.fh);
        data
    }

    fn control(fs: &Fs, file: &str, text: &str) -> FsResult<()> {
        let opened = fs.open(ino(fs, &format!(".zarrfs/{file}"))?, libc::O_WRONLY)?;
        assert!(opened.direct_io);
        let result = fs.write(opened.fh, 0, text.as_bytes());
        fs.release(opened.fh);
        result.map(|_| ())
    }

    fn names(fs: &Fs, path: &str) -> Vec<String> {
        let fh = fs.opendir(ino(fs, path).unwrap()).unwrap();
        let entries = fs.readdir(fh, 0).unwrap();
        fs.release(fh);
        entries.into_iter().map(|(_, e)| e.name).collect()
    }

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
        assert_eq!(names(&fs, ""), [".", "..", ".zarrfs", "g"]);
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
    fn control_files_commit_and_report() {
        let (_dir, fs) = fs();
        assert_eq!(
            control(&fs, "commit", "nothing\n"),
            Err(FsError(libc::ENODATA))
        );
        assert!(
            String::from_utf8(read_file(&fs, ".zarrfs/commit").unwrap())
                .unwrap()
                .contains("nothing to commit")
        );
        write_file(&fs, "", "zarr.json", b"{broken");
        assert_eq!(control(&fs, "commit", "bad\n"), Err(FsError(libc::EINVAL)));
        let status = String::from_utf8(read_file(&fs, ".zarrfs/status").unwrap()).unwrap();
        assert!(status.contains("  A [M] zarr.json"), "{status}");
        write_file(&fs, "", "zarr.json", br#"{"zarr_format": 3}"#);
        let session = read_file(&fs, ".zarrfs/session").unwrap();
        control(&fs, "commit", r#"{"message": "from a tool"}"#).unwrap();
        assert_ne!(read_file(&fs, ".zarrfs/session").unwrap(), session);
        let log = String::from_utf8(read_file(&fs, ".zarrfs/log").unwrap()).unwrap();
        assert!(log.contains("    from a tool"), "{log}");
        let id = String::from_utf8(read_file(&fs, ".zarrfs/commit").unwrap()).unwrap();
        assert_eq!(
            read_file(&fs, &format!(".zarrfs/commits/{}/zarr.json", id.trim())).unwrap(),
            br#"{"zarr_format": 3}"#
        );
        assert_eq!(
            fs.open(ino(&fs, ".zarrfs/status").unwrap(), libc::O_WRONLY),
            Err(FsError(libc::EACCES))
        );
        // A zero-byte write does nothing.
        control(&fs, "discard", "").unwrap();
        // Checkout is refused with changes.
        write_file(&fs, "", "x", b"x");
        assert_eq!(control(&fs, "checkout", "\n"), Err(FsError(libc::EBUSY)));
        control(&fs, "discard", "\n").unwrap();
        control(&fs, "checkout", "\n").unwrap();
        fs.mkdir(ino(&fs, ".zarrfs/branches").unwrap(), name("dev"))
            .unwrap();
        assert_eq!(names(&fs, ".zarrfs/branches"), [".", "..", "dev", "main"]);
        assert_eq!(
            fs.mkdir(ino(&fs, ".zarrfs/branches/dev").unwrap(), name("x")),
            Err(FsError(libc::EROFS))
        );
    }

    #[test]
    fn a_write_handle_reopens_in_the_new_view() {
        let (_dir, fs) = fs();
        write_file(&fs, "", "f", b"one");
        let opened = fs.open(ino(&fs, "f").unwrap(), libc::O_RDWR).unwrap();
        fs.write(opened.fh, 3, b" two").unwrap();
        control(&fs, "commit", "c1\n").unwrap();
        let c1 = String::from_utf8(read_file(&fs, ".zarrfs/commit").unwrap()).unwrap();
        fs.write(opened.fh, 7, b" three").unwrap();
        assert_eq!(fs.read(opened.fh, 0, 100).unwrap(), b"one two three");
        fs.release(opened.fh);
        assert_eq!(read_file(&fs, "f").unwrap(), b"one two three");
        assert_eq!(
            read_file(&fs, &format!(".zarrfs/commits/{}/f", c1.trim())).unwrap(),
            b"one two",
            "the committed bytes are untouched"
        );
    }
}
