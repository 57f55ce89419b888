//! mindora-worker library.
