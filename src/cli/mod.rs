//! The command line: clap definitions and dispatch. Commands that act on
//! a repository open it directly; commands that act on a mount go through
//! its `.zarrfs/` control files, so that they do exactly what `echo` and
//! `cat` would.

pub mod mount;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::repo::{DEFAULT_BRANCH, Repo, RepoError};

/// Exit codes, as documented in zarrfs(1).
pub mod exit {
    pub const SUCCESS: u8 = 0;
    /// A commit conflicted with commits that landed meanwhile.
    pub const CONFLICT: u8 = 1;
    /// The command line was wrong (clap's own code).
    pub const USAGE: u8 = 2;
    /// Something named does not exist (repository, branch, revision).
    pub const NOT_FOUND: u8 = 3;
    /// fsck found damage.
    pub const DAMAGED: u8 = 4;
    /// Any other failure.
    pub const FAILURE: u8 = 5;
}

#[derive(Parser, Debug)]
#[command(
    name = "zarrfs",
    version,
    about = "Mount a version-controlled Zarr repository as a directory",
    long_about = "zarrfs mounts a version-controlled Zarr repository as a directory. \
Every mount is a session: edit files with any tool or Zarr library, then commit \
by writing a message to .zarrfs/commit (or `zarrfs commit -m`). Commits rebase \
onto newer commits when the changed paths do not overlap, and fail with a \
clear conflict when they do."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
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
    /// Show the commit log of a branch, newest first
    Log {
        /// The repository
        #[arg(long)]
        repo: PathBuf,
        /// The branch (or tag, or commit) to start from
        #[arg(long, default_value = DEFAULT_BRANCH)]
        branch: String,
        /// Show at most this many commits
        #[arg(short = 'n', long)]
        max_count: Option<usize>,
        /// Print JSON, one array of commits
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
            RepoError::NotARepository { .. } | RepoError::UnknownRevision(_) => exit::NOT_FOUND,
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

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::from(exit::SUCCESS),
        Err(failure) => {
            let _ = writeln!(std::io::stderr(), "zarrfs: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Init { repo } => {
            Repo::init(&repo)?;
            println!("Initialized empty zarrfs repository in {}", repo.display());
            Ok(())
        }
        Command::Mount(args) => mount::mount(args),
        Command::Umount(args) => mount::umount(args),
        Command::Log {
            repo,
            branch,
            max_count,
            json,
        } => log(repo, &branch, max_count, json),
        Command::Fsck { repo, json } => fsck(repo, json),
    }
}

fn log(repo: PathBuf, revision: &str, max_count: Option<usize>, json: bool) -> Result<(), Failure> {
    let repo = Repo::open(&repo)?;
    let tip = repo.resolve(revision)?;
    let mut out = std::io::stdout().lock();
    let mut records = Vec::new();
    for entry in repo.log(tip).take(max_count.unwrap_or(usize::MAX)) {
        let (id, commit) = entry?;
        if json {
            records.push(serde_json::json!({
                "id": id.to_hex(),
                "parents": commit.parents.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
                "author": commit.author,
                "date": commit.date,
                "message": commit.message,
                "changes": commit.change_count,
            }));
        } else {
            let _ = write!(out, "{}", format_log_entry(&id.to_hex(), &commit));
        }
    }
    if json {
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&records).unwrap());
    }
    Ok(())
}

/// One commit as `log` prints it, in the seed's shape.
pub fn format_log_entry(id: &str, commit: &crate::repo::Commit) -> String {
    format!(
        "Commit ID {id}\nAuthor    {}\nDate      {}\n\n    {}\n\n",
        commit.author,
        commit.date,
        commit.message.trim_end().replace('\n', "\n    ")
    )
}

fn fsck(repo: PathBuf, json: bool) -> Result<(), Failure> {
    let repo = Repo::open(&repo)?;
    let report = crate::repo::fsck::fsck(&repo)?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "clean": report.is_clean(),
                "commits": report.commits,
                "objects": report.objects,
                "problems": report.problems,
            })
        );
    } else {
        for problem in &report.problems {
            println!("{problem}");
        }
        if report.is_clean() {
            println!(
                "{}: clean ({} commits, {} objects checked)",
                repo.path().display(),
                report.commits,
                report.objects
            );
        }
    }
    if report.is_clean() {
        Ok(())
    } else {
        Err(Failure::new(
            exit::DAMAGED,
            format!(
                "{} problem(s) found in {}",
                report.problems.len(),
                repo.path().display()
            ),
        ))
    }
}
