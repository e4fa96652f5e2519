//! Catalogue commands: job types (`furrow jobtype`), path maps (`furrow pathmap`) and the
//! files a job produced (`furrow outputs`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use furrow_protocol::{JobId, JobTypeView, PathMapSpec, PathMapView};

use crate::commands::{ServerArg, print_table};

/// `furrow jobtype ...`.
#[derive(Debug, Args)]
pub struct JobTypeArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(subcommand)]
    command: JobTypeCommand,
}

/// What to do with job types.
#[derive(Debug, Subcommand)]
pub enum JobTypeCommand {
    /// Store a declarative job type from its TOML file (a new version each time it
    /// changes; the file names its version).
    Add {
        /// The definition file.
        file: PathBuf,
    },
    /// List every version of every job type.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a job type's parameters (its newest version unless one is given).
    Show {
        /// Its name.
        name: String,
        /// Its version.
        #[arg(value_name = "VERSION")]
        number: Option<u32>,
        /// Print JSON (with the definition file).
        #[arg(long)]
        json: bool,
    },
}

fn print_jobtypes(types: &[JobTypeView]) {
    print_table(
        &["NAME", "VERSION", "KIND", "SOFTWARE", "DESCRIPTION"],
        types.iter().map(|t| {
            vec![
                t.name.clone(),
                t.version.to_string(),
                if t.builtin { "built-in" } else { "file" }.to_string(),
                t.software
                    .iter()
                    .map(|(name, range)| format!("{name} {range}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                t.description.clone(),
            ]
        }),
    );
}

/// Runs a `furrow jobtype` command.
pub async fn jobtype(args: JobTypeArgs) -> Result<i32> {
    let client = args.server.connect().await?;
    match args.command {
        JobTypeCommand::Add { file } => {
            let source = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let (view, created) = client
                .add_jobtype(source)
                .await
                .with_context(|| format!("{} refused", file.display()))?;
            if created {
                println!("job type {} version {}: stored", view.name, view.version);
            } else {
                println!(
                    "job type {} version {}: already stored with this text",
                    view.name, view.version
                );
            }
        }
        JobTypeCommand::List { json } => {
            let types = client.jobtypes().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&types)?);
            } else {
                print_jobtypes(&types);
            }
        }
        JobTypeCommand::Show { name, number, json } => {
            let view = client.jobtype(&name, number).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
                return Ok(0);
            }
            print_jobtypes(std::slice::from_ref(&view));
            println!();
            print_table(
                &["PARAMETER", "TYPE", "REQUIRED", "DEFAULT", "DESCRIPTION"],
                view.parameters.iter().map(|p| {
                    let ty = if p.values.is_empty() {
                        p.r#type.clone()
                    } else {
                        format!("{} ({})", p.r#type, p.values.join("|"))
                    };
                    vec![
                        p.name.clone(),
                        ty,
                        if p.required { "yes" } else { "" }.to_string(),
                        p.default
                            .as_ref()
                            .map(|d| d.0.to_string())
                            .unwrap_or_default(),
                        p.description.clone(),
                    ]
                }),
            );
        }
    }
    Ok(0)
}

/// `furrow pathmap ...`.
#[derive(Debug, Args)]
pub struct PathMapArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(subcommand)]
    command: PathMapCommand,
}

/// What to do with path maps.
#[derive(Debug, Subcommand)]
pub enum PathMapCommand {
    /// List the path maps.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a path map: the same storage under its prefix on each system (at least two).
    Add {
        /// Prefix on Linux, e.g. /mnt/projects.
        #[arg(long, default_value = "")]
        linux: String,
        /// Prefix on Windows, e.g. 'P:\' or '\\nas\projects'.
        #[arg(long, default_value = "")]
        windows: String,
        /// Prefix on macOS, e.g. /Volumes/projects.
        #[arg(long, default_value = "")]
        macos: String,
        /// Apply only to agents with this tag.
        #[arg(long, default_value = "")]
        tag: String,
    },
    /// Remove a path map.
    Remove {
        /// Its id.
        id: i64,
    },
}

fn print_path_maps(maps: &[PathMapView]) {
    print_table(
        &["ID", "LINUX", "WINDOWS", "MACOS", "TAG"],
        maps.iter().map(|m| {
            vec![
                m.id.to_string(),
                m.map.linux.clone(),
                m.map.windows.clone(),
                m.map.macos.clone(),
                m.map.tag.clone(),
            ]
        }),
    );
}

/// Runs a `furrow pathmap` command.
pub async fn pathmap(args: PathMapArgs) -> Result<i32> {
    let client = args.server.connect().await?;
    match args.command {
        PathMapCommand::List { json } => {
            let maps = client.path_maps().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&maps)?);
            } else {
                print_path_maps(&maps);
            }
        }
        PathMapCommand::Add {
            linux,
            windows,
            macos,
            tag,
        } => {
            let map = client
                .add_path_map(PathMapSpec {
                    linux,
                    windows,
                    macos,
                    tag,
                })
                .await?;
            print_path_maps(&[map]);
        }
        PathMapCommand::Remove { id } => {
            client.delete_path_map(id).await?;
            println!("path map {id}: removed");
        }
    }
    Ok(0)
}

/// `furrow outputs JOB`.
#[derive(Debug, Args)]
pub struct OutputsArgs {
    #[command(flatten)]
    server: ServerArg,
    /// Job id.
    job: JobId,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Lists the files a job produced.
pub async fn outputs(args: OutputsArgs) -> Result<i32> {
    let client = args.server.connect().await?;
    let outputs = client.job_outputs(args.job).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outputs)?);
        return Ok(0);
    }
    print_table(
        &["FRAME", "SIZE", "PREVIEW", "TASK", "PATH"],
        outputs.iter().map(|o| {
            vec![
                o.frame.map(|f| f.to_string()).unwrap_or_default(),
                o.size.to_string(),
                if o.preview { "yes" } else { "" }.to_string(),
                o.task_id.to_string(),
                o.path.clone(),
            ]
        }),
    );
    println!("{} file(s)", outputs.len());
    Ok(0)
}
