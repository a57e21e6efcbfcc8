//! The model: a directory tree in memory, with files by identity as a
//! local filesystem keeps them, and what Linux answers for each
//! operation on it.

use std::collections::{BTreeMap, BTreeSet};

use super::ops::{Bytes, HANDLES, Op};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File(Bytes),
    Dir,
}

/// A tree as a program sees it: every file (with its bytes) and
/// directory by path, the root implied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree(pub BTreeMap<String, Node>);

impl Tree {
    /// This tree and `other`, whose paths are not this one's.
    pub fn joined(&self, other: &Tree) -> Tree {
        let mut joined = self.clone();
        joined.0.extend(other.0.clone());
        joined
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    /// A file by its identity (an inode).
    File(u64),
    Dir,
}

/// The model: paths naming files and directories, and files by identity,
/// as on a local filesystem: a file keeps its identity when renamed or
/// truncated, and a file held open keeps its bytes after it is unlinked
/// or replaced.
///
/// Committed files are objects, which never change (zarrfs(5)): writing
/// one gives its path a copy, so a file open for reading keeps the
/// committed bytes. So are sealed files, which a mount that seals makes
/// of closed files at times of its own: a reader of a closed file may
/// have opened it sealed, and then keeps its bytes too. A file open for
/// writing at a commit goes on as a staged file of the next session.
/// Without commits (a plain directory) nothing is frozen.
#[derive(Clone, Debug, Default)]
pub struct Model {
    entries: BTreeMap<String, Entry>,
    contents: BTreeMap<u64, Bytes>,
    files_made: u64,
    handles: [Option<Handle>; HANDLES],
    /// The files that are committed objects.
    frozen: BTreeSet<u64>,
    /// Files open for writing but at no path when a commit landed: not
    /// carried on, so no longer the session's.
    left_behind: BTreeSet<u64>,
    /// The mount seals closed files (see [`Handle::Reader`]).
    pub sealing: bool,
}

/// A file held open in a slot.
#[derive(Clone, Debug)]
enum Handle {
    /// Open for reading and writing: its writes go to the file.
    Writer(u64),
    /// Open for reading only: the files it may be reading, until a read
    /// tells which: the file it opened (as it is now), and on a mount that
    /// seals, an object with the bytes it had when it was opened (had it
    /// been sealed by then, the reader keeps them).
    Reader(Vec<u64>),
}

fn is_below(path: &str, dir: &str) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

fn write_at(file: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    if bytes.is_empty() {
        // Writing nothing does not extend a file, whatever the offset.
        return;
    }
    let end = offset as usize + bytes.len();
    if file.len() < end {
        file.resize(end, 0);
    }
    file[offset as usize..end].copy_from_slice(bytes);
}

impl Model {
    /// The model of a committed tree, no file open.
    pub fn from_tree(tree: &Tree) -> Model {
        let mut model = Model::default();
        for (path, node) in &tree.0 {
            let entry = match node {
                Node::Dir => Entry::Dir,
                Node::File(bytes) => Entry::File(model.new_file(bytes.clone())),
            };
            model.entries.insert(path.clone(), entry);
        }
        model.new_session();
        model
    }

    /// The committed tree again (a discard), no file open.
    pub fn discard(&mut self, committed: &Tree) {
        *self = Model {
            sealing: self.sealing,
            ..Model::from_tree(committed)
        };
    }

    /// What a read through `slot` may return: one thing, except for a
    /// reader that may hold one of several files (see [`Handle::Reader`]).
    pub fn possible_reads(&self, slot: usize) -> Vec<Bytes> {
        let ids = match &self.handles[slot] {
            None => return Vec::new(),
            Some(Handle::Writer(id)) => std::slice::from_ref(id),
            Some(Handle::Reader(ids)) => ids.as_slice(),
        };
        ids.iter().map(|id| self.contents[id].clone()).collect()
    }

    /// The reader in `slot` read `bytes`: keep the files it may hold that
    /// have them; false if none has.
    pub fn settle_read(&mut self, slot: usize, bytes: &Bytes) -> bool {
        let Some(Handle::Reader(ids)) = &self.handles[slot] else {
            return false;
        };
        let matching: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| self.contents[id] == *bytes)
            .collect();
        if matching.is_empty() {
            return false;
        }
        self.handles[slot] = Some(Handle::Reader(matching));
        true
    }

    /// How many of the session's files are open for writing: not those
    /// removed before a commit, which the commit left behind.
    pub fn open_for_writing(&self) -> usize {
        self.writing().difference(&self.left_behind).count()
    }

    /// The files open for writing.
    fn writing(&self) -> BTreeSet<u64> {
        self.handles
            .iter()
            .filter_map(|h| match h {
                Some(Handle::Writer(id)) => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// Close every file held open.
    pub fn close_handles(&mut self) {
        self.handles = Default::default();
    }

    /// The files the tree names.
    fn named(&self) -> BTreeSet<u64> {
        self.entries
            .values()
            .filter_map(|e| match e {
                Entry::File(id) => Some(*id),
                Entry::Dir => None,
            })
            .collect()
    }

    /// A new session at the tip: every file the tree names is an object.
    pub fn new_session(&mut self) {
        self.frozen.extend(self.named());
    }

    /// A commit landed: the files it took are objects now, except those
    /// open for writing, which go on as staged files (see [`Model`]).
    pub fn committed(&mut self) {
        let named = self.named();
        let writing = self.writing();
        self.left_behind.extend(writing.difference(&named));
        self.frozen.extend(named.difference(&writing));
    }

    /// An object holding file `id`'s bytes as they are now, at no path:
    /// what a reader of `id` keeps if `id` was an object.
    fn object_of(&mut self, id: u64) -> u64 {
        let object = self.new_file(self.contents[&id].clone());
        self.frozen.insert(object);
        object
    }

    /// Before file `id` is written: a committed file's path (and the
    /// handles writing it) get a copy, which is what is written; readers
    /// keep the object.
    fn thaw(&mut self, id: u64) -> u64 {
        if !self.frozen.contains(&id) {
            return id;
        }
        let copy = self.new_file(self.contents[&id].clone());
        for entry in self.entries.values_mut() {
            if *entry == Entry::File(id) {
                *entry = Entry::File(copy);
            }
        }
        for handle in self.handles.iter_mut() {
            if let Some(Handle::Writer(writes)) = handle
                && *writes == id
            {
                *writes = copy;
            }
        }
        copy
    }

    /// A file of a new identity holding `bytes`, not yet at any path.
    fn new_file(&mut self, bytes: Bytes) -> u64 {
        self.files_made += 1;
        self.contents.insert(self.files_made, bytes);
        self.files_made
    }

    pub fn tree(&self) -> Tree {
        Tree(
            self.entries
                .iter()
                .map(|(path, entry)| {
                    let node = match entry {
                        Entry::File(id) => Node::File(self.contents[id].clone()),
                        Entry::Dir => Node::Dir,
                    };
                    (path.clone(), node)
                })
                .collect(),
        )
    }

    /// What resolving `path`'s parent directories gives: ENOENT for a
    /// missing one, ENOTDIR for a file on the way.
    fn check_parents(&self, path: &str) -> Result<(), i32> {
        let mut at = 0;
        while let Some(slash) = path[at..].find('/') {
            let dir = &path[..at + slash];
            match self.entries.get(dir) {
                None => return Err(libc::ENOENT),
                Some(Entry::File(_)) => return Err(libc::ENOTDIR),
                Some(Entry::Dir) => {}
            }
            at += slash + 1;
        }
        Ok(())
    }

    /// The existing entry at `path`, its parents checked.
    fn existing(&self, path: &str) -> Result<Entry, i32> {
        self.check_parents(path)?;
        self.entries.get(path).copied().ok_or(libc::ENOENT)
    }

    fn has_children(&self, dir: &str) -> bool {
        self.entries.keys().any(|p| is_below(p, dir))
    }

    /// The identity of the existing file at `path`.
    fn file(&self, path: &str) -> Result<u64, i32> {
        match self.existing(path)? {
            Entry::Dir => Err(libc::EISDIR),
            Entry::File(id) => Ok(id),
        }
    }

    /// The file at `path`, to be written (a copy if it was committed).
    fn writable(&mut self, path: &str) -> Result<u64, i32> {
        let id = self.file(path)?;
        Ok(self.thaw(id))
    }

    /// The bytes of the file at `path`, to be written.
    fn bytes(&mut self, path: &str) -> Result<&mut Bytes, i32> {
        let id = self.writable(path)?;
        Ok(self.contents.get_mut(&id).unwrap())
    }

    /// Apply `op` as Linux does on a local filesystem: the bytes a read
    /// returns, or the errno.
    pub fn apply(&mut self, op: &Op) -> Result<Option<Bytes>, i32> {
        match op {
            Op::Write(path, bytes) => {
                self.check_parents(path)?;
                match self.entries.get(path) {
                    Some(Entry::Dir) => return Err(libc::EISDIR),
                    Some(Entry::File(_)) => *self.bytes(path)? = bytes.clone(),
                    None => {
                        let id = self.new_file(bytes.clone());
                        self.entries.insert(path.clone(), Entry::File(id));
                    }
                }
            }
            Op::Append(path, bytes) => self.bytes(path)?.extend_from_slice(bytes),
            Op::WriteAt(path, offset, bytes) => write_at(self.bytes(path)?, *offset, bytes),
            Op::Truncate(path, len) => self.bytes(path)?.resize(*len as usize, 0),
            Op::Mkdir(path) => {
                self.check_parents(path)?;
                if self.entries.contains_key(path) {
                    return Err(libc::EEXIST);
                }
                self.entries.insert(path.clone(), Entry::Dir);
            }
            Op::Rmdir(path) => match self.existing(path)? {
                Entry::File(_) => return Err(libc::ENOTDIR),
                Entry::Dir if self.has_children(path) => return Err(libc::ENOTEMPTY),
                Entry::Dir => {
                    self.entries.remove(path);
                }
            },
            Op::Unlink(path) => {
                self.file(path)?;
                self.entries.remove(path);
            }
            Op::Rename(from, to) => self.rename(from, to)?,
            Op::Link(from, to) => self.link(from, to)?,
            Op::Open(slot, path) => {
                self.handles[*slot] = None;
                let id = self.writable(path)?;
                self.handles[*slot] = Some(Handle::Writer(id));
            }
            Op::OpenRead(slot, path) => {
                self.handles[*slot] = None;
                let id = self.file(path)?;
                // A closed file (no write handle here) may be sealed by
                // now; a sealed one stays an object while it is open.
                let closed = !self.writing().contains(&id);
                let mut ids = vec![id];
                if self.sealing && closed && !self.frozen.contains(&id) {
                    ids.push(self.object_of(id));
                }
                self.handles[*slot] = Some(Handle::Reader(ids));
            }
            Op::HandleWrite(slot, offset, bytes) => match self.handles[*slot] {
                None => {}
                Some(Handle::Reader(_)) => return Err(libc::EBADF),
                Some(Handle::Writer(id)) => {
                    let id = self.thaw(id);
                    write_at(self.contents.get_mut(&id).unwrap(), *offset, bytes);
                }
            },
            Op::HandleRead(slot) => return Ok(self.possible_reads(*slot).into_iter().next()),
            Op::Close(slot) => self.handles[*slot] = None,
            _ => assert!(op.is_session_action()),
        }
        Ok(None)
    }

    /// A new file at `to` with the bytes of the one at `from`. Linux
    /// resolves the source first, then the target's directory, and
    /// refuses a directory last.
    fn link(&mut self, from: &str, to: &str) -> Result<(), i32> {
        let source = self.existing(from)?;
        self.check_parents(to)?;
        if self.entries.contains_key(to) {
            return Err(libc::EEXIST);
        }
        let Entry::File(id) = source else {
            return Err(libc::EPERM);
        };
        // A committed file's new name is the same object (committed too).
        let copy = self.new_file(self.contents[&id].clone());
        if self.frozen.contains(&id) {
            self.frozen.insert(copy);
        }
        self.entries.insert(to.to_owned(), Entry::File(copy));
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), i32> {
        // Both parents are resolved before either name is looked up.
        self.check_parents(from)?;
        self.check_parents(to)?;
        let source = *self.entries.get(from).ok_or(libc::ENOENT)?;
        if from == to {
            return Ok(());
        }
        if is_below(to, from) {
            return Err(libc::EINVAL);
        }
        if is_below(from, to) {
            // The target is an ancestor of the source: not empty.
            return Err(libc::ENOTEMPTY);
        }
        match (source, self.entries.get(to)) {
            (Entry::File(_), Some(Entry::Dir)) => return Err(libc::EISDIR),
            (Entry::Dir, Some(Entry::File(_))) => return Err(libc::ENOTDIR),
            (Entry::Dir, Some(Entry::Dir)) if self.has_children(to) => {
                return Err(libc::ENOTEMPTY);
            }
            _ => {}
        }
        let moved: Vec<(String, Entry)> = self
            .entries
            .iter()
            .filter(|(p, _)| p.as_str() == from || is_below(p, from))
            .map(|(p, e)| (format!("{to}{}", &p[from.len()..]), *e))
            .collect();
        self.entries.retain(|p, _| p != from && !is_below(p, from));
        self.entries.remove(to);
        self.entries.extend(moved);
        Ok(())
    }
}
