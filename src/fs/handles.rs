//! Open files: the handle table and open, create, read, write, release
//! and fsync.
//!
//! A handle is what `open`, `create` or `opendir` gave the kernel: a
//! read-only file (of the view or of a history tree), a write handle on
//! a staged file of the session, a control file, or a directory listing.
//!
//! A write handle outlives the view it was opened in: after a commit,
//! checkout or discard replaced the view, its next write (or read,
//! truncate, fsync) re-opens its path in the new view, copying it up
//! there, so that no write ever reaches bytes that were committed. The
//! epoch lock (see `super::core`) is held shared for the duration of each
//! write, so that a commit never consumes a staged file mid-write.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLockReadGuard};

use fuser::FileAttr;

use super::control::{self, ControlFile, Node};
use super::control_output::ControlOutput;
use super::core::{DirEntry, Fs, FsError, FsResult, err, lock};
use super::passthrough::{BackingCandidate, BackingKey};
use crate::repo::EntryKind;
use crate::session::{FileSource, SessionError, StagedFile};

/// What an open handle is.
#[derive(Debug)]
pub(super) enum Handle {
    /// A view file opened read-only, or a file of a history tree.
    Read { ino: u64, file: File },
    /// A view file opened for writing.
    Write {
        ino: u64,
        append: bool,
        state: Mutex<WriteState>,
    },
    /// A control file: reads come from `content`, made at the first read
    /// and again at each read from offset 0.
    Control {
        ino: u64,
        file: ControlFile,
        content: Mutex<Option<ControlOutput>>,
    },
    /// A directory: its listing, taken at opendir and at rewinddir.
    Dir {
        ino: u64,
        entries: Mutex<Vec<DirEntry>>,
        fresh: AtomicBool,
    },
}

impl Handle {
    /// The inode it was opened on, which it holds in the inode table.
    fn ino(&self) -> u64 {
        match self {
            Handle::Read { ino, .. }
            | Handle::Write { ino, .. }
            | Handle::Control { ino, .. }
            | Handle::Dir { ino, .. } => *ino,
        }
    }
}

#[derive(Debug)]
pub(super) struct WriteState {
    staged: StagedFile,
    /// The view generation the staged file belongs to.
    generation: u64,
}

/// How a file was opened, as the kernel should treat it.
#[derive(Clone, Debug)]
pub struct Opened {
    pub fh: u64,
    /// Bypass the page cache (control files, whose content is made per
    /// read).
    pub direct_io: bool,
    /// The file the kernel may do this handle's I/O on itself (FUSE
    /// passthrough), if any.
    pub backing: Option<BackingCandidate>,
}

/// The backing of a write handle: its staged file, as it is.
fn staged_backing(staged: &StagedFile, generation: u64) -> BackingCandidate {
    BackingCandidate {
        key: BackingKey::Staged {
            generation,
            staged: staged.staged,
        },
        file: staged.file.clone(),
    }
}

/// Read up to `size` bytes at `offset`, short only at end of file.
fn read_full(file: &File, offset: u64, size: u32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size as usize];
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

impl Fs {
    /// Add a handle to the table, holding its inode until release.
    pub(super) fn insert_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.inodes).open(handle.ino());
        lock(&self.handles).insert(fh, Arc::new(handle));
        fh
    }

    pub(super) fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        lock(&self.handles)
            .get(&fh)
            .cloned()
            .ok_or(FsError(libc::EBADF))
    }

    /// An open handle on `ino`, if any. The kernel sends `fstat` as a
    /// GETATTR without the file's handle, so an inode whose path is gone
    /// (unlinked, or detached by a view switch) is answered through this.
    pub(super) fn handle_on(&self, ino: u64) -> Option<u64> {
        lock(&self.handles)
            .iter()
            .find(|(_, handle)| handle.ino() == ino && !matches!(&***handle, Handle::Dir { .. }))
            .map(|(fh, _)| *fh)
    }

    /// The metadata of the file an open handle reads or writes, for
    /// `fstat` on a file that was unlinked while open.
    pub(super) fn handle_file_metadata(&self, fh: u64) -> FsResult<Option<std::fs::Metadata>> {
        let Ok(handle) = self.handle(fh) else {
            return Ok(None);
        };
        Ok(match &*handle {
            Handle::Read { file, .. } => Some(file.metadata()?),
            Handle::Write { state, .. } => Some(lock(state).staged.file.metadata()?),
            _ => None,
        })
    }

    /// ftruncate: truncate through a write handle, in the view it writes
    /// to now. `false` if `fh` is not a write handle.
    pub(super) fn truncate_through_handle(&self, fh: u64, size: u64) -> FsResult<bool> {
        let Ok(handle) = self.handle(fh) else {
            return Ok(false);
        };
        if !matches!(&*handle, Handle::Write { .. }) {
            return Ok(false);
        }
        let (_epoch, file) = self.current_write_file(&handle)?;
        file.set_len(size)?;
        Ok(true)
    }

    /// The staged file a write handle writes to now, re-opened in the
    /// current view if the view was replaced since (copy-up there), with
    /// the epoch held shared until the caller's write is done.
    fn current_write_file(
        &self,
        handle: &Handle,
    ) -> FsResult<(RwLockReadGuard<'_, u64>, Arc<File>)> {
        let Handle::Write { ino, state, .. } = handle else {
            return err(libc::EBADF);
        };
        let epoch = self.epoch_read();
        let mut state = lock(state);
        if state.generation != *epoch {
            let path = self.path_of(*ino).map_err(|_| FsError(libc::ESTALE))?;
            let Some(Node::View(p)) = control::classify(&path) else {
                return err(libc::ESTALE);
            };
            let staged = self.session_write().open_write(p, false)?;
            // The old staged file belonged to a session that is gone:
            // nothing to release there.
            state.staged = staged;
            state.generation = *epoch;
        }
        let file = state.staged.file.clone();
        Ok((epoch, file))
    }

    /// A commit carried staged files open for writing into the new
    /// session: the write handles on them follow, as they are (same file,
    /// new number), instead of re-opening.
    pub(super) fn carry_write_handles(
        &self,
        old_generation: u64,
        new_generation: u64,
        carried: &[(u64, u64)],
    ) {
        for handle in lock(&self.handles).values() {
            if let Handle::Write { state, .. } = &**handle {
                let mut state = lock(state);
                if state.generation != old_generation {
                    continue;
                }
                if let Some(&(_, new)) = carried.iter().find(|(old, _)| *old == state.staged.staged)
                {
                    state.staged.staged = new;
                    state.generation = new_generation;
                }
            }
        }
        self.backings
            .carry_over(old_generation, new_generation, carried);
    }

    /// After the view was replaced: paths whose inode the kernel still
    /// holds with a backing of the old view get new numbers, so that their
    /// next opens get inodes of their own (see `super::passthrough`).
    pub(super) fn detach_stale_inodes(&self, generation: u64) {
        let stale = self.backings.stale_inodes(generation);
        let mut inodes = lock(&self.inodes);
        for ino in stale {
            inodes.detach(ino);
        }
    }

    /// Whether a write open or truncate of `ino` (view path `p`) can
    /// share the file the kernel holds for it: only if that is the staged
    /// file the write would go to. Where the kernel holds committed bytes
    /// (a reader has them open through passthrough), the path moves to a
    /// new inode first (see [`Fs::look_up_again`]), whose write copies
    /// the bytes up while the reader keeps them.
    pub(super) fn check_write_backing(&self, ino: u64, p: &str, generation: u64) -> FsResult<()> {
        let retrying = self.backings.take_retry(ino);
        // A release in flight counts: giving the path a new number costs
        // less than waiting for it.
        let Some(held) = self.backings.key_of(ino) else {
            return Ok(());
        };
        let writes_to = self
            .session_read()
            .staged_in_place(p)?
            .map(|staged| BackingKey::Staged { generation, staged });
        tracing::debug!(ino, path = p, ?held, wanted = ?writes_to, "write open beside a backing");
        if Some(held) != writes_to {
            return Err(self.look_up_again(ino, retrying));
        }
        Ok(())
    }

    /// The kernel holds another file for `ino` than an open of its path
    /// needs: give the path a new number and answer ESTALE, on which the
    /// kernel looks the path up again and retries once (as it does for
    /// NFS), reaching the new inode; whoever has the old one open keeps
    /// its bytes. If this is that retry (`retrying`), meeting a backing
    /// again (a reader opened the new inode in between), it fails with
    /// ETXTBSY.
    pub(super) fn look_up_again(&self, ino: u64, retrying: bool) -> FsError {
        if retrying {
            return FsError(libc::ETXTBSY);
        }
        if let Some(fresh) = lock(&self.inodes).renumber(ino) {
            self.backings.expect_retry(fresh);
        }
        FsError(libc::ESTALE)
    }

    fn write_handle(&self, ino: u64, append: bool, staged: StagedFile, generation: u64) -> u64 {
        self.insert_handle(Handle::Write {
            ino,
            append,
            state: Mutex::new(WriteState { staged, generation }),
        })
    }

    pub fn open(&self, ino: u64, flags: i32) -> FsResult<Opened> {
        let path = self.path_of(ino)?;
        let writing = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let truncate = flags & libc::O_TRUNC != 0;
        match control::classify(&path) {
            None => err(libc::ENOENT),
            Some(Node::ControlDir | Node::Refs(_)) => err(libc::EISDIR),
            Some(Node::Control(file)) => {
                if writing && !file.writable() {
                    return err(libc::EACCES);
                }
                let fh = self.insert_handle(Handle::Control {
                    ino,
                    file,
                    content: Mutex::new(None),
                });
                Ok(Opened {
                    fh,
                    direct_io: true,
                    backing: None,
                })
            }
            Some(Node::History { kind, name, path }) => {
                if writing || truncate {
                    return err(libc::EROFS);
                }
                let (entry, _) = self
                    .history_entry(kind, name, path)?
                    .ok_or(FsError(libc::ENOENT))?;
                if entry.kind == EntryKind::Dir {
                    return err(libc::EISDIR);
                }
                let file = File::open(self.repo.objects().blob_path(entry.id))?;
                let backing = BackingCandidate {
                    key: BackingKey::Blob(entry.id),
                    file: Arc::new(file.try_clone()?),
                };
                Ok(Opened {
                    fh: self.insert_handle(Handle::Read { ino, file }),
                    direct_io: false,
                    backing: Some(backing),
                })
            }
            Some(Node::View(p)) => {
                if !writing {
                    let epoch = self.epoch_read();
                    let session = self.session_read();
                    let source = session.open_read(p)?;
                    let backing = match source.origin {
                        // The same file a write handle would get: one
                        // backing serves both.
                        FileSource::Staged(staged) => BackingCandidate {
                            key: BackingKey::Staged {
                                generation: *epoch,
                                staged,
                            },
                            file: Arc::new(session.open_staged_read_write(staged)?),
                        },
                        FileSource::Blob { id, .. } => BackingCandidate {
                            key: BackingKey::Blob(id),
                            file: Arc::new(source.file.try_clone()?),
                        },
                    };
                    drop(session);
                    let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
                    self.prefetch.opened(*epoch, dir, name);
                    drop(epoch);
                    return Ok(Opened {
                        fh: self.insert_handle(Handle::Read {
                            ino,
                            file: source.file,
                        }),
                        direct_io: false,
                        backing: Some(backing),
                    });
                }
                if self.options.read_only {
                    return err(libc::EROFS);
                }
                let epoch = self.epoch_read();
                self.check_write_backing(ino, p, *epoch)?;
                let staged = self.session_write().open_write(p, truncate)?;
                let backing = staged_backing(&staged, *epoch);
                let fh = self.write_handle(ino, flags & libc::O_APPEND != 0, staged, *epoch);
                Ok(Opened {
                    fh,
                    direct_io: false,
                    backing: Some(backing),
                })
            }
        }
    }

    pub fn create(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> FsResult<(FileAttr, Opened)> {
        let path = self.child_path(parent, name)?;
        if matches!(control::classify(&path), Some(Node::Control(_)) | None) {
            return err(libc::EACCES);
        }
        let p = self.view_path(&path)?;
        let epoch = self.epoch_read();
        let perm = mode & !umask & 0o7777;
        let (staged, created) = {
            let mut session = self.session_write();
            match session.create(p, perm) {
                Ok(staged) => (staged, true),
                Err(SessionError::Exists(_)) if flags & libc::O_EXCL == 0 => {
                    (session.open_write(p, flags & libc::O_TRUNC != 0)?, false)
                }
                Err(e) => return Err(e.into()),
            }
        };
        let generation = *epoch;
        drop(epoch);
        let entry = if created {
            self.entry_of_new_file(&path, perm, &staged.file)
        } else {
            self.entry_of_path(&path)
        };
        let attr = match entry {
            Ok(attr) => attr,
            Err(e) => {
                self.session_write().release_write(&staged);
                return Err(e);
            }
        };
        let backing = staged_backing(&staged, generation);
        let fh = self.write_handle(attr.ino.0, flags & libc::O_APPEND != 0, staged, generation);
        Ok((
            attr,
            Opened {
                fh,
                direct_io: false,
                backing: Some(backing),
            },
        ))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let handle = self.handle(fh)?;
        match &*handle {
            Handle::Read { file, .. } => Ok(read_full(file, offset, size)?),
            Handle::Write { .. } => {
                let (_epoch, file) = self.current_write_file(&handle)?;
                Ok(read_full(&file, offset, size)?)
            }
            Handle::Control { file, content, .. } => {
                let mut content = lock(content);
                let content = match &mut *content {
                    Some(made) if offset > 0 => made,
                    content => content.insert(self.control_content(*file)?),
                };
                Ok(content.read_at(offset, size)?)
            }
            Handle::Dir { .. } => err(libc::EISDIR),
        }
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let handle = self.handle(fh)?;
        match &*handle {
            Handle::Write { append, .. } => {
                let (_epoch, file) = self.current_write_file(&handle)?;
                let offset = if *append {
                    file.metadata()?.len()
                } else {
                    offset
                };
                file.write_all_at(data, offset)?;
                Ok(data.len() as u32)
            }
            Handle::Control { file, .. } => {
                self.control_write(*file, data)?;
                Ok(data.len() as u32)
            }
            _ => err(libc::EBADF),
        }
    }

    /// release and releasedir: the handle lets go of its staged file,
    /// its inode, and for a directory the numbers its listing showed.
    pub fn release(&self, fh: u64) {
        let Some(handle) = lock(&self.handles).remove(&fh) else {
            return;
        };
        match &*handle {
            Handle::Write { state, .. } => {
                let epoch = self.epoch_read();
                let state = lock(state);
                // A handle of an older view holds nothing in this session.
                if state.generation == *epoch {
                    self.session_write().release_write(&state.staged);
                }
            }
            Handle::Dir { entries, .. } => self.unpin(&lock(entries)),
            Handle::Read { .. } | Handle::Control { .. } => {}
        }
        lock(&self.inodes).close(handle.ino());
    }

    pub fn fsync(&self, ino: u64, fh: u64) -> FsResult<()> {
        let handle = self.handle(fh)?;
        match &*handle {
            Handle::Write { .. } => {
                let (_epoch, file) = self.current_write_file(&handle)?;
                file.sync_all()?;
            }
            Handle::Control { .. } | Handle::Read { .. } | Handle::Dir { .. } => {}
        }
        let path = lock(&self.inodes).path(ino);
        let mut session = self.session_write();
        match path.as_deref().and_then(control::classify) {
            Some(Node::View(p)) if session.stat(p).ok().flatten().is_some() => session.fsync(p)?,
            _ => session.flush()?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Open files, driven directly without a kernel.

    use super::super::testing::*;
    use super::*;

    #[test]
    fn a_write_handle_reopens_in_the_new_view() {
        let (_dir, fs) = fs();
        write_file(&fs, "", "f", b"one");
        let opened = fs.open(ino(&fs, "f").unwrap(), libc::O_RDWR).unwrap();
        fs.write(opened.fh, 3, b" two").unwrap();
        control(&fs, "commit", "c1\n").unwrap();
        let c1 = String::from_utf8(read_file(&fs, ".zarrfs/commit").unwrap()).unwrap();
        fs.write(opened.fh, 7, b" three").unwrap();
        assert_eq!(fs.read(opened.fh, 0, 100).unwrap(), b"one two three");
        fs.release(opened.fh);
        assert_eq!(read_file(&fs, "f").unwrap(), b"one two three");
        assert_eq!(
            read_file(&fs, &format!(".zarrfs/commits/{}/f", c1.trim())).unwrap(),
            b"one two",
            "the committed bytes are untouched"
        );
    }

    #[test]
    fn an_unlinked_open_file_answers_fstat() {
        let (_dir, fs) = fs();
        write_file(&fs, "", "f", b"bytes");
        let f = ino(&fs, "f").unwrap();
        let opened = fs.open(f, libc::O_RDONLY).unwrap();
        fs.unlink(super::super::inodes::ROOT_INO, name("f"))
            .unwrap();
        // The kernel sends fstat without the handle: either way the open
        // file answers.
        for fh in [None, Some(opened.fh)] {
            let attr = fs.getattr(f, fh).unwrap();
            assert_eq!((attr.size, attr.nlink), (5, 0));
        }
        assert_eq!(fs.read(opened.fh, 0, 100).unwrap(), b"bytes");
        fs.release(opened.fh);
        assert_eq!(fs.getattr(f, None), Err(FsError(libc::ENOENT)));
        assert_eq!(fs.read(opened.fh, 0, 100), Err(FsError(libc::EBADF)));
    }
}
