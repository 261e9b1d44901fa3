//! The counters of a batch.

use batchwatch_core::Counts;
use leptos::prelude::*;

#[component]
pub fn Counters(#[prop(into)] counts: Signal<Counts>) -> impl IntoView {
    let cell = move |label: &'static str, key: &'static str, value: fn(&Counts) -> u32| {
        view! {
            <div class="rounded-lg border border-slate-200 bg-white p-3 dark:border-slate-800 dark:bg-slate-900">
                <dt class="text-xs uppercase tracking-wide text-slate-500 dark:text-slate-400">{label}</dt>
                <dd class="mt-1 font-mono text-2xl font-semibold" data-testid=format!("count-{key}")>
                    {move || value(&counts.get())}
                </dd>
            </div>
        }
    };
    view! {
        <dl class="grid grid-cols-2 gap-3 sm:grid-cols-6">
            {cell("Queued", "queued", |c| c.queued)}
            {cell("Processing", "processing", |c| c.processing)}
            {cell("Completed", "completed", |c| c.completed)}
            {cell("Failed", "failed", |c| c.failed)}
            {cell("Cancelled", "cancelled", |c| c.cancelled)}
            {cell("Total", "total", |c| c.total)}
        </dl>
    }
}
