//! Benchmark of the runtime agent (filled in later).

fn main() {}
