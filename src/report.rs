//! A worker's report of an item's new status: the body of
//! `POST /api/batches/{id}/items/{item_id}/status`, and what in-process workers send too.

use serde::{Deserialize, Serialize};

use crate::{Error, ItemId, ItemStatus, text};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    pub status: ItemStatus,
    /// What went wrong, kept only with `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ssr", schema(max_length = 2_000))]
    pub error: Option<String>,
}

impl StatusReport {
    pub const MAX_ERROR_CHARS: usize = 2_000;

    /// Checks the report and keeps an error message only where it belongs: on a failure.
    pub fn validate(self) -> Result<Self, Error> {
        if self.status == ItemStatus::Cancelled {
            return Err(Error::Invalid(
                "items are cancelled with their batch (POST /api/batches/{id}/cancel)".into(),
            ));
        }
        let error = match (self.status, self.error) {
            (ItemStatus::Failed, Some(e)) => {
                if e.chars().count() > Self::MAX_ERROR_CHARS {
                    return Err(Error::Invalid(format!(
                        "error must be at most {} characters",
                        Self::MAX_ERROR_CHARS
                    )));
                }
                text::check_message("error", &e)?;
                let e = e.trim();
                Some(if e.is_empty() { "failed".to_owned() } else { e.to_owned() })
            }
            (ItemStatus::Failed, None) => Some("failed".to_owned()),
            (_, _) => None,
        };
        Ok(Self { status: self.status, error })
    }
}

/// One of many reports in one call (`POST /api/batches/{id}/items/status`): a
/// [`StatusReport`] and the item it is about. Its fields are spelled out rather than flattened:
/// serde cannot refuse unknown fields through a flatten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ItemReport {
    pub item: ItemId,
    pub status: ItemStatus,
    /// What went wrong, kept only with `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ssr", schema(max_length = 2_000))]
    pub error: Option<String>,
}

impl ItemReport {
    /// The most reports one call takes.
    pub const MAX_PER_CALL: usize = 1_000;

    pub fn split(self) -> (ItemId, StatusReport) {
        (self.item, StatusReport { status: self.status, error: self.error })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_keeps_its_error_or_gets_one() {
        let r = StatusReport { status: ItemStatus::Failed, error: Some(" disk full ".into()) };
        assert_eq!(r.validate().unwrap().error.as_deref(), Some("disk full"));
        let r = StatusReport { status: ItemStatus::Failed, error: None };
        assert_eq!(r.validate().unwrap().error.as_deref(), Some("failed"));
    }

    #[test]
    fn other_statuses_drop_the_error() {
        let r = StatusReport { status: ItemStatus::Done, error: Some("x".into()) };
        assert_eq!(r.validate().unwrap().error, None);
    }

    #[test]
    fn an_error_with_control_or_direction_characters_is_rejected() {
        for bad in ["disk\0full", "\u{202E}lluf ksid"] {
            let r = StatusReport { status: ItemStatus::Failed, error: Some(bad.into()) };
            assert!(r.validate().is_err(), "{bad:?}");
        }
        let r = StatusReport { status: ItemStatus::Failed, error: Some("line 1\nline 2".into()) };
        assert_eq!(r.validate().unwrap().error.as_deref(), Some("line 1\nline 2"));
    }

    #[test]
    fn long_error_is_rejected() {
        let r = StatusReport { status: ItemStatus::Failed, error: Some("x".repeat(2_001)) };
        assert!(r.validate().is_err());
    }

    #[test]
    fn unknown_status_or_field_does_not_parse() {
        assert!(serde_json::from_str::<StatusReport>(r#"{"status":"exploded"}"#).is_err());
        assert!(serde_json::from_str::<StatusReport>(r#"{"status":"done","x":1}"#).is_err());
        let ok: StatusReport = serde_json::from_str(r#"{"status":"processing"}"#).unwrap();
        assert_eq!(ok.status, ItemStatus::Processing);
    }
}
