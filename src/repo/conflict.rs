//! The conflict rules of a rebase, as data.
//!
//! A session's changes S can be replayed onto commits that landed after its
//! base (changes T) unless one of the [`Conflict`] variants holds. Paths are
//! compared as keys: metadata versus chunk changes, and changes to
//! different chunks, never conflict; two changes to one key always do.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::tree::Change;

/// One reason why two sets of changes cannot both stand.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Conflict {
    /// Both sides changed this path.
    SamePath { path: String },
    /// We deleted or replaced the directory `dir`; they changed `theirs`
    /// below it.
    OursReplacedDirectory { dir: String, theirs: String },
    /// They deleted or replaced the directory `dir`; we changed `ours`
    /// below it.
    TheirsReplacedDirectory { dir: String, ours: String },
}

impl Conflict {
    /// The path of ours that the conflict is about, as the error lists it.
    pub fn our_path(&self) -> &str {
        match self {
            Conflict::SamePath { path } => path,
            Conflict::OursReplacedDirectory { dir, .. } => dir,
            Conflict::TheirsReplacedDirectory { ours, .. } => ours,
        }
    }
}

/// The paths a set of commits changed, and whether each change removed
/// what was at the path (so that changes below it conflict).
#[derive(Clone, Debug, Default)]
pub struct ChangedPaths {
    paths: BTreeMap<String, bool>,
}

impl ChangedPaths {
    pub fn from_changes<'a>(changes: impl IntoIterator<Item = &'a (String, Change)>) -> Self {
        let mut set = ChangedPaths::default();
        set.extend(changes);
        set
    }

    pub fn extend<'a>(&mut self, changes: impl IntoIterator<Item = &'a (String, Change)>) {
        for (path, change) in changes {
            *self.paths.entry(path.clone()).or_default() |= change.is_destructive();
        }
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The first path strictly below `dir`, if any.
    fn first_below(&self, dir: &str) -> Option<&str> {
        let prefix = format!("{dir}/");
        self.paths
            .range::<str, _>((Bound::Excluded(prefix.as_str()), Bound::Unbounded))
            .next()
            .map(|(p, _)| p.as_str())
            .filter(|p| p.starts_with(&prefix))
    }
}

/// Every conflict between our changes and theirs; empty if ours can be
/// rebased onto theirs. Costs O((|ours| + |theirs|) log).
pub fn find_conflicts(ours: &ChangedPaths, theirs: &ChangedPaths) -> Vec<Conflict> {
    let mut finder = ConflictFinder::new(theirs, Side::Theirs);
    for (path, &destructive) in &ours.paths {
        finder.check(path, destructive);
    }
    finder.finish()
}

/// Which side of a rebase a set of changes is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The session being committed.
    Ours,
    /// The commits that landed since its base.
    Theirs,
}

/// Finds the conflicts between one side's changes, held in memory, and
/// the other side's, streamed past them in any order: memory grows with
/// the held side only, so a commit holds whichever side is smaller.
pub struct ConflictFinder<'a> {
    held: &'a ChangedPaths,
    held_side: Side,
    conflicts: Vec<Conflict>,
    /// Held paths the streamed side changed too.
    both: std::collections::HashSet<String>,
    /// Held destructive paths with streamed paths below them, and the
    /// smallest such path.
    replaced: BTreeMap<String, String>,
}

impl<'a> ConflictFinder<'a> {
    pub fn new(held: &'a ChangedPaths, held_side: Side) -> ConflictFinder<'a> {
        ConflictFinder {
            held,
            held_side,
            conflicts: Vec::new(),
            both: Default::default(),
            replaced: BTreeMap::new(),
        }
    }

    /// Check one change of the streamed side.
    pub fn check(&mut self, path: &str, destructive: bool) {
        for (i, _) in path.match_indices('/') {
            let dir = &path[..i];
            if self.held.paths.get(dir) == Some(&true) {
                match self.replaced.get_mut(dir) {
                    Some(below) if below.as_str() <= path => {}
                    Some(below) => *below = path.to_owned(),
                    None => {
                        self.replaced.insert(dir.to_owned(), path.to_owned());
                    }
                }
            }
        }
        if self.held.paths.contains_key(path) {
            if self.both.insert(path.to_owned()) {
                self.conflicts.push(Conflict::SamePath {
                    path: path.to_owned(),
                });
            }
        } else if destructive && let Some(below) = self.held.first_below(path) {
            let (dir, below) = (path.to_owned(), below.to_owned());
            self.conflicts.push(match self.held_side {
                Side::Theirs => Conflict::OursReplacedDirectory { dir, theirs: below },
                Side::Ours => Conflict::TheirsReplacedDirectory { dir, ours: below },
            });
        }
    }

    /// Every conflict found, sorted.
    pub fn finish(mut self) -> Vec<Conflict> {
        for (dir, below) in std::mem::take(&mut self.replaced) {
            // Both sides changing the directory itself is a conflict of
            // its own already.
            if self.both.contains(&dir) {
                continue;
            }
            self.conflicts.push(match self.held_side {
                Side::Ours => Conflict::OursReplacedDirectory { dir, theirs: below },
                Side::Theirs => Conflict::TheirsReplacedDirectory { dir, ours: below },
            });
        }
        self.conflicts.sort();
        self.conflicts.dedup();
        self.conflicts
    }
}

/// Most paths an error lists before "and N more".
const LISTED_PATHS: usize = 10;

/// The error text of a failed rebase, as Arraylake words it:
/// `Conflicting paths found for rebase <base>-><branch>, including ['p']`.
pub fn conflict_message(base: &str, branch: &str, conflicts: &[Conflict]) -> String {
    let mut paths: Vec<&str> = conflicts.iter().map(Conflict::our_path).collect();
    paths.sort_unstable();
    paths.dedup();
    let listed: Vec<String> = paths
        .iter()
        .take(LISTED_PATHS)
        .map(|p| python_repr(p))
        .collect();
    let mut message = format!(
        "Conflicting paths found for rebase {base}->{branch}, including [{}]",
        listed.join(", ")
    );
    if paths.len() > LISTED_PATHS {
        message.push_str(&format!(" and {} more", paths.len() - LISTED_PATHS));
    }
    message
}

/// A string literal as Python's `repr` prints one (the error quotes paths
/// the way the seed's Python client does).
fn python_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c == quote => {
                out.push('\\');
                out.push(c)
            }
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::object::ObjectId;

    fn put(path: &str) -> (String, Change) {
        (
            path.to_owned(),
            Change::File {
                id: ObjectId([0; 32]),
                size: 0,
                mode: 0o644,
            },
        )
    }

    #[test]
    fn metadata_and_chunks_and_different_chunks_do_not_conflict() {
        let ours = ChangedPaths::from_changes(&[put("meta/root.group.json")]);
        let theirs = ChangedPaths::from_changes(&[
            put("meta/root/toy_data.group.json"),
            put("data/root/toy_data/ones/c0/0"),
        ]);
        assert!(find_conflicts(&ours, &theirs).is_empty());
    }

    #[test]
    fn the_same_key_conflicts_and_the_message_matches_arraylake() {
        let ours = ChangedPaths::from_changes(&[put("meta/root/toy_data.group.json")]);
        let theirs = ours.clone();
        let conflicts = find_conflicts(&ours, &theirs);
        assert_eq!(
            conflict_message("abc", "main", &conflicts),
            "Conflicting paths found for rebase abc->main, including ['meta/root/toy_data.group.json']"
        );
    }

    #[test]
    fn a_deleted_directory_conflicts_with_changes_below_it_on_either_side() {
        let ours = ChangedPaths::from_changes(&[("data/a".to_owned(), Change::Delete)]);
        let theirs = ChangedPaths::from_changes(&[put("data/a/c/0"), put("data/ab")]);
        assert_eq!(
            find_conflicts(&ours, &theirs),
            vec![Conflict::OursReplacedDirectory {
                dir: "data/a".into(),
                theirs: "data/a/c/0".into()
            }]
        );
        assert_eq!(find_conflicts(&theirs, &ours).len(), 1);
        let mkdir =
            ChangedPaths::from_changes(&[("data/a".to_owned(), Change::Dir { replace: false })]);
        assert!(
            find_conflicts(&mkdir, &theirs).is_empty(),
            "mkdir keeps what is there"
        );
    }

    #[test]
    fn long_lists_are_cut_after_ten_paths() {
        let changes: Vec<_> = (0..15).map(|i| put(&format!("c/{i:02}"))).collect();
        let set = ChangedPaths::from_changes(&changes);
        let message = conflict_message("b", "main", &find_conflicts(&set, &set));
        assert!(message.ends_with("'c/09'] and 5 more"), "{message}");
    }
    #[test]
    fn holding_either_side_finds_the_same_conflicts() {
        let delete = |p: &str| (p.to_owned(), Change::Delete);
        type Changes = Vec<(String, Change)>;
        let cases: Vec<(Changes, Changes)> = vec![
            (vec![delete("a")], vec![put("a/b"), put("a/c"), put("a.b")]),
            (vec![put("a/b"), put("x")], vec![delete("a"), put("x")]),
            (vec![delete("a"), put("a/b")], vec![put("a/c"), delete("a")]),
            (vec![put("d/e/f")], vec![delete("d"), delete("d/e")]),
        ];
        for (ours, theirs) in cases {
            let (o, t) = (
                ChangedPaths::from_changes(&ours),
                ChangedPaths::from_changes(&theirs),
            );
            let mut holding_ours = ConflictFinder::new(&o, Side::Ours);
            // Streamed in reverse, as several commits' lists may come.
            for (path, change) in theirs.iter().rev() {
                holding_ours.check(path, change.is_destructive());
            }
            let found = holding_ours.finish();
            assert!(!found.is_empty(), "{ours:?} / {theirs:?}");
            assert_eq!(found, find_conflicts(&o, &t), "{ours:?} / {theirs:?}");
        }
    }
}
