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
//! The mount's background flushes write without holding the session:
//! [`Journal::begin_flush`] moves the pending batch aside, where reads
//! still see it, [`FlushJob::write`] writes it while the session goes on,
//! and [`Journal::finish_flush`] puts the new table in its place. Writing
//! 50,000 entries takes tens of milliseconds, which would otherwise stall
//! every request of the mount. A commit, which holds the session, writes
//! its flush on a thread of its own ([`Journal::flush_on_thread`]) while
//! it reads the changes to store them. A batch that could not be written
//! (a full disk) stays pending, and the next flush opens the database
//! again first (`Journal::reopen_after_failure`).
//!
//! The journal lives in redb, not in memory, so that a session with a
//! million changed paths costs the daemon a few megabytes: reads look at
//! the pending map, then at the batch being flushed, then at a snapshot
//! of the table taken at the last flush. Two small helpers keep reads off the database: a set of the
//! hashes of every path written (most lookups are of paths the session
//! never touched) and a bounded cache of recent answers (the ancestors of
//! a path are looked up on every call).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadOnlyTable, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::repo::ObjectId;
use encoding::decode;

mod encoding;
mod flush;
mod scan;

use flush::InFlight;
pub use flush::{FlushJob, FlushThread, FlushedTable};

const JOURNAL: TableDefinition<&str, &[u8]> = TableDefinition::new("journal");

/// redb's page cache for a journal: enough for the inner pages of a
/// million-path journal, far from redb's default gigabyte.
const JOURNAL_CACHE_BYTES: usize = 16 << 20;

/// Flush on its own once this many changes are pending, to bound memory.
/// The mount's flusher writes batches long before this (see
/// [`Journal::wants_flush`]), so it is reached only when flushes fail or
/// fall behind.
const MAX_PENDING: usize = 100_000;

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
    /// The view makes one only over a base file: over a base directory it
    /// keeps the directory and whites out each entry the new one lacks.
    Dir {
        opaque: bool,
    },
    /// Nothing is here, nor below, whatever the base has.
    Whiteout,
}

type Table = ReadOnlyTable<&'static str, &'static [u8]>;

/// Changes by path; `None` removes the path.
type Changes = BTreeMap<String, Option<JournalEntry>>;

pub struct Journal {
    path: PathBuf,
    db: Arc<Database>,
    /// The table as the last flush left it.
    flushed: Table,
    /// Changes since the last flush began.
    pending: Changes,
    /// Changes a background flush is writing: newer than `flushed`, older
    /// than `pending`.
    flushing: Option<InFlight>,
    /// The hashes of every path that may have an entry. Removing a path
    /// leaves its hash: a stale hash costs one read, a missing one would
    /// hide an entry.
    written: HashSet<u64>,
    hasher: RandomState,
    /// Answers read from `flushed` for paths with nothing pending or
    /// being flushed.
    cache: Mutex<HashMap<String, Option<JournalEntry>>>,
    len: usize,
    /// A write failed: redb refuses every write after that until the
    /// database is opened again (see [`Journal::reopen_after_failure`]).
    reopen: bool,
}

impl Journal {
    /// Open (or create) the journal database, checking every entry.
    pub fn open(path: &Path) -> io::Result<Journal> {
        let db = open_database(path)?;
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
            db: Arc::new(db),
            flushed,
            pending: BTreeMap::new(),
            flushing: None,
            len: written.len(),
            written,
            hasher,
            cache: Mutex::new(HashMap::new()),
            reopen: false,
        })
    }

    pub fn get(&self, path: &str) -> io::Result<Option<JournalEntry>> {
        if let Some(entry) = self
            .pending
            .get(path)
            .or_else(|| self.flushing_batch().get(path))
        {
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
}

/// Open (or create) a journal database with its table.
fn open_database(path: &Path) -> io::Result<Database> {
    let db = redb::Builder::new()
        .set_cache_size(JOURNAL_CACHE_BYTES)
        .create(path)
        .map_err(|e| {
            let e = db_error(e);
            io::Error::new(
                e.kind(),
                format!("cannot open session journal {}: {e}", path.display()),
            )
        })?;
    create_table(&db)?;
    Ok(db)
}

fn create_table(db: &Database) -> io::Result<()> {
    let txn = db.begin_write().map_err(db_error)?;
    txn.open_table(JOURNAL).map_err(db_error)?;
    txn.commit().map_err(db_error)
}

/// A redb error as an I/O error, keeping the system's error (ENOSPC,
/// EIO, ...) where there is one.
fn db_error(e: impl Into<redb::Error>) -> io::Error {
    match e.into() {
        redb::Error::Io(e) => e,
        other => io::Error::other(other),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The table as it is now, readable until dropped.
fn snapshot(db: &Database) -> io::Result<Table> {
    let read = db.begin_read().map_err(db_error)?;
    read.open_table(JOURNAL).map_err(db_error)
}

#[cfg(test)]
mod tests {
    use super::scan::dir_prefix;
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(String, JournalEntry),
        Remove(String),
        RemoveBelow(String),
        Flush,
        Reopen,
        /// Background flushes: begin one, let it write, take its result,
        /// or have it fail.
        BeginFlush,
        WriteFlush,
        FinishFlush,
        FailFlush,
    }

    /// A background flush under way in the test, and what its write gave
    /// if it wrote.
    type Background = Option<(FlushJob, Option<io::Result<FlushedTable>>)>;

    fn finish(journal: &mut Journal, background: &mut Background) -> io::Result<()> {
        match background.take() {
            None => Ok(()),
            Some((job, written)) => {
                let written = written.unwrap_or_else(|| job.write());
                journal.finish_flush(job, written)
            }
        }
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
            2 => Just(Op::BeginFlush),
            1 => Just(Op::WriteFlush),
            1 => Just(Op::FinishFlush),
            1 => Just(Op::FailFlush),
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

        /// The journal, pending changes over a batch being flushed over a
        /// flushed table, reads like a plain map of its entries, across
        /// flushes, background flushes that finish, fail or are taken
        /// over, and reopening.
        #[test]
        fn the_journal_reads_like_a_map(ops in prop::collection::vec(op(), 1..80)) {
            let (_dir, file, mut journal) = new_journal();
            let mut model: BTreeMap<String, JournalEntry> = BTreeMap::new();
            let mut background: Background = None;
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
                        // A job holds the database open; the mount joins
                        // its flusher before the journal goes, too.
                        finish(&mut journal, &mut background).unwrap();
                        journal.flush().unwrap();
                        drop(journal);
                        journal = Journal::open(&file).unwrap();
                    }
                    Op::BeginFlush => {
                        if background.is_none() {
                            background = journal.begin_flush().map(|job| (job, None));
                        }
                    }
                    Op::WriteFlush => {
                        if let Some((job, written @ None)) = &mut background {
                            *written = Some(job.write());
                        }
                    }
                    Op::FinishFlush => finish(&mut journal, &mut background).unwrap(),
                    Op::FailFlush => {
                        if let Some((job, _)) = background.take() {
                            let failed = Err(io::Error::other("the disk is gone"));
                            prop_assert!(journal.finish_flush(job, failed).is_err());
                        }
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

    /// An empty journal in a directory of its own, and its file.
    fn new_journal() -> (tempfile::TempDir, PathBuf, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("journal.redb");
        let journal = Journal::open(&file).unwrap();
        (dir, file, journal)
    }

    fn staged(n: u64) -> JournalEntry {
        JournalEntry::File {
            source: FileSource::Staged(n),
            mode: 0o644,
        }
    }

    /// What a journal holds durably: opened again without flushing.
    fn durable(file: &Path, journal: Journal) -> Vec<(String, JournalEntry)> {
        drop(journal);
        let reopened = Journal::open(file).unwrap();
        reopened.entries_after(None, usize::MAX).unwrap()
    }

    /// A journal whose write failed opens its database again before the
    /// next one (a failed write itself needs a full disk: see cli_mount's
    /// test of one): it reads as before meanwhile, and the flush after
    /// writes what was pending, over what was flushed before.
    #[test]
    fn a_journal_opened_again_after_a_failed_write_loses_nothing() {
        let (_dir, file, mut journal) = new_journal();
        journal.insert("a", staged(1)).unwrap();
        journal.insert("b", staged(2)).unwrap();
        journal.flush().unwrap();
        journal.remove("a").unwrap();
        journal.insert("c", staged(3)).unwrap();
        journal.reopen = true; // as a failed write leaves it
        assert_eq!(journal.begin_flush().map(|_| ()), Some(()));
        journal.take_back_flushing();
        assert!(!journal.reopen, "opened again by the background flush");
        journal.reopen = true;
        journal.flush().unwrap();
        assert!(!journal.reopen);
        assert_eq!(journal.get("a").unwrap(), None);
        assert_eq!(journal.get("b").unwrap(), Some(staged(2)));
        assert_eq!(journal.len(), 2);
        assert_eq!(
            durable(&file, journal),
            vec![("b".to_owned(), staged(2)), ("c".to_owned(), staged(3))]
        );
    }

    /// A commit reads the journal while it is flushed on a thread: reads
    /// see the batch in flight, changes made meanwhile stay pending, and
    /// once joined the batch is on disk.
    #[test]
    fn a_flush_on_a_thread_is_read_meanwhile_and_durable_once_joined() {
        let (_dir, file, mut journal) = new_journal();
        journal.insert("a/x", staged(1)).unwrap();
        journal.insert("a/y", staged(2)).unwrap();
        let flush = journal.flush_on_thread().unwrap();
        assert_eq!(journal.get("a/x").unwrap(), Some(staged(1)));
        journal.insert("a/z", staged(3)).unwrap();
        let names: Vec<_> = journal.children("a").unwrap();
        assert_eq!(names.len(), 3, "{names:?}");
        journal.join_flush(flush).unwrap();
        assert!(journal.has_pending());
        assert_eq!(
            durable(&file, journal),
            vec![("a/x".to_owned(), staged(1)), ("a/y".to_owned(), staged(2))]
        );
    }

    /// With the mount's background flush under way, whose writer waits
    /// for the journal, a flush on a thread takes it over and writes all
    /// now, as [`Journal::flush`] does.
    #[test]
    fn a_flush_on_a_thread_takes_over_a_background_flush_under_way() {
        let (_dir, file, mut journal) = new_journal();
        journal.insert("x", staged(1)).unwrap();
        let background = journal.begin_flush().unwrap();
        journal.insert("y", staged(2)).unwrap();
        let flush = journal.flush_on_thread().unwrap();
        journal.join_flush(flush).unwrap();
        assert!(!journal.has_pending());
        let written = background.write();
        journal.finish_flush(background, written).unwrap();
        assert_eq!(
            durable(&file, journal),
            vec![("x".to_owned(), staged(1)), ("y".to_owned(), staged(2))]
        );
    }
}
