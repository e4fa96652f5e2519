//! Access commands: `furrow user`, `furrow token`, `furrow audit` and `furrow whoami`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use furrow_protocol::{TokenSpec, TokenView, UserPatch, UserRole, UserSpec};

use crate::commands::{ListArgs, ServerArg};

/// `furrow user`.
#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(subcommand)]
    command: UserCommand,
}

/// What to do with users.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List users (admins).
    List,
    /// Add a user (admins); asks for a dashboard password unless --no-password.
    Add {
        /// Login name.
        name: String,
        /// viewer, user, operator or admin.
        #[arg(long, default_value = "user", value_parser = parse_role)]
        role: UserRole,
        /// Read the password from standard input (one line) instead of asking.
        #[arg(long)]
        password_stdin: bool,
        /// No dashboard password: the user works with API tokens only.
        #[arg(long, conflicts_with = "password_stdin")]
        no_password: bool,
    },
    /// Set a password: your own, or another user's (admins).
    Passwd {
        /// The user (default: yourself).
        name: Option<String>,
        /// Read the password from standard input (one line) instead of asking.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's role (admins).
    Role {
        /// The user.
        name: String,
        /// viewer, user, operator or admin.
        #[arg(value_parser = parse_role)]
        role: UserRole,
    },
    /// Remove a user and revoke their tokens (admins).
    Remove {
        /// The user.
        name: String,
    },
}

fn parse_role(text: &str) -> Result<UserRole, String> {
    text.parse()
}

/// `furrow token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    server: ServerArg,
    #[command(subcommand)]
    command: TokenCommand,
}

/// What to do with tokens.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it (shown this once).
    Create {
        /// What it is for.
        #[arg(long, default_value = "")]
        label: String,
        /// Lifetime: `90m`, `12h`, `30d` or seconds (default: no expiry).
        #[arg(long, value_parser = parse_lifetime)]
        expires: Option<u64>,
        /// A farm join token for agents (admins).
        #[arg(long, conflicts_with = "login")]
        agent: bool,
        /// A one-time dashboard login link, valid 15 minutes.
        #[arg(long)]
        login: bool,
        /// The user it acts as (admins; default: yourself).
        #[arg(long)]
        user: Option<String>,
    },
    /// List your tokens, or everyone's with --all (admins).
    List {
        /// Every user's tokens, join tokens and agents' credentials.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id.
    Revoke {
        /// The token's id (from `furrow token list`).
        id: String,
    },
}

/// `90m`, `12h`, `30d`, `2w` or plain seconds.
pub fn parse_lifetime(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number with s, m, h, d or w"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (s, m, h, d or w)"
            ));
        }
    };
    number
        .checked_mul(unit)
        .filter(|secs| *secs > 0)
        .ok_or_else(|| format!("{text:?}: must be positive and not absurdly long"))
}

/// `furrow whoami`.
#[derive(Debug, Args)]
pub struct WhoAmIArgs {
    #[command(flatten)]
    server: ServerArg,
}

/// Reads a password: a line of standard input, or asked twice on the terminal without echo.
fn read_password(from_stdin: bool) -> Result<String> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    let first = prompt_hidden("new password: ")?;
    let second = prompt_hidden("again: ")?;
    if first != second {
        bail!("the two passwords differ");
    }
    Ok(first)
}

/// Asks on the terminal with echo off.
fn prompt_hidden(prompt: &str) -> Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).context("cannot read the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("cannot turn echo off")?;
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    read.context("cannot read the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

pub async fn user(args: UserArgs) -> Result<i32> {
    let client = args.server.connect().await?;
    match args.command {
        UserCommand::List => {
            let users = client.users().await?;
            println!("{:<24} {:<9} {:<9} CREATED", "NAME", "ROLE", "PASSWORD");
            for user in users {
                println!(
                    "{:<24} {:<9} {:<9} {}",
                    user.name,
                    user.role.as_str(),
                    if user.has_password { "yes" } else { "no" },
                    user.created_at.format("%Y-%m-%d %H:%M")
                );
            }
        }
        UserCommand::Add {
            name,
            role,
            password_stdin,
            no_password,
        } => {
            let password = if no_password {
                None
            } else {
                Some(read_password(password_stdin)?)
            };
            let user = client
                .add_user(UserSpec {
                    name,
                    role,
                    password,
                })
                .await?;
            println!("user {} added ({})", user.name, user.role.as_str());
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let name = match name {
                Some(name) => name,
                None => client.who_am_i().await?.user,
            };
            let password = read_password(password_stdin)?;
            client
                .edit_user(
                    name.clone(),
                    UserPatch {
                        role: None,
                        password: Some(password),
                    },
                )
                .await?;
            println!("password of {name} changed");
        }
        UserCommand::Role { name, role } => {
            let user = client
                .edit_user(
                    name,
                    UserPatch {
                        role: Some(role),
                        password: None,
                    },
                )
                .await?;
            println!("user {} is now {}", user.name, user.role.as_str());
        }
        UserCommand::Remove { name } => {
            client.remove_user(name.clone()).await?;
            println!("user {name} removed; their tokens are revoked");
        }
    }
    Ok(0)
}

fn token_state(token: &TokenView) -> String {
    let now = chrono::Utc::now();
    match (token.revoked_at, token.expires_at) {
        (Some(at), _) => format!("revoked {}", at.format("%Y-%m-%d %H:%M")),
        (None, Some(at)) if at <= now => format!("expired {}", at.format("%Y-%m-%d %H:%M")),
        (None, Some(at)) => format!("until {}", at.format("%Y-%m-%d %H:%M")),
        (None, None) => "live".into(),
    }
}

pub async fn token(args: TokenArgs) -> Result<i32> {
    let client = args.server.connect().await?;
    match args.command {
        TokenCommand::Create {
            label,
            expires,
            agent,
            login,
            user,
        } => {
            let made = client
                .create_token(TokenSpec {
                    label,
                    expires_in_secs: expires,
                    agent,
                    login,
                    user,
                })
                .await?;
            // The secret alone on stdout, for scripts; the rest on stderr.
            println!("{}", made.token);
            let what = if agent {
                "join token: give it to agents with --join-token-file FILE or FURROW_JOIN_TOKEN"
            } else if login {
                "one-time login link: open http://<dashboard>/login?token=<it> within 15 minutes"
            } else {
                "API token: use it with --token, FURROW_TOKEN or ~/.config/furrow/token, or as `Authorization: Bearer <it>`"
            };
            eprintln!(
                "{what}\nid {} (to revoke it: furrow token revoke {}); it is not shown again",
                made.view.id, made.view.id
            );
        }
        TokenCommand::List { all, json } => {
            let tokens = client.tokens(all).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
                return Ok(0);
            }
            println!(
                "{:<16} {:<7} {:<16} {:<22} {:<16} LABEL",
                "ID", "KIND", "USER", "STATE", "CREATED"
            );
            for token in tokens {
                println!(
                    "{:<16} {:<7} {:<16} {:<22} {:<16} {}",
                    token.id,
                    token.kind.as_str(),
                    token.user,
                    token_state(&token),
                    token.created_at.format("%Y-%m-%d %H:%M"),
                    token.label
                );
            }
        }
        TokenCommand::Revoke { id } => {
            client.revoke_token(id.clone()).await?;
            println!("token {id} revoked");
        }
    }
    Ok(0)
}

/// `furrow audit`: newest first.
pub async fn audit(args: ListArgs) -> Result<i32> {
    let client = args.server.connect().await?;
    let page = client.audit(args.limit, args.offset).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(0);
    }
    println!(
        "{:<20} {:<16} {:<16} {:<16} TARGET",
        "WHEN", "USER", "ACTION", "FROM"
    );
    for entry in &page.items {
        println!(
            "{:<20} {:<16} {:<16} {:<16} {}",
            entry.at.format("%Y-%m-%d %H:%M:%S"),
            entry.user,
            entry.action,
            entry.peer,
            entry.target
        );
    }
    if page.total > page.items.len() as u64 + args.offset {
        eprintln!(
            "{} of {} entries; see more with --offset {}",
            page.items.len(),
            page.total,
            args.offset + page.items.len() as u64
        );
    }
    Ok(0)
}

pub async fn whoami(args: WhoAmIArgs) -> Result<i32> {
    let client = args.server.connect().await?;
    let me = client.who_am_i().await?;
    println!("{} ({})", me.user, me.role.as_str());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("90m"), Ok(5400));
        assert_eq!(parse_lifetime("30d"), Ok(30 * 86_400));
        assert_eq!(parse_lifetime("3600"), Ok(3600));
        assert!(parse_lifetime("0").is_err());
        assert!(parse_lifetime("5y").unwrap_err().contains("unknown unit"));
        assert!(parse_lifetime("soon").is_err());
    }
}
