//! The fetch stage against a real S3 server (s3s-fs): objects are streamed to a temporary file
//! in `MINDORA_TMP_DIR` (never held whole in memory), hashed on the way, refused over
//! `MINDORA_MAX_OBJECT_BYTES`, and the file is removed when the fetched object is dropped.

use mindora_tests::pipelines as common;

use mindora_pipelines::fetch::{ObjectSource, S3Source};
use mindora_pipelines::{PipelineConfig, PipelineError};
use sha2::{Digest, Sha256};

const KIB: u64 = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_go_to_a_temporary_file_removed_on_drop() {
    let s3 = common::S3Server::start().await;
    let bucket = common::unique("fetch").replace('_', "-");
    let body: Vec<u8> = (0..600 * KIB as usize).map(|i| (i % 251) as u8).collect();
    s3.put(&bucket, "a.bin", body.clone()).await;
    s3.put(&bucket, "big.bin", vec![b'c'; 1100 * KIB as usize])
        .await;

    let dir = tempfile::tempdir().unwrap();
    let mut config = PipelineConfig::default();
    s3.configure(&mut config);
    config.max_object_bytes = 1024 * KIB;
    config.tmp_dir = Some(dir.path().to_path_buf());
    let source = S3Source::from_config(&config).unwrap();

    let a = source.fetch(&bucket, "a.bin", 1024 * KIB).await.unwrap();
    assert_eq!(a.size, 600 * KIB);
    assert!(a.path().starts_with(dir.path()), "{:?}", a.path());
    assert_eq!(std::fs::read(a.path()).unwrap(), body);
    let sha: String = Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(a.sha256, sha);
    let path = a.path().to_path_buf();
    drop(a);
    assert!(!path.exists(), "the temporary file outlived the object");

    // Over the cap: refused, and nothing is left behind.
    let err = source
        .fetch(&bucket, "big.bin", 1024 * KIB)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PipelineError::ObjectTooLarge { size, .. } if size == 1100 * KIB),
        "{err:?}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
