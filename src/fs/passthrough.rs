//! FUSE passthrough: the kernel reads and writes staged and committed
//! files directly, without a round trip through the daemon.
//!
//! Staged files and blobs are real files on local disk, so an open can
//! hand the kernel a descriptor of the file (a backing) and let it do the
//! I/O. The kernel (fs/fuse/iomode.c) allows one backing per inode at a
//! time, and refuses a cached (non-passthrough) open of an inode that has
//! passthrough opens. So this table keeps, per inode, the backing in use
//! and what it is: an open whose file is the same reuses it. Since Linux
//! 6.10 every open of an inode with a backing must use that backing, so
//! an inode keeps one file for its life: when a path comes to name
//! another file while the kernel holds the old one (a commit, checkout or
//! discard), the path gets a new inode number, as if the file had been
//! replaced by a rename. So does a path opened (or truncated) for
//! writing while the kernel holds the committed or sealed bytes for its
//! inode (a reader has them open): the open is answered ESTALE, on which
//! the kernel looks the path up again and retries once, as it does for
//! NFS, and reaches the new inode; the reader keeps the committed bytes.
//!
//! The kernel lets go of an inode's backing when its last file closes, but
//! tells the daemon (RELEASE) a little later. An open that finds another
//! backing in this table therefore waits a moment for releases in flight
//! before it counts as a conflict.
//!
//! Passthrough needs Linux 6.9 with CONFIG_FUSE_PASSTHROUGH and a daemon
//! with CAP_SYS_ADMIN; elsewhere every open is a plain one.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fuser::BackingId;

use super::core::lock;
use crate::repo::ObjectId;

/// Which file a backing is, across the handles of one inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackingKey {
    /// A staged file of the session of this view generation.
    Staged { generation: u64, staged: u64 },
    /// A committed, immutable blob.
    Blob(ObjectId),
}

/// A file an open could hand to the kernel.
#[derive(Clone, Debug)]
pub struct BackingCandidate {
    pub key: BackingKey,
    /// Opened for reading and writing if the handle writes.
    pub file: Arc<File>,
}

/// How an open is to be answered.
pub enum OpenMode<'a> {
    /// The kernel does the I/O on this backing.
    Passthrough(&'a BackingId),
    /// Another file backs the inode (or the kernel refused this one): the
    /// open cannot be served on this inode.
    Refused,
    /// Passthrough is off: an ordinary open.
    Plain,
}

/// How one open is answered; see [`Backings::decide`]. A passthrough
/// decision holds its backing open until the answer is sent, even if
/// the table lets go of it meanwhile.
pub enum Decision {
    Plain,
    Refused,
    Passthrough(Arc<BackingId>),
}

impl Decision {
    pub fn mode(&self) -> OpenMode<'_> {
        match self {
            Decision::Passthrough(id) => OpenMode::Passthrough(id),
            Decision::Refused => OpenMode::Refused,
            Decision::Plain => OpenMode::Plain,
        }
    }
}

struct InUse {
    key: BackingKey,
    /// Closed (the kernel's backing id freed) when the last holder drops.
    id: Arc<BackingId>,
    handles: usize,
}

#[derive(Default)]
struct Table {
    by_ino: HashMap<u64, InUse>,
    /// The inode of each handle opened through a backing.
    ino_of_fh: HashMap<u64, u64>,
    /// Opens waiting in [`Backings::wait_for`]: a release wakes them only
    /// if there are any (a wake-up is a system call).
    waiting: usize,
}

/// How long an open waits for the releases of an inode's closed files.
const RELEASE_WAIT: Duration = Duration::from_millis(500);

/// How long a number given for the kernel's retry of an open counts as
/// one: its open meeting a backing again fails for good.
const RETRY_WINDOW: Duration = Duration::from_secs(1);

/// The backings the kernel holds, by inode.
#[derive(Default)]
pub struct Backings {
    enabled: AtomicBool,
    table: Mutex<Table>,
    /// Signalled when a handle is released.
    released: Condvar,
    /// Inode numbers given to paths for the kernel's retry of an open or
    /// truncate, and when (see `Fs::look_up_again`).
    retries: Mutex<HashMap<u64, Instant>>,
}

impl Backings {
    /// The kernel agreed to passthrough at init.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Decide how handle `fh` of `ino` is opened; `open_backing`
    /// registers a file with the kernel. The handle counts as a holder of
    /// the backing from here on, and the decision keeps the backing id
    /// open, so that it outlives the answer made from it.
    pub fn decide(
        &self,
        ino: u64,
        fh: u64,
        candidate: Option<&BackingCandidate>,
        open_backing: impl FnOnce(&File) -> io::Result<BackingId>,
    ) -> Decision {
        let Some(candidate) = candidate.filter(|_| self.enabled()) else {
            return Decision::Plain;
        };
        let (mut table, free) = self.wait_for(lock(&self.table), ino, Some(candidate.key));
        tracing::debug!(ino, fh, key = ?candidate.key, held = ?table.by_ino.get(&ino).map(|u| u.key), free, "passthrough open");
        if !free {
            return Decision::Refused;
        }
        if let Some(in_use) = table.by_ino.get_mut(&ino) {
            in_use.handles += 1;
            let id = in_use.id.clone();
            table.ino_of_fh.insert(fh, ino);
            return Decision::Passthrough(id);
        }
        match open_backing(&candidate.file) {
            Ok(id) => {
                let id = Arc::new(id);
                table.ino_of_fh.insert(fh, ino);
                table.by_ino.insert(
                    ino,
                    InUse {
                        key: candidate.key,
                        id: id.clone(),
                        handles: 1,
                    },
                );
                Decision::Passthrough(id)
            }
            // The kernel or our privileges do not allow it.
            Err(e) if table.by_ino.is_empty() => {
                self.enabled.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "FUSE passthrough refused; the daemon serves all file data");
                Decision::Plain
            }
            Err(e) => {
                tracing::warn!(error = %e, ino, "FUSE passthrough refused for one file");
                Decision::Refused
            }
        }
    }

    /// The file that backs an inode now, if the kernel holds one.
    pub fn key_of(&self, ino: u64) -> Option<BackingKey> {
        lock(&self.table).by_ino.get(&ino).map(|in_use| in_use.key)
    }

    /// Whether the kernel holds `key` as the backing of some inode.
    pub fn holds(&self, key: BackingKey) -> bool {
        lock(&self.table)
            .by_ino
            .values()
            .any(|in_use| in_use.key == key)
    }

    /// `ino` is the number a path got for the kernel's retry of an open.
    pub fn expect_retry(&self, ino: u64) {
        let now = Instant::now();
        let mut retries = lock(&self.retries);
        retries.retain(|_, at| now.duration_since(*at) < RETRY_WINDOW);
        retries.insert(ino, now);
    }

    /// Whether a write open or truncate of `ino` is the kernel's retry on
    /// a number given for it (the first since), forgetting the number:
    /// the kernel retries once, so that retry meeting a backing again (a
    /// reader opened the new inode in between) is final.
    pub fn take_retry(&self, ino: u64) -> bool {
        let mut retries = lock(&self.retries);
        if retries.is_empty() {
            return false;
        }
        retries
            .remove(&ino)
            .is_some_and(|at| at.elapsed() < RETRY_WINDOW)
    }

    /// Wait until `ino` has no backing or has `wanted`, at most
    /// [`RELEASE_WAIT`]; true if so.
    fn wait_for<'a>(
        &'a self,
        mut table: MutexGuard<'a, Table>,
        ino: u64,
        wanted: Option<BackingKey>,
    ) -> (MutexGuard<'a, Table>, bool) {
        let deadline = Instant::now() + RELEASE_WAIT;
        loop {
            match table.by_ino.get(&ino) {
                None => return (table, true),
                Some(in_use) if Some(in_use.key) == wanted => return (table, true),
                Some(_) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (table, false);
            }
            table.waiting += 1;
            table = self
                .released
                .wait_timeout(table, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            table.waiting -= 1;
        }
    }

    /// The inodes whose backing is not a file of the view of
    /// `generation`: after a commit, checkout or discard, their paths must
    /// get new numbers (committed blobs are counted too: the path may name
    /// other bytes now).
    pub fn stale_inodes(&self, generation: u64) -> Vec<u64> {
        lock(&self.table)
            .by_ino
            .iter()
            .filter(|(_, in_use)| {
                !matches!(in_use.key, BackingKey::Staged { generation: g, .. } if g == generation)
            })
            .map(|(ino, _)| *ino)
            .collect()
    }

    /// A handle closed: its inode's backing goes with its last handle.
    /// The backing id is closed (an ioctl) after the table is unlocked.
    pub fn release(&self, fh: u64) {
        let mut table = lock(&self.table);
        let Some(ino) = table.ino_of_fh.remove(&fh) else {
            return;
        };
        let mut gone = None;
        if let Some(in_use) = table.by_ino.get_mut(&ino) {
            in_use.handles -= 1;
            if in_use.handles == 0 {
                gone = table.by_ino.remove(&ino);
            }
        }
        let wake = table.waiting > 0;
        drop(table);
        drop(gone);
        if wake {
            self.released.notify_all();
        }
    }

    /// A commit carried staged files open for writing into the new
    /// session (see `Session::take_carried`): their backings are the same
    /// files under new numbers.
    pub fn carry_over(&self, old_generation: u64, new_generation: u64, carried: &[(u64, u64)]) {
        let mut table = lock(&self.table);
        for in_use in table.by_ino.values_mut() {
            if let BackingKey::Staged { generation, staged } = in_use.key
                && generation == old_generation
                && let Some(&(_, new)) = carried.iter().find(|(old, _)| *old == staged)
            {
                in_use.key = BackingKey::Staged {
                    generation: new_generation,
                    staged: new,
                };
            }
        }
    }
}
