//! zarrfs: keeping the reader on the CPU of the client it serves, for the
//! request loop of `session.rs` when `Config::spin` is set (see
//! `ZARRFS.md`, "Following a client").
//!
//! On the small virtual machines zarrfs is benchmarked on, a request whose
//! caller and reader share a CPU costs a fifth of one that crosses CPUs:
//! no halted vCPU has to be woken through the host. The kernel does not
//! keep them together by itself: a reply wakes its caller on an idle CPU
//! rather than on the busy one the reply came from. So while the spinning
//! reader serves one client thread that makes request after request, it
//!
//! - moves itself, now and then, to the CPU that thread last ran on (its
//!   affinity is set to that CPU and put back at once: nothing stays
//!   pinned, and threads it starts inherit the mask it had), and
//! - writes its replies as a SCHED_IDLE thread: the scheduler counts a CPU
//!   that runs only SCHED_IDLE threads as idle, so it wakes the caller
//!   right there. The reader is SCHED_OTHER again as soon as the write
//!   returns; should the caller take the CPU first, the reader waits for
//!   it only as long as that thread runs or the load balancer leaves it,
//!   and the watchdog hands the device to another thread after
//!   `readers::PROMOTE_AFTER` meanwhile.
//!
//! Requests from several threads (zarr-python's pool) are not followed:
//! the reader cannot be beside all of them.
//!
//! Switching policy costs two `sched_setscheduler` calls a request, about
//! 1.5 us each here, so one reader at a time (the one holding
//! [`IDLE_READER`]) stays SCHED_IDLE from its first such reply on, while
//! it serves its client's cheap requests ([`STAYS_IDLE_FOR`]: the lookups,
//! creates and releases of a program writing many files) and while it
//! spins between them. A thread of this policy only gets a CPU that
//! nothing else wants, which is where its client waits for it; it
//! becomes SCHED_OTHER again before any other request (threads it would
//! start, for a commit or for reading ahead, would inherit SCHED_IDLE),
//! when it stops following, and before it waits in poll. As the
//! scheduler may leave such a thread without a CPU for as long as other
//! work keeps it busy, the watchdog makes the reader SCHED_OTHER itself
//! when it has not run for a tick ([`rescue_starved`]); the reader then
//! goes back to switching per reply for [`RESCUE_BACKOFF`].

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::Duration;
use std::time::Instant;

use crate::ll::fuse_abi::fuse_opcode;

/// One client thread must have made every request for this long before
/// the reader follows it.
const STEADY: Duration = Duration::from_millis(10);

/// How often the reader looks up where the client runs while it follows.
const CHECK_EVERY: Duration = Duration::from_millis(1);

/// The requests a reader serves without leaving SCHED_IDLE: short ones,
/// which start no thread (zarrfs's CREATE may start the session's
/// staged-file maker, which makes itself SCHED_OTHER).
const STAYS_IDLE_FOR: [u32; 7] = [
    fuse_opcode::FUSE_LOOKUP as u32,
    fuse_opcode::FUSE_FORGET as u32,
    fuse_opcode::FUSE_BATCH_FORGET as u32,
    fuse_opcode::FUSE_GETATTR as u32,
    fuse_opcode::FUSE_CREATE as u32,
    fuse_opcode::FUSE_FLUSH as u32,
    fuse_opcode::FUSE_RELEASE as u32,
];

/// How long a reader the watchdog had to rescue switches policy per
/// reply again before it stays SCHED_IDLE again.
const RESCUE_BACKOFF: Duration = Duration::from_millis(100);

/// The thread id of the reader staying SCHED_IDLE, 0 for none.
static IDLE_READER: AtomicI32 = AtomicI32::new(0);

/// Counted up by that reader whenever it runs (each turn of its spin,
/// each request), so that the watchdog can tell when it does not.
static IDLE_READER_RUNS: AtomicU64 = AtomicU64::new(0);

/// That reader is serving a request (rather than spinning).
static IDLE_READER_BUSY: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// This thread's replies are written as SCHED_IDLE.
    static REPLY_AS_IDLE: Cell<bool> = const { Cell::new(false) };
    /// This thread holds [`IDLE_READER`] and is SCHED_IDLE between
    /// replies.
    static STAYS_IDLE: Cell<bool> = const { Cell::new(false) };
    /// Not before then does this thread stay SCHED_IDLE again.
    static STAY_IDLE_AFTER: Cell<Option<Instant>> = const { Cell::new(None) };
    /// This thread's id. SAFETY: gettid takes nothing.
    static TID: libc::pid_t = unsafe { libc::gettid() };
}

/// Write a reply with `send`, as SCHED_IDLE if this thread follows a
/// client.
pub(crate) fn reply<T>(send: impl FnOnce() -> T) -> T {
    if !REPLY_AS_IDLE.with(Cell::get) || (STAYS_IDLE.with(Cell::get) && !rescued()) {
        return send();
    }
    let stays = claim_idle_reader();
    if !set_policy(libc::SCHED_IDLE) {
        if stays {
            IDLE_READER.store(0, Ordering::Release);
        }
        REPLY_AS_IDLE.with(|f| f.set(false));
        return send();
    }
    if stays {
        STAYS_IDLE.with(|f| f.set(true));
        return send();
    }
    let sent = send();
    if !set_policy(libc::SCHED_OTHER) {
        // Not expected (see may_leave_sched_idle); follow no more.
        REPLY_AS_IDLE.with(|f| f.set(false));
    }
    sent
}

/// The reader got a request with this opcode: unless it is one to serve
/// as SCHED_IDLE, be SCHED_OTHER for it.
pub(crate) fn serving(opcode: u32) {
    if !STAYS_IDLE.with(Cell::get) || rescued() {
        return;
    }
    IDLE_READER_RUNS.fetch_add(1, Ordering::Relaxed);
    IDLE_READER_BUSY.store(true, Ordering::Relaxed);
    if !STAYS_IDLE_FOR.contains(&opcode) {
        leave_idle();
    }
}

/// A turn of the reader's spin: it runs.
pub(crate) fn spinning() {
    if STAYS_IDLE.with(Cell::get) {
        IDLE_READER_RUNS.fetch_add(1, Ordering::Relaxed);
        IDLE_READER_BUSY.store(false, Ordering::Relaxed);
    }
}

/// Be SCHED_OTHER again if this thread stayed SCHED_IDLE: it stops
/// following, or its spin ended and it is about to wait.
pub(crate) fn leave_idle() {
    if !STAYS_IDLE.with(|f| f.replace(false)) {
        return;
    }
    let tid = TID.with(|t| *t);
    // The watchdog may have made it SCHED_OTHER already; again is harmless.
    if !set_policy(libc::SCHED_OTHER) {
        REPLY_AS_IDLE.with(|f| f.set(false));
    }
    let _ = IDLE_READER.compare_exchange(tid, 0, Ordering::AcqRel, Ordering::Relaxed);
}

/// Take [`IDLE_READER`] for this thread, unless another reader has it or
/// this one was rescued less than [`RESCUE_BACKOFF`] ago.
fn claim_idle_reader() -> bool {
    if STAY_IDLE_AFTER
        .with(Cell::get)
        .is_some_and(|after| Instant::now() < after)
    {
        return false;
    }
    let tid = TID.with(|t| *t);
    IDLE_READER
        .compare_exchange(0, tid, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
}

/// Whether the watchdog took [`IDLE_READER`] from this thread (making it
/// SCHED_OTHER); if so, this thread no longer stays idle.
fn rescued() -> bool {
    if IDLE_READER.load(Ordering::Acquire) == TID.with(|t| *t) {
        return false;
    }
    STAYS_IDLE.with(|f| f.set(false));
    STAY_IDLE_AFTER.with(|f| f.set(Some(Instant::now() + RESCUE_BACKOFF)));
    true
}

/// The watchdog's check, once a tick: a reader staying SCHED_IDLE that
/// has not run since the last tick (`last`, this function's memory) while
/// it serves a request, or while requests wait (`requests_wait`), is kept
/// from its CPU by other work; make it SCHED_OTHER. (One that spins while
/// its client computes on that CPU is not late for anything.) Returns
/// whether it did.
pub(crate) fn rescue_starved(
    last: &mut Option<(libc::pid_t, u64)>,
    requests_wait: impl FnOnce() -> bool,
) -> bool {
    let tid = IDLE_READER.load(Ordering::Acquire);
    if tid == 0 {
        *last = None;
        return false;
    }
    let runs = IDLE_READER_RUNS.load(Ordering::Relaxed);
    if *last != Some((tid, runs)) {
        *last = Some((tid, runs));
        return false;
    }
    if !IDLE_READER_BUSY.load(Ordering::Relaxed) && !requests_wait() {
        return false;
    }
    *last = None;
    if IDLE_READER
        .compare_exchange(tid, 0, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    // Reader threads end only with the session, giving IDLE_READER back
    // first (Follower's drop), so `tid` is still the reader's.
    set_policy_of(tid, libc::SCHED_OTHER)
}

/// What to do about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Do not follow (another client, or the reader was not spinning).
    Stop,
    /// Go on as before.
    Keep,
    /// Look up where the client runs and go there.
    Check,
}

/// Which client the reader's requests come from, and since when.
#[derive(Debug)]
struct Tracker {
    client: Option<u32>,
    steady_since: Instant,
    checked: Option<Instant>,
}

impl Tracker {
    fn new(now: Instant) -> Tracker {
        Tracker {
            client: None,
            steady_since: now,
            checked: None,
        }
    }

    /// A request from thread `pid`; `spinning`: it came while the reader
    /// spun after its previous request (not after a wait in poll).
    fn request(&mut self, pid: u32, spinning: bool, now: Instant) -> Step {
        // The kernel's own requests (forgets, releases at exit) name no
        // thread that waits for them.
        if pid == 0 {
            return Step::Keep;
        }
        if self.client != Some(pid) {
            self.client = Some(pid);
            self.steady_since = now;
            self.checked = None;
            return Step::Stop;
        }
        if !spinning {
            self.checked = None;
            return Step::Stop;
        }
        if now.duration_since(self.steady_since) < STEADY {
            return Step::Keep;
        }
        match self.checked {
            Some(at) if now.duration_since(at) < CHECK_EVERY => Step::Keep,
            _ => {
                self.checked = Some(now);
                Step::Check
            }
        }
    }
}

/// One reader thread's following of its clients.
pub(crate) struct Follower {
    tracker: Tracker,
    /// The CPUs this thread may run on, as it started; `None` where
    /// following is off (the thread is not SCHED_OTHER, or the mask is
    /// unreadable).
    allowed: Option<libc::cpu_set_t>,
}

impl Follower {
    /// For the calling thread.
    pub(crate) fn new() -> Follower {
        Follower {
            tracker: Tracker::new(Instant::now()),
            allowed: allowed_cpus().filter(|_| {
                // SAFETY: sched_getscheduler on the calling thread.
                let other = unsafe { libc::sched_getscheduler(0) == libc::SCHED_OTHER };
                other && may_leave_sched_idle()
            }),
        }
    }

    /// The reader got a request from thread `pid` (see [`Tracker::request`]).
    pub(crate) fn request(&mut self, pid: u32, spinning: bool) {
        let Some(allowed) = &self.allowed else {
            return;
        };
        match self.tracker.request(pid, spinning, Instant::now()) {
            Step::Keep => {}
            Step::Stop => {
                REPLY_AS_IDLE.with(|f| f.set(false));
                leave_idle();
            }
            Step::Check => {
                let follows = match cpu_of(pid) {
                    Some(cpu) if cpu < libc::CPU_SETSIZE as usize => {
                        // SAFETY: CPU_ISSET reads a valid set.
                        let may = unsafe { libc::CPU_ISSET(cpu, allowed) };
                        may && (current_cpu() == Some(cpu) || hop_to(cpu, allowed))
                    }
                    _ => false,
                };
                REPLY_AS_IDLE.with(|f| f.set(follows));
                if !follows {
                    leave_idle();
                }
            }
        }
    }
}

impl Drop for Follower {
    /// The reader thread ends: give [`IDLE_READER`] back.
    fn drop(&mut self) {
        leave_idle();
    }
}

/// Set the calling thread's policy.
fn set_policy(policy: libc::c_int) -> bool {
    set_policy_of(0, policy)
}

/// Set the policy of thread `tid` of this process (0: the calling one).
fn set_policy_of(tid: libc::pid_t, policy: libc::c_int) -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on a thread of this process with a valid
    // param. Between SCHED_OTHER and SCHED_IDLE it keeps the nice value.
    unsafe { libc::sched_setscheduler(tid, policy, &param) == 0 }
}

/// Whether a SCHED_IDLE thread of this process may become SCHED_OTHER
/// again (sched(7)): with CAP_SYS_NICE (taken as root), or where its nice
/// value is within RLIMIT_NICE. A reader that could not would stay idle.
fn may_leave_sched_idle() -> bool {
    // SAFETY: geteuid, getrlimit and getpriority on this thread, writing
    // to a local.
    unsafe {
        if libc::geteuid() == 0 {
            return true;
        }
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NICE, &mut limit) != 0 {
            return false;
        }
        let nice = libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t);
        limit.rlim_cur == libc::RLIM_INFINITY || 20 - limit.rlim_cur as i64 <= nice as i64
    }
}

fn allowed_cpus() -> Option<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, filled by the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        (libc::sched_getaffinity(0, size, &mut set) == 0).then_some(set)
    }
}

fn current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu takes nothing.
    usize::try_from(unsafe { libc::sched_getcpu() }).ok()
}

/// Hold the calling thread to `cpu` (the io_uring queue threads too); it
/// runs there when this returns.
pub(crate) fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET stays within it for a
    // cpu below CPU_SETSIZE; sched_setaffinity on the calling thread.
    unsafe {
        let mut only: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut only);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &only) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Let the calling thread run on `allowed` (the mask it started with).
fn allow_cpus(allowed: &libc::cpu_set_t) {
    // SAFETY: sched_setaffinity on the calling thread with a valid set.
    unsafe {
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), allowed);
    }
}

/// Move the calling thread to `cpu` and let it run on `allowed` again.
fn hop_to(cpu: usize, allowed: &libc::cpu_set_t) -> bool {
    let moved = pin_to_cpu(cpu).is_ok();
    allow_cpus(allowed);
    moved
}

/// The CPU thread `tid` last ran on (field 39 of /proc/TID/stat).
fn cpu_of(tid: u32) -> Option<usize> {
    parse_cpu(&std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?)
}

fn parse_cpu(stat: &str) -> Option<usize> {
    // The command name (field 2) is in parentheses and may hold anything,
    // ')' and spaces too; field 3 follows the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(39 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_followed_once_steady_and_looked_up_now_and_then() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(t0);
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(tracker.request(7, true, t0), Step::Stop, "a new client");
        assert_eq!(
            tracker.request(7, true, ms(5)),
            Step::Keep,
            "not steady yet"
        );
        assert_eq!(tracker.request(7, true, ms(10)), Step::Check);
        assert_eq!(tracker.request(0, true, ms(10)), Step::Keep, "the kernel's");
        assert_eq!(
            tracker.request(7, true, ms(10) + Duration::from_micros(500)),
            Step::Keep
        );
        assert_eq!(tracker.request(7, true, ms(11)), Step::Check);
        // After a wait in poll, the next spin looks again.
        assert_eq!(tracker.request(7, false, ms(12)), Step::Stop);
        assert_eq!(
            tracker.request(7, true, ms(12) + Duration::from_micros(100)),
            Step::Check
        );
    }

    #[test]
    fn requests_of_several_threads_are_not_followed() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(t0);
        for n in 0..100u64 {
            let pid = 10 + (n % 2) as u32;
            let step = tracker.request(pid, true, t0 + Duration::from_millis(n));
            assert_eq!(step, Step::Stop, "request {n}");
        }
    }

    #[test]
    fn the_cpu_of_a_thread_is_read_from_proc() {
        // Held to one CPU, this thread's stat names that CPU.
        let allowed = allowed_cpus().unwrap();
        let cpu = (0..libc::CPU_SETSIZE as usize)
            .find(|&c| unsafe { libc::CPU_ISSET(c, &allowed) })
            .unwrap();
        pin_to_cpu(cpu).unwrap();
        let tid = unsafe { libc::gettid() } as u32;
        let found = cpu_of(tid);
        allow_cpus(&allowed);
        assert_eq!(found, Some(cpu));
        assert_eq!(
            parse_cpu(
                "12 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 3 0"
            ),
            Some(3)
        );
    }

    /// The tests that take IDLE_READER, one at a time.
    fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn policy_of(tid: libc::pid_t) -> libc::c_int {
        // SAFETY: sched_getscheduler reads a thread's policy.
        unsafe { libc::sched_getscheduler(tid) }
    }

    #[test]
    fn a_following_reader_stays_idle_for_cheap_requests_only() {
        let _serial = one_at_a_time();
        REPLY_AS_IDLE.with(|f| f.set(true));
        let during = reply(|| policy_of(0));
        assert_eq!(during, libc::SCHED_IDLE);
        assert_eq!(policy_of(0), libc::SCHED_IDLE, "after the reply");
        serving(fuse_opcode::FUSE_LOOKUP as u32);
        assert_eq!(policy_of(0), libc::SCHED_IDLE, "serving a lookup");
        serving(fuse_opcode::FUSE_WRITE as u32);
        assert_eq!(policy_of(0), libc::SCHED_OTHER, "serving a write");
        assert_eq!(IDLE_READER.load(Ordering::Acquire), 0, "given back");

        // While another reader stays idle, this one switches per reply.
        IDLE_READER.store(-1, Ordering::Release);
        let during = reply(|| policy_of(0));
        IDLE_READER.store(0, Ordering::Release);
        REPLY_AS_IDLE.with(|f| f.set(false));
        assert_eq!(during, libc::SCHED_IDLE);
        assert_eq!(policy_of(0), libc::SCHED_OTHER);
    }

    #[test]
    fn the_watchdog_makes_a_starved_idle_reader_normal() {
        let _serial = one_at_a_time();
        let (to_main, from_reader) = std::sync::mpsc::channel();
        let (to_reader, from_main) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            REPLY_AS_IDLE.with(|f| f.set(true));
            reply(|| ());
            spinning();
            to_main.send(TID.with(|t| *t)).unwrap();
            from_main.recv().unwrap();
            // Rescued: the next reply switches and switches back.
            serving(fuse_opcode::FUSE_LOOKUP as u32);
            let during = reply(|| policy_of(0));
            let after = policy_of(0);
            leave_idle();
            (during, after)
        });
        let tid = from_reader.recv().unwrap();
        assert_eq!(policy_of(tid), libc::SCHED_IDLE);
        let mut seen = None;
        assert!(!rescue_starved(&mut seen, || false), "first look");
        assert!(
            !rescue_starved(&mut seen, || false),
            "spinning while nothing waits for it"
        );
        assert_eq!(policy_of(tid), libc::SCHED_IDLE);
        assert!(rescue_starved(&mut seen, || true), "a request waits");
        assert_eq!(policy_of(tid), libc::SCHED_OTHER);
        assert_eq!(IDLE_READER.load(Ordering::Acquire), 0);
        to_reader.send(()).unwrap();
        let (during, after) = reader.join().unwrap();
        assert_eq!((during, after), (libc::SCHED_IDLE, libc::SCHED_OTHER));
    }
}
