//! Directory listings: opendir and readdir over the view, the control
//! directory, the lists of branches, tags and commits, and the history
//! trees under them.
//!
//! A listing is taken at `opendir` and again when a reader goes back to
//! offset 0 (`rewinddir`); between the two, readers page through that
//! snapshot, so that a directory changed while it is read is neither
//! skipped nor repeated.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::control::{self, ControlFile, Node, RefKind};
use super::core::{DirEntry, Fs, FsError, FsResult, Meta, err, lock};
use super::handles::Handle;
use super::inodes::ROOT_INO;
use crate::repo::EntryKind;
use crate::session::NodeKind;

impl Fs {
    /// The names of a ref kind's directory (`.zarrfs/branches` ...).
    fn ref_names(&self, kind: RefKind) -> FsResult<Vec<String>> {
        let refs = self.repo.refs();
        Ok(match kind {
            RefKind::Branches => refs.branches()?.into_iter().map(|(n, _)| n).collect(),
            RefKind::Tags => refs.tags()?.into_iter().map(|(n, _)| n).collect(),
            RefKind::Commits => {
                let start = control::log_start(&self.session_read())?;
                let mut ids = Vec::new();
                for entry in self.repo.log(start).take(control::COMMITS_LISTED) {
                    ids.push(entry?.0.to_hex());
                }
                ids
            }
        })
    }

    /// The entries of a directory, "." and ".." first.
    fn listing(&self, ino: u64) -> FsResult<Vec<DirEntry>> {
        let path = self.path_of(ino)?;
        let node = control::classify(&path).ok_or(FsError(libc::ENOENT))?;
        let mut children: Vec<(String, Meta)> = Vec::new();
        match node {
            Node::View(p) => {
                for (name, a) in self.session_read().list(p)? {
                    children.push((
                        name,
                        Meta {
                            dir: a.kind == NodeKind::Dir,
                            size: a.size,
                            perm: a.mode & 0o7777,
                            mtime: a.mtime,
                        },
                    ));
                }
                // `.zarrfs` is reachable by name but not listed, as ZFS
                // hides `.zfs`: `cp -r`, `rsync`, `tar` and `du` would
                // otherwise walk into every commit's tree, and Zarr
                // clients would see a node that is not theirs.
            }
            Node::ControlDir => {
                for file in ControlFile::ALL {
                    children.push((file.name().to_owned(), Meta::control(file)));
                }
                for kind in RefKind::ALL {
                    children.push((kind.name().to_owned(), Meta::dir(0o755, self.started)));
                }
            }
            Node::Refs(kind) => {
                for name in self.ref_names(kind)? {
                    if let Some(meta) = self.history_meta(kind, &name, "")? {
                        children.push((name, meta));
                    }
                }
            }
            Node::History { kind, name, path } => {
                let (entry, mtime) = self
                    .history_entry(kind, name, path)?
                    .ok_or(FsError(libc::ENOENT))?;
                if entry.kind != EntryKind::Dir {
                    return err(libc::ENOTDIR);
                }
                for child in self.repo.trees().list(entry.id)? {
                    let meta = Meta::history(&child, mtime);
                    children.push((child.name, meta));
                }
            }
            Node::Control(_) => return err(libc::ENOTDIR),
        }
        let own = self.meta(&path)?.unwrap_or(Meta::dir(0o755, self.started));
        let parent_path = control::parent(&path).to_owned();
        let mut out = Vec::with_capacity(children.len() + 2);
        // Every number the listing shows is pinned until the listing is
        // dropped (releasedir, rewinddir): see `super::inodes`.
        let mut inodes = lock(&self.inodes);
        inodes.open(ino);
        let parent_ino = if ino == ROOT_INO {
            inodes.open(ROOT_INO);
            ROOT_INO
        } else {
            inodes.pin(&parent_path, true)
        };
        out.push(DirEntry {
            name: ".".into(),
            attr: self.attr(ino, own),
        });
        out.push(DirEntry {
            name: "..".into(),
            attr: self.attr(parent_ino, Meta::dir(0o755, own.mtime)),
        });
        for (name, meta) in children {
            let child_ino = inodes.pin(&control::join(&path, &name), meta.dir);
            out.push(DirEntry {
                name,
                attr: self.attr(child_ino, meta),
            });
        }
        Ok(out)
    }

    /// Let go of the numbers a listing pinned.
    pub(super) fn unpin(&self, entries: &[DirEntry]) {
        let mut inodes = lock(&self.inodes);
        for entry in entries {
            inodes.close(entry.attr.ino.0);
        }
    }

    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let entries = self.listing(ino)?;
        Ok(self.insert_handle(Handle::Dir {
            ino,
            entries: Mutex::new(entries),
            fresh: AtomicBool::new(true),
        }))
    }

    /// The entries from `offset` on (an entry's offset cookie is its index
    /// plus one). Reading from offset 0 again lists afresh (rewinddir).
    pub fn readdir(&self, fh: u64, offset: u64) -> FsResult<Vec<(u64, DirEntry)>> {
        let handle = self.handle(fh)?;
        let Handle::Dir {
            ino,
            entries,
            fresh,
        } = &*handle
        else {
            return err(libc::ENOTDIR);
        };
        let mut entries = lock(entries);
        if offset == 0 && !fresh.swap(false, Ordering::Relaxed) {
            let old = std::mem::replace(&mut *entries, self.listing(*ino)?);
            self.unpin(&old);
        }
        fresh.store(false, Ordering::Relaxed);
        Ok(entries
            .iter()
            .enumerate()
            .skip(offset as usize)
            .map(|(i, e)| (i as u64 + 1, e.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    //! Listings, driven directly without a kernel.

    use super::super::testing::*;
    use super::*;

    #[test]
    fn the_root_hides_the_control_directory() {
        let (_dir, fs) = fs();
        fs.mkdir(ROOT_INO, name("g")).unwrap();
        write_file(&fs, "g", "f", b"data");
        assert_eq!(names(&fs, ""), [".", "..", "g"]);
        assert_eq!(names(&fs, "g"), [".", "..", "f"]);
        let listed = names(&fs, ".zarrfs");
        for expected in [
            "status", "commit", "log.json", "branches", "tags", "commits",
        ] {
            assert!(listed.iter().any(|n| n == expected), "{listed:?}");
        }
    }

    #[test]
    fn rewinding_lists_afresh() {
        let (_dir, fs) = fs();
        let fh = fs.opendir(ROOT_INO).unwrap();
        write_file(&fs, "", "late", b"");
        let first: Vec<String> = fs
            .readdir(fh, 0)
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.name)
            .collect();
        assert_eq!(first, [".", ".."], "the snapshot taken at opendir");
        let again: Vec<String> = fs
            .readdir(fh, 0)
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.name)
            .collect();
        assert_eq!(again, [".", "..", "late"]);
        assert_eq!(fs.readdir(fh, 2).unwrap()[0].0, 3, "cookies are index + 1");
        fs.release(fh);
    }

    #[test]
    fn history_trees_list_branches_and_their_files() {
        let (_dir, fs) = fs();
        fs.mkdir(ROOT_INO, name("g")).unwrap();
        write_file(&fs, "g", "f", b"1");
        control(&fs, "commit", "one\n").unwrap();
        fs.mkdir(ino(&fs, ".zarrfs/branches").unwrap(), name("dev"))
            .unwrap();
        assert_eq!(names(&fs, ".zarrfs/branches"), [".", "..", "dev", "main"]);
        assert_eq!(names(&fs, ".zarrfs/branches/dev/g"), [".", "..", "f"]);
        let f = fs
            .lookup(ino(&fs, ".zarrfs/branches/dev/g").unwrap(), name("f"))
            .unwrap();
        assert_eq!(f.perm & 0o222, 0, "history files are read-only");
        assert_eq!(
            fs.opendir(ino(&fs, ".zarrfs/branches/dev/g/f").unwrap()),
            Err(FsError(libc::ENOTDIR))
        );
    }
}
