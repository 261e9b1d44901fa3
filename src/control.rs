//! What a batch's owner can do to it: pause, resume, cancel, retry every failed item; and when
//! each is allowed. Each is a change like any other (one transaction, `seq` + 1, one event).

use serde::{Deserialize, Serialize};

use crate::{BatchStatus, BatchSummary};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Control {
    /// Workers take nothing more from it; items in progress finish.
    Pause,
    Resume,
    /// The batch is over: every item not finished (pending or in progress) is cancelled.
    Cancel,
    /// Every failed item back to pending: a finished batch opens again.
    Retry,
}

impl Control {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Cancel => "cancel",
            Self::Retry => "retry",
        }
    }

    /// Why the batch's state does not allow it (answered 409), or `Ok`.
    pub fn check(self, batch: &BatchSummary) -> Result<(), &'static str> {
        let status = batch.status;
        match self {
            Self::Pause if status == BatchStatus::Paused => Err("the batch is paused already"),
            Self::Pause if status.is_terminal() => Err("a finished batch cannot be paused"),
            Self::Resume if status != BatchStatus::Paused => Err("the batch is not paused"),
            Self::Cancel if status.is_terminal() => Err("a finished batch cannot be cancelled"),
            Self::Retry if status == BatchStatus::Cancelled => Err("a cancelled batch cannot be retried"),
            Self::Retry if batch.counts.failed == 0 => Err("the batch has no failed items"),
            _ => Ok(()),
        }
    }

    /// The summary after the control, within its transaction (`seq` taken already): the
    /// status that follows. A cancel or a retry changes no counts itself: its items do, as
    /// each is cancelled or queued again, the first page in the control's own change and the
    /// rest a page per change after it, so that no change grows with the batch.
    pub fn apply(self, batch: &mut BatchSummary) {
        match self {
            Self::Pause => batch.status = BatchStatus::Paused,
            // `set_counts` below derives the status again.
            Self::Resume => batch.status = BatchStatus::Processing,
            Self::Cancel => batch.status = BatchStatus::Cancelled,
            Self::Retry => {}
        }
        batch.set_counts(batch.counts);
    }
}

crate::status::text_enum!(Control, "control", [Pause, Resume, Cancel, Retry]);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchId, Counts};

    fn batch(queued: u32, processing: u32, completed: u32, failed: u32) -> BatchSummary {
        let counts = Counts::of_each(queued, processing, completed, failed);
        let mut summary = BatchSummary::new(BatchId::new(), "b".into(), Counts::queued(counts.total), 1, 0);
        summary.set_counts(counts);
        summary
    }

    #[test]
    fn a_paused_batch_stays_paused_as_items_finish_until_resumed_or_over() {
        let mut b = batch(3, 1, 0, 0);
        Control::Pause.apply(&mut b);
        assert_eq!(b.status, BatchStatus::Paused);
        let mut counts = b.counts;
        counts.apply(crate::ItemStatus::Processing, crate::ItemStatus::Done);
        b.set_counts(counts);
        assert_eq!(b.status, BatchStatus::Paused, "an item in progress finished");
        assert_eq!(Control::Pause.check(&b), Err("the batch is paused already"));
        Control::Resume.apply(&mut b);
        assert_eq!(b.status, BatchStatus::Processing);
        assert_eq!(Control::Resume.check(&b), Err("the batch is not paused"));
    }

    #[test]
    fn cancel_ends_the_batch_and_it_stays_cancelled_as_its_items_are() {
        let mut b = batch(5, 2, 3, 1);
        Control::Cancel.apply(&mut b);
        assert_eq!((b.status, b.counts), (BatchStatus::Cancelled, Counts::of_each(5, 2, 3, 1)));
        for control in [Control::Cancel, Control::Pause, Control::Retry] {
            assert!(control.check(&b).is_err(), "{control:?} on a cancelled batch");
        }
        // Its items are cancelled a page at a time; one in progress may still finish.
        let mut counts = b.counts;
        counts.apply(crate::ItemStatus::Pending, crate::ItemStatus::Cancelled);
        counts.apply(crate::ItemStatus::Processing, crate::ItemStatus::Done);
        b.set_counts(counts);
        assert_eq!((b.status, b.percent), (BatchStatus::Cancelled, 54));
        for _ in 0..4 {
            counts.apply(crate::ItemStatus::Pending, crate::ItemStatus::Cancelled);
        }
        counts.apply(crate::ItemStatus::Processing, crate::ItemStatus::Cancelled);
        b.set_counts(counts);
        assert_eq!((b.status, b.percent, b.counts.cancelled), (BatchStatus::Cancelled, 100, 6));
    }

    #[test]
    fn retry_reopens_a_finished_batch_and_needs_failed_items() {
        let mut b = batch(0, 0, 3, 2);
        assert_eq!(b.status, BatchStatus::Partial);
        Control::Retry.check(&b).unwrap();
        Control::Retry.apply(&mut b);
        assert_eq!(b.status, BatchStatus::Partial, "until its items are queued again");
        let mut counts = b.counts;
        counts.apply(crate::ItemStatus::Failed, crate::ItemStatus::Pending);
        b.set_counts(counts);
        assert_eq!((b.status, b.counts.queued, b.counts.failed), (BatchStatus::Processing, 1, 1));
        counts.apply(crate::ItemStatus::Failed, crate::ItemStatus::Pending);
        b.set_counts(counts);
        assert_eq!(Control::Retry.check(&b), Err("the batch has no failed items"));
        assert_eq!(Control::Cancel.check(&batch(0, 0, 1, 0)), Err("a finished batch cannot be cancelled"));
    }
}
