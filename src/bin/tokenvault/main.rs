//! `tokenvault`: manage an encrypted token vault from the command line, and migrate tokens
//! from the Zoho CRM SDK's file and SQL stores (docs/design.md section 6).
//!
//! Built only with the `cli` feature. Invariants kept across the modules: a passphrase
//! never comes from an argument, and no other secret has to; every input is bounded by
//! the caps of `limits` as it is read; buffers that hold secrets never leave copies
//! behind (`secret_buf`); secrets print as `[REDACTED]` unless `--reveal`; errors
//! are one line on stderr with the documented exit code (0 success, 1 error, 2 usage,
//! 3 wrong passphrase, 4 vault locked); input is checked before anything is written.
// Lints: Cargo.toml's `[lints]`, for every target of the package. The modules' items stay
// `pub`: the fuzz crate compiles these modules too (fuzz/src/lib.rs) and reaches them.
#![allow(unreachable_pub)]

mod args;
mod commands;
mod failure;
mod find_keys;
mod import;
mod input;
mod limits;
mod output;
mod passphrase;
mod progress;
mod secret_buf;

use std::io::Write;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};

use crate::args::Cli;

fn main() -> ExitCode {
    // Usage errors exit 2 here, with clap's message; --help and --version exit 0.
    let mut cli = Cli::parse();
    let Some(dir) = cli.vault.take() else {
        Cli::command()
            .error(
                ErrorKind::MissingRequiredArgument,
                "the following required argument was not provided: --vault <DIR>",
            )
            .exit()
    };
    match commands::run(cli, dir) {
        Ok(()) => ExitCode::from(failure::EXIT_OK),
        Err(failure) => {
            if let Some(message) = failure.message() {
                let _ = writeln!(std::io::stderr(), "error: {message}");
            }
            ExitCode::from(failure.code)
        }
    }
}
