//! `/login`: sign in with an API token. The form posts to the server (`server::auth::login`),
//! which sets the session cookie and sends the browser on to `next`, or back here with the
//! reason it failed.
//!
//! A sign-in link (`/login#token=...`) never signs in by itself: anyone can send a link, and a
//! browser signed into the sender's account would put everything its person makes there
//! (login CSRF). The page asks the server whose account the token opens and shows a button
//! naming it, and who is signed in now if anyone; only the person's click signs in.

use leptos::{html, prelude::*};
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

const INPUT: &str =
    "w-full rounded-md border border-slate-300 bg-white px-3 py-2 dark:border-slate-700 dark:bg-slate-900";

#[component]
pub fn LoginPage() -> impl IntoView {
    let query = use_query_map();
    let (reason, next) = query.with_untracked(|q| (q.get("error"), q.get("next").unwrap_or_default()));
    let error = reason.map(|reason| match reason.as_str() {
        "limit" => {
            crate::set_status(http::StatusCode::TOO_MANY_REQUESTS);
            "Too many sign-in attempts: wait a minute, then try again."
        }
        "worker" => {
            crate::set_status(http::StatusCode::UNAUTHORIZED);
            "That is a worker's token: workers report status and cannot sign in."
        }
        _ => {
            crate::set_status(http::StatusCode::UNAUTHORIZED);
            "That token is not valid, or it was revoked."
        }
    });
    let token = NodeRef::<html::Input>::new();
    let link = RwSignal::new(None::<Link>);
    // Who is signed in already, for the link's message.
    let current = use_context::<crate::SignedInAs>().and_then(|signed| signed.0).map(|viewer| viewer.name);
    Effect::new(move || read_link_token(token.get(), link, current.clone()));

    view! {
        <Title text="Sign in" />
        <section class="mx-auto max-w-sm space-y-4 py-10" data-testid="login">
            <h1 class="text-2xl font-bold">"Sign in"</h1>
            <p class="text-sm text-slate-600 dark:text-slate-400">
                "Paste your API token. "
                <code class="font-mono">"batchwatch user token <name>"</code>
                " prints a new one."
            </p>
            <form method="post" action="/login" class="space-y-3">
                <input type="hidden" name="next" value=next />
                {move || link.get().map(|link| view! { <LinkAccount link /> })}
                <label class="block text-sm">
                    "Token"
                    <input
                        name="token"
                        type="password"
                        required
                        autocomplete="current-password"
                        class=INPUT
                        node_ref=token
                    />
                </label>
                <button
                    type="submit"
                    class="rounded-md bg-blue-600 px-4 py-2 font-medium text-white hover:bg-blue-700"
                >
                    "Sign in"
                </button>
            </form>
            <p class="text-sm text-red-600" role="alert">
                {error}
            </p>
        </section>
    }
}

/// What the page knows of a sign-in link's token: learnt in the browser only (the server never
/// sees a fragment).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
enum Link {
    Checking,
    /// The token opens `user`'s account; `current` is who is signed in now.
    For {
        user: String,
        current: Option<String>,
    },
    Invalid,
    Failed(String),
}

/// The sign-in link's account and the button that signs in to it.
#[component]
fn LinkAccount(link: Link) -> impl IntoView {
    match link {
        Link::Checking => view! { <p class="text-sm text-slate-500">"Checking the sign-in link…"</p> }.into_any(),
        Link::For { user, current } => view! {
            <div
                class="space-y-3 rounded-md border border-blue-200 bg-blue-50 p-3 text-sm dark:border-blue-900 dark:bg-blue-950"
                data-testid="link-account"
                role="status"
            >
                <p>"This link signs you in as " <strong>{user.clone()}</strong> "."</p>
                {current.map(|current| view! {
                    <p data-testid="link-current">
                        "You are signed in as " <strong>{current}</strong>
                        " now: signing in with the link signs you out of that account."
                    </p>
                })}
                <button
                    type="submit"
                    class="rounded-md bg-blue-600 px-4 py-2 font-medium text-white hover:bg-blue-700"
                >
                    {format!("Sign in as {user}")}
                </button>
            </div>
        }
        .into_any(),
        Link::Invalid => view! {
            <p class="text-sm text-red-600" role="alert">
                "This sign-in link's token is not valid, or it was revoked."
            </p>
        }
        .into_any(),
        Link::Failed(message) => view! { <p class="text-sm text-red-600" role="alert">{message}</p> }.into_any(),
    }
}

/// A sign-in link (`/login#token=...`, printed by `./dev.sh run`) carries the token in its
/// fragment, which the browser never sends: take it out of the address bar and history, put it
/// in the form, and ask whose account it opens. Nothing is submitted.
#[cfg(feature = "hydrate")]
fn read_link_token(
    input: Option<web_sys::HtmlInputElement>,
    link: RwSignal<Option<Link>>,
    current: Option<String>,
) {
    let Some(input) = input else { return };
    let location = window().location();
    let Some(value) = location.hash().ok().and_then(|h| h.strip_prefix("#token=").map(str::to_owned)) else {
        return;
    };
    let here =
        format!("{}{}", location.pathname().unwrap_or_default(), location.search().unwrap_or_default());
    if let Ok(history) = window().history() {
        let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&here));
    }
    input.set_value(&value);
    link.set(Some(Link::Checking));
    leptos::task::spawn_local(async move {
        let checked = match crate::api::token_owner(value).await {
            Ok(Some(user)) => Link::For { user, current },
            Ok(None) => Link::Invalid,
            Err(error) => Link::Failed(
                error.to_string().trim_start_matches("error running server function: ").to_owned(),
            ),
        };
        link.set(Some(checked));
    });
}

#[cfg(not(feature = "hydrate"))]
fn read_link_token<I>(_: Option<I>, _: RwSignal<Option<Link>>, _: Option<String>) {}
