//! Writing a journal to its database: the pending changes go in one
//! durable transaction, now ([`Journal::flush`]), in the background
//! while the session goes on ([`Journal::begin_flush`], [`FlushJob`],
//! [`Journal::finish_flush`]) or on a thread while a commit reads the
//! journal ([`Journal::flush_on_thread`]). After a failed write the
//! database is opened again before the next one
//! ([`Journal::reopen_after_failure`]).

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableTable};

use super::encoding::decode;
use super::{
    Changes, JOURNAL, Journal, Table, create_table, db_error, lock, open_database, snapshot,
};

/// Pending changes at which a background flush is due before its time.
const FLUSH_SOON_PENDING: usize = 25_000;

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
pub(super) struct InFlight {
    batch: Arc<Changes>,
    taken_over: Arc<Mutex<bool>>,
}

/// No changes, for a journal with no flush under way.
static NO_CHANGES: Changes = BTreeMap::new();

impl Journal {
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

    pub(super) fn flushing_batch(&self) -> &Changes {
        self.flushing.as_ref().map_or(&NO_CHANGES, |f| &f.batch)
    }

    /// Make the batch of a flush under way pending again, under the
    /// changes made since. Waits for the job if it is writing, and stops
    /// it from writing after.
    pub(super) fn take_back_flushing(&mut self) {
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
