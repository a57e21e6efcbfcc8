//! Serving a mount: mount with fuser, flush the journal and seal closed
//! files in the background, unmount on SIGTERM/SIGINT/SIGHUP, and close
//! the session when the kernel lets go.

use std::io;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fuser::{MountOption, Notifier};

use super::core::{Fs, lock};
use super::fuse::FuseFs;

/// How often the journal is made durable when it has unflushed changes.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// How often the flusher looks whether the journal wants a flush before
/// its interval (many changes pending; see `Fs::journal_wants_flush`).
const FLUSH_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Kernel request threads.
pub const THREADS: usize = 4;

/// How long the thread reading kernel requests keeps reading after a
/// request before it sleeps, while spinning pays (see
/// vendor/fuser/ZARRFS.md): a client's next request then finds it awake,
/// instead of paying for a thread woken on another CPU, which on small
/// virtual machines costs more than the request. Zarr clients send their
/// next request within a few hundred microseconds.
pub const SPIN: Duration = Duration::from_micros(500);

/// How long a closed file waits before it is sealed (stored ahead of the
/// commit), so that files removed or rewritten at once, such as
/// temporary files, are not stored for nothing. Files under 256 KiB wait
/// a third of it, and a file renamed after it closed does not wait (see
/// `session::sealing`).
pub const SEAL_DELAY: Duration = Duration::from_millis(300);

/// How often the sealing worker looks for closed files, and how many it
/// seals before it looks again at once.
const SEAL_INTERVAL: Duration = Duration::from_millis(100);
const SEAL_BATCH: usize = 1024;

/// How long after its last sync ended the worker has what it sealed
/// made durable, so that a commit right after a burst of writes has
/// little to sync: with half a second, a commit of 100,000 new files
/// took 0.091-0.149 s against 0.119-0.214 s with a second, the writes
/// before it as fast; with a quarter, the writes were 8% slower.
const SEAL_SYNC_INTERVAL: Duration = Duration::from_millis(500);

/// Mount `fs` at `mountpoint` and serve it until it is unmounted.
/// `mounted` runs once the kernel has accepted the mount. Returns the
/// filesystem for the caller to close its session.
pub fn serve(
    fs: Fs,
    mountpoint: &Path,
    fsname: &str,
    notifier_slot: Option<Arc<OnceLock<Notifier>>>,
    mounted: impl FnOnce(),
) -> io::Result<Fs> {
    let fs = Arc::new(fs);
    if fs.options().seal_delay.is_some() {
        // From the first file closed on, not from the worker's first pass.
        fs.with_session(|session| session.sealer());
    }
    let signals = block_signals();

    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName(fsname.to_owned()),
        MountOption::Subtype("zarrfs".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    config.n_threads = Some(THREADS);
    config.clone_fd = true;
    config.spin = Some(SPIN);
    config.io_uring = fs.options().io_uring;
    let session = fuser::Session::new(FuseFs::new(fs.clone()), mountpoint, &config)?;
    if session.io_uring() {
        fs.io_uring
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!("FUSE over io_uring on: requests come over per-CPU queues");
    }
    let _ = fs.notifier.set(session.notifier());
    // Invalidation that nobody waits for (see Fs::invalidate_after_own_commit).
    let (invalidations, invalidation_requests) = mpsc::channel::<()>();
    *fs.background_invalidation.lock().unwrap() = Some(invalidations);
    let invalidator = {
        let fs = fs.clone();
        std::thread::Builder::new()
            .name("zarrfs-inval".into())
            .spawn(move || fs.invalidate_in_background(&invalidation_requests))?
    };
    // Reading ahead across files (see super::prefetch); stopped when
    // dropped, also if what follows fails.
    let prefetcher = if fs.options().prefetch {
        Some(fs.start_prefetch()?)
    } else {
        None
    };
    if let Some(slot) = notifier_slot {
        let _ = slot.set(session.notifier());
    }
    mounted();

    // The flusher.
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let flusher = {
        let fs = fs.clone();
        std::thread::Builder::new()
            .name("zarrfs-flush".into())
            .spawn(move || {
                let mut last_flush = Instant::now();
                let mut last_failed = false;
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stop_rx.recv_timeout(FLUSH_CHECK_INTERVAL)
                {
                    // After a failure, the batch is pending again: retry
                    // at the interval, not at every check.
                    let early = !last_failed && fs.journal_wants_flush();
                    if last_flush.elapsed() < FLUSH_INTERVAL && !early {
                        continue;
                    }
                    last_flush = Instant::now();
                    let flushed = fs.flush_journal();
                    last_failed = flushed.is_err();
                    if let Err(e) = flushed {
                        tracing::error!(
                            "flushing the session journal failed: {}",
                            io::Error::from_raw_os_error(e.0)
                        );
                    }
                }
            })?
    };

    // The sealing worker: closed files are hashed and stored while the
    // session goes on, so that commits find them done.
    let (stop_sealer_tx, stop_sealer_rx) = mpsc::channel::<()>();
    let sealer = match fs.options().seal_delay {
        None => None,
        Some(delay) => Some(spawn_sealer(fs.clone(), delay, stop_sealer_rx)?),
    };

    // Signals unmount (lazily, so that open files do not keep the daemon).
    if signals {
        let target = mountpoint.to_owned();
        std::thread::Builder::new()
            .name("zarrfs-signals".into())
            .spawn(move || {
                if let Some(signal) = wait_signal() {
                    tracing::info!(signal, "signal received: unmounting {}", target.display());
                    if let Err(e) = unmount(&target, true) {
                        tracing::error!("unmounting {}: {e}", target.display());
                    }
                }
            })?;
    }

    let result = session.run();
    tracing::info!(
        total = fs.requests.total(),
        "FUSE requests served: {}",
        fs.requests
    );
    let _ = stop_tx.send(());
    let _ = flusher.join();
    let _ = stop_sealer_tx.send(());
    if let Some(sealer) = sealer {
        let _ = sealer.join();
    }
    // Without its sender the invalidation thread ends (a notification it
    // is making fails now that the kernel is gone).
    fs.background_invalidation.lock().unwrap().take();
    let _ = invalidator.join();
    drop(prefetcher);
    if let Err(e) = fs.sync_journal() {
        tracing::error!(
            "flushing the session journal failed: {}",
            io::Error::from_raw_os_error(e.0)
        );
    }
    result?;
    // The fuser threads are gone; the flusher is joined.
    Arc::try_unwrap(fs).map_err(|_| io::Error::other("the filesystem is still in use"))
}

/// The sealing worker: every [`SEAL_INTERVAL`], seal the files closed
/// for `delay`, and now and then have them made durable.
fn spawn_sealer(
    fs: Arc<Fs>,
    delay: Duration,
    stop: mpsc::Receiver<()>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("zarrfs-seal".into())
        .spawn(move || {
            // Sealing is a head start, not urgent: it gives way to the
            // threads that answer the kernel.
            // SAFETY: setpriority on this thread (a Linux thread id).
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
            }
            let syncer = SealSyncer::start(fs.clone());
            let mut wait = SEAL_INTERVAL;
            let mut unsynced = 0;
            while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(wait) {
                let pass = fs.seal_closed_files(delay, SEAL_BATCH);
                unsynced += pass.sealed;
                if unsynced > 0 && syncer.ask() {
                    unsynced = 0;
                }
                wait = if pass.sealed == SEAL_BATCH {
                    Duration::ZERO
                } else {
                    SEAL_INTERVAL
                };
            }
        })
}

/// Makes what the sealing worker sealed durable, on a thread of its own:
/// a sync of the filesystem lasts as long as the writeback of everything
/// written before it, 0.1-0.3 s while a program writes a gigabyte, and a
/// worker that waited for it sealed nothing meanwhile, leaving more to
/// the commit.
struct SealSyncer {
    fs: Arc<Fs>,
    /// Asks the thread for a sync; `None` if it could not start (the
    /// worker then syncs itself).
    asks: Option<mpsc::SyncSender<()>>,
    /// When the last sync ended, `None` while one runs: the next starts
    /// [`SEAL_SYNC_INTERVAL`] after the last one ended, so that a slow
    /// disk does not get one sync after another.
    last_ended: Arc<Mutex<Option<Instant>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SealSyncer {
    fn start(fs: Arc<Fs>) -> SealSyncer {
        let (asks, asked) = mpsc::sync_channel::<()>(1);
        let last_ended = Arc::new(Mutex::new(Some(Instant::now())));
        let thread = std::thread::Builder::new()
            .name("zarrfs-seal-sync".into())
            .spawn({
                let (fs, last_ended) = (fs.clone(), last_ended.clone());
                move || {
                    for () in asked {
                        sync_sealed(&fs);
                        *lock(&last_ended) = Some(Instant::now());
                    }
                }
            })
            .map_err(|e| tracing::warn!("no thread to sync sealed files: {e}"))
            .ok();
        SealSyncer {
            asks: thread.is_some().then_some(asks),
            fs,
            last_ended,
            thread,
        }
    }

    /// Have what was sealed so far made durable, if the last sync ended
    /// long enough ago: false if not (ask again later).
    fn ask(&self) -> bool {
        let mut last_ended = lock(&self.last_ended);
        if !last_ended.is_some_and(|ended| ended.elapsed() >= SEAL_SYNC_INTERVAL) {
            return false;
        }
        match &self.asks {
            Some(asks) => {
                *last_ended = None;
                // The channel is empty: no sync runs or waits.
                let _ = asks.try_send(());
            }
            None => {
                sync_sealed(&self.fs);
                *last_ended = Some(Instant::now());
            }
        }
        true
    }
}

impl Drop for SealSyncer {
    fn drop(&mut self) {
        self.asks.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sync_sealed(fs: &Fs) {
    if let Err(e) = fs.sync_sealed_files() {
        tracing::warn!(
            "syncing sealed files failed: {}",
            io::Error::from_raw_os_error(e.0)
        );
    }
}

const SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Block the termination signals in this thread and the threads it
/// starts, so that one thread can wait for them.
fn block_signals() -> bool {
    let set = signal_set();
    // SAFETY: pthread_sigmask with a valid set.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) == 0 }
}

fn wait_signal() -> Option<libc::c_int> {
    let set = signal_set();
    let mut signal: libc::c_int = 0;
    // SAFETY: sigwait on a valid set, writing to a local.
    (unsafe { libc::sigwait(&set, &mut signal) } == 0).then_some(signal)
}

/// umount2(2): detach lazily if `lazy`, else fail with EBUSY while files
/// are open there.
pub fn unmount(mountpoint: &Path, lazy: bool) -> io::Result<()> {
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: umount2 with a valid C string.
    if unsafe { libc::umount2(path.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() != Some(libc::EPERM) {
        return Err(error);
    }
    // Not root: a user's own FUSE mount is unmounted by the setuid helper
    // that mounted it, as libfuse does.
    unmount_with_fusermount(mountpoint, lazy).map_err(|_| error)
}

/// `fusermount3 -u` (or `fusermount -u`), for mounts of a normal user.
fn unmount_with_fusermount(mountpoint: &Path, lazy: bool) -> io::Result<()> {
    for helper in ["fusermount3", "fusermount"] {
        let mut command = std::process::Command::new(helper);
        command.arg("-u").arg("-q");
        if lazy {
            command.arg("-z");
        }
        match command.arg(mountpoint).output() {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stderr);
                let errno = if text.contains("busy") {
                    libc::EBUSY
                } else {
                    libc::EPERM
                };
                return Err(io::Error::from_raw_os_error(errno));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::from_raw_os_error(libc::EPERM))
}
