//! The progress of a batch: the one shape that is the database rows' view, the Redis message,
//! the SSE payload and the UI state.

use serde::{Deserialize, Serialize};

use crate::{BatchId, BatchStatus, ItemId, ItemStatus, Millis};

/// How many items are in each status. `queued` counts pending items.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow, utoipa::ToSchema))]
pub struct Counts {
    #[cfg_attr(feature = "ssr", sqlx(try_from = "i64"))]
    pub queued: u32,
    #[cfg_attr(feature = "ssr", sqlx(try_from = "i64"))]
    pub processing: u32,
    #[cfg_attr(feature = "ssr", sqlx(try_from = "i64"))]
    pub completed: u32,
    #[cfg_attr(feature = "ssr", sqlx(try_from = "i64"))]
    pub failed: u32,
    #[cfg_attr(feature = "ssr", sqlx(try_from = "i64"))]
    pub cancelled: u32,
    #[cfg_attr(feature = "ssr", sqlx(try_from = "i64"))]
    pub total: u32,
}

impl Counts {
    /// A new batch: every item queued.
    pub fn queued(total: u32) -> Self {
        Self { queued: total, total, ..Self::default() }
    }

    fn slot(&mut self, status: ItemStatus) -> &mut u32 {
        match status {
            ItemStatus::Pending => &mut self.queued,
            ItemStatus::Processing => &mut self.processing,
            ItemStatus::Done => &mut self.completed,
            ItemStatus::Failed => &mut self.failed,
            ItemStatus::Cancelled => &mut self.cancelled,
        }
    }

    /// Counts of a batch with nothing cancelled (tests).
    #[cfg(test)]
    pub(crate) fn of_each(queued: u32, processing: u32, completed: u32, failed: u32) -> Self {
        let total = queued + processing + completed + failed;
        Self { queued, processing, completed, failed, cancelled: 0, total }
    }

    /// One item moved from `from` to `to`.
    pub fn apply(&mut self, from: ItemStatus, to: ItemStatus) {
        let source = self.slot(from);
        *source = source.saturating_sub(1);
        *self.slot(to) += 1;
    }

    /// Items that are done, failed or cancelled.
    pub fn finished(&self) -> u32 {
        self.completed + self.failed + self.cancelled
    }

    /// How many items are in `status`.
    pub fn of(&self, status: ItemStatus) -> u32 {
        match status {
            ItemStatus::Pending => self.queued,
            ItemStatus::Processing => self.processing,
            ItemStatus::Done => self.completed,
            ItemStatus::Failed => self.failed,
            ItemStatus::Cancelled => self.cancelled,
        }
    }

    /// Whole percent of finished items, rounded down so that 100 means all finished.
    pub fn percent(&self) -> u8 {
        if self.total == 0 {
            return 100;
        }
        (u64::from(self.finished()) * 100 / u64::from(self.total)) as u8
    }
}

/// One item as a person sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow, utoipa::ToSchema))]
pub struct ItemProgress {
    #[cfg_attr(feature = "ssr", sqlx(try_from = "String"))]
    pub id: ItemId,
    pub name: String,
    #[cfg_attr(feature = "ssr", sqlx(try_from = "String"))]
    pub status: ItemStatus,
    pub error: Option<String>,
    /// Times a worker took it (a retry or a reclaim takes it again).
    #[cfg_attr(feature = "ssr", sqlx(try_from = "i64"))]
    pub attempts: u32,
    /// Its place in the batch, from 0: items keep the order they were added in, and pages
    /// of items are cut by position.
    #[cfg_attr(feature = "ssr", sqlx(try_from = "i64"))]
    pub position: u32,
    pub updated_at: Millis,
}

/// A batch without its items: a row of the list, and the head of every snapshot and event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow, utoipa::ToSchema))]
pub struct BatchSummary {
    #[cfg_attr(feature = "ssr", sqlx(rename = "id", try_from = "String"))]
    pub batch_id: BatchId,
    pub name: String,
    #[cfg_attr(feature = "ssr", sqlx(try_from = "String"))]
    pub status: BatchStatus,
    #[cfg_attr(feature = "ssr", sqlx(try_from = "i64"))]
    pub percent: u8,
    #[cfg_attr(feature = "ssr", sqlx(flatten))]
    pub counts: Counts,
    /// Grows by one at every change of the batch: orders events and resumes streams.
    #[cfg_attr(feature = "ssr", sqlx(try_from = "i64"))]
    pub seq: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl BatchSummary {
    /// A summary whose status and percent follow from `counts`, last changed when it was made.
    pub fn new(batch_id: BatchId, name: String, counts: Counts, seq: u64, created_at: Millis) -> Self {
        Self {
            batch_id,
            name,
            status: BatchStatus::derive(&counts),
            percent: counts.percent(),
            counts,
            seq,
            created_at,
            updated_at: created_at,
        }
    }

    /// Whether nothing more will happen to it but a control (a retry): its status is final and
    /// no item is left to finish. A cancel's status is final at once, and its items follow.
    pub fn is_over(&self) -> bool {
        self.status.is_terminal() && self.counts.queued == 0 && self.counts.processing == 0
    }

    /// Sets `counts` and the status and percent that follow from them. A paused batch stays
    /// paused until it is resumed or over; a cancelled one stays cancelled while its unfinished
    /// items are being cancelled, page by page ([`crate::Control::Cancel`]).
    pub fn set_counts(&mut self, counts: Counts) {
        let status = BatchStatus::derive(&counts);
        let kept = match self.status {
            BatchStatus::Paused => !status.is_terminal(),
            BatchStatus::Cancelled => true,
            _ => false,
        };
        self.counts = counts;
        if !kept {
            self.status = status;
        }
        self.percent = counts.percent();
    }
}

/// A batch with items. In a change event `items` holds the items that changed; in a stream's
/// snapshot it is empty (a page asks for the window of items it shows: [`ItemQuery`]); in the
/// answer to a creation, it holds the new batch's items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct BatchProgress {
    #[serde(flatten)]
    pub summary: BatchSummary,
    pub items: Vec<ItemProgress>,
    /// In an event that joins several changes ([`merge_events`]): the `seq` before the first
    /// of them, so that a state at any `seq` from `since` on takes the event. Absent: the
    /// event is one change, after `seq - 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// In an event that joins more changes than one event lists ([`leave_out_items`]): what it
    /// leaves out. `items` is then empty, and a page reads the rows it shows again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_out: Option<LeftOut>,
}

/// The changes a joined event does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct LeftOut {
    /// Item changes joined (an item that changed twice counts twice).
    pub changes: u32,
    /// When the oldest of them was made (ms since the epoch): what the event's summary holds
    /// is no older.
    pub oldest: Millis,
}

/// What applying an event did to the state a client holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event was the next one, and is now part of the state.
    Applied,
    /// The state already had it (a duplicate, or older than the state).
    Stale,
    /// Events were missed in between: the client needs a fresh snapshot.
    Gap,
}

impl Applied {
    /// What `event` means to a state at `seq` `have`.
    pub fn order(have: u64, event: &BatchProgress) -> Applied {
        if event.summary.seq <= have {
            Applied::Stale
        } else if event.after() > have {
            Applied::Gap
        } else {
            Applied::Applied
        }
    }
}

impl BatchProgress {
    /// A snapshot, or a change event of one change.
    pub fn new(summary: BatchSummary, items: Vec<ItemProgress>) -> Self {
        Self { summary, items, since: None, left_out: None }
    }

    /// The `seq` a state needs at least for this event to apply to it.
    pub fn after(&self) -> u64 {
        self.since.unwrap_or(self.summary.seq.saturating_sub(1))
    }

    /// Applies a change event in `seq` order: items are replaced by id, the summary taken whole.
    /// An event that leaves its items out ([`LeftOut`]) changes the summary alone: the items
    /// held may then be behind, and are read again.
    pub fn apply(&mut self, event: &BatchProgress) -> Applied {
        let order = Applied::order(self.summary.seq, event);
        if order != Applied::Applied {
            return order;
        }
        for changed in &event.items {
            match self.items.iter_mut().find(|item| item.id == changed.id) {
                Some(item) => *item = changed.clone(),
                // Items added to the batch come after all the others.
                None => self.items.push(changed.clone()),
            }
        }
        self.summary = event.summary.clone();
        Applied::Applied
    }
}

/// Change events of one batch joined for its watchers: in `seq` order, each run of consecutive
/// events (each starting where the one before ended) becomes one event while it holds at most
/// `max_items` items. In a joined event each item appears once ([`latest_each`]); its summary
/// is the last one's.
pub fn merge_events(mut events: Vec<BatchProgress>, max_items: usize) -> Vec<BatchProgress> {
    events.sort_by_key(|event| event.summary.seq);
    // Runs first, then each run's items at once: joining event by event would go over the
    // items already joined at every step.
    let mut runs: Vec<(usize, Vec<BatchProgress>)> = Vec::new();
    for event in events {
        match runs.last_mut() {
            Some((items, run))
                if run.last().is_some_and(|last| event.after() == last.summary.seq)
                    && *items + event.items.len() <= max_items =>
            {
                *items += event.items.len();
                run.push(event);
            }
            _ => runs.push((event.items.len(), vec![event])),
        }
    }
    runs.into_iter()
        .map(|(_, mut run)| {
            if run.len() == 1 {
                return run.pop().expect("one");
            }
            let since = run[0].after();
            let summary = run.last().expect("a run is not empty").summary.clone();
            let items = latest_each(run.into_iter().flat_map(|event| event.items).collect(), |item| item.id);
            BatchProgress { summary, items, since: Some(since), left_out: None }
        })
        .collect()
}

/// Consecutive change events (in `seq` order, as [`merge_events`] gives them) joined into one
/// that lists none of their items, only how many changes it holds: what a batch's watchers are
/// offered when its changes come faster than their pace carries in events of a page each.
/// Its summary is the last one's, as whole as any.
pub fn leave_out_items(events: Vec<BatchProgress>) -> Option<BatchProgress> {
    let since = events.first()?.after();
    let mut changes = 0;
    let mut oldest = Millis::MAX;
    for event in &events {
        changes += event.left_out.map_or(event.items.len() as u32, |left| left.changes);
        let its_oldest = match event.left_out {
            Some(left) => Some(left.oldest),
            None => event.items.iter().map(|item| item.updated_at).min(),
        };
        oldest = oldest.min(its_oldest.unwrap_or(event.summary.updated_at));
    }
    let summary = events.into_iter().last()?.summary;
    Some(BatchProgress {
        summary,
        items: Vec::new(),
        since: Some(since),
        left_out: Some(LeftOut { changes, oldest }),
    })
}

/// Each item once, where it first appeared (items added to a batch keep their order), as it
/// last appeared (as it ended).
pub fn latest_each<T>(entries: Vec<T>, id: impl Fn(&T) -> ItemId) -> Vec<T> {
    let mut places = std::collections::HashMap::with_capacity(entries.len());
    let mut kept: Vec<T> = Vec::with_capacity(entries.len());
    for entry in entries {
        match places.get(&id(&entry)) {
            Some(&place) => kept[place] = entry,
            None => {
                places.insert(id(&entry), kept.len());
                kept.push(entry);
            }
        }
    }
    kept
}

/// `limit`/`offset` of a list, clamped to what a server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct Page {
    /// At most this many (1 to 200; larger asks get 200).
    #[serde(default = "Page::default_limit")]
    #[cfg_attr(feature = "ssr", param(format = Int64, maximum = 4_294_967_295.0))]
    pub limit: u32,
    /// Skip this many.
    #[serde(default)]
    #[cfg_attr(feature = "ssr", param(format = Int64, maximum = 4_294_967_295.0))]
    pub offset: u32,
}

impl Page {
    pub const MAX_LIMIT: u32 = 200;

    fn default_limit() -> u32 {
        50
    }

    pub fn clamped(self) -> Self {
        Self { limit: self.limit.clamp(1, Self::MAX_LIMIT), offset: self.offset }
    }
}

impl Default for Page {
    fn default() -> Self {
        Self { limit: Self::default_limit(), offset: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(items: usize) -> BatchProgress {
        BatchProgress {
            summary: BatchSummary::new(BatchId::new(), "b".into(), Counts::queued(items as u32), 1, 10),
            items: (0..items)
                .map(|i| ItemProgress {
                    id: ItemId::new(),
                    name: format!("{i}.jpg"),
                    status: ItemStatus::Pending,
                    error: None,
                    attempts: 0,
                    position: i as u32,
                    updated_at: 10,
                })
                .collect(),
            since: None,
            left_out: None,
        }
    }

    #[test]
    fn percent_rounds_down_and_reaches_100_only_when_all_finished() {
        let mut c = Counts::queued(3);
        assert_eq!(c.percent(), 0);
        c.apply(ItemStatus::Pending, ItemStatus::Processing);
        assert_eq!(c.percent(), 0);
        c.apply(ItemStatus::Processing, ItemStatus::Done);
        assert_eq!(c.percent(), 33);
        c.apply(ItemStatus::Pending, ItemStatus::Processing);
        c.apply(ItemStatus::Processing, ItemStatus::Failed);
        assert_eq!(c.percent(), 66);
        c.apply(ItemStatus::Pending, ItemStatus::Processing);
        c.apply(ItemStatus::Processing, ItemStatus::Done);
        assert_eq!(c.percent(), 100);
        let almost = Counts { completed: 9_999, queued: 1, total: 10_000, ..Counts::default() };
        assert_eq!(almost.percent(), 99);
    }

    #[test]
    fn counts_follow_transitions() {
        let mut c = Counts::queued(2);
        c.apply(ItemStatus::Pending, ItemStatus::Processing);
        c.apply(ItemStatus::Processing, ItemStatus::Failed);
        c.apply(ItemStatus::Failed, ItemStatus::Pending);
        assert_eq!(c, Counts::queued(2));
        c.apply(ItemStatus::Pending, ItemStatus::Processing);
        assert_eq!((c.queued, c.processing), (1, 1));
    }

    #[test]
    fn a_batch_is_over_once_its_status_is_final_and_no_item_is_left_to_finish() {
        let mut s = BatchSummary::new(BatchId::new(), "b".into(), Counts::queued(2), 1, 0);
        assert!(!s.is_over());
        crate::Control::Cancel.apply(&mut s);
        assert!(s.status.is_terminal() && !s.is_over(), "cancelled, its items not yet");
        let mut counts = s.counts;
        counts.apply(ItemStatus::Pending, ItemStatus::Cancelled);
        counts.apply(ItemStatus::Pending, ItemStatus::Cancelled);
        s.set_counts(counts);
        assert!(s.is_over());
        let done = BatchSummary::new(
            BatchId::new(),
            "b".into(),
            Counts { completed: 1, total: 1, ..Counts::default() },
            1,
            0,
        );
        assert!(done.is_over());
    }

    #[test]
    fn set_counts_derives_status_and_percent() {
        let mut s = batch(2).summary;
        s.set_counts(Counts { completed: 1, failed: 1, total: 2, ..Counts::default() });
        assert_eq!((s.status, s.percent), (BatchStatus::Partial, 100));
    }

    fn event(from: &BatchProgress, seq: u64, item: usize, status: ItemStatus) -> BatchProgress {
        let mut summary = from.summary.clone();
        summary.seq = seq;
        let mut changed = from.items[item].clone();
        changed.status = status;
        BatchProgress::new(summary, vec![changed])
    }

    #[test]
    fn apply_in_order_replaces_changed_items_only() {
        let mut state = batch(3);
        let e = event(&state, 2, 1, ItemStatus::Processing);
        assert_eq!(state.apply(&e), Applied::Applied);
        assert_eq!(state.summary.seq, 2);
        assert_eq!(state.items.len(), 3);
        assert_eq!(state.items[1].status, ItemStatus::Processing);
        assert_eq!(state.items[0].status, ItemStatus::Pending);
    }

    #[test]
    fn apply_adds_items_new_to_the_batch_at_the_end() {
        let mut state = batch(2);
        let mut added = batch(1).items.remove(0);
        added.name = "late.jpg".into();
        let mut summary = state.summary.clone();
        summary.seq = 2;
        summary.set_counts(Counts::queued(3));
        assert_eq!(state.apply(&BatchProgress::new(summary, vec![added.clone()])), Applied::Applied);
        assert_eq!(state.items.len(), 3);
        assert_eq!(state.items[2], added);
        assert_eq!(state.summary.counts.total, 3);
    }

    #[test]
    fn apply_skips_duplicates_and_reports_gaps() {
        let mut state = batch(2);
        let dup = event(&state, 1, 0, ItemStatus::Processing);
        assert_eq!(state.apply(&dup), Applied::Stale);
        assert_eq!(state.items[0].status, ItemStatus::Pending);
        let ahead = event(&state, 3, 0, ItemStatus::Processing);
        assert_eq!(state.apply(&ahead), Applied::Gap);
        assert_eq!(state.summary.seq, 1);
    }

    #[test]
    fn consecutive_events_merge_into_one_that_any_state_they_cover_takes() {
        let start = batch(3);
        let mut added = batch(1).items.remove(0);
        added.name = "late.jpg".into();
        let mut append = BatchProgress::new(start.summary.clone(), vec![added.clone()]);
        append.summary.seq = 4;
        let events = vec![
            event(&start, 3, 1, ItemStatus::Processing),
            event(&start, 2, 0, ItemStatus::Processing),
            append,
            event(&start, 5, 0, ItemStatus::Done),
        ];
        let merged = merge_events(events.clone(), 500);
        assert_eq!(merged.len(), 1);
        let one = &merged[0];
        assert_eq!((one.since, one.summary.seq), (Some(1), 5));
        let ids: Vec<_> = one.items.iter().map(|i| (i.id, i.status)).collect();
        assert_eq!(
            ids,
            [
                (start.items[0].id, ItemStatus::Done),
                (start.items[1].id, ItemStatus::Processing),
                (added.id, ItemStatus::Pending)
            ],
            "each item once, where it first appeared, as it ended"
        );
        // A state anywhere in 1..5 takes it and ends like one that took each event in turn.
        let mut one_by_one = start.clone();
        for e in merge_events(events, 1) {
            assert_eq!(one_by_one.apply(&e), Applied::Applied);
        }
        for have in 1..5 {
            let mut state = start.clone();
            state.summary.seq = have;
            assert_eq!(state.apply(one), Applied::Applied, "from {have}");
            assert_eq!(state.items, one_by_one.items);
        }
        let mut done = one_by_one.clone();
        assert_eq!(done.apply(one), Applied::Stale);
    }

    #[test]
    fn only_consecutive_events_merge_and_never_past_max_items() {
        let start = batch(3);
        let merged = merge_events(
            vec![
                event(&start, 2, 0, ItemStatus::Processing),
                // 3 was another process's: 2 and 4 cannot be joined.
                event(&start, 4, 1, ItemStatus::Processing),
                event(&start, 5, 2, ItemStatus::Processing),
                event(&start, 6, 0, ItemStatus::Done),
            ],
            2,
        );
        let spans: Vec<_> = merged.iter().map(|e| (e.after(), e.summary.seq)).collect();
        assert_eq!(spans, [(1, 2), (3, 5), (5, 6)]);
        let mut state = start.clone();
        assert_eq!(state.apply(&merged[0]), Applied::Applied);
        assert_eq!(state.apply(&merged[1]), Applied::Gap, "3 is missing");
    }

    #[test]
    fn events_joined_past_a_page_list_no_items_and_count_what_they_leave_out() {
        let start = batch(3);
        let mut events = vec![
            event(&start, 2, 0, ItemStatus::Processing),
            event(&start, 3, 1, ItemStatus::Processing),
            event(&start, 4, 0, ItemStatus::Done),
        ];
        events[1].items[0].updated_at = 7;
        events[2].summary.counts = Counts { completed: 1, queued: 2, total: 3, ..Counts::default() };
        let joined = leave_out_items(events.clone()).unwrap();
        assert_eq!((joined.after(), joined.summary.seq), (1, 4));
        assert!(joined.items.is_empty());
        assert_eq!(joined.left_out, Some(LeftOut { changes: 3, oldest: 7 }));
        assert_eq!(joined.summary, events[2].summary, "the newest summary");
        // Joined again with what follows, it counts what the first left out.
        let next = event(&start, 5, 2, ItemStatus::Processing);
        let again = leave_out_items(vec![joined.clone(), next]).unwrap();
        assert_eq!((again.after(), again.summary.seq), (1, 5));
        assert_eq!(again.left_out, Some(LeftOut { changes: 4, oldest: 7 }));
        // A state anywhere in 1..4 takes it: the summary, and nothing else.
        let mut state = start.clone();
        assert_eq!(state.apply(&joined), Applied::Applied);
        assert_eq!((state.summary.seq, &state.items), (4, &start.items));
        let json = serde_json::to_value(&joined).unwrap();
        assert_eq!(json["left_out"], serde_json::json!({ "changes": 3, "oldest": 7 }));
        assert_eq!(serde_json::from_value::<BatchProgress>(json).unwrap(), joined);
        assert!(serde_json::to_value(&start).unwrap().get("left_out").is_none());
        assert_eq!(leave_out_items(Vec::new()), None);
    }

    #[test]
    fn json_shape_is_flat() {
        let b = batch(1);
        let v: serde_json::Value = serde_json::to_value(&b).unwrap();
        for key in
            ["batch_id", "name", "status", "percent", "counts", "items", "seq", "created_at", "updated_at"]
        {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        assert_eq!(v["counts"]["queued"], 1);
        let back: BatchProgress = serde_json::from_value(v).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn page_clamps() {
        assert_eq!(Page { limit: 0, offset: 3 }.clamped(), Page { limit: 1, offset: 3 });
        assert_eq!(Page { limit: 10_000, offset: 0 }.clamped().limit, Page::MAX_LIMIT);
        let p: Page = serde_json::from_str("{}").unwrap();
        assert_eq!(p, Page::default());
    }
}
