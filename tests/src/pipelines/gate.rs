//! Holding a stand-in's answers so a test can stop the worker at a known point: the crash
//! tests `kill -9` the worker while an embeddings request, an Elasticsearch bulk or a Qdrant
//! upsert is in flight. A held request has already been applied (the stand-in recorded and
//! stored what it carried, as the real service would once it has read the request); only its
//! answer waits, so the worker never learns it succeeded.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tokio::sync::watch;

/// Which requests to hold, and what was held so far.
#[derive(Default)]
struct Rule {
    /// Requests whose path ends with this are counted.
    path: String,
    /// The first `pass` counted requests are answered at once; later ones are held.
    pass: usize,
}

#[derive(Default)]
struct State {
    rule: Option<Rule>,
    /// Requests the rule counted (passed and held).
    seen: usize,
    /// Answers waiting now.
    held: usize,
}

/// The gate of one stand-in; clones share it. Open (nothing held) until [`Gate::hold_after`].
#[derive(Clone)]
pub struct Gate {
    state: Arc<Mutex<State>>,
    /// Bumped by [`Gate::release`]; held answers wait for a change.
    release: Arc<watch::Sender<u64>>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            state: Arc::default(),
            release: Arc::new(watch::channel(0).0),
        }
    }
}

/// Decrements the held count however the held answer ends (sent, or dropped with its
/// connection when the worker dies).
struct HeldGuard(Arc<Mutex<State>>);

impl Drop for HeldGuard {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.lock() {
            s.held = s.held.saturating_sub(1);
        }
    }
}

impl Gate {
    /// From now on, answers the first `pass` requests whose path ends with `path` at once and
    /// holds the answers of the later ones until [`Gate::release`].
    pub fn hold_after(&self, path: &str, pass: usize) {
        let mut s = self.state.lock().unwrap();
        s.rule = Some(Rule {
            path: path.to_string(),
            pass,
        });
        s.seen = 0;
    }

    /// Answers every held request and holds no more.
    pub fn release(&self) {
        self.state.lock().unwrap().rule = None;
        self.release.send_modify(|g| *g += 1);
    }

    /// Requests the rule counted so far (answered and held).
    pub fn seen(&self) -> usize {
        self.state.lock().unwrap().seen
    }

    /// Answers held now.
    pub fn held(&self) -> usize {
        self.state.lock().unwrap().held
    }

    /// Waits until at least `n` answers are held.
    pub async fn wait_held(&self, n: usize, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        while self.held() < n {
            if started.elapsed() > timeout {
                bail!(
                    "{} answer(s) held within {timeout:?} (wanted {n}; {} request(s) seen)",
                    self.held(),
                    self.seen()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Called by the server after the handler ran: returns at once, or when the gate releases.
    pub(crate) async fn after(&self, path: &str) {
        let mut rx = self.release.subscribe();
        let generation = *rx.borrow_and_update();
        let guard = {
            let mut s = self.state.lock().unwrap();
            let State { rule, seen, held } = &mut *s;
            match rule {
                Some(r) if path.ends_with(r.path.as_str()) => {
                    *seen += 1;
                    if *seen <= r.pass {
                        return;
                    }
                    *held += 1;
                    HeldGuard(self.state.clone())
                }
                _ => return,
            }
        };
        while *rx.borrow_and_update() == generation {
            if rx.changed().await.is_err() {
                break;
            }
        }
        drop(guard);
    }
}
