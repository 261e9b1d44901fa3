//! Redis names. Every server and worker must agree on them, so they are built in one place.

use crate::BatchId;

/// The pub/sub channel on which every change of a batch is published.
pub fn channel(prefix: &str, id: BatchId) -> String {
    format!("{prefix}batch:{id}")
}

/// The key caching a batch's progress.
pub fn progress_key(prefix: &str, id: BatchId) -> String {
    format!("{prefix}progress:{id}")
}

/// The batch id inside a channel name, for a subscriber that receives many channels.
pub fn batch_of_channel(prefix: &str, channel: &str) -> Option<BatchId> {
    channel.strip_prefix(prefix)?.strip_prefix("batch:")?.parse().ok()
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
    fn channel_round_trip() {
        let id = BatchId::new();
        assert_eq!(batch_of_channel("p:", &channel("p:", id)), Some(id));
        assert_eq!(batch_of_channel("q:", &channel("p:", id)), None);
        assert_eq!(batch_of_channel("", "batch:nope"), None);
        assert_eq!(batch_of_channel("", &progress_key("", id)), None);
    }
}
