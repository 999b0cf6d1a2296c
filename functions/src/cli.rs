//! The command line. Exit codes: 0 success, 1 the job ended Compensated or
//! Failed (or a command was refused, including a data dir that another
//! process holds), 2 bad usage or a bad spec.
//!
//! Commands that change a data dir lock it first (`LocalWorld::start`, and
//! `sim --data-dir`); `status` and `list` only read it, through a read-only
//! SQLite connection, so they work while another process owns the dir.

use crate::data_dir::DataDirLock;
use crate::local::{self, fault_for, LocalOptions, LocalWorld};
use crate::progress::Progress;
use crate::web::PageServer;
use clap::{Parser, Subcommand, ValueEnum};
use flotilla_core::embedded::Embedded;
use flotilla_core::engine::{
    parse_resource_groups, stalled_reason, CommandError, OrphanOptions, OrphanReport, Removal,
    RemovalOptions, SweepOptions,
};
use flotilla_core::saga::{JobStatus, Saga, StepName};
use flotilla_core::spec::ClusterSpec;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "flotilla",
    version,
    about = "Provision compute clusters on Azure, step by step, from serverless code"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StagingKind {
    Sim,
    Azurite,
}

#[derive(Subcommand)]
enum Command {
    /// Submit a job and run it to the end against the built-in Azure simulator.
    Up {
        /// Cluster spec (JSON); the built-in example when omitted (see `flotilla spec`).
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Store, bus and simulator state [default: ./.flotilla or FLOTILLA_DATA_DIR].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Make the simulator refuse this step's Azure call with a terminal error.
        #[arg(long, value_parser = parse_step)]
        fail_at: Option<StepName>,
        /// How long simulated long-running operations take.
        #[arg(long, default_value_t = 1.0)]
        lro_seconds: f64,
        /// Deliver every event twice (tests idempotency).
        #[arg(long)]
        deliver_twice: bool,
        /// Where `stage` writes: the simulator's blob service, or Azurite.
        #[arg(long, value_enum, default_value_t = StagingKind::Sim)]
        staging: StagingKind,
        /// Azurite's blob endpoint for `--staging azurite`.
        #[arg(long, default_value = "http://127.0.0.1:10000/devstoreaccount1")]
        azurite_blob_endpoint: String,
        /// A simulator quota limit, `NAME=N` (repeatable), as for `flotilla sim`;
        /// pre-flight checks the job against it.
        #[arg(long = "quota", value_name = "NAME=N")]
        quotas: Vec<String>,
        /// Serve the job's progress page on 127.0.0.1 while it runs and print
        /// its URL; after the job ends, keep serving until Ctrl-C.
        #[arg(long)]
        open: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Finish every unfinished job in the data dir (after a crash).
    Resume {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 1.0)]
        lro_seconds: f64,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show a job's saga: status, steps, resources, errors.
    Status {
        job: String,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Redraw a compact timeline (a line per step and undo, the current
        /// wait) until the job ends; on a pipe, a line per change.
        #[arg(long, conflicts_with = "web")]
        watch: bool,
        /// Serve the job's progress page on 127.0.0.1 and print its URL;
        /// runs until Ctrl-C.
        #[arg(long)]
        web: bool,
        /// The port for --web (0: a free one).
        #[arg(long, default_value_t = 0, requires = "web")]
        port: u16,
    },
    /// List the jobs in the data dir.
    List {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Tear a finished job down through its undo chain.
    Delete {
        job: String,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 1.0)]
        lro_seconds: f64,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Change a worker pool's instance count (within its min..max).
    Scale {
        job: String,
        #[arg(long)]
        pool: String,
        #[arg(long)]
        count: u32,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 1.0)]
        lro_seconds: f64,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Add a worker pool to a Succeeded cluster, or remove one (day 2).
    Pool {
        #[command(subcommand)]
        action: PoolAction,
    },
    /// List orphans — anything tagged managed-by: flotilla whose job is
    /// unknown or ended — and with --delete remove them, dependants first.
    Sweep {
        /// Only orphans at least this old (e.g. 90s, 15m, 2h, 7d).
        #[arg(long, default_value = "0s", value_parser = parse_age)]
        older_than: Duration,
        /// Delete the orphans found (through the undo chain's deletion).
        #[arg(long)]
        delete: bool,
        /// A resource group to list besides those of known jobs (repeatable;
        /// FLOTILLA_SWEEP_RESOURCE_GROUPS adds more).
        #[arg(long = "resource-group", value_name = "RG")]
        resource_groups: Vec<String>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 1.0)]
        lro_seconds: f64,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print the built-in example cluster spec.
    Spec,
    /// Show every operation `up` would send for a spec, step by step with its
    /// undo (nothing is created); with JOB, what `delete` would remove now.
    Plan {
        job: Option<String>,
        /// Cluster spec (JSON); the built-in example when omitted.
        #[arg(long, conflicts_with = "job")]
        spec: Option<PathBuf>,
        /// Name resources as a submission with this idempotency key would.
        #[arg(long, conflicts_with = "job")]
        idempotency_key: Option<String>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Run the Azure simulator on loopback; prints one JSON line with its endpoints.
    Sim {
        #[arg(long, default_value_t = 0)]
        port: u16,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 1.0)]
        lro_seconds: f64,
        #[arg(long, default_value_t = 200)]
        write_burst: u32,
        #[arg(long, default_value_t = 10.0)]
        write_refill_per_s: f64,
        /// A quota limit per region, `NAME=N` (repeatable): `cores`, a VM family such as
        /// `standardDSv5Family`, `virtualMachines` or `virtualMachineScaleSets`.
        #[arg(long = "quota", value_name = "NAME=N")]
        quotas: Vec<String>,
    },
    /// Standalone worker: receive the step subscriptions from Service Bus yourself.
    Worker,
    /// Run the Azure Functions custom handler (the host starts this; see docs/functions.md).
    Serve {
        /// Port on 127.0.0.1 [default: FUNCTIONS_CUSTOMHANDLER_PORT, else 7072].
        #[arg(long)]
        port: Option<u16>,
    },
    /// Lay out a deployable function app in DIR and zip it to DIR.zip.
    Package {
        #[arg(long)]
        out: PathBuf,
        /// Refuse an executable that needs a newer glibc (e.g. 2.31, the Functions Linux images).
        #[arg(long)]
        max_glibc: Option<String>,
        /// Refuse a dynamically linked executable (one with a loader or a shared library).
        #[arg(long)]
        require_static: bool,
    },
    /// Run N jobs through the whole engine while injecting faults and killing
    /// processes, then check every job and what is left in the simulator.
    Chaos(crate::chaos::ChaosArgs),
    /// Run N jobs concurrently on the embedded backends with zero simulated latency.
    Bench {
        #[arg(long, default_value_t = 200)]
        jobs: usize,
        #[arg(long, default_value_t = 8)]
        workers: usize,
        /// Instead of jobs, time `serve` from exec to ready, on fresh and on
        /// reused data dirs, and `up` from exec to its first step running.
        #[arg(long, conflicts_with_all = ["jobs", "workers", "simulator", "store"])]
        cold_start: bool,
        /// How many starts of each kind --cold-start times.
        #[arg(long, default_value_t = 10, requires = "cold_start")]
        runs: usize,
        /// Where the simulator runs: in this process, apart in a child
        /// process over loopback HTTP (then `peak_rss_mb` is flotilla's alone
        /// and `simulator_peak_rss_mb` the child's), or nowhere (`none`: the
        /// engine alone, its Azure calls answered by an in-memory fake cloud).
        #[arg(long, value_enum, default_value_t = crate::bench::Placement::InProcess)]
        simulator: crate::bench::Placement,
        /// Where the embedded store and bus keep their database: a file, durable
        /// as under `up` and `serve`, or SQLite's memory (`memory`: nothing on
        /// disk, nothing survives a crash; it measures what the file I/O of
        /// durability costs, and is no way to run jobs).
        #[arg(long, value_enum, default_value_t = crate::bench::StoreMedium::File)]
        store: crate::bench::StoreMedium,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// The simulator of `bench --simulator apart` (started by the bench).
    #[command(hide = true)]
    BenchSimulator {
        #[arg(long)]
        jobs: usize,
    },
}

#[derive(Subcommand)]
enum PoolAction {
    /// Add a pool (its JSON as one element of the spec's `workerPools`),
    /// checked like a spec at creation; waits until its `min` nodes are Ready.
    Add {
        job: String,
        /// The pool (JSON): name, instanceType, min, max, disk, zones.
        #[arg(long)]
        spec: PathBuf,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 1.0)]
        lro_seconds: f64,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Remove a pool: its scale set and init script are deleted.
    Remove {
        job: String,
        /// The pool's name.
        pool: String,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 1.0)]
        lro_seconds: f64,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

fn parse_step(s: &str) -> Result<StepName, String> {
    StepName::parse(s).ok_or_else(|| {
        format!("unknown step '{s}' (one of stage, prereqs, keys, master, workers, join)")
    })
}

fn parse_age(s: &str) -> Result<Duration, String> {
    flotilla_core::orphans::parse_duration(s)
}

fn lro(seconds: f64) -> Result<Duration, String> {
    if seconds.is_finite() && (0.0..=3600.0).contains(&seconds) {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(format!(
            "--lro-seconds must be between 0 and 3600 (got {seconds})"
        ))
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Dropped after the runtime (declared first): flushes the exporters at exit.
    let _telemetry = crate::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

use crate::error::Error as Failure;

async fn run(command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Spec => {
            print!("{}", flotilla_core::spec::EXAMPLE_SPEC);
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            job,
            spec,
            idempotency_key,
            data_dir,
            output,
        } => plan(job, spec, idempotency_key, data_dir, output).await,
        Command::Sweep {
            older_than,
            delete,
            resource_groups,
            data_dir,
            lro_seconds,
            output,
        } => {
            sweep(
                older_than,
                delete,
                resource_groups,
                data_dir,
                lro_seconds,
                output,
            )
            .await
        }
        Command::Up {
            spec,
            data_dir,
            fail_at,
            lro_seconds,
            deliver_twice,
            staging,
            azurite_blob_endpoint,
            quotas,
            open,
            output,
        } => {
            let spec = read_spec(spec)?;
            let quotas = parse_quotas(&quotas)?;
            let lro = lro(lro_seconds).map_err(Failure::Usage)?;
            let dir = data_dir.unwrap_or_else(local::default_data_dir);
            let shown_dir = dir.display().to_string();
            let mut options = LocalOptions::on_disk(dir, lro, deliver_twice);
            if staging == StagingKind::Azurite {
                options.staging = local::StagingChoice::Azurite {
                    endpoint: azurite_blob_endpoint,
                };
            }
            options.quotas = quotas;
            let world = LocalWorld::start(options).await?;
            if let Some(step) = fail_at {
                world.sim.add_fault(fault_for(step, spec.staging.access));
            }
            local::ensure_resource_group(&world.config, &spec.resource_group, &spec.location)
                .await?;
            let job = match world.engine.submit_checked(spec, None).await {
                Ok(s) => s.job,
                Err(CommandError::Rejected(verdict)) => {
                    world.shutdown().await;
                    return refused(&verdict, output);
                }
                Err(e) => {
                    world.shutdown().await;
                    return Err(command_failure(e));
                }
            };
            if output == Output::Text {
                eprintln!("job {job} submitted (data dir: {shown_dir})");
            }
            let pages = match open {
                true => {
                    let pages = PageServer::start(world.engine.clone(), 0).await?;
                    eprintln!("progress page: {}", pages.job_url(&job));
                    Some(pages)
                }
                false => None,
            };
            let sagas = run_until_settled(&world, std::slice::from_ref(&job), output).await?;
            if let Some(pages) = pages {
                eprintln!(
                    "job {job} ended; the progress page stays at {} until Ctrl-C",
                    pages.job_url(&job)
                );
                crate::signals::stop_requested().await;
                pages.stop().await;
            }
            finish(world, sagas, output, |s| s.status == JobStatus::Succeeded).await
        }
        Command::Resume {
            data_dir,
            lro_seconds,
            output,
        } => {
            let world = existing_world(data_dir, lro_seconds).await?;
            let jobs: Vec<String> = list_sagas(&world)
                .await?
                .into_iter()
                .filter(|s| !s.is_settled())
                .map(|s| s.id)
                .collect();
            if output == Output::Text {
                eprintln!("resuming {} unfinished job(s)", jobs.len());
            }
            let sagas = run_until_settled(&world, &jobs, output).await?;
            finish(world, sagas, output, |s| s.status == JobStatus::Succeeded).await
        }
        Command::Delete {
            job,
            data_dir,
            lro_seconds,
            output,
        } => {
            let world = existing_world(data_dir, lro_seconds).await?;
            if let Err(e) = world.engine.request_delete(&job).await {
                world.shutdown().await;
                return Err(command_failure(e));
            }
            let sagas = run_until_settled(&world, std::slice::from_ref(&job), output).await?;
            finish(world, sagas, output, |s| s.status == JobStatus::Deleted).await
        }
        Command::Scale {
            job,
            pool,
            count,
            data_dir,
            lro_seconds,
            output,
        } => {
            let world = existing_world(data_dir, lro_seconds).await?;
            if let Err(e) = world.engine.request_scale(&job, &pool, count).await {
                world.shutdown().await;
                return Err(command_failure(e));
            }
            let scaled = |s: &Saga| s.pools.get(&pool) == Some(&count) && s.pending.is_none();
            let failed = |s: &Saga| s.error.is_some() && s.pending.is_none();
            let sagas = run_until(&world, std::slice::from_ref(&job), output, |s| {
                scaled(s) || failed(s)
            })
            .await?;
            finish(world, sagas, output, scaled).await
        }
        Command::Pool { action } => pool(action).await,
        Command::Status {
            job,
            data_dir,
            output,
            watch,
            web,
            port,
        } => {
            let dir = data_dir.unwrap_or_else(local::default_data_dir);
            if web {
                return status_web(&dir, &job, port).await;
            }
            if watch {
                return status_watch(&dir, &job).await;
            }
            let saga = read_saga(&open_store(&dir)?, &dir, &job).await?;
            match output {
                Output::Json => {
                    let mut v = saga.to_json();
                    if let Some(wait) = saga.wait() {
                        v["wait"] = json!(wait);
                    }
                    if let Some(why) = stalled(&saga) {
                        v["stalled"] = json!(why);
                    }
                    if let Some(id) = saga.outputs_id() {
                        v["outputs"] = json!(id);
                    }
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
                    );
                }
                Output::Text => print_status(&saga),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::List { data_dir, output } => {
            let dir = data_dir.unwrap_or_else(local::default_data_dir);
            let store = open_store(&dir)?;
            let mut sagas: Vec<Saga> = store
                .store()
                .list()
                .await
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter_map(|d| serde_json::from_value(d.doc).ok())
                .collect();
            sagas.sort_by_key(|s: &Saga| s.created_at);
            match output {
                Output::Json => {
                    let rows: Vec<_> = sagas.iter().map(|s| json!({"job": s.id, "status": s.status, "created": s.created_at.to_string()})).collect();
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?
                    );
                }
                Output::Text => {
                    for s in &sagas {
                        println!(
                            "{:<28} {:<13} {}",
                            s.id,
                            format!("{:?}", s.status),
                            s.created_at
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sim {
            port,
            data_dir,
            lro_seconds,
            write_burst,
            write_refill_per_s,
            quotas,
        } => {
            let lro = lro(lro_seconds).map_err(Failure::Usage)?;
            let quota_limits = parse_quotas(&quotas)?;
            if write_burst == 0 || write_refill_per_s.is_nan() || write_refill_per_s <= 0.0 {
                return Err(Failure::Usage(
                    "--write-burst and --write-refill-per-s must be positive".into(),
                ));
            }
            // Held until the simulator stops (the process ends).
            let _lock = match &data_dir {
                Some(dir) => Some(DataDirLock::acquire(dir).map_err(|e| e.to_string())?),
                None => None,
            };
            let throttle = flotilla_sim::ThrottleConfig {
                write_burst,
                write_refill_per_s,
                ..Default::default()
            };
            let sim = flotilla_sim::Sim::new(flotilla_sim::SimConfig {
                data_dir,
                lro,
                throttle: Some(throttle),
                quotas: quota_limits,
                ..Default::default()
            })
            .map_err(|e| e.to_string())?;
            let server = sim.serve(port).await.map_err(|e| e.to_string())?;
            println!(
                "{}",
                serde_json::to_string(&server.info).map_err(|e| e.to_string())?
            );
            crate::signals::stop_requested().await;
            server.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker => crate::worker::run().await.map(|_| ExitCode::SUCCESS),
        Command::Serve { port } => crate::serve::run(port).await.map(|()| ExitCode::SUCCESS),
        Command::Package {
            out,
            max_glibc,
            require_static,
        } => {
            let max = match max_glibc.as_deref().map(crate::package::parse_version) {
                Some(Err(e)) => return Err(e),
                Some(Ok(v)) => Some(v),
                None => None,
            };
            let p = crate::package::run(&out, max.as_deref(), require_static)?;
            println!(
                "{}",
                json!({"dir": p.dir.display().to_string(), "zip": p.zip.display().to_string(), "entries": p.entries,
                       "linkage": p.needs.linkage(), "interpreter": p.needs.interpreter,
                       "glibc": p.needs.glibc_text(), "libraries": p.needs.libraries})
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Chaos(args) => crate::chaos::run(args).await.map_err(|e| match e {
            crate::chaos::ChaosError::Usage(m) => Failure::Usage(m),
            other => Failure::Runtime(other.to_string()),
        }),
        Command::Bench {
            cold_start: true,
            runs,
            output,
            ..
        } => crate::bench::cold_start(runs, output == Output::Json),
        Command::Bench {
            jobs,
            workers,
            simulator,
            store,
            output,
            ..
        } => crate::bench::run(jobs, workers, simulator, store, output == Output::Json).await,
        Command::BenchSimulator { jobs } => crate::bench::serve_simulator(jobs).await,
    }
}

/// The local world of a data dir that already holds flotilla's store.
/// The spec in `path`, or the built-in example; a bad one is a usage error naming the field.
fn read_spec(path: Option<PathBuf>) -> Result<ClusterSpec, Failure> {
    let Some(path) = path else {
        return Ok(ClusterSpec::example());
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
    ClusterSpec::from_json(&text)
        .map_err(|e| Failure::Usage(format!("invalid spec {}: {e}", path.display())))
}

/// `flotilla pool add|remove`: the request, then the job's handlers until
/// the change is done (exit 0) or ended with an error (exit 1).
async fn pool(action: PoolAction) -> Result<ExitCode, Failure> {
    let (job, name, data_dir, lro_seconds, output, add) = match action {
        PoolAction::Add {
            job,
            spec,
            data_dir,
            lro_seconds,
            output,
        } => {
            let text = std::fs::read_to_string(&spec)
                .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", spec.display())))?;
            let pool = flotilla_core::spec::WorkerPool::from_json(&text)
                .map_err(|e| Failure::Usage(format!("invalid pool {}: {e}", spec.display())))?;
            (
                job,
                pool.name.clone(),
                data_dir,
                lro_seconds,
                output,
                Some(pool),
            )
        }
        PoolAction::Remove {
            job,
            pool,
            data_dir,
            lro_seconds,
            output,
        } => (job, pool, data_dir, lro_seconds, output, None),
    };
    let world = existing_world(data_dir, lro_seconds).await?;
    let requested = match &add {
        Some(pool) => world.engine.request_add_pool(&job, pool).await,
        None => world.engine.request_remove_pool(&job, &name).await,
    };
    if let Err(e) = requested {
        world.shutdown().await;
        return Err(command_failure(e));
    }
    let adding = add.is_some();
    let done = |s: &Saga| {
        s.pending.is_none() && s.error.is_none() && s.pools.contains_key(&name) == adding
    };
    let failed = |s: &Saga| s.error.is_some() && s.pending.is_none();
    let sagas = run_until(&world, std::slice::from_ref(&job), output, |s| {
        done(s) || failed(s)
    })
    .await?;
    finish(world, sagas, output, done).await
}

/// `flotilla plan`: a spec's operations, or a job's removal.
async fn plan(
    job: Option<String>,
    spec: Option<PathBuf>,
    key: Option<String>,
    data_dir: Option<PathBuf>,
    output: Output,
) -> Result<ExitCode, Failure> {
    let print = |v: &serde_json::Value| -> Result<(), Failure> {
        println!(
            "{}",
            serde_json::to_string_pretty(v).map_err(|e| e.to_string())?
        );
        Ok(())
    };
    if let Some(job) = job {
        let dir = data_dir.unwrap_or_else(local::default_data_dir);
        let store = open_store(&dir)?;
        let doc = store.store().get(&job).await.map_err(|e| e.to_string())?;
        let doc = doc
            .ok_or_else(|| Failure::Runtime(format!("job {job} not found in {}", dir.display())))?;
        let saga: Saga = serde_json::from_value(doc.doc)
            .map_err(|e| format!("stored saga is unreadable: {e}"))?;
        let removal = flotilla_core::plan::removal(&saga);
        match output {
            Output::Json => print(&json!({"job": job, "delete": removal}))?,
            Output::Text => {
                println!("delete {job} would remove, in this order:");
                for op in &removal {
                    print_op(op, "  ");
                }
                if removal.is_empty() {
                    println!("  nothing: no resource of the job may still exist");
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let spec = read_spec(spec)?;
    let world = LocalWorld::start(LocalOptions::ephemeral()).await?;
    let plan = world.engine.plan(spec, key.as_deref());
    world.shutdown().await;
    match output {
        Output::Json => print(&serde_json::to_value(&plan).map_err(|e| e.to_string())?)?,
        Output::Text => {
            println!(
                "plan for job {} (a submission gets its own id unless it uses the same --idempotency-key):",
                plan.job
            );
            for step in &plan.steps {
                println!("{}", step.step);
                for op in &step.operations {
                    print_op(op, "  ");
                }
            }
            if !plan.existing.is_empty() {
                println!("used as they are (never created or deleted):");
                for id in &plan.existing {
                    println!("  {id}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `flotilla sweep`: the orphans of the data dir's world, removed with `--delete`.
async fn sweep(
    older_than: Duration,
    delete: bool,
    groups: Vec<String>,
    data_dir: Option<PathBuf>,
    lro_seconds: f64,
    output: Output,
) -> Result<ExitCode, Failure> {
    let groups =
        parse_resource_groups("--resource-group", &groups.join(",")).map_err(Failure::Usage)?;
    let mut opts = OrphanOptions::from_settings(OrphanOptions {
        older_than,
        resource_groups: groups,
    })
    .map_err(Failure::Usage)?;
    opts.older_than = older_than;
    let lro = lro(lro_seconds).map_err(Failure::Usage)?;
    let dir = data_dir.unwrap_or_else(local::default_data_dir);
    require_store(&dir)?;
    // Only the sweep runs: no workers moving other jobs meanwhile.
    let mut options = LocalOptions::on_disk(dir, lro, false);
    options.workers = 0;
    let world = LocalWorld::start(options).await?;
    let found = match world.engine.find_orphans(&opts).await {
        Ok(f) => f,
        Err(e) => {
            world.shutdown().await;
            return Err(Failure::Runtime(e.to_string()));
        }
    };
    let removal = if delete && !found.orphans.is_empty() {
        if output == Output::Text {
            eprintln!("deleting {} orphan(s)...", found.orphans.len());
        }
        let opts = RemovalOptions {
            max_wait: Duration::from_secs(1800),
        };
        Some(world.engine.remove_orphans(&found.orphans, &opts).await)
    } else {
        None
    };
    world.shutdown().await;
    match output {
        Output::Json => {
            let mut v = serde_json::to_value(&found).map_err(|e| e.to_string())?;
            if let Some(r) = &removal {
                v["removal"] = serde_json::to_value(r).map_err(|e| e.to_string())?;
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
            );
        }
        Output::Text => print_sweep(&found, removal.as_ref(), older_than, delete),
    }
    let incomplete =
        !found.errors.is_empty() || removal.as_ref().is_some_and(|r| !r.not_removed.is_empty());
    Ok(if incomplete {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_sweep(
    found: &OrphanReport,
    removal: Option<&Removal>,
    older_than: Duration,
    delete: bool,
) {
    let groups = if found.resource_groups.is_empty() {
        "no resource group".to_string()
    } else {
        found.resource_groups.join(", ")
    };
    println!(
        "listed: resource groups {groups}, the Key Vault, the staging container; orphans at least {} old",
        flotilla_core::orphans::format_age(older_than)
    );
    for e in &found.errors {
        println!("  could not list {e}");
    }
    if found.orphans.is_empty() {
        println!("no orphans");
    } else {
        println!("{:<6} {:<15} {:>7}  ID / WHY", "KIND", "JOB", "AGE");
        for o in &found.orphans {
            println!(
                "{:<6} {:<15} {:>7}  {}",
                o.kind,
                o.job.as_deref().unwrap_or("-"),
                o.age.as_deref().unwrap_or("?"),
                o.id
            );
            println!("{:<32}{}", "", o.why);
        }
    }
    if found.younger > 0 {
        println!("{} younger orphan(s) not listed", found.younger);
    }
    match removal {
        Some(r) => {
            for id in &r.removed {
                println!("removed      {id}");
            }
            for s in &r.soft_deleted {
                println!("soft-deleted {} ({})", s.id, recoverable_until(s.until));
            }
            for n in &r.not_removed {
                println!("NOT removed  {}: {}", n.id, n.why);
            }
        }
        None if !delete && !found.orphans.is_empty() => {
            println!(
                "{} orphan(s); `flotilla sweep --delete` removes them",
                found.orphans.len()
            )
        }
        None => {}
    }
}

/// How `status` and `sweep` say until when a deleted secret is kept.
fn recoverable_until(until: Option<time::OffsetDateTime>) -> String {
    match until.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    }) {
        Some(t) => format!("kept by the vault's purge protection, recoverable until {t}"),
        None => "kept by the vault's purge protection until its scheduled purge".into(),
    }
}

fn print_op(op: &flotilla_core::plan::PlannedOp, indent: &str) {
    let api = op
        .api_version
        .as_deref()
        .map(|v| format!(" (api {v})"))
        .unwrap_or_default();
    let undo = op
        .undo
        .as_ref()
        .map(|u| format!("  undo: {}", u.method))
        .unwrap_or_default();
    println!("{indent}{:<6} {}{api}{undo}", op.method, op.target);
}

async fn existing_world(
    data_dir: Option<PathBuf>,
    lro_seconds: f64,
) -> Result<LocalWorld, Failure> {
    let lro = lro(lro_seconds).map_err(Failure::Usage)?;
    let dir = data_dir.unwrap_or_else(local::default_data_dir);
    require_store(&dir)?;
    LocalWorld::start(LocalOptions::on_disk(dir, lro, false)).await
}

/// `--quota NAME=N` values as the simulator's quota limits.
fn parse_quotas(quotas: &[String]) -> Result<std::collections::BTreeMap<String, u64>, Failure> {
    let mut limits = std::collections::BTreeMap::new();
    for q in quotas {
        let parsed = q
            .split_once('=')
            .and_then(|(n, v)| Some((n.trim(), v.trim().parse::<u64>().ok()?)))
            .filter(|(n, _)| !n.is_empty());
        let Some((name, limit)) = parsed else {
            return Err(Failure::Usage(format!(
                "--quota '{q}': expected NAME=N, e.g. standardDSv5Family=20"
            )));
        };
        limits.insert(name.to_string(), limit);
    }
    Ok(limits)
}

/// A job pre-flight refused at the edge: every problem, exit 2, nothing created.
fn refused(
    verdict: &flotilla_core::preflight::Preflight,
    output: Output,
) -> Result<ExitCode, Failure> {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "status": "Rejected",
                "problems": verdict.problems,
                "warnings": verdict.warnings,
            }))
            .map_err(|e| e.to_string())?
        ),
        Output::Text => {
            eprintln!(
                "error: pre-flight refused the job ({} problem(s)); nothing was created:",
                verdict.problems.len()
            );
            for x in &verdict.problems {
                eprintln!("  {}: {}: {}", x.field, x.code, x.message);
            }
            for x in &verdict.warnings {
                eprintln!("  warning: {}: {}: {}", x.field, x.code, x.message);
            }
        }
    }
    Ok(ExitCode::from(2))
}

fn command_failure(e: CommandError) -> Failure {
    match e {
        CommandError::Invalid(m) => Failure::Usage(m),
        other => Failure::Runtime(other.to_string()),
    }
}

/// A job's saga from the read-only store; a job the store does not know is
/// an error (exit 1).
async fn read_saga(store: &Embedded, dir: &std::path::Path, job: &str) -> Result<Saga, Failure> {
    let doc = store.store().get(job).await.map_err(|e| e.to_string())?;
    let Some(doc) = doc else {
        return Err(Failure::Runtime(format!(
            "job {job} not found in {}",
            dir.display()
        )));
    };
    Ok(serde_json::from_value(doc.doc).map_err(|e| format!("stored saga is unreadable: {e}"))?)
}

/// `status --watch`: the timeline, redrawn until the job ends; then 0, as
/// `status` (a job not found is 1).
async fn status_watch(dir: &std::path::Path, job: &str) -> Result<ExitCode, Failure> {
    use std::io::IsTerminal;
    let store = open_store(dir)?;
    let stdout = std::io::stdout();
    let mut watcher = crate::watch::Watcher::new(stdout.is_terminal());
    loop {
        let saga = read_saga(&store, dir, job).await?;
        let now = time::OffsetDateTime::now_utc();
        let rows = crate::watch::rows(&saga, now);
        watcher
            .show(&mut stdout.lock(), &rows, now)
            .map_err(|e| format!("stdout: {e}"))?;
        if saga.is_settled() {
            println!("{}", crate::watch::outcome(&saga));
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `status --web`: the progress pages of the data dir's jobs on 127.0.0.1
/// (read-only, beside whatever process owns the dir) until Ctrl-C.
async fn status_web(dir: &std::path::Path, job: &str, port: u16) -> Result<ExitCode, Failure> {
    read_saga(&open_store(dir)?, dir, job).await?;
    let world = LocalWorld::start(local::LocalOptions::viewer(dir.to_path_buf())).await?;
    let pages = PageServer::start(world.engine.clone(), port).await?;
    println!("{}", pages.job_url(job));
    eprintln!(
        "serving the progress pages of {} (all jobs: {}/api/view); Ctrl-C to stop",
        dir.display(),
        pages.base
    );
    crate::signals::stop_requested().await;
    pages.stop().await;
    world.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// The store of a data dir, read-only and without its lock: safe while a
/// running `up`, `resume` or `serve` writes to it (SQLite WAL readers see the
/// last committed state and never block the writer).
fn open_store(dir: &std::path::Path) -> Result<Embedded, Failure> {
    require_store(dir)?;
    Embedded::open_read_only(&dir.join("flotilla.db"))
        .map_err(|e| Failure::Runtime(format!("store: {e}")))
}

/// Refuses a dir without flotilla's store; a dir whose owner has not created
/// its store yet is reported as in use, not as empty.
fn require_store(dir: &std::path::Path) -> Result<(), Failure> {
    if dir.join("flotilla.db").exists() {
        Ok(())
    } else if let Some(in_use) = DataDirLock::in_use(dir) {
        Err(Failure::Runtime(in_use.to_string()))
    } else {
        Err(Failure::Runtime(format!(
            "no flotilla data in {} (run `flotilla up` first, or pass --data-dir)",
            dir.display()
        )))
    }
}

async fn list_sagas(world: &LocalWorld) -> Result<Vec<Saga>, Failure> {
    Ok(world
        .engine
        .store
        .list()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|d| serde_json::from_value(d.doc).ok())
        .collect())
}

/// Waits, showing progress, until every job is settled.
async fn run_until_settled(
    world: &LocalWorld,
    jobs: &[String],
    output: Output,
) -> Result<Vec<Saga>, Failure> {
    run_until(world, jobs, output, Saga::is_settled).await
}

/// Waits, showing progress, until `done` holds for every job.
async fn run_until(
    world: &LocalWorld,
    jobs: &[String],
    output: Output,
    done: impl Fn(&Saga) -> bool,
) -> Result<Vec<Saga>, Failure> {
    let mut progress = Progress::new(output == Output::Text);
    let started = Instant::now();
    loop {
        let mut sagas = Vec::with_capacity(jobs.len());
        for job in jobs {
            match world.engine.status(job).await.map_err(|e| e.to_string())? {
                Some(s) => sagas.push(s),
                None => return Err(Failure::Runtime(format!("job {job} not found"))),
            }
        }
        for s in &sagas {
            progress.update(s);
        }
        if sagas.iter().all(&done) {
            progress.finish();
            return Ok(sagas);
        }
        if started.elapsed() > Duration::from_secs(3600) {
            return Err(Failure::Runtime(
                "jobs did not finish within an hour".into(),
            ));
        }
        // Short enough that a step's change shows within a few
        // milliseconds; one indexed read per job, so cheap for a handful of jobs.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn summary(world: &LocalWorld, s: &Saga) -> serde_json::Value {
    let resources = world.arm_resources(&s.id);
    // After compensation or deletion: anything still tagged with the job,
    // ARM resources and also Key Vault secrets and staged blobs.
    let leftovers = if s.status == JobStatus::Succeeded {
        vec![]
    } else {
        world.all_resources(&s.id)
    };
    json!({
        "job": s.id,
        "status": s.status,
        "steps": s.steps.iter().map(|st| json!({"name": st.name, "status": st.status, "attempts": st.attempts})).collect::<Vec<_>>(),
        "resources": resources,
        "leftovers": leftovers,
        "softDeleted": s.soft_deleted,
        "error": s.error,
        "deadLetters": s.dead_letters,
        "outputs": s.outputs_id(),
        "stalled": stalled(s),
        "preflight": s.preflight,
    })
}

/// The class the engine gave a failure, as `status` prints it.
fn class(e: &flotilla_core::saga::ErrorInfo) -> &'static str {
    if e.retryable {
        "retryable"
    } else {
        "terminal"
    }
}

/// Why the job makes no progress, when it has made none for too long.
fn stalled(s: &Saga) -> Option<String> {
    let opts = SweepOptions::from_settings(SweepOptions::default()).unwrap_or_default();
    stalled_reason(s, time::OffsetDateTime::now_utc(), opts.stall_after)
}

async fn finish(
    world: LocalWorld,
    sagas: Vec<Saga>,
    output: Output,
    ok: impl Fn(&Saga) -> bool,
) -> Result<ExitCode, Failure> {
    let summaries: Vec<_> = sagas.iter().map(|s| summary(&world, s)).collect();
    world.shutdown().await;
    match output {
        Output::Json => {
            let out = if summaries.len() == 1 {
                summaries[0].clone()
            } else {
                json!(summaries)
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
            );
        }
        Output::Text => {
            for (s, sum) in sagas.iter().zip(&summaries) {
                print_status(s);
                let res = sum["resources"].as_array().map(|a| a.len()).unwrap_or(0);
                println!("  resources tagged with this job: {res}");
            }
        }
    }
    Ok(if sagas.iter().all(ok) {
        ExitCode::SUCCESS
    } else if sagas.iter().any(|s| s.status == JobStatus::Rejected) {
        // Refused by pre-flight: bad input, as an invalid spec is.
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    })
}

fn print_status(s: &Saga) {
    println!("job {}  {:?}", s.id, s.status);
    for st in &s.steps {
        let err = st
            .last_error
            .as_ref()
            .map(|e| format!("  {}: {} ({})", e.code, e.message, class(e)))
            .unwrap_or_default();
        println!(
            "  {:<8} {:<12} attempts {}{}",
            st.name.as_str(),
            format!("{:?}", st.status),
            st.attempts,
            err
        );
    }
    if let Some(e) = &s.error {
        println!("  error: {}: {} ({})", e.code, e.message, class(e));
    }
    if let Some(id) = s.outputs_id() {
        println!("  outputs: {id}");
    }
    for d in &s.dead_letters {
        println!("  dead-lettered: {d}");
    }
    for l in &s.leftovers {
        println!("  left over (still tagged with the job): {l}");
    }
    for d in &s.soft_deleted {
        println!("  soft-deleted: {} ({})", d.id, recoverable_until(d.until));
    }
    if let Some(why) = stalled(s) {
        println!("  Stalled: {why}");
    }
    if let Some(p) = &s.preflight {
        print_preflight(p, "  ");
    }
}

/// Pre-flight's problems and warnings, one per line, each naming its field.
fn print_preflight(p: &flotilla_core::preflight::Preflight, indent: &str) {
    for x in &p.problems {
        println!(
            "{indent}pre-flight problem: {}: {}: {}",
            x.field, x.code, x.message
        );
    }
    for x in &p.warnings {
        println!(
            "{indent}pre-flight warning: {}: {}: {}",
            x.field, x.code, x.message
        );
    }
}
