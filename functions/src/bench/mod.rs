//! `flotilla bench`: N jobs at once through the whole engine on the embedded
//! backends and the simulator (no TLS, no latency, no throttle), measuring
//! what flotilla itself costs. The simulator answers in process, or with
//! `--simulator apart` from a child process over loopback HTTP, so that this
//! process's peak RSS is flotilla's own (the simulator keeps every job's
//! resources, blobs and secrets: most of the in-process figure). With
//! `--simulator none` there is no simulator: the engine's Azure ports answer
//! from the in-memory fake cloud ([`stand_in`]), the peers' kind of work.

mod stand_in;

use crate::local::{Link, LocalOptions, LocalWorld};
use flotilla_core::decide::Policy;
use flotilla_core::embedded::{BusOptions, Embedded};
use flotilla_core::engine::Engine;
use flotilla_core::saga::{JobStatus, StepName};
use flotilla_core::spec::ClusterSpec;
use serde_json::json;
use std::path::Path;
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

/// CPU time this process has used so far (user + system), in seconds, from
/// /proc (0 where unavailable). /proc counts in USER_HZ ticks, 100 a second
/// on Linux whatever the kernel's own tick.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces): state is
            // the first, utime the 12th and stime the 13th.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks =
                fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

/// The `p` percentile of `sorted` milliseconds, to the microsecond.
fn percentile_ms(sorted: &[f64], p: f64) -> f64 {
    (percentile(sorted, p) * 1000.0).round() / 1000.0
}

/// `count` things done for `jobs` jobs, per job to one decimal.
fn per_job(count: u64, jobs: usize) -> f64 {
    (count as f64 / jobs as f64 * 10.0).round() / 10.0
}

/// `cpu_s` CPU seconds spent on `jobs` jobs, as milliseconds per job to
/// two decimals.
fn ms_per_job(cpu_s: f64, jobs: usize) -> f64 {
    (cpu_s * 1000.0 / jobs as f64 * 100.0).round() / 100.0
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

/// Where the bench's simulator runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Placement {
    /// In this process, called without a socket (the default).
    InProcess,
    /// In a child process (`flotilla bench-simulator`), over loopback HTTP.
    Apart,
    /// Nowhere: the Azure ports answer from an in-memory stand-in (the
    /// tests' fake cloud), as each checkpoint's work is a trivial stand-in
    /// in the peers' jobs. Measures the engine alone, durability included.
    None,
}

/// Where the bench's embedded store and bus keep their database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreMedium {
    /// A file in a temporary data dir, durable as under `up` and `serve`
    /// (the default).
    File,
    /// SQLite's memory: nothing is written to disk and nothing would survive
    /// a crash. Not a way to run jobs: it measures what the store's file I/O
    /// (the WAL's writes, its locks and checkpoints) costs the engine.
    Memory,
}

/// What the bench's jobs run on: the local world and its simulator, or the
/// engine on the fake cloud.
enum Rig {
    Simulated {
        world: Box<LocalWorld>,
        apart: Option<Box<SimulatorProcess>>,
    },
    StandIn(stand_in::StandInWorld),
}

impl Rig {
    fn engine(&self) -> std::sync::Arc<Engine> {
        match self {
            Rig::Simulated { world, .. } => world.engine.clone(),
            Rig::StandIn(w) => w.engine.clone(),
        }
    }

    fn embedded(&self) -> &Embedded {
        match self {
            Rig::Simulated { world, .. } => &world.embedded,
            Rig::StandIn(w) => &w.embedded,
        }
    }

    /// Stops the workers and the sweeper, once every handler under way has
    /// finished: a handler records its time after the save that settled
    /// its job, so the figures are read only then.
    async fn stop_consumers(&mut self) {
        match self {
            Rig::Simulated { world, .. } => world.consumers.stop().await,
            Rig::StandIn(w) => w.consumers.stop().await,
        }
    }

    /// Calls to the Azure planes so far: ARM requests sent to the
    /// simulator, or every call the fake cloud answered.
    fn azure_calls(&self) -> u64 {
        match self {
            Rig::Simulated { world, .. } => world.arm.request_count(),
            Rig::StandIn(w) => w.cloud.calls(),
        }
    }
}

/// The simulated cloud every bench job runs against: zero-length
/// operations, no throttle, quotas that hold `jobs` clusters.
fn bench_simulator(jobs: usize) -> Result<flotilla_sim::Sim, crate::error::Error> {
    flotilla_sim::Sim::new(flotilla_sim::SimConfig {
        lro: Duration::ZERO,
        throttle: None,
        quotas: room_for(jobs),
        ..Default::default()
    })
    .map_err(|e| format!("simulator: {e}").into())
}

/// `flotilla bench-simulator` (hidden): the bench's simulator as a process of
/// its own. Prints one JSON line (`port`, `info`), serves plain HTTP on
/// loopback until its standard input closes, then prints its peak RSS and
/// the CPU it used as a second JSON line (`peak_rss_mb`, `cpu_s`) and exits.
pub async fn serve_simulator(jobs: usize) -> Result<ExitCode, crate::error::Error> {
    use axum::serve::ListenerExt;
    let sim = bench_simulator(jobs)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| format!("simulator socket: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("simulator socket: {e}"))?
        .port();
    // TCP_NODELAY: a response written in two parts would otherwise wait for
    // the client's delayed ACK before its second part left.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = sim.router();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!(
        "{}",
        json!({"port": port, "info": sim.info("https://sim.local")})
    );
    // Whatever arrives on stdin is discarded; its end is the signal to stop.
    let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut tokio::io::sink()).await;
    server.abort();
    println!(
        "{}",
        json!({"peak_rss_mb": (peak_rss_mb() * 10.0).round() / 10.0, "cpu_s": cpu_seconds()})
    );
    Ok(ExitCode::SUCCESS)
}

/// A running `flotilla bench-simulator` child.
struct SimulatorProcess {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    port: u16,
    info: flotilla_sim::SimInfo,
}

impl SimulatorProcess {
    async fn start(jobs: usize) -> Result<SimulatorProcess, crate::error::Error> {
        use tokio::io::AsyncBufReadExt;
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        let mut child = tokio::process::Command::new(exe)
            .args(["bench-simulator", "--jobs", &jobs.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the simulator process: {e}"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or("the simulator process has no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = lines
            .next_line()
            .await
            .map_err(|e| format!("simulator process: {e}"))?
            .ok_or("the simulator process ended before it was ready")?;
        let ready: serde_json::Value = serde_json::from_str(&first)
            .map_err(|e| format!("simulator process said {first:?}: {e}"))?;
        let port = ready["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or("the simulator process named no port")?;
        let info = serde_json::from_value(ready["info"].clone())
            .map_err(|e| format!("the simulator process's endpoints: {e}"))?;
        Ok(SimulatorProcess {
            child,
            lines,
            port,
            info,
        })
    }

    /// Stops the child and returns its peak RSS in MB and the CPU seconds it used.
    async fn stop(mut self) -> Result<(f64, f64), crate::error::Error> {
        drop(self.child.stdin.take());
        let last = self
            .lines
            .next_line()
            .await
            .map_err(|e| format!("simulator process: {e}"))?
            .ok_or("the simulator process ended without its figures")?;
        let _ = self.child.wait().await;
        serde_json::from_str::<serde_json::Value>(&last)
            .ok()
            .and_then(|v| Some((v["peak_rss_mb"].as_f64()?, v["cpu_s"].as_f64()?)))
            .ok_or_else(|| format!("the simulator process said {last:?}").into())
    }
}

/// The profile this binary was built with, as the reports name it.
const BUILD: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

/// Says on stderr that a debug build's figures are not the product's: the
/// release profile is optimized and linked with LTO, several times faster.
fn warn_if_debug_build() {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this flotilla is a debug build, several times slower than a release build; \
             measure with `cargo run --release -- bench`"
        );
    }
}

pub async fn run(
    jobs: usize,
    workers: usize,
    placement: Placement,
    medium: StoreMedium,
    json_out: bool,
) -> Result<ExitCode, crate::error::Error> {
    if jobs == 0 || jobs > 100_000 {
        return Err("--jobs must be between 1 and 100000".into());
    }
    warn_if_debug_build();
    // The data dir of a file store; a store in memory has none.
    let dir = match medium {
        StoreMedium::File => Some(tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?),
        StoreMedium::Memory => None,
    };
    let data_dir = dir.as_ref().map(|d| d.path());
    let policy = Policy {
        backoff_base: Duration::from_millis(10),
        join_interval: Duration::from_millis(5),
        ..Policy::default()
    };
    let sweep = crate::local::local_sweep(Duration::ZERO);
    let spec = ClusterSpec::example();
    let mut rig = if placement == Placement::None {
        Rig::StandIn(stand_in::StandInWorld::start(
            data_dir,
            workers,
            policy,
            sweep,
            &room_for(jobs),
        )?)
    } else {
        let apart = match placement {
            Placement::Apart => Some(Box::new(SimulatorProcess::start(jobs).await?)),
            _ => None,
        };
        let link = match &apart {
            None => Link::InProcess,
            Some(p) => Link::Apart {
                port: p.port,
                info: Box::new(p.info.clone()),
            },
        };
        let world = LocalWorld::start(LocalOptions {
            staging: crate::local::StagingChoice::Simulator,
            data_dir: data_dir.map(Path::to_path_buf),
            lro: Duration::ZERO,
            persist_sim: false,
            throttle: false,
            link,
            bus: BusOptions::default(),
            workers: workers.max(1),
            policy,
            sweep,
            quotas: room_for(jobs),
            permissions: None,
            read_only: false,
        })
        .await?;
        crate::local::ensure_resource_group(&world.config, &spec.resource_group, &spec.location)
            .await?;
        Rig::Simulated {
            world: Box::new(world),
            apart,
        }
    };
    // Saves announce the jobs they settle, so waiting costs nothing per
    // open job: reading every open saga each round made the bench's own
    // polling a load that grew with the number of jobs.
    let engine = rig.engine();
    let mut settled_ids = engine
        .stats
        .watch_settled()
        .ok_or("the bench's engine is already watched")?;
    let writes_before = engine.stats.store_writes.load(Ordering::Relaxed);
    let waits_before = engine.stats.waits.load(Ordering::Relaxed);
    let kept_before = engine.stats.kept_loads.load(Ordering::Relaxed);
    let azure_before = rig.azure_calls();
    let (grouped_before, commits_before) = rig.embedded().commits();
    let messages_before = rig.embedded().messages_enqueued();
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let mut open = std::collections::HashSet::with_capacity(jobs);
    let mut ids = Vec::with_capacity(jobs);
    for i in 0..jobs {
        // Every job its own address space: pre-flight refuses overlapping VNets in one group.
        let mut spec = spec.clone();
        spec.network = flotilla_core::spec::NetworkSpec::numbered(i as u32);
        // Checked at the edge, as `up` and HTTP submit do.
        let id = engine
            .submit_checked(spec, None)
            .await
            .map_err(|e| e.to_string())?
            .job;
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
                    let saga = engine.status(&id).await.map_err(|e| e.to_string())?;
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
    let cpu = cpu_seconds() - cpu_before;
    rig.stop_consumers().await;
    let mut succeeded = 0;
    for id in &ids {
        let saga = engine.status(id).await.map_err(|e| e.to_string())?;
        if saga.is_some_and(|s| s.status == JobStatus::Succeeded) {
            succeeded += 1;
        }
    }
    // One sweep over the finished run: what the sweeper costs a data dir
    // that keeps every job it ran, all of them settled by now.
    let sweep_started = Instant::now();
    let swept = engine.sweep(&sweep).await.map_err(|e| e.to_string())?;
    let sweep_settled_ms = sweep_started.elapsed().as_secs_f64() * 1000.0;
    let by_handler = engine.stats.timings_ms();
    let mut timings: Vec<f64> = by_handler.values().flatten().copied().collect();
    timings.sort_by(|a, b| a.total_cmp(b));
    let handler_ms: serde_json::Map<String, serde_json::Value> = by_handler
        .into_iter()
        .map(|(handler, mut ms)| {
            ms.sort_by(|a, b| a.total_cmp(b));
            let figures = json!({
                "events": ms.len(),
                "p50": percentile_ms(&ms, 0.5),
                "p99": percentile_ms(&ms, 0.99),
            });
            (handler, figures)
        })
        .collect();
    let writes = engine.stats.store_writes.load(Ordering::Relaxed) - writes_before;
    let waits = engine.stats.waits.load(Ordering::Relaxed) - waits_before;
    let kept = engine.stats.kept_loads.load(Ordering::Relaxed) - kept_before;
    let azure = rig.azure_calls() - azure_before;
    let messages = rig.embedded().messages_enqueued() - messages_before;
    let (grouped, commits) = rig.embedded().commits();
    let (grouped, commits) = (grouped - grouped_before, commits - commits_before);
    let writes_per_commit = if commits == 0 {
        0.0
    } else {
        (grouped as f64 / commits as f64 * 100.0).round() / 100.0
    };
    let mut report = json!({
        "build": BUILD,
        "jobs": jobs,
        "succeeded": succeeded,
        "seconds": (elapsed * 1000.0).round() / 1000.0,
        "sagas_per_s": ((jobs as f64 / elapsed) * 10.0).round() / 10.0,
        "step_overhead_ms_p50": percentile_ms(&timings, 0.5),
        "step_overhead_ms_p99": percentile_ms(&timings, 0.99),
        // The name `--simulator` takes.
        "simulator": clap::ValueEnum::to_possible_value(&placement).map(|v| v.get_name().to_owned()),
        // Where the database really was, as `--store` names it.
        "store": if rig.embedded().is_file() { "file" } else { "memory" },
        "store_writes_per_job": per_job(writes, jobs),
        "commits_per_job": per_job(commits, jobs),
        "bus_messages_per_job": per_job(messages, jobs),
        "writes_per_commit": writes_per_commit,
        // The writes after each job's creation, over its six steps.
        "store_writes_per_step": (writes.saturating_sub(jobs as u64) as f64
            / (jobs * StepName::ALL.len()) as f64
            * 100.0)
            .round()
            / 100.0,
        "handler_ms": handler_ms,
        "waits_per_job": per_job(waits, jobs),
        // Loads that took the saga this engine kept from its last write
        // instead of reading and parsing the document (`engine::kept`).
        "kept_loads_per_job": per_job(kept, jobs),
        // A sweep after the run: its time, and the documents it read.
        "sweep_settled_ms": (sweep_settled_ms * 100.0).round() / 100.0,
        "sweep_settled_scanned": swept.scanned,
        "peak_rss_mb": (peak_rss_mb() * 10.0).round() / 10.0,
        "cpu_ms_per_job": ms_per_job(cpu, jobs),
        // CPU time over wall time, beside the cores there are: a run at
        // `cores` is bound by the work per job; one below it waits (on a
        // lock, a commit) with cores idle.
        "cpu_cores_busy": (cpu / elapsed * 100.0).round() / 100.0,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
    });
    let mut all_well = succeeded == jobs;
    match rig {
        Rig::Simulated { world, apart } => {
            report["arm_requests_per_job"] = json!(per_job(azure, jobs));
            let sim = world.sim.clone();
            world.shutdown().await;
            // The process ends next: the operating system takes the simulator's
            // state back faster than freeing it would. Left once the workers have
            // stopped, so that nothing (a sweep) meets an emptied simulator.
            sim.abandon_state();
            if let Some(process) = apart {
                // The child's CPU counts its whole life, set-up included.
                let (rss, cpu) = process.stop().await?;
                report["simulator_peak_rss_mb"] = json!(rss);
                report["simulator_cpu_ms_per_job"] = json!(ms_per_job(cpu, jobs));
            }
        }
        Rig::StandIn(world) => {
            // The fake cloud's calls are every plane's (ARM, Key Vault,
            // blobs, the API server), so they have a name of their own.
            report["azure_calls_per_job"] = json!(per_job(azure, jobs));
            // Every resource created once, as the engine tests demand.
            let creates = world.cloud.max_creates();
            report["max_creates_per_resource"] = json!(creates);
            all_well &= creates <= 1;
            world.shutdown().await;
        }
    }
    print_report(&report, json_out);
    Ok(if all_well {
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
    warn_if_debug_build();
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
        "build": BUILD,
        "runs": runs,
        "fresh_data_dir_ms": figures(&mut fresh),
        "reused_data_dir_ms": figures(&mut reused),
        "up_first_step_ms": figures(&mut up),
    });
    print_report(&report, json_out);
    Ok(ExitCode::SUCCESS)
}

/// Prints a report as one JSON line, or as one line per figure with the
/// values lined up (an object's figures each on a line of their own:
/// `handler_ms.stage  {"events":…}`).
fn print_report(report: &serde_json::Value, json_out: bool) {
    if json_out {
        println!("{report}");
        return;
    }
    let mut lines = vec![];
    for (k, v) in report.as_object().into_iter().flatten() {
        match v.as_object() {
            Some(parts) => {
                for (part, figures) in parts {
                    lines.push((format!("{k}.{part}"), figures));
                }
            }
            None => lines.push((k.clone(), v)),
        }
    }
    let width = lines
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0);
    for (label, value) in lines {
        println!("{label:<width$}  {value}");
    }
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
