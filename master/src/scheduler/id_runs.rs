//! A set of task ids kept as runs of consecutive ids.
//!
//! A job's queued tasks are mostly one run (a fresh job of a million tasks is one entry
//! instead of a million tree keys), and dispatch takes them from the front, which moves
//! the start of the first run.

use std::collections::BTreeMap;

use furrow_protocol::TaskId;

/// Ids as disjoint, non-adjacent runs: start → last id of the run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IdRuns {
    runs: BTreeMap<TaskId, TaskId>,
}

impl IdRuns {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many ids it holds.
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.runs
            .iter()
            .map(|(start, end)| (end - start + 1) as u64)
            .sum()
    }

    /// Whether it holds no id.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The smallest id.
    pub fn first(&self) -> Option<TaskId> {
        self.runs.first_key_value().map(|(&start, _)| start)
    }

    /// The run that holds `id`, or the last run before it.
    fn run_at_or_before(&self, id: TaskId) -> Option<(TaskId, TaskId)> {
        self.runs
            .range(..=id)
            .next_back()
            .map(|(&start, &end)| (start, end))
    }

    /// Whether it holds `id`.
    #[cfg(test)]
    pub fn contains(&self, id: TaskId) -> bool {
        self.run_at_or_before(id).is_some_and(|(_, end)| id <= end)
    }

    /// Adds `id`; false when it was there already.
    pub fn insert(&mut self, id: TaskId) -> bool {
        let before = self.run_at_or_before(id);
        if before.is_some_and(|(_, end)| id <= end) {
            return false;
        }
        let joins_before = before.filter(|&(_, end)| end.checked_add(1) == Some(id));
        let after = id
            .checked_add(1)
            .and_then(|next| self.runs.get(&next).map(|&end| (next, end)));
        match (joins_before, after) {
            (Some((start, _)), Some((next, end))) => {
                self.runs.remove(&next);
                self.runs.insert(start, end);
            }
            (Some((start, _)), None) => {
                self.runs.insert(start, id);
            }
            (None, Some((next, end))) => {
                self.runs.remove(&next);
                self.runs.insert(id, end);
            }
            (None, None) => {
                self.runs.insert(id, id);
            }
        }
        true
    }

    /// Removes `id`; false when it was not there.
    pub fn remove(&mut self, id: TaskId) -> bool {
        let Some((start, end)) = self.run_at_or_before(id).filter(|&(_, end)| id <= end) else {
            return false;
        };
        self.runs.remove(&start);
        if start < id {
            self.runs.insert(start, id - 1);
        }
        if id < end {
            self.runs.insert(id + 1, end);
        }
        true
    }

    /// Every id, in order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.runs.iter().flat_map(|(&start, &end)| start..=end)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_run_is_one_entry_and_shrinks_from_the_front() {
        let mut ids = IdRuns::new();
        for id in 10..1_010 {
            assert!(ids.insert(id));
        }
        assert_eq!(ids.runs.len(), 1);
        assert_eq!((ids.first(), ids.len()), (Some(10), 1_000));
        assert!(!ids.insert(500));
        assert!(ids.remove(10));
        assert!(ids.remove(500));
        assert!(!ids.remove(500));
        assert_eq!(ids.runs.len(), 2);
        assert_eq!((ids.first(), ids.len()), (Some(11), 998));
        // Filling the hole joins the two runs again.
        assert!(ids.insert(500));
        assert_eq!(ids.runs.len(), 1);
        assert!(ids.contains(1_009) && !ids.contains(1_010) && !ids.contains(10));
    }

    proptest! {
        /// Any sequence of inserts and removes leaves the same ids as a `BTreeSet`, in
        /// runs that are disjoint and never adjacent.
        #[test]
        fn behaves_like_a_set(ops in proptest::collection::vec((any::<bool>(), 0i64..64), 0..400)) {
            let mut runs = IdRuns::new();
            let mut set = BTreeSet::new();
            for (add, id) in ops {
                if add {
                    prop_assert_eq!(runs.insert(id), set.insert(id));
                } else {
                    prop_assert_eq!(runs.remove(id), set.remove(&id));
                }
                prop_assert_eq!(runs.first(), set.first().copied());
                prop_assert_eq!(runs.len(), set.len() as u64);
            }
            prop_assert_eq!(runs.iter().collect::<Vec<_>>(), set.iter().copied().collect::<Vec<_>>());
            let mut last_end: Option<i64> = None;
            for (&start, &end) in &runs.runs {
                prop_assert!(start <= end);
                if let Some(previous) = last_end {
                    prop_assert!(start > previous + 1, "runs {previous} and {start} touch");
                }
                last_end = Some(end);
            }
        }
    }
}
