//! A normal user mounts, commits and unmounts through fusermount3, as on
//! a workstation. Setting that up (a user, and /dev/fuse open to users as
//! Debian's udev rule makes it) needs root, which CI has.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_zarrfs");
const USER: &str = "zarrfs-test";

/// /dev/fuse readable and writable by everyone for the test's length,
/// as on a stock Debian or Ubuntu host; restored after.
struct DevFuseOpen {
    mode: u32,
}

impl DevFuseOpen {
    fn set() -> DevFuseOpen {
        let mode = std::fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o7777;
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666)).unwrap();
        DevFuseOpen { mode }
    }
}

impl Drop for DevFuseOpen {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(self.mode));
    }
}

/// Unmounts (as root, lazily if need be) whatever the test left mounted.
struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        if mounts.contains(self.0.to_str().unwrap()) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
}

fn as_user(args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", USER, "--", BIN])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_normal_user_mounts_commits_and_unmounts_through_fusermount3() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: setting up a test user needs root (CI runs as root)");
        return;
    }
    assert!(
        Command::new("fusermount3").arg("-V").output().is_ok(),
        "fusermount3 is missing: install fuse3 (scripts/test does so as root)"
    );
    if Command::new("id").arg(USER).output().unwrap().status.code() != Some(0) {
        let made = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .status()
            .unwrap();
        assert!(made.success(), "cannot create the test user {USER}");
    }
    let _dev_fuse = DevFuseOpen::set();
    let dir = tempfile::tempdir().unwrap();
    let chown = Command::new("chown")
        .args([USER])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(chown.success());
    let repo = dir.path().join("repo");
    let at = dir.path().join("mnt");
    let (repo_arg, at_arg) = (repo.to_str().unwrap(), at.to_str().unwrap());
    let _unmount = Unmount(&at);

    assert!(as_user(&["init", repo_arg]).status.success());
    let mkdir = Command::new("runuser")
        .args(["-u", USER, "--", "mkdir", at_arg])
        .status()
        .unwrap();
    assert!(mkdir.success());
    let out = as_user(&["mount", repo_arg, at_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let write = Command::new("runuser")
        .args(["-u", USER, "--", "sh", "-c"])
        .arg(format!(
            "echo data > {at_arg}/chunk && echo 'by a user' > {at_arg}/.zarrfs/commit"
        ))
        .output()
        .unwrap();
    assert!(
        write.status.success(),
        "{}",
        String::from_utf8_lossy(&write.stderr)
    );
    // The mount is the user's: other users, root included, are kept out
    // (no allow_other), so the user reads it.
    let cat = Command::new("runuser")
        .args(["-u", USER, "--", "cat"])
        .arg(at.join(".zarrfs/status.json"))
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&cat.stdout).unwrap();
    assert_eq!(
        status["passthrough"], false,
        "passthrough needs CAP_SYS_ADMIN"
    );

    let out = as_user(&["umount", at_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .contains(at_arg)
    );
    let log = as_user(&["log", "--repo", repo_arg, "-n", "1"]);
    assert!(String::from_utf8_lossy(&log.stdout).contains("by a user"));
}
