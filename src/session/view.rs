//! The view: the base tree with the journal laid over it, and the
//! operations that change it.
//!
//! Operations take `/`-separated paths relative to the mount root ("" is
//! the root) and follow POSIX: a parent must exist before a child is made,
//! `rename` replaces an existing file or empty directory, `rmdir` wants an
//! empty directory. Writing a committed file first copies it into the
//! session's staging area ("copy-up"); renaming or linking one does not.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use super::journal::{FileSource, JournalEntry};
use super::{Result, Session, SessionError};
use crate::repo::{Entry, EntryKind, Objects};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    File,
    Dir,
}

/// What `stat` tells about a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub kind: NodeKind,
    pub size: u64,
    pub mode: u32,
    pub mtime: SystemTime,
}

/// What is at a path in the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Found {
    File { source: FileSource, mode: u32 },
    Dir,
}

/// A staged file open for writing. Give it back with
/// [`Session::release_write`] when the handle closes.
#[derive(Clone, Debug)]
pub struct StagedFile {
    pub staged: u64,
    pub file: Arc<File>,
}

/// A file open for reading: a staged file or a committed object.
#[derive(Debug)]
pub struct ReadSource {
    pub file: File,
    pub size: u64,
    /// Where the bytes are, so that a mount can hand the same file to the
    /// kernel for every open of a path.
    pub origin: FileSource,
}

/// Where a session's files are on local disk; see
/// [`Session::file_locator`].
#[derive(Clone)]
pub struct FileLocator {
    objects: Objects,
    staged: PathBuf,
}

impl FileLocator {
    pub fn path(&self, source: FileSource) -> PathBuf {
        match source {
            FileSource::Staged(n) => self.staged.join(n.to_string()),
            FileSource::Blob { id, .. } => self.objects.blob_path(id),
        }
    }
}

const DEFAULT_DIR_MODE: u32 = 0o755;

/// The parent of a path ("" for top-level names).
pub(super) fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

fn join(dir: &str, name: &str) -> String {
    crate::repo::tree::join(dir, name)
}

/// Reject paths no filesystem would hand us, and `.zarrfs`, which is the
/// mount's control directory.
pub(super) fn check_path(path: &str) -> Result<()> {
    let bad = path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
        || path.contains('\0');
    if path.is_empty() {
        return Ok(());
    }
    if bad {
        return Err(SessionError::Invalid(format!(
            "'{path}' is not a valid path in the repository"
        )));
    }
    if path == ".zarrfs" || path.starts_with(".zarrfs/") {
        return Err(SessionError::Invalid(format!(
            "'{path}': .zarrfs is the mount's control directory and cannot be stored"
        )));
    }
    Ok(())
}

impl Session {
    /// Whether the journal hides the base below `path`: an ancestor (or,
    /// with `include_self`, the path itself) is a whiteout, a file, or a
    /// directory that replaced the base's.
    pub(super) fn base_hidden(&self, path: &str, include_self: bool) -> Result<bool> {
        let hidden_by = |q: &str| -> Result<bool> {
            Ok(matches!(
                self.journal.get(q)?,
                Some(
                    JournalEntry::Whiteout
                        | JournalEntry::File { .. }
                        | JournalEntry::Dir { opaque: true }
                )
            ))
        };
        for (i, _) in path.match_indices('/') {
            if hidden_by(&path[..i])? {
                return Ok(true);
            }
        }
        Ok(include_self && !path.is_empty() && hidden_by(path)?)
    }

    /// The base tree's entry at `path`, ignoring the journal.
    pub(super) fn base_entry(&self, path: &str) -> Result<Option<Entry>> {
        Ok(self.repo.trees().lookup(self.base_tree, path)?)
    }

    /// The base's entry at `path` if the journal does not hide it.
    fn visible_base_entry(&self, path: &str) -> Result<Option<Entry>> {
        if self.base_hidden(path, false)? {
            return Ok(None);
        }
        self.base_entry(path)
    }

    pub(super) fn find(&self, path: &str) -> Result<Option<Found>> {
        if path.is_empty() {
            return Ok(Some(Found::Dir));
        }
        for (i, _) in path.match_indices('/') {
            if let Some(JournalEntry::Whiteout | JournalEntry::File { .. }) =
                self.journal.get(&path[..i])?
            {
                return Ok(None);
            }
        }
        match self.journal.get(path)? {
            Some(JournalEntry::Whiteout) => Ok(None),
            Some(JournalEntry::File { source, mode }) => Ok(Some(Found::File { source, mode })),
            Some(JournalEntry::Dir { .. }) => Ok(Some(Found::Dir)),
            None => Ok(self.visible_base_entry(path)?.map(|e| found_of(&e))),
        }
    }

    fn attr_of(&self, found: Found) -> Result<Attr> {
        Ok(match found {
            Found::Dir => Attr {
                kind: NodeKind::Dir,
                size: 0,
                mode: DEFAULT_DIR_MODE,
                mtime: self.base_time,
            },
            Found::File {
                source: FileSource::Blob { size, .. },
                mode,
            } => Attr {
                kind: NodeKind::File,
                size,
                mode,
                mtime: self.base_time,
            },
            Found::File {
                source: FileSource::Staged(n),
                mode,
            } => {
                let meta = fs::metadata(self.staged_path(n))?;
                Attr {
                    kind: NodeKind::File,
                    size: meta.len(),
                    mode,
                    mtime: meta.modified().unwrap_or(self.base_time),
                }
            }
        })
    }

    /// What is at `path`, or `None`.
    pub fn stat(&self, path: &str) -> Result<Option<Attr>> {
        check_path(path)?;
        match self.find(path)? {
            Some(found) => Ok(Some(self.attr_of(found)?)),
            None => Ok(None),
        }
    }

    /// The entries of a directory, sorted by name.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, Attr)>> {
        self.children(dir, usize::MAX)?
            .unwrap_or_default()
            .into_iter()
            .map(|(name, found)| Ok((name, self.attr_of(found)?)))
            .collect()
    }

    /// The files of a directory and where their bytes are (a staged file
    /// or a committed object), sorted by name: what a mount reads ahead
    /// of a program that opens them one after another
    /// (`crate::fs::prefetch`), with [`Session::file_locator`]. `None` if
    /// the directory has more than `at_most` entries.
    pub fn file_sources(
        &self,
        dir: &str,
        at_most: usize,
    ) -> Result<Option<Vec<(String, FileSource)>>> {
        Ok(self.children(dir, at_most)?.map(|children| {
            children
                .into_iter()
                .filter_map(|(name, found)| match found {
                    Found::File { source, .. } => Some((name, source)),
                    Found::Dir => None,
                })
                .collect()
        }))
    }

    /// The directories in a directory, sorted by name: where a mount
    /// reading ahead looks for the directory a reader goes to next. `None`
    /// if the directory has more than `at_most` entries.
    pub fn subdirectories(&self, dir: &str, at_most: usize) -> Result<Option<Vec<String>>> {
        Ok(self.children(dir, at_most)?.map(|children| {
            children
                .into_iter()
                .filter_map(|(name, found)| matches!(found, Found::Dir).then_some(name))
                .collect()
        }))
    }

    /// Where the files of this session's view are on local disk, for a
    /// thread that does not hold the session.
    pub fn file_locator(&self) -> FileLocator {
        FileLocator {
            objects: self.repo.objects().clone(),
            staged: self.dir.join("staged"),
        }
    }

    /// Where a file's bytes are.
    fn local_path(&self, source: FileSource) -> PathBuf {
        match source {
            FileSource::Staged(n) => self.staged_path(n),
            FileSource::Blob { id, .. } => self.repo.objects().blob_path(id),
        }
    }

    /// What is in a directory of the view, by name; `None` if the base's
    /// directory or the view's has more than `at_most` entries.
    fn children(&self, dir: &str, at_most: usize) -> Result<Option<BTreeMap<String, Found>>> {
        check_path(dir)?;
        match self.find(dir)? {
            Some(Found::Dir) => {}
            Some(Found::File { .. }) => return Err(SessionError::NotADirectory(dir.to_owned())),
            None => return Err(SessionError::NotFound(dir.to_owned())),
        }
        let mut entries: BTreeMap<String, Found> = BTreeMap::new();
        if !self.base_hidden(dir, true)?
            && let Some(base) = self.base_entry(dir)?
            && base.kind == EntryKind::Dir
        {
            let Some(base_entries) = self.repo.trees().list_at_most(base.id, at_most)? else {
                return Ok(None);
            };
            for entry in base_entries {
                let found = found_of(&entry);
                entries.insert(entry.name, found);
            }
        }
        for (name, entry) in self.journal.children(dir)? {
            match entry {
                JournalEntry::Whiteout => {
                    entries.remove(&name);
                }
                JournalEntry::File { source, mode } => {
                    entries.insert(name, Found::File { source, mode });
                }
                JournalEntry::Dir { .. } => {
                    entries.insert(name, Found::Dir);
                }
            }
        }
        Ok((entries.len() <= at_most).then_some(entries))
    }

    /// Whether the directory `dir` of the view has nothing in it; cheaper
    /// than listing it, as no attributes are needed.
    pub(super) fn dir_is_empty(&self, dir: &str) -> Result<bool> {
        if self.journal.has_visible_child(dir)? {
            return Ok(false);
        }
        if self.base_hidden(dir, true)? {
            return Ok(true);
        }
        let Some(base) = self.base_entry(dir)?.filter(|e| e.kind == EntryKind::Dir) else {
            return Ok(true);
        };
        // Only whiteouts are in the journal here: the base's entries must
        // all be among them.
        let journal = self.journal.children(dir)?;
        let whiteouts: std::collections::HashSet<&str> =
            journal.iter().map(|(name, _)| name.as_str()).collect();
        Ok(self
            .repo
            .trees()
            .list(base.id)?
            .iter()
            .all(|entry| whiteouts.contains(entry.name.as_str())))
    }

    fn require_dir(&self, dir: &str) -> Result<()> {
        match self.find(dir)? {
            Some(Found::Dir) => Ok(()),
            Some(Found::File { .. }) => Err(SessionError::NotADirectory(dir.to_owned())),
            None => Err(SessionError::NotFound(dir.to_owned())),
        }
    }

    fn new_staged_file(&mut self) -> Result<(u64, File)> {
        Ok(self.staged.take()?)
    }

    /// Open a file for reading.
    pub fn open_read(&self, path: &str) -> Result<ReadSource> {
        check_path(path)?;
        let origin = match self.find(path)? {
            None => return Err(SessionError::NotFound(path.to_owned())),
            Some(Found::Dir) => return Err(SessionError::IsADirectory(path.to_owned())),
            Some(Found::File { source, .. }) => source,
        };
        let file = File::open(self.local_path(origin))?;
        let size = match origin {
            FileSource::Staged(_) => file.metadata()?.len(),
            FileSource::Blob { size, .. } => size,
        };
        Ok(ReadSource { file, size, origin })
    }

    /// A staged file opened for reading and writing, for the kernel to
    /// serve a path's I/O directly (FUSE passthrough).
    pub fn open_staged_read_write(&self, staged: u64) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.staged_path(staged))
    }

    /// A whole file's bytes.
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let mut source = self.open_read(path)?;
        let mut bytes = Vec::with_capacity(source.size as usize);
        io::Read::read_to_end(&mut source.file, &mut bytes)?;
        Ok(bytes)
    }

    /// Open a file for writing, copying a committed (or sealed) file into
    /// the staging area first (not its bytes, if `truncate`).
    pub fn open_write(&mut self, path: &str, truncate: bool) -> Result<StagedFile> {
        check_path(path)?;
        let (staged, file) = match self.find(path)? {
            None => return Err(SessionError::NotFound(path.to_owned())),
            Some(Found::Dir) => return Err(SessionError::IsADirectory(path.to_owned())),
            Some(Found::File {
                source: FileSource::Staged(n),
                mode,
            }) => {
                if self.seals.open_for_writing(n) {
                    // Its inode is an object now, which must not change.
                    self.copy_up(path, &self.staged_path(n), mode, truncate)?
                } else {
                    let file = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(self.staged_path(n))?;
                    if truncate {
                        file.set_len(0)?;
                    }
                    (n, file)
                }
            }
            Some(Found::File {
                source: FileSource::Blob { id, .. },
                mode,
            }) => self.copy_up(path, &self.repo.objects().blob_path(id), mode, truncate)?,
        };
        *self.writers.entry(staged).or_default() += 1;
        Ok(StagedFile {
            staged,
            file: Arc::new(file),
        })
    }

    /// Give `path` a new staged file holding the bytes of `from` (none if
    /// `truncate`).
    fn copy_up(
        &mut self,
        path: &str,
        from: &std::path::Path,
        mode: u32,
        truncate: bool,
    ) -> Result<(u64, File)> {
        let (n, file) = self.new_staged_file()?;
        if !truncate {
            io::copy(&mut File::open(from)?, &mut &file)?;
        }
        self.journal.insert(
            path,
            JournalEntry::File {
                source: FileSource::Staged(n),
                mode,
            },
        )?;
        Ok((n, file))
    }

    /// A write handle closed. The file's last one queues it for sealing.
    pub fn release_write(&mut self, handle: &StagedFile) {
        let staged = handle.staged;
        if let Some(count) = self.writers.get_mut(&staged) {
            *count -= 1;
            if *count == 0 {
                self.writers.remove(&staged);
                let size = || handle.file.metadata().map_or(u64::MAX, |m| m.len());
                self.seals.queue(staged, size);
            }
        }
    }

    /// Create an empty file and open it for writing.
    pub fn create(&mut self, path: &str, mode: u32) -> Result<StagedFile> {
        check_path(path)?;
        self.require_dir(parent_of(path))?;
        if self.find(path)?.is_some() {
            return Err(SessionError::Exists(path.to_owned()));
        }
        let (staged, file) = self.new_staged_file()?;
        self.journal.insert(
            path,
            JournalEntry::File {
                source: FileSource::Staged(staged),
                mode: mode & 0o7777,
            },
        )?;
        *self.writers.entry(staged).or_default() += 1;
        Ok(StagedFile {
            staged,
            file: Arc::new(file),
        })
    }

    /// Replace a file's content (creating it and its parent directories
    /// if needed), as a key-value store would.
    pub fn write_file(&mut self, path: &str, bytes: &[u8]) -> Result<()> {
        check_path(path)?;
        let mut dir = String::new();
        for component in parent_of(path).split('/').filter(|c| !c.is_empty()) {
            dir = join(&dir, component);
            if self.find(&dir)?.is_none() {
                self.mkdir(&dir)?;
            }
        }
        let handle = match self.find(path)? {
            Some(_) => self.open_write(path, true)?,
            None => self.create(path, 0o644)?,
        };
        let result = (&*handle.file).write_all(bytes);
        self.release_write(&handle);
        Ok(result?)
    }

    pub fn truncate(&mut self, path: &str, size: u64) -> Result<()> {
        let handle = self.open_write(path, size == 0)?;
        let result = handle.file.set_len(size);
        self.release_write(&handle);
        Ok(result?)
    }

    /// Take `path` out of the view: a whiteout if the base has it,
    /// otherwise just forget the journal's entries.
    fn remove_path(&mut self, path: &str) -> Result<()> {
        self.journal.remove_below(path)?;
        if self.visible_base_entry(path)?.is_some() {
            self.journal.insert(path, JournalEntry::Whiteout)?;
        } else {
            self.journal.remove(path)?;
        }
        Ok(())
    }

    pub fn unlink(&mut self, path: &str) -> Result<()> {
        check_path(path)?;
        match self.find(path)? {
            None => Err(SessionError::NotFound(path.to_owned())),
            Some(Found::Dir) => Err(SessionError::IsADirectory(path.to_owned())),
            Some(Found::File { .. }) => self.remove_path(path),
        }
    }

    pub fn mkdir(&mut self, path: &str) -> Result<()> {
        check_path(path)?;
        if path.is_empty() {
            return Err(SessionError::Exists("/".into()));
        }
        self.require_dir(parent_of(path))?;
        if self.find(path)?.is_some() {
            return Err(SessionError::Exists(path.to_owned()));
        }
        let base = self.base_entry_whited_out(path)?;
        self.put_dir_over_base(path, base)
    }

    /// What the base has at `path` if the journal removed it (a whiteout
    /// is left only where the base has something): the cheap way for a
    /// path the view has nothing at, which most often the base lacks too.
    fn base_entry_whited_out(&self, path: &str) -> Result<Option<Entry>> {
        if self.journal.get(path)? == Some(JournalEntry::Whiteout) {
            self.visible_base_entry(path)
        } else {
            Ok(None)
        }
    }

    /// Record the directory at `path`, whose contents the journal holds
    /// in full, over `base`, what the base has there, so that the base
    /// shows nothing below it that the journal lacks. Over a base
    /// directory it stays a directory with a whiteout for each base entry
    /// it lacks (a directory put back as it was, by `mkdir` and rewriting
    /// or by renaming it away and back, then is no change, and one with
    /// some files rewritten changes only those); over a base file it
    /// replaces the file and hides the base below.
    fn put_dir_over_base(&mut self, path: &str, base: Option<Entry>) -> Result<()> {
        let opaque = base.as_ref().is_some_and(|b| b.kind != EntryKind::Dir);
        self.journal.insert(path, JournalEntry::Dir { opaque })?;
        let Some(base) = base.filter(|b| b.kind == EntryKind::Dir) else {
            return Ok(());
        };
        for entry in self.repo.trees().list(base.id)? {
            let child = join(path, &entry.name);
            match self.journal.get(&child)? {
                None => self.journal.insert(&child, JournalEntry::Whiteout)?,
                Some(JournalEntry::Dir { .. }) => self.put_dir_over_base(&child, Some(entry))?,
                Some(JournalEntry::File { .. } | JournalEntry::Whiteout) => {}
            }
        }
        Ok(())
    }

    pub fn rmdir(&mut self, path: &str) -> Result<()> {
        check_path(path)?;
        if path.is_empty() {
            return Err(SessionError::Busy(
                "the mount root cannot be removed".into(),
            ));
        }
        match self.find(path)? {
            None => Err(SessionError::NotFound(path.to_owned())),
            Some(Found::File { .. }) => Err(SessionError::NotADirectory(path.to_owned())),
            Some(Found::Dir) => {
                if !self.list(path)?.is_empty() {
                    return Err(SessionError::NotEmpty(path.to_owned()));
                }
                self.remove_path(path)
            }
        }
    }

    /// Every file and directory below `dir`, parents before children.
    fn subtree(&self, dir: &str) -> Result<Vec<(String, Found)>> {
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            let at = if rel.is_empty() {
                dir.to_owned()
            } else {
                join(dir, &rel)
            };
            for (name, attr) in self.list(&at)? {
                let child = join(&rel, &name);
                if attr.kind == NodeKind::Dir {
                    out.push((child.clone(), Found::Dir));
                    stack.push(child);
                } else if let Some(found) = self.find(&join(dir, &child))? {
                    out.push((child, found));
                }
            }
        }
        Ok(out)
    }

    /// Move `from` to `to`, replacing a file or empty directory there.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        check_path(from)?;
        check_path(to)?;
        if from.is_empty() || to.is_empty() {
            return Err(SessionError::Busy(
                "the mount root cannot be renamed".into(),
            ));
        }
        let source = self
            .find(from)?
            .ok_or_else(|| SessionError::NotFound(from.to_owned()))?;
        self.require_dir(parent_of(to))?;
        if from == to {
            return Ok(());
        }
        if to.starts_with(&format!("{from}/")) {
            return Err(SessionError::Invalid(format!(
                "cannot move '{from}' into itself ('{to}')"
            )));
        }
        match (source, self.find(to)?) {
            (Found::File { .. }, Some(Found::Dir)) => {
                return Err(SessionError::IsADirectory(to.to_owned()));
            }
            (Found::Dir, Some(Found::File { .. })) => {
                return Err(SessionError::NotADirectory(to.to_owned()));
            }
            (Found::Dir, Some(Found::Dir)) => {
                if !self.list(to)?.is_empty() {
                    return Err(SessionError::NotEmpty(to.to_owned()));
                }
                self.remove_path(to)?;
            }
            (Found::File { .. }, Some(Found::File { .. })) | (_, None) => {}
        }
        match source {
            Found::File { source, mode } => {
                self.journal
                    .insert(to, JournalEntry::File { source, mode })?;
                self.remove_path(from)?;
                if let FileSource::Staged(n) = source {
                    self.seals.renamed(n);
                }
            }
            Found::Dir => {
                let below = self.subtree(from)?;
                let base = self.base_entry_whited_out(to)?;
                for (rel, found) in below {
                    let entry = match found {
                        Found::File { source, mode } => JournalEntry::File { source, mode },
                        Found::Dir => JournalEntry::Dir { opaque: false },
                    };
                    self.journal.insert(&join(to, &rel), entry)?;
                }
                self.put_dir_over_base(to, base)?;
                self.remove_path(from)?;
            }
        }
        Ok(())
    }

    /// A second name for a file. The repository has no hard links, so the
    /// new name is an independent copy: later writes to one name are not
    /// seen through the other.
    pub fn link(&mut self, from: &str, to: &str) -> Result<()> {
        check_path(from)?;
        check_path(to)?;
        self.require_dir(parent_of(to))?;
        if self.find(to)?.is_some() {
            return Err(SessionError::Exists(to.to_owned()));
        }
        let (source, mode) = match self.find(from)? {
            None => return Err(SessionError::NotFound(from.to_owned())),
            Some(Found::Dir) => {
                return Err(SessionError::Invalid(format!(
                    "'{from}' is a directory; directories cannot be linked"
                )));
            }
            Some(Found::File { source, mode }) => (source, mode),
        };
        let source = match source {
            FileSource::Staged(n) => {
                let (copy, file) = self.new_staged_file()?;
                io::copy(&mut File::open(self.staged_path(n))?, &mut &file)?;
                FileSource::Staged(copy)
            }
            blob => blob,
        };
        self.journal
            .insert(to, JournalEntry::File { source, mode })?;
        Ok(())
    }

    /// chmod. Directories have no mode of their own in a repository, so
    /// a directory's mode change is accepted and not kept.
    pub fn set_mode(&mut self, path: &str, mode: u32) -> Result<()> {
        check_path(path)?;
        match self.find(path)? {
            None => Err(SessionError::NotFound(path.to_owned())),
            Some(Found::Dir) => Ok(()),
            Some(Found::File { source, .. }) => {
                self.journal.insert(
                    path,
                    JournalEntry::File {
                        source,
                        mode: mode & 0o7777,
                    },
                )?;
                Ok(())
            }
        }
    }

    /// Set a file's modification time. Kept for files written in this
    /// session; committed files show their commit's time.
    pub fn set_mtime(&mut self, path: &str, mtime: SystemTime) -> Result<()> {
        check_path(path)?;
        match self.find(path)? {
            None => Err(SessionError::NotFound(path.to_owned())),
            Some(Found::File {
                source: FileSource::Staged(n),
                ..
            }) => {
                let file = OpenOptions::new().write(true).open(self.staged_path(n))?;
                file.set_modified(mtime)?;
                Ok(())
            }
            Some(_) => Ok(()),
        }
    }

    /// Make a file's bytes and the session's journal durable.
    pub fn fsync(&mut self, path: &str) -> Result<()> {
        check_path(path)?;
        if let Some(Found::File {
            source: FileSource::Staged(n),
            ..
        }) = self.find(path)?
        {
            File::open(self.staged_path(n))?.sync_all()?;
            crate::storage::sync_dir(&self.dir.join("staged"))?;
        }
        self.journal.flush()?;
        Ok(())
    }
}

fn found_of(entry: &Entry) -> Found {
    match entry.kind {
        EntryKind::Dir => Found::Dir,
        EntryKind::File => Found::File {
            source: FileSource::Blob {
                id: entry.id,
                size: entry.size,
            },
            mode: entry.mode,
        },
    }
}
