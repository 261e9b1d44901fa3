//! `/`: the batches, newest first, and the forms that create one.

use batchwatch_core::{BatchSummary, NewBatch, Page};
use leptos::{form::ActionForm, prelude::*};
use leptos_meta::Title;

use crate::{
    api::{CreateBatch, CreateDemoBatch, list_batches},
    components::status_badge::StatusBadge,
};

const INPUT: &str =
    "w-full rounded-md border border-slate-300 bg-white px-3 py-2 dark:border-slate-700 dark:bg-slate-900";
const BUTTON: &str =
    "rounded-md bg-blue-600 px-4 py-2 font-medium text-white hover:bg-blue-700 disabled:opacity-50";

#[component]
pub fn HomePage() -> impl IntoView {
    let create = ServerAction::<CreateBatch>::new();
    let demo = ServerAction::<CreateDemoBatch>::new();
    let batches = Resource::new(|| (), |_| list_batches(Page::default()));
    let error = move || {
        [create.value().get(), demo.value().get()]
            .into_iter()
            .flatten()
            .find_map(Result::err)
            .map(crate::api::message)
    };

    view! {
        <Title text="Batches" />
        <div class="grid gap-8 md:grid-cols-[1fr_18rem]">
            <section>
                <h1 class="mb-4 text-2xl font-bold">"Batches"</h1>
                <Suspense fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
                    {move || Suspend::new(async move {
                        match batches.await {
                            Ok(list) if list.is_empty() => {
                                view! {
                                    <p class="text-slate-500" data-testid="empty">
                                        "No batches yet: create one."
                                    </p>
                                }
                                    .into_any()
                            }
                            Ok(list) => view! { <BatchList list /> }.into_any(),
                            Err(e) => view! { <p class="text-red-600" role="alert">{e.to_string()}</p> }.into_any(),
                        }
                    })}
                </Suspense>
            </section>
            <aside class="space-y-6">
                <ActionForm action=create attr:class="space-y-3" attr:data-testid="create-form">
                    <h2 class="text-lg font-semibold">"New batch"</h2>
                    <label class="block text-sm">
                        "Name"
                        <input name="name" required maxlength=NewBatch::MAX_NAME_CHARS class=INPUT />
                    </label>
                    <label class="block text-sm">
                        "Items, one per line"
                        <textarea name="items" rows="6" required class=INPUT placeholder="a.jpg\nb.jpg"></textarea>
                    </label>
                    <button type="submit" class=BUTTON disabled=move || create.pending().get()>
                        "Create batch"
                    </button>
                </ActionForm>
                <ActionForm action=demo attr:class="space-y-3" attr:data-testid="demo-form">
                    <label class="block text-sm">
                        "Demo batch of N items"
                        <input name="count" type="number" min="1" max=NewBatch::MAX_ITEMS value="20" class=INPUT />
                    </label>
                    <button type="submit" class=BUTTON disabled=move || demo.pending().get()>
                        "Create demo batch"
                    </button>
                </ActionForm>
                <p class="text-sm text-red-600" role="alert">
                    {error}
                </p>
            </aside>
        </div>
    }
}

#[component]
fn BatchList(list: Vec<BatchSummary>) -> impl IntoView {
    view! {
        <ul class="divide-y divide-slate-200 rounded-lg border border-slate-200 bg-white dark:divide-slate-800 dark:border-slate-800 dark:bg-slate-900">
            {list
                .into_iter()
                .map(|b| {
                    let status = b.status;
                    view! {
                        <li data-testid="batch-row">
                            <a
                                href=format!("/batches/{}", b.batch_id)
                                class="flex items-center gap-3 px-4 py-3 hover:bg-slate-50 dark:hover:bg-slate-800"
                            >
                                <span class="min-w-0 flex-1 truncate font-medium">{b.name}</span>
                                <span class="font-mono text-sm text-slate-500">
                                    {format!("{}/{}", b.counts.finished(), b.counts.total)}
                                </span>
                                <StatusBadge status=Signal::stored(status) />
                            </a>
                        </li>
                    }
                })
                .collect_view()}
        </ul>
    }
}
