//! The toasts that tell a person one of their batches finished, on whatever page they are, and
//! the button that turns on browser notifications for the same.

use batchwatch_core::BatchStatus;
use leptos::prelude::*;

use crate::user_feed::{Notify, UserFeed};

/// A polite live region: screen readers read a toast when it appears, without interrupting.
#[component]
pub fn Toasts() -> impl IntoView {
    let feed = expect_context::<UserFeed>();
    view! {
        <div
            role="status"
            aria-live="polite"
            aria-label="Finished batches"
            class="pointer-events-none fixed bottom-4 right-4 z-50 flex w-80 max-w-[calc(100vw-2rem)] flex-col gap-2"
        >
            <For each=move || feed.toasts.get() key=|toast| toast.id let:toast>
                <div
                    class=format!(
                        "pointer-events-auto flex items-start gap-3 rounded-lg border-l-4 bg-white p-3 text-sm shadow-lg dark:bg-slate-800 {}",
                        accent(toast.status),
                    )
                    data-testid="toast"
                >
                    <p class="min-w-0 flex-1 break-words">
                        {toast.text}
                        " "
                        <a href=format!("/batches/{}", toast.batch) class="font-medium text-blue-700 underline dark:text-blue-300">
                            "Open"
                        </a>
                    </p>
                    <button
                        type="button"
                        aria-label="Dismiss"
                        class="rounded px-1 text-slate-500 hover:bg-slate-100 dark:hover:bg-slate-700"
                        on:click=move |_| feed.dismiss(toast.id)
                    >
                        "×"
                    </button>
                </div>
            </For>
        </div>
    }
}

fn accent(status: BatchStatus) -> &'static str {
    match status {
        BatchStatus::Completed => "border-green-600",
        BatchStatus::Partial | BatchStatus::Cancelled => "border-amber-500",
        _ => "border-red-600",
    }
}

/// Asks for notifications on a click, never on load; says so once they are on.
#[component]
pub fn NotifyButton() -> impl IntoView {
    let feed = expect_context::<UserFeed>();
    move || {
        match feed.notify.get() {
        Notify::Ask => view! {
            <button
                type="button"
                class="rounded-md border border-slate-300 px-3 py-1 hover:bg-slate-100 dark:border-slate-700 dark:hover:bg-slate-800"
                title="Get a browser notification when one of your batches finishes"
                on:click=move |_| feed.ask_to_notify()
            >
                "Notify me"
            </button>
        }
        .into_any(),
        Notify::On => view! { <span class="text-slate-500" data-testid="notify-on">"Notifications on"</span> }.into_any(),
        Notify::Unavailable | Notify::Blocked => ().into_any(),
    }
    }
}
