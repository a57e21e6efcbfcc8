//! The operations a case applies, and how they are drawn: paths few
//! enough to meet each other, file bytes (now and then large), and the
//! file, handle and session steps.

use proptest::prelude::*;

/// Names at each level: paths are 1 to 3 of these joined by `/`, few
/// enough that operations keep meeting each other's files and
/// directories.
pub const NAMES: [&str; 3] = ["a", "b", "c"];

/// The paths of one depth: `a`, `a/b`, `a/b/c`...
pub fn paths_of_depth(depth: usize) -> Vec<String> {
    (1..depth).fold(NAMES.map(String::from).to_vec(), |paths, _| {
        paths
            .iter()
            .flat_map(|p| NAMES.map(|n| format!("{p}/{n}")))
            .collect()
    })
}

/// A path, shallow ones more often than their numbers would have it, so
/// that directories get made and filled rather than missed.
pub fn path() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        3 => prop::sample::select(paths_of_depth(1)),
        3 => prop::sample::select(paths_of_depth(2)),
        1 => prop::sample::select(paths_of_depth(3)),
    ]
}

/// A file's bytes, shown short in failures (some are 300 KiB).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

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
pub enum Op {
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
    /// Open an existing file for reading only into a slot: a reader of a
    /// committed file keeps its bytes when the path is written (zarrfs(5),
    /// File data through the kernel). A directory counts as EISDIR, which
    /// reading it answers.
    OpenRead(usize, String),
    /// pwrite through a slot's file, if it holds one (EBADF for one open
    /// for reading).
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
    /// `mkdir .zarrfs/branches/NAME`: a branch at the session's base
    /// (EEXIST if it exists).
    MakeBranch(&'static str),
    /// Read a branch's newest commit through `.zarrfs/branches/NAME/`:
    /// for `main` what this mount and the other one committed last, for
    /// another the base it was made at (ENOENT before it is made).
    ReadBranch(&'static str),
    /// Another mount of the branch writes `z/<name>` and commits: this
    /// mount's commits rebase over it (no path of theirs is under `z`),
    /// and its view shows it from its next commit or checkout on.
    OtherCommit(&'static str, Bytes),
}

impl Op {
    /// Acts on the session or the repository rather than on files.
    pub fn is_session_action(&self) -> bool {
        matches!(
            self,
            Op::Commit
                | Op::Discard
                | Op::Remount
                | Op::Crash
                | Op::Pause
                | Op::Peek(_)
                | Op::MakeBranch(_)
                | Op::ReadBranch(_)
                | Op::OtherCommit(..)
        )
    }
}

/// Bytes for a write: mostly a few, now and then more than the 256 KiB
/// from which the daemon treats a file as large (it seals those later).
pub fn bytes() -> impl Strategy<Value = Bytes> + Clone {
    prop_oneof![
        12 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes),
        1 => (any::<u8>(), 256usize..320).prop_map(|(seed, kib)| {
            Bytes((0..kib << 10).map(|i| (i / 4093) as u8 ^ seed).collect())
        }),
    ]
}

/// The branches a case reads: `main`, and two it may make.
const BRANCHES: [&str; 3] = ["main", "x", "y"];

fn branch() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&BRANCHES[..])
}

/// The other mount commits one of its files: short, so that it writes
/// the same bytes again now and then (a commit with nothing to commit).
fn other_commit() -> impl Strategy<Value = Op> {
    let theirs = prop::collection::vec(any::<u8>(), 0..4).prop_map(Bytes);
    (prop::sample::select(&["p", "q"][..]), theirs).prop_map(|(name, b)| Op::OtherCommit(name, b))
}

pub fn op() -> impl Strategy<Value = Op> {
    let path = path();
    let bytes = bytes();
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
        2 => (0..HANDLES, path.clone()).prop_map(|(h, p)| Op::OpenRead(h, p)),
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
        1 => branch().prop_map(Op::MakeBranch),
        1 => branch().prop_map(Op::ReadBranch),
        1 => other_commit(),
    ]
}

/// How many files a case may hold open at once.
pub const HANDLES: usize = 2;

/// Steps around files held open across commits, on the three shallowest
/// paths, so that a reader of a committed file often meets a writer of
/// its path, which the whole mix makes rare.
pub fn handle_op() -> impl Strategy<Value = Op> {
    let path = prop::sample::select(paths_of_depth(1));
    let bytes = bytes();
    prop_oneof![
        3 => (path.clone(), bytes.clone()).prop_map(|(p, b)| Op::Write(p, b)),
        2 => (path.clone(), bytes.clone()).prop_map(|(p, b)| Op::Append(p, b)),
        2 => (path.clone(), 0..80u64, bytes.clone()).prop_map(|(p, o, b)| Op::WriteAt(p, o, b)),
        1 => (path.clone(), 0..80u64).prop_map(|(p, n)| Op::Truncate(p, n)),
        1 => path.clone().prop_map(Op::Unlink),
        1 => (path.clone(), path.clone()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => (path.clone(), path.clone()).prop_map(|(a, b)| Op::Link(a, b)),
        3 => (0..HANDLES, path.clone()).prop_map(|(h, p)| Op::OpenRead(h, p)),
        2 => (0..HANDLES, path).prop_map(|(h, p)| Op::Open(h, p)),
        2 => (0..HANDLES, 0..80u64, bytes).prop_map(|(h, o, b)| Op::HandleWrite(h, o, b)),
        2 => (0..HANDLES).prop_map(Op::HandleRead),
        1 => (0..HANDLES).prop_map(Op::Close),
        2 => Just(Op::Commit),
        1 => Just(Op::Pause),
        1 => other_commit(),
    ]
}
