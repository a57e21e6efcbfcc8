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

use std::cell::Cell;
use std::time::Duration;
use std::time::Instant;

/// One client thread must have made every request for this long before
/// the reader follows it.
const STEADY: Duration = Duration::from_millis(10);

/// How often the reader looks up where the client runs while it follows.
const CHECK_EVERY: Duration = Duration::from_millis(1);

thread_local! {
    /// This thread's replies are written as SCHED_IDLE.
    static REPLY_AS_IDLE: Cell<bool> = const { Cell::new(false) };
}

/// Write a reply with `send`, as SCHED_IDLE if this thread follows a
/// client.
pub(crate) fn reply<T>(send: impl FnOnce() -> T) -> T {
    if !REPLY_AS_IDLE.with(Cell::get) {
        return send();
    }
    if !set_policy(libc::SCHED_IDLE) {
        REPLY_AS_IDLE.with(|f| f.set(false));
        return send();
    }
    let sent = send();
    if !set_policy(libc::SCHED_OTHER) {
        // Not expected (see may_leave_sched_idle); follow no more.
        REPLY_AS_IDLE.with(|f| f.set(false));
    }
    sent
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
            Step::Stop => REPLY_AS_IDLE.with(|f| f.set(false)),
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
            }
        }
    }
}

fn set_policy(policy: libc::c_int) -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on the calling thread with a valid param.
    // Between SCHED_OTHER and SCHED_IDLE it keeps the nice value.
    unsafe { libc::sched_setscheduler(0, policy, &param) == 0 }
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

    #[test]
    fn a_reply_as_idle_leaves_the_thread_as_it_was() {
        REPLY_AS_IDLE.with(|f| f.set(true));
        let during = reply(|| unsafe { libc::sched_getscheduler(0) });
        REPLY_AS_IDLE.with(|f| f.set(false));
        assert_eq!(during, libc::SCHED_IDLE);
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
    }
}
