//! What the kernel caches of the view is right at once after every view
//! switch: entries and attributes it holds deep in the tree, in a
//! process's working directory and for an open file, show the view that
//! a checkout, a discard or a commit over others' commits made.
//!
//! The mount invalidates only the top-level entries and those the kernel
//! may keep in use (see `zarrfs::fs::kernel_cache`); these tests look at
//! what lies below them.

mod mount_util;

use std::fs;
use std::os::unix::fs::MetadataExt;

use mount_util::Scratch;

#[test]
fn entries_cached_deep_in_the_tree_follow_a_checkout() {
    let scratch = Scratch::new();
    let m = scratch.mount("m", &[]);
    m.ok("mkdir -p a/b/c && echo one > a/b/c/f && echo base > .zarrfs/commit");
    m.ok("mkdir .zarrfs/branches/dev");
    m.ok("echo three! > a/b/c/f && echo new > a/b/c/g && mkdir a/b/c/d");
    m.ok("echo main > .zarrfs/commit");
    // The kernel holds these entries and attributes now.
    assert_eq!(m.ok("stat -c %s a/b/c/f a/b/c/g"), "7\n4\n");
    assert_eq!(m.ok("ls a/b/c"), "d\nf\ng\n");

    m.ok("echo dev > .zarrfs/checkout");
    assert_eq!(m.ok("stat -c %s a/b/c/f"), "4\n");
    assert_eq!(m.read("a/b/c/f"), "one\n");
    assert!(m.fails("stat a/b/c/g").contains("No such file"));
    assert!(m.fails("stat a/b/c/d").contains("No such file"));
    assert_eq!(m.ok("ls a/b/c"), "f\n");

    // And back: what dev did not have appears at once.
    m.ok("echo main > .zarrfs/checkout");
    assert_eq!(m.ok("stat -c %s a/b/c/g && cat a/b/c/f"), "4\nthree!\n");
}

#[test]
fn a_working_directory_and_an_open_file_follow_a_checkout() {
    let scratch = Scratch::new();
    let m = scratch.mount("m", &[]);
    m.ok("mkdir -p a/b && echo one > a/b/f && echo base > .zarrfs/commit");
    m.ok("mkdir .zarrfs/branches/dev");
    m.ok("echo three! > a/b/f && echo new > a/b/g && echo main > .zarrfs/commit");

    // A shell working in a/b (its working directory stays in use across
    // the checkout), with a/b/f open.
    let out = m.ok("cd a/b && exec 3< f && stat -c %s f g >/dev/null \
         && echo dev > ../../.zarrfs/checkout \
         && stat -c %s f && cat f && ls && (stat g 2>/dev/null || echo no g) \
         && stat -L -c %s /proc/self/fd/3");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..4], ["4", "one", "f", "no g"], "{out}");
    // The open file still reads the bytes it was opened on (7 bytes), as
    // a file replaced by a rename would.
    assert_eq!(lines[4], "7", "{out}");
}

#[test]
fn entries_cached_before_a_discard_are_gone_after_it() {
    let scratch = Scratch::new();
    let m = scratch.mount("m", &[]);
    m.ok("mkdir -p a/b && echo one > a/b/f && echo base > .zarrfs/commit");
    m.ok("mkdir -p a/b/new/deeper && echo x > a/b/new/deeper/x && echo more >> a/b/f");
    assert_eq!(m.ok("stat -c %s a/b/f a/b/new/deeper/x"), "9\n2\n");
    m.ok("echo > .zarrfs/discard");
    assert!(m.fails("stat a/b/new/deeper/x").contains("No such file"));
    assert!(m.fails("stat a/b/new").contains("No such file"));
    assert_eq!(m.ok("stat -c %s a/b/f"), "4\n");
    assert_eq!(m.read("a/b/f"), "one\n");
}

#[test]
fn a_commit_over_another_mounts_commit_shows_its_files_at_once() {
    let scratch = Scratch::new();
    let m1 = scratch.mount("m1", &[]);
    m1.ok("mkdir -p a/b && echo one > a/b/f && echo base > .zarrfs/commit");
    let m2 = scratch.mount("m2", &[]);
    // m1 holds a/b/f and its attributes; m2 changes it and commits.
    assert_eq!(m1.ok("stat -c %s a/b/f"), "4\n");
    let before = fs::metadata(m1.path.join("a/b/f")).unwrap().ino();
    m2.ok("echo changed-by-m2 > a/b/f && echo m2 > .zarrfs/commit");
    // m1 commits another path: rebased over m2's commit, it shows m2's
    // file at once.
    m1.ok("echo mine > a/mine && echo m1 > .zarrfs/commit");
    assert_eq!(m1.ok("stat -c %s a/b/f"), "14\n");
    assert_eq!(m1.read("a/b/f"), "changed-by-m2\n");
    let after = fs::metadata(m1.path.join("a/b/f")).unwrap().ino();
    assert!(before != 0 && after != 0);
}

#[test]
fn after_a_commit_cached_attributes_come_to_show_the_commit_time() {
    let scratch = Scratch::new();
    let m = scratch.mount("m", &[]);
    m.ok("mkdir -p a/b && echo one > a/b/f && touch -d 2001-02-03T04:05:06Z a/b/f");
    // The kernel holds f's attributes: the time it was given.
    assert_eq!(m.ok("stat -c %Y a/b/f"), "981173106\n");
    m.ok("echo c > .zarrfs/commit");
    let log: serde_json::Value = serde_json::from_str(&m.read(".zarrfs/log.json")).unwrap();
    let date = humantime::parse_rfc3339(log[0]["date"].as_str().unwrap()).unwrap();
    let committed = date
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    // The view did not change, so the kernel forgets its cache in the
    // background: within a few seconds stat shows the commit's time, as
    // a fresh mount would.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let shown = m.ok("stat -c %Y a/b/f");
        if shown.trim() == committed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stat still shows {shown} after the commit at {committed}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(m.read("a/b/f"), "one\n");
}
