//! Changes of names: mkdir, unlink, rmdir, rename and link on the view,
//! and the branches and tags made or deleted by `mkdir` and `rmdir` under
//! `.zarrfs/branches/` and `.zarrfs/tags/`.

use fuser::FileAttr;

use super::control::{self, Node, RefKind};
use super::core::{Fs, FsError, FsResult, err, lock};
use crate::repo::RefError;

impl Fs {
    pub fn mkdir(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<FileAttr> {
        let path = self.child_path(parent, name)?;
        match control::classify(&path) {
            Some(Node::History {
                kind: kind @ (RefKind::Branches | RefKind::Tags),
                name,
                path: "",
            }) => {
                if self.options.read_only {
                    return err(libc::EROFS);
                }
                let base = self.session_read().base();
                let refs = self.repo.refs();
                match kind {
                    RefKind::Branches => refs.create_branch(name, base)?,
                    _ => refs.create_tag(name, base)?,
                }
                tracing::info!(at = %base, "{} {name} created", kind.singular());
                return self.entry_of_path(&path);
            }
            Some(Node::View(_)) => {}
            Some(Node::History { .. } | Node::Refs(_)) => return err(libc::EROFS),
            Some(_) => return err(libc::EEXIST),
            None => return err(libc::EPERM),
        }
        let p = self.view_path(&path)?;
        self.session_write().mkdir(p)?;
        self.entry_of_path(&path)
    }

    pub fn unlink(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<()> {
        let path = self.child_path(parent, name)?;
        let p = self.view_path(&path)?;
        self.session_write().unlink(p)?;
        lock(&self.inodes).remove(&path);
        Ok(())
    }

    pub fn rmdir(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<()> {
        let path = self.child_path(parent, name)?;
        if let Some(Node::History {
            kind,
            name,
            path: "",
        }) = control::classify(&path)
        {
            return self.delete_ref(kind, name, &path);
        }
        let p = self.view_path(&path)?;
        self.session_write().rmdir(p)?;
        lock(&self.inodes).remove(&path);
        Ok(())
    }

    /// `rmdir .zarrfs/branches/NAME` deletes the branch (its commits
    /// stay), unless this mount's session is on it (EBUSY). Tags never
    /// move, nor go (EPERM); commits are history (EROFS).
    fn delete_ref(&self, kind: RefKind, name: &str, path: &str) -> FsResult<()> {
        match kind {
            RefKind::Tags => return err(libc::EPERM),
            RefKind::Commits => return err(libc::EROFS),
            RefKind::Branches if self.options.read_only => return err(libc::EROFS),
            RefKind::Branches => {}
        }
        if self.session_read().branch() == Some(name) {
            tracing::info!(branch = name, "branch not deleted: this mount is on it");
            return err(libc::EBUSY);
        }
        let tip = self.repo.branch_tip(name)?.ok_or(FsError(libc::ENOENT))?;
        match self.repo.refs().delete_branch(name) {
            Ok(()) => {}
            // It moved meanwhile: nothing was deleted; try again.
            Err(RefError::Exists(e)) => {
                tracing::info!(branch = name, "branch not deleted: {e}");
                return err(libc::EAGAIN);
            }
            Err(e) => return Err(e.into()),
        }
        lock(&self.inodes).remove(path);
        tracing::info!(branch = name, tip = %tip.commit, "branch deleted");
        Ok(())
    }

    /// rename(2), with renameat2's RENAME_NOREPLACE; RENAME_EXCHANGE and
    /// RENAME_WHITEOUT are refused (EINVAL).
    pub fn rename(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        new_parent: u64,
        new_name: &std::ffi::OsStr,
        flags: u32,
    ) -> FsResult<()> {
        if flags & !libc::RENAME_NOREPLACE != 0 {
            return err(libc::EINVAL);
        }
        let from_path = self.child_path(parent, name)?;
        let to_path = self.child_path(new_parent, new_name)?;
        let from = self.view_path(&from_path)?;
        let to = self.view_target(&to_path)?;
        {
            let mut session = self.session_write();
            if flags & libc::RENAME_NOREPLACE != 0 && session.stat(to)?.is_some() {
                return err(libc::EEXIST);
            }
            session.rename(from, to)?;
        }
        lock(&self.inodes).rename(&from_path, &to_path);
        Ok(())
    }

    /// The view path a rename or link goes to: one into `.zarrfs/` leaves
    /// the view, which is EXDEV, as between two filesystems.
    fn view_target<'a>(&self, path: &'a str) -> FsResult<&'a str> {
        match self.view_path(path) {
            Err(FsError(libc::EPERM | libc::EROFS)) => err(libc::EXDEV),
            other => other,
        }
    }

    /// link(2): the new name is a copy (the repository has no hard links).
    pub fn link(
        &self,
        ino: u64,
        new_parent: u64,
        new_name: &std::ffi::OsStr,
    ) -> FsResult<FileAttr> {
        let from_path = self.path_of(ino)?;
        let to_path = self.child_path(new_parent, new_name)?;
        let from = self.view_path(&from_path)?;
        let to = self.view_target(&to_path)?;
        self.session_write().link(from, to)?;
        self.entry_of_path(&to_path)
    }
}
