//! Redis names. Every server and worker must agree on them, so they are built in one place.

use crate::BatchId;

/// The pub/sub channel on which every change of a batch is published.
pub fn channel(prefix: &str, id: BatchId) -> String {
    format!("{prefix}batch:{id}")
}

/// The pub/sub channel on which each change of a user's batches is published, as the batch's
/// summary alone: what the user's other pages (the home's list, the toasts) follow.
pub fn user_channel(prefix: &str, user_id: &str) -> String {
    format!("{prefix}user:{user_id}")
}

/// The channel every server hears for what is not a batch's: revoked tokens, ended sessions.
pub fn control_channel(prefix: &str) -> String {
    format!("{prefix}control")
}

/// Partition channels on a Redis Cluster. Its pub/sub is sharded (a channel lives on the node of
/// its slot) and has no patterns, so changes go out on a fixed set of channels, each with a
/// hash tag of its own (`{07}`) that spreads them over the slots, and every server subscribes to
/// all of them (Centrifugo's approach).
pub const PARTITIONS: u16 = 16;

/// The partition channel number `partition` (see [`PARTITIONS`]).
pub fn partition_channel(prefix: &str, partition: u16) -> String {
    format!("{prefix}events:{{{partition:02}}}")
}

/// The partition a batch's changes go out on: always the same one, so they keep their order.
pub fn partition_of(id: BatchId) -> u16 {
    (id.0.as_u128() % u128::from(PARTITIONS)) as u16
}

/// The key caching a batch's progress.
pub fn progress_key(prefix: &str, id: BatchId) -> String {
    format!("{prefix}progress:{id}")
}

/// A browser session, by the SHA-256 of its cookie (a leaked key list reveals no cookie).
pub fn session_key(prefix: &str, session_hash: &str) -> String {
    format!("{prefix}session:{session_hash}")
}

/// The open streams of a user: a sorted set of slots scored by when each expires.
pub fn streams_key(prefix: &str, user_id: &str) -> String {
    format!("{prefix}streams:{user_id}")
}

/// The writes a token made in the rate-limit window starting at `window_start`.
pub fn writes_key(prefix: &str, token_id: &str, window_start: crate::Millis) -> String {
    format!("{prefix}writes:{token_id}:{window_start}")
}

/// The sign-in attempts from one client address, or with one token (by its SHA-256), in the
/// rate-limit window starting at `window_start`.
pub fn sign_ins_key(prefix: &str, by: &str, who: &str, window_start: crate::Millis) -> String {
    format!("{prefix}sign_ins:{by}:{who}:{window_start}")
}

/// The batch id inside a channel name, for a subscriber that receives many channels.
pub fn batch_of_channel(prefix: &str, channel: &str) -> Option<BatchId> {
    channel.strip_prefix(prefix)?.strip_prefix("batch:")?.parse().ok()
}

/// The user id inside a user channel's name.
pub fn user_of_channel<'a>(prefix: &str, channel: &'a str) -> Option<&'a str> {
    channel.strip_prefix(prefix)?.strip_prefix("user:").filter(|user| !user.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let id: BatchId = "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap();
        assert_eq!(channel("", id), "batch:67e55044-10b1-426f-9247-bb680e5fe0c8");
        assert_eq!(progress_key("", id), "progress:67e55044-10b1-426f-9247-bb680e5fe0c8");
        assert_eq!(channel("t1:", id), "t1:batch:67e55044-10b1-426f-9247-bb680e5fe0c8");
    }

    #[test]
    fn partitions() {
        assert_eq!(partition_channel("p:", 7), "p:events:{07}");
        let channels: std::collections::HashSet<_> =
            (0..1_000).map(|_| partition_of(BatchId::new())).collect();
        assert_eq!(channels.len(), PARTITIONS as usize, "batches spread over every partition");
        let id = BatchId::new();
        assert_eq!(partition_of(id), partition_of(id));
    }

    #[test]
    fn channel_round_trip() {
        let id = BatchId::new();
        assert_eq!(batch_of_channel("p:", &channel("p:", id)), Some(id));
        assert_eq!(batch_of_channel("q:", &channel("p:", id)), None);
        assert_eq!(batch_of_channel("", "batch:nope"), None);
        assert_eq!(batch_of_channel("", &progress_key("", id)), None);
        assert_eq!(user_of_channel("p:", &user_channel("p:", "u1")), Some("u1"));
        assert_eq!(user_of_channel("p:", &channel("p:", id)), None);
        assert_eq!(user_of_channel("", "user:"), None);
    }
}
