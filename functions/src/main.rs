//! `flotilla`: one binary for the CLI, the embedded runner and (later) the
//! Azure Functions custom handler.

mod backends;
mod bench;
mod chaos;
mod cli;
mod data_dir;
mod error;
mod local;
mod package;
mod progress;
mod serve;
mod watch;
mod web;
mod worker;

fn main() -> std::process::ExitCode {
    cli::main()
}
