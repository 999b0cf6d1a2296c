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
mod signals;
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
    no_library_backtraces();
    flotilla_azure::transport::use_ring_for_tls();
    cli::main()
}

/// Turns off the backtraces errors capture (`RUST_LIB_BACKTRACE=0`) unless
/// the user chose otherwise; panics keep theirs (`RUST_BACKTRACE`). The Azure
/// SDK builds and drops an error for every absent response header and every
/// expected 404, and with `RUST_BACKTRACE=1` each captured a backtrace under a
/// process-wide lock; flotilla shows none of them.
fn no_library_backtraces() {
    if flotilla_core::settings::get("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: the first thing `main` does, before any other thread exists.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
}
