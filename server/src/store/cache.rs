//! The summary cache: `progress:{id}` in Redis (or a map in this process for `memory://`), read
//! before the database and brought up to date after every committed change.
//!
//! The Redis value is a hash: `seq`, `owner` (the user id, checked on every read) and `summary`
//! (JSON). Items are not cached: a page reads the one page of items it shows, from the
//! database, and that costs the same whatever the batch's size. Writers race (several
//! workers, servers), so a summary replaces the cached one only when it is newer: the cache
//! never goes back. A change that finds no entry leaves its `seq` behind as a floor, so that a
//! refill read from the database before that change cannot land after it.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use batchwatch_core::{BatchId, BatchSummary, keys};
use redis::Script;

use crate::redis_conn::RedisConn;

/// Batches the in-process cache (`memory://`) holds at most, and the most missed changes kept
/// to write again.
const MEMORY_ENTRIES: usize = 10_000;

/// How often the changes Redis missed are tried again while it does not answer.
const RETRY_MISSED: Duration = Duration::from_millis(500);

/// Stores a summary unless the cache holds a newer one (or the same, or a higher floor).
/// ARGV: seq, ttl (ms), summary, and the owner for a fill from the database; a change (no
/// owner) only updates an entry that is there, and leaves a floor otherwise.
const SET: &str = r"
local cur = tonumber(redis.call('HGET', KEYS[1], 'seq') or '-1')
local seq = tonumber(ARGV[1])
local known = redis.call('HEXISTS', KEYS[1], 'owner') == 1
if cur > seq or (cur == seq and known) then return 0 end
if ARGV[4] then
  redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'summary', ARGV[3], 'owner', ARGV[4])
elseif known then
  redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'summary', ARGV[3])
else
  redis.call('HSET', KEYS[1], 'seq', ARGV[1])
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
    /// The newest summary of each batch whose change Redis did not take: written again once it
    /// answers (see [`Cache::apply`]).
    missed: Mutex<HashMap<BatchId, BatchSummary>>,
}

enum Backend {
    Redis {
        conn: RedisConn,
        prefix: String,
        set: Script,
    },
    /// At most `max` entries: a long-running `memory://` process reads many batches over its
    /// life, and each would otherwise stay until the process ends.
    Memory {
        map: Mutex<HashMap<BatchId, Entry>>,
        max: usize,
    },
}

/// The in-process twin of the Redis hash, with the same rule.
struct Entry {
    /// The owner and the summary; `None` for a floor.
    known: Option<(String, BatchSummary)>,
    seq: u64,
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
    pub fn redis(conn: RedisConn, prefix: &str, ttl: Duration) -> Self {
        Self::with(Backend::Redis { conn, prefix: prefix.to_owned(), set: Script::new(SET) }, ttl)
    }

    pub fn memory(ttl: Duration) -> Self {
        Self::memory_bounded(ttl, MEMORY_ENTRIES)
    }

    pub fn memory_bounded(ttl: Duration, max: usize) -> Self {
        Self::with(Backend::Memory { map: Mutex::default(), max }, ttl)
    }

    fn with(backend: Backend, ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                ttl,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                missed: Mutex::default(),
            }),
        }
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

    /// The cached owner and summary, counted as a hit or a miss. A Redis failure is a miss.
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
                map.get(&id).filter(|e| e.expires > Instant::now()).and_then(|e| e.known.clone())
            }
        };
        let counter = if found.is_some() { &self.inner.hits } else { &self.inner.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores a summary read from the database (refused when the cache knows better).
    pub async fn fill(&self, owner: &str, summary: &BatchSummary) {
        if let Err(error) = self.set(summary, Some(owner)).await {
            tracing::debug!(%error, "progress cache fill failed");
        }
    }

    /// Brings the cached summary up to date after a committed change. A change Redis does not
    /// take is written again until it does: a Redis back from an outage with its data (from
    /// disk, or after a network fault) would otherwise answer the summary from before the
    /// change until its entry expired, and for a batch that changes no more, nothing else
    /// would replace it.
    pub async fn apply(&self, summary: &BatchSummary) {
        if let Err(error) = self.set(summary, None).await {
            self.retry(summary, error);
        }
    }

    fn missed(&self) -> std::sync::MutexGuard<'_, HashMap<BatchId, BatchSummary>> {
        self.inner.missed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a change Redis did not take for the retries. Logged once per outage (the first
    /// miss, and the retries' end), not once a change: a busy server makes thousands.
    fn retry(&self, summary: &BatchSummary, error: redis::RedisError) {
        let mut missed = self.missed();
        let first = missed.is_empty();
        if missed.len() >= MEMORY_ENTRIES && !missed.contains_key(&summary.batch_id) {
            return;
        }
        let newer = missed.get(&summary.batch_id).is_none_or(|held| held.seq < summary.seq);
        if newer {
            missed.insert(summary.batch_id, summary.clone());
        }
        drop(missed);
        if first {
            tracing::warn!(%error, "progress cache update failed; writing it again until Redis takes it");
            let cache = self.clone();
            tokio::spawn(async move { cache.write_missed().await });
        }
    }

    /// Writes the missed changes until Redis takes them all; ends with none left (checked
    /// under the lock, so that the next miss starts another round).
    async fn write_missed(&self) {
        let since = Instant::now();
        loop {
            tokio::time::sleep(RETRY_MISSED).await;
            let pending: Vec<BatchSummary> = self.missed().values().cloned().collect();
            for summary in pending {
                if self.set(&summary, None).await.is_err() {
                    break;
                }
                let mut missed = self.missed();
                if missed.get(&summary.batch_id).is_some_and(|held| held.seq == summary.seq) {
                    missed.remove(&summary.batch_id);
                }
            }
            if self.missed().is_empty() {
                let outage = since.elapsed();
                tracing::info!(?outage, "progress cache: the changes Redis missed are written");
                return;
            }
        }
    }

    async fn set(&self, summary: &BatchSummary, owner: Option<&str>) -> redis::RedisResult<()> {
        let ttl = self.inner.ttl;
        let seq = summary.seq;
        match &self.inner.backend {
            Backend::Redis { conn, prefix, set } => {
                let mut invocation = set.key(keys::progress_key(prefix, summary.batch_id));
                invocation.arg(seq).arg(ttl.as_millis() as u64).arg(json(summary));
                if let Some(owner) = owner {
                    invocation.arg(owner);
                }
                invocation.invoke_async::<i64>(&mut conn.clone()).await?;
            }
            Backend::Memory { map, max } => {
                let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let entry =
                    map.entry(summary.batch_id).or_insert(Entry { known: None, seq: 0, expires: now });
                if entry.expires <= now {
                    *entry = Entry { known: None, seq: 0, expires: now };
                }
                let known = entry.known.is_some();
                if entry.seq > seq || (entry.seq == seq && known) {
                    return Ok(());
                }
                let owner = owner.map(str::to_owned).or_else(|| entry.known.take().map(|(owner, _)| owner));
                *entry =
                    Entry { known: owner.map(|owner| (owner, summary.clone())), seq, expires: now + ttl };
                bound(&mut map, *max, now);
            }
        }
        Ok(())
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

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("progress types always serialize")
}

#[cfg(test)]
mod tests {
    use batchwatch_core::Counts;

    use super::*;

    fn summary(id: BatchId, seq: u64) -> BatchSummary {
        BatchSummary::new(id, "b".into(), Counts::queued(0), seq, 0)
    }

    #[tokio::test]
    async fn the_memory_cache_keeps_at_most_its_bound_and_the_newest_entries() {
        let cache = Cache::memory_bounded(Duration::from_secs(60), 10);
        let mut ids = Vec::new();
        for _ in 0..100 {
            let id = BatchId::new();
            ids.push(id);
            cache.fill("u", &summary(id, 1)).await;
            // Apart in time, so that expiry orders them.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let Backend::Memory { map, .. } = &cache.inner.backend else { unreachable!() };
        let held = map.lock().unwrap().len();
        assert!((9..=10).contains(&held), "{held} entries held");
        assert!(cache.summary(*ids.last().unwrap()).await.is_some(), "the newest stays");
        assert!(cache.summary(ids[0]).await.is_none(), "the oldest went");
    }

    #[tokio::test]
    async fn the_memory_cache_never_goes_back_and_a_change_it_missed_blocks_an_older_refill() {
        let cache = Cache::memory(Duration::from_secs(60));
        let id = BatchId::new();
        cache.apply(&summary(id, 5)).await;
        assert!(cache.summary(id).await.is_none(), "a change alone leaves only a floor");
        cache.fill("u", &summary(id, 4)).await;
        assert!(cache.summary(id).await.is_none(), "a refill older than the floor is refused");
        cache.fill("u", &summary(id, 5)).await;
        cache.apply(&summary(id, 7)).await;
        cache.apply(&summary(id, 6)).await;
        assert_eq!(cache.summary(id).await.map(|(owner, s)| (owner, s.seq)), Some(("u".into(), 7)));
    }
}
