use std::sync::Mutex;

use super::*;
use crate::consul::client::KvPair;

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl WorkerControl for Recorder {
    fn set_concurrency(&self, concurrency: usize) {
        self.0
            .lock()
            .expect("lock")
            .push(format!("concurrency={concurrency}"));
    }
    fn set_queues(&self, queues: Vec<String>) {
        self.0
            .lock()
            .expect("lock")
            .push(format!("queues={}", queues.join(",")));
    }
}

fn snapshot(pairs: &[(&str, &str)]) -> Snapshot {
    Snapshot {
        prefix: "mindora/dev/worker/".into(),
        pairs: pairs
            .iter()
            .map(|(k, v)| KvPair {
                key: format!("mindora/dev/worker/{k}"),
                value: v.as_bytes().to_vec(),
                modify_index: 1,
            })
            .collect(),
    }
}

#[test]
fn changes_reach_the_worker_and_bad_values_do_not() {
    let layout = Layout {
        env: "dev".into(),
        apps: vec![],
    };
    let base = LiveSettings {
        concurrency: 8,
        queues: vec!["default".into()],
        retry: None,
        queue_retry: None,
        log_level: "info".into(),
        apps: BTreeMap::new(),
    };
    let recorder = Arc::new(Recorder::default());
    let retry = RetryDefaults::default();
    let (announce, announced) = watch::channel(Announced {
        queues: base.queues.clone(),
        concurrency: 8,
    });
    let target = LiveTarget {
        log: None,
        retry: retry.clone(),
        pipelines: None,
        worker: Some(recorder.clone()),
    };
    let mut r = Reloader::new(
        layout,
        base,
        Pinned::default(),
        KvTree::new(),
        target,
        announce,
    );
    r.on_snapshot(snapshot(&[
        ("concurrency", "2"),
        ("queues", "high,default"),
        ("retry", "max_attempts=4,base=1"),
    ]));
    assert_eq!(
        *recorder.0.lock().expect("lock"),
        vec!["concurrency=2", "queues=high,default"]
    );
    assert_eq!(retry.for_queue("default").map(|p| p.retries()), Some(3));
    assert_eq!(announced.borrow().concurrency, 2);

    // A bad concurrency keeps 2; the queues key going away restores the base list.
    r.on_snapshot(snapshot(&[
        ("concurrency", "-1"),
        ("retry", "max_attempts=4,base=1"),
    ]));
    assert_eq!(
        *recorder.0.lock().expect("lock"),
        vec!["concurrency=2", "queues=high,default", "queues=default"]
    );
    // Deleting every key brings back the base values.
    r.on_snapshot(snapshot(&[]));
    assert_eq!(
        recorder.0.lock().expect("lock").last().map(String::as_str),
        Some("concurrency=8")
    );
    assert!(retry.for_queue("default").is_none());
}
