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
//! again first ([`Journal::reopen_after_failure`]).
//!
//! The journal lives in redb, not in memory, so that a session with a
//! million changed paths costs the daemon a few megabytes: reads look at
//! the pending map, then at the batch being flushed, then at a snapshot
//! of the table taken at the last flush. Two small helpers keep reads off the database: a set of the
//! hashes of every path written (most lookups are of paths the session
//! never touched) and a bounded cache of recent answers (the ancestors of
//! a path are looked up on every call).

use std::cmp::Ordering as Order;
use std::collections::{BTreeMap, HashMap, HashSet, btree_map};
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::iter::Peekable;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadOnlyTable, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::repo::ObjectId;
use encoding::decode;

mod encoding;

const JOURNAL: TableDefinition<&str, &[u8]> = TableDefinition::new("journal");

/// redb's page cache for a journal: enough for the inner pages of a
/// million-path journal, far from redb's default gigabyte.
const JOURNAL_CACHE_BYTES: usize = 16 << 20;

/// Flush on its own once this many changes are pending, to bound memory.
/// The mount's flusher writes batches long before this (see
/// [`Journal::wants_flush`]), so it is reached only when flushes fail or
/// fall behind.
const MAX_PENDING: usize = 100_000;

/// Pending changes at which a background flush is due before its time.
const FLUSH_SOON_PENDING: usize = 25_000;

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

/// A background flush of a journal's batch (see [`Journal::begin_flush`]).
pub struct FlushJob {
    db: Arc<Database>,
    batch: Arc<Changes>,
    taken_over: Arc<Mutex<bool>>,
}

impl FlushJob {
    /// Write the batch in one durable transaction, unless a
    /// [`Journal::flush`] took it over; gives the table it leaves, for
    /// [`Journal::finish_flush`].
    pub fn write(&self) -> io::Result<FlushedTable> {
        // Held while writing, so that a flush taking over waits for this
        // write instead of being overwritten by it.
        let taken_over = lock(&self.taken_over);
        if *taken_over {
            return Ok(FlushedTable(None));
        }
        write_changes(&self.db, &self.batch)?;
        Ok(FlushedTable(Some(snapshot(&self.db)?)))
    }
}

/// A flush being written on a thread of its own (see
/// [`Journal::flush_on_thread`]); `None` if there was nothing to write
/// there.
#[must_use = "join the flush, or its batch stays in flight"]
pub struct FlushThread(Option<std::thread::JoinHandle<(FlushJob, io::Result<FlushedTable>)>>);

/// The table a [`FlushJob`] left (none if it was taken over).
pub struct FlushedTable(Option<Table>);

/// The batch a background flush is writing.
struct InFlight {
    batch: Arc<Changes>,
    taken_over: Arc<Mutex<bool>>,
}

/// No changes, for a journal with no flush under way.
static NO_CHANGES: Changes = BTreeMap::new();

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
    /// changes over the batch being flushed over the flushed table.
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
            let mut pending = Unflushed::from(&self.pending, self.flushing_batch(), &from);
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

    /// Whether changes wait for a flush (one under way does not count).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether a background flush should begin now although its interval
    /// has not passed: enough changes are pending, and none is under way.
    pub fn wants_flush(&self) -> bool {
        self.pending.len() >= FLUSH_SOON_PENDING && self.flushing.is_none()
    }

    /// Write the pending changes in one durable transaction, with those
    /// of a background flush under way, which this takes over.
    pub fn flush(&mut self) -> io::Result<()> {
        self.take_back_flushing();
        if self.pending.is_empty() {
            return Ok(());
        }
        self.reopen_after_failure()?;
        if let Err(e) = write_changes(&self.db, &self.pending) {
            self.reopen = true;
            return Err(e);
        }
        self.pending.clear();
        self.flushed = snapshot(&self.db)?;
        self.cache.get_mut().unwrap().clear();
        Ok(())
    }

    /// Move the pending changes aside for a [`FlushJob`] to write without
    /// holding the journal. `None` if nothing is pending or a flush is
    /// under way already.
    pub fn begin_flush(&mut self) -> Option<FlushJob> {
        if self.pending.is_empty() || self.flushing.is_some() {
            return None;
        }
        // Until the database opens again, nothing can be written; the
        // next flush tries again, and `flush` reports why.
        if self.reopen_after_failure().is_err() {
            return None;
        }
        let batch = Arc::new(std::mem::take(&mut self.pending));
        let taken_over = Arc::new(Mutex::new(false));
        self.flushing = Some(InFlight {
            batch: batch.clone(),
            taken_over: taken_over.clone(),
        });
        Some(FlushJob {
            db: self.db.clone(),
            batch,
            taken_over,
        })
    }

    /// Write the pending changes durably on a thread of their own while
    /// the caller goes on reading the journal (a commit reads it whole);
    /// [`Journal::join_flush`] waits for the write and takes its result.
    /// With a background flush under way already, whose writer cannot
    /// finish it while the caller holds the journal, this flushes here
    /// and now instead, taking that flush over.
    pub fn flush_on_thread(&mut self) -> io::Result<FlushThread> {
        if self.flushing.is_some() || self.reopen {
            self.flush()?;
            return Ok(FlushThread(None));
        }
        let Some(job) = self.begin_flush() else {
            return Ok(FlushThread(None));
        };
        let spawned = std::thread::Builder::new()
            .name("journal-flush".into())
            .spawn(move || {
                let written = job.write();
                (job, written)
            });
        match spawned {
            Ok(writer) => Ok(FlushThread(Some(writer))),
            // The job went with the closure; its batch is still in flight.
            Err(_) => {
                self.flush()?;
                Ok(FlushThread(None))
            }
        }
    }

    /// Wait for a flush begun with [`Journal::flush_on_thread`] and take
    /// its result, as [`Journal::finish_flush`] does.
    pub fn join_flush(&mut self, flush: FlushThread) -> io::Result<()> {
        let Some(writer) = flush.0 else {
            return Ok(());
        };
        match writer.join() {
            Ok((job, written)) => self.finish_flush(job, written),
            // The writer panicked: its batch is still in flight.
            Err(_) => self.flush(),
        }
    }

    /// Take the result of `job`. If it failed, its batch is pending again
    /// (under the changes made since), and the error is returned. A job
    /// that a [`Journal::flush`] took over, or of another journal, leaves
    /// this one as it is.
    pub fn finish_flush(
        &mut self,
        job: FlushJob,
        written: io::Result<FlushedTable>,
    ) -> io::Result<()> {
        let ours = self
            .flushing
            .as_ref()
            .is_some_and(|f| Arc::ptr_eq(&f.taken_over, &job.taken_over));
        drop(job);
        if !ours {
            return written.map(|_| ());
        }
        match written {
            Ok(FlushedTable(table)) => {
                // Ours, so not taken over: the job wrote a table.
                if let Some(table) = table {
                    self.flushed = table;
                }
                self.flushing = None;
                self.cache.get_mut().unwrap().clear();
                Ok(())
            }
            Err(e) => {
                self.take_back_flushing();
                self.reopen = true;
                Err(e)
            }
        }
    }

    fn flushing_batch(&self) -> &Changes {
        self.flushing.as_ref().map_or(&NO_CHANGES, |f| &f.batch)
    }

    /// Make the batch of a flush under way pending again, under the
    /// changes made since. Waits for the job if it is writing, and stops
    /// it from writing after.
    fn take_back_flushing(&mut self) {
        let Some(in_flight) = self.flushing.take() else {
            return;
        };
        *lock(&in_flight.taken_over) = true;
        let batch = Arc::try_unwrap(in_flight.batch).unwrap_or_else(|shared| (*shared).clone());
        for (path, entry) in batch {
            self.pending.entry(path).or_insert(entry);
        }
    }

    /// After a write failed (a full disk, say), redb refuses every later
    /// one ("previous I/O error") until its database is opened again, so
    /// a session could neither flush nor commit, and lost its changes at
    /// unmount, even once the disk had room. Open it again. First the
    /// flushed table is read into the pending changes, so that reads go
    /// on from memory whatever happens and the next flush writes it back;
    /// then the database is closed (its file can be open once) and
    /// opened. If that fails, the journal stays in memory and the next
    /// flush tries again.
    fn reopen_after_failure(&mut self) -> io::Result<()> {
        if !self.reopen {
            return Ok(());
        }
        if self.flushing.is_some() || Arc::strong_count(&self.db) > 1 {
            return Err(io::Error::other(format!(
                "session journal {}: a write failed, and it cannot be opened again while a flush is under way; try again",
                self.path.display()
            )));
        }
        let (placeholder, empty) = in_memory_journal()?;
        for row in self.flushed.iter().map_err(db_error)? {
            let (key, value) = row.map_err(db_error)?;
            if !self.pending.contains_key(key.value()) {
                let entry = decode(&self.path, key.value(), value.value())?;
                self.pending.insert(key.value().to_owned(), Some(entry));
            }
        }
        self.flushed = empty;
        self.cache.get_mut().unwrap().clear();
        // Closes the file's database: nothing else holds it.
        self.db = Arc::new(placeholder);
        let db = open_database(&self.path)?;
        self.flushed = snapshot(&db)?;
        self.db = Arc::new(db);
        self.reopen = false;
        tracing::info!(journal = %self.path.display(), "session journal opened again after a failed write");
        Ok(())
    }
}

/// The pending changes over the batch being flushed, from a path on, in
/// path order: what a journal holds beyond its flushed table.
struct Unflushed<'a> {
    newer: Peekable<btree_map::Range<'a, String, Option<JournalEntry>>>,
    older: Peekable<btree_map::Range<'a, String, Option<JournalEntry>>>,
}

impl<'a> Unflushed<'a> {
    fn from(newer: &'a Changes, older: &'a Changes, from: &str) -> Unflushed<'a> {
        let range = (Bound::Included(from), Bound::Unbounded);
        Unflushed {
            newer: newer.range::<str, _>(range).peekable(),
            older: older.range::<str, _>(range).peekable(),
        }
    }
}

impl<'a> Iterator for Unflushed<'a> {
    type Item = (&'a String, &'a Option<JournalEntry>);

    fn next(&mut self) -> Option<Self::Item> {
        let order = match (self.newer.peek(), self.older.peek()) {
            (None, None) => return None,
            (Some(_), None) => Order::Less,
            (None, Some(_)) => Order::Greater,
            (Some((n, _)), Some((o, _))) => n.cmp(o),
        };
        match order {
            Order::Less => self.newer.next(),
            Order::Greater => self.older.next(),
            Order::Equal => {
                self.older.next();
                self.newer.next()
            }
        }
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

/// An empty journal database in memory, and its table: what a journal
/// holds while its file's database is closed to be opened again.
fn in_memory_journal() -> io::Result<(Database, Table)> {
    let db = redb::Builder::new()
        .create_with_backend(redb::backends::InMemoryBackend::new())
        .map_err(db_error)?;
    create_table(&db)?;
    let table = snapshot(&db)?;
    Ok((db, table))
}

/// A redb error as an I/O error, keeping the system's error (ENOSPC,
/// EIO, ...) where there is one.
fn db_error(e: impl Into<redb::Error>) -> io::Error {
    match e.into() {
        redb::Error::Io(e) => e,
        other => io::Error::other(other),
    }
}

/// Write `changes` into the journal table in one durable transaction.
fn write_changes(db: &Database, changes: &Changes) -> io::Result<()> {
    let txn = db.begin_write().map_err(db_error)?;
    {
        let mut table = txn.open_table(JOURNAL).map_err(db_error)?;
        for (path, entry) in changes {
            match entry {
                Some(entry) => {
                    let bytes = entry.encode();
                    table
                        .insert(path.as_str(), bytes.as_slice())
                        .map_err(db_error)?;
                }
                None => {
                    table.remove(path.as_str()).map_err(db_error)?;
                }
            }
        }
    }
    txn.commit().map_err(db_error)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The table as it is now, readable until dropped.
fn snapshot(db: &Database) -> io::Result<Table> {
    let read = db.begin_read().map_err(db_error)?;
    read.open_table(JOURNAL).map_err(db_error)
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
