//! Storage: the only place that does repository I/O.
//!
//! A [`Storage`] is a flat key-value store over a local directory: keys are
//! `/`-separated relative paths, values are whole immutable files. It offers
//! `put`, `get`, `put_if_absent`, `list` and `delete`, and nothing that a
//! plain object store could not offer later.
//!
//! `put_if_absent` is the one atomic primitive the repository builds on: a
//! ref moves by creating its next version with it. Locally it writes a
//! temporary file, makes it durable, and `link(2)`s it to the key: `link`
//! fails with `EEXIST` if the key exists, atomically, on local disks and on
//! NFS alike, and the key never shows partial content. A commit uses its
//! two halves, [`Storage::prepare_put`] and [`Storage::link_if_absent`],
//! so that the temporary file is made durable with the commit's objects
//! (an object store's conditional write has no such halves: there the
//! pair will be one request).
//!
//! Durability is explicit: `put` does not fsync (objects are written in bulk
//! and made durable together by [`Storage::sync`] before a ref points at
//! them), `put_if_absent` always does.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where files are written before they are linked or renamed under
/// their key.
const TMP_DIR: &str = "tmp";

/// Above this many files to make durable, one `syncfs(2)` is cheaper than
/// an `fsync(2)` per file.
pub const SYNCFS_THRESHOLD: usize = 64;

/// The flock(2) operation for a shared or an exclusive lock.
fn flock_mode(exclusive: bool) -> libc::c_int {
    if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    }
}

/// A directory holding the repository's files.
#[derive(Debug)]
pub struct Storage {
    root: PathBuf,
    tmp_counter: AtomicU64,
}

impl Storage {
    /// Storage over an existing directory. `tmp/` inside it holds files
    /// being written.
    pub fn new(root: impl Into<PathBuf>) -> Storage {
        Storage {
            root: root.into(),
            tmp_counter: AtomicU64::new(0),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The filesystem path of a key, for callers that serve a file's bytes
    /// directly (reads, passthrough) instead of copying them.
    pub fn path_of(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Write `bytes` under `key`, replacing nothing that is there already
    /// with different content: keys written with `put` are content-addressed,
    /// so an existing key already holds these bytes. Not durable until
    /// [`Storage::sync`].
    pub fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        let target = self.path_of(key);
        if target.exists() {
            return Ok(());
        }
        let tmp = self.write_tmp(bytes, false)?;
        self.rename_into_place(&tmp, &target)
    }

    /// Move an existing local file under `key` without copying it: a hard
    /// link, so that the source stays where it is (a staged file must
    /// survive a commit that fails). Returns false if the key existed.
    pub fn put_file_link(&self, key: &str, source: &Path) -> io::Result<bool> {
        let target = self.path_of(key);
        match fs::hard_link(source, &target) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                create_parent(&target)?;
                match fs::hard_link(source, &target) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(e),
                }
            }
            // Filesystems without hard links: copy instead.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                let bytes = fs::read(source)?;
                self.put(key, &bytes)?;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// Write `bytes` under `key`, atomically replacing what is there. Not
    /// durable; for hints that readers verify.
    pub fn put_replacing(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.write_tmp(bytes, false)?;
        self.rename_into_place(&tmp, &self.path_of(key))
    }

    /// Create `key` with `bytes` if and only if it does not exist yet.
    /// Durable when it returns `Ok(true)`; `Ok(false)` if the key existed.
    pub fn put_if_absent(&self, key: &str, bytes: &[u8]) -> io::Result<bool> {
        let prepared = self.prepare(bytes, true)?;
        self.link_if_absent(prepared, key)
    }

    /// The first half of [`Storage::put_if_absent`]: `bytes` in a file of
    /// their own, not yet durable nor under any key. Make it durable with
    /// [`Storage::sync`] of its [`PreparedPut::tmp_key`], together with
    /// other writes, then [`Storage::link_if_absent`]. Dropped unlinked,
    /// the file goes.
    pub fn prepare_put(&self, bytes: &[u8]) -> io::Result<PreparedPut> {
        self.prepare(bytes, false)
    }

    fn prepare(&self, bytes: &[u8], durable: bool) -> io::Result<PreparedPut> {
        Ok(PreparedPut {
            tmp: self.write_tmp(bytes, durable)?,
            root: self.root.clone(),
        })
    }

    /// The second half of [`Storage::put_if_absent`]: create `key` as the
    /// prepared file, synced by the caller, if and only if it does not
    /// exist yet. Durable when it returns `Ok(true)`.
    pub fn link_if_absent(&self, prepared: PreparedPut, key: &str) -> io::Result<bool> {
        let target = self.path_of(key);
        let linked = match fs::hard_link(&prepared.tmp, &target) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                create_parent(&target)?;
                match fs::hard_link(&prepared.tmp, &target) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        drop(prepared);
        let linked = linked?;
        if linked {
            sync_dir(target.parent().expect("keys have a parent"))?;
        }
        Ok(linked)
    }

    /// The bytes under `key`, or `None` if there is no such key.
    pub fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path_of(key)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn exists(&self, key: &str) -> bool {
        self.path_of(key).exists()
    }

    /// The names directly under the key prefix `dir` (files and
    /// sub-prefixes), unsorted; empty if there is no such prefix.
    pub fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let read = match fs::read_dir(self.path_of(dir)) {
            Ok(read) => read,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in read {
            let name = entry?.file_name();
            if let Some(name) = name.to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    /// Remove `key`; removing a missing key is not an error.
    pub fn delete(&self, key: &str) -> io::Result<()> {
        match fs::remove_file(self.path_of(key)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// What the file under `key` is, or `None` if there is no such key.
    pub fn stat(&self, key: &str) -> io::Result<Option<KeyStat>> {
        use std::os::unix::fs::MetadataExt;
        match fs::symlink_metadata(self.path_of(key)) {
            Ok(meta) => Ok(Some(KeyStat {
                len: meta.len(),
                links: meta.nlink(),
                changed: std::time::UNIX_EPOCH
                    + std::time::Duration::new(
                        meta.ctime().max(0) as u64,
                        meta.ctime_nsec().clamp(0, 999_999_999) as u32,
                    ),
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Take the lock `name` (a file at the root), shared or exclusive,
    /// waiting for it; held until the guard is dropped. Locks are
    /// advisory, between the processes of this machine (an object store
    /// will need its own).
    pub fn lock(&self, name: &str, exclusive: bool) -> io::Result<LockGuard> {
        self.lock_telling_wait(name, exclusive, || {})
    }

    /// [`Storage::lock`], calling `on_wait` first if the lock is held
    /// elsewhere, so that the caller can say why it waits.
    pub fn lock_telling_wait(
        &self,
        name: &str,
        exclusive: bool,
        on_wait: impl FnOnce(),
    ) -> io::Result<LockGuard> {
        let file = match self.lock_file_if_free(name, exclusive)? {
            Ok(guard) => return Ok(guard),
            Err(file) => file,
        };
        on_wait();
        loop {
            // SAFETY: flock on a valid descriptor.
            if unsafe { libc::flock(file.as_raw_fd(), flock_mode(exclusive)) } == 0 {
                return Ok(LockGuard { _file: file });
            }
            let error = io::Error::last_os_error();
            if error.kind() != ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }

    /// [`Storage::lock`] if nobody holds it in a conflicting way now;
    /// `None` instead of waiting.
    pub fn try_lock(&self, name: &str, exclusive: bool) -> io::Result<Option<LockGuard>> {
        Ok(self.lock_file_if_free(name, exclusive)?.ok())
    }

    /// [`Storage::lock_telling_wait`], but waiting at most `patience`:
    /// `None` if the lock is still held then. An error of `on_wait` ends
    /// the wait and is returned as the outer error, the lock's own as
    /// the inner one.
    pub fn lock_waiting_at_most<E>(
        &self,
        name: &str,
        exclusive: bool,
        patience: std::time::Duration,
        on_wait: impl FnOnce() -> Result<(), E>,
    ) -> Result<io::Result<Option<LockGuard>>, E> {
        const FIRST_PAUSE: std::time::Duration = std::time::Duration::from_micros(100);
        const LONGEST_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);
        let file = match self.lock_file_if_free(name, exclusive) {
            Ok(Ok(guard)) => return Ok(Ok(Some(guard))),
            Ok(Err(file)) => file,
            Err(e) => return Ok(Err(e)),
        };
        on_wait()?;
        // flock has no timeout: ask again and again, more slowly as the
        // wait grows, so that a short turn costs little delay and a long
        // one little CPU.
        let deadline = std::time::Instant::now() + patience;
        let mut pause = FIRST_PAUSE;
        loop {
            std::thread::sleep(pause);
            pause = (pause * 2).min(LONGEST_PAUSE);
            match flock_if_free(&file, exclusive) {
                Ok(true) => return Ok(Ok(Some(LockGuard { _file: file }))),
                Err(e) if e.kind() != ErrorKind::Interrupted => return Ok(Err(e)),
                _ if std::time::Instant::now() >= deadline => return Ok(Ok(None)),
                _ => {}
            }
        }
    }

    /// The lock taken without waiting, or its file, open, if it is held.
    fn lock_file_if_free(
        &self,
        name: &str,
        exclusive: bool,
    ) -> io::Result<Result<LockGuard, File>> {
        let path = self.root.join(name);
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
        {
            // Another user's lock file, in a repository they share: flock
            // needs only to read it.
            Err(e) if e.kind() == ErrorKind::PermissionDenied => File::open(&path)?,
            opened => opened?,
        };
        if flock_if_free(&file, exclusive)? {
            return Ok(Ok(LockGuard { _file: file }));
        }
        Ok(Err(file))
    }

    /// Make the given keys, and the directory entries naming them, durable
    /// (but for those in `tmp/`, whose names need not survive a crash: a
    /// file there is made durable to be linked elsewhere).
    pub fn sync(&self, keys: &[String]) -> io::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        if keys.len() > SYNCFS_THRESHOLD {
            return self.sync_filesystem();
        }
        let tmp = self.root.join(TMP_DIR);
        let mut dirs = std::collections::BTreeSet::new();
        let mut paths = Vec::with_capacity(keys.len() * 2);
        for key in keys {
            let path = self.path_of(key);
            if let Some(parent) = path.parent()
                && parent != tmp
            {
                dirs.insert(parent.to_path_buf());
            }
            paths.push(path);
        }
        paths.extend(dirs);
        sync_paths_at_once(&paths)
    }

    /// Start [`Storage::sync_filesystem`] on a thread of its own, so that
    /// the disk writes while the caller computes; its outcome comes with
    /// [`BackgroundSync::finish`]. A write-back error is reported to one
    /// sync only, so it must not be dropped.
    pub fn start_sync(self: Arc<Self>) -> io::Result<BackgroundSync> {
        let syncing = std::thread::Builder::new()
            .name("early-sync".into())
            .spawn(move || self.sync_filesystem())?;
        Ok(BackgroundSync {
            syncing: Some(syncing),
        })
    }

    /// Make everything written to the repository's filesystem durable.
    pub fn sync_filesystem(&self) -> io::Result<()> {
        let dir = File::open(&self.root)?;
        // SAFETY: syncfs takes a valid open descriptor and nothing else.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn write_tmp(&self, bytes: &[u8], durable: bool) -> io::Result<PathBuf> {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp =
            self.root
                .join(TMP_DIR)
                .join(format!("{}.{}.{}", std::process::id(), thread_tag(), n));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&tmp)?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        Ok(tmp)
    }

    fn rename_into_place(&self, tmp: &Path, target: &Path) -> io::Result<()> {
        match fs::rename(tmp, target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                create_parent(target)?;
                fs::rename(tmp, target)
            }
            Err(e) => {
                let _ = fs::remove_file(tmp);
                Err(e)
            }
        }
    }
}

/// Bytes written by [`Storage::prepare_put`], waiting for
/// [`Storage::link_if_absent`].
#[derive(Debug)]
pub struct PreparedPut {
    tmp: PathBuf,
    root: PathBuf,
}

impl PreparedPut {
    /// The key of the file as it is now, to make it durable with
    /// [`Storage::sync`] or a write batch.
    pub fn tmp_key(&self) -> String {
        let relative = self
            .tmp
            .strip_prefix(&self.root)
            .expect("tmp is in the root");
        relative.to_string_lossy().into_owned()
    }
}

impl Drop for PreparedPut {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

/// What [`Storage::stat`] tells of a key's file.
#[derive(Clone, Copy, Debug)]
pub struct KeyStat {
    pub len: u64,
    /// Hard links to the file: more than one for an object that a
    /// session's staged file also is.
    pub links: u64,
    /// When the file last changed (its ctime: a new link changes it).
    pub changed: std::time::SystemTime,
}

/// A sync started with [`Storage::start_sync`]. Dropped unfinished, it
/// waits for the sync, so that no thread outlives its caller.
#[derive(Debug)]
pub struct BackgroundSync {
    syncing: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl BackgroundSync {
    /// Wait for the sync; its error, if it failed.
    pub fn finish(mut self) -> io::Result<()> {
        self.join()
    }

    fn join(&mut self) -> io::Result<()> {
        match self.syncing.take() {
            Some(syncing) => syncing
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the sync thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for BackgroundSync {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

/// A lock held with [`Storage::lock`]; released when dropped.
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

fn create_parent(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path.parent().expect("keys have a parent"))
}

/// fsync every path (files and directories), the calls all in flight at
/// once: each waits mostly for the disk, and a disk answers several
/// together about as fast as one.
fn sync_paths_at_once(paths: &[PathBuf]) -> io::Result<()> {
    /// More paths than this share the threads.
    const MOST_THREADS: usize = 16;
    let sync = |path: &PathBuf| File::open(path)?.sync_all();
    let per_thread = paths.len().div_ceil(MOST_THREADS);
    let mut parts = paths.chunks(per_thread.max(1));
    let Some(own_part) = parts.next() else {
        return Ok(());
    };
    std::thread::scope(|scope| {
        let mut threads = Vec::new();
        let mut synced = Ok(());
        for part in parts {
            match std::thread::Builder::new()
                .name("sync".into())
                .spawn_scoped(scope, move || part.iter().try_for_each(sync))
            {
                Ok(thread) => threads.push(thread),
                // No thread for it: synced here.
                Err(_) => synced = synced.and(part.iter().try_for_each(sync)),
            }
        }
        synced = synced.and(own_part.iter().try_for_each(sync));
        for thread in threads {
            let joined = thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a sync thread panicked")));
            synced = synced.and(joined);
        }
        synced
    })
}

/// Take a flock on `file` if nobody holds it in a conflicting way:
/// whether it was taken.
fn flock_if_free(file: &File, exclusive: bool) -> io::Result<bool> {
    // SAFETY: flock on a valid descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), flock_mode(exclusive) | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    if error.kind() == ErrorKind::WouldBlock {
        return Ok(false);
    }
    Err(error)
}

/// fsync a directory, so that the entries created in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A number that tells this thread's temporary files from other threads'.
fn thread_tag() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut hasher);
    hasher.finish() & 0xffff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage() -> (tempfile::TempDir, Storage) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("tmp")).unwrap();
        let storage = Storage::new(dir.path());
        (dir, storage)
    }

    #[test]
    fn put_if_absent_refuses_an_existing_key_and_keeps_its_content() {
        let (_dir, storage) = storage();
        assert!(storage.put_if_absent("refs/a/1", b"first").unwrap());
        assert!(!storage.put_if_absent("refs/a/1", b"second").unwrap());
        assert_eq!(storage.get("refs/a/1").unwrap().unwrap(), b"first");
        assert!(storage.list("tmp").unwrap().is_empty(), "no temp file left");
    }

    #[test]
    fn a_prepared_put_is_created_once_and_leaves_no_temp_file_whatever_happens() {
        let (_dir, storage) = storage();
        let first = storage.prepare_put(b"first").unwrap();
        let second = storage.prepare_put(b"second").unwrap();
        let abandoned = storage.prepare_put(b"abandoned").unwrap();
        storage.sync(&[first.tmp_key(), second.tmp_key()]).unwrap();
        assert_eq!(storage.list("tmp").unwrap().len(), 3);
        assert!(storage.link_if_absent(first, "refs/a/1").unwrap());
        assert!(!storage.link_if_absent(second, "refs/a/1").unwrap());
        drop(abandoned);
        assert_eq!(storage.get("refs/a/1").unwrap().unwrap(), b"first");
        assert!(storage.list("tmp").unwrap().is_empty(), "no temp file left");
    }

    #[test]
    fn get_of_a_missing_key_is_none_and_list_of_a_missing_prefix_is_empty() {
        let (_dir, storage) = storage();
        assert!(storage.get("objects/zz/nothing").unwrap().is_none());
        assert!(storage.list("refs/branches").unwrap().is_empty());
    }
}
