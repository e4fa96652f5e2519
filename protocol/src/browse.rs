//! Browsing a job's tasks at any size: pages that seek by frame instead of skipping rows,
//! and a filter by state.

use serde::{Deserialize, Serialize};

use crate::model::WorkState;

/// Which page of a job's tasks to read, in frame order.
///
/// The frame bounds seek through an index, so a page deep in a million-task job costs
/// what the first page costs; `offset` counts tasks past those bounds (and is kept for
/// clients that page by position).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskQuery {
    /// Page size.
    pub limit: u64,
    /// Matching tasks to skip after the frame bounds.
    pub offset: u64,
    /// Start at the task covering this frame (or the first after it).
    pub from_frame: Option<i64>,
    /// Start after the task whose first frame is this one: pass the `frame` of the last
    /// task of a page to read the next page.
    pub after_frame: Option<i64>,
    /// The page ending just before the task whose first frame is this one: pass the
    /// `frame` of the first task of a page to read the previous page (still returned in
    /// frame order).
    pub before_frame: Option<i64>,
    /// Only tasks in this state.
    pub state: Option<WorkState>,
}

impl TaskQuery {
    /// The first `limit` tasks.
    pub fn first(limit: u64) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    /// Whether it is a plain position page (no frame bound, no state).
    pub fn is_plain(&self) -> bool {
        self.from_frame.is_none()
            && self.after_frame.is_none()
            && self.before_frame.is_none()
            && self.state.is_none()
    }
}
