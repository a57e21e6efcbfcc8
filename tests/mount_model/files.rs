//! The same operations on real files (a mount, or a plain directory for
//! the model's own test), and the tree a directory shows.

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::model::{Node, Tree};
use super::ops::{Bytes, HANDLES, Op};

pub fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error()
        .unwrap_or_else(|| panic!("an error without an errno: {e}"))
}

/// The same operations on real files: a mount, or a plain directory for
/// the model's own test.
pub struct Files {
    root: PathBuf,
    handles: [Option<fs::File>; HANDLES],
    /// A plain directory's hard links share their file: the new name is
    /// then made a copy, as a mount's is.
    copy_links: bool,
}

impl Files {
    pub fn mount(root: &Path) -> Files {
        Files {
            root: root.to_owned(),
            handles: Default::default(),
            copy_links: false,
        }
    }

    pub fn plain(root: &Path) -> Files {
        Files {
            copy_links: true,
            ..Files::mount(root)
        }
    }

    /// Close every file held open.
    pub fn close_handles(&mut self) {
        self.handles = Default::default();
    }

    /// Apply `op`: the bytes a read returned, or the errno it failed with.
    pub fn apply(&mut self, op: &Op) -> Result<Option<Bytes>, i32> {
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
            Op::Open(slot, path) | Op::OpenRead(slot, path) => {
                self.handles[*slot] = None;
                let file = OpenOptions::new()
                    .read(true)
                    .write(matches!(op, Op::Open(..)))
                    .open(at(path))
                    .map_err(errno)?;
                // A directory opens for reading; reading it would fail so.
                if file.metadata().map_err(errno)?.is_dir() {
                    return Err(libc::EISDIR);
                }
                self.handles[*slot] = Some(file);
            }
            Op::HandleWrite(slot, offset, bytes) => {
                if let Some(file) = &self.handles[*slot] {
                    // One pwrite(2), even of nothing (which write_all_at
                    // skips): a reader's fails with EBADF.
                    let written = file.write_at(bytes, *offset).map_err(errno)?;
                    assert_eq!(written, bytes.len(), "a short pwrite");
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
pub fn read_tree(root: &Path) -> Tree {
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
