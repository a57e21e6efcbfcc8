//! Sessions: the writable view of one mount.
//!
//! A session has an id, a start time, a branch, a base commit and a
//! journal of changes. Its view is the base tree with the journal laid
//! over it (`view`); committing turns the journal into a change list for
//! the repository's commit driver (`changes`).
//!
//! On disk a session is a directory `REPO/sessions/<id>/`:
//!
//! ```text
//! info.json        id, start time, branch, base, author, mountpoint
//! journal.redb     the journal (see `journal`)
//! staged/<n>       the bytes of files written in this session, and a
//!                  few empty ones made ahead (see `staged_pool`)
//! lock             held (flock) by the process serving the session
//! ```
//!
//! so that uncommitted work survives unmount, a crash or `kill -9`, and a
//! later mount resumes it.

mod changes;
mod fs_support;
pub mod journal;
mod sealing;
mod staged_pool;
mod view;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::repo::{CommitId, ObjectId, Repo, RepoError};
use journal::{Journal, JournalEntry};

pub use changes::{CommitProgress, StatusEntry, StatusKind};
pub use journal::{FileSource, FlushJob, FlushedTable};
pub use sealing::{SealPass, SealedFile, Sealer};
pub use view::{Attr, FileLocator, NodeKind, ReadSource, StagedFile};

/// What a session is, as recorded in `info.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: String,
    pub started_at: String,
    /// The branch commits go to; `None` for a session on a tag or commit.
    pub branch: Option<String>,
    pub base: CommitId,
    pub author: String,
    /// Where the session was last mounted, to resume it there.
    pub mountpoint: Option<String>,
}

/// How to start or resume a session.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub branch: String,
    pub author: String,
    pub mountpoint: Option<String>,
}

impl SessionOptions {
    pub fn new(branch: &str) -> SessionOptions {
        SessionOptions {
            branch: branch.to_owned(),
            author: default_author(),
            mountpoint: None,
        }
    }
}

/// The author of commits when none is given: git's `user.name` and
/// `user.email` when they are set, as git users expect, else `user@host`.
pub fn default_author() -> String {
    let git = |key: &str| {
        std::process::Command::new("git")
            .args(["config", "--get", key])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "user".into());
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    let name = git("user.name").unwrap_or_else(|| user.clone());
    let email = git("user.email").unwrap_or_else(|| format!("{user}@{host}"));
    format!("{name} <{email}>")
}

/// An error of a session operation, carrying the errno a filesystem
/// would answer with.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}: no such file or directory")]
    NotFound(String),
    #[error("{0}: already exists")]
    Exists(String),
    #[error("{0}: not a directory")]
    NotADirectory(String),
    #[error("{0}: is a directory")]
    IsADirectory(String),
    #[error("{0}: directory not empty")]
    NotEmpty(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Commit(#[from] crate::repo::CommitError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl SessionError {
    pub fn errno(&self) -> i32 {
        use crate::repo::CommitError as C;
        match self {
            SessionError::NotFound(_) => libc::ENOENT,
            SessionError::Exists(_) => libc::EEXIST,
            SessionError::NotADirectory(_) => libc::ENOTDIR,
            SessionError::IsADirectory(_) => libc::EISDIR,
            SessionError::NotEmpty(_) => libc::ENOTEMPTY,
            SessionError::Invalid(_) => libc::EINVAL,
            SessionError::Busy(_) => libc::EBUSY,
            SessionError::Commit(C::Conflict { .. }) => libc::EBUSY,
            SessionError::Commit(C::InvalidMetadata { .. }) => libc::EINVAL,
            SessionError::Commit(C::NothingToCommit) => libc::ENODATA,
            SessionError::Commit(C::ReadOnly(_)) => libc::EROFS,
            SessionError::Commit(C::Io(e)) | SessionError::Io(e) => {
                e.raw_os_error().unwrap_or(libc::EIO)
            }
            SessionError::Commit(_) => libc::EAGAIN,
            SessionError::Repo(RepoError::UnknownRevision(_) | RepoError::AmbiguousRevision(_)) => {
                libc::ENOENT
            }
            SessionError::Repo(_) => libc::EIO,
        }
    }
}

pub type Result<T, E = SessionError> = std::result::Result<T, E>;

/// One open session. Not shared between threads by itself: the mount
/// wraps it in a lock.
pub struct Session {
    repo: Arc<Repo>,
    info: SessionInfo,
    dir: PathBuf,
    journal: Journal,
    base_tree: ObjectId,
    /// When the base commit was made: the mtime of unchanged files.
    base_time: SystemTime,
    /// Numbers staged files and makes empty ones ahead of need.
    staged: staged_pool::StagedPool,
    /// Staged files open for writing, by how many handles: the commit
    /// copies them instead of linking, so that a late write through an
    /// old handle cannot reach a committed object.
    writers: HashMap<u64, usize>,
    /// Hashes of staged files, valid while their size and mtime match.
    hashes: HashMap<u64, (u64, SystemTime, ObjectId)>,
    /// Bumped whenever the view is replaced (commit, checkout, discard).
    generation: u64,
    /// Staged files carried over from the previous session by a commit.
    carried: Vec<(u64, u64)>,
    /// Closed staged files being stored ahead of the commit (`sealing`).
    seals: Arc<sealing::Seals>,
    _lock: File,
}

impl Session {
    /// Start a new session at the tip of `options.branch`.
    pub fn start(repo: Arc<Repo>, options: SessionOptions) -> Result<Session> {
        remove_leftovers(&repo);
        let tip = repo
            .branch_tip(&options.branch)?
            .ok_or_else(|| SessionError::NotFound(format!("branch '{}'", options.branch)))?;
        Session::create_at(
            repo,
            Some(options.branch.clone()),
            tip.commit,
            &options.author,
            options.mountpoint,
        )
    }

    fn create_at(
        repo: Arc<Repo>,
        branch: Option<String>,
        base: CommitId,
        author: &str,
        mountpoint: Option<String>,
    ) -> Result<Session> {
        let info = SessionInfo {
            id: new_session_id()?,
            started_at: crate::repo::commit::now_rfc3339(),
            branch,
            base,
            author: author.to_owned(),
            mountpoint,
        };
        let dir = repo.sessions_dir().join(&info.id);
        make_session_dir(&dir, &info)?;
        Session::load(repo, dir, info)
    }

    /// Resume a session by id, as it was left.
    pub fn resume(repo: Arc<Repo>, id: &str, mountpoint: Option<String>) -> Result<Session> {
        remove_leftovers(&repo);
        let dir = repo.sessions_dir().join(id);
        let mut info = read_info(&dir).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => SessionError::NotFound(format!("session {id}")),
            _ => SessionError::Io(e),
        })?;
        if mountpoint.is_some() && info.mountpoint != mountpoint {
            info.mountpoint = mountpoint;
            write_info(&dir, &info)?;
        }
        let mut session = Session::load(repo, dir, info)?;
        session.finish_if_landed()?;
        Ok(session)
    }

    /// The session to resume at a mountpoint: the newest one last mounted
    /// there that has uncommitted changes and is not in use. One whose
    /// daemon is still exiting (killed a moment ago, and mounted again at
    /// once, as a service manager restarts a mount) is waited for, up to
    /// `EXITING_HOLDER_WAIT`, rather than passed over for a new session.
    pub fn find_resumable(repo: &Repo, mountpoint: &str) -> io::Result<Option<String>> {
        let deadline = Instant::now() + EXITING_HOLDER_WAIT;
        let sessions = loop {
            let sessions = list_sessions(repo)?;
            let exiting = sessions.iter().any(|s| {
                s.info.mountpoint.as_deref() == Some(mountpoint)
                    && s.in_use_by.as_deref().is_some_and(holder_is_exiting)
            });
            if !exiting || Instant::now() >= deadline {
                break sessions;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut best: Option<SessionInfo> = None;
        for summary in sessions {
            if summary.info.mountpoint.as_deref() == Some(mountpoint)
                && summary.in_use_by.is_none()
                && summary.changes > 0
                && best
                    .as_ref()
                    .is_none_or(|b| b.started_at < summary.info.started_at)
            {
                best = Some(summary.info);
            }
        }
        Ok(best.map(|info| info.id))
    }

    fn load(repo: Arc<Repo>, dir: PathBuf, info: SessionInfo) -> Result<Session> {
        let lock = take_lock(&dir, &info)?;
        let journal = Journal::open(&dir.join("journal.redb"))?;
        let base = repo.commit_record(info.base)?;
        let next_staged = fs::read_dir(dir.join("staged"))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .map_or(0, |n| n + 1);
        let staged = staged_pool::StagedPool::new(dir.join("staged"), next_staged);
        Ok(Session {
            base_tree: base.tree,
            base_time: humantime::parse_rfc3339(&base.date).unwrap_or(SystemTime::UNIX_EPOCH),
            repo,
            info,
            dir,
            journal,
            staged,
            writers: HashMap::new(),
            hashes: HashMap::new(),
            generation: 0,
            carried: Vec::new(),
            seals: Default::default(),
            _lock: lock,
        })
    }

    /// A session whose commit landed but which crashed before it could
    /// start its successor: start the successor now.
    fn finish_if_landed(&mut self) -> Result<()> {
        let Some(branch) = self.info.branch.clone() else {
            return Ok(());
        };
        let Some(tip) = self.repo.branch_tip(&branch)? else {
            return Ok(());
        };
        let Some(landed) = self.repo.commits_since(self.info.base, tip.commit)? else {
            return Ok(());
        };
        for id in landed {
            if self.repo.commit_record(id)?.session == self.info.id {
                self.replace_with_new_session(Some(branch), id)?;
                return Ok(());
            }
        }
        Ok(())
    }

    pub fn repo(&self) -> &Arc<Repo> {
        &self.repo
    }

    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    pub fn id(&self) -> &str {
        &self.info.id
    }

    pub fn base(&self) -> CommitId {
        self.info.base
    }

    pub fn branch(&self) -> Option<&str> {
        self.info.branch.as_deref()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the journal records anything (it may still amount to no
    /// change, if files were rewritten with the bytes they had).
    pub fn has_journal_entries(&self) -> bool {
        !self.journal.is_empty()
    }

    /// Make the journal durable now.
    pub fn flush(&mut self) -> Result<()> {
        self.journal.flush()?;
        Ok(())
    }

    pub fn has_unflushed_changes(&self) -> bool {
        self.journal.has_pending()
    }

    /// Whether enough changes are pending that a background flush should
    /// not wait for its interval.
    pub fn wants_flush(&self) -> bool {
        self.journal.wants_flush()
    }

    /// Start a flush that writes without holding the session: run
    /// [`FlushJob::write`] with the session free, then
    /// [`Session::finish_flush`]. `None` if there is nothing to flush or
    /// a flush is under way.
    pub fn begin_flush(&mut self) -> Option<FlushJob> {
        self.journal.begin_flush()
    }

    /// Take the result of a flush begun with [`Session::begin_flush`].
    pub fn finish_flush(&mut self, job: FlushJob, written: io::Result<FlushedTable>) -> Result<()> {
        self.journal.finish_flush(job, written)?;
        Ok(())
    }

    /// Leave this session for a new, empty one at `base`; the old one's
    /// directory goes (its changes were committed or discarded).
    fn replace_with_new_session(&mut self, branch: Option<String>, base: CommitId) -> Result<()> {
        self.replace_with_new_session_carrying(branch, base, false)
    }

    /// Leave this session for a new one at `base`. With `carry_open`,
    /// files open for writing go on in the new session: their staged file
    /// moves over (the same inode, so open descriptors, including the
    /// kernel's for FUSE passthrough, keep writing into the view) and
    /// [`Session::take_carried`] says which staged numbers became which.
    fn replace_with_new_session_carrying(
        &mut self,
        branch: Option<String>,
        base: CommitId,
        carry_open: bool,
    ) -> Result<()> {
        let mut next = Session::create_at(
            self.repo.clone(),
            branch,
            base,
            &self.info.author,
            self.info.mountpoint.clone(),
        )?;
        let mut carried = Vec::new();
        if carry_open {
            let open = self.files_open_for_writing()?;
            for (path, old, mode, count) in open {
                let new = self.staged.move_into(old, &next.staged)?;
                next.journal.insert(
                    &path,
                    JournalEntry::File {
                        source: FileSource::Staged(new),
                        mode,
                    },
                )?;
                next.writers.insert(new, count);
                carried.push((old, new));
            }
            next.journal.flush()?;
        }
        next.carried = carried;
        if self.seals.enabled() {
            next.seals.enable();
        }
        let generation = self.generation;
        let mut old = std::mem::replace(self, next);
        self.generation = generation.wrapping_add(1);
        old.seals.retire();
        old.staged.hand_over_ready(&mut self.staged);
        old.staged.doom_dir();
        remove_in_background(old);
        Ok(())
    }

    /// The worker's handle on this session's sealing (see `sealing`);
    /// from the first call on, closed files are queued for it, in this
    /// session and in the ones that follow it.
    pub fn sealer(&self) -> Sealer {
        self.seals.enable();
        Sealer::new(
            self.seals.clone(),
            self.dir.join("staged"),
            self.repo.clone(),
        )
    }

    /// How many of the session's files are sealed: stored in the object
    /// store ahead of the commit.
    pub fn sealed_files(&self) -> usize {
        self.seals.stored_count()
    }

    /// How many of the session's files are open for writing: a commit
    /// takes them as they are and carries them on into the next session.
    pub fn open_for_writing(&self) -> usize {
        self.writers.len()
    }

    /// After a commit: the staged files that were open for writing, as
    /// (number in the old session, number in the new one).
    pub fn take_carried(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.carried)
    }

    /// Drop every change and start a new session at the same base.
    pub fn discard(&mut self) -> Result<()> {
        self.replace_with_new_session(self.info.branch.clone(), self.info.base)
    }

    /// Start a new session at a branch's tip (or, for an empty target,
    /// the current branch's tip), a tag or a commit. Refused while the
    /// session has changes, whatever the target: nothing is ever dropped
    /// without `discard`.
    pub fn checkout(&mut self, target: &str) -> Result<CommitId> {
        let target = target.trim();
        let (branch, commit) = if target.is_empty() {
            let branch = self.info.branch.clone().ok_or_else(|| {
                SessionError::Invalid(
                    "this session is on no branch; name a branch to check out".into(),
                )
            })?;
            let tip = self
                .repo
                .branch_tip(&branch)?
                .ok_or_else(|| SessionError::NotFound(format!("branch '{branch}'")))?;
            (Some(branch), tip.commit)
        } else if let Some(tip) = self.repo.branch_tip(target).ok().flatten() {
            (Some(target.to_owned()), tip.commit)
        } else {
            (None, self.repo.resolve(target)?)
        };
        if self.has_changes()? {
            return Err(SessionError::Busy(format!(
                "cannot check out {target}: the session has uncommitted changes; commit or discard them first",
                target = if target.is_empty() {
                    "the branch tip"
                } else {
                    target
                }
            )));
        }
        self.replace_with_new_session(branch, commit)?;
        Ok(commit)
    }

    /// The journal's files that are open for writing: path, staged
    /// number, mode, and how many handles write them.
    fn files_open_for_writing(&self) -> Result<Vec<(String, u64, u32, usize)>> {
        let mut open = Vec::new();
        let mut after: Option<String> = None;
        while !self.writers.is_empty() {
            let chunk = self.journal.entries_after(after.as_deref(), 4096)?;
            let Some((last, _)) = chunk.last() else { break };
            after = Some(last.clone());
            for (path, entry) in chunk {
                if let JournalEntry::File {
                    source: FileSource::Staged(n),
                    mode,
                } = entry
                    && let Some(&count) = self.writers.get(&n)
                {
                    open.push((path, n, mode, count));
                }
            }
        }
        Ok(open)
    }

    fn staged_path(&self, n: u64) -> PathBuf {
        self.staged.path(n)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.seals.retire();
        let _ = self.journal.flush();
    }
}

/// Where directories wait for [`remove_in_background`], under the
/// repository's `tmp/`.
const DOOMED_PREFIX: &str = "doomed-";

/// Close a finished session and remove its directory without waiting:
/// a commit of 100,000 files leaves as many staged files, which take a
/// second to unlink, and closing the journal's database syncs it a few
/// times, which a commit of one file would wait for as long as for the
/// rest of its work. The directory is first renamed into `tmp/`, so that
/// it is no longer a session whatever happens next; a removal cut short
/// by the process's exit is finished by the next mount
/// ([`remove_leftovers`]). Failures only cost disk space.
fn remove_in_background(session: Session) {
    let dir = session.dir.clone();
    let mut doomed = session.repo.path().join("tmp").join(DOOMED_PREFIX);
    doomed
        .as_mut_os_string()
        .push(dir.file_name().unwrap_or_default());
    let doomed = if fs::rename(&dir, &doomed).is_ok() {
        doomed
    } else {
        dir
    };
    let spawned = std::thread::Builder::new()
        .name("remove-session".into())
        .spawn({
            let doomed = doomed.clone();
            move || {
                drop(session);
                let _ = fs::remove_dir_all(&doomed);
            }
        });
    // Without a thread, the session went with the closure.
    if spawned.is_err() {
        let _ = fs::remove_dir_all(&doomed);
    }
}

/// Remove now what finished sessions left behind (see
/// `remove_in_background`): their staged files keep the objects they
/// were sealed as linked, so `zarrfs gc` clears them first.
pub fn remove_finished_sessions(repo: &Repo) {
    for dir in doomed_dirs(repo) {
        // A daemon may be removing it at the same time.
        let _ = fs::remove_dir_all(dir);
    }
}

/// Finish removals that [`remove_in_background`] did not get to before
/// its process exited, in the background.
fn remove_leftovers(repo: &Repo) {
    for dir in doomed_dirs(repo) {
        let _ = std::thread::Builder::new()
            .name("remove-session".into())
            .spawn(move || fs::remove_dir_all(dir));
    }
}

/// The directories of finished sessions waiting to be removed.
fn doomed_dirs(repo: &Repo) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(repo.path().join("tmp")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with(DOOMED_PREFIX)
        })
        .map(|entry| entry.path())
        .collect()
}

/// A session found on disk, for `zarrfs sessions` and for resuming.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    pub info: SessionInfo,
    /// Journal entries (0 if it could not be read because it is in use).
    pub changes: usize,
    /// The process holding it, and where, if it is mounted.
    pub in_use_by: Option<String>,
}

/// Every session in the repository.
pub fn list_sessions(repo: &Repo) -> io::Result<Vec<SessionSummary>> {
    let mut out = Vec::new();
    let dir = repo.sessions_dir();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let Ok(info) = read_info(&path) else { continue };
        let in_use_by = lock_holder(&path);
        let changes = if in_use_by.is_some() {
            0
        } else {
            Journal::open(&path.join("journal.redb")).map_or(0, |j| j.len())
        };
        out.push(SessionSummary {
            info,
            changes,
            in_use_by,
        });
    }
    out.sort_by(|a, b| a.info.started_at.cmp(&b.info.started_at));
    Ok(out)
}

fn new_session_id() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Make a new session's directory and its record. On failure (a full
/// disk, say) nothing of it is left, and the error names the directory.
fn make_session_dir(dir: &Path, info: &SessionInfo) -> io::Result<()> {
    fs::create_dir_all(dir.join("staged"))
        .and_then(|()| write_info(dir, info))
        .map_err(|e| {
            let _ = fs::remove_dir_all(dir);
            io::Error::new(
                e.kind(),
                format!("cannot make the session directory {}: {e}", dir.display()),
            )
        })
}

fn write_info(dir: &Path, info: &SessionInfo) -> io::Result<()> {
    let tmp = dir.join("info.json.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(info).unwrap())?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join("info.json"))?;
    crate::storage::sync_dir(dir)
}

fn read_info(dir: &Path) -> io::Result<SessionInfo> {
    let bytes = fs::read(dir.join("info.json"))?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Take the session's lock, or say who holds it.
fn take_lock(dir: &Path, info: &SessionInfo) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("lock"))?;
    // SAFETY: flock on a valid descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = fs::read_to_string(dir.join("lock")).unwrap_or_default();
        return Err(SessionError::Busy(format!(
            "session {} is already in use by {}",
            info.id,
            holder.trim()
        )));
    }
    file.set_len(0)?;
    let where_ = info.mountpoint.as_deref().unwrap_or("no mountpoint");
    (&file)
        .write_all(format!("process {} (mounted at {where_})\n", std::process::id()).as_bytes())?;
    Ok(file)
}

/// How long a mount waits for a session's daemon that is exiting.
const EXITING_HOLDER_WAIT: Duration = Duration::from_secs(5);

/// Whether the process a session's lock names (`process PID (...)`, as
/// [`take_lock`] writes it) is exiting: its main thread is gone (a zombie)
/// while its other threads, and so its files and its lock, are not yet.
/// A killed daemon is so until every thread has run its exit, which under
/// load can take a while.
fn holder_is_exiting(holder: &str) -> bool {
    holder
        .strip_prefix("process ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|pid| pid.parse::<i32>().ok())
        .is_some_and(|pid| process_state(pid) == Some('Z'))
}

/// The state letter of a process's main thread in `/proc/PID/stat` (`R`,
/// `S`, `Z` for a zombie, ...); `None` if there is no such process, `?`
/// if its line cannot be read.
pub(crate) fn process_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name before the state is in parentheses and may hold
    // anything, spaces and ')' too: the state follows the last ')'.
    Some(
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .unwrap_or('?'),
    )
}

/// Who holds a session's lock, if anyone.
fn lock_holder(dir: &Path) -> Option<String> {
    let file = File::open(dir.join("lock")).ok()?;
    // SAFETY: flock on a valid descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
        return None; // released when `file` closes
    }
    Some(
        fs::read_to_string(dir.join("lock"))
            .unwrap_or_default()
            .trim()
            .to_owned(),
    )
}
