//! On a Redis Cluster: three `redis-server --cluster-enabled yes` nodes this test starts, and
//! two servers on one PostgreSQL database and the cluster. A batch is watched from both while
//! the node holding its partition's slot restarts and while that slot moves to another node:
//! each server notices its sharded subscription was dropped and subscribes again, and every
//! watcher ends on the exact final state.

mod common;

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use batchwatch_core::{BatchId, keys};
use common::{
    eventually,
    server::{LiveServer, Options, assert_ends_on, free_port, read_to_end},
};
use eventsource_stream::Event;
use futures::{Stream, StreamExt};
use serde_json::Value;

/// A node of the cluster, killed when dropped.
struct Node {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (./dev.sh test installs it)");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Cluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

/// A port whose cluster bus port (10,000 above) is free too.
fn node_port() -> u16 {
    loop {
        let port = free_port();
        if port <= 55_535 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").arg("-p").arg(port.to_string()).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Cluster {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes: Vec<Node> = (0..3)
            .map(|_| {
                let port = node_port();
                let dir = dir.path().join(port.to_string());
                std::fs::create_dir(&dir).unwrap();
                Node { port, dir, child: None }
            })
            .collect();
        for node in &mut nodes {
            node.start();
        }
        let cluster = Self { nodes, _dir: dir };
        for node in &cluster.nodes {
            eventually("a node to start", || async {
                (cli(node.port, &["PING"]).trim() == "PONG").then_some(())
            })
            .await;
        }
        let addresses: Vec<String> = cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stdout));
        cluster.wait_ok().await;
        cluster
    }

    fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// Until every node says the cluster serves every slot.
    async fn wait_ok(&self) {
        for node in &self.nodes {
            eventually("cluster_state:ok", || async {
                cli(node.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok").then_some(())
            })
            .await;
        }
    }

    /// The port and node id of the master that serves `slot`.
    fn owner_of(&self, slot: u16) -> (u16, String) {
        let nodes = cli(self.nodes[0].port, &["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let serves = fields.iter().skip(8).any(|range| {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                matches!((from.parse::<u16>(), to.parse::<u16>()), (Ok(f), Ok(t)) if (f..=t).contains(&slot))
            });
            if fields.get(2).is_some_and(|flags| flags.contains("master")) && serves {
                let port = fields[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
                return (port, fields[0].to_owned());
            }
        }
        panic!("no master serves slot {slot}:\n{nodes}");
    }

    fn node(&mut self, port: u16) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.port == port).unwrap()
    }

    /// Moves `slot` to another master, keys and all, as `redis-cli --cluster reshard` does.
    fn migrate(&self, slot: u16) -> u16 {
        let (from, from_id) = self.owner_of(slot);
        let to = self.nodes.iter().map(|n| n.port).find(|&p| p != from).unwrap();
        let to_id = cli(to, &["CLUSTER", "MYID"]).trim().to_owned();
        let slot = slot.to_string();
        cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
        loop {
            let keys = cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1"];
            let to = to.to_string();
            args.extend([to.as_str(), "", "0", "5000", "KEYS"]);
            args.extend(keys);
            cli(from, &args);
        }
        for port in [to, from] {
            cli(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        }
        to
    }
}

fn id_of(batch: &Value) -> BatchId {
    batch["batch_id"].as_str().unwrap().parse().unwrap()
}

/// The next event that is not a keep-alive.
async fn next_event(events: &mut (impl Stream<Item = Event> + Unpin)) -> Event {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event in time")
        .expect("open")
}

/// Reports items `range` processing then done, through the two servers in turn.
async fn finish_items(servers: [&LiveServer; 2], batch: &Value, range: std::ops::Range<usize>) {
    for item in range {
        let server = servers[item % 2];
        server.report(batch, item, "processing").await;
        server.report(batch, item, "done").await;
    }
}

async fn subscriptions_grow(servers: [&LiveServer; 2], before: [u64; 2], what: &str) {
    for (server, before) in servers.iter().zip(before) {
        let hub = server.state.batches.hub();
        eventually(what, || async { (hub.subscriptions() > before).then_some(()) }).await;
    }
}

/// Changes made now reach the watchers on both servers as events, sooner than the database
/// catch-up would bring them: the subscriptions stand again. Right after a node came back the
/// client library may still drop a connection the servers had just subscribed on, and then
/// the hub's periodic subscribing again brings the subscription back within
/// `hub::RESUBSCRIBE_ALL_EVERY`: a change whose event was lost (the catch-up brings it) is
/// followed by another. Returns the first item of `items` it did not use.
async fn changes_arrive_as_events(
    server: &LiveServer,
    batch: &Value,
    mut items: std::ops::Range<usize>,
    streams: [&mut (impl Stream<Item = Event> + Unpin); 2],
) -> usize {
    // The catch-up after the subscriptions came back has run by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let [first, second] = streams;
    loop {
        let item = items.next().expect("a change arrived as an event within the tries");
        server.report(batch, item, "processing").await;
        let seq = server.get(batch).await.summary.seq;
        let arrived = [arrives_as_event(first, seq).await, arrives_as_event(second, seq).await];
        server.report(batch, item, "done").await;
        if arrived == [true, true] {
            return items.start;
        }
    }
}

/// Whether `stream` gets `seq` as its event well before the catch-up's 2 s would bring it as
/// a snapshot. Events before `seq` are read past.
async fn arrives_as_event(stream: &mut (impl Stream<Item = Event> + Unpin), seq: u64) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1_500);
    while let Ok(event) = tokio::time::timeout_at(deadline, stream.next()).await {
        let event = event.expect("open");
        match event.id.parse::<u64>() {
            Ok(id) if id == seq => return event.event == "progress",
            // Past it already: a snapshot took it in.
            Ok(id) if id > seq => return false,
            _ => {}
        }
    }
    false
}

fn subscriptions(servers: [&LiveServer; 2]) -> [u64; 2] {
    servers.map(|s| s.state.batches.hub().subscriptions())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_watched_from_two_servers_survives_a_node_restart_and_a_slot_migration() {
    let mut cluster = Cluster::start().await;
    let options = || Options { redis_url: cluster.url(), postgres: true, ..Options::default() };
    let a = LiveServer::start(options()).await;
    let b = LiveServer::start(Options { shared: Some(a.shared()), ..options() }).await;
    let servers = [&a, &b];
    a.subscribed().await;
    b.subscribed().await;
    let batch = a.create(30).await;
    let mut on_a = a.stream(&batch, None).await;
    let mut on_b = b.stream(&batch, None).await;
    let mut home_on_b = b.user_stream(&b.http).await;
    for stream in [&mut on_a, &mut on_b] {
        assert_eq!(next_event(stream).await.event, "snapshot");
    }
    assert_eq!(next_event(&mut home_on_b).await.event, "snapshot");

    // Sharded: a change made through one server reaches the other's watchers as an event.
    a.report(&batch, 0, "processing").await;
    for stream in [&mut on_a, &mut on_b] {
        let event = next_event(stream).await;
        assert_eq!((event.event.as_str(), event.id.as_str()), ("progress", "2"));
    }
    let event = next_event(&mut home_on_b).await;
    assert_eq!(event.event, "batches", "the owner's stream hears of it through the cluster too");
    let channel = keys::partition_channel(&a.prefix, keys::partition_of(id_of(&batch)));
    let slot: u16 = cli(cluster.nodes[0].port, &["CLUSTER", "KEYSLOT", &channel]).trim().parse().unwrap();
    let (holder, _) = cluster.owner_of(slot);
    let subscribers = cli(holder, &["PUBSUB", "SHARDNUMSUB", &channel]);
    assert_eq!(
        subscribers.lines().last(),
        Some("2"),
        "both servers subscribe to the partition: {subscribers}"
    );
    a.report(&batch, 0, "done").await;
    finish_items(servers, &batch, 1..10).await;

    // The node that holds the batch's partition restarts (empty: it keeps nothing on disk).
    let before = subscriptions(servers);
    cluster.node(holder).stop();
    // Changes while it is away: their events are lost, the database has them.
    finish_items(servers, &batch, 10..12).await;
    cluster.node(holder).start();
    cluster.wait_ok().await;
    subscriptions_grow(servers, before, "subscribing again after the node restarted").await;
    let next = changes_arrive_as_events(&b, &batch, 12..17, [&mut on_a, &mut on_b]).await;
    // The owner's stream starts again from a fresh list: events of its batches were lost.
    while next_event(&mut home_on_b).await.event != "reconnect" {}
    finish_items(servers, &batch, next..20).await;

    // Its slot moves to another node: the old node drops the subscriptions (`sunsubscribe`).
    let before = subscriptions(servers);
    let moved_to = cluster.migrate(slot);
    assert_ne!(moved_to, holder);
    subscriptions_grow(servers, before, "subscribing again after the slot moved").await;
    let next = changes_arrive_as_events(&a, &batch, 20..25, [&mut on_a, &mut on_b]).await;
    finish_items(servers, &batch, next..30).await;

    let final_seq = a.finished(&batch).await.summary.seq;
    for stream in [on_a, on_b] {
        let seen = read_to_end(stream).await;
        assert_ends_on(&seen, final_seq);
    }
    drop(b);
    drop(a);
    drop(cluster);
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
    }
}
