//! The fetch stage's per-process memory budget against a real S3 server (s3s-fs): what a
//! download holds stays reserved until the fetched object is dropped, and every job of the
//! process shares one budget of `MINDORA_MAX_OBJECT_BYTES`.

use mindora_tests::pipelines as common;

use mindora_pipelines::fetch::{ObjectSource, S3Source};
use mindora_pipelines::{PipelineConfig, PipelineError};

const KIB: u64 = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_hold_the_shared_budget_until_dropped() {
    let s3 = common::S3Server::start().await;
    let bucket = common::unique("budget").replace('_', "-");
    s3.put(&bucket, "a.bin", vec![b'a'; 600 * KIB as usize])
        .await;
    s3.put(&bucket, "b.bin", vec![b'b'; 300 * KIB as usize])
        .await;
    s3.put(&bucket, "big.bin", vec![b'c'; 1100 * KIB as usize])
        .await;

    let mut config = PipelineConfig::default();
    s3.configure(&mut config);
    config.max_object_bytes = 1024 * KIB;
    let source = S3Source::from_config(&config).unwrap();
    let budget = source.budget().clone();
    assert_eq!(budget.available_bytes(), 1024 * KIB);

    let a = source.fetch(&bucket, "a.bin", 1024 * KIB).await.unwrap();
    assert_eq!(a.bytes.len() as u64, 600 * KIB);
    assert_eq!(budget.available_bytes(), 424 * KIB, "a holds its size");
    let b = source.fetch(&bucket, "b.bin", 1024 * KIB).await.unwrap();
    assert_eq!(budget.available_bytes(), 124 * KIB, "both held at once");

    // A clone (the pipeline passes objects between stages) shares the reservation.
    let a2 = a.clone();
    drop(a);
    assert_eq!(budget.available_bytes(), 124 * KIB);
    drop(a2);
    drop(b);
    assert_eq!(budget.available_bytes(), 1024 * KIB, "released on drop");

    // Over the cap: refused before any byte is held.
    let err = source
        .fetch(&bucket, "big.bin", 1024 * KIB)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PipelineError::ObjectTooLarge { size, .. } if size == 1100 * KIB),
        "{err:?}"
    );
    assert_eq!(budget.available_bytes(), 1024 * KIB);

    // A second download that does not fit waits for the first to be dropped.
    let a = source.fetch(&bucket, "a.bin", 1024 * KIB).await.unwrap();
    let waiting = {
        let source = S3Source::clone(&source);
        let bucket = bucket.clone();
        tokio::spawn(async move { source.fetch(&bucket, "a.bin", 1024 * KIB).await })
    };
    drop(a);
    let second = waiting.await.unwrap().unwrap();
    assert_eq!(second.bytes.len() as u64, 600 * KIB);
    assert_eq!(budget.available_bytes(), 424 * KIB);
}
