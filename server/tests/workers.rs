//! Workers: every item claimed once, processed, retried, and reported through the one path.

mod common;

use std::time::Duration;

use batchwatch_core::{BatchStatus, Counts, ItemStatus, NewBatch, Role};
use common::server::{LiveServer, Options, read_to_end};
use server::batches::Access;
use server::store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_process_every_item_exactly_once() {
    let server =
        LiveServer::start(Options { redis_url: "memory://".into(), workers: 4, ..Options::default() }).await;
    let batch = server.create(30).await;
    let done = server.finished(&batch).await.summary;
    assert_eq!(done.status, BatchStatus::Completed);
    assert_eq!(done.counts.completed, 30);
    // One claim and one outcome per item: a double claim would show up as extra changes.
    assert_eq!(done.seq, 61);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_on_postgresql_lose_no_update() {
    // Four workers changing one batch at once: on PostgreSQL each change must see the one
    // before it, or counts drift and `seq` skips.
    let server = LiveServer::start(Options { workers: 4, postgres: true, ..Options::default() }).await;
    let batch = server.create(30).await;
    let done = server.finished(&batch).await;
    assert_eq!(done.summary.counts, Counts { completed: 30, total: 30, ..Counts::default() });
    assert_eq!(done.summary.seq, 61);
    assert!(done.items.iter().all(|i| i.status == ItemStatus::Done));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_items_are_retried_then_fail_for_good_with_their_error() {
    let server = LiveServer::start(Options {
        redis_url: "memory://".into(),
        workers: 2,
        failure_rate: 1.0,
        ..Options::default()
    })
    .await;
    let batch = server.create(3).await;
    let done = server.finished(&batch).await;
    assert_eq!(done.summary.status, BatchStatus::Failed);
    for item in &done.items {
        // MAX_ATTEMPTS is 2 in these tests: the message is from the last attempt.
        assert!(item.error.as_deref().unwrap().ends_with("(attempt 2)"), "{item:?}");
    }
    assert_eq!(done.summary.seq, 7, "retries happen in place, without extra changes");
}

#[tokio::test]
async fn an_item_whose_worker_died_is_claimed_again_after_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/w.db", dir.path().display()), 2).await.unwrap();
    let accounts = store.accounts();
    let (_, secret) = accounts.create_user("w", Role::User, 0).await.unwrap();
    let owner = accounts.authenticate(&secret.0).await.unwrap().unwrap().viewer.user_id;
    let batch = store.create_batch(&owner, NewBatch::demo(1), 1_000).await.unwrap();
    let first = store.claim(2_000, 0, 3).await.unwrap().unwrap().commit().await.unwrap();
    assert_eq!(first[0].event.items[0].status, ItemStatus::Processing);
    let again =
        store.claim(3_000, 2_500, 3).await.unwrap().expect("stale: reclaimed").commit().await.unwrap();
    assert_eq!(again[0].event.summary.seq, 3);
    assert!(store.claim(4_000, 2_500, 3).await.unwrap().is_none(), "fresh again: left alone");
    let owned = store.progress(batch.summary.batch_id).await.unwrap().unwrap();
    assert_eq!(owned.owner, owner);
    assert_eq!(owned.progress.summary.counts.processing, 1, "a reclaim does not count the item twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_publish_in_commit_order() {
    let server =
        LiveServer::start(Options { workers: 4, item_delay: Duration::from_millis(1), ..Options::default() })
            .await;
    let batch = server.create(60).await;
    let events = read_to_end(server.stream(&batch, None).await).await;
    // Every change arrives, in order: no gap that would send the page after a snapshot.
    let seqs: Vec<u64> = events
        .iter()
        .filter(|(e, _)| e == "progress")
        .filter_map(|(_, d)| d.as_ref()?["seq"].as_u64())
        .collect();
    let first = seqs[0];
    assert_eq!(seqs, (first..=121).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_gives_an_unfinished_item_back_after_its_grace() {
    for postgres in [false, true] {
        let server = LiveServer::start(Options {
            redis_url: "memory://".into(),
            workers: 1,
            item_delay: Duration::from_secs(600),
            postgres,
            ..Options::default()
        })
        .await;
        let batch = server.create(1).await;
        let id = batch["batch_id"].as_str().unwrap().parse().unwrap();
        let read =
            || async { server.state.batches.progress_from_database(Access::Any, id).await.unwrap().summary };
        common::eventually("the item to be claimed", || async {
            (read().await.counts.processing == 1).then_some(())
        })
        .await;
        let stopped = std::time::Instant::now();
        server.stop();
        // SHUTDOWN_SECS is 1 in these tests: the worker gives the item back after 0.8 s, not
        // after its 60 s lease.
        let back = common::eventually("the item to go back to the queue", || async {
            Some(read().await).filter(|s| s.counts.queued == 1)
        })
        .await;
        assert!(stopped.elapsed() < Duration::from_secs(3), "postgres {postgres}: {:?}", stopped.elapsed());
        assert_eq!((back.counts.processing, back.seq), (0, 3), "claimed at 2, given back at 3");
        assert_eq!(back.status, BatchStatus::Queued);
    }
}

/// Claimed, then lost (its lease lapses) again and again: after `max_reclaims` reclaims, the
/// next loss fails the item for good, announced like any change.
async fn an_item_that_keeps_losing_its_worker_fails_for_good(postgres: bool) {
    let server = LiveServer::start(Options { postgres, ..Options::default() }).await;
    let batch = server.create(1).await;
    let batches = &server.state.batches;
    let lease = Duration::from_millis(1);
    for _ in 0..3 {
        let claimed = batches.claim(lease, 2).await.unwrap().expect("claimed (again)");
        assert_eq!(claimed.items[0].status, ItemStatus::Processing);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(batches.claim(lease, 2).await.unwrap().is_none(), "lost once too often: nothing left to claim");
    let p = server.get(&batch).await;
    assert_eq!(p.summary.status, BatchStatus::Failed);
    assert_eq!((p.summary.counts.failed, p.summary.counts.processing), (1, 0));
    let error = p.items[0].error.as_deref().unwrap();
    assert!(error.contains("lost 3 times"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_that_keeps_losing_its_worker_fails_for_good_on_sqlite() {
    an_item_that_keeps_losing_its_worker_fails_for_good(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_that_keeps_losing_its_worker_fails_for_good_on_postgresql() {
    an_item_that_keeps_losing_its_worker_fails_for_good(true).await;
}

/// An item that takes longer than the lease keeps it while its worker is alive: the other
/// worker, polling all along, never claims it again.
async fn a_slow_item_keeps_its_lease(postgres: bool) {
    let server = LiveServer::start(Options {
        postgres,
        workers: 2,
        item_delay: Duration::from_millis(3_000),
        lease_secs: 1,
        ..Options::default()
    })
    .await;
    let batch = server.create(1).await;
    let done = server.finished(&batch).await;
    assert_eq!(done.summary.status, BatchStatus::Completed);
    let url =
        format!("{}/api/batches/{}/export?format=ndjson", server.url, batch["batch_id"].as_str().unwrap());
    let line: serde_json::Value =
        serde_json::from_str(server.http.get(url).send().await.unwrap().text().await.unwrap().trim())
            .unwrap();
    assert_eq!(line["attempts"], 1, "claimed once: {line}");
    assert_eq!(done.summary.seq, 3, "a claim and an outcome, no reclaim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_item_keeps_its_lease_on_sqlite() {
    a_slow_item_keeps_its_lease(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_item_keeps_its_lease_on_postgresql() {
    a_slow_item_keeps_its_lease(true).await;
}
