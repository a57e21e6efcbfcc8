//! The seed tutorial's three examples through two real mounts, A and B,
//! with nothing but `echo`, `cat`, `cp` and `rm` on files and control
//! files; and the mount's durability and concurrency promises: a daemon
//! killed with SIGKILL loses nothing that was fsynced, four mounts
//! committing at once all land, invalid metadata is refused.

mod mount_util;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use mount_util::{Mount, Scratch, chunk, eventually, text};

/// Write a chunk file outside the mount (for `cp`).
fn chunk_file(scratch: &Scratch, name: &str, values: [f64; 4]) -> String {
    let path = scratch.dir.path().join(name);
    std::fs::write(&path, chunk(values)).unwrap();
    path.display().to_string()
}

fn read_chunk(mount: &Mount, rel: &str) -> [f64; 4] {
    let bytes = std::fs::read(mount.path.join(rel)).unwrap();
    let mut out = [0.0; 4];
    for (i, v) in out.iter_mut().enumerate() {
        *v = f64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
    }
    out
}

fn log_json(mount: &Mount) -> Vec<serde_json::Value> {
    serde_json::from_str(&mount.read(".zarrfs/log.json")).unwrap()
}

#[test]
fn the_seed_examples_through_two_mounts() {
    let scratch = Scratch::new();
    let ones = chunk_file(&scratch, "ones", [1.0; 4]);
    let tens = chunk_file(&scratch, "tens", [10.0, 10.0, 1.0, 1.0]);
    let three = chunk_file(&scratch, "three", [3.0, 1.0, 1.0, 1.0]);
    let a = scratch.mount("a", &["--author", "User A <a@example.org>"]);
    let b = scratch.mount("b", &["--author", "User B <b@example.org>"]);
    assert_ne!(a.session(), b.session());
    assert!(
        a.read(".zarrfs/status")
            .contains("No changes in current session")
    );

    // User A adds an attribute to the root group and commits.
    a.ok(r#"mkdir -p meta && echo '{"attributes": {"foo": "bar"}}' > meta/root.group.json"#);
    assert_eq!(a.changed(), ["meta/root.group.json"]);
    assert!(
        a.read(".zarrfs/status")
            .contains("  A [M] meta/root.group.json")
    );
    let old_session = a.session();
    a.ok("echo 'User A added metadata' > .zarrfs/commit");
    let c1 = a.read(".zarrfs/commit").trim().to_owned();
    assert_eq!(c1.len(), 64, "the commit id: {c1}");
    assert_ne!(a.session(), old_session, "a commit starts a new session");
    assert!(a.changed().is_empty());
    assert_eq!(a.read(".zarrfs/checkout").trim(), c1);

    // B is behind until it checks out.
    assert!(!b.path.join("meta/root.group.json").exists());
    b.ok("echo > .zarrfs/checkout");
    assert_eq!(b.read(".zarrfs/checkout").trim(), c1);
    assert_eq!(
        b.ok("cat meta/root.group.json"),
        "{\"attributes\": {\"foo\": \"bar\"}}\n"
    );

    // Example 1: metadata by A, an array by B: no conflict, B rebases.
    a.ok(
        r#"echo '{"attributes": {"foo": "bar", "a new key": "a new val"}}' > meta/root.group.json"#,
    );
    a.ok("echo 'User A made a metadata update' > .zarrfs/commit");
    let c2 = a.read(".zarrfs/commit").trim().to_owned();
    b.ok(r#"mkdir -p meta/root/toy_data data/root/toy_data/ones/c0 data/root/toy_data/ones/c1
        echo '{"attributes": {}}' > meta/root/toy_data.group.json
        echo '{"shape": [3, 3], "chunk_grid": {"chunk_shape": [2, 2]}}' > meta/root/toy_data/ones.array.json"#);
    for key in ["c0/0", "c0/1", "c1/0", "c1/1"] {
        b.ok(&format!("cp {ones} data/root/toy_data/ones/{key}"));
    }
    assert_eq!(
        b.changed(),
        [
            "data/root/toy_data/ones/c0/0",
            "data/root/toy_data/ones/c0/1",
            "data/root/toy_data/ones/c1/0",
            "data/root/toy_data/ones/c1/1",
            "meta/root/toy_data.group.json",
            "meta/root/toy_data/ones.array.json",
        ]
    );
    b.ok("echo 'User B wrote chunk data to repo' > .zarrfs/commit");
    let c3 = b.read(".zarrfs/commit").trim().to_owned();
    let log = log_json(&b);
    assert_eq!(log[0]["id"], c3.as_str());
    assert_eq!(
        log[0]["parents"][0],
        c2.as_str(),
        "B's commit was rebased onto A's"
    );
    assert!(
        b.read("meta/root.group.json").contains("a new key"),
        "after committing, B sees A's update"
    );

    // Example 2: both change the toy_data group's attributes: conflict.
    a.ok("echo > .zarrfs/checkout");
    b.ok("echo > .zarrfs/checkout");
    a.ok(r#"echo '{"attributes": {"toy_key": "toy_val"}}' > meta/root/toy_data.group.json"#);
    a.ok("echo 'User A modified toy_data metadata' > .zarrfs/commit");
    let c4 = a.read(".zarrfs/commit").trim().to_owned();
    b.ok(r#"echo '{"attributes": {"another toy key": "another toy val"}}' > meta/root/toy_data.group.json"#);
    let session_b = b.session();
    let base_b = b.read(".zarrfs/checkout").trim().to_owned();
    let stderr = b.fails("echo 'User B added attr to metadata' > .zarrfs/commit");
    assert!(stderr.contains("Device or resource busy"), "{stderr}");
    assert_eq!(
        b.read(".zarrfs/commit"),
        format!(
            "Conflicting paths found for rebase {base_b}->main, including ['meta/root/toy_data.group.json']\n"
        )
    );
    assert_eq!(b.session(), session_b, "the session is kept");
    assert_eq!(b.read(".zarrfs/checkout").trim(), base_b);
    assert_eq!(
        b.changed(),
        ["meta/root/toy_data.group.json"],
        "nothing lost"
    );
    assert!(
        b.read("meta/root/toy_data.group.json")
            .contains("another toy key")
    );
    assert_eq!(log_json(&a)[0]["id"], c4.as_str());
    // Checking out is refused while the session has changes.
    let stderr = b.fails("echo > .zarrfs/checkout");
    assert!(stderr.contains("Device or resource busy"), "{stderr}");
    b.ok("echo > .zarrfs/discard");
    assert!(b.changed().is_empty());
    assert_ne!(b.session(), session_b);

    // Example 3: different chunks of one array: both land.
    a.ok("echo > .zarrfs/checkout");
    b.ok("echo > .zarrfs/checkout");
    a.ok(&format!("cp {tens} data/root/toy_data/ones/c0/0"));
    b.ok(&format!("cp {three} data/root/toy_data/ones/c1/1"));
    a.ok("echo 'User A wrote 10s' > .zarrfs/commit");
    b.ok("echo 'User B wrote a 3' > .zarrfs/commit");
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
    a.ok("echo > .zarrfs/checkout");
    assert_eq!(
        read_chunk(&a, "data/root/toy_data/ones/c1/1"),
        [3.0, 1.0, 1.0, 1.0]
    );

    let messages: Vec<String> = log_json(&a)
        .iter()
        .map(|c| c["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        messages,
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
    let log = a.read(".zarrfs/log");
    assert!(log.starts_with("Commit ID "), "{log}");
    assert!(log.contains("Author    User B <b@example.org>"), "{log}");
}

#[test]
fn invalid_metadata_is_refused_with_its_path_and_kept() {
    let scratch = Scratch::new();
    let a = scratch.mount("a", &[]);
    a.ok("mkdir g && echo '{broken' > g/zarr.json && echo '[1, 2]' > g/.zattrs");
    let stderr = a.fails("echo bad > .zarrfs/commit");
    assert!(stderr.contains("Invalid argument"), "{stderr}");
    let outcome = a.read(".zarrfs/commit");
    assert!(outcome.contains("g/"), "{outcome}");
    assert!(outcome.contains("invalid Zarr metadata"), "{outcome}");
    assert_eq!(a.changed(), ["g/.zattrs", "g/zarr.json"]);
    // status.json lists the changes; session.json is the same without them.
    let status: serde_json::Value = serde_json::from_str(&a.read(".zarrfs/status.json")).unwrap();
    let mut session = a.session_json();
    assert_eq!(status["changes"].as_array().unwrap().len(), 2, "{status}");
    assert!(session.get("changes").is_none(), "{session}");
    session["changes"] = status["changes"].clone();
    assert_eq!(session, status);
    assert_eq!(a.read("g/zarr.json"), "{broken\n");
    // Fixed, it commits.
    a.ok(r#"echo '{"zarr_format": 3}' > g/zarr.json && echo '{}' > g/.zattrs"#);
    a.ok("echo good > .zarrfs/commit");
    assert!(a.changed().is_empty());
    // Nothing to commit: ENODATA, and the outcome says so.
    let stderr = a.fails("echo again > .zarrfs/commit");
    assert!(stderr.contains("No data available"), "{stderr}");
    assert!(a.read(".zarrfs/commit").contains("nothing to commit"));
    // A zero-byte write does nothing.
    a.ok(": > .zarrfs/commit");
}

#[test]
fn a_killed_daemon_loses_nothing_fsynced_and_the_next_mount_resumes() {
    let scratch = Scratch::new();
    let a = scratch.mount("a", &[]);
    let mountpoint = a.path.clone();
    a.ok("mkdir -p arr/c && printf 'zero' | dd of=arr/c/0 conv=fsync status=none");
    a.ok("printf 'one' > arr/c/1 && printf '{}' > arr/zarr.json && dd if=/dev/null of=arr/zarr.json conv=notrunc,fsync status=none");
    let session = a.session();
    a.crash();

    let a = Mount::new(&scratch.repo, &mountpoint, &[]);
    assert_eq!(a.session(), session, "the session was resumed");
    assert_eq!(a.changed(), ["arr/c/0", "arr/c/1", "arr/zarr.json"]);
    assert_eq!(a.read("arr/c/0"), "zero");
    a.ok("echo 'after a crash' > .zarrfs/commit");
    assert!(a.changed().is_empty());
    a.unmount();

    let b = scratch.mount("b", &[]);
    assert_eq!(b.read("arr/c/0"), "zero");
    assert_eq!(b.read("arr/c/1"), "one");
}

/// The flusher makes the journal durable on its own, every
/// `FLUSH_INTERVAL` and early once 25,000 changes are pending, writing
/// while the mount goes on serving: changes made before, during and after
/// those flushes all survive `kill -9` a few seconds later, without any
/// fsync.
#[test]
fn a_killed_daemon_keeps_what_the_background_flushes_wrote() {
    const FILES: usize = 30_000;
    let scratch = Scratch::new();
    let a = scratch.mount("a", &[]);
    let mountpoint = a.path.clone();
    a.ok(&format!(
        "mkdir many && cd many && seq 1 {FILES} | xargs touch"
    ));
    a.ok("printf 'last' > last");
    // FLUSH_INTERVAL is 2 s.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let session = a.session();
    a.crash();

    let a = Mount::new(&scratch.repo, &mountpoint, &[]);
    assert_eq!(a.session(), session, "the session was resumed");
    let changed = a.changed();
    assert_eq!(
        changed.len(),
        FILES + 1,
        "{:?}",
        &changed[..changed.len().min(5)]
    );
    assert!(changed.contains(&"many/1".to_owned()) && changed.contains(&format!("many/{FILES}")));
    assert_eq!(a.read("last"), "last");
    assert_eq!(a.ok("ls many | wc -l").trim(), FILES.to_string());
}

/// How many files the staging area of `session` holds.
fn staged_files(scratch: &Scratch, session: &str) -> usize {
    std::fs::read_dir(scratch.repo.join("sessions").join(session).join("staged"))
        .unwrap()
        .count()
}

#[test]
fn empty_files_made_ahead_and_left_by_a_crash_do_not_become_changes() {
    let scratch = Scratch::new();
    let a = scratch.mount("a", &[]);
    let mountpoint = a.path.clone();
    a.ok("printf 'kept' | dd of=kept conv=fsync status=none");
    let session = a.session();
    // The daemon makes a few empty staged files ahead once files are
    // created.
    assert!(
        eventually(Duration::from_secs(10), || staged_files(&scratch, &session)
            > 1),
        "no staged files were made ahead"
    );
    a.crash();
    let left = staged_files(&scratch, &session);

    let a = Mount::new(&scratch.repo, &mountpoint, &[]);
    assert_eq!(a.session(), session, "the session was resumed");
    assert_eq!(a.changed(), ["kept"]);
    // More new files than the daemon makes ahead: none of them may take
    // a number a leftover has.
    a.ok("mkdir d && for i in $(seq 0 199); do echo $i > d/$i; done");
    assert_eq!(a.read("d/199"), "199\n");
    assert_eq!(a.changed().len(), 201, "kept and the 200 files of d");
    assert!(staged_files(&scratch, &session) >= left + 200);
    a.ok("echo 'after a crash' > .zarrfs/commit");
    a.unmount();

    let b = scratch.mount("b", &[]);
    assert_eq!(b.read("kept"), "kept");
    assert_eq!(b.read("d/0"), "0\n");
    assert_eq!(b.ok("ls d | wc -l").trim(), "200");
}

/// A process that holds a session's lock as a killed daemon does while it
/// exits: it takes the lock (`argv[1]`) and names itself in it as
/// `take_lock` does, then its main thread exits and another thread lives
/// on for `argv[3]` seconds, keeping the process's files, and so the lock,
/// until it ends.
const EXITING_HOLDER: &str = r#"
import ctypes, fcntl, os, sys, threading, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, f"process {os.getpid()} (mounted at {sys.argv[2]})\n".encode())
threading.Thread(target=time.sleep, args=(float(sys.argv[3]),)).start()
print("holding", flush=True)
ctypes.CDLL(None).pthread_exit(None)
"#;

/// A mount made again at once after its daemon was killed, as a service
/// manager restarts a crashed mount, resumes the session even while the
/// killed process is still exiting and holds the session's lock: it waits
/// for it (for at most 5 s), rather than starting a new session beside it.
#[test]
fn a_mount_waits_for_a_killed_daemon_that_is_still_exiting() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let scratch = Scratch::new();
    let a = scratch.mount("a", &[]);
    let mountpoint = a.path.clone();
    a.ok("printf 'kept' | dd of=kept conv=fsync status=none");
    let session = a.session();
    a.crash();

    let lock = scratch.repo.join("sessions").join(&session).join("lock");
    let mut exiting = Command::new("python3")
        .args(["-c", EXITING_HOLDER])
        .arg(&lock)
        .arg(&mountpoint)
        .arg("1.0")
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    std::io::BufReader::new(exiting.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "holding\n");
    let stat = format!("/proc/{}/stat", exiting.id());
    assert!(
        eventually(Duration::from_secs(5), || {
            std::fs::read_to_string(&stat).is_ok_and(|s| s.contains(") Z "))
        }),
        "the holder's main thread exits"
    );

    let a = Mount::new(&scratch.repo, &mountpoint, &[]);
    assert_eq!(a.session(), session, "the session was resumed");
    assert_eq!(a.read("kept"), "kept");
    assert!(exiting.wait().unwrap().success());
}

#[test]
fn unmount_keeps_changes_and_a_session_is_served_once() {
    let scratch = Scratch::new();
    let a = scratch.mount("a", &[]);
    let mountpoint = a.path.clone();
    a.ok("echo kept > f");
    let session = a.session();
    a.unmount();
    assert!(!mountpoint.join("f").exists(), "unmounted");

    // Mounting again where it was resumes it.
    let a = Mount::new(&scratch.repo, &mountpoint, &[]);
    assert_eq!(a.session(), session);
    assert_eq!(a.read("f"), "kept\n");

    // A second mount of the same session is refused, naming where it is.
    let other = scratch.mountpoint("other");
    let out = std::process::Command::new(mount_util::BIN)
        .arg("mount")
        .arg(&scratch.repo)
        .arg(&other)
        .args(["--session", &session])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("mounted at {}", mountpoint.display())),
        "{stderr}"
    );
    a.unmount();

    // --new-session starts afresh; the old session can be named.
    let fresh = Mount::new(&scratch.repo, &mountpoint, &["--new-session"]);
    assert_ne!(fresh.session(), session);
    assert!(fresh.changed().is_empty());
    let named = Mount::new(&scratch.repo, &other, &["--session", &session]);
    assert_eq!(named.read("f"), "kept\n");
}

#[test]
fn a_session_that_changes_nothing_is_not_resumed() {
    // A committed file opened for writing and closed unchanged, and one
    // written again with its own bytes, are in the journal but change
    // nothing: status says so, a commit has nothing to commit, and the
    // next mount there, after an unmount or a crash, starts at the tip of
    // the branch (showing what another mount committed meanwhile) instead
    // of resuming the old base.
    let scratch = Scratch::new();
    let a = scratch.mount("a", &[]);
    let mountpoint = a.path.clone();
    a.ok("echo one > f && echo two > g && echo first > .zarrfs/commit");
    let other = scratch.mount("other", &[]);
    other.ok("echo theirs > t && echo theirs > .zarrfs/commit");
    a.ok("exec 3<>f; exec 3>&-; echo two > g");
    assert!(a.changed().is_empty(), "{}", a.read(".zarrfs/status"));
    let session = a.session();
    a.unmount();

    let a = Mount::new(&scratch.repo, &mountpoint, &[]);
    assert_ne!(
        a.session(),
        session,
        "a session without changes is not resumed"
    );
    assert_eq!(a.read("t"), "theirs\n");
    assert_eq!(a.read("f"), "one\n");

    // Nor after a crash, which leaves such a journal behind.
    a.ok("exec 3<>f; exec 3>&-");
    other.ok("echo again > t && echo again > .zarrfs/commit");
    a.ok("sync .");
    let session = a.session();
    a.crash();
    let a = Mount::new(&scratch.repo, &mountpoint, &[]);
    assert_ne!(a.session(), session, "not resumed after a crash either");
    assert_eq!(a.read("t"), "again\n");
}

#[test]
fn four_mounts_commit_different_chunks_at_once() {
    let scratch = Scratch::new();
    let mounts: Vec<Mount> = (0..4)
        .map(|i| scratch.mount(&format!("m{i}"), &[]))
        .collect();
    mounts[0].ok(r#"mkdir -p arr/c && echo '{"zarr_format": 3}' > arr/zarr.json && echo array > .zarrfs/commit"#);
    for (i, m) in mounts.iter().enumerate() {
        m.ok("echo > .zarrfs/checkout");
        m.ok(&format!("echo 'chunk {i}' > arr/c/{i}"));
    }
    let barrier = Arc::new(Barrier::new(4));
    std::thread::scope(|s| {
        for (i, m) in mounts.iter().enumerate() {
            let barrier = barrier.clone();
            s.spawn(move || {
                barrier.wait();
                m.ok(&format!("echo 'commit {i}' > .zarrfs/commit"));
            });
        }
    });
    let last = &mounts[0];
    last.ok("echo > .zarrfs/checkout");
    for i in 0..4 {
        assert_eq!(last.read(&format!("arr/c/{i}")), format!("chunk {i}\n"));
    }
    let log = log_json(last);
    assert_eq!(log.len(), 6, "4 commits, the array and the first");
    for m in &mounts {
        assert!(m.changed().is_empty());
    }
}
