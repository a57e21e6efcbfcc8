//! The control directory `.zarrfs/` and the read-only history trees under
//! it: what each mount path names, the text of each control file, and
//! the actions (commit, checkout, discard) that writing one performs.
//!
//! ```text
//! .zarrfs/status        .zarrfs/status.json   .zarrfs/session
//! .zarrfs/commit        .zarrfs/checkout      .zarrfs/discard
//! .zarrfs/log           .zarrfs/log.json
//! .zarrfs/branches/NAME/...   .zarrfs/tags/NAME/...   .zarrfs/commits/ID/...
//! ```

use std::io::{self, Write};
use std::time::Instant;

use super::control_output::{ControlOutput, OutputWriter};
use super::core::{Fs, FsOptions, FsResult, err, lock};
use crate::repo::{CommitError, CommitId, Repo};
use crate::session::{Result as SessionResult, Session, SessionError, StatusKind};

/// The control directory's name at the mount root.
pub const CONTROL_DIR: &str = ".zarrfs";

/// How many commits `.zarrfs/commits/` lists (any commit can be looked up).
pub const COMMITS_LISTED: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlFile {
    Status,
    StatusJson,
    Commit,
    Checkout,
    Discard,
    Log,
    LogJson,
    Session,
    SessionJson,
    Progress,
}

impl ControlFile {
    pub const ALL: [ControlFile; 10] = [
        ControlFile::Status,
        ControlFile::StatusJson,
        ControlFile::Commit,
        ControlFile::Checkout,
        ControlFile::Discard,
        ControlFile::Log,
        ControlFile::LogJson,
        ControlFile::Session,
        ControlFile::SessionJson,
        ControlFile::Progress,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ControlFile::Status => "status",
            ControlFile::StatusJson => "status.json",
            ControlFile::Commit => "commit",
            ControlFile::Checkout => "checkout",
            ControlFile::Discard => "discard",
            ControlFile::Log => "log",
            ControlFile::LogJson => "log.json",
            ControlFile::Session => "session",
            ControlFile::SessionJson => "session.json",
            ControlFile::Progress => "progress",
        }
    }

    pub fn from_name(name: &str) -> Option<ControlFile> {
        ControlFile::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether writing it does something.
    pub fn writable(self) -> bool {
        matches!(
            self,
            ControlFile::Commit | ControlFile::Checkout | ControlFile::Discard
        )
    }

    pub fn mode(self) -> u32 {
        match self {
            ControlFile::Commit | ControlFile::Checkout => 0o644,
            ControlFile::Discard => 0o200,
            _ => 0o444,
        }
    }
}

/// The three kinds of history trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefKind {
    Branches,
    Tags,
    Commits,
}

impl RefKind {
    pub const ALL: [RefKind; 3] = [RefKind::Branches, RefKind::Tags, RefKind::Commits];

    pub fn name(self) -> &'static str {
        match self {
            RefKind::Branches => "branches",
            RefKind::Tags => "tags",
            RefKind::Commits => "commits",
        }
    }

    /// What one of them is called: "branch", "tag", "commit".
    pub fn singular(self) -> &'static str {
        match self {
            RefKind::Branches => "branch",
            RefKind::Tags => "tag",
            RefKind::Commits => "commit",
        }
    }

    fn from_name(name: &str) -> Option<RefKind> {
        RefKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// What a mount path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node<'a> {
    /// A path of the session's view ("" is the mount root).
    View(&'a str),
    /// `.zarrfs`
    ControlDir,
    /// `.zarrfs/<file>`
    Control(ControlFile),
    /// `.zarrfs/branches`, `.zarrfs/tags`, `.zarrfs/commits`
    Refs(RefKind),
    /// `.zarrfs/<kind>/<name>/<path>`: `path` in the tree of a branch tip,
    /// a tag or a commit ("" for its root).
    History {
        kind: RefKind,
        name: &'a str,
        path: &'a str,
    },
}

/// Classify a mount path; `None` for a name under `.zarrfs/` that does
/// not exist.
pub fn classify(path: &str) -> Option<Node<'_>> {
    let Some(rest) = path.strip_prefix(CONTROL_DIR) else {
        return Some(Node::View(path));
    };
    if rest.is_empty() {
        return Some(Node::ControlDir);
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Some(Node::View(path)); // e.g. ".zarrfsx"
    };
    let (first, tail) = match rest.split_once('/') {
        Some((first, tail)) => (first, Some(tail)),
        None => (rest, None),
    };
    if let Some(kind) = RefKind::from_name(first) {
        return Some(match tail {
            None => Node::Refs(kind),
            Some(tail) => {
                let (name, path) = tail.split_once('/').unwrap_or((tail, ""));
                Node::History { kind, name, path }
            }
        });
    }
    match tail {
        None => ControlFile::from_name(first).map(Node::Control),
        Some(_) => None,
    }
}

/// The mount path of `name` in the directory `dir`.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// The parent of a mount path ("" for top-level names).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

/// The commit a history tree shows, if its name resolves.
pub fn history_commit(repo: &Repo, kind: RefKind, name: &str) -> io::Result<Option<CommitId>> {
    Ok(match kind {
        RefKind::Branches => repo.branch_tip(name)?.map(|t| t.commit),
        RefKind::Tags => repo.refs().tag(name)?,
        RefKind::Commits => {
            if name.len() < 4 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                None
            } else {
                repo.resolve(name).ok()
            }
        }
    })
}

/// `.zarrfs/status`, in the seed's shape.
pub fn status_text(session: &mut Session, out: &mut dyn Write) -> SessionResult<()> {
    let info = session.info().clone();
    write!(
        out,
        "Using repo {}\nSession {} started at {}\n",
        session.repo().path().display(),
        info.id,
        info.started_at
    )?;
    match &info.branch {
        Some(branch) => writeln!(out, "On branch {branch}\n")?,
        None => writeln!(out, "At commit {} (no branch)\n", info.base)?,
    }
    let mut any = false;
    session.status_each(&mut |change| {
        if !any {
            out.write_all(b"paths modified in session\n\n")?;
            any = true;
        }
        let letter = match change.kind {
            StatusKind::Added => 'A',
            StatusKind::Modified => 'M',
            StatusKind::Deleted => 'D',
        };
        let marker = if change.metadata { "[M]" } else { "[C]" };
        let slash = if change.is_dir { "/" } else { "" };
        writeln!(out, "  {letter} {marker} {}{slash}", change.path)?;
        Ok(())
    })?;
    if !any {
        out.write_all(b"No changes in current session\n")?;
    }
    Ok(())
}

/// What the kernel agreed to serve the mount with, for `session.json`.
#[derive(Clone, Copy, Debug)]
pub struct KernelFeatures {
    /// FUSE passthrough: the kernel reads and writes file data itself.
    pub passthrough: bool,
    /// Requests come over FUSE's io_uring queues instead of /dev/fuse.
    pub io_uring: bool,
}

/// `.zarrfs/session.json`: the session and its mount, without the
/// changes, so that reading it costs nothing however many there are.
pub fn session_json(session: &Session, options: &FsOptions, kernel: KernelFeatures) -> String {
    let info = session.info();
    let description = serde_json::json!({
        "repo": session.repo().path().display().to_string(),
        "session": info.id,
        "started_at": info.started_at,
        "branch": info.branch,
        "base": info.base.to_hex(),
        "author": info.author,
        "mountpoint": options.mountpoint,
        "read_only": options.read_only,
        "pid": std::process::id(),
        "log": options.log,
        "passthrough": kernel.passthrough,
        "io_uring": kernel.io_uring,
        "sealed_files": session.sealed_files(),
        "open_for_writing": session.open_for_writing(),
    });
    format!("{}\n", serde_json::to_string_pretty(&description).unwrap())
}

/// `.zarrfs/status.json`: `session.json` and the changes, written one
/// by one as they are found.
pub fn status_json(
    session: &mut Session,
    options: &FsOptions,
    kernel: KernelFeatures,
    out: &mut dyn Write,
) -> SessionResult<()> {
    let text = session_json(session, options, kernel);
    // Reopen the object to add the changes, the one long member.
    let open = text
        .trim_end()
        .strip_suffix('}')
        .expect("a JSON object")
        .trim_end();
    out.write_all(open.as_bytes())?;
    out.write_all(b",\n  \"changes\": [")?;
    let mut first = true;
    session.status_each(&mut |change| {
        out.write_all(if first { b"\n    " } else { b",\n    " })?;
        first = false;
        serde_json::to_writer(&mut *out, &change).map_err(io::Error::from)?;
        Ok(())
    })?;
    out.write_all(if first { b"]\n}\n" } else { b"\n  ]\n}\n" })?;
    Ok(())
}

/// Where the log starts: the branch tip, or the base when detached.
pub fn log_start(session: &Session) -> io::Result<CommitId> {
    if let Some(branch) = session.branch()
        && let Some(tip) = session.repo().branch_tip(branch)?
    {
        return Ok(tip.commit);
    }
    Ok(session.base())
}

/// `.zarrfs/log`, newest first, as `zarrfs log` prints it.
pub fn log_text(repo: &Repo, start: CommitId, out: &mut dyn Write) -> io::Result<()> {
    for entry in repo.log(start) {
        let (id, commit) = entry?;
        out.write_all(crate::cli::format_log_entry(&id.to_hex(), &commit).as_bytes())?;
    }
    Ok(())
}

/// `.zarrfs/log.json`.
pub fn log_json(repo: &Repo, start: CommitId, out: &mut dyn Write) -> io::Result<()> {
    out.write_all(b"[")?;
    for (i, entry) in repo.log(start).enumerate() {
        let (id, commit) = entry?;
        out.write_all(if i == 0 { b"\n  " } else { b",\n  " })?;
        serde_json::to_writer(&mut *out, &commit.summary_json(id)).map_err(io::Error::from)?;
    }
    out.write_all(b"\n]\n")
}

/// The message of a write to `.zarrfs/commit`: a JSON object's
/// `"message"`, or the text itself without its trailing newline.
pub fn commit_message(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let trimmed = text.trim();
    if trimmed.starts_with('{')
        && let Ok(serde_json::Value::Object(map)) = serde_json::from_str(trimmed)
        && let Some(serde_json::Value::String(message)) = map.get("message")
    {
        return message.clone();
    }
    text.trim_end_matches(['\n', '\r']).to_owned()
}

impl Fs {
    fn kernel_features(&self) -> KernelFeatures {
        KernelFeatures {
            passthrough: self.backings.enabled(),
            io_uring: self.io_uring.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// What reading a control file gives now.
    pub(super) fn control_content(&self, file: ControlFile) -> FsResult<ControlOutput> {
        let text = match file {
            ControlFile::Status
            | ControlFile::StatusJson
            | ControlFile::Log
            | ControlFile::LogJson => return self.long_control_content(file),
            ControlFile::Commit => lock(&self.last_commit).clone(),
            ControlFile::Checkout => format!("{}\n", self.session_read().base()),
            ControlFile::Discard => String::new(),
            ControlFile::Session => format!("{}\n", self.session_read().id()),
            ControlFile::SessionJson => {
                session_json(&self.session_read(), &self.options, self.kernel_features())
            }
            // Read without the session lock, which a running commit holds.
            ControlFile::Progress => match *lock(&self.commit_progress) {
                Some(progress) => format!("{}\n", serde_json::to_string(&progress).unwrap()),
                None => String::new(),
            },
        };
        Ok(text.into())
    }

    /// The control files whose length grows with the session or the
    /// history.
    fn long_control_content(&self, file: ControlFile) -> FsResult<ControlOutput> {
        let tmp_dir = self.repo.path().join("tmp");
        let mut out = OutputWriter::new(&tmp_dir);
        match file {
            ControlFile::Status => status_text(&mut self.session_write(), &mut out)?,
            ControlFile::StatusJson => status_json(
                &mut self.session_write(),
                &self.options,
                self.kernel_features(),
                &mut out,
            )?,
            ControlFile::Log => {
                let start = log_start(&self.session_read())?;
                log_text(&self.repo, start, &mut out)?
            }
            _ => {
                let start = log_start(&self.session_read())?;
                log_json(&self.repo, start, &mut out)?
            }
        }
        Ok(out.finish()?)
    }

    /// The action of a write to a control file; its outcome is the
    /// write's.
    pub(super) fn control_write(&self, file: ControlFile, data: &[u8]) -> FsResult<()> {
        if data.is_empty() {
            return Ok(());
        }
        tracing::debug!(
            file = file.name(),
            text = %String::from_utf8_lossy(data).trim_end(),
            "control file written"
        );
        match file {
            ControlFile::Commit => self.commit(data),
            ControlFile::Checkout => self.checkout(data),
            ControlFile::Discard => self.discard(),
            _ => err(libc::EBADF),
        }
    }

    /// `.zarrfs/commit`: commit the session and start a new one.
    fn commit(&self, data: &[u8]) -> FsResult<()> {
        if self.options.read_only {
            tracing::info!("commit refused: the mount is read-only");
            return err(libc::EROFS);
        }
        let message = commit_message(data);
        let started = Instant::now();
        let mut epoch = self.epoch_write();
        let mut session = self.session_write();
        let (base, old_session) = (session.base(), session.id().to_owned());
        let old_generation = *epoch;
        let result = session.commit_reporting(&message, &mut |progress| {
            *lock(&self.commit_progress) = Some(progress);
        });
        *lock(&self.commit_progress) = None;
        *epoch = session.generation();
        let carried = session.take_carried();
        self.carry_write_handles(old_generation, *epoch, &carried);
        self.detach_stale_inodes(*epoch);
        let new_session = session.id().to_owned();
        drop(session);
        drop(epoch);
        match result {
            Ok(id) => {
                let (changes, rebased_over) = self.commit_stats(id, base);
                if rebased_over == 0 {
                    self.invalidate_after_own_commit();
                } else {
                    self.invalidate_view();
                }
                *lock(&self.last_commit) = format!("{id}\n");
                tracing::info!(
                    commit = %id,
                    changes,
                    rebased_over,
                    duration_ms = started.elapsed().as_millis() as u64,
                    session = %old_session,
                    "committed"
                );
                tracing::info!(session = %new_session, base = %id, "session started");
                Ok(())
            }
            Err(e) => {
                *lock(&self.last_commit) = format!("{e}\n");
                log_refusal("commit", &old_session, &e);
                Err(e.into())
            }
        }
    }

    /// How many paths a commit changed, and over how many commits it was
    /// rebased (those between the session's base and its parent).
    fn commit_stats(&self, id: CommitId, base: CommitId) -> (u64, u64) {
        let Ok(commit) = self.repo.commit_record(id) else {
            return (0, 0);
        };
        let base_height = self.repo.commit_record(base).map_or(0, |c| c.height);
        (
            commit.change_count,
            commit.height.saturating_sub(base_height + 1),
        )
    }

    /// `.zarrfs/checkout`: start a new session at a branch, a tag or a
    /// commit.
    fn checkout(&self, data: &[u8]) -> FsResult<()> {
        let target = String::from_utf8_lossy(data).trim().to_owned();
        let mut epoch = self.epoch_write();
        let mut session = self.session_write();
        // Refuse any checkout while there are changes, as the contract
        // says (Session::checkout does too; this logs it).
        if session.has_changes()? {
            tracing::warn!(
                target = ?target,
                session = %session.id(),
                "checkout refused: the session has uncommitted changes"
            );
            return err(libc::EBUSY);
        }
        let old_session = session.id().to_owned();
        let result = session.checkout(&target);
        *epoch = session.generation();
        self.detach_stale_inodes(*epoch);
        match result {
            Ok(commit) => {
                tracing::info!(
                    target = ?target,
                    commit = %commit,
                    branch = session.branch().unwrap_or("(none)"),
                    session = %session.id(),
                    "checked out; session started"
                );
                drop(session);
                drop(epoch);
                self.invalidate_view();
                Ok(())
            }
            Err(e) => {
                log_refusal(&format!("checkout {target:?}"), &old_session, &e);
                Err(e.into())
            }
        }
    }

    /// `.zarrfs/discard`: drop the session's changes.
    fn discard(&self) -> FsResult<()> {
        let mut epoch = self.epoch_write();
        let mut session = self.session_write();
        let old_session = session.id().to_owned();
        let result = session.discard();
        *epoch = session.generation();
        self.detach_stale_inodes(*epoch);
        match result {
            Ok(()) => {
                tracing::info!(
                    discarded = %old_session,
                    session = %session.id(),
                    base = %session.base(),
                    "discarded the session's changes; session started"
                );
                drop(session);
                drop(epoch);
                self.invalidate_view();
                Ok(())
            }
            Err(e) => {
                log_refusal("discard", &old_session, &e);
                Err(e.into())
            }
        }
    }
}

/// Log an action that was refused: conflicts and invalid metadata as
/// warnings, other refusals (nothing to commit, changes in the way, an
/// unknown name) at info. Failures (I/O, a damaged repository) are
/// logged as errors where they become an errno, by `FsError::from`.
fn log_refusal(action: &str, session: &str, e: &SessionError) {
    match e {
        SessionError::Io(_) | SessionError::Repo(_) => {}
        SessionError::Commit(CommitError::Io(_) | CommitError::Contention(_)) => {}
        SessionError::Commit(
            CommitError::Conflict { .. } | CommitError::InvalidMetadata { .. },
        ) => {
            tracing::warn!(session, "{action} refused: {e}");
        }
        _ => tracing::info!(session, "{action} refused: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::core::FsError;
    use super::super::testing::*;
    use super::*;

    #[test]
    fn mount_paths_classify() {
        assert_eq!(classify(""), Some(Node::View("")));
        assert_eq!(classify("a/b"), Some(Node::View("a/b")));
        assert_eq!(classify(".zarrfsx"), Some(Node::View(".zarrfsx")));
        assert_eq!(classify(".zarrfs"), Some(Node::ControlDir));
        assert_eq!(
            classify(".zarrfs/commit"),
            Some(Node::Control(ControlFile::Commit))
        );
        assert_eq!(classify(".zarrfs/nope"), None);
        assert_eq!(classify(".zarrfs/commit/x"), None);
        assert_eq!(classify(".zarrfs/tags"), Some(Node::Refs(RefKind::Tags)));
        assert_eq!(
            classify(".zarrfs/branches/main"),
            Some(Node::History {
                kind: RefKind::Branches,
                name: "main",
                path: ""
            })
        );
        assert_eq!(
            classify(".zarrfs/commits/abcd/x/y"),
            Some(Node::History {
                kind: RefKind::Commits,
                name: "abcd",
                path: "x/y"
            })
        );
    }

    #[test]
    fn commit_messages_are_text_or_json() {
        assert_eq!(commit_message(b"hello\n"), "hello");
        assert_eq!(commit_message(b"two\nlines\n"), "two\nlines");
        assert_eq!(
            commit_message(br#"{"message": "from a tool"}"#),
            "from a tool"
        );
        assert_eq!(commit_message(b"{not json}\n"), "{not json}");
    }

    #[test]
    fn control_files_commit_and_report() {
        let (_dir, fs) = fs();
        assert_eq!(
            control(&fs, "commit", "nothing\n"),
            Err(FsError(libc::ENODATA))
        );
        assert!(
            String::from_utf8(read_file(&fs, ".zarrfs/commit").unwrap())
                .unwrap()
                .contains("nothing to commit")
        );
        write_file(&fs, "", "zarr.json", b"{broken");
        assert_eq!(control(&fs, "commit", "bad\n"), Err(FsError(libc::EINVAL)));
        let status = String::from_utf8(read_file(&fs, ".zarrfs/status").unwrap()).unwrap();
        assert!(status.contains("  A [M] zarr.json"), "{status}");
        write_file(&fs, "", "zarr.json", br#"{"zarr_format": 3}"#);
        let session = read_file(&fs, ".zarrfs/session").unwrap();
        control(&fs, "commit", r#"{"message": "from a tool"}"#).unwrap();
        assert_ne!(read_file(&fs, ".zarrfs/session").unwrap(), session);
        let log = String::from_utf8(read_file(&fs, ".zarrfs/log").unwrap()).unwrap();
        assert!(log.contains("    from a tool"), "{log}");
        let id = String::from_utf8(read_file(&fs, ".zarrfs/commit").unwrap()).unwrap();
        assert_eq!(
            read_file(&fs, &format!(".zarrfs/commits/{}/zarr.json", id.trim())).unwrap(),
            br#"{"zarr_format": 3}"#
        );
        assert_eq!(
            fs.open(ino(&fs, ".zarrfs/status").unwrap(), libc::O_WRONLY)
                .unwrap_err(),
            FsError(libc::EACCES)
        );
        // A zero-byte write does nothing.
        control(&fs, "discard", "").unwrap();
        // Checkout is refused with changes.
        write_file(&fs, "", "x", b"x");
        assert_eq!(control(&fs, "checkout", "\n"), Err(FsError(libc::EBUSY)));
        control(&fs, "discard", "\n").unwrap();
        control(&fs, "checkout", "\n").unwrap();
        fs.mkdir(ino(&fs, ".zarrfs/branches").unwrap(), name("dev"))
            .unwrap();
        assert_eq!(names(&fs, ".zarrfs/branches"), [".", "..", "dev", "main"]);
        assert_eq!(
            fs.mkdir(ino(&fs, ".zarrfs/branches/dev").unwrap(), name("x")),
            Err(FsError(libc::EROFS))
        );
    }
}
