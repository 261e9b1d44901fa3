//! Shared types and pure logic of batchwatch: one definition of every shape that crosses a
//! boundary (database row, Redis message, SSE payload, UI state), compiled into the server and
//! into the wasm UI alike. No I/O lives here.

pub mod account;
pub mod error;
pub mod id;
pub mod keys;
pub mod live;
pub mod new_batch;
pub mod progress;
pub mod report;
#[cfg(feature = "ssr")]
pub mod source;
pub mod status;

pub use account::Viewer;
pub use error::Error;
pub use id::{BatchId, ItemId};
pub use new_batch::NewBatch;
pub use progress::{Applied, BatchProgress, BatchSummary, Counts, ItemProgress, Page};
pub use report::StatusReport;
pub use status::{BatchStatus, ItemStatus};

/// Milliseconds since the Unix epoch: the one time format of every stored and sent timestamp,
/// the same in SQLite, PostgreSQL, JSON and JavaScript's `Date.now()`.
pub type Millis = i64;
