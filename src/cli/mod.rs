//! The command line: clap definitions and dispatch. Commands that act on
//! a repository open it directly; commands that act on a mount go through
//! its `.zarrfs/` control files, so that they do exactly what `echo` and
//! `cat` would.

mod docs;
pub mod mount;
mod mount_helper;
mod mountctl;
mod repo_cmds;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::repo::RepoError;

/// Exit codes, as documented in zarrfs(1).
pub mod exit {
    pub const SUCCESS: u8 = 0;
    /// A commit conflicted with commits that landed meanwhile.
    pub const CONFLICT: u8 = 1;
    /// The command line was wrong (clap's own code).
    pub const USAGE: u8 = 2;
    /// Something named does not exist: repository, mount, branch, tag,
    /// commit or session.
    pub const NOT_FOUND: u8 = 3;
    /// fsck found damage.
    pub const DAMAGED: u8 = 4;
    /// Any other failure.
    pub const FAILURE: u8 = 5;
    /// A commit found nothing to commit.
    pub const NOTHING_TO_COMMIT: u8 = 6;
    /// A commit was refused because a Zarr metadata document is not a JSON
    /// object.
    pub const INVALID_METADATA: u8 = 7;
    /// Refused because something is in use or has uncommitted changes.
    pub const BUSY: u8 = 8;
}

const EXIT_CODES_HELP: &str = "\
Exit status:
  0  success
  1  the commit conflicts with commits that landed meanwhile (nothing is lost)
  2  wrong usage
  3  not found: repository, mount, branch, tag, commit or session
  4  fsck found damage
  5  any other failure
  6  nothing to commit
  7  invalid Zarr metadata (the commit names the file)
  8  busy: the session has uncommitted changes, or is in use elsewhere";

#[derive(Parser, Debug)]
#[command(
    name = "zarrfs",
    version,
    about = "Mount a version-controlled Zarr repository as a directory",
    long_about = "zarrfs mounts a version-controlled Zarr repository as a directory. \
Every mount is a session: edit files with any tool or Zarr library, then commit \
with `zarrfs commit -m MESSAGE` (or `echo MESSAGE > .zarrfs/commit`). Commits rebase \
onto newer commits when the changed paths do not overlap, and fail with a \
clear conflict when they do.\n\n\
Commands that act on a mount find it from the current directory, as git finds \
its repository, or take --mount DIR.",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where a command acts: a mount (found from the current directory by
/// default) or, with `--repo`, a repository directly.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Target {
    /// The mount to act on [default: the mount containing the current directory]
    #[arg(long, value_name = "DIR", conflicts_with = "repo")]
    pub mount: Option<PathBuf>,
    /// Act on this repository directly instead of through a mount
    #[arg(long, value_name = "REPO")]
    pub repo: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create an empty repository with a `main` branch
    Init {
        /// Directory to create the repository in (new or empty)
        repo: PathBuf,
    },
    /// Mount a repository: the directory shows a session's view of a branch
    Mount(mount::MountArgs),
    /// Unmount a mount, keeping its session's uncommitted changes
    Umount(mount::UmountArgs),
    /// Show the session, its branch and the paths it changed
    Status {
        /// The mount [default: the mount containing the current directory]
        #[arg(long, value_name = "DIR")]
        mount: Option<PathBuf>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Commit the session's changes (rebasing onto newer commits if they do not conflict)
    ///
    /// On a terminal, a commit that takes a while shows how far it is, and
    /// one that waits for a running `zarrfs gc` says so.
    Commit {
        /// The commit message
        #[arg(short, long)]
        message: String,
        /// The mount [default: the mount containing the current directory]
        #[arg(long, value_name = "DIR")]
        mount: Option<PathBuf>,
    },
    /// Start a new session at a branch's tip, a tag or a commit
    Checkout {
        /// Branch, tag or commit id [default: the tip of the current branch]
        target: Option<String>,
        /// The mount [default: the mount containing the current directory]
        #[arg(long, value_name = "DIR")]
        mount: Option<PathBuf>,
    },
    /// Drop the session's uncommitted changes
    Discard {
        /// The mount [default: the mount containing the current directory]
        #[arg(long, value_name = "DIR")]
        mount: Option<PathBuf>,
    },
    /// Show the commit log, newest first
    Log {
        #[command(flatten)]
        target: Target,
        /// Branch, tag or commit to start from [default: the session's branch, or main]
        #[arg(long)]
        branch: Option<String>,
        /// Show at most this many commits
        #[arg(short = 'n', long)]
        max_count: Option<usize>,
        /// Print JSON, one array of commits
        #[arg(long)]
        json: bool,
    },
    /// Show the paths that differ between two commits, each marked [M]etadata or [C]hunk
    // The brackets are clap's help text, not links.
    #[allow(rustdoc::broken_intra_doc_links)]
    Diff {
        /// Branch, tag or commit to compare from
        from: String,
        /// Branch, tag or commit to compare to [default: the session's base, or main]
        to: Option<String>,
        #[command(flatten)]
        target: Target,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List, create or delete branches
    Branch {
        /// Create a branch with this name
        name: Option<String>,
        /// Where to create it [default: the session's base, or main's tip]
        #[arg(long, value_name = "REV", requires = "name")]
        at: Option<String>,
        /// Delete this branch (its commits stay)
        #[arg(short, long, value_name = "NAME", conflicts_with = "name")]
        delete: Option<String>,
        #[command(flatten)]
        target: Target,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List or create tags (tags never move)
    Tag {
        /// Create a tag with this name
        name: Option<String>,
        /// Where to create it [default: the session's base, or main's tip]
        #[arg(long, value_name = "REV", requires = "name")]
        at: Option<String>,
        #[command(flatten)]
        target: Target,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List the sessions of a repository that hold uncommitted changes or are mounted
    Sessions {
        #[command(flatten)]
        target: Target,
        /// List every session, also those without changes
        #[arg(long)]
        all: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Check a repository's integrity: every ref names a complete commit and
    /// every object it reaches exists and matches its hash
    Fsck {
        /// The repository
        repo: PathBuf,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove the objects no commit names, giving their space back: files
    /// a mount stored ahead of a commit and that were then removed,
    /// rewritten or discarded, and what crashed commits left. Commits go on
    /// while it runs
    ///
    /// It marks what the commits name while commits go on; then, to
    /// remove, it waits for the commits in progress to end (saying so on
    /// standard error) and holds new ones off until it is done.
    Gc {
        /// The repository
        repo: PathBuf,
        /// Keep unreferenced objects changed more recently than this
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
        /// Say what would be removed, removing nothing
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell)
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Write the man pages, zarrfs(1) and zarrfs-COMMAND(1), generated from these definitions
    #[command(hide = true)]
    Man {
        /// The directory to write them to
        dir: PathBuf,
    },
}

/// A failure with the exit code it maps to. The message is printed as
/// `zarrfs: <message>`.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<RepoError> for Failure {
    fn from(e: RepoError) -> Failure {
        let code = match e {
            RepoError::NotARepository { .. }
            | RepoError::UnknownRevision(_)
            | RepoError::AmbiguousRevision(_) => exit::NOT_FOUND,
            _ => exit::FAILURE,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::new(exit::FAILURE, e.to_string())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::new(exit::FAILURE, format!("{e:#}"))
    }
}

impl From<crate::repo::RefError> for Failure {
    fn from(e: crate::repo::RefError) -> Failure {
        use crate::repo::RefError as E;
        let code = match e {
            E::NotFound(_) => exit::NOT_FOUND,
            E::InvalidName(_) => exit::USAGE,
            E::Exists(_) | E::Io(_) => exit::FAILURE,
        };
        Failure::new(code, e.to_string())
    }
}

pub fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let argv0 = args
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cli = if mount_helper::is_mount_helper(&argv0) {
        match mount_helper::translate(&args[1..]) {
            Ok(Some(command)) => Cli::parse_from(command),
            Ok(None) => return ExitCode::from(exit::SUCCESS),
            Err(failure) => return report(failure),
        }
    } else {
        Cli::parse()
    };
    match run(cli) {
        Ok(()) => ExitCode::from(exit::SUCCESS),
        Err(failure) => report(failure),
    }
}

/// Let a closed pipe end the command as it ends other Unix tools
/// (`zarrfs log | head`): killed by SIGPIPE, where Rust's default (the
/// signal ignored) makes every print to it panic. Not for a mount, whose
/// daemon must outlive any reader of its messages.
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: restores the signal's default action; no handler runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

fn report(failure: Failure) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "zarrfs: {}", failure.message);
    ExitCode::from(failure.code)
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    if !matches!(cli.command, Command::Mount(_)) {
        end_quietly_on_a_closed_pipe();
    }
    match cli.command {
        Command::Init { repo } => repo_cmds::init(repo),
        Command::Mount(args) => mount::mount(args),
        Command::Umount(args) => mount::umount(args),
        Command::Status { mount, json } => mountctl::status(mount, json),
        Command::Commit { message, mount } => mountctl::commit(mount, &message),
        Command::Checkout { target, mount } => mountctl::checkout(mount, target.as_deref()),
        Command::Discard { mount } => mountctl::discard(mount),
        Command::Log {
            target,
            branch,
            max_count,
            json,
        } => repo_cmds::log(target, branch, max_count, json),
        Command::Diff {
            from,
            to,
            target,
            json,
        } => repo_cmds::diff(target, &from, to.as_deref(), json),
        Command::Branch {
            name,
            at,
            delete,
            target,
            json,
        } => repo_cmds::branch(target, name, at, delete, json),
        Command::Tag {
            name,
            at,
            target,
            json,
        } => repo_cmds::tag(target, name, at, json),
        Command::Sessions { target, all, json } => repo_cmds::sessions(target, all, json),
        Command::Fsck { repo, json } => repo_cmds::fsck(repo, json),
        Command::Gc {
            repo,
            grace,
            dry_run,
            json,
        } => repo_cmds::gc(repo, grace, dry_run, json),
        Command::Completions { shell } => {
            docs::completions(shell);
            Ok(())
        }
        Command::Man { dir } => docs::man(&dir),
    }
}

/// One commit as `log` prints it, in the seed's shape.
pub fn format_log_entry(id: &str, commit: &crate::repo::Commit) -> String {
    format_log_fields(id, &commit.author, &commit.date, &commit.message)
}

pub fn format_log_fields(id: &str, author: &str, date: &str, message: &str) -> String {
    format!(
        "Commit ID {id}\nAuthor    {author}\nDate      {date}\n\n    {}\n\n",
        message.trim_end().replace('\n', "\n    ")
    )
}
