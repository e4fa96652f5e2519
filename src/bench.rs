//! `furrow bench farm`: measures a real farm on this machine. It starts `furrow up` in a
//! temporary data directory, then times
//! - the submission of a large job (committed before the reply),
//! - end-to-end throughput: a job of short tasks from submission until every task is done,
//!   through the real master, agents and processes.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use furrow_protocol::{Client, CommandParams, JobSubmission, Json, WorkState};

/// `furrow bench ...`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchTarget,
}

#[derive(Debug, Subcommand)]
enum BenchTarget {
    /// Submission latency and task throughput of a local farm.
    Farm(FarmArgs),
    /// Scheduler and store throughput with simulated agents on a real master.
    Dispatch(crate::bench_dispatch::DispatchArgs),
    /// One master and many agents: its CPU and memory at idle, its dispatch rate.
    Agents(crate::bench_agents::AgentsArgs),
    /// Furrow's rate of trivial tasks against the machine's own rate of spawning them,
    /// and the gap between tasks on a slot.
    E2e(crate::bench_e2e::E2eArgs),
    /// Jobs submitted while agents are killed, frozen and cut off and the master is
    /// restarted, at random; then every acknowledged job is checked (needs root).
    Soak(crate::bench_soak::SoakArgs),
    /// Reads of the REST API, the CLI and the dashboard on a store of many jobs and one
    /// big job; the master's memory and restart time with the big job queued.
    Api(crate::bench_api::ApiArgs),
}

#[derive(Debug, Args)]
struct FarmArgs {
    /// Tasks of the throughput job (each runs `true`).
    #[arg(long, default_value_t = 2_000)]
    tasks: u64,
    /// Tasks of the large submission (stored and queued, never run).
    #[arg(long, default_value_t = 100_000)]
    submit: u64,
    /// Local agents.
    #[arg(long, default_value_t = 2)]
    agents: u32,
    /// Slots per agent.
    #[arg(long, default_value_t = 4)]
    slots: u32,
    /// Database URL (default: SQLite in the temporary data directory).
    #[arg(long)]
    database_url: Option<String>,
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.what {
        BenchTarget::Farm(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(farm(args))
        }
        BenchTarget::Dispatch(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::bench_dispatch::run(args))
        }
        BenchTarget::Agents(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::bench_agents::run(args))
        }
        BenchTarget::E2e(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::bench_e2e::run(args))
        }
        BenchTarget::Soak(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::bench_soak::run(args))
        }
        BenchTarget::Api(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::bench_api::run(args))
        }
    }
}

/// A `furrow up` child that is stopped when dropped.
pub(crate) struct LocalFarm {
    child: Child,
    data_dir: PathBuf,
}

impl Drop for LocalFarm {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

impl LocalFarm {
    /// Starts `furrow up` with `agents` local agents of `slots` slots in a temporary data
    /// directory, and connects to it once every agent is listed.
    pub(crate) async fn start(
        agents: u32,
        slots: u32,
        database_url: Option<&str>,
    ) -> Result<(Self, Client)> {
        let data_dir = std::env::temp_dir().join(format!("furrow-bench-{}", std::process::id()));
        std::fs::create_dir_all(&data_dir)?;
        let log = std::fs::File::create(data_dir.join("up.log"))?;
        let mut command = Command::new(std::env::current_exe()?);
        // `furrow up` binds free ports itself; the master names them in `master.addr`.
        command
            .args(["up", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data_dir)
            .args([
                "--agents",
                &agents.to_string(),
                "--slots",
                &slots.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(url) = database_url {
            command.env("FURROW_DATABASE_URL", url);
        }
        let farm = LocalFarm {
            child: command.spawn().context("cannot start furrow up")?,
            data_dir,
        };

        let start = Instant::now();
        let addr_file = farm.data_dir.join(furrow_master::ADDR_FILE);
        let client = loop {
            let listen = std::fs::read_to_string(&addr_file)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|addrs| addrs["listen"].as_str().map(str::to_string));
            if let Some(listen) = listen
                && let Ok(client) = connect_local(&listen, &farm.data_dir).await
                && let Ok(listed) = client.list_agents(1000, 0).await
                && listed.items.len() as u32 >= agents
            {
                break client;
            }
            if start.elapsed() > Duration::from_secs(120) {
                // The data directory goes with the farm: say here why it failed.
                let last_error = |name: &str| {
                    std::fs::read_to_string(farm.data_dir.join("run").join(name))
                        .unwrap_or_default()
                        .lines()
                        .rev()
                        .find(|line| line.starts_with("error:"))
                        .map(str::to_string)
                };
                if let Some(error) = last_error("master.log") {
                    bail!("the farm did not come up: the master says \"{error}\"");
                }
                if let Some(error) = last_error("agent-1.log") {
                    let hint = if error.contains(furrow_master::JOIN_TOKEN_FILE) {
                        " (the master writes a join token only into a new store: give the \
                         bench an empty database)"
                    } else {
                        ""
                    };
                    bail!("the farm did not come up: its agent says \"{error}\"{hint}");
                }
                bail!("the farm did not come up within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok((farm, client))
    }
}

pub(crate) fn job(title: &str, frames: String, priority: i32) -> Result<JobSubmission> {
    let params = CommandParams {
        command: vec!["true".into()],
        shell: false,
        env: Default::default(),
        app: None,
    };
    Ok(JobSubmission {
        priority,
        ..JobSubmission::new(title, Json(serde_json::to_value(params)?), frames)
    })
}

async fn farm(args: FarmArgs) -> Result<()> {
    if args.tasks == 0 || args.agents == 0 || args.slots == 0 {
        bail!("--tasks, --agents and --slots must be at least 1");
    }
    let (farm, client) =
        LocalFarm::start(args.agents, args.slots, args.database_url.as_deref()).await?;
    let health = client.health().await?;
    println!(
        "farm: {} agents x {} slots, {} database, {} cpus",
        args.agents,
        args.slots,
        health.database,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    // Throughput first, on an empty queue.
    let submitted = Instant::now();
    let view = client
        .submit_job(job("bench throughput", format!("1-{}", args.tasks), 10)?)
        .await?;
    let ack = submitted.elapsed();
    let done = loop {
        let current = client.get_job(view.id).await?;
        if current.state.is_finished() {
            if current.state != WorkState::Done {
                bail!("the throughput job ended {}", current.state.as_str());
            }
            break submitted.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "throughput: {} tasks of `true` in {:.2} s = {:.0} tasks/s end to end (submit ack {:.1} ms)",
        args.tasks,
        done.as_secs_f64(),
        args.tasks as f64 / done.as_secs_f64(),
        ack.as_secs_f64() * 1000.0
    );

    if args.submit > 0 {
        let submitted = Instant::now();
        // Lowest priority behind nothing: it starts running, which the farm's stop ends.
        client
            .submit_job(job(
                "bench submission",
                format!("1-{}", args.submit),
                -1000,
            )?)
            .await?;
        let took = submitted.elapsed();
        println!(
            "submission: {} tasks committed in {:.2} s = {:.0} tasks/s",
            args.submit,
            took.as_secs_f64(),
            args.submit as f64 / took.as_secs_f64()
        );
    }
    drop(farm);
    Ok(())
}

/// A token file of a local master's data directory.
pub(crate) fn read_token(data_dir: &std::path::Path, file: &str) -> Result<String> {
    let path = data_dir.join(file);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text.trim().to_string())
}

/// A client of a local master, with the admin token of its data directory.
pub(crate) async fn connect_local(listen: &str, data_dir: &std::path::Path) -> Result<Client> {
    let token = read_token(data_dir, furrow_master::ADMIN_TOKEN_FILE)?;
    let options = furrow_protocol::ClientOptions {
        credentials: Some(token),
        ..furrow_protocol::ClientOptions::default()
    };
    Ok(Client::connect_with(listen, options).await?)
}
