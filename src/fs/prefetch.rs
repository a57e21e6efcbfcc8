//! Reading ahead across files: when a program opens the files of one
//! directory for reading one after another, as a Zarr reader walks an
//! array's chunks, the files it will open next are read into the page
//! cache in the background. (`cp -r`, `tar` and `rsync` walk a directory
//! in listing order, which is byte order: they benefit where names sort
//! the same way as numbers, zero-padded or not numbered at all.)
//!
//! The kernel reads ahead within a file, never across files, so a
//! program reading many small files from a cold cache waits for the disk
//! once per file. Through a mount it also waits for the daemon several
//! times per file (lookup, open), and the two waits add up: reading
//! 30,000 files of 4 KiB from a cold cache took 7-8 s through a mount
//! against 3 s on the plain directory, while the same read with the
//! files' objects read ahead took 3.9-4.1 s. Committed files are objects
//! on local disk and staged files are local files, so reading ahead is
//! `posix_fadvise(WILLNEED)` on each: the kernel queues the reads and
//! the passthrough read that follows finds the pages in memory. Large
//! files are opened on several threads at once: opening one reads its
//! object directory from the disk, and those reads must overlap too.
//!
//! Like the kernel's own readahead, it starts only when a directory is
//! being read in sequence, and widens while the sequence goes on:
//! - a directory's order is its names in natural order (`c9` before
//!   `c10`, so that Zarr's numbered chunks come in the order readers
//!   read them), listed once per view by the worker thread;
//! - an open near the last one (a little behind, as readers with
//!   several threads send them, or within the window ahead) continues
//!   the sequence; anything else restarts it with the smallest window;
//! - when the sequence comes within half a window of what was read
//!   ahead, the next window is read ahead, twice as wide as the last, up
//!   to [`MAX_WINDOW`] files and [`MAX_AHEAD_BYTES`] (of each file, the
//!   first [`MAX_FILE_AHEAD`]: the kernel's readahead does the rest);
//! - when the sequence has read ahead to the directory's end, a window of
//!   the directory after it is read ahead as well ([`next_dir`]: Zarr 3
//!   keeps each row of chunks in a directory of its own, `c/1/0` after
//!   `c/0/31`), and the sequence there goes on when its reader arrives.
//!
//! Only opens for reading count: `ls -l`, `du` and `find` look files up
//! without reading them, and writers open files they will replace.
//! Nothing depends on it for correctness: a file read ahead that the
//! program never opens costs a read of the disk. A directory is listed
//! once per view (until a commit, checkout or discard): files made after
//! its listing are not read ahead, and files removed since are skipped.
//! The work is bounded: [`MAX_DIRS`] sequences, [`MAX_LISTED`] files
//! listed in all, [`JOB_QUEUE`] jobs waiting (more are dropped).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use super::control;
use super::core::{Fs, lock};
use crate::session::{FileLocator, FileSource, Session};

/// The first window of a sequence, in files.
const FIRST_WINDOW: usize = 16;
/// The widest window, in files.
const MAX_WINDOW: usize = 512;
/// At most this many bytes are read ahead at once.
const MAX_AHEAD_BYTES: u64 = 64 << 20;
/// At most the first this many bytes of a file are read ahead: the
/// kernel's own readahead takes over once the program reads it.
const MAX_FILE_AHEAD: u64 = 16 << 20;
/// Most threads that read a window's files ahead together, one per
/// this many bytes of it (see [`Prefetcher::warm`]): small files keep one
/// thread busy enough, and more took the CPU their reader needed
/// (100,000 files of 4 KiB read back in 5.5-6.1 s with eight, 4.5-4.6 s
/// with one).
const WARMERS: usize = 8;
const BYTES_PER_WARMER: u64 = 8 << 20;
/// How far behind the newest open of a sequence an open may be and still
/// continue it (readers with several threads open out of order).
const REORDER: usize = 64;
/// How many directories' sequences are followed at once; the least
/// recently opened one is forgotten beyond.
const MAX_DIRS: usize = 16;
/// Most files listed for reading ahead, in all directories followed
/// (about 100 bytes each): the least recently opened directories are
/// forgotten beyond, and a directory with more files is not read ahead.
const MAX_LISTED: usize = 500_000;

/// A directory's files in the order they are read ahead.
struct DirOrder {
    /// Name and where its bytes are, in [`natural_cmp`] order.
    files: Vec<(Box<str>, FileSource)>,
    locator: FileLocator,
}

impl DirOrder {
    fn new(mut files: Vec<(String, FileSource)>, locator: FileLocator) -> DirOrder {
        files.sort_unstable_by(|a, b| natural_cmp(&a.0, &b.0));
        DirOrder {
            files: files
                .into_iter()
                .map(|(name, source)| (name.into_boxed_str(), source))
                .collect(),
            locator,
        }
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.files
            .binary_search_by(|(other, _)| natural_cmp(other, name))
            .ok()
    }

    /// The end of a window of at most `files` files from `start`, within
    /// the byte budget (at least one file, if there is one).
    fn window_end(&self, start: usize, files: usize) -> usize {
        let mut bytes = 0;
        let mut end = start;
        for (_, source) in self.files.iter().skip(start).take(files) {
            let size = match source {
                FileSource::Blob { size, .. } => (*size).min(MAX_FILE_AHEAD),
                FileSource::Staged(_) => 0,
            };
            if end > start && bytes + size > MAX_AHEAD_BYTES {
                break;
            }
            bytes += size;
            end += 1;
        }
        end
    }

    /// Where files `start..end` go past [`MAX_AHEAD_BYTES`] (the first
    /// file and the one that crosses it are in), and the bytes of the
    /// files in. Unlike
    /// [`DirOrder::window_end`], which runs under the sequences' lock and
    /// counts staged files as nothing, this looks a staged file's size up,
    /// in the session's own directory.
    fn within_budget(&self, start: usize, end: usize) -> (usize, u64) {
        let mut bytes = 0;
        for i in start..end {
            if i > start && bytes >= MAX_AHEAD_BYTES {
                return (i, bytes);
            }
            let size = match self.files[i].1 {
                FileSource::Blob { size, .. } => size,
                staged @ FileSource::Staged(_) => {
                    std::fs::metadata(self.locator.path(staged)).map_or(0, |m| m.len())
                }
            };
            bytes += size.min(MAX_FILE_AHEAD);
        }
        (end, bytes)
    }
}

/// The sequence of opens in one directory.
struct DirScan {
    /// The view generation the order was listed in.
    generation: u64,
    order: Option<Arc<DirOrder>>,
    /// The worker was asked for the order.
    listing: bool,
    /// The last two names opened before the order was known, oldest
    /// first: the sequence is replayed from them once it is.
    early: Vec<Box<str>>,
    /// The furthest position the sequence has opened.
    last: Option<usize>,
    /// Files before this position have been read ahead.
    ahead_to: usize,
    /// The size of the last window read ahead, in files (0: none yet).
    window: usize,
    /// When it was last opened, for forgetting the oldest.
    tick: u64,
    /// The directory after this one was read ahead (see [`DirScan::beyond`]).
    handed_on: bool,
}

impl DirScan {
    fn new(generation: u64) -> DirScan {
        DirScan {
            generation,
            order: None,
            listing: false,
            early: Vec::new(),
            last: None,
            ahead_to: 0,
            window: 0,
            tick: 0,
            handed_on: false,
        }
    }

    /// Follow an open at `pos`; the files to read ahead now, if any.
    fn opened_at(&mut self, pos: usize) -> Option<(usize, usize)> {
        let order = self.order.as_ref()?;
        let continues = match self.last {
            Some(last) => pos + REORDER >= last && pos <= last + self.window.max(FIRST_WINDOW),
            // Read ahead from its start by the sequence of the directory
            // before it (`Prefetcher::primed`): the reader came on.
            None => self.window > 0 && pos < self.ahead_to,
        };
        if !continues {
            self.window = 0;
            self.ahead_to = pos + 1;
            self.handed_on = false;
            self.last = Some(pos);
            // A single open is no sequence yet: wait for the next.
            return None;
        }
        let last = self.last.map_or(pos, |last| last.max(pos));
        self.last = Some(last);
        if self.window > 0 && self.ahead_to > last + self.window / 2 {
            return None;
        }
        let size = if self.window == 0 {
            FIRST_WINDOW
        } else {
            (self.window * 2).min(MAX_WINDOW)
        };
        let start = self.ahead_to.max(last + 1);
        let end = order.window_end(start, size);
        self.ahead_to = end;
        self.window = size;
        (start < end).then_some((start, end))
    }

    /// Once the sequence has read ahead to the directory's end: how many
    /// files of the next directory to read ahead (its window), once.
    /// Zarr's default chunk keys put each row of chunks in a directory of
    /// its own (`c/0/0`..`c/0/31`, then `c/1/0`), so a reader of an array
    /// goes on to the next directory, and would otherwise find the first
    /// files there cold while the sequence there starts.
    fn beyond(&mut self) -> Option<usize> {
        let order = self.order.as_ref()?;
        if self.handed_on || self.window == 0 || self.ahead_to < order.files.len() {
            return None;
        }
        self.handed_on = true;
        Some(self.window)
    }
}

/// What the worker thread is asked to do.
enum Job {
    /// List a directory of the view of `generation`, then follow its
    /// sequence.
    List { generation: u64, dir: String },
    /// Read files `start..end` of the order of `dir` ahead.
    Warm {
        generation: u64,
        dir: String,
        order: Arc<DirOrder>,
        start: usize,
        end: usize,
    },
    /// The sequence of `dir` reached its end: read the first `files`
    /// files of the directory after it ahead (see [`DirScan::beyond`]).
    Next {
        generation: u64,
        dir: String,
        files: usize,
    },
}

/// How many jobs may wait for the worker; beyond, new ones are dropped
/// (reading ahead is a head start, never owed).
const JOB_QUEUE: usize = 64;

/// The sequences being followed, and the way to the worker thread.
#[derive(Default)]
pub struct Prefetcher {
    /// The worker runs ([`Fs::start_prefetch`]); without it (tests that
    /// drive `Fs` directly, `--no-prefetch`) nothing is read ahead.
    enabled: AtomicBool,
    scans: Mutex<HashMap<String, DirScan>>,
    ticks: AtomicU64,
    jobs: Mutex<Option<mpsc::SyncSender<Job>>>,
    /// Files read ahead, and their bytes, for the log at unmount.
    warmed_files: AtomicU64,
    warmed_bytes: AtomicU64,
}

impl Prefetcher {
    /// Stop reading ahead: the worker ends after the job it is on.
    fn stop(&self) {
        self.enabled.store(false, AtomicOrdering::Relaxed);
        lock(&self.jobs).take();
    }

    fn stopped(&self) -> bool {
        !self.enabled.load(AtomicOrdering::Relaxed)
    }

    /// Queue a job; false if the queue is full (or the worker gone).
    fn send(&self, job: Job) -> bool {
        lock(&self.jobs)
            .as_ref()
            .is_some_and(|jobs| jobs.try_send(job).is_ok())
    }

    /// The file `name` of view directory `dir` was opened for reading, in
    /// the view of `generation`.
    pub(super) fn opened(&self, generation: u64, dir: &str, name: &str) {
        if self.stopped() {
            return;
        }
        let mut scans = lock(&self.scans);
        let scan = self.follow(&mut scans, generation, dir);
        let Some(order) = scan.order.clone() else {
            // The second file opened in a directory asks for its order;
            // the worker then replays the opens so far.
            if scan.early.last().is_some_and(|last| **last == *name) {
                return;
            }
            if scan.early.len() == 2 {
                scan.early.remove(0);
            }
            scan.early.push(name.into());
            if !scan.listing && scan.early.len() == 2 {
                let job = Job::List {
                    generation,
                    dir: dir.to_owned(),
                };
                // Asked again at the next open if the queue is full.
                scan.listing = self.send(job);
            }
            return;
        };
        let Some(pos) = order.position(name) else {
            return; // made after the listing
        };
        let window = scan.opened_at(pos);
        let beyond = scan.beyond();
        drop(scans);
        if let Some((start, end)) = window {
            self.send(Job::Warm {
                generation,
                dir: dir.to_owned(),
                order,
                start,
                end,
            });
        }
        if let Some(files) = beyond {
            self.send(Job::Next {
                generation,
                dir: dir.to_owned(),
                files,
            });
        }
    }

    /// The sequence of `dir` in the view of `generation`, made if there
    /// is none (forgetting the least recently opened one beyond
    /// [`MAX_DIRS`]), and counted as opened now.
    fn follow<'a>(
        &self,
        scans: &'a mut HashMap<String, DirScan>,
        generation: u64,
        dir: &str,
    ) -> &'a mut DirScan {
        let tick = self.ticks.fetch_add(1, AtomicOrdering::Relaxed);
        if !scans.contains_key(dir) {
            if scans.len() >= MAX_DIRS {
                let oldest = scans
                    .iter()
                    .min_by_key(|(_, scan)| scan.tick)
                    .map(|(dir, _)| dir.clone());
                if let Some(oldest) = oldest {
                    scans.remove(&oldest);
                }
            }
            scans.insert(dir.to_owned(), DirScan::new(generation));
        }
        let scan = scans.get_mut(dir).expect("inserted above");
        if scan.generation != generation {
            *scan = DirScan::new(generation);
        }
        scan.tick = tick;
        scan
    }

    /// The worker listed `dir`: follow the opens made so far; the files
    /// to read ahead now, if any.
    fn listed(&self, generation: u64, dir: &str, order: Arc<DirOrder>) -> Option<(usize, usize)> {
        let mut scans = lock(&self.scans);
        make_room(&mut scans, dir, order.files.len());
        let scan = scans.get_mut(dir).filter(|s| s.generation == generation)?;
        scan.order = Some(order.clone());
        let mut ahead = None;
        for name in std::mem::take(&mut scan.early) {
            if let Some(pos) = order.position(&name) {
                ahead = scan.opened_at(pos);
            }
        }
        ahead
    }

    /// The worker listed `dir`, the directory after one whose sequence
    /// reached its end ([`DirScan::beyond`]): follow its sequence as if
    /// its reader were at its start, with its first `files` files read
    /// ahead; the files to read ahead now, if any. Nothing if the reader
    /// got there first (its own sequence is followed).
    fn primed(
        &self,
        generation: u64,
        dir: &str,
        order: Arc<DirOrder>,
        files: usize,
    ) -> Option<(usize, usize)> {
        let mut scans = lock(&self.scans);
        if scans.get(dir).is_some_and(|scan| {
            scan.generation == generation && (scan.order.is_some() || !scan.early.is_empty())
        }) {
            return None;
        }
        make_room(&mut scans, dir, order.files.len());
        let scan = self.follow(&mut scans, generation, dir);
        let end = order.window_end(0, files);
        scan.order = Some(order);
        scan.window = files;
        scan.ahead_to = end;
        (end > 0).then_some((0, end))
    }

    /// Read files `start..end` of `order` into the page cache, within
    /// [`MAX_AHEAD_BYTES`]; where it stopped.
    ///
    /// Up to [`WARMERS`] threads take the files in turn. Opening a file
    /// of a large repository reads a block of its object directory from
    /// the disk, and one thread waited for those reads one after another
    /// (behind the data reads it had asked for): 25-40 ms of every 64
    /// files of 1 MiB, so that it fell behind the reader it was to be
    /// ahead of.
    fn warm(&self, order: &DirOrder, start: usize, end: usize) -> usize {
        let (end, bytes) = order.within_budget(start, end);
        let next = AtomicUsize::new(start);
        let stopped_at = AtomicUsize::new(end);
        let warm_some = || {
            loop {
                let i = next.fetch_add(1, AtomicOrdering::Relaxed);
                if i >= end {
                    return;
                }
                if self.stopped() {
                    stopped_at.fetch_min(i, AtomicOrdering::Relaxed);
                    return;
                }
                // A file gone meanwhile is nothing to read.
                if let Some(size) = warm_file(&order.locator.path(order.files[i].1)) {
                    self.warmed_files.fetch_add(1, AtomicOrdering::Relaxed);
                    self.warmed_bytes.fetch_add(size, AtomicOrdering::Relaxed);
                }
            }
        };
        let warmers = (bytes / BYTES_PER_WARMER).clamp(1, WARMERS as u64) as usize;
        let helpers = warmers.min(end.saturating_sub(start)).saturating_sub(1);
        std::thread::scope(|scope| {
            for _ in 0..helpers {
                // Without a thread, the worker warms them all itself.
                let _ = std::thread::Builder::new()
                    .name("zarrfs-warm".into())
                    .spawn_scoped(scope, warm_some);
            }
            warm_some();
        });
        stopped_at.into_inner()
    }

    /// How many files of the directory after `dir` to read ahead, if its
    /// sequence just reached its end ([`DirScan::beyond`]).
    fn hand_on(&self, generation: u64, dir: &str) -> Option<usize> {
        lock(&self.scans)
            .get_mut(dir)
            .filter(|scan| scan.generation == generation)
            .and_then(DirScan::beyond)
    }

    /// A window of `dir` was read ahead only up to `reached`: the next
    /// one starts there.
    fn warmed_to(&self, generation: u64, dir: &str, end: usize, reached: usize) {
        if let Some(scan) = lock(&self.scans).get_mut(dir)
            && scan.generation == generation
            && scan.ahead_to == end
        {
            scan.ahead_to = reached;
        }
    }
}

/// Forget the orders of the directories opened least recently until one
/// of `files` more, for `dir`, fits [`MAX_LISTED`].
fn make_room(scans: &mut HashMap<String, DirScan>, dir: &str, files: usize) {
    let mut listed: usize = scans
        .values()
        .filter_map(|scan| scan.order.as_ref().map(|order| order.files.len()))
        .sum();
    while listed + files > MAX_LISTED {
        let oldest = scans
            .iter()
            .filter(|(other, scan)| scan.order.is_some() && other.as_str() != dir)
            .min_by_key(|(_, scan)| scan.tick)
            .map(|(other, _)| other.clone());
        let Some(oldest) = oldest else {
            break;
        };
        if let Some(forgotten) = scans.remove(&oldest).and_then(|scan| scan.order) {
            listed -= forgotten.files.len();
        }
    }
}

/// Have the kernel read `path`'s first [`MAX_FILE_AHEAD`] bytes into the
/// page cache, without waiting for them; how many that is, `None` if the
/// file is gone.
fn warm_file(path: &std::path::Path) -> Option<u64> {
    let file = std::fs::File::open(path).ok()?;
    let size = file.metadata().map_or(0, |m| m.len()).min(MAX_FILE_AHEAD);
    // SAFETY: posix_fadvise on an open descriptor.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            0,
            size as libc::off_t,
            libc::POSIX_FADV_WILLNEED,
        )
    };
    Some(size)
}

/// The read-ahead worker thread of a mount; stopped and waited for when
/// dropped, also when the mount fails part way.
pub struct PrefetchWorker {
    fs: Arc<Fs>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for PrefetchWorker {
    fn drop(&mut self) {
        self.fs.prefetch.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        tracing::info!(
            files = self.fs.prefetch.warmed_files.load(AtomicOrdering::Relaxed),
            bytes = self.fs.prefetch.warmed_bytes.load(AtomicOrdering::Relaxed),
            "files read ahead"
        );
    }
}

impl Fs {
    /// Start the thread that lists directories and reads files ahead.
    pub(super) fn start_prefetch(self: &Arc<Self>) -> io::Result<PrefetchWorker> {
        let (jobs, queue) = mpsc::sync_channel(JOB_QUEUE);
        *lock(&self.prefetch.jobs) = Some(jobs);
        self.prefetch.enabled.store(true, AtomicOrdering::Relaxed);
        let fs = self.clone();
        let spawned = std::thread::Builder::new()
            .name("zarrfs-prefetch".into())
            .spawn(move || fs.prefetch_worker(queue));
        match spawned {
            Ok(thread) => Ok(PrefetchWorker {
                fs: self.clone(),
                thread: Some(thread),
            }),
            Err(e) => {
                self.prefetch.stop();
                Err(e)
            }
        }
    }

    fn prefetch_worker(&self, jobs: mpsc::Receiver<Job>) {
        while let Ok(job) = jobs.recv() {
            if self.prefetch.stopped() {
                return;
            }
            match job {
                Job::List { generation, dir } => {
                    let Some(order) = self.order_of(generation, &dir) else {
                        continue;
                    };
                    if let Some((start, end)) =
                        self.prefetch.listed(generation, &dir, order.clone())
                    {
                        let reached = self.prefetch.warm(&order, start, end);
                        self.prefetch.warmed_to(generation, &dir, end, reached);
                    }
                    // A directory short enough to be read ahead whole at once.
                    if let Some(files) = self.prefetch.hand_on(generation, &dir) {
                        self.read_ahead_after(generation, &dir, files);
                    }
                }
                Job::Warm {
                    generation,
                    dir,
                    order,
                    start,
                    end,
                } => {
                    let reached = self.prefetch.warm(&order, start, end);
                    self.prefetch.warmed_to(generation, &dir, end, reached);
                }
                Job::Next {
                    generation,
                    dir,
                    files,
                } => self.read_ahead_after(generation, &dir, files),
            }
        }
    }

    /// The files of view directory `dir` in reading order, if the view is
    /// still that of `generation` and the directory not too large.
    fn order_of(&self, generation: u64, dir: &str) -> Option<Arc<DirOrder>> {
        let session = self.session_read();
        if session.generation() != generation {
            return None;
        }
        match session.file_sources(dir, MAX_LISTED) {
            Ok(Some(files)) => Some(Arc::new(DirOrder::new(files, session.file_locator()))),
            // Too many files: not read ahead in this view.
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(dir, error = %e, "read-ahead: listing failed");
                None
            }
        }
    }

    /// Read the first `files` files of the directory after `dir` ahead
    /// (see [`DirScan::beyond`]).
    fn read_ahead_after(&self, generation: u64, dir: &str, files: usize) {
        let next = {
            let session = self.session_read();
            if session.generation() != generation {
                return;
            }
            next_dir(&session, dir, LEVELS_UP)
        };
        let Some(next) = next else {
            return;
        };
        let Some(order) = self.order_of(generation, &next) else {
            return;
        };
        if let Some((start, end)) = self
            .prefetch
            .primed(generation, &next, order.clone(), files)
        {
            let reached = self.prefetch.warm(&order, start, end);
            self.prefetch.warmed_to(generation, &next, end, reached);
        }
    }
}

/// How many levels up [`next_dir`] looks for the directory after one: a
/// Zarr array of N dimensions keeps its chunks in directories N - 1 deep
/// (`c/i/j/k` for three), and after the last directory of one `c/i` comes
/// the first of `c/i+1`, one level up; so up to four dimensions.
const LEVELS_UP: usize = 2;

/// The directory a reader walking `dir` and the directories around it in
/// natural order goes to after it: its next sibling, or else the first
/// directory at the same depth under its parent's next sibling (`c/0/31`
/// is followed by `c/1/0`), looking up to `levels_up` levels up.
fn next_dir(session: &Session, dir: &str, levels_up: usize) -> Option<String> {
    if dir.is_empty() {
        return None;
    }
    let (parent, name) = dir.rsplit_once('/').unwrap_or(("", dir));
    let siblings = subdirectories(session, parent)?;
    let at = siblings.iter().position(|sibling| sibling == name)?;
    if let Some(next) = siblings.get(at + 1) {
        return Some(control::join(parent, next));
    }
    if levels_up == 0 {
        return None;
    }
    let parent_next = next_dir(session, parent, levels_up - 1)?;
    let first = subdirectories(session, &parent_next)?.into_iter().next()?;
    Some(control::join(&parent_next, &first))
}

/// The directories in view directory `dir`, in natural order.
fn subdirectories(session: &Session, dir: &str) -> Option<Vec<String>> {
    let mut dirs = session.subdirectories(dir, MAX_LISTED).ok()??;
    dirs.sort_unstable_by(|a, b| natural_cmp(a, b));
    Some(dirs)
}

/// Names in the order Zarr and people number them: runs of digits
/// compare as numbers (`c9` before `c10`, `0.9` before `0.10`), other
/// bytes as bytes; names equal that way (`f01`, `f1`) in byte order.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let (digits_x, rest_x) =
                    x.split_at(x.iter().take_while(|c| c.is_ascii_digit()).count());
                let (digits_y, rest_y) =
                    y.split_at(y.iter().take_while(|c| c.is_ascii_digit()).count());
                let value_x = trim_zeros(digits_x);
                let value_y = trim_zeros(digits_y);
                let by_value = value_x
                    .len()
                    .cmp(&value_y.len())
                    .then_with(|| value_x.cmp(value_y));
                if by_value != Ordering::Equal {
                    return by_value;
                }
                (x, y) = (rest_x, rest_y);
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                (x, y) = (&x[1..], &y[1..]);
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn natural_order_puts_numbered_names_in_number_order() {
        let mut names = vec![
            "c10", "c9", "c1", "c100", "c0", "d", "c", "0.10", "0.9", "1.0",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "0.9", "0.10", "1.0", "c", "c0", "c1", "c9", "c10", "c100", "d"
            ]
        );
        // Zero-padded names keep their byte order.
        assert_eq!(natural_cmp("f0009", "f0010"), Ordering::Less);
        // Equal as numbers, then by bytes: a total order.
        assert_eq!(natural_cmp("f01", "f1"), Ordering::Less);
        assert_eq!(natural_cmp("f1", "f01"), Ordering::Greater);
    }

    proptest! {
        /// `sort` needs a total order: antisymmetric, transitive, equal
        /// only for equal names.
        #[test]
        fn natural_order_is_total(a in "[a0-2._]{0,6}", b in "[a0-2._]{0,6}", c in "[a0-2._]{0,6}") {
            prop_assert_eq!(natural_cmp(&a, &b), natural_cmp(&b, &a).reverse());
            prop_assert_eq!(natural_cmp(&a, &b) == Ordering::Equal, a == b);
            if natural_cmp(&a, &b) != Ordering::Greater && natural_cmp(&b, &c) != Ordering::Greater {
                prop_assert_ne!(natural_cmp(&a, &c), Ordering::Greater);
            }
        }
    }

    /// An order of `n` committed files of `size` bytes, `c0` to `cN`.
    fn order(n: usize, size: u64) -> Arc<DirOrder> {
        let (_dir, fs) = crate::fs::testing::fs();
        let locator = fs.with_session(|session| session.file_locator());
        let files = (0..n)
            .map(|i| {
                let id = crate::repo::ObjectId::of(&i.to_le_bytes());
                (format!("c{i}"), FileSource::Blob { id, size })
            })
            .collect();
        Arc::new(DirOrder::new(files, locator))
    }

    fn scan_of(order: Arc<DirOrder>) -> DirScan {
        let mut scan = DirScan::new(1);
        scan.order = Some(order);
        scan
    }

    #[test]
    fn a_sequence_reads_ahead_in_widening_windows() {
        let mut scan = scan_of(order(10_000, 4096));
        assert_eq!(scan.opened_at(0), None, "one open is no sequence");
        assert_eq!(scan.opened_at(1), Some((2, 2 + FIRST_WINDOW)));
        // Nothing more until the reader is half a window from the end.
        for pos in 2..=(2 + FIRST_WINDOW / 2 - 1) {
            assert_eq!(scan.opened_at(pos), None, "at {pos}");
        }
        let (start, end) = scan.opened_at(2 + FIRST_WINDOW / 2).unwrap();
        assert_eq!((start, end - start), (2 + FIRST_WINDOW, 2 * FIRST_WINDOW));
        // Windows stop growing at MAX_WINDOW.
        let mut widest = 0;
        for pos in 11..10_000 {
            if let Some((start, end)) = scan.opened_at(pos) {
                assert!(start > pos, "reads ahead, not behind");
                widest = widest.max(end - start);
            }
        }
        assert_eq!(widest, MAX_WINDOW);
    }

    #[test]
    fn opens_out_of_order_continue_a_sequence_and_jumps_restart_it() {
        let mut scan = scan_of(order(10_000, 4096));
        scan.opened_at(10);
        assert!(scan.opened_at(12).is_some());
        // A little behind: still the same sequence, nothing new to read.
        assert_eq!(scan.opened_at(11), None);
        assert_eq!(scan.window, FIRST_WINDOW);
        // Far away: a new sequence, which needs a second open to begin.
        assert_eq!(scan.opened_at(5_000), None);
        assert_eq!(scan.window, 0);
        assert_eq!(scan.opened_at(5_001), Some((5_002, 5_002 + FIRST_WINDOW)));
    }

    #[test]
    fn a_sequence_that_reads_ahead_to_its_directorys_end_hands_on_once() {
        let mut scan = scan_of(order(32, 1 << 20));
        scan.opened_at(0);
        assert_eq!(scan.opened_at(1), Some((2, 2 + FIRST_WINDOW)));
        assert_eq!(scan.beyond(), None, "the directory is not read to its end");
        let pos = 2 + FIRST_WINDOW / 2;
        assert_eq!(scan.opened_at(pos), Some((2 + FIRST_WINDOW, 32)));
        assert_eq!(scan.beyond(), Some(2 * FIRST_WINDOW), "its window goes on");
        for pos in pos + 1..32 {
            scan.opened_at(pos);
            assert_eq!(scan.beyond(), None, "handed on once (at {pos})");
        }
    }

    #[test]
    fn a_directory_read_ahead_before_its_reader_comes_continues_the_sequence() {
        let prefetcher = Prefetcher::default();
        let (jobs, queue) = mpsc::sync_channel(JOB_QUEUE);
        *lock(&prefetcher.jobs) = Some(jobs);
        prefetcher.enabled.store(true, AtomicOrdering::Relaxed);
        assert_eq!(
            prefetcher.primed(1, "c/1", order(64, 1 << 20), 32),
            Some((0, 32)),
            "its first window is read ahead"
        );
        // Its reader's first open continues the sequence: no listing, no
        // new start, nothing to read until half the window is behind.
        prefetcher.opened(1, "c/1", "c0");
        assert!(queue.try_recv().is_err(), "nothing asked at the first open");
        {
            let scans = lock(&prefetcher.scans);
            let scan = &scans["c/1"];
            assert_eq!((scan.last, scan.window, scan.ahead_to), (Some(0), 32, 32));
        }
        prefetcher.opened(1, "c/1", "c16");
        match queue.try_recv() {
            Ok(Job::Warm { start, end, .. }) => assert_eq!((start, end), (32, 64)),
            _ => panic!("the next window is read ahead"),
        }
        match queue.try_recv() {
            Ok(Job::Next { dir, files, .. }) => assert_eq!((dir.as_str(), files), ("c/1", 64)),
            _ => panic!("and the directory after it"),
        }
        // A directory whose reader came first is left to its own sequence.
        prefetcher.opened(1, "c/2", "c5");
        assert_eq!(prefetcher.primed(1, "c/2", order(64, 1 << 20), 32), None);
    }

    #[test]
    fn the_directory_after_the_last_of_a_row_is_the_first_of_the_next_row() {
        let (_dir, fs) = crate::fs::testing::fs();
        // Three dimensions: c/<i>/<j>/<k>, numbered past 9 so that natural
        // and byte order differ.
        for i in ["0", "1", "2", "10"] {
            for j in ["0", "1", "10"] {
                let dir = format!("arr/c/{i}/{j}");
                let mut parent = crate::fs::testing::ino(&fs, "").unwrap();
                for part in dir.split('/') {
                    parent = match fs.mkdir(parent, crate::fs::testing::name(part)) {
                        Ok(attr) => attr.ino.0,
                        Err(_) => {
                            fs.lookup(parent, crate::fs::testing::name(part))
                                .unwrap()
                                .ino
                                .0
                        }
                    };
                }
                crate::fs::testing::write_file(&fs, &dir, "0", b"chunk");
            }
        }
        fs.with_session(|session| {
            let next = |dir| next_dir(session, dir, LEVELS_UP);
            assert_eq!(next("arr/c/0/0").as_deref(), Some("arr/c/0/1"));
            assert_eq!(next("arr/c/0/1").as_deref(), Some("arr/c/0/10"));
            assert_eq!(next("arr/c/0/10").as_deref(), Some("arr/c/1/0"));
            assert_eq!(next("arr/c/2/10").as_deref(), Some("arr/c/10/0"));
            assert_eq!(next("arr/c/10/10"), None, "the last of the array");
            assert_eq!(next_dir(session, "arr/c/0/10", 0), None, "not looking up");
        });
    }

    #[test]
    fn listings_beyond_the_budget_forget_the_least_recently_opened_directory() {
        let prefetcher = Prefetcher::default();
        let (jobs, queue) = mpsc::sync_channel(JOB_QUEUE);
        *lock(&prefetcher.jobs) = Some(jobs);
        prefetcher.enabled.store(true, AtomicOrdering::Relaxed);
        let half = MAX_LISTED / 2 + 1;
        for dir in ["a", "b"] {
            prefetcher.opened(1, dir, "c0");
            prefetcher.opened(1, dir, "c1");
            assert!(
                matches!(queue.try_recv(), Ok(Job::List { .. })),
                "{dir} listed"
            );
            assert_eq!(
                prefetcher.listed(1, dir, order(half, 4096)),
                Some((2, 2 + FIRST_WINDOW)),
                "{dir} read ahead"
            );
        }
        let scans = lock(&prefetcher.scans);
        assert!(!scans.contains_key("a"), "a is forgotten");
        assert!(scans["b"].order.is_some());
    }

    #[test]
    fn uncommitted_files_are_read_ahead_within_the_byte_budget_too() {
        // Staged files' sizes are known only as they are read ahead.
        let (_dir, fs) = crate::fs::testing::fs();
        let big = vec![7u8; MAX_FILE_AHEAD as usize];
        for i in 0..6 {
            crate::fs::testing::write_file(&fs, "", &format!("c{i}"), &big);
        }
        let order = fs.with_session(|session| {
            let files = session.file_sources("", 10).unwrap().unwrap();
            DirOrder::new(files, session.file_locator())
        });
        assert!(matches!(order.files[0].1, FileSource::Staged(_)));
        let prefetcher = Prefetcher::default();
        prefetcher.enabled.store(true, AtomicOrdering::Relaxed);
        let budget = (MAX_AHEAD_BYTES / MAX_FILE_AHEAD) as usize;
        assert_eq!(prefetcher.warm(&order, 0, 6), budget);
        assert_eq!(
            prefetcher.warmed_bytes.load(AtomicOrdering::Relaxed),
            MAX_AHEAD_BYTES
        );
    }

    #[test]
    fn a_window_of_large_files_is_read_ahead_by_several_threads_each_file_once() {
        let (_dir, fs) = crate::fs::testing::fs();
        let files = 40; // 40 MiB: five warmers
        for i in 0..files {
            let bytes = vec![i as u8; 1 << 20];
            crate::fs::testing::write_file(&fs, "", &format!("c{i}"), &bytes);
        }
        let order = fs.with_session(|session| {
            let files = session.file_sources("", 100).unwrap().unwrap();
            DirOrder::new(files, session.file_locator())
        });
        let prefetcher = Prefetcher::default();
        prefetcher.enabled.store(true, AtomicOrdering::Relaxed);
        assert_eq!(prefetcher.warm(&order, 0, files), files);
        assert_eq!(
            prefetcher.warmed_files.load(AtomicOrdering::Relaxed),
            files as u64
        );
        assert_eq!(
            prefetcher.warmed_bytes.load(AtomicOrdering::Relaxed),
            (files as u64) << 20
        );
        // From the middle on, within the byte budget.
        assert_eq!(prefetcher.warm(&order, 10, files), files);
        assert_eq!(
            prefetcher.warmed_files.load(AtomicOrdering::Relaxed),
            (files + 30) as u64
        );
    }

    #[test]
    fn a_directory_is_listed_only_up_to_the_budget() {
        let (_dir, fs) = crate::fs::testing::fs();
        for name in ["c0", "c1", "c2"] {
            crate::fs::testing::write_file(&fs, "", name, b"chunk");
        }
        fs.with_session(|session| {
            assert!(
                session.file_sources("", 2).unwrap().is_none(),
                "3 files > 2"
            );
            let files = session.file_sources("", 3).unwrap().unwrap();
            assert_eq!(files.len(), 3);
        });
    }

    #[test]
    fn large_files_are_read_ahead_within_the_byte_budget() {
        let mut scan = scan_of(order(10_000, 48 << 20));
        scan.opened_at(0);
        // 48 MiB each, of which the first 16 MiB are read ahead: four
        // files at a time fit MAX_AHEAD_BYTES.
        assert_eq!(scan.opened_at(1), Some((2, 6)));
        let mut scan = scan_of(order(10_000, 100 << 20));
        scan.opened_at(0);
        assert_eq!(
            scan.opened_at(1),
            Some((2, 6)),
            "only the start of a huge file counts"
        );
    }
}
