//! `use_live_batch`: a batch's progress as signals, kept live in the browser by the stream
//! client (`stream_client.rs`).
//!
//! Each item has a signal of its own, so a change event re-renders the summary and the rows it
//! names, never the whole list: a 10,000-item batch stays smooth at hundreds of events per
//! second. On the server this only holds the snapshot the page was rendered with.

use std::{collections::HashMap, sync::Arc};

use batchwatch_core::{Applied, BatchProgress, BatchSummary, ItemId, ItemProgress, reconnect::Connection};
use leptos::prelude::*;

/// One row of the item list.
#[derive(Clone, Copy)]
pub struct ItemCell {
    pub id: ItemId,
    pub item: RwSignal<ItemProgress>,
}

/// A batch's state as the page holds it.
#[derive(Clone, Copy)]
pub struct LiveState {
    pub summary: RwSignal<BatchSummary>,
    pub items: RwSignal<Vec<ItemCell>>,
    /// Where each item's row is, rebuilt with every snapshot.
    index: StoredValue<Arc<HashMap<ItemId, usize>>>,
}

impl LiveState {
    fn new(snapshot: BatchProgress) -> Self {
        let state = Self {
            summary: RwSignal::new(snapshot.summary.clone()),
            items: RwSignal::new(Vec::new()),
            index: StoredValue::new(Arc::default()),
        };
        state.replace(snapshot);
        state
    }

    /// Takes a full snapshot. The rows already on the page follow their own signals, so
    /// when the items are the same ones (always, within a batch) those signals are updated in
    /// place rather than replaced by new ones the rows would not see.
    pub fn replace(&self, snapshot: BatchProgress) {
        let same_items = self.items.with_untracked(|cells| {
            cells.len() == snapshot.items.len()
                && cells.iter().zip(&snapshot.items).all(|(c, i)| c.id == i.id)
        });
        if same_items {
            self.items.with_untracked(|cells| {
                for (cell, item) in cells.iter().zip(snapshot.items) {
                    if cell.item.with_untracked(|old| *old != item) {
                        cell.item.set(item);
                    }
                }
            });
        } else {
            let index = snapshot.items.iter().enumerate().map(|(i, item)| (item.id, i)).collect();
            let cells = snapshot
                .items
                .into_iter()
                .map(|item| ItemCell { id: item.id, item: RwSignal::new(item) })
                .collect();
            self.index.set_value(Arc::new(index));
            self.items.set(cells);
        }
        self.summary.set(snapshot.summary);
    }

    /// Applies a change event in `seq` order, touching only the rows it names; items added to
    /// the batch become new rows at the end.
    pub fn apply(&self, event: BatchProgress) -> Applied {
        let order = Applied::order(self.summary.with_untracked(|s| s.seq), &event);
        if order == Applied::Applied {
            let index = self.index.get_value();
            let mut added = Vec::new();
            self.items.with_untracked(|cells| {
                for changed in event.items {
                    match index.get(&changed.id).and_then(|&i| cells.get(i)) {
                        Some(cell) => cell.item.set(changed),
                        None => added.push(changed),
                    }
                }
            });
            if !added.is_empty() {
                let mut index = HashMap::clone(&index);
                self.items.update(|cells| {
                    for item in added {
                        index.insert(item.id, cells.len());
                        cells.push(ItemCell { id: item.id, item: RwSignal::new(item) });
                    }
                });
                self.index.set_value(Arc::new(index));
            }
            self.summary.set(event.summary);
        }
        order
    }

    /// The batch and the `seq` a reconnect resumes from.
    #[cfg(feature = "hydrate")]
    pub(crate) fn resume_point(&self) -> (batchwatch_core::BatchId, u64) {
        self.summary.with_untracked(|s| (s.batch_id, s.seq))
    }
}

/// The live state of one batch page.
#[derive(Clone, Copy)]
pub struct LiveBatch {
    pub state: LiveState,
    pub connection: RwSignal<Connection>,
    /// Reconnects now (the Retry button).
    pub retry: Callback<()>,
}

pub fn use_live_batch(initial: BatchProgress) -> LiveBatch {
    let finished = initial.summary.status.is_terminal();
    let state = LiveState::new(initial);
    let connection = RwSignal::new(if finished { Connection::Finished } else { Connection::Connecting });

    #[cfg(feature = "hydrate")]
    let retry = {
        let client = crate::stream_client::Client::start(state, connection, finished);
        let handle = send_wrapper::SendWrapper::new(client.clone());
        on_cleanup(move || handle.take().stop());
        let client = send_wrapper::SendWrapper::new(client);
        Callback::new(move |()| client.reconnect_now(true))
    };
    #[cfg(not(feature = "hydrate"))]
    let retry = Callback::new(|()| {});

    LiveBatch { state, connection, retry }
}
