//! Staged files made ahead of need: the numbering of a session's staged
//! files, and a few empty ones created in the background so that a
//! program's `open(O_CREAT)` does not wait for the filesystem to create
//! one.
//!
//! Creating `staged/<n>` was most of what a FUSE CREATE cost the daemon
//! (48-76 us of 78-111 us while 30,000 files of 4 KiB were written, and
//! more while ext4 was slow after a mass deletion), all of it on the
//! critical path of the writing program. A thread of the pool's own makes
//! them instead, on whichever CPU is free; a CREATE takes one that is
//! ready, or makes one itself when none is.
//!
//! The pool grows with the session's appetite: it makes files until as
//! many are ready as the session has taken so far, from [`READY_FEWEST`]
//! up to [`READY_MOST`], and tops up once fewer than a third of that are
//! ready. A session that follows another starts with the files its
//! predecessor left unused (up to [`READY_MOST`]), and makes none until
//! it has taken them down below that mark. A session lasts until its
//! commit, and a fixed pool of 96 cost every small commit 96 creations
//! and 96 deletions. On ext4 that was worse than its share: for five
//! minutes after a deletion, ext4 skips the freed inodes when it
//! allocates, scanning past them (`recently_deleted`), so 8 mounts
//! making 50 one-file commits each spent most of both CPUs there (24-26
//! commits a second instead of 100 or more).
//!
//! Files made and never used are empty and in no journal. When a session
//! ends for the next (a commit, a discard, a checkout), they move to the
//! next session's pool ([`StagedPool::hand_over_ready`]), so that no inode
//! is freed; an unmounted session's pool removes them when it is dropped.
//! After a crash they stay in `staged/` until the session's directory
//! goes; they only take numbers.

use std::collections::VecDeque;
use std::fs::{File, FileTimes, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::SystemTime;

/// The most files kept ready, however many the session takes...
const READY_MOST: usize = 96;

/// ...and the fewest, however few it has taken.
const READY_FEWEST: usize = 4;

/// How many files the pool keeps ready once `taken` have been taken: as
/// many again, within [`READY_FEWEST`]..=[`READY_MOST`].
fn ready_most(taken: u64) -> usize {
    usize::try_from(taken).map_or(READY_MOST, |taken| taken.clamp(READY_FEWEST, READY_MOST))
}

/// The pool is topped up once fewer than this many are ready.
fn refill_below(taken: u64) -> usize {
    ready_most(taken).div_ceil(3)
}

/// The staged files of one session directory: their numbers and the
/// empty ones made ahead.
pub struct StagedPool {
    shared: Arc<Shared>,
    maker: Option<JoinHandle<()>>,
    /// The directory goes with the session: leave the unused files to it.
    dir_doomed: bool,
}

struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    /// The pool wants filling.
    wanted: Condvar,
    /// The maker finished a file.
    made: Condvar,
}

struct State {
    /// The next number nobody has.
    next: u64,
    /// Empty files made ahead, oldest number first.
    ready: VecDeque<(u64, File)>,
    /// Files handed out by `take`, which sets how many to keep ready.
    taken: u64,
    /// The maker is creating a file (the one a take should wait for).
    making: bool,
    /// The maker waits to be asked to top the pool up.
    maker_idle: bool,
    /// The maker stops filling (set when the pool is dropped or its
    /// directory doomed).
    closed: bool,
    /// The maker's last creation failed: it waits to be asked again
    /// rather than retry in a loop (the CREATE that makes its own file
    /// reports the error).
    failed: bool,
}

impl StagedPool {
    /// The pool of `dir` (`SESSION/staged`), whose files so far are
    /// numbered below `next`. Its thread starts at the first [`take`].
    ///
    /// [`take`]: StagedPool::take
    pub fn new(dir: PathBuf, next: u64) -> StagedPool {
        StagedPool {
            shared: Arc::new(Shared {
                dir,
                state: Mutex::new(State {
                    next,
                    ready: VecDeque::new(),
                    taken: 0,
                    making: false,
                    maker_idle: false,
                    closed: false,
                    failed: false,
                }),
                wanted: Condvar::new(),
                made: Condvar::new(),
            }),
            maker: None,
            dir_doomed: false,
        }
    }

    /// The session's directory is about to be moved away and removed:
    /// make no more files in it, and do not remove the unused ones one by
    /// one when the pool is dropped (a commit would wait for it).
    pub fn doom_dir(&mut self) {
        self.dir_doomed = true;
        self.close();
    }

    /// Staged file `n` becomes a file of `next`'s directory (the same
    /// inode, renamed): its number there.
    pub fn move_into(&self, n: u64, next: &StagedPool) -> io::Result<u64> {
        let m = next.number();
        std::fs::rename(self.path(n), next.path(m))?;
        Ok(m)
    }

    /// The session ends and `next` is its successor's pool: move the
    /// files made ahead and never used over to it, renamed into its
    /// directory, instead of deleting them with this one. A deleted file
    /// frees its inode, which ext4 then scans past at every creation for
    /// minutes (see above): 96 of them per commit made creating the next
    /// commit's tree nodes cost 80 ms instead of 20. This pool makes no
    /// more files, without waiting for its maker (the commit would): a
    /// file it finishes after, or one that cannot be moved, stays behind
    /// for the directory's removal. `next`'s maker must not have started,
    /// so that its files stay in number order.
    pub fn hand_over_ready(&mut self, next: &mut StagedPool) {
        self.close();
        let ready: Vec<(u64, File)> = self.shared.lock().ready.drain(..).collect();
        let moved: Vec<(u64, File)> = ready
            .into_iter()
            .filter_map(|(n, file)| Some((self.move_into(n, next).ok()?, file)))
            .collect();
        next.shared.lock().ready.extend(moved);
    }

    /// The path of staged file `n`.
    pub fn path(&self, n: u64) -> PathBuf {
        staged_path(&self.shared.dir, n)
    }

    /// A number for a staged file that the caller makes itself (by
    /// renaming a file to it).
    pub fn number(&self) -> u64 {
        let mut state = self.shared.lock();
        let n = state.next;
        state.next += 1;
        n
    }

    /// A new, empty staged file open for reading and writing, and its
    /// number. Numbers go out in order: while the maker is creating the
    /// next file, this waits for it instead of making a later one.
    pub fn take(&mut self) -> io::Result<(u64, File)> {
        self.start_maker();
        let mut state = self.shared.lock();
        let taken = loop {
            if let Some(made) = state.ready.pop_front() {
                break Some(made);
            }
            if !state.making {
                break None;
            }
            state = self
                .shared
                .made
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        };
        state.taken += 1;
        // The maker waits only while enough are ready or after a failure:
        // wake it when too few are left, or to try again.
        if state.maker_idle && (state.failed || state.ready.len() < refill_below(state.taken)) {
            state.failed = false;
            state.maker_idle = false;
            self.shared.wanted.notify_one();
        }
        match taken {
            Some((n, file)) => {
                // Made ahead, maybe long ago: it is created now.
                let now = SystemTime::now();
                file.set_times(FileTimes::new().set_accessed(now).set_modified(now))?;
                Ok((n, file))
            }
            None => {
                let n = state.next;
                state.next += 1;
                drop(state);
                Ok((n, create(&self.path(n))?))
            }
        }
    }

    fn start_maker(&mut self) {
        if self.maker.is_some() {
            return;
        }
        let shared = self.shared.clone();
        // Without the thread, take() makes every file itself, as before.
        self.maker = std::thread::Builder::new()
            .name("staged-maker".into())
            .spawn(move || {
                run_as_normal_thread();
                shared.make_ahead()
            })
            .map_err(|e| tracing::warn!("no thread to make staged files ahead: {e}"))
            .ok();
    }

    /// The maker makes no more files.
    fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.wanted.notify_one();
    }

    /// Stop the maker, waiting for a file it is making.
    fn stop_maker(&mut self) {
        self.close();
        if let Some(maker) = self.maker.take() {
            let _ = maker.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The maker's loop: whenever asked, fill the pool up to
    /// [`ready_most`], creating each file outside the lock so that takes
    /// go on meanwhile.
    fn make_ahead(&self) {
        let mut state = self.lock();
        loop {
            while !state.closed && (state.failed || state.ready.len() >= refill_below(state.taken))
            {
                state.maker_idle = true;
                state = self.wanted.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            state.maker_idle = false;
            while !state.closed && !state.failed && state.ready.len() < ready_most(state.taken) {
                let n = state.next;
                state.next += 1;
                state.making = true;
                drop(state);
                let made = create(&staged_path(&self.dir, n));
                state = self.lock();
                state.making = false;
                match made {
                    Ok(file) => state.ready.push_back((n, file)),
                    // The directory went with the session meanwhile.
                    Err(_) if state.closed => {}
                    Err(e) => {
                        tracing::warn!("making staged file {n} ahead: {e}");
                        state.failed = true;
                    }
                }
                self.made.notify_all();
            }
            if state.closed {
                return;
            }
        }
    }
}

impl Drop for StagedPool {
    fn drop(&mut self) {
        self.stop_maker();
        for (n, file) in self.shared.lock().ready.drain(..) {
            drop(file);
            if !self.dir_doomed {
                let _ = std::fs::remove_file(self.path(n));
            }
        }
    }
}

/// A thread inherits the scheduling policy of the thread that starts it,
/// and the first take comes from a CREATE, which a FUSE reader following
/// its client serves as SCHED_IDLE (vendor/fuser/src/follow.rs). A maker
/// of that policy would get a CPU only when nothing else wants one, while
/// CREATEs wait for it.
fn run_as_normal_thread() {
    // SAFETY: sched_getscheduler and sched_setscheduler on the calling
    // thread, with a valid param.
    unsafe {
        if libc::sched_getscheduler(0) == libc::SCHED_IDLE {
            let param = libc::sched_param { sched_priority: 0 };
            if libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) != 0 {
                tracing::warn!(
                    "the staged-file maker stays SCHED_IDLE: {}",
                    io::Error::last_os_error()
                );
            }
        }
    }
}

fn staged_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(n.to_string())
}

fn create(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<u64> {
        let mut names: Vec<u64> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Wait until the pool's maker has filled the pool and waits to be
    /// asked again.
    fn wait_for_idle_maker(pool: &StagedPool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !pool.shared.lock().maker_idle {
            assert!(
                std::time::Instant::now() < deadline,
                "the maker never finished filling"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// The scheduling policy of each thread of this process named `name`.
    fn policies_of_threads_named(name: &str) -> Vec<i32> {
        let mut policies = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap().path();
            let Ok(comm) = std::fs::read_to_string(task.join("comm")) else {
                continue;
            };
            if comm.trim_end() != name {
                continue;
            }
            let tid: libc::pid_t = task.file_name().unwrap().to_str().unwrap().parse().unwrap();
            // SAFETY: sched_getscheduler reads a thread's policy.
            policies.push(unsafe { libc::sched_getscheduler(tid) });
        }
        policies
    }

    #[test]
    fn a_maker_started_by_a_sched_idle_thread_runs_as_a_normal_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        // As a FUSE reader following its client serves the first CREATE.
        let pool = std::thread::spawn(move || {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: sched_setscheduler on the calling thread.
            let idle = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0;
            assert!(idle, "SCHED_IDLE: {}", io::Error::last_os_error());
            let mut pool = StagedPool::new(path, 0);
            pool.take().unwrap();
            pool
        })
        .join()
        .unwrap();
        // The maker has made the pool's files; it is between fillings.
        wait_for_idle_maker(&pool);
        // Other tests' pools may have makers too: all are normal threads.
        let policies = policies_of_threads_named("staged-maker");
        assert!(
            !policies.is_empty() && policies.iter().all(|&p| p == libc::SCHED_OTHER),
            "the makers' policies: {policies:?}"
        );
        drop(pool);
    }

    #[test]
    fn files_are_handed_out_in_number_order_and_unused_ones_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut pool = StagedPool::new(dir.path().to_owned(), 7);
        let mut taken = Vec::new();
        for _ in 0..200 {
            let (n, file) = pool.take().unwrap();
            assert_eq!(file.metadata().unwrap().len(), 0);
            assert!(pool.path(n).exists());
            taken.push(n);
        }
        let renamed = pool.number();
        assert!(taken.windows(2).all(|w| w[0] < w[1]), "{taken:?}");
        assert_eq!(taken[0], 7);
        assert!(!taken.contains(&renamed));
        drop(pool);
        assert_eq!(names(dir.path()), taken, "only the files taken are left");
    }

    #[test]
    fn the_pool_keeps_about_as_many_ready_as_the_session_has_taken() {
        let dir = tempfile::tempdir().unwrap();
        let mut pool = StagedPool::new(dir.path().to_owned(), 0);
        // A session that writes one file, as most small commits do: a few
        // made ahead, not a full pool to create and delete again.
        pool.take().unwrap();
        wait_for_idle_maker(&pool);
        assert_eq!(names(dir.path()).len(), 1 + READY_FEWEST);
        // A session that writes many grows the pool to its largest.
        for _ in 0..400 {
            pool.take().unwrap();
        }
        wait_for_idle_maker(&pool);
        let ready = pool.shared.lock().ready.len();
        assert!(
            (READY_MOST / 3..=READY_MOST).contains(&ready),
            "{ready} ready after 401 takes"
        );
    }

    #[test]
    fn unused_files_move_to_the_next_sessions_pool_instead_of_being_deleted() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (old_dir, new_dir) = (dir.path().join("old"), dir.path().join("new"));
        std::fs::create_dir(&old_dir).unwrap();
        std::fs::create_dir(&new_dir).unwrap();
        let mut old = StagedPool::new(old_dir.clone(), 0);
        for _ in 0..10 {
            old.take().unwrap();
        }
        wait_for_idle_maker(&old);
        let unused: Vec<u64> = names(&old_dir).into_iter().filter(|&n| n >= 10).collect();
        assert!(!unused.is_empty());
        let inodes = |dir: &Path, numbers: &[u64]| -> Vec<u64> {
            let inode = |n: &u64| std::fs::metadata(dir.join(n.to_string())).unwrap().ino();
            numbers.iter().map(inode).collect()
        };
        let unused_inodes = inodes(&old_dir, &unused);

        let mut new = StagedPool::new(new_dir.clone(), 3);
        old.hand_over_ready(&mut new);
        assert_eq!(
            names(&old_dir),
            (0..10).collect::<Vec<_>>(),
            "only the taken stay"
        );
        let moved: Vec<u64> = (3..3 + unused.len() as u64).collect();
        assert_eq!(names(&new_dir), moved);
        assert_eq!(
            inodes(&new_dir, &moved),
            unused_inodes,
            "the same files, renamed"
        );
        // The new session takes them first, in order, and they are its own.
        for &n in &moved {
            assert_eq!(new.take().unwrap().0, n);
        }
        drop(old);
        assert_eq!(names(&old_dir).len(), 10);
    }

    #[test]
    fn a_file_made_ahead_is_dated_when_it_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let mut pool = StagedPool::new(dir.path().to_owned(), 0);
        pool.take().unwrap();
        // Let the maker fill the pool, then age what it made.
        wait_for_idle_maker(&pool);
        let long_ago = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        for (_, file) in &pool.shared.lock().ready {
            file.set_modified(long_ago).unwrap();
        }
        let before = SystemTime::now() - std::time::Duration::from_secs(1);
        let (n, file) = pool.take().unwrap();
        assert_eq!(n, 1);
        let stat = file.metadata().unwrap();
        assert!(stat.modified().unwrap() >= before, "{:?}", stat.modified());
        assert!(stat.accessed().unwrap() >= before, "{:?}", stat.accessed());
    }

    #[test]
    fn a_pool_whose_directory_is_gone_reports_the_error_to_the_taker() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("staged");
        let mut pool = StagedPool::new(gone.clone(), 0);
        let err = pool.take().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // Once the directory is back, takes work again.
        std::fs::create_dir(&gone).unwrap();
        for _ in 0..5 {
            pool.take().unwrap();
        }
    }
}
