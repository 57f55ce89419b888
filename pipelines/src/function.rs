//! The rq functions served, as a closed set parsed once from the job's function name, so a
//! misspelt name fails the job instead of silently running another stage.

use std::fmt;
use std::str::FromStr;

use crate::error::PipelineError;

/// One `pipelines.*` rq function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// Every stage in one job.
    ProcessDocument,
    /// Download from S3 (checks the object; stores nothing).
    Fetch,
    /// Fetch and extract; stores the text.
    Extract,
    /// Chunk the stored text; stores the chunks.
    Chunk,
    /// Embed the stored chunks; stores the vectors.
    Embed,
    /// Index the stored chunks (and vectors) in Elasticsearch and Qdrant.
    Index,
    /// Summary and keywords of the stored text.
    Analyze,
    /// Mark the document done.
    Record,
    /// Tell the user about the document's state.
    Notify,
}

impl Function {
    /// Every function, in pipeline order.
    pub const ALL: [Function; 9] = [
        Function::ProcessDocument,
        Function::Fetch,
        Function::Extract,
        Function::Chunk,
        Function::Embed,
        Function::Index,
        Function::Analyze,
        Function::Record,
        Function::Notify,
    ];

    /// The rq function name, e.g. `pipelines.process_document`.
    pub fn name(self) -> &'static str {
        match self {
            Function::ProcessDocument => "pipelines.process_document",
            Function::Fetch => "pipelines.fetch",
            Function::Extract => "pipelines.extract",
            Function::Chunk => "pipelines.chunk",
            Function::Embed => "pipelines.embed",
            Function::Index => "pipelines.index",
            Function::Analyze => "pipelines.analyze",
            Function::Record => "pipelines.record",
            Function::Notify => "pipelines.notify",
        }
    }

    /// Parses `pipelines.<stage>` or the bare `<stage>`; anything else is
    /// [`PipelineError::UnknownFunction`].
    pub fn parse(name: &str) -> Result<Self, PipelineError> {
        let bare = name.strip_prefix("pipelines.").unwrap_or(name);
        Function::ALL
            .into_iter()
            .find(|f| f.name().strip_prefix("pipelines.") == Some(bare))
            .ok_or_else(|| PipelineError::UnknownFunction(name.to_string()))
    }
}

impl FromStr for Function {
    type Err = PipelineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Function::parse(s)
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_with_and_without_prefix() {
        for f in Function::ALL {
            assert_eq!(Function::parse(f.name()).unwrap(), f);
            let bare = f.name().trim_start_matches("pipelines.");
            assert_eq!(bare.parse::<Function>().unwrap(), f);
            assert_eq!(f.to_string(), f.name());
        }
    }

    #[test]
    fn unknown_names_are_errors_never_notify() {
        for bad in [
            "pipelines.notfy",
            "notifyx",
            "pipelines.",
            "",
            "other.notify",
            "pipelines.pipelines.notify",
            "PIPELINES.NOTIFY",
        ] {
            assert!(
                matches!(Function::parse(bad), Err(PipelineError::UnknownFunction(ref n)) if n == bad),
                "{bad}"
            );
        }
    }
}
