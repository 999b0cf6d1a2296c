//! Running the `flotilla` binary on a data dir, for the CLI tests.

#![allow(dead_code)] // each test binary uses its own share

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

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

/// Sends SIGTERM (what `kill` and service managers send) and waits up to 30 s
/// for the child to exit; a child still running then is killed and the test fails.
pub fn stop_with_sigterm(child: &mut Child) -> ExitStatus {
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(term.success(), "kill -TERM {}", child.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not stop at SIGTERM", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The names of what is in `dir` (a child's TMPDIR, after it stopped).
pub fn entries(dir: &Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .expect("the directory is readable")
        .map(|e| e.expect("a directory entry").file_name())
        .collect()
}
