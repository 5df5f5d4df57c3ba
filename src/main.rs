//! `wxauth` binary: parse the command line and hand over to the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // Everything wxauth writes (database, keys, admin socket) is for its own user only.
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
    let cli = wxauth::cli::Cli::parse();
    match wxauth::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wxauth: {e}");
            ExitCode::FAILURE
        }
    }
}

// glibc's malloc took a sixth of a login's CPU in profiles (arena locks, consolidation);
// mimalloc's thread-local free lists suit many short-lived request allocations.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
