//! Ack coalescing: one `basic.ack multiple=true` settles a whole run of finished
//! deliveries, so the broker handles one frame (and one index update) instead of one per
//! message.
//!
//! Delivery tags on a channel grow by one per delivery. Every delivery is registered when it
//! arrives and stays *outstanding* until it is acked, nacked or rejected; a delivery left
//! unacked on purpose (a publish failed, so the broker must redeliver it) stays outstanding
//! for the rest of the session. An ack with `multiple=true` covers every unacked tag up to
//! its own, so it is only ever sent up to the lowest outstanding tag: never past a delivery
//! that is still running, was rejected or nacked out of band, or is left unacked. Finished
//! deliveries above that tag are acked one by one, at once, so they never hold a prefetch
//! slot. Acks are flushed as soon as the events already queued are taken in (no timer):
//! under load, the acks that pile up while one ack is written go out as one.

use std::collections::BTreeSet;
use std::sync::Arc;

use lapin::options::BasicAckOptions;
use lapin::Channel;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, warn};

/// What the settle path tells the coalescer about one delivery tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// Everything sent before is on the wire: answer (graceful stop, before the channel
    /// closes).
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
    /// Starts the coalescer of `channel`; it ends when every handle is dropped.
    pub(super) fn start(channel: Channel) -> Acks {
        let (tx, rx) = mpsc::unbounded_channel();
        let flushed = Arc::new(Notify::new());
        tokio::spawn(flusher(channel, rx, flushed.clone()));
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
    /// Done tags above an outstanding one, acked one by one.
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

    /// Takes what to send now: one multiple ack up to the lowest outstanding tag (a lone
    /// done tag there is sent without `multiple`), single acks above it.
    fn plan(&mut self) -> Plan {
        let unseen = self.seen_upto + 1;
        let floor = self
            .outstanding
            .first()
            .copied()
            .map_or(unseen, |o| o.min(unseen));
        let above = self.done.split_off(&floor);
        let below = std::mem::take(&mut self.done);
        let mut plan = Plan {
            singles: above.into_iter().collect(),
            ..Plan::default()
        };
        if let (Some(&first), Some(&last)) = (below.first(), below.last()) {
            if first == last {
                plan.singles.insert(0, first);
            } else {
                plan.multiple_up_to = Some(last);
            }
        }
        plan
    }
}

async fn flusher(channel: Channel, mut rx: mpsc::UnboundedReceiver<Event>, flushed: Arc<Notify>) {
    let mut ledger = Ledger::default();
    while let Some(first) = rx.recv().await {
        let mut asked = first == Event::Flushed;
        ledger.apply(first);
        while let Ok(more) = rx.try_recv() {
            asked |= more == Event::Flushed;
            ledger.apply(more);
        }
        let plan = ledger.plan();
        if let Some(tag) = plan.multiple_up_to {
            send(&channel, tag, true).await;
        }
        for tag in plan.singles {
            send(&channel, tag, false).await;
        }
        if asked {
            flushed.notify_waiters();
        }
    }
}

async fn send(channel: &Channel, tag: u64, multiple: bool) {
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
            l.plan(),
            Plan {
                multiple_up_to: Some(3),
                singles: vec![]
            }
        );
        assert_eq!(l.plan(), Plan::default());
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
            l.plan(),
            Plan {
                multiple_up_to: Some(2),
                singles: vec![4, 5]
            }
        );
        l.apply(Ack(3));
        assert_eq!(
            l.plan(),
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
            l.plan(),
            Plan {
                multiple_up_to: None,
                singles: vec![3, 4]
            }
        );
        let mut l = ledger(&[Delivered(1), Delivered(2), Delivered(3), Released(1)]);
        l.apply(Ack(2));
        l.apply(Ack(3));
        assert_eq!(l.plan().multiple_up_to, Some(3));
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
            l.plan(),
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
        assert_eq!(l.plan().multiple_up_to, Some(6));
    }

    #[test]
    fn an_ack_for_an_unknown_or_repeated_tag_is_ignored() {
        let mut l = ledger(&[Delivered(1), Ack(1), Ack(1), Ack(7)]);
        assert_eq!(
            l.plan(),
            Plan {
                multiple_up_to: None,
                singles: vec![1]
            }
        );
    }
}
