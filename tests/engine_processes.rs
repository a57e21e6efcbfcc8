//! Many OS processes committing to one repository at once, and processes
//! killed with SIGKILL in the middle of commits.
//!
//! The workers are this test binary run again as a child process with
//! `ZARRFS_TEST_WORKER` set (see `child_process_entry`), so that they are
//! real, separate processes that share nothing but the repository.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use zarrfs::repo::{CommitError, CommitId, DEFAULT_BRANCH, Repo, fsck::fsck};
use zarrfs::session::{Session, SessionError, SessionOptions};

mod session_util;

use session_util::changed;

const WORKER_ENV: &str = "ZARRFS_TEST_WORKER";

/// Not a test of its own: the entry point of the child processes that the
/// tests below start. Without `ZARRFS_TEST_WORKER` it does nothing.
#[test]
fn child_process_entry() {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        return;
    };
    let args: Vec<&str> = spec.split(' ').collect();
    let repo = Arc::new(Repo::open(Path::new(args[1])).unwrap());
    let worker: usize = args[2].parse().unwrap();
    match args[0] {
        "own-paths" => own_paths_worker(repo, worker, args[3].parse().unwrap()),
        "same-path" => same_path_worker(repo, worker, args[3].parse().unwrap()),
        "commit-forever" => commit_forever_worker(repo, worker),
        "fsync-and-wait" => fsync_and_wait_worker(repo),
        other => panic!("unknown worker mode {other}"),
    }
}

fn start(repo: &Arc<Repo>, worker: usize) -> Session {
    let mut options = SessionOptions::new(DEFAULT_BRANCH);
    options.author = format!("worker {worker} <w{worker}@example.org>");
    Session::start(repo.clone(), options).unwrap()
}

/// Commit `commits` times, each time changing files that only this worker
/// touches, and report each commit id.
fn own_paths_worker(repo: Arc<Repo>, worker: usize, commits: usize) {
    let mut session = start(&repo, worker);
    for i in 0..commits {
        session
            .write_file(
                &format!("w{worker}/f{}", i % 3),
                format!("w{worker} commit {i}").as_bytes(),
            )
            .unwrap();
        session
            .write_file(&format!("w{worker}/last"), i.to_string().as_bytes())
            .unwrap();
        let id = session
            .commit(&format!("worker {worker} commit {i}"))
            .unwrap();
        println!("committed {id}");
    }
}

/// Try `attempts` times to change one shared path; report each outcome.
fn same_path_worker(repo: Arc<Repo>, worker: usize, attempts: usize) {
    let mut session = start(&repo, worker);
    for i in 0..attempts {
        session.checkout("").unwrap();
        let value = format!("worker {worker} attempt {i}");
        session
            .write_file("shared/value", value.as_bytes())
            .unwrap();
        // Give the others a chance to land in between.
        std::thread::sleep(Duration::from_millis(worker as u64 % 3));
        match session.commit(&value) {
            Ok(id) => println!("landed {id} {value}"),
            Err(SessionError::Commit(CommitError::Conflict { message, .. })) => {
                println!("conflict {message}");
                session.discard().unwrap();
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}

/// Commit forever, reporting each commit as soon as it is made, until
/// killed.
fn commit_forever_worker(repo: Arc<Repo>, worker: usize) {
    let mut session = start(&repo, worker);
    for i in 0.. {
        for f in 0..(i % 7 + 1) {
            session
                .write_file(
                    &format!("data/c{}/{}", i % 5, f),
                    format!("{i}:{f}").repeat(100).as_bytes(),
                )
                .unwrap();
        }
        if i % 4 == 3 {
            let _ = session.unlink(&format!("data/c{}/0", (i + 1) % 5));
        }
        match session.commit(&format!("commit {i}")) {
            Ok(id) => println!("committed {id}"),
            Err(SessionError::Commit(CommitError::NothingToCommit)) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
}

/// Write, fsync, say so, and wait to be killed.
fn fsync_and_wait_worker(repo: Arc<Repo>) {
    let mut session = start(&repo, 0);
    session
        .write_file("arr/zarr.json", br#"{"zarr_format": 3}"#)
        .unwrap();
    session
        .write_file("arr/c/0/0", b"chunk bytes that were fsynced")
        .unwrap();
    session.fsync("arr/c/0/0").unwrap();
    println!("fsynced {}", session.id());
    std::thread::sleep(Duration::from_secs(3600));
}

fn spawn_worker(spec: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WORKER_ENV, spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// What a worker reported after `prefix` on each line. The prefix may
/// share a line with the test harness's own output.
fn reported(output: &[u8], prefix: &str) -> Vec<String> {
    String::from_utf8_lossy(output)
        .lines()
        .filter_map(|l| report_in(l, prefix))
        .collect()
}

fn report_in(line: &str, prefix: &str) -> Option<String> {
    line.split_once(prefix).map(|(_, rest)| rest.to_owned())
}

fn new_repo() -> (tempfile::TempDir, Arc<Repo>) {
    let dir = tempfile::tempdir().unwrap();
    let repo = Arc::new(Repo::init(&dir.path().join("repo")).unwrap());
    (dir, repo)
}

fn history(repo: &Repo) -> Vec<(CommitId, Arc<zarrfs::repo::Commit>)> {
    let tip = repo.branch_tip(DEFAULT_BRANCH).unwrap().unwrap().commit;
    repo.log(tip).map(Result::unwrap).collect()
}

#[test]
fn eight_processes_committing_their_own_paths_all_land_in_a_linear_history() {
    let (_dir, repo) = new_repo();
    let workers: Vec<Child> = (0..8)
        .map(|w| spawn_worker(&format!("own-paths {} {w} 25", repo.path().display())))
        .collect();
    let mut made = BTreeSet::new();
    for child in workers {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "a worker failed");
        made.extend(reported(&output.stdout, "committed "));
    }
    assert_eq!(made.len(), 200);

    let log = history(&repo);
    assert_eq!(log.len(), 201, "200 commits and the first one");
    let in_log: BTreeSet<String> = log.iter().map(|(id, _)| id.to_hex()).collect();
    assert!(
        made.is_subset(&in_log),
        "every reported commit is on the branch"
    );
    for pair in log.windows(2) {
        assert_eq!(
            pair[0].1.parents,
            [pair[1].0],
            "linear: one parent, the next older commit"
        );
        assert_eq!(pair[0].1.height, pair[1].1.height + 1);
    }

    let reader = Session::start(repo.clone(), SessionOptions::new(DEFAULT_BRANCH)).unwrap();
    for w in 0..8 {
        assert_eq!(reader.read_file(&format!("w{w}/last")).unwrap(), b"24");
        for f in 0..3 {
            let last = (0..25).filter(|i| i % 3 == f).max().unwrap();
            assert_eq!(
                reader.read_file(&format!("w{w}/f{f}")).unwrap(),
                format!("w{w} commit {last}").as_bytes()
            );
        }
    }
    assert!(fsck(&repo).unwrap().is_clean());
}

#[test]
fn eight_processes_changing_one_path_either_land_or_get_the_conflict() {
    let (_dir, repo) = new_repo();
    let attempts = 10;
    let workers: Vec<Child> = (0..8)
        .map(|w| {
            spawn_worker(&format!(
                "same-path {} {w} {attempts}",
                repo.path().display()
            ))
        })
        .collect();
    let mut landed: HashMap<String, String> = HashMap::new();
    let mut conflicts = 0;
    for child in workers {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "a worker failed");
        for line in reported(&output.stdout, "landed ") {
            let (id, value) = line.split_once(' ').unwrap();
            landed.insert(id.to_owned(), value.to_owned());
        }
        for message in reported(&output.stdout, "conflict ") {
            assert!(
                message.starts_with("Conflicting paths found for rebase ")
                    && message.ends_with("->main, including ['shared/value']"),
                "{message}"
            );
            conflicts += 1;
        }
    }
    assert_eq!(
        landed.len() + conflicts,
        8 * attempts,
        "every attempt has an outcome"
    );
    assert!(!landed.is_empty());

    // Exactly the commits reported as landed changed the path, and the
    // file holds what the newest of them wrote.
    let log = history(&repo);
    let changed_it: BTreeSet<String> = log
        .iter()
        .filter(|(_, c)| c.change_count > 0)
        .map(|(id, _)| id.to_hex())
        .collect();
    assert_eq!(changed_it, landed.keys().cloned().collect());
    let newest = log[0].0.to_hex();
    let reader = Session::start(repo.clone(), SessionOptions::new(DEFAULT_BRANCH)).unwrap();
    assert_eq!(
        String::from_utf8(reader.read_file("shared/value").unwrap()).unwrap(),
        landed[&newest]
    );
    assert!(fsck(&repo).unwrap().is_clean());
}

#[test]
fn a_committer_killed_at_random_moments_never_damages_the_repository() {
    let (_dir, repo) = new_repo();
    let rounds = 30;
    for round in 0..rounds {
        let before = repo.branch_tip(DEFAULT_BRANCH).unwrap().unwrap().commit;
        let mut child = spawn_worker(&format!("commit-forever {} {round}", repo.path().display()));
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| report_in(&l, "committed "))
                .collect::<Vec<String>>()
        });
        // Somewhere between start-up and a few dozen commits in.
        let delay = 5 + getrandom::u64().unwrap() % 300;
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        child.wait().unwrap();
        let made = reader.join().unwrap();

        let report = fsck(&repo).unwrap();
        assert!(report.is_clean(), "round {round}: {:?}", report.problems);
        let tip = repo.branch_tip(DEFAULT_BRANCH).unwrap().unwrap().commit;
        let last_reported = made.last().map(|id| id.parse().unwrap()).unwrap_or(before);
        let tip_parent = repo.commit_record(tip).unwrap().parent();
        assert!(
            tip == last_reported || tip_parent == Some(last_reported),
            "round {round}: the branch is at {tip}, neither the last reported commit {last_reported} nor a child of it"
        );
    }
}

#[test]
fn fsynced_session_data_survives_sigkill_and_the_resumed_session_commits_it() {
    let (_dir, repo) = new_repo();
    let mut child = spawn_worker(&format!("fsync-and-wait {} 0", repo.path().display()));
    let session_id = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|l| report_in(&l, "fsynced "))
        .expect("the worker reports its session");
    child.kill().unwrap();
    child.wait().unwrap();

    let mut session = Session::resume(repo.clone(), &session_id, None).unwrap();
    assert_eq!(
        session.read_file("arr/c/0/0").unwrap(),
        b"chunk bytes that were fsynced"
    );
    assert_eq!(changed(&mut session), ["arr/c/0/0", "arr/zarr.json"]);
    let id = session.commit("recovered").unwrap();
    assert_eq!(repo.branch_tip(DEFAULT_BRANCH).unwrap().unwrap().commit, id);
    let reader = Session::start(repo.clone(), SessionOptions::new(DEFAULT_BRANCH)).unwrap();
    assert_eq!(
        reader.read_file("arr/c/0/0").unwrap(),
        b"chunk bytes that were fsynced"
    );
}

/// The lock by which the commits to `branch` from this machine take turns
/// (zarrfs(5), LAYOUT), held as another commit holds it.
fn hold_turn(repo: &Repo, branch: &str) -> zarrfs::storage::LockGuard {
    repo.storage()
        .lock(&format!("refs/locks/{branch}"), true)
        .unwrap()
}

#[test]
fn a_commit_waits_while_another_commit_moves_its_branch_and_lands_after() {
    let (_dir, repo) = new_repo();
    let before = repo.branch_tip(DEFAULT_BRANCH).unwrap().unwrap().commit;
    let mut session = start(&repo, 1);
    session.write_file("a/value", b"1").unwrap();
    let turn = hold_turn(&repo, DEFAULT_BRANCH);
    let committing = std::thread::spawn(move || session.commit("waits its turn").unwrap());
    std::thread::sleep(Duration::from_millis(500));
    assert!(!committing.is_finished(), "the commit did not wait");
    assert_eq!(
        repo.branch_tip(DEFAULT_BRANCH).unwrap().unwrap().commit,
        before
    );
    drop(turn);
    let landed = committing.join().unwrap();
    assert_eq!(
        repo.branch_tip(DEFAULT_BRANCH).unwrap().unwrap().commit,
        landed
    );
}

#[test]
fn a_commit_to_another_branch_does_not_wait_for_that_turn() {
    let (_dir, repo) = new_repo();
    let tip = repo.branch_tip(DEFAULT_BRANCH).unwrap().unwrap().commit;
    repo.refs().create_branch("other", tip).unwrap();
    let _main_turn = hold_turn(&repo, DEFAULT_BRANCH);
    let mut session = Session::start(repo.clone(), SessionOptions::new("other")).unwrap();
    session.write_file("a/value", b"1").unwrap();
    let landed = session.commit("on other").unwrap();
    assert_eq!(repo.resolve("other").unwrap(), landed);
}

#[test]
fn a_commit_goes_on_without_its_turn_when_the_lock_cannot_be_taken() {
    let (_dir, repo) = new_repo();
    // Something that is not a directory where the locks go.
    let locks = repo.path().join("refs/locks");
    std::fs::remove_dir_all(&locks).unwrap();
    std::fs::write(&locks, b"not a directory").unwrap();
    let mut session = start(&repo, 1);
    session.write_file("a/value", b"1").unwrap();
    let landed = session.commit("without a turn").unwrap();
    assert_eq!(
        repo.branch_tip(DEFAULT_BRANCH).unwrap().unwrap().commit,
        landed
    );
    // A repository made before the locks existed gets their directory
    // when it is opened.
    std::fs::remove_file(&locks).unwrap();
    Repo::open(repo.path()).unwrap();
    assert!(locks.is_dir());
}

#[test]
fn a_commit_waits_for_its_turn_only_so_long_then_lands_without_it() {
    let (_dir, repo) = new_repo();
    let mut session = start(&repo, 1);
    session.write_file("a/value", b"1").unwrap();
    // A holder that never lets go: a stopped or hung committer.
    let _held_forever = hold_turn(&repo, DEFAULT_BRANCH);
    let started = std::time::Instant::now();
    let landed = session.commit("without waiting forever").unwrap();
    assert_eq!(
        repo.branch_tip(DEFAULT_BRANCH).unwrap().unwrap().commit,
        landed
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it did wait for the turn a while: {:?}",
        started.elapsed()
    );
}
