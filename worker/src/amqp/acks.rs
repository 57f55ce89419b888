//! Ack coalescing: one `basic.ack multiple=true` settles a whole run of finished
//! deliveries, so the broker handles one frame (and one round of channel and queue work)
//! instead of one per message.
//!
//! Delivery tags on a channel grow by one per delivery. Every delivery is registered when it
//! arrives and stays *outstanding* until it is acked, nacked or rejected; a delivery left
//! unacked on purpose (a publish failed, so the broker must redeliver it) stays outstanding
//! for the rest of the session. An ack with `multiple=true` covers every unacked tag up to
//! its own, so it is only ever sent up to the lowest outstanding tag: never past a delivery
//! that is still running, was rejected or nacked out of band, or is left unacked.
//!
//! When acks go out: finished deliveries are held briefly and sent as one frame when
//! - a quarter of the prefetch window has finished (the broker still has three quarters of
//!   the window to keep delivering into), or
//! - the broker's window is full (outstanding + finished = prefetch: it would stop
//!   delivering), or
//! - the oldest held one has waited [`HOLD`] (so a lone ack is late by at most that), or
//! - a graceful stop asks for a flush.
//!
//! Finished deliveries above a running one wait for it (they join the next multiple ack)
//! until the window fills or [`HOLD`] passes; then they are acked one by one, so they never
//! hold a prefetch slot for long.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::BasicAckOptions;
use lapin::Channel;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tracing::{debug, warn};

/// Counter: `basic.ack` frames sent, by `kind` (`multiple` or `single`); with the jobs
/// counters it shows how many deliveries one ack frame settles.
pub const AMQP_ACK_FRAMES: &str = "mindora_amqp_ack_frames_total";

/// Longest a finished delivery's ack is held back to be coalesced with others.
pub(super) const HOLD: Duration = Duration::from_millis(2);

/// What the settle path tells the coalescer about one delivery tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// Send everything held, then answer (graceful stop, before the channel closes).
    Flushed,
    /// The delivery arrived (sent before it is handed to the unit of work).
    Delivered(u64),
    /// Settled with an ack.
    Ack(u64),
    /// Settled out of band (nack / reject already sent): no longer ours to ack.
    Released(u64),
}

/// A handle of one consuming channel's ack coalescer (cheap to clone).
#[derive(Debug, Clone)]
pub(super) struct Acks {
    tx: mpsc::UnboundedSender<Event>,
    flushed: Arc<Notify>,
}

impl Acks {
    /// Starts the coalescer of `channel`, whose prefetch window is `prefetch` deliveries;
    /// it ends (sending what it holds) when every handle is dropped.
    pub(super) fn start(channel: Channel, prefetch: usize) -> Acks {
        let (tx, rx) = mpsc::unbounded_channel();
        let flushed = Arc::new(Notify::new());
        let prefetch = Arc::new(AtomicUsize::new(prefetch.max(1)));
        tokio::spawn(flusher(channel, rx, flushed.clone(), prefetch.clone()));
        Acks { tx, flushed }
    }

    /// Waits until every ack sent before this call is written to the channel.
    pub(super) async fn flush(&self) {
        let done = self.flushed.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        if self.tx.send(Event::Flushed).is_ok() {
            done.await;
        }
    }

    /// Registers a delivery before its unit of work starts.
    pub(super) fn delivered(&self, tag: u64) {
        let _ = self.tx.send(Event::Delivered(tag));
    }

    /// The delivery is settled: ack it (coalesced).
    pub(super) fn ack(&self, tag: u64) {
        let _ = self.tx.send(Event::Ack(tag));
    }

    /// The delivery was nacked or rejected directly: it no longer blocks coalescing.
    pub(super) fn released(&self, tag: u64) {
        let _ = self.tx.send(Event::Released(tag));
    }
}

/// Which tags one flush acks.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    /// `basic.ack multiple=true` up to this tag (all done tags below the lowest outstanding).
    multiple_up_to: Option<u64>,
    /// Done tags acked one by one (a lone one below the lowest outstanding, and, when
    /// asked, those above it).
    singles: Vec<u64>,
}

/// Outstanding and done tags of one channel.
#[derive(Debug, Default)]
struct Ledger {
    /// Every tag up to this one has been delivered to us. Several consumers share the
    /// channel and their streams are polled in turn, so a tag may reach us before a lower
    /// one that is still buffered: a multiple ack never reaches past a tag not yet seen.
    seen_upto: u64,
    /// Tags delivered above a gap (a lower tag not yet seen).
    seen_early: BTreeSet<u64>,
    /// Delivered, not yet settled by us (running, or left unacked on purpose).
    outstanding: BTreeSet<u64>,
    /// Acked by the unit of work, not yet sent to the broker.
    done: BTreeSet<u64>,
}

impl Ledger {
    fn apply(&mut self, event: Event) {
        match event {
            Event::Delivered(tag) => {
                self.outstanding.insert(tag);
                if tag == self.seen_upto + 1 {
                    self.seen_upto = tag;
                    while self.seen_early.remove(&(self.seen_upto + 1)) {
                        self.seen_upto += 1;
                    }
                } else if tag > self.seen_upto {
                    self.seen_early.insert(tag);
                }
            }
            Event::Ack(tag) => {
                if self.outstanding.remove(&tag) {
                    self.done.insert(tag);
                }
            }
            Event::Released(tag) => {
                self.outstanding.remove(&tag);
            }
            Event::Flushed => {}
        }
    }

    /// Deliveries the broker counts against the prefetch window.
    fn unacked(&self) -> usize {
        self.outstanding.len() + self.done.len()
    }

    /// Takes what to send now: one multiple ack up to the lowest outstanding tag (a lone
    /// done tag there is sent without `multiple`), and with `above` the done tags above it
    /// one by one (otherwise they stay held).
    fn plan(&mut self, above: bool) -> Plan {
        let unseen = self.seen_upto + 1;
        let floor = self
            .outstanding
            .first()
            .copied()
            .map_or(unseen, |o| o.min(unseen));
        let higher = self.done.split_off(&floor);
        let below = std::mem::replace(&mut self.done, higher);
        let mut plan = Plan::default();
        if let (Some(&first), Some(&last)) = (below.first(), below.last()) {
            if first == last {
                plan.singles.push(first);
            } else {
                plan.multiple_up_to = Some(last);
            }
        }
        if above {
            plan.singles.extend(std::mem::take(&mut self.done));
        }
        plan
    }
}

/// When to send, given what is held (see the module doc).
fn decide(
    ledger: &Ledger,
    prefetch: usize,
    held_for: Option<Duration>,
    asked: bool,
) -> Option<bool> {
    if ledger.done.is_empty() {
        return None;
    }
    let window_full = ledger.unacked() >= prefetch;
    let aged = held_for.is_some_and(|d| d >= HOLD);
    if asked || window_full || aged {
        Some(true)
    } else if ledger.done.len() >= (prefetch / 4).max(1) {
        Some(false)
    } else {
        None
    }
}

async fn flusher(
    channel: Channel,
    mut rx: mpsc::UnboundedReceiver<Event>,
    flushed: Arc<Notify>,
    prefetch: Arc<AtomicUsize>,
) {
    let mut ledger = Ledger::default();
    // When the oldest held ack was taken in.
    let mut held_since: Option<Instant> = None;
    let mut open = true;
    while open {
        let first = match held_since {
            Some(since) => tokio::select! {
                biased;
                e = rx.recv() => e.map(Some),
                // The hold ran out: a wake-up with nothing new.
                () = tokio::time::sleep_until(since + HOLD) => Some(None),
            },
            None => rx.recv().await.map(Some),
        };
        let mut asked = false;
        match first {
            // Every handle dropped: send what is held and stop.
            None => {
                open = false;
                asked = true;
            }
            Some(Some(e)) => {
                asked |= e == Event::Flushed;
                ledger.apply(e);
            }
            Some(None) => {}
        }
        while let Ok(more) = rx.try_recv() {
            asked |= more == Event::Flushed;
            ledger.apply(more);
        }
        let now = Instant::now();
        if ledger.done.is_empty() {
            held_since = None;
        } else if held_since.is_none() {
            held_since = Some(now);
        }
        let held_for = held_since.map(|t| now.saturating_duration_since(t));
        let window = prefetch.load(Ordering::Relaxed);
        if let Some(above) = decide(&ledger, window, held_for, asked) {
            let plan = ledger.plan(above);
            if let Some(tag) = plan.multiple_up_to {
                send(&channel, tag, true).await;
            }
            for tag in plan.singles {
                send(&channel, tag, false).await;
            }
            // What stays held (above a running delivery) keeps its original deadline.
            if ledger.done.is_empty() {
                held_since = None;
            }
        }
        if asked {
            flushed.notify_waiters();
        }
    }
}

async fn send(channel: &Channel, tag: u64, multiple: bool) {
    let kind = if multiple { "multiple" } else { "single" };
    metrics::counter!(AMQP_ACK_FRAMES, "kind" => kind).increment(1);
    if let Err(e) = channel.basic_ack(tag, BasicAckOptions { multiple }).await {
        // The channel died after we settled: the broker redelivers, the task re-runs.
        if channel.status().connected() {
            warn!(error = %e, tag, multiple, "ack failed; the message will be redelivered");
        } else {
            debug!(error = %e, tag, "ack on a closed channel; the broker redelivers");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(events: &[Event]) -> Ledger {
        let mut l = Ledger::default();
        for e in events {
            l.apply(*e);
        }
        l
    }

    use Event::*;

    #[test]
    fn a_contiguous_run_is_one_multiple_ack() {
        let mut l = ledger(&[
            Delivered(1),
            Delivered(2),
            Delivered(3),
            Ack(2),
            Ack(1),
            Ack(3),
        ]);
        assert_eq!(
            l.plan(true),
            Plan {
                multiple_up_to: Some(3),
                singles: vec![]
            }
        );
        assert_eq!(l.plan(true), Plan::default());
    }

    #[test]
    fn never_past_a_running_delivery() {
        let mut l = ledger(&[
            Delivered(1),
            Delivered(2),
            Delivered(3),
            Delivered(4),
            Delivered(5),
            Ack(1),
            Ack(2),
            Ack(4),
            Ack(5),
        ]);
        // 3 still runs: 1-2 together, 4 and 5 alone.
        assert_eq!(
            l.plan(true),
            Plan {
                multiple_up_to: Some(2),
                singles: vec![4, 5]
            }
        );
        l.apply(Ack(3));
        assert_eq!(
            l.plan(true),
            Plan {
                multiple_up_to: None,
                singles: vec![3]
            }
        );
    }

    #[test]
    fn left_unacked_blocks_for_good_and_released_does_not() {
        let mut l = ledger(&[Delivered(1), Delivered(2), Delivered(3), Delivered(4)]);
        // 1 is left unacked (publish failed); 2 was nacked out of band.
        l.apply(Released(2));
        l.apply(Ack(3));
        l.apply(Ack(4));
        assert_eq!(
            l.plan(true),
            Plan {
                multiple_up_to: None,
                singles: vec![3, 4]
            }
        );
        let mut l = ledger(&[Delivered(1), Delivered(2), Delivered(3), Released(1)]);
        l.apply(Ack(2));
        l.apply(Ack(3));
        assert_eq!(l.plan(true).multiple_up_to, Some(3));
    }

    #[test]
    fn never_past_a_tag_not_yet_seen() {
        // Two consumers on the channel: tags 3 and 4 arrive before 2.
        let mut l = ledger(&[
            Delivered(1),
            Delivered(3),
            Delivered(4),
            Ack(1),
            Ack(3),
            Ack(4),
        ]);
        assert_eq!(
            l.plan(true),
            Plan {
                multiple_up_to: None,
                singles: vec![1, 3, 4]
            }
        );
        l.apply(Delivered(2));
        l.apply(Delivered(5));
        l.apply(Delivered(6));
        l.apply(Ack(2));
        l.apply(Ack(5));
        l.apply(Ack(6));
        assert_eq!(l.plan(true).multiple_up_to, Some(6));
    }

    #[test]
    fn an_ack_for_an_unknown_or_repeated_tag_is_ignored() {
        let mut l = ledger(&[Delivered(1), Ack(1), Ack(1), Ack(7)]);
        assert_eq!(
            l.plan(true),
            Plan {
                multiple_up_to: None,
                singles: vec![1]
            }
        );
    }

    #[test]
    fn holds_until_a_quarter_of_the_window_then_sends_below_the_floor() {
        let mut l = ledger(&[Delivered(1), Delivered(2), Delivered(3), Delivered(4)]);
        l.apply(Ack(1));
        l.apply(Ack(2));
        // 2 of a window of 16 done, just now: hold.
        assert_eq!(decide(&l, 16, Some(Duration::ZERO), false), None);
        for t in 5..=9 {
            l.apply(Delivered(t));
            l.apply(Ack(t));
        }
        // 7 done >= 16 / 4: send, but only below the running 3.
        assert_eq!(decide(&l, 16, Some(Duration::ZERO), false), Some(false));
        assert_eq!(
            l.plan(false),
            Plan {
                multiple_up_to: Some(2),
                singles: vec![]
            }
        );
        // 5..=9 stay held for 3 to finish; then one multiple ack covers all.
        assert_eq!(l.done.len(), 5);
        l.apply(Ack(3));
        l.apply(Ack(4));
        assert_eq!(l.plan(false).multiple_up_to, Some(9));
    }

    #[test]
    fn a_full_window_an_old_ack_or_a_flush_sends_everything() {
        let mut l = ledger(&[Delivered(1), Delivered(2), Delivered(3), Ack(2), Ack(3)]);
        // Window of 3 full (1 running, 2 done): the broker would stop delivering.
        assert_eq!(decide(&l, 3, Some(Duration::ZERO), false), Some(true));
        // Window of 64: held until HOLD, or asked.
        assert_eq!(decide(&l, 64, Some(Duration::ZERO), false), None);
        assert_eq!(decide(&l, 64, Some(HOLD), false), Some(true));
        assert_eq!(decide(&l, 64, Some(Duration::ZERO), true), Some(true));
        assert_eq!(
            l.plan(true),
            Plan {
                multiple_up_to: None,
                singles: vec![2, 3]
            }
        );
        assert_eq!(decide(&l, 64, Some(HOLD), true), None, "nothing held");
    }

    #[test]
    fn a_window_of_one_acks_at_once() {
        let l = ledger(&[Delivered(1), Ack(1)]);
        assert_eq!(decide(&l, 1, Some(Duration::ZERO), false), Some(true));
    }
}
