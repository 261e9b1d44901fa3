//! The browser's `EventSource` client of a batch's stream, with our own reconnect schedule
//! (leptos-use's `use_event_source` retries at a fixed interval): exponential backoff with
//! jitter, reset after a successful open, "offline" after too many failures, and an immediate
//! retry when the tab becomes visible or the browser comes back online.
//!
//! The stream is followed past the batch's end (`follow=true`): a finished batch can be opened
//! again by a retry, on this page or anywhere else, and the page goes live again.

use std::{cell::RefCell, rc::Rc, time::Duration};

use batchwatch_core::{
    Applied, BatchProgress,
    reconnect::{Connection, OFFLINE_AFTER, backoff_ms},
};
use leptos::prelude::*;
use wasm_bindgen::{JsCast, closure::Closure};
use web_sys::{EventSource, MessageEvent};

use crate::live_batch::LiveState;

#[derive(Clone)]
pub struct Client(Rc<RefCell<State>>);

type Listener = Closure<dyn FnMut(web_sys::Event)>;

struct State {
    live: LiveState,
    connection: RwSignal<Connection>,
    source: Option<EventSource>,
    /// Listeners of the open source: dropped with it.
    listeners: Vec<Listener>,
    /// Failed tries since the last successful open.
    failures: u32,
    timer: Option<TimeoutHandle>,
    stopped: bool,
    /// Tab-visible and back-online listeners, for the page's lifetime.
    page_listeners: Vec<(web_sys::EventTarget, &'static str, Listener)>,
}

impl Client {
    pub fn start(live: LiveState, connection: RwSignal<Connection>) -> Self {
        let client = Self(Rc::new(RefCell::new(State {
            live,
            connection,
            source: None,
            listeners: Vec::new(),
            failures: 0,
            timer: None,
            stopped: false,
            page_listeners: Vec::new(),
        })));
        client.watch_page();
        // After hydration: opening sets the connection state, which must not change the page
        // while it is being hydrated.
        let first = client.clone();
        set_timeout(move || first.open(), Duration::ZERO);
        client
    }

    pub fn stop(&self) {
        let mut s = self.0.borrow_mut();
        s.stopped = true;
        close(&mut s);
        for (target, name, listener) in s.page_listeners.drain(..) {
            let _ = target.remove_event_listener_with_callback(name, listener.as_ref().unchecked_ref());
        }
    }

    /// Reconnects at once unless connected. `reset` starts the failure count afresh (a person
    /// pressed Retry).
    pub fn reconnect_now(&self, reset: bool) {
        {
            let mut s = self.0.borrow_mut();
            if matches!(s.connection.get_untracked(), Connection::Live | Connection::Finished) {
                return;
            }
            if reset {
                s.failures = 0;
            }
        }
        self.reopen();
    }

    /// Closes the stream and opens a fresh one now, live or not: the server asked for it.
    fn reopen(&self) {
        let mut s = self.0.borrow_mut();
        if s.stopped {
            return;
        }
        close(&mut s);
        drop(s);
        self.open();
    }

    fn open(&self) {
        let url = {
            let mut s = self.0.borrow_mut();
            if s.stopped {
                return;
            }
            if let Some(timer) = s.timer.take() {
                timer.clear();
            }
            let (id, seq) = s.live.resume_point();
            if s.failures > 0 {
                let attempt = s.failures;
                s.connection.set(Connection::Reconnecting { attempt, retry_at: js_sys::Date::now() });
            } else if !matches!(s.connection.get_untracked(), Connection::Live | Connection::Finished) {
                s.connection.set(Connection::Connecting);
            }
            // Our own reconnects carry the seq we have, so no duplicate snapshot comes.
            format!("/api/batches/{id}/stream?last_event_id={seq}&follow=true")
        };
        let source = match EventSource::new(&url) {
            Ok(source) => source,
            Err(_) => return self.failed(),
        };
        let listeners = vec![
            self.listen(&source, "open", |c, _| c.on_open()),
            self.listen(&source, "snapshot", |c, e| c.on_snapshot(e)),
            self.listen(&source, "progress", |c, e| c.on_progress(e)),
            self.listen(&source, "complete", |c, _| c.settle()),
            // The stream reached its maximum age, or its server is shutting down: a fresh one
            // at once (through the same address: another server, or this one restarted).
            self.listen(&source, "timeout", |c, _| c.reopen()),
            self.listen(&source, "reconnect", |c, _| c.reopen()),
            self.listen(&source, "signed_out", |c, _| c.on_signed_out()),
            // A dropped connection, or the server's own `event: error`.
            self.listen(&source, "error", |c, _| c.failed()),
        ];
        let mut s = self.0.borrow_mut();
        s.source = Some(source);
        s.listeners = listeners;
    }

    /// Calls `handler` with this client at each `name` event of `source`.
    fn listen(&self, source: &EventSource, name: &str, handler: fn(&Client, &web_sys::Event)) -> Listener {
        let this = self.clone();
        let closure =
            Closure::wrap(Box::new(move |e: web_sys::Event| handler(&this, &e)) as Box<dyn FnMut(_)>);
        let _ = source.add_event_listener_with_callback(name, closure.as_ref().unchecked_ref());
        closure
    }

    fn on_open(&self) {
        self.0.borrow_mut().failures = 0;
        self.settle();
    }

    /// Connected: live, or finished while the batch is over (until a retry opens it again).
    fn settle(&self) {
        let s = self.0.borrow();
        let over = s.live.summary.with_untracked(|summary| summary.status.is_terminal());
        s.connection.set(if over { Connection::Finished } else { Connection::Live });
    }

    /// The sign-in behind the stream ended: reloading lets the server send the page to
    /// /login, and back here after signing in again.
    fn on_signed_out(&self) {
        self.stop();
        let _ = window().location().reload();
    }

    fn on_snapshot(&self, event: &web_sys::Event) {
        if let Some(snapshot) = parse(event) {
            let live = self.0.borrow().live;
            live.replace(snapshot);
            self.settle();
        }
    }

    fn on_progress(&self, event: &web_sys::Event) {
        let Some(change) = parse(event) else { return };
        let live = self.0.borrow().live;
        match live.apply(change) {
            // Missed events: reopening with our seq brings a fresh snapshot.
            Applied::Gap => {
                self.0.borrow_mut().connection.set(Connection::Connecting);
                self.reconnect_now(false);
            }
            Applied::Applied => self.settle(),
            Applied::Stale => {}
        }
    }

    fn failed(&self) {
        let mut s = self.0.borrow_mut();
        close(&mut s);
        if s.stopped {
            return;
        }
        s.failures += 1;
        if s.failures >= OFFLINE_AFTER {
            s.connection.set(Connection::Offline);
            return;
        }
        let attempt = s.failures;
        let wait = backoff_ms(attempt, js_sys::Math::random());
        let retry_at = js_sys::Date::now() + f64::from(wait);
        s.connection.set(Connection::Reconnecting { attempt, retry_at });
        let this = self.clone();
        s.timer = set_timeout_with_handle(move || this.open(), Duration::from_millis(u64::from(wait))).ok();
    }

    /// Back to the tab or back online: do not make the person wait for the next try.
    fn watch_page(&self) {
        let document = document();
        let targets: [(web_sys::EventTarget, &'static str); 2] =
            [(document.clone().into(), "visibilitychange"), (window().into(), "online")];
        for (target, name) in targets {
            let this = self.clone();
            let document = document.clone();
            let closure = Closure::wrap(Box::new(move |_: web_sys::Event| {
                if document.visibility_state() == web_sys::VisibilityState::Visible {
                    this.reconnect_now(true);
                }
            }) as Box<dyn FnMut(web_sys::Event)>);
            let _ = target.add_event_listener_with_callback(name, closure.as_ref().unchecked_ref());
            self.0.borrow_mut().page_listeners.push((target, name, closure));
        }
    }
}

fn close(s: &mut State) {
    if let Some(source) = s.source.take() {
        source.close();
    }
    // We may be inside one of these listeners right now: drop them once it has returned.
    let listeners = std::mem::take(&mut s.listeners);
    if !listeners.is_empty() {
        set_timeout(move || drop(listeners), Duration::ZERO);
    }
    if let Some(timer) = s.timer.take() {
        timer.clear();
    }
}

fn parse(event: &web_sys::Event) -> Option<BatchProgress> {
    let data = event.dyn_ref::<MessageEvent>()?.data().as_string()?;
    serde_json::from_str(&data).ok()
}
