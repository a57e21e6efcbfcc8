//! The `zarrfs` command. Everything it does is in the library's `cli`
//! module; this only turns the outcome into an exit code.

fn main() -> std::process::ExitCode {
    zarrfs::cli::main()
}
