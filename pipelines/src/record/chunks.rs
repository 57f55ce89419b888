//! Chunk rows: written in batches by `process_document` (each row tagged with its run, so the
//! rows of other runs can be removed once the whole document is written) and whole by the
//! chained `pipelines.chunk` record.

use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::{PgRecordStore, StoredChunk};
use crate::error::PipelineError;
use crate::model::{App, Chunk, DocumentRef};

/// Upserts `chunks` by (document, index) in one statement: a re-run overwrites the rows it
/// shares with an earlier run and clears their embeddings (they belong to the old text).
pub(super) async fn insert(
    conn: &mut PgConnection,
    document_id: Uuid,
    run_id: Uuid,
    chunks: &[Chunk],
) -> Result<(), PipelineError> {
    if chunks.is_empty() {
        return Ok(());
    }
    let index: Vec<i32> = chunks.iter().map(|c| c.index as i32).collect();
    let ids: Vec<Uuid> = chunks.iter().map(|c| c.id).collect();
    let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
    let starts: Vec<i32> = chunks.iter().map(|c| c.char_start as i32).collect();
    let ends: Vec<i32> = chunks.iter().map(|c| c.char_end as i32).collect();
    // Heading paths are ragged, which a text[][] cannot hold: each goes as a JSON array.
    let paths: Vec<Json<&[String]>> = chunks.iter().map(|c| Json(&c.heading_path[..])).collect();
    let pages: Vec<Option<i32>> = chunks.iter().map(|c| c.page.map(|p| p as i32)).collect();
    sqlx::query(
        "INSERT INTO chunks (document_id, chunk_index, chunk_id, text, char_start, char_end,
                             heading_path, page, run_id, embedding)
         SELECT $1, i, id, t, s, e, ARRAY(SELECT jsonb_array_elements_text(h)), p, $2, NULL
         FROM UNNEST($3::int[], $4::uuid[], $5::text[], $6::int[], $7::int[], $8::jsonb[], $9::int[])
              AS u(i, id, t, s, e, h, p)
         ON CONFLICT (document_id, chunk_index) DO UPDATE SET
             chunk_id = EXCLUDED.chunk_id, text = EXCLUDED.text,
             char_start = EXCLUDED.char_start, char_end = EXCLUDED.char_end,
             heading_path = EXCLUDED.heading_path, page = EXCLUDED.page,
             run_id = EXCLUDED.run_id, embedding = NULL",
    )
    .bind(document_id)
    .bind(run_id)
    .bind(&index)
    .bind(&ids)
    .bind(&texts)
    .bind(&starts)
    .bind(&ends)
    .bind(&paths)
    .bind(&pages)
    .execute(conn)
    .await?;
    Ok(())
}

impl PgRecordStore {
    pub(super) async fn upsert_chunks(
        &self,
        app: &App,
        d: &DocumentRef,
        run_id: Uuid,
        chunks: &[Chunk],
    ) -> Result<(), PipelineError> {
        let mut tx = self.begin(app).await?;
        // The rows reference the document; its row is completed by the run's record.
        sqlx::query(
            "INSERT INTO documents (id, bucket, key, user_id, status) VALUES ($1,$2,$3,$4,'received')
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(d.document_id)
        .bind(&d.bucket)
        .bind(&d.key)
        .bind(&d.user_id)
        .execute(&mut *tx)
        .await?;
        insert(&mut tx, d.document_id, run_id, chunks).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn delete_other_runs(
        &self,
        app: &App,
        document_id: Uuid,
        run_id: Uuid,
    ) -> Result<u64, PipelineError> {
        let mut tx = self.begin(app).await?;
        let done =
            sqlx::query("DELETE FROM chunks WHERE document_id = $1 AND run_id IS DISTINCT FROM $2")
                .bind(document_id)
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn select_chunks(
        &self,
        app: &App,
        document_id: Uuid,
    ) -> Result<Vec<StoredChunk>, PipelineError> {
        let mut tx = self.begin(app).await?;
        let rows = sqlx::query(
            "SELECT chunk_index, chunk_id, text, char_start, char_end, heading_path, page, embedding
             FROM chunks WHERE document_id = $1 ORDER BY chunk_index",
        )
        .bind(document_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    Chunk {
                        index: r.get::<i32, _>("chunk_index").max(0) as usize,
                        id: r.get("chunk_id"),
                        text: r.get("text"),
                        char_start: r.get::<i32, _>("char_start").max(0) as usize,
                        char_end: r.get::<i32, _>("char_end").max(0) as usize,
                        heading_path: r.get("heading_path"),
                        page: r.get::<Option<i32>, _>("page").map(|p| p.max(0) as u32),
                    },
                    r.get::<Option<Vec<f32>>, _>("embedding"),
                )
            })
            .collect())
    }
}
