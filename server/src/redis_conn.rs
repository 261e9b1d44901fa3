//! Which Redis the server speaks to: one server (`redis://host:6379`) or a Redis Cluster
//! (`redis+cluster://host1:7001,host2:7002`; any node that answers tells the layout of the
//! rest). The redis crate is built without TLS here, so neither takes `rediss://`. The cache,
//! the limits, the sessions and the hub's publisher hold a [`RedisConn`] and never ask which:
//! every script and command they send touches one key, so on a cluster each goes to the one
//! node that holds its slot. Only the hub's subscription differs (`live/hub.rs`).

use std::time::Duration;

use anyhow::Context;
use redis::{
    Cmd, Pipeline, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClientBuilder, ClusterConfig},
    cluster_async::ClusterConnection,
};

/// Short: while Redis is away, requests fall back to the database quickly.
const TIMEOUT: Duration = Duration::from_secs(1);

/// Where Redis is, from `REDIS_URL`.
#[derive(Clone, Debug)]
pub enum RedisTarget {
    Single(redis::Client),
    /// The seed nodes' URLs.
    Cluster(Vec<String>),
}

impl RedisTarget {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        match cluster_seeds(url) {
            Some(seeds) if seeds.is_empty() => anyhow::bail!("REDIS_URL names a cluster without nodes"),
            Some(seeds) => {
                // Checked now rather than at the first command.
                ClusterClientBuilder::new(seeds.clone()).build().context("parsing REDIS_URL")?;
                Ok(Self::Cluster(seeds))
            }
            None => Ok(Self::Single(redis::Client::open(url).context("parsing REDIS_URL")?)),
        }
    }

    /// A connection for commands, shared by clones; it connects when first used and
    /// reconnects by itself.
    pub fn connect(&self) -> RedisResult<RedisConn> {
        Ok(match self {
            Self::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(TIMEOUT))
                    .set_response_timeout(Some(TIMEOUT))
                    .set_number_of_retries(1);
                RedisConn::Single(ConnectionManager::new_lazy_with_config(client.clone(), config)?)
            }
            Self::Cluster(seeds) => {
                let config =
                    ClusterConfig::new().set_connection_timeout(TIMEOUT).set_response_timeout(TIMEOUT);
                let client = ClusterClientBuilder::new(seeds.clone()).retries(2).build()?;
                RedisConn::Cluster(client.get_pending_async_connection_with_config(config))
            }
        })
    }
}

/// `redis+cluster://[auth@]h1:p1,h2:p2[/…][?…]` as one `redis://` URL per node (the same auth,
/// path and query on each); `None` for any other URL.
fn cluster_seeds(url: &str) -> Option<Vec<String>> {
    let rest = url.strip_prefix("redis+cluster://")?;
    let (auth, rest) = rest.rsplit_once('@').map_or(("", rest), |(auth, rest)| (auth, rest));
    let at = if auth.is_empty() { "" } else { "@" };
    let (hosts, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    Some(
        hosts
            .split(',')
            .filter(|host| !host.is_empty())
            .map(|host| format!("redis://{auth}{at}{host}{tail}"))
            .collect(),
    )
}

/// One Redis server's connection, or a cluster's.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// The publish command of this kind of Redis: a cluster's pub/sub is sharded (`SPUBLISH`
    /// reaches the subscribers of the channel's own shard; a plain `PUBLISH` would be copied to
    /// every node).
    pub fn publish_command(&self) -> &'static str {
        match self {
            Self::Single(_) => "PUBLISH",
            Self::Cluster(_) => "SPUBLISH",
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_each_node() {
        assert_eq!(
            cluster_seeds("redis+cluster://a:7001,b:7002"),
            Some(vec!["redis://a:7001".into(), "redis://b:7002".into()])
        );
        assert_eq!(
            cluster_seeds("redis+cluster://u:p@a:7001,b:7002/?protocol=resp3"),
            Some(vec![
                "redis://u:p@a:7001/?protocol=resp3".into(),
                "redis://u:p@b:7002/?protocol=resp3".into()
            ])
        );
        assert_eq!(cluster_seeds("redis://a:6379"), None);
        assert_eq!(cluster_seeds("memory://"), None);
        assert!(matches!(RedisTarget::parse("redis+cluster://a:7001"), Ok(RedisTarget::Cluster(_))));
        assert!(matches!(RedisTarget::parse("redis://a:6379"), Ok(RedisTarget::Single(_))));
        assert!(RedisTarget::parse("redis+cluster://").is_err());
        assert!(RedisTarget::parse("redis+cluster://a:notaport").is_err());
    }
}
