//! One owner per data dir: a second `flotilla` process on a data dir in use
//! refuses at once and names the holder; once the holder is gone (even by
//! `kill -9`) the lock is free and `resume` finishes the job.

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod cli_common;
use cli_common::flotilla;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Kills the background `up` if the test fails before it does.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the lock file names `pid` (the holder writes it right after locking).
fn wait_for_holder(dir: &Path, pid: u32) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("lock")) {
            if let Ok(holder) = serde_json::from_str::<Value>(text.trim()) {
                if holder["pid"] == pid {
                    return holder;
                }
            }
        }
        assert!(Instant::now() < deadline, "up never took the lock");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every file under `dir` except the lock file, with its size and mtime.
fn snapshot(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else if path.file_name().unwrap() != "lock" {
                out.push((
                    path.display().to_string(),
                    meta.len(),
                    meta.modified().unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

fn assert_resume_refused(dir: &Path, pid: u32) {
    let started = Instant::now();
    let out = flotilla(dir, &["resume", "--lro-seconds", "0.5"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "resume waited");
    let expected = format!(
        "error: data dir {} is in use by process {pid} (flotilla up ",
        dir.display()
    );
    assert!(err.starts_with(&expected), "{err}");
    assert!(
        err.trim_end().ends_with("; wait for it or stop it"),
        "{err}"
    );
    assert_eq!(
        wait_for_holder(dir, pid)["pid"],
        pid,
        "the holder is untouched"
    );
}

#[test]
fn a_second_process_is_refused_until_the_holder_dies_then_resume_finishes_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["up", "--output", "json", "--lro-seconds", "5", "--data-dir"])
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut up = Background(child);
    let pid = up.0.id();
    let holder = wait_for_holder(&dir, pid);
    let command = holder["command"].as_str().unwrap();
    assert!(command.starts_with("flotilla up "), "{holder}");
    assert!(
        holder["started"].as_str().unwrap().ends_with('Z'),
        "{holder}"
    );

    // Before `up` has created its store, and after: `resume` fails fast and
    // names it.
    assert_resume_refused(&dir, pid);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join("flotilla.db").exists() {
        assert!(Instant::now() < deadline, "up never created its store");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_resume_refused(&dir, pid);

    // Reading is allowed next to the writer.
    let out = flotilla(&dir, &["list", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let jobs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");
    let job = jobs[0]["job"].as_str().unwrap().to_string();
    let out = flotilla(&dir, &["status", &job, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // kill -9: no clean-up runs, the OS drops the lock.
    up.0.kill().unwrap();
    up.0.wait().unwrap();

    let out = flotilla(
        &dir,
        &["resume", "--output", "json", "--lro-seconds", "0.5"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["job"], job.as_str(), "{result:#}");
    assert_eq!(result["status"], "Succeeded", "{result:#}");
}

#[test]
fn every_writing_command_on_a_held_dir_refuses_and_changes_nothing_while_reads_work() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = flotilla(dir, &["up", "--output", "json", "--lro-seconds", "0.1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    let job = job["job"].as_str().unwrap().to_string();
    assert_eq!(
        std::fs::read_to_string(dir.join("lock")).unwrap(),
        "",
        "a clean exit clears the holder's details"
    );

    // This test process holds the dir, as another flotilla would.
    let mut lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("lock"))
        .unwrap();
    lock.try_lock().expect("the finished run released the lock");
    let me = std::process::id();
    std::io::Write::write_all(
        &mut lock,
        format!(r#"{{"pid":{me},"command":"test holder","started":"2026-12-01T14:00:00Z"}}"#)
            .as_bytes(),
    )
    .unwrap();

    let before = snapshot(dir);
    let commands: [&[&str]; 5] = [
        &["resume"],
        &["up"],
        &["delete", &job],
        &["scale", &job, "--pool", "general", "--count", "4"],
        &["sim", "--port", "0"],
    ];
    for args in commands {
        let out = flotilla(dir, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(
            err.trim_end(),
            format!(
                "error: data dir {} is in use by process {me} (test holder), \
                 started 2026-12-01T14:00:00Z; wait for it or stop it",
                dir.display()
            ),
            "{args:?}"
        );
    }
    assert_eq!(
        snapshot(dir),
        before,
        "a refused command changed the data dir"
    );

    let out = flotilla(dir, &["status", &job, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let saga: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(saga["status"], "Succeeded");
    let out = flotilla(dir, &["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&job));

    drop(lock);
    let out = flotilla(dir, &["resume", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "free again: {}", stderr(&out));
}
