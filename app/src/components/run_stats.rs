//! How the batch is going in time: throughput and ETA while it runs, "updated Ns ago", and a
//! summary once it is finished.

use batchwatch_core::{
    BatchSummary,
    rate::{Rate, human_duration, time_left},
};
use leptos::prelude::*;

#[component]
pub fn RunStats(
    #[prop(into)] summary: Signal<BatchSummary>,
    #[prop(into)] now: Signal<f64>,
) -> impl IntoView {
    // Samples of the finished count as changes arrive, in the browser's clock.
    let rate = StoredValue::new(Rate::default());
    let (rate_version, set_rate_version) = signal(0u32);
    Effect::new(move |_| {
        let finished = summary.with(|s| s.counts.finished());
        rate.update_value(|r| r.push(js_now(), finished));
        set_rate_version.update(|v| *v += 1);
    });
    let running = move || !summary.with(BatchSummary::is_over);
    let throughput = move || {
        rate_version.track();
        let remaining = summary.with(|s| s.counts.total - s.counts.finished());
        rate.with_value(|r| match (r.per_second(), r.eta_secs(remaining)) {
            (Some(per_s), Some(eta)) => format!("{per_s:.1} items/s · {}", time_left(eta)),
            _ => "measuring speed…".to_owned(),
        })
    };
    let updated = move || {
        let ago = (now.get() - summary.with(|s| s.updated_at) as f64) / 1_000.0;
        format!("updated {} ago", human_duration(ago))
    };
    view! {
        <div class="flex flex-wrap items-center gap-x-4 gap-y-1 text-sm text-slate-600 dark:text-slate-400">
            <Show
                when=running
                fallback=move || {
                    summary
                        .with(|s| {
                            let took = human_duration((s.updated_at - s.created_at) as f64 / 1_000.0);
                            view! {
                                <span data-testid="summary">
                                    {format!(
                                        "Finished: {} done, {} failed, in {took}",
                                        s.counts.completed,
                                        s.counts.failed,
                                    )}
                                </span>
                            }
                        })
                }
            >
                <span data-testid="throughput">{throughput}</span>
            </Show>
            <span data-testid="updated">{updated}</span>
        </div>
    }
}

fn js_now() -> i64 {
    #[cfg(feature = "hydrate")]
    {
        js_sys::Date::now() as i64
    }
    #[cfg(not(feature = "hydrate"))]
    {
        0
    }
}
