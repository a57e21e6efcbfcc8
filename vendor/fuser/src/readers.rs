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

use std::sync::Condvar;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Duration;
use std::time::Instant;

/// How long all readers may be busy before another thread is asked to read.
pub(crate) const PROMOTE_AFTER: Duration = Duration::from_millis(1);

/// How often the watchdog looks while requests come, and while none do.
const TICK_ACTIVE: Duration = Duration::from_millis(1);
const TICK_IDLE: Duration = Duration::from_millis(50);
/// Requests within this long keep the watchdog on its short tick.
const ACTIVE_WINDOW: Duration = Duration::from_millis(50);

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
    /// The device is gone: every thread ends.
    done: bool,
}

#[derive(Debug)]
pub(crate) struct Readers {
    state: Mutex<State>,
    asked: Condvar,
    /// How long a reader keeps reading after a request before it waits.
    pub(crate) spin: Duration,
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
                done: false,
            }),
            asked: Condvar::new(),
            spin,
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

    /// A reader got a request and goes to work on it.
    pub(crate) fn got_request(&self) {
        let mut state = self.lock();
        state.reading -= 1;
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
        let mut state = self.lock();
        if state.reading <= 1 {
            return None;
        }
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
    /// been busy for `PROMOTE_AFTER`; returns once the device is gone.
    pub(crate) fn watch(&self) {
        loop {
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
                    TICK_ACTIVE
                } else {
                    TICK_IDLE
                }
            };
            std::thread::sleep(tick);
        }
    }
}
