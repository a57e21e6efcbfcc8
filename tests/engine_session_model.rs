//! Two sessions' changes and their rebase, checked against a model of
//! trees.
//!
//! A base is made by a session; two sessions then start on it and change
//! their views with random file and directory operations (writes, removals,
//! `rm -r`, mkdir, rmdir, renames of files and directories), often putting
//! back what they removed. The model does not replay the operations: it
//! reads each view as it ends up and derives what a session changes from
//! the base and the view alone, the least set of changes that turns one
//! into the other (as git compares trees). Status must list exactly those
//! paths; "theirs" commits, then "ours", which must conflict exactly when
//! the DESIGN's rules say so (a path both changed, or a change below a
//! directory the other side deleted or replaced), and otherwise leave the
//! tree that both change sets make of the base, in its view and on the
//! branch. A conflict leaves ours as it was.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use zarrfs::repo::{CommitError, Repo};
use zarrfs::session::{NodeKind, Session, SessionError};

mod session_util;

use session_util::{changed, remove_tree, user};

/// Paths of up to three levels over two names, so that operations often
/// meet: `a`, `a/b`, `b/a/a`, ...
fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(&["a", "b"][..]), 1..=3).prop_map(|c| c.join("/"))
}

#[derive(Clone, Debug)]
enum Op {
    /// Write one of a few contents, creating parent directories.
    Write(String, u8),
    Unlink(String),
    /// Remove a directory and everything below it (`rm -r`).
    RemoveTree(String),
    Mkdir(String),
    Rmdir(String),
    Rename(String, String),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (path(), 0..3u8).prop_map(|(p, v)| Op::Write(p, v)),
        1 => path().prop_map(Op::Unlink),
        1 => path().prop_map(Op::RemoveTree),
        2 => path().prop_map(Op::Mkdir),
        1 => path().prop_map(Op::Rmdir),
        2 => (path(), path()).prop_map(|(from, to)| Op::Rename(from, to)),
    ]
}

fn ops(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), len)
}

/// What a view or a commit holds: every path, a file's content or `None`
/// for a directory.
type Tree = BTreeMap<String, Option<Vec<u8>>>;

/// Apply an operation; one that fails (a missing parent, a file where a
/// directory must be, ...) changes nothing, as on a local filesystem.
fn apply(session: &mut Session, op: &Op) {
    let _ = match op {
        Op::Write(path, v) => session.write_file(path, &content(*v)),
        Op::Unlink(path) => session.unlink(path),
        Op::RemoveTree(path) => remove_tree(session, path),
        Op::Mkdir(path) => session.mkdir(path),
        Op::Rmdir(path) => session.rmdir(path),
        Op::Rename(from, to) => session.rename(from, to),
    };
}

fn content(v: u8) -> Vec<u8> {
    vec![b'0' + v; 3]
}

fn view(session: &Session) -> Tree {
    let mut out = Tree::new();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        for (name, attr) in session.list(&dir).unwrap() {
            let path = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            if attr.kind == NodeKind::Dir {
                out.insert(path.clone(), None);
                stack.push(path);
            } else {
                out.insert(path.clone(), Some(session.read_file(&path).unwrap()));
            }
        }
    }
    out
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

fn is_below(path: &str, dir: &str) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

/// One change of the model: what is at the path now (`Gone` for nothing),
/// and whether it removes what was there, so that the other side's
/// changes below it conflict (only an empty directory made where there
/// was none does not).
#[derive(Clone, Debug, PartialEq)]
enum Change {
    Gone,
    File(Vec<u8>),
    /// A directory with nothing in it; `replace`: there was a file.
    EmptyDir {
        replace: bool,
    },
    /// A directory where there was a file, with files below it.
    DirOverFile,
}

impl Change {
    fn destructive(&self) -> bool {
        !matches!(self, Change::EmptyDir { replace: false })
    }
}

/// The least set of changes that turns `base` into `new`: a path counts
/// only where its kind or content differs, a directory only where it is
/// removed, replaces a file or is new and empty (its files carry it
/// otherwise), and nothing below a path removed or replaced counts again.
fn diff(base: &Tree, new: &Tree) -> BTreeMap<String, Change> {
    let mut out = BTreeMap::new();
    let empty = |dir: &str| !new.keys().any(|p| is_below(p, dir));
    for (path, now) in new {
        let was = base.get(path);
        let change = match (was, now) {
            (Some(was), Some(bytes)) if was.as_ref() == Some(bytes) => continue,
            (_, Some(bytes)) => Change::File(bytes.clone()),
            (Some(None), None) => continue,
            (Some(Some(_)), None) if empty(path) => Change::EmptyDir { replace: true },
            (Some(Some(_)), None) => Change::DirOverFile,
            (None, None) if empty(path) => Change::EmptyDir { replace: false },
            (None, None) => continue,
        };
        out.insert(path.clone(), change);
    }
    for path in base.keys() {
        // Gone, where the parent is still a directory (of the base, or the
        // root): below a removed or replaced path, that one change covers it.
        let parent = parent(path);
        if !new.contains_key(path) && (parent.is_empty() || (new.get(parent) == Some(&None))) {
            out.insert(path.clone(), Change::Gone);
        }
    }
    out
}

/// The tree that applying `changes` in path order to `tree` makes.
fn apply_changes(tree: &Tree, changes: &BTreeMap<String, Change>) -> Tree {
    let mut out = tree.clone();
    for (path, change) in changes {
        if change.destructive() {
            out.retain(|p, _| p != path && !is_below(p, path));
        }
        // What is made needs directories above it, replacing any file.
        if !matches!(change, Change::Gone) {
            let mut at = 0;
            while let Some(i) = path[at..].find('/') {
                out.insert(path[..at + i].to_owned(), None);
                at += i + 1;
            }
        }
        match change {
            Change::Gone => {}
            Change::File(bytes) => {
                out.insert(path.clone(), Some(bytes.clone()));
            }
            Change::EmptyDir { .. } | Change::DirOverFile => {
                if out.get(path) != Some(&None) {
                    out.retain(|p, _| !is_below(p, path));
                }
                out.insert(path.clone(), None);
            }
        }
    }
    out
}

/// The DESIGN's rules: a path both sides changed, or a change below a
/// path the other side removed or replaced.
fn conflicts(ours: &BTreeMap<String, Change>, theirs: &BTreeMap<String, Change>) -> bool {
    let below_destructive = |a: &BTreeMap<String, Change>, b: &BTreeMap<String, Change>| {
        a.iter()
            .any(|(dir, c)| c.destructive() && b.keys().any(|p| is_below(p, dir)))
    };
    ours.keys().any(|p| theirs.contains_key(p))
        || below_destructive(ours, theirs)
        || below_destructive(theirs, ours)
}

fn run(base_ops: &[Op], their_ops: &[Op], our_ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let repo = Arc::new(Repo::init(&dir.path().join("repo")).unwrap());
    let mut maker = user(&repo, "base");
    for op in base_ops {
        apply(&mut maker, op);
    }
    let base = view(&maker);
    if !base.is_empty() {
        maker.commit("base").unwrap();
    }
    drop(maker);

    let mut theirs = user(&repo, "theirs");
    let mut ours = user(&repo, "ours");
    for op in their_ops {
        apply(&mut theirs, op);
    }
    for op in our_ops {
        apply(&mut ours, op);
    }
    let (their_tree, our_tree) = (view(&theirs), view(&ours));
    let (their_changes, our_changes) = (diff(&base, &their_tree), diff(&base, &our_tree));
    for (side, session, changes) in [
        ("theirs", &mut theirs, &their_changes),
        ("ours", &mut ours, &our_changes),
    ] {
        prop_assert_eq!(
            changed(session),
            changes.keys().cloned().collect::<Vec<_>>(),
            "{}: status against the model's changes {:?}",
            side,
            changes
        );
    }

    if !their_changes.is_empty() {
        theirs.commit("theirs").unwrap();
    }
    let outcome = ours.commit("ours");
    if our_changes.is_empty() {
        prop_assert!(
            matches!(
                outcome,
                Err(SessionError::Commit(CommitError::NothingToCommit))
            ),
            "nothing to commit expected, got {:?}",
            outcome
        );
    } else if conflicts(&our_changes, &their_changes) {
        prop_assert!(
            matches!(
                outcome,
                Err(SessionError::Commit(CommitError::Conflict { .. }))
            ),
            "a conflict expected between ours {:?} and theirs {:?}, got {:?}",
            our_changes,
            their_changes,
            outcome
        );
        prop_assert_eq!(view(&ours), our_tree, "a conflict keeps ours as it was");
        prop_assert_eq!(
            changed(&mut ours),
            our_changes.keys().cloned().collect::<Vec<_>>()
        );
    } else {
        prop_assert!(
            outcome.is_ok(),
            "ours {:?} over theirs {:?}: {:?}",
            our_changes,
            their_changes,
            outcome
        );
        let expected = apply_changes(&their_tree, &our_changes);
        prop_assert_eq!(view(&ours), expected.clone(), "ours after the rebase");
        prop_assert_eq!(view(&user(&repo, "reader")), expected, "the branch");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn two_sessions_change_and_rebase_as_the_model_says(
        base_ops in ops(4..16),
        their_ops in ops(0..12),
        our_ops in ops(0..12),
    ) {
        run(&base_ops, &their_ops, &our_ops)?;
    }
}

/// The model itself, on cases worked out by hand.
#[test]
fn the_model_diffs_and_applies_as_git_would() {
    let tree = |entries: &[(&str, Option<&str>)]| -> Tree {
        entries
            .iter()
            .map(|(p, c)| (p.to_string(), c.map(|c| c.as_bytes().to_vec())))
            .collect()
    };
    let base = tree(&[
        ("a", None),
        ("a/x", Some("1")),
        ("a/y", Some("2")),
        ("f", Some("f")),
    ]);
    // A directory put back as it was, one file changed, one gone.
    let new = tree(&[("a", None), ("a/x", Some("1")), ("a/y", Some("3"))]);
    let changes = diff(&base, &new);
    assert_eq!(
        changes.into_iter().collect::<Vec<_>>(),
        [
            ("a/y".to_owned(), Change::File(b"3".to_vec())),
            ("f".to_owned(), Change::Gone)
        ]
    );
    // A directory removed is one change; a file made a directory another.
    let new = tree(&[("f", None), ("f/z", Some("z"))]);
    let changes = diff(&base, &new);
    assert_eq!(
        changes.keys().collect::<Vec<_>>(),
        ["a", "f", "f/z"],
        "{changes:?}"
    );
    assert_eq!(apply_changes(&base, &changes), new);
    // The base with some paths added or rewritten.
    let base_with = |entries: &[(&str, Option<&str>)]| -> Tree {
        let mut out = base.clone();
        out.extend(tree(entries));
        out
    };
    assert!(conflicts(
        &changes,
        &diff(&base, &base_with(&[("a/x", Some("2"))]))
    ));
    // An empty directory made conflicts only with the same path.
    let made = diff(&base, &base_with(&[("a/e", None)]));
    assert_eq!(made.get("a/e"), Some(&Change::EmptyDir { replace: false }));
    let below = diff(&base, &base_with(&[("a/e", None), ("a/e/q", Some("q"))]));
    assert_eq!(below.keys().collect::<Vec<_>>(), ["a/e/q"]);
    assert!(!conflicts(&made, &below));
}
