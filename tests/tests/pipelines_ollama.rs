//! Issue 24 part 5: with no embedding API key the pipelines embed through the local Ollama
//! (`bge-m3`, 1024 dimensions, OpenAI-compatible `/v1/embeddings`), here a stand-in that answers
//! and refuses as Ollama does; a Chinese document ends as 1024-dimension Qdrant points.

use anyhow::{ensure, Context, Result};
use mindora_pipelines::{PipelineConfig, Pipelines};
use mindora_tests::pipelines::{env, fakes};
use serde_json::json;

/// The worker's configuration with no key and no embedding settings of its own, pointed at the
/// stand-in instead of `http://ollama:11434/v1`.
fn keyless(base: &PipelineConfig, url: Option<&str>) -> PipelineConfig {
    let mut c = base.clone();
    let default = PipelineConfig::default();
    c.embed_api_key = None;
    c.embed_base_url = url.map(str::to_string);
    c.embed_model = default.embed_model;
    c.embed_dimensions = default.embed_dimensions;
    c.with_local_embedding_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_api_key_embeds_chinese_through_ollama_bge_m3() -> Result<()> {
    let ollama = fakes::ollama().await;
    let e = env(1024).await;
    let stack = keyless(&e.config, None);
    ensure!(stack.embed_base_url.as_deref() == Some("http://ollama:11434/v1"));
    let config = keyless(&e.config, Some(&ollama.url));
    ensure!((config.embed_model.as_str(), config.embed_dimensions) == ("bge-m3", 1024));
    let p = Pipelines::new(config).await?;
    let text = "第一章 总则\n本手册说明文档处理流水线的部署与运维。".repeat(40);
    e.s3.put(&e.bucket, "zh/手册.txt", text.into_bytes()).await;
    let out = e
        .run(&p, "pipelines.process_document", "zh/手册.txt", json!({}))
        .await?;
    let chunks = out["chunks"].as_u64().context("chunks")? as usize;
    ensure!(chunks > 1, "{out:#}");
    ensure!(out["indexed"]["vectors"]["indexed"] == chunks, "{out:#}");
    let collection = format!("{}_documents", e.app);
    {
        let qd = e.qdrant.state.lock().unwrap();
        ensure!(
            qd.collections.get(&collection) == Some(&1024),
            "{:?}",
            qd.collections
        );
        let points = qd.points.get(&collection).context("no points")?;
        ensure!(points.len() == chunks);
        ensure!(points.values().all(|(v, _)| v.len() == 1024));
    }
    let st = ollama.state.lock().unwrap();
    ensure!(
        st.violations.is_empty(),
        "Ollama would refuse: {:?}",
        st.violations
    );
    ensure!(
        st.embedded_texts == chunks,
        "{} texts embedded",
        st.embedded_texts
    );
    ensure!(st.requested_models.iter().all(|m| m == "bge-m3"));
    drop(st);
    let o = e.openai.state.lock().unwrap();
    ensure!(o.embedding_requests == 0, "the OpenAI stand-in was called");
    drop(o);
    e.assert_no_violations();
    Ok(())
}

/// The stand-in refuses what Ollama refuses: a model it has not pulled (OpenAI's default
/// model, sent to Ollama), an unknown `encoding_format`, an empty input list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ollama_stand_in_refuses_what_ollama_refuses() -> Result<()> {
    let ollama = fakes::ollama().await;
    let e = env(1024).await;
    let mut config = keyless(&e.config, Some(&ollama.url));
    config.embed_model = "text-embedding-3-small".into();
    config.embed_retries = 0;
    let p = Pipelines::new(config).await?;
    e.s3.put(
        &e.bucket,
        "a.txt",
        "some words to embed".repeat(20).into_bytes(),
    )
    .await;
    let err = e
        .run(&p, "pipelines.process_document", "a.txt", json!({}))
        .await
        .err()
        .context("an unpulled model must fail")?;
    let msg = err.to_string();
    ensure!(
        msg.contains("model \"text-embedding-3-small\" not found, try pulling it first"),
        "{msg}"
    );
    ensure!(!err.is_retryable(), "a missing model is permanent: {msg}");
    let url = format!("{}/embeddings", ollama.url);
    let post = |body: serde_json::Value| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let r = reqwest::blocking::Client::new()
                .post(url)
                .json(&body)
                .send()?;
            let status = r.status().as_u16();
            Ok::<_, reqwest::Error>((status, r.json::<serde_json::Value>()?))
        })
    };
    let (status, body) =
        post(json!({"model": "bge-m3", "input": "x", "encoding_format": "int8"})).await??;
    ensure!(
        status == 400 && body["error"]["type"] == "invalid_request_error",
        "{body}"
    );
    let (status, body) = post(json!({"model": "bge-m3", "input": []})).await??;
    ensure!(
        status == 400 && body["error"]["message"] == "invalid input",
        "{body}"
    );
    let (status, body) =
        post(json!({"model": "bge-m3", "input": ["一", "二"], "encoding_format": "base64"}))
            .await??;
    ensure!(status == 200 && body["data"][1]["index"] == 1, "{body}");
    let b64 = body["data"][0]["embedding"]
        .as_str()
        .context("base64 embedding")?;
    use base64::Engine;
    ensure!(base64::engine::general_purpose::STANDARD.decode(b64)?.len() == 1024 * 4);
    ensure!(
        body["object"] == "list" && body["usage"]["total_tokens"].is_u64(),
        "{body}"
    );
    Ok(())
}
