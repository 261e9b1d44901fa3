//! `/`: the batches, newest first, live, and the forms that create one.

use batchwatch_core::{BatchSummary, NewBatch, Page, feed::merge_into};
use leptos::{
    html::{Input, Textarea},
    prelude::*,
    server_fn::ServerFn,
};
use leptos_meta::Title;

use crate::{
    api::{CreateBatch, CreateDemoBatch, list_batches, submit},
    components::status_badge::StatusBadge,
    json,
    user_feed::UserFeed,
};

const INPUT: &str =
    "w-full rounded-md border border-slate-300 bg-white px-3 py-2 dark:border-slate-700 dark:bg-slate-900";
const BUTTON: &str =
    "rounded-md bg-blue-600 px-4 py-2 font-medium text-white hover:bg-blue-700 disabled:opacity-50";

#[component]
pub fn HomePage() -> impl IntoView {
    let create = ServerAction::<CreateBatch>::new();
    let demo = ServerAction::<CreateDemoBatch>::new();
    let (name, items, count) = (NodeRef::<Input>::new(), NodeRef::<Textarea>::new(), NodeRef::<Input>::new());
    let new_batch = move || Some(CreateBatch { name: name.get()?.value(), items: items.get()?.value() });
    // A count that is not a number goes as it is, and the server says what is wrong with it.
    let demo_batch = move || Some(CreateDemoBatch { count: count.get()?.value().parse().ok()? });
    let batches = json::resource(|| (), |_| list_batches(Page::default()));
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
                            Ok(list) => view! { <BatchList list /> }.into_any(),
                            Err(e) => view! { <p class="text-red-600" role="alert">{e.to_string()}</p> }.into_any(),
                        }
                    })}
                </Suspense>
            </section>
            <aside class="space-y-6">
                <form
                    method="post"
                    action=CreateBatch::url()
                    class="space-y-3"
                    data-testid="create-form"
                    on:submit=submit(create, new_batch)
                >
                    <h2 class="text-lg font-semibold">"New batch"</h2>
                    <label class="block text-sm">
                        "Name"
                        <input node_ref=name name="name" required maxlength=NewBatch::MAX_NAME_CHARS class=INPUT />
                    </label>
                    <label class="block text-sm">
                        "Items, one per line"
                        <textarea node_ref=items name="items" rows="6" required class=INPUT placeholder="a.jpg\nb.jpg"></textarea>
                    </label>
                    <button type="submit" class=BUTTON disabled=move || create.pending().get()>
                        "Create batch"
                    </button>
                </form>
                <form
                    method="post"
                    action=CreateDemoBatch::url()
                    class="space-y-3"
                    data-testid="demo-form"
                    on:submit=submit(demo, demo_batch)
                >
                    <label class="block text-sm">
                        "Demo batch of N items"
                        <input node_ref=count name="count" type="number" min="1" max=NewBatch::MAX_ITEMS value="20" class=INPUT />
                    </label>
                    <button type="submit" class=BUTTON disabled=move || demo.pending().get()>
                        "Create demo batch"
                    </button>
                </form>
                <p class="text-sm text-red-600" role="alert">
                    {error}
                </p>
            </aside>
        </div>
    }
}

/// The batches as the page was rendered with them, kept live by the user's stream: a batch
/// that changes takes its new summary (its row's parts change in place, so focus stays), one
/// created elsewhere appears in its place.
#[component]
fn BatchList(list: Vec<BatchSummary>) -> impl IntoView {
    let rows = RwSignal::new(list);
    let feed = expect_context::<UserFeed>();
    Effect::new(move || {
        feed.heard.track();
        feed.known.with_value(|known| rows.maybe_update(|rows| merge_into(rows, known.all())));
    });
    view! {
        <Show
            when=move || rows.with(|rows| !rows.is_empty())
            fallback=|| view! { <p class="text-slate-500" data-testid="empty">"No batches yet: create one."</p> }
        >
            <ul class="divide-y divide-slate-200 rounded-lg border border-slate-200 bg-white dark:divide-slate-800 dark:border-slate-800 dark:bg-slate-900">
                <For each=move || rows.get() key=|b| b.batch_id let:b>
                    <BatchRow first=b rows />
                </For>
            </ul>
        </Show>
    }
}

#[component]
fn BatchRow(first: BatchSummary, rows: RwSignal<Vec<BatchSummary>>) -> impl IntoView {
    let id = first.batch_id;
    let name = first.name.clone();
    let b = Memo::new(move |_| {
        rows.with(|rows| rows.iter().find(|b| b.batch_id == id).cloned()).unwrap_or_else(|| first.clone())
    });
    let percent = move || b.with(|b| b.percent);
    view! {
        <li data-testid="batch-row" data-status=move || b.with(|b| b.status.as_str())>
            <a
                href=format!("/batches/{id}")
                class="flex items-center gap-3 px-4 py-3 hover:bg-slate-50 dark:hover:bg-slate-800"
            >
                <span class="min-w-0 flex-1 truncate font-medium">{name.clone()}</span>
                <span
                    class="hidden h-2 w-24 overflow-hidden rounded-full bg-slate-200 sm:block dark:bg-slate-700"
                    role="progressbar"
                    aria-label=move || format!("{name}: {} % finished", percent())
                    aria-valuemin="0"
                    aria-valuemax="100"
                    aria-valuenow=percent
                >
                    <span class="block h-full bg-green-500" style=move || format!("width: {}%", percent())></span>
                </span>
                <span class="w-20 text-right font-mono text-sm text-slate-500" data-testid="row-counts">
                    {move || b.with(|b| format!("{}/{}", b.counts.finished(), b.counts.total))}
                </span>
                // A fixed width keeps the bars and counts in one column whatever the status.
                <span class="flex w-24 justify-end">
                    <StatusBadge status=Signal::derive(move || b.with(|b| b.status)) />
                </span>
            </a>
        </li>
    }
}
