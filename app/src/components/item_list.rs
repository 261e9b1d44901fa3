//! The items of a batch, each with an icon for its status.

use batchwatch_core::{ItemProgress, ItemStatus};
use leptos::prelude::*;

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
pub fn ItemList(#[prop(into)] items: Signal<Vec<ItemProgress>>) -> impl IntoView {
    view! {
        <section>
            <h2 class="mb-2 text-lg font-semibold">"Items"</h2>
            <ul class="divide-y divide-slate-200 rounded-lg border border-slate-200 bg-white dark:divide-slate-800 dark:border-slate-800 dark:bg-slate-900">
                // Keyed by id and state, so a row is rebuilt exactly when its item changes.
                <For
                    each=move || items.get()
                    key=|item| (item.id, item.status, item.updated_at)
                    let(item)
                >
                    <li
                        class="flex items-start gap-3 px-3 py-2 text-sm"
                        data-testid="item"
                        data-status=item.status.as_str()
                    >
                        {icon(item.status)}
                        <div class="min-w-0 flex-1">
                            <p class="break-all">{item.name}</p>
                            {item
                                .error
                                .map(|e| {
                                    view! { <p class="text-xs text-red-600 dark:text-red-400">{e}</p> }
                                })}
                        </div>
                        <span class="text-xs text-slate-500">{item.status.as_str()}</span>
                    </li>
                </For>
            </ul>
        </section>
    }
}
