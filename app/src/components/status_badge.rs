//! The colored badge of a batch's status.

use batchwatch_core::BatchStatus;
use leptos::prelude::*;

/// Queued gray, Processing blue, Partial orange, Completed green, Failed red.
pub fn badge_class(status: BatchStatus) -> &'static str {
    match status {
        BatchStatus::Queued => "bg-slate-200 text-slate-800 dark:bg-slate-700 dark:text-slate-100",
        BatchStatus::Processing => "bg-blue-100 text-blue-800 dark:bg-blue-900 dark:text-blue-100",
        BatchStatus::Paused => "bg-yellow-100 text-yellow-900 dark:bg-yellow-900 dark:text-yellow-100",
        BatchStatus::Partial => "bg-orange-100 text-orange-800 dark:bg-orange-900 dark:text-orange-100",
        BatchStatus::Completed => "bg-green-100 text-green-800 dark:bg-green-900 dark:text-green-100",
        BatchStatus::Failed => "bg-red-100 text-red-800 dark:bg-red-900 dark:text-red-100",
        BatchStatus::Cancelled => "bg-slate-700 text-white dark:bg-slate-300 dark:text-slate-900",
    }
}

pub fn label(status: BatchStatus) -> &'static str {
    match status {
        BatchStatus::Queued => "Queued",
        BatchStatus::Processing => "Processing",
        BatchStatus::Paused => "Paused",
        BatchStatus::Partial => "Partial",
        BatchStatus::Completed => "Completed",
        BatchStatus::Failed => "Failed",
        BatchStatus::Cancelled => "Cancelled",
    }
}

#[component]
pub fn StatusBadge(#[prop(into)] status: Signal<BatchStatus>) -> impl IntoView {
    view! {
        <span
            class=move || format!("rounded-full px-3 py-1 text-sm font-medium {}", badge_class(status.get()))
            data-testid="status-badge"
            data-status=move || status.get().as_str()
        >
            {move || label(status.get())}
        </span>
    }
}
