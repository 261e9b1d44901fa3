//! Workers: every item claimed once, processed, retried, and reported through the one path.

mod common;

use std::time::Duration;

use batchwatch_core::{BatchStatus, Counts, ItemStatus, NewBatch, Role, StatusReport};
use common::server::{LiveServer, Options, assert_unbroken, read_to_end};
use server::{
    batches::Access,
    store::{Store, items::Changes},
};

/// Every item claimed once and finished once, with the counts right, while a watcher sees
/// every change in order (no gap that would send it after a snapshot) and each item finish
/// exactly once.
async fn workers_process_every_item_exactly_once(postgres: bool) {
    let server = LiveServer::start(Options {
        workers: 4,
        postgres,
        item_delay: Duration::from_millis(1),
        ..Options::default()
    })
    .await;
    let batch = server.create(300).await;
    let events = read_to_end(server.stream(&batch, None).await).await;
    let done = server.finished(&batch).await;
    assert_eq!(done.summary.counts, Counts { completed: 300, total: 300, ..Counts::default() });
    assert!(server.export(&batch).await.iter().all(|item| item["attempts"] == 1), "each claimed once");
    assert_eq!(assert_unbroken(&events), done.summary.seq);
    let mut finished = std::collections::HashMap::new();
    // The first snapshot holds no items: only the count of those done before the stream
    // opened (the workers start at once, so a few may be).
    let (first, data) = &events[0];
    assert_eq!(first, "snapshot");
    let before = data.as_ref().unwrap()["counts"]["completed"].as_u64().unwrap() as usize;
    for (_, data) in events.iter().filter(|(e, _)| e == "progress" || e == "snapshot") {
        for item in data.as_ref().unwrap()["items"].as_array().unwrap() {
            if item["status"] == "done" {
                *finished.entry(item["id"].as_str().unwrap().to_owned()).or_insert(0) += 1;
            }
        }
    }
    assert_eq!(before + finished.len(), 300, "{before} done before the stream opened");
    assert!(finished.values().all(|n| *n == 1), "an item finished twice");
    // Claims and outcomes met in group commits: far fewer events than two per item.
    assert!(done.summary.seq < 600, "seq {}", done.summary.seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_process_every_item_exactly_once_on_sqlite() {
    workers_process_every_item_exactly_once(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_process_every_item_exactly_once_on_postgresql() {
    workers_process_every_item_exactly_once(true).await;
}

/// Items that take no time: the dispatcher claims ahead as the workers run short, not one
/// item per worker a claim for ever (which measured 241 claims a second, 8 items each).
async fn fast_items_are_claimed_many_at_a_time(postgres: bool) {
    let server = LiveServer::start(Options {
        redis_url: "memory://".into(),
        workers: 8,
        item_delay: Duration::ZERO,
        postgres,
        ..Options::default()
    })
    .await;
    let batch = server.create(2_000).await;
    let done = server.finished(&batch).await;
    assert_eq!(done.summary.counts.completed, 2_000);
    // Every claim is a transaction of its own, and every transaction one event (`seq` + 1):
    // 8 items a claim would have taken at least 250.
    assert!(done.summary.seq < 250, "seq {}", done.summary.seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_items_are_claimed_many_at_a_time_on_sqlite() {
    fast_items_are_claimed_many_at_a_time(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_items_are_claimed_many_at_a_time_on_postgresql() {
    fast_items_are_claimed_many_at_a_time(true).await;
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
    assert!(
        server.export(&batch).await.iter().all(|item| item["attempts"] == 1),
        "retries happen in place: each item was claimed once"
    );
}

#[tokio::test]
async fn an_item_whose_worker_died_is_claimed_again_after_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/w.db", dir.path().display()), 2).await.unwrap();
    let accounts = store.accounts();
    let (_, secret) = accounts.create_user("w", Role::User, 0).await.unwrap();
    let owner = accounts.authenticate(&secret.0).await.unwrap().unwrap().viewer.user_id;
    let batch = store.create_batch(&owner, NewBatch::demo(1), 1_000).await.unwrap();
    let id = batch.summary.batch_id;
    let (claim, judged) = store.change(id, Changes { reports: Vec::new(), claim: 5 }, 2_000).await.unwrap();
    claim.unwrap().commit().await.unwrap();
    assert_eq!(judged.claimed.len(), 1, "the one item");
    assert_eq!(judged.claimed[0].status, ItemStatus::Processing);
    assert!(store.reclaim(2_400, 2_000, 3).await.unwrap().is_none(), "within its lease: left alone");
    let (_, again) =
        store.reclaim(3_000, 2_500, 3).await.unwrap().expect("stale: reclaimed").commit().await.unwrap();
    assert_eq!(again[0].summary.seq, 3);
    assert!(store.reclaim(4_000, 2_500, 3).await.unwrap().is_none(), "fresh again: left alone");
    let (owned_by, summary) = store.summary(id).await.unwrap().unwrap();
    assert_eq!(owned_by, owner);
    assert_eq!(summary.counts.processing, 1, "a reclaim does not count the item twice");
    assert_eq!(again[0].items[0].attempts, 2, "a reclaim is an attempt");
}

/// Changes that arrive together share one transaction and one event, and each caller hears of
/// its own item.
async fn reports_arriving_together_commit_as_one_event(postgres: bool) {
    let server = LiveServer::start(Options { postgres, ..Options::default() }).await;
    let batch = server.create(50).await;
    // One task, so that all fifty are queued before the batch's leader first runs.
    let answers = futures::future::join_all((0..50).map(|i| {
        let (batches, batch) = (&server.state.batches, &batch);
        async move {
            let id = batch["batch_id"].as_str().unwrap().parse().unwrap();
            let item = batch["items"][i]["id"].as_str().unwrap().parse().unwrap();
            let report = StatusReport { status: ItemStatus::Processing, error: None };
            batches.report(Access::Any, id, item, report).await.unwrap()
        }
    }))
    .await;
    let seqs: std::collections::HashSet<u64> = answers.iter().map(|a| a.summary.seq).collect();
    assert_eq!(seqs.into_iter().collect::<Vec<_>>(), [2], "one commit, one event after the creation");
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.items.len(), 1, "each caller hears of its own item");
        assert_eq!(answer.items[0].id.to_string(), batch["items"][i]["id"].as_str().unwrap());
        assert_eq!(answer.summary.counts.processing, 50);
    }
}

#[tokio::test]
async fn reports_arriving_together_commit_as_one_event_on_sqlite() {
    reports_arriving_together_commit_as_one_event(false).await;
}

#[tokio::test]
async fn reports_arriving_together_commit_as_one_event_on_postgresql() {
    reports_arriving_together_commit_as_one_event(true).await;
}
/// Someone who queues many batches does not starve someone with one: owners take turns.
async fn claims_take_owners_in_turn(postgres: bool) {
    let server = LiveServer::start(Options {
        postgres,
        workers: 1,
        item_delay: Duration::from_millis(4),
        redis_url: "memory://".into(),
        ..Options::default()
    })
    .await;
    let stranger = server.stranger().await;
    // Created before the workers can take any: the first are the busy owner's.
    let busy: Vec<_> = futures::future::join_all(
        (0..10).map(|b| server.create_named((0..10).map(|i| format!("{b}-{i}")).collect())),
    )
    .await;
    let other = server.create_as(&stranger, (0..10).map(|i| format!("other-{i}")).collect()).await;
    let id = other["batch_id"].as_str().unwrap().parse().unwrap();
    common::eventually("the other owner's batch to finish", || async {
        let summary = server.state.batches.summary_from_database(Access::Any, id).await.unwrap();
        summary.status.is_terminal().then_some(())
    })
    .await;
    let mut busy_finished = 0;
    for batch in &busy {
        busy_finished += server.get(batch).await.summary.counts.finished();
    }
    // In turn, the busy owner finishes about as many items (10) meanwhile, plus what was
    // claimed ahead; by position across batches it would have been nearly all its 100.
    assert!(busy_finished <= 50, "the busy owner finished {busy_finished} meanwhile");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_take_owners_in_turn_on_sqlite() {
    claims_take_owners_in_turn(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_take_owners_in_turn_on_postgresql() {
    claims_take_owners_in_turn(true).await;
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
        let read = || async { server.state.batches.summary_from_database(Access::Any, id).await.unwrap() };
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
    let claimed = batches.claim(batch["batch_id"].as_str().unwrap().parse().unwrap(), 1).await.unwrap();
    assert_eq!(claimed[0].status, ItemStatus::Processing);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (_, item) = batches.reclaim(lease, 2).await.unwrap().expect("claimed again");
        assert_eq!(item.status, ItemStatus::Processing);
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(batches.reclaim(lease, 2).await.unwrap().is_none(), "lost once too often: nothing left to claim");
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
    let line = server.export(&batch).await.remove(0);
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
