//! Sealing: a session's closed files are stored in the object store
//! before the commit (see `session::sealing`), and nothing a user can see
//! changes because of it: a sealed file reads, rewrites and commits as
//! any other, and an object, once stored, never changes.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

mod session_util;

use session_util::{changed, committed, seal_all, settle};
use zarrfs::repo::{DEFAULT_BRANCH, ObjectId, Repo};
use zarrfs::session::{Session, SessionOptions};

fn session() -> (tempfile::TempDir, Arc<Repo>, Session) {
    let dir = tempfile::tempdir().unwrap();
    let repo = Arc::new(Repo::init(&dir.path().join("repo")).unwrap());
    let session = Session::start(repo.clone(), SessionOptions::new(DEFAULT_BRANCH)).unwrap();
    (dir, repo, session)
}

/// The bytes of an object, read from the store itself.
fn object_bytes(repo: &Repo, bytes: &[u8]) -> Option<Vec<u8>> {
    std::fs::read(repo.objects().blob_path(ObjectId::of(bytes))).ok()
}

#[test]
fn closed_files_are_stored_before_the_commit_and_committed_as_written() {
    let (_dir, repo, mut session) = session();
    let sealer = session.sealer();
    session.write_file("data/c0", b"chunk zero").unwrap();
    session.write_file("data/c1", b"chunk one").unwrap();
    assert_eq!(object_bytes(&repo, b"chunk zero"), None, "not stored yet");

    assert_eq!(seal_all(&sealer), 2);
    assert_eq!(session.sealed_files(), 2);
    assert_eq!(
        object_bytes(&repo, b"chunk zero").as_deref(),
        Some(&b"chunk zero"[..])
    );
    assert_eq!(session.read_file("data/c1").unwrap(), b"chunk one");
    assert_eq!(changed(&mut session), ["data/c0", "data/c1"]);

    session.commit("two chunks").unwrap();
    assert_eq!(committed(&repo, "data/c0"), b"chunk zero");
    assert_eq!(committed(&repo, "data/c1"), b"chunk one");
    // The next session seals its own files.
    session.write_file("data/c2", b"chunk two").unwrap();
    assert_eq!(seal_all(&session.sealer()), 1);
}

#[test]
fn a_sealed_file_written_again_is_copied_and_its_object_never_changes() {
    let (_dir, repo, mut session) = session();
    let sealer = session.sealer();
    session.write_file("a", b"one").unwrap();
    assert_eq!(seal_all(&sealer), 1);

    // Appending opens the file for writing in place.
    let handle = session.open_write("a", false).unwrap();
    (&*handle.file).write_all(b" two").unwrap();
    session.release_write(&handle);
    assert_eq!(session.read_file("a").unwrap(), b"one two");
    assert_eq!(
        object_bytes(&repo, b"one").as_deref(),
        Some(&b"one"[..]),
        "the stored object keeps its bytes"
    );
    // Truncating and rewriting, too.
    assert_eq!(seal_all(&sealer), 1);
    session.truncate("a", 3).unwrap();
    assert_eq!(session.read_file("a").unwrap(), b"one");
    assert_eq!(
        object_bytes(&repo, b"one two").as_deref(),
        Some(&b"one two"[..])
    );

    session.commit("a").unwrap();
    assert_eq!(committed(&repo, "a"), b"one");
}

#[test]
fn a_file_opened_again_before_it_is_sealed_is_sealed_only_once_closed() {
    let (_dir, repo, mut session) = session();
    let sealer = session.sealer();
    session.write_file("a", b"first").unwrap();
    let handle = session.open_write("a", true).unwrap();
    assert_eq!(seal_all(&sealer), 0, "open for writing: not sealed");
    (&*handle.file).write_all(b"second").unwrap();
    session.release_write(&handle);
    assert_eq!(seal_all(&sealer), 1);
    assert_eq!(object_bytes(&repo, b"first"), None);
    assert_eq!(
        object_bytes(&repo, b"second").as_deref(),
        Some(&b"second"[..])
    );
    session.commit("a").unwrap();
    assert_eq!(committed(&repo, "a"), b"second");
}

#[test]
fn files_wait_while_open_or_closed_too_recently() {
    let (_dir, _repo, mut session) = session();
    let sealer = session.sealer();
    session.write_file("a", b"bytes").unwrap();
    let pass = sealer.seal_due(Duration::from_secs(3600), usize::MAX, &|_| false);
    assert_eq!((pass.sealed, pass.more), (0, true), "closed too recently");
    let pass = sealer.seal_due(Duration::ZERO, usize::MAX, &|_| true);
    assert_eq!((pass.sealed, pass.more), (0, true), "open for reading");
    assert_eq!(seal_all(&sealer), 1, "sealed once neither holds");
    assert_eq!(seal_all(&sealer), 0, "and only once");
}

#[test]
fn small_files_wait_a_third_of_the_delay_and_large_ones_all_of_it() {
    let (_dir, repo, mut session) = session();
    let sealer = session.sealer();
    let small = vec![1u8; 4 << 10];
    let large = vec![2u8; 1 << 20];
    // The large one closes first: a single queue in closing order would
    // hold the small one behind it.
    session.write_file("large", &large).unwrap();
    session.write_file("small", &small).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    // Closed for a second: past a third of 3 s, short of all of it.
    let pass = sealer.seal_due(Duration::from_secs(3), usize::MAX, &|_| false);
    assert_eq!((pass.sealed, pass.more), (1, true));
    assert!(object_bytes(&repo, &small).is_some(), "the small file");
    assert_eq!(object_bytes(&repo, &large), None, "the large one waits");
    assert_eq!(seal_all(&sealer), 1, "sealed once it is due");
    assert!(object_bytes(&repo, &large).is_some());
}

#[test]
fn a_file_renamed_after_it_closed_is_sealed_without_waiting() {
    let (_dir, repo, mut session) = session();
    let sealer = session.sealer();
    let hour = Duration::from_secs(3600);
    // zarr-python's pattern: write a temporary file, close it, rename it.
    session.write_file("c/0.partial", b"chunk zero").unwrap();
    session.write_file("c/1.partial", b"chunk one").unwrap();
    session.rename("c/0.partial", "c/0").unwrap();
    let pass = sealer.seal_due(hour, usize::MAX, &|_| false);
    assert_eq!((pass.sealed, pass.more), (1, true), "the renamed file only");
    assert!(object_bytes(&repo, b"chunk zero").is_some());
    assert_eq!(
        object_bytes(&repo, b"chunk one"),
        None,
        "waits for the delay"
    );

    // Renamed while still open for writing: it may be written on, so it
    // waits for the delay after it closes, as any other.
    let handle = session.create("c/2.partial", 0o644).unwrap();
    (&*handle.file).write_all(b"chunk two").unwrap();
    session.rename("c/2.partial", "c/2").unwrap();
    session.release_write(&handle);
    assert_eq!(sealer.seal_due(hour, usize::MAX, &|_| false).sealed, 0);

    // Renamed, then opened for writing again before a pass: not sealed.
    session.rename("c/1.partial", "c/1").unwrap();
    let handle = session.open_write("c/1", false).unwrap();
    assert_eq!(sealer.seal_due(hour, usize::MAX, &|_| false).sealed, 0);
    (&*handle.file).write_all(b"CHUNK").unwrap();
    session.release_write(&handle);

    // A sealed file renamed again is the same object.
    session.rename("c/0", "c/zero").unwrap();
    assert_eq!(sealer.seal_due(hour, usize::MAX, &|_| false).sealed, 0);
    assert_eq!(session.sealed_files(), 1);
    session.commit("three chunks").unwrap();
    assert_eq!(committed(&repo, "c/zero"), b"chunk zero");
    assert_eq!(committed(&repo, "c/1"), b"CHUNK one");
    assert_eq!(committed(&repo, "c/2"), b"chunk two");
}

#[test]
fn a_renamed_file_open_for_reading_waits_as_it_would_unrenamed() {
    let (_dir, repo, mut session) = session();
    let sealer = session.sealer();
    let delay = Duration::from_secs(3);
    session.write_file("c/0.partial", b"small chunk").unwrap();
    session.rename("c/0.partial", "c/0").unwrap();
    // Due at once, but a reader has it open: it goes back in the queue.
    let pass = sealer.seal_due(delay, usize::MAX, &|_| true);
    assert_eq!((pass.sealed, pass.more), (0, true), "open for reading");
    std::thread::sleep(Duration::from_millis(1100));
    // A small file waits a third of the delay, renamed or not.
    let pass = sealer.seal_due(delay, usize::MAX, &|_| false);
    assert_eq!((pass.sealed, pass.more), (1, false), "due a second later");
    assert!(object_bytes(&repo, b"small chunk").is_some());
}

#[test]
fn renamed_removed_and_discarded_files_behave_as_unsealed_ones() {
    let (_dir, repo, mut session) = session();
    let sealer = session.sealer();
    session.write_file("tmp.partial", b"renamed").unwrap();
    session.write_file("gone", b"removed").unwrap();
    assert_eq!(seal_all(&sealer), 2);
    session.rename("tmp.partial", "final").unwrap();
    session.unlink("gone").unwrap();
    session.commit("renamed").unwrap();
    assert_eq!(committed(&repo, "final"), b"renamed");
    let tip = repo.branch_tip(DEFAULT_BRANCH).unwrap().unwrap().commit;
    let tree = repo.commit_record(tip).unwrap().tree;
    assert!(repo.trees().lookup(tree, "gone").unwrap().is_none());

    // Discarding drops sealed files like any other change.
    session.write_file("final", b"rewritten").unwrap();
    assert_eq!(seal_all(&session.sealer()), 1);
    session.discard().unwrap();
    assert_eq!(session.read_file("final").unwrap(), b"renamed");
    assert_eq!(session.sealed_files(), 0);
    assert!(!session.has_changes().unwrap());
}

#[test]
fn a_resumed_session_commits_files_sealed_before_it_stopped() {
    let (_dir, repo, mut session) = session();
    let sealer = session.sealer();
    session
        .write_file("a", b"sealed, then the daemon stopped")
        .unwrap();
    assert_eq!(seal_all(&sealer), 1);
    let id = session.id().to_owned();
    drop(session);

    let mut resumed = Session::resume(repo.clone(), &id, None).unwrap();
    assert_eq!(resumed.sealed_files(), 0, "sealing is not remembered");
    resumed.commit("resumed").unwrap();
    assert_eq!(committed(&repo, "a"), b"sealed, then the daemon stopped");
}

/// How many names the store's object for `bytes` has.
fn object_links(repo: &Repo, bytes: &[u8]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(repo.objects().blob_path(ObjectId::of(bytes)))
        .unwrap()
        .nlink()
}

/// A session whose first commit stored `bytes` as "a", once that
/// session's files are gone: the object has its store name only.
fn session_after_committing(bytes: &[u8]) -> (tempfile::TempDir, Arc<Repo>, Session) {
    let (dir, repo, mut session) = session();
    session.write_file("a", bytes).unwrap();
    session.commit("a").unwrap();
    settle(&repo);
    assert_eq!(object_links(&repo, bytes), 1);
    (dir, repo, session)
}

#[test]
fn a_file_with_bytes_stored_already_becomes_that_object_and_keeps_its_time() {
    let (_dir, repo, mut session) = session_after_committing(b"the same chunk");

    // The same bytes again under another name, as a rerun writes them.
    let sealer = session.sealer();
    session.write_file("b", b"the same chunk").unwrap();
    let written_at = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    session.set_mtime("b", written_at).unwrap();
    assert_eq!(seal_all(&sealer), 1);
    assert_eq!(
        session.sealed_files(),
        1,
        "sealed without being stored again"
    );
    assert_eq!(
        object_links(&repo, b"the same chunk"),
        2,
        "the staged file is a name of the stored object now"
    );
    assert_eq!(session.stat("b").unwrap().unwrap().mtime, written_at);
    assert_eq!(session.read_file("b").unwrap(), b"the same chunk");

    // Written again, it is copied: the committed object never changes.
    let handle = session.open_write("b", false).unwrap();
    (&*handle.file).write_all(b", and more").unwrap();
    session.release_write(&handle);
    assert_eq!(session.read_file("b").unwrap(), b"the same chunk, and more");
    assert_eq!(
        object_bytes(&repo, b"the same chunk").as_deref(),
        Some(&b"the same chunk"[..])
    );
    session.write_file("c", b"the same chunk").unwrap();
    assert_eq!(seal_all(&sealer), 2, "b's new bytes, and c");
    session.commit("b and c").unwrap();
    assert_eq!(committed(&repo, "a"), b"the same chunk");
    assert_eq!(committed(&repo, "b"), b"the same chunk, and more");
    assert_eq!(committed(&repo, "c"), b"the same chunk");
}

#[test]
fn while_a_gc_runs_a_file_with_stored_bytes_is_left_to_the_commit() {
    let (_dir, repo, mut session) = session_after_committing(b"stored once");

    let sealer = session.sealer();
    session.write_file("b", b"stored once").unwrap();
    // gc holds the write lock exclusively for its whole run.
    let gc = repo.storage().lock("write.lock", true).unwrap();
    assert_eq!(seal_all(&sealer), 0);
    assert_eq!(session.sealed_files(), 0);
    assert_eq!(
        object_links(&repo, b"stored once"),
        1,
        "no second link made"
    );
    drop(gc);
    session.commit("b").unwrap();
    assert_eq!(committed(&repo, "b"), b"stored once");
}
