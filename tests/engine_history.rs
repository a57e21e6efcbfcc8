//! Branches, tags, log and diff; and costs that grow with the change, not
//! with the repository (counted in objects written, not timed).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use zarrfs::repo::{Change, CommitRequest, DEFAULT_BRANCH, DiffKind, RefError, Repo, WriteBatch};
use zarrfs::session::{Session, SessionOptions};
use zarrfs::zarr::change_marker;

fn repo() -> (tempfile::TempDir, Arc<Repo>) {
    let dir = tempfile::tempdir().unwrap();
    let repo = Arc::new(Repo::init(&dir.path().join("repo")).unwrap());
    (dir, repo)
}

#[test]
fn branches_tags_log_and_diff() {
    let (_dir, repo) = repo();
    let mut session = Session::start(repo.clone(), SessionOptions::new(DEFAULT_BRANCH)).unwrap();
    session.write_file("meta/root.group.json", b"{}").unwrap();
    session.write_file("data/root/a/c0/0", b"1").unwrap();
    let c1 = session.commit("first").unwrap();

    repo.refs().create_branch("experiment", c1).unwrap();
    repo.refs().create_tag("v1", c1).unwrap();
    assert!(matches!(
        repo.refs().create_branch("experiment", c1),
        Err(RefError::Exists(_))
    ));
    assert!(matches!(
        repo.refs().create_tag("v1", c1),
        Err(RefError::Exists(_))
    ));

    session.write_file("data/root/a/c0/0", b"2").unwrap();
    session.write_file("data/root/a/c0/1", b"3").unwrap();
    session.unlink("meta/root.group.json").unwrap();
    let c2 = session.commit("second").unwrap();

    // The tag did not move; the branch did.
    assert_eq!(repo.resolve("v1").unwrap(), c1);
    assert_eq!(repo.resolve("main").unwrap(), c2);
    assert_eq!(repo.resolve("experiment").unwrap(), c1);
    assert_eq!(
        repo.resolve(&c2.to_hex()[..10]).unwrap(),
        c2,
        "a unique prefix resolves"
    );
    assert!(repo.resolve("nope").is_err());

    let branches: Vec<String> = repo
        .refs()
        .branches()
        .unwrap()
        .into_iter()
        .map(|b| b.0)
        .collect();
    assert_eq!(branches, ["experiment", "main"]);
    repo.refs().delete_branch("experiment").unwrap();
    let branches: Vec<String> = repo
        .refs()
        .branches()
        .unwrap()
        .into_iter()
        .map(|b| b.0)
        .collect();
    assert_eq!(branches, ["main"]);
    assert!(
        repo.commit_record(c1).is_ok(),
        "deleting a branch keeps its commits"
    );

    let log: Vec<String> = repo.log(c2).map(|c| c.unwrap().1.message.clone()).collect();
    assert_eq!(log, ["second", "first", "Repository created"]);

    let diff: Vec<String> = repo
        .diff(c1, c2)
        .unwrap()
        .into_iter()
        .map(|(path, kind)| format!("{} {} {path}", kind.letter(), change_marker(&path)))
        .collect();
    assert_eq!(
        diff,
        [
            "M [C] data/root/a/c0/0",
            "A [C] data/root/a/c0/1",
            "D [M] meta/root.group.json"
        ]
    );
    assert_eq!(repo.diff(c2, c2).unwrap(), vec![]);
    assert_eq!(
        repo.diff(c2, c1).unwrap()[1],
        ("data/root/a/c0/1".to_owned(), DiffKind::Deleted)
    );
}

/// Files in the repository's object and commit directories.
fn stored_files(repo: &Repo) -> usize {
    ["objects", "commits"]
        .iter()
        .flat_map(|d| std::fs::read_dir(repo.path().join(d)).unwrap())
        .map(|fanout| std::fs::read_dir(fanout.unwrap().path()).unwrap().count())
        .sum()
}

#[test]
fn committing_one_file_in_a_repository_of_100000_writes_a_few_small_objects() {
    let (_dir, repo) = repo();
    let mut batch = WriteBatch::default();
    let blob = repo.objects().put(b"chunk", &mut batch).unwrap();
    // 100,000 chunks: one directory of 50,000 and 50 of 1,000.
    let changes: Vec<(String, Change)> = (0..50_000)
        .map(|i| format!("flat/{i}"))
        .chain((0..50_000).map(|i| format!("nested/{}/{}", i / 1000, i % 1000)))
        .map(|path| {
            (
                path,
                Change::File {
                    id: blob,
                    size: 5,
                    mode: 0o644,
                },
            )
        })
        .collect();
    let base = repo.branch_tip(DEFAULT_BRANCH).unwrap().unwrap().commit;
    let changes = repo.put_change_list(&changes, &mut batch).unwrap();
    repo.commit(CommitRequest {
        branch: DEFAULT_BRANCH,
        base,
        changes,
        applied: None,
        author: "bulk",
        message: "100,000 chunks",
        session: "bulk",
        written: batch,
    })
    .unwrap();

    for path in ["flat/31337", "nested/42/7"] {
        let mut session =
            Session::start(repo.clone(), SessionOptions::new(DEFAULT_BRANCH)).unwrap();
        session.write_file(path, b"new").unwrap();
        let before = stored_files(&repo);
        session.commit("one chunk").unwrap();
        let written = stored_files(&repo) - before;
        // The blob, the leaf and inner node of the big directory (or the
        // small directory), the directories above, the change list and the
        // commit record: a handful, whatever the repository's size.
        assert!(written <= 8, "committing {path} wrote {written} objects");
        let reader = Session::start(repo.clone(), SessionOptions::new(DEFAULT_BRANCH)).unwrap();
        assert_eq!(reader.read_file(path).unwrap(), b"new");
        assert_eq!(reader.list("flat").unwrap().len(), 50_000);
    }
}

#[test]
fn fsck_names_each_missing_or_damaged_thing() {
    let (_dir, repo) = repo();
    let mut session = Session::start(repo.clone(), SessionOptions::new(DEFAULT_BRANCH)).unwrap();
    session
        .write_file("a/zarr.json", br#"{"zarr_format": 3}"#)
        .unwrap();
    session.write_file("a/c/0", b"chunk zero").unwrap();
    session.write_file("b/c/1", b"chunk one").unwrap();
    let commit = session.commit("data").unwrap();
    assert!(zarrfs::repo::fsck::fsck(&repo).unwrap().is_clean());

    let tree = repo.commit_record(commit).unwrap().tree;
    let chunk = repo.trees().lookup(tree, "a/c/0").unwrap().unwrap().id;
    let other = repo.trees().lookup(tree, "b/c/1").unwrap().unwrap().id;
    std::fs::remove_file(repo.objects().blob_path(chunk)).unwrap();
    let damaged = repo.objects().blob_path(other);
    let mut perms = std::fs::metadata(&damaged).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&damaged, perms).unwrap();
    std::fs::write(&damaged, b"chunk 0ne").unwrap();

    let report = zarrfs::repo::fsck::fsck(&repo).unwrap();
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("file 'a/c/0'") && p.contains("missing"))
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("file 'b/c/1'") && p.contains("do not hash"))
    );

    // A ref naming a commit that does not exist.
    std::fs::remove_file(repo.path().join(commit.key_in("commits"))).unwrap();
    let report = zarrfs::repo::fsck::fsck(&repo).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains(&format!("names commit {commit}, which is missing"))),
        "{:?}",
        report.problems
    );
}

#[test]
fn a_commit_leaves_only_the_new_session_and_removes_the_old_ones_files() {
    let (_dir, repo) = repo();
    let mut session = Session::start(repo.clone(), SessionOptions::new(DEFAULT_BRANCH)).unwrap();
    let old = session.id().to_owned();
    for i in 0..300 {
        session.write_file(&format!("f{i}"), b"chunk").unwrap();
    }
    session.commit("300 files").unwrap();
    let sessions: Vec<String> = std::fs::read_dir(repo.sessions_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        sessions,
        vec![session.id().to_owned()],
        "{old} is gone at once"
    );
    // Its staged files are removed in the background.
    let tmp = repo.path().join("tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_dir(&tmp).unwrap().next().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the old session's files are still in {}",
            tmp.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        repo.commit_changes(repo.resolve("main").unwrap())
            .unwrap()
            .len(),
        300
    );
}

/// The inode numbers of a session's staged files.
fn staged_inodes(repo: &Repo, session: &Session) -> HashSet<u64> {
    let staged = repo.sessions_dir().join(session.id()).join("staged");
    std::fs::read_dir(staged)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().ino())
        .collect()
}

/// Staged files made ahead and not used move to the next session: ext4
/// creates files slowly for minutes after inodes are freed, so deleting
/// them cost the next commits (ca82c83).
#[test]
fn a_commit_hands_the_staged_files_made_ahead_to_the_next_session() {
    let (_dir, repo) = repo();
    let mut session = Session::start(repo.clone(), SessionOptions::new(DEFAULT_BRANCH)).unwrap();
    for i in 0..20 {
        session.write_file(&format!("f{i}"), b"chunk").unwrap();
    }
    // The pool makes files ahead on a thread of its own.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while staged_inodes(&repo, &session).len() <= 20 {
        assert!(std::time::Instant::now() < deadline, "no file made ahead");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let old = staged_inodes(&repo, &session);
    session.commit("twenty files").unwrap();
    // The new session makes none until it takes one, so what its staged
    // directory holds came from the old one. (The old pool may still
    // have made some after `old` was read, so not all need be in it.)
    let new = staged_inodes(&repo, &session);
    assert!(
        !new.is_disjoint(&old),
        "the files made ahead moved over: {new:?} of {old:?}"
    );
}

#[test]
fn a_commit_takes_changes_not_yet_flushed_and_those_of_a_flush_under_way() {
    let (_dir, repo) = repo();
    let mut session = Session::start(repo.clone(), SessionOptions::new(DEFAULT_BRANCH)).unwrap();
    session.write_file("flushed", b"on disk").unwrap();
    session.flush().unwrap();
    // A background flush has taken this one and not written it yet...
    session.write_file("being-flushed", b"in flight").unwrap();
    let job = session.begin_flush().expect("a change to flush");
    // ...and this one waits for the next.
    session.write_file("pending", b"in memory").unwrap();
    session.unlink("flushed").unwrap();

    session.commit("from every layer of the journal").unwrap();
    let tip = repo.resolve("main").unwrap();
    let paths: Vec<String> = repo
        .commit_changes(tip)
        .unwrap()
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    assert_eq!(paths, ["being-flushed", "pending"]);
    assert_eq!(session.read_file("pending").unwrap(), b"in memory");
    // The flush that was under way finishes into the old journal; the new
    // session is empty.
    let written = job.write();
    session.finish_flush(job, written).unwrap();
    assert!(session.status().unwrap().is_empty());
}
