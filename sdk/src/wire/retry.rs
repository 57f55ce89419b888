//! Retry policies. rq's `Retry(max, interval)` is stored as `retries_left` + `retry_intervals`;
//! mindora's exponential policy is stored the same way (so a Python rq worker retries it
//! too, without jitter) plus a `mindora_retry` field our worker reads to add jitter.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How a failed job is tried again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RetryPolicy {
    /// rq's `Retry(max=..., interval=[...])`, honoured exactly.
    Rq {
        /// Retries after the first attempt.
        max: u32,
        /// Seconds before each retry; the last repeats, an empty list means "at once".
        intervals: Vec<i64>,
    },
    /// Exponential backoff: delay(n) = min(cap, base * factor^(n-1)) ± jitter.
    Exponential {
        /// Attempts in all, the first included.
        max_attempts: u32,
        /// Delay before the first retry, seconds.
        base_secs: f64,
        /// Growth per retry.
        factor: f64,
        /// Longest delay, seconds.
        cap_secs: f64,
        /// Fraction of the delay drawn at random either way (0.0 - 1.0).
        jitter: f64,
    },
}

impl RetryPolicy {
    /// How many retries the policy allows (rq's `retries_left` at enqueue).
    pub fn retries(&self) -> u32 {
        match self {
            RetryPolicy::Rq { max, .. } => *max,
            RetryPolicy::Exponential { max_attempts, .. } => max_attempts.saturating_sub(1),
        }
    }

    /// The deterministic interval list rq can read.
    pub fn rq_intervals(&self) -> Vec<i64> {
        match self {
            RetryPolicy::Rq { intervals, .. } => intervals.clone(),
            RetryPolicy::Exponential {
                base_secs,
                factor,
                cap_secs,
                ..
            } => (0..self.retries())
                .map(|n| exp_delay(*base_secs, *factor, *cap_secs, n).ceil() as i64)
                .collect(),
        }
    }

    /// Seconds to wait before the retry taken while `retries_left` retries remain (before
    /// decrementing), exactly rq's `get_retry_interval` for rq policies.
    pub fn delay_secs(&self, retries_left: i64) -> f64 {
        match self {
            RetryPolicy::Rq { intervals, .. } => rq_interval(intervals, retries_left) as f64,
            RetryPolicy::Exponential {
                base_secs,
                factor,
                cap_secs,
                jitter,
                ..
            } => {
                let n = i64::from(self.retries())
                    .saturating_sub(retries_left)
                    .max(0) as u32;
                let d = exp_delay(*base_secs, *factor, *cap_secs, n);
                let j = jitter.clamp(0.0, 1.0);
                if j == 0.0 {
                    return d;
                }
                let spread = d * j;
                (d + rand::rng().random_range(-spread..=spread)).max(0.0)
            }
        }
    }
}

fn exp_delay(base: f64, factor: f64, cap: f64, n: u32) -> f64 {
    (base * factor.powi(n as i32)).min(cap).max(0.0)
}

/// rq's `Job.get_retry_interval`: index = max(len - retries_left, 0).
pub fn rq_interval(intervals: &[i64], retries_left: i64) -> i64 {
    if intervals.is_empty() {
        return 0;
    }
    let idx = (intervals.len() as i64 - retries_left).max(0) as usize;
    intervals[idx.min(intervals.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rq_intervals_index_like_rq() {
        // Retry(max=3, interval=[1, 2, 3]): retries_left 3 -> 1, 2 -> 2, 1 -> 3.
        assert_eq!(rq_interval(&[1, 2, 3], 3), 1);
        assert_eq!(rq_interval(&[1, 2, 3], 2), 2);
        assert_eq!(rq_interval(&[1, 2, 3], 1), 3);
        // Retry(max=3, interval=[5]) -> 5 each time.
        assert_eq!(rq_interval(&[5], 3), 5);
        assert_eq!(rq_interval(&[], 2), 0);
    }

    #[test]
    fn exponential_grows_and_caps() {
        let p = RetryPolicy::Exponential {
            max_attempts: 6,
            base_secs: 1.0,
            factor: 2.0,
            cap_secs: 10.0,
            jitter: 0.0,
        };
        assert_eq!(p.retries(), 5);
        assert_eq!(p.rq_intervals(), vec![1, 2, 4, 8, 10]);
        assert_eq!(p.delay_secs(5), 1.0);
        assert_eq!(p.delay_secs(2), 8.0);
        let jittered = RetryPolicy::Exponential {
            max_attempts: 3,
            base_secs: 10.0,
            factor: 2.0,
            cap_secs: 100.0,
            jitter: 0.5,
        };
        let d = jittered.delay_secs(2);
        assert!((5.0..=15.0).contains(&d), "{d}");
    }
}
