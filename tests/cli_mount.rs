//! The `zarrfs` commands that act on a mount, run as a user runs them
//! (inside the mount, or with --mount), and the mount(8) helper that makes
//! `mount -t fuse.zarrfs` and fstab lines work.

use std::path::Path;
use std::process::{Command, Output};

mod mount_util;

use mount_util::{BIN, Mount};

fn mount(repo: &Path, at: &Path, extra: &[&str]) -> Mount {
    std::fs::create_dir_all(at).unwrap();
    Mount::new(repo, at, extra)
}

fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(path.to_str().unwrap()))
}

/// Unmounts, lazily, a mount made by mount(8) if a test left it.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn zarrfs(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn everyday_commands_inside_a_mount() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    assert!(
        zarrfs(dir.path(), &["init", repo.to_str().unwrap()])
            .status
            .success()
    );
    let a = mount(
        &repo,
        &dir.path().join("a"),
        &["--author", "Ada <ada@example.org>"],
    );
    let b = mount(&repo, &dir.path().join("b"), &[]);
    std::fs::create_dir_all(a.path.join("meta")).unwrap();
    let inside = a.path.join("meta");

    // status from a subdirectory finds the mount, like git; an empty
    // directory is a change of its own.
    let out = zarrfs(&inside, &["status"]);
    assert!(
        text(&out.stdout).contains("  A [C] meta/\n"),
        "{}",
        text(&out.stdout)
    );
    std::fs::write(
        a.path.join("meta/root.group.json"),
        br#"{"attributes": {}}"#,
    )
    .unwrap();
    let out = zarrfs(&inside, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        status["changes"].as_array().unwrap().len(),
        1,
        "meta is no longer empty"
    );
    assert_eq!(
        status["changes"].as_array().unwrap().len(),
        1,
        "meta is no longer empty"
    );
    assert_eq!(status["changes"][0]["path"], "meta/root.group.json");
    assert_eq!(status["changes"][0]["metadata"], true);

    // commit: prints the id; nothing left: exit 6.
    let out = zarrfs(&inside, &["commit", "-m", "root group\n\nwith a body"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_owned();
    assert_eq!(id.len(), 64);
    let out = zarrfs(&inside, &["commit", "-m", "again"]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("nothing to commit"),
        "{}",
        text(&out.stderr)
    );

    // log through the mount; the message keeps its body.
    let out = zarrfs(&a.path, &["log", "-n", "1", "--json"]);
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(log[0]["id"], id.as_str());
    assert_eq!(log[0]["author"], "Ada <ada@example.org>");
    assert_eq!(log[0]["message"], "root group\n\nwith a body");

    // B conflicts with A: exit 1 and Arraylake's message; checkout refused
    // with exit 8 while B has changes; discard, checkout, and B is current.
    std::fs::write(b.path.join("x"), b"b").unwrap();
    std::fs::create_dir_all(b.path.join("meta")).unwrap();
    std::fs::write(
        b.path.join("meta/root.group.json"),
        br#"{"attributes": {"b": 1}}"#,
    )
    .unwrap();
    let out = zarrfs(&b.path, &["commit", "-m", "B"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("->main, including ['meta/root.group.json']"),
        "{}",
        text(&out.stderr)
    );
    let out = zarrfs(&b.path, &["checkout"]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("uncommitted changes"));
    assert!(
        b.path.join("x").exists(),
        "a refused checkout loses nothing"
    );
    assert_eq!(zarrfs(&b.path, &["discard"]).status.code(), Some(0));
    let out = zarrfs(&b.path, &["checkout"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), id);
    assert!(b.path.join("meta/root.group.json").exists());

    // Invalid metadata: exit 7, naming the file.
    std::fs::write(b.path.join("meta/root.group.json"), b"[1, 2]").unwrap();
    let out = zarrfs(&b.path, &["commit", "-m", "bad"]);
    assert_eq!(out.status.code(), Some(7));
    assert!(
        text(&out.stderr).contains("meta/root.group.json"),
        "{}",
        text(&out.stderr)
    );

    // Branches and tags through the mount, at the session's base; diff.
    assert_eq!(zarrfs(&a.path, &["branch", "dev"]).status.code(), Some(0));
    assert_eq!(zarrfs(&a.path, &["tag", "v1"]).status.code(), Some(0));
    let out = zarrfs(&a.path, &["branch", "--json"]);
    let branches: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(branches[0]["name"], "dev");
    assert_eq!(branches[0]["commit"], id.as_str());
    let out = zarrfs(&a.path, &["diff", "v1~", "v1"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "an unknown revision is not found"
    );
    let first = log_ids(&a.path).pop().unwrap();
    let out = zarrfs(&a.path, &["diff", &first]);
    assert_eq!(text(&out.stdout), "A [M] meta/root.group.json\n");

    // B's session has uncommitted changes: `sessions` lists it.
    let out = zarrfs(&a.path, &["sessions", "--json"]);
    let sessions: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        sessions
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["mountpoint"] == b.path.to_str().unwrap())
    );
}

fn log_ids(mount: &Path) -> Vec<String> {
    let out = zarrfs(mount, &["log", "--json"]);
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    log.as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The mount helper lives in /sbin for the length of a test.
struct HelperLink;

const HELPER: &str = "/sbin/mount.fuse.zarrfs";

impl HelperLink {
    fn install() -> HelperLink {
        let _ = std::fs::remove_file(HELPER);
        std::os::unix::fs::symlink(BIN, HELPER).unwrap();
        HelperLink
    }
}

impl Drop for HelperLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(HELPER);
    }
}

#[test]
fn mount_t_fuse_zarrfs_and_an_fstab_line() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: installing a mount helper in /sbin needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    assert!(
        zarrfs(dir.path(), &["init", repo.to_str().unwrap()])
            .status
            .success()
    );
    let at = dir.path().join("mp");
    std::fs::create_dir(&at).unwrap();
    let _helper = HelperLink::install();

    let status = Command::new("mount")
        .args([
            "-t",
            "fuse.zarrfs",
            "-o",
            "branch=main,author=Ada <ada@example.org>",
        ])
        .arg(&repo)
        .arg(&at)
        .status()
        .unwrap();
    let mounted = Unmount(at.clone());
    assert!(status.success());
    std::fs::write(at.join("f"), b"1").unwrap();
    let out = zarrfs(&at, &["commit", "-m", "through mount(8)"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(log_author(&at), "Ada <ada@example.org>");
    assert!(Command::new("umount").arg(&at).status().unwrap().success());
    drop(mounted);

    // An fstab line (from a file of our own, not /etc/fstab), read-only.
    let fstab = dir.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "{} {} fuse.zarrfs noauto,ro,x-systemd.automount 0 0\n",
            repo.display(),
            at.display()
        ),
    )
    .unwrap();
    let status = Command::new("mount")
        .arg("-T")
        .arg(&fstab)
        .arg(&at)
        .status()
        .unwrap();
    let _mounted = Unmount(at.clone());
    assert!(status.success());
    assert_eq!(std::fs::read(at.join("f")).unwrap(), b"1");
    let refused = std::fs::write(at.join("g"), b"2").unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EROFS));

    let out = Command::new("mount")
        .args(["-t", "fuse.zarrfs", "-o", "colour=blue"])
        .arg(&repo)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown zarrfs mount option 'colour=blue'"),
        "{}",
        text(&out.stderr)
    );
}

fn log_author(mount: &Path) -> String {
    let out = zarrfs(mount, &["log", "-n", "1", "--json"]);
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    log[0]["author"].as_str().unwrap().to_owned()
}

/// Holds the repository's write lock as `zarrfs gc` does while it runs,
/// so that a commit has to wait for as long as a test needs.
fn hold_as_gc(repo: &Path) -> zarrfs::storage::LockGuard {
    let repo = zarrfs::repo::Repo::open(repo).unwrap();
    repo.storage().lock("write.lock", true).unwrap()
}

/// Waits, up to a minute, until `read` gives something containing `what`.
fn wait_to_see(what: &str, read: impl Fn() -> String) {
    if !mount_util::eventually(std::time::Duration::from_secs(60), || read().contains(what)) {
        let tail: String = read().chars().rev().take(400).collect();
        panic!(
            "never saw {what:?}; last ended: {}",
            tail.chars().rev().collect::<String>()
        );
    }
}

#[test]
fn a_long_commit_shows_progress_on_a_terminal_and_is_quiet_otherwise() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: script(1) from util-linux is needed to give the command a terminal");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    assert!(
        zarrfs(dir.path(), &["init", repo.to_str().unwrap()])
            .status
            .success()
    );
    let m = mount(&repo, &dir.path().join("m"), &[]);
    // Each commit waits for a gc that the test ends, so that it lasts
    // long enough for a progress bar however fast the machine is.
    let progress = || std::fs::read_to_string(m.path.join(".zarrfs/progress")).unwrap();

    // Not a terminal: only the commit id, nothing on stderr.
    std::fs::write(m.path.join("quiet"), "q").unwrap();
    let gc = hold_as_gc(&repo);
    let quiet = Command::new(BIN)
        .args(["commit", "-m", "quiet"])
        .current_dir(&m.path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_to_see("\"waiting\"", progress);
    // Past the delay after which a terminal would get a bar.
    std::thread::sleep(std::time::Duration::from_millis(800));
    drop(gc);
    let out = quiet.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim().len(), 64, "{}", text(&out.stdout));

    // A terminal (script(1) gives one): a bar that says what it waits for,
    // and the commit lands once the gc ends.
    std::fs::write(m.path.join("loud"), "l").unwrap();
    let gc = hold_as_gc(&repo);
    let typescript = dir.path().join("typescript");
    let mut loud = Command::new("script")
        .args(["-q", "-e", "-f", "-c", &format!("{BIN} commit -m loud")])
        .arg(&typescript)
        .current_dir(&m.path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let shown = || text(&std::fs::read(&typescript).unwrap_or_default());
    wait_to_see("waiting for a gc to end", shown);
    drop(gc);
    assert!(loud.wait().unwrap().success(), "{}", shown());
    let log = text(&zarrfs(&m.path, &["log"]).stdout);
    assert!(log.contains("loud") && log.contains("quiet"), "{log}");
}

#[test]
fn the_author_defaults_to_git_identity_and_the_status_names_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(
        home.join(".gitconfig"),
        "[user]\n\tname = Grace Hopper\n\temail = grace@example.org\n",
    )
    .unwrap();
    let repo = dir.path().join("repo");
    assert!(
        zarrfs(dir.path(), &["init", repo.to_str().unwrap()])
            .status
            .success()
    );
    let at = dir.path().join("m");
    std::fs::create_dir(&at).unwrap();
    let out = Command::new(BIN)
        .arg("mount")
        .arg(&repo)
        .arg(&at)
        .env("HOME", &home)
        .env_remove("GIT_CONFIG_GLOBAL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = Mount::new_existing(&repo, &at);
    std::fs::write(m.path.join("f"), b"x").unwrap();
    let out = zarrfs(&m.path, &["status"]);
    let shown = text(&out.stdout);
    assert!(shown.contains("\nDaemon log: "), "{shown}");
    let log_path = shown.split("Daemon log: ").nth(1).unwrap().trim();
    assert!(
        Path::new(log_path).is_file(),
        "the named log exists: {log_path}"
    );
    assert!(
        zarrfs(&m.path, &["commit", "-m", "by git identity"])
            .status
            .success()
    );
    let out = zarrfs(&m.path, &["log", "-n", "1", "--json"]);
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(log[0]["author"], "Grace Hopper <grace@example.org>");
}

/// A small tmpfs, unmounted when dropped (also when the test fails).
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    fn new(at: &Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs at {}", at.display());
        SmallFs(at.to_owned())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A repository alone on a small tmpfs, in a temporary directory (listed
/// so that they go in this order: the tmpfs, then the directory).
fn repo_on_small_disk(size: &str) -> (tempfile::TempDir, SmallFs, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallFs::new(&dir.path().join("disk"), size);
    let repo = disk.0.join("repo");
    assert!(
        zarrfs(dir.path(), &["init", repo.to_str().unwrap()])
            .status
            .success()
    );
    (dir, disk, repo)
}

#[test]
fn a_mount_on_a_full_disk_says_why_and_leaves_no_session_behind() {
    let (dir, disk, repo) = repo_on_small_disk("2m");
    // Fill the disk: the write stops at the first block that does not fit.
    let filler = disk.0.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 4 << 20]);
    let at = dir.path().join("mnt");
    std::fs::create_dir_all(&at).unwrap();
    let _unmount = Unmount(at.clone());

    let out = zarrfs(
        dir.path(),
        &["mount", repo.to_str().unwrap(), at.to_str().unwrap()],
    );
    assert!(!out.status.success(), "mounted on a full disk");
    assert!(!is_mounted(&at));
    let said = text(&out.stderr);
    // The daemon's own error reaches the caller although its log, on the
    // same full disk, could not be written.
    assert!(
        said.contains("No space left on device") && said.contains("session directory"),
        "{said}"
    );
    let sessions = std::fs::read_dir(repo.join("sessions")).unwrap().count();
    assert_eq!(sessions, 0, "a half-made session was left: {said}");

    // With room again, the same command mounts.
    std::fs::remove_file(&filler).unwrap();
    let a = mount(&repo, &at, &[]);
    a.ok("echo hi > note.txt");
    assert_eq!(a.read("note.txt"), "hi\n");
    a.unmount();
}

#[test]
fn a_session_keeps_what_was_written_before_its_disk_filled_and_commits_it_once_there_is_room() {
    let (dir, disk, repo) = repo_on_small_disk("16m");
    // The files to copy in, on another filesystem.
    let sources = dir.path().join("src");
    std::fs::create_dir(&sources).unwrap();
    for n in 0..24 {
        let bytes: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 + n * 13) as u8).collect();
        std::fs::write(sources.join(format!("c{n}")), bytes).unwrap();
    }
    let at = dir.path().join("mnt");
    let a = mount(&repo, &at, &[]);
    // Copy until the disk is full; `cp` fails on the file that did not fit.
    let copied = a.ok(&format!(
        "for n in $(seq 0 23); do cp {src}/c$n c$n 2>/dev/null || break; echo $n; done",
        src = sources.display()
    ));
    let copied: Vec<u32> = copied.lines().map(|l| l.parse().unwrap()).collect();
    assert!(
        !copied.is_empty() && copied.len() < 24,
        "the disk should fill up part way: copied {copied:?}"
    );
    // While it is full, the session's journal cannot be written (the
    // mount flushes it every two seconds): a commit says why.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let said = a.fails("echo full > .zarrfs/commit");
    assert!(said.contains("No space left on device"), "{said}");

    // Room again: the same session commits what it had.
    let status = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&disk.0)
        .status()
        .unwrap();
    assert!(status.success());
    a.ok("echo 'room again' > .zarrfs/commit");
    a.unmount();
    let b = mount(&repo, &at, &[]);
    for n in &copied {
        b.ok(&format!("cmp c{n} {}/c{n}", sources.display()));
    }
    assert_eq!(log_ids(&at).len(), 2, "the first commit and 'room again'");
    b.unmount();
}
