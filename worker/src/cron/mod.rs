//! Periodic jobs (`--cron FILE`): plain rq jobs enqueued on a schedule, by any number of
//! replicas running the same file, each tick enqueued exactly once.
//!
//! - [`schedule`]: the schedule file (TOML or YAML) and its cron expressions.
//! - [`scheduler`]: the tick loop; the claim of each tick is one wire-layer script
//!   (`mindora_sdk::wire::scripts::CRON_ENQUEUE`, `SET NX` on the tick's key + enqueue).
//! - [`registry`]: presence in rq's cron scheduler registry (`CronScheduler.all()`).
//!
//! Missed ticks: while a replica runs, a tick is enqueued if it is at most
//! [`scheduler::CATCH_UP_SECS`] late (a Redis blip, a stalled process); ticks that fell
//! while every replica was down, or that are later than that, are skipped (counted in
//! `mindora_cron_missed_ticks_total`) and the schedule goes on with the next tick.

pub mod registry;
pub mod schedule;
pub mod scheduler;

pub use schedule::{CronEntry, CronFile, Format, ScheduleError};
pub use scheduler::run;
