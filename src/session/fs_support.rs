//! What the mount needs from a session beyond the path-based API.

use std::fs;

use super::journal::FileSource;
use super::view::Found;
use super::{Result, Session};

impl Session {
    /// Stop serving the session: make its journal durable and release
    /// it. A session with nothing in its journal is removed as well, so
    /// that mounts that changed nothing leave no trace; one with changes
    /// stays to be resumed. Returns whether it was removed.
    pub fn close(mut self) -> Result<bool> {
        self.journal.flush()?;
        let empty = self.journal.is_empty();
        let dir = self.dir.clone();
        drop(self);
        if empty {
            // Only disk space is at stake if this fails.
            let _ = fs::remove_dir_all(&dir);
        }
        Ok(empty)
    }

    /// Where the bytes of the file at `path` are, if it is a file.
    pub fn file_source(&self, path: &str) -> Result<Option<FileSource>> {
        Ok(match self.find(path)? {
            Some(Found::File { source, .. }) => Some(source),
            _ => None,
        })
    }
}
