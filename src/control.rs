//! Control commands: job actions (pause, resume, cancel, rerun, delete), job edits, the
//! queue tree and agent settings. Each prints what it did, one line per item, or a
//! message naming what was refused.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use furrow_protocol::{
    AgentPatch, JobAction, JobId, JobPatch, QueuePatch, QueueSpec, QueueView, TaskAction, TaskId,
};
use uuid::Uuid;

use crate::commands::{RequirementArgs, ServerArg, print_table};

/// `furrow pause|resume|cancel|rerun|delete JOB...`.
#[derive(Debug, Args)]
pub struct ActionArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Job ids.
    #[arg(required = true, value_name = "JOB")]
    jobs: Vec<JobId>,
    /// pause: stop running tasks now and queue them again (no failure counted).
    #[arg(long)]
    kill: bool,
    /// rerun: only the failed and cancelled tasks.
    #[arg(long)]
    failed: bool,
    /// rerun or cancel: only this task of the (one) job.
    #[arg(long, value_name = "TASK_ID")]
    task: Option<TaskId>,
}

/// Which action a command is.
#[derive(Debug, Clone, Copy)]
pub enum Verb {
    /// `furrow pause`.
    Pause,
    /// `furrow resume`.
    Resume,
    /// `furrow cancel`.
    Cancel,
    /// `furrow rerun`.
    Rerun,
    /// `furrow delete`.
    Delete,
}

/// Runs a job action on every job given; exits 1 if any was refused.
pub async fn action(verb: Verb, args: ActionArgs) -> Result<i32> {
    if args.kill && !matches!(verb, Verb::Pause) {
        bail!("--kill applies to pause only");
    }
    if args.failed && !matches!(verb, Verb::Rerun) {
        bail!("--failed applies to rerun only");
    }
    let client = args.server.connect().await?;
    if let Some(task_id) = args.task {
        let action = match verb {
            Verb::Rerun => TaskAction::Rerun,
            Verb::Cancel => TaskAction::Cancel,
            _ => bail!("--task applies to rerun and cancel only"),
        };
        let [job_id] = args.jobs[..] else {
            bail!("--task needs exactly one job");
        };
        let task = client.task_action(job_id, task_id, action).await?;
        println!(
            "job {job_id} task {task_id}: {} (attempt {})",
            task.state.as_str(),
            task.attempt
        );
        return Ok(0);
    }
    if let Verb::Delete = verb {
        let mut failed = 0;
        for id in args.jobs {
            match client.delete_job(id).await {
                Ok(()) => println!("job {id}: deleted"),
                Err(e) => {
                    eprintln!("job {id}: {e}");
                    failed += 1;
                }
            }
        }
        return Ok(i32::from(failed > 0));
    }
    let action = match verb {
        Verb::Pause => JobAction::Pause,
        Verb::Resume => JobAction::Resume,
        Verb::Cancel => JobAction::Cancel,
        Verb::Rerun if args.failed => JobAction::RerunFailed,
        Verb::Rerun => JobAction::Rerun,
        Verb::Delete => unreachable!("handled above"),
    };
    let outcomes = client.jobs_action(action, args.jobs, args.kill).await?;
    let mut refused = false;
    for outcome in outcomes {
        match outcome.error {
            None => println!("job {}: {}", outcome.id, action.as_str()),
            Some(error) => {
                eprintln!("job {}: {error}", outcome.id);
                refused = true;
            }
        }
    }
    Ok(i32::from(refused))
}

/// `furrow edit JOB`.
#[derive(Debug, Args)]
pub struct EditArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Job id.
    job: JobId,
    /// New priority.
    #[arg(long, allow_hyphen_values = true)]
    priority: Option<i32>,
    /// New weight.
    #[arg(long)]
    weight: Option<u32>,
    /// New queue.
    #[arg(long)]
    queue: Option<String>,
    /// New minimum of agents.
    #[arg(long)]
    min_agents: Option<u32>,
    /// New maximum of agents (0 removes the limit).
    #[arg(long)]
    max_agents: Option<u32>,
    /// New frame range (only while no task has run).
    #[arg(long)]
    frames: Option<String>,
    /// New notes.
    #[arg(long)]
    notes: Option<String>,
    /// New requirements: any of these flags replaces all of the job's requirements.
    #[command(flatten)]
    requirements: RequirementArgs,
}

/// Changes a job.
pub async fn edit(args: EditArgs) -> Result<i32> {
    let patch = JobPatch {
        priority: args.priority,
        weight: args.weight,
        queue: args.queue,
        min_agents: args.min_agents,
        max_agents: args.max_agents,
        requirements: if args.requirements.given() {
            Some(args.requirements.requirements()?)
        } else {
            None
        },
        frames: args.frames,
        notes: args.notes,
    };
    let client = args.server.connect().await?;
    let job = client.edit_job(args.job, patch).await?;
    println!(
        "job {}: priority {} · weight {} · queue {} · frames {} · {}",
        job.id,
        job.priority,
        job.weight,
        job.queue,
        job.frames,
        job.state.as_str()
    );
    Ok(0)
}

/// `furrow queue ...`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(subcommand)]
    command: QueueCommand,
}

/// What to do with queues.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Show the queue tree with what runs in each queue.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a queue: `furrow queue add studio/lighting --weight 3`.
    Add {
        /// Its path; the parent must exist.
        path: String,
        #[command(flatten)]
        settings: QueueSettings,
    },
    /// Change a queue.
    Edit {
        /// Its path.
        path: String,
        #[command(flatten)]
        settings: QueueSettings,
    },
    /// Delete a queue without jobs or children.
    Remove {
        /// Its path.
        path: String,
    },
}

/// Settings of a queue.
#[derive(Debug, Args)]
pub struct QueueSettings {
    /// Priority among its siblings (higher first).
    #[arg(long, allow_hyphen_values = true)]
    priority: Option<i32>,
    /// Share of running slots relative to its siblings.
    #[arg(long)]
    weight: Option<u32>,
    /// Agents it gets before queues at their minimum.
    #[arg(long)]
    min_agents: Option<u32>,
    /// Most agents its jobs use at once (0 removes the limit).
    #[arg(long)]
    max_agents: Option<u32>,
}

fn print_queues(queues: &[QueueView]) {
    let rows = queues.iter().map(|q| {
        vec![
            q.path.clone(),
            q.priority.to_string(),
            q.weight.to_string(),
            q.min_agents.to_string(),
            q.max_agents.map_or("-".into(), |m| m.to_string()),
            q.jobs.to_string(),
            q.running.to_string(),
            q.queued.to_string(),
            format!("{:.0}%", q.share * 100.0),
        ]
    });
    print_table(
        &[
            "QUEUE", "PRIO", "WEIGHT", "MIN", "MAX", "JOBS", "RUNNING", "QUEUED", "SHARE",
        ],
        rows,
    );
}

/// Runs a queue command.
pub async fn queue(args: QueueArgs) -> Result<i32> {
    let client = args.server.connect().await?;
    match args.command {
        QueueCommand::List { json } => {
            let queues = client.list_queues().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&queues)?);
            } else {
                print_queues(&queues);
            }
        }
        QueueCommand::Add { path, settings } => {
            let trimmed = path.trim().trim_matches('/');
            let (parent, name) = match trimmed.rsplit_once('/') {
                Some((parent, name)) => (Some(parent.to_string()), name.to_string()),
                None => (None, trimmed.to_string()),
            };
            let queue = client
                .create_queue(QueueSpec {
                    name,
                    parent,
                    priority: settings.priority.unwrap_or(0),
                    weight: settings.weight.unwrap_or(1),
                    min_agents: settings.min_agents.unwrap_or(0),
                    max_agents: settings.max_agents,
                })
                .await?;
            print_queues(&[queue]);
        }
        QueueCommand::Edit { path, settings } => {
            let queue = client
                .edit_queue(
                    path,
                    QueuePatch {
                        priority: settings.priority,
                        weight: settings.weight,
                        min_agents: settings.min_agents,
                        max_agents: settings.max_agents,
                    },
                )
                .await?;
            print_queues(&[queue]);
        }
        QueueCommand::Remove { path } => {
            client.delete_queue(path.clone()).await?;
            println!("queue {path}: deleted");
        }
    }
    Ok(0)
}

/// `furrow agent-ctl ...`.
#[derive(Debug, Args)]
pub struct AgentCtlArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(subcommand)]
    command: AgentCtlCommand,
}

/// What to change on an agent.
#[derive(Debug, Subcommand)]
pub enum AgentCtlCommand {
    /// Let the agent take work again.
    Enable {
        /// Agent id or name.
        agent: String,
    },
    /// Give the agent no new work; running tasks finish (sticky across restarts).
    Disable {
        /// Agent id or name.
        agent: String,
    },
    /// Replace the agent's tags (they take the place of its own, across restarts).
    Tags {
        /// Agent id or name.
        agent: String,
        /// The tags, comma-separated (empty for none).
        #[arg(value_delimiter = ',', num_args = 0..)]
        tags: Vec<String>,
    },
    /// Forget a lost agent and its settings (a host that is gone for good).
    Remove {
        /// Agent id or name.
        agent: String,
    },
    /// Revoke the agent's credential and disconnect it: it cannot connect again until
    /// it is removed (admins).
    Revoke {
        /// Agent id or name.
        agent: String,
    },
}

/// An agent's id from its id or its name.
async fn resolve_agent(client: &furrow_protocol::Client, who: &str) -> Result<Uuid> {
    if let Ok(id) = Uuid::parse_str(who) {
        return Ok(id);
    }
    let agents = client.list_agents(10_000, 0).await?;
    let matching: Vec<_> = agents.items.iter().filter(|a| a.name == who).collect();
    match matching[..] {
        [one] => Ok(one.id),
        [] => bail!("no agent named {who:?} (see `furrow agents`)"),
        _ => bail!("{} agents are named {who:?}; give the id", matching.len()),
    }
}

/// Runs an agent command.
pub async fn agent_ctl(args: AgentCtlArgs) -> Result<i32> {
    let client = args.server.connect().await?;
    if let AgentCtlCommand::Remove { agent } = &args.command {
        let agent_id = resolve_agent(&client, agent).await?;
        client.remove_agent(agent_id).await?;
        println!("agent {agent} ({agent_id}): removed");
        return Ok(0);
    }
    if let AgentCtlCommand::Revoke { agent } = &args.command {
        let agent_id = resolve_agent(&client, agent).await?;
        client.revoke_agent(agent_id).await?;
        println!("agent {agent} ({agent_id}): revoked and disconnected");
        return Ok(0);
    }
    let (who, patch) = match args.command {
        AgentCtlCommand::Enable { agent } => (
            agent,
            AgentPatch {
                enabled: Some(true),
                tags: None,
            },
        ),
        AgentCtlCommand::Disable { agent } => (
            agent,
            AgentPatch {
                enabled: Some(false),
                tags: None,
            },
        ),
        AgentCtlCommand::Tags { agent, tags } => (
            agent,
            AgentPatch {
                enabled: None,
                tags: Some(
                    tags.into_iter()
                        .map(|t| t.trim().to_string())
                        .filter(|t| !t.is_empty())
                        .collect(),
                ),
            },
        ),
        AgentCtlCommand::Remove { .. } | AgentCtlCommand::Revoke { .. } => {
            unreachable!("handled above")
        }
    };
    let agent_id = resolve_agent(&client, &who).await?;
    let agent = client.edit_agent(agent_id, patch).await?;
    println!(
        "agent {} ({}): {} · tags {}",
        agent.name,
        agent.id,
        if agent.enabled { "enabled" } else { "disabled" },
        if agent.tags.is_empty() {
            "-".to_string()
        } else {
            agent.tags.join(",")
        }
    );
    Ok(0)
}
