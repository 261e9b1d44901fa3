//! The pieces the pages are built from, one component a file.

pub mod controls;
pub mod counters;
pub mod item_finder;
pub mod item_list;
pub mod live_indicator;
pub mod progress_bar;
pub mod run_stats;
pub mod status_badge;
pub mod toasts;
