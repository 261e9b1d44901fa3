//! Finding items in a batch of any size: status tabs with live counts, a search by name, and
//! one page of items with links to the pages before and after. The view lives in the URL
//! (`?status=failed&q=invoice&after=120`): a link reproduces it, the server renders it in the
//! first HTML, and with JavaScript off the tabs, the search and the pager are plain links and
//! a plain form.

use batchwatch_core::{BatchId, ItemQuery, ItemStatus, ItemsPage, window::Window};
use leptos::prelude::*;
use leptos_router::{
    NavigateOptions,
    hooks::{use_navigate, use_query_map},
};

use crate::{
    api::get_items,
    components::item_list::ItemList,
    json::{self, Json},
    live_batch::{ItemCell, LiveState},
};

const TABS: [(&str, Option<ItemStatus>); 6] = [
    ("All", None),
    ("Pending", Some(ItemStatus::Pending)),
    ("Processing", Some(ItemStatus::Processing)),
    ("Done", Some(ItemStatus::Done)),
    ("Failed", Some(ItemStatus::Failed)),
    ("Cancelled", Some(ItemStatus::Cancelled)),
];

/// The page's address for a view of batch `id`.
fn href(id: BatchId, query: &ItemQuery) -> String {
    match query.to_url() {
        url if url.is_empty() => format!("/batches/{id}"),
        url => format!("/batches/{id}?{url}"),
    }
}

/// A page of items as read for a view.
pub type ItemsResource = Resource<(ItemQuery, Result<Option<ItemsPage>, ServerFnError>), Json>;

/// The view the page's URL asks for, and its page of items, read again when the view changes
/// and whenever `reread` moves (the page missed events, or emptied). Made once per page,
/// beside the batch's own lookup and outside its `Suspense`, so that both are read at once
/// and the items are sent to the browser once.
pub fn use_items(
    id: impl Fn() -> String + Send + Sync + 'static,
    reread: RwSignal<u32>,
) -> (Memo<ItemQuery>, ItemsResource) {
    let url = use_query_map();
    let query = Memo::new(move |_| url.with(|map| ItemQuery::from_url(|key| map.get(key))));
    let page = json::resource(
        move || (id(), query.get(), reread.get()),
        move |(id, query, _)| async move {
            let page = match id.parse::<BatchId>() {
                Ok(id) => get_items(id, query.clone()).await,
                Err(_) => Ok(None),
            };
            (query, page)
        },
    );
    (query, page)
}

#[component]
pub fn ItemFinder(state: LiveState, query: Memo<ItemQuery>, page: ItemsResource) -> impl IntoView {
    let id = state.summary.with_untracked(|s| s.batch_id);
    let rows = Signal::derive(move || state.window.with(|w| w.rows.clone()));

    view! {
        <section class="space-y-3" aria-labelledby="items-heading">
            <div class="flex flex-wrap items-baseline justify-between gap-2">
                <h2 id="items-heading" class="text-lg font-semibold">"Items"</h2>
                // The whole batch, streamed by the server whatever its size.
                <p class="text-sm text-slate-600 dark:text-slate-400">
                    "Download every item: "
                    <a class="underline" href=format!("/api/batches/{id}/export?format=csv") download data-testid="export-csv">"CSV"</a>
                    " · "
                    <a class="underline" href=format!("/api/batches/{id}/export?format=ndjson") download data-testid="export-ndjson">"NDJSON"</a>
                </p>
            </div>
            <Tabs id state query />
            <Search id query />
            <div role="tabpanel" id="item-panel" aria-labelledby=move || format!("tab-{}", query.with(|q| q.status.map_or("all", ItemStatus::as_str)))>
                <Transition fallback=|| view! { <p class="text-slate-500">"Loading items…"</p> }>
                    {move || Suspend::new(async move {
                        match page.await {
                            (query, Ok(Some(items))) => {
                                state.show(query, items);
                                // After `show`: the pager follows the page it shows.
                                view! {
                                    <ItemList batch=id rows />
                                    <Empty rows />
                                    <Pager id state />
                                }
                                    .into_any()
                            }
                            (_, Ok(None)) => view! { <p class="text-slate-500">"This batch is gone."</p> }.into_any(),
                            (_, Err(e)) => view! { <p class="text-red-600" role="alert">{e.to_string()}</p> }.into_any(),
                        }
                    })}
                </Transition>
            </div>
        </section>
    }
}

#[component]
fn Tabs(id: BatchId, state: LiveState, query: Memo<ItemQuery>) -> impl IntoView {
    // The arrow keys work once the page is hydrated; until then (and without JavaScript) each
    // tab is a Tab stop of its own.
    let hydrated = RwSignal::new(false);
    Effect::new(move || hydrated.set(true));
    let tabs = TABS.map(|(label, status)| {
        let to = move || {
            href(id, &ItemQuery { status, ..query.with(ItemQuery::first_page) })
        };
        let selected = move || query.with(|q| q.status == status);
        let count = move || state.summary.with(|s| status.map_or(s.counts.total, |status| s.counts.of(status)));
        let key = status.map_or("all", ItemStatus::as_str);
        view! {
            <a
                href=to
                role="tab"
                id=format!("tab-{key}")
                aria-controls="item-panel"
                aria-selected=move || selected().to_string()
                // One stop in the Tab order: the arrow keys move along the tabs.
                tabindex=move || if selected() || !hydrated.get() { "0" } else { "-1" }
                data-testid=format!("tab-{key}")
                class=move || {
                    let look = if selected() {
                        "border-blue-600 text-blue-700 dark:text-blue-300"
                    } else {
                        "border-transparent text-slate-600 hover:text-slate-900 dark:text-slate-400 dark:hover:text-slate-100"
                    };
                    format!("whitespace-nowrap border-b-2 px-3 py-2 text-sm font-medium {look}")
                }
            >
                {label}
                " "
                <span class="rounded-full bg-slate-100 px-2 font-mono text-xs dark:bg-slate-800" data-testid="tab-count">
                    {count}
                </span>
            </a>
        }
    });
    view! {
        <nav
            role="tablist"
            aria-label="Items by status"
            class="flex gap-1 overflow-x-auto border-b border-slate-200 dark:border-slate-800"
            on:keydown=move_along
        >
            {tabs}
        </nav>
    }
}

/// The WAI-ARIA tabs pattern with manual activation: the arrow keys, Home and End move the
/// focus along the tabs, Enter follows the focused tab's link.
fn move_along(event: leptos::ev::KeyboardEvent) {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        let step = match event.key().as_str() {
            "ArrowRight" => 1,
            "ArrowLeft" => -1,
            "Home" => i32::MIN,
            "End" => i32::MAX,
            _ => return,
        };
        let Some(list) = event.current_target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()) else {
            return;
        };
        let Ok(tabs) = list.query_selector_all("[role=tab]") else { return };
        let tabs: Vec<web_sys::HtmlElement> =
            (0..tabs.length()).filter_map(|i| tabs.item(i)?.dyn_into().ok()).collect();
        let focused = document().active_element();
        let at = tabs.iter().position(|tab| focused.as_ref() == Some(tab.as_ref())).unwrap_or(0) as i32;
        let last = tabs.len() as i32 - 1;
        let next = match step {
            i32::MIN => 0,
            i32::MAX => last,
            step => (at + step).rem_euclid(last + 1),
        };
        if let Some(tab) = tabs.get(next as usize) {
            event.prevent_default();
            let _ = tab.focus();
        }
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = event;
}

/// A GET form: without JavaScript the browser asks the server for the page of that view; with
/// it, the page moves to that view without a reload.
#[component]
fn Search(id: BatchId, query: Memo<ItemQuery>) -> impl IntoView {
    let status = move || query.with(|q| q.status.map(ItemStatus::as_str));
    let input = NodeRef::<leptos::html::Input>::new();
    let navigate = use_navigate();
    let on_submit = move |event: leptos::ev::SubmitEvent| {
        event.prevent_default();
        let q = input.get().map(|input| input.value()).filter(|q| !q.is_empty());
        let to = ItemQuery { status: query.with(|q| q.status), q, ..ItemQuery::default() };
        navigate(&href(id, &to), NavigateOptions::default());
    };
    view! {
        <form method="get" action=format!("/batches/{id}") role="search" class="flex gap-2" on:submit=on_submit>
            {move || status().map(|status| view! { <input type="hidden" name="status" value=status /> })}
            <label class="sr-only" for="item-search">
                "Find items by name"
            </label>
            <input
                id="item-search"
                node_ref=input
                type="search"
                name="q"
                maxlength=ItemQuery::MAX_Q_CHARS
                placeholder="Find items by name"
                value=move || query.with(|q| q.q.clone().unwrap_or_default())
                class="w-full rounded-md border border-slate-300 bg-white px-3 py-1.5 text-sm dark:border-slate-700 dark:bg-slate-900"
            />
            <button
                type="submit"
                class="rounded-md border border-slate-300 px-3 py-1.5 text-sm hover:bg-slate-100 dark:border-slate-700 dark:hover:bg-slate-800"
            >
                "Find"
            </button>
        </form>
    }
}

#[component]
fn Empty(rows: Signal<Vec<ItemCell>>) -> impl IntoView {
    move || {
        rows.with(Vec::is_empty).then(|| {
            view! { <p class="px-3 py-6 text-center text-sm text-slate-500" data-testid="no-items">"No items here."</p> }
        })
    }
}

#[component]
fn Pager(id: BatchId, state: LiveState) -> impl IntoView {
    let link = move |label: &'static str,
                     testid: &'static str,
                     cursor: fn(&Window<ItemCell>) -> Option<ItemQuery>| {
        move || {
            state.window.with(cursor).map(|to| {
                view! {
                    <a
                        href=href(id, &to)
                        data-testid=testid
                        class="rounded-md border border-slate-300 px-3 py-1 text-sm hover:bg-slate-100 dark:border-slate-700 dark:hover:bg-slate-800"
                    >
                        {label}
                    </a>
                }
            })
        }
    };
    view! {
        <nav aria-label="Pages of items" class="flex justify-between">
            <span>
                {link("← Previous", "prev", |w| {
                    w.prev.map(|before| ItemQuery { before: Some(before), ..w.query.first_page() })
                })}
            </span>
            <span>
                {link("Next →", "next", |w| {
                    w.next.map(|after| ItemQuery { after: Some(after), ..w.query.first_page() })
                })}
            </span>
        </nav>
    }
}
