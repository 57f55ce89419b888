use super::*;

fn layout() -> Layout {
    Layout {
        env: "dev".into(),
        apps: vec!["acme".into()],
    }
}

fn base() -> LiveSettings {
    LiveSettings {
        concurrency: 16,
        queues: vec!["default".into()],
        retry: None,
        queue_retry: None,
        log_level: "info".into(),
        apps: BTreeMap::from([("acme".to_string(), AppOptions::default())]),
    }
}

fn kv(pairs: &[(&str, &str)]) -> KvTree {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

#[test]
fn reads_plain_and_json_values() {
    let tree = kv(&[
        ("mindora/dev/worker/concurrency", "8"),
        ("mindora/dev/worker/queues", "\"high,default\""),
        ("mindora/dev/worker/retry", "max_attempts=4,base=1"),
        ("mindora/dev/worker/log_level", "warn,mindora_worker=debug"),
        ("mindora/dev/worker/shutdown_grace_secs", "40"),
        (
            "acme/dev/ai",
            r#"{"chunk_size":800,"chunk_overlap":100,"embed_model":"m"}"#,
        ),
        (
            "acme/dev/features",
            r#"{"semantic_search":false,"notifications":true}"#,
        ),
        ("other/dev/ai", r#"{"chunk_size":1}"#),
    ]);
    let ev = evaluate(&layout(), &base(), &Pinned::default(), &base(), &tree);
    assert!(ev.problems.is_empty(), "{:?}", ev.problems);
    let s = &ev.settings;
    assert_eq!(s.concurrency, 8);
    assert_eq!(s.queues, vec!["high", "default"]);
    assert_eq!(s.retry.as_deref(), Some("max_attempts=4,base=1"));
    assert_eq!(s.log_level, "warn,mindora_worker=debug");
    let acme = &s.apps["acme"];
    assert_eq!(
        (acme.chunk_size, acme.chunk_overlap),
        (Some(800), Some(100))
    );
    assert_eq!((acme.index_vectors, acme.notify), (Some(false), Some(true)));
    assert_eq!(ev.restart_only["shutdown_grace_secs"], "40");
    assert_eq!(ev.restart_only["acme/dev/ai.embed_model"], "\"m\"");
}

#[test]
fn bad_values_keep_the_last_good_one() {
    let mut current = base();
    current.concurrency = 4;
    current.apps.get_mut("acme").expect("app").chunk_size = Some(500);
    let tree = kv(&[
        ("mindora/dev/worker/concurrency", "0"),
        ("mindora/dev/worker/queues", "a,,b"),
        ("mindora/dev/worker/retry", "jitter=7"),
        ("mindora/dev/worker/log_level", "info,[[["),
        ("acme/dev/ai", r#"{"chunk_size":"big"}"#),
    ]);
    let ev = evaluate(&layout(), &base(), &Pinned::default(), &current, &tree);
    assert_eq!(ev.settings.concurrency, 4);
    assert_eq!(ev.settings.queues, vec!["default"]);
    assert_eq!(ev.settings.apps["acme"].chunk_size, Some(500));
    let rejected: Vec<&str> = ev
        .problems
        .iter()
        .filter(|p| matches!(p, Problem::Rejected { .. }))
        .map(Problem::key)
        .collect();
    assert_eq!(rejected.len(), 5, "{:?}", ev.problems);
}

#[test]
fn secrets_are_refused_and_pinned_settings_win() {
    let tree = kv(&[
        ("mindora/dev/worker/redis_url", "redis://:pw@x/0"),
        ("mindora/dev/worker/embed_api_key", "sk-1"),
        ("mindora/dev/worker/concurrency", "2"),
        ("mindora/dev/worker/nonsense", "1"),
        ("acme/dev/ai", r#"{"chunk_size":900,"embed_api_key":"sk"}"#),
    ]);
    let pinned = Pinned(BTreeSet::from(["concurrency".to_string()]));
    let ev = evaluate(&layout(), &base(), &pinned, &base(), &tree);
    assert_eq!(ev.settings.concurrency, 16, "command line wins");
    assert_eq!(ev.settings.apps["acme"].chunk_size, Some(900));
    let keys: Vec<String> = ev.problems.iter().map(|p| format!("{p:?}")).collect();
    assert!(keys
        .iter()
        .any(|k| k.contains("Refused") && k.contains("redis_url")));
    assert!(keys
        .iter()
        .any(|k| k.contains("Refused") && k.contains("worker/embed_api_key")));
    assert!(keys
        .iter()
        .any(|k| k.contains("Refused") && k.contains("ai.embed_api_key")));
    assert!(keys.iter().any(|k| k.contains("Pinned")));
    assert!(keys.iter().any(|k| k.contains("Unknown")));
    assert!(!keys.iter().any(|k| k.contains("sk-1") || k.contains("pw@")));
}

#[test]
fn deleted_keys_fall_back_to_the_base() {
    let mut current = base();
    current.concurrency = 3;
    let ev = evaluate(
        &layout(),
        &base(),
        &Pinned::default(),
        &current,
        &KvTree::new(),
    );
    assert_eq!(ev.settings, base());
}
