//! Item and batch statuses, the item state machine, and how a batch's status follows from its
//! items.

use serde::{Deserialize, Serialize};

use crate::{Counts, Error};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    Pending,
    Processing,
    Done,
    Failed,
    /// Its batch was cancelled before it finished. Set by a cancel, never reported.
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum BatchStatus {
    Queued,
    Processing,
    /// Its owner paused it: workers take nothing more from it until it is resumed.
    Paused,
    Partial,
    Completed,
    Failed,
    /// Its owner cancelled it: what had not finished was cancelled.
    Cancelled,
}

impl ItemStatus {
    pub const ALL: [ItemStatus; 5] =
        [Self::Pending, Self::Processing, Self::Done, Self::Failed, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The one status an item must be in to move to `self`. Every target has exactly one
    /// legal source, which lets the store check a transition inside its `UPDATE ... WHERE`.
    pub fn source(self) -> ItemStatus {
        match self {
            Self::Processing => Self::Pending,
            Self::Done | Self::Failed => Self::Processing,
            // A retry: a failed item goes back to the queue.
            Self::Pending => Self::Failed,
            // Never reported (a report of it is refused): nothing moves to it by a report.
            Self::Cancelled => Self::Cancelled,
        }
    }

    /// Pending → Processing → Done | Failed, and Failed → Pending for a retry.
    pub fn check_transition(self, to: ItemStatus) -> Result<(), Error> {
        if to != Self::Cancelled && to.source() == self {
            Ok(())
        } else {
            Err(Error::IllegalTransition { from: self, to })
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }
}

impl BatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Paused => "paused",
            Self::Partial => "partial",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Terminal: every item is done, failed or cancelled, and nothing more happens unless
    /// its owner retries failed items.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Partial | Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// The batch status that follows from its item counts: none started → Queued; anything
    /// pending or processing after a start → Processing; all terminal → Cancelled when any was
    /// cancelled, Completed when all are done, Failed when all failed, Partial when mixed.
    /// (Paused is its owner's word, not the counts': see `BatchSummary::set_counts`.)
    pub fn derive(counts: &Counts) -> BatchStatus {
        let terminal = counts.finished();
        if counts.total == 0 || terminal == counts.total {
            if counts.cancelled > 0 {
                BatchStatus::Cancelled
            } else if counts.failed == 0 {
                BatchStatus::Completed
            } else if counts.completed == 0 {
                BatchStatus::Failed
            } else {
                BatchStatus::Partial
            }
        } else if counts.processing == 0 && terminal == 0 {
            BatchStatus::Queued
        } else {
            BatchStatus::Processing
        }
    }
}

/// `Display`, `FromStr` and `TryFrom<String>` (how the database hands text over) for an enum
/// with an `as_str`; `what` names it in the error for an unknown word.
macro_rules! text_enum {
    ($name:ident, $what:literal, [$($variant:ident),*]) => {
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::Error;

            fn from_str(s: &str) -> Result<Self, $crate::Error> {
                $(if s == Self::$variant.as_str() {
                    return Ok(Self::$variant);
                })*
                Err($crate::Error::Unknown { what: $what, value: s.chars().take(32).collect() })
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::Error;

            fn try_from(s: String) -> Result<Self, $crate::Error> {
                s.parse()
            }
        }
    };
}
pub(crate) use text_enum;

text_enum!(ItemStatus, "status", [Pending, Processing, Done, Failed, Cancelled]);
text_enum!(BatchStatus, "status", [Queued, Processing, Paused, Partial, Completed, Failed, Cancelled]);

#[cfg(test)]
mod tests {
    use super::*;
    use ItemStatus::*;

    fn counts(queued: u32, processing: u32, completed: u32, failed: u32) -> Counts {
        Counts::of_each(queued, processing, completed, failed)
    }

    #[test]
    fn none_started_is_queued() {
        assert_eq!(BatchStatus::derive(&counts(5, 0, 0, 0)), BatchStatus::Queued);
    }

    #[test]
    fn work_in_flight_is_processing() {
        assert_eq!(BatchStatus::derive(&counts(4, 1, 0, 0)), BatchStatus::Processing);
        assert_eq!(BatchStatus::derive(&counts(4, 0, 1, 0)), BatchStatus::Processing);
        assert_eq!(BatchStatus::derive(&counts(4, 0, 0, 1)), BatchStatus::Processing);
        assert_eq!(BatchStatus::derive(&counts(0, 1, 3, 1)), BatchStatus::Processing);
    }

    #[test]
    fn all_done_is_completed() {
        assert_eq!(BatchStatus::derive(&counts(0, 0, 5, 0)), BatchStatus::Completed);
    }

    #[test]
    fn all_failed_is_failed() {
        assert_eq!(BatchStatus::derive(&counts(0, 0, 0, 5)), BatchStatus::Failed);
    }

    #[test]
    fn mixed_terminal_is_partial() {
        assert_eq!(BatchStatus::derive(&counts(0, 0, 4, 1)), BatchStatus::Partial);
    }

    #[test]
    fn a_batch_with_cancelled_items_that_is_over_is_cancelled() {
        let mut c = counts(0, 0, 3, 1);
        c.cancelled = 2;
        c.total += 2;
        assert_eq!(BatchStatus::derive(&c), BatchStatus::Cancelled);
    }

    #[test]
    fn terminal_statuses() {
        assert!(!BatchStatus::Queued.is_terminal());
        assert!(!BatchStatus::Processing.is_terminal());
        assert!(BatchStatus::Partial.is_terminal());
        assert!(BatchStatus::Completed.is_terminal());
        assert!(BatchStatus::Failed.is_terminal());
        assert!(BatchStatus::Cancelled.is_terminal());
        assert!(!BatchStatus::Paused.is_terminal());
    }

    #[test]
    fn legal_transitions() {
        let legal = [(Pending, Processing), (Processing, Done), (Processing, Failed), (Failed, Pending)];
        for from in ItemStatus::ALL {
            for to in ItemStatus::ALL {
                let expected = legal.contains(&(from, to));
                assert_eq!(from.check_transition(to).is_ok(), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn illegal_transition_names_both_ends() {
        let err = Done.check_transition(Processing).unwrap_err();
        assert_eq!(err, Error::IllegalTransition { from: Done, to: Processing });
        assert_eq!(err.to_string(), "an item cannot go from done to processing");
    }

    #[test]
    fn text_round_trip() {
        for s in ItemStatus::ALL {
            assert_eq!(s.as_str().parse::<ItemStatus>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        for s in ["queued", "processing", "paused", "partial", "completed", "failed", "cancelled"] {
            assert_eq!(s.parse::<BatchStatus>().unwrap().as_str(), s);
        }
        assert!(matches!("DONE".parse::<ItemStatus>(), Err(Error::Unknown { what: "status", .. })));
    }
}
