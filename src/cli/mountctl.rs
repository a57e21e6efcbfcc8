//! Commands on a mount, as a thin client over its `.zarrfs/` control
//! files: each does what `cat` and `echo` on those files would, and turns
//! the errno of a refused write into an exit code and the whole error.

use std::fs::{self, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::{Failure, exit};

/// The control directory at a mount's root.
pub const CONTROL_DIR: &str = ".zarrfs";

/// The mount to act on: `explicit`, or the one containing the current
/// directory, found by walking up as git finds its repository.
pub fn find_mount(explicit: Option<PathBuf>) -> Result<PathBuf, Failure> {
    if let Some(dir) = explicit {
        if is_mount_root(&dir) {
            return Ok(dir);
        }
        return Err(Failure::new(
            exit::NOT_FOUND,
            format!(
                "{} is not a zarrfs mount (it has no {CONTROL_DIR}/ control directory); mount one with `zarrfs mount REPO {}`",
                dir.display(),
                dir.display()
            ),
        ));
    }
    let cwd = std::env::current_dir()?;
    for dir in cwd.ancestors() {
        if is_mount_root(dir) {
            return Ok(dir.to_path_buf());
        }
    }
    Err(Failure::new(
        exit::NOT_FOUND,
        format!(
            "{} is not inside a zarrfs mount; cd into one, or name it with --mount DIR",
            cwd.display()
        ),
    ))
}

fn is_mount_root(dir: &Path) -> bool {
    dir.join(CONTROL_DIR).join("session").is_file()
}

/// Read a control file.
pub fn read_control(mount: &Path, name: &str) -> Result<String, Failure> {
    let path = mount.join(CONTROL_DIR).join(name);
    fs::read_to_string(&path).map_err(|e| {
        Failure::new(
            exit::FAILURE,
            format!("cannot read {}: {e}", path.display()),
        )
    })
}

/// Write a line to a control file, as `echo LINE > FILE` does. On a
/// refused write, the file's content (the whole error) is the message.
fn write_control(mount: &Path, name: &str, line: &str) -> Result<(), Failure> {
    let path = mount.join(CONTROL_DIR).join(name);
    let result = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let detail = fs::read_to_string(&path)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty() && name == "commit")
                .unwrap_or_else(|| e.to_string());
            Err(Failure::new(exit_code_for(&e), detail))
        }
    }
}

fn exit_code_for(e: &io::Error) -> u8 {
    match e.raw_os_error() {
        Some(libc::EBUSY) => exit::CONFLICT,
        Some(libc::EINVAL) => exit::INVALID_METADATA,
        Some(libc::ENODATA) => exit::NOTHING_TO_COMMIT,
        Some(libc::ENOENT) => exit::NOT_FOUND,
        _ => exit::FAILURE,
    }
}

pub fn status(mount: Option<PathBuf>, json: bool) -> Result<(), Failure> {
    let mount = find_mount(mount)?;
    let text = read_control(&mount, if json { "status.json" } else { "status" })?;
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    // The control file keeps Arraylake's shape; the command also says
    // where the daemon writes its log.
    if !json && let Some(log) = session_field(&mount, "log")? {
        println!("\nDaemon log: {log}");
    }
    Ok(())
}

pub fn commit(mount: Option<PathBuf>, message: &str) -> Result<(), Failure> {
    let mount = find_mount(mount)?;
    // The JSON form carries messages of several lines in one write.
    let request = serde_json::json!({ "message": message }).to_string();
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| ProgressReporter::start(&mount));
    let result = write_control(&mount, "commit", &request);
    if let Some(bar) = bar {
        bar.finish();
    }
    result?;
    println!("{}", read_control(&mount, "commit")?.trim());
    Ok(())
}

/// A progress bar on the terminal for a commit that takes a while, fed
/// from `.zarrfs/progress` while the commit's write(2) blocks.
struct ProgressReporter {
    done: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl ProgressReporter {
    /// Nothing is drawn for commits that end within this.
    const QUIET_FOR: Duration = Duration::from_millis(300);

    fn start(mount: &Path) -> ProgressReporter {
        let done = Arc::new(AtomicBool::new(false));
        let path = mount.join(CONTROL_DIR).join("progress");
        let stop = done.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut bar: Option<ProgressBar> = None;
            let counted =
                ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} paths {elapsed}")
                    .expect("a valid template")
                    .progress_chars("=> ");
            let uncounted = ProgressStyle::with_template("{msg:>10} {spinner} {elapsed}")
                .expect("a valid template");
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if started.elapsed() < Self::QUIET_FOR {
                    continue;
                }
                let Some(progress) = fs::read_to_string(&path)
                    .ok()
                    .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                else {
                    continue;
                };
                let bar = bar.get_or_insert_with(|| ProgressBar::new(0));
                let total = progress["total"].as_u64().unwrap_or(0);
                // A phase without a count shows a spinner, not an empty bar.
                bar.set_style(if total > 0 {
                    counted.clone()
                } else {
                    uncounted.clone()
                });
                let phase = match progress["phase"].as_str().unwrap_or("") {
                    // Only a gc holds the repository's write lock against commits.
                    "waiting" => "waiting for a gc to end",
                    phase => phase,
                };
                bar.set_message(phase.to_owned());
                bar.set_length(total);
                bar.set_position(progress["done"].as_u64().unwrap_or(0));
                bar.tick();
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        });
        ProgressReporter { done, thread }
    }

    fn finish(self) {
        self.done.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

pub fn checkout(mount: Option<PathBuf>, target: Option<&str>) -> Result<(), Failure> {
    let mount = find_mount(mount)?;
    write_control(&mount, "checkout", target.unwrap_or("")).map_err(|mut f| {
        if f.code == exit::CONFLICT {
            f.code = exit::BUSY;
            f.message = format!(
                "cannot check out {}: the session has uncommitted changes; commit or discard them first",
                target.unwrap_or("the branch tip")
            );
        }
        f
    })?;
    println!("{}", read_control(&mount, "checkout")?.trim());
    Ok(())
}

pub fn discard(mount: Option<PathBuf>) -> Result<(), Failure> {
    let mount = find_mount(mount)?;
    write_control(&mount, "discard", "discard")?;
    println!(
        "Discarded the session's changes; new session {}",
        read_control(&mount, "session")?.trim()
    );
    Ok(())
}

/// A mount's `session.json` (its `status.json` without the changes, so
/// that asking costs nothing in a session with many).
fn session_of(mount: &Path) -> Result<serde_json::Value, Failure> {
    serde_json::from_str(&read_control(mount, "session.json")?).map_err(|e| {
        Failure::new(
            exit::FAILURE,
            format!("{}/.zarrfs/session.json is not JSON: {e}", mount.display()),
        )
    })
}

/// The repository a mount serves, from its `session.json`.
pub fn repo_of_mount(mount: &Path) -> Result<PathBuf, Failure> {
    session_field(mount, "repo")?
        .map(PathBuf::from)
        .ok_or_else(|| {
            Failure::new(
                exit::FAILURE,
                format!("{}/.zarrfs/session.json names no repo", mount.display()),
            )
        })
}

/// A field of the mount's `session.json` (such as `base` or `branch`).
pub fn session_field(mount: &Path, field: &str) -> Result<Option<String>, Failure> {
    Ok(session_of(mount)?[field].as_str().map(str::to_owned))
}
