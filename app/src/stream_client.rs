//! The browser's `EventSource` client of a stream (a batch's, or the user's), with our own
//! reconnect schedule (leptos-use's `use_event_source` retries at a fixed interval): exponential
//! backoff with jitter, reset after a successful open, "offline" after too many failures, and
//! an immediate retry when the tab becomes visible or the browser comes back online. What each
//! stream's events mean is its [`Feed`]'s.

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    time::Duration,
};

use batchwatch_core::reconnect::{Connection, OFFLINE_AFTER, backoff_ms};
use leptos::prelude::*;
use wasm_bindgen::{JsCast, closure::Closure};
use web_sys::{EventSource, MessageEvent};

/// What a stream's own events do to the page.
pub trait Feed {
    /// Where to connect now: it carries what the page has, so that a reconnect resumes.
    fn url(&self) -> String;
    /// The events this stream sends besides those every stream sends.
    fn events(&self) -> &'static [&'static str];
    /// Takes one of them.
    fn take(&self, event: &str, data: &str) -> Next;
    /// Whether what it follows is over (the page shows "finished" rather than "live").
    fn over(&self) -> bool;
}

/// What the client does after an event.
pub enum Next {
    /// Connected and up to date.
    Settle,
    /// Events were missed: reopening brings a fresh snapshot.
    Reopen,
    Nothing,
}

#[derive(Clone)]
pub struct Client(Rc<RefCell<State>>);

type Listener = Closure<dyn FnMut(web_sys::Event)>;

struct State {
    feed: Rc<dyn Feed>,
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
    pub fn start(feed: Rc<dyn Feed>, connection: RwSignal<Connection>) -> Self {
        let client = Self(Rc::new(RefCell::new(State {
            feed,
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
            if s.failures > 0 {
                let attempt = s.failures;
                s.connection.set(Connection::Reconnecting { attempt, retry_at: js_sys::Date::now() });
            } else if !matches!(s.connection.get_untracked(), Connection::Live | Connection::Finished) {
                s.connection.set(Connection::Connecting);
            }
            s.feed.url()
        };
        let source = match EventSource::new(&url) {
            Ok(source) => source,
            Err(_) => return self.failed(),
        };
        let feed = self.0.borrow().feed.clone();
        let mut listeners: Vec<_> =
            feed.events().iter().map(|name| self.listen(&source, name, |c, e| c.on_feed(e))).collect();
        listeners.extend([
            self.listen(&source, "open", |c, _| c.on_open()),
            // The stream reached its maximum age, or its server is shutting down: a fresh one
            // at once (through the same address: another server, or this one restarted).
            self.listen(&source, "timeout", |c, _| c.reopen()),
            self.listen(&source, "reconnect", |c, _| c.reopen()),
            self.listen(&source, "signed_out", |c, _| c.on_signed_out()),
            // A dropped connection, or the server's own `event: error`.
            self.listen(&source, "error", |c, _| c.failed()),
        ]);
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

    /// Hands one of the feed's own events to it.
    fn on_feed(&self, event: &web_sys::Event) {
        let Some(data) = event.dyn_ref::<MessageEvent>().and_then(|m| m.data().as_string()) else { return };
        let feed = self.0.borrow().feed.clone();
        match feed.take(&event.type_(), &data) {
            Next::Settle => self.settle(),
            Next::Reopen => {
                self.0.borrow().connection.set(Connection::Connecting);
                self.reconnect_now(false);
            }
            Next::Nothing => {}
        }
    }

    fn on_open(&self) {
        self.0.borrow_mut().failures = 0;
        self.settle();
    }

    /// Connected: live, or finished while what it follows is over (until it opens again).
    fn settle(&self) {
        let s = self.0.borrow();
        s.connection.set(if s.feed.over() { Connection::Finished } else { Connection::Live });
    }

    /// The sign-in behind the stream ended: reloading lets the server send the page to
    /// /login, and back here after signing in again. Not while the page is leaving: its own
    /// sign-out form ended the sign-in, and a reload would undo that navigation.
    fn on_signed_out(&self) {
        self.stop();
        if js_sys::Date::now() - LEAVING_AT.get() > LEAVING_MS {
            let _ = window().location().reload();
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
        watch_leaving();
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

/// How long after the page starts to leave (a link, a form) a navigation may still be under
/// way; a download leaves the page where it is.
const LEAVING_MS: f64 = 5_000.0;

thread_local! {
    static LEAVING_AT: Cell<f64> = const { Cell::new(f64::NEG_INFINITY) };
    static LEAVING_WATCHED: Cell<bool> = const { Cell::new(false) };
}

/// Remembers when the page last started to leave, once for all the page's streams.
fn watch_leaving() {
    if LEAVING_WATCHED.replace(true) {
        return;
    }
    let leaving =
        Closure::wrap(Box::new(|_: web_sys::Event| LEAVING_AT.set(js_sys::Date::now()))
            as Box<dyn FnMut(web_sys::Event)>);
    let _ = window().add_event_listener_with_callback("beforeunload", leaving.as_ref().unchecked_ref());
    // For the page's lifetime.
    leaving.forget();
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
