//! What the mount needs from a session beyond the path-based API.

use std::fs;

use super::journal::FileSource;
use super::view::Found;
use super::{Result, Session};

impl Session {
    /// Stop serving the session: make its journal durable and release
    /// it. A session that changes nothing is removed as well, so that
    /// mounts that changed nothing leave no trace and the next mount there
    /// starts at the tip of the branch; one with changes stays to be
    /// resumed. "Nothing" is what status and commit say: a journal whose
    /// files hold their base's bytes (a file opened for writing and left
    /// as it was, bytes written again) changes nothing. Returns whether
    /// it was removed.
    pub fn close(mut self) -> Result<bool> {
        self.journal.flush()?;
        // Should the comparison fail, the session stays: resuming it
        // loses nothing.
        let unchanged = matches!(self.has_changes(), Ok(false));
        if unchanged {
            self.remove();
        }
        Ok(unchanged)
    }

    /// Release the session and remove it from disk, journal and staged
    /// files: for a session that changes nothing.
    pub fn remove(self) {
        let dir = self.dir.clone();
        drop(self);
        // Only disk space is at stake if this fails.
        let _ = fs::remove_dir_all(&dir);
    }

    /// The staged file a write open of `path` would write in place: not
    /// a committed file's, nor a sealed one's (an object now), which the
    /// open copies up into a new staged file.
    pub fn staged_in_place(&self, path: &str) -> Result<Option<u64>> {
        Ok(match self.file_source(path)? {
            Some(FileSource::Staged(n)) if !self.seals.is_sealed(n) => Some(n),
            _ => None,
        })
    }

    /// Where the bytes of the file at `path` are, if it is a file.
    pub fn file_source(&self, path: &str) -> Result<Option<FileSource>> {
        Ok(match self.find(path)? {
            Some(Found::File { source, .. }) => Some(source),
            _ => None,
        })
    }
}
