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
        quotas: Default::default(),
        permissions: None,
        read_only: false,
    })
    .await?;
    let spec = ClusterSpec::example();
    crate::local::ensure_resource_group(&world.config, &spec.resource_group, &spec.location)
        .await?;
    let writes_before = world.engine.stats.store_writes.load(Ordering::Relaxed);
    let arm_before = world.arm.request_count();
    let started = Instant::now();
    let mut ids = Vec::with_capacity(jobs);
    for i in 0..jobs {
        // Every job its own address space: pre-flight refuses overlapping VNets in one group.
        let mut spec = spec.clone();
        spec.network = flotilla_core::spec::NetworkSpec::numbered(i as u32);
        ids.push(world.engine.submit(spec).await.map_err(|e| e.to_string())?);
    }
    let mut succeeded;
    loop {
        succeeded = 0;
        let mut settled = 0;
        for id in &ids {
            if let Some(s) = world.engine.status(id).await.map_err(|e| e.to_string())? {
                if s.status.is_terminal() && s.pending.is_none() {
                    settled += 1;
                    if s.status == JobStatus::Succeeded {
                        succeeded += 1;
                    }
                }
            }
        }
        if settled == jobs {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!("only {settled} of {jobs} jobs finished within 10 minutes").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
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
