//! Whether the page is following the batch live: live, reconnecting in Ns, offline with a
//! Retry button, or finished.

use batchwatch_core::reconnect::Connection;
use leptos::prelude::*;

#[component]
pub fn LiveIndicator(
    #[prop(into)] connection: Signal<Connection>,
    #[prop(into)] now: Signal<f64>,
    retry: Callback<()>,
) -> impl IntoView {
    let state = move || match connection.get() {
        Connection::Connecting => "connecting",
        Connection::Live => "live",
        Connection::Reconnecting { .. } => "reconnecting",
        Connection::Offline => "offline",
        Connection::Finished => "finished",
    };
    let (dot, text) = (
        move || match connection.get() {
            Connection::Live => "bg-green-500 animate-pulse",
            Connection::Connecting | Connection::Reconnecting { .. } => "bg-amber-500",
            Connection::Offline => "bg-red-500",
            Connection::Finished => "bg-slate-400",
        },
        move || match connection.get() {
            Connection::Connecting => "Connecting…".to_owned(),
            Connection::Live => "Live".to_owned(),
            Connection::Reconnecting { attempt, retry_at } => {
                let secs = ((retry_at - now.get()) / 1_000.0).ceil().max(0.0);
                format!("Reconnecting in {secs}s (try {attempt})")
            }
            Connection::Offline => "Offline".to_owned(),
            Connection::Finished => "Finished".to_owned(),
        },
    );
    view! {
        <div class="flex items-center gap-2 text-sm" data-testid="live" data-state=state aria-live="polite">
            <span class=move || format!("inline-block h-2.5 w-2.5 rounded-full {}", dot())></span>
            <span>{text}</span>
            <Show when=move || connection.get() == Connection::Offline>
                <button
                    type="button"
                    class="rounded border border-slate-300 px-2 py-0.5 hover:bg-slate-100 dark:border-slate-700 dark:hover:bg-slate-800"
                    on:click=move |_| retry.run(())
                >
                    "Retry"
                </button>
            </Show>
        </div>
    }
}
