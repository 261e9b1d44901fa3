//! `/login`: sign in with an API token. The form posts to the server (`server::auth::login`),
//! which sets the session cookie and sends the browser on to `next`, or back here with the
//! reason it failed.

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
    let form = NodeRef::<html::Form>::new();
    let token = NodeRef::<html::Input>::new();
    Effect::new(move || submit_link_token(form.get(), token.get()));

    view! {
        <Title text="Sign in" />
        <section class="mx-auto max-w-sm space-y-4 py-10" data-testid="login">
            <h1 class="text-2xl font-bold">"Sign in"</h1>
            <p class="text-sm text-slate-600 dark:text-slate-400">
                "Paste your API token. "
                <code class="font-mono">"batchwatch user token <name>"</code>
                " prints a new one."
            </p>
            <form method="post" action="/login" class="space-y-3" node_ref=form>
                <input type="hidden" name="next" value=next />
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

/// A sign-in link (`/login#token=...`, printed by `./dev.sh run`) carries the token in its
/// fragment, which the browser never sends: put it in the form and submit it, after taking it
/// out of the address bar and history.
#[cfg(feature = "hydrate")]
fn submit_link_token(form: Option<web_sys::HtmlFormElement>, input: Option<web_sys::HtmlInputElement>) {
    let (Some(form), Some(input)) = (form, input) else { return };
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
    let _ = form.submit();
}

#[cfg(not(feature = "hydrate"))]
fn submit_link_token<F, I>(_: Option<F>, _: Option<I>) {}
