//! Login throttling per user name: after [`MAX_FAILURES`] wrong passwords within
//! [`WINDOW`], further attempts for that name are refused until the window has passed.
//! In memory (one console process); a restart forgets it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_FAILURES: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(300);
/// Names remembered at most (an attacker trying random names cannot grow it without bound).
const MAX_NAMES: usize = 10_000;

#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    /// Seconds to wait before `name` may try again, if it is locked out now.
    pub fn locked(&self, name: &str) -> Option<u64> {
        let map = self.failures.lock().ok()?;
        let (n, since) = map.get(name)?;
        let left = WINDOW.checked_sub(since.elapsed())?;
        (*n >= MAX_FAILURES).then(|| left.as_secs().max(1))
    }

    pub fn failed(&self, name: &str) {
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        if map.len() >= MAX_NAMES {
            map.retain(|_, (_, since)| since.elapsed() < WINDOW);
            if map.len() >= MAX_NAMES {
                map.clear();
            }
        }
        let e = map.entry(name.to_string()).or_insert((0, Instant::now()));
        if e.1.elapsed() >= WINDOW {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }

    pub fn succeeded(&self, name: &str) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_failures() {
        let t = Throttle::default();
        for _ in 0..MAX_FAILURES - 1 {
            t.failed("ann");
        }
        assert!(t.locked("ann").is_none());
        t.failed("ann");
        assert!(t.locked("ann").is_some());
        assert!(t.locked("bob").is_none());
        t.succeeded("ann");
        assert!(t.locked("ann").is_none());
    }
}
