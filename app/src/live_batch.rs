//! `use_live_batch`: a batch's summary and the page of items on screen as signals, kept live in
//! the browser by the stream client (`stream_client.rs`).
//!
//! The page holds one page of items (a [`Window`]), never the batch: an event updates the
//! summary and the rows it names that are on screen, and rows leave or enter as their items
//! stop or start matching the view. Each row has a signal of its own, so an event re-renders
//! the rows it touches and nothing else. On the server this only holds what the page was
//! rendered with.
//!
//! Pages of items are read separately from the stream, so the two must meet: the page
//! remembers the events of the last moments ([`Recent`]) and replays those newer than a page
//! it reads onto it. A page older than what the page remembers is read again.

use std::collections::VecDeque;

use batchwatch_core::{
    Applied, BatchProgress, BatchSummary, ItemId, ItemProgress, ItemQuery, ItemsPage,
    reconnect::Connection,
    window::{Placed, Row, Window},
};
use leptos::prelude::*;

/// The most changed items the page remembers for replay: a few seconds of events at the
/// stream's pace.
const RECENT_ITEMS: usize = 5_000;

/// The least time between two reads of the rows on screen: while a batch changes faster than
/// events list its items, every event asks for one, and the rows follow at this pace.
#[cfg(feature = "hydrate")]
const REREAD_EVERY_MS: f64 = 500.0;

/// One row of the item list.
#[derive(Clone, Copy)]
pub struct ItemCell {
    pub id: ItemId,
    pub position: u32,
    pub item: RwSignal<ItemProgress>,
}

impl ItemCell {
    fn new(item: ItemProgress) -> Self {
        Self { id: item.id, position: item.position, item: RwSignal::new(item) }
    }

    fn entering(item: &ItemProgress) -> Self {
        Self::new(item.clone())
    }
}

impl Row for ItemCell {
    fn id(&self) -> ItemId {
        self.id
    }

    fn position(&self) -> u32 {
        self.position
    }
}

/// The events since `from`: every change event with a `seq` above it, in order.
#[derive(Default)]
struct Recent {
    events: VecDeque<BatchProgress>,
    items: usize,
    from: u64,
}

impl Recent {
    fn starting_at(seq: u64) -> Self {
        Self { from: seq, ..Self::default() }
    }

    fn push(&mut self, event: BatchProgress) {
        self.items += event.items.len();
        self.events.push_back(event);
        while self.items > RECENT_ITEMS
            && let Some(oldest) = self.events.pop_front()
        {
            self.items -= oldest.items.len();
            self.from = oldest.summary.seq;
        }
    }
}

/// A batch's state as the page holds it.
#[derive(Clone, Copy)]
pub struct LiveState {
    pub summary: RwSignal<BatchSummary>,
    pub window: RwSignal<Window<ItemCell>>,
    recent: StoredValue<Recent>,
    /// Asks for the page of items to be read again: it may have missed changes, or emptied.
    pub reread: RwSignal<u32>,
    /// When the rows were last asked for, and whether a later ask waits for its turn.
    #[cfg(feature = "hydrate")]
    rereads: StoredValue<(f64, bool)>,
}

impl LiveState {
    fn new(summary: BatchSummary, reread: RwSignal<u32>) -> Self {
        let seq = summary.seq;
        Self {
            summary: RwSignal::new(summary),
            window: RwSignal::new(Window {
                query: ItemQuery::default(),
                rows: Vec::new(),
                prev: None,
                next: None,
            }),
            recent: StoredValue::new(Recent::starting_at(seq)),
            reread,
            #[cfg(feature = "hydrate")]
            rereads: StoredValue::new((f64::MIN, false)),
        }
    }

    /// Shows a page of items read for `query`, with the remembered events newer than it
    /// replayed onto it. A page older than what the page remembers may lack changes that will
    /// not come again: it is shown, and read again.
    pub fn show(&self, query: ItemQuery, page: ItemsPage) {
        let seq = page.seq;
        let mut window = Window::new(query, page, ItemCell::new);
        let complete = self.recent.with_value(|recent| {
            for event in recent.events.iter().filter(|e| e.summary.seq > seq) {
                for item in &event.items {
                    if let Placed::Updated(at) = window.place(item, ItemCell::entering) {
                        window.rows[at].item.set(item.clone());
                    }
                }
            }
            seq >= recent.from
        });
        self.window.set(window);
        if !complete {
            self.ask_reread();
        }
    }

    /// Takes a snapshot from the stream: the summary. Events were missed, so the rows on
    /// screen may be behind: they are read again.
    pub fn replace(&self, snapshot: BatchProgress) {
        self.recent.set_value(Recent::starting_at(snapshot.summary.seq));
        self.summary.set(snapshot.summary);
        self.ask_reread();
    }

    /// Applies a change event in `seq` order to the summary and the rows on screen. One that
    /// leaves its items out (the batch changes faster than events list them) is taken like a
    /// snapshot: the rows are read again.
    pub fn apply(&self, event: BatchProgress) -> Applied {
        let order = Applied::order(self.summary.with_untracked(|s| s.seq), &event);
        if order == Applied::Applied && event.left_out.is_some() {
            self.replace(event);
        } else if order == Applied::Applied {
            let mut moved = false;
            let mut changed = Vec::new();
            self.window.update_untracked(|window| {
                for item in &event.items {
                    match window.place(item, ItemCell::entering) {
                        Placed::Updated(at) => changed.push((window.rows[at].item, item.clone())),
                        Placed::Left | Placed::Entered(_) => moved = true,
                        Placed::Outside => {}
                    }
                }
            });
            // Rows first set after the window's lock is gone.
            for (cell, item) in changed {
                cell.set(item);
            }
            if moved {
                self.window.notify();
                if self.window.with_untracked(Window::thin) {
                    self.ask_reread();
                }
            }
            self.summary.set(event.summary.clone());
            self.recent.update_value(|recent| recent.push(event));
        }
        order
    }

    fn ask_reread(&self) {
        #[cfg(feature = "hydrate")]
        {
            let Some((last, waiting)) = self.rereads.try_get_value() else { return };
            if waiting {
                return;
            }
            let now = js_sys::Date::now();
            let wait = last + REREAD_EVERY_MS - now;
            if wait > 0.0 {
                self.rereads.set_value((last, true));
                let this = *self;
                // The page may be gone by then: nothing is asked of what it left.
                set_timeout(
                    move || {
                        if this.rereads.try_set_value((js_sys::Date::now(), false)).is_none() {
                            this.reread.try_update(|n| *n += 1);
                        }
                    },
                    std::time::Duration::from_millis(wait as u64),
                );
                return;
            }
            self.rereads.set_value((now, false));
        }
        self.reread.update(|n| *n += 1);
    }
}

/// The batch's stream: followed past the batch's end (`follow=true`), since a finished batch
/// can be opened again by a retry, on this page or anywhere else, and the page goes live again.
#[cfg(feature = "hydrate")]
impl crate::stream_client::Feed for LiveState {
    fn url(&self) -> String {
        // Our own reconnects carry the seq we have, so no duplicate snapshot comes.
        let (id, seq) = self.summary.with_untracked(|s| (s.batch_id, s.seq));
        format!("/api/batches/{id}/stream?last_event_id={seq}&follow=true")
    }

    fn events(&self) -> &'static [&'static str] {
        &["snapshot", "progress", "complete"]
    }

    fn take(&self, event: &str, data: &str) -> crate::stream_client::Next {
        use crate::stream_client::Next;
        if event == "complete" {
            return Next::Settle;
        }
        let Ok(progress) = crate::json::from_str::<BatchProgress>(data) else { return Next::Nothing };
        if event == "snapshot" {
            self.replace(progress);
            return Next::Settle;
        }
        match self.apply(progress) {
            Applied::Applied => Next::Settle,
            Applied::Gap => Next::Reopen,
            Applied::Stale => Next::Nothing,
        }
    }

    fn over(&self) -> bool {
        self.summary.with_untracked(BatchSummary::is_over)
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

/// `reread` is the signal that reads the page of items again.
pub fn use_live_batch(initial: BatchSummary, reread: RwSignal<u32>) -> LiveBatch {
    let finished = initial.is_over();
    let state = LiveState::new(initial, reread);
    let connection = RwSignal::new(if finished { Connection::Finished } else { Connection::Connecting });

    #[cfg(feature = "hydrate")]
    let retry = {
        let client = crate::stream_client::Client::start(std::rc::Rc::new(state), connection);
        let handle = send_wrapper::SendWrapper::new(client.clone());
        on_cleanup(move || handle.take().stop());
        let client = send_wrapper::SendWrapper::new(client);
        Callback::new(move |()| client.reconnect_now(true))
    };
    #[cfg(not(feature = "hydrate"))]
    let retry = Callback::new(|()| {});

    LiveBatch { state, connection, retry }
}
