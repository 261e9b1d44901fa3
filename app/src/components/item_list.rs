//! The items of a batch, each with an icon for its status.

use batchwatch_core::{ItemProgress, ItemStatus};
use leptos::prelude::*;

use crate::live_batch::ItemCell;

fn icon(status: ItemStatus) -> impl IntoView {
    let (glyph, class, label) = match status {
        ItemStatus::Pending => ("○", "text-slate-400", "pending"),
        ItemStatus::Processing => ("◌", "inline-block animate-spin text-blue-500", "processing"),
        ItemStatus::Done => ("✓", "text-green-600 dark:text-green-400", "done"),
        ItemStatus::Failed => ("✕", "text-red-600 dark:text-red-400", "failed"),
    };
    view! {
        <span class=format!("w-5 text-center font-bold {class}") role="img" aria-label=label>
            {glyph}
        </span>
    }
}

#[component]
pub fn ItemList(#[prop(into)] items: Signal<Vec<ItemCell>>) -> impl IntoView {
    view! {
        <section>
            <h2 class="mb-2 text-lg font-semibold">"Items"</h2>
            <ul class="divide-y divide-slate-200 rounded-lg border border-slate-200 bg-white dark:divide-slate-800 dark:border-slate-800 dark:bg-slate-900">
                // Rows are keyed by id and follow their own item's signal: a change event
                // touches the rows it names and nothing else.
                <For each=move || items.get() key=|cell| cell.id let(cell)>
                    <ItemRow item=cell.item />
                </For>
            </ul>
        </section>
    }
}

#[component]
fn ItemRow(item: RwSignal<ItemProgress>) -> impl IntoView {
    let status = move || item.with(|i| i.status);
    view! {
        <li
            class="flex items-start gap-3 px-3 py-2 text-sm"
            data-testid="item"
            data-status=move || status().as_str()
        >
            {move || icon(status())}
            <div class="min-w-0 flex-1">
                <p class="break-words">{item.with_untracked(|i| i.name.clone())}</p>
                {move || {
                    item.with(|i| i.error.clone())
                        .map(|e| view! { <p class="text-xs text-red-600 dark:text-red-400">{e}</p> })
                }}
            </div>
            <span class="text-xs text-slate-500">{move || status().as_str()}</span>
        </li>
    }
}
