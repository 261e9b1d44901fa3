//! batchwatch's pages: rendered on the server with the current data in the first HTML, then
//! hydrated in the browser.

pub mod api;
mod components;
mod json;
pub mod live_batch;
mod now;
mod pages;
#[cfg(feature = "hydrate")]
mod stream_client;
mod user_feed;

use batchwatch_core::Viewer;
use leptos::prelude::*;
use leptos_meta::{HashedStylesheet, MetaTags, Title, provide_meta_context};
use leptos_router::{
    ParamSegment, SsrMode, StaticSegment,
    components::{Route, Router, Routes},
};

use crate::{
    components::toasts::{NotifyButton, Toasts},
    pages::{batch::BatchPage, home::HomePage, login::LoginPage, not_found::NotFound},
    user_feed::UserFeed,
};

/// The HTML document around the app, rendered on the server only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    #[cfg(feature = "ssr")]
    set_content_security_policy(&options);
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
                <link rel="icon" href="/favicon.svg" type="image/svg+xml" />
                <AutoReload options=options.clone() />
                // The build's CSS, under its hashed name when the build hashes (`hash.txt`).
                <HashedStylesheet id="leptos" options=options.clone() />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body class="min-h-screen bg-slate-50 text-slate-900 antialiased dark:bg-slate-950 dark:text-slate-100">
                <App />
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    UserFeed::provide();
    let viewer = api::signed_in();
    provide_context(SignedInAs(viewer.clone()));
    // Tells tests (and curious people) that the wasm has taken over the page.
    Effect::new(|| {
        if let Some(body) = document().body() {
            let _ = body.set_attribute("data-hydrated", "true");
        }
    });

    view! {
        <Title formatter=title />
        <Router>
            <header class="border-b border-slate-200 bg-white/80 dark:border-slate-800 dark:bg-slate-900/80">
                <nav class="mx-auto flex max-w-4xl items-center gap-4 px-4 py-3">
                    <a href="/" class="text-lg font-semibold tracking-tight">
                        "batchwatch"
                    </a>
                    <SignedIn viewer />
                </nav>
            </header>
            <main class="mx-auto max-w-4xl px-4 py-6">
                <Routes fallback=NotFound>
                    <Route path=StaticSegment("") view=HomePage ssr=SsrMode::Async />
                    <Route path=StaticSegment("login") view=LoginPage />
                    <Route
                        path=(StaticSegment("batches"), ParamSegment("id"))
                        view=BatchPage
                        ssr=SsrMode::Async
                    />
                </Routes>
            </main>
            <Toasts />
        </Router>
    }
}

/// Who is signed in on this page ([`api::signed_in`]), for the pages that say so.
#[derive(Clone)]
pub struct SignedInAs(pub Option<Viewer>);

/// Who is signed in, and the way out; nothing for a signed-out visitor. Someone signed in
/// follows their batches on every page (the user's stream).
#[component]
fn SignedIn(viewer: Option<Viewer>) -> impl IntoView {
    let feed = expect_context::<UserFeed>();
    viewer.map(|viewer| {
        Effect::new(move || feed.start());
        view! {
            <div class="ml-auto flex items-center gap-3 text-sm">
                <NotifyButton />
                <span class="text-slate-600 dark:text-slate-400" data-testid="viewer">
                    {viewer.name}
                </span>
                <form method="post" action="/logout">
                    <button
                        type="submit"
                        class="rounded-md border border-slate-300 px-3 py-1 hover:bg-slate-100 dark:border-slate-700 dark:hover:bg-slate-800"
                    >
                        "Sign out"
                    </button>
                </form>
            </div>
        }
    })
}

/// A page may run our own scripts, the inline ones leptos writes with this response's nonce
/// (hydration, resolved resources), and compile wasm; nothing may frame it. Styles allow
/// inline attributes for the progress bar's width. Live reload under `cargo leptos watch`
/// needs its websocket.
pub fn content_security_policy(nonce: &str, reload_port: Option<u32>) -> String {
    let reload = reload_port.map(|p| format!(" ws://127.0.0.1:{p} ws://localhost:{p}")).unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'{reload}; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

#[cfg(feature = "ssr")]
fn set_content_security_policy(options: &LeptosOptions) {
    use http::{HeaderValue, header::CONTENT_SECURITY_POLICY};
    let (Some(nonce), Some(response)) =
        (leptos::nonce::use_nonce(), use_context::<leptos_axum::ResponseOptions>())
    else {
        // The response then goes out with the server's catch-all policy, which forbids the
        // page's own scripts: seen now and then in the CSP Playwright test, cause unknown.
        leptos::logging::warn!("a page without its Content-Security-Policy: no nonce or response options");
        return;
    };
    // The same condition as `AutoReload`'s for writing its script.
    let watching = std::env::var("LEPTOS_WATCH").is_ok();
    let reload_port = options.reload_external_port.unwrap_or(options.reload_port);
    let policy = content_security_policy(&nonce, watching.then_some(reload_port));
    if let Ok(value) = HeaderValue::from_str(&policy) {
        response.insert_header(CONTENT_SECURITY_POLICY, value);
    }
}

/// The document title. leptos_meta 0.8 writes the title's text into the server's HTML
/// unescaped (its `to_html_with_buf` ignores `escape`), so a batch named
/// `</title><script>…` would become markup: escape it there. The browser sets
/// `document.title`, which is never parsed, so it gets the text as is.
fn title(page: String) -> String {
    let title = format!("{page} · batchwatch");
    if cfg!(feature = "ssr") {
        title.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
    } else {
        title
    }
}

/// Sets the HTTP status of the page being rendered on the server; nothing in the browser.
pub(crate) fn set_status(status: http::StatusCode) {
    #[cfg(feature = "ssr")]
    if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
        response.set_status(status);
    }
    #[cfg(not(feature = "ssr"))]
    let _ = status;
}
