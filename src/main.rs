//! `furrow`: the one binary of the Furrow render farm. This file is the command line only;
//! the work lives in the `furrow-master`, `furrow-agent` and `furrow-protocol` crates.

mod access;
mod apps;
mod bench;
mod bench_agents;
mod bench_api;
mod bench_dispatch;
mod bench_e2e;
mod bench_soak;
mod catalog;
mod commands;
mod control;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use furrow_protocol::{DEFAULT_HTTP, DEFAULT_LISTEN, DEFAULT_MAX_FRAME};

/// Furrow: a distributed job system and render farm.
#[derive(Debug, Parser)]
#[command(name = "furrow", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a whole farm on this machine: the master and local agents, restarted if they die.
    Up(UpArgs),
    /// Run the master: store, scheduler, REST API and dashboard.
    Master(MasterArgs),
    /// Run an agent that takes tasks from a master.
    Agent(AgentArgs),
    /// Submit a job; prints its id.
    Submit(Box<commands::SubmitArgs>),
    /// List jobs.
    Jobs(commands::ListArgs),
    /// Show one job and its tasks.
    Job(commands::JobArgs),
    /// List agents.
    Agents(commands::ListArgs),
    /// Print the log of a job's frame.
    Logs(commands::LogsArgs),
    /// Hold a job's waiting tasks back (running ones finish, or with --kill are requeued).
    Pause(control::ActionArgs),
    /// Release paused jobs.
    Resume(control::ActionArgs),
    /// Kill a job's running tasks and end it cancelled (or one task with --task).
    Cancel(control::ActionArgs),
    /// Run a job again: all tasks, the failed ones (--failed), or one (--task).
    Rerun(control::ActionArgs),
    /// Delete jobs with their tasks and logs.
    Delete(control::ActionArgs),
    /// Change a job's priority, weight, queue, agents, requirements, frames or notes.
    Edit(control::EditArgs),
    /// List, add, change and remove queues.
    Queue(control::QueueArgs),
    /// Enable or disable an agent, or set its tags.
    AgentCtl(control::AgentCtlArgs),
    /// List the files a job produced.
    Outputs(catalog::OutputsArgs),
    /// Add, list and show job types.
    Jobtype(catalog::JobTypeArgs),
    /// List, add and remove path maps between Linux, Windows and macOS prefixes.
    Pathmap(catalog::PathMapArgs),
    /// List, add and remove users; change roles and passwords.
    User(access::UserArgs),
    /// Make, list and revoke API tokens, agent join tokens and login links.
    Token(access::TokenArgs),
    /// Show who did what, when and from where (admins).
    Audit(commands::ListArgs),
    /// Show the user and role your token stands for.
    Whoami(access::WhoAmIArgs),
    /// Show whether the master is healthy, and what is wrong when it is not (exits 1).
    Health(commands::HealthArgs),
    /// Create, deploy, configure, roll back and follow deployed web apps.
    App(apps::AppArgs),
    /// Measure a local farm (submission latency, task throughput).
    Bench(bench::BenchArgs),
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Directory for the database, logs and agent state.
    #[arg(long, default_value = "furrow-data")]
    data_dir: PathBuf,
    /// Address of the REST API and dashboard.
    #[arg(long, default_value = DEFAULT_HTTP)]
    http: String,
    /// Address agents and tools connect to.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: String,
    /// Number of local agents.
    #[arg(long, default_value_t = 1)]
    agents: u32,
    /// Task slots per local agent (default: the cpu count divided among the agents).
    #[arg(long)]
    slots: Option<u32>,
    /// Database URL (default: SQLite in the data directory).
    #[arg(long, env = "FURROW_DATABASE_URL")]
    database_url: Option<String>,
    /// Seconds without a heartbeat after which an agent is lost.
    #[arg(long, default_value_t = 15.0)]
    heartbeat_timeout: f64,
    /// Seconds after which a lost agent unseen since is forgotten: it leaves the agent
    /// list and the dashboard, its history stays (0: never; agents given settings
    /// through the API are kept until removed).
    #[arg(long, default_value_t = furrow_master::DEFAULT_FORGET_AGENTS_AFTER.as_secs_f64())]
    forget_agents_after: f64,
    /// Directory of declarative job-type files (`*.toml`) the local agents run.
    #[arg(long)]
    jobtypes_dir: Option<PathBuf>,
    /// A host name the dashboard and REST API are reached by (repeatable); IP addresses
    /// and `localhost` always work.
    #[arg(long = "http-name", value_name = "NAME")]
    http_names: Vec<String>,
    /// A web server each local agent runs to serve deployed apps (nginx, apache,
    /// lighttpd), with --webserver-port.
    #[arg(long, value_name = "KIND", requires = "webserver_port")]
    webserver: Option<furrow_agent::WebServerKind>,
    /// Port of the first local agent's web server; agent i listens on PORT+i-1.
    #[arg(long, value_name = "PORT", requires = "webserver")]
    webserver_port: Option<u16>,
    /// Ports for the local agents' app instances, split evenly among the agents.
    #[arg(long, value_name = "FIRST-LAST", default_value = "20000-20999", value_parser = furrow_agent::parse_port_range)]
    app_ports: std::ops::RangeInclusive<u16>,
    #[command(flatten)]
    tls: ServeTls,
}

/// TLS served by a master.
#[derive(Debug, Args)]
struct ServeTls {
    /// Certificate chain (PEM) to serve TLS with, on both ports (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl ServeTls {
    /// The certificate and key, when both are given.
    fn files(&self) -> Option<(PathBuf, PathBuf)> {
        self.tls_cert.clone().zip(self.tls_key.clone())
    }
}

#[derive(Debug, Args)]
struct MasterArgs {
    /// Directory for the database and logs.
    #[arg(long, default_value = "furrow-data")]
    data_dir: PathBuf,
    /// Address agents and tools connect to.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: String,
    /// Address of the REST API and dashboard.
    #[arg(long, default_value = DEFAULT_HTTP)]
    http: String,
    /// Database URL: `postgres://user:pass@host/db` (default: SQLite in the data directory).
    #[arg(long, env = "FURROW_DATABASE_URL")]
    database_url: Option<String>,
    /// A host name the dashboard and REST API are reached by (repeatable); IP addresses
    /// and `localhost` always work, other names are refused (DNS rebinding).
    #[arg(long = "http-name", value_name = "NAME")]
    http_names: Vec<String>,
    #[command(flatten)]
    tls: ServeTls,
    /// Seconds between agent heartbeats.
    #[arg(long, default_value_t = 2.0)]
    heartbeat_interval: f64,
    /// Seconds without a heartbeat after which an agent is lost.
    #[arg(long, default_value_t = 15.0)]
    heartbeat_timeout: f64,
    /// Seconds after which a lost agent unseen since is forgotten: it leaves the agent
    /// list and the dashboard, its history stays (0: never; agents given settings
    /// through the API are kept until removed).
    #[arg(long, default_value_t = furrow_master::DEFAULT_FORGET_AGENTS_AFTER.as_secs_f64())]
    forget_agents_after: f64,
    /// Largest protocol frame accepted or sent, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_FRAME)]
    max_frame: usize,
}

#[derive(Debug, Args)]
struct AgentArgs {
    /// Address of the master's TCP port.
    #[arg(long, env = "FURROW_SERVER", default_value = DEFAULT_LISTEN)]
    master: String,
    /// Tasks run at once (default: the cpu count).
    #[arg(long)]
    slots: Option<u32>,
    /// Tags, comma-separated.
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
    /// GPU device indices to offer, comma-separated (default: detected with nvidia-smi).
    #[arg(long, value_parser = parse_gpu_list)]
    gpus: Option<GpuList>,
    /// Software offered, `blender 4.2.1, ffmpeg 5.1` (versions matched by job requirements).
    #[arg(long, value_parser = furrow_agent::parse_software, default_value = "")]
    software: std::collections::BTreeMap<String, String>,
    /// Display name (default: the hostname).
    #[arg(long)]
    name: Option<String>,
    /// Directory for the agent id, task working directories and crash-recovery state.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// File with `name = ...`, `tags = a, b`, `software = blender 4.2` and `gpus = 0, 1`
    /// lines, overriding the flags; re-read on SIGHUP.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Largest protocol frame accepted or sent, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_FRAME)]
    max_frame: usize,
    /// Directory of declarative job-type files (`*.toml`) this agent runs; watched, and
    /// published to the master.
    #[arg(long)]
    jobtypes_dir: Option<PathBuf>,
    /// Do not look for Blender and ffmpeg to offer them as software.
    #[arg(long)]
    no_detect_software: bool,
    /// File holding the farm's join token (`furrow token create --agent`; a local farm's
    /// is `<data-dir>/join.token`). Needed until the agent holds its own credential.
    #[arg(long, value_name = "FILE")]
    join_token_file: Option<PathBuf>,
    /// The farm's join token itself (prefer --join-token-file: this shows in `ps`).
    #[arg(long, env = "FURROW_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    #[command(flatten)]
    tls: commands::TlsArgs,
    #[command(flatten)]
    webserver: WebServerArgs,
}

/// The web server an agent serves deployed apps on.
#[derive(Debug, Args)]
struct WebServerArgs {
    /// Serve deployed apps on this web server: nginx, apache or lighttpd (none: the agent
    /// takes no apps).
    #[arg(long, value_name = "KIND", requires = "webserver_port")]
    webserver: Option<furrow_agent::WebServerKind>,
    /// Port the web server serves the apps on.
    #[arg(long, value_name = "PORT", requires = "webserver")]
    webserver_port: Option<u16>,
    /// Address the web server serves the apps on.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    webserver_address: std::net::IpAddr,
    /// `managed`: the agent runs its own server from its state directory; `system`: the
    /// host's server includes --webserver-include.
    #[arg(long, value_name = "MODE", default_value = "managed", value_parser = ["managed", "system"])]
    webserver_mode: String,
    /// System mode: the directory the host's server includes (see deploy/WEBSERVERS.md).
    #[arg(long, value_name = "DIR")]
    webserver_include: Option<PathBuf>,
    /// System mode: the command reloading the server, words separated by spaces
    /// (default: `nginx -s reload`, `apachectl graceful`, `systemctl reload lighttpd`).
    #[arg(long, value_name = "COMMAND")]
    webserver_reload_command: Option<String>,
    /// System mode: the command testing the configuration (default: `nginx -t`,
    /// `apachectl -t`, `lighttpd -tt -f /etc/lighttpd/lighttpd.conf`).
    #[arg(long, value_name = "COMMAND")]
    webserver_check_command: Option<String>,
    /// TCP ports (on 127.0.0.1) for the apps' instances.
    #[arg(long, value_name = "FIRST-LAST", default_value = "20000-20999", value_parser = furrow_agent::parse_port_range)]
    app_ports: std::ops::RangeInclusive<u16>,
}

impl WebServerArgs {
    /// The agent's web server settings, or none without --webserver.
    fn config(&self) -> Result<Option<furrow_agent::WebServerConfig>> {
        let (Some(kind), Some(port)) = (self.webserver, self.webserver_port) else {
            return Ok(None);
        };
        let words = |command: &Option<String>| {
            command
                .as_ref()
                .map(|text| text.split_whitespace().map(str::to_string).collect())
        };
        let mode = if self.webserver_mode == "system" {
            let Some(include_dir) = self.webserver_include.clone() else {
                anyhow::bail!(
                    "--webserver-mode system needs --webserver-include DIR, the directory the host's server includes"
                );
            };
            furrow_agent::WebServerMode::System {
                include_dir,
                reload_command: words(&self.webserver_reload_command),
                check_command: words(&self.webserver_check_command),
            }
        } else {
            furrow_agent::WebServerMode::Managed
        };
        Ok(Some(furrow_agent::WebServerConfig {
            kind,
            address: std::net::SocketAddr::new(self.webserver_address, port),
            mode,
            app_ports: self.app_ports.clone(),
        }))
    }
}

/// The join token of `furrow agent`: from its file, or given.
fn join_token(args: &AgentArgs) -> Result<Option<String>> {
    if let Some(path) = &args.join_token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--join-token-file {}: {e}", path.display()))?;
        let token = text.lines().next().unwrap_or("").trim().to_string();
        if token.is_empty() {
            anyhow::bail!("--join-token-file {}: the file is empty", path.display());
        }
        return Ok(Some(token));
    }
    Ok(args
        .join_token
        .as_ref()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

/// GPU indices from the command line (one value, comma-separated).
#[derive(Debug, Clone)]
struct GpuList(Vec<u32>);

fn parse_gpu_list(text: &str) -> Result<GpuList, furrow_agent::ListError> {
    furrow_agent::parse_gpus(text).map(GpuList)
}

fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colour only for a terminal: `furrow up` writes its children's logs to files.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Logging for a long-running process (master, agent, `up`), and a panic ends it.
///
/// actix catches a panic in an actor's handler and drops the actor: every message to it
/// would then be lost while the process looked alive. Recovery from a crash is already
/// safe (the store commits before acknowledging; agents spool their results and kill
/// what their predecessor left), so a panic is logged and the process aborts, and
/// `furrow up` or the service manager starts it again from its stored state.
fn init_server(default_level: &str) {
    init_tracing(default_level);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            panic = %info,
            "a thread panicked; aborting so the process is restarted from its stored state"
        );
        std::process::abort();
    }));
}

/// The listening sockets `furrow up` hands its master (see [`up::LISTEN_FD_ENV`]).
fn inherited_listeners() -> Result<Option<furrow_master::InheritedListeners>> {
    let fd = |name: &str| -> Result<Option<i32>> {
        match std::env::var(name) {
            Ok(value) => value.parse().map(Some).map_err(|_| {
                anyhow::anyhow!("{name} must be a file descriptor number, got {value:?}")
            }),
            Err(_) => Ok(None),
        }
    };
    match (fd(up::LISTEN_FD_ENV)?, fd(up::HTTP_FD_ENV)?) {
        (Some(listen_fd), Some(http_fd)) => Ok(Some(furrow_master::InheritedListeners {
            listen_fd,
            http_fd,
        })),
        (None, None) => Ok(None),
        _ => anyhow::bail!("{} and {} go together", up::LISTEN_FD_ENV, up::HTTP_FD_ENV),
    }
}

fn seconds(value: f64, flag: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| anyhow::anyhow!("{flag} must be a positive number of seconds, got {value}"))
}

/// Default agent state directory: `$XDG_STATE_HOME/furrow/agent`, `~/.local/state/furrow/agent`,
/// or `/var/lib/furrow/agent` without a home.
fn default_agent_state_dir() -> PathBuf {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(state).join("furrow/agent");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/furrow/agent"),
        None => PathBuf::from("/var/lib/furrow/agent"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain on one line, without a backtrace: these are user-facing.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Up(args) => {
            init_server("info");
            up::run(args)
        }
        Command::Master(args) => {
            init_server("info");
            let config = furrow_master::MasterConfig {
                data_dir: args.data_dir,
                listen: args.listen,
                http: args.http,
                database_url: args.database_url,
                heartbeat_interval: seconds(args.heartbeat_interval, "--heartbeat-interval")?,
                heartbeat_timeout: seconds(args.heartbeat_timeout, "--heartbeat-timeout")?,
                forget_agents_after: if args.forget_agents_after == 0.0 {
                    None
                } else {
                    Some(seconds(args.forget_agents_after, "--forget-agents-after")?)
                },
                max_frame: args.max_frame,
                http_names: args.http_names,
                tls: args.tls.files(),
                inherited: inherited_listeners()?,
            };
            furrow_master::run(config)?;
            Ok(())
        }
        Command::Agent(args) => {
            init_server("info");
            let join_token = join_token(&args)?;
            let config = furrow_agent::AgentConfig {
                master: args.master,
                name: args.name,
                slots: args.slots,
                tags: args.tags.into_iter().filter(|t| !t.is_empty()).collect(),
                state_dir: args.state_dir.unwrap_or_else(default_agent_state_dir),
                max_frame: args.max_frame,
                config_file: args.config,
                software: args.software,
                gpus: args.gpus.map(|list| list.0),
                jobtypes_dir: args.jobtypes_dir,
                detect_software: !args.no_detect_software,
                join_token,
                tls: args.tls.verify()?,
                webserver: args.webserver.config()?,
            };
            furrow_agent::run(config)?;
            Ok(())
        }
        Command::Submit(args) => client_command(commands::submit(*args)),
        Command::Jobs(args) => client_command(commands::jobs(args)),
        Command::Job(args) => client_command(commands::job(args)),
        Command::Agents(args) => client_command(commands::agents(args)),
        Command::Logs(args) => client_command(commands::logs(args)),
        Command::Pause(args) => client_command(control::action(control::Verb::Pause, args)),
        Command::Resume(args) => client_command(control::action(control::Verb::Resume, args)),
        Command::Cancel(args) => client_command(control::action(control::Verb::Cancel, args)),
        Command::Rerun(args) => client_command(control::action(control::Verb::Rerun, args)),
        Command::Delete(args) => client_command(control::action(control::Verb::Delete, args)),
        Command::Edit(args) => client_command(control::edit(args)),
        Command::Queue(args) => client_command(control::queue(args)),
        Command::AgentCtl(args) => client_command(control::agent_ctl(args)),
        Command::Outputs(args) => client_command(catalog::outputs(args)),
        Command::Jobtype(args) => client_command(catalog::jobtype(args)),
        Command::Pathmap(args) => client_command(catalog::pathmap(args)),
        Command::User(args) => client_command(access::user(args)),
        Command::Token(args) => client_command(access::token(args)),
        Command::Audit(args) => client_command(access::audit(args)),
        Command::Whoami(args) => client_command(access::whoami(args)),
        Command::Health(args) => client_command(commands::health(args)),
        Command::App(args) => client_command(apps::app(args)),
        Command::Bench(args) => {
            init_tracing("warn");
            bench::run(args)
        }
    }
}

/// Runs a client command on a small runtime; its exit code is the command's.
fn client_command(command: impl Future<Output = Result<i32>>) -> Result<()> {
    // Output piped into `head` ends with the pipe: exit quietly, as Unix tools do, rather
    // than fail in `println!`. (The master and agents keep ignoring SIGPIPE: a closed
    // socket is an error they handle.)
    // SAFETY: changes a signal's disposition; no other thread exists yet.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    init_tracing("warn");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let code = runtime.block_on(command)?;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
