//! Reading a journal in path order: the pending changes over the batch
//! being flushed over the flushed table, merged as one sequence that a
//! visitor can stop or skip ahead in (a directory's children are listed
//! without visiting everything below them).

use std::cmp::Ordering as Order;
use std::collections::btree_map;
use std::io;
use std::iter::Peekable;
use std::ops::Bound;

use super::encoding::decode;
use super::{Changes, Journal, JournalEntry};

/// What a scan does after visiting an entry.
enum Scan {
    Next,
    /// Go on at the first path at or after this one.
    SkipTo(String),
    Stop,
}

impl Journal {
    /// Up to `limit` entries after the path `after` (from the first if
    /// `None`), in path order.
    pub fn entries_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> io::Result<Vec<(String, JournalEntry)>> {
        let from = after.map_or(String::new(), |p| format!("{p}\0"));
        let mut out = Vec::new();
        self.scan(from, &mut |path, entry| {
            out.push((path.to_owned(), entry));
            if out.len() >= limit {
                Scan::Stop
            } else {
                Scan::Next
            }
        })?;
        Ok(out)
    }

    /// The names directly in `dir` that the journal has entries for or
    /// below, skipping over deeper paths without visiting them one by one.
    /// A name with entries only below it is an implied directory.
    pub fn children(&self, dir: &str) -> io::Result<Vec<(String, JournalEntry)>> {
        let prefix = dir_prefix(dir);
        let mut out = Vec::new();
        let mut failure = None;
        self.scan(prefix.clone(), &mut |path, entry| {
            let Some(rest) = path.strip_prefix(&prefix) else {
                return Scan::Stop;
            };
            match rest.split_once('/') {
                None => {
                    out.push((rest.to_owned(), entry));
                    Scan::Next
                }
                Some((name, _)) => {
                    let own = format!("{prefix}{name}");
                    // An entry of its own sorts before this one (though
                    // not always just before: `a.b` sorts between `a` and
                    // `a/b`) and was listed already.
                    match self.get(&own) {
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            out.push((name.to_owned(), JournalEntry::Dir { opaque: false }))
                        }
                        Err(e) => {
                            failure = Some(e);
                            return Scan::Stop;
                        }
                    }
                    // Paths under `own/` sort below `own0` ('0' follows '/').
                    Scan::SkipTo(format!("{own}0"))
                }
            }
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Whether [`Journal::children`] of `dir` has one that is not a
    /// whiteout; stops at the first.
    pub fn has_visible_child(&self, dir: &str) -> io::Result<bool> {
        let prefix = dir_prefix(dir);
        let mut found = Ok(false);
        self.scan(prefix.clone(), &mut |path, entry| {
            let Some(rest) = path.strip_prefix(&prefix) else {
                return Scan::Stop;
            };
            match rest.split_once('/') {
                None if entry == JournalEntry::Whiteout => Scan::Next,
                None => {
                    found = Ok(true);
                    Scan::Stop
                }
                Some((name, _)) => {
                    // Below `name`: an implied directory, unless `name`
                    // has an entry of its own (listed already).
                    let own = format!("{prefix}{name}");
                    match self.get(&own) {
                        Ok(Some(JournalEntry::Whiteout)) => Scan::SkipTo(format!("{own}0")),
                        Ok(_) => {
                            found = Ok(true);
                            Scan::Stop
                        }
                        Err(e) => {
                            found = Err(e);
                            Scan::Stop
                        }
                    }
                }
            }
        })?;
        found
    }

    /// Remove every entry strictly below `dir`.
    pub fn remove_below(&mut self, dir: &str) -> io::Result<()> {
        const BATCH: usize = 4096;
        let prefix = dir_prefix(dir);
        let mut from = prefix.clone();
        loop {
            let mut doomed = Vec::new();
            self.scan(from, &mut |path, _| {
                if !path.starts_with(&prefix) || doomed.len() >= BATCH {
                    return Scan::Stop;
                }
                doomed.push(path.to_owned());
                Scan::Next
            })?;
            let Some(last) = doomed.last() else {
                return Ok(());
            };
            from = format!("{last}\0");
            for path in doomed {
                self.len -= 1;
                self.set_pending(&path, None)?;
            }
        }
    }

    /// Visit the entries at or after `from` in path order: the pending
    /// changes over the batch being flushed over the flushed table.
    fn scan(
        &self,
        from: String,
        visit: &mut dyn FnMut(&str, JournalEntry) -> Scan,
    ) -> io::Result<()> {
        let mut from = from;
        'seek: loop {
            let mut flushed = self
                .flushed
                .range::<&str>(from.as_str()..)
                .map_err(io::Error::other)?;
            let mut next_flushed = self.next_row(&mut flushed)?;
            let mut pending = Unflushed::from(&self.pending, self.flushing_batch(), &from);
            let mut next_pending = pending.next();
            loop {
                let take_pending = match (&next_pending, &next_flushed) {
                    (None, None) => return Ok(()),
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (Some((p, _)), Some((f, _))) => p.as_str() <= f.as_str(),
                };
                let (path, entry) = if take_pending {
                    let (path, entry) = next_pending.take().unwrap();
                    next_pending = pending.next();
                    // A pending change overrides the flushed entry.
                    if next_flushed.as_ref().is_some_and(|(f, _)| f == path) {
                        next_flushed = self.next_row(&mut flushed)?;
                    }
                    match entry {
                        Some(entry) => (path.clone(), *entry),
                        None => continue,
                    }
                } else {
                    let row = next_flushed.take().unwrap();
                    next_flushed = self.next_row(&mut flushed)?;
                    row
                };
                match visit(&path, entry) {
                    Scan::Next => {}
                    Scan::Stop => return Ok(()),
                    Scan::SkipTo(to) => {
                        from = to;
                        continue 'seek;
                    }
                }
            }
        }
    }

    fn next_row(
        &self,
        rows: &mut redb::Range<'static, &'static str, &'static [u8]>,
    ) -> io::Result<Option<(String, JournalEntry)>> {
        match rows.next() {
            None => Ok(None),
            Some(row) => {
                let (key, value) = row.map_err(io::Error::other)?;
                let entry = decode(&self.path, key.value(), value.value())?;
                Ok(Some((key.value().to_owned(), entry)))
            }
        }
    }
}

/// The pending changes over the batch being flushed, from a path on, in
/// path order: what a journal holds beyond its flushed table.
struct Unflushed<'a> {
    newer: Peekable<btree_map::Range<'a, String, Option<JournalEntry>>>,
    older: Peekable<btree_map::Range<'a, String, Option<JournalEntry>>>,
}

impl<'a> Unflushed<'a> {
    fn from(newer: &'a Changes, older: &'a Changes, from: &str) -> Unflushed<'a> {
        let range = (Bound::Included(from), Bound::Unbounded);
        Unflushed {
            newer: newer.range::<str, _>(range).peekable(),
            older: older.range::<str, _>(range).peekable(),
        }
    }
}

impl<'a> Iterator for Unflushed<'a> {
    type Item = (&'a String, &'a Option<JournalEntry>);

    fn next(&mut self) -> Option<Self::Item> {
        let order = match (self.newer.peek(), self.older.peek()) {
            (None, None) => return None,
            (Some(_), None) => Order::Less,
            (None, Some(_)) => Order::Greater,
            (Some((n, _)), Some((o, _))) => n.cmp(o),
        };
        match order {
            Order::Less => self.newer.next(),
            Order::Greater => self.older.next(),
            Order::Equal => {
                self.older.next();
                self.newer.next()
            }
        }
    }
}

/// What the paths strictly below `dir` start with ("" for the root).
pub(super) fn dir_prefix(dir: &str) -> String {
    if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    }
}
