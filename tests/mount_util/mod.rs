//! Helpers for the tests that mount for real: a `Mount` guard that
//! always unmounts (and kills its daemon) when dropped, even when a test
//! fails, and shell helpers that run in the mount.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_zarrfs");

/// Wait until `done` holds, for at most `limit`; whether it did.
pub fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A scratch directory with a fresh repository in it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let out = Command::new(BIN).arg("init").arg(&repo).output().unwrap();
        assert!(out.status.success(), "init: {}", text(&out.stderr));
        Scratch { dir, repo }
    }

    /// A new empty directory to mount on.
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// Mount the repository at `<scratch>/<name>`.
    pub fn mount(&self, name: &str, args: &[&str]) -> Mount {
        Mount::new(&self.repo, &self.mountpoint(name), args)
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let target = path.display().to_string();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(target.as_str()))
}

/// Whether the process is still there: any of its threads not yet a
/// zombie. A killed process's main thread can be a zombie while its other
/// threads, woken by the signal, still wait for a CPU to exit on; until
/// the last one has, the process holds its files and locks (a mount
/// right after would find its session's lock held).
fn alive(pid: i32) -> bool {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    threads.filter_map(|t| t.ok()).any(|t| {
        std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
            !stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        })
    })
}

/// A live mount. Dropping it unmounts with `zarrfs umount`, falls back to
/// `umount -l`, and kills the daemon if it is still there.
pub struct Mount {
    pub path: PathBuf,
    pub repo: PathBuf,
    pub pid: i32,
}

impl Mount {
    /// `zarrfs mount REPO MOUNTPOINT ARGS`, and the arguments in
    /// `ZARRFS_TEST_MOUNT_ARGS` (split at spaces), with which scripts/test
    /// runs the mount tests once more (over FUSE io_uring queues).
    pub fn new(repo: &Path, mountpoint: &Path, args: &[&str]) -> Mount {
        let mountpoint = std::fs::canonicalize(mountpoint).unwrap();
        let extra = std::env::var("ZARRFS_TEST_MOUNT_ARGS").unwrap_or_default();
        let out = Command::new(BIN)
            .arg("mount")
            .arg(repo)
            .arg(&mountpoint)
            .args(args)
            .args(extra.split_whitespace())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount failed: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let mount = Mount::new_existing(repo, &mountpoint);
        if extra.split_whitespace().any(|a| a == "--io-uring") {
            // A run meant to go over the rings must not pass on /dev/fuse.
            assert_eq!(
                mount.session_json()["io_uring"],
                true,
                "ZARRFS_TEST_MOUNT_ARGS asks for --io-uring, but the mount reads /dev/fuse (is the fuse module's enable_uring set?)"
            );
        }
        mount
    }

    /// Take charge of a mount made by the caller (to unmount it on drop).
    pub fn new_existing(repo: &Path, mountpoint: &Path) -> Mount {
        // The guard first, so that the mount goes even if what follows
        // fails the test.
        let mut mount = Mount {
            path: std::fs::canonicalize(mountpoint).unwrap(),
            repo: repo.to_owned(),
            pid: 0,
        };
        mount.pid = mount.session_json()["pid"].as_i64().unwrap() as i32;
        mount
    }

    /// `.zarrfs/session.json`, parsed.
    pub fn session_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.read(".zarrfs/session.json")).unwrap()
    }

    /// Run a shell script in the mount's root.
    pub fn sh(&self, script: &str) -> Output {
        // bash, not dash: dash's echo reports every failed write as "I/O
        // error", where bash names the errno.
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(&self.path)
            .output()
            .unwrap()
    }

    /// Run a shell script that must succeed; its stdout.
    pub fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "`{script}` failed in {}: {}{}",
            self.path.display(),
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Run a shell script that must fail; its stderr.
    pub fn fails(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            !out.status.success(),
            "`{script}` should have failed in {}: {}",
            self.path.display(),
            text(&out.stdout)
        );
        text(&out.stderr)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path.join(rel))
            .unwrap_or_else(|e| panic!("reading {rel}: {e}"))
    }

    pub fn session(&self) -> String {
        self.read(".zarrfs/session").trim().to_owned()
    }

    /// The changed paths `.zarrfs/status` lists.
    pub fn changed(&self) -> Vec<String> {
        let status = self.read(".zarrfs/status");
        let mut paths: Vec<String> = status
            .lines()
            .filter(|l| l.starts_with("  "))
            .map(|l| l.trim().rsplit(' ').next().unwrap().to_owned())
            .collect();
        paths.sort();
        paths
    }

    /// Unmount now, waiting for the daemon to exit.
    pub fn unmount(mut self) {
        self.cleanup();
    }

    /// Kill the daemon with SIGKILL, leaving a dead mount, which is
    /// detached with `umount -l`.
    pub fn crash(mut self) {
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        wait_gone(self.pid);
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
        self.pid = 0;
    }

    fn cleanup(&mut self) {
        if mounted(&self.path) {
            let ok = Command::new(BIN)
                .arg("umount")
                .arg(&self.path)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&self.path).output();
            }
        }
        if self.pid > 0 {
            wait_gone_for(self.pid, Duration::from_secs(20));
            if alive(self.pid) {
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                wait_gone(self.pid);
            }
        }
        self.pid = 0;
    }
}

fn wait_gone(pid: i32) {
    wait_gone_for(pid, Duration::from_secs(10));
}

fn wait_gone_for(pid: i32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// A float64 2x2 chunk as raw little-endian bytes, as a shell `printf`
/// cannot easily make: written with std::fs instead.
pub fn chunk(values: [f64; 4]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
