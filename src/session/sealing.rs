//! Sealing: storing a session's closed files in the object store while
//! the session goes on, so that its commit has almost nothing left to do.
//!
//! A staged file whose last write handle closed is *queued*. A worker (the
//! mount runs one, see `fs::daemon`) takes the files that stayed closed
//! for a moment, or were renamed since they closed (a temporary file
//! renamed into place is final), hashes each, links it into the object
//! store under its hash (the same inode: no bytes are copied) and starts
//! the writeback of large ones (small ones go with its periodic sync).
//! From then on the file is *sealed*: its inode is an object, which must
//! never change, so the next write open of its path copies it into a new
//! staged file, as for a committed file (`Session::open_write`). A commit
//! takes a sealed file's id and size as they are: no stat, hash or link
//! per file, and little data left to make durable. A file whose bytes
//! the store holds already becomes that object instead (its staged name
//! is made a link of the object), so that the copy's dirty pages are
//! dropped unwritten.
//!
//! ```text
//! release_write ──> queued ──(closed for a moment; not open)──> sealed
//!        ^            │ open_write (ticket cancelled)              │ open_write
//!        └── written <┘                         copy-up into a new staged file
//! ```
//!
//! The state is in memory only. A resumed session starts with nothing
//! sealed, and its commit hashes and links what it finds (objects sealed
//! before are found in place). A file sealed and then removed or rewritten
//! leaves its object unreferenced in the store: disk space, which
//! `zarrfs gc` gives back.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::repo::{ObjectId, Repo};

/// Most staged files tracked at once (queued or sealed): beyond this a
/// session's files wait for its commit, so that memory stays bounded.
const MAX_TRACKED: usize = 250_000;

/// A sealed staged file: the object it is, and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealedFile {
    pub id: ObjectId,
    pub size: u64,
}

#[derive(Clone, Copy, Debug)]
struct Sealing {
    file: SealedFile,
    /// The object store holds this file itself, linked by the worker:
    /// until then (or if the store had the bytes already) a commit hashes
    /// and links the file itself.
    linked: bool,
}

#[derive(Default)]
struct State {
    /// Closed files in the order they closed, small and large ones apart
    /// (they wait for different delays, see [`SMALL_FILE`]): (staged
    /// number, ticket, when). An entry whose ticket is no longer in
    /// `tickets` is void.
    queues: [VecDeque<(u64, u64, Instant)>; 2],
    /// Closed files renamed since, due at once: (staged number, ticket).
    /// Writing a temporary file and renaming it into place (zarr-python,
    /// editors, rsync) says the file is final, so waiting out the delay
    /// would only leave it to the commit.
    renamed: VecDeque<(u64, u64)>,
    /// The live ticket of each queued file, and which queue it went to
    /// (where it waits if it is busy when it comes up); a write open
    /// takes it away.
    tickets: HashMap<u64, (u64, Size)>,
    next_ticket: u64,
    /// By staged number: a commit asks for them in path order, which for
    /// files written one after another is their order here too.
    sealed: BTreeMap<u64, Sealing>,
    /// A worker seals this session's files; without one, nothing is
    /// queued (a session used as a library commits the usual way).
    enabled: bool,
    /// The session is gone (committed, discarded, closed): seal nothing.
    retired: bool,
    /// A sync of sealed files failed with this: they may not be on disk.
    sync_failed: Option<String>,
}

/// The sealing state of one session, shared by the session and the
/// worker. Taken after the session's own lock, and held only briefly.
#[derive(Default)]
pub(super) struct Seals {
    state: Mutex<State>,
}

impl State {
    /// The live ticket of queued file `n`.
    fn ticket(&self, n: u64) -> Option<u64> {
        self.tickets.get(&n).map(|&(ticket, _)| ticket)
    }
}

impl Seals {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A worker will seal this session's closed files from now on.
    pub fn enable(&self) {
        self.lock().enabled = true;
    }

    pub fn enabled(&self) -> bool {
        self.lock().enabled
    }

    /// The last write handle of staged file `n` closed; `size` says how
    /// large it is (asked only if the file is queued).
    pub fn queue(&self, n: u64, size: impl FnOnce() -> u64) {
        let mut state = self.lock();
        if !state.enabled
            || state.retired
            || state.tickets.len() + state.sealed.len() >= MAX_TRACKED
        {
            return;
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        let size = Size::of(size());
        state.tickets.insert(n, (ticket, size));
        state.queues[size as usize].push_back((n, ticket, Instant::now()));
    }

    /// Closed staged file `n` was renamed: it is due at once. A file still
    /// open for writing, or sealed already, is left as it is.
    pub fn renamed(&self, n: u64) {
        let mut state = self.lock();
        let Some(&(_, size)) = state.tickets.get(&n) else {
            return;
        };
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.tickets.insert(n, (ticket, size)); // voids its entry in `queue`
        state.renamed.push_back((n, ticket));
    }

    /// Staged file `n` is opened for writing: it leaves the queue. If it
    /// is sealed already, it must not be written in place: the caller
    /// copies it up, and `n` is forgotten.
    pub fn open_for_writing(&self, n: u64) -> bool {
        let mut state = self.lock();
        state.tickets.remove(&n);
        state.sealed.remove(&n).is_some()
    }

    /// For each of `staged`, the object it is in the store as, if it is
    /// sealed and linked; under one lock.
    pub fn stored_many(&self, staged: impl Iterator<Item = u64>) -> Vec<Option<SealedFile>> {
        let state = self.lock();
        staged
            .map(|n| state.sealed.get(&n).filter(|s| s.linked).map(|s| s.file))
            .collect()
    }

    /// Whether staged file `n` is sealed: an object, never written in
    /// place again.
    pub fn is_sealed(&self, n: u64) -> bool {
        self.lock().sealed.contains_key(&n)
    }

    /// How many files are sealed and stored.
    pub fn stored_count(&self) -> usize {
        self.lock().sealed.values().filter(|s| s.linked).count()
    }

    /// Fails if a sync of this session's sealed files failed: a write-back
    /// error is reported to one sync only, so a commit's own sync would
    /// not see it, and the files it names may be damaged on disk. Every
    /// commit of the session fails from then on; a new session (discard,
    /// then write the files again) starts clean.
    pub fn check_synced(&self) -> io::Result<()> {
        match &self.lock().sync_failed {
            None => Ok(()),
            Some(error) => Err(io::Error::other(format!(
                "writing this session's files to the repository's disk failed ({error}), so some may be damaged; check the disk, then discard the session (`zarrfs discard`) and write the files again"
            ))),
        }
    }

    /// The session is over: nothing more is sealed for it.
    pub fn retire(&self) {
        let mut state = self.lock();
        state.retired = true;
        state.queues.iter_mut().for_each(VecDeque::clear);
        state.renamed.clear();
        state.tickets.clear();
        state.sealed.clear();
    }
}

/// What one pass of the worker did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SealPass {
    /// Files sealed in this pass.
    pub sealed: usize,
    /// Whether queued files are left (not due yet, or past the limit).
    pub more: bool,
}

/// The worker's side of a session's sealing: cheap to clone, and usable
/// without the session's lock.
#[derive(Clone)]
pub struct Sealer {
    seals: Arc<Seals>,
    staged_dir: PathBuf,
    repo: Arc<Repo>,
}

impl Sealer {
    pub(super) fn new(seals: Arc<Seals>, staged_dir: PathBuf, repo: Arc<Repo>) -> Sealer {
        Sealer {
            seals,
            staged_dir,
            repo,
        }
    }

    /// Seal up to `limit` files that have been closed for at least
    /// `delay` (a third of it for small files, see `SMALL_FILE`).
    /// `in_use(n)` says that staged file `n` is open (for reading:
    /// written files are not queued); it goes back in the queue
    /// instead, as a sealed file open for reading could not be opened for
    /// writing beside it (see `fs::passthrough`).
    pub fn seal_due(
        &self,
        delay: Duration,
        limit: usize,
        in_use: &dyn Fn(u64) -> bool,
    ) -> SealPass {
        let mut pass = SealPass::default();
        // Taken for the pass at the first file the store has already.
        let mut gc_held_off = GcHold::NotAsked;
        for (n, ticket) in self.take_due(delay, limit, in_use) {
            // A file removed meanwhile (its session ended) is skipped.
            let Some((file, hashed)) = self.hash(n).ok() else {
                continue;
            };
            let key = hashed.id.key_in("objects");
            {
                let mut state = self.seals.lock();
                if state.retired || state.ticket(n) != Some(ticket) {
                    continue; // opened for writing since it was taken
                }
                state.tickets.remove(&n);
                state.sealed.insert(
                    n,
                    Sealing {
                        file: hashed,
                        linked: false,
                    },
                );
            }
            // From here on the file is never written in place, so it may
            // become an object.
            let linked = match self
                .repo
                .storage()
                .put_file_link(&key, &self.staged_dir.join(n.to_string()))
            {
                Ok(true) => {
                    start_writeback(&file, hashed.size);
                    Ok(true)
                }
                // The store has these bytes already. The staged copy need
                // never reach the disk: it becomes the object.
                Ok(false) => self.become_stored_object(n, &file, &key, &mut gc_held_off),
                Err(e) => Err(e),
            };
            let mut state = self.seals.lock();
            match linked {
                Ok(true) => {
                    if let Some(sealing) = state.sealed.get_mut(&n) {
                        sealing.linked = true;
                    }
                    pass.sealed += 1;
                }
                // A gc runs, or removed the object meanwhile: the commit
                // stores the file, under the lock that keeps gc away. It
                // still never changes.
                Ok(false) => {}
                Err(e) => {
                    // The commit will store it; sealing is only a head start.
                    state.sealed.remove(&n);
                    tracing::debug!(staged = n, error = %e, "sealing a staged file failed");
                }
            }
        }
        pass.more = {
            let state = self.seals.lock();
            state.queues.iter().any(|q| !q.is_empty()) || !state.renamed.is_empty()
        };
        pass
    }

    /// Staged file `n`, open as `file`, holds the bytes of the object at
    /// `key`: make the
    /// staged name another link of the object, replacing the staged copy,
    /// whose dirty pages then go with it unwritten. The file keeps the
    /// mtime the session gave it (the object's is only gc's grace clock).
    /// `Ok(false)` if a gc runs or the object is gone; nothing changed.
    fn become_stored_object(
        &self,
        n: u64,
        file: &File,
        key: &str,
        gc: &mut GcHold,
    ) -> io::Result<bool> {
        if let GcHold::NotAsked = gc {
            // gc removes objects with a single link; holding it off while
            // the second link is made keeps it from judging this one on
            // the link count from before.
            *gc = match self.repo.try_lock_for_commit()? {
                Some(guard) => GcHold::Held { _guard: guard },
                None => GcHold::GcRuns,
            };
        }
        if let GcHold::GcRuns = gc {
            return Ok(false);
        }
        let staged = self.staged_dir.join(n.to_string());
        let link = self.staged_dir.join(format!("{n}.stored"));
        let mtime = file.metadata()?.modified()?;
        match std::fs::hard_link(self.repo.storage().path_of(key), &link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        // futimens needs the owner, not write permission.
        let replaced = File::open(&link)
            .and_then(|object| object.set_modified(mtime))
            .and_then(|()| std::fs::rename(&link, &staged));
        if let Err(e) = replaced {
            let _ = std::fs::remove_file(&link);
            return Err(e);
        }
        Ok(true)
    }

    /// Make what was sealed durable now (with everything else written to
    /// the repository's filesystem), so that the commit's own sync finds
    /// little left to write: the worker calls this now and then while it
    /// seals.
    pub fn sync_sealed(&self) -> io::Result<()> {
        let synced = self.repo.storage().sync_filesystem();
        if let Err(e) = &synced {
            self.seals.lock().sync_failed = Some(e.to_string());
        }
        synced
    }

    /// Take the queued files that are due, renamed ones first, at most
    /// `limit`, putting back those that are open.
    fn take_due(
        &self,
        delay: Duration,
        limit: usize,
        in_use: &dyn Fn(u64) -> bool,
    ) -> Vec<(u64, u64)> {
        let now = Instant::now();
        let mut state = self.seals.lock();
        let mut due = Vec::new();
        let mut busy = Vec::new();
        while due.len() < limit {
            // A renamed file that is busy waits in its own queue.
            let (n, ticket) = match state.renamed.pop_front() {
                Some((n, ticket)) => (n, ticket),
                None => {
                    let is_due = |queue: &VecDeque<(u64, u64, Instant)>, size: Size| {
                        queue
                            .front()
                            .is_some_and(|&(_, _, since)| now - since >= size.delay(delay))
                    };
                    let Some(size) = [Size::Small, Size::Large]
                        .into_iter()
                        .find(|&size| is_due(&state.queues[size as usize], size))
                    else {
                        break;
                    };
                    let (n, ticket, _) = state.queues[size as usize].pop_front().unwrap();
                    (n, ticket)
                }
            };
            let size = match state.tickets.get(&n) {
                Some(&(live, size)) if live == ticket => size,
                _ => continue, // void
            };
            if in_use(n) {
                busy.push((n, ticket, size));
            } else {
                due.push((n, ticket));
            }
        }
        for (n, ticket, size) in busy {
            state.queues[size as usize].push_back((n, ticket, now));
        }
        due
    }

    /// A staged file, opened, with its hash and size.
    fn hash(&self, n: u64) -> io::Result<(File, SealedFile)> {
        let file = File::open(self.staged_dir.join(n.to_string()))?;
        let size = file.metadata()?.len();
        let id = ObjectId::of_file(&file)?;
        Ok((file, SealedFile { id, size }))
    }
}

/// Whether a seal pass holds `zarrfs gc` off (see
/// [`Sealer::become_stored_object`]).
enum GcHold {
    NotAsked,
    Held { _guard: crate::storage::LockGuard },
    GcRuns,
}

/// Files smaller than this are *small*:
/// - they are sealed after a third of the delay: a small file's seal
///   costs little, and a commit of many stores those not sealed yet
///   itself. A large file sealed too soon costs a hash (and a copy,
///   should it be written again), and starting its writeback slows a
///   program still writing others (dda3837 has the measurements);
/// - their writeback is left to the worker's periodic sync: one write
///   request per small file costs more than it saves.
const SMALL_FILE: u64 = 256 << 10;

/// Which of the queues a closed file waits in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Size {
    Small = 0,
    Large = 1,
}

impl Size {
    fn of(bytes: u64) -> Size {
        if bytes < SMALL_FILE {
            Size::Small
        } else {
            Size::Large
        }
    }

    /// How long a file of this size waits after it closed.
    fn delay(self, delay: Duration) -> Duration {
        match self {
            Size::Small => delay / 3,
            Size::Large => delay,
        }
    }
}

/// Start writing a large sealed file's data to disk now, without
/// waiting, so that the commit's sync finds little left to write.
fn start_writeback(file: &File, size: u64) {
    if Size::of(size) == Size::Small {
        return;
    }
    // SAFETY: sync_file_range on a valid descriptor; it only schedules
    // writeback of the whole file.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}
