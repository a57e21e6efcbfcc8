//! Following a reader from directory to directory when it opens only one
//! file in each, in order: an array chunked along its first dimension
//! alone (a time series stored a time step per chunk: Zarr 3 keys
//! `c/0/0/0`, `c/1/0/0`, ...) has one chunk per directory, so no
//! directory ever sees the second open that starts a sequence in it.
//!
//! Only directories nobody read ahead count: where a directory's own
//! sequence reached its end, it read the next one ahead itself
//! ([`super::scan::DirScan::beyond`]). The worker keeps the walk; it
//! reads windows of the directories after the reader ahead, growing as
//! the walk goes on like a sequence's windows.

use std::collections::VecDeque;

use super::{FIRST_WINDOW, MAX_WINDOW, REORDER};

/// Where the reader is in a walk over directories, and what was read
/// ahead of it.
#[derive(Default)]
pub(super) struct Walk {
    generation: u64,
    /// The furthest directory the reader entered, if it walks.
    at: Option<String>,
    /// Directories read ahead that the reader has not entered, nearest
    /// first, with how many files of each were read.
    ahead: VecDeque<(String, usize)>,
    /// Files in `ahead`.
    ahead_files: usize,
    /// Directories entered lately, so that a reader with several threads,
    /// whose opens come a little out of order, is not taken for a jump.
    behind: VecDeque<String>,
    /// The size of the last window read ahead, in files (0: none yet).
    window: usize,
}

/// What the worker does after the reader entered a directory.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Nothing to read ahead now.
    Stay,
    /// Read up to this many files ahead, in the directories after this
    /// one (the furthest read ahead or entered).
    ReadAhead { after: String, files: usize },
}

impl Walk {
    /// The reader opened a file in `dir`, a directory of the view of
    /// `generation` that nobody read ahead (or that this walk did);
    /// `next_dir` says which directory comes after one.
    pub(super) fn entered(
        &mut self,
        generation: u64,
        dir: &str,
        next_dir: impl FnOnce(&str) -> Option<String>,
    ) -> Step {
        if self.generation != generation {
            *self = Walk {
                generation,
                ..Walk::default()
            };
        }
        if self.at.as_deref() == Some(dir) || self.behind.iter().any(|d| d == dir) {
            return Step::Stay;
        }
        if let Some(i) = self.ahead.iter().position(|(d, _)| d == dir) {
            // Into what was read ahead: the walk goes on.
            let reached: Vec<(String, usize)> = self.ahead.drain(..=i).collect();
            if let Some(at) = self.at.take() {
                self.pass(at);
            }
            for (passed, files) in reached {
                self.ahead_files -= files;
                if passed != dir {
                    self.pass(passed);
                }
            }
        } else {
            let follows = self
                .at
                .as_deref()
                .is_some_and(|at| next_dir(at).as_deref() == Some(dir));
            if !follows {
                // A jump, or the first directory: a walk needs one more.
                *self = Walk {
                    generation,
                    at: Some(dir.to_owned()),
                    ..Walk::default()
                };
                return Step::Stay;
            }
            if let Some(at) = self.at.take() {
                self.pass(at);
            }
        }
        // Here `dir` followed the directory before it, or was read ahead:
        // a walk.
        self.at = Some(dir.to_owned());
        if self.window > 0 && self.ahead_files * 2 >= self.window {
            return Step::Stay;
        }
        self.window = if self.window == 0 {
            FIRST_WINDOW
        } else {
            (self.window * 2).min(MAX_WINDOW)
        };
        let after = self
            .ahead
            .back()
            .map_or_else(|| dir.to_owned(), |(d, _)| d.clone());
        Step::ReadAhead {
            after,
            files: self.window.saturating_sub(self.ahead_files),
        }
    }

    /// `files` files of `dir` were read ahead, the next directory of the
    /// walk after those read ahead before.
    pub(super) fn read_ahead(&mut self, dir: String, files: usize) {
        self.ahead_files += files;
        self.ahead.push_back((dir, files));
    }

    fn pass(&mut self, dir: String) {
        if self.behind.len() == REORDER {
            self.behind.pop_front();
        }
        self.behind.push_back(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Directories `t0`, `t1`, ... in a row.
    fn next(dir: &str) -> Option<String> {
        let n: usize = dir.strip_prefix('t')?.parse().ok()?;
        Some(format!("t{}", n + 1))
    }

    /// Play the worker: read ahead what the walk asks, one file per
    /// directory; the directories read ahead.
    fn enter(walk: &mut Walk, dir: &str) -> Vec<String> {
        match walk.entered(1, dir, next) {
            Step::Stay => vec![],
            Step::ReadAhead { after, files } => {
                let mut dirs = vec![];
                let mut at = after;
                for _ in 0..files {
                    at = next(&at).unwrap();
                    walk.read_ahead(at.clone(), 1);
                    dirs.push(at.clone());
                }
                dirs
            }
        }
    }

    fn names(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|n| format!("t{n}")).collect()
    }

    #[test]
    fn a_walk_reads_the_next_directories_ahead_in_widening_windows() {
        let mut walk = Walk::default();
        assert!(
            enter(&mut walk, "t0").is_empty(),
            "one directory is no walk"
        );
        assert_eq!(enter(&mut walk, "t1"), names(2..2 + FIRST_WINDOW));
        // Nothing more until less than half the window is left ahead.
        for n in 2..2 + FIRST_WINDOW / 2 {
            assert!(enter(&mut walk, &format!("t{n}")).is_empty(), "at t{n}");
        }
        let next_window = enter(&mut walk, &format!("t{}", 2 + FIRST_WINDOW / 2));
        assert_eq!(
            next_window,
            names(2 + FIRST_WINDOW..3 + FIRST_WINDOW / 2 + 2 * FIRST_WINDOW),
            "twice as wide, counting what is still ahead"
        );
    }

    #[test]
    fn opens_a_little_out_of_order_continue_a_walk_and_jumps_restart_it() {
        let mut walk = Walk::default();
        enter(&mut walk, "t0");
        assert!(!enter(&mut walk, "t1").is_empty());
        // Several threads: t3 before t2, then t2, and t1 again.
        enter(&mut walk, "t3");
        assert!(enter(&mut walk, "t2").is_empty());
        assert!(enter(&mut walk, "t1").is_empty());
        assert_eq!(walk.at.as_deref(), Some("t3"));
        // Somewhere else: a new walk, which needs a second directory.
        assert!(enter(&mut walk, "t500").is_empty());
        assert_eq!(walk.window, 0, "a new walk: nothing read ahead yet");
        assert_eq!(enter(&mut walk, "t501"), names(502..502 + FIRST_WINDOW));
    }

    #[test]
    fn directories_not_in_a_row_are_no_walk() {
        let mut walk = Walk::default();
        for dir in ["t0", "t2", "t4", "x", "t9"] {
            assert!(enter(&mut walk, dir).is_empty(), "{dir}");
        }
    }
}
