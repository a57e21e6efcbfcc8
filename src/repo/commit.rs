//! Commit records and their change lists.
//!
//! A commit is a JSON record under `commits/`, named by the hash of its
//! bytes. Besides its tree it names a change list: the exact paths the
//! commit changed and how, which is what a rebase compares and replays.

use std::io;

use serde::{Deserialize, Serialize};

use super::object::{CommitId, ObjectId, Objects, WriteBatch};
use super::tree::Change;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The previous commit on the branch; empty for a repository's first.
    pub parents: Vec<CommitId>,
    pub tree: ObjectId,
    pub author: String,
    /// RFC 3339, UTC.
    pub date: String,
    pub message: String,
    /// The change list object.
    pub changes: ObjectId,
    pub change_count: u64,
    /// Commits before this one on its first-parent line; lets a history
    /// walk stop early.
    pub height: u64,
    /// The session that made it, so that a session resumed after a crash
    /// can tell that its changes already landed.
    pub session: String,
}

/// One changed path in a change list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub path: String,
    #[serde(flatten)]
    pub change: Change,
}

impl Commit {
    pub fn parent(&self) -> Option<CommitId> {
        self.parents.first().copied()
    }

    /// The commit as `log --json` and `.zarrfs/log.json` show it.
    pub fn summary_json(&self, id: CommitId) -> serde_json::Value {
        serde_json::json!({
            "id": id.to_hex(),
            "parents": self.parents.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
            "author": self.author,
            "date": self.date,
            "message": self.message,
            "changes": self.change_count,
        })
    }
}

pub fn encode_change_list(changes: &[(String, Change)]) -> Vec<u8> {
    let records: Vec<ChangeRecord> = changes
        .iter()
        .map(|(path, change)| ChangeRecord {
            path: path.clone(),
            change: change.clone(),
        })
        .collect();
    serde_json::to_vec(&records).expect("change lists serialize")
}

pub fn put_change_list(
    objects: &Objects,
    changes: &[(String, Change)],
    batch: &mut WriteBatch,
) -> io::Result<ObjectId> {
    objects.put(&encode_change_list(changes), batch)
}

pub fn get_change_list(objects: &Objects, id: ObjectId) -> io::Result<Vec<(String, Change)>> {
    let bytes = objects.get(id)?;
    let records: Vec<ChangeRecord> = serde_json::from_slice(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("change list {id} is corrupt: {e}"),
        )
    })?;
    Ok(records.into_iter().map(|r| (r.path, r.change)).collect())
}

/// The current time as RFC 3339 with microseconds, UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}
