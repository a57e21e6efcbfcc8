//! The `zarrfs` binary as a user runs it, on repositories (no mount):
//! success and failure paths, exit codes, messages, `--json`, and the man
//! page generated from the clap definitions.

use std::path::Path;
use std::process::{Command, Output};

fn zarrfs(args: &[&str]) -> Output {
    zarrfs_in(Path::new("/"), args)
}

fn zarrfs_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zarrfs"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

#[test]
fn init_log_fsck_and_their_failures() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_arg = repo.to_str().unwrap();

    let out = zarrfs(&["init", repo_arg]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("Initialized empty zarrfs repository"));

    let out = zarrfs(&["init", repo_arg]);
    assert_eq!(code(&out), 5);
    assert!(
        stderr(&out).contains("exists and is not empty"),
        "{}",
        stderr(&out)
    );

    let out = zarrfs(&["log", "--repo", repo_arg]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("Repository created"));
    let out = zarrfs(&["log", "--repo", repo_arg, "--json"]);
    let log: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(log[0]["message"], "Repository created");
    assert_eq!(log[0]["id"].as_str().unwrap().len(), 64);

    let out = zarrfs(&["log", "--repo", repo_arg, "--branch", "nope"]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("unknown revision 'nope'"));

    let elsewhere = dir.path().to_str().unwrap();
    let out = zarrfs(&["fsck", elsewhere]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("is not a zarrfs repository"));
    assert!(!stderr(&out).contains("panicked"));

    let out = zarrfs(&["fsck", repo_arg, "--json"]);
    assert_eq!(code(&out), 0);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["clean"], true);

    // Damage: the first commit's record goes missing.
    let first = log[0]["id"].as_str().unwrap();
    std::fs::remove_file(repo.join("commits").join(&first[..2]).join(&first[2..])).unwrap();
    let out = zarrfs(&["fsck", repo_arg]);
    assert_eq!(code(&out), 4);
    assert!(stdout(&out).contains(&format!("names commit {first}, which is missing")));
}

#[test]
fn branches_tags_diff_and_sessions_on_a_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_arg = repo.to_str().unwrap();
    assert_eq!(code(&zarrfs(&["init", repo_arg])), 0);

    let out = zarrfs(&["branch", "--repo", repo_arg, "dev"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = zarrfs(&["branch", "--repo", repo_arg, "dev"]);
    assert_eq!(code(&out), 5);
    assert!(stderr(&out).contains("branch 'dev' already exists"));
    let out = zarrfs(&["branch", "--repo", repo_arg, "bad/name"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("not a valid branch or tag name"));

    let out = zarrfs(&["branch", "--repo", repo_arg, "--json"]);
    let branches: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let names: Vec<&str> = branches
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dev", "main"]);

    assert_eq!(
        code(&zarrfs(&["tag", "--repo", repo_arg, "v1", "--at", "dev"])),
        0
    );
    let out = zarrfs(&["tag", "--repo", repo_arg, "v1"]);
    assert!(stderr(&out).contains("tags never move"));
    let out = zarrfs(&["tag", "--repo", repo_arg]);
    assert!(stdout(&out).starts_with("v1\t"));

    let out = zarrfs(&["branch", "--repo", repo_arg, "--delete", "dev"]);
    assert_eq!(code(&out), 0);
    let out = zarrfs(&["branch", "--repo", repo_arg, "--delete", "dev"]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("no branch named 'dev'"));

    let out = zarrfs(&["diff", "--repo", repo_arg, "v1", "main", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout(&out)).unwrap(),
        serde_json::json!([])
    );

    let out = zarrfs(&["sessions", "--repo", repo_arg]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("No sessions with uncommitted changes"));
}

#[test]
fn mount_commands_outside_a_mount_say_so() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["status"][..],
        &["commit", "-m", "x"],
        &["checkout"],
        &["discard"],
        &["log"],
    ] {
        let out = zarrfs_in(dir.path(), args);
        assert_eq!(code(&out), 3, "{args:?}");
        assert!(
            stderr(&out).contains("is not inside a zarrfs mount"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = zarrfs(&["status", "--mount", dir.path().to_str().unwrap()]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("is not a zarrfs mount"));
}

#[test]
fn usage_errors_help_and_completions() {
    let out = zarrfs(&["frobnicate"]);
    assert_eq!(code(&out), 2);
    let out = zarrfs(&["--help"]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("Exit status:"));
    for shell in ["bash", "zsh", "fish"] {
        let out = zarrfs(&["completions", shell]);
        assert_eq!(code(&out), 0);
        assert!(
            stdout(&out).contains("checkout"),
            "{shell} completion covers the commands"
        );
    }
}

#[test]
fn the_man_pages_are_generated_from_the_current_definitions_and_render() {
    let dir = tempfile::tempdir().unwrap();
    let out = zarrfs(&["man", dir.path().to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let mut generated: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    generated.sort();
    assert!(
        generated.contains(&"zarrfs-mount.1".to_owned()),
        "{generated:?}"
    );
    for page in &generated {
        let fresh = std::fs::read_to_string(dir.path().join(page)).unwrap();
        let kept = std::fs::read_to_string(committed.join(page)).unwrap_or_default();
        assert!(
            fresh == kept,
            "man/{page} is out of date: regenerate the pages with `cargo run -- man man`"
        );
    }
    // Every page renders, if man is installed.
    if Command::new("man").arg("--version").output().is_ok() {
        for page in generated.iter().map(String::as_str).chain(["zarrfs.5"]) {
            let out = Command::new("man")
                .args(["-l", committed.join(page).to_str().unwrap()])
                .env("MANWIDTH", "80")
                .output()
                .unwrap();
            assert!(out.status.success(), "{page} does not render");
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("NAME"),
                "{page}"
            );
        }
    }
}

/// Output read only in part, as by `zarrfs log | head`: the command ends
/// when the reader goes away, quietly, as git and ls do (killed by
/// SIGPIPE), rather than panicking about the broken pipe.
#[test]
fn output_cut_short_by_its_reader_ends_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    use zarrfs::repo::{DEFAULT_BRANCH, Repo};
    use zarrfs::session::{Session, SessionOptions};

    let dir = tempfile::tempdir().unwrap();
    let repo_path = dir.path().join("repo");
    let repo = std::sync::Arc::new(Repo::init(&repo_path).unwrap());
    let first = repo.branch_tip(DEFAULT_BRANCH).unwrap().unwrap().commit;
    let mut session = Session::start(repo, SessionOptions::new(DEFAULT_BRANCH)).unwrap();
    // More lines than a pipe holds (64 KiB).
    for i in 0..10_000 {
        session.write_file(&format!("arr/c/{i}"), b"x").unwrap();
    }
    session.commit("many chunks").unwrap();
    drop(session);

    let first = first.to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_zarrfs"))
        .args(["diff", "--repo", repo_path.to_str().unwrap(), &first])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = [0u8; 8];
    child.stdout.take().unwrap().read_exact(&mut line).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.stderr.is_empty(),
        "zarrfs diff | head: {}",
        stderr(&out)
    );
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}",
        out.status
    );
}
