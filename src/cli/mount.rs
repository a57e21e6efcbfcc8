//! `zarrfs mount` and `zarrfs umount`.

use std::path::PathBuf;

use super::Failure;

#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// The repository
    pub repo: PathBuf,
    /// An existing directory to mount it on
    pub mountpoint: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct UmountArgs {
    /// The mountpoint
    pub mountpoint: PathBuf,
}

pub fn mount(_args: MountArgs) -> Result<(), Failure> {
    Err(Failure::new(super::exit::FAILURE, "mount is not built yet"))
}

pub fn umount(_args: UmountArgs) -> Result<(), Failure> {
    Err(Failure::new(
        super::exit::FAILURE,
        "umount is not built yet",
    ))
}
