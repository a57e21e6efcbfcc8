//! Following the sequence of opens in one directory: whether an open
//! continues it, and which files to read ahead when it does.

use std::sync::Arc;

use super::order::DirOrder;
use super::{FIRST_WINDOW, MAX_WINDOW, REORDER};

/// The sequence of opens in one directory.
pub(super) struct DirScan {
    /// The view generation the order was listed in.
    pub(super) generation: u64,
    pub(super) order: Option<Arc<DirOrder>>,
    /// The worker was asked for the order.
    pub(super) listing: bool,
    /// The last two names opened before the order was known, oldest
    /// first: the sequence is replayed from them once it is.
    pub(super) early: Vec<Box<str>>,
    /// The furthest position the sequence has opened.
    pub(super) last: Option<usize>,
    /// Files before this position have been read ahead.
    pub(super) ahead_to: usize,
    /// The size of the last window read ahead, in files (0: none yet).
    pub(super) window: usize,
    /// When it was last opened, for forgetting the oldest.
    pub(super) tick: u64,
    /// The directory after this one was read ahead (see [`DirScan::beyond`]).
    pub(super) handed_on: bool,
}

impl DirScan {
    pub(super) fn new(generation: u64) -> DirScan {
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
    pub(super) fn opened_at(&mut self, pos: usize) -> Option<(usize, usize)> {
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
    pub(super) fn beyond(&mut self) -> Option<usize> {
        let order = self.order.as_ref()?;
        if self.handed_on || self.window == 0 || self.ahead_to < order.files.len() {
            return None;
        }
        self.handed_on = true;
        Some(self.window)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::fs::prefetch::order::tests::order;

    pub(in crate::fs::prefetch) fn scan_of(order: Arc<DirOrder>) -> DirScan {
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
