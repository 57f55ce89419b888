//! Per-app pipeline defaults that may change while the worker runs (the worker feeds them from
//! Consul KV). A job's own `options` always win; these fill what the job leaves out.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde_json::{Map, Value};

/// Defaults for one app's documents. `None`: the worker-wide setting applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AppOptions {
    /// Chunk size in characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<usize>,
    /// Chunk overlap in characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_overlap: Option<usize>,
    /// Summarize and extract keywords.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analyze: Option<bool>,
    /// Tell the user when done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<bool>,
    /// Index words (Elasticsearch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_fulltext: Option<bool>,
    /// Index meaning (Qdrant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_vectors: Option<bool>,
    /// OCR of image-only PDF pages: Tesseract languages (`chi_sim+eng`), or `off`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ocr: Option<String>,
}

impl AppOptions {
    /// Adds the flags the job did not set itself.
    pub(crate) fn fill(&self, options: &mut Map<String, Value>) {
        for (k, v) in [
            ("analyze", self.analyze),
            ("notify", self.notify),
            ("index_fulltext", self.index_fulltext),
            ("index_vectors", self.index_vectors),
        ] {
            if let Some(v) = v {
                options.entry(k).or_insert(Value::Bool(v));
            }
        }
        if let Some(ocr) = &self.ocr {
            options
                .entry("ocr")
                .or_insert_with(|| Value::String(ocr.clone()));
        }
    }
}

/// The table shared by all clones of a `Pipelines`; replaced per app at run time.
#[derive(Debug, Default)]
pub(crate) struct AppOptionsTable(RwLock<HashMap<String, Arc<AppOptions>>>);

impl AppOptionsTable {
    pub(crate) fn get(&self, app: &str) -> Option<Arc<AppOptions>> {
        // A poisoned lock only means a writer panicked mid-insert of a whole Arc: still usable.
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(app).cloned()
    }

    pub(crate) fn set(&self, app: &str, options: AppOptions) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        if options == AppOptions::default() {
            map.remove(app);
        } else {
            map.insert(app.to_string(), Arc::new(options));
        }
    }
}
