//! Users, roles, tokens and the audit log as clients see them (REST and protocol alike).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a user may do. Each role may do everything the roles after it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    /// Read only: jobs, tasks, agents, queues, job types; no logs, no environment values.
    Viewer,
    /// Submits jobs; controls their own jobs and reads their logs.
    User,
    /// Controls any job, agents, queues, job types and path maps.
    Operator,
    /// Everything: users, tokens of others, join tokens, revoking agents, the audit log.
    Admin,
}

impl UserRole {
    /// Its name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Viewer => "viewer",
            UserRole::User => "user",
            UserRole::Operator => "operator",
            UserRole::Admin => "admin",
        }
    }

    /// Every role, least first.
    pub const ALL: [UserRole; 4] = [
        UserRole::Viewer,
        UserRole::User,
        UserRole::Operator,
        UserRole::Admin,
    ];
}

impl std::fmt::Display for UserRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for UserRole {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        UserRole::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| format!("unknown role {text:?} (known: viewer, user, operator, admin)"))
    }
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserView {
    /// Login name.
    pub name: String,
    /// Role.
    pub role: UserRole,
    /// Whether the user can log in to the dashboard with a password.
    pub has_password: bool,
    /// When the user was added.
    pub created_at: DateTime<Utc>,
}

/// `POST /api/v1/users/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// Login name: letters, digits, `.`, `_`, `-`, `@`; at most 64 characters.
    pub name: String,
    /// Role.
    pub role: UserRole,
    /// Dashboard password (at least 8 characters); without one the user works with API
    /// tokens only.
    #[serde(default)]
    pub password: Option<String>,
}

/// `PATCH /api/v1/users/{name}`: a new role (admins) or a new password (admins, or the
/// user themselves).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// New role.
    #[serde(default)]
    pub role: Option<UserRole>,
    /// New password.
    #[serde(default)]
    pub password: Option<String>,
}

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Acts as its user in the REST API and the protocol (`Authorization: Bearer`).
    Api,
    /// Lets a new agent join the farm.
    Join,
    /// One agent's own credential, given to it when it joined.
    Agent,
    /// A dashboard login (the session cookie).
    Session,
    /// A one-time dashboard login link.
    Login,
}

impl TokenKind {
    /// Its name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Api => "api",
            TokenKind::Join => "join",
            TokenKind::Agent => "agent",
            TokenKind::Session => "session",
            TokenKind::Login => "login",
        }
    }

    /// The kind named `text`.
    pub fn parse(text: &str) -> Option<Self> {
        [
            TokenKind::Api,
            TokenKind::Join,
            TokenKind::Agent,
            TokenKind::Session,
            TokenKind::Login,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// `POST /api/v1/tokens/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// What it is for (free text, shown in lists).
    #[serde(default)]
    pub label: String,
    /// Seconds until it expires; never when not given.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
    /// A farm join token for agents instead of an API token (admins).
    #[serde(default)]
    pub agent: bool,
    /// A one-time dashboard login link for yourself, valid 15 minutes.
    #[serde(default)]
    pub login: bool,
    /// The user an API token acts as (admins; yourself when not given).
    #[serde(default)]
    pub user: Option<String>,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenView {
    /// Its id (not secret; used to revoke it).
    pub id: String,
    /// What it is for.
    pub kind: TokenKind,
    /// The user it acts as, or who created it (join tokens).
    pub user: String,
    /// Its label.
    pub label: String,
    /// The agent it belongs to (agent credentials).
    pub agent_id: Option<Uuid>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token just made: the only time its secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewToken {
    /// The secret, to keep: it is stored hashed and cannot be shown again.
    pub token: String,
    /// The token's record.
    pub view: TokenView,
}

/// `GET /api/v1/me`: who the caller is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhoAmI {
    /// User name.
    pub user: String,
    /// Role.
    pub role: UserRole,
}

/// One audited action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditView {
    /// Its id, increasing.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who (a user name, or `agent:<id>`).
    pub user: String,
    /// The action, e.g. `job.submit`, `user.add`, `token.revoke`.
    pub action: String,
    /// What it acted on, e.g. `job 12`, `user alice`.
    pub target: String,
    /// The address it came from.
    pub peer: String,
}
