//! zarrfs: who reads the device, for the request loop of `session.rs`
//! when `Config::spin` is set (see `ZARRFS.md`).
//!
//! Stock fuser has every thread block in `read(2)` on its device fd, so
//! the kernel wakes a thread for each request, most often on another CPU,
//! and on small virtual machines that wake-up costs more than the request.
//! Here one thread at a time reads the device (the reader). After each
//! request it keeps reading, non-blocking, for the spin time, yielding the
//! CPU between attempts, so that a client's next request finds it awake;
//! then it waits in `poll(2)`, alone, so that the kernel has one thread to
//! wake. The other threads wait in user space until the watchdog asks one
//! of them to read: when every reader has been busy with one request for
//! longer than `PROMOTE_AFTER`, so that a slow request (a commit) never
//! holds up the others. A reader whose spin ends while another thread
//! reads goes back to waiting.
//!
//! Spinning is not always a gain: where requests wait for the disk, the
//! CPU it takes from the machine slows them down (on a VM, it is taken
//! from the emulation of the disk too). So the watchdog tries both, in
//! turn, while requests come: a trial of `TRIAL` with spinning and one
//! without, then the one that served more requests for a hold of `HOLD`,
//! then trials again; each time the same one wins, the hold doubles, up to
//! `MAX_HOLD`, so that a steady workload spends little time in trials.

use std::sync::Condvar;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

/// How long all readers may be busy before another thread is asked to read.
pub(crate) const PROMOTE_AFTER: Duration = Duration::from_millis(1);

/// How often the watchdog looks while requests come, and while none do.
const TICK_ACTIVE: Duration = Duration::from_millis(1);
const TICK_IDLE: Duration = Duration::from_millis(50);
/// Requests within this long keep the watchdog on its short tick.
const ACTIVE_WINDOW: Duration = Duration::from_millis(50);

/// How long each trial of spinning or not lasts, and how long the winner
/// is kept before the next trials.
const TRIAL: Duration = Duration::from_millis(300);
const HOLD: Duration = Duration::from_secs(3);
const MAX_HOLD: Duration = Duration::from_secs(48);
/// Spinning must serve this many more requests than not spinning to win.
const SPIN_MARGIN: f64 = 1.05;

/// Where the watchdog is in its trials of spinning and not spinning.
#[derive(Debug, Clone, Copy)]
enum Tuning {
    /// Trying spinning since `since`, with the request count then.
    Spinning { since: Instant, requests: u64 },
    /// Trying not spinning, after `spun` requests in the spinning trial.
    Still {
        since: Instant,
        requests: u64,
        spun: u64,
    },
    /// Keeping a choice until `until`.
    Hold { until: Instant },
}

#[derive(Debug)]
struct State {
    /// Threads reading the device (spinning or waiting in poll).
    reading: usize,
    /// Threads waiting to be asked to read.
    idle: usize,
    /// Requests to read that idle threads have not taken yet.
    asked: usize,
    /// Since when no thread reads because all are busy with requests.
    all_busy_since: Option<Instant>,
    last_request: Instant,
    /// Requests read so far.
    requests: u64,
    tuning: Tuning,
    /// How long the last trials' winner is kept, and which it was.
    hold: Duration,
    last_choice: Option<bool>,
    /// The device is gone: every thread ends.
    done: bool,
}

#[derive(Debug)]
pub(crate) struct Readers {
    state: Mutex<State>,
    asked: Condvar,
    /// How long a reader keeps reading after a request before it waits,
    /// when it spins.
    spin: Duration,
    /// Whether readers spin now (the watchdog's choice); read on every
    /// turn of a spin, so not under the lock.
    spinning: AtomicBool,
}

impl Readers {
    pub(crate) fn new(spin: Duration) -> Readers {
        Readers {
            state: Mutex::new(State {
                reading: 0,
                idle: 0,
                asked: 0,
                all_busy_since: None,
                last_request: Instant::now(),
                requests: 0,
                tuning: Tuning::Hold {
                    until: Instant::now(),
                },
                hold: HOLD,
                last_choice: None,
                done: false,
            }),
            asked: Condvar::new(),
            spin,
            spinning: AtomicBool::new(true),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A thread starts: it reads if nobody does yet, else it waits to be
    /// asked. False once the device is gone.
    pub(crate) fn start(&self) -> bool {
        let mut state = self.lock();
        if state.reading == 0 {
            state.reading = 1;
            return true;
        }
        state.idle += 1;
        self.wait_asked(state)
    }

    /// How long a reader keeps reading after a request now: the spin
    /// time, or nothing while not spinning serves requests better.
    pub(crate) fn spin(&self) -> Duration {
        if self.spinning.load(Ordering::Relaxed) {
            self.spin
        } else {
            Duration::ZERO
        }
    }

    /// A reader got a request and goes to work on it.
    pub(crate) fn got_request(&self) {
        let mut state = self.lock();
        state.reading -= 1;
        state.requests += 1;
        state.last_request = Instant::now();
        if state.reading == 0 {
            state.all_busy_since = Some(state.last_request);
        }
    }

    /// A request is done: its thread reads again.
    pub(crate) fn done_request(&self) {
        let mut state = self.lock();
        state.reading += 1;
        state.all_busy_since = None;
    }

    /// A reader's spin ended without a request. If another thread reads,
    /// this one waits to be asked (false once the device is gone) and
    /// returns when it reads again; if it is the only reader it returns
    /// at once, to wait in poll(2).
    pub(crate) fn spin_ended(&self) -> Option<bool> {
        self.spin_ended_then(|| {})
    }

    /// As `spin_ended`, calling `before_waiting` first if this thread is
    /// to wait to be asked (the io_uring queue submits its replies then).
    pub(crate) fn spin_ended_then(&self, before_waiting: impl FnOnce()) -> Option<bool> {
        let mut state = self.lock();
        if state.reading <= 1 {
            return None;
        }
        before_waiting();
        state.reading -= 1;
        state.idle += 1;
        Some(self.wait_asked(state))
    }

    fn wait_asked(&self, mut state: MutexGuard<'_, State>) -> bool {
        while state.asked == 0 && !state.done {
            state = self.asked.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.idle -= 1;
        if state.done {
            return false;
        }
        state.asked -= 1;
        state.reading += 1;
        state.all_busy_since = None;
        true
    }

    /// The device is gone (or the session ends): wake everyone to end.
    pub(crate) fn finish(&self) {
        self.lock().done = true;
        self.asked.notify_all();
    }

    /// The watchdog: ask an idle thread to read whenever all readers have
    /// been busy for `PROMOTE_AFTER`, and make a reader that stays
    /// SCHED_IDLE but gets no CPU SCHED_OTHER (`follow::rescue_starved`);
    /// returns once the device is gone. `requests_wait` says whether the
    /// device has requests nobody has read.
    pub(crate) fn watch(&self, requests_wait: impl Fn() -> bool) {
        let mut idle_reader_seen = None;
        loop {
            // A reader left SCHED_IDLE without a CPU (follow.rs).
            crate::follow::rescue_starved(&mut idle_reader_seen, &requests_wait);
            let tick = {
                let mut state = self.lock();
                if state.done {
                    return;
                }
                if let Some(since) = state.all_busy_since
                    && since.elapsed() >= PROMOTE_AFTER
                    && state.idle > state.asked
                {
                    state.asked += 1;
                    // One more ask only after another PROMOTE_AFTER.
                    state.all_busy_since = Some(Instant::now());
                    self.asked.notify_one();
                }
                if state.last_request.elapsed() < ACTIVE_WINDOW {
                    tune(&mut state, &self.spinning, Instant::now());
                    TICK_ACTIVE
                } else {
                    // Idle: the next burst starts with trials again.
                    self.spinning.store(true, Ordering::Relaxed);
                    state.tuning = Tuning::Hold {
                        until: Instant::now(),
                    };
                    state.hold = HOLD;
                    state.last_choice = None;
                    TICK_IDLE
                }
            };
            std::thread::sleep(tick);
        }
    }
}

/// One step of the trials: spin for a `TRIAL`, not for another, keep the
/// one that served more requests for the hold.
fn tune(state: &mut State, spinning: &AtomicBool, now: Instant) {
    state.tuning = match state.tuning {
        Tuning::Hold { until } if now >= until => {
            spinning.store(true, Ordering::Relaxed);
            Tuning::Spinning {
                since: now,
                requests: state.requests,
            }
        }
        Tuning::Spinning { since, requests } if now.duration_since(since) >= TRIAL => {
            spinning.store(false, Ordering::Relaxed);
            Tuning::Still {
                since: now,
                requests: state.requests,
                spun: state.requests - requests,
            }
        }
        Tuning::Still {
            since,
            requests,
            spun,
        } if now.duration_since(since) >= TRIAL => {
            let still = state.requests - requests;
            let spin = spun as f64 > still as f64 * SPIN_MARGIN;
            spinning.store(spin, Ordering::Relaxed);
            state.hold = if state.last_choice == Some(spin) {
                (state.hold * 2).min(MAX_HOLD)
            } else {
                HOLD
            };
            state.last_choice = Some(spin);
            Tuning::Hold {
                until: now + state.hold,
            }
        }
        tuning => tuning,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_idle_thread_is_asked_to_read_once_every_reader_is_busy() {
        let readers = Arc::new(Readers::new(Duration::from_micros(500)));
        assert!(readers.start(), "the first thread reads");
        let second = {
            let readers = readers.clone();
            std::thread::spawn(move || readers.start())
        };
        let watchdog = {
            let readers = readers.clone();
            std::thread::spawn(move || readers.watch(|| false))
        };
        // The only reader goes to work on a long request.
        readers.got_request();
        assert!(second.join().unwrap(), "the second thread is asked to read");
        readers.done_request();
        // Two readers now: one whose spin ends goes back to waiting, and
        // is told to end when the device goes.
        let stepped_down = {
            let readers = readers.clone();
            std::thread::spawn(move || readers.spin_ended())
        };
        std::thread::sleep(Duration::from_millis(20));
        readers.finish();
        assert_eq!(stepped_down.join().unwrap(), Some(false));
        watchdog.join().unwrap();
        assert_eq!(readers.spin_ended(), None, "the last reader waits in poll");
    }

    #[test]
    fn trials_keep_whichever_served_more_requests() {
        let readers = Readers::new(Duration::from_micros(500));
        let mut state = readers.lock();
        let spinning = &readers.spinning;
        let t0 = Instant::now();
        for (spun, still, expect) in [(100, 50, true), (50, 100, false), (100, 97, false)] {
            let start = match state.tuning {
                Tuning::Hold { until } => until.max(t0),
                _ => unreachable!(),
            };
            tune(&mut state, spinning, start);
            assert!(spinning.load(Ordering::Relaxed), "a trial starts spinning");
            state.requests += spun;
            tune(&mut state, spinning, start + TRIAL);
            assert!(!spinning.load(Ordering::Relaxed), "then not");
            state.requests += still;
            tune(&mut state, spinning, start + TRIAL * 2);
            assert_eq!(
                spinning.load(Ordering::Relaxed),
                expect,
                "{spun} vs {still}"
            );
            // Kept until the hold ends.
            tune(&mut state, spinning, start + TRIAL * 2 + HOLD / 2);
            assert_eq!(spinning.load(Ordering::Relaxed), expect);
        }
        // The same winner twice: the hold doubles.
        assert_eq!(state.hold, HOLD * 2);
    }
}
