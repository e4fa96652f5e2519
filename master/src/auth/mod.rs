//! Who may do what: users with roles, tokens, agent credentials, dashboard sessions and
//! the audit log.
//!
//! - Users have a role ([`UserRole`]): `viewer` reads, `user` also submits and controls
//!   their own jobs, `operator` controls everything on the farm, `admin` also manages
//!   users, tokens and agents' credentials. A password (Argon2id, [`passwords`]) is only
//!   for the dashboard's login form; tools use API tokens.
//! - Tokens ([`tokens`]) are random, shown once, and stored as SHA-256 hashes. Every
//!   kind has a prefix: API tokens `fwa_`, dashboard sessions `fws_`, one-time login links
//!   `fwl_`, farm join tokens `fwj_` and agents' own credentials `fwn_`.
//! - Agents join with a join token; the master then gives each agent its own credential
//!   (bound to its id), which it presents from then on. Revoking it shuts that agent out.
//! - The first start of a master makes an `admin` user and writes its token to
//!   `<data-dir>/admin.token` and a join token to `<data-dir>/join.token` (both 0600).
//!
//! Everything is cached in memory and checked without a database read; changes are
//! committed before they are answered. Every change made through the API is audited.

pub mod passwords;
pub mod secrets;
pub mod tokens;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use actix::Addr;
use furrow_protocol::{
    ApiError, AuditView, NewToken, Page, TokenKind, TokenSpec, TokenView, UserPatch, UserRole,
    UserSpec, UserView, WhoAmI,
};
use tracing::{info, warn};
use uuid::Uuid;

use crate::error::MasterError;
use crate::scheduler::Write;
use crate::store::records::{AuditRow, BulkWrite, TokenRow, UserRow, from_ms, now_ms};
use crate::store::{CommitBatch, Store, StoreReader, commit, commit_all};
pub use secrets::Sealer;

/// Name of the first admin's token file in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// Name of the first join token's file in the data directory.
pub const JOIN_TOKEN_FILE: &str = "join.token";
/// The user made at first start.
pub const FIRST_ADMIN: &str = "admin";
/// How long a dashboard login lasts.
pub const SESSION_MS: i64 = 12 * 3600 * 1000;
/// How long a one-time login link works.
pub const LOGIN_LINK_MS: i64 = 15 * 60 * 1000;
/// Longest token lifetime that can be asked for (ten years).
const MAX_EXPIRY_SECS: u64 = 10 * 365 * 24 * 3600;
/// Longest token label.
const MAX_LABEL_CHARS: usize = 200;
/// Longest user name.
const MAX_NAME_CHARS: usize = 64;
/// Most users.
const MAX_USERS: usize = 10_000;
/// Most live tokens (sessions included).
const MAX_TOKENS: usize = 100_000;
/// Failed dashboard logins one address may make per [`LOGIN_WINDOW_MS`].
pub const LOGIN_FAILURES: u32 = 10;
/// The window of [`LOGIN_FAILURES`].
pub const LOGIN_WINDOW_MS: i64 = 60_000;

/// Who is making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user.
    pub user: String,
    /// Their role.
    pub role: UserRole,
    /// Where the request came from.
    pub peer: String,
    /// The token it came with.
    pub token_id: Option<String>,
}

impl Caller {
    /// A caller with `role` (tests and tools inside the master).
    pub fn new(user: &str, role: UserRole, peer: &str) -> Self {
        Self {
            user: user.to_string(),
            role,
            peer: peer.to_string(),
            token_id: None,
        }
    }

    /// The dashboard's shared feed: it sees what any viewer sees.
    pub fn feed() -> Self {
        Self::new("", UserRole::Viewer, "")
    }

    /// `Ok` when the caller's role is `needed` or higher; a 403 naming both otherwise.
    pub fn require(&self, needed: UserRole, action: &str) -> Result<(), ApiError> {
        if self.role >= needed {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "{action} needs the {needed} role or higher; {} has the {} role",
            self.user, self.role
        )))
    }

    /// Whether the caller may control a job of `owner` and read its logs and environment.
    pub fn owns_or_operates(&self, owner: &str) -> bool {
        self.role >= UserRole::Operator || (self.role == UserRole::User && self.user == owner)
    }

    /// `Ok` when the caller may control job `job_id` of `owner`; a 403 saying why otherwise.
    pub fn check_job(&self, job_id: i64, owner: &str, action: &str) -> Result<(), ApiError> {
        if self.owns_or_operates(owner) {
            return Ok(());
        }
        if self.role < UserRole::User {
            return Err(ApiError::forbidden(format!(
                "{action} needs the user role or higher; {} has the {} role",
                self.user, self.role
            )));
        }
        Err(ApiError::forbidden(format!(
            "{action}: job {job_id} belongs to {owner:?}; the user role acts on its own jobs only"
        )))
    }
}

/// How an agent was let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// With its own credential.
    Known,
    /// With a join token (its id): it gets a credential of its own.
    Joined(String),
}

#[derive(Default)]
struct State {
    users: BTreeMap<String, UserRow>,
    /// By hash.
    tokens: HashMap<String, TokenRow>,
}

impl State {
    fn token_by_id(&self, id: &str) -> Option<&TokenRow> {
        self.tokens.values().find(|t| t.id == id)
    }

    fn live_tokens(&self) -> usize {
        let now = now_ms();
        self.tokens.values().filter(|t| usable(t, now)).count()
    }

    /// The ids of an agent's credentials that are not revoked.
    fn live_agent_tokens(&self, agent_id: Uuid) -> Vec<String> {
        self.tokens
            .values()
            .filter(|t| t.agent_id == Some(agent_id) && t.revoked_at.is_none())
            .map(|t| t.id.clone())
            .collect()
    }

    /// Whether an agent's credentials were revoked and none works.
    fn agent_revoked(&self, agent_id: Uuid, now: i64) -> bool {
        let mine = || {
            self.tokens.values().filter(move |t| {
                t.agent_id == Some(agent_id) && t.kind == TokenKind::Agent.as_str()
            })
        };
        mine().any(|t| t.revoked_at.is_some()) && !mine().any(|t| usable(t, now))
    }

    /// Marks tokens revoked at `now`.
    fn mark_revoked(&mut self, ids: &[String], now: i64) {
        for token in self.tokens.values_mut() {
            if ids.contains(&token.id) {
                token.revoked_at = Some(now);
            }
        }
    }

    fn admins(&self) -> usize {
        self.users
            .values()
            .filter(|u| u.role == UserRole::Admin.as_str())
            .count()
    }
}

fn usable(token: &TokenRow, now: i64) -> bool {
    token.revoked_at.is_none() && token.expires_at.is_none_or(|at| at > now)
}

fn role_of(row: &UserRow) -> UserRole {
    row.role.parse().unwrap_or(UserRole::Viewer)
}

fn user_view(row: &UserRow) -> UserView {
    UserView {
        name: row.name.clone(),
        role: role_of(row),
        has_password: row.password_hash.is_some(),
        created_at: from_ms(row.created_at),
    }
}

fn token_view(row: &TokenRow) -> TokenView {
    TokenView {
        id: row.id.clone(),
        kind: TokenKind::parse(&row.kind).unwrap_or(TokenKind::Api),
        user: row.user.clone(),
        label: row.label.clone(),
        agent_id: row.agent_id,
        created_at: from_ms(row.created_at),
        expires_at: row.expires_at.map(from_ms),
        revoked_at: row.revoked_at.map(from_ms),
    }
}

fn when(ms: i64) -> String {
    from_ms(ms).format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Checks a user name.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("name: 1 to {MAX_NAME_CHARS} characters"));
    }
    if !name.chars().all(ok_char) || name.starts_with('-') {
        return Err(format!(
            "name: {name:?} may hold letters, digits, '.', '_', '-' and '@' only, and not start with '-'"
        ));
    }
    Ok(())
}

/// Users, tokens and the audit log of one master.
pub struct Auth {
    state: RwLock<State>,
    store: Addr<Store>,
    reader: StoreReader,
    /// Serialises changes, which check, commit and then update the cache.
    changing: tokio::sync::Mutex<()>,
    audit_seq: AtomicI64,
    sealer: Sealer,
    /// Failed logins per address: how many, since when.
    failed_logins: std::sync::Mutex<HashMap<String, (u32, i64)>>,
}

impl Auth {
    /// Loads users and tokens, and the secret key of `data_dir`.
    pub async fn load(
        reader: StoreReader,
        store: Addr<Store>,
        data_dir: &Path,
    ) -> Result<Arc<Self>, MasterError> {
        let mut state = State::default();
        for user in reader.users().await? {
            state.users.insert(user.name.clone(), user);
        }
        for token in reader.tokens().await? {
            state.tokens.insert(token.hash.clone(), token);
        }
        let audit_seq = AtomicI64::new(reader.max_audit_id().await?);
        Ok(Arc::new(Self {
            state: RwLock::new(state),
            store,
            reader,
            changing: tokio::sync::Mutex::new(()),
            audit_seq,
            sealer: Sealer::load_or_create(data_dir)?,
            failed_logins: std::sync::Mutex::new(HashMap::new()),
        }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The key that seals secret environment values.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// On a master without users: makes the `admin` user and writes its token to
    /// `<data_dir>/admin.token` and a join token to `<data_dir>/join.token`.
    pub async fn bootstrap(&self, data_dir: &Path) -> Result<(), MasterError> {
        if !self.read().users.is_empty() {
            return Ok(());
        }
        let admin = UserRow {
            name: FIRST_ADMIN.into(),
            role: UserRole::Admin.as_str().into(),
            password_hash: None,
            created_at: now_ms(),
        };
        let (api, api_row) = new_token(
            TokenKind::Api,
            FIRST_ADMIN,
            "admin.token (first start)",
            None,
            None,
        );
        let (join, join_row) = new_token(
            TokenKind::Join,
            FIRST_ADMIN,
            "join.token (first start)",
            None,
            None,
        );
        let stored = async {
            commit(&self.store, BulkWrite::PutUser(admin.clone())).await?;
            commit(&self.store, BulkWrite::PutToken(api_row.clone())).await?;
            commit(&self.store, BulkWrite::PutToken(join_row.clone())).await
        };
        stored.await.map_err(|e| {
            MasterError::Config(format!("cannot store the first admin: {}", e.message))
        })?;
        {
            let mut state = self.write();
            state.users.insert(admin.name.clone(), admin);
            state.tokens.insert(api_row.hash.clone(), api_row);
            state.tokens.insert(join_row.hash.clone(), join_row);
        }
        for (file, token) in [(ADMIN_TOKEN_FILE, api), (JOIN_TOKEN_FILE, join)] {
            let path = data_dir.join(file);
            secrets::write_private(&path, format!("{token}\n").as_bytes())
                .map_err(|source| MasterError::DataDir { path, source })?;
        }
        info!(
            user = FIRST_ADMIN,
            token = %data_dir.join(ADMIN_TOKEN_FILE).display(),
            join_token = %data_dir.join(JOIN_TOKEN_FILE).display(),
            "first start: made the admin user and its token"
        );
        Ok(())
    }

    /// The caller a token (API or session) stands for, or why it is refused.
    pub fn authenticate(&self, token: &str, peer: &str) -> Result<Caller, String> {
        tokens::check_shape(token)?;
        self.authenticate_hash(&tokens::hash(token), peer)
    }

    /// Like [`Auth::authenticate`], for a token known by its hash: a tool's connection
    /// checks its token again before each request, so a revoked token or a changed role
    /// takes effect at once.
    pub fn authenticate_hash(&self, hash: &str, peer: &str) -> Result<Caller, String> {
        let state = self.read();
        let row = state
            .tokens
            .get(hash)
            .ok_or("token: unknown to this master (mistyped, or from another farm)")?;
        let kind = TokenKind::parse(&row.kind).unwrap_or(TokenKind::Api);
        if !matches!(kind, TokenKind::Api | TokenKind::Session) {
            return Err(format!(
                "token: a {} token cannot be used for requests",
                kind.as_str()
            ));
        }
        if let Some(at) = row.revoked_at {
            return Err(format!("token {}: revoked at {}", row.id, when(at)));
        }
        if let Some(at) = row.expires_at.filter(|at| *at <= now_ms()) {
            return Err(format!("token {}: expired at {}", row.id, when(at)));
        }
        let user = state
            .users
            .get(&row.user)
            .ok_or_else(|| format!("token {}: its user {:?} was removed", row.id, row.user))?;
        Ok(Caller {
            user: user.name.clone(),
            role: role_of(user),
            peer: peer.to_string(),
            token_id: Some(row.id.clone()),
        })
    }

    /// Whether an agent presenting `credentials` (its own credential and/or a join token,
    /// separated by a space) may connect as `agent_id`, or why not.
    pub fn admit_agent(
        &self,
        credentials: Option<&str>,
        agent_id: Uuid,
    ) -> Result<Admission, String> {
        let presented: Vec<&str> = credentials
            .unwrap_or("")
            .split_whitespace()
            .take(2)
            .collect();
        let state = self.read();
        let now = now_ms();
        let mut refusal = None;
        for token in &presented {
            if let Err(e) = tokens::check_shape(token) {
                refusal = Some(format!("join token or agent credential: {e}"));
                continue;
            }
            let Some(row) = state.tokens.get(&tokens::hash(token)) else {
                refusal.get_or_insert_with(|| {
                    "join token or agent credential: unknown to this master".to_string()
                });
                continue;
            };
            match TokenKind::parse(&row.kind) {
                Some(TokenKind::Agent) => {
                    if row.agent_id != Some(agent_id) {
                        return Err(format!(
                            "this credential belongs to agent {}, not {agent_id}",
                            row.agent_id.map(|a| a.to_string()).unwrap_or_default()
                        ));
                    }
                    if let Some(at) = row.revoked_at {
                        return Err(format!(
                            "agent {agent_id} was revoked at {}; an admin must remove it (furrow agent-ctl remove {agent_id}) before it can join again",
                            when(at)
                        ));
                    }
                    return Ok(Admission::Known);
                }
                Some(TokenKind::Join) => {
                    if let Some(at) = row.revoked_at {
                        refusal = Some(format!("join token {}: revoked at {}", row.id, when(at)));
                        continue;
                    }
                    if let Some(at) = row.expires_at.filter(|at| *at <= now) {
                        refusal = Some(format!("join token {}: expired at {}", row.id, when(at)));
                        continue;
                    }
                    if state.agent_revoked(agent_id, now) {
                        return Err(format!(
                            "agent {agent_id} was revoked; an admin must remove it (furrow agent-ctl remove {agent_id}) before it can join again"
                        ));
                    }
                    return Ok(Admission::Joined(row.id.clone()));
                }
                _ => {
                    refusal = Some(format!(
                        "a {} token is not a join token; create one with `furrow token create --agent`",
                        row.kind
                    ));
                }
            }
        }
        Err(refusal.unwrap_or_else(|| {
            "this master admits agents with a farm join token: create one with `furrow token create --agent` \
             (a local farm's is in <data-dir>/join.token) and give it to the agent with --join-token-file or FURROW_JOIN_TOKEN"
                .to_string()
        }))
    }

    /// Makes the credential of an agent that joined with join token `join_id`; earlier
    /// credentials of that agent stop working.
    pub async fn issue_agent_credential(
        &self,
        agent_id: Uuid,
        join_id: &str,
    ) -> Result<String, ApiError> {
        // Not under `changing`: only this agent's rows change (one connection per agent
        // id), and agents joining at once share one group commit instead of queueing.
        let creator = self
            .read()
            .token_by_id(join_id)
            .map(|t| t.user.clone())
            .unwrap_or_default();
        let (token, row) = new_token(
            TokenKind::Agent,
            &creator,
            &format!("agent {agent_id}, joined with {join_id}"),
            Some(agent_id),
            None,
        );
        let now = now_ms();
        let old = self.read().live_agent_tokens(agent_id);
        let mut writes = Vec::new();
        if !old.is_empty() {
            writes.push(BulkWrite::RevokeTokens {
                ids: old.clone(),
                at: now,
            });
        }
        writes.push(BulkWrite::PutToken(row.clone()));
        commit_all(&self.store, writes).await?;
        let mut state = self.write();
        state.mark_revoked(&old, now);
        state.tokens.insert(row.hash.clone(), row);
        Ok(token)
    }

    /// Revokes an agent's credentials; `false` when it has none.
    pub async fn revoke_agent(&self, caller: &Caller, agent_id: Uuid) -> Result<bool, ApiError> {
        caller.require(UserRole::Admin, "revoking an agent")?;
        let _changing = self.changing.lock().await;
        let ids = self.read().live_agent_tokens(agent_id);
        if ids.is_empty() {
            return Ok(false);
        }
        self.revoke_ids(ids).await?;
        self.record(caller, "agent.revoke", &format!("agent {agent_id}"));
        Ok(true)
    }

    /// Forgets the credentials of a removed agent, so it may join again (the store forgets
    /// them with the agent's row).
    pub async fn forget_agent(&self, agent_id: Uuid) {
        let _changing = self.changing.lock().await;
        let mut state = self.write();
        for token in state.tokens.values_mut() {
            if token.agent_id == Some(agent_id) {
                token.agent_id = None;
            }
        }
    }

    async fn revoke_ids(&self, ids: Vec<String>) -> Result<(), ApiError> {
        let now = now_ms();
        commit(
            &self.store,
            BulkWrite::RevokeTokens {
                ids: ids.clone(),
                at: now,
            },
        )
        .await?;
        self.write().mark_revoked(&ids, now);
        Ok(())
    }

    /// Who the caller is.
    pub fn who_am_i(&self, caller: &Caller) -> WhoAmI {
        WhoAmI {
            user: caller.user.clone(),
            role: caller.role,
        }
    }

    /// Every user (admins).
    pub fn list_users(&self, caller: &Caller) -> Result<Vec<UserView>, ApiError> {
        caller.require(UserRole::Admin, "listing users")?;
        Ok(self.read().users.values().map(user_view).collect())
    }

    /// Adds a user (admins).
    pub async fn add_user(&self, caller: &Caller, spec: UserSpec) -> Result<UserView, ApiError> {
        caller.require(UserRole::Admin, "adding users")?;
        check_name(&spec.name).map_err(ApiError::bad_request)?;
        let password_hash = match spec.password {
            Some(password) => Some(hash_password(password).await?),
            None => None,
        };
        let _changing = self.changing.lock().await;
        {
            let state = self.read();
            if state.users.contains_key(&spec.name) {
                return Err(ApiError::conflict(format!("user {:?} exists", spec.name)));
            }
            if state.users.len() >= MAX_USERS {
                return Err(ApiError::conflict(format!(
                    "there are {MAX_USERS} users already"
                )));
            }
        }
        let row = UserRow {
            name: spec.name.clone(),
            role: spec.role.as_str().into(),
            password_hash,
            created_at: now_ms(),
        };
        commit(&self.store, BulkWrite::PutUser(row.clone())).await?;
        self.write().users.insert(row.name.clone(), row.clone());
        self.record(
            caller,
            "user.add",
            &format!("user {} ({})", row.name, row.role),
        );
        Ok(user_view(&row))
    }

    /// Changes a user's role (admins) or password (admins, or the user themselves).
    pub async fn edit_user(
        &self,
        caller: &Caller,
        name: &str,
        patch: UserPatch,
    ) -> Result<UserView, ApiError> {
        if patch.role.is_some() {
            caller.require(UserRole::Admin, "changing a role")?;
        } else if caller.user != name {
            caller.require(UserRole::Admin, "changing another user's password")?;
        }
        let password_hash = match patch.password {
            Some(password) => Some(hash_password(password).await?),
            None => None,
        };
        let _changing = self.changing.lock().await;
        let mut row = {
            let state = self.read();
            let row = state
                .users
                .get(name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(format!("user {name:?} not found")))?;
            if let Some(role) = patch.role
                && role != UserRole::Admin
                && role_of(&row) == UserRole::Admin
                && state.admins() == 1
            {
                return Err(ApiError::conflict(format!(
                    "{name} is the last admin; make another admin first"
                )));
            }
            row
        };
        if let Some(role) = patch.role {
            row.role = role.as_str().into();
        }
        if password_hash.is_some() {
            row.password_hash = password_hash;
        }
        commit(&self.store, BulkWrite::PutUser(row.clone())).await?;
        self.write().users.insert(row.name.clone(), row.clone());
        let what = match patch.role {
            Some(role) => format!("user {name} (role {role})"),
            None => format!("user {name} (password)"),
        };
        self.record(caller, "user.edit", &what);
        Ok(user_view(&row))
    }

    /// Removes a user and revokes their tokens (admins).
    pub async fn remove_user(&self, caller: &Caller, name: &str) -> Result<(), ApiError> {
        caller.require(UserRole::Admin, "removing users")?;
        let _changing = self.changing.lock().await;
        {
            let state = self.read();
            let row = state
                .users
                .get(name)
                .ok_or_else(|| ApiError::not_found(format!("user {name:?} not found")))?;
            if role_of(row) == UserRole::Admin && state.admins() == 1 {
                return Err(ApiError::conflict(format!(
                    "{name} is the last admin; make another admin first"
                )));
            }
        }
        let now = now_ms();
        commit(
            &self.store,
            BulkWrite::DeleteUser {
                name: name.to_string(),
                at: now,
            },
        )
        .await?;
        {
            let mut state = self.write();
            state.users.remove(name);
            for t in state.tokens.values_mut() {
                if t.user == name && t.revoked_at.is_none() {
                    t.revoked_at = Some(now);
                }
            }
        }
        self.record(caller, "user.remove", &format!("user {name}"));
        Ok(())
    }

    /// The caller's tokens, or every token (`all`, admins); newest last.
    pub fn list_tokens(&self, caller: &Caller, all: bool) -> Result<Vec<TokenView>, ApiError> {
        if all {
            caller.require(UserRole::Admin, "listing every user's tokens")?;
        }
        let state = self.read();
        let mut rows: Vec<&TokenRow> = state
            .tokens
            .values()
            .filter(|t| {
                all || (t.user == caller.user
                    && matches!(
                        TokenKind::parse(&t.kind),
                        Some(TokenKind::Api | TokenKind::Session)
                    ))
            })
            .collect();
        rows.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(rows.into_iter().map(token_view).collect())
    }

    /// Makes a token (see [`TokenSpec`]); its secret is in the answer only.
    pub async fn create_token(
        &self,
        caller: &Caller,
        spec: TokenSpec,
    ) -> Result<NewToken, ApiError> {
        if spec.label.chars().count() > MAX_LABEL_CHARS {
            return Err(ApiError::bad_request(format!(
                "label: at most {MAX_LABEL_CHARS} characters"
            )));
        }
        if spec.agent && spec.login {
            return Err(ApiError::bad_request(
                "agent, login: a token is one or the other",
            ));
        }
        let expires_in = match spec.expires_in_secs {
            Some(0) => return Err(ApiError::bad_request("expires_in_secs: must be at least 1")),
            Some(secs) if secs > MAX_EXPIRY_SECS => {
                return Err(ApiError::bad_request(format!(
                    "expires_in_secs: at most {MAX_EXPIRY_SECS} (ten years)"
                )));
            }
            other => other.map(|secs| (secs as i64).saturating_mul(1000)),
        };
        let user = spec.user.clone().unwrap_or_else(|| caller.user.clone());
        let kind = if spec.agent {
            caller.require(UserRole::Admin, "making join tokens")?;
            TokenKind::Join
        } else if spec.login {
            TokenKind::Login
        } else {
            TokenKind::Api
        };
        if user != caller.user {
            caller.require(UserRole::Admin, "making another user's token")?;
        }
        if !self.read().users.contains_key(&user) {
            return Err(ApiError::not_found(format!("user: {user:?} not found")));
        }
        let expires = match kind {
            TokenKind::Login => Some(expires_in.unwrap_or(LOGIN_LINK_MS).min(LOGIN_LINK_MS)),
            _ => expires_in,
        };
        let _changing = self.changing.lock().await;
        if self.read().live_tokens() >= MAX_TOKENS {
            return Err(ApiError::conflict(format!(
                "there are {MAX_TOKENS} live tokens already; revoke some"
            )));
        }
        let (token, row) = new_token(kind, &user, &spec.label, None, expires);
        commit(&self.store, BulkWrite::PutToken(row.clone())).await?;
        self.write().tokens.insert(row.hash.clone(), row.clone());
        self.record(
            caller,
            "token.create",
            &format!("{} token {} of {user}", kind.as_str(), row.id),
        );
        Ok(NewToken {
            token,
            view: token_view(&row),
        })
    }

    /// Revokes a token: the caller's own, or anyone's (admins).
    pub async fn revoke_token(&self, caller: &Caller, id: &str) -> Result<(), ApiError> {
        let _changing = self.changing.lock().await;
        let row = self
            .read()
            .token_by_id(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("token {id:?} not found")))?;
        let own = row.user == caller.user
            && matches!(
                TokenKind::parse(&row.kind),
                Some(TokenKind::Api | TokenKind::Session | TokenKind::Login)
            );
        if !own {
            caller.require(UserRole::Admin, "revoking another user's token")?;
        }
        if row.revoked_at.is_none() {
            self.revoke_ids(vec![row.id.clone()]).await?;
            self.record(
                caller,
                "token.revoke",
                &format!("{} token {} of {}", row.kind, row.id, row.user),
            );
        }
        Ok(())
    }

    /// A dashboard session for `name` and `password`, or a 401 that does not say which
    /// of the two was wrong.
    pub async fn login(
        &self,
        name: &str,
        password: String,
        peer: &str,
    ) -> Result<String, ApiError> {
        self.check_login_rate(peer)?;
        let stored = self
            .read()
            .users
            .get(name)
            .and_then(|u| u.password_hash.clone());
        let ok = match stored {
            Some(stored) => {
                tokio::task::spawn_blocking(move || passwords::verify(&password, &stored))
                    .await
                    .unwrap_or(false)
            }
            None => {
                // As slow as a real check, so timing does not tell which users exist.
                let _ = tokio::task::spawn_blocking(move || passwords::hash(&password)).await;
                false
            }
        };
        if !ok {
            warn!(user = ?name, peer, "dashboard login refused");
            self.note_failed_login(peer);
            return Err(ApiError::unauthorized("login: wrong user name or password"));
        }
        self.failed_logins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(peer);
        let caller = Caller::new(name, UserRole::Viewer, peer);
        let token = self.session(name).await?;
        self.record(&caller, "session.login", &format!("user {name}"));
        Ok(token)
    }

    /// Refuses a login from an address that failed [`LOGIN_FAILURES`] times within the
    /// last [`LOGIN_WINDOW_MS`], so passwords cannot be guessed at speed.
    fn check_login_rate(&self, peer: &str) -> Result<(), ApiError> {
        let failures = self.failed_logins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((count, since)) = failures.get(peer) {
            let left = since + LOGIN_WINDOW_MS - now_ms();
            if *count >= LOGIN_FAILURES && left > 0 {
                return Err(ApiError::unauthorized(format!(
                    "login: {count} failed attempts from this address; try again in {} s",
                    left / 1000 + 1
                )));
            }
        }
        Ok(())
    }

    fn note_failed_login(&self, peer: &str) {
        let now = now_ms();
        let mut failures = self.failed_logins.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= 10_000 {
            failures.retain(|_, (_, since)| now - *since < LOGIN_WINDOW_MS);
        }
        let entry = failures.entry(peer.to_string()).or_insert((0, now));
        if now - entry.1 >= LOGIN_WINDOW_MS {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    /// Trades a one-time login link for a session; the link stops working.
    pub async fn redeem_login_link(&self, link: &str, peer: &str) -> Result<String, ApiError> {
        tokens::check_shape(link).map_err(ApiError::unauthorized)?;
        let row = {
            let state = self.read();
            state.tokens.get(&tokens::hash(link)).cloned()
        };
        let row = row
            .filter(|r| r.kind == TokenKind::Login.as_str())
            .ok_or_else(|| {
                ApiError::unauthorized("login link: unknown (mistyped, or from another farm)")
            })?;
        if let Some(at) = row.revoked_at {
            return Err(ApiError::unauthorized(format!(
                "login link: already used at {}",
                when(at)
            )));
        }
        if let Some(at) = row.expires_at.filter(|at| *at <= now_ms()) {
            return Err(ApiError::unauthorized(format!(
                "login link: expired at {}",
                when(at)
            )));
        }
        {
            let _changing = self.changing.lock().await;
            self.revoke_ids(vec![row.id.clone()]).await?;
        }
        let token = self.session(&row.user).await?;
        self.record(
            &Caller::new(&row.user, UserRole::Viewer, peer),
            "session.login",
            &format!("user {} (link {})", row.user, row.id),
        );
        Ok(token)
    }

    async fn session(&self, user: &str) -> Result<String, ApiError> {
        let _changing = self.changing.lock().await;
        let (token, row) = new_token(
            TokenKind::Session,
            user,
            "dashboard",
            None,
            Some(SESSION_MS),
        );
        commit(&self.store, BulkWrite::PutToken(row.clone())).await?;
        self.write().tokens.insert(row.hash.clone(), row);
        Ok(token)
    }

    /// Ends the session of `token` (a no-op for anything else).
    pub async fn logout(&self, token: &str) -> Result<(), ApiError> {
        if tokens::check_shape(token).is_err() {
            return Ok(());
        }
        let row = self.read().tokens.get(&tokens::hash(token)).cloned();
        if let Some(row) =
            row.filter(|r| r.kind == TokenKind::Session.as_str() && r.revoked_at.is_none())
        {
            let _changing = self.changing.lock().await;
            self.revoke_ids(vec![row.id]).await?;
        }
        Ok(())
    }

    /// Records an action in the audit log (committed with the next group commit).
    pub fn record(&self, caller: &Caller, action: &str, target: &str) {
        let row = AuditRow {
            id: self.audit_seq.fetch_add(1, Ordering::Relaxed) + 1,
            at: now_ms(),
            user: caller.user.clone(),
            action: action.to_string(),
            target: target.to_string(),
            peer: caller.peer.clone(),
        };
        self.store.do_send(CommitBatch {
            writes: vec![Write::Bulk(BulkWrite::Audit(row))],
            notify: None,
        });
    }

    /// A page of the audit log, newest first (admins).
    pub async fn audit(
        &self,
        caller: &Caller,
        limit: u64,
        offset: u64,
    ) -> Result<Page<AuditView>, ApiError> {
        caller.require(UserRole::Admin, "reading the audit log")?;
        crate::service::check_page(limit, offset)?;
        let (rows, total) = self
            .reader
            .audit(limit, offset)
            .await
            .map_err(|e| ApiError::unavailable(format!("the database is unavailable: {e}")))?;
        Ok(Page {
            items: rows
                .into_iter()
                .map(|r| AuditView {
                    id: r.id,
                    at: from_ms(r.at),
                    user: r.user,
                    action: r.action,
                    target: r.target,
                    peer: r.peer,
                })
                .collect(),
            total,
        })
    }
}

async fn hash_password(password: String) -> Result<String, ApiError> {
    passwords::check(&password).map_err(ApiError::bad_request)?;
    tokio::task::spawn_blocking(move || passwords::hash(&password))
        .await
        .map_err(|e| ApiError::internal(format!("password hashing failed: {e}")))?
        .map_err(ApiError::internal)
}

fn new_token(
    kind: TokenKind,
    user: &str,
    label: &str,
    agent_id: Option<Uuid>,
    expires_in_ms: Option<i64>,
) -> (String, TokenRow) {
    let token = tokens::generate(kind);
    let hash = tokens::hash(&token);
    let now = now_ms();
    let row = TokenRow {
        id: tokens::id_of(&hash),
        hash,
        kind: kind.as_str().into(),
        user: user.to_string(),
        label: label.to_string(),
        agent_id,
        created_at: now,
        expires_at: expires_in_ms.map(|ms| now.saturating_add(ms)),
        revoked_at: None,
    };
    (token, row)
}
