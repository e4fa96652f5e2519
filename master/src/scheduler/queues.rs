//! The queue tree: every queue by path (`""` is the root, `studio/lighting` a queue two
//! levels down), with the priority, weight and agent limits that dispatch reads.

use std::collections::BTreeMap;

use furrow_protocol::{QueuePatch, QueueSpec};

/// Longest queue path.
const MAX_PATH: usize = 255;
/// Deepest queue.
const MAX_DEPTH: usize = 8;

/// One queue's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// Path without leading slash; `""` for the root.
    pub path: String,
    /// Priority among its siblings (higher first).
    pub priority: i32,
    /// Weight among its siblings.
    pub weight: u32,
    /// Agents it gets before queues at their minimum.
    pub min_agents: u32,
    /// Most agents at once.
    pub max_agents: Option<u32>,
}

impl Queue {
    /// The root queue with its defaults.
    pub fn root() -> Self {
        Self {
            path: String::new(),
            priority: 0,
            weight: 1,
            min_agents: 0,
            max_agents: None,
        }
    }
}

/// A path as users write it (`/studio/lighting/`, `studio/lighting`, `/` for the root),
/// in its stored form; the error says what is wrong.
pub fn normalize(path: &str) -> Result<String, String> {
    let trimmed = path.trim().trim_matches('/');
    if trimmed.len() > MAX_PATH {
        return Err(format!("a queue path is at most {MAX_PATH} characters"));
    }
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let parts: Vec<&str> = trimmed.split('/').collect();
    if parts.len() > MAX_DEPTH {
        return Err(format!("queues nest at most {MAX_DEPTH} levels deep"));
    }
    for part in &parts {
        check_name(part)?;
    }
    Ok(parts.join("/"))
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || name.starts_with('.')
    {
        return Err(format!(
            "{name:?} is not a queue name (letters, digits, '-', '_' and '.', not starting with '.', at most 64)"
        ));
    }
    Ok(())
}

/// The path as shown to users: `/` for the root, `/studio/lighting` below it.
pub fn display(path: &str) -> String {
    format!("/{path}")
}

/// The parent of a stored path (`None` for the root).
pub fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    Some(path.rsplit_once('/').map_or("", |(parent, _)| parent))
}

/// The paths from the root down to `path`, both included.
pub fn lineage(path: &str) -> Vec<&str> {
    let mut paths = vec![""];
    if !path.is_empty() {
        for (i, c) in path.char_indices() {
            if c == '/' {
                paths.push(&path[..i]);
            }
        }
        paths.push(path);
    }
    paths
}

/// Every queue.
#[derive(Debug, Clone)]
pub struct Queues {
    queues: BTreeMap<String, Queue>,
}

impl Default for Queues {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl Queues {
    /// The tree from stored queues (the root is added when missing).
    pub fn new(stored: Vec<Queue>) -> Self {
        let mut queues: BTreeMap<String, Queue> =
            stored.into_iter().map(|q| (q.path.clone(), q)).collect();
        queues.entry(String::new()).or_insert_with(Queue::root);
        Self { queues }
    }

    /// One queue.
    pub fn get(&self, path: &str) -> Option<&Queue> {
        self.queues.get(path)
    }

    /// Every queue, parents before children.
    pub fn iter(&self) -> impl Iterator<Item = &Queue> {
        self.queues.values()
    }

    /// Whether `path` has child queues.
    pub fn has_children(&self, path: &str) -> bool {
        self.queues.keys().any(|p| parent(p) == Some(path))
    }

    /// Checks a new queue; returns it without adding it.
    pub fn check_new(&self, spec: &QueueSpec) -> Result<Queue, String> {
        check_name(spec.name.trim()).map_err(|e| format!("name: {e}"))?;
        let parent =
            normalize(spec.parent.as_deref().unwrap_or("")).map_err(|e| format!("parent: {e}"))?;
        if !self.queues.contains_key(&parent) {
            return Err(format!("parent: no queue {}", display(&parent)));
        }
        let path = if parent.is_empty() {
            spec.name.trim().to_string()
        } else {
            format!("{parent}/{}", spec.name.trim())
        };
        normalize(&path).map_err(|e| format!("name: {e}"))?;
        check_weight(spec.weight)?;
        Ok(Queue {
            path,
            priority: spec.priority,
            weight: spec.weight,
            min_agents: spec.min_agents,
            max_agents: spec.max_agents.filter(|&m| m > 0),
        })
    }

    /// Adds or replaces a queue.
    pub fn put(&mut self, queue: Queue) {
        self.queues.insert(queue.path.clone(), queue);
    }

    /// The queue with `patch` applied, without storing it.
    pub fn patched(&self, path: &str, patch: &QueuePatch) -> Result<Queue, String> {
        let mut queue = self
            .queues
            .get(path)
            .cloned()
            .ok_or_else(|| format!("no queue {}", display(path)))?;
        if let Some(priority) = patch.priority {
            queue.priority = priority;
        }
        if let Some(weight) = patch.weight {
            check_weight(weight)?;
            queue.weight = weight;
        }
        if let Some(min) = patch.min_agents {
            queue.min_agents = min;
        }
        if let Some(max) = patch.max_agents {
            queue.max_agents = (max > 0).then_some(max);
        }
        Ok(queue)
    }

    /// Removes a queue.
    pub fn remove(&mut self, path: &str) {
        self.queues.remove(path);
    }
}

fn check_weight(weight: u32) -> Result<(), String> {
    if weight == 0 || weight > 1_000_000 {
        return Err(format!(
            "weight: must be between 1 and 1000000, got {weight}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_and_nest() {
        assert_eq!(normalize("/").unwrap(), "");
        assert_eq!(normalize("/studio/lighting/").unwrap(), "studio/lighting");
        assert!(normalize("studio//x").unwrap_err().contains("\"\""));
        assert!(normalize("a b").unwrap_err().contains("not a queue name"));
        assert_eq!(lineage("a/b/c"), vec!["", "a", "a/b", "a/b/c"]);
        assert_eq!(lineage(""), vec![""]);
        assert_eq!(parent("a/b"), Some("a"));
        assert_eq!(parent("a"), Some(""));
        assert_eq!(parent(""), None);
        assert_eq!(display("a/b"), "/a/b");
    }

    #[test]
    fn new_queues_need_a_parent() {
        let mut queues = Queues::default();
        let spec = |name: &str, parent: Option<&str>| QueueSpec {
            name: name.into(),
            parent: parent.map(Into::into),
            priority: 0,
            weight: 1,
            min_agents: 0,
            max_agents: None,
        };
        let studio = queues.check_new(&spec("studio", None)).unwrap();
        queues.put(studio);
        let lighting = queues
            .check_new(&spec("lighting", Some("/studio")))
            .unwrap();
        assert_eq!(lighting.path, "studio/lighting");
        assert_eq!(
            queues.check_new(&spec("x", Some("nope"))).unwrap_err(),
            "parent: no queue /nope"
        );
        let mut zero = spec("z", None);
        zero.weight = 0;
        assert!(queues.check_new(&zero).unwrap_err().starts_with("weight: "));
        assert!(queues.has_children(""));
        assert!(!queues.has_children("studio"));
    }
}
