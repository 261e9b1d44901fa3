//! A batch's pace: how many events its watchers may be offered now.
//!
//! One offer per interval (GCRA with half an interval of slack, so that an event a little
//! early, as publishers' timers are, does not wait for the interval's end: that wait was most
//! of the fan-out's latency), of one event; more than one only from a reserve of [`BURST`]
//! events, earned back at one per [`EARN_BACK`]. So in the long run watchers get at most one
//! event per interval and one per `EARN_BACK` (51 a second at the default 20 ms) whatever the
//! rate of changes, while a burst (an append's or a cancel's pages of items, the events that
//! waited for a missing one) goes out at once with every item listed, even on a batch whose
//! changes already use every interval.

use std::time::Duration;

use tokio::time::Instant;

/// The most events an offer holds beyond its one.
pub const BURST: u32 = 25;
/// How long the reserve takes to earn back one event.
pub const EARN_BACK: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Pace {
    interval: Duration,
    /// When the next offer is due: each offer moves it one interval on.
    next: Instant,
    /// When the reserve is full again: each event taken from it moves it `EARN_BACK` on.
    reserve_full_at: Instant,
}

impl Pace {
    /// A pace with nothing offered yet. With a zero interval it holds nothing back.
    pub fn new(interval: Duration, now: Instant) -> Self {
        Self { interval, next: now, reserve_full_at: now }
    }

    /// How many events may be offered at `now`.
    pub fn available(&self, now: Instant) -> u32 {
        if self.interval.is_zero() {
            return u32::MAX;
        }
        if now < self.next_at() {
            return 0;
        }
        let owed = self.reserve_full_at.saturating_duration_since(now);
        let reserve = BURST.saturating_sub(owed.as_nanos().div_ceil(EARN_BACK.as_nanos()) as u32);
        1 + reserve
    }

    /// `events` (at least one) were offered at `now`.
    pub fn spend(&mut self, now: Instant, events: u32) {
        self.next = self.next.max(now) + self.interval;
        self.reserve_full_at = self.reserve_full_at.max(now) + EARN_BACK * events.saturating_sub(1);
    }

    /// When the next offer may be made.
    pub fn next_at(&self) -> Instant {
        self.next.checked_sub(self.interval / 2).unwrap_or(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn one_offer_an_interval_and_a_burst_from_the_reserve() {
        let now = Instant::now();
        let mut pace = Pace::new(20 * MS, now);
        assert_eq!(pace.available(now), 1 + BURST);
        pace.spend(now, 1 + BURST);
        assert_eq!(pace.available(now), 0);
        assert_eq!(pace.next_at(), now + 10 * MS, "half an interval of slack");
        assert_eq!(pace.available(now + 9 * MS), 0);
        assert_eq!(pace.available(now + 10 * MS), 1, "the reserve is spent");
        pace.spend(now + 10 * MS, 1);
        assert_eq!(pace.available(now + 29 * MS), 0);
        assert_eq!(pace.available(now + 30 * MS), 1);
        // In the long run: one an interval, and one a second from the reserve, however many
        // are asked for.
        let (mut at, mut offered) = (now + 30 * MS, 0);
        while at < now + 2_030 * MS {
            let n = pace.available(at);
            if n > 0 {
                pace.spend(at, n);
            }
            offered += n;
            at += MS;
        }
        assert_eq!(offered, 100 + 2, "two seconds");
    }

    #[test]
    fn a_steady_event_an_interval_leaves_the_reserve_whole() {
        let now = Instant::now();
        let mut pace = Pace::new(20 * MS, now);
        for i in 0..100 {
            let at = now + 20 * i * MS;
            assert_eq!(pace.available(at), 1 + BURST, "at {i}");
            pace.spend(at, 1);
        }
        pace.spend(now + 2_000 * MS, 4);
        assert_eq!(pace.available(now + 2_020 * MS), 1 + BURST - 3);
        assert_eq!(pace.available(now + 5_000 * MS), 1 + BURST, "earned back");
    }

    #[test]
    fn a_zero_interval_holds_nothing_back() {
        let now = Instant::now();
        let mut pace = Pace::new(Duration::ZERO, now);
        pace.spend(now, 1_000);
        assert_eq!(pace.available(now), u32::MAX);
    }
}
