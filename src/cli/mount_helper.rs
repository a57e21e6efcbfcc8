//! `mount -t fuse.zarrfs` and `/etc/fstab`: the zarrfs binary run as
//! `mount.fuse.zarrfs` (a symlink in `/sbin`) is mount(8)'s helper for the
//! type. mount(8) calls it as
//!
//! ```text
//! mount.fuse.zarrfs REPO MOUNTPOINT [-sfnv] [-N NAMESPACE] [-o OPTIONS]
//! ```
//!
//! and this module turns that into `zarrfs mount REPO MOUNTPOINT ...`.
//! zarrfs's own options go in `-o`: `branch=NAME`, `author=NAME <EMAIL>`,
//! `session=ID`, `new_session`, `ro`. The generic options of fstab
//! (`defaults`, `noauto`, `nofail`, `_netdev`, `x-systemd.*`, ...) are
//! accepted and left to mount(8) and systemd.

use std::ffi::OsString;

use super::{Failure, exit};

/// The names the binary answers to as a mount helper.
pub fn is_mount_helper(argv0: &str) -> bool {
    let name = argv0.rsplit('/').next().unwrap_or(argv0);
    name == "mount.fuse.zarrfs" || name == "mount.zarrfs"
}

/// Generic mount options that are not zarrfs's business.
fn is_generic(option: &str) -> bool {
    const GENERIC: &[&str] = &[
        "defaults",
        "rw",
        "auto",
        "noauto",
        "user",
        "users",
        "nouser",
        "owner",
        "group",
        "nofail",
        "_netdev",
        "exec",
        "noexec",
        "suid",
        "nosuid",
        "dev",
        "nodev",
        "atime",
        "noatime",
        "relatime",
        "strictatime",
        "diratime",
        "nodiratime",
        "sync",
        "async",
    ];
    GENERIC.contains(&option) || option.starts_with("x-") || option.starts_with("comment=")
}

/// The `zarrfs mount` command line for a helper invocation, or `None`
/// when mount(8) asked for a fake mount (`-f`).
pub fn translate(args: &[OsString]) -> Result<Option<Vec<OsString>>, Failure> {
    let usage = |why: String| {
        Failure::new(
            exit::USAGE,
            format!(
                "{why}\nusage: mount.fuse.zarrfs REPO MOUNTPOINT [-o branch=NAME,author=...,session=ID,new_session,seal_delay=DURATION,io_uring,no_prefetch,ro]"
            ),
        )
    };
    let mut positional = Vec::new();
    let mut options: Vec<String> = Vec::new();
    let mut fake = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        match text.as_ref() {
            "-o" => {
                let value = args
                    .next()
                    .ok_or_else(|| usage("-o needs a value".into()))?;
                options.extend(value.to_string_lossy().split(',').map(str::to_owned));
            }
            "-N" | "-t" => {
                args.next(); // a namespace or the type: nothing to do with them
            }
            flags if flags.starts_with('-') && flags.len() > 1 => {
                for flag in flags[1..].chars() {
                    match flag {
                        'f' => fake = true,
                        's' | 'n' | 'v' => {}
                        other => return Err(usage(format!("unknown flag -{other}"))),
                    }
                }
            }
            _ => positional.push(arg.clone()),
        }
    }
    let [repo, mountpoint] = positional.as_slice() else {
        return Err(usage(format!(
            "expected REPO and MOUNTPOINT, got {} argument(s)",
            positional.len()
        )));
    };
    let mut command: Vec<OsString> = vec![
        "zarrfs".into(),
        "mount".into(),
        repo.clone(),
        mountpoint.clone(),
    ];
    for option in options.iter().filter(|o| !o.is_empty()) {
        let (key, value) = match option.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (option.as_str(), None),
        };
        match (key, value) {
            ("branch" | "author" | "session", Some(value)) => {
                command.push(format!("--{key}").into());
                command.push(value.into());
            }
            ("seal_delay" | "seal-delay", Some(value)) => {
                command.push("--seal-delay".into());
                command.push(value.into());
            }
            ("new_session" | "new-session", None) => command.push("--new-session".into()),
            ("io_uring" | "io-uring", None) => command.push("--io-uring".into()),
            ("no_prefetch" | "no-prefetch", None) => command.push("--no-prefetch".into()),
            ("ro", None) => command.push("--read-only".into()),
            _ if is_generic(option) => {}
            _ => {
                return Err(usage(format!(
                    "unknown zarrfs mount option '{option}' (known: branch=NAME, author=NAME <EMAIL>, session=ID, new_session, seal_delay=DURATION, io_uring, no_prefetch, ro)"
                )));
            }
        }
    }
    Ok(if fake { None } else { Some(command) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn fstab_options_become_mount_flags() {
        let command = translate(&args(&[
            "/data/repo",
            "/mnt/z",
            "-o",
            "rw,noauto,x-systemd.automount,branch=dev,author=Ada <ada@example.org>,io_uring,no_prefetch,ro",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            command,
            args(&[
                "zarrfs",
                "mount",
                "/data/repo",
                "/mnt/z",
                "--branch",
                "dev",
                "--author",
                "Ada <ada@example.org>",
                "--io-uring",
                "--no-prefetch",
                "--read-only"
            ])
        );
    }

    #[test]
    fn unknown_options_and_missing_arguments_are_named() {
        let err = translate(&args(&["/r", "/m", "-o", "colour=blue"])).unwrap_err();
        assert!(
            err.message
                .contains("unknown zarrfs mount option 'colour=blue'")
        );
        assert_eq!(err.code, exit::USAGE);
        let err = translate(&args(&["/r"])).unwrap_err();
        assert!(err.message.contains("expected REPO and MOUNTPOINT"));
        assert_eq!(
            translate(&args(&["/r", "/m", "-fv"])).unwrap(),
            None,
            "a fake mount does nothing"
        );
    }
}
