//! Notification rules of apps: output lines matching a rule's regular expression are
//! posted as JSON to its webhook, at most once per rule every [`NOTIFY_EVERY`] (the post
//! says how many matches it stands for). Posts leave from a thread of their own through
//! a bounded queue, so a slow webhook never holds the master up; when the queue is full,
//! posts are dropped and the drop is logged.

use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use furrow_protocol::AppNotification;
use regex::Regex;
use serde_json::Value;
use tracing::{debug, warn};

/// Shortest time between two posts of one rule.
pub const NOTIFY_EVERY: Duration = Duration::from_secs(10);

/// Most rules one app may have.
pub const MAX_RULES: usize = 20;

/// Posts waiting to leave, at most.
const QUEUE: usize = 256;

/// How long a post may take.
const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// A rule with its compiled pattern and its rate limit.
#[derive(Debug)]
pub struct Rule {
    /// As the user gave it.
    pub spec: AppNotification,
    pattern: Regex,
    last_post: Option<Instant>,
    suppressed: u64,
}

impl Rule {
    /// Whether `text` should be posted now; `Some(suppressed)` with the matches held back
    /// since the last post.
    pub fn matches(&mut self, text: &str, now: Instant) -> Option<u64> {
        if !self.pattern.is_match(text) {
            return None;
        }
        if self
            .last_post
            .is_some_and(|last| now.duration_since(last) < NOTIFY_EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.last_post = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Checks rules as a user gives them; every problem is named by its index.
pub fn compile(rules: &[AppNotification]) -> Result<Vec<Rule>, String> {
    if rules.len() > MAX_RULES {
        return Err(format!("at most {MAX_RULES} rules, got {}", rules.len()));
    }
    let mut problems = Vec::new();
    let mut compiled = Vec::new();
    for (index, spec) in rules.iter().enumerate() {
        let pattern = regex::RegexBuilder::new(&spec.pattern)
            .size_limit(1 << 20)
            .build();
        let url_ok = (spec.webhook.starts_with("http://") || spec.webhook.starts_with("https://"))
            && spec.webhook.len() <= 2048
            && !spec.webhook.chars().any(char::is_whitespace);
        if !url_ok {
            problems.push(format!(
                "[{index}].webhook: must be an http:// or https:// URL, got {:?}",
                spec.webhook
            ));
        }
        match pattern {
            Ok(pattern) if url_ok => compiled.push(Rule {
                spec: spec.clone(),
                pattern,
                last_post: None,
                suppressed: 0,
            }),
            Ok(_) => {}
            Err(e) => problems.push(format!("[{index}].pattern: not a regular expression: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(compiled)
    } else {
        Err(problems.join("; "))
    }
}

/// One post.
struct Post {
    url: String,
    body: Value,
}

/// Sends posts from a thread of its own.
#[derive(Debug, Clone)]
pub struct Notifier {
    queue: SyncSender<Post>,
}

impl std::fmt::Debug for Post {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Post").field("url", &self.url).finish()
    }
}

impl Notifier {
    /// Starts the sending thread; it ends when the last `Notifier` is dropped.
    pub fn start() -> std::io::Result<Self> {
        let (queue, posts) = sync_channel::<Post>(QUEUE);
        std::thread::Builder::new()
            .name("app-webhooks".into())
            .spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(POST_TIMEOUT))
                    .http_status_as_error(false)
                    .build()
                    .into();
                for post in posts {
                    match agent.post(&post.url).send_json(&post.body) {
                        Ok(response) if response.status().is_success() => {
                            debug!(url = %post.url, "notification posted");
                        }
                        Ok(response) => {
                            warn!(url = %post.url, status = response.status().as_u16(), "webhook refused a notification");
                        }
                        Err(e) => warn!(url = %post.url, error = %e, "cannot post a notification"),
                    }
                }
            })?;
        Ok(Self { queue })
    }

    /// Queues a post; false when the queue is full (the post is dropped).
    pub fn post(&self, url: &str, body: Value) -> bool {
        match self.queue.try_send(Post {
            url: url.to_string(),
            body,
        }) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                warn!(url, "notification queue full; dropping a notification");
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, webhook: &str) -> AppNotification {
        AppNotification {
            pattern: pattern.into(),
            webhook: webhook.into(),
        }
    }

    #[test]
    fn rules_are_checked_all_at_once_and_rate_limited() {
        let error = compile(&[rule("(", "ftp://x"), rule("ok", "http://127.0.0.1/h")]).unwrap_err();
        assert!(
            error.contains("[0].webhook") && error.contains("[0].pattern"),
            "{error}"
        );
        let mut rules = compile(&[rule("^error", "http://127.0.0.1/h")]).unwrap();
        let now = Instant::now();
        assert_eq!(rules[0].matches("fine", now), None);
        assert_eq!(rules[0].matches("error: a", now), Some(0));
        assert_eq!(
            rules[0].matches("error: b", now + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            rules[0].matches("error: c", now + Duration::from_secs(2)),
            None
        );
        assert_eq!(rules[0].matches("error: d", now + NOTIFY_EVERY), Some(2));
    }
}
