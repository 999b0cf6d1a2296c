//! `flotilla status JOB --watch` on a pipe (a line per change, no escape
//! codes, until the job ends; exit codes as `status`), `status --web` (the
//! progress page served from the data dir beside a running `up`) and
//! `up --open` (the page of the job it runs, served until Ctrl-C).

mod cli_common;

use cli_common::{entries, flotilla, json_of, stop_with_sigterm};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Waits for the first job of the data dir to appear; its id.
fn first_job(data: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "no job appeared");
        let out = flotilla(data, &["list", "--output", "json"]);
        if out.status.success() {
            if let Some(job) = json_of(&out)[0]["job"].as_str() {
                return job.to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn is_rfc3339(s: &str) -> bool {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}

#[test]
fn watch_prints_a_line_per_change_until_the_job_ends() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut up = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["up", "--lro-seconds", "1", "--output", "json", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let job = first_job(&data);
    let out = flotilla(&data, &["status", &job, "--watch"]);
    assert!(up.wait().unwrap().success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        !text.contains('\x1b'),
        "no escape codes on a pipe: {text:?}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.last().copied(),
        Some(format!("job {job} succeeded").as_str()),
        "{text}"
    );
    for line in &lines[..lines.len() - 1] {
        let (stamp, _) = line.split_once(' ').unwrap();
        assert!(is_rfc3339(stamp), "{line}");
    }
    let body: Vec<&str> = lines[..lines.len() - 1]
        .iter()
        .map(|l| l.split_once(' ').unwrap().1)
        .collect();
    // The job ran for seconds after the watch began: it saw it running,
    // waiting, and each step succeed, each change once.
    assert!(
        body.contains(&format!("job {job}  Running").as_str()),
        "{text}"
    );
    assert!(
        body.contains(&format!("job {job}  Succeeded").as_str()),
        "{text}"
    );
    assert!(
        body.iter().any(|l| l.starts_with("waiting: step ")),
        "{text}"
    );
    for step in ["stage", "prereqs", "keys", "master", "workers", "join"] {
        let done: Vec<_> = body
            .iter()
            .filter(|l| l.starts_with(&format!("{step:<12} Succeeded")))
            .collect();
        assert_eq!(done.len(), 1, "{step}\n{text}");
    }
    let mut seen = body.clone();
    seen.dedup();
    assert_eq!(seen.len(), body.len(), "a line per change: {text}");
}

#[test]
fn watch_shows_the_undo_of_a_compensated_job_and_unknown_jobs_fail() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = flotilla(
        &data,
        &[
            "up",
            "--fail-at",
            "master",
            "--lro-seconds",
            "0.2",
            "--output",
            "json",
        ],
    );
    let job = json_of(&out)["job"].as_str().unwrap().to_string();
    let out = flotilla(&data, &["status", &job, "--watch"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "as status: {text}");
    assert!(text.contains("master       Failed"), "{text}");
    assert!(text.contains("SkuNotAvailable"), "{text}");
    for step in ["stage", "prereqs", "keys", "master"] {
        assert!(
            text.contains(&format!("{:<12} Undone", format!("undo {step}"))),
            "{step}\n{text}"
        );
    }
    assert!(
        text.ends_with(&format!("job {job} was compensated\n")),
        "{text}"
    );

    let out = flotilla(&data, &["status", "demo-nothere", "--watch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("job demo-nothere not found"));
}

/// `GET path` on 127.0.0.1:port: (status code, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let code = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        code,
        raw.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

#[test]
fn status_web_serves_the_page_of_a_job_in_a_dir_another_process_holds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = flotilla(
        &data,
        &[
            "up",
            "--fail-at",
            "master",
            "--lro-seconds",
            "0.2",
            "--output",
            "json",
        ],
    );
    let job = json_of(&out)["job"].as_str().unwrap().to_string();
    // Another process holds the dir: an `up` whose job waits an hour.
    let mut up = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["up", "--lro-seconds", "3600", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while json_of(&flotilla(&data, &["list", "--output", "json"]))
        .as_array()
        .map_or(0, Vec::len)
        < 2
    {
        assert!(Instant::now() < deadline, "the second job never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Read-only on a held dir, the page's simulator has no data dir of its
    // own: its temporary files go to a directory of this test's, checked below.
    let tmp = tempfile::tempdir().unwrap();
    let mut web = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["status", &job, "--web", "--data-dir"])
        .arg(&data)
        .env("TMPDIR", tmp.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut url = String::new();
    BufReader::new(web.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    let url = url.trim().to_string();
    let rest = url.strip_prefix("http://127.0.0.1:").expect(&url);
    let (port, path) = rest.split_once('/').unwrap();
    let port: u16 = port.parse().unwrap();
    assert_eq!(path, format!("api/clusters/{job}/view"));
    let (code, html) = get(port, &format!("/{path}"));
    assert_eq!(code, 200, "{html}");
    assert!(html.contains(&format!("\"id\":\"{job}\"")), "{html}");
    let (code, _) = get(port, "/api/view");
    assert_eq!(code, 200);
    let (code, _) = get(port, "/api/clusters/demo-nothere/view");
    assert_eq!(code, 404);
    let status = stop_with_sigterm(&mut web);
    assert!(status.success(), "{status:?}");
    assert_eq!(
        entries(tmp.path()),
        Vec::<std::ffi::OsString>::new(),
        "left behind"
    );
    up.kill().unwrap();
    up.wait().unwrap();
}

#[test]
fn up_open_serves_the_page_of_its_job_until_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["up", "--open", "--lro-seconds", "0.2", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(up.stderr.take().unwrap());
    let mut line = String::new();
    let url = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no page URL");
        if let Some(url) = line.trim().strip_prefix("progress page: ") {
            break url.to_string();
        }
    };
    let rest = url.strip_prefix("http://127.0.0.1:").expect(&url);
    let (port, path) = rest.split_once('/').unwrap();
    let port: u16 = port.parse().unwrap();
    let (code, html) = get(port, &format!("/{path}"));
    assert_eq!(code, 200, "{html}");
    // The job ends; the page stays up until Ctrl-C.
    loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "up ended early");
        if line.contains("stays at") {
            break;
        }
    }
    let (code, html) = get(port, &format!("/{path}"));
    assert_eq!(code, 200);
    assert!(html.contains(r#""status":"Succeeded""#), "{html}");
    assert!(Command::new("kill")
        .args(["-INT", &up.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert_eq!(up.wait().unwrap().code(), Some(0), "the job's exit code");
}
