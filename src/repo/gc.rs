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
//! Commits and gc exclude each other: a commit holds the repository's
//! write lock shared from the moment it stores its first object until its
//! branch has moved, and gc holds it exclusively while it marks and
//! sweeps, so that no commit can come to name an object that gc judged
//! unreferenced. A repository with a missing or damaged reachable object
//! is not swept at all: what lies below the damage cannot be marked.

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
    let _exclusive = repo
        .storage()
        .lock_telling_wait(super::WRITE_LOCK, true, on_wait)?;
    let mut report = GcReport::default();
    let reachable = mark(repo, &mut report)?;
    report.reachable = reachable.len();
    let now = SystemTime::now();
    for prefix in repo.storage().list("objects")? {
        for rest in repo.storage().list(&format!("objects/{prefix}"))? {
            let Ok(id) = format!("{prefix}{rest}").parse::<ObjectId>() else {
                continue; // not an object
            };
            if reachable.contains(&id) {
                continue;
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
    }
    Ok(report)
}

/// Every object the repository's commits reach. Fails on the first one
/// that is missing or unreadable.
fn mark(repo: &Repo, report: &mut GcReport) -> io::Result<HashSet<ObjectId>> {
    let damaged = |what: String, e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("{what}: {e}; nothing was removed (run zarrfs fsck)"),
        )
    };
    let mut reachable = HashSet::new();
    for prefix in repo.storage().list("commits")? {
        for rest in repo.storage().list(&format!("commits/{prefix}"))? {
            let Ok(commit) = format!("{prefix}{rest}").parse::<ObjectId>() else {
                continue;
            };
            report.commits += 1;
            let record = repo
                .commit_record(commit)
                .map_err(|e| damaged(format!("commit {commit}"), e))?;
            let mut stack = vec![record.tree];
            while let Some(id) = stack.pop() {
                if !reachable.insert(id) {
                    continue;
                }
                let node = repo
                    .objects()
                    .get_node(id)
                    .map_err(|e| damaged(format!("commit {commit}, tree node {id}"), e))?;
                match &*node {
                    Node::Inner { children } => stack.extend(children.iter().map(|c| c.id)),
                    Node::Leaf { entries } => {
                        for entry in entries {
                            match entry.kind {
                                EntryKind::Dir => stack.push(entry.id),
                                EntryKind::File => {
                                    reachable.insert(entry.id);
                                }
                            }
                        }
                    }
                }
            }
            if reachable.insert(record.changes) {
                let pages = ChangePages::open(repo.objects(), record.changes)
                    .map_err(|e| damaged(format!("commit {commit}'s change list"), e))?;
                reachable.extend(pages.page_ids().iter().copied());
            }
        }
    }
    Ok(reachable)
}
