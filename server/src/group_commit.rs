//! Group commit: the changes of one batch that arrive close together are committed in one
//! transaction, so that a batch under thousands of changes a second costs a few hundred
//! transactions (and cache writes and events) a second, not thousands.
//!
//! Each batch with work has one leader in this process (a task; see `Batches::lead`). It
//! commits whatever is queued for the batch in one transaction, and at once again with what
//! arrived meanwhile: callers wait for one commit at most, however many there are, and a lone
//! change is never held back. (Watchers get events at a bounded pace whatever the commits'
//! rate: the hub joins what arrives within its interval; see `live/hub.rs`.)
//!
//! Why not a crate: what is grouped is ours (reports judged one by one, claims), and the queue
//! itself is a few lines.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use batchwatch_core::BatchId;
use tokio::sync::watch;

use crate::store::items::EVENT_ITEMS;

/// The most changes one transaction takes: a larger queue is committed in several. Bigger
/// groups cost fewer commits but keep every change in them waiting for the whole transaction:
/// one event's worth keeps a busy batch's freshness within about a tenth of a second.
const MAX_GROUP: usize = EVENT_ITEMS;

/// Work queued per batch: units (`T`, one caller's share: its changes and where its answer
/// goes) with how many changes each holds.
pub struct Queues<T> {
    inner: Arc<Mutex<HashMap<BatchId, Queue<T>>>>,
    /// Leaders running: a stopping process waits for zero, so that no accepted change is lost.
    leaders: watch::Sender<usize>,
}

/// A batch's units, each with how many changes it holds.
type Queue<T> = VecDeque<(T, usize)>;

// By hand: a derive would ask `T: Clone + Debug` of the units.
impl<T> Clone for Queues<T> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), leaders: self.leaders.clone() }
    }
}

impl<T> std::fmt::Debug for Queues<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues").field("batches", &self.lock().len()).finish()
    }
}

impl<T> Default for Queues<T> {
    fn default() -> Self {
        Self { inner: Arc::default(), leaders: watch::Sender::new(0) }
    }
}

impl<T> Queues<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BatchId, Queue<T>>> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `unit` for `batch`; `true` when the batch had no leader, and the caller must
    /// start one.
    pub fn push(&self, batch: BatchId, unit: T, size: usize) -> bool {
        let mut queues = self.lock();
        let new = !queues.contains_key(&batch);
        queues.entry(batch).or_default().push_back((unit, size));
        if new {
            self.leaders.send_modify(|n| *n += 1);
        }
        new
    }

    /// The leader's next group: what is queued, up to [`MAX_GROUP`] changes (at least one
    /// unit when any is queued).
    pub fn take(&self, batch: BatchId) -> Vec<T> {
        let mut queues = self.lock();
        let Some(queue) = queues.get_mut(&batch) else { return Vec::new() };
        let mut group = Vec::new();
        let mut size = 0;
        while let Some((_, next)) = queue.front() {
            if !group.is_empty() && size + next > MAX_GROUP {
                break;
            }
            let (unit, next) = queue.pop_front().expect("looked at");
            size += next;
            group.push(unit);
        }
        group
    }

    /// The leader steps down when nothing is queued: `true` then (the next unit makes a new
    /// leader), `false` when something arrived meanwhile.
    pub fn step_down(&self, batch: BatchId) -> bool {
        let mut queues = self.lock();
        if queues.get(&batch).is_some_and(|queue| !queue.is_empty()) {
            return false;
        }
        queues.remove(&batch);
        drop(queues);
        self.leaders.send_modify(|n| *n -= 1);
        true
    }

    /// Completes when every queued change was committed and announced, and no leader runs.
    pub async fn settled(&self) {
        let mut leaders = self.leaders.subscribe();
        let _ = leaders.wait_for(|n| *n == 0).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_unit_makes_a_leader_until_it_steps_down_on_an_empty_queue() {
        let queues = Queues::default();
        let batch = BatchId::new();
        assert!(queues.push(batch, 'a', 1));
        assert!(!queues.push(batch, 'b', 1), "a leader is on it");
        assert_eq!(queues.take(batch), vec!['a', 'b']);
        assert!(!queues.push(batch, 'c', 1), "still led");
        assert!(!queues.step_down(batch), "'c' is waiting");
        assert_eq!(queues.take(batch), vec!['c']);
        assert!(queues.take(batch).is_empty());
        assert!(queues.step_down(batch));
        assert_eq!(*queues.leaders.borrow(), 0);
        assert!(queues.push(batch, 'd', 1), "a new leader for a quiet batch");
    }

    #[test]
    fn a_group_holds_at_most_max_group_changes_but_never_nothing() {
        let queues = Queues::default();
        let batch = BatchId::new();
        queues.push(batch, 1, MAX_GROUP * 2);
        queues.push(batch, 2, MAX_GROUP - 1);
        queues.push(batch, 3, 1);
        queues.push(batch, 4, 1);
        assert_eq!(queues.take(batch), vec![1], "one oversized unit goes alone");
        assert_eq!(queues.take(batch), vec![2, 3]);
        assert_eq!(queues.take(batch), vec![4]);
    }
}
