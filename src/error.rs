//! The root crate's error: what can be wrong with input before any I/O happens. The server
//! maps each variant to an HTTP status; this crate compiles to wasm, so it cannot.

use crate::ItemStatus;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("malformed {what} id: {value:?}")]
    MalformedId { what: &'static str, value: String },
    #[error("{0}")]
    Invalid(String),
    #[error("an item cannot go from {from} to {to}")]
    IllegalTransition { from: ItemStatus, to: ItemStatus },
    /// A word that names none of a text enum's values (a status, a role).
    #[error("unknown {what} {value:?}")]
    Unknown { what: &'static str, value: String },
}
