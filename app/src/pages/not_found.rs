//! The page for a URL that names nothing: answered with HTTP 404.

use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn NotFound() -> impl IntoView {
    crate::set_status(http::StatusCode::NOT_FOUND);
    view! { <Problem title="Not found" message="There is no batch or page at this address." /> }
}

/// The page for a URL whose batch id is not an id at all: answered with HTTP 400.
#[component]
pub fn Malformed() -> impl IntoView {
    crate::set_status(http::StatusCode::BAD_REQUEST);
    view! { <Problem title="Bad request" message="This address does not hold a valid batch id." /> }
}

#[component]
fn Problem(title: &'static str, message: &'static str) -> impl IntoView {
    view! {
        <Title text=title />
        <section class="py-16 text-center" data-testid="problem">
            <h1 class="text-3xl font-bold">{title}</h1>
            <p class="mt-3 text-slate-600 dark:text-slate-400">{message}</p>
            <a href="/" class="mt-6 inline-block text-blue-600 underline dark:text-blue-400">
                "All batches"
            </a>
        </section>
    }
}
