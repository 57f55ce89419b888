//! The arguments every pipeline function takes (positional or keyword, as rq sends them).

use serde_json::{Map, Value};

use crate::error::PipelineError;
use crate::model::{App, DocumentRef};

/// Parsed job arguments common to every function.
pub(super) struct Args {
    pub(super) app: App,
    pub(super) doc: DocumentRef,
    pub(super) options: Map<String, Value>,
    /// The app's defaults when the job started (set by the worker, e.g. from Consul).
    pub(super) defaults: Option<std::sync::Arc<crate::AppOptions>>,
}

const POSITIONAL: &[&str] = &["app", "bucket", "key", "document_id", "user_id", "options"];

pub(super) fn parse_args(
    args: &[Value],
    kwargs: &Map<String, Value>,
) -> Result<Args, PipelineError> {
    let mut all = Map::new();
    for (name, v) in POSITIONAL.iter().zip(args) {
        all.insert((*name).to_string(), v.clone());
    }
    if args.len() > POSITIONAL.len() {
        return Err(PipelineError::InvalidArgument(format!(
            "at most {} positional arguments ({}), got {}",
            POSITIONAL.len(),
            POSITIONAL.join(", "),
            args.len()
        )));
    }
    for (k, v) in kwargs {
        if !POSITIONAL.contains(&k.as_str()) {
            return Err(PipelineError::InvalidArgument(format!(
                "unknown argument {k:?}; expected {}",
                POSITIONAL.join(", ")
            )));
        }
        all.insert(k.clone(), v.clone());
    }
    let text = |k: &str| -> Result<Option<String>, PipelineError> {
        match all.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) if k.ends_with("_id") => Ok(Some(n.to_string())),
            Some(other) => Err(PipelineError::InvalidArgument(format!(
                "{k} must be a string, got {other}"
            ))),
        }
    };
    let required = |k: &str| -> Result<String, PipelineError> {
        text(k)?.ok_or_else(|| PipelineError::InvalidArgument(format!("missing argument {k:?}")))
    };
    let app = App::parse(&required("app")?)?;
    let doc = DocumentRef::new(
        &app,
        &required("bucket")?,
        &required("key")?,
        text("document_id")?.as_deref(),
        text("user_id")?,
    )?;
    let options = match all.get("options") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            return Err(PipelineError::InvalidArgument(format!(
                "options must be a dict, got {other}"
            )))
        }
    };
    for k in options.keys() {
        if !matches!(
            k.as_str(),
            "metadata"
                | "analyze"
                | "notify"
                | "index_fulltext"
                | "index_vectors"
                | "password"
                | "ocr"
        ) {
            return Err(PipelineError::InvalidArgument(format!(
                "unknown option {k:?}; expected metadata, analyze, notify, index_fulltext, index_vectors, password, ocr"
            )));
        }
    }
    match options.get("ocr") {
        None | Some(Value::Null | Value::Bool(_)) => {}
        Some(Value::String(s))
            if s.is_empty() || s == "off" || crate::extract::ocr::valid_languages(s) => {}
        Some(other) => {
            return Err(PipelineError::InvalidArgument(format!(
                "options.ocr must be true, false or Tesseract languages like \"chi_sim+eng\", got {other}"
            )))
        }
    }
    if !matches!(
        options.get("password"),
        None | Some(Value::Null | Value::String(_))
    ) {
        return Err(PipelineError::InvalidArgument(
            "options.password must be a string".into(),
        ));
    }
    Ok(Args {
        app,
        doc,
        options,
        defaults: None,
    })
}
