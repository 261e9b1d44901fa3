//! Limits that hold across every server of a deployment, so their counters live in Redis:
//! open streams per user, writes per token per minute, and sign-in attempts per client address
//! and per token per minute.
//!
//! Written here rather than taken from a crate: the well-kept limiters (`governor`,
//! `tower_governor`) count in the process's memory, which a second server would not share,
//! and the stream limit is a count of open connections, not a rate.
//!
//! Streams: each holds a slot in a sorted set per user, scored by when the slot expires. An open
//! stream renews its slot at every keep-alive; a closed one removes it; a crashed server's
//! slots are not renewed and expire after [`Settings::slot_ttl`].
//! Writes and sign-ins: a fixed one-minute window per counter, an `INCR` on a key that expires
//! with it.
//!
//! While Redis is away the limits let requests through (and log it): the database still
//! serves, and a limit is not worth an outage.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use batchwatch_core::{Millis, account::window, keys};
use redis::{AsyncCommands, Script};

use batchwatch_core::{Role, now};

use crate::{
    access::accounts::Principal,
    config::Config,
    error::{Error, Result},
    redis_conn::RedisConn,
};

/// Takes a slot unless the user has `max` live ones. ARGV: now, expiry, max, slot, ttl (ms).
/// Returns -1 when taken, else the expiry of the user's soonest-expiring slot.
const OPEN: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return -1
";

/// Counts one more in a window. ARGV: the window's length (ms).
const COUNT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
";

const WINDOW: Duration = Duration::from_secs(60);

/// The limits' settings, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub max_streams_per_user: u32,
    /// How long a stream's slot outlives its last renewal.
    pub slot_ttl: Duration,
    pub writes_per_minute: u32,
    pub worker_writes_per_minute: u32,
    pub sign_ins_per_minute: u32,
}

impl From<&Config> for Settings {
    fn from(c: &Config) -> Self {
        Self {
            max_streams_per_user: c.max_streams_per_user,
            // Four keep-alives: a live stream renews its slot well before it could expire.
            slot_ttl: Duration::from_secs(c.stream_keepalive_secs.max(1) * 4),
            writes_per_minute: c.writes_per_minute,
            worker_writes_per_minute: c.worker_writes_per_minute,
            sign_ins_per_minute: c.sign_ins_per_minute,
        }
    }
}

#[derive(Clone)]
pub struct Limits {
    backend: Backend,
    settings: Settings,
}

#[derive(Clone)]
enum Backend {
    Redis { conn: RedisConn, prefix: String, open: Arc<Script>, counter: Arc<Script> },
    Memory(Arc<Mutex<Memory>>),
}

/// `memory://`: the same rules for one process.
#[derive(Default)]
struct Memory {
    /// Slot expiries by user and slot.
    streams: HashMap<String, HashMap<String, Millis>>,
    /// Counts by key (`keys::writes_key`, `keys::sign_ins_key`) and window start.
    counts: HashMap<(String, Millis), u32>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Limits {
    pub fn redis(conn: RedisConn, prefix: &str, settings: Settings) -> Self {
        let backend = Backend::Redis {
            conn,
            prefix: prefix.to_owned(),
            open: Arc::new(Script::new(OPEN)),
            counter: Arc::new(Script::new(COUNT)),
        };
        Self { backend, settings }
    }

    pub fn memory(settings: Settings) -> Self {
        Self { backend: Backend::Memory(Arc::default()), settings }
    }

    /// Takes one of the user's stream slots, or answers 429 with the wait until the soonest
    /// slot could expire.
    pub async fn open_stream(&self, user_id: &str) -> Result<StreamSlot> {
        let slot = uuid::Uuid::new_v4().to_string();
        let now = now();
        let ttl = self.settings.slot_ttl.as_millis() as Millis;
        let max = self.settings.max_streams_per_user;
        let soonest = match &self.backend {
            Backend::Redis { conn, prefix, open, .. } => {
                let soonest: redis::RedisResult<Millis> = open
                    .key(keys::streams_key(prefix, user_id))
                    .arg(now)
                    .arg(now + ttl)
                    .arg(max)
                    .arg(&slot)
                    .arg(ttl)
                    .invoke_async(&mut conn.clone())
                    .await;
                match soonest {
                    Ok(soonest) => (soonest >= 0).then_some(soonest),
                    Err(error) => {
                        tracing::warn!(%error, "stream limit unavailable: letting the stream open");
                        None
                    }
                }
            }
            Backend::Memory(memory) => {
                let mut memory = memory.lock().unwrap_or_else(|e| e.into_inner());
                let slots = memory.streams.entry(user_id.to_owned()).or_default();
                slots.retain(|_, expires| *expires > now);
                if slots.len() >= max as usize {
                    slots.values().min().copied()
                } else {
                    slots.insert(slot.clone(), now + ttl);
                    None
                }
            }
        };
        if let Some(soonest) = soonest {
            let retry_after = ((soonest - now).max(0) as u64).div_ceil(1000).max(1);
            return Err(Error::TooMany { what: "open streams", retry_after });
        }
        Ok(StreamSlot { limits: self.clone(), user_id: user_id.to_owned(), slot })
    }

    /// Counts a write by this token, or answers 429 when its minute is used up.
    pub async fn write(&self, principal: &Principal) -> Result<()> {
        let limit = match principal.role {
            Role::User => self.settings.writes_per_minute,
            Role::Worker => self.settings.worker_writes_per_minute,
        };
        let token = &principal.token_id;
        self.count("writes", limit, |prefix, start| keys::writes_key(prefix, token, start)).await
    }

    /// Counts a sign-in attempt from `address` with a token whose SHA-256 is `token_hash`, or
    /// answers 429 when either has used up its minute: one address cannot try many tokens, and
    /// many addresses cannot try one token.
    pub async fn sign_in(&self, address: &str, token_hash: &str) -> Result<()> {
        let limit = self.settings.sign_ins_per_minute;
        let by_address = self.count("sign-in attempts", limit, |prefix, start| {
            keys::sign_ins_key(prefix, "address", address, start)
        });
        let by_token = self.count("sign-in attempts", limit, |prefix, start| {
            keys::sign_ins_key(prefix, "token", token_hash, start)
        });
        let (by_address, by_token) = tokio::join!(by_address, by_token);
        by_address.and(by_token)
    }

    /// Adds one to the counter `key` names in the current one-minute window: 429 past `limit`.
    async fn count(
        &self,
        what: &'static str,
        limit: u32,
        key: impl Fn(&str, Millis) -> String,
    ) -> Result<()> {
        let (start, retry_after) = window(now(), WINDOW.as_millis() as Millis);
        let count = match &self.backend {
            Backend::Redis { conn, prefix, counter, .. } => {
                let count: redis::RedisResult<u32> = counter
                    .key(key(prefix, start))
                    .arg(WINDOW.as_millis() as u64)
                    .invoke_async(&mut conn.clone())
                    .await;
                count.unwrap_or_else(|error| {
                    tracing::warn!(%error, what, "limit unavailable: letting the request through");
                    0
                })
            }
            Backend::Memory(memory) => {
                let mut memory = memory.lock().unwrap_or_else(|e| e.into_inner());
                memory.counts.retain(|(_, window_start), _| *window_start >= start);
                let count = memory.counts.entry((key("", start), start)).or_default();
                *count += 1;
                *count
            }
        };
        if count > limit {
            return Err(Error::TooMany { what, retry_after });
        }
        Ok(())
    }

    async fn renew(&self, user_id: &str, slot: &str) -> Result<()> {
        let expires = now() + self.settings.slot_ttl.as_millis() as Millis;
        match &self.backend {
            Backend::Redis { conn, prefix, .. } => {
                let key = keys::streams_key(prefix, user_id);
                let ttl = self.settings.slot_ttl.as_millis() as u64;
                let () = redis::pipe()
                    .zadd(&key, slot, expires)
                    .ignore()
                    .pexpire(&key, ttl as i64)
                    .ignore()
                    .query_async(&mut conn.clone())
                    .await?;
            }
            Backend::Memory(memory) => {
                let mut memory = memory.lock().unwrap_or_else(|e| e.into_inner());
                memory.streams.entry(user_id.to_owned()).or_default().insert(slot.to_owned(), expires);
            }
        }
        Ok(())
    }

    async fn release(&self, user_id: &str, slot: &str) -> Result<()> {
        match &self.backend {
            Backend::Redis { conn, prefix, .. } => {
                let _: i64 = conn.clone().zrem(keys::streams_key(prefix, user_id), slot).await?;
            }
            Backend::Memory(memory) => {
                let mut memory = memory.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(slots) = memory.streams.get_mut(user_id) {
                    slots.remove(slot);
                }
            }
        }
        Ok(())
    }
}

/// A stream's place in its user's limit: renewed while the stream lives, given back when it
/// is dropped (the stream ended, or its connection did).
pub struct StreamSlot {
    limits: Limits,
    user_id: String,
    slot: String,
}

impl StreamSlot {
    /// Keeps the slot from expiring; runs beside the stream, which never waits for Redis.
    pub fn renew(&self) {
        let (limits, user_id, slot) = (self.limits.clone(), self.user_id.clone(), self.slot.clone());
        tokio::spawn(async move {
            if let Err(error) = limits.renew(&user_id, &slot).await {
                tracing::warn!(%error, "renewing a stream slot failed");
            }
        });
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let (limits, user_id, slot) =
            (self.limits.clone(), std::mem::take(&mut self.user_id), std::mem::take(&mut self.slot));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            // A slot not given back (Redis away) expires on its own.
            if let Err(error) = limits.release(&user_id, &slot).await {
                tracing::warn!(%error, "releasing a stream slot failed");
            }
        });
    }
}
