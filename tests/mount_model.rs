//! The mount checked against a simple model of a directory tree, as
//! mountpoint-s3 checks its filesystem: random sequences of file
//! operations (writes, appends, writes in place, truncates, mkdir, rmdir,
//! unlink, rename, link (a copy on a mount, so in the model), files held
//! open across steps for writing or for reading) go to a real mount and
//! to an in-memory model, mixed with commits, discards, remounts, kills
//! of the daemon after an fsync, checkouts of earlier commits, branches
//! made and read through `.zarrfs/branches/`, and commits of another
//! mount of the branch (which this one's commits rebase over). After
//! each step the mount must answer as the model does (the same success or
//! the same errno, the errno Linux gives on a local filesystem) and show
//! the same tree, file for file and byte for byte; at the end, what was
//! committed must be what a fresh session of the branch shows.

#[path = "mount_model/files.rs"]
mod files;
#[path = "mount_model/model.rs"]
mod model;
mod mount_util;
#[path = "mount_model/ops.rs"]
mod ops;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::time::Duration;

use files::{Files, errno, read_tree};
use model::{Model, Node, Tree};
use mount_util::{Mount, Scratch};
use ops::{Op, handle_op, op};
use proptest::prelude::*;

/// Pause's length: many times the seal delay of the mounts that seal.
const PAUSE: Duration = Duration::from_millis(30);

/// A control file's content.
fn control_read(mount: &Mount, file: &str) -> String {
    mount.read(&format!(".zarrfs/{file}")).trim().to_owned()
}

/// Write a control file's line; whether the write succeeded.
fn control(mount: &Mount, file: &str, line: &str) -> Result<(), std::io::Error> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(mount.path.join(".zarrfs").join(file))?;
    f.write_all(line.as_bytes())
}

/// Whether the session has changes as zarrfs counts them (what status
/// lists, what decides whether a commit has anything to commit and
/// whether the next mount resumes the session): exactly when the tree
/// differs from the committed one, however it came to be as it is.
fn session_changes(
    m: &Mount,
    step: usize,
    tree: &Tree,
    committed: &Tree,
) -> Result<bool, TestCaseError> {
    let listed = m.changed();
    prop_assert_eq!(
        !listed.is_empty(),
        tree != committed,
        "step {}: status lists {:?}, the tree {:?}, the committed {:?}",
        step,
        listed,
        tree,
        committed
    );
    Ok(!listed.is_empty())
}

fn run(seal_delay: &str, ops: &[Op]) -> Result<(), TestCaseError> {
    let scratch = Scratch::new();
    let mountpoint = scratch.mountpoint("m");
    let args = ["--seal-delay", seal_delay];
    let mut mount = Some(Mount::new(&scratch.repo, &mountpoint, &args));
    let mut files = Files::mount(&mountpoint);
    let mut model = Model::default();
    model.sealing = seal_delay != "off";
    let mut committed = Tree::default();
    // The branches made, by name, with the tree each was made at.
    let mut branches = BTreeMap::new();
    // Under `z`: what the other mount committed, and what this mount's
    // view shows of it (as of its session's base).
    let mut other: Option<Mount> = None;
    let mut theirs = Tree::default();
    let mut seen = Tree::default();
    // Each commit with its tree, the first the one `init` made.
    let mut history = vec![(
        control_read(mount.as_ref().unwrap(), "checkout"),
        Tree::default(),
    )];
    for (step, op) in ops.iter().enumerate() {
        let m = mount.as_ref().unwrap();
        if matches!(op, Op::Discard | Op::Remount | Op::Crash | Op::Peek(_)) {
            // What a file open across these would see is no local
            // filesystem's business: close them first.
            files.close_handles();
            model.close_handles();
        }
        match op {
            Op::Commit => {
                // A commit carries on the files open for writing: those the
                // case holds, once the kernel has reported its closes.
                let open = model.open_for_writing();
                prop_assert!(
                    mount_util::eventually(Duration::from_secs(5), || {
                        m.session_json()["open_for_writing"] == open
                    }),
                    "step {}: session.json counts {} files open for writing, not {}",
                    step,
                    m.session_json()["open_for_writing"],
                    open
                );
                let changes = session_changes(m, step, &model.tree(), &committed)?;
                let outcome = control(m, "commit", &format!("step {step}\n"));
                // Nothing to commit fails the write; anything else lands.
                prop_assert_eq!(
                    outcome.is_ok(),
                    changes,
                    "step {}: commit {:?} with changes listed: {}",
                    step,
                    outcome,
                    changes
                );
                if outcome.is_ok() {
                    model.committed();
                    committed = model.tree();
                    seen = theirs.clone();
                    history.push((control_read(m, "commit"), committed.joined(&seen)));
                }
            }
            Op::Discard => {
                control(m, "discard", "yes\n")
                    .map_err(|e| TestCaseError::fail(format!("step {step}: discard: {e}")))?;
                model.discard(&committed);
            }
            Op::Crash | Op::Remount => {
                let changes = session_changes(m, step, &model.tree(), &committed)?;
                if *op == Op::Crash {
                    fs::File::open(&mountpoint)
                        .and_then(|root| root.sync_all())
                        .map_err(|e| TestCaseError::fail(format!("step {step}: fsync: {e}")))?;
                    mount.take().unwrap().crash();
                } else {
                    mount.take().unwrap().unmount();
                }
                mount = Some(Mount::new(&scratch.repo, &mountpoint, &args));
                // A session without changes is not resumed: the new one
                // starts at the tip of the branch.
                if !changes {
                    seen = theirs.clone();
                    model.new_session();
                }
            }
            Op::Pause => std::thread::sleep(PAUSE),
            Op::Peek(back) => {
                let (id, tree) = &history[history.len().saturating_sub(1 + back)];
                let outcome = control(m, "checkout", &format!("{id}\n"));
                // Refused while the session has changes (EBUSY).
                if session_changes(m, step, &model.tree(), &committed)? {
                    prop_assert_eq!(
                        outcome.map_err(errno),
                        Err(libc::EBUSY),
                        "step {}: checkout with changes",
                        step
                    );
                } else {
                    outcome.map_err(|e| {
                        TestCaseError::fail(format!("step {step}: checkout {id}: {e}"))
                    })?;
                    prop_assert_eq!(
                        &read_tree(&m.path),
                        tree,
                        "step {}: the tree of {}",
                        step,
                        id
                    );
                    control(m, "checkout", "main\n").map_err(|e| {
                        TestCaseError::fail(format!("step {step}: back to the tip: {e}"))
                    })?;
                    seen = theirs.clone();
                    model.new_session();
                }
            }
            Op::MakeBranch(name) => {
                let made = fs::create_dir(m.path.join(".zarrfs/branches").join(name));
                let exists = *name == "main" || branches.contains_key(name);
                prop_assert_eq!(
                    made.map_err(errno),
                    if exists { Err(libc::EEXIST) } else { Ok(()) },
                    "step {}: mkdir branches/{}",
                    step,
                    name
                );
                // The session's base: what it last committed or checked
                // out, with what it saw of theirs then.
                branches
                    .entry(*name)
                    .or_insert_with(|| committed.joined(&seen));
            }
            Op::ReadBranch(name) => {
                let expected = match *name {
                    // Ours rebase over theirs, which are all under `z`.
                    "main" => Some(committed.joined(&theirs)),
                    _ => branches.get(name).cloned(),
                };
                let dir = m.path.join(".zarrfs/branches").join(name);
                prop_assert_eq!(
                    dir.exists().then(|| read_tree(&dir)),
                    expected,
                    "step {}: the newest commit of branch {}",
                    step,
                    name
                );
            }
            Op::OtherCommit(name, bytes) => {
                let b = other.get_or_insert_with(|| scratch.mount("other", &[]));
                let path = format!("z/{name}");
                fs::create_dir_all(b.path.join("z")).unwrap();
                fs::write(b.path.join(&path), bytes).unwrap();
                let outcome = control(b, "commit", &format!("theirs, step {step}\n"));
                let file = Node::File(bytes.clone());
                prop_assert_eq!(
                    outcome.is_ok(),
                    theirs.0.get(&path) != Some(&file),
                    "step {}: the other mount's commit {:?}",
                    step,
                    outcome
                );
                theirs.0.insert("z".to_owned(), Node::Dir);
                theirs.0.insert(path, file);
            }
            Op::HandleRead(slot) if model.possible_reads(*slot).len() > 1 => {
                let got = files.apply(op);
                let possible = model.possible_reads(*slot);
                prop_assert!(
                    matches!(&got, Ok(Some(bytes)) if model.settle_read(*slot, bytes)),
                    "step {}: {:?} read {:?}, not one of {:?}",
                    step,
                    op,
                    got,
                    possible
                );
            }
            _ => {
                let expected = model.apply(op);
                let got = files.apply(op);
                prop_assert_eq!(got, expected, "step {}: {:?}", step, op);
            }
        }
        let shown = read_tree(&mountpoint);
        prop_assert_eq!(
            &shown,
            &model.tree().joined(&seen),
            "step {}: the tree after {:?}",
            step,
            op
        );
    }
    // What was committed is what a fresh session of the branch shows.
    files.close_handles();
    let m = mount.take().unwrap();
    let tree = model.tree();
    if session_changes(&m, ops.len(), &tree, &committed)? {
        control(&m, "commit", "last\n")
            .map_err(|e| TestCaseError::fail(format!("the last commit: {e}")))?;
    }
    m.unmount();
    let fresh = scratch.mount("fresh", &["--new-session"]);
    prop_assert_eq!(
        &read_tree(&fresh.path),
        &tree.joined(&theirs),
        "a new session's tree"
    );
    Ok(())
}

/// A proptest of cases on a real mount: `cases` of them, or more with
/// PROPTEST_CASES=N (a hunt).
fn mount_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(cases),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    }
}

/// Files are stored as objects ahead of the commit after the seal delay:
/// at once, never, or (with pauses) between steps.
fn seal_delay() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["off", "0ms", "1ms"])
}

proptest! {
    // Each case mounts for real (and remounts): 32 cases of up to 40
    // steps take about 20-25 s.
    #![proptest_config(mount_config(32))]

    #[test]
    fn the_mount_behaves_like_a_local_directory(
        seal_delay in seal_delay(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        run(seal_delay, &ops)?;
    }
}

proptest! {
    #![proptest_config(mount_config(16))]

    /// Files held open for reading and for writing across writes of
    /// their paths and commits (rebased ones too): a reader of a
    /// committed or sealed file keeps its bytes.
    #[test]
    fn files_held_open_across_commits(
        seal_delay in seal_delay(),
        ops in prop::collection::vec(handle_op(), 1..40),
    ) {
        run(seal_delay, &ops)?;
    }
}

proptest! {
    // The model's rules checked against the machine's own filesystem
    // (a temporary directory), so that the errno it predicts are Linux's.
    #[test]
    fn the_model_follows_linux(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Files::plain(dir.path());
        let mut model = Model::default();
        for op in ops.iter().filter(|op| {
            !op.is_session_action()
        }) {
            let expected = model.apply(op);
            prop_assert_eq!(files.apply(op), expected, "{:?}", op);
            prop_assert_eq!(&read_tree(dir.path()), &model.tree(), "after {:?}", op);
        }
    }
}
