//! The seed tutorial's three examples at the library level: two sessions
//! (User A and User B) on one repository.

use std::sync::Arc;

use zarrfs::repo::{CommitError, Repo};
use zarrfs::session::{Session, SessionError, StatusKind};

mod session_util;

use session_util::{changed, remove_tree, user};

fn repo() -> (tempfile::TempDir, Arc<Repo>) {
    let dir = tempfile::tempdir().unwrap();
    let repo = Arc::new(Repo::init(&dir.path().join("repo")).unwrap());
    (dir, repo)
}

/// A float64 chunk of 2x2 values, little-endian, as raw bytes.
fn chunk(values: [f64; 4]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn read_chunk(session: &Session, path: &str) -> [f64; 4] {
    let bytes = session.read_file(path).unwrap();
    let mut out = [0.0; 4];
    for (i, v) in out.iter_mut().enumerate() {
        *v = f64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
    }
    out
}

#[test]
fn the_seed_tutorial_at_the_library_level() {
    let (_dir, repo) = repo();
    let mut a = user(&repo, "a");
    let mut b = user(&repo, "b");
    assert_ne!(a.id(), b.id(), "two sessions");
    assert!(changed(&mut a).is_empty());

    // User A adds an attribute to the root group and commits.
    a.write_file("meta/root.group.json", br#"{"attributes": {"foo": "bar"}}"#)
        .unwrap();
    assert_eq!(changed(&mut a), ["meta/root.group.json"]);
    let old_session = a.id().to_owned();
    let c1 = a.commit("User A added metadata").unwrap();
    assert_ne!(a.id(), old_session, "a commit starts a new session");
    assert!(changed(&mut a).is_empty());

    // User B is behind until it checks out.
    assert!(b.stat("meta/root.group.json").unwrap().is_none());
    assert_eq!(b.checkout("").unwrap(), c1);
    assert_eq!(
        b.read_file("meta/root.group.json").unwrap(),
        br#"{"attributes": {"foo": "bar"}}"#
    );

    // Example 1: metadata by A, an array by B: no conflict, B rebases.
    a.write_file(
        "meta/root.group.json",
        br#"{"attributes": {"foo": "bar", "a new key": "a new val"}}"#,
    )
    .unwrap();
    let c2 = a.commit("User A made a metadata update").unwrap();
    b.write_file("meta/root/toy_data.group.json", br#"{"attributes": {}}"#)
        .unwrap();
    b.write_file(
        "meta/root/toy_data/ones.array.json",
        br#"{"shape": [3, 3], "chunk_grid": {"chunk_shape": [2, 2]}}"#,
    )
    .unwrap();
    for key in ["c0/0", "c0/1", "c1/0", "c1/1"] {
        b.write_file(&format!("data/root/toy_data/ones/{key}"), &chunk([1.0; 4]))
            .unwrap();
    }
    let mut status = changed(&mut b);
    status.sort();
    assert_eq!(
        status,
        [
            "data/root/toy_data/ones/c0/0",
            "data/root/toy_data/ones/c0/1",
            "data/root/toy_data/ones/c1/0",
            "data/root/toy_data/ones/c1/1",
            "meta/root/toy_data.group.json",
            "meta/root/toy_data/ones.array.json",
        ]
    );
    let c3 = b.commit("User B wrote chunk data to repo").unwrap();
    let c3_record = repo.commit_record(c3).unwrap();
    assert_eq!(c3_record.parents, [c2], "B's commit was rebased onto A's");
    assert!(
        String::from_utf8(b.read_file("meta/root.group.json").unwrap())
            .unwrap()
            .contains("a new key"),
        "after committing, B sees A's update"
    );

    // Example 2: both change the toy_data group's attributes: conflict.
    a.checkout("").unwrap();
    b.checkout("").unwrap();
    a.write_file(
        "meta/root/toy_data.group.json",
        br#"{"attributes": {"toy_key": "toy_val"}}"#,
    )
    .unwrap();
    let c4 = a.commit("User A modified toy_data metadata").unwrap();
    b.write_file(
        "meta/root/toy_data.group.json",
        br#"{"attributes": {"another toy key": "another toy val"}}"#,
    )
    .unwrap();
    let session_b = b.id().to_owned();
    let base_b = b.base();
    let err = b.commit("User B added attr to metadata").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Conflicting paths found for rebase {base_b}->main, including ['meta/root/toy_data.group.json']"
        )
    );
    assert_eq!(err.errno(), libc::EBUSY);
    assert_eq!(b.id(), session_b, "the session is kept");
    assert_eq!(b.base(), base_b);
    assert_eq!(
        changed(&mut b),
        ["meta/root/toy_data.group.json"],
        "nothing lost"
    );
    assert!(
        String::from_utf8(b.read_file("meta/root/toy_data.group.json").unwrap())
            .unwrap()
            .contains("another toy key")
    );
    assert_eq!(repo.branch_tip("main").unwrap().unwrap().commit, c4);
    b.discard().unwrap();

    // Example 3: different chunks of one array: both land.
    a.checkout("").unwrap();
    b.checkout("").unwrap();
    a.write_file(
        "data/root/toy_data/ones/c0/0",
        &chunk([10.0, 10.0, 1.0, 1.0]),
    )
    .unwrap();
    b.write_file("data/root/toy_data/ones/c1/1", &chunk([3.0, 1.0, 1.0, 1.0]))
        .unwrap();
    a.commit("User A wrote 10s").unwrap();
    b.commit("User B wrote a 3").unwrap();
    assert_eq!(
        read_chunk(&b, "data/root/toy_data/ones/c0/0"),
        [10.0, 10.0, 1.0, 1.0]
    );
    assert_eq!(
        read_chunk(&b, "data/root/toy_data/ones/c1/1"),
        [3.0, 1.0, 1.0, 1.0]
    );
    assert_eq!(
        read_chunk(&a, "data/root/toy_data/ones/c1/1"),
        [1.0; 4],
        "A is behind"
    );
    a.checkout("").unwrap();
    assert_eq!(
        read_chunk(&a, "data/root/toy_data/ones/c1/1"),
        [3.0, 1.0, 1.0, 1.0]
    );

    let log: Vec<String> = repo
        .log(repo.branch_tip("main").unwrap().unwrap().commit)
        .map(|c| c.unwrap().1.message.clone())
        .collect();
    assert_eq!(
        log,
        [
            "User B wrote a 3",
            "User A wrote 10s",
            "User A modified toy_data metadata",
            "User B wrote chunk data to repo",
            "User A made a metadata update",
            "User A added metadata",
            "Repository created"
        ]
    );
    assert!(zarrfs::repo::fsck::fsck(&repo).unwrap().is_clean());
}

#[test]
fn identical_bytes_temporary_names_and_invalid_metadata() {
    let (_dir, repo) = repo();
    let mut a = user(&repo, "a");
    a.write_file("g/zarr.json", br#"{"zarr_format": 3}"#)
        .unwrap();
    a.commit("group").unwrap();

    // Rewriting identical bytes through a temp file and rename is no change.
    a.write_file("g/zarr.json.tmp", br#"{"zarr_format": 3}"#)
        .unwrap();
    a.rename("g/zarr.json.tmp", "g/zarr.json").unwrap();
    assert!(changed(&mut a).is_empty());
    assert!(matches!(
        a.commit("nothing"),
        Err(SessionError::Commit(CommitError::NothingToCommit))
    ));

    // A file created and removed leaves no trace.
    a.write_file("g/scratch", b"x").unwrap();
    a.unlink("g/scratch").unwrap();
    assert!(changed(&mut a).is_empty());

    // Invalid metadata is refused with the path, and kept.
    a.write_file("g/zarr.json", b"{broken").unwrap();
    let err = a.commit("bad").unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
    assert!(err.to_string().contains("g/zarr.json"), "{err}");
    assert_eq!(a.read_file("g/zarr.json").unwrap(), b"{broken");
    let status = a.status().unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].kind, StatusKind::Modified);
    assert!(status[0].metadata);
}

#[test]
fn directories_removed_and_replaced_are_changes_and_conflict_with_changes_below() {
    let (_dir, repo) = repo();
    let mut a = user(&repo, "a");
    a.write_file("arr/c/0", b"0").unwrap();
    a.write_file("arr/c/1", b"1").unwrap();
    a.mkdir("empty").unwrap();
    a.commit("array").unwrap();
    assert!(
        a.stat("empty").unwrap().is_some(),
        "an empty directory survives a commit"
    );

    let mut b = user(&repo, "b");
    // A removes the array's chunks directory.
    a.unlink("arr/c/0").unwrap();
    a.unlink("arr/c/1").unwrap();
    a.rmdir("arr/c").unwrap();
    let status = a.status().unwrap();
    let paths: Vec<(&str, StatusKind)> = status.iter().map(|e| (e.path.as_str(), e.kind)).collect();
    // One change covers the directory and everything that was below it.
    assert_eq!(paths, [("arr/c", StatusKind::Deleted)]);
    assert!(status[0].is_dir);
    a.commit("remove chunks").unwrap();
    // B changes a chunk below it: conflict.
    b.write_file("arr/c/2", b"2").unwrap();
    let err = b.commit("new chunk").unwrap_err();
    assert!(err.to_string().contains("['arr/c/2']"), "{err}");
}

/// Directories are compared with the base by what they hold, as files are
/// by their bytes (and as git compares trees): one removed and made again,
/// or renamed away and back, changes only what differs in it, and so
/// conflicts only with changes to those paths.
#[test]
fn a_directory_put_back_changes_only_what_differs_in_it() {
    let (_dir, repo) = repo();
    let mut a = user(&repo, "a");
    let array = [
        ("arr/zarr.json", &b"{}"[..]),
        ("arr/c/0", b"0"),
        ("arr/c/1", b"1"),
    ];
    for (path, bytes) in array {
        a.write_file(path, bytes).unwrap();
    }
    a.write_file("other/c/0", b"0").unwrap();
    a.write_file("f", b"a file").unwrap();
    a.commit("array").unwrap();
    let nothing = |session: &mut Session| {
        assert!(changed(session).is_empty(), "{:?}", session.status());
        assert!(matches!(
            session.commit("nothing"),
            Err(SessionError::Commit(CommitError::NothingToCommit))
        ));
    };

    // Renamed away and back.
    a.rename("arr", "moved").unwrap();
    a.rename("moved", "arr").unwrap();
    nothing(&mut a);

    // Removed and written again with the same bytes (as a program that
    // overwrites an array does).
    remove_tree(&mut a, "arr").unwrap();
    a.mkdir("arr").unwrap();
    a.mkdir("arr/c").unwrap();
    for (path, bytes) in array {
        a.write_file(path, bytes).unwrap();
    }
    nothing(&mut a);

    // A directory renamed over one emptied: what it lacks is deleted.
    remove_tree(&mut a, "arr").unwrap();
    a.mkdir("arr").unwrap();
    a.rename("other", "arr").unwrap();
    let status: Vec<(String, StatusKind)> = a
        .status()
        .unwrap()
        .into_iter()
        .map(|e| (e.path, e.kind))
        .collect();
    let deleted = |p: &str| (p.to_owned(), StatusKind::Deleted);
    assert_eq!(
        status,
        [
            deleted("arr/c/1"),
            deleted("arr/zarr.json"),
            deleted("other")
        ]
    );
    a.discard().unwrap();

    // Written again with one chunk changed, while B adds another chunk:
    // no overlap, so A's commit rebases over B's.
    let mut b = user(&repo, "b");
    remove_tree(&mut a, "arr").unwrap();
    a.mkdir("arr").unwrap();
    a.mkdir("arr/c").unwrap();
    for (path, bytes) in array {
        let bytes = if path == "arr/c/1" { b"one" } else { bytes };
        a.write_file(path, bytes).unwrap();
    }
    let status = a.status().unwrap();
    assert_eq!(changed(&mut a), ["arr/c/1"]);
    assert_eq!(status[0].kind, StatusKind::Modified);
    b.write_file("arr/c/2", b"2").unwrap();
    b.commit("chunk 2").unwrap();
    a.commit("chunk 1 again").unwrap();
    assert_eq!(a.read_file("arr/c/1").unwrap(), b"one");
    assert_eq!(a.read_file("arr/c/2").unwrap(), b"2");
    assert_eq!(a.read_file("arr/c/0").unwrap(), b"0");

    // A directory made where the base has a file replaces it.
    a.unlink("f").unwrap();
    a.mkdir("f").unwrap();
    a.write_file("f/x", b"x").unwrap();
    let status: Vec<(String, StatusKind, bool)> = a
        .status()
        .unwrap()
        .into_iter()
        .map(|e| (e.path, e.kind, e.is_dir))
        .collect();
    assert_eq!(
        status,
        [
            ("f".to_owned(), StatusKind::Deleted, false),
            ("f/x".to_owned(), StatusKind::Added, false)
        ]
    );
}

#[test]
fn renaming_a_directory_moves_its_subtree_and_checkout_never_drops_changes() {
    let (_dir, repo) = repo();
    let mut a = user(&repo, "a");
    a.write_file("arr/c/0", b"0").unwrap();
    a.write_file("arr/zarr.json", b"{}").unwrap();
    a.commit("array").unwrap();
    a.write_file("arr/c/1", b"1").unwrap();
    a.rename("arr", "moved").unwrap();
    assert!(a.stat("arr").unwrap().is_none());
    assert_eq!(a.read_file("moved/c/0").unwrap(), b"0");
    assert_eq!(a.read_file("moved/c/1").unwrap(), b"1");
    let mut paths: Vec<String> = a.status().unwrap().into_iter().map(|e| e.path).collect();
    paths.sort();
    assert_eq!(paths, ["arr", "moved/c/0", "moved/c/1", "moved/zarr.json"]);

    // The branch has not moved, so the checkout target is the base: still
    // refused, and nothing is lost.
    let err = a.checkout("").unwrap_err();
    assert_eq!(err.errno(), libc::EBUSY);
    assert_eq!(a.read_file("moved/c/1").unwrap(), b"1");
}

#[test]
fn a_file_open_for_writing_across_a_commit_goes_on_in_the_new_session() {
    use std::os::unix::fs::FileExt;
    let (_dir, repo) = repo();
    let mut a = user(&repo, "a");
    let handle = a.create("log.txt", 0o644).unwrap();
    handle.file.write_all_at(b"first", 0).unwrap();
    let c1 = a.commit("first").unwrap();
    assert_eq!(a.take_carried().len(), 1);

    // The descriptor keeps writing (as the kernel does with passthrough):
    // the writes land in the new session's view, not in the commit.
    handle.file.write_all_at(b"FIRST, second", 0).unwrap();
    assert_eq!(a.read_file("log.txt").unwrap(), b"FIRST, second");
    let status = a.status().unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].kind, StatusKind::Modified);
    let tree = repo.commit_record(c1).unwrap().tree;
    let blob = repo.trees().lookup(tree, "log.txt").unwrap().unwrap().id;
    assert_eq!(
        repo.objects().get(blob).unwrap(),
        b"first",
        "the commit is intact"
    );

    a.commit("second").unwrap();
    let reader = user(&repo, "r");
    assert_eq!(reader.read_file("log.txt").unwrap(), b"FIRST, second");
    assert!(zarrfs::repo::fsck::fsck(&repo).unwrap().is_clean());
}
