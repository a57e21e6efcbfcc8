//! The repository: objects, trees, commits, refs, and the commit driver
//! with automatic rebase.
//!
//! On disk (see `man/zarrfs.5`):
//!
//! ```text
//! REPO/zarrfs.json                  format name and version
//! REPO/objects/ab/cdef…             blobs, tree nodes, change lists
//! REPO/commits/ab/cdef…             commit records
//! REPO/refs/branches/NAME/<seq>     branch versions, created exclusively
//! REPO/refs/tags/NAME               tags, created once
//! REPO/refs/locks/NAME              held by the commit moving a branch
//! REPO/sessions/ID/                 sessions (owned by the session layer)
//! REPO/tmp/                         files being written
//! REPO/write.lock                   held by commits (shared) and gc
//! ```
//!
//! A commit writes its objects, makes them durable, writes its record,
//! makes that durable, and only then moves the branch by compare-and-swap.
//! A crash at any instant therefore leaves the branch at a complete commit.

pub mod commit;
pub mod conflict;
pub mod fsck;
pub mod gc;
mod growing_tree;
mod json;
pub mod object;
pub mod refs;
pub mod tree;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use commit::{AppliedTree, ChangeList, ChangeListWriter, Commit};
pub use conflict::Conflict;
pub use object::{CommitId, ObjectId, Objects, WriteBatch};
pub use refs::{BranchTip, RefError, Refs};
pub use tree::{Change, DiffKind, Entry, EntryKind, Trees};

use crate::storage::Storage;
use commit::{APPLY_SLICE, ChangePages};
use conflict::{ChangedPaths, ConflictFinder, Side};
use growing_tree::GrowingTree;

/// The file that marks a directory as a repository.
pub const FORMAT_FILE: &str = "zarrfs.json";
/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// The branch `init` creates.
pub const DEFAULT_BRANCH: &str = "main";
/// The lock that commits hold shared and `gc` exclusively (see `gc`).
const WRITE_LOCK: &str = "write.lock";

/// The directory of the locks by which commits to one branch take turns
/// (see `Repo::take_turn_to_move`).
const BRANCH_LOCKS: &str = "refs/locks";

/// The longest a commit waits for its turn to move a branch (see
/// `Repo::take_turn_to_move`): many times what a commit's turn takes,
/// short enough that a stuck holder costs the others little.
const TURN_PATIENCE: Duration = Duration::from_secs(2);

/// How often a commit retries when other commits keep landing first.
const MAX_COMMIT_ATTEMPTS: u32 = 200;
/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Serialize, Deserialize)]
struct FormatRecord {
    format: String,
    version: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(
        "{path} is not a zarrfs repository (it has no {FORMAT_FILE}); create one with `zarrfs init {path}`"
    )]
    NotARepository { path: String },
    #[error(
        "{path} uses repository format {found}, but this zarrfs reads format {FORMAT_VERSION}; upgrade zarrfs"
    )]
    UnsupportedFormat { path: String, found: u32 },
    #[error("cannot create a repository in {path}: it exists and is not empty")]
    NotEmpty { path: String },
    #[error("unknown revision '{0}': not a branch, a tag or a commit id")]
    UnknownRevision(String),
    #[error("revision '{0}' is ambiguous: several commits start with it; give more digits")]
    AmbiguousRevision(String),
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
}

/// Why a commit did not land. In every case the branch is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The session's changes overlap with commits that landed after its
    /// base. The message is Arraylake's.
    #[error("{message}")]
    Conflict {
        conflicts: Vec<Conflict>,
        message: String,
    },
    #[error(
        "invalid Zarr metadata in {path}: {error}; fix the file and commit again (nothing was committed, and the session keeps its changes)"
    )]
    InvalidMetadata { path: String, error: String },
    #[error("nothing to commit: the session has no changes")]
    NothingToCommit,
    #[error("branch '{0}' does not exist (it may have been deleted); check out another branch")]
    NoBranch(String),
    #[error(
        "the session's base commit {base} is no longer on branch '{branch}' (the branch was deleted and created again); check out the branch and redo the changes"
    )]
    BaseNotOnBranch { base: CommitId, branch: String },
    #[error("gave up after {0} attempts: other commits kept landing first; try again")]
    Contention(u32),
    #[error("the repository is read-only here: {0}")]
    ReadOnly(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What a commit is asked to do.
pub struct CommitRequest<'a> {
    pub branch: &'a str,
    pub base: CommitId,
    /// The changes, already written as a change list
    /// ([`commit::ChangeListWriter`], or [`Repo::put_change_list`]).
    pub changes: ChangeList,
    /// The changes applied to the base's tree as they were written, if
    /// they were: a commit that needs no rebase uses it as its tree.
    pub applied: Option<AppliedTree>,
    pub author: &'a str,
    pub message: &'a str,
    pub session: &'a str,
    /// Everything the caller wrote for this commit (blobs, the change
    /// list), to be made durable with it.
    pub written: WriteBatch,
}

/// A commit that landed.
#[derive(Debug, Clone, Copy)]
pub struct CommitOutcome {
    pub id: CommitId,
    /// How many commits it was rebased over (0 if the base was the tip).
    pub rebased_over: usize,
}

/// An open repository. Cheap to share between threads.
#[derive(Debug)]
pub struct Repo {
    path: PathBuf,
    storage: Arc<Storage>,
    objects: Objects,
    commits: Mutex<HashMap<CommitId, Arc<Commit>>>,
}

impl Repo {
    /// Create a repository with an empty first commit on `main`.
    pub fn init(path: &Path) -> Result<Repo, RepoError> {
        let io_err = |source| RepoError::Io {
            path: path.display().to_string(),
            source,
        };
        match fs::read_dir(path) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(RepoError::NotEmpty {
                        path: path.display().to_string(),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(path).map_err(io_err)?
            }
            Err(e) => return Err(io_err(e)),
        }
        for dir in [
            "objects",
            "commits",
            "refs/branches",
            "refs/tags",
            BRANCH_LOCKS,
            "sessions",
            "tmp",
        ] {
            fs::create_dir_all(path.join(dir)).map_err(io_err)?;
        }
        let storage = Storage::new(path);
        let format = FormatRecord {
            format: "zarrfs-repository".into(),
            version: FORMAT_VERSION,
        };
        storage
            .put_if_absent(FORMAT_FILE, &serde_json::to_vec_pretty(&format).unwrap())
            .map_err(io_err)?;
        let repo = Repo::open(path)?;
        let mut batch = WriteBatch::default();
        let first = (|| -> io::Result<CommitId> {
            let tree = repo.trees().empty(&mut batch)?;
            let changes = commit::put_change_list(&repo.objects, &[], &mut batch)?;
            let record = Commit {
                parents: vec![],
                tree,
                author: "zarrfs".into(),
                date: commit::now_rfc3339(),
                message: "Repository created".into(),
                changes: changes.id,
                change_count: 0,
                height: 0,
                session: String::new(),
            };
            let id = repo.put_commit(&record, &mut batch)?;
            batch.sync(&repo.storage)?;
            Ok(id)
        })()
        .map_err(io_err)?;
        repo.refs()
            .create_branch(DEFAULT_BRANCH, first)
            .map_err(|e| io_err(io::Error::other(e.to_string())))?;
        Ok(repo)
    }

    /// Open an existing repository, checking its format version.
    pub fn open(path: &Path) -> Result<Repo, RepoError> {
        let storage = Arc::new(Storage::new(path));
        let display = path.display().to_string();
        let bytes = storage
            .get(FORMAT_FILE)
            .map_err(|source| RepoError::Io {
                path: display.clone(),
                source,
            })?
            .ok_or_else(|| RepoError::NotARepository {
                path: display.clone(),
            })?;
        let format: FormatRecord = serde_json::from_slice(&bytes).map_err(|e| RepoError::Io {
            path: format!("{display}/{FORMAT_FILE}"),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
        if format.version != FORMAT_VERSION {
            return Err(RepoError::UnsupportedFormat {
                path: display,
                found: format.version,
            });
        }
        // Repositories made before branch locks existed lack their
        // directory; a read-only one goes without (commits would fail).
        let _ = fs::create_dir_all(path.join(BRANCH_LOCKS));
        Ok(Repo {
            path: fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
            objects: Objects::new(storage.clone()),
            storage,
            commits: Mutex::new(HashMap::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    pub fn trees(&self) -> Trees<'_> {
        Trees::new(&self.objects)
    }

    pub fn refs(&self) -> Refs<'_> {
        Refs::new(&self.storage)
    }

    /// Hold off `zarrfs gc` until the guard is dropped: a commit holds
    /// it from its first stored object until its branch has moved, so
    /// that gc never removes an object the commit is about to name.
    pub fn lock_for_commit(&self) -> io::Result<crate::storage::LockGuard> {
        self.lock_for_commit_telling_wait(|| {})
    }

    /// [`Repo::lock_for_commit`], calling `on_wait` first if a gc holds
    /// the lock and the commit has to wait for it to end.
    pub fn lock_for_commit_telling_wait(
        &self,
        on_wait: impl FnOnce(),
    ) -> io::Result<crate::storage::LockGuard> {
        self.storage.lock_telling_wait(WRITE_LOCK, false, on_wait)
    }

    /// Wait for the other commits to `branch` to move it or give up, and
    /// keep them waiting until the guard is dropped.
    ///
    /// The compare-and-swap alone keeps every commit safe, but under
    /// contention it wastes work: a commit that loses the race has built
    /// and synced a tree on a tip that is already old, and tries again.
    /// 8 mounts making 50 commits each at once took 4.3 attempts a
    /// commit. Taking turns makes every attempt count. The turn is an
    /// economy, not a guarantee: a commit that cannot take the lock, or
    /// has waited [`TURN_PATIENCE`] for it, goes on without (a stopped or
    /// hung holder must not hold up every other commit to the branch, and
    /// their mounts with them), and the CAS settles the race.
    ///
    /// `on_wait` runs first if another commit has the turn; its error
    /// ends the wait.
    fn take_turn_to_move(
        &self,
        branch: &str,
        on_wait: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<Option<crate::storage::LockGuard>> {
        let name = format!("{BRANCH_LOCKS}/{branch}");
        let turn = self
            .storage
            .lock_waiting_at_most(&name, true, TURN_PATIENCE, on_wait)?;
        match turn {
            Ok(Some(turn)) => Ok(Some(turn)),
            Ok(None) => {
                tracing::info!(
                    "committing to {branch} without its turn: another commit has held it for {TURN_PATIENCE:?}"
                );
                Ok(None)
            }
            Err(e) => {
                tracing::warn!("committing to {branch} without its turn: {name}: {e}");
                Ok(None)
            }
        }
    }

    /// [`Repo::lock_for_commit`] if no gc runs now; `None` instead of
    /// waiting for it.
    pub fn try_lock_for_commit(&self) -> io::Result<Option<crate::storage::LockGuard>> {
        self.storage.try_lock(WRITE_LOCK, false)
    }

    pub fn sessions_dir(&self) -> PathBuf {
        self.path.join("sessions")
    }

    fn put_commit(&self, record: &Commit, batch: &mut WriteBatch) -> io::Result<CommitId> {
        let bytes = serde_json::to_vec_pretty(record).expect("commits serialize");
        let id = ObjectId::of(&bytes);
        let key = id.key_in("commits");
        self.storage.put(&key, &bytes)?;
        batch.push(key);
        Ok(id)
    }

    /// A commit's record.
    pub fn commit_record(&self, id: CommitId) -> io::Result<Arc<Commit>> {
        if let Some(record) = self.commits.lock().unwrap().get(&id) {
            return Ok(record.clone());
        }
        let bytes = self.storage.get(&id.key_in("commits"))?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("commit {id} does not exist"),
            )
        })?;
        let record: Arc<Commit> = Arc::new(serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("commit {id} is corrupt: {e}"),
            )
        })?);
        self.commits.lock().unwrap().insert(id, record.clone());
        Ok(record)
    }

    /// The paths a commit changed, as its change list records them.
    pub fn commit_changes(&self, id: CommitId) -> io::Result<Vec<(String, Change)>> {
        commit::get_change_list(&self.objects, self.commit_record(id)?.changes)
    }

    /// A commit's change list, page by page.
    fn change_pages(&self, list: ObjectId) -> io::Result<ChangePages<'_>> {
        ChangePages::open(&self.objects, list)
    }

    /// Write changes (in any order) as a change list.
    pub fn put_change_list(
        &self,
        changes: &[(String, Change)],
        batch: &mut WriteBatch,
    ) -> io::Result<ChangeList> {
        commit::put_change_list(&self.objects, changes, batch)
    }

    /// A branch's tip.
    pub fn branch_tip(&self, branch: &str) -> io::Result<Option<BranchTip>> {
        self.refs().branch(branch)
    }

    /// Resolve a branch name, tag name, commit id or unique prefix of one
    /// (at least 4 hex digits) to a commit.
    pub fn resolve(&self, revision: &str) -> Result<CommitId, RepoError> {
        let io_err = |source| RepoError::Io {
            path: self.path.display().to_string(),
            source,
        };
        if refs::validate_ref_name(revision).is_ok() {
            if let Some(tip) = self.refs().branch(revision).map_err(io_err)? {
                return Ok(tip.commit);
            }
            if let Some(commit) = self.refs().tag(revision).map_err(io_err)? {
                return Ok(commit);
            }
        }
        let hex = revision.to_ascii_lowercase();
        if hex.len() < 4 || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RepoError::UnknownRevision(revision.into()));
        }
        let matches: Vec<String> = self
            .storage
            .list(&format!("commits/{}", &hex[..2]))
            .map_err(io_err)?
            .into_iter()
            .filter(|rest| rest.starts_with(&hex[2..]))
            .collect();
        match matches.as_slice() {
            [only] => format!("{}{only}", &hex[..2])
                .parse()
                .map_err(|_| RepoError::UnknownRevision(revision.into())),
            [] => Err(RepoError::UnknownRevision(revision.into())),
            _ => Err(RepoError::AmbiguousRevision(revision.into())),
        }
    }

    /// The history from `tip` back to the first commit, newest first.
    pub fn log(
        &self,
        tip: CommitId,
    ) -> impl Iterator<Item = io::Result<(CommitId, Arc<Commit>)>> + '_ {
        let mut next = Some(tip);
        std::iter::from_fn(move || {
            let id = next?;
            match self.commit_record(id) {
                Ok(record) => {
                    next = record.parent();
                    Some(Ok((id, record)))
                }
                Err(e) => {
                    next = None;
                    Some(Err(e))
                }
            }
        })
    }

    /// The commits after `ancestor` up to and including `tip`, oldest
    /// first; `None` if `ancestor` is not on `tip`'s history. Costs the
    /// number of commits in between, not the length of the history.
    pub fn commits_since(
        &self,
        ancestor: CommitId,
        tip: CommitId,
    ) -> io::Result<Option<Vec<CommitId>>> {
        let stop_height = self.commit_record(ancestor)?.height;
        let mut found = Vec::new();
        let mut id = tip;
        while id != ancestor {
            let record = self.commit_record(id)?;
            if record.height <= stop_height {
                return Ok(None);
            }
            found.push(id);
            match record.parent() {
                Some(parent) => id = parent,
                None => return Ok(None),
            }
        }
        found.reverse();
        Ok(Some(found))
    }

    /// Changed paths between two commits, each marked added, modified or
    /// deleted.
    pub fn diff(&self, from: CommitId, to: CommitId) -> io::Result<Vec<(String, DiffKind)>> {
        let a = self.commit_record(from)?.tree;
        let b = self.commit_record(to)?.tree;
        self.trees().diff(a, b)
    }

    /// Commit changes made on top of `base` to `branch`. If the branch
    /// moved past `base`, the changes are rebased onto its tip unless they
    /// conflict (DESIGN section 2); under contention only the commits that
    /// landed since the previous attempt are checked again.
    pub fn commit(&self, request: CommitRequest<'_>) -> Result<CommitOutcome, CommitError> {
        if request.changes.count == 0 {
            return Err(CommitError::NothingToCommit);
        }
        // The caller holds it too, since it stored its objects; callers
        // that wrote nothing yet are covered from here on.
        let _writing = self.lock_for_commit()?;
        let mut batch = request.written;
        // What the caller wrote does not depend on the tip: while other
        // commits have the turn, make it durable, so that the turn is
        // short. With the turn free, one sync takes it all.
        let _turn = self.take_turn_to_move(request.branch, || batch.sync(&self.storage))?;
        let base_record = self.commit_record(request.base)?;
        // The commit after which everything has been checked for conflicts.
        let mut checked_up_to = request.base;
        let mut checked_record = base_record;
        let mut rebased_over = 0;
        for attempt in 0..MAX_COMMIT_ATTEMPTS {
            let tip = self
                .refs()
                .branch(request.branch)?
                .ok_or_else(|| CommitError::NoBranch(request.branch.to_owned()))?;
            if tip.commit != checked_up_to {
                let landed = self
                    .commits_since(checked_up_to, tip.commit)?
                    .ok_or_else(|| CommitError::BaseNotOnBranch {
                        base: request.base,
                        branch: request.branch.to_owned(),
                    })?;
                let conflicts = self.conflicts_with(request.changes, &landed)?;
                if !conflicts.is_empty() {
                    let message = conflict::conflict_message(
                        &request.base.to_hex(),
                        request.branch,
                        &conflicts,
                    );
                    return Err(CommitError::Conflict { conflicts, message });
                }
                rebased_over += landed.len();
                checked_up_to = tip.commit;
                checked_record = self.commit_record(tip.commit)?;
            }
            let started = std::time::Instant::now();
            let tree = match request.applied {
                Some(applied) if applied.base == checked_record.tree => applied.tree,
                _ => self.apply_change_list(checked_record.tree, request.changes, &mut batch)?,
            };
            let applied = started.elapsed();
            let record = Commit {
                parents: vec![checked_up_to],
                tree,
                author: request.author.to_owned(),
                date: commit::now_rfc3339(),
                message: request.message.to_owned(),
                changes: request.changes.id,
                change_count: request.changes.count,
                height: checked_record.height + 1,
                session: request.session.to_owned(),
            };
            let id = self.put_commit(&record, &mut batch)?;
            let swap = self
                .refs()
                .prepare_swap(request.branch, tip.seq, id, &mut batch)?;
            // Everything the commit reaches is durable before the ref names it.
            batch.sync(&self.storage)?;
            tracing::debug!(
                attempt,
                apply_ms = applied.as_millis() as u64,
                sync_ms = (started.elapsed() - applied).as_millis() as u64,
                "commit attempt written"
            );
            if self.refs().finish_swap(swap)? {
                self.commits.lock().unwrap().insert(id, Arc::new(record));
                return Ok(CommitOutcome { id, rebased_over });
            }
            std::thread::sleep(backoff(attempt));
        }
        Err(CommitError::Contention(MAX_COMMIT_ATTEMPTS))
    }

    /// The conflicts between a change list and the commits that landed
    /// after its base. The smaller side is held in memory and the other
    /// streamed past it, page by page.
    fn conflicts_with(&self, ours: ChangeList, landed: &[CommitId]) -> io::Result<Vec<Conflict>> {
        let mut theirs_lists = Vec::with_capacity(landed.len());
        let mut theirs_count = 0;
        for id in landed {
            let record = self.commit_record(*id)?;
            theirs_lists.push(record.changes);
            theirs_count += record.change_count;
        }
        let (held_side, held_lists, streamed_lists) = if theirs_count <= ours.count {
            (Side::Theirs, theirs_lists, vec![ours.id])
        } else {
            (Side::Ours, vec![ours.id], theirs_lists)
        };
        let mut held = ChangedPaths::default();
        for list in held_lists {
            for page in self.change_pages(list)? {
                held.extend(&page?);
            }
        }
        let mut finder = ConflictFinder::new(&held, held_side);
        for list in streamed_lists {
            for page in self.change_pages(list)? {
                for (path, change) in &page? {
                    finder.check(path, change.is_destructive());
                }
            }
        }
        Ok(finder.finish())
    }

    /// Apply a change list to the tree `root`, a slice at a time.
    fn apply_change_list(
        &self,
        root: ObjectId,
        list: ChangeList,
        batch: &mut WriteBatch,
    ) -> io::Result<ObjectId> {
        let mut tree = GrowingTree::new(self.objects.clone(), root);
        let mut slice = Vec::new();
        for page in self.change_pages(list.id)? {
            slice.extend(page?);
            if slice.len() >= APPLY_SLICE {
                tree.apply(slice.iter().map(|(p, c)| (p.as_str(), c)).collect(), batch)?;
                slice.clear();
            }
        }
        tree.apply(slice.iter().map(|(p, c)| (p.as_str(), c)).collect(), batch)?;
        tree.finish(batch)
    }
}

/// A random pause, growing with the attempt number, so that racing
/// committers spread out.
fn backoff(attempt: u32) -> Duration {
    let ceiling = Duration::from_micros(250u64 << attempt.min(8)).min(MAX_BACKOFF);
    let random = getrandom::u64().unwrap_or(attempt as u64 * 7919);
    Duration::from_micros(random % (ceiling.as_micros() as u64 + 1))
}
