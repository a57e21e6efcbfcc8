//! The mount: a session's view and the `.zarrfs/` control directory as a
//! FUSE filesystem.
//!
//! ```text
//! daemon    mount with fuser, background journal flushes, signals
//! fuse      fuser's Filesystem trait -> Fs calls (TTLs, reply types)
//! core      Fs: the filesystem on inode numbers and handles, no kernel
//! control   what each mount path names; the control files' text
//! inodes    a stable inode number per mount path
//! ```
//!
//! `Fs` can be driven directly, without a kernel mount, which is how most
//! of its behaviour is tested; `tests/mount_*.rs` mount for real.
//! `SEMANTICS.md` beside this file states, operation by operation, what
//! the mount supports and which errno it answers otherwise.

pub mod control;
pub mod core;
pub mod daemon;
pub mod fuse;
pub mod inodes;

pub use self::core::{DirEntry, Fs, FsError, FsOptions, FsResult, Opened};
pub use control::CONTROL_DIR;
