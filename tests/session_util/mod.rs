//! Helpers for the tests that drive sessions as a library: sealing
//! everything at once, reading what a branch committed, waiting for
//! finished sessions' files to go, and removing a tree as `rm -r` does.

#![allow(dead_code)]

use std::time::Duration;

use zarrfs::repo::{DEFAULT_BRANCH, Repo};
use zarrfs::session::{NodeKind, Sealer, Session, SessionError, SessionOptions};

/// Seal everything closed, whenever it closed; nothing counts as open.
pub fn seal_all(sealer: &Sealer) -> usize {
    sealer
        .seal_due(Duration::ZERO, usize::MAX, &|_| false)
        .sealed
}

/// The bytes of `path` at the tip of the default branch.
pub fn committed(repo: &Repo, path: &str) -> Vec<u8> {
    let tip = repo.branch_tip(DEFAULT_BRANCH).unwrap().unwrap().commit;
    let tree = repo.commit_record(tip).unwrap().tree;
    let entry = repo
        .trees()
        .lookup(tree, path)
        .unwrap()
        .unwrap_or_else(|| panic!("{path} is not committed"));
    repo.objects().get(entry.id).unwrap()
}

/// Wait until finished sessions' files are gone: they are removed in the
/// background, and until then their staged files keep objects linked.
pub fn settle(repo: &Repo) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let doomed = || {
        std::fs::read_dir(repo.path().join("tmp"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("doomed-"))
    };
    while doomed() {
        assert!(std::time::Instant::now() < deadline, "sessions not removed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Remove every file and directory below `dir`, and `dir`, deepest first,
/// as `rm -r` does; the first failure ends it.
pub fn remove_tree(session: &mut Session, dir: &str) -> Result<(), SessionError> {
    for (name, attr) in session.list(dir)? {
        let path = format!("{dir}/{name}");
        match attr.kind {
            NodeKind::Dir => remove_tree(session, &path)?,
            NodeKind::File => session.unlink(&path)?,
        }
    }
    session.rmdir(dir)
}

/// A session on the default branch, by `name <name@example.org>`.
pub fn user(repo: &std::sync::Arc<Repo>, name: &str) -> Session {
    let mut options = SessionOptions::new(DEFAULT_BRANCH);
    options.author = format!("{name} <{name}@example.org>");
    Session::start(repo.clone(), options).unwrap()
}

/// The paths a session's status lists, in its order.
pub fn changed(session: &mut Session) -> Vec<String> {
    session
        .status()
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect()
}
