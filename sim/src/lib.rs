//! The simulated machine: PEs with SRAM accounting, the fabric, collectives
//! (broadcast / reduce / allreduce), placed dataflow programs, the executor and
//! timelines.
//!
//! Architecture invariant: `sim` never touches files and knows nothing about
//! transformers.
