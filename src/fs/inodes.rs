//! Inode numbers: a stable number per mount path.
//!
//! Every name the mount shows, in the view or under `.zarrfs/`, has a
//! "mount path": the view's own path (`""` for the root, `a/b` below it)
//! or `.zarrfs/...` for the control directory, which the view can never
//! hold. The table gives each mount path one inode number for as long as
//! the mount lives, and moves numbers with `rename` the way the kernel
//! moves its dentries, so that `lstat` and `fstat` agree on `st_ino` (as
//! `shutil.rmtree` checks). Unlinking a path retires its number: a file
//! made later at the same path is a new inode, as on any filesystem.
//!
//! The kernel's `forget` is ignored: numbers are never reused, so the
//! table only grows with the number of distinct paths the mount has shown.

use std::collections::{BTreeMap, HashMap};

/// The root's inode number, as FUSE fixes it.
pub const ROOT_INO: u64 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    ino: u64,
    dir: bool,
}

#[derive(Debug)]
pub struct InodeTable {
    by_path: BTreeMap<String, Slot>,
    by_ino: HashMap<u64, String>,
    next: u64,
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
        };
        table.by_path.insert(
            String::new(),
            Slot {
                ino: ROOT_INO,
                dir: true,
            },
        );
        table.by_ino.insert(ROOT_INO, String::new());
        table
    }

    /// The mount path an inode stands for, if it is still linked.
    pub fn path(&self, ino: u64) -> Option<String> {
        self.by_ino.get(&ino).cloned()
    }

    /// The inode of a path, if it has one.
    pub fn get(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).map(|s| s.ino)
    }

    /// The inode for a path that exists now as a file or a directory. A
    /// path whose kind changed (a view switch replaced a file by a
    /// directory) gets a new number, so the kernel never sees one inode
    /// change type.
    pub fn ino_for(&mut self, path: &str, dir: bool) -> u64 {
        if let Some(slot) = self.by_path.get(path) {
            if slot.dir == dir || path.is_empty() {
                return slot.ino;
            }
            let old = slot.ino;
            self.by_ino.remove(&old);
        }
        let ino = self.next;
        self.next += 1;
        self.by_path.insert(path.to_owned(), Slot { ino, dir });
        self.by_ino.insert(ino, path.to_owned());
        ino
    }

    /// Forget a path and everything below it (unlink, rmdir).
    pub fn remove(&mut self, path: &str) {
        if path.is_empty() {
            return;
        }
        for key in self.subtree_keys(path) {
            if let Some(slot) = self.by_path.remove(&key) {
                self.by_ino.remove(&slot.ino);
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
        let moved: Vec<(String, Slot)> = self
            .subtree_keys(from)
            .into_iter()
            .filter_map(|key| self.by_path.remove(&key).map(|slot| (key, slot)))
            .collect();
        for (key, slot) in moved {
            let new_key = format!("{to}{}", &key[from.len()..]);
            self.by_ino.insert(slot.ino, new_key.clone());
            self.by_path.insert(new_key, slot);
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

    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_moves_a_subtree_and_retires_the_target() {
        let mut t = InodeTable::new();
        let a = t.ino_for("a", true);
        let ab = t.ino_for("a/b", false);
        let ab2 = t.ino_for("ab", false);
        let c = t.ino_for("c", true);
        t.rename("a", "c");
        assert_eq!(t.get("c"), Some(a));
        assert_eq!(t.get("c/b"), Some(ab));
        assert_eq!(t.path(ab).as_deref(), Some("c/b"));
        assert_eq!(t.get("a"), None);
        assert_eq!(t.path(c), None, "the old target is retired");
        assert_eq!(t.get("ab"), Some(ab2), "a sibling sharing a prefix stays");
        assert_eq!(t.ino_for("c/b", false), ab, "numbers are stable");
    }

    #[test]
    fn unlinked_paths_get_new_numbers_and_kind_changes_too() {
        let mut t = InodeTable::new();
        let x = t.ino_for("x", false);
        t.remove("x");
        let x2 = t.ino_for("x", false);
        assert_ne!(x, x2);
        let x3 = t.ino_for("x", true);
        assert_ne!(x2, x3);
        assert_eq!(t.path(x2), None);
        assert_eq!(t.ino_for("", true), ROOT_INO);
    }
}
