//! A session with 1,000,000 changed paths: its journal lives in redb and
//! status and commit stream it, so the process's peak memory stays under
//! the daemon's budget however many paths change.
//!
//! The session runs in a child process (this test binary run again with
//! `ZARRFS_MEMORY_CHILD` set) so that the peak it reports (VmHWM) is the
//! session's own.

use std::process::Command;
use std::sync::Arc;

use zarrfs::repo::{DEFAULT_BRANCH, EntryKind, Repo};
use zarrfs::session::{Session, SessionOptions};

const CHILD_ENV: &str = "ZARRFS_MEMORY_CHILD";
const PATHS: usize = 1_000_000;
const PER_DIR: usize = 1000;
/// Every this many paths is a file written in the session (a staged
/// file); the others are links to a committed file.
const WRITTEN_EVERY: usize = 10;
/// The daemon's memory target (issue 5).
const BUDGET_MIB: u64 = 256;

fn path_of(i: usize) -> String {
    format!("data/{}/{}", i / PER_DIR, i % PER_DIR)
}

/// Not a test of its own: the child process of the test below.
#[test]
fn child_process_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let repo = Arc::new(Repo::init(&std::path::Path::new(&dir).join("repo")).unwrap());
    let mut session = Session::start(repo, SessionOptions::new(DEFAULT_BRANCH)).unwrap();
    session.write_file("seed", b"committed chunk").unwrap();
    session.commit("seed").unwrap();

    session.mkdir("data").unwrap();
    for i in 0..PATHS {
        let path = path_of(i);
        if i % PER_DIR == 0 {
            session.mkdir(&path[..path.rfind('/').unwrap()]).unwrap();
        }
        if i % WRITTEN_EVERY == 0 {
            session.write_file(&path, i.to_string().as_bytes()).unwrap();
        } else {
            session.link("seed", &path).unwrap();
        }
    }
    let mut listed = 0;
    session
        .status_each(&mut |_| {
            listed += 1;
            Ok(())
        })
        .unwrap();
    println!("status={listed}");
    let id = session.commit("a million paths").unwrap();
    println!("commit={id}");
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse::<u64>()
        .unwrap();
    println!("peak_kib={peak}");
}

#[test]
#[ignore = "takes minutes unoptimized; scripts/test runs it with --release"]
fn a_session_with_a_million_changed_paths_commits_within_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value = |key: &str| -> String {
        stdout
            .lines()
            .find_map(|l| Some(l.split_once(&format!("{key}="))?.1))
            .unwrap_or_else(|| panic!("child did not report {key}: {stdout}"))
            .to_owned()
    };
    assert_eq!(
        value("status"),
        PATHS.to_string(),
        "status lists every path"
    );

    let repo = Repo::open(&dir.path().join("repo")).unwrap();
    let tip = repo.branch_tip(DEFAULT_BRANCH).unwrap().unwrap().commit;
    assert_eq!(tip.to_hex(), value("commit"));
    let record = repo.commit_record(tip).unwrap();
    assert_eq!(record.change_count, PATHS as u64);
    let seed = repo
        .trees()
        .lookup(record.tree, "seed")
        .unwrap()
        .unwrap()
        .id;
    for i in [0, 1, 999, 500_000, 777_777, PATHS - 1] {
        let entry = repo
            .trees()
            .lookup(record.tree, &path_of(i))
            .unwrap()
            .unwrap_or_else(|| panic!("{} is not in the commit", path_of(i)));
        assert_eq!(entry.kind, EntryKind::File);
        if i % WRITTEN_EVERY == 0 {
            assert_eq!(
                repo.objects().get(entry.id).unwrap(),
                i.to_string().as_bytes()
            );
        } else {
            assert_eq!(entry.id, seed);
        }
    }
    let changes: usize = repo.commit_changes(tip).unwrap().len();
    assert_eq!(changes, PATHS, "the change list names every path");

    let peak_mib = value("peak_kib").parse::<u64>().unwrap() / 1024;
    eprintln!("peak memory of a 1,000,000-path session: {peak_mib} MiB");
    assert!(
        peak_mib < BUDGET_MIB,
        "peak memory {peak_mib} MiB is over the {BUDGET_MIB} MiB budget"
    );
}
