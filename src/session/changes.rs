//! From journal to change list: status, commit.
//!
//! The journal says what the view has; the change list says what differs
//! from the base. A path counts as changed only if its kind, content or
//! mode differs: rewriting a file with the bytes it had is no change, and
//! a file created and removed again leaves no trace. Directories count
//! only where they are a change of their own (an empty directory made, or
//! a directory removed or replaced); others are implied by their files.

use std::fs::File;
use std::io;
use std::ops::ControlFlow;
use std::time::SystemTime;

use serde::Serialize;

use super::journal::{FileSource, FlushThread, JournalEntry};
use super::{Result, Session};
use crate::repo::{
    Change, ChangeListWriter, CommitError, CommitId, CommitRequest, Entry, EntryKind, ObjectId,
    WriteBatch,
};
use crate::zarr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusKind {
    Added,
    Modified,
    Deleted,
}

/// One changed path, as `status` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusEntry {
    pub path: String,
    pub kind: StatusKind,
    pub is_dir: bool,
    /// Whether the path is a Zarr metadata document (`[M]`) rather than
    /// chunk data (`[C]`).
    pub metadata: bool,
}

/// How far a commit is, for a progress bar: the phase, and how many of
/// its items are done (`total` is 0 when a phase has no count).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CommitProgress {
    pub phase: &'static str,
    pub done: u64,
    pub total: u64,
}

/// Reports progress only every so many items, to stay off the hot path.
const PROGRESS_EVERY: u64 = 256;

/// How many journal entries a pass over the journal reads at a time: the
/// passes stream, so that a million changed paths cost no more memory
/// than a thousand.
const JOURNAL_CHUNK: usize = 4096;

/// Most staged-file hashes remembered between a status and a commit.
const HASH_CACHE_LIMIT: usize = 65_536;

/// A change with what status needs to know and where its bytes are.
struct PendingChange {
    path: String,
    change: Change,
    kind: StatusKind,
    staged: Option<u64>,
    /// The staged file is in the object store already (sealed).
    stored: bool,
}

/// A staged file's content id and size, and whether it is stored
/// already.
#[derive(Clone, Copy)]
struct StagedHash {
    id: ObjectId,
    size: u64,
    stored: bool,
}

/// The base's directory of the last path visited, if the journal does not
/// hide it, so that the many paths of one directory, which come one after
/// another in path order, look up the directory and ask the journal about
/// its ancestors once. Valid for one walk of the journal, which does not
/// change during it.
#[derive(Default)]
struct BaseDirMemo {
    /// The directory, and its tree in the base.
    last: Option<(String, Option<ObjectId>)>,
}

impl BaseDirMemo {
    /// `session.visible_base_entry(path)`: the base's entry at `path`,
    /// unless an ancestor of `path` hides the base.
    fn entry(&mut self, session: &Session, path: &str) -> Result<Option<Entry>> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let base_dir = match &self.last {
            Some((last, base_dir)) if last == dir => *base_dir,
            _ => {
                let base_dir = if session.base_hidden(dir, true)? {
                    None
                } else {
                    session
                        .base_entry(dir)?
                        .filter(|entry| entry.kind == EntryKind::Dir)
                        .map(|entry| entry.id)
                };
                self.last = Some((dir.to_owned(), base_dir));
                base_dir
            }
        };
        match base_dir {
            Some(id) => Ok(session.repo.trees().get_in_dir(id, name)?),
            None => Ok(None),
        }
    }
}

impl Session {
    /// Hash a staged file, reusing the last hash while its size and mtime
    /// are unchanged. Shares the session, so that several threads can.
    fn hash_staged_shared(&self, n: u64) -> io::Result<(u64, SystemTime, ObjectId)> {
        let path = self.staged_path(n);
        let meta = std::fs::metadata(&path)?;
        let (len, mtime) = (meta.len(), meta.modified()?);
        if let Some(&(l, m, id)) = self.hashes.get(&n)
            && l == len
            && m == mtime
        {
            return Ok((len, mtime, id));
        }
        let id = ObjectId::of_file(&File::open(&path)?)?;
        Ok((len, mtime, id))
    }

    /// The hashes of a journal chunk's staged files, by position in the
    /// chunk (`None` for entries that are not staged files): sealed ones
    /// as they were sealed, the others hashed on every core.
    fn hash_chunk(
        &mut self,
        chunk: &[(String, JournalEntry)],
    ) -> io::Result<Vec<Option<StagedHash>>> {
        let staged: Vec<Option<u64>> = chunk
            .iter()
            .map(|(_, entry)| match entry {
                JournalEntry::File {
                    source: FileSource::Staged(n),
                    ..
                } => Some(*n),
                _ => None,
            })
            .collect();
        let sealed = self.seals.stored_many(staged.iter().flatten().copied());
        let mut sealed = sealed.into_iter();
        let mut out = Vec::with_capacity(chunk.len());
        let mut unsealed = Vec::new();
        for (i, n) in staged.iter().enumerate() {
            let Some(n) = *n else {
                out.push(None);
                continue;
            };
            out.push(sealed.next().flatten().map(|file| StagedHash {
                id: file.id,
                size: file.size,
                stored: true,
            }));
            if out[i].is_none() {
                unsealed.push((i, n));
            }
        }
        let hashed = on_every_core(&unsealed, |&(i, n)| {
            Ok::<_, io::Error>((i, n, self.hash_staged_shared(n)?))
        })?;
        if self.hashes.len() + hashed.len() > HASH_CACHE_LIMIT {
            self.hashes.clear();
        }
        for (i, n, (size, mtime, id)) in hashed {
            self.hashes.insert(n, (size, mtime, id));
            out[i] = Some(StagedHash {
                id,
                size,
                stored: false,
            });
        }
        Ok(out)
    }

    /// The journal's entries after `after`, [`JOURNAL_CHUNK`] at most,
    /// moving `after` past them; none at the end.
    fn next_chunk(&self, after: &mut Option<String>) -> Result<Vec<(String, JournalEntry)>> {
        let chunk = self
            .journal
            .entries_after(after.as_deref(), JOURNAL_CHUNK)?;
        if let Some((last, _)) = chunk.last() {
            *after = Some(last.clone());
        }
        Ok(chunk)
    }

    /// Visit the session's changes in path order, reading the journal a
    /// chunk at a time, until `visit` breaks.
    fn for_each_change(
        &mut self,
        progress: &mut dyn FnMut(CommitProgress),
        phase: &'static str,
        visit: &mut dyn FnMut(&mut Session, PendingChange) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        let total = self.journal.len() as u64;
        let mut done = 0;
        let mut after: Option<String> = None;
        let mut base_dirs = BaseDirMemo::default();
        loop {
            let chunk = self.next_chunk(&mut after)?;
            if chunk.is_empty() {
                return Ok(());
            }
            let hashes = self.hash_chunk(&chunk)?;
            for ((path, entry), hash) in chunk.into_iter().zip(hashes) {
                if done % PROGRESS_EVERY == 0 {
                    progress(CommitProgress { phase, done, total });
                }
                done += 1;
                let base = base_dirs.entry(self, &path)?;
                if let Some(change) = self.pending_change(path, entry, hash, base)?
                    && visit(self, change)?.is_break()
                {
                    return Ok(());
                }
            }
        }
    }

    /// What one journal entry changes, if anything; `hash` is the staged
    /// file's, if it is one, and `base` what the base has at the path
    /// where the journal does not hide it ([`BaseDirMemo::entry`]).
    fn pending_change(
        &mut self,
        path: String,
        entry: JournalEntry,
        hash: Option<StagedHash>,
        base: Option<Entry>,
    ) -> Result<Option<PendingChange>> {
        let base_kind = base.as_ref().map(|b| b.kind);
        Ok(match entry {
            JournalEntry::File { source, mode } => {
                let (id, size, staged, stored) = match source {
                    FileSource::Staged(n) => {
                        let hash = hash.expect("the chunk's staged files are hashed");
                        (hash.id, hash.size, Some(n), hash.stored)
                    }
                    FileSource::Blob { id, size } => (id, size, None, true),
                };
                if let Some(b) = &base
                    && b.kind == EntryKind::File
                    && b.id == id
                    && b.mode == mode
                {
                    return Ok(None);
                }
                Some(PendingChange {
                    path,
                    change: Change::File { id, size, mode },
                    kind: if base_kind == Some(EntryKind::File) {
                        StatusKind::Modified
                    } else {
                        StatusKind::Added
                    },
                    staged,
                    stored,
                })
            }
            JournalEntry::Dir { opaque } => {
                let empty = self.dir_is_empty(&path)?;
                let change = match (opaque, empty) {
                    (true, true) => Change::Dir { replace: true },
                    (true, false) => Change::Delete,
                    (false, true) if base_kind != Some(EntryKind::Dir) => {
                        Change::Dir { replace: false }
                    }
                    (false, _) => return Ok(None),
                };
                let kind = match change {
                    Change::Delete => StatusKind::Deleted,
                    _ if base.is_some() => StatusKind::Modified,
                    _ => StatusKind::Added,
                };
                Some(PendingChange {
                    path,
                    change,
                    kind,
                    staged: None,
                    stored: true,
                })
            }
            JournalEntry::Whiteout => base.map(|_| PendingChange {
                path,
                change: Change::Delete,
                kind: StatusKind::Deleted,
                staged: None,
                stored: true,
            }),
        })
    }

    /// Visit the session's changed paths in order.
    pub fn status_each(&mut self, visit: &mut dyn FnMut(StatusEntry) -> Result<()>) -> Result<()> {
        self.for_each_change(&mut |_| {}, "comparing", &mut |session, pending| {
            let is_dir = match &pending.change {
                Change::Dir { .. } => true,
                Change::File { .. } => false,
                Change::Delete => session
                    .base_entry(&pending.path)?
                    .is_some_and(|e| e.kind == EntryKind::Dir),
            };
            visit(StatusEntry {
                metadata: !is_dir && zarr::is_metadata(&pending.path),
                path: pending.path,
                kind: pending.kind,
                is_dir,
            })?;
            Ok(ControlFlow::Continue(()))
        })
    }

    /// The session's changed paths, sorted.
    pub fn status(&mut self) -> Result<Vec<StatusEntry>> {
        let mut out = Vec::new();
        self.status_each(&mut |entry| {
            out.push(entry);
            Ok(())
        })?;
        Ok(out)
    }

    /// Whether the session changes anything; stops at the first change.
    /// The same judgement as status and commit, but reading as little as
    /// it can (a mount and an unmount ask, and a resumed session has
    /// nothing sealed): a staged file with no file at its path in the base,
    /// or of another size than the base's, is a change without being read;
    /// only one of the base file's size is hashed, one at a time.
    pub fn has_changes(&mut self) -> Result<bool> {
        let mut after: Option<String> = None;
        let mut base_dirs = BaseDirMemo::default();
        loop {
            let chunk = self.next_chunk(&mut after)?;
            if chunk.is_empty() {
                return Ok(false);
            }
            for (path, entry) in chunk {
                let base = base_dirs.entry(self, &path)?;
                let mut hash = None;
                if let JournalEntry::File {
                    source: FileSource::Staged(n),
                    ..
                } = entry
                {
                    let size = std::fs::metadata(self.staged_path(n))?.len();
                    if !base
                        .as_ref()
                        .is_some_and(|b| b.kind == EntryKind::File && b.size == size)
                    {
                        return Ok(true);
                    }
                    hash = self.hash_chunk(&[(path.clone(), entry)])?.remove(0);
                }
                if self.pending_change(path, entry, hash, base)?.is_some() {
                    return Ok(true);
                }
            }
        }
    }

    /// Commit the session's changes to its branch, rebasing onto commits
    /// that landed meanwhile. On success the session continues as a new,
    /// empty session at the new commit; on any error it is left exactly
    /// as it was.
    pub fn commit(&mut self, message: &str) -> Result<CommitId> {
        self.commit_reporting(message, &mut |_| {})
    }

    /// [`Session::commit`], calling `progress` as it goes.
    pub fn commit_reporting(
        &mut self,
        message: &str,
        progress: &mut dyn FnMut(CommitProgress),
    ) -> Result<CommitId> {
        let branch = self.info.branch.clone().ok_or_else(|| {
            CommitError::ReadOnly(format!(
                "this session is at commit {} and on no branch; create a branch there (mkdir .zarrfs/branches/NAME), check it out, and commit",
                self.info.base.short()
            ))
        })?;
        // The journal becomes durable on a thread of its own while the
        // changes are stored (the storing pass reads it as it is), and
        // before the commit lands, as if flushed first.
        let mut flush = Some(self.journal.flush_on_thread()?);
        let landed = self.store_and_land(branch, message, progress, &mut flush);
        if let Some(flush) = flush
            && let Err(error) = self.journal.join_flush(flush)
        {
            // Pending again: the mount's flusher tries again.
            tracing::warn!(%error, "flushing the journal beside a failed commit");
        }
        landed
    }

    /// The body of [`Session::commit_reporting`]: store the changes, join
    /// `flush` and land the commit.
    fn store_and_land(
        &mut self,
        branch: String,
        message: &str,
        progress: &mut dyn FnMut(CommitProgress),
        flush: &mut Option<FlushThread>,
    ) -> Result<CommitId> {
        let repo = self.repo.clone();
        // No gc between storing the first object and moving the branch.
        let _writing = repo.lock_for_commit_telling_wait(|| {
            progress(CommitProgress {
                phase: "waiting",
                done: 0,
                total: 0,
            })
        })?;
        // One pass: each change is checked, its blob stored and its record
        // added to the change list, which goes to the object store a page
        // at a time.
        let started = std::time::Instant::now();
        // Counting walks every sealed file (about 1 ms for 100,000): only
        // for the debug log.
        let sealed_before = tracing::enabled!(tracing::Level::DEBUG)
            .then(|| self.seals.stored_count())
            .unwrap_or_default();
        // Sealed files this commit takes as they are may not have reached
        // the disk.
        self.seals.check_synced()?;
        // A large commit ends with a sync of the whole filesystem: start
        // one now, so that the session's files not yet written back go to
        // disk while the tree is built, and the last sync finds only the
        // tree and the change list left to write.
        let mut written = WriteBatch::default();
        if self.journal.len() > crate::storage::SYNCFS_THRESHOLD {
            written.sync_beside(repo.objects().shared_storage().start_sync()?);
        }
        let mut list = ChangeListWriter::new(repo.objects()).applying_to(self.base_tree);
        let mut ready = Vec::new();
        self.for_each_change(progress, "storing", &mut |session, pending| {
            session.check_metadata(&pending)?;
            ready.push(pending);
            if ready.len() >= JOURNAL_CHUNK {
                session.store_and_list(std::mem::take(&mut ready), &mut list, &mut written)?;
            }
            Ok(ControlFlow::Continue(()))
        })?;
        self.store_and_list(ready, &mut list, &mut written)?;
        let (changes, applied) = list.finish_applied(&mut written)?;
        if changes.count == 0 {
            return Err(CommitError::NothingToCommit.into());
        }
        progress(CommitProgress {
            phase: "committing",
            done: 0,
            total: 0,
        });
        let stored = started.elapsed();
        if let Some(flush) = flush.take() {
            self.journal.join_flush(flush)?;
        }
        let flushed = started.elapsed();
        let outcome = repo.commit(CommitRequest {
            branch: &branch,
            base: self.info.base,
            changes,
            applied,
            author: &self.info.author,
            message,
            session: &self.info.id,
            written,
        })?;
        let committed = started.elapsed();
        // Files still open for writing go on in the new session.
        self.replace_with_new_session_carrying(Some(branch), outcome.id, true)?;
        tracing::debug!(
            changes = changes.count,
            sealed_before,
            storing_ms = stored.as_millis() as u64,
            journal_flush_wait_ms = (flushed - stored).as_millis() as u64,
            committing_ms = (committed - flushed).as_millis() as u64,
            new_session_ms = (started.elapsed() - committed).as_millis() as u64,
            "commit phases"
        );
        Ok(outcome.id)
    }

    /// Refuse a metadata document that is not valid Zarr metadata.
    fn check_metadata(&mut self, pending: &PendingChange) -> Result<()> {
        if let Change::File { .. } = pending.change
            && zarr::is_metadata(&pending.path)
        {
            let bytes = self.read_file(&pending.path)?;
            if let Err(error) = zarr::validate_metadata(&bytes) {
                return Err(CommitError::InvalidMetadata {
                    path: pending.path.clone(),
                    error,
                }
                .into());
            }
        }
        Ok(())
    }

    /// Put the changed files' bytes in the object store, on every core,
    /// and add the changes to the change list.
    fn store_and_list(
        &self,
        changes: Vec<PendingChange>,
        list: &mut ChangeListWriter<'_>,
        written: &mut WriteBatch,
    ) -> Result<()> {
        let to_store: Vec<&PendingChange> = changes
            .iter()
            .filter(|pending| pending.staged.is_some() && !pending.stored)
            .collect();
        let keys = on_every_core(&to_store, |pending| self.store_blob(pending))?;
        for key in keys.into_iter().flatten() {
            written.push(key);
        }
        for pending in changes {
            if let (Some(_), true, Change::File { id, .. }) =
                (pending.staged, pending.stored, &pending.change)
            {
                // Sealed: stored already, and made durable with the rest.
                written.push_with(|| id.key_in("objects"));
            }
            list.push(pending.path, pending.change)?;
        }
        Ok(())
    }

    /// Put a changed file's bytes in the object store; the key written.
    fn store_blob(&self, pending: &PendingChange) -> io::Result<Option<String>> {
        let (Some(n), Change::File { id, .. }) = (pending.staged, &pending.change) else {
            return Ok(None);
        };
        let key = id.key_in("objects");
        let staged = self.staged_path(n);
        let storage = self.repo.storage();
        if self.writers.contains_key(&n) {
            // Still open for writing: a copy keeps the object safe from
            // late writes.
            storage.put(&key, &std::fs::read(&staged)?)?;
        } else {
            storage.put_file_link(&key, &staged)?;
        }
        Ok(Some(key))
    }
}

/// `work` applied to every item, the items shared out between as many
/// threads as there are cores (just this thread for a few items): hashing
/// and linking staged files is most of a big commit, and the cores are
/// otherwise idle while it waits.
fn on_every_core<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&T) -> io::Result<R> + Sync,
) -> io::Result<Vec<R>> {
    const FEWEST_PER_THREAD: usize = 64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(items.len() / FEWEST_PER_THREAD).max(1);
    if threads == 1 {
        return items.iter().map(&work).collect();
    }
    let work = &work;
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks(items.len().div_ceil(threads))
            .map(|part| scope.spawn(move || part.iter().map(work).collect::<io::Result<Vec<R>>>()))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for part in parts {
            out.extend(part.join().expect("a worker thread panicked")?);
        }
        Ok(out)
    })
}
