//! Catching up: no watcher stays behind the database for more than a few seconds, whatever
//! happened to the events. A publish can fail, a process can die between its commit and its
//! publish, Redis can restart and drop what it was sending; none of these leaves a trace a
//! watcher could notice.
//!
//! So every [`EVERY`] each process reads, in one query, the `seq` of every batch its watchers
//! follow, and for each batch whose watchers were still offered less than what the database
//! held a round before, reads the snapshot once and shares it with all of them
//! (`Hub::share_snapshot`). A round before, not now: a busy batch is always a few events ahead
//! of its watchers (they are on their way, published at a bounded pace), and a snapshot for that
//! would only cost a read and send every watcher the whole state again. After the Redis subscription comes back
//! it does so at once for every watched batch: one read per batch, not one per watcher. A
//! process that restarts needs nothing of its own: the other processes' catch-up finds what it
//! committed and did not announce.

use std::time::Duration;

use batchwatch_core::BatchProgress;

use crate::batches::{Access, Batches};

/// How often the database is asked: the longest a lost event keeps a watcher behind.
pub const EVERY: Duration = Duration::from_secs(2);

/// Runs for as long as the process does.
pub async fn run(batches: Batches) {
    let hub = batches.hub().clone();
    let mut before = std::collections::HashMap::new();
    loop {
        // After the subscription came back, what the database holds now is what was lost.
        let now = tokio::select! {
            () = tokio::time::sleep(EVERY) => false,
            () = hub.went_stale() => true,
        };
        let watched = hub.watched_seqs();
        if watched.is_empty() {
            continue;
        }
        let ids: Vec<_> = watched.iter().map(|(id, _)| *id).collect();
        let current = match batches.seqs(&ids).await {
            Ok(current) => current,
            Err(error) => {
                tracing::warn!(%error, "catch-up cannot read the batches' seq");
                continue;
            }
        };
        let earlier = std::mem::replace(&mut before, current);
        let behind = if now { &before } else { &earlier };
        for (id, offered) in watched {
            if behind.get(&id).is_some_and(|&seq| seq > offered) {
                match batches.summary_from_database(Access::Any, id).await {
                    Ok(summary) => hub.share_snapshot(&BatchProgress::new(summary, Vec::new())),
                    Err(error) => tracing::warn!(%error, batch = %id, "catch-up cannot read a batch"),
                }
            }
        }
    }
}
