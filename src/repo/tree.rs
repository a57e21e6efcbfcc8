//! Trees: the files of one commit, with structural sharing.
//!
//! A tree is a hierarchy of directories, as in git. Each directory is a
//! small B-tree of [`Node`]s sorted by entry name: a directory of a few
//! hundred entries is a single leaf, and a directory of 100,000 chunks is a
//! few hundred leaves under an inner node. Changing one entry rewrites its
//! leaf, the inner nodes above it and the directories above those, and
//! nothing else: a commit costs O(changed paths x depth).
//!
//! Nodes never merge when they shrink (only empty ones go away); that keeps
//! updates simple at the price of some underfull nodes after deletions.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::json;
use super::object::{ObjectId, Objects, WriteBatch};

/// Most entries in a leaf, and most children of an inner node.
pub const NODE_CAPACITY: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
}

/// One name in a directory. For a file, `id` names its blob; for a
/// directory, the root node of its B-tree (and `size` is 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
    pub id: ObjectId,
    pub size: u64,
    pub mode: u32,
}

/// A child of an inner node and the smallest name below it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Child {
    pub first: String,
    pub id: ObjectId,
}

/// A node of a directory's B-tree, stored as a JSON object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "node", rename_all = "lowercase")]
pub enum Node {
    Leaf { entries: Vec<Entry> },
    Inner { children: Vec<Child> },
}

/// What a commit did to one path. Applying a change list in path order
/// to a tree yields the commit's tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Change {
    /// The path is now this file, replacing whatever was there.
    File { id: ObjectId, size: u64, mode: u32 },
    /// The path is a directory. `replace`: it is now an empty directory,
    /// whatever was there before; otherwise it is made if missing (mkdir).
    Dir { replace: bool },
    /// Nothing is at the path any more, nor below it.
    Delete,
}

impl Node {
    /// The nodes right below this one: an inner node's children, a
    /// leaf's directories (a file's id names a blob, not a node).
    pub fn subtrees(&self) -> impl Iterator<Item = ObjectId> + '_ {
        let (children, entries) = match self {
            Node::Inner { children } => (&children[..], &[][..]),
            Node::Leaf { entries } => (&[][..], &entries[..]),
        };
        children.iter().map(|c| c.id).chain(
            entries
                .iter()
                .filter(|e| e.kind == EntryKind::Dir)
                .map(|e| e.id),
        )
    }

    /// The node as stored: the same bytes as `serde_json::to_vec`,
    /// written directly (see `super::json`).
    pub fn to_json(&self) -> Vec<u8> {
        match self {
            Node::Leaf { entries } => json::list(
                br#"{"node":"leaf","entries":["#,
                entries,
                140,
                b"]}",
                |out, entry| {
                    out.extend_from_slice(br#"{"name":"#);
                    json::string(out, &entry.name);
                    out.extend_from_slice(match entry.kind {
                        EntryKind::File => br#","kind":"file","id":"#,
                        EntryKind::Dir => br#","kind":"dir","id":"#,
                    });
                    json::id(out, &entry.id);
                    out.extend_from_slice(br#","size":"#);
                    json::number(out, entry.size);
                    out.extend_from_slice(br#","mode":"#);
                    json::number(out, entry.mode);
                    out.push(b'}');
                },
            ),
            Node::Inner { children } => json::list(
                br#"{"node":"inner","children":["#,
                children,
                100,
                b"]}",
                |out, child| {
                    out.extend_from_slice(br#"{"first":"#);
                    json::string(out, &child.first);
                    out.extend_from_slice(br#","id":"#);
                    json::id(out, &child.id);
                    out.push(b'}');
                },
            ),
        }
    }
}

impl Change {
    /// Whether the change removes what was at the path before, so that a
    /// change below the path by someone else conflicts with it.
    pub fn is_destructive(&self) -> bool {
        !matches!(self, Change::Dir { replace: false })
    }
}

pub const DIR_MODE: u32 = 0o755;

/// One edit of a directory: the entry a name has now (`None`: removed).
type Edit<'a> = (&'a str, Option<Entry>);

/// A node made but not stored yet, with its stored form.
pub(super) struct HeldNode {
    pub node: Arc<Node>,
    pub bytes: Vec<u8>,
}

/// Nodes a tree being built holds in memory, by id (see
/// `super::growing_tree`).
pub(super) type HeldNodes = RefCell<HashMap<ObjectId, HeldNode>>;

/// Read and write trees in an object store.
pub struct Trees<'a> {
    objects: &'a Objects,
    /// Where new nodes go instead of the store, if anywhere.
    held: Option<&'a HeldNodes>,
}

impl<'a> Trees<'a> {
    pub fn new(objects: &'a Objects) -> Trees<'a> {
        Trees {
            objects,
            held: None,
        }
    }

    /// Trees whose new nodes are put in `held` instead of the store, and
    /// whose reads find them there.
    pub(super) fn holding(objects: &'a Objects, held: &'a HeldNodes) -> Trees<'a> {
        Trees {
            objects,
            held: Some(held),
        }
    }

    fn put_node(&self, node: Node, batch: &mut WriteBatch) -> io::Result<ObjectId> {
        let Some(held) = self.held else {
            return self.objects.put_node(node, batch);
        };
        let bytes = node.to_json();
        let id = ObjectId::of(&bytes);
        held.borrow_mut().entry(id).or_insert(HeldNode {
            node: Arc::new(node),
            bytes,
        });
        Ok(id)
    }

    fn get_node(&self, id: ObjectId) -> io::Result<Arc<Node>> {
        if let Some(held) = self.held
            && let Some(held) = held.borrow().get(&id)
        {
            return Ok(held.node.clone());
        }
        self.objects.get_node(id)
    }

    /// The id of the empty directory, writing it if needed.
    pub fn empty(&self, batch: &mut WriteBatch) -> io::Result<ObjectId> {
        self.put_node(Node::Leaf { entries: vec![] }, batch)
    }

    /// The entry at `path` (`a/b/c`), or `None`. The empty path is the root
    /// directory itself.
    pub fn lookup(&self, root: ObjectId, path: &str) -> io::Result<Option<Entry>> {
        if path.is_empty() {
            return Ok(Some(Entry {
                name: String::new(),
                kind: EntryKind::Dir,
                id: root,
                size: 0,
                mode: DIR_MODE,
            }));
        }
        let mut dir = root;
        let mut components = path.split('/').peekable();
        while let Some(name) = components.next() {
            let Some(entry) = self.get_in_dir(dir, name)? else {
                return Ok(None);
            };
            if components.peek().is_none() {
                return Ok(Some(entry));
            }
            if entry.kind != EntryKind::Dir {
                return Ok(None);
            }
            dir = entry.id;
        }
        unreachable!("a non-empty path has a last component")
    }

    /// The entry called `name` in the directory `dir`.
    pub fn get_in_dir(&self, dir: ObjectId, name: &str) -> io::Result<Option<Entry>> {
        let mut node = self.get_node(dir)?;
        loop {
            let next = match &*node {
                Node::Leaf { entries } => {
                    return Ok(entries
                        .binary_search_by(|e| e.name.as_str().cmp(name))
                        .ok()
                        .map(|i| entries[i].clone()));
                }
                Node::Inner { children } => {
                    let i = children.partition_point(|c| c.first.as_str() <= name);
                    children[i.saturating_sub(1)].id
                }
            };
            node = self.get_node(next)?;
        }
    }

    /// All entries of the directory `dir`, sorted by name.
    pub fn list(&self, dir: ObjectId) -> io::Result<Vec<Entry>> {
        Ok(self.list_at_most(dir, usize::MAX)?.unwrap_or_default())
    }

    /// [`Trees::list`], or `None` if the directory has more than
    /// `at_most` entries, found without listing more than that.
    pub fn list_at_most(&self, dir: ObjectId, at_most: usize) -> io::Result<Option<Vec<Entry>>> {
        let mut out = Vec::new();
        Ok(self.collect(dir, &mut out, at_most)?.then_some(out))
    }

    /// Add the entries below node `id` to `out`; false once `out` would
    /// hold more than `at_most`.
    fn collect(&self, id: ObjectId, out: &mut Vec<Entry>, at_most: usize) -> io::Result<bool> {
        match &*self.get_node(id)? {
            Node::Leaf { entries } => {
                if out.len() + entries.len() > at_most {
                    return Ok(false);
                }
                out.extend(entries.iter().cloned());
            }
            Node::Inner { children } => {
                for child in children {
                    if !self.collect(child.id, out, at_most)? {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }

    /// Apply changes (any order; applied in path order) to the tree `root`
    /// and return the new root. Only the directories on the changed paths
    /// are rewritten.
    pub fn apply(
        &self,
        root: ObjectId,
        changes: &[(String, Change)],
        batch: &mut WriteBatch,
    ) -> io::Result<ObjectId> {
        self.apply_pairs(
            root,
            changes.iter().map(|(p, c)| (p.as_str(), c)).collect(),
            batch,
        )
    }

    /// [`Trees::apply`] on borrowed paths and changes.
    pub fn apply_pairs(
        &self,
        root: ObjectId,
        mut changes: Vec<(&str, &Change)>,
        batch: &mut WriteBatch,
    ) -> io::Result<ObjectId> {
        changes.sort_by(|a, b| a.0.cmp(b.0));
        self.apply_dir(Some(root), &changes, batch)
    }

    /// `changes` are relative to this directory and sorted by path.
    fn apply_dir(
        &self,
        dir: Option<ObjectId>,
        changes: &[(&str, &Change)],
        batch: &mut WriteBatch,
    ) -> io::Result<ObjectId> {
        // Group by first component. Paths sorted as strings do not keep a
        // directory's paths together ("a.b" sorts between "a" and "a/b");
        // a stable sort by first component does, and keeps each group in
        // path order. Input in path order is nearly sorted that way, which
        // the sort finds in one pass.
        let mut split: Vec<(&str, Option<&str>, &Change)> = changes
            .iter()
            .map(|&(path, change)| match path.split_once('/') {
                None => (path, None, change),
                Some((name, rest)) => (name, Some(rest), change),
            })
            .collect();
        split.sort_by(|a, b| a.0.cmp(b.0));
        let mut edits: Vec<Edit> = Vec::new();
        for group in split.chunk_by(|a, b| a.0 == b.0) {
            let name = group[0].0;
            // The last change to the name itself counts, as in path order.
            let own = group
                .iter()
                .rev()
                .find(|(_, rest, _)| rest.is_none())
                .map(|&(_, _, change)| change);
            let below: Vec<(&str, &Change)> = group
                .iter()
                .filter_map(|&(_, rest, change)| rest.map(|rest| (rest, change)))
                .collect();
            let mut current = match dir {
                Some(dir) => self.get_in_dir(dir, name)?,
                None => None,
            };
            if let Some(change) = own {
                current = match change {
                    Change::File { id, size, mode } => Some(Entry {
                        name: name.to_owned(),
                        kind: EntryKind::File,
                        id: *id,
                        size: *size,
                        mode: *mode,
                    }),
                    Change::Delete => None,
                    Change::Dir { replace } => match current {
                        Some(entry) if entry.kind == EntryKind::Dir && !replace => Some(entry),
                        _ => Some(dir_entry(name, self.empty(batch)?)),
                    },
                };
            }
            let subdir = match &current {
                Some(entry) if entry.kind == EntryKind::Dir => Some(entry.id),
                _ => None,
            };
            // Deletes below something that is not a directory delete
            // nothing; anything else below makes it a directory.
            let creates = below.iter().any(|(_, c)| !matches!(c, Change::Delete));
            if !below.is_empty() && (subdir.is_some() || creates) {
                let id = self.apply_dir(subdir, &below, batch)?;
                let mode = current.as_ref().map_or(DIR_MODE, |e| match e.kind {
                    EntryKind::Dir => e.mode,
                    EntryKind::File => DIR_MODE,
                });
                current = Some(Entry {
                    mode,
                    ..dir_entry(name, id)
                });
            }
            edits.push((name, current));
        }
        let dir = match dir {
            Some(dir) => dir,
            None => self.empty(batch)?,
        };
        self.update_btree(dir, &mut edits, batch)
    }

    /// Replace, insert or remove (`None`) entries of one directory's B-tree.
    /// `edits` are sorted by name; their entries are moved into the tree.
    fn update_btree(
        &self,
        root: ObjectId,
        edits: &mut [Edit],
        batch: &mut WriteBatch,
    ) -> io::Result<ObjectId> {
        let mut level = self.update_node(root, edits, batch)?;
        if level.is_empty() {
            return self.empty(batch);
        }
        while level.len() > 1 {
            let mut parents = Vec::new();
            for chunk in even_chunks(level) {
                let first = chunk[0].first.clone();
                let id = self.put_node(Node::Inner { children: chunk }, batch)?;
                parents.push(Child { first, id });
            }
            level = parents;
        }
        // An inner node with one child is that child.
        let mut id = level[0].id;
        while let Node::Inner { children } = &*self.get_node(id)? {
            if children.len() != 1 {
                break;
            }
            id = children[0].id;
        }
        Ok(id)
    }

    /// Update one node; returns the nodes that replace it at its level
    /// (none if it became empty, several if it split).
    fn update_node(
        &self,
        id: ObjectId,
        edits: &mut [Edit],
        batch: &mut WriteBatch,
    ) -> io::Result<Vec<Child>> {
        let node = self.get_node(id)?;
        match &*node {
            Node::Leaf { entries } => {
                let merged = merge_entries(entries, edits);
                let mut out = Vec::new();
                for chunk in even_chunks(merged) {
                    let first = chunk[0].name.clone();
                    let id = self.put_node(Node::Leaf { entries: chunk }, batch)?;
                    out.push(Child { first, id });
                }
                Ok(out)
            }
            Node::Inner { children } => {
                let mut new_children = Vec::with_capacity(children.len() + 1);
                let mut rest = edits;
                for (i, child) in children.iter().enumerate() {
                    // Edits below the next child's first name belong here;
                    // the first child also takes names below its own first.
                    let take = match children.get(i + 1) {
                        Some(next) => rest.partition_point(|(n, _)| *n < next.first.as_str()),
                        None => rest.len(),
                    };
                    let (mine, others) = std::mem::take(&mut rest).split_at_mut(take);
                    rest = others;
                    if mine.is_empty() {
                        new_children.push(child.clone());
                    } else {
                        new_children.extend(self.update_node(child.id, mine, batch)?);
                    }
                }
                let mut out = Vec::new();
                for chunk in even_chunks(new_children) {
                    let first = chunk[0].first.clone();
                    let id = self.put_node(Node::Inner { children: chunk }, batch)?;
                    out.push(Child { first, id });
                }
                Ok(out)
            }
        }
    }

    /// Build a tree from scratch out of `(path, file)` pairs; for tests and
    /// tools.
    pub fn build(
        &self,
        files: &[(String, Change)],
        batch: &mut WriteBatch,
    ) -> io::Result<ObjectId> {
        let empty = self.empty(batch)?;
        self.apply(empty, files, batch)
    }

    /// The paths that differ between two trees, sorted, each with what
    /// happened to it. Subtrees with equal ids are skipped.
    pub fn diff(&self, old: ObjectId, new: ObjectId) -> io::Result<Vec<(String, DiffKind)>> {
        let mut out = Vec::new();
        self.diff_dir("", Some(old), Some(new), &mut out)?;
        Ok(out)
    }

    fn diff_dir(
        &self,
        prefix: &str,
        old: Option<ObjectId>,
        new: Option<ObjectId>,
        out: &mut Vec<(String, DiffKind)>,
    ) -> io::Result<()> {
        if old == new {
            return Ok(());
        }
        let old_entries = match old {
            Some(id) => self.list(id)?,
            None => vec![],
        };
        let new_entries = match new {
            Some(id) => self.list(id)?,
            None => vec![],
        };
        let mut names: BTreeMap<&str, (Option<&Entry>, Option<&Entry>)> = BTreeMap::new();
        for e in &old_entries {
            names.entry(&e.name).or_default().0 = Some(e);
        }
        for e in &new_entries {
            names.entry(&e.name).or_default().1 = Some(e);
        }
        for (name, (before, after)) in names {
            let path = join(prefix, name);
            let sub = |e: Option<&Entry>| e.filter(|e| e.kind == EntryKind::Dir).map(|e| e.id);
            let file = |e: Option<&Entry>| e.filter(|e| e.kind == EntryKind::File).cloned();
            match (file(before), file(after)) {
                (Some(a), Some(b)) if a.id != b.id || a.mode != b.mode => {
                    out.push((path.clone(), DiffKind::Modified))
                }
                (Some(_), None) => out.push((path.clone(), DiffKind::Deleted)),
                (None, Some(_)) => out.push((path.clone(), DiffKind::Added)),
                _ => {}
            }
            let (a, b) = (sub(before), sub(after));
            if a.is_some() || b.is_some() {
                if a == b {
                    continue;
                }
                let empty_before = match a {
                    Some(id) => self.list(id)?.is_empty(),
                    None => false,
                };
                let empty_after = match b {
                    Some(id) => self.list(id)?.is_empty(),
                    None => false,
                };
                // Empty directories are changes of their own; others are
                // implied by what is in them.
                if b.is_some() && a.is_none() && empty_after {
                    out.push((path.clone(), DiffKind::Added));
                } else if a.is_some() && b.is_none() && empty_before {
                    out.push((path.clone(), DiffKind::Deleted));
                }
                self.diff_dir(&path, a, b, out)?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiffKind {
    Added,
    Modified,
    Deleted,
}

impl DiffKind {
    pub fn letter(self) -> char {
        match self {
            DiffKind::Added => 'A',
            DiffKind::Modified => 'M',
            DiffKind::Deleted => 'D',
        }
    }
}

pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

fn dir_entry(name: &str, id: ObjectId) -> Entry {
    Entry {
        name: name.to_owned(),
        kind: EntryKind::Dir,
        id,
        size: 0,
        mode: DIR_MODE,
    }
}

/// Merge sorted edits into sorted entries, moving the edits' entries.
fn merge_entries(entries: &[Entry], edits: &mut [Edit]) -> Vec<Entry> {
    let mut out = Vec::with_capacity(entries.len() + edits.len());
    let mut old = entries.iter().peekable();
    for (name, edit) in edits {
        while let Some(e) = old.next_if(|e| e.name.as_str() < *name) {
            out.push(e.clone());
        }
        old.next_if(|e| e.name == *name);
        if let Some(entry) = edit.take() {
            out.push(entry);
        }
    }
    out.extend(old.cloned());
    out
}

/// Split into the fewest chunks of at most [`NODE_CAPACITY`] items, of
/// nearly equal sizes. Empty input gives no chunks.
fn even_chunks<T>(items: Vec<T>) -> Vec<Vec<T>> {
    if items.is_empty() {
        return vec![];
    }
    let count = items.len().div_ceil(NODE_CAPACITY);
    let base = items.len() / count;
    let extra = items.len() % count;
    let mut chunks = Vec::with_capacity(count);
    let mut items = items.into_iter();
    for i in 0..count {
        let size = base + usize::from(i < extra);
        chunks.push(items.by_ref().take(size).collect());
    }
    chunks
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::storage::Storage;
    use std::sync::Arc;

    /// An empty object store in a directory of its own.
    pub(in crate::repo) fn objects() -> (tempfile::TempDir, Objects) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let objects = Objects::new(Arc::new(Storage::new(dir.path())));
        (dir, objects)
    }

    fn file(n: u8) -> Change {
        Change::File {
            id: ObjectId([n; 32]),
            size: n as u64,
            mode: 0o644,
        }
    }

    #[test]
    fn nodes_are_stored_as_serde_json_writes_them() {
        let names = [
            "",
            "c",
            "0.0.1",
            "zarr.json",
            "a \"quoted\" \\ name",
            "tab\tnew\nline\u{1}",
            "données ☃",
        ];
        let entries: Vec<Entry> = names
            .iter()
            .enumerate()
            .map(|(i, name)| Entry {
                name: name.to_string(),
                kind: if i % 2 == 0 {
                    EntryKind::File
                } else {
                    EntryKind::Dir
                },
                id: ObjectId([i as u8 * 37; 32]),
                size: [0, 1, 4096, u64::MAX][i % 4],
                mode: [0o644, 0o755, 0, u32::MAX][i % 4],
            })
            .collect();
        let children = names
            .iter()
            .enumerate()
            .map(|(i, name)| Child {
                first: name.to_string(),
                id: ObjectId([i as u8; 32]),
            })
            .collect();
        for node in [
            Node::Leaf { entries: vec![] },
            Node::Leaf {
                entries: entries[..1].to_vec(),
            },
            Node::Leaf { entries },
            Node::Inner { children: vec![] },
            Node::Inner { children },
        ] {
            assert_eq!(
                String::from_utf8(node.to_json()).unwrap(),
                serde_json::to_string(&node).unwrap()
            );
        }
    }

    #[test]
    fn one_change_in_a_huge_directory_writes_a_few_small_nodes() {
        let (_dir, objects) = objects();
        let trees = Trees::new(&objects);
        let files: Vec<(String, Change)> =
            (0..20_000).map(|i| (format!("big/{i}"), file(1))).collect();
        let mut batch = WriteBatch::default();
        let root = trees.build(&files, &mut batch).unwrap();
        assert_eq!(
            trees
                .list(trees.lookup(root, "big").unwrap().unwrap().id)
                .unwrap()
                .len(),
            20_000
        );

        let mut batch = WriteBatch::default();
        let root2 = trees
            .apply(root, &[("big/777".into(), file(2))], &mut batch)
            .unwrap();
        assert!(batch.len() <= 4, "wrote {} nodes", batch.len());
        assert_eq!(
            trees.lookup(root2, "big/777").unwrap().unwrap().id,
            ObjectId([2; 32])
        );
        assert_eq!(
            trees.lookup(root, "big/777").unwrap().unwrap().id,
            ObjectId([1; 32])
        );
        assert_eq!(
            trees.diff(root, root2).unwrap(),
            vec![("big/777".to_owned(), DiffKind::Modified)]
        );
    }

    #[test]
    fn deletes_and_replacements_of_directories_apply_in_path_order() {
        let (_dir, objects) = objects();
        let trees = Trees::new(&objects);
        let mut batch = WriteBatch::default();
        let root = trees
            .build(
                &[
                    ("a/x".into(), file(1)),
                    ("a/y".into(), file(1)),
                    ("a.b".into(), file(3)),
                ],
                &mut batch,
            )
            .unwrap();
        let root = trees
            .apply(
                root,
                &[
                    ("a/z".into(), file(2)),
                    ("a".into(), Change::Delete),
                    ("e".into(), Change::Dir { replace: false }),
                ],
                &mut batch,
            )
            .unwrap();
        let top: Vec<String> = trees
            .list(root)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(top, ["a", "a.b", "e"]);
        let a: Vec<String> = trees
            .list(trees.lookup(root, "a").unwrap().unwrap().id)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(a, ["z"], "the delete of a came before the new a/z");
    }
}
