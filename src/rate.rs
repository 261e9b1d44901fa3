//! The throughput and time left of a running batch, as the page shows them.

use std::collections::VecDeque;

use crate::Millis;

/// Items per second and time left, from the finished count seen over the last seconds.
#[derive(Debug, Clone, Default)]
pub struct Rate {
    samples: VecDeque<(Millis, u32)>,
}

impl Rate {
    /// How far back the rate looks: long enough to smooth bursts, short enough to follow.
    pub const WINDOW_MS: Millis = 10_000;

    pub fn push(&mut self, at: Millis, finished: u32) {
        if self.samples.back().is_some_and(|&(t, f)| t == at && f == finished) {
            return;
        }
        // A count that went down (a retry) starts a new measurement.
        if self.samples.back().is_some_and(|&(_, f)| finished < f) {
            self.samples.clear();
        }
        self.samples.push_back((at, finished));
        while self.samples.len() > 2 && self.samples.front().is_some_and(|&(t, _)| at - t > Self::WINDOW_MS) {
            self.samples.pop_front();
        }
    }

    pub fn per_second(&self) -> Option<f64> {
        let (&(t0, f0), &(t1, f1)) = (self.samples.front()?, self.samples.back()?);
        (t1 > t0 && f1 > f0).then(|| f64::from(f1 - f0) * 1_000.0 / (t1 - t0) as f64)
    }

    /// Seconds until `remaining` more items are finished at the current rate.
    pub fn eta_secs(&self, remaining: u32) -> Option<f64> {
        self.per_second().map(|r| f64::from(remaining) / r)
    }
}

/// The time left as the page says it: `about 3m 05s left`; never `about 0s left` while items
/// remain, which reads as if the batch were stuck.
pub fn time_left(secs: f64) -> String {
    if secs < 0.5 { "under a second left".to_owned() } else { format!("about {} left", human_duration(secs)) }
}

/// A duration as people read it: `42s`, `3m 05s`, `2h 01m`.
pub fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3_600, (s % 3_600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_eta() {
        let mut r = Rate::default();
        assert_eq!(r.per_second(), None);
        r.push(0, 0);
        assert_eq!(r.per_second(), None, "one sample is no rate");
        r.push(2_000, 10);
        assert_eq!(r.per_second(), Some(5.0));
        assert_eq!(r.eta_secs(20), Some(4.0));
    }

    #[test]
    fn rate_forgets_old_samples() {
        let mut r = Rate::default();
        r.push(0, 0);
        r.push(1_000, 100);
        r.push(20_000, 110);
        r.push(21_000, 120);
        // Only the last 10 s count: 10 items in 1 s.
        assert_eq!(r.per_second(), Some(10.0));
    }

    #[test]
    fn rate_restarts_when_the_count_drops() {
        let mut r = Rate::default();
        r.push(0, 0);
        r.push(1_000, 10);
        r.push(2_000, 5);
        assert_eq!(r.per_second(), None);
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(0.4), "0s");
        assert_eq!(human_duration(42.0), "42s");
        assert_eq!(human_duration(185.0), "3m 05s");
        assert_eq!(human_duration(7_260.0), "2h 01m");
        assert_eq!(human_duration(-3.0), "0s");
    }

    #[test]
    fn time_left_is_never_about_nothing() {
        assert_eq!(time_left(0.4), "under a second left");
        assert_eq!(time_left(0.6), "about 1s left");
        assert_eq!(time_left(185.0), "about 3m 05s left");
    }
}
