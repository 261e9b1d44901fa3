//! The limits behave the same on Redis and on the `memory://` twin.

mod common;

use std::time::Duration;

use batchwatch_core::{Role, Viewer};
use server::{
    access::{
        accounts::Principal,
        limits::{Limits, Settings},
    },
    error::Error,
};

const SETTINGS: Settings = Settings {
    max_streams_per_user: 2,
    slot_ttl: Duration::from_secs(60),
    writes_per_minute: 3,
    worker_writes_per_minute: 5,
    sign_ins_per_minute: 2,
};

/// Both backends, each with a key prefix of its own; the Redis keys are removed on drop.
async fn backends() -> Vec<(&'static str, Limits, Option<Cleanup>)> {
    let prefix = format!("test-{}:", uuid::Uuid::new_v4());
    let redis_url = common::server::shared_redis_url();
    let conn = server::redis_conn::RedisTarget::parse(&redis_url).unwrap().connect().unwrap();
    vec![
        ("memory", Limits::memory(SETTINGS), None),
        ("redis", Limits::redis(conn, &prefix, SETTINGS), Some(Cleanup { redis_url, prefix })),
    ]
}

struct Cleanup {
    redis_url: String,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        common::clean_redis_prefix(&self.redis_url, &self.prefix);
    }
}

fn principal(token_id: &str, role: Role) -> Principal {
    Principal {
        viewer: Viewer { user_id: format!("u-{token_id}"), name: token_id.into() },
        role,
        token_id: token_id.into(),
    }
}

#[tokio::test]
async fn stream_slots_are_counted_per_user_and_given_back() {
    for (name, limits, _cleanup) in backends().await {
        let a = limits.open_stream("ann").await.unwrap();
        let _b = limits.open_stream("ann").await.unwrap();
        match limits.open_stream("ann").await {
            Err(Error::TooMany { retry_after, .. }) => assert!((1..=60).contains(&retry_after), "{name}"),
            other => panic!("{name}: expected 429, got {:?}", other.map(|_| ())),
        }
        assert!(limits.open_stream("ben").await.is_ok(), "{name}: ben has slots of his own");
        drop(a);
        // The slot goes back from a task of its own.
        let what = format!("{name}: a dropped slot to be given back");
        common::eventually(&what, || async { limits.open_stream("ann").await.ok() }).await;
    }
}

#[tokio::test]
async fn writes_are_counted_per_token_with_the_role_s_limit() {
    for (name, limits, _cleanup) in backends().await {
        common::clear_of_window_edge().await;
        let (user, worker) = (principal("t1", Role::User), principal("t2", Role::Worker));
        for _ in 0..3 {
            limits.write(&user).await.unwrap();
        }
        assert!(matches!(limits.write(&user).await, Err(Error::TooMany { .. })), "{name}");
        for _ in 0..5 {
            limits.write(&worker).await.unwrap();
        }
        assert!(matches!(limits.write(&worker).await, Err(Error::TooMany { .. })), "{name}");
        assert!(limits.write(&principal("t3", Role::User)).await.is_ok(), "{name}: per token");
    }
}

#[tokio::test]
async fn sign_ins_are_counted_per_address_and_per_token() {
    for (name, limits, _cleanup) in backends().await {
        common::clear_of_window_edge().await;
        let (a, b) = ("token-a-hash", "token-b-hash");
        limits.sign_in("10.0.0.1", a).await.unwrap();
        limits.sign_in("10.0.0.1", b).await.unwrap();
        let by_address = limits.sign_in("10.0.0.1", "token-c-hash").await;
        assert!(matches!(by_address, Err(Error::TooMany { .. })), "{name}: one address, many tokens");
        limits.sign_in("10.0.0.2", a).await.unwrap();
        let by_token = limits.sign_in("10.0.0.3", a).await;
        assert!(matches!(by_token, Err(Error::TooMany { .. })), "{name}: many addresses, one token");
        let fresh = limits.sign_in("10.0.0.4", "token-d-hash").await;
        assert!(fresh.is_ok(), "{name}: another address and token are not held back");
    }
}
