//! The mount checked against a simple model of a directory tree, as
//! mountpoint-s3 checks its filesystem: random sequences of file
//! operations (writes, appends, writes in place, truncates, mkdir, rmdir,
//! unlink, rename, link (a copy on a mount, so in the model), files held
//! open across steps) go to a real mount and to an in-memory model, mixed
//! with commits, discards, remounts, kills of the daemon after an fsync,
//! checkouts of earlier commits, reads of the branch through
//! `.zarrfs/branches/main/`, and commits of another mount of the branch
//! (which this one's commits rebase over). After each step the mount must
//! answer as the model does (the same success or the same errno, the
//! errno Linux gives on a local filesystem) and show the same tree, file
//! for file and byte for byte; at the end, what was committed
//! must be what a fresh session of the branch shows.

mod mount_util;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use mount_util::{Mount, Scratch};
use proptest::prelude::*;

/// Names at each level: paths are 1 to 3 of these joined by `/`, few
/// enough that operations keep meeting each other's files and
/// directories.
const NAMES: [&str; 3] = ["a", "b", "c"];

/// The paths of one depth: `a`, `a/b`, `a/b/c`...
fn paths_of_depth(depth: usize) -> Vec<String> {
    (1..depth).fold(NAMES.map(String::from).to_vec(), |paths, _| {
        paths
            .iter()
            .flat_map(|p| NAMES.map(|n| format!("{p}/{n}")))
            .collect()
    })
}

/// A path, shallow ones more often than their numbers would have it, so
/// that directories get made and filled rather than missed.
fn path() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        3 => prop::sample::select(paths_of_depth(1)),
        3 => prop::sample::select(paths_of_depth(2)),
        1 => prop::sample::select(paths_of_depth(3)),
    ]
}

/// A file's bytes, shown short in failures (some are 300 KiB).
#[derive(Clone, Default, PartialEq, Eq)]
struct Bytes(Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.len() <= 16 {
            write!(f, "{:?}", self.0)
        } else {
            write!(f, "<{} bytes: {:?}...>", self.0.len(), &self.0[..8])
        }
    }
}

impl std::ops::Deref for Bytes {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::DerefMut for Bytes {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    File(Bytes),
    Dir,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    /// open(O_CREAT | O_TRUNC) and write.
    Write(String, Bytes),
    /// open(O_APPEND), without O_CREAT, and write.
    Append(String, Bytes),
    /// pwrite at an offset, possibly beyond the end.
    WriteAt(String, u64, Bytes),
    Truncate(String, u64),
    Mkdir(String),
    Rmdir(String),
    Unlink(String),
    Rename(String, String),
    /// link(2): on a mount the new name is a copy (zarrfs(5)), which is
    /// what the model does.
    Link(String, String),
    /// Open an existing file for reading and writing into a slot (closing
    /// what the slot held), and keep it open across the steps that follow.
    Open(usize, String),
    /// pwrite through a slot's file, if it holds one.
    HandleWrite(usize, u64, Bytes),
    /// Read a slot's file whole, if it holds one.
    HandleRead(usize),
    Close(usize),
    Commit,
    Discard,
    Remount,
    /// fsync the mount's root (which makes the session's journal
    /// durable), then kill the daemon with SIGKILL and mount again: a
    /// session with changes resumes with all of them, one without starts
    /// afresh at the tip.
    Crash,
    /// Long enough for closed files to be sealed (stored as objects)
    /// before the next step, on a mount with a short seal delay.
    Pause,
    /// Check out the commit made this many commits ago (if the session
    /// has no changes), read it, and go back to the tip.
    Peek(usize),
    /// Read the branch's newest commit through `.zarrfs/branches/main/`:
    /// what this mount and the other one committed last.
    ReadBranch,
    /// Another mount of the branch writes `z/<name>` and commits: this
    /// mount's commits rebase over it (no path of theirs is under `z`),
    /// and its view shows it from its next commit or checkout on.
    OtherCommit(&'static str, Bytes),
}

impl Op {
    /// Acts on the session or the repository rather than on files.
    fn is_session_action(&self) -> bool {
        matches!(
            self,
            Op::Commit
                | Op::Discard
                | Op::Remount
                | Op::Crash
                | Op::Pause
                | Op::Peek(_)
                | Op::ReadBranch
                | Op::OtherCommit(..)
        )
    }
}

/// Bytes for a write: mostly a few, now and then more than the 256 KiB
/// from which the daemon treats a file as large (it seals those later).
fn bytes() -> impl Strategy<Value = Bytes> + Clone {
    prop_oneof![
        12 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes),
        1 => (any::<u8>(), 256usize..320).prop_map(|(seed, kib)| {
            Bytes((0..kib << 10).map(|i| (i / 4093) as u8 ^ seed).collect())
        }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let path = path();
    let bytes = bytes();
    // The other mount's files: short, so that it writes the same bytes
    // again now and then (a commit with nothing to commit).
    let theirs = prop::collection::vec(any::<u8>(), 0..4).prop_map(Bytes);
    prop_oneof![
        6 => (path.clone(), bytes.clone()).prop_map(|(p, b)| Op::Write(p, b)),
        2 => (path.clone(), bytes.clone()).prop_map(|(p, b)| Op::Append(p, b)),
        2 => (path.clone(), 0..80u64, bytes.clone()).prop_map(|(p, o, b)| Op::WriteAt(p, o, b)),
        2 => (path.clone(), 0..80u64).prop_map(|(p, n)| Op::Truncate(p, n)),
        4 => path.clone().prop_map(Op::Mkdir),
        2 => path.clone().prop_map(Op::Rmdir),
        3 => path.clone().prop_map(Op::Unlink),
        4 => (path.clone(), path.clone()).prop_map(|(a, b)| Op::Rename(a, b)),
        2 => (path.clone(), path.clone()).prop_map(|(a, b)| Op::Link(a, b)),
        2 => (0..HANDLES, path).prop_map(|(h, p)| Op::Open(h, p)),
        2 => (0..HANDLES, 0..80u64, bytes.clone()).prop_map(|(h, o, b)| Op::HandleWrite(h, o, b)),
        1 => (0..HANDLES).prop_map(Op::HandleRead),
        1 => (0..HANDLES).prop_map(Op::Close),
        2 => Just(Op::Commit),
        1 => Just(Op::Discard),
        1 => Just(Op::Remount),
        1 => Just(Op::Crash),
        1 => Just(Op::Pause),
        1 => (0..4usize).prop_map(Op::Peek),
        1 => Just(Op::ReadBranch),
        1 => (prop::sample::select(&["p", "q"][..]), theirs)
            .prop_map(|(name, b)| Op::OtherCommit(name, b)),
    ]
}

/// A tree as a program sees it: every file (with its bytes) and
/// directory by path, the root implied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Tree(BTreeMap<String, Node>);

impl Tree {
    /// This tree and `other`, whose paths are not this one's.
    fn joined(&self, other: &Tree) -> Tree {
        let mut joined = self.clone();
        joined.0.extend(other.0.clone());
        joined
    }
}

/// How many files a case may hold open at once.
const HANDLES: usize = 2;

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
#[derive(Clone, Debug, Default)]
struct Model {
    entries: BTreeMap<String, Entry>,
    contents: BTreeMap<u64, Bytes>,
    files_made: u64,
    handles: [Option<u64>; HANDLES],
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
    fn from_tree(tree: &Tree) -> Model {
        let mut model = Model::default();
        for (path, node) in &tree.0 {
            let entry = match node {
                Node::Dir => Entry::Dir,
                Node::File(bytes) => model.new_file(bytes.clone()),
            };
            model.entries.insert(path.clone(), entry);
        }
        model
    }

    /// A file of a new identity holding `bytes`, not yet at any path.
    fn new_file(&mut self, bytes: Bytes) -> Entry {
        self.files_made += 1;
        self.contents.insert(self.files_made, bytes);
        Entry::File(self.files_made)
    }

    fn tree(&self) -> Tree {
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

    fn bytes(&mut self, path: &str) -> Result<&mut Bytes, i32> {
        let id = self.file(path)?;
        Ok(self.contents.get_mut(&id).unwrap())
    }

    /// Apply `op` as Linux does on a local filesystem: the bytes a read
    /// returns, or the errno.
    fn apply(&mut self, op: &Op) -> Result<Option<Bytes>, i32> {
        match op {
            Op::Write(path, bytes) => {
                self.check_parents(path)?;
                match self.entries.get(path) {
                    Some(Entry::Dir) => return Err(libc::EISDIR),
                    Some(Entry::File(id)) => *self.contents.get_mut(id).unwrap() = bytes.clone(),
                    None => {
                        let file = self.new_file(bytes.clone());
                        self.entries.insert(path.clone(), file);
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
                self.handles[*slot] = Some(self.file(path)?);
            }
            Op::HandleWrite(slot, offset, bytes) => {
                if let Some(id) = self.handles[*slot] {
                    write_at(self.contents.get_mut(&id).unwrap(), *offset, bytes);
                }
            }
            Op::HandleRead(slot) => {
                return Ok(self.handles[*slot].map(|id| self.contents[&id].clone()));
            }
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
        let copy = self.new_file(self.contents[&id].clone());
        self.entries.insert(to.to_owned(), copy);
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

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error()
        .unwrap_or_else(|| panic!("an error without an errno: {e}"))
}

/// The same operations on real files: a mount, or a plain directory for
/// the model's own test.
struct Files {
    root: PathBuf,
    handles: [Option<fs::File>; HANDLES],
    /// A plain directory's hard links share their file: the new name is
    /// then made a copy, as a mount's is.
    copy_links: bool,
}

impl Files {
    fn mount(root: &Path) -> Files {
        Files {
            root: root.to_owned(),
            handles: Default::default(),
            copy_links: false,
        }
    }

    fn plain(root: &Path) -> Files {
        Files {
            copy_links: true,
            ..Files::mount(root)
        }
    }

    /// Apply `op`: the bytes a read returned, or the errno it failed with.
    fn apply(&mut self, op: &Op) -> Result<Option<Bytes>, i32> {
        let at = |p: &str| self.root.join(p);
        match op {
            Op::Write(path, bytes) => fs::write(at(path), bytes).map_err(errno)?,
            Op::Append(path, bytes) => OpenOptions::new()
                .append(true)
                .open(at(path))
                .and_then(|mut f| f.write_all(bytes))
                .map_err(errno)?,
            Op::WriteAt(path, offset, bytes) => OpenOptions::new()
                .write(true)
                .open(at(path))
                .and_then(|f| f.write_all_at(bytes, *offset))
                .map_err(errno)?,
            Op::Truncate(path, len) => {
                let c = CString::new(at(path).into_os_string().into_encoded_bytes()).unwrap();
                // SAFETY: a valid C string.
                if unsafe { libc::truncate(c.as_ptr(), *len as libc::off_t) } != 0 {
                    return Err(errno(std::io::Error::last_os_error()));
                }
            }
            Op::Mkdir(path) => fs::create_dir(at(path)).map_err(errno)?,
            Op::Rmdir(path) => fs::remove_dir(at(path)).map_err(errno)?,
            Op::Unlink(path) => fs::remove_file(at(path)).map_err(errno)?,
            Op::Rename(from, to) => fs::rename(at(from), at(to)).map_err(errno)?,
            Op::Link(from, to) => {
                fs::hard_link(at(from), at(to)).map_err(errno)?;
                if self.copy_links {
                    let bytes = fs::read(at(to)).unwrap();
                    fs::remove_file(at(to)).unwrap();
                    fs::write(at(to), bytes).unwrap();
                }
            }
            Op::Open(slot, path) => {
                self.handles[*slot] = None;
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(at(path))
                    .map_err(errno)?;
                self.handles[*slot] = Some(file);
            }
            Op::HandleWrite(slot, offset, bytes) => {
                if let Some(file) = &self.handles[*slot] {
                    file.write_all_at(bytes, *offset).map_err(errno)?;
                }
            }
            Op::HandleRead(slot) => {
                let Some(file) = &self.handles[*slot] else {
                    return Ok(None);
                };
                let mut bytes = Vec::new();
                let mut buf = [0; 256];
                loop {
                    match file.read_at(&mut buf, bytes.len() as u64).map_err(errno)? {
                        0 => return Ok(Some(Bytes(bytes))),
                        n => bytes.extend_from_slice(&buf[..n]),
                    }
                }
            }
            Op::Close(slot) => self.handles[*slot] = None,
            _ => unreachable!("{op:?} is not a file operation"),
        }
        Ok(None)
    }
}

/// The tree the mount shows (the control directory is not listed).
fn read_tree(root: &Path) -> Tree {
    fn walk(dir: &Path, prefix: &str, tree: &mut Tree) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                tree.0.insert(path.clone(), Node::Dir);
                walk(&entry.path(), &path, tree);
            } else {
                let bytes = fs::read(entry.path()).unwrap();
                assert_eq!(
                    entry.metadata().unwrap().len(),
                    bytes.len() as u64,
                    "{path}: stat's size is not what a read returns"
                );
                tree.0.insert(path, Node::File(Bytes(bytes)));
            }
        }
    }
    let mut tree = Tree::default();
    walk(root, "", &mut tree);
    tree
}

/// Pause's length: many times the seal delay of the mounts that seal.
const PAUSE: std::time::Duration = std::time::Duration::from_millis(30);

/// A control file's content.
fn control_read(mount: &Mount, file: &str) -> String {
    mount.read(&format!(".zarrfs/{file}")).trim().to_owned()
}

/// Write a control file's line; whether the write succeeded.
fn control(mount: &Mount, file: &str, line: &str) -> Result<(), std::io::Error> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(mount.path.join(".zarrfs").join(file))?;
    f.write_all(line.as_bytes())
}

/// Whether the session has changes as zarrfs counts them (what status
/// lists, what decides whether a commit has anything to commit and
/// whether the next mount resumes the session): exactly when the tree
/// differs from the committed one, however it came to be as it is.
fn session_changes(
    m: &Mount,
    step: usize,
    tree: &Tree,
    committed: &Tree,
) -> Result<bool, TestCaseError> {
    let listed = m.changed();
    prop_assert_eq!(
        !listed.is_empty(),
        tree != committed,
        "step {}: status lists {:?}, the tree {:?}, the committed {:?}",
        step,
        listed,
        tree,
        committed
    );
    Ok(!listed.is_empty())
}

fn run(seal_delay: &str, ops: &[Op]) -> Result<(), TestCaseError> {
    let scratch = Scratch::new();
    let mountpoint = scratch.mountpoint("m");
    let args = ["--seal-delay", seal_delay];
    let mut mount = Some(Mount::new(&scratch.repo, &mountpoint, &args));
    let mut files = Files::mount(&mountpoint);
    let mut model = Model::default();
    let mut committed = Tree::default();
    // Under `z`: what the other mount committed, and what this mount's
    // view shows of it (as of its session's base).
    let mut other: Option<Mount> = None;
    let mut theirs = Tree::default();
    let mut seen = Tree::default();
    // Each commit with its tree, the first the one `init` made.
    let mut history = vec![(
        control_read(mount.as_ref().unwrap(), "checkout"),
        Tree::default(),
    )];
    for (step, op) in ops.iter().enumerate() {
        let m = mount.as_ref().unwrap();
        if matches!(op, Op::Discard | Op::Remount | Op::Crash | Op::Peek(_)) {
            // What a file open across these would see is no local
            // filesystem's business: close them first.
            files.handles = Default::default();
            model.handles = Default::default();
        }
        match op {
            Op::Commit => {
                let changes = session_changes(m, step, &model.tree(), &committed)?;
                let outcome = control(m, "commit", &format!("step {step}\n"));
                // Nothing to commit fails the write; anything else lands.
                prop_assert_eq!(
                    outcome.is_ok(),
                    changes,
                    "step {}: commit {:?} with changes listed: {}",
                    step,
                    outcome,
                    changes
                );
                if outcome.is_ok() {
                    committed = model.tree();
                    seen = theirs.clone();
                    history.push((control_read(m, "commit"), committed.joined(&seen)));
                }
            }
            Op::Discard => {
                control(m, "discard", "yes\n")
                    .map_err(|e| TestCaseError::fail(format!("step {step}: discard: {e}")))?;
                model = Model::from_tree(&committed);
            }
            Op::Crash | Op::Remount => {
                let changes = session_changes(m, step, &model.tree(), &committed)?;
                if *op == Op::Crash {
                    fs::File::open(&mountpoint)
                        .and_then(|root| root.sync_all())
                        .map_err(|e| TestCaseError::fail(format!("step {step}: fsync: {e}")))?;
                    mount.take().unwrap().crash();
                } else {
                    mount.take().unwrap().unmount();
                }
                mount = Some(Mount::new(&scratch.repo, &mountpoint, &args));
                // A session without changes is not resumed: the new one
                // starts at the tip of the branch.
                if !changes {
                    seen = theirs.clone();
                }
            }
            Op::Pause => std::thread::sleep(PAUSE),
            Op::Peek(back) => {
                let (id, tree) = &history[history.len().saturating_sub(1 + back)];
                let outcome = control(m, "checkout", &format!("{id}\n"));
                // Refused while the session has changes (EBUSY).
                if session_changes(m, step, &model.tree(), &committed)? {
                    prop_assert_eq!(
                        outcome.map_err(errno),
                        Err(libc::EBUSY),
                        "step {}: checkout with changes",
                        step
                    );
                } else {
                    outcome.map_err(|e| {
                        TestCaseError::fail(format!("step {step}: checkout {id}: {e}"))
                    })?;
                    prop_assert_eq!(
                        &read_tree(&m.path),
                        tree,
                        "step {}: the tree of {}",
                        step,
                        id
                    );
                    control(m, "checkout", "main\n").map_err(|e| {
                        TestCaseError::fail(format!("step {step}: back to the tip: {e}"))
                    })?;
                    seen = theirs.clone();
                }
            }
            Op::ReadBranch => {
                // Ours rebase over theirs, which are all under `z`.
                prop_assert_eq!(
                    &read_tree(&m.path.join(".zarrfs/branches/main")),
                    &committed.joined(&theirs),
                    "step {}: the branch's newest commit",
                    step
                );
            }
            Op::OtherCommit(name, bytes) => {
                let b = other.get_or_insert_with(|| scratch.mount("other", &[]));
                let path = format!("z/{name}");
                fs::create_dir_all(b.path.join("z")).unwrap();
                fs::write(b.path.join(&path), bytes).unwrap();
                let outcome = control(b, "commit", &format!("theirs, step {step}\n"));
                let file = Node::File(bytes.clone());
                prop_assert_eq!(
                    outcome.is_ok(),
                    theirs.0.get(&path) != Some(&file),
                    "step {}: the other mount's commit {:?}",
                    step,
                    outcome
                );
                theirs.0.insert("z".to_owned(), Node::Dir);
                theirs.0.insert(path, file);
            }
            _ => {
                let expected = model.apply(op);
                let got = files.apply(op);
                prop_assert_eq!(got, expected, "step {}: {:?}", step, op);
            }
        }
        let shown = read_tree(&mountpoint);
        prop_assert_eq!(
            &shown,
            &model.tree().joined(&seen),
            "step {}: the tree after {:?}",
            step,
            op
        );
    }
    // What was committed is what a fresh session of the branch shows.
    files.handles = Default::default();
    let m = mount.take().unwrap();
    let tree = model.tree();
    if session_changes(&m, ops.len(), &tree, &committed)? {
        control(&m, "commit", "last\n")
            .map_err(|e| TestCaseError::fail(format!("the last commit: {e}")))?;
    }
    m.unmount();
    let fresh = scratch.mount("fresh", &["--new-session"]);
    prop_assert_eq!(
        &read_tree(&fresh.path),
        &tree.joined(&theirs),
        "a new session's tree"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Each case mounts for real (and remounts): 32 cases of up to 40
        // steps take about 20-25 s. PROPTEST_CASES=N hunts longer.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(32),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_mount_behaves_like_a_local_directory(
        // Files are stored as objects ahead of the commit after the seal
        // delay: at once, never, or (with pauses) between steps.
        seal_delay in prop::sample::select(vec!["off", "0ms", "1ms"]),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        run(seal_delay, &ops)?;
    }
}

proptest! {
    // The model's rules checked against the machine's own filesystem
    // (a temporary directory), so that the errno it predicts are Linux's.
    #[test]
    fn the_model_follows_linux(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Files::plain(dir.path());
        let mut model = Model::default();
        for op in ops.iter().filter(|op| {
            !op.is_session_action()
        }) {
            let expected = model.apply(op);
            prop_assert_eq!(files.apply(op), expected, "{:?}", op);
            prop_assert_eq!(&read_tree(dir.path()), &model.tree(), "after {:?}", op);
        }
    }
}
