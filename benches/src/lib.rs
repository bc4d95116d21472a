//! Criterion micro-benchmarks live in benches/; see each file.
