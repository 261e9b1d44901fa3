//! The clock the pages show times against.

use leptos::prelude::*;

/// The current time in ms, ticking every second in the browser (for "updated 3s ago" and
/// "reconnecting in 2s"); on the server, the time of rendering.
pub fn use_now() -> ReadSignal<f64> {
    #[cfg(feature = "hydrate")]
    {
        let (now, set_now) = signal(js_sys::Date::now());
        if let Ok(handle) = set_interval_with_handle(
            move || set_now.set(js_sys::Date::now()),
            std::time::Duration::from_secs(1),
        ) {
            on_cleanup(move || handle.clear());
        }
        now
    }
    #[cfg(not(feature = "hydrate"))]
    {
        signal(batchwatch_core::now() as f64).0
    }
}
