//! The mount: a session's view and the `.zarrfs/` control directory as a
//! FUSE filesystem.
//!
//! ```text
//! daemon    mount with fuser, background journal flushes, signals
//! fuse      fuser's Filesystem trait -> Fs calls (TTLs, reply types)
//! core      Fs: errors, options, attributes, and lookup, getattr,
//!           setattr, access, statfs
//! namespace changes of names: mkdir, unlink, rmdir, rename, link
//! handles   open files: open, create, read, write, release, fsync, and
//!           write handles that follow the view across a commit
//! listing   directory listings: opendir, readdir, history trees
//! control   what each mount path names; the control files' text and the
//!           actions their writes perform
//! inodes    inode numbers per mount path, counted lookups and forget
//! passthrough  the files the kernel reads and writes itself, per inode
//! prefetch  reading ahead the files a program reading a directory in
//!           sequence will open next
//! kernel_cache what the kernel may cache, and its invalidation
//! request_counts  the kernel's requests by kind, logged at unmount
//! ```
//!
//! `Fs` can be driven directly, without a kernel mount, which is how most
//! of its behaviour is tested; `tests/mount_*.rs` mount for real.
//! zarrfs(5) (`man/zarrfs.5`) states, operation by operation, what the
//! mount supports and which errno it answers otherwise.

pub mod control;
mod control_output;
pub mod core;
pub mod daemon;
pub mod fuse;
mod handles;
pub mod inodes;
pub mod kernel_cache;
mod listing;
mod namespace;
pub mod passthrough;
mod prefetch;
pub mod request_counts;
#[cfg(test)]
mod testing;

pub use self::core::{DirEntry, Fs, FsError, FsOptions, FsResult};
pub use control::CONTROL_DIR;
pub use handles::Opened;
