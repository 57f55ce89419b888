//! The worker's retry pacing, in one place, on `backon`: reconnect loops (Redis commands
//! channel, AMQP sessions, start-up connects, claim errors) and outcome recording all use
//! these builders instead of hand-rolled sleeps.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Reconnect pacing: 50 ms doubling to 5 s, with jitter so a fleet does not retry in step,
/// without end (the caller stops on shutdown).
pub fn reconnect() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

/// AMQP session pacing: 200 ms doubling to 10 s, with jitter, without end.
pub fn amqp_session() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

/// Recording an outcome: 50 ms doubling to 5 s, up to 120 tries (~10 minutes), after
/// which the job is left to abandoned-job recovery.
pub fn record() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_max_times(120)
}

/// A stateful pacer for loops that keep their own state between attempts (`next()` gives
/// the next pause; `reset()` starts over after a success).
pub struct Pacer {
    builder: ExponentialBuilder,
    current: ExponentialBackoff,
}

impl Pacer {
    /// A pacer following `builder`.
    pub fn new(builder: ExponentialBuilder) -> Self {
        Pacer {
            builder,
            current: builder.build(),
        }
    }

    /// The next pause.
    pub fn next_delay(&mut self) -> Duration {
        self.current.next().unwrap_or(Duration::from_secs(5))
    }

    /// Back to the shortest pause.
    pub fn reset(&mut self) {
        self.current = self.builder.build();
    }
}
