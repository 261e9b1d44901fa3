//! A user's batches as their pages follow them (the user's stream): the home's list kept in
//! order and up to date, and which batches just finished, to tell the person.

use std::collections::HashMap;

use crate::{BatchId, BatchStatus, BatchSummary};

/// The newest summary a page has seen of each of the user's batches.
#[derive(Debug, Default)]
pub struct Known {
    seen: HashMap<BatchId, BatchSummary>,
}

impl Known {
    /// Takes summaries as they come (a change, or a fresh list when `snapshot`) and returns
    /// those that finished: over now, and not over when last seen. A change of a batch never
    /// seen that is over tells of it too (the stream sends only changes); a list teaches the
    /// state of batches never seen without telling of them (they may have ended long ago).
    /// An older summary than one seen is ignored.
    pub fn take<'a>(&mut self, summaries: &'a [BatchSummary], snapshot: bool) -> Vec<&'a BatchSummary> {
        let mut finished = Vec::new();
        for summary in summaries {
            let before = self.seen.get(&summary.batch_id).map(|known| (known.seq, known.status));
            if before.is_some_and(|(seq, _)| seq >= summary.seq) {
                continue;
            }
            self.seen.insert(summary.batch_id, summary.clone());
            let was_over = match before {
                Some((_, status)) => status.is_terminal(),
                None => snapshot,
            };
            if summary.status.is_terminal() && !was_over {
                finished.push(summary);
            }
        }
        finished
    }

    /// Every batch seen, as last seen.
    pub fn all(&self) -> impl Iterator<Item = &BatchSummary> {
        self.seen.values()
    }
}

/// Puts summaries into a list kept newest first: a batch in the list takes its newer summary,
/// a new one goes where its creation time puts it. Returns whether the list changed.
pub fn merge_into<'a>(
    list: &mut Vec<BatchSummary>,
    summaries: impl IntoIterator<Item = &'a BatchSummary>,
) -> bool {
    let mut changed = false;
    for summary in summaries {
        match list.iter_mut().find(|b| b.batch_id == summary.batch_id) {
            Some(b) if b.seq < summary.seq => *b = summary.clone(),
            Some(_) => continue,
            None => {
                let at = list.partition_point(|b| b.created_at >= summary.created_at);
                list.insert(at, summary.clone());
            }
        }
        changed = true;
    }
    changed
}

/// What a person is told when a batch finishes: "<name> completed: 10 of 10 done".
pub fn outcome(summary: &BatchSummary) -> String {
    let c = &summary.counts;
    let how = match summary.status {
        BatchStatus::Completed => format!("{} of {} done", c.completed, c.total),
        BatchStatus::Partial => format!("{} done, {} failed", c.completed, c.failed),
        BatchStatus::Failed => format!("all {} failed", c.failed),
        // Told at the cancel, while its items are still being cancelled: all that had not
        // finished will be.
        BatchStatus::Cancelled => {
            format!("{} done, {} cancelled", c.completed, c.cancelled + c.queued + c.processing)
        }
        _ => format!("{} of {} finished", c.finished(), c.total),
    };
    format!("{} {}: {how}", summary.name, summary.status.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Counts;

    fn summary(id: BatchId, seq: u64, created_at: i64, counts: Counts) -> BatchSummary {
        BatchSummary::new(id, format!("b{created_at}"), counts, seq, created_at)
    }

    fn running() -> Counts {
        Counts { queued: 1, completed: 1, total: 2, ..Counts::default() }
    }

    fn done() -> Counts {
        Counts { completed: 2, total: 2, ..Counts::default() }
    }

    #[test]
    fn a_batch_finishing_is_told_once() {
        let (a, b) = (BatchId::new(), BatchId::new());
        let mut known = Known::default();
        let list = [summary(a, 3, 1, running()), summary(b, 9, 2, done())];
        assert!(known.take(&list, true).is_empty(), "a list tells of nothing, even of what is over");
        let ended = [summary(a, 4, 1, done())];
        assert_eq!(known.take(&ended, false), [&ended[0]]);
        assert!(known.take(&ended, false).is_empty(), "the same change again");
        assert!(known.take(&[summary(a, 2, 1, running())], false).is_empty(), "an older one");
        // Reopened (a retry), then over again: told again.
        known.take(&[summary(a, 5, 1, running())], false);
        assert_eq!(known.take(&[summary(a, 6, 1, done())], false).len(), 1);
        let mut all: Vec<_> = known.all().map(|s| (s.batch_id, s.seq)).collect();
        all.sort();
        let mut expected = vec![(a, 6), (b, 9)];
        expected.sort();
        assert_eq!(all, expected, "the newest of each, to list");
        // A batch never seen whose change says it is over finished just now.
        let c = BatchId::new();
        assert_eq!(known.take(&[summary(c, 7, 3, done())], false).len(), 1);
        // A list that shows a batch seen running as over: it finished while the stream was away.
        known.take(&[summary(c, 8, 3, running())], false);
        assert_eq!(known.take(&[summary(c, 9, 3, done())], true).len(), 1);
    }

    #[test]
    fn merged_newest_first() {
        let (a, b, c) = (BatchId::new(), BatchId::new(), BatchId::new());
        let mut list = vec![summary(c, 1, 30, running()), summary(a, 1, 10, running())];
        assert!(merge_into(&mut list, &[summary(b, 1, 20, running()), summary(a, 2, 10, done())]));
        let order: Vec<_> = list.iter().map(|s| (s.batch_id, s.seq)).collect();
        assert_eq!(order, [(c, 1), (b, 1), (a, 2)]);
        assert!(!merge_into(&mut list, &[summary(a, 1, 10, running())]), "older: unchanged");
        assert_eq!(list[2].status, BatchStatus::Completed);
    }

    #[test]
    fn outcomes() {
        let id = BatchId::new();
        let failed = Counts { completed: 7, failed: 3, total: 10, ..Counts::default() };
        assert_eq!(outcome(&summary(id, 1, 5, done())), "b5 completed: 2 of 2 done");
        assert_eq!(outcome(&summary(id, 1, 5, failed)), "b5 partial: 7 done, 3 failed");
    }
}
