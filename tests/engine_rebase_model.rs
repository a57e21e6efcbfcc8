//! Rebase checked against a simple model: two change sets applied to a map
//! of files.
//!
//! "Theirs" lands first; "ours" was made on the same base and is committed
//! after. The model predicts a conflict exactly when the DESIGN's rules
//! say so, and otherwise the files of the final tree are the base with
//! both change sets applied.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use zarrfs::repo::{
    Change, ChangeListWriter, CommitError, CommitRequest, DEFAULT_BRANCH, EntryKind, ObjectId,
    Repo, WriteBatch,
};

/// A small universe of paths, with files at several depths and names that
/// sort between a directory and its contents (`d.json`).
const PATHS: &[&str] = &[
    "a", "d", "d.json", "d/x", "d/y", "d/e", "d/e/z", "f/1", "f/2",
];

#[derive(Clone, Debug)]
enum Op {
    Put(u8),
    Delete,
}

fn change_set() -> impl Strategy<Value = BTreeMap<String, Op>> {
    prop::collection::btree_map(
        prop::sample::select(PATHS).prop_map(str::to_owned),
        prop_oneof![any::<u8>().prop_map(Op::Put), Just(Op::Delete)],
        0..5,
    )
}

fn base_files() -> impl Strategy<Value = BTreeMap<String, u8>> {
    // Files only at leaves that can coexist: no path is another's ancestor.
    prop::collection::btree_map(
        prop::sample::select(&["a", "d.json", "d/x", "d/y", "d/e/z", "f/1", "f/2"][..])
            .prop_map(str::to_owned),
        any::<u8>(),
        0..7,
    )
}

/// The model: files as a map. A put replaces whatever is at the path and
/// below it (and any file at an ancestor, which the parent directory
/// replaces); a delete removes the path and everything below it.
fn model_apply(files: &mut BTreeMap<String, u8>, changes: &BTreeMap<String, Op>) {
    for (path, op) in changes {
        let below = format!("{path}/");
        files.retain(|p, _| p != path && !p.starts_with(&below));
        if let Op::Put(v) = op {
            files.retain(|p, _| !path.starts_with(&format!("{p}/")));
            files.insert(path.clone(), *v);
        }
    }
}

fn model_conflicts(ours: &BTreeMap<String, Op>, theirs: &BTreeMap<String, Op>) -> bool {
    let under = |child: &str, parent: &str| child.starts_with(&format!("{parent}/"));
    ours.keys().any(|p| theirs.contains_key(p))
        || ours
            .keys()
            .any(|o| theirs.keys().any(|t| under(t, o) || under(o, t)))
}

fn blob(repo: &Repo, v: u8, batch: &mut WriteBatch) -> Change {
    let bytes = vec![v; 3];
    let id = repo.objects().put(&bytes, batch).unwrap();
    Change::File {
        id,
        size: 3,
        mode: 0o644,
    }
}

fn to_changes(repo: &Repo, set: &BTreeMap<String, Op>) -> Vec<(String, Change)> {
    let mut batch = WriteBatch::default();
    set.iter()
        .map(|(p, op)| {
            let change = match op {
                Op::Put(v) => blob(repo, *v, &mut batch),
                Op::Delete => Change::Delete,
            };
            (p.clone(), change)
        })
        .collect()
}

/// The files of a commit's tree, with the byte each holds.
fn tree_files(repo: &Repo, root: ObjectId) -> BTreeMap<String, u8> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), root)];
    while let Some((prefix, dir)) = stack.pop() {
        for entry in repo.trees().list(dir).unwrap() {
            let path = zarrfs::repo::tree::join(&prefix, &entry.name);
            match entry.kind {
                EntryKind::Dir => stack.push((path, entry.id)),
                EntryKind::File => {
                    out.insert(path, repo.objects().get(entry.id).unwrap()[0]);
                }
            }
        }
    }
    out
}

fn commit(
    repo: &Repo,
    base: zarrfs::repo::CommitId,
    changes: &[(String, Change)],
) -> Result<zarrfs::repo::CommitId, CommitError> {
    // Written as a session writes it: applied to the base's tree on the
    // way, which a commit that needs no rebase takes as its tree.
    let mut written = WriteBatch::default();
    let base_tree = repo.commit_record(base)?.tree;
    let mut sorted: Vec<&(String, Change)> = changes.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut writer = ChangeListWriter::new(repo.objects()).applying_to(base_tree);
    for (path, change) in sorted {
        writer.push(path.clone(), change.clone())?;
    }
    let (changes, applied) = writer.finish_applied(&mut written)?;
    repo.commit(CommitRequest {
        branch: DEFAULT_BRANCH,
        base,
        changes,
        applied,
        author: "model",
        message: "model",
        session: "model",
        written,
    })
    .map(|o| o.id)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn rebase_matches_the_model(base in base_files(), theirs in change_set(), ours in change_set()) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Arc::new(Repo::init(&dir.path().join("repo")).unwrap());
        let first = repo.branch_tip(DEFAULT_BRANCH).unwrap().unwrap().commit;
        let base_set: BTreeMap<String, Op> = base.iter().map(|(p, v)| (p.clone(), Op::Put(*v))).collect();
        let base_commit = if base_set.is_empty() { first } else { commit(&repo, first, &to_changes(&repo, &base_set)).unwrap() };

        let theirs_changes = to_changes(&repo, &theirs);
        if !theirs_changes.is_empty() {
            commit(&repo, base_commit, &theirs_changes).unwrap();
        }
        let ours_changes = to_changes(&repo, &ours);
        let outcome = commit(&repo, base_commit, &ours_changes);

        let mut expected = base.clone();
        model_apply(&mut expected, &theirs);
        if ours.is_empty() {
            prop_assert!(matches!(outcome, Err(CommitError::NothingToCommit)));
        } else if !theirs.is_empty() && model_conflicts(&ours, &theirs) {
            prop_assert!(matches!(outcome, Err(CommitError::Conflict { .. })), "expected a conflict, got {:?}", outcome);
        } else {
            let id = outcome.expect("no conflict expected");
            model_apply(&mut expected, &ours);
            prop_assert_eq!(tree_files(&repo, repo.commit_record(id).unwrap().tree), expected);
        }
    }
}
