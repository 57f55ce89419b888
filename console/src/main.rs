//! `mindora-console` binary.

fn main() {}
