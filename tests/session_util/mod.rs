//! Helpers for the tests that drive sessions as a library: sealing
//! everything at once, and reading what a branch committed.

#![allow(dead_code)]

use std::time::Duration;

use zarrfs::repo::{DEFAULT_BRANCH, Repo};
use zarrfs::session::Sealer;

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
