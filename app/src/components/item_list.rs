//! The rows of the page of items on screen, each with an icon for its status, and for a
//! failed item its error (folded when long) and attempts.

use batchwatch_core::{BatchId, ItemId, ItemProgress, ItemStatus};
use leptos::{prelude::*, server_fn::ServerFn};

use crate::{
    api::{RetryItem as RetryItemFn, message, submit},
    live_batch::ItemCell,
};

/// Errors longer than this fold behind their first words.
const FOLD_AFTER: usize = 120;

fn icon(status: ItemStatus) -> impl IntoView {
    let (glyph, class, label) = match status {
        ItemStatus::Pending => ("○", "text-slate-400", "pending"),
        ItemStatus::Processing => ("◌", "inline-block animate-spin text-blue-500", "processing"),
        ItemStatus::Done => ("✓", "text-green-600 dark:text-green-400", "done"),
        ItemStatus::Failed => ("✕", "text-red-600 dark:text-red-400", "failed"),
        ItemStatus::Cancelled => ("⊘", "text-slate-500", "cancelled"),
    };
    view! {
        <span class=format!("w-5 text-center font-bold {class}") role="img" aria-label=label>
            {glyph}
        </span>
    }
}

#[component]
pub fn ItemList(batch: BatchId, #[prop(into)] rows: Signal<Vec<ItemCell>>) -> impl IntoView {
    view! {
        <ul
            class="divide-y divide-slate-200 rounded-lg border border-slate-200 bg-white dark:divide-slate-800 dark:border-slate-800 dark:bg-slate-900"
            data-testid="items"
        >
            // Rows are keyed by id and follow their own item's signal: a change event
            // touches the rows it names and nothing else.
            <For each=move || rows.get() key=|cell| cell.id let(cell)>
                <ItemRow batch item=cell.item />
            </For>
        </ul>
    }
}

#[component]
fn ItemRow(batch: BatchId, item: RwSignal<ItemProgress>) -> impl IntoView {
    let status = move || item.with(|i| i.status);
    let error = move || item.with(|i| i.error.clone()).map(|error| view! { <ItemError error /> });
    // A first attempt is the ordinary case: only a retried item says how many it took.
    let attempts = move || {
        let attempts = item.with(|i| i.attempts);
        (attempts > 1).then(|| {
            view! {
                <span class="text-xs text-slate-500" data-testid="attempts">
                    {format!("{attempts} attempts")}
                </span>
            }
        })
    };
    view! {
        <li
            class="flex items-start gap-3 px-3 py-2 text-sm"
            data-testid="item"
            data-status=move || status().as_str()
            data-position=item.with_untracked(|i| i.position)
        >
            {move || icon(status())}
            <div class="min-w-0 flex-1">
                <p class="break-words" data-testid="name">
                    {item.with_untracked(|i| i.name.clone())}
                </p>
                {error}
            </div>
            <div class="flex flex-col items-end gap-1">
                <span class="text-xs text-slate-500">{move || status().as_str()}</span>
                {attempts}
                {move || (status() == ItemStatus::Failed).then(|| view! { <RetryItem batch item=item.with_untracked(|i| i.id) /> })}
            </div>
        </li>
    }
}

/// A failed item's way back to the queue: a form, with JavaScript or without.
#[component]
fn RetryItem(batch: BatchId, item: ItemId) -> impl IntoView {
    let action = ServerAction::<RetryItemFn>::new();
    view! {
        <form
            method="post"
            action=RetryItemFn::url()
            on:submit=submit(action, move || Some(RetryItemFn { id: batch, item }))
        >
            <input type="hidden" name="id" value=batch.to_string() />
            <input type="hidden" name="item" value=item.to_string() />
            <button
                type="submit"
                class="rounded border border-slate-300 px-2 text-xs hover:bg-slate-100 disabled:opacity-50 dark:border-slate-700 dark:hover:bg-slate-800"
                disabled=move || action.pending().get()
                data-testid="retry-item"
            >
                "Retry"
            </button>
        </form>
        {move || {
            action
                .value()
                .get()
                .and_then(Result::err)
                .map(|e| view! { <p class="text-xs text-red-600" role="alert">{message(e)}</p> })
        }}
    }
}

#[component]
fn ItemError(error: String) -> impl IntoView {
    const CLASS: &str = "break-words text-xs text-red-600 dark:text-red-400";
    if error.chars().count() <= FOLD_AFTER {
        return view! { <p class=CLASS data-testid="error">{error}</p> }.into_any();
    }
    let start: String = error.chars().take(FOLD_AFTER).collect();
    view! {
        <details class=CLASS data-testid="error">
            <summary class="cursor-pointer">{format!("{start}…")}</summary>
            <p class="mt-1 whitespace-pre-wrap">{error}</p>
        </details>
    }
    .into_any()
}
