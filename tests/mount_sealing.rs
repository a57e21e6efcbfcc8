//! Sealing through a real mount: the daemon stores closed files in the
//! object store while the session goes on (`sealed_files` in
//! `.zarrfs/session.json` counts them), and a user sees nothing of it:
//! sealed files read, append, rewrite and commit as they were written,
//! and a stored object never changes.

mod mount_util;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use mount_util::{Mount, Scratch};
use zarrfs::repo::ObjectId;

fn sealed_files(m: &Mount) -> u64 {
    m.session_json()["sealed_files"].as_u64().unwrap()
}

/// Wait until the daemon has sealed `n` files, for at most a few seconds.
fn wait_sealed(m: &Mount, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while sealed_files(m) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} files sealed",
            sealed_files(m)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The bytes the object store holds for `bytes`, if it holds them.
fn stored(repo: &Path, bytes: &[u8]) -> Option<Vec<u8>> {
    let hex = ObjectId::of(bytes).to_hex();
    std::fs::read(repo.join("objects").join(&hex[..2]).join(&hex[2..])).ok()
}

#[test]
fn sealed_files_append_rewrite_and_commit_as_written() {
    let scratch = Scratch::new();
    let m = scratch.mount("m", &[]);
    m.ok("mkdir data && for i in 0 1 2 3 4 5 6 7; do echo chunk $i > data/c$i; done");
    wait_sealed(&m, 8);
    assert_eq!(
        stored(&scratch.repo, b"chunk 3\n").as_deref(),
        Some(&b"chunk 3\n"[..]),
        "stored before any commit"
    );

    m.ok("echo more >> data/c3 && echo new > data/c4 && sed -i s/chunk/CHUNK/ data/c5");
    assert_eq!(m.read("data/c3"), "chunk 3\nmore\n");
    assert_eq!(m.read("data/c4"), "new\n");
    assert_eq!(m.read("data/c5"), "CHUNK 5\n");
    for i in 3..=5 {
        let bytes = format!("chunk {i}\n");
        assert_eq!(
            stored(&scratch.repo, bytes.as_bytes()).as_deref(),
            Some(bytes.as_bytes()),
            "the object of c{i} kept its bytes"
        );
    }

    m.ok("echo sealed files > .zarrfs/commit");
    let commit = m.read(".zarrfs/commit").trim().to_owned();
    let tree = format!(".zarrfs/commits/{commit}/data");
    assert_eq!(m.read(&format!("{tree}/c0")), "chunk 0\n");
    assert_eq!(m.read(&format!("{tree}/c3")), "chunk 3\nmore\n");
    assert_eq!(m.read(&format!("{tree}/c4")), "new\n");
    assert_eq!(m.read(&format!("{tree}/c5")), "CHUNK 5\n");
    assert_eq!(m.read("data/c3"), "chunk 3\nmore\n");
}

#[test]
fn a_file_open_for_reading_waits_and_can_still_be_appended_to() {
    let scratch = Scratch::new();
    let m = scratch.mount("m", &[]);
    let passthrough = m.session_json()["passthrough"].as_bool().unwrap();
    // Opened for reading before its writer closes, so that it is open
    // from the moment it could be sealed.
    let mut first = File::create(m.path.join("kept open")).unwrap();
    first.write_all(b"first line\n").unwrap();
    let mut reader = File::open(m.path.join("kept open")).unwrap();
    drop(first);
    std::fs::write(m.path.join("closed"), b"closed\n").unwrap();
    wait_sealed(&m, 1);
    if passthrough {
        // The kernel reads it from its staged file, which a sealed file
        // could not be opened for writing beside: well past the sealing
        // delay, it is still not sealed.
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(sealed_files(&m), 1);
        assert_eq!(stored(&scratch.repo, b"first line\n"), None);
    }

    let mut writer = OpenOptions::new()
        .append(true)
        .open(m.path.join("kept open"))
        .unwrap();
    writer.write_all(b"second line\n").unwrap();
    drop(writer);
    let mut seen = String::new();
    reader.read_to_string(&mut seen).unwrap();
    assert_eq!(seen, "first line\nsecond line\n");
    drop(reader);
    let expected = if passthrough { 2 } else { 3 };
    wait_sealed(&m, expected);
    assert_eq!(
        stored(&scratch.repo, b"first line\nsecond line\n").as_deref(),
        Some(&b"first line\nsecond line\n"[..])
    );
}

#[test]
fn a_sealed_file_open_for_reading_can_be_written_in_place_beside_it() {
    let scratch = Scratch::new();
    let m = scratch.mount("m", &[]);
    std::fs::write(m.path.join("f"), b"sealed\n").unwrap();
    wait_sealed(&m, 1);
    // The reader opens the object; the writer gets a copy (with
    // passthrough, on a new inode), and the reader keeps the object's
    // bytes, which never change.
    let mut reader = File::open(m.path.join("f")).unwrap();
    let mut writer = OpenOptions::new()
        .append(true)
        .open(m.path.join("f"))
        .unwrap();
    writer.write_all(b"appended\n").unwrap();
    drop(writer);
    assert_eq!(m.read("f"), "sealed\nappended\n");
    let mut seen = String::new();
    reader.read_to_string(&mut seen).unwrap();
    assert_eq!(seen, "sealed\n");
    assert_eq!(
        stored(&scratch.repo, b"sealed\n").as_deref(),
        Some(&b"sealed\n"[..])
    );
    drop(reader);
    m.ok("echo appended > .zarrfs/commit");
    let commit = m.read(".zarrfs/commit").trim().to_owned();
    assert_eq!(
        m.read(&format!(".zarrfs/commits/{commit}/f")),
        "sealed\nappended\n"
    );
}

#[test]
fn zarrfs_gc_gives_back_what_a_discard_left_stored() {
    let scratch = Scratch::new();
    let m = scratch.mount("m", &[]);
    m.ok("echo kept > kept && echo first > .zarrfs/commit");
    m.ok("echo dropped > dropped");
    wait_sealed(&m, 1);
    m.ok("echo > .zarrfs/discard");
    m.unmount();
    assert!(stored(&scratch.repo, b"dropped\n").is_some());

    let gc = |args: &[&str]| {
        let out = std::process::Command::new(mount_util::BIN)
            .arg("gc")
            .args(args)
            .arg(&scratch.repo)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", mount_util::text(&out.stderr));
        mount_util::text(&out.stdout)
    };
    // The discarded session's files may still be going: gc clears them
    // first, and keeps what changed within the grace period (an hour).
    let kept = gc(&["--json"]);
    let report: serde_json::Value = serde_json::from_str(&kept).unwrap();
    assert_eq!(report["removed"], 0, "within the grace period: {kept}");
    assert_eq!(report["kept_recent"], 1, "{kept}");
    let dry = gc(&["--grace", "0s", "--dry-run"]);
    assert!(dry.contains("would remove 1 unreferenced object"), "{dry}");
    assert!(stored(&scratch.repo, b"dropped\n").is_some());
    let done = gc(&["--grace", "0s"]);
    assert!(done.contains("removed 1 unreferenced object"), "{done}");
    assert_eq!(stored(&scratch.repo, b"dropped\n"), None);
    assert_eq!(
        stored(&scratch.repo, b"kept\n").as_deref(),
        Some(&b"kept\n"[..])
    );
    let fsck = std::process::Command::new(mount_util::BIN)
        .arg("fsck")
        .arg(&scratch.repo)
        .output()
        .unwrap();
    assert!(fsck.status.success(), "{}", mount_util::text(&fsck.stdout));
}

#[test]
fn zarrfs_gc_says_when_it_waits_for_commits_in_progress() {
    let scratch = Scratch::new();
    // Held as a commit holds it while it runs.
    let commit_lock = zarrfs::repo::Repo::open(&scratch.repo)
        .unwrap()
        .lock_for_commit()
        .unwrap();
    let mut gc = std::process::Command::new(mount_util::BIN)
        .arg("gc")
        .arg(&scratch.repo)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // What gc says first; a gc that waits in silence says nothing.
    let stderr = gc.stderr.take().unwrap();
    let (tx, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stderr), &mut line);
        let _ = tx.send(line);
    });
    let said = said.recv_timeout(Duration::from_secs(60));
    drop(commit_lock);
    let out = gc.wait_with_output().unwrap();
    let said = said.expect("gc said nothing for a minute while it waited");
    assert!(
        said.contains("waiting for the commits in progress"),
        "{said:?}"
    );
    assert!(out.status.success());
    let report = mount_util::text(&out.stdout);
    assert!(report.contains("removed 0 unreferenced object"), "{report}");
}
