//! Which source a job came from: an enum, so a new source is a compile error wherever the
//! sources are told apart, not a string compared by hand.

use std::fmt;

/// A job source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// rq's Redis queues.
    Redis,
    /// RabbitMQ.
    Amqp,
    /// The in-process source ([`crate::memory`]): tests and embedded pipelines.
    Memory,
}

impl Source {
    /// The `source` metric label and log field (`redis`, `amqp`, `memory`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Redis => "redis",
            Source::Amqp => "amqp",
            Source::Memory => "memory",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Handlers written against the earlier `&'static str` field keep comparing with text.
impl PartialEq<&str> for Source {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_text_comparison() {
        assert_eq!(Source::Redis.to_string(), "redis");
        assert!(Source::Amqp == "amqp");
        assert!(Source::Memory != "redis");
        assert_eq!(
            serde_json::to_string(&Source::Redis).ok().as_deref(),
            Some("\"redis\"")
        );
    }
}
