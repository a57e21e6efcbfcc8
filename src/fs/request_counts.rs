//! How many requests of each kind the kernel sent: the cost model of a
//! FUSE mount is round trips, so this is what tuning it is measured by.
//! The daemon logs the counts when it is unmounted.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! ops {
    ($($op:ident => $name:literal,)*) => {
        /// The kinds of request counted (the FUSE opcodes the kernel sends
        /// to this filesystem).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Op {
            $($op,)*
        }

        impl Op {
            pub const ALL: &[Op] = &[$(Op::$op,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Op::$op => $name,)*
                }
            }
        }
    };
}

ops! {
    Lookup => "lookup",
    Forget => "forget",
    GetAttr => "getattr",
    SetAttr => "setattr",
    MkNod => "mknod",
    MkDir => "mkdir",
    Unlink => "unlink",
    RmDir => "rmdir",
    Rename => "rename",
    Link => "link",
    Open => "open",
    Read => "read",
    Write => "write",
    Flush => "flush",
    Release => "release",
    FSync => "fsync",
    OpenDir => "opendir",
    ReadDir => "readdir",
    ReadDirPlus => "readdirplus",
    ReleaseDir => "releasedir",
    FSyncDir => "fsyncdir",
    StatFs => "statfs",
    XAttr => "xattr",
    Access => "access",
    Create => "create",
    IoCtl => "ioctl",
    Other => "other",
}

/// One counter per [`Op`], shared by the request threads.
pub struct RequestCounts {
    counts: Vec<AtomicU64>,
}

impl Default for RequestCounts {
    fn default() -> Self {
        RequestCounts {
            counts: Op::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl RequestCounts {
    pub fn count(&self, op: Op) {
        self.counts[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, op: Op) -> u64 {
        self.counts[op as usize].load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        Op::ALL.iter().map(|op| self.get(*op)).sum()
    }
}

/// `lookup 12, create 3, ...`: the kinds that were asked for, most first.
impl fmt::Display for RequestCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut asked: Vec<(Op, u64)> = Op::ALL
            .iter()
            .map(|op| (*op, self.get(*op)))
            .filter(|(_, n)| *n > 0)
            .collect();
        asked.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        for (i, (op, n)) in asked.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} {n}", op.name())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_most_asked_first() {
        let counts = RequestCounts::default();
        counts.count(Op::Create);
        counts.count(Op::Lookup);
        counts.count(Op::Lookup);
        assert_eq!(counts.to_string(), "lookup 2, create 1");
        assert_eq!(counts.total(), 3);
    }
}
