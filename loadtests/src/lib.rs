//! Pieces the benchmarks share: starting the server under test as a child
//! process, and watching its memory.

pub mod memory;
pub mod target;
