//! zarrfs mounts a version-controlled Zarr repository as a directory.
//!
//! ```text
//! cli        clap commands; talks to a mount through .zarrfs/ or to a repo
//! fs         fuser adapter: inodes, handles, control files, history views
//! session    view = base tree + journal; staging; commit driver
//! repo       objects, trees, commits, refs, rebase and conflict rules
//! storage    put / get / put_if_absent / list / delete over a directory
//! zarr       key classification, metadata validation (a leaf, no I/O)
//! ```
//!
//! Each layer depends only on the ones below it. The library can be used
//! without a mount:
//!
//! ```
//! use zarrfs::repo::{Repo, DEFAULT_BRANCH};
//! use zarrfs::session::{Session, SessionOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let repo = std::sync::Arc::new(Repo::init(&dir.path().join("repo")).unwrap());
//! let mut session = Session::start(repo.clone(), SessionOptions::new(DEFAULT_BRANCH)).unwrap();
//! session.mkdir("meta").unwrap();
//! session.write_file("meta/root.group.json", br#"{"attributes": {"foo": "bar"}}"#).unwrap();
//! let commit = session.commit("User A added metadata").unwrap();
//! let tip = repo.branch_tip(DEFAULT_BRANCH).unwrap().unwrap();
//! assert_eq!(tip.commit, commit);
//! ```

pub mod cli;
pub mod fs;
pub mod repo;
pub mod session;
pub mod storage;
pub mod zarr;
