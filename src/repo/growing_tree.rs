//! A tree built from a long change list a slice at a time (a large
//! commit's pages, a rebase's slices), storing each node it keeps once.
//!
//! Applying each slice to the tree the previous slice made, and storing
//! that tree, stores the nodes the next slice rewrites again: the
//! directories on the way to where the slice ended, and the leaf it ended
//! in. No commit names those first versions; they waited for `zarrfs gc`.
//! A commit of 100,000 files in 100 directories left about 45 of them,
//! half a megabyte, on the disk and in the commit's sync.
//!
//! Here a slice's new nodes are held in memory (`Trees::holding`). After
//! each slice, the nodes the new root reaches are stored, except those a
//! later slice may still change; the rest are dropped, being replaced
//! already. Changes come in path order, so a later slice changes only
//! names after the slice's last path: held nodes stay held on the way to
//! that path and to the right of it (where an insertion split a leaf).
//! Memory stays at one slice's nodes plus that way down.
//!
//! Paths sorted as strings are not quite in tree order: `a/x` sorts
//! before `a0` but after `a.b`, so a slice ending at `a.b/x` may be
//! followed by one that changes `a/y`, in a node to the left of the way.
//! Such a node is stored and then replaced, as every node was before:
//! the tree is right, and gc takes the first version.

use std::collections::{HashMap, HashSet};
use std::io;

use super::object::{ObjectId, Objects, WriteBatch};
use super::tree::{Change, EntryKind, HeldNode, HeldNodes, Node, Trees};

/// A tree being built from changes that come in path order.
pub struct GrowingTree {
    objects: Objects,
    root: ObjectId,
    held: HeldNodes,
}

impl GrowingTree {
    /// Start from the stored tree `base`.
    pub fn new(objects: Objects, base: ObjectId) -> GrowingTree {
        GrowingTree {
            objects,
            root: base,
            held: HeldNodes::default(),
        }
    }

    /// Apply the next slice of changes; every path in it comes after
    /// those of the slices before it (see the module doc for when that
    /// is not so).
    pub fn apply(
        &mut self,
        changes: Vec<(&str, &Change)>,
        batch: &mut WriteBatch,
    ) -> io::Result<()> {
        let Some(last) = changes.iter().map(|&(path, _)| path).max() else {
            return Ok(());
        };
        let trees = Trees::holding(&self.objects, &self.held);
        self.root = trees.apply_pairs(self.root, changes, batch)?;
        let open = self.still_open(last);
        self.store_settled(&open, batch)
    }

    /// Store what is still held and return the tree's root.
    pub fn finish(mut self, batch: &mut WriteBatch) -> io::Result<ObjectId> {
        self.store_settled(&HashSet::new(), batch)?;
        Ok(self.root)
    }

    /// Store the held nodes the root reaches, except the `open` ones,
    /// which stay held; drop the held nodes it does not reach.
    fn store_settled(
        &mut self,
        open: &HashSet<ObjectId>,
        batch: &mut WriteBatch,
    ) -> io::Result<()> {
        let mut held = std::mem::take(self.held.get_mut());
        let mut kept = HashMap::new();
        let mut stack = vec![self.root];
        // A node not held is stored, and so is everything below it.
        while let Some(id) = stack.pop() {
            let Some(node) = held.remove(&id) else {
                continue;
            };
            stack.extend(node.node.subtrees());
            if open.contains(&id) {
                kept.insert(id, node);
            } else {
                self.objects
                    .put_encoded_node(node.node, &node.bytes, batch)?;
            }
        }
        *self.held.get_mut() = kept;
        Ok(())
    }

    /// The held nodes a change to a path after `last` may rewrite: those
    /// on the way from the root to `last`, and in each directory on that
    /// way, those right of it.
    fn still_open(&self, last: &str) -> HashSet<ObjectId> {
        let held = self.held.borrow();
        let mut open = HashSet::new();
        let mut dir = self.root;
        for name in last.split('/') {
            let mut id = dir;
            let entry = loop {
                let Some(node) = held.get(&id) else {
                    return open;
                };
                open.insert(id);
                match &*node.node {
                    Node::Leaf { entries } => {
                        break entries
                            .binary_search_by(|e| e.name.as_str().cmp(name))
                            .ok()
                            .map(|i| &entries[i]);
                    }
                    Node::Inner { children } => {
                        let i = children
                            .partition_point(|c| c.first.as_str() <= name)
                            .saturating_sub(1);
                        for right in &children[i + 1..] {
                            add_held_below(&held, right.id, &mut open);
                        }
                        id = children[i].id;
                    }
                }
            };
            match entry {
                Some(entry) if entry.kind == EntryKind::Dir => dir = entry.id,
                _ => break,
            }
        }
        open
    }
}

/// Add `id` and every held node below it to `open`, if `id` is held.
fn add_held_below(held: &HashMap<ObjectId, HeldNode>, id: ObjectId, open: &mut HashSet<ObjectId>) {
    let mut stack = vec![id];
    while let Some(id) = stack.pop() {
        if let Some(node) = held.get(&id)
            && open.insert(id)
        {
            stack.extend(node.node.subtrees());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tree::Entry;
    use crate::repo::tree::tests::objects;

    fn file(n: u32) -> Change {
        Change::File {
            id: ObjectId::of(&n.to_le_bytes()),
            size: n as u64,
            mode: 0o644,
        }
    }

    /// Every object in the store, by id.
    fn stored(dir: &std::path::Path) -> HashSet<ObjectId> {
        let mut out = HashSet::new();
        for prefix in std::fs::read_dir(dir.join("objects")).unwrap() {
            let prefix = prefix.unwrap();
            for rest in std::fs::read_dir(prefix.path()).unwrap() {
                let name = format!(
                    "{}{}",
                    prefix.file_name().to_str().unwrap(),
                    rest.unwrap().file_name().to_str().unwrap()
                );
                out.insert(name.parse().unwrap());
            }
        }
        out
    }

    /// The tree nodes `root` reaches.
    fn reachable(objects: &Objects, root: ObjectId) -> HashSet<ObjectId> {
        let mut out = HashSet::new();
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            if !out.insert(id) {
                continue;
            }
            stack.extend(objects.get_node(id).unwrap().subtrees());
        }
        out
    }

    #[test]
    fn slices_make_the_tree_one_apply_makes_and_store_only_its_nodes() {
        let (base_dir, base_objects) = objects();
        // A base with entries both sides of the new ones, so that slices
        // insert into leaves that split.
        let base_files: Vec<(String, Change)> = (0..3_000)
            .map(|i| (format!("d{}/{:05}", i % 3, i * 2), file(i)))
            .collect();
        let mut batch = WriteBatch::default();
        let trees = Trees::new(&base_objects);
        let base = trees.build(&base_files, &mut batch).unwrap();

        let mut changes: Vec<(String, Change)> = (0..6_000)
            .map(|i| (format!("d{}/{:05}", i % 3, i * 2 + 1), file(i + 10_000)))
            .chain((0..1_500).map(|i| (format!("d{}/{:05}", i % 3, i * 4), Change::Delete)))
            .chain((0..2_000).map(|i| (format!("new/{}/{i}", i % 7), file(i + 20_000))))
            .chain([("d1".to_owned(), Change::Dir { replace: false })])
            .collect();
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        let expected = trees.apply(base, &changes, &mut batch).unwrap();

        // The same base in a store of its own, then the slices.
        let (dir, objects) = objects();
        let trees = Trees::new(&objects);
        let base_again = trees.build(&base_files, &mut batch).unwrap();
        assert_eq!(base_again, base);
        let before = stored(dir.path());
        let mut growing = GrowingTree::new(objects.clone(), base);
        for slice in changes.chunks(700) {
            let pairs = slice.iter().map(|(p, c)| (p.as_str(), c)).collect();
            growing.apply(pairs, &mut batch).unwrap();
        }
        let root = growing.finish(&mut batch).unwrap();

        let mut got = Vec::new();
        let mut want = Vec::new();
        for (root, objects, out) in [
            (root, &objects, &mut got),
            (expected, &base_objects, &mut want),
        ] {
            for (path, _) in &changes {
                out.push(Trees::new(objects).lookup(root, path).unwrap());
            }
        }
        // Directories' ids depend on where slices split their nodes.
        let same = |a: &Option<Entry>, b: &Option<Entry>| match (a, b) {
            (Some(a), Some(b)) if a.kind == EntryKind::Dir => b.kind == EntryKind::Dir,
            _ => a == b,
        };
        let differs = (0..changes.len()).find(|&i| !same(&got[i], &want[i]));
        assert_eq!(
            differs.map(|i| (&changes[i].0, &got[i], &want[i])),
            None,
            "the slices' tree has the files one apply gives"
        );
        assert_eq!(
            Trees::new(&objects).diff(base, root).unwrap(),
            Trees::new(&base_objects).diff(base, expected).unwrap()
        );
        let written: HashSet<ObjectId> = stored(dir.path()).difference(&before).copied().collect();
        let needed = reachable(&objects, root);
        let unreferenced: Vec<_> = written.difference(&needed).collect();
        assert!(
            unreferenced.is_empty(),
            "{} of {} nodes stored are not in the tree",
            unreferenced.len(),
            written.len()
        );
        drop(base_dir);
    }
}
