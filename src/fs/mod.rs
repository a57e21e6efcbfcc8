//! The FUSE adapter (being built).
