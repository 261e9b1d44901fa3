//! The progress cache: `progress:{id}` in Redis (or a map in this process for `memory://`),
//! read before the database and brought up to date after every committed change.
//!
//! The Redis value is a hash: `seq`, `owner` (the user id, checked on every read), `summary`
//! (JSON) and one field per item (`i:{position}`, JSON), so that a change costs one item's
//! worth of work even in a 10,000-item batch. Writers race (several workers, servers), so
//! updates are applied only in `seq` order: a change that does not follow the cached `seq`
//! drops the entry and leaves a `floor` behind, and a refill from the database older than that
//! floor is refused. A reader thus sees the cached progress at some committed `seq`, or a miss,
//! never a mix.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use batchwatch_core::{Applied, BatchId, BatchProgress, BatchSummary, ItemProgress, keys};
use redis::{AsyncCommands, Script, aio::ConnectionManager};

use crate::store::{Change, Owned};

/// Batches the in-process cache (`memory://`) holds at most.
const MEMORY_ENTRIES: usize = 10_000;

/// Applies a change when it follows the cached `seq`; otherwise keeps only a floor.
/// ARGV: seq, ttl (ms), summary, then item field/value pairs.
const APPLY: &str = r"
local cur = redis.call('HGET', KEYS[1], 'seq')
local seq = tonumber(ARGV[1])
if cur and tonumber(cur) + 1 == seq then
  redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'summary', ARGV[3], unpack(ARGV, 4))
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if cur and tonumber(cur) >= seq then return 0 end
local floor = tonumber(redis.call('HGET', KEYS[1], 'floor') or '0')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'floor', math.max(floor, seq))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return -1
";

/// Stores a whole snapshot unless the cache already holds a newer one or a higher floor.
/// ARGV: seq, ttl (ms), summary, then field/value pairs (the owner and the items).
const FILL: &str = r"
local seq = tonumber(ARGV[1])
local cur = redis.call('HGET', KEYS[1], 'seq')
if cur and tonumber(cur) >= seq then return 0 end
local floor = redis.call('HGET', KEYS[1], 'floor')
if floor and tonumber(floor) > seq then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'summary', ARGV[3])
local i = 4
while i <= #ARGV do
  local j = math.min(i + 999, #ARGV)
  redis.call('HSET', KEYS[1], unpack(ARGV, i, j))
  i = j + 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    ttl: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
}

enum Backend {
    Redis {
        conn: ConnectionManager,
        prefix: String,
        apply: Script,
        fill: Script,
    },
    /// At most `max` entries: a long-running `memory://` process reads many batches over its
    /// life, and each would otherwise stay until the process ends.
    Memory {
        map: Mutex<HashMap<BatchId, Entry>>,
        max: usize,
    },
}

/// The in-process twin of the Redis hash, with the same floor rule.
struct Entry {
    progress: Option<Owned>,
    floor: u64,
    expires: Instant,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("stats", &self.stats()).finish()
    }
}

impl Cache {
    pub fn redis(conn: ConnectionManager, prefix: &str, ttl: Duration) -> Self {
        let backend = Backend::Redis {
            conn,
            prefix: prefix.to_owned(),
            apply: Script::new(APPLY),
            fill: Script::new(FILL),
        };
        Self::with(backend, ttl)
    }

    pub fn memory(ttl: Duration) -> Self {
        Self::memory_bounded(ttl, MEMORY_ENTRIES)
    }

    /// The in-process cache holding at most `max` batches.
    pub fn memory_bounded(ttl: Duration, max: usize) -> Self {
        Self::with(Backend::Memory { map: Mutex::default(), max }, ttl)
    }

    fn with(backend: Backend, ttl: Duration) -> Self {
        Self { inner: Arc::new(Inner { backend, ttl, hits: AtomicU64::new(0), misses: AtomicU64::new(0) }) }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.inner.hits.load(Ordering::Relaxed),
            misses: self.inner.misses.load(Ordering::Relaxed),
        }
    }

    /// Whether Redis answers (`GET /ready`); the in-process cache always does.
    pub async fn ping(&self) -> redis::RedisResult<()> {
        match &self.inner.backend {
            Backend::Redis { conn, .. } => redis::cmd("PING").query_async(&mut conn.clone()).await,
            Backend::Memory { .. } => Ok(()),
        }
    }

    /// The cached progress, counted as a hit or a miss. A Redis failure is a miss.
    pub async fn get(&self, id: BatchId) -> Option<Owned> {
        let found = match &self.inner.backend {
            Backend::Redis { conn, prefix, .. } => {
                let mut conn = conn.clone();
                match conn.hgetall::<_, Vec<(String, String)>>(keys::progress_key(prefix, id)).await {
                    Ok(fields) => decode(fields),
                    Err(error) => {
                        tracing::warn!(%error, "progress cache read failed");
                        None
                    }
                }
            }
            Backend::Memory { map, .. } => {
                let map = map.lock().unwrap_or_else(|e| e.into_inner());
                map.get(&id).filter(|e| e.expires > Instant::now()).and_then(|e| e.progress.clone())
            }
        };
        let counter = if found.is_some() { &self.inner.hits } else { &self.inner.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The cached summary and owner alone (one field each, whatever the batch's size), counted
    /// as a hit or a miss. A Redis failure is a miss.
    pub async fn summary(&self, id: BatchId) -> Option<(String, BatchSummary)> {
        let found = match &self.inner.backend {
            Backend::Redis { conn, prefix, .. } => {
                let mut conn = conn.clone();
                let key = keys::progress_key(prefix, id);
                let mut fields = redis::cmd("HMGET");
                fields.arg(key).arg("owner").arg("summary");
                match fields.query_async::<(Option<String>, Option<String>)>(&mut conn).await {
                    Ok((Some(owner), Some(summary))) => {
                        serde_json::from_str(&summary).ok().map(|summary| (owner, summary))
                    }
                    Ok(_) => None,
                    Err(error) => {
                        tracing::warn!(%error, "progress cache read failed");
                        None
                    }
                }
            }
            Backend::Memory { map, .. } => {
                let map = map.lock().unwrap_or_else(|e| e.into_inner());
                let entry = map.get(&id).filter(|e| e.expires > Instant::now());
                entry.and_then(|e| e.progress.as_ref()).map(|o| (o.owner.clone(), o.progress.summary.clone()))
            }
        };
        let counter = if found.is_some() { &self.inner.hits } else { &self.inner.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores a snapshot read from the database (refused when the cache knows better).
    pub async fn fill(&self, owned: &Owned) {
        let ttl = self.inner.ttl;
        let snapshot = &owned.progress;
        match &self.inner.backend {
            Backend::Redis { conn, prefix, fill, .. } => {
                let owner = ("owner".to_owned(), owned.owner.clone());
                let items = snapshot
                    .items
                    .iter()
                    .enumerate()
                    .map(|(position, item)| item_field(position as u32, item));
                let fields = std::iter::once(owner).chain(items);
                let result = invoke(fill, conn, prefix, &snapshot.summary, fields, ttl).await;
                if let Err(error) = result {
                    tracing::warn!(%error, "progress cache fill failed");
                }
            }
            Backend::Memory { map, max } => {
                let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let entry = map.entry(snapshot.summary.batch_id).or_insert(Entry {
                    progress: None,
                    floor: 0,
                    expires: now,
                });
                let newer_cached = entry.expires > now
                    && (entry
                        .progress
                        .as_ref()
                        .is_some_and(|p| p.progress.summary.seq >= snapshot.summary.seq)
                        || entry.floor > snapshot.summary.seq);
                if !newer_cached {
                    *entry = Entry { progress: Some(owned.clone()), floor: 0, expires: now + ttl };
                }
                bound(&mut map, *max, now);
            }
        }
    }

    /// Brings the cached progress up to date after a committed change.
    pub async fn apply(&self, change: &Change) {
        let ttl = self.inner.ttl;
        match &self.inner.backend {
            Backend::Redis { conn, prefix, apply, .. } => {
                let items =
                    change.positions.iter().zip(&change.event.items).map(|(p, item)| item_field(*p, item));
                if let Err(error) = invoke(apply, conn, prefix, &change.event.summary, items, ttl).await {
                    tracing::warn!(%error, "progress cache update failed");
                }
            }
            Backend::Memory { map, max } => {
                let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let seq = change.event.summary.seq;
                let entry = map.entry(change.event.summary.batch_id).or_insert(Entry {
                    progress: None,
                    floor: 0,
                    expires: now,
                });
                let applied = match entry.progress.as_mut().filter(|_| entry.expires > now) {
                    Some(owned) => owned.progress.apply(&change.event),
                    None => Applied::Gap,
                };
                match applied {
                    Applied::Applied => entry.expires = now + ttl,
                    Applied::Stale => {}
                    Applied::Gap => {
                        let floor = if entry.expires > now { entry.floor.max(seq) } else { seq };
                        *entry = Entry { progress: None, floor, expires: now + ttl };
                    }
                }
                bound(&mut map, *max, now);
            }
        }
    }
}

/// Keeps the in-process cache within `max` entries: the expired go first, then, when every
/// entry is live, those that would expire soonest, down to nine tenths of `max` so that this
/// sort runs once in many inserts.
fn bound(map: &mut HashMap<BatchId, Entry>, max: usize, now: Instant) {
    if map.len() <= max {
        return;
    }
    map.retain(|_, entry| entry.expires > now);
    if map.len() > max {
        let mut by_expiry: Vec<(Instant, BatchId)> = map.iter().map(|(id, e)| (e.expires, *id)).collect();
        by_expiry.sort_unstable();
        let excess = map.len() - max * 9 / 10;
        for (_, id) in by_expiry.into_iter().take(excess) {
            map.remove(&id);
        }
    }
}

async fn invoke(
    script: &Script,
    conn: &ConnectionManager,
    prefix: &str,
    summary: &BatchSummary,
    fields: impl Iterator<Item = (String, String)>,
    ttl: Duration,
) -> redis::RedisResult<i64> {
    let mut invocation = script.key(keys::progress_key(prefix, summary.batch_id));
    invocation.arg(summary.seq).arg(ttl.as_millis() as u64).arg(json(summary));
    for (field, value) in fields {
        invocation.arg(field).arg(value);
    }
    invocation.invoke_async(&mut conn.clone()).await
}

fn item_field(position: u32, item: &ItemProgress) -> (String, String) {
    (format!("i:{position}"), json(item))
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("progress types always serialize")
}

/// The cached hash back into a snapshot; `None` for a floor, a missing key or a damaged entry.
fn decode(fields: Vec<(String, String)>) -> Option<Owned> {
    let mut summary = None;
    let mut owner = None;
    let mut items = Vec::with_capacity(fields.len());
    for (field, value) in fields {
        if field == "owner" {
            owner = Some(value);
        } else if field == "summary" {
            summary = serde_json::from_str::<BatchSummary>(&value).ok();
        } else if let Some(position) = field.strip_prefix("i:") {
            items.push((position.parse::<u32>().ok()?, serde_json::from_str::<ItemProgress>(&value).ok()?));
        }
    }
    let (summary, owner) = (summary?, owner?);
    items.sort_unstable_by_key(|(position, _)| *position);
    // A snapshot missing items (evicted fields) is not a snapshot.
    (items.len() == summary.counts.total as usize).then(|| Owned {
        owner,
        progress: BatchProgress::new(summary, items.into_iter().map(|(_, item)| item).collect()),
    })
}

#[cfg(test)]
mod tests {
    use batchwatch_core::{BatchSummary, Counts};

    use super::*;

    fn owned(seq: u64) -> Owned {
        let summary = BatchSummary::new(BatchId::new(), "b".into(), Counts::queued(0), seq, 0);
        Owned { owner: "u".into(), progress: BatchProgress::new(summary, Vec::new()) }
    }

    #[tokio::test]
    async fn the_memory_cache_keeps_at_most_its_bound_and_the_newest_entries() {
        let cache = Cache::memory_bounded(Duration::from_secs(60), 10);
        let mut ids = Vec::new();
        for _ in 0..100 {
            let entry = owned(1);
            ids.push(entry.progress.summary.batch_id);
            cache.fill(&entry).await;
            // Apart in time, so that expiry orders them.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let Backend::Memory { map, .. } = &cache.inner.backend else { unreachable!() };
        let held = map.lock().unwrap().len();
        assert!((9..=10).contains(&held), "{held} entries held");
        assert!(cache.get(*ids.last().unwrap()).await.is_some(), "the newest stays");
        assert!(cache.get(ids[0]).await.is_none(), "the oldest went");
    }
}
