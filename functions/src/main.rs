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
mod telemetry;
mod watch;
mod web;
mod worker;

/// mimalloc rather than the system allocator: with glibc's, allocation and
/// free were about a fifth of the CPU of `flotilla bench` (many small,
/// short-lived allocations on several threads); on musl the gap is larger.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    flotilla_azure::transport::use_ring_for_tls();
    cli::main()
}
