//! Batch and item ids: UUIDs with a type each, so one cannot be passed for the other.
//! Parsing a malformed id is an error value, never a panic.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Error;

macro_rules! uuid_id {
    ($name:ident, $what:literal) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        #[cfg(any(test, feature = "ssr"))]
        impl $name {
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        #[cfg(any(test, feature = "ssr"))]
        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Error> {
                Uuid::try_parse(s)
                    .map(Self)
                    .map_err(|_| Error::MalformedId { what: $what, value: s.chars().take(64).collect() })
            }
        }

        // The database stores ids as text, the same on SQLite and PostgreSQL.
        impl TryFrom<String> for $name {
            type Error = Error;

            fn try_from(s: String) -> Result<Self, Error> {
                s.parse()
            }
        }
    };
}

uuid_id!(BatchId, "batch");
uuid_id!(ItemId, "item");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_hyphenated() {
        let text = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        let id: BatchId = text.parse().unwrap();
        assert_eq!(id.to_string(), text);
        let upper: ItemId = text.to_uppercase().parse().unwrap();
        assert_eq!(upper.to_string(), text);
    }

    #[test]
    fn malformed_is_an_error() {
        for bad in ["", "nope", "67e55044-10b1-426f-9247", "67e55044-10b1-426f-9247-bb680e5fe0c8x", "💥"] {
            let err = bad.parse::<BatchId>().unwrap_err();
            assert!(matches!(err, Error::MalformedId { what: "batch", .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn long_garbage_is_truncated_in_the_error() {
        let err = "x".repeat(10_000).parse::<ItemId>().unwrap_err();
        assert!(err.to_string().len() < 200);
    }

    #[test]
    fn serializes_as_a_plain_string() {
        let id = BatchId::new();
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{id}\""));
    }
}
