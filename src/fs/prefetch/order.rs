//! The order a reader goes through a directory's files in, and the
//! directory it goes to after: names in natural order (`c9` before `c10`,
//! as Zarr numbers its chunks), and the next directory of the same depth.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::{MAX_AHEAD_BYTES, MAX_FILE_AHEAD, MAX_LISTED};
use crate::fs::control;
use crate::session::{FileLocator, FileSource, Session};

/// A directory's files in the order they are read ahead.
pub(super) struct DirOrder {
    /// Name and where its bytes are, in [`natural_cmp`] order.
    pub(super) files: Vec<(Box<str>, FileSource)>,
    pub(super) locator: FileLocator,
}

impl DirOrder {
    pub(super) fn new(mut files: Vec<(String, FileSource)>, locator: FileLocator) -> DirOrder {
        files.sort_unstable_by(|a, b| natural_cmp(&a.0, &b.0));
        DirOrder {
            files: files
                .into_iter()
                .map(|(name, source)| (name.into_boxed_str(), source))
                .collect(),
            locator,
        }
    }

    /// Where the bytes of files `range` are on local disk.
    pub(super) fn paths(
        &self,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = PathBuf> + '_ {
        self.files[range]
            .iter()
            .map(|(_, source)| self.locator.path(*source))
    }

    pub(super) fn position(&self, name: &str) -> Option<usize> {
        self.files
            .binary_search_by(|(other, _)| natural_cmp(other, name))
            .ok()
    }

    /// The end of a window of at most `files` files from `start`, within
    /// the byte budget (at least one file, if there is one).
    pub(super) fn window_end(&self, start: usize, files: usize) -> usize {
        let mut bytes = 0;
        let mut end = start;
        for (_, source) in self.files.iter().skip(start).take(files) {
            let size = match source {
                FileSource::Blob { size, .. } => (*size).min(MAX_FILE_AHEAD),
                FileSource::Staged(_) => 0,
            };
            if end > start && bytes + size > MAX_AHEAD_BYTES {
                break;
            }
            bytes += size;
            end += 1;
        }
        end
    }

    /// Where files `start..end` go past [`MAX_AHEAD_BYTES`] (the first
    /// file and the one that crosses it are in), and the bytes of the
    /// files in. Unlike
    /// [`DirOrder::window_end`], which runs under the sequences' lock and
    /// counts staged files as nothing, this looks a staged file's size up,
    /// in the session's own directory.
    pub(super) fn within_budget(&self, start: usize, end: usize) -> (usize, u64) {
        let mut bytes = 0;
        for i in start..end {
            if i > start && bytes >= MAX_AHEAD_BYTES {
                return (i, bytes);
            }
            let size = match self.files[i].1 {
                FileSource::Blob { size, .. } => size,
                staged @ FileSource::Staged(_) => {
                    std::fs::metadata(self.locator.path(staged)).map_or(0, |m| m.len())
                }
            };
            bytes += size.min(MAX_FILE_AHEAD);
        }
        (end, bytes)
    }
}

/// How many levels up [`Subdirectories::next_dir`] looks for the
/// directory after one: a Zarr array of N dimensions keeps its chunks in
/// directories N - 1 deep (`c/i/j/k` for three), and after the last
/// directory of one `c/i` comes the first of `c/i+1`, one level up; so up
/// to four dimensions.
pub(super) const LEVELS_UP: usize = 2;

/// The directories of the view directories [`Subdirectories::next_dir`]
/// looked in, in natural order, kept for the view generation they were
/// listed in: the directories after an array's thousands of row
/// directories are all found in one parent, listed once rather than once
/// per row. (A directory made after its parent was listed is not found
/// until the next view: a missed read-ahead, nothing more.)
#[derive(Default)]
pub(super) struct Subdirectories {
    generation: u64,
    lists: HashMap<String, Arc<[Box<str>]>>,
    /// Names in all the lists, kept within [`MAX_LISTED`].
    names: usize,
}

impl Subdirectories {
    /// The directory a reader walking `dir` and the directories around
    /// it in natural order goes to after it: its next sibling, or else the
    /// first directory at the same depth under its parent's next sibling
    /// (`c/0/31` is followed by `c/1/0`), looking up to `levels_up` levels
    /// up.
    pub(super) fn next_dir(
        &mut self,
        session: &Session,
        dir: &str,
        levels_up: usize,
    ) -> Option<String> {
        if dir.is_empty() {
            return None;
        }
        let (parent, name) = dir.rsplit_once('/').unwrap_or(("", dir));
        let siblings = self.of(session, parent)?;
        let at = siblings
            .binary_search_by(|sibling| natural_cmp(sibling, name))
            .ok()?;
        if let Some(next) = siblings.get(at + 1) {
            return Some(control::join(parent, next));
        }
        if levels_up == 0 {
            return None;
        }
        let parent_next = self.next_dir(session, parent, levels_up - 1)?;
        let first = self.of(session, &parent_next)?.first()?.clone();
        Some(control::join(&parent_next, &first))
    }

    /// The directories in view directory `dir`, in natural order.
    fn of(&mut self, session: &Session, dir: &str) -> Option<Arc<[Box<str>]>> {
        if self.generation != session.generation() {
            *self = Subdirectories {
                generation: session.generation(),
                ..Subdirectories::default()
            };
        }
        if let Some(list) = self.lists.get(dir) {
            return Some(list.clone());
        }
        // A directory too large to list is kept as one without
        // directories: nothing is read ahead after its children, and it
        // is not listed again for each of them.
        let mut dirs = session
            .subdirectories(dir, MAX_LISTED)
            .ok()?
            .unwrap_or_default();
        dirs.sort_unstable_by(|a, b| natural_cmp(a, b));
        let list: Arc<[Box<str>]> = dirs.into_iter().map(String::into_boxed_str).collect();
        if self.names + list.len() > MAX_LISTED {
            self.lists.clear();
            self.names = 0;
        }
        self.names += list.len();
        self.lists.insert(dir.to_owned(), list.clone());
        Some(list)
    }
}

/// Names in the order Zarr and people number them: runs of digits
/// compare as numbers (`c9` before `c10`, `0.9` before `0.10`), other
/// bytes as bytes; names equal that way (`f01`, `f1`) in byte order.
pub(super) fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let (digits_x, rest_x) =
                    x.split_at(x.iter().take_while(|c| c.is_ascii_digit()).count());
                let (digits_y, rest_y) =
                    y.split_at(y.iter().take_while(|c| c.is_ascii_digit()).count());
                let value_x = trim_zeros(digits_x);
                let value_y = trim_zeros(digits_y);
                let by_value = value_x
                    .len()
                    .cmp(&value_y.len())
                    .then_with(|| value_x.cmp(value_y));
                if by_value != Ordering::Equal {
                    return by_value;
                }
                (x, y) = (rest_x, rest_y);
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                (x, y) = (&x[1..], &y[1..]);
            }
        }
    }
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An order of `n` committed files of `size` bytes, `c0` to `cN`.
    pub(in crate::fs::prefetch) fn order(n: usize, size: u64) -> Arc<DirOrder> {
        let (_dir, fs) = crate::fs::testing::fs();
        let locator = fs.with_session(|session| session.file_locator());
        let files = (0..n)
            .map(|i| {
                let id = crate::repo::ObjectId::of(&i.to_le_bytes());
                (format!("c{i}"), FileSource::Blob { id, size })
            })
            .collect();
        Arc::new(DirOrder::new(files, locator))
    }

    #[test]
    fn natural_order_puts_numbered_names_in_number_order() {
        let mut names = vec![
            "c10", "c9", "c1", "c100", "c0", "d", "c", "0.10", "0.9", "1.0",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "0.9", "0.10", "1.0", "c", "c0", "c1", "c9", "c10", "c100", "d"
            ]
        );
        // Zero-padded names keep their byte order.
        assert_eq!(natural_cmp("f0009", "f0010"), Ordering::Less);
        // Equal as numbers, then by bytes: a total order.
        assert_eq!(natural_cmp("f01", "f1"), Ordering::Less);
        assert_eq!(natural_cmp("f1", "f01"), Ordering::Greater);
    }

    proptest! {
        /// `sort` needs a total order: antisymmetric, transitive, equal
        /// only for equal names.
        #[test]
        fn natural_order_is_total(a in "[a0-2._]{0,6}", b in "[a0-2._]{0,6}", c in "[a0-2._]{0,6}") {
            prop_assert_eq!(natural_cmp(&a, &b), natural_cmp(&b, &a).reverse());
            prop_assert_eq!(natural_cmp(&a, &b) == Ordering::Equal, a == b);
            if natural_cmp(&a, &b) != Ordering::Greater && natural_cmp(&b, &c) != Ordering::Greater {
                prop_assert_ne!(natural_cmp(&a, &c), Ordering::Greater);
            }
        }
    }

    #[test]
    fn the_directory_after_the_last_of_a_row_is_the_first_of_the_next_row() {
        let (_dir, fs) = crate::fs::testing::fs();
        // Three dimensions: c/<i>/<j>/<k>, numbered past 9 so that natural
        // and byte order differ.
        for i in ["0", "1", "2", "10"] {
            for j in ["0", "1", "10"] {
                let dir = format!("arr/c/{i}/{j}");
                make_dirs(&fs, &dir);
                crate::fs::testing::write_file(&fs, &dir, "0", b"chunk");
            }
        }
        let mut dirs = Subdirectories::default();
        fs.with_session(|session| {
            let mut next = |dir| dirs.next_dir(session, dir, LEVELS_UP);
            assert_eq!(next("arr/c/0/0").as_deref(), Some("arr/c/0/1"));
            assert_eq!(next("arr/c/0/1").as_deref(), Some("arr/c/0/10"));
            assert_eq!(next("arr/c/0/10").as_deref(), Some("arr/c/1/0"));
            assert_eq!(next("arr/c/2/10").as_deref(), Some("arr/c/10/0"));
            assert_eq!(next("arr/c/10/10"), None, "the last of the array");
            assert_eq!(
                dirs.next_dir(session, "arr/c/0/10", 0),
                None,
                "not looking up"
            );
        });
        // A row made later is found once the view changes (a commit).
        make_dirs(&fs, "arr/c/11/0");
        crate::fs::testing::write_file(&fs, "arr/c/11/0", "0", b"chunk");
        crate::fs::testing::control(&fs, "commit", "row 11").unwrap();
        fs.with_session(|session| {
            assert_eq!(
                dirs.next_dir(session, "arr/c/10/10", LEVELS_UP).as_deref(),
                Some("arr/c/11/0")
            );
        });
    }

    /// mkdir -p through `fs`.
    fn make_dirs(fs: &crate::fs::Fs, dir: &str) {
        let mut parent = crate::fs::testing::ino(fs, "").unwrap();
        for part in dir.split('/') {
            let name = crate::fs::testing::name(part);
            parent = match fs.mkdir(parent, name) {
                Ok(attr) => attr.ino.0,
                Err(_) => fs.lookup(parent, name).unwrap().ino.0,
            };
        }
    }

    #[test]
    fn a_directory_is_listed_only_up_to_the_budget() {
        let (_dir, fs) = crate::fs::testing::fs();
        for name in ["c0", "c1", "c2"] {
            crate::fs::testing::write_file(&fs, "", name, b"chunk");
        }
        fs.with_session(|session| {
            assert!(
                session.file_sources("", 2).unwrap().is_none(),
                "3 files > 2"
            );
            let files = session.file_sources("", 3).unwrap().unwrap();
            assert_eq!(files.len(), 3);
        });
    }
}
