pub mod counters;
pub mod item_list;
pub mod progress_bar;
pub mod status_badge;
