//! The batch's progress bar: finished items over all items.

use batchwatch_core::Counts;
use leptos::prelude::*;

#[component]
pub fn ProgressBar(#[prop(into)] counts: Signal<Counts>) -> impl IntoView {
    let percent = move || counts.get().percent();
    // The width uses the exact fraction, so a 10,000-item batch still moves smoothly.
    let width = move || {
        let c = counts.get();
        let fraction = if c.total == 0 { 1.0 } else { f64::from(c.finished()) / f64::from(c.total) };
        format!("width: {:.2}%", fraction * 100.0)
    };
    let failed_share = move || {
        let c = counts.get();
        if c.finished() == 0 { 0.0 } else { f64::from(c.failed) / f64::from(c.finished()) * 100.0 }
    };
    view! {
        <div class="space-y-1">
            <div class="flex justify-between text-sm text-slate-600 dark:text-slate-400">
                <span>"Progress"</span>
                <span data-testid="percent" class="font-mono">
                    {move || format!("{} %", percent())}
                </span>
            </div>
            <div
                class="h-4 w-full overflow-hidden rounded-full bg-slate-200 dark:bg-slate-800"
                role="progressbar"
                aria-label="Batch progress"
                aria-valuemin="0"
                aria-valuemax="100"
                aria-valuenow=percent
            >
                <div
                    class="h-full rounded-full transition-[width] duration-500 ease-out"
                    style=move || {
                        format!(
                            "{}; background: linear-gradient(to right, #22c55e {:.1}%, #ef4444 {:.1}%)",
                            width(),
                            100.0 - failed_share(),
                            100.0 - failed_share(),
                        )
                    }
                ></div>
            </div>
        </div>
    }
}
