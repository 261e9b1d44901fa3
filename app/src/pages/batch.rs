//! `/batches/{id}`: one batch, rendered on the server with its current progress and the view
//! of its items the URL asks for.

use batchwatch_core::{BatchSummary, ItemQuery};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;

use crate::{
    api::{Lookup, lookup},
    components::{
        controls::Controls,
        counters::Counters,
        item_finder::{ItemFinder, ItemsResource, use_items},
        live_indicator::LiveIndicator,
        progress_bar::ProgressBar,
        run_stats::RunStats,
        status_badge::StatusBadge,
    },
    json,
    live_batch::use_live_batch,
    now::use_now,
    pages::not_found::{Malformed, NotFound},
};

#[component]
pub fn BatchPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let lookup = json::resource(id, lookup);
    let reread = RwSignal::new(0);
    let (query, items) = use_items(id, reread);

    view! {
        <Suspense fallback=|| view! { <p class="text-slate-500">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match lookup.await {
                    Ok(Lookup::Found(summary)) => {
                        view! { <BatchView summary=*summary reread query items /> }.into_any()
                    }
                    Ok(Lookup::NotFound) => view! { <NotFound /> }.into_any(),
                    Ok(Lookup::Malformed) => view! { <Malformed /> }.into_any(),
                    Err(e) => {
                        crate::set_status(http::StatusCode::INTERNAL_SERVER_ERROR);
                        view! { <p class="text-red-600" role="alert">{e.to_string()}</p> }.into_any()
                    }
                }
            })}
        </Suspense>
    }
}

#[component]
fn BatchView(
    summary: BatchSummary,
    reread: RwSignal<u32>,
    query: Memo<ItemQuery>,
    items: ItemsResource,
) -> impl IntoView {
    let live = use_live_batch(summary, reread);
    let now = use_now();
    let summary = live.state.summary;
    // A batch's name never changes. A plain value, too, because leptos_meta reads the title
    // after the page's reactive arena is gone, where reading a signal panics.
    let name = summary.with_untracked(|s| s.name.clone());
    let counts = Signal::derive(move || summary.with(|s| s.counts));

    view! {
        <Title text=name.clone() />
        <article class="space-y-6" data-testid="batch">
            <div class="flex flex-wrap items-center justify-between gap-3">
                <h1 class="min-w-0 break-words text-2xl font-bold">{name}</h1>
                <StatusBadge status=Signal::derive(move || summary.with(|s| s.status)) />
            </div>
            <Controls summary />
            <LiveIndicator connection=live.connection now retry=live.retry />
            <ProgressBar counts />
            <RunStats summary now />
            <Counters counts />
            <ItemFinder state=live.state query page=items />
        </article>
    }
}
