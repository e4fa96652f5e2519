//! An app's recurrent tasks (`recurrent:` in its manifest) as ordinary Furrow jobs.
//!
//! Every entry of the current release of every app runs every `every`, first one period
//! after the release became current (or the master started): a job of the `command` type
//! titled `app NAME: ENTRY`, with `app: NAME` so the agent runs it in the app's current
//! release with its environment, and asking for an agent the app is placed on (the app's
//! tags, and its web server kind, which agents offer as software). Jobs show in the job
//! list like any other, submitted by the user `recurrent`. The schedule is kept in memory:
//! after a master restart each entry waits one period again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use furrow_protocol::{JobSubmission, Requirements, UserRole};
use tracing::{info, warn};

use super::actor::{Apps, RecurrentEntry, RecurrentPlan};
use crate::auth::Caller;
use crate::service::Service;

/// How often the plan is read and due entries submitted.
const TICK: Duration = Duration::from_secs(1);

/// The user recurrent jobs are submitted as.
pub const RECURRENT_USER: &str = "recurrent";

/// Submits the apps' recurrent tasks when they are due.
pub struct Recurrent {
    apps: Addr<Apps>,
    service: Service,
    /// When each entry (app, release, name) is next due.
    due: HashMap<(String, u32, String), Instant>,
}

impl Recurrent {
    /// Reads the plan from `apps`, submits through `service`.
    pub fn new(apps: Addr<Apps>, service: Service) -> Self {
        Self {
            apps,
            service,
            due: HashMap::new(),
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let plan = self.apps.send(RecurrentPlan);
        ctx.spawn(plan.into_actor(self).map(|plan, act, ctx| {
            if let Ok(plan) = plan {
                act.run_due(plan, ctx);
            }
        }));
    }

    fn run_due(&mut self, plan: Vec<RecurrentEntry>, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let keys: Vec<(String, u32, String)> = plan
            .iter()
            .map(|e| (e.app.clone(), e.release, e.name.clone()))
            .collect();
        self.due.retain(|key, _| keys.contains(key));
        for entry in plan {
            let key = (entry.app.clone(), entry.release, entry.name.clone());
            let due = *self.due.entry(key.clone()).or_insert(now + entry.every);
            if now < due {
                continue;
            }
            self.due.insert(key, now + entry.every);
            let service = self.service.clone();
            ctx.spawn(
                async move {
                    let caller = Caller::new(RECURRENT_USER, UserRole::Operator, "recurrent");
                    let mut submission = JobSubmission::new(
                        format!("app {}: {}", entry.app, entry.name),
                        serde_json::json!({"command": entry.command, "app": entry.app}).into(),
                        "1",
                    );
                    submission.requirements = Requirements {
                        tags: entry.tags.clone(),
                        software: [(entry.webserver.clone(), "*".to_string())].into(),
                        ..Requirements::default()
                    };
                    match service.submit_job(&caller, submission).await {
                        Ok(job) => {
                            info!(app = %entry.app, task = %entry.name, job = job.id, "recurrent task submitted")
                        }
                        Err(e) => {
                            warn!(app = %entry.app, task = %entry.name, error = %e.message, "recurrent task not submitted")
                        }
                    }
                }
                .into_actor(self),
            );
        }
    }
}

impl Actor for Recurrent {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
    }
}

impl actix::Supervised for Recurrent {}
