//! The user's stream, on every page of a signed-in person: it keeps the home's list live, and
//! when one of their batches finishes it shows a toast on every open page (and, if the person
//! turned them on, a browser notification).

use batchwatch_core::{BatchId, BatchStatus, BatchSummary, feed::Known};
use leptos::prelude::*;

/// How long a toast stays unless dismissed.
#[cfg(feature = "hydrate")]
const TOAST_MS: u64 = 12_000;

/// One "a batch finished" message.
#[derive(Clone, Debug, PartialEq)]
pub struct Toast {
    pub id: u32,
    pub batch: BatchId,
    pub status: BatchStatus,
    pub text: String,
}

/// Whether the browser shows our notifications (the server never knows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
pub enum Notify {
    /// Not known yet (the server renders the page), or the browser has no notifications.
    Unavailable,
    /// The person has not been asked: a button asks.
    Ask,
    On,
    Blocked,
}

/// What the user's stream holds, shared by every page through the context.
#[derive(Clone, Copy)]
pub struct UserFeed {
    /// The newest summary of every batch the stream told of, and a signal of each message:
    /// a page that lists batches merges them all in when it mounts (it may have been read
    /// before some of them), then at each message.
    pub known: StoredValue<Known>,
    pub heard: RwSignal<u64>,
    pub toasts: RwSignal<Vec<Toast>>,
    pub notify: RwSignal<Notify>,
    toasts_made: StoredValue<u32>,
    started: StoredValue<bool>,
    /// The stream's state. Made with the feed, under the app's owner: the stream outlives
    /// whatever starts it.
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    connection: RwSignal<batchwatch_core::reconnect::Connection>,
}

impl UserFeed {
    /// Puts a feed in the context of every page; it starts once someone is signed in.
    pub fn provide() -> Self {
        let feed = Self {
            known: StoredValue::new(Known::default()),
            heard: RwSignal::new(0),
            toasts: RwSignal::new(Vec::new()),
            notify: RwSignal::new(Notify::Unavailable),
            toasts_made: StoredValue::new(0),
            started: StoredValue::new(false),
            connection: RwSignal::new(batchwatch_core::reconnect::Connection::Connecting),
        };
        provide_context(feed);
        feed
    }

    /// Opens the user's stream, once per page load, in the browser only.
    pub fn start(&self) {
        if self.started.get_value() {
            return;
        }
        self.started.set_value(true);
        #[cfg(feature = "hydrate")]
        {
            self.notify.set(notifications::state());
            // It lives as long as the page: the feed is the app's, never unmounted.
            std::mem::forget(crate::stream_client::Client::start(std::rc::Rc::new(*self), self.connection));
        }
    }

    pub fn dismiss(&self, id: u32) {
        self.toasts.update(|toasts| toasts.retain(|t| t.id != id));
    }

    /// Asks the browser to show notifications (only ever from a click).
    pub fn ask_to_notify(&self) {
        #[cfg(feature = "hydrate")]
        notifications::ask(self.notify);
    }

    /// Takes summaries from the stream; tells of every batch among them that finished.
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    fn receive(&self, summaries: Vec<BatchSummary>, snapshot: bool) {
        let finished: Vec<Toast> = self
            .known
            .try_update_value(|known| {
                known
                    .take(&summaries, snapshot)
                    .into_iter()
                    .map(|summary| Toast {
                        id: 0,
                        batch: summary.batch_id,
                        status: summary.status,
                        text: batchwatch_core::feed::outcome(summary),
                    })
                    .collect()
            })
            .unwrap_or_default();
        for mut toast in finished {
            toast.id = self
                .toasts_made
                .try_update_value(|n| {
                    *n += 1;
                    *n
                })
                .unwrap_or_default();
            #[cfg(feature = "hydrate")]
            {
                if self.notify.get_untracked() == Notify::On {
                    notifications::show(&toast);
                }
                let (feed, id) = (*self, toast.id);
                set_timeout(move || feed.dismiss(id), std::time::Duration::from_millis(TOAST_MS));
            }
            self.toasts.update(|toasts| toasts.push(toast));
        }
        self.heard.update(|n| *n += 1);
    }
}

#[cfg(feature = "hydrate")]
impl crate::stream_client::Feed for UserFeed {
    fn url(&self) -> String {
        "/api/stream".into()
    }

    fn events(&self) -> &'static [&'static str] {
        &["snapshot", "batches"]
    }

    fn take(&self, event: &str, data: &str) -> crate::stream_client::Next {
        if let Ok(summaries) = crate::json::from_str(data) {
            self.receive(summaries, event == "snapshot");
        }
        crate::stream_client::Next::Settle
    }

    fn over(&self) -> bool {
        false
    }
}

/// The browser's `Notification`, which some browsers lack.
#[cfg(feature = "hydrate")]
mod notifications {
    use leptos::prelude::*;
    use wasm_bindgen::{JsCast, closure::Closure};
    use web_sys::{Notification, NotificationOptions, NotificationPermission};

    use super::{Notify, Toast};

    fn supported() -> bool {
        js_sys::Reflect::has(&window(), &"Notification".into()).unwrap_or(false)
    }

    pub fn state() -> Notify {
        if !supported() {
            return Notify::Unavailable;
        }
        match Notification::permission() {
            NotificationPermission::Granted => Notify::On,
            NotificationPermission::Denied => Notify::Blocked,
            _ => Notify::Ask,
        }
    }

    pub fn ask(notify: RwSignal<Notify>) {
        if !supported() {
            return;
        }
        let Ok(promise) = Notification::request_permission() else { return };
        let answered = Closure::once(move |_: wasm_bindgen::JsValue| notify.set(state()));
        let _ = promise.then(&answered);
        answered.forget();
    }

    pub fn show(toast: &Toast) {
        let options = NotificationOptions::new();
        options.set_body(&toast.text);
        // One notification per batch: a newer outcome replaces the older.
        options.set_tag(&toast.batch.to_string());
        let Ok(notification) = Notification::new_with_options("batchwatch", &options) else { return };
        let url = format!("/batches/{}", toast.batch);
        let open = Closure::once(move |_: web_sys::Event| {
            let _ = window().focus();
            let _ = window().location().set_href(&url);
        });
        notification.set_onclick(Some(open.as_ref().unchecked_ref()));
        open.forget();
    }
}
