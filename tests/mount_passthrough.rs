//! File data through FUSE passthrough, and beside it: the kernel allows one
//! backing file per inode, so a mount must keep opens of one path on one
//! backing or serve them itself. These are the cases where that shows:
//! reading and writing one file at once, writing across a commit, append,
//! ftruncate and mmap.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod mount_util;

use mount_util::{BIN, Mount};

fn mount(dir: &Path) -> Mount {
    let repo = dir.join("repo");
    let at = dir.join("mnt");
    std::fs::create_dir(&at).unwrap();
    assert!(
        Command::new(BIN)
            .arg("init")
            .arg(&repo)
            .output()
            .unwrap()
            .status
            .success()
    );
    Mount::new(&repo, &at, &[])
}

fn commit(m: &Mount, message: &str) -> String {
    std::fs::write(m.path.join(".zarrfs/commit"), message).unwrap();
    std::fs::read_to_string(m.path.join(".zarrfs/commit"))
        .unwrap()
        .trim()
        .to_owned()
}

fn read_all(file: &mut File) -> Vec<u8> {
    let mut out = Vec::new();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_to_end(&mut out).unwrap();
    out
}

/// Whether this machine lets a FUSE daemon use passthrough: root, and a
/// kernel built with CONFIG_FUSE_PASSTHROUGH (when its config is readable).
fn passthrough_expected() -> Option<bool> {
    if unsafe { libc::geteuid() } != 0 {
        return Some(false);
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let config = std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()?;
    Some(config.lines().any(|l| l == "CONFIG_FUSE_PASSTHROUGH=y"))
}

#[test]
fn reading_and_writing_one_file_through_passthrough_and_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let m = mount(dir.path());
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.path.join(".zarrfs/status.json")).unwrap())
            .unwrap();
    if let Some(expected) = passthrough_expected() {
        assert_eq!(
            status["passthrough"], expected,
            "passthrough on where the kernel allows it"
        );
    }
    let path = m.path.join("chunk");
    std::fs::write(&path, b"committed").unwrap();
    commit(&m, "one chunk");
    // The kernel may report the writer's close after the commit, which
    // then carries the file into the new session as staged; a checkout
    // never carries files, so that the path names the committed blob.
    std::fs::write(m.path.join(".zarrfs/checkout"), b"\n").unwrap();

    // A reader of the committed bytes, then writers in place while it is
    // open: with passthrough the kernel holds the committed file for that
    // inode, so the path gets a new one (the kernel retries the open on
    // ESTALE); the reader keeps the committed bytes either way.
    let passthrough = status["passthrough"] == true;
    let mut reader = File::open(&path).unwrap();
    assert_eq!(read_all(&mut reader), b"committed");
    let reader_ino = reader.metadata().unwrap().ino();
    let mut writer = OpenOptions::new().write(true).open(&path).unwrap();
    writer.write_all(b"C").unwrap();
    drop(writer);
    assert_eq!(std::fs::read(&path).unwrap(), b"Committed");
    assert_eq!(
        read_all(&mut reader),
        b"committed",
        "the reader keeps its bytes"
    );
    let path_ino = std::fs::metadata(&path).unwrap().ino();
    assert_eq!(
        path_ino != reader_ino,
        passthrough,
        "the path has an inode of its own with passthrough"
    );
    assert_eq!(
        reader.metadata().unwrap().len(),
        9,
        "fstat of the reader still answers"
    );
    // `echo > path` and truncate(1) beside the same reader.
    std::fs::write(&path, b"echoed").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"echoed");
    commit(&m, "echoed");
    std::fs::write(m.path.join(".zarrfs/checkout"), b"\n").unwrap();
    let mut second_reader = File::open(&path).unwrap();
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(
        unsafe { libc::truncate(c.as_ptr(), 4) },
        0,
        "truncate(2) beside a reader"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"echo");
    assert_eq!(read_all(&mut second_reader), b"echoed");
    assert_eq!(read_all(&mut reader), b"committed");
    drop(second_reader);

    std::fs::write(m.path.join("chunk.tmp"), b"rewritten").unwrap();
    std::fs::rename(m.path.join("chunk.tmp"), &path).unwrap();
    let mut second = File::open(&path).unwrap();
    assert_eq!(
        read_all(&mut second),
        b"rewritten",
        "a new reader sees the new file"
    );
    assert_eq!(
        read_all(&mut reader),
        b"committed",
        "the old reader keeps its file"
    );
    drop((reader, second));
    assert_eq!(std::fs::read(&path).unwrap(), b"rewritten");

    // Once no reader holds the committed bytes, a write open copies up.
    commit(&m, "rewritten");
    std::fs::write(m.path.join(".zarrfs/checkout"), b"\n").unwrap();
    let mut writer = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    writer.write_all(b"rewritten").unwrap();
    drop(writer);

    // A writer first, then a reader of the same staged file.
    let writer = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut reader = File::open(&path).unwrap();
    writer.write_all_at(b"R", 0).unwrap();
    assert_eq!(read_all(&mut reader), b"Rewritten");

    // ftruncate through the writer, and append.
    writer.set_len(3).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"Rew");
    let mut appender = OpenOptions::new().append(true).open(&path).unwrap();
    appender.write_all(b"+1").unwrap();
    appender.write_all(b"+2").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"Rew+1+2");
    drop((writer, reader, appender));

    // mmap, read-only.
    let file = File::open(&path).unwrap();
    let mapped = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            7,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(
        mapped,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    let bytes = unsafe { std::slice::from_raw_parts(mapped as *const u8, 7) }.to_vec();
    unsafe { libc::munmap(mapped, 7) };
    assert_eq!(bytes, b"Rew+1+2");
}

#[test]
fn readers_keep_their_bytes_when_the_path_is_replaced_or_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let m = mount(dir.path());
    let path = m.path.join("data");
    std::fs::write(&path, b"one").unwrap();
    commit(&m, "one");
    // A checkout never carries files over: the path names the blob.
    std::fs::write(m.path.join(".zarrfs/checkout"), b"\n").unwrap();
    let mut committed = File::open(&path).unwrap();

    // Replaced by a rename, as Zarr clients write.
    std::fs::write(m.path.join("data.partial"), b"two").unwrap();
    std::fs::rename(m.path.join("data.partial"), &path).unwrap();
    let mut staged = File::open(&path).unwrap();
    assert_eq!(read_all(&mut staged), b"two");
    assert_eq!(
        read_all(&mut committed),
        b"one",
        "the old reader keeps its file"
    );

    // Discarded: the path names the committed bytes again, with a new
    // inode; the reader of the discarded file keeps reading it.
    std::fs::write(m.path.join(".zarrfs/discard"), b"\n").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"one");
    assert_eq!(read_all(&mut staged), b"two");
    assert_eq!(read_all(&mut committed), b"one");
}

#[test]
fn a_file_written_across_a_commit_keeps_its_later_writes_in_the_view() {
    let dir = tempfile::tempdir().unwrap();
    let m = mount(dir.path());
    let path = m.path.join("log");
    let open_for_writing = || m.session_json()["open_for_writing"].as_u64().unwrap();
    let writer = File::create(&path).unwrap();
    writer.write_all_at(b"v1", 0).unwrap();
    let second_writer = OpenOptions::new().append(true).open(&path).unwrap();
    assert_eq!(open_for_writing(), 1, "one file, however many writers");
    drop(second_writer);
    let first = commit(&m, "first");
    assert_eq!(first.len(), 64, "{first}");
    assert_eq!(open_for_writing(), 1, "carried on into the new session");

    // The same descriptor goes on writing after the commit.
    writer.write_all_at(b"+v2", 2).unwrap();
    drop(writer);
    assert!(
        mount_util::eventually(Duration::from_secs(10), || open_for_writing() == 0),
        "closed, once the kernel reports it"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"v1+v2");
    let status = std::fs::read_to_string(m.path.join(".zarrfs/status")).unwrap();
    assert!(status.contains("  M [C] log"), "{status}");
    let committed = std::fs::read(m.path.join(".zarrfs/commits").join(&first).join("log")).unwrap();
    assert_eq!(
        committed, b"v1",
        "the first commit holds what was written before it"
    );
    commit(&m, "second");
    assert_eq!(std::fs::read(&path).unwrap(), b"v1+v2");
}
