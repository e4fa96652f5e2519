//! `furrow app ...`: deployed applications — create, deploy a bundle, configure, roll
//! back, follow their output, delete.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use furrow_deploy::{ConfigFormat, parse_assignments, parse_config_file};
use furrow_protocol::{AppLogLine, AppRollback, AppSelector, AppSpec, AppView};
use serde_json::{Map, Value};

use crate::commands::{ServerArg, print_table};

/// `furrow app ...`.
#[derive(Debug, Args)]
pub struct AppArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(subcommand)]
    command: AppCommand,
}

/// What to do with apps.
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Create an app: where it runs and which web server mounts it.
    Create {
        /// Its name, as its bundles' furrow-app.yaml says.
        name: String,
        /// The web server kind its agents mount it on: nginx, apache or lighttpd.
        #[arg(long)]
        webserver: String,
        /// Run it on the agents carrying this tag (repeatable; none: every agent).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// List apps.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show an app: its releases, where it runs and how, its history.
    Show {
        /// The app.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Deploy a bundle (.zip or .tar.gz) as the app's new release.
    Deploy {
        /// The app.
        name: String,
        /// The bundle.
        file: PathBuf,
    },
    /// Show the app's configuration, or set it (a new release): `--set k=v`, `--file F`.
    Config {
        /// The app.
        name: String,
        /// A field's value (repeatable).
        #[arg(long = "set", value_name = "FIELD=VALUE")]
        set: Vec<String>,
        /// A configuration file (YAML, INI or JSON); `--set` values override it.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve an earlier release again (the one before the current by default).
    Rollback {
        /// The app.
        name: String,
        /// The release.
        #[arg(long = "to", value_name = "N")]
        to: Option<u32>,
    },
    /// Print the app's output.
    Logs {
        /// The app.
        name: String,
        /// Only lines matching this regular expression.
        #[arg(long, value_name = "RE")]
        grep: Option<String>,
        /// The newest lines, at most this many.
        #[arg(long, default_value_t = 200)]
        limit: u32,
        /// Keep printing new lines until interrupted.
        #[arg(long)]
        follow: bool,
    },
    /// List the app's notification rules, add one (`--match RE --webhook URL`: output
    /// lines matching RE are posted to URL as JSON), or remove them all (`--clear`).
    Notify {
        /// The app.
        name: String,
        /// A regular expression output lines are matched with.
        #[arg(long = "match", value_name = "RE", requires = "webhook")]
        pattern: Option<String>,
        /// The http:// or https:// URL the matching lines are posted to.
        #[arg(long, value_name = "URL", requires = "pattern")]
        webhook: Option<String>,
        /// Remove every rule.
        #[arg(long, conflicts_with = "pattern")]
        clear: bool,
    },
    /// Delete an app: its agents stop and remove it.
    Delete {
        /// The app.
        name: String,
    },
}

fn print_apps(apps: &[AppView]) {
    print_table(
        &["NAME", "WEBSERVER", "TAGS", "RELEASE", "AGENTS"],
        apps.iter().map(|app| {
            let running = app
                .placements
                .iter()
                .filter(|p| p.state == Some(furrow_protocol::AppState::Running))
                .count();
            vec![
                app.name.clone(),
                app.webserver.clone(),
                app.agents.tags.join(","),
                app.current.map_or("-".into(), |n| n.to_string()),
                format!("{running}/{} running", app.placements.len()),
            ]
        }),
    );
}

fn print_app(app: &AppView) {
    println!("app        {}", app.name);
    println!("webserver  {}", app.webserver);
    println!(
        "agents     {}",
        if app.agents.tags.is_empty() {
            "every agent".to_string()
        } else {
            format!("tagged {}", app.agents.tags.join(", "))
        }
    );
    println!(
        "release    {}",
        app.current.map_or("none yet".into(), |n| n.to_string())
    );
    println!();
    print_table(
        &["AGENT", "STATE", "RELEASE", "MOUNT", "INSTANCES", "MESSAGE"],
        app.placements.iter().map(|p| {
            vec![
                if p.online {
                    p.name.clone()
                } else {
                    format!("{} (offline)", p.name)
                },
                p.state
                    .map_or("-".into(), |s| format!("{s:?}").to_lowercase()),
                p.current.map_or("-".into(), |n| n.to_string()),
                p.mount.clone().unwrap_or_else(|| "-".into()),
                p.instances
                    .iter()
                    .map(|i| format!("{}.{} {}", i.process, i.instance, i.state))
                    .collect::<Vec<_>>()
                    .join(", "),
                p.message.clone().unwrap_or_default(),
            ]
        }),
    );
    println!();
    print_table(
        &["RELEASE", "VERSION", "SOURCE", "BY", "WHEN"],
        app.releases.iter().map(|r| {
            vec![
                r.release.to_string(),
                r.version.clone(),
                r.source.clone(),
                r.created_by.clone(),
                r.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            ]
        }),
    );
    if !app.history.is_empty() {
        println!();
        for event in app.history.iter().take(20) {
            println!(
                "{}  {:<11} {:<8} {} {}",
                event.at.format("%Y-%m-%d %H:%M:%S"),
                event.action,
                event.release.map_or(String::new(), |n| format!("#{n}")),
                event.by,
                event.detail
            );
        }
    }
}

fn print_lines(lines: &[AppLogLine]) {
    for line in lines {
        let at = chrono::DateTime::from_timestamp_millis(line.at_ms)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default();
        println!(
            "{at} {} #{} {} {} {}",
            line.agent, line.release, line.instance, line.stream, line.text
        );
    }
}

/// The values a `furrow app config` sets: the file's, then each `--set`.
fn values(file: Option<&PathBuf>, set: &[String]) -> Result<Map<String, Value>> {
    let mut values = Map::new();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let format = ConfigFormat::from_path(file).with_context(|| {
            format!(
                "{}: cannot tell the format; name it .yaml, .yml, .ini or .json",
                file.display()
            )
        })?;
        values = parse_config_file(&text, format)
            .with_context(|| format!("{} is not a configuration", file.display()))?;
    }
    let assigned = parse_assignments(set).map_err(anyhow::Error::msg)?;
    values.extend(assigned);
    Ok(values)
}

/// Runs a `furrow app` command.
pub async fn app(args: AppArgs) -> Result<i32> {
    let client = args.server.connect().await?;
    match args.command {
        AppCommand::Create {
            name,
            webserver,
            tags,
        } => {
            let app = client
                .create_app(AppSpec {
                    name,
                    agents: AppSelector { tags },
                    webserver,
                })
                .await?;
            println!(
                "app {} created; deploy a bundle with `furrow app deploy {} FILE`",
                app.name, app.name
            );
        }
        AppCommand::List { json } => {
            let apps = client.list_apps().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&apps)?);
            } else {
                print_apps(&apps);
            }
        }
        AppCommand::Show { name, json } => {
            let app = client.get_app(name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&app)?);
            } else {
                print_app(&app);
            }
        }
        AppCommand::Deploy { name, file } => {
            let bundle =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let release = client
                .deploy_app(name.clone(), &bundle)
                .await
                .with_context(|| format!("{} refused", file.display()))?;
            println!(
                "app {name}: release {} (version {}) is current; `furrow app show {name}` tells how its agents stand",
                release.release, release.version
            );
        }
        AppCommand::Config {
            name,
            set,
            file,
            json,
        } => {
            if set.is_empty() && file.is_none() {
                let config = client.app_config(name).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&config)?);
                } else if let Value::Object(map) = config {
                    for (field, value) in map {
                        let shown = match value {
                            Value::String(text) => text,
                            other => other.to_string(),
                        };
                        println!("{field} = {shown}");
                    }
                }
                return Ok(0);
            }
            // Fields not given keep their values (secrets included, sent back masked).
            let mut merged = match client.app_config(name.clone()).await? {
                Value::Object(map) => map,
                _ => Map::new(),
            };
            merged.extend(values(file.as_ref(), &set)?);
            let release = client
                .configure_app(name.clone(), Value::Object(merged))
                .await?;
            println!(
                "app {name}: release {} carries the new configuration",
                release.release
            );
        }
        AppCommand::Rollback { name, to } => {
            let release = client
                .rollback_app(name.clone(), AppRollback { release: to })
                .await?;
            println!("app {name}: release {release} is current again");
        }
        AppCommand::Logs {
            name,
            grep,
            limit,
            follow,
        } => {
            let lines = client
                .app_logs(name.clone(), grep.clone(), None, limit)
                .await?;
            print_lines(&lines);
            if follow {
                let mut last = lines.last().cloned();
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let since = last.as_ref().map(|l| l.at_ms);
                    let lines = client
                        .app_logs(name.clone(), grep.clone(), since, 10_000)
                        .await?;
                    // Lines at the same millisecond as the last one printed came before.
                    let skip = match &last {
                        Some(seen) => lines.iter().position(|l| l == seen).map_or(0, |i| i + 1),
                        None => 0,
                    };
                    print_lines(&lines[skip..]);
                    if let Some(newest) = lines.last() {
                        last = Some(newest.clone());
                    }
                }
            }
        }
        AppCommand::Notify {
            name,
            pattern,
            webhook,
            clear,
        } => {
            let mut rules = client.get_app(name.clone()).await?.notifications;
            let changed = if clear {
                rules.clear();
                true
            } else if let (Some(pattern), Some(webhook)) = (pattern, webhook) {
                rules.push(furrow_protocol::AppNotification { pattern, webhook });
                true
            } else {
                false
            };
            if changed {
                rules = client.set_app_notifications(name.clone(), rules).await?;
            }
            print_table(
                &["MATCH", "WEBHOOK"],
                rules
                    .iter()
                    .map(|rule| vec![rule.pattern.clone(), rule.webhook.clone()]),
            );
        }
        AppCommand::Delete { name } => {
            client.delete_app(name.clone()).await?;
            println!("app {name} deleted; its agents remove it");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, "greeting: hi\nworkers: 2\n").unwrap();
        let given = values(Some(&file), &["workers=4".into()]).unwrap();
        assert_eq!(given["greeting"], "hi");
        assert_eq!(given["workers"], "4");
        let unknown = dir.path().join("config.txt");
        std::fs::write(&unknown, "x").unwrap();
        let error = format!("{:#}", values(Some(&unknown), &[]).unwrap_err());
        assert!(error.contains("cannot tell the format"), "{error}");
        let error = format!("{:#}", values(None, &["novalue".into()]).unwrap_err());
        assert!(error.contains("novalue"), "{error}");
    }
}
