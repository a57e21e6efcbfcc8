//! What the kernel may cache, and for how long.
//!
//! Entries and attributes of the view are cached by the kernel for
//! [`VIEW_TTL`]: every change of the view goes through the kernel itself
//! (create, write, rename, ...), except the view switches that commit,
//! checkout and discard make. Those call `Fs::invalidate_view`, which
//! tells the kernel to forget every view entry and attribute it holds, so
//! that the next access after the switch sees the new view; a commit that
//! was not rebased leaves the view as it was, so it forgets only inode
//! numbers that changed at once, and the rest in the background
//! (`Fs::invalidate_after_own_commit`). The control
//! directory and the history trees change when other mounts commit, so
//! nothing of them is cached (TTL 0).
//!
//! Invalidation costs one notification (a system call, and the parent
//! directory's lock in the kernel) per entry named, so it names as few as
//! it can: invalidating a directory's entry also drops every entry below
//! it that nothing uses, and FUSE evicts an inode with its last entry
//! (which gives its number back with `forget`). So it names the
//! top-level entries of the view, and the entries the kernel may keep in
//! use past that: directories (a working directory), inodes with open
//! handles, and numbers detached from their paths. Attributes are
//! invalidated for the inodes that can outlive their entries: open ones
//! and directories. A commit of 100,000 files needs a few hundred
//! notifications, not 200,000.
//!
//! Invalidation takes the kernel's directory locks, so it is never done
//! while this daemon holds a lock that a request under such a lock could
//! wait for: the view-switch actions call it after releasing the session.

use std::ffi::OsStr;
use std::time::Duration;

use fuser::INodeNo;

use super::control::{self, Node};
use super::core::{Fs, lock};
use super::inodes::ROOT_INO;

/// How long the kernel may keep a view entry or attribute.
pub const VIEW_TTL: Duration = Duration::from_secs(1);

/// How long after a commit its background invalidation starts.
const BACKGROUND_INVALIDATION_DELAY: Duration = Duration::from_millis(500);

impl Fs {
    /// How long the kernel may cache what it learns about `ino`.
    pub fn ttl(&self, ino: u64) -> Duration {
        let path = lock(&self.inodes).path(ino);
        match path.as_deref().and_then(control::classify) {
            Some(Node::View(_)) => VIEW_TTL,
            _ => Duration::ZERO,
        }
    }

    /// The view was replaced: make the kernel forget the view's entries
    /// and attributes (and cached pages) it holds. Call without holding
    /// the session or epoch locks.
    pub(super) fn invalidate_view(&self) {
        self.invalidate(true);
    }

    /// A commit landed on the session's base, rebased over nothing: the
    /// view shows what it showed before, so before the commit returns the
    /// kernel forgets only the numbers detached from their paths (their
    /// file is another one now, see `super::passthrough`). The rest is
    /// forgotten in the background, where dropping 100,000 cached entries
    /// (a quarter of a second of the kernel's time) delays nobody: it
    /// gives back the inode numbers the kernel held for the committed
    /// files, which would otherwise pile up commit after commit. Cached
    /// attributes show the times of writing until their TTL runs out.
    pub(super) fn invalidate_after_own_commit(&self) {
        self.invalidate(false);
        let queued = lock(&self.background_invalidation)
            .as_ref()
            .is_some_and(|invalidations| invalidations.send(()).is_ok());
        if !queued {
            self.invalidate_view();
        }
    }

    /// The background invalidation thread's work: the whole view, once
    /// for any number of requests made meanwhile.
    pub(super) fn invalidate_in_background(&self, requests: &std::sync::mpsc::Receiver<()>) {
        while requests.recv().is_ok() {
            // After what usually follows a commit (the caller reading the
            // outcome, the next writes), not in its way.
            std::thread::sleep(BACKGROUND_INVALIDATION_DELAY);
            while requests.try_recv().is_ok() {}
            self.invalidate_view();
        }
    }

    fn invalidate(&self, whole_view: bool) {
        let started = std::time::Instant::now();
        // (inode, parent inode, name, whether its attributes can outlive
        // its entry).
        let targets: Vec<(u64, u64, String, bool)> = {
            let mut inodes = lock(&self.inodes);
            let detached = inodes.take_detached();
            let kept: Vec<(u64, &str)> = if whole_view {
                inodes.pinned_or_top().collect()
            } else {
                Vec::new()
            };
            kept.into_iter()
                .chain(detached.iter().map(|(ino, path)| (*ino, path.as_str())))
                .filter(|(_, path)| matches!(control::classify(path), Some(Node::View(_))))
                .map(|(ino, path)| {
                    let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
                    let parent_ino = if parent.is_empty() {
                        ROOT_INO
                    } else {
                        inodes.get(parent).unwrap_or(0)
                    };
                    let attributes = inodes.outlives_entry(ino);
                    (ino, parent_ino, name.to_owned(), attributes)
                })
                .collect()
        };
        let Some(notifier) = self.notifier.get() else {
            return; // not mounted (tests without a kernel)
        };
        for (ino, parent, name, attributes) in &targets {
            // Failures mean the kernel holds nothing to forget.
            if *parent != 0 && !name.is_empty() {
                let _ = notifier.inval_entry(INodeNo(*parent), OsStr::new(name));
            }
            if *attributes {
                let _ = notifier.inval_inode(INodeNo(*ino), 0, -1);
            }
        }
        let _ = notifier.inval_inode(INodeNo(ROOT_INO), 0, 0);
        tracing::debug!(
            whole_view,
            entries = targets.len(),
            duration_us = started.elapsed().as_micros() as u64,
            "kernel caches of the view invalidated"
        );
    }
}
