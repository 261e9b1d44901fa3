//! Fair claims: workers serve the owners that have pending work in turn, and each owner's
//! batches in turn.
//!
//! Why round-robin and not oldest batch first with a cap per batch: a cap still lets the one
//! who queues first (or most) hold every worker until their batches drain, and picking a cap
//! means guessing how big batches are. In turn by owner, a person's first items start after
//! at most one chunk per other active owner, however many batches anyone has queued; a
//! person's own batches then share their turn.

use std::collections::HashMap;

use batchwatch_core::{BatchId, ItemProgress};

use crate::{batches::Batches, error::Result};

/// Owners remembered with their last batch served; past this, the memory starts over.
const REMEMBERED: usize = 10_000;

/// Whose turn it is: the owner served last, and each owner's batch served last.
#[derive(Debug, Default)]
pub struct Turns {
    owner: String,
    last_batch: HashMap<String, BatchId>,
}

impl Turns {
    /// Claims up to `max` items from the next batch in turn; empty when no batch has pending
    /// items. A batch drained by another process meanwhile hands the turn on.
    pub async fn claim(&mut self, batches: &Batches, max: u32) -> Result<Vec<(BatchId, ItemProgress)>> {
        for _ in 0..3 {
            let Some(batch) = self.next(batches).await? else { return Ok(Vec::new()) };
            let claimed = batches.claim(batch, max).await?;
            if !claimed.is_empty() {
                return Ok(claimed.into_iter().map(|item| (batch, item)).collect());
            }
        }
        Ok(Vec::new())
    }

    async fn next(&mut self, batches: &Batches) -> Result<Option<BatchId>> {
        let store = batches.store();
        let Some(owner) = store.owner_with_work(&self.owner).await? else { return Ok(None) };
        let batch = store.batch_with_work(&owner, self.last_batch.get(&owner).copied()).await?;
        if let Some(batch) = batch {
            if self.last_batch.len() >= REMEMBERED {
                self.last_batch.clear();
            }
            self.last_batch.insert(owner.clone(), batch);
        }
        self.owner = owner;
        Ok(batch)
    }
}
