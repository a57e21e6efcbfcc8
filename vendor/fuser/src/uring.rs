//! zarrfs: FUSE over io_uring (Linux 6.14+, with the `fuse.enable_uring`
//! module parameter set), used by `Session::run` when `Config::io_uring`
//! asked for it and the kernel offered it at FUSE_INIT (see `ZARRFS.md`).
//!
//! The kernel keeps one request queue per CPU and puts a request on the
//! queue of the CPU its caller runs on. The daemon gives each queue ring
//! entries (a header buffer and a payload buffer each, registered with an
//! io_uring command on the device) and serves them from threads pinned to
//! that CPU: a request is handed to a thread that waits on the ring, and
//! its reply goes back in the same entry with the command that also asks
//! for the next request. Caller and server meet on one CPU, without the
//! cross-CPU wake-up that a `read(2)` of the device costs on a small VM.
//!
//! Forgets, interrupts and notifications still go through the device fd
//! (the kernel does not send them over the ring), so `Session::run` keeps
//! threads reading it. Within a queue, one thread at a time waits on
//! the ring (`Readers`, without spinning): when every thread of the queue
//! has been busy with a request for a while, the watchdog asks another to
//! wait, so that a slow request (a commit) does not hold up its CPU's
//! others.
//!
//! Layouts (`include/uapi/linux/fuse.h`): an entry's header buffer is a
//! `fuse_uring_req_header`: 128 bytes for the `fuse_in_header` or
//! `fuse_out_header`, 128 bytes for the opcode's own header
//! (`fuse_write_in`, ...), then `fuse_uring_ent_in_out`, whose
//! `commit_id` names the request and whose `payload_sz` says how much of
//! the payload buffer is used: the rest of the request's arguments on the
//! way in, all of the reply's after the `fuse_out_header` on the way out.

use std::cell::Cell;
use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::io;
use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::os::fd::FromRawFd;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Duration;

use io_uring::IoUring;
use io_uring::cqueue;
use io_uring::opcode;
use io_uring::squeue;
use io_uring::types;
use log::error;
use log::warn;

use crate::Filesystem;
use crate::channel::ChannelSender;
use crate::ll::Operation;
use crate::readers::Readers;
use crate::reply::ReplyEmpty;
use crate::request::RequestWithSender;
use crate::session::SessionEventLoop;

const FUSE_IO_URING_CMD_REGISTER: u32 = 1;
const FUSE_IO_URING_CMD_COMMIT_AND_FETCH: u32 = 2;

/// `fuse_uring_req_header`: in/out header, opcode header, `ent_in_out`.
const HEADER_AREA: usize = 128;
const OP_AREA: usize = 128;
const ENT_IN_OUT: usize = HEADER_AREA + OP_AREA;
const COMMIT_ID_AT: usize = ENT_IN_OUT + 8;
const PAYLOAD_SZ_AT: usize = ENT_IN_OUT + 16;
const HEADER_SIZE: usize = ENT_IN_OUT + 32;

const IN_HEADER_LEN: usize = 40; // fuse_in_header
const OUT_HEADER_LEN: usize = 16; // fuse_out_header
/// Where `unique` is in both headers.
const UNIQUE_AT: usize = 8;

/// The smallest payload buffer the kernel accepts (FUSE_MIN_READ_BUFFER).
const MIN_PAYLOAD: usize = 8192;

/// The user data of the eventfd poll that wakes a queue to end.
const STOP: u64 = u64::MAX;

/// Where `sqe->len` sits in an SQE: the io-uring crate's `UringCmd80` has
/// no setter for it, and FUSE_IO_URING_CMD_REGISTER needs it to be the
/// number of iovecs (2).
const SQE_LEN_AT: usize = 24;

thread_local! {
    /// Set on a queue's own threads: their replies are submitted by the
    /// next wait on the ring instead of a syscall of their own.
    static ON_QUEUE_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// What the session negotiated at FUSE_INIT that the ring needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UringParams {
    /// The payload buffer's size: max(8 KiB, max_write, max_pages pages).
    pub(crate) payload_size: usize,
}

/// A buffer the kernel and one thread take turns with.
struct Shared(Box<[UnsafeCell<u8>]>);

impl Shared {
    fn new(len: usize) -> Shared {
        // Zeroed by the allocator (calloc), so that pages no request has
        // used yet take no memory.
        let bytes = vec![0u8; len].into_boxed_slice();
        // SAFETY: UnsafeCell<u8> has the layout of u8.
        Shared(unsafe { Box::from_raw(Box::into_raw(bytes) as *mut [UnsafeCell<u8>]) })
    }

    fn ptr(&self) -> *mut u8 {
        self.0.as_ptr() as *mut u8
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// One ring entry: its buffers and the iovecs that name them to the kernel.
struct Entry {
    header: Shared,
    payload: Shared,
    iov: Box<[libc::iovec; 2]>,
}

/// What a queue's threads share under its lock.
#[derive(Default)]
struct State {
    /// Entries holding a request that no thread has taken yet.
    ready: VecDeque<u16>,
    /// The session ends (the device is gone or the session stops).
    stopped: bool,
    /// Per entry: whether its last command was a registration (whose
    /// failure means the kernel refused the ring) or a commit.
    registering: Vec<bool>,
}

/// One CPU's queue: its ring, its entries, and who waits on the ring.
pub(crate) struct Queue {
    qid: u16,
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    /// Serializes access to the submission and completion rings (the
    /// io-uring crate's shared accessors need one user at a time) and
    /// guards `State`.
    state: Mutex<State>,
    entries: Box<[Entry]>,
    stop: OwnedFd,
    channel: ChannelSender,
    pub(crate) readers: Readers,
}

// SAFETY: an entry's buffers belong either to the kernel (between a
// submitted command and its completion) or to the one thread that took
// the entry from `State::ready` (until it submits the reply), never to
// two at once. SQEs are pushed and CQEs reaped only under `state`;
// io_uring_enter (submit, wait), which only reads the rings' shared
// counters, may run beside them, as the kernel allows.
unsafe impl Send for Queue {}
unsafe impl Sync for Queue {}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("qid", &self.qid).finish()
    }
}

/// The reply side of a request that came over the ring: the entry it
/// came in, where its reply goes.
#[derive(Debug, Clone)]
pub(crate) struct UringReply {
    queue: Arc<Queue>,
    entry: u16,
}

impl UringReply {
    /// Write the reply (a `fuse_out_header` and the reply's arguments)
    /// into the entry and give the entry back to the kernel.
    pub(crate) fn send(&self, data: &[IoSlice<'_>]) -> io::Result<()> {
        self.queue.reply(self.entry, data)
    }

    pub(crate) fn channel(&self) -> &ChannelSender {
        &self.queue.channel
    }
}

impl Queue {
    /// Set up queue `qid` with `depth` entries on the device `channel`.
    pub(crate) fn new(
        qid: u16,
        depth: u16,
        params: UringParams,
        channel: ChannelSender,
    ) -> io::Result<Queue> {
        let ring = IoUring::<squeue::Entry128, cqueue::Entry>::builder()
            .setup_cqsize(u32::from(depth) * 2 + 2)
            .build(u32::from(depth) + 1)?;
        ring.submitter().register_files(&[channel.device_fd()])?;
        // SAFETY: eventfd returns a new descriptor or -1.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if stop < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor of our own, just made.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        let payload_size = params.payload_size.max(MIN_PAYLOAD);
        let entries: Box<[Entry]> = (0..depth)
            .map(|_| {
                let header = Shared::new(HEADER_SIZE);
                let payload = Shared::new(payload_size);
                let iov = Box::new([
                    libc::iovec {
                        iov_base: header.ptr().cast(),
                        iov_len: header.len(),
                    },
                    libc::iovec {
                        iov_base: payload.ptr().cast(),
                        iov_len: payload.len(),
                    },
                ]);
                Entry {
                    header,
                    payload,
                    iov,
                }
            })
            .collect();
        Ok(Queue {
            qid,
            ring,
            state: Mutex::new(State {
                registering: vec![false; usize::from(depth)],
                ..State::default()
            }),
            entries,
            stop,
            channel,
            readers: Readers::new(Duration::ZERO),
        })
    }

    pub(crate) fn qid(&self) -> u16 {
        self.qid
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn command(&self, entry: u16, cmd_op: u32, commit_id: u64) -> squeue::Entry128 {
        // fuse_uring_cmd_req: flags, commit_id, qid.
        let mut cmd = [0u8; 80];
        cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
        cmd[16..18].copy_from_slice(&self.qid.to_ne_bytes());
        let mut command = opcode::UringCmd80::new(types::Fixed(0), cmd_op).cmd(cmd);
        if cmd_op == FUSE_IO_URING_CMD_REGISTER {
            let iov = &self.entries[usize::from(entry)].iov;
            command = command.addr(Some(iov.as_ptr() as u64));
        }
        let mut sqe = command.build().user_data(u64::from(entry));
        if cmd_op == FUSE_IO_URING_CMD_REGISTER {
            const _: () = assert!(std::mem::size_of::<squeue::Entry128>() == 128);
            // SAFETY: Entry128 is repr(C), an io_uring_sqe first, whose
            // u32 `len` is at byte 24.
            unsafe {
                let bytes = (&mut sqe as *mut squeue::Entry128).cast::<u8>();
                (bytes.add(SQE_LEN_AT) as *mut u32).write_unaligned(2);
            }
        }
        sqe
    }

    /// Queue a command for an entry (or the stop poll) on the ring.
    fn push_command(
        &self,
        state: &mut MutexGuard<'_, State>,
        entry: u16,
        cmd_op: u32,
        commit_id: u64,
    ) -> io::Result<()> {
        state.registering[usize::from(entry)] = cmd_op == FUSE_IO_URING_CMD_REGISTER;
        self.push(state, &self.command(entry, cmd_op, commit_id))
    }

    fn push(&self, _state: &MutexGuard<'_, State>, sqe: &squeue::Entry128) -> io::Result<()> {
        // SAFETY: the submission ring is only used under `state`, and an
        // SQE names buffers that live as long as the queue.
        let mut sq = unsafe { self.ring.submission_shared() };
        // One SQE per entry at most is ever queued, and the ring has room
        // for all entries and the stop poll.
        unsafe { sq.push(sqe) }.map_err(|_| io::Error::other("io_uring submission ring full"))
    }

    /// Register every entry and the stop poll; submitted by the first wait.
    pub(crate) fn register(&self) -> io::Result<()> {
        let mut state = self.lock();
        for entry in 0..self.entries.len() as u16 {
            self.push_command(&mut state, entry, FUSE_IO_URING_CMD_REGISTER, 0)?;
        }
        let poll = opcode::PollAdd::new(types::Fd(self.stop.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(STOP);
        self.push(&state, &poll.into())?;
        drop(state);
        self.ring.submit()?;
        Ok(())
    }

    /// Write a reply (a `fuse_out_header` and the reply's arguments) into
    /// an entry and give the entry back to the kernel.
    fn reply(&self, entry: u16, data: &[IoSlice<'_>]) -> io::Result<()> {
        let e = &self.entries[usize::from(entry)];
        let total: usize = data.iter().map(|d| d.len()).sum();
        if total < OUT_HEADER_LEN || total - OUT_HEADER_LEN > e.payload.len() {
            // Answer EIO rather than leave the caller waiting forever.
            self.answer_error(entry, libc::EIO)?;
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a reply of {total} bytes does not fit a ring entry"),
            ));
        }
        // SAFETY: the calling thread owns the entry until the commit below;
        // the sizes were checked above.
        unsafe {
            let mut at = 0;
            for slice in data {
                // The first OUT_HEADER_LEN bytes go to the header area, the
                // rest to the payload.
                let to_header = OUT_HEADER_LEN.saturating_sub(at).min(slice.len());
                let (head, rest) = slice.split_at(to_header);
                if !head.is_empty() {
                    let to = e.header.ptr().add(at);
                    std::ptr::copy_nonoverlapping(head.as_ptr(), to, head.len());
                }
                if !rest.is_empty() {
                    let to = e.payload.ptr().add(at + to_header - OUT_HEADER_LEN);
                    std::ptr::copy_nonoverlapping(rest.as_ptr(), to, rest.len());
                }
                at += slice.len();
            }
            let payload_sz = (total - OUT_HEADER_LEN) as u32;
            (e.header.ptr().add(PAYLOAD_SZ_AT) as *mut u32).write_unaligned(payload_sz);
        }
        self.commit(entry)
    }

    /// Answer the request in an entry with an error, before anything
    /// else was written into the entry.
    fn answer_error(&self, entry: u16, errno: i32) -> io::Result<()> {
        // SAFETY: the calling thread owns the entry; the request's
        // fuse_in_header is still where the kernel put it.
        let unique = unsafe {
            (self.entries[usize::from(entry)].header.ptr().add(UNIQUE_AT) as *const u64)
                .read_unaligned()
        };
        // fuse_out_header: len, error, unique.
        let mut out = [0u8; OUT_HEADER_LEN];
        out[0..4].copy_from_slice(&(OUT_HEADER_LEN as u32).to_ne_bytes());
        out[4..8].copy_from_slice(&(-errno).to_ne_bytes());
        out[UNIQUE_AT..].copy_from_slice(&unique.to_ne_bytes());
        self.reply(entry, &[IoSlice::new(&out)])
    }

    /// Give an entry back with its reply, asking for the next request.
    fn commit(&self, entry: u16) -> io::Result<()> {
        let header = &self.entries[usize::from(entry)].header;
        // SAFETY: this thread owns the entry until the push below.
        let commit_id = unsafe { (header.ptr().add(COMMIT_ID_AT) as *const u64).read_unaligned() };
        {
            let mut state = self.lock();
            self.push_command(
                &mut state,
                entry,
                FUSE_IO_URING_CMD_COMMIT_AND_FETCH,
                commit_id,
            )?;
        }
        // A queue thread submits with its next wait (or before it stops
        // waiting, see `next`); anybody else submits now.
        if !ON_QUEUE_THREAD.with(Cell::get) {
            self.ring.submit()?;
        }
        Ok(())
    }

    /// Wake the queue's threads to end.
    pub(crate) fn stop(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes to our eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Drain the completion ring into `State::ready`.
    fn reap(&self, state: &mut MutexGuard<'_, State>) -> io::Result<()> {
        // SAFETY: the completion ring is only used under `state`.
        let cq = unsafe { self.ring.completion_shared() };
        let mut again = Vec::new();
        for cqe in cq {
            let user_data = cqe.user_data();
            let res = cqe.result();
            if user_data == STOP || res == -libc::ENOTCONN || res == -libc::ECONNABORTED {
                state.stopped = true;
                continue;
            }
            let entry = user_data as u16;
            match res {
                0 => state.ready.push_back(entry),
                // Registered before the kernel was ready: try again.
                r if r == -libc::EAGAIN || r == -libc::EINTR => again.push(entry),
                r if state.registering[usize::from(entry)] => {
                    // The kernel refused the ring: it then serves the
                    // session through the device fd instead.
                    warn!(
                        "fuse io_uring queue {}: registration refused ({}): requests go through /dev/fuse",
                        self.qid,
                        io::Error::from_raw_os_error(-r)
                    );
                }
                r => {
                    // The kernel dropped this entry (it logs why): give
                    // the queue a new one in its place.
                    warn!(
                        "fuse io_uring queue {}: entry {entry} failed: {}",
                        self.qid,
                        io::Error::from_raw_os_error(-r)
                    );
                    again.push(entry);
                }
            }
        }
        for entry in again {
            self.push_command(state, entry, FUSE_IO_URING_CMD_REGISTER, 0)?;
        }
        Ok(())
    }

    /// The next entry with a request for this thread, or None once the
    /// session ends.
    fn next(&self) -> io::Result<Option<u16>> {
        loop {
            {
                let mut state = self.lock();
                if state.stopped {
                    return Ok(None);
                }
                if let Some(entry) = state.ready.pop_front() {
                    // Replies of this thread's that wait for a submit would
                    // wait for this request too.
                    // SAFETY: the submission ring is only used under `state`.
                    if !unsafe { self.ring.submission_shared() }.is_empty() {
                        drop(state);
                        self.ring.submit()?;
                    }
                    return Ok(Some(entry));
                }
            }
            // Nothing ready. Another thread may be waiting on the ring: then
            // this one waits to be asked, after submitting its replies
            // (the waiting thread's wait may have counted them already or
            // not; submitting twice is harmless, not submitting is not).
            match self.readers.spin_ended_then(|| {
                let _ = self.ring.submit();
            }) {
                Some(true) => continue,
                Some(false) => return Ok(None),
                None => {}
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
            let mut state = self.lock();
            self.reap(&mut state)?;
        }
    }

    /// The loop of one of the queue's threads.
    pub(crate) fn serve<FS: Filesystem>(
        self: &Arc<Queue>,
        session: &SessionEventLoop<FS>,
    ) -> io::Result<()> {
        ON_QUEUE_THREAD.with(|on| on.set(true));
        pin_to_cpu(usize::from(self.qid));
        // u64s, for the alignment that fuser's parsing of the headers needs.
        let mut words =
            vec![0u64; (IN_HEADER_LEN + OP_AREA + self.entries[0].payload.len()) / 8 + 1];
        // SAFETY: the bytes of a Vec<u64> that lives as long as the slice.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8)
        };
        if !self.readers.start() {
            return Ok(());
        }
        let result = loop {
            let entry = match self.next() {
                Ok(Some(entry)) => entry,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            self.readers.got_request();
            let served = self.dispatch(entry, session, buf);
            self.readers.done_request();
            if let Err(e) = served {
                break Err(e);
            }
        };
        // Whatever ended this thread ends the queue's others, and the ring
        // keeps no reply unsubmitted.
        let _ = self.ring.submit();
        self.lock().stopped = true;
        self.readers.finish();
        result
    }

    /// Rebuild the request as read(2) of the device would have returned it
    /// and hand it to the filesystem.
    fn dispatch<FS: Filesystem>(
        self: &Arc<Queue>,
        entry: u16,
        session: &SessionEventLoop<FS>,
        buf: &mut [u8],
    ) -> io::Result<()> {
        let e = &self.entries[usize::from(entry)];
        // SAFETY: this thread owns the entry until its reply is committed.
        let size = unsafe {
            let header = e.header.ptr();
            let len = (header as *const u32).read_unaligned() as usize;
            let payload_sz = (header.add(PAYLOAD_SZ_AT) as *const u32).read_unaligned() as usize;
            let op_len = len.checked_sub(IN_HEADER_LEN + payload_sz);
            let Some(op_len) = op_len.filter(|&n| n <= OP_AREA && payload_sz <= e.payload.len())
            else {
                error!(
                    "fuse io_uring: request of {len} bytes with a payload of {payload_sz} does not add up"
                );
                return self.answer_error(entry, libc::EIO);
            };
            std::ptr::copy_nonoverlapping(header, buf.as_mut_ptr(), IN_HEADER_LEN);
            std::ptr::copy_nonoverlapping(
                header.add(HEADER_AREA),
                buf.as_mut_ptr().add(IN_HEADER_LEN),
                op_len,
            );
            std::ptr::copy_nonoverlapping(
                e.payload.ptr(),
                buf.as_mut_ptr().add(IN_HEADER_LEN + op_len),
                payload_sz,
            );
            len
        };
        let reply = UringReply {
            queue: self.clone(),
            entry,
        };
        let Some(req) = RequestWithSender::over_ring(reply, &buf[..size]) else {
            // fuser logged why.
            return self.answer_error(entry, libc::EIO);
        };
        if let Ok(Operation::Destroy(_)) = req.request.operation() {
            req.reply::<ReplyEmpty>().ok();
            return Ok(());
        }
        req.dispatch(session);
        Ok(())
    }
}

/// The number of queues the kernel keeps: one per possible CPU.
pub(crate) fn queue_count() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    usize::try_from(n).unwrap_or(1).max(1)
}

fn pin_to_cpu(cpu: usize) {
    if let Err(e) = crate::follow::pin_to_cpu(cpu) {
        warn!("fuse io_uring: cannot pin a thread to CPU {cpu}: {e}");
    }
}
