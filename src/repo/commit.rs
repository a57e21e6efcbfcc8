//! Commit records and their change lists.
//!
//! A commit is a JSON record under `commits/`, named by the hash of its
//! bytes. Besides its tree it names a change list: the exact paths the
//! commit changed and how, which is what a rebase compares and replays.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use serde::{Deserialize, Serialize};

use super::growing_tree::GrowingTree;
use super::json;
use super::object::{CommitId, ObjectId, Objects, WriteBatch, store_object};
use super::tree::{Change, Trees};
use crate::storage::Storage;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The previous commit on the branch; empty for a repository's first.
    pub parents: Vec<CommitId>,
    pub tree: ObjectId,
    pub author: String,
    /// RFC 3339, UTC.
    pub date: String,
    pub message: String,
    /// The change list object.
    pub changes: ObjectId,
    pub change_count: u64,
    /// Commits before this one on its first-parent line; lets a history
    /// walk stop early.
    pub height: u64,
    /// The session that made it, so that a session resumed after a crash
    /// can tell that its changes already landed.
    pub session: String,
}

/// One changed path in a change list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub path: String,
    #[serde(flatten)]
    pub change: Change,
}

impl Commit {
    pub fn parent(&self) -> Option<CommitId> {
        self.parents.first().copied()
    }

    /// The commit as `log --json` and `.zarrfs/log.json` show it.
    pub fn summary_json(&self, id: CommitId) -> serde_json::Value {
        serde_json::json!({
            "id": id.to_hex(),
            "parents": self.parents.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
            "author": self.author,
            "date": self.date,
            "message": self.message,
            "changes": self.change_count,
        })
    }
}

/// Most records in one page of a change list.
pub const CHANGE_LIST_PAGE: usize = 8192;

/// A change list in the object store: one page (a JSON array of records)
/// when it is short, else an index of its pages, so that neither writing
/// nor reading a list of a million changes holds it in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeList {
    pub id: ObjectId,
    pub count: u64,
}

#[derive(Serialize, Deserialize)]
struct PageIndex {
    pages: Vec<PageRef>,
}

#[derive(Serialize, Deserialize)]
struct PageRef {
    /// The first path in the page.
    first: String,
    count: u64,
    id: ObjectId,
}

/// A change list applied to a tree while it was written: the tree that a
/// commit of the list on `base` has, so that the commit need not read the
/// list back to build it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppliedTree {
    pub base: ObjectId,
    pub tree: ObjectId,
}

/// How many changes a tree is given at a time: applying a long change
/// list in slices bounds memory, and the few nodes that two slices share
/// are held until the later one is done with them (a commit's, one page
/// at a time, and a rebase's; see `super::growing_tree`). Where
/// the slices fall decides how a directory's B-tree splits into nodes, so
/// trees of the same files can differ in their nodes; nothing compares
/// tree ids across commits.
pub const APPLY_SLICE: usize = CHANGE_LIST_PAGE;

/// A page of records, shared by the thread that stores it and the tree
/// being built.
type Page = Arc<Vec<ChangeRecord>>;

/// Writes a change list page by page. Paths come in increasing order.
/// The pages of a long list are encoded and stored on a thread of their
/// own, and applied to the tree being built on another, beside the
/// caller, which goes on finding the next changes.
pub struct ChangeListWriter<'a> {
    objects: &'a Objects,
    page: Vec<ChangeRecord>,
    /// The first path and length of each page handed to `pages_out`.
    pages: Vec<(String, u64)>,
    pages_out: Option<PageWorker<Vec<ObjectId>>>,
    /// The last path of the pages written.
    last_written: Option<String>,
    count: u64,
    /// The changes are also applied to this tree, by `tree_builder` once
    /// the list is longer than a page.
    applying_to: Option<ObjectId>,
    tree_builder: Option<PageWorker<(ObjectId, WriteBatch)>>,
}

/// A thread that takes a change list's pages in order: the one that
/// encodes and stores them, and the one that builds the tree from them.
/// Dropped unfinished (the commit failed), it is told to stop and waited
/// for, so that it writes nothing after the commit let go of the
/// repository.
struct PageWorker<T> {
    pages: Option<mpsc::SyncSender<Page>>,
    done: Option<std::thread::JoinHandle<io::Result<T>>>,
    abandoned: Arc<AtomicBool>,
}

impl<T: Send + 'static> PageWorker<T> {
    /// Start `work` on thread `name`, with at most `in_flight` pages
    /// waiting for it, to bound memory. `work` stops early, with an
    /// error, once it sees the flag it is given set.
    fn start(
        name: &str,
        in_flight: usize,
        work: impl FnOnce(mpsc::Receiver<Page>, &AtomicBool) -> io::Result<T> + Send + 'static,
    ) -> io::Result<PageWorker<T>> {
        let (pages, incoming) = mpsc::sync_channel::<Page>(in_flight);
        let abandoned = Arc::new(AtomicBool::new(false));
        let flag = abandoned.clone();
        let done = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || work(incoming, &flag))?;
        Ok(PageWorker {
            pages: Some(pages),
            done: Some(done),
            abandoned,
        })
    }

    /// Hand over a page; false if the thread stopped (at an error, which
    /// `finish` returns).
    fn send(&self, page: Page) -> bool {
        self.pages
            .as_ref()
            .is_some_and(|pages| pages.send(page).is_ok())
    }

    /// The outcome, once every page is taken.
    fn finish(mut self) -> io::Result<T> {
        self.pages.take();
        self.join()
    }

    fn join(&mut self) -> io::Result<T> {
        match self.done.take() {
            Some(done) => done
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a change list thread panicked"))),
            None => Err(io::Error::other("a change list thread was already joined")),
        }
    }
}

impl<T> Drop for PageWorker<T> {
    fn drop(&mut self) {
        self.abandoned.store(true, Ordering::Relaxed);
        self.pages.take();
        if let Some(done) = self.done.take() {
            let _ = done.join();
        }
    }
}

/// Hand `page` to a started worker; the error it stopped at, if it did.
fn hand_over<T: Send + 'static>(worker: &mut Option<PageWorker<T>>, page: Page) -> io::Result<()> {
    if worker.as_ref().is_some_and(|w| w.send(page)) {
        return Ok(());
    }
    let stopped = worker.take().map(PageWorker::finish);
    Err(match stopped {
        Some(Err(e)) => e,
        _ => io::Error::other("a change list thread stopped early"),
    })
}

/// What a page worker returns when told to stop.
fn abandoned_error() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "the commit was abandoned")
}

/// The thread that encodes and stores a change list's pages; the pages'
/// ids, in order.
fn start_page_storer(storage: Arc<Storage>) -> io::Result<PageWorker<Vec<ObjectId>>> {
    PageWorker::start("change-list", 2, move |incoming, abandoned| {
        let mut ids = Vec::new();
        for page in incoming {
            if abandoned.load(Ordering::Relaxed) {
                return Err(abandoned_error());
            }
            ids.push(store_object(&storage, &encode_page(&page))?);
        }
        Ok(ids)
    })
}

/// The thread that applies a long change list's pages to the tree being
/// built, a page at a time (a page is an [`APPLY_SLICE`]; see
/// `super::growing_tree`); the tree, and what was written for it.
/// Building the tree is most of a large commit's work, and reading the
/// session's journal the rest: on a thread of its own it overlaps that.
fn start_tree_builder(
    objects: Objects,
    base: ObjectId,
) -> io::Result<PageWorker<(ObjectId, WriteBatch)>> {
    PageWorker::start("tree-builder", 1, move |incoming, abandoned| {
        let mut batch = WriteBatch::default();
        let mut tree = GrowingTree::new(objects, base);
        for page in incoming {
            if abandoned.load(Ordering::Relaxed) {
                return Err(abandoned_error());
            }
            let pairs = page.iter().map(|r| (r.path.as_str(), &r.change)).collect();
            tree.apply(pairs, &mut batch)?;
        }
        Ok((tree.finish(&mut batch)?, batch))
    })
}

/// Apply a change list of one page to `tree`; the new tree.
fn apply_page(
    objects: &Objects,
    tree: ObjectId,
    page: &[ChangeRecord],
    batch: &mut WriteBatch,
) -> io::Result<ObjectId> {
    if page.is_empty() {
        return Ok(tree);
    }
    let pairs = page.iter().map(|r| (r.path.as_str(), &r.change)).collect();
    Trees::new(objects).apply_pairs(tree, pairs, batch)
}

impl<'a> ChangeListWriter<'a> {
    pub fn new(objects: &'a Objects) -> ChangeListWriter<'a> {
        ChangeListWriter {
            objects,
            page: Vec::new(),
            pages: Vec::new(),
            pages_out: None,
            last_written: None,
            count: 0,
            applying_to: None,
            tree_builder: None,
        }
    }

    /// Also apply the changes to the tree `base` as they are written (see
    /// [`ChangeListWriter::finish_applied`]).
    pub fn applying_to(mut self, base: ObjectId) -> ChangeListWriter<'a> {
        self.applying_to = Some(base);
        self
    }

    pub fn push(&mut self, path: String, change: Change) -> io::Result<()> {
        let last = self
            .page
            .last()
            .map(|r| r.path.as_str())
            .or(self.last_written.as_deref());
        if let Some(last) = last
            && last >= path.as_str()
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("change list out of order: '{path}' after '{last}'"),
            ));
        }
        self.page.push(ChangeRecord { path, change });
        self.count += 1;
        if self.page.len() >= CHANGE_LIST_PAGE {
            self.write_page()?;
        }
        Ok(())
    }

    fn write_page(&mut self) -> io::Result<()> {
        let page: Page = Arc::new(std::mem::take(&mut self.page));
        self.pages.push((page[0].path.clone(), page.len() as u64));
        self.last_written = page.last().map(|r| r.path.clone());
        if self.pages_out.is_none() {
            self.pages_out = Some(start_page_storer(self.objects.shared_storage())?);
        }
        hand_over(&mut self.pages_out, page.clone())?;
        if let Some(base) = self.applying_to {
            if self.tree_builder.is_none() {
                self.tree_builder = Some(start_tree_builder(self.objects.clone(), base)?);
            }
            hand_over(&mut self.tree_builder, page)?;
        }
        Ok(())
    }

    pub fn finish(self, batch: &mut WriteBatch) -> io::Result<ChangeList> {
        Ok(self.finish_applied(batch)?.0)
    }

    /// [`ChangeListWriter::finish`], with the tree the changes were
    /// applied to if [`ChangeListWriter::applying_to`] asked for one.
    pub fn finish_applied(
        mut self,
        batch: &mut WriteBatch,
    ) -> io::Result<(ChangeList, Option<AppliedTree>)> {
        let (id, short_list) = if self.pages.is_empty() {
            let page = std::mem::take(&mut self.page);
            (self.objects.put(&encode_page(&page), batch)?, Some(page))
        } else {
            if !self.page.is_empty() {
                self.write_page()?;
            }
            let ids = self
                .pages_out
                .take()
                .expect("pages were written")
                .finish()?;
            for id in &ids {
                batch.push_with(|| id.key_in("objects"));
            }
            let pages = std::mem::take(&mut self.pages)
                .into_iter()
                .zip(ids)
                .map(|((first, count), id)| PageRef { first, count, id })
                .collect();
            let index = PageIndex { pages };
            let bytes = serde_json::to_vec(&index).expect("change list indexes serialize");
            (self.objects.put(&bytes, batch)?, None)
        };
        let applied = match (self.applying_to, self.tree_builder.take(), short_list) {
            (None, _, _) => None,
            (Some(base), Some(builder), _) => {
                let (tree, written) = builder.finish()?;
                batch.append(written);
                Some(AppliedTree { base, tree })
            }
            // A list of one page is applied here: no thread for it.
            (Some(base), None, page) => {
                let tree = apply_page(self.objects, base, &page.unwrap_or_default(), batch)?;
                Some(AppliedTree { base, tree })
            }
        };
        let list = ChangeList {
            id,
            count: self.count,
        };
        Ok((list, applied))
    }
}

/// A page as stored: the same bytes as `serde_json::to_vec`, written
/// directly (see `super::json`).
fn encode_page(records: &[ChangeRecord]) -> Vec<u8> {
    json::list(b"[", records, 160, b"]", |out, record| {
        out.extend_from_slice(br#"{"path":"#);
        json::string(out, &record.path);
        match &record.change {
            Change::File { id, size, mode } => {
                out.extend_from_slice(br#","op":"file","id":"#);
                json::id(out, id);
                out.extend_from_slice(br#","size":"#);
                json::number(out, *size);
                out.extend_from_slice(br#","mode":"#);
                json::number(out, *mode);
            }
            Change::Dir { replace: true } => {
                out.extend_from_slice(br#","op":"dir","replace":true"#)
            }
            Change::Dir { replace: false } => {
                out.extend_from_slice(br#","op":"dir","replace":false"#)
            }
            Change::Delete => out.extend_from_slice(br#","op":"delete""#),
        }
        out.push(b'}');
    })
}

/// Write a change list of changes in any order.
pub fn put_change_list(
    objects: &Objects,
    changes: &[(String, Change)],
    batch: &mut WriteBatch,
) -> io::Result<ChangeList> {
    let mut sorted: Vec<&(String, Change)> = changes.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut writer = ChangeListWriter::new(objects);
    for (path, change) in sorted {
        writer.push(path.clone(), change.clone())?;
    }
    writer.finish(batch)
}

/// The pages of a change list, in path order, each read when it is
/// reached.
pub struct ChangePages<'a> {
    objects: &'a Objects,
    list: ObjectId,
    /// A one-page list's records, or the page ids still to read.
    first: Option<Vec<(String, Change)>>,
    pages: std::vec::IntoIter<ObjectId>,
}

impl<'a> ChangePages<'a> {
    pub fn open(objects: &'a Objects, list: ObjectId) -> io::Result<ChangePages<'a>> {
        let bytes = objects.get(list)?;
        let (first, pages) = if bytes.trim_ascii_start().starts_with(b"[") {
            (Some(decode_page(list, &bytes)?), vec![])
        } else {
            let index: PageIndex = serde_json::from_slice(&bytes).map_err(|e| corrupt(list, e))?;
            (None, index.pages.into_iter().map(|p| p.id).collect())
        };
        Ok(ChangePages {
            objects,
            list,
            first,
            pages: pages.into_iter(),
        })
    }

    /// The ids of the page objects (none for a one-page list).
    pub fn page_ids(&self) -> &[ObjectId] {
        self.pages.as_slice()
    }
}

impl Iterator for ChangePages<'_> {
    type Item = io::Result<Vec<(String, Change)>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        let id = self.pages.next()?;
        Some(
            self.objects
                .get(id)
                .and_then(|bytes| decode_page(id, &bytes))
                .map_err(|e| io::Error::new(e.kind(), format!("change list {}: {e}", self.list))),
        )
    }
}

fn decode_page(id: ObjectId, bytes: &[u8]) -> io::Result<Vec<(String, Change)>> {
    let records: Vec<ChangeRecord> = serde_json::from_slice(bytes).map_err(|e| corrupt(id, e))?;
    Ok(records.into_iter().map(|r| (r.path, r.change)).collect())
}

fn corrupt(id: ObjectId, e: serde_json::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("change list {id} is corrupt: {e}"),
    )
}

/// A whole change list; for short lists and tools.
pub fn get_change_list(objects: &Objects, id: ObjectId) -> io::Result<Vec<(String, Change)>> {
    let mut out = Vec::new();
    for page in ChangePages::open(objects, id)? {
        out.extend(page?);
    }
    Ok(out)
}

/// The current time as RFC 3339 with microseconds, UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_stored_as_serde_json_writes_them() {
        let paths = [
            "meta/root.group.json",
            "data/root/a \"quoted\" \\ name/c0/0",
            "tab\there/new\nline",
            "ünïcödé/日本",
            "\u{1}control",
        ];
        let changes = [
            Change::File {
                id: ObjectId::of(b"chunk"),
                size: u64::MAX,
                mode: 0o100644,
            },
            Change::Dir { replace: true },
            Change::Dir { replace: false },
            Change::Delete,
        ];
        let records: Vec<ChangeRecord> = paths
            .iter()
            .flat_map(|path| {
                changes.iter().map(|change| ChangeRecord {
                    path: path.to_string(),
                    change: change.clone(),
                })
            })
            .collect();
        assert_eq!(
            String::from_utf8(encode_page(&records)).unwrap(),
            String::from_utf8(serde_json::to_vec(&records).unwrap()).unwrap()
        );
        assert_eq!(
            encode_page(&[]),
            serde_json::to_vec(&[] as &[ChangeRecord]).unwrap()
        );
    }
}
