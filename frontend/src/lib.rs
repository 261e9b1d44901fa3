//! The hydrate entry: the browser loads this wasm and takes over the server-rendered page.
// The batch page's view type nests deeper than rustc's default limit in the release build.
#![recursion_limit = "256"]

#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::App);
}
