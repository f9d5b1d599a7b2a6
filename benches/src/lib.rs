//! Criterion benchmarks for the `maas` crates.
//!
//! Every benchmark in `benches/` runs a `maas` crate and the crate a Rust engineer would
//! otherwise pick (its *anchor*) side by side in one run, so their figures are comparable.
//! Run one with `cargo bench -p maas-benches --bench <name>`; results and the machine they
//! were measured on are recorded in `docs/benchmarks.md`.
