//! `MINDORA_QDRANT_DISTANCE`: the collection the vector stage creates carries the configured
//! distance on the wire (checked by the Qdrant stand-in, which decodes qdrant-client's own
//! protobuf messages).

use mindora_pipelines::config::QdrantDistance;
use mindora_pipelines::{PipelineConfig, Pipelines};
use mindora_tests::pipelines::{self as common, fakes, fixtures, job, kwargs, S3Server};
use qdrant_client::qdrant::Distance;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_are_created_with_the_configured_distance() {
    let s3 = S3Server::start().await;
    let openai = fakes::openai().await;
    let qdrant = fakes::qdrant().await;
    let bucket = common::unique("b-dist");
    s3.put(
        &bucket,
        "memo.pdf",
        fixtures::pdf(&[fixtures::prose_page(1, 12)]),
    )
    .await;
    for (setting, wire) in [
        (None, Distance::Cosine),
        (Some(QdrantDistance::Cosine), Distance::Cosine),
        (Some(QdrantDistance::Dot), Distance::Dot),
        (Some(QdrantDistance::Euclid), Distance::Euclid),
        (Some(QdrantDistance::Manhattan), Distance::Manhattan),
    ] {
        let app = common::unique("dist");
        let mut config = PipelineConfig::default();
        s3.configure(&mut config);
        config.embed_base_url = Some(openai.url.clone());
        config.embed_api_key = Some("sk-test".into());
        config.embed_model = "fake-embed-768".into();
        config.embed_dimensions = 768;
        config.qdrant_url = Some(qdrant.url.clone());
        if let Some(d) = setting {
            config.qdrant_distance = d;
        }
        let p = Pipelines::new(config).await.unwrap();
        let out = p
            .call(
                "pipelines.process_document",
                &job("q"),
                &[],
                &kwargs(json!({"app": app, "bucket": bucket, "key": "memo.pdf"})),
                &mindora_pipelines::NoProgress,
            )
            .await
            .unwrap();
        assert!(
            out["indexed"]["vectors"]["indexed"].as_u64().unwrap() > 0,
            "{out}"
        );
        let st = qdrant.state.lock().unwrap();
        let collection = format!("{app}_documents");
        assert_eq!(st.collections.get(&collection), Some(&768), "{setting:?}");
        assert_eq!(
            st.distances.get(&collection),
            Some(&(wire as i32)),
            "{setting:?}"
        );
        assert!(st.violations.is_empty(), "{:?}", st.violations);
    }
}
