//! Browser sessions: a random cookie value mapped, in Redis, to the API token it was signed in
//! with, so that every server of a deployment knows it. The key is the value's SHA-256 and
//! expires with the cookie. A session holds no rights of its own: each request reads the token
//! again (`Accounts::principal`), so revoking a token ends its sessions at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use batchwatch_core::keys;
use redis::AsyncCommands;

use crate::{
    access::accounts::{hash, new_secret},
    error::Result,
    redis_conn::RedisConn,
};

#[derive(Clone)]
pub struct Sessions {
    backend: Backend,
    ttl: Duration,
}

#[derive(Clone)]
enum Backend {
    Redis {
        conn: RedisConn,
        prefix: String,
    },
    /// `memory://`: one process's sessions, gone when it stops.
    Memory(Arc<Mutex<HashMap<String, (String, Instant)>>>),
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl Sessions {
    pub fn redis(conn: RedisConn, prefix: &str, ttl: Duration) -> Self {
        Self { backend: Backend::Redis { conn, prefix: prefix.to_owned() }, ttl }
    }

    pub fn memory(ttl: Duration) -> Self {
        Self { backend: Backend::Memory(Arc::default()), ttl }
    }

    /// How long a session lasts: also the cookie's `Max-Age`.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a session for a token; returns the cookie's value.
    pub async fn start(&self, token_id: &str) -> Result<String> {
        let secret = new_secret()?;
        let key = hash(&secret);
        match &self.backend {
            Backend::Redis { conn, prefix } => {
                let ttl_ms = self.ttl.as_millis() as u64;
                let () = conn.clone().pset_ex(keys::session_key(prefix, &key), token_id, ttl_ms).await?;
            }
            Backend::Memory(map) => {
                let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                map.retain(|_, (_, expires)| *expires > now);
                map.insert(key, (token_id.to_owned(), now + self.ttl));
            }
        }
        Ok(secret)
    }

    /// The token a live session was started with.
    pub async fn token(&self, secret: &str) -> Result<Option<String>> {
        let key = hash(secret);
        Ok(match &self.backend {
            Backend::Redis { conn, prefix } => conn.clone().get(keys::session_key(prefix, &key)).await?,
            Backend::Memory(map) => {
                let map = map.lock().unwrap_or_else(|e| e.into_inner());
                map.get(&key).filter(|(_, expires)| *expires > Instant::now()).map(|(token, _)| token.clone())
            }
        })
    }

    /// Ends a session at once.
    pub async fn end(&self, secret: &str) -> Result<()> {
        let key = hash(secret);
        match &self.backend {
            Backend::Redis { conn, prefix } => {
                let _: i64 = conn.clone().del(keys::session_key(prefix, &key)).await?;
            }
            Backend::Memory(map) => {
                map.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
            }
        }
        Ok(())
    }
}
