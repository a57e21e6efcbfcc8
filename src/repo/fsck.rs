//! `zarrfs fsck`: check that everything the refs reach is there and intact.
//!
//! Every branch version and tag must name a commit that exists; every
//! commit, tree node, change list and blob reachable from them must exist
//! and hash to its name. Objects shared between commits are checked once.
//! Unreachable objects (left by a crash before a ref moved) are counted,
//! not reported as damage.

use std::collections::HashSet;
use std::io;

use super::Repo;
use super::commit::ChangePages;
use super::object::{CommitId, ObjectId};
use super::tree::Node;

/// What fsck found.
#[derive(Debug, Default)]
pub struct FsckReport {
    /// Each problem, one sentence naming the thing at fault.
    pub problems: Vec<String>,
    pub commits: usize,
    pub objects: usize,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

pub fn fsck(repo: &Repo) -> io::Result<FsckReport> {
    let mut checker = Checker {
        repo,
        report: FsckReport::default(),
        seen_commits: HashSet::new(),
        seen_objects: HashSet::new(),
    };
    let refs = repo.refs();
    for (key, parsed) in refs.all_branch_versions()? {
        match parsed {
            Ok(Some(commit)) => checker.check_history(&key, commit)?,
            Ok(None) => {} // a deletion
            Err(e) => checker.problem(format!("ref version {key} is corrupt: {e}")),
        }
    }
    for name in repo.storage().list("refs/tags")? {
        match refs.tag(&name) {
            Ok(Some(commit)) => checker.check_history(&format!("tag {name}"), commit)?,
            Ok(None) => checker.problem(format!("tag {name} names no commit")),
            Err(e) => checker.problem(e.to_string()),
        }
    }
    if refs.branches()?.is_empty() {
        checker.problem("the repository has no branch".to_owned());
    }
    Ok(checker.report)
}

struct Checker<'a> {
    repo: &'a Repo,
    report: FsckReport,
    seen_commits: HashSet<CommitId>,
    seen_objects: HashSet<ObjectId>,
}

impl Checker<'_> {
    fn problem(&mut self, text: String) {
        self.report.problems.push(text);
    }

    /// Check a commit and its ancestors, stopping at ones already checked.
    fn check_history(&mut self, from: &str, tip: CommitId) -> io::Result<()> {
        let mut next = Some(tip);
        let mut referrer = from.to_owned();
        while let Some(id) = next.take() {
            if !self.seen_commits.insert(id) {
                return Ok(());
            }
            self.report.commits += 1;
            let key = id.key_in("commits");
            let Some(bytes) = self.repo.storage().get(&key)? else {
                self.problem(format!("{referrer} names commit {id}, which is missing"));
                return Ok(());
            };
            if ObjectId::of(&bytes) != id {
                self.problem(format!(
                    "commit {id} is damaged: its bytes do not hash to its name"
                ));
                return Ok(());
            }
            let record = match self.repo.commit_record(id) {
                Ok(record) => record,
                Err(e) => {
                    self.problem(e.to_string());
                    return Ok(());
                }
            };
            self.check_tree(id, record.tree)?;
            self.check_change_list(id, record.changes)?;
            referrer = format!("commit {id}");
            next = record.parent();
        }
        Ok(())
    }

    /// Check a commit's change list: its object, and each of its pages.
    fn check_change_list(&mut self, commit: CommitId, list: ObjectId) -> io::Result<()> {
        let what = format!("commit {commit}'s change list");
        if !self.check_object(&what, list)? {
            return Ok(());
        }
        let pages = match ChangePages::open(self.repo.objects(), list) {
            Ok(pages) => pages,
            Err(e) => {
                self.problem(format!("commit {commit}: {e}"));
                return Ok(());
            }
        };
        for &page in pages.page_ids() {
            self.report.objects += 1;
            if !self.check_object(&format!("{what}, page {page}"), page)? {
                return Ok(());
            }
        }
        for page in pages {
            if let Err(e) = page {
                self.problem(format!("commit {commit}: {e}"));
                return Ok(());
            }
        }
        Ok(())
    }

    /// Check that an object exists and hashes to its name; true if so.
    fn check_object(&mut self, what: &str, id: ObjectId) -> io::Result<bool> {
        let path = self.repo.objects().blob_path(id);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.problem(format!("{what}: object {id} is missing"));
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        if ObjectId::of(&bytes) != id {
            self.problem(format!(
                "{what}: object {id} is damaged: its bytes do not hash to its name"
            ));
            return Ok(false);
        }
        Ok(true)
    }

    fn check_tree(&mut self, commit: CommitId, root: ObjectId) -> io::Result<()> {
        let mut stack = vec![(String::new(), root)];
        while let Some((path, id)) = stack.pop() {
            if !self.seen_objects.insert(id) {
                continue;
            }
            self.report.objects += 1;
            let what = format!("commit {commit}, directory '/{path}'");
            if !self.check_object(&what, id)? {
                continue;
            }
            let node: Node = match serde_json::from_slice(&self.repo.objects().get(id)?) {
                Ok(node) => node,
                Err(e) => {
                    self.problem(format!("{what}: tree node {id} is not a valid node: {e}"));
                    continue;
                }
            };
            match node {
                Node::Inner { children } => {
                    stack.extend(children.into_iter().map(|c| (path.clone(), c.id)));
                }
                Node::Leaf { entries } => {
                    for entry in entries {
                        let child = super::tree::join(&path, &entry.name);
                        match entry.kind {
                            super::EntryKind::Dir => stack.push((child, entry.id)),
                            super::EntryKind::File => {
                                if self.seen_objects.insert(entry.id) {
                                    self.report.objects += 1;
                                    self.check_blob(commit, &child, entry.id, entry.size)?;
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn check_blob(
        &mut self,
        commit: CommitId,
        path: &str,
        id: ObjectId,
        size: u64,
    ) -> io::Result<()> {
        let what = format!("commit {commit}, file '{path}'");
        if self.check_object(&what, id)? {
            let actual = std::fs::metadata(self.repo.objects().blob_path(id))?.len();
            if actual != size {
                self.problem(format!(
                    "{what}: the tree says {size} bytes but blob {id} has {actual}"
                ));
            }
        }
        Ok(())
    }
}
