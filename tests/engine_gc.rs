//! `zarrfs gc`: objects that no commit names go, everything a commit or a
//! live session needs stays, and gc and commits running at once never
//! lose an object.

use std::sync::Arc;
use std::time::Duration;

mod session_util;

use session_util::{committed, seal_all, settle};
use zarrfs::repo::gc::{GcOptions, gc};
use zarrfs::repo::{DEFAULT_BRANCH, ObjectId, Repo, fsck::fsck};
use zarrfs::session::{Sealer, Session, SessionOptions};

fn repo() -> (tempfile::TempDir, Arc<Repo>) {
    let dir = tempfile::tempdir().unwrap();
    let repo = Arc::new(Repo::init(&dir.path().join("repo")).unwrap());
    (dir, repo)
}

fn start(repo: &Arc<Repo>) -> (Session, Sealer) {
    let session = Session::start(repo.clone(), SessionOptions::new(DEFAULT_BRANCH)).unwrap();
    let sealer = session.sealer();
    (session, sealer)
}

fn now() -> GcOptions {
    GcOptions {
        grace: Duration::ZERO,
        dry_run: false,
    }
}

fn stored(repo: &Repo, bytes: &[u8]) -> bool {
    repo.objects().contains(ObjectId::of(bytes))
}

#[test]
fn gc_removes_what_no_commit_names_and_keeps_what_commits_and_live_sessions_need() {
    let (_dir, repo) = repo();
    let (mut first, sealer) = start(&repo);
    first.write_file("kept", b"kept").unwrap();
    first.write_file("rewritten", b"old bytes").unwrap();
    first.write_file("removed", b"removed bytes").unwrap();
    assert_eq!(seal_all(&sealer), 3);
    first.write_file("rewritten", b"new bytes").unwrap();
    first.unlink("removed").unwrap();
    first.commit("first").unwrap();

    // Sealed, then discarded.
    first.write_file("discarded", b"discarded bytes").unwrap();
    assert_eq!(seal_all(&first.sealer()), 1);
    first.discard().unwrap();

    // A live session's sealed file, not committed yet.
    let (mut live, live_sealer) = start(&repo);
    live.write_file("pending", b"pending bytes").unwrap();
    assert_eq!(seal_all(&live_sealer), 1);

    let orphans = [&b"old bytes"[..], b"removed bytes", b"discarded bytes"];
    settle(&repo);
    let dry = gc(
        &repo,
        GcOptions {
            dry_run: true,
            ..now()
        },
    )
    .unwrap();
    assert!(dry.removed >= orphans.len(), "{dry:?}");
    assert!(
        orphans.iter().all(|b| stored(&repo, b)),
        "a dry run removes nothing"
    );

    let report = gc(&repo, now()).unwrap();
    assert_eq!(report.removed, dry.removed);
    assert_eq!(report.kept_sealed, 1, "{report:?}");
    for bytes in orphans {
        assert!(
            !stored(&repo, bytes),
            "{} is gone",
            String::from_utf8_lossy(bytes)
        );
    }
    assert!(fsck(&repo).unwrap().is_clean());
    assert_eq!(committed(&repo, "kept"), b"kept");
    assert_eq!(committed(&repo, "rewritten"), b"new bytes");

    live.commit("pending").unwrap();
    assert_eq!(committed(&repo, "pending"), b"pending bytes");
    settle(&repo);
    assert_eq!(gc(&repo, now()).unwrap().kept_sealed, 0);
    assert!(fsck(&repo).unwrap().is_clean());
}

#[test]
fn gc_keeps_objects_changed_within_the_grace_period() {
    let (_dir, repo) = repo();
    let (mut session, sealer) = start(&repo);
    session.write_file("a", b"sealed and discarded").unwrap();
    assert_eq!(seal_all(&sealer), 1);
    session.discard().unwrap();
    settle(&repo);
    let report = gc(&repo, GcOptions::default()).unwrap();
    assert_eq!((report.removed, report.kept_recent), (0, 1), "{report:?}");
    assert!(stored(&repo, b"sealed and discarded"));
}

/// A session that sealed `bytes` as "a" and discarded it: the store holds
/// them, named by nothing.
fn session_that_left_garbage(repo: &Arc<Repo>, bytes: &[u8]) -> Session {
    let (mut session, sealer) = start(repo);
    session.write_file("a", bytes).unwrap();
    assert_eq!(seal_all(&sealer), 1);
    session.discard().unwrap();
    session
}

#[test]
fn bytes_the_store_had_as_garbage_are_stored_again_by_the_commit() {
    let (_dir, repo) = repo();
    let mut session = session_that_left_garbage(&repo, b"same bytes");

    // The store has the bytes, named by nothing. Sealing while a gc runs
    // (holding the write lock) finds them there and leaves the file to
    // the commit, and the gc removes them.
    session.write_file("b", b"same bytes").unwrap();
    let running_gc = repo.storage().lock("write.lock", true).unwrap();
    assert_eq!(seal_all(&session.sealer()), 0);
    drop(running_gc);
    settle(&repo);
    assert_eq!(gc(&repo, now()).unwrap().removed, 1);
    assert!(!stored(&repo, b"same bytes"));
    session.commit("b").unwrap();
    assert_eq!(committed(&repo, "b"), b"same bytes");
    assert!(fsck(&repo).unwrap().is_clean());
}

#[test]
fn garbage_a_file_was_sealed_as_is_kept_for_its_commit() {
    let (_dir, repo) = repo();
    let mut session = session_that_left_garbage(&repo, b"same bytes");

    // Sealing with no gc running makes the file a name of that object.
    session.write_file("b", b"same bytes").unwrap();
    assert_eq!(seal_all(&session.sealer()), 1);
    settle(&repo);
    let report = gc(&repo, now()).unwrap();
    assert_eq!((report.removed, report.kept_sealed), (0, 1), "{report:?}");
    session.commit("b").unwrap();
    assert_eq!(committed(&repo, "b"), b"same bytes");
    assert!(fsck(&repo).unwrap().is_clean());
}

#[test]
fn gc_running_beside_commits_never_loses_an_object() {
    let (_dir, repo) = repo();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (repo, stop) = (repo.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                gc(&repo, now()).unwrap();
                runs += 1;
            }
            runs
        })
    };
    let (mut session, _) = start(&repo);
    for round in 0..40 {
        // Each round rewrites the same paths, makes garbage, and reuses
        // bytes that an earlier round left as garbage.
        for i in 0..8 {
            let bytes = format!("round {} file {i}", round / 2);
            session
                .write_file(&format!("f{i}"), bytes.as_bytes())
                .unwrap();
        }
        seal_all(&session.sealer());
        session
            .write_file("f0", format!("final {round}").as_bytes())
            .unwrap();
        seal_all(&session.sealer());
        session.commit(&format!("round {round}")).unwrap();
        assert_eq!(committed(&repo, "f0"), format!("final {round}").as_bytes());
        assert_eq!(
            committed(&repo, "f7"),
            format!("round {} file 7", round / 2).as_bytes()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(collector.join().unwrap() > 0);
    let report = fsck(&repo).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}
