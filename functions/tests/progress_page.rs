//! The progress page in a real browser: headless Chromium (Debian's
//! `chromium` package; FLOTILLA_CHROMIUM names another binary) loads
//! `api/clusters/{id}/view` from `flotilla serve` for a compensated job and
//! for a running one, and the DOM it renders is checked. Screenshots are
//! kept under `target/test-artifacts/`.
//!
//! The jobs: `up --fail-at master` (the simulator refuses the master scale
//! set) gives the compensated one; `up --lro-seconds 3600`, stopped once its
//! first long-running operation is in flight, leaves a job that waits for
//! an hour, which `serve` then resumes and still finds waiting.

mod cli_common;
mod serve_common;

use cli_common::{flotilla, json_of};
use serde_json::Value;
use serve_common::Server;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Chromium binary; a clear failure (never a skip) when there is none.
fn chromium() -> String {
    if let Some(bin) = flotilla_core::settings::get("FLOTILLA_CHROMIUM") {
        return bin;
    }
    for name in ["chromium", "chromium-browser"] {
        let found = Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return name.into();
        }
    }
    panic!(
        "this test needs Chromium and found none: install it (Debian/Ubuntu: \
         `apt-get install -y chromium`, as scripts/test.sh does) or set \
         FLOTILLA_CHROMIUM to its binary"
    );
}

/// Runs headless Chromium on `url` with `args`; its standard output.
fn headless(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            // Long enough for the running page to poll its status a few times.
            "--virtual-time-budget=7000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium {args:?} {url}: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 120 s on {url}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

/// The DOM after the page's script ran.
fn dom(url: &str) -> String {
    let html = headless(url, &["--dump-dom"]);
    assert!(html.contains("<body"), "no DOM from {url}: {html}");
    html
}

/// A screenshot kept as `target/test-artifacts/{name}.png`.
fn screenshot(url: &str, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&path);
    headless(
        url,
        &[
            "--window-size=1280,1100",
            &format!("--screenshot={}", path.display()),
        ],
    );
    let png = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "{}",
        path.display()
    );
    path
}

fn status(data: &Path, job: &str) -> Value {
    let out = flotilla(data, &["status", job, "--output", "json"]);
    json_of(&out)
}

/// A job that is Running and waits (for an hour) on its first long-running
/// operation: `up` is stopped while that operation is in flight.
fn waiting_job(data: &Path) -> String {
    let mut up = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args([
            "up",
            "--lro-seconds",
            "3600",
            "--output",
            "json",
            "--data-dir",
        ])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let job = loop {
        assert!(Instant::now() < deadline, "the job never started waiting");
        std::thread::sleep(Duration::from_millis(200));
        let out = flotilla(data, &["list", "--output", "json"]);
        if !out.status.success() {
            continue; // the dir is still being set up
        }
        let rows = json_of(&out);
        let newest = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["status"] == "Running")
            .and_then(|r| r["job"].as_str().map(String::from));
        if let Some(job) = newest {
            if status(data, &job)["pending"]["purpose"] == "create" {
                break job;
            }
        }
    };
    up.kill().unwrap();
    up.wait().unwrap();
    job
}

#[test]
fn the_progress_page_shows_a_compensated_and_a_running_job_in_a_browser() {
    chromium(); // fail first, and clearly, without a browser
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
    let done = json_of(&out);
    assert_eq!(done["status"], "Compensated", "{done:#}");
    let failed = done["job"].as_str().unwrap().to_string();
    let running = waiting_job(&data);

    let server = Server::start_with(&[("FLOTILLA_DATA_DIR", &data.display().to_string())]);
    let base = format!("http://127.0.0.1:{}/api", server.port);

    // The compensated job: every bar, the failed step's error, the undo bars.
    let url = format!("{base}/clusters/{failed}/view");
    let html = dom(&url);
    assert!(html.contains(r#"<body data-state="ended">"#), "{html}");
    assert!(html.contains(&format!(
        r#"<span id="job-id" class="mono">{failed}</span>"#
    )));
    assert!(
        html.contains(r#"id="job-status" class="badge Compensated">Compensated<"#),
        "{html}"
    );
    for (step, status) in [
        ("stage", "Compensated"),
        ("prereqs", "Compensated"),
        ("keys", "Compensated"),
        ("master", "Failed"),
        ("workers", "Pending"),
        ("join", "Pending"),
    ] {
        let row = format!(r#"data-kind="step" data-step="{step}" data-status="{status}""#);
        assert!(html.contains(&row), "{row}\n{html}");
    }
    for step in ["stage", "prereqs", "keys", "master"] {
        let row = format!(r#"data-kind="undo" data-step="{step}" data-status="Undone""#);
        assert!(html.contains(&row), "{row}\n{html}");
    }
    for step in ["workers", "join"] {
        assert!(!html.contains(&format!(r#"data-kind="undo" data-step="{step}""#)));
    }
    assert!(
        html.contains(r#"<div class="error step-error">SkuNotAvailable: The requested size for resource is currently not available in this location.</div>"#),
        "{html}"
    );
    assert!(
        html.contains("virtualMachineScaleSets/"),
        "the resources each step created"
    );
    assert!(
        !html.contains("data-refreshes"),
        "an ended job is not polled"
    );
    let shot = screenshot(&url, "progress-compensated");

    // The running job: its bars so far, what it waits for, and live refreshes.
    let url = format!("{base}/clusters/{running}/view");
    let html = dom(&url);
    assert!(html.contains(r#"data-state="running""#), "{html}");
    assert!(
        html.contains(r#"id="job-status" class="badge Running">Running<"#),
        "{html}"
    );
    assert!(html.contains(r#"data-kind="step" data-step="stage" data-status="Succeeded""#));
    assert!(html.contains(r#"data-kind="step" data-step="prereqs" data-status="Running""#));
    assert!(html.contains(r#"data-kind="step" data-step="master" data-status="Pending""#));
    assert!(!html.contains(r#"data-kind="undo""#), "{html}");
    let wait = html
        .split(r#"<div id="wait">"#)
        .nth(1)
        .expect("a wait is shown");
    assert!(
        wait.starts_with("<b>Waiting: </b>step prereqs waits for the creation of /subscriptions/"),
        "{wait}"
    );
    let refreshes: u32 = html
        .split(r#"data-refreshes=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .expect("the page refreshed from status");
    assert!(refreshes >= 1, "{refreshes}");
    assert!(
        !html.contains(r#"<span id="refresh"> · refresh failed"#),
        "{html}"
    );
    screenshot(&url, "progress-running");

    // The list: both jobs, each linking to its page.
    let url = format!("{base}/view");
    let html = dom(&url);
    for (job, status) in [(&failed, "Compensated"), (&running, "Running")] {
        assert!(
            html.contains(&format!(r#"<tr data-job="{job}" data-status="{status}">"#)),
            "{job}\n{html}"
        );
        assert!(html.contains(&format!(r#"href="clusters/{job}/view""#)));
    }
    screenshot(&url, "progress-list");
    eprintln!("screenshots in {}", shot.parent().unwrap().display());
    drop(server);
}
