//! Commit records and their change lists.
//!
//! A commit is a JSON record under `commits/`, named by the hash of its
//! bytes. Besides its tree it names a change list: the exact paths the
//! commit changed and how, which is what a rebase compares and replays.

use std::io;
use std::sync::{Arc, mpsc};

use serde::{Deserialize, Serialize};

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
/// list in slices bounds memory and rewrites only the few nodes that two
/// slices share. A multiple of [`CHANGE_LIST_PAGE`].
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
    pages_out: Option<PageStorer>,
    /// The last path of the pages written.
    last_written: Option<String>,
    count: u64,
    /// The changes are also applied to this tree ...
    applying_to: Option<ObjectId>,
    /// ... by this thread, once the list is longer than a page.
    tree_builder: Option<TreeBuilder>,
}

/// The thread that encodes and stores a change list's pages, in order.
struct PageStorer {
    pages: mpsc::SyncSender<Page>,
    stored: std::thread::JoinHandle<io::Result<Vec<ObjectId>>>,
}

impl PageStorer {
    fn start(storage: Arc<Storage>) -> io::Result<PageStorer> {
        // A few pages in flight at most, to bound memory.
        let (pages, incoming) = mpsc::sync_channel::<Page>(2);
        let stored = std::thread::Builder::new()
            .name("change-list".into())
            .spawn(move || {
                incoming
                    .into_iter()
                    .map(|page| store_object(&storage, &encode_page(&page)))
                    .collect()
            })?;
        Ok(PageStorer { pages, stored })
    }

    /// The ids of the pages, once all are stored.
    fn finish(self) -> io::Result<Vec<ObjectId>> {
        drop(self.pages);
        self.stored
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the change list writer panicked")))
    }
}

/// The thread that applies a long change list's pages to the tree being
/// built, [`APPLY_SLICE`] changes at a time. Building the tree is most of
/// a large commit's work, and reading the session's journal the rest:
/// on a thread of its own it overlaps that.
struct TreeBuilder {
    pages: mpsc::SyncSender<Page>,
    built: std::thread::JoinHandle<io::Result<(ObjectId, WriteBatch)>>,
}

impl TreeBuilder {
    fn start(objects: Objects, base: ObjectId) -> io::Result<TreeBuilder> {
        // A slice and a slice in the making at most, to bound memory.
        let (pages, incoming) = mpsc::sync_channel::<Page>(APPLY_SLICE / CHANGE_LIST_PAGE);
        let built = std::thread::Builder::new()
            .name("tree".into())
            .spawn(move || {
                let mut batch = WriteBatch::default();
                let mut tree = base;
                let mut slice = Vec::new();
                let mut slice_len = 0;
                for page in incoming {
                    slice_len += page.len();
                    slice.push(page);
                    if slice_len >= APPLY_SLICE {
                        tree = apply_pages(&objects, tree, &slice, &mut batch)?;
                        slice.clear();
                        slice_len = 0;
                    }
                }
                tree = apply_pages(&objects, tree, &slice, &mut batch)?;
                Ok((tree, batch))
            })?;
        Ok(TreeBuilder { pages, built })
    }

    /// The tree, and what was written for it, once every page is applied.
    fn finish(self) -> io::Result<(ObjectId, WriteBatch)> {
        drop(self.pages);
        self.built
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the tree builder panicked")))
    }
}

/// Apply pages of changes to `tree`; the new tree.
fn apply_pages(
    objects: &Objects,
    tree: ObjectId,
    pages: &[Page],
    batch: &mut WriteBatch,
) -> io::Result<ObjectId> {
    if pages.iter().all(|page| page.is_empty()) {
        return Ok(tree);
    }
    let pairs = pages
        .iter()
        .flat_map(|page| page.iter())
        .map(|r| (r.path.as_str(), &r.change))
        .collect();
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

    pub fn push(&mut self, path: String, change: Change, batch: &mut WriteBatch) -> io::Result<()> {
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
            self.write_page(batch)?;
        }
        Ok(())
    }

    fn write_page(&mut self, batch: &mut WriteBatch) -> io::Result<()> {
        let page: Page = Arc::new(std::mem::take(&mut self.page));
        self.pages.push((page[0].path.clone(), page.len() as u64));
        self.last_written = page.last().map(|r| r.path.clone());
        if self.pages_out.is_none() {
            self.pages_out = Some(PageStorer::start(self.objects.shared_storage())?);
        }
        let out = self.pages_out.as_ref().expect("started above");
        if out.pages.send(page.clone()).is_err() {
            // The storer stopped at an error: it says which.
            let error = self.pages_out.take().expect("started above").finish();
            return Err(error
                .err()
                .unwrap_or_else(|| io::Error::other("change list not stored")));
        }
        self.keep_for_applying(page, batch)
    }

    /// Hand a written page to the tree builder, if the changes are applied.
    fn keep_for_applying(&mut self, page: Page, batch: &mut WriteBatch) -> io::Result<()> {
        let Some(base) = self.applying_to else {
            return Ok(());
        };
        if self.tree_builder.is_none() {
            self.tree_builder = Some(TreeBuilder::start(self.objects.clone(), base)?);
        }
        let builder = self.tree_builder.as_ref().expect("started above");
        if builder.pages.send(page).is_err() {
            // The builder stopped at an error: it says which.
            let built = self.tree_builder.take().expect("started above").finish();
            let (_, written) = built?;
            batch.append(written);
            return Err(io::Error::other("tree not built"));
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
            let page: Page = Arc::new(std::mem::take(&mut self.page));
            (self.objects.put(&encode_page(&page), batch)?, Some(page))
        } else {
            if !self.page.is_empty() {
                self.write_page(batch)?;
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
                let pages: Vec<Page> = page.into_iter().collect();
                let tree = apply_pages(self.objects, base, &pages, batch)?;
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

fn encode_page(records: &[ChangeRecord]) -> Vec<u8> {
    serde_json::to_vec(records).expect("change lists serialize")
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
        writer.push(path.clone(), change.clone(), batch)?;
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
