//! Real processes on one PostgreSQL and one Redis: two servers and two `batchwatch worker`
//! processes share a 20,000-item batch, created through one server, appended to, and watched
//! through the other.

mod common;

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    time::Duration,
};

use batchwatch_core::Role;
use common::server::{
    assert_unbroken, client, free_port, postgres_server_url, psql, read_to_end, shared_redis_url,
};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};
use server::store::Store;

/// A child process, killed when the test ends however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A PostgreSQL database and a Redis prefix of this test's own, dropped at the end.
struct Own {
    database: String,
    prefix: String,
}

impl Drop for Own {
    fn drop(&mut self) {
        psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database));
        common::clean_redis_prefix(&shared_redis_url(), &self.prefix);
    }
}

/// Starts the `batchwatch` binary. With `BW_TEST_LOGS=<dir>` each process logs at debug level
/// into a file of its own there (the logs go to stdout).
fn batchwatch(args: &[&str], env: &[(&str, String)]) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_batchwatch"));
    command.args(args).stdout(Stdio::null()).stderr(Stdio::null()).env("RUST_LOG", "warn");
    if let Ok(dir) = std::env::var("BW_TEST_LOGS") {
        let file =
            std::fs::File::create(format!("{dir}/{}-{}.log", args.first().unwrap_or(&"serve"), free_port()))
                .unwrap();
        command.stdout(file).env("RUST_LOG", "server=debug");
    }
    for (key, value) in env {
        command.env(key, value);
    }
    Process(command.spawn().expect("the batchwatch binary starts"))
}

/// Starts a server without workers of its own; returns it once it answers.
async fn serve(env: &[(&str, String)], http: &reqwest::Client) -> (Process, String) {
    let port = free_port();
    let mut env = env.to_vec();
    env.extend([("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}")), ("WORKERS", "0".into())]);
    let process = batchwatch(&[], &env);
    let url = format!("http://127.0.0.1:{port}");
    common::eventually("the server to answer", || async {
        let reply = http.get(format!("{url}/api/batches")).send().await.ok()?;
        reply.status().is_success().then_some(())
    })
    .await;
    (process, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_and_two_worker_processes_finish_every_item_exactly_once() {
    let own = Own {
        database: format!("bw_test_{}", uuid::Uuid::new_v4().simple()),
        prefix: format!("test-{}:", uuid::Uuid::new_v4()),
    };
    psql(&format!("CREATE DATABASE {}", own.database));
    let database_url = format!("{}/{}", postgres_server_url(), own.database);
    let prefix = own.prefix.clone();
    let store = Store::connect(&database_url, 2).await.unwrap();
    let (_, secret) =
        store.accounts().create_user("owner", Role::User, batchwatch_core::now()).await.unwrap();
    let token = secret.0;
    let http = client(&token);
    let env = [
        ("DATABASE_URL", database_url.clone()),
        ("REDIS_URL", shared_redis_url()),
        ("REDIS_PREFIX", prefix.clone()),
        ("WRITES_PER_MINUTE", "100000".into()),
    ];
    let (_a, a) = serve(&env, &http).await;
    let (_b, b) = serve(&env, &http).await;

    let created: Value = http
        .post(format!("{a}/api/batches"))
        .json(&json!({ "name": "big", "items": (0..10_000).map(|i| format!("{i:05}")).collect::<Vec<_>>() }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["batch_id"].as_str().unwrap().to_owned();
    let response = http.get(format!("{b}/api/batches/{id}/stream")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let events = response.bytes_stream().eventsource().map(|e| e.expect("a well-formed event"));
    let watcher = tokio::spawn(read_to_end(Box::pin(events)));

    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut env = env.to_vec();
        env.extend([
            ("WORKERS", "4".into()),
            ("ITEM_DELAY_MS", "0".into()),
            ("DEMO_FAILURE_RATE", "0".into()),
        ]);
        env.push(("WORKER_POLL_MS", "50".into()));
        workers.push(batchwatch(&["worker"], &env));
    }
    // More items while the workers are at it.
    let appended = http
        .post(format!("{a}/api/batches/{id}/items"))
        .json(&json!({ "items": (10_000..20_000).map(|i| format!("{i:05}")).collect::<Vec<_>>() }))
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), 200, "{}", appended.text().await.unwrap());

    let seen =
        tokio::time::timeout(Duration::from_secs(240), watcher).await.expect("finished in time").unwrap();
    let final_seq = assert_unbroken(&seen);
    let last = seen.iter().rev().find_map(|(_, d)| d.as_ref()).unwrap();
    assert_eq!(last["status"], "completed");
    assert_eq!(
        last["counts"],
        json!({ "queued": 0, "processing": 0, "completed": 20_000, "failed": 0, "cancelled": 0, "total": 20_000 })
    );
    assert_eq!(seen.last().map(|(e, _)| e.as_str()), Some("complete"));
    let summary: Value =
        http.get(format!("{b}/api/batches/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(summary["seq"].as_u64(), Some(final_seq), "the watcher ended on the latest state");

    // Every item went to `done` exactly once, as the watcher saw it, and was claimed once. An
    // event may leave its items out where more waited than the pace lets go in pages (events
    // held while another process's were on their way, then let go together): those count what
    // they left out, and the export below holds every item.
    let mut finished: HashMap<String, u32> = HashMap::new();
    for (_, data) in &seen {
        for item in data.as_ref().map_or(&[][..], |d| d["items"].as_array().unwrap()) {
            if item["status"] == "done" {
                *finished.entry(item["id"].as_str().unwrap().to_owned()).or_default() += 1;
            }
        }
    }
    let left_out: u64 =
        seen.iter().filter_map(|(_, d)| d.as_ref()?.get("left_out")?["changes"].as_u64()).sum();
    assert!(
        finished.len() as u64 + left_out >= 20_000,
        "{} items seen finished, {left_out} changes left out",
        finished.len()
    );
    assert!(finished.values().all(|n| *n == 1), "an item finished twice");
    let export = http.get(format!("{a}/api/batches/{id}/export?format=ndjson")).send().await.unwrap();
    let export = export.text().await.unwrap();
    let attempts: Vec<u64> = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["attempts"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts.len(), 20_000);
    assert!(attempts.iter().all(|a| *a == 1), "an item was claimed twice");
    drop(workers);
}
