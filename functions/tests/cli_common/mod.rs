//! Running the `flotilla` binary on a data dir, for the CLI tests.

#![allow(dead_code)] // each test binary uses its own share

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// `flotilla ARGS --data-dir DIR`, waited for.
pub fn flotilla(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("flotilla runs")
}

/// Its standard output as JSON (a panic showing both streams otherwise).
pub fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
