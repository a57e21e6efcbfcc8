//! Inode numbers: a stable number per mount path while anything holds it.
//!
//! Every name the mount shows, in the view or under `.zarrfs/`, has a
//! "mount path": the view's own path (`""` for the root, `a/b` below it)
//! or `.zarrfs/...` for the control directory, which the view can never
//! hold. The table gives a mount path one inode number and moves numbers
//! with `rename` the way the kernel moves its dentries, so that `lstat`
//! and `fstat` agree on `st_ino` (as `shutil.rmtree` checks). Unlinking a
//! path retires its number: a file made later at the same path is a new
//! inode, as on any filesystem.
//!
//! An inode stays in the table while something holds it:
//!
//! - the kernel: every reply that hands it an entry (lookup, create,
//!   mkdir, link, a readdirplus entry other than `.` and `..`) counts one
//!   lookup, and `forget` gives lookups back, as the FUSE protocol
//!   counts them;
//! - an open handle (file or directory), and a directory listing held by
//!   an open directory handle, which pins the numbers it shows.
//!
//! When neither holds it, it is dropped, so that the table is as large
//! as what the kernel and the open handles know, not as the number of
//! paths the mount ever showed. A path dropped and shown again gets a new
//! number. Numbers come from a 64-bit counter and are never reused, so
//! that a number the kernel may still hold never comes to mean another
//! file; a `forget` or a release for a number that was retired (unlinked,
//! renamed over, or a path whose kind changed) finds nothing and does
//! nothing.

use std::collections::{BTreeMap, HashMap};

/// The root's inode number, as FUSE fixes it.
pub const ROOT_INO: u64 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Inode {
    path: String,
    dir: bool,
    /// Entries handed to the kernel and not forgotten yet.
    lookups: u64,
    /// Open handles and directory listings that show it.
    opens: u64,
}

#[derive(Debug)]
pub struct InodeTable {
    by_path: BTreeMap<String, u64>,
    by_ino: HashMap<u64, Inode>,
    next: u64,
    /// Detached numbers whose kernel entries are still to be invalidated.
    detached: Vec<(u64, String)>,
}

impl Default for InodeTable {
    fn default() -> Self {
        InodeTable::new()
    }
}

impl InodeTable {
    pub fn new() -> InodeTable {
        let mut table = InodeTable {
            by_path: BTreeMap::new(),
            by_ino: HashMap::new(),
            next: ROOT_INO + 1,
            detached: Vec::new(),
        };
        table.by_path.insert(String::new(), ROOT_INO);
        table.by_ino.insert(
            ROOT_INO,
            Inode {
                path: String::new(),
                dir: true,
                lookups: 0,
                opens: 0,
            },
        );
        table
    }

    /// The mount path an inode stands for, if it is still in the table.
    pub fn path(&self, ino: u64) -> Option<String> {
        self.by_ino.get(&ino).map(|i| i.path.clone())
    }

    /// Every numbered path but the root, with its number.
    pub fn paths(&self) -> impl Iterator<Item = (u64, &str)> {
        self.by_ino
            .iter()
            .filter(|(ino, _)| **ino != ROOT_INO)
            .map(|(ino, inode)| (*ino, inode.path.as_str()))
    }

    /// The numbered paths (not the root) that the kernel may use without
    /// looking them up from their parent again: top-level names (whose
    /// invalidation drops every unused entry below them), directories
    /// (a process's working directory), and whatever an open handle
    /// holds (open files, listings). See `super::kernel_cache`.
    pub fn pinned_or_top(&self) -> impl Iterator<Item = (u64, &str)> {
        self.by_ino
            .iter()
            .filter(|(ino, inode)| {
                **ino != ROOT_INO && (inode.dir || inode.opens > 0 || !inode.path.contains('/'))
            })
            .map(|(ino, inode)| (*ino, inode.path.as_str()))
    }

    /// Whether the kernel may use the attributes of `ino` without looking
    /// its entry up again: a directory, an open inode, or a number no
    /// longer in the table (detached while the kernel holds it).
    pub fn outlives_entry(&self, ino: u64) -> bool {
        self.by_ino
            .get(&ino)
            .is_none_or(|inode| inode.dir || inode.opens > 0)
    }

    /// The inode of a path, if it has one.
    pub fn get(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// The inode for a path that exists now as a file or a directory,
    /// numbering it if it has no number. A path whose kind changed (a
    /// view switch replaced a file by a directory) gets a new number, so
    /// that the kernel never sees one inode change type.
    fn number(&mut self, path: &str, dir: bool) -> u64 {
        if let Some(&ino) = self.by_path.get(path) {
            if path.is_empty() || self.by_ino.get(&ino).is_some_and(|i| i.dir == dir) {
                return ino;
            }
            self.by_ino.remove(&ino);
        }
        let ino = self.next;
        self.next += 1;
        self.by_path.insert(path.to_owned(), ino);
        self.by_ino.insert(
            ino,
            Inode {
                path: path.to_owned(),
                dir,
                lookups: 0,
                opens: 0,
            },
        );
        ino
    }

    /// The kernel is handed an entry for `path`: its number, counted as
    /// one lookup.
    pub fn lookup(&mut self, path: &str, dir: bool) -> u64 {
        let ino = self.number(path, dir);
        self.looked_up(ino);
        ino
    }

    /// The kernel is handed an entry by number (a readdirplus entry of a
    /// listing that pins it): count one lookup. Nothing for a retired
    /// number.
    pub fn looked_up(&mut self, ino: u64) {
        if let Some(inode) = self.by_ino.get_mut(&ino) {
            inode.lookups += 1;
        }
    }

    /// The kernel forgets `n` lookups of `ino`; the inode is dropped if
    /// nothing holds it any more.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if let Some(inode) = self.by_ino.get_mut(&ino) {
            inode.lookups = inode.lookups.saturating_sub(n);
            self.drop_if_unused(ino);
        }
    }

    /// A directory listing shows `path`: its number, held until
    /// [`InodeTable::close`].
    pub fn pin(&mut self, path: &str, dir: bool) -> u64 {
        let ino = self.number(path, dir);
        self.open(ino);
        ino
    }

    /// An open handle holds `ino` until [`InodeTable::close`].
    pub fn open(&mut self, ino: u64) {
        if let Some(inode) = self.by_ino.get_mut(&ino) {
            inode.opens += 1;
        }
    }

    /// A handle or a listing lets go of `ino`.
    pub fn close(&mut self, ino: u64) {
        if let Some(inode) = self.by_ino.get_mut(&ino) {
            inode.opens = inode.opens.saturating_sub(1);
            self.drop_if_unused(ino);
        }
    }

    fn drop_if_unused(&mut self, ino: u64) {
        if ino == ROOT_INO {
            return;
        }
        if let Some(inode) = self.by_ino.get(&ino)
            && inode.lookups == 0
            && inode.opens == 0
        {
            let inode = self.by_ino.remove(&ino).expect("just seen");
            if self.by_path.get(&inode.path) == Some(&ino) {
                self.by_path.remove(&inode.path);
            }
        }
    }

    /// Retire one number, leaving its path to get a new one at its next
    /// lookup: the file the path names was replaced while the kernel
    /// still holds the old one (see `super::passthrough`).
    pub fn detach(&mut self, ino: u64) {
        if ino == ROOT_INO {
            return;
        }
        if let Some(inode) = self.by_ino.remove(&ino) {
            if self.by_path.get(&inode.path) == Some(&ino) {
                self.by_path.remove(&inode.path);
            }
            self.detached.push((ino, inode.path));
        }
    }

    /// Detach `ino` and number its path (a file) anew at once: the number
    /// the path's next lookup gets.
    pub fn renumber(&mut self, ino: u64) -> Option<u64> {
        let path = self.by_ino.get(&ino)?.path.clone();
        self.detach(ino);
        Some(self.number(&path, false))
    }

    /// The numbers detached since the last call, with the paths they had:
    /// the kernel's entries for them are to be invalidated.
    pub fn take_detached(&mut self) -> Vec<(u64, String)> {
        std::mem::take(&mut self.detached)
    }

    /// Retire a path and everything below it (unlink, rmdir).
    pub fn remove(&mut self, path: &str) {
        if path.is_empty() {
            return;
        }
        for key in self.subtree_keys(path) {
            if let Some(ino) = self.by_path.remove(&key) {
                self.by_ino.remove(&ino);
            }
        }
    }

    /// Move the numbers of `from` and everything below it to `to`,
    /// retiring whatever `to` had.
    pub fn rename(&mut self, from: &str, to: &str) {
        if from == to || from.is_empty() || to.is_empty() {
            return;
        }
        self.remove(to);
        let moved: Vec<(String, u64)> = self
            .subtree_keys(from)
            .into_iter()
            .filter_map(|key| self.by_path.remove(&key).map(|ino| (key, ino)))
            .collect();
        for (key, ino) in moved {
            let new_key = format!("{to}{}", &key[from.len()..]);
            if let Some(inode) = self.by_ino.get_mut(&ino) {
                inode.path = new_key.clone();
            }
            self.by_path.insert(new_key, ino);
        }
    }

    fn subtree_keys(&self, path: &str) -> Vec<String> {
        let prefix = format!("{path}/");
        let mut keys: Vec<String> = self
            .by_path
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        if self.by_path.contains_key(path) {
            keys.push(path.to_owned());
        }
        keys
    }

    /// How many inodes the table holds, the root included.
    pub fn len(&self) -> usize {
        debug_assert_eq!(self.by_path.len(), self.by_ino.len());
        self.by_ino.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ino.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_moves_a_subtree_and_retires_the_target() {
        let mut t = InodeTable::new();
        let a = t.lookup("a", true);
        let ab = t.lookup("a/b", false);
        let ab2 = t.lookup("ab", false);
        let c = t.lookup("c", true);
        t.rename("a", "c");
        assert_eq!(t.get("c"), Some(a));
        assert_eq!(t.get("c/b"), Some(ab));
        assert_eq!(t.path(ab).as_deref(), Some("c/b"));
        assert_eq!(t.get("a"), None);
        assert_eq!(t.path(c), None, "the old target is retired");
        assert_eq!(t.get("ab"), Some(ab2), "a sibling sharing a prefix stays");
        assert_eq!(t.lookup("c/b", false), ab, "numbers are stable");
        // The retired number's forget finds nothing.
        t.forget(c, 1);
        assert_eq!(t.get("c"), Some(a));
    }

    #[test]
    fn unlinked_paths_get_new_numbers_and_kind_changes_too() {
        let mut t = InodeTable::new();
        let x = t.lookup("x", false);
        t.remove("x");
        let x2 = t.lookup("x", false);
        assert_ne!(x, x2);
        let x3 = t.lookup("x", true);
        assert_ne!(x2, x3);
        assert_eq!(t.path(x2), None);
        assert_eq!(t.lookup("", true), ROOT_INO);
    }

    #[test]
    fn a_renumbered_path_is_looked_up_as_its_new_number() {
        let mut t = InodeTable::new();
        let f = t.lookup("f", false);
        t.open(f);
        let fresh = t.renumber(f).unwrap();
        assert!(fresh > f);
        assert_eq!(t.lookup("f", false), fresh, "the retry's lookup");
        assert_eq!(t.path(f), None, "the reader's number is retired");
        assert_eq!(t.take_detached(), vec![(f, "f".to_owned())]);
        t.close(f);
        t.forget(f, 1);
        t.forget(fresh, 1);
        assert_eq!(t.len(), 1, "nothing left behind");
        assert_eq!(t.renumber(f), None, "a retired number has no path");
    }

    #[test]
    fn an_inode_lives_while_the_kernel_or_a_handle_holds_it() {
        let mut t = InodeTable::new();
        let f = t.lookup("f", false);
        assert_eq!(t.lookup("f", false), f);
        t.forget(f, 1);
        assert_eq!(t.get("f"), Some(f), "one lookup is still held");
        t.open(f);
        t.forget(f, 1);
        assert_eq!(t.path(f).as_deref(), Some("f"), "the open handle holds it");
        t.close(f);
        assert_eq!(
            (t.get("f"), t.path(f)),
            (None, None),
            "dropped from both maps"
        );
        let f2 = t.lookup("f", false);
        assert!(f2 > f, "shown again, it is a new number");

        // Forgetting more than was looked up, or a number never given, is
        // harmless; the root is never dropped.
        t.forget(f2, 5);
        t.forget(12345, 1);
        t.forget(ROOT_INO, 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.path(ROOT_INO).as_deref(), Some(""));

        // A listing pins what it shows; readdirplus counts lookups on
        // what it pinned.
        let d = t.pin("d", true);
        let e = t.pin("d/e", false);
        t.looked_up(e);
        t.close(d);
        t.close(e);
        assert_eq!(t.get("d"), None, "listed, never handed out");
        assert_eq!(t.get("d/e"), Some(e), "handed out by readdirplus");
        t.forget(e, 1);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn many_files_shown_and_forgotten_leave_nothing_behind() {
        let mut t = InodeTable::new();
        let mut last = ROOT_INO;
        for i in 0..100_000u32 {
            let path = format!("d{}/c{i}", i % 7);
            let ino = t.lookup(&path, false);
            assert!(ino > last);
            last = ino;
            t.forget(ino, 1);
        }
        assert_eq!(t.len(), 1);
    }
}
