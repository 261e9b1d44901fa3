//! Shared types and pure logic of batchwatch: one definition of every shape that crosses a
//! boundary (database row, Redis message, SSE payload, UI state), compiled into the server and
//! into the wasm UI alike. No I/O lives here.

pub mod account;
pub mod control;
pub mod error;
pub mod feed;
pub mod id;
pub mod keys;
pub mod new_batch;
pub mod progress;
pub mod rate;
pub mod reconnect;
pub mod report;
#[cfg(feature = "ssr")]
pub mod source;
pub mod status;
pub mod text;
pub mod window;

pub use account::{Role, Viewer};
pub use control::Control;
pub use error::Error;
pub use id::{BatchId, ItemId};
pub use new_batch::{NewBatch, NewItems};
pub use progress::{
    Applied, BatchProgress, BatchSummary, Counts, ItemProgress, LeftOut, Page, latest_each, leave_out_items,
    merge_events,
};
pub use report::{ItemReport, StatusReport};
pub use status::{BatchStatus, ItemStatus};
pub use window::{ItemQuery, ItemsPage};

/// Milliseconds since the Unix epoch: the one time format of every stored and sent timestamp,
/// the same in SQLite, PostgreSQL, JSON and JavaScript's `Date.now()`.
pub type Millis = i64;

/// Now, as [`Millis`]: the one clock of every stored time and of the server-rendered pages. The
/// browser has no such clock in wasm (`SystemTime` panics there) and reads `Date.now()`.
#[cfg(not(target_arch = "wasm32"))]
pub fn now() -> Millis {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}
