//! Helpers for the unit tests that drive [`Fs`] without a kernel.

use std::ffi::OsStr;
use std::sync::Arc;

use super::core::{Fs, FsOptions, FsResult};
use super::inodes::ROOT_INO;
use crate::repo::{DEFAULT_BRANCH, Repo};
use crate::session::{Session, SessionOptions};

/// A mount's filesystem over a fresh repository.
pub fn fs() -> (tempfile::TempDir, Fs) {
    let dir = tempfile::tempdir().unwrap();
    let repo = Arc::new(Repo::init(&dir.path().join("repo")).unwrap());
    let session = Session::start(repo, SessionOptions::new(DEFAULT_BRANCH)).unwrap();
    (dir, Fs::new(session, FsOptions::new("/nowhere")))
}

pub fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The inode of a mount path, walking from the root.
pub fn ino(fs: &Fs, path: &str) -> FsResult<u64> {
    let mut ino = ROOT_INO;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = fs.lookup(ino, name(part))?.ino.0;
    }
    Ok(ino)
}

pub fn write_file(fs: &Fs, dir: &str, file: &str, bytes: &[u8]) {
    let parent = ino(fs, dir).unwrap();
    let (_, opened) = fs
        .create(
            parent,
            name(file),
            0o644,
            0o022,
            libc::O_WRONLY | libc::O_TRUNC,
        )
        .unwrap();
    assert_eq!(fs.write(opened.fh, 0, bytes).unwrap() as usize, bytes.len());
    fs.release(opened.fh);
}

pub fn read_file(fs: &Fs, path: &str) -> FsResult<Vec<u8>> {
    let opened = fs.open(ino(fs, path)?, libc::O_RDONLY)?;
    let data = fs.read(opened.fh, 0, 1 << 20);
    fs.release(opened.fh);
    data
}

/// Write `text` to `.zarrfs/<file>` in one write.
pub fn control(fs: &Fs, file: &str, text: &str) -> FsResult<()> {
    let opened = fs.open(ino(fs, &format!(".zarrfs/{file}"))?, libc::O_WRONLY)?;
    assert!(opened.direct_io);
    let result = fs.write(opened.fh, 0, text.as_bytes());
    fs.release(opened.fh);
    result.map(|_| ())
}

/// The names a directory lists, "." and ".." first.
pub fn names(fs: &Fs, path: &str) -> Vec<String> {
    let fh = fs.opendir(ino(fs, path).unwrap()).unwrap();
    let entries = fs.readdir(fh, 0).unwrap();
    fs.release(fh);
    entries.into_iter().map(|(_, e)| e.name).collect()
}
