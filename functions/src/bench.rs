//! `flotilla bench`: N jobs at once through the whole engine on the embedded
//! backends and the in-process simulator (no TLS, no latency, no throttle),
//! measuring what flotilla itself costs.

use crate::local::{Link, LocalOptions, LocalWorld};
use flotilla_core::decide::Policy;
use flotilla_core::embedded::BusOptions;
use flotilla_core::saga::JobStatus;
use flotilla_core::spec::ClusterSpec;
use serde_json::json;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Peak resident set size of this process, from /proc (0 where unavailable).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Simulated quotas that hold `jobs` live example clusters (28 vCPUs and 5
/// VMs in two scale sets each): the simulator's default of 100,000 of each
/// usage holds ~3,500, and jobs past it fail at `master` and compensate.
fn room_for(jobs: usize) -> std::collections::BTreeMap<String, u64> {
    let room = (jobs as u64).saturating_mul(100).max(100_000);
    [
        "cores",
        "standardDSv5Family",
        "virtualMachines",
        "virtualMachineScaleSets",
    ]
    .into_iter()
    .map(|name| (name.to_string(), room))
    .collect()
}

pub async fn run(
    jobs: usize,
    workers: usize,
    json_out: bool,
) -> Result<ExitCode, crate::error::Error> {
    if jobs == 0 || jobs > 100_000 {
        return Err("--jobs must be between 1 and 100000".into());
    }
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let world = LocalWorld::start(LocalOptions {
        staging: crate::local::StagingChoice::Simulator,
        data_dir: Some(dir.path().to_path_buf()),
        lro: Duration::ZERO,
        persist_sim: false,
        throttle: false,
        link: Link::InProcess,
        bus: BusOptions::default(),
        workers: workers.max(1),
        policy: Policy {
            backoff_base: Duration::from_millis(10),
            join_interval: Duration::from_millis(5),
            ..Policy::default()
        },
        sweep: crate::local::local_sweep(Duration::ZERO),
        quotas: room_for(jobs),
        permissions: None,
        read_only: false,
    })
    .await?;
    let spec = ClusterSpec::example();
    crate::local::ensure_resource_group(&world.config, &spec.resource_group, &spec.location)
        .await?;
    // Saves announce the jobs they settle, so waiting costs nothing per
    // open job: reading every open saga each round made the bench's own
    // polling a load that grew with the number of jobs.
    let mut settled_ids = world
        .engine
        .stats
        .watch_settled()
        .ok_or("the bench's engine is already watched")?;
    let writes_before = world.engine.stats.store_writes.load(Ordering::Relaxed);
    let arm_before = world.arm.request_count();
    let started = Instant::now();
    let mut open = std::collections::HashSet::with_capacity(jobs);
    let mut ids = Vec::with_capacity(jobs);
    for i in 0..jobs {
        // Every job its own address space: pre-flight refuses overlapping VNets in one group.
        let mut spec = spec.clone();
        spec.network = flotilla_core::spec::NetworkSpec::numbered(i as u32);
        let id = world.engine.submit(spec).await.map_err(|e| e.to_string())?;
        open.insert(id.clone());
        ids.push(id);
    }
    while !open.is_empty() {
        match tokio::time::timeout(Duration::from_secs(1), settled_ids.recv()).await {
            Ok(Some(id)) => {
                open.remove(&id);
            }
            // Quiet for a second (or no sender left, then every 100 ms):
            // read what is still open, in case a job settled without a save
            // announcing it.
            quiet => {
                if quiet.is_ok() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                for id in open.clone() {
                    let saga = world.engine.status(&id).await.map_err(|e| e.to_string())?;
                    if saga.is_some_and(|s| s.is_settled()) {
                        open.remove(&id);
                    }
                }
            }
        }
        if started.elapsed() > Duration::from_secs(600) {
            let settled = jobs - open.len();
            return Err(format!("only {settled} of {jobs} jobs finished within 10 minutes").into());
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut succeeded = 0;
    for id in &ids {
        let saga = world.engine.status(id).await.map_err(|e| e.to_string())?;
        if saga.is_some_and(|s| s.status == JobStatus::Succeeded) {
            succeeded += 1;
        }
    }
    let mut timings = world.engine.stats.timings_ms();
    timings.sort_by(|a, b| a.total_cmp(b));
    let writes = world.engine.stats.store_writes.load(Ordering::Relaxed) - writes_before;
    let arm = world.arm.request_count() - arm_before;
    let report = json!({
        "jobs": jobs,
        "succeeded": succeeded,
        "seconds": (elapsed * 1000.0).round() / 1000.0,
        "sagas_per_s": ((jobs as f64 / elapsed) * 10.0).round() / 10.0,
        "step_overhead_ms_p50": (percentile(&timings, 0.5) * 1000.0).round() / 1000.0,
        "step_overhead_ms_p99": (percentile(&timings, 0.99) * 1000.0).round() / 1000.0,
        "arm_requests_per_job": ((arm as f64 / jobs as f64) * 10.0).round() / 10.0,
        "store_writes_per_job": ((writes as f64 / jobs as f64) * 10.0).round() / 10.0,
        "peak_rss_mb": (peak_rss_mb() * 10.0).round() / 10.0,
    });
    world.shutdown().await;
    if json_out {
        println!("{report}");
    } else {
        for (k, v) in report.as_object().into_iter().flatten() {
            println!("{k:<22} {v}");
        }
    }
    Ok(if succeeded == jobs {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `flotilla bench --cold-start`: how long `flotilla serve` (zero-config: the
/// embedded store and bus and the built-in simulator) takes from exec to its
/// first readiness answer, `runs` times on a fresh data dir and `runs` times
/// on the data dir the previous start left; and how long `flotilla up` takes
/// from exec to its first step running, `runs` times on a fresh data dir.
pub fn cold_start(runs: usize, json_out: bool) -> Result<ExitCode, crate::error::Error> {
    if runs == 0 || runs > 1000 {
        return Err("--runs must be between 1 and 1000".into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let (mut fresh, mut reused, mut up) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        fresh.push(time_to_ready(&exe, dir.path())?);
        reused.push(time_to_ready(&exe, dir.path())?);
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        up.push(time_to_first_step(&exe, dir.path())?);
    }
    let figures = |ms: &mut Vec<f64>| {
        ms.sort_by(|a, b| a.total_cmp(b));
        json!({
            "min": (ms[0] * 10.0).round() / 10.0,
            "median": (percentile(ms, 0.5) * 10.0).round() / 10.0,
            "max": (ms[ms.len() - 1] * 10.0).round() / 10.0,
        })
    };
    let report = json!({
        "runs": runs,
        "fresh_data_dir_ms": figures(&mut fresh),
        "reused_data_dir_ms": figures(&mut reused),
        "up_first_step_ms": figures(&mut up),
    });
    if json_out {
        println!("{report}");
    } else {
        for (k, v) in report.as_object().into_iter().flatten() {
            println!("{k:<20} {v}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts `exe up` (the example job) on a fresh `data_dir` and returns the
/// milliseconds until its progress shows the first step running or done;
/// the run is then stopped.
fn time_to_first_step(
    exe: &std::path::Path,
    data_dir: &std::path::Path,
) -> Result<f64, crate::error::Error> {
    use std::io::BufRead;
    let started = Instant::now();
    let mut child = std::process::Command::new(exe)
        .arg("up")
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting up: {e}"))?;
    let stderr = child.stderr.take().ok_or("up has no stderr")?;
    // Progress lines read `job <id> step <step> <status>`.
    let first = std::io::BufReader::new(stderr).lines().find_map(|line| {
        let line = line.ok()?;
        let status = line.split(" step ").nth(1)?.split_whitespace().nth(1)?;
        (status != "Pending").then(|| started.elapsed().as_secs_f64() * 1000.0)
    });
    let _ = child.kill();
    let _ = child.wait();
    first.ok_or_else(|| "up ended without a step starting".into())
}

/// Starts `exe serve` on a free port with `data_dir` and returns the
/// milliseconds until `GET /` answered 200; the server is then stopped. A
/// start that lost its port to another process between the pick and the
/// bind is not a cold start: it is tried again once, on another port.
fn time_to_ready(
    exe: &std::path::Path,
    data_dir: &std::path::Path,
) -> Result<f64, crate::error::Error> {
    let mut started = start_serve(exe, data_dir)?;
    if matches!(&started, Err(why) if why.contains("cannot listen")) {
        started = start_serve(exe, data_dir)?;
    }
    started.map_err(|why| format!("serve exited before it was ready: {why}").into())
}

/// One timed start of `serve`: `Ok(Ok(ms))` when it answered, `Ok(Err(why))`
/// when it exited first (`why` ends with its last line of stderr).
fn start_serve(
    exe: &std::path::Path,
    data_dir: &std::path::Path,
) -> Result<Result<f64, String>, crate::error::Error> {
    use std::io::{Read, Write};
    let port = flotilla_harness::free_port().map_err(|e| e.to_string())?;
    let log = tempfile::NamedTempFile::new().map_err(|e| format!("temp file: {e}"))?;
    let stderr = log.reopen().map_err(|e| format!("temp file: {e}"))?;
    let started = Instant::now();
    let mut child = std::process::Command::new(exe)
        .args(["serve", "--port", &port.to_string()])
        .env("FLOTILLA_DATA_DIR", data_dir)
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("starting serve: {e}"))?;
    let ready = loop {
        if started.elapsed() > Duration::from_secs(30) {
            break None;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let said = std::fs::read_to_string(log.path()).unwrap_or_default();
            let last = said.lines().last().unwrap_or("").to_string();
            return Ok(Err(format!("{status}: {last}")));
        }
        let answered = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut c| {
            c.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
            let mut head = [0u8; 12];
            c.read_exact(&mut head)?;
            Ok(head.starts_with(b"HTTP/1.1 200"))
        });
        if matches!(answered, Ok(true)) {
            break Some(started.elapsed().as_secs_f64() * 1000.0);
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    match ready {
        Some(ms) => Ok(Ok(ms)),
        None => Err("serve was not ready within 30 s".into()),
    }
}
