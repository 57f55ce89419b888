//! The process-wide concurrency budget: `--concurrency` slots shared by every source, so a
//! process never runs more jobs at once than configured, whatever their source.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::metrics as m;

/// Jobs at once for the whole process; cheap to clone (all clones share the budget).
#[derive(Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

struct Inner {
    sem: Arc<Semaphore>,
    /// The configured size.
    size: AtomicUsize,
    /// Permits still to withdraw after a shrink (taken back as running jobs end).
    debt: AtomicUsize,
    /// Serializes resizes.
    resize: Mutex<()>,
    /// Slots held right now, by anyone.
    held: watch::Sender<usize>,
}

impl Budget {
    /// A budget of `size` slots (at least 1).
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        Budget {
            inner: Arc::new(Inner {
                sem: Arc::new(Semaphore::new(size)),
                size: AtomicUsize::new(size),
                debt: AtomicUsize::new(0),
                resize: Mutex::new(()),
                held: watch::Sender::new(0),
            }),
        }
    }

    /// The configured number of slots.
    pub fn size(&self) -> usize {
        self.inner.size.load(Ordering::Relaxed)
    }

    /// Slots free right now.
    pub fn available(&self) -> usize {
        self.inner.sem.available_permits()
    }

    /// Slots held right now (jobs claimed and not yet settled).
    pub fn held(&self) -> usize {
        *self.inner.held.borrow()
    }

    /// Changes the number of slots at run time. Growing takes effect at once; shrinking
    /// withdraws free slots at once and the rest as running jobs end (no job is stopped).
    pub fn resize(&self, size: usize) {
        let size = size.max(1);
        let _guard = self.inner.resize.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.inner.size.swap(size, Ordering::Relaxed);
        if size > old {
            let mut grow = size - old;
            // Cancel pending withdrawals first.
            let debt = self.inner.debt.load(Ordering::Relaxed);
            let cancel = debt.min(grow);
            self.inner.debt.fetch_sub(cancel, Ordering::Relaxed);
            grow -= cancel;
            self.inner.sem.add_permits(grow);
        } else if size < old {
            let shrink = old - size;
            let now = self.inner.sem.forget_permits(shrink);
            self.inner.debt.fetch_add(shrink - now, Ordering::Relaxed);
        }
        metrics::gauge!(m::WORKER_CONCURRENCY).set(size as f64);
    }

    /// Waits for a free slot; `None` once the budget is closed.
    pub async fn acquire(&self) -> Option<Slot> {
        let permit = self.inner.sem.clone().acquire_owned().await.ok()?;
        Some(self.slot(permit))
    }

    /// A free slot if one is free now.
    pub fn try_acquire(&self) -> Option<Slot> {
        match self.inner.sem.clone().try_acquire_owned() {
            Ok(p) => Some(self.slot(p)),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => None,
        }
    }

    /// Waits until no slot is held (every claimed job settled).
    pub async fn wait_idle(&self) {
        let mut rx = self.inner.held.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    fn slot(&self, permit: OwnedSemaphorePermit) -> Slot {
        self.inner.held.send_modify(|n| *n += 1);
        Slot {
            permit: Some(permit),
            budget: self.clone(),
        }
    }
}

/// One job's place in the budget, from claim to settle; gives the slot back when dropped.
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    budget: Budget,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let inner = &self.budget.inner;
        if let Some(permit) = self.permit.take() {
            let paid = inner
                .debt
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1))
                .is_ok();
            if paid {
                permit.forget();
            }
        }
        inner.held.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resizes_up_and_down() {
        let b = Budget::new(2);
        let a = b.try_acquire().expect("slot 1");
        let c = b.try_acquire().expect("slot 2");
        assert!(b.try_acquire().is_none());
        b.resize(3);
        let d = b.try_acquire().expect("slot 3 after growing");
        assert_eq!(b.held(), 3);
        b.resize(1);
        drop(a);
        drop(c);
        assert!(b.try_acquire().is_none(), "two ended jobs paid the shrink");
        drop(d);
        let e = b.try_acquire().expect("one slot left");
        assert!(b.try_acquire().is_none());
        drop(e);
        b.wait_idle().await;
        assert_eq!(b.size(), 1);
    }
}
