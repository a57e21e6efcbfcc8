//! FUSE over io_uring: with `--io-uring`, where the kernel offers it (Linux
//! 6.14+, the fuse module's `enable_uring` parameter set), a mount takes
//! its requests from per-CPU queues instead of /dev/fuse. These tests set
//! the parameter for their run (root only; it is restored after) and check
//! that such a mount says it uses the rings, that files written from every
//! CPU at once come back whole, that a long commit does not hold up the
//! other requests of its CPU's queue, and that a mount without the flag
//! stays on /dev/fuse. `scripts/test` also runs the other mount tests and
//! the Zarr client tests over the rings (ZARRFS_TEST_MOUNT_ARGS).

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod mount_util;

use mount_util::{Mount, Scratch};

const PARAMETER: &str = "/sys/module/fuse/parameters/enable_uring";

/// The module parameter set to Y while any test of this file holds it,
/// and put back as it was when the last lets go.
struct UringEnabled;

/// How many tests hold the parameter, and what it was before the first.
static HOLDERS: Mutex<(usize, Option<String>)> = Mutex::new((0, None));

impl UringEnabled {
    /// None (the test says why and passes) where this kernel has no FUSE
    /// over io_uring or the parameter cannot be set (not root).
    fn hold() -> Option<UringEnabled> {
        let mut holders = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        if holders.0 == 0 {
            let Ok(before) = std::fs::read_to_string(PARAMETER) else {
                eprintln!(
                    "skipped: this kernel has no FUSE over io_uring ({PARAMETER} is missing)"
                );
                return None;
            };
            if let Err(e) = std::fs::write(PARAMETER, "Y") {
                eprintln!("skipped: cannot enable FUSE over io_uring ({PARAMETER}: {e})");
                return None;
            }
            holders.1 = Some(before.trim().to_owned());
        }
        holders.0 += 1;
        Some(UringEnabled)
    }
}

impl Drop for UringEnabled {
    fn drop(&mut self) {
        let mut holders = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        holders.0 -= 1;
        if holders.0 == 0
            && let Some(before) = holders.1.take()
        {
            let _ = std::fs::write(PARAMETER, before);
        }
    }
}

/// A mount with `--io-uring` (and `args`), checked to be on the rings.
fn mount_over_rings(scratch: &Scratch, name: &str, args: &[&str]) -> Mount {
    let args: Vec<&str> = ["--io-uring"].iter().chain(args).copied().collect();
    let m = scratch.mount(name, &args);
    assert_eq!(
        m.session_json()["io_uring"],
        true,
        "the mount uses the rings"
    );
    m
}

/// The CPUs this process may run on.
fn cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t filled in by the kernel.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Keep the calling thread on one CPU, so that its requests go to that
/// CPU's queue.
fn pin_to(cpu: usize) {
    // SAFETY: as in `cpus`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

fn content(writer: usize, file: usize) -> Vec<u8> {
    let mut bytes = format!("writer {writer} file {file}\n").into_bytes();
    // Past one page, so that reads cross a page boundary.
    bytes.resize(5000 + file % 7 * 1000, b'0' + (file % 10) as u8);
    bytes
}

fn read_back(root: &Path, writers: usize, files: usize) {
    for writer in 0..writers {
        for file in 0..files {
            let path = root.join(format!("w{writer}/f{file}"));
            let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                got == content(writer, file),
                "{} came back different",
                path.display()
            );
        }
    }
}

#[test]
fn files_written_from_every_cpu_at_once_come_back_over_the_rings() {
    let Some(_uring) = UringEnabled::hold() else {
        return;
    };
    let scratch = Scratch::new();
    let m = mount_over_rings(&scratch, "mnt", &[]);

    // A writer pinned to each CPU (two per CPU), all at once.
    let files = 300;
    let writers: Vec<usize> = cpus().into_iter().flat_map(|cpu| [cpu, cpu]).collect();
    std::thread::scope(|s| {
        for (writer, &cpu) in writers.iter().enumerate() {
            let root = m.path.clone();
            s.spawn(move || {
                pin_to(cpu);
                let dir = root.join(format!("w{writer}"));
                std::fs::create_dir(&dir).unwrap();
                for file in 0..files {
                    let tmp = dir.join(format!("f{file}.tmp"));
                    std::fs::write(&tmp, content(writer, file)).unwrap();
                    std::fs::rename(&tmp, dir.join(format!("f{file}"))).unwrap();
                }
            });
        }
    });
    read_back(&m.path, writers.len(), files);
    let listed = std::fs::read_dir(m.path.join("w0")).unwrap().count();
    assert_eq!(listed, files, "w0 lists its files, and no temporary ones");

    std::fs::write(m.path.join(".zarrfs/commit"), "files from every CPU").unwrap();
    let commit = std::fs::read_to_string(m.path.join(".zarrfs/commit")).unwrap();
    assert!(!commit.trim().is_empty(), "the commit names its id");
    m.unmount();

    // A fresh mount reads the commit back, again from every CPU.
    let m = mount_over_rings(&scratch, "again", &[]);
    std::thread::scope(|s| {
        for cpu in cpus() {
            let root = m.path.clone();
            let writers = writers.len();
            s.spawn(move || {
                pin_to(cpu);
                read_back(&root, writers, files);
            });
        }
    });
    m.unmount();
}

#[test]
fn a_long_commit_does_not_hold_up_the_other_requests_of_its_cpu() {
    let Some(_uring) = UringEnabled::hold() else {
        return;
    };
    let scratch = Scratch::new();
    // Without sealing, the commit stores every file itself: long enough to
    // be seen running.
    let m = mount_over_rings(&scratch, "mnt", &["--seal-delay", "off"]);
    for dir in 0..20 {
        let dir = m.path.join(format!("d{dir}"));
        std::fs::create_dir(&dir).unwrap();
        for file in 0..1000 {
            std::fs::write(dir.join(format!("f{file}")), format!("{file}")).unwrap();
        }
    }
    // The committer and the reader of `.zarrfs/progress` share one CPU,
    // so their requests share one queue.
    let cpu = cpus()[0];
    let committed = Mutex::new(None::<Instant>);
    let seen = std::thread::scope(|s| {
        let root = m.path.clone();
        let committed = &committed;
        s.spawn(move || {
            pin_to(cpu);
            std::fs::write(root.join(".zarrfs/commit"), "20,000 files").unwrap();
            *committed.lock().unwrap() = Some(Instant::now());
        });
        pin_to(cpu);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let progress = std::fs::read_to_string(m.path.join(".zarrfs/progress")).unwrap();
            if !progress.trim().is_empty() {
                return Some((progress, Instant::now()));
            }
            if committed.lock().unwrap().is_some() || Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let (progress, when) = seen.expect("the progress of the running commit was never read");
    let done = committed
        .lock()
        .unwrap()
        .expect("the commit finished after the scope");
    assert!(
        when < done,
        "progress was read only after the commit ended: {progress}"
    );
    assert!(progress.contains('{'), "progress is JSON: {progress}");
    m.unmount();
}

#[test]
fn a_mount_not_asked_to_use_the_rings_reads_the_device() {
    let Some(_uring) = UringEnabled::hold() else {
        return;
    };
    let scratch = Scratch::new();
    let m = scratch.mount("mnt", &[]);
    assert_eq!(m.session_json()["io_uring"], false);
    std::fs::write(m.path.join("a"), "through /dev/fuse").unwrap();
    assert_eq!(
        std::fs::read_to_string(m.path.join("a")).unwrap(),
        "through /dev/fuse"
    );
    m.unmount();
}
