//! The session journal: what a session changed, path by path, kept in a
//! redb database beside the staged files.
//!
//! The journal is an overlay on the base tree, in the manner of overlayfs:
//! a path maps to the file or directory that is there now, or to a
//! whiteout that hides what the base has there. Mutations go to an
//! in-memory map at once and to redb in batches: [`Journal::flush`] writes
//! the pending batch in one durable transaction. The mount flushes every
//! few seconds and on `fsync`, so that no fsync is paid per file operation.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::repo::ObjectId;

const JOURNAL: TableDefinition<&str, &[u8]> = TableDefinition::new("journal");

/// redb's page cache for a journal. The journal is read once at open and
/// then only written, so a small cache loses nothing and keeps a session
/// with a million changed paths from holding redb's default gigabyte.
const JOURNAL_CACHE_BYTES: usize = 8 << 20;

/// Flush on its own once this many changes are pending, to bound memory.
const MAX_PENDING: usize = 50_000;

/// Where a changed file's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileSource {
    /// A staged file of this session, `staged/<n>`.
    Staged(u64),
    /// An object already in the repository (a committed file renamed or
    /// linked to a new path, or with a new mode).
    Blob { id: ObjectId, size: u64 },
}

/// What is at a path in the session's view, where it differs from the
/// base tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum JournalEntry {
    File {
        source: FileSource,
        mode: u32,
    },
    /// A directory made in this session. `opaque`: it replaces something
    /// the base had at this path, and hides the base's contents below it.
    Dir {
        opaque: bool,
    },
    /// Nothing is here, nor below, whatever the base has.
    Whiteout,
}

pub struct Journal {
    db: Database,
    entries: BTreeMap<String, JournalEntry>,
    pending: Vec<(String, Option<JournalEntry>)>,
}

impl Journal {
    /// Open (or create) the journal database and load it.
    pub fn open(path: &Path) -> io::Result<Journal> {
        let db = redb::Builder::new()
            .set_cache_size(JOURNAL_CACHE_BYTES)
            .create(path)
            .map_err(|e| {
                io::Error::other(format!(
                    "cannot open session journal {}: {e}",
                    path.display()
                ))
            })?;
        let txn = db.begin_write().map_err(io::Error::other)?;
        txn.open_table(JOURNAL).map_err(io::Error::other)?;
        txn.commit().map_err(io::Error::other)?;
        let mut entries = BTreeMap::new();
        let read = db.begin_read().map_err(io::Error::other)?;
        let table = read.open_table(JOURNAL).map_err(io::Error::other)?;
        for row in table.iter().map_err(io::Error::other)? {
            let (key, value) = row.map_err(io::Error::other)?;
            let entry: JournalEntry = serde_json::from_slice(value.value()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "session journal {} is corrupt at '{}': {e}",
                        path.display(),
                        key.value()
                    ),
                )
            })?;
            entries.insert(key.value().to_owned(), entry);
        }
        drop(table);
        drop(read);
        Ok(Journal {
            db,
            entries,
            pending: Vec::new(),
        })
    }

    pub fn get(&self, path: &str) -> Option<&JournalEntry> {
        self.entries.get(path)
    }

    pub fn entries(&self) -> &BTreeMap<String, JournalEntry> {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn insert(&mut self, path: &str, entry: JournalEntry) -> io::Result<()> {
        self.entries.insert(path.to_owned(), entry);
        self.pending.push((path.to_owned(), Some(entry)));
        self.flush_if_full()
    }

    pub fn remove(&mut self, path: &str) -> io::Result<Option<JournalEntry>> {
        let old = self.entries.remove(path);
        if old.is_some() {
            self.pending.push((path.to_owned(), None));
            self.flush_if_full()?;
        }
        Ok(old)
    }

    /// The journal paths strictly below `dir` ("" for the root), sorted.
    pub fn below<'a>(
        &'a self,
        dir: &str,
    ) -> impl Iterator<Item = (&'a String, &'a JournalEntry)> + 'a {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.entries
            .range(prefix.clone()..)
            .take_while(move |(p, _)| p.starts_with(&prefix))
    }

    /// The names directly in `dir` that the journal has entries for or
    /// below, skipping over deeper paths without visiting them one by one.
    /// A name with entries only below it is an implied directory.
    pub fn children(&self, dir: &str) -> Vec<(String, JournalEntry)> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut out = Vec::new();
        let mut from = prefix.clone();
        while let Some((path, entry)) = self
            .entries
            .range(from.clone()..)
            .next()
            .filter(|(p, _)| p.starts_with(&prefix))
        {
            match path[prefix.len()..].split_once('/') {
                None => {
                    out.push((path[prefix.len()..].to_owned(), *entry));
                    from = format!("{path}\0");
                }
                Some((name, _)) => {
                    let own = format!("{prefix}{name}");
                    // An entry of its own sorts before this one and was
                    // listed already.
                    if !self.entries.contains_key(&own) {
                        out.push((name.to_owned(), JournalEntry::Dir { opaque: false }));
                    }
                    // Keys under `own/` sort below `own0` ('0' follows '/');
                    // keys like `own.b` sort before `own/` and were seen.
                    from = format!("{own}0");
                }
            }
        }
        out
    }

    /// Remove every entry strictly below `dir`.
    pub fn remove_below(&mut self, dir: &str) -> io::Result<()> {
        let doomed: Vec<String> = self.below(dir).map(|(p, _)| p.clone()).collect();
        for path in doomed {
            self.remove(&path)?;
        }
        Ok(())
    }

    fn flush_if_full(&mut self) -> io::Result<()> {
        if self.pending.len() >= MAX_PENDING {
            self.flush()?;
        }
        Ok(())
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Write the pending changes in one durable transaction.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(io::Error::other)?;
        {
            let mut table = txn.open_table(JOURNAL).map_err(io::Error::other)?;
            for (path, entry) in &self.pending {
                match entry {
                    Some(entry) => {
                        let bytes = serde_json::to_vec(entry).expect("journal entries serialize");
                        table
                            .insert(path.as_str(), bytes.as_slice())
                            .map_err(io::Error::other)?;
                    }
                    None => {
                        table.remove(path.as_str()).map_err(io::Error::other)?;
                    }
                }
            }
        }
        txn.commit().map_err(io::Error::other)?;
        self.pending.clear();
        Ok(())
    }
}
