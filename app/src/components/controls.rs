//! What the batch's owner can do from its page: Pause or Resume, Cancel (after a confirmation
//! that names the batch and what it will cancel), Retry every failed item. Each button is a
//! form: it works with JavaScript off (the POST comes back to the page) and, with it, is
//! disabled while its request is in flight and shows its error if it fails. The page changes
//! when the change's event arrives, as every other watcher's page does.

use batchwatch_core::{BatchId, BatchStatus, BatchSummary, Control, ItemQuery};
use leptos::{prelude::*, server_fn::ServerFn};
use leptos_router::hooks::use_query_map;

use crate::api::{ControlBatch, message, submit};

const BUTTON: &str =
    "rounded-md border px-3 py-1.5 text-sm font-medium disabled:cursor-wait disabled:opacity-50";
const PLAIN: &str = "border-slate-300 hover:bg-slate-100 dark:border-slate-700 dark:hover:bg-slate-800";
const DANGER: &str =
    "border-red-300 text-red-700 hover:bg-red-50 dark:border-red-800 dark:text-red-300 dark:hover:bg-red-950";

/// The page's address with `confirm=cancel` added or not, the view of the items kept.
fn here(id: BatchId, confirm: bool) -> impl Fn() -> String {
    let url = use_query_map();
    move || {
        let view = url.with(|map| ItemQuery::from_url(|key| map.get(key))).to_url();
        let query = match (view.is_empty(), confirm) {
            (true, false) => String::new(),
            (true, true) => "?confirm=cancel".to_owned(),
            (false, false) => format!("?{view}"),
            (false, true) => format!("?{view}&confirm=cancel"),
        };
        format!("/batches/{id}{query}")
    }
}

#[component]
pub fn Controls(summary: RwSignal<BatchSummary>) -> impl IntoView {
    let id = summary.with_untracked(|s| s.batch_id);
    let action = ServerAction::<ControlBatch>::new();
    let status = move || summary.with(|s| s.status);
    let failed = move || summary.with(|s| s.counts.failed);
    let button = move |control: Control, label: Signal<String>, look: &'static str| {
        view! {
            <form
                method="post"
                action=ControlBatch::url()
                class="inline"
                on:submit=submit(action, move || Some(ControlBatch { id, control }))
            >
                <input type="hidden" name="id" value=id.to_string() />
                <input type="hidden" name="control" value=control.as_str() />
                <button
                    type="submit"
                    class=format!("{BUTTON} {look}")
                    disabled=move || action.pending().get()
                    data-testid=format!("control-{}", control.as_str())
                >
                    {label}
                </button>
            </form>
        }
    };
    let fixed = |label: &'static str| Signal::derive(move || label.to_owned());
    let asking = {
        let url = use_query_map();
        move || url.with(|map| map.get("confirm").as_deref() == Some("cancel")) && !status().is_terminal()
    };
    view! {
        <div class="flex flex-wrap items-center gap-2" role="group" aria-label="Batch controls">
            {move || (status() == BatchStatus::Paused).then(|| button(Control::Resume, fixed("Resume"), PLAIN))}
            {move || {
                (!status().is_terminal() && status() != BatchStatus::Paused)
                    .then(|| button(Control::Pause, fixed("Pause"), PLAIN))
            }}
            {move || {
                (failed() > 0 && status() != BatchStatus::Cancelled)
                    .then(|| {
                        let label = Signal::derive(move || format!("Retry failed ({})", failed()));
                        button(Control::Retry, label, PLAIN)
                    })
            }}
            {move || {
                (!status().is_terminal())
                    .then(|| {
                        view! {
                            <a href=here(id, true) class=format!("{BUTTON} {DANGER}") data-testid="control-cancel-ask">
                                "Cancel…"
                            </a>
                        }
                    })
            }}
            {move || {
                action
                    .value()
                    .get()
                    .and_then(Result::err)
                    .map(|e| view! { <p class="text-sm text-red-600" role="alert">{message(e)}</p> })
            }}
        </div>
        {move || {
            asking()
                .then(|| {
                    let (name, unfinished, done, failed) =
                        summary.with(|s| (s.name.clone(), s.counts.queued + s.counts.processing, s.counts.completed, s.counts.failed));
                    view! {
                        <div
                            role="alertdialog"
                            aria-labelledby="cancel-title"
                            aria-describedby="cancel-what"
                            class="space-y-3 rounded-lg border border-red-300 bg-red-50 p-4 dark:border-red-800 dark:bg-red-950"
                            data-testid="cancel-confirm"
                        >
                            <p id="cancel-title" class="font-semibold">{format!("Cancel “{name}”?")}</p>
                            <p id="cancel-what" class="text-sm">
                                {format!(
                                    "{unfinished} items that have not finished will be cancelled; the {done} done and {failed} failed stay as they are."
                                )}
                            </p>
                            <div class="flex gap-2">
                                {button(Control::Cancel, fixed("Yes, cancel the batch"), DANGER)}
                                <a href=here(id, false) class=format!("{BUTTON} {PLAIN}")>"Keep it running"</a>
                            </div>
                        </div>
                    }
                })
        }}
    }
}
