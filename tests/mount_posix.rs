//! POSIX operations through a real mount, and the errors of what the
//! mount does not support (see zarrfs(5), man/zarrfs.5).

mod mount_util;

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

use mount_util::Scratch;

fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_encoded_bytes()).unwrap()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> Result<(), i32> {
    let (from, to) = (c(from), c(to));
    // SAFETY: valid C strings; AT_FDCWD with absolute paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

#[test]
fn files_directories_renames_and_links() {
    let scratch = Scratch::new();
    let m = scratch.mount("m", &[]);
    let p = |rel: &str| m.path.join(rel);

    // Create, write at offsets, append, read back.
    fs::create_dir_all(p("a/b")).unwrap();
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(p("a/b/f"))
        .unwrap();
    f.write_all(b"hello world").unwrap();
    f.write_all_at(b"HELLO", 0).unwrap();
    f.write_all_at(b"!", 20).unwrap();
    let mut back = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(&back[..11], b"HELLO world");
    assert_eq!(back.len(), 21, "a hole up to offset 20");
    drop(f);
    let mut f = OpenOptions::new().append(true).open(p("a/b/f")).unwrap();
    f.write_all(b"+").unwrap();
    drop(f);
    assert_eq!(fs::read(p("a/b/f")).unwrap().len(), 22);

    // truncate, chmod, utimens.
    fs::OpenOptions::new()
        .write(true)
        .open(p("a/b/f"))
        .unwrap()
        .set_len(5)
        .unwrap();
    assert_eq!(fs::read(p("a/b/f")).unwrap(), b"HELLO");
    fs::set_permissions(p("a/b/f"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(fs::metadata(p("a/b/f")).unwrap().mode() & 0o777, 0o600);
    m.ok("touch -d '2001-02-03 04:05:06 UTC' a/b/f");
    assert_eq!(fs::metadata(p("a/b/f")).unwrap().mtime(), 981173106);

    // Stable inode numbers: lstat and fstat agree, rename keeps them.
    let ino = fs::symlink_metadata(p("a/b/f")).unwrap().ino();
    let file = fs::File::open(p("a/b/f")).unwrap();
    assert_eq!(file.metadata().unwrap().ino(), ino);
    assert_eq!(
        fs::metadata(p("a")).unwrap().dev(),
        file.metadata().unwrap().dev()
    );
    drop(file);
    fs::rename(p("a/b/f"), p("a/g")).unwrap();
    assert_eq!(fs::metadata(p("a/g")).unwrap().ino(), ino);
    fs::rename(p("a/g"), p("a/b/f")).unwrap();

    // rename over an existing file; RENAME_NOREPLACE and RENAME_EXCHANGE.
    fs::write(p("t.partial"), b"new").unwrap();
    fs::write(p("t"), b"old").unwrap();
    assert_eq!(
        renameat2(&p("t.partial"), &p("t"), libc::RENAME_NOREPLACE),
        Err(libc::EEXIST)
    );
    assert_eq!(
        renameat2(&p("t.partial"), &p("t"), libc::RENAME_EXCHANGE),
        Err(libc::EINVAL)
    );
    fs::rename(p("t.partial"), p("t")).unwrap();
    assert_eq!(fs::read(p("t")).unwrap(), b"new");
    assert!(!p("t.partial").exists());
    renameat2(&p("t"), &p("u"), libc::RENAME_NOREPLACE).unwrap();

    // link copies; EEXIST when the target exists.
    fs::hard_link(p("u"), p("v")).unwrap();
    assert_eq!(
        fs::hard_link(p("u"), p("v")).unwrap_err().raw_os_error(),
        Some(libc::EEXIST)
    );
    fs::write(p("u"), b"changed").unwrap();
    assert_eq!(fs::read(p("v")).unwrap(), b"new", "a link is a copy");
    assert_eq!(
        fs::hard_link(p("a"), p("a-link"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EPERM),
        "as zarrfs(5) says of a directory"
    );
    // A file open for writing is copied as it is at the link.
    let mut open = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(p("w"))
        .unwrap();
    open.write_all(b"first").unwrap();
    fs::hard_link(p("w"), p("w-copy")).unwrap();
    open.write_all(b" second").unwrap();
    drop(open);
    assert_eq!(fs::read(p("w-copy")).unwrap(), b"first");
    assert_eq!(fs::read(p("w")).unwrap(), b"first second");
    fs::remove_file(p("w")).unwrap();
    fs::remove_file(p("w-copy")).unwrap();

    // Directory errors.
    assert_eq!(
        fs::remove_dir(p("a")).unwrap_err().raw_os_error(),
        Some(libc::ENOTEMPTY)
    );
    assert_eq!(
        fs::create_dir(p("a")).unwrap_err().raw_os_error(),
        Some(libc::EEXIST)
    );
    fs::remove_dir_all(p("a")).unwrap();
    assert!(!p("a").exists());

    // An empty directory survives a commit.
    fs::create_dir(p("empty")).unwrap();
    m.ok("echo dirs > .zarrfs/commit");
    assert!(p("empty").is_dir());
    let names: Vec<String> = fs::read_dir(&m.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut names = names;
    names.sort();
    // The control directory is reachable by name but not listed.
    assert_eq!(names, ["empty", "u", "v"]);
    assert!(p(".zarrfs").join("status").is_file());

    // statfs answers for the repository's filesystem.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c(&m.path).as_ptr(), &mut st) }, 0);
    assert!(st.f_blocks > 0);
}

#[test]
fn unsupported_operations_fail_early() {
    let scratch = Scratch::new();
    let m = scratch.mount("m", &[]);
    let p = |rel: &str| m.path.join(rel);
    fs::write(p("f"), b"x").unwrap();
    assert_eq!(
        std::os::unix::fs::symlink("f", p("l"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EPERM)
    );
    // SAFETY: valid C strings.
    unsafe {
        assert_eq!(libc::mkfifo(c(&p("fifo")).as_ptr(), 0o644), -1);
        assert_eq!(errno(), libc::EPERM);
        let name = CString::new("user.x").unwrap();
        assert_eq!(
            libc::setxattr(
                c(&p("f")).as_ptr(),
                name.as_ptr(),
                b"v".as_ptr().cast(),
                1,
                0
            ),
            -1
        );
        assert_eq!(errno(), libc::ENOTSUP);
        let mut buf = [0u8; 16];
        assert_eq!(
            libc::getxattr(
                c(&p("f")).as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len()
            ),
            -1
        );
        assert_eq!(errno(), libc::EOPNOTSUPP);
        assert_eq!(
            libc::listxattr(c(&p("f")).as_ptr(), buf.as_mut_ptr().cast(), buf.len()),
            -1
        );
        assert_eq!(errno(), libc::EOPNOTSUPP);
    }
    // .zarrfs is not part of the view.
    assert!(
        m.fails("echo x > .zarrfs/status")
            .contains("Permission denied")
    );
    assert!(
        m.fails("echo x > .zarrfs/newfile")
            .contains("Permission denied")
    );
    assert!(
        m.fails("rm .zarrfs/status")
            .contains("Operation not permitted")
    );
    assert!(m.fails("mv f .zarrfs/f").contains("Permission denied"));
}

#[test]
fn history_trees_and_branches() {
    let scratch = Scratch::new();
    let m = scratch.mount("m", &[]);
    m.ok("mkdir -p g && echo 1 > g/f && echo one > .zarrfs/commit");
    let c1 = m.read(".zarrfs/commit").trim().to_owned();
    m.ok("mkdir .zarrfs/branches/dev .zarrfs/tags/v1");
    m.ok("echo 2 > g/f && echo two > .zarrfs/commit");
    assert_eq!(m.read(".zarrfs/branches/dev/g/f"), "1\n");
    assert_eq!(m.read(".zarrfs/tags/v1/g/f"), "1\n");
    assert_eq!(m.read(".zarrfs/branches/main/g/f"), "2\n");
    assert_eq!(m.read(&format!(".zarrfs/commits/{c1}/g/f")), "1\n");
    assert_eq!(m.ok("ls .zarrfs/branches"), "dev\nmain\n");
    assert!(m.ok("ls .zarrfs/commits").contains(&c1));
    assert!(
        m.fails("echo x > .zarrfs/branches/main/g/f")
            .contains("Read-only file system")
    );
    assert!(m.fails("mkdir .zarrfs/tags/v1").contains("File exists"));

    // Check out the branch, commit there; main is unchanged.
    m.ok("echo dev > .zarrfs/checkout");
    assert!(m.read(".zarrfs/status").contains("On branch dev"));
    assert_eq!(m.read("g/f"), "1\n");
    m.ok("echo 3 > g/f && echo three > .zarrfs/commit");
    let c3 = m.read(".zarrfs/commit").trim().to_owned();
    assert_eq!(m.read(".zarrfs/branches/main/g/f"), "2\n");
    assert_eq!(m.read(".zarrfs/branches/dev/g/f"), "3\n");

    // A tag checks out with no branch: commits are refused.
    m.ok("echo v1 > .zarrfs/checkout");
    assert!(m.read(".zarrfs/status").contains("(no branch)"));
    m.ok("echo 4 > g/f");
    assert!(m.fails("echo four > .zarrfs/commit").contains("Read-only"));
    m.ok("echo > .zarrfs/discard && echo main > .zarrfs/checkout");
    assert_eq!(m.read("g/f"), "2\n");
    assert!(
        m.fails("echo nosuch > .zarrfs/checkout")
            .contains("No such file")
    );

    // rmdir deletes a branch, but not the one the mount is on; its
    // commits stay. Tags cannot be removed.
    assert!(
        m.fails("rmdir .zarrfs/branches/main")
            .contains("Device or resource busy")
    );
    assert!(
        m.fails("rmdir .zarrfs/tags/v1")
            .contains("Operation not permitted")
    );
    m.ok("rmdir .zarrfs/branches/dev");
    assert_eq!(m.ok("ls .zarrfs/branches"), "main\n");
    assert!(!m.path.join(".zarrfs/branches/dev").exists());
    assert_eq!(m.read(&format!(".zarrfs/commits/{c3}/g/f")), "3\n");
    assert!(
        m.fails("rmdir .zarrfs/branches/dev")
            .contains("No such file")
    );
    assert!(
        m.fails("echo dev > .zarrfs/checkout")
            .contains("No such file")
    );
}

/// Ask the kernel to drop its dentry and inode caches, so that it
/// forgets the mount's inodes (root only; `false` when not allowed).
fn drop_caches() -> bool {
    fs::write("/proc/sys/vm/drop_caches", "2").is_ok()
}

#[test]
fn inode_numbers_last_while_the_kernel_holds_them() {
    let scratch = Scratch::new();
    let m = scratch.mount("m", &[]);
    let p = |rel: &str| m.path.join(rel);
    fs::create_dir(p("d")).unwrap();
    for i in 0..2000 {
        fs::write(p(&format!("d/c{i}")), i.to_string()).unwrap();
    }
    let held = fs::File::open(p("d/c7")).unwrap();
    let ino = held.metadata().unwrap().ino();
    assert_eq!(fs::symlink_metadata(p("d/c7")).unwrap().ino(), ino);
    let listed: Vec<(String, u64)> = fs::read_dir(p("d"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().into_string().unwrap(), e.ino())
        })
        .collect();
    assert_eq!(listed.len(), 2000);
    for (name, d_ino) in listed.iter().take(50) {
        assert_eq!(
            fs::symlink_metadata(p(&format!("d/{name}"))).unwrap().ino(),
            *d_ino,
            "readdir and lstat agree"
        );
    }
    let before = fs::symlink_metadata(p("d/c8")).unwrap().ino();
    if !drop_caches() {
        eprintln!("cannot drop the kernel's caches here: skipping the rest");
        return;
    }
    // The kernel's forgets reach the daemon asynchronously.
    let mut renumbered = false;
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        if fs::symlink_metadata(p("d/c8")).unwrap().ino() != before {
            renumbered = true;
            break;
        }
        drop_caches();
    }
    assert!(renumbered, "a forgotten file is numbered afresh");
    assert_eq!(
        fs::symlink_metadata(p("d/c7")).unwrap().ino(),
        ino,
        "an open file keeps its number"
    );
    assert_eq!(held.metadata().unwrap().ino(), ino);
    drop(held);
    for i in (0..2000).step_by(97) {
        assert_eq!(
            fs::read_to_string(p(&format!("d/c{i}"))).unwrap(),
            i.to_string()
        );
    }
    fs::remove_dir_all(p("d")).unwrap();
    assert!(!p("d").exists());
}

#[test]
fn a_write_handle_follows_the_view_across_a_commit() {
    let scratch = Scratch::new();
    let m = scratch.mount("m", &[]);
    let p = |rel: &str| m.path.join(rel);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(p("f"))
        .unwrap();
    f.write_all(b"first").unwrap();
    fs::write(p(".zarrfs/commit"), b"first").unwrap();
    let c1 = m.read(".zarrfs/commit").trim().to_owned();
    assert!(m.changed().is_empty());
    // The handle writes into the new view, not into what was committed.
    f.write_all(b" second").unwrap();
    drop(f);
    assert_eq!(m.read("f"), "first second");
    assert_eq!(m.changed(), ["f"]);
    assert_eq!(m.read(&format!(".zarrfs/commits/{c1}/f")), "first");
    m.ok("echo second > .zarrfs/commit");
    assert_eq!(m.read(".zarrfs/branches/main/f"), "first second");
}

#[test]
fn a_read_only_mount_refuses_changes_but_checks_out() {
    let scratch = Scratch::new();
    let w = scratch.mount("w", &[]);
    w.ok("echo 1 > f && echo one > .zarrfs/commit");
    let r = scratch.mount("r", &["--read-only"]);
    assert_eq!(r.read("f"), "1\n");
    assert!(r.fails("echo 2 > f").contains("Read-only file system"));
    assert!(r.fails("mkdir d").contains("Read-only file system"));
    assert!(r.fails("rm f").contains("Read-only file system"));
    w.ok("echo 2 > f && echo two > .zarrfs/commit");
    assert_eq!(r.read("f"), "1\n");
    r.ok("echo > .zarrfs/checkout");
    assert_eq!(r.read("f"), "2\n");
}

#[test]
fn renaming_a_directory_moves_its_subtree() {
    let scratch = Scratch::new();
    let m = scratch.mount("m", &[]);
    let p = |rel: &str| m.path.join(rel);
    fs::create_dir_all(p("a/b")).unwrap();
    fs::write(p("a/b/f"), b"f").unwrap();
    m.ok("echo base > .zarrfs/commit");
    fs::write(p("a/new"), b"new").unwrap();
    let ino = fs::metadata(p("a/b/f")).unwrap().ino();
    fs::rename(p("a"), p("z")).unwrap();
    assert_eq!(
        fs::metadata(p("z/b/f")).unwrap().ino(),
        ino,
        "inode numbers move"
    );
    assert_eq!(fs::read(p("z/b/f")).unwrap(), b"f");
    assert_eq!(fs::read(p("z/new")).unwrap(), b"new");
    assert!(!p("a").exists());
    assert_eq!(m.changed(), ["a/", "z/b/f", "z/new"]);
}

#[test]
fn a_new_file_has_its_mode_and_the_time_it_was_created() {
    use std::os::unix::fs::OpenOptionsExt;
    use std::time::{Duration, SystemTime};

    let scratch = Scratch::new();
    let m = scratch.mount("m", &[]);
    // The first file starts the daemon making staged files ahead; the
    // next ones are made well before the program creates them.
    fs::write(m.path.join("first"), b"").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // ext4 dates files by the coarse clock, a tick behind now().
    let before = SystemTime::now() - Duration::from_millis(100);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(m.path.join("second"))
        .unwrap();
    let attr = file.metadata().unwrap();
    drop(file);
    assert_eq!(attr.mode() & 0o7777, 0o640);
    assert_eq!(attr.len(), 0);
    let mtime = attr.modified().unwrap();
    assert!(
        mtime >= before,
        "mtime {mtime:?} is before the create ({before:?})"
    );
    let again = fs::metadata(m.path.join("second")).unwrap();
    assert_eq!(again.modified().unwrap(), mtime);
    assert_eq!(again.ino(), attr.ino());
    m.unmount();
}
