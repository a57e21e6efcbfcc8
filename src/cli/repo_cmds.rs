//! Commands on a repository: init, log, diff, branch, tag, sessions,
//! fsck, gc. With `--repo` they open the repository; otherwise they act on the
//! repository of the mount they are run in, and read the session's branch
//! and base from its control files.

use std::io::Write;
use std::path::PathBuf;

use super::mountctl::{find_mount, repo_of_mount, session_field};
use super::{Failure, Target, exit, format_log_entry};
use crate::repo::{DEFAULT_BRANCH, Repo};
use crate::session::list_sessions;
use crate::zarr::change_marker;

/// A repository, and the mount it was reached through, if any.
struct Context {
    repo: Repo,
    mount: Option<PathBuf>,
}

impl Context {
    fn open(target: Target) -> Result<Context, Failure> {
        if let Some(repo) = target.repo {
            return Ok(Context {
                repo: Repo::open(&repo)?,
                mount: None,
            });
        }
        let mount = find_mount(target.mount)?;
        Ok(Context {
            repo: Repo::open(&repo_of_mount(&mount)?)?,
            mount: Some(mount),
        })
    }

    /// The revision commands default to: the session's base in a mount
    /// (what the mount shows), else main's tip.
    fn default_revision(&self) -> Result<String, Failure> {
        match &self.mount {
            Some(mount) => session_field(mount, "base")?.ok_or_else(|| {
                Failure::new(exit::FAILURE, "the mount's status.json names no base")
            }),
            None => Ok(DEFAULT_BRANCH.to_owned()),
        }
    }
}

pub fn init(repo: PathBuf) -> Result<(), Failure> {
    Repo::init(&repo)?;
    println!("Initialized empty zarrfs repository in {}", repo.display());
    Ok(())
}

pub fn log(
    target: Target,
    revision: Option<String>,
    max_count: Option<usize>,
    json: bool,
) -> Result<(), Failure> {
    let context = Context::open(target)?;
    let revision = match (revision, &context.mount) {
        (Some(revision), _) => revision,
        (None, Some(mount)) => match session_field(mount, "branch")? {
            Some(branch) => branch,
            None => context.default_revision()?,
        },
        (None, None) => DEFAULT_BRANCH.to_owned(),
    };
    let tip = context.repo.resolve(&revision)?;
    let mut out = std::io::stdout().lock();
    let mut records = Vec::new();
    for entry in context.repo.log(tip).take(max_count.unwrap_or(usize::MAX)) {
        let (id, commit) = entry?;
        if json {
            records.push(commit.summary_json(id));
        } else {
            let _ = write!(out, "{}", format_log_entry(&id.to_hex(), &commit));
        }
    }
    if json {
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&records).unwrap());
    }
    Ok(())
}

pub fn diff(target: Target, from: &str, to: Option<&str>, json: bool) -> Result<(), Failure> {
    let context = Context::open(target)?;
    let to = match to {
        Some(to) => to.to_owned(),
        None => context.default_revision()?,
    };
    let (a, b) = (context.repo.resolve(from)?, context.repo.resolve(&to)?);
    let changes = context.repo.diff(a, b)?;
    if json {
        let records: Vec<_> = changes
            .iter()
            .map(|(path, kind)| {
                serde_json::json!({
                    "path": path,
                    "change": kind,
                    "metadata": crate::zarr::is_metadata(path),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&records).unwrap());
    } else {
        for (path, kind) in changes {
            println!("{} {} {path}", kind.letter(), change_marker(&path));
        }
    }
    Ok(())
}

pub fn branch(
    target: Target,
    name: Option<String>,
    at: Option<String>,
    delete: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let context = Context::open(target)?;
    let refs = context.repo.refs();
    if let Some(name) = delete {
        refs.delete_branch(&name)?;
        println!("Deleted branch {name} (its commits stay in the repository)");
        return Ok(());
    }
    let Some(name) = name else {
        let branches = refs.branches()?;
        print_refs(&branches, json);
        return Ok(());
    };
    create_ref(&context, "branches", &name, at)?;
    println!("Created branch {name}");
    Ok(())
}

pub fn tag(
    target: Target,
    name: Option<String>,
    at: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let context = Context::open(target)?;
    let Some(name) = name else {
        let tags = context.repo.refs().tags()?;
        print_refs(&tags, json);
        return Ok(());
    };
    create_ref(&context, "tags", &name, at)?;
    println!("Created tag {name}");
    Ok(())
}

/// Create a branch or tag: in a mount without `--at`, by `mkdir` in its
/// control directory (at the session's base), as a shell user would;
/// otherwise directly at the revision.
fn create_ref(
    context: &Context,
    kind: &str,
    name: &str,
    at: Option<String>,
) -> Result<(), Failure> {
    crate::repo::refs::validate_ref_name(name).map_err(|e| Failure::new(exit::USAGE, e))?;
    if let (Some(mount), None) = (&context.mount, &at) {
        let dir = mount.join(".zarrfs").join(kind).join(name);
        return std::fs::create_dir(&dir).map_err(|e| {
            let what = if kind == "branches" { "branch" } else { "tag" };
            match e.raw_os_error() {
                Some(libc::EEXIST) => {
                    Failure::new(exit::FAILURE, format!("{what} '{name}' already exists"))
                }
                _ => Failure::new(exit::FAILURE, format!("cannot create {what} '{name}': {e}")),
            }
        });
    }
    let revision = match at {
        Some(at) => at,
        None => context.default_revision()?,
    };
    let commit = context.repo.resolve(&revision)?;
    if kind == "branches" {
        context.repo.refs().create_branch(name, commit)?;
    } else {
        context.repo.refs().create_tag(name, commit)?;
    }
    Ok(())
}

fn print_refs(refs: &[(String, crate::repo::CommitId)], json: bool) {
    if json {
        let records: Vec<_> = refs
            .iter()
            .map(|(name, commit)| serde_json::json!({ "name": name, "commit": commit.to_hex() }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&records).unwrap());
    } else {
        for (name, commit) in refs {
            println!("{name}\t{commit}");
        }
    }
}

pub fn sessions(target: Target, all: bool, json: bool) -> Result<(), Failure> {
    let context = Context::open(target)?;
    let sessions: Vec<_> = list_sessions(&context.repo)?
        .into_iter()
        .filter(|s| all || s.changes > 0 || s.in_use_by.is_some())
        .collect();
    if json {
        let records: Vec<_> = sessions
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.info.id,
                    "started_at": s.info.started_at,
                    "branch": s.info.branch,
                    "base": s.info.base.to_hex(),
                    "author": s.info.author,
                    "mountpoint": s.info.mountpoint,
                    "journal_entries": s.changes,
                    "in_use_by": s.in_use_by,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&records).unwrap());
        return Ok(());
    }
    if sessions.is_empty() {
        println!("No sessions with uncommitted changes");
    }
    for s in sessions {
        let state = match &s.in_use_by {
            Some(holder) => format!("in use by {holder}"),
            None => format!("{} changed path(s), not mounted", s.changes),
        };
        println!(
            "{}  started {}  on {}  last mounted at {}  {state}",
            s.info.id,
            s.info.started_at,
            s.info.branch.as_deref().unwrap_or("(no branch)"),
            s.info.mountpoint.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}

pub fn fsck(repo: PathBuf, json: bool) -> Result<(), Failure> {
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

pub fn gc(
    repo: PathBuf,
    grace: std::time::Duration,
    dry_run: bool,
    json: bool,
) -> Result<(), Failure> {
    let repo = Repo::open(&repo)?;
    if !dry_run {
        crate::session::remove_finished_sessions(&repo);
    }
    let options = crate::repo::gc::GcOptions { grace, dry_run };
    let report = crate::repo::gc::gc_telling_wait(&repo, options, || {
        eprintln!("zarrfs gc: waiting for the commits in progress to end")
    })?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "dry_run": dry_run,
                "commits": report.commits,
                "reachable": report.reachable,
                "removed": report.removed,
                "removed_bytes": report.removed_bytes,
                "kept_sealed": report.kept_sealed,
                "kept_recent": report.kept_recent,
            })
        );
        return Ok(());
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    println!(
        "{}: {verb} {} unreferenced object(s), {}; {} object(s) reachable from {} commit(s)",
        repo.path().display(),
        report.removed,
        indicatif::HumanBytes(report.removed_bytes),
        report.reachable,
        report.commits,
    );
    if report.kept_sealed + report.kept_recent > 0 {
        println!(
            "kept {} stored ahead by live sessions and {} changed in the last {}",
            report.kept_sealed,
            report.kept_recent,
            humantime::format_duration(grace)
        );
    }
    Ok(())
}
