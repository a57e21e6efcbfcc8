//! Refs: branches (mutable) and tags (immutable), moved by compare-and-swap.
//!
//! A branch is a directory of versions, `refs/branches/NAME/<seq>`, each a
//! small JSON file naming a commit (or recording the branch's deletion).
//! The current value is the highest version. Moving a branch from the
//! version it was read at, `seq`, means creating version `seq + 1` with
//! [`Storage::put_if_absent`] (for a commit, its two halves
//! [`Refs::prepare_swap`] and [`Refs::finish_swap`], so that the version is
//! synced with the commit's objects): of several processes racing, on one machine
//! or on a shared filesystem, exactly one creates it and the others learn
//! that they lost. Versions are never removed, so a stale writer can never
//! recreate one.
//!
//! A tag is one file, `refs/tags/NAME`, created once and never replaced.

use std::io;

use serde::{Deserialize, Serialize};

use crate::storage::{PreparedPut, Storage};

use super::object::{CommitId, WriteBatch};

/// One version of a branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RefRecord {
    /// The commit, or none when this version deletes the branch.
    commit: Option<CommitId>,
}

/// One stored version of a branch: its key, and the commit it names
/// (`None` for a deletion) or why it cannot be read.
pub type RefVersion = (String, Result<Option<CommitId>, String>);

/// A branch version written but not yet created (see
/// [`Refs::prepare_swap`]).
pub struct PreparedSwap {
    name: String,
    seq: u64,
    version: PreparedPut,
}

/// A branch as read: its version number and the commit it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BranchTip {
    pub seq: u64,
    pub commit: CommitId,
}

/// Check that a name can be a branch or tag: letters, digits, `.`, `_`
/// and `-`, not starting with `.` or `-`, at most 200 characters.
pub fn validate_ref_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a valid branch or tag name (use letters, digits, '.', '_' and '-', not starting with '.' or '-')"
        ))
    }
}

pub struct Refs<'a> {
    storage: &'a Storage,
}

impl<'a> Refs<'a> {
    pub fn new(storage: &'a Storage) -> Refs<'a> {
        Refs { storage }
    }

    fn branch_dir(name: &str) -> String {
        format!("refs/branches/{name}")
    }

    fn version_key(name: &str, seq: u64) -> String {
        format!("refs/branches/{name}/{seq:020}")
    }

    fn hint_key(name: &str) -> String {
        format!("refs/hints/{name}")
    }

    /// The newest version number of a branch. Versions are created one
    /// after another and never removed, so they are exactly 1..=N: probe
    /// forward from the hint left by the last writer, and fall back to
    /// listing the versions when there is no usable hint.
    fn newest_seq(&self, name: &str) -> io::Result<Option<u64>> {
        let hint = self
            .storage
            .get(&Self::hint_key(name))?
            .and_then(|b| String::from_utf8(b).ok()?.trim().parse::<u64>().ok())
            .filter(|&seq| seq > 0 && self.storage.exists(&Self::version_key(name, seq)));
        if let Some(mut seq) = hint {
            while self.storage.exists(&Self::version_key(name, seq + 1)) {
                seq += 1;
            }
            return Ok(Some(seq));
        }
        Ok(self
            .storage
            .list(&Self::branch_dir(name))?
            .iter()
            .filter_map(|v| v.parse::<u64>().ok())
            .max())
    }

    /// Remember the newest version for the next reader. Only a hint: it
    /// is not made durable, and a lost or stale one costs a few probes.
    fn leave_hint(&self, name: &str, seq: u64) {
        let _ = self
            .storage
            .put_replacing(&Self::hint_key(name), seq.to_string().as_bytes());
    }

    /// The latest version of a branch, deleted or not; `None` if the
    /// branch never existed.
    fn latest(&self, name: &str) -> io::Result<Option<(u64, RefRecord)>> {
        let Some(seq) = self.newest_seq(name)? else {
            return Ok(None);
        };
        let Some(bytes) = self.storage.get(&Self::version_key(name, seq))? else {
            return Err(io::Error::other(format!(
                "ref version {} disappeared; versions are never removed, so the repository was changed by hand",
                Self::version_key(name, seq)
            )));
        };
        let record: RefRecord = serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "ref version {} is corrupt: {e}",
                    Self::version_key(name, seq)
                ),
            )
        })?;
        Ok(Some((seq, record)))
    }

    /// The branch's current commit, or `None` if there is no such branch.
    pub fn branch(&self, name: &str) -> io::Result<Option<BranchTip>> {
        Ok(match self.latest(name)? {
            Some((
                seq,
                RefRecord {
                    commit: Some(commit),
                },
            )) => Some(BranchTip { seq, commit }),
            _ => None,
        })
    }

    /// Move the branch read at version `from_seq` to `commit`. Returns
    /// false, changing nothing, if someone moved it since. (Commits use
    /// its halves; this is their sum, for tests.)
    #[cfg(test)]
    pub fn compare_and_swap(
        &self,
        name: &str,
        from_seq: u64,
        commit: CommitId,
    ) -> io::Result<bool> {
        let mut batch = WriteBatch::default();
        let prepared = self.prepare_swap(name, from_seq, commit, &mut batch)?;
        batch.sync(self.storage)?;
        self.finish_swap(prepared)
    }

    /// A compare-and-swap of the branch in two halves, so that the new
    /// version's file is made durable with the commit it names, by one
    /// sync of `batch`, before [`Refs::finish_swap`].
    pub fn prepare_swap(
        &self,
        name: &str,
        from_seq: u64,
        commit: CommitId,
        batch: &mut WriteBatch,
    ) -> io::Result<PreparedSwap> {
        let record = RefRecord {
            commit: Some(commit),
        };
        let version = self
            .storage
            .prepare_put(&serde_json::to_vec(&record).unwrap())?;
        batch.push(version.tmp_key());
        Ok(PreparedSwap {
            name: name.to_owned(),
            seq: from_seq + 1,
            version,
        })
    }

    /// Move the branch as prepared, once the batch holding the new
    /// version is synced. Returns false, changing nothing, if someone
    /// moved it since.
    pub fn finish_swap(&self, prepared: PreparedSwap) -> io::Result<bool> {
        let PreparedSwap { name, seq, version } = prepared;
        let moved = self
            .storage
            .link_if_absent(version, &Self::version_key(&name, seq))?;
        if moved {
            self.leave_hint(&name, seq);
        }
        Ok(moved)
    }

    /// Create a branch at a commit. Fails if it exists already.
    pub fn create_branch(&self, name: &str, commit: CommitId) -> Result<(), RefError> {
        validate_ref_name(name).map_err(RefError::InvalidName)?;
        let next = match self.latest(name)? {
            Some((_, RefRecord { commit: Some(_) })) => {
                return Err(RefError::Exists(format!("branch '{name}' already exists")));
            }
            Some((seq, _)) => seq + 1,
            None => 1,
        };
        let record = RefRecord {
            commit: Some(commit),
        };
        if self.storage.put_if_absent(
            &Self::version_key(name, next),
            &serde_json::to_vec(&record).unwrap(),
        )? {
            Ok(())
        } else {
            Err(RefError::Exists(format!(
                "branch '{name}' was created by someone else just now"
            )))
        }
    }

    /// Delete a branch. Its commits stay in the repository.
    pub fn delete_branch(&self, name: &str) -> Result<(), RefError> {
        let Some((seq, RefRecord { commit: Some(_) })) = self.latest(name)? else {
            return Err(RefError::NotFound(format!("no branch named '{name}'")));
        };
        let record = RefRecord { commit: None };
        if self.storage.put_if_absent(
            &Self::version_key(name, seq + 1),
            &serde_json::to_vec(&record).unwrap(),
        )? {
            Ok(())
        } else {
            Err(RefError::Exists(format!(
                "branch '{name}' moved while it was being deleted; nothing was deleted"
            )))
        }
    }

    /// All live branches and their commits, sorted by name.
    pub fn branches(&self) -> io::Result<Vec<(String, CommitId)>> {
        let mut names = self.storage.list("refs/branches")?;
        names.sort();
        let mut out = Vec::new();
        for name in names {
            if let Some(tip) = self.branch(&name)? {
                out.push((name, tip.commit));
            }
        }
        Ok(out)
    }

    /// Every version of every branch, for fsck.
    pub fn all_branch_versions(&self) -> io::Result<Vec<RefVersion>> {
        let mut out = Vec::new();
        for name in self.storage.list("refs/branches")? {
            for version in self.storage.list(&Self::branch_dir(&name))? {
                let key = format!("{}/{version}", Self::branch_dir(&name));
                let parsed = if version.parse::<u64>().is_err() {
                    Err("the version is not a number".to_owned())
                } else {
                    match self.storage.get(&key)? {
                        Some(bytes) => serde_json::from_slice::<RefRecord>(&bytes)
                            .map(|r| r.commit)
                            .map_err(|e| e.to_string()),
                        None => Err("vanished while being read".to_owned()),
                    }
                };
                out.push((key, parsed));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn tag_key(name: &str) -> String {
        format!("refs/tags/{name}")
    }

    pub fn create_tag(&self, name: &str, commit: CommitId) -> Result<(), RefError> {
        validate_ref_name(name).map_err(RefError::InvalidName)?;
        let record = RefRecord {
            commit: Some(commit),
        };
        if self
            .storage
            .put_if_absent(&Self::tag_key(name), &serde_json::to_vec(&record).unwrap())?
        {
            Ok(())
        } else {
            Err(RefError::Exists(format!(
                "tag '{name}' already exists, and tags never move"
            )))
        }
    }

    pub fn tag(&self, name: &str) -> io::Result<Option<CommitId>> {
        let Some(bytes) = self.storage.get(&Self::tag_key(name))? else {
            return Ok(None);
        };
        let record: RefRecord = serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("tag '{name}' is corrupt: {e}"),
            )
        })?;
        Ok(record.commit)
    }

    /// All tags and their commits, sorted by name.
    pub fn tags(&self) -> io::Result<Vec<(String, CommitId)>> {
        let mut names = self.storage.list("refs/tags")?;
        names.sort();
        let mut out = Vec::new();
        for name in names {
            if let Some(commit) = self.tag(&name)? {
                out.push((name, commit));
            }
        }
        Ok(out)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RefError {
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::object::ObjectId;

    #[test]
    fn a_stale_compare_and_swap_loses_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let storage = Storage::new(dir.path());
        let refs = Refs::new(&storage);
        let (c1, c2, c3) = (ObjectId([1; 32]), ObjectId([2; 32]), ObjectId([3; 32]));
        refs.create_branch("main", c1).unwrap();
        let tip = refs.branch("main").unwrap().unwrap();
        assert!(refs.compare_and_swap("main", tip.seq, c2).unwrap());
        assert!(!refs.compare_and_swap("main", tip.seq, c3).unwrap());
        assert_eq!(refs.branch("main").unwrap().unwrap().commit, c2);

        refs.delete_branch("main").unwrap();
        assert!(refs.branch("main").unwrap().is_none());
        refs.create_branch("main", c3).unwrap();
        assert_eq!(refs.branch("main").unwrap().unwrap().commit, c3);
    }

    #[test]
    fn tags_never_move_and_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let storage = Storage::new(dir.path());
        let refs = Refs::new(&storage);
        refs.create_tag("v1", ObjectId([1; 32])).unwrap();
        assert!(matches!(
            refs.create_tag("v1", ObjectId([2; 32])),
            Err(RefError::Exists(_))
        ));
        assert_eq!(refs.tag("v1").unwrap(), Some(ObjectId([1; 32])));
        assert!(matches!(
            refs.create_tag("../x", ObjectId([2; 32])),
            Err(RefError::InvalidName(_))
        ));
    }
}
