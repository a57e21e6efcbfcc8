//! The man page and shell completions, generated from the clap
//! definitions so that they cannot drift from `--help`.

use clap::CommandFactory;

use super::{Cli, Failure};

/// Write zarrfs(1) to standard output. `man/zarrfs.1` is this output; a
/// test fails when it is out of date.
pub fn man() -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(Cli::command())
        .date("2026-11-21")
        .render(&mut out)?;
    Ok(())
}

pub fn completions(shell: clap_complete::Shell) {
    clap_complete::generate(shell, &mut Cli::command(), "zarrfs", &mut std::io::stdout());
}
