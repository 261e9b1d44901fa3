//! The user's stream (`GET /api/stream`), which keeps the home's list live and tells every page
//! when a batch finishes: it starts from the user's list, hears each change of their batches
//! (through Redis) and nothing of anyone else's, and starts again after Redis comes back.

mod common;

use std::time::Duration;

use batchwatch_core::{BatchStatus, BatchSummary};
use common::server::{LiveServer, Options, PrivateRedis};
use eventsource_stream::Event;
use futures::{Stream, StreamExt};
use serde_json::Value;

async fn next(events: &mut (impl Stream<Item = Event> + Unpin)) -> Event {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event in time")
        .expect("open")
}

/// The summaries of the next `snapshot` or `batches` event.
async fn next_summaries(events: &mut (impl Stream<Item = Event> + Unpin)) -> (String, Vec<BatchSummary>) {
    loop {
        let event = next(events).await;
        if event.event == "snapshot" || event.event == "batches" {
            return (event.event, serde_json::from_str(&event.data).unwrap());
        }
    }
}

fn id_of(batch: &Value) -> String {
    batch["batch_id"].as_str().unwrap().to_owned()
}

/// On the database given: the list is read from it, and the owner each change is told to comes
/// back from its `UPDATE`.
async fn starts_from_the_list_and_hears_each_change_of_the_users_alone(postgres: bool) {
    let server = LiveServer::start(Options { postgres, ..Options::default() }).await;
    server.subscribed().await;
    let older = server.create(1).await;
    let stranger = server.stranger().await;
    let mut mine = server.user_stream(&server.http).await;
    let mut theirs = server.user_stream(&stranger).await;

    let (event, list) = next_summaries(&mut mine).await;
    assert_eq!(event, "snapshot");
    assert_eq!(list.iter().map(|s| s.batch_id.to_string()).collect::<Vec<_>>(), [id_of(&older)]);
    assert!(next_summaries(&mut theirs).await.1.is_empty(), "the stranger's list is theirs");

    // A batch made elsewhere (another tab, a program) appears, and its changes follow to its end.
    let batch = server.create(2).await;
    let (event, created) = next_summaries(&mut mine).await;
    assert_eq!(event, "batches");
    assert_eq!(created.len(), 1);
    assert_eq!((created[0].batch_id.to_string(), created[0].seq), (id_of(&batch), 1));
    for item in 0..2 {
        server.report(&batch, item, "processing").await;
        server.report(&batch, item, "done").await;
    }
    let mut last = created[0].clone();
    while last.status != BatchStatus::Completed {
        let (_, changed) = next_summaries(&mut mine).await;
        for summary in changed {
            assert_eq!(summary.batch_id, last.batch_id, "only the batch that changed");
            assert!(summary.seq > last.seq, "newer each time: {} after {}", summary.seq, last.seq);
            last = summary;
        }
    }
    assert_eq!(last.counts.completed, 2);

    // Nothing of this user's reached the stranger; their own batch reaches them alone.
    let own = server.create_as(&stranger, vec!["x".into()]).await;
    let (_, heard) = next_summaries(&mut theirs).await;
    assert_eq!(heard.iter().map(|s| s.batch_id.to_string()).collect::<Vec<_>>(), [id_of(&own)]);
    assert!(
        tokio::time::timeout(Duration::from_millis(600), next_summaries(&mut mine)).await.is_err(),
        "the stranger's batch is not told to this user"
    );
}

#[tokio::test]
async fn a_users_stream_starts_from_their_list_and_hears_each_change_of_theirs_alone_on_sqlite() {
    starts_from_the_list_and_hears_each_change_of_the_users_alone(false).await;
}

#[tokio::test]
async fn a_users_stream_starts_from_their_list_and_hears_each_change_of_theirs_alone_on_postgresql() {
    starts_from_the_list_and_hears_each_change_of_the_users_alone(true).await;
}

#[tokio::test]
async fn a_users_stream_needs_a_user() {
    let server = LiveServer::start(Options::default()).await;
    let anonymous = reqwest::Client::new().get(format!("{}/api/stream", server.url)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["content-type"], "application/json");
    let worker_token = common::create_user(&server.state, "w", batchwatch_core::Role::Worker).await;
    let worker =
        common::server::client(&worker_token).get(format!("{}/api/stream", server.url)).send().await.unwrap();
    assert_eq!(worker.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_stream_starts_again_after_redis_comes_back() {
    let mut redis = PrivateRedis::start().await;
    let server = LiveServer::start(Options { redis_url: redis.url(), ..Options::default() }).await;
    server.subscribed().await;
    let mut mine = server.user_stream(&server.http).await;
    assert_eq!(next_summaries(&mut mine).await.0, "snapshot");
    // Whatever was published while no subscription stood is lost: the page reads its list again.
    redis.restart().await;
    loop {
        let event = next(&mut mine).await;
        if event.event == "reconnect" {
            break;
        }
        assert_eq!(event.event, "ping", "nothing but the call to come back: {event:?}");
    }
}
