//! Client commands: submit, jobs, job, agents, logs. They talk to the master through
//! `furrow_protocol::Client` and print for people (tables, a progress bar) or, with
//! `--json`, for programs.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use furrow_protocol::{
    Client, ClientError, ClientOptions, CommandParams, DEFAULT_LISTEN, JobId, JobSubmission,
    JobView, Json, Page, ProtocolError, Requirements, TaskQuery, TaskView, WorkState,
};

/// How often `--wait` and `--follow` ask the master for news.
const POLL_INTERVAL: Duration = Duration::from_millis(300);

/// The master to talk to, and the token to talk with.
#[derive(Debug, Clone, Args)]
pub struct ServerArg {
    /// Address of the master's TCP port.
    #[arg(long, env = "FURROW_SERVER", default_value = DEFAULT_LISTEN)]
    pub server: String,
    /// API token (default: FURROW_TOKEN, then ~/.config/furrow/token, then, for a master
    /// on this machine, ./furrow-data/admin.token).
    #[arg(long, env = "FURROW_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// How to check a master that serves TLS.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Connect with TLS, checking the master's certificate against this CA (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "FURROW_CA",
        conflicts_with = "fingerprint"
    )]
    pub ca: Option<PathBuf>,
    /// Connect with TLS, pinning the SHA-256 fingerprint of the master's certificate (the
    /// master logs it at start and writes it to <data-dir>/master.fingerprint).
    #[arg(long, value_name = "HEX", env = "FURROW_FINGERPRINT")]
    pub fingerprint: Option<String>,
}

impl TlsArgs {
    /// The check asked for, if any.
    pub fn verify(&self) -> Result<Option<furrow_protocol::tls::Verify>> {
        Ok(match (&self.ca, &self.fingerprint) {
            (Some(ca), _) => Some(furrow_protocol::tls::Verify::Ca(ca.clone())),
            (None, Some(print)) => {
                furrow_protocol::tls::parse_fingerprint(print)?;
                Some(furrow_protocol::tls::Verify::Fingerprint(print.clone()))
            }
            (None, None) => None,
        })
    }
}

/// Where a token was found, for error messages.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSource {
    /// `--token` or `FURROW_TOKEN`.
    Given,
    /// A file.
    File(PathBuf),
    /// Nowhere.
    None,
}

/// `$XDG_CONFIG_HOME/furrow/token` or `~/.config/furrow/token`.
pub fn user_token_file() -> Option<PathBuf> {
    if let Some(config) = std::env::var_os("XDG_CONFIG_HOME").filter(|s| !s.is_empty()) {
        return Some(PathBuf::from(config).join("furrow/token"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".config/furrow/token"))
}

/// Whether `server` names this machine.
fn is_local(server: &str) -> bool {
    let host = server.rsplit_once(':').map_or(server, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The first line of a token file.
fn read_token_file(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.lines().next().map(|l| l.trim().to_string()))
        .filter(|token| !token.is_empty())
}

impl ServerArg {
    /// The token to present: `--token`/`FURROW_TOKEN`, the user's token file, or a local
    /// farm's admin token (`./furrow-data/admin.token`, `furrow up`'s default place).
    pub fn token(&self) -> (Option<String>, TokenSource) {
        if let Some(token) = self.token.as_ref().filter(|t| !t.trim().is_empty()) {
            return (Some(token.trim().to_string()), TokenSource::Given);
        }
        if let Some(path) = user_token_file()
            && let Some(token) = read_token_file(&path)
        {
            return (Some(token), TokenSource::File(path));
        }
        if is_local(&self.server) {
            let path = PathBuf::from("furrow-data").join(furrow_master::ADMIN_TOKEN_FILE);
            if let Some(token) = read_token_file(&path) {
                return (Some(token), TokenSource::File(path));
            }
        }
        (None, TokenSource::None)
    }

    /// Connects to the master, saying how to start one when none answers.
    pub async fn connect(&self) -> Result<Client> {
        let (token, source) = self.token();
        let mut verify = self.tls.verify()?;
        if verify.is_none() && is_local(&self.server) {
            // A local farm started with TLS: its fingerprint is next to its admin token.
            let path = PathBuf::from("furrow-data").join(furrow_master::FINGERPRINT_FILE);
            verify = read_token_file(&path).map(furrow_protocol::tls::Verify::Fingerprint);
        }
        let tls = match &verify {
            Some(verify) => Some(furrow_protocol::tls::client_config(verify)?),
            None => None,
        };
        let options = ClientOptions {
            credentials: token,
            tls,
            ..ClientOptions::default()
        };
        Client::connect_with(&self.server, options)
            .await
            .map_err(|e| match e {
                ClientError::Connect { addr, source } => anyhow::anyhow!(
                    "cannot connect to the master at {addr}: {source}; is one running? \
                     start one with `furrow up`, or point --server / FURROW_SERVER at it"
                ),
                ClientError::Protocol(ProtocolError::BadMagic) => anyhow::anyhow!(
                    "{} does not speak the furrow protocol: point --server / FURROW_SERVER at the \
                     master's TCP port ({DEFAULT_LISTEN} by default), not at its HTTP port",
                    self.server
                ),
                ClientError::Protocol(ProtocolError::Rejected(reason)) => match source {
                    TokenSource::File(path) => anyhow::anyhow!(
                        "the master refused the token of {}: {reason}",
                        path.display()
                    ),
                    _ => anyhow::anyhow!("the master refused this connection: {reason}"),
                },
                other => other.into(),
            })
    }
}

/// `furrow submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Job type: `command` (the default: give the command after `--`), `blender`,
    /// `ffmpeg`, or a type added with `furrow jobtype add`.
    #[arg(value_name = "TYPE")]
    jobtype: Option<String>,
    /// Values of the type's required parameters not given by flags, in order
    /// (`furrow submit blender SCENE ...`).
    #[arg(value_name = "VALUE")]
    values: Vec<String>,
    /// Job title (default: the type and its first value).
    #[arg(long)]
    title: Option<String>,
    /// A parameter of the job type, `NAME=VALUE` (repeatable); the value is read as the
    /// parameter's type: numbers, `true`/`false`, comma-separated lists, `K=V,K=V` maps.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Version of the job type (default: its newest).
    #[arg(long)]
    jobtype_version: Option<u32>,
    #[command(flatten)]
    render: RenderArgs,
    /// Frames: `1-100`, `1-100:5` (every fifth), `1-10,20-30`.
    #[arg(long)]
    frames: String,
    /// Frames per task; a batch runs once with `{start}` and `{end}`.
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// Priority; higher runs first.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    priority: i32,
    /// Retries of a failed task before it counts as failed.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Time limit of one task attempt, in seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// Kill an attempt that prints nothing and reports no progress for this many seconds.
    #[arg(long)]
    stall_timeout: Option<u64>,
    /// Queue path, e.g. `studio/lighting` (default: the root queue).
    #[arg(long, default_value = "")]
    queue: String,
    /// Share within its queue relative to the other jobs there.
    #[arg(long, default_value_t = 1)]
    weight: u32,
    /// Agents the job gets before jobs without a minimum.
    #[arg(long, default_value_t = 0)]
    min_agents: u32,
    /// Most agents running its tasks at once.
    #[arg(long)]
    max_agents: Option<u32>,
    #[command(flatten)]
    requirements: RequirementArgs,
    /// A job that must be done first (repeatable).
    #[arg(long = "after", value_name = "JOB")]
    depends_on: Vec<JobId>,
    /// With --after: frame N waits only for frame N of those jobs.
    #[arg(long)]
    per_frame: bool,
    /// An agent failing this many of its tasks gets no more of them (0: never).
    #[arg(long, default_value_t = 3)]
    blocklist_after: u32,
    /// Free text shown with the job.
    #[arg(long, default_value = "")]
    notes: String,
    /// Submit on behalf of this user (admins only; default: the token's user).
    #[arg(long, default_value = "")]
    user: String,
    /// Run the command through `/bin/sh -c`.
    #[arg(long)]
    shell: bool,
    /// Extra environment variable for the tasks, `KEY=VALUE` (repeatable). Values of
    /// names that look secret (`*_PASSWORD`, `*_TOKEN`, `*_KEY`...) are kept secret.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// A secret environment variable, `KEY=VALUE` (repeatable): stored encrypted, never
    /// shown, given only to the agent that runs a task.
    #[arg(long = "secret-env", value_name = "KEY=VALUE")]
    secret_env: Vec<String>,
    /// Show progress until the job ends; exit non-zero if it failed.
    #[arg(long)]
    wait: bool,
    /// The command and its arguments; `{frame}`, `{start}`, `{end}`, `{step}` are substituted.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

/// Shorthands for the parameters of the `blender` and `ffmpeg` types: each sets the
/// parameter of the same name (`--samples 16` is `--param samples=16`).
#[derive(Debug, Clone, Default, Args)]
pub struct RenderArgs {
    /// Output: Blender's path with `#` for the frame number, or ffmpeg's movie file.
    #[arg(long)]
    output: Option<String>,
    /// Blender: render samples.
    #[arg(long)]
    samples: Option<u64>,
    /// Blender: CYCLES, BLENDER_EEVEE or BLENDER_WORKBENCH.
    #[arg(long)]
    engine: Option<String>,
    /// Blender: the camera object to render through.
    #[arg(long)]
    camera: Option<String>,
    /// Blender: the scene of the file to render.
    #[arg(long)]
    scene_name: Option<String>,
    /// Blender: PNG, OPEN_EXR, JPEG...
    #[arg(long)]
    format: Option<String>,
    /// Blender: CPU, CUDA, OPTIX or HIP.
    #[arg(long)]
    device: Option<String>,
    /// Blender: resolution percentage.
    #[arg(long)]
    resolution_percent: Option<u64>,
    /// ffmpeg: the image sequence, `/renders/shot_####.png`.
    #[arg(long)]
    input: Option<String>,
    /// ffmpeg: frames per second.
    #[arg(long)]
    fps: Option<f64>,
    /// ffmpeg: video codec, e.g. libx264.
    #[arg(long)]
    codec: Option<String>,
    /// ffmpeg: constant rate factor (quality).
    #[arg(long)]
    crf: Option<u64>,
    /// ffmpeg: an audio file to mux in.
    #[arg(long)]
    audio: Option<String>,
    /// ffmpeg: scale, `1280:-2`.
    #[arg(long)]
    scale: Option<String>,
}

impl RenderArgs {
    /// The parameters the flags set.
    fn params(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::json;
        let mut map = serde_json::Map::new();
        let mut put = |name: &str, value: Option<serde_json::Value>| {
            if let Some(value) = value {
                map.insert(name.to_string(), value);
            }
        };
        put("output", self.output.clone().map(|v| json!(v)));
        put("samples", self.samples.map(|v| json!(v)));
        put("engine", self.engine.clone().map(|v| json!(v)));
        put("camera", self.camera.clone().map(|v| json!(v)));
        put("scene_name", self.scene_name.clone().map(|v| json!(v)));
        put("format", self.format.clone().map(|v| json!(v)));
        put("device", self.device.clone().map(|v| json!(v)));
        put(
            "resolution_percent",
            self.resolution_percent.map(|v| json!(v)),
        );
        put("input", self.input.clone().map(|v| json!(v)));
        put("fps", self.fps.map(|v| json!(v)));
        put("codec", self.codec.clone().map(|v| json!(v)));
        put("crf", self.crf.map(|v| json!(v)));
        put("audio", self.audio.clone().map(|v| json!(v)));
        put("scale", self.scale.clone().map(|v| json!(v)));
        map
    }
}

/// A `--param` value read as the parameter's declared type.
fn typed_value(name: &str, ty: &str, text: &str) -> Result<serde_json::Value> {
    use serde_json::Value;
    let scalar =
        |ty: &str, text: &str| -> Result<Value> {
            Ok(match ty {
                "int" => Value::from(text.trim().parse::<i64>().map_err(|_| {
                    anyhow::anyhow!("--param {name}: {text:?} is not a whole number")
                })?),
                "float" => Value::from(
                    text.trim()
                        .parse::<f64>()
                        .map_err(|_| anyhow::anyhow!("--param {name}: {text:?} is not a number"))?,
                ),
                "bool" => Value::from(match text.trim() {
                    "true" | "yes" | "1" => true,
                    "false" | "no" | "0" => false,
                    _ => bail!("--param {name}: {text:?} is not true or false"),
                }),
                _ => Value::from(text),
            })
        };
    if let Some(item) = ty.strip_prefix("list<").and_then(|t| t.strip_suffix('>')) {
        if text.is_empty() {
            return Ok(Value::Array(Vec::new()));
        }
        return text
            .split(',')
            .map(|part| scalar(item, part))
            .collect::<Result<Vec<_>>>()
            .map(Value::Array);
    }
    if ty == "map" {
        let mut map = serde_json::Map::new();
        for pair in text.split(',').filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                bail!("--param {name}: {pair:?} is not KEY=VALUE");
            };
            map.insert(key.to_string(), Value::from(value));
        }
        return Ok(Value::Object(map));
    }
    scalar(ty, text)
}

/// What each task needs from an agent.
#[derive(Debug, Clone, Default, Args)]
pub struct RequirementArgs {
    /// CPUs each task reserves.
    #[arg(long)]
    cpus: Option<u32>,
    /// Memory each task reserves, MiB; a task using more is killed and retried.
    #[arg(long)]
    ram_mb: Option<u64>,
    /// GPUs each task gets (named in CUDA_VISIBLE_DEVICES).
    #[arg(long)]
    gpus: Option<u32>,
    /// A tag the agent must have, or `!tag` it must not have (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Software with a version range, `blender='>=3.0, <5'` (repeatable).
    #[arg(long = "software", value_name = "NAME=RANGE")]
    software: Vec<String>,
}

impl RequirementArgs {
    /// Whether any requirement was given.
    pub fn given(&self) -> bool {
        self.cpus.is_some()
            || self.ram_mb.is_some()
            || self.gpus.is_some()
            || !self.tags.is_empty()
            || !self.software.is_empty()
    }

    /// The requirements these flags describe.
    pub fn requirements(&self) -> Result<Requirements> {
        let mut software = BTreeMap::new();
        for pair in &self.software {
            let Some((name, range)) = pair.split_once('=') else {
                bail!("--software {pair:?}: expected NAME=RANGE, e.g. blender='>=3.0, <5'");
            };
            software.insert(name.trim().to_string(), range.trim().to_string());
        }
        Ok(Requirements {
            cpus: self.cpus.unwrap_or(0),
            ram_mb: self.ram_mb.unwrap_or(0),
            gpus: self.gpus.unwrap_or(0),
            tags: self.tags.clone(),
            software,
        })
    }
}

/// `furrow jobs`, `furrow agents` and `furrow audit`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// How many to show.
    #[arg(long, default_value_t = 50)]
    pub limit: u64,
    /// How many to skip.
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `furrow health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub server: ServerArg,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Prints the master's health; exits with 1 when it is degraded, so scripts and
/// monitors can test it.
pub async fn health(args: HealthArgs) -> Result<i32> {
    let client = args.server.connect().await?;
    let health = client.health().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&health)?);
    } else {
        println!(
            "{} (furrow {}, {}): {} agents online, {} tasks queued, {} running",
            health.status,
            health.version,
            health.database,
            health.agents_online,
            health.tasks_queued,
            health.tasks_running
        );
        for problem in &health.problems {
            println!("  - {problem}");
        }
    }
    Ok(if health.problems.is_empty() { 0 } else { 1 })
}

/// `furrow job ID`.
#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Job id.
    id: JobId,
    /// Print JSON (the job and its tasks) instead of tables.
    #[arg(long)]
    json: bool,
    /// Say why its waiting tasks wait, instead of listing its tasks.
    #[arg(long)]
    why: bool,
    /// Tasks to list (one page; the command prints how to get the next one).
    #[arg(long, default_value_t = 50)]
    limit: u64,
    /// List from the task covering this frame (a running job starts at its first
    /// running frame, any other at its first frame).
    #[arg(long)]
    from_frame: Option<i64>,
    /// Only tasks in this state (queued, running, done, failed, paused, blocked,
    /// cancelled).
    #[arg(long, value_parser = parse_state)]
    state: Option<WorkState>,
}

fn parse_state(text: &str) -> Result<WorkState, String> {
    WorkState::parse(text).ok_or_else(|| {
        format!("{text:?} is not a task state (queued, running, done, failed, paused, blocked, cancelled)")
    })
}

/// `furrow logs JOB FRAME`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Job id.
    job: JobId,
    /// A frame of the job.
    frame: i64,
    /// Attempt (default: the current one).
    #[arg(long)]
    attempt: Option<u32>,
    /// Keep printing new output until the task ends.
    #[arg(long, short)]
    follow: bool,
    /// List the frame's attempts (agent, start, end, exit code, outcome) instead.
    #[arg(long, conflicts_with = "follow")]
    attempts: bool,
}

/// The parameters of a submission of another type than `command`, from the values, the
/// shorthand flags and `--param`, each read as the type declares it.
async fn typed_params(
    client: &Client,
    jobtype: &str,
    args: &SubmitArgs,
) -> Result<serde_json::Value> {
    if !args.command.is_empty() || args.shell || !args.env.is_empty() || !args.secret_env.is_empty()
    {
        bail!(
            "a command after `--`, --shell, --env and --secret-env are for the `command` type, not `{jobtype}`"
        );
    }
    let view = client.jobtype(jobtype, args.jobtype_version).await?;
    let mut params = args.render.params();
    for pair in &args.params {
        let Some((name, value)) = pair.split_once('=') else {
            bail!("--param {pair:?}: expected NAME=VALUE");
        };
        let ty = view
            .parameters
            .iter()
            .find(|p| p.name == name)
            .map_or("string", |p| p.r#type.as_str());
        params.insert(name.to_string(), typed_value(name, ty, value)?);
    }
    let open: Vec<_> = view
        .parameters
        .iter()
        .filter(|p| p.required && !params.contains_key(&p.name))
        .collect();
    let mut open = open.into_iter();
    for value in &args.values {
        let Some(param) = open.next() else {
            bail!(
                "{value:?}: job type {jobtype} has no required parameter left for it (give parameters with --param NAME=VALUE)"
            );
        };
        params.insert(
            param.name.clone(),
            typed_value(&param.name, &param.r#type, value)?,
        );
    }
    // Relative paths are the submitter's: the agents run elsewhere.
    for param in view.parameters.iter().filter(|p| p.r#type == "path") {
        if let Some(serde_json::Value::String(path)) = params.get_mut(&param.name)
            && !furrow_jobtypes::params::is_absolute(path)
        {
            *path = std::path::absolute(&*path)
                .with_context(|| format!("{}: cannot make {path:?} absolute", param.name))?
                .to_string_lossy()
                .into_owned();
        }
    }
    Ok(serde_json::Value::Object(params))
}

pub async fn submit(args: SubmitArgs) -> Result<i32> {
    let client = args.server.connect().await?;
    let jobtype = args.jobtype.clone().unwrap_or_else(|| "command".into());
    let (params, title) = if jobtype == "command" {
        if args.command.is_empty() {
            bail!(
                "give the command after `--`, e.g. `furrow submit --frames 1-10 -- echo {{frame}}`, or a job type: `furrow submit blender SCENE ...`"
            );
        }
        if !args.values.is_empty() || !args.params.is_empty() || !args.render.params().is_empty() {
            bail!("the `command` type takes its command after `--`, not values or --param");
        }
        let mut env = BTreeMap::new();
        for (flag, pairs) in [("--env", &args.env), ("--secret-env", &args.secret_env)] {
            for pair in pairs {
                let Some((key, value)) = pair.split_once('=') else {
                    bail!("{flag} {pair:?}: expected KEY=VALUE");
                };
                env.insert(key.to_string(), value.to_string());
            }
        }
        let title = args.title.clone().unwrap_or_else(|| args.command.join(" "));
        let params = CommandParams {
            command: args.command.clone(),
            shell: args.shell,
            env,
            app: None,
        };
        (serde_json::to_value(params)?, title)
    } else {
        let params = typed_params(&client, &jobtype, &args).await?;
        let subject = args
            .values
            .first()
            .or(args.render.output.as_ref())
            .map(|v| format!(" {v}"))
            .unwrap_or_default();
        let title = args
            .title
            .clone()
            .unwrap_or_else(|| format!("{jobtype}{subject}"));
        (params, title)
    };
    let job = JobSubmission {
        jobtype,
        jobtype_version: args.jobtype_version,
        batch: args.batch,
        priority: args.priority,
        retries: args.retries,
        timeout_secs: args.timeout,
        stall_timeout_secs: args.stall_timeout,
        queue: args.queue,
        weight: args.weight,
        min_agents: args.min_agents,
        max_agents: args.max_agents,
        requirements: args.requirements.requirements()?,
        depends_on: args.depends_on,
        depends_per_frame: args.per_frame,
        blocklist_after: args.blocklist_after,
        notes: args.notes,
        user: args.user,
        secret_env: args
            .secret_env
            .iter()
            .filter_map(|pair| pair.split_once('=').map(|(key, _)| key.to_string()))
            .collect(),
        ..JobSubmission::new(title, Json(params), args.frames)
    };
    let view = client.submit_job(job).await?;
    println!("{}", view.id);
    if !args.wait {
        return Ok(0);
    }
    let id = view.id;
    let finished = tokio::select! {
        finished = wait_for(&client, id) => finished?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!();
            eprintln!(
                "stopped waiting; job {id} keeps running on the farm (cancel it with `furrow cancel {id}`)"
            );
            return Ok(130);
        }
    };
    let counts = finished.task_counts;
    eprintln!(
        "job {} {}: {} done, {} failed of {} tasks",
        finished.id,
        finished.state.as_str(),
        counts.done,
        counts.failed,
        counts.total()
    );
    Ok(if finished.state == WorkState::Done {
        0
    } else {
        1
    })
}

/// Polls the job until it is done or failed, drawing a progress bar on a terminal and a
/// line per change otherwise.
async fn wait_for(client: &Client, id: JobId) -> Result<JobView> {
    let terminal = std::io::stderr().is_terminal();
    let mut last_line = String::new();
    loop {
        let job = client.get_job(id).await?;
        let line = progress_line(&job);
        if line != last_line {
            let mut err = std::io::stderr().lock();
            if terminal {
                write!(err, "\r\x1b[2K{line}")?;
            } else {
                writeln!(err, "{line}")?;
            }
            err.flush()?;
            last_line = line;
        }
        if job.state.is_finished() {
            if terminal {
                eprintln!();
            }
            return Ok(job);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn progress_line(job: &JobView) -> String {
    const WIDTH: u64 = 30;
    let c = job.task_counts;
    let total = c.total().max(1);
    let filled = (c.done + c.failed) * WIDTH / total;
    format!(
        "[{}{}] {}/{} done · {} running · {} failed · {}",
        "#".repeat(filled as usize),
        "-".repeat((WIDTH - filled) as usize),
        c.done,
        c.total(),
        c.running,
        c.failed,
        job.state.as_str()
    )
}

pub async fn jobs(args: ListArgs) -> Result<i32> {
    let client = args.server.connect().await?;
    let page = client.list_jobs(args.limit, args.offset).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(0);
    }
    let rows = page.items.iter().map(|j| {
        vec![
            j.id.to_string(),
            j.state.as_str().to_string(),
            format!("{}/{}", j.task_counts.done, j.task_counts.total()),
            j.task_counts.failed.to_string(),
            j.priority.to_string(),
            j.queue.clone(),
            j.frames.clone(),
            j.title.clone(),
        ]
    });
    print_table(
        &[
            "ID", "STATE", "DONE", "FAILED", "PRIO", "QUEUE", "FRAMES", "TITLE",
        ],
        rows,
    );
    println!("{} of {} jobs", page.items.len(), page.total);
    Ok(0)
}

pub async fn job(args: JobArgs) -> Result<i32> {
    let client = args.server.connect().await?;
    if args.why {
        let why = client.why(args.id).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&why)?);
            return Ok(0);
        }
        println!(
            "job {}: {} · {} tasks waiting{}",
            why.job_id,
            why.state.as_str(),
            why.waiting,
            if why.never {
                " · no agent can ever run it as it stands"
            } else {
                ""
            }
        );
        for reason in &why.reasons {
            println!("  - {reason}");
        }
        return Ok(0);
    }
    let job = client.get_job(args.id).await?;
    let (page, from_frame) = task_page(&client, &job, &args).await?;
    let tasks = &page.items;
    if args.json {
        let both = serde_json::json!({ "job": job, "tasks": tasks, "total": page.total });
        println!("{}", serde_json::to_string_pretty(&both)?);
        return Ok(0);
    }
    let c = job.task_counts;
    println!("job {}: {}", job.id, job.title);
    println!("  state     {}", job.state.as_str());
    println!(
        "  jobtype   {} v{}  {}",
        job.jobtype, job.jobtype_version, job.params
    );
    println!("  frames    {} (batch {})", job.frames, job.batch);
    println!(
        "  queue     {}  priority {}  weight {}  retries {}",
        job.queue, job.priority, job.weight, job.retries
    );
    if !job.requirements.is_empty() {
        println!("  needs     {}", serde_json::to_string(&job.requirements)?);
    }
    if !job.depends_on.is_empty() {
        let ids: Vec<String> = job.depends_on.iter().map(|id| id.to_string()).collect();
        println!(
            "  after     {}{}",
            ids.join(", "),
            if job.depends_per_frame {
                " (frame by frame)"
            } else {
                ""
            }
        );
    }
    if !job.blocklist.is_empty() {
        let agents: Vec<String> = job
            .blocklist
            .iter()
            .map(|b| format!("{} ({} failures)", b.agent, b.failures))
            .collect();
        println!("  blocked   {}", agents.join(", "));
    }
    if !job.notes.is_empty() {
        println!("  notes     {}", job.notes);
    }
    println!(
        "  tasks     {} queued · {} running · {} done · {} failed · {} paused · {} blocked · {} cancelled",
        c.queued, c.running, c.done, c.failed, c.paused, c.blocked, c.cancelled
    );
    println!("  created   {}", job.created_at.to_rfc3339());
    println!();
    let rows = tasks.iter().map(|t| {
        let frames = if t.frame == t.frame_end {
            t.frame.to_string()
        } else {
            format!("{}-{}", t.frame, t.frame_end)
        };
        vec![
            frames,
            t.state.as_str().to_string(),
            t.attempt.to_string(),
            t.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            t.agent
                .map(|a| a.to_string()[..8].to_string())
                .unwrap_or_else(|| "-".into()),
            t.last_error.clone().unwrap_or_default(),
        ]
    });
    print_table(&["FRAMES", "STATE", "TRY", "EXIT", "AGENT", "ERROR"], rows);
    let what = args
        .state
        .map_or("tasks".to_string(), |s| format!("{} tasks", s.as_str()));
    match (tasks.first(), tasks.last()) {
        (Some(first), Some(last)) => {
            println!(
                "{} {what} from frame {} to {} of {}{}",
                tasks.len(),
                first.frame,
                last.frame_end,
                page.total,
                from_frame.map_or(String::new(), |f| format!(" (from frame {f})"))
            );
            if tasks.len() as u64 == args.limit {
                println!(
                    "more: furrow job {} --from-frame {}{}",
                    job.id,
                    last.frame_end + 1,
                    args.state
                        .map_or(String::new(), |s| format!(" --state {}", s.as_str()))
                );
            }
        }
        _ => println!("no {what} to list (of {})", page.total),
    }
    Ok(0)
}

/// One page of a job's tasks, as `furrow job` asks for it: from `--from-frame`, or, on
/// a running job, from its first running frame; with the frame it started from.
async fn task_page(
    client: &Client,
    job: &JobView,
    args: &JobArgs,
) -> Result<(Page<TaskView>, Option<i64>)> {
    let mut from_frame = args.from_frame;
    if from_frame.is_none() && args.state.is_none() && job.state == WorkState::Running {
        let running = TaskQuery {
            state: Some(WorkState::Running),
            ..TaskQuery::first(1)
        };
        from_frame = client
            .browse_tasks(job.id, running)
            .await?
            .items
            .first()
            .map(|t| t.frame);
    }
    let query = TaskQuery {
        from_frame,
        state: args.state,
        ..TaskQuery::first(args.limit)
    };
    Ok((client.browse_tasks(job.id, query).await?, from_frame))
}

pub async fn agents(args: ListArgs) -> Result<i32> {
    let client = args.server.connect().await?;
    let page = client.list_agents(args.limit, args.offset).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(0);
    }
    let rows = page.items.iter().map(|a| {
        vec![
            a.name.clone(),
            if a.enabled {
                format!("{:?}", a.state).to_lowercase()
            } else {
                format!("{:?}, disabled", a.state).to_lowercase()
            },
            format!("{}/{}", a.running.len(), a.slots),
            a.cpus.to_string(),
            format!("{:.1}", a.ram_mb as f64 / 1024.0),
            format!("{:.2}", a.load),
            a.tags.join(","),
            a.id.to_string(),
        ]
    });
    print_table(
        &[
            "NAME", "STATE", "BUSY", "CPUS", "RAM GiB", "LOAD", "TAGS", "ID",
        ],
        rows,
    );
    println!("{} of {} agents", page.items.len(), page.total);
    Ok(0)
}

pub async fn logs(args: LogsArgs) -> Result<i32> {
    let client = args.server.connect().await?;
    // The master finds the task of a frame through an index, whatever the job's size.
    let mut task = client.task_at_frame(args.job, args.frame).await?;
    let job_id = args.job;
    if args.attempts {
        let attempts = client.task_attempts(job_id, task.id).await?;
        let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map_or("-".to_string(), |t| t.format("%H:%M:%S%.3f").to_string())
        };
        print_table(
            &[
                "TRY", "AGENT", "STARTED", "ENDED", "EXIT", "OUTCOME", "ERROR",
            ],
            attempts.iter().map(|a| {
                vec![
                    a.attempt.to_string(),
                    a.agent
                        .map_or("-".into(), |id| id.to_string()[..8].to_string()),
                    time(a.started_at),
                    time(a.finished_at),
                    a.exit_code.map_or("-".into(), |c| c.to_string()),
                    a.outcome.clone(),
                    a.error.clone().unwrap_or_default(),
                ]
            }),
        );
        return Ok(0);
    }
    let mut offset = 0;
    let mut stdout = std::io::stdout().lock();
    loop {
        if task.attempt > 0 || args.attempt.is_some() {
            let chunk = client
                .task_log(job_id, task.id, args.attempt, offset)
                .await?;
            stdout.write_all(chunk.text.as_bytes())?;
            stdout.flush()?;
            offset = chunk.next_offset;
            if !args.follow || (chunk.complete && task.state.is_finished()) {
                return Ok(0);
            }
        } else if !args.follow {
            eprintln!(
                "frame {} has not started yet (it is {})",
                args.frame,
                task.state.as_str()
            );
            return Ok(0);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        let refreshed = client.task_at_frame(job_id, args.frame).await?;
        if refreshed.id != task.id {
            bail!(
                "frame {} of job {job_id} was replaced (its frames were edited)",
                args.frame
            );
        }
        // A retry or a requeue starts a new attempt with a log of its own.
        if refreshed.attempt != task.attempt && args.attempt.is_none() {
            offset = 0;
        }
        task = refreshed;
    }
}

/// Prints rows under headers, columns padded to their widest cell.
pub fn print_table(headers: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let text: Vec<String> = cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c
                } else {
                    format!("{c:<width$}", width = widths[i])
                }
            })
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}
