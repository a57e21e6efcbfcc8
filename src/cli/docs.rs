//! The man pages and shell completions, generated from the clap
//! definitions so that they cannot drift from `--help`.

use std::path::Path;

use clap::CommandFactory;

use super::{Cli, Failure};

const DATE: &str = "2026-11-21";

/// Write zarrfs(1) and one page per command, zarrfs-COMMAND(1), into
/// `dir`, as git does. `man/` holds this output; a test fails when it is
/// out of date.
pub fn man(dir: &Path) -> Result<(), Failure> {
    std::fs::create_dir_all(dir)?;
    let command = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .date(DATE)
        .render(&mut page)?;
    std::fs::write(dir.join("zarrfs.1"), page)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("zarrfs-{}", sub.get_name());
        let sub = sub
            .clone()
            .name(name.clone())
            .bin_name(format!("zarrfs {}", sub.get_name()));
        let mut page = Vec::new();
        clap_mangen::Man::new(sub).date(DATE).render(&mut page)?;
        std::fs::write(dir.join(format!("{name}.1")), page)?;
    }
    Ok(())
}

pub fn completions(shell: clap_complete::Shell) {
    clap_complete::generate(shell, &mut Cli::command(), "zarrfs", &mut std::io::stdout());
}
