//! `zarrfs gc`: give back the space of objects that nothing names.
//!
//! An object becomes unreferenced when a mount seals a file (stores it
//! ahead of the commit, see `session::sealing`) that is then removed,
//! rewritten or discarded, and when a crash cuts a commit short. gc marks
//! everything reachable from every commit record in the repository (not
//! only from refs: records are small and kept, so every commit ever
//! reported stays whole and readable), then removes each object it did not
//! mark, except
//!
//! - an object with more than one link: a session's staged file is that
//!   link, a file sealed and not committed yet;
//! - an object changed within the grace period (default an hour), in case
//!   a writer that does not take the lock below (an older zarrfs) is in
//!   the middle of a commit.
//!
//! Commits go on while gc marks. A commit holds the repository's write
//! lock shared from the moment it stores its first object until its
//! branch has moved; gc marks and lists the objects without the lock,
//! then takes it exclusively, marks the commits that landed meanwhile
//! (little: they share all but their changes with what is marked) and
//! sweeps. So no commit can come to name an object that gc judged
//! unreferenced, and commits wait only for the sweep, not for a walk of
//! the whole history. A repository with a missing or damaged reachable
//! object is not swept at all: what lies below the damage cannot be
//! marked.

use std::collections::HashSet;
use std::io;
use std::time::{Duration, SystemTime};

use super::Repo;
use super::commit::ChangePages;
use super::object::ObjectId;
use super::tree::{EntryKind, Node};

/// How long an unreferenced object is kept after its last change.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// What gc is asked to do.
#[derive(Clone, Copy, Debug)]
pub struct GcOptions {
    pub grace: Duration,
    /// Report what would be removed, removing nothing.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> GcOptions {
        GcOptions {
            grace: DEFAULT_GRACE,
            dry_run: false,
        }
    }
}

/// What gc found and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub commits: usize,
    /// Objects reachable from the commits.
    pub reachable: usize,
    /// Unreferenced objects removed (or, in a dry run, to be removed).
    pub removed: usize,
    pub removed_bytes: u64,
    /// Unreferenced objects kept: linked from a session's staged file.
    pub kept_sealed: usize,
    /// Unreferenced objects kept: changed within the grace period.
    pub kept_recent: usize,
}

/// Mark what the commits reach, then sweep the rest (see the module doc).
pub fn gc(repo: &Repo, options: GcOptions) -> io::Result<GcReport> {
    gc_telling_wait(repo, options, || {})
}

/// [`gc`], calling `on_wait` first if commits in progress hold the
/// repository and gc has to wait for them to end.
pub fn gc_telling_wait(
    repo: &Repo,
    options: GcOptions,
    on_wait: impl FnOnce(),
) -> io::Result<GcReport> {
    gc_in_phases(repo, options, on_wait, || {})
}

/// [`gc_telling_wait`], calling `before_locking` after the unlocked mark
/// and listing, so that tests can commit at that moment.
fn gc_in_phases(
    repo: &Repo,
    options: GcOptions,
    on_wait: impl FnOnce(),
    before_locking: impl FnOnce(),
) -> io::Result<GcReport> {
    let mut report = GcReport::default();
    let mut marks = Marks::default();
    marks.mark_new_commits(repo)?;
    let candidates = unmarked_objects(repo, &marks.reachable)?;
    before_locking();

    let _exclusive = repo
        .storage()
        .lock_telling_wait(super::WRITE_LOCK, true, on_wait)?;
    marks.mark_new_commits(repo)?;
    report.commits = marks.commits.len();
    report.reachable = marks.reachable.len();
    let now = SystemTime::now();
    for id in candidates {
        if marks.reachable.contains(&id) {
            continue; // named by a commit that landed while gc marked
        }
        let key = id.key_in("objects");
        let Some(stat) = repo.storage().stat(&key)? else {
            continue;
        };
        if stat.links > 1 {
            report.kept_sealed += 1;
        } else if now.duration_since(stat.changed).unwrap_or_default() < options.grace {
            report.kept_recent += 1;
        } else {
            if !options.dry_run {
                repo.storage().delete(&key)?;
            }
            report.removed += 1;
            report.removed_bytes += stat.len;
        }
    }
    Ok(report)
}

/// The objects in the store that `reachable` does not hold.
fn unmarked_objects(repo: &Repo, reachable: &HashSet<ObjectId>) -> io::Result<Vec<ObjectId>> {
    let mut unmarked = Vec::new();
    for_each_id(repo, "objects", |id| {
        if !reachable.contains(&id) {
            unmarked.push(id);
        }
        Ok(())
    })?;
    Ok(unmarked)
}

/// Call `f` with the id of each file in `dir` (`objects`, `commits`),
/// laid out as [`ObjectId::key_in`] lays them; other names are skipped.
fn for_each_id(
    repo: &Repo,
    dir: &str,
    mut f: impl FnMut(ObjectId) -> io::Result<()>,
) -> io::Result<()> {
    for prefix in repo.storage().list(dir)? {
        for rest in repo.storage().list(&format!("{dir}/{prefix}"))? {
            if let Ok(id) = format!("{prefix}{rest}").parse::<ObjectId>() {
                f(id)?;
            }
        }
    }
    Ok(())
}

/// What gc has marked so far: the commit records walked and every object
/// they reach.
#[derive(Default)]
struct Marks {
    commits: HashSet<ObjectId>,
    reachable: HashSet<ObjectId>,
}

impl Marks {
    /// Marks everything the commit records not walked yet reach. A node
    /// marked before is not walked again: everything below it was marked
    /// with it. Fails on the first object that is missing or unreadable.
    fn mark_new_commits(&mut self, repo: &Repo) -> io::Result<()> {
        let damaged = |what: String, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("{what}: {e}; nothing was removed (run zarrfs fsck)"),
            )
        };
        for_each_id(repo, "commits", |commit| {
            if !self.commits.insert(commit) {
                return Ok(());
            }
            let record = repo
                .commit_record(commit)
                .map_err(|e| damaged(format!("commit {commit}"), e))?;
            let mut stack = vec![record.tree];
            while let Some(id) = stack.pop() {
                if !self.reachable.insert(id) {
                    continue;
                }
                let node = repo
                    .objects()
                    .get_node(id)
                    .map_err(|e| damaged(format!("commit {commit}, tree node {id}"), e))?;
                stack.extend(node.subtrees());
                if let Node::Leaf { entries } = &*node {
                    let files = entries.iter().filter(|e| e.kind == EntryKind::File);
                    self.reachable.extend(files.map(|e| e.id));
                }
            }
            if self.reachable.insert(record.changes) {
                let pages = ChangePages::open(repo.objects(), record.changes)
                    .map_err(|e| damaged(format!("commit {commit}'s change list"), e))?;
                self.reachable.extend(pages.page_ids().iter().copied());
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::object::WriteBatch;
    use crate::repo::tree::Change;
    use crate::repo::{CommitRequest, DEFAULT_BRANCH};

    /// Commits `path` = `bytes` to the default branch, storing the bytes
    /// as a commit does (an object that is there already is not stored
    /// again).
    fn commit_file(repo: &Repo, path: &str, bytes: &[u8]) {
        let mut batch = WriteBatch::default();
        let id = repo.objects().put(bytes, &mut batch).unwrap();
        let change = Change::File {
            id,
            size: bytes.len() as u64,
            mode: 0o644,
        };
        let changes = repo
            .put_change_list(&[(path.to_owned(), change)], &mut batch)
            .unwrap();
        repo.commit(CommitRequest {
            branch: DEFAULT_BRANCH,
            base: repo.branch_tip(DEFAULT_BRANCH).unwrap().unwrap().commit,
            changes,
            applied: None,
            author: "test",
            message: path,
            session: "test",
            written: batch,
        })
        .unwrap();
    }

    #[test]
    fn a_commit_landing_while_gc_marks_keeps_the_garbage_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::init(&dir.path().join("repo")).unwrap();
        commit_file(&repo, "kept", b"kept bytes");
        let mut batch = WriteBatch::default();
        let garbage = repo.objects().put(b"same bytes", &mut batch).unwrap();
        let other_garbage = repo.objects().put(b"other bytes", &mut batch).unwrap();
        batch.sync(repo.storage()).unwrap();

        let options = GcOptions {
            grace: Duration::ZERO,
            dry_run: false,
        };
        let report = gc_in_phases(
            &repo,
            options,
            || panic!("no commit was in progress"),
            || {
                // gc has marked the commits and listed the objects: both
                // pieces of garbage are to go. A commit can land now, and
                // comes to name one of them.
                let writing = repo.try_lock_for_commit().unwrap();
                assert!(writing.is_some(), "gc holds commits off while it marks");
                drop(writing);
                commit_file(&repo, "late", b"same bytes");
            },
        )
        .unwrap();

        assert_eq!(report.commits, 3, "{report:?}"); // init, kept, late
        assert_eq!(report.removed, 1, "{report:?}");
        assert!(repo.objects().contains(garbage), "the late commit's file");
        assert!(!repo.objects().contains(other_garbage));
        let fsck = super::super::fsck::fsck(&repo).unwrap();
        assert!(fsck.is_clean(), "{:?}", fsck.problems);
    }
}
