//! `zarrfs mount` and `zarrfs umount`.
//!
//! `zarrfs mount` starts a daemon (itself with `--foreground`, in a new
//! session, its output in `REPO/logs/`) and returns once the mount
//! answers, or reports why the daemon failed: what it wrote to standard
//! error, which comes to `zarrfs mount` until the mount is up (a full
//! disk may leave no room for the log), else the end of its log. The
//! daemon logs through `tracing`, filtered by `RUST_LOG` (default:
//! `zarrfs=info,warn`): to standard error in the foreground, to its log
//! file otherwise. `zarrfs umount` unmounts and waits for the daemon to
//! make the session's journal durable and exit; the session's
//! uncommitted changes stay, to be resumed by the next mount at the same
//! place.

use std::fs::{self, OpenOptions};
use std::io::{self, IsTerminal, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

use super::{Failure, exit};
use crate::fs::daemon;
use crate::fs::{Fs, FsOptions};
use crate::repo::{DEFAULT_BRANCH, Repo};
use crate::session::{Session, SessionError, SessionOptions, default_author};

/// How long `zarrfs mount` waits for the daemon to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `zarrfs umount` waits for the daemon to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// The repository
    pub repo: PathBuf,
    /// An existing directory to mount it on
    pub mountpoint: PathBuf,
    /// The branch a new session starts on (default: main)
    #[arg(long)]
    pub branch: Option<String>,
    /// The author of commits made through this mount, as "Name <email>"
    // `<email>` is clap's help text, not HTML.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long)]
    pub author: Option<String>,
    /// Refuse every change (commit, file writes); checkout still works
    #[arg(long)]
    pub read_only: bool,
    /// Serve the mount from this process instead of a daemon
    #[arg(long)]
    pub foreground: bool,
    /// Resume this session (by id) instead of the one last mounted here
    #[arg(long, conflicts_with = "new_session")]
    pub session: Option<String>,
    /// Start a new session even if one with changes was last mounted here
    #[arg(long)]
    pub new_session: bool,
    /// How long a closed file waits before the daemon stores it in the
    /// repository ahead of the commit ("300ms", "2s"; "off": commits store
    /// every file themselves); files under 256 KiB wait a third of it.
    /// Files rewritten or removed sooner are not stored for nothing; a file
    /// renamed after it closed is stored at once.
    /// What is stored and then dropped is disk space that `zarrfs gc` gives
    /// back
    #[arg(long, value_name = "DURATION", value_parser = parse_seal_delay)]
    pub seal_delay: Option<SealDelay>,
    /// Take the kernel's requests from FUSE's per-CPU io_uring queues
    /// instead of /dev/fuse, where the kernel offers them (Linux 6.14+ with
    /// the fuse module's enable_uring parameter set): faster for programs
    /// that make one request at a time, slower for zarr-python's threads
    /// (see zarrfs(5))
    #[arg(long)]
    pub io_uring: bool,
    /// Do not read ahead the files a program reading a directory in
    /// sequence will open next (zarrfs(5), "Reading ahead")
    #[arg(long)]
    pub no_prefetch: bool,
    /// Append the daemon's log to this file instead of standard error,
    /// and once the mount is up its standard error too (`zarrfs mount`
    /// passes its log file to the daemon it starts)
    #[arg(long, hide = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct UmountArgs {
    /// The mountpoint
    pub mountpoint: PathBuf,
    /// Detach now even if files are open there (umount -l)
    #[arg(long, short = 'l')]
    pub lazy: bool,
}

/// `--seal-delay`: a duration, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealDelay(pub Option<Duration>);

impl std::fmt::Display for SealDelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(delay) => write!(f, "{}", humantime::format_duration(delay)),
            None => f.write_str("off"),
        }
    }
}

fn parse_seal_delay(text: &str) -> Result<SealDelay, String> {
    if text == "off" {
        return Ok(SealDelay(None));
    }
    humantime::parse_duration(text)
        .map(|delay| SealDelay(Some(delay)))
        .map_err(|e| format!("{e} (a duration such as 300ms or 2s, or off)"))
}

fn failure(message: impl Into<String>) -> Failure {
    Failure::new(exit::FAILURE, message)
}

/// An absolute path without resolving its last component (a dead mount
/// cannot be resolved).
fn absolute(path: &Path) -> io::Result<PathBuf> {
    let abs = std::path::absolute(path)?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => Ok(fs::canonicalize(parent)
            .unwrap_or_else(|_| parent.to_path_buf())
            .join(name)),
        _ => Ok(abs),
    }
}

/// The session id a mount serves, if `mountpoint` is a live zarrfs mount.
fn mounted_session(mountpoint: &Path) -> io::Result<String> {
    let id = fs::read_to_string(mountpoint.join(crate::fs::CONTROL_DIR).join("session"))?;
    Ok(id.trim().to_owned())
}

/// Refuse a mountpoint that is not a directory or is a mount already.
fn check_mountpoint(mountpoint: &Path) -> Result<PathBuf, Failure> {
    let abs = absolute(mountpoint)?;
    match fs::metadata(&abs) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(failure(format!("{}: not a directory", abs.display())));
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(failure(format!(
                "{} is a mount whose daemon is gone; run `zarrfs umount {0}` (or `umount -l {0}`) first",
                abs.display()
            )));
        }
        Err(e) => {
            return Err(failure(format!("{}: {e}", abs.display())));
        }
    }
    if let Ok(id) = mounted_session(&abs) {
        return Err(failure(format!(
            "{} is already a zarrfs mount (session {id}); unmount it first with `zarrfs umount {0}`",
            abs.display()
        )));
    }
    Ok(fs::canonicalize(&abs)?)
}

pub fn mount(args: MountArgs) -> Result<(), Failure> {
    let repo = Repo::open(&args.repo)?;
    let mountpoint = check_mountpoint(&args.mountpoint)?;
    if args.foreground {
        serve(args, Arc::new(repo), mountpoint)
    } else {
        launch(&args, &repo, &mountpoint)
    }
}

/// Start the daemon and wait until the mount answers.
fn launch(args: &MountArgs, repo: &Repo, mountpoint: &Path) -> Result<(), Failure> {
    let logs = repo.path().join("logs");
    fs::create_dir_all(&logs)?;
    let tag = blake3::hash(mountpoint.as_os_str().as_encoded_bytes()).to_hex();
    let log_path = logs.join(format!("mount-{}.log", &tag[..16]));
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let log_start = log.metadata()?.len();

    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("mount")
        .arg(repo.path())
        .arg(mountpoint)
        .arg("--foreground")
        .arg("--log-file")
        .arg(&log_path);
    if let Some(branch) = &args.branch {
        command.arg("--branch").arg(branch);
    }
    if let Some(author) = &args.author {
        command.arg("--author").arg(author);
    }
    if args.read_only {
        command.arg("--read-only");
    }
    if let Some(session) = &args.session {
        command.arg("--session").arg(session);
    }
    if args.new_session {
        command.arg("--new-session");
    }
    if let Some(delay) = args.seal_delay {
        command.arg("--seal-delay").arg(delay.to_string());
    }
    if args.io_uring {
        command.arg("--io-uring");
    }
    if args.no_prefetch {
        command.arg("--no-prefetch");
    }
    // Until the mount is up the daemon's standard error comes here, so
    // that a failure is reported even where its log cannot be written (a
    // full disk); then the daemon points it at its log (serve).
    command
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(Stdio::piped());
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from
    // the terminal and the caller's process group.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let early_errors = child.stderr.take().map(|mut stderr| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        })
    });

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            // Its standard error ends with it.
            let early = early_errors
                .and_then(|reader| reader.join().ok())
                .unwrap_or_default();
            let tail = daemon_failure(&early).unwrap_or_else(|| log_tail(&log_path, log_start));
            // The daemon's own exit code says what kind of failure it was.
            let code = status
                .code()
                .and_then(|c| u8::try_from(c).ok())
                .filter(|c| *c != exit::SUCCESS)
                .unwrap_or(exit::FAILURE);
            return Err(Failure::new(
                code,
                format!(
                    "the mount daemon exited ({status}) before the mount was ready{}",
                    if tail.is_empty() {
                        String::new()
                    } else {
                        format!(":\n{tail}")
                    }
                ),
            ));
        }
        if let Ok(id) = mounted_session(mountpoint) {
            println!(
                "Mounted {} at {} (session {id}, daemon pid {}, log {})",
                repo.path().display(),
                mountpoint.display(),
                child.id(),
                log_path.display()
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(failure(format!(
                "the mount daemon (pid {}) did not answer within {}s; see {}",
                child.id(),
                READY_TIMEOUT.as_secs(),
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the daemon wrote since `start` in its log, as its error (see
/// [`daemon_failure`]).
fn log_tail(path: &Path, start: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = fs::File::open(path)
        && file.seek(SeekFrom::Start(start)).is_ok()
    {
        let _ = file.read_to_string(&mut text);
    }
    daemon_failure(&text).unwrap_or_default()
}

/// The daemon's error in what it wrote: the failure its `main` reported
/// (lines starting with `zarrfs: `, which the caller's message adds
/// again), or else its last lines (a panic, say); `None` if it wrote
/// nothing.
fn daemon_failure(text: &str) -> Option<String> {
    if text.trim().is_empty() {
        return None;
    }
    let failure: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("zarrfs: "))
        .collect();
    if !failure.is_empty() {
        return Some(failure.join("\n"));
    }
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(20);
    Some(lines[from..].join("\n"))
}

/// Point this process's standard error at the end of `path`.
fn send_stderr_to(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = OpenOptions::new().append(true).open(path)?;
    // SAFETY: dup2 of a descriptor this function holds open onto fd 2.
    if unsafe { libc::dup2(file.as_raw_fd(), libc::STDERR_FILENO) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The daemon's log: `tracing` events filtered by `RUST_LOG` (default:
/// info for zarrfs, warnings for the crates it uses), to `file` if given,
/// else to standard error. Once per process; later calls do nothing.
fn init_logging(file: Option<&Path>) -> io::Result<()> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("zarrfs=info,warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _already_set = match file {
        Some(path) => {
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            builder
                .with_ansi(false)
                .with_writer(Mutex::new(file))
                .try_init()
        }
        None => builder
            .with_ansi(io::stderr().is_terminal())
            .with_writer(io::stderr)
            .try_init(),
    };
    Ok(())
}

fn session_failure(e: SessionError) -> Failure {
    let code = match e {
        SessionError::NotFound(_) => exit::NOT_FOUND,
        _ => exit::FAILURE,
    };
    Failure::new(code, e.to_string())
}

/// Pick the session: the named one, the one with changes last mounted
/// here, or a new one.
fn open_session(args: &MountArgs, repo: Arc<Repo>, mountpoint: &str) -> Result<Session, Failure> {
    let at = Some(mountpoint.to_owned());
    if let Some(id) = &args.session {
        return Session::resume(repo, id, at).map_err(session_failure);
    }
    if !args.new_session
        && let Some(id) = Session::find_resumable(&repo, mountpoint)?
    {
        let mut session =
            Session::resume(repo.clone(), &id, at.clone()).map_err(session_failure)?;
        if matches!(session.has_changes(), Ok(false)) {
            // A journal whose entries change nothing (left by a crash: an
            // unmount removes such a session) is not resumed: the new
            // session starts at the tip, as after an unmount.
            tracing::info!(session = %id, "not resuming the session last mounted here: it changes nothing");
            session.remove();
        } else {
            match &args.branch {
                Some(branch) if session.branch() != Some(branch.as_str()) => {
                    tracing::warn!(
                        session = %id,
                        "not resuming the session last mounted here: it is on {}, not on branch {branch}",
                        session.branch().unwrap_or("no branch")
                    );
                }
                _ => {
                    log_session("session resumed", &session);
                    return Ok(session);
                }
            }
        }
    }
    let mut options = SessionOptions::new(args.branch.as_deref().unwrap_or(DEFAULT_BRANCH));
    options.author = args.author.clone().unwrap_or_else(default_author);
    options.mountpoint = at;
    let session = Session::start(repo, options).map_err(session_failure)?;
    log_session("session started", &session);
    Ok(session)
}

fn log_session(what: &str, session: &Session) {
    tracing::info!(
        session = %session.id(),
        branch = session.branch().unwrap_or("(none)"),
        base = %session.base(),
        "{what}"
    );
}

/// The daemon: serve the mount from this process until it is unmounted.
fn serve(args: MountArgs, repo: Arc<Repo>, mountpoint: PathBuf) -> Result<(), Failure> {
    let log = match &args.log_file {
        Some(path) => Some(absolute(path)?),
        None => None,
    };
    init_logging(log.as_deref())?;
    let at = mountpoint.display().to_string();
    let session = open_session(&args, repo.clone(), &at)?;
    let id = session.id().to_owned();
    let mut options = FsOptions::new(&at);
    options.read_only = args.read_only;
    options.log = log.as_ref().map(|p| p.display().to_string());
    if let Some(SealDelay(delay)) = args.seal_delay {
        options.seal_delay = delay;
    }
    options.io_uring = args.io_uring;
    options.prefetch = !args.no_prefetch;
    let fs = Fs::new(session, options);
    let fsname = format!("zarrfs:{}", repo.path().display());
    let fs = daemon::serve(fs, &mountpoint, &fsname, None, || {
        // Before the mount answers (`zarrfs mount` returns then, closing
        // the pipe it read the daemon's standard error from).
        if let Some(path) = &log
            && let Err(e) = send_stderr_to(path)
        {
            tracing::warn!(
                "standard error stays where it was, not in {}: {e}",
                path.display()
            );
        }
        tracing::info!(
            pid = std::process::id(),
            session = %id,
            repo = %repo.path().display(),
            read_only = args.read_only,
            "mounted {at}"
        );
    })
    .map_err(|e| failure(format!("cannot mount {at}: {e}")))?;
    let session = fs.into_session();
    let id = session.id().to_owned();
    match session.close() {
        Ok(true) => tracing::info!(session = %id, "unmounted {at}; the session had no changes"),
        Ok(false) => tracing::info!(session = %id, "unmounted {at}; the session keeps its changes"),
        Err(e) => {
            return Err(failure(format!(
                "unmounted {at}; closing session {id}: {e}"
            )));
        }
    }
    Ok(())
}

/// The pid of the daemon serving a mount, from `.zarrfs/status.json`.
fn daemon_pid(mountpoint: &Path) -> Option<i32> {
    let text =
        fs::read_to_string(mountpoint.join(crate::fs::CONTROL_DIR).join("status.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.get("pid")?.as_i64().map(|p| p as i32)
}

/// Whether a process is gone (or a zombie nobody reaped yet).
fn exited(pid: i32) -> bool {
    crate::session::process_state(pid).is_none_or(|state| matches!(state, 'Z' | 'X'))
}

pub fn umount(args: UmountArgs) -> Result<(), Failure> {
    let mountpoint = absolute(&args.mountpoint)?;
    let pid = daemon_pid(&mountpoint);
    if let Err(e) = daemon::unmount(&mountpoint, args.lazy) {
        return Err(failure(match e.raw_os_error() {
            Some(libc::EBUSY) => format!(
                "{} is busy: a process has a file or directory open there (or works in it); close it, or detach now with `zarrfs umount --lazy {0}`",
                mountpoint.display()
            ),
            Some(libc::EINVAL) => format!("{} is not a mount point", mountpoint.display()),
            _ => format!("cannot unmount {}: {e}", mountpoint.display()),
        }));
    }
    // A lazy unmount leaves the daemon serving open files: do not wait.
    if let Some(pid) = pid.filter(|_| !args.lazy) {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while !exited(pid) {
            if Instant::now() > deadline {
                return Err(failure(format!(
                    "unmounted {}, but its daemon (pid {pid}) has not exited after {}s",
                    mountpoint.display(),
                    EXIT_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}
