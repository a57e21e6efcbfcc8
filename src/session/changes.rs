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

use serde::Serialize;

use super::journal::{FileSource, JournalEntry};
use super::{Result, Session};
use crate::repo::{Change, CommitError, CommitId, CommitRequest, EntryKind, ObjectId};
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

/// A change with what status needs to know and where its bytes are.
struct PendingChange {
    path: String,
    change: Change,
    kind: StatusKind,
    staged: Option<u64>,
}

impl Session {
    /// Hash a staged file, reusing the last hash while its size and mtime
    /// are unchanged.
    fn hash_staged(&mut self, n: u64) -> io::Result<(ObjectId, u64)> {
        let path = self.staged_path(n);
        let meta = std::fs::metadata(&path)?;
        let (len, mtime) = (meta.len(), meta.modified()?);
        if let Some(&(l, m, id)) = self.hashes.get(&n)
            && l == len
            && m == mtime
        {
            return Ok((id, len));
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(File::open(&path)?)?;
        let id = ObjectId(*hasher.finalize().as_bytes());
        self.hashes.insert(n, (len, mtime, id));
        Ok((id, len))
    }

    fn pending_changes(&mut self) -> Result<Vec<PendingChange>> {
        self.pending_changes_reporting(&mut |_| {})
    }

    fn pending_changes_reporting(
        &mut self,
        progress: &mut dyn FnMut(CommitProgress),
    ) -> Result<Vec<PendingChange>> {
        let total = self.journal.len() as u64;
        let entries: Vec<(String, JournalEntry)> = self
            .journal
            .entries()
            .iter()
            .map(|(p, e)| (p.clone(), *e))
            .collect();
        let mut out = Vec::new();
        for (done, (path, entry)) in entries.into_iter().enumerate() {
            if (done as u64).is_multiple_of(PROGRESS_EVERY) {
                progress(CommitProgress {
                    phase: "comparing",
                    done: done as u64,
                    total,
                });
            }
            let base = if self.base_hidden(&path, false) {
                None
            } else {
                self.base_entry(&path)?
            };
            let base_kind = base.as_ref().map(|b| b.kind);
            match entry {
                JournalEntry::File { source, mode } => {
                    let (id, size, staged) = match source {
                        FileSource::Staged(n) => {
                            let (id, size) = self.hash_staged(n)?;
                            (id, size, Some(n))
                        }
                        FileSource::Blob { id, size } => (id, size, None),
                    };
                    if let Some(b) = &base
                        && b.kind == EntryKind::File
                        && b.id == id
                        && b.mode == mode
                    {
                        continue;
                    }
                    out.push(PendingChange {
                        path,
                        change: Change::File { id, size, mode },
                        kind: if base_kind == Some(EntryKind::File) {
                            StatusKind::Modified
                        } else {
                            StatusKind::Added
                        },
                        staged,
                    });
                }
                JournalEntry::Dir { opaque } => {
                    let empty = self.list(&path)?.is_empty();
                    let change = match (opaque, empty) {
                        (true, true) => Change::Dir { replace: true },
                        (true, false) => Change::Delete,
                        (false, true) if base_kind != Some(EntryKind::Dir) => {
                            Change::Dir { replace: false }
                        }
                        (false, _) => continue,
                    };
                    let kind = match change {
                        Change::Delete => StatusKind::Deleted,
                        _ if base.is_some() => StatusKind::Modified,
                        _ => StatusKind::Added,
                    };
                    out.push(PendingChange {
                        path,
                        change,
                        kind,
                        staged: None,
                    });
                }
                JournalEntry::Whiteout => {
                    if base.is_some() {
                        out.push(PendingChange {
                            path,
                            change: Change::Delete,
                            kind: StatusKind::Deleted,
                            staged: None,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// The session's changed paths, sorted.
    pub fn status(&mut self) -> Result<Vec<StatusEntry>> {
        let mut out = Vec::new();
        for pending in self.pending_changes()? {
            let is_dir = match &pending.change {
                Change::Dir { .. } => true,
                Change::File { .. } => false,
                Change::Delete => self
                    .base_entry(&pending.path)?
                    .is_some_and(|e| e.kind == EntryKind::Dir),
            };
            out.push(StatusEntry {
                metadata: !is_dir && zarr::is_metadata(&pending.path),
                path: pending.path,
                kind: pending.kind,
                is_dir,
            });
        }
        Ok(out)
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
        self.journal.flush()?;
        let pending = self.pending_changes_reporting(progress)?;
        if pending.is_empty() {
            return Err(CommitError::NothingToCommit.into());
        }
        for change in &pending {
            if let Change::File { .. } = change.change
                && zarr::is_metadata(&change.path)
            {
                let bytes = self.read_file(&change.path)?;
                if let Err(error) = zarr::validate_metadata(&bytes) {
                    return Err(CommitError::InvalidMetadata {
                        path: change.path.clone(),
                        error,
                    }
                    .into());
                }
            }
        }
        let mut written = Vec::new();
        let total = pending.len() as u64;
        for (done, change) in pending.iter().enumerate() {
            if (done as u64).is_multiple_of(PROGRESS_EVERY) {
                progress(CommitProgress {
                    phase: "storing",
                    done: done as u64,
                    total,
                });
            }
            if let (Some(n), Change::File { id, .. }) = (change.staged, &change.change) {
                let key = id.key_in("objects");
                let staged = self.staged_path(n);
                let storage = self.repo.storage();
                if self.writers.contains_key(&n) {
                    // Still open for writing: a copy keeps the object safe
                    // from late writes.
                    storage.put(&key, &std::fs::read(&staged)?)?;
                } else {
                    storage.put_file_link(&key, &staged)?;
                }
                written.push(key);
            }
        }
        progress(CommitProgress {
            phase: "committing",
            done: 0,
            total: 0,
        });
        let changes: Vec<(String, Change)> =
            pending.into_iter().map(|p| (p.path, p.change)).collect();
        let outcome = self.repo.commit(CommitRequest {
            branch: &branch,
            base: self.info.base,
            changes: &changes,
            author: &self.info.author.clone(),
            message,
            session: &self.info.id.clone(),
            written,
        })?;
        // Files still open for writing go on in the new session.
        self.replace_with_new_session_carrying(Some(branch), outcome.id, true)?;
        Ok(outcome.id)
    }
}
