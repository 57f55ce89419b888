//! Test support: shared helpers for the interop suites.
