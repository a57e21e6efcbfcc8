//! The session journal: what a session changed, path by path, kept in a
//! redb database beside the staged files.
//!
//! The journal is an overlay on the base tree, in the manner of overlayfs:
//! a path maps to the file or directory that is there now, or to a
//! whiteout that hides what the base has there. Mutations go to a pending
//! map at once and to redb in batches: [`Journal::flush`] writes the
//! pending batch in one durable transaction. The mount flushes every few
//! seconds and on `fsync`, so that no fsync is paid per file operation.
//!
//! The journal lives in redb, not in memory, so that a session with a
//! million changed paths costs the daemon a few megabytes: reads look at
//! the pending map, then at a snapshot of the table taken at the last
//! flush. Two small helpers keep reads off the database: a set of the
//! hashes of every path written (most lookups are of paths the session
//! never touched) and a bounded cache of recent answers (the ancestors of
//! a path are looked up on every call).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use redb::{Database, ReadOnlyTable, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::repo::ObjectId;

const JOURNAL: TableDefinition<&str, &[u8]> = TableDefinition::new("journal");

/// redb's page cache for a journal: enough for the inner pages of a
/// million-path journal, far from redb's default gigabyte.
const JOURNAL_CACHE_BYTES: usize = 16 << 20;

/// Flush on its own once this many changes are pending, to bound memory.
const MAX_PENDING: usize = 50_000;

/// Most answers the read cache keeps before it starts over.
const READ_CACHE_ENTRIES: usize = 8192;

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

type Table = ReadOnlyTable<&'static str, &'static [u8]>;

pub struct Journal {
    path: PathBuf,
    db: Database,
    /// The table as the last flush left it.
    flushed: Table,
    /// Changes since the last flush; `None` removes the path.
    pending: BTreeMap<String, Option<JournalEntry>>,
    /// The hashes of every path that may have an entry. Removing a path
    /// leaves its hash: a stale hash costs one read, a missing one would
    /// hide an entry.
    written: HashSet<u64>,
    hasher: RandomState,
    /// Answers read from `flushed` for paths with nothing pending.
    cache: Mutex<HashMap<String, Option<JournalEntry>>>,
    len: usize,
}

/// What a scan does after visiting an entry.
enum Scan {
    Next,
    /// Go on at the first path at or after this one.
    SkipTo(String),
    Stop,
}

impl Journal {
    /// Open (or create) the journal database, checking every entry.
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
        let flushed = snapshot(&db)?;
        let hasher = RandomState::new();
        let mut written = HashSet::new();
        for row in flushed.iter().map_err(io::Error::other)? {
            let (key, value) = row.map_err(io::Error::other)?;
            decode(path, key.value(), value.value())?;
            written.insert(hasher.hash_one(key.value()));
        }
        Ok(Journal {
            path: path.to_owned(),
            db,
            flushed,
            pending: BTreeMap::new(),
            len: written.len(),
            written,
            hasher,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn get(&self, path: &str) -> io::Result<Option<JournalEntry>> {
        if let Some(entry) = self.pending.get(path) {
            return Ok(*entry);
        }
        if !self.written.contains(&self.hasher.hash_one(path)) {
            return Ok(None);
        }
        if let Some(entry) = self.cache.lock().unwrap().get(path) {
            return Ok(*entry);
        }
        let entry = match self.flushed.get(path).map_err(io::Error::other)? {
            Some(value) => Some(decode(&self.path, path, value.value())?),
            None => None,
        };
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= READ_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(path.to_owned(), entry);
        Ok(entry)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn insert(&mut self, path: &str, entry: JournalEntry) -> io::Result<()> {
        if self.get(path)?.is_none() {
            self.len += 1;
        }
        self.written.insert(self.hasher.hash_one(path));
        self.set_pending(path, Some(entry))
    }

    pub fn remove(&mut self, path: &str) -> io::Result<Option<JournalEntry>> {
        let old = self.get(path)?;
        if old.is_some() {
            self.len -= 1;
            self.set_pending(path, None)?;
        }
        Ok(old)
    }

    fn set_pending(&mut self, path: &str, entry: Option<JournalEntry>) -> io::Result<()> {
        self.cache.get_mut().unwrap().remove(path);
        self.pending.insert(path.to_owned(), entry);
        if self.pending.len() >= MAX_PENDING {
            self.flush()?;
        }
        Ok(())
    }

    /// Up to `limit` entries after the path `after` (from the first if
    /// `None`), in path order.
    pub fn entries_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> io::Result<Vec<(String, JournalEntry)>> {
        let from = after.map_or(String::new(), |p| format!("{p}\0"));
        let mut out = Vec::new();
        self.scan(from, &mut |path, entry| {
            out.push((path.to_owned(), entry));
            if out.len() >= limit {
                Scan::Stop
            } else {
                Scan::Next
            }
        })?;
        Ok(out)
    }

    /// The names directly in `dir` that the journal has entries for or
    /// below, skipping over deeper paths without visiting them one by one.
    /// A name with entries only below it is an implied directory.
    pub fn children(&self, dir: &str) -> io::Result<Vec<(String, JournalEntry)>> {
        let prefix = dir_prefix(dir);
        let mut out = Vec::new();
        let mut failure = None;
        self.scan(prefix.clone(), &mut |path, entry| {
            let Some(rest) = path.strip_prefix(&prefix) else {
                return Scan::Stop;
            };
            match rest.split_once('/') {
                None => {
                    out.push((rest.to_owned(), entry));
                    Scan::Next
                }
                Some((name, _)) => {
                    let own = format!("{prefix}{name}");
                    // An entry of its own sorts before this one (though
                    // not always just before: `a.b` sorts between `a` and
                    // `a/b`) and was listed already.
                    match self.get(&own) {
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            out.push((name.to_owned(), JournalEntry::Dir { opaque: false }))
                        }
                        Err(e) => {
                            failure = Some(e);
                            return Scan::Stop;
                        }
                    }
                    // Paths under `own/` sort below `own0` ('0' follows '/').
                    Scan::SkipTo(format!("{own}0"))
                }
            }
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Whether [`Journal::children`] of `dir` has one that is not a
    /// whiteout; stops at the first.
    pub fn has_visible_child(&self, dir: &str) -> io::Result<bool> {
        let prefix = dir_prefix(dir);
        let mut found = Ok(false);
        self.scan(prefix.clone(), &mut |path, entry| {
            let Some(rest) = path.strip_prefix(&prefix) else {
                return Scan::Stop;
            };
            match rest.split_once('/') {
                None if entry == JournalEntry::Whiteout => Scan::Next,
                None => {
                    found = Ok(true);
                    Scan::Stop
                }
                Some((name, _)) => {
                    // Below `name`: an implied directory, unless `name`
                    // has an entry of its own (listed already).
                    let own = format!("{prefix}{name}");
                    match self.get(&own) {
                        Ok(Some(JournalEntry::Whiteout)) => Scan::SkipTo(format!("{own}0")),
                        Ok(_) => {
                            found = Ok(true);
                            Scan::Stop
                        }
                        Err(e) => {
                            found = Err(e);
                            Scan::Stop
                        }
                    }
                }
            }
        })?;
        found
    }

    /// Remove every entry strictly below `dir`.
    pub fn remove_below(&mut self, dir: &str) -> io::Result<()> {
        const BATCH: usize = 4096;
        let prefix = dir_prefix(dir);
        let mut from = prefix.clone();
        loop {
            let mut doomed = Vec::new();
            self.scan(from, &mut |path, _| {
                if !path.starts_with(&prefix) || doomed.len() >= BATCH {
                    return Scan::Stop;
                }
                doomed.push(path.to_owned());
                Scan::Next
            })?;
            let Some(last) = doomed.last() else {
                return Ok(());
            };
            from = format!("{last}\0");
            for path in doomed {
                self.len -= 1;
                self.set_pending(&path, None)?;
            }
        }
    }

    /// Visit the entries at or after `from` in path order: the pending
    /// changes over the flushed table.
    fn scan(
        &self,
        from: String,
        visit: &mut dyn FnMut(&str, JournalEntry) -> Scan,
    ) -> io::Result<()> {
        let mut from = from;
        'seek: loop {
            let mut flushed = self
                .flushed
                .range::<&str>(from.as_str()..)
                .map_err(io::Error::other)?;
            let mut next_flushed = self.next_row(&mut flushed)?;
            let mut pending = self
                .pending
                .range::<str, _>((Bound::Included(from.as_str()), Bound::Unbounded));
            let mut next_pending = pending.next();
            loop {
                let take_pending = match (&next_pending, &next_flushed) {
                    (None, None) => return Ok(()),
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (Some((p, _)), Some((f, _))) => p.as_str() <= f.as_str(),
                };
                let (path, entry) = if take_pending {
                    let (path, entry) = next_pending.take().unwrap();
                    next_pending = pending.next();
                    // A pending change overrides the flushed entry.
                    if next_flushed.as_ref().is_some_and(|(f, _)| f == path) {
                        next_flushed = self.next_row(&mut flushed)?;
                    }
                    match entry {
                        Some(entry) => (path.clone(), *entry),
                        None => continue,
                    }
                } else {
                    let row = next_flushed.take().unwrap();
                    next_flushed = self.next_row(&mut flushed)?;
                    row
                };
                match visit(&path, entry) {
                    Scan::Next => {}
                    Scan::Stop => return Ok(()),
                    Scan::SkipTo(to) => {
                        from = to;
                        continue 'seek;
                    }
                }
            }
        }
    }

    fn next_row(
        &self,
        rows: &mut redb::Range<'static, &'static str, &'static [u8]>,
    ) -> io::Result<Option<(String, JournalEntry)>> {
        match rows.next() {
            None => Ok(None),
            Some(row) => {
                let (key, value) = row.map_err(io::Error::other)?;
                let entry = decode(&self.path, key.value(), value.value())?;
                Ok(Some((key.value().to_owned(), entry)))
            }
        }
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
                        let bytes = entry.encode();
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
        self.flushed = snapshot(&self.db)?;
        self.cache.get_mut().unwrap().clear();
        Ok(())
    }
}

/// The table as it is now, readable until dropped.
fn snapshot(db: &Database) -> io::Result<Table> {
    let read = db.begin_read().map_err(io::Error::other)?;
    read.open_table(JOURNAL).map_err(io::Error::other)
}

/// Journal values: a tag byte, then fixed-size little-endian fields.
/// Journals written before this encoding hold JSON objects, which start
/// with `{` and are still read.
mod tag {
    pub const STAGED_FILE: u8 = b'S';
    pub const BLOB_FILE: u8 = b'B';
    pub const DIR: u8 = b'D';
    pub const WHITEOUT: u8 = b'W';
}

impl JournalEntry {
    /// The entry as a journal value: `S mode n`, `B mode id size`,
    /// `D opaque` or `W`.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        match *self {
            JournalEntry::File { source, mode } => match source {
                FileSource::Staged(n) => {
                    out.push(tag::STAGED_FILE);
                    out.extend_from_slice(&mode.to_le_bytes());
                    out.extend_from_slice(&n.to_le_bytes());
                }
                FileSource::Blob { id, size } => {
                    out.push(tag::BLOB_FILE);
                    out.extend_from_slice(&mode.to_le_bytes());
                    out.extend_from_slice(&id.0);
                    out.extend_from_slice(&size.to_le_bytes());
                }
            },
            JournalEntry::Dir { opaque } => out.extend_from_slice(&[tag::DIR, opaque as u8]),
            JournalEntry::Whiteout => out.push(tag::WHITEOUT),
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<JournalEntry, String> {
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
        };
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        let entry = match bytes.first() {
            Some(b'{') => return serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Some(&tag::STAGED_FILE) if bytes.len() == 13 => {
                u32_at(1)
                    .zip(u64_at(5))
                    .map(|(mode, n)| JournalEntry::File {
                        source: FileSource::Staged(n),
                        mode,
                    })
            }
            Some(&tag::BLOB_FILE) if bytes.len() == 45 => {
                let id = ObjectId(bytes[5..37].try_into().expect("32 bytes"));
                u32_at(1)
                    .zip(u64_at(37))
                    .map(|(mode, size)| JournalEntry::File {
                        source: FileSource::Blob { id, size },
                        mode,
                    })
            }
            Some(&tag::DIR) if bytes.len() == 2 => Some(JournalEntry::Dir {
                opaque: bytes[1] != 0,
            }),
            Some(&tag::WHITEOUT) if bytes.len() == 1 => Some(JournalEntry::Whiteout),
            _ => None,
        };
        entry.ok_or_else(|| format!("unknown entry of {} bytes", bytes.len()))
    }
}

fn decode(journal: &Path, path: &str, bytes: &[u8]) -> io::Result<JournalEntry> {
    JournalEntry::decode(bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "session journal {} is corrupt at '{path}': {e}",
                journal.display()
            ),
        )
    })
}

/// What the paths strictly below `dir` start with ("" for the root).
fn dir_prefix(dir: &str) -> String {
    if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn entries_read_back_as_written_and_journals_of_json_entries_still_read() {
        let id = ObjectId::of(b"bytes");
        let entries = [
            JournalEntry::File {
                source: FileSource::Staged(u64::MAX - 1),
                mode: 0o100_644,
            },
            JournalEntry::File {
                source: FileSource::Blob { id, size: 5 },
                mode: 0o755,
            },
            JournalEntry::Dir { opaque: true },
            JournalEntry::Dir { opaque: false },
            JournalEntry::Whiteout,
        ];
        for entry in entries {
            assert_eq!(JournalEntry::decode(&entry.encode()), Ok(entry));
            let json = serde_json::to_vec(&entry).unwrap();
            assert_eq!(JournalEntry::decode(&json), Ok(entry), "legacy JSON value");
        }
        let error = decode(Path::new("j.redb"), "a/b", b"S\x01").unwrap_err();
        assert!(error.to_string().contains("corrupt at 'a/b'"), "{error}");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(String, JournalEntry),
        Remove(String),
        RemoveBelow(String),
        Flush,
        Reopen,
    }

    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!["a", "a.b", "a0", "b", "c"]), 1..4)
            .prop_map(|parts| parts.join("/"))
    }

    fn entry() -> impl Strategy<Value = JournalEntry> {
        prop_oneof![
            (0u64..4).prop_map(|n| JournalEntry::File {
                source: FileSource::Staged(n),
                mode: 0o644
            }),
            any::<bool>().prop_map(|opaque| JournalEntry::Dir { opaque }),
            Just(JournalEntry::Whiteout),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (path(), entry()).prop_map(|(p, e)| Op::Insert(p, e)),
            2 => path().prop_map(Op::Remove),
            1 => prop_oneof![Just(String::new()), path()].prop_map(Op::RemoveBelow),
            1 => Just(Op::Flush),
            1 => Just(Op::Reopen),
        ]
    }

    /// The names directly in `dir`, as `children` must give them.
    fn model_children(
        model: &BTreeMap<String, JournalEntry>,
        dir: &str,
    ) -> Vec<(String, JournalEntry)> {
        let prefix = dir_prefix(dir);
        let mut out: BTreeMap<String, JournalEntry> = BTreeMap::new();
        for (path, entry) in model {
            if let Some(rest) = path.strip_prefix(&prefix) {
                match rest.split_once('/') {
                    None => {
                        out.insert(rest.to_owned(), *entry);
                    }
                    Some((name, _)) => {
                        out.entry(name.to_owned())
                            .or_insert(JournalEntry::Dir { opaque: false });
                    }
                }
            }
        }
        out.into_iter().collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The journal, pending changes over a flushed table, reads like
        /// a plain map of its entries, across flushes and reopening.
        #[test]
        fn the_journal_reads_like_a_map(ops in prop::collection::vec(op(), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("journal.redb");
            let mut journal = Journal::open(&file).unwrap();
            let mut model: BTreeMap<String, JournalEntry> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(p, e) => {
                        journal.insert(&p, e).unwrap();
                        model.insert(p, e);
                    }
                    Op::Remove(p) => {
                        prop_assert_eq!(journal.remove(&p).unwrap(), model.remove(&p));
                    }
                    Op::RemoveBelow(d) => {
                        journal.remove_below(&d).unwrap();
                        let prefix = dir_prefix(&d);
                        model.retain(|p, _| !p.starts_with(&prefix));
                    }
                    Op::Flush => journal.flush().unwrap(),
                    Op::Reopen => {
                        journal.flush().unwrap();
                        drop(journal);
                        journal = Journal::open(&file).unwrap();
                    }
                }
                prop_assert_eq!(journal.len(), model.len());
                let all = journal.entries_after(None, usize::MAX).unwrap();
                let expected: Vec<_> = model.iter().map(|(p, e)| (p.clone(), *e)).collect();
                prop_assert_eq!(&all, &expected);
                for dir in ["", "a", "a/a", "b"] {
                    let mut children = journal.children(dir).unwrap();
                    children.sort_by(|x, y| x.0.cmp(&y.0));
                    let visible = children.iter().any(|(_, e)| *e != JournalEntry::Whiteout);
                    prop_assert_eq!(children, model_children(&model, dir));
                    prop_assert_eq!(journal.has_visible_child(dir).unwrap(), visible);
                }
                for (path, entry) in &model {
                    prop_assert_eq!(journal.get(path).unwrap(), Some(*entry));
                }
            }
            // Reading in chunks gives the same as reading at once.
            let mut chunked = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let chunk = journal.entries_after(after.as_deref(), 2).unwrap();
                let Some((last, _)) = chunk.last() else { break };
                after = Some(last.clone());
                chunked.extend(chunk);
            }
            prop_assert_eq!(chunked, journal.entries_after(None, usize::MAX).unwrap());
        }
    }
}
