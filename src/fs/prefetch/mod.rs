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
//!   the directory after it is read ahead as well
//!   ([`Subdirectories::next_dir`]: Zarr 3 keeps each row of chunks in a
//!   directory of its own, `c/1/0` after `c/0/31`), and the sequence there
//!   goes on when its reader arrives;
//! - a reader that opens one file per directory, going from each to the
//!   one after it, is followed across directories instead (see [`walk`]).
//!
//! Only opens for reading count: `ls -l`, `du` and `find` look files up
//! without reading them, and writers open files they will replace.
//! Nothing depends on it for correctness: a file read ahead that the
//! program never opens costs a read of the disk. A directory is listed
//! once per view (until a commit, checkout or discard): files made after
//! its listing are not read ahead, and files removed since are skipped.
//! The work is bounded: [`MAX_DIRS`] sequences, [`MAX_LISTED`] files
//! listed in all, [`JOB_QUEUE`] jobs waiting (more are dropped).

mod order;
mod scan;
mod walk;

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use super::core::{Fs, lock};
use order::{DirOrder, LEVELS_UP, Subdirectories};
use scan::DirScan;
use walk::{Step, Walk};

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
/// this many bytes of it (see [`Prefetcher::warm_files`]): small files
/// keep one thread busy enough, and more took the CPU their reader needed
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
    /// A file of `dir` was opened, the first there, and nothing of it was
    /// read ahead: follow a reader walking directories (see [`walk`]).
    Entered { generation: u64, dir: String },
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
            if scan.early.is_empty() {
                // The first file opened in a directory nobody read ahead:
                // a step of a reader that may walk from one to the next.
                self.send(Job::Entered {
                    generation,
                    dir: dir.to_owned(),
                });
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
    fn warm(&self, order: &DirOrder, start: usize, end: usize) -> usize {
        let (end, bytes) = order.within_budget(start, end);
        let paths: Vec<PathBuf> = order.paths(start..end).collect();
        start + self.warm_files(&paths, bytes)
    }

    /// [`Prefetcher::warm`] files `start..end` of `dir`'s `order`, and
    /// have its sequence's next window start where that stopped.
    fn warm_window(&self, generation: u64, dir: &str, order: &DirOrder, start: usize, end: usize) {
        let reached = self.warm(order, start, end);
        self.warmed_to(generation, dir, end, reached);
    }

    /// Read the first [`MAX_FILE_AHEAD`] bytes of each file (`bytes` in
    /// all) into the page cache; how many it read before the prefetcher
    /// was stopped.
    ///
    /// Up to [`WARMERS`] threads take the files in turn. Opening a file
    /// of a large repository reads a block of its object directory from
    /// the disk, and one thread waited for those reads one after another
    /// (behind the data reads it had asked for): 25-40 ms of every 64
    /// files of 1 MiB, so that it fell behind the reader it was to be
    /// ahead of.
    fn warm_files(&self, paths: &[PathBuf], bytes: u64) -> usize {
        let next = AtomicUsize::new(0);
        let stopped_at = AtomicUsize::new(paths.len());
        let warm_some = || {
            loop {
                let i = next.fetch_add(1, AtomicOrdering::Relaxed);
                if i >= paths.len() {
                    return;
                }
                if self.stopped() {
                    stopped_at.fetch_min(i, AtomicOrdering::Relaxed);
                    return;
                }
                // A file gone meanwhile is nothing to read.
                if let Some(size) = warm_file(&paths[i]) {
                    self.warmed_files.fetch_add(1, AtomicOrdering::Relaxed);
                    self.warmed_bytes.fetch_add(size, AtomicOrdering::Relaxed);
                }
            }
        };
        let warmers = (bytes / BYTES_PER_WARMER).clamp(1, WARMERS as u64) as usize;
        let helpers = warmers.min(paths.len()).saturating_sub(1);
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
        let mut subdirectories = Subdirectories::default();
        let mut walk = Walk::default();
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
                        self.prefetch
                            .warm_window(generation, &dir, &order, start, end);
                    }
                    // A directory short enough to be read ahead whole at once.
                    if let Some(files) = self.prefetch.hand_on(generation, &dir) {
                        self.read_ahead_after(&mut subdirectories, generation, &dir, files);
                    }
                }
                Job::Warm {
                    generation,
                    dir,
                    order,
                    start,
                    end,
                } => self
                    .prefetch
                    .warm_window(generation, &dir, &order, start, end),
                Job::Next {
                    generation,
                    dir,
                    files,
                } => self.read_ahead_after(&mut subdirectories, generation, &dir, files),
                Job::Entered { generation, dir } => {
                    self.walk_on(&mut walk, &mut subdirectories, generation, &dir)
                }
            }
        }
    }

    /// The reader entered `dir`, nothing of it read ahead: follow its walk
    /// across directories, and read the next ones ahead when it asks.
    fn walk_on(
        &self,
        walk: &mut Walk,
        subdirectories: &mut Subdirectories,
        generation: u64,
        dir: &str,
    ) {
        let step = walk.entered(generation, dir, |at| {
            self.next_dir(subdirectories, generation, at)
        });
        let Step::ReadAhead { after, mut files } = step else {
            return;
        };
        let mut paths = Vec::new();
        let mut bytes = 0;
        let mut dir = after;
        while files > 0 && bytes < MAX_AHEAD_BYTES {
            let Some(next) = self.next_dir(subdirectories, generation, &dir) else {
                break;
            };
            let Some(order) = self.order_of(generation, &next) else {
                break;
            };
            // A directory of directories: the walk is at another level.
            if order.files.is_empty() {
                break;
            }
            let (end, dir_bytes) = order.within_budget(0, order.files.len().min(files));
            paths.extend(order.paths(0..end));
            bytes += dir_bytes;
            files -= end;
            walk.read_ahead(next.clone(), end);
            dir = next;
        }
        self.prefetch.warm_files(&paths, bytes);
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
    fn read_ahead_after(
        &self,
        subdirectories: &mut Subdirectories,
        generation: u64,
        dir: &str,
        files: usize,
    ) {
        let Some(next) = self.next_dir(subdirectories, generation, dir) else {
            return;
        };
        let Some(order) = self.order_of(generation, &next) else {
            return;
        };
        if let Some((start, end)) = self
            .prefetch
            .primed(generation, &next, order.clone(), files)
        {
            self.prefetch
                .warm_window(generation, &next, &order, start, end);
        }
    }

    /// The directory a reader goes to after `dir`
    /// ([`Subdirectories::next_dir`]), if the view is still that of
    /// `generation`.
    fn next_dir(
        &self,
        subdirectories: &mut Subdirectories,
        generation: u64,
        dir: &str,
    ) -> Option<String> {
        let session = self.session_read();
        if session.generation() != generation {
            return None;
        }
        subdirectories.next_dir(&session, dir, LEVELS_UP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use order::tests::order;

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
    fn listings_beyond_the_budget_forget_the_least_recently_opened_directory() {
        let prefetcher = Prefetcher::default();
        let (jobs, queue) = mpsc::sync_channel(JOB_QUEUE);
        *lock(&prefetcher.jobs) = Some(jobs);
        prefetcher.enabled.store(true, AtomicOrdering::Relaxed);
        let half = MAX_LISTED / 2 + 1;
        for dir in ["a", "b"] {
            prefetcher.opened(1, dir, "c0");
            assert!(
                matches!(queue.try_recv(), Ok(Job::Entered { .. })),
                "{dir} entered"
            );
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
        assert!(matches!(
            order.files[0].1,
            crate::session::FileSource::Staged(_)
        ));
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
}
