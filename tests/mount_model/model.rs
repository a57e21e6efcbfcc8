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
/// writing at a commit goes on as a staged file of the next session,
/// and so may one whose writer closed just before (the kernel reports
/// closes to the daemon after the fact), so a reader of a file written
/// since the commit before may keep its bytes or not. Without commits
/// (a plain directory) nothing is frozen.
#[derive(Clone, Debug, Default)]
pub struct Model {
    entries: BTreeMap<String, Entry>,
    contents: BTreeMap<u64, Bytes>,
    files_made: u64,
    handles: [Option<Handle>; HANDLES],
    /// The files that are committed objects.
    frozen: BTreeSet<u64>,
    /// Committed files that the commit may have carried on as staged
    /// files instead; written in place, as staged files are.
    maybe_frozen: BTreeSet<u64>,
    /// The files written (or open for writing) since the last commit.
    written: BTreeSet<u64>,
    /// The mount seals closed files (see `Model::may_read_either`).
    pub sealing: bool,
}

/// A file held open in a slot.
#[derive(Clone, Copy, Debug)]
struct Handle {
    id: u64,
    writes: bool,
    /// A reader of a file that may have been an object when it was
    /// opened (sealed, or committed and maybe not carried): the file it
    /// keeps if so (its bytes then), until a read tells which.
    if_object: Option<u64>,
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

    /// Whether the reader in `slot` may read either of two files: the
    /// one it opened, as it is now, or what it held when it was opened,
    /// had that been an object (sealed, or committed and not carried).
    pub fn may_read_either(&self, slot: usize) -> bool {
        self.handles[slot].is_some_and(|h| h.if_object.is_some())
    }

    /// The two things the reader in `slot` may read (see
    /// [`Model::may_read_either`]).
    pub fn read_either(&self, slot: usize) -> (Bytes, Bytes) {
        let h = self.handles[slot].expect("a reader");
        (
            self.contents[&h.id].clone(),
            self.contents[&h.if_object.expect("unsettled")].clone(),
        )
    }

    /// The reader in `slot` read `bytes`: settle which file it holds, if
    /// that tells; false if it is neither.
    pub fn settle_read(&mut self, slot: usize, bytes: &Bytes) -> bool {
        let (live, object) = self.read_either(slot);
        let handle = self.handles[slot].as_mut().unwrap();
        match (*bytes == live, *bytes == object) {
            (true, true) => {}
            (true, false) => handle.if_object = None,
            (false, true) => {
                handle.id = handle.if_object.take().unwrap();
            }
            (false, false) => return false,
        }
        true
    }

    /// Close every file held open.
    pub fn close_handles(&mut self) {
        self.handles = Default::default();
    }

    /// A new session at the tip: every file the tree names is an object.
    pub fn new_session(&mut self) {
        for entry in self.entries.values() {
            if let Entry::File(id) = entry {
                self.frozen.insert(*id);
            }
        }
        self.maybe_frozen.clear();
        self.written.clear();
    }

    /// The session resumed in a new daemon, which no close of the old
    /// one's files will reach.
    pub fn remounted(&mut self) {
        self.written.clear();
    }

    /// A commit landed: the files it took are objects now, except those
    /// open for writing, which go on as staged files (see [`Model`]), and
    /// maybe those written since the last commit.
    pub fn committed(&mut self) {
        let writing: BTreeSet<u64> = self
            .handles
            .iter()
            .flatten()
            .filter(|h| h.writes)
            .map(|h| h.id)
            .collect();
        for entry in self.entries.values() {
            let Entry::File(id) = *entry else { continue };
            if writing.contains(&id) {
                self.maybe_frozen.remove(&id);
            } else if self.written.contains(&id) {
                self.maybe_frozen.insert(id);
            } else {
                self.maybe_frozen.remove(&id);
                self.frozen.insert(id);
            }
        }
        self.written.clear();
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
        for handle in self.handles.iter_mut().flatten() {
            if handle.writes && handle.id == id {
                handle.id = copy;
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
        let id = self.thaw(id);
        self.written.insert(id);
        Ok(id)
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
                        self.written.insert(id);
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
                self.handles[*slot] = Some(Handle {
                    id,
                    writes: true,
                    if_object: None,
                });
            }
            Op::OpenRead(slot, path) => {
                self.handles[*slot] = None;
                let id = self.file(path)?;
                // A closed file (no write handle here) may be sealed by
                // now; a sealed one stays an object while it is open.
                let closed = !self
                    .handles
                    .iter()
                    .flatten()
                    .any(|h| h.writes && h.id == id);
                let maybe_object = self.sealing || self.maybe_frozen.contains(&id);
                let if_object = (maybe_object && closed && !self.frozen.contains(&id)).then(|| {
                    let object = self.new_file(self.contents[&id].clone());
                    self.frozen.insert(object);
                    object
                });
                self.handles[*slot] = Some(Handle {
                    id,
                    writes: false,
                    if_object,
                });
            }
            Op::HandleWrite(slot, offset, bytes) => match self.handles[*slot] {
                None => {}
                Some(Handle { writes: false, .. }) => return Err(libc::EBADF),
                Some(Handle { id, .. }) => {
                    let id = self.thaw(id);
                    self.written.insert(id);
                    write_at(self.contents.get_mut(&id).unwrap(), *offset, bytes);
                }
            },
            Op::HandleRead(slot) => {
                return Ok(self.handles[*slot].map(|h| self.contents[&h.id].clone()));
            }
            Op::Close(slot) => {
                // Its close may reach the daemon after the next commit.
                if let Some(Handle {
                    id, writes: true, ..
                }) = self.handles[*slot].take()
                {
                    self.written.insert(id);
                }
            }
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
        } else if self.maybe_frozen.contains(&id) {
            self.maybe_frozen.insert(copy);
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
